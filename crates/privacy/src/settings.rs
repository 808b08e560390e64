//! `REDACT`, `REDACT_EXTRA_PATTERNS` and `REDACT_PHONE_REGION`, parsed without I/O.

use std::str::FromStr;

use crate::kind::{Kind, Kinds};

/// The accepted values of `REDACT`, as printed in errors and `--help`.
pub const REDACT_ACCEPTED: &str = "a comma-separated list of email, phone, card, iban, secret, url_query (or `all`), \
     or `off`; empty or unset means all";

/// Separator between the regexes of `REDACT_EXTRA_PATTERNS` (a newline separates them too).
pub const EXTRA_PATTERN_SEPARATOR: &str = ";;";

/// Largest compiled size of one extra pattern (the same bound as `PROACTIVE_ERROR_PATTERN`).
pub(crate) const EXTRA_PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// A setting that could not be used. Each names its variable and what it accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("REDACT: unknown kind `{word}`; accepted: {REDACT_ACCEPTED}")]
    UnknownKind { word: String },
    #[error(
        "REDACT_EXTRA_PATTERNS: pattern {index} (`{pattern}`) is not a valid regex: {reason}; \
         accepted: regexes (Rust `regex` syntax, at most 1 MiB compiled) separated by `;;` or newlines"
    )]
    BadPattern {
        /// 1-based position of the pattern in the list.
        index: usize,
        pattern: String,
        reason: String,
    },
    #[error(
        "REDACT_PHONE_REGION: unknown region `{value}`; accepted: a two-letter ISO 3166 country code such as US, GB, DE, FR"
    )]
    UnknownRegion { value: String },
}

/// What to redact. [`Settings::default`] redacts every kind, with US as the region for phone
/// numbers written without `+`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The kinds whose detectors run.
    pub kinds: Kinds,
    /// Extra secret regexes (`REDACT_EXTRA_PATTERNS`), validated. They run unless `REDACT=off`,
    /// and count as [`Kind::Secret`].
    pub extra_patterns: Vec<String>,
    /// Region for national phone formats (`(415) 555-2671`); `+` numbers of any country are
    /// found whatever it is.
    pub phone_region: phonenumber::country::Id,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { kinds: Kinds::ALL, extra_patterns: Vec::new(), phone_region: phonenumber::country::Id::US }
    }
}

impl Settings {
    /// Parses the three variables' values (`None` = unset).
    pub fn parse(
        redact: Option<&str>,
        extra_patterns: Option<&str>,
        phone_region: Option<&str>,
    ) -> Result<Settings, SettingsError> {
        let kinds = match redact {
            Some(v) => v.parse::<KindsSetting>()?.0,
            None => Kinds::ALL,
        };
        let extra_patterns = match extra_patterns {
            Some(v) => parse_extra_patterns(v)?,
            None => Vec::new(),
        };
        let phone_region = match phone_region.map(str::trim).filter(|v| !v.is_empty()) {
            Some(v) => parse_region(v)?,
            None => phonenumber::country::Id::US,
        };
        // `off` turns the extras off too: one switch for the whole feature.
        let extra_patterns = if kinds.is_empty() { Vec::new() } else { extra_patterns };
        Ok(Settings { kinds, extra_patterns, phone_region })
    }

    /// Reads `REDACT`, `REDACT_EXTRA_PATTERNS` and `REDACT_PHONE_REGION` from the environment.
    pub fn from_env() -> Result<Settings, SettingsError> {
        let var = |name| std::env::var(name).ok();
        Settings::parse(
            var("REDACT").as_deref(),
            var("REDACT_EXTRA_PATTERNS").as_deref(),
            var("REDACT_PHONE_REGION").as_deref(),
        )
    }

    /// Whether anything is redacted at all.
    pub fn is_enabled(&self) -> bool {
        !self.kinds.is_empty()
    }
}

/// The value of `REDACT`, for a `clap` `value_parser` (`REDACT=email,phone`, `REDACT=off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindsSetting(pub Kinds);

impl FromStr for KindsSetting {
    type Err = SettingsError;

