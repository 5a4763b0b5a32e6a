//! One run of the loop, and the state a run tree shares.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use rlm_protocol::{
    CellOutcome, CellRecord, ChatMessage, Context, EventBody, FinalRecord, FinishedBy, LimitKind, ModelCallPurpose,
    ModelCallRecord, ModelRequest, ReplSession, RunMetadata, SessionSpec, TraceEvent, TraceSink, Usage, UsageReport,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::host::TreeHost;
use crate::parse::{FinalDirective, find_final, parse_response};
use crate::prompt::{self, PromptFacts};
use crate::{EngineInner, RunOptions, RunResult};

/// How long the one last model call after a limit may take, beyond the tree's own deadline.
const FINAL_ANSWER_GRACE: Duration = Duration::from_secs(60);

/// The query a child RLM gets; its `context` is the prompt given to `rlm_query`.
pub(crate) const CHILD_QUERY: &str =
    "The task and its data are in `context` (a string). Read it with code, do what it asks, and answer.";

/// State shared by every run in one tree: budgets, cancellation, the trace.
#[derive(Debug)]
pub(crate) struct Tree {
    pub deadline: Option<Instant>,
    pub cancel: CancellationToken,
    pub trace: Arc<dyn TraceSink>,
    pub sub_calls: AtomicU64,
    pub tokens: AtomicU64,
    /// Set when a sub-call was refused because a tree-wide budget ran out.
    pub exhausted: Mutex<Option<LimitKind>>,
}

impl Tree {
    pub fn mark_exhausted(&self, limit: LimitKind) {
        self.exhausted.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(limit);
    }

    /// The tree-wide limit that has run out, if any.
    pub fn limit_reached(&self, engine: &EngineInner) -> Option<LimitKind> {
        if let Some(limit) = *self.exhausted.lock().unwrap_or_else(PoisonError::into_inner) {
            return Some(limit);
        }
        if self.deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Some(LimitKind::Timeout);
        }
        let max_tokens = engine.config.limits.max_tokens;
        if max_tokens.is_some_and(|max| self.tokens.load(Ordering::Relaxed) >= max) {
            return Some(LimitKind::MaxTokens);
        }
        None
    }
}

/// Usage and sub-call counts of one run including its descendants.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub usage: Mutex<UsageReport>,
    pub sub_calls: AtomicU64,
}

/// Identity and bookkeeping of one run in the tree.
#[derive(Debug)]
pub(crate) struct Scope {
    pub run_id: Uuid,
    pub parent_run_id: Option<Uuid>,
    pub parent_event_id: Option<Uuid>,
    pub depth: u32,
    pub iteration: AtomicU32,
    /// This run's totals first, then each ancestor's: usage counts for all of them.
    pub totals_chain: Vec<Arc<Totals>>,
}

impl Scope {
    fn top_level() -> Self {
        Self {
            run_id: Uuid::now_v7(),
            parent_run_id: None,
            parent_event_id: None,
            depth: 0,
            iteration: AtomicU32::new(0),
            totals_chain: vec![Arc::new(Totals::default())],
        }
    }

    pub fn child(&self, parent_event_id: Uuid) -> Self {
        let mut totals_chain = Vec::with_capacity(self.totals_chain.len() + 1);
        totals_chain.push(Arc::new(Totals::default()));
        totals_chain.extend(self.totals_chain.iter().cloned());
        Self {
            run_id: Uuid::now_v7(),
            parent_run_id: Some(self.run_id),
            parent_event_id: Some(parent_event_id),
            depth: self.depth + 1,
            iteration: AtomicU32::new(0),
            totals_chain,
        }
    }

    pub fn add_usage(&self, tree: &Tree, model: &str, usage: Usage) {
        tree.tokens.fetch_add(usage.total_tokens(), Ordering::Relaxed);
        for totals in &self.totals_chain {
            totals.usage.lock().unwrap_or_else(PoisonError::into_inner).add(model, usage);
        }
    }

