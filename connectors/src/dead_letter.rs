//! Dead-letter records: input that could not be used, with the original bytes and where they
//! came from, so nothing is silently dropped.

use base64::Engine;
use citybrain_model::DeadLetterReason;
use serde::{Deserialize, Serialize};

/// One unusable input message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Why it was not used.
    pub reason: DeadLetterReason,
    /// What exactly was wrong.
    pub detail: String,
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// The original key, base64, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_base64: Option<String>,
    /// The original value, base64 (exact bytes).
    pub payload_base64: String,
    /// The original value as text, when it is valid UTF-8 (for people).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_utf8: Option<String>,
}

/// Where an input message came from, with its exact bytes: kept for messages that may still
/// turn out unusable after decoding (a citizen report event of an unknown report).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// The original key, if any.
    pub key: Option<Vec<u8>>,
    /// The original value.
    pub payload: Vec<u8>,
}

impl Origin {
    /// The dead-letter record of this message.
    pub fn dead_letter(&self, reason: DeadLetterReason, detail: impl Into<String>) -> DeadLetter {
        DeadLetter::new(
            reason,
            detail,
            &self.topic,
            self.partition,
            self.offset,
            self.key.as_deref(),
            &self.payload,
        )
    }
}

impl DeadLetter {
    /// Builds a record from the original message.
    pub fn new(
        reason: DeadLetterReason,
        detail: impl Into<String>,
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        payload: &[u8],
    ) -> Self {
        let b64 = base64::engine::general_purpose::STANDARD;
        DeadLetter {
            reason,
            detail: detail.into(),
            topic: topic.to_string(),
            partition,
            offset,
            key_base64: key.map(|k| b64.encode(k)),
            payload_base64: b64.encode(payload),
            payload_utf8: std::str::from_utf8(payload).ok().map(str::to_string),
        }
    }

    /// The original value bytes.
    pub fn payload(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.payload_base64)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_exact_bytes() {
        let bytes = [0xff, 0x00, b'{'];
        let d = DeadLetter::new(
            DeadLetterReason::MalformedJson,
            "x",
            "t",
            1,
            7,
            None,
            &bytes,
        );
        assert_eq!(d.payload(), bytes);
        assert_eq!(d.payload_utf8, None);
        let json = serde_json::to_string(&d).unwrap_or_default();
        assert!(json.contains(r#""reason":"malformed_json""#), "{json}");
    }
}
