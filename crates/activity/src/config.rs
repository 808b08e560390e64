//! The per-visitor context store's settings, shared by both binaries.

use plumbing::SecretString;
use plumbing::config::{ConfigError, Problem, at_least_one, non_empty};

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
        at_least_one("CONTEXT_MAX_ACTIONS", self.context_max_actions as u64)?;
        at_least_one("CONTEXT_TTL_SECS", self.context_ttl_secs)?;
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
                // Parsed only, to say now whether it is usable; the error never shows the URL (nor
                // Redis's error, which may quote it, password included): its category only.
                redis::Client::open(url.as_str()).map_err(|e| {
                    ConfigError::invalid(
                        "REDIS_URL",
                        Problem::NotAccepted(format!("invalid Redis URL ({})", e.category())),
                    )
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
    pub fn connect_redis(&self) -> Result<Option<plumbing::redis_conn::RedisConn>, ConfigError> {
        use secrecy::ExposeSecret;
        self.redis
            .as_ref()
            .map(|redis| {
                plumbing::redis_conn::RedisConn::lazy(redis.url.expose_secret(), &redis.key_prefix).map_err(|e| {
                    let why = format!("cannot use Redis ({})", e.category());
                    ConfigError::invalid("REDIS_URL", Problem::NotAccepted(why))
                })
            })
            .transpose()
    }

    /// The listener's side of the store: on `redis` when given, else files under `data_dir`
    /// (created when missing).
    pub fn open_writer(
        &self,
        redis: Option<plumbing::redis_conn::RedisConn>,
    ) -> Result<crate::context::StoreWriter, ConfigError> {
        self.open(redis).map(crate::context::StoreWriter)
    }

    /// The webhook's side of the store: on `redis` when given, else files under `data_dir`.
    pub fn open_reader(
        &self,
        redis: Option<plumbing::redis_conn::RedisConn>,
    ) -> Result<crate::context::StoreReader, ConfigError> {
        self.open(redis).map(crate::context::StoreReader)
    }

    fn open(&self, redis: Option<plumbing::redis_conn::RedisConn>) -> Result<crate::context::Backend, ConfigError> {
        use crate::context::{Backend, FileStore, RedisStore};
        if let Some(conn) = redis {
            return Ok(Backend::Redis(RedisStore::new(conn, self.limits.clone())));
        }
        let store = FileStore::open(&self.data_dir, self.limits.clone()).map_err(|e| {
            ConfigError::invalid("DATA_DIR", Problem::unusable(format!("cannot use {}", self.data_dir.display()), e))
        })?;
        Ok(Backend::File(store))
    }
}

/// Redis, when `REDIS_URL` is set; `None` otherwise.
pub async fn probe_redis(store: &StoreSettings) -> Option<plumbing::checks::Check> {
    let conn = match store.connect_redis() {
        Ok(conn) => conn?,
        Err(e) => return Some(plumbing::checks::Check { name: "Redis", outcome: Err(e.to_string()) }),
    };
    Some(plumbing::checks::redis_ping(&conn).await)
}
