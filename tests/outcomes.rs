//! What became of the bot's answers (issue #26), end to end: the listener and the webhook
//! against stand-ins for Autoplay (an SSE stream pushed live), OpenAI and Crisp, with short
//! windows (`OUTCOME_CONFIRM_SECS=2`, `OUTCOME_WINDOW_SECS=4`). Each conversation is linked to
//! its own Autoplay session through its session data; the outcome shows up as the segment
//! PATCHed on the conversation's meta, and in `webhook report --json`.

use bytes::Bytes;
use serde_json::{Value, json};
use standins::apps::{self, Running};
use standins::bin;
use standins::sse_server::SseServer;
use standins::stand_ins::{
    Env, LLM_PATH, Webhook, body_of, completion, compose_ok, dispatched, mount_conversation, requests_to, set,
    visitor_message, webhook_env,
};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const SITE: &str = "site";
const SECRET: &str = "hook-secret-outcomes";
const ANSWER: &str = "Open Reports, then click \"Export CSV\".";
const LIMIT: Duration = Duration::from_secs(30);

/// Hands over when the visitor's words ask for a human, else answers [`ANSWER`].
struct Model;

impl Respond for Model {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let words =
            body["messages"].as_array().and_then(|m| m.last()).map(|m| m["content"].to_string()).unwrap_or_default();
        let words = words.rsplit("User question:").next().unwrap_or_default().to_lowercase();
        if words.contains("human") {
            return ResponseTemplate::new(200).set_body_json(json!({"choices": [{"message": {
                "role": "assistant", "content": null,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {
                    "name": "hand_off_to_human", "arguments": "{\"reason\":\"asked\"}"}}]
            }}]}));
        }
        completion(ANSWER)
    }
}

/// Crisp's conversations: each `POST …/message` is kept (with its fingerprint) and
/// `GET …/messages` lists them, so the bot sees its own follow-up.
#[derive(Clone, Default)]
struct Conversations(Arc<Mutex<Vec<(String, Value)>>>);

fn session_of(request: &Request) -> String {
    request.url.path().split('/').rev().nth(1).unwrap_or_default().to_owned()
}

impl Respond for Conversations {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut kept = self.0.lock().unwrap();
        if request.method.as_str() == "POST" {
            let body = body_of(request);
            kept.push((
                session_of(request),
                json!({
                    "type": body["type"], "from": "operator", "origin": "chat", "content": body["content"],
                    "fingerprint": body["fingerprint"], "timestamp": (now() * 1000.0) as u64,
                }),
            ));
            return dispatched(4242);
        }
        let session = session_of(request);
        let data: Vec<Value> = kept.iter().filter(|(s, _)| *s == session).map(|(_, m)| m.clone()).collect();
        ResponseTemplate::new(200).set_body_json(json!({"error": false, "data": data}))
    }
}

fn now() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// An `actions` frame: `(title, path)` per action, `at` onwards, a tenth of a second apart.
fn frame(session: &str, actions: &[(&str, &str)], at: f64) -> Bytes {
    let actions: Vec<Value> = actions
        .iter()
        .enumerate()
        .map(|(i, (title, page))| {
            let t = at + i as f64 * 0.1;
            json!({
                "index": i, "type": "pageview", "title": title, "description": "",
                "timestamp_start": t, "timestamp_end": t,
                "raw_url": format!("https://app.example.com{page}"),
                "canonical_url": format!("https://app.example.com{page}"),
            })
        })
        .collect();
    let frame = json!({
        "type": "actions", "product_id": "prod_abc", "session_id": session,
        "count": actions.len(), "forwarded_at": at, "actions": actions,
    });
    Bytes::from(format!("data: {frame}\n\n"))
}

fn ping_pong(session: &str, at: f64) -> Bytes {
    let pages = [("Page Load: Billing", "/billing"), ("Page Load: Invoices", "/invoices")];
    frame(session, &[pages[0], pages[1], pages[0], pages[1]], at)
}

/// The conversations of the scenario: (Crisp session, Autoplay session, segments an operator
/// set).
const CONVERSATIONS: [(&str, &str, &[&str]); 6] = [
    ("conv_confirmed", "ps_confirmed", &["vip"]),
    ("conv_assumed", "ps_assumed", &[]),
    ("conv_stuck", "ps_stuck", &[]),
    ("conv_escalated", "ps_escalated", &[]),
    ("conv_reopened", "ps_reopened", &[]),
    ("conv_warm", "ps_warm", &[]),
];

