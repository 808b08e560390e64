//! Context store write throughput, the listener's side of the store: 100k actions (20k batches
//! of 5, 50 sessions round-robin) recorded the way the listener's writer does it, in calls of
//! up to 512 batches. The listener keeps up with a firehose only if this is well above it.
//!
//! Run: `cargo bench -p activity --bench store_ingest`

#[path = "common/mod.rs"]
mod common;

use activity::context::{FileStore, StoreLimits};
use common::{BATCHES, SESSIONS};
use std::time::{Duration, Instant, SystemTime};

const PER_CALL: usize = 512;

#[tokio::main]
async fn main() {
    let input = common::batches(100, false);
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
