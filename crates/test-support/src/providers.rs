//! The Anthropic and Gemini dialects of [`crate::ScriptedServer`], written from the providers' public API
//! references. Both answer from the same scripts and rules as the OpenAI endpoint and record requests the same way.
//!
//! Prompt caching is simulated so clients can be tested against it:
//! * Anthropic: a request's prefix up to each `cache_control` breakpoint is written to the cache
//!   (`cache_creation_input_tokens`); a later request whose prefix up to a block matches a written one reads it
//!   (`cache_read_input_tokens`); `input_tokens` is what remains. Unlike the real service there is no minimum
//!   cacheable length and no expiry.
//! * Gemini: implicit caching — the longest prefix of whole turns sent before (to the same model) is reported as
//!   `cachedContentTokenCount`, and counts inside `promptTokenCount`.
//!
//! Tokens are estimated at four characters each.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::{Api, InFlight, RecordedRequest, Reply, Shared, estimate_tokens};

/// One text block of a prompt: role, text, and whether a cache breakpoint follows it.
struct Block {
    role: String,
    text: String,
    breakpoint: bool,
}

/// `(text, breakpoint)` of every text block of an Anthropic `content` (a string or a list of blocks).
fn anthropic_blocks(content: Option<&Value>) -> Vec<(String, bool)> {
    match content {
        Some(Value::String(text)) => vec![(text.clone(), false)],
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter(|block| block.get("type").and_then(Value::as_str) == Some("text"))
            .map(|block| {
                let text = block.get("text").and_then(Value::as_str).unwrap_or_default().to_owned();
                (text, block.get("cache_control").is_some())
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Cumulative hashes of the blocks: element `i` identifies the prefix ending with block `i`.
fn prefix_hashes(seed: &str, blocks: &[Block]) -> Vec<u64> {
    let mut hasher = DefaultHasher::new();
    seed.hash(&mut hasher);
    blocks
        .iter()
        .map(|block| {
            block.role.hash(&mut hasher);
            block.text.hash(&mut hasher);
            hasher.finish()
        })
        .collect()
}

fn tokens(blocks: &[Block]) -> u64 {
    blocks.iter().map(|block| estimate_tokens(block.text.chars().count())).sum()
}

fn anthropic_error(status: u16, message: &str, retry_after: Option<u64>) -> Response {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    with_status(status, body, retry_after)
}

fn gemini_error(status: u16, message: &str, retry_after: Option<u64>) -> Response {
    let kind = match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    };
    let body = json!({"error": {"code": status, "message": message, "status": kind}});
    with_status(status, body, retry_after)
}

fn with_status(status: u16, body: Value, retry_after: Option<u64>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(secs) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Records the request, picks its reply and waits its delay; `None` when neither script nor rule has one.
async fn scripted_reply(shared: &Arc<Shared>, request: &RecordedRequest) -> Option<Reply> {
    let _in_flight = InFlight::enter(shared, &request.model);
    shared.lock().requests.push(Arc::new(request.clone()));
    let reply = shared.pick_reply(request);
    let delay = reply.as_ref().map_or(Duration::ZERO, |r| r.delay) + shared.latency;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    reply
}

/// `POST /v1/messages`.
pub(crate) async fn anthropic_messages(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return anthropic_error(400, "request body is not valid JSON", None);
    };
    let Some(api_key) = header_text(&headers, "x-api-key") else {
        return anthropic_error(401, "x-api-key header is required", None);
    };
    if header_text(&headers, "anthropic-version").is_none() {
        return anthropic_error(400, "anthropic-version: header is required", None);
    }
    let Some(model) = body.get("model").and_then(Value::as_str).map(str::to_owned) else {
        return anthropic_error(400, "model: Field required", None);
    };
    if body.get("max_tokens").and_then(Value::as_u64).is_none() {
        return anthropic_error(400, "max_tokens: Field required", None);
    }
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return anthropic_error(400, "messages: Field required", None);
    };
    let mut blocks: Vec<Block> = anthropic_blocks(body.get("system"))
        .into_iter()
        .map(|(text, breakpoint)| Block { role: "system".into(), text, breakpoint })
        .collect();
    for message in messages {
        let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
        if role != "user" && role != "assistant" {
            return anthropic_error(
                400,
                &format!(
                    "messages: Unexpected role {role:?}. The Messages API accepts a top-level `system` parameter, not \"system\" as an input message role."
                ),
                None,
            );
        }
        for (text, breakpoint) in anthropic_blocks(message.get("content")) {
            if text.is_empty() {
                return anthropic_error(400, "messages: text content blocks must be non-empty", None);
            }
            blocks.push(Block { role: role.to_owned(), text, breakpoint });
        }
    }
    if blocks.iter().filter(|block| block.breakpoint).count() > 4 {
        return anthropic_error(400, "A maximum of 4 blocks with cache_control may be provided.", None);
    }
    let mut turns: Vec<(String, String)> = Vec::new();
    for block in &blocks {
        match turns.last_mut() {
            Some((role, text)) if *role == block.role => text.push_str(&block.text),
            _ => turns.push((block.role.clone(), block.text.clone())),
        }
    }
    let request = RecordedRequest::from_tree(model.clone(), turns, body, Api::Anthropic, Some(api_key));
    let Some(reply) = scripted_reply(&shared, &request).await else {
        return anthropic_error(500, &format!("scripted server: no reply for model {model:?}"), None);
    };
    if !reply.is_success() {
        return anthropic_error(reply.status, &reply.content, reply.retry_after);
    }
    let (input, read, written) = match reply.usage {
        Some((prompt, _, cached)) => (prompt.saturating_sub(cached), cached, 0),
        None => {
            let hashes = prefix_hashes(&format!("anthropic/{model}"), &blocks);
            let mut state = shared.lock();
            let read_blocks = hashes.iter().rposition(|hash| state.prompt_cache.contains(hash)).map_or(0, |i| i + 1);
            let last_breakpoint = blocks.iter().rposition(|block| block.breakpoint).map(|i| i + 1);
            let written_blocks = last_breakpoint.filter(|end| *end > read_blocks).unwrap_or(read_blocks);
            for (hash, block) in hashes.iter().zip(&blocks) {
                if block.breakpoint {
                    state.prompt_cache.insert(*hash);
                }
            }
            let read = tokens(&blocks[..read_blocks]);
            let written = tokens(&blocks[read_blocks..written_blocks]);
            (tokens(&blocks[written_blocks..]), read, written)
        }
    };
    let output = reply.usage.map_or_else(|| estimate_tokens(reply.content.chars().count()), |(_, c, _)| c);
    let body = json!({
        "id": format!("msg_scripted_{}", shared.lock().requests.len()),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": reply.content}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {
            "input_tokens": input,
            "output_tokens": output,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
        },
    });
    axum::Json(body).into_response()
}

fn gemini_text(parts: Option<&Value>) -> String {
    parts
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|part| part.get("text").and_then(Value::as_str))
        .collect()
}

