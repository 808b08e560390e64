//! The fault suite: the real webhook, in-process, driven through a seeded random schedule of the
//! faults real deployments meet, checked against one property over the whole history:
//!
//! - every visitor message that got a `200` is answered exactly once (its words are in exactly
//!   one visible bot message), or ends as the README says (taken over by a human);
//! - no bot message reaches a conversation while a human operator holds it;
//! - nothing waits longer than the lease plus the reply time (bounded by `ANSWER_LIMIT`);
//! - and after a restart on the same data, nothing is answered again.
//!
//! Faults: Crisp storing a message and then answering 502/504 or cutting the connection, Crisp
//! refusing with 429/503 and `Retry-After`, Crisp failing the history read, clients hanging up
//! mid-request (Crisp then delivers again), an operator taking a conversation over and
//! resolving it, the webhook stopped and restarted on the same data. With Redis
//! (`redis-server` on the PATH): two replicas with a 2 s lease and an LLM slower than the
//! lease, hooks spread over both, Redis paused (`CLIENT PAUSE`) and killed and restarted (on
//! its append-only file), one replica stopped mid-run.
//! (`kill -9` of the real binary is `tests/durable.rs`'s.)
//!
//! `FAULT_SEED=n` replays a schedule (the seed is printed on failure); `FAULT_MESSAGES=n` sets
//! its length (default 40; `scripts/faults` runs 1,000).

use serde_json::{Value, json};
use standins::apps::{self, Running};
use standins::crisp::{Crisp, CrispSettings, Fault, History};
use standins::llm::{Answer, Llm, last_user_message};
use standins::stand_ins::{operator_message, visitor_message};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SITE: &str = "42286ab3-b29a-4fde-8538-da0ae501d825";
const SECRET: &str = "hook-secret-faults";
/// From a message's `200` to its answer, at most: the lease plus retries of a reply whose
/// Crisp calls keep failing (backoff 2 s, 4 s, … per conversation).
const ANSWER_LIMIT: Duration = Duration::from_secs(90);
const CONVERSATIONS: u64 = 5;

/// splitmix64: a seeded schedule without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn seed() -> u64 {
    std::env::var("FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |d| d.as_nanos() as u64)
    })
}

fn messages() -> u64 {
    std::env::var("FAULT_MESSAGES").ok().and_then(|s| s.parse().ok()).unwrap_or(40)
}

async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// The LLM answers with the message tokens it was asked about, after `delay`.
async fn llm(delay: Duration) -> SocketAddr {
    let llm = Llm::new(
        Answer::Local(Box::new(|request: &Value| {
            let asked = last_user_message(request);
            let tokens: Vec<&str> = asked.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| is_token(w)).collect();
            format!("Answering {}.", tokens.join(" "))
        })),
        false,
    );
    llm.set_delay(delay);
    serve(llm.router()).await
}

fn is_token(word: &str) -> bool {
    word.starts_with("tok") && word.contains('x') && word[3..].chars().all(|c| c.is_ascii_digit() || c == 'x')
}

/// The Crisp stand-in on a loopback port, failing as the schedule of `seed` says (printed, so
/// that `FAULT_SEED` replays it).
async fn faulty_crisp(seed: u64) -> (Arc<Crisp>, SocketAddr) {
    eprintln!("fault schedule seed {seed} (FAULT_SEED={seed} replays it)");
    let crisp = crisp_stand_in();
    crisp.set_faults(crisp_faults(seed));
    let addr = serve(crisp.router()).await;
    (crisp, addr)
}

fn crisp_stand_in() -> Arc<Crisp> {
    Crisp::new(CrispSettings {
        website: Some(SITE.into()),
        meta: Box::new(|_| json!({"data": {}})),
        history: History::Stored,
    })
}

/// Crisp's faults, drawn from the schedule's seed: posts and history reads fail the ways real
/// deployments see, about one call in three.
fn crisp_faults(seed: u64) -> standins::crisp::Faults {
    let mut rng = Rng(seed ^ 0xC415);
    Box::new(move |method, leaf| {
        let roll = rng.below(100);
        match (method.as_str(), leaf) {
            ("POST", "message") => match roll {
                0..8 => Fault::StoreThen(502),
                8..16 => Fault::StoreThen(504),
                16..24 => Fault::StoreThenReset,
                24..28 => Fault::Refuse { status: 429, retry_after: true },
                28..32 => Fault::Refuse { status: 503, retry_after: true },
                32..36 => Fault::Refuse { status: 502, retry_after: false },
                _ => Fault::None,
            },
            ("GET", "messages") if roll < 10 => Fault::Refuse { status: 500, retry_after: false },
            _ => Fault::None,
        }
    })
}

