//! A dispatch unit to try alert dispatch with: a webhook receiver that checks every request's
//! Standard Webhooks signature, drops repeated `webhook-id`s as a real receiver should, and
//! keeps the last requests. `citybrain demo` runs one in-process and routes critical alerts to
//! it; `citybrain receiver` runs one on its own and prints what arrives.
//!
//! | route | what |
//! |---|---|
//! | `POST /hook` | a webhook: 200 when the signature verifies (a repeated id too, marked as such), 401 when it does not |
//! | `GET /` | the last requests, newest first, as JSON |

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use citybrain_connectors::dispatch::signing::{
    DEFAULT_TOLERANCE_SECONDS, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, unix_now,
};
use citybrain_connectors::dispatch::{Secret, verify};
use citybrain_model::time::now_millis;
use serde::Serialize;
use serde_json::Value;

use crate::http::{HttpServer, serve_router};

/// One transition of a received request, in short.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReceivedTransition {
    /// `firing` or `resolved`.
    pub state: String,
    /// The rule.
    pub rule: String,
    /// The entity.
    pub entity: String,
    /// The severity.
    pub severity: String,
    /// The alert's summary.
    pub summary: String,
    /// For a reminder of a still-firing alert: its number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat: Option<u64>,
}

/// One request the receiver got.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReceivedRequest {
    /// The `webhook-id` header.
    pub webhook_id: String,
    /// When it arrived, epoch ms.
    pub received_at: u64,
    /// True when the signature verified.
    pub verified: bool,
    /// Why it did not verify.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// True when a request with this id was accepted before (a retry the unit drops).
    pub duplicate: bool,
    /// The transitions it carried (citybrain or Alertmanager payload).
    pub transitions: Vec<ReceivedTransition>,
}

impl ReceivedRequest {
    /// One line for a console: `firing ch4-alarm jungar-1/face-2/ch4 (critical) ...`.
    pub fn line(&self) -> String {
        let what: Vec<String> = self
            .transitions
            .iter()
            .map(|t| {
                let reminder = t
                    .repeat
                    .map(|n| format!(" reminder {n}"))
                    .unwrap_or_default();
                format!(
                    "{} {} {} ({}){reminder}",
                    t.state, t.rule, t.entity, t.severity
                )
            })
            .collect();
        let check = match (&self.error, self.duplicate) {
            (Some(error), _) => format!("REJECTED: {error}"),
            (None, true) => "signature ok, repeated id dropped".to_string(),
            (None, false) => "signature ok".to_string(),
        };
        format!(
            "{} [webhook-id {}; {check}]",
            what.join("; "),
            self.webhook_id
        )
    }
}

/// Called for every request, after it was checked.
pub type OnRequest = Box<dyn Fn(&ReceivedRequest) + Send + Sync>;

struct Shared {
    secret: Secret,
    keep: usize,
    requests: Mutex<VecDeque<ReceivedRequest>>,
    /// Ids accepted so far (bounded like the request list, times 100).
    seen: Mutex<VecDeque<String>>,
    on_request: OnRequest,
}

/// A running receiver.
pub struct DemoReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: HttpServer,
}

