//! Google's Gemini API, natively: `POST {base}/v1beta/models/{model}:generateContent` with `x-goog-api-key`.
//! Gemini caches repeated prompt prefixes on its own (implicit caching); the tokens it served from the cache come
//! back as `cachedContentTokenCount`.

use std::fmt;

use async_trait::async_trait;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use rlm_protocol::{ModelClient, ModelRequest, ModelResponse, Result, Role, Usage};
use serde_json::{Map, Value, json};

use crate::ModelsError;
use crate::transport::{Exchange, HttpConfig, count, endpoint, http_client, missing_key};

/// Google's public endpoint (without the version path).
pub const GEMINI_BASE_URL: &str = "https://generativelanguage.googleapis.com";
/// The variable that holds the key.
pub const GEMINI_KEY_VARIABLE: &str = "GEMINI_API_KEY";

/// Settings of a [`GeminiClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeminiConfig {
    pub http: HttpConfig,
}

impl Default for GeminiConfig {
    fn default() -> Self {
        Self { http: HttpConfig::new(GEMINI_BASE_URL) }
    }
}

/// A [`ModelClient`] for the Gemini `generateContent` API.
#[derive(Clone)]
pub struct GeminiClient {
    config: GeminiConfig,
    http: reqwest::Client,
}

impl fmt::Debug for GeminiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeminiClient").field("config", &self.config).finish_non_exhaustive()
    }
}

impl GeminiClient {
    pub fn new(config: GeminiConfig) -> Result<Self, ModelsError> {
        endpoint(&config.http.base_url, "v1beta")?;
        if config.http.key().is_some_and(|key| HeaderValue::from_str(key).is_err()) {
            return Err(ModelsError::InvalidApiKey);
        }
        let http = http_client(&config.http)?;
        Ok(Self { config, http })
    }

    pub fn config(&self) -> &GeminiConfig {
        &self.config
    }

    /// The JSON body of `request`: turns as `contents` (the assistant's role is `model`), system messages as
    /// `systemInstruction`, limits in `generationConfig`.
    pub fn request_body(request: &ModelRequest) -> Value {
        let text_parts = |text: &str| json!([{"text": text}]);
        let system: Vec<&str> =
            request.messages.iter().filter(|m| m.role == Role::System).map(|m| m.content.as_str()).collect();
        let contents: Vec<Value> = request
            .messages
            .iter()
            .filter(|m| m.role != Role::System)
            .map(|m| {
                let role = if m.role == Role::Assistant { "model" } else { "user" };
                json!({"role": role, "parts": text_parts(&m.content)})
            })
            .collect();
        let mut body = Map::new();
        body.insert("contents".into(), Value::Array(contents));
        if !system.is_empty() {
            body.insert("systemInstruction".into(), json!({"parts": text_parts(&system.join("\n\n"))}));
        }
        let mut generation = Map::new();
        if let Some(limit) = request.max_output_tokens {
            generation.insert("maxOutputTokens".into(), json!(limit));
        }
        if let Some(temperature) = request.temperature {
            generation.insert("temperature".into(), json!(temperature));
        }
        if !generation.is_empty() {
            body.insert("generationConfig".into(), Value::Object(generation));
        }
        Value::Object(body)
    }
}

