//! Test support for rlm: [`ScriptedServer`], a real OpenAI-compatible HTTP server on `127.0.0.1` that answers
//! `POST /v1/chat/completions` from per-model scripts, fallback rules and injected failures, records every request,
//! and measures how many requests were in flight at once. The same server speaks Anthropic's Messages API
//! (`POST /v1/messages`, with prompt caching) and Gemini's `generateContent` (see [`Api`]), from the same scripts.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use rlm_test_support::{Reply, ScriptedServer};
//! let server = ScriptedServer::builder()
//!     .script("root", [Reply::text("```repl\nprint(1)\n```"), Reply::text("FINAL(done)")])
//!     .rule(|req| req.model.starts_with("sub").then(|| Reply::text("sub answer")))
//!     .fail_next(1, Reply::error(429, "slow down").with_retry_after(1))
//!     .start()
//!     .await?;
//! let base_url = server.base_url(); // "http://127.0.0.1:PORT/v1"
//! # drop(base_url);
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod postgres;
mod providers;

pub use postgres::{PostgresError, PostgresServer};

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long [`ScriptedServer::shutdown`] waits for in-flight requests before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// One scripted answer of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Assistant content for a success, the error message for an error.
    content: String,
    delay: Duration,
    status: u16,
    retry_after: Option<u64>,
    /// `(prompt, completion, cached)`; estimated from the text when `None`.
    usage: Option<(u64, u64, u64)>,
}

impl Reply {
    /// A `200 OK` completion whose assistant message is `content`.
    pub fn text(content: impl Into<String>) -> Self {
        Self { content: content.into(), delay: Duration::ZERO, status: 200, retry_after: None, usage: None }
    }

    /// An error response with the given HTTP status and an OpenAI-style error body
    /// `{"error":{"message","type","code"}}`.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Self { status, ..Self::text(message) }
    }

    /// Sleep this long before answering (added to the server-wide latency).
    pub fn with_delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    /// Add a `Retry-After: <secs>` header.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// Report exactly this usage instead of an estimate.
    pub fn with_usage(mut self, prompt: u64, completion: u64, cached: u64) -> Self {
        self.usage = Some((prompt, completion, cached));
        self
    }

    fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A chat request as the server received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub model: String,
    /// `(role, content)` of every message; content parts given as an array are concatenated.
    pub messages: Vec<(String, String)>,
    /// The body as received (empty when it was read straight into [`Self::body`]).
    raw: Bytes,
    /// The body as a JSON tree, built when first asked for: a replayed run's requests carry the whole history each
    /// time, and a tree of every one of them is most of what the server would do per request, on the critical path
    /// of every bench turn, while tests look at a few of them.
    tree: OnceLock<Value>,
    /// `"stream": true` was asked for.
    stream: bool,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// Which API the request came in through.
    pub api: Api,
    /// The provider key header (`x-api-key` for Anthropic, `x-goog-api-key` for Gemini), if any.
    pub api_key: Option<String>,
}

/// The protocols a [`ScriptedServer`] speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Api {
    /// `POST /v1/chat/completions`.
    #[default]
    OpenAi,
    /// `POST /v1/messages`.
    Anthropic,
    /// `POST /v1beta/models/{model}:generateContent`.
    Gemini,
}

impl RecordedRequest {
    /// Content of the last message whose role is `user`.
    pub fn last_user_message(&self) -> Option<&str> {
        self.messages.iter().rev().find(|(role, _)| role == "user").map(|(_, content)| content.as_str())
    }

    /// Content of the first message whose role is `system`.
    pub fn system_message(&self) -> Option<&str> {
        self.messages.iter().find(|(role, _)| role == "system").map(|(_, content)| content.as_str())
    }

    /// The whole JSON body.
    pub fn body(&self) -> &Value {
        // The body was read as JSON before it was recorded, so parsing it again does not fail.
        self.tree.get_or_init(|| serde_json::from_slice(&self.raw).unwrap_or(Value::Null))
    }

    /// A request read from a JSON tree (the provider dialects translate theirs).
    fn from_tree(
        model: String,
        messages: Vec<(String, String)>,
        body: Value,
        api: Api,
        api_key: Option<String>,
    ) -> Self {
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        Self {
            model,
            messages,
            raw: Bytes::new(),
            tree: OnceLock::from(body),
            stream,
            authorization: None,
            api,
            api_key,
        }
    }

    fn stream(&self) -> bool {
        self.stream
    }

    fn include_usage(&self) -> bool {
        self.body().pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false)
    }
}

type Rule = Box<dyn Fn(&RecordedRequest) -> Option<Reply> + Send + Sync + 'static>;

/// Configures and starts a [`ScriptedServer`].
#[must_use]
pub struct ScriptedServerBuilder {
    scripts: Vec<(String, Vec<Reply>)>,
    rules: Vec<Rule>,
    fail_next: Vec<(usize, Reply)>,
    latency: Duration,
}

