//! The webhook's HTTP surface, driven in-process on the real router: who gets in, which bodies
//! are refused, and which hooks start a reply. The LLM and Crisp are one wiremock stand-in.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use bytes::Bytes;
use plumbing::process::{Service, parse_vars};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};
use std::time::{Duration, Instant};
use tower::ServiceExt;
use webhook::config::Cli;
use webhook::routes::MAX_HOOK_BODY;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const WEBSITE: &str = "42286ab3-b29a-4fde-8538-da0ae501d825";
const SESSION: &str = "session_36ba3566-9651-4790-afc8-ffedbccc317f";
const SECRET: &str = "s3cret-Hook-Key";
const LLM_PATH: &str = "/v1/chat/completions";

const DOCS_EXAMPLE: &[u8] = include_bytes!("../../../tests/fixtures/crisp/message-send-text.json");
const OPERATOR_ECHO: &[u8] = include_bytes!("../../../tests/fixtures/crisp/message-received-operator-echo.json");
const FILE_MESSAGE: &[u8] = include_bytes!("../../../tests/fixtures/crisp/message-send-file.json");
const SET_EMAIL: &[u8] = include_bytes!("../../../tests/fixtures/crisp/session-set-email.json");

/// Generous limit for something that must happen.
const LIMIT: Duration = Duration::from_secs(10);

/// The real router of a webhook built by [`webhook::App::build`], whose replies go to one
/// wiremock server standing in for both the LLM and Crisp. The app runs too (as `main` runs
/// it), so that [`Harness::llm_calls_once_stopped`] can stop it as SIGTERM does.
struct Harness {
    server: MockServer,
    app: Router,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    running: Option<tokio::task::JoinHandle<()>>,
    _activity: tempfile::NamedTempFile,
    _data: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Self {
        Self::with_secret(SECRET).await
    }

