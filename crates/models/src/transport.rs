//! What the native provider clients share: HTTP settings, one JSON POST with retries (429, 5xx including
//! Anthropic's 529, timeouts and connection errors, honouring `Retry-After`), and error messages that keep the
//! provider's own words.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use rlm_protocol::{Error, ModelResponse, Result, Secret};
use serde_json::Value;

use crate::ModelsError;
use crate::openai::{error_chain, provider_message};
use crate::retry::{Failure, RetryPolicy, parse_retry_after, with_retries};

/// Endpoint, key, timeouts and retries of a native provider client. `Debug` never shows the key (a [`Secret`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// The provider's base URL (for Anthropic and Gemini: without a version path, as their SDKs take it).
    pub base_url: String,
    /// The API key.
    pub api_key: Option<Secret<String>>,
    /// Limit for one whole HTTP attempt, including reading the response.
    pub request_timeout: Duration,
    /// Limit for establishing a connection.
    pub connect_timeout: Duration,
    /// Retries after the first attempt for 429, 5xx, timeouts and connection errors.
    pub max_retries: u32,
    /// Backoff ceiling of the first retry; it doubles with every retry.
    pub initial_backoff: Duration,
    /// Upper bound of any wait between attempts, including waits requested by `Retry-After`.
    pub max_backoff: Duration,
}

impl HttpConfig {
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            request_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            max_retries: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }

    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(Secret::new(key.into()));
        self
    }

    /// The key, unless it is unset or blank.
    pub(crate) fn key(&self) -> Option<&str> {
        self.api_key.as_ref().map(|key| key.expose().trim()).filter(|key| !key.is_empty())
    }
}

/// A validated base URL (http or https, a host, no query) with `path` appended.
pub(crate) fn endpoint(base_url: &str, path: &str) -> Result<Url, ModelsError> {
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
    let joined = format!("{}/{}", base.path().trim_end_matches('/'), path.trim_start_matches('/'));
    let mut url = base;
    url.set_path(&joined);
    Ok(url)
}

pub(crate) fn http_client(config: &HttpConfig) -> Result<reqwest::Client, ModelsError> {
    crate::tls::client_builder()
        .timeout(config.request_timeout)
        .connect_timeout(config.connect_timeout)
        .user_agent(concat!("rlm/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(ModelsError::HttpClient)
}

/// One provider's way of talking: how a request is sent and how answers and errors read.
pub(crate) struct Exchange<'a> {
    pub provider: &'static str,
    /// The variable that holds the provider's key, for error messages.
    pub key_variable: &'static str,
    pub http: &'a reqwest::Client,
    pub config: &'a HttpConfig,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: &'a Value,
    pub model: &'a str,
}

impl Exchange<'_> {
    /// Posts the body until it succeeds, fails for good, or the retries are used up.
    pub async fn send(&self, parse: impl Fn(&[u8], &str) -> Result<ModelResponse, String>) -> Result<ModelResponse> {
        let policy = RetryPolicy {
            max_retries: self.config.max_retries,
            initial_backoff: self.config.initial_backoff,
            max_backoff: self.config.max_backoff,
        };
        with_retries(policy, self.provider, self.model, || self.attempt(&parse)).await
    }

    async fn attempt(
        &self,
        parse: &impl Fn(&[u8], &str) -> Result<ModelResponse, String>,
    ) -> Result<ModelResponse, Failure> {
        let request = self.http.post(self.url.clone()).headers(self.headers.clone()).json(self.body);
        let response = request.send().await.map_err(|e| self.transport_failure(&e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, SystemTime::now()));
        let bytes = response.bytes().await.map_err(|e| self.transport_failure(&e))?;
        if status.is_success() {
            return parse(&bytes, self.model).map_err(|message| Failure {
                status: Some(status.as_u16()),
                message: format!("{}: {message}", self.provider),
                retryable: false,
                retry_after: None,
            });
        }
        Err(Failure {
            status: Some(status.as_u16()),
            message: self.status_message(status, &bytes),
            retryable: status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error(),
            retry_after,
        })
    }

    fn transport_failure(&self, err: &reqwest::Error) -> Failure {
        let base = &self.config.base_url;
        let message = if err.is_timeout() {
            format!("no complete response from {base} within {:?}", self.config.request_timeout)
        } else if err.is_connect() {
            format!("could not connect to {base}: {}", error_chain(err))
        } else {
            format!("request to {base} failed: {}", error_chain(err))
        };
        Failure { status: None, message, retryable: !err.is_builder(), retry_after: None }
    }

    fn status_message(&self, status: StatusCode, body: &[u8]) -> String {
        let detail = provider_message(body);
        let provider = self.provider;
        match status {
            StatusCode::UNAUTHORIZED => {
                format!("{provider} rejected the API key (check {}): {detail}", self.key_variable)
            }
            StatusCode::FORBIDDEN => format!("{provider} denied access for this API key or model: {detail}"),
            StatusCode::NOT_FOUND => {
                format!("{provider}: not found at {} (check the base URL and model name): {detail}", self.url)
            }
            StatusCode::TOO_MANY_REQUESTS => format!("{provider} rate limited the request: {detail}"),
            _ if status.as_u16() == 529 => format!("{provider} is overloaded: {detail}"),
            _ => format!("{provider}: {detail}"),
        }
    }
}

/// The error a request gets when the provider's key is not configured.
pub(crate) fn missing_key(provider: &str, variable: &str) -> Error {
    Error::model(None, format!("no API key for {provider}: set {variable}"), false)
}

/// A `u64` at `pointer` of `json`, 0 when absent.
pub(crate) fn count(json: &Value, pointer: &str) -> u64 {
    json.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_join_the_base_url_and_reject_bad_ones() {
        let url = |base: &str| endpoint(base, "v1/messages").map(|u| u.to_string());
        assert_eq!(url("https://api.anthropic.com").ok().as_deref(), Some("https://api.anthropic.com/v1/messages"));
        assert_eq!(url("http://127.0.0.1:9/proxy/").ok().as_deref(), Some("http://127.0.0.1:9/proxy/v1/messages"));
        assert!(url("ftp://x").is_err());
        assert!(url("http://x/?a=b").is_err());
    }

    #[test]
    fn debug_redacts_the_key() {
        let shown = format!("{:?}", HttpConfig::new("https://x").with_api_key("sk-ant-secret"));
        assert!(!shown.contains("sk-ant-secret"), "{shown}");
    }
}
