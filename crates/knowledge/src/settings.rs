//! Settings of the knowledge base, read from environment-style values.

use std::path::PathBuf;
use std::time::Duration;

/// Default number of passages put in the prompt (`KNOWLEDGE_TOP_K`).
pub const DEFAULT_TOP_K: usize = 4;
/// Default refresh period in seconds (`KNOWLEDGE_REFRESH_SECS`).
pub const DEFAULT_REFRESH_SECS: u64 = 900;
/// Default index folder when `KNOWLEDGE_INDEX_DIR` is not set.
pub const DEFAULT_INDEX_DIR: &str = "knowledge-index";

/// Language of the help center: chooses the stemmer and the stop words of the BM25 analyzer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Language {
    #[default]
    English,
    French,
    German,
    Spanish,
    Italian,
    Portuguese,
    Dutch,
}

impl Language {
    /// Parses an ISO 639-1 code or an English name (`en`, `english`, `fr`, …).
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value.trim().to_ascii_lowercase().as_str() {
            "en" | "english" => Self::English,
            "fr" | "french" => Self::French,
            "de" | "german" => Self::German,
            "es" | "spanish" => Self::Spanish,
            "it" | "italian" => Self::Italian,
            "pt" | "portuguese" => Self::Portuguese,
            "nl" | "dutch" => Self::Dutch,
            _ => return None,
        })
    }

    pub(crate) fn tantivy(self) -> tantivy::tokenizer::Language {
        use tantivy::tokenizer::Language as L;
        match self {
            Self::English => L::English,
            Self::French => L::French,
            Self::German => L::German,
            Self::Spanish => L::Spanish,
            Self::Italian => L::Italian,
            Self::Portuguese => L::Portuguese,
            Self::Dutch => L::Dutch,
        }
    }

    /// Short code, as stored in the index manifest.
    pub fn code(self) -> &'static str {
        match self {
            Self::English => "en",
            Self::French => "fr",
            Self::German => "de",
            Self::Spanish => "es",
            Self::Italian => "it",
            Self::Portuguese => "pt",
            Self::Dutch => "nl",
        }
    }
}

/// Where the knowledge comes from and how it is searched.
#[derive(Debug, Clone)]
pub struct KnowledgeSettings {
    /// Folder of `.md`/`.markdown`, `.html`/`.htm` and `.txt` files, sub-folders included (`KNOWLEDGE_DIR`).
    pub dir: Option<PathBuf>,
    /// Crisp helpdesk locales to index, e.g. `["en"]` (`KNOWLEDGE_CRISP_LOCALE`, a comma list).
    pub crisp_locales: Vec<String>,
    /// Where the index lives (`KNOWLEDGE_INDEX_DIR`); created when missing.
    pub index_dir: PathBuf,
    /// How often the background refresher re-reads the sources (`KNOWLEDGE_REFRESH_SECS`, default 900).
    pub refresh: Duration,
    /// Passages returned per search (`KNOWLEDGE_TOP_K`, default 4).
    pub top_k: usize,
    /// BM25 score under which a passage is not returned (`KNOWLEDGE_MIN_SCORE`, default 0 = keep all).
    pub min_score: f32,
    /// Answer only from the knowledge base (`KNOWLEDGE_STRICT`, default false). Carried for the
    /// webhook's prompt; this crate does not act on it.
    pub strict: bool,
    /// Embedding model of an OpenAI-compatible `/v1/embeddings` endpoint (`EMBEDDING_MODEL`);
    /// `None` = BM25 alone.
    pub embedding_model: Option<String>,
    /// Language of the analyzer (`KNOWLEDGE_LANGUAGE`, default English).
    pub language: Language,
}

impl Default for KnowledgeSettings {
    fn default() -> Self {
        Self {
            dir: None,
            crisp_locales: Vec::new(),
            index_dir: PathBuf::from(DEFAULT_INDEX_DIR),
            refresh: Duration::from_secs(DEFAULT_REFRESH_SECS),
            top_k: DEFAULT_TOP_K,
            min_score: 0.0,
            strict: false,
            embedding_model: None,
            language: Language::English,
        }
    }
}

