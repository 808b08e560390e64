//! Exactly one timely answer per visitor message: the webhook (in-process through its builder;
//! the real binary where SIGTERM is the point) against stand-ins for OpenAI and the
//! Crisp REST API.

use serde_json::{Value, json};
use standins::bin;
use standins::eventually;
use standins::stand_ins::{
    Env, LLM_PATH, Webhook, all_requests, body_of, completion, compose_ok, last_user_message, meta, mount_conversation,
    mount_llm, no_history, post_body, requests_to, set, visitor_message, webhook_env,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const SITE: &str = "site";
const HOOK_SECRET: &str = "s3cret";
const ANSWER: &str = "Open Settings, then Billing.";
const DEFAULT_FALLBACK: &str = "Thanks for your message! A teammate will get back to you shortly.";
/// The Crisp stand-in numbers the bot's messages from here on.
const FIRST_BOT_FINGERPRINT: u64 = 7001;

/// The user id of the human operator writing in the conversations.
const OPERATOR: &str = "9f0e4c1a-5b7d-4e2f-8a3c-1d2e3f4a5b6c";

const PLUGIN_HOOK: &str = include_str!("fixtures/crisp/plugin-hook-variant.json");

/// Generous limit for something that must happen. (That something does not happen is asserted
/// once the webhook has stopped: `Webhook::stop` lets every accepted message be dealt with.)
const LIMIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Stand-ins
// ---------------------------------------------------------------------------------------------

fn llm_refusal(status: u16) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"error": {"message": "stand-in refusal", "type": "invalid_request_error"}}))
}

/// `POST .../message` accepted, with a new fingerprint each time.
struct Dispatched(AtomicU64);

impl Respond for Dispatched {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let fingerprint = self.0.fetch_add(1, Ordering::SeqCst);
        ResponseTemplate::new(200)
            .set_body_json(json!({"error": false, "reason": "dispatched", "data": {"fingerprint": fingerprint}}))
    }
}

fn conversation(leaf: &str) -> String {
    standins::stand_ins::conversation("[^/]+", leaf)
}

/// One server for OpenAI (answers `llm`) and Crisp (everything accepted; no history).
async fn stand_in(llm: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    mount_llm(&server, llm).await;
    crisp_defaults(&server).await;
    server
}

/// The Crisp routes at their usual answers, below any mock mounted with a higher priority.
async fn crisp_defaults(server: &MockServer) {
    let any = "[^/]+";
    mount_conversation(server, "POST", any, "message", Dispatched(AtomicU64::new(FIRST_BOT_FINGERPRINT)), 10).await;
    mount_conversation(server, "PATCH", any, "compose", compose_ok(), 10).await;
    mount_conversation(server, "GET", any, "meta", meta(json!({"data": {}})), 10).await;
    mount_conversation(server, "GET", any, "messages", no_history(), 10).await;
}

fn message_path(session: &str) -> String {
    standins::stand_ins::message_path(SITE, session)
}

fn compose_path(session: &str) -> String {
    format!("/v1/website/{SITE}/conversation/{session}/compose")
}

/// Waits up to [`LIMIT`] for `count` requests to `verb request_path`; returns those seen.
async fn wait_for(server: &MockServer, verb: &str, request_path: &str, count: usize) -> Vec<Request> {
    standins::stand_ins::wait_for(server, verb, request_path, count, LIMIT).await
}

/// The `content` of each message POST, in order.
/// The replies among `posts`: text messages, not the private notes left for operators.
fn replies(posts: Vec<Request>) -> Vec<Request> {
    posts.into_iter().filter(|r| body_of(r)["type"] != "note").collect()
}

fn contents(posts: &[Request]) -> Vec<String> {
    posts.iter().map(|p| body_of(p)["content"].as_str().expect("content").to_owned()).collect()
}

/// Position of the first request matching `verb request_path` (and `body`, when given).
fn position(requests: &[Request], verb: &str, request_path: &str, body: Option<&Value>) -> Option<usize> {
    requests.iter().position(|r| {
        r.method.as_str() == verb && r.url.path() == request_path && body.is_none_or(|b| &body_of(r) == b)
    })
}

// ---------------------------------------------------------------------------------------------
// Hook bodies
// ---------------------------------------------------------------------------------------------

/// An operator's text message as Crisp echoes it (`message:received`).
fn operator_message(session: &str, fingerprint: u64, content: &str, automated: bool) -> Value {
    standins::stand_ins::operator_message(SITE, session, fingerprint, content, automated, OPERATOR)
}

// ---------------------------------------------------------------------------------------------
// The webhook
// ---------------------------------------------------------------------------------------------

