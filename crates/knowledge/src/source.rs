//! The folder source: Markdown, HTML and text files, sub-folders included.

use std::path::{Path, PathBuf};

use crate::doc::{Document, Format};

/// Files larger than this are skipped (and reported).
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Id prefix of folder documents.
pub const FILE_PREFIX: &str = "file:";

/// A file that could not be read: its id and the error.
pub type Failed = (String, String);

/// Reads every supported file under `dir` (hidden entries and symlinks skipped). Returns the
/// documents and the files that could not be read (id, error); fails only when `dir` itself
/// cannot be listed.
pub fn scan_folder(dir: &Path) -> std::io::Result<(Vec<Document>, Vec<Failed>)> {
    let mut files = Vec::new();
    walk(dir, &mut files, true)?;
    files.sort();
    let mut docs = Vec::with_capacity(files.len());
    let mut failed = Vec::new();
    for path in files {
        let rel = path.strip_prefix(dir).unwrap_or(&path);
        let rel_str = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
        let id = format!("{FILE_PREFIX}{rel_str}");
        let Some(format) = path.extension().and_then(|e| e.to_str()).and_then(Format::from_extension) else { continue };
        match read_text(&path) {
            Ok(raw) => {
                let stem = path.file_stem().map(|s| s.to_string_lossy().replace(['-', '_'], " ")).unwrap_or_default();
                docs.push(Document::parse(id, &raw, format, stem.trim(), None));
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "knowledge file skipped");
                failed.push((id, e));
            }
        }
    }
    Ok((docs, failed))
}

fn read_text(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| format!("not UTF-8 ({e})"))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, top: bool) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if top => return Err(e),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "knowledge sub-folder skipped");
            return Ok(());
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(ft) = entry.file_type() else { continue };
        let path = entry.path();
        if ft.is_dir() {
            walk(&path, out, false)?;
        } else if ft.is_file() && path.extension().and_then(|e| e.to_str()).and_then(Format::from_extension).is_some() {
            out.push(path);
        }
    }
    Ok(())
}
