//! Proactive triggers in the listener (in-process through its builder, its log read as the
//! binary's stderr): firings land in `DATA_DIR/proactive.firings`.

use bytes::Bytes;
use serde_json::{Value, json};
use standins::apps::{self, Runner};
use standins::sse_server::{Plan, SseServer};
use standins::{eventually, read};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Long enough for a loaded two-core machine; polls return as soon as the condition holds.
const LIMIT: Duration = Duration::from_secs(15);
const T0: f64 = 1_700_000_000.0;
const A: &str = "https://app.example.com/a";
const B: &str = "https://app.example.com/b";

/// One `actions` frame of one action (`session`: `None` for an anonymous batch).
fn frame(session: Option<&str>, url: &str, t: f64) -> String {
    let mut batch = json!({
        "type": "actions",
        "product_id": "prod_abc",
        "user_id": "distinct_1",
        "count": 1,
        "actions": [{
            "type": "pageview",
            "title": format!("Page {url}"),
            "description": "User landed on a page",
            "canonical_url": url,
            "timestamp_start": t,
            "timestamp_end": t + 0.5,
        }],
    });
    if let Some(session) = session {
        batch["session_id"] = json!(session);
    }
    format!("data: {batch}\n\n")
}

/// A → B → A → B, a second apart.
fn ping_pong(session: Option<&str>) -> String {
    [A, B, A, B].iter().enumerate().map(|(i, url)| frame(session, url, T0 + i as f64)).collect()
}

struct Listener {
    app: Runner,
    _server: SseServer,
    dir: tempfile::TempDir,
}

impl Listener {
    /// A listener in its own directory, reading `chunks` (then an idle stream), with `env`.
    async fn start(chunks: Vec<String>, env: &[(&'static str, &str)]) -> Listener {
        let server =
            SseServer::start(vec![Plan::StreamThenHold(chunks.into_iter().map(Bytes::from).collect())], None).await;
        let dir = tempfile::tempdir().unwrap();
        let mut all = vec![
            ("STREAM_URL", server.url.clone()),
            ("SUMMARY_THRESHOLD", "0".to_owned()),
            ("DATA_DIR", dir.path().join("data").display().to_string()),
            // These tests read the firings file: the file store even when the suite runs on
            // Redis (tests/proactive.rs and tests/redis.rs cover firings through Redis).
            ("REDIS_URL", String::new()),
        ];
        all.extend(env.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let app =
            Runner::InProcess(apps::listener(&apps::in_dir(dir.path(), &all)).await.unwrap_or_else(|e| panic!("{e}")));
        Listener { app, _server: server, dir }
    }

    fn log(&self) -> String {
        self.app.log()
    }

    fn firings_path(&self) -> PathBuf {
        self.dir.path().join("data").join("proactive.firings")
    }

    fn firings(&self) -> Vec<Value> {
        read(&self.firings_path()).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
    }

    /// Waits until `n` firings are recorded.
    async fn expect_firings(&self, n: usize) -> Vec<Value> {
        let seen = eventually(LIMIT, || self.firings().len() >= n).await;
        assert!(seen, "expected {n} firing(s), got {:?}\nstderr:\n{}", self.firings(), self.log());
        self.firings()
    }

    /// Waits until the store holds `n` sessions (its writer is past their batches).
    async fn expect_sessions(&self, n: usize) {
        let dir = self.dir.path().join("data").join("sessions");
        let count = || std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
        let seen = eventually(LIMIT, || count() >= n).await;
        assert!(seen, "expected {n} stored session(s)\nstderr:\n{}", self.log());
    }
}

fn line_count(path: &Path) -> usize {
    read(path).lines().count()
}

#[tokio::test]
async fn a_session_going_back_and_forth_fires_ping_pong_once() {
    // The same session goes on to a third page and back: one more cycle is not two.
    let mut chunks = vec![ping_pong(Some("ps_pp"))];
    chunks.push(frame(Some("ps_pp"), "https://app.example.com/c", T0 + 4.0));
    chunks.push(frame(Some("ps_pp"), B, T0 + 5.0));
    // A later session's firing: once it is recorded, everything before it is too.
    chunks.push(ping_pong(Some("ps_later")));
    let l = Listener::start(chunks, &[("PROACTIVE_TRIGGERS", "ping_pong")]).await;
    let firings = l.expect_firings(2).await;
    assert_eq!(firings.len(), 2, "{firings:?}");
    let f = &firings[0];
    assert_eq!(f["trigger"], "ping_pong");
    assert_eq!(f["session_id"], "ps_pp");
    assert_eq!(f["user_id"], "distinct_1");
    assert_eq!(f["id"], format!("ps_pp:ping_pong:{}", ((T0 + 3.0) * 1000.0) as i64));
    assert_eq!(f["page"], B);
    assert_eq!(f["detail"], format!("went back and forth between {A} and {B} 2 times in 3 s"));
    assert_eq!(f["at"], T0 + 3.0);
    assert!(f["recorded_at"].as_f64().unwrap() > T0);
    assert_eq!(firings[1]["session_id"], "ps_later");
    let stderr = l.log();
    assert!(stderr.contains("proactive trigger fired") && stderr.contains("ps_pp:ping_pong"), "{stderr}");
}

#[tokio::test]
async fn anonymous_sessions_never_fire() {
    let chunks = vec![ping_pong(None), ping_pong(Some("unknown")), ping_pong(Some("  ")), ping_pong(Some("ps_real"))];
    let l = Listener::start(chunks, &[("PROACTIVE_TRIGGERS", "ping_pong,dwell,repeat")]).await;
    let firings = l.expect_firings(1).await;
    assert_eq!(firings.len(), 1, "{firings:?}");
    assert_eq!(firings[0]["session_id"], "ps_real");
}

#[tokio::test]
async fn with_triggers_off_nothing_is_recorded() {
    let chunks = vec![ping_pong(Some("ps_pp"))];
    let on = Listener::start(chunks.clone(), &[("PROACTIVE_TRIGGERS", "ping_pong")]).await;
    let off = Listener::start(chunks, &[]).await;
    // The same stream fires in a listener with the trigger on ...
    on.expect_firings(1).await;
    // ... and not in one without, once its store writer is past the batches.
    off.expect_sessions(1).await;
    assert!(!off.firings_path().exists(), "{:?}", read(&off.firings_path()));
    assert_eq!(line_count(&on.firings_path()), 1);
}

#[tokio::test]
async fn a_page_left_alone_fires_dwell_by_the_clock() {
    // One action, then nothing: only the listener's clock can see the visitor stay.
    let chunks = vec![frame(Some("ps_dwell"), A, T0)];
    let l = Listener::start(chunks, &[("PROACTIVE_TRIGGERS", "dwell"), ("PROACTIVE_DWELL_SECS", "1")]).await;
    let firings = l.expect_firings(1).await;
    let f = &firings[0];
    assert_eq!(f["trigger"], "dwell");
    assert_eq!(f["session_id"], "ps_dwell");
    assert_eq!(f["id"], format!("ps_dwell:dwell:{}", (T0 * 1000.0) as i64));
    assert_eq!(f["page"], A);
    assert!(f["detail"].as_str().unwrap().starts_with(&format!("stayed on {A} for ")), "{f}");
    assert!(f["at"].as_f64().unwrap() >= T0 + 1.0);
}
