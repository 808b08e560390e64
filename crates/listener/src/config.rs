//! The listener's settings: flags, environment and `.env`, each with its default.

use agent_core::SecretString;
use agent_core::config::{ConfigError, OpenAiArgs, StoreArgs, http_url, non_empty, socket_addr};
use agent_core::context::ContextStore;
use agent_core::llm::LlmClient;
use agent_core::retry::RetryPolicy;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Reads the Autoplay real-time event stream into the activity file, with a short LLM summary
/// every SUMMARY_THRESHOLD actions of a session.
#[derive(Parser)]
#[command(name = "listener", version, about, long_about = None)]
pub struct Cli {
    /// Full stream URL, `.../stream/{product_id}` (required).
    #[arg(long, env = "STREAM_URL", hide_env_values = true, value_name = "URL")]
    pub stream_url: Option<String>,
    /// Bearer token for the stream; empty means no Authorization header.
    #[arg(long, env = "UNKEY_API_KEY", hide_env_values = true, value_name = "TOKEN", default_value = "")]
    pub unkey_api_key: String,
    /// Fallback for UNKEY_API_KEY (the reference SDK's variable).
    #[arg(long, env = "AUTOPLAY_APP_UNKEY_TOKEN", hide_env_values = true, value_name = "TOKEN", default_value = "")]
    pub autoplay_app_unkey_token: String,
    #[command(flatten)]
    pub openai: OpenAiArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    /// The shared activity file.
    #[arg(long, env = "EVENT_DATA_PATH", default_value = "event_data.txt", value_name = "PATH")]
    pub event_data_path: PathBuf,
    /// Actions per session between summaries; 0 turns summaries off.
    #[arg(long, env = "SUMMARY_THRESHOLD", default_value_t = 5, value_name = "N")]
    pub summary_threshold: usize,
    /// Idle seconds after which the activity file starts afresh.
    #[arg(long, env = "SESSION_RESET_SECS", default_value_t = 120, value_name = "SECS")]
    pub session_reset_secs: u64,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9101); unset: no metrics.
    #[arg(long, env = "METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// Check the configuration and reach each outside service once, then exit.
    #[arg(long)]
    pub check: bool,
    /// Reconnect when nothing, not even a heartbeat, arrived for this long.
    #[arg(long, env = "STREAM_IDLE_TIMEOUT_SECS", default_value_t = 90, value_name = "SECS")]
    pub stream_idle_timeout_secs: u64,
}

/// Validated settings.
pub struct Settings {
    pub stream_url: reqwest::Url,
    pub token: Option<SecretString>,
    /// `None` when summaries are off.
    pub summaries: Option<SummarySettings>,
    pub event_data_path: PathBuf,
    pub session_reset: Duration,
    pub stream_idle_timeout: Duration,
    pub store: Arc<dyn ContextStore>,
    pub redis: Option<agent_core::redis_conn::RedisConn>,
    pub metrics_addr: Option<std::net::SocketAddr>,
}

pub struct SummarySettings {
    pub llm: LlmClient,
    pub threshold: usize,
}

impl Cli {
    pub fn into_settings(self) -> Result<Settings, ConfigError> {
        let stream_url = non_empty(self.stream_url.as_deref())
            .ok_or(ConfigError::Missing { var: "STREAM_URL", flag: "--stream-url" })?;
        let stream_url = http_url("STREAM_URL", &stream_url)?;
        let token = non_empty(Some(&self.unkey_api_key))
            .or_else(|| non_empty(Some(&self.autoplay_app_unkey_token)))
            .map(SecretString::from);
        let summaries = match self.summary_threshold {
            0 => None,
            threshold => Some(SummarySettings { llm: self.openai.client(RetryPolicy::default())?, threshold }),
        };
        if self.stream_idle_timeout_secs == 0 {
            return Err(ConfigError::Invalid { var: "STREAM_IDLE_TIMEOUT_SECS", reason: "must be at least 1".into() });
        }
        let redis = self.store.redis()?;
        let store = self.store.open(redis.as_ref())?;
        let metrics_addr = socket_addr("METRICS_ADDR", self.metrics_addr.as_deref(), "127.0.0.1:9101")?;
        Ok(Settings {
            store,
            redis,
            metrics_addr,
            stream_url,
            token,
            summaries,
            event_data_path: self.event_data_path,
            session_reset: Duration::from_secs(self.session_reset_secs),
            stream_idle_timeout: Duration::from_secs(self.stream_idle_timeout_secs),
        })
    }
}
