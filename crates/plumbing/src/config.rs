//! Configuration pieces every app shares: the one-line errors, value checks and the redaction
//! settings. Each crate keeps the settings of what it owns (`llm::OpenAiArgs`,
//! `activity::config::StoreArgs`).

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