async fn stand_in() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path(LLM_PATH)).respond_with(Model).mount(&server).await;
    for (conversation, autoplay, segments) in CONVERSATIONS {
        Mock::given(method("GET"))
            .and(path(format!("/v1/website/{SITE}/conversation/{conversation}/meta")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"error": false, "data": {
                "data": {"autoplay_session_id": autoplay}, "segments": segments,
            }})))
            .mount(&server)
            .await;
    }
    mount_conversation(&server, "PATCH", SITE, "meta", compose_ok(), 5).await;
    mount_conversation(&server, "PATCH", SITE, "compose", compose_ok(), 5).await;
    mount_conversation(&server, "PATCH", SITE, "state", compose_ok(), 5).await;
    let conversations = Conversations::default();
    mount_conversation(&server, "POST", SITE, "message", conversations.clone(), 5).await;
    mount_conversation(&server, "GET", SITE, "messages", conversations, 5).await;
    Mock::given(method("GET"))
        .and(path(format!("/v1/website/{SITE}/availability/status")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"error": false, "data": {"status": "online"}})))
        .mount(&server)
        .await;
    server
}

fn env_for(server: &MockServer, data_dir: &Path) -> Env {
    let mut env = webhook_env(server, SITE, SECRET);
    set(&mut env, "DATA_DIR", data_dir.display().to_string());
    set(&mut env, "OUTCOME_CONFIRM_SECS", "2");
    set(&mut env, "OUTCOME_WINDOW_SECS", "4");
    env
}

