//! One run of the loop, and the state a run tree shares.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use rlm_protocol::{
    CellOutcome, CellRecord, ChatMessage, Context, ContextInfo, EventBody, FinalRecord, FinishedBy, LimitKind,
    ModelCallPurpose, ModelCallRecord, ModelClient, ModelRequest, ReplSession, RouteDecision, RoutePath, RunMetadata,
    SessionSpec, TraceEvent, TraceSink, Usage, UsageReport,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::RouteMode;
use crate::guard::{RepeatTracker, placeholder_reason};
use crate::host::{TreeHost, collapse_whitespace};
use crate::parse::{FinalDirective, ParsedResponse, find_final, parse_response};
use crate::prompt::{self, PromptFacts, PromptProfile};
use crate::{EngineInner, RunOptions, RunResult, route};

/// Replies in a row that repeat their predecessor before the run stops with [`LimitKind::Repetition`]; each one
/// before that gets a nudge to change course.
const MAX_REPEAT_STREAK: u32 = 3;

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
    /// Serves every model call of the tree.
    pub model: Arc<dyn ModelClient>,
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
    /// Answers of `llm_query` calls whose prompt held none of the context: guesses, never evidence.
    pub ungrounded: Mutex<Vec<String>>,
}

impl Scope {
    pub(crate) fn top_level() -> Self {
        Self {
            run_id: Uuid::now_v7(),
            parent_run_id: None,
            parent_event_id: None,
            depth: 0,
            iteration: AtomicU32::new(0),
            totals_chain: vec![Arc::new(Totals::default())],
            ungrounded: Mutex::new(Vec::new()),
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
            ungrounded: Mutex::new(Vec::new()),
        }
    }

    pub fn add_usage(&self, tree: &Tree, model: &str, usage: Usage) {
        tree.tokens.fetch_add(usage.total_tokens(), Ordering::Relaxed);
        for totals in &self.totals_chain {
            totals.usage.lock().unwrap_or_else(PoisonError::into_inner).add(model, usage);
        }
    }

    pub fn record_ungrounded(&self, answer: &str) {
        self.ungrounded.lock().unwrap_or_else(PoisonError::into_inner).push(collapse_whitespace(answer));
    }

