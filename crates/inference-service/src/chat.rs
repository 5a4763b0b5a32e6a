//! The OpenAI-compatible front: `POST /v1/chat/completions`, `GET /v1/models[/{model}]`.
//!
//! The model name selects the configuration: `rlm` is the server's default root model, `rlm:<model>` uses
//! `<model>` as the root model. The query is the content of the last `user` message; the context is the
//! `rlm_context` extension field when given, otherwise every message before that one, each under a `[role]` header
//! line, separated by blank lines.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use rlm::{Completion, Context, FinishedBy, ModelPlan};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::DropGuard;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody, parse_json};
use crate::registry::{RunEntry, RunOutcome, RunSpec, RunStatus};
use crate::runs::{LimitsPatch, context_from_json};
use crate::state::AppState;

/// The model name of the server's default configuration.
pub const MODEL_PREFIX: &str = "rlm";

/// `POST /v1/chat/completions`: OpenAI's request; the last user message is the query.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct ChatRequest {
    /// `rlm` or `rlm:<root-model>`.
    #[schema(required)]
    model: Option<String>,
    /// The conversation; the last user message is the query, the earlier ones the context.
    #[serde(default)]
    messages: Vec<ChatMessage>,
    /// Answer as `chat.completion.chunk` server-sent events.
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    /// Sampling temperature of every model call.
    temperature: Option<f32>,
    /// Extension: the context itself (a string, or any JSON value); the messages before the query are then unused.
    rlm_context: Option<Value>,
    /// Extension: limits of this run (same fields as `limits` of `POST /v1/runs`).
    rlm_limits: Option<LimitsPatch>,
    /// Extension: answer in this conversation (`POST /v1/conversations`), whose REPL keeps its state across turns.
    /// The earlier messages are then unused; `rlm_context` is added to the conversation as a new context.
    rlm_conversation: Option<String>,
}

/// Options of a streamed answer.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct StreamOptions {
    /// Send a last chunk with the usage.
    #[serde(default)]
    include_usage: bool,
}

/// One message of the conversation.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct ChatMessage {
    /// `system`, `user` or `assistant`.
    role: String,
    /// A string, or a list of parts of which only `text` parts are accepted.
    #[serde(default)]
    content: Value,
    /// The author's name (unused).
    name: Option<String>,
}

/// A message's text: a string, or the concatenated text of its `text` parts. Other parts (images, audio) are refused.
fn message_text(content: &Value) -> Result<String, ApiError> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(text) => Ok(text.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(piece)) => text.push_str(piece),
                    (kind, _) => {
                        return Err(ApiError::bad_request(format!(
                            "unsupported content part {:?}: only text parts are supported",
                            kind.unwrap_or("?")
                        )));
                    }
                }
            }
            Ok(text)
        }
        _ => Err(ApiError::bad_request("message content must be a string or an array of content parts")),
    }
}

/// The root model a model name selects: `rlm` → the default, `rlm:<model>` → `<model>`.
fn root_model(state: &AppState, name: &str) -> Result<String, ApiError> {
    let unknown = || {
        ApiError::not_found(
            "model_not_found",
            format!("the model {name:?} does not exist: use \"rlm\" or \"rlm:<root-model>\""),
        )
    };
    match name.split_once(':') {
        None if name == MODEL_PREFIX => Ok(state.default_model()?.to_owned()),
        Some((MODEL_PREFIX, root)) if !root.trim().is_empty() => Ok(root.to_owned()),
        _ => Err(unknown()),
    }
}

/// Query and context from the messages (see the module documentation).
fn query_and_context(messages: &[ChatMessage], explicit: Option<Value>) -> Result<(String, Context), ApiError> {
    let position = messages
        .iter()
        .rposition(|m| m.role == "user")
        .ok_or_else(|| ApiError::bad_request("\"messages\" must contain a user message: its content is the query"))?;
    let query = message_text(&messages[position].content)?;
    if query.trim().is_empty() {
        return Err(ApiError::bad_request("the last user message (the query) is empty"));
    }
    if let Some(explicit) = explicit {
        return Ok((query, context_from_json(explicit)));
    }
    let mut context = String::new();
    for message in &messages[..position] {
        if !context.is_empty() {
            context.push_str("\n\n");
        }
        match &message.name {
            Some(name) => context.push_str(&format!("[{} ({name})]\n", message.role)),
            None => context.push_str(&format!("[{}]\n", message.role)),
        }
        context.push_str(&message_text(&message.content)?);
    }
    Ok((query, Context::Text(context)))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn finish_reason(completion: &Completion) -> &'static str {
    if completion.finished_by == FinishedBy::Limit { "length" } else { "stop" }
}

fn usage_json(completion: &Completion) -> Value {
    let total = completion.usage.total;
    json!({
        "prompt_tokens": total.prompt_tokens,
        "completion_tokens": total.completion_tokens,
        "total_tokens": total.total_tokens(),
        "prompt_tokens_details": {"cached_tokens": total.cached_tokens},
    })
}