impl fmt::Debug for ScriptedServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedServerBuilder")
            .field("scripts", &self.scripts)
            .field("rules", &self.rules.len())
            .field("fail_next", &self.fail_next)
            .field("latency", &self.latency)
            .finish()
    }
}

impl ScriptedServerBuilder {
    /// Replies for requests naming `model`, consumed in order. Calling it again for the same model appends.
    pub fn script(mut self, model: &str, replies: impl IntoIterator<Item = Reply>) -> Self {
        self.scripts.push((model.to_owned(), replies.into_iter().collect()));
        self
    }

    /// Fallback used when the model's script is empty or absent: first rule returning `Some` wins.
    pub fn rule(mut self, f: impl Fn(&RecordedRequest) -> Option<Reply> + Send + Sync + 'static) -> Self {
        self.rules.push(Box::new(f));
        self
    }

    /// The next `n` requests (any model) get `reply` (e.g. 429 then success), before scripts/rules. Several calls
    /// queue up in order.
    pub fn fail_next(mut self, n: usize, reply: Reply) -> Self {
        if n > 0 {
            self.fail_next.push((n, reply));
        }
        self
    }

    /// Added to every reply's delay.
    pub fn latency(mut self, d: Duration) -> Self {
        self.latency = d;
        self
    }

    /// Bind `127.0.0.1:0` and start serving on the current Tokio runtime.
    pub async fn start(self) -> std::io::Result<ScriptedServer> {
        let mut model_names = Vec::new();
        let mut scripts: HashMap<String, VecDeque<Reply>> = HashMap::new();
        for (model, replies) in self.scripts {
            if !model_names.contains(&model) {
                model_names.push(model.clone());
            }
            scripts.entry(model).or_default().extend(replies);
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                scripts,
                fail_next: self.fail_next.into_iter().collect(),
                requests: Vec::new(),
                in_flight: 0,
                max_in_flight: 0,
                in_flight_by_model: HashMap::new(),
                max_in_flight_by_model: HashMap::new(),
                prompt_cache: std::collections::HashSet::new(),
            }),
            rules: self.rules,
            latency: self.latency,
            model_names,
        });

        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/models", get(list_models))
            .route("/v1/messages", post(providers::anthropic_messages))
            .route("/v1beta/models/{target}", post(providers::gemini_generate))
            // Sub-model prompts carry whole chunks of a context: tens of megabytes are normal.
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(Arc::clone(&shared));
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let signal = async move {
                // Either an explicit shutdown or the sender being dropped stops the server.
                let _ = shutdown_rx.await;
            };
            // Never returns an error (see axum::serve).
            let _ = axum::serve(listener, app).with_graceful_shutdown(signal).await;
        });
        Ok(ScriptedServer { shared, addr, shutdown_tx: Some(shutdown_tx), task: Some(task) })
    }
}

/// A scripted OpenAI-compatible server on `127.0.0.1`. Stops on [`ScriptedServer::shutdown`] or when dropped.
pub struct ScriptedServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown_tx: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for ScriptedServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl ScriptedServer {
    pub fn builder() -> ScriptedServerBuilder {
        ScriptedServerBuilder { scripts: Vec::new(), rules: Vec::new(), fail_next: Vec::new(), latency: Duration::ZERO }
    }

    /// Base URL for an OpenAI client, e.g. `http://127.0.0.1:4321/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The base URL for Anthropic clients (`ANTHROPIC_BASE_URL`: no `/v1`, as Anthropic's SDKs take it).
    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The base URL for Gemini clients (`GEMINI_BASE_URL`: no version path).
    pub fn gemini_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every chat request received (including ones answered with errors), in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.iter().map(|request| RecordedRequest::clone(request)).collect()
    }

    /// The chat requests naming `model`, in arrival order.
    pub fn requests_for(&self, model: &str) -> Vec<RecordedRequest> {
        self.shared.lock().requests.iter().filter(|r| r.model == model).map(|r| RecordedRequest::clone(r)).collect()
    }

    /// Highest number of chat requests in flight at once, over all models.
    pub fn max_concurrent(&self) -> usize {
        self.shared.lock().max_in_flight
    }

    /// Highest number of chat requests naming `model` in flight at once.
    pub fn max_concurrent_for(&self, model: &str) -> usize {
        self.shared.lock().max_in_flight_by_model.get(model).copied().unwrap_or(0)
    }

    /// Scripted replies for `model` not yet consumed.
    pub fn remaining_script(&self, model: &str) -> usize {
        self.shared.lock().scripts.get(model).map_or(0, VecDeque::len)
    }

    /// Stop accepting connections and wait (a few seconds at most) for in-flight requests to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await.is_err()
        {
            task.abort();
        }
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
        // The serve task finishes on its own once open connections close (or with the runtime).
        drop(self.task.take());
    }
}

