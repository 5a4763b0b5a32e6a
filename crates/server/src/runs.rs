//! The RLM API: `POST /v1/runs`, `GET /v1/runs[/{id}[/events]]`, `POST /v1/runs/{id}/cancel`, and the seed's
//! `POST /infer`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use rlm::{Context, Limits, ModelPlan, TraceEvent};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::config::ExecutorChoice;
use crate::error::{ApiError, parse_json};
use crate::state::{AppState, RunEntry, RunSpec, RunStatus, is_top_level_final};

/// Per-request overrides of the server's default limits. Times are in seconds.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsPatch {
    pub max_iterations: Option<u32>,
    pub max_depth: Option<u32>,
    pub timeout: Option<f64>,
    pub max_sub_calls: Option<u64>,
    pub max_tokens: Option<u64>,
    /// US dollars for the whole run tree.
    pub max_cost: Option<f64>,
    pub cell_timeout: Option<f64>,
    pub max_output_chars: Option<usize>,
    pub batch_concurrency: Option<usize>,
    pub max_output_tokens: Option<u32>,
}

fn seconds(value: f64, name: &str) -> Result<Duration, ApiError> {
    match Duration::try_from_secs_f64(value) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        _ => Err(ApiError::bad_request(format!("limits.{name} must be a positive number of seconds, got {value}"))),
    }
}

