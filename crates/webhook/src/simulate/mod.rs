//! `webhook simulate`: scenario simulations with pass^k, run through the real reply pipeline.
//!
//! Each run builds the real webhook [`App`] in this process, through the same
//! [`Service::settings`] and [`Service::build`] as the binary, from this process's settings
//! with a few overrides: a loopback port, a temporary `DATA_DIR` and activity file, and Crisp
//! replaced by an in-memory conversation ([`crisp::MemoryCrisp`]) served by the command itself.
//! The scenario's activity (and its decoy visitors') is written into the run's context store
//! with the listener's store writer; each turn is delivered as a Crisp `message:send` hook and
//! the run waits for what the in-memory Crisp records (the visible answer or the hand-off), then
//! checks the expectations. The LLM is the environment's (`OPENAI_*`); no Crisp credentials
//! are needed.

pub mod crisp;
pub mod judge;
pub mod record;
pub mod report;
pub mod scenario;

use crate::App;
use crate::config::{Cli, SimulateArgs};
use crate::context::ContextScope;
use activity::action::{ActionRecord, BatchRecord};
use crisp::{Conversation, MemoryCrisp};
use judge::{Judge, JudgeRecord};
use plumbing::process::{EXIT_CONFIG, Service};
use report::{Check, Report, RunResult, ScenarioResult, TurnResult};
use scenario::{ActivityItem, Loaded, Operators};
use serde_json::json;
use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How long one turn may take to be answered (the LLM's own retries included).
const TURN_LIMIT: Duration = Duration::from_secs(180);
/// How long a run's webhook may take to stop.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// `webhook simulate …`: the process's exit status.
pub async fn command(cli: &Cli, args: &SimulateArgs) -> i32 {
    if let Some(session) = &args.record {
        let out = args.out.as_deref().unwrap_or(Path::new("scenario.yaml"));
        return record::command(cli, session, out).await;
    }
    match simulate(cli, args).await {
        Ok(report) => {
            let code = if report.pass_hat_k >= args.min_pass { 0 } else { 1 };
            if code == 1 {
                println!("pass^{} {:.2} is below --min-pass {:.2}", report.repeat, report.pass_hat_k, args.min_pass);
            }
            code
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_CONFIG
        }
    }
}

/// What every run shares.
struct Shared {
    cli: Cli,
    crisp: Arc<MemoryCrisp>,
    crisp_url: String,
    judge: Judge,
    handoff_messages: [String; 2],
    fallback: Option<String>,
}

/// Loads the scenarios, runs each `--repeat` times, prints the summary and writes the files.
/// `Err`: a bad file, a bad setting or an unreachable LLM (exit 2).
async fn simulate(cli: &Cli, args: &SimulateArgs) -> Result<Report, String> {
    let scenarios = scenario::load(&args.paths).map_err(|e| e.to_string())?;
    if !(0.0..=1.0).contains(&args.min_pass) {
        return Err(format!("--min-pass must be from 0 to 1 (got {})", args.min_pass));
    }
    let crisp = MemoryCrisp::new();
    let crisp_url = crisp.serve().await.map_err(|e| format!("cannot serve the in-memory Crisp: {e}"))?;
    // The settings every run is built from, checked once: a bad one is exit 2.
    let probe_dir = tempfile::tempdir().map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    let probe = run_cli(cli, &crisp_url, "probe", probe_dir.path(), None);
    let settings = App::settings(probe).map_err(|e| e.to_string())?;
    if let Some(path) = &settings.system_prompt_path {
        std::fs::read_to_string(path)
            .map_err(|e| format!("SYSTEM_PROMPT_PATH: cannot read {}: {e}", path.display()))?;
    }
    reachable(&settings.llm).await?;
    let judge = Judge::new(&cli.openai, cli.judge_model.as_deref()).map_err(|e| e.to_string())?;
    let shared = Arc::new(Shared {
        cli: cli.clone(),
        crisp,
        crisp_url,
        judge,
        handoff_messages: [settings.handoff.message.clone(), settings.handoff.offline_message.clone()],
        fallback: settings.fallback_message.clone(),
    });
    drop(settings);
    let repeat = args.repeat as usize;
    let total = scenarios.len() * repeat;
    let mut progress = report::Progress::new(total);
    let slots = Arc::new(tokio::sync::Semaphore::new(args.concurrency as usize));
    let mut tasks = tokio::task::JoinSet::new();
    let scenarios: Vec<Arc<Loaded>> = scenarios.into_iter().map(Arc::new).collect();
    for (index, loaded) in scenarios.iter().enumerate() {
        for run in 0..repeat {
            let (shared, loaded, slots) = (Arc::clone(&shared), Arc::clone(loaded), Arc::clone(&slots));
            tasks.spawn(async move {
                let _slot = slots.acquire_owned().await;
                let result = run_once(&shared, &loaded, index, run).await;
                (index, result)
            });
        }
    }
    let mut runs: Vec<Vec<RunResult>> = vec![Vec::new(); scenarios.len()];
    while let Some(done) = tasks.join_next().await {
        let (index, result) = done.map_err(|e| format!("a run crashed: {e}"))?;
        progress.ran(&scenarios[index].scenario.name, &result);
        runs[index].push(result);
    }
    progress.finish();
    let results = scenarios
        .iter()
        .zip(runs)
        .map(|(loaded, mut runs)| {
            runs.sort_by_key(|r| r.run);
            ScenarioResult::new(loaded.scenario.name.clone(), loaded.path.display().to_string(), runs)
        })
        .collect();
    let report = Report::new(repeat, args.min_pass, shared.judge.model().to_owned(), results);
    print!("{}", report.summary());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.junit {
        std::fs::write(path, report.junit()).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(report)
}

/// The LLM answers at all (`GET /models`): a server that cannot be reached, or refuses the key,
/// is exit 2 before any run; any other answer (some servers have no `/models`) is reachable.
async fn reachable(llm: &llm::LlmClient) -> Result<(), String> {
    use llm::LlmError;
    match llm.check().await {
        Ok(()) => Ok(()),
        Err(LlmError::Status { status: 401 | 403, message, .. }) => {
            Err(format!("the LLM refused the key (OPENAI_API_KEY): {message}"))
        }
        Err(LlmError::Status { .. }) => Ok(()),
        Err(e) => Err(format!("cannot reach the LLM (OPENAI_BASE_URL): {e}")),
    }
}

/// The settings of one run's in-process webhook: this process's, with the run's own port,
/// store, website and in-memory Crisp; no Redis, metrics port, MCP or proactive offers.
fn run_cli(cli: &Cli, crisp_url: &str, website: &str, dir: &Path, knowledge: Option<&Path>) -> Cli {
    let mut cli = cli.clone();
    cli.command = None;
    cli.check = false;
    cli.bind_addr = "127.0.0.1:0".into();
    cli.store.data_dir = dir.join("data");
    cli.store.redis_url = None;
    cli.event_data_path = dir.join("event_data.txt");
    cli.context_scope = ContextScope::Session;
    cli.crisp_api_base_url = crisp_url.to_owned();
    cli.crisp_token_identifier = Some("simulation".into());
    cli.crisp_token_key = Some("simulation".into());
    cli.website_id = Some(website.to_owned());
    cli.crisp_website_id = None;
    cli.webhook_secret = Some(format!("sim{:016x}", rand::random::<u64>()));
    cli.crisp_hook_secret = None;
    cli.link_secret = None;
    cli.link_require_signed_session = false;
    cli.trust_stream_conversation_id = false;
    cli.metrics_addr = None;
    cli.mcp_signing_secret = None;
    cli.mcp_api_key = None;
    cli.proactive_triggers = String::new();
    cli.trace_dir = None;
    cli.shutdown_grace_secs = 5;
    // The scenario's help center folder, when it names one (else this environment's); indexed
    // in the run's own folder, from files only (the in-memory Crisp has no helpdesk).
    if let Some(folder) = knowledge {
        cli.knowledge.knowledge_dir = Some(folder.to_owned());
    }
    cli.knowledge.knowledge_crisp_locale = None;
    cli.knowledge.knowledge_index_dir = None;
    cli
}

/// One run of one scenario, start to finish; never panics on a failing run.
async fn run_once(shared: &Shared, loaded: &Loaded, index: usize, run: usize) -> RunResult {
    let started = Instant::now();
    let id = format!("{index}x{run}x{:08x}", rand::random::<u32>());
    let website = format!("sim{id}");
    let conversation = format!("session_sim{id}");
    let visitor = format!("sim-visitor-{id}");
    let mut result = RunResult { run: run + 1, passed: false, seconds: 0.0, error: None, turns: Vec::new() };
    let outcome = async {
        let dir = tempfile::tempdir().map_err(|e| format!("cannot make a temporary directory: {e}"))?;
        let online = loaded.scenario.operators == Operators::Online;
        shared.crisp.add_site(&website, online, json!({"autoplay_session_id": visitor}));
        let cli = run_cli(&shared.cli, &shared.crisp_url, &website, dir.path(), loaded.knowledge_dir().as_deref());
        let secret = cli.webhook_secret.clone().unwrap_or_default();
        let settings = App::settings(cli).map_err(|e| e.to_string())?;
        load_activity(&settings.store, &loaded.scenario, &visitor).await?;
        let app = App::build(settings).await.map_err(|e| e.to_string())?;
        let hooks = format!("http://{}/crisp/hooks?key={secret}", app.addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(app.run(async move {
            let _ = stopped.await;
        }));
        let turns = deliver_turns(shared, loaded, &website, &conversation, &hooks).await;
        let _ = stop.send(());
        let _ = tokio::time::timeout(STOP_LIMIT, serving).await;
        turns
    }
    .await;
    shared.crisp.remove_site(&website);
    match outcome {
        Ok(turns) => result.turns = turns,
        Err(e) => result.error = Some(e),
    }
    evaluate(shared, loaded, &mut result).await;
    result.seconds = started.elapsed().as_secs_f64();
    result
}

/// The scenario's activity and its decoys', written with the listener's store writer; each
/// action stamped `at` seconds before now (the first turn).
async fn load_activity(
    store: &activity::config::StoreSettings,
    scenario: &scenario::Scenario,
    visitor: &str,
) -> Result<(), String> {
    let writer = store.open_writer(None).map_err(|e| e.to_string())?;
    let now = SystemTime::now();
    let epoch = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let batch = |session: String, items: &[ActivityItem]| BatchRecord {
        session_id: Some(Cow::Owned(session)),
        user_id: None,
        conversation_id: None,
        actions: items.iter().enumerate().map(|(i, item)| action(item, i, epoch)).collect(),
    };
    let mut batches = vec![batch(visitor.to_owned(), &scenario.activity)];
    for (d, decoy) in scenario.other_visitors.iter().enumerate() {
        batches.push(batch(format!("{visitor}-other-{d}"), &decoy.activity));
    }
    batches.retain(|b| !b.actions.is_empty());
    writer.record_batches(&batches, now).await.map_err(|e| format!("cannot write the activity: {e}"))
}

fn action(item: &ActivityItem, index: usize, epoch: f64) -> ActionRecord<'static> {
    let at = epoch - item.at;
    let url = item.url.clone().unwrap_or_default();
    ActionRecord {
        title: Cow::Owned(item.title.clone()),
        description: Cow::Owned(format!("User did \"{}\"", item.title)),
        canonical_url: Cow::Owned(url.clone()),
        index: index as i64,
        kind: Cow::Borrowed(if item.title.starts_with("Page Load") { "pageview" } else { "click" }),
        timestamp_start: at,
        timestamp_end: at,
        raw_url: Cow::Owned(url),
    }
}

/// Delivers each turn as a `message:send` hook and waits for what the bot did.
async fn deliver_turns(
    shared: &Shared,
    loaded: &Loaded,
    website: &str,
    conversation: &str,
    hooks: &str,
) -> Result<Vec<TurnResult>, String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
    let mut turns = Vec::new();
    let mut handed_over_at: Option<usize> = None;
    for (i, turn) in loaded.scenario.turns.iter().enumerate() {
        if let Some(at) = handed_over_at {
            turns.push(TurnResult::skipped(&turn.visitor, format!("the conversation was handed over at turn {at}")));
            continue;
        }
        let started = Instant::now();
        let before = shared.crisp.conversation(website, conversation);
        let fingerprint = 1_000 + i as u64;
        shared.crisp.visitor_wrote(website, conversation, &turn.visitor, fingerprint);
        let now_ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let hook = json!({
            "website_id": website,
            "event": "message:send",
            "data": {
                "website_id": website, "session_id": conversation, "type": "text",
                "content": turn.visitor, "from": "user", "origin": "chat", "stamped": true,
                "timestamp": now_ms, "fingerprint": fingerprint,
                "user": {"nickname": "simulated visitor", "user_id": conversation}
            },
            "timestamp": now_ms
        });
        let status = http.post(hooks).json(&hook).send().await.map(|r| r.status().as_u16());
        match status {
            Ok(200) => {}
            Ok(status) => return Err(format!("turn {}: the webhook answered the hook with HTTP {status}", i + 1)),
            Err(e) => return Err(format!("turn {}: cannot deliver the hook: {e}", i + 1)),
        }
        // Done when a visible post arrived and the typing indicator was cleared after it (a
        // reply's last step, after the hand-off's note and state).
        let (texts, stops) = (before.texts.len(), before.compose_stops);
        let (after, done) = shared
            .crisp
            .wait_for(website, conversation, TURN_LIMIT, |c| c.texts.len() > texts && c.compose_stops > stops)
            .await;
        let mut result = turn_result(shared, &turn.visitor, &before, &after, started.elapsed());
        if !done {
            result.error = Some(format!("no answer within {} s", TURN_LIMIT.as_secs()));
        }
        if result.handoff {
            handed_over_at = Some(i + 1);
        }
        turns.push(result);
    }
    Ok(turns)
}

/// What the bot did in one turn: what the conversation received since `before`.
fn turn_result(
    shared: &Shared,
    visitor: &str,
    before: &Conversation,
    after: &Conversation,
    took: Duration,
) -> TurnResult {
    let texts: Vec<String> = after.texts[before.texts.len().min(after.texts.len())..].to_vec();
    let answer = texts.last().cloned();
    let states: Vec<String> = after.states[before.states.len().min(after.states.len())..].to_vec();
    let handoff = states.iter().any(|s| s == "unresolved")
        || answer.as_ref().is_some_and(|a| shared.handoff_messages.contains(a));
    let fallback = !handoff && answer.is_some() && answer == shared.fallback;
    TurnResult {
        visitor: visitor.to_owned(),
        answer,
        handoff,
        fallback,
        notes: after.notes[before.notes.len().min(after.notes.len())..].to_vec(),
        states,
        assigned: after.assigned[before.assigned.len().min(after.assigned.len())..].to_vec(),
        segments: after.segments.clone(),
        unexpected_calls: after.unexpected.clone(),
        seconds: took.as_secs_f64(),
        error: None,
        checks: Vec::new(),
    }
}

/// Checks every expectation of every turn (and the decoy rule); the run passes when all hold.
async fn evaluate(shared: &Shared, loaded: &Loaded, result: &mut RunResult) {
    let scenario = &loaded.scenario;
    let decoys = scenario.decoy_only_titles();
    let own_titles: Vec<&str> = scenario.activity.iter().map(|a| a.title.as_str()).collect();
    for (i, turn) in scenario.turns.iter().enumerate() {
        let Some(got) = result.turns.get_mut(i) else { break };
        let expect = &turn.expect;
        let mut checks = Vec::new();
        let Some(answer) = got.answer.clone() else {
            let reason = got.error.clone().unwrap_or_else(|| "no answer".into());
            checks.push(Check::failed("answer", reason));
            got.checks = checks;
            continue;
        };
        if got.fallback {
            checks.push(Check::failed("answer", "the LLM did not answer: the fallback message was sent".into()));
        }
        if let Some(want) = expect.handoff {
            let name = format!("handoff: {want}");
            checks.push(match got.handoff == want {
                true => Check::passed(name),
                false if want => Check::failed(name, "the bot answered instead of handing over".into()),
                false => Check::failed(name, "the bot handed over".into()),
            });
        }
        for pattern in &expect.mentions {
            let name = format!("mentions: {}", pattern.as_str());
            checks.push(match pattern.0.is_match(&answer) {
                true => Check::passed(name),
                false => Check::failed(name, "no match in the answer".into()),
            });
        }
        for pattern in &expect.not_mentions {
            let name = format!("not_mentions: {}", pattern.as_str());
            checks.push(match pattern.0.find(&answer) {
                None => Check::passed(name),
                Some(m) => Check::failed(name, format!("matched {:?}", m.as_str())),
            });
        }
        if let Some(max) = expect.max_words {
            let words = answer.split_whitespace().count();
            let name = format!("max_words: {max}");
            checks.push(match words <= max {
                true => Check::passed(name),
                false => Check::failed(name, format!("{words} words")),
            });
        }
        let lower = answer.to_lowercase();
        let leaked: Vec<&String> = decoys.iter().filter(|t| lower.contains(&t.to_lowercase())).collect();
        checks.push(match leaked.is_empty() {
            true => Check::passed("no other visitor's activity"),
            false => Check::failed("no other visitor's activity", format!("names {leaked:?}, only another visitor's")),
        });
        if let Some(rubric) = &expect.judge {
            let record: JudgeRecord = shared.judge.verdict(rubric, &turn.visitor, &answer, &own_titles).await;
            checks.push(Check::judged(record));
        }
        got.checks = checks;
    }
    result.passed = result.error.is_none()
        && result.turns.len() == scenario.turns.len()
        && result.turns.iter().all(|t| t.checks.iter().all(|c| c.passed));
}
