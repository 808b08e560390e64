//! The webhook against one loopback stand-in for both OpenAI and the Crisp REST API: in-process
//! through its builder (its log read as the binary's stderr), or the real binary where its
//! signals, exit status or `--help` are the point.

use serde_json::json;
use standins::stand_ins::{
    DEFAULT_PRIORITY, Env, LLM_PATH, Webhook, body_of, completion, crisp_ok, header_of, message_path,
    mount_conversation, mount_crisp_catch_all, mount_llm, post_body, requests_to, set, unset, webhook_env,
};
use standins::{Proc, bin, eventually};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use wiremock::{MockServer, Request, ResponseTemplate};

const WEBSITE: &str = "42286ab3-b29a-4fde-8538-da0ae501d825";
const SESSION: &str = "session_36ba3566-9651-4790-afc8-ffedbccc317f";
const SECRET: &str = "hook-secret-e2e";
const ANSWER: &str = "Click **Upgrade** in the top-right corner.";

const DOCS_EXAMPLE: &str = include_str!("fixtures/crisp/message-send-text.json");
const OPERATOR_ECHO: &str = include_str!("fixtures/crisp/message-received-operator-echo.json");
const BUILT_IN_PROMPT: &str = include_str!("../crates/answer/prompts/system_prompt.txt");
const ACTIVITY: &str = "[0] Action: opened the pricing page\n[1] Action: hovered over Upgrade\n";

/// Generous limit for something that must happen.
const LIMIT: Duration = Duration::from_secs(20);

fn crisp_message_path(website: &str) -> String {
    message_path(website, SESSION)
}

fn llm_answer() -> ResponseTemplate {
    completion(ANSWER)
}

/// One server standing in for OpenAI (`llm`) and Crisp (`message` for `POST .../message`; any
/// other Crisp call, such as a typing indicator or a history read, is answered 200).
async fn stand_in(llm: ResponseTemplate, message: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    mount_llm(&server, llm).await;
    mount_conversation(&server, "POST", "[^/]+", "message", message, DEFAULT_PRIORITY).await;
    mount_crisp_catch_all(&server).await;
    server
}

async fn default_stand_in() -> MockServer {
    stand_in(llm_answer(), crisp_ok()).await
}

/// The environment of a correctly configured webhook talking to `server`.
fn env_for(server: &MockServer) -> Env {
    webhook_env(server, WEBSITE, SECRET)
}

/// Waits up to [`LIMIT`] for `count` requests to `verb request_path`; returns those seen.
async fn wait_for(server: &MockServer, verb: &str, request_path: &str, count: usize) -> Vec<Request> {
    standins::stand_ins::wait_for(server, verb, request_path, count, LIMIT).await
}

/// Runs a webhook with `env` in `cwd`, delivers the docs example, and returns the one LLM
/// request and the one Crisp message post it caused (to `website`).
async fn answer_docs_example(server: &MockServer, cwd: &Path, env: Env, website: &str) -> (Request, Request) {
    let webhook = Webhook::in_process(cwd, env).await;
    webhook.deliver_ok(DOCS_EXAMPLE).await;
    let posts = wait_for(server, "POST", &crisp_message_path(website), 1).await;
    assert_eq!(posts.len(), 1, "one reply posted to Crisp; log: {}", webhook.stderr());
    let llm = requests_to(server, "POST", LLM_PATH).await;
    assert_eq!(llm.len(), 1, "one LLM call");
    (llm.into_iter().next().unwrap(), posts.into_iter().next().unwrap())
}