impl LimitsPatch {
    pub fn apply(&self, base: &Limits) -> Result<Limits, ApiError> {
        let mut limits = base.clone();
        if let Some(n) = self.max_iterations {
            if n == 0 {
                return Err(ApiError::bad_request("limits.max_iterations must be at least 1"));
            }
            limits.max_iterations = n;
        }
        if let Some(n) = self.batch_concurrency {
            if n == 0 {
                return Err(ApiError::bad_request("limits.batch_concurrency must be at least 1"));
            }
            limits.batch_concurrency = n;
        }
        if let Some(n) = self.max_depth {
            limits.max_depth = n;
        }
        if let Some(secs) = self.timeout {
            limits.timeout = Some(seconds(secs, "timeout")?);
        }
        if let Some(secs) = self.cell_timeout {
            limits.cell_timeout = seconds(secs, "cell_timeout")?;
        }
        if self.max_sub_calls.is_some() {
            limits.max_sub_calls = self.max_sub_calls;
        }
        if self.max_tokens.is_some() {
            limits.max_tokens = self.max_tokens;
        }
        if let Some(usd) = self.max_cost {
            if !usd.is_finite() || usd <= 0.0 {
                return Err(ApiError::bad_request(format!(
                    "limits.max_cost must be a positive number of US dollars, got {usd}"
                )));
            }
            limits.max_cost = Some(usd);
        }
        if let Some(n) = self.max_output_chars {
            limits.max_output_chars = n;
        }
        if self.max_output_tokens.is_some() {
            limits.max_output_tokens = self.max_output_tokens;
        }
        Ok(limits)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelsPatch {
    root: Option<String>,
    sub: Option<String>,
    #[serde(default)]
    per_depth: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    query: Option<String>,
    #[serde(default)]
    context: Value,
    /// Shorthand for `models.root`.
    model: Option<String>,
    #[serde(default)]
    models: ModelsPatch,
    #[serde(default)]
    limits: LimitsPatch,
    executor: Option<String>,
    temperature: Option<f32>,
    #[serde(default)]
    background: bool,
}

/// A JSON string becomes a text context; any other JSON value a structured one; absent or `null` an empty text.
pub fn context_from_json(value: Value) -> Context {
    match value {
        Value::Null => Context::text(""),
        Value::String(text) => Context::Text(text),
        other => Context::Json(other),
    }
}

/// Checks the executor a request asks for against the server's.
pub fn check_executor(state: &AppState, requested: Option<&str>) -> Result<(), ApiError> {
    match (requested.map(str::trim), &state.config().executor) {
        (None | Some(""), _) | (Some("local"), ExecutorChoice::Local) => Ok(()),
        (Some("remote" | "wasm"), ExecutorChoice::Remote(_)) => Ok(()),
        (Some("local"), ExecutorChoice::Remote(_)) => {
            Err(ApiError::bad_request("this server runs code only in its remote sandbox; executor \"local\" is off"))
        }
        (Some("remote" | "wasm"), ExecutorChoice::Local) => Err(ApiError::bad_request(
            "no remote executor is configured on this server (WASM_SERVICE_URL); use executor \"local\"",
        )),
        (Some(other), _) => Err(ApiError::bad_request(format!("unknown executor {other:?}: use \"local\""))),
    }
}

fn required_query(query: Option<String>) -> Result<String, ApiError> {
    query.filter(|q| !q.trim().is_empty()).ok_or_else(|| ApiError::bad_request("\"query\" is required"))
}

pub async fn create_run(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    match create_run_inner(state, body).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn create_run_inner(state: AppState, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let request: RunRequest = parse_json(&body?)?;
    let query = required_query(request.query)?;
    check_executor(&state, request.executor.as_deref())?;
    let root = match request.models.root.or(request.model) {
        Some(model) if !model.trim().is_empty() => model,
        _ => state.default_model()?.to_owned(),
    };
    let models = ModelPlan { root, sub: request.models.sub, per_depth: request.models.per_depth };
    let limits = request.limits.apply(&state.config().limits)?;
    let spec = RunSpec {
        context: context_from_json(request.context),
        query,
        models,
        limits,
        temperature: request.temperature,
    };
    let run = state.start_run(spec).await?;
    if request.background {
        let location = format!("/v1/runs/{}", run.id);
        let body = json!({
            "object": "rlm.run",
            "run_id": run.id,
            "status": "running",
            "model": run.model,
            "created_at": run.created_at,
            "links": {"self": location, "events": format!("{location}/events"), "cancel": format!("{location}/cancel")},
        });
        return Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(body)).into_response());
    }
    // The client going away drops this future, and the guard cancels the run.
    let guard = run.cancel.clone().drop_guard();
    run.wait().await;
    guard.disarm();
    Ok(Json(run_view(&run, false)).into_response())
}

/// The JSON of a run: its state and, once it ended, its result.
pub fn run_view(run: &RunEntry, with_events: bool) -> Value {
    let outcome = run.outcome();
    let completion = outcome.as_ref().and_then(|o| o.completion.as_ref());
    let mut view = json!({
        "object": "rlm.run",
        "run_id": run.id,
        "status": run.status(),
        "model": run.model,
        "created_at": run.created_at,
        "finished_at": run.finished_at(),
        "answer": completion.map(|c| &c.answer).filter(|_| run.status() == RunStatus::Completed),
        "finished_by": completion.map(|c| c.finished_by),
        "limit": completion.and_then(|c| c.limit),
        "iterations": completion.map(|c| c.iterations),
        "sub_calls": completion.map(|c| c.sub_calls),
        "path": completion.map(|c| c.path),
        "usage": completion.map(|c| &c.usage),
        "cost_usd": completion.and_then(|c| c.cost_usd),
        "duration_secs": completion.map_or_else(|| run.elapsed().as_secs_f64(), |c| c.duration_secs),
        "error": outcome.as_ref().and_then(|o| o.error.clone()),
        "root_run_id": completion.map(|c| c.run_id),
        "trace": completion.and_then(|c| c.trace.as_ref()).map(|p| p.display().to_string()),
    });
    if with_events {
        view["query"] = json!(run.query);
        let events = run.events_from(0).0;
        view["events"] = json!(events.iter().map(|e| &**e).collect::<Vec<&TraceEvent>>());
    }
    view
}

#[derive(Debug, Deserialize)]
pub struct GetRunParams {
    /// `false` leaves the trajectory out.
    #[serde(default = "yes")]
    events: bool,
}

fn yes() -> bool {
    true
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::not_found("run_not_found", format!("no run {id:?}")))
}

fn find_run(state: &AppState, id: &str) -> Result<Arc<RunEntry>, ApiError> {
    state.run(parse_id(id)?).ok_or_else(|| {
        ApiError::not_found("run_not_found", format!("no run {id} (unknown, or evicted from the recent runs)"))
    })
}

pub async fn get_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<GetRunParams>,
) -> Result<Json<Value>, ApiError> {
    let run = find_run(&state, &id)?;
    Ok(Json(run_view(&run, params.events)))
}

pub async fn list_runs(State(state): State<AppState>) -> Json<Value> {
    let data: Vec<Value> = state.recent_runs().iter().map(|run| run_view(run, false)).collect();
    Json(json!({"object": "list", "data": data}))
}

pub async fn cancel_run(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let run = find_run(&state, &id)?;
    run.cancel.cancel();
    Ok(Json(json!({"object": "rlm.run", "run_id": run.id, "status": run.status(), "cancel_requested": true})))
}

