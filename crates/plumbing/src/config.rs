//! Configuration pieces every app shares: the one-line errors, value checks and the redaction
//! settings. Each crate keeps the settings of what it owns (`llm::OpenAiArgs`,
//! `activity::config::StoreArgs`).

/// A missing or unusable setting; printed as one line naming the variable, what was wrong and
/// what it accepts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var} is required: set it in the environment, in .env, or with {flag}")]
    Missing { var: &'static str, flag: &'static str },
    #[error("{var} is invalid: {problem}")]
    Invalid { var: &'static str, problem: Problem },
}

impl ConfigError {
    pub fn invalid(var: &'static str, problem: impl Into<Problem>) -> Self {
        ConfigError::Invalid { var, problem: problem.into() }
    }
}

/// An error of another crate, kept as the cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What was wrong with a setting's value: each says what is accepted, and keeps its cause.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// A text visitors read, left empty.
    #[error("must not be empty")]
    Empty,
    /// A bound set to less than it can be (a zero would disable what it bounds).
    #[error("must be at least {0}")]
    AtLeast(u64),
    #[error("must be at least {0} characters")]
    TooShort(usize),
    #[error("must be from {min} to {max} {unit}")]
    OutOfRange { min: u64, max: u64, unit: &'static str },
    #[error("not a URL ({0})")]
    NotUrl(#[source] BoxError),
    #[error("must start with http:// or https://")]
    NotHttp,
    #[error("{source} (expected host:port, e.g. {example})")]
    NotAddress {
        #[source]
        source: std::net::AddrParseError,
        example: &'static str,
    },
    /// An id that failed its check ([`crate::ids`]).
    #[error(transparent)]
    Id(#[from] crate::ids::IdError),
    /// A value outside a list or a grammar (its owner's words say which values it accepts).
    #[error("{0}")]
    NotAccepted(String),
    /// A setting that only works with another one.
    #[error("needs {other} ({why})")]
    Needs { other: &'static str, why: &'static str },
    #[error("{0} is not a folder")]
    NotAFolder(std::path::PathBuf),
    /// Well formed, but what it names cannot be used (a port taken, a file unreadable...).
    #[error("{doing}: {source}")]
    Unusable {
        doing: String,
        #[source]
        source: BoxError,
    },
    /// Refused by the crate that uses it (its error, kept whole).
    #[error(transparent)]
    Refused(BoxError),
}

impl Problem {
    /// What cannot be done with the value, and why.
    pub fn unusable(doing: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Problem::Unusable { doing: doing.into(), source: source.into() }
    }

    pub fn refused(source: impl Into<BoxError>) -> Self {
        Problem::Refused(source.into())
    }
}

/// A bound of at least 1: a zero would disable what the setting bounds.
pub fn at_least_one(var: &'static str, value: u64) -> Result<u64, ConfigError> {
    if value == 0 {
        return Err(ConfigError::invalid(var, Problem::AtLeast(1)));
    }
    Ok(value)
}

/// Trims a setting and treats empty as unset.
pub fn non_empty(value: Option<&str>) -> Option<String> {
    value.map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
}

/// Checks that `value` is an http(s) URL.
pub fn http_url(var: &'static str, value: &str) -> Result<reqwest::Url, ConfigError> {
    let url = reqwest::Url::parse(value).map_err(|e| ConfigError::invalid(var, Problem::NotUrl(Box::new(e))))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::invalid(var, Problem::NotHttp));
    }
    Ok(url)
}

/// An optional `host:port` setting (e.g. `METRICS_ADDR`); empty counts as unset.
pub fn socket_addr(
    var: &'static str,
    value: Option<&str>,
    example: &'static str,
) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    non_empty(value)
        .map(|addr| addr.parse().map_err(|source| ConfigError::invalid(var, Problem::NotAddress { source, example })))
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
    // The privacy crate's words name the variable first; the error names it already.
    let words = e.to_string();
    let words = words.split_once(": ").map_or(words.clone(), |(_, rest)| rest.to_owned());
    ConfigError::invalid(var, Problem::NotAccepted(words))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_settings_error_names_the_variable_what_was_wrong_and_what_is_accepted() {
        let e = http_url("STREAM_URL", "ftp://x").unwrap_err();
        assert!(matches!(e, ConfigError::Invalid { var: "STREAM_URL", problem: Problem::NotHttp }));
        assert_eq!(e.to_string(), "STREAM_URL is invalid: must start with http:// or https://");

        let e = socket_addr("METRICS_ADDR", Some("localhost"), "127.0.0.1:9100").unwrap_err();
        assert_eq!(
            e.to_string(),
            "METRICS_ADDR is invalid: invalid socket address syntax (expected host:port, e.g. 127.0.0.1:9100)"
        );
        let ConfigError::Invalid { problem, .. } = &e else { panic!("{e:?}") };
        assert!(problem.source().is_some(), "the parse error is kept as the cause");

        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let e = ConfigError::invalid("BIND_ADDR", Problem::unusable("cannot listen on 0.0.0.0:3000", io));
        assert_eq!(e.to_string(), "BIND_ADDR is invalid: cannot listen on 0.0.0.0:3000: address in use");
        let ConfigError::Invalid { problem, .. } = &e else { panic!("{e:?}") };
        assert_eq!(problem.source().unwrap().to_string(), "address in use");

        let e = ConfigError::invalid("X", Problem::OutOfRange { min: 1, max: 300, unit: "seconds" });
        assert_eq!(e.to_string(), "X is invalid: must be from 1 to 300 seconds");
    }
}