#[tokio::test]
async fn docs_example_is_answered_with_the_reference_llm_request_and_one_operator_message() {
    let server = default_stand_in().await;
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("event_data.txt"), ACTIVITY).unwrap();
    let mut env = env_for(&server);
    set(&mut env, "CONTEXT_SCOPE", "shared");
    let mut webhook = Webhook::in_process(cwd.path(), env).await;

    let started = Instant::now();
    webhook.deliver_ok(DOCS_EXAMPLE).await;
    assert!(started.elapsed() < Duration::from_secs(2), "acknowledged in {:?}", started.elapsed());

    let posts = wait_for(&server, "POST", &crisp_message_path(WEBSITE), 1).await;
    assert_eq!(posts.len(), 1, "log: {}", webhook.stderr());
    webhook.stop().await;
    let llm = requests_to(&server, "POST", LLM_PATH).await;
    assert_eq!(llm.len(), 1, "exactly one LLM call");
    assert_eq!(requests_to(&server, "POST", &crisp_message_path(WEBSITE)).await.len(), 1, "exactly one reply");

    let request = body_of(&llm[0]);
    assert_eq!(header_of(&llm[0], "authorization"), "Bearer sk-test");
    assert_eq!(request["model"], "gpt-4o-mini");
    assert_eq!(request["temperature"].as_f64(), Some(0.3));
    assert_eq!(request["max_tokens"], 512);
    let messages = request["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["role"], "system");
    let system = messages[0]["content"].as_str().unwrap();
    assert!(system.starts_with("You are a friendly and helpful assistant for users of this product."));
    assert_eq!(system, BUILT_IN_PROMPT);
    assert_eq!(messages[1]["role"], "user");
    let user = messages[1]["content"].as_str().unwrap();
    assert!(user.starts_with("## Current User Activity\n"), "{user}");
    assert!(user.ends_with("User question: Hey :)"), "{user}");
    assert!(user.contains(ACTIVITY), "the activity file's bytes are in the prompt: {user}");

    let post = &posts[0];
    assert_eq!(header_of(post, "authorization"), "Basic aWRlbnQ6a2V5");
    assert_eq!(header_of(post, "x-crisp-tier"), "plugin");
    assert_eq!(post_body(post), json!({"type": "text", "from": "operator", "origin": "chat", "content": ANSWER}));
}

#[tokio::test]
async fn hook_is_acknowledged_before_any_outside_call_completes() {
    let server = stand_in(llm_answer().set_delay(Duration::from_secs(3)), crisp_ok()).await;
    let cwd = tempfile::tempdir().unwrap();
    let webhook = Webhook::in_process(cwd.path(), env_for(&server)).await;
    let started = Instant::now();
    webhook.deliver_ok(DOCS_EXAMPLE).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "the hook waited {took:?} for the slow LLM");
    assert_eq!(wait_for(&server, "POST", &crisp_message_path(WEBSITE), 1).await.len(), 1, "still answered later");
}

#[tokio::test]
async fn visitor_is_answered_without_an_activity_file() {
    let server = default_stand_in().await;
    let cwd = tempfile::tempdir().unwrap();
    assert!(!cwd.path().join("event_data.txt").exists());
    let mut env = env_for(&server);
    set(&mut env, "CONTEXT_SCOPE", "shared");
    let (llm, post) = answer_docs_example(&server, cwd.path(), env, WEBSITE).await;
    let user = body_of(&llm)["messages"][1]["content"].as_str().unwrap().to_owned();
    assert!(user.starts_with("## Current User Activity\n") && user.ends_with("User question: Hey :)"), "{user}");
    assert_eq!(body_of(&post)["content"], ANSWER);
}

#[tokio::test]
async fn by_default_a_visitor_never_sees_the_shared_activity_file() {
    let server = default_stand_in().await;
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("event_data.txt"), ACTIVITY).unwrap();
    let (llm, post) = answer_docs_example(&server, cwd.path(), env_for(&server), WEBSITE).await;
    let user = body_of(&llm)["messages"][1]["content"].as_str().unwrap().to_owned();
    assert!(!user.contains("opened the pricing page"), "another visitor's activity leaked: {user}");
    assert!(user.starts_with("## Current User Activity\n") && user.ends_with("User question: Hey :)"), "{user}");
    assert_eq!(body_of(&post)["content"], ANSWER);
}

#[tokio::test]
async fn system_prompt_path_replaces_the_built_in_prompt() {
    let server = default_stand_in().await;
    let cwd = tempfile::tempdir().unwrap();
    let prompt = "You are Robo, the test bot.\nAnswer in one word.\n";
    let prompt_file = cwd.path().join("prompt.txt");
    std::fs::write(&prompt_file, prompt).unwrap();
    let mut env = env_for(&server);
    set(&mut env, "SYSTEM_PROMPT_PATH", prompt_file.to_str().unwrap());
    let (llm, _) = answer_docs_example(&server, cwd.path(), env, WEBSITE).await;
    assert_eq!(body_of(&llm)["messages"][0]["content"], prompt);
}

