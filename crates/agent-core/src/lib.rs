//! Domain of the Autoplay x Crisp support agent, shared by the `listener` and `webhook`
//! binaries.
//!
//! Data flows one way: stream bytes ([`sse`]) -> typed payloads ([`payload`]) -> the activity
//! file ([`activity_file`]) and summaries ([`summary`]) -> prompt ([`prompt`]) -> answer
//! ([`llm`]) -> Crisp ([`crisp`]).

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
pub mod sse;
pub mod summary;
pub mod telemetry;

pub use secrecy::{ExposeSecret, SecretString};
