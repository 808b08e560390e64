//! The listener's reading-thread work without the network and the disk: the firehose of
//! `bench/run.sh` part c (100k actions, 20k frames) cut into 400 KB reads, through the SSE
//! parser, the payload parser and the activity-file formatting (with the conversion of the wire's
//! batch into the product's record). The time is CPU only, so it
//! is steadier than the end-to-end figure and shows which stage a change helped.
//!
//! Run: `cargo bench -p bench --bench reading_thread`

use activity::action::BatchRecord;
use activity::activity_file::format_action_block;
use activity::payload::{StreamPayload, parse_payload};
use activity::sse::{SseItem, SseParser};
use bench::Firehose;
use std::time::{Duration, Instant};

const READ: usize = 400 * 1024;

#[derive(Default)]
struct Stages {
    sse: Duration,
    parse: Duration,
    format: Duration,
}

fn run(body: &[u8]) -> (Stages, usize) {
    let mut stages = Stages::default();
    let mut parser = SseParser::new();
    let mut items = Vec::new();
    let mut block = Vec::with_capacity(READ);
    let mut actions = 0;
    for chunk in body.chunks(READ) {
        let t = Instant::now();
        parser.push(chunk, &mut items);
        stages.sse += t.elapsed();
        for item in items.drain(..) {
            let SseItem::Event(event) = item else { continue };
            let t = Instant::now();
            let parsed = parse_payload(&event.data).expect("a valid frame");
            stages.parse += t.elapsed();
            let t = Instant::now();
            if let StreamPayload::Actions(batch) = parsed.payload {
                actions += batch.actions.len();
                // As the listener does: the wire batch becomes the product's record, then the file's bytes.
                let record = BatchRecord::from_wire(&batch);
                format_action_block(&record.actions, &mut block);
            }
            stages.format += t.elapsed();
        }
        std::hint::black_box(&block);
        block.clear();
    }
    (stages, actions)
}

fn main() {
    let firehose = Firehose::build(20_000, 5, 50);
    run(&firehose.body); // warm-up
    let mut runs: Vec<(Duration, Stages)> = (0..7)
        .map(|_| {
            let start = Instant::now();
            let (stages, actions) = run(&firehose.body);
            assert_eq!(actions, 100_000);
            (start.elapsed(), stages)
        })
        .collect();
    runs.sort_by_key(|(total, _)| *total);
    let (total, stages) = &runs[runs.len() / 2];
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{} MB stream, 100000 actions: median {:.1} ms (SSE {:.1}, JSON {:.1}, format {:.1}); all runs {:?} ms",
        firehose.body.len() / 1_000_000,
        ms(total),
        ms(&stages.sse),
        ms(&stages.parse),
        ms(&stages.format),
        runs.iter().map(|(t, _)| format!("{:.1}", ms(t))).collect::<Vec<_>>()
    );
}
