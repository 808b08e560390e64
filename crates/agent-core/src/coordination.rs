//! Who answers which visitor message, and when: the state the webhook's delivery guarantees
//! rest on. [`MemoryCoordinator`] serves one process; [`RedisCoordinator`] lets several webhook
//! replicas share it (a message delivered to both is answered once, a conversation by one
//! replica at a time, in order).
//!
//! A conversation's messages go into a queue; whoever enqueues into an idle conversation holds
//! it and answers bursts from the queue until it is empty, then lets go, atomically with the
//! emptiness check so no message is stranded.

use crate::context::BoxFuture;
use crate::crisp::VisitorMessage;
use crate::redis_conn::RedisConn;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error("coordination store unavailable: {0}")]
    Unavailable(String),
    #[error("too many messages waiting")]
    Overloaded,
}

/// Something the bot itself sent, to tell its own echo from a human operator.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OwnMark {
    Fingerprint(u64),
    /// The text: the echo can arrive before Crisp's answer to the send carries the fingerprint.
    Text(String),
}

impl OwnMark {
    fn key_part(&self) -> String {
        match self {
            OwnMark::Fingerprint(f) => format!("f{f}"),
            OwnMark::Text(text) => format!("t{}", hex::encode(&Sha256::digest(text.as_bytes())[..12])),
        }
    }
}

/// How long each kind of record lives.
#[derive(Debug, Clone)]
pub struct CoordTimings {
    /// Delivered message ids, to drop redeliveries.
    pub seen: Duration,
    /// Silence after a human operator wrote.
    pub human_takeover: Duration,
    /// The bot's own messages.
    pub own: Duration,
    /// A replica's hold on a conversation, renewed while it writes a reply.
    pub lease: Duration,
}

impl Default for CoordTimings {
    fn default() -> Self {
        Self {
            seen: Duration::from_secs(24 * 3600),
            human_takeover: Duration::from_secs(1800),
            own: Duration::from_secs(3600),
            lease: Duration::from_secs(90),
        }
    }
}

pub trait Coordinator: Send + Sync + 'static {
    /// True the first time this message is seen (within the `seen` window).
    fn first_delivery<'a>(&'a self, session: &'a str, fingerprint: u64) -> BoxFuture<'a, Result<bool, CoordError>>;
    /// Forgets a delivery that could not be taken, so its redelivery is not a duplicate.
    fn forget_delivery<'a>(&'a self, session: &'a str, fingerprint: u64) -> BoxFuture<'a, Result<(), CoordError>>;
    fn set_human_takeover<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<(), CoordError>>;
    fn human_has<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<bool, CoordError>>;
    fn remember_own<'a>(&'a self, session: &'a str, mark: &'a OwnMark) -> BoxFuture<'a, Result<(), CoordError>>;
    fn is_own<'a>(&'a self, session: &'a str, mark: &'a OwnMark) -> BoxFuture<'a, Result<bool, CoordError>>;
    /// Queues a message. `Ok(true)`: the caller now holds the conversation and must answer it
    /// with [`Coordinator::next_burst`] until that comes back empty.
    fn enqueue<'a>(&'a self, message: &'a VisitorMessage) -> BoxFuture<'a, Result<bool, CoordError>>;
    /// The messages waiting in a held conversation, oldest first; empty means the hold is
    /// released (or was lost to another replica).
    fn next_burst<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<Vec<VisitorMessage>, CoordError>>;
    /// Renews the hold while a long reply is written.
    fn keep_holding<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<(), CoordError>>;
}

/// One process's coordination, in memory, bounded.
pub struct MemoryCoordinator {
    seen: moka::sync::Cache<(String, u64), ()>,
    human: moka::sync::Cache<String, ()>,
    own: moka::sync::Cache<(String, OwnMark), ()>,
    queues: Mutex<Queues>,
    limits: QueueLimits,
}

/// Bounds on the messages waiting to be answered.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Across all conversations (this process's memory only); beyond it enqueueing fails.
    pub max_waiting: usize,
    /// Per conversation: only the newest are kept, since a burst's prompt carries no more.
    pub max_per_conversation: usize,
}

#[derive(Default)]
struct Queues {
    waiting: HashMap<String, Vec<VisitorMessage>>,
    held: HashSet<String>,
    total: usize,
}

