//! The HTTP handlers of the service: routing, authentication, JSON bodies and errors. Sessions and their limits are
//! the [`Sandbox`]'s.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures::StreamExt;
use rlm_protocol::sandbox::{
    CellRequest, ContextKind, ContextUploaded, CreateSessionRequest, ErrorBody, ExecuteRequest, ExecuteResponse,
    ResumeRequest, SessionCreated, SessionSummary, VariableNames, VariableValue,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::contexts::{StoredContext, is_sha256_hex, sha256_hex};
use crate::error::SandboxError;
use crate::sessions::CellReply;
use crate::{Caller, Sandbox, digest, execute, http, lock};

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_headers(&parts.headers))
    }
}
/// Request bodies larger than this are parsed on a blocking thread, so that a huge one (a resume with hundreds of
/// thousands of results) never stalls the async workers.
const BLOCKING_JSON_BYTES: usize = 1 << 20;

/// JSON body whose rejections (bad JSON, wrong fields, wrong content type) are 400s with a message.
struct ApiJson<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send + 'static> FromRequest<S> for ApiJson<T> {
    type Rejection = SandboxError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.split(';').next().is_some_and(|mime| mime.trim().ends_with("json")));
        let big = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<usize>().ok())
            .is_none_or(|length| length > BLOCKING_JSON_BYTES);
        if !is_json || !big {
            return match Json::<T>::from_request(request, state).await {
                Ok(Json(value)) => Ok(Self(value)),
                Err(JsonRejection::BytesRejection(err)) => Err(body_error(&err, err.status(), err.body_text())),
                Err(rejection) => Err(SandboxError::BadRequest(rejection.body_text())),
            };
        }
        let bytes = match axum::body::Bytes::from_request(request, state).await {
            Ok(bytes) => bytes,
            Err(err) => return Err(body_error(&err, err.status(), err.body_text())),
        };
        let parsed = tokio::task::spawn_blocking(move || serde_json::from_slice::<T>(&bytes))
            .await
            .map_err(|e| SandboxError::Internal(format!("parsing the body failed: {e}")))?;
        parsed.map(Self).map_err(|e| SandboxError::BadRequest(format!("Failed to deserialize the JSON body: {e}")))
    }
}