    fn from_str(value: &str) -> Result<Self, SettingsError> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(KindsSetting(Kinds::ALL));
        }
        let lower = value.to_ascii_lowercase();
        if matches!(lower.as_str(), "off" | "none" | "false" | "0") {
            return Ok(KindsSetting(Kinds::NONE));
        }
        let mut kinds = Kinds::NONE;
        for word in lower.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if word == "all" {
                kinds = Kinds::ALL;
                continue;
            }
            let word = word.replace('-', "_");
            match Kind::from_label(&word) {
                Some(kind) => kinds = kinds.with(kind),
                None => return Err(SettingsError::UnknownKind { word }),
            }
        }
        Ok(KindsSetting(kinds))
    }
}

/// Splits `REDACT_EXTRA_PATTERNS` on `;;` and newlines (blank entries ignored, each trimmed) and
/// checks that each compiles.
pub fn parse_extra_patterns(value: &str) -> Result<Vec<String>, SettingsError> {
    let patterns: Vec<String> = value
        .split(['\n', '\r'])
        .flat_map(|line| line.split(EXTRA_PATTERN_SEPARATOR))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    for (i, pattern) in patterns.iter().enumerate() {
        compile_extra(pattern).map_err(|e| SettingsError::BadPattern {
            index: i + 1,
            pattern: pattern.clone(),
            reason: e.to_string(),
        })?;
    }
    Ok(patterns)
}

pub(crate) fn compile_extra(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern).size_limit(EXTRA_PATTERN_SIZE_LIMIT).build()
}

fn parse_region(value: &str) -> Result<phonenumber::country::Id, SettingsError> {
    let upper = value.to_ascii_uppercase();
    if upper.len() == 2
        && let Ok(id) = upper.parse::<phonenumber::country::Id>()
    {
        return Ok(id);
    }
    Err(SettingsError::UnknownRegion { value: value.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_words() {
        let s = Settings::parse(Some("email, Phone,url-query"), None, None).unwrap();
        assert!(s.kinds.contains(Kind::Email));
        assert!(s.kinds.contains(Kind::Phone));
        assert!(s.kinds.contains(Kind::UrlQuery));
        assert!(!s.kinds.contains(Kind::Card));
        assert_eq!(Settings::parse(Some("off"), None, None).unwrap().kinds, Kinds::NONE);
        assert_eq!(Settings::parse(Some(""), None, None).unwrap().kinds, Kinds::ALL);
        assert_eq!(Settings::parse(None, None, None).unwrap().kinds, Kinds::ALL);
        assert_eq!(Settings::parse(Some("all"), None, None).unwrap().kinds, Kinds::ALL);
    }

    #[test]
    fn errors_name_the_variable_and_what_is_accepted() {
        let e = Settings::parse(Some("email,ssn"), None, None).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("REDACT: unknown kind `ssn`"), "{msg}");
        assert!(msg.contains("url_query") && msg.contains("off"), "{msg}");

        let e = Settings::parse(None, Some("ok\\d+;;(unclosed"), None).unwrap_err();
        assert!(matches!(e, SettingsError::BadPattern { index: 2, .. }), "{e:?}");
        assert!(e.to_string().starts_with("REDACT_EXTRA_PATTERNS: pattern 2"));

        let e = Settings::parse(None, None, Some("Atlantis")).unwrap_err();
        assert!(e.to_string().starts_with("REDACT_PHONE_REGION"));
    }

    #[test]
    fn extra_patterns_split_on_double_semicolon_and_newlines() {
        let s = Settings::parse(None, Some("EMP-\\d{6};;\n  acct_[a-z]{8} \n;;"), Some("gb")).unwrap();
        assert_eq!(s.extra_patterns, ["EMP-\\d{6}", "acct_[a-z]{8}"]);
        assert_eq!(s.phone_region, phonenumber::country::Id::GB);
        let off = Settings::parse(Some("off"), Some("EMP-\\d{6}"), None).unwrap();
        assert!(off.extra_patterns.is_empty() && !off.is_enabled());
    }
}