/// The receiver could not start.
#[derive(Debug, thiserror::Error)]
#[error("receiver: cannot serve on {addr}: {source}")]
pub struct ReceiverError {
    addr: SocketAddr,
    source: std::io::Error,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

/// The transitions of a citybrain or Alertmanager payload.
fn transitions(body: &Value) -> Vec<ReceivedTransition> {
    if let Some(members) = body["transitions"].as_array() {
        return members
            .iter()
            .map(|m| ReceivedTransition {
                state: text(&m["state"]),
                rule: text(&m["rule"]),
                entity: text(&m["entity"]),
                severity: text(&m["severity"]),
                summary: text(&m["summary"]),
                repeat: m["repeat"].as_u64(),
            })
            .collect();
    }
    body["alerts"]
        .as_array()
        .map(|alerts| {
            alerts
                .iter()
                .map(|a| ReceivedTransition {
                    state: text(&a["status"]),
                    rule: text(&a["labels"]["rule"]),
                    entity: text(&a["labels"]["entity"]),
                    severity: text(&a["labels"]["severity"]),
                    summary: text(&a["annotations"]["summary"]),
                    repeat: None,
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn hook(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let id = header(&headers, HEADER_ID).to_string();
    let checked = verify(
        &shared.secret,
        &id,
        header(&headers, HEADER_TIMESTAMP),
        header(&headers, HEADER_SIGNATURE),
        &body,
        unix_now(),
        DEFAULT_TOLERANCE_SECONDS,
    );
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let duplicate = checked.is_ok() && {
        let mut seen = shared.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let known = seen.contains(&id);
        if !known {
            seen.push_back(id.clone());
            let limit = shared.keep.saturating_mul(100).max(1);
            while seen.len() > limit {
                seen.pop_front();
            }
        }
        known
    };
    let request = ReceivedRequest {
        webhook_id: id,
        received_at: now_millis(),
        verified: checked.is_ok(),
        error: checked.as_ref().err().map(ToString::to_string),
        duplicate,
        transitions: transitions(&parsed),
    };
    (shared.on_request)(&request);
    {
        let mut requests = shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        requests.push_front(request);
        requests.truncate(shared.keep);
    }
    match checked {
        Ok(()) => StatusCode::OK.into_response(),
        Err(error) => (StatusCode::UNAUTHORIZED, format!("{error}\n")).into_response(),
    }
}

async fn list(State(shared): State<Arc<Shared>>) -> Json<Vec<ReceivedRequest>> {
    Json(shared.requests())
}

impl Shared {
    fn requests(&self) -> Vec<ReceivedRequest> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

impl DemoReceiver {
    /// Serves on `addr` (port 0: any free port) on a thread of its own, checking signatures
    /// with `secret` and keeping the last `keep` requests.
    pub fn start(
        addr: SocketAddr,
        secret: Secret,
        keep: usize,
        on_request: OnRequest,
    ) -> Result<DemoReceiver, ReceiverError> {
        let shared = Arc::new(Shared {
            secret,
            keep: keep.max(1),
            requests: Mutex::new(VecDeque::new()),
            seen: Mutex::new(VecDeque::new()),
            on_request,
        });
        let app = Router::new()
            .route("/", get(list))
            .route("/hook", post(hook))
            .with_state(Arc::clone(&shared));
        let server = serve_router(addr, "citybrain-receiver", app)
            .map_err(|source| ReceiverError { addr, source })?;
        Ok(DemoReceiver {
            addr: server.addr,
            shared,
            server,
        })
    }

    /// The URL webhooks go to.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The last requests, newest first.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.shared.requests()
    }

    /// Stops serving and waits for the thread.
    pub fn shutdown(self) {
        self.server.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarizes_both_payloads() {
        let citybrain = serde_json::json!({"transitions": [{
            "state": "firing", "rule": "ch4-alarm", "entity": "s1", "severity": "critical",
            "summary": "Methane", "repeat": 2
        }]});
        let alertmanager = serde_json::json!({"alerts": [{
            "status": "resolved", "labels": {"rule": "ch4-alarm", "entity": "s1",
            "severity": "critical"}, "annotations": {"summary": "Methane"}
        }]});
        let firing = ReceivedTransition {
            state: "firing".into(),
            rule: "ch4-alarm".into(),
            entity: "s1".into(),
            severity: "critical".into(),
            summary: "Methane".into(),
            repeat: Some(2),
        };
        assert_eq!(transitions(&citybrain), vec![firing.clone()]);
        let resolved = ReceivedTransition {
            state: "resolved".into(),
            repeat: None,
            ..firing
        };
        assert_eq!(transitions(&alertmanager), vec![resolved]);
        let request = ReceivedRequest {
            webhook_id: "abc".into(),
            received_at: 0,
            verified: true,
            error: None,
            duplicate: false,
            transitions: transitions(&citybrain),
        };
        assert_eq!(
            request.line(),
            "firing ch4-alarm s1 (critical) reminder 2 [webhook-id abc; signature ok]"
        );
    }
}
