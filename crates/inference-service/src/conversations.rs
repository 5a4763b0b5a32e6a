//! Conversations: RLM sessions over HTTP. One REPL per conversation answers query after query (variables persist,
//! added contexts become `context_1`, …). A conversation idle for longer than its TTL is closed; each has a token
//! budget over all its queries; one query at a time (`409` for a second one).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use rlm::{CancellationToken, Completion, ModelPlan, RlmError, RlmSession};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiError, ErrorBody, parse_json};
use crate::registry::RunSpec;
use crate::runs::{LimitsPatch, check_executor, context_from_json};
use crate::state::AppState;

/// Ids of expired conversations remembered, so that a late request hears "expired" rather than "unknown".
const REMEMBERED_EXPIRED: usize = 1024;

/// The open conversations of a server.
#[derive(Debug, Default)]
pub(crate) struct Conversations {
    inner: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    open: HashMap<Uuid, Arc<Conversation>>,
    expired: VecDeque<Uuid>,
}

/// One conversation. Its session sits behind an async lock: a query holds it for as long as it runs.
pub(crate) struct Conversation {
    pub id: Uuid,
    pub model: String,
    pub created_at: DateTime<Utc>,
    session: tokio::sync::Mutex<Option<RlmSession>>,
    last_used: Mutex<Instant>,
    idle_ttl: Duration,
    /// Prompt + completion tokens over all queries, and the budget for them.
    tokens_used: AtomicU64,
    max_tokens: Option<u64>,
    turns: AtomicU64,
    /// Cancels the running query when the conversation is deleted or the server shuts down.
    cancel: CancellationToken,
}

impl std::fmt::Debug for Conversation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversation").field("id", &self.id).field("model", &self.model).finish_non_exhaustive()
    }
}

impl Conversation {
    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_used.lock().unwrap_or_else(PoisonError::into_inner).elapsed()
    }

    /// Expired when idle past its TTL; a running query keeps it alive (its lock is held).
    fn expired(&self) -> bool {
        self.idle_for() > self.idle_ttl && self.session.try_lock().is_ok()
    }

    fn view(&self) -> Value {
        json!({
            "object": "rlm.conversation",
            "id": self.id,
            "model": self.model,
            "created_at": self.created_at,
            "turns": self.turns.load(Ordering::Relaxed),
            "tokens_used": self.tokens_used.load(Ordering::Relaxed),
            "max_tokens": self.max_tokens,
            "idle_ttl_secs": self.idle_ttl.as_secs_f64(),
        })
    }
}

impl Conversations {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes conversations idle past their TTL (their REPLs, and remote sandbox sessions, end).
    fn sweep(&self) {
        let expired: Vec<Arc<Conversation>> = {
            let mut registry = self.lock();
            let ids: Vec<Uuid> = registry.open.values().filter(|c| c.expired()).map(|c| c.id).collect();
            let mut gone = Vec::new();
            for id in ids {
                gone.extend(registry.open.remove(&id));
                registry.expired.push_back(id);
                if registry.expired.len() > REMEMBERED_EXPIRED {
                    registry.expired.pop_front();
                }
            }
            gone
        };
        for conversation in expired {
            tracing::info!(conversation = %conversation.id, "conversation expired");
            close_later(conversation);
        }
    }

    fn find(&self, id: &str) -> Result<Arc<Conversation>, ApiError> {
        self.sweep();
        let parsed = Uuid::parse_str(id.trim())
            .map_err(|_| ApiError::not_found("conversation_not_found", format!("no conversation {id:?}")))?;
        let registry = self.lock();
        if let Some(conversation) = registry.open.get(&parsed) {
            return Ok(Arc::clone(conversation));
        }
        if registry.expired.contains(&parsed) {
            return Err(ApiError::not_found(
                "conversation_expired",
                format!("conversation {parsed} expired after being idle; start a new one"),
            ));
        }
        Err(ApiError::not_found("conversation_not_found", format!("no conversation {parsed}")))
    }

    /// Cancels every running query and closes every conversation (at shutdown).
    pub(crate) fn close_all(&self) {
        let all: Vec<Arc<Conversation>> = self.lock().open.drain().map(|(_, c)| c).collect();
        for conversation in all {
            conversation.cancel.cancel();
            close_later(conversation);
        }
    }
}

impl Conversations {
    /// Cancels every running query and closes every conversation's session, waiting at most `limit` in all.
    pub(crate) async fn close_all_within(&self, limit: Duration) {
        let all: Vec<Arc<Conversation>> = self.lock().open.drain().map(|(_, c)| c).collect();
        let closing = futures::future::join_all(all.into_iter().map(|conversation| async move {
            conversation.cancel.cancel();
            if let Some(session) = conversation.session.lock().await.take()
                && let Err(err) = session.close().await
            {
                tracing::debug!(conversation = %conversation.id, "closing a conversation's session failed: {err}");
            }
        }));
        if tokio::time::timeout(limit, closing).await.is_err() {
            tracing::warn!("some conversations' sessions did not close in time");
        }
    }
}

