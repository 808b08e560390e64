//! Configuration pieces both binaries share: the OpenAI settings and the one-line errors.

use crate::llm::{LlmClient, LlmError};
use crate::retry::RetryPolicy;
use secrecy::SecretString;

/// A missing or unusable setting; printed as one line naming the variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var} is required: set it in the environment, in .env, or with {flag}")]
    Missing { var: &'static str, flag: &'static str },
    #[error("{var} is invalid: {reason}")]
    Invalid { var: &'static str, reason: String },
}

/// Trims a setting and treats empty as unset.
pub fn non_empty(value: Option<&str>) -> Option<String> {
    value.map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
}

/// Checks that `value` is an http(s) URL.
pub fn http_url(var: &'static str, value: &str) -> Result<reqwest::Url, ConfigError> {
    let url =
        reqwest::Url::parse(value).map_err(|e| ConfigError::Invalid { var, reason: format!("not a URL ({e})") })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::Invalid { var, reason: "must start with http:// or https://".into() });
    }
    Ok(url)
}

/// An optional `host:port` setting (e.g. `METRICS_ADDR`); empty counts as unset.
pub fn socket_addr(
    var: &'static str,
    value: Option<&str>,
    example: &str,
) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    non_empty(value)
        .map(|addr| {
            addr.parse()
                .map_err(|e| ConfigError::Invalid { var, reason: format!("{e} (expected host:port, e.g. {example})") })
        })
        .transpose()
}

/// The OpenAI-compatible server used for summaries and replies.
#[derive(clap::Args, Clone)]
pub struct OpenAiArgs {
    /// API key of the OpenAI-compatible server.
    #[arg(long = "openai-api-key", env = "OPENAI_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Base URL of any OpenAI-compatible server.
    #[arg(
        long = "openai-base-url",
        env = "OPENAI_BASE_URL",
        hide_env_values = true,
        default_value = "https://api.openai.com/v1",
        value_name = "URL"
    )]
    pub base_url: String,
    /// Chat model.
    #[arg(long = "openai-model", env = "OPENAI_MODEL", default_value = "gpt-4o-mini", value_name = "MODEL")]
    pub model: String,
}

impl OpenAiArgs {
    /// Builds the client; the key is required.
    pub fn client(&self, retry: RetryPolicy) -> Result<LlmClient, ConfigError> {
        let key = non_empty(self.api_key.as_deref())
            .ok_or(ConfigError::Missing { var: "OPENAI_API_KEY", flag: "--openai-api-key" })?;
        http_url("OPENAI_BASE_URL", &self.base_url)?;
        LlmClient::new(&self.base_url, SecretString::from(key), self.model.clone(), retry)
            .map_err(|e: LlmError| ConfigError::Invalid { var: "OPENAI_BASE_URL", reason: e.to_string() })
    }
}

/// What is replaced by placeholders before text leaves for the LLM (both binaries); logs are
/// always redacted, whatever these say.
#[derive(clap::Args, Clone)]
pub struct RedactArgs {
    /// Kinds of personal data replaced by placeholders before any text goes to the LLM: a
    /// comma-separated list of email, phone, card, iban, secret, url_query, or `off`.
    #[arg(long, env = "REDACT", default_value = "email,phone,card,iban,secret,url_query", value_name = "LIST")]
    pub redact: String,
    /// Extra secret patterns (regexes, separated by `;;` or newlines), redacted as `secret`.
    #[arg(long, env = "REDACT_EXTRA_PATTERNS", value_name = "REGEXES")]
    pub redact_extra_patterns: Option<String>,
    /// Country of phone numbers written without `+` (ISO 3166 code).
    #[arg(long, env = "REDACT_PHONE_REGION", default_value = "US", value_name = "CODE")]
    pub redact_phone_region: String,
}

impl RedactArgs {
    /// The redactor these settings describe; the error names the variable and what it accepts.
    pub fn redactor(&self) -> Result<std::sync::Arc<privacy::Redactor>, ConfigError> {
        let settings = privacy::Settings::parse(
            Some(&self.redact),
            self.redact_extra_patterns.as_deref(),
            Some(&self.redact_phone_region),
        )
        .map_err(redact_error)?;
        privacy::Redactor::new(settings).map(std::sync::Arc::new).map_err(redact_error)
    }
}

fn redact_error(e: privacy::SettingsError) -> ConfigError {
    let var = match &e {
        privacy::SettingsError::UnknownKind { .. } => "REDACT",
        privacy::SettingsError::BadPattern { .. } => "REDACT_EXTRA_PATTERNS",
        privacy::SettingsError::UnknownRegion { .. } => "REDACT_PHONE_REGION",
    };
    let reason = e.to_string();
    let reason = reason.split_once(": ").map_or(reason.clone(), |(_, rest)| rest.to_owned());
    ConfigError::Invalid { var, reason }
}

