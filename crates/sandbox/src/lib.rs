//! The sandbox service: REPL sessions over HTTP, for code that a model wrote and nobody trusts.
//!
//! It runs sessions on any [`Executor`] (in production the wasm one) and holds **no model credentials and makes no
//! outbound connection**: when code calls `llm_query`, `llm_query_batched` or `rlm_query`, the cell suspends and the
//! response says so (`{"status": "needs_llm", "cell_id", "calls": [...]}`); the client performs the calls and
//! resumes the cell with the answers (`POST /v1/sessions/{id}/cells/{cell_id}/resume`).
//!
//! Routes: `GET /health`, `GET /ready`, `GET /metrics`; the seed-compatible one-shot `POST /execute`;
//! `PUT`/`HEAD /v1/contexts/{sha256}` (upload a context once, reuse it by hash); `POST /v1/sessions`,
//! `GET /v1/sessions`, `DELETE /v1/sessions/{id}`, `POST /v1/sessions/{id}/cells`,
//! `GET /v1/sessions/{id}/cells/{cell_id}`, `POST /v1/sessions/{id}/cells/{cell_id}/resume`,
//! `GET /v1/sessions/{id}/variables[/{name}]`. See `docs/sandbox.md`.

mod contexts;
mod error;
mod metrics;
mod sessions;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures::StreamExt;
use rlm_protocol::sandbox::{
    CellRequest, CellResponse, ContextKind, ContextUploaded, CreateSessionRequest, ExecuteRequest, ExecuteResponse,
    ResumeRequest, SessionCreated, SessionSummary, VariableNames, VariableValue,
};
use rlm_protocol::{Context, Executor, SessionSpec, SubCall, SubCallHost, SubCallResult};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::contexts::{ContextStore, StoredContext, is_sha256_hex, sha256_hex};
pub use crate::error::SandboxError;
use crate::metrics::Metrics;
use crate::sessions::{Slot, SuspendingHost};

/// Limits and settings of the service.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxConfig {
    /// Sessions held at once; creating one more answers 429.
    pub max_sessions: usize,
    /// Cells executing at once (the worker pool); further cells wait for a slot.
    pub max_concurrent_cells: usize,
    /// A session unused for this long is closed.
    pub idle_ttl: Duration,
    /// Cell time limit when the client asks for none.
    pub default_cell_timeout: Duration,
    /// Largest cell time limit a client may ask for.
    pub max_cell_timeout: Duration,
    /// How long a suspended cell waits for its client to answer its sub-calls.
    pub resume_timeout: Duration,
    /// Largest request body, including uploaded contexts.
    pub max_body_bytes: usize,
    /// Memory for contexts uploaded by hash; least recently used ones are dropped first.
    pub context_store_bytes: usize,
    /// Captured stdout/stderr per cell.
    pub max_captured_chars: usize,
    /// When set, every route except `/health`, `/ready` and `/metrics` requires `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// This replica's own base URL (e.g. `http://<pod-ip>:8000`), returned with every new session so that clients
    /// behind a load balancer send the session's later requests to the replica that holds it.
    pub advertise_url: Option<String>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            max_sessions: 64,
            max_concurrent_cells: std::thread::available_parallelism().map_or(2, |n| n.get() * 2),
            idle_ttl: Duration::from_secs(600),
            default_cell_timeout: SessionSpec::DEFAULT_CELL_TIMEOUT,
            max_cell_timeout: Duration::from_secs(600),
            resume_timeout: Duration::from_secs(600),
            max_body_bytes: 2 << 30,
            context_store_bytes: 4 << 30,
            max_captured_chars: SessionSpec::DEFAULT_MAX_CAPTURED_CHARS,
            token: None,
            advertise_url: None,
        }
    }
}

