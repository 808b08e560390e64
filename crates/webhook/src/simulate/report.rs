//! The results of `webhook simulate`: per run, turn and expectation; the summary printed at
//! the end (passes out of K per scenario, the failures with their reasons, pass^k and pass@1),
//! the `--json` document and the `--junit` XML; and the progress shown while it runs.

use super::judge::JudgeRecord;
use serde::Serialize;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// K: runs of each scenario.
    pub repeat: usize,
    pub min_pass: f64,
    /// Share of scenarios whose K runs all pass.
    pub pass_hat_k: f64,
    /// Share of all runs that pass.
    pub pass_at_1: f64,
    pub judge_model: String,
    pub scenarios: Vec<ScenarioResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub file: String,
    /// Runs that passed, out of `runs.len()`.
    pub passes: usize,
    pub runs: Vec<RunResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// 1-based.
    pub run: usize,
    pub passed: bool,
    pub seconds: f64,
    /// The run could not be carried out (the webhook could not start, a hook was refused).
    pub error: Option<String>,
    pub turns: Vec<TurnResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TurnResult {
    pub visitor: String,
    /// The visible answer (the hand-off message on a hand-off).
    pub answer: Option<String>,
    pub handoff: bool,
    /// The LLM did not answer: the fallback message was sent.
    pub fallback: bool,
    /// Private notes for operators posted in this turn.
    pub notes: Vec<String>,
    /// Conversation states set in this turn.
    pub states: Vec<String>,
    pub assigned: Vec<String>,
    pub segments: Vec<String>,
    /// Crisp calls the in-memory Crisp did not know (none expected).
    pub unexpected_calls: Vec<String>,
    pub seconds: f64,
    /// Why the turn has no answer (a time-out, skipped after a hand-off).
    pub error: Option<String>,
    pub checks: Vec<Check>,
}

impl TurnResult {
    pub fn skipped(visitor: &str, why: String) -> TurnResult {
        TurnResult {
            visitor: visitor.to_owned(),
            answer: None,
            handoff: false,
            fallback: false,
            notes: Vec::new(),
            states: Vec::new(),
            assigned: Vec::new(),
            segments: Vec::new(),
            unexpected_calls: Vec::new(),
            seconds: 0.0,
            error: Some(why),
            checks: Vec::new(),
        }
    }
}

/// One expectation checked.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub expectation: String,
    pub passed: bool,
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeRecord>,
}

impl Check {
    pub fn passed(expectation: impl Into<String>) -> Check {
        Check { expectation: expectation.into(), passed: true, reason: None, judge: None }
    }

    pub fn failed(expectation: impl Into<String>, reason: String) -> Check {
        Check { expectation: expectation.into(), passed: false, reason: Some(reason), judge: None }
    }

    pub fn judged(record: JudgeRecord) -> Check {
        let (passed, reason) = match (&record.verdict, &record.error) {
            (Some(verdict), _) => (verdict.pass, Some(verdict.reason.clone())),
            (None, error) => (false, error.clone()),
        };
        Check { expectation: format!("judge: {}", record.rubric), passed, reason, judge: Some(record) }
    }
}

impl ScenarioResult {
    pub fn new(name: String, file: String, runs: Vec<RunResult>) -> ScenarioResult {
        let passes = runs.iter().filter(|r| r.passed).count();
        ScenarioResult { name, file, passes, runs }
    }

    pub fn all_passed(&self) -> bool {
        self.passes == self.runs.len()
    }

    /// Each failure of each failed run: `run 2, turn 1: mentions: (?i)export: no match — "…"`.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for run in self.runs.iter().filter(|r| !r.passed) {
            if let Some(error) = &run.error {
                out.push(format!("run {}: {error}", run.run));
            }
            for (t, turn) in run.turns.iter().enumerate() {
                for check in turn.checks.iter().filter(|c| !c.passed) {
                    let answer = turn.answer.as_deref().map(first_200).unwrap_or_else(|| "(none)".into());
                    out.push(format!(
                        "run {}, turn {}: {}: {} — answer: {answer:?}",
                        run.run,
                        t + 1,
                        check.expectation,
                        check.reason.as_deref().unwrap_or("failed")
                    ));
                }
            }
        }
        out
    }
}

/// The answer's first 200 characters, on one line.
pub fn first_200(text: &str) -> String {
    let mut cut: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        cut.push('…');
    }
    cut.replace(['\n', '\r'], " ")
}

impl Report {
    pub fn new(repeat: usize, min_pass: f64, judge_model: String, scenarios: Vec<ScenarioResult>) -> Report {
        let n = scenarios.len().max(1) as f64;
        let pass_hat_k = scenarios.iter().filter(|s| s.all_passed()).count() as f64 / n;
        let runs: usize = scenarios.iter().map(|s| s.runs.len()).sum();
        let passes: usize = scenarios.iter().map(|s| s.passes).sum();
        let pass_at_1 = passes as f64 / runs.max(1) as f64;
        Report { repeat, min_pass, pass_hat_k, pass_at_1, judge_model, scenarios }
    }

