//! The apps as an attacker and a careless network would meet them: stalled connections under a
//! low open-file limit (the binary, its `ulimit -n`), floods of refused hooks, ids that would
//! bend a REST path, oversized visitor text, `--help` with credentials in the environment, and
//! what `/metrics` shows from the first scrape.

use futures_util::StreamExt;
use serde_json::json;
use standins::stand_ins::{
    Env, LLM_PATH, Webhook, completion, http, requests_to, set, visitor_message, visitor_stand_in, wait_for,
    webhook_env,
};
use standins::{ClosedPort, bin, raise_open_file_limit};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::MockServer;

const WEBSITE: &str = "42286ab3-b29a-4fde-8538-da0ae501d825";
const SESSION: &str = "session_36ba3566-9651-4790-afc8-ffedbccc317f";
const SECRET: &str = "hook-secret-hardening";
/// Generous limit for something that must happen.
const LIMIT: Duration = Duration::from_secs(30);

async fn stand_in() -> MockServer {
    visitor_stand_in(WEBSITE, completion("An answer."), &[]).await
}

fn env_for(server: &MockServer) -> Env {
    webhook_env(server, WEBSITE, SECRET)
}

/// Runs `futures` with at most `concurrency` at once; returns their outputs in order.
async fn concurrently<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
    concurrency: usize,
) -> Vec<F::Output> {
    futures_util::stream::iter(futures).buffered(concurrency).collect().await
}

#[tokio::test]
async fn stalled_connections_under_a_low_open_file_limit_never_starve_health_or_hooks() {
    const STALLED: usize = 1_100;
    assert!(raise_open_file_limit() > STALLED as u64 + 200, "this test needs more open files than it has");
    let server = stand_in().await;
    // `ulimit -n 1024` and every connection limit at its default.
    let webhook = Webhook::start_limited(
        bin!("webhook"),
        tempfile::tempdir().unwrap().path(),
        env_for(&server),
        LIMIT,
        Some(1024),
    )
    .await;
    let addr = webhook.url.trim_start_matches("http://").to_owned();

    let opened = Instant::now();
    let mut stalled = Vec::with_capacity(STALLED);
    for i in 0..STALLED {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
        // Half a request line, unfinished headers, or nothing at all.
        let sent: &[u8] = match i % 3 {
            0 => b"GET /heal",
            1 => b"POST /crisp/hooks HTTP/1.1\r\nHost: x\r\n",
            _ => b"",
        };
        stream.write_all(sent).await.expect("write");
        stalled.push(stream);
    }

    let started = Instant::now();
    let health = http().get(format!("{}/health", webhook.url)).send().await.expect("/health answered");
    let health_took = started.elapsed();
    assert_eq!(health.status(), 200);
    let started = Instant::now();
    webhook.deliver(&visitor_message(WEBSITE, SESSION, 1, "Still there?")).await;
    let hook_took = started.elapsed();
    assert!(health_took < Duration::from_secs(1), "/health took {health_took:?}");
    assert!(hook_took < Duration::from_secs(1), "the hook took {hook_took:?}");
    wait_for(&server, "POST", &standins::stand_ins::message_path(WEBSITE, SESSION), 1, LIMIT).await;

    // Every stalled connection is closed by the server: shed for newcomers or timed out.
    let closes = concurrently(
        stalled.into_iter().map(|mut stream| async move {
            let mut buf = [0u8; 256];
            loop {
                match tokio::time::timeout(LIMIT, stream.read(&mut buf)).await {
                    Ok(Ok(0) | Err(_)) => return Some(opened.elapsed()),
                    Ok(Ok(_)) => continue,
                    Err(_) => return None,
                }
            }
        }),
        STALLED,
    )
    .await;
    let open = closes.iter().filter(|c| c.is_none()).count();
    let last_closed = closes.iter().flatten().max().copied().unwrap_or_default();
    assert_eq!(open, 0, "stalled connections still open");
    let log = webhook.stderr();
    assert!(!log.contains("Too many open files"), "{log}");
    eprintln!(
        "{STALLED} stalled connections, ulimit -n 1024: /health in {health_took:?}, hook in {hook_took:?}, \
         all stalled connections closed {last_closed:?} after opening"
    );
}

#[tokio::test]
async fn help_never_shows_credentials_from_the_environment() {
    let secrets = ["pa55word", "t0ken-in-query", "r3dis-pass", "sk-live-key", "crisp-pass"];
    let env = [
        ("STREAM_URL", "https://user:pa55word@stream.example.com/stream/p?token=t0ken-in-query"),
        ("OPENAI_BASE_URL", "https://user:pa55word@llm.example.com/v1?key=t0ken-in-query"),
        ("OPENAI_API_KEY", "sk-live-key"),
        ("CRISP_API_BASE_URL", "https://user:crisp-pass@api.crisp.example/v1?token=t0ken-in-query"),
        ("REDIS_URL", "redis://:r3dis-pass@redis.example:6379/0"),
    ];
    for (binary, exe) in [("listener", bin!("listener")), ("webhook", bin!("webhook"))] {
        let output = Command::new(exe).arg("--help").env_clear().envs(env).output().expect("--help");
        assert!(output.status.success());
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(help.contains("STREAM_URL") || help.contains("CRISP_API_BASE_URL"), "{help}");
        for secret in secrets {
            assert!(!help.contains(secret), "{binary} --help shows {secret:?}:\n{help}");
        }
    }
}

