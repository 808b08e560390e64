//! Constant-time secret checks for incoming web hooks.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret kept as its SHA-256 digest, hashed once. [`SecretDigest::matches`] compares a
/// candidate's digest with it in constant time, so the time taken depends neither on where the
/// two differ nor on their lengths.
#[derive(Clone)]
pub struct SecretDigest([u8; 32]);

impl SecretDigest {
    pub fn new(secret: &[u8]) -> Self {
        Self(Sha256::digest(secret).into())
    }

    pub fn matches(&self, given: &[u8]) -> bool {
        let given: [u8; 32] = Sha256::digest(given).into();
        given.ct_eq(&self.0).into()
    }
}

/// Lowercase hex HMAC-SHA256 of `message` under `key`.
pub fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// Checks a hex HMAC-SHA256 `signature` of `message`, in constant time.
pub fn verify_hmac_sha256_hex(key: &[u8], message: &[u8], signature: &str) -> bool {
    let Ok(given) = hex::decode(signature.trim()) else { return false };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.verify_slice(&given).is_ok()
}

/// Crisp plugin-hook signature: HMAC-SHA256(secret, `[` timestamp `;` raw body `]`).
pub fn verify_crisp_signature(secret: &[u8], timestamp: &str, body: &[u8], signature: &str) -> bool {
    let mut signed = Vec::with_capacity(body.len() + timestamp.len() + 3);
    signed.push(b'[');
    signed.extend_from_slice(timestamp.as_bytes());
    signed.push(b';');
    signed.extend_from_slice(body);
    signed.push(b']');
    verify_hmac_sha256_hex(secret, &signed, signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_match_only_when_equal() {
        let expected = SecretDigest::new(b"s3cret");
        assert!(expected.matches(b"s3cret"));
        assert!(!expected.matches(b"s3cres"));
        assert!(!expected.matches(b""));
        assert!(!expected.matches(b"s3cret-longer"));
    }

    #[test]
    fn crisp_plugin_signature_test_vector() {
        let vector: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/fixtures/crisp/plugin-hook-variant.json")).unwrap();
        let secret = vector["signing_secret_test_only"].as_str().unwrap().as_bytes();
        let timestamp = vector["headers"]["X-Crisp-Request-Timestamp"].as_str().unwrap();
        let body = vector["raw_body"].as_str().unwrap().as_bytes();
        let signature = vector["expected_signature_hex"].as_str().unwrap();
        assert!(verify_crisp_signature(secret, timestamp, body, signature));
        assert_eq!(hmac_sha256_hex(secret, vector["signed_string"].as_str().unwrap().as_bytes()), signature);
        assert!(!verify_crisp_signature(secret, "1506985697", body, signature));
        let mut altered = body.to_vec();
        altered[10] ^= 1;
        assert!(!verify_crisp_signature(secret, timestamp, &altered, signature));
        assert!(!verify_crisp_signature(secret, timestamp, body, "zz"));
    }
}
