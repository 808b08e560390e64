//! The shared activity file (`event_data.txt`), byte for byte as the reference writes it.

use crate::payload::Action;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Appends the three-line block of each action, `[i]` counting from 0 within the batch.
pub fn format_action_block(actions: &[Action<'_>], out: &mut Vec<u8>) {
    for (i, action) in actions.iter().enumerate() {
        // Writes into a Vec cannot fail.
        let _ = write!(
            out,
            "[{i}] Action: {}\n     Details: {}\n     Page:    {}\n",
            action.title, action.description, action.canonical_url
        );
    }
}

/// `\n=== SUMMARY ===\n{summary}\n`, the summary as the LLM returned it.
pub fn format_summary_block(summary: &str) -> String {
    format!("\n=== SUMMARY ===\n{summary}\n")
}

/// The file on disk. Each call is one `write(2)` with `O_APPEND`, so a reader never sees half a
/// batch and concurrent appends never interleave.
#[derive(Debug, Clone)]
pub struct ActivityFile {
    path: PathBuf,
    reset_after: Duration,
}

impl ActivityFile {
    pub fn new(path: impl Into<PathBuf>, reset_after: Duration) -> Self {
        Self { path: path.into(), reset_after }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a batch's action block; first truncates a file idle for longer than the reset
    /// window (the reference's "new visitor session" heuristic). Creates the file when absent,
    /// even for an empty batch.
    pub fn append_batch(&self, block: &[u8]) -> io::Result<()> {
        let mut file = self.open_append()?;
        if self.is_stale(&file)? {
            file.set_len(0)?;
        }
        if !block.is_empty() {
            file.write_all(block)?;
        }
        Ok(())
    }

    /// Appends a summary block; never resets (as the reference).
    pub fn append_summary(&self, summary: &str) -> io::Result<()> {
        self.open_append()?.write_all(format_summary_block(summary).as_bytes())
    }

    fn open_append(&self) -> io::Result<File> {
        OpenOptions::new().create(true).append(true).open(&self.path)
    }

    fn is_stale(&self, file: &File) -> io::Result<bool> {
        let meta = file.metadata()?;
        if meta.len() == 0 {
            return Ok(false);
        }
        let age = SystemTime::now().duration_since(meta.modified()?).unwrap_or_default();
        Ok(age > self.reset_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{StreamPayload, parse_payload};

    fn fixture_actions() -> Vec<Action<'static>> {
        let sse = include_str!("../tests/fixtures/autoplay/actions-full.sse");
        let data = sse.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        match parse_payload(data).unwrap().payload {
            StreamPayload::Actions(b) => b.actions.into_iter().map(Action::into_owned).collect(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn action_block_matches_the_reference_bytes() {
        let mut out = Vec::new();
        format_action_block(&fixture_actions(), &mut out);
        assert_eq!(out, include_bytes!("../tests/fixtures/autoplay/expected-event_data.txt"));
    }

    #[test]
    fn missing_fields_leave_a_trailing_space() {
        let mut out = Vec::new();
        format_action_block(&[Action::default()], &mut out);
        assert_eq!(out, b"[0] Action: \n     Details: \n     Page:    \n");
    }

    #[test]
    fn summary_block_is_byte_exact() {
        assert_eq!(format_summary_block("two\nlines"), "\n=== SUMMARY ===\ntwo\nlines\n");
    }

    #[test]
    fn appends_and_resets_after_the_idle_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("event_data.txt");
        let file = ActivityFile::new(&path, Duration::from_secs(120));
        file.append_batch(b"").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        file.append_batch(b"one\n").unwrap();
        file.append_summary("s").unwrap();
        file.append_batch(b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\n\n=== SUMMARY ===\ns\ntwo\n");

        let old = SystemTime::now() - Duration::from_secs(121);
        File::options().write(true).open(&path).unwrap().set_modified(old).unwrap();
        file.append_summary("kept").unwrap(); // summaries never reset
        assert!(std::fs::read_to_string(&path).unwrap().starts_with("one\n"));
        File::options().write(true).open(&path).unwrap().set_modified(old).unwrap();
        file.append_batch(b"fresh\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "fresh\n");
    }
}