fn rlm_extension(run: &RunEntry, completion: &Completion) -> Value {
    json!({
        "run_id": run.id,
        "finished_by": completion.finished_by,
        "limit": completion.limit,
        "iterations": completion.iterations,
        "sub_calls": completion.sub_calls,
        "path": completion.path,
    })
}

/// The error of a run that ended without an answer.
fn run_failure(run: &RunEntry, outcome: &RunOutcome) -> ApiError {
    let message = outcome.error.clone().unwrap_or_else(|| "the run ended without an answer".into());
    match run.status() {
        RunStatus::Cancelled => ApiError::unavailable(format!("run {} was cancelled: {message}", run.id)),
        _ => ApiError::internal(format!("run {} failed: {message}", run.id)),
    }
}

/// An OpenAI-compatible chat completion answered by an RLM.
#[utoipa::path(post, path = "/v1/chat/completions", request_body = ChatRequest, responses(
    (status = 200, description = "A chat.completion, or with stream: chat.completion.chunk server-sent events ending in [DONE]",
     content((serde_json::Value = "application/json"), (String = "text/event-stream"))),
    (status = 400, description = "Invalid request", body = ErrorBody),
    (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    (status = 413, description = "Request body too large", body = ErrorBody),
    (status = 429, description = "All run slots are busy", body = ErrorBody),
    (status = 503, description = "Shutting down, or the executor is unavailable", body = ErrorBody),
    (status = 404, description = "Unknown model", body = ErrorBody),
    (status = 500, description = "The run failed", body = ErrorBody),
))]
pub async fn chat_completions(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    match chat_inner(state, body).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn chat_inner(state: AppState, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let request: ChatRequest = parse_json(&body?)?;
    let model_name = request.model.ok_or_else(|| ApiError::bad_request("\"model\" is required"))?;
    let root = root_model(&state, &model_name)?;
    if let Some(conversation) = &request.rlm_conversation {
        return conversation_turn(
            &state,
            conversation,
            &model_name,
            &request.messages,
            request.rlm_context,
            request.stream,
        )
        .await;
    }
    let (query, context) = query_and_context(&request.messages, request.rlm_context)?;
    let limits = request.rlm_limits.unwrap_or_default().apply(&state.config().limits)?;
    let spec = RunSpec { context, query, models: ModelPlan::new(root), limits, temperature: request.temperature };
    let run = state.start_run(spec).await?;
    let id = format!("chatcmpl-{}", run.id.simple());
    let created = unix_now();
    if request.stream {
        let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
        let chunks = ChunkStream { run: Arc::clone(&run), id, created, model: model_name, include_usage };
        let keep_alive = KeepAlive::new().interval(state.config().sse_keep_alive);
        return Ok(Sse::new(chunks.into_stream()).keep_alive(keep_alive).into_response());
    }
    // The client going away drops this future, and the guard cancels the run.
    let guard = run.cancel.clone().drop_guard();
    let outcome = run.wait().await;
    guard.disarm();
    let completion = match (&outcome.completion, run.status()) {
        (Some(completion), RunStatus::Completed) => completion,
        _ => return Err(run_failure(&run, &outcome)),
    };
    Ok(Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model_name,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": completion.answer},
            "finish_reason": finish_reason(completion),
        }],
        "usage": usage_json(completion),
        "rlm": rlm_extension(&run, completion),
    }))
    .into_response())
}

/// One turn of a conversation through the OpenAI-compatible front: the last user message is the query.
async fn conversation_turn(
    state: &AppState,
    id: &str,
    model_name: &str,
    messages: &[ChatMessage],
    context: Option<Value>,
    stream: bool,
) -> Result<Response, ApiError> {
    let conversation = crate::conversations::find_for_chat(state, id)?;
    let (query, _) = query_and_context(messages, Some(Value::Null))?;
    let (outcome, _) = crate::conversations::ask_in(state, &conversation, &query, context).await?;
    let completion = match outcome {
        Ok(completion) => completion,
        Err((completion, message)) => {
            return Err(ApiError::internal(format!("run {} failed: {message}", completion.run_id)));
        }
    };
    let id = format!("chatcmpl-{}", completion.run_id.simple());
    let created = unix_now();
    let extension = json!({
        "run_id": completion.run_id,
        "conversation_id": conversation.id,
        "finished_by": completion.finished_by,
        "limit": completion.limit,
        "iterations": completion.iterations,
        "sub_calls": completion.sub_calls,
        "path": completion.path,
    });
    if stream {
        // The answer is whole before the first chunk: role, content and finish reason come at once.
        let chunk = |choices: Value| {
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model_name, "choices": choices})
                .to_string()
        };
        let events = vec![
            chunk(json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}])),
            chunk(json!([{"index": 0, "delta": {"content": completion.answer}, "finish_reason": null}])),
            chunk(json!([{"index": 0, "delta": {}, "finish_reason": finish_reason(&completion)}])),
            "[DONE]".to_owned(),
        ];
        let events =
            futures::stream::iter(events.into_iter().map(|data| Ok::<_, Infallible>(Event::default().data(data))));
        return Ok(Sse::new(events).into_response());
    }
    Ok(Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model_name,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": completion.answer},
            "finish_reason": finish_reason(&completion),
        }],
        "usage": usage_json(&completion),
        "rlm": extension,
    }))
    .into_response())
}

