//! Who answers which visitor message, and when: the state the webhook's delivery guarantees
//! rest on, in one place. [`Coordination`] is the only type the reply pipeline talks to; it
//! uses Redis when configured (several webhook replicas share it) and this process's
//! [`LocalInbox`] otherwise, or while Redis is unreachable. That fallback is written once, here.
//!
//! A message is accepted into its conversation's queue, durably (the inbox journal, or Redis),
//! before the hook's `200`. Whoever accepts into an idle conversation holds it and answers
//! bursts until it is empty. A burst stays recorded (in flight) until [`Coordination::finish`]:
//! a process that dies mid-reply leaves it for the next holder, who is told the burst is
//! `resumed` and checks the conversation before answering it again.
//!
//! On Redis a hold is a token ([`Hold`]): renewing, finishing and releasing are compare-and-set
//! on it, so a replica whose hold lapsed (a pause longer than the lease) can neither release
//! nor finish another replica's work, and the reply pipeline asks [`Coordination::still_holds`]
//! right before it posts. Who has the floor is read from Redis every time (one `EXISTS`): a
//! replica never answers from a local belief another replica may have changed, and when Redis
//! cannot say, the caller waits and asks again ([`CoordError`]); it never guesses.

use crate::inbox::{InboxEntry, Journal, JournalError};
pub use crisp::Floor;
use crisp::{ConversationId, Fingerprint, VisitorMessage};
use plumbing::redis_conn::{RedisConn, RedisDown};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error(transparent)]
    Unavailable(#[from] RedisDown),
    #[error("too many messages waiting")]
    Overloaded,
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Redis did not answer in time: the command may have run, or may still run. Never
    /// resolved by falling back to this process's inbox.
    #[error("Redis did not answer in time; the outcome is unknown ({})", .0.0.category())]
    Uncertain(#[source] RedisDown),
    /// Another replica holds the conversation now (this hold lapsed).
    #[error("the hold on the conversation was lost to another replica")]
    HoldLost,
}

impl CoordError {
    /// A Redis error: a timeout leaves the outcome unknown, anything else says Redis is down.
    fn from_redis(down: RedisDown) -> Self {
        if down.0.is_timeout() { CoordError::Uncertain(down) } else { CoordError::Unavailable(down) }
    }
}

/// Something the bot itself sent, to tell its own echo from a human operator.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OwnMark {
    Fingerprint(Fingerprint),
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
    /// A replica's hold on a conversation, renewed while it writes a reply; another replica
    /// resumes the conversation once it expires.
    pub lease: Duration,
}

impl Default for CoordTimings {
    fn default() -> Self {
        Self {
            seen: Duration::from_secs(24 * 3600),
            human_takeover: Duration::from_secs(1800),
            own: Duration::from_secs(3600),
            lease: Duration::from_secs(30),
        }
    }
}

/// Bounds on the messages waiting to be answered; beyond them a hook gets `503` (Crisp
/// retries), before any `200`.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Across all conversations (this process's inbox).
    pub max_waiting: usize,
    /// Per conversation (waiting and in flight).
    pub max_per_conversation: usize,
}

/// Where a conversation's messages are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    Local,
    Shared,
}

/// A conversation this process holds and must answer. On Redis it carries the token of this
/// hold: another replica's newer hold has another one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub origin: Origin,
    pub session: ConversationId,
    token: Option<Arc<str>>,
}

impl Hold {
    fn local(session: &ConversationId) -> Self {
        Self { origin: Origin::Local, session: session.clone(), token: None }
    }

    fn shared(session: &ConversationId, token: &str) -> Self {
        Self { origin: Origin::Shared, session: session.clone(), token: Some(token.into()) }
    }

    fn token(&self) -> &str {
        self.token.as_deref().unwrap_or_default()
    }
}

/// What became of an accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Recorded; the caller now holds the conversation and must answer it.
    Holds(Hold),
    /// Recorded behind a reply being written (by this process or another replica).
    Queued,
    /// Seen before: recorded already, answered once.
    Duplicate,
}

/// The messages of one conversation answered together, oldest first.
#[derive(Debug, Clone)]
pub struct Burst {
    pub session: ConversationId,
    pub entries: Vec<InboxEntry>,
    pub origin: Origin,
    /// Some of it was in flight before: a reply may already have reached the visitor.
    pub resumed: bool,
}

/// The coordination the reply pipeline uses.
pub struct Coordination {
    local: LocalInbox,
    shared: Option<RedisCoordinator>,
}

impl Coordination {
    pub fn new(local: LocalInbox, shared: Option<RedisCoordinator>) -> Self {
        Self { local, shared }
    }

