//! The listener's reading-thread work without the network and the disk: the firehose of
//! `bench/run.sh` part c (100k actions, 20k frames) cut into 400 KB reads, through the SSE
//! parser, the payload parser and the activity-file formatting. The time is CPU only, so it
//! is steadier than the end-to-end figure and shows which stage a change helped.
//!
//! Then again with proactive triggers evaluated on each batch, as the listener does
//! (`PROACTIVE_TRIGGERS`, default all four; `PROACTIVE_ERROR_PATTERN`, default
//! `(?i)error|not found`), run for run interleaved with the pass without them.
//!
//! Run: `cargo bench -p bench --bench reading_thread`

use agent_core::activity_file::format_action_block;
use agent_core::payload::{StreamPayload, parse_payload};
use agent_core::proactive::Trigger;
use agent_core::proactive::triggers::{TriggerSettings, Watch};
use agent_core::sse::{SseItem, SseParser};
use bench::Firehose;
use std::time::{Duration, Instant, SystemTime};

const READ: usize = 400 * 1024;

#[derive(Default)]
struct Stages {
    sse: Duration,
    parse: Duration,
    format: Duration,
    triggers: Duration,
}

fn run(body: &[u8], triggers: Option<&TriggerSettings>) -> (Stages, usize) {
    let mut watch = triggers.map(|settings| Watch::new(settings.clone()));
    let mut firings = Vec::new();
    let mut stages = Stages::default();
    let mut parser = SseParser::new();
    let mut items = Vec::new();
    let mut block = Vec::with_capacity(READ);
    let mut actions = 0;
    for chunk in body.chunks(READ) {
        // The clocks the triggers need, once per read (as the listener reads them).
        let read_at = watch.is_some().then(|| (tokio::time::Instant::now(), SystemTime::now()));
        let t = Instant::now();
        parser.push(chunk, &mut items);
        stages.sse += t.elapsed();
        for item in items.drain(..) {
            let SseItem::Event(event) = item else { continue };
            let t = Instant::now();
            let parsed = parse_payload(&event.data).expect("a valid frame");
            stages.parse += t.elapsed();
            let t = Instant::now();
            let StreamPayload::Actions(batch) = parsed.payload else { continue };
            actions += batch.actions.len();
            format_action_block(&batch.actions, &mut block);
            stages.format += t.elapsed();
            if let (Some(watch), Some((now, wall))) = (&mut watch, read_at) {
                let t = Instant::now();
                watch.observe(&batch, now, wall, &mut firings);
                stages.triggers += t.elapsed();
            }
        }
        std::hint::black_box(&block);
        block.clear();
    }
    (stages, actions)
}

fn trigger_settings() -> TriggerSettings {
    let list = std::env::var("PROACTIVE_TRIGGERS").unwrap_or_else(|_| "ping_pong,dwell,repeat,error_page".into());
    let pattern = std::env::var("PROACTIVE_ERROR_PATTERN").unwrap_or_else(|_| "(?i)error|not found".into());
    TriggerSettings {
        enabled: Trigger::parse_list(&list).expect("PROACTIVE_TRIGGERS"),
        error_pattern: Some(regex::Regex::new(&pattern).expect("PROACTIVE_ERROR_PATTERN")),
        ..TriggerSettings::default()
    }
}

fn main() {
    let firehose = Firehose::build(20_000, 5, 50);
    let settings = trigger_settings();
    run(&firehose.body, None); // warm-up
    let mut off: Vec<(Duration, Stages)> = Vec::new();
    let mut on: Vec<(Duration, Stages)> = Vec::new();
    for _ in 0..7 {
        for (runs, triggers) in [(&mut off, None), (&mut on, Some(&settings))] {
            let start = Instant::now();
            let (stages, actions) = run(&firehose.body, triggers);
            assert_eq!(actions, 100_000);
            runs.push((start.elapsed(), stages));
        }
    }
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    let mut medians = Vec::new();
    for (name, runs) in [("triggers off", &mut off), ("triggers on", &mut on)] {
        runs.sort_by_key(|(total, _)| *total);
        let (total, stages) = &runs[runs.len() / 2];
        medians.push(ms(total));
        println!(
            "{} MB stream, 100000 actions, {name}: median {:.1} ms (SSE {:.1}, JSON {:.1}, format {:.1}, triggers {:.1}); all runs {:?} ms",
            firehose.body.len() / 1_000_000,
            ms(total),
            ms(&stages.sse),
            ms(&stages.parse),
            ms(&stages.format),
            ms(&stages.triggers),
            runs.iter().map(|(t, _)| format!("{:.1}", ms(t))).collect::<Vec<_>>()
        );
    }
    let enabled: Vec<&str> = settings.enabled.iter().map(|t| t.as_str()).collect();
    println!("triggers on ({}) / off: {:.3}", enabled.join(","), medians[1] / medians[0]);
}
