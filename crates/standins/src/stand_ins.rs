//! Shared pieces of the end-to-end tests: the `webhook` binary on a port it picks (port 0), wiremock
//! stand-ins for OpenAI and the Crisp REST API, Crisp hook bodies, Autoplay frames, and readers
//! of the requests the stand-ins received.

use crate::Proc;
use crate::apps::Runner;
use serde_json::{Value, json};
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Where the OpenAI stand-in answers chat completions.
pub const LLM_PATH: &str = "/v1/chat/completions";

/// wiremock's priority for mocks mounted without one.
pub const DEFAULT_PRIORITY: u8 = 5;

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

/// Settings, in the order they are given to the binary.
pub type Env = Vec<(&'static str, String)>;

/// The environment of a correctly configured webhook talking to `server` for `website`, with
/// hooks keyed by `secret`.
pub fn webhook_env(server: &MockServer, website: &str, secret: &str) -> Env {
    let base = format!("{}/v1", server.uri());
    vec![
        ("OPENAI_BASE_URL", base.clone()),
        ("OPENAI_API_KEY", "sk-test".into()),
        ("CRISP_API_BASE_URL", base),
        ("CRISP_TOKEN_IDENTIFIER", "ident".into()),
        ("CRISP_TOKEN_KEY", "key".into()),
        ("WEBSITE_ID", website.into()),
        ("WEBHOOK_SECRET", secret.into()),
    ]
}

/// Settings that turn the listener's summaries on (from `threshold` actions) against the OpenAI
/// stand-in `llm`.
pub fn summary_env(llm: &MockServer, threshold: usize) -> Env {
    vec![
        ("SUMMARY_THRESHOLD", threshold.to_string()),
        ("OPENAI_BASE_URL", format!("{}/v1", llm.uri())),
        ("OPENAI_API_KEY", "sk-test".into()),
    ]
}

/// Sets `name` to `value`, replacing any earlier value.
pub fn set(env: &mut Env, name: &'static str, value: impl Into<String>) {
    env.retain(|(k, _)| *k != name);
    env.push((name, value.into()));
}

/// Removes `name`.
pub fn unset(env: &mut Env, name: &str) {
    env.retain(|(k, _)| *k != name);
}

/// A reqwest client with a 10 s timeout.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

// ---------------------------------------------------------------------------------------------
// The webhook binary
// ---------------------------------------------------------------------------------------------

/// Something that can be delivered as a hook body.
pub trait HookBody {
    fn text(&self) -> String;
}

impl HookBody for str {
    fn text(&self) -> String {
        self.to_owned()
    }
}

impl HookBody for String {
    fn text(&self) -> String {
        self.clone()
    }
}

impl HookBody for Value {
    fn text(&self) -> String {
        self.to_string()
    }
}

/// A running webhook, the binary or in-process, and its base URL; hooks are keyed with its
/// `WEBHOOK_SECRET`.
pub struct Webhook {
    runner: Runner,
    pub url: String,
    pub http: reqwest::Client,
    key: String,
    cwd: Option<tempfile::TempDir>,
}

/// The `WEBHOOK_SECRET` in `env`, which keys the hook URL.
fn hook_key(env: &Env) -> String {
    env.iter().find(|(k, _)| *k == "WEBHOOK_SECRET").map(|(_, v)| v.clone()).unwrap_or_default()
}

impl Webhook {
    /// Starts the webhook in this process, built from `env` as the binary started in `cwd`
    /// would build it (see [`crate::apps::in_dir`]), on loopback port 0.
    pub async fn in_process(cwd: &Path, mut env: Env) -> Webhook {
        crate::apps::log_to_test_output();
        set(&mut env, "BIND_ADDR", "127.0.0.1:0");
        let key = hook_key(&env);
        let running = crate::apps::webhook(&crate::apps::in_dir(cwd, &env)).await.unwrap_or_else(|e| panic!("{e}"));
        let url = format!("http://{}", running.addr.expect("the webhook's address"));
        Webhook { runner: Runner::InProcess(running), url, http: http(), key, cwd: None }
    }

    /// Starts the binary in `cwd` on loopback port 0 (the port it logs) and waits up to `limit` until
    /// `/health` answers.
    pub async fn start(exe: &Path, cwd: &Path, env: Env, limit: Duration) -> Webhook {
        Webhook::start_limited(exe, cwd, env, limit, None).await
    }

    /// [`Webhook::start`] with the open-file limit set to `open_files` (`ulimit -n`).
    pub async fn start_limited(
        exe: &Path,
        cwd: &Path,
        mut env: Env,
        limit: Duration,
        open_files: Option<u64>,
    ) -> Webhook {
        set(&mut env, "BIND_ADDR", "127.0.0.1:0");
        let key = hook_key(&env);
        let mut proc = Proc::spawn_limited(exe, cwd, &env, &[], open_files);
        let started = Instant::now();
        let addr = crate::wait_logged_addr(&mut proc, "webhook listening", limit).await;
        let url = format!("http://{addr}");
        let http = http();
        let deadline = started + limit;
        loop {
            if http.get(format!("{url}/health")).send().await.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(proc.is_running(), "webhook exited at start:\n{}", proc.stderr());
            assert!(Instant::now() < deadline, "webhook never answered /health:\n{}", proc.stderr());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Webhook { runner: Runner::Binary(proc), url, http, key, cwd: None }
    }

    /// [`Webhook::in_process`] in a new empty working directory, kept as long as the webhook.
    pub async fn in_process_in_tempdir(env: Env) -> Webhook {
        let dir = tempfile::tempdir().unwrap();
        let mut webhook = Webhook::in_process(dir.path(), env).await;
        webhook.cwd = Some(dir);
        webhook
    }

    /// [`Webhook::start`] in a new empty working directory, kept as long as the webhook.
    pub async fn start_in_tempdir(exe: &Path, env: Env, limit: Duration) -> Webhook {
        let dir = tempfile::tempdir().unwrap();
        let mut webhook = Webhook::start(exe, dir.path(), env, limit).await;
        webhook.cwd = Some(dir);
        webhook
    }

    /// Keeps `dir` (its working directory) as long as the webhook.
    pub fn keep_dir(&mut self, dir: tempfile::TempDir) {
        self.cwd = Some(dir);
    }

    /// The working directory made by [`Webhook::start_in_tempdir`] or given to
    /// [`Webhook::keep_dir`].
    pub fn cwd(&self) -> &Path {
        self.cwd.as_ref().expect("started in a tempdir").path()
    }

    /// The binary's log (see [`Runner::log`]).
    pub fn stderr(&self) -> String {
        self.runner.log()
    }

    /// The binary's process.
    pub fn proc(&self) -> &Proc {
        self.runner.proc()
    }

    pub fn proc_mut(&mut self) -> &mut Proc {
        self.runner.proc_mut()
    }

    /// Whether the webhook still runs: the binary's process, or the in-process app.
    pub fn is_running(&mut self) -> bool {
        self.runner.is_running()
    }

    pub fn metrics_url(&self) -> String {
        format!("{}/metrics", self.url)
    }

    /// The in-process webhook's own metrics (its registry, read without HTTP).
    pub fn metrics(&self) -> &plumbing::telemetry::Metrics {
        match &self.runner {
            Runner::InProcess(running) => &running.metrics,
            Runner::Binary(_) => panic!("the webhook binary's metrics are read at metrics_url()"),
        }
    }

    /// The in-process webhook's `METRICS_ADDR`, bound (port 0 resolved).
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        match &self.runner {
            Runner::InProcess(running) => running.metrics_addr,
            Runner::Binary(_) => panic!("the binary's METRICS_ADDR is the one it was given"),
        }
    }

    /// Posts `body` as JSON to the hook URL with `key` and `headers`.
    pub async fn post_hook(&self, key: &str, body: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/crisp/hooks?key={key}", self.url))
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("hook request")
    }

    /// Posts `body` with `key` (right or wrong).
    pub async fn hook_with_key(&self, key: &str, body: &str) -> reqwest::Response {
        self.post_hook(key, body, &[]).await
    }

    /// Posts `body` with the right key and `headers`; returns the status.
    pub async fn post_raw(&self, body: &str, headers: &[(&str, &str)]) -> u16 {
        self.post_hook(&self.key, body, headers).await.status().as_u16()
    }

    /// Delivers `body` with the right key and checks the 200.
    pub async fn deliver(&self, body: &(impl HookBody + ?Sized)) {
        let response = self.hook_with_key(&self.key, &body.text()).await;
        assert_eq!(response.status(), 200, "log:\n{}", self.stderr());
    }

    /// Delivers `body` with the right key, checks the 200 `{"status":"ok"}`, and returns how
    /// long the answer took to arrive.
    pub async fn deliver_ok(&self, body: &(impl HookBody + ?Sized)) -> Duration {
        let body = body.text();
        let started = Instant::now();
        let response = self.hook_with_key(&self.key, &body).await;
        let took = started.elapsed();
        assert_eq!(response.status(), 200, "log:\n{}", self.stderr());
        assert_eq!(response.json::<Value>().await.unwrap(), json!({"status": "ok"}));
        took
    }

    /// Stops the webhook as SIGTERM stops it and waits until it has: no more hooks taken, and
    /// every reply to a message it accepted written (or given up) first. Past this, nothing more
    /// reaches the stand-ins from it: a test asserting that something did not happen asserts it
    /// after `stop`, not after a guessed pause. Fails the test when it does not stop cleanly
    /// within 20 s (the webhook's grace period is 30 s).
    pub async fn stop(&mut self) {
        const STOP_LIMIT: Duration = Duration::from_secs(20);
        match &mut self.runner {
            Runner::InProcess(running) => running.stop(STOP_LIMIT).await.unwrap_or_else(|e| panic!("{e}")),
            Runner::Binary(proc) => {
                proc.signal("TERM");
                let status = self.exited(STOP_LIMIT).await;
                let status = status.unwrap_or_else(|| panic!("still running after SIGTERM:\n{}", self.stderr()));
                assert!(status.success(), "SIGTERM: {status}; log:\n{}", self.stderr());
            }
        }
    }

    /// Waits (without blocking the runtime) for the process to exit.
    pub async fn exited(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.proc_mut().exited(limit).await
    }
}

// ---------------------------------------------------------------------------------------------
// Stand-ins
// ---------------------------------------------------------------------------------------------

/// An OpenAI chat completion answering `content`.
pub fn completion(content: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]
    }))
}

