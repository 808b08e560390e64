//! Context lookup cost against the size of the store: one visitor's context with ~1 KB and with
//! ~1 GB (default; `BENCH_STORE_BYTES` to change) of other visitors' activity stored.
//!
//! Run: `cargo bench -p activity --bench context_lookup`

use activity::action::{ActionRecord, BatchRecord};
use activity::context::{FileStore, StoreLimits, render_context};
use std::time::{Duration, Instant, SystemTime};

fn batch(session: &str, n: usize, pad: usize) -> BatchRecord<'static> {
    let actions = (0..n)
        .map(|i| ActionRecord {
            title: format!("Click button {i}").into(),
            description: format!("User clicked button {i} {}", "x".repeat(pad)).into(),
            canonical_url: "https://app.example.com/settings/:id".into(),
            kind: "click".into(),
            index: i as i64,
            ..ActionRecord::default()
        })
        .collect();
    BatchRecord { session_id: Some(session.to_owned().into()), actions, ..BatchRecord::default() }
}

/// Fills a store with about `bytes` of other sessions, plus the visitor looked up.
async fn fill(bytes: u64) -> (tempfile::TempDir, FileStore) {
    let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into())).expect("tempdir");
    let limits = StoreLimits { max_actions: 50, ttl: Duration::from_secs(3600) };
    let store = FileStore::open(dir.path(), limits).expect("store");
    let now = SystemTime::now();
    store.record_batch(&batch("visitor", 20, 40), now).await.expect("write");
    // Each other session: 20 actions of ~500 bytes of JSON each (~10 KB).
    let per_session = 10_000u64;
    let (sessions, other) =
        if bytes < per_session { (1, batch("other", 2, 200)) } else { (bytes / per_session, batch("other", 20, 380)) };
    for s in 0..sessions {
        let mut b = other.clone();
        b.session_id = Some(format!("other-{s}").into());
        store.record_batch(&b, now).await.expect("write");
    }
    (dir, store)
}

async fn time_lookups(store: &FileStore, rounds: usize) -> Duration {
    let now = SystemTime::now();
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        let ctx = store.session_context("visitor", now).await.expect("read").expect("present");
        std::hint::black_box(render_context(&ctx, 6000));
        samples.push(start.elapsed());
    }
    samples.sort();
    samples[samples.len() / 2]
}

fn du(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path.join("sessions"))
        .map(|d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let big: u64 = std::env::var("BENCH_STORE_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(1 << 30);
    let rounds = 2000;
    let (small_dir, small) = fill(1024).await;
    let (big_dir, large) = fill(big).await;
    // Warm both the same way, then alternate measurements to share any machine noise.
    time_lookups(&small, 200).await;
    time_lookups(&large, 200).await;
    let mut small_t = Vec::new();
    let mut large_t = Vec::new();
    for _ in 0..5 {
        small_t.push(time_lookups(&small, rounds).await);
        large_t.push(time_lookups(&large, rounds).await);
    }
    small_t.sort();
    large_t.sort();
    let (s, l) = (small_t[2], large_t[2]);
    println!("store with {:>12} bytes of sessions: median lookup+render {:?}", du(small_dir.path()), s);
    println!("store with {:>12} bytes of sessions: median lookup+render {:?}", du(big_dir.path()), l);
    println!("ratio large/small: {:.2}", l.as_secs_f64() / s.as_secs_f64());
}