    pub fn count_sub_call(&self) {
        for totals in &self.totals_chain {
            totals.sub_calls.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn own_totals(&self) -> (UsageReport, u64) {
        match self.totals_chain.first() {
            Some(totals) => (
                totals.usage.lock().unwrap_or_else(PoisonError::into_inner).clone(),
                totals.sub_calls.load(Ordering::Relaxed),
            ),
            None => (UsageReport::default(), 0),
        }
    }

    pub fn current_iteration(&self) -> Option<u32> {
        Some(self.iteration.load(Ordering::Relaxed)).filter(|i| *i > 0)
    }

    pub fn event(&self, ts: chrono::DateTime<Utc>, body: EventBody) -> TraceEvent {
        self.event_with_id(Uuid::now_v7(), ts, body)
    }

    pub fn event_with_id(&self, event_id: Uuid, ts: chrono::DateTime<Utc>, body: EventBody) -> TraceEvent {
        TraceEvent {
            event_id,
            run_id: self.run_id,
            parent_run_id: self.parent_run_id,
            parent_event_id: self.parent_event_id,
            depth: self.depth,
            iteration: self.current_iteration(),
            ts,
            body,
        }
    }
}

pub(crate) async fn run_tree(
    engine: Arc<EngineInner>,
    context: Context,
    query: &str,
    options: RunOptions,
) -> RunResult {
    let tree = Arc::new(Tree {
        deadline: engine.config.limits.timeout.map(|timeout| Instant::now() + timeout),
        cancel: options.cancel,
        trace: options.trace,
        sub_calls: AtomicU64::new(0),
        tokens: AtomicU64::new(0),
        exhausted: Mutex::new(None),
    });
    let result = run_one(engine, tree.clone(), Arc::new(Scope::top_level()), context, query, None).await;
    // A sink's flush may wait on disk or a database: keep it off the async workers.
    let trace = tree.trace.clone();
    match tokio::task::spawn_blocking(move || trace.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!("trace could not be written completely: {err}"),
        Err(err) => tracing::warn!("flushing the trace failed: {err}"),
    }
    result
}

/// Runs one RLM (top-level or child) to its end and records its `metadata` and `final` events.
pub(crate) async fn run_one(
    engine: Arc<EngineInner>,
    tree: Arc<Tree>,
    scope: Arc<Scope>,
    context: Context,
    query: &str,
    model_override: Option<String>,
) -> RunResult {
    let started = Instant::now();
    let started_at = Utc::now();
    let limits = &engine.config.limits;
    let loop_model = model_override.unwrap_or_else(|| engine.config.models.loop_model(scope.depth).to_owned());

    let host = Arc::new(TreeHost { engine: engine.clone(), tree: tree.clone(), scope: scope.clone() });
    let spec = SessionSpec {
        context,
        cell_timeout: limits.cell_timeout,
        max_captured_chars: SessionSpec::DEFAULT_MAX_CAPTURED_CHARS.max(limits.max_output_chars * 4),
    };
    let ending = match cancellable(&tree.cancel, engine.executor.start_session(spec, host)).await {
        None => Ending::stopped(FinishedBy::Cancelled, 0, "cancelled before the REPL started"),
        Some(Err(err)) => Ending::stopped(FinishedBy::Error, 0, format!("could not start the REPL: {err}")),
        Some(Ok(mut session)) => {
            let metadata = RunMetadata {
                rlm_version: env!("CARGO_PKG_VERSION").to_owned(),
                query: query.to_owned(),
                root_model: loop_model.clone(),
                sub_model: engine.config.models.sub_model().to_owned(),
                config: serde_json::to_value(&engine.config).unwrap_or_default(),
                executor: engine.executor.name().to_owned(),
                context: session.context_info().clone(),
            };
            tree.trace.record(&scope.event(started_at, EventBody::Metadata(metadata)));
            let mut run =
                Loop { engine: &engine, tree: &tree, scope: &scope, model: &loop_model, sent: 0, cells_run: 0 };
            let ending = run.drive(session.as_mut(), query).await;
            if let Err(err) = session.close().await {
                tracing::debug!("closing a REPL session failed: {err}");
            }
            ending
        }
    };

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
    }
}

/// How the loop of one run ended.
#[derive(Debug)]
struct Ending {
    answer: Option<String>,
    finished_by: FinishedBy,
    limit: Option<LimitKind>,
    iterations: u32,
    error: Option<String>,
}

impl Ending {
    fn answered(answer: String, finished_by: FinishedBy, iterations: u32) -> Self {
        Self { answer: Some(answer), finished_by, limit: None, iterations, error: None }
    }

    fn stopped(finished_by: FinishedBy, iterations: u32, error: impl Into<String>) -> Self {
        Self { answer: None, finished_by, limit: None, iterations, error: Some(error.into()) }
    }
}

/// Why a model call produced no response.
enum Interrupted {
    Cancelled,
    TimedOut,
    Failed(rlm_protocol::Error),
}

struct Loop<'a> {
    engine: &'a EngineInner,
    tree: &'a Tree,
    scope: &'a Scope,
    model: &'a str,
    /// Messages already recorded in an earlier `model_call` event.
    sent: usize,
    /// Cells run so far in this run; numbers them like a notebook.
    cells_run: u32,
}

