//! Load driver and measurements for bench/run.sh.
//!
//! `bench-drive hooks`: sends N visitor messages (distinct conversations) to the webhook, waits
//! until the Crisp stub received N replies, and computes per reply
//! overhead = (Crisp received the reply − hook sent) − (LLM answer sent − LLM request received).
//!
//! `bench-drive wait-file`: waits until a file reaches a byte count and prints the time since
//! the stream stub's first connection after the last `/_reset`.
//!
//! Results are printed as `R key=value` lines (for the script) after a human summary.

use bench::{WEBSITE_ID, mono_ns, percentile};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
}

const USAGE: &str = "usage:
  bench-drive hooks --url HOOK_URL --crisp http://127.0.0.1:PORT [--n 1000] [--rate 200 (per s; 0 = all at once)]
                    [--prefix p] [--timeout-secs 60] [--raw-out FILE]
  bench-drive wait-file --path FILE --bytes N --crisp http://127.0.0.1:PORT [--timeout-secs 120]
  bench-drive repeat --url URL [--body-file FILE (POST; else GET)] [--n 2000] [--concurrency 8]
  bench-drive free-port";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("hooks") => hooks(&args).await,
        Some("wait-file") => wait_file(&args).await,
        Some("repeat") => repeat(&args).await,
        Some("free-port") => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            println!("{}", listener.local_addr()?.port());
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}

fn ms(ns: f64) -> f64 {
    ns / 1e6
}