    /// Runs `op` on Redis when configured and reachable, else on the local inbox. Only an
    /// unreachable Redis falls back: an uncertain outcome is the caller's to resolve.
    async fn either<T>(
        &self,
        shared: impl AsyncFnOnce(&RedisCoordinator) -> Result<T, CoordError>,
        local: impl AsyncFnOnce(&LocalInbox) -> Result<T, CoordError>,
    ) -> Result<T, CoordError> {
        if let Some(redis) = &self.shared {
            match shared(redis).await {
                Err(CoordError::Unavailable(_)) => {}
                other => return other,
            }
        }
        local(&self.local).await
    }

    /// Whether replicas share this coordination (Redis is configured).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// How long a hold lasts unrenewed (renewals come at a third of it).
    pub fn lease(&self) -> Duration {
        self.shared.as_ref().map_or(CoordTimings::default().lease, |redis| redis.timings.lease)
    }

    /// Records a visitor message durably.
    pub async fn accept(&self, message: &VisitorMessage) -> Result<Accepted, CoordError> {
        // Recorded here while Redis was down: its redelivery is a duplicate, on Redis too.
        if self.shared.is_some()
            && let Some(fingerprint) = message.fingerprint
            && self.local.seen.contains_key(&(message.session_id.clone(), fingerprint))
        {
            return Ok(Accepted::Duplicate);
        }
        self.either(async |r| r.accept(message).await, async |l| l.accept(message).await).await
    }

    /// The next burst of a held conversation; empty means the hold is released.
    /// [`CoordError::HoldLost`]: another replica holds it now.
    pub async fn next_burst(&self, hold: &Hold) -> Result<Burst, CoordError> {
        match (hold.origin, &self.shared) {
            (Origin::Shared, Some(redis)) => redis.next_burst(hold).await,
            _ => Ok(self.local.next_burst(&hold.session)),
        }
    }

    /// The first `settled` messages of the burst are settled (answered, silenced, already
    /// answered or expired); the rest stay recorded.
    pub async fn finish(&self, hold: &Hold, burst: &Burst, settled: usize) -> Result<(), CoordError> {
        let settled = settled.min(burst.entries.len());
        match (hold.origin, &self.shared) {
            (Origin::Shared, Some(redis)) => redis.finish(hold, settled).await,
            _ => {
                self.local.finish(&burst.session, &burst.entries[..settled]);
                Ok(())
            }
        }
    }

    /// Renews the hold; `Ok(false)`: it was lost to another replica.
    pub async fn keep_holding(&self, hold: &Hold) -> Result<bool, CoordError> {
        match (hold.origin, &self.shared) {
            (Origin::Shared, Some(redis)) => redis.keep_holding(hold).await,
            _ => Ok(true),
        }
    }

    /// Whether the hold is still this process's: asked right before anything is posted.
    pub async fn still_holds(&self, hold: &Hold) -> Result<bool, CoordError> {
        match (hold.origin, &self.shared) {
            (Origin::Shared, Some(redis)) => redis.still_holds(hold).await,
            _ => Ok(true),
        }
    }

    /// Conversations with recorded messages that nobody holds, now held by this process: after
    /// a restart (the local journal) or a replica's death (Redis, once its hold expired).
    pub async fn take_over_orphans(&self) -> Vec<Hold> {
        let mut taken: Vec<Hold> = self.local.take_over_orphans().iter().map(Hold::local).collect();
        if let Some(redis) = &self.shared
            && let Ok(holds) = redis.take_over_orphans().await
        {
            taken.extend(holds);
        }
        taken
    }

    /// Lets go of a conversation still held at shutdown, so another replica resumes it at once.
    pub async fn release(&self, hold: &Hold) {
        if let (Origin::Shared, Some(redis)) = (hold.origin, &self.shared) {
            let _ = redis.release(hold).await;
        }
    }

    /// Messages accepted by this process and not settled yet (the local inbox).
    pub fn pending_local(&self) -> usize {
        self.local.pending()
    }

    /// Waits until the local journal is on disk.
    pub async fn sync(&self) {
        if let Some(journal) = &self.local.journal {
            journal.sync().await;
        }
    }

    /// A human operator has the conversation. On Redis the flag lives there only (every
    /// replica reads it there); an error means it was not recorded, and the caller answers the
    /// hook with a `503` so that Crisp delivers it again.
    pub async fn set_human_takeover(&self, session: &ConversationId) -> Result<(), CoordError> {
        match &self.shared {
            Some(redis) => redis.set_human_takeover(session).await,
            None => {
                self.local.human.insert(session.to_owned(), ());
                Ok(())
            }
        }
    }

    /// An operator resolved the conversation: the bot may speak there again.
    pub async fn clear_human_takeover(&self, session: &ConversationId) -> Result<(), CoordError> {
        self.local.human.invalidate(session);
        match &self.shared {
            Some(redis) => redis.query::<()>(redis::cmd("DEL").arg(redis.key("human", session))).await,
            None => Ok(()),
        }
    }