impl Loop<'_> {
    async fn drive(&mut self, session: &mut dyn ReplSession, query: &str) -> Ending {
        let limits = &self.engine.config.limits;
        let facts = PromptFacts {
            context: session.context_info(),
            limits,
            depth: self.scope.depth,
            sub_model: self.engine.config.models.sub_model(),
        };
        let mut messages = vec![
            ChatMessage::system(prompt::system_prompt(&facts)),
            ChatMessage::user(prompt::first_user_message(query)),
        ];

        let mut iterations = 0;
        let limit = loop {
            if iterations >= limits.max_iterations {
                break LimitKind::MaxIterations;
            }
            if let Some(limit) = self.tree.limit_reached(self.engine) {
                break limit;
            }
            iterations += 1;
            self.scope.iteration.store(iterations, Ordering::Relaxed);

            let response = match self.call_model(&messages, ModelCallPurpose::Iteration, self.tree.deadline).await {
                Ok(response) => response,
                Err(Interrupted::Cancelled) => return Ending::stopped(FinishedBy::Cancelled, iterations, "cancelled"),
                Err(Interrupted::TimedOut) => break LimitKind::Timeout,
                Err(Interrupted::Failed(err)) => {
                    return Ending::stopped(FinishedBy::Error, iterations, format!("the root model failed: {err}"));
                }
            };
            messages.push(ChatMessage::assistant(response.clone()));
            let parsed = parse_response(&response);

            let mut outcomes = Vec::with_capacity(parsed.code_blocks.len());
            for code in &parsed.code_blocks {
                let started_at = Utc::now();
                let outcome = match cancellable(&self.tree.cancel, session.run_cell(code)).await {
                    None => return Ending::stopped(FinishedBy::Cancelled, iterations, "cancelled"),
                    Some(Err(err)) => {
                        return Ending::stopped(FinishedBy::Error, iterations, format!("the REPL failed: {err}"));
                    }
                    Some(Ok(outcome)) => outcome,
                };
                let view = prompt::view_cell(&outcome, limits.max_output_chars);
                self.cells_run += 1;
                self.record(started_at, cell_record(self.cells_run, code, &outcome, &view));
                outcomes.push((view, outcome));
            }

            // An answer set by code counts when the cell that set it completed without an error.
            for (_, outcome) in outcomes.iter().filter(|(_, o)| o.error.is_none()) {
                if let Some(answer) = &outcome.answer {
                    return Ending::answered(answer.clone(), FinishedBy::Answer, iterations);
                }
                if let Some(value) = outcome.final_var.as_ref().and_then(|fv| fv.value.clone()) {
                    return Ending::answered(value, FinishedBy::FinalVar, iterations);
                }
            }

            let any_error = outcomes.iter().any(|(_, o)| o.error.is_some());
            let mut notes = Vec::new();
            match find_final(&parsed.prose) {
                Some(_) if any_error => notes.push(prompt::rejected_final_note()),
                Some(FinalDirective::Answer(answer)) => {
                    return Ending::answered(answer, FinishedBy::Final, iterations);
                }
                Some(FinalDirective::Variable(name)) => match session.get_variable(&name).await {
                    Ok(Some(value)) => return Ending::answered(value, FinishedBy::FinalVar, iterations),
                    Ok(None) => {
                        let available = session.variable_names().await.unwrap_or_default();
                        notes.push(prompt::missing_variable_note(&name, &available));
                    }
                    Err(err) => {
                        return Ending::stopped(FinishedBy::Error, iterations, format!("the REPL failed: {err}"));
                    }
                },
                None if outcomes.is_empty() => notes.push(prompt::NO_CODE_NOTE.to_owned()),
                None => {}
            }
            let cells: Vec<(prompt::CellView, &CellOutcome)> =
                outcomes.iter().map(|(view, outcome)| (view.clone(), outcome)).collect();
            messages.push(ChatMessage::user(prompt::observation(&cells, &notes)));
        };
        self.final_answer_after(limit, session, messages, iterations).await
    }

    /// A limit ran out: ask the model once for its best answer.
    async fn final_answer_after(
        &mut self,
        limit: LimitKind,
        session: &mut dyn ReplSession,
        mut messages: Vec<ChatMessage>,
        iterations: u32,
    ) -> Ending {
        messages.push(ChatMessage::user(prompt::limit_message(limit)));
        let deadline = Some(self.tree.deadline.unwrap_or_else(Instant::now).max(Instant::now()) + FINAL_ANSWER_GRACE);
        let mut ending =
            Ending { answer: None, finished_by: FinishedBy::Limit, limit: Some(limit), iterations, error: None };
        match self.call_model(&messages, ModelCallPurpose::FinalAnswer, deadline).await {
            Ok(response) => {
                let parsed = parse_response(&response);
                let answer = match find_final(&parsed.prose) {
                    Some(FinalDirective::Answer(answer)) => answer,
                    Some(FinalDirective::Variable(name)) => match session.get_variable(&name).await {
                        Ok(Some(value)) => value,
                        _ => name,
                    },
                    None => parsed.prose.trim().to_owned(),
                };
                if answer.is_empty() {
                    ending.error = Some(format!("reached {} and the model gave no final answer", limit.describe()));
                } else {
                    ending.answer = Some(answer);
                }
            }
            Err(Interrupted::Cancelled) => {
                return Ending::stopped(FinishedBy::Cancelled, iterations, "cancelled");
            }
            Err(Interrupted::TimedOut) => {
                ending.error = Some(format!("reached {}; asking for a final answer timed out", limit.describe()));
            }
            Err(Interrupted::Failed(err)) => {
                ending.error = Some(format!("reached {}; asking for a final answer failed: {err}", limit.describe()));
            }
        }
        ending
    }

    async fn call_model(
        &mut self,
        messages: &[ChatMessage],
        purpose: ModelCallPurpose,
        deadline: Option<Instant>,
    ) -> Result<String, Interrupted> {
        let request = ModelRequest {
            model: self.model.to_owned(),
            messages: messages.to_vec(),
            max_output_tokens: self.engine.config.limits.max_output_tokens,
            temperature: self.engine.config.temperature,
        };
        let started_at = Utc::now();
        let started = Instant::now();
        let call = self.engine.model.complete(request);
        let outcome = match cancellable(&self.tree.cancel, with_deadline(deadline, call)).await {
            None => Err(Interrupted::Cancelled),
            Some(None) => Err(Interrupted::TimedOut),
            Some(Some(Err(err))) => Err(Interrupted::Failed(err)),
            Some(Some(Ok(response))) => Ok(response),
        };
        let mut record = ModelCallRecord {
            purpose,
            model: self.model.to_owned(),
            new_messages: messages[self.sent.min(messages.len())..].to_vec(),
            history_len: messages.len(),
            response: None,
            usage: Usage::default(),
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            error: None,
        };
        self.sent = messages.len();
        let result = match outcome {
            Ok(response) => {
                self.scope.add_usage(self.tree, self.model, response.usage);
                record.usage = response.usage;
                record.response = Some(response.content.clone());
                Ok(response.content)
            }
            Err(interrupted) => {
                record.error = Some(match &interrupted {
                    Interrupted::Cancelled => "cancelled".to_owned(),
                    Interrupted::TimedOut => "time limit reached".to_owned(),
                    Interrupted::Failed(err) => err.to_string(),
                });
                Err(interrupted)
            }
        };
        self.record(started_at, EventBody::ModelCall(record));
        result
    }

    fn record(&self, ts: chrono::DateTime<Utc>, body: EventBody) {
        self.tree.trace.record(&self.scope.event(ts, body));
    }
}

fn cell_record(index: u32, code: &str, outcome: &CellOutcome, view: &prompt::CellView) -> EventBody {
    EventBody::Cell(CellRecord {
        index,
        code: code.to_owned(),
        stdout: view.stdout.clone(),
        stderr: view.stderr.clone(),
        error: outcome.error.clone(),
        duration_ms: outcome.duration.as_secs_f64() * 1000.0,
        truncated_chars: view.truncated_chars,
    })
}

/// `None` when `cancel` fires first.
pub(crate) async fn cancellable<F: std::future::Future>(cancel: &CancellationToken, future: F) -> Option<F::Output> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => None,
        output = future => Some(output),
    }
}

/// `None` when `deadline` passes first.
pub(crate) async fn with_deadline<F: std::future::Future>(deadline: Option<Instant>, future: F) -> Option<F::Output> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline.into(), future).await.ok(),
        None => Some(future.await),
    }
}