/// Closes the conversation's session once no query holds it.
fn close_later(conversation: Arc<Conversation>) {
    tokio::spawn(async move {
        if let Some(session) = conversation.session.lock().await.take()
            && let Err(err) = session.close().await
        {
            tracing::debug!(conversation = %conversation.id, "closing a conversation's session failed: {err}");
        }
    });
}

/// A new conversation: one REPL over a context that answers query after query.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRequest {
    /// A string (text context) or any JSON value.
    #[serde(default)]
    context: Value,
    /// The root model (default: the server's).
    model: Option<String>,
    /// The model of `llm_query` and child RLMs.
    sub_model: Option<String>,
    /// Limits of each query.
    #[serde(default)]
    limits: LimitsPatch,
    /// Token budget over all queries; at most the server's.
    max_tokens: Option<u64>,
    /// `local`, `remote` or `wasm` (default: the server's).
    executor: Option<String>,
    /// Sampling temperature of every model call.
    temperature: Option<f32>,
}

/// A query in a conversation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AskRequest {
    /// The question.
    #[schema(required)]
    query: Option<String>,
    /// A context to add first (`context_1`, `context_2`, …).
    context: Option<Value>,
}

/// Start a conversation: one REPL over a context that answers query after query.
#[utoipa::path(post, path = "/v1/conversations", request_body = CreateRequest, responses(
    (status = 201, description = "The conversation", body = serde_json::Value),
    (status = 400, description = "Invalid request", body = ErrorBody),
    (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    (status = 429, description = "Too many open conversations", body = ErrorBody),
    (status = 503, description = "Shutting down, or the executor is unavailable", body = ErrorBody),
))]
pub async fn create(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    match create_inner(state, body).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn create_inner(state: AppState, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = body?;
    let request: CreateRequest = if body.is_empty() { CreateRequest::default() } else { parse_json(&body)? };
    if state.is_shutting_down() {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    check_executor(&state, request.executor.as_deref())?;
    state.executor_ready().await.map_err(ApiError::unavailable)?;
    let config = state.config();
    let conversations = state.conversations();
    conversations.sweep();
    if conversations.lock().open.len() >= config.max_conversations {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "requests",
            Some("too_many_conversations"),
            format!(
                "the server holds its maximum of {} open conversations; delete one or retry later",
                config.max_conversations
            ),
        ));
    }
    let max_tokens = match (request.max_tokens, config.conversation_max_tokens) {
        (Some(0), _) => return Err(ApiError::bad_request("max_tokens must be at least 1")),
        (Some(asked), Some(server)) => Some(asked.min(server)),
        (asked, server) => asked.or(server),
    };
    let root = match request.model {
        Some(model) if !model.trim().is_empty() => model,
        _ => state.default_model()?.to_owned(),
    };
    let mut limits = request.limits.apply(&config.limits)?;
    // One query can never spend more than the whole conversation may.
    limits.max_tokens = match (limits.max_tokens, max_tokens) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let spec = RunSpec {
        context: context_from_json(Value::Null),
        query: String::new(),
        models: ModelPlan { root: root.clone(), sub: request.sub_model, per_depth: Vec::new() },
        limits,
        temperature: request.temperature,
    };
    let rlm = state.build_rlm(&spec)?;
    let session = rlm
        .session(context_from_json(request.context))
        .await
        .map_err(|err| ApiError::unavailable(format!("could not start the conversation's REPL: {err}")))?;
    let conversation = Arc::new(Conversation {
        id: Uuid::now_v7(),
        model: root,
        created_at: Utc::now(),
        session: tokio::sync::Mutex::new(Some(session)),
        last_used: Mutex::new(Instant::now()),
        idle_ttl: config.conversation_idle_ttl,
        tokens_used: AtomicU64::new(0),
        max_tokens,
        turns: AtomicU64::new(0),
        cancel: CancellationToken::new(),
    });
    conversations.lock().open.insert(conversation.id, Arc::clone(&conversation));
    tracing::info!(conversation = %conversation.id, model = %conversation.model, "conversation started");
    Ok((StatusCode::CREATED, Json(conversation.view())).into_response())
}

/// A conversation.
#[utoipa::path(get, path = "/v1/conversations/{id}", params(("id" = Uuid, Path, description = "The conversation")), responses(
    (status = 200, description = "The conversation", body = serde_json::Value),
    (status = 404, description = "No such conversation, or it expired", body = ErrorBody),
))]
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.conversations().find(&id)?.view()))
}

/// Close a conversation (cancels its running query).
#[utoipa::path(delete, path = "/v1/conversations/{id}", params(("id" = Uuid, Path, description = "The conversation")), responses(
    (status = 200, description = "Deleted", body = serde_json::Value),
    (status = 404, description = "No such conversation, or it expired", body = ErrorBody),
))]
pub async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let conversation = state.conversations().find(&id)?;
    state.conversations().lock().open.remove(&conversation.id);
    conversation.cancel.cancel();
    close_later(Arc::clone(&conversation));
    Ok(Json(json!({"object": "rlm.conversation.deleted", "id": conversation.id, "deleted": true})))
}

