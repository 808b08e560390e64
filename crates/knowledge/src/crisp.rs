//! Crisp helpdesk (knowledge base) client: lists a locale's published articles and fetches
//! their content, over the REST API v1 with the same authentication as the rest of the product
//! (`Authorization: Basic base64(identifier:key)` and `X-Crisp-Tier`).
//!
//! Two forms of the API exist:
//! - the current one (`tree`): `GET …/helpdesk/tree/list/{locale}/articles/{page}` lists entries
//!   `{type, slug, title, state{published}, children[]}`, `GET …/helpdesk/tree/content/{locale}/articles/{path}`
//!   gives `{content}`, and `GET …/helpdesk/page/list/{locale}/articles/{page}` gives each page's
//!   public `url` (by `tree_path`);
//! - the older one (`legacy`): `GET …/helpdesk/locale/{locale}/articles/{page}` lists
//!   `{article_id, title, status, url}` and `GET …/helpdesk/locale/{locale}/article/{article_id}`
//!   gives `{content, …}`.
//!
//! The client tries the current form first; a 404 on it makes it try the older one (and say so in
//! the log), and it remembers the form that answered. Lists are read page 1, 2, … until an empty
//! page. Only published articles are returned.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

/// Where and how to reach the helpdesk.
#[derive(Clone)]
pub struct HelpdeskSettings {
    /// API base, e.g. `https://api.crisp.chat` (with or without a trailing `/v1`).
    pub base_url: String,
    pub website_id: String,
    pub token_identifier: String,
    pub token_key: SecretString,
    /// `plugin` or `website`.
    pub tier: String,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for HelpdeskSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HelpdeskSettings")
            .field("base_url", &self.base_url)
            .field("website_id", &self.website_id)
            .field("tier", &self.tier)
            .finish_non_exhaustive()
    }
}

/// A helpdesk call that did not give a usable answer.
#[derive(Debug, thiserror::Error)]
pub enum HelpdeskError {
    #[error("bad helpdesk base URL")]
    BadBaseUrl,
    #[error("GET {path}: HTTP {status} ({reason})")]
    Status { path: String, status: u16, reason: String },
    #[error("GET {path}: {source}")]
    Transport { path: String, source: reqwest::Error },
    #[error("GET {path}: unexpected answer: {what}")]
    Decode { path: String, what: String },
    #[error("helpdesk {locale}: neither API form answered (current: {current}; older: {legacy})")]
    NoForm { locale: String, current: Box<HelpdeskError>, legacy: Box<HelpdeskError> },
}

impl HelpdeskError {
    fn is_not_found(&self) -> bool {
        matches!(self, Self::Status { status: 404, .. })
    }
}

/// One published article.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteArticle {
    /// Tree path (current form) or article id (older form).
    pub id: String,
    pub title: String,
    pub url: Option<String>,
    /// Markdown.
    pub content: String,
}

/// A locale's articles, and those whose content could not be fetched (id, error).
#[derive(Debug, Default)]
pub struct Listing {
    pub articles: Vec<RemoteArticle>,
    pub failed: Vec<(String, String)>,
}

const FORM_UNKNOWN: u8 = 0;
const FORM_TREE: u8 = 1;
const FORM_LEGACY: u8 = 2;
/// Safety bound on pagination.
const MAX_PAGES: u32 = 500;
/// Parallel content fetches.
const FETCH_CONCURRENCY: usize = 4;

/// Cheap to clone.
#[derive(Clone)]
pub struct HelpdeskClient {
    http: reqwest::Client,
    base: Url,
    settings: Arc<HelpdeskSettings>,
    form: Arc<AtomicU8>,
}

impl std::fmt::Debug for HelpdeskClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HelpdeskClient").field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

