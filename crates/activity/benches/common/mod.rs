//! The benches' input: the bench firehose's shape (`bench/src/lib.rs`), 20k batches of 5
//! actions, 50 sessions round-robin, one action after another a second apart.

use activity::action::{ActionRecord, BatchRecord};

pub const BATCHES: usize = 20_000;
pub const SESSIONS: usize = 50;

/// `pages`: how many distinct pages the actions cycle through (one per action, in turn);
/// `page_loads`: whether each batch's first action is a `pageview` (else all are clicks).
pub fn batches(pages: usize, page_loads: bool) -> Vec<BatchRecord<'static>> {
    (0..BATCHES)
        .map(|b| {
            let session = b % SESSIONS;
            let actions = (0..5)
                .map(|i| {
                    let n = b * 5 + i;
                    let page = format!("https://app.example.com/dashboard/page/{}", n % pages);
                    ActionRecord {
                        title: format!("Click button {n}").into(),
                        description: format!("User clicked button {n} on page {} of the dashboard", n % pages).into(),
                        kind: if page_loads && i == 0 { "pageview" } else { "click" }.into(),
                        index: i as i64,
                        timestamp_start: 1_700_000_000.0 + n as f64,
                        timestamp_end: 1_700_000_000.8 + n as f64,
                        raw_url: format!("{page}?ref=email").into(),
                        canonical_url: page.into(),
                    }
                })
                .collect();
            BatchRecord {
                session_id: Some(format!("ps_bench_{session}").into()),
                user_id: Some(format!("distinct_id_{session}").into()),
                actions,
                ..BatchRecord::default()
            }
        })
        .collect()
}
