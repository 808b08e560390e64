//! Loopback stand-ins for the benchmarks, real HTTP servers on three ports:
//! - LLM: `POST /v1/chat/completions`, answers after a configurable delay and records, per
//!   question `bench-…`, when the request arrived and when the answer left;
//! - Crisp: `PATCH …/compose`, `GET …/meta` (links conversation `session_<p>_<i>` to Autoplay
//!   session `ps_bench_<i % sessions>`), `GET …/messages` (two earlier turns), and
//!   `POST …/message`, whose arrival time is recorded; plus `GET /_stats`, `POST /_reset`,
//!   `POST /_config?llm_delay_ms=N`, `GET /_firehose?batches=N`;
//! - Autoplay SSE: `GET /stream/{product}?batches=N[&delay_ms=D]`: the synthetic firehose written
//!   as fast as the socket allows, then the connection is held open (as a live stream).
//!
//! Writes `LLM_PORT=…`, `CRISP_PORT=…`, `SSE_PORT=…` to `--ports-file` once all three listen.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use bench::{Firehose, autoplay_session, mono_ns};
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Stats {
    /// (question tag, request received, answer sent), monotonic ns.
    llm: Vec<(String, u64, u64)>,
    /// LLM calls that were not bench questions (e.g. summaries).
    llm_other: u64,
    /// (Crisp session, message POST received), monotonic ns.
    messages: Vec<(String, u64)>,
    compose: u64,
    meta: u64,
    history: u64,
    /// Connection times of the SSE stream, monotonic ns.
    sse_connects: Vec<u64>,
}

/// A prebuilt stream: the SSE body, the bytes and the lines the listener must write for it.
type Built = Arc<(Bytes, u64, u64)>;

struct Shared {
    stats: Mutex<Stats>,
    llm_delay_ms: AtomicU64,
    sessions: usize,
    batch_size: usize,
    chunk: usize,
    firehoses: Mutex<HashMap<usize, Built>>,
    fingerprint: AtomicU64,
}

impl Shared {
    fn firehose(&self, batches: usize) -> Built {
        let mut cache = self.firehoses.lock().unwrap();
        Arc::clone(cache.entry(batches).or_insert_with(|| {
            let f = Firehose::build(batches, self.batch_size, self.sessions);
            Arc::new((Bytes::from(f.body), f.expected_file_bytes, f.expected_file_lines))
        }))
    }
}

type S = Arc<Shared>;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "bench-stubs [--ports-file F] [--llm-delay-ms 200] [--sse-sessions 50] [--sse-batch-size 5] \
             [--sse-chunk 65536] [--sse-prebuild 20000,2000]"
        );
        return Ok(());
    }
    let shared = Arc::new(Shared {
        stats: Mutex::new(Stats::default()),
        llm_delay_ms: AtomicU64::new(arg(&args, "--llm-delay-ms", "200").parse()?),
        sessions: arg(&args, "--sse-sessions", "50").parse()?,
        batch_size: arg(&args, "--sse-batch-size", "5").parse()?,
        chunk: arg(&args, "--sse-chunk", "65536").parse()?,
        firehoses: Mutex::new(HashMap::new()),
        fingerprint: AtomicU64::new(9_000_000_000),
    });
    for n in arg(&args, "--sse-prebuild", "20000,2000").split(',').filter(|s| !s.is_empty()) {
        shared.firehose(n.parse()?);
    }
    let llm = Router::new().route("/v1/chat/completions", post(llm_completion)).with_state(shared.clone());
    let crisp = Router::new()
        .route("/v1/website/{website}/conversation/{session}/{leaf}", any(crisp_call))
        .route("/_stats", get(stats))
        .route("/_reset", post(reset))
        .route("/_config", post(config))
        .route("/_firehose", get(firehose_info))
        .with_state(shared.clone());
    let sse = Router::new().route("/stream/{product}", get(stream)).with_state(shared.clone());
    let mut ports = Vec::new();
    for (name, app) in [("LLM_PORT", llm), ("CRISP_PORT", crisp), ("SSE_PORT", sse)] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        ports.push(format!("{name}={}\n", listener.local_addr()?.port()));
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    let ports = ports.concat();
    match args.iter().position(|a| a == "--ports-file").and_then(|i| args.get(i + 1)) {
        Some(path) => {
            let tmp = format!("{path}.tmp");
            std::fs::write(&tmp, &ports)?;
            std::fs::rename(&tmp, path)?;
        }
        None => print!("{ports}"),
    }
    // Until SIGTERM/SIGINT (the script stops us by pid).
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

/// The text after the last `User question: ` of the last message, when it is a bench tag.
fn question_tag(request: &Value) -> Option<String> {
    let content = request.get("messages")?.as_array()?.last()?.get("content")?.as_str()?;
    let question = &content[content.rfind("User question: ")? + "User question: ".len()..];
    let tag = question.lines().next()?.trim();
    tag.starts_with("bench-").then(|| tag.to_owned())
}

