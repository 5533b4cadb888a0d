//! [Standard Webhooks](https://www.standardwebhooks.com/) signatures.
//!
//! Every webhook request carries three headers:
//!
//! - `webhook-id`: the message id, the same on every retry and after a restart (the transition
//!   id, or for a grouped request an id derived from its members' ids);
//! - `webhook-timestamp`: when this attempt was signed, in Unix seconds;
//! - `webhook-signature`: `v1,` followed by the base64 of
//!   HMAC-SHA256(secret, `"{id}.{timestamp}.{body}"`).
//!
//! Secrets written as `whsec_<base64>` (the form Standard Webhooks libraries generate) are
//! base64-decoded after the prefix; any other secret is used as raw bytes.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The `webhook-id` header.
pub const HEADER_ID: &str = "webhook-id";
/// The `webhook-timestamp` header.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// The `webhook-signature` header.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// The prefix of base64-encoded secrets.
const PREFIX: &str = "whsec_";

/// How far a timestamp may be from now in [`verify`] by default (Standard Webhooks' five
/// minutes).
pub const DEFAULT_TOLERANCE_SECONDS: i64 = 5 * 60;

type HmacSha256 = Hmac<Sha256>;

/// A receiver's signing key. Its `Debug` output never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

/// A secret could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The secret is empty.
    #[error("the secret is empty")]
    Empty,
    /// `whsec_` is followed by something that is not base64.
    #[error("the secret starts with `whsec_` but the rest is not valid base64: {0}")]
    Base64(String),
}

impl Secret {
    /// Parses a secret as written in config or an environment variable: `whsec_<base64>` is
    /// decoded, anything else is taken as raw bytes. Surrounding whitespace is ignored.
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let text = text.trim();
        let key = match text.strip_prefix(PREFIX) {
            Some(encoded) => STANDARD
                .decode(encoded)
                .map_err(|e| SecretError::Base64(e.to_string()))?,
            None => text.as_bytes().to_vec(),
        };
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Secret(key))
    }

    /// A secret of raw key bytes.
    pub fn from_bytes(key: impl Into<Vec<u8>>) -> Secret {
        Secret(key.into())
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of any length, so this never fails; the fallback keeps it total.
        let mut mac = HmacSha256::new_from_slice(&self.0)
            .unwrap_or_else(|_| HmacSha256::new(&Default::default()));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

/// The `webhook-signature` value for a message: `v1,<base64 HMAC-SHA256>`.
pub fn sign(secret: &Secret, id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = secret.mac(id, timestamp, body).finalize().into_bytes();
    format!("v1,{}", STANDARD.encode(tag))
}

/// Why a request did not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The timestamp is not an integer.
    #[error("the timestamp `{0}` is not an integer of Unix seconds")]
    BadTimestamp(String),
    /// The timestamp is further from now than the tolerance.
    #[error("the timestamp is {offset} s away from now (tolerance {tolerance} s)")]
    Stale {
        /// Timestamp minus now, in seconds.
        offset: i64,
        /// The allowed distance, in seconds.
        tolerance: i64,
    },
    /// No `v1` signature in the header matches.
    #[error("no matching v1 signature")]
    Mismatch,
}

/// Verifies a request the way a receiver does: the timestamp must be within `tolerance_seconds`
/// of `now` (Unix seconds) and one of the space-separated `v1,<base64>` signatures in
/// `signature_header` must match (compared in constant time).
pub fn verify(
    secret: &Secret,
    id: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    now: i64,
    tolerance_seconds: i64,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp(timestamp.to_string()))?;
    let offset = ts.saturating_sub(now);
    if offset.saturating_abs() > tolerance_seconds {
        return Err(VerifyError::Stale {
            offset,
            tolerance: tolerance_seconds,
        });
    }
    for candidate in signature_header.split_whitespace() {
        let Some(encoded) = candidate.strip_prefix("v1,") else {
            continue;
        };
        let Ok(tag) = STANDARD.decode(encoded) else {
            continue;
        };
        if secret.mac(id, ts, body).verify_slice(&tag).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::Mismatch)
}