struct Shared {
    state: Mutex<State>,
    rules: Vec<Rule>,
    latency: Duration,
    model_names: Vec<String>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking rule must not make every later assertion panic too.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Injected failures first, then the model's script, then the rules.
    fn pick_reply(&self, request: &RecordedRequest) -> Option<Reply> {
        {
            let mut state = self.lock();
            if let Some((remaining, reply)) = state.fail_next.front_mut() {
                let reply = reply.clone();
                *remaining -= 1;
                if *remaining == 0 {
                    state.fail_next.pop_front();
                }
                return Some(reply);
            }
            if let Some(reply) = state.scripts.get_mut(&request.model).and_then(VecDeque::pop_front) {
                return Some(reply);
            }
        }
        // Rules run without the lock so they may be slow or even panic without blocking the server.
        self.rules.iter().find_map(|rule| rule(request))
    }
}

struct State {
    scripts: HashMap<String, VecDeque<Reply>>,
    fail_next: VecDeque<(usize, Reply)>,
    /// Shared with the handler that recorded it: recording costs no copy of the request (a replayed run's requests
    /// carry its whole history each time, and the server's cost is on every bench turn's critical path).
    requests: Vec<Arc<RecordedRequest>>,
    in_flight: usize,
    max_in_flight: usize,
    in_flight_by_model: HashMap<String, usize>,
    max_in_flight_by_model: HashMap<String, usize>,
    /// Hashes of prompt prefixes the provider dialects hold in their (simulated) prompt caches.
    prompt_cache: std::collections::HashSet<u64>,
}

/// Counts a request as in flight until dropped (also when the client disconnects and the handler is cancelled).
struct InFlight {
    shared: Arc<Shared>,
    model: String,
}

impl InFlight {
    fn enter(shared: &Arc<Shared>, model: &str) -> Self {
        let mut state = shared.lock();
        state.in_flight += 1;
        state.max_in_flight = state.max_in_flight.max(state.in_flight);
        let count = {
            let n = state.in_flight_by_model.entry(model.to_owned()).or_default();
            *n += 1;
            *n
        };
        let max = state.max_in_flight_by_model.entry(model.to_owned()).or_default();
        *max = (*max).max(count);
        drop(state);
        Self { shared: Arc::clone(shared), model: model.to_owned() }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        if let Some(n) = state.in_flight_by_model.get_mut(&self.model) {
            *n = n.saturating_sub(1);
        }
    }
}

async fn chat_completions(AxumState(shared): AxumState<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let request = match parse_request(&headers, &body) {
        Ok(request) => Arc::new(request),
        Err(message) => return error_response(400, &message, None),
    };
    let _in_flight = InFlight::enter(&shared, &request.model);
    shared.lock().requests.push(Arc::clone(&request));

    let reply = shared.pick_reply(&request);
    let delay = reply.as_ref().map_or(Duration::ZERO, |r| r.delay) + shared.latency;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let Some(reply) = reply else {
        let message = format!("scripted server: no reply for model {:?}", request.model);
        return error_response(500, &message, None);
    };
    if !reply.is_success() {
        return error_response(reply.status, &reply.content, reply.retry_after);
    }
    let mut response =
        if request.stream() { stream_response(&request, &reply) } else { json_response(&request, &reply) };
    if let Some(secs) = reply.retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Ok(status) = StatusCode::from_u16(reply.status) {
        *response.status_mut() = status;
    }
    response
}

async fn list_models(AxumState(shared): AxumState<Arc<Shared>>) -> Response {
    let data: Vec<Value> = shared
        .model_names
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "scripted"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

fn parse_request(headers: &HeaderMap, raw: &Bytes) -> Result<RecordedRequest, String> {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    // The usual shape is read straight into what is recorded; anything else (content parts, a missing field) takes
    // the general way, which alone decides what such a request means.
    if let Ok(usual) = serde_json::from_slice::<UsualRequest>(raw) {
        return Ok(RecordedRequest {
            model: usual.model,
            messages: usual.messages.into_iter().map(|m| (m.role, m.content.unwrap_or_default())).collect(),
            raw: raw.clone(),
            tree: OnceLock::new(),
            stream: usual.stream.unwrap_or(false),
            authorization,
            api: Api::OpenAi,
            api_key: None,
        });
    }
    let body: Value = serde_json::from_slice(raw).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    let model = body.get("model").and_then(Value::as_str).ok_or("request has no string \"model\"")?.to_owned();
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("request has no \"messages\" array")?
        .iter()
        .map(|m| {
            let role = m.get("role").and_then(Value::as_str).unwrap_or_default().to_owned();
            (role, content_text(m.get("content")))
        })
        .collect();
    Ok(RecordedRequest { authorization, ..RecordedRequest::from_tree(model, messages, body, Api::OpenAi, None) })
}

/// The usual shape of a chat request: what is recorded of it (other fields are skipped).
#[derive(serde::Deserialize)]
struct UsualRequest {
    model: String,
    messages: Vec<UsualMessage>,
    stream: Option<bool>,
}

#[derive(serde::Deserialize)]
struct UsualMessage {
    role: String,
    content: Option<String>,
}

/// A message's content as text: a string, or the concatenated `text` of content parts.
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect(),
        _ => String::new(),
    }
}

