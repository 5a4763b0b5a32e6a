//! OpenAI-compatible Chat Completions client.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER, USER_AGENT};
use reqwest::{StatusCode, Url};
use rlm_protocol::{ChatMessage, Error, ModelClient, ModelRequest, ModelResponse, Result, Usage};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::direct::{DirectHttp, Trouble};
use crate::retry::{Failure, RetryPolicy, parse_retry_after, with_retries};
use crate::{ModelsError, OpenAiConfig, TokenLimitField};

/// Longest excerpt of a non-JSON error body quoted in an error message.
const BODY_EXCERPT_CHARS: usize = 300;

/// A [`ModelClient`] for OpenAI-compatible `POST {base_url}/chat/completions` endpoints.
///
/// Cheap to share behind an `Arc`; all requests use one pooled HTTP client. A plain-`http` endpoint with no proxy
/// configured for it (a self-hosted server) is posted to on kept connections that the awaiting task drives itself.
#[derive(Clone)]
pub struct OpenAiClient {
    config: OpenAiConfig,
    endpoint: Url,
    /// The output-limit field for this endpoint, resolved once (resolving parses the base URL).
    limit_field: TokenLimitField,
    http: reqwest::Client,
    /// The direct way to a plain-`http` endpoint, and the headers it sends (the general client adds its own).
    direct: Option<Arc<(DirectHttp, HeaderMap)>>,
}

impl fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiClient").field("config", &self.config).finish_non_exhaustive()
    }
}

impl OpenAiClient {
    /// Build a client. Installs rustls' `ring` crypto provider as the process default if none is installed yet.
    pub fn new(config: OpenAiConfig) -> Result<Self, ModelsError> {
        let endpoint = chat_endpoint(&config.base_url)?;
        if let Some(key) = &config.api_key
            && HeaderValue::from_str(&format!("Bearer {}", key.expose())).is_err()
        {
            return Err(ModelsError::InvalidApiKey);
        }
        let http = crate::tls::client_builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("rlm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ModelsError::HttpClient)?;
        let limit_field = config.max_output_tokens_field.resolve(&config.base_url);
        let direct = DirectHttp::for_url(&endpoint, config.connect_timeout).map(|direct| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
            headers.insert(USER_AGENT, HeaderValue::from_static(concat!("rlm/", env!("CARGO_PKG_VERSION"))));
            if let Some(key) = &config.api_key
                && let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
            {
                value.set_sensitive(true);
                headers.insert(AUTHORIZATION, value);
            }
            Arc::new((direct, headers))
        });
        Ok(Self { config, endpoint, limit_field, http, direct })
    }

    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    /// The window of `model` as the server states it: vLLM, OpenRouter and LM Studio in `GET /models`, llama.cpp's
    /// server in `GET /props`. `None` when the server does not say (OpenAI, Ollama, llama-cpp-python) or cannot be
    /// reached; this never fails a run.
    pub async fn probe_context_window(&self, model: &str) -> Option<u64> {
        let base = self.config.base_url.trim_end_matches('/');
        let get = |url: String| async move {
            let mut builder = self.http.get(url).timeout(Duration::from_secs(5));
            if let Some(key) = &self.config.api_key {
                builder = builder.bearer_auth(key.expose());
            }
            let response = builder.send().await.ok()?.error_for_status().ok()?;
            response.json::<Value>().await.ok()
        };
        if let Some(models) = get(format!("{base}/models")).await {
            let entry = models
                .get("data")
                .and_then(Value::as_array)
                .and_then(|data| data.iter().find(|entry| entry.get("id").and_then(Value::as_str) == Some(model)));
            if let Some(window) = entry.and_then(crate::windows::window_in) {
                return Some(window);
            }
        }
        let origin = base.strip_suffix("/v1").unwrap_or(base);
        get(format!("{origin}/props")).await.as_ref().and_then(crate::windows::window_in)
    }

    /// The JSON body, serialised straight from the request's messages (a sub-call prompt of megabytes is copied
    /// once, into the body, and the retries share that buffer).
    fn request_body(&self, request: &ModelRequest) -> Result<Bytes> {
        let limit = |field: TokenLimitField| request.max_output_tokens.filter(|_| self.limit_field == field);
        let body = RequestBody {
            model: &request.model,
            messages: &request.messages,
            max_tokens: limit(TokenLimitField::MaxTokens),
            max_completion_tokens: limit(TokenLimitField::MaxCompletionTokens),
            temperature: request.temperature,
        };
        // Sized up front (text plus room for its escapes), so a big prompt is not copied again as the buffer grows.
        let text: usize = request.messages.iter().map(|message| message.content.len() + 32).sum();
        let mut buffer = Vec::with_capacity(text + text / 16 + request.model.len() + 128);
        serde_json::to_writer(&mut buffer, &body)
            .map_err(|err| Error::model(None, format!("cannot encode the request: {err}"), false))?;
        Ok(Bytes::from(buffer))
    }