/// The current time in Unix seconds.
pub fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use sha2::Digest;

    use super::*;

    /// HMAC-SHA256 written out from RFC 2104 with plain SHA-256, independent of the `hmac`
    /// crate.
    fn reference_hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let ipad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
        let inner = Sha256::new()
            .chain_update(&ipad)
            .chain_update(message)
            .finalize();
        Sha256::new()
            .chain_update(&opad)
            .chain_update(inner)
            .finalize()
            .to_vec()
    }

    #[test]
    fn matches_the_standard_webhooks_example() {
        // The example from the Standard Webhooks specification and its reference libraries.
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = sign(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn matches_an_independent_hmac() {
        let secret = Secret::parse("raw secret bytes").unwrap();
        assert_eq!(secret.as_bytes(), b"raw secret bytes");
        let body = br#"{"transitions":[]}"#;
        let expected = reference_hmac(
            b"raw secret bytes",
            b"5b0f2b4f0d1c2a7e9e3b51c2c0f4a8d1.1795910401.{\"transitions\":[]}",
        );
        assert_eq!(
            sign(
                &secret,
                "5b0f2b4f0d1c2a7e9e3b51c2c0f4a8d1",
                1795910401,
                body
            ),
            format!("v1,{}", STANDARD.encode(expected))
        );
        // A key longer than a SHA-256 block is hashed first.
        let long = vec![7u8; 100];
        let expected = reference_hmac(&long, b"i.1.b");
        assert_eq!(
            sign(&Secret::from_bytes(long), "i", 1, b"b"),
            format!("v1,{}", STANDARD.encode(expected))
        );
    }

    #[test]
    fn secrets() {
        assert_eq!(Secret::parse("whsec_AQID").unwrap().as_bytes(), &[1, 2, 3]);
        assert_eq!(Secret::parse("  s3cret\n").unwrap().as_bytes(), b"s3cret");
        assert_eq!(Secret::parse(""), Err(SecretError::Empty));
        assert_eq!(Secret::parse("whsec_"), Err(SecretError::Empty));
        assert!(matches!(
            Secret::parse("whsec_not base64!"),
            Err(SecretError::Base64(_))
        ));
        assert_eq!(
            format!("{:?}", Secret::from_bytes(*b"abc")),
            "Secret(<3 bytes>)"
        );
    }

    #[test]
    fn verify_accepts_good_and_rejects_tampering() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"a":1}"#;
        let now = 1_800_000_000;
        let signature = sign(&secret, "id-1", now, body);
        let ok = |id: &str, ts: &str, sig: &str, body: &[u8]| {
            verify(&secret, id, ts, sig, body, now, DEFAULT_TOLERANCE_SECONDS)
        };
        assert_eq!(ok("id-1", &now.to_string(), &signature, body), Ok(()));
        // Several signatures (key rotation): one match is enough.
        let several = format!("v1,AAAA {signature}");
        assert_eq!(ok("id-1", &now.to_string(), &several, body), Ok(()));
        assert_eq!(
            ok("id-1", &now.to_string(), &signature, br#"{"a":2}"#),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            ok("id-2", &now.to_string(), &signature, body),
            Err(VerifyError::Mismatch)
        );
        let late = (now - 301).to_string();
        let resigned = sign(&secret, "id-1", now - 301, body);
        assert_eq!(
            ok("id-1", &late, &resigned, body),
            Err(VerifyError::Stale {
                offset: -301,
                tolerance: 300
            })
        );
        assert_eq!(
            ok("id-1", "soon", &signature, body),
            Err(VerifyError::BadTimestamp("soon".into()))
        );
        assert_eq!(
            ok("id-1", &now.to_string(), "v2,whatever", body),
            Err(VerifyError::Mismatch)
        );
    }
}
