//! Loopback stand-ins for the benchmarks, real HTTP servers on three ports:
//! - LLM (`standins::llm`): `POST /v1/chat/completions`, answers after a configurable delay and
//!   records, per question `bench-…`, when the request arrived and when the answer left;
//! - Crisp (`standins::crisp`): `PATCH …/compose`, `GET …/meta` (links conversation
//!   `session_<p>_<i>` to Autoplay session `ps_bench_<i % sessions>`), `GET …/messages` (two
//!   earlier turns), and `POST …/message`, whose arrival time is recorded; plus the harness's
//!   own `GET /_stats`, `POST /_reset`, `POST /_config?llm_delay_ms=N`, `GET /_firehose?batches=N`;
//! - Autoplay SSE: `GET /stream/{product}?batches=N[&delay_ms=D]`: the synthetic firehose written
//!   as fast as the socket allows, then the connection is held open (as a live stream): the
//!   `standins::sse_server` firehose plan, the body picked by the query.
//!
//! Writes `LLM_PORT=…`, `CRISP_PORT=…`, `SSE_PORT=…` to `--ports-file` once all three listen.

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bench::{Firehose, autoplay_session, mono_ns};
use bytes::Bytes;
use serde_json::{Value, json};
use standins::crisp::{Crisp, CrispSettings, History};
use standins::llm::{Answer, Llm};
use standins::sse_server::Plan;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A prebuilt stream: the SSE body, the bytes and the lines the listener must write for it.
type Built = Arc<(Bytes, u64, u64)>;

struct Shared {
    llm: Arc<Llm>,
    crisp: Arc<Crisp>,
    /// Connection times of the SSE stream, monotonic ns.
    sse_connects: Mutex<Vec<u64>>,
    sessions: usize,
    batch_size: usize,
    chunk: usize,
    firehoses: Mutex<HashMap<usize, Built>>,
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

/// A bench question's tag (`bench-…`), when the request carries one.
fn bench_tag(question: Option<&str>) -> Option<&str> {
    question.filter(|q| q.starts_with("bench-"))
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
    let sessions: usize = arg(&args, "--sse-sessions", "50").parse()?;
    // Answers name the bench question; other calls (summaries) get a canned summary.
    let llm = Llm::new(
        Answer::Local(Box::new(|request: &Value| {
            let question = standins::llm::question_of(request);
            match bench_tag(question.as_deref()) {
                Some(tag) => format!("Answer for {tag}: open Settings, then Billing, and pick a plan."),
                None => "The user browsed the dashboard and clicked several buttons.".to_owned(),
            }
        })),
        false,
    );
    llm.set_delay(Duration::from_millis(arg(&args, "--llm-delay-ms", "200").parse()?));
    // Conversation `session_<prefix>_<i>` is linked to the Autoplay session the listener
    // wrote for batch i; two earlier turns of history.
    let crisp = Crisp::new(CrispSettings {
        website: None,
        meta: Box::new(move |session: &str| {
            let data = match session.rsplit('_').next().and_then(|i| i.parse::<usize>().ok()) {
                Some(i) => json!({"autoplay_session_id": autoplay_session(i, sessions)}),
                None => json!({}),
            };
            json!({"nickname": "visitor", "email": "", "data": data})
        }),
        history: History::Fixed(json!([
            {"type": "text", "from": "user", "content": "Hello, I have a billing question.", "fingerprint": 1,
             "timestamp": 1_700_000_000_000u64},
            {"type": "text", "from": "operator", "content": "Sure, what would you like to know?",
             "fingerprint": 2, "timestamp": 1_700_000_001_000u64},
        ])),
    });
    let shared = Arc::new(Shared {
        llm: Arc::clone(&llm),
        crisp: Arc::clone(&crisp),
        sse_connects: Mutex::new(Vec::new()),
        sessions,
        batch_size: arg(&args, "--sse-batch-size", "5").parse()?,
        chunk: arg(&args, "--sse-chunk", "65536").parse()?,
        firehoses: Mutex::new(HashMap::new()),
    });
    for n in arg(&args, "--sse-prebuild", "20000,2000").split(',').filter(|s| !s.is_empty()) {
        shared.firehose(n.parse()?);
    }
    let control = Router::new()
        .route("/_stats", get(stats))
        .route("/_reset", post(reset))
        .route("/_config", post(config))
        .route("/_firehose", get(firehose_info))
        .with_state(shared.clone());
    let sse = Router::new().route("/stream/{product}", get(stream)).with_state(shared.clone());
    let mut ports = Vec::new();
    for (name, app) in [("LLM_PORT", llm.router()), ("CRISP_PORT", crisp.router().merge(control)), ("SSE_PORT", sse)] {
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

async fn stats(State(s): State<S>) -> Response {
    let calls = s.llm.calls();
    let llm: Vec<(String, u64, u64)> = calls
        .iter()
        .filter_map(|c| bench_tag(c.question.as_deref()).map(|tag| (tag.to_owned(), c.received_ns, c.answered_ns)))
        .collect();
    let crisp = s.crisp.log();
    let messages: Vec<(&str, u64)> = crisp.posted.iter().map(|p| (p.session.as_str(), p.received_ns)).collect();
    axum::Json(json!({
        "llm_other": calls.len() - llm.len(),
        "llm": llm,
        "messages": messages,
        "compose": crisp.compose,
        "meta": crisp.meta,
        "history": crisp.history,
        "sse_connects": *s.sse_connects.lock().unwrap(),
    }))
    .into_response()
}

async fn reset(State(s): State<S>) -> &'static str {
    s.llm.reset();
    s.crisp.reset();
    s.sse_connects.lock().unwrap().clear();
    "reset\n"
}

async fn config(State(s): State<S>, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Some(ms) = q.get("llm_delay_ms").and_then(|v| v.parse().ok()) {
        s.llm.set_delay(Duration::from_millis(ms));
    }
    axum::Json(json!({"llm_delay_ms": s.llm.delay().as_millis() as u64})).into_response()
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
    s.sse_connects.lock().unwrap().push(mono_ns());
    standins::sse_server::respond_to(Plan::Firehose { body: firehose.0.clone(), chunk: s.chunk })
}