impl MemoryCoordinator {
    pub fn new(timings: &CoordTimings, limits: QueueLimits) -> Self {
        Self {
            seen: moka::sync::Cache::builder().max_capacity(200_000).time_to_live(timings.seen).build(),
            human: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(timings.human_takeover.max(Duration::from_millis(1)))
                .build(),
            own: moka::sync::Cache::builder().max_capacity(200_000).time_to_live(timings.own).build(),
            queues: Mutex::new(Queues::default()),
            limits,
        }
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

impl Coordinator for MemoryCoordinator {
    fn first_delivery<'a>(&'a self, session: &'a str, fingerprint: u64) -> BoxFuture<'a, Result<bool, CoordError>> {
        ready(Ok(self.seen.entry((session.to_owned(), fingerprint)).or_insert(()).is_fresh()))
    }

    fn forget_delivery<'a>(&'a self, session: &'a str, fingerprint: u64) -> BoxFuture<'a, Result<(), CoordError>> {
        self.seen.invalidate(&(session.to_owned(), fingerprint));
        ready(Ok(()))
    }

    fn set_human_takeover<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<(), CoordError>> {
        self.human.insert(session.to_owned(), ());
        ready(Ok(()))
    }

    fn human_has<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<bool, CoordError>> {
        ready(Ok(self.human.contains_key(session)))
    }

    fn remember_own<'a>(&'a self, session: &'a str, mark: &'a OwnMark) -> BoxFuture<'a, Result<(), CoordError>> {
        self.own.insert((session.to_owned(), mark.clone()), ());
        ready(Ok(()))
    }

    fn is_own<'a>(&'a self, session: &'a str, mark: &'a OwnMark) -> BoxFuture<'a, Result<bool, CoordError>> {
        ready(Ok(self.own.contains_key(&(session.to_owned(), mark.clone()))))
    }

    fn enqueue<'a>(&'a self, message: &'a VisitorMessage) -> BoxFuture<'a, Result<bool, CoordError>> {
        let mut queues = self.queues();
        if queues.total >= self.limits.max_waiting {
            return ready(Err(CoordError::Overloaded));
        }
        let queue = queues.waiting.entry(message.session_id.clone()).or_default();
        queue.push(message.clone());
        let excess = queue.len().saturating_sub(self.limits.max_per_conversation.max(1));
        queue.drain(..excess);
        queues.total = (queues.total + 1).saturating_sub(excess);
        count_left_out(excess);
        let takes_hold = queues.held.insert(message.session_id.clone());
        ready(Ok(takes_hold))
    }

    fn next_burst<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<Vec<VisitorMessage>, CoordError>> {
        let mut queues = self.queues();
        let burst = queues.waiting.remove(session).unwrap_or_default();
        if burst.is_empty() {
            queues.held.remove(session);
        }
        queues.total -= burst.len();
        ready(Ok(burst))
    }

    fn keep_holding<'a>(&'a self, _session: &'a str) -> BoxFuture<'a, Result<(), CoordError>> {
        ready(Ok(()))
    }
}

/// Older messages of a conversation left out of its next burst.
fn count_left_out(dropped: usize) {
    if dropped > 0 {
        metrics::counter!(crate::telemetry::BURST_MESSAGES_LEFT_OUT).increment(dropped as u64);
        tracing::debug!(dropped, "older waiting messages left out of the next burst");
    }
}

/// Coordination shared by webhook replicas through Redis.
pub struct RedisCoordinator {
    conn: RedisConn,
    timings: CoordTimings,
    /// This replica's name on the conversations it holds.
    owner: String,
    max_per_conversation: usize,
    enqueue: redis::Script,
    next_burst: redis::Script,
    keep_holding: redis::Script,
}

/// Messages queued for a conversation expire after this (a replica that died holding it).
const QUEUE_TTL: Duration = Duration::from_secs(600);

impl RedisCoordinator {
    pub fn new(conn: RedisConn, timings: CoordTimings, max_per_conversation: usize) -> Self {
        Self {
            conn,
            timings,
            max_per_conversation: max_per_conversation.max(1),
            owner: format!("{:016x}", rand::random::<u64>()),
            enqueue: redis::Script::new(
                r"local len = redis.call('RPUSH', KEYS[1], ARGV[1])
                  local cap = tonumber(ARGV[5])
                  local dropped = 0
                  if len > cap then
                    redis.call('LTRIM', KEYS[1], -cap, -1)
                    dropped = len - cap
                  end
                  redis.call('PEXPIRE', KEYS[1], ARGV[4])
                  if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return {1, dropped} end
                  return {0, dropped}",
            ),
            next_burst: redis::Script::new(
                r"local holder = redis.call('GET', KEYS[2])
                  if holder and holder ~= ARGV[1] then return {} end
                  local items = redis.call('LRANGE', KEYS[1], 0, -1)
                  if #items == 0 then
                    if holder then redis.call('DEL', KEYS[2]) end
                    return {}
                  end
                  redis.call('DEL', KEYS[1])
                  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
                  return items",
            ),
            keep_holding: redis::Script::new(
                r"if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
                  return 0",
            ),
        }
    }