#[tokio::test]
async fn ids_that_would_bend_a_rest_path_get_400_and_reach_no_url() {
    let server = stand_in().await;
    let webhook = Webhook::in_process_in_tempdir(env_for(&server)).await;
    let long = "s".repeat(257);
    for (i, bad) in
        ["", ".", "..", "../x", "a/b", "a\\b", "a?b", "a#b", "a b", "a\nb", long.as_str()].iter().enumerate()
    {
        let session = visitor_message(WEBSITE, bad, i as u64, "hello").to_string();
        assert_eq!(webhook.post_raw(&session, &[]).await, 400, "session_id {bad:?}");
        let mut website = visitor_message(WEBSITE, SESSION, 100 + i as u64, "hello");
        website["data"]["website_id"] = json!(bad);
        assert_eq!(webhook.post_raw(&website.to_string(), &[]).await, 400, "website_id {bad:?}");
    }
    // A good one still goes through, and is the only conversation Crisp hears of.
    webhook.deliver(&visitor_message(WEBSITE, SESSION, 999, "hello")).await;
    wait_for(&server, "POST", &standins::stand_ins::message_path(WEBSITE, SESSION), 1, LIMIT).await;
    let paths: Vec<String> = server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| r.url.path().to_owned())
        .filter(|p| p != LLM_PATH)
        .collect();
    let conversation = format!("/v1/website/{WEBSITE}/conversation/{SESSION}/");
    assert!(paths.iter().all(|p| p.starts_with(&conversation)), "{paths:#?}");
}

#[tokio::test]
async fn refused_hooks_are_counted_and_their_log_lines_rate_limited() {
    let server = stand_in().await;
    let webhook = Webhook::in_process_in_tempdir(env_for(&server)).await;
    let body = visitor_message(WEBSITE, SESSION, 1, "hello").to_string();
    let statuses = concurrently(
        (0..2_000).map(|_| async { webhook.hook_with_key("wrong-key", &body).await.status().as_u16() }),
        32,
    )
    .await;
    assert!(statuses.iter().all(|s| *s == 401));
    let metrics = http().get(webhook.metrics_url()).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("hooks_received_total{outcome=\"unauthorized\"} 2000"), "{metrics}");
    let lines = webhook.stderr().lines().filter(|l| l.contains("hook refused")).count();
    assert!((1..=5).contains(&lines), "{lines} log lines for 2,000 refused hooks");
}

/// Every series the README documents for the webhook.
const WEBHOOK_SERIES: [&str; 7] = [
    "hooks_received_total{outcome=\"visitor_message\"} 0",
    "hooks_received_total{outcome=\"unauthorized\"} 0",
    "replies_sent_total 0",
    "replies_failed_total 0",
    "fallback_replies_total 0",
    "llm_request_duration_seconds",
    "crisp_request_duration_seconds",
];

/// In-process (each app has its own registry): the webhook's first scrape, on its public port
/// and on `METRICS_ADDR`.
#[tokio::test]
async fn metrics_list_every_series_from_the_first_scrape_and_can_leave_the_public_port() {
    let server = stand_in().await;
    let webhook = Webhook::in_process_in_tempdir(env_for(&server)).await;
    let first = http().get(webhook.metrics_url()).send().await.unwrap().text().await.unwrap();
    for series in WEBHOOK_SERIES.iter().chain(&["http_connections_closed_total{reason=\"header_timeout\"} 0"]) {
        assert!(first.contains(series), "{series} missing from the first scrape:\n{first}");
    }

    let mut env = env_for(&server);
    set(&mut env, "METRICS_ADDR", "127.0.0.1:0");
    let webhook = Webhook::in_process_in_tempdir(env).await;
    let public = http().get(webhook.metrics_url()).send().await.unwrap();
    assert_eq!(public.status(), 404, "metrics left the public port");
    let metrics_addr = webhook.metrics_addr().expect("METRICS_ADDR bound");
    let own = http().get(format!("http://{metrics_addr}/metrics")).send().await.unwrap();
    let own = own.text().await.unwrap();
    assert!(own.contains("replies_sent_total 0"), "{own}");
}