    /// Who has the floor in a conversation: the one place that decides whether the bot may
    /// speak there. Replies, hand-offs and proactive offers all ask it; a reply needs no human
    /// in the conversation, an offer also needs the bot to have nothing to answer there. An
    /// error: Redis cannot say, and the bot must not speak on a guess.
    pub async fn floor(&self, session: &ConversationId) -> Result<Floor, CoordError> {
        let human = self.human_has(session).await?;
        // With a human in the conversation nobody else may speak: whether the bot is busy
        // there does not matter, so it is not looked up.
        let mut bot_busy = !human && self.local.busy(session);
        if !human
            && !bot_busy
            && let Some(redis) = &self.shared
        {
            bot_busy = redis.busy(session).await.unwrap_or(true);
        }
        Ok(Floor { human, bot_busy, last_message_at: None })
    }

    /// Whether a human operator has the conversation (on Redis: on any replica, read afresh).
    pub async fn human_has(&self, session: &ConversationId) -> Result<bool, CoordError> {
        match &self.shared {
            Some(redis) => redis.human_has(session).await,
            None => Ok(self.local.human.contains_key(session)),
        }
    }

    pub async fn remember_own(&self, session: &ConversationId, mark: OwnMark) {
        if let Some(redis) = &self.shared {
            let _ = redis.remember_own(session, &mark).await;
        }
        self.local.own.insert((session.to_owned(), mark), ());
    }

    /// Whether the bot sent this (here or on any replica).
    pub async fn is_own(&self, session: &ConversationId, mark: &OwnMark) -> bool {
        if self.local.own.contains_key(&(session.to_owned(), mark.clone())) {
            return true;
        }
        match &self.shared {
            Some(redis) => redis.is_own(session, mark).await.unwrap_or(false),
            None => false,
        }
    }
}

/// This process's inbox: queues in memory, each accepted message in the journal.
pub struct LocalInbox {
    journal: Option<Journal>,
    seen: moka::sync::Cache<(ConversationId, Fingerprint), ()>,
    human: moka::sync::Cache<ConversationId, ()>,
    own: moka::sync::Cache<(ConversationId, OwnMark), ()>,
    queues: Mutex<Queues>,
    limits: QueueLimits,
}

#[derive(Default)]
struct Queues {
    waiting: HashMap<ConversationId, VecDeque<InboxEntry>>,
    in_flight: HashMap<ConversationId, Vec<InboxEntry>>,
    held: HashSet<ConversationId>,
    total: usize,
}