struct ChunkStream {
    run: Arc<RunEntry>,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

#[derive(Clone, Copy)]
enum Stage {
    Role,
    Answer,
    Finish,
    Usage,
    Done,
    End,
}

impl ChunkStream {
    fn chunk(&self, choices: Value) -> Event {
        let chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        Event::default().data(chunk.to_string())
    }

    /// Standard `chat.completion.chunk` events: the role, the answer, the finish reason, the usage when asked for,
    /// then `[DONE]`. Dropping the stream before the run ended (the client went away) cancels the run.
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        let guard: DropGuard = self.run.cancel.clone().drop_guard();
        let state = (self, Stage::Role, None::<Completion>, guard);
        futures::stream::unfold(state, |(this, stage, completion, guard)| async move {
            let (event, next, completion) = match stage {
                Stage::Role => {
                    let delta =
                        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]);
                    (this.chunk(delta), Stage::Answer, completion)
                }
                Stage::Answer => {
                    let outcome = this.run.wait().await;
                    match (outcome.completion.clone(), this.run.status()) {
                        (Some(done), RunStatus::Completed) => {
                            let delta = json!([{"index": 0, "delta": {"content": done.answer}, "finish_reason": null}]);
                            (this.chunk(delta), Stage::Finish, Some(done))
                        }
                        _ => {
                            let error = run_failure(&this.run, &outcome).body();
                            (Event::default().data(error.to_string()), Stage::End, None)
                        }
                    }
                }
                Stage::Finish => {
                    let reason = completion.as_ref().map_or("stop", finish_reason);
                    let delta = json!([{"index": 0, "delta": {}, "finish_reason": reason}]);
                    let next = if this.include_usage { Stage::Usage } else { Stage::Done };
                    (this.chunk(delta), next, completion)
                }
                Stage::Usage => {
                    let mut chunk = json!({
                        "id": this.id,
                        "object": "chat.completion.chunk",
                        "created": this.created,
                        "model": this.model,
                        "choices": [],
                    });
                    if let Some(done) = &completion {
                        chunk["usage"] = usage_json(done);
                        chunk["rlm"] = rlm_extension(&this.run, done);
                    }
                    (Event::default().data(chunk.to_string()), Stage::Done, completion)
                }
                Stage::Done => (Event::default().data("[DONE]"), Stage::End, completion),
                Stage::End => return None,
            };
            Some((Ok(event), (this, next, completion, guard)))
        })
    }
}

fn model_object(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "rlm"})
}

/// The model names this server answers to: `rlm`, and `rlm:<default root model>` when one is configured.
fn model_names(state: &AppState) -> Vec<String> {
    let mut names = vec![MODEL_PREFIX.to_owned()];
    if let Ok(model) = state.default_model() {
        names.push(format!("{MODEL_PREFIX}:{model}"));
    }
    names
}

/// The OpenAI-compatible model list.
#[utoipa::path(get, path = "/v1/models", responses((status = 200, description = "Models", body = serde_json::Value)))]
pub async fn list_models(State(state): State<AppState>) -> Json<Value> {
    let data: Vec<Value> = model_names(&state).iter().map(|name| model_object(name)).collect();
    Json(json!({"object": "list", "data": data}))
}

/// An OpenAI-compatible model object.
#[utoipa::path(get, path = "/v1/models/{model}", params(("model" = String, Path, description = "`rlm` or `rlm:<root-model>`")),
    responses(
        (status = 200, description = "The model", body = serde_json::Value),
        (status = 404, description = "Unknown model", body = ErrorBody),
    ))]
pub async fn get_model(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    root_model(&state, &name)?;
    Ok(Json(model_object(&name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(role: &str, content: Value) -> ChatMessage {
        ChatMessage { role: role.into(), content, name: None }
    }

    #[test]
    fn the_last_user_message_is_the_query_and_earlier_messages_the_context() {
        let messages = vec![
            message("system", json!("Be brief.")),
            message("user", json!([{"type": "text", "text": "Doc: "}, {"type": "text", "text": "alpha"}])),
            message("assistant", json!("ok")),
            message("user", json!("What is the doc about?")),
        ];
        let (query, context) = query_and_context(&messages, None).unwrap();
        assert_eq!(query, "What is the doc about?");
        assert_eq!(context, Context::text("[system]\nBe brief.\n\n[user]\nDoc: alpha\n\n[assistant]\nok"));
        let (_, context) = query_and_context(&messages, Some(json!({"a": 1}))).unwrap();
        assert_eq!(context, Context::Json(json!({"a": 1})));
    }

    #[test]
    fn bad_messages_are_refused() {
        assert!(query_and_context(&[message("system", json!("x"))], None).is_err());
        assert!(query_and_context(&[message("user", json!(" "))], None).is_err());
        let image = json!([{"type": "image_url", "image_url": {"url": "http://x"}}]);
        assert!(query_and_context(&[message("user", image)], None).is_err());
    }
}
