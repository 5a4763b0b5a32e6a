//! Model providers for rlm.
//!
//! [`OpenAiClient`] implements [`rlm_protocol::ModelClient`] for any OpenAI-compatible Chat Completions endpoint
//! (OpenAI, vLLM, llama.cpp, Ollama, OpenRouter, …) with connection pooling, timeouts and retries with exponential
//! backoff, full jitter and `Retry-After` support.

mod config;
mod openai;
mod retry;
mod windows;

pub use config::{DEFAULT_BASE_URL, OpenAiConfig, TokenLimitField};
pub use openai::OpenAiClient;
pub use windows::known_context_window;

/// Errors constructing a model client. Errors of individual requests are [`rlm_protocol::Error::Model`].
#[derive(Debug, thiserror::Error)]
pub enum ModelsError {
    /// The configured base URL cannot be used.
    #[error("invalid base URL {url:?}: {reason}")]
    InvalidBaseUrl { url: String, reason: String },
    /// The API key contains characters that cannot be sent in an HTTP header.
    #[error("invalid API key: it contains characters that cannot be sent in an HTTP header")]
    InvalidApiKey,
    /// The HTTP client could not be built (for example, TLS could not be initialised).
    #[error("could not build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}