/// The service: its executor, sessions, uploaded contexts and counters.
pub struct Sandbox {
    executor: Arc<dyn Executor>,
    config: SandboxConfig,
    sessions: Mutex<HashMap<String, Arc<Slot>>>,
    /// Sessions created or being created; reserved before the (slow) start so the limit holds under concurrency.
    reserved: AtomicUsize,
    contexts: Mutex<ContextStore>,
    cell_permits: Arc<Semaphore>,
    metrics: Metrics,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("executor", &self.executor.name()).field("config", &"..").finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Sandbox {
    pub fn new(executor: Arc<dyn Executor>, config: SandboxConfig) -> Arc<Self> {
        Arc::new(Self {
            cell_permits: Arc::new(Semaphore::new(config.max_concurrent_cells.max(1))),
            contexts: Mutex::new(ContextStore::new(config.context_store_bytes)),
            executor,
            config,
            sessions: Mutex::new(HashMap::new()),
            reserved: AtomicUsize::new(0),
            metrics: Metrics::default(),
        })
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }

    fn slot(&self, id: &str) -> Result<Arc<Slot>, SandboxError> {
        lock(&self.sessions).get(id).cloned().ok_or_else(|| SandboxError::NotFound(format!("no session {id}")))
    }

    fn cell_timeout(&self, requested: Option<f64>) -> Result<Duration, SandboxError> {
        let Some(seconds) = requested else { return Ok(self.config.default_cell_timeout) };
        let timeout = Duration::try_from_secs_f64(seconds).ok().filter(|t| !t.is_zero()).ok_or_else(|| {
            SandboxError::BadRequest(format!("timeout must be a positive number of seconds, got {seconds}"))
        })?;
        Ok(timeout.min(self.config.max_cell_timeout))
    }

    fn context_from(&self, request: &mut CreateSessionRequest) -> Result<Context, SandboxError> {
        match (request.context.take(), request.context_sha256.as_deref()) {
            (Some(_), Some(_)) => {
                Err(SandboxError::BadRequest("give either `context` or `context_sha256`, not both".into()))
            }
            (Some(serde_json::Value::String(text)), None) => Ok(Context::Text(text)),
            (Some(value), None) => Ok(Context::Json(value)),
            (None, None) => Ok(Context::Text(String::new())),
            (None, Some(hash)) => {
                let stored = lock(&self.contexts).get(hash).ok_or_else(|| {
                    SandboxError::NotFound(format!(
                        "no uploaded context {hash}; upload it with PUT /v1/contexts/{hash}"
                    ))
                })?;
                match stored.kind {
                    ContextKind::Text => String::from_utf8(stored.bytes.clone())
                        .map(Context::Text)
                        .map_err(|_| SandboxError::BadRequest("the uploaded context is not UTF-8 text".into())),
                    ContextKind::Json => serde_json::from_slice(&stored.bytes)
                        .map(Context::Json)
                        .map_err(|e| SandboxError::BadRequest(format!("the uploaded context is not JSON: {e}"))),
                }
            }
        }
    }

    /// Creates a session; the caller holds a reservation.
    async fn create_session(&self, mut request: CreateSessionRequest) -> Result<SessionCreated, SandboxError> {
        let context = self.context_from(&mut request)?;
        let cell_timeout = self.cell_timeout(request.cell_timeout)?;
        let spec = SessionSpec { context, cell_timeout, max_captured_chars: self.config.max_captured_chars };
        let host = SuspendingHost::new(self.config.resume_timeout);
        let session = self.executor.start_session(spec, host.clone()).await?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let slot = Arc::new(Slot::new(id.clone(), session, host, cell_timeout));
        let created = SessionCreated {
            session_id: id.clone(),
            endpoint: self.config.advertise_url.clone(),
            context: slot.info.clone(),
            cell_timeout: cell_timeout.as_secs_f64(),
        };
        lock(&self.sessions).insert(id, slot);
        self.metrics.inc(|m| &m.sessions_created);
        Ok(created)
    }

    fn reserve_session(&self) -> Result<Reservation<'_>, SandboxError> {
        let taken = self.reserved.fetch_add(1, Ordering::SeqCst);
        if taken >= self.config.max_sessions {
            self.reserved.fetch_sub(1, Ordering::SeqCst);
            self.metrics.inc(|m| &m.rejected_session_limit);
            return Err(SandboxError::TooManyRequests(format!(
                "the sandbox holds its maximum of {} sessions; close one or retry later",
                self.config.max_sessions
            )));
        }
        Ok(Reservation { sandbox: self, kept: false })
    }