    /// The text printed at the end.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for s in &self.scenarios {
            let mark = if s.all_passed() { "PASS" } else { "FAIL" };
            let _ = writeln!(out, "{mark}  {}/{}  {}  ({})", s.passes, s.runs.len(), s.name, s.file);
            for failure in s.failures() {
                let _ = writeln!(out, "        {failure}");
            }
        }
        let all = self.scenarios.iter().filter(|s| s.all_passed()).count();
        let runs: usize = self.scenarios.iter().map(|s| s.runs.len()).sum();
        let passes: usize = self.scenarios.iter().map(|s| s.passes).sum();
        let _ = writeln!(
            out,
            "pass^{k} = {:.2} ({all}/{} scenarios passed all {k} runs)   pass@1 = {:.2} ({passes}/{runs} runs)",
            self.pass_hat_k,
            self.scenarios.len(),
            self.pass_at_1,
            k = self.repeat
        );
        out
    }

    /// JUnit XML: one test case per scenario, a `failure` element per failed scenario.
    pub fn junit(&self) -> String {
        let failures = self.scenarios.iter().filter(|s| !s.all_passed()).count();
        let time: f64 = self.scenarios.iter().flat_map(|s| &s.runs).map(|r| r.seconds).sum();
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<testsuites name=\"webhook simulate\" tests=\"{}\" failures=\"{failures}\" time=\"{time:.3}\">",
            self.scenarios.len()
        );
        let _ = writeln!(
            out,
            "  <testsuite name=\"scenarios\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{time:.3}\">",
            self.scenarios.len()
        );
        for s in &self.scenarios {
            let time: f64 = s.runs.iter().map(|r| r.seconds).sum();
            let _ = write!(
                out,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{time:.3}\"",
                xml(&s.file),
                xml(&s.name)
            );
            if s.all_passed() {
                out.push_str("/>\n");
                continue;
            }
            let message = format!("{}/{} runs passed (pass^{} needs all)", s.passes, s.runs.len(), self.repeat);
            let _ = writeln!(
                out,
                ">\n      <failure message=\"{}\" type=\"pass^k\">{}</failure>\n    </testcase>",
                xml(&message),
                xml(&s.failures().join("\n"))
            );
        }
        out.push_str("  </testsuite>\n</testsuites>\n");
        out
    }
}

/// Text escaped for XML attributes and content (characters XML cannot hold are left out).
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

/// A progress bar on a terminal (standard error), plain lines otherwise.
pub struct Progress {
    total: usize,
    done: usize,
    terminal: bool,
}

impl Progress {
    pub fn new(total: usize) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        Progress { total, done: 0, terminal }
    }

    pub fn ran(&mut self, name: &str, run: &RunResult) {
        self.done += 1;
        let verdict = if run.passed { "passed" } else { "FAILED" };
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let width = 30;
            let filled = width * self.done / self.total.max(1);
            let bar = format!("{}{}", "#".repeat(filled), ".".repeat(width - filled));
            let name: String = name.chars().take(40).collect();
            let _ = write!(err, "\r\x1b[2K[{bar}] {}/{} runs  {name} #{} {verdict}", self.done, self.total, run.run);
        } else {
            let _ =
                writeln!(err, "run {}/{}: {name} #{} {verdict} ({:.1} s)", self.done, self.total, run.run, run.seconds);
        }
        let _ = err.flush();
    }

    pub fn finish(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: usize, passed: bool) -> RunResult {
        let mut turn = TurnResult::skipped("hi", "x".into());
        turn.error = None;
        turn.answer = Some("Use the <Export> button & \"done\"".into());
        turn.checks = vec![if passed {
            Check::passed("mentions: x")
        } else {
            Check::failed("mentions: (?i)invoice", "no match in the answer".into())
        }];
        RunResult { run: n, passed, seconds: 1.0, error: None, turns: vec![turn] }
    }

    #[test]
    fn pass_hat_k_needs_every_run_and_pass_at_1_counts_runs() {
        let report = Report::new(
            2,
            1.0,
            "m".into(),
            vec![
                ScenarioResult::new("a".into(), "a.yaml".into(), vec![run(1, true), run(2, true)]),
                ScenarioResult::new("b".into(), "b.yaml".into(), vec![run(1, true), run(2, false)]),
            ],
        );
        assert_eq!(report.pass_hat_k, 0.5);
        assert_eq!(report.pass_at_1, 0.75);
        let summary = report.summary();
        assert!(summary.contains("PASS  2/2  a"), "{summary}");
        assert!(summary.contains("FAIL  1/2  b"), "{summary}");
        assert!(summary.contains("run 2, turn 1: mentions: (?i)invoice: no match in the answer"), "{summary}");
        assert!(summary.contains("pass^2 = 0.50") && summary.contains("pass@1 = 0.75"), "{summary}");
        let junit = report.junit();
        assert!(junit.contains("tests=\"2\" failures=\"1\""), "{junit}");
        assert_eq!(junit.matches("<testcase").count(), 2);
        assert_eq!(junit.matches("<failure").count(), 1);
        assert!(junit.contains("&lt;Export&gt; button &amp; \\&quot;done\\&quot;"), "{junit}");
    }

    #[test]
    fn answers_are_cut_to_200_characters() {
        let long = "a".repeat(300);
        assert_eq!(first_200(&long).chars().count(), 201);
        assert_eq!(first_200("one\ntwo"), "one two");
    }
}
