//! Proactive triggers' cost in the listener's store writer: `Watch::observe` over 100k
//! actions (20k batches of 5, 50 sessions round-robin, every action on a new page: the bench
//! firehose's shape), all triggers on, against the same loop with triggers off.
//!
//! Run: `cargo bench -p proactive --bench triggers`

#[path = "../../activity/benches/common/mod.rs"]
mod common;

use activity::action::BatchRecord;
use common::{BATCHES, SESSIONS};
use proactive::Trigger;
use proactive::triggers::{TriggerSettings, Watch};
use std::time::{Duration, Instant, SystemTime};

const ROUNDS: usize = 7;

/// Best time of [`ROUNDS`] passes over `batches` with a fresh `Watch`, and the firings.
/// `hot`: the batches in slices of 100, each observed as it is copied (the listener observes
/// a batch it has just parsed: its strings are in the cache, not 30 MB away).
fn run(settings: &TriggerSettings, batches: &[BatchRecord<'static>], hot: bool) -> (Duration, usize) {
    let mut best = Duration::MAX;
    let mut fired = 0;
    for _ in 0..ROUNDS {
        let mut watch = Watch::new(settings.clone());
        let mut out = Vec::new();
        let mut spent = Duration::ZERO;
        for slice in batches.chunks(100) {
            let copy: Vec<BatchRecord<'static>>;
            let slice = if hot {
                copy = slice.to_vec();
                &copy[..]
            } else {
                slice
            };
            let start = Instant::now();
            for batch in slice {
                // As the listener does: the two clocks read once per batch.
                watch.observe(batch, tokio::time::Instant::now(), SystemTime::now(), &mut out);
            }
            spent += start.elapsed();
        }
        best = best.min(spent);
        fired = out.len();
    }
    (best, fired)
}

fn main() {
    let batches = common::batches(97, true);
    let actions = (BATCHES * 5) as f64;
    let pattern = regex::Regex::new(r"(?i)error|not found").unwrap();
    let cases = [
        ("off", TriggerSettings::default()),
        ("ping_pong", TriggerSettings { enabled: vec![Trigger::PingPong], ..TriggerSettings::default() }),
        ("dwell", TriggerSettings { enabled: vec![Trigger::Dwell], ..TriggerSettings::default() }),
        ("repeat", TriggerSettings { enabled: vec![Trigger::Repeat], ..TriggerSettings::default() }),
        (
            "error_page",
            TriggerSettings {
                enabled: vec![Trigger::ErrorPage],
                error_pattern: Some(pattern.clone()),
                ..TriggerSettings::default()
            },
        ),
        (
            "all four",
            TriggerSettings {
                enabled: Trigger::ALL.to_vec(),
                error_pattern: Some(pattern),
                ..TriggerSettings::default()
            },
        ),
    ];
    println!("Watch::observe, {BATCHES} batches of 5 actions, {SESSIONS} sessions; best of {ROUNDS}");
    for hot in [false, true] {
        println!("-- batches {}", if hot { "just copied (in cache, as in the listener)" } else { "as built (30 MB)" });
        for (name, settings) in &cases {
            let (best, fired) = run(settings, &batches, hot);
            println!(
                "{name:>12}: {:8.2} ms  {:6.1} ns/action  {fired} firings",
                best.as_secs_f64() * 1e3,
                best.as_secs_f64() * 1e9 / actions
            );
        }
    }
}