    /// One HTTP attempt.
    async fn attempt(&self, body: &Bytes, requested_model: &str) -> Result<ModelResponse, Failure> {
        if let Some(direct) = &self.direct {
            let (direct, headers) = &**direct;
            let reply = tokio::time::timeout(self.config.request_timeout, direct.post(headers, body))
                .await
                .map_err(|_| self.timed_out())?
                .map_err(|trouble| self.direct_failure(trouble))?;
            // Redirects are followed by the general client, below (they are rare for an API, and may lead to https).
            if !reply.status.is_redirection() {
                return self.judge(reply.status, retry_after(&reply.headers), &reply.body, requested_model);
            }
        }
        let mut builder = self
            .http
            .post(self.endpoint.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body.clone());
        if let Some(key) = &self.config.api_key {
            builder = builder.bearer_auth(key.expose());
        }
        let response = builder.send().await.map_err(|e| self.transport_failure(&e))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let bytes = response.bytes().await.map_err(|e| self.transport_failure(&e))?;
        self.judge(status, retry_after, &bytes, requested_model)
    }

    /// What a complete response means: the answer, or a failure that says whether to retry.
    fn judge(
        &self,
        status: StatusCode,
        retry_after: Option<Duration>,
        body: &[u8],
        requested_model: &str,
    ) -> Result<ModelResponse, Failure> {
        if status.is_success() {
            return parse_success(body, requested_model).map_err(|message| Failure {
                status: Some(status.as_u16()),
                message,
                retryable: false,
                retry_after: None,
            });
        }
        let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
        Err(Failure {
            status: Some(status.as_u16()),
            message: self.status_message(status, body),
            retryable,
            retry_after,
        })
    }

    fn timed_out(&self) -> Failure {
        let message =
            format!("no complete response from {} within {:?}", self.config.base_url, self.config.request_timeout);
        Failure { status: None, message, retryable: true, retry_after: None }
    }

    fn direct_failure(&self, trouble: Trouble) -> Failure {
        let base = &self.config.base_url;
        let message = match trouble {
            Trouble::Connect(why) => format!("could not connect to {base}: {why}"),
            Trouble::Exchange(why) => format!("request to {base} failed: {why}"),
        };
        Failure { status: None, message, retryable: true, retry_after: None }
    }

    fn transport_failure(&self, err: &reqwest::Error) -> Failure {
        if err.is_timeout() {
            return self.timed_out();
        }
        let message = if err.is_connect() {
            format!("could not connect to {}: {}", self.config.base_url, error_chain(err))
        } else {
            format!("request to {} failed: {}", self.config.base_url, error_chain(err))
        };
        // Builder errors cannot get better by retrying; everything else here is a transport problem.
        Failure { status: None, message, retryable: !err.is_builder(), retry_after: None }
    }

    fn status_message(&self, status: StatusCode, body: &[u8]) -> String {
        let detail = provider_message(body);
        match status {
            StatusCode::UNAUTHORIZED if self.config.api_key.is_none() => {
                format!("the provider requires an API key but none is configured (set OPENAI_API_KEY): {detail}")
            }
            StatusCode::UNAUTHORIZED => format!("the API key was rejected: {detail}"),
            StatusCode::FORBIDDEN => format!("access denied for this API key or model: {detail}"),
            StatusCode::NOT_FOUND => {
                format!("not found at {} (check the base URL and model name): {detail}", self.endpoint)
            }
            StatusCode::TOO_MANY_REQUESTS => format!("rate limited: {detail}"),
            _ => detail,
        }
    }
}

#[async_trait]
impl ModelClient for OpenAiClient {
    async fn complete(&self, request: ModelRequest) -> Result<ModelResponse> {
        let body = self.request_body(&request)?;
        // The body holds the messages now; a sub-call prompt of megabytes need not stay in memory twice while the
        // model answers.
        let ModelRequest { model, .. } = request;
        let policy = RetryPolicy {
            max_retries: self.config.max_retries,
            initial_backoff: self.config.initial_backoff,
            max_backoff: self.config.max_backoff,
        };
        with_retries(policy, "openai", &model, || self.attempt(&body, &model)).await
    }
}

/// A chat-completions request body, borrowing the request's data.
#[derive(Serialize)]
struct RequestBody<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
}

