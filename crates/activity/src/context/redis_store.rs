//! The Redis context store, for several webhook replicas and a listener on different hosts.
//!
//! Keys (under the deployment prefix): `s:{session}:a` (list of action JSON, newest last,
//! trimmed to `max_actions`), `s:{session}:sum` (latest summary), `u:{user}` and
//! `c:{conversation}` (latest session id). Every key expires after the TTL of idleness.
//! Proactive firings go to the stream `proactive:firings` (field `f`: the firing as JSON),
//! capped at about [`REDIS_FIRINGS_MAXLEN`] entries.

use super::{SessionContext, StoreError, StoreLimits};
use crate::action::{ActionRecord, BatchRecord};
use crate::firing::{Firing, REDIS_FIRINGS_MAXLEN, REDIS_FIRINGS_STREAM};
use crate::payload::session_key;
use plumbing::redis_conn::RedisConn;
use std::time::SystemTime;

#[derive(Clone, Debug)]
pub struct RedisStore {
    conn: RedisConn,
    limits: StoreLimits,
}

impl RedisStore {
    pub fn new(conn: RedisConn, limits: StoreLimits) -> Self {
        Self { conn, limits }
    }

    fn ttl_secs(&self) -> i64 {
        self.limits.ttl.as_secs().max(1) as i64
    }

    async fn link(&self, kind: &str, id: &str, now: SystemTime) -> Result<Option<String>, StoreError> {
        let _ = now; // Redis expires keys itself
        let key = self.conn.key(&[kind, id]);
        let mut con = self.conn.connection();
        let value: Option<String> =
            self.conn.observe(redis::cmd("GET").arg(&key).query_async(&mut con).await).map_err(StoreError::from)?;
        Ok(value.filter(|v| !v.is_empty()))
    }
}

/// The store's operations; [`super::StoreWriter`] and [`super::StoreReader`] give each side its own.
impl RedisStore {
    pub async fn record_batch(&self, batch: &BatchRecord<'_>, _now: SystemTime) -> Result<(), StoreError> {
        // Anonymous activity is kept nowhere: no id a visitor can name reaches it.
        let Some(session) = batch.session_key() else { return Ok(()) };
        let ttl = self.ttl_secs();
        let mut pipe = redis::pipe();
        pipe.atomic();
        if !batch.actions.is_empty() {
            let actions_key = self.conn.key(&["s", session, "a"]);
            let encoded: Vec<String> = batch.actions.iter().filter_map(|a| serde_json::to_string(a).ok()).collect();
            pipe.cmd("RPUSH").arg(&actions_key).arg(encoded).ignore();
            pipe.cmd("LTRIM").arg(&actions_key).arg(-(self.limits.max_actions as i64)).arg(-1).ignore();
            pipe.cmd("EXPIRE").arg(&actions_key).arg(ttl).ignore();
            pipe.cmd("EXPIRE").arg(self.conn.key(&["s", session, "sum"])).arg(ttl).ignore();
        }
        if let Some(user) = batch.user_id.as_deref().filter(|u| !u.is_empty()) {
            pipe.cmd("SET").arg(self.conn.key(&["u", user])).arg(session).arg("EX").arg(ttl).ignore();
        }
        if let Some(conversation) = batch.conversation_id.as_deref() {
            pipe.cmd("SET").arg(self.conn.key(&["c", conversation])).arg(session).arg("EX").arg(ttl).ignore();
        }
        let mut con = self.conn.connection();
        self.conn.observe(pipe.query_async::<()>(&mut con).await).map_err(StoreError::from)
    }