/// A setting's value that cannot be used; names the variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("{var}: expected a whole number of {what}, got {value:?}")]
    NotANumber { var: &'static str, what: &'static str, value: String },
    #[error("{var}: must be at least {min}, got {value}")]
    TooSmall { var: &'static str, min: u64, value: u64 },
    #[error("{var}: must be at most {max}, got {value}")]
    TooLarge { var: &'static str, max: u64, value: u64 },
    #[error("{var}: expected true/false (1/0, yes/no), got {value:?}")]
    NotABool { var: &'static str, value: String },
    #[error("{var}: expected a number, got {value:?}")]
    NotAScore { var: &'static str, value: String },
    #[error("{var}: {value:?} is not a locale (letters, digits and '-' only)")]
    BadLocale { var: &'static str, value: String },
    #[error("{var}: unsupported language {value:?} (en, fr, de, es, it, pt, nl)")]
    BadLanguage { var: &'static str, value: String },
    #[error("{var}: must not be empty when set")]
    Empty { var: &'static str },
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// `KNOWLEDGE_DIR`: a folder path, or `None` when unset or empty.
pub fn parse_dir(value: Option<&str>) -> Option<PathBuf> {
    non_empty(value).map(PathBuf::from)
}

/// `KNOWLEDGE_CRISP_LOCALE`: a comma list of helpdesk locales (`en,fr`, `pt-br`); duplicates dropped.
pub fn parse_locales(value: Option<&str>) -> Result<Vec<String>, SettingsError> {
    const VAR: &str = "KNOWLEDGE_CRISP_LOCALE";
    let mut out: Vec<String> = Vec::new();
    for part in non_empty(value).unwrap_or("").split(',') {
        let locale = part.trim().to_ascii_lowercase();
        if locale.is_empty() {
            continue;
        }
        if locale.len() > 16 || !locale.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(SettingsError::BadLocale { var: VAR, value: part.trim().to_owned() });
        }
        if !out.contains(&locale) {
            out.push(locale);
        }
    }
    Ok(out)
}

fn parse_u64(
    var: &'static str,
    what: &'static str,
    value: Option<&str>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, SettingsError> {
    let Some(raw) = non_empty(value) else { return Ok(default) };
    let n: u64 = raw.parse().map_err(|_| SettingsError::NotANumber { var, what, value: raw.to_owned() })?;
    if n < min {
        return Err(SettingsError::TooSmall { var, min, value: n });
    }
    if n > max {
        return Err(SettingsError::TooLarge { var, max, value: n });
    }
    Ok(n)
}

/// `KNOWLEDGE_REFRESH_SECS`: default 900, at least 10 s, at most a week.
pub fn parse_refresh(value: Option<&str>) -> Result<Duration, SettingsError> {
    parse_u64("KNOWLEDGE_REFRESH_SECS", "seconds", value, DEFAULT_REFRESH_SECS, 10, 7 * 24 * 3600)
        .map(Duration::from_secs)
}

/// `KNOWLEDGE_TOP_K`: default 4, between 1 and 20.
pub fn parse_top_k(value: Option<&str>) -> Result<usize, SettingsError> {
    parse_u64("KNOWLEDGE_TOP_K", "passages", value, DEFAULT_TOP_K as u64, 1, 20).map(|n| n as usize)
}

/// `KNOWLEDGE_STRICT`: default false.
pub fn parse_strict(value: Option<&str>) -> Result<bool, SettingsError> {
    let Some(raw) = non_empty(value) else { return Ok(false) };
    match raw.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(SettingsError::NotABool { var: "KNOWLEDGE_STRICT", value: raw.to_owned() }),
    }
}

/// `KNOWLEDGE_MIN_SCORE`: a non-negative BM25 score, default 0.
pub fn parse_min_score(value: Option<&str>) -> Result<f32, SettingsError> {
    const VAR: &str = "KNOWLEDGE_MIN_SCORE";
    let Some(raw) = non_empty(value) else { return Ok(0.0) };
    match raw.parse::<f32>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(SettingsError::NotAScore { var: VAR, value: raw.to_owned() }),
    }
}

/// `EMBEDDING_MODEL`: optional; an empty value means unset.
pub fn parse_embedding_model(value: Option<&str>) -> Option<String> {
    non_empty(value).map(str::to_owned)
}

/// `KNOWLEDGE_LANGUAGE`: default English.
pub fn parse_language(value: Option<&str>) -> Result<Language, SettingsError> {
    let Some(raw) = non_empty(value) else { return Ok(Language::English) };
    Language::parse(raw).ok_or_else(|| SettingsError::BadLanguage { var: "KNOWLEDGE_LANGUAGE", value: raw.to_owned() })
}

impl KnowledgeSettings {
    /// Reads every setting through `get` (e.g. `|k| std::env::var(k).ok()`).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let v = |k: &str| get(k);
        let index_dir = match v("KNOWLEDGE_INDEX_DIR") {
            Some(s) if s.trim().is_empty() => return Err(SettingsError::Empty { var: "KNOWLEDGE_INDEX_DIR" }),
            Some(s) => PathBuf::from(s.trim()),
            None => PathBuf::from(DEFAULT_INDEX_DIR),
        };
        Ok(Self {
            dir: parse_dir(v("KNOWLEDGE_DIR").as_deref()),
            crisp_locales: parse_locales(v("KNOWLEDGE_CRISP_LOCALE").as_deref())?,
            index_dir,
            refresh: parse_refresh(v("KNOWLEDGE_REFRESH_SECS").as_deref())?,
            top_k: parse_top_k(v("KNOWLEDGE_TOP_K").as_deref())?,
            min_score: parse_min_score(v("KNOWLEDGE_MIN_SCORE").as_deref())?,
            strict: parse_strict(v("KNOWLEDGE_STRICT").as_deref())?,
            embedding_model: parse_embedding_model(v("EMBEDDING_MODEL").as_deref()),
            language: parse_language(v("KNOWLEDGE_LANGUAGE").as_deref())?,
        })
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// True when at least one source is configured.
    pub fn has_sources(&self) -> bool {
        self.dir.is_some() || !self.crisp_locales.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults() {
        let s = KnowledgeSettings::from_lookup(lookup(&[])).unwrap();
        assert_eq!(s.top_k, 4);
        assert_eq!(s.refresh, Duration::from_secs(900));
        assert!(!s.strict);
        assert!(s.embedding_model.is_none());
        assert!(s.dir.is_none());
        assert!(s.crisp_locales.is_empty());
        assert!(!s.has_sources());
    }

    #[test]
    fn values_and_errors_name_the_variable() {
        let s = KnowledgeSettings::from_lookup(lookup(&[
            ("KNOWLEDGE_DIR", "/srv/help"),
            ("KNOWLEDGE_CRISP_LOCALE", " en, FR ,,en"),
            ("KNOWLEDGE_REFRESH_SECS", "60"),
            ("KNOWLEDGE_TOP_K", "6"),
            ("KNOWLEDGE_STRICT", "yes"),
            ("EMBEDDING_MODEL", "text-embedding-3-small"),
        ]))
        .unwrap();
        assert_eq!(s.dir, Some(PathBuf::from("/srv/help")));
        assert_eq!(s.crisp_locales, vec!["en", "fr"]);
        assert_eq!(s.refresh, Duration::from_secs(60));
        assert_eq!(s.top_k, 6);
        assert!(s.strict);
        assert_eq!(s.embedding_model.as_deref(), Some("text-embedding-3-small"));

        let e = parse_top_k(Some("four")).unwrap_err();
        assert!(e.to_string().starts_with("KNOWLEDGE_TOP_K"), "{e}");
        let e = parse_top_k(Some("0")).unwrap_err();
        assert!(e.to_string().contains("KNOWLEDGE_TOP_K"));
        let e = parse_refresh(Some("5")).unwrap_err();
        assert!(e.to_string().starts_with("KNOWLEDGE_REFRESH_SECS"), "{e}");
        let e = parse_strict(Some("maybe")).unwrap_err();
        assert!(e.to_string().starts_with("KNOWLEDGE_STRICT"), "{e}");
        let e = parse_locales(Some("en,fr/../x")).unwrap_err();
        assert!(e.to_string().starts_with("KNOWLEDGE_CRISP_LOCALE"), "{e}");
        assert!(parse_language(Some("klingon")).unwrap_err().to_string().starts_with("KNOWLEDGE_LANGUAGE"));
        assert_eq!(parse_embedding_model(Some("  ")), None);
    }
}
