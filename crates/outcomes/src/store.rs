//! Where outcome records and offer statistics are kept: [`OutcomeStore`], with an in-memory
//! implementation ([`MemoryStore`]) and an append-only JSON-lines file ([`FileStore`]). The
//! webhook adds Redis.

use crate::offers::OfferStats;
use crate::outcome::ConversationOutcome;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The file's name under `DATA_DIR`, by convention.
pub const FILE_NAME: &str = "outcomes.jsonl";
/// A file with more lines than this many times its live records (and at least
/// [`COMPACT_MIN_LINES`] lines) is rewritten on the next put.
pub const COMPACT_RATIO: usize = 4;
pub const COMPACT_MIN_LINES: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("outcome store {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("outcome store: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Keeps one [`ConversationOutcome`] per conversation and the [`OfferStats`]. Methods take
/// `&self` so one store is shared across tasks.
pub trait OutcomeStore: Send + Sync {
    fn get(&self, conversation_id: &str) -> Result<Option<ConversationOutcome>, StoreError>;
    fn put(&self, outcome: &ConversationOutcome) -> Result<(), StoreError>;
    /// Records whose latest event ([`ConversationOutcome::last_event_at`]) is at or after
    /// `since`, in no particular order.
    fn list_since(&self, since: f64) -> Result<Vec<ConversationOutcome>, StoreError>;
    fn get_offers(&self) -> Result<Option<OfferStats>, StoreError>;
    fn put_offers(&self, offers: &OfferStats) -> Result<(), StoreError>;
}

/// Records in memory only (tests, and the webhook without a data directory).
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Records>,
}

#[derive(Debug, Default)]
struct Records {
    conversations: HashMap<String, ConversationOutcome>,
    offers: Option<OfferStats>,
}

impl Records {
    fn list_since(&self, since: f64) -> Vec<ConversationOutcome> {
        self.conversations.values().filter(|c| c.last_event_at() >= since).cloned().collect()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

fn lock(m: &Mutex<Records>) -> std::sync::MutexGuard<'_, Records> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl OutcomeStore for MemoryStore {
    fn get(&self, conversation_id: &str) -> Result<Option<ConversationOutcome>, StoreError> {
        Ok(lock(&self.inner).conversations.get(conversation_id).cloned())
    }

    fn put(&self, outcome: &ConversationOutcome) -> Result<(), StoreError> {
        lock(&self.inner).conversations.insert(outcome.conversation_id.clone(), outcome.clone());
        Ok(())
    }

    fn list_since(&self, since: f64) -> Result<Vec<ConversationOutcome>, StoreError> {
        Ok(lock(&self.inner).list_since(since))
    }

    fn get_offers(&self) -> Result<Option<OfferStats>, StoreError> {
        Ok(lock(&self.inner).offers.clone())
    }

    fn put_offers(&self, offers: &OfferStats) -> Result<(), StoreError> {
        lock(&self.inner).offers = Some(offers.clone());
        Ok(())
    }
}

/// One line of the file: a conversation's record, or the offer statistics; the last line of
/// each wins.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Conversation(Box<ConversationOutcome>),
    Offers(OfferStats),
}

/// Records in memory, each put appended to a JSON-lines file (mode 0600) read back on open.
/// An unreadable line (a write cut short by a crash) is skipped. The file is rewritten with
/// one line per record, through a temporary file renamed over it, once it holds
/// [`COMPACT_RATIO`] times more lines than records, or on [`FileStore::compact`].
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    inner: Mutex<FileInner>,
}

#[derive(Debug)]
struct FileInner {
    records: Records,
    file: BufWriter<File>,
    lines: usize,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_owned(), source }
}

fn open_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

