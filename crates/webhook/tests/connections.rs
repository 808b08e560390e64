//! The server loop against raw TCP clients: every phase of a connection has a time limit, and
//! stalled connections never crowd out real requests. Runs in-process on port 0 with short
//! limits; the bounds checked are generous multiples of them.

use axum::Router;
use axum::routing::{get, post};
use plumbing::telemetry::Metrics;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use webhook::server::{ConnectionLimits, serve};

const HEADER: Duration = Duration::from_secs(1);
const IDLE: Duration = Duration::from_secs(4);
const REQUEST: Duration = Duration::from_secs(2);
/// Generous limit for something that must happen.
const LIMIT: Duration = Duration::from_secs(10);

fn app() -> Router {
    Router::new().route("/health", get(|| async { "ok" })).route("/echo", post(|body: String| async move { body }))
}

/// Starts the server; returns its address. It stops when the test's runtime ends.
async fn start(max_connections: usize) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits =
        ConnectionLimits { header_read_timeout: HEADER, idle_timeout: IDLE, request_timeout: REQUEST, max_connections };
    tokio::spawn(serve(listener, app(), limits, Metrics::default(), std::future::pending()));
    addr
}

/// Reads until the server closes the connection (or `LIMIT`); returns what it sent and when it
/// closed, `None` if it never did.
async fn read_until_closed(stream: &mut TcpStream) -> Option<(String, Instant)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + LIMIT;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some((String::from_utf8_lossy(&got).into_owned(), Instant::now())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

/// Sends one request and reads one response (the server answers with Content-Length).
async fn request(stream: &mut TcpStream, raw: &str) -> String {
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !response_complete(&got) {
        let n = tokio::time::timeout(LIMIT, stream.read(&mut buf)).await.expect("response in time").unwrap();
        assert!(n > 0, "closed before answering: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn response_complete(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    let length = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse::<usize>()))
        .and_then(Result::ok)
        .unwrap_or(0);
    body.len() >= length
}

const HEALTH: &str = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";

#[tokio::test]
async fn a_connection_that_sends_nothing_or_half_a_request_is_closed_after_the_header_timeout() {
    let addr = start(100).await;
    for sent in ["", "GET /hea", "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let opened = Instant::now();
        stream.write_all(sent.as_bytes()).await.unwrap();
        let (_, closed) = read_until_closed(&mut stream).await.unwrap_or_else(|| panic!("{sent:?} stayed open"));
        let after = closed - opened;
        assert!(after >= HEADER && after < IDLE, "{sent:?} closed after {after:?}");
    }
}

#[tokio::test]
async fn a_keep_alive_connection_outlives_the_header_timeout_and_is_closed_when_idle() {
    let addr = start(100).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    assert!(request(&mut stream, HEALTH).await.starts_with("HTTP/1.1 200"));
    // Idle for longer than the header timeout (and well within the idle timeout): a
    // keep-alive wait is not a slow request. The duration is what is tested: nothing happens
    // at the header timeout to wait for, the connection must simply still work after it.
    tokio::time::sleep(HEADER * 2).await;
    assert!(request(&mut stream, HEALTH).await.starts_with("HTTP/1.1 200"));
    let idle_from = Instant::now();
    let (_, closed) = read_until_closed(&mut stream).await.expect("idle connection closed");
    assert!(closed - idle_from >= IDLE, "closed after {:?}", closed - idle_from);
}

#[tokio::test]
async fn a_body_that_never_finishes_gets_408_at_the_request_timeout() {
    let addr = start(100).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    stream.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b").await.unwrap();
    let (answer, closed) = read_until_closed(&mut stream).await.expect("answered and closed");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(closed - started >= REQUEST, "{:?}", closed - started);
}

#[tokio::test]
async fn at_the_cap_stalled_connections_are_shed_so_real_requests_are_served() {
    let max = 16;
    let addr = start(max).await;
    let mut stalled = Vec::new();
    for _ in 0..max * 3 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET /").await.unwrap();
        stalled.push(stream);
    }
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let answer = request(&mut stream, HEALTH).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    // The oldest stalled connections made room: they were closed at once, not at a timeout.
    let (_, closed) = read_until_closed(&mut stalled[0]).await.expect("shed");
    assert!(closed - started < HEADER, "{:?}", closed - started);
}
