use std::time::Duration;

use rlm_protocol::Secret;

/// The request field that carries the output-token limit. Providers disagree: OpenAI's reasoning models reject
/// `max_tokens`, while llama.cpp's server and older vLLM and Ollama releases silently ignore `max_completion_tokens`
/// (so output is never capped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum TokenLimitField {
    /// Chosen from the base URL: [`Self::MaxCompletionTokens`] for OpenAI and Azure OpenAI, [`Self::MaxTokens`] for
    /// every other server (vLLM, Ollama, llama.cpp, LM Studio, OpenRouter, ...).
    #[default]
    Auto,
    /// `max_tokens`: understood by vLLM, llama.cpp, Ollama's OpenAI endpoint and OpenAI's non-reasoning models.
    MaxTokens,
    /// `max_completion_tokens`: OpenAI's current field, required by its reasoning models.
    MaxCompletionTokens,
}

impl TokenLimitField {
    /// The field to send to the server at `base_url`.
    pub fn resolve(self, base_url: &str) -> Self {
        match self {
            Self::Auto => {
                let host = reqwest::Url::parse(base_url.trim())
                    .ok()
                    .and_then(|url| url.host_str().map(str::to_ascii_lowercase))
                    .unwrap_or_default();
                let openai = host == "api.openai.com" || host.ends_with(".openai.azure.com");
                if openai { Self::MaxCompletionTokens } else { Self::MaxTokens }
            }
            chosen => chosen,
        }
    }

    /// The JSON field name (of the resolved field; `Auto` reads as the most widely understood one).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto | Self::MaxTokens => "max_tokens",
            Self::MaxCompletionTokens => "max_completion_tokens",
        }
    }
}

/// Settings of an [`crate::OpenAiClient`].
///
/// `Debug` never shows the API key (a [`Secret`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAiConfig {
    /// Base URL including the version prefix, e.g. `https://api.openai.com/v1` or `http://localhost:8000/v1`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer <key>` when set.
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
    /// Which field carries [`rlm_protocol::ModelRequest::max_output_tokens`]; see [`TokenLimitField::resolve`].
    pub max_output_tokens_field: TokenLimitField,
}

/// OpenAI's public endpoint.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

impl Default for OpenAiConfig {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            api_key: None,
            request_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            max_retries: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_output_tokens_field: TokenLimitField::Auto,
        }
    }
}

impl OpenAiConfig {
    /// Defaults for the given base URL, without an API key.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self { base_url: base_url.into(), ..Self::default() }
    }

    /// Set the API key.
    pub fn with_api_key(mut self, api_key: impl Into<String>) -> Self {
        self.api_key = Some(Secret::new(api_key.into()));
        self
    }

    /// Defaults, with the base URL from `OPENAI_BASE_URL` (else `LLM_BASE_URL`, else [`DEFAULT_BASE_URL`]) and the
    /// key from `OPENAI_API_KEY` (else `LLM_API_KEY`), as `lookup` gives them. Empty variables count as unset. The
    /// process environment: [`OpenAiConfig::from_env`].
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |primary: &str, fallback: &str| {
            [primary, fallback].into_iter().filter_map(&lookup).map(|v| v.trim().to_owned()).find(|v| !v.is_empty())
        };
        Self {
            base_url: get("OPENAI_BASE_URL", "LLM_BASE_URL").unwrap_or_else(|| DEFAULT_BASE_URL.to_owned()),
            api_key: get("OPENAI_API_KEY", "LLM_API_KEY").map(Secret::new),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> OpenAiConfig {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        OpenAiConfig::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn env_prefers_openai_variables_then_llm_then_default() {
        let none = from(&[]);
        assert_eq!(none.base_url, DEFAULT_BASE_URL);
        assert_eq!(none.api_key, None);

        let llm = from(&[("LLM_BASE_URL", "http://localhost:8000/v1"), ("LLM_API_KEY", "k1"), ("OPENAI_API_KEY", "")]);
        assert_eq!(llm.base_url, "http://localhost:8000/v1");
        assert_eq!(llm.api_key.as_ref().map(Secret::expose).map(String::as_str), Some("k1"));

        let openai = from(&[
            ("OPENAI_BASE_URL", "https://example.com/v1"),
            ("OPENAI_API_KEY", "k2"),
            ("LLM_BASE_URL", "http://other/v1"),
            ("LLM_API_KEY", "k1"),
        ]);
        assert_eq!(openai.base_url, "https://example.com/v1");
        assert_eq!(openai.api_key.as_ref().map(Secret::expose).map(String::as_str), Some("k2"));
        assert_eq!(openai.max_retries, 5);
        assert_eq!(openai.request_timeout, Duration::from_secs(300));
    }

    #[test]
    fn token_limit_field_per_provider() {
        let auto = |url: &str| TokenLimitField::Auto.resolve(url);
        assert_eq!(auto("https://api.openai.com/v1"), TokenLimitField::MaxCompletionTokens);
        assert_eq!(auto("https://my-resource.openai.azure.com/openai/v1"), TokenLimitField::MaxCompletionTokens);
        // vLLM, llama.cpp, Ollama, LM Studio and OpenRouter take `max_tokens`.
        for url in [
            "http://localhost:8000/v1",
            "http://127.0.0.1:8080/v1",
            "http://localhost:11434/v1",
            "http://localhost:1234/v1",
            "https://openrouter.ai/api/v1",
        ] {
            assert_eq!(auto(url), TokenLimitField::MaxTokens, "{url}");
            assert_eq!(auto(url).as_str(), "max_tokens");
        }
        assert_eq!(TokenLimitField::MaxTokens.resolve("https://api.openai.com/v1"), TokenLimitField::MaxTokens);
        assert_eq!(
            TokenLimitField::MaxCompletionTokens.resolve("http://localhost:8000/v1").as_str(),
            "max_completion_tokens"
        );
    }

    #[test]
    fn debug_redacts_the_key() {
        let shown = format!("{:?}", OpenAiConfig::default().with_api_key("sk-secret-123"));
        assert!(!shown.contains("sk-secret-123"));
        assert!(shown.contains("api_key: Some(<redacted>)"), "{shown}");
        assert!(format!("{:?}", OpenAiConfig::default()).contains("api_key: None"));
    }
}