/// The name of an event's `type`.
pub fn event_type(event: &TraceEvent) -> &'static str {
    match event.body {
        rlm::EventBody::Metadata(_) => "metadata",
        rlm::EventBody::ModelCall(_) => "model_call",
        rlm::EventBody::Cell(_) => "cell",
        rlm::EventBody::SubCall(_) => "sub_call",
        rlm::EventBody::Compaction(_) => "compaction",
        rlm::EventBody::Final(_) => "final",
    }
}

struct EventCursor {
    run: Arc<RunEntry>,
    changes: tokio::sync::watch::Receiver<u64>,
    next: usize,
    pending: VecDeque<(usize, Arc<TraceEvent>)>,
    done: bool,
}

/// Every event of the run from `from` on — the past ones at once, then live — ending after the top-level `final`.
fn event_stream(run: Arc<RunEntry>, from: usize) -> impl Stream<Item = Result<Event, Infallible>> {
    let changes = run.subscribe();
    let cursor = EventCursor { run, changes, next: from, pending: VecDeque::new(), done: false };
    futures::stream::unfold(cursor, |mut cursor| async move {
        loop {
            if cursor.done {
                return None;
            }
            if let Some((index, event)) = cursor.pending.pop_front() {
                cursor.done = is_top_level_final(&event);
                let data =
                    serde_json::to_string(&*event).unwrap_or_else(|e| json!({"error": e.to_string()}).to_string());
                let sse = Event::default().event(event_type(&event)).id(index.to_string()).data(data);
                return Some((Ok(sse), cursor));
            }
            let (events, ended) = cursor.run.events_from(cursor.next);
            if !events.is_empty() {
                for event in events {
                    cursor.pending.push_back((cursor.next, event));
                    cursor.next += 1;
                }
                continue;
            }
            if ended || cursor.changes.changed().await.is_err() {
                return None;
            }
        }
    })
}

pub async fn run_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let run = find_run(&state, &id)?;
    // A reconnecting EventSource resumes after the last event it saw.
    let from = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(0, |last| last + 1);
    Ok(Sse::new(event_stream(run, from)).keep_alive(KeepAlive::new().interval(state.config().sse_keep_alive)))
}

/// The seed's request: `{"query", "context"?, "model"?, "max_depth"?}`.
#[derive(Debug, Deserialize)]
struct InferRequest {
    query: Option<Value>,
    #[serde(default)]
    context: Value,
    model: Option<String>,
    max_depth: Option<u32>,
    /// US dollars for the whole run tree.
    max_cost: Option<f64>,
}

fn infer_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"success": false, "error": message.into()}))).into_response()
}

/// `POST /infer`: `{"success": true, "answer", "model", "max_depth"}`, errors as `{"success": false, "error"}`.
pub async fn infer(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return infer_error(rejection.status(), rejection.body_text()),
    };
    let request: InferRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return infer_error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")),
    };
    let Some(query) = request.query.as_ref().and_then(Value::as_str).filter(|q| !q.trim().is_empty()) else {
        return infer_error(StatusCode::BAD_REQUEST, "query is required");
    };
    let root = match request.model.filter(|m| !m.trim().is_empty()) {
        Some(model) => model,
        None => match state.default_model() {
            Ok(model) => model.to_owned(),
            Err(err) => return infer_error(err.status, err.message),
        },
    };
    let patch = LimitsPatch { max_depth: request.max_depth, max_cost: request.max_cost, ..LimitsPatch::default() };
    let limits = match patch.apply(&state.config().limits) {
        Ok(limits) => limits,
        Err(err) => return infer_error(err.status, err.message),
    };
    let max_depth = limits.max_depth;
    let spec = RunSpec {
        context: context_from_json(request.context),
        query: query.to_owned(),
        models: ModelPlan::new(root.clone()),
        limits,
        temperature: None,
    };
    let run = match state.start_run(spec).await {
        Ok(run) => run,
        Err(err) => return infer_error(err.status, err.message),
    };
    let guard = run.cancel.clone().drop_guard();
    let outcome = run.wait().await;
    guard.disarm();
    match (&outcome.completion, run.status()) {
        (Some(done), RunStatus::Completed) => Json(json!({
            "success": true,
            "answer": done.answer,
            "model": root,
            "max_depth": max_depth,
            "run_id": run.id,
            "finished_by": done.finished_by,
            "iterations": done.iterations,
            "limit": done.limit,
            "usage": done.usage,
            "cost_usd": done.cost_usd,
        }))
        .into_response(),
        _ => infer_error(StatusCode::INTERNAL_SERVER_ERROR, outcome.error.unwrap_or_else(|| "the run failed".into())),
    }
}