struct Dist {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

fn dist(mut values: Vec<f64>) -> Dist {
    values.sort_by(f64::total_cmp);
    Dist {
        p50: percentile(&values, 50.0),
        p90: percentile(&values, 90.0),
        p99: percentile(&values, 99.0),
        max: values.last().copied().unwrap_or(f64::NAN),
    }
}

fn print_dist(key: &str, label: &str, d: &Dist) {
    println!(
        "  {label:<44} p50 {:>9.3} ms  p90 {:>9.3} ms  p99 {:>9.3} ms  max {:>9.3} ms",
        d.p50, d.p90, d.p99, d.max
    );
    println!("R {key}_p50_ms={:.3}", d.p50);
    println!("R {key}_p90_ms={:.3}", d.p90);
    println!("R {key}_p99_ms={:.3}", d.p99);
    println!("R {key}_max_ms={:.3}", d.max);
}

async fn get_stats(client: &reqwest::Client, crisp: &str) -> anyhow::Result<Value> {
    Ok(client.get(format!("{crisp}/_stats")).send().await?.error_for_status()?.json().await?)
}

async fn hooks(args: &[String]) -> anyhow::Result<()> {
    let url = arg(args, "--url", "");
    let crisp = arg(args, "--crisp", "");
    anyhow::ensure!(!url.is_empty() && !crisp.is_empty(), "{USAGE}");
    let n: usize = arg(args, "--n", "1000").parse()?;
    let rate: f64 = arg(args, "--rate", "200").parse()?;
    let prefix = arg(args, "--prefix", "p");
    let timeout = Duration::from_secs(arg(args, "--timeout-secs", "60").parse()?);
    let raw_out = arg(args, "--raw-out", "");

    let client = reqwest::Client::builder().pool_max_idle_per_host(usize::MAX).build()?;
    let bodies: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let session = format!("session_{prefix}_{i}");
            let body = json!({
                "website_id": WEBSITE_ID,
                "event": "message:send",
                "data": {
                    "website_id": WEBSITE_ID,
                    "session_id": session,
                    "type": "text",
                    "content": format!("bench-{prefix}-{i}"),
                    "from": "user",
                    "origin": "chat",
                    "stamped": true,
                    "timestamp": 1_700_000_000_000u64 + i as u64,
                    "fingerprint": 1_000_000u64 + i as u64,
                    "user": {"nickname": format!("visitor{i}"), "user_id": session},
                },
                "timestamp": 1_700_000_000_000u64 + i as u64,
            });
            (session, serde_json::to_vec(&body).expect("serialize"))
        })
        .collect();

    // Send: paced at `rate` per second, or all at once.
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for (i, (_, body)) in bodies.iter().enumerate() {
        if rate > 0.0 {
            tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / rate)).into()).await;
        }
        let client = client.clone();
        let url = url.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let sent = mono_ns();
            let response = client.post(&url).header("content-type", "application/json").body(body).send().await;
            let acked = mono_ns();
            let status = match response {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let _ = r.bytes().await;
                    status
                }
                Err(_) => 0,
            };
            (sent, acked, status)
        }));
    }
    let mut sent = Vec::with_capacity(n);
    for task in tasks {
        sent.push(task.await?);
    }
    let send_secs = start.elapsed().as_secs_f64();
    let non_200 = sent.iter().filter(|(_, _, s)| *s != 200).count();

    // Wait for the replies.
    let deadline = Instant::now() + timeout;
    let session_prefix = format!("session_{prefix}_");
    let stats = loop {
        let stats = get_stats(&client, &crisp).await?;
        let answered = stats["messages"]
            .as_array()
            .map_or(0, |m| m.iter().filter(|e| e[0].as_str().is_some_and(|s| s.starts_with(&session_prefix))).count());
        if answered >= n || Instant::now() > deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let all_done_secs = start.elapsed().as_secs_f64();

    let mut arrivals: HashMap<String, Vec<u64>> = HashMap::new();
    for m in stats["messages"].as_array().into_iter().flatten() {
        if let (Some(s), Some(t)) = (m[0].as_str(), m[1].as_u64()) {
            arrivals.entry(s.to_owned()).or_default().push(t);
        }
    }
    let mut llm: HashMap<String, (u64, u64)> = HashMap::new();
    for l in stats["llm"].as_array().into_iter().flatten() {
        if let (Some(tag), Some(a), Some(b)) = (l[0].as_str(), l[1].as_u64(), l[2].as_u64()) {
            llm.insert(tag.to_owned(), (a, b));
        }
    }
    let mut answered = 0;
    let mut extra_replies = 0;
    let (mut ack, mut e2e, mut overhead, mut before_llm, mut after_llm, mut llm_time) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut raw = String::from("i,sent_ns,acked_ns,status,llm_req_ns,llm_resp_ns,crisp_msg_ns\n");
    for (i, ((session, _), (t_sent, t_acked, status))) in bodies.iter().zip(&sent).enumerate() {
        ack.push(ms((t_acked - t_sent) as f64));
        let arrival = arrivals.get(session).and_then(|v| v.iter().min().copied());
        extra_replies += arrivals.get(session).map_or(0, |v| v.len().saturating_sub(1));
        let l = llm.get(&format!("bench-{prefix}-{i}")).copied();
        raw.push_str(&format!(
            "{i},{t_sent},{t_acked},{status},{},{},{}\n",
            l.map_or(0, |l| l.0),
            l.map_or(0, |l| l.1),
            arrival.unwrap_or(0)
        ));
        if let (Some(arrival), Some((req, resp))) = (arrival, l) {
            answered += 1;
            let e = arrival as f64 - *t_sent as f64;
            let l = resp as f64 - req as f64;
            e2e.push(ms(e));
            llm_time.push(ms(l));
            overhead.push(ms(e - l));
            before_llm.push(ms(req as f64 - *t_sent as f64));
            after_llm.push(ms(arrival as f64 - resp as f64));
        }
    }
    if !raw_out.is_empty() {
        std::fs::write(&raw_out, raw)?;
    }
    let mode = if rate > 0.0 { format!("paced {rate}/s") } else { "burst (all at once)".into() };
    println!("hooks: {n} visitor messages, {mode}, sent in {send_secs:.2} s, all replies by {all_done_secs:.2} s");
    println!(
        "  answered (Crisp POST message arrivals)       {answered}/{n}; extra replies {extra_replies}; non-200 acks {non_200}"
    );
    println!(
        "  Crisp stub calls: compose {}, meta {}, messages {}, other LLM calls {}",
        stats["compose"], stats["meta"], stats["history"], stats["llm_other"]
    );
    println!("R answered={answered}");
    println!("R n={n}");
    println!("R extra_replies={extra_replies}");
    println!("R non_200={non_200}");
    println!("R all_done_secs={all_done_secs:.2}");
    print_dist("ack", "hook acknowledgement", &dist(ack));
    print_dist("e2e", "hook sent -> Crisp got the reply", &dist(e2e));
    print_dist("llm", "LLM time (stub: request in -> answer out)", &dist(llm_time));
    print_dist("overhead", "overhead = end-to-end - LLM time", &dist(overhead));
    print_dist("pre_llm", "  of which hook sent -> LLM request in", &dist(before_llm));
    print_dist("post_llm", "  of which LLM answer out -> Crisp got it", &dist(after_llm));
    anyhow::ensure!(answered == n, "only {answered} of {n} messages were answered within {timeout:?}");
    Ok(())
}

