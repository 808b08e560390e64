//! Crisp: incoming web hooks ([`hook`]) and the REST API v1 ([`api`]).

pub mod api;
pub mod hook;
pub mod ids;

pub use ids::{ConversationId, Fingerprint, WebsiteId};

pub use api::{
    ConversationMessage, CrispClient, CrispError, CrispSettings, Post, PostKind, SessionData, message_fingerprint,
};
pub use hook::{HookError, HookEvent, OperatorMessage, VisitorMessage, classify, id_for_log, is_plain_id};

/// `--check`: the token can read the website.
pub async fn probe(client: &CrispClient) -> plumbing::checks::Check {
    plumbing::checks::run("Crisp", async {
        client
            .check_website()
            .await
            .map(|()| format!("token can read website {}", client.website_id()))
            .map_err(|e| format!("{e}; check CRISP_TOKEN_IDENTIFIER, CRISP_TOKEN_KEY, CRISP_TIER and WEBSITE_ID"))
    })
    .await
}

/// Who may speak in a conversation right now: what the replies, the hand-off and the
/// proactive gate all ask before the bot posts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Floor {
    /// A human operator has the conversation (took it over, or it is handed over).
    pub human: bool,
    /// The bot has visitor messages to answer in it.
    pub bot_busy: bool,
    /// The last message from either side, Unix seconds.
    pub last_message_at: Option<f64>,
}