    fn unavailable(e: crate::redis_conn::RedisDown) -> CoordError {
        CoordError::Unavailable(e.0)
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, CoordError> {
        let mut con = self.conn.connection();
        self.conn.observe(cmd.query_async(&mut con).await).map_err(Self::unavailable)
    }

    fn ms(d: Duration) -> u64 {
        d.as_millis().max(1) as u64
    }
}

impl Coordinator for RedisCoordinator {
    fn first_delivery<'a>(&'a self, session: &'a str, fingerprint: u64) -> BoxFuture<'a, Result<bool, CoordError>> {
        Box::pin(async move {
            let key = self.conn.key(&["seen", session, &fingerprint.to_string()]);
            let set: Option<String> = self
                .query(redis::cmd("SET").arg(key).arg(1).arg("NX").arg("PX").arg(Self::ms(self.timings.seen)))
                .await?;
            Ok(set.is_some())
        })
    }

    fn forget_delivery<'a>(&'a self, session: &'a str, fingerprint: u64) -> BoxFuture<'a, Result<(), CoordError>> {
        Box::pin(async move {
            let key = self.conn.key(&["seen", session, &fingerprint.to_string()]);
            self.query(redis::cmd("DEL").arg(key)).await
        })
    }

    fn set_human_takeover<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<(), CoordError>> {
        Box::pin(async move {
            let key = self.conn.key(&["human", session]);
            self.query(redis::cmd("SET").arg(key).arg(1).arg("PX").arg(Self::ms(self.timings.human_takeover))).await
        })
    }

    fn human_has<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<bool, CoordError>> {
        Box::pin(async move { self.query(redis::cmd("EXISTS").arg(self.conn.key(&["human", session]))).await })
    }

