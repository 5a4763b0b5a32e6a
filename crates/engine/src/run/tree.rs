//! State a run tree shares (budgets, cancellation, the trace) and the bookkeeping of each run in it.

use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use rlm_protocol::{EventBody, LimitKind, ModelClient, TraceEvent, TraceSink, Usage, UsageReport};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::EngineInner;
use crate::host::collapse_whitespace;

/// State shared by every run in one tree: budgets, cancellation, the trace.
#[derive(Debug)]
pub(crate) struct Tree {
    /// When the whole tree must have ended (the run's time limit).
    pub deadline: Option<Instant>,
    /// When the loops stop working so that the one last call for a final answer still fits before `deadline`.
    pub work_deadline: Option<Instant>,
    pub cancel: CancellationToken,
    pub trace: Arc<dyn TraceSink>,
    /// Serves every model call of the tree.
    pub model: Arc<dyn ModelClient>,
    pub sub_calls: AtomicU64,
    pub tokens: AtomicU64,
    /// Set when a sub-call was refused because a tree-wide budget ran out.
    pub exhausted: Mutex<Option<LimitKind>>,
}

/// The share of a run's time limit kept for the final answer once the work stops, and its most.
const FINAL_ANSWER_SHARE: f64 = 0.1;
const FINAL_ANSWER_RESERVE_MAX: Duration = Duration::from_secs(60);

/// The deadline of a run with time limit `timeout` starting now, and the earlier one at which its loops stop working:
/// asking for the best answer at the time limit must not take the run past it.
pub(crate) fn deadlines(timeout: Option<Duration>) -> (Option<Instant>, Option<Instant>) {
    let Some(timeout) = timeout else { return (None, None) };
    let now = Instant::now();
    let reserve = timeout.mul_f64(FINAL_ANSWER_SHARE).min(FINAL_ANSWER_RESERVE_MAX);
    (Some(now + timeout), Some(now + (timeout - reserve)))
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
        if self.work_deadline.is_some_and(|deadline| Instant::now() >= deadline) {
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
    pub fn top_level() -> Self {
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

    pub fn ungrounded_count(&self) -> usize {
        self.ungrounded.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether `answer` repeats (or is contained in) an ungrounded `llm_query` answer.
    pub fn is_ungrounded(&self, answer: &str) -> bool {
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

    pub fn own_totals(&self) -> (UsageReport, u64) {
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

/// Runs `future` and, once its first poll has set the work going elsewhere (a request handed to the HTTP
/// connection, a cell to its Python thread), writes out the trace while it waits: the write overlaps the wait
/// instead of adding to it, and whenever a run waits for a model or a cell its trace holds everything recorded so far.
pub(crate) async fn writing_trace_meanwhile<F: Future>(trace: &dyn TraceSink, future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut written = false;
    std::future::poll_fn(|cx| {
        let poll = future.as_mut().poll(cx);
        if poll.is_pending() && !written {
            written = true;
            trace.write_out();
        }
        poll
    })
    .await
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
