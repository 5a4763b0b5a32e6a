//! Model providers for rlm.
//!
//! [`OpenAiClient`] implements [`rlm_protocol::ModelClient`] for any OpenAI-compatible Chat Completions endpoint
//! (OpenAI, vLLM, llama.cpp, Ollama, OpenRouter, …) with connection pooling, timeouts and retries with exponential
//! backoff, full jitter and `Retry-After` support. [`AnthropicClient`] and [`GeminiClient`] speak those providers'
//! native APIs; [`Providers`] routes each request by its model spec (`anthropic:claude-sonnet-4-5`, see
//! [`ModelSpec`]). [`layers`] wraps any client with pricing, a response cache, record/replay and a dollar budget.

pub mod anthropic;
mod config;
mod direct;
mod env;
pub mod gemini;
pub mod layers;
pub mod local;
mod openai;
mod prices;
mod providers;
mod retry;
mod spec;
mod tls;
mod transport;
mod windows;

pub use anthropic::{AnthropicClient, AnthropicConfig};
pub use config::{DEFAULT_BASE_URL, OpenAiConfig, TokenLimitField};
pub use gemini::{GeminiClient, GeminiConfig};
pub use openai::OpenAiClient;
pub use prices::{ModelPrice, Prices};
pub use providers::{ProviderSettings, Providers};
pub use spec::{ModelSpec, Provider, split_spec};
pub use transport::HttpConfig;
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
    /// A `local:` spec names no known model.
    #[error("unknown local model {name:?}; known models: {known} (or give a path: local:/path/to/model.gguf)")]
    UnknownLocalModel { name: String, known: String },
    /// A known local model has not been downloaded; runs never download on their own.
    #[error("the local model {name} is not downloaded (expected at {path}); fetch it once with: rlm model pull {name}")]
    NotCached { name: String, path: std::path::PathBuf },
    /// No source yielded the model's file with the pinned hash.
    #[error("could not fetch {name}: {reasons}")]
    PullFailed { name: String, reasons: String },
    /// A file of the model cache could not be read or written.
    #[error("{path}: {reason}")]
    Io { path: std::path::PathBuf, reason: String },
    /// A model spec names a provider rlm does not speak.
    #[error("unknown model provider {prefix:?}; known providers: {known} (a bare model name is OpenAI-compatible)")]
    UnknownProvider { prefix: String, known: String },
    /// A model spec cannot be used as given.
    #[error("invalid model spec {spec:?}: {reason}")]
    InvalidSpec { spec: String, reason: String },
    /// A provider's key is not configured.
    #[error("no API key for {provider}: set {variable}")]
    MissingKey { provider: String, variable: String },
    /// A price table could not be read.
    #[error("{0}")]
    Prices(String),
}