/// A Crisp `200 {"error": false, "reason": "ok"}`.
pub fn crisp_ok() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"error": false, "reason": "ok", "data": {}}))
}

/// Chat completions at [`LLM_PATH`] answered by `llm`.
pub async fn mount_llm(server: &MockServer, llm: impl Respond + 'static) {
    Mock::given(method("POST")).and(path(LLM_PATH)).respond_with(llm).mount(server).await;
}

/// Every Crisp call not otherwise mocked answered [`crisp_ok`].
pub async fn mount_crisp_catch_all(server: &MockServer) {
    Mock::given(path_regex("^/v1/website/")).respond_with(crisp_ok()).with_priority(10).mount(server).await;
}

/// A path regex for `.../conversation/*/{leaf}` of `website` (itself a regex, such as `[^/]+`).
pub fn conversation(website: &str, leaf: &str) -> String {
    format!("^/v1/website/{website}/conversation/[^/]+/{leaf}$")
}

/// `verb` on `.../conversation/*/{leaf}` of `website` (a regex) answered by `response`.
pub async fn mount_conversation(
    server: &MockServer,
    verb: &str,
    website: &str,
    leaf: &str,
    response: impl Respond + 'static,
    priority: u8,
) {
    Mock::given(method(verb))
        .and(path_regex(conversation(website, leaf)))
        .respond_with(response)
        .with_priority(priority)
        .mount(server)
        .await;
}