/// The webhook's settings: shared context scope, with `extra` on top.
fn env_with(server: &MockServer, extra: &[(&'static str, &str)]) -> Env {
    let mut env = webhook_env(server, SITE, HOOK_SECRET);
    set(&mut env, "CONTEXT_SCOPE", "shared");
    for (name, value) in extra {
        set(&mut env, name, *value);
    }
    env
}

/// Starts the webhook in-process, in an empty working directory.
async fn start_webhook(server: &MockServer, extra: &[(&'static str, &str)]) -> Webhook {
    let dir = tempfile::tempdir().unwrap();
    let mut webhook = Webhook::in_process(dir.path(), env_with(server, extra)).await;
    webhook.keep_dir(dir);
    webhook
}

/// Starts the binary, in an empty working directory: for the test that signals it.
async fn start_webhook_binary(server: &MockServer, extra: &[(&'static str, &str)]) -> Webhook {
    Webhook::start_in_tempdir(bin!("webhook"), env_with(server, extra), LIMIT).await
}

// ---------------------------------------------------------------------------------------------
// One answer per message
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_hook_redelivered_three_times_is_answered_once() {
    let server = stand_in(completion(ANSWER)).await;
    let mut webhook = start_webhook(&server, &[]).await;
    let hook = visitor_message(SITE, "session_R", 11, "How do I export?");
    for _ in 0..3 {
        webhook.deliver(&hook).await;
    }
    assert_eq!(wait_for(&server, "POST", &message_path("session_R"), 1).await.len(), 1, "{}", webhook.stderr());
    webhook.stop().await;
    assert_eq!(requests_to(&server, "POST", &message_path("session_R")).await.len(), 1, "exactly one reply");
    assert_eq!(requests_to(&server, "POST", LLM_PATH).await.len(), 1, "exactly one LLM call");
}

#[tokio::test]
async fn the_same_fingerprint_in_another_conversation_is_a_different_message() {
    let server = stand_in(completion(ANSWER)).await;
    let webhook = start_webhook(&server, &[]).await;
    webhook.deliver(&visitor_message(SITE, "session_R1", 11, "How do I export?")).await;
    webhook.deliver(&visitor_message(SITE, "session_R2", 11, "How do I export?")).await;
    assert_eq!(wait_for(&server, "POST", &message_path("session_R1"), 1).await.len(), 1);
    assert_eq!(wait_for(&server, "POST", &message_path("session_R2"), 1).await.len(), 1);
}

#[tokio::test]
async fn messages_arriving_while_an_answer_is_written_are_answered_together_by_the_next_one() {
    let server = stand_in(completion(ANSWER).set_delay(Duration::from_millis(1500))).await;
    let mut webhook = start_webhook(&server, &[]).await;
    let session = "session_burst";
    webhook.deliver(&visitor_message(SITE, session, 1, "first question")).await;
    assert_eq!(wait_for(&server, "POST", LLM_PATH, 1).await.len(), 1, "{}", webhook.stderr());
    webhook.deliver(&visitor_message(SITE, session, 2, "second question")).await;
    webhook.deliver(&visitor_message(SITE, session, 3, "third question")).await;
    assert!(
        requests_to(&server, "POST", &message_path(session)).await.is_empty(),
        "test premise: messages 2 and 3 arrived while the first answer was still being written"
    );

    let posts = wait_for(&server, "POST", &message_path(session), 2).await;
    assert_eq!(posts.len(), 2, "{}", webhook.stderr());
    webhook.stop().await;
    assert_eq!(requests_to(&server, "POST", &message_path(session)).await.len(), 2, "exactly two replies in all");
    let calls = requests_to(&server, "POST", LLM_PATH).await;
    assert_eq!(calls.len(), 2, "exactly two LLM calls in all");
    assert!(last_user_message(&calls[0]).ends_with("User question: first question"));
    let second = last_user_message(&calls[1]);
    assert!(second.contains("second question") && second.contains("third question"), "{second}");
    assert!(!second.contains("first question"), "{second}");

    // Never two LLM calls in flight for one conversation: the second starts after the first
    // reply was posted (which follows the first call's answer).
    let all = all_requests(&server).await;
    let llm: Vec<usize> = (0..all.len()).filter(|&i| all[i].url.path() == LLM_PATH).collect();
    let first_post = position(&all, "POST", &message_path(session), None).unwrap();
    assert!(llm[1] > first_post, "the second LLM call overlapped the first");
}

#[tokio::test]
async fn different_conversations_are_answered_in_parallel() {
    let server = stand_in(completion(ANSWER).set_delay(Duration::from_secs(3))).await;
    let webhook = start_webhook(&server, &[]).await;
    webhook.deliver(&visitor_message(SITE, "session_P1", 1, "one")).await;
    webhook.deliver(&visitor_message(SITE, "session_P2", 1, "two")).await;
    assert_eq!(wait_for(&server, "POST", LLM_PATH, 2).await.len(), 2);
    assert!(
        requests_to(&server, "POST", &message_path("session_P1")).await.is_empty(),
        "the second conversation's LLM call started while the first was in flight"
    );
}

// ---------------------------------------------------------------------------------------------
// Typing indicator
// ---------------------------------------------------------------------------------------------

fn typing(kind: &str) -> Value {
    json!({"type": kind, "from": "operator"})
}

#[tokio::test]
async fn typing_starts_before_the_llm_call_and_stops_after_the_reply() {
    let server = stand_in(completion(ANSWER).set_delay(Duration::from_millis(500))).await;
    let webhook = start_webhook(&server, &[]).await;
    let session = "session_T";
    let sent = Instant::now();
    webhook.deliver(&visitor_message(SITE, session, 1, "Are you there?")).await;
    assert_eq!(wait_for(&server, "PATCH", &compose_path(session), 1).await.len(), 1, "{}", webhook.stderr());
    let shown_after = sent.elapsed();
    assert!(shown_after < Duration::from_secs(1), "typing shown {shown_after:?} after the hook");

    assert_eq!(wait_for(&server, "PATCH", &compose_path(session), 2).await.len(), 2, "{}", webhook.stderr());
    let all = all_requests(&server).await;
    let start = position(&all, "PATCH", &compose_path(session), Some(&typing("start"))).expect("start");
    let llm = position(&all, "POST", LLM_PATH, None).expect("LLM call");
    let post = position(&all, "POST", &message_path(session), None).expect("reply");
    let stop = position(&all, "PATCH", &compose_path(session), Some(&typing("stop"))).expect("stop");
    assert!(start < llm && llm < post && post < stop, "order: start {start}, llm {llm}, reply {post}, stop {stop}");
}

#[tokio::test]
async fn typing_stops_when_the_llm_fails_with_or_without_a_fallback() {
    let server = stand_in(llm_refusal(400)).await;
    let with_fallback = start_webhook(&server, &[]).await;
    let without = start_webhook(&server, &[("FALLBACK_MESSAGE", "")]).await;
    with_fallback.deliver(&visitor_message(SITE, "session_F1", 1, "Hello?")).await;
    without.deliver(&visitor_message(SITE, "session_F2", 1, "Hello?")).await;

    for (session, webhook) in [("session_F1", &with_fallback), ("session_F2", &without)] {
        let compose = wait_for(&server, "PATCH", &compose_path(session), 2).await;
        assert_eq!(compose.len(), 2, "{session}: {}", webhook.stderr());
        assert_eq!(body_of(&compose[0]), typing("start"));
        assert_eq!(body_of(&compose[1]), typing("stop"));
    }
    let all = all_requests(&server).await;
    let post = position(&all, "POST", &message_path("session_F1"), None).expect("fallback posted");
    let stop = position(&all, "PATCH", &compose_path("session_F1"), Some(&typing("stop"))).unwrap();
    assert!(post < stop, "typing stops after the fallback is posted");
    // A fallback is posted before typing stops (as above): the attempt for session_F2 is over
    // and posted nothing. (The message stays recorded and is tried again later.)
    assert!(
        requests_to(&server, "POST", &message_path("session_F2")).await.is_empty(),
        "FALLBACK_MESSAGE=\"\" sends nothing"
    );
}

// ---------------------------------------------------------------------------------------------
// Human takeover
// ---------------------------------------------------------------------------------------------

/// Waits until the webhook logged that a human took `session` over.
async fn wait_takeover_logged(webhook: &Webhook, session: &str) {
    let took_over = |log: String| log.lines().any(|l| l.contains("took over the conversation") && l.contains(session));
    let logged = eventually(LIMIT, || took_over(webhook.stderr())).await;
    assert!(logged, "the takeover of {session} was never logged:\n{}", webhook.stderr());
}

#[tokio::test]
async fn a_human_operator_writing_silences_the_bot_in_that_conversation_only() {
    let server = stand_in(completion(ANSWER)).await;
    let mut webhook = start_webhook(&server, &[]).await;
    webhook.deliver(&operator_message("session_H", 999, "Hi, Anna here. Let me check.", false)).await;
    wait_takeover_logged(&webhook, "session_H").await;
    webhook.deliver(&visitor_message(SITE, "session_H", 1000, "Thanks Anna!")).await;
    webhook.deliver(&visitor_message(SITE, "session_other", 1, "Anyone?")).await;

    assert_eq!(wait_for(&server, "POST", &message_path("session_other"), 1).await.len(), 1, "{}", webhook.stderr());
    webhook.stop().await;
    let calls = requests_to(&server, "POST", LLM_PATH).await;
    assert_eq!(calls.len(), 1, "only the other conversation reached the LLM");
    assert!(last_user_message(&calls[0]).ends_with("User question: Anyone?"));
    assert!(requests_to(&server, "POST", &message_path("session_H")).await.is_empty(), "the bot must stay silent");
    assert!(requests_to(&server, "PATCH", &compose_path("session_H")).await.is_empty(), "no typing either");
}

#[tokio::test]
async fn a_takeover_is_in_effect_as_soon_as_the_operators_hook_is_acknowledged() {
    let server = stand_in(completion(ANSWER)).await;
    let mut webhook = start_webhook(&server, &[]).await;
    // The visitor's hook goes out only once the operator's was answered 200.
    webhook.deliver(&operator_message("session_H", 999, "Hi, Anna here. Let me check.", false)).await;
    webhook.deliver(&visitor_message(SITE, "session_H", 1000, "Thanks Anna!")).await;
    // Stopped, the webhook has dealt with the visitor's message (answered or dropped it).
    webhook.stop().await;
    let calls = requests_to(&server, "POST", LLM_PATH).await;
    let typing = requests_to(&server, "PATCH", &compose_path("session_H")).await;
    assert!(
        calls.is_empty() && typing.is_empty(),
        "a visitor message delivered after the operator's hook was acknowledged was still processed \
         ({} LLM call(s), {} typing indicator call(s)): the takeover was not yet in effect",
        calls.len(),
        typing.len()
    );
    assert!(requests_to(&server, "POST", &message_path("session_H")).await.is_empty(), "the bot must stay silent");
}

/// Delivers Crisp's echo of the bot's first reply, then the visitor's next message, which must
/// still be answered: the echo is no human takeover.
async fn echo_then_next_message_is_answered(server: &MockServer, webhook: &Webhook, session: &str) {
    webhook.deliver(&operator_message(session, FIRST_BOT_FINGERPRINT, ANSWER, false)).await;
    // Had the echo been mistaken for a takeover, it would be in effect now that its hook was
    // acknowledged (a_takeover_is_in_effect_as_soon_as_the_operators_hook_is_acknowledged).
    webhook.deliver(&visitor_message(SITE, session, 2, "And how do I get an invoice?")).await;
    let posts = wait_for(server, "POST", &message_path(session), 2).await;
    assert_eq!(posts.len(), 2, "the next visitor message is answered; log:\n{}", webhook.stderr());
}

#[tokio::test]
async fn the_bots_own_echo_does_not_count_as_a_human_takeover() {
    let server = stand_in(completion(ANSWER)).await;
    let webhook = start_webhook(&server, &[]).await;
    let session = "session_E";
    webhook.deliver(&visitor_message(SITE, session, 1, "How do I pay?")).await;
    let posts = wait_for(&server, "POST", &message_path(session), 1).await;
    assert_eq!(posts.len(), 1, "{}", webhook.stderr());
    // Crisp echoes the bot's reply with the fingerprint it assigned, not flagged automated.
    echo_then_next_message_is_answered(&server, &webhook, session).await;
}

#[tokio::test]
async fn a_human_operator_writing_while_the_answer_is_written_drops_that_answer() {
    let server = stand_in(completion(ANSWER).set_delay(Duration::from_millis(1500))).await;
    let mut webhook = start_webhook(&server, &[]).await;
    let session = "session_H3";
    webhook.deliver(&visitor_message(SITE, session, 1, "Can a human help?")).await;
    assert_eq!(wait_for(&server, "POST", LLM_PATH, 1).await.len(), 1, "{}", webhook.stderr());
    webhook.deliver(&operator_message(session, 999, "Anna here, I've got this.", false)).await;
    let compose = wait_for(&server, "PATCH", &compose_path(session), 2).await;
    assert_eq!(compose.len(), 2, "typing is still cleared; log:\n{}", webhook.stderr());
    assert_eq!(body_of(&compose[1]), typing("stop"));
    webhook.stop().await;
    assert!(requests_to(&server, "POST", &message_path(session)).await.is_empty(), "the bot must not talk over Anna");
}

#[tokio::test]
async fn the_bots_echo_arriving_before_crisp_confirms_the_send_is_not_a_takeover() {
    let server = MockServer::start().await;
    mount_llm(&server, completion(ANSWER)).await;
    let slow_send = ResponseTemplate::new(200)
        .set_body_json(json!({"error": false, "reason": "dispatched", "data": {"fingerprint": FIRST_BOT_FINGERPRINT}}))
        .set_delay(Duration::from_millis(1500));
    Mock::given(method("POST"))
        .and(path_regex(conversation("message")))
        .respond_with(slow_send)
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    crisp_defaults(&server).await;
    let webhook = start_webhook(&server, &[]).await;
    let session = "session_E2";
    webhook.deliver(&visitor_message(SITE, session, 1, "How do I pay?")).await;
    assert_eq!(wait_for(&server, "POST", &message_path(session), 1).await.len(), 1, "{}", webhook.stderr());
    // Crisp's echo hook can beat the answer to the send itself.
    echo_then_next_message_is_answered(&server, &webhook, session).await;
}

#[tokio::test]
async fn an_operators_private_note_does_not_silence_the_bot() {
    let server = stand_in(completion(ANSWER)).await;
    let webhook = start_webhook(&server, &[]).await;
    let session = "session_note";
    let mut note = operator_message(session, 556, "Internal: VIP customer", false);
    note["data"]["type"] = json!("note");
    // Had the note been taken for a takeover, it would be in effect now that its hook was
    // acknowledged.
    webhook.deliver(&note).await;
    webhook.deliver(&visitor_message(SITE, session, 1, "How do I export?")).await;
    let posts = wait_for(&server, "POST", &message_path(session), 1).await;
    assert_eq!(contents(&posts), [ANSWER], "{}", webhook.stderr());
}

#[tokio::test]
async fn an_automated_operator_message_does_not_silence_the_bot() {
    let server = stand_in(completion(ANSWER)).await;
    let webhook = start_webhook(&server, &[]).await;
    let session = "session_auto";
    // Had it been taken for a takeover, it would be in effect now that its hook was acknowledged.
    webhook.deliver(&operator_message(session, 555, "Welcome! Ask us anything.", true)).await;
    webhook.deliver(&visitor_message(SITE, session, 1, "How do I export?")).await;
    let posts = wait_for(&server, "POST", &message_path(session), 1).await;
    assert_eq!(posts.len(), 1, "{}", webhook.stderr());
    assert_eq!(contents(&posts), [ANSWER]);
}

#[tokio::test]
async fn the_bot_answers_again_once_human_takeover_secs_have_passed() {
    let server = stand_in(completion(ANSWER)).await;
    let mut webhook = start_webhook(&server, &[("HUMAN_TAKEOVER_SECS", "2")]).await;
    let session = "session_H2";
    webhook.deliver(&operator_message(session, 999, "Anna here.", false)).await;
    wait_takeover_logged(&webhook, session).await;
    // The takeover was recorded at the latest now, so it has expired 3 s from now.
    let taken_over_by = Instant::now();
    let dropped = || webhook.stderr().matches("a human operator has this conversation").count();
    webhook.deliver(&visitor_message(SITE, session, 1, "while the human has it")).await;
    let silent = eventually(LIMIT, || dropped() >= 1).await;
    assert!(silent, "the message during the takeover was not dropped:\n{}", webhook.stderr());
    assert!(requests_to(&server, "POST", LLM_PATH).await.is_empty(), "silent during the takeover");

    // The visitor writes again until the bot answers: the takeover's expiry (wall-clock time
    // in the webhook), waited for. Each message is dealt with before the next: dropped while
    // the takeover lasts, answered once it has expired, and at the latest when written 3 s
    // after it was recorded.
    let mut fingerprint = 1;
    let question = loop {
        fingerprint += 1;
        let written_at = Instant::now();
        let question = format!("after the takeover ({fingerprint})");
        webhook.deliver(&visitor_message(SITE, session, fingerprint, &question)).await;
        let deadline = Instant::now() + LIMIT;
        let answered = loop {
            if !requests_to(&server, "POST", &message_path(session)).await.is_empty() {
                break true;
            }
            if dropped() as u64 >= fingerprint {
                break false;
            }
            assert!(Instant::now() < deadline, "{question:?} neither answered nor dropped:\n{}", webhook.stderr());
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if answered {
            break question;
        }
        assert!(
            written_at < taken_over_by + Duration::from_secs(3),
            "{question:?}, written {:?} after the takeover, was dropped:\n{}",
            written_at - taken_over_by,
            webhook.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Stopped (SIGTERM: every accepted message dealt with first), it posts nothing more.
    webhook.stop().await;
    let posts = requests_to(&server, "POST", &message_path(session)).await;
    assert_eq!(posts.len(), 1, "{}", webhook.stderr());
    let calls = requests_to(&server, "POST", LLM_PATH).await;
    assert_eq!(calls.len(), 1);
    assert!(
        last_user_message(&calls[0]).ends_with(&format!("User question: {question}")),
        "the silenced messages are dropped"
    );
}

// ---------------------------------------------------------------------------------------------
// Retries and fallback
// ---------------------------------------------------------------------------------------------

/// A stand-in whose first `n` message posts get `refusal`; the rest are accepted.
async fn crisp_refusing_first(n: u64, refusal: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    mount_llm(&server, completion(ANSWER)).await;
    Mock::given(method("POST"))
        .and(path_regex(conversation("message")))
        .respond_with(refusal)
        .up_to_n_times(n)
        .with_priority(1)
        .mount(&server)
        .await;
    crisp_defaults(&server).await;
    server
}

/// Sends one visitor message and returns the message posts once `attempts` were seen and the
/// webhook stopped (so that nothing more can come).
async fn attempts_for_one_message(
    mut webhook: Webhook,
    server: &MockServer,
    attempts: usize,
) -> (Webhook, Vec<Request>) {
    webhook.deliver(&visitor_message(SITE, "session_X", 1, "Is this thing on?")).await;
    let posts = wait_for(server, "POST", &message_path("session_X"), attempts).await;
    assert_eq!(posts.len(), attempts, "{}", webhook.stderr());
    webhook.stop().await;
    (webhook, requests_to(server, "POST", &message_path("session_X")).await)
}

#[tokio::test]
async fn crisp_throttling_is_retried_until_the_one_reply_is_accepted() {
    let throttled = ResponseTemplate::new(429).set_body_json(json!({"error": true, "reason": "rate_limited"}));
    let server = crisp_refusing_first(2, throttled).await;
    let (webhook, posts) = attempts_for_one_message(start_webhook(&server, &[]).await, &server, 3).await;
    assert_eq!(posts.len(), 3, "two refused attempts, then the accepted one, then nothing; log:\n{}", webhook.stderr());
    assert_eq!(contents(&posts), [ANSWER, ANSWER, ANSWER], "the same reply each time");
    assert_eq!(requests_to(&server, "POST", LLM_PATH).await.len(), 1, "the answer is not written again");
}

#[tokio::test]
async fn a_crisp_server_error_is_retried_until_the_one_reply_is_accepted() {
    let failed = ResponseTemplate::new(500).set_body_json(json!({"error": true, "reason": "internal_error"}));
    let server = crisp_refusing_first(1, failed).await;
    let (webhook, posts) = attempts_for_one_message(start_webhook(&server, &[]).await, &server, 2).await;
    assert_eq!(posts.len(), 2, "one failed attempt, then the accepted one; log:\n{}", webhook.stderr());
    assert_eq!(contents(&posts), [ANSWER, ANSWER]);
}

#[tokio::test]
async fn a_crisp_400_is_not_retried_and_its_reason_is_logged() {
    let invalid =
        ResponseTemplate::new(400).set_body_json(json!({"error": true, "reason": "invalid_data", "data": {}}));
    let server = crisp_refusing_first(100, invalid).await;
    // Its log is what this test reads.
    let webhook = start_webhook(&server, &[]).await;
    webhook.deliver(&visitor_message(SITE, "session_X", 1, "Is this thing on?")).await;
    // The attempt ends with this line; the reply is tried again later, as a whole (after a
    // back-off), not by the Crisp client repeating the refused post.
    let ended = eventually(LIMIT, || webhook.stderr().contains("reply not delivered")).await;
    assert!(ended, "log:\n{}", webhook.stderr());
    let posts = requests_to(&server, "POST", &message_path("session_X")).await;
    assert_eq!(posts.len(), 1, "exactly one post in the attempt; log:\n{}", webhook.stderr());
    assert!(webhook.stderr().contains("invalid_data"), "log:\n{}", webhook.stderr());
}

#[tokio::test]
async fn llm_unavailability_is_retried_and_the_real_answer_posted() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(LLM_PATH))
        .respond_with(llm_refusal(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_llm(&server, completion(ANSWER)).await;
    crisp_defaults(&server).await;
    let webhook = start_webhook(&server, &[]).await;
    webhook.deliver(&visitor_message(SITE, "session_L", 1, "Hello?")).await;
    let posts = wait_for(&server, "POST", &message_path("session_L"), 1).await;
    assert_eq!(posts.len(), 1, "{}", webhook.stderr());
    assert_eq!(contents(&posts), [ANSWER], "the real answer, not the fallback");
    assert_eq!(requests_to(&server, "POST", LLM_PATH).await.len(), 3, "two refused calls, then the answered one");
}

#[tokio::test]
async fn when_the_llm_cannot_answer_the_visitor_gets_the_default_fallback_message() {
    let server = stand_in(llm_refusal(400)).await;
    let mut webhook = start_webhook(&server, &[]).await;
    webhook.deliver(&visitor_message(SITE, "session_D", 1, "Hello?")).await;
    // The fallback, then the context note for operators.
    let posts = wait_for(&server, "POST", &message_path("session_D"), 2).await;
    assert_eq!(posts.len(), 2, "{}", webhook.stderr());
    assert_eq!(
        post_body(&posts[0]),
        json!({"type": "text", "from": "operator", "origin": "chat", "content": DEFAULT_FALLBACK})
    );
    assert_eq!(body_of(&posts[1])["type"], "note");
    webhook.stop().await;
    assert_eq!(replies(requests_to(&server, "POST", &message_path("session_D")).await).len(), 1);
}

#[tokio::test]
async fn an_empty_llm_answer_gets_the_fallback_message_not_an_empty_reply() {
    let server = stand_in(completion("   ")).await;
    let webhook = start_webhook(&server, &[]).await;
    webhook.deliver(&visitor_message(SITE, "session_D", 1, "Hello?")).await;
    let posts = replies(wait_for(&server, "POST", &message_path("session_D"), 1).await);
    assert_eq!(contents(&posts), [DEFAULT_FALLBACK], "{}", webhook.stderr());
}

#[tokio::test]
async fn fallback_message_replaces_the_default_fallback() {
    let server = stand_in(llm_refusal(400)).await;
    let webhook = start_webhook(&server, &[("FALLBACK_MESSAGE", "Custom")]).await;
    webhook.deliver(&visitor_message(SITE, "session_D", 1, "Hello?")).await;
    let posts = replies(wait_for(&server, "POST", &message_path("session_D"), 1).await);
    assert_eq!(contents(&posts), ["Custom"], "{}", webhook.stderr());
}

// ---------------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sigterm_lets_every_accepted_message_be_answered_then_exits_zero() {
    let server = stand_in(completion(ANSWER).set_delay(Duration::from_secs(2))).await;
    let mut webhook = start_webhook_binary(&server, &[]).await;
    let sessions = ["session_S1", "session_S2", "session_S3"];
    for session in sessions {
        webhook.deliver(&visitor_message(SITE, session, 1, "Quick question")).await;
    }
    let posted_before = requests_to(&server, "POST", &message_path(sessions[0])).await.len();
    webhook.proc().signal("TERM");
    assert_eq!(posted_before, 0, "test premise: the replies were still being written at SIGTERM");

    let status = webhook.exited(LIMIT).await.unwrap_or_else(|| panic!("still running:\n{}", webhook.stderr()));
    assert_eq!(status.code(), Some(0), "log:\n{}", webhook.stderr());
    for session in sessions {
        let posts = requests_to(&server, "POST", &message_path(session)).await;
        assert_eq!(contents(&posts), [ANSWER], "{session} answered before exit; log:\n{}", webhook.stderr());
    }
}

// ---------------------------------------------------------------------------------------------
// Conversation history
// ---------------------------------------------------------------------------------------------

/// A stand-in whose conversation history is `history`.
async fn stand_in_with_history(history: Value) -> MockServer {
    let server = MockServer::start().await;
    mount_llm(&server, completion(ANSWER)).await;
    let history = ResponseTemplate::new(200).set_body_json(json!({"error": false, "data": history}));
    mount_conversation(&server, "GET", "[^/]+", "messages", history, 1).await;
    crisp_defaults(&server).await;
    server
}

fn earlier_turns() -> Value {
    json!([
        {"type": "text", "from": "user", "content": "How do I export?", "fingerprint": 1},
        {"type": "text", "from": "operator", "content": "Click Export.", "fingerprint": 2},
        {"type": "text", "from": "user", "content": "How do I import?", "fingerprint": 3}
    ])
}

/// Roles and contents of the one LLM call made for "How do I import?" (fingerprint 3).
async fn llm_messages_with(env: &[(&'static str, &str)]) -> Vec<(String, String)> {
    let server = stand_in_with_history(earlier_turns()).await;
    let webhook = start_webhook(&server, env).await;
    webhook.deliver(&visitor_message(SITE, "session_hist", 3, "How do I import?")).await;
    let calls = wait_for(&server, "POST", LLM_PATH, 1).await;
    assert_eq!(calls.len(), 1, "{}", webhook.stderr());
    body_of(&calls[0])["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap().to_owned(), m["content"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test]
async fn earlier_turns_of_the_conversation_precede_the_question() {
    let messages = llm_messages_with(&[]).await;
    let roles: Vec<&str> = messages.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"], "{messages:?}");
    assert_eq!(messages[1].1, "How do I export?");
    assert_eq!(messages[2].1, "Click Export.");
    // The message being answered is the question, not an earlier turn.
    assert!(messages[3].1.ends_with("User question: How do I import?"), "{messages:?}");
}

#[tokio::test]
async fn history_turns_zero_sends_only_the_system_prompt_and_the_question() {
    let messages = llm_messages_with(&[("HISTORY_TURNS", "0")]).await;
    let roles: Vec<&str> = messages.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(roles, ["system", "user"], "{messages:?}");
    assert!(messages[1].1.ends_with("User question: How do I import?"), "{messages:?}");
}

// ---------------------------------------------------------------------------------------------
// Plugin hook signatures
// ---------------------------------------------------------------------------------------------

/// Extra request headers, name and value.
type Headers<'a> = Vec<(&'a str, &'a str)>;

struct SignedHook {
    secret: String,
    website: String,
    session: String,
    body: String,
    timestamp: String,
    signature: String,
}

/// The fixture's hook, signed as Crisp signs it; its recorded timestamp is years old, so the
/// tests sign it again with a fresh one (`timestamp`/`signature`).
fn signed_hook() -> SignedHook {
    let vector: Value = serde_json::from_str(PLUGIN_HOOK).unwrap();
    let body = vector["raw_body"].as_str().unwrap().to_owned();
    let parsed: Value = serde_json::from_str(&body).unwrap();
    let secret = vector["signing_secret_test_only"].as_str().unwrap().to_owned();
    // The fixture's own signature checks out (the signing below is Crisp's).
    let recorded = vector["headers"]["X-Crisp-Request-Timestamp"].as_str().unwrap();
    assert_eq!(sign_hook(&secret, recorded, &body), vector["headers"]["X-Crisp-Signature"].as_str().unwrap());
    let timestamp = unix_now().as_secs().to_string();
    SignedHook {
        website: parsed["website_id"].as_str().unwrap().to_owned(),
        session: parsed["data"]["session_id"].as_str().unwrap().to_owned(),
        signature: sign_hook(&secret, &timestamp, &body),
        secret,
        body,
        timestamp,
    }
}

/// Crisp's plugin-hook signature: hex HMAC-SHA256(secret, `[timestamp;body]`).
fn sign_hook(secret: &str, timestamp: &str, body: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("[{timestamp};{body}]").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn unix_now() -> Duration {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap()
}

#[tokio::test]
async fn with_crisp_hook_secret_a_correctly_signed_plugin_hook_is_accepted_and_answered() {
    let hook = signed_hook();
    let server = stand_in(completion(ANSWER)).await;
    let webhook = start_webhook(&server, &[("CRISP_HOOK_SECRET", &hook.secret), ("WEBSITE_ID", &hook.website)]).await;
    let headers = [("X-Crisp-Request-Timestamp", hook.timestamp.as_str()), ("X-Crisp-Signature", &hook.signature)];
    assert_eq!(webhook.post_raw(&hook.body, &headers).await, 200, "{}", webhook.stderr());
    let reply = format!("/v1/website/{}/conversation/{}/message", hook.website, hook.session);
    assert_eq!(contents(&wait_for(&server, "POST", &reply, 1).await), [ANSWER], "{}", webhook.stderr());
}

#[tokio::test]
async fn with_crisp_hook_secret_an_altered_or_unsigned_plugin_hook_is_refused() {
    let hook = signed_hook();
    let server = stand_in(completion(ANSWER)).await;
    let mut webhook =
        start_webhook(&server, &[("CRISP_HOOK_SECRET", &hook.secret), ("WEBSITE_ID", &hook.website)]).await;
    let altered_body = hook.body.replace("Hey :)", "Hey :(");
    assert_ne!(altered_body, hook.body);
    let pretty_body = serde_json::to_string_pretty(&serde_json::from_str::<Value>(&hook.body).unwrap()).unwrap();
    let timestamp = hook.timestamp.as_str();
    let signature = hook.signature.as_str();
    let cases: [(&str, &str, Headers); 6] = [
        (
            "one byte of the body altered",
            &altered_body,
            vec![("X-Crisp-Request-Timestamp", timestamp), ("X-Crisp-Signature", signature)],
        ),
        (
            "the body re-serialised",
            &pretty_body,
            vec![("X-Crisp-Request-Timestamp", timestamp), ("X-Crisp-Signature", signature)],
        ),
        (
            "another timestamp",
            &hook.body,
            vec![("X-Crisp-Request-Timestamp", "1506985697"), ("X-Crisp-Signature", signature)],
        ),
        ("no signature header", &hook.body, vec![("X-Crisp-Request-Timestamp", timestamp)]),
        ("no timestamp header", &hook.body, vec![("X-Crisp-Signature", signature)]),
        ("no headers at all", &hook.body, vec![]),
    ];
    for (case, body, headers) in &cases {
        assert_eq!(webhook.post_raw(body, headers).await, 401, "{case}");
    }
    webhook.stop().await;
    assert!(requests_to(&server, "POST", LLM_PATH).await.is_empty(), "a refused hook is never answered");
}

#[tokio::test]
async fn with_crisp_hook_secret_an_hour_old_signed_hook_is_refused_and_fresh_ones_in_seconds_or_milliseconds_are_accepted()
 {
    let hook = signed_hook();
    let server = stand_in(completion(ANSWER)).await;
    let mut webhook =
        start_webhook(&server, &[("CRISP_HOOK_SECRET", &hook.secret), ("WEBSITE_ID", &hook.website)]).await;
    let now = unix_now();
    let hour_old = (now.as_secs() - 3600).to_string();
    let hour_old_ms = (now.as_millis() - 3_600_000).to_string();
    let ahead = (now.as_secs() + 3600).to_string();
    for (case, timestamp) in
        [("an hour old", &hour_old), ("an hour old, in ms", &hour_old_ms), ("an hour ahead", &ahead)]
    {
        let signature = sign_hook(&hook.secret, timestamp, &hook.body);
        let headers = [("X-Crisp-Request-Timestamp", timestamp.as_str()), ("X-Crisp-Signature", signature.as_str())];
        assert_eq!(webhook.post_raw(&hook.body, &headers).await, 401, "{case}");
    }

    // Fresh, in seconds: accepted and answered.
    let seconds = unix_now().as_secs().to_string();
    let signature = sign_hook(&hook.secret, &seconds, &hook.body);
    let headers = [("X-Crisp-Request-Timestamp", seconds.as_str()), ("X-Crisp-Signature", signature.as_str())];
    assert_eq!(webhook.post_raw(&hook.body, &headers).await, 200, "{}", webhook.stderr());
    let reply = format!("/v1/website/{}/conversation/{}/message", hook.website, hook.session);
    assert_eq!(contents(&wait_for(&server, "POST", &reply, 1).await), [ANSWER], "{}", webhook.stderr());
    // Fresh, in milliseconds: accepted too (another message, so it is not a duplicate).
    let body = hook.body.replace("Hey :)", "Hey again :)");
    assert_ne!(body, hook.body);
    let millis = unix_now().as_millis().to_string();
    let signature = sign_hook(&hook.secret, &millis, &body);
    let headers = [("X-Crisp-Request-Timestamp", millis.as_str()), ("X-Crisp-Signature", signature.as_str())];
    assert_eq!(webhook.post_raw(&body, &headers).await, 200, "{}", webhook.stderr());
    // Stopped, the webhook has answered all it accepted: the stale hooks' words (those of the
    // fresh one in seconds) were asked once, for that fresh one.
    webhook.stop().await;
    let asked: Vec<String> = requests_to(&server, "POST", LLM_PATH).await.iter().map(last_user_message).collect();
    let stale = asked.iter().filter(|q| q.ends_with("User question: Hey :)")).count();
    assert_eq!(stale, 1, "a stale hook is never answered: {asked:#?}");
}

#[tokio::test]
async fn hook_max_age_secs_is_validated() {
    let server = stand_in(completion(ANSWER)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = env_with(&server, &[("HOOK_MAX_AGE_SECS", "0")]);
    env.push(("BIND_ADDR", "127.0.0.1:0".into()));
    let error = standins::apps::webhook(&standins::apps::in_dir(dir.path(), &env)).await.err().expect("refused");
    assert!(error.to_string().contains("HOOK_MAX_AGE_SECS"), "{error}");
}