async fn wait_file(args: &[String]) -> anyhow::Result<()> {
    let path = arg(args, "--path", "");
    let bytes: u64 = arg(args, "--bytes", "0").parse()?;
    let crisp = arg(args, "--crisp", "");
    anyhow::ensure!(!path.is_empty() && bytes > 0 && !crisp.is_empty(), "{USAGE}");
    let timeout = Duration::from_secs(arg(args, "--timeout-secs", "120").parse()?);
    let client = reqwest::Client::new();
    let path = Arc::new(path);
    let waited = {
        let path = Arc::clone(&path);
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + timeout;
            loop {
                let len = std::fs::metadata(&*path).map(|m| m.len()).unwrap_or(0);
                if len >= bytes {
                    return Ok((mono_ns(), len));
                }
                if Instant::now() > deadline {
                    return Err(len);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
        .await?
    };
    let stats = get_stats(&client, &crisp).await?;
    let connects: Vec<u64> = stats["sse_connects"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
    match waited {
        Ok((done, len)) => {
            let first = *connects.first().ok_or_else(|| anyhow::anyhow!("the stream stub saw no connection"))?;
            let elapsed = ms(done.saturating_sub(first) as f64);
            println!(
                "{path}: {len} bytes (expected {bytes}) {elapsed:.1} ms after connecting; connections {}",
                connects.len()
            );
            println!("R elapsed_ms={elapsed:.1}");
            println!("R bytes={len}");
            println!("R connects={}", connects.len());
            Ok(())
        }
        Err(len) => {
            println!("R elapsed_ms=timeout");
            println!("R bytes={len}");
            println!("R connects={}", connects.len());
            anyhow::bail!("{path}: only {len} of {bytes} bytes after {timeout:?}")
        }
    }
}

/// Sends exactly `n` requests, `concurrency` at a time (a fixed amount of work, for profiles).
async fn repeat(args: &[String]) -> anyhow::Result<()> {
    let url = arg(args, "--url", "");
    anyhow::ensure!(!url.is_empty(), "{USAGE}");
    let body_file = arg(args, "--body-file", "");
    let body = if body_file.is_empty() { None } else { Some(std::fs::read(&body_file)?) };
    let n: usize = arg(args, "--n", "2000").parse()?;
    let concurrency: usize = arg(args, "--concurrency", "8").parse()?;
    let client = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, url, body, next) = (client.clone(), url.clone(), body.clone(), Arc::clone(&next));
        workers.push(tokio::spawn(async move {
            let mut not_ok = 0usize;
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let request = match &body {
                    Some(b) => client.post(&url).header("content-type", "application/json").body(b.clone()),
                    None => client.get(&url),
                };
                match request.send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                    }
                    _ => not_ok += 1,
                }
            }
            not_ok
        }));
    }
    let mut not_ok = 0;
    for w in workers {
        not_ok += w.await?;
    }
    println!("{n} requests in {:.2} s, {not_ok} not 2xx", start.elapsed().as_secs_f64());
    println!("R not_ok={not_ok}");
    Ok(())
}
