//! Per-session summary bookkeeping (the reference SDK's `AsyncSessionSummarizer`), free of I/O.
//!
//! The listener records each batch here; when a session's pending actions reach the threshold
//! a [`SummaryJob`] comes back for the caller to run. At most one job per session is out at a
//! time; a failed job puts its actions back so the next batch retries them.

use crate::payload::Action;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

const SUMMARY_PROMPT_TEMPLATE: &str = include_str!("../prompts/summary_prompt.txt");

/// The reference SDK's summary prompt around the numbered action list.
pub fn summary_prompt(actions: &[Action<'_>]) -> String {
    let mut list = String::new();
    for (n, action) in actions.iter().enumerate() {
        if n > 0 {
            list.push('\n');
        }
        list.push_str(&format!("{}. {}", n + 1, action.to_text()));
    }
    SUMMARY_PROMPT_TEMPLATE.replacen("{actions}", &list, 1)
}

#[derive(Debug, Clone)]
pub struct SummaryPolicy {
    /// Actions per session between summaries.
    pub threshold: usize,
    /// A session idle this long is forgotten with its pending actions (SDK: 300 s).
    pub forget_after: Duration,
    /// Sessions tracked at once; beyond it the least recently seen idle one is dropped.
    pub max_sessions: usize,
    /// Pending actions kept per session (the oldest go first), so one runaway session is bounded.
    pub max_pending: usize,
}

impl SummaryPolicy {
    pub fn new(threshold: usize) -> Self {
        Self {
            threshold: threshold.max(1),
            forget_after: Duration::from_secs(300),
            max_sessions: 10_000,
            max_pending: 500,
        }
    }
}

/// A summary to produce: the session and the actions it covers, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryJob {
    pub session: String,
    pub actions: Vec<Action<'static>>,
}

#[derive(Debug)]
struct SessionState {
    pending: VecDeque<Action<'static>>,
    in_flight: bool,
    last_seen: Instant,
}

#[derive(Debug)]
pub struct SessionSummaries {
    policy: SummaryPolicy,
    sessions: HashMap<String, SessionState>,
}

