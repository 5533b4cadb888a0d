//! Routing, grouping, reminder and silence cases as data: every directory under
//! `tests/scenarios/dispatch/` is one case, run through a real [`Dispatcher`] built from the
//! case's config by the engine's config loader, with the engine's HTTP API in front of it
//! (silences are added and expired through it, with the bearer token) and real webhook
//! receivers on 127.0.0.1. A new case is a new directory; `tests/scenarios/dispatch/README.md`
//! describes the files. The exact request bodies each receiver got, in order, must equal the
//! case's `expected.json`. `CITYBRAIN_BLESS=1` writes the actual requests there instead (to
//! review before committing).
//!
//! Order without timing: receivers answer a request only when the case lets them (`answer`,
//! `deliver_all`, and at the end), and the runner sends one request at a time per receiver
//! (`max_concurrency = 1`, a long timeout), so what is queued while requests are held goes
//! out in one defined order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use citybrain_connectors::dispatch::payload::derived_id;
use citybrain_connectors::dispatch::{Dispatcher, ReceiverKind, Submitted};
use citybrain_engine::board::AlertBoard;
use citybrain_engine::config;
use citybrain_engine::health::Health;
use citybrain_engine::http::{self, HttpState};
use citybrain_engine::metrics::Metrics;
use citybrain_model::alert::transition_id;
use citybrain_model::time::format_event_time;
use citybrain_model::{AlertTransition, Domain, Severity, TransitionState};
use citybrain_tests::http_request;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::webhook_support::SECRET;

/// Input times are milliseconds after 2026-11-29T00:00:00Z.
const T0: u64 = 1_795_910_400_000;
/// The API token of the HTTP server in front of the dispatcher.
const TOKEN: &str = "scenario-token";
/// The longest any wait of a case may take.
const WAIT: Duration = Duration::from_secs(30);

/// `input.json`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    /// What the case shows.
    #[allow(dead_code)]
    description: String,
    steps: Vec<Step>,
}

/// One step of a case: exactly one of the actions.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    /// Submit a transition; `outcome` is what the dispatcher must answer: `queued N`,
    /// `silenced NAME` (a config silence is `cfg-N`), `unrouted` or `duplicate`.
    submit: Option<TransitionSpec>,
    outcome: Option<String>,
    /// `POST /api/silences` with this body; the silence is then known by `as`.
    add_silence: Option<Value>,
    #[serde(rename = "as")]
    name: Option<String>,
    /// `DELETE /api/silences/{id}` of the silence added `as` this name.
    expire_silence: Option<String>,
    /// Let these receivers answer this many more requests each, and wait until they have.
    answer: Option<BTreeMap<String, usize>>,
    /// Wait until these receivers have received this many requests in all.
    #[serde(rename = "await")]
    wait_for: Option<BTreeMap<String, usize>>,
    /// Answer everything, wait until nothing is queued, then hold answers again.
    deliver_all: Option<bool>,
}

/// A transition, with what it leaves out filled in as the engine would.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransitionSpec {
    /// How the expected requests name it (its id is a hash).
    name: String,
    rule: String,
    entity: String,
    state: TransitionState,
    /// Milliseconds after [`T0`].
    at: u64,
    #[serde(default = "default_domain")]
    domain: Domain,
    #[serde(default = "default_severity")]
    severity: Severity,
    #[serde(default = "default_value")]
    value: f64,
    /// Default: `"<rule> on <entity>"`.
    #[serde(default)]
    summary: Option<String>,
    /// The rule's and the entity's labels; `rule`, `entity`, `domain` and `severity` are added.
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

fn default_domain() -> Domain {
    Domain::Mine
}
fn default_severity() -> Severity {
    Severity::Critical
}
fn default_value() -> f64 {
    1.0
}

impl TransitionSpec {
    fn build(&self) -> AlertTransition {
        let time = T0 + self.at;
        let mut labels = self.labels.clone();
        labels.insert("rule".into(), self.rule.clone());
        labels.insert("entity".into(), self.entity.clone());
        labels.insert("domain".into(), self.domain.as_str().into());
        labels.insert("severity".into(), self.severity.as_str().into());
        AlertTransition {
            id: transition_id(&self.rule, &self.entity, self.state, time),
            rule: self.rule.clone(),
            entity: self.entity.clone(),
            domain: self.domain,
            state: self.state,
            severity: self.severity,
            summary: self
                .summary
                .clone()
                .unwrap_or_else(|| format!("{} on {}", self.rule, self.entity)),
            value: self.value,
            event_time: time,
            event_time_rfc3339: format_event_time(time),
            labels,
            reason: None,
        }
    }
}