/// Texts posted into `conversation` (not notes).
async fn texts(server: &MockServer, conversation: &str) -> Vec<String> {
    requests_to(server, "POST", &format!("/v1/website/{SITE}/conversation/{conversation}/message"))
        .await
        .iter()
        .map(body_of)
        .filter(|b| b["type"] != "note")
        .map(|b| b["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The segments PATCHed on `conversation`, in order.
async fn segments(server: &MockServer, conversation: &str) -> Vec<Value> {
    requests_to(server, "PATCH", &format!("/v1/website/{SITE}/conversation/{conversation}/meta"))
        .await
        .iter()
        .map(|r| body_of(r)["segments"].clone())
        .collect()
}

async fn until<F: std::future::Future<Output = bool>>(what: &str, webhook: &Webhook, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + LIMIT;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} never happened:\n{}", webhook.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn until_segment(server: &MockServer, webhook: &Webhook, conversation: &str, segment: &str) -> Vec<Value> {
    until(&format!("{segment} on {conversation}"), webhook, || async {
        segments(server, conversation).await.iter().any(|s| s.as_array().is_some_and(|a| a.contains(&json!(segment))))
    })
    .await;
    segments(server, conversation).await
}

async fn ask(server: &MockServer, webhook: &Webhook, conversation: &str, fingerprint: u64, words: &str) -> usize {
    let before = texts(server, conversation).await.len();
    webhook.deliver_ok(&visitor_message(SITE, conversation, fingerprint, words)).await;
    until(&format!("a reply in {conversation}"), webhook, || async {
        texts(server, conversation).await.len() > before
    })
    .await;
    before + 1
}

async fn listener(dir: &Path, frames: Vec<Bytes>) -> (SseServer, Running) {
    apps::listener_fed(dir, frames).await
}

#[tokio::test]
async fn each_answer_gets_its_outcome_segment_and_the_report_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let start = now() - 30.0;
    // Before anyone writes: the stuck visitor went back and forth; the warm-up visitor's
    // activity, last in the stream, says the listener has stored the frames before it.
    let (stream, _listener) = listener(
        dir.path(),
        vec![ping_pong("ps_stuck", start), frame("ps_warm", &[("Page Load: Warm up W", "/warm")], start)],
    )
    .await;
    let server = stand_in().await;
    let data_dir = dir.path().join("data");
    let webhook = Webhook::in_process(dir.path(), env_for(&server, &data_dir)).await;
    let mut fingerprint = 100;
    until("the listener's activity in a prompt", &webhook, || {
        fingerprint += 1;
        let server = &server;
        let webhook = &webhook;
        async move {
            ask(server, webhook, "conv_warm", fingerprint, "How do I export?").await;
            requests_to(server, "POST", LLM_PATH)
                .await
                .iter()
                .any(|r| String::from_utf8_lossy(&r.body).contains("Warm up W"))
        }
    })
    .await;

    // Confirmed: the visitor clicks what the answer named, within OUTCOME_CONFIRM_SECS.
    ask(&server, &webhook, "conv_confirmed", 1, "How do I export my data?").await;
    stream.push(frame("ps_confirmed", &[("Click Export CSV button", "/reports")], now())).await;
    // Stuck: back and forth between the same pages again after the answer.
    ask(&server, &webhook, "conv_stuck", 2, "Where are my invoices?").await;
    stream.push(ping_pong("ps_stuck", now())).await;
    // Assumed: nothing more.
    ask(&server, &webhook, "conv_assumed", 3, "How do I export my data?").await;
    // Escalated: the visitor asks for a person.
    ask(&server, &webhook, "conv_escalated", 4, "I want a human please").await;
    // Reopened: resolved first (assumed), then "it still doesn't work".
    ask(&server, &webhook, "conv_reopened", 5, "How do I export my data?").await;

    let confirmed = until_segment(&server, &webhook, "conv_confirmed", "bot-confirmed").await;
    assert_eq!(confirmed, [json!(["vip", "bot-confirmed"])], "the operator's segment is kept");
    until_segment(&server, &webhook, "conv_escalated", "bot-escalated").await;
    until_segment(&server, &webhook, "conv_stuck", "bot-stuck").await;
    let follow_up = "Still stuck? I can get a person.";
    until("the follow-up", &webhook, || async {
        texts(&server, "conv_stuck").await.iter().any(|t| t.starts_with("Still stuck"))
    })
    .await;
    until_segment(&server, &webhook, "conv_assumed", "bot-assumed").await;
    until_segment(&server, &webhook, "conv_reopened", "bot-assumed").await;
    webhook.deliver_ok(&visitor_message(SITE, "conv_reopened", 6, "It still doesn't work")).await;
    let reopened = until_segment(&server, &webhook, "conv_reopened", "bot-reopened").await;
    assert_eq!(reopened.last(), Some(&json!(["bot-reopened"])), "the bot's earlier outcome segment is replaced");

    // Exactly one follow-up, then a "yes" to it is a request for a person.
    let stuck_texts = texts(&server, "conv_stuck").await;
    assert_eq!(stuck_texts.iter().filter(|t| t.starts_with("Still stuck")).count(), 1, "{stuck_texts:?}");
    assert!(stuck_texts.last().is_some_and(|t| t.starts_with("Still stuck") || t == follow_up), "{stuck_texts:?}");
    webhook.deliver_ok(&visitor_message(SITE, "conv_stuck", 7, "yes please")).await;
    until_segment(&server, &webhook, "conv_stuck", "bot-escalated").await;
    let stuck_texts = texts(&server, "conv_stuck").await;
    assert_eq!(stuck_texts.iter().filter(|t| t.starts_with("Still stuck")).count(), 1, "{stuck_texts:?}");

    // The report, from the binary, over the same records.
    // With TEST_REDIS_URL the in-process webhook kept them in Redis: the report reads there.
    let output = std::process::Command::new(bin!("webhook"))
        .args(["report", "--json", "--since", "1h"])
        .env_clear()
        .env("DATA_DIR", &data_dir)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(standins::test_redis(dir.path()))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let outcomes = &report["outcomes"];
    assert!(outcomes["confirmed"].as_u64().unwrap() >= 1, "{report}");
    assert!(outcomes["escalated"].as_u64().unwrap() >= 2, "{report}");
    assert!(outcomes["reopened"].as_u64().unwrap() >= 1, "{report}");
    assert!(outcomes["assumed"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(report["follow_ups"], 1, "{report}");
    assert!(report["handoffs"]["asked"].as_u64().unwrap() >= 2, "{report}");

    // The metrics.
    let metrics = webhook.http.get(webhook.metrics_url()).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("conversation_outcomes_total{outcome=\"confirmed\"} 1"), "{metrics}");
    assert!(metrics.contains("bot_follow_ups_total 1"), "{metrics}");
}

/// Every metric the deploy/ dashboard and alerts name is served at /metrics.
#[tokio::test]
async fn every_metric_in_deploy_is_served() {
    let server = stand_in().await;
    let dir = tempfile::tempdir().unwrap();
    let env = env_for(&server, &dir.path().join("data"));
    let webhook = Webhook::in_process(dir.path(), env).await;
    let metrics = webhook.http.get(webhook.metrics_url()).send().await.unwrap().text().await.unwrap();
    let served: std::collections::HashSet<&str> =
        metrics.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
    let deploy = std::fs::read_to_string("deploy/grafana-dashboard.json").unwrap()
        + &std::fs::read_to_string("deploy/prometheus-alerts.yml").unwrap();
    let names = regex::Regex::new(
        r"\b([a-z][a-z0-9_]*(?:_total|_seconds_bucket|_seconds_sum|_seconds_count|_seconds|_paused))\b",
    )
    .unwrap();
    let mut missing = Vec::new();
    for name in names.captures_iter(&deploy).map(|c| c[1].to_owned()) {
        let histogram = format!("{name}_bucket");
        if !served.contains(name.as_str()) && !served.contains(histogram.as_str()) && !missing.contains(&name) {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "named in deploy/ but not served: {missing:?}");
}
