//! Binds each MCP request signature to the one conversation it was first used with.
//!
//! Crisp's MCP request signature covers the timestamp, the website id and the body, not the
//! `X-Crisp-Session-Id` header, so the same signed bytes could be sent again, within the
//! signature's window, naming another conversation. The first use of a signature records its
//! conversation (for as long as the signature can be valid); a later use with another
//! conversation is refused, the same conversation again is allowed (a retry). On Redis every
//! replica agrees; while Redis is unreachable (or without it) this process's memory decides.

use plumbing::redis_conn::RedisConn;
use std::time::Duration;

/// Signatures remembered in memory at most (the oldest go first).
const MAX_LOCAL: u64 = 200_000;

pub struct SignatureBindings {
    local: moka::future::Cache<String, String>,
    shared: Option<RedisConn>,
    ttl: Duration,
    bind: redis::Script,
}

impl SignatureBindings {
    /// `ttl`: how long a signature can be accepted (twice the timestamp window: a timestamp
    /// may be that far behind or ahead).
    pub fn new(ttl: Duration, shared: Option<RedisConn>) -> Self {
        Self {
            local: moka::future::Cache::builder().max_capacity(MAX_LOCAL).time_to_live(ttl).build(),
            shared,
            ttl,
            // KEYS: the binding. ARGV: conversation, ttl s. Returns the bound conversation.
            bind: redis::Script::new(
                r"local bound = redis.call('GET', KEYS[1])
                  if bound then return bound end
                  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
                  return ARGV[1]",
            ),
        }
    }

    /// Records `conversation` (empty: none) for `signature` on its first use; true when the
    /// signature is now bound to `conversation`, false when it was used with another one.
    pub async fn bind(&self, signature: &str, conversation: &str) -> bool {
        if let Some(conn) = &self.shared {
            let mut invocation = self.bind.key(conn.key(&["mcp", "sig", signature]));
            invocation.arg(conversation).arg(self.ttl.as_secs().max(1));
            let mut con = conn.connection();
            if let Ok(bound) = conn.observe(invocation.invoke_async::<String>(&mut con).await) {
                // Remembered here too, so an outage right after does not forget it.
                self.local.insert(signature.to_owned(), bound.clone()).await;
                return bound == conversation;
            }
        }
        let entry = self.local.entry(signature.to_owned()).or_insert(conversation.to_owned()).await;
        entry.value() == conversation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_signature_serves_the_first_conversation_only() {
        let bindings = SignatureBindings::new(Duration::from_secs(240), None);
        assert!(bindings.bind("aa", "session_1").await);
        assert!(bindings.bind("aa", "session_1").await, "a retry with the same conversation");
        assert!(!bindings.bind("aa", "session_2").await);
        assert!(!bindings.bind("aa", "").await, "nor without a conversation");
        assert!(bindings.bind("bb", "").await);
        assert!(!bindings.bind("bb", "session_1").await);
    }
}
