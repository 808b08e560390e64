//! The context step: what the model is told about the visitor. Their live activity (linked to
//! the conversation as [`crate::context`] rules), the conversation's earlier turns (not the
//! messages being answered), and why the bot reached out when they answer a proactive offer.
//! A resumed burst first reads the conversation afresh: replies already there settle their
//! messages.

use super::{Attempt, reply_fingerprint};
use crate::context::{Activity, ContextSource};
use crisp::{
    ConversationId, ConversationMessage, CrispClient, CrispError, Fingerprint, PostKind, SessionData, id_for_log,
};
use delivery::coordination::Burst;
use delivery::inbox::InboxEntry;
use llm::{ChatMessage, Role};
use plumbing::telemetry::{self, Metrics};
use proactive::book::{LinkKey, OfferBook};
use proactive::offer::reached_out_line;
use std::sync::Arc;
use std::time::Duration;

/// Characters kept of each earlier turn in the prompt.
const HISTORY_TURN_CHARS: usize = 1000;

/// A conversation's latest messages as Crisp has them, cached briefly (30 s); a post by the bot
/// forgets its conversation's entry. Cloned, it shares the cache.
#[derive(Clone)]
pub struct Conversations {
    crisp: CrispClient,
    cache: moka::future::Cache<ConversationId, Arc<Vec<ConversationMessage>>>,
}

type Messages = Arc<Vec<ConversationMessage>>;

impl Conversations {
    pub fn new(crisp: CrispClient) -> Self {
        let cache = moka::future::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(30)).build();
        Self { crisp, cache }
    }

    async fn read(&self, session: &ConversationId) -> Result<Messages, Arc<CrispError>> {
        let crisp = self.crisp.clone();
        let key = session.clone();
        self.cache.try_get_with(key.clone(), async move { crisp.messages(&key).await.map(Arc::new) }).await
    }

    /// Read afresh (what was answered, what the bot said last).
    pub(super) async fn fresh(&self, session: &ConversationId) -> Result<Messages, Arc<CrispError>> {
        self.forget(session).await;
        self.read(session).await
    }

    /// The bot posted in the conversation: the cached messages are out of date.
    pub(super) async fn forget(&self, session: &ConversationId) {
        self.cache.invalidate(session).await;
    }
}

pub struct ContextStep {
    source: ContextSource,
    conversations: Conversations,
    /// Earlier turns put in the prompt (`HISTORY_TURNS`); 0 reads no conversation.
    history_turns: usize,
    /// Proactive offers' records (links from session data, offers answered), when offers are on.
    offers: Option<Arc<OfferBook>>,
    metrics: Metrics,
}

/// What the context step found for a reply.
pub(super) struct Gathered {
    pub activity: Activity,
    /// Earlier turns, oldest first; first a system line when the visitor answers an offer.
    pub history: Vec<ChatMessage>,
    /// The offer the visitor answers.
    pub trigger: Option<proactive::Trigger>,
}

impl ContextStep {
    pub fn new(
        source: ContextSource,
        conversations: Conversations,
        history_turns: usize,
        offers: Option<Arc<OfferBook>>,
        metrics: Metrics,
    ) -> Self {
        Self { source, conversations, history_turns, offers, metrics }
    }