/// The per-visitor context store, shared by both binaries.
#[derive(clap::Args, Clone)]
pub struct StoreArgs {
    /// Directory of the embedded per-visitor context store.
    #[arg(long, env = "DATA_DIR", default_value = "data", value_name = "PATH")]
    pub data_dir: std::path::PathBuf,
    /// Newest actions kept per Autoplay session.
    #[arg(long, env = "CONTEXT_MAX_ACTIONS", default_value_t = 50, value_name = "N")]
    pub context_max_actions: usize,
    /// Idle seconds after which a session's context (and its links) expire.
    #[arg(long, env = "CONTEXT_TTL_SECS", default_value_t = 1800, value_name = "SECS")]
    pub context_ttl_secs: u64,
    /// Redis for the context store and the coordination of webhook replicas; unset: the
    /// embedded store under DATA_DIR.
    #[arg(long, env = "REDIS_URL", hide_env_values = true, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key, to share one Redis between deployments.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "crisp-agent:", value_name = "PREFIX")]
    pub redis_key_prefix: String,
}

impl StoreArgs {
    pub fn limits(&self) -> Result<crate::context::StoreLimits, ConfigError> {
        if self.context_max_actions == 0 {
            return Err(ConfigError::Invalid { var: "CONTEXT_MAX_ACTIONS", reason: "must be at least 1".into() });
        }
        if self.context_ttl_secs == 0 {
            return Err(ConfigError::Invalid { var: "CONTEXT_TTL_SECS", reason: "must be at least 1".into() });
        }
        Ok(crate::context::StoreLimits {
            max_actions: self.context_max_actions,
            ttl: std::time::Duration::from_secs(self.context_ttl_secs),
        })
    }

    /// The validated store settings: the bounds, the directory and, when REDIS_URL is set,
    /// the Redis URL (checked, not connected: that takes the runtime, see
    /// [`StoreSettings::connect_redis`]).
    pub fn settings(&self) -> Result<StoreSettings, ConfigError> {
        let redis = match non_empty(self.redis_url.as_deref()) {
            Some(url) => {
                // Parsed only, to say now whether it is usable; the error never shows the URL.
                redis::Client::open(url.as_str()).map_err(|e| ConfigError::Invalid {
                    var: "REDIS_URL",
                    reason: format!("invalid Redis URL ({})", e.category()),
                })?;
                Some(RedisSettings { url: SecretString::from(url), key_prefix: self.redis_key_prefix.clone() })
            }
            None => None,
        };
        Ok(StoreSettings { data_dir: self.data_dir.clone(), limits: self.limits()?, redis })
    }
}

/// Where the per-visitor context lives: Redis when configured, else files under `data_dir`.
#[derive(Clone)]
pub struct StoreSettings {
    pub data_dir: std::path::PathBuf,
    pub limits: crate::context::StoreLimits,
    pub redis: Option<RedisSettings>,
}

/// `REDIS_URL` (it may hold a password) and `REDIS_KEY_PREFIX`.
#[derive(Clone)]
pub struct RedisSettings {
    url: SecretString,
    key_prefix: String,
}

impl StoreSettings {
    /// The one Redis connection of the process, when REDIS_URL is set: prepared, connected
    /// lazily. Call it inside the runtime.
    pub fn connect_redis(&self) -> Result<Option<crate::redis_conn::RedisConn>, ConfigError> {
        use secrecy::ExposeSecret;
        self.redis
            .as_ref()
            .map(|redis| {
                crate::redis_conn::RedisConn::lazy(redis.url.expose_secret(), &redis.key_prefix).map_err(|e| {
                    ConfigError::Invalid { var: "REDIS_URL", reason: format!("cannot use Redis ({})", e.category()) }
                })
            })
            .transpose()
    }

    /// The listener's side of the store: on `redis` when given, else files under `data_dir`
    /// (created when missing).
    pub fn open_writer(
        &self,
        redis: Option<crate::redis_conn::RedisConn>,
    ) -> Result<crate::context::StoreWriter, ConfigError> {
        self.open(redis).map(crate::context::StoreWriter)
    }

    /// The webhook's side of the store: on `redis` when given, else files under `data_dir`.
    pub fn open_reader(
        &self,
        redis: Option<crate::redis_conn::RedisConn>,
    ) -> Result<crate::context::StoreReader, ConfigError> {
        self.open(redis).map(crate::context::StoreReader)
    }

    fn open(&self, redis: Option<crate::redis_conn::RedisConn>) -> Result<crate::context::Backend, ConfigError> {
        use crate::context::{Backend, FileStore, RedisStore};
        if let Some(conn) = redis {
            return Ok(Backend::Redis(RedisStore::new(conn, self.limits.clone())));
        }
        let store = FileStore::open(&self.data_dir, self.limits.clone()).map_err(|e| ConfigError::Invalid {
            var: "DATA_DIR",
            reason: format!("cannot use {}: {e}", self.data_dir.display()),
        })?;
        Ok(Backend::File(store))
    }
}