    /// Removes and closes a session.
    async fn close_session(&self, id: &str) -> bool {
        let removed = lock(&self.sessions).remove(id);
        match removed {
            Some(slot) => {
                self.reserved.fetch_sub(1, Ordering::SeqCst);
                slot.close().await;
                true
            }
            None => false,
        }
    }

    /// Closes sessions idle for longer than the TTL; returns how many.
    pub async fn evict_idle(&self) -> usize {
        let stale: Vec<String> = lock(&self.sessions)
            .values()
            .filter(|slot| slot.idle_for() >= self.config.idle_ttl && !slot.is_busy())
            .map(|slot| slot.id.clone())
            .collect();
        let mut evicted = 0;
        for id in stale {
            if self.close_session(&id).await {
                self.metrics.inc(|m| &m.sessions_evicted);
                evicted += 1;
            }
        }
        evicted
    }

    /// Waits for a free place in the worker pool.
    async fn cell_worker(&self) -> Result<tokio::sync::OwnedSemaphorePermit, SandboxError> {
        self.cell_permits.clone().acquire_owned().await.map_err(|_| SandboxError::Unavailable("shutting down".into()))
    }

    /// Closes every session (at shutdown).
    pub async fn close_all(&self) {
        let ids: Vec<String> = lock(&self.sessions).keys().cloned().collect();
        for id in ids {
            self.close_session(&id).await;
        }
    }
}

/// A taken session place, given back on drop unless the session was created.
struct Reservation<'a> {
    sandbox: &'a Sandbox,
    kept: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.sandbox.reserved.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Sub-calls in one-shot `/execute` have nobody to answer them.
struct NoSubCalls;

#[async_trait]
impl SubCallHost for NoSubCalls {
    async fn sub_calls(&self, calls: Vec<SubCall>) -> Vec<SubCallResult> {
        calls.iter().map(|_| Err("sub-calls need a session: use POST /v1/sessions".to_owned())).collect()
    }
}

/// JSON body whose rejections (bad JSON, wrong fields, wrong content type) are 400s with a message.
struct ApiJson<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = SandboxError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(JsonRejection::BytesRejection(err)) if err.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(SandboxError::PayloadTooLarge(err.body_text()))
            }
            Err(rejection) => Err(SandboxError::BadRequest(rejection.body_text())),
        }
    }
}

/// The router of the service.
pub fn app(sandbox: Arc<Sandbox>) -> Router {
    let protected = Router::new()
        .route("/execute", post(execute))
        .route("/v1/contexts/{sha256}", put(upload_context).head(context_exists))
        .route("/v1/sessions", post(create_session).get(list_sessions))
        .route("/v1/sessions/{id}", axum::routing::delete(delete_session))
        .route("/v1/sessions/{id}/cells", post(run_cell))
        .route("/v1/sessions/{id}/cells/{cell_id}", get(poll_cell))
        .route("/v1/sessions/{id}/cells/{cell_id}/resume", post(resume_cell))
        .route("/v1/sessions/{id}/variables", get(variable_names))
        .route("/v1/sessions/{id}/variables/{name}", get(variable))
        .route_layer(middleware::from_fn_with_state(sandbox.clone(), require_token));
    Router::new()
        .route("/health", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(protected)
        .fallback(|| async { SandboxError::NotFound("no such route".into()) })
        .layer(DefaultBodyLimit::max(sandbox.config.max_body_bytes))
        .with_state(sandbox)
}

/// Serves `app` on `listener` until `shutdown` resolves, then closes every session.
pub async fn serve(
    listener: tokio::net::TcpListener,
    sandbox: Arc<Sandbox>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let reaper = {
        let sandbox = Arc::downgrade(&sandbox);
        let period = (sandbox.upgrade().map_or(Duration::from_secs(60), |s| s.config.idle_ttl) / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(30));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(sandbox) = sandbox.upgrade() else { break };
                let evicted = sandbox.evict_idle().await;
                if evicted > 0 {
                    tracing::info!(evicted, "closed idle sessions");
                }
            }
        })
    };
    let result = axum::serve(listener, app(sandbox.clone())).with_graceful_shutdown(shutdown).await;
    reaper.abort();
    sandbox.close_all().await;
    result
}

