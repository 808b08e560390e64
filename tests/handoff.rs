//! Hand-off to a human with the visitor's context: the listener and the webhook (in-process,
//! through their builders) against stand-ins for Autoplay, OpenAI (answering with a tool call, or refusing tools) and Crisp.

use bytes::Bytes;
use serde_json::{Value, json};
use standins::apps::{self, Running};
use standins::eventually;
use standins::sse_server::SseServer;
use standins::stand_ins::{
    Env, LLM_PATH, Webhook, actions_frame, body_of, completion, compose_ok, dispatched, meta, mount_conversation,
    mount_session_meta, no_history, requests_to, set, visitor_message, webhook_env,
};
use std::path::Path;
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const SITE: &str = "site";
const SECRET: &str = "hook-secret-handoff";
const ANSWER: &str = "Open Settings, then Billing.";
const ONLINE: &str = "A teammate is joining now.";
const OFFLINE: &str = "Our team is offline; we will reply by email.";
const TITLES: [&str; 2] = ["Opened billing H", "Clicked Cancel plan H"];
/// Generous limit for something that must happen.
const LIMIT: Duration = Duration::from_secs(20);

/// An OpenAI stand-in: a `hand_off_to_human` call when the visitor's words contain one of
/// `triggers` (as a tool-capable model would decide), else a text answer. Without tool
/// support it refuses any request that offers tools with 400, as some servers do.
struct Model {
    tools: bool,
    triggers: &'static [&'static str],
}

impl Respond for Model {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let offered = body.get("tools").is_some_and(|t| t.as_array().is_some_and(|a| !a.is_empty()));
        if offered && !self.tools {
            return ResponseTemplate::new(400)
                .set_body_json(json!({"error": {"message": "tools are not supported by this server"}}));
        }
        let words =
            body["messages"].as_array().and_then(|m| m.last()).map(|m| m["content"].to_string()).unwrap_or_default();
        let words = words.rsplit("User question:").next().unwrap_or_default().to_lowercase();
        if offered && self.triggers.iter().any(|t| words.contains(t)) {
            return ResponseTemplate::new(200).set_body_json(json!({"choices": [{"message": {
                "role": "assistant", "content": null,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {
                    "name": "hand_off_to_human",
                    "arguments": "{\"reason\":\"asked\",\"summary\":\"Wants to cancel the plan\"}"}}]
            }}]}));
        }
        completion(ANSWER)
    }
}

const MULTILINGUAL: &[&str] = &["human", "quelqu'un", "persona"];

/// Crisp for `SITE`: conversation `session_linked` is linked to Autoplay session `ps_H`;
/// operators are `availability`.
async fn crisp_and_llm(model: impl Respond + 'static, availability: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path(LLM_PATH)).respond_with(model).mount(&server).await;
    mount_session_meta(&server, SITE, "session_linked", &json!({"data": {"autoplay_session_id": "ps_H"}})).await;
    mount_crisp(&server, availability).await;
    server
}

/// The Crisp calls a reply and a hand-off make, all accepted; operators are `availability`.
async fn mount_crisp(server: &MockServer, availability: &str) {
    mount_conversation(server, "GET", SITE, "meta", meta(json!({"nickname": "x"})), 10).await;
    mount_conversation(server, "GET", SITE, "messages", no_history(), 5).await;
    mount_conversation(server, "PATCH", SITE, "compose", compose_ok(), 5).await;
    mount_conversation(server, "PATCH", SITE, "state", compose_ok(), 5).await;
    mount_conversation(server, "PATCH", SITE, "routing", compose_ok(), 5).await;
    mount_conversation(server, "POST", SITE, "message", dispatched(4242), 5).await;
    Mock::given(method("GET"))
        .and(path(format!("/v1/website/{SITE}/availability/status")))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"error": false, "data": {"status": availability}})),
        )
        .mount(server)
        .await;
}