/// One request a receiver got.
#[derive(Clone, Debug)]
struct Got {
    id: String,
    body: Value,
    verified: Result<(), String>,
}

/// A receiver's requests and how many it may answer.
struct Endpoint {
    requests: Mutex<Vec<Got>>,
    answered: Mutex<usize>,
    allowed: watch::Sender<usize>,
}

impl Endpoint {
    fn new() -> Self {
        Endpoint {
            requests: Mutex::new(Vec::new()),
            answered: Mutex::new(0),
            allowed: watch::Sender::new(0),
        }
    }

    fn received(&self) -> usize {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn answered(&self) -> usize {
        *self.answered.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

type Endpoints = Arc<BTreeMap<String, Endpoint>>;

async fn receive(
    State(endpoints): State<Endpoints>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let Some(endpoint) = endpoints.get(&name) else {
        return StatusCode::NOT_FOUND;
    };
    let verified = standardwebhooks::Webhook::new(SECRET)
        .map_err(|e| e.to_string())
        .and_then(|hook| hook.verify(&body, &headers).map_err(|e| e.to_string()));
    let index = {
        let mut requests = endpoint
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        requests.push(Got {
            id: headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            verified,
        });
        requests.len() - 1
    };
    let mut allowed = endpoint.allowed.subscribe();
    if allowed.wait_for(|a| index < *a).await.is_err() {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    *endpoint
        .answered
        .lock()
        .unwrap_or_else(PoisonError::into_inner) += 1;
    StatusCode::OK
}

/// The receivers of a case: one HTTP server on 127.0.0.1, a path per receiver.
struct Receivers {
    base: String,
    endpoints: Endpoints,
    _runtime: tokio::runtime::Runtime,
}

impl Receivers {
    fn start(names: &[String]) -> Receivers {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let endpoints: Endpoints =
            Arc::new(names.iter().map(|n| (n.clone(), Endpoint::new())).collect());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new()
            .route("/{name}", axum::routing::post(receive))
            .with_state(Arc::clone(&endpoints));
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receivers {
            base: format!("http://{addr}"),
            endpoints,
            _runtime: runtime,
        }
    }

    fn endpoint(&self, name: &str) -> &Endpoint {
        self.endpoints
            .get(name)
            .unwrap_or_else(|| panic!("no receiver `{name}` in the config"))
    }

    fn allow_all(&self, all: bool) {
        for endpoint in self.endpoints.values() {
            let limit = if all { usize::MAX } else { endpoint.received() };
            endpoint.allowed.send_replace(limit);
        }
    }
}

fn wait(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The case's config with the receivers' base URL and the secret filled in, as settings with
/// one request at a time per receiver and a timeout no held request reaches.
fn dispatch_settings(
    case: &Path,
    state: &Path,
    base: &str,
) -> citybrain_connectors::dispatch::DispatchSettings {
    let path = case.join("config.toml");
    let text = std::fs::read_to_string(&path)
        .expect("config.toml")
        .replace("${RECEIVERS}", base)
        .replace("${SECRET}", SECRET);
    let config = config::load_str(&path, &text).unwrap_or_else(|d| panic!("{d}"));
    let mut settings = config
        .dispatch
        .to_settings(state, None)
        .expect("dispatch settings");
    for receiver in &mut settings.receivers {
        receiver.max_concurrency = 1;
        if let ReceiverKind::Webhook(w) = &mut receiver.kind {
            w.timeout = Duration::from_secs(120);
        }
    }
    settings
}

fn receiver_names(case: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(case.join("config.toml")).expect("config.toml");
    let text = text
        .replace("${RECEIVERS}", "http://127.0.0.1:9")
        .replace("${SECRET}", SECRET);
    let config =
        config::load_str(&case.join("config.toml"), &text).unwrap_or_else(|d| panic!("{d}"));
    config.dispatch.receivers.keys().cloned().collect()
}

/// Replaces transition ids and ids derived from them by their names: `<name>`,
/// `group(<a>,<b>)`, `repeat(<name>,k)`, where k counts this alert's reminders to the receiver
/// (1, 2, ...); a reminder's `repeat` number becomes k too (it counts intervals since the alert
/// started, by the wall clock).
struct Names {
    by_id: HashMap<String, String>,
}

impl Names {
    fn name(&self, id: &str) -> Option<String> {
        self.by_id.get(id).map(|n| format!("<{n}>"))
    }

    fn replace_ids(&self, value: &mut Value) {
        match value {
            Value::String(s) => {
                if let Some(name) = self.name(s) {
                    *s = name;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.replace_ids(v)),
            Value::Object(map) => map.values_mut().for_each(|v| self.replace_ids(v)),
            _ => {}
        }
    }

    fn normalize(&self, requests: &[Got]) -> Vec<Value> {
        let mut reminders: HashMap<String, u64> = HashMap::new();
        requests
            .iter()
            .map(|got| {
                let mut body = got.body.clone();
                let members: Vec<(String, Option<u64>)> = match body["transitions"].as_array() {
                    Some(members) => members
                        .iter()
                        .map(|m| {
                            (
                                m["id"].as_str().unwrap_or_default().to_string(),
                                m["repeat"].as_u64(),
                            )
                        })
                        .collect(),
                    None => body["alerts"]
                        .as_array()
                        .map(|alerts| {
                            alerts
                                .iter()
                                .map(|a| {
                                    let id = a["annotations"]["transition_id"]
                                        .as_str()
                                        .unwrap_or_default();
                                    (id.to_string(), None)
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                };
                let ids: Vec<&str> = members.iter().map(|(id, _)| id.as_str()).collect();
                let names = |ids: &[&str]| {
                    ids.iter()
                        .map(|id| self.name(id).unwrap_or_else(|| id.to_string()))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                let reminder = match members.as_slice() {
                    [(member, Some(n))] => {
                        let n = n.to_string();
                        (got.id == derived_id("repeat", &[member.as_str(), n.as_str()]))
                            .then(|| member.clone())
                    }
                    _ => None,
                };
                let id = if let Some(name) = self.name(&got.id) {
                    name
                } else if let Some(member) = reminder {
                    let k = reminders.entry(member).or_default();
                    *k += 1;
                    let id = format!("repeat({},{k})", names(&ids));
                    body["transitions"][0]["repeat"] = json!(*k);
                    if body["id"] == got.id.as_str() {
                        body["id"] = json!(id.clone());
                    }
                    id
                } else if ids.len() > 1 && got.id == derived_id("group", &ids) {
                    let id = format!("group({})", names(&ids));
                    if body["id"] == got.id.as_str() {
                        body["id"] = json!(id.clone());
                    }
                    id
                } else {
                    got.id.clone()
                };
                self.replace_ids(&mut body);
                json!({ "webhook-id": id, "body": body })
            })
            .collect()
    }
}

/// Runs one case; returns what each receiver got (normalized), by receiver.
fn run_case(case: &Path) -> BTreeMap<String, Vec<Value>> {
    let input: Input =
        serde_json::from_str(&std::fs::read_to_string(case.join("input.json")).expect("input"))
            .unwrap_or_else(|e| panic!("input.json: {e}"));
    let names = receiver_names(case);
    let receivers = Receivers::start(&names);
    let state = tempfile::tempdir().expect("tempdir");
    let settings = dispatch_settings(case, state.path(), &receivers.base);
    let metrics = Metrics::new().expect("metrics");
    let dispatcher =
        Arc::new(Dispatcher::start(settings, &metrics.registry).expect("dispatcher start"));
    let server = http::serve(
        "127.0.0.1:0".parse().expect("addr"),
        HttpState {
            board: Arc::new(AlertBoard::new()),
            metrics: metrics.clone(),
            ready: Arc::new(AtomicBool::new(true)),
            dispatcher: Some(Arc::clone(&dispatcher)),
            api_token: Some(TOKEN.to_string()),
            read_token: None,
            reloader: None,
            health: Arc::new(Health::new(
                metrics.kafka_brokers_up.clone(),
                metrics.outputs_writable.clone(),
            )),
        },
    )
    .expect("http server");
    let auth = format!("Bearer {TOKEN}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];

    let mut ids = HashMap::new();
    let mut silences: HashMap<String, String> = HashMap::new();
    for (i, step) in input.steps.iter().enumerate() {
        let at = format!("step {}", i + 1);
        let actions = [
            step.submit.is_some(),
            step.add_silence.is_some(),
            step.expire_silence.is_some(),
            step.answer.is_some(),
            step.wait_for.is_some(),
            step.deliver_all.is_some(),
        ];
        assert_eq!(
            actions.iter().filter(|a| **a).count(),
            1,
            "{at}: one action per step"
        );
        if let Some(transition) = &step.submit {
            let outcome = step.outcome.as_deref().unwrap_or_else(|| {
                panic!("{at}: a submit step says its outcome");
            });
            let t = transition.build();
            ids.insert(t.id.clone(), transition.name.clone());
            let submitted = dispatcher.submit(&t).expect("submit");
            let silence_name = |id: &str| {
                silences
                    .iter()
                    .find(|(_, v)| v.as_str() == id)
                    .map_or(id.to_string(), |(k, _)| k.clone())
            };
            let got = match submitted {
                Submitted::Queued(n) => format!("queued {n}"),
                Submitted::Duplicate => "duplicate".to_string(),
                Submitted::Silenced(id) => format!("silenced {}", silence_name(&id)),
                Submitted::Unrouted => "unrouted".to_string(),
            };
            assert_eq!(got, outcome, "{at}: outcome of `{}`", transition.name);
        }
        if let Some(request) = &step.add_silence {
            let name = step
                .name
                .clone()
                .unwrap_or_else(|| panic!("{at}: add_silence needs `as`"));
            let (status, body) = http_request(
                server.addr,
                "POST",
                "/api/silences",
                &headers,
                &request.to_string(),
            );
            assert_eq!(status, 201, "{at}: {body}");
            let record: Value = serde_json::from_str(&body).expect("silence json");
            silences.insert(name, record["id"].as_str().unwrap_or_default().to_string());
        }
        if let Some(name) = &step.expire_silence {
            let id = silences
                .get(name)
                .unwrap_or_else(|| panic!("{at}: no silence `{name}`"));
            let (status, body) = http_request(
                server.addr,
                "DELETE",
                &format!("/api/silences/{id}"),
                &headers,
                "",
            );
            assert_eq!(status, 204, "{at}: {body}");
        }
        for (name, n) in step.answer.iter().flatten() {
            let endpoint = receivers.endpoint(name);
            let target = endpoint.answered() + n;
            endpoint.allowed.send_modify(|a| *a = (*a).max(target));
            wait(&format!("{at}: {name} to answer {target}"), || {
                endpoint.answered() >= target
            });
        }
        for (name, n) in step.wait_for.iter().flatten() {
            let endpoint = receivers.endpoint(name);
            wait(&format!("{at}: {name} to receive {n}"), || {
                endpoint.received() >= *n
            });
        }
        if step.deliver_all.is_some() {
            receivers.allow_all(true);
            assert!(dispatcher.wait_idle(WAIT), "{at}: not delivered");
            receivers.allow_all(false);
        }
    }
    receivers.allow_all(true);
    assert!(dispatcher.wait_idle(WAIT), "not delivered at the end");
    server.shutdown();
    let dispatcher = Arc::try_unwrap(dispatcher)
        .ok()
        .expect("the HTTP server let go of the dispatcher");
    dispatcher
        .shutdown(Duration::from_secs(1))
        .expect("shutdown");

    let names = Names { by_id: ids };
    receivers
        .endpoints
        .iter()
        .map(|(name, endpoint)| {
            let got = endpoint
                .requests
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            for g in &got {
                assert_eq!(
                    g.verified,
                    Ok(()),
                    "{name}: request {} did not verify",
                    g.id
                );
            }
            (name.clone(), names.normalize(&got))
        })
        .collect()
}

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/dispatch");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/scenarios/dispatch")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("input.json").is_file())
        .collect();
    cases.sort();
    cases
}

#[test]
fn dispatch_scenarios() {
    let bless = std::env::var_os("CITYBRAIN_BLESS").is_some();
    let cases = cases();
    assert!(cases.len() >= 10, "{} cases", cases.len());
    let mut failed = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap_or_default().to_string_lossy();
        let actual = serde_json::to_value(run_case(case)).expect("json");
        let path = case.join("expected.json");
        if bless {
            let mut text = serde_json::to_string_pretty(&actual).expect("json");
            text.push('\n');
            std::fs::write(&path, text).expect("write expected.json");
            continue;
        }
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}")),
        )
        .unwrap_or_else(|e| panic!("{name}: expected.json: {e}"));
        if actual != expected {
            failed.push(format!(
                "{name}: expected\n{}\ngot\n{}",
                serde_json::to_string_pretty(&expected).unwrap_or_default(),
                serde_json::to_string_pretty(&actual).unwrap_or_default()
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}