#[tokio::test]
async fn crisp_tier_website_is_sent_as_x_crisp_tier() {
    let server = default_stand_in().await;
    let cwd = tempfile::tempdir().unwrap();
    let mut env = env_for(&server);
    set(&mut env, "CRISP_TIER", "website");
    let (_, post) = answer_docs_example(&server, cwd.path(), env, WEBSITE).await;
    assert_eq!(header_of(&post, "x-crisp-tier"), "website");
}

#[tokio::test]
async fn openai_model_is_honoured() {
    let server = default_stand_in().await;
    let cwd = tempfile::tempdir().unwrap();
    let mut env = env_for(&server);
    set(&mut env, "OPENAI_MODEL", "my-local-model");
    let (llm, _) = answer_docs_example(&server, cwd.path(), env, WEBSITE).await;
    assert_eq!(body_of(&llm)["model"], "my-local-model");
}

#[tokio::test]
async fn crisp_refusal_is_logged_with_its_reason_and_the_process_keeps_running() {
    let refusal =
        ResponseTemplate::new(404).set_body_json(json!({"error": true, "reason": "not_subscribed", "data": {}}));
    let server = stand_in(llm_answer(), refusal).await;
    let cwd = tempfile::tempdir().unwrap();
    let mut webhook = Webhook::in_process(cwd.path(), env_for(&server)).await;
    webhook.deliver_ok(DOCS_EXAMPLE).await;
    assert!(eventually(LIMIT, || webhook.stderr().contains("not_subscribed")).await, "log: {}", webhook.stderr());
    assert!(webhook.is_running());
    let health = webhook.http.get(format!("{}/health", webhook.url)).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn operator_echo_never_reaches_the_llm() {
    let server = default_stand_in().await;
    let cwd = tempfile::tempdir().unwrap();
    let mut webhook = Webhook::in_process(cwd.path(), env_for(&server)).await;
    webhook.deliver_ok(OPERATOR_ECHO).await;
    webhook.stop().await;
    assert!(requests_to(&server, "POST", LLM_PATH).await.is_empty(), "the bot must not answer itself");
    assert!(requests_to(&server, "POST", &crisp_message_path(WEBSITE)).await.is_empty());
}

#[tokio::test]
async fn redelivered_message_is_answered_once() {
    let server = default_stand_in().await;
    let cwd = tempfile::tempdir().unwrap();
    let mut webhook = Webhook::in_process(cwd.path(), env_for(&server)).await;
    webhook.deliver_ok(DOCS_EXAMPLE).await;
    webhook.deliver_ok(DOCS_EXAMPLE).await;
    assert_eq!(wait_for(&server, "POST", &crisp_message_path(WEBSITE), 1).await.len(), 1);
    webhook.stop().await;
    assert_eq!(requests_to(&server, "POST", &crisp_message_path(WEBSITE)).await.len(), 1, "one reply only");
    assert_eq!(requests_to(&server, "POST", LLM_PATH).await.len(), 1, "one LLM call only");
}

#[tokio::test]
async fn sigterm_lets_the_reply_in_flight_reach_crisp_then_exits_zero() {
    let server = stand_in(llm_answer().set_delay(Duration::from_secs(2)), crisp_ok()).await;
    let cwd = tempfile::tempdir().unwrap();
    let mut webhook = Webhook::start(bin!("webhook"), cwd.path(), env_for(&server), LIMIT).await;
    webhook.deliver_ok(DOCS_EXAMPLE).await;
    assert_eq!(wait_for(&server, "POST", LLM_PATH, 1).await.len(), 1, "the reply is in flight");
    assert!(requests_to(&server, "POST", &crisp_message_path(WEBSITE)).await.is_empty(), "not yet posted");
    webhook.proc().signal("TERM");
    let status = webhook.proc_mut().wait_exit(LIMIT).unwrap_or_else(|| panic!("still running: {}", webhook.stderr()));
    assert_eq!(status.code(), Some(0), "log: {}", webhook.stderr());
    let posts = requests_to(&server, "POST", &crisp_message_path(WEBSITE)).await;
    assert_eq!(posts.len(), 1, "the reply was posted before exit; log: {}", webhook.stderr());
    assert_eq!(body_of(&posts[0])["content"], ANSWER);
}

#[tokio::test]
async fn secrets_never_appear_in_the_log_or_the_help() {
    let hook_secret = "hook-SECRET-9c1e77";
    let crisp_key = "crisp-SECRET-4b2d19";
    let openai_key = "sk-SECRET-a83f05";
    let server = default_stand_in().await;
    let cwd = tempfile::tempdir().unwrap();
    let mut env = env_for(&server);
    set(&mut env, "WEBHOOK_SECRET", hook_secret);
    set(&mut env, "CRISP_TOKEN_KEY", crisp_key);
    set(&mut env, "OPENAI_API_KEY", openai_key);
    // Debug logs included: they must not carry a secret either.
    set(&mut env, "RUST_LOG", "debug");
    let mut webhook = Webhook::in_process(cwd.path(), env.clone()).await;

    let wrong = webhook.hook_with_key("hook-SECRET-wrong", DOCS_EXAMPLE).await;
    assert_eq!(wrong.status(), 401);
    let right = webhook.hook_with_key(hook_secret, DOCS_EXAMPLE).await;
    assert_eq!(right.status(), 200);
    assert_eq!(wait_for(&server, "POST", &crisp_message_path(WEBSITE), 1).await.len(), 1);
    // Stopped: its whole log, shutdown included.
    webhook.stop().await;
    let log = webhook.stderr();
    for secret in [hook_secret, crisp_key, openai_key] {
        assert!(!log.contains(secret), "{secret} leaked into the log:\n{log}");
    }

    let help = Command::new(bin!("webhook"))
        .arg("--help")
        .current_dir(cwd.path())
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert!(help.status.success());
    let shown = format!("{}{}", String::from_utf8_lossy(&help.stdout), String::from_utf8_lossy(&help.stderr));
    assert!(shown.contains("WEBHOOK_SECRET"), "{shown}");
    for secret in [hook_secret, crisp_key, openai_key] {
        assert!(!shown.contains(secret), "{secret} shown by --help:\n{shown}");
    }
}

#[tokio::test]
async fn missing_webhook_secret_exits_2_with_one_line_naming_it() {
    let server = default_stand_in().await;
    let cwd = tempfile::tempdir().unwrap();
    let mut env = env_for(&server);
    unset(&mut env, "WEBHOOK_SECRET");
    set(&mut env, "BIND_ADDR", "127.0.0.1:0");
    let mut process = Proc::spawn(bin!("webhook"), cwd.path(), &env, &[]);
    let status = process.wait_exit(LIMIT).unwrap_or_else(|| panic!("still running: {}", process.stderr()));
    assert_eq!(status.code(), Some(2));
    let stderr = process.stderr();
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.contains("WEBHOOK_SECRET"), "{stderr:?}");
}

