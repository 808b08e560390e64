//! What the webhook remembers for proactive offers: which Crisp conversation belongs to which
//! Autoplay session (from `session:set_data`), each visitor's [`VisitorGate`], the firings
//! already handled and the site-wide offers of the last minute.
//!
//! On Redis (several replicas) every record is shared, and a visitor's record is changed under
//! a short lock, so two replicas never both offer. Without Redis (or while it is down) the
//! records live in this process and in `DATA_DIR/proactive.state`, written at once when an
//! offer is recorded (so a restart never sends it again) and within a second otherwise.

use super::Firing;
use super::gate::{MinuteCap, VisitorGate};
use crisp::ConversationId;
use plumbing::redis_conn::RedisConn;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// The state file under `DATA_DIR`.
pub const STATE_FILE: &str = "proactive.state";
/// Links, visitor records and handled firings are forgotten after a day.
const RECORD_TTL_SECS: f64 = 24.0 * 3600.0;
/// Records of each kind kept at most; the oldest go first beyond it.
const MAX_RECORDS: usize = 100_000;
/// How long one replica may hold a visitor's record while it decides and sends.
const LOCK_TTL: Duration = Duration::from_secs(30);
/// How long a replica waits for another's lock before giving up on this firing.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// What links an Autoplay session to a Crisp conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKey<'a> {
    /// `autoplay_session_id` in the conversation's session data.
    Session(&'a str),
    /// A signed `autoplay_user_id` (checked by the caller).
    User(&'a str),
}

impl LinkKey<'_> {
    fn key(&self) -> String {
        match self {
            LinkKey::Session(id) => format!("s:{id}"),
            LinkKey::User(id) => format!("u:{id}"),
        }
    }
}

/// Whose offer record: a conversation's (its offers, cooldown and hand-off), or an Autoplay
/// session's own (its offers and cooldown across conversations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKey<'a> {
    Conversation(&'a ConversationId),
    AutoplaySession(&'a str),
}

impl RecordKey<'_> {
    /// Beside each other in one map: a Crisp conversation id never starts with `autoplay:`.
    fn key(&self) -> String {
        match self {
            RecordKey::Conversation(id) => id.as_str().to_owned(),
            RecordKey::AutoplaySession(id) => format!("autoplay:{id}"),
        }
    }
}

impl<'a> From<&'a ConversationId> for RecordKey<'a> {
    fn from(id: &'a ConversationId) -> Self {
        RecordKey::Conversation(id)
    }
}

/// Where the file feed has read up to (the firings file's identity and offset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedPosition {
    pub file_id: u64,
    pub offset: u64,
}

/// A slot of the site-wide cap taken for one offer.
#[derive(Debug, Clone, Copy)]
pub struct MinuteSlot {
    at: f64,
    shared_bucket: Option<u64>,
}

pub struct OfferBook {
    local: LocalBook,
    shared: Option<RedisBook>,
}

impl OfferBook {
    pub fn new(local: LocalBook, shared: Option<RedisBook>) -> Self {
        Self { local, shared }
    }

    /// Notes that `key` belongs to the Crisp conversation `crisp_session`.
    pub async fn link(&self, key: LinkKey<'_>, crisp_session: &ConversationId, now: f64) {
        let crisp_session = crisp_session.as_str();
        if let Some(shared) = &self.shared
            && shared.link(&key.key(), crisp_session).await.is_ok()
        {
            return;
        }
        self.local.with(|state| {
            state.links.insert(key.key(), (crisp_session.to_owned(), now));
            prune(&mut state.links, now, |(_, at)| *at);
        });
    }

    /// The Crisp conversation linked to a firing's Autoplay session, else to its (signed) user,
    /// through the conversations' own session data. The stream's `conversation_id` is a claim
    /// the caller judges (see the webhook's proactive offers), never read here.
    pub async fn conversation_for(&self, firing: &Firing) -> Option<ConversationId> {
        let keys = std::iter::once(LinkKey::Session(&firing.session_id))
            .chain(firing.user_id.as_deref().map(LinkKey::User))
            .map(|k| k.key());
        for key in keys {
            if let Some(shared) = &self.shared
                && let Ok(found) = shared.linked(&key).await
            {
                if let Some(found) = found {
                    // Checked again on the way out: a record written by anything else links nothing.
                    return ConversationId::parse(found).ok();
                }
                continue;
            }
            if let Some((conversation, _)) = self.local.read(|state| state.links.get(&key).cloned()) {
                return ConversationId::parse(conversation).ok();
            }
        }
        None
    }

