//! Domain of the Autoplay x Crisp support agent, shared by the `listener` and `webhook`
//! binaries.
//!
//! Data flows one way:
//! - listener: stream bytes ([`sse`]) -> the wire's payloads ([`payload`]) -> the product's
//!   action records ([`action`]) -> the activity file ([`activity_file`]), the per-visitor
//!   store ([`context::StoreWriter`]), summaries ([`summary`]) and proactive trigger firings
//!   ([`proactive::triggers`], recorded through the store);
//! - webhook: a Crisp hook ([`crisp::hook`]) -> the inbox ([`inbox`], [`coordination`]) ->
//!   that visitor's context ([`context::StoreReader`]) -> prompt ([`prompt`]) -> answer ([`llm`]) or hand-off
//!   ([`handoff`]) -> Crisp ([`crisp::api`]); firings ([`proactive::feed`]) -> the gate
//!   ([`proactive::gate`], [`proactive::book`]) -> an offer ([`proactive::offer`]) -> Crisp.

pub mod action;
pub mod activity_file;
pub mod auth;
pub mod checks;
pub mod config;
pub mod context;
pub mod coordination;
pub mod crisp;
pub mod handoff;
pub mod http_body;
pub mod inbox;
pub mod llm;
pub mod payload;
pub mod proactive;
pub mod process;
pub mod prompt;
pub mod ratelimit;
pub mod redis_conn;
pub mod retry;
pub mod signature_binding;
pub mod sse;
pub mod summary;
pub mod telemetry;

pub use secrecy::{ExposeSecret, SecretString};