fn estimate_tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4).max(1)
}

fn usage_json(request: &RecordedRequest, reply: &Reply) -> Value {
    let (prompt, completion, cached) = reply.usage.unwrap_or_else(|| {
        let prompt_chars: usize = request.messages.iter().map(|(_, c)| c.chars().count()).sum();
        (estimate_tokens(prompt_chars), estimate_tokens(reply.content.chars().count()), 0)
    });
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn completion_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("chatcmpl-scripted-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn json_response(request: &RecordedRequest, reply: &Reply) -> Response {
    let body = json!({
        "id": completion_id(),
        "object": "chat.completion",
        "created": now_secs(),
        "model": request.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": reply.content},
            "finish_reason": "stop",
        }],
        "usage": usage_json(request, reply),
    });
    axum::Json(body).into_response()
}

/// Standard `chat.completion.chunk` server-sent events: a role delta, the content in up to three pieces, a chunk with
/// `finish_reason`, the usage chunk (empty `choices`) when `stream_options.include_usage` is set, then `[DONE]`.
fn stream_response(request: &RecordedRequest, reply: &Reply) -> Response {
    let id = completion_id();
    let created = now_secs();
    let chunk = |choices: Value| json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": request.model, "choices": choices});
    let mut events =
        vec![chunk(json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]))];
    for piece in split_pieces(&reply.content, 3) {
        events.push(chunk(json!([{"index": 0, "delta": {"content": piece}, "finish_reason": null}])));
    }
    events.push(chunk(json!([{"index": 0, "delta": {}, "finish_reason": "stop"}])));
    if request.include_usage() {
        let mut usage_chunk = chunk(json!([]));
        usage_chunk["usage"] = usage_json(request, reply);
        events.push(usage_chunk);
    }
    let mut text = String::new();
    for event in events {
        text.push_str("data: ");
        text.push_str(&event.to_string());
        text.push_str("\n\n");
    }
    text.push_str("data: [DONE]\n\n");
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from(text))
        .unwrap_or_else(|_| error_response(500, "scripted server: could not build stream response", None))
}

/// Split `text` into at most `n` non-empty pieces on character boundaries.
fn split_pieces(text: &str, n: usize) -> Vec<&str> {
    let chars: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    if chars.is_empty() {
        return Vec::new();
    }
    let per = chars.len().div_ceil(n);
    let mut pieces = Vec::new();
    let mut start = 0;
    for chunk_start in chars.iter().step_by(per).skip(1) {
        pieces.push(&text[start..*chunk_start]);
        start = *chunk_start;
    }
    pieces.push(&text[start..]);
    pieces
}

fn error_response(status: u16, message: &str, retry_after: Option<u64>) -> Response {
    let (kind, code) = match status {
        400 => ("invalid_request_error", Value::Null),
        401 => ("invalid_request_error", json!("invalid_api_key")),
        403 => ("invalid_request_error", json!("permission_denied")),
        404 => ("invalid_request_error", json!("model_not_found")),
        429 => ("requests", json!("rate_limit_exceeded")),
        500..=599 => ("server_error", Value::Null),
        _ => ("invalid_request_error", Value::Null),
    };
    let body = json!({"error": {"message": message, "type": kind, "code": code}});
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(secs) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_pieces_covers_text_on_char_boundaries() {
        assert_eq!(split_pieces("", 3), Vec::<&str>::new());
        assert_eq!(split_pieces("ab", 3), vec!["a", "b"]);
        assert_eq!(split_pieces("héllo wörld", 3).concat(), "héllo wörld");
        assert_eq!(split_pieces("abcdefg", 3).len(), 3);
    }

    #[test]
    fn recorded_request_helpers() {
        let request = RecordedRequest {
            model: "m".into(),
            messages: vec![
                ("system".into(), "sys".into()),
                ("user".into(), "first".into()),
                ("assistant".into(), "a".into()),
                ("user".into(), "second".into()),
            ],
            raw: Bytes::new(),
            tree: OnceLock::new(),
            stream: false,
            authorization: None,
            api: Api::OpenAi,
            api_key: None,
        };
        assert_eq!(request.system_message(), Some("sys"));
        assert_eq!(request.last_user_message(), Some("second"));
    }
}
