//! The product's own help center in the reply: the webhook's side of the `knowledge` crate.
//! Settings (`KNOWLEDGE_*`, `EMBEDDING_MODEL`), the index opened under `DATA_DIR/knowledge`,
//! refreshed every `KNOWLEDGE_REFRESH_SECS` and on `SIGHUP`, the query made from what the
//! visitor is doing (their page, their last actions), metrics, and the one-shot
//! `webhook knowledge search|stats` commands.

use activity::action::ActionRecord;
use crisp::{CrispSettings, WebsiteId};
use knowledge::{Hit, Knowledge, KnowledgeSettings, Query};
use llm::OpenAiArgs;
use plumbing::config::{ConfigError, Problem, non_empty};
use plumbing::telemetry::Metrics;
use plumbing::{ExposeSecret, SecretString};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const DOCUMENTS: &str = "knowledge_documents";
pub const PASSAGES: &str = "knowledge_passages";
pub const SEARCHES: &str = "knowledge_searches_total";
pub const SEARCHES_EMPTY: &str = "knowledge_searches_empty_total";
pub const REFRESH_ERRORS: &str = "knowledge_refresh_errors_total";

/// Every knowledge series, listed from the first scrape (at 0).
pub fn register_series(metrics: &Metrics) {
    metrics.gauge(DOCUMENTS).set(0.0);
    metrics.gauge(PASSAGES).set(0.0);
    for name in [SEARCHES, SEARCHES_EMPTY, REFRESH_ERRORS] {
        metrics.counter(name).increment(0);
    }
}

