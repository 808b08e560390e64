//! The real `listener` binary against a loopback Autoplay stream and OpenAI stand-in.

use bytes::Bytes;
use e2e::sse_server::{Plan, SseServer};
use e2e::{Proc, eventually, read};
use std::time::Duration;

const ACTIONS_FULL: &str = include_str!("fixtures/autoplay/actions-full.sse");
const EXPECTED: &str = include_str!("fixtures/autoplay/expected-event_data.txt");

fn listener_env(stream_url: &str) -> Vec<(&'static str, String)> {
    vec![("STREAM_URL", stream_url.to_owned()), ("SUMMARY_THRESHOLD", "0".into())]
}

#[tokio::test]
async fn writes_the_reference_bytes_for_the_full_fixture() {
    let server = SseServer::start(vec![Plan::StreamThenHold(vec![Bytes::from(ACTIONS_FULL)])], None).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("event_data.txt");
    let _listener = Proc::spawn("listener", dir.path(), &listener_env(&server.url), &[]);
    assert!(eventually(Duration::from_secs(10), || read(&file) == EXPECTED).await, "file: {:?}", read(&file));
}
