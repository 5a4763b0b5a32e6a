//! One run of the loop, and the state a run tree shares.

mod answer_policy;
mod direct;
mod tree;
mod turns;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::Utc;
use rlm_protocol::{
    Context, ContextInfo, EventBody, FinalRecord, FinishedBy, LimitKind, RouteDecision, RoutePath, RunMetadata,
    SessionSpec,
};

pub(crate) use tree::{Scope, Tree, cancellable, deadlines, with_deadline, writing_trace_meanwhile};
pub(crate) use turns::{Interrupted, Loop};

use crate::config::RouteMode;
use crate::host::{TreeHost, collapse_whitespace};
use crate::{EngineInner, RunOptions, RunResult, route};

/// The query a child RLM gets; its `context` is the prompt given to `rlm_query`.
pub(crate) const CHILD_QUERY: &str =
    "The task and its data are in `context` (a string). Read it with code, do what it asks, and answer.";
pub(crate) async fn run_tree(
    engine: Arc<EngineInner>,
    context: Context,
    query: &str,
    options: RunOptions,
) -> RunResult {
    let (deadline, work_deadline) = deadlines(engine.config.limits.timeout);
    let tree = Arc::new(Tree {
        deadline,
        work_deadline,
        cancel: options.cancel,
        trace: options.trace,
        model: options.model.unwrap_or_else(|| engine.model.clone()),
        sub_calls: AtomicU64::new(0),
        tokens: AtomicU64::new(0),
        exhausted: Mutex::new(None),
    });
    let result = route_and_run(engine, tree.clone(), context, query).await;
    // A sink's flush may wait on disk or a database: keep it off the async workers.
    let trace = tree.trace.clone();
    match tokio::task::spawn_blocking(move || trace.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!("trace could not be written completely: {err}"),
        Err(err) => tracing::warn!("flushing the trace failed: {err}"),
    }
    result
}

/// Decides between a direct call and the RLM for a top-level run, and runs it.
async fn route_and_run(engine: Arc<EngineInner>, tree: Arc<Tree>, context: Context, query: &str) -> RunResult {
    let config = &engine.config;
    let root_model = config.models.loop_model(0).to_owned();
    let window = config.window(&root_model);
    let profile = config.prompt.profile.resolve(&root_model);
    // Counting a large context costs a pass over it: only when the decision needs it. An unreadable file is left to
    // the path that runs to report.
    let needs_size = config.route == RouteMode::Direct || (config.route == RouteMode::Auto && window.is_some());
    let chars = if needs_size { route::context_size_chars(&context).ok() } else { None };
    let decision =
        route::decide(config.route, chars, query, window, config.max_output_tokens(profile), config.direct_max_tokens);
    let decision = route::for_the_reader(decision, config.route, profile, &context, query);
    if decision.path == RoutePath::Direct {
        match direct::run_direct(engine.clone(), tree.clone(), &context, chars.unwrap_or(0), query, decision.clone())
            .await
        {
            Ok(result) => return result,
            Err(too_long) => {
                let reason =
                    format!("{}, but the provider refused the direct call ({too_long}); ran the RLM", decision.reason);
                let decision = RouteDecision { path: RoutePath::Rlm, reason, ..decision };
                return run_one(engine, tree, Arc::new(Scope::top_level()), context, query, None, Some(decision)).await;
            }
        }
    }
    run_one(engine, tree, Arc::new(Scope::top_level()), context, query, None, Some(decision)).await
}

pub(super) fn run_metadata(
    engine: &EngineInner,
    query: &str,
    loop_model: &str,
    executor: &str,
    context: ContextInfo,
    route: Option<RouteDecision>,
) -> RunMetadata {
    RunMetadata {
        rlm_version: env!("CARGO_PKG_VERSION").to_owned(),
        query: query.to_owned(),
        root_model: loop_model.to_owned(),
        sub_model: engine.config.models.sub_model().to_owned(),
        config: serde_json::to_value(&engine.config).unwrap_or_default(),
        executor: executor.to_owned(),
        context,
        route,
    }
}

