//! Operability against loopback stand-ins for Autoplay, OpenAI and Crisp: Prometheus metrics
//! (in-process: each app has its own registry), JSON logs and reply traces (in-process, the log
//! read as the binary's stderr), and `--check` (the real binaries: its output and exit status).

use bytes::Bytes;
use serde_json::{Value, json};
use standins::sse_server::{Plan, SseServer};
use standins::stand_ins::{
    Env, LLM_PATH, Webhook, completion, crisp_ok, http, mount_crisp_catch_all, mount_llm, requests_to, set,
    summary_env, wait_for_count,
};
use standins::{bin, eventually, read};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const WEBSITE: &str = "42286ab3-b29a-4fde-8538-da0ae501d825";
const SESSION: &str = "session_36ba3566-9651-4790-afc8-ffedbccc317f";
const SECRET: &str = "hook-secret-e2e";
const ANSWER: &str = "Click **Upgrade** in the top-right corner.";
const FALLBACK: &str = "Thanks for your message! A teammate will get back to you shortly.";

const DOCS_EXAMPLE: &str = include_str!("fixtures/crisp/message-send-text.json");
const OPERATOR_ECHO: &str = include_str!("fixtures/crisp/message-received-operator-echo.json");
const ACTIONS_FULL: &str = include_str!("fixtures/autoplay/actions-full.sse");

/// Generous limit for something that must happen on a loaded two-core machine.
const LIMIT: Duration = Duration::from_secs(30);
/// `--check` must be done well within this.
const CHECK_LIMIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Stand-ins and helpers
// ---------------------------------------------------------------------------------------------

fn models_ok() -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(json!({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]}))
}

/// One server standing in for OpenAI (`llm` for chat completions, `GET /v1/models` 200) and
/// Crisp (`website` for `GET /v1/website/{WEBSITE}`; every other Crisp call answered 200).
async fn stand_in(llm: ResponseTemplate, website: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    mount_llm(&server, llm).await;
    Mock::given(method("GET")).and(path("/v1/models")).respond_with(models_ok()).mount(&server).await;
    Mock::given(method("GET")).and(path(format!("/v1/website/{WEBSITE}"))).respond_with(website).mount(&server).await;
    mount_crisp_catch_all(&server).await;
    server
}

async fn default_stand_in() -> MockServer {
    stand_in(completion(ANSWER), crisp_ok()).await
}

/// The environment of a correctly configured webhook talking to `server`.
fn webhook_env(server: &MockServer) -> Env {
    standins::stand_ins::webhook_env(server, WEBSITE, SECRET)
}

/// The docs example moved to another conversation (and another fingerprint).
fn message_in(session: &str, fingerprint: u64) -> String {
    let mut hook: Value = serde_json::from_str(DOCS_EXAMPLE).unwrap();
    hook["data"]["session_id"] = json!(session);
    hook["data"]["user"]["user_id"] = json!(session);
    hook["data"]["fingerprint"] = json!(fingerprint);
    hook.to_string()
}

/// `POST .../conversation/*/message` calls the stand-in received: replies posted to Crisp.
async fn crisp_posts(server: &MockServer) -> Vec<Request> {
    let received = server.received_requests().await.unwrap_or_default();
    received
        .into_iter()
        .filter(|r| {
            r.method.as_str() == "POST"
                && r.url.path().starts_with("/v1/website/")
                && r.url.path().ends_with("/message")
        })
        .collect()
}

async fn wait_crisp_posts(server: &MockServer, count: usize) -> Vec<Request> {
    wait_for_count(LIMIT, count, || crisp_posts(server)).await
}

/// The value of the series `series` (name with its labels, exactly as rendered) in a
/// Prometheus text body.
fn metric(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(name, _)| *name == series)
        .and_then(|(_, value)| value.trim().parse().ok())
}

async fn fetch(http: &reqwest::Client, url: &str) -> Option<String> {
    let response = http.get(url).send().await.ok()?;
    if response.status() != 200 {
        return None;
    }
    response.text().await.ok()
}