impl FileStore {
    /// Opens (or creates) the file at `path` and reads its records.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let path = path.into();
        let mut records = Records::default();
        let mut lines = 0;
        match File::open(&path) {
            Ok(file) => {
                for line in BufReader::new(file).lines() {
                    let line = line.map_err(io(&path))?;
                    lines += 1;
                    match serde_json::from_str::<Line>(&line) {
                        Ok(Line::Conversation(c)) => {
                            records.conversations.insert(c.conversation_id.clone(), *c);
                        }
                        Ok(Line::Offers(o)) => records.offers = Some(o),
                        Err(_) => {} // cut short by a crash, or not ours
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        let file = open_options().open(&path).map_err(io(&path))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io(&path))?;
        }
        // A line cut short is ended, so the next record starts a line of its own.
        let mut file = BufWriter::new(file);
        if std::fs::read(&path).map_err(io(&path))?.last().is_some_and(|b| *b != b'\n') {
            file.write_all(b"\n").map_err(io(&path))?;
            file.flush().map_err(io(&path))?;
        }
        Ok(Self { path, inner: Mutex::new(FileInner { records, file, lines }) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rewrites the file with one line per record, leaving out conversations whose latest
    /// event is before `forget_before` (when given).
    pub fn compact(&self, forget_before: Option<f64>) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(before) = forget_before {
            inner.records.conversations.retain(|_, c| c.last_event_at() >= before);
        }
        self.rewrite(&mut inner)
    }

    fn rewrite(&self, inner: &mut FileInner) -> Result<(), StoreError> {
        let tmp = self.path.with_extension("jsonl.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut out = BufWriter::new(options.open(&tmp).map_err(io(&tmp))?);
        let mut lines = 0;
        for c in inner.records.conversations.values() {
            serde_json::to_writer(&mut out, &LineRef::Conversation(c))?;
            out.write_all(b"\n").map_err(io(&tmp))?;
            lines += 1;
        }
        if let Some(offers) = &inner.records.offers {
            serde_json::to_writer(&mut out, &LineRef::Offers(offers))?;
            out.write_all(b"\n").map_err(io(&tmp))?;
            lines += 1;
        }
        let file = out.into_inner().map_err(|e| io(&tmp)(e.into_error()))?;
        file.sync_all().map_err(io(&tmp))?;
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(io(&self.path))?;
        inner.file = BufWriter::new(open_options().open(&self.path).map_err(io(&self.path))?);
        inner.lines = lines;
        Ok(())
    }

    fn append(&self, line: &LineRef<'_>, apply: impl FnOnce(&mut Records)) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut bytes = serde_json::to_vec(line)?;
        bytes.push(b'\n');
        inner.file.write_all(&bytes).map_err(io(&self.path))?;
        inner.file.flush().map_err(io(&self.path))?;
        apply(&mut inner.records);
        inner.lines += 1;
        let live = inner.records.conversations.len() + 1;
        if inner.lines >= COMPACT_MIN_LINES && inner.lines > live * COMPACT_RATIO {
            self.rewrite(&mut inner)?;
        }
        Ok(())
    }
}

/// [`Line`] without copies.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum LineRef<'a> {
    Conversation(&'a ConversationOutcome),
    Offers(&'a OfferStats),
}

impl OutcomeStore for FileStore {
    fn get(&self, conversation_id: &str) -> Result<Option<ConversationOutcome>, StoreError> {
        let inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(inner.records.conversations.get(conversation_id).cloned())
    }

    fn put(&self, outcome: &ConversationOutcome) -> Result<(), StoreError> {
        self.append(&LineRef::Conversation(outcome), |r| {
            r.conversations.insert(outcome.conversation_id.clone(), outcome.clone());
        })
    }

    fn list_since(&self, since: f64) -> Result<Vec<ConversationOutcome>, StoreError> {
        let inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(inner.records.list_since(since))
    }

    fn get_offers(&self) -> Result<Option<OfferStats>, StoreError> {
        let inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(inner.records.offers.clone())
    }

    fn put_offers(&self, offers: &OfferStats) -> Result<(), StoreError> {
        self.append(&LineRef::Offers(offers), |r| r.offers = Some(offers.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Trouble;
    use crate::settings::Settings;
    use proactive::Trigger;

    fn record(id: &str, answered_at: f64) -> ConversationOutcome {
        let mut c = ConversationOutcome::new(id, &Settings::default());
        c.visitor_wrote(answered_at - 1.0, "how do I export?");
        c.answered(answered_at, "click **Export CSV**", &[], Trouble::default());
        c
    }

    fn exercise(store: &dyn OutcomeStore) {
        assert_eq!(store.get("c1").unwrap(), None);
        let mut c1 = record("c1", 100.0);
        store.put(&c1).unwrap();
        store.put(&record("c2", 200.0)).unwrap();
        c1.model_confirmed(101.0);
        store.put(&c1).unwrap();
        assert_eq!(store.get("c1").unwrap(), Some(c1.clone()));
        let mut since: Vec<String> = store.list_since(150.0).unwrap().into_iter().map(|c| c.conversation_id).collect();
        since.sort();
        assert_eq!(since, ["c2"]);
        assert_eq!(store.list_since(0.0).unwrap().len(), 2);
        let mut offers = OfferStats::default();
        offers.offered(Trigger::Dwell, "c1", 90.0, 90.0);
        store.put_offers(&offers).unwrap();
        assert_eq!(store.get_offers().unwrap(), Some(offers));
    }

    #[test]
    fn memory_store() {
        exercise(&MemoryStore::new());
    }

    #[test]
    fn the_file_store_survives_reopening_and_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        exercise(&FileStore::open(&path).unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        // A crash cut the last line short.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"conversation\":{\"conversation_id\":\"c3\"").unwrap();
        drop(file);
        let store = FileStore::open(&path).unwrap();
        let c1 = store.get("c1").unwrap().expect("kept");
        assert_eq!(c1.outcome, Some(crate::outcome::Outcome::Confirmed));
        assert_eq!(store.get("c3").unwrap(), None);
        assert!(store.get_offers().unwrap().is_some());
        store.put(&record("c4", 300.0)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 6, "appended on a line of its own");
        store.compact(Some(150.0)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3, "c2, c4 and the offers");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        drop(store);
        let store = FileStore::open(&path).unwrap();
        assert_eq!(store.get("c1").unwrap(), None, "forgotten by the compaction");
        assert_eq!(store.get("c4").unwrap(), Some(record("c4", 300.0)));
        assert_eq!(store.list_since(0.0).unwrap().len(), 2);
    }

    #[test]
    fn many_puts_compact_on_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let store = FileStore::open(&path).unwrap();
        let c = record("c", 10.0);
        for _ in 0..COMPACT_MIN_LINES + 10 {
            store.put(&c).unwrap();
        }
        assert!(std::fs::read_to_string(&path).unwrap().lines().count() < 20);
        drop(store);
        assert_eq!(FileStore::open(&path).unwrap().get("c").unwrap(), Some(c));
    }
}
