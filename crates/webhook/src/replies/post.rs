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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replies::test_support::{crisp_at, holding, local_coordination, operator, turn, visitor};
    use plumbing::telemetry::Metrics;
    use wiremock::matchers::{method, path_regex};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    struct Posting {
        crisp: MockServer,
        floor: Arc<FloorStep>,
        step: PostStep,
        hold: delivery::coordination::Hold,
    }

    async fn posting() -> Posting {
        let crisp = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path_regex("/conversation/session_test/message$"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"error": false, "data": {}})))
            .mount(&crisp)
            .await;
        let coordination = local_coordination();
        let hold = holding(&coordination, &visitor("how do I export?", 1)).await;
        let floor = Arc::new(FloorStep::new(Arc::clone(&coordination), Metrics::new()));
        let client = crisp_at(&crisp.uri());
        let step = PostStep::new(client.clone(), coordination, Arc::clone(&floor), Conversations::new(client));
        Posting { crisp, floor, step, hold }
    }

    /// The messages Crisp received, as `(type, content, fingerprint)`.
    async fn received(crisp: &MockServer) -> Vec<(String, String, u64)> {
        let requests = crisp.received_requests().await.unwrap();
        requests
            .iter()
            .filter(|r| r.url.path().ends_with("/message"))
            .map(|r| {
                let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                (
                    body["type"].as_str().unwrap().into(),
                    body["content"].as_str().unwrap().into(),
                    body["fingerprint"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn a_reply_carries_its_derived_fingerprint_and_its_echo_is_not_a_takeover() {
        let p = posting().await;
        let turn = turn(&p.hold, 1);
        p.step.reply(&turn, "Open Billing, then Export.").await.unwrap();
        let fingerprint = turn.fingerprint(PostKind::Reply).get();
        assert_eq!(received(&p.crisp).await, [("text".into(), "Open Billing, then Export.".into(), fingerprint)]);
        // Crisp's operator hook for the bot's own message.
        let echo = operator("Open Billing, then Export.", Some(fingerprint));
        assert!(!p.floor.operator_wrote(echo).await.unwrap(), "the bot's echo never silences it");
    }

    #[tokio::test]
    async fn after_a_takeover_the_reply_is_withheld_but_the_note_still_reaches_operators() {
        let p = posting().await;
        let turn = turn(&p.hold, 1);
        assert!(p.floor.operator_wrote(operator("Sam here", Some(5))).await.unwrap());
        assert_eq!(p.step.reply(&turn, "Open Billing.").await, Err(Attempt::Settled(Settled::Silenced)));
        assert!(received(&p.crisp).await.is_empty(), "nothing talks over the human");
        p.step.post(&turn, PostKind::Note, "Context for the team").await.unwrap();
        let note = turn.fingerprint(PostKind::Note).get();
        assert_eq!(received(&p.crisp).await, [("note".into(), "Context for the team".into(), note)]);
        assert_ne!(note, turn.fingerprint(PostKind::Reply).get(), "a note and the reply are two posts");
    }

    #[tokio::test]
    async fn a_refused_post_is_retried_later() {
        let crisp = MockServer::start().await;
        Mock::given(method("POST")).respond_with(ResponseTemplate::new(503)).mount(&crisp).await;
        let coordination = local_coordination();
        let hold = holding(&coordination, &visitor("hi", 1)).await;
        let floor = Arc::new(FloorStep::new(Arc::clone(&coordination), Metrics::new()));
        let client = crisp_at(&crisp.uri());
        let step = PostStep::new(client.clone(), coordination, floor, Conversations::new(client));
        assert_eq!(step.reply(&turn(&hold, 1), "Hello").await, Err(Attempt::Retry));
    }
}