/// Polls `url` until `check` holds for its body; returns that body, or panics with the last one.
async fn metrics_until(url: &str, what: &str, check: impl Fn(&str) -> bool, log: impl Fn() -> String) -> String {
    let http = http();
    let deadline = Instant::now() + LIMIT;
    let mut last = None;
    loop {
        if let Some(body) = fetch(&http, url).await {
            if check(&body) {
                return body;
            }
            last = Some(body);
        }
        assert!(Instant::now() < deadline, "{what} never held at {url}; last body:\n{last:?}\nlog:\n{}", log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Output of one `--check` run.
struct CheckRun {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl CheckRun {
    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().filter(|l| !l.trim().is_empty()).collect()
    }

    fn shown(&self) -> String {
        format!("exit {:?} after {:?}\nstdout:\n{}\nstderr:\n{}", self.code, self.took, self.stdout, self.stderr)
    }
}

/// Runs `exe --check` in `cwd` with exactly `env` (plus PATH), on a blocking thread so the
/// stand-ins on this runtime keep answering; kills it after [`CHECK_LIMIT`].
async fn run_check(exe: &Path, cwd: &Path, env: &[(&'static str, String)]) -> CheckRun {
    let binary = exe.to_path_buf();
    let cwd = cwd.to_path_buf();
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    tokio::task::spawn_blocking(move || {
        let out = tempfile::tempdir().unwrap();
        let stdout_path = out.path().join("stdout");
        let stderr_path = out.path().join("stderr");
        let started = Instant::now();
        let mut child = Command::new(binary)
            .arg("--check")
            .current_dir(&cwd)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_path).unwrap())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("spawn --check");
        let code = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status.code();
            }
            if started.elapsed() > CHECK_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        CheckRun { code, stdout: read(&stdout_path), stderr: read(&stderr_path), took: started.elapsed() }
    })
    .await
    .unwrap()
}

fn assert_no_secret(run: &CheckRun, secrets: &[&str]) {
    for secret in secrets {
        assert!(!run.stdout.contains(secret) && !run.stderr.contains(secret), "{secret} printed:\n{}", run.shown());
    }
}

fn assert_prompt(run: &CheckRun) {
    assert!(run.took < CHECK_LIMIT, "--check took {:?}:\n{}", run.took, run.shown());
    assert!(run.code.is_some(), "--check did not exit within {CHECK_LIMIT:?}:\n{}", run.shown());
}

/// `.json` files in `dir`, sorted.
fn traces_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

// ---------------------------------------------------------------------------------------------
// 1. Webhook metrics
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn webhook_metrics_count_hooks_by_outcome_replies_and_call_latencies() {
    let server = default_stand_in().await;
    let cwd = tempfile::tempdir().unwrap();
    let webhook = Webhook::in_process(cwd.path(), webhook_env(&server)).await;

    webhook.deliver(DOCS_EXAMPLE).await;
    assert_eq!(wait_crisp_posts(&server, 1).await.len(), 1, "reply posted; log: {}", webhook.stderr());
    webhook.deliver(OPERATOR_ECHO).await;
    let wrong = webhook.hook_with_key("not-the-secret", DOCS_EXAMPLE).await;
    assert_eq!(wrong.status(), 401);

    let body = metrics_until(
        &webhook.metrics_url(),
        "hook, reply and latency metrics",
        |body| {
            metric(body, r#"hooks_received_total{outcome="unauthorized"}"#) == Some(1.0)
                && metric(body, r#"hooks_received_total{outcome="operator_message"}"#) == Some(1.0)
                && metric(body, r#"hooks_received_total{outcome="visitor_message"}"#) == Some(1.0)
                && metric(body, "replies_sent_total") == Some(1.0)
                && body.contains("llm_request_duration_seconds_bucket")
                && body.contains("crisp_request_duration_seconds_bucket")
        },
        || webhook.stderr(),
    )
    .await;
    for line in [
        r#"hooks_received_total{outcome="unauthorized"} 1"#,
        r#"hooks_received_total{outcome="operator_message"} 1"#,
        r#"hooks_received_total{outcome="visitor_message"} 1"#,
        "replies_sent_total 1",
    ] {
        assert!(body.lines().any(|l| l == line), "no line {line:?} in:\n{body}");
    }
    assert_eq!(metric(&body, "fallback_replies_total"), Some(0.0), "no fallback was sent:\n{body}");
    assert!(!body.contains(SECRET), "the hook secret must not appear in metrics:\n{body}");
}

#[tokio::test]
async fn webhook_metrics_count_a_fallback_reply_when_the_llm_fails() {
    let refusal = ResponseTemplate::new(400)
        .set_body_json(json!({"error": {"message": "bad request", "type": "invalid_request_error"}}));
    let server = stand_in(refusal, crisp_ok()).await;
    let cwd = tempfile::tempdir().unwrap();
    let webhook = Webhook::in_process(cwd.path(), webhook_env(&server)).await;
    webhook.deliver(DOCS_EXAMPLE).await;

    // The fallback for the visitor, then the context note for operators.
    let posts = wait_crisp_posts(&server, 2).await;
    assert_eq!(posts.len(), 2, "fallback and note posted; log: {}", webhook.stderr());
    let posted: Value = serde_json::from_slice(&posts[0].body).unwrap();
    assert_eq!(posted["content"], FALLBACK);
    let note: Value = serde_json::from_slice(&posts[1].body).unwrap();
    assert_eq!(note["type"], "note");

    let body = metrics_until(
        &webhook.metrics_url(),
        "fallback_replies_total 1",
        |body| metric(body, "fallback_replies_total") == Some(1.0),
        || webhook.stderr(),
    )
    .await;
    assert!(body.lines().any(|l| l == "fallback_replies_total 1"), "{body}");
    assert_ne!(metric(&body, "replies_sent_total"), Some(1.0), "a fallback is not an answer:\n{body}");
}

// ---------------------------------------------------------------------------------------------
// 2. Listener metrics
// ---------------------------------------------------------------------------------------------

/// A listener in this process with `METRICS_ADDR` on a free port, started in its own directory.
struct MeteredListener {
    running: standins::apps::Running,
    metrics_url: String,
    _dir: tempfile::TempDir,
}

impl MeteredListener {
    async fn start(server: &SseServer, extra: &[(&'static str, String)]) -> MeteredListener {
        standins::apps::log_to_test_output();
        let dir = tempfile::tempdir().unwrap();
        let mut env = vec![
            ("STREAM_URL", server.url.clone()),
            ("SUMMARY_THRESHOLD", "0".to_owned()),
            ("METRICS_ADDR", "127.0.0.1:0".to_owned()),
        ];
        env.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        env.extend(extra.iter().cloned());
        let running =
            standins::apps::listener(&standins::apps::in_dir(dir.path(), &env)).await.unwrap_or_else(|e| panic!("{e}"));
        let addr = running.metrics_addr.expect("METRICS_ADDR bound");
        MeteredListener { running, metrics_url: format!("http://{addr}/metrics"), _dir: dir }
    }

    async fn until(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let log = || format!("(the in-process listener, running: {})", self.running.is_running());
        metrics_until(&self.metrics_url, what, check, log).await
    }
}

#[tokio::test]
async fn listener_metrics_count_actions_skipped_frames_connection_and_reconnects() {
    let chunks = vec![Bytes::from(ACTIONS_FULL), Bytes::from_static(b"data: not-json\n\n")];
    let server = SseServer::start(vec![Plan::StreamThenHold(chunks)], None).await;
    let listener = MeteredListener::start(&server, &[]).await;

    let body = listener
        .until("actions, skipped frames and the connection gauge", |body| {
            metric(body, "actions_ingested_total") == Some(3.0)
                && metric(body, "frames_skipped_total") == Some(1.0)
                && metric(body, "stream_connected") == Some(1.0)
        })
        .await;
    for line in ["actions_ingested_total 3", "frames_skipped_total 1", "stream_connected 1"] {
        assert!(body.lines().any(|l| l == line), "no line {line:?} in:\n{body}");
    }

    server.close_all();
    let body = listener
        .until("stream_reconnects_total >= 1", |body| metric(body, "stream_reconnects_total").is_some_and(|n| n >= 1.0))
        .await;
    assert_eq!(metric(&body, "actions_ingested_total"), Some(3.0), "{body}");
    // The next connection (held idle by the server) brings the gauge back to 1.
    listener
        .until("stream_connected 1 after the reconnect", |body| metric(body, "stream_connected") == Some(1.0))
        .await;
    assert!(server.requests().len() >= 2, "the listener reconnected");
}

#[tokio::test]
async fn listener_metrics_count_written_summaries() {
    let llm = MockServer::start().await;
    mount_llm(&llm, completion("The user exported a CSV, then opened billing.")).await;
    let server = SseServer::start(vec![Plan::StreamThenHold(vec![Bytes::from(ACTIONS_FULL)])], None).await;
    let env = summary_env(&llm, 3);
    let listener = MeteredListener::start(&server, &env).await;
    let body =
        listener.until("summaries_written_total 1", |body| metric(body, "summaries_written_total") == Some(1.0)).await;
    assert!(body.lines().any(|l| l == "summaries_written_total 1"), "{body}");
    assert!(
        body.contains("llm_request_duration_seconds_count{outcome=\"ok\"} 1"),
        "the summary call is timed:\n{body}"
    );
    assert_eq!(metric(&body, "summaries_failed_total"), Some(0.0), "{body}");
}

/// Each app owns its registry (no global recorder): two webhooks and a listener in one process
/// each report only their own series.
#[tokio::test]
async fn apps_in_one_process_each_report_only_their_own_series() {
    let server = default_stand_in().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Webhook::in_process(dir_a.path(), webhook_env(&server)).await;
    let b = Webhook::in_process(dir_b.path(), webhook_env(&server)).await;
    for _ in 0..3 {
        assert_eq!(a.hook_with_key("not-the-secret", DOCS_EXAMPLE).await.status(), 401);
    }
    assert_eq!(b.hook_with_key("not-the-secret", DOCS_EXAMPLE).await.status(), 401);
    b.deliver(OPERATOR_ECHO).await;

    let scrape = |webhook: &Webhook| {
        let url = webhook.metrics_url();
        async move { http().get(url).send().await.unwrap().text().await.unwrap() }
    };
    let (body_a, body_b) = (scrape(&a).await, scrape(&b).await);
    let unauthorized = r#"hooks_received_total{outcome="unauthorized"}"#;
    let operator = r#"hooks_received_total{outcome="operator_message"}"#;
    assert_eq!(metric(&body_a, unauthorized), Some(3.0), "{body_a}");
    assert_eq!(metric(&body_a, operator), Some(0.0), "{body_a}");
    assert_eq!(metric(&body_b, unauthorized), Some(1.0), "{body_b}");
    assert_eq!(metric(&body_b, operator), Some(1.0), "{body_b}");
    // The handle renders what `/metrics` serves.
    assert_eq!(metric(&a.metrics().render(), unauthorized), Some(3.0));

    // A listener beside them: its series, none of the webhooks', and none of its in theirs.
    let stream = SseServer::start(vec![Plan::StreamThenHold(vec![Bytes::from(ACTIONS_FULL)])], None).await;
    let listener = MeteredListener::start(&stream, &[]).await;
    let body =
        listener.until("actions_ingested_total 3", |body| metric(body, "actions_ingested_total") == Some(3.0)).await;
    assert!(!body.contains("hooks_received_total"), "{body}");
    for body in [scrape(&a).await, scrape(&b).await] {
        assert!(!body.contains("actions_ingested_total"), "{body}");
        assert!(!body.contains("stream_connected"), "{body}");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. JSON logs
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn json_logs_are_one_object_per_line_and_reply_lines_carry_session_and_reply_id() {
    let server = default_stand_in().await;
    let cwd = tempfile::tempdir().unwrap();
    let mut env = webhook_env(&server);
    set(&mut env, "LOG_FORMAT", "json");
    let mut webhook = Webhook::in_process(cwd.path(), env).await;
    webhook.deliver(DOCS_EXAMPLE).await;
    assert_eq!(wait_crisp_posts(&server, 1).await.len(), 1, "log: {}", webhook.stderr());
    assert!(eventually(LIMIT, || webhook.stderr().contains("reply sent")).await, "log: {}", webhook.stderr());

    // Stop it (cleanly, as SIGTERM stops the binary) so that every line is complete before
    // reading the log.
    webhook.stop().await;
    let log = webhook.stderr();

    let mut lines = 0;
    let mut reply_lines = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let parsed: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\nlog:\n{log}"));
        assert!(parsed.is_object(), "not a JSON object: {line}");
        lines += 1;
        if parsed.pointer("/fields/message").and_then(Value::as_str) == Some("reply sent") {
            reply_lines.push(line);
        }
    }
    assert!(lines >= 3, "start, accepted, reply and stop lines expected:\n{log}");
    assert!(!reply_lines.is_empty(), "no \"reply sent\" line:\n{log}");
    for line in reply_lines {
        assert!(line.contains(SESSION), "the reply line lacks the Crisp session: {line}");
        assert!(line.contains("reply_id"), "the reply line lacks a reply_id: {line}");
    }
    let accepted = log.lines().find(|l| l.contains("visitor message accepted")).expect("accepted line");
    assert!(accepted.contains(SESSION), "{accepted}");
}

// ---------------------------------------------------------------------------------------------
// 4. --check
// ---------------------------------------------------------------------------------------------

const CRISP_KEY: &str = "crisp-SECRET-4b2d19";
const OPENAI_KEY: &str = "sk-SECRET-a83f05";
const HOOK_SECRET: &str = "hook-SECRET-9c1e77";
const UNKEY: &str = "uk_SECRET_7d3a51";

fn webhook_check_env(server: &MockServer) -> Vec<(&'static str, String)> {
    let mut env = webhook_env(server);
    set(&mut env, "CRISP_TOKEN_KEY", CRISP_KEY);
    set(&mut env, "OPENAI_API_KEY", OPENAI_KEY);
    set(&mut env, "WEBHOOK_SECRET", HOOK_SECRET);
    env
}

#[tokio::test]
async fn webhook_check_with_every_service_up_prints_ok_lines_and_exits_zero() {
    let server = default_stand_in().await;
    let cwd = tempfile::tempdir().unwrap();
    let run = run_check(bin!("webhook"), cwd.path(), &webhook_check_env(&server)).await;
    assert_prompt(&run);
    assert_eq!(run.code, Some(0), "{}", run.shown());
    let lines = run.lines();
    assert_eq!(lines.len(), 3, "configuration, OpenAI and Crisp:\n{}", run.shown());
    assert!(lines.iter().all(|l| l.starts_with("ok")), "{}", run.shown());
    assert!(lines.iter().any(|l| l.contains("OpenAI")) && lines.iter().any(|l| l.contains("Crisp")), "{}", run.shown());
    assert_no_secret(&run, &[CRISP_KEY, OPENAI_KEY, HOOK_SECRET]);

    let received = server.received_requests().await.unwrap_or_default();
    assert!(received.iter().any(|r| r.method.as_str() == "GET" && r.url.path() == "/v1/models"), "OpenAI was reached");
    let website = format!("/v1/website/{WEBSITE}");
    assert!(received.iter().any(|r| r.method.as_str() == "GET" && r.url.path() == website), "Crisp was reached");
    assert!(received.iter().all(|r| r.url.path() != LLM_PATH), "--check must not ask for a completion");
}

#[tokio::test]
async fn webhook_check_with_a_refused_crisp_token_names_crisp_and_the_reason_and_fails() {
    let refused =
        ResponseTemplate::new(401).set_body_json(json!({"error": true, "reason": "unauthorized", "data": {}}));
    let server = stand_in(completion(ANSWER), refused).await;
    let cwd = tempfile::tempdir().unwrap();
    let run = run_check(bin!("webhook"), cwd.path(), &webhook_check_env(&server)).await;
    assert_prompt(&run);
    assert!(run.code.is_some_and(|c| c != 0), "{}", run.shown());
    let failed = run.lines().into_iter().find(|l| l.starts_with("FAILED  Crisp"));
    let failed = failed.unwrap_or_else(|| panic!("no \"FAILED  Crisp\" line:\n{}", run.shown()));
    assert!(failed.contains("unauthorized"), "{failed}");
    assert!(run.lines().iter().any(|l| l.starts_with("ok") && l.contains("OpenAI")), "{}", run.shown());
    assert_no_secret(&run, &[CRISP_KEY, OPENAI_KEY, HOOK_SECRET]);
}

fn listener_check_env(stream: &SseServer, llm: &MockServer) -> Vec<(&'static str, String)> {
    vec![
        ("STREAM_URL", stream.url.clone()),
        ("UNKEY_API_KEY", UNKEY.to_owned()),
        ("OPENAI_BASE_URL", format!("{}/v1", llm.uri())),
        ("OPENAI_API_KEY", OPENAI_KEY.to_owned()),
    ]
}

#[tokio::test]
async fn listener_check_with_the_stream_and_openai_up_exits_zero() {
    let llm = default_stand_in().await;
    let stream = SseServer::start(vec![], Some(Plan::StreamThenHold(vec![]))).await;
    let cwd = tempfile::tempdir().unwrap();
    let run = run_check(bin!("listener"), cwd.path(), &listener_check_env(&stream, &llm)).await;
    assert_prompt(&run);
    assert_eq!(run.code, Some(0), "{}", run.shown());
    let lines = run.lines();
    assert_eq!(lines.len(), 3, "configuration, stream and OpenAI:\n{}", run.shown());
    assert!(lines.iter().all(|l| l.starts_with("ok")), "{}", run.shown());
    assert_no_secret(&run, &[UNKEY, OPENAI_KEY]);
    let requests = stream.requests();
    assert_eq!(requests.len(), 1, "one probe of the stream");
    let auth = requests[0].headers.get("authorization").and_then(|v| v.to_str().ok());
    assert_eq!(auth, Some(format!("Bearer {UNKEY}").as_str()), "the probe uses the token");
}

#[tokio::test]
async fn listener_check_with_a_refused_stream_token_reports_401_and_fails() {
    let llm = default_stand_in().await;
    let stream = SseServer::start(vec![], Some(Plan::Status(401))).await;
    let cwd = tempfile::tempdir().unwrap();
    let run = run_check(bin!("listener"), cwd.path(), &listener_check_env(&stream, &llm)).await;
    assert_prompt(&run);
    assert!(run.code.is_some_and(|c| c != 0), "{}", run.shown());
    let failed = run.lines().into_iter().find(|l| l.starts_with("FAILED"));
    let failed = failed.unwrap_or_else(|| panic!("no FAILED line:\n{}", run.shown()));
    assert!(failed.contains("401"), "{failed}");
    assert_no_secret(&run, &[UNKEY, OPENAI_KEY]);
}

// ---------------------------------------------------------------------------------------------
// 5. Reply traces
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn trace_dir_holds_one_trace_per_reply_with_the_exact_prompt_and_answer() {
    let server = default_stand_in().await;
    let cwd = tempfile::tempdir().unwrap();
    let traces = cwd.path().join("traces");
    let mut env = webhook_env(&server);
    set(&mut env, "TRACE_DIR", traces.to_str().unwrap());
    let mut webhook = Webhook::in_process(cwd.path(), env).await;
    webhook.deliver(DOCS_EXAMPLE).await;
    assert_eq!(wait_crisp_posts(&server, 1).await.len(), 1, "log: {}", webhook.stderr());

    let written = eventually(LIMIT, || {
        traces_in(&traces).first().is_some_and(|f| serde_json::from_str::<Value>(&read(f)).is_ok())
    })
    .await;
    assert!(written, "no readable trace in {}; log: {}", traces.display(), webhook.stderr());
    // Stopped (SIGTERM: every reply to an accepted message dealt with first), it has made
    // every reply it was going to: one, logged once, with its one trace.
    webhook.stop().await;
    assert_eq!(webhook.stderr().matches("reply sent").count(), 1, "one reply: {}", webhook.stderr());
    let files = traces_in(&traces);
    assert_eq!(files.len(), 1, "exactly one trace: {files:?}");

    let trace: Value = serde_json::from_str(&read(&files[0])).unwrap();
    assert_eq!(trace["crisp_session"], SESSION, "{trace:#}");
    let reply_id = trace["reply_id"].as_str().unwrap_or_else(|| panic!("no reply_id: {trace:#}"));
    assert!(!reply_id.is_empty());
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.ends_with(&format!("-{reply_id}.json")), "file {name} names reply {reply_id}");
    let messages = trace["request"]["messages"].as_array().unwrap_or_else(|| panic!("no request.messages: {trace:#}"));
    assert_eq!(messages.len(), 2, "system + user: {trace:#}");
    assert_eq!(messages[0]["role"], "system");
    assert!(messages[0]["content"].as_str().is_some_and(|s| !s.is_empty()), "{trace:#}");
    assert_eq!(messages[1]["role"], "user");
    let user = messages[1]["content"].as_str().unwrap();
    assert!(user.contains("User question: Hey :)"), "{user}");
    assert_eq!(trace["answer"], ANSWER);
    assert_eq!(trace["outcome"], "answered");

    // The trace holds exactly what was sent to the LLM.
    let llm = requests_to(&server, "POST", LLM_PATH).await;
    assert_eq!(llm.len(), 1);
    let sent: Value = serde_json::from_slice(&llm[0].body).unwrap();
    assert_eq!(sent["messages"], trace["request"]["messages"]);
}

#[tokio::test]
async fn trace_max_files_keeps_only_the_newest_traces() {
    let server = default_stand_in().await;
    let cwd = tempfile::tempdir().unwrap();
    let traces = cwd.path().join("traces");
    // Two traces of an earlier run, older than any of this one: the webhook counts them in,
    // so each trace it writes prunes one file, and that file going is the sign that the trace
    // was written and the oldest pruned. Oldest first, the files the next traces prune.
    std::fs::create_dir_all(&traces).unwrap();
    let mut oldest: VecDeque<PathBuf> =
        ["0000000001-earlier.json", "0000000002-earlier.json"].iter().map(|name| traces.join(name)).collect();
    for file in &oldest {
        std::fs::write(file, "{}").unwrap();
    }
    let mut env = webhook_env(&server);
    set(&mut env, "TRACE_DIR", traces.to_str().unwrap());
    set(&mut env, "TRACE_MAX_FILES", "2");
    let webhook = Webhook::in_process(cwd.path(), env).await;

    // One reply at a time: each trace is written and its oldest file pruned before the next
    // reply, so "the newest" is the order the messages were sent in.
    let sessions: Vec<String> = (0..4).map(|i| format!("session_00000000-0000-4000-8000-00000000000{i}")).collect();
    for (i, session) in sessions.iter().enumerate() {
        webhook.deliver(&message_in(session, 1_000 + i as u64)).await;
        let pruned = oldest.pop_front().unwrap();
        let done = eventually(LIMIT, || !pruned.exists() && trace_of(&traces, session).is_some()).await;
        let files = traces_in(&traces);
        assert!(done, "reply {i}: no trace, or {} not pruned: {files:?}; log: {}", pruned.display(), webhook.stderr());
        oldest.push_back(trace_of(&traces, session).unwrap());
    }
    assert_eq!(crisp_posts(&server).await.len(), 4, "four replies; log: {}", webhook.stderr());

    let files = traces_in(&traces);
    let mut newest = Vec::from(oldest);
    newest.sort();
    assert_eq!(files, newest, "the newest TRACE_MAX_FILES are kept");
    let mut kept = Vec::new();
    for file in &files {
        let trace: Value = serde_json::from_str(&read(file)).unwrap();
        assert_eq!(trace["outcome"], "answered", "{trace:#}");
        kept.push(trace["crisp_session"].as_str().unwrap_or_default().to_owned());
    }
    kept.sort();
    assert_eq!(kept, sessions[2..], "the traces of the last two replies are kept");
}

/// The readable trace of the reply in `session`, if there is one in `dir`.
fn trace_of(dir: &Path, session: &str) -> Option<PathBuf> {
    traces_in(dir)
        .into_iter()
        .find(|file| serde_json::from_str::<Value>(&read(file)).is_ok_and(|trace| trace["crisp_session"] == session))
}
