//! Proactive offers, end to end: the listener notices a visitor going back and forth on a
//! loopback Autoplay stream, the webhook (linked to that visitor by Crisp's `session:set_data`
//! hook) decides, asks the OpenAI stand-in for the words and posts them to the Crisp stand-in.
//! Both run in-process, two apps sharing one `DATA_DIR`, each with its own log; the restart test
//! kills the webhook's binary (`kill -9`). Every suppression is checked by its outcome in
//! `proactive_offers_total` and by what Crisp did not receive.
//!
//! With `TEST_REDIS_URL` the same tests run with both apps on Redis (firings through the Redis
//! stream, the gate's records in Redis).

use bytes::Bytes;
use serde_json::{Value, json};
use standins::apps::{self, Runner};
use standins::sse_server::{Plan, SseServer};
use standins::stand_ins::{
    DEFAULT_PRIORITY, completion, http, llm_calls, mount_conversation, mount_crisp_catch_all, operator_message,
    post_body, requests_to, visitor_message, visitor_stand_in, wait_for, webhook_env,
};
use standins::{Proc, bin, eventually, read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};
use wiremock::{MockServer, ResponseTemplate};

const SITE: &str = "site";
const HOOK_SECRET: &str = "s3cret";
const CRISP_SESSION: &str = "session_7f1c2a9e-1111-4c3b-9d55-0123456789ab";
const AUTOPLAY_SESSION: &str = "ps_stuck_visitor";
const OFFER: &str = "Looking for the invoice export? I can show you where it is.";
const LIMIT: Duration = Duration::from_secs(20);

fn offer_answer(message: &str) -> ResponseTemplate {
    completion(&json!({"send": true, "message": message}).to_string())
}

/// An `actions` frame: one pageview per page, a second apart from `start` (Unix seconds).
fn pages_frame(session: &str, pages: &[&str], start: f64) -> String {
    let actions: Vec<Value> = pages
        .iter()
        .enumerate()
        .map(|(i, page)| {
            let at = start + i as f64;
            json!({
                "index": i, "type": "pageview", "title": format!("Page Load: {page}"),
                "description": format!("User landed on {page}"),
                "timestamp_start": at, "timestamp_end": at + 1.0,
                "raw_url": format!("https://app.example.com{page}"),
                "canonical_url": format!("https://app.example.com{page}"),
            })
        })
        .collect();
    let frame = json!({
        "type": "actions", "product_id": "prod_abc", "session_id": session, "user_id": "user_1",
        "count": actions.len(), "forwarded_at": start, "actions": actions,
    });
    format!("data: {frame}\n\n")
}

/// Back and forth between two pages: two A→B→A cycles.
fn ping_pong(session: &str, start: f64) -> String {
    pages_frame(session, &["/billing", "/invoices", "/billing", "/invoices"], start)
}

fn now() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64()
}

fn set_data(session: &str, data: Value) -> Value {
    json!({
        "website_id": SITE, "event": "session:set_data",
        "data": {"website_id": SITE, "session_id": session, "data": data},
        "timestamp": 1_700_123_470_000_u64
    })
}

/// Both apps in one working directory with one `DATA_DIR`, the stream stand-in and the
/// OpenAI + Crisp stand-in.
struct Scene {
    dir: tempfile::TempDir,
    stream: SseServer,
    server: MockServer,
    listener: Runner,
    webhook: standins::stand_ins::Webhook,
    /// Start time of the next frame's actions (each firing has an id of its own).
    clock: f64,
}