async fn require_token(
    State(sandbox): State<Arc<Sandbox>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if let Some(expected) = &sandbox.config.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or("");
        // Compare digests so the time taken does not depend on how much of the token matched.
        if Sha256::digest(given.as_bytes()) != Sha256::digest(expected.as_bytes()) {
            sandbox.metrics.inc(|m| &m.rejected_unauthorized);
            return SandboxError::Unauthorized.into_response();
        }
    }
    next.run(request).await
}

async fn ready(State(sandbox): State<Arc<Sandbox>>) -> Response {
    let sessions = sandbox.session_count();
    let capacity = sandbox.config.max_sessions;
    let body = serde_json::json!({
        "ready": sessions < capacity,
        "executor": sandbox.executor.name(),
        "sessions": sessions,
        "capacity": capacity,
        "cells_running": sandbox.config.max_concurrent_cells - sandbox.cell_permits.available_permits(),
    });
    let status = if sessions < capacity { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn metrics(State(sandbox): State<Arc<Sandbox>>) -> Response {
    let running = sandbox.config.max_concurrent_cells.max(1) - sandbox.cell_permits.available_permits();
    let text = sandbox.metrics.render(sandbox.session_count(), running, sandbox.config.max_sessions);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn execute(
    State(sandbox): State<Arc<Sandbox>>,
    ApiJson(request): ApiJson<ExecuteRequest>,
) -> Result<Json<ExecuteResponse>, SandboxError> {
    sandbox.metrics.inc(|m| &m.executes);
    let cell_timeout = sandbox.cell_timeout(request.timeout)?;
    let context = match request.context {
        Some(serde_json::Value::String(text)) => Context::Text(text),
        Some(value) => Context::Json(value),
        None => Context::Text(String::new()),
    };
    let reservation = sandbox.reserve_session()?;
    let spec = SessionSpec { context, cell_timeout, max_captured_chars: sandbox.config.max_captured_chars };
    let mut session = sandbox.executor.start_session(spec, Arc::new(NoSubCalls)).await?;
    let permit = sandbox.cell_worker().await?;
    let outcome = session.run_cell(&request.code).await;
    drop(permit);
    let mut locals = serde_json::Map::new();
    if let Ok(names) = session.variable_names().await {
        for name in names {
            if let Ok(Some(value)) = session.get_variable(&name).await {
                locals.insert(name, serde_json::Value::String(value));
            }
        }
    }
    let _ = session.close().await;
    drop(reservation);
    let outcome = outcome?;
    sandbox.metrics.record_cell(&outcome);
    let error = outcome.error.as_ref().map(|error| {
        if error.traceback.is_empty() { error.to_string() } else { format!("{}\n{error}", error.traceback.trim_end()) }
    });
    Ok(Json(ExecuteResponse {
        success: error.is_none(),
        stdout: outcome.stdout,
        stderr: outcome.stderr,
        locals,
        execution_time: outcome.duration.as_secs_f64(),
        error,
    }))
}

#[derive(Debug, Deserialize)]
struct UploadQuery {
    #[serde(default)]
    kind: ContextKind,
}

/// Streams the body into memory, hashing as it goes; the hash must match the path.
async fn upload_context(
    State(sandbox): State<Arc<Sandbox>>,
    Path(sha256): Path<String>,
    Query(query): Query<UploadQuery>,
    body: Body,
) -> Result<(StatusCode, Json<ContextUploaded>), SandboxError> {
    if !is_sha256_hex(&sha256) {
        return Err(SandboxError::BadRequest("the path must end in the lower-case hex SHA-256 of the body".into()));
    }
    let limit = sandbox.config.max_body_bytes.min(lock(&sandbox.contexts).capacity_bytes());
    let mut hasher = Sha256::new();
    let mut bytes = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| SandboxError::BadRequest(format!("reading the body failed: {e}")))?;
        if bytes.len() + chunk.len() > limit {
            return Err(SandboxError::PayloadTooLarge(format!("contexts are limited to {limit} bytes")));
        }
        hasher.update(&chunk);
        bytes.extend_from_slice(&chunk);
    }
    let actual = sha256_hex(hasher.finalize());
    if actual != sha256 {
        return Err(SandboxError::BadRequest(format!("the body's SHA-256 is {actual}, not {sha256}")));
    }
    let size = bytes.len() as u64;
    if !lock(&sandbox.contexts).insert(sha256.clone(), StoredContext { kind: query.kind, bytes }) {
        return Err(SandboxError::PayloadTooLarge("the context is larger than the context store".into()));
    }
    Ok((
        StatusCode::CREATED,
        Json(ContextUploaded { sha256, endpoint: sandbox.config.advertise_url.clone(), bytes: size, kind: query.kind }),
    ))
}

async fn context_exists(State(sandbox): State<Arc<Sandbox>>, Path(sha256): Path<String>) -> StatusCode {
    if lock(&sandbox.contexts).get(&sha256).is_some() { StatusCode::OK } else { StatusCode::NOT_FOUND }
}

async fn create_session(
    State(sandbox): State<Arc<Sandbox>>,
    ApiJson(request): ApiJson<CreateSessionRequest>,
) -> Result<(StatusCode, Json<SessionCreated>), SandboxError> {
    let mut reservation = sandbox.reserve_session()?;
    let created = sandbox.create_session(request).await?;
    reservation.kept = true;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn list_sessions(State(sandbox): State<Arc<Sandbox>>) -> Json<Vec<SessionSummary>> {
    let mut sessions: Vec<SessionSummary> = lock(&sandbox.sessions)
        .values()
        .map(|slot| SessionSummary {
            session_id: slot.id.clone(),
            context: slot.info.clone(),
            cells: slot.cells.load(Ordering::Relaxed),
            age_secs: slot.created.elapsed().as_secs_f64(),
            idle_secs: slot.idle_for().as_secs_f64(),
            busy: slot.is_busy(),
            cell_timeout: slot.cell_timeout.as_secs_f64(),
        })
        .collect();
    sessions.sort_by(|a, b| b.age_secs.total_cmp(&a.age_secs));
    Json(sessions)
}

async fn delete_session(
    State(sandbox): State<Arc<Sandbox>>,
    Path(id): Path<String>,
) -> Result<StatusCode, SandboxError> {
    if sandbox.close_session(&id).await {
        sandbox.metrics.inc(|m| &m.sessions_closed);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(SandboxError::NotFound(format!("no session {id}")))
    }
}

async fn run_cell(
    State(sandbox): State<Arc<Sandbox>>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<CellRequest>,
) -> Result<Json<CellResponse>, SandboxError> {
    let slot = sandbox.slot(&id)?;
    let permit = sandbox.cell_worker().await?;
    Ok(Json(slot.start_cell(request.code, permit, &sandbox.metrics).await?))
}

async fn poll_cell(
    State(sandbox): State<Arc<Sandbox>>,
    Path((id, cell_id)): Path<(String, u64)>,
) -> Result<Json<CellResponse>, SandboxError> {
    Ok(Json(sandbox.slot(&id)?.poll(cell_id, &sandbox.metrics).await?))
}

async fn resume_cell(
    State(sandbox): State<Arc<Sandbox>>,
    Path((id, cell_id)): Path<(String, u64)>,
    ApiJson(request): ApiJson<ResumeRequest>,
) -> Result<Json<CellResponse>, SandboxError> {
    Ok(Json(sandbox.slot(&id)?.resume(cell_id, request.results, &sandbox.metrics).await?))
}

async fn variable_names(
    State(sandbox): State<Arc<Sandbox>>,
    Path(id): Path<String>,
) -> Result<Json<VariableNames>, SandboxError> {
    let names = sandbox.slot(&id)?.variable_names().await?;
    Ok(Json(VariableNames { names }))
}

async fn variable(
    State(sandbox): State<Arc<Sandbox>>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Json<VariableValue>, SandboxError> {
    let value = sandbox.slot(&id)?.get_variable(&name).await?;
    Ok(Json(VariableValue { name, value }))
}