impl SessionSummaries {
    pub fn new(policy: SummaryPolicy) -> Self {
        Self { policy, sessions: HashMap::new() }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Pending (not yet summarised) actions of a session.
    pub fn pending(&self, session: &str) -> usize {
        self.sessions.get(session).map_or(0, |s| s.pending.len())
    }

    /// Records a batch; returns a job when the session is due and has none running.
    pub fn record(&mut self, session: &str, actions: &[Action<'_>], now: Instant) -> Option<SummaryJob> {
        if !self.sessions.contains_key(session) {
            self.make_room(now);
        }
        let state = self.sessions.entry(session.to_owned()).or_insert_with(|| SessionState {
            pending: VecDeque::new(),
            in_flight: false,
            last_seen: now,
        });
        state.last_seen = now;
        state.pending.extend(actions.iter().map(|a| a.clone().into_owned()));
        let excess = state.pending.len().saturating_sub(self.policy.max_pending);
        state.pending.drain(..excess);
        self.take_job_if_due(session)
    }

    /// Reports a job's outcome. On failure its actions go back in front of newer ones. Returns
    /// the next job when enough actions arrived meanwhile.
    pub fn finish(&mut self, job: SummaryJob, succeeded: bool, now: Instant) -> Option<SummaryJob> {
        let state = self.sessions.get_mut(&job.session)?;
        state.in_flight = false;
        state.last_seen = now;
        if succeeded {
            return self.take_job_if_due(&job.session);
        }
        for action in job.actions.into_iter().rev() {
            state.pending.push_front(action);
        }
        let excess = state.pending.len().saturating_sub(self.policy.max_pending);
        state.pending.drain(..excess);
        None // retried on the session's next batch, not in a tight loop
    }

    /// Forgets sessions idle longer than the policy allows (never one with a job out).
    pub fn forget_idle(&mut self, now: Instant) -> usize {
        let before = self.sessions.len();
        let forget_after = self.policy.forget_after;
        self.sessions.retain(|_, s| s.in_flight || now.duration_since(s.last_seen) < forget_after);
        before - self.sessions.len()
    }

    fn take_job_if_due(&mut self, session: &str) -> Option<SummaryJob> {
        let state = self.sessions.get_mut(session)?;
        if state.in_flight || state.pending.len() < self.policy.threshold {
            return None;
        }
        state.in_flight = true;
        Some(SummaryJob { session: session.to_owned(), actions: state.pending.drain(..).collect() })
    }

    fn make_room(&mut self, now: Instant) {
        if self.sessions.len() < self.policy.max_sessions {
            return;
        }
        self.forget_idle(now);
        if self.sessions.len() < self.policy.max_sessions {
            return;
        }
        let oldest =
            self.sessions.iter().filter(|(_, s)| !s.in_flight).min_by_key(|(_, s)| s.last_seen).map(|(k, _)| k.clone());
        if let Some(key) = oldest {
            self.sessions.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn act(i: i64, kind: &str) -> Action<'static> {
        Action {
            index: i,
            kind: kind.to_owned().into(),
            description: format!("desc {i}").into(),
            canonical_url: "https://yourapp.com/dashboard".into(),
            ..Action::default()
        }
    }

    fn batch(start: i64) -> Vec<Action<'static>> {
        vec![act(start, "pageview"), act(start + 1, "click"), act(start + 2, "click")]
    }

    #[test]
    fn golden_prompt_after_the_sixth_action() {
        let mut s = SessionSummaries::new(SummaryPolicy::new(5));
        let now = Instant::now();
        assert!(s.record("ps_1", &batch(0), now).is_none());
        let job = s.record("ps_1", &batch(3), now).expect("due after 6 actions");
        assert_eq!(job.actions.len(), 6);
        let prompt = summary_prompt(&job.actions);
        assert!(prompt.starts_with("You are summarising a user's in-app session for a RAG pipeline.\n"));
        assert!(prompt.ends_with(
            "Actions:\n\
             1. [0] pageview: desc 0 \u{2014} https://yourapp.com/dashboard\n\
             2. [1] click: desc 1 \u{2014} https://yourapp.com/dashboard\n\
             3. [2] click: desc 2 \u{2014} https://yourapp.com/dashboard\n\
             4. [3] pageview: desc 3 \u{2014} https://yourapp.com/dashboard\n\
             5. [4] click: desc 4 \u{2014} https://yourapp.com/dashboard\n\
             6. [5] click: desc 5 \u{2014} https://yourapp.com/dashboard\n\nSummary:"
        ));
        assert_eq!(s.pending("ps_1"), 0);
    }

    #[test]
    fn one_job_per_session_at_a_time_and_next_one_on_finish() {
        let mut s = SessionSummaries::new(SummaryPolicy::new(2));
        let now = Instant::now();
        let job = s.record("a", &batch(0), now).unwrap();
        assert!(s.record("a", &batch(3), now).is_none(), "a job is already out");
        assert!(s.record("b", &batch(0), now).is_some(), "other sessions are independent");
        let next = s.finish(job, true, now).expect("three more actions arrived meanwhile");
        assert_eq!(next.actions[0].index, 3);
    }

    #[test]
    fn failed_jobs_put_actions_back_in_order() {
        let mut s = SessionSummaries::new(SummaryPolicy::new(3));
        let now = Instant::now();
        let job = s.record("a", &batch(0), now).unwrap();
        assert!(s.record("a", &[act(9, "click")], now).is_none());
        assert!(s.finish(job, false, now).is_none());
        assert_eq!(s.pending("a"), 4);
        let retry = s.record("a", &[], now).unwrap();
        let order: Vec<i64> = retry.actions.iter().map(|a| a.index).collect();
        assert_eq!(order, [0, 1, 2, 9]);
    }

    #[test]
    fn idle_sessions_are_forgotten_and_memory_is_bounded() {
        let policy = SummaryPolicy { max_sessions: 100, max_pending: 10, ..SummaryPolicy::new(1000) };
        let mut s = SessionSummaries::new(policy);
        let start = Instant::now();
        for i in 0..5000u64 {
            s.record(&format!("s{i}"), &batch(0), start + Duration::from_millis(i));
        }
        assert_eq!(s.len(), 100);
        for _ in 0..10 {
            s.record("s4999", &batch(0), start + Duration::from_secs(5));
        }
        assert_eq!(s.pending("s4999"), 10);
        assert_eq!(s.forget_idle(start + Duration::from_secs(306)), 100);
        assert!(s.is_empty());
    }
}
