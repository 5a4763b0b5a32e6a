//! Layers over any [`rlm_protocol::ModelClient`]: pricing, a response cache on disk, recording and replaying
//! exchanges, and a budget in US dollars. Each wraps a client and is one itself, so the engine never knows.

mod budget;
mod cache;
mod priced;
mod record;

pub use budget::Budget;
pub use cache::{CacheMode, ResponseCache, cache_key};
pub use priced::Priced;
pub use record::{Recorder, Replayer};

use rlm_protocol::ModelRequest;
use serde_json::{Value, json};

use crate::spec::split_spec;

/// What identifies a request: provider, model, messages and parameters, in a stable JSON form.
pub(crate) fn canonical_request(request: &ModelRequest) -> Value {
    let (provider, model) = split_spec(&request.model);
    json!({
        "provider": provider.prefix(),
        "model": model,
        "messages": request.messages,
        "max_output_tokens": request.max_output_tokens,
        "temperature": request.temperature,
    })
}

/// A short description of a request for error messages: model, message count and the start of the last message.
pub(crate) fn describe(request: &ModelRequest) -> String {
    let last = request.messages.last().map(|m| m.content.as_str()).unwrap_or_default();
    let mut excerpt: String = last.chars().take(80).collect();
    if excerpt.len() < last.len() {
        excerpt.push('…');
    }
    format!("model {}, {} message(s), last message {:?}", request.model, request.messages.len(), excerpt)
}

/// A client that answers every call with the same usage, under the requested model name.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct FixedUsage(pub rlm_protocol::Usage);

#[cfg(test)]
#[async_trait::async_trait]
impl rlm_protocol::ModelClient for FixedUsage {
    async fn complete(&self, request: ModelRequest) -> rlm_protocol::Result<rlm_protocol::ModelResponse> {
        Ok(rlm_protocol::ModelResponse { content: "ok".into(), usage: self.0, model: request.model })
    }
}
