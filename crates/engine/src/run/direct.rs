//! The direct path: one model call over the whole context, when routing chose it.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use rlm_protocol::{
    Context, ContextInfo, EventBody, FinishedBy, LimitKind, ModelCallPurpose, RouteDecision, RoutePath,
};

use super::turns::{Interrupted, Loop};
use super::{Ending, Scope, Tree, finish, run_metadata};
use crate::config::RouteMode;
use crate::{EngineInner, RunResult, route};

/// Answers with one model call over the whole context. `Err` carries the provider's refusal when the prompt was too
/// long and routing chose this path on its own, so the caller can run the RLM instead.
pub(super) async fn run_direct(
    engine: Arc<EngineInner>,
    tree: Arc<Tree>,
    context: &Context,
    chars: u64,
    query: &str,
    decision: RouteDecision,
) -> Result<RunResult, String> {
    let started = Instant::now();
    let started_at = Utc::now();
    let scope = Arc::new(Scope::top_level());
    let model = engine.config.models.loop_model(0).to_owned();
    let forced = engine.config.route == RouteMode::Direct;
    let info =
        ContextInfo { python_type: "str".to_owned(), total_chars: chars, chunk_lengths: Vec::new(), chunk_count: 1 };
    tree.trace.record(
        &scope
            .event(started_at, EventBody::Metadata(run_metadata(&engine, query, &model, "none", info, Some(decision)))),
    );
    let mut run = Loop::new(&engine, &tree, &scope, &model);
    let ending = match route::render_context(context) {
        Err(err) => Ending::stopped(FinishedBy::Error, 0, format!("could not read the context: {err}")),
        Ok(text) => {
            let messages = std::sync::Arc::new(route::direct_messages(&text, query));
            drop(text);
            match run.call_model(&messages, ModelCallPurpose::Direct, tree.deadline).await {
                Ok(answer) if answer.trim().is_empty() => {
                    Ending::stopped(FinishedBy::Error, 1, "the model gave an empty answer")
                }
                Ok(answer) => Ending::answered(answer.trim().to_owned(), FinishedBy::Direct, 1),
                Err(Interrupted::Cancelled) => Ending::stopped(FinishedBy::Cancelled, 1, "cancelled"),
                Err(Interrupted::TimedOut) => Ending {
                    answer: None,
                    finished_by: FinishedBy::Limit,
                    limit: Some(LimitKind::Timeout),
                    iterations: 1,
                    error: Some("the direct call did not finish within the time limit".to_owned()),
                },
                Err(Interrupted::Failed(err @ rlm_protocol::Error::Budget(_))) => Ending {
                    answer: None,
                    finished_by: FinishedBy::Limit,
                    limit: Some(LimitKind::MaxCost),
                    iterations: 1,
                    error: Some(format!("the direct call was not made: {err}")),
                },
                Err(Interrupted::Failed(err)) if !forced && route::is_too_long_error(&err) => {
                    return Err(err.to_string());
                }
                Err(Interrupted::Failed(err)) => {
                    Ending::stopped(FinishedBy::Error, 1, format!("the direct model call failed: {err}"))
                }
            }
        }
    };
    Ok(finish(&tree, &scope, started, ending, RoutePath::Direct))
}
