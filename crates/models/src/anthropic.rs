//! Anthropic's Messages API, natively: `POST {base}/v1/messages` with `x-api-key` and `anthropic-version`, the system
//! prompt at the top level, `max_tokens` always, content blocks, and prompt caching.
//!
//! Prompt caching: the system prompt and the last message of a conversation carry `cache_control` breakpoints, and
//! so does the message that was last in the previous turn. An RLM's root conversation only grows, so every turn
//! reads the whole previous request from the cache and writes only what is new.

use std::fmt;

use async_trait::async_trait;
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use rlm_protocol::{ChatMessage, ModelClient, ModelRequest, ModelResponse, Result, Role, Usage};
use serde_json::{Map, Value, json};

use crate::ModelsError;
use crate::transport::{Exchange, HttpConfig, count, endpoint, http_client, missing_key};

/// Anthropic's public endpoint (without `/v1`, as Anthropic's SDKs take `ANTHROPIC_BASE_URL`).
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
/// The API version this client speaks.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// The variable that holds the key.
pub const ANTHROPIC_KEY_VARIABLE: &str = "ANTHROPIC_API_KEY";

/// Settings of an [`AnthropicClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnthropicConfig {
    pub http: HttpConfig,
    /// `max_tokens` of requests that set no output limit: the API requires one.
    pub default_max_tokens: u32,
    /// Whether requests carry `cache_control` breakpoints.
    pub prompt_caching: bool,
}

impl Default for AnthropicConfig {
    fn default() -> Self {
        Self { http: HttpConfig::new(ANTHROPIC_BASE_URL), default_max_tokens: 8192, prompt_caching: true }
    }
}

/// A [`ModelClient`] for Anthropic's Messages API.
#[derive(Clone)]
pub struct AnthropicClient {
    config: AnthropicConfig,
    url: Url,
    http: reqwest::Client,
}

impl fmt::Debug for AnthropicClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicClient").field("config", &self.config).finish_non_exhaustive()
    }
}

impl AnthropicClient {
    pub fn new(config: AnthropicConfig) -> Result<Self, ModelsError> {
        let url = endpoint(&config.http.base_url, "v1/messages")?;
        if config.http.key().is_some_and(|key| HeaderValue::from_str(key).is_err()) {
            return Err(ModelsError::InvalidApiKey);
        }
        let http = http_client(&config.http)?;
        Ok(Self { config, url, http })
    }

    pub fn config(&self) -> &AnthropicConfig {
        &self.config
    }

    /// The JSON body of `request` (whose model has no `anthropic:` prefix any more).
    pub fn request_body(&self, request: &ModelRequest) -> Value {
        let system: Vec<&str> =
            request.messages.iter().filter(|m| m.role == Role::System).map(|m| m.content.as_str()).collect();
        let turns: Vec<&ChatMessage> = request.messages.iter().filter(|m| m.role != Role::System).collect();
        let caching = self.config.prompt_caching;
        // The last message, and the one that was last in the previous turn (just before the latest assistant reply).
        let previous_end = turns.iter().rposition(|m| m.role == Role::Assistant).and_then(|i| i.checked_sub(1));
        let last = turns.len().checked_sub(1);
        let conversation = !system.is_empty() || turns.len() > 1;
        let messages: Vec<Value> = turns
            .iter()
            .enumerate()
            .map(|(index, message)| {
                let role = if message.role == Role::Assistant { "assistant" } else { "user" };
                let breakpoint = caching && conversation && (Some(index) == last || Some(index) == previous_end);
                json!({"role": role, "content": content(&message.content, breakpoint)})
            })
            .collect();
        let mut body = Map::new();
        body.insert("model".into(), json!(request.model));
        body.insert("max_tokens".into(), json!(request.max_output_tokens.unwrap_or(self.config.default_max_tokens)));
        if !system.is_empty() {
            body.insert("system".into(), content(&system.join("\n\n"), caching));
        }
        body.insert("messages".into(), Value::Array(messages));
        if let Some(temperature) = request.temperature {
            body.insert("temperature".into(), json!(temperature));
        }
        Value::Object(body)
    }
}

/// A text content block list, with a cache breakpoint when asked. Empty text blocks are refused by the API.
fn content(text: &str, breakpoint: bool) -> Value {
    let text = if text.is_empty() { "(empty)" } else { text };
    let mut block = json!({"type": "text", "text": text});
    if breakpoint {
        block["cache_control"] = json!({"type": "ephemeral"});
    }
    json!([block])
}

