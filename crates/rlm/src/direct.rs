use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use rlm_engine::EngineConfig;
use rlm_protocol::{ChatMessage, ModelClient, ModelRequest, SubCall, SubCallHost, SubCallResult};

/// Answers every sub-call with one plain model call (`rlm_query` included): for running snippets outside an RLM
/// run, as `rlm exec` does. Batches run concurrently, bounded like in a run.
#[derive(Debug)]
pub struct DirectHost {
    model: Arc<dyn ModelClient>,
    default_model: String,
    concurrency: usize,
    max_output_tokens: Option<u32>,
}

impl DirectHost {
    /// A host that answers sub-calls with `model`, with the sub-model, batch concurrency and output limit of `config`.
    pub fn new(model: Arc<dyn ModelClient>, config: &EngineConfig) -> Self {
        Self {
            model,
            default_model: config.models.sub_model().to_owned(),
            concurrency: config.limits.batch_concurrency.max(1),
            max_output_tokens: config.limits.max_output_tokens,
        }
    }
}

#[async_trait]
impl SubCallHost for DirectHost {
    async fn sub_calls(&self, calls: Vec<SubCall>) -> Vec<SubCallResult> {
        futures::stream::iter(calls)
            .map(|call| async move {
                let request = ModelRequest {
                    model: call.model.unwrap_or_else(|| self.default_model.clone()),
                    messages: vec![ChatMessage::user(call.prompt.as_str())].into(),
                    max_output_tokens: self.max_output_tokens,
                    temperature: None,
                };
                self.model.complete(request).await.map(|response| response.content).map_err(|err| err.to_string())
            })
            .buffered(self.concurrency)
            .collect()
            .await
    }
}

/// Answers every sub-call with an error saying that no model is configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoModelHost;

#[async_trait]
impl SubCallHost for NoModelHost {
    async fn sub_calls(&self, calls: Vec<SubCall>) -> Vec<SubCallResult> {
        calls.iter().map(|_| Err("no model is configured for sub-calls".to_owned())).collect()
    }
}
