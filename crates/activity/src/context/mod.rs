//! Per-visitor context: each Autoplay session's recent actions and latest summary, kept apart
//! so that an answer is grounded in that visitor's activity and no one else's.
//!
//! Two backends, [`FileStore`] (files under a data directory, the embedded default) and
//! [`RedisStore`], behind two sides: [`StoreWriter`], the listener's alone, and
//! [`StoreReader`], the webhook's.

mod file_store;
mod redis_store;
mod render;

pub use file_store::FileStore;
pub use redis_store::RedisStore;
pub use render::{NO_ACTIVITY, render_context, render_context_counted, tail_within};

use crate::action::{ActionRecord, BatchRecord};
use crate::firing::Firing;
use crate::ids::AutoplaySessionId;
use std::time::{Duration, SystemTime};

/// What the store knows of one session, newest last.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionContext {
    pub summary: Option<String>,
    pub actions: Vec<ActionRecord<'static>>,
}

/// Why the store could not do what was asked; each keeps its cause.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("context store I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Redis is down or refused the command (a later call may work). The outage itself is
    /// logged once, by the connection; this message only names the error's category.
    #[error("context store unavailable ({})", .0.0.category())]
    Unavailable(#[from] plumbing::redis_conn::RedisDown),
    /// The file store's blocking task did not finish (it panicked, or the runtime is shutting down).
    #[error("context store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Bounds every backend applies.
#[derive(Debug, Clone)]
pub struct StoreLimits {
    /// Newest actions kept per session.
    pub max_actions: usize,
    /// A session, user or conversation link idle this long is gone.
    pub ttl: Duration,
}

/// The two backends; one enum, so the calls are plain `async fn`s with no boxing.
#[derive(Clone)]
pub(crate) enum Backend {
    File(FileStore),
    Redis(RedisStore),
}

/// Calls the same method on whichever backend is in use.
macro_rules! on_backend {
    ($backend:expr, $store:ident => $call:expr) => {
        match $backend {
            Backend::File($store) => $call.await,
            Backend::Redis($store) => $call.await,
        }
    };
}

/// The write side, the listener's alone: it appends actions and summaries, records links and
/// proactive firings, and sweeps what expired. One listener per `DATA_DIR` (or Redis prefix):
/// the file store's appenders assume they are the only writer. Not `Clone`, so a process has
/// one.
pub struct StoreWriter(pub(crate) Backend);

/// The read side, the webhook's: a session's context and the links that name a session.
/// Cheap to clone; shared by the replies, the proactive offers and `/mcp`.
#[derive(Clone)]
pub struct StoreReader(pub(crate) Backend);

impl StoreWriter {
    pub fn file(store: FileStore) -> Self {
        Self(Backend::File(store))
    }

    pub fn redis(store: RedisStore) -> Self {
        Self(Backend::Redis(store))
    }

    /// Appends a batch's actions to its session and records the user and conversation links
    /// it carries.
    pub async fn record_batch(&self, batch: &BatchRecord<'_>, now: SystemTime) -> Result<(), StoreError> {
        self.record_batches(std::slice::from_ref(batch), now).await
    }

    /// Several batches, in order (the writer catching up): the file store groups them by
    /// session, one append each.
    pub async fn record_batches(&self, batches: &[BatchRecord<'_>], now: SystemTime) -> Result<(), StoreError> {
        on_backend!(&self.0, store => store.record_batches(batches, now))
    }

    /// Replaces the session's latest summary.
    pub async fn record_summary(&self, session: &str, summary: &str, now: SystemTime) -> Result<(), StoreError> {
        on_backend!(&self.0, store => store.record_summary(session, summary, now))
    }

    /// Deletes what expired; returns how many records went.
    pub async fn sweep_expired(&self, now: SystemTime) -> Result<usize, StoreError> {
        on_backend!(&self.0, store => store.sweep_expired(now))
    }

    /// Records proactive trigger firings, in order, for the webhook to read
    /// ([`crate::firing`]).
    pub async fn record_firings(&self, firings: &[Firing], now: SystemTime) -> Result<(), StoreError> {
        on_backend!(&self.0, store => store.record_firings(firings, now))
    }
}

impl StoreReader {
    pub fn file(store: FileStore) -> Self {
        Self(Backend::File(store))
    }

    pub fn redis(store: RedisStore) -> Self {
        Self(Backend::Redis(store))
    }

    /// The session's context, `None` when unknown or expired.
    pub async fn session_context(
        &self,
        session: &AutoplaySessionId,
        now: SystemTime,
    ) -> Result<Option<SessionContext>, StoreError> {
        on_backend!(&self.0, store => store.session_context(session.as_str(), now))
    }

    /// The latest session seen for an Autoplay/PostHog user id.
    pub async fn latest_session_for_user(
        &self,
        user_id: &str,
        now: SystemTime,
    ) -> Result<Option<AutoplaySessionId>, StoreError> {
        let session = on_backend!(&self.0, store => store.latest_session_for_user(user_id, now))?;
        Ok(session.and_then(|s| AutoplaySessionId::from_client(&s)))
    }

    /// The session whose batches carried this chat `conversation_id`.
    pub async fn session_for_conversation(
        &self,
        conversation_id: &str,
        now: SystemTime,
    ) -> Result<Option<AutoplaySessionId>, StoreError> {
        let session = on_backend!(&self.0, store => store.session_for_conversation(conversation_id, now))?;
        Ok(session.and_then(|s| AutoplaySessionId::from_client(&s)))
    }
}
