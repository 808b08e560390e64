//! The webhook's side of the firings the listener records: the tail of
//! `DATA_DIR/proactive.firings`, or the Redis stream read through a consumer group (each entry
//! goes to one replica; one that dies before acknowledging leaves it to another).

use super::book::{FeedPosition, OfferBook};
use super::{FIRINGS_FILE, Firing, REDIS_FIRINGS_STREAM};
use plumbing::redis_conn::RedisConn;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Longest firing line read; longer ones are skipped.
const MAX_LINE: usize = 64 * 1024;
/// Firings read at once.
const BATCH: usize = 64;
/// The Redis consumer group of webhook replicas.
const GROUP: &str = "webhook";
/// An entry a replica read and did not acknowledge for this long goes to another replica.
const CLAIM_IDLE: Duration = Duration::from_secs(60);

/// Firings as they are recorded, in order.
pub enum FiringFeed {
    File(FileFeed),
    Redis(RedisFeed),
}

/// A batch read from the feed; hand it back to [`FiringFeed::done`] once handled.
pub struct FeedBatch {
    pub firings: Vec<Firing>,
    /// Lines or entries that were not firings (logged, skipped).
    pub skipped: usize,
    ack: Ack,
}

enum Ack {
    File(FeedPosition),
    Redis(Vec<String>),
}

impl FiringFeed {
    /// The next firings; empty when nothing new arrived (the caller waits a little).
    pub async fn read(&mut self) -> FeedBatch {
        match self {
            FiringFeed::File(feed) => feed.read().await,
            FiringFeed::Redis(feed) => feed.read().await,
        }
    }

    /// Marks a batch handled: it is not read again, after a restart either.
    pub async fn done(&mut self, read: FeedBatch) {
        match (self, read.ack) {
            (FiringFeed::File(feed), Ack::File(position)) => feed.book.set_feed_position(position),
            (FiringFeed::Redis(feed), Ack::Redis(ids)) => feed.ack(&ids).await,
            _ => {}
        }
    }
}

/// Tails the firings file. The listener renames a full file to `proactive.firings.1`: the
/// open file is read to its end first, then the new one from its start.
pub struct FileFeed {
    path: PathBuf,
    book: Arc<OfferBook>,
    open: Option<OpenFile>,
}

/// The firings file being read.
struct OpenFile {
    file: std::fs::File,
    /// After the last complete line read.
    position: FeedPosition,
    /// The start of a line not yet complete.
    partial: Vec<u8>,
}

impl FileFeed {
    pub fn new(data_dir: &std::path::Path, book: Arc<OfferBook>) -> Self {
        Self { path: data_dir.join(FIRINGS_FILE), book, open: None }
    }

    async fn read(&mut self) -> FeedBatch {
        let path = self.path.clone();
        let saved = self.book.feed_position();
        let open = self.open.take();
        match tokio::task::spawn_blocking(move || read_file(&path, open, saved)).await {
            Ok((open, firings, skipped)) => {
                let position = open.as_ref().map_or(saved, |o| o.position);
                self.open = open;
                FeedBatch { firings, skipped, ack: Ack::File(position) }
            }
            Err(_) => FeedBatch { firings: Vec::new(), skipped: 0, ack: Ack::File(saved) },
        }
    }
}

