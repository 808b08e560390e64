//! `/mcp` with a real MCP client (rmcp's Streamable HTTP client): the whole webhook runs
//! in-process on port 0 (`webhook::App`), over a file store seeded through its write API and a
//! wiremock stand-in for Crisp's REST API. Hugo's signed calls go through a small signing
//! proxy, which signs each request body as Crisp does (or wrongly, for the refusal tests).
//! With `TEST_REDIS_URL` set, the store and the signatures' bindings are on that Redis (under a
//! key prefix of each test's own).

use activity::action::{ActionRecord, BatchRecord};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use clap::Parser;
use hmac::{Hmac, Mac};
use plumbing::process::Service;
use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject};
use rmcp::service::{RoleClient, RunningService, ServiceExt};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use sha2::Sha256;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const WEBSITE: &str = "42286ab3-b29a-4fde-8538-da0ae501d825";
const OTHER_WEBSITE: &str = "0f2b8a8e-1111-2222-3333-444455556666";
const SIGNING_SECRET: &str = "mcp_sec_test_0123456789";
const API_KEY: &str = "key-for-other-clients-0123456789";
/// A conversation whose session data links it to `ps_1` (Ada's session).
const ADA_CONVERSATION: &str = "session_ada-1111";
/// A conversation Crisp knows nothing linking about.
const UNLINKED_CONVERSATION: &str = "session_nobody-2222";
/// A conversation that does not exist on our website (Crisp answers 404).
const UNKNOWN_CONVERSATION: &str = "session_elsewhere-3333";

type Client = RunningService<RoleClient, ()>;

struct Webhook {
    addr: SocketAddr,
    crisp: MockServer,
    _data: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn action(title: &str, i: i64, at: f64) -> ActionRecord<'static> {
    ActionRecord {
        title: title.to_owned().into(),
        description: format!("User did {title}").into(),
        canonical_url: "https://app.example.com/reports".into(),
        raw_url: "https://app.example.com/reports?tab=2".into(),
        kind: "click".into(),
        index: i,
        timestamp_start: at,
        timestamp_end: at + 0.5,
    }
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Ada (session ps_1, user u_ada) and Bob (session ps_2, user u_bob) in the store the webhook
/// built from `args` reads.
async fn seed(args: &[&str]) {
    let cli = webhook::config::Cli::try_parse_from(args).unwrap();
    let settings = cli.store.settings().unwrap();
    let store = settings.open_writer(settings.connect_redis().unwrap()).unwrap();
    let t = now() - 120.0;
    let ada = BatchRecord {
        session_id: Some("ps_1".into()),
        user_id: Some("u_ada".into()),
        actions: vec![action("Open Reports", 0, t), action("Click Export CSV", 1, t + 10.0)],
        ..BatchRecord::default()
    };
    let bob = BatchRecord {
        session_id: Some("ps_2".into()),
        user_id: Some("u_bob".into()),
        actions: (0..60).map(|i| action(&format!("Bob secret step {i}"), i, t + i as f64)).collect(),
        ..BatchRecord::default()
    };
    store.record_batch(&ada, SystemTime::now()).await.unwrap();
    store.record_batch(&bob, SystemTime::now()).await.unwrap();
    store.record_summary("ps_1", "Ada is exporting a report.", SystemTime::now()).await.unwrap();
}

async fn start(signing_secret: Option<&str>, api_key: Option<&str>) -> Webhook {
    start_with(signing_secret, api_key, &[]).await
}

/// The webhook with `extra` flags on top.
async fn start_with(signing_secret: Option<&str>, api_key: Option<&str>, extra: &[&str]) -> Webhook {
    let crisp = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/v1/website/{WEBSITE}/conversation/{ADA_CONVERSATION}/meta")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"error": false, "data": {"data": {"autoplay_session_id": "ps_1"}}})),
        )
        .mount(&crisp)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v1/website/{WEBSITE}/conversation/{UNLINKED_CONVERSATION}/meta")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"error": false, "data": {"data": {}}})))
        .mount(&crisp)
        .await;
    // The conversations that exist on our website; any other is Crisp's 404.
    for conversation in [ADA_CONVERSATION, UNLINKED_CONVERSATION] {
        Mock::given(method("GET"))
            .and(path(format!("/v1/website/{WEBSITE}/conversation/{conversation}")))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"error": false, "reason": "resolved", "data": {"session_id": conversation}})),
            )
            .mount(&crisp)
            .await;
    }
    Mock::given(method("GET"))
        .and(path(format!("/v1/website/{WEBSITE}/conversation/{UNKNOWN_CONVERSATION}")))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(json!({"error": true, "reason": "session_not_found", "data": {}})),
        )
        .mount(&crisp)
        .await;
    let data = tempfile::tempdir().unwrap();
    let base = format!("{}/v1", crisp.uri());
    let data_dir = data.path().to_str().unwrap().to_owned();
    let redis_url = std::env::var("TEST_REDIS_URL").ok();
    let prefix = format!("test-mcp-{}:", data.path().file_name().unwrap().to_string_lossy());
    let mut args = vec![
        "webhook",
        "--webhook-secret",
        "hook-secret",
        "--crisp-token-identifier",
        "ident",
        "--crisp-token-key",
        "key",
        "--website-id",
        WEBSITE,
        "--crisp-api-base-url",
        &base,
        "--openai-api-key",
        "sk-test",
        "--data-dir",
        &data_dir,
        "--bind-addr",
        "127.0.0.1:0",
    ];
    if let Some(url) = &redis_url {
        args.extend(["--redis-url", url]);
        if !extra.contains(&"--redis-key-prefix") {
            args.extend(["--redis-key-prefix", &prefix]);
        }
    }
    if let Some(secret) = signing_secret {
        args.extend(["--mcp-signing-secret", secret]);
    }
    if let Some(key) = api_key {
        args.extend(["--mcp-api-key", key]);
    }
    args.extend(extra);
    seed(&args).await;
    let settings = webhook::config::Cli::try_parse_from(args).unwrap().into_settings().unwrap();
    let app = webhook::App::build(settings).await.unwrap();
    let addr = app.addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));
    Webhook { addr, crisp, _data: data, _stop: stop }
}

