//! Serves the sub-calls that REPL code makes: plain model calls for `llm_query*`, child runs for `rlm_query*`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use async_trait::async_trait;
use chrono::Utc;
use futures::StreamExt;
use rlm_protocol::{
    ChatMessage, Context, EventBody, FinishedBy, LimitKind, ModelRequest, SubCall, SubCallHost, SubCallKind,
    SubCallRecord, SubCallResult, Usage,
};
use uuid::Uuid;

use crate::EngineInner;
use crate::run::{CHILD_QUERY, Scope, Tree, cancellable, run_one, with_deadline, writing_trace_meanwhile};

/// The [`SubCallHost`] of one run: sub-calls are charged to the run's tree and recorded under the run.
pub(crate) struct TreeHost {
    pub engine: Arc<EngineInner>,
    pub tree: Arc<Tree>,
    pub scope: Arc<Scope>,
    /// The context's text with whitespace collapsed, when the context is a string: to tell `llm_query` prompts
    /// that carry some of the data from prompts that carry none.
    pub grounding: Option<Arc<str>>,
}

/// `text` with every run of whitespace collapsed to one space.
pub(crate) fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `prompt` quotes some of `context` (both whitespace-collapsed): a few evenly spaced 32-character windows
/// of the prompt are looked up in the context.
pub(crate) fn quotes_context(prompt: &str, context: &str) -> bool {
    const WINDOW: usize = 32;
    const SAMPLES: usize = 12;
    let chars: Vec<(usize, char)> = prompt.char_indices().collect();
    if chars.len() < WINDOW {
        return !prompt.trim().is_empty() && context.contains(prompt.trim());
    }
    let last_start = chars.len() - WINDOW;
    (0..SAMPLES).any(|i| {
        let start = last_start * i / (SAMPLES - 1);
        let from = chars[start].0;
        let to = chars.get(start + WINDOW).map_or(prompt.len(), |(index, _)| *index);
        context.contains(&prompt[from..to])
    })
}

struct BatchSlot {
    batch_id: Option<Uuid>,
    index: u32,
    size: u32,
}

#[async_trait]
impl SubCallHost for TreeHost {
    async fn sub_calls(&self, calls: Vec<SubCall>) -> Vec<SubCallResult> {
        let size = u32::try_from(calls.len()).unwrap_or(u32::MAX);
        let batch_id = (calls.len() > 1).then(Uuid::now_v7);
        let concurrency = self.engine.config.limits.batch_concurrency.max(1);
        futures::stream::iter(calls.into_iter().enumerate())
            .map(|(index, call)| {
                let slot = BatchSlot { batch_id, index: u32::try_from(index).unwrap_or(u32::MAX), size };
                self.one(call, slot)
            })
            .buffered(concurrency)
            .collect()
            .await
    }
}

impl TreeHost {
    async fn one(&self, call: SubCall, slot: BatchSlot) -> SubCallResult {
        let limits = &self.engine.config.limits;
        if self.tree.cancel.is_cancelled() {
            return Err("cancelled".to_owned());
        }
        let issued = self.tree.sub_calls.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(max) = limits.max_sub_calls.filter(|max| issued > *max) {
            self.tree.mark_exhausted(LimitKind::MaxSubCalls);
            return Err(format!("the sub-call budget of {max} calls is used up; finish with what you have"));
        }
        if let Some(limit) = self.tree.limit_reached(&self.engine) {
            return Err(format!("{} has been reached; finish with what you have", limit.describe()));
        }
        self.scope.count_sub_call();

        let event_id = Uuid::now_v7();
        let started_at = Utc::now();
        let started = Instant::now();
        let can_recurse = call.kind == SubCallKind::Rlm && self.scope.depth < limits.max_depth;
        let (model, result, usage, child_run_id) =
            if can_recurse { self.child_run(&call, event_id).await } else { self.model_call(&call).await };
        if let (Some(context), Ok(answer)) = (&self.grounding, &result)
            && !can_recurse
            && !quotes_context(&collapse_whitespace(&call.prompt), context)
        {
            self.scope.record_ungrounded(answer);
        }
        let (response, error) = match &result {
            Ok(text) => (Some(text.clone()), None),
            Err(message) => (None, Some(message.clone())),
        };
        let record = SubCallRecord {
            kind: call.kind,
            model,
            prompt: call.prompt,
            response,
            error,
            usage,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            batch_id: slot.batch_id,
            batch_index: slot.index,
            batch_size: slot.size,
            child_run_id,
        };
        self.tree.trace.record(&self.scope.event_with_id(event_id, started_at, EventBody::SubCall(record)));
        result
    }

    async fn model_call(&self, call: &SubCall) -> (String, SubCallResult, Usage, Option<Uuid>) {
        let model = call.model.clone().unwrap_or_else(|| self.engine.config.models.sub_model().to_owned());
        let request = ModelRequest {
            model: model.clone(),
            messages: vec![ChatMessage::user(call.prompt.as_str())].into(),
            max_output_tokens: self.engine.config.max_output_tokens(self.engine.config.prompt.profile.resolve(&model)),
            temperature: self.engine.config.temperature,
        };
        let call = writing_trace_meanwhile(self.tree.trace.as_ref(), self.tree.model.complete(request));
        let call = with_deadline(self.tree.work_deadline, call);
        match cancellable(&self.tree.cancel, call).await {
            None => (model, Err("cancelled".to_owned()), Usage::default(), None),
            Some(None) => (model, Err("the time limit was reached".to_owned()), Usage::default(), None),
            Some(Some(Err(rlm_protocol::Error::Budget(reason)))) => {
                self.tree.mark_exhausted(LimitKind::MaxCost);
                (model, Err(format!("{reason}; finish with what you have")), Usage::default(), None)
            }
            Some(Some(Err(err))) => (model, Err(err.to_string()), Usage::default(), None),
            Some(Some(Ok(response))) => {
                self.scope.add_usage(&self.tree, &model, response.usage);
                (model, Ok(response.content), response.usage, None)
            }
        }
    }

    async fn child_run(&self, call: &SubCall, event_id: Uuid) -> (String, SubCallResult, Usage, Option<Uuid>) {
        let scope = Arc::new(self.scope.child(event_id));
        let model = call.model.clone().unwrap_or_else(|| self.engine.config.models.loop_model(scope.depth).to_owned());
        let child = run_one(
            self.engine.clone(),
            self.tree.clone(),
            scope,
            Context::Text(call.prompt.to_string()),
            CHILD_QUERY,
            Some(model.clone()),
            None,
        );
        let result = Box::pin(child).await;
        let answer = match (result.answer, result.finished_by) {
            (Some(answer), _) => Ok(answer),
            (None, FinishedBy::Cancelled) => Err("cancelled".to_owned()),
            (None, _) => Err(result.error.unwrap_or_else(|| "the child RLM gave no answer".to_owned())),
        };
        (model, answer, result.usage.total, Some(result.run_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_quoting_the_context_are_told_apart_from_bare_questions() {
        let context = collapse_whitespace(
            "The grass is green. The sky is blue.\n One of the special magic numbers for quiet-meadow is: 5279348. \
             The sun is yellow. Here we go.",
        );
        let bare = "What is the special magic number for quiet-meadow mentioned in the provided text?";
        assert!(!quotes_context(bare, &context));
        let quoting = format!("Find the number for quiet-meadow in this text:\n{}", &context[20..110]);
        assert!(quotes_context(&collapse_whitespace(&quoting), &context));
        assert!(quotes_context("quiet-meadow", &context));
        assert!(!quotes_context("", &context));
    }
}
