//! Shared harness of the `webhook_*` tests: a scripted webhook receiver (a real axum HTTP
//! server on 127.0.0.1, port from binding :0) that records every request and checks it with
//! an independent Standard Webhooks verifier (the `standardwebhooks` crate), plus helpers to
//! build transitions and dispatcher settings with small timeouts and backoffs.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use citybrain_connectors::dispatch::{
    BreakerSettings, DispatchSettings, FsyncPolicy, Matcher, PayloadFormat, ReceiverKind,
    ReceiverSettings, RetrySettings, RouteSettings, Secret, WebhookSettings,
};
use citybrain_model::alert::transition_id;
use citybrain_model::time::format_event_time;
use citybrain_model::{AlertTransition, Domain, Severity, TransitionState};

/// The receivers' signing secret.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// What the receiver answers to one request.
#[derive(Clone, Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Response body.
    pub body: String,
}

impl Reply {
    /// An immediate answer with `status`.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
            body: String::new(),
        }
    }

    /// 200 OK.
    pub fn ok() -> Reply {
        Reply::status(200)
    }
}

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Request {
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp`.
    pub timestamp: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The raw body.
    pub raw: Vec<u8>,
    /// The body as JSON.
    pub body: serde_json::Value,
    /// What the independent verifier said.
    pub verified: Result<(), String>,
    /// When it arrived.
    pub at: Instant,
    /// The status answered.
    pub answered: u16,
    /// A 2xx answer to an id answered 2xx before (a duplicate the receiver drops).
    pub duplicate: bool,
    /// When the answer was sent (after the delay).
    pub answered_at: Instant,
}

impl Request {
    /// The transition ids in the body (citybrain format).
    pub fn transition_ids(&self) -> Vec<String> {
        self.body["transitions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| t["id"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Decides the answer to the `n`-th request (0-based) given the requests so far.
pub type Script = Box<dyn Fn(usize, &Request) -> Reply + Send + Sync>;

struct Shared {
    script: Script,
    requests: Vec<Request>,
}

/// A scripted webhook receiver on 127.0.0.1.
pub struct TestReceiver {
    /// Its URL.
    pub url: String,
    shared: Arc<Mutex<Shared>>,
    _runtime: tokio::runtime::Runtime,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn handle(
    State(shared): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let verified = standardwebhooks::Webhook::new(SECRET)
        .map_err(|e| e.to_string())
        .and_then(|hook| hook.verify(&body, &headers).map_err(|e| e.to_string()));
    let mut request = Request {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        headers: headers.clone(),
        raw: body.to_vec(),
        body: serde_json::from_slice(&body).unwrap_or_default(),
        verified,
        at,
        answered: 0,
        duplicate: false,
        answered_at: at,
    };
    let (index, reply) = {
        let mut s = lock(&shared);
        let index = s.requests.len();
        let reply = (s.script)(index, &request);
        request.answered = reply.status;
        request.duplicate = (200..300).contains(&reply.status)
            && s.requests
                .iter()
                .any(|r| r.id == request.id && (200..300).contains(&r.answered));
        s.requests.push(request);
        (index, reply)
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    if let Some(r) = lock(&shared).requests.get_mut(index) {
        r.answered_at = Instant::now();
    }
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap(),
        reply.body.clone(),
    )
        .into_response();
    for (name, value) in reply.headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("header value"));
    }
    response
}

impl TestReceiver {
    /// Starts a receiver answering per `script`.
    pub fn start(script: impl Fn(usize, &Request) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_at("127.0.0.1:0", script)
    }

    /// Starts a receiver on `addr` (e.g. the port of one that was down) answering per `script`.
    pub fn start_at(
        addr: &str,
        script: impl Fn(usize, &Request) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let shared = Arc::new(Mutex::new(Shared {
            script: Box::new(script),
            requests: Vec::new(),
        }));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(handle))
            .with_state(Arc::clone(&shared));
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestReceiver {
            url: format!("http://{addr}/hook"),
            shared,
            _runtime: runtime,
        }
    }

    /// Replaces the script.
    pub fn set_script(&self, script: impl Fn(usize, &Request) -> Reply + Send + Sync + 'static) {
        lock(&self.shared).script = Box::new(script);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.shared).requests.clone()
    }

    /// The ids answered 2xx, in order, without duplicates.
    pub fn accepted(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| (200..300).contains(&r.answered) && !r.duplicate)
            .map(|r| r.id)
            .collect()
    }

    /// Waits until `done` holds for the requests (at most `timeout`); panics otherwise.
    pub fn wait_for(&self, timeout: Duration, what: &str, done: impl Fn(&[Request]) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&lock(&self.shared).requests) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; requests: {:#?}",
                    self.requests()
                        .iter()
                        .map(|r| (&r.id, r.answered))
                        .collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A transition of `rule` on `entity` at `time`.
pub fn transition(rule: &str, entity: &str, state: TransitionState, time: u64) -> AlertTransition {
    AlertTransition {
        id: transition_id(rule, entity, state, time),
        rule: rule.to_string(),
        entity: entity.to_string(),
        domain: Domain::Mine,
        state,
        severity: Severity::Critical,
        summary: format!("{rule} on {entity}"),
        value: 1.2,
        event_time: time,
        event_time_rfc3339: format_event_time(time),
        labels: BTreeMap::from([
            ("mine".to_string(), "jungar-1".to_string()),
            ("face".to_string(), "jungar-1/face-2".to_string()),
            ("rule".to_string(), rule.to_string()),
            ("severity".to_string(), "critical".to_string()),
        ]),
        reason: None,
    }
}

/// A webhook receiver named `name` to `url`, signed with [`SECRET`], with a 300 ms timeout,
/// 10–100 ms backoff and no circuit breaker.
pub fn webhook(name: &str, url: &str) -> ReceiverSettings {
    let mut r = ReceiverSettings::new(
        name,
        ReceiverKind::Webhook(WebhookSettings {
            url: url.parse().expect("url"),
            secret: Some(Secret::parse(SECRET).expect("secret")),
            timeout: Duration::from_millis(300),
            format: PayloadFormat::Citybrain,
        }),
    );
    r.retry = RetrySettings {
        base: Duration::from_millis(10),
        max: Duration::from_millis(100),
        max_retry_after: Duration::from_secs(5),
        give_up_after: None,
    };
    r.breaker = BreakerSettings {
        failures: 0,
        cooldown: Duration::from_millis(100),
    };
    r
}

/// A route sending everything matching `matchers` to `receivers`.
pub fn route(matchers: &[&str], receivers: &[&str]) -> RouteSettings {
    RouteSettings {
        matchers: matchers
            .iter()
            .map(|m| Matcher::parse(m).expect("matcher"))
            .collect(),
        receivers: receivers.iter().map(|r| r.to_string()).collect(),
        continue_matching: false,
        group_wait: Duration::ZERO,
        repeat_interval: None,
    }
}

/// Settings with the state in `dir`, one receiver `unit` to `url` and a catch-all route.
pub fn settings(dir: &Path, url: &str) -> DispatchSettings {
    let mut s = DispatchSettings::new(dir);
    s.outbox.fsync = FsyncPolicy::Always;
    s.receivers.push(webhook("unit", url));
    s.routes.push(route(&[], &["unit"]));
    s
}

/// Every request verified with the independent verifier.
pub fn assert_all_verified(requests: &[Request]) {
    for r in requests {
        assert_eq!(r.verified, Ok(()), "request {} did not verify", r.id);
    }
}

/// The metric value of `name{labels}` in `registry`, 0 when absent.
pub fn metric(registry: &prometheus::Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    for family in registry.gather() {
        if family.name() != name {
            continue;
        }
        for m in family.get_metric() {
            let matches = labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            });
            if matches {
                // The other kind's value is the default 0.
                return m.get_counter().get_value() + m.get_gauge().get_value();
            }
        }
    }
    0.0
}
