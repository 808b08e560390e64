//! The floor step: whether the bot may speak in a conversation. A human operator's message
//! takes the floor (the bot falls silent until the conversation is resolved); it is asked before
//! any work on a reply and again right before each post, under the conversation's posting lock.

use super::Attempt;
use crisp::{ConversationId, OperatorMessage, id_for_log};
use delivery::coordination::{CoordError, Coordination, Hold, OwnMark};
use plumbing::telemetry::{self, Metrics, Settled};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::RwLock;

/// Posting locks (conversations share them by hash).
const POSTING_LOCKS: usize = 64;
/// How long an operator hook waits for a bot post already under way in its conversation.
const POSTING_WAIT: Duration = Duration::from_secs(2);

pub struct FloorStep {
    coordination: Arc<Coordination>,
    metrics: Metrics,
    /// Held (shared) by a post from its last "may the bot speak?" check to Crisp's answer;
    /// taken (exclusive) by an operator's takeover.
    posting: Box<[RwLock<()>]>,
}

/// Whether the bot may post now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MayPost {
    Yes,
    /// A human has the conversation.
    Silenced,
    /// The hold lapsed to another replica (which answers).
    Lost,
    /// Redis cannot say: never sent on a guess.
    Unknown,
}

impl FloorStep {
    pub fn new(coordination: Arc<Coordination>, metrics: Metrics) -> Self {
        Self { coordination, metrics, posting: (0..POSTING_LOCKS).map(|_| RwLock::new(())).collect() }
    }

    /// Before the typing indicator and the LLM: `Err` with the attempt's end when a human has
    /// the conversation (silenced) or Redis cannot say (retried).
    pub(super) async fn open(&self, session: &ConversationId) -> Result<(), Attempt> {
        match self.coordination.floor(session).await {
            Ok(floor) if floor.human => {
                tracing::info!("a human operator has this conversation; bot stays silent");
                Err(Attempt::Settled(Settled::Silenced))
            }
            Ok(_) => Ok(()),
            Err(e) => Err(self.unknown("floor", &e)),
        }
    }

    /// Asked right before anything is posted: a human may have written meanwhile, and the
    /// hold may have lapsed to another replica (which then answers).
    pub(super) async fn may_post(&self, hold: &Hold) -> MayPost {
        match self.coordination.floor(&hold.session).await {
            Ok(floor) if floor.human => return MayPost::Silenced,
            Ok(_) => {}
            Err(e) => {
                self.unknown("floor", &e);
                return MayPost::Unknown;
            }
        }
        match self.coordination.still_holds(hold).await {
            Ok(true) => MayPost::Yes,
            Ok(false) => MayPost::Lost,
            Err(e) => {
                self.unknown("hold", &e);
                MayPost::Unknown
            }
        }
    }