fn parse_response(body: &[u8], requested_model: &str) -> Result<ModelResponse, String> {
    let json: Value =
        serde_json::from_slice(body).map_err(|e| format!("malformed response: body is not JSON ({e})"))?;
    if json.get("type").and_then(Value::as_str) == Some("error") {
        let message = json.pointer("/error/message").and_then(Value::as_str).unwrap_or("unknown error");
        return Err(format!("the provider returned an error: {message}"));
    }
    let blocks = json.get("content").and_then(Value::as_array).ok_or("malformed response: no `content` array")?;
    let content: String = blocks
        .iter()
        .filter(|block| block.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|block| block.get("text").and_then(Value::as_str))
        .collect();
    let input = count(&json, "/usage/input_tokens");
    let read = count(&json, "/usage/cache_read_input_tokens");
    let written = count(&json, "/usage/cache_creation_input_tokens");
    // `input_tokens` counts only what came after the last cache breakpoint; the prompt is all three.
    let usage = Usage {
        prompt_tokens: input + read + written,
        completion_tokens: count(&json, "/usage/output_tokens"),
        cached_tokens: read,
        cache_write_tokens: written,
        calls: 1,
        ..Usage::default()
    };
    let model = json.get("model").and_then(Value::as_str).filter(|m| !m.is_empty()).unwrap_or(requested_model);
    Ok(ModelResponse { content, usage, model: model.to_owned() })
}

#[async_trait]
impl ModelClient for AnthropicClient {
    async fn complete(&self, request: ModelRequest) -> Result<ModelResponse> {
        let Some(key) = self.config.http.key() else {
            return Err(missing_key("Anthropic", ANTHROPIC_KEY_VARIABLE));
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", HeaderValue::from_str(key).map_err(|_| missing_key("Anthropic", "a valid key"))?);
        headers.insert("anthropic-version", HeaderValue::from_static(ANTHROPIC_VERSION));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let body = self.request_body(&request);
        let exchange = Exchange {
            provider: "Anthropic",
            key_variable: ANTHROPIC_KEY_VARIABLE,
            http: &self.http,
            config: &self.config.http,
            url: self.url.clone(),
            headers,
            body: &body,
            model: &request.model,
        };
        exchange.send(parse_response).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> AnthropicClient {
        AnthropicClient::new(AnthropicConfig::default()).unwrap()
    }

    fn request(messages: Vec<ChatMessage>) -> ModelRequest {
        ModelRequest {
            model: "claude-x".into(),
            messages: messages.into(),
            max_output_tokens: None,
            temperature: Some(0.0),
        }
    }

    fn breakpoints(body: &Value) -> Vec<String> {
        let mut found = Vec::new();
        if body.pointer("/system/0/cache_control").is_some() {
            found.push("system".to_owned());
        }
        for (i, message) in body["messages"].as_array().unwrap().iter().enumerate() {
            if message.pointer("/content/0/cache_control").is_some() {
                found.push(i.to_string());
            }
        }
        found
    }

    #[test]
    fn system_goes_to_the_top_and_max_tokens_is_always_sent() {
        let body = client().request_body(&request(vec![ChatMessage::system("be brief"), ChatMessage::user("hi")]));
        assert_eq!(body["system"][0]["text"], "be brief");
        assert_eq!(body["max_tokens"], 8192);
        assert_eq!(body["temperature"], 0.0);
        assert_eq!(body["messages"][0]["role"], "user");
        assert_eq!(body["messages"][0]["content"][0]["type"], "text");
        assert_eq!(body["messages"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn breakpoints_follow_the_growing_conversation() {
        let c = client();
        let turn1 = vec![ChatMessage::system("s"), ChatMessage::user("q")];
        assert_eq!(breakpoints(&c.request_body(&request(turn1.clone()))), ["system", "0"]);
        let mut turn2 = turn1;
        turn2.extend([ChatMessage::assistant("a1"), ChatMessage::user("o1")]);
        assert_eq!(breakpoints(&c.request_body(&request(turn2.clone()))), ["system", "0", "2"]);
        turn2.extend([ChatMessage::assistant("a2"), ChatMessage::user("o2")]);
        assert_eq!(breakpoints(&c.request_body(&request(turn2))), ["system", "2", "4"]);
        // A one-off sub-call has nothing to reuse: no breakpoints, no cache-write surcharge.
        assert!(breakpoints(&c.request_body(&request(vec![ChatMessage::user("q")]))).is_empty());
        let off = AnthropicClient::new(AnthropicConfig { prompt_caching: false, ..AnthropicConfig::default() });
        let body = off.unwrap().request_body(&request(vec![ChatMessage::system("s"), ChatMessage::user("q")]));
        assert!(breakpoints(&body).is_empty());
    }

    #[test]
    fn usage_counts_cache_reads_and_writes_in_the_prompt() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x-2025",
            "content":[{"type":"text","text":"Hello"},{"type":"text","text":" there"}],"stop_reason":"end_turn",
            "usage":{"input_tokens":10,"output_tokens":5,"cache_creation_input_tokens":20,"cache_read_input_tokens":300}}"#;
        let response = parse_response(body, "claude-x").unwrap();
        assert_eq!(response.content, "Hello there");
        assert_eq!(response.model, "claude-x-2025");
        assert_eq!(
            (response.usage.prompt_tokens, response.usage.cached_tokens, response.usage.cache_write_tokens),
            (330, 300, 20)
        );
        assert_eq!(response.usage.completion_tokens, 5);
        let error = br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: required"}}"#;
        assert!(parse_response(error, "m").unwrap_err().contains("max_tokens: required"));
    }
}