    /// Several batches, in order: one pipeline each (each is atomic on its own).
    pub async fn record_batches(&self, batches: &[BatchRecord<'_>], now: SystemTime) -> Result<(), StoreError> {
        for batch in batches {
            self.record_batch(batch, now).await?;
        }
        Ok(())
    }

    pub async fn record_summary(&self, session: &str, summary: &str, _now: SystemTime) -> Result<(), StoreError> {
        let Some(session) = session_key(session) else { return Ok(()) }; // kept nowhere
        let ttl = self.ttl_secs();
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("SET").arg(self.conn.key(&["s", session, "sum"])).arg(summary).arg("EX").arg(ttl).ignore();
        pipe.cmd("EXPIRE").arg(self.conn.key(&["s", session, "a"])).arg(ttl).ignore();
        let mut con = self.conn.connection();
        self.conn.observe(pipe.query_async::<()>(&mut con).await).map_err(StoreError::from)
    }

    pub async fn session_context(&self, session: &str, _now: SystemTime) -> Result<Option<SessionContext>, StoreError> {
        let Some(session) = session_key(session) else { return Ok(None) };
        let mut pipe = redis::pipe();
        pipe.cmd("LRANGE").arg(self.conn.key(&["s", session, "a"])).arg(0).arg(-1);
        pipe.cmd("GET").arg(self.conn.key(&["s", session, "sum"]));
        let mut con = self.conn.connection();
        let (actions, summary): (Vec<String>, Option<String>) =
            self.conn.observe(pipe.query_async(&mut con).await).map_err(StoreError::from)?;
        if actions.is_empty() && summary.is_none() {
            return Ok(None);
        }
        let mut actions: Vec<ActionRecord<'static>> = actions
            .iter()
            .filter_map(|a| serde_json::from_str::<ActionRecord>(a).ok())
            .map(ActionRecord::into_owned)
            .collect();
        let excess = actions.len().saturating_sub(self.limits.max_actions);
        actions.drain(..excess);
        Ok(Some(SessionContext { summary, actions }))
    }

    pub async fn latest_session_for_user(&self, user_id: &str, now: SystemTime) -> Result<Option<String>, StoreError> {
        self.link("u", user_id, now).await
    }

    pub async fn session_for_conversation(
        &self,
        conversation_id: &str,
        now: SystemTime,
    ) -> Result<Option<String>, StoreError> {
        self.link("c", conversation_id, now).await
    }

    pub async fn sweep_expired(&self, _now: SystemTime) -> Result<usize, StoreError> {
        Ok(0) // keys carry their own expiry
    }

    pub async fn record_firings(&self, firings: &[Firing], _now: SystemTime) -> Result<(), StoreError> {
        if firings.is_empty() {
            return Ok(());
        }
        let stream = self.conn.key(&[REDIS_FIRINGS_STREAM]);
        let mut pipe = redis::pipe();
        for firing in firings {
            let Ok(json) = serde_json::to_string(firing) else { continue };
            pipe.cmd("XADD").arg(&stream).arg("MAXLEN").arg("~").arg(REDIS_FIRINGS_MAXLEN).arg("*").arg("f").arg(json);
            pipe.ignore();
        }
        let mut con = self.conn.connection();
        self.conn.observe(pipe.query_async::<()>(&mut con).await).map_err(StoreError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Runs against the Redis of TEST_REDIS_URL (see `redis_for_tests`).
    #[tokio::test]
    async fn anonymous_batches_and_summaries_are_reachable_under_no_id() {
        let Some(url) = plumbing::redis_conn::redis_for_tests("the Redis store's anonymous batches") else { return };
        let prefix = format!("test-{:x}:", rand::random::<u64>());
        let conn = RedisConn::lazy(&url, &prefix).unwrap();
        let store = RedisStore::new(conn.clone(), StoreLimits { max_actions: 10, ttl: Duration::from_secs(600) });
        let now = SystemTime::now();
        for id in [None, Some(""), Some("   "), Some("unknown"), Some("null")] {
            let batch = BatchRecord {
                session_id: id.map(Into::into),
                user_id: Some("u1".into()),
                conversation_id: Some("session_crisp".into()),
                actions: vec![ActionRecord { title: "anonymous click".into(), ..ActionRecord::default() }],
            };
            store.record_batch(&batch, now).await.unwrap();
        }
        for id in ["unknown", "", "null", " ", "\t\n", "NULL", "undefined", "none"] {
            store.record_summary(id, "anonymous summary", now).await.unwrap();
            assert_eq!(store.session_context(id, now).await.unwrap(), None, "{id:?}");
        }
        assert!(store.latest_session_for_user("u1", now).await.unwrap().is_none());
        assert!(store.session_for_conversation("session_crisp", now).await.unwrap().is_none());
        let mut con = conn.connection();
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut con).await.unwrap();
        assert!(keys.is_empty(), "nothing stored: {keys:?}");
    }

    #[tokio::test]
    async fn firings_go_to_the_stream_in_order() {
        let Some(url) = plumbing::redis_conn::redis_for_tests("the Redis firing stream") else { return };
        let prefix = format!("test-{:x}:", rand::random::<u64>());
        let conn = RedisConn::lazy(&url, &prefix).unwrap();
        let store = RedisStore::new(conn.clone(), StoreLimits { max_actions: 10, ttl: Duration::from_secs(600) });
        let firings: Vec<Firing> = (0..3)
            .map(|n| Firing {
                id: format!("s1:repeat:{n}"),
                trigger: crate::firing::Trigger::Repeat,
                session_id: "s1".into(),
                user_id: None,
                conversation_id: None,
                at: 1.0,
                page: "/p".into(),
                detail: "d".into(),
                recorded_at: 2.0,
            })
            .collect();
        store.record_firings(&firings, SystemTime::now()).await.unwrap();
        let mut con = conn.connection();
        let stream = format!("{prefix}{REDIS_FIRINGS_STREAM}");
        let entries: Vec<(String, Vec<(String, String)>)> =
            redis::cmd("XRANGE").arg(&stream).arg("-").arg("+").query_async(&mut con).await.unwrap();
        let _: () = redis::cmd("DEL").arg(&stream).query_async(&mut con).await.unwrap();
        let read: Vec<Firing> = entries
            .iter()
            .map(|(_, fields)| {
                assert_eq!(fields.len(), 1);
                assert_eq!(fields[0].0, "f");
                serde_json::from_str(&fields[0].1).unwrap()
            })
            .collect();
        assert_eq!(read, firings);
    }
}