/// `PATCH .../compose` (typing) accepted.
pub fn compose_ok() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"error": false, "reason": "updated"}))
}

/// `GET .../messages`: no history.
pub fn no_history() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"error": false, "data": []}))
}

/// `GET .../meta` answered with `data`.
pub fn meta(data: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"error": false, "data": data}))
}

/// `POST .../message` accepted with `fingerprint`.
pub fn dispatched(fingerprint: u64) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(json!({"error": false, "reason": "dispatched", "data": {"fingerprint": fingerprint}}))
}

/// `GET .../meta` of conversation `session` of `website` answered with `data`.
pub async fn mount_session_meta(server: &MockServer, website: &str, session: &str, data: &Value) {
    Mock::given(method("GET"))
        .and(path(format!("/v1/website/{website}/conversation/{session}/meta")))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"error": false, "reason": "resolved", "data": data})),
        )
        .mount(server)
        .await;
}

/// One server for OpenAI (answering `llm`) and the Crisp conversations of `website`; `metas`
/// gives conversations' `GET .../meta` `data` (other conversations have no session data), every
/// message posted is dispatched with fingerprint 4242.
pub async fn visitor_stand_in(website: &str, llm: ResponseTemplate, metas: &[(&str, Value)]) -> MockServer {
    let server = MockServer::start().await;
    mount_llm(&server, llm).await;
    for (session, data) in metas {
        mount_session_meta(&server, website, session, data).await;
    }
    mount_conversation(&server, "GET", website, "meta", meta(json!({"nickname": "x"})), 10).await;
    mount_conversation(&server, "GET", website, "messages", no_history(), DEFAULT_PRIORITY).await;
    mount_conversation(&server, "PATCH", website, "compose", compose_ok(), DEFAULT_PRIORITY).await;
    mount_conversation(&server, "POST", website, "message", dispatched(4242), DEFAULT_PRIORITY).await;
    server
}

