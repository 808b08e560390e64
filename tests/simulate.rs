//! `webhook simulate`: the shipped scenarios pass against an LLM stand-in, a failing
//! expectation exits 1 and is a JUnit failure, a malformed file exits 2 naming its line, an
//! unreachable LLM exits 2 (the binary, where the exit status is the point); the scenario's
//! activity reaches the LLM request and a decoy's does not, and `--record` writes a scenario
//! that `simulate` runs (in-process).

use activity::action::{ActionRecord, BatchRecord};
use serde_json::{Value, json};
use standins::bin;
use standins::crisp::{Crisp, CrispSettings, History};
use standins::llm::{Answer, Llm, Reply, last_user_message};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use webhook::config::{Cli, SimulateArgs};

/// The names of the tools a request offers.
fn tools_of(request: &Value) -> Vec<String> {
    request["tools"]
        .as_array()
        .map(|tools| tools.iter().filter_map(|t| t.pointer("/function/name")?.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// The `[n] Action: TITLE` titles of an activity block.
fn titles_in(activity: &str) -> Vec<&str> {
    activity
        .lines()
        .filter_map(|line| line.strip_prefix('[')?.split_once("] Action: ").map(|(_, title)| title.trim()))
        .collect()
}

/// A deterministic model: a judge's verdict (every capitalised word of the rubric after its
/// first must be in the answer), a hand-off through the tool when the visitor asks for a
/// person, otherwise an answer naming every title of the visitor's activity block and the
/// question.
fn stand_in(request: &Value) -> Reply {
    let tools = tools_of(request);
    let user = last_user_message(request);
    if tools.iter().any(|t| t == "verdict") || user.starts_with("Rubric: ") {
        let rubric = user.lines().next().unwrap_or_default().trim_start_matches("Rubric: ");
        let answer = user.split_once("Bot's answer:\n").map_or("", |(_, a)| a).to_lowercase();
        let words: Vec<String> = rubric
            .split_whitespace()
            .skip(1)
            .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_owned())
            .filter(|w| w.chars().next().is_some_and(char::is_uppercase))
            .collect();
        let pass = words.iter().all(|w| answer.contains(&w.to_lowercase()));
        return Reply::Text(json!({"pass": pass, "reason": format!("looked for {words:?}")}).to_string());
    }
    let (activity, question) = user.rsplit_once("User question: ").unwrap_or(("", user));
    let question = question.trim();
    if tools.iter().any(|t| t == "hand_off_to_human") && answer::handoff::asks_for_a_person(question) {
        return Reply::Tool { name: "hand_off_to_human".into(), arguments: r#"{"reason":"asked"}"#.into() };
    }
    let titles = titles_in(activity);
    if titles.is_empty() {
        return Reply::Text(format!("About \"{question}\": open the page it concerns and follow the steps there."));
    }
    let quoted: Vec<String> = titles.iter().map(|t| format!("\"{t}\"")).collect();
    Reply::Text(format!("I can see you did {}. About \"{question}\": carry on from there.", quoted.join(", ")))
}

/// The stand-in LLM on a loopback port: its `OPENAI_BASE_URL` and its record of calls.
async fn llm() -> (String, Arc<Llm>) {
    let llm = Llm::new(Answer::LocalReply(Box::new(stand_in)), true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = llm.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://{addr}/v1"), llm)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `webhook simulate ARGS` (the binary) in `cwd` with exactly `env`.
async fn simulate_binary(cwd: &Path, env: &[(&str, String)], args: &[&str]) -> Output {
    let exe = bin!("webhook").to_owned();
    let (cwd, env) = (cwd.to_owned(), env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<Vec<_>>());
    let args: Vec<String> = std::iter::once("simulate".to_owned()).chain(args.iter().map(|a| a.to_string())).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env)
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn llm_env(base_url: &str) -> Vec<(&'static str, String)> {
    vec![("OPENAI_BASE_URL", base_url.to_owned()), ("OPENAI_API_KEY", "sk-test".into())]
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_scenarios_pass_against_the_stand_in() {
    let (base_url, llm) = llm().await;
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let json_path = dir.path().join("result.json");
    let scenarios = repo().join("scenarios");
    let args = [
        scenarios.to_str().unwrap(),
        "--repeat",
        "2",
        "--junit",
        junit.to_str().unwrap(),
        "--json",
        json_path.to_str().unwrap(),
    ];
    let output = simulate_binary(dir.path(), &llm_env(&base_url), &args).await;
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(0), "{shown}");
    let count = std::fs::read_dir(&scenarios).unwrap().count();
    assert!(count >= 10, "at least 10 shipped scenarios");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(&format!("pass^2 = 1.00 ({count}/{count} scenarios")), "{shown}");
    assert!(stdout.contains("pass@1 = 1.00"), "{shown}");
    let junit = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(junit.matches("<testcase").count(), count, "{junit}");
    assert!(!junit.contains("<failure"), "{junit}");
    let result: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(result["pass_hat_k"], 1.0);
    // The judge's request and verdict are in the result.
    let judged: Vec<&Value> = result["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["runs"].as_array().unwrap())
        .flat_map(|r| r["turns"].as_array().unwrap())
        .flat_map(|t| t["checks"].as_array().unwrap())
        .filter(|c| c.get("judge").is_some())
        .collect();
    assert_eq!(judged.len(), 2, "one judged turn, two runs");
    assert_eq!(judged[0]["judge"]["verdict"]["pass"], true, "{}", judged[0]);
    assert!(judged[0]["judge"]["request"]["messages"][1]["content"].as_str().unwrap().contains("Export CSV"));
    // Hand-offs went through the tool: the requests for a person were answered by it.
    assert!(llm.calls().iter().any(|c| c.answer.as_deref().is_ok_and(|a| a.contains("hand_off_to_human"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_expectation_exits_1_and_is_a_junit_failure() {
    let (base_url, _llm) = llm().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("fails.yaml"),
        "name: expects a kangaroo\nactivity: [{at: 5, title: \"Click Export CSV button\"}]\nturns:\n  - visitor: \"How do I export?\"\n    expect:\n      mentions: [\"(?i)kangaroo\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("passes.yaml"),
        "name: passes\nturns: [{visitor: hello, expect: {handoff: false}}]\n",
    )
    .unwrap();
    let args = [".", "--repeat", "1", "--junit", "junit.xml", "--min-pass", "0.6"];
    let output = simulate_binary(dir.path(), &llm_env(&base_url), &args).await;
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("FAIL  0/1  expects a kangaroo"), "{shown}");
    assert!(stdout.contains("run 1, turn 1: mentions: (?i)kangaroo: no match in the answer"), "{shown}");
    assert!(stdout.contains("Click Export CSV button"), "the answer's beginning is shown: {shown}");
    assert!(stdout.contains("pass^1 = 0.50"), "{shown}");
    let junit = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testcase").count(), 2, "{junit}");
    assert_eq!(junit.matches("<failure").count(), 1, "{junit}");
    assert!(junit.contains("name=\"expects a kangaroo\"") && junit.contains("kangaroo"), "{junit}");
    // The same run with a bar it clears exits 0.
    let lenient = simulate_binary(dir.path(), &llm_env(&base_url), &[".", "--repeat", "1", "--min-pass", "0.5"]).await;
    assert_eq!(lenient.status.code(), Some(0), "{}", text(&lenient));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_file_or_an_unreachable_llm_exits_2() {
    let (base_url, llm) = llm().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.yaml");
    std::fs::write(&file, "name: typo\nturns:\n  - visitor: hi\n    expect: {mention: [x]}\n").unwrap();
    let output = simulate_binary(dir.path(), &llm_env(&base_url), &["typo.yaml"]).await;
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(2), "{shown}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("typo.yaml") && stderr.contains("line 4") && stderr.contains("mention"), "{shown}");
    assert!(llm.calls().is_empty(), "nothing runs");
    std::fs::write(&file, "name: fine\nturns: [{visitor: hi}]\n").unwrap();
    let nothing = standins::ClosedPort::new();
    let closed = format!("http://{}/v1", nothing.addr());
    let output = simulate_binary(dir.path(), &llm_env(&closed), &["typo.yaml"]).await;
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot reach the LLM"), "{}", text(&output));
}

fn cli(vars: &[(&str, String)]) -> Cli {
    plumbing::process::parse_vars::<Cli>(vars).unwrap()
}

fn args(paths: Vec<PathBuf>) -> SimulateArgs {
    SimulateArgs { paths, repeat: 1, min_pass: 1.0, concurrency: 2, json: None, junit: None, record: None, out: None }
}

/// The user messages of the reply requests the stand-in received.
fn reply_prompts(llm: &Llm) -> Vec<String> {
    llm.calls()
        .iter()
        .filter_map(|c| c.request.as_ref())
        .filter(|r| tools_of(r).iter().any(|t| t == "hand_off_to_human"))
        .map(|r| last_user_message(r).to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scenarios_activity_reaches_the_llm_and_a_decoys_does_not() {
    let (base_url, llm) = llm().await;
    let status = webhook::simulate::command(
        &cli(&llm_env(&base_url)),
        &args(vec![repo().join("scenarios/11-decoy-visitor.yaml")]),
    )
    .await;
    assert_eq!(status, 0);
    let prompts = reply_prompts(&llm);
    assert_eq!(prompts.len(), 1, "{prompts:?}");
    assert!(prompts[0].contains("[1] Action: Click Download report button"), "{}", prompts[0]);
    assert!(prompts[0].contains("Page:    https://app.example.com/reports"), "{}", prompts[0]);
    for decoy in ["Delete workspace", "Danger zone", "Cancel subscription"] {
        assert!(!prompts[0].contains(decoy), "{decoy} leaked: {}", prompts[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_conversation_is_a_scenario_that_runs() {
    const SITE: &str = "site-record";
    const CONVERSATION: &str = "session_recorded";
    // Crisp's history of the conversation, linked to an Autoplay session by its session data.
    let history = json!([
        {"type": "text", "from": "user", "content": "How do I export my invoices? I am jane.doe@example.com", "fingerprint": 1, "timestamp": 1_700_000_100_000_u64},
        {"type": "text", "from": "operator", "content": "Use Export CSV.", "fingerprint": 2, "timestamp": 1_700_000_110_000_u64},
        {"type": "note", "from": "operator", "content": "private", "fingerprint": 3},
        {"type": "text", "from": "user", "content": "Thanks. Can I talk to a human?", "fingerprint": 4, "timestamp": 1_700_000_200_000_u64},
    ]);
    let crisp = Crisp::new(CrispSettings {
        website: Some(SITE.into()),
        meta: Box::new(|_| json!({"data": {"autoplay_session_id": "ap-recorded"}})),
        history: History::Fixed(history),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let crisp_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let router = crisp.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    // The visitor's stored activity, as the listener stores it.
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let store = activity::config::StoreArgs {
        data_dir: data_dir.clone(),
        context_max_actions: 50,
        context_ttl_secs: 1_000_000_000,
        redis_url: None,
        redis_key_prefix: "unused:".into(),
    };
    let action = |title: &str, at: f64| ActionRecord {
        title: Cow::Owned(title.into()),
        canonical_url: Cow::Borrowed("https://app.example.com/billing"),
        timestamp_start: at,
        ..Default::default()
    };
    let batch = BatchRecord {
        session_id: Some(Cow::Borrowed("ap-recorded")),
        actions: vec![
            action("Page Load: Billing settings", 1_700_000_000.0),
            action("Click Export CSV button", 1_700_000_090.0),
        ],
        ..Default::default()
    };
    let writer = store.settings().unwrap().open_writer(None).unwrap();
    writer.record_batch(&batch, std::time::SystemTime::now()).await.unwrap();
    drop(writer);
    // --record, with the real Crisp settings of the environment (here the stand-in's).
    let out = dir.path().join("recorded.yaml");
    let record_env = vec![
        ("CRISP_API_BASE_URL", crisp_url),
        ("CRISP_TOKEN_IDENTIFIER", "ident".to_owned()),
        ("CRISP_TOKEN_KEY", "key".to_owned()),
        ("WEBSITE_ID", SITE.to_owned()),
        ("DATA_DIR", data_dir.display().to_string()),
    ];
    let record = SimulateArgs { record: Some(CONVERSATION.into()), out: Some(out.clone()), ..args(Vec::new()) };
    assert_eq!(webhook::simulate::command(&cli(&record_env), &record).await, 0);
    let written = std::fs::read_to_string(&out).unwrap();
    assert!(written.contains("How do I export my invoices?"), "{written}");
    assert!(written.contains("Can I talk to a human?"), "{written}");
    assert!(
        !written.contains("Use Export CSV.") && !written.contains("private"),
        "only the visitor's words: {written}"
    );
    assert!(!written.contains("jane.doe@example.com"), "redacted: {written}");
    assert!(
        written.contains("title: 'Click Export CSV button'") || written.contains("title: Click Export CSV button"),
        "{written}"
    );
    assert!(written.contains("at: 100") && written.contains("at: 10"), "seconds before the first message: {written}");
    // The scenario runs (its expectations are empty): the activity reaches the model.
    let (base_url, llm) = llm().await;
    assert_eq!(webhook::simulate::command(&cli(&llm_env(&base_url)), &args(vec![out])).await, 0);
    let prompts = reply_prompts(&llm);
    assert!(prompts.iter().any(|p| p.contains("Action: Click Export CSV button")), "{prompts:?}");
}