/// How the signing proxy signs what passes through it.
#[derive(Clone, Copy, PartialEq)]
enum Signing {
    Good,
    WrongSecret,
    Stale,
    OtherWebsite,
    NoTimestamp,
}

struct Proxy {
    target: String,
    signing: Signing,
    session: Option<&'static str>,
    http: reqwest::Client,
}

fn sign(secret: &str, timestamp: &str, website: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{website}.").as_bytes());
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn forward(
    State(proxy): State<Arc<Proxy>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut request = proxy.http.request(method, format!("{}{}", proxy.target, uri.path()));
    for (name, value) in &headers {
        if !["host", "content-length", "connection"].contains(&name.as_str()) {
            request = request.header(name, value);
        }
    }
    // The default MCP_SIGNATURE_WINDOW_SECS is 120 s (Crisp's own example allows 300).
    let at = now() as i64 - if proxy.signing == Signing::Stale { 200 } else { 0 };
    let website = if proxy.signing == Signing::OtherWebsite { OTHER_WEBSITE } else { WEBSITE };
    let secret = if proxy.signing == Signing::WrongSecret { "mcp_sec_wrong" } else { SIGNING_SECRET };
    let timestamp = at.to_string();
    request = request.header("x-crisp-signature", sign(secret, &timestamp, website, &body));
    request = request.header("x-crisp-website-id", website);
    if proxy.signing != Signing::NoTimestamp {
        request = request.header("x-crisp-timestamp", &timestamp);
    }
    if let Some(session) = proxy.session {
        request = request.header("x-crisp-session-id", session);
    }
    let answer = request.body(body).send().await.unwrap();
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
    let mut out = HeaderMap::new();
    for (name, value) in answer.headers() {
        if !["content-length", "transfer-encoding", "connection"].contains(&name.as_str()) {
            out.insert(name.clone(), value.clone());
        }
    }
    (status, out, answer.bytes().await.unwrap()).into_response()
}

/// A proxy in front of the webhook that signs as Hugo does; returns its `/mcp` URL.
async fn hugo_proxy(webhook: &Webhook, signing: Signing, session: Option<&'static str>) -> String {
    let proxy =
        Arc::new(Proxy { target: format!("http://{}", webhook.addr), signing, session, http: reqwest::Client::new() });
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/mcp")
}

async fn connect(url: String, bearer: Option<&str>) -> Result<Client, String> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url);
    if let Some(key) = bearer {
        config = config.auth_header(key);
    }
    let transport = StreamableHttpClientTransport::from_config(config);
    tokio::time::timeout(Duration::from_secs(10), ().serve(transport))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())
}