// ---------------------------------------------------------------------------------------------
// Hook bodies and stream frames
// ---------------------------------------------------------------------------------------------

/// A visitor's text message, shaped like tests/fixtures/crisp/message-send-text.json.
pub fn visitor_message(website: &str, session: &str, fingerprint: u64, content: &str) -> Value {
    json!({
        "website_id": website,
        "event": "message:send",
        "data": {
            "website_id": website,
            "session_id": session,
            "type": "text",
            "content": content,
            "from": "user",
            "origin": "chat",
            "stamped": true,
            "timestamp": 1_506_985_696_616_u64,
            "fingerprint": fingerprint,
            "user": {"nickname": "visitor493603", "user_id": session}
        },
        "timestamp": 1_506_985_696_616_u64
    })
}

/// An operator's text message as Crisp echoes it (`message:received`), sent by the operator
/// whose user id is `operator`.
pub fn operator_message(
    website: &str,
    session: &str,
    fingerprint: u64,
    content: &str,
    automated: bool,
    operator: &str,
) -> Value {
    json!({
        "website_id": website,
        "event": "message:received",
        "data": {
            "website_id": website,
            "session_id": session,
            "type": "text",
            "from": "operator",
            "origin": "chat",
            "content": content,
            "fingerprint": fingerprint,
            "timestamp": 1_700_123_460_000_u64,
            "automated": automated,
            "user": {"type": "participant", "nickname": "Anna", "user_id": operator}
        },
        "timestamp": 1_700_123_460_000_u64
    })
}