/// Reads complete lines from where the feed stopped, up to [`BATCH`] firings; follows the
/// file to its replacement once it is read to the end.
fn read_file(
    path: &std::path::Path,
    open: Option<OpenFile>,
    saved: FeedPosition,
) -> (Option<OpenFile>, Vec<Firing>, usize) {
    let mut firings = Vec::new();
    let mut skipped = 0;
    let Some(mut open) = open.or_else(|| open_at(path, saved)) else { return (None, firings, skipped) };
    let mut chunk = vec![0u8; 64 * 1024];
    while firings.len() < BATCH {
        let n = match open.file.read(&mut chunk) {
            Ok(n) => n,
            Err(_) => break,
        };
        if n == 0 {
            // At the end: if the path is now another file (rotated), go on there.
            match file_id_of_path(path) {
                Some(id) if id != open.position.file_id => match std::fs::File::open(path) {
                    Ok(file) => {
                        open =
                            OpenFile { file, position: FeedPosition { file_id: id, offset: 0 }, partial: Vec::new() };
                        continue;
                    }
                    Err(_) => break,
                },
                _ => break,
            }
        }
        open.partial.extend_from_slice(&chunk[..n]);
        let complete = memchr::memrchr(b'\n', &open.partial).map_or(0, |i| i + 1);
        for line in open.partial[..complete].split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<Firing>(line) {
                Ok(firing) => firings.push(firing),
                Err(_) => skipped += 1,
            }
        }
        open.partial.drain(..complete);
        open.position.offset += complete as u64;
        if open.partial.len() > MAX_LINE {
            // Not a firing line: skip it whole.
            open.position.offset += open.partial.len() as u64;
            open.partial.clear();
            skipped += 1;
        }
    }
    (Some(open), firings, skipped)
}

/// Opens the firings file at the saved position when it is the same file, else at its start.
fn open_at(path: &std::path::Path, saved: FeedPosition) -> Option<OpenFile> {
    let mut file = std::fs::File::open(path).ok()?;
    let id = file_id(&file)?;
    let len = file.metadata().ok()?.len();
    let offset = if id == saved.file_id && saved.offset <= len { saved.offset } else { 0 };
    file.seek(SeekFrom::Start(offset)).ok()?;
    Some(OpenFile { file, position: FeedPosition { file_id: id, offset }, partial: Vec::new() })
}

fn file_id(file: &std::fs::File) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    file.metadata().ok().map(|m| m.ino())
}

