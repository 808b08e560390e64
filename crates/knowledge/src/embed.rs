//! Embeddings (OpenAI-compatible `POST {base}/embeddings`), the flat vector file beside the
//! index, and reciprocal rank fusion.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

/// Reciprocal rank fusion constant.
pub const RRF_K: f32 = 60.0;
/// Texts per embeddings request.
const BATCH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("bad embeddings base URL")]
    BadBaseUrl,
    #[error("embeddings: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("embeddings: HTTP {0}")]
    Status(u16),
    #[error("embeddings: unexpected answer: {0}")]
    Decode(String),
}

/// Client of an OpenAI-compatible embeddings endpoint. `base_url` includes the version, like
/// `OPENAI_BASE_URL` (`https://api.openai.com/v1`); requests go to `{base_url}/embeddings`.
#[derive(Clone)]
pub struct EmbeddingClient {
    http: reqwest::Client,
    endpoint: String,
    api_key: Option<SecretString>,
    model: String,
}

impl std::fmt::Debug for EmbeddingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingClient")
            .field("endpoint", &self.endpoint)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl EmbeddingClient {
    pub fn new(base_url: &str, api_key: Option<SecretString>, model: impl Into<String>) -> Result<Self, EmbedError> {
        let base = base_url.trim_end_matches('/');
        let parsed = reqwest::Url::parse(base).map_err(|_| EmbedError::BadBaseUrl)?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(EmbedError::BadBaseUrl);
        }
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        Ok(Self { http, endpoint: format!("{base}/embeddings"), api_key, model: model.into() })
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// One vector per input, in order, L2-normalised.
    pub async fn embed(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(inputs.len());
        for batch in inputs.chunks(BATCH) {
            let mut req = self.http.post(&self.endpoint).json(&json!({ "model": self.model, "input": batch }));
            if let Some(key) = &self.api_key {
                req = req.bearer_auth(key.expose_secret());
            }
            let resp = req.send().await?;
            if !resp.status().is_success() {
                return Err(EmbedError::Status(resp.status().as_u16()));
            }
            let body: Value = resp.json().await?;
            let data =
                body.get("data").and_then(Value::as_array).ok_or_else(|| EmbedError::Decode("no data".into()))?;
            if data.len() != batch.len() {
                return Err(EmbedError::Decode(format!("{} vectors for {} inputs", data.len(), batch.len())));
            }
            let mut vecs: Vec<(usize, Vec<f32>)> = Vec::with_capacity(data.len());
            for (i, item) in data.iter().enumerate() {
                let index = item.get("index").and_then(Value::as_u64).map(|n| n as usize).unwrap_or(i);
                let v: Vec<f32> = item
                    .get("embedding")
                    .and_then(Value::as_array)
                    .ok_or_else(|| EmbedError::Decode("no embedding".into()))?
                    .iter()
                    .map(|x| x.as_f64().unwrap_or(0.0) as f32)
                    .collect();
                vecs.push((index, normalise(v)));
            }
            vecs.sort_by_key(|(i, _)| *i);
            out.extend(vecs.into_iter().map(|(_, v)| v));
        }
        Ok(out)
    }
}

pub(crate) fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
    v
}

/// Passage key → unit vector. Saved as a flat file: `KBV1`, dim (u32 LE), count (u32 LE), then
/// per entry a 16-byte key and `dim` f32 LE.
#[derive(Debug, Clone, Default)]
pub struct VectorStore {
    pub dim: usize,
    pub vectors: HashMap<String, Vec<f32>>,
}

impl VectorStore {
    pub fn load(path: &Path) -> std::io::Result<Self> {
        let mut bytes = Vec::new();
        std::fs::File::open(path)?.read_to_end(&mut bytes)?;
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad vector file");
        if bytes.len() < 12 || &bytes[..4] != b"KBV1" {
            return Err(bad());
        }
        let dim = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
        let count = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        let entry = 16 + 4 * dim;
        if bytes.len() != 12 + count * entry {
            return Err(bad());
        }
        let mut vectors = HashMap::with_capacity(count);
        for e in bytes[12..].chunks_exact(entry) {
            let key = hex::encode(&e[..16]);
            let v = e[16..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            vectors.insert(key, v);
        }
        Ok(Self { dim, vectors })
    }

    /// Writes to a temporary file then renames it over `path`.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        f.write_all(b"KBV1")?;
        f.write_all(&(self.dim as u32).to_le_bytes())?;
        let entries: Vec<_> = self
            .vectors
            .iter()
            .filter(|(k, v)| v.len() == self.dim && hex::decode(k).is_ok_and(|b| b.len() == 16))
            .collect();
        f.write_all(&(entries.len() as u32).to_le_bytes())?;
        for (k, v) in entries {
            f.write_all(&hex::decode(k).unwrap())?;
            for x in v {
                f.write_all(&x.to_le_bytes())?;
            }
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(tmp, path)
    }

    /// The `n` nearest keys by cosine similarity (vectors are unit length).
    pub fn nearest(&self, query: &[f32], n: usize) -> Vec<(String, f32)> {
        if query.len() != self.dim {
            return Vec::new();
        }
        let mut scored: Vec<(&String, f32)> =
            self.vectors.iter().map(|(k, v)| (k, v.iter().zip(query).map(|(a, b)| a * b).sum())).collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        scored.truncate(n);
        scored.into_iter().map(|(k, s)| (k.clone(), s)).collect()
    }
}

/// Reciprocal rank fusion of ranked lists of keys: `score(d) = Σ 1 / (k + rank)`, rank from 1,
/// `k` = [`RRF_K`]. Best first; ties by first appearance.
pub fn rrf<'a>(lists: &[&'a [String]]) -> Vec<(&'a str, f32)> {
    let mut scores: Vec<(&str, f32)> = Vec::new();
    let mut pos: HashMap<&str, usize> = HashMap::new();
    for list in lists {
        for (rank, key) in list.iter().enumerate() {
            let s = 1.0 / (RRF_K + rank as f32 + 1.0);
            match pos.get(key.as_str()) {
                Some(&i) => scores[i].1 += s,
                None => {
                    pos.insert(key.as_str(), scores.len());
                    scores.push((key.as_str(), s));
                }
            }
        }
    }
    scores.sort_by(|a, b| b.1.total_cmp(&a.1));
    scores
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrf_rewards_agreement() {
        let a: Vec<String> = ["x", "y", "z"].map(String::from).to_vec();
        let b: Vec<String> = ["y", "w", "x"].map(String::from).to_vec();
        let fused = rrf(&[&a, &b]);
        assert_eq!(fused[0].0, "y");
        assert_eq!(fused[1].0, "x");
        assert!((fused[0].1 - (1.0 / 62.0 + 1.0 / 61.0)).abs() < 1e-6);
    }

    #[test]
    fn vector_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = VectorStore { dim: 3, ..Default::default() };
        s.vectors.insert("00112233445566778899aabbccddeeff".into(), normalise(vec![1.0, 2.0, 2.0]));
        let p = dir.path().join("v.bin");
        s.save(&p).unwrap();
        let l = VectorStore::load(&p).unwrap();
        assert_eq!(l.dim, 3);
        assert_eq!(l.vectors, s.vectors);
        assert_eq!(l.nearest(&[1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0], 1)[0].0, "00112233445566778899aabbccddeeff");
    }
}
