//! Retrieval quality on the fixture help center (33 articles of a fictional SaaS app) and the
//! visitor-aware boost.

use std::path::PathBuf;

use knowledge::{Knowledge, KnowledgeSettings, Query};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn query_of(q: &Value, with_page: bool) -> Query {
    let mut query = Query::text(q["q"].as_str().unwrap());
    if with_page {
        query.page_title = q["page_title"].as_str().map(str::to_owned);
        query.page_path = q["page_path"].as_str().map(str::to_owned);
    }
    query
}

fn hit_at_3(kb: &Knowledge, q: &Value, with_page: bool) -> bool {
    let hits = kb.search_bm25(&query_of(q, with_page));
    let expect = q["expect"].as_str().unwrap();
    hits.iter().take(3).any(|h| h.article_id == expect)
}

#[tokio::test]
async fn hit_at_3_with_and_without_the_page() {
    let index = tempfile::tempdir().unwrap();
    let settings = KnowledgeSettings {
        dir: Some(fixtures().join("help")),
        index_dir: index.path().to_owned(),
        top_k: 5,
        ..KnowledgeSettings::default()
    };
    let kb = Knowledge::open(settings, None).unwrap();
    let report = kb.refresh().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.documents >= 30, "{report:?}");

    let questions: Vec<Value> =
        serde_json::from_slice(&std::fs::read(fixtures().join("questions.json")).unwrap()).unwrap();
    assert!(questions.len() >= 40);
    let (mut all, mut all_ok, mut amb, mut amb_page_ok, mut amb_nopage_ok) = (0, 0, 0, 0, 0);
    for q in &questions {
        let ok = hit_at_3(&kb, q, true);
        all += 1;
        all_ok += ok as usize;
        if !ok {
            let got: Vec<_> = kb.search_bm25(&query_of(q, true)).into_iter().map(|h| h.article_id).collect();
            eprintln!("MISS {:?} (page {:?}) expected {} got {got:?}", q["q"], q["page_title"], q["expect"]);
        }
        if q["ambiguous"].as_bool() != Some(true) && q["page_title"].is_string() {
            // A precise question on an unrelated page still finds its own article first.
            let top = kb.search_bm25(&query_of(q, true)).into_iter().next().map(|h| h.article_id);
            assert_eq!(top.as_deref(), q["expect"].as_str(), "{:?} on {:?}", q["q"], q["page_title"]);
        }
        if q["ambiguous"].as_bool() == Some(true) {
            amb += 1;
            amb_page_ok += ok as usize;
            amb_nopage_ok += hit_at_3(&kb, q, false) as usize;
        }
    }
    let overall = all_ok as f64 / all as f64;
    let with_page = amb_page_ok as f64 / amb as f64;
    let without_page = amb_nopage_ok as f64 / amb as f64;
    println!("hit@3 overall {all_ok}/{all} = {overall:.2}");
    println!("hit@3 ambiguous with the page {amb_page_ok}/{amb} = {with_page:.2}");
    println!("hit@3 ambiguous without the page {amb_nopage_ok}/{amb} = {without_page:.2}");
    assert!(amb >= 10);
    assert!(overall >= 0.9, "overall hit@3 {overall:.2}");
    assert!(with_page >= 0.9, "ambiguous hit@3 with page {with_page:.2}");
    assert!(without_page <= with_page - 0.4, "the page should matter: without {without_page:.2}, with {with_page:.2}");
}

#[tokio::test]
async fn passages_carry_heading_paths_and_links() {
    let index = tempfile::tempdir().unwrap();
    let settings = KnowledgeSettings {
        dir: Some(fixtures().join("help")),
        index_dir: index.path().to_owned(),
        ..KnowledgeSettings::default()
    };
    let kb = Knowledge::open(settings, None).unwrap();
    kb.refresh().await;
    let hits = kb.search(&Query::text("export all invoices to CSV")).await;
    let top = &hits[0];
    assert_eq!(top.article_id, "file:billing/invoices-export.md");
    assert_eq!(top.heading_path, "Export invoices › Export all invoices to CSV");
    assert_eq!(top.link.as_deref(), Some("https://help.tasklane.example/billing/invoices-export"));
    assert!(hits.len() <= 4);
    // The HTML article's script and style are not indexed.
    assert!(kb.search_bm25(&Query::text("analytics page color grey")).iter().all(|h| !h.text.contains("analytics")));
    let stats = kb.stats();
    assert!(stats.documents >= 30 && stats.passages > stats.documents && stats.index_bytes > 0);
    assert!(stats.last_refresh.is_some());
}

#[tokio::test]
async fn min_score_and_language() {
    let index = tempfile::tempdir().unwrap();
    let mut settings = KnowledgeSettings {
        dir: Some(fixtures().join("help")),
        index_dir: index.path().to_owned(),
        ..KnowledgeSettings::default()
    };
    let kb = Knowledge::open(settings.clone(), None).unwrap();
    kb.refresh().await;
    let q = Query::text("how do I change this?");
    let weak = kb.search_bm25(&q);
    assert!(!weak.is_empty());
    let strong = kb.search_bm25(&Query::text("export all invoices to CSV"))[0].score;
    drop(kb);
    settings.min_score = weak[0].score + 0.01;
    assert!(strong > settings.min_score);
    let kb = Knowledge::open(settings.clone(), None).unwrap();
    assert!(kb.search_bm25(&q).is_empty(), "vague matches fall under the threshold");
    assert!(!kb.search_bm25(&Query::text("export all invoices to CSV")).is_empty());
    drop(kb);

    // Another language rebuilds the index with its analyzer (French stemmer and stop words).
    let docs = tempfile::tempdir().unwrap();
    std::fs::write(
        docs.path().join("factures.md"),
        "# Exporter les factures\n\nCliquez sur Exporter pour télécharger vos factures.\n",
    )
    .unwrap();
    settings.dir = Some(docs.path().to_owned());
    settings.min_score = 0.0;
    settings.language = knowledge::Language::French;
    let kb = Knowledge::open(settings, None).unwrap();
    let r = kb.refresh().await;
    assert_eq!((r.documents, r.added), (1, 1), "{r:?}");
    assert_eq!(kb.search_bm25(&Query::text("comment exporter une facture ?"))[0].article_id, "file:factures.md");
}