    async fn with_secret(secret: &str) -> Self {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(LLM_PATH))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "choices": [{"message": {"role": "assistant", "content": "Hello from the stand-in"}}]
            })))
            .mount(&server)
            .await;
        Mock::given(path_regex("^/v1/website/"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"error": false, "reason": "ok", "data": {}})))
            .mount(&server)
            .await;
        let activity = tempfile::NamedTempFile::new().expect("activity file");
        std::fs::write(activity.path(), "[0] Action: opened the pricing page\n").expect("write activity");
        let data = tempfile::tempdir().expect("data dir");
        let base = format!("{}/v1", server.uri());
        // Built as `main` builds it, from settings; only the router is driven, in-process.
        let vars = [
            ("WEBHOOK_SECRET", secret.to_owned()),
            ("CRISP_TOKEN_IDENTIFIER", "ident".to_owned()),
            ("CRISP_TOKEN_KEY", "key".to_owned()),
            ("WEBSITE_ID", WEBSITE.to_owned()),
            ("CRISP_API_BASE_URL", base.clone()),
            ("OPENAI_API_KEY", "sk-test".to_owned()),
            ("OPENAI_BASE_URL", base),
            ("CONTEXT_SCOPE", "shared".to_owned()),
            ("EVENT_DATA_PATH", activity.path().display().to_string()),
            ("DATA_DIR", data.path().display().to_string()),
            ("BIND_ADDR", "127.0.0.1:0".to_owned()),
            ("FALLBACK_MESSAGE", String::new()),
            ("MAX_CONCURRENT_REPLIES", "4".to_owned()),
        ];
        let settings = parse_vars::<Cli>(&vars).expect("settings").into_settings().expect("valid settings");
        let app = webhook::App::build(settings).await.expect("the webhook builds");
        let router = app.router();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(async move {
            let stopped = async move {
                let _ = stopped.await;
            };
            app.run(stopped).await.expect("the webhook stops cleanly");
        });
        Harness { server, app: router, stop: Some(stop), running: Some(running), _activity: activity, _data: data }
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, Bytes) {
        let response = self.app.clone().oneshot(request).await.expect("the router never fails");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("response body");
        (status, body)
    }

    async fn get(&self, uri: &str) -> (StatusCode, Bytes) {
        self.send(Request::builder().method(Method::GET).uri(uri).body(Body::empty()).unwrap()).await
    }

    /// POSTs `body` to `/crisp/hooks` with `query` (no `?`; empty for none).
    async fn hook(&self, query: &str, body: impl Into<Body>) -> (StatusCode, Bytes) {
        let uri = if query.is_empty() { "/crisp/hooks".to_owned() } else { format!("/crisp/hooks?{query}") };
        let request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .unwrap();
        self.send(request).await
    }

    async fn hook_with_key(&self, body: impl Into<Body>) -> (StatusCode, Bytes) {
        self.hook(&format!("key={SECRET}"), body).await
    }

    async fn requests_to(&self, verb: &str, request_path: &str) -> usize {
        let received = self.server.received_requests().await.unwrap_or_default();
        received.iter().filter(|r| r.method.as_str() == verb && r.url.path() == request_path).count()
    }

    async fn llm_calls(&self) -> usize {
        self.requests_to("POST", LLM_PATH).await
    }

    /// Waits up to [`LIMIT`] for `count` requests to `verb request_path`; returns how many came.
    async fn wait_for(&self, verb: &str, request_path: &str, count: usize) -> usize {
        let deadline = Instant::now() + LIMIT;
        loop {
            let seen = self.requests_to(verb, request_path).await;
            if seen >= count || Instant::now() > deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the app as SIGTERM does (every reply to an accepted hook finished first), then
    /// returns how many LLM calls there were: all there will ever be.
    async fn llm_calls_once_stopped(&mut self) -> usize {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let running = self.running.take().expect("stopped once");
        tokio::time::timeout(LIMIT, running).await.expect("the webhook stops in time").expect("the webhook stops");
        self.llm_calls().await
    }
}

fn json_body(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

fn crisp_message_path() -> String {
    format!("/v1/website/{WEBSITE}/conversation/{SESSION}/message")
}

#[tokio::test]
async fn hook_without_a_key_is_unauthorized_and_starts_nothing() {
    let mut harness = Harness::start().await;
    for query in ["", "other=1", "key", "keys=s3cret-Hook-Key", "KEY=s3cret-Hook-Key"] {
        let (status, body) = harness.hook(query, DOCS_EXAMPLE).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "query {query:?}");
        assert_eq!(json_body(&body)["status"], "error", "query {query:?}");
    }
    assert_eq!(harness.llm_calls_once_stopped().await, 0);
}

#[tokio::test]
async fn hook_with_a_wrong_key_is_unauthorized_and_starts_nothing() {
    let mut harness = Harness::start().await;
    for query in ["key=", "key=wrong", "key=s3cret-Hook-Kez"] {
        let (status, _) = harness.hook(query, DOCS_EXAMPLE).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "query {query:?}");
    }
    assert_eq!(harness.llm_calls_once_stopped().await, 0);
}

#[tokio::test]
async fn keys_differing_only_in_length_or_case_are_unauthorized() {
    let mut harness = Harness::start().await;
    for key in [
        "s3cret-hook-key",
        "S3CRET-HOOK-KEY",
        "s3cret-Hook-KEY",
        "s3cret-Hook-Ke",
        "s3cret-Hook-Keyy",
        "s3cret-Hook-Key%20",
        "%20s3cret-Hook-Key",
        "s3cret",
    ] {
        let (status, _) = harness.hook(&format!("key={key}"), DOCS_EXAMPLE).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "key {key:?}");
    }
    assert_eq!(harness.llm_calls_once_stopped().await, 0);
}

#[tokio::test]
async fn docs_example_with_the_right_key_is_acknowledged_with_status_ok_and_answered() {
    let harness = Harness::start().await;
    let (status, body) = harness.hook_with_key(DOCS_EXAMPLE).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_body(&body), json!({"status": "ok"}));
    assert_eq!(harness.wait_for("POST", LLM_PATH, 1).await, 1, "the visitor message reaches the LLM");
    assert_eq!(harness.wait_for("POST", &crisp_message_path(), 1).await, 1, "the answer is posted to Crisp");
}

