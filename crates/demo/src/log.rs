//! The demo's log: both apps (run in-process through `standins::apps`) log warnings and errors
//! into one file of the working directory.

use anyhow::{Context, Result, anyhow};
use std::path::Path;

/// Logs warnings and errors of both apps into `path` (`RUST_LOG` overrides the level).
pub fn log_to(path: &Path) -> Result<()> {
    use tracing_subscriber::EnvFilter;
    let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init()
        .map_err(|e| anyhow!("cannot log to {}: {e}", path.display()))
}

/// The last line logged.
pub fn last_line(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(nothing logged)").trim().to_owned()
}