    /// How many of the burst's first messages are answered already, and the conversation read
    /// to say so. Only a resumed burst may have replies in the conversation; without the
    /// conversation to say, nothing is sent (`Err`: retried): better late than twice.
    pub(super) async fn answered_already(&self, burst: &Burst) -> Result<(usize, Option<Messages>), Attempt> {
        if !burst.resumed {
            return Ok((0, None));
        }
        match self.conversations.fresh(&burst.session).await {
            Ok(messages) => Ok((answered_prefix(&messages, burst), Some(messages))),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the conversation to see what was answered; retrying");
                Err(Attempt::Retry)
            }
        }
    }

    /// The visitor's activity and the earlier turns (from `fresh` when the conversation was
    /// just read), read at once.
    pub(super) async fn gather(
        &self,
        session: &ConversationId,
        answering: &[InboxEntry],
        fresh: Option<Messages>,
    ) -> Gathered {
        let (activity, messages) = tokio::join!(self.source.activity_for(session), async {
            match fresh {
                Some(messages) => messages,
                None => self.conversation(session).await,
            }
        });
        let mut history = earlier_turns(&messages, answering, self.history_turns);
        let mut trigger = None;
        if let Some((line, offer)) = self.answers_an_offer(session).await {
            history.insert(0, ChatMessage::new(Role::System, line));
            trigger = Some(offer);
        }
        Gathered { activity, history, trigger }
    }

    /// The conversation's latest messages for the prompt. Empty when Crisp cannot say.
    async fn conversation(&self, session: &ConversationId) -> Messages {
        if self.history_turns == 0 {
            return Arc::default();
        }
        self.conversations.read(session).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the conversation's messages; answering without them");
            Arc::default()
        })
    }

    /// When the visitor writes within ten minutes of a proactive offer: the line that tells
    /// the model why the bot reached out. The first such message counts as engagement.
    async fn answers_an_offer(&self, session: &ConversationId) -> Option<(String, proactive::Trigger)> {
        let book = self.offers.as_ref()?;
        let now = proactive::now_secs();
        let (offer, first) = book.update(session, now, |gate| gate.visitor_wrote(now)).await??;
        if first {
            self.metrics.counter(telemetry::PROACTIVE_ENGAGED).increment(1);
            tracing::info!(trigger = offer.trigger.as_str(), "the visitor answered a proactive offer");
        }
        Some((reached_out_line(&offer, now), offer.trigger))
    }

    /// The widget set session data: links for proactive offers (same trust rules as the
    /// replies' links), and the replies' cached links are read afresh.
    pub(super) async fn session_data(&self, session: &ConversationId, data: &SessionData) {
        self.source.forget_links(session).await;
        let Some(book) = &self.offers else { return };
        let (autoplay_session, verified_user) = self.source.links_in(data);
        let now = proactive::now_secs();
        if let Some(autoplay_session) = &autoplay_session {
            book.link(LinkKey::Session(autoplay_session.as_str()), session, now).await;
        }
        if let Some(user) = &verified_user {
            book.link(LinkKey::User(user), session, now).await;
        }
        if autoplay_session.is_some() || verified_user.is_some() {
            tracing::info!(
                session = id_for_log(session.as_str()),
                by_session = autoplay_session.is_some(),
                by_signed_user = verified_user.is_some(),
                "conversation linked to its Autoplay activity"
            );
        }
    }
}

/// The newest `max_turns` earlier turns of the conversation (not the messages being answered),
/// oldest first: the visitor's as the user's, operators' (the bot's included) as the
/// assistant's; notes and events left out, each turn cut to [`HISTORY_TURN_CHARS`].
fn earlier_turns(messages: &[ConversationMessage], answering: &[InboxEntry], max_turns: usize) -> Vec<ChatMessage> {
    if max_turns == 0 {
        return Vec::new();
    }
    let current: Vec<Fingerprint> = answering.iter().filter_map(|e| e.message.fingerprint).collect();
    let mut turns: Vec<ChatMessage> = messages
        .iter()
        .filter(|m| m.fingerprint.is_none_or(|f| !current.contains(&f)))
        // Notes are for operators' eyes only: never in what the model is told or repeats.
        .filter(|m| m.kind != "note")
        .filter_map(|m| {
            let role = match m.from.as_str() {
                "user" => Role::User,
                "operator" => Role::Assistant,
                _ => return None,
            };
            let text: String = m.text.as_deref()?.chars().take(HISTORY_TURN_CHARS).collect();
            Some(ChatMessage::new(role, text))
        })
        .collect();
    let excess = turns.len().saturating_sub(max_turns);
    turns.drain(..excess);
    turns
}

