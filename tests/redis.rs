//! The real `listener` and `webhook` binaries sharing Redis: coordination of webhook replicas,
//! the per-visitor context store, and carrying on while Redis is down.
//!
//! Each test starts its own `redis-server` on a loopback port of its own (started again on
//! another port should the port be taken), or on a port held closed until the test starts
//! Redis there (CI installs redis-server with apt-get); a machine without `redis-server` and
//! `redis-cli` on PATH fails these tests.

use bytes::Bytes;
use serde_json::{Value, json};
use standins::sse_server::{Plan, SseServer};
use standins::stand_ins::{
    LLM_PATH, Webhook, actions_frame, all_requests, completion, llm_calls, message_path, requests_to, user_prompt,
    visitor_message, visitor_stand_in, webhook_env,
};
use standins::{ClosedPort, Proc, bin, eventually, read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wiremock::{MockServer, Request};

const SITE: &str = "site";
const HOOK_SECRET: &str = "s3cret";
const ANSWER: &str = "Here is how to do it.";
const NO_ACTIVITY: &str = "(No activity recorded for this visitor.)";
const OUTAGE: &str = "Redis unavailable; carrying on without it";
/// The line of a reply that waits because Redis cannot say who has the floor.
const UNKNOWN_FLOOR: &str = "Redis cannot say whether the bot may speak";
const RECOVERY: &str = "Redis reachable again";

/// Generous limit for something that must happen.
const LIMIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// redis-server and redis-cli
// ---------------------------------------------------------------------------------------------

/// Fails the test at once, with a clear message, when the Redis tools are missing.
fn require_redis_tools() {
    for tool in ["redis-server", "redis-cli"] {
        let found = Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
        assert!(
            found.is_ok_and(|status| status.success()),
            "`{tool}` is not on PATH: these tests need a real Redis (apt-get install redis-server)"
        );
    }
}

/// A `redis-server` of one test, killed when dropped.
struct RedisServer {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `redis-server` on a port of its own and waits until it answers PING; should
    /// another process take the port first, starts it again on another one.
    fn start() -> RedisServer {
        for _ in 0..5 {
            if let Ok(server) = RedisServer::try_start(ClosedPort::new().release()) {
                return server;
            }
        }
        panic!("redis-server: five ports taken in a row")
    }

    /// Starts `redis-server` on `port`, held closed until now, and waits until it answers PING.
    fn start_on(port: ClosedPort) -> RedisServer {
        let port = port.release();
        RedisServer::try_start(port).unwrap_or_else(|log| panic!("redis-server cannot bind port {port}:\n{log}"))
    }

    /// Starts `redis-server` on `port` (no persistence) and waits until it answers PING; `Err`
    /// with its log when the port was taken.
    fn try_start(port: u16) -> Result<RedisServer, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("redis.log");
        let out = std::fs::File::create(&log).expect("redis log file");
        let err = out.try_clone().expect("redis log file");
        let port_arg = port.to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port_arg, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): these tests need `redis-server` and `redis-cli` on PATH \
                     (apt-get install redis-server)"
                )
            });
        let mut server = RedisServer { child, port, log, _dir: dir };
        let deadline = Instant::now() + LIMIT;
        loop {
            if redis_cli(port, &["PING"]) == "PONG" {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = read(&server.log);
                if log.contains("Address already in use") {
                    return Err(log);
                }
                panic!("redis-server on port {port} exited ({status}):\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {port} never answered PING:\n{}",
                read(&server.log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        redis_url(self.port)
    }

    fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

/// Runs `redis-cli -p port args...` and returns its trimmed output (empty when it cannot connect).
fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run redis-cli ({e}): these tests need `redis-cli` on PATH (apt-get install redis-server)")
        });
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A number printed by redis-cli (`LLEN`, `TTL`, `EXISTS`), or `None`.
fn redis_int(port: u16, args: &[&str]) -> Option<i64> {
    redis_cli(port, args).parse().ok()
}

/// Whether the Redis stream `stream` holds `entries` entries, every one of them delivered to a
/// webhook replica of the consumer group and acknowledged by it.
fn stream_handled(redis: &RedisServer, stream: &str, entries: i64) -> bool {
    if redis_int(redis.port, &["XLEN", stream]) != Some(entries) {
        return false;
    }
    let newest = redis.cli(&["XREVRANGE", stream, "+", "-", "COUNT", "1"]);
    let Some(newest) = newest.lines().next() else { return false };
    // `XINFO GROUPS` prints each group's fields as name and value lines; one group here.
    let groups = redis.cli(&["XINFO", "GROUPS", stream]);
    let lines: Vec<&str> = groups.lines().collect();
    let field = |name: &str| lines.iter().position(|l| *l == name).and_then(|i| lines.get(i + 1)).copied();
    field("pending") == Some("0") && field("last-delivered-id") == Some(newest)
}

/// A key prefix unique to one test (each test has its own server anyway; this checks the prefix
/// is honoured by both binaries).
fn prefix(test: &str) -> String {
    format!("e2e-{test}:")
}

// ---------------------------------------------------------------------------------------------
// Stream frames and hook bodies
// ---------------------------------------------------------------------------------------------

/// A human operator's message (not automated, a fingerprint the bot never sent).
fn human_operator_message(session: &str, fingerprint: u64, content: &str) -> Value {
    standins::stand_ins::operator_message(SITE, session, fingerprint, content, false, "operator-anna")
}

// ---------------------------------------------------------------------------------------------
// Stand-ins for OpenAI and Crisp
// ---------------------------------------------------------------------------------------------

/// One server for OpenAI (answering after `llm_delay`) and Crisp; `metas` gives conversations'
/// `GET .../meta` session data (others have none).
async fn stand_in(llm_delay: Duration, metas: &[(&str, Value)]) -> MockServer {
    let metas: Vec<(&str, Value)> =
        metas.iter().map(|(session, data)| (*session, json!({"nickname": "v", "data": data}))).collect();
    visitor_stand_in(SITE, completion(ANSWER).set_delay(llm_delay), &metas).await
}

fn is_llm(request: &Request) -> bool {
    request.method.as_str() == "POST" && request.url.path() == LLM_PATH
}

fn is_crisp_post(request: &Request, session: &str) -> bool {
    request.method.as_str() == "POST" && request.url.path() == message_path(SITE, session)
}

/// The prompts (last user message) of the chat-completion requests received, oldest first.
async fn llm_prompts(server: &MockServer) -> Vec<String> {
    llm_calls(server).await.iter().map(user_prompt).collect()
}

/// The Crisp message posts into `session` received so far.
async fn crisp_posts(server: &MockServer, session: &str) -> usize {
    requests_to(server, "POST", &message_path(SITE, session)).await.len()
}

/// Waits up to [`LIMIT`] for `count` Crisp message posts into `session`; returns how many came.
async fn wait_posts(server: &MockServer, session: &str, count: usize) -> usize {
    standins::stand_ins::wait_for(server, "POST", &message_path(SITE, session), count, LIMIT).await.len()
}

/// Waits up to [`LIMIT`] for an LLM request asking `question`; returns its prompt.
async fn prompt_for(server: &MockServer, question: &str, log: impl Fn() -> String) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(prompt) = llm_prompts(server).await.into_iter().find(|p| p.contains(question)) {
            return prompt;
        }
        assert!(Instant::now() < deadline, "{question:?} never reached the LLM; log:\n{}", log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The two binaries
// ---------------------------------------------------------------------------------------------

/// Redis settings; given explicitly so that they win over anything `TEST_REDIS_URL` injects.
fn redis_env(url: &str, prefix: &str) -> Vec<(&'static str, String)> {
    vec![("REDIS_URL", url.to_owned()), ("REDIS_KEY_PREFIX", prefix.to_owned())]
}

/// Starts a webhook in a working directory of its own, talking to `server`, with `extra`
/// settings on top, and waits until `/health` answers.
async fn start_webhook(server: &MockServer, extra: &[(&'static str, String)]) -> Webhook {
    let mut env = webhook_env(server, SITE, HOOK_SECRET);
    env.extend(extra.iter().cloned());
    Webhook::start_in_tempdir(bin!("webhook"), env, LIMIT).await
}

/// A listener in a working directory of its own, against a loopback stream that sends `frames`
/// and then stays open.
struct Listener {
    proc: Proc,
    _stream: SseServer,
    cwd: tempfile::TempDir,
}

impl Listener {
    async fn start(frames: &[String], extra: &[(&'static str, String)]) -> Listener {
        let chunks = frames.iter().map(|f| Bytes::from(f.clone())).collect();
        let stream = SseServer::start(vec![Plan::StreamThenHold(chunks)], None).await;
        let cwd = tempfile::tempdir().unwrap();
        let mut env = vec![("STREAM_URL", stream.url.clone()), ("SUMMARY_THRESHOLD", "0".to_owned())];
        env.extend(extra.iter().cloned());
        let proc = Proc::spawn(bin!("listener"), cwd.path(), &env, &[]);
        Listener { proc, _stream: stream, cwd }
    }

    fn event_data(&self) -> PathBuf {
        self.cwd.path().join("event_data.txt")
    }

    fn stderr(&self) -> String {
        self.proc.stderr()
    }
}

// ---------------------------------------------------------------------------------------------
// Webhook replicas sharing Redis
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_message_delivered_to_two_replicas_is_answered_once() {
    require_redis_tools();
    let redis = RedisServer::start();
    let server = stand_in(Duration::ZERO, &[]).await;
    let env = redis_env(&redis.url(), &prefix("dedupe"));
    let (mut a, mut b) = tokio::join!(start_webhook(&server, &env), start_webhook(&server, &env));
    assert_ne!(a.cwd(), b.cwd());

    let session = "session_dedupe";
    let hook = visitor_message(SITE, session, 150_698_569_649_423, "Hey :)");
    tokio::join!(a.deliver_ok(&hook), b.deliver_ok(&hook));

    assert_eq!(wait_posts(&server, session, 1).await, 1, "never answered; A:\n{}\nB:\n{}", a.stderr(), b.stderr());
    // Both stopped (SIGTERM: every accepted message dealt with first): nothing more comes.
    tokio::join!(a.stop(), b.stop());
    assert_eq!(crisp_posts(&server, session).await, 1, "answered twice; A:\n{}\nB:\n{}", a.stderr(), b.stderr());
    assert_eq!(llm_prompts(&server).await.len(), 1, "one LLM call only");
    let seen_key = format!("{}seen:{session}:150698569649423", prefix("dedupe"));
    assert_eq!(redis.cli(&["EXISTS", &seen_key]), "1", "the delivery was recorded in Redis");
}

#[tokio::test]
async fn one_conversation_is_answered_by_one_replica_at_a_time_in_order() {
    require_redis_tools();
    let redis = RedisServer::start();
    let server = stand_in(Duration::from_secs(1), &[]).await;
    let key_prefix = prefix("order");
    let env = redis_env(&redis.url(), &key_prefix);
    let (mut a, mut b) = tokio::join!(start_webhook(&server, &env), start_webhook(&server, &env));
    let logs = || format!("A:\n{}\nB:\n{}", a.stderr(), b.stderr());

    let session = "session_order";
    let (first, second, third) = ("first question ONE", "second question TWO", "third question THREE");
    a.deliver_ok(&visitor_message(SITE, session, 1, first)).await;
    // Message 1 is being answered (the LLM takes a second)...
    prompt_for(&server, first, logs).await;
    // ...when message 2 reaches replica B: wait until it is queued (or already answered).
    b.deliver_ok(&visitor_message(SITE, session, 2, second)).await;
    let queue = format!("{key_prefix}queue:{session}");
    let deadline = Instant::now() + LIMIT;
    while redis_int(redis.port, &["LLEN", &queue]).unwrap_or(0) == 0
        && !llm_prompts(&server).await.iter().any(|p| p.contains(second))
    {
        assert!(Instant::now() < deadline, "message 2 was never queued in Redis; {}", logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.deliver_ok(&visitor_message(SITE, session, 3, third)).await;

    // Every message reaches the LLM, then every LLM answer reaches Crisp.
    prompt_for(&server, third, logs).await;
    prompt_for(&server, second, logs).await;
    let calls = llm_prompts(&server).await.len();
    assert_eq!(wait_posts(&server, session, calls).await, calls, "{}", logs());
    tokio::join!(a.stop(), b.stop());
    let logs = || format!("A:\n{}\nB:\n{}", a.stderr(), b.stderr());

    // In arrival order, LLM requests and Crisp posts alternate: never two LLM requests in
    // flight for the conversation.
    let requests = all_requests(&server).await;
    let sequence: Vec<&str> = requests
        .iter()
        .filter_map(|r| {
            if is_llm(r) {
                Some("llm")
            } else if is_crisp_post(r, session) {
                Some("post")
            } else {
                None
            }
        })
        .collect();
    let expected: Vec<&str> = (0..sequence.len()).map(|i| if i % 2 == 0 { "llm" } else { "post" }).collect();
    assert_eq!(sequence, expected, "LLM requests overlapped; {}", logs());

    let prompts = llm_prompts(&server).await;
    assert!(prompts.len() == 2 || prompts.len() == 3, "{prompts:#?}");
    assert!(prompts[0].ends_with(&format!("User question: {first}")), "message 1 answered first: {prompts:#?}");
    assert!(!prompts[0].contains(second) && !prompts[0].contains(third), "{prompts:#?}");
    let rest = prompts[1..].join("\n=====\n");
    let (at_second, at_third) = (rest.find(second).unwrap(), rest.find(third).unwrap());
    assert!(at_second < at_third, "message 2 answered before message 3: {prompts:#?}");
    for (i, text) in [first, second, third].iter().enumerate() {
        let times = prompts.iter().filter(|p| p.contains(text)).count();
        assert_eq!(times, 1, "message {} asked {times} times: {prompts:#?}", i + 1);
    }
}

#[tokio::test]
async fn a_human_operator_writing_via_one_replica_silences_the_other() {
    require_redis_tools();
    let redis = RedisServer::start();
    let server = stand_in(Duration::ZERO, &[]).await;
    let key_prefix = prefix("human");
    let env = redis_env(&redis.url(), &key_prefix);
    let (mut a, mut b) = tokio::join!(start_webhook(&server, &env), start_webhook(&server, &env));

    let session = "session_human";
    a.deliver_ok(&human_operator_message(session, 880_001, "Hi, Anna from support here!")).await;
    let flag = format!("{key_prefix}human:{session}");
    let shared = eventually(LIMIT, || redis.cli(&["EXISTS", &flag]) == "1").await;
    assert!(shared, "the takeover never reached Redis; A:\n{}", a.stderr());

    b.deliver_ok(&visitor_message(SITE, session, 9, "Is anyone there?")).await;
    let silent = eventually(LIMIT, || b.stderr().contains("a human operator has this conversation")).await;
    assert!(silent, "B never noticed the takeover; B:\n{}", b.stderr());
    tokio::join!(a.stop(), b.stop());
    assert!(llm_prompts(&server).await.is_empty(), "B asked the LLM; B:\n{}", b.stderr());
    assert_eq!(crisp_posts(&server, session).await, 0, "B answered during a human takeover");
}

// ---------------------------------------------------------------------------------------------
// Redis down
// ---------------------------------------------------------------------------------------------

/// With Redis down the webhook still takes messages (its own inbox) but answers none on a
/// guess: whether a human operator has the conversation is Redis's to say. Once Redis is back,
/// every one is answered, once.
#[tokio::test]
async fn while_redis_is_down_messages_are_taken_and_wait_then_answered_once_it_is_back() {
    require_redis_tools();
    // Redis is down: nothing listens on its port, held until Redis starts there.
    let port = ClosedPort::new();
    let server = stand_in(Duration::ZERO, &[]).await;
    let webhook = start_webhook(&server, &redis_env(&redis_url(port.port), &prefix("down"))).await;

    let sessions: Vec<String> = (1..=3_u64).map(|i| format!("session_down_{i}")).collect();
    for (i, session) in (1..=3_u64).zip(&sessions) {
        let question = format!("question {i} while Redis is down");
        let took = webhook.deliver_ok(&visitor_message(SITE, session, 700 + i, &question)).await;
        assert!(took < Duration::from_secs(3), "hook {i} acknowledged in {took:?}");
    }
    let waited = eventually(LIMIT, || webhook.stderr().matches(UNKNOWN_FLOOR).count() >= 3).await;
    assert!(waited, "the replies do not wait for Redis:\n{}", webhook.stderr());
    for session in &sessions {
        assert_eq!(crisp_posts(&server, session).await, 0, "answered on a guess:\n{}", webhook.stderr());
    }
    let log = webhook.stderr();
    assert_eq!(log.matches(OUTAGE).count(), 1, "the outage is logged once:\n{log}");
    assert!(!log.contains(RECOVERY), "{log}");

    let redis = RedisServer::start_on(port);
    let session = "session_back";
    let took = webhook.deliver_ok(&visitor_message(SITE, session, 800, "question once Redis is back")).await;
    assert!(took < Duration::from_secs(1), "acknowledged in {took:?}");
    assert_eq!(wait_posts(&server, session, 1).await, 1, "unanswered:\n{}", webhook.stderr());
    for session in &sessions {
        assert_eq!(wait_posts(&server, session, 1).await, 1, "{session} unanswered:\n{}", webhook.stderr());
    }
    let recovered = eventually(LIMIT, || webhook.stderr().contains(RECOVERY)).await;
    assert!(recovered, "no {RECOVERY:?} after a message with Redis back:\n{}", webhook.stderr());
    assert_eq!(webhook.stderr().matches(OUTAGE).count(), 1, "{}", webhook.stderr());
    drop(redis);
}

#[tokio::test]
async fn the_listener_buffers_while_redis_is_down_and_catches_up() {
    require_redis_tools();
    // Redis is down: nothing listens on its port, held until Redis starts there.
    let port = ClosedPort::new();
    let key_prefix = prefix("buffer");
    let titles = ["R action 1", "R action 2", "R action 3", "R action 4", "R action 5"];
    let frames = [
        actions_frame("ps_R", json!({}), &titles[0..2]),
        actions_frame("ps_R", json!({}), &titles[2..4]),
        actions_frame("ps_R", json!({}), &titles[4..]),
    ];
    let listener = Listener::start(&frames, &redis_env(&redis_url(port.port), &key_prefix)).await;

    let written = eventually(LIMIT, || {
        let file = read(&listener.event_data());
        titles.iter().all(|t| file.contains(t))
    })
    .await;
    assert!(
        written,
        "event_data.txt never held every batch:\n{}\nlog:\n{}",
        read(&listener.event_data()),
        listener.stderr()
    );
    let outage = eventually(LIMIT, || listener.stderr().contains(OUTAGE)).await;
    assert!(outage, "the outage was never logged:\n{}", listener.stderr());

    let redis = RedisServer::start_on(port);
    let actions = format!("{key_prefix}s:ps_R:a");
    let caught_up = eventually(LIMIT, || redis_int(redis.port, &["LLEN", &actions]) == Some(titles.len() as i64)).await;
    assert!(
        caught_up,
        "LLEN {actions} = {:?}, want {}; log:\n{}",
        redis.cli(&["LLEN", &actions]),
        titles.len(),
        listener.stderr()
    );
    let stored = redis.cli(&["LRANGE", &actions, "0", "-1"]);
    let positions: Vec<usize> =
        titles.iter().map(|t| stored.find(t).unwrap_or_else(|| panic!("{t:?} not stored: {stored}"))).collect();
    assert!(positions.is_sorted(), "actions stored out of order: {stored}");
    let recovered = eventually(LIMIT, || listener.stderr().contains(RECOVERY)).await;
    assert!(recovered, "{}", listener.stderr());
    assert_eq!(listener.stderr().matches(OUTAGE).count(), 1, "{}", listener.stderr());
}

// ---------------------------------------------------------------------------------------------
// The context store in Redis
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn activity_read_by_the_listener_reaches_the_webhooks_prompt_through_redis() {
    require_redis_tools();
    let redis = RedisServer::start();
    let key_prefix = prefix("context");
    let env = redis_env(&redis.url(), &key_prefix);
    let listener = Listener::start(&[actions_frame("ps_X", json!({}), &["Opened pricing"])], &env).await;
    let actions = format!("{key_prefix}s:ps_X:a");
    let stored = eventually(LIMIT, || redis_int(redis.port, &["LLEN", &actions]) == Some(1)).await;
    assert!(stored, "the listener never stored ps_X in Redis:\n{}", listener.stderr());

    let server = stand_in(Duration::ZERO, &[("session_X", json!({"autoplay_session_id": "ps_X"}))]).await;
    let webhook = start_webhook(&server, &env).await;
    let question = "How much is the Pro plan?";
    webhook.deliver_ok(&visitor_message(SITE, "session_X", 31, question)).await;
    let prompt = prompt_for(&server, question, || webhook.stderr()).await;
    assert!(prompt.contains("Opened pricing"), "{prompt}");
    assert!(!prompt.contains(NO_ACTIVITY), "{prompt}");
    assert_eq!(wait_posts(&server, "session_X", 1).await, 1, "{}", webhook.stderr());
    // DATA_DIR holds at most the webhook's inbox journal (used while Redis is unreachable).
    for cwd in [listener.cwd.path(), webhook.cwd()] {
        let entries: Vec<String> = std::fs::read_dir(cwd.join("data"))
            .map(|dir| dir.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        assert!(
            entries.iter().all(|e| e == "inbox.journal"),
            "an embedded store was opened in {}: {entries:?}",
            cwd.display()
        );
    }
}

#[tokio::test]
async fn stored_actions_expire_after_the_ttl_and_are_capped() {
    require_redis_tools();
    let redis = RedisServer::start();
    let key_prefix = prefix("expiry");
    let titles = ["E action 1", "E action 2", "E action 3", "E action 4", "E action 5"];
    let mut env = redis_env(&redis.url(), &key_prefix);
    env.extend([("CONTEXT_TTL_SECS", "5".to_owned()), ("CONTEXT_MAX_ACTIONS", "3".to_owned())]);
    let listener = Listener::start(&[actions_frame("ps_E", json!({}), &titles)], &env).await;

    let actions = format!("{key_prefix}s:ps_E:a");
    let stored = eventually(LIMIT, || redis_int(redis.port, &["LLEN", &actions]).is_some_and(|n| n > 0)).await;
    assert!(stored, "never stored:\n{}", listener.stderr());
    let ttl = redis_int(redis.port, &["TTL", &actions]);
    assert!(ttl.is_some_and(|t| (1..=5).contains(&t)), "TTL {actions} = {ttl:?}");
    assert_eq!(redis.cli(&["LLEN", &actions]), "3", "capped at CONTEXT_MAX_ACTIONS");
    let kept = redis.cli(&["LRANGE", &actions, "0", "-1"]);
    for t in &titles[..2] {
        assert!(!kept.contains(t), "{t:?} should have been trimmed: {kept}");
    }
    for t in &titles[2..] {
        assert!(kept.contains(t), "{t:?} should be kept: {kept}");
    }
    let gone = eventually(LIMIT, || redis.cli(&["EXISTS", &actions]) == "0").await;
    assert!(gone, "{actions} never expired");
    assert!(read(&listener.event_data()).contains("E action 1"), "the activity file keeps every action");
}

// ---------------------------------------------------------------------------------------------
// A replica dies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_replica_killed_while_holding_a_conversation_is_finished_by_the_other() {
    require_redis_tools();
    let redis = RedisServer::start();
    // A's LLM never answers in time; B's answers at once.
    let slow = stand_in(Duration::from_secs(60), &[]).await;
    let fast = stand_in(Duration::ZERO, &[]).await;
    let mut env = redis_env(&redis.url(), &prefix("failover"));
    env.push(("HOLD_LEASE_SECS", "2".to_owned()));
    let a = start_webhook(&slow, &env).await;
    let mut b = start_webhook(&fast, &env).await;

    let session = "session_failover";
    let hook = visitor_message(SITE, session, 77_001, "Can you help me export?");
    a.deliver_ok(&hook).await;
    let writing = standins::stand_ins::wait_for(&slow, "POST", LLM_PATH, 1, LIMIT).await;
    assert_eq!(writing.len(), 1, "A never started its reply:\n{}", a.stderr());
    a.proc().signal("KILL");
    // Crisp got its 200 from A, so it may not deliver again; if it does, B takes it as a duplicate.
    b.deliver_ok(&hook).await;

    // B finishes the conversation without any new message, once A's hold expired.
    assert_eq!(wait_posts(&fast, session, 1).await, 1, "B never resumed it:\n{}", b.stderr());
    b.stop().await;
    assert_eq!(crisp_posts(&fast, session).await, 1, "answered twice:\n{}", b.stderr());
    assert_eq!(crisp_posts(&slow, session).await, 0);
    assert!(prompt_for(&fast, "Can you help me export?", || b.stderr()).await.contains("export"));
}

// ---------------------------------------------------------------------------------------------
// Proactive offers across replicas
// ---------------------------------------------------------------------------------------------

/// Two listeners see the same visitor go back and forth and both record the firing; two webhook
/// replicas read the firings: the visitor gets one offer.
#[tokio::test]
async fn two_listeners_and_two_replicas_send_one_offer() {
    require_redis_tools();
    let redis = RedisServer::start();
    let offer = json!({"send": true, "message": "Need a hand with invoices?"}).to_string();
    let server = visitor_stand_in(SITE, completion(&offer), &[]).await;
    standins::stand_ins::mount_crisp_catch_all(&server).await;
    let mut env = redis_env(&redis.url(), &prefix("offer"));
    env.push(("PROACTIVE_TRIGGERS", "ping_pong".to_owned()));
    let (mut a, mut b) = tokio::join!(start_webhook(&server, &env), start_webhook(&server, &env));
    let session = "session_offer";
    let link = json!({
        "website_id": SITE, "event": "session:set_data",
        "data": {"website_id": SITE, "session_id": session, "data": {"autoplay_session_id": "ps_offer"}}
    });
    a.deliver_ok(&link).await;
    let pages = ["/billing", "/invoices", "/billing", "/invoices"];
    let actions: Vec<Value> = pages
        .iter()
        .enumerate()
        .map(|(i, page)| {
            let at = 1_800_000_000.0 + i as f64;
            json!({"index": i, "type": "pageview", "title": page, "description": page,
                   "timestamp_start": at, "timestamp_end": at + 1.0, "canonical_url": page})
        })
        .collect();
    let frame = format!(
        "data: {}\n\n",
        json!({"type": "actions", "product_id": "p", "session_id": "ps_offer", "count": 4, "actions": actions})
    );
    let frames = [frame];
    let (one, two) = tokio::join!(Listener::start(&frames, &env), Listener::start(&frames, &env));
    assert_eq!(wait_posts(&server, session, 1).await, 1, "no offer; A:\n{}\nB:\n{}", a.stderr(), b.stderr());
    // Both listeners recorded the firing, and the replicas have read both entries and dealt
    // with them (an entry is acknowledged once its firing is decided, offer sent or not)...
    let stream = format!("{}proactive:firings", prefix("offer"));
    let handled = eventually(LIMIT, || stream_handled(&redis, &stream, 2)).await;
    assert!(
        handled,
        "the replicas never dealt with both firings: XLEN {}, groups:\n{}\nA:\n{}\nB:\n{}",
        redis.cli(&["XLEN", &stream]),
        redis.cli(&["XINFO", "GROUPS", &stream]),
        a.stderr(),
        b.stderr()
    );
    // ...and, stopped, they send nothing more.
    tokio::join!(a.stop(), b.stop());
    assert_eq!(
        crisp_posts(&server, session).await,
        1,
        "offered twice; A:\n{}\nB:\n{}\nlisteners:\n{}\n{}",
        a.stderr(),
        b.stderr(),
        one.stderr(),
        two.stderr()
    );
    let initiated = requests_to(&server, "POST", &format!("/v1/website/{SITE}/conversation/{session}/initiate")).await;
    assert_eq!(initiated.len(), 1);
    assert_eq!(llm_prompts(&server).await.len(), 1, "one firing, one LLM call");
}