fn webhook_vars(llm: SocketAddr, crisp: SocketAddr, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut vars = vec![
        ("OPENAI_BASE_URL", format!("http://{llm}/v1")),
        ("OPENAI_API_KEY", "sk-test".into()),
        ("CRISP_API_BASE_URL", format!("http://{crisp}/v1")),
        ("CRISP_TOKEN_IDENTIFIER", "ident".into()),
        ("CRISP_TOKEN_KEY", "key".into()),
        ("WEBSITE_ID", SITE.into()),
        ("WEBHOOK_SECRET", SECRET.into()),
        ("BIND_ADDR", "127.0.0.1:0".into()),
        ("HISTORY_TURNS", "0".into()),
        ("SHUTDOWN_GRACE_SECS", "1".into()),
        // Every message of a burst in its prompt (by default the newest 20 are, and the reply
        // settles the rest too): the property reads each message's words in the answer.
        ("MAX_BURST_MESSAGES", "100".into()),
        ("MAX_MESSAGE_CHARS", "100000".into()),
    ];
    for (name, value) in extra {
        vars.retain(|(k, _)| k != name);
        vars.push((name, value.clone()));
    }
    vars
}

async fn start(cwd: &Path, vars: &[(&'static str, String)]) -> Running {
    apps::webhook(&apps::in_dir(cwd, vars)).await.unwrap_or_else(|e| panic!("{e}"))
}

/// One hook, as Crisp sends it: again until it gets a `200`. With `hang_up`, the first try is a
/// client that gives up a few milliseconds in (the request future dropped mid-way).
async fn deliver(http: &reqwest::Client, to: SocketAddr, body: &Value, hang_up: Option<u64>) -> Instant {
    let url = format!("http://{to}/crisp/hooks?key={SECRET}");
    if let Some(ms) = hang_up {
        let impatient = reqwest::Client::builder().timeout(Duration::from_millis(ms)).build().unwrap();
        let _ = impatient.post(&url).json(body).send().await;
    }
    let deadline = Instant::now() + ANSWER_LIMIT;
    loop {
        if let Ok(response) = http.post(&url).json(body).send().await
            && response.status() == 200
        {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "the hook was never acknowledged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn resolved(session: &str) -> Value {
    json!({"event": "session:set_state", "website_id": SITE,
        "data": {"website_id": SITE, "session_id": session, "state": "resolved"}})
}

/// What the test sent, and what must become of it.
#[derive(Default)]
struct Schedule {
    /// Token → conversation, for messages acked while nobody held the conversation.
    must_answer: HashMap<String, String>,
    /// Tokens of the conversation a human takes over, acked before the resolution: answered at
    /// most once (those sent before the takeover may end silenced, as the README says), never
    /// while the human holds it.
    held: Vec<String>,
    /// (conversation, human from, human until): no bot post arrives in between.
    takeovers: Vec<(String, u64, u64)>,
}

/// Each token's count in the visible posts, per conversation.
fn answered(crisp: &Crisp) -> HashMap<String, Vec<(String, u64)>> {
    let mut seen: HashMap<String, Vec<(String, u64)>> = HashMap::new();
    for post in crisp.log().posted {
        for word in post.text.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| is_token(w)) {
            seen.entry(word.to_owned()).or_default().push((post.session.clone(), post.received_ns));
        }
    }
    seen
}

/// Waits until every message that must be answered is, then checks the property.
async fn check(seed: u64, crisp: &Crisp, history: &Schedule, complete: bool) {
    let deadline = Instant::now() + ANSWER_LIMIT;
    loop {
        let seen = answered(crisp);
        let missing: Vec<&String> = history.must_answer.keys().filter(|t| !seen.contains_key(*t)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "seed {seed}: never answered: {missing:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !complete {
        return;
    }
    let seen = answered(crisp);
    for (token, session) in &history.must_answer {
        let posts = &seen[token];
        assert_eq!(posts.len(), 1, "seed {seed}: {token} answered {} times: {posts:?}", posts.len());
        assert_eq!(&posts[0].0, session, "seed {seed}: {token} answered in another conversation");
    }
    for (session, from, until) in &history.takeovers {
        for post in crisp.log().posted.iter().filter(|p| &p.session == session) {
            assert!(
                post.received_ns < *from || post.received_ns > *until,
                "seed {seed}: a bot message reached {session} while a human held it: {:?}",
                post.text
            );
        }
    }
    for token in &history.held {
        let posts = seen.get(token).map_or(0, Vec::len);
        assert!(posts <= 1, "seed {seed}: {token} (sent while a human held the conversation) answered {posts} times");
    }
    let mut fingerprints = std::collections::HashSet::new();
    for post in crisp.log().posted {
        assert!(
            fingerprints.insert((post.session.clone(), post.fingerprint)),
            "seed {seed}: a fingerprint posted twice"
        );
    }
}

/// Messages acked but not done in the inbox journal (`A` lines without a `D`).
fn journal_pending(data_dir: &Path) -> usize {
    let text = std::fs::read_to_string(data_dir.join("inbox.journal")).unwrap_or_default();
    let mut pending = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(json) = line.strip_prefix("A ") {
            if let Some(id) = serde_json::from_str::<Value>(json).ok().and_then(|v| v["id"].as_u64()) {
                pending.insert(id);
            }
        } else if let Some(id) = line.strip_prefix("D ").and_then(|id| id.parse::<u64>().ok()) {
            pending.remove(&id);
        }
    }
    pending.len()
}

/// Delivers the schedule's messages to `targets` (chosen at random per hook), with an operator
/// taking one conversation over for the middle third. Returns what must become of each.
async fn run_schedule(seed: u64, targets: &dyn Fn(u64) -> SocketAddr) -> Schedule {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let mut rng = Rng(seed);
    let total = messages();
    let mut history = Schedule::default();
    let held_session = "session_faults_0".to_owned();
    let mut human_since = None;
    for n in 0..total {
        if n == total / 3 {
            let body = operator_message(SITE, &held_session, 7_000_000 + n, "A human here.", false, "op");
            deliver(&http, targets(rng.next()), &body, None).await;
            human_since = Some(standins::clock::mono_ns());
        }
        if n == 2 * total / 3
            && let Some(from) = human_since.take()
        {
            history.takeovers.push((held_session.clone(), from, standins::clock::mono_ns()));
            deliver(&http, targets(rng.next()), &resolved(&held_session), None).await;
        }
        let c = rng.below(CONVERSATIONS);
        let session = format!("session_faults_{c}");
        let token = format!("tok{c}x{n}");
        let body = visitor_message(SITE, &session, 1_000_000 + n, &format!("Question {token}?"));
        let hang_up = rng.chance(15).then(|| rng.below(4));
        deliver(&http, targets(rng.next()), &body, hang_up).await;
        if session == held_session && n < 2 * total / 3 {
            history.held.push(token);
        } else {
            history.must_answer.insert(token, session);
        }
    }
    history
}

/// One replica on the file store: Crisp failing about one call in three, clients hanging up,
/// an operator's takeover; then a restart on the same data answers nothing again.
#[tokio::test]
async fn every_acked_message_is_answered_exactly_once_through_crisp_faults_and_a_restart() {
    let seed = seed();
    let dir = tempfile::tempdir().unwrap();
    let (crisp, crisp_addr) = faulty_crisp(seed).await;
    let llm_addr = llm(Duration::ZERO).await;
    let vars = webhook_vars(llm_addr, crisp_addr, &[("DATA_DIR", "data".into())]);
    let mut webhook = start(dir.path(), &vars).await;
    let addr = webhook.addr.unwrap();
    let history = run_schedule(seed, &|_| addr).await;
    check(seed, &crisp, &history, false).await;
    // Stopped with replies perhaps still retrying; restarted on the same data without faults:
    // whatever it resumes is found answered, nothing is posted twice.
    webhook.stop(Duration::from_secs(30)).await.unwrap();
    crisp.clear_faults();
    let restarted = start(dir.path(), &vars).await;
    let data = dir.path().join("data");
    assert!(
        standins::eventually(ANSWER_LIMIT, || journal_pending(&data) == 0).await,
        "seed {seed}: messages left pending after the restart: {}",
        journal_pending(&data)
    );
    check(seed, &crisp, &history, true).await;
    drop(restarted);
}

/// A private `redis-server` on a Unix socket, with every write in its append-only file (a
/// restart keeps what was recorded), stopped on drop; `None` (said) without one.
struct RedisServer {
    child: std::sync::Mutex<std::process::Child>,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl RedisServer {
    fn spawn(dir: &Path) -> std::io::Result<std::process::Child> {
        let socket = dir.join("redis.sock");
        let _ = std::fs::remove_file(&socket);
        let child = std::process::Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(child)
    }

    /// Stopped hard (`SIGKILL`) and started again on the same files.
    fn restart(&self) {
        let mut child = self.child.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = child.kill();
        let _ = child.wait();
        *child = Self::spawn(self.dir.path()).expect("redis-server restarts");
    }

    fn start() -> Option<RedisServer> {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("redis.sock");
        let child = Self::spawn(dir.path());
        let child = match child {
            Ok(child) => child,
            Err(e) if std::env::var("SKIP_REDIS_TESTS").is_ok_and(|v| v == "1") => {
                eprintln!("SKIP_REDIS_TESTS=1 and no redis-server ({e}): the Redis fault schedule was skipped");
                return None;
            }
            Err(e) => {
                panic!("the Redis fault schedule needs redis-server on the PATH ({e}); SKIP_REDIS_TESTS=1 skips it")
            }
        };
        Some(RedisServer { child: std::sync::Mutex::new(child), socket, dir })
    }

    fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    fn cli(&self, args: &[&str]) {
        let status = std::process::Command::new("redis-cli").arg("-s").arg(&self.socket).args(args).output();
        assert!(status.is_ok_and(|o| o.status.success()), "redis-cli {args:?} failed");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Two replicas sharing Redis with a 2 s lease and an LLM slower than the lease, hooks spread
/// over both, Crisp failing, Redis paused mid-run, one replica stopped and started again.
#[tokio::test]
async fn two_replicas_with_a_short_lease_answer_each_message_once_through_redis_pauses() {
    let Some(redis) = RedisServer::start() else { return };
    let redis = Arc::new(redis);
    let seed = seed();
    let dir = tempfile::tempdir().unwrap();
    let (crisp, crisp_addr) = faulty_crisp(seed).await;
    // Slower than the lease: the hold must be renewed while the reply is written.
    let llm_addr = llm(Duration::from_millis(2500)).await;
    let replica = |name: &str| {
        webhook_vars(
            llm_addr,
            crisp_addr,
            &[
                ("REDIS_URL", redis.url()),
                ("REDIS_KEY_PREFIX", "faults:".into()),
                ("HOLD_LEASE_SECS", "2".into()),
                ("DATA_DIR", format!("data-{name}")),
            ],
        )
    };
    let a = start(dir.path(), &replica("a")).await;
    let mut b = start(dir.path(), &replica("b")).await;
    let (addr_a, addr_b) = (a.addr.unwrap(), b.addr.unwrap());
    let pick = move |roll: u64| if roll.is_multiple_of(2) { addr_a } else { addr_b };
    // While the schedule runs: Redis paused for 1.5 s, then killed and restarted.
    let outages = {
        let redis = Arc::clone(&redis);
        let mut rng = Rng(seed ^ 0x9A05E);
        let pause_after = Duration::from_millis(200 + rng.below(1000));
        let restart_after = Duration::from_millis(2000 + rng.below(1000));
        tokio::spawn(async move {
            tokio::time::sleep(pause_after).await;
            let paused = Arc::clone(&redis);
            let _ = tokio::task::spawn_blocking(move || paused.cli(&["CLIENT", "PAUSE", "1500", "ALL"])).await;
            tokio::time::sleep(restart_after).await;
            let _ = tokio::task::spawn_blocking(move || redis.restart()).await;
        })
    };
    let history = run_schedule(seed, &pick).await;
    outages.await.unwrap();
    // Replica b stops (its held conversations are released and resumed by a).
    b.stop(Duration::from_secs(30)).await.unwrap();
    check(seed, &crisp, &history, false).await;
    crisp.clear_faults();
    redis.cli(&["PING"]);
    // Nothing recorded is left, and nothing was answered twice.
    let url = redis.url();
    let left = || {
        let client = redis_keys(&url);
        client == 0
    };
    assert!(standins::eventually(ANSWER_LIMIT, left).await, "seed {seed}: messages left recorded in Redis");
    check(seed, &crisp, &history, true).await;
    drop(a);
}

/// Queued or in-flight entries left in Redis under the suite's prefix.
fn redis_keys(url: &str) -> usize {
    let socket = url.trim_start_matches("redis+unix://");
    let out = std::process::Command::new("redis-cli")
        .args(["-s", socket, "--scan", "--pattern", "faults:*"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines().filter(|k| k.starts_with("faults:queue:") || k.starts_with("faults:inflight:")).count()
}
