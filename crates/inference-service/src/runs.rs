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
use chrono::{DateTime, Utc};
use futures::Stream;
use rlm::{Context, FinishedBy, LimitKind, Limits, ModelPlan, RoutePath, TraceEvent, UsageReport};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::config::ExecutorChoice;
use crate::error::{ApiError, ErrorBody, parse_json};
use crate::registry::{RunEntry, RunSpec, RunStatus, is_top_level_final};
use crate::state::AppState;

/// Overrides of the server's default limits; times in seconds.
#[derive(Debug, Default, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Limits)]
pub struct LimitsPatch {
    /// Root-loop iterations per run (at least 1).
    #[schema(minimum = 1)]
    pub max_iterations: Option<u32>,
    /// Deepest level of child RLMs; the top-level run is depth 0.
    pub max_depth: Option<u32>,
    /// Wall-clock limit of the whole run tree.
    pub timeout: Option<f64>,
    /// Sub-calls allowed in the whole run tree.
    pub max_sub_calls: Option<u64>,
    /// Tokens allowed in the whole run tree.
    pub max_tokens: Option<u64>,
    /// US dollars for the whole run tree.
    pub max_cost: Option<f64>,
    /// Wall-clock limit of one cell.
    pub cell_timeout: Option<f64>,
    /// Characters of a cell's output the model sees.
    pub max_output_chars: Option<usize>,
    /// Prompts of one batched call sent at once (at least 1).
    #[schema(minimum = 1)]
    pub batch_concurrency: Option<usize>,
    /// Tokens one root-model reply may have.
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

/// The models of a run.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModelsPatch {
    /// The root model (default: the server's).
    root: Option<String>,
    /// The model of `llm_query` and child RLMs (default: the root model).
    sub: Option<String>,
    /// Root-loop model per depth (index 0 = top level).
    #[serde(default)]
    per_depth: Vec<String>,
}

/// `POST /v1/runs`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunRequest {
    /// The question.
    #[schema(required)]
    query: Option<String>,
    /// A string (text context) or any JSON value (becomes a list/dict).
    #[serde(default)]
    context: Value,
    /// Shorthand for `models.root`.
    model: Option<String>,
    #[serde(default)]
    models: ModelsPatch,
    #[serde(default)]
    limits: LimitsPatch,
    /// `local`, `remote` or `wasm`: must match the server's executor.
    executor: Option<String>,
    /// Sampling temperature of every model call.
    temperature: Option<f32>,
    /// Answer at once with `202` and run in the background.
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

/// Start a run (synchronous, or in the background with `background: true`).
#[utoipa::path(post, path = "/v1/runs", request_body = RunRequest, responses(
        (status = 200, description = "The finished run (synchronous)", body = RunView),
        (status = 202, description = "The run started (background)", body = RunStarted),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 413, description = "Request body too large", body = ErrorBody),
        (status = 429, description = "All run slots are busy", body = ErrorBody),
        (status = 503, description = "Shutting down, or the executor is unavailable", body = ErrorBody),
))]
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
        let body = RunStarted {
            object: RUN_OBJECT,
            run_id: run.id,
            status: RunStatus::Running,
            model: run.model.clone(),
            created_at: run.created_at,
            links: RunLinks {
                events: format!("{location}/events"),
                cancel: format!("{location}/cancel"),
                this: location.clone(),
            },
        };
        return Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(body)).into_response());
    }
    // The client going away drops this future, and the guard cancels the run.
    let guard = run.cancel.clone().drop_guard();
    run.wait().await;
    guard.disarm();
    Ok(Json(run_view(&run, false)).into_response())
}

/// The `object` of a run.
const RUN_OBJECT: &str = "rlm.run";

/// A run: its state and, once it ended, its result.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    /// Always `rlm.run`.
    #[schema(value_type = String, example = "rlm.run")]
    object: &'static str,
    run_id: Uuid,
    status: RunStatus,
    /// The root model.
    model: String,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    /// The answer, once the run completed.
    answer: Option<String>,
    /// How the run ended: `final`, `final_var`, `answer`, `direct`, `limit`, `cancelled` or `error`.
    #[schema(value_type = Option<String>)]
    finished_by: Option<FinishedBy>,
    /// Which limit ran out, when `finished_by` is `limit`.
    #[schema(value_type = Option<String>)]
    limit: Option<LimitKind>,
    /// Root-loop iterations of the top-level run.
    iterations: Option<u32>,
    /// Sub-calls made anywhere in the tree.
    sub_calls: Option<u64>,
    /// `direct` when routing answered with one call over the whole context, else `rlm`.
    #[schema(value_type = Option<String>)]
    path: Option<RoutePath>,
    /// Tokens used anywhere in the tree, in total and per model.
    #[schema(value_type = Option<Object>)]
    usage: Option<UsageReport>,
    /// US dollars of the whole tree, when every model has a price.
    cost_usd: Option<f64>,
    /// Seconds so far, or of the whole run once it ended.
    duration_secs: f64,
    /// Why the run ended without an answer.
    error: Option<String>,
    /// `run_id` of the engine's top-level trace events.
    root_run_id: Option<Uuid>,
    /// The JSONL trajectory on the server, when it writes them.
    trace: Option<String>,
    /// The question (`GET /v1/runs/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<String>,
    /// The trajectory events so far (`GET /v1/runs/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    events: Option<Vec<TraceEvent>>,
}

