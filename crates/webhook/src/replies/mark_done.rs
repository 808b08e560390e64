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
