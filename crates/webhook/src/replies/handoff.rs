//! The hand-off step: the conversation goes to a human. The visitor is told (online or offline
//! wording, by operators' availability), the bot falls silent there, operators get a private
//! note with the visitor's context, and the conversation is marked unresolved (and assigned,
//! when configured). The note also follows the fallback message.

use super::Turn;
use super::floor::FloorStep;
use super::post::PostStep;
use crate::context::{Activity, LinkedBy};
use answer::handoff;
use crisp::{ConversationId, CrispClient, PostKind};
use plumbing::telemetry::{self, Metrics};
use proactive::book::OfferBook;
use std::sync::Arc;
use std::time::Duration;

/// What the hand-off says and does, from settings.
#[derive(Debug, Clone)]
pub struct HandoffSettings {
    pub message: String,
    pub offline_message: String,
    pub assign_user_id: Option<String>,
}

pub struct HandOffStep {
    settings: HandoffSettings,
    crisp: CrispClient,
    floor: Arc<FloorStep>,
    /// Proactive offers' records: no offers after a hand-off.
    offers: Option<Arc<OfferBook>>,
    /// Whether an operator is online, for 30 s.
    availability: moka::future::Cache<(), bool>,
    metrics: Metrics,
}

/// What the visitor is told.
pub(super) struct Told {
    pub text: String,
    pub online: bool,
}

impl HandOffStep {
    pub fn new(
        settings: HandoffSettings,
        crisp: CrispClient,
        floor: Arc<FloorStep>,
        offers: Option<Arc<OfferBook>>,
        metrics: Metrics,
    ) -> Self {
        let availability = moka::future::Cache::builder().time_to_live(Duration::from_secs(30)).build();
        Self { settings, crisp, floor, offers, availability, metrics }
    }

    /// The words for the visitor: `HANDOFF_MESSAGE` when an operator is online, else
    /// `HANDOFF_OFFLINE_MESSAGE`.
    pub(super) async fn words(&self) -> Told {
        let online = self.operators_online().await;
        let text = if online { &self.settings.message } else { &self.settings.offline_message };
        Told { text: text.clone(), online }
    }

    /// The visitor was told: the bot falls silent in the conversation, and no offer follows.
    pub(super) async fn silence_bot(&self, session: &ConversationId) {
        self.floor.hand_over(session).await;
        if let Some(book) = &self.offers {
            book.update(session, proactive::now_secs(), |gate| gate.handed_off = true).await;
        }
    }

    /// The context note for operators (`handoffs_total{reason}`); returns its text, sent or not
    /// (a failure is logged).
    pub(super) async fn note(
        &self,
        post: &PostStep,
        turn: &Turn<'_>,
        reason: handoff::Reason,
        model_summary: Option<&str>,
        activity: &Activity,
        articles: Option<&str>,
    ) -> String {
        self.metrics.counter_with(telemetry::HANDOFFS, &[("reason", reason.name())]).increment(1);
        let linked_by = linked_by_words(activity.linked_by);
        let mut note =
            handoff::note(reason, model_summary, activity.context.as_ref(), linked_by, proactive::now_secs());
        if let Some(articles) = articles {
            note.push_str("\n\n");
            note.push_str(articles);
        }
        if let Err(e) = post.post(turn, PostKind::Note, &note).await {
            tracing::warn!(error = %e, "cannot post the context note for operators");
        }
        note
    }

    /// Puts the conversation in operators' hands: assigned (`HANDOFF_ASSIGN_USER_ID`) and
    /// marked unresolved. Failures are logged: the visitor was told already.
    pub(super) async fn to_operators(&self, session: &ConversationId, reason: handoff::Reason, online: bool) {
        if let Some(operator) = &self.settings.assign_user_id
            && let Err(e) = self.crisp.assign(session, operator).await
        {
            tracing::warn!(error = %e, "cannot assign the conversation");
        }
        if let Err(e) = self.crisp.set_state(session, "unresolved").await {
            tracing::warn!(error = %e, "cannot mark the conversation unresolved");
        }
        tracing::info!(reason = reason.name(), online, "handed over to a human");
    }

    /// Whether an operator is online, cached for 30 s; unknown counts as online (the visitor
    /// is told a teammate will reply, which stays true).
    async fn operators_online(&self) -> bool {
        let crisp = self.crisp.clone();
        self.availability
            .get_with((), async move {
                crisp.operators_online().await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot read operator availability");
                    true
                })
            })
            .await
    }
}

