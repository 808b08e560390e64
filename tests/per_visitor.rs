//! Every answer is grounded in that visitor's own activity, and no one else's.
//!
//! The listener and the webhook, in-process through their builders, share one working
//! directory and one `DATA_DIR`: the listener reads a loopback Autoplay stream into the
//! per-visitor context store, the webhook answers Crisp hooks against stand-ins for OpenAI and
//! the Crisp REST API.

use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use standins::apps::{self, Running};
use standins::sse_server::{Plan, SseServer};
use standins::stand_ins::{
    actions_frame, completion, llm_calls, mount_llm, summary_env, user_prompt, visitor_message, visitor_stand_in,
    webhook_env,
};
use standins::{eventually, read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wiremock::{MockServer, ResponseTemplate};

const SITE: &str = "site";
const HOOK_SECRET: &str = "s3cret";
const LINK_SECRET: &str = "linkkey";
const ANSWER: &str = "Here is how to do it.";
const NO_ACTIVITY: &str = "(No activity recorded for this visitor.)";
const ACTIVITY_INTRO: &str = "Use it to give context-aware answers.\n\n";
const ACTIVITY_END: &str = "\n\n---\nAnswer the user's question";

const ACTIONS_FULL: &str = include_str!("fixtures/autoplay/actions-full.sse");
const EXPECTED: &str = include_str!("fixtures/autoplay/expected-event_data.txt");

const A_TITLES: [&str; 2] = ["Opened billing A", "Viewed invoices A"];
const B_TITLES: [&str; 2] = ["Clicked export B", "Downloaded CSV B"];

/// Generous limit for something that must happen.
const LIMIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Stream frames and hook bodies
// ---------------------------------------------------------------------------------------------

/// The three lines the activity file holds for an action of [`actions_frame`] at `index`.
fn block(index: usize, title: &str) -> String {
    format!(
        "[{index}] Action: {title}\n     Details: The visitor did: {title}\n     Page:    https://app.example.com/page\n"
    )
}

/// Lowercase hex HMAC-SHA256, as the site's backend signs `autoplay_user_id`.
fn hmac_hex(key: &str, message: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

// ---------------------------------------------------------------------------------------------
// Stand-ins for OpenAI and Crisp
// ---------------------------------------------------------------------------------------------

/// `GET .../meta` answer `data` whose session data (`data.data`) is `session_data`.
fn with_session_data(session_data: Value) -> Value {
    json!({"nickname": "visitor493603", "data": session_data})
}

/// One server for OpenAI and Crisp; `metas` gives each conversation's `GET .../meta` `data`
/// (conversations not listed have no session data).
async fn stand_in(metas: &[(&str, Value)]) -> MockServer {
    visitor_stand_in(SITE, completion(ANSWER), metas).await
}

/// The "Current User Activity" part of a prompt.
fn activity_of(prompt: &str) -> &str {
    let start = prompt.find(ACTIVITY_INTRO).expect("activity intro") + ACTIVITY_INTRO.len();
    let end = prompt.rfind(ACTIVITY_END).expect("activity end");
    &prompt[start..end]
}

// ---------------------------------------------------------------------------------------------
// The two apps
// ---------------------------------------------------------------------------------------------

/// A working directory shared by both apps, with its `DATA_DIR`.
struct Shared {
    dir: tempfile::TempDir,
    data_dir: PathBuf,
}

impl Shared {
    fn new() -> Shared {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        Shared { dir, data_dir }
    }

    fn cwd(&self) -> &Path {
        self.dir.path()
    }

    fn event_data(&self) -> PathBuf {
        self.dir.path().join("event_data.txt")
    }

    /// Starts the listener against a stream that sends `frames` and then stays open.
    async fn listener(&self, frames: &[String], extra: &[(&'static str, String)]) -> (SseServer, Running) {
        let chunks = frames.iter().map(|f| Bytes::from(f.clone())).collect();
        let stream = SseServer::start(vec![Plan::StreamThenHold(chunks)], None).await;
        let mut env = vec![
            ("STREAM_URL", stream.url.clone()),
            ("SUMMARY_THRESHOLD", "0".to_owned()),
            ("DATA_DIR", self.data_dir.display().to_string()),
        ];
        env.extend(extra.iter().cloned());
        let listener = apps::listener(&apps::in_dir(self.cwd(), &env)).await.unwrap_or_else(|e| panic!("{e}"));
        (stream, listener)
    }

    /// Starts the webhook against `server` with `extra` settings on top.
    async fn webhook(&self, server: &MockServer, extra: &[(&'static str, String)]) -> Webhook {
        let mut env = webhook_env(server, SITE, HOOK_SECRET);
        env.push(("DATA_DIR", self.data_dir.display().to_string()));
        env.extend(extra.iter().cloned());
        let inner = standins::stand_ins::Webhook::in_process(self.cwd(), env).await;
        Webhook { inner, fingerprints: AtomicU64::new(1_000) }
    }
}

/// A webhook sending visitor messages of its own.
struct Webhook {
    inner: standins::stand_ins::Webhook,
    /// Fingerprints of the visitor messages [`Webhook::ask`] sends.
    fingerprints: AtomicU64,
}

impl Webhook {
    /// Delivers a hook with the right key and checks the 200.
    async fn deliver(&self, body: &Value) {
        self.inner.deliver(body).await;
    }

    /// Asks `question` in conversation `session` and returns the prompt the LLM was sent for it.
    async fn ask(&self, server: &MockServer, session: &str, question: &str) -> String {
        let fingerprint = self.fingerprints.fetch_add(1, Ordering::Relaxed);
        self.deliver(&visitor_message(SITE, session, fingerprint, question)).await;
        self.prompt_for(server, question).await
    }

    /// Asks in conversation `session` until its prompt carries every one of `titles`, which
    /// the listener stores off its reading path (in whichever store backend is configured);
    /// returns that prompt.
    async fn ask_until(&self, server: &MockServer, session: &str, titles: &[&str], listener: &Running) -> String {
        let deadline = Instant::now() + LIMIT;
        for probe in 1.. {
            let prompt = self.ask(server, session, &format!("Probe {probe} in {session}")).await;
            if titles.iter().all(|t| prompt.contains(t)) {
                return prompt;
            }
            assert!(
                Instant::now() < deadline,
                "{session} never got {titles:?}; last prompt:\n{prompt}\nlistener running: {}",
                listener.is_running()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        unreachable!()
    }

    /// Waits for the LLM request answering `question` and returns its prompt.
    async fn prompt_for(&self, server: &MockServer, question: &str) -> String {
        let suffix = format!("User question: {question}");
        let deadline = Instant::now() + LIMIT;
        loop {
            let calls = llm_calls(server).await;
            let mut matching = calls.iter().map(user_prompt).filter(|p| p.ends_with(&suffix));
            if let Some(prompt) = matching.next() {
                assert!(matching.next().is_none(), "{question:?} was answered twice");
                return prompt;
            }
            assert!(Instant::now() < deadline, "{question:?} never reached the LLM; log:\n{}", self.inner.stderr());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn assert_has_all(prompt: &str, titles: &[&str]) {
    for title in titles {
        assert!(prompt.contains(title), "{title:?} missing from the prompt:\n{prompt}");
    }
}

fn assert_has_none(prompt: &str, titles: &[&str]) {
    for title in titles {
        assert!(!prompt.contains(title), "{title:?} leaked into the prompt:\n{prompt}");
    }
}

fn session_link(autoplay_session: &str) -> Value {
    with_session_data(json!({"autoplay_session_id": autoplay_session}))
}

fn signed_user(user: &str) -> Value {
    with_session_data(json!({"autoplay_user_id": user, "autoplay_user_sig": hmac_hex(LINK_SECRET, user)}))
}

fn link_secret() -> (&'static str, String) {
    ("LINK_SECRET", LINK_SECRET.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Which visitor's activity
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn two_visitors_at_once_each_get_an_answer_grounded_in_their_own_activity_only() {
    let shared = Shared::new();
    let frames = [actions_frame("ps_A", json!({}), &A_TITLES), actions_frame("ps_B", json!({}), &B_TITLES)];
    let (_stream, listener) = shared.listener(&frames, &[]).await;
    let server = stand_in(&[("session_A", session_link("ps_A")), ("session_B", session_link("ps_B"))]).await;
    let webhook = shared.webhook(&server, &[]).await;
    // Both visitors' activity is in the store.
    webhook.ask_until(&server, "session_A", &A_TITLES, &listener).await;
    webhook.ask_until(&server, "session_B", &B_TITLES, &listener).await;

    let question_a = "How do I pay my invoice? (asked by A)";
    let question_b = "Where did my CSV go? (asked by B)";
    let (hook_a, hook_b) =
        (visitor_message(SITE, "session_A", 101, question_a), visitor_message(SITE, "session_B", 201, question_b));
    tokio::join!(webhook.deliver(&hook_a), webhook.deliver(&hook_b));
    let (prompt_a, prompt_b) =
        tokio::join!(webhook.prompt_for(&server, question_a), webhook.prompt_for(&server, question_b));

    assert_has_all(&prompt_a, &A_TITLES);
    assert_has_none(&prompt_a, &B_TITLES);
    assert_has_all(&prompt_b, &B_TITLES);
    assert_has_none(&prompt_b, &A_TITLES);
    assert!(!prompt_a.contains(question_b) && !prompt_b.contains(question_a), "questions crossed over");
}

#[tokio::test]
async fn a_user_id_signed_with_link_secret_links_the_conversation_to_that_users_latest_session() {
    let shared = Shared::new();
    let titles = ["Upgraded plan U", "Opened team settings U"];
    let (_stream, listener) = shared.listener(&[actions_frame("ps_U", json!({"user_id": "u_42"}), &titles)], &[]).await;
    let server = stand_in(&[("session_U", signed_user("u_42"))]).await;
    let webhook = shared.webhook(&server, &[link_secret()]).await;

    let prompt = webhook.ask_until(&server, "session_U", &titles, &listener).await;
    assert!(!prompt.contains(NO_ACTIVITY), "{prompt}");
}

#[tokio::test]
async fn a_spoofed_or_unsigned_user_id_links_nothing() {
    let shared = Shared::new();
    let titles = ["Upgraded plan U", "Opened team settings U"];
    let (_stream, listener) = shared.listener(&[actions_frame("ps_U", json!({"user_id": "u_42"}), &titles)], &[]).await;
    let wrong_key = json!({"autoplay_user_id": "u_42", "autoplay_user_sig": hmac_hex("not-the-link-key", "u_42")});
    let other_user = json!({"autoplay_user_id": "u_42", "autoplay_user_sig": hmac_hex(LINK_SECRET, "u_43")});
    let garbage = json!({"autoplay_user_id": "u_42", "autoplay_user_sig": "not hex at all"});
    let unsigned = json!({"autoplay_user_id": "u_42"});
    let spoofed = [
        ("session_wrong_key", with_session_data(wrong_key)),
        ("session_other_user", with_session_data(other_user)),
        ("session_garbage", with_session_data(garbage)),
        ("session_unsigned", with_session_data(unsigned)),
    ];
    let mut metas = vec![("session_signed", signed_user("u_42"))];
    metas.extend(spoofed.iter().cloned());
    let server = stand_in(&metas).await;
    let webhook = shared.webhook(&server, &[link_secret()]).await;
    // The genuine link works, so the user's activity is there to be stolen.
    webhook.ask_until(&server, "session_signed", &titles, &listener).await;

    for (session, _) in &spoofed {
        let prompt = webhook.ask(&server, session, &format!("What did I do? ({session})")).await;
        assert_has_none(&prompt, &titles);
        assert_eq!(activity_of(&prompt), NO_ACTIVITY, "{session}: {prompt}");
    }
}

#[tokio::test]
async fn a_signed_user_id_is_ignored_when_link_secret_is_not_set() {
    let shared = Shared::new();
    let titles = ["Upgraded plan U"];
    let (_stream, listener) = shared.listener(&[actions_frame("ps_U", json!({"user_id": "u_42"}), &titles)], &[]).await;
    let server = stand_in(&[("session_control", session_link("ps_U")), ("session_U", signed_user("u_42"))]).await;
    let webhook = shared.webhook(&server, &[]).await;
    webhook.ask_until(&server, "session_control", &titles, &listener).await;

    let prompt = webhook.ask(&server, "session_U", "Can I add seats?").await;
    assert_has_none(&prompt, &titles);
    assert_eq!(activity_of(&prompt), NO_ACTIVITY, "{prompt}");
}

fn trust_stream_conversation_id() -> (&'static str, String) {
    ("TRUST_STREAM_CONVERSATION_ID", "true".to_owned())
}

#[tokio::test]
async fn with_trust_stream_conversation_id_a_batch_naming_the_crisp_conversation_links_it() {
    let shared = Shared::new();
    let titles = ["Opened settings C", "Changed password C"];
    let frames = [
        actions_frame("ps_B", json!({}), &B_TITLES),
        actions_frame("ps_C", json!({"conversation_id": "session_C"}), &titles),
    ];
    let (_stream, listener) = shared.listener(&frames, &[]).await;
    // session_C's meta carries no session data at all.
    let server =
        stand_in(&[("session_C", json!({"nickname": "visitor493603"})), ("session_B", session_link("ps_B"))]).await;
    let webhook = shared.webhook(&server, &[trust_stream_conversation_id()]).await;
    webhook.ask_until(&server, "session_B", &B_TITLES, &listener).await;

    let prompt = webhook.ask_until(&server, "session_C", &titles, &listener).await;
    assert_has_none(&prompt, &B_TITLES);
}

#[tokio::test]
async fn by_default_a_batch_claiming_a_conversation_links_nothing_on_its_own() {
    let shared = Shared::new();
    let titles = ["Attacker page ATT"];
    let frames = [
        actions_frame("ps_B", json!({}), &B_TITLES),
        actions_frame("ps_att", json!({"conversation_id": "session_victim"}), &titles),
    ];
    let (_stream, listener) = shared.listener(&frames, &[]).await;
    // The victim's own session data links to nothing of the sort.
    let server = stand_in(&[
        ("session_victim", with_session_data(json!({"plan": "free"}))),
        ("session_B", session_link("ps_B")),
    ])
    .await;
    let webhook = shared.webhook(&server, &[]).await;
    // The batches are stored once ps_B's (sent before) reads back.
    webhook.ask_until(&server, "session_B", &B_TITLES, &listener).await;
    assert!(read(&shared.event_data()).contains(titles[0]), "the claiming batch was ingested");

    let prompt = webhook.ask(&server, "session_victim", "What is this?").await;
    assert_has_none(&prompt, &titles);
    assert_eq!(activity_of(&prompt), NO_ACTIVITY, "{prompt}");
}

#[tokio::test]
async fn a_conversation_with_no_link_gets_no_activity_and_nobody_elses() {
    let shared = Shared::new();
    let frames = [actions_frame("ps_A", json!({}), &A_TITLES), actions_frame("ps_B", json!({}), &B_TITLES)];
    let (_stream, listener) = shared.listener(&frames, &[]).await;
    let server = stand_in(&[
        ("session_A", session_link("ps_A")),
        ("session_B", session_link("ps_B")),
        ("session_N", with_session_data(json!({"plan": "free"}))),
    ])
    .await;
    let webhook = shared.webhook(&server, &[]).await;
    webhook.ask_until(&server, "session_A", &A_TITLES, &listener).await;
    webhook.ask_until(&server, "session_B", &B_TITLES, &listener).await;
    assert!(read(&shared.event_data()).contains(A_TITLES[0]), "the shared file holds other visitors' activity");

    let prompt = webhook.ask(&server, "session_N", "Hello?").await;
    assert_eq!(activity_of(&prompt), NO_ACTIVITY, "{prompt}");
    assert_has_none(&prompt, &A_TITLES);
    assert_has_none(&prompt, &B_TITLES);
}

// ---------------------------------------------------------------------------------------------
// How much, and for how long
// ---------------------------------------------------------------------------------------------

/// Pushes `frame` every 300 ms (a visitor who keeps clicking) until aborted.
fn keep_clicking(stream: &SseServer, frame: String) -> tokio::task::JoinHandle<()> {
    let stream = stream.clone();
    tokio::spawn(async move {
        loop {
            stream.push(frame.clone()).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}

#[tokio::test]
async fn activity_idle_for_longer_than_context_ttl_secs_is_forgotten_while_live_activity_stays() {
    let shared = Shared::new();
    let ttl = [("CONTEXT_TTL_SECS", "2".to_owned())];
    let idle_titles = ["Opened billing idle"];
    let live_titles = ["Still browsing live"];
    let live_frame = actions_frame("ps_live", json!({}), &live_titles);
    // The live visitor's first batch comes first: stored no later than the idle one's, so by
    // the time the idle visitor's activity has expired, the live one has been active for
    // longer than the TTL too.
    let frames = [live_frame.clone(), actions_frame("ps_idle", json!({}), &idle_titles)];
    let (stream, listener) = shared.listener(&frames, &ttl).await;
    let server =
        stand_in(&[("session_idle", session_link("ps_idle")), ("session_live", session_link("ps_live"))]).await;
    let webhook = shared.webhook(&server, &ttl).await;
    // The idle visitor's one batch is stored by now; they do nothing more.
    webhook.ask_until(&server, "session_idle", &idle_titles, &listener).await;
    let stored_by = Instant::now();
    let feeder = keep_clicking(&stream, live_frame);

    // Asked again until their activity is forgotten: at the latest by a question asked 3 s
    // after it was stored (the TTL is 2 s). Questions read the store; they do not keep
    // anything alive.
    let mut idle_probes = 0;
    let idle = loop {
        idle_probes += 1;
        let asked_at = Instant::now();
        let idle = webhook.ask(&server, "session_idle", &format!("Where was I? ({idle_probes})")).await;
        if activity_of(&idle) == NO_ACTIVITY {
            break idle;
        }
        assert!(
            asked_at < stored_by + Duration::from_secs(3),
            "still remembered {:?} after it was stored:\n{idle}",
            asked_at - stored_by
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let live = webhook.ask(&server, "session_live", "Where am I?").await;
    feeder.abort();
    assert_eq!(activity_of(&idle), NO_ACTIVITY, "{idle}");
    assert_has_all(&live, &live_titles);
}

#[tokio::test]
async fn the_links_of_a_visitor_who_keeps_clicking_outlive_context_ttl_secs() {
    let shared = Shared::new();
    let ttl = ("CONTEXT_TTL_SECS", "2".to_owned());
    let titles = ["Still clicking K"];
    let frame = actions_frame("ps_K", json!({"user_id": "u_7", "conversation_id": "session_conv"}), &titles);
    let (stream, listener) = shared.listener(std::slice::from_ref(&frame), std::slice::from_ref(&ttl)).await;
    let server = stand_in(&[("session_user", signed_user("u_7"))]).await;
    let webhook = shared.webhook(&server, &[ttl, link_secret(), trust_stream_conversation_id()]).await;
    // Both links work at first.
    webhook.ask_until(&server, "session_user", &titles, &listener).await;
    webhook.ask_until(&server, "session_conv", &titles, &listener).await;
    let linked_by = Instant::now();

    // The visitor keeps clicking, well within the TTL each time, for twice the TTL. The
    // duration is what is tested: nothing happens at the TTL to wait for, the links must
    // simply still work after it.
    let feeder = keep_clicking(&stream, frame);
    tokio::time::sleep((linked_by + Duration::from_secs(4)).saturating_duration_since(Instant::now())).await;
    let by_user = webhook.ask(&server, "session_user", "Still linked by my user id?").await;
    let by_conversation = webhook.ask(&server, "session_conv", "Still linked by this conversation?").await;
    feeder.abort();
    let expired: Vec<&str> = [("signed user id", &by_user), ("conversation id", &by_conversation)]
        .into_iter()
        .filter(|(_, prompt)| !prompt.contains(titles[0]))
        .map(|(link, _)| link)
        .collect();
    assert!(
        expired.is_empty(),
        "these links expired although the visitor kept clicking: {expired:?}\nby user:\n{by_user}\nby conversation:\n{by_conversation}"
    );
}

#[tokio::test]
async fn context_max_chars_keeps_the_newest_actions() {
    let shared = Shared::new();
    let steps: Vec<String> = (0..30).map(|i| format!("Step {i:02}")).collect();
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    let (_stream, listener) = shared.listener(&[actions_frame("ps_Z", json!({}), &steps)], &[]).await;
    let server = stand_in(&[("session_Z", session_link("ps_Z"))]).await;
    let webhook = shared.webhook(&server, &[("CONTEXT_MAX_CHARS", "400".into())]).await;

    let prompt = webhook.ask_until(&server, "session_Z", &["Step 29"], &listener).await;
    let activity = activity_of(&prompt);
    assert!(!activity.contains("Step 00"), "the oldest action is dropped first:\n{activity}");
    assert!(activity.chars().count() <= 400, "{} characters:\n{activity}", activity.chars().count());
    // What is kept is a run of the newest actions, in order, ending with the last.
    let kept: Vec<&str> = steps.iter().copied().filter(|s| activity.contains(s)).collect();
    assert!(kept.len() > 1 && kept.len() < steps.len(), "{activity}");
    assert_eq!(kept, steps[steps.len() - kept.len()..], "{activity}");
}

/// Answers summary requests (a single user message) with a summary naming the visitor whose
/// actions it lists, and reply requests with [`ANSWER`].
struct SummariesPerVisitor;

impl wiremock::Respond for SummariesPerVisitor {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        let text = messages.first().and_then(|m| m["content"].as_str()).unwrap_or_default();
        let content = match messages.len() {
            1 if text.contains("billing A") => "SUMMARY-A: went to billing.",
            1 if text.contains("export B") => "SUMMARY-B: exported a CSV.",
            1 => "SUMMARY-?",
            _ => ANSWER,
        };
        ResponseTemplate::new(200).set_body_json(json!({"choices": [{"message": {"content": content}}]}))
    }
}

#[tokio::test]
async fn a_visitors_summary_is_in_their_prompt_and_nobody_elses() {
    let shared = Shared::new();
    let llm = MockServer::start().await;
    mount_llm(&llm, SummariesPerVisitor).await;
    let summaries = summary_env(&llm, 2);
    let frames = [actions_frame("ps_A", json!({}), &A_TITLES), actions_frame("ps_B", json!({}), &B_TITLES)];
    let (_stream, listener) = shared.listener(&frames, &summaries).await;
    let server = stand_in(&[("session_A", session_link("ps_A")), ("session_B", session_link("ps_B"))]).await;
    let webhook = shared.webhook(&server, &[]).await;

    let prompt_a = webhook.ask_until(&server, "session_A", &["SUMMARY-A"], &listener).await;
    let prompt_b = webhook.ask_until(&server, "session_B", &["SUMMARY-B"], &listener).await;
    assert!(activity_of(&prompt_a).starts_with("=== SUMMARY ===\n  SUMMARY-A: went to billing.\n"), "{prompt_a}");
    assert_has_all(&prompt_a, &A_TITLES);
    assert_has_none(&prompt_a, &["SUMMARY-B", B_TITLES[0]]);
    assert!(activity_of(&prompt_b).starts_with("=== SUMMARY ===\n  SUMMARY-B: exported a CSV.\n"), "{prompt_b}");
    assert_has_all(&prompt_b, &B_TITLES);
    assert_has_none(&prompt_b, &["SUMMARY-A", A_TITLES[0]]);
}

// ---------------------------------------------------------------------------------------------
// The shared activity file
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn context_scope_shared_puts_the_whole_activity_file_in_every_prompt() {
    let shared = Shared::new();
    let file = format!("{}{}", block(0, A_TITLES[0]), block(0, B_TITLES[0]));
    std::fs::write(shared.event_data(), &file).unwrap();
    let server = stand_in(&[("session_A", session_link("ps_A"))]).await;
    let webhook = shared.webhook(&server, &[("CONTEXT_SCOPE", "shared".into())]).await;

    let prompt = webhook.ask(&server, "session_A", "What did I do?").await;
    assert_eq!(activity_of(&prompt), file, "{prompt}");
}

#[tokio::test]
async fn the_listener_writes_the_reference_activity_file_while_it_feeds_the_store() {
    let shared = Shared::new();
    let (stream, listener) = shared.listener(&[ACTIONS_FULL.to_owned()], &[]).await;
    let file = shared.event_data();
    if !eventually(LIMIT, || read(&file) == EXPECTED).await {
        assert_eq!(read(&file), EXPECTED, "listener running: {}", listener.is_running());
    }

    stream.push(actions_frame("ps_B", json!({}), &B_TITLES[..1])).await;
    let expected = format!("{EXPECTED}{}", block(0, B_TITLES[0]));
    if !eventually(LIMIT, || read(&file) == expected).await {
        assert_eq!(read(&file), expected, "listener running: {}", listener.is_running());
    }
    assert_eq!(
        read(&file).lines().skip(9).collect::<Vec<_>>(),
        [
            "[0] Action: Clicked export B",
            "     Details: The visitor did: Clicked export B",
            "     Page:    https://app.example.com/page"
        ]
    );

    // The same batches reached the store, each under its own session.
    let server = stand_in(&[("session_full", session_link("ps_abc123")), ("session_B", session_link("ps_B"))]).await;
    let webhook = shared.webhook(&server, &[]).await;
    let full = ["Page Load: Dashboard", "Click Export CSV button", "Click billing settings link"];
    let prompt = webhook.ask_until(&server, "session_full", &full, &listener).await;
    assert_eq!(activity_of(&prompt), EXPECTED, "the store renders the session as the file shows it");
    let prompt = webhook.ask_until(&server, "session_B", &B_TITLES[..1], &listener).await;
    assert_eq!(activity_of(&prompt), block(0, B_TITLES[0]));
}

#[tokio::test]
async fn no_session_id_a_visitor_can_set_reaches_anonymous_activity() {
    let shared = Shared::new();
    let anonymous = ["Anonymous click 1", "Anonymous click 2", "Anonymous click 3", "Anonymous click 4"];
    // Batches without a usable session id: missing, null, empty, whitespace.
    let without_id = |session: Option<Value>, title: &str| {
        let frame = actions_frame("placeholder", json!({}), &[title]);
        let mut payload: Value = serde_json::from_str(frame.trim().strip_prefix("data: ").unwrap()).unwrap();
        match session {
            Some(value) => payload["session_id"] = value,
            None => drop(payload.as_object_mut().unwrap().remove("session_id")),
        }
        format!("data: {payload}\n\n")
    };
    let control = ["Control click"];
    let frames = [
        without_id(None, anonymous[0]),
        without_id(Some(Value::Null), anonymous[1]),
        without_id(Some(json!("")), anonymous[2]),
        without_id(Some(json!("   ")), anonymous[3]),
        actions_frame("ps_control", json!({}), &control),
    ];
    let (_stream, listener) = shared.listener(&frames, &[]).await;
    let forged = ["unknown", "", "null", "   ", "None", "undefined", "anonymous", "placeholder"];
    let mut metas: Vec<(String, Value)> = vec![("session_control".into(), session_link("ps_control"))];
    metas.extend(forged.iter().enumerate().map(|(i, id)| (format!("session_forged_{i}"), session_link(id))));
    let metas: Vec<(&str, Value)> = metas.iter().map(|(s, v)| (s.as_str(), v.clone())).collect();
    let server = stand_in(&metas).await;
    let webhook = shared.webhook(&server, &[]).await;
    // Every batch before the control one has been read once the control one is linked.
    webhook.ask_until(&server, "session_control", &control, &listener).await;
    assert!(anonymous.iter().all(|t| read(&shared.event_data()).contains(t)), "the activity file keeps them all");

    for (i, id) in forged.iter().enumerate() {
        let prompt = webhook.ask(&server, &format!("session_forged_{i}"), &format!("What did I do? ({i})")).await;
        assert_has_none(&prompt, &anonymous);
        assert_eq!(activity_of(&prompt), NO_ACTIVITY, "autoplay_session_id {id:?}: {prompt}");
    }
}

#[tokio::test]
async fn with_link_require_signed_session_only_a_signed_autoplay_session_id_links() {
    let shared = Shared::new();
    let frames = [actions_frame("ps_A", json!({}), &A_TITLES), actions_frame("ps_B", json!({}), &B_TITLES)];
    let (_stream, listener) = shared.listener(&frames, &[]).await;
    let signed = with_session_data(
        json!({"autoplay_session_id": "ps_A", "autoplay_session_sig": hmac_hex(LINK_SECRET, "ps_A")}),
    );
    let forged =
        with_session_data(json!({"autoplay_session_id": "ps_B", "autoplay_session_sig": hmac_hex("guess", "ps_B")}));
    let control = with_session_data(
        json!({"autoplay_session_id": "ps_B", "autoplay_session_sig": hmac_hex(LINK_SECRET, "ps_B")}),
    );
    let server = stand_in(&[
        ("session_signed", signed),
        ("session_control", control),
        ("session_unsigned", session_link("ps_B")),
        ("session_forged", forged),
    ])
    .await;
    let require = ("LINK_REQUIRE_SIGNED_SESSION", "true".to_owned());
    let webhook = shared.webhook(&server, &[link_secret(), require.clone()]).await;
    webhook.ask_until(&server, "session_signed", &A_TITLES, &listener).await;
    // ps_B is stored (a signed link reads it); unsigned or forged, it links nothing.
    webhook.ask_until(&server, "session_control", &B_TITLES, &listener).await;
    for conversation in ["session_unsigned", "session_forged"] {
        // A question of its own: the prompt found is this conversation's.
        let prompt = webhook.ask(&server, conversation, &format!("Where am I in {conversation}?")).await;
        assert_eq!(activity_of(&prompt), NO_ACTIVITY, "{conversation}: {prompt}");
    }
    // It needs the key to check the signatures.
    let mut env = webhook_env(&server, SITE, HOOK_SECRET);
    env.extend([require, ("BIND_ADDR", "127.0.0.1:0".to_owned())]);
    let error = standins::apps::webhook(&standins::apps::in_dir(shared.cwd(), &env)).await.err().expect("refused");
    assert!(error.to_string().contains("LINK_REQUIRE_SIGNED_SESSION"), "{error}");
}
