//! The demo end to end: the real listener and webhook (run in the demo's process through their
//! builders) against its stand-ins, the LLM included.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the stand-in LLM answers for the default question and the bundled sample.
const ANSWER: &str = "I can see you just did \"Page Load: Billing settings\" on \
                      https://app.example.com/settings/billing — here is how to change your plan:";

fn run_demo(args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_demo"));
    cmd.args(args)
        .env_remove("DEMO_LLM_BASE_URL")
        .env_remove("DEMO_LLM_API_KEY")
        .env_remove("DEMO_LLM_MODEL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let output = cmd.output().expect("run the demo");
    // The demo itself takes seconds; the bound is generous for a loaded machine.
    assert!(started.elapsed() < Duration::from_secs(300));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_demo_shows_an_answer_grounded_in_the_sample_activity() {
    let (ok, stdout, stderr) = run_demo(&[]);
    assert!(ok, "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    // The answer, posted to the stand-in Crisp.
    assert!(stdout.contains(ANSWER), "{stdout}");
    // The prompt it was grounded in: the activity block with the sample's actions and summary.
    assert!(stdout.contains("## Current User Activity"), "{stdout}");
    assert!(stdout.contains("[4] Action: Click Upgrade plan button\n"), "{stdout}");
    assert!(stdout.contains("=== SUMMARY ==="), "{stdout}");
    assert!(stdout.contains("User question: How do I change my plan?"), "{stdout}");
    // event_data.txt as the listener wrote it, with the bundled fixture's actions.
    assert!(stdout.contains("[0] Action: Page Load: Dashboard\n"), "{stdout}");
    assert!(stdout.contains("stopped the webhook and the listener cleanly"), "{stdout}");
}

#[test]
fn the_question_can_be_changed() {
    let (ok, stdout, stderr) = run_demo(&["--question", "Where can I find my invoices?"]);
    assert!(ok, "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("User question: Where can I find my invoices?"), "{stdout}");
    assert!(stdout.contains("here is how to find your invoices:"), "{stdout}");
}

#[test]
fn an_unreachable_llm_server_fails_with_one_line() {
    // A port nothing listens on: the webhook falls back, and the demo says why and fails.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/v1");
    let (ok, stdout, stderr) = run_demo(&["--llm-base-url", &url]);
    assert!(!ok, "demo should fail\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("demo: error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("the LLM did not answer"), "{stderr}");
    // A failed demo keeps its files for inspection and says where; this one is expected.
    let kept = errors[0].rsplit_once("(files and logs kept in ").and_then(|(_, rest)| rest.strip_suffix(')'));
    let kept = kept.expect("the error names the kept directory");
    assert!(std::path::Path::new(kept).join("demo.log").is_file(), "{kept}");
    std::fs::remove_dir_all(kept).unwrap();
}
