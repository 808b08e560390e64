//! The embedded context store: plain files under a data directory.
//!
//! Why files and not SQLite: both processes already share a directory (`event_data.txt`), the
//! data is a short, append-mostly log per session, and one file per session makes a lookup a
//! single open by name, whatever else is stored; no extra C library, no lock contention
//! between the writer (listener) and the readers (webhook replicas on the same host).
//!
//! Layout (names are SHA-256 prefixes of the ids, so visitor-supplied ids never touch paths):
//! - `sessions/<h>.jsonl`: one JSON record per line, an action or a summary, appended;
//!   compacted to the newest `max_actions` actions and the latest summary when it grows.
//! - `users/<h>`, `conversations/<h>`: the latest session id for a user or conversation.
//!
//! - `proactive.firings`: proactive trigger firings, one JSON line each, appended; renamed to
//!   `proactive.firings.1` (replacing it) once over [`FIRINGS_ROTATE_BYTES`].
//!
//! Expiry is by modification time: a file idle longer than the TTL reads as absent and is
//! deleted by [`FileStore::sweep_expired`].

use super::{SessionContext, StoreError, StoreLimits};
use crate::action::{ActionRecord, BatchRecord};
use crate::firing::{FIRINGS_FILE, Firing};
use crate::payload::session_key;
use plumbing::files::append_whole;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

/// One line of a session file, as written: `{"k":"action","a":{..}}` or
/// `{"k":"summary","s":".."}`.
#[derive(Serialize)]
struct RecordRef<'a> {
    k: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    a: Option<&'a ActionRecord<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    s: Option<&'a str>,
}

impl<'a> RecordRef<'a> {
    fn action(a: &'a ActionRecord<'a>) -> Self {
        Self { k: "action", a: Some(a), s: None }
    }

    fn summary(s: &'a str) -> Self {
        Self { k: "summary", a: None, s: Some(s) }
    }
}

/// How every record line starts (serde writes `k` first), so the tail of a session can be
/// found without parsing it.
const ACTION_PREFIX: &[u8] = br#"{"k":"action""#;
const SUMMARY_PREFIX: &[u8] = br#"{"k":"summary""#;

/// The firings file is rotated before an append once it is larger than this. A reader that
/// keeps the file open finishes the old one, then reopens the path.
pub const FIRINGS_ROTATE_BYTES: u64 = 1024 * 1024;

/// Session files kept open for appending, at most (each costs a file descriptor).
const OPEN_SESSION_FILES: usize = 128;

/// One line as read back: a plain struct, so serde parses it in one pass (an internally
/// tagged enum would buffer every line first).
#[derive(Deserialize)]
struct RecordLine<'a> {
    #[serde(borrow)]
    a: Option<ActionRecord<'a>>,
    s: Option<String>,
}

#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    limits: StoreLimits,
    /// Bounds file work in flight, so a burst of replies cannot start hundreds of threads.
    io_slots: tokio::sync::Semaphore,
    /// Links already on disk, so a steady stream of batches does not rewrite them.
    /// Keyed by kind and id, so the common case (nothing changed) hashes no file name.
    links_written: moka::sync::Cache<(&'static str, String), String>,
    /// Session files open for appending, by session id: a steady stream of batches costs one
    /// `write(2)` each instead of open, stat, write and close. The listener is the only
    /// writer of a session file, so what is known here of its length and age is the truth.
    appenders: Mutex<HashMap<String, Appender>>,
    /// One append to the firings file at a time (its length before is the length to cut
    /// back to after a failed write).
    firings: Mutex<()>,
}

struct Appender {
    file: File,
    len: u64,
    last_write: SystemTime,
}

const DIRS: [&str; 3] = ["sessions", "users", "conversations"];

impl FileStore {
    /// Opens (creating) the store under `root`.
    pub fn open(root: impl Into<PathBuf>, limits: StoreLimits) -> io::Result<Self> {
        let root = root.into();
        for dir in DIRS {
            fs::create_dir_all(root.join(dir))?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                // Time to live, not idle: a link is rewritten (its mtime refreshed) at least every
                // half TTL while its visitor is active, so it never expires under them.
                links_written: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(limits.ttl / 2).build(),
                limits,
                io_slots: tokio::sync::Semaphore::new(16),
                appenders: Mutex::new(HashMap::new()),
                firings: Mutex::new(()),
            }),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> io::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        // The semaphore is never closed, so a permit always comes.
        let _slot = self.inner.io_slots.acquire().await.ok();
        let inner = Arc::clone(&self.inner);
        Ok(tokio::task::spawn_blocking(move || f(&inner)).await??)
    }
}