/// How long start-up waits for the first indexing of the sources (it goes on in the
/// background after that).
const FIRST_REFRESH_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Characters of passages one prompt carries at most (inside the prompt's own cap).
pub const MAX_PASSAGE_CHARS: usize = 6000;
/// Newest actions whose titles steer the search.
const RECENT_ACTIONS: usize = 5;

/// The help center settings (all optional: no source, no knowledge in the prompt).
#[derive(clap::Args, Clone, Debug)]
pub struct KnowledgeArgs {
    /// A folder of Markdown, HTML and text articles (sub-folders too) the bot answers from.
    #[arg(long, env = "KNOWLEDGE_DIR", value_name = "PATH")]
    pub knowledge_dir: Option<PathBuf>,
    /// Crisp helpdesk locales whose published articles the bot answers from (comma list, e.g. en,fr).
    #[arg(long, env = "KNOWLEDGE_CRISP_LOCALE", value_name = "LIST")]
    pub knowledge_crisp_locale: Option<String>,
    /// Seconds between refreshes of the sources (also on SIGHUP).
    #[arg(long, env = "KNOWLEDGE_REFRESH_SECS", default_value = "900", value_name = "SECS")]
    pub knowledge_refresh_secs: String,
    /// Passages put in a prompt at most.
    #[arg(long, env = "KNOWLEDGE_TOP_K", default_value = "4", value_name = "N")]
    pub knowledge_top_k: String,
    /// true: when no article covers the question, the bot says so and offers a person, nothing else.
    #[arg(long, env = "KNOWLEDGE_STRICT", default_value = "false", value_name = "BOOL")]
    pub knowledge_strict: String,
    /// Passages scoring below this are not sent.
    #[arg(long, env = "KNOWLEDGE_MIN_SCORE", value_name = "SCORE")]
    pub knowledge_min_score: Option<String>,
    /// Where the index lives (default DATA_DIR/knowledge).
    #[arg(long, env = "KNOWLEDGE_INDEX_DIR", value_name = "PATH")]
    pub knowledge_index_dir: Option<PathBuf>,
    /// Language of the articles, for stemming and stop words.
    #[arg(long, env = "KNOWLEDGE_LANGUAGE", default_value = "en", value_name = "CODE")]
    pub knowledge_language: String,
    /// Embeddings model on the OpenAI-compatible server: hybrid search (BM25 + vectors); unset: BM25.
    #[arg(long, env = "EMBEDDING_MODEL", value_name = "MODEL")]
    pub embedding_model: Option<String>,
}

const VARIABLES: [&str; 9] = [
    "KNOWLEDGE_DIR",
    "KNOWLEDGE_CRISP_LOCALE",
    "KNOWLEDGE_REFRESH_SECS",
    "KNOWLEDGE_TOP_K",
    "KNOWLEDGE_STRICT",
    "KNOWLEDGE_MIN_SCORE",
    "KNOWLEDGE_INDEX_DIR",
    "KNOWLEDGE_LANGUAGE",
    "EMBEDDING_MODEL",
];

impl KnowledgeArgs {
    /// The validated settings; `None` when no source is configured. The index defaults to
    /// `data_dir/knowledge`.
    pub fn settings(&self, data_dir: &Path) -> Result<Option<KnowledgeSettings>, ConfigError> {
        let value = |name: &str| -> Option<String> {
            match name {
                "KNOWLEDGE_DIR" => self.knowledge_dir.as_ref().map(|p| p.display().to_string()),
                "KNOWLEDGE_CRISP_LOCALE" => self.knowledge_crisp_locale.clone(),
                "KNOWLEDGE_REFRESH_SECS" => Some(self.knowledge_refresh_secs.clone()),
                "KNOWLEDGE_TOP_K" => Some(self.knowledge_top_k.clone()),
                "KNOWLEDGE_STRICT" => Some(self.knowledge_strict.clone()),
                "KNOWLEDGE_MIN_SCORE" => self.knowledge_min_score.clone(),
                "KNOWLEDGE_INDEX_DIR" => Some(
                    self.knowledge_index_dir
                        .clone()
                        .unwrap_or_else(|| data_dir.join("knowledge"))
                        .display()
                        .to_string(),
                ),
                "KNOWLEDGE_LANGUAGE" => Some(self.knowledge_language.clone()),
                "EMBEDDING_MODEL" => self.embedding_model.clone(),
                _ => None,
            }
        };
        let settings = KnowledgeSettings::from_lookup(value).map_err(|e| {
            let message = e.to_string();
            let var = VARIABLES.iter().find(|v| message.starts_with(**v)).copied().unwrap_or("KNOWLEDGE_DIR");
            let words = message.strip_prefix(var).unwrap_or(&message).trim_start_matches([':', ' ']).to_owned();
            ConfigError::invalid(var, Problem::NotAccepted(words))
        })?;
        if let Some(dir) = &settings.dir
            && !dir.is_dir()
        {
            return Err(ConfigError::invalid("KNOWLEDGE_DIR", Problem::NotAFolder(dir.clone())));
        }
        Ok(settings.has_sources().then_some(settings))
    }
}

/// The help center as the reply pipeline uses it.
pub struct KnowledgeBase {
    knowledge: Knowledge,
    settings: KnowledgeSettings,
    /// Asks the refresher for a refresh now (SIGHUP, [`KnowledgeBase::refresh_now`]).
    refresh: Arc<tokio::sync::Notify>,
    /// The webhook's registry (`knowledge_*`).
    metrics: Metrics,
}

impl KnowledgeBase {
    /// Opens (or creates) the index; nothing is fetched yet ([`KnowledgeBase::start`] does).
    pub fn open(
        settings: KnowledgeSettings,
        crisp: &CrispSettings,
        openai: &OpenAiArgs,
        metrics: Metrics,
    ) -> Result<Arc<KnowledgeBase>, ConfigError> {
        let helpdesk = if settings.crisp_locales.is_empty() {
            None
        } else {
            let client = knowledge::HelpdeskClient::new(knowledge::HelpdeskSettings {
                base_url: crisp.api_base_url.clone(),
                website_id: crisp.website_id.to_string(),
                token_identifier: crisp.token_identifier.clone(),
                token_key: SecretString::from(crisp.token_key.expose_secret().to_owned()),
                tier: crisp.tier.clone(),
                timeout: crisp::api::CRISP_CALL_TIMEOUT,
            })
            .map_err(|e| ConfigError::invalid("KNOWLEDGE_CRISP_LOCALE", Problem::refused(e)))?;
            Some(client)
        };
        let embeddings = match &settings.embedding_model {
            Some(model) => {
                let key = non_empty(openai.api_key.as_deref()).map(SecretString::from);
                Some(
                    knowledge::EmbeddingClient::new(&openai.base_url, key, model.clone())
                        .map_err(|e| ConfigError::invalid("EMBEDDING_MODEL", Problem::refused(e)))?,
                )
            }
            None => None,
        };
        let knowledge = Knowledge::open_with(settings.clone(), helpdesk, embeddings)
            .map_err(|e| ConfigError::invalid("KNOWLEDGE_INDEX_DIR", Problem::unusable("cannot open the index", e)))?;
        Ok(Arc::new(KnowledgeBase { knowledge, settings, refresh: Arc::new(tokio::sync::Notify::new()), metrics }))
    }

    /// Refreshes now (waiting up to `FIRST_REFRESH_WAIT`, so the first visitors get
    /// articles), then every `KNOWLEDGE_REFRESH_SECS` and on `SIGHUP`; keeps the metrics.
    pub async fn start(self: &Arc<Self>) {
        let (first_done, first) = tokio::sync::oneshot::channel::<()>();
        let mut first_done = Some(first_done);
        let this = Arc::clone(self);
        self.knowledge.spawn_refresher(self.settings.refresh, Arc::clone(&self.refresh), move |report| {
            if !report.errors.is_empty() {
                this.metrics.counter(REFRESH_ERRORS).increment(report.errors.len() as u64);
            }
            this.record_stats();
            if let Some(done) = first_done.take() {
                let _ = done.send(());
            }
        });
        let refresh = Arc::clone(&self.refresh);
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hangup) = signal(SignalKind::hangup()) else { return };
            while hangup.recv().await.is_some() {
                tracing::info!("knowledge refresh asked (SIGHUP)");
                refresh.notify_one();
            }
        });
        if tokio::time::timeout(FIRST_REFRESH_WAIT, first).await.is_err() {
            tracing::warn!("the help center is still being indexed; replies use it once it is ready");
        }
    }

    fn record_stats(&self) {
        let stats = self.knowledge.stats();
        self.metrics.gauge(DOCUMENTS).set(stats.documents as f64);
        self.metrics.gauge(PASSAGES).set(stats.passages as f64);
    }

    pub fn strict(&self) -> bool {
        self.settings.strict
    }

    /// The best passages for the visitor's words, steered by what they are doing; empty when
    /// none scores above the threshold.
    pub async fn search(&self, query: &Query) -> Vec<Hit> {
        let mut hits = self.knowledge.search(query).await;
        hits.truncate(self.settings.top_k);
        self.metrics.counter(SEARCHES).increment(1);
        if hits.is_empty() {
            self.metrics.counter(SEARCHES_EMPTY).increment(1);
        }
        hits
    }

    pub fn knowledge(&self) -> &Knowledge {
        &self.knowledge
    }

    /// Refreshes the sources now (as SIGHUP does).
    pub fn refresh_now(&self) {
        self.refresh.notify_one();
    }
}

