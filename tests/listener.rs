//! The listener against a loopback Autoplay stream and OpenAI stand-in: in-process through its
//! builder (its log read as its binary's stderr), or the real binary where its signals, exit
//! status, `.env`, environment or `--help` are the point.

use bytes::Bytes;
use serde_json::{Value, json};
use standins::apps::{self, Runner};
use standins::sse_server::{Plan, SseServer};
use standins::stand_ins::{completion, llm_calls, mount_llm, summary_env, wait_for_count};
use standins::{Proc, bin, eventually, read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const ACTIONS_FULL: &str = include_str!("fixtures/autoplay/actions-full.sse");
const LEGACY: &str = include_str!("fixtures/autoplay/actions-legacy-minimal.sse");
const HEARTBEAT: &str = include_str!("fixtures/autoplay/heartbeat.sse");
const MALFORMED: &str = include_str!("fixtures/autoplay/ignored-and-malformed.sse");
const SERVER_SUMMARY: &str = include_str!("fixtures/autoplay/summary.sse");
const EXPECTED: &str = include_str!("fixtures/autoplay/expected-event_data.txt");

/// What the legacy fixture must produce (the fixture's `count` is 1, but both actions are written).
const LEGACY_EXPECTED: &str = "[0] Action: Clicked 'Buy Now'\n     \
     Details: User clicked the purchase button on the product page\n     \
     Page:    /products/shoes\n\
     [1] Action: Page view\n     \
     Details: User landed on /checkout/payment\n     \
     Page:    /checkout/payment\n";

/// An actions frame full of multi-byte UTF-8: 2-, 3- and 4-byte sequences, the em dash among them.
const UNICODE_FRAME: &str = "data: {\"type\":\"actions\",\"session_id\":\"ps_u\",\"count\":1,\"actions\":[{\"title\":\"Café — checkout ✓\",\"description\":\"Paid with 💳 in 設定\",\"canonical_url\":\"https://app.example.com/café\"}]}\n\n";
const UNICODE_EXPECTED: &str =
    "[0] Action: Café — checkout ✓\n     Details: Paid with 💳 in 設定\n     Page:    https://app.example.com/café\n";

/// The SDK's one-line rendering of each action of actions-full.sse, as the summary prompt lists them.
const FULL_ACTION_TEXTS: [&str; 3] = [
    "[0] pageview: User landed on the dashboard page \u{2014} https://app.example.com/dashboard",
    "[1] click: User clicked Export CSV button on the dashboard page \u{2014} https://app.example.com/dashboard",
    "[2] click: User clicked billing settings link on the settings page \u{2014} https://app.example.com/settings/billing",
];

const SECRET: &str = "uk_live_secret_value";

/// Long enough for a loaded two-core machine; polls return as soon as the condition holds.
const LIMIT: Duration = Duration::from_secs(15);

fn listener_env(stream_url: &str) -> Vec<(&'static str, String)> {
    vec![("STREAM_URL", stream_url.to_owned()), ("SUMMARY_THRESHOLD", "0".into())]
}

/// A listener started in its own temporary directory against its own stream server: in-process
/// through its builder, or the binary where its signals or exit status are the point.
struct Running {
    runner: Runner,
    server: SseServer,
    /// The activity file at its default place, `event_data.txt` in the working directory.
    file: PathBuf,
    dir: tempfile::TempDir,
}

impl Running {
    /// Starts a stream server with `plans`, then the listener (in-process) with summaries off
    /// and `env` on top.
    async fn start(plans: Vec<Plan>, fallback: Option<Plan>, env: &[(&'static str, String)]) -> Running {
        let server = SseServer::start(plans, fallback).await;
        Running::start_in(false, server, tempfile::tempdir().unwrap(), env).await
    }

    /// [`Running::start`] with the binary.
    async fn start_binary(plans: Vec<Plan>, fallback: Option<Plan>, env: &[(&'static str, String)]) -> Running {
        let server = SseServer::start(plans, fallback).await;
        Running::start_in(true, server, tempfile::tempdir().unwrap(), env).await
    }

    async fn start_in(
        binary: bool,
        server: SseServer,
        dir: tempfile::TempDir,
        env: &[(&'static str, String)],
    ) -> Running {
        let mut all = listener_env(&server.url);
        all.extend(env.iter().cloned());
        let runner = if binary {
            Runner::Binary(Proc::spawn(bin!("listener"), dir.path(), &all, &[]))
        } else {
            let running = apps::listener(&apps::in_dir(dir.path(), &all)).await.unwrap_or_else(|e| panic!("{e}"));
            Runner::InProcess(running)
        };
        let file = dir.path().join("event_data.txt");
        Running { runner, server, file, dir }
    }

    fn proc(&self) -> &Proc {
        self.runner.proc()
    }

    fn proc_mut(&mut self) -> &mut Proc {
        self.runner.proc_mut()
    }

    fn log(&self) -> String {
        self.runner.log()
    }

    fn is_running(&mut self) -> bool {
        self.runner.is_running()
    }

    fn requests(&self) -> usize {
        self.server.requests().len()
    }

    async fn expect_file(&self, expected: &str) {
        expect_file_at(&self.file, expected, || self.log()).await;
    }

    async fn expect_requests(&self, n: usize) {
        let seen = eventually(LIMIT, || self.requests() >= n).await;
        assert!(seen, "expected {n} stream request(s), saw {}\nstderr:\n{}", self.requests(), self.log());
    }

    async fn expect_log(&self, needle: &str) {
        let seen = eventually(LIMIT, || self.log().contains(needle)).await;
        assert!(seen, "stderr never mentioned {needle:?}:\n{}", self.log());
    }

    /// Stops the listener as SIGTERM stops it (the in-process one through the same shutdown)
    /// and waits until it has: the summaries it started are written (or given up) first, within
    /// its grace period. Past this, nothing more reaches the stand-ins from it: a test asserting
    /// that something did not happen asserts it after `stop`, not after a guessed pause.
    async fn stop(&mut self) {
        match &mut self.runner {
            Runner::InProcess(running) => running.stop(LIMIT).await.unwrap_or_else(|e| panic!("{e}")),
            Runner::Binary(proc) => {
                proc.signal("TERM");
                let status = proc.exited(LIMIT).await;
                let status = status.unwrap_or_else(|| panic!("still running after SIGTERM:\n{}", proc.stderr()));
                assert_eq!(status.code(), Some(0), "SIGTERM: {status}; stderr:\n{}", proc.stderr());
            }
        }
    }
}

async fn expect_file_at(file: &Path, expected: &str, log: impl Fn() -> String) {
    if !eventually(LIMIT, || read(file) == expected).await {
        assert_eq!(read(file), expected, "activity file never reached the expected bytes; log:\n{}", log());
    }
}

fn hold(chunks: &[&[u8]]) -> Plan {
    Plan::StreamThenHold(chunks.iter().map(|c| Bytes::copy_from_slice(c)).collect())
}

fn one_byte_chunks(text: &[u8]) -> Plan {
    Plan::StreamThenHold(text.iter().map(|b| Bytes::copy_from_slice(&[*b])).collect())
}

async fn wait_llm_calls(llm: &MockServer, n: usize, limit: Duration) -> Vec<Value> {
    wait_for_count(limit, n, || llm_calls(llm)).await
}

fn prompt_of(call: &Value) -> &str {
    let messages = call["messages"].as_array().expect("messages array");
    assert_eq!(messages.len(), 1, "one message: {call}");
    assert_eq!(messages[0]["role"], "user", "{call}");
    messages[0]["content"].as_str().expect("content string")
}

/// The tail of the summary prompt for `n` actions of actions-full.sse (sent `n / 3` times).
fn prompt_tail(n: usize) -> String {
    let list: Vec<String> = (0..n).map(|i| format!("{}. {}", i + 1, FULL_ACTION_TEXTS[i % 3])).collect();
    format!("Actions:\n{}\n\nSummary:", list.join("\n"))
}

fn set_mtime(file: &Path, age: Duration) {
    let f = std::fs::File::options().write(true).open(file).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The activity file, byte for byte
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn writes_the_reference_bytes_for_the_full_fixture() {
    let server = SseServer::start(vec![Plan::StreamThenHold(vec![Bytes::from(ACTIONS_FULL)])], None).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("event_data.txt");
    let env = apps::in_dir(dir.path(), &listener_env(&server.url));
    let _listener = apps::listener(&env).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(eventually(Duration::from_secs(10), || read(&file) == EXPECTED).await, "file: {:?}", read(&file));
}

#[tokio::test]
async fn legacy_frames_with_null_session_and_wrong_count_write_every_action() {
    let l = Running::start(vec![hold(&[LEGACY.as_bytes()])], None, &[]).await;
    l.expect_file(LEGACY_EXPECTED).await;
}

#[tokio::test]
async fn one_stream_of_every_fixture_writes_only_the_action_batches_in_order_and_stays_connected() {
    let stream = [HEARTBEAT, MALFORMED, SERVER_SUMMARY, ACTIONS_FULL, LEGACY].concat();
    let l = Running::start(vec![hold(&[stream.as_bytes()])], None, &[]).await;
    l.expect_file(&format!("{EXPECTED}{LEGACY_EXPECTED}")).await;
    // `data: not-json` and `data: [1,2,3]` are reported; heartbeats, comments, usertour triggers,
    // server summaries and empty batches are not.
    // Frames are read and logged in order, and the file already holds the last one: both
    // skips are logged by now (waited for all the same, the log being written apart).
    let both = eventually(LIMIT, || l.log().matches("frame skipped").count() >= 2).await;
    let stderr = l.log();
    assert!(both, "stderr:\n{stderr}");
    assert_eq!(stderr.matches("frame skipped").count(), 2, "stderr:\n{stderr}");
    assert_eq!(l.requests(), 1, "a malformed frame must not cost the connection; stderr:\n{stderr}");
    assert_eq!(read(&l.file), format!("{EXPECTED}{LEGACY_EXPECTED}"));
}

#[tokio::test]
async fn one_byte_chunks_give_the_same_bytes() {
    let l = Running::start(vec![one_byte_chunks(ACTIONS_FULL.as_bytes())], None, &[]).await;
    l.expect_file(EXPECTED).await;
}

#[tokio::test]
async fn multi_byte_utf8_split_across_chunks_is_kept_intact() {
    let bytes = UNICODE_FRAME.as_bytes();
    let dash = UNICODE_FRAME.find('\u{2014}').unwrap();
    // Split after the first and after the second byte of the em dash's three.
    let split = hold(&[&bytes[..dash + 1], &bytes[dash + 1..dash + 2], &bytes[dash + 2..]]);
    let a = Running::start(vec![split], None, &[]).await;
    let b = Running::start(vec![one_byte_chunks(bytes)], None, &[]).await;
    a.expect_file(UNICODE_EXPECTED).await;
    b.expect_file(UNICODE_EXPECTED).await;
}

#[tokio::test]
async fn crlf_and_cr_line_endings_give_the_same_bytes() {
    let crlf = ACTIONS_FULL.replace('\n', "\r\n");
    // Every CR ends a chunk, so each CRLF pair is split across two chunks.
    let pieces: Vec<&[u8]> = crlf.as_bytes().split_inclusive(|&b| b == b'\r').collect();
    assert_eq!(pieces.len(), 3);
    let cr = ACTIONS_FULL.replace('\n', "\r");
    let a = Running::start(vec![hold(&[crlf.as_bytes()])], None, &[]).await;
    let b = Running::start(vec![hold(&pieces)], None, &[]).await;
    let c = Running::start(vec![hold(&[cr.as_bytes()])], None, &[]).await;
    a.expect_file(EXPECTED).await;
    b.expect_file(EXPECTED).await;
    c.expect_file(EXPECTED).await;
}

#[tokio::test]
async fn invalid_utf8_and_a_two_megabyte_line_are_skipped_and_the_next_frame_is_written() {
    let mut chunks: Vec<Bytes> = vec![
        Bytes::from_static(
            b"data: {\"type\":\"actions\",\"session_id\":\"s\",\"actions\":[{\"title\":\"bad \xff\xfe\"}]}\n\n",
        ),
        Bytes::from_static(b"data: {\"type\":\"actions\",\"actions\":[{\"title\":\""),
    ];
    chunks.extend((0..32).map(|_| Bytes::from(vec![b'x'; 64 * 1024])));
    chunks.push(Bytes::from_static(b"\"}]}\n\n"));
    chunks.push(Bytes::from(ACTIONS_FULL));
    let l = Running::start(vec![Plan::StreamThenHold(chunks)], None, &[]).await;
    l.expect_file(EXPECTED).await;
    l.expect_log("invalid UTF-8").await;
    l.expect_log("line over the size limit").await;
    // The last chunk, after the skipped ones, was read (the file holds it): on the first
    // connection, had a skip cost it, the stream (sent once) could not have been read again.
    assert_eq!(l.requests(), 1, "skipped frames must not cost the connection; stderr:\n{}", l.log());
    assert_eq!(read(&l.file), EXPECTED);
}

/// Batches without a usable session id, each with a user and a conversation to link.
fn anonymous_frames() -> String {
    let ids = [json!(null), json!(""), json!("   "), json!("unknown"), json!("null")];
    let mut frames = LEGACY.to_owned();
    for (n, id) in ids.iter().enumerate() {
        let body = json!({"type":"actions","session_id":id,"user_id":"u_anon","conversation_id":format!("session_anon{n}"),
            "actions":[{"title":format!("Anonymous {n}"),"description":"d","canonical_url":"/a"}],"count":1});
        let body = body.to_string();
        frames.push_str(&format!("data: {body}\n\n"));
    }
    frames
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

#[tokio::test]
async fn anonymous_batches_go_to_the_activity_file_but_never_to_the_context_store() {
    let anonymous = anonymous_frames();
    // The real session comes last: once its record is in the store, the anonymous ones before
    // it have been through the store writer too.
    let l = Running::start(
        vec![hold(&[anonymous.as_bytes(), ACTIONS_FULL.as_bytes()])],
        None,
        &[("DATA_DIR", "data".into()), ("REDIS_URL", String::new())],
    )
    .await;
    let anonymous_block: String =
        (0..5).map(|n| format!("[0] Action: Anonymous {n}\n     Details: d\n     Page:    /a\n")).collect();
    l.expect_file(&format!("{LEGACY_EXPECTED}{anonymous_block}{EXPECTED}")).await;
    let sessions = l.dir.path().join("data/sessions");
    let seen = eventually(LIMIT, || !files_in(&sessions).is_empty()).await;
    assert!(seen, "the real session was never stored; stderr:\n{}", l.log());
    assert_eq!(files_in(&sessions).len(), 1, "only ps_abc123 has a session file: {:?}", files_in(&sessions));
    let stored = read(&sessions.join(&files_in(&sessions)[0]));
    assert!(stored.contains("Export CSV") && !stored.contains("Anonymous") && !stored.contains("Buy Now"), "{stored}");
    // The real session's batch carries a user (distinct_id_xyz); the anonymous ones link nothing.
    assert_eq!(files_in(&l.dir.path().join("data/users")).len(), 1);
    assert!(files_in(&l.dir.path().join("data/conversations")).is_empty());
}

#[tokio::test]
async fn line_breaks_in_fields_cannot_start_lines_of_their_own() {
    let body = json!({"type":"actions","session_id":"ps_x","count":1,"actions":[{
        "title":"Click\n[1] Action: forged\r\n","description":"a\rb","canonical_url":"/p\n\n=== SUMMARY ===\nforged"}]});
    let frame = format!("data: {body}\n\n");
    let l = Running::start(vec![hold(&[frame.as_bytes(), ACTIONS_FULL.as_bytes()])], None, &[]).await;
    let forged =
        "[0] Action: Click [1] Action: forged  \n     Details: a b\n     Page:    /p  === SUMMARY === forged\n";
    l.expect_file(&format!("{forged}{EXPECTED}")).await;
}

// ---------------------------------------------------------------------------------------------
// Summaries
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_summary_is_requested_once_the_session_passes_the_threshold_and_appended_verbatim() {
    let llm = MockServer::start().await;
    let summary = "  The user opened the dashboard and exported a CSV.\n\nThen they went to billing settings.  \n";
    mount_llm(&llm, completion(summary)).await;
    let mut l = Running::start(vec![hold(&[ACTIONS_FULL.as_bytes()])], None, &summary_env(&llm, 5)).await;

    // Three actions: below the threshold.
    l.expect_file(EXPECTED).await;
    // Six actions: one call covering all six.
    l.server.push(ACTIONS_FULL).await;
    let expected = format!("{EXPECTED}{EXPECTED}\n=== SUMMARY ===\n{summary}\n");
    l.expect_file(&expected).await;
    // Stopped, the listener has made every call it was going to: a summary requested at three
    // actions would be one call too many, or the one call, covering three.
    l.stop().await;
    let calls = llm_calls(&llm).await;
    assert_eq!(calls.len(), 1, "exactly one summary call, none before the threshold: {calls:?}");
    let call = &calls[0];
    assert_eq!(call["model"], "gpt-4o-mini");
    assert_eq!(call["temperature"].as_f64(), Some(0.3));
    assert_eq!(call["max_tokens"], 256);
    let prompt = prompt_of(call);
    assert!(prompt.ends_with(&prompt_tail(6)), "prompt:\n{prompt}");
    assert_eq!(read(&l.file), expected);

    let raw = &llm.received_requests().await.unwrap()[0];
    assert_eq!(raw.headers.get("authorization").unwrap(), "Bearer sk-test");
}

#[tokio::test]
async fn openai_model_selects_the_summary_model() {
    let llm = MockServer::start().await;
    Mock::given(method("POST")).respond_with(completion("Short summary.")).mount(&llm).await;
    let mut env = summary_env(&llm, 3);
    env.push(("OPENAI_MODEL", "my-local-model".into()));
    let l = Running::start(vec![hold(&[ACTIONS_FULL.as_bytes()])], None, &env).await;
    l.expect_file(&format!("{EXPECTED}\n=== SUMMARY ===\nShort summary.\n")).await;
    let calls = llm_calls(&llm).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["model"], "my-local-model");
    assert!(prompt_of(&calls[0]).ends_with(&prompt_tail(3)));
}

#[tokio::test]
async fn actions_of_different_sessions_are_counted_apart() {
    let llm = MockServer::start().await;
    Mock::given(method("POST")).respond_with(completion("S.")).mount(&llm).await;
    // ps_abc123 gets 3 actions and the anonymous session 2: five in all, but neither reaches 5.
    let stream = [ACTIONS_FULL, LEGACY].concat();
    let mut l = Running::start(vec![hold(&[stream.as_bytes()])], None, &summary_env(&llm, 5)).await;
    l.expect_file(&format!("{EXPECTED}{LEGACY_EXPECTED}")).await;

    l.server.push(ACTIONS_FULL).await;
    wait_llm_calls(&llm, 1, LIMIT).await;
    // Stopped, the listener has made every call it was going to: had the five actions of the
    // two sessions been counted together, there would be a call before this one, or this one
    // would carry the anonymous session's actions.
    l.stop().await;
    let calls = llm_calls(&llm).await;
    assert_eq!(calls.len(), 1, "no session reached the threshold before ps_abc123's sixth action: {calls:?}");
    let prompt = prompt_of(&calls[0]);
    assert!(prompt.ends_with(&prompt_tail(6)), "only ps_abc123's six actions:\n{prompt}");
    assert!(!prompt.contains("Buy Now"), "the anonymous session's actions stay out:\n{prompt}");
}

#[tokio::test]
async fn summaries_off_needs_no_openai_key_and_calls_nothing() {
    let llm = MockServer::start().await;
    Mock::given(method("POST")).respond_with(completion("S.")).mount(&llm).await;
    let env = [("OPENAI_BASE_URL", format!("{}/v1", llm.uri())), ("SUMMARY_THRESHOLD", "0".into())];
    let mut l = Running::start(vec![hold(&[ACTIONS_FULL.as_bytes(), ACTIONS_FULL.as_bytes()])], None, &env).await;
    l.expect_file(&format!("{EXPECTED}{EXPECTED}")).await;
    assert!(l.is_running());
    // Stopped (it exits 0, summaries in progress written first), it has called all it would.
    l.stop().await;
    assert!(llm_calls(&llm).await.is_empty());
}

#[tokio::test]
async fn a_refused_summary_writes_nothing_and_its_actions_join_the_next_summary() {
    let llm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {"message": "bad request"}})))
        .up_to_n_times(1)
        .mount(&llm)
        .await;
    Mock::given(method("POST")).respond_with(completion("Nine actions summarised.")).mount(&llm).await;
    let mut l =
        Running::start(vec![hold(&[ACTIONS_FULL.as_bytes(), ACTIONS_FULL.as_bytes()])], None, &summary_env(&llm, 5))
            .await;

    l.expect_log("summary failed").await;
    let calls = llm_calls(&llm).await;
    assert_eq!(calls.len(), 1, "a 400 is not retried");
    assert!(prompt_of(&calls[0]).ends_with(&prompt_tail(6)));
    let two = format!("{EXPECTED}{EXPECTED}");
    l.expect_file(&two).await;
    let text = read(&l.file);
    assert!(!text.contains("=== SUMMARY ===") && !text.contains("None"), "file:\n{text}");
    assert!(l.is_running(), "a failed summary must not stop the listener");

    // "summary failed" is logged once the session has its actions pending again: the next
    // batch retries the summary.
    l.server.push(ACTIONS_FULL).await;
    let calls = wait_llm_calls(&llm, 2, LIMIT).await;
    assert_eq!(calls.len(), 2, "the next batch retries the summary; stderr:\n{}", l.log());
    let prompt = prompt_of(&calls[1]);
    assert!(prompt.ends_with(&prompt_tail(9)), "all nine pending actions:\n{prompt}");
    l.expect_file(&format!("{EXPECTED}{EXPECTED}{EXPECTED}\n=== SUMMARY ===\nNine actions summarised.\n")).await;
}

#[tokio::test]
async fn a_failing_llm_is_retried_a_bounded_number_of_times_and_writes_nothing() {
    let llm = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(500)).mount(&llm).await;
    let mut l =
        Running::start(vec![hold(&[ACTIONS_FULL.as_bytes(), ACTIONS_FULL.as_bytes()])], None, &summary_env(&llm, 5))
            .await;
    let gave_up = eventually(Duration::from_secs(40), || l.log().contains("summary failed")).await;
    assert!(gave_up, "stderr:\n{}", l.log());
    assert_eq!(llm_calls(&llm).await.len(), 4, "four attempts in all");
    let text = read(&l.file);
    assert_eq!(text, format!("{EXPECTED}{EXPECTED}"));
    assert!(!text.contains("None"));
    assert!(l.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summary_in_flight_at_sigterm_is_still_written() {
    let llm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(completion("Finished during shutdown.").set_delay(Duration::from_millis(1000)))
        .mount(&llm)
        .await;
    let mut l = Running::start_binary(
        vec![hold(&[ACTIONS_FULL.as_bytes(), ACTIONS_FULL.as_bytes()])],
        None,
        &summary_env(&llm, 5),
    )
    .await;
    assert_eq!(wait_llm_calls(&llm, 1, LIMIT).await.len(), 1);
    l.proc().signal("TERM");
    let status = l.proc_mut().wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(0), "stderr:\n{}", l.proc().stderr());
    assert_eq!(read(&l.file), format!("{EXPECTED}{EXPECTED}\n=== SUMMARY ===\nFinished during shutdown.\n"));
}

// ---------------------------------------------------------------------------------------------
// The connection: reconnects, backoff, authentication, idle watchdog
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn reconnects_about_a_second_after_the_server_closes_the_stream() {
    let plans = vec![Plan::StreamThenClose(vec![Bytes::from(ACTIONS_FULL)]), hold(&[LEGACY.as_bytes()])];
    let l = Running::start(plans, None, &[]).await;
    l.expect_file(&format!("{EXPECTED}{LEGACY_EXPECTED}")).await;
    let seen = l.server.requests();
    assert_eq!(seen.len(), 2);
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= Duration::from_millis(900), "reconnected after {gap:?}");
}

#[tokio::test]
async fn reconnect_delays_double_and_reset_after_a_valid_frame() {
    let closed = || Plan::StreamThenClose(vec![]);
    let plans =
        vec![closed(), closed(), Plan::StreamThenClose(vec![Bytes::from(ACTIONS_FULL)]), hold(&[LEGACY.as_bytes()])];
    let l = Running::start(plans, None, &[]).await;
    let done = eventually(Duration::from_secs(20), || l.requests() >= 4).await;
    assert!(done, "stderr:\n{}", l.log());
    let at: Vec<Instant> = l.server.requests().iter().map(|r| r.at).collect();
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] >= Duration::from_millis(900), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(1900), "the second delay doubles: {gaps:?}");
    // A valid frame on the third connection resets the delay to ~1 s (it would be ~4 s otherwise).
    assert!(gaps[2] >= Duration::from_millis(900) && gaps[2] < Duration::from_millis(3500), "{gaps:?}");
    l.expect_file(&format!("{EXPECTED}{LEGACY_EXPECTED}")).await;
}

#[tokio::test]
async fn a_server_error_is_retried_after_about_a_second() {
    let l = Running::start(vec![Plan::Status(503), hold(&[ACTIONS_FULL.as_bytes()])], None, &[]).await;
    l.expect_file(EXPECTED).await;
    let seen = l.server.requests();
    assert_eq!(seen.len(), 2);
    assert!(seen[1].at - seen[0].at >= Duration::from_millis(900));
}

#[tokio::test]
async fn a_refused_token_is_reported_without_the_token_and_not_retried_quickly() {
    let env = [("UNKEY_API_KEY", SECRET.to_owned())];
    let mut l = Running::start(vec![], Some(Plan::Status(401)), &env).await;
    l.expect_requests(1).await;
    let first = l.server.requests()[0].clone();
    l.expect_log("UNKEY_API_KEY").await;

    let headers = &first.headers;
    assert_eq!(headers.get("authorization").unwrap(), &format!("Bearer {SECRET}"));
    assert_eq!(headers.get("accept").unwrap(), "text/event-stream");
    assert_eq!(headers.get("cache-control").unwrap(), "no-store");

    // The duration is what is tested: no second request within 5 s of the first (the short
    // backoff would have tried again after about a second; the long one waits 30 s).
    let quiet_until = first.at + Duration::from_secs(5);
    tokio::time::sleep(quiet_until.saturating_duration_since(Instant::now())).await;
    assert_eq!(l.requests(), 1, "a 401 waits the long backoff (30 s) before trying again");
    assert!(l.is_running(), "a 401 must not stop the listener");
    let stderr = l.log();
    assert!(stderr.contains("401"), "stderr:\n{stderr}");
    assert!(!stderr.contains(SECRET), "the token leaked into the log:\n{stderr}");
    assert!(!stderr.contains("uk_live_secret"), "part of the token leaked into the log:\n{stderr}");
}

#[tokio::test]
async fn forbidden_unknown_product_and_bad_mode_are_configuration_errors_too() {
    let mut runs = Vec::new();
    for (code, hint) in [(403, "UNKEY_API_KEY"), (404, "STREAM_URL"), (400, "STREAM_URL")] {
        runs.push((code, hint, Running::start(vec![], Some(Plan::Status(code)), &[]).await));
    }
    for (code, hint, l) in &runs {
        l.expect_requests(1).await;
        l.expect_log(hint).await;
        assert!(l.log().contains(&code.to_string()), "HTTP {code}:\n{}", l.log());
    }
    // The duration is what is tested: no second request within 3 s of each first one (the
    // short backoff would have tried again after about a second; the long one waits 30 s).
    let quiet_until = runs.iter().map(|(_, _, l)| l.server.requests()[0].at).max().unwrap() + Duration::from_secs(3);
    tokio::time::sleep(quiet_until.saturating_duration_since(Instant::now())).await;
    for (code, _, l) in &mut runs {
        assert_eq!(l.requests(), 1, "HTTP {code} waits the long backoff");
        assert!(l.is_running(), "HTTP {code} must not stop the listener");
    }
}

#[tokio::test]
async fn without_a_token_no_authorization_header_is_sent() {
    let unset = Running::start(vec![], None, &[]).await;
    let blank = Running::start(vec![], None, &[("UNKEY_API_KEY", "  ".into())]).await;
    for l in [&unset, &blank] {
        l.expect_requests(1).await;
        let headers = &l.server.requests()[0].headers;
        assert!(headers.get("authorization").is_none(), "{headers:?}");
        assert_eq!(headers.get("accept").unwrap(), "text/event-stream");
        assert_eq!(headers.get("cache-control").unwrap(), "no-store");
    }
}

#[tokio::test]
async fn autoplay_app_unkey_token_is_the_fallback_for_an_empty_unkey_api_key() {
    let fallback = Running::start(
        vec![],
        None,
        &[("UNKEY_API_KEY", String::new()), ("AUTOPLAY_APP_UNKEY_TOKEN", "uk_fallback".into())],
    )
    .await;
    let both = Running::start(
        vec![],
        None,
        &[("UNKEY_API_KEY", "uk_primary".into()), ("AUTOPLAY_APP_UNKEY_TOKEN", "uk_fallback".into())],
    )
    .await;
    fallback.expect_requests(1).await;
    both.expect_requests(1).await;
    assert_eq!(fallback.server.requests()[0].headers.get("authorization").unwrap(), "Bearer uk_fallback");
    assert_eq!(both.server.requests()[0].headers.get("authorization").unwrap(), "Bearer uk_primary");
    assert!(!fallback.log().contains("uk_fallback"));
    assert!(!both.log().contains("uk_primary"));
}

#[tokio::test]
async fn a_silent_connection_is_dropped_after_the_idle_timeout_and_reopened() {
    let l = Running::start(vec![], None, &[("STREAM_IDLE_TIMEOUT_SECS", "2".into())]).await;
    l.expect_requests(2).await;
    let seen = l.server.requests();
    let gap = seen[1].at - seen[0].at;
    // 2 s of silence, then the 1 s reconnect delay.
    assert!(gap >= Duration::from_millis(2900), "reconnected after {gap:?}");
}

#[tokio::test]
async fn heartbeats_keep_an_otherwise_silent_connection_open() {
    let l = Running::start(vec![], None, &[("STREAM_IDLE_TIMEOUT_SECS", "2".into())]).await;
    l.expect_requests(1).await;
    // The pace is what is tested: a heartbeat every 500 ms, for more than twice the 2 s idle
    // timeout.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(4500) {
        l.server.push(HEARTBEAT).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(l.requests(), 1, "heartbeats count as traffic; stderr:\n{}", l.log());
    // Once they stop, the watchdog fires.
    l.expect_requests(2).await;
}

// ---------------------------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------------------------

async fn exits_cleanly_on(signal: &str, fallback: Option<Plan>) {
    let mut l = Running::start_binary(vec![], fallback, &[]).await;
    l.expect_requests(1).await;
    l.proc().signal(signal);
    let status = l.proc_mut().wait_exit(Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "SIGTERM/SIGINT: {status:?}; stderr:\n{}", l.proc().stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_connected_exits_zero_promptly() {
    exits_cleanly_on("TERM", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_while_connected_exits_zero_promptly() {
    exits_cleanly_on("INT", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_the_long_reconnect_delay_exits_zero_promptly() {
    exits_cleanly_on("TERM", Some(Plan::Status(401))).await;
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// Runs the listener to its exit with exactly `env`; returns the status and stderr.
async fn run_to_exit(env: &[(&'static str, String)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut proc = Proc::spawn(bin!("listener"), dir.path(), env, &[]);
    let status = proc.wait_exit(Duration::from_secs(10)).expect("the listener exits on a configuration error");
    (status.code(), proc.stderr())
}

fn assert_one_line_naming(stderr: &str, var: &str) {
    assert_eq!(stderr.lines().count(), 1, "exactly one line:\n{stderr}");
    assert!(stderr.contains(var), "names {var}:\n{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "{stderr}");
}

#[tokio::test]
async fn missing_stream_url_is_one_line_and_exit_status_two() {
    let (code, stderr) = run_to_exit(&[("SUMMARY_THRESHOLD", "0".into())]).await;
    assert_eq!(code, Some(2), "stderr:\n{stderr}");
    assert_one_line_naming(&stderr, "STREAM_URL");
}

#[tokio::test]
async fn missing_openai_key_with_summaries_on_is_one_line_and_exit_status_two() {
    let (code, stderr) = run_to_exit(&[("STREAM_URL", "http://127.0.0.1:9/stream/prod_abc".into())]).await;
    assert_eq!(code, Some(2), "stderr:\n{stderr}");
    assert_one_line_naming(&stderr, "OPENAI_API_KEY");
}

#[tokio::test]
async fn a_non_numeric_summary_threshold_is_one_line_naming_the_variable() {
    let env = [("STREAM_URL", "http://127.0.0.1:9/stream/prod_abc".into()), ("SUMMARY_THRESHOLD", "abc".into())];
    let (code, stderr) = run_to_exit(&env).await;
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}; stderr:\n{stderr}");
    assert_one_line_naming(&stderr, "SUMMARY_THRESHOLD");
}

#[test]
fn help_lists_every_setting_and_its_default() {
    let out = Command::new(bin!("listener"))
        .arg("--help")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    for var in [
        "STREAM_URL",
        "UNKEY_API_KEY",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_MODEL",
        "EVENT_DATA_PATH",
        "SUMMARY_THRESHOLD",
        "SESSION_RESET_SECS",
    ] {
        assert!(help.contains(var), "--help does not mention {var}:\n{help}");
    }
    for default in ["event_data.txt", "[default: 5]", "[default: 120]", "gpt-4o-mini", "https://api.openai.com/v1"] {
        assert!(help.contains(default), "--help does not show the default {default}:\n{help}");
    }
}

#[tokio::test]
async fn dot_env_in_the_working_directory_is_read() {
    let server = SseServer::start(vec![hold(&[ACTIONS_FULL.as_bytes()])], None).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), format!("STREAM_URL={}\nSUMMARY_THRESHOLD=0\n", server.url)).unwrap();
    let proc = Proc::spawn(bin!("listener"), dir.path(), &[], &[]);
    expect_file_at(&dir.path().join("event_data.txt"), EXPECTED, || proc.stderr()).await;
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn the_environment_wins_over_dot_env() {
    let from_dot_env = SseServer::start(vec![], None).await;
    let from_env = SseServer::start(vec![hold(&[ACTIONS_FULL.as_bytes()])], None).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), format!("STREAM_URL={}\nSUMMARY_THRESHOLD=0\n", from_dot_env.url)).unwrap();
    let mut proc = Proc::spawn(bin!("listener"), dir.path(), &[("STREAM_URL", from_env.url.clone())], &[]);
    expect_file_at(&dir.path().join("event_data.txt"), EXPECTED, || proc.stderr()).await;
    // Stopped, it connects nowhere any more.
    proc.signal("TERM");
    let status = proc.exited(LIMIT).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "SIGTERM: {status:?}; stderr:\n{}", proc.stderr());
    assert_eq!(from_env.requests().len(), 1);
    assert_eq!(from_dot_env.requests().len(), 0, "the .env STREAM_URL must lose to the environment");
}

// ---------------------------------------------------------------------------------------------
// Where the file is, and when it starts afresh
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn event_data_path_chooses_the_activity_file() {
    let server = SseServer::start(vec![hold(&[ACTIONS_FULL.as_bytes()])], None).await;
    let dir = tempfile::tempdir().unwrap();
    let custom = dir.path().join("custom-activity.log");
    let l = Running::start_in(false, server, dir, &[("EVENT_DATA_PATH", custom.display().to_string())]).await;
    expect_file_at(&custom, EXPECTED, || l.log()).await;
    assert!(!l.file.exists(), "nothing at the default path when EVENT_DATA_PATH is set");
    assert!(l.dir.path().exists());
}

/// Starts a listener whose activity file already holds `old`, last modified `age` ago.
async fn with_existing_file(old: &str, age: Duration, env: &[(&'static str, String)]) -> Running {
    let server = SseServer::start(vec![hold(&[ACTIONS_FULL.as_bytes()])], None).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("event_data.txt");
    std::fs::write(&file, old).unwrap();
    set_mtime(&file, age);
    Running::start_in(false, server, dir, env).await
}

#[tokio::test]
async fn a_file_idle_for_longer_than_two_minutes_starts_afresh() {
    let l = with_existing_file("[0] Action: stale\n", Duration::from_secs(200), &[]).await;
    l.expect_file(EXPECTED).await;
}

#[tokio::test]
async fn a_recently_written_file_is_appended_to() {
    let l = with_existing_file("[0] Action: recent\n", Duration::ZERO, &[]).await;
    l.expect_file(&format!("[0] Action: recent\n{EXPECTED}")).await;
}

#[tokio::test]
async fn session_reset_secs_sets_the_idle_window() {
    let longer = with_existing_file("kept\n", Duration::from_secs(200), &[("SESSION_RESET_SECS", "300".into())]).await;
    let shorter =
        with_existing_file("dropped\n", Duration::from_secs(60), &[("SESSION_RESET_SECS", "30".into())]).await;
    longer.expect_file(&format!("kept\n{EXPECTED}")).await;
    shorter.expect_file(EXPECTED).await;
}
