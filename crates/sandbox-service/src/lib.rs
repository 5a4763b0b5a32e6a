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
//!
//! A session belongs to its creator: requests about it must carry the secret returned at creation
//! (`X-Session-Secret`) and the bearer token it was created with, or the session is "not found".

mod contexts;
mod error;
mod execute;
mod http;
mod metrics;
mod routes;
mod sessions;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use rlm_protocol::sandbox::{ContextKind, CreateSessionRequest, SESSION_SECRET_HEADER, SessionCreated};
use rlm_protocol::{Context, Executor, SessionSpec};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::contexts::ContextStore;
pub use crate::error::SandboxError;
use crate::metrics::Metrics;
pub use crate::routes::app;
use crate::sessions::{Owner, Slot, SuspendingHost};

/// Limits and settings of the service.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxConfig {
    /// Sessions held at once; creating one more answers 429.
    pub max_sessions: usize,
    /// Sessions one bearer token may hold at once; one more answers 429. Callers without a token share only
    /// `max_sessions`.
    pub max_sessions_per_owner: usize,
    /// Cells executing at once (the worker pool); further cells wait for a place. A cell suspended on sub-calls gives
    /// its place back until it is resumed. This bounds memory and admission; sharing the CPU fairly between running
    /// cells is the executor's job.
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
    /// More accepted bearer tokens (also required from then on), e.g. one per inference service: sessions belong to
    /// the token that created them, so each service lists, reaches and is limited to only its own.
    pub additional_tokens: Vec<String>,
    /// This replica's own base URL (e.g. `http://<pod-ip>:8000`), returned with every new session so that clients
    /// behind a load balancer send the session's later requests to the replica that holds it.
    pub advertise_url: Option<String>,
    /// Open connections at most. At the cap, the oldest connection without a request in flight is closed to make
    /// room; when all are answering requests, new ones are refused.
    pub max_connections: usize,
    /// Time a client has to send a request's head (also the longest a keep-alive connection stays idle).
    pub header_read_timeout: Duration,
    /// Longest pause allowed while a request body arrives.
    pub body_idle_timeout: Duration,
    /// Bytes per second a request body must average after its first 10 s (0: no minimum).
    pub min_body_rate: u64,
    /// At shutdown, how long requests in flight may take before the sessions they wait on are closed.
    pub shutdown_grace: Duration,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            max_sessions: 64,
            max_sessions_per_owner: 16,
            max_concurrent_cells: 64,
            idle_ttl: Duration::from_secs(600),
            default_cell_timeout: SessionSpec::DEFAULT_CELL_TIMEOUT,
            max_cell_timeout: Duration::from_secs(600),
            resume_timeout: Duration::from_secs(600),
            max_body_bytes: 2 << 30,
            context_store_bytes: 4 << 30,
            max_captured_chars: SessionSpec::DEFAULT_MAX_CAPTURED_CHARS,
            token: None,
            additional_tokens: Vec::new(),
            advertise_url: None,
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(60),
            min_body_rate: 1024,
            shutdown_grace: Duration::from_secs(10),
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
    /// Sessions held or being created per bearer token (by its SHA-256).
    per_owner: Mutex<HashMap<[u8; 32], usize>>,
    contexts: Mutex<ContextStore>,
    cell_permits: Arc<Semaphore>,
    /// SHA-256 of every accepted bearer token; empty when none is required.
    accepted_tokens: Vec<[u8; 32]>,
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

pub(crate) fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Who sends a request: the SHA-256 of its bearer token and of its session secret, when it has them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Caller {
    token: Option<[u8; 32]>,
    secret: Option<[u8; 32]>,
}

impl Caller {
    fn from_headers(headers: &HeaderMap) -> Self {
        let header = |name| headers.get(name).and_then(|value: &HeaderValue| value.to_str().ok());
        let token = header(header::AUTHORIZATION.as_str())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .map(digest);
        let secret = header(SESSION_SECRET_HEADER).map(str::trim).filter(|s| !s.is_empty()).map(digest);
        Self { token, secret }
    }

    /// Whether this caller may use a session of `owner`: it shows the session's secret and, when the session was
    /// created with a bearer token, the same token.
    fn owns(&self, owner: &Owner) -> bool {
        // Digests are compared, never the secrets, so timing reveals nothing about them.
        self.secret == Some(owner.secret) && (owner.token.is_none() || owner.token == self.token)
    }

    /// Whether `GET /v1/sessions` shows a session of `owner` to this caller: with a token, the sessions created
    /// with it; without one, only a session whose secret it shows.
    fn lists(&self, owner: &Owner) -> bool {
        match self.token {
            Some(token) => owner.token == Some(token),
            None => owner.token.is_none() && self.secret == Some(owner.secret),
        }
    }
}
/// A fresh session secret: 244 random bits (two version-4 UUIDs, from the operating system's generator), as hex.
fn new_secret() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

