//! The engine's HTTP server (axum on its own tokio runtime thread): the wall page and its
//! assets, the JSON API, the Server-Sent Events stream, health checks and `/metrics`.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the wall display page (assets embedded in the binary, no CDN) |
//! | `GET /api/alerts` | active alerts and recent transitions |
//! | `GET /api/kpis` | the KPI snapshot with its logical time |
//! | `GET /api/status` | engine status as the wall shows it: watermarks, counts, latency, brokers away, outputs blocked, dispatch receivers disabled |
//! | `GET /api/stream` | SSE: a `snapshot`, then `alert`, `kpis` and `status` events |
//! | `GET /api/openapi.json` | OpenAPI 3 description of the API |
//! | `GET /api/silences` | silences of alert dispatch |
//! | `POST /api/silences`, `DELETE /api/silences/{id}` | add or expire a silence (bearer token) |
//! | `GET /api/dispatch` | dispatch status: queues, receivers disabled by 410 Gone |
//! | `GET /api/config/status` | the last rule reload: when, success, errors with file:line:column, rules hash, version |
//! | `POST /api/config/reload` | reload the rule files now (bearer token) |
//! | `GET /healthz`, `GET /readyz` | liveness; readiness (registry loaded, brokers answering, outputs writable; 503 with the reasons) |
//! | `GET /metrics` | Prometheus text format |
//!
//! With `[http] read_token_env` set, `/api/*` and `/metrics` need a bearer token too (the
//! read token or the API token); `/api/stream` also takes it as `?token=`, which the wall page
//! passes on from its own URL (`/?token=...`).
//!
//! Request bodies are limited to [`MAX_BODY_BYTES`] (larger ones get 413): the only bodies the
//! API takes are silences, a few hundred bytes each.

use std::convert::Infallible;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use citybrain_connectors::dispatch::{Dispatcher, SilenceRecord, SilenceRequest};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Serialize;
use tokio::sync::oneshot;
use tokio_stream::wrappers::BroadcastStream;

use crate::board::{AlertBoard, AlertsView, FeedEvent, LiveStatus};
use crate::health::Health;
use crate::kpi::KpiSnapshot;
use crate::metrics::Metrics;
use crate::reload::{ReloadStatus, Reloader, Trigger};

const INDEX_HTML: &str = include_str!("../assets/index.html");
const WALL_JS: &str = include_str!("../assets/wall.js");
const WALL_CSS: &str = include_str!("../assets/wall.css");
const OPENAPI_JSON: &str = include_str!("../assets/openapi.json");

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// Alerts, KPIs, status and the live feed.
    pub board: Arc<AlertBoard>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// True once every worker has loaded the registry and is consuming.
    pub ready: Arc<AtomicBool>,
    /// Alert dispatch, when receivers are configured.
    pub dispatcher: Option<Arc<Dispatcher>>,
    /// The bearer token mutating calls need; `None` refuses them.
    pub api_token: Option<String>,
    /// The bearer token read endpoints need (the API token also does); `None`: reads are open.
    pub read_token: Option<String>,
    /// Rule reloads.
    pub reloader: Option<Arc<Reloader>>,
    /// Ongoing problems (brokers away, outputs not writable): `/readyz` says 503 while any lasts.
    pub health: Arc<Health>,
}

/// A running HTTP server.
pub struct HttpServer {
    /// The address it listens on (the real port when 0 was configured).
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
#[error("http: cannot serve on {addr}: {source}")]
pub struct HttpError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// The largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The API's routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    INDEX_HTML,
                )
            }),
        )
        .route(
            "/assets/wall.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    WALL_JS,
                )
            }),
        )
        .route(
            "/assets/wall.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    WALL_CSS,
                )
            }),
        )
        .route(
            "/api/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON) }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(api(state.clone()))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The routes that serve data or change something: behind the read token when one is set.
fn api(state: HttpState) -> Router<HttpState> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/api/alerts", get(alerts))
        .route("/api/kpis", get(kpis))
        .route("/api/status", get(status))
        .route("/api/stream", get(stream))
        .route("/api/silences", get(silences).post(add_silence))
        .route("/api/silences/{id}", axum::routing::delete(expire_silence))
        .route("/api/dispatch", get(dispatch_status))
        .route("/api/config/status", get(config_status))
        .route("/api/config/reload", axum::routing::post(config_reload))
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            require_read_token,
        ))
}

