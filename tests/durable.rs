//! Accepted means answered: a visitor message that got its `200` is answered exactly once,
//! whatever happens to the webhook process after that: `kill -9` with replies in flight, a
//! SIGTERM past the grace period, a full queue. The real binary, restarted in the same working
//! directory (the same `DATA_DIR`, or the same Redis when `TEST_REDIS_URL` is set).

use standins::bin;
use standins::stand_ins::{
    Env, LLM_PATH, Webhook, completion, http, message_path, requests_to, set, visitor_message, visitor_stand_in,
    wait_for, webhook_env,
};
use std::path::Path;
use std::time::{Duration, Instant};
use wiremock::MockServer;

const SITE: &str = "42286ab3-b29a-4fde-8538-da0ae501d825";
const SECRET: &str = "hook-secret-durable";
/// Generous limit for something that must happen (a resumed conversation waits for the
/// replica lease, 2 s here, and the resume sweep, every 5 s).
const LIMIT: Duration = Duration::from_secs(40);

fn session(n: usize) -> String {
    format!("session_durable_{n}")
}

/// A stand-in whose LLM answers after `delay`.
async fn stand_in(delay: Duration) -> MockServer {
    visitor_stand_in(SITE, completion("Here is how.").set_delay(delay), &[]).await
}

fn env_for(server: &MockServer, extra: &[(&'static str, &str)]) -> Env {
    let mut env = webhook_env(server, SITE, SECRET);
    // On Redis, a restarted process listens on another port, so it is another replica: it
    // resumes the dead one's conversations once their hold expires.
    set(&mut env, "HOLD_LEASE_SECS", "2");
    for (name, value) in extra {
        set(&mut env, name, *value);
    }
    env
}

async fn start(cwd: &Path, env: Env) -> Webhook {
    Webhook::start(bin!("webhook"), cwd, env, LIMIT).await
}

/// Crisp message posts into each of `sessions`.
async fn posts_per_session(server: &MockServer, sessions: &[String]) -> Vec<usize> {
    let mut counts = Vec::new();
    for s in sessions {
        counts.push(requests_to(server, "POST", &message_path(SITE, s)).await.len());
    }
    counts
}

/// Waits until every session got a post.
async fn wait_each_answered(server: &MockServer, sessions: &[String], log: impl Fn() -> String) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let counts = posts_per_session(server, sessions).await;
        if counts.iter().all(|c| *c >= 1) {
            break;
        }
        assert!(Instant::now() < deadline, "not all answered: {counts:?}\n{}", log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn kill_9_with_replies_in_flight_then_restart_answers_every_accepted_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let slow = stand_in(Duration::from_secs(30)).await;
    let sessions: Vec<String> = (0..10).map(session).collect();
    let first = start(dir.path(), env_for(&slow, &[])).await;
    for (n, s) in sessions.iter().enumerate() {
        first.deliver_ok(&visitor_message(SITE, s, 1000 + n as u64, "How do I export?")).await;
    }
    // Every reply is waiting on the LLM: none reached Crisp.
    assert_eq!(wait_for(&slow, "POST", LLM_PATH, 10, LIMIT).await.len(), 10, "{}", first.stderr());
    first.proc().signal("KILL");
    drop(first);
    assert_eq!(posts_per_session(&slow, &sessions).await, vec![0; 10]);

    let fast = stand_in(Duration::ZERO).await;
    let mut second = start(dir.path(), env_for(&fast, &[])).await;
    wait_each_answered(&fast, &sessions, || second.stderr()).await;
    // Crisp delivering them again (after a restart it might) changes nothing.
    for (n, s) in sessions.iter().enumerate() {
        second.deliver_ok(&visitor_message(SITE, s, 1000 + n as u64, "How do I export?")).await;
    }
    // Stopped (SIGTERM: every accepted message dealt with first), it posts nothing more.
    second.stop().await;
    assert_eq!(posts_per_session(&fast, &sessions).await, vec![1; 10], "{}", second.stderr());
}

#[tokio::test]
async fn sigterm_past_the_grace_period_leaves_the_rest_recorded_for_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let slow = stand_in(Duration::from_secs(30)).await;
    let sessions: Vec<String> = (0..20).map(session).collect();
    let env = env_for(&slow, &[("SHUTDOWN_GRACE_SECS", "1"), ("MAX_CONCURRENT_REPLIES", "4"), ("LOG_FORMAT", "json")]);
    let mut first = start(dir.path(), env).await;
    for (n, s) in sessions.iter().enumerate() {
        first.deliver_ok(&visitor_message(SITE, s, 2000 + n as u64, "Where is billing?")).await;
    }
    first.proc().signal("TERM");
    let status = first.exited(LIMIT).await.expect("exits after the grace period");
    assert!(status.success(), "exit status {status:?}\n{}", first.stderr());
    let log = first.stderr();
    assert!(log.contains(r#""left":20"#), "the log says how many were left:\n{log}");

    let fast = stand_in(Duration::ZERO).await;
    let mut second = start(dir.path(), env_for(&fast, &[])).await;
    wait_each_answered(&fast, &sessions, || second.stderr()).await;
    second.stop().await;
    assert_eq!(posts_per_session(&fast, &sessions).await, vec![1; 20], "answered once each:\n{}", second.stderr());
}

#[tokio::test]
async fn a_full_conversation_queue_answers_503_and_loses_nothing_it_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let server = stand_in(Duration::from_secs(2)).await;
    let webhook = start(dir.path(), env_for(&server, &[])).await;
    let s = session(0);
    let mut accepted = 0;
    let mut refused = 0;
    for n in 0..150u64 {
        let body = visitor_message(SITE, &s, 3000 + n, &format!("message {n}")).to_string();
        match webhook.hook_with_key(SECRET, &body).await.status().as_u16() {
            200 => accepted += 1,
            503 => refused += 1,
            other => panic!("status {other}"),
        }
    }
    assert!(refused > 0 && accepted >= 100, "{accepted} accepted, {refused} refused");
    // Every accepted message is settled as answered (in bursts), none dropped.
    let metrics = webhook.metrics_url();
    let answered = |body: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix("messages_settled_total{outcome=\"answered\"} "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let deadline = Instant::now() + LIMIT;
    loop {
        let body = http().get(&metrics).send().await.unwrap().text().await.unwrap();
        if answered(&body) as usize == accepted {
            break;
        }
        assert!(Instant::now() < deadline, "{accepted} accepted, metrics:\n{body}\n{}", webhook.stderr());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(webhook.stderr().contains("too many messages waiting"));
    assert!(!requests_to(&server, "POST", LLM_PATH).await.is_empty());
}
