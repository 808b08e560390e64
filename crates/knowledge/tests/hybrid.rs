//! Hybrid search: BM25 fused with embeddings (RRF, k = 60) from a loopback stand-in of an
//! OpenAI-compatible `/v1/embeddings` endpoint returning deterministic vectors.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use knowledge::{EmbeddingClient, Knowledge, KnowledgeSettings, Query, RRF_K};
use serde_json::{Value, json};

/// One dimension per concept; a text's vector counts the concept words it holds.
const CONCEPTS: [&[&str]; 4] = [
    &["refund", "refunds", "money", "reimburse", "back"],
    &["password", "login", "log", "credentials"],
    &["invoice", "invoices", "export", "csv"],
    &["team", "member", "members", "invite", "colleague"],
];

fn vector(text: &str) -> Vec<f32> {
    let mut v = vec![0.01f32; CONCEPTS.len()];
    for w in text.to_lowercase().split(|c: char| !c.is_alphanumeric()) {
        for (i, words) in CONCEPTS.iter().enumerate() {
            if words.contains(&w) {
                v[i] += 1.0;
            }
        }
    }
    v
}

#[derive(Default)]
struct Stand {
    inputs: AtomicUsize,
    failing: AtomicBool,
}

async fn embeddings(State(st): State<Arc<Stand>>, headers: axum::http::HeaderMap, Json(body): Json<Value>) -> Response {
    if st.failing.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    assert_eq!(headers.get("authorization").unwrap(), "Bearer sk-test");
    assert_eq!(body["model"], "stand-in-embed");
    let inputs: Vec<String> = serde_json::from_value(body["input"].clone()).unwrap();
    st.inputs.fetch_add(inputs.len(), Ordering::SeqCst);
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": vector(t)}))
        .collect();
    Json(json!({"object": "list", "data": data, "model": "stand-in-embed"})).into_response()
}

#[tokio::test]
async fn fusion_finds_by_meaning_and_falls_back_to_bm25() {
    let st = Arc::new(Stand::default());
    let app = Router::new().route("/v1/embeddings", post(embeddings)).with_state(st.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let docs = tempfile::tempdir().unwrap();
    let index = tempfile::tempdir().unwrap();
    std::fs::write(docs.path().join("refunds.md"), "# Refund policy\n\nAnnual plans are refunded within 14 days.\n")
        .unwrap();
    std::fs::write(docs.path().join("password.md"), "# Reset your password\n\nUse the forgot password link.\n")
        .unwrap();
    std::fs::write(docs.path().join("invoices.md"), "# Export invoices\n\nDownload a CSV of all invoices.\n").unwrap();
    std::fs::write(docs.path().join("team.md"), "# Team members\n\nInvite a colleague by email.\n").unwrap();

    let settings = KnowledgeSettings {
        dir: Some(docs.path().to_owned()),
        index_dir: index.path().to_owned(),
        embedding_model: Some("stand-in-embed".into()),
        ..KnowledgeSettings::default()
    };
    assert!(Knowledge::open(settings.clone(), None).is_err(), "a model without an endpoint is refused");
    let embedder =
        EmbeddingClient::new(&format!("http://{addr}/v1"), Some("sk-test".to_owned().into()), "stand-in-embed")
            .unwrap();
    let kb = Knowledge::open_with(settings.clone(), None, Some(embedder.clone())).unwrap();
    let r = kb.refresh().await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(st.inputs.load(Ordering::SeqCst), 4, "one input per passage");
    assert!(index.path().join("vectors.bin").exists());

    // No shared word: BM25 finds nothing, the vectors find the refund article.
    let q = Query::text("I want my money back");
    assert!(kb.search_bm25(&q).is_empty());
    let hits = kb.search(&q).await;
    assert_eq!(hits[0].article_id, "file:refunds.md");

    // Both rankings agree: rank 1 in each gives 2 / (k + 1).
    let hits = kb.search(&Query::text("export invoices csv")).await;
    assert_eq!(hits[0].article_id, "file:invoices.md");
    assert!((hits[0].score - 2.0 / (RRF_K + 1.0)).abs() < 1e-6, "{}", hits[0].score);

    // Unchanged passages are not embedded again; the vectors survive a reopen.
    let before = st.inputs.load(Ordering::SeqCst);
    kb.refresh().await;
    assert_eq!(st.inputs.load(Ordering::SeqCst), before);
    drop(kb);
    let kb = Knowledge::open_with(settings.clone(), None, Some(embedder)).unwrap();
    assert_eq!(kb.search(&q).await[0].article_id, "file:refunds.md");

    // The endpoint fails: search falls back to BM25; a changed article is still indexed (BM25
    // only) and embedded at the next good refresh.
    st.failing.store(true, Ordering::SeqCst);
    let hits = kb.search(&Query::text("reset password")).await;
    assert_eq!(hits[0].article_id, "file:password.md");
    assert!(kb.search(&q).await.is_empty());
    std::fs::write(docs.path().join("team.md"), "# Team members\n\nInvite a colleague or a contractor by email.\n")
        .unwrap();
    let r = kb.refresh().await;
    assert_eq!((r.changed, r.errors.len()), (1, 1), "{r:?}");
    assert_eq!(kb.search_bm25(&Query::text("contractor"))[0].article_id, "file:team.md");
    st.failing.store(false, Ordering::SeqCst);
    let before = st.inputs.load(Ordering::SeqCst);
    let r = kb.refresh().await;
    assert!(r.errors.is_empty() && r.changed == 1, "{r:?}");
    assert_eq!(st.inputs.load(Ordering::SeqCst), before + 1);
}
