//! The listener's settings: flags, environment and `.env`, each with its default.

use activity::config::{StoreArgs, StoreSettings};
use clap::Parser;
use llm::LlmClient;
use llm::OpenAiArgs;
use plumbing::SecretString;
use plumbing::config::{ConfigError, Problem, RedactArgs, at_least_one, http_url, non_empty, socket_addr};
use plumbing::retry::RetryPolicy;
use proactive::Trigger;
use proactive::triggers::TriggerSettings;
use std::path::PathBuf;
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
    #[command(flatten)]
    pub redact: RedactArgs,
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
    /// Proactive triggers evaluated on the stream, in priority order: a comma list of
    /// ping_pong, dwell, repeat, error_page. Empty: off.
    #[arg(long, env = "PROACTIVE_TRIGGERS", default_value = "", value_name = "LIST")]
    pub proactive_triggers: String,
    /// ping_pong: back-and-forth cycles (A→B→A) that fire it.
    #[arg(long, env = "PROACTIVE_PING_PONG_CYCLES", default_value_t = 2, value_name = "N")]
    pub proactive_ping_pong_cycles: usize,
    /// ping_pong: page visits older than this before the newest action do not count.
    #[arg(long, env = "PROACTIVE_LOOKBACK_SECS", default_value_t = 120, value_name = "SECS")]
    pub proactive_lookback_secs: u64,
    /// dwell: time on one page with at most 5 actions that fires it.
    #[arg(long, env = "PROACTIVE_DWELL_SECS", default_value_t = 60, value_name = "SECS")]
    pub proactive_dwell_secs: u64,
    /// error_page: a regular expression matched against each action's canonical URL, raw URL
    /// and title (e.g. `(?i)error|not found|\b404\b`); required by error_page.
    #[arg(long, env = "PROACTIVE_ERROR_PATTERN", value_name = "REGEX")]
    pub proactive_error_pattern: Option<String>,
}

/// Validated settings: parsing them opens nothing; its builder (`Service::build` of [`crate::App`]) does.
pub struct Settings {
    pub stream_url: reqwest::Url,
    pub token: Option<SecretString>,
    /// `None` when summaries are off.
    pub summaries: Option<SummarySettings>,
    pub event_data_path: PathBuf,
    pub session_reset: Duration,
    pub stream_idle_timeout: Duration,
    /// The context store (and its Redis, when configured); opened by its builder (`Service::build` of [`crate::App`]).
    pub store: StoreSettings,
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Proactive triggers; off when `enabled` is empty.
    pub triggers: TriggerSettings,
}

pub struct SummarySettings {
    pub llm: LlmClient,
    pub threshold: usize,
    /// What is masked in the actions before they go to the LLM (`REDACT`).
    pub redactor: std::sync::Arc<privacy::Redactor>,
}

impl Cli {
    /// The `PROACTIVE_*` settings.
    pub fn trigger_settings(&self) -> Result<TriggerSettings, ConfigError> {
        let enabled = Trigger::parse_list(&self.proactive_triggers)
            .map_err(|words| ConfigError::invalid("PROACTIVE_TRIGGERS", Problem::NotAccepted(words)))?;
        let ping_pong_cycles =
            at_least_one("PROACTIVE_PING_PONG_CYCLES", self.proactive_ping_pong_cycles as u64)? as usize;
        let lookback = Duration::from_secs(at_least_one("PROACTIVE_LOOKBACK_SECS", self.proactive_lookback_secs)?);
        let dwell = Duration::from_secs(at_least_one("PROACTIVE_DWELL_SECS", self.proactive_dwell_secs)?);
        let error_pattern = match non_empty(self.proactive_error_pattern.as_deref()) {
            Some(pattern) => Some(regex::RegexBuilder::new(&pattern).size_limit(1 << 20).build().map_err(|e| {
                ConfigError::invalid("PROACTIVE_ERROR_PATTERN", Problem::unusable("not a regular expression", e))
            })?),
            None => None,
        };
        if enabled.contains(&Trigger::ErrorPage) && error_pattern.is_none() {
            return Err(ConfigError::invalid(
                "PROACTIVE_TRIGGERS",
                Problem::Needs { other: "PROACTIVE_ERROR_PATTERN", why: "error_page looks for it" },
            ));
        }
        Ok(TriggerSettings { enabled, ping_pong_cycles, lookback, dwell, error_pattern })
    }

    pub fn into_settings(self) -> Result<Settings, ConfigError> {
        let stream_url = non_empty(self.stream_url.as_deref())
            .ok_or(ConfigError::Missing { var: "STREAM_URL", flag: "--stream-url" })?;
        let stream_url = http_url("STREAM_URL", &stream_url)?;
        let token = non_empty(Some(&self.unkey_api_key))
            .or_else(|| non_empty(Some(&self.autoplay_app_unkey_token)))
            .map(SecretString::from);
        let summaries = match self.summary_threshold {
            0 => None,
            threshold => Some(SummarySettings {
                llm: self.openai.client(RetryPolicy::default())?,
                threshold,
                redactor: self.redact.redactor()?,
            }),
        };
        at_least_one("STREAM_IDLE_TIMEOUT_SECS", self.stream_idle_timeout_secs)?;
        let store = self.store.settings()?;
        let metrics_addr = socket_addr("METRICS_ADDR", self.metrics_addr.as_deref(), "127.0.0.1:9101")?;
        let triggers = self.trigger_settings()?;
        Ok(Settings {
            triggers,
            store,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn triggers(args: &[&str]) -> Result<TriggerSettings, String> {
        let cli =
            Cli::try_parse_from(std::iter::once("listener").chain(args.iter().copied())).map_err(|e| e.to_string())?;
        cli.trigger_settings().map_err(|e| e.to_string())
    }

    #[test]
    fn proactive_settings_default_to_off_and_are_checked() {
        let off = triggers(&[]).unwrap();
        assert!(off.is_off());
        assert_eq!((off.ping_pong_cycles, off.lookback.as_secs(), off.dwell.as_secs()), (2, 120, 60));
        let on = triggers(&[
            "--proactive-triggers",
            "dwell, ping_pong,error_page",
            "--proactive-error-pattern",
            "(?i)error",
            "--proactive-dwell-secs",
            "5",
        ])
        .unwrap();
        assert_eq!(on.enabled, [Trigger::Dwell, Trigger::PingPong, Trigger::ErrorPage]);
        assert_eq!(on.dwell, Duration::from_secs(5));
        assert!(on.error_pattern.unwrap().is_match("Server ERROR"));
        for (args, var) in [
            (&["--proactive-triggers", "ping_pong,bogus"][..], "PROACTIVE_TRIGGERS"),
            (&["--proactive-triggers", "error_page"][..], "PROACTIVE_TRIGGERS"),
            (&["--proactive-error-pattern", "(unclosed"][..], "PROACTIVE_ERROR_PATTERN"),
            (&["--proactive-ping-pong-cycles", "0"][..], "PROACTIVE_PING_PONG_CYCLES"),
            (&["--proactive-lookback-secs", "0"][..], "PROACTIVE_LOOKBACK_SECS"),
            (&["--proactive-dwell-secs", "0"][..], "PROACTIVE_DWELL_SECS"),
        ] {
            let err = triggers(args).unwrap_err();
            assert!(err.starts_with(var), "{args:?}: {err}");
        }
    }
}
