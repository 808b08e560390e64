//! Personal data stays out of the LLM and the logs, and comes back in the answer: the webhook
//! in-process (its log, the lines its binary would write to stderr, is the point), a corpus of
//! personal values (crates/privacy's fixtures: emails, phones of ten countries, cards, IBANs of
//! ten countries, secrets, URL query values) in visitor messages, page titles, URLs and summaries; an LLM stand-in that answers
//! with the placeholders it was given.

use regex::Regex;
use serde_json::{Value, json};
use standins::stand_ins::{
    LLM_PATH, Webhook, body_of, message_path, requests_to, set, visitor_message, visitor_stand_in, wait_for,
    webhook_env,
};
use std::time::Duration;
use wiremock::{Mock, Request, Respond, ResponseTemplate};

const SITE: &str = "42286ab3-b29a-4fde-8538-da0ae501d825";
const SECRET: &str = "hook-secret-privacy";
const LIMIT: Duration = Duration::from_secs(60);

#[derive(serde::Deserialize)]
struct Personal {
    kind: String,
    context: String,
    values: Vec<String>,
    text: String,
}

fn corpus() -> Vec<Personal> {
    include_str!("../crates/privacy/tests/fixtures/personal.jsonl")
        .lines()
        .map(|line| serde_json::from_str(line).expect("fixture line"))
        .collect()
}

fn benign() -> Vec<String> {
    include_str!("../crates/privacy/tests/fixtures/benign.jsonl")
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("fixture line")["text"].as_str().unwrap().to_owned())
        .collect()
}

/// Answers with the placeholders of the visitor's words (after `User question: `).
struct EchoPlaceholders(Regex);

impl Respond for EchoPlaceholders {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let user = standins::llm::last_user_message(&body);
        let question = user.rsplit_once("User question: ").map_or("", |(_, q)| q);
        let found: Vec<&str> = self.0.find_iter(question).map(|m| m.as_str()).collect();
        let content = format!("Noted: {}", found.join(" "));
        ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-1", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]
        }))
    }
}

fn posted_text(request: &Request) -> String {
    body_of(request)["content"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn personal_values_never_reach_the_llm_or_the_log_and_come_back_in_the_answer() {
    let corpus = corpus();
    let server = visitor_stand_in(SITE, ResponseTemplate::new(500), &[]).await;
    let placeholder = Regex::new(r"\[(EMAIL|PHONE|CARD|IBAN|SECRET|URL_QUERY)_\d+\]").unwrap();
    Mock::given(wiremock::matchers::path(LLM_PATH))
        .respond_with(EchoPlaceholders(placeholder))
        .with_priority(1)
        .mount(&server)
        .await;
    // Page titles, URLs and summaries: the activity every prompt carries.
    let dir = tempfile::tempdir().unwrap();
    let activity: String = corpus.iter().filter(|p| p.context != "message").map(|p| format!("{}\n", p.text)).collect();
    std::fs::write(dir.path().join("event_data.txt"), &activity).unwrap();
    let mut env = webhook_env(&server, SITE, SECRET);
    set(&mut env, "CONTEXT_SCOPE", "shared");
    set(&mut env, "CONTEXT_MAX_CHARS", "100000");
    set(&mut env, "HISTORY_TURNS", "0");
    set(&mut env, "RUST_LOG", "debug");
    let webhook = Webhook::in_process(dir.path(), env).await;

    let messages: Vec<&Personal> = corpus.iter().filter(|p| p.context == "message").collect();
    for (n, personal) in messages.iter().enumerate() {
        let session = format!("session_privacy_{n}");
        webhook.deliver_ok(&visitor_message(SITE, &session, 10_000 + n as u64, &personal.text)).await;
    }
    let calls = wait_for(&server, "POST", LLM_PATH, messages.len(), LIMIT).await;
    assert_eq!(calls.len(), messages.len(), "{}", webhook.stderr());

    // Nothing personal in any LLM request, whatever its place.
    let sent: String = calls.iter().map(|c| String::from_utf8_lossy(&c.body).into_owned()).collect();
    let sent_unescaped: String = calls.iter().map(|c| body_of(c).to_string()).collect();
    let mut leaks = Vec::new();
    for personal in &corpus {
        for value in &personal.values {
            if sent.contains(value.as_str()) || sent_unescaped.contains(value.as_str()) {
                leaks.push(format!("{} in {}: {value}", personal.kind, personal.context));
            }
        }
    }
    assert!(leaks.is_empty(), "{} of the corpus reached the LLM:\n{}", leaks.len(), leaks.join("\n"));

    // The answer: the values the placeholders stand for, except cards (last 4) and secrets.
    for (n, personal) in messages.iter().enumerate() {
        let session = format!("session_privacy_{n}");
        let posts = wait_for(&server, "POST", &message_path(SITE, &session), 1, LIMIT).await;
        let text = posts.first().map(posted_text).unwrap_or_default();
        for value in &personal.values {
            match personal.kind.as_str() {
                "card" => {
                    let digits: String = value.chars().filter(char::is_ascii_digit).collect();
                    assert!(!text.contains(value.as_str()), "a card number reached the visitor: {text}");
                    assert!(text.contains(&digits[digits.len() - 4..]), "the card's last 4 digits: {text}");
                }
                "secret" => assert!(!text.contains(value.as_str()), "a secret came back: {text}"),
                _ => assert!(text.contains(value.as_str()), "{} {value:?} not restored in {text:?}", personal.kind),
            }
        }
    }

    // Nor in the log (at debug level).
    let log = webhook.stderr();
    for personal in &corpus {
        for value in &personal.values {
            assert!(!log.contains(value.as_str()), "{} {value:?} in the log", personal.kind);
        }
    }
    assert!(requests_to(&server, "POST", LLM_PATH).await.len() >= messages.len());
}

#[tokio::test]
async fn look_alikes_reach_the_llm_untouched() {
    let benign = benign();
    let server = visitor_stand_in(SITE, standins::stand_ins::completion("ok"), &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = webhook_env(&server, SITE, SECRET);
    set(&mut env, "HISTORY_TURNS", "0");
    let webhook = Webhook::in_process(dir.path(), env).await;
    // Twenty look-alikes a message.
    let chunks: Vec<String> = benign.chunks(20).map(|chunk| chunk.join("\n")).collect();
    for (n, chunk) in chunks.iter().enumerate() {
        webhook.deliver_ok(&visitor_message(SITE, &format!("session_benign_{n}"), 20_000 + n as u64, chunk)).await;
    }
    let calls = wait_for(&server, "POST", LLM_PATH, chunks.len(), LIMIT).await;
    let sent: String = calls.iter().map(|c| standins::llm::last_user_message(&body_of(c)).to_owned()).collect();
    let touched: Vec<&String> = benign.iter().filter(|text| !sent.contains(text.as_str())).collect();
    assert!(
        touched.len() * 100 <= benign.len(),
        "{} of {} look-alikes touched: {touched:#?}",
        touched.len(),
        benign.len()
    );
}
