//! A demo that needs no account: runs the real listener and webhook (in this process, built as
//! their binaries build them) on loopback against in-process stand-ins for Autoplay (the bundled sample stream), Crisp and the LLM, sends a
//! visitor question, and shows the answer and the prompt it was grounded in.
//!
//! `cargo run --release --bin demo`; with `--llm-base-url` a real OpenAI-compatible server
//! writes the answers (the stand-in then forwards to it, still recording the prompt).

mod answer;
mod log;
mod standins;

use ::standins::apps::{self, Running};
use ::standins::llm::{Llm, LlmCall, Upstream};
use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use serde_json::{Value, json};
use standins::CallKind;
use std::future::Future;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const WEBHOOK_SECRET: &str = "demo-secret";
/// The Crisp conversation (session) the visitor writes in.
const CRISP_SESSION: &str = "session_demo";
/// What the webhook posts when the LLM cannot answer (its default `FALLBACK_MESSAGE`).
const WEBHOOK_FALLBACK: &str = "Thanks for your message! A teammate will get back to you shortly.";
const HOOK_SAMPLE: &str = include_str!("../../../tests/fixtures/crisp/message-send-text.json");

/// Runs the listener and the webhook on loopback with the bundled sample stream and local
/// stand-ins for Crisp and the LLM, sends a visitor question, and prints the answer and the
/// prompt it was grounded in. No account, nothing leaves the machine (unless --llm-base-url).
#[derive(Parser)]
#[command(name = "demo", version, about, long_about = None)]
struct Cli {
    /// The visitor's question, sent as a Crisp `message:send` hook.
    #[arg(long, default_value = "How do I change my plan?", value_name = "TEXT")]
    question: String,
    /// A real OpenAI-compatible server, e.g. http://127.0.0.1:8081/v1; without it a
    /// deterministic stand-in answers.
    #[arg(long, env = "DEMO_LLM_BASE_URL", value_name = "URL")]
    llm_base_url: Option<String>,
    /// API key for --llm-base-url.
    #[arg(long, env = "DEMO_LLM_API_KEY", default_value = "none", hide_env_values = true, value_name = "KEY")]
    llm_api_key: String,
    /// Model name sent to --llm-base-url.
    #[arg(long, env = "DEMO_LLM_MODEL", default_value = "gpt-4o-mini", value_name = "MODEL")]
    llm_model: String,
    /// Keep the working directory (event_data.txt, the context store, the logs) afterwards.
    #[arg(long)]
    keep: bool,
}