/// Records the `final` event of a run and builds its result.
pub(super) fn finish(tree: &Tree, scope: &Scope, started: Instant, ending: Ending, path: RoutePath) -> RunResult {
    let (usage, sub_calls) = scope.own_totals();
    let duration = started.elapsed();
    let final_record = FinalRecord {
        answer: ending.answer.clone(),
        finished_by: ending.finished_by,
        limit: ending.limit,
        iterations: ending.iterations,
        sub_calls,
        usage: usage.clone(),
        duration_ms: duration.as_secs_f64() * 1000.0,
        error: ending.error.clone(),
    };
    tree.trace.record(&scope.event(Utc::now(), EventBody::Final(final_record)));
    RunResult {
        run_id: scope.run_id,
        answer: ending.answer,
        finished_by: ending.finished_by,
        limit: ending.limit,
        iterations: ending.iterations,
        sub_calls,
        usage,
        duration,
        error: ending.error,
        path,
    }
}

/// Runs one RLM (top-level or child) to its end and records its `metadata` and `final` events.
pub(crate) async fn run_one(
    engine: Arc<EngineInner>,
    tree: Arc<Tree>,
    scope: Arc<Scope>,
    context: Context,
    query: &str,
    model_override: Option<String>,
    route: Option<RouteDecision>,
) -> RunResult {
    let started = Instant::now();
    let started_at = Utc::now();
    let limits = &engine.config.limits;
    let loop_model = model_override.unwrap_or_else(|| engine.config.models.loop_model(scope.depth).to_owned());

    let mut run = turns::Loop::new(&engine, &tree, &scope, &loop_model);
    // Only answer rules that refuse guesses from context-free `llm_query` calls need a copy of the context; a copy of
    // a large context is not worth making for anyone else.
    let grounding = match &context {
        Context::Text(text) if run.checks_grounding() => Some(Arc::from(collapse_whitespace(text))),
        _ => None,
    };
    let host = Arc::new(TreeHost { engine: engine.clone(), tree: tree.clone(), scope: scope.clone(), grounding });
    let spec = SessionSpec {
        context,
        cell_timeout: limits.cell_timeout,
        max_captured_chars: SessionSpec::DEFAULT_MAX_CAPTURED_CHARS.max(limits.max_output_chars * 4),
    };
    let ending = match cancellable(&tree.cancel, engine.executor.start_session(spec, host)).await {
        None => Ending::stopped(FinishedBy::Cancelled, 0, "cancelled before the REPL started"),
        Some(Err(err)) => Ending::stopped(FinishedBy::Error, 0, format!("could not start the REPL: {err}")),
        Some(Ok(mut session)) => {
            let metadata = run_metadata(
                &engine,
                query,
                &loop_model,
                engine.executor.name(),
                session.context_info().clone(),
                route,
            );
            tree.trace.record(&scope.event(started_at, EventBody::Metadata(metadata)));
            let ending = run.drive(session.as_mut(), query).await;
            if let Err(err) = session.close().await {
                tracing::debug!("closing a REPL session failed: {err}");
            }
            ending
        }
    };

    finish(&tree, &scope, started, ending, RoutePath::Rlm)
}

/// How the loop of one run ended.
#[derive(Debug)]
pub(super) struct Ending {
    pub answer: Option<String>,
    pub finished_by: FinishedBy,
    pub limit: Option<LimitKind>,
    pub iterations: u32,
    pub error: Option<String>,
}

impl Ending {
    pub fn answered(answer: String, finished_by: FinishedBy, iterations: u32) -> Self {
        Self { answer: Some(answer), finished_by, limit: None, iterations, error: None }
    }

    pub fn stopped(finished_by: FinishedBy, iterations: u32, error: impl Into<String>) -> Self {
        Self { answer: None, finished_by, limit: None, iterations, error: Some(error.into()) }
    }
}
