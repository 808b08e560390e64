//! One shared Redis connection for the store and the coordination of webhook replicas:
//! connects lazily (a Redis that is down at start-up is not fatal), reconnects by itself, and
//! logs an outage once, and its end once.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Clone)]
pub struct RedisConn {
    manager: ConnectionManager,
    prefix: Arc<str>,
    down: Arc<AtomicBool>,
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConn").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// Why Redis could not be used: the Redis error, kept as the cause. Redis errors never carry
/// the URL (it may hold a password); the message names only the error's category.
#[derive(Debug, thiserror::Error)]
#[error("Redis unavailable: {}", .0.category())]
pub struct RedisDown(#[source] pub redis::RedisError);

impl RedisConn {
    /// Prepares the connection without connecting yet. The error is the parser's or the
    /// manager's, never the URL.
    pub fn lazy(url: &str, prefix: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self { manager, prefix: prefix.into(), down: Arc::new(AtomicBool::new(false)) })
    }

    /// A key under this deployment's prefix.
    pub fn key(&self, parts: &[&str]) -> String {
        let mut key = String::with_capacity(self.prefix.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>());
        key.push_str(&self.prefix);
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                key.push(':');
            }
            key.push_str(part);
        }
        key
    }

    pub fn connection(&self) -> ConnectionManager {
        self.manager.clone()
    }

    /// Passes a result through, logging the first failure of an outage and the recovery.
    pub fn observe<T>(&self, result: redis::RedisResult<T>) -> Result<T, RedisDown> {
        match result {
            Ok(value) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis reachable again");
                }
                Ok(value)
            }
            Err(e) => {
                if !self.down.swap(true, Ordering::Relaxed) {
                    tracing::error!(reason = %e.category(), "Redis unavailable; carrying on without it until it is back");
                }
                Err(RedisDown(e))
            }
        }
    }
}

/// The Redis a test that needs one uses: `TEST_REDIS_URL`. Without it the test fails, unless
/// `SKIP_REDIS_TESTS=1` says to skip it, which it then says (`None`). `what` names the test.
pub fn redis_for_tests(what: &str) -> Option<String> {
    match std::env::var("TEST_REDIS_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var("SKIP_REDIS_TESTS").is_ok_and(|v| v == "1") => {
            eprintln!("skipped (SKIP_REDIS_TESTS=1, no TEST_REDIS_URL): {what}");
            None
        }
        _ => {
            panic!("{what} needs Redis: set TEST_REDIS_URL (scripts/test starts one), or SKIP_REDIS_TESTS=1 to skip it")
        }
    }
}