fn hashed(id: &str) -> String {
    hex::encode(&Sha256::digest(id.as_bytes())[..16])
}

impl Inner {
    fn session_path(&self, session: &str) -> PathBuf {
        self.root.join("sessions").join(format!("{}.jsonl", hashed(session)))
    }

    fn link_path(&self, kind: &str, id: &str) -> PathBuf {
        self.root.join(kind).join(hashed(id))
    }

    /// A file last modified longer than the TTL ago.
    fn is_expired(&self, meta: &fs::Metadata, now: SystemTime) -> bool {
        meta.modified().is_ok_and(|modified| self.is_stale(modified, now))
    }

    fn is_stale(&self, last_write: SystemTime, now: SystemTime) -> bool {
        now.duration_since(last_write).is_ok_and(|age| age > self.limits.ttl)
    }

    /// Appends ready-made record lines to a session's file, compacting it when it grew.
    fn append_lines(&self, session: &str, lines: &[u8], now: SystemTime) -> io::Result<()> {
        let mut appenders = self.appenders.lock().unwrap_or_else(PoisonError::into_inner);
        let reusable = appenders.get(session).is_some_and(|a| !self.is_stale(a.last_write, now));
        if !reusable {
            // New to this process, or idle past the TTL (then its file is expired or swept).
            let idle = appenders.remove(session).is_some();
            if appenders.len() >= OPEN_SESSION_FILES
                && let Some(idlest) = appenders.iter().min_by_key(|(_, a)| a.last_write).map(|(s, _)| s.clone())
            {
                appenders.remove(&idlest);
            }
            let appender = self.open_appender(session, now, idle)?;
            appenders.insert(session.to_owned(), appender);
        }
        let Some(appender) = appenders.get_mut(session) else {
            return Ok(()); // inserted just above
        };
        // Whole lines or nothing (a full disk): a torn line would merge with the next record.
        if let Err(e) = append_whole(&appender.file, &self.session_path(session), appender.len, lines) {
            appenders.remove(session); // reopened on the next write
            return Err(e);
        }
        appender.len += lines.len() as u64;
        appender.last_write = now;
        if appender.len > self.compact_above() {
            // The rename leaves this handle on the old file: the next write reopens.
            let appender = appenders.remove(session);
            if let Some(mut appender) = appender {
                self.compact(&self.session_path(session), &mut appender.file)?;
            }
        }
        Ok(())
    }

    /// A session file is rewritten once it holds several times what a lookup keeps: each
    /// rewrite costs a new file and a rename (ext4 then flushes it and frees the old blocks),
    /// while a lookup only reads the tail, so a bigger file costs a lookup little.
    fn compact_above(&self) -> u64 {
        (self.limits.max_actions as u64 * 4096).max(256 * 1024)
    }

    /// Opens a session file for appending; `idle`: this process last wrote it longer than the
    /// TTL ago, so whatever it holds has expired.
    fn open_appender(&self, session: &str, now: SystemTime, idle: bool) -> io::Result<Appender> {
        let file = OpenOptions::new().create(true).append(true).read(true).open(self.session_path(session))?;
        let meta = file.metadata()?;
        let mut len = meta.len();
        if len > 0 && (idle || self.is_expired(&meta, now)) {
            file.set_len(0)?; // an expired session starts afresh
            len = 0;
        }
        Ok(Appender { file, len, last_write: now })
    }

    /// Rewrites a session file with its newest actions and latest summary (atomic rename).
    /// Record lines are copied as they are: nothing is parsed or serialised again.
    fn compact(&self, path: &Path, file: &mut File) -> io::Result<()> {
        // An append handle's offset is at the end: read from the start.
        file.rewind()?;
        let bytes = read_all(file)?;
        let (summary, actions) = tail_records(&bytes, self.limits.max_actions);
        let mut buf = Vec::with_capacity(bytes.len().min(256 * 1024));
        for line in summary.into_iter().chain(actions) {
            buf.extend_from_slice(line);
            buf.push(b'\n');
        }
        write_atomically(path, &buf)
    }

