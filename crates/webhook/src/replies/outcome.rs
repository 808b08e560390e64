//! The outcome step: what became of the bot's answers, fed to [`crate::outcomes::Outcomes`]
//! (confirmed later by what the visitor does next). Visitor messages, answers and hand-offs
//! are its events; it also says when a short "yes" answers the bot's follow-up ("Still stuck?
//! I can get a person.").

use super::Turn;
use super::context::Conversations;
use crate::context::Activity;
use crate::outcomes::{Outcomes, is_short_yes};
use crisp::{ConversationId, VisitorMessage};
use std::sync::Arc;

pub struct OutcomeStep {
    outcomes: Arc<Outcomes>,
    conversations: Conversations,
}

impl OutcomeStep {
    pub fn new(outcomes: Arc<Outcomes>, conversations: Conversations) -> Self {
        Self { outcomes, conversations }
    }

    /// A visitor message was accepted: a new question, a confirmation or a reopening (and an
    /// offer answered, for offer learning).
    pub(super) async fn visitor_wrote(&self, message: &VisitorMessage) {
        let now = proactive::now_secs();
        self.outcomes.visitor_wrote(&message.session_id, now, &message.content).await;
    }

    /// The bot's answer (`visible`, as the visitor reads it) was posted.
    pub(super) async fn answered(&self, turn: &Turn<'_>, visible: &str, activity: &Activity) {
        let actions = activity.context.as_ref().map(|c| c.actions.as_slice()).unwrap_or_default();
        let trouble = ::outcomes::Trouble { trigger: turn.trigger, ..Default::default() }.with_activity(actions);
        self.outcomes.answered(turn.session, proactive::now_secs(), visible, actions, trouble).await;
    }

    /// The conversation went to a human (`asked`, `unable`, `failed`, `operator`).
    pub(super) async fn handed_off(&self, session: &ConversationId, reason: &str) {
        self.outcomes.handed_off(session, proactive::now_secs(), reason).await;
    }

    /// Whether `words` are a short "yes" to the current answer's follow-up: the bot's last
    /// visible message, read afresh from Crisp, is that follow-up.
    pub(super) async fn said_yes_to_follow_up(&self, session: &ConversationId, words: &str) -> bool {
        if !is_short_yes(words) {
            return false;
        }
        let Some(fingerprint) = self.outcomes.follow_up_sent(session).await else { return false };
        let Ok(messages) = self.conversations.fresh(session).await else { return false };
        messages
            .iter()
            .rev()
            .find(|m| m.from == "operator" && m.kind != "note" && m.kind != "event")
            .is_some_and(|m| m.fingerprint == Some(fingerprint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcomes::Store;
    use crate::replies::test_support::{
        activity, context_source, conversation, crisp_at, holding, local_coordination, turn, visitor,
    };
    use activity::config::StoreSettings;
    use activity::context::StoreLimits;
    use plumbing::telemetry::Metrics;
    use wiremock::MockServer;

    fn store_settings(dir: &std::path::Path) -> StoreSettings {
        let limits = StoreLimits { max_actions: 100, ttl: std::time::Duration::from_secs(3600) };
        StoreSettings { data_dir: dir.to_owned(), limits, redis: None }
    }

    fn step(crisp: &MockServer, dir: &std::path::Path) -> OutcomeStep {
        let client = crisp_at(&crisp.uri());
        let context = context_source(&client, dir);
        let outcomes = Outcomes::new(
            Default::default(),
            Store::open(&store_settings(dir), None).unwrap(),
            client.clone(),
            local_coordination(),
            context,
            Metrics::new(),
        );
        OutcomeStep::new(outcomes, Conversations::new(client))
    }

    #[tokio::test]
    async fn a_question_its_answer_and_a_hand_off_are_the_conversations_record() {
        let crisp = MockServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let step = step(&crisp, dir.path());
        let coordination = local_coordination();
        let question = visitor("how do I export my invoices?", 1);
        let hold = holding(&coordination, &question).await;
        step.visitor_wrote(&question).await;
        step.answered(&turn(&hold, 1), "Open Billing, then Export.", &activity("")).await;

        let read =
            || async { Store::open(&store_settings(dir.path()), None).unwrap().get("session_test").await.unwrap() };
        let record = read().await.expect("a record of the conversation");
        assert_eq!(record.answers, 1);
        assert!(record.answered_at.is_some() && record.reply_secs.is_some(), "answered, timed from the question");
        assert_eq!(record.outcome, None, "not decided yet: what the visitor does next decides it");

        step.handed_off(&conversation(), "asked").await;
        assert_eq!(read().await.unwrap().outcome, Some(::outcomes::Outcome::Escalated));
    }

    #[tokio::test]
    async fn only_a_short_yes_after_the_follow_up_asks_for_a_person() {
        let crisp = MockServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let step = step(&crisp, dir.path());
        assert!(!step.said_yes_to_follow_up(&conversation(), "how do I export?").await);
        assert!(!step.said_yes_to_follow_up(&conversation(), "yes").await, "no follow-up was sent");
        assert!(crisp.received_requests().await.unwrap().is_empty(), "nothing to read from Crisp for either");
    }
}