    /// True the first time a firing id is seen (a firing recorded by two listeners, or read
    /// again after a restart, is handled once).
    pub async fn first_sight(&self, firing_id: &str, now: f64) -> bool {
        if let Some(shared) = &self.shared
            && let Ok(first) = shared.first_sight(firing_id).await
        {
            return first;
        }
        self.local.with(|state| {
            let first = state.fired.insert(firing_id.to_owned(), now).is_none();
            prune(&mut state.fired, now, |at| *at);
            first
        })
    }

    /// Changes a visitor's record: `None` when another replica holds it for longer than
    /// `LOCK_WAIT` (it is deciding about this visitor right now).
    pub async fn update<T>(
        &self,
        record: impl Into<RecordKey<'_>>,
        now: f64,
        change: impl FnOnce(&mut VisitorGate) -> T,
    ) -> Option<T> {
        let key = record.into().key();
        if let Some(shared) = &self.shared {
            match shared.lock(&key).await {
                Ok(Some(mut locked)) => {
                    let out = change(&mut locked.record);
                    shared.put_and_unlock(&key, locked).await;
                    return Some(out);
                }
                Ok(None) => return None,
                Err(()) => {} // Redis down: this process's records
            }
        }
        Some(self.local.with(|state| {
            let (record, at) = state.visitors.entry(key).or_default();
            *at = now;
            let out = change(record);
            prune(&mut state.visitors, now, |(_, at)| *at);
            out
        }))
    }

    /// Takes one of the site's `max` offers of the minute.
    pub async fn take_minute_slot(&self, now: f64, max: usize) -> Option<MinuteSlot> {
        if let Some(shared) = &self.shared
            && let Ok(bucket) = shared.take_minute_slot(now, max).await
        {
            return bucket.map(|b| MinuteSlot { at: now, shared_bucket: Some(b) });
        }
        self.local.with(|state| state.minute.take(now, max)).then_some(MinuteSlot { at: now, shared_bucket: None })
    }

    /// Gives back a slot whose offer was not sent.
    pub async fn give_back(&self, slot: MinuteSlot) {
        match (slot.shared_bucket, &self.shared) {
            (Some(bucket), Some(shared)) => shared.give_back(bucket).await,
            _ => self.local.with(|state| state.minute.give_back(slot.at)),
        }
    }

    /// Writes this process's records to disk now (an offer is about to be sent).
    pub async fn save_now(&self) {
        self.local.save().await;
    }

    /// Where the file feed stopped last time.
    pub fn feed_position(&self) -> FeedPosition {
        self.local.read(|state| state.feed)
    }

    pub fn set_feed_position(&self, position: FeedPosition) {
        if self.feed_position() != position {
            self.local.with(|state| state.feed = position);
        }
    }

    /// Saves this process's records within a second of a change, until the process ends.
    pub fn save_in_background(self: &std::sync::Arc<Self>) -> tokio::task::JoinHandle<()> {
        let book = std::sync::Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if book.local.dirty.load(Ordering::Relaxed) {
                    book.local.save().await;
                }
            }
        })
    }
}

/// Drops records older than a day.
fn expire<V>(map: &mut HashMap<String, V>, now: f64, at: impl Fn(&V) -> f64) {
    map.retain(|_, v| now - at(v) < RECORD_TTL_SECS);
}

/// Past [`MAX_RECORDS`]: drops records older than a day, then the oldest.
fn prune<V>(map: &mut HashMap<String, V>, now: f64, at: impl Fn(&V) -> f64) {
    if map.len() <= MAX_RECORDS {
        return;
    }
    expire(map, now, &at);
    if map.len() > MAX_RECORDS {
        let mut times: Vec<f64> = map.values().map(&at).collect();
        times.sort_by(f64::total_cmp);
        let cut = times[map.len() - MAX_RECORDS * 9 / 10];
        map.retain(|_, v| at(v) >= cut);
    }
}

#[derive(Default, Serialize, Deserialize)]
struct LocalState {
    #[serde(default)]
    links: HashMap<String, (String, f64)>,
    #[serde(default)]
    visitors: HashMap<String, (VisitorGate, f64)>,
    #[serde(default)]
    fired: HashMap<String, f64>,
    #[serde(default)]
    feed: FeedPosition,
    #[serde(skip)]
    minute: MinuteCap,
}

/// This process's records, kept in a file when there is a `DATA_DIR`.
pub struct LocalBook {
    path: Option<PathBuf>,
    state: Mutex<LocalState>,
    dirty: AtomicBool,
    save_lock: tokio::sync::Mutex<()>,
}

