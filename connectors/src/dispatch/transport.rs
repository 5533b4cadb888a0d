//! Sending one request: a signed webhook POST or Kafka messages, and what the answer means.
//!
//! Webhook answers: 2xx delivered; connection errors, timeouts, 3xx (redirects are not
//! followed, except 307/308 to the same scheme, host and port), 408, 429 and 5xx are retried
//! (honouring `Retry-After`); 410 Gone disables the receiver; any other 4xx goes to the
//! receiver's dead letter with the response.

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, USER_AGENT};
use reqwest::redirect::Policy;
use reqwest::{Client, StatusCode};

use super::payload::{self, Member};
use super::retry::parse_retry_after;
use super::settings::{KafkaConnection, KafkaKey, KafkaReceiverSettings, WebhookSettings};
use super::signing::{self, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};

/// How much of a rejecting response's body is kept in the dead letter.
const MAX_BODY: usize = 4096;

/// The result of one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// Accepted.
    Delivered,
    /// Try again later; `retry_after` when the receiver said when.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// 410 Gone: disable the receiver.
    Gone { reason: String },
    /// Rejected (4xx other than 408, 410, 429): dead-letter it.
    Reject { status: u16, body: String },
}

/// Classifies a webhook response status.
pub(crate) fn classify(status: StatusCode, retry_after: Option<Duration>, body: String) -> Attempt {
    let code = status.as_u16();
    match code {
        200..=299 => Attempt::Delivered,
        410 => Attempt::Gone {
            reason: format!("410 Gone: {}", body.trim()),
        },
        408 | 429 | 300..=399 | 500..=599 => Attempt::Retry {
            reason: format!("HTTP {code}"),
            retry_after,
        },
        400..=499 => Attempt::Reject { status: code, body },
        // 1xx or non-standard codes: not an answer we understand; try again.
        _ => Attempt::Retry {
            reason: format!("unexpected HTTP {code}"),
            retry_after,
        },
    }
}

/// Where a receiver's requests go.
pub(crate) enum Transport {
    Webhook(WebhookTransport),
    Kafka(KafkaTransport),
}

impl Transport {
    /// One attempt at sending `members` under the message `id`.
    pub(crate) async fn send(
        &self,
        id: &str,
        receiver: &str,
        members: &[Member<'_>],
        external_url: &str,
    ) -> Attempt {
        match self {
            Transport::Webhook(w) => {
                let body = payload::body(w.settings.format, id, receiver, members, external_url);
                w.post(id, body).await
            }
            Transport::Kafka(k) => k.produce(id, members).await,
        }
    }
}

/// A webhook receiver's HTTP client.
pub(crate) struct WebhookTransport {
    client: Client,
    settings: WebhookSettings,
}

/// The receiver's client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct TransportError(pub(crate) String);

impl WebhookTransport {
    pub(crate) fn new(settings: WebhookSettings) -> Result<Self, TransportError> {
        let policy = Policy::custom(|attempt| {
            let same_origin = attempt.previous().first().is_some_and(|first| {
                first.scheme() == attempt.url().scheme()
                    && first.host_str() == attempt.url().host_str()
                    && first.port_or_known_default() == attempt.url().port_or_known_default()
            });
            // 307 and 308 keep the method and body; 301/302/303 would turn the POST into a GET.
            let keeps_body = matches!(
                attempt.status(),
                StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
            );
            if same_origin && keeps_body && attempt.previous().len() < 5 {
                attempt.follow()
            } else {
                attempt.stop()
            }
        });
        let client = Client::builder()
            .redirect(policy)
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| TransportError(format!("cannot build the HTTP client: {e}")))?;
        Ok(WebhookTransport { client, settings })
    }