/// `{base_url}/chat/completions`, validating the base URL.
fn chat_endpoint(base_url: &str) -> Result<Url, ModelsError> {
    let invalid = |reason: String| ModelsError::InvalidBaseUrl { url: base_url.to_owned(), reason };
    let base = Url::parse(base_url.trim()).map_err(|e| invalid(e.to_string()))?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(invalid(format!("scheme must be http or https, not {:?}", base.scheme())));
    }
    if base.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host".to_owned()));
    }
    if base.query().is_some() || base.fragment().is_some() {
        return Err(invalid("must not have a query or fragment".to_owned()));
    }
    let path = format!("{}/chat/completions", base.path().trim_end_matches('/'));
    let mut endpoint = base;
    endpoint.set_path(&path);
    Ok(endpoint)
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, SystemTime::now())
}

/// The provider's `error.message` (or similar), else an excerpt of the body.
pub(crate) fn provider_message(body: &[u8]) -> String {
    if let Ok(json) = serde_json::from_slice::<Value>(body) {
        let message = json
            .pointer("/error/message")
            .or_else(|| json.get("error").filter(|e| e.is_string()))
            .or_else(|| json.get("message"))
            .or_else(|| json.get("detail"))
            .and_then(Value::as_str);
        if let Some(message) = message {
            return message.to_owned();
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "empty response body".to_owned();
    }
    let mut excerpt: String = text.chars().take(BODY_EXCERPT_CHARS).collect();
    if excerpt.len() < text.len() {
        excerpt.push('…');
    }
    excerpt
}

fn parse_success(body: &[u8], requested_model: &str) -> Result<ModelResponse, String> {
    // Most responses have the usual shape: read straight into it, without a JSON tree of every field. Whatever it
    // does not cover (content parts, an error object, a number where a count belongs, ...) takes the general way,
    // which alone decides what such a response means.
    if let Ok(usual) = serde_json::from_slice::<UsualResponse>(body)
        && let Some(choice) = usual.choices.into_iter().next()
    {
        let usage = usual.usage.unwrap_or_default();
        return Ok(ModelResponse {
            content: choice.message.content.unwrap_or_default(),
            usage: Usage {
                prompt_tokens: usage.prompt_tokens.unwrap_or(0),
                completion_tokens: usage.completion_tokens.unwrap_or(0),
                cached_tokens: usage.prompt_tokens_details.and_then(|details| details.cached_tokens).unwrap_or(0),
                calls: 1,
                ..Usage::default()
            },
            model: usual.model.filter(|m| !m.is_empty()).unwrap_or_else(|| requested_model.to_owned()),
        });
    }
    parse_any_success(body, requested_model)
}

/// The usual shape of a chat-completions response (fields not named here are skipped).
#[derive(Deserialize)]
struct UsualResponse {
    model: Option<String>,
    choices: Vec<UsualChoice>,
    usage: Option<UsualUsage>,
}

#[derive(Deserialize)]
struct UsualChoice {
    message: UsualMessage,
}

#[derive(Deserialize)]
struct UsualMessage {
    content: Option<String>,
}

#[derive(Deserialize, Default)]
struct UsualUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<UsualTokenDetails>,
}

#[derive(Deserialize)]
struct UsualTokenDetails {
    cached_tokens: Option<u64>,
}

/// Any successful response body, read as a JSON tree.
fn parse_any_success(body: &[u8], requested_model: &str) -> Result<ModelResponse, String> {
    let json: Value = serde_json::from_slice(body)
        .map_err(|e| format!("malformed response: body is not JSON ({e}): {}", provider_message(body)))?;
    let Some(choice) = json.get("choices").and_then(Value::as_array).and_then(|c| c.first()) else {
        if let Some(message) = json.pointer("/error/message").and_then(Value::as_str) {
            return Err(format!("the provider returned an error: {message}"));
        }
        return Err("malformed response: no `choices[0]`".to_owned());
    };
    let message = choice.get("message").ok_or("malformed response: no `choices[0].message`")?;
    let content = match message.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        // Some providers return content parts.
        Some(Value::Array(parts)) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect(),
        Some(_) => return Err("malformed response: `choices[0].message.content` is not a string".to_owned()),
    };
    let usage = json.get("usage").filter(|u| u.is_object());
    let count = |pointer: &str| usage.and_then(|u| u.pointer(pointer)).and_then(Value::as_u64).unwrap_or(0);
    let usage = Usage {
        prompt_tokens: count("/prompt_tokens"),
        completion_tokens: count("/completion_tokens"),
        cached_tokens: count("/prompt_tokens_details/cached_tokens"),
        calls: 1,
        ..Usage::default()
    };
    let model = json.get("model").and_then(Value::as_str).filter(|m| !m.is_empty()).unwrap_or(requested_model);
    Ok(ModelResponse { content, usage, model: model.to_owned() })
}

