//! Context store write throughput, the listener's side of the store: 100k actions (20k batches
//! of 5, 50 sessions round-robin) recorded the way the listener's writer does it, in calls of
//! up to 512 batches. The listener keeps up with a firehose only if this is well above it.
//!
//! Run: `cargo bench -p agent-core --bench store_ingest`

use agent_core::context::{ContextStore, FileStore, StoreLimits};
use agent_core::payload::{Action, ActionsBatch};
use std::time::{Duration, Instant, SystemTime};

const BATCHES: usize = 20_000;
const SESSIONS: usize = 50;
const PER_CALL: usize = 512;

fn batches() -> Vec<ActionsBatch<'static>> {
    (0..BATCHES)
        .map(|b| {
            let session = b % SESSIONS;
            let actions = (0..5)
                .map(|i| {
                    let n = b * 5 + i;
                    Action {
                        title: format!("Click button {n}").into(),
                        description: format!("User clicked button {n} on page {} of the dashboard", n % 100).into(),
                        canonical_url: format!("https://app.example.com/dashboard/page/{}", n % 100).into(),
                        kind: "click".into(),
                        index: i as i64,
                        timestamp_start: 1_700_000_000.0 + n as f64,
                        timestamp_end: 1_700_000_000.8 + n as f64,
                        raw_url: format!("https://app.example.com/dashboard/page/{}?ref=email", n % 100).into(),
                        ..Action::default()
                    }
                })
                .collect();
            ActionsBatch {
                session_id: Some(format!("ps_bench_{session}").into()),
                user_id: Some(format!("distinct_id_{session}").into()),
                actions,
                count: 5,
                ..ActionsBatch::default()
            }
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let input = batches();
    let mut times = Vec::new();
    for _ in 0..5 {
        let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into())).expect("tempdir");
        let store = FileStore::open(dir.path(), StoreLimits { max_actions: 50, ttl: Duration::from_secs(3600) })
            .expect("store");
        let start = Instant::now();
        for chunk in input.chunks(PER_CALL) {
            store.record_batches(chunk, SystemTime::now()).await.expect("write");
        }
        times.push(start.elapsed());
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "{} actions in {} sessions, {PER_CALL} batches per call: median {:.1} ms ({:.0} actions/s; runs {:?})",
        BATCHES * 5,
        SESSIONS,
        median.as_secs_f64() * 1000.0,
        (BATCHES * 5) as f64 / median.as_secs_f64(),
        times.iter().map(|t| format!("{:.1}", t.as_secs_f64() * 1000.0)).collect::<Vec<_>>()
    );
}
