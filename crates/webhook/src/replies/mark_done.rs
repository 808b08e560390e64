//! The mark-done step: what a reply attempt settled is marked done in the inbox (the journal,
//! or Redis) and counted (`messages_settled_total{outcome}`). A settled attempt settles its
//! whole burst; one retried or lost settles only the first messages found answered already.

use super::Attempt;
use delivery::coordination::{Burst, Coordination, Hold};
use plumbing::telemetry::{Metrics, Settled};
use std::sync::Arc;

pub struct MarkDoneStep {
    coordination: Arc<Coordination>,
    metrics: Metrics,
}

impl MarkDoneStep {
    pub fn new(coordination: Arc<Coordination>, metrics: Metrics) -> Self {
        Self { coordination, metrics }
    }

    /// A redelivery of a recorded message: settled at once.
    pub(super) fn duplicate(&self) {
        self.metrics.settled(Settled::Duplicate, 1);
    }

    /// Marks done what `attempt` settled of `burst`, whose first `already` messages were found
    /// answered. A done mark that cannot be written is logged: the burst is checked against the
    /// conversation when resumed, so it is not answered twice.
    pub(super) async fn mark(&self, hold: &Hold, burst: &Burst, attempt: Attempt, already: usize) {
        let coordination = &self.coordination;
        match attempt {
            Attempt::Settled(how) => {
                let replied = burst.entries.len() - already;
                if let Err(e) = coordination.finish(hold, burst, burst.entries.len()).await {
                    tracing::warn!(error = %e, "cannot mark the burst done; it will be checked against the conversation when resumed");
                }
                if already > 0 {
                    self.metrics.settled(Settled::AlreadyAnswered, already);
                }
                self.metrics.settled(how, replied);
                tracing::info!(
                    messages = replied,
                    already_answered = already,
                    outcome = how.as_str(),
                    "messages settled"
                );
            }
            Attempt::Lost => {
                tracing::warn!("the hold lapsed; another replica answers these messages");
                if already > 0 {
                    let _ = coordination.finish(hold, burst, already).await;
                }
            }
            Attempt::Retry => {
                if already > 0 && coordination.finish(hold, burst, already).await.is_ok() {
                    self.metrics.settled(Settled::AlreadyAnswered, already);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replies::test_support::{holding, local_coordination, series, visitor};

    /// Three recorded messages, held and read as one burst.
    async fn three_recorded() -> (MarkDoneStep, Arc<Coordination>, Hold, Burst) {
        let coordination = local_coordination();
        let hold = holding(&coordination, &visitor("one", 1)).await;
        for (words, fingerprint) in [("two", 2), ("three", 3)] {
            coordination.accept(&visitor(words, fingerprint)).await.unwrap();
        }
        let burst = coordination.next_burst(&hold).await.unwrap();
        assert_eq!(burst.entries.len(), 3);
        (MarkDoneStep::new(Arc::clone(&coordination), Metrics::new()), coordination, hold, burst)
    }

    fn settled(step: &MarkDoneStep, outcome: &str) -> f64 {
        series(&step.metrics, &format!("messages_settled_total{{outcome=\"{outcome}\"}}"))
    }

    #[tokio::test]
    async fn a_settled_reply_settles_its_whole_burst_counting_those_answered_before() {
        let (step, coordination, hold, burst) = three_recorded().await;
        step.mark(&hold, &burst, Attempt::Settled(Settled::Answered), 1).await;
        assert_eq!(coordination.pending_local(), 0, "nothing left to answer");
        assert_eq!(settled(&step, "already_answered"), 1.0);
        assert_eq!(settled(&step, "answered"), 2.0);
    }

    #[tokio::test]
    async fn a_retried_reply_settles_only_the_messages_found_answered() {
        let (step, coordination, hold, burst) = three_recorded().await;
        step.mark(&hold, &burst, Attempt::Retry, 1).await;
        assert_eq!(coordination.pending_local(), 2, "the two unanswered stay recorded");
        let again = coordination.next_burst(&hold).await.unwrap();
        let words: Vec<&str> = again.entries.iter().map(|e| e.message.content.as_str()).collect();
        assert_eq!(words, ["two", "three"], "retried from the first unanswered");
        assert_eq!(settled(&step, "already_answered"), 1.0);
        assert_eq!(settled(&step, "answered"), 0.0);
    }

    #[tokio::test]
    async fn a_lost_hold_settles_nothing_unanswered() {
        let (step, coordination, hold, burst) = three_recorded().await;
        step.mark(&hold, &burst, Attempt::Lost, 0).await;
        assert_eq!(coordination.pending_local(), 3, "the replica that holds them answers");
        step.duplicate();
        assert_eq!(settled(&step, "duplicate"), 1.0);
    }
}