/// An Autoplay `actions` frame for `session` with one action per title; `extra` adds top-level
/// fields such as `user_id` or `conversation_id`.
pub fn actions_frame(session: &str, extra: Value, titles: &[&str]) -> String {
    let actions: Vec<Value> = titles
        .iter()
        .enumerate()
        .map(|(i, title)| {
            json!({
                "index": i,
                "type": "click",
                "title": title,
                "description": format!("The visitor did: {title}"),
                "timestamp_start": 1_700_000_000.0 + i as f64,
                "timestamp_end": 1_700_000_000.5 + i as f64,
                "raw_url": "https://app.example.com/page?ref=x",
                "canonical_url": "https://app.example.com/page",
            })
        })
        .collect();
    let mut frame = json!({
        "type": "actions",
        "product_id": "prod_abc",
        "session_id": session,
        "count": titles.len(),
        "forwarded_at": 1_700_000_010.0,
        "actions": actions,
    });
    if let (Some(frame), Value::Object(extra)) = (frame.as_object_mut(), extra) {
        frame.extend(extra);
    }
    format!("data: {frame}\n\n")
}

// ---------------------------------------------------------------------------------------------
// What the stand-ins received
// ---------------------------------------------------------------------------------------------

/// `.../conversation/{session}/message` of `website`: where replies are posted.
pub fn message_path(website: &str, session: &str) -> String {
    format!("/v1/website/{website}/conversation/{session}/message")
}

/// Every request the stand-in received, in arrival order.
pub async fn all_requests(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap_or_default()
}

/// The requests to `verb request_path` received so far.
pub async fn requests_to(server: &MockServer, verb: &str, request_path: &str) -> Vec<Request> {
    all_requests(server)
        .await
        .into_iter()
        .filter(|r| r.method.as_str() == verb && r.url.path() == request_path)
        .collect()
}

/// Calls `seen` every 20 ms until it returns `count` items or more, or `limit` passes; returns
/// the last ones seen.
pub async fn wait_for_count<T, F>(limit: Duration, count: usize, mut seen: impl FnMut() -> F) -> Vec<T>
where
    F: std::future::Future<Output = Vec<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let items = seen().await;
        if items.len() >= count || Instant::now() > deadline {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits up to `limit` for `count` requests to `verb request_path`; returns those seen.
pub async fn wait_for(
    server: &MockServer,
    verb: &str,
    request_path: &str,
    count: usize,
    limit: Duration,
) -> Vec<Request> {
    let deadline = Instant::now() + limit;
    loop {
        let seen = requests_to(server, verb, request_path).await;
        if seen.len() >= count || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A request's JSON body.
pub fn body_of(request: &Request) -> Value {
    serde_json::from_slice(&request.body)
        .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&request.body)))
}

/// A bot post's JSON body without its `fingerprint`, which must be there (every post carries
/// one, derived from what it answers).
pub fn post_body(request: &Request) -> Value {
    let mut body = body_of(request);
    let fingerprint = body.as_object_mut().and_then(|fields| fields.remove("fingerprint"));
    assert!(fingerprint.as_ref().is_some_and(Value::is_u64), "a post without its fingerprint: {body}");
    body
}

/// A request header that must be there.
pub fn header_of<'a>(request: &'a Request, name: &str) -> &'a str {
    request.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no {name} header"))
}

/// Bodies of the chat-completion requests the stand-in received, oldest first.
pub async fn llm_calls(server: &MockServer) -> Vec<Value> {
    requests_to(server, "POST", LLM_PATH).await.iter().map(body_of).collect()
}

/// The last message of a chat request body, which must be the user's (the prompt ending with
/// the question).
pub fn user_prompt(call: &Value) -> String {
    let messages = call["messages"].as_array().expect("messages array");
    let last = messages.last().expect("at least one message");
    assert_eq!(last["role"], "user", "{call}");
    last["content"].as_str().expect("content string").to_owned()
}

/// [`user_prompt`] of a chat request.
pub fn last_user_message(call: &Request) -> String {
    user_prompt(&body_of(call))
}