#[tokio::test]
async fn the_key_is_url_decoded_before_it_is_compared() {
    let harness = Harness::with_secret("a b&c").await;
    let (status, body) = harness.hook("key=a%20b%26c", DOCS_EXAMPLE).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_body(&body), json!({"status": "ok"}));
    for query in ["key=a%20b&c", "key=a%20b%2526c", "key=a%2Bb%26c"] {
        let (status, _) = harness.hook(query, DOCS_EXAMPLE).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "query {query:?}");
    }
}

#[tokio::test]
async fn body_over_one_mebibyte_is_payload_too_large() {
    let harness = Harness::start().await;
    let mut body = b"{\"event\":\"message:send\",\"data\":{},\"pad\":\"".to_vec();
    body.resize(MAX_HOOK_BODY + 1, b'x');
    let (status, _) = harness.hook_with_key(body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn body_of_exactly_one_mebibyte_is_accepted() {
    let harness = Harness::start().await;
    let mut body = b"{}".to_vec();
    body.resize(MAX_HOOK_BODY, b' ');
    let (status, _) = harness.hook_with_key(body).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn non_json_body_is_a_bad_request() {
    let harness = Harness::start().await;
    for body in [&b"not json"[..], b"", b"{\"event\":", b"\xff\xfe"] {
        let (status, response) = harness.hook_with_key(body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "body {body:?}");
        assert_eq!(json_body(&response)["status"], "error");
    }
}

#[tokio::test]
async fn json_that_is_not_an_object_is_a_bad_request() {
    let harness = Harness::start().await;
    for body in ["[]", "[1, 2]", "\"message:send\"", "42", "null"] {
        let (status, _) = harness.hook_with_key(body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "body {body}");
    }
}

#[tokio::test]
async fn operator_echo_file_message_and_set_email_are_acknowledged_without_calling_the_llm() {
    let mut harness = Harness::start().await;
    for (name, body) in [("operator echo", OPERATOR_ECHO), ("file message", FILE_MESSAGE), ("set email", SET_EMAIL)] {
        let (status, response) = harness.hook_with_key(body).await;
        assert_eq!(status, StatusCode::OK, "{name}");
        assert_eq!(json_body(&response), json!({"status": "ok"}), "{name}");
    }
    assert_eq!(harness.llm_calls_once_stopped().await, 0);
}

#[tokio::test]
async fn message_for_another_website_is_acknowledged_without_calling_the_llm() {
    let mut harness = Harness::start().await;
    let other = "00000000-0000-4000-8000-000000000000";
    let body = String::from_utf8(DOCS_EXAMPLE.to_vec()).unwrap().replace(WEBSITE, other);
    assert!(body.contains(other));
    let (status, _) = harness.hook_with_key(body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(harness.llm_calls_once_stopped().await, 0);
}

#[tokio::test]
async fn health_and_root_answer_json_with_a_status() {
    let harness = Harness::start().await;
    for uri in ["/health", "/"] {
        let (status, body) = harness.get(uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert!(json_body(&body)["status"].is_string(), "{uri}: {}", String::from_utf8_lossy(&body));
    }
}

#[tokio::test]
async fn unknown_route_is_not_found() {
    let harness = Harness::start().await;
    for uri in ["/nope", "/crisp", "/crisp/hooks/extra", "/health/x"] {
        let (status, _) = harness.get(uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "GET {uri}");
    }
    let (status, _) = harness
        .send(Request::builder().method(Method::POST).uri("/hooks?key=s3cret-Hook-Key").body(Body::from("{}")).unwrap())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "POST /hooks");
}

// ---- Properties -------------------------------------------------------------------------------

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() })
}

/// A string field of a hook: absent, a likely value, a random string, or not a string at all.
fn field(likely: &'static [&'static str]) -> impl Strategy<Value = Option<Value>> {
    proptest::option::of(prop_oneof![
        3 => proptest::sample::select(likely).prop_map(Value::from),
        2 => ".{0,16}".prop_map(Value::from),
        1 => prop_oneof![Just(Value::Null), any::<i64>().prop_map(Value::from), any::<bool>().prop_map(Value::from), Just(json!([])), Just(json!({}))],
    ])
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map(".{0,8}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Hook-shaped JSON objects with random `event`, `data.from`, `data.type` and friends.
fn hook_shaped_json() -> impl Strategy<Value = Vec<u8>> {
    let event = field(&["message:send", "message:received", "session:set_email", "message:updated"]);
    let from = field(&["user", "operator"]);
    let kind = field(&["text", "file", "picker", "note"]);
    let website = field(&[WEBSITE, "another-website"]);
    let session = field(&[SESSION, "", "session_x"]);
    let content = field(&["Hey :)", ""]);
    let fingerprint = proptest::option::of(prop_oneof![any::<u64>().prop_map(Value::from), arbitrary_json()]);
    let data_is_object = proptest::bool::weighted(0.9);
    (event, from, kind, website, session, content, fingerprint, data_is_object, arbitrary_json()).prop_map(
        |(event, from, kind, website, session, content, fingerprint, data_is_object, other)| {
            let mut data = Map::new();
            for (name, value) in [
                ("from", from),
                ("type", kind),
                ("website_id", website.clone()),
                ("session_id", session),
                ("content", content),
                ("fingerprint", fingerprint),
            ] {
                if let Some(value) = value {
                    data.insert(name.into(), value);
                }
            }
            let mut envelope = Map::new();
            if let Some(event) = event {
                envelope.insert("event".into(), event);
            }
            if let Some(website) = website {
                envelope.insert("website_id".into(), website);
            }
            envelope.insert("data".into(), if data_is_object { Value::Object(data) } else { other });
            serde_json::to_vec(&envelope).unwrap()
        },
    )
}

fn any_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        hook_shaped_json(),
        arbitrary_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
    ]
}

