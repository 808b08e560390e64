//! The agent's plumbing, below every other crate of the workspace: what any app of it needs
//! and no domain owns. Configuration errors and value checks ([`config`]), `--check`
//! ([`checks`]), metric names and each app's metrics registry ([`telemetry`]), start-up, logs and shutdown
//! ([`process`]), retry policy ([`retry`]), capped HTTP bodies ([`http_body`]), rate-limited
//! logs ([`ratelimit`]), the one Redis connection ([`redis_conn`]), constant-time secrets
//! ([`auth`]) and whole-or-nothing appends ([`files`]).
//!
//! Must never import a crate of this workspace but `privacy` (the log redactor).

pub mod auth;
pub mod checks;
pub mod config;
pub mod files;
pub mod http_body;
pub mod ids;
pub mod process;
pub mod ratelimit;
pub mod redis_conn;
pub mod retry;
pub mod telemetry;

pub use secrecy::{ExposeSecret, SecretString};
