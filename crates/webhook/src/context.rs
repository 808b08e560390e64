//! Where a reply's "Current User Activity" comes from: the visitor's own Autoplay session,
//! found through the links below, or (opt-in, single-visitor set-ups) the shared file.
//!
//! A Crisp conversation is linked to an Autoplay session, first match wins:
//! 1. `autoplay_session_id` in the conversation's session data (set by the site's widget);
//!    with `LINK_REQUIRE_SIGNED_SESSION`, only with `autoplay_session_sig` = hex
//!    HMAC-SHA256(LINK_SECRET, session id) beside it;
//! 2. `autoplay_user_id` with `autoplay_user_sig` = hex HMAC-SHA256(LINK_SECRET, user id),
//!    computed by the site's backend: that user's latest session. Unsigned or badly signed
//!    user ids are ignored, since anyone can type someone else's id into their browser;
//! 3. with `TRUST_STREAM_CONVERSATION_ID` only, an actions batch whose `conversation_id` is
//!    this Crisp session id (the stream's field is the visitor's claim unless the operator's
//!    Autoplay connector sets it server-side);
//! 4. otherwise no activity at all.

use activity::AutoplaySessionId;
use activity::context::{NO_ACTIVITY, SessionContext, StoreError, StoreReader, render_context_counted, tail_within};
use crisp::{ConversationId, CrispClient, SessionData, id_for_log};
use plumbing::auth::verify_hmac_sha256_hex;
use plumbing::{ExposeSecret, SecretString};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// How long a conversation's session data is reused before asking Crisp again.
const META_CACHE_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ContextScope {
    /// Each visitor's own activity (default).
    Session,
    /// The whole shared activity file for everyone: the reference behaviour, for single-visitor
    /// set-ups only.
    Shared,
}

/// How the context was found (for logs and traces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkedBy {
    SessionData,
    SignedUser,
    Conversation,
    SharedFile,
    Nothing,
}

pub struct Activity {
    pub text: String,
    pub linked_by: LinkedBy,
    pub autoplay_session: Option<AutoplaySessionId>,
    /// What `text` was rendered from: the latest summary and the actions the text holds
    /// (the newest within the character budget), oldest first. `None` when nothing is linked
    /// or the text comes from the shared file.
    pub context: Option<SessionContext>,
}

/// The links a conversation's session data offers.
#[derive(Clone, Default)]
struct MetaLinks {
    session_id: Option<AutoplaySessionId>,
    /// Only present when its signature checked out.
    verified_user_id: Option<String>,
}

/// What the links of a conversation may rest on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkTrust {
    /// `TRUST_STREAM_CONVERSATION_ID`: the stream's `conversation_id` links on its own (the
    /// operator's Autoplay connector sets it server-side).
    pub stream_conversation_id: bool,
    /// `LINK_REQUIRE_SIGNED_SESSION`: `autoplay_session_id` counts only with a valid
    /// `autoplay_session_sig`.
    pub require_signed_session: bool,
}

/// Cloned, it shares its cache of links: the replies and `/mcp` use one.
#[derive(Clone)]
pub struct ContextSource {
    pub scope: ContextScope,
    pub event_data_path: PathBuf,
    pub store: Option<StoreReader>,
    pub crisp: CrispClient,
    pub link_secret: Option<SecretString>,
    pub max_chars: usize,
    /// How far the conversation's links are trusted (`TRUST_STREAM_CONVERSATION_ID`,
    /// `LINK_REQUIRE_SIGNED_SESSION`).
    pub trust: LinkTrust,
    meta_cache: moka::future::Cache<ConversationId, MetaLinks>,
}

impl ContextSource {
    pub fn new(
        scope: ContextScope,
        event_data_path: PathBuf,
        store: Option<StoreReader>,
        crisp: CrispClient,
        link_secret: Option<SecretString>,
        max_chars: usize,
        trust: LinkTrust,
    ) -> Self {
        Self {
            scope,
            event_data_path,
            store,
            crisp,
            link_secret,
            max_chars,
            trust,
            meta_cache: moka::future::Cache::builder().max_capacity(50_000).time_to_live(META_CACHE_TTL).build(),
        }
    }

    /// The activity text for a Crisp conversation.
    pub async fn activity_for(&self, crisp_session: &ConversationId) -> Activity {
        match (self.scope, &self.store) {
            (ContextScope::Shared, _) | (_, None) => self.shared_file().await,
            (ContextScope::Session, Some(store)) => self.own_session(store, crisp_session).await,
        }
    }

