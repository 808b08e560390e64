//! The tantivy index, refreshes and search.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query as TQuery, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value};
use tantivy::tokenizer::{LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term, doc};
use tokio::sync::Notify;

use crate::crisp::HelpdeskClient;
use crate::doc::{Document, Passage, markdown_to_text};
use crate::embed::{EmbeddingClient, VectorStore, rrf};
use crate::settings::KnowledgeSettings;
use crate::source::{FILE_PREFIX, scan_folder};
use crate::{Hit, Query, RefreshReport, Stats};

/// Weight of the page clauses on a passage's title (heading path: 0.75 × this). Activity
/// clauses get half of it. See the crate docs.
pub const PAGE_BOOST: f32 = 1.0;
/// Most distinct context terms (page, then activity) added to a query.
pub const MAX_CONTEXT_TERMS: usize = 16;
/// Most passages of one article in one result list.
pub const MAX_PER_ARTICLE: usize = 2;

const TITLE_BOOST: f32 = 2.0;
const HEADING_BOOST: f32 = 1.5;
const BODY_BOOST: f32 = 1.0;
/// Candidates taken from each ranking before capping / fusion.
const CANDIDATES: usize = 50;
const MANIFEST_FORMAT: u32 = 1;
const ANALYZER: &str = "kb";
const WRITER_HEAP: usize = 30_000_000;

#[derive(Debug, thiserror::Error)]
pub enum KnowledgeError {
    #[error("knowledge index folder {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("knowledge index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("KNOWLEDGE_CRISP_LOCALE is set but no Crisp helpdesk client was given")]
    NoCrispClient,
    #[error("EMBEDDING_MODEL is set but no embeddings endpoint was given")]
    NoEmbedder,
}

#[derive(Clone, Copy)]
struct Fields {
    pkey: Field,
    article: Field,
    title: Field,
    heading: Field,
    body: Field,
    link: Field,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DocEntry {
    hash: String,
    passages: Vec<String>,
    /// False when its passages still lack vectors (the embeddings call failed): re-done next time.
    #[serde(default = "yes")]
    embedded: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    language: String,
    docs: BTreeMap<String, DocEntry>,
    last_refresh: Option<u64>,
}

struct Inner {
    settings: KnowledgeSettings,
    crisp: Option<HelpdeskClient>,
    embedder: Option<EmbeddingClient>,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
    analyzer: TextAnalyzer,
    manifest: Mutex<Manifest>,
    vectors: RwLock<Arc<VectorStore>>,
    refresh_lock: tokio::sync::Mutex<()>,
}

/// The knowledge base: cheap to clone, shared by the webhook's handlers and the refresher.
#[derive(Clone)]
pub struct Knowledge {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Knowledge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Knowledge").field("index_dir", &self.inner.settings.index_dir).finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KnowledgeError + '_ {
    move |source| KnowledgeError::Io { path: path.to_owned(), source }
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        .set_stored();
    let fields = Fields {
        pkey: b.add_text_field("pkey", STRING | STORED),
        article: b.add_text_field("article", STRING | STORED),
        title: b.add_text_field("title", text.clone()),
        heading: b.add_text_field("heading", text.clone()),
        body: b.add_text_field("body", text),
        link: b.add_text_field("link", STORED),
    };
    (b.build(), fields)
}

fn analyzer(settings: &KnowledgeSettings) -> TextAnalyzer {
    let lang = settings.language.tantivy();
    let builder = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .dynamic();
    let builder = match StopWordFilter::new(lang) {
        Some(stop) => builder.filter_dynamic(stop),
        None => builder,
    };
    builder.filter_dynamic(Stemmer::new(lang)).build()
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}

impl Knowledge {
    /// Opens (or creates) the index under `settings.index_dir`, BM25 only. Serves what the last
    /// run indexed until the first [`refresh`](Self::refresh).
    pub fn open(settings: KnowledgeSettings, crisp: Option<HelpdeskClient>) -> Result<Self, KnowledgeError> {
        if settings.embedding_model.is_some() {
            return Err(KnowledgeError::NoEmbedder);
        }
        Self::open_with(settings, crisp, None)
    }

