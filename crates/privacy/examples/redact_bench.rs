//! Micro benchmark: time added by `Redactor::redact_counted` to a 2 KB visitor message.
//!
//! `cargo run --release -p privacy --example redact_bench` prints p50 / p99 / max for three 2 KB
//! messages: a typical one (one email, two phones, a card, an IBAN, a key and a URL with a
//! token, then look-alike prose), one with only look-alikes (order numbers, dates, prices,
//! versions, a UUID, a tracking number), and a dense one (the personal sentence five times:
//! 37 values). `REDACT=…` limits the kinds, to see each detector's share.

use std::time::Instant;

use privacy::{Placeholders, Redactor};

const WITH_VALUES: &str = "Hi, I'm trying to finish checkout on the pricing page but it keeps failing. \
My email is jane.doe@example.com and you can call me at +44 20 7946 0958 or (415) 555-2671. \
I tried the card 4242 4242 4242 4242 twice, then paid by transfer to DE89 3704 0044 0532 0130 00. \
The reset link was https://app.example.com/reset?token=9f8e7d6c5b4a&user=42 and it said expired. \
Our integration uses sk_live_51H8abcdefXYZ0123456789 in the server config. ";

const LOOK_ALIKES: &str = "Hello, order #100234567 from 2024-03-15 at 10:30 was charged $1,299.99 twice. \
I'm on version 10.0.19045.3803 of the desktop app, build 2.14.3, and the invoice INV-2024-00981 \
shows 3 items at 49.90 each. Tracking 1Z999AA10123456784 says delivered on 15/03/2024 but nothing came. \
Session 550e8400-e29b-41d4-a716-446655440000, page 12 of 40, 75% done, ticket 48213. ";

fn two_kb(first: &str, seed: &str) -> String {
    let mut s = first.to_owned();
    while s.len() < 2048 {
        s.push_str(seed);
    }
    s.truncate(s.floor_char_boundary(2048));
    s
}

fn measure(r: &Redactor, text: &str, iterations: usize) -> (f64, f64, f64, u64) {
    let mut times = Vec::with_capacity(iterations);
    let mut found = 0;
    for _ in 0..iterations {
        let mut map = Placeholders::new();
        let t = Instant::now();
        let out = r.redact_counted(text, &mut map);
        times.push(t.elapsed().as_nanos() as f64 / 1000.0);
        found = out.counts.total();
        std::hint::black_box(out);
    }
    times.sort_by(f64::total_cmp);
    let p = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    (p(0.50), p(0.99), times[times.len() - 1], found)
}

fn main() {
    let r = Redactor::from_env().expect("REDACT settings");
    let iterations = 20_000;
    for (name, first, seed) in
        [("typical", WITH_VALUES, LOOK_ALIKES), ("look-alikes only", "", LOOK_ALIKES), ("dense", "", WITH_VALUES)]
    {
        let text = two_kb(first, seed);
        measure(&r, &text, 500); // warm-up (the phone library builds its regex cache lazily)
        let (p50, p99, max, found) = measure(&r, &text, iterations);
        println!(
            "{name}: {} bytes, {found} values replaced, {iterations} runs: p50 {p50:.1} µs, p99 {p99:.1} µs, max {max:.1} µs",
            text.len()
        );
    }
}
