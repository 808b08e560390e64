//! The Autoplay stream connection: connect, read frames, reconnect forever with backoff.

use activity::sse::{SseItem, SseParser};
use futures_util::StreamExt;
use plumbing::http_body::{describe_reqwest, redacted_url};
use plumbing::retry::Backoff;
use plumbing::telemetry::{Metrics, STREAM_CONNECTED, STREAM_RECONNECTS};
use plumbing::{ExposeSecret, SecretString};
use reqwest::StatusCode;
use std::time::Duration;
use tokio::sync::watch;

/// Reconnect delays: 1 s doubling to 30 s, plus 0-10 % jitter; back to 1 s after a valid frame.
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How one connection ended.
#[derive(Debug)]
pub enum Disconnect {
    /// SIGTERM/SIGINT: stop for good.
    Shutdown,
    /// Transport error, idle timeout, clean end of stream, unexpected answer: retry on backoff.
    Transient(String),
    /// 400/401/403/404: the settings are wrong; retry only on the long backoff.
    Configuration { status: StatusCode, hint: &'static str },
}

/// What the connection loop hands each frame to.
pub trait FrameSink {
    fn frame(&mut self, item: SseItem);
    /// Called after the frames of one network read: a chance to write them out together.
    fn flush(&mut self) {}
}

pub struct StreamClient {
    http: reqwest::Client,
    url: reqwest::Url,
    token: Option<SecretString>,
    idle_timeout: Duration,
    /// The listener's registry: `stream_connected`, `stream_reconnects_total`.
    metrics: Metrics,
}

impl StreamClient {
    pub fn new(url: reqwest::Url, token: Option<SecretString>, idle_timeout: Duration) -> reqwest::Result<Self> {
        // No total timeout: it would cut the endless body. The idle watchdog is ours.
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?;
        Ok(Self { http, url, token, idle_timeout, metrics: Metrics::default() })
    }

    /// The same client, reporting the connection's health in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// `GET STREAM_URL` with the stream headers and, when set, the bearer token.
    fn request(&self) -> reqwest::RequestBuilder {
        let request = self
            .http
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .header(reqwest::header::CACHE_CONTROL, "no-store");
        match &self.token {
            Some(token) => request.bearer_auth(token.expose_secret()),
            None => request,
        }
    }

    /// Connects once and reports what the server answered (for `--check`).
    pub async fn probe(&self) -> Result<String, String> {
        let request = self.request();
        let response = request.send().await.map_err(|e| describe_reqwest(&e))?;
        let status = response.status();
        if let Some(hint) = configuration_hint(status) {
            return Err(format!("HTTP {}: {hint}", status.as_u16()));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if status == StatusCode::OK && content_type.starts_with("text/event-stream") {
            Ok(format!("HTTP 200 {content_type} from {}", redacted_url(&self.url)))
        } else {
            Err(format!("HTTP {status} {content_type}: not an event stream"))
        }
    }

    /// Connects and reconnects until `shutdown` turns true.
    pub async fn run(&self, sink: &mut impl FrameSink, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
        loop {
            let (outcome, got_valid_frame) = self.connect_once(sink, &mut shutdown).await;
            self.metrics.gauge(STREAM_CONNECTED).set(0.0);
            if got_valid_frame {
                backoff.reset();
            }
            if !matches!(outcome, Disconnect::Shutdown) {
                self.metrics.counter(STREAM_RECONNECTS).increment(1);
            }
            let delay = match outcome {
                Disconnect::Shutdown => return,
                Disconnect::Transient(reason) => {
                    let delay = Backoff::with_jitter(backoff.next_delay());
                    tracing::warn!(%reason, retry_in = ?delay, "stream disconnected");
                    delay
                }
                Disconnect::Configuration { status, hint } => {
                    let delay = Backoff::with_jitter(backoff.longest());
                    tracing::error!(status = status.as_u16(), retry_in = ?delay, "stream refused the connection: {hint}");
                    delay
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    async fn connect_once(
        &self,
        sink: &mut impl FrameSink,
        shutdown: &mut watch::Receiver<bool>,
    ) -> (Disconnect, bool) {
        let request = self.request();
        let response = tokio::select! {
            response = request.send() => response,
            _ = shutdown.wait_for(|stop| *stop) => return (Disconnect::Shutdown, false),
        };
        let response = match response {
            Ok(r) => r,
            Err(e) => return (Disconnect::Transient(describe_reqwest(&e)), false),
        };
        let status = response.status();
        if let Some(hint) = configuration_hint(status) {
            return (Disconnect::Configuration { status, hint }, false);
        }
        let is_sse = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("text/event-stream"));
        if status != StatusCode::OK || !is_sse {
            return (Disconnect::Transient(format!("unexpected answer: HTTP {status}, not an event stream")), false);
        }
        tracing::info!(url = %redacted_url(&self.url), "stream connected");
        self.metrics.gauge(STREAM_CONNECTED).set(1.0);
        let mut body = response.bytes_stream();
        let mut parser = SseParser::new();
        let mut items = Vec::new();
        let mut got_valid_frame = false;
        loop {
            let next = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => return (Disconnect::Shutdown, got_valid_frame),
                next = tokio::time::timeout(self.idle_timeout, body.next()) => next,
            };
            let chunk = match next {
                Err(_) => {
                    let reason = format!("nothing received for {} s", self.idle_timeout.as_secs());
                    return (Disconnect::Transient(reason), got_valid_frame);
                }
                Ok(None) => return (Disconnect::Transient("server ended the stream".into()), got_valid_frame),
                Ok(Some(Err(e))) => return (Disconnect::Transient(describe_reqwest(&e)), got_valid_frame),
                Ok(Some(Ok(chunk))) => chunk,
            };
            parser.push(&chunk, &mut items);
            for item in items.drain(..) {
                got_valid_frame |= matches!(item, SseItem::Event(_));
                sink.frame(item);
            }
            sink.flush();
        }
    }
}

fn configuration_hint(status: StatusCode) -> Option<&'static str> {
    Some(match status.as_u16() {
        401 | 403 => "the token was refused; check UNKEY_API_KEY (or AUTOPLAY_APP_UNKEY_TOKEN)",
        404 => "unknown product; check the product id at the end of STREAM_URL",
        400 => "the product is not in event_stream/sse mode; check its Autoplay set-up and STREAM_URL",
        _ => return None,
    })
}

pub use plumbing::ratelimit::RateLimitedWarn;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_and_routing_errors_are_configuration_errors() {
        for code in [400, 401, 403, 404] {
            assert!(configuration_hint(StatusCode::from_u16(code).unwrap()).is_some());
        }
        assert!(configuration_hint(StatusCode::INTERNAL_SERVER_ERROR).is_none());
    }
}
