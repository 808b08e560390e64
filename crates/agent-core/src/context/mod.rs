//! Per-visitor context: each Autoplay session's recent actions and latest summary, kept apart
//! so that an answer is grounded in that visitor's activity and no one else's.
//!
//! [`ContextStore`] is the one interface both binaries use; [`FileStore`] (files under a data
//! directory) is the embedded default. A networked backend implements the same trait.

mod file_store;
mod redis_store;
mod render;

pub use file_store::FileStore;
pub use redis_store::RedisStore;
pub use render::{NO_ACTIVITY, render_context, render_context_counted, tail_within};

use crate::payload::{Action, ActionsBatch};
use crate::proactive::Firing;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the store knows of one session, newest last.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionContext {
    pub summary: Option<String>,
    pub actions: Vec<Action<'static>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("context store I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("context store unavailable: {0}")]
    Unavailable(String),
}

/// Bounds every backend applies.
#[derive(Debug, Clone)]
pub struct StoreLimits {
    /// Newest actions kept per session.
    pub max_actions: usize,
    /// A session, user or conversation link idle this long is gone.
    pub ttl: Duration,
}

pub trait ContextStore: Send + Sync + 'static {
    /// Appends a batch's actions to its session and records the user and conversation links
    /// it carries.
    fn record_batch<'a>(
        &'a self,
        batch: &'a ActionsBatch<'_>,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Several batches at once, in order (the listener's writer catching up); backends may do
    /// better than one call per batch.
    fn record_batches<'a>(
        &'a self,
        batches: &'a [ActionsBatch<'_>],
        now: SystemTime,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            for batch in batches {
                self.record_batch(batch, now).await?;
            }
            Ok(())
        })
    }

    /// Replaces the session's latest summary.
    fn record_summary<'a>(
        &'a self,
        session: &'a str,
        summary: &'a str,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The session's context, `None` when unknown or expired.
    fn session_context<'a>(
        &'a self,
        session: &'a str,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Option<SessionContext>, StoreError>>;

    /// The latest session seen for an Autoplay/PostHog user id.
    fn latest_session_for_user<'a>(
        &'a self,
        user_id: &'a str,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>>;

    /// The session whose batches carried this chat `conversation_id`.
    fn session_for_conversation<'a>(
        &'a self,
        conversation_id: &'a str,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>>;

    /// Deletes what expired; returns how many records went.
    fn sweep_expired(&self, now: SystemTime) -> BoxFuture<'_, Result<usize, StoreError>>;

    /// Records proactive trigger firings, in order, for the webhook to read
    /// ([`crate::proactive`]).
    fn record_firings<'a>(&'a self, firings: &'a [Firing], now: SystemTime) -> BoxFuture<'a, Result<(), StoreError>>;
}
