//! The inbox journal: every visitor message the webhook accepted, on disk before its `200`, until
//! it is answered. Crisp redelivers a hook only when it does not get a `200`, so once it has one
//! the message must survive a crash, a `kill -9` or a restart.
//!
//! One append-only file, `DATA_DIR/inbox.journal`, of lines `A {entry as JSON}` (accepted) and
//! `D {id}` (done). A single writer thread appends and flushes (`fdatasync`): hooks arriving
//! together share one flush, so the disk's flush latency bounds each hook, not their number.
//! Done lines are not waited for: a message answered but not yet marked done is checked against
//! the conversation before it is answered again. When the file has grown well past what is still
//! pending it is rewritten with the pending entries only: a new file, flushed, renamed over the
//! old one, the directory flushed. The new file's handle is the one opened to write it, so
//! there is no reopen that could fail after the rename; on any error before the rename the old
//! file stays the one written to, and an unflushed directory is flushed again before the next
//! acknowledgement. Either way the failure is logged and counted, and nothing acked is lost. On
//! open, a torn last line (a crash in the middle of a write) is skipped with a warning.

use crisp::VisitorMessage;
use plumbing::telemetry::{Counter, INBOX_COMPACTIONS_FAILED, Metrics};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A visitor message the webhook took responsibility for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InboxEntry {
    /// This product's id of the entry (Crisp's fingerprint may be absent).
    pub id: u64,
    /// When the hook was accepted, epoch milliseconds.
    pub accepted_at_ms: u64,
    pub message: VisitorMessage,
}

impl InboxEntry {
    pub fn new(message: VisitorMessage) -> Self {
        Self { id: rand::random(), accepted_at_ms: now_ms(), message }
    }

    /// How long ago it was accepted.
    pub fn age(&self) -> std::time::Duration {
        std::time::Duration::from_millis(now_ms().saturating_sub(self.accepted_at_ms))
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("inbox journal write failed")]
    Write(#[source] io::Error),
    #[error("inbox journal writer stopped")]
    Stopped,
}

/// The file name under `DATA_DIR`.
pub const JOURNAL_FILE: &str = "inbox.journal";
/// Rewrite when the file is this much larger than its pending lines (and at least 1 MiB).
const COMPACT_FACTOR: u64 = 4;
const COMPACT_MIN_BYTES: u64 = 1 << 20;

enum Op {
    Accept(Vec<u8>, u64, tokio::sync::oneshot::Sender<Result<(), JournalError>>),
    Done(Vec<u64>),
    /// Flushes what is written, then answers (shutdown).
    Sync(tokio::sync::oneshot::Sender<()>),
}

/// The journal's handle; cheap to clone. The writer thread stops when the last handle goes.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<Op>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens (or creates) the journal in `dir`; returns it with the entries still pending, in the
    /// order they were accepted.
    pub fn open(dir: &Path) -> io::Result<(Journal, Vec<InboxEntry>)> {
        Self::open_with_metrics(dir, &Metrics::default())
    }