fn linked_by_words(linked_by: LinkedBy) -> &'static str {
    match linked_by {
        LinkedBy::SessionData => "the Autoplay session id the widget set (autoplay_session_id)",
        LinkedBy::SignedUser => "the signed user id the widget set (autoplay_user_id)",
        LinkedBy::Conversation => "an Autoplay batch naming this conversation",
        LinkedBy::SharedFile => "the shared activity file (CONTEXT_SCOPE=shared)",
        LinkedBy::Nothing => "nothing",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replies::context::Conversations;
    use crate::replies::test_support::{activity, crisp_at, holding, local_coordination, series, turn, visitor};
    use wiremock::matchers::{method, path_regex};
    use wiremock::{Mock, MockServer, Request, ResponseTemplate};

    fn settings(assign: Option<&str>) -> HandoffSettings {
        HandoffSettings {
            message: "A teammate is joining.".into(),
            offline_message: "We'll reply by email.".into(),
            assign_user_id: assign.map(str::to_owned),
        }
    }

    /// A Crisp stand-in whose operators are `status` (`online`, `offline`, or an error).
    async fn crisp(status: Option<&str>) -> MockServer {
        let server = MockServer::start().await;
        let availability = match status {
            Some(status) => ResponseTemplate::new(200).set_body_json(serde_json::json!({"data": {"status": status}})),
            None => ResponseTemplate::new(500),
        };
        Mock::given(method("GET"))
            .and(path_regex("/availability/status$"))
            .respond_with(availability)
            .mount(&server)
            .await;
        let ok = ResponseTemplate::new(200).set_body_json(serde_json::json!({"error": false, "data": {}}));
        Mock::given(path_regex("/conversation/session_test/")).respond_with(ok).mount(&server).await;
        server
    }

    fn step(server: &MockServer, assign: Option<&str>) -> (HandOffStep, Arc<FloorStep>) {
        step_over(server, assign, local_coordination())
    }

    fn step_over(
        server: &MockServer,
        assign: Option<&str>,
        coordination: Arc<delivery::coordination::Coordination>,
    ) -> (HandOffStep, Arc<FloorStep>) {
        let floor = Arc::new(FloorStep::new(coordination, Metrics::new()));
        (HandOffStep::new(settings(assign), crisp_at(&server.uri()), Arc::clone(&floor), None, Metrics::new()), floor)
    }

    fn calls(requests: &[Request]) -> Vec<(String, String, serde_json::Value)> {
        requests
            .iter()
            .filter(|r| !r.url.path().ends_with("/availability/status"))
            .map(|r| {
                let leaf = r.url.path().rsplit('/').next().unwrap_or_default().to_owned();
                (r.method.to_string(), leaf, serde_json::from_slice(&r.body).unwrap_or_default())
            })
            .collect()
    }

    #[tokio::test]
    async fn the_words_follow_operators_availability_and_unknown_counts_as_online() {
        for (status, expected, online) in [
            (Some("online"), "A teammate is joining.", true),
            (Some("offline"), "We'll reply by email.", false),
            (None, "A teammate is joining.", true),
        ] {
            let server = crisp(status).await;
            let told = step(&server, None).0.words().await;
            assert_eq!((told.text.as_str(), told.online), (expected, online), "operators {status:?}");
        }
    }

    #[tokio::test]
    async fn operators_get_the_note_then_the_conversation_assigned_and_unresolved_and_the_bot_falls_silent() {
        let server = crisp(Some("online")).await;
        let coordination = local_coordination();
        let (step, floor) = step_over(&server, Some("operator-7"), Arc::clone(&coordination));
        let hold = holding(&coordination, &visitor("refund please", 1)).await;
        let client = crisp_at(&server.uri());
        let post = PostStep::new(client.clone(), coordination, Arc::clone(&floor), Conversations::new(client));
        let turn = turn(&hold, 1);
        let articles = "Articles used: Refunds (https://help.example.com/refunds)";
        let note = step
            .note(
                &post,
                &turn,
                handoff::Reason::Asked,
                Some("Wants a refund."),
                &activity("[0] Billing"),
                Some(articles),
            )
            .await;
        assert!(note.contains("Wants a refund.") && note.ends_with(articles), "{note}");
        step.to_operators(turn.session, handoff::Reason::Asked, true).await;
        step.silence_bot(turn.session).await;

        let calls = calls(&server.received_requests().await.unwrap());
        let leaves: Vec<(&str, &str)> = calls.iter().map(|(m, leaf, _)| (m.as_str(), leaf.as_str())).collect();
        assert_eq!(leaves, [("POST", "message"), ("PATCH", "routing"), ("PATCH", "state")]);
        assert_eq!(calls[0].2["type"], "note");
        assert_eq!(calls[0].2["content"], note.as_str());
        assert_eq!(calls[1].2, serde_json::json!({"assigned": {"user_id": "operator-7"}}));
        assert_eq!(calls[2].2, serde_json::json!({"state": "unresolved"}));
        assert_eq!(series(&step.metrics, "handoffs_total{reason=\"asked\"}"), 1.0);
        assert!(floor.open(turn.session).await.is_err(), "the bot is silent after its hand-off");
    }
}