impl LocalInbox {
    /// `journal`: where accepted messages are recorded (`None`: memory only, for tests).
    /// `replay`: the journal's pending entries, answered first.
    pub fn new(timings: &CoordTimings, limits: QueueLimits, journal: Option<Journal>, replay: Vec<InboxEntry>) -> Self {
        let inbox = Self {
            journal,
            seen: moka::sync::Cache::builder().max_capacity(200_000).time_to_live(timings.seen).build(),
            human: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(timings.human_takeover.max(Duration::from_millis(1)))
                .build(),
            own: moka::sync::Cache::builder().max_capacity(200_000).time_to_live(timings.own).build(),
            queues: Mutex::new(Queues::default()),
            limits,
        };
        {
            let mut queues = inbox.queues();
            for entry in replay {
                if let Some(fingerprint) = entry.message.fingerprint {
                    inbox.seen.insert((entry.message.session_id.clone(), fingerprint), ());
                }
                queues.total += 1;
                // In flight: it may have been answered just before the process stopped.
                queues.in_flight.entry(entry.message.session_id.clone()).or_default().push(entry);
            }
        }
        inbox
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn pending(&self) -> usize {
        self.queues().total
    }

    /// Whether messages of the conversation wait or are being answered here.
    fn busy(&self, session: &ConversationId) -> bool {
        let queues = self.queues();
        queues.held.contains(session) || queues.waiting.contains_key(session) || queues.in_flight.contains_key(session)
    }

    async fn accept(&self, message: &VisitorMessage) -> Result<Accepted, CoordError> {
        let seen_key = message.fingerprint.map(|f| (message.session_id.clone(), f));
        if let Some(key) = &seen_key
            && !self.seen.entry(key.clone()).or_insert(()).is_fresh()
        {
            return Ok(Accepted::Duplicate);
        }
        let forget = || {
            if let Some(key) = &seen_key {
                self.seen.invalidate(key);
            }
        };
        {
            let mut queues = self.queues();
            let session = &message.session_id;
            let in_conversation = queues.waiting.get(session).map_or(0, VecDeque::len)
                + queues.in_flight.get(session).map_or(0, Vec::len);
            if queues.total >= self.limits.max_waiting || in_conversation >= self.limits.max_per_conversation {
                drop(queues);
                forget();
                return Err(CoordError::Overloaded);
            }
            queues.total += 1; // reserved while the journal writes
        }
        let entry = InboxEntry::new(message.clone());
        if let Some(journal) = &self.journal
            && let Err(e) = journal.accept(&entry).await
        {
            self.queues().total -= 1;
            forget();
            return Err(e.into());
        }
        let mut queues = self.queues();
        queues.waiting.entry(message.session_id.clone()).or_default().push_back(entry);
        Ok(if queues.held.insert(message.session_id.clone()) {
            Accepted::Holds(Hold::local(&message.session_id))
        } else {
            Accepted::Queued
        })
    }

    fn next_burst(&self, session: &ConversationId) -> Burst {
        let mut queues = self.queues();
        let waiting = queues.waiting.remove(session).unwrap_or_default();
        let in_flight = queues.in_flight.entry(session.to_owned()).or_default();
        let resumed = !in_flight.is_empty();
        in_flight.extend(waiting);
        let entries = in_flight.clone();
        if entries.is_empty() {
            queues.in_flight.remove(session);
            queues.held.remove(session);
        }
        Burst { session: session.clone(), entries, origin: Origin::Local, resumed }
    }

    fn finish(&self, session: &ConversationId, entries: &[InboxEntry]) {
        let ids: HashSet<u64> = entries.iter().map(|e| e.id).collect();
        let mut queues = self.queues();
        let mut settled = 0;
        if let Some(in_flight) = queues.in_flight.get_mut(session) {
            let before = in_flight.len();
            in_flight.retain(|e| !ids.contains(&e.id));
            settled = before - in_flight.len();
        }
        queues.total -= settled;
        drop(queues);
        if let Some(journal) = &self.journal {
            journal.done(ids.into_iter().collect());
        }
    }

    /// Conversations replayed from the journal that nobody holds yet.
    fn take_over_orphans(&self) -> Vec<ConversationId> {
        let mut queues = self.queues();
        let orphans: Vec<ConversationId> =
            queues.in_flight.keys().filter(|s| !queues.held.contains(*s)).cloned().collect();
        queues.held.extend(orphans.iter().cloned());
        orphans
    }
}

/// Coordination shared by webhook replicas through Redis: the seen marks, the per-conversation
/// queue and in-flight list (the durable record), the hold, the set of conversations with
/// recorded messages, the takeover flags and the bot's own-message marks.
pub struct RedisCoordinator {
    conn: RedisConn,
    timings: CoordTimings,
    /// This replica's name on the conversations it holds: stable across restarts of the same
    /// replica, so it resumes its own conversations at once.
    owner: String,
    /// This process's part of its tokens: a hold of the same replica's earlier run is an
    /// orphan, one of this run is being answered here.
    incarnation: String,
    max_per_conversation: usize,
    accept: redis::Script,
    next_burst: redis::Script,
    finish: redis::Script,
    keep_holding: redis::Script,
    release: redis::Script,
    take_orphan: redis::Script,
}

impl RedisCoordinator {
    pub fn new(conn: RedisConn, timings: CoordTimings, max_per_conversation: usize, owner: String) -> Self {
        Self {
            conn,
            timings,
            incarnation: format!("{owner}|{:016x}|", rand::random::<u64>()),
            owner: format!("{owner}|"),
            max_per_conversation: max_per_conversation.max(1),
            // KEYS: seen, queue, in flight, hold, conversations. ARGV: entry, token, lease ms,
            // cap, seen ms (0: no fingerprint), session.
            accept: redis::Script::new(
                r"if ARGV[5] ~= '0' then
                    if not redis.call('SET', KEYS[1], 1, 'NX', 'PX', ARGV[5]) then return -1 end
                  end
                  if redis.call('LLEN', KEYS[2]) + redis.call('LLEN', KEYS[3]) >= tonumber(ARGV[4]) then
                    if ARGV[5] ~= '0' then redis.call('DEL', KEYS[1]) end
                    return -2
                  end
                  redis.call('RPUSH', KEYS[2], ARGV[1])
                  redis.call('SADD', KEYS[5], ARGV[6])
                  if redis.call('SET', KEYS[4], ARGV[2], 'NX', 'PX', ARGV[3]) then return 1 end
                  return 0",
            ),
            // KEYS: queue, in flight, hold, conversations. ARGV: token, lease ms, session.
            // A hold that lapsed with nobody else taking it is taken again.
            next_burst: redis::Script::new(
                r"local holder = redis.call('GET', KEYS[3])
                  if holder and holder ~= ARGV[1] then return {-1, {}} end
                  local resumed = redis.call('LLEN', KEYS[2]) > 0 and 1 or 0
                  local waiting = redis.call('LRANGE', KEYS[1], 0, -1)
                  for _, item in ipairs(waiting) do redis.call('RPUSH', KEYS[2], item) end
                  redis.call('DEL', KEYS[1])
                  local burst = redis.call('LRANGE', KEYS[2], 0, -1)
                  if #burst == 0 then
                    if holder then redis.call('DEL', KEYS[3]) end
                    redis.call('SREM', KEYS[4], ARGV[3])
                    return {0, {}}
                  end
                  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
                  return {resumed, burst}",
            ),
            // KEYS: in flight, hold. ARGV: token, settled count.
            finish: redis::Script::new(
                r"if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
                  redis.call('LTRIM', KEYS[1], tonumber(ARGV[2]), -1)
                  return 1",
            ),
            keep_holding: redis::Script::new(
                r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
                  return 0",
            ),
            release: redis::Script::new(
                r"if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
                  return 0",
            ),
            // KEYS: hold. ARGV: token, lease ms, this replica's prefix, this run's prefix.
            take_orphan: redis::Script::new(
                r"local h = redis.call('GET', KEYS[1])
                  if h and (string.sub(h, 1, #ARGV[3]) ~= ARGV[3] or string.sub(h, 1, #ARGV[4]) == ARGV[4]) then
                    return 0
                  end
                  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
                  return 1",
            ),
        }
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, CoordError> {
        let mut con = self.conn.connection();
        self.conn.observe(cmd.query_async(&mut con).await).map_err(CoordError::from_redis)
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, CoordError> {
        let mut con = self.conn.connection();
        self.conn.observe(invocation.invoke_async(&mut con).await).map_err(CoordError::from_redis)
    }

    fn ms(d: Duration) -> u64 {
        d.as_millis().max(1) as u64
    }

    fn key(&self, kind: &str, session: &ConversationId) -> String {
        self.conn.key(&[kind, session.as_str()])
    }

    /// A new token for a hold taken by this process.
    fn new_token(&self) -> String {
        format!("{}{:016x}", self.incarnation, rand::random::<u64>())
    }

    async fn accept(&self, message: &VisitorMessage) -> Result<Accepted, CoordError> {
        let session = &message.session_id;
        let entry = InboxEntry::new(message.clone());
        let encoded = serde_json::to_string(&entry).unwrap_or_default();
        let token = self.new_token();
        let seen_key =
            self.conn.key(&["seen", session.as_str(), &message.fingerprint.map_or(0, Fingerprint::get).to_string()]);
        let seen_ms = if message.fingerprint.is_some() { Self::ms(self.timings.seen) } else { 0 };
        let mut invocation = self.accept.key(seen_key);
        invocation
            .key(self.key("queue", session))
            .key(self.key("inflight", session))
            .key(self.key("hold", session))
            .key(self.conn.key(&["conversations"]))
            .arg(encoded)
            .arg(&token)
            .arg(Self::ms(self.timings.lease))
            .arg(self.max_per_conversation)
            .arg(seen_ms)
            .arg(session.as_str());
        match self.invoke::<i64>(&invocation).await {
            Ok(1) => Ok(Accepted::Holds(Hold::shared(session, &token))),
            Ok(0) => Ok(Accepted::Queued),
            Ok(-1) => Ok(Accepted::Duplicate),
            Ok(_) => Err(CoordError::Overloaded),
            Err(CoordError::Uncertain(down)) => self.read_back(&entry, &token, down).await,
            Err(e) => Err(e),
        }
    }

    /// The accept script may have run although Redis did not answer: whether the entry is
    /// recorded decides. Not found, or Redis silent again: still unknown (the script may yet
    /// run), so the hook gets a `503` and Crisp's redelivery is told apart by its seen mark.
    async fn read_back(&self, entry: &InboxEntry, token: &str, down: RedisDown) -> Result<Accepted, CoordError> {
        let session = &entry.message.session_id;
        let recorded = async {
            for list in ["queue", "inflight"] {
                let items: Vec<String> =
                    self.query(redis::cmd("LRANGE").arg(self.key(list, session)).arg(0).arg(-1)).await?;
                if items.iter().filter_map(|i| serde_json::from_str::<InboxEntry>(i).ok()).any(|e| e.id == entry.id) {
                    return Ok(true);
                }
            }
            Ok::<bool, CoordError>(false)
        };
        match recorded.await {
            Ok(true) => {
                let holder: Option<String> = self.query(redis::cmd("GET").arg(self.key("hold", session))).await?;
                tracing::info!("Redis answered late; the message was recorded");
                Ok(if holder.as_deref() == Some(token) {
                    Accepted::Holds(Hold::shared(session, token))
                } else {
                    Accepted::Queued
                })
            }
            Ok(false) | Err(CoordError::Uncertain(_)) => Err(CoordError::Uncertain(down)),
            Err(e) => Err(e),
        }
    }

    async fn next_burst(&self, hold: &Hold) -> Result<Burst, CoordError> {
        let session = &hold.session;
        let mut invocation = self.next_burst.key(self.key("queue", session));
        invocation
            .key(self.key("inflight", session))
            .key(self.key("hold", session))
            .key(self.conn.key(&["conversations"]))
            .arg(hold.token())
            .arg(Self::ms(self.timings.lease))
            .arg(session.as_str());
        let (resumed, items): (i64, Vec<String>) = self.invoke(&invocation).await?;
        if resumed < 0 {
            return Err(CoordError::HoldLost);
        }
        let entries = items.iter().filter_map(|item| serde_json::from_str(item).ok()).collect();
        Ok(Burst { session: session.clone(), entries, origin: Origin::Shared, resumed: resumed == 1 })
    }

    async fn finish(&self, hold: &Hold, settled: usize) -> Result<(), CoordError> {
        let mut invocation = self.finish.key(self.key("inflight", &hold.session));
        invocation.key(self.key("hold", &hold.session)).arg(hold.token()).arg(settled);
        match self.invoke::<i64>(&invocation).await? {
            1 => Ok(()),
            _ => Err(CoordError::HoldLost),
        }
    }

    async fn keep_holding(&self, hold: &Hold) -> Result<bool, CoordError> {
        let mut invocation = self.keep_holding.key(self.key("hold", &hold.session));
        invocation.arg(hold.token()).arg(Self::ms(self.timings.lease));
        Ok(self.invoke::<i64>(&invocation).await? == 1)
    }

    async fn still_holds(&self, hold: &Hold) -> Result<bool, CoordError> {
        let holder: Option<String> = self.query(redis::cmd("GET").arg(self.key("hold", &hold.session))).await?;
        Ok(holder.as_deref() == Some(hold.token()))
    }

    async fn release(&self, hold: &Hold) -> Result<(), CoordError> {
        let mut invocation = self.release.key(self.key("hold", &hold.session));
        invocation.arg(hold.token());
        self.invoke::<i64>(&invocation).await.map(drop)
    }

    /// Takes the hold of every conversation with recorded messages whose hold has expired (or
    /// is this replica's own from before a restart).
    async fn take_over_orphans(&self) -> Result<Vec<Hold>, CoordError> {
        let sessions: Vec<String> = self.query(redis::cmd("SMEMBERS").arg(self.conn.key(&["conversations"]))).await?;
        let mut taken = Vec::new();
        // Recorded by `accept` from a checked id; anything else is not ours to answer.
        for session in sessions.into_iter().filter_map(|s| ConversationId::parse(s).ok()) {
            let token = self.new_token();
            let mut invocation = self.take_orphan.key(self.key("hold", &session));
            invocation.arg(&token).arg(Self::ms(self.timings.lease)).arg(&self.owner).arg(&self.incarnation);
            if self.invoke::<i64>(&invocation).await? == 1 {
                taken.push(Hold::shared(&session, &token));
            }
        }
        Ok(taken)
    }

    async fn set_human_takeover(&self, session: &ConversationId) -> Result<(), CoordError> {
        let key = self.key("human", session);
        self.query(redis::cmd("SET").arg(key).arg(1).arg("PX").arg(Self::ms(self.timings.human_takeover))).await
    }

    /// Whether a replica holds the conversation or messages of it are recorded.
    async fn busy(&self, session: &ConversationId) -> Result<bool, CoordError> {
        let keys = [self.key("queue", session), self.key("inflight", session), self.key("hold", session)];
        Ok(self.query::<i64>(redis::cmd("EXISTS").arg(&keys)).await? > 0)
    }

    async fn human_has(&self, session: &ConversationId) -> Result<bool, CoordError> {
        self.query(redis::cmd("EXISTS").arg(self.key("human", session))).await
    }

    async fn remember_own(&self, session: &ConversationId, mark: &OwnMark) -> Result<(), CoordError> {
        let key = self.conn.key(&["own", session.as_str(), &mark.key_part()]);
        self.query(redis::cmd("SET").arg(key).arg(1).arg("PX").arg(Self::ms(self.timings.own))).await
    }

    async fn is_own(&self, session: &ConversationId, mark: &OwnMark) -> Result<bool, CoordError> {
        self.query(redis::cmd("EXISTS").arg(self.conn.key(&["own", session.as_str(), &mark.key_part()]))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(id: &str) -> crisp::ConversationId {
        crisp::ConversationId::parse(id).unwrap()
    }

    fn message(session: &str, text: &str, fingerprint: Option<u64>) -> VisitorMessage {
        VisitorMessage {
            website_id: crisp::WebsiteId::parse("w").unwrap(),
            session_id: conv(session),
            content: text.into(),
            fingerprint: fingerprint.map(crisp::Fingerprint::from_wire),
            timestamp: None,
        }
    }

    fn limits(max_waiting: usize, max_per_conversation: usize) -> QueueLimits {
        QueueLimits { max_waiting, max_per_conversation }
    }

    fn local(limits: QueueLimits) -> Coordination {
        Coordination::new(LocalInbox::new(&CoordTimings::default(), limits, None, Vec::new()), None)
    }

    fn contents(burst: &Burst) -> Vec<&str> {
        burst.entries.iter().map(|e| e.message.content.as_str()).collect()
    }

    fn held(accepted: Accepted) -> Hold {
        match accepted {
            Accepted::Holds(hold) => hold,
            other => panic!("expected a hold, got {other:?}"),
        }
    }

    fn whole(c: &Coordination, hold: &Hold, burst: &Burst) -> impl Future<Output = Result<(), CoordError>> {
        c.finish(hold, burst, burst.entries.len())
    }

    #[tokio::test]
    async fn one_holder_per_conversation_bursts_in_order_released_when_empty() {
        let c = local(limits(100, 100));
        let a = held(c.accept(&message("a", "1", None)).await.unwrap());
        assert_eq!(a.origin, Origin::Local);
        assert_eq!(c.accept(&message("a", "2", None)).await.unwrap(), Accepted::Queued);
        held(c.accept(&message("b", "x", None)).await.unwrap());
        let burst = c.next_burst(&a).await.unwrap();
        assert_eq!(contents(&burst), ["1", "2"]);
        assert!(!burst.resumed);
        assert_eq!(c.accept(&message("a", "3", None)).await.unwrap(), Accepted::Queued, "held until an empty burst");
        whole(&c, &a, &burst).await.unwrap();
        assert_eq!(contents(&c.next_burst(&a).await.unwrap()), ["3"]);
        let unfinished = c.next_burst(&a).await.unwrap();
        assert!(unfinished.resumed, "an unfinished burst comes back, marked resumed");
        whole(&c, &a, &unfinished).await.unwrap();
        assert!(c.next_burst(&a).await.unwrap().entries.is_empty());
        held(c.accept(&message("a", "4", None)).await.unwrap());
    }

    #[tokio::test]
    async fn finishing_part_of_a_burst_keeps_the_rest_recorded() {
        let c = local(limits(100, 100));
        let a = held(c.accept(&message("a", "1", None)).await.unwrap());
        c.accept(&message("a", "2", None)).await.unwrap();
        let burst = c.next_burst(&a).await.unwrap();
        c.finish(&a, &burst, 1).await.unwrap();
        assert_eq!(c.pending_local(), 1);
        let rest = c.next_burst(&a).await.unwrap();
        assert_eq!(contents(&rest), ["2"]);
        assert!(rest.resumed);
    }

    #[tokio::test]
    async fn full_queues_refuse_before_accepting_and_duplicates_are_told_apart() {
        let c = local(limits(3, 2));
        let a = held(c.accept(&message("a", "1", Some(1))).await.unwrap());
        c.accept(&message("a", "2", Some(2))).await.unwrap();
        assert!(matches!(c.accept(&message("a", "3", Some(3))).await, Err(CoordError::Overloaded)), "per conversation");
        assert_eq!(c.accept(&message("a", "1", Some(1))).await.unwrap(), Accepted::Duplicate);
        c.accept(&message("b", "1", Some(1))).await.unwrap();
        assert!(matches!(c.accept(&message("c", "1", Some(1))).await, Err(CoordError::Overloaded)), "in all");
        // A refused message was not marked seen: its redelivery is taken once there is room.
        let burst = c.next_burst(&a).await.unwrap();
        whole(&c, &a, &burst).await.unwrap();
        assert_eq!(c.accept(&message("a", "3", Some(3))).await.unwrap(), Accepted::Queued);
        assert_eq!(c.pending_local(), 2);
    }

    #[tokio::test]
    async fn replayed_entries_are_in_flight_orphans_taken_over_once() {
        let replay = vec![
            InboxEntry::new(message("a", "1", Some(1))),
            InboxEntry::new(message("b", "x", None)),
            InboxEntry::new(message("a", "2", Some(2))),
        ];
        let c = Coordination::new(LocalInbox::new(&CoordTimings::default(), limits(10, 10), None, replay), None);
        let mut orphans = c.take_over_orphans().await;
        orphans.sort_by(|x, y| x.session.cmp(&y.session));
        let sessions: Vec<&str> = orphans.iter().map(|h| h.session.as_str()).collect();
        assert_eq!(sessions, ["a", "b"]);
        assert!(c.take_over_orphans().await.is_empty(), "held now");
        let burst = c.next_burst(&orphans[0]).await.unwrap();
        assert!(burst.resumed);
        assert_eq!(contents(&burst), ["1", "2"]);
        assert_eq!(c.accept(&message("a", "1", Some(1))).await.unwrap(), Accepted::Duplicate, "seen marks replayed");
    }

    fn test_redis_url() -> Option<String> {
        plumbing::redis_conn::redis_for_tests("this Redis coordination test")
    }

    fn replica(url: &str, prefix: &str, owner: &str, lease: Duration) -> Coordination {
        let timings = CoordTimings { lease, ..CoordTimings::default() };
        let redis = RedisCoordinator::new(RedisConn::lazy(url, prefix).unwrap(), timings.clone(), 3, owner.into());
        Coordination::new(LocalInbox::new(&timings, limits(100, 100), None, Vec::new()), Some(redis))
    }

    /// Runs against the Redis of TEST_REDIS_URL (see `redis_for_tests`).
    #[tokio::test]
    async fn redis_coordination_across_two_replicas() {
        let Some(url) = test_redis_url() else { return };
        let prefix = format!("test-{:x}:", rand::random::<u64>());
        let minute = Duration::from_secs(60);
        let a = replica(&url, &prefix, "a", minute);
        let b = replica(&url, &prefix, "b", minute);
        let hold_a = held(a.accept(&message("s", "1", Some(1))).await.unwrap());
        assert_eq!(hold_a.origin, Origin::Shared);
        assert_eq!(b.accept(&message("s", "1", Some(1))).await.unwrap(), Accepted::Duplicate);
        assert_eq!(b.accept(&message("s", "2", Some(2))).await.unwrap(), Accepted::Queued, "held by replica a");
        let burst = a.next_burst(&hold_a).await.unwrap();
        assert_eq!(contents(&burst), ["1", "2"]);
        b.accept(&message("s", "3", Some(3))).await.unwrap();
        assert!(
            matches!(b.accept(&message("s", "4", Some(4))).await, Err(CoordError::Overloaded)),
            "3 per conversation"
        );
        // Replica a dies holding the conversation; c takes it over once the hold is gone.
        drop(a);
        let c = replica(&url, &prefix, "c", minute);
        assert!(c.take_over_orphans().await.is_empty(), "a's hold is still on");
        let hold = RedisConn::lazy(&url, &prefix).unwrap().key(&["hold", "s"]);
        let mut con = RedisConn::lazy(&url, &prefix).unwrap().connection();
        let _: () = redis::cmd("DEL").arg(hold).query_async(&mut con).await.unwrap();
        let taken = c.take_over_orphans().await;
        assert_eq!(taken.len(), 1);
        let resumed = c.next_burst(&taken[0]).await.unwrap();
        assert!(resumed.resumed);
        assert_eq!(contents(&resumed), ["1", "2", "3"]);
        whole(&c, &taken[0], &resumed).await.unwrap();
        assert!(c.next_burst(&taken[0]).await.unwrap().entries.is_empty());
        assert!(c.take_over_orphans().await.is_empty(), "nothing left recorded");
        b.set_human_takeover(&conv("s")).await.unwrap();
        assert!(c.human_has(&conv("s")).await.unwrap());
        let mark = OwnMark::Text("hello".into());
        c.remember_own(&conv("s"), mark.clone()).await;
        assert!(b.is_own(&conv("s"), &mark).await);
    }

    /// A hold is a token: the replica whose hold lapsed and was taken over can neither renew,
    /// finish nor release the new holder's work, and learns it lost the hold.
    #[tokio::test]
    async fn a_lapsed_hold_is_fenced_off() {
        let Some(url) = test_redis_url() else { return };
        let prefix = format!("test-{:x}:", rand::random::<u64>());
        let a = replica(&url, &prefix, "a", Duration::from_millis(300));
        let b = replica(&url, &prefix, "b", Duration::from_secs(60));
        let hold_a = held(a.accept(&message("s", "1", Some(1))).await.unwrap());
        let burst_a = a.next_burst(&hold_a).await.unwrap();
        // a pauses longer than its lease; b resumes the conversation.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let hold_b = loop {
            if let Some(hold) = b.take_over_orphans().await.pop() {
                break hold;
            }
            assert!(std::time::Instant::now() < deadline, "the hold never lapsed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let burst_b = b.next_burst(&hold_b).await.unwrap();
        assert!(burst_b.resumed);
        assert!(!a.still_holds(&hold_a).await.unwrap(), "a is told before it posts");
        assert!(!a.keep_holding(&hold_a).await.unwrap(), "a cannot renew b's hold");
        assert!(matches!(a.finish(&hold_a, &burst_a, 1).await, Err(CoordError::HoldLost)));
        a.release(&hold_a).await;
        assert!(matches!(a.next_burst(&hold_a).await, Err(CoordError::HoldLost)));
        assert!(b.still_holds(&hold_b).await.unwrap(), "b's hold survived a's release");
        assert_eq!(contents(&burst_b), ["1"], "a's finish did not remove b's burst");
        whole(&b, &hold_b, &burst_b).await.unwrap();
    }

    /// A takeover is read from Redis every time: one replica's resolution is seen at once by
    /// another that saw the operator write; Redis unable to answer is an error, not a "no".
    #[tokio::test]
    async fn the_floor_is_one_truth_across_replicas() {
        let Some(url) = test_redis_url() else { return };
        let prefix = format!("test-{:x}:", rand::random::<u64>());
        let a = replica(&url, &prefix, "a", Duration::from_secs(60));
        let b = replica(&url, &prefix, "b", Duration::from_secs(60));
        a.set_human_takeover(&conv("s")).await.unwrap();
        assert!(a.floor(&conv("s")).await.unwrap().human);
        b.clear_human_takeover(&conv("s")).await.unwrap();
        assert!(!a.floor(&conv("s")).await.unwrap().human, "a does not answer from a stale belief");
        let down = replica("redis://127.0.0.1:1", &prefix, "d", Duration::from_secs(60));
        assert!(down.floor(&conv("s")).await.is_err(), "unknown is not 'no human'");
    }
}