/// A run started in the background.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunStarted {
    /// Always `rlm.run`.
    #[schema(value_type = String, example = "rlm.run")]
    object: &'static str,
    run_id: Uuid,
    status: RunStatus,
    /// The root model.
    model: String,
    created_at: DateTime<Utc>,
    links: RunLinks,
}

/// Where to follow a background run.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunLinks {
    /// The run (`GET`).
    #[serde(rename = "self")]
    this: String,
    /// Its events as server-sent events.
    events: String,
    /// Cancels it (`POST`).
    cancel: String,
}

/// The run as the API shows it; with the question and the trajectory when `with_events`.
pub fn run_view(run: &RunEntry, with_events: bool) -> RunView {
    let outcome = run.outcome();
    let completion = outcome.as_ref().and_then(|o| o.completion.as_ref());
    RunView {
        object: RUN_OBJECT,
        run_id: run.id,
        status: run.status(),
        model: run.model.clone(),
        created_at: run.created_at,
        finished_at: run.finished_at(),
        answer: completion.map(|c| c.answer.clone()).filter(|_| run.status() == RunStatus::Completed),
        finished_by: completion.map(|c| c.finished_by),
        limit: completion.and_then(|c| c.limit),
        iterations: completion.map(|c| c.iterations),
        sub_calls: completion.map(|c| c.sub_calls),
        path: completion.map(|c| c.path),
        usage: completion.map(|c| c.usage.clone()),
        cost_usd: completion.and_then(|c| c.cost_usd),
        duration_secs: completion.map_or_else(|| run.elapsed().as_secs_f64(), |c| c.duration_secs),
        error: outcome.as_ref().and_then(|o| o.error.clone()),
        root_run_id: completion.map(|c| c.run_id),
        trace: completion.and_then(|c| c.trace.as_ref()).map(|p| p.display().to_string()),
        query: with_events.then(|| run.query.clone()),
        events: with_events.then(|| run.events_from(0).0.iter().map(|event| (**event).clone()).collect()),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetRunParams {
    /// `false` leaves the trajectory out.
    #[serde(default = "yes")]
    #[param(default = true)]
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

/// A run: status, result, trajectory events.
#[utoipa::path(get, path = "/v1/runs/{id}", params(("id" = Uuid, Path, description = "The run"), GetRunParams), responses(
    (status = 200, description = "The run", body = RunView),
    (status = 404, description = "No such run", body = ErrorBody),
))]
pub async fn get_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<GetRunParams>,
) -> Result<Json<RunView>, ApiError> {
    let run = find_run(&state, &id)?;
    Ok(Json(run_view(&run, params.events)))
}

/// Recent runs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    /// Always `list`.
    #[schema(value_type = String, example = "list")]
    object: &'static str,
    data: Vec<RunView>,
}

/// Recent runs, newest first.
#[utoipa::path(get, path = "/v1/runs", responses((status = 200, description = "Recent runs", body = RunList)))]
pub async fn list_runs(State(state): State<AppState>) -> Json<RunList> {
    Json(RunList { object: "list", data: state.recent_runs().iter().map(|run| run_view(run, false)).collect() })
}

/// Cancel a run.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", params(("id" = Uuid, Path, description = "The run")), responses(
    (status = 200, description = "Cancellation requested", body = serde_json::Value),
    (status = 404, description = "No such run", body = ErrorBody),
))]
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

/// The run's trace events as server-sent events (past ones, then live), ending after the top-level `final`.
#[utoipa::path(get, path = "/v1/runs/{id}/events", params(("id" = Uuid, Path, description = "The run")), responses(
    (status = 200, description = "event: metadata | model_call | cell | sub_call | final; data: the event JSON",
     body = String, content_type = "text/event-stream"),
    (status = 404, description = "No such run", body = ErrorBody),
))]
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
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct InferRequest {
    /// The question (a string).
    #[schema(value_type = String, required)]
    query: Option<Value>,
    /// A string (text context) or any JSON value.
    #[serde(default)]
    context: Value,
    /// The root model (default: the server's).
    model: Option<String>,
    /// Deepest level of child RLMs.
    max_depth: Option<u32>,
    /// US dollars for the whole run tree.
    max_cost: Option<f64>,
}

fn infer_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"success": false, "error": message.into()}))).into_response()
}

/// `POST /infer`: `{"success": true, "answer", "model", "max_depth"}`, errors as `{"success": false, "error"}`.
#[utoipa::path(post, path = "/infer", request_body = InferRequest, responses(
    (status = 200, description = "The answer: success, answer, model, max_depth, run_id, finished_by, iterations, usage",
     body = serde_json::Value),
    (status = 400, description = "Invalid request: {success: false, error}", body = serde_json::Value),
    (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    (status = 413, description = "Request body too large: {success: false, error}", body = serde_json::Value),
    (status = 429, description = "All run slots are busy: {success: false, error}", body = serde_json::Value),
    (status = 500, description = "The run failed: {success: false, error}", body = serde_json::Value),
    (status = 503, description = "Shutting down, or the executor is unavailable: {success: false, error}",
     body = serde_json::Value),
))]
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
