//! One [`ModelClient`] over every provider: a request's model spec (`anthropic:claude-sonnet-4-5`, `gemini:...`,
//! `openai:...` or a bare name) picks the client, which gets the model name without the prefix.

use std::sync::Arc;

use async_trait::async_trait;
use rlm_protocol::{Error, ModelClient, ModelRequest, ModelResponse, Result};

use crate::ModelsError;
use crate::anthropic::{ANTHROPIC_KEY_VARIABLE, AnthropicClient, AnthropicConfig};
use crate::gemini::{GEMINI_KEY_VARIABLE, GeminiClient, GeminiConfig};
use crate::spec::{ModelSpec, Provider};

/// Endpoints and keys of the native providers (the OpenAI-compatible client is configured on its own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderSettings {
    pub anthropic: AnthropicConfig,
    pub gemini: GeminiConfig,
}

impl ProviderSettings {
    /// Whether the provider of `spec` has what it needs to be called; the error names the missing variable.
    pub fn check(&self, spec: &str) -> Result<(), ModelsError> {
        let missing = |provider: &str, variable: &str| {
            Err(ModelsError::MissingKey { provider: provider.to_owned(), variable: variable.to_owned() })
        };
        match ModelSpec::parse(spec)?.provider {
            Provider::Anthropic if self.anthropic.http.key().is_none() => missing("Anthropic", ANTHROPIC_KEY_VARIABLE),
            Provider::Gemini if self.gemini.http.key().is_none() => missing("Gemini", GEMINI_KEY_VARIABLE),
            _ => Ok(()),
        }
    }
}

/// Routes each request to its provider's client.
#[derive(Debug)]
pub struct Providers {
    openai: Arc<dyn ModelClient>,
    anthropic: AnthropicClient,
    gemini: GeminiClient,
    local: Option<Arc<dyn ModelClient>>,
}

impl Providers {
    /// `openai` serves bare names and `openai:` specs (it may itself route by model); `local` serves `local:` specs.
    pub fn new(
        openai: Arc<dyn ModelClient>,
        settings: ProviderSettings,
        local: Option<Arc<dyn ModelClient>>,
    ) -> Result<Self, ModelsError> {
        Ok(Self {
            openai,
            anthropic: AnthropicClient::new(settings.anthropic)?,
            gemini: GeminiClient::new(settings.gemini)?,
            local,
        })
    }
}

#[async_trait]
impl ModelClient for Providers {
    async fn complete(&self, request: ModelRequest) -> Result<ModelResponse> {
        let spec = ModelSpec::parse(&request.model).map_err(|e| Error::InvalidInput(e.to_string()))?;
        let provider = spec.provider;
        let model = spec.model.to_owned();
        let request = ModelRequest { model, ..request };
        match provider {
            Provider::OpenAi => self.openai.complete(request).await,
            Provider::Anthropic => self.anthropic.complete(request).await,
            Provider::Gemini => self.gemini.complete(request).await,
            Provider::Local => match &self.local {
                Some(local) => local.complete(request).await,
                None => Err(Error::InvalidInput(format!(
                    "{} is a local model, but this run loaded none (a run uses at most one local model, as its root \
                     model)",
                    request.model
                ))),
            },
        }
    }
}
