//! A loopback Autoplay stream: serves scripted SSE connections and records each request. The
//! tests script each connection; the demo replays its sample as a live visitor's would.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Response, StatusCode};
use axum::routing::get;
use bytes::Bytes;
use futures_util::StreamExt as _;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What one connection gets.
#[derive(Clone, Debug)]
pub enum Plan {
    /// `200 text/event-stream`, these chunks, then close the body.
    StreamThenClose(Vec<Bytes>),
    /// `200 text/event-stream`, these chunks, then keep the connection open (idle).
    StreamThenHold(Vec<Bytes>),
    /// A plain status with a JSON body.
    Status(u16),
    /// `200 text/event-stream` as a live stream: each chunk `gap` after the one before, then
    /// `heartbeat` every period, until the client goes away (the demo's pace).
    Live { chunks: Vec<Bytes>, gap: Duration, heartbeat: Option<(Bytes, Duration)> },
    /// `200 text/event-stream`: `body` in `chunk`-byte pieces as fast as the socket takes them,
    /// then an open, silent connection (the benchmarks' firehose).
    Firehose { body: Bytes, chunk: usize },
}

#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub at: Instant,
    pub headers: HeaderMap,
}

#[derive(Default)]
struct Inner {
    plans: VecDeque<Plan>,
    fallback: Option<Plan>,
    seen: Vec<SeenRequest>,
    live: Vec<mpsc::Sender<Bytes>>,
}

#[derive(Clone)]
pub struct SseServer {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
}

impl SseServer {
    /// Starts the server; connections beyond the scripted plans get `fallback` (or hold idle).
    pub async fn start(plans: Vec<Plan>, fallback: Option<Plan>) -> SseServer {
        let inner = Arc::new(Mutex::new(Inner { plans: plans.into(), fallback, ..Inner::default() }));
        let app = axum::Router::new().route("/stream/{product}", get(serve)).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        SseServer { inner, url: format!("http://{addr}/stream/prod_abc") }
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        self.inner.lock().unwrap().seen.clone()
    }

    /// Sends bytes to every open held connection.
    pub async fn push(&self, bytes: impl Into<Bytes>) {
        let senders = self.inner.lock().unwrap().live.clone();
        let bytes = bytes.into();
        for s in senders {
            let _ = s.send(bytes.clone()).await;
        }
    }

    /// Closes every held connection.
    pub fn close_all(&self) {
        self.inner.lock().unwrap().live.clear();
    }
}

async fn serve(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap) -> Response<Body> {
    let plan = {
        let mut inner = inner.lock().unwrap();
        inner.seen.push(SeenRequest { at: Instant::now(), headers });
        inner.plans.pop_front().or_else(|| inner.fallback.clone()).unwrap_or(Plan::StreamThenHold(vec![]))
    };
    respond(plan, Some(&inner))
}

/// One connection's answer under `plan`, for a server of one's own (the benchmarks pick the
/// firehose by query); its held connections take no pushes.
pub fn respond_to(plan: Plan) -> Response<Body> {
    respond(plan, None)
}

/// `inner`: where held connections are kept for [`SseServer::push`].
fn respond(plan: Plan, inner: Option<&Arc<Mutex<Inner>>>) -> Response<Body> {
    let sse = |body: Body| {
        Response::builder()
            .status(200)
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(body)
            .unwrap()
    };
    match plan {
        Plan::Firehose { body, chunk } => {
            let chunk = chunk.max(1);
            let pieces = (0..body.len().div_ceil(chunk))
                .map(move |i| Ok::<_, std::io::Error>(body.slice(i * chunk..((i + 1) * chunk).min(body.len()))));
            sse(Body::from_stream(futures_util::stream::iter(pieces).chain(futures_util::stream::pending())))
        }
        Plan::Status(code) => Response::builder()
            .status(StatusCode::from_u16(code).unwrap())
            .header("content-type", "application/json")
            .body(Body::from(r#"{"detail":"refused"}"#))
            .unwrap(),
        Plan::StreamThenClose(chunks) => {
            let stream = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
            sse(Body::from_stream(stream))
        }
        Plan::Live { chunks, gap, heartbeat } => {
            let (tx, rx) = mpsc::channel::<Bytes>(8);
            tokio::spawn(async move {
                for chunk in chunks {
                    tokio::time::sleep(gap).await;
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
                }
                let Some((beat, every)) = heartbeat else { return std::future::pending().await };
                loop {
                    tokio::time::sleep(every).await;
                    if tx.send(beat.clone()).await.is_err() {
                        return;
                    }
                }
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
            });
            sse(Body::from_stream(stream))
        }
        Plan::StreamThenHold(chunks) => {
            // Room for every scripted chunk (one-byte chunking makes thousands) plus later pushes.
            let (tx, rx) = mpsc::channel::<Bytes>(chunks.len() + 1024);
            for c in chunks {
                tx.try_send(c).unwrap();
            }
            if let Some(inner) = inner {
                inner.lock().unwrap().live.push(tx);
            }
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
            });
            sse(Body::from_stream(stream))
        }
    }
}