/// Compares two tokens in constant time (for equal lengths).
fn same_token(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Lets a request through when no read token is configured, or it carries the read (or API)
/// token: as a bearer header, or on `/api/stream` as `?token=` (`EventSource` cannot send
/// headers). Otherwise 401.
async fn require_read_token(
    State(state): State<HttpState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(expected) = state.read_token.as_deref() else {
        return next.run(request).await;
    };
    let query = (request.uri().path() == "/api/stream")
        .then(|| {
            axum::extract::Query::<std::collections::HashMap<String, String>>::try_from_uri(
                request.uri(),
            )
            .ok()
            .and_then(|q| q.0.get("token").cloned())
        })
        .flatten();
    let accepted = |token: &str| {
        same_token(token, expected)
            || state
                .api_token
                .as_deref()
                .is_some_and(|api| same_token(token, api))
    };
    if bearer(request.headers()).is_some_and(accepted) || query.as_deref().is_some_and(accepted) {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a valid read token is required (Authorization: Bearer, or ?token= on /api/stream)\n",
        )
            .into_response()
    }
}

/// Checks `Authorization: Bearer <token>` against the configured token (constant time);
/// returns the refusal when it does not match.
fn refusal(state: &HttpState, headers: &HeaderMap) -> Option<Response> {
    let Some(expected) = state.api_token.as_deref() else {
        return Some(
            (
                StatusCode::FORBIDDEN,
                "mutating API calls are disabled: set the [http] api_token_env variable\n",
            )
                .into_response(),
        );
    };
    if same_token(bearer(headers).unwrap_or_default(), expected) {
        None
    } else {
        Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a valid bearer token is required\n",
            )
                .into_response(),
        )
    }
}

fn no_dispatch() -> Response {
    (
        StatusCode::NOT_FOUND,
        "alert dispatch is not configured ([dispatch] receivers)\n",
    )
        .into_response()
}

async fn silences(State(state): State<HttpState>) -> Response {
    match &state.dispatcher {
        Some(d) => Json(d.silences()).into_response(),
        None => Json(Vec::<SilenceRecord>::new()).into_response(),
    }
}

async fn add_silence(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refused) = refusal(&state, &headers) {
        return refused;
    }
    let Some(dispatcher) = state.dispatcher.clone() else {
        return no_dispatch();
    };
    let request: SilenceRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("invalid silence: {error}\n"),
            )
                .into_response();
        }
    };
    match dispatcher.add_silence(request) {
        Ok(record) => (StatusCode::CREATED, Json(record)).into_response(),
        Err(error) => (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
    }
}

async fn expire_silence(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(refused) = refusal(&state, &headers) {
        return refused;
    }
    let Some(dispatcher) = state.dispatcher.clone() else {
        return no_dispatch();
    };
    match dispatcher.expire_silence(&id) {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => (StatusCode::NOT_FOUND, "no such silence\n").into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
    }
}

async fn dispatch_status(State(state): State<HttpState>) -> Response {
    match &state.dispatcher {
        Some(d) => Json(serde_json::json!({
            "disabled_receivers": d.disabled_receivers(),
            "queue_depth": d.status().queue_depth(),
        }))
        .into_response(),
        None => no_dispatch(),
    }
}

fn no_reloader() -> Response {
    (StatusCode::NOT_FOUND, "rule reload is not available\n").into_response()
}

async fn config_status(State(state): State<HttpState>) -> Response {
    match &state.reloader {
        Some(reloader) => Json(reloader.status()).into_response(),
        None => no_reloader(),
    }
}