impl Sandbox {
    pub fn new(executor: Arc<dyn Executor>, config: SandboxConfig) -> Arc<Self> {
        let accepted_tokens = config.token.iter().chain(&config.additional_tokens).map(|t| digest(t)).collect();
        Arc::new(Self {
            cell_permits: Arc::new(Semaphore::new(config.max_concurrent_cells.max(1))),
            contexts: Mutex::new(ContextStore::new(config.context_store_bytes)),
            executor,
            config,
            sessions: Mutex::new(HashMap::new()),
            reserved: AtomicUsize::new(0),
            per_owner: Mutex::new(HashMap::new()),
            accepted_tokens,
            metrics: Metrics::default(),
        })
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// The session `id` if `caller` owns it. Someone else's session is "not found", exactly like a missing one, so
    /// that session ids reveal nothing.
    fn slot(&self, id: &str, caller: &Caller) -> Result<Arc<Slot>, SandboxError> {
        lock(&self.sessions)
            .get(id)
            .filter(|slot| caller.owns(&slot.owner))
            .cloned()
            .ok_or_else(|| SandboxError::NotFound(format!("no session {id}")))
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

    /// Creates a session owned by `caller`; the caller holds a reservation.
    async fn create_session(
        &self,
        mut request: CreateSessionRequest,
        caller: &Caller,
    ) -> Result<SessionCreated, SandboxError> {
        let context = self.context_from(&mut request)?;
        let cell_timeout = self.cell_timeout(request.cell_timeout)?;
        let spec = SessionSpec { context, cell_timeout, max_captured_chars: self.config.max_captured_chars };
        let host = SuspendingHost::new(self.config.resume_timeout, self.cell_permits.clone());
        let session = self.executor.start_session(spec, host.clone()).await?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let secret = new_secret();
        let owner = Owner { token: caller.token, secret: digest(&secret) };
        let slot = Arc::new(Slot::new(id.clone(), owner, session, host, cell_timeout));
        let created = SessionCreated {
            session_id: id.clone(),
            session_secret: secret,
            endpoint: self.config.advertise_url.clone(),
            context: slot.info.clone(),
            cell_timeout: cell_timeout.as_secs_f64(),
        };
        lock(&self.sessions).insert(id, slot);
        self.metrics.inc(|m| &m.sessions_created);
        Ok(created)
    }

    /// Takes a place for a new session of `owner` (the caller's token digest), within the service's and the
    /// owner's limits.
    fn reserve_session(&self, owner: Option<[u8; 32]>) -> Result<Reservation<'_>, SandboxError> {
        let taken = self.reserved.fetch_add(1, Ordering::SeqCst);
        if taken >= self.config.max_sessions {
            self.reserved.fetch_sub(1, Ordering::SeqCst);
            self.metrics.inc(|m| &m.rejected_session_limit);
            return Err(SandboxError::TooManyRequests(format!(
                "the sandbox holds its maximum of {} sessions; close one or retry later",
                self.config.max_sessions
            )));
        }
        if let Some(owner) = owner {
            let mut per_owner = lock(&self.per_owner);
            let held = per_owner.entry(owner).or_default();
            if *held >= self.config.max_sessions_per_owner {
                drop(per_owner);
                self.reserved.fetch_sub(1, Ordering::SeqCst);
                self.metrics.inc(|m| &m.rejected_owner_limit);
                return Err(SandboxError::TooManyRequests(format!(
                    "this token holds its maximum of {} sessions; close one or retry later",
                    self.config.max_sessions_per_owner
                )));
            }
            *held += 1;
        }
        Ok(Reservation { sandbox: self, owner, kept: false })
    }

    /// Gives back a place taken by [`Self::reserve_session`].
    fn release_session(&self, owner: Option<[u8; 32]>) {
        self.reserved.fetch_sub(1, Ordering::SeqCst);
        if let Some(owner) = owner {
            let mut per_owner = lock(&self.per_owner);
            if let Some(held) = per_owner.get_mut(&owner) {
                *held = held.saturating_sub(1);
                if *held == 0 {
                    per_owner.remove(&owner);
                }
            }
        }
    }

    /// Removes and closes a session. Returns at once when the executor can abort a running cell (see
    /// [`Slot::close`]).
    async fn close_session(&self, id: &str) -> bool {
        let removed = lock(&self.sessions).remove(id);
        match removed {
            Some(slot) => {
                self.release_session(slot.owner.token);
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

    fn cells_running(&self) -> usize {
        self.config.max_concurrent_cells.max(1).saturating_sub(self.cell_permits.available_permits())
    }

    /// Closes every session (at shutdown). Running cells are aborted where the executor can, not waited for.
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
    owner: Option<[u8; 32]>,
    kept: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.sandbox.release_session(self.owner);
        }
    }
}
/// Serves `app` on `listener` until `shutdown` resolves, then closes every session.
///
/// Connections are capped ([`SandboxConfig::max_connections`]), request heads and bodies must arrive in time, and
/// at shutdown requests in flight get [`SandboxConfig::shutdown_grace`] before the sessions are closed.
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
    let limits = http::HttpLimits {
        header_read_timeout: sandbox.config.header_read_timeout,
        max_connections: sandbox.config.max_connections.max(1),
        shutdown_grace: sandbox.config.shutdown_grace,
    };
    let closing = sandbox.clone();
    let counting = sandbox.clone();
    http::serve_connections(
        listener,
        app(sandbox.clone()),
        limits,
        shutdown,
        || async move {
            reaper.abort();
            closing.close_all().await;
        },
        move || counting.metrics.inc(|m| &m.rejected_connections),
    )
    .await;
    Ok(())
}