    fn ungrounded_count(&self) -> usize {
        self.ungrounded.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether `answer` repeats (or is contained in) an ungrounded `llm_query` answer.
    fn is_ungrounded(&self, answer: &str) -> bool {
        let answer = collapse_whitespace(answer);
        // A guess inside a longer answer counts only when it is more than a word or two.
        !answer.is_empty()
            && self
                .ungrounded
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .any(|guess| guess.contains(&answer) || (guess.len() >= 12 && answer.contains(guess.as_str())))
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
    let decision = route::decide(config.route, chars, query, window, config.max_output_tokens(profile));
    if decision.path == RoutePath::Direct {
        match run_direct(engine.clone(), tree.clone(), &context, chars.unwrap_or(0), query, decision.clone()).await {
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

/// Answers with one model call over the whole context. `Err` carries the provider's refusal when the prompt was too
/// long and routing chose this path on its own, so the caller can run the RLM instead.
async fn run_direct(
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
            let messages = route::direct_messages(&text, query);
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

pub(crate) fn run_metadata(
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
pub(crate) fn finish(tree: &Tree, scope: &Scope, started: Instant, ending: Ending, path: RoutePath) -> RunResult {
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

    // Only the small profile refuses guesses from context-free `llm_query` calls; a copy of a large context is not
    // worth making for anyone else.
    let small = engine.config.prompt.profile.resolve(&loop_model) == PromptProfile::Small;
    let grounding = match &context {
        Context::Text(text) if small => Some(Arc::from(collapse_whitespace(text))),
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
            let mut run = Loop::new(&engine, &tree, &scope, &loop_model);
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
pub(crate) struct Ending {
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

    pub(crate) fn stopped(finished_by: FinishedBy, iterations: u32, error: impl Into<String>) -> Self {
        Self { answer: None, finished_by, limit: None, iterations, error: Some(error.into()) }
    }
}

/// Why a model call produced no response.
pub(crate) enum Interrupted {
    Cancelled,
    TimedOut,
    Failed(rlm_protocol::Error),
}

pub(crate) struct Loop<'a> {
    pub(crate) engine: &'a EngineInner,
    pub(crate) tree: &'a Tree,
    pub(crate) scope: &'a Scope,
    pub(crate) model: &'a str,
    pub(crate) profile: PromptProfile,
    /// Messages already recorded in an earlier `model_call` event.
    pub(crate) sent: usize,
    /// Cells run so far in this run; numbers them like a notebook.
    cells_run: u32,
    /// Whether the model has seen printed output of code that read the context, in an earlier turn.
    seen_output: bool,
    /// Everything the model has been shown as output so far, lower-cased with whitespace collapsed.
    seen_text: String,
    /// Whether any cell of this run has completed without an error.
    code_ran: bool,
    /// Whether any cell so far has read `context` (directly or through `search`).
    context_read: bool,
    repeats: RepeatTracker,
    /// Ungrounded `llm_query` answers the model has already been warned about.
    ungrounded_noted: usize,
    /// What a session tells the model before its query: earlier queries, contexts and variables.
    pub(crate) intro: Option<String>,
    /// Variables that earlier queries of a session built from the data: reading them counts as reading the data.
    pub(crate) data_names: Vec<String>,
    pub(crate) compaction: crate::compaction::Compactor,
}

/// Why a proposed answer does not end the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Placeholder(&'static str),
    /// It came from an `llm_query` that was given none of the context.
    Ungrounded,
    /// No code had run (small models: no output of code that read the context had been seen).
    NoEvidence,
    /// It only repeats words of the question.
    EchoesQuestion,
    /// Written next to new code, and not in any output seen.
    Unsupported,
}

impl Refusal {
    /// What the model is told, with what to do instead.
    fn note(self, answer: &str, query: &str) -> String {
        match self {
            Self::Placeholder(reason) => prompt::placeholder_note(answer, reason),
            Self::Ungrounded => prompt::ungrounded_answer_note(),
            Self::NoEvidence => prompt::answer_before_evidence_note(query),
            Self::EchoesQuestion | Self::Unsupported => prompt::unsupported_answer_note(),
        }
    }

    /// Why, for the run's error when a limit ends on a refused answer.
    fn reason(self) -> &'static str {
        match self {
            Self::Placeholder(reason) => reason,
            Self::Ungrounded => "it came from an llm_query that was given none of the context",
            Self::NoEvidence => "no code had shown it any evidence yet",
            Self::EchoesQuestion => "it only repeats words of the question",
            Self::Unsupported => "it was written next to new code and is in no output seen",
        }
    }
}

/// An answer the model proposed in one turn, before the checks.
struct Proposal {
    answer: String,
    finished_by: FinishedBy,
}

impl<'a> Loop<'a> {
    pub(crate) fn new(engine: &'a EngineInner, tree: &'a Tree, scope: &'a Scope, model: &'a str) -> Self {
        Self {
            engine,
            tree,
            scope,
            model,
            profile: engine.config.prompt.profile.resolve(model),
            sent: 0,
            cells_run: 0,
            seen_output: false,
            seen_text: String::new(),
            code_ran: false,
            context_read: false,
            repeats: RepeatTracker::default(),
            ungrounded_noted: 0,
            intro: None,
            data_names: Vec::new(),
            compaction: crate::compaction::Compactor::default(),
        }
    }

    pub(crate) async fn drive(&mut self, session: &mut dyn ReplSession, query: &str) -> Ending {
        let limits = &self.engine.config.limits;
        let sub_model = self.engine.config.models.sub_model();
        let facts = PromptFacts {
            context: session.context_info(),
            limits,
            depth: self.scope.depth,
            sub_model,
            sub_window_tokens: self.engine.config.window(sub_model),
        };
        let template = self.engine.config.prompt.system_template.as_deref();
        let mut messages = vec![
            ChatMessage::system(prompt::system_prompt_for(self.profile, template, &facts)),
            ChatMessage::user(prompt::first_user_message(self.profile, query)),
        ];
        if let Some(intro) = &self.intro {
            messages[1].content = format!("{intro}\n\n{}", messages[1].content);
        }

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
            if let Err(Interrupted::Cancelled) = self.compact_if_needed(session, &mut messages).await {
                return Ending::stopped(FinishedBy::Cancelled, iterations, "cancelled");
            }

            let response = match self.call_model(&messages, ModelCallPurpose::Iteration, self.tree.deadline).await {
                Ok(response) => response,
                Err(Interrupted::Cancelled) => return Ending::stopped(FinishedBy::Cancelled, iterations, "cancelled"),
                Err(Interrupted::TimedOut) => break LimitKind::Timeout,
                Err(Interrupted::Failed(rlm_protocol::Error::Budget(_))) => break LimitKind::MaxCost,
                Err(Interrupted::Failed(err)) => {
                    return Ending::stopped(FinishedBy::Error, iterations, format!("the root model failed: {err}"));
                }
            };
            messages.push(ChatMessage::assistant(response.clone()));
            let parsed = parse_response(&response);
            // What runs is what counts: the same code with different prose around it is still a repeat.
            let repeated = if parsed.code_blocks.is_empty() {
                self.repeats.observe(&response)
            } else {
                self.repeats.observe(&parsed.code_blocks.concat())
            };

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

            // Output is evidence once code has read the data: `SHOW_VARS()` printing "no variables" is not.
            let mut evidence_now = false;
            for (code, (_, outcome)) in parsed.code_blocks.iter().zip(&outcomes) {
                self.context_read |= reads_context(code) || crate::session::uses_any(code, &self.data_names);
                if outcome.error.is_none() {
                    self.code_ran = true;
                    evidence_now |= self.context_read && !outcome.stdout.trim().is_empty();
                }
            }
            let mut notes = Vec::new();
            let proposal = match self.proposal(&parsed, &outcomes, session, &mut notes).await {
                Ok(proposal) => proposal,
                Err(err) => return Ending::stopped(FinishedBy::Error, iterations, format!("the REPL failed: {err}")),
            };
            if let Some(proposal) = proposal {
                match self.refusal(&proposal.answer, query, !outcomes.is_empty()) {
                    None => return Ending::answered(proposal.answer, proposal.finished_by, iterations),
                    Some(refusal) => notes.push(refusal.note(&proposal.answer, query)),
                }
            } else if outcomes.is_empty() {
                notes.push(prompt::no_code_note(self.profile, query));
            }
            self.seen_output |= evidence_now;
            if self.profile == PromptProfile::Small {
                for (view, _) in &outcomes {
                    self.seen_text.push(' ');
                    self.seen_text.push_str(&collapse_whitespace(&view.stdout).to_lowercase());
                }
            }
            let ungrounded = self.scope.ungrounded_count();
            if self.profile == PromptProfile::Small && ungrounded > self.ungrounded_noted {
                notes.push(prompt::ungrounded_calls_note(ungrounded - self.ungrounded_noted));
                self.ungrounded_noted = ungrounded;
            }
            if repeated {
                if self.repeats.streak >= MAX_REPEAT_STREAK {
                    break LimitKind::Repetition;
                }
                notes.push(prompt::repeat_note(query, !parsed.code_blocks.is_empty()));
            }
            let cells: Vec<(prompt::CellView, &CellOutcome)> =
                outcomes.iter().map(|(view, outcome)| (view.clone(), outcome)).collect();
            let mut observation = prompt::observation(&cells, &notes);
            if let Some(reminder) = prompt::turn_reminder(self.profile, query) {
                observation.push_str("\n\n");
                observation.push_str(&reminder);
            }
            messages.push(ChatMessage::user(observation));
        };
        self.final_answer_after(limit, session, messages, iterations, query).await
    }

    /// The answer this turn proposes, if any: set by code (in a cell that completed without an error), or given
    /// with `FINAL`/`FINAL_VAR` in the text. Problems that are the model's to fix become notes.
    async fn proposal(
        &self,
        parsed: &ParsedResponse,
        outcomes: &[(prompt::CellView, CellOutcome)],
        session: &mut dyn ReplSession,
        notes: &mut Vec<String>,
    ) -> Result<Option<Proposal>, rlm_protocol::Error> {
        for (_, outcome) in outcomes.iter().filter(|(_, o)| o.error.is_none()) {
            if let Some(answer) = &outcome.answer {
                return Ok(Some(Proposal { answer: answer.clone(), finished_by: FinishedBy::Answer }));
            }
            if let Some(value) = outcome.final_var.as_ref().and_then(|fv| fv.value.clone()) {
                return Ok(Some(Proposal { answer: value, finished_by: FinishedBy::FinalVar }));
            }
        }
        let any_error = outcomes.iter().any(|(_, o)| o.error.is_some());
        match find_final(&parsed.prose) {
            None => Ok(None),
            Some(_) if any_error => {
                notes.push(prompt::rejected_final_note());
                Ok(None)
            }
            Some(FinalDirective::Answer(answer)) => Ok(Some(Proposal { answer, finished_by: FinishedBy::Final })),
            Some(FinalDirective::Variable(name)) => match session.get_variable(&name).await? {
                Some(value) => Ok(Some(Proposal { answer: value, finished_by: FinishedBy::FinalVar })),
                None => {
                    let available = session.variable_names().await.unwrap_or_default();
                    notes.push(prompt::missing_variable_note(&name, &available));
                    Ok(None)
                }
            },
        }
    }

    /// Why `answer` cannot end the run yet; `None` when it can. `with_code`: the same reply also ran code.
    fn refusal(&self, answer: &str, query: &str, with_code: bool) -> Option<Refusal> {
        let small = self.profile == PromptProfile::Small;
        if let Some(reason) = placeholder_reason(answer) {
            return Some(Refusal::Placeholder(reason));
        }
        if small && self.scope.is_ungrounded(answer) {
            return Some(Refusal::Ungrounded);
        }
        if !self.has_evidence() {
            return Some(Refusal::NoEvidence);
        }
        // Small models echo the question: the key instead of its value. (Choice questions, "A or B?", excepted.)
        if small && !query.to_lowercase().contains(" or ") && !adds_to(answer, query) {
            return Some(Refusal::EchoesQuestion);
        }
        // A small model that answers next to new code usually guesses; it may when the answer is in output it saw.
        if small && with_code && !supported_by(answer, &self.seen_text) {
            return Some(Refusal::Unsupported);
        }
        None
    }

    /// Whether an answer may end the run. No answer counts before any code has run. Small models must also have
    /// seen printed output of code that read the context, in an earlier turn: they write an answer next to the code
    /// meant to find it, guessing. Capable models may compute an answer and name it (`FINAL_VAR`) in one turn.
    fn has_evidence(&self) -> bool {
        match self.profile {
            PromptProfile::Small => self.seen_output,
            PromptProfile::Auto | PromptProfile::Standard => self.code_ran,
        }
    }

    /// A limit ran out: ask the model once for its best answer.
    async fn final_answer_after(
        &mut self,
        limit: LimitKind,
        session: &mut dyn ReplSession,
        mut messages: Vec<ChatMessage>,
        iterations: u32,
        query: &str,
    ) -> Ending {
        if let Err(Interrupted::Cancelled) = self.compact_if_needed(session, &mut messages).await {
            return Ending::stopped(FinishedBy::Cancelled, iterations, "cancelled");
        }
        messages.push(ChatMessage::user(prompt::limit_message(limit)));
        let deadline = Some(self.tree.deadline.unwrap_or_else(Instant::now).max(Instant::now()) + FINAL_ANSWER_GRACE);
        let mut ending =
            Ending { answer: None, finished_by: FinishedBy::Limit, limit: Some(limit), iterations, error: None };
        match self.call_model(&messages, ModelCallPurpose::FinalAnswer, deadline).await {
            Ok(response) => {
                let parsed = parse_response(&response);
                // No code runs any more, so a FINAL the model put inside a code block counts too.
                let directive = find_final(&parsed.prose).or_else(|| find_final(&response));
                let answer = match directive {
                    Some(FinalDirective::Answer(answer)) => Some(answer),
                    Some(FinalDirective::Variable(name)) => session.get_variable(&name).await.ok().flatten(),
                    None => Some(parsed.prose.trim().to_owned()),
                };
                let refused = match &answer {
                    None => Some("it named a variable that does not exist".to_owned()),
                    Some(answer) => self.refusal(answer, query, false).map(|refusal| refusal.reason().to_owned()),
                };
                match (answer, refused) {
                    (Some(answer), None) => ending.answer = Some(answer),
                    (_, Some(reason)) => {
                        ending.error = Some(format!(
                            "reached {} without a usable answer: the model's last answer was refused because {reason}",
                            limit.describe()
                        ));
                    }
                    (None, None) => {
                        ending.error = Some(format!("reached {} and the model gave no final answer", limit.describe()));
                    }
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
            max_output_tokens: self.engine.config.max_output_tokens(self.profile),
            temperature: self.engine.config.temperature,
        };
        let started_at = Utc::now();
        let started = Instant::now();
        let call = self.tree.model.complete(request);
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

/// The words of an answer that carry meaning, lower-cased: three or more letters, or any number.
fn answer_words(answer: &str) -> impl Iterator<Item = String> + '_ {
    answer
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| word.chars().count() >= 3 || word.chars().any(|c| c.is_ascii_digit()))
        .map(str::to_lowercase)
}

/// Whether every word of `answer` occurs in `seen` (lower-cased output).
fn supported_by(answer: &str, seen: &str) -> bool {
    let mut words = answer_words(answer).peekable();
    words.peek().is_some() && words.all(|word| seen.contains(word.as_str()))
}

/// Whether `answer` has a word the question does not: an answer that only restates the question's words (the key
/// instead of its value) tells nothing.
fn adds_to(answer: &str, query: &str) -> bool {
    let query = query.to_lowercase();
    answer_words(answer).any(|word| !query.contains(word.as_str()))
}

/// Whether code reads the data: names `context` or calls the `search` helper.
fn reads_context(code: &str) -> bool {
    code.contains("context") || code.contains("search(")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_supported_only_by_output_that_contains_them() {
        let seen = " 1 match(es) for 'olive-orchard': one of the special magic numbers for olive-orchard is: 5313471.";
        assert!(supported_by("5313471", seen));
        assert!(supported_by("The special magic number is 5313471.", seen));
        assert!(!supported_by("hollow-valley mentioned in the provided text is 123.", seen));
        assert!(!supported_by("42", seen));
        assert!(!supported_by("", seen));
        let query = "What is the special magic number for brisk-pebble mentioned in the provided text?";
        assert!(!adds_to(" brisk-pebble", query));
        assert!(adds_to("4473224", query));
        assert!(adds_to("The special magic number is 4473224.", query));
        assert!(
            reads_context("print(search(\"x\"))") && reads_context("len(context)") && !reads_context("SHOW_VARS()")
        );
    }
}
