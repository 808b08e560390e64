//! Help-center knowledge for the support agent.
//!
//! Sources ([`KnowledgeSettings`]): a folder of Markdown (`.md`, `.markdown`), HTML (`.html`,
//! `.htm`) and text (`.txt`) files, sub-folders included, and/or the Crisp helpdesk of one or
//! more locales ([`HelpdeskClient`]). Each article is cut into passages at its headings
//! ([`Passage`]); a passage knows its article, title, link and heading path
//! (`Billing › Export invoices`).
//!
//! Passages are indexed with tantivy (BM25; analyzer: lower case, stop words and a stemmer of the
//! configured [`Language`], English by default) under `index_dir`. [`Knowledge::refresh`]
//! re-reads the sources and re-indexes only articles whose content hash changed; an unreadable
//! file, a failing Crisp call or a failing commit is logged and reported, never fatal, and the
//! articles it concerns keep their last indexed version. Searches read a snapshot of the last
//! committed generation: a refresh builds the next one and swaps it in atomically.
//!
//! # The visitor-aware boost
//!
//! [`Knowledge::search`] scores each passage with one BM25 query made of optional clauses:
//!
//! 1. **Question** — every term of [`Query::text`] (the visitor's message and a short window of
//!    the conversation), on the passage's title (×2), heading path (×1.5) and text (×1).
//! 2. **Page** — every term of [`Query::page_title`] and of [`Query::page_path`] (split at `/`,
//!    `-`, `_`, `?`, …; segments holding digits, i.e. ids, dropped), on the title and heading
//!    path only, with weight [`PAGE_BOOST`] (title) and 0.75 × that (heading path).
//! 3. **Activity** — every term of the recent action titles ([`Query::recent_actions`]) and of the
//!    proactive [`Query::trigger`], likewise on title and heading path, at half the page weight.
//!
//! The page and activity clauses go only on titles and headings, so they decide between articles
//! *about* that page when the question alone cannot ("how do I change this?" on *Billing
//! settings* finds the billing article), while a precise question — whose terms also match the
//! text and whose title match is worth twice as much — still finds its own article whatever page
//! the visitor is on. Context clauses are deduplicated and capped ([`MAX_CONTEXT_TERMS`]) so a
//! long activity list cannot drown the question. At most [`MAX_PER_ARTICLE`] passages of one
//! article are returned, best first; passages under [`KnowledgeSettings::min_score`] are dropped.
//!
//! # Hybrid search
//!
//! With an [`EmbeddingClient`] (set `EMBEDDING_MODEL`), each passage is embedded at indexing time
//! (vectors in a flat file beside the index, keyed by passage content) and the question is
//! embedded at search time; the BM25 list (with the boosts above) and the nearest-vector list are
//! fused by reciprocal rank fusion (k = 60). If the embeddings call fails, search falls back to
//! BM25 and says so in the log.
//!
//! # For the prompt
//!
//! [`format_passages`] puts each hit inside `<article title=… url=… section=…>…</article>` with
//! its text escaped, so an article cannot close its delimiter or inject structure, and bounds the
//! whole to a number of characters.

pub mod crisp;
pub mod doc;
pub mod embed;
pub mod format;
mod index;
pub mod settings;
pub mod source;

pub use crisp::{HelpdeskClient, HelpdeskError, HelpdeskSettings, RemoteArticle};
pub use doc::{Document, Format, Passage};
pub use embed::{EmbedError, EmbeddingClient, RRF_K};
pub use format::format_passages;
pub use index::{Knowledge, KnowledgeError, MAX_CONTEXT_TERMS, MAX_PER_ARTICLE, PAGE_BOOST};
pub use settings::{KnowledgeSettings, Language, SettingsError};

use std::time::SystemTime;

/// What to search for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// The visitor's message and a short window of the conversation.
    pub text: String,
    /// Title of the page the visitor is on.
    pub page_title: Option<String>,
    /// Path of that page (`/settings/billing`).
    pub page_path: Option<String>,
    /// Titles of the visitor's recent actions, most recent first.
    pub recent_actions: Vec<String>,
    /// Name of the proactive trigger that fired, if any.
    pub trigger: Option<String>,
}

impl Query {
    /// A query with the question only.
    pub fn text(text: impl Into<String>) -> Self {
        Self { text: text.into(), ..Self::default() }
    }

    /// Adds the visitor's page.
    pub fn on_page(mut self, title: impl Into<String>, path: Option<&str>) -> Self {
        self.page_title = Some(title.into());
        self.page_path = path.map(str::to_owned);
        self
    }
}

/// One passage found.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub article_id: String,
    pub title: String,
    pub link: Option<String>,
    /// `Billing › Export invoices`.
    pub heading_path: String,
    pub text: String,
    /// BM25 score, or the fused RRF score in hybrid search.
    pub score: f32,
}

/// What a refresh did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RefreshReport {
    /// Articles in the index after the refresh.
    pub documents: usize,
    /// Passages in the index after the refresh.
    pub passages: usize,
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    /// Sources, files or articles skipped this time (they keep their last indexed version).
    pub errors: Vec<String>,
}

/// Size and age of the index.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub documents: usize,
    pub passages: usize,
    /// Bytes on disk under `index_dir`.
    pub index_bytes: u64,
    pub last_refresh: Option<SystemTime>,
}
