//! The Crisp helpdesk source against a loopback stand-in.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use knowledge::{HelpdeskClient, HelpdeskSettings, Knowledge, KnowledgeSettings, Query};
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Article {
    category: Option<&'static str>,
    title: String,
    content: String,
    published: bool,
}

#[derive(Default)]
struct Stand {
    articles: BTreeMap<String, Article>,
    failing: bool,
    calls: Vec<String>,
}

type Shared = Arc<Mutex<Stand>>;

fn ok(data: Value) -> Response {
    Json(json!({"error": false, "reason": "resolved", "data": data})).into_response()
}

fn guard(st: &Shared, headers: &HeaderMap, what: String) -> Option<Response> {
    let mut s = st.lock().unwrap();
    s.calls.push(what);
    // Basic "id:key" and the tier header, as every Crisp call.
    let auth_ok = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Basic aWQ6a2V5")
        && headers.get("x-crisp-tier").and_then(|v| v.to_str().ok()) == Some("plugin");
    if !auth_ok {
        return Some(
            (StatusCode::UNAUTHORIZED, Json(json!({"error": true, "reason": "unauthorized", "data": {}})))
                .into_response(),
        );
    }
    s.failing.then(|| {
        (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": true, "reason": "error", "data": {}}))).into_response()
    })
}

const PER_PAGE: usize = 2;

async fn tree_list(
    State(st): State<Shared>,
    headers: HeaderMap,
    Path((_w, locale, _t, page)): Path<(String, String, String, usize)>,
) -> Response {
    if let Some(r) = guard(&st, &headers, format!("tree/list/{locale}/{page}")) {
        return r;
    }
    let s = st.lock().unwrap();
    // Root entries: uncategorised articles and categories with their children.
    let mut roots: Vec<Value> = Vec::new();
    let mut cats: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for (slug, a) in &s.articles {
        let entry = json!({"type": "article", "slug": slug, "title": a.title, "state": {"published": a.published}, "children": []});
        match a.category {
            Some(c) => cats.entry(c).or_default().push(entry),
            None => roots.push(entry),
        }
    }
    for (c, children) in cats {
        roots.push(
            json!({"type": "category", "slug": c, "title": c, "state": {"published": true}, "children": children}),
        );
    }
    let items: Vec<Value> = roots.into_iter().skip((page - 1) * PER_PAGE).take(PER_PAGE).collect();
    ok(Value::Array(items))
}

async fn page_list(
    State(st): State<Shared>,
    headers: HeaderMap,
    Path((_w, _l, _t, page)): Path<(String, String, String, usize)>,
) -> Response {
    if let Some(r) = guard(&st, &headers, format!("page/list/{page}")) {
        return r;
    }
    let s = st.lock().unwrap();
    let items: Vec<Value> = s
        .articles
        .iter()
        .map(|(slug, a)| {
            let tp = match a.category {
                Some(c) => format!("{c}/{slug}"),
                None => slug.clone(),
            };
            json!({"entity_id": slug, "title": a.title, "tree_path": tp, "url": format!("https://help.example/{tp}")})
        })
        .skip((page - 1) * PER_PAGE)
        .take(PER_PAGE)
        .collect();
    ok(Value::Array(items))
}

async fn tree_content(
    State(st): State<Shared>,
    headers: HeaderMap,
    Path((_w, _l, _t, path)): Path<(String, String, String, String)>,
) -> Response {
    if let Some(r) = guard(&st, &headers, format!("tree/content/{path}")) {
        return r;
    }
    let s = st.lock().unwrap();
    let slug = path.rsplit('/').next().unwrap_or("");
    match s.articles.get(slug) {
        Some(a) if a.published => ok(json!({"content": a.content})),
        _ => (StatusCode::NOT_FOUND, Json(json!({"error": true, "reason": "not_found", "data": {}}))).into_response(),
    }
}

async fn legacy_list(
    State(st): State<Shared>,
    headers: HeaderMap,
    Path((_w, _l, page)): Path<(String, String, usize)>,
) -> Response {
    if let Some(r) = guard(&st, &headers, format!("legacy/list/{page}")) {
        return r;
    }
    let s = st.lock().unwrap();
    let items: Vec<Value> = s
        .articles
        .iter()
        .map(|(id, a)| json!({"article_id": id, "title": a.title, "status": if a.published { "published" } else { "draft" }, "url": format!("https://help.example/legacy/{id}")}))
        .skip((page - 1) * PER_PAGE)
        .take(PER_PAGE)
        .collect();
    ok(Value::Array(items))
}

async fn legacy_article(
    State(st): State<Shared>,
    headers: HeaderMap,
    Path((_w, _l, id)): Path<(String, String, String)>,
) -> Response {
    if let Some(r) = guard(&st, &headers, format!("legacy/article/{id}")) {
        return r;
    }
    let s = st.lock().unwrap();
    match s.articles.get(&id) {
        Some(a) => ok(json!({"article_id": id, "title": a.title, "content": a.content})),
        None => {
            (StatusCode::NOT_FOUND, Json(json!({"error": true, "reason": "not_found", "data": {}}))).into_response()
        }
    }
}

async fn serve(st: Shared, tree: bool) -> String {
    let mut app = Router::new()
        .route("/v1/website/{w}/helpdesk/locale/{l}/articles/{page}", get(legacy_list))
        .route("/v1/website/{w}/helpdesk/locale/{l}/article/{id}", get(legacy_article));
    if tree {
        app = app
            .route("/v1/website/{w}/helpdesk/tree/list/{l}/{t}/{page}", get(tree_list))
            .route("/v1/website/{w}/helpdesk/page/list/{l}/{t}/{page}", get(page_list))
            .route("/v1/website/{w}/helpdesk/tree/content/{l}/{t}/{*path}", get(tree_content));
    }
    let app = app.with_state(st);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn article(category: Option<&'static str>, title: &str, content: &str, published: bool) -> Article {
    Article { category, title: title.into(), content: content.into(), published }
}

fn stand() -> Shared {
    let mut s = Stand::default();
    s.articles.insert(
        "export-invoices".into(),
        article(
            Some("billing"),
            "Export invoices",
            "# Export invoices\n\nClick **Export** to get a CSV of your invoices.\n",
            true,
        ),
    );
    s.articles.insert(
        "payment-methods".into(),
        article(Some("billing"), "Payment methods", "We accept cards and SEPA debit.\n", true),
    );
    s.articles
        .insert("reset-password".into(), article(None, "Reset your password", "Use the forgot password link.\n", true));
    s.articles.insert("sso".into(), article(None, "Single sign-on", "SAML with Okta.\n", true));
    s.articles.insert("secret-roadmap".into(), article(None, "Roadmap draft", "Unpublished quokka plans.\n", false));
    Arc::new(Mutex::new(s))
}

async fn open(base: &str, index: &std::path::Path) -> Knowledge {
    let client = HelpdeskClient::new(HelpdeskSettings {
        base_url: base.to_owned(),
        website_id: "site-1".into(),
        token_identifier: "id".into(),
        token_key: "key".to_owned().into(),
        tier: "plugin".into(),
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let settings = KnowledgeSettings {
        crisp_locales: vec!["en".into()],
        index_dir: index.to_owned(),
        ..KnowledgeSettings::default()
    };
    Knowledge::open(settings, Some(client)).unwrap()
}

fn ids(kb: &Knowledge, text: &str) -> Vec<String> {
    kb.search_bm25(&Query::text(text)).into_iter().map(|h| h.article_id).collect()
}

#[tokio::test]
async fn tree_api_initial_change_delete_and_outage() {
    let st = stand();
    let base = serve(st.clone(), true).await;
    let index = tempfile::tempdir().unwrap();
    let kb = open(&base, index.path()).await;

    let r = kb.refresh().await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!((r.documents, r.added), (4, 4), "published articles only: {r:?}");
    let hits = kb.search_bm25(&Query::text("export invoices csv"));
    assert_eq!(hits[0].article_id, "crisp:en:billing/export-invoices");
    assert_eq!(hits[0].link.as_deref(), Some("https://help.example/billing/export-invoices"));
    assert_eq!(hits[0].title, "Export invoices");
    assert!(ids(&kb, "quokka").is_empty(), "drafts are not indexed");
    // Pagination went past the last page.
    assert!(st.lock().unwrap().calls.iter().any(|c| c == "tree/list/en/3"));

    // A changed article is re-indexed.
    st.lock().unwrap().articles.get_mut("sso").unwrap().content = "SAML with Azure AD and Okta.\n".into();
    let r = kb.refresh().await;
    assert_eq!((r.added, r.changed, r.removed), (0, 1, 0), "{r:?}");
    assert_eq!(ids(&kb, "azure"), vec!["crisp:en:sso"]);

    // A deleted one disappears.
    st.lock().unwrap().articles.remove("reset-password");
    let r = kb.refresh().await;
    assert_eq!((r.documents, r.removed), (3, 1), "{r:?}");
    assert!(ids(&kb, "forgot password").is_empty());

    // Crisp answers 500: the refresh reports it and the old index keeps serving.
    {
        let mut s = st.lock().unwrap();
        s.failing = true;
        s.articles.clear();
    }
    let r = kb.refresh().await;
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert!(r.errors[0].contains("500"), "{:?}", r.errors);
    assert_eq!((r.documents, r.removed), (3, 0));
    assert_eq!(ids(&kb, "azure"), vec!["crisp:en:sso"]);
    assert_eq!(kb.search_bm25(&Query::text("export invoices csv"))[0].article_id, "crisp:en:billing/export-invoices");
}

#[tokio::test]
async fn falls_back_to_the_older_api_on_404() {
    let st = stand();
    let base = serve(st.clone(), false).await;
    let index = tempfile::tempdir().unwrap();
    let kb = open(&base, index.path()).await;
    let r = kb.refresh().await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.documents, 4);
    let hits = kb.search_bm25(&Query::text("export invoices csv"));
    assert_eq!(hits[0].article_id, "crisp:en:export-invoices");
    assert_eq!(hits[0].link.as_deref(), Some("https://help.example/legacy/export-invoices"));
    assert!(ids(&kb, "quokka").is_empty());
    // The second refresh goes straight to the older API.
    st.lock().unwrap().calls.clear();
    kb.refresh().await;
    assert!(st.lock().unwrap().calls.iter().all(|c| c.starts_with("legacy/")));
}

#[tokio::test]
async fn sighup_style_notify_triggers_a_refresh() {
    let st = stand();
    let base = serve(st.clone(), true).await;
    let index = tempfile::tempdir().unwrap();
    let kb = open(&base, index.path()).await;
    let notify = Arc::new(tokio::sync::Notify::new());
    let task = kb.spawn_refresher(Duration::from_secs(3600), notify.clone(), |_| {});
    // The first refresh runs at once.
    for _ in 0..100 {
        if kb.stats().documents == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(kb.stats().documents, 4);
    st.lock().unwrap().articles.remove("sso");
    notify.notify_one();
    for _ in 0..100 {
        if kb.stats().documents == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(kb.stats().documents, 3);
    task.abort();
}