async fn llm_completion(State(s): State<S>, body: Bytes) -> Response {
    let received = mono_ns();
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let tag = question_tag(&request);
    let delay = s.llm_delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let content = match &tag {
        Some(tag) => format!("Answer for {tag}: open Settings, then Billing, and pick a plan."),
        None => "The user browsed the dashboard and clicked several buttons.".to_owned(),
    };
    let answer = json!({
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": "bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    });
    let sent = mono_ns();
    {
        let mut stats = s.stats.lock().unwrap();
        match tag {
            Some(tag) => stats.llm.push((tag, received, sent)),
            None => stats.llm_other += 1,
        }
    }
    axum::Json(answer).into_response()
}

fn ok(data: Value) -> Response {
    axum::Json(json!({"error": false, "reason": "resolved", "data": data})).into_response()
}

async fn crisp_call(
    State(s): State<S>,
    method: Method,
    Path((_website, session, leaf)): Path<(String, String, String)>,
    _body: Bytes,
) -> Response {
    let received = mono_ns();
    match (method, leaf.as_str()) {
        (Method::PATCH, "compose") => {
            s.stats.lock().unwrap().compose += 1;
            ok(json!({}))
        }
        (Method::GET, "meta") => {
            s.stats.lock().unwrap().meta += 1;
            // session_<prefix>_<i> -> the Autoplay session the listener wrote for batch i.
            let data = match session.rsplit('_').next().and_then(|i| i.parse::<usize>().ok()) {
                Some(i) => json!({"autoplay_session_id": autoplay_session(i, s.sessions)}),
                None => json!({}),
            };
            ok(json!({"nickname": "visitor", "email": "", "data": data}))
        }
        (Method::GET, "messages") => {
            s.stats.lock().unwrap().history += 1;
            ok(json!([
                {"type": "text", "from": "user", "content": "Hello, I have a billing question.", "fingerprint": 1,
                 "timestamp": 1_700_000_000_000u64},
                {"type": "text", "from": "operator", "content": "Sure, what would you like to know?",
                 "fingerprint": 2, "timestamp": 1_700_000_001_000u64},
            ]))
        }
        (Method::POST, "message") => {
            s.stats.lock().unwrap().messages.push((session, received));
            let fingerprint = s.fingerprint.fetch_add(1, Ordering::Relaxed);
            (
                StatusCode::ACCEPTED,
                axum::Json(json!({"error": false, "reason": "dispatched", "data": {"fingerprint": fingerprint}})),
            )
                .into_response()
        }
        _ => (StatusCode::NOT_FOUND, axum::Json(json!({"error": true, "reason": "route_not_found"}))).into_response(),
    }
}

async fn stats(State(s): State<S>) -> Response {
    let stats = s.stats.lock().unwrap();
    axum::Json(json!({
        "llm": stats.llm,
        "llm_other": stats.llm_other,
        "messages": stats.messages,
        "compose": stats.compose,
        "meta": stats.meta,
        "history": stats.history,
        "sse_connects": stats.sse_connects,
    }))
    .into_response()
}

async fn reset(State(s): State<S>) -> &'static str {
    *s.stats.lock().unwrap() = Stats::default();
    "reset\n"
}

async fn config(State(s): State<S>, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Some(ms) = q.get("llm_delay_ms").and_then(|v| v.parse().ok()) {
        s.llm_delay_ms.store(ms, Ordering::Relaxed);
    }
    axum::Json(json!({"llm_delay_ms": s.llm_delay_ms.load(Ordering::Relaxed)})).into_response()
}

fn batches_of(q: &HashMap<String, String>) -> usize {
    q.get("batches").and_then(|v| v.parse().ok()).unwrap_or(20_000)
}

async fn firehose_info(State(s): State<S>, Query(q): Query<HashMap<String, String>>) -> Response {
    let batches = batches_of(&q);
    let f = s.firehose(batches);
    axum::Json(json!({
        "batches": batches,
        "actions": batches * s.batch_size,
        "stream_bytes": f.0.len(),
        "expected_file_bytes": f.1,
        "expected_file_lines": f.2,
    }))
    .into_response()
}

async fn stream(State(s): State<S>, Query(q): Query<HashMap<String, String>>) -> Response {
    let firehose = s.firehose(batches_of(&q));
    // `delay_ms`: hold the answer first (lets a profiler start collecting once the client waits).
    if let Some(ms) = q.get("delay_ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    s.stats.lock().unwrap().sse_connects.push(mono_ns());
    let body = firehose.0.clone();
    let chunk = s.chunk.max(1);
    let chunks = (0..body.len().div_ceil(chunk))
        .map(move |i| Ok::<_, std::io::Error>(body.slice(i * chunk..((i + 1) * chunk).min(body.len()))));
    // Everything as fast as the socket takes it, then an open, silent connection (a live stream).
    let stream = futures_util::stream::iter(chunks).chain(futures_util::stream::pending());
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .unwrap()
}
