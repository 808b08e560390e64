//! HTTP helpers for every outside server (the LLM, Crisp, the Autoplay stream): reading a
//! response body with a cap (a misbehaving server must not make either process buffer without
//! bound), and transport errors that keep their cause but never a URL's secrets.

/// A request that failed on its way (connect, timeout, broken body). It says what happened
/// and to which endpoint (scheme, host and path only: the query, port or credentials could
/// carry a secret), and keeps reqwest's error, its URL removed, as its source.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct TransportError {
    what: String,
    #[source]
    source: reqwest::Error,
}

impl TransportError {
    /// No connection was made: nothing of the request reached the server.
    pub fn is_connect(&self) -> bool {
        self.source.is_connect()
    }
}

impl From<reqwest::Error> for TransportError {
    fn from(e: reqwest::Error) -> Self {
        Self { what: describe_reqwest(&e), source: e.without_url() }
    }
}

/// reqwest's error kind and the redacted URL, for messages.
pub fn describe_reqwest(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "broken response body"
    } else if e.is_builder() {
        "cannot build the HTTP client"
    } else {
        "request error"
    };
    match e.url() {
        Some(url) => format!("{kind} ({})", redacted_url(url)),
        None => kind.to_owned(),
    }
}

/// A URL without credentials, port or query, for logs and errors.
pub fn redacted_url(url: &reqwest::Url) -> String {
    format!("{}://{}{}", url.scheme(), url.host_str().unwrap_or(""), url.path())
}

/// Why a capped body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("response body larger than {cap} bytes")]
    TooLarge { cap: usize },
    #[error("broken response body")]
    Broken(#[source] reqwest::Error),
}

/// The whole body, or [`BodyError::TooLarge`] as soon as it passes `cap` bytes (a declared
/// `Content-Length` over the cap is refused before anything is read).
pub async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|len| len > cap as u64) {
        return Err(BodyError::TooLarge { cap });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Broken)? {
        if body.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge { cap });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    async fn get(server: &MockServer) -> reqwest::Response {
        reqwest::get(server.uri()).await.unwrap()
    }

    #[tokio::test]
    async fn reads_up_to_the_cap_and_refuses_more() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![b'x'; 100]))
            .mount(&server)
            .await;
        assert_eq!(read_capped(get(&server).await, 100).await.unwrap().len(), 100);
        assert!(matches!(read_capped(get(&server).await, 99).await, Err(BodyError::TooLarge { cap: 99 })));
    }

    #[tokio::test]
    async fn a_transport_error_keeps_its_cause_and_no_secret() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://user:hunter2@127.0.0.1:{port}/v1/chat?api_key=sk-secret");
        let e = reqwest::Client::new().get(url).send().await.expect_err("nothing listens there");
        let e = TransportError::from(e);
        let mut chain = vec![e.to_string()];
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            chain.push(cause.to_string());
            source = cause.source();
        }
        assert!(chain.len() >= 2, "the cause is kept: {chain:?}");
        assert_eq!(chain[0], "could not connect (http://127.0.0.1/v1/chat)");
        let all = chain.join(" | ");
        for secret in ["hunter2", "sk-secret", "api_key", &port.to_string()] {
            assert!(!all.contains(secret), "{secret} leaked: {all}");
        }
    }
}
