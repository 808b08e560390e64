//! Reply traces (opt-in, `TRACE_DIR`): for each reply, the exact context and prompt sent and the
//! answer, one JSON file each, so any answer can be replayed and explained later. The oldest
//! files go once there are more than `TRACE_MAX_FILES`.

use serde::Serialize;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Serialize)]
pub struct ReplyTrace<'a> {
    pub reply_id: &'a str,
    pub crisp_session: &'a str,
    /// Unix time, seconds.
    pub at: u64,
    pub linked_by: String,
    pub autoplay_session: Option<&'a str>,
    pub activity: &'a str,
    pub model: &'a str,
    pub request: serde_json::Value,
    pub answer: Option<&'a str>,
    pub outcome: &'a str,
    /// Why the bot handed over (`asked`, `unable`) or sent operators context (`failed`).
    pub handoff: Option<&'a str>,
    /// The private note operators got.
    pub note: Option<&'a str>,
}

/// A proactive offer's trace: the firing, the decision and what was sent.
#[derive(Serialize)]
pub struct OfferTrace<'a> {
    pub firing_id: &'a str,
    pub trigger: &'a str,
    /// Unix time, seconds.
    pub at: u64,
    pub autoplay_session: &'a str,
    pub crisp_session: Option<&'a str>,
    pub detail: &'a str,
    pub page: &'a str,
    pub outcome: &'a str,
    pub message: Option<&'a str>,
    /// The LLM failed and the trigger's template was used.
    pub from_template: bool,
    /// The conversation was started (`initiate`) before the message.
    pub initiated: bool,
}

#[derive(Clone)]
pub struct TraceWriter {
    dir: PathBuf,
    max_files: usize,
    written: Arc<Mutex<VecDeque<PathBuf>>>,
}

impl TraceWriter {
    /// Creates the directory; remembers the traces already there, oldest first.
    pub fn open(dir: PathBuf, max_files: usize) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let mut existing: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        existing.sort();
        Ok(Self { dir, max_files: max_files.max(1), written: Arc::new(Mutex::new(existing.into())) })
    }

    /// Writes a reply's trace in the background; failures are logged, never surface to the
    /// visitor.
    pub fn write(&self, trace: &ReplyTrace<'_>) {
        self.write_file(trace.at, trace.reply_id, trace);
    }

    /// Writes an offer's trace (`{at}-offer-{hash of the firing id}.json`).
    pub fn write_offer(&self, trace: &OfferTrace<'_>) {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(trace.firing_id.as_bytes());
        let id: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        self.write_file(trace.at, &format!("offer-{id}"), trace);
    }

    fn write_file(&self, at: u64, id: &str, trace: &impl Serialize) {
        let bytes = match serde_json::to_vec_pretty(trace) {
            Ok(bytes) => bytes,
            Err(e) => return tracing::warn!(error = %e, "cannot encode trace"),
        };
        // Names sort by time, so pruning removes the oldest.
        let path = self.dir.join(format!("{at:010}-{id}.json"));
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = std::fs::write(&path, bytes) {
                return tracing::warn!(error = %e, path = %path.display(), "cannot write reply trace");
            }
            let mut written = this.written.lock().unwrap_or_else(PoisonError::into_inner);
            written.push_back(path);
            while written.len() > this.max_files {
                if let Some(old) = written.pop_front() {
                    let _ = std::fs::remove_file(old);
                }
            }
        });
    }
}
