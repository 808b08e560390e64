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
