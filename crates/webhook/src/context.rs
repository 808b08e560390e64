//! Where a reply's "Current User Activity" comes from.

use std::path::PathBuf;

pub enum ContextSource {
    /// The reference behaviour: the whole shared activity file, for every visitor.
    SharedFile(PathBuf),
}

impl ContextSource {
    /// The activity text for a Crisp conversation; empty when there is none.
    pub async fn activity_for(&self, _crisp_session: &str) -> String {
        match self {
            ContextSource::SharedFile(path) => match tokio::fs::read(path).await {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read the activity file; answering without it");
                    String::new()
                }
            },
        }
    }
}