/// Time limits, longer with a real LLM.
struct Limits {
    /// For the binaries to start and the listener to write the sample.
    start: Duration,
    /// For the listener's summary of the first five actions (the demo goes on without it).
    summary: Duration,
    /// For the answer to reach Crisp.
    answer: Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("demo: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let dir = tempfile::Builder::new().prefix("crisp-agent-demo-").tempdir().context("cannot create a temp dir")?;
    let keep = cli.keep;
    let outcome = tokio::select! {
        outcome = demo(cli, dir.path()) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    match outcome {
        Ok(()) if keep => {
            println!("working directory kept: {}", dir.keep().display());
            Ok(())
        }
        Ok(()) => Ok(()),
        Err(e) => {
            let kept = dir.keep();
            Err(anyhow!("{e:#} (files and logs kept in {})", kept.display()))
        }
    }
}

async fn demo(cli: Cli, dir: &Path) -> Result<()> {
    let upstream_url = cli.llm_base_url.as_deref().map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned);
    let limits = match upstream_url {
        None => {
            Limits { start: Duration::from_secs(30), summary: Duration::from_secs(15), answer: Duration::from_secs(60) }
        }
        Some(_) => Limits {
            start: Duration::from_secs(30),
            summary: Duration::from_secs(120),
            answer: Duration::from_secs(180),
        },
    };
    let upstream = match &upstream_url {
        None => None,
        Some(url) => {
            let parsed = reqwest::Url::parse(url).map_err(|e| anyhow!("--llm-base-url {url:?} is not a URL: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("--llm-base-url must be an http(s) URL such as http://127.0.0.1:8081/v1");
            }
            let http = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(170))
                .build()
                .context("cannot build the HTTP client")?;
            Some(Upstream { base_url: url.clone(), api_key: cli.llm_api_key.trim().to_owned(), http })
        }
    };

    println!(
        "== crisp-agent demo: no account needed; Autoplay, Crisp{} are loopback stand-ins ==",
        if upstream_url.is_some() { "" } else { " and the LLM" }
    );
    println!(
        "working directory: {}{}",
        dir.display(),
        if cli.keep { "" } else { " (removed at the end; --keep keeps it)" }
    );

    // Stand-ins.
    let llm_stand_in = standins::llm(upstream);
    let crisp_stand_in = standins::crisp();
    let autoplay = standins::autoplay().await;
    let llm = standins::serve(llm_stand_in.router()).await?;
    let crisp = standins::serve(crisp_stand_in.router()).await?;
    println!("stand-in Autoplay stream: {} (bundled sample, then heartbeats)", autoplay.url);
    match &upstream_url {
        None => {
            println!("stand-in LLM:             http://{llm}/v1 (deterministic; --llm-base-url uses a real server)")
        }
        Some(url) => println!(
            "stand-in LLM:             http://{llm}/v1, forwarding to {url} (model {}) and recording the prompts",
            cli.llm_model
        ),
    }
    println!("stand-in Crisp API:       http://{crisp}/v1");

    // The listener and the webhook, sharing the activity file and DATA_DIR.
    let data_dir = dir.join("data");
    let event_data = dir.join("event_data.txt");
    let log = dir.join("demo.log");
    log::log_to(&log)?;
    // Both apps log into demo.log, not into logs of their own.
    apps::log_to_global_subscriber();
    let common = [
        ("OPENAI_BASE_URL", format!("http://{llm}/v1")),
        ("OPENAI_API_KEY", "demo".to_owned()),
        ("OPENAI_MODEL", cli.llm_model.clone()),
        ("DATA_DIR", data_dir.display().to_string()),
        ("EVENT_DATA_PATH", event_data.display().to_string()),
    ];
    let mut listener_env = common.to_vec();
    listener_env.extend([("STREAM_URL", autoplay.url.clone()), ("SUMMARY_THRESHOLD", "5".into())]);
    let mut webhook_env = common.to_vec();
    webhook_env.extend([
        ("WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
        ("CRISP_API_BASE_URL", format!("http://{crisp}/v1")),
        ("CRISP_TOKEN_IDENTIFIER", "demo".into()),
        ("CRISP_TOKEN_KEY", "demo".into()),
        ("WEBSITE_ID", standins::WEBSITE_ID.into()),
        ("BIND_ADDR", "127.0.0.1:0".to_owned()),
        ("KNOWLEDGE_DIR", write_help_center(dir)?.display().to_string()),
    ]);
    let listener = apps::listener(&listener_env).await?;
    let webhook = apps::webhook(&webhook_env).await?;
    let bind = webhook.addr.context("the webhook has an address")?;
    let mut procs = [listener, webhook];
    println!("started the listener and the webhook (http://{bind}); their log: demo.log");

    // Wait for the webhook to answer /health and the listener to write the whole sample, in the
    // file and in the context store the webhook reads.
    let titles = standins::sample_titles();
    let last_title = titles.last().cloned().unwrap_or_default();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let health = format!("http://{bind}/health");
    wait_until(&mut procs, &log, limits.start, "the webhook to answer GET /health", || async {
        http.get(&health).send().await.is_ok_and(|r| r.status().is_success())
    })
    .await?;
    wait_until(&mut procs, &log, limits.start, "the listener to write the sample stream to event_data.txt", || async {
        let text = read(&event_data);
        titles.iter().all(|title| text.contains(&format!("Action: {title}\n")))
            && store_contains(&data_dir, &serde_json::to_string(&last_title).unwrap_or_default())
    })
    .await?;
    let summarised = wait_until(&mut procs, &log, limits.summary, "the listener's summary", || async {
        summary_failure(&llm_stand_in).is_some()
            || read(&event_data).contains("=== SUMMARY ===") && store_contains(&data_dir, "\"k\":\"summary\"")
    })
    .await;
    match (summarised, summary_failure(&llm_stand_in)) {
        (Ok(()), Some(failure)) => {
            println!("the listener wrote {} actions; its summary request failed ({failure}), going on", titles.len())
        }
        (Ok(()), None) => println!("the listener wrote {} actions and a summary (SUMMARY_THRESHOLD=5)", titles.len()),
        (Err(e), _) if e.is::<TimedOut>() => println!(
            "the listener wrote {} actions; its summary did not come within {} s, going on without it",
            titles.len(),
            limits.summary.as_secs()
        ),
        (Err(e), _) => return Err(e),
    }
    section("event_data.txt (written by the listener)");
    print!("{}", read(&event_data));

    // The visitor asks.
    section("the visitor asks in the chat (Crisp message:send hook -> POST /crisp/hooks)");
    println!("{}", cli.question);
    let hook = hook_body(&cli.question)?;
    let response = http
        .post(format!("http://{bind}/crisp/hooks?key={WEBHOOK_SECRET}"))
        .json(&hook)
        .send()
        .await
        .context("cannot POST the hook to the webhook")?;
    if !response.status().is_success() {
        bail!("the webhook refused the hook: HTTP {}", response.status());
    }
    let answered = wait_until(&mut procs, &log, limits.answer, "the answer to be posted to Crisp", || async {
        !crisp_stand_in.log().posted.is_empty()
    })
    .await;
    if let Err(e) = answered {
        let llm_failure = last_reply_call(&llm_stand_in).and_then(|call| call.answer.err());
        return Err(match llm_failure {
            Some(failure) => e.context(format!("the LLM did not answer: {failure}")),
            None => e,
        });
    }
    let reply_call = last_reply_call(&llm_stand_in).context("the webhook answered without asking the LLM")?;

    section("the prompt the webhook sent to the LLM");
    println!(
        "(the webhook linked Crisp conversation {CRISP_SESSION} to Autoplay session {} through the \
         autoplay_session_id in the conversation's session data, and read that visitor's activity from DATA_DIR)\n",
        standins::AUTOPLAY_SESSION
    );
    print_prompt(reply_call.request.as_ref().unwrap_or(&Value::Null));
    let crisp_log = crisp_stand_in.log();
    let posted = crisp_log.posted.iter().map(|p| p.text.as_str()).collect::<Vec<_>>().join("\n---\n");
    let fell_back = posted.trim() == WEBHOOK_FALLBACK;
    section(match (&upstream_url, fell_back) {
        (_, true) => "the webhook's fallback message posted to Crisp (the LLM did not answer)",
        (None, false) => "the answer posted to Crisp as an operator (written by the stand-in LLM)",
        (Some(_), false) => "the answer posted to Crisp as an operator (written by the real LLM)",
    });
    println!("{posted}");
    println!();
    let notes = crisp_log.notes.join("\n---\n");
    if !notes.is_empty() {
        section("the private note left for operators (the visitor does not see it)");
        println!("{notes}");
        println!();
    }

    // Stop both, the webhook first (it drains replies in flight).
    let [listener, webhook] = &mut procs;
    let stopped_webhook = webhook.stop(Duration::from_secs(35)).await.map_err(|e| anyhow!(e));
    let stopped_listener = listener.stop(Duration::from_secs(35)).await.map_err(|e| anyhow!(e));
    let calls = crisp_stand_in.log().calls.join(", ");
    println!("Crisp API calls seen: {calls}");
    if fell_back {
        let why = reply_call.answer.err().unwrap_or_else(|| "no reason recorded".into());
        bail!("the LLM did not answer, so the webhook posted its fallback message ({why})");
    }
    stopped_webhook?;
    stopped_listener?;
    println!("stopped the webhook and the listener cleanly (their graceful shutdown)");
    Ok(())
}

/// The waited-for thing did not happen in time (the apps are still running).
#[derive(Debug)]
struct TimedOut(String);

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TimedOut {}

/// Polls `check` every 100 ms until it holds; fails when `limit` passes or an app stops.
async fn wait_until<F, Fut>(procs: &mut [Running], log: &Path, limit: Duration, what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return Ok(());
        }
        for proc in procs.iter_mut() {
            if let Some(stopped) = proc.stopped_early() {
                bail!("{stopped} while waiting for {what}; last log line: {}", log::last_line(log));
            }
        }
        if Instant::now() > deadline {
            let last = log::last_line(log);
            let message = format!("timed out after {} s waiting for {what} (last log line: {last})", limit.as_secs());
            return Err(TimedOut(message).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Whether a session file of the context store holds `needle`.
fn store_contains(data_dir: &Path, needle: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(data_dir.join("sessions")) else { return false };
    entries.flatten().any(|entry| read(&entry.path()).contains(needle))
}

/// The Crisp docs' `message:send` example, for the demo's website and conversation.
fn hook_body(question: &str) -> Result<Value> {
    let mut hook: Value = serde_json::from_str(HOOK_SAMPLE).context("bundled hook sample")?;
    hook["website_id"] = json!(standins::WEBSITE_ID);
    let data = hook.get_mut("data").and_then(Value::as_object_mut).context("bundled hook sample has no data")?;
    data.insert("website_id".into(), json!(standins::WEBSITE_ID));
    data.insert("session_id".into(), json!(CRISP_SESSION));
    data.insert("content".into(), json!(question));
    if let Some(user) = data.get_mut("user").and_then(Value::as_object_mut) {
        user.insert("user_id".into(), json!(CRISP_SESSION));
    }
    Ok(hook)
}

/// What went wrong with the first summary request, if it failed.
fn summary_failure(llm: &Llm) -> Option<String> {
    llm.calls().into_iter().find(|call| standins::kind_of(call) == CallKind::Summary)?.answer.err()
}

fn last_reply_call(llm: &Llm) -> Option<LlmCall> {
    llm.calls().into_iter().rev().find(|call| standins::kind_of(call) == CallKind::Reply)
}

fn section(title: &str) {
    println!("\n===== {title} =====");
}

/// Each message of a chat request as `[role]` and its text, then the sampling settings.
fn print_prompt(request: &Value) {
    for message in request.get("messages").and_then(Value::as_array).into_iter().flatten() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("?");
        let content = message.get("content").and_then(Value::as_str).unwrap_or_default();
        println!("[{role}]\n{}\n", content.trim_end());
    }
    let setting = |key: &str| request.get(key).map_or_else(|| "-".to_owned(), Value::to_string);
    println!(
        "(model {}, temperature {}, max_tokens {})",
        setting("model"),
        setting("temperature"),
        setting("max_tokens")
    );
}

/// The demo app's help center (a handful of articles), written into the demo's folder: the
/// webhook answers from it (`KNOWLEDGE_DIR`).
const HELP_CENTER: [(&str, &str); 6] = [
    ("change-plan.md", include_str!("../help/change-plan.md")),
    ("invoices.md", include_str!("../help/invoices.md")),
    ("payment-method.md", include_str!("../help/payment-method.md")),
    ("pricing.md", include_str!("../help/pricing.md")),
    ("dashboard.md", include_str!("../help/dashboard.md")),
    ("export-data.html", include_str!("../help/export-data.html")),
];

fn write_help_center(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let help = dir.join("help");
    std::fs::create_dir_all(&help).context("cannot create the help center folder")?;
    for (name, text) in HELP_CENTER {
        std::fs::write(help.join(name), text).with_context(|| format!("cannot write {name}"))?;
    }
    Ok(help)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_is_a_visitor_text_for_the_demo_site() {
        let hook = hook_body("Where is my invoice?").unwrap();
        assert_eq!(hook["event"], "message:send");
        assert_eq!(hook["website_id"], standins::WEBSITE_ID);
        assert_eq!(hook["data"]["website_id"], standins::WEBSITE_ID);
        assert_eq!(hook["data"]["session_id"], CRISP_SESSION);
        assert_eq!(hook["data"]["content"], "Where is my invoice?");
        assert_eq!(hook["data"]["from"], "user");
        assert_eq!(hook["data"]["type"], "text");
    }
}
