//! Shared pieces of the benchmark harness: the synthetic Autoplay stream and percentiles (the
//! stand-ins and the clock they stamp with are `standins`').

use std::fmt::Write as _;

/// The clock the stand-ins stamp their records with.
pub use standins::mono_ns;

/// The Crisp website id of the fixtures (`tests/fixtures/crisp/*.json`).
pub const WEBSITE_ID: &str = "42286ab3-b29a-4fde-8538-da0ae501d825";

/// Autoplay session of batch `k`: sessions are used round-robin.
pub fn autoplay_session(k: usize, sessions: usize) -> String {
    format!("ps_bench_{}", k % sessions.max(1))
}

/// A synthetic stream: `batches` frames of `batch_size` actions, sessions round-robin, every
/// field of `tests/fixtures/autoplay/actions-full.sse` present.
pub struct Firehose {
    /// The SSE body, one `data: {json}\n\n` per batch.
    pub body: Vec<u8>,
    /// Bytes the listener must append to an empty `event_data.txt` for the whole stream.
    pub expected_file_bytes: u64,
    /// Lines it appends (3 per action).
    pub expected_file_lines: u64,
}

impl Firehose {
    pub fn build(batches: usize, batch_size: usize, sessions: usize) -> Firehose {
        let mut body = Vec::with_capacity(batches * batch_size * 560);
        let mut expected_file_bytes = 0u64;
        let mut file_block = String::new();
        for k in 0..batches {
            let session = autoplay_session(k, sessions);
            let user = format!("distinct_id_{}", k % sessions.max(1));
            let email = format!("user{}@example.com", k % sessions.max(1));
            let mut actions = Vec::with_capacity(batch_size);
            for j in 0..batch_size {
                let a = k * batch_size + j;
                let page = a % 97;
                let (kind, title, description) = if j == 0 {
                    (
                        "pageview",
                        format!("Page Load: Page {page}"),
                        format!("User landed on page {page} of the dashboard"),
                    )
                } else {
                    (
                        "click",
                        format!("Click button {a}"),
                        format!("User clicked button {a} on page {page} of the dashboard"),
                    )
                };
                let canonical_url = format!("https://app.example.com/dashboard/page/{page}");
                file_block.clear();
                let _ = write!(
                    file_block,
                    "[{j}] Action: {title}\n     Details: {description}\n     Page:    {canonical_url}\n"
                );
                expected_file_bytes += file_block.len() as u64;
                let t0 = 1_700_000_000.0 + a as f64;
                actions.push(serde_json::json!({
                    "index": j,
                    "type": kind,
                    "title": title,
                    "description": description,
                    "timestamp_start": t0,
                    "timestamp_end": t0 + 0.8,
                    "raw_url": format!("{canonical_url}?ref=email"),
                    "canonical_url": canonical_url,
                    "session_id": session,
                    "user_id": user,
                    "email": email,
                }));
            }
            let batch = serde_json::json!({
                "type": "actions",
                "product_id": "prod_bench",
                "session_id": session,
                "user_id": user,
                "email": email,
                "count": batch_size,
                "forwarded_at": 1_700_000_000.0 + (k * batch_size) as f64 + 0.9,
                "actions": actions,
            });
            body.extend_from_slice(b"data: ");
            serde_json::to_writer(&mut body, &batch).expect("serialize a batch");
            body.extend_from_slice(b"\n\n");
        }
        Firehose { body, expected_file_bytes, expected_file_lines: (batches * batch_size * 3) as u64 }
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
