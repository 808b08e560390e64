//! Crisp: incoming web hooks ([`hook`]) and the REST API v1 ([`api`]).

pub mod api;
pub mod hook;

pub use api::{
    ConversationMessage, CrispClient, CrispError, CrispSettings, Post, PostKind, SessionData, message_fingerprint,
};
pub use hook::{HookError, HookEvent, OperatorMessage, VisitorMessage, classify, id_for_log, is_plain_id};