#[test]
fn random_bodies_with_the_right_key_never_get_a_server_error() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let harness = runtime.block_on(Harness::start());
    runner(512)
        .run(&any_body(), |body| {
            let (status, response) = runtime.block_on(harness.hook_with_key(body));
            prop_assert!(!status.is_server_error(), "{status}: {}", String::from_utf8_lossy(&response));
            prop_assert!(
                [StatusCode::OK, StatusCode::BAD_REQUEST].contains(&status),
                "unexpected {status}: {}",
                String::from_utf8_lossy(&response)
            );
            Ok(())
        })
        .unwrap();
}

/// Whether the decoded query names the right key (such queries are left out).
fn carries_the_right_key(query: &str) -> bool {
    form_urlencoded::parse(query.as_bytes()).any(|(name, value)| name == "key" && value == SECRET)
}

fn query_without_the_right_key() -> impl Strategy<Value = String> {
    let safe = "[A-Za-z0-9._~-]{0,24}";
    prop_oneof![
        "[A-Za-z0-9%&=+._~-]{0,48}",
        safe.prop_map(|v| format!("key={v}")),
        safe.prop_filter("not the key name", |n| n != "key").prop_map(|name| format!("{name}={SECRET}")),
        (0..SECRET.len(), proptest::char::range('!', '~')).prop_map(|(at, c)| {
            let mut key: Vec<char> = SECRET.chars().collect();
            key[at] = c;
            let key: String = key.into_iter().collect();
            format!("key={}", form_urlencoded::byte_serialize(key.as_bytes()).collect::<String>())
        }),
        (0..SECRET.len()).prop_map(|len| format!("key={}", &SECRET[..len])),
        safe.prop_map(|v| format!("key={SECRET}{v}")),
    ]
    .prop_filter("must not carry the right key", |q| !carries_the_right_key(q))
}

#[test]
fn random_queries_without_the_right_key_are_always_unauthorized() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut harness = runtime.block_on(Harness::start());
    runner(512)
        .run(&query_without_the_right_key(), |query| {
            let (status, _) = runtime.block_on(harness.hook(&query, DOCS_EXAMPLE));
            prop_assert_eq!(status, StatusCode::UNAUTHORIZED, "query {:?}", query);
            Ok(())
        })
        .unwrap();
    assert_eq!(runtime.block_on(harness.llm_calls_once_stopped()), 0);
}