/// `POST /v1beta/models/{model}:generateContent`.
pub(crate) async fn gemini_generate(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(target): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((model, "generateContent")) = target.rsplit_once(':') else {
        return gemini_error(404, &format!("unknown method in {target:?}"), None);
    };
    let model = model.to_owned();
    let Some(api_key) = header_text(&headers, "x-goog-api-key") else {
        return gemini_error(403, "Method doesn't allow unregistered callers. Please use an API key.", None);
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return gemini_error(400, "Invalid JSON payload received.", None);
    };
    let Some(contents) = body.get("contents").and_then(Value::as_array) else {
        return gemini_error(400, "* GenerateContentRequest.contents: contents is not specified", None);
    };
    let mut blocks = Vec::new();
    if let Some(system) = body.get("systemInstruction") {
        blocks.push(Block { role: "system".into(), text: gemini_text(system.get("parts")), breakpoint: false });
    }
    for content in contents {
        let role = match content.get("role").and_then(Value::as_str) {
            Some("model") => "assistant",
            Some("user") | None => "user",
            Some(other) => {
                return gemini_error(400, &format!("Please use a valid role: user, model (not {other})."), None);
            }
        };
        blocks.push(Block { role: role.into(), text: gemini_text(content.get("parts")), breakpoint: false });
    }
    let messages = blocks.iter().map(|b| (b.role.clone(), b.text.clone())).collect();
    let request = RecordedRequest::from_tree(model.clone(), messages, body, Api::Gemini, Some(api_key));
    let Some(reply) = scripted_reply(&shared, &request).await else {
        return gemini_error(500, &format!("scripted server: no reply for model {model:?}"), None);
    };
    if !reply.is_success() {
        return gemini_error(reply.status, &reply.content, reply.retry_after);
    }
    let (prompt, cached) = match reply.usage {
        Some((prompt, _, cached)) => (prompt, cached),
        None => {
            let hashes = prefix_hashes(&format!("gemini/{model}"), &blocks);
            let mut state = shared.lock();
            let cached_blocks = hashes.iter().rposition(|hash| state.prompt_cache.contains(hash)).map_or(0, |i| i + 1);
            state.prompt_cache.extend(hashes);
            (tokens(&blocks), tokens(&blocks[..cached_blocks]))
        }
    };
    let output = reply.usage.map_or_else(|| estimate_tokens(reply.content.chars().count()), |(_, c, _)| c);
    let mut usage =
        json!({"promptTokenCount": prompt, "candidatesTokenCount": output, "totalTokenCount": prompt + output});
    if cached > 0 {
        usage["cachedContentTokenCount"] = json!(cached);
    }
    let body = json!({
        "candidates": [{
            "content": {"role": "model", "parts": [{"text": reply.content}]},
            "finishReason": "STOP",
            "index": 0,
        }],
        "usageMetadata": usage,
        "modelVersion": model,
    });
    axum::Json(body).into_response()
}
