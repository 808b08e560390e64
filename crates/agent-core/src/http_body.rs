//! Reading an outside server's response body with a cap: a misbehaving LLM or API server
//! must not make either process buffer without bound.

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
}