/// `err` and its sources, joined by `: ` (skipping causes the message already contains).
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_joins_base_url() {
        let url = |base: &str| chat_endpoint(base).map(|u| u.to_string());
        assert_eq!(url("http://localhost:8000/v1").ok().as_deref(), Some("http://localhost:8000/v1/chat/completions"));
        assert_eq!(
            url("https://api.openai.com/v1/").ok().as_deref(),
            Some("https://api.openai.com/v1/chat/completions")
        );
        assert_eq!(url("http://host:1234").ok().as_deref(), Some("http://host:1234/chat/completions"));
        assert!(matches!(chat_endpoint("ftp://x/v1"), Err(ModelsError::InvalidBaseUrl { .. })));
        assert!(matches!(chat_endpoint("not a url"), Err(ModelsError::InvalidBaseUrl { .. })));
    }

    #[test]
    fn success_parsing() {
        let body = br#"{"model":"gpt-x","choices":[{"message":{"role":"assistant","content":null}}],
            "usage":{"prompt_tokens":7,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":2}}}"#;
        let response = parse_success(body, "alias");
        assert_eq!(
            response,
            Ok(ModelResponse {
                content: String::new(),
                usage: Usage { prompt_tokens: 7, completion_tokens: 3, cached_tokens: 2, calls: 1, ..Usage::default() },
                model: "gpt-x".into(),
            })
        );
        let no_usage = parse_success(br#"{"choices":[{"message":{"content":"hi"}}]}"#, "alias");
        assert_eq!(no_usage.map(|r| (r.content, r.usage.calls, r.model)), Ok(("hi".into(), 1, "alias".into())));
        assert!(parse_success(br#"{"choices":[]}"#, "m").is_err_and(|e| e.contains("choices[0]")));
        assert!(parse_success(br#"{"choices":[{}]}"#, "m").is_err_and(|e| e.contains("choices[0].message")));
        assert!(parse_success(b"<html>", "m").is_err_and(|e| e.contains("not JSON")));
    }

    #[test]
    fn the_usual_shape_reads_as_the_general_way_reads_it() {
        let bodies: [&[u8]; 14] = [
            br#"{"model":"gpt-x","choices":[{"message":{"role":"assistant","content":"hi \"there\"\n"}}],
                "usage":{"prompt_tokens":7,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":2}}}"#,
            br#"{"model":"","choices":[{"message":{"content":null}}],"usage":null}"#,
            br#"{"choices":[{"message":{}}],"usage":{"prompt_tokens":null,"prompt_tokens_details":null}}"#,
            br#"{"choices":[{"message":{"content":"a"}},{"message":{"content":"b"}}],"id":"x","created":1}"#,
            br#"{"choices":[{"message":{"content":[{"type":"text","text":"part 1, "},{"text":"part 2"}]}}]}"#,
            br#"{"choices":[{"message":{"content":5}}]}"#,
            br#"{"choices":[{"message":null}]}"#,
            br#"{"choices":[{"message":{"content":"a"}},7]}"#,
            br#"{"choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens":5.0,"completion_tokens":-1}}"#,
            br#"{"choices":[{"message":{"content":"a"}}],"usage":[1,2]}"#,
            br#"{"choices":[{"message":{"content":"a"}}],"model":7}"#,
            br#"{"choices":[],"error":{"message":"overloaded"}}"#,
            br#"{"model":"a","model":"b","choices":[{"message":{"content":"x"}}]}"#,
            br#"[1,2]"#,
        ];
        // The first four take the short way (else this test would compare the general way with itself).
        for body in &bodies[..4] {
            assert!(serde_json::from_slice::<UsualResponse>(body).is_ok(), "{}", String::from_utf8_lossy(body));
        }
        for body in bodies {
            assert_eq!(
                parse_success(body, "asked"),
                parse_any_success(body, "asked"),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn provider_messages() {
        assert_eq!(provider_message(br#"{"error":{"message":"bad key","type":"x"}}"#), "bad key");
        assert_eq!(provider_message(br#"{"error":"plain"}"#), "plain");
        assert_eq!(provider_message(b"  Bad Gateway \n"), "Bad Gateway");
        assert_eq!(provider_message(b""), "empty response body");
        assert!(provider_message("x".repeat(1000).as_bytes()).ends_with('…'));
    }
}