fn parse_response(body: &[u8], requested_model: &str) -> Result<ModelResponse, String> {
    let json: Value =
        serde_json::from_slice(body).map_err(|e| format!("malformed response: body is not JSON ({e})"))?;
    let Some(candidate) = json.get("candidates").and_then(Value::as_array).and_then(|c| c.first()) else {
        if let Some(reason) = json.pointer("/promptFeedback/blockReason").and_then(Value::as_str) {
            return Err(format!("the prompt was blocked ({reason})"));
        }
        if let Some(message) = json.pointer("/error/message").and_then(Value::as_str) {
            return Err(format!("the provider returned an error: {message}"));
        }
        return Err("malformed response: no `candidates[0]`".to_owned());
    };
    let parts = candidate.pointer("/content/parts").and_then(Value::as_array);
    // Thinking models may return their thoughts as parts marked `thought`; only the answer counts.
    let content: String = parts
        .into_iter()
        .flatten()
        .filter(|part| !part.get("thought").and_then(Value::as_bool).unwrap_or(false))
        .filter_map(|part| part.get("text").and_then(Value::as_str))
        .collect();
    if parts.is_none()
        && let Some(reason) = candidate.get("finishReason").and_then(Value::as_str).filter(|r| *r != "STOP")
    {
        return Err(format!("the model returned no content (finish reason {reason})"));
    }
    let usage = Usage {
        prompt_tokens: count(&json, "/usageMetadata/promptTokenCount"),
        // Thoughts are billed as output.
        completion_tokens: count(&json, "/usageMetadata/candidatesTokenCount")
            + count(&json, "/usageMetadata/thoughtsTokenCount"),
        cached_tokens: count(&json, "/usageMetadata/cachedContentTokenCount"),
        calls: 1,
        ..Usage::default()
    };
    let model = json.get("modelVersion").and_then(Value::as_str).filter(|m| !m.is_empty()).unwrap_or(requested_model);
    Ok(ModelResponse { content, usage, model: model.to_owned() })
}

#[async_trait]
impl ModelClient for GeminiClient {
    async fn complete(&self, request: ModelRequest) -> Result<ModelResponse> {
        let Some(key) = self.config.http.key() else {
            return Err(missing_key("Gemini", GEMINI_KEY_VARIABLE));
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-goog-api-key", HeaderValue::from_str(key).map_err(|_| missing_key("Gemini", "a valid key"))?);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let model = request.model.strip_prefix("models/").unwrap_or(&request.model);
        let url = endpoint(&self.config.http.base_url, &format!("v1beta/models/{model}:generateContent"))
            .map_err(|e| rlm_protocol::Error::InvalidInput(e.to_string()))?;
        let body = Self::request_body(&request);
        let exchange = Exchange {
            provider: "Gemini",
            key_variable: GEMINI_KEY_VARIABLE,
            http: &self.http,
            config: &self.config.http,
            url,
            headers,
            body: &body,
            model: &request.model,
        };
        exchange.send(parse_response).await
    }
}

#[cfg(test)]
mod tests {
    use rlm_protocol::ChatMessage;

    use super::*;

    #[test]
    fn roles_map_to_contents_and_system_instruction() {
        let request = ModelRequest {
            model: "gemini-2.5-flash".into(),
            messages: vec![ChatMessage::system("sys"), ChatMessage::user("q"), ChatMessage::assistant("a")].into(),
            max_output_tokens: Some(100),
            temperature: None,
        };
        let body = GeminiClient::request_body(&request);
        assert_eq!(body["systemInstruction"]["parts"][0]["text"], "sys");
        assert_eq!(body["contents"][0]["role"], "user");
        assert_eq!(body["contents"][1]["role"], "model");
        assert_eq!(body["contents"][1]["parts"][0]["text"], "a");
        assert_eq!(body["generationConfig"]["maxOutputTokens"], 100);
        assert!(body["generationConfig"].get("temperature").is_none());
    }

    #[test]
    fn usage_includes_cached_and_thought_tokens() {
        let body = br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"mull","thought":true},{"text":"42"}]},
            "finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":1000,"candidatesTokenCount":3,
            "thoughtsTokenCount":7,"cachedContentTokenCount":800,"totalTokenCount":1010},"modelVersion":"gemini-2.5-flash-001"}"#;
        let response = parse_response(body, "gemini-2.5-flash").unwrap();
        assert_eq!(response.content, "42");
        assert_eq!((response.usage.prompt_tokens, response.usage.completion_tokens), (1000, 10));
        assert_eq!(response.usage.cached_tokens, 800);
        assert_eq!(response.model, "gemini-2.5-flash-001");
        let blocked = br#"{"promptFeedback":{"blockReason":"SAFETY"}}"#;
        assert!(parse_response(blocked, "m").unwrap_err().contains("SAFETY"));
    }
}
