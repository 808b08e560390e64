//! Each conversation's placeholders (`[EMAIL_1]` → the value it stands for), kept so that the
//! same value gets the same placeholder across turns and replicas, and the model's answer can
//! be given back its values. In Redis with `REDIS_URL` (shared by replicas), else one file per
//! conversation under `DATA_DIR/placeholders/` (mode 0600). Card numbers and secrets are never
//! stored in clear (the map keeps a digest and, for a card, its last 4 digits).

use crisp::ConversationId;
use plumbing::redis_conn::RedisConn;
use privacy::Placeholders;
use std::path::PathBuf;
use std::time::Duration;

/// How long a conversation's placeholders are kept after its last reply.
pub const PLACEHOLDERS_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Clone)]
pub enum PlaceholderBook {
    Files { dir: PathBuf },
    Redis { conn: RedisConn },
}

impl PlaceholderBook {
    pub fn files(data_dir: &std::path::Path) -> Self {
        PlaceholderBook::Files { dir: data_dir.join("placeholders") }
    }

    /// The conversation's placeholders; empty when none were kept (or they cannot be read:
    /// a value then gets a new number, never someone else's).
    pub async fn load(&self, session: &ConversationId) -> Placeholders {
        let loaded = match self {
            PlaceholderBook::Files { dir } => {
                let path = dir.join(format!("{session}.json"));
                tokio::task::spawn_blocking(move || match std::fs::read(&path) {
                    Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| e.to_string()).map(Some),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e.to_string()),
                })
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
            }
            PlaceholderBook::Redis { conn } => {
                let mut con = conn.connection();
                let key = conn.key(&["placeholders", session.as_str()]);
                let raw: Result<Option<String>, _> = redis::cmd("GET").arg(key).query_async(&mut con).await;
                match conn.observe(raw) {
                    Ok(Some(text)) => serde_json::from_str(&text).map_err(|e| e.to_string()).map(Some),
                    Ok(None) => Ok(None),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        match loaded {
            Ok(found) => found.unwrap_or_default(),
            Err(reason) => {
                tracing::warn!(reason, "cannot read the conversation's placeholders; numbering afresh");
                Placeholders::new()
            }
        }
    }

    /// Keeps the conversation's placeholders (a failure is logged: the next turn numbers anew).
    pub async fn save(&self, session: &ConversationId, placeholders: &Placeholders) {
        if placeholders.is_empty() {
            return;
        }
        let Ok(text) = serde_json::to_string(placeholders) else { return };
        let saved = match self {
            PlaceholderBook::Files { dir } => {
                let dir = dir.clone();
                let path = dir.join(format!("{session}.json"));
                tokio::task::spawn_blocking(move || write_private(&dir, &path, text.as_bytes()))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
                    .map_err(|e| e.to_string())
            }
            PlaceholderBook::Redis { conn } => {
                let mut con = conn.connection();
                let key = conn.key(&["placeholders", session.as_str()]);
                let result: Result<(), _> = redis::cmd("SET")
                    .arg(key)
                    .arg(text)
                    .arg("PX")
                    .arg(PLACEHOLDERS_TTL.as_millis() as u64)
                    .query_async(&mut con)
                    .await;
                conn.observe(result).map_err(|e| e.to_string())
            }
        };
        if let Err(reason) = saved {
            tracing::warn!(reason, "cannot keep the conversation's placeholders");
        }
    }
}

/// Writes `bytes` to `path` whole (a temporary file renamed over it), readable by its owner only.
fn write_private(dir: &std::path::Path, path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn placeholders_survive_in_private_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let book = PlaceholderBook::files(dir.path());
        let session = ConversationId::parse("session_1").unwrap();
        assert!(book.load(&session).await.is_empty());
        let redactor = privacy::Redactor::default();
        let mut map = Placeholders::new();
        let text = redactor.redact("write to ada@example.com", &mut map);
        book.save(&session, &map).await;
        let again = book.load(&session).await;
        assert_eq!(again.restore(&text), "write to ada@example.com");
        let mode = std::fs::metadata(dir.path().join("placeholders/session_1.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