/// Reloads the rule files: 200 with the status when they were valid (applied, or unchanged),
/// 422 with the status and its diagnostics when they were not (the previous rules keep running).
async fn config_reload(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&state, &headers) {
        return refused;
    }
    let Some(reloader) = state.reloader.clone() else {
        return no_reloader();
    };
    // Reading and compiling files blocks: keep it off the async workers.
    let status: ReloadStatus =
        match tokio::task::spawn_blocking(move || reloader.reload(Trigger::Api)).await {
            Ok(status) => status,
            Err(error) => {
                return (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response();
            }
        };
    let code = if status.success {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    (code, Json(status)).into_response()
}

/// 200 `ready`, or 503 with one line per reason: the registry is still loading, the Kafka
/// brokers are away, the outputs cannot be written.
async fn readyz(State(state): State<HttpState>) -> Response {
    let mut reasons = state.health.reasons();
    // A standby loads nothing until it takes over: its reason says why it is not ready.
    if !state.ready.load(Ordering::Relaxed) && state.health.standby().is_none() {
        reasons.insert(0, "loading reference data".to_string());
    }
    if reasons.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let mut body = reasons.join("\n");
        body.push('\n');
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn metrics(State(state): State<HttpState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn alerts(State(state): State<HttpState>) -> Json<AlertsView> {
    Json(state.board.alerts())
}

async fn kpis(State(state): State<HttpState>) -> Json<KpiSnapshot> {
    Json(state.board.kpis())
}

/// The status the wall shows, with the dispatcher's state as of now.
fn live_status(state: &HttpState) -> LiveStatus {
    state
        .board
        .status()
        .with_dispatch(state.dispatcher.as_deref())
}

async fn status(State(state): State<HttpState>) -> Json<LiveStatus> {
    Json(live_status(&state))
}

/// The first message of every stream: everything a fresh page needs.
#[derive(Serialize)]
struct Snapshot {
    alerts: AlertsView,
    kpis: KpiSnapshot,
    status: LiveStatus,
    /// The last rule reload, so a page opened after a failed one shows its banner.
    config: Option<ReloadStatus>,
}

fn event_of(feed: &FeedEvent) -> Event {
    let name = match feed {
        FeedEvent::Alert { .. } => "alert",
        FeedEvent::Kpis { .. } => "kpis",
        FeedEvent::Status { .. } => "status",
        FeedEvent::Config { .. } => "config",
    };
    Event::default()
        .event(name)
        .json_data(feed)
        .unwrap_or_else(|_| Event::default().comment("unencodable"))
}

async fn stream(
    State(state): State<HttpState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Subscribe before taking the snapshot so nothing falls between the two.
    let receiver = state.board.subscribe();
    let board = Arc::clone(&state.board);
    let snapshot = Snapshot {
        alerts: board.alerts(),
        kpis: board.kpis(),
        status: live_status(&state),
        config: board.config(),
    };
    let first = Event::default()
        .event("snapshot")
        .json_data(&snapshot)
        .unwrap_or_else(|_| Event::default().comment("unencodable"));
    let live = BroadcastStream::new(receiver).map(move |item| {
        Ok(match item {
            Ok(feed) => event_of(&feed),
            // A slow client missed events: tell it to reload the snapshot.
            Err(_) => Event::default()
                .event("lagged")
                .data("reload /api/alerts and /api/kpis"),
        })
    });
    Sse::new(stream::once(async move { Ok(first) }).chain(live))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
}

/// Binds `addr` and serves `state` on a dedicated thread until [`HttpServer::shutdown`].
pub fn serve(addr: SocketAddr, state: HttpState) -> Result<HttpServer, HttpError> {
    let server = serve_router(addr, "citybrain-http", router(state))
        .map_err(|source| HttpError { addr, source })?;
    tracing::info!(local = %server.addr, "serving the wall page and API at http://{}/", server.addr);
    Ok(server)
}

/// Binds `addr` and serves `app` on a thread of its own named `name`, with a one-thread
/// runtime, until [`HttpServer::shutdown`] (or drop).
pub fn serve_router(
    addr: SocketAddr,
    name: &'static str,
    app: Router,
) -> Result<HttpServer, std::io::Error> {
    let listener = std::net::TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()?;
    let (shutdown, stopped) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(error) => {
                        tracing::error!(%error, name, "http listener");
                        return;
                    }
                };
                // Not a graceful shutdown: open SSE streams never end on their own.
                tokio::select! {
                    result = axum::serve(listener, app).into_future() => {
                        if let Err(error) = result {
                            tracing::error!(%error, name, "http server stopped");
                        }
                    }
                    _ = stopped => {}
                }
            });
            runtime.shutdown_timeout(Duration::from_millis(100));
        })?;
    Ok(HttpServer {
        addr: local,
        shutdown: Some(shutdown),
        thread: Some(thread),
    })
}

impl HttpServer {
    /// Stops serving and waits for the thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}