/// How many of a resumed burst's first messages were answered already: up to the newest one
/// whose reply (by its derived fingerprint) is in the conversation.
fn answered_prefix(messages: &[ConversationMessage], burst: &Burst) -> usize {
    let present: std::collections::HashSet<Fingerprint> = messages.iter().filter_map(|m| m.fingerprint).collect();
    burst
        .entries
        .iter()
        .rposition(|e| present.contains(&reply_fingerprint(PostKind::Reply, &burst.session, &e.id.to_string())))
        .map_or(0, |at| at + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replies::test_support::{
        burst, context_source, conversation, crisp_at, note_said, said, said_fp, said_text,
    };
    use wiremock::matchers::{method, path_regex};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn step(crisp: &MockServer, history_turns: usize, dir: &std::path::Path) -> ContextStep {
        let client = crisp_at(&crisp.uri());
        let source = context_source(&client, dir);
        ContextStep::new(source, Conversations::new(client), history_turns, None, Metrics::new())
    }

    /// A Crisp stand-in whose conversation holds the bot's reply to entry 2 and the visitor's words.
    async fn crisp_with_reply_to_entry_2() -> MockServer {
        let server = MockServer::start().await;
        let reply = reply_fingerprint(PostKind::Reply, &conversation(), "2").get();
        Mock::given(method("GET"))
            .and(path_regex("/conversation/session_test/messages$"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"data": [
                {"type": "text", "from": "user", "content": "earlier question", "fingerprint": 1},
                {"type": "text", "from": "operator", "content": "the bot's reply", "fingerprint": reply},
            ]})))
            .mount(&server)
            .await;
        server
    }

    #[tokio::test]
    async fn only_a_resumed_burst_reads_the_conversation_for_replies_already_there() {
        let crisp = crisp_with_reply_to_entry_2().await;
        let dir = tempfile::tempdir().unwrap();
        let step = step(&crisp, 5, dir.path());
        let fresh = Burst { resumed: false, ..burst(3) };
        assert!(matches!(step.answered_already(&fresh).await, Ok((0, None))));
        assert!(crisp.received_requests().await.unwrap().is_empty(), "a fresh burst asks Crisp nothing");

        let Ok((already, Some(messages))) = step.answered_already(&burst(3)).await else { panic!() };
        assert_eq!((already, messages.len()), (2, 2), "the reply to entry 2 settles entries 1 and 2");
    }

    #[tokio::test]
    async fn without_the_conversation_a_resumed_burst_waits_rather_than_risk_a_second_reply() {
        let crisp = MockServer::start().await;
        Mock::given(method("GET")).respond_with(ResponseTemplate::new(503)).mount(&crisp).await;
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(step(&crisp, 5, dir.path()).answered_already(&burst(3)).await, Err(Attempt::Retry)));
    }

    #[tokio::test]
    async fn the_earlier_turns_come_from_the_conversation_unless_none_are_wanted() {
        let crisp = crisp_with_reply_to_entry_2().await;
        let dir = tempfile::tempdir().unwrap();
        let gathered = step(&crisp, 5, dir.path()).gather(&conversation(), &burst(1).entries, None).await;
        let turns: Vec<&str> = gathered.history.iter().map(|t| t.content.as_str()).collect();
        assert_eq!(turns, ["earlier question", "the bot's reply"]);
        assert_eq!(gathered.trigger, None);

        let reads = crisp.received_requests().await.unwrap().len();
        let none = step(&crisp, 0, dir.path()).gather(&conversation(), &burst(1).entries, None).await;
        assert!(none.history.is_empty());
        assert_eq!(crisp.received_requests().await.unwrap().len(), reads, "HISTORY_TURNS=0 reads no conversation");
    }

    fn reply_to(entry_id: u64) -> ConversationMessage {
        said_fp("operator", reply_fingerprint(PostKind::Reply, &conversation(), &entry_id.to_string()))
    }

    #[test]
    fn a_resumed_burst_settles_up_to_the_newest_message_whose_reply_is_there() {
        let b = burst(3);
        assert_eq!(answered_prefix(&[said("user", 100)], &b), 0, "nothing answered");
        assert_eq!(answered_prefix(&[said("user", 100), reply_to(1), said("user", 101)], &b), 1);
        assert_eq!(answered_prefix(&[reply_to(2)], &b), 2, "a reply covers the messages before it");
        assert_eq!(answered_prefix(&[reply_to(3), reply_to(1)], &b), 3);
        // A reply posted after a later message arrived does not answer that message.
        assert_eq!(answered_prefix(&[said("user", 100), said("user", 101), reply_to(1)], &b), 1);
        // A human's reply or a note is not the bot's reply.
        let note = said_fp("operator", reply_fingerprint(PostKind::Note, &conversation(), "3"));
        assert_eq!(answered_prefix(&[said("operator", 5), note], &b), 0);
    }

    #[test]
    fn earlier_turns_leave_out_the_messages_answered_notes_and_all_but_the_newest() {
        let answering = burst(1).entries; // the visitor's message with fingerprint 100
        let messages = vec![
            said_text("user", 1, "first question"),
            said_text("operator", 2, "first answer"),
            note_said(3, "an operators' note"),
            said_text("user", 4, &"long ".repeat(400)),
            said_text("operator", 5, "second answer"),
            said_text("user", 100, "the message being answered"),
        ];
        let turns = earlier_turns(&messages, &answering, 3);
        let seen: Vec<(Role, usize)> = turns.iter().map(|t| (t.role, t.content.chars().count())).collect();
        assert_eq!(
            seen,
            vec![(Role::Assistant, "first answer".len()), (Role::User, HISTORY_TURN_CHARS), (Role::Assistant, 13)],
            "the newest three earlier turns, oldest first, each cut to its bound"
        );
        assert!(turns.iter().all(|t| !t.content.contains("being answered") && !t.content.contains("note")));
        assert!(earlier_turns(&messages, &answering, 0).is_empty(), "HISTORY_TURNS=0: none");
    }
}