/// The query for a visitor's words: the page they are on (its title and URL path) and their
/// newest action titles steer it; the words decide it.
pub fn query_for(words: &str, actions: &[ActionRecord<'_>]) -> Query {
    let page = actions.iter().rev().find(|a| a.title.starts_with("Page Load") || !a.canonical_url.is_empty());
    let page_title = actions
        .iter()
        .rev()
        .find_map(|a| a.title.strip_prefix("Page Load:").map(|t| t.trim().to_owned()))
        .or_else(|| page.map(|a| a.title.to_string()));
    let page_path = page
        .and_then(|a| reqwest::Url::parse(&a.canonical_url).ok())
        .map(|url| url.path().to_owned())
        .filter(|path| path != "/");
    let recent_actions = actions.iter().rev().take(RECENT_ACTIONS).map(|a| a.title.to_string()).collect();
    Query { text: words.to_owned(), page_title, page_path, recent_actions, trigger: None }
}

/// The articles a reply used, for the operators' note.
pub fn articles_line(hits: &[Hit]) -> Option<String> {
    if hits.is_empty() {
        return None;
    }
    let mut seen = Vec::new();
    for hit in hits {
        let entry = match &hit.link {
            Some(link) => format!("{} ({link})", hit.title),
            None => hit.title.clone(),
        };
        if !seen.contains(&entry) {
            seen.push(entry);
        }
    }
    Some(format!("Help center articles the bot used: {}", seen.join("; ")))
}

/// `webhook knowledge search|stats`: builds the index from the configured sources in a
/// folder of its own (it runs beside a running webhook), then searches it or prints its size.
pub async fn command(
    args: &KnowledgeArgs,
    data_dir: &Path,
    crisp: Option<&CrispSettings>,
    openai: &OpenAiArgs,
    action: &crate::config::KnowledgeCommand,
) -> i32 {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("error: {e}");
        plumbing::process::EXIT_CONFIG
    };
    let Ok(scratch) = tempfile::tempdir() else { return fail(&"cannot create a temporary folder") };
    let mut settings = match args.settings(data_dir) {
        Ok(Some(settings)) => settings,
        Ok(None) => return fail(&"no knowledge source: set KNOWLEDGE_DIR or KNOWLEDGE_CRISP_LOCALE"),
        Err(e) => return fail(&e),
    };
    settings.index_dir = scratch.path().join("index");
    let placeholder = CrispSettings {
        api_base_url: "https://api.crisp.chat/v1".into(),
        website_id: WebsiteId::parse("unused").expect("a plain id"),
        token_identifier: String::new(),
        token_key: SecretString::from(String::new()),
        tier: "plugin".into(),
    };
    if crisp.is_none() && !settings.crisp_locales.is_empty() {
        return fail(&"KNOWLEDGE_CRISP_LOCALE needs the Crisp settings (WEBSITE_ID, CRISP_TOKEN_*)");
    }
    let base = match KnowledgeBase::open(settings, crisp.unwrap_or(&placeholder), openai, Metrics::default()) {
        Ok(base) => base,
        Err(e) => return fail(&e),
    };
    let report = base.knowledge.refresh().await;
    for error in &report.errors {
        eprintln!("skipped: {error}");
    }
    match action {
        crate::config::KnowledgeCommand::Stats => {
            let stats = base.knowledge.stats();
            println!("documents: {}", stats.documents);
            println!("passages: {}", stats.passages);
            println!("index size: {} bytes", stats.index_bytes);
            println!(
                "sources refreshed: now (built for this command; the running webhook refreshes every {} s and on SIGHUP)",
                base.settings.refresh.as_secs()
            );
        }
        crate::config::KnowledgeCommand::Search { text, page, json } => {
            let mut query = Query::text(text.clone());
            if let Some(page) = page {
                query = query.on_page(page.clone(), None);
            }
            let hits = base.search(&query).await;
            if *json {
                let rows: Vec<serde_json::Value> = hits
                    .iter()
                    .map(|h| {
                        serde_json::json!({
                            "score": h.score, "title": h.title, "link": h.link,
                            "section": h.heading_path, "text": h.text,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else if hits.is_empty() {
                println!("no passage scores above the threshold: the bot would answer without articles");
            } else {
                for (n, hit) in hits.iter().enumerate() {
                    let excerpt: String = hit.text.chars().take(160).collect();
                    println!("{}. {:.3}  {} › {}", n + 1, hit.score, hit.title, hit.heading_path);
                    if let Some(link) = &hit.link {
                        println!("   {link}");
                    }
                    println!("   {}", excerpt.replace('\n', " "));
                }
            }
        }
    }
    0
}