    /// Like [`open`](Self::open), with hybrid search when `embedder` is given.
    pub fn open_with(
        settings: KnowledgeSettings,
        crisp: Option<HelpdeskClient>,
        embedder: Option<EmbeddingClient>,
    ) -> Result<Self, KnowledgeError> {
        if !settings.crisp_locales.is_empty() && crisp.is_none() {
            return Err(KnowledgeError::NoCrispClient);
        }
        let root = settings.index_dir.clone();
        std::fs::create_dir_all(&root).map_err(io_err(&root))?;
        let manifest_path = root.join("manifest.json");
        let tantivy_dir = root.join("tantivy");
        let (schema, fields) = schema();
        let mut manifest: Manifest =
            std::fs::read(&manifest_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let compatible = manifest.format == MANIFEST_FORMAT && manifest.language == settings.language.code();
        let opened = if compatible && tantivy_dir.join("meta.json").exists() {
            match Index::open_in_dir(&tantivy_dir) {
                Ok(i) if i.schema() == schema => Some(i),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "knowledge index unreadable; rebuilding it");
                    None
                }
            }
        } else {
            None
        };
        let index = match opened {
            Some(i) => i,
            None => {
                if tantivy_dir.exists() {
                    std::fs::remove_dir_all(&tantivy_dir).map_err(io_err(&tantivy_dir))?;
                }
                std::fs::create_dir_all(&tantivy_dir).map_err(io_err(&tantivy_dir))?;
                manifest = Manifest {
                    format: MANIFEST_FORMAT,
                    language: settings.language.code().to_owned(),
                    ..Manifest::default()
                };
                let _ = std::fs::remove_file(root.join("vectors.bin"));
                Index::create_in_dir(&tantivy_dir, schema)?
            }
        };
        let analyzer = analyzer(&settings);
        index.tokenizers().register(ANALYZER, analyzer.clone());
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        let writer = index.writer_with_num_threads(1, WRITER_HEAP)?;
        let vectors = match (&embedder, VectorStore::load(&root.join("vectors.bin"))) {
            (Some(_), Ok(v)) => v,
            _ => VectorStore::default(),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                crisp,
                embedder,
                reader,
                writer: Mutex::new(writer),
                fields,
                analyzer,
                manifest: Mutex::new(manifest),
                vectors: RwLock::new(Arc::new(vectors)),
                refresh_lock: tokio::sync::Mutex::new(()),
            }),
        })
    }

    pub fn settings(&self) -> &KnowledgeSettings {
        &self.inner.settings
    }

    /// Re-reads the sources and re-indexes what changed. Never fails: what could not be read is
    /// in [`RefreshReport::errors`] and keeps its last indexed version.
    pub async fn refresh(&self) -> RefreshReport {
        let inner = &self.inner;
        let _guard = inner.refresh_lock.lock().await;
        let mut report = RefreshReport::default();
        let mut fresh: Vec<Document> = Vec::new();
        let mut keep_ids: HashSet<String> = HashSet::new();
        let mut keep_prefixes: Vec<String> = Vec::new();

        if let Some(dir) = inner.settings.dir.clone() {
            let shown = dir.display().to_string();
            match tokio::task::spawn_blocking(move || scan_folder(&dir)).await {
                Ok(Ok((docs, failed))) => {
                    fresh.extend(docs);
                    for (id, e) in failed {
                        report.errors.push(format!("{id}: {e}"));
                        keep_ids.insert(id);
                    }
                }
                Ok(Err(e)) => {
                    tracing::error!(dir = %shown, error = %e, "knowledge folder unreadable; keeping its indexed articles");
                    report.errors.push(format!("folder {shown}: {e}"));
                    keep_prefixes.push(FILE_PREFIX.to_owned());
                }
                Err(e) => {
                    report.errors.push(format!("folder {shown}: {e}"));
                    keep_prefixes.push(FILE_PREFIX.to_owned());
                }
            }
        }
        if let Some(client) = &inner.crisp {
            for locale in &inner.settings.crisp_locales {
                let prefix = format!("crisp:{locale}:");
                match client.fetch_articles(locale).await {
                    Ok(listing) => {
                        for a in listing.articles {
                            let body = markdown_to_text(&a.content);
                            fresh.push(Document::new(format!("{prefix}{}", a.id), a.title, a.url, body));
                        }
                        for (id, e) in listing.failed {
                            report.errors.push(format!("crisp {locale} {id}: {e}"));
                            keep_ids.insert(format!("{prefix}{id}"));
                        }
                    }
                    Err(e) => {
                        tracing::error!(locale, error = %e, "Crisp helpdesk unavailable; keeping its indexed articles");
                        report.errors.push(format!("crisp {locale}: {e}"));
                        keep_prefixes.push(prefix);
                    }
                }
            }
        }

        // Diff against what is indexed.
        let previous = inner.manifest.lock().expect("manifest lock").clone();
        let mut seen: HashSet<String> = HashSet::new();
        let mut upserts: Vec<(Document, Vec<Passage>)> = Vec::new();
        for d in fresh {
            if !seen.insert(d.id.clone()) {
                continue;
            }
            match previous.docs.get(&d.id) {
                Some(e) if e.hash == d.hash && e.embedded => {}
                Some(_) => {
                    report.changed += 1;
                    let p = d.passages();
                    upserts.push((d, p));
                }
                None => {
                    report.added += 1;
                    let p = d.passages();
                    upserts.push((d, p));
                }
            }
        }
        let removed: Vec<String> = previous
            .docs
            .keys()
            .filter(|id| {
                !seen.contains(*id)
                    && !keep_ids.contains(*id)
                    && !keep_prefixes.iter().any(|p| id.starts_with(p.as_str()))
            })
            .cloned()
            .collect();
        report.removed = removed.len();

        // Embeddings of the new passages.
        let old_vectors = inner.vectors.read().expect("vectors lock").clone();
        let mut new_vectors: HashMap<String, Vec<f32>> = HashMap::new();
        let mut not_embedded: HashSet<String> = HashSet::new();
        if let Some(emb) = &inner.embedder {
            let mut keys = Vec::new();
            let mut texts = Vec::new();
            let mut owner = Vec::new();
            for (d, ps) in &upserts {
                for p in ps {
                    let k = p.key();
                    if !old_vectors.vectors.contains_key(&k) {
                        keys.push(k);
                        texts.push(format!("{}\n{}", p.heading_path_string(), p.text));
                        owner.push(d.id.clone());
                    }
                }
            }
            if !texts.is_empty() {
                match emb.embed(&texts).await {
                    Ok(vs) => new_vectors.extend(keys.into_iter().zip(vs)),
                    Err(e) => {
                        tracing::error!(error = %e, "embeddings unavailable; those passages are BM25-only until the next refresh");
                        report.errors.push(e.to_string());
                        not_embedded.extend(owner);
                    }
                }
            }
        }

        if !upserts.is_empty() || !removed.is_empty() {
            let this = self.clone();
            let docs: Vec<(String, Vec<Passage>)> = upserts.iter().map(|(d, p)| (d.id.clone(), p.clone())).collect();
            let to_delete = removed.clone();
            let applied = tokio::task::spawn_blocking(move || this.apply(&to_delete, &docs)).await;
            match applied {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "knowledge index commit failed; the previous index keeps serving");
                    report.errors.push(format!("index: {e}"));
                    return self.finish_report(report, false);
                }
                Err(e) => {
                    report.errors.push(format!("index: {e}"));
                    return self.finish_report(report, false);
                }
            }
        }

        // Record the new state.
        let mut m = previous;
        for id in &removed {
            m.docs.remove(id);
        }
        for (d, ps) in &upserts {
            m.docs.insert(
                d.id.clone(),
                DocEntry {
                    hash: d.hash.clone(),
                    passages: ps.iter().map(Passage::key).collect(),
                    embedded: !not_embedded.contains(&d.id),
                },
            );
        }
        m.last_refresh = SystemTime::now().duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs());
        if inner.embedder.is_some() && (!new_vectors.is_empty() || !removed.is_empty() || !upserts.is_empty()) {
            let live: HashSet<&String> = m.docs.values().flat_map(|e| e.passages.iter()).collect();
            let mut store = VectorStore { dim: old_vectors.dim, vectors: HashMap::new() };
            for (k, v) in old_vectors.vectors.iter().chain(new_vectors.iter()) {
                if live.contains(k) {
                    if store.dim == 0 {
                        store.dim = v.len();
                    }
                    if v.len() == store.dim {
                        store.vectors.insert(k.clone(), v.clone());
                    }
                }
            }
            if let Err(e) = store.save(&inner.settings.index_dir.join("vectors.bin")) {
                tracing::warn!(error = %e, "vector file not saved");
            }
            *inner.vectors.write().expect("vectors lock") = Arc::new(store);
        }
        match serde_json::to_vec(&m) {
            Ok(bytes) => {
                if let Err(e) = write_atomic(&inner.settings.index_dir.join("manifest.json"), &bytes) {
                    tracing::warn!(error = %e, "knowledge manifest not saved");
                }
            }
            Err(e) => tracing::warn!(error = %e, "knowledge manifest not encoded"),
        }
        *inner.manifest.lock().expect("manifest lock") = m;
        self.finish_report(report, true)
    }

    fn finish_report(&self, mut report: RefreshReport, applied: bool) -> RefreshReport {
        let m = self.inner.manifest.lock().expect("manifest lock");
        report.documents = m.docs.len();
        report.passages = m.docs.values().map(|e| e.passages.len()).sum();
        if !applied {
            report.added = 0;
            report.changed = 0;
            report.removed = 0;
        }
        tracing::info!(
            documents = report.documents,
            passages = report.passages,
            added = report.added,
            changed = report.changed,
            removed = report.removed,
            errors = report.errors.len(),
            "knowledge refreshed"
        );
        report
    }

    /// Deletes and (re-)adds articles, commits, and swaps the readers onto the new generation.
    fn apply(&self, removed: &[String], docs: &[(String, Vec<Passage>)]) -> Result<(), tantivy::TantivyError> {
        let f = self.inner.fields;
        let mut w = self.inner.writer.lock().expect("writer lock");
        let result = (|| {
            for id in removed.iter().chain(docs.iter().map(|(id, _)| id)) {
                w.delete_term(Term::from_field_text(f.article, id));
            }
            for (_, passages) in docs {
                for p in passages {
                    let mut d = doc!(
                        f.pkey => p.key(),
                        f.article => p.article_id.clone(),
                        f.title => p.title.clone(),
                        f.heading => p.heading_path_string(),
                        f.body => p.text.clone(),
                    );
                    if let Some(link) = &p.link {
                        d.add_text(f.link, link);
                    }
                    w.add_document(d)?;
                }
            }
            w.commit()?;
            Ok(())
        })();
        if result.is_err() {
            let _ = w.rollback();
            return result;
        }
        drop(w);
        self.inner.reader.reload()
    }

    /// Size and age of the index.
    pub fn stats(&self) -> Stats {
        let m = self.inner.manifest.lock().expect("manifest lock");
        Stats {
            documents: m.docs.len(),
            passages: m.docs.values().map(|e| e.passages.len()).sum(),
            index_bytes: dir_size(&self.inner.settings.index_dir),
            last_refresh: m.last_refresh.map(|s| UNIX_EPOCH + Duration::from_secs(s)),
        }
    }

    /// Runs [`refresh`](Self::refresh) now, then every `every` and whenever `notify` is notified
    /// (the webhook notifies it on SIGHUP), handing each report to `on_refresh` (logs, metrics).
    /// Stops when the returned handle is aborted.
    pub fn spawn_refresher(
        &self,
        every: Duration,
        notify: Arc<Notify>,
        mut on_refresh: impl FnMut(&RefreshReport) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let report = this.refresh().await;
                if !report.errors.is_empty() {
                    tracing::warn!(errors = ?report.errors, "knowledge refresh skipped some sources; the rest (and the last good index) keeps serving");
                }
                on_refresh(&report);
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = notify.notified() => tracing::info!("knowledge refresh requested"),
                }
            }
        })
    }

    fn terms(&self, text: &str) -> Vec<String> {
        let mut analyzer = self.inner.analyzer.clone();
        let mut stream = analyzer.token_stream(text);
        let mut out: Vec<String> = Vec::new();
        while stream.advance() {
            let t = stream.token().text.clone();
            if !out.contains(&t) {
                out.push(t);
            }
        }
        out
    }

    /// The BM25 query of the visitor-aware rule (see the crate docs).
    fn build_query(&self, q: &Query) -> Option<BooleanQuery> {
        let f = self.inner.fields;
        let mut clauses: Vec<(Occur, Box<dyn TQuery>)> = Vec::new();
        let term_q = |field: Field, t: &str, boost: f32| -> (Occur, Box<dyn TQuery>) {
            let tq = TermQuery::new(Term::from_field_text(field, t), IndexRecordOption::WithFreqs);
            (Occur::Should, Box::new(BoostQuery::new(Box::new(tq), boost)))
        };
        let main = self.terms(&q.text);
        for t in &main {
            clauses.push(term_q(f.title, t, TITLE_BOOST));
            clauses.push(term_q(f.heading, t, HEADING_BOOST));
            clauses.push(term_q(f.body, t, BODY_BOOST));
        }
        let mut context: Vec<(String, f32)> = Vec::new();
        let add = |text: &str, weight: f32, context: &mut Vec<(String, f32)>| {
            for t in self.terms(text) {
                if context.len() < MAX_CONTEXT_TERMS && !context.iter().any(|(c, _)| *c == t) {
                    context.push((t, weight));
                }
            }
        };
        if let Some(title) = &q.page_title {
            add(title, PAGE_BOOST, &mut context);
        }
        if let Some(path) = &q.page_path {
            add(&path_words(path), PAGE_BOOST, &mut context);
        }
        for a in &q.recent_actions {
            add(a, PAGE_BOOST / 2.0, &mut context);
        }
        if let Some(t) = &q.trigger {
            add(&t.replace(['_', '-'], " "), PAGE_BOOST / 2.0, &mut context);
        }
        for (t, w) in &context {
            clauses.push(term_q(f.title, t, *w));
            clauses.push(term_q(f.heading, t, *w * 0.75));
        }
        (!clauses.is_empty()).then(|| BooleanQuery::new(clauses))
    }

    fn hit_of(&self, d: &TantivyDocument, score: f32) -> (String, Hit) {
        let f = self.inner.fields;
        let s = |field: Field| d.get_first(field).and_then(|v| v.as_str()).unwrap_or("").to_owned();
        let link = s(f.link);
        (
            s(f.pkey),
            Hit {
                article_id: s(f.article),
                title: s(f.title),
                link: (!link.is_empty()).then_some(link),
                heading_path: s(f.heading),
                text: s(f.body),
                score,
            },
        )
    }

    fn bm25_candidates(&self, q: &Query, limit: usize) -> Vec<(String, Hit)> {
        let Some(query) = self.build_query(q) else { return Vec::new() };
        let searcher = self.inner.reader.searcher();
        let top = match searcher.search(&query, &TopDocs::with_limit(limit)) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "knowledge search failed");
                return Vec::new();
            }
        };
        top.into_iter()
            .filter(|(score, _)| *score >= self.inner.settings.min_score)
            .filter_map(|(score, addr)| searcher.doc::<TantivyDocument>(addr).ok().map(|d| self.hit_of(&d, score)))
            .collect()
    }

    fn cap(&self, hits: impl IntoIterator<Item = Hit>) -> Vec<Hit> {
        let mut per: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::new();
        for h in hits {
            let n = per.entry(h.article_id.clone()).or_default();
            if *n >= MAX_PER_ARTICLE {
                continue;
            }
            *n += 1;
            out.push(h);
            if out.len() >= self.inner.settings.top_k {
                break;
            }
        }
        out
    }

    /// BM25 with the visitor-aware boost, no embeddings.
    pub fn search_bm25(&self, q: &Query) -> Vec<Hit> {
        self.cap(self.bm25_candidates(q, CANDIDATES).into_iter().map(|(_, h)| h))
    }

    /// The best passages for `q` (at most `top_k`): hybrid when an embedder is configured,
    /// BM25 otherwise.
    pub async fn search(&self, q: &Query) -> Vec<Hit> {
        let bm = self.bm25_candidates(q, CANDIDATES);
        let Some(emb) = &self.inner.embedder else { return self.cap(bm.into_iter().map(|(_, h)| h)) };
        let store = self.inner.vectors.read().expect("vectors lock").clone();
        if store.vectors.is_empty() || q.text.trim().is_empty() {
            return self.cap(bm.into_iter().map(|(_, h)| h));
        }
        let qv = match emb.embed(std::slice::from_ref(&q.text)).await {
            Ok(mut v) if !v.is_empty() => v.remove(0),
            Ok(_) => return self.cap(bm.into_iter().map(|(_, h)| h)),
            Err(e) => {
                tracing::warn!(error = %e, "query embedding failed; BM25 only");
                return self.cap(bm.into_iter().map(|(_, h)| h));
            }
        };
        let near: Vec<String> = store.nearest(&qv, CANDIDATES).into_iter().map(|(k, _)| k).collect();
        let bm_keys: Vec<String> = bm.iter().map(|(k, _)| k.clone()).collect();
        let fused = rrf(&[&bm_keys, &near]);
        let mut by_key: HashMap<String, Hit> = bm.into_iter().collect();
        let searcher = self.inner.reader.searcher();
        let mut hits = Vec::new();
        for (key, score) in fused {
            let hit = match by_key.remove(key) {
                Some(h) => Some(h),
                None => {
                    let tq =
                        TermQuery::new(Term::from_field_text(self.inner.fields.pkey, key), IndexRecordOption::Basic);
                    searcher
                        .search(&tq, &TopDocs::with_limit(1))
                        .ok()
                        .and_then(|t| t.into_iter().next())
                        .and_then(|(_, addr)| searcher.doc::<TantivyDocument>(addr).ok())
                        .map(|d| self.hit_of(&d, 0.0).1)
                }
            };
            if let Some(mut h) = hit {
                h.score = score;
                hits.push(h);
            }
        }
        self.cap(hits)
    }

    /// Number of passages the searchers currently see (the committed generation).
    pub fn searchable_passages(&self) -> u64 {
        self.inner.reader.searcher().num_docs()
    }
}

/// `/settings/billing/invoices?tab=2` → `settings billing invoices tab`; segments holding digits
/// (ids) are dropped.
fn path_words(path: &str) -> String {
    path.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 1 && !w.chars().any(|c| c.is_ascii_digit()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::path_words;

    #[test]
    fn path_words_drop_ids() {
        assert_eq!(path_words("/settings/billing/invoices/4f3a9?tab=2"), "settings billing invoices tab");
        assert_eq!(path_words("/team-members/invite_new"), "team members invite new");
    }
}