impl LocalBook {
    /// Reads `DATA_DIR/proactive.state` when `data_dir` is given; a missing file is a fresh
    /// start, an unreadable one too (logged: offers may repeat once, never more than the gate
    /// allows from then on).
    pub fn open(data_dir: Option<&std::path::Path>) -> Self {
        let path = data_dir.map(|dir| dir.join(STATE_FILE));
        let state = match &path {
            Some(path) => match std::fs::read(path) {
                Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                    tracing::warn!(path = %path.display(), error = %e, "proactive state unreadable; starting afresh");
                    LocalState::default()
                }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => LocalState::default(),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read the proactive state; starting afresh");
                    LocalState::default()
                }
            },
            None => LocalState::default(),
        };
        Self { path, state: Mutex::new(state), dirty: AtomicBool::new(false), save_lock: tokio::sync::Mutex::new(()) }
    }

    /// Changes the records (saved within a second).
    fn with<T>(&self, f: impl FnOnce(&mut LocalState) -> T) -> T {
        self.dirty.store(true, Ordering::Relaxed);
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn read<T>(&self, f: impl FnOnce(&LocalState) -> T) -> T {
        f(&self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Writes the records whole to a temporary file, then renames it over the state file.
    async fn save(&self) {
        let Some(path) = &self.path else { return };
        let _one_at_a_time = self.save_lock.lock().await;
        self.dirty.store(false, Ordering::Relaxed);
        let bytes = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            // Records older than a day go with each save (a day is their time to live).
            let now = super::now_secs();
            expire(&mut state.links, now, |(_, at)| *at);
            expire(&mut state.visitors, now, |(_, at)| *at);
            expire(&mut state.fired, now, |at| *at);
            serde_json::to_vec(&*state).unwrap_or_default()
        };
        let path = path.clone();
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let tmp = path.with_extension("state.tmp");
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_data()?;
            std::fs::rename(&tmp, &path)
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.dirty.store(true, Ordering::Relaxed);
                tracing::warn!(error = %e, "cannot save the proactive state");
            }
            Err(e) => tracing::warn!(error = %e, "cannot save the proactive state"),
        }
    }
}

/// The records on Redis.
pub struct RedisBook {
    conn: RedisConn,
    /// Names this replica's locks.
    owner: String,
    unlock: redis::Script,
    give_back: redis::Script,
}

struct Locked {
    record: VisitorGate,
}

impl RedisBook {
    pub fn new(conn: RedisConn, owner: String) -> Self {
        Self {
            conn,
            owner,
            // KEYS: record, lock. ARGV: record JSON, ttl s, owner.
            unlock: redis::Script::new(
                r"if redis.call('GET', KEYS[2]) == ARGV[3] then
                    redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
                    redis.call('DEL', KEYS[2])
                    return 1
                  end
                  return 0",
            ),
            give_back: redis::Script::new(
                r"if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then redis.call('DECR', KEYS[1]) end
                  return 0",
            ),
        }
    }