/// In-process, through the listener's own `METRICS_ADDR` server.
#[tokio::test]
async fn the_listener_lists_its_series_before_any_event() {
    let dir = tempfile::tempdir().unwrap();
    let nothing = ClosedPort::new();
    let env = [
        // Nothing listens there: the stream never connects, yet every series is listed.
        ("STREAM_URL", format!("http://{}/stream/p", nothing.addr())),
        ("SUMMARY_THRESHOLD", "0".to_owned()),
        ("METRICS_ADDR", "127.0.0.1:0".to_owned()),
    ];
    let listener = standins::apps::listener(&standins::apps::in_dir(dir.path(), &env)).await.unwrap();
    let addr = listener.metrics_addr.expect("METRICS_ADDR bound");
    let scrape = http().get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    // As the exporter's listener answered: `/health` is `OK`.
    let health = http().get(format!("http://{addr}/health")).send().await.unwrap().text().await.unwrap();
    assert_eq!(health, "OK");
    for series in
        ["actions_ingested_total 0", "frames_skipped_total 0", "summaries_written_total 0", "stream_connected 0"]
    {
        assert!(scrape.contains(series), "{series} missing:\n{scrape}");
    }
}

/// The largest chat request the stand-in received, in bytes.
async fn largest_llm_request(server: &MockServer) -> usize {
    requests_to(server, "POST", LLM_PATH).await.iter().map(|r| r.body.len()).max().unwrap_or(0)
}

#[tokio::test]
async fn one_huge_message_gives_a_bounded_llm_request() {
    let server = stand_in().await;
    let webhook = Webhook::in_process_in_tempdir(env_for(&server)).await;
    let huge = format!("{}THE END", "x".repeat(1_000_000));
    webhook.deliver(&visitor_message(WEBSITE, SESSION, 1, &huge)).await;
    wait_for(&server, "POST", LLM_PATH, 1, LIMIT).await;
    let largest = largest_llm_request(&server).await;
    let prompt = standins::stand_ins::last_user_message(&requests_to(&server, "POST", LLM_PATH).await[0]);
    assert!(prompt.ends_with("THE END"), "the newest words are kept");
    assert!(prompt.contains("earlier text cut"), "the cut is marked");
    assert!(largest < 24 * 1024, "a 1 MB message gave a {largest}-byte LLM request");
    eprintln!("1 MB visitor message: LLM request of {largest} bytes");
}

#[tokio::test]
async fn twenty_thousand_messages_in_one_conversation_give_bounded_llm_requests() {
    const MESSAGES: u64 = 20_000;
    // A slow LLM, so the messages pile up behind the reply being written.
    let server = visitor_stand_in(WEBSITE, completion("An answer.").set_delay(Duration::from_secs(2)), &[]).await;
    let webhook = Webhook::in_process_in_tempdir(env_for(&server)).await;
    let statuses = concurrently(
        (0..MESSAGES).map(|i| {
            let body = visitor_message(WEBSITE, SESSION, i + 1, &format!("message number {i} {}", "y".repeat(200)));
            let webhook = &webhook;
            async move { webhook.hook_with_key(SECRET, &body.to_string()).await.status().as_u16() }
        }),
        32,
    )
    .await;
    // Beyond what one conversation may have waiting, Crisp is asked to retry (503) before any
    // 200: nothing is dropped after it was accepted.
    assert!(statuses.iter().all(|s| *s == 200 || *s == 503), "{:?}", statuses.iter().find(|s| **s != 200));
    let accepted = statuses.iter().filter(|s| **s == 200).count();
    // One more, sent after all of them: it is the newest, and it is answered.
    let newest = "and the final question";
    // Retried as Crisp retries a 503, until the queue has room again.
    let last = visitor_message(WEBSITE, SESSION, MESSAGES + 1, newest).to_string();
    let deadline = Instant::now() + LIMIT * 2;
    while webhook.hook_with_key(SECRET, &last).await.status() != 200 {
        assert!(Instant::now() < deadline, "the queue never had room again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + LIMIT * 2;
    loop {
        let calls = requests_to(&server, "POST", LLM_PATH).await;
        if calls.iter().any(|c| standins::stand_ins::last_user_message(c).ends_with(newest)) {
            break;
        }
        assert!(Instant::now() < deadline, "the newest message was never answered:\n{}", webhook.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let largest = largest_llm_request(&server).await;
    let calls = requests_to(&server, "POST", LLM_PATH).await.len();
    assert!(largest < 24 * 1024, "the largest LLM request was {largest} bytes");
    eprintln!(
        "{MESSAGES} messages in one conversation: {accepted} accepted, the rest 503; {calls} LLM requests, the largest {largest} bytes"
    );
}

/// `systemctl reload` sends SIGHUP: it reloads the help center, and without one it must not end
/// the webhook (SIGHUP's default action would).
#[tokio::test]
async fn sighup_without_a_help_center_leaves_the_webhook_running() {
    let server = stand_in().await;
    let mut webhook = Webhook::start_in_tempdir(bin!("webhook"), env_for(&server), LIMIT).await;
    webhook.proc().signal("HUP");
    let logged = standins::eventually(LIMIT, || webhook.stderr().contains("nothing to reload")).await;
    assert!(logged, "{}", webhook.stderr());
    assert!(webhook.proc_mut().is_running(), "{}", webhook.stderr());
    let health = reqwest::get(format!("{}/health", webhook.metrics_url().trim_end_matches("/metrics"))).await.unwrap();
    assert_eq!(health.status(), 200);
}