    fn remember_own<'a>(&'a self, session: &'a str, mark: &'a OwnMark) -> BoxFuture<'a, Result<(), CoordError>> {
        Box::pin(async move {
            let key = self.conn.key(&["own", session, &mark.key_part()]);
            self.query(redis::cmd("SET").arg(key).arg(1).arg("PX").arg(Self::ms(self.timings.own))).await
        })
    }

    fn is_own<'a>(&'a self, session: &'a str, mark: &'a OwnMark) -> BoxFuture<'a, Result<bool, CoordError>> {
        Box::pin(async move {
            self.query(redis::cmd("EXISTS").arg(self.conn.key(&["own", session, &mark.key_part()]))).await
        })
    }

    fn enqueue<'a>(&'a self, message: &'a VisitorMessage) -> BoxFuture<'a, Result<bool, CoordError>> {
        Box::pin(async move {
            let encoded = serde_json::to_string(message).map_err(|e| CoordError::Unavailable(e.to_string()))?;
            let mut invocation = self.enqueue.key(self.conn.key(&["queue", &message.session_id]));
            invocation
                .key(self.conn.key(&["hold", &message.session_id]))
                .arg(encoded)
                .arg(&self.owner)
                .arg(Self::ms(self.timings.lease))
                .arg(Self::ms(QUEUE_TTL))
                .arg(self.max_per_conversation);
            let mut con = self.conn.connection();
            let (took, dropped): (i64, i64) =
                self.conn.observe(invocation.invoke_async(&mut con).await).map_err(Self::unavailable)?;
            count_left_out(usize::try_from(dropped).unwrap_or(0));
            Ok(took == 1)
        })
    }

    fn next_burst<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<Vec<VisitorMessage>, CoordError>> {
        Box::pin(async move {
            let mut invocation = self.next_burst.key(self.conn.key(&["queue", session]));
            invocation.key(self.conn.key(&["hold", session])).arg(&self.owner).arg(Self::ms(self.timings.lease));
            let mut con = self.conn.connection();
            let items: Vec<String> =
                self.conn.observe(invocation.invoke_async(&mut con).await).map_err(Self::unavailable)?;
            Ok(items.iter().filter_map(|item| serde_json::from_str(item).ok()).collect())
        })
    }

    fn keep_holding<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<(), CoordError>> {
        Box::pin(async move {
            let mut invocation = self.keep_holding.key(self.conn.key(&["hold", session]));
            invocation.arg(&self.owner).arg(Self::ms(self.timings.lease));
            let mut con = self.conn.connection();
            let _: i64 = self.conn.observe(invocation.invoke_async(&mut con).await).map_err(Self::unavailable)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(session: &str, text: &str) -> VisitorMessage {
        VisitorMessage {
            website_id: "w".into(),
            session_id: session.into(),
            content: text.into(),
            fingerprint: None,
            timestamp: None,
        }
    }

    fn limits(max_waiting: usize, max_per_conversation: usize) -> QueueLimits {
        QueueLimits { max_waiting, max_per_conversation }
    }

    #[tokio::test]
    async fn a_conversation_keeps_only_its_newest_waiting_messages() {
        let c = MemoryCoordinator::new(&CoordTimings::default(), limits(1000, 3));
        for i in 0..10 {
            c.enqueue(&message("a", &i.to_string())).await.unwrap();
        }
        let burst = c.next_burst("a").await.unwrap();
        assert_eq!(burst.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(), ["7", "8", "9"]);
        assert!(c.enqueue(&message("b", "x")).await.is_ok(), "the total counts only what is kept");
        assert_eq!(c.queues().total, 1);
    }

    #[tokio::test]
    async fn memory_queue_holds_one_conversation_and_releases_when_empty() {
        let c = MemoryCoordinator::new(&CoordTimings::default(), limits(100, 100));
        assert!(c.enqueue(&message("a", "1")).await.unwrap());
        assert!(!c.enqueue(&message("a", "2")).await.unwrap(), "already held");
        assert!(c.enqueue(&message("b", "x")).await.unwrap(), "conversations are independent");
        let burst = c.next_burst("a").await.unwrap();
        assert_eq!(burst.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(), ["1", "2"]);
        assert!(!c.enqueue(&message("a", "3")).await.unwrap(), "still held until an empty burst");
        assert_eq!(c.next_burst("a").await.unwrap().len(), 1);
        assert!(c.next_burst("a").await.unwrap().is_empty());
        assert!(c.enqueue(&message("a", "4")).await.unwrap(), "released");
    }

    #[tokio::test]
    async fn memory_queue_is_bounded_and_dedupes() {
        let c = MemoryCoordinator::new(&CoordTimings::default(), limits(2, 100));
        c.enqueue(&message("a", "1")).await.unwrap();
        c.enqueue(&message("a", "2")).await.unwrap();
        assert!(matches!(c.enqueue(&message("a", "3")).await, Err(CoordError::Overloaded)));
        assert!(c.first_delivery("a", 7).await.unwrap());
        assert!(!c.first_delivery("a", 7).await.unwrap());
        c.forget_delivery("a", 7).await.unwrap();
        assert!(c.first_delivery("a", 7).await.unwrap());
    }

    /// Runs against a real Redis when TEST_REDIS_URL is set (CI sets it).
    #[tokio::test]
    async fn redis_coordination_across_two_replicas() {
        let Ok(url) = std::env::var("TEST_REDIS_URL") else { return };
        let prefix = format!("test-{:x}:", rand::random::<u64>());
        let a = RedisCoordinator::new(RedisConn::lazy(&url, &prefix).unwrap(), CoordTimings::default(), 3);
        let b = RedisCoordinator::new(RedisConn::lazy(&url, &prefix).unwrap(), CoordTimings::default(), 3);
        assert!(a.first_delivery("s", 1).await.unwrap());
        assert!(!b.first_delivery("s", 1).await.unwrap(), "a redelivery to the other replica is a duplicate");
        assert!(a.enqueue(&message("s", "1")).await.unwrap());
        assert!(!b.enqueue(&message("s", "2")).await.unwrap(), "held by replica a");
        assert!(b.next_burst("s").await.unwrap().is_empty(), "b does not hold it");
        assert_eq!(a.next_burst("s").await.unwrap().len(), 2);
        assert!(a.next_burst("s").await.unwrap().is_empty());
        assert!(b.enqueue(&message("s", "3")).await.unwrap(), "released, b takes it");
        for i in 4..10 {
            b.enqueue(&message("s", &i.to_string())).await.unwrap();
        }
        let kept = b.next_burst("s").await.unwrap();
        assert_eq!(kept.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(), ["7", "8", "9"], "bounded queue");
        assert!(b.next_burst("s").await.unwrap().is_empty());
        b.set_human_takeover("s").await.unwrap();
        assert!(a.human_has("s").await.unwrap());
        let mark = OwnMark::Text("hello".into());
        a.remember_own("s", &mark).await.unwrap();
        assert!(b.is_own("s", &mark).await.unwrap());
    }
}