impl Scene {
    /// `llm`: how the OpenAI stand-in answers; `history`: the Crisp conversation's messages;
    /// `extra`: webhook settings on top.
    async fn start(llm: ResponseTemplate, history: Value, extra: &[(&'static str, String)]) -> Scene {
        let dir = tempfile::tempdir().unwrap();
        Scene::start_in(dir, llm, history, extra, false).await
    }

    /// In `dir`; with `webhook_binary`, the webhook is its binary (the listener is in-process).
    async fn start_in(
        dir: tempfile::TempDir,
        llm: ResponseTemplate,
        history: Value,
        extra: &[(&'static str, String)],
        webhook_binary: bool,
    ) -> Scene {
        let server = visitor_stand_in(SITE, llm, &[]).await;
        mount_conversation(
            &server,
            "GET",
            SITE,
            "messages",
            ResponseTemplate::new(200).set_body_json(json!({"error": false, "data": history})),
            DEFAULT_PRIORITY - 1,
        )
        .await;
        mount_crisp_catch_all(&server).await;
        let stream = SseServer::start(vec![Plan::StreamThenHold(Vec::<Bytes>::new())], None).await;
        let data_dir = dir.path().join("data");
        let listener_env = [
            ("STREAM_URL", stream.url.clone()),
            ("SUMMARY_THRESHOLD", "0".to_owned()),
            ("DATA_DIR", data_dir.display().to_string()),
            ("PROACTIVE_TRIGGERS", "ping_pong".to_owned()),
        ];
        let listener = apps::listener(&apps::in_dir(dir.path(), &listener_env)).await.unwrap_or_else(|e| panic!("{e}"));
        let listener = Runner::InProcess(listener);
        let mut env = webhook_env(&server, SITE, HOOK_SECRET);
        env.push(("DATA_DIR", data_dir.display().to_string()));
        env.push(("PROACTIVE_TRIGGERS", "ping_pong".to_owned()));
        env.extend(extra.iter().cloned());
        let webhook = if webhook_binary {
            standins::stand_ins::Webhook::start(bin!("webhook"), dir.path(), env, LIMIT).await
        } else {
            standins::stand_ins::Webhook::in_process(dir.path(), env).await
        };
        assert!(
            eventually(LIMIT, || !stream.requests().is_empty()).await,
            "the listener never connected:\n{}",
            listener.log()
        );
        Scene { dir, stream, server, listener, webhook, clock: 1_800_000_000.0 }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Links the Crisp conversation to the Autoplay session, as the widget's session data does.
    async fn link(&self) {
        self.webhook.deliver(&set_data(CRISP_SESSION, json!({"autoplay_session_id": AUTOPLAY_SESSION}))).await;
    }

    /// The visitor goes back and forth once more.
    async fn ping_pong(&mut self) {
        self.stream.push(ping_pong(AUTOPLAY_SESSION, self.clock)).await;
        self.clock += 100.0;
    }

    async fn metrics(&self) -> String {
        http().get(self.webhook.metrics_url()).send().await.unwrap().text().await.unwrap()
    }

    /// Waits until `proactive_offers_total{trigger="ping_pong",outcome}` reaches `count`.
    async fn wait_outcome(&self, outcome: &str, count: u64) {
        let series = format!("proactive_offers_total{{trigger=\"ping_pong\",outcome=\"{outcome}\"}} {count}");
        let deadline = Instant::now() + LIMIT;
        loop {
            let metrics = self.metrics().await;
            if metrics.lines().any(|l| l == series) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "never saw {series}\n{}\nwebhook log:\n{}\nlistener log:\n{}",
                metrics.lines().filter(|l| l.starts_with("proactive")).collect::<Vec<_>>().join("\n"),
                self.webhook.stderr(),
                self.listener.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn message_path(&self) -> String {
        format!("/v1/website/{SITE}/conversation/{CRISP_SESSION}/message")
    }

    fn initiate_path(&self) -> String {
        format!("/v1/website/{SITE}/conversation/{CRISP_SESSION}/initiate")
    }

    async fn offers_sent(&self) -> Vec<Value> {
        requests_to(&self.server, "POST", &self.message_path()).await.iter().map(post_body).collect()
    }

    /// The visitor offered nothing, nor the conversation started. Called once the firing's
    /// outcome was counted ([`Scene::wait_outcome`]): a firing is settled after its offer was
    /// sent or not, so what was sent for it is all there will be.
    async fn assert_nothing_sent(&self) {
        assert!(self.offers_sent().await.is_empty(), "{:?}", self.offers_sent().await);
        assert!(requests_to(&self.server, "POST", &self.initiate_path()).await.is_empty());
    }
}

#[tokio::test]
async fn a_linked_visitor_who_ping_pongs_gets_one_offer_initiated_then_sent() {
    let mut scene = Scene::start(offer_answer(OFFER), json!([]), &[]).await;
    scene.link().await;
    scene.ping_pong().await;
    scene.wait_outcome("sent", 1).await;
    let calls = requests_to(&scene.server, "POST", &scene.initiate_path()).await;
    assert_eq!(calls.len(), 1, "the visitor never wrote: the conversation is initiated first");
    let sent = scene.offers_sent().await;
    assert_eq!(
        sent,
        [json!({"type": "text", "from": "operator", "origin": "chat", "content": OFFER, "automated": true})]
    );
    let all = standins::stand_ins::all_requests(&scene.server).await;
    let position = |p: &str| all.iter().position(|r| r.method.as_str() == "POST" && r.url.path() == p).unwrap();
    assert!(position(&scene.initiate_path()) < position(&scene.message_path()), "initiate, then the message");
    // The offer's prompt: its own, from this visitor's activity, temperature 0.3.
    let offer_call = llm_calls(&scene.server).await.into_iter().next().expect("the LLM was asked");
    assert_eq!(offer_call["temperature"], 0.3);
    assert!(offer_call["max_tokens"].as_u64().unwrap() <= 200);
    let prompt = offer_call["messages"][1]["content"].as_str().unwrap();
    assert!(prompt.contains("trigger: ping_pong") && prompt.contains("/invoices"), "{prompt}");
    // The same visitor going on: no second offer within the cooldown.
    scene.ping_pong().await;
    scene.wait_outcome("cooldown", 1).await;
    assert_eq!(scene.offers_sent().await.len(), 1, "one offer only");
    let log = scene.webhook.stderr();
    assert!(log.contains("proactive offer sent"), "{log}");
}

#[tokio::test]
async fn an_unlinked_visitor_gets_nothing() {
    let mut scene = Scene::start(offer_answer(OFFER), json!([]), &[]).await;
    scene.ping_pong().await;
    scene.wait_outcome("unlinked", 1).await;
    scene.assert_nothing_sent().await;
    assert!(llm_calls(&scene.server).await.is_empty(), "no LLM call for an unlinked visitor");
}

#[tokio::test]
async fn offers_stop_at_the_cap_per_session() {
    let extra = [("PROACTIVE_MAX_OFFERS", "1".to_owned()), ("PROACTIVE_COOLDOWN_SECS", "1".to_owned())];
    let mut scene = Scene::start(offer_answer(OFFER), json!([]), &extra).await;
    scene.link().await;
    scene.ping_pong().await;
    scene.wait_outcome("sent", 1).await;
    // The duration is what is tested: the cap holds once PROACTIVE_COOLDOWN_SECS=1 has run
    // out (wall-clock time in the binary, and no event: the cap is checked first, so no
    // outcome tells when the cooldown ends). The offer was recorded before its outcome was
    // counted, so its cooldown has run out 1.1 s from now.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    scene.ping_pong().await;
    scene.wait_outcome("capped", 1).await;
    assert_eq!(scene.offers_sent().await.len(), 1);
}

#[tokio::test]
async fn the_site_wide_cap_holds() {
    let extra = [("PROACTIVE_MAX_PER_MINUTE", "1".to_owned())];
    let mut scene = Scene::start(offer_answer(OFFER), json!([]), &extra).await;
    scene.link().await;
    let other = "session_7f1c2a9e-2222-4c3b-9d55-0123456789ab";
    scene.webhook.deliver(&set_data(other, json!({"autoplay_session_id": "ps_other"}))).await;
    scene.ping_pong().await;
    scene.wait_outcome("sent", 1).await;
    scene.stream.push(ping_pong("ps_other", 1_900_000_000.0)).await;
    scene.wait_outcome("capped", 1).await;
    let to_other =
        requests_to(&scene.server, "POST", &format!("/v1/website/{SITE}/conversation/{other}/message")).await;
    assert!(to_other.is_empty());
}

#[tokio::test]
async fn a_human_operator_holds_offers_back() {
    let mut scene = Scene::start(offer_answer(OFFER), json!([]), &[]).await;
    scene.link().await;
    scene.webhook.deliver(&operator_message(SITE, CRISP_SESSION, 77, "Hi, Anna here", false, "operator_anna")).await;
    scene.ping_pong().await;
    scene.wait_outcome("human", 1).await;
    scene.assert_nothing_sent().await;
}

#[tokio::test]
async fn a_conversation_with_a_recent_message_is_busy() {
    let recent = json!([{
        "type": "text", "from": "user", "origin": "chat", "content": "hello?",
        "fingerprint": 5, "timestamp": ((now() - 10.0) * 1000.0) as u64
    }]);
    let mut scene = Scene::start(offer_answer(OFFER), recent, &[]).await;
    scene.link().await;
    scene.ping_pong().await;
    scene.wait_outcome("busy", 1).await;
    scene.assert_nothing_sent().await;
}

#[tokio::test]
async fn the_model_may_decline() {
    let decline = completion(r#"{"send": false, "message": ""}"#);
    let mut scene = Scene::start(decline, json!([]), &[]).await;
    scene.link().await;
    scene.ping_pong().await;
    scene.wait_outcome("declined", 1).await;
    scene.assert_nothing_sent().await;
}

#[tokio::test]
async fn the_template_goes_when_the_model_fails() {
    let template = "Lost between billing pages? Ask me anything.";
    let traces = tempfile::tempdir().unwrap();
    let extra =
        [("PROACTIVE_TEMPLATE_PING_PONG", template.to_owned()), ("TRACE_DIR", traces.path().display().to_string())];
    let mut scene = Scene::start(ResponseTemplate::new(500), json!([]), &extra).await;
    scene.link().await;
    scene.ping_pong().await;
    scene.wait_outcome("sent", 1).await;
    let sent = scene.offers_sent().await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["content"], template);
    assert_eq!(sent[0]["automated"], true);
    // The offer's trace: the firing, the outcome, the words and where they came from.
    let trace_of_offer = || {
        std::fs::read_dir(traces.path())
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().contains("-offer-"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
    };
    assert!(eventually(LIMIT, || trace_of_offer().is_some()).await, "no offer trace");
    let trace: Value = serde_json::from_str(&trace_of_offer().unwrap()).unwrap();
    assert_eq!(trace["trigger"], "ping_pong");
    assert_eq!(trace["outcome"], "sent");
    assert_eq!(trace["message"], template);
    assert_eq!(trace["from_template"], true);
    assert_eq!(trace["initiated"], true);
    assert_eq!(trace["crisp_session"], CRISP_SESSION);
    assert_eq!(trace["autoplay_session"], AUTOPLAY_SESSION);
}

#[tokio::test]
async fn an_answered_offer_is_engagement_and_the_reply_knows_why() {
    let mut scene = Scene::start(offer_answer(OFFER), json!([]), &[]).await;
    scene.link().await;
    scene.ping_pong().await;
    scene.wait_outcome("sent", 1).await;
    // Crisp echoes the offer as an operator message: the bot's own, never a human takeover.
    scene.webhook.deliver(&operator_message(SITE, CRISP_SESSION, 4242, OFFER, false, "bot")).await;
    scene.webhook.deliver(&visitor_message(SITE, CRISP_SESSION, 9001, "yes, where is the export?")).await;
    let replies = wait_for(&scene.server, "POST", &scene.message_path(), 2, LIMIT).await;
    assert_eq!(replies.len(), 2, "the offer, then the reply:\n{}", scene.webhook.stderr());
    let reply_call = llm_calls(&scene.server).await.pop().unwrap();
    let system: Vec<&str> = reply_call["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "system")
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert!(
        system.iter().any(|s| s.contains("You reached out to this visitor first") && s.contains("ping_pong")),
        "{system:?}"
    );
    let metrics = scene.metrics().await;
    assert!(metrics.lines().any(|l| l == "proactive_engaged_total 1"), "{metrics}");
    // A second message: its reply still knows why the bot reached out; engagement counts once.
    scene.webhook.deliver(&visitor_message(SITE, CRISP_SESSION, 9002, "and as PDF?")).await;
    assert_eq!(wait_for(&scene.server, "POST", &scene.message_path(), 3, LIMIT).await.len(), 3);
    let second = llm_calls(&scene.server).await.pop().unwrap();
    assert!(second.to_string().contains("You reached out to this visitor first"), "{second}");
    let metrics = scene.metrics().await;
    assert!(metrics.lines().any(|l| l == "proactive_engaged_total 1"), "{metrics}");
}

#[tokio::test]
async fn an_unanswered_offer_doubles_the_cooldown() {
    if std::env::var("TEST_REDIS_URL").is_ok() {
        return; // the record is seeded into the state file, which only the file mode reads
    }
    // An offer two and a half minutes ago that the visitor never answered: dismissed, so the
    // 100 s cooldown is now 200 s, and an offer that would be allowed otherwise is held back.
    let dir = tempfile::tempdir().unwrap();
    seed_state(&dir.path().join("data"), now() - 150.0);
    let extra = [("PROACTIVE_COOLDOWN_SECS", "100".to_owned()), ("PROACTIVE_MAX_OFFERS", "5".to_owned())];
    let mut scene = Scene::start_in(dir, offer_answer(OFFER), json!([]), &extra, false).await;
    scene.link().await;
    scene.ping_pong().await;
    scene.wait_outcome("cooldown", 1).await;
    scene.assert_nothing_sent().await;
    // The state file is saved in the background: wait for the dismissal to reach it.
    let path = scene.data_dir().join("proactive.state");
    let dismissed = |state: &str| state.contains(r#""dismissals":1"#) && state.contains(r#""state":"dismissed""#);
    let saved = eventually(LIMIT, || dismissed(&read(&path))).await;
    assert!(saved, "{}", read(&path));
}

/// A state file holding one unanswered offer to the test's visitor at `at`.
fn seed_state(data_dir: &Path, at: f64) {
    std::fs::create_dir_all(data_dir).unwrap();
    let state = json!({
        "visitors": {CRISP_SESSION: [{
            "autoplay_session": AUTOPLAY_SESSION, "offers": 1, "dismissals": 0, "handed_off": false,
            "last_offer": {"at": at, "trigger": "dwell", "firing_id": "ps:dwell:1", "detail": "stayed", "state": "offered"}
        }, at]}
    });
    std::fs::write(data_dir.join("proactive.state"), state.to_string()).unwrap();
}

#[tokio::test]
async fn a_restart_never_offers_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut scene = Scene::start_in(dir, offer_answer(OFFER), json!([]), &[], true).await;
    scene.link().await;
    scene.ping_pong().await;
    scene.wait_outcome("sent", 1).await;
    // kill -9, then the same webhook again: the firing is not read (or offered) again.
    scene.webhook.proc().signal("KILL");
    let mut env = webhook_env(&scene.server, SITE, HOOK_SECRET);
    env.push(("DATA_DIR", scene.data_dir().display().to_string()));
    env.push(("PROACTIVE_TRIGGERS", "ping_pong".to_owned()));
    scene.webhook = standins::stand_ins::Webhook::start(bin!("webhook"), scene.dir.path(), env, LIMIT).await;
    // The cooldown survived the restart; and firings are read in order, so once the new one is
    // settled the old one would have been offered again by now, had it been read again.
    scene.ping_pong().await;
    scene.wait_outcome("cooldown", 1).await;
    assert_eq!(scene.offers_sent().await.len(), 1, "{}", scene.webhook.stderr());
}

#[tokio::test]
async fn proactive_settings_are_checked_at_start() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    for (name, value, expected) in [
        ("PROACTIVE_TRIGGERS", "ping_pong,nagging", "PROACTIVE_TRIGGERS"),
        ("PROACTIVE_COOLDOWN_SECS", "0", "PROACTIVE_COOLDOWN_SECS"),
    ] {
        let mut env = webhook_env(&server, SITE, HOOK_SECRET);
        env.push(("PROACTIVE_TRIGGERS", "ping_pong".to_owned()));
        standins::stand_ins::set(&mut env, name, value);
        env.push(("BIND_ADDR", "127.0.0.1:0".to_owned()));
        let mut proc = Proc::spawn(bin!("webhook"), dir.path(), &env, &[]);
        let status = proc.wait_exit(LIMIT).expect("exits");
        assert!(!status.success());
        assert!(proc.stderr().contains(expected), "{}", proc.stderr());
    }
    // Crisp is never called by a rejected start.
    assert!(standins::stand_ins::all_requests(&server).await.is_empty());
}

#[tokio::test]
async fn an_offer_goes_when_crisp_cannot_list_the_messages() {
    let mut scene = Scene::start(offer_answer(OFFER), json!([]), &[]).await;
    mount_conversation(&scene.server, "GET", SITE, "messages", ResponseTemplate::new(403), 1).await;
    scene.link().await;
    scene.ping_pong().await;
    scene.wait_outcome("sent", 1).await;
    assert_eq!(requests_to(&scene.server, "POST", &scene.initiate_path()).await.len(), 1);
    assert_eq!(scene.offers_sent().await.len(), 1);
}

#[tokio::test]
async fn a_signed_user_id_links_and_an_unsigned_one_does_not() {
    use hmac::{Hmac, Mac};
    let link_secret = "link-secret";
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(link_secret.as_bytes()).unwrap();
    mac.update(b"user_1");
    let signature = hex::encode(mac.finalize().into_bytes());
    let extra = [("LINK_SECRET", link_secret.to_owned())];
    let mut scene = Scene::start(offer_answer(OFFER), json!([]), &extra).await;
    // Unsigned (a forged signature): no link, no offer.
    let forged = json!({"autoplay_user_id": "user_1", "autoplay_user_sig": "00".repeat(32)});
    scene.webhook.deliver(&set_data(CRISP_SESSION, forged)).await;
    scene.ping_pong().await;
    scene.wait_outcome("unlinked", 1).await;
    assert!(scene.offers_sent().await.is_empty());
    // Signed by the site's backend: the visitor's firings reach this conversation.
    let signed = json!({"autoplay_user_id": "user_1", "autoplay_user_sig": signature});
    scene.webhook.deliver(&set_data(CRISP_SESSION, signed)).await;
    scene.ping_pong().await;
    scene.wait_outcome("sent", 1).await;
    assert_eq!(scene.offers_sent().await.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// A stream's conversation_id is a claim
// ---------------------------------------------------------------------------------------------

/// The Autoplay session of someone else, whose batches claim the visitor's conversation.
const ATTACKER_SESSION: &str = "ps_att";

/// Back and forth by `session`, its batch carrying `conversation_id`.
fn claiming_ping_pong(session: &str, conversation: &str, start: f64) -> String {
    let frame = ping_pong(session, start);
    let mut value: Value = serde_json::from_str(frame.trim().trim_start_matches("data: ")).unwrap();
    value["conversation_id"] = json!(conversation);
    format!("data: {value}\n\n")
}

#[tokio::test]
async fn a_batch_claiming_a_conversation_whose_link_does_not_match_gets_no_offer_there() {
    let scene = Scene::start(offer_answer(OFFER), json!([]), &[]).await;
    // The conversation's own session data links to nothing (the stand-in's default meta).
    scene.stream.push(claiming_ping_pong(ATTACKER_SESSION, CRISP_SESSION, scene.clock)).await;
    scene.wait_outcome("unlinked", 1).await;
    scene.assert_nothing_sent().await;
    assert!(llm_calls(&scene.server).await.is_empty(), "nothing worded from the claiming session");
}

#[tokio::test]
async fn a_batch_claiming_a_conversation_whose_own_link_matches_still_gets_its_offer() {
    let scene = Scene::start(offer_answer(OFFER), json!([]), &[]).await;
    // No session:set_data hook: the claim is checked against the conversation's session data
    // as Crisp holds it.
    standins::stand_ins::mount_session_meta(
        &scene.server,
        SITE,
        CRISP_SESSION,
        &json!({"data": {"autoplay_session_id": ATTACKER_SESSION}}),
    )
    .await;
    scene.stream.push(claiming_ping_pong(ATTACKER_SESSION, CRISP_SESSION, scene.clock)).await;
    scene.wait_outcome("sent", 1).await;
    assert_eq!(scene.offers_sent().await.len(), 1);
}

#[tokio::test]
async fn with_trust_stream_conversation_id_the_claim_links_on_its_own() {
    let extra = [("TRUST_STREAM_CONVERSATION_ID", "true".to_owned())];
    let scene = Scene::start(offer_answer(OFFER), json!([]), &extra).await;
    scene.stream.push(claiming_ping_pong(ATTACKER_SESSION, CRISP_SESSION, scene.clock)).await;
    scene.wait_outcome("sent", 1).await;
    assert_eq!(scene.offers_sent().await.len(), 1);
}

#[tokio::test]
async fn alternating_autoplay_sessions_do_not_reset_a_conversations_cap() {
    let extra = [("PROACTIVE_MAX_OFFERS", "1".to_owned()), ("PROACTIVE_COOLDOWN_SECS", "1".to_owned())];
    let mut scene = Scene::start(offer_answer(OFFER), json!([]), &extra).await;
    scene.link().await;
    scene.ping_pong().await;
    scene.wait_outcome("sent", 1).await;
    // The same conversation, now linked to another Autoplay session of the visitor.
    scene.webhook.deliver(&set_data(CRISP_SESSION, json!({"autoplay_session_id": "ps_second"}))).await;
    // The cap is checked before the cooldown: no need to wait it out.
    scene.stream.push(ping_pong("ps_second", scene.clock)).await;
    scene.wait_outcome("capped", 1).await;
    assert_eq!(scene.offers_sent().await.len(), 1);
}