    fn key(&self, kind: &str, id: &str) -> String {
        self.conn.key(&["proactive", kind, id])
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, ()> {
        let mut con = self.conn.connection();
        self.conn.observe(cmd.query_async(&mut con).await).map_err(drop)
    }

    async fn link(&self, key: &str, crisp_session: &str) -> Result<(), ()> {
        self.query(
            redis::cmd("SET").arg(self.key("link", key)).arg(crisp_session).arg("EX").arg(RECORD_TTL_SECS as u64),
        )
        .await
    }

    async fn linked(&self, key: &str) -> Result<Option<String>, ()> {
        self.query(redis::cmd("GET").arg(self.key("link", key))).await
    }

    async fn first_sight(&self, firing_id: &str) -> Result<bool, ()> {
        let key = self.key("fired", firing_id);
        let set: Option<String> =
            self.query(redis::cmd("SET").arg(key).arg(1).arg("NX").arg("EX").arg(RECORD_TTL_SECS as u64)).await?;
        Ok(set.is_some())
    }

    /// Takes the visitor's lock and reads the record; `Ok(None)` when another replica holds it.
    async fn lock(&self, crisp_session: &str) -> Result<Option<Locked>, ()> {
        let lock = self.key("lock", crisp_session);
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            let taken: Option<String> = self
                .query(
                    redis::cmd("SET").arg(&lock).arg(&self.owner).arg("NX").arg("PX").arg(LOCK_TTL.as_millis() as u64),
                )
                .await?;
            if taken.is_some() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let text: Option<String> = self.query(redis::cmd("GET").arg(self.key("gate", crisp_session))).await?;
        let record = text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        Ok(Some(Locked { record }))
    }

    async fn put_and_unlock(&self, crisp_session: &str, locked: Locked) {
        let json = serde_json::to_string(&locked.record).unwrap_or_default();
        let mut invocation = self.unlock.key(self.key("gate", crisp_session));
        invocation.key(self.key("lock", crisp_session)).arg(json).arg(RECORD_TTL_SECS as u64).arg(&self.owner);
        let mut con = self.conn.connection();
        if self.conn.observe(invocation.invoke_async::<i64>(&mut con).await).is_err() {
            tracing::warn!("cannot save a visitor's proactive record on Redis");
        }
    }

    /// A fixed one-minute window per bucket (`INCR` with a two-minute expiry).
    async fn take_minute_slot(&self, now: f64, max: usize) -> Result<Option<u64>, ()> {
        let bucket = (now / 60.0) as u64;
        let key = self.key("minute", &bucket.to_string());
        let (count, _): (u64, i64) = {
            let mut con = self.conn.connection();
            let result = redis::pipe().incr(&key, 1).expire(&key, 120).query_async(&mut con).await;
            self.conn.observe(result).map_err(drop)?
        };
        if count as usize > max {
            self.give_back(bucket).await;
            return Ok(None);
        }
        Ok(Some(bucket))
    }

    async fn give_back(&self, bucket: u64) {
        let invocation = self.give_back.key(self.key("minute", &bucket.to_string()));
        let mut con = self.conn.connection();
        let _ = self.conn.observe(invocation.invoke_async::<i64>(&mut con).await);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Trigger;

    fn firing(session: &str, user: Option<&str>) -> Firing {
        Firing {
            id: format!("{session}:ping_pong:1"),
            trigger: Trigger::PingPong,
            session_id: session.into(),
            user_id: user.map(Into::into),
            conversation_id: None,
            at: 1.0,
            page: String::new(),
            detail: String::new(),
            recorded_at: 1.0,
        }
    }

    fn conv(id: &str) -> ConversationId {
        ConversationId::parse(id).unwrap()
    }

    #[tokio::test]
    async fn records_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let t = crate::now_secs();
        {
            let book = OfferBook::new(LocalBook::open(Some(dir.path())), None);
            book.link(LinkKey::Session("ps_1"), &conv("session_a"), t).await;
            book.link(LinkKey::User("user_9"), &conv("session_b"), t).await;
            assert!(book.first_sight("f1", t).await);
            book.update(&conv("session_a"), t, |g| g.offered(t, Trigger::Dwell, "f1", "stayed")).await;
            book.set_feed_position(FeedPosition { file_id: 7, offset: 99 });
            book.save_now().await;
        }
        let book = OfferBook::new(LocalBook::open(Some(dir.path())), None);
        assert_eq!(book.conversation_for(&firing("ps_1", None)).await, Some(conv("session_a")));
        assert_eq!(book.conversation_for(&firing("ps_2", Some("user_9"))).await, Some(conv("session_b")));
        assert_eq!(book.conversation_for(&firing("ps_2", Some("user_8"))).await, None);
        assert!(!book.first_sight("f1", t + 1.0).await, "handled before the restart");
        let offers = book.update(&conv("session_a"), t + 1.0, |g| g.offers).await;
        assert_eq!(offers, Some(1));
        assert_eq!(book.feed_position(), FeedPosition { file_id: 7, offset: 99 });
    }

    #[tokio::test]
    async fn a_conversation_named_by_the_stream_is_no_link() {
        let book = OfferBook::new(LocalBook::open(None), None);
        let mut named = firing("ps_1", None);
        named.conversation_id = Some("session_c".into());
        assert_eq!(book.conversation_for(&named).await, None);
        book.link(LinkKey::Session("ps_1"), &conv("session_a"), 1.0).await;
        assert_eq!(book.conversation_for(&named).await, Some(conv("session_a")), "the session's own link");
    }

    #[test]
    fn pruning_keeps_the_newest() {
        let mut map: HashMap<String, f64> = (0..MAX_RECORDS + 10).map(|i| (i.to_string(), i as f64)).collect();
        prune(&mut map, (MAX_RECORDS + 10) as f64, |at| *at);
        assert!(map.len() <= MAX_RECORDS);
        assert!(map.contains_key(&(MAX_RECORDS + 9).to_string()));
        assert!(!map.contains_key("0"));
    }
}
