//! The post step: the bot's own messages into the conversation. Each is marked as the bot's
//! before it is sent (its echo never reads as a human taking over) and carries the fingerprint
//! derived from the message it answers. Whether the bot may speak is asked again right before
//! each attempt, under the conversation's posting lock: an operator hook waits for a post that
//! passed that check, so once it is acknowledged nothing more of the bot's arrives.

use super::context::Conversations;
use super::floor::{FloorStep, MayPost};
use super::{Attempt, Turn};
use crisp::{ConversationId, CrispClient, CrispError, Post, PostKind};
use delivery::coordination::{Coordination, OwnMark};
use plumbing::telemetry::Settled;
use std::sync::Arc;

pub struct PostStep {
    crisp: CrispClient,
    coordination: Arc<Coordination>,
    floor: Arc<FloorStep>,
    conversations: Conversations,
}

impl PostStep {
    pub fn new(
        crisp: CrispClient,
        coordination: Arc<Coordination>,
        floor: Arc<FloorStep>,
        conversations: Conversations,
    ) -> Self {
        Self { crisp, coordination, floor, conversations }
    }

    /// Shows or clears the typing indicator (a failure is only logged).
    pub(super) async fn typing(&self, session: &ConversationId, on: bool) {
        if let Err(e) = self.crisp.compose(session, on).await {
            let what = if on { "cannot show the typing indicator" } else { "cannot clear the typing indicator" };
            tracing::warn!(error = %e, "{what}");
        }
    }

    /// Posts the bot's message of `kind`. A note (operators' eyes only) never talks over anyone
    /// and follows the bot's own hand-off, so it is not withheld by the floor.
    pub(super) async fn post(&self, turn: &Turn<'_>, kind: PostKind, content: &str) -> Result<(), CrispError> {
        let session = turn.session;
        let _posting = self.floor.posting_lock(session).read().await;
        let fingerprint = turn.fingerprint(kind);
        self.coordination.remember_own(session, OwnMark::Text(content.to_owned())).await;
        self.coordination.remember_own(session, OwnMark::Fingerprint(fingerprint)).await;
        let post = Post { kind, content, fingerprint };
        if kind == PostKind::Note {
            return self.crisp.post(session, &post).await;
        }
        let still = || -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + '_>> {
            Box::pin(async { self.floor.may_post(turn.hold).await == MayPost::Yes })
        };
        self.crisp.post_while(session, &post, still).await
    }

    /// Posts the bot's visible reply; when it was not posted, what becomes of the burst: a
    /// human took over (silenced), another replica holds it (lost), or it is tried again.
    pub(super) async fn reply(&self, turn: &Turn<'_>, text: &str) -> Result<(), Attempt> {
        match self.post(turn, PostKind::Reply, text).await {
            Ok(()) => {
                self.conversations.forget(turn.session).await;
                Ok(())
            }
            Err(CrispError::Withdrawn) => Err(match self.floor.may_post(turn.hold).await {
                MayPost::Silenced => Attempt::Settled(Settled::Silenced),
                MayPost::Lost => Attempt::Lost,
                MayPost::Yes | MayPost::Unknown => Attempt::Retry,
            }),
            Err(e) => {
                tracing::error!(error = %e, "Crisp refused the reply");
                Err(Attempt::Retry)
            }
        }
    }
}