async fn call(client: &Client, tool: &str, arguments: Value) -> CallToolResult {
    let mut params = CallToolRequestParams::new(tool.to_owned());
    if let Value::Object(map) = arguments {
        params = params.with_arguments(map as JsonObject);
    }
    client.call_tool(params).await.unwrap()
}

fn text_of(result: &CallToolResult) -> String {
    result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect::<Vec<_>>().join("\n")
}

async fn tool_names(client: &Client) -> Vec<String> {
    client.list_all_tools().await.unwrap().into_iter().map(|t| t.name.into_owned()).collect()
}

#[tokio::test]
async fn hugo_signed_call_gets_its_own_visitors_activity_as_text_and_structure() {
    let webhook = start(Some(SIGNING_SECRET), None).await;
    let client = connect(hugo_proxy(&webhook, Signing::Good, Some(ADA_CONVERSATION)).await, None).await.unwrap();
    let info = client.peer_info().expect("initialized");
    assert!(info.instructions.as_deref().unwrap_or("").contains("get_visitor_activity"));
    assert_eq!(tool_names(&client).await, ["get_visitor_activity"]);
    let tools = client.list_all_tools().await.unwrap();
    assert!(tools[0].description.as_deref().unwrap().contains("doesn't work"));

    let result = call(&client, "get_visitor_activity", json!({})).await;
    assert_ne!(result.is_error, Some(true));
    let text = text_of(&result);
    assert_eq!(
        text,
        "=== SUMMARY ===\nAda is exporting a report.\n\n[0] Action: Open Reports\n     Details: User did Open Reports\n     Page:    https://app.example.com/reports\n[1] Action: Click Export CSV\n     Details: User did Click Export CSV\n     Page:    https://app.example.com/reports\n"
    );
    let structured = result.structured_content.expect("structured content");
    assert_eq!(structured["conversation"], ADA_CONVERSATION);
    assert_eq!(structured["linked_by"], "session_data");
    assert_eq!(structured["summary"], "Ada is exporting a report.");
    let actions = structured["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 2);
    assert_eq!(actions[1]["title"], "Click Export CSV");
    assert_eq!(actions[1]["details"], "User did Click Export CSV");
    assert_eq!(actions[1]["page"], "https://app.example.com/reports");
    assert!(actions[1]["time"].as_str().unwrap().ends_with('Z'));
    let ago = actions[1]["seconds_ago"].as_u64().unwrap();
    assert!((100..=120).contains(&ago), "{ago}");
    assert!(!text.contains("Bob"));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_signed_call_naming_another_visitor_gets_nothing_of_theirs() {
    let webhook = start(Some(SIGNING_SECRET), Some(API_KEY)).await;
    let client = connect(hugo_proxy(&webhook, Signing::Good, Some(ADA_CONVERSATION)).await, None).await.unwrap();
    // Arguments naming Bob are ignored: Ada's conversation reads Ada.
    let result = call(
        &client,
        "get_visitor_activity",
        json!({"user_id": "u_bob", "session_id": "ps_2", "conversation": "session_bob"}),
    )
    .await;
    let all = format!("{} {}", text_of(&result), result.structured_content.clone().unwrap_or_default());
    assert!(all.contains("Open Reports") && !all.contains("Bob"), "{all}");
    // Autoplay's user-id tool is refused in signed calls, even with the API key also set.
    let result = call(&client, "get_live_user_activity", json!({"product_id": "p", "user_id": "u_bob"})).await;
    assert_eq!(result.is_error, Some(true));
    let all = format!("{} {}", text_of(&result), result.structured_content.clone().unwrap_or_default());
    assert!(!all.contains("Bob secret"), "{all}");
    client.cancel().await.unwrap();

    // An unlinked conversation: a normal result saying there is no activity.
    let client = connect(hugo_proxy(&webhook, Signing::Good, Some(UNLINKED_CONVERSATION)).await, None).await.unwrap();
    let result = call(&client, "get_visitor_activity", json!({"user_id": "u_bob"})).await;
    assert_ne!(result.is_error, Some(true));
    assert!(text_of(&result).contains("No activity is recorded for this visitor"), "{}", text_of(&result));
    assert_eq!(result.structured_content.unwrap()["actions"], json!([]));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn hugos_connection_check_without_a_conversation_lists_tools_and_gets_no_visitor() {
    let webhook = start(Some(SIGNING_SECRET), None).await;
    let client = connect(hugo_proxy(&webhook, Signing::Good, None).await, None).await.unwrap();
    assert_eq!(tool_names(&client).await, ["get_visitor_activity"]);
    let result = call(&client, "get_visitor_activity", json!({})).await;
    assert_ne!(result.is_error, Some(true));
    assert!(text_of(&result).starts_with("No conversation"), "{}", text_of(&result));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn badly_signed_stale_foreign_or_incomplete_calls_are_refused_alike() {
    let webhook = start(Some(SIGNING_SECRET), Some(API_KEY)).await;
    for signing in [Signing::WrongSecret, Signing::Stale, Signing::OtherWebsite, Signing::NoTimestamp] {
        let url = hugo_proxy(&webhook, signing, Some(ADA_CONVERSATION)).await;
        assert!(connect(url.clone(), None).await.is_err(), "the client could not initialize");
        // Raw: 401 with the same body whatever failed.
        let answer = reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 401);
        assert_eq!(answer.text().await.unwrap(), r#"{"error":"unauthorized","status":"error"}"#);
    }
    // No signature at all and no key: 401 too.
    let answer = reqwest::Client::new()
        .post(format!("http://{}/mcp", webhook.addr))
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    // A session id that is not a plain id is refused after a good signature.
    let url = hugo_proxy(&webhook, Signing::Good, Some("../etc")).await;
    assert!(connect(url, None).await.is_err());
}

#[tokio::test]
async fn bearer_clients_get_autoplays_tool_and_a_wrong_key_gets_nothing() {
    let webhook = start(None, Some(API_KEY)).await;
    let url = format!("http://{}/mcp", webhook.addr);
    assert!(connect(url.clone(), Some("key-for-other-clients-wrong")).await.is_err());
    assert!(connect(url.clone(), None).await.is_err());
    // Without MCP_SIGNING_SECRET, a signed request gets nothing either.
    assert!(connect(hugo_proxy(&webhook, Signing::Good, Some(ADA_CONVERSATION)).await, None).await.is_err());

    let client = connect(url, Some(API_KEY)).await.unwrap();
    assert_eq!(tool_names(&client).await, ["get_live_user_activity"]);
    let result = call(&client, "get_live_user_activity", json!({"product_id": "prod", "user_id": "u_bob"})).await;
    let structured = result.structured_content.clone().unwrap();
    let actions = structured["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 50, "at most 50");
    assert_eq!(actions[0]["title"], "Bob secret step 10", "oldest first, the newest 50");
    assert_eq!(actions[49]["title"], "Bob secret step 59");
    let first = actions[0].as_object().unwrap();
    let mut keys: Vec<&str> = first.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["canonical_url", "description", "index", "raw_url", "timestamp_end", "timestamp_start", "title", "type"]
    );
    assert_eq!(first["type"], "click");
    assert_eq!(first["index"], 10);
    // Every tool result passes the redactor: query values are masked, the path stays.
    assert_eq!(first["raw_url"], "https://app.example.com/reports?tab=[URL_QUERY]");
    assert!(first["timestamp_end"].as_f64().unwrap() > first["timestamp_start"].as_f64().unwrap());
    let text: Value = serde_json::from_str(&text_of(&result)).expect("the text is the same JSON");
    assert_eq!(text, structured);

    let result =
        call(&client, "get_live_user_activity", json!({"product_id": "prod", "user_id": "u_ada", "limit": 1})).await;
    let actions = result.structured_content.unwrap()["actions"].as_array().unwrap().clone();
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0]["title"], "Click Export CSV");

    let result = call(&client, "get_live_user_activity", json!({"product_id": "prod", "user_id": "u_nobody"})).await;
    assert_eq!(result.structured_content.unwrap()["actions"], json!([]));
    // The conversation tool is for signed Hugo calls only.
    let result = call(&client, "get_visitor_activity", json!({})).await;
    assert_eq!(result.is_error, Some(true));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn without_mcp_settings_mcp_is_not_found() {
    let webhook = start(None, None).await;
    let answer = reqwest::Client::new()
        .post(format!("http://{}/mcp", webhook.addr))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {API_KEY}"))
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
}

// ---------------------------------------------------------------------------------------------
// A signature serves one conversation; authentication before the body
// ---------------------------------------------------------------------------------------------

const TOOL_CALL: &str =
    r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_visitor_activity","arguments":{}}}"#;

/// One signed request, as Hugo sends it: `body` signed at `timestamp` for our website, in
/// `session`'s conversation (the header is not signed).
async fn send_signed(
    addr: SocketAddr,
    body: &str,
    timestamp: i64,
    signature: &str,
    session: Option<&str>,
) -> (StatusCode, String) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{addr}/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("x-crisp-signature", signature)
        .header("x-crisp-website-id", WEBSITE)
        .header("x-crisp-timestamp", timestamp.to_string());
    if let Some(session) = session {
        request = request.header("x-crisp-session-id", session);
    }
    let answer = request.body(body.to_owned()).send().await.unwrap();
    (StatusCode::from_u16(answer.status().as_u16()).unwrap(), answer.text().await.unwrap())
}

#[tokio::test]
async fn a_signature_replayed_with_another_conversation_is_refused_and_the_same_conversation_is_allowed() {
    let webhook = start(Some(SIGNING_SECRET), None).await;
    let at = now() as i64;
    let signature = sign(SIGNING_SECRET, &at.to_string(), WEBSITE, TOOL_CALL.as_bytes());
    let (status, first) = send_signed(webhook.addr, TOOL_CALL, at, &signature, Some(ADA_CONVERSATION)).await;
    assert_eq!(status, 200, "{first}");
    assert!(first.contains("Click Export CSV"), "Ada's own call reads Ada: {first}");

    // The same signed bytes, another conversation in the unsigned header: the same 401 as a
    // bad signature, and nothing of anyone.
    for other in [UNLINKED_CONVERSATION, "session_victim-4444"] {
        let (status, body) = send_signed(webhook.addr, TOOL_CALL, at, &signature, Some(other)).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body, r#"{"error":"unauthorized","status":"error"}"#);
    }
    let (status, body) = send_signed(webhook.addr, TOOL_CALL, at, &signature, None).await;
    assert_eq!(status, 401, "nor outside a conversation: {body}");
    // Hugo retrying in the same conversation is fine.
    let (status, again) = send_signed(webhook.addr, TOOL_CALL, at, &signature, Some(ADA_CONVERSATION)).await;
    assert_eq!(status, 200, "{again}");
    assert!(again.contains("Click Export CSV"), "{again}");
}

#[tokio::test]
async fn a_signature_used_on_one_replica_is_refused_for_another_conversation_on_the_other() {
    if plumbing::redis_conn::redis_for_tests("MCP signatures across replicas").is_none() {
        return;
    }
    let prefix = format!("test-mcp-replicas-{}:", std::process::id());
    let extra = ["--redis-key-prefix", prefix.as_str()];
    let one = start_with(Some(SIGNING_SECRET), None, &extra).await;
    let two = start_with(Some(SIGNING_SECRET), None, &extra).await;
    let at = now() as i64;
    let signature = sign(SIGNING_SECRET, &at.to_string(), WEBSITE, TOOL_CALL.as_bytes());
    assert_eq!(send_signed(one.addr, TOOL_CALL, at, &signature, Some(ADA_CONVERSATION)).await.0, 200);
    assert_eq!(send_signed(two.addr, TOOL_CALL, at, &signature, Some(UNLINKED_CONVERSATION)).await.0, 401);
    assert_eq!(send_signed(two.addr, TOOL_CALL, at, &signature, Some(ADA_CONVERSATION)).await.0, 200);
}

#[tokio::test]
async fn a_conversation_that_does_not_exist_on_our_website_gets_an_empty_result() {
    let webhook = start(Some(SIGNING_SECRET), None).await;
    let client = connect(hugo_proxy(&webhook, Signing::Good, Some(UNKNOWN_CONVERSATION)).await, None).await.unwrap();
    let result = call(&client, "get_visitor_activity", json!({})).await;
    assert_ne!(result.is_error, Some(true));
    assert!(text_of(&result).contains("No activity is recorded"), "{}", text_of(&result));
    assert_eq!(result.structured_content.unwrap()["actions"], json!([]));
    client.cancel().await.unwrap();
    // Identical calls signed in the same second carry the same signature, bound to the first
    // conversation: the next client signs in a later second, as two of Hugo's calls would.
    next_second().await;
    // A known conversation is asked about once, then remembered.
    let client = connect(hugo_proxy(&webhook, Signing::Good, Some(ADA_CONVERSATION)).await, None).await.unwrap();
    for _ in 0..3 {
        assert!(text_of(&call(&client, "get_visitor_activity", json!({})).await).contains("Open Reports"));
    }
    client.cancel().await.unwrap();
    let asked = webhook.crisp.received_requests().await.unwrap_or_default();
    let exists = format!("/v1/website/{WEBSITE}/conversation/{ADA_CONVERSATION}");
    assert_eq!(asked.iter().filter(|r| r.url.path() == exists).count(), 1);
}

/// Waits until the Unix second changes.
async fn next_second() {
    let second = now() as i64;
    while now() as i64 == second {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_signature_window_is_mcp_signature_window_secs() {
    let webhook = start_with(Some(SIGNING_SECRET), None, &["--mcp-signature-window-secs", "300"]).await;
    // 200 s old: refused under the default 120 s, accepted under 300 s.
    assert!(connect(hugo_proxy(&webhook, Signing::Stale, Some(ADA_CONVERSATION)).await, None).await.is_ok());
    let args = ["webhook", "--webhook-secret", "s", "--crisp-token-identifier", "i", "--crisp-token-key", "k"];
    for window in ["0", "301"] {
        let mut with = args.to_vec();
        with.extend(["--website-id", WEBSITE, "--openai-api-key", "sk", "--mcp-signature-window-secs", window]);
        let error = webhook::config::Cli::try_parse_from(with).unwrap().into_settings().err().expect("refused");
        assert!(error.to_string().contains("MCP_SIGNATURE_WINDOW_SECS"), "{error}");
    }
}

/// Opens a connection, sends `head` and then trickles one body byte every 100 ms; returns the
/// status the server answered (`None`: closed without one) and when.
async fn trickle(addr: SocketAddr, head: String) -> (Option<u16>, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let started = tokio::time::Instant::now();
    write.write_all(head.as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        while write.write_all(b"x").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let status = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            if answer.windows(2).any(|w| w == b"\r\n") {
                break;
            }
        }
        let line = String::from_utf8_lossy(&answer).into_owned();
        line.split(' ').nth(1).and_then(|code| code.parse().ok())
    })
    .await
    .unwrap_or(None);
    writer.abort();
    (status, started.elapsed())
}

fn mcp_head(content_length: usize, headers: &str) -> String {
    format!(
        "POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {content_length}\r\n{headers}\r\n"
    )
}

#[tokio::test]
async fn unauthenticated_trickles_to_mcp_do_not_delay_a_hook() {
    // Six connections at most (the four trickles, the harness's kept-alive health check and the
    // hook; with fewer, which one the server sheds depends on timing); a request may take 60 s,
    // headers 2 s.
    let webhook = start_with(
        Some(SIGNING_SECRET),
        Some(API_KEY),
        &["--max-connections", "6", "--header-read-timeout-secs", "2", "--request-timeout-secs", "60"],
    )
    .await;
    let addr = webhook.addr;
    let fresh = now() as i64;
    let looks_signed = format!(
        "x-crisp-signature: sha256={}\r\nx-crisp-website-id: {WEBSITE}\r\nx-crisp-timestamp: {fresh}\r\n",
        "0".repeat(64)
    );
    // Four trickles: no credentials, a wrong key, a stale signature (1 MiB bodies,
    // refused on their headers), and a signed-looking one whose small body must arrive within
    // the header timeout.
    let refused: Vec<_> = [
        String::new(),
        "authorization: Bearer not-the-key-0123456789\r\n".to_owned(),
        looks_signed.replace(&format!("timestamp: {fresh}"), &format!("timestamp: {}", fresh - 3600)),
    ]
    .into_iter()
    .map(|headers| tokio::spawn(trickle(addr, mcp_head(1 << 20, &headers))))
    .collect();
    let slow = tokio::spawn(trickle(addr, mcp_head(60_000, &looks_signed)));
    for trickle in refused {
        let (status, after) = trickle.await.unwrap();
        assert_eq!(status, Some(401));
        // Answered before any body, well within the header timeout (2 s).
        assert!(after < Duration::from_secs(2), "held {after:?}");
    }

    // The slow one still trickles; a Crisp hook is answered at once.
    let hook = json!({"website_id": WEBSITE, "event": "message:updated",
        "data": {"website_id": WEBSITE, "session_id": "session_x", "fingerprint": 1}, "timestamp": 1});
    let started = tokio::time::Instant::now();
    let answer = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
        .post(format!("http://{addr}/crisp/hooks?key=hook-secret"))
        .json(&hook)
        .send()
        .await
        .expect("the hook is served");
    assert_eq!(answer.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(10), "the hook waited {:?}", started.elapsed());

    // Signed-looking but declared too large: refused before reading.
    let (status, after) = trickle(addr, mcp_head(1 << 20, &looks_signed)).await;
    assert_eq!(status, Some(413));
    assert!(after < Duration::from_secs(2), "held {after:?}");
    // The slow body is cut at the header timeout, not the 60 s request timeout.
    let (status, after) = slow.await.unwrap();
    assert_eq!(status, Some(408));
    assert!((Duration::from_secs(2)..Duration::from_secs(10)).contains(&after), "held {after:?}");
}

#[tokio::test]
async fn with_a_help_center_both_callers_get_search_knowledge() {
    let help = tempfile::tempdir().unwrap();
    std::fs::write(
        help.path().join("export.md"),
        "---\ntitle: Export invoices\nurl: https://help.example.com/export\n---\n# Export invoices\n\nOpen Billing, then click Export CSV. Questions: billing@example.com\n",
    )
    .unwrap();
    let dir = help.path().display().to_string();
    let webhook = start_with(None, Some(API_KEY), &["--knowledge-dir", &dir]).await;
    let client = connect(format!("http://{}/mcp", webhook.addr), Some(API_KEY)).await.unwrap();
    assert_eq!(tool_names(&client).await, ["get_live_user_activity", "search_knowledge"]);
    let result = call(&client, "search_knowledge", json!({"query": "How do I export invoices?"})).await;
    let passages = result.structured_content.clone().unwrap()["passages"].as_array().unwrap().clone();
    assert_eq!(passages[0]["title"], "Export invoices");
    assert_eq!(passages[0]["link"], "https://help.example.com/export");
    let text = passages[0]["text"].as_str().unwrap();
    assert!(text.contains("Export CSV") && text.contains("[EMAIL]"), "found, and redacted: {text}");
}