    async fn shared_file(&self) -> Activity {
        let text = match tokio::fs::read(&self.event_data_path).await {
            Ok(bytes) => tail_within(&String::from_utf8_lossy(&bytes), self.max_chars).to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                tracing::warn!(path = %self.event_data_path.display(), error = %e, "cannot read the activity file; answering without it");
                String::new()
            }
        };
        Activity { text, linked_by: LinkedBy::SharedFile, autoplay_session: None, context: None }
    }

    async fn own_session(&self, store: &StoreReader, crisp_session: &ConversationId) -> Activity {
        let now = SystemTime::now();
        let links = self.meta_links(crisp_session).await;
        let mut candidates: Vec<(LinkedBy, AutoplaySessionId)> = Vec::new();
        if let Some(session) = links.session_id {
            candidates.push((LinkedBy::SessionData, session));
        }
        if let Some(user) = links.verified_user_id {
            match store.latest_session_for_user(&user, now).await {
                Ok(Some(session)) => candidates.push((LinkedBy::SignedUser, session)),
                Ok(None) => {}
                Err(e) => lookup_failed(&e),
            }
        }
        // The stream's claim links on its own only when the operator trusts it; otherwise the
        // links above are the conversation's own, and a claim can add nothing they lack.
        if self.trust.stream_conversation_id {
            match store.session_for_conversation(crisp_session.as_str(), now).await {
                Ok(Some(session)) => candidates.push((LinkedBy::Conversation, session)),
                Ok(None) => {}
                Err(e) => lookup_failed(&e),
            }
        }
        for (linked_by, session) in candidates {
            match store.session_context(&session, now).await {
                Ok(Some(mut context)) => {
                    let (text, kept) = render_context_counted(&context, self.max_chars);
                    if !text.is_empty() {
                        context.actions.drain(..context.actions.len() - kept);
                        return Activity { text, linked_by, autoplay_session: Some(session), context: Some(context) };
                    }
                }
                Ok(None) => {}
                Err(e) => lookup_failed(&e),
            }
        }
        Activity { text: NO_ACTIVITY.to_owned(), linked_by: LinkedBy::Nothing, autoplay_session: None, context: None }
    }

    /// The latest session of an Autoplay/PostHog user id, through the store's user link
    /// (for trusted callers only: the id is not checked against anything), with all the
    /// actions the store keeps. `None` with the shared scope, or when nothing is recorded.
    pub async fn user_activity(&self, user_id: &str) -> Option<SessionContext> {
        let store = self.store.as_ref().filter(|_| self.scope == ContextScope::Session)?;
        let now = SystemTime::now();
        let session = match store.latest_session_for_user(user_id, now).await {
            Ok(session) => session?,
            Err(e) => {
                lookup_failed(&e);
                return None;
            }
        };
        match store.session_context(&session, now).await {
            Ok(context) => context,
            Err(e) => {
                lookup_failed(&e);
                None
            }
        }
    }

    /// Whether the conversation's own links (its session data, or its signed user's latest
    /// session) point to `autoplay_session`: what makes a stream's claim that the session is
    /// in this conversation believable.
    pub async fn conversation_links_to(
        &self,
        crisp_session: &ConversationId,
        autoplay_session: &AutoplaySessionId,
    ) -> bool {
        let links = self.meta_links(crisp_session).await;
        if links.session_id.as_ref() == Some(autoplay_session) {
            return true;
        }
        let (Some(user), Some(store)) = (links.verified_user_id, &self.store) else { return false };
        match store.latest_session_for_user(&user, SystemTime::now()).await {
            Ok(latest) => latest.as_ref() == Some(autoplay_session),
            Err(e) => {
                lookup_failed(&e);
                false
            }
        }
    }

    async fn meta_links(&self, crisp_session: &ConversationId) -> MetaLinks {
        if let Some(links) = self.meta_cache.get(crisp_session).await {
            return links;
        }
        match self.crisp.session_data(crisp_session).await {
            Ok(data) => {
                let links = self.links_from(&data);
                self.meta_cache.insert(crisp_session.clone(), links.clone()).await;
                links
            }
            Err(e) => {
                tracing::warn!(session = id_for_log(crisp_session.as_str()), error = %e, "cannot read the conversation's session data");
                MetaLinks::default()
            }
        }
    }

    /// The Autoplay session id and the verified user id that session data links to.
    pub fn links_in(&self, data: &SessionData) -> (Option<AutoplaySessionId>, Option<String>) {
        let links = self.links_from(data);
        (links.session_id, links.verified_user_id)
    }

    /// Forgets the cached links of a conversation (its session data changed).
    pub async fn forget_links(&self, crisp_session: &ConversationId) {
        self.meta_cache.invalidate(crisp_session).await;
    }

    fn links_from(&self, data: &SessionData) -> MetaLinks {
        let field = |name: &str| data.get(name).map(str::to_owned);
        let verified_user_id = match (field("autoplay_user_id"), field("autoplay_user_sig"), &self.link_secret) {
            (Some(user), Some(sig), Some(secret)) => {
                if verify_hmac_sha256_hex(secret.expose_secret().as_bytes(), user.as_bytes(), &sig) {
                    Some(user)
                } else {
                    tracing::warn!("autoplay_user_id with a wrong signature ignored");
                    None
                }
            }
            (Some(_), _, _) => {
                tracing::debug!("autoplay_user_id without a verifiable signature ignored");
                None
            }
            _ => None,
        };
        let session_id = match (field("autoplay_session_id"), self.trust.require_signed_session) {
            (Some(session), false) => Some(session),
            (Some(session), true) => match (field("autoplay_session_sig"), &self.link_secret) {
                (Some(sig), Some(secret))
                    if verify_hmac_sha256_hex(secret.expose_secret().as_bytes(), session.as_bytes(), &sig) =>
                {
                    Some(session)
                }
                _ => {
                    tracing::warn!("autoplay_session_id without a valid autoplay_session_sig ignored");
                    None
                }
            },
            (None, _) => None,
        };
        // Checked where it enters: a placeholder or an over-long id links nothing.
        let session_id = session_id.and_then(|session| AutoplaySessionId::from_client(&session));
        MetaLinks { session_id, verified_user_id }
    }
}

/// Store outages are logged once by the connection; other failures each time.
fn lookup_failed(e: &StoreError) {
    match e {
        StoreError::Unavailable(_) => tracing::debug!(error = %e, "context store lookup failed"),
        StoreError::Io(_) | StoreError::Task(_) => tracing::warn!(error = %e, "context store lookup failed"),
    }
}