    /// The posting lock of a conversation (one of a fixed set, by the conversation's hash).
    pub(super) fn posting_lock(&self, session: &ConversationId) -> &RwLock<()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(session);
        &self.posting[(hash % POSTING_LOCKS as u64) as usize]
    }

    /// An operator wrote: unless it is the bot itself (its own marks) or an automation, a human
    /// takes the floor. `Ok(true)` when a human took over.
    pub(super) async fn operator_wrote(&self, message: OperatorMessage) -> Result<bool, CoordError> {
        if message.automated {
            return Ok(false); // bots and automations never take a conversation over
        }
        let session = &message.session_id;
        let marks = message.fingerprint.map(OwnMark::Fingerprint).into_iter().chain(message.content.map(OwnMark::Text));
        for mark in marks {
            if self.coordination.is_own(session, &mark).await {
                return Ok(false);
            }
        }
        self.coordination.set_human_takeover(session).await?;
        // A post that passed its last check before the takeover was recorded finishes first
        // (briefly bounded): after this hook's `200` the bot posts nothing more here.
        let _ = tokio::time::timeout(POSTING_WAIT, self.posting_lock(session).write()).await;
        tracing::info!(session = id_for_log(session.as_str()), "human operator took over the conversation");
        Ok(true)
    }

    /// The bot handed the conversation over: it falls silent there, as after a takeover.
    pub(super) async fn hand_over(&self, session: &ConversationId) {
        if let Err(e) = self.coordination.set_human_takeover(session).await {
            tracing::error!(error = %e, "cannot record the hand-off; the bot may answer the next message");
        }
    }

    /// An operator resolved the conversation: the bot answers there again.
    pub(super) async fn resolved(&self, session: &ConversationId) -> Result<(), CoordError> {
        self.coordination.clear_human_takeover(session).await?;
        tracing::info!(session = id_for_log(session.as_str()), "conversation resolved; the bot answers again");
        Ok(())
    }

    /// A Redis that cannot say who has the floor (or whether the hold is still ours): the reply
    /// waits and is tried again; it is never sent on a guess.
    fn unknown(&self, step: &'static str, e: &CoordError) -> Attempt {
        self.metrics.counter_with(telemetry::COORDINATION_UNAVAILABLE, &[("step", step)]).increment(1);
        tracing::warn!(error = %e, step, "Redis cannot say whether the bot may speak; the reply waits");
        Attempt::Retry
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replies::test_support::{conversation, holding, local_coordination, operator, series, visitor};
    use crisp::Fingerprint;
    use tokio::time::Instant;

    fn floor() -> (FloorStep, Arc<Coordination>) {
        let coordination = local_coordination();
        (FloorStep::new(Arc::clone(&coordination), Metrics::new()), coordination)
    }

    #[tokio::test]
    async fn a_human_has_the_floor_until_the_conversation_is_resolved() {
        let (floor, coordination) = floor();
        let hold = holding(&coordination, &visitor("where is my invoice?", 1)).await;
        let session = conversation();
        assert_eq!(floor.open(&session).await, Ok(()));
        assert_eq!(floor.may_post(&hold).await, MayPost::Yes);

        assert!(floor.operator_wrote(operator("Hi, Sam here", Some(7))).await.unwrap(), "a human took over");
        assert_eq!(floor.open(&session).await, Err(Attempt::Settled(Settled::Silenced)));
        assert_eq!(floor.may_post(&hold).await, MayPost::Silenced);

        floor.resolved(&session).await.unwrap();
        assert_eq!(floor.open(&session).await, Ok(()));
        assert_eq!(floor.may_post(&hold).await, MayPost::Yes);

        floor.hand_over(&session).await;
        assert_eq!(floor.open(&session).await, Err(Attempt::Settled(Settled::Silenced)), "a hand-off silences too");
        assert_eq!(series(&floor.metrics, "coordination_unavailable_total"), 0.0);
    }

    #[tokio::test]
    async fn the_bots_own_echo_and_automations_never_take_the_floor() {
        let (floor, coordination) = floor();
        let session = conversation();
        coordination.remember_own(&session, OwnMark::Fingerprint(Fingerprint::from_wire(42))).await;
        coordination.remember_own(&session, OwnMark::Text("Here is how to export.".into())).await;

        assert!(!floor.operator_wrote(operator("any words", Some(42))).await.unwrap(), "its fingerprint");
        assert!(!floor.operator_wrote(operator("Here is how to export.", None)).await.unwrap(), "its words");
        let automation = crisp::OperatorMessage { automated: true, ..operator("Rate us!", Some(9)) };
        assert!(!floor.operator_wrote(automation).await.unwrap(), "an automation");
        assert_eq!(floor.open(&session).await, Ok(()), "the bot still has the floor");
    }

    /// The takeover's `200` waits for a post that passed its last check (so nothing of the
    /// bot's follows it), but never longer than `POSTING_WAIT`. Paused time: the waits are
    /// exact, not raced.
    #[tokio::test(start_paused = true)]
    async fn a_takeover_waits_for_a_post_under_way_but_only_briefly() {
        for (post_takes, takeover_returns_after) in
            [(Duration::from_millis(300), Duration::from_millis(300)), (Duration::from_secs(30), POSTING_WAIT)]
        {
            let (floor, _) = floor();
            let session = conversation();
            let started = Instant::now();
            let post_under_way = async {
                let _posting = floor.posting_lock(&session).read().await;
                tokio::time::sleep(post_takes).await;
            };
            let takeover = async {
                floor.operator_wrote(operator("I'll take it from here", None)).await.unwrap();
                started.elapsed()
            };
            let ((), returned_after) = tokio::join!(post_under_way, takeover);
            assert_eq!(returned_after, takeover_returns_after, "post under way for {post_takes:?}");
        }
    }
}