    /// [`Journal::open`], counting failed compactions in `metrics` (its app's registry):
    /// `inbox_compactions_failed_total`.
    pub fn open_with_metrics(dir: &Path, metrics: &Metrics) -> io::Result<(Journal, Vec<InboxEntry>)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(JOURNAL_FILE);
        let (pending, torn) = read_pending(&path)?;
        if torn > 0 {
            tracing::warn!(lines = torn, path = %path.display(), "skipped unreadable inbox journal lines (a write cut short by a crash)");
        }
        let mut writer = Writer {
            path,
            file: None,
            pending: HashMap::new(),
            order: Vec::new(),
            written: 0,
            dir_unsynced: false,
            compactions_failed: metrics.counter(INBOX_COMPACTIONS_FAILED),
        };
        for entry in &pending {
            writer.remember(entry.id, encode_accept(entry));
        }
        // Start from a clean file: the pending entries only, the torn tail gone.
        writer.rewrite()?;
        let (tx, rx) = mpsc::channel();
        plumbing::process::spawn_thread("inbox-journal", move || writer.run(rx))?;
        Ok((Journal { tx }, pending))
    }

    /// Records `entry` durably; returns once it is on disk.
    pub async fn accept(&self, entry: &InboxEntry) -> Result<(), JournalError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.tx.send(Op::Accept(encode_accept(entry), entry.id, done)).map_err(|_| JournalError::Stopped)?;
        wait.await.map_err(|_| JournalError::Stopped)?
    }

    /// Marks entries done (answered, duplicate, silenced or expired); does not wait.
    pub fn done(&self, ids: Vec<u64>) {
        if !ids.is_empty() {
            let _ = self.tx.send(Op::Done(ids));
        }
    }

    /// Waits until everything sent so far is on disk.
    pub async fn sync(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.tx.send(Op::Sync(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

fn encode_accept(entry: &InboxEntry) -> Vec<u8> {
    let mut line = b"A ".to_vec();
    // Serializing plain strings and numbers cannot fail.
    let _ = serde_json::to_writer(&mut line, entry);
    line.push(b'\n');
    line
}

/// Reads the pending entries and counts unreadable lines.
fn read_pending(path: &Path) -> io::Result<(Vec<InboxEntry>, usize)> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let mut entries: Vec<InboxEntry> = Vec::new();
    let mut done = std::collections::HashSet::new();
    let mut torn = 0;
    let mut reader = io::BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let complete = line.last() == Some(&b'\n');
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let parsed = match (complete, text.split_first_chunk::<2>()) {
            (true, Some((b"A ", json))) => serde_json::from_slice::<InboxEntry>(json).map(|e| entries.push(e)).is_ok(),
            (true, Some((b"D ", id))) => {
                std::str::from_utf8(id).ok().and_then(|id| id.parse::<u64>().ok()).map(|id| done.insert(id)).is_some()
            }
            _ => false,
        };
        if !parsed {
            torn += 1;
        }
    }
    entries.retain(|e| !done.contains(&e.id));
    Ok((entries, torn))
}

struct Writer {
    path: PathBuf,
    file: Option<File>,
    /// Pending entries' lines, for rewriting.
    pending: HashMap<u64, Vec<u8>>,
    /// Ids in acceptance order (done ones are skipped at rewrite).
    order: Vec<u64>,
    /// Bytes in the file.
    written: u64,
    /// The directory was not flushed after a rename: flushed before the next acknowledgement.
    dir_unsynced: bool,
    /// `inbox_compactions_failed_total`.
    compactions_failed: Counter,
}

impl Writer {
    fn remember(&mut self, id: u64, line: Vec<u8>) {
        self.pending.insert(id, line);
        self.order.push(id);
    }

    fn run(mut self, rx: mpsc::Receiver<Op>) {
        let mut failures = plumbing::ratelimit::RateLimitedWarn::new(1);
        while let Ok(first) = rx.recv() {
            // Everything that arrived meanwhile goes into the same write and flush.
            let ops: Vec<Op> = std::iter::once(first).chain(rx.try_iter()).collect();
            let mut buffer = Vec::new();
            let mut accepted = Vec::new();
            let mut syncs = Vec::new();
            for op in ops {
                match op {
                    Op::Accept(line, id, reply) => {
                        buffer.extend_from_slice(&line);
                        accepted.push((id, line, reply));
                    }
                    Op::Done(ids) => {
                        for id in ids {
                            if self.pending.remove(&id).is_some() {
                                buffer.extend_from_slice(format!("D {id}\n").as_bytes());
                            }
                        }
                    }
                    Op::Sync(reply) => syncs.push(reply),
                }
            }
            let result = self.append(&buffer, !accepted.is_empty() || !syncs.is_empty());
            if let Err(e) = &result
                && let Some(suppressed) = failures.allow(std::time::Instant::now())
            {
                tracing::error!(error = %e, suppressed, path = %self.path.display(), "cannot write the inbox journal; refusing visitor messages (503) until it works");
            }
            for (id, line, reply) in accepted {
                let outcome = match &result {
                    Ok(()) => {
                        self.remember(id, line);
                        Ok(())
                    }
                    Err(e) => Err(JournalError::Write(io::Error::new(e.kind(), e.to_string()))),
                };
                let _ = reply.send(outcome);
            }
            for reply in syncs {
                let _ = reply.send(());
            }
            if self.written > COMPACT_MIN_BYTES.max(COMPACT_FACTOR * self.pending_bytes())
                && let Err(e) = self.rewrite()
            {
                self.compactions_failed.increment(1);
                tracing::warn!(error = %e, path = %self.path.display(), "cannot compact the inbox journal; the current file stays in use and keeps growing until the next try");
            }
        }
        // The last handle is gone: leave what was written on disk.
        if let Some(file) = &self.file {
            let _ = file.sync_data();
        }
    }

    fn pending_bytes(&self) -> u64 {
        self.pending.values().map(|l| l.len() as u64).sum()
    }

    /// Appends `bytes` whole or not at all; flushes when `flush`.
    fn append(&mut self, bytes: &[u8], flush: bool) -> io::Result<()> {
        if self.file.is_none() {
            self.file = Some(OpenOptions::new().create(true).append(true).open(&self.path)?);
        }
        let file = self.file.as_ref().expect("opened above");
        if !bytes.is_empty() {
            plumbing::files::append_whole(file, &self.path, self.written, bytes)?;
            self.written += bytes.len() as u64;
        }
        if flush {
            file.sync_data()?;
            if self.dir_unsynced {
                sync_dir(&self.path)?;
                self.dir_unsynced = false;
            }
        }
        Ok(())
    }

    /// Replaces the file with the pending entries only. Until the rename, any failure leaves
    /// the old file in place and in use; after it, the new file (already flushed, and already
    /// open) is the journal.
    fn rewrite(&mut self) -> io::Result<()> {
        let pending = &self.pending;
        self.order.retain(|id| pending.contains_key(id));
        let tmp = self.path.with_extension("journal.tmp");
        let (file, written) = match self.write_compacted(&tmp) {
            Ok(done) => done,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        self.file = Some(file);
        self.written = written;
        if let Err(e) = fault(&self.path, Step::SyncDir).and_then(|()| sync_dir(&self.path)) {
            // Renamed but perhaps not durably: flushed again before anything else is acked.
            self.dir_unsynced = true;
            return Err(e);
        }
        Ok(())
    }

    /// Writes the pending lines to `tmp`, flushes it and renames it over the journal; returns
    /// the open handle (appending) and its length.
    fn write_compacted(&self, tmp: &Path) -> io::Result<(File, u64)> {
        fault(&self.path, Step::Create)?;
        let _ = std::fs::remove_file(tmp);
        let mut out = OpenOptions::new().append(true).create_new(true).open(tmp)?;
        let mut written = 0u64;
        for id in &self.order {
            let line = &self.pending[id];
            out.write_all(line)?;
            written += line.len() as u64;
        }
        out.sync_all()?;
        fault(&self.path, Step::Rename)?;
        std::fs::rename(tmp, &self.path)?;
        Ok((out, written))
    }
}

fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// The steps of a compaction a test can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Create,
    Rename,
    SyncDir,
}

#[cfg(not(test))]
fn fault(_journal: &Path, _step: Step) -> io::Result<()> {
    Ok(())
}

/// Failures the tests inject into one journal's compaction (by its path), each once.
#[cfg(test)]
static FAULTS: std::sync::Mutex<Vec<(PathBuf, Step)>> = std::sync::Mutex::new(Vec::new());

#[cfg(test)]
fn fault(journal: &Path, step: Step) -> io::Result<()> {
    let mut faults = FAULTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match faults.iter().position(|(p, s)| p == journal && *s == step) {
        Some(at) => {
            faults.remove(at);
            Err(io::Error::other(format!("injected failure at {step:?}")))
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(id: &str) -> crisp::ConversationId {
        crisp::ConversationId::parse(id).unwrap()
    }

    /// Accepts `n` messages of 2000 bytes and marks each done: done lines enough to compact.
    async fn accept_and_finish(journal: &Journal, n: u64) {
        let big = "x".repeat(2000);
        for n in 0..n {
            let mut m = message("s", n);
            m.content = big.clone();
            let entry = InboxEntry::new(m);
            journal.accept(&entry).await.unwrap();
            journal.done(vec![entry.id]);
        }
    }

    fn message(session: &str, n: u64) -> VisitorMessage {
        VisitorMessage {
            website_id: crisp::WebsiteId::parse("w").unwrap(),
            session_id: conv(session),
            content: format!("message {n}"),
            fingerprint: Some(crisp::Fingerprint::from_wire(n)),
            timestamp: None,
        }
    }

    #[tokio::test]
    async fn pending_entries_survive_a_reopen_in_order_and_done_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<InboxEntry> = (0..5).map(|n| InboxEntry::new(message("s", n))).collect();
        {
            let (journal, pending) = Journal::open(dir.path()).unwrap();
            assert!(pending.is_empty());
            for entry in &entries {
                journal.accept(entry).await.unwrap();
            }
            journal.done(vec![entries[1].id, entries[3].id]);
            journal.sync().await;
        }
        let (_journal, pending) = Journal::open(dir.path()).unwrap();
        assert_eq!(pending, vec![entries[0].clone(), entries[2].clone(), entries[4].clone()]);
    }

    #[tokio::test]
    async fn a_torn_last_line_is_skipped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let kept = InboxEntry::new(message("s", 1));
        {
            let (journal, _) = Journal::open(dir.path()).unwrap();
            journal.accept(&kept).await.unwrap();
        }
        let torn = encode_accept(&InboxEntry::new(message("s", 2)));
        let path = dir.path().join(JOURNAL_FILE);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&torn[..torn.len() / 2]).unwrap();
        drop(file);
        let (journal, pending) = Journal::open(dir.path()).unwrap();
        assert_eq!(pending, vec![kept.clone()]);
        // And the file is whole again: a new entry after it reads back.
        let next = InboxEntry::new(message("s", 3));
        journal.accept(&next).await.unwrap();
        drop(journal);
        let (_, pending) = Journal::open(dir.path()).unwrap();
        assert_eq!(pending, vec![kept, next]);
    }

    #[tokio::test]
    async fn the_file_is_compacted_to_what_is_pending() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        accept_and_finish(&journal, 2000).await;
        journal.sync().await;
        let size = std::fs::metadata(dir.path().join(JOURNAL_FILE)).unwrap().len();
        assert!(size < 2 * COMPACT_MIN_BYTES, "{size} bytes for nothing pending");
        // What is left is what was pending: nothing (every entry was done).
        drop(journal);
        let (_, pending) = Journal::open(dir.path()).unwrap();
        assert!(pending.is_empty(), "{} entries pending after compaction", pending.len());
    }

    /// A compaction that fails at any step loses nothing acked, before or after it: the old
    /// file stays in use until the rename, the new one (already open) after it.
    #[tokio::test]
    async fn a_failed_compaction_loses_nothing_acked() {
        for step in [Step::Create, Step::Rename, Step::SyncDir] {
            let dir = tempfile::tempdir().unwrap();
            let (journal, _) = Journal::open(dir.path()).unwrap();
            let kept = InboxEntry::new(message("kept", 0));
            journal.accept(&kept).await.unwrap();
            FAULTS.lock().unwrap().push((dir.path().join(JOURNAL_FILE), step));
            // Enough done lines to compact: the compaction fails once, at `step`.
            accept_and_finish(&journal, 1000).await;
            journal.sync().await;
            assert!(FAULTS.lock().unwrap().is_empty(), "{step:?}: the compaction ran");
            let after: Vec<InboxEntry> = (0..5).map(|n| InboxEntry::new(message("after", n))).collect();
            for entry in &after {
                journal.accept(entry).await.unwrap();
            }
            drop(journal);
            let (_, pending) = Journal::open(dir.path()).unwrap();
            let mut expected = vec![kept.clone()];
            expected.extend(after);
            assert_eq!(pending, expected, "{step:?}: every acked entry is still there");
        }
    }

    #[tokio::test]
    async fn concurrent_accepts_share_flushes_and_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        let entries: Vec<InboxEntry> = (0..200).map(|n| InboxEntry::new(message("s", n))).collect();
        let accepts = entries.iter().map(|e| journal.accept(e));
        for result in futures_util::future::join_all(accepts).await {
            result.unwrap();
        }
        drop(journal);
        let (_, pending) = Journal::open(dir.path()).unwrap();
        assert_eq!(pending.len(), 200);
    }
}
