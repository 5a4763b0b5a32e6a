use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{ChatMessage, Result, Usage};

/// One chat-completion request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRequest {
    /// The model to ask, as the provider names it.
    pub model: String,
    /// The conversation so far, oldest first. Shared: a loop hands each call its history without copying it, and
    /// appends to it again once the call has let go of it (`Arc::make_mut`). Build one with `vec![...].into()`.
    pub messages: Arc<Vec<ChatMessage>>,
    /// Upper bound on generated tokens, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// Sampling temperature; `None` leaves it to the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
}

/// A model's answer to a [`ModelRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelResponse {
    /// The generated text.
    pub content: String,
    /// Tokens of this call.
    pub usage: Usage,
    /// The model name the provider reports (may differ from the requested alias).
    pub model: String,
}

/// A chat-completion provider. Implementations own transport, authentication and retries; the engine only sees
/// this trait, so recording, replaying, caching and other providers plug in here.
#[async_trait]
pub trait ModelClient: Send + Sync + std::fmt::Debug {
    /// One chat completion. `Err` after the provider's retries are used up, or at once for errors that retrying cannot
    /// fix.
    async fn complete(&self, request: ModelRequest) -> Result<ModelResponse>;
}