impl HelpdeskClient {
    pub fn new(settings: HelpdeskSettings) -> Result<Self, HelpdeskError> {
        let trimmed = settings.base_url.trim_end_matches('/');
        let trimmed = trimmed.strip_suffix("/v1").unwrap_or(trimmed);
        let base = Url::parse(trimmed).map_err(|_| HelpdeskError::BadBaseUrl)?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(HelpdeskError::BadBaseUrl);
        }
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .user_agent(concat!("crisp-agent-knowledge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HelpdeskError::Transport { path: String::new(), source: e })?;
        Ok(Self { http, base, settings: Arc::new(settings), form: Arc::new(AtomicU8::new(FORM_UNKNOWN)) })
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            let mut p = url.path_segments_mut().expect("checked base");
            p.pop_if_empty();
            p.extend(["v1", "website", self.settings.website_id.as_str(), "helpdesk"]);
            for s in segments {
                for part in s.split('/').filter(|p| !p.is_empty()) {
                    p.push(part);
                }
            }
        }
        url
    }

    /// GETs and unwraps `{error, reason, data}`.
    async fn get(&self, segments: &[&str]) -> Result<Value, HelpdeskError> {
        let url = self.url(segments);
        let path = url.path().to_owned();
        let resp = self
            .http
            .get(url)
            .basic_auth(&self.settings.token_identifier, Some(self.settings.token_key.expose_secret()))
            .header("X-Crisp-Tier", &self.settings.tier)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| HelpdeskError::Transport { path: path.clone(), source: e })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let reason = body.get("reason").and_then(Value::as_str).unwrap_or("").to_owned();
        if !status.is_success() || body.get("error").and_then(Value::as_bool) == Some(true) {
            let code = if status == StatusCode::OK { 500 } else { status.as_u16() };
            return Err(HelpdeskError::Status { path, status: code, reason });
        }
        body.get("data").cloned().ok_or(HelpdeskError::Decode { path, what: "no data".into() })
    }

    async fn list_pages(&self, prefix: &[&str]) -> Result<Vec<Value>, HelpdeskError> {
        let mut out = Vec::new();
        for page in 1..=MAX_PAGES {
            let n = page.to_string();
            let mut segs = prefix.to_vec();
            segs.push(&n);
            let data = self.get(&segs).await?;
            let items = match data {
                Value::Array(a) => a,
                Value::Object(ref o) => match o.values().find_map(|v| v.as_array()) {
                    Some(a) => a.clone(),
                    None => Vec::new(),
                },
                _ => Vec::new(),
            };
            if items.is_empty() {
                break;
            }
            out.extend(items);
        }
        Ok(out)
    }

    /// The published articles of `locale`, with their content.
    pub async fn fetch_articles(&self, locale: &str) -> Result<Listing, HelpdeskError> {
        match self.form.load(Ordering::Relaxed) {
            FORM_TREE => return self.fetch_tree(locale).await,
            FORM_LEGACY => return self.fetch_legacy(locale).await,
            _ => {}
        }
        match self.fetch_tree(locale).await {
            Ok(l) => {
                self.form.store(FORM_TREE, Ordering::Relaxed);
                Ok(l)
            }
            Err(current) if current.is_not_found() => {
                tracing::warn!(locale, error = %current, "helpdesk tree API answered 404; trying the older locale/articles API");
                match self.fetch_legacy(locale).await {
                    Ok(l) => {
                        tracing::info!(locale, "helpdesk answers the older locale/articles API; using it from now on");
                        self.form.store(FORM_LEGACY, Ordering::Relaxed);
                        Ok(l)
                    }
                    Err(legacy) => Err(HelpdeskError::NoForm {
                        locale: locale.to_owned(),
                        current: Box::new(current),
                        legacy: Box::new(legacy),
                    }),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn fetch_tree(&self, locale: &str) -> Result<Listing, HelpdeskError> {
        let entries = self.list_pages(&["tree", "list", locale, "articles"]).await?;
        let mut wanted = Vec::new();
        collect_tree(&entries, "", &mut wanted);
        // Public URLs by tree path; optional.
        let mut urls = std::collections::HashMap::new();
        match self.list_pages(&["page", "list", locale, "articles"]).await {
            Ok(pages) => {
                for p in pages {
                    if let (Some(tp), Some(url)) =
                        (p.get("tree_path").and_then(Value::as_str), p.get("url").and_then(Value::as_str))
                    {
                        urls.insert(tp.trim_matches('/').to_owned(), url.to_owned());
                    }
                }
            }
            Err(e) => tracing::debug!(locale, error = %e, "helpdesk page list unavailable; articles go without links"),
        }
        let locale_owned = locale.to_owned();
        let jobs: Vec<(String, String, Option<String>)> = wanted
            .into_iter()
            .map(|(path, title)| {
                let url = urls.get(&path).cloned();
                (path, title, url)
            })
            .collect();
        self.fetch_contents(jobs, move |c, path| {
            let locale = locale_owned.clone();
            async move { c.get(&["tree", "content", &locale, "articles", &path]).await }
        })
        .await
    }

    async fn fetch_legacy(&self, locale: &str) -> Result<Listing, HelpdeskError> {
        let items = self.list_pages(&["locale", locale, "articles"]).await?;
        let mut jobs = Vec::new();
        for a in items {
            let id = match a.get("article_id").or_else(|| a.get("id")) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => continue,
            };
            let published = match (a.get("status").and_then(Value::as_str), a.get("published").and_then(Value::as_bool))
            {
                (Some(s), _) => s == "published",
                (None, Some(b)) => b,
                (None, None) => true,
            };
            if !published {
                continue;
            }
            let title = a.get("title").and_then(Value::as_str).unwrap_or("").to_owned();
            let url = a.get("url").and_then(Value::as_str).map(str::to_owned);
            jobs.push((id, title, url));
        }
        let locale_owned = locale.to_owned();
        self.fetch_contents(jobs, move |c, id| {
            let locale = locale_owned.clone();
            async move { c.get(&["locale", &locale, "article", &id]).await }
        })
        .await
    }

    async fn fetch_contents<F, Fut>(
        &self,
        jobs: Vec<(String, String, Option<String>)>,
        get: F,
    ) -> Result<Listing, HelpdeskError>
    where
        F: Fn(HelpdeskClient, String) -> Fut,
        Fut: std::future::Future<Output = Result<Value, HelpdeskError>> + Send + 'static,
    {
        let mut listing = Listing::default();
        let mut set = tokio::task::JoinSet::new();
        let mut pending = jobs.into_iter();
        let mut spawn_next = |set: &mut tokio::task::JoinSet<_>| {
            if let Some((id, title, url)) = pending.next() {
                let fut = get(self.clone(), id.clone());
                set.spawn(async move { (id, title, url, fut.await) });
                true
            } else {
                false
            }
        };
        for _ in 0..FETCH_CONCURRENCY {
            if !spawn_next(&mut set) {
                break;
            }
        }
        while let Some(joined) = set.join_next().await {
            spawn_next(&mut set);
            let Ok((id, title, url, result)) = joined else { continue };
            match result {
                Ok(data) => {
                    let content = data.get("content").and_then(Value::as_str).unwrap_or("").to_owned();
                    let title = data
                        .get("title")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .filter(|t| !t.is_empty())
                        .unwrap_or(title);
                    let url = data.get("url").and_then(Value::as_str).map(str::to_owned).or(url);
                    listing.articles.push(RemoteArticle { id, title, url, content });
                }
                Err(e) => {
                    tracing::warn!(article = %id, error = %e, "helpdesk article content unavailable; keeping its last indexed version");
                    listing.failed.push((id, e.to_string()));
                }
            }
        }
        listing.articles.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(listing)
    }
}

/// Published leaves of the tree, as `(path, title)`.
fn collect_tree(entries: &[Value], prefix: &str, out: &mut Vec<(String, String)>) {
    for e in entries {
        let Some(slug) = e.get("slug").and_then(Value::as_str).filter(|s| !s.is_empty()) else { continue };
        let path = if prefix.is_empty() { slug.to_owned() } else { format!("{prefix}/{slug}") };
        let children = e.get("children").and_then(Value::as_array).filter(|c| !c.is_empty());
        if let Some(children) = children {
            collect_tree(children, &path, out);
        }
        let kind = e.get("type").and_then(Value::as_str).unwrap_or("article");
        let container = matches!(kind, "category" | "section" | "folder" | "directory");
        let published = e.get("state").and_then(|s| s.get("published")).and_then(Value::as_bool).unwrap_or(false);
        if !container && published {
            let title = e.get("title").and_then(Value::as_str).unwrap_or(slug).to_owned();
            out.push((path, title));
        }
    }
}