/// Ask in a conversation; variables of earlier queries persist.
#[utoipa::path(post, path = "/v1/conversations/{id}/messages", params(("id" = Uuid, Path, description = "The conversation")),
    request_body = AskRequest, responses(
    (status = 200, description = "The answer", body = serde_json::Value),
    (status = 400, description = "Invalid request", body = ErrorBody),
    (status = 404, description = "No such conversation, or it expired", body = ErrorBody),
    (status = 409, description = "Another query of this conversation is running", body = ErrorBody),
    (status = 429, description = "The conversation's token budget is used up, or all run slots are busy", body = ErrorBody),
))]
pub async fn ask(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let outcome = async {
        let request: AskRequest = parse_json(&body?)?;
        let query = request.query.filter(|q| !q.trim().is_empty());
        let query = query.ok_or_else(|| ApiError::bad_request("\"query\" is required"))?;
        let conversation = state.conversations().find(&id)?;
        let (completion, context_name) = ask_in(&state, &conversation, &query, request.context).await?;
        let mut body = answer_view(&conversation, completion);
        body["context_name"] = json!(context_name);
        Ok::<_, ApiError>(Json(body).into_response())
    };
    match outcome.await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

/// Asks `query` in `conversation` (adding `context` first, when given). `409` while another query runs, `429` when
/// the token budget is used up or every run slot is busy.
pub(crate) async fn ask_in(
    state: &AppState,
    conversation: &Conversation,
    query: &str,
    context: Option<Value>,
) -> Result<(Result<Completion, (Completion, String)>, Option<String>), ApiError> {
    if state.is_shutting_down() {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    let Ok(mut guard) = conversation.session.try_lock() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            Some("conversation_busy"),
            format!("conversation {} is answering another query; one query at a time", conversation.id),
        ));
    };
    conversation.touch();
    let used = conversation.tokens_used.load(Ordering::Relaxed);
    if let Some(max) = conversation.max_tokens.filter(|max| used >= *max) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "insufficient_quota",
            Some("conversation_token_limit"),
            format!("conversation {} has used {used} of its {max} tokens; start a new one", conversation.id),
        ));
    }
    let Some(session) = guard.as_mut() else {
        return Err(ApiError::not_found(
            "conversation_not_found",
            format!("conversation {} was closed", conversation.id),
        ));
    };
    let permit = state.try_run_slot()?;
    let context_name = match context {
        Some(value) => Some(
            session
                .add_context(context_from_json(value))
                .await
                .map_err(|err| ApiError::bad_request(format!("could not add the context: {err}")))?,
        ),
        None => None,
    };
    let cancel = conversation.cancel.child_token();
    // The client going away drops this future, and the guard cancels the query.
    let drop_guard = cancel.clone().drop_guard();
    let outcome = session.ask_with(query, cancel, None).await;
    drop_guard.disarm();
    drop(permit);
    conversation.touch();
    let outcome = match outcome {
        Ok(completion) => Ok(completion),
        Err(RlmError::Failed { message, completion }) => Err((*completion, message)),
        Err(err) => return Err(ApiError::internal(err.to_string())),
    };
    let usage = match &outcome {
        Ok(done) | Err((done, _)) => done.usage.total.total_tokens(),
    };
    conversation.tokens_used.fetch_add(usage, Ordering::Relaxed);
    conversation.turns.fetch_add(1, Ordering::Relaxed);
    Ok((outcome, context_name))
}

fn answer_view(conversation: &Conversation, outcome: Result<Completion, (Completion, String)>) -> Value {
    let (completion, error) = match outcome {
        Ok(completion) => (completion, None),
        Err((completion, message)) => (completion, Some(message)),
    };
    json!({
        "object": "rlm.conversation.answer",
        "conversation_id": conversation.id,
        "answer": error.is_none().then_some(completion.answer),
        "error": error,
        "run_id": completion.run_id,
        "finished_by": completion.finished_by,
        "limit": completion.limit,
        "iterations": completion.iterations,
        "sub_calls": completion.sub_calls,
        "usage": completion.usage,
        "cost_usd": completion.cost_usd,
        "trace": completion.trace,
        "turns": conversation.turns.load(Ordering::Relaxed),
        "tokens_used": conversation.tokens_used.load(Ordering::Relaxed),
        "max_tokens": conversation.max_tokens,
    })
}

/// The conversation an OpenAI-compatible request names in `rlm_conversation` (passed with the client's
/// `extra_body`).
pub(crate) fn find_for_chat(state: &AppState, id: &str) -> Result<Arc<Conversation>, ApiError> {
    state.conversations().find(id)
}