fn env_for(server: &MockServer, data_dir: &Path, extra: &[(&'static str, String)]) -> Env {
    let mut env = webhook_env(server, SITE, SECRET);
    set(&mut env, "DATA_DIR", data_dir.display().to_string());
    set(&mut env, "HANDOFF_MESSAGE", ONLINE);
    set(&mut env, "HANDOFF_OFFLINE_MESSAGE", OFFLINE);
    for (name, value) in extra {
        set(&mut env, name, value.clone());
    }
    env
}

/// Posts into a conversation, split by type: (text messages, notes).
async fn posted(server: &MockServer, session: &str) -> (Vec<String>, Vec<String>) {
    let mut texts = Vec::new();
    let mut notes = Vec::new();
    for request in requests_to(server, "POST", &format!("/v1/website/{SITE}/conversation/{session}/message")).await {
        let body = body_of(&request);
        let content = body["content"].as_str().unwrap_or_default().to_owned();
        match body["type"].as_str() {
            Some("note") => notes.push(content),
            _ => texts.push(content),
        }
    }
    (texts, notes)
}

async fn wait_posted(server: &MockServer, session: &str, texts: usize, notes: usize) -> (Vec<String>, Vec<String>) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let seen = posted(server, session).await;
        if (seen.0.len() >= texts && seen.1.len() >= notes) || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The listener in `dir`, fed the linked visitor's actions.
async fn listener(dir: &Path) -> (SseServer, Running) {
    let frame = actions_frame("ps_H", json!({}), &TITLES);
    apps::listener_fed(dir, vec![Bytes::from(frame)]).await
}

/// Asks until the linked visitor's activity is in the prompt (the listener stores it off its
/// reading path); returns how many texts that took.
async fn until_linked(server: &MockServer, webhook: &Webhook) -> usize {
    let deadline = Instant::now() + LIMIT;
    for n in 1.. {
        webhook.deliver_ok(&visitor_message(SITE, "session_linked", 100 + n as u64, "How do I see invoices?")).await;
        wait_posted(server, "session_linked", n, 0).await;
        let prompts: Vec<String> = requests_to(server, "POST", LLM_PATH)
            .await
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect();
        if prompts.iter().any(|p| p.contains(TITLES[1])) {
            return n;
        }
        assert!(Instant::now() < deadline, "the activity never reached the prompt:\n{}", webhook.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

#[tokio::test]
async fn an_explicit_request_in_any_language_hands_over_with_the_visitors_context() {
    let dir = tempfile::tempdir().unwrap();
    let (_stream, _listener) = listener(dir.path()).await;
    let server = crisp_and_llm(Model { tools: true, triggers: MULTILINGUAL }, "online").await;
    let prompt_file = dir.path().join("prompt.txt");
    std::fs::write(&prompt_file, "You are Zed, a terse assistant. Never mention teammates.").unwrap();
    let env = env_for(&server, &dir.path().join("data"), &[("SYSTEM_PROMPT_PATH", prompt_file.display().to_string())]);
    let webhook = Webhook::in_process(dir.path(), env).await;
    let answered = until_linked(&server, &webhook).await;

    webhook.deliver_ok(&visitor_message(SITE, "session_linked", 900, "je veux parler à quelqu'un")).await;
    let (texts, notes) = wait_posted(&server, "session_linked", answered + 1, 1).await;
    assert_eq!(texts.last().map(String::as_str), Some(ONLINE), "{texts:?}\n{}", webhook.stderr());
    assert_eq!(notes.len(), 1, "{notes:?}");
    let note = &notes[0];
    assert!(note.contains("the visitor asked to talk to a person"), "{note}");
    assert!(note.contains("Wants to cancel the plan"), "{note}");
    assert!(
        note.contains(TITLES[0]) && note.contains(TITLES[1]) && note.contains("https://app.example.com/page"),
        "{note}"
    );
    assert!(note.contains("ago") && note.contains("autoplay_session_id"), "{note}");
    let states = requests_to(&server, "PATCH", &format!("/v1/website/{SITE}/conversation/session_linked/state")).await;
    assert_eq!(states.iter().map(body_of).collect::<Vec<_>>(), [json!({"state": "unresolved"})]);
    let tools = body_of(requests_to(&server, "POST", LLM_PATH).await.last().unwrap());
    assert_eq!(
        tools["tools"][0]["function"]["name"], "hand_off_to_human",
        "the decision is a tool, whatever the prompt"
    );

    // Silent afterwards, until an operator resolves the conversation: the message is settled
    // unanswered (counted once it is), and nothing was posted for it.
    webhook.deliver_ok(&visitor_message(SITE, "session_linked", 901, "Hello?")).await;
    let silenced = "messages_settled_total{outcome=\"silenced_by_human_takeover\"} 1";
    let settled = eventually(LIMIT, || webhook.metrics().render().lines().any(|l| l == silenced)).await;
    assert!(settled, "the message after the hand-off was never settled silently:\n{}", webhook.metrics().render());
    assert_eq!(posted(&server, "session_linked").await.0.len(), answered + 1, "the bot spoke after handing over");
    let resolved = json!({"event": "session:set_state", "website_id": SITE,
        "data": {"website_id": SITE, "session_id": "session_linked", "state": "resolved"}});
    webhook.deliver_ok(&resolved).await;
    webhook.deliver_ok(&visitor_message(SITE, "session_linked", 902, "One more question")).await;
    let (texts, _) = wait_posted(&server, "session_linked", answered + 2, 1).await;
    assert_eq!(texts.last().map(String::as_str), Some(ANSWER), "answered again once resolved: {texts:?}");
}

#[tokio::test]
async fn without_tool_support_explicit_requests_still_hand_over_and_questions_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let server = crisp_and_llm(Model { tools: false, triggers: MULTILINGUAL }, "offline").await;
    let webhook = Webhook::in_process(dir.path(), env_for(&server, &dir.path().join("data"), &[])).await;

    webhook.deliver_ok(&visitor_message(SITE, "session_q", 1, "How do I export a CSV?")).await;
    let (texts, _) = wait_posted(&server, "session_q", 1, 0).await;
    assert_eq!(texts, [ANSWER], "{}", webhook.stderr());

    webhook.deliver_ok(&visitor_message(SITE, "session_h", 2, "agent please")).await;
    let (texts, notes) = wait_posted(&server, "session_h", 1, 1).await;
    assert_eq!(texts, [OFFLINE], "offline wording: {texts:?}\n{}", webhook.stderr());
    assert!(notes[0].contains("No activity is linked to this chat"), "{}", notes[0]);
}

#[tokio::test]
async fn three_requests_in_one_burst_give_one_hand_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    // Slow enough that the three messages form one burst behind the first reply.
    let slow = SlowModel(Model { tools: true, triggers: MULTILINGUAL });
    Mock::given(method("POST")).and(path(LLM_PATH)).respond_with(slow).mount(&server).await;
    mount_crisp(&server, "online").await;
    let mut webhook = Webhook::in_process(dir.path(), env_for(&server, &dir.path().join("data"), &[])).await;

    webhook.deliver_ok(&visitor_message(SITE, "session_b", 1, "Where is billing?")).await;
    for n in 2..5 {
        webhook.deliver_ok(&visitor_message(SITE, "session_b", n, "human")).await;
    }
    let (texts, notes) = wait_posted(&server, "session_b", 2, 1).await;
    // Stopped, the webhook has dealt with every message of the burst: nothing more comes.
    webhook.stop().await;
    let (texts_after, notes_after) = posted(&server, "session_b").await;
    assert_eq!((texts_after.len(), notes_after.len()), (texts.len(), notes.len()));
    assert_eq!(texts, [ANSWER, ONLINE], "{}", webhook.stderr());
    assert_eq!(notes.len(), 1);
}

#[tokio::test]
async fn a_fallback_reply_leaves_operators_the_context_note() {
    let dir = tempfile::tempdir().unwrap();
    let broken = MockServer::start().await;
    // The LLM refuses the key (not retried): the visitor gets the fallback.
    Mock::given(method("POST")).and(path(LLM_PATH)).respond_with(ResponseTemplate::new(401)).mount(&broken).await;
    mount_crisp(&broken, "online").await;
    let webhook = Webhook::in_process(dir.path(), env_for(&broken, &dir.path().join("data"), &[])).await;

    webhook.deliver_ok(&visitor_message(SITE, "session_f", 1, "Why is my export empty?")).await;
    let (texts, notes) = wait_posted(&broken, "session_f", 1, 1).await;
    assert_eq!(texts.len(), 1, "{}", webhook.stderr());
    assert!(texts[0].starts_with("Thanks for your message!"), "{texts:?}");
    assert_eq!(notes.len(), 1, "{}", webhook.stderr());
    assert!(notes[0].contains("could not answer"), "{}", notes[0]);
    let metrics = standins::stand_ins::http().get(webhook.metrics_url()).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("handoffs_total{reason=\"failed\"} 1"), "{metrics}");
}

/// [`Model`], answering after 1 s.
struct SlowModel(Model);

impl Respond for SlowModel {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.0.respond(request).set_delay(Duration::from_secs(1))
    }
}