    async fn post(&self, id: &str, body: Vec<u8>) -> Attempt {
        let mut request = self
            .client
            .post(self.settings.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(
                USER_AGENT,
                HeaderValue::from_static(concat!("citybrain/", env!("CARGO_PKG_VERSION"))),
            )
            .header(HEADER_ID, id);
        // Signed per attempt: the timestamp is when this attempt was made.
        let timestamp = signing::unix_now();
        request = request.header(HEADER_TIMESTAMP, timestamp.to_string());
        if let Some(secret) = &self.settings.secret {
            request = request.header(
                HEADER_SIGNATURE,
                signing::sign(secret, id, timestamp, &body),
            );
        }
        let mut response = match request.body(body).send().await {
            Ok(response) => response,
            Err(error) => {
                let kind = if error.is_timeout() {
                    "timeout"
                } else if error.is_connect() {
                    "connection failed"
                } else {
                    "request failed"
                };
                return Attempt::Retry {
                    reason: format!("{kind}: {error}"),
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        // Keep the start of the body of answers that end up in a dead letter or a log.
        let mut body = Vec::new();
        if !status.is_success() {
            while body.len() < MAX_BODY {
                match response.chunk().await {
                    Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                    Ok(None) | Err(_) => break,
                }
            }
            body.truncate(MAX_BODY);
        }
        classify(
            status,
            retry_after,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }
}

/// A Kafka receiver's producer.
pub(crate) struct KafkaTransport {
    producer: rdkafka::producer::FutureProducer,
    settings: KafkaReceiverSettings,
}

impl KafkaTransport {
    pub(crate) fn new(
        connection: &KafkaConnection,
        settings: KafkaReceiverSettings,
    ) -> Result<Self, TransportError> {
        let mut config = rdkafka::ClientConfig::new();
        config
            .set("bootstrap.servers", &connection.brokers)
            .set("linger.ms", "5")
            .set(
                "message.timeout.ms",
                settings.timeout.as_millis().max(1).to_string(),
            );
        for (k, v) in &connection.properties {
            config.set(k, v);
        }
        let producer = config
            .create()
            .map_err(|e| TransportError(format!("cannot create the Kafka producer: {e}")))?;
        Ok(KafkaTransport { producer, settings })
    }

    async fn produce(&self, id: &str, members: &[Member<'_>]) -> Attempt {
        use rdkafka::message::{Header, OwnedHeaders};
        use rdkafka::producer::FutureRecord;

        for member in members {
            let t = member.transition;
            let key = match self.settings.key {
                KafkaKey::Alert => format!("{}/{}", t.rule, t.entity),
                KafkaKey::Rule => t.rule.clone(),
                KafkaKey::Entity => t.entity.clone(),
            };
            // One message per transition; a single-member request keeps the request id (a
            // reminder's derived id), members of a group carry their own transition ids.
            let message_id = if members.len() == 1 {
                id
            } else {
                t.id.as_str()
            };
            let value = serde_json::to_vec(&payload::member_value(member)).unwrap_or_default();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: HEADER_ID,
                    value: Some(message_id),
                })
                .insert(Header {
                    key: "citybrain-id",
                    value: Some(t.id.as_str()),
                });
            let record = FutureRecord::to(&self.settings.topic)
                .key(&key)
                .payload(&value)
                .headers(headers);
            if let Err((error, _)) = self.producer.send(record, self.settings.timeout).await {
                return Attempt::Retry {
                    reason: format!("kafka: {error}"),
                    retry_after: None,
                };
            }
        }
        Attempt::Delivered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let s = |code: u16| StatusCode::from_u16(code).unwrap();
        let wait = Some(Duration::from_secs(3));
        assert_eq!(classify(s(200), None, String::new()), Attempt::Delivered);
        assert_eq!(classify(s(204), None, String::new()), Attempt::Delivered);
        for code in [301, 302, 307, 308, 408, 429, 500, 502, 503, 504] {
            assert_eq!(
                classify(s(code), wait, String::new()),
                Attempt::Retry {
                    reason: format!("HTTP {code}"),
                    retry_after: wait
                },
                "{code}"
            );
        }
        assert_eq!(
            classify(s(410), None, "gone for good\n".into()),
            Attempt::Gone {
                reason: "410 Gone: gone for good".into()
            }
        );
        for code in [400, 401, 403, 404, 413, 422] {
            assert_eq!(
                classify(s(code), wait, "nope".into()),
                Attempt::Reject {
                    status: code,
                    body: "nope".into()
                }
            );
        }
    }
}
