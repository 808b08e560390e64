//! `cargo run --release -p knowledge --example search_bench [articles] [queries]`
//!
//! Writes N synthetic Markdown articles (default 10,000) to a temporary folder, indexes them
//! with a full refresh, then times a no-change refresh, a refresh with 1% of the files changed,
//! and Q searches (default 1,000) with the visitor's page set. Reports peak RSS (VmHWM) and the
//! index size.

use std::time::Instant;

use knowledge::{Knowledge, KnowledgeSettings, Query};

const WORDS: &[&str] = &[
    "invoice",
    "billing",
    "plan",
    "upgrade",
    "team",
    "member",
    "invite",
    "role",
    "permission",
    "password",
    "reset",
    "login",
    "sso",
    "saml",
    "okta",
    "api",
    "key",
    "token",
    "webhook",
    "endpoint",
    "slack",
    "calendar",
    "zapier",
    "github",
    "email",
    "notification",
    "push",
    "mobile",
    "import",
    "csv",
    "trello",
    "export",
    "dashboard",
    "widget",
    "chart",
    "report",
    "schedule",
    "project",
    "template",
    "archive",
    "task",
    "recurring",
    "field",
    "custom",
    "audit",
    "log",
    "workspace",
    "delete",
    "refund",
    "payment",
    "card",
    "vat",
    "address",
    "profile",
    "avatar",
    "timezone",
    "language",
    "filter",
    "sort",
    "board",
    "timeline",
    "milestone",
    "deadline",
    "comment",
    "mention",
    "attachment",
    "file",
    "storage",
    "limit",
    "quota",
    "security",
    "session",
    "device",
    "browser",
    "extension",
    "desktop",
    "offline",
    "sync",
    "backup",
    "restore",
    "label",
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn word(&mut self) -> &'static str {
        WORDS[(self.next() % WORDS.len() as u64) as usize]
    }
    fn sentence(&mut self, n: usize) -> String {
        (0..n).map(|_| self.word()).collect::<Vec<_>>().join(" ")
    }
}

fn article(rng: &mut Rng, i: usize) -> (String, String) {
    let title = format!("{} {} {}", rng.word(), rng.word(), i);
    let mut body =
        format!("---\ntitle: {title}\nurl: https://help.example/a/{i}\n---\n# {title}\n\n{}.\n", rng.sentence(40));
    for _ in 0..3 {
        body.push_str(&format!(
            "\n## {} {}\n\n{}.\n\n{}.\n",
            rng.word(),
            rng.word(),
            rng.sentence(45),
            rng.sentence(45)
        ));
    }
    (title, body)
}

fn vm_hwm_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let q: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let docs = tempfile::tempdir().unwrap();
    let index = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut titles = Vec::with_capacity(n);
    for i in 0..n {
        let (title, body) = article(&mut rng, i);
        let sub = docs.path().join(format!("s{}", i % 50));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("a{i}.md")), body).unwrap();
        titles.push(title);
    }
    let bytes: u64 = walk_size(docs.path());
    println!("articles: {n} ({:.1} MB of Markdown)", bytes as f64 / 1e6);

    let settings = KnowledgeSettings {
        dir: Some(docs.path().to_owned()),
        index_dir: index.path().to_owned(),
        ..KnowledgeSettings::default()
    };
    let kb = Knowledge::open(settings, None).unwrap();
    let t = Instant::now();
    let r = kb.refresh().await;
    let full = t.elapsed();
    assert!(r.errors.is_empty());
    println!("full index: {:.2} s ({} documents, {} passages)", full.as_secs_f64(), r.documents, r.passages);

    let t = Instant::now();
    let r = kb.refresh().await;
    println!("refresh, nothing changed: {:.2} s (changed {})", t.elapsed().as_secs_f64(), r.changed);

    for i in (0..n).step_by(100) {
        let p = docs.path().join(format!("s{}", i % 50)).join(format!("a{i}.md"));
        let mut body = std::fs::read_to_string(&p).unwrap();
        body.push_str("\nEdited paragraph about refunds.\n");
        std::fs::write(p, body).unwrap();
    }
    let t = Instant::now();
    let r = kb.refresh().await;
    println!("refresh, {} files changed: {:.2} s", r.changed, t.elapsed().as_secs_f64());

    let mut lat = Vec::with_capacity(q);
    let mut found = 0;
    for i in 0..q {
        let target = (rng.next() % n as u64) as usize;
        let words: Vec<&str> = titles[target].split(' ').take(2).collect();
        let query = Query {
            text: format!("how do I {} the {} {}", rng.word(), words[0], words[1]),
            page_title: Some(format!("{} settings", rng.word())),
            page_path: Some(format!("/app/{}/{}", rng.word(), i)),
            recent_actions: vec![format!("Clicked {}", rng.word())],
            trigger: None,
        };
        let t = Instant::now();
        let hits = kb.search(&query).await;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        found += usize::from(!hits.is_empty());
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "search over {q} queries: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({found} with hits)",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[lat.len() - 1]
    );
    let stats = kb.stats();
    println!("index size: {:.1} MB ({} passages)", stats.index_bytes as f64 / 1e6, stats.passages);
    println!("peak RSS (VmHWM): {:.1} MB", vm_hwm_kb() as f64 / 1024.0);
}

fn walk_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .unwrap()
        .flatten()
        .map(|e| if e.file_type().unwrap().is_dir() { walk_size(&e.path()) } else { e.metadata().unwrap().len() })
        .sum()
}