/// The error for a body that could not be read: too large (413), too slow (408), or broken (400).
fn body_error(err: &(dyn std::error::Error + 'static), status: StatusCode, text: String) -> SandboxError {
    if http::is_body_timeout(err) {
        SandboxError::RequestTimeout(text)
    } else if status == StatusCode::PAYLOAD_TOO_LARGE {
        SandboxError::PayloadTooLarge(text)
    } else {
        SandboxError::BadRequest(text)
    }
}

/// Answers larger than this are serialised on a blocking thread.
const BLOCKING_REPLY_BYTES: usize = 1 << 20;

/// A cell's state as JSON.
async fn cell_json(reply: CellReply) -> Response {
    if reply.approximate_size() < BLOCKING_REPLY_BYTES {
        return Json(reply).into_response();
    }
    match tokio::task::spawn_blocking(move || serde_json::to_vec(&reply)).await {
        Ok(Ok(bytes)) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Ok(Err(e)) => SandboxError::Internal(format!("encoding the answer failed: {e}")).into_response(),
        Err(e) => SandboxError::Internal(format!("encoding the answer failed: {e}")).into_response(),
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
        .layer(middleware::map_response(json_errors))
        .layer(middleware::from_fn_with_state(sandbox.clone(), guard_request_body))
        .with_state(sandbox)
}

/// Bounds how slowly a request body may arrive (see [`SandboxConfig::body_idle_timeout`]).
async fn guard_request_body(State(sandbox): State<Arc<Sandbox>>, request: Request, next: Next) -> Response {
    let (idle, rate) = (sandbox.config.body_idle_timeout, sandbox.config.min_body_rate);
    next.run(request.map(|body| http::guard_body(body, idle, rate))).await
}

/// Every 4xx answer carries `{"error": "..."}`, also those axum makes itself (405, path and query rejections).
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !status.is_client_error() || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let error =
        if text.is_empty() { status.canonical_reason().unwrap_or("request refused").to_lowercase() } else { text };
    let body = serde_json::to_vec(&ErrorBody { error }).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(body))
}
async fn require_token(
    State(sandbox): State<Arc<Sandbox>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if !sandbox.accepted_tokens.is_empty() {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or("");
        // Compare digests, and with every accepted one, so the time taken says nothing about the tokens.
        let given = digest(given.trim());
        let matches = sandbox.accepted_tokens.iter().fold(false, |found, accepted| found | (*accepted == given));
        if !matches {
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
        "cells_running": sandbox.cells_running(),
    });
    let status = if sessions < capacity { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn metrics(State(sandbox): State<Arc<Sandbox>>) -> Response {
    let text = sandbox.metrics.render(sandbox.session_count(), sandbox.cells_running(), sandbox.config.max_sessions);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn execute(
    State(sandbox): State<Arc<Sandbox>>,
    caller: Caller,
    ApiJson(request): ApiJson<ExecuteRequest>,
) -> Result<Json<ExecuteResponse>, SandboxError> {
    sandbox.metrics.inc(|m| &m.executes);
    Ok(Json(execute::execute(&sandbox, caller.token, request).await?))
}

#[derive(Debug, Deserialize)]
struct UploadQuery {
    #[serde(default)]
    kind: ContextKind,
}

/// Streams the body into memory, hashing as it goes; the hash must match the path.
async fn upload_context(
    State(sandbox): State<Arc<Sandbox>>,
    ApiPath(sha256): ApiPath<String>,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Result<(StatusCode, Json<ContextUploaded>), SandboxError> {
    let Query(query) = query.map_err(|e| SandboxError::BadRequest(e.body_text()))?;
    if !is_sha256_hex(&sha256) {
        return Err(SandboxError::BadRequest("the path must end in the lower-case hex SHA-256 of the body".into()));
    }
    let limit = sandbox.config.max_body_bytes.min(lock(&sandbox.contexts).capacity_bytes());
    let mut hasher = Sha256::new();
    let mut bytes = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| body_error(&e, StatusCode::BAD_REQUEST, format!("reading the body failed: {e}")))?;
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

/// Path parameters whose rejections are 400s with a JSON message.
struct ApiPath<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = SandboxError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(SandboxError::BadRequest(rejection.body_text())),
        }
    }
}

async fn create_session(
    State(sandbox): State<Arc<Sandbox>>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateSessionRequest>,
) -> Result<(StatusCode, Json<SessionCreated>), SandboxError> {
    let mut reservation = sandbox.reserve_session(caller.token)?;
    let created = sandbox.create_session(request, &caller).await?;
    reservation.kept = true;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn list_sessions(State(sandbox): State<Arc<Sandbox>>, caller: Caller) -> Json<Vec<SessionSummary>> {
    let mut sessions: Vec<SessionSummary> = lock(&sandbox.sessions)
        .values()
        .filter(|slot| caller.lists(&slot.owner))
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
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, SandboxError> {
    sandbox.slot(&id, &caller)?;
    if sandbox.close_session(&id).await {
        sandbox.metrics.inc(|m| &m.sessions_closed);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(SandboxError::NotFound(format!("no session {id}")))
    }
}

async fn run_cell(
    State(sandbox): State<Arc<Sandbox>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<CellRequest>,
) -> Result<Response, SandboxError> {
    let slot = sandbox.slot(&id, &caller)?;
    let permit = sandbox.cell_worker().await?;
    Ok(cell_json(slot.start_cell(request.code, permit, &sandbox.metrics).await?).await)
}

async fn poll_cell(
    State(sandbox): State<Arc<Sandbox>>,
    caller: Caller,
    ApiPath((id, cell_id)): ApiPath<(String, u64)>,
) -> Result<Response, SandboxError> {
    Ok(cell_json(sandbox.slot(&id, &caller)?.poll(cell_id, &sandbox.metrics).await?).await)
}

async fn resume_cell(
    State(sandbox): State<Arc<Sandbox>>,
    caller: Caller,
    ApiPath((id, cell_id)): ApiPath<(String, u64)>,
    ApiJson(request): ApiJson<ResumeRequest>,
) -> Result<Response, SandboxError> {
    let slot = sandbox.slot(&id, &caller)?;
    Ok(cell_json(slot.resume(cell_id, request.results, &sandbox.metrics).await?).await)
}

async fn variable_names(
    State(sandbox): State<Arc<Sandbox>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<VariableNames>, SandboxError> {
    let names = sandbox.slot(&id, &caller)?.variable_names().await?;
    Ok(Json(VariableNames { names }))
}

async fn variable(
    State(sandbox): State<Arc<Sandbox>>,
    caller: Caller,
    ApiPath((id, name)): ApiPath<(String, String)>,
) -> Result<Json<VariableValue>, SandboxError> {
    let value = sandbox.slot(&id, &caller)?.get_variable(&name).await?;
    Ok(Json(VariableValue { name, value }))
}