    fn write_link(&self, kind: &'static str, id: &str, session: &str) -> io::Result<()> {
        let key = (kind, id.to_owned());
        if self.links_written.get(&key).is_some_and(|s| s == session) {
            return Ok(());
        }
        write_atomically(&self.link_path(kind, id), session.as_bytes())?;
        self.links_written.insert(key, session.to_owned());
        Ok(())
    }

    fn read_link(&self, kind: &str, id: &str, now: SystemTime) -> io::Result<Option<String>> {
        let mut file = match File::open(self.link_path(kind, id)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if self.is_expired(&file.metadata()?, now) {
            return Ok(None);
        }
        let bytes = read_all(&mut file)?;
        Ok(String::from_utf8(bytes).ok().filter(|s| !s.is_empty()))
    }

    fn read_session(&self, session: &str, now: SystemTime) -> io::Result<Option<SessionContext>> {
        let mut file = match File::open(self.session_path(session)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if self.is_expired(&file.metadata()?, now) {
            return Ok(None);
        }
        Ok(Some(parse_session(&read_all(&mut file)?, self.limits.max_actions)))
    }

    /// Appends firing lines to the firings file in one write, rotating it first when it is
    /// over [`FIRINGS_ROTATE_BYTES`].
    fn append_firings(&self, lines: &[u8]) -> io::Result<()> {
        let _one_at_a_time = self.firings.lock().unwrap_or_else(PoisonError::into_inner);
        let path = self.root.join(FIRINGS_FILE);
        if fs::metadata(&path).is_ok_and(|m| m.len() > FIRINGS_ROTATE_BYTES) {
            let mut rotated = path.clone().into_os_string();
            rotated.push(".1");
            fs::rename(&path, rotated)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let len = file.metadata()?.len();
        append_whole(&file, &path, len, lines)
    }

    fn sweep(&self, now: SystemTime) -> io::Result<usize> {
        // Idle sessions give back their file descriptors.
        self.appenders.lock().unwrap_or_else(PoisonError::into_inner).retain(|_, a| !self.is_stale(a.last_write, now));
        let mut removed = 0;
        for dir in DIRS {
            for entry in fs::read_dir(self.root.join(dir))? {
                let entry = entry?;
                let expired = entry.metadata().map(|m| m.is_file() && self.is_expired(&m, now)).unwrap_or(false);
                // A link's cache entry lives half the TTL, so it is gone before its file expires.
                if expired && fs::remove_file(entry.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

fn read_all(file: &mut File) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The newest `max_actions` action lines and the latest summary line, each oldest first;
/// found from the end by their prefix, so a lookup parses only what it returns.
fn tail_records(bytes: &[u8], max_actions: usize) -> (Option<&[u8]>, Vec<&[u8]>) {
    let mut summary = None;
    let mut actions = Vec::with_capacity(max_actions.min(1024));
    let mut end = bytes.len();
    while end > 0 {
        let start = memchr::memrchr(b'\n', &bytes[..end]).map_or(0, |i| i + 1);
        let line = &bytes[start..end];
        end = start.saturating_sub(1);
        if line.starts_with(ACTION_PREFIX) && actions.len() < max_actions {
            actions.push(line);
        } else if summary.is_none() && line.starts_with(SUMMARY_PREFIX) {
            summary = Some(line);
        }
        if summary.is_some() && actions.len() == max_actions {
            break;
        }
    }
    actions.reverse();
    (summary, actions)
}

/// The newest `max_actions` actions and the latest summary; unreadable lines are skipped.
fn parse_session(bytes: &[u8], max_actions: usize) -> SessionContext {
    let (summary, actions) = tail_records(bytes, max_actions);
    fn parse(line: &[u8]) -> Option<RecordLine<'_>> {
        serde_json::from_slice(line).ok()
    }
    SessionContext {
        summary: summary.and_then(parse).and_then(|r| r.s),
        actions: actions.into_iter().filter_map(parse).filter_map(|r| r.a).map(ActionRecord::into_owned).collect(),
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

/// The store's operations; [`super::StoreWriter`] and [`super::StoreReader`] give each side its own.
impl FileStore {
    pub async fn record_batch(&self, batch: &BatchRecord<'_>, now: SystemTime) -> Result<(), StoreError> {
        self.record_batches(std::slice::from_ref(batch), now).await
    }

    pub async fn record_batches(&self, batches: &[BatchRecord<'_>], now: SystemTime) -> Result<(), StoreError> {
        // Serialised here, grouped by session in arrival order: one append per session.
        let mut sessions: Vec<(String, Vec<u8>)> = Vec::new();
        let mut links: Vec<(&'static str, String, String)> = Vec::new();
        for batch in batches {
            // Anonymous activity is kept nowhere: no id a visitor can name reaches it.
            let Some(session) = batch.session_key() else { continue };
            if !batch.actions.is_empty() {
                let lines = match sessions.iter_mut().find(|(s, _)| s == session) {
                    Some((_, lines)) => lines,
                    None => {
                        sessions.push((session.to_owned(), Vec::new()));
                        &mut sessions.last_mut().expect("just pushed").1
                    }
                };
                for action in &batch.actions {
                    // Writing JSON into a Vec cannot fail for these types.
                    let _ = serde_json::to_writer(&mut *lines, &RecordRef::action(action));
                    lines.push(b'\n');
                }
            }
            if let Some(user) = batch.user_id.as_deref().filter(|u| !u.is_empty()) {
                links.push(("users", user.to_owned(), session.to_owned()));
            }
            if let Some(conversation) = batch.conversation_id.as_deref() {
                links.push(("conversations", conversation.to_owned(), session.to_owned()));
            }
        }
        self.blocking(move |inner| {
            for (session, lines) in &sessions {
                inner.append_lines(session, lines, now)?;
            }
            for (kind, id, session) in &links {
                inner.write_link(kind, id, session)?;
            }
            Ok(())
        })
        .await
    }

    pub async fn record_summary(&self, session: &str, summary: &str, now: SystemTime) -> Result<(), StoreError> {
        let Some(session) = session_key(session).map(str::to_owned) else {
            return Ok(()); // an anonymous summary is kept nowhere
        };
        let mut line = serde_json::to_vec(&RecordRef::summary(summary)).unwrap_or_default();
        line.push(b'\n');
        self.blocking(move |inner| inner.append_lines(&session, &line, now)).await
    }

    pub async fn session_context(&self, session: &str, now: SystemTime) -> Result<Option<SessionContext>, StoreError> {
        let Some(session) = session_key(session).map(str::to_owned) else {
            return Ok(None);
        };
        self.blocking(move |inner| inner.read_session(&session, now)).await
    }

    pub async fn latest_session_for_user(&self, user_id: &str, now: SystemTime) -> Result<Option<String>, StoreError> {
        let user = user_id.to_owned();
        self.blocking(move |inner| inner.read_link("users", &user, now)).await
    }

    pub async fn session_for_conversation(
        &self,
        conversation_id: &str,
        now: SystemTime,
    ) -> Result<Option<String>, StoreError> {
        let conversation = conversation_id.to_owned();
        self.blocking(move |inner| inner.read_link("conversations", &conversation, now)).await
    }

    pub async fn sweep_expired(&self, now: SystemTime) -> Result<usize, StoreError> {
        self.blocking(move |inner| inner.sweep(now)).await
    }

    pub async fn record_firings(&self, firings: &[Firing], _now: SystemTime) -> Result<(), StoreError> {
        let mut lines = Vec::with_capacity(firings.len() * 256);
        for firing in firings {
            // Writing JSON into a Vec cannot fail for this type.
            let _ = serde_json::to_writer(&mut lines, firing);
            lines.push(b'\n');
        }
        if lines.is_empty() {
            return Ok(());
        }
        self.blocking(move |inner| inner.append_firings(&lines)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn batch(session: &str, user: Option<&str>, titles: &[&str]) -> BatchRecord<'static> {
        BatchRecord {
            session_id: Some(session.to_owned().into()),
            user_id: user.map(|u| u.to_owned().into()),
            actions: titles
                .iter()
                .map(|t| ActionRecord { title: (*t).to_owned().into(), ..ActionRecord::default() })
                .collect(),
            ..BatchRecord::default()
        }
    }

    fn store(max_actions: usize, ttl_secs: u64) -> (tempfile::TempDir, FileStore) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            FileStore::open(dir.path(), StoreLimits { max_actions, ttl: Duration::from_secs(ttl_secs) }).unwrap();
        (dir, store)
    }

    fn titles(ctx: &SessionContext) -> Vec<&str> {
        ctx.actions.iter().map(|a| &*a.title).collect()
    }

    #[tokio::test]
    async fn sessions_are_kept_apart() {
        let (_dir, store) = store(10, 600);
        let now = SystemTime::now();
        store.record_batch(&batch("a", None, &["a1", "a2"]), now).await.unwrap();
        store.record_batch(&batch("b", None, &["b1"]), now).await.unwrap();
        store.record_summary("a", "A summary", now).await.unwrap();
        let a = store.session_context("a", now).await.unwrap().unwrap();
        assert_eq!(titles(&a), ["a1", "a2"]);
        assert_eq!(a.summary.as_deref(), Some("A summary"));
        let b = store.session_context("b", now).await.unwrap().unwrap();
        assert_eq!(titles(&b), ["b1"]);
        assert_eq!(b.summary, None);
        assert!(store.session_context("c", now).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_action_keeps_its_type_times_raw_url_and_index() {
        let (_dir, store) = store(10, 600);
        let now = SystemTime::now();
        let full = ActionRecord {
            title: "Click Export".into(),
            description: "clicked Export CSV".into(),
            canonical_url: "https://app.example.com/reports".into(),
            kind: "click".into(),
            raw_url: "https://app.example.com/reports?tab=2".into(),
            index: 3,
            timestamp_start: 1_700_000_000.5,
            timestamp_end: 1_700_000_001.25,
        };
        let mut with_full = batch("a", None, &[]);
        with_full.actions = vec![full.clone()];
        store.record_batch(&with_full, now).await.unwrap();
        let ctx = store.session_context("a", now).await.unwrap().unwrap();
        assert_eq!(ctx.actions, [full]);
    }

    #[tokio::test]
    async fn records_written_before_the_extra_fields_read_them_as_absent() {
        let (_dir, store) = store(10, 600);
        let now = SystemTime::now();
        std::fs::write(
            store.inner.session_path("old"),
            concat!(
                r#"{"k":"action","a":{"title":"Old click","description":"d","canonical_url":"/p"}}"#,
                "\n",
                r#"{"k":"summary","s":"old summary"}"#,
                "\n"
            ),
        )
        .unwrap();
        let ctx = store.session_context("old", now).await.unwrap().unwrap();
        assert_eq!(ctx.summary.as_deref(), Some("old summary"));
        assert_eq!(
            ctx.actions,
            [ActionRecord {
                title: "Old click".into(),
                description: "d".into(),
                canonical_url: "/p".into(),
                ..ActionRecord::default()
            }]
        );
        // New records append after old ones and both read back.
        store.record_batch(&batch("old", None, &["new click"]), now).await.unwrap();
        assert_eq!(titles(&store.session_context("old", now).await.unwrap().unwrap()), ["Old click", "new click"]);
    }

    #[tokio::test]
    async fn compaction_keeps_the_newest_actions_and_the_summary() {
        let (_dir, store) = store(3, 600);
        let now = SystemTime::now();
        store.record_summary("a", "early summary", now).await.unwrap();
        let path = store.inner.session_path("a");
        let long = "x".repeat(2000);
        let mut previous_size = 0;
        for i in 0..200 {
            store.record_batch(&batch("a", None, &[&format!("{i}{long}")]), now).await.unwrap();
            let size = std::fs::metadata(&path).unwrap().len();
            if size < previous_size {
                // Just compacted: what the visitor did last is still there, and the summary.
                let ctx = store.session_context("a", now).await.unwrap().unwrap();
                assert_eq!(ctx.summary.as_deref(), Some("early summary"), "after action {i}");
                let expected: Vec<String> = (i - 2..=i).map(|n| format!("{n}{long}")).collect();
                assert_eq!(titles(&ctx), expected, "after action {i}");
                return;
            }
            previous_size = size;
        }
        panic!("the file was never compacted");
    }

    #[test]
    fn the_tail_is_found_by_prefix_oldest_first() {
        let bytes = b"{\"k\":\"summary\",\"s\":\"old\"}\n{\"k\":\"action\",\"a\":{\"title\":\"1\"}}\n\
            garbage\n{\"k\":\"summary\",\"s\":\"new\"}\n{\"k\":\"action\",\"a\":{\"title\":\"2\"}}\n\
            {\"k\":\"action\",\"a\":{\"title\":\"3\"}}\n";
        let (summary, actions) = tail_records(bytes, 2);
        assert_eq!(summary, Some(&b"{\"k\":\"summary\",\"s\":\"new\"}"[..]));
        assert_eq!(actions.len(), 2);
        assert!(actions[0].ends_with(b"\"2\"}}") && actions[1].ends_with(b"\"3\"}}"));
        let ctx = parse_session(bytes, 10);
        assert_eq!(titles(&ctx), ["1", "2", "3"]);
        assert_eq!(ctx.summary.as_deref(), Some("new"));
        assert_eq!(parse_session(b"", 10), SessionContext::default());
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_tail_matches_a_forward_scan(
            lines in proptest::collection::vec(prop_oneof![
                Just("{\"k\":\"action\",\"a\":{}}"), Just("{\"k\":\"summary\",\"s\":\"\"}"), Just(""), Just("junk"),
            ].prop_map(str::to_owned), 0..40),
            numbered in proptest::bool::ANY,
            max_actions in 1usize..10,
        ) {
            let lines: Vec<String> =
                lines.iter().enumerate().map(|(i, l)| if numbered { format!("{l}{i}") } else { l.clone() }).collect();
            let bytes = lines.join("\n").into_bytes();
            let all: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
            let expected_actions: Vec<&[u8]> = all.iter().copied().filter(|l| l.starts_with(ACTION_PREFIX)).collect();
            let skip = expected_actions.len().saturating_sub(max_actions);
            let expected_summary = all.iter().copied().rev().find(|l| l.starts_with(SUMMARY_PREFIX));
            let (summary, actions) = tail_records(&bytes, max_actions);
            prop_assert_eq!(summary, expected_summary);
            prop_assert_eq!(actions, expected_actions[skip..].to_vec());
        }
    }

    #[tokio::test]
    async fn more_sessions_than_open_files_all_land() {
        let (_dir, store) = store(10, 600);
        let now = SystemTime::now();
        let sessions = OPEN_SESSION_FILES * 2 + 7;
        for round in 0..2 {
            for s in 0..sessions {
                store.record_batch(&batch(&format!("s{s}"), None, &[&format!("{round}")]), now).await.unwrap();
            }
        }
        for s in 0..sessions {
            let ctx = store.session_context(&format!("s{s}"), now).await.unwrap().unwrap();
            assert_eq!(titles(&ctx), ["0", "1"], "session s{s}");
        }
        assert!(store.inner.appenders.lock().unwrap().len() <= OPEN_SESSION_FILES);
    }

    #[tokio::test]
    async fn keeps_only_the_newest_actions_even_after_compaction() {
        let (_dir, store) = store(3, 600);
        let now = SystemTime::now();
        let long = "x".repeat(2000);
        for i in 0..100 {
            let title = format!("{i}{long}");
            store.record_batch(&batch("a", None, &[&title]), now).await.unwrap();
        }
        let ctx = store.session_context("a", now).await.unwrap().unwrap();
        assert_eq!(ctx.actions.len(), 3);
        assert!(ctx.actions[2].title.starts_with("99"));
        let size = std::fs::metadata(store.inner.session_path("a")).unwrap().len();
        assert!(size <= store.inner.compact_above() + 4096, "compaction bounds the file: {size}");
    }

    #[tokio::test]
    async fn links_users_and_conversations_to_their_latest_session() {
        let (_dir, store) = store(10, 600);
        let now = SystemTime::now();
        store.record_batch(&batch("s1", Some("u1"), &["x"]), now).await.unwrap();
        store.record_batch(&batch("s2", Some("u1"), &["y"]), now).await.unwrap();
        let mut with_conversation = batch("s3", None, &[]);
        with_conversation.conversation_id = Some("session_crisp".into());
        store.record_batch(&with_conversation, now).await.unwrap();
        assert_eq!(store.latest_session_for_user("u1", now).await.unwrap().as_deref(), Some("s2"));
        assert_eq!(store.session_for_conversation("session_crisp", now).await.unwrap().as_deref(), Some("s3"));
        assert!(store.latest_session_for_user("u2", now).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn anonymous_batches_never_link() {
        let (_dir, store) = store(10, 600);
        let now = SystemTime::now();
        let mut anonymous = batch("x", Some("u1"), &["x"]);
        anonymous.session_id = None;
        store.record_batch(&anonymous, now).await.unwrap();
        assert!(store.latest_session_for_user("u1", now).await.unwrap().is_none());
    }

    /// Ids a visitor can put in their chat session data that name no Autoplay session.
    pub(crate) const NOT_SESSIONS: [&str; 8] = ["unknown", "", "null", " ", "\t\n", "NULL", "undefined", "none"];

    #[tokio::test]
    async fn anonymous_batches_and_summaries_are_reachable_under_no_id() {
        let (dir, store) = store(10, 600);
        let now = SystemTime::now();
        for id in [None, Some(""), Some("   "), Some("unknown"), Some("null")] {
            let mut anonymous = batch("x", Some("u1"), &["anonymous click"]);
            anonymous.session_id = id.map(|id| id.to_owned().into());
            anonymous.conversation_id = Some("session_crisp".into());
            store.record_batch(&anonymous, now).await.unwrap();
        }
        for id in NOT_SESSIONS {
            store.record_summary(id, "anonymous summary", now).await.unwrap();
        }
        for id in NOT_SESSIONS {
            assert_eq!(store.session_context(id, now).await.unwrap(), None, "{id:?}");
        }
        assert!(store.latest_session_for_user("u1", now).await.unwrap().is_none());
        assert!(store.session_for_conversation("session_crisp", now).await.unwrap().is_none());
        for sub in DIRS {
            assert_eq!(std::fs::read_dir(dir.path().join(sub)).unwrap().count(), 0, "nothing stored in {sub}");
        }
        // A real session still is, under its trimmed id.
        store.record_batch(&batch(" ps_1 ", None, &["mine"]), now).await.unwrap();
        assert_eq!(titles(&store.session_context("ps_1", now).await.unwrap().unwrap()), ["mine"]);
    }

    /// Fill the disk, free it: every record on disk is whole, none merged with another, and
    /// what comes back is exactly what was recorded without an error.
    #[tokio::test]
    async fn a_full_disk_never_tears_or_merges_records() {
        let disk = plumbing::files::test_disk::TinyDisk::new();
        let store =
            FileStore::open(disk.path(), StoreLimits { max_actions: 10_000, ttl: Duration::from_secs(600) }).unwrap();
        let now = SystemTime::now();
        let mut kept: HashMap<&str, Vec<String>> = HashMap::new();
        let mut failures = 0;
        let record = |n: usize| {
            let session = ["a", "b"][n % 2];
            let title = format!("{n}:{}", "t".repeat(200 + n * 53 % 600));
            (session, title)
        };
        for n in 0..400 {
            let (session, title) = record(n);
            match store.record_batch(&batch(session, None, &[&title]), now).await {
                Ok(()) => kept.entry(session).or_default().push(title),
                Err(_) => failures += 1,
            }
        }
        assert!(failures > 0, "the disk never filled (tmpfs: {})", disk.is_tmpfs());
        disk.grow();
        for n in 400..410 {
            let (session, title) = record(n);
            store.record_batch(&batch(session, None, &[&title]), now).await.expect("writing resumes");
            kept.entry(session).or_default().push(title);
        }
        for session in ["a", "b"] {
            let bytes = std::fs::read(store.inner.session_path(session)).unwrap();
            for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let parsed: Result<RecordLine, _> = serde_json::from_slice(line);
                assert!(parsed.is_ok(), "a torn or merged record: {}", String::from_utf8_lossy(line));
            }
            let ctx = store.session_context(session, now).await.unwrap().unwrap();
            assert_eq!(titles(&ctx), kept[session], "session {session}");
        }
    }

    #[tokio::test]
    async fn everything_expires_after_the_ttl() {
        let (_dir, store) = store(10, 60);
        let now = SystemTime::now();
        store.record_batch(&batch("s1", Some("u1"), &["x"]), now).await.unwrap();
        let later = now + Duration::from_secs(61);
        assert!(store.session_context("s1", later).await.unwrap().is_none());
        assert!(store.latest_session_for_user("u1", later).await.unwrap().is_none());
        assert!(store.session_context("s1", now).await.unwrap().is_some());
        assert_eq!(store.sweep_expired(later).await.unwrap(), 2);
        assert!(store.session_context("s1", now).await.unwrap().is_none());
        // A session written again after expiry starts afresh: idle in this process...
        store.record_batch(&batch("s1", None, &["old"]), now).await.unwrap();
        store.record_batch(&batch("s1", None, &["new"]), later).await.unwrap();
        assert_eq!(titles(&store.session_context("s1", now).await.unwrap().unwrap()), ["new"]);
        // ...or found old on disk by a process that starts (its file's age tells).
        let restarted = FileStore::open(&store.inner.root, store.inner.limits.clone()).unwrap();
        let path = store.inner.session_path("s1");
        File::options().write(true).open(&path).unwrap().set_modified(now - Duration::from_secs(120)).unwrap();
        restarted.record_batch(&batch("s1", None, &["newer"]), now).await.unwrap();
        assert_eq!(titles(&restarted.session_context("s1", now).await.unwrap().unwrap()), ["newer"]);
    }

    #[tokio::test]
    async fn hostile_ids_stay_inside_the_store() {
        let (dir, store) = store(10, 600);
        let now = SystemTime::now();
        store.record_batch(&batch("../../etc/passwd", Some("/root"), &["x"]), now).await.unwrap();
        assert!(store.session_context("../../etc/passwd", now).await.unwrap().is_some());
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            assert!(DIRS.contains(&entry.unwrap().file_name().to_str().unwrap()));
        }
    }

    fn firing(n: usize, detail: &str) -> Firing {
        Firing {
            id: format!("ps_1:ping_pong:{n}"),
            trigger: crate::firing::Trigger::PingPong,
            session_id: "ps_1".into(),
            user_id: Some("u1".into()),
            conversation_id: None,
            at: 1_700_000_000.5,
            page: "/a".into(),
            detail: detail.into(),
            recorded_at: 1_700_000_001.0,
        }
    }

    #[tokio::test]
    async fn firings_are_appended_one_json_line_each_and_rotated() {
        let (dir, store) = store(10, 600);
        let path = dir.path().join(FIRINGS_FILE);
        store.record_firings(&[], SystemTime::now()).await.unwrap();
        assert!(!path.exists(), "nothing to record: no file");
        store.record_firings(&[firing(1, "one"), firing(2, "two")], SystemTime::now()).await.unwrap();
        let expected = concat!(
            r#"{"id":"ps_1:ping_pong:1","trigger":"ping_pong","session_id":"ps_1","user_id":"u1","at":1700000000.5,"page":"/a","detail":"one","recorded_at":1700000001.0}"#,
            "\n",
            r#"{"id":"ps_1:ping_pong:2","trigger":"ping_pong","session_id":"ps_1","user_id":"u1","at":1700000000.5,"page":"/a","detail":"two","recorded_at":1700000001.0}"#,
            "\n"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), expected);
        // Past 1 MiB, the next append starts a new file; the old one is `.1`.
        let big = "x".repeat(1000);
        let many: Vec<Firing> = (0..1100).map(|n| firing(n, &big)).collect();
        store.record_firings(&many, SystemTime::now()).await.unwrap();
        assert!(fs::metadata(&path).unwrap().len() > FIRINGS_ROTATE_BYTES);
        store.record_firings(&[firing(9, "after")], SystemTime::now()).await.unwrap();
        let rotated = fs::read_to_string(dir.path().join(format!("{FIRINGS_FILE}.1"))).unwrap();
        assert_eq!(rotated.lines().count(), 1102);
        assert!(rotated.ends_with('\n'));
        let now = fs::read_to_string(&path).unwrap();
        assert_eq!(serde_json::from_str::<Firing>(now.trim_end()).unwrap(), firing(9, "after"));
    }
}