#[tokio::test]
async fn crisp_website_id_is_accepted_in_place_of_website_id() {
    let server = default_stand_in().await;
    let cwd = tempfile::tempdir().unwrap();
    let mut env = env_for(&server);
    unset(&mut env, "WEBSITE_ID");
    set(&mut env, "CRISP_WEBSITE_ID", WEBSITE);
    let (_, post) = answer_docs_example(&server, cwd.path(), env, WEBSITE).await;
    assert_eq!(body_of(&post)["content"], ANSWER);
}

#[test]
fn help_lists_every_setting_and_its_default() {
    let cwd = tempfile::tempdir().unwrap();
    let help = Command::new(bin!("webhook"))
        .arg("--help")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for name in [
        "WEBHOOK_SECRET",
        "CRISP_TOKEN_IDENTIFIER",
        "CRISP_TOKEN_KEY",
        "WEBSITE_ID",
        "CRISP_WEBSITE_ID",
        "CRISP_API_BASE_URL",
        "CRISP_TIER",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_MODEL",
        "EVENT_DATA_PATH",
        "BIND_ADDR",
        "SYSTEM_PROMPT_PATH",
    ] {
        assert!(text.contains(name), "{name} missing from --help:\n{text}");
    }
    for default in ["https://api.crisp.chat/v1", "plugin", "0.0.0.0:3000", "event_data.txt"] {
        assert!(text.contains(default), "default {default} missing from --help:\n{text}");
    }
}