fn file_id_of_path(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Reads the Redis stream as this replica, in the webhook replicas' consumer group. Polls
/// (no `BLOCK`): the connection is shared with every other Redis call of the process.
pub struct RedisFeed {
    conn: RedisConn,
    consumer: String,
    /// This replica's own unacknowledged entries are read first (it restarted mid-batch).
    own_pending_first: bool,
    group_ready: bool,
    last_claim: Option<tokio::time::Instant>,
}

impl RedisFeed {
    pub fn new(conn: RedisConn, consumer: String) -> Self {
        Self { conn, consumer, own_pending_first: true, group_ready: false, last_claim: None }
    }

    fn stream(&self) -> String {
        self.conn.key(&[REDIS_FIRINGS_STREAM])
    }

    async fn read(&mut self) -> FeedBatch {
        let mut ids = Vec::new();
        let mut firings = Vec::new();
        let mut skipped = 0;
        if let Some(entries) = self.entries().await {
            for (id, fields) in entries {
                match fields.get("f").and_then(|f| serde_json::from_str::<Firing>(f).ok()) {
                    Some(firing) => firings.push(firing),
                    None => skipped += 1,
                }
                ids.push(id);
            }
        }
        FeedBatch { firings, skipped, ack: Ack::Redis(ids) }
    }

    async fn entries(&mut self) -> Option<Vec<(String, std::collections::HashMap<String, String>)>> {
        let mut con = self.conn.connection();
        let stream = self.stream();
        if !self.group_ready {
            let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&stream)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut con)
                .await;
            match created {
                Ok(()) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => {
                    let _ = self.conn.observe::<()>(Err(e));
                    return None;
                }
            }
            self.group_ready = true;
        }
        let claim_due = self.last_claim.is_none_or(|at| at.elapsed() >= CLAIM_IDLE / 2);
        if claim_due {
            self.last_claim = Some(tokio::time::Instant::now());
            let claimed: redis::RedisResult<redis::Value> = redis::cmd("XAUTOCLAIM")
                .arg(&stream)
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(CLAIM_IDLE.as_millis() as u64)
                .arg("0-0")
                .arg("COUNT")
                .arg(BATCH)
                .query_async(&mut con)
                .await;
            if let Ok(redis::Value::Array(parts)) = claimed
                && let Some(entries) = parts.get(1)
            {
                let entries = parse_entries(entries);
                if !entries.is_empty() {
                    return Some(entries);
                }
            }
        }
        let from = if self.own_pending_first { "0" } else { ">" };
        let result: redis::RedisResult<redis::Value> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(BATCH)
            .arg("STREAMS")
            .arg(&stream)
            .arg(from)
            .query_async(&mut con)
            .await;
        let value = self.conn.observe(result).ok()?;
        // `XREADGROUP` answers [[stream, [[id, [field, value, …]], …]]] (or nil).
        let entries = match &value {
            redis::Value::Array(streams) => streams
                .first()
                .and_then(|s| match s {
                    redis::Value::Array(pair) => pair.get(1).map(parse_entries),
                    _ => None,
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        if self.own_pending_first && entries.is_empty() {
            self.own_pending_first = false;
        }
        Some(entries)
    }

    async fn ack(&self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        let mut con = self.conn.connection();
        let result: redis::RedisResult<i64> =
            redis::cmd("XACK").arg(self.stream()).arg(GROUP).arg(ids).query_async(&mut con).await;
        if self.conn.observe(result).is_err() {
            tracing::warn!("cannot acknowledge firings; another replica may read them again (each is offered once)");
        }
    }
}

/// `[[id, [field, value, …]], …]` into ids and fields; malformed entries keep their id with no
/// fields (acknowledged and counted as skipped).
fn parse_entries(value: &redis::Value) -> Vec<(String, std::collections::HashMap<String, String>)> {
    let redis::Value::Array(entries) = value else { return Vec::new() };
    entries
        .iter()
        .filter_map(|entry| {
            let redis::Value::Array(pair) = entry else { return None };
            let id: String = redis::from_redis_value_ref(pair.first()?).ok()?;
            let fields = pair
                .get(1)
                .and_then(|f| redis::from_redis_value_ref::<std::collections::HashMap<String, String>>(f).ok())
                .unwrap_or_default();
            Some((id, fields))
        })
        .collect()
}

/// How often an idle feed looks again.
pub const POLL_EVERY: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Trigger;
    use crate::book::LocalBook;
    use std::io::Write;

    fn line(n: u32) -> String {
        let firing = Firing {
            id: format!("ps:ping_pong:{n}"),
            trigger: Trigger::PingPong,
            session_id: "ps".into(),
            user_id: None,
            conversation_id: None,
            at: f64::from(n),
            page: "/a".into(),
            detail: "d".into(),
            recorded_at: 1.0,
        };
        format!("{}\n", serde_json::to_string(&firing).unwrap())
    }

    fn append(path: &std::path::Path, text: &str) {
        std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
    }

    async fn ids(feed: &mut FiringFeed) -> Vec<String> {
        let read = feed.read().await;
        let ids = read.firings.iter().map(|f| f.id.clone()).collect();
        feed.done(read).await;
        ids
    }

    #[tokio::test]
    async fn the_file_is_tailed_line_by_line_across_rotation_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FIRINGS_FILE);
        let book = Arc::new(OfferBook::new(LocalBook::open(Some(dir.path())), None));
        let mut feed = FiringFeed::File(FileFeed::new(dir.path(), Arc::clone(&book)));
        assert!(ids(&mut feed).await.is_empty(), "no file yet");
        append(&path, &line(1));
        let second = line(2);
        append(&path, &second[..10]);
        assert_eq!(ids(&mut feed).await, ["ps:ping_pong:1"], "an incomplete line waits");
        append(&path, &second[10..]);
        append(&path, "not a firing\n");
        assert_eq!(ids(&mut feed).await, ["ps:ping_pong:2"]);
        // The listener rotates: the rest of the old file, then the new one.
        append(&path, &line(3));
        std::fs::rename(&path, dir.path().join("proactive.firings.1")).unwrap();
        append(&path, &line(4));
        assert_eq!(ids(&mut feed).await, ["ps:ping_pong:3", "ps:ping_pong:4"]);
        // A restart goes on where the last handled batch ended.
        book.save_now().await;
        append(&path, &line(5));
        let book = Arc::new(OfferBook::new(LocalBook::open(Some(dir.path())), None));
        let mut feed = FiringFeed::File(FileFeed::new(dir.path(), book));
        assert_eq!(ids(&mut feed).await, ["ps:ping_pong:5"]);
    }
}
