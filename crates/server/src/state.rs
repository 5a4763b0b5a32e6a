//! Shared state: the model client and executor, the run slots, and the bounded registry of recent runs.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt as _;
use rlm::{
    CancellationToken, Completion, Context, EventBody, Executor, FinishedBy, Limits, LocalExecutor, ModelClient,
    ModelPlan, OpenAiClient, Rlm, RlmError, TraceEvent, TraceSink,
};
use rlm_viewer::{RunSummary, RunTree, Update};
use serde::Serialize;
use tokio::sync::{Semaphore, broadcast, watch};
use uuid::Uuid;

use rlm_executor_remote::RemoteExecutor;
use rlm_trace_postgres::PostgresSink;

use crate::config::{ExecutorChoice, ServerConfig};
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Shared by every handler. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub config: ServerConfig,
    model: Arc<dyn ModelClient>,
    executor: Arc<dyn Executor>,
    /// The same remote executor, for health checks of its sandbox.
    remote: Option<RemoteExecutor>,
    /// The trajectory database writer shared by every run, when `trace_db` is configured.
    trace_db: Option<Arc<PostgresSink>>,
    slots: Arc<Semaphore>,
    runs: Mutex<Registry>,
    pub metrics: Metrics,
    /// What the trajectory viewer at `/ui` announces: new events of a run, a run forgotten. Dropped when the
    /// shutdown begins, which ends the viewer's live streams (they would hold a graceful shutdown up forever).
    ui_channel: Mutex<Option<broadcast::Sender<Update>>>,
    ui_updates: UiUpdates,
    shutting_down: AtomicBool,
    started: Instant,
    conversations: crate::conversations::Conversations,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Rlm(#[from] RlmError),
}

impl AppState {
    /// Builds the model client and (for the local executor) starts the embedded interpreter, so a broken Python
    /// installation is reported at start-up rather than on the first run.
    pub fn new(config: ServerConfig) -> Result<Self, StartError> {
        let mut model: Arc<dyn ModelClient> =
            Arc::new(OpenAiClient::new(config.openai.clone()).map_err(RlmError::from)?);
        if let (Some(sub_openai), Some(sub_model)) = (&config.sub_openai, &config.sub_model) {
            let sub: Arc<dyn ModelClient> = Arc::new(OpenAiClient::new(sub_openai.clone()).map_err(RlmError::from)?);
            model = Arc::new(rlm::RouteByModel { model: sub_model.clone(), matched: sub, rest: model });
        }
        // `anthropic:` and `gemini:` specs go to their native clients; everything else to the OpenAI-compatible one.
        let model = Arc::new(rlm::Providers::new(model, config.providers.clone(), None).map_err(RlmError::from)?);
        Self::with_model_client(config, model)
    }

    /// Like [`AppState::new`] with a given model provider.
    pub fn with_model_client(config: ServerConfig, model: Arc<dyn ModelClient>) -> Result<Self, StartError> {
        if config.max_concurrent_runs == 0 {
            return Err(StartError::Config("max_concurrent_runs must be at least 1".into()));
        }
        if config.max_stored_runs == 0 {
            return Err(StartError::Config("max_stored_runs must be at least 1".into()));
        }
        if config.limits.max_iterations == 0 {
            return Err(StartError::Config("max_iterations must be at least 1".into()));
        }
        let (executor, remote): (Arc<dyn Executor>, _) = match &config.executor {
            ExecutorChoice::Local => {
                LocalExecutor::initialize().map_err(RlmError::from)?;
                (Arc::new(LocalExecutor::new()), None)
            }
            ExecutorChoice::Remote(settings) => {
                let remote = RemoteExecutor::new(settings.clone()).map_err(RlmError::from)?;
                (Arc::new(remote.clone()), Some(remote))
            }
        };
        let ui_channel = broadcast::channel(1024).0;
        let trace_db = match &config.trace_db {
            Some(settings) => Some(Arc::new(
                PostgresSink::start(settings.clone())
                    .map_err(|e| StartError::Config(format!("cannot start the trace database writer: {e}")))?,
            )),
            None => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                trace_db,
                slots: Arc::new(Semaphore::new(config.max_concurrent_runs)),
                config,
                model,
                remote,
                executor,
                runs: Mutex::new(Registry::default()),
                metrics: Metrics::default(),
                ui_updates: UiUpdates(ui_channel.downgrade()),
                ui_channel: Mutex::new(Some(ui_channel)),
                shutting_down: AtomicBool::new(false),
                started: Instant::now(),
                conversations: crate::conversations::Conversations::default(),
            }),
        })
    }

    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    pub(crate) fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Waits (bounded) until every event is in the trajectory database or its spool file, and stops its writer.
    pub fn close_trace_db(&self, timeout: Duration) {
        if let Some(db) = &self.inner.trace_db {
            let status = db.close(timeout);
            if !status.spool_files.is_empty() {
                tracing::warn!(files = ?status.spool_files, "some trace events are only in spool files; load them with `rlm trace import`");
            }
        }
    }

    /// Stop accepting new runs (`/ready` turns `503`); running ones go on.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        self.inner.ui_channel.lock().unwrap_or_else(PoisonError::into_inner).take();
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// Cancels every run still going.
    pub fn cancel_all_runs(&self) {
        for run in self.inner.lock_runs().by_id.values() {
            run.cancel.cancel();
        }
        self.inner.conversations.close_all();
    }

    pub(crate) fn conversations(&self) -> &crate::conversations::Conversations {
        &self.inner.conversations
    }

    /// A run slot for work that is not a registered run (a conversation's query); `429` when all are busy.
    pub(crate) fn try_run_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.inner.slots).try_acquire_owned().map_err(|_| {
            self.inner.metrics.run_rejected_busy();
            ApiError::busy(self.inner.config.max_concurrent_runs)
        })
    }

    /// Runs executing now.
    pub fn runs_in_flight(&self) -> usize {
        self.inner.config.max_concurrent_runs - self.inner.slots.available_permits()
    }

    /// Waits until no run is executing, for at most `timeout`; `true` when none is left.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let all = u32::try_from(self.inner.config.max_concurrent_runs).unwrap_or(u32::MAX);
        match tokio::time::timeout(timeout, self.inner.slots.acquire_many(all)).await {
            Ok(Ok(_permits)) => true,
            _ => self.runs_in_flight() == 0,
        }
    }

    /// Whether code can be executed: always for the local executor; for the remote one, when its sandbox service
    /// answers and has room for another session.
    pub async fn executor_ready(&self) -> Result<(), String> {
        let Some(remote) = &self.inner.remote else { return Ok(()) };
        match remote.health_check().await {
            Ok(health) if health.ready => Ok(()),
            Ok(health) => Err(format!(
                "the remote executor's sandbox is full ({} of {} sessions)",
                health.sessions, health.capacity
            )),
            Err(err) => Err(format!("the remote executor's sandbox is not reachable: {err}")),
        }
    }

    /// Whether a new run would be accepted now, or why not.
    pub async fn readiness(&self) -> Result<(), String> {
        if self.is_shutting_down() {
            return Err("shutting down".into());
        }
        self.executor_ready().await?;
        if self.inner.slots.available_permits() == 0 {
            return Err(format!("all {} run slots are busy", self.inner.config.max_concurrent_runs));
        }
        Ok(())
    }

    pub fn run(&self, id: Uuid) -> Option<Arc<RunEntry>> {
        self.inner.lock_runs().by_id.get(&id).cloned()
    }

    /// Recent runs, oldest first.
    pub(crate) fn runs_oldest_first(&self) -> Vec<Arc<RunEntry>> {
        let runs = self.inner.lock_runs();
        runs.order.iter().filter_map(|id| runs.by_id.get(id).cloned()).collect()
    }

    /// The run whose top-level trace events carry `root_run_id` (its `root_run_id`, the viewer's id of it).
    pub(crate) fn run_by_root(&self, root_run_id: Uuid) -> Option<Arc<RunEntry>> {
        self.inner.lock_runs().by_id.values().find(|run| run.ui_root.get() == Some(&root_run_id)).cloned()
    }

    /// Announcements for the viewer's live updates.
    pub(crate) fn subscribe_ui(&self) -> broadcast::Receiver<Update> {
        match self.inner.ui_updates.0.upgrade() {
            Some(sender) => sender.subscribe(),
            // Shutting down: a stream that ends at once.
            None => broadcast::channel(1).1,
        }
    }

    /// Recent runs, newest first.
    pub fn recent_runs(&self) -> Vec<Arc<RunEntry>> {
        let runs = self.inner.lock_runs();
        runs.order.iter().rev().filter_map(|id| runs.by_id.get(id).cloned()).collect()
    }

    /// The root model a run uses when its request names none.
    pub fn default_model(&self) -> Result<&str, ApiError> {
        self.inner.config.default_model.as_deref().filter(|m| !m.trim().is_empty()).ok_or_else(|| {
            ApiError::bad_request("no model given and the server has no default model (set --model or LLM_MODEL)")
        })
    }

    /// Starts a run in the background and registers it. Refused with `503` while shutting down or when the
    /// executor is not available, `429` when every run slot is busy.
    pub async fn start_run(&self, spec: RunSpec) -> Result<Arc<RunEntry>, ApiError> {
        if self.is_shutting_down() {
            return Err(ApiError::unavailable("the server is shutting down"));
        }
        self.executor_ready().await.map_err(ApiError::unavailable)?;
        let rlm = self.build_rlm(&spec)?;
        let Ok(permit) = Arc::clone(&self.inner.slots).try_acquire_owned() else {
            self.inner.metrics.run_rejected_busy();
            return Err(ApiError::busy(self.inner.config.max_concurrent_runs));
        };
        let entry = Arc::new(RunEntry::new(&spec, self.inner.ui_updates.clone()));
        let evicted = self.inner.lock_runs().insert(Arc::clone(&entry), self.inner.config.max_stored_runs);
        for run in evicted {
            // The viewer reads the registry, so the run is gone from it already; tell open pages.
            if let Some(&run_id) = run.ui_root.get() {
                self.inner.ui_updates.send(Update::Removed { run_id });
            }
        }
        self.inner.metrics.run_started();
        tracing::info!(run_id = %entry.id, model = %entry.model, "run started");
        let state = self.clone();
        let run = Arc::clone(&entry);
        tokio::spawn(async move {
            let observer: Arc<dyn TraceSink> =
                Arc::new(Observer { run: Arc::clone(&run), db: state.inner.trace_db.clone() });
            let completion = rlm.completion_with(spec.context, &spec.query, run.cancel.clone(), Some(observer));
            // A panicking run must still free its slot and end its waiters and streams.
            let outcome = match std::panic::AssertUnwindSafe(completion).catch_unwind().await {
                Ok(outcome) => outcome,
                Err(_) => Err(RlmError::Config("internal error: the run panicked".into())),
            };
            let (finished_by, usage) = match &outcome {
                Ok(done) => (done.finished_by, Some(done.usage.clone())),
                Err(RlmError::Failed { completion, .. }) => (completion.finished_by, Some(completion.usage.clone())),
                Err(_) => (FinishedBy::Error, None),
            };
            let elapsed = run.started.elapsed();
            // Slot and metrics first: a client that sees the result must also see them updated.
            drop(permit);
            state.inner.metrics.run_finished(finished_by, elapsed, usage.as_ref());
            run.finish(outcome);
            tracing::info!(run_id = %run.id, finished_by = finished_by.as_str(), secs = elapsed.as_secs_f64(), "run finished");
        });
        Ok(entry)
    }

    pub(crate) fn build_rlm(&self, spec: &RunSpec) -> Result<Rlm, ApiError> {
        let config = &self.inner.config;
        let mut builder = Rlm::builder()
            .model_client(Arc::clone(&self.inner.model))
            .executor(Arc::clone(&self.inner.executor))
            .trace(config.trace.clone())
            .model(spec.models.root.clone())
            .limits(spec.limits.clone())
            .route(config.route)
            .prompt_profile(config.prompt_profile)
            .provider_settings(config.providers.clone());
        if let Some(prices) = &config.prices {
            builder = builder.prices(prices.clone());
        }
        let sub = spec.models.sub.as_ref().or(config.sub_model.as_ref());
        for model in std::iter::once(&spec.models.root).chain(sub).chain(&spec.models.per_depth) {
            // A model whose provider has no key would fail on its first call; say so before the run starts.
            config.providers.check(model).map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
        // The configured windows belong to the configured models.
        if let Some(window) = config.context_window.filter(|_| config.default_model.as_ref() == Some(&spec.models.root))
        {
            builder = builder.context_window(window);
        }
        if let Some(window) = config.sub_context_window {
            builder = builder.sub_context_window(window);
        }
        if let Some(sub) = spec.models.sub.clone().or_else(|| config.sub_model.clone()) {
            builder = builder.sub_model(sub);
        }
        if !spec.models.per_depth.is_empty() {
            builder = builder.depth_models(spec.models.per_depth.clone());
        }
        if let Some(temperature) = spec.temperature {
            builder = builder.temperature(temperature);
        }
        builder.build().map_err(|e| ApiError::bad_request(e.to_string()))
    }
}

impl Inner {
    fn lock_runs(&self) -> MutexGuard<'_, Registry> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub context: Context,
    pub query: String,
    pub models: ModelPlan,
    pub limits: Limits,
    pub temperature: Option<f32>,
}

/// Recent runs: all running ones plus the most recent finished ones, up to the configured number.
#[derive(Debug, Default)]
struct Registry {
    by_id: HashMap<Uuid, Arc<RunEntry>>,
    /// Insertion order, oldest first.
    order: VecDeque<Uuid>,
}

impl Registry {
    /// Adds `run`, evicting the oldest finished runs beyond `capacity`; returns the evicted ones.
    fn insert(&mut self, run: Arc<RunEntry>, capacity: usize) -> Vec<Arc<RunEntry>> {
        let mut evicted = Vec::new();
        self.order.push_back(run.id);
        self.by_id.insert(run.id, run);
        while self.by_id.len() > capacity {
            // The oldest finished run goes; running runs are bounded by the run slots and never evicted.
            let Some(position) = self
                .order
                .iter()
                .position(|id| self.by_id.get(id).is_none_or(|run| run.status() != RunStatus::Running))
            else {
                break;
            };
            if let Some(id) = self.order.remove(position) {
                evicted.extend(self.by_id.remove(&id));
            }
        }
        evicted
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Completed,
    Failed,
    Cancelled,
}

/// One run: its events so far, and its outcome once it ended.
#[derive(Debug)]
pub struct RunEntry {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub query: String,
    pub model: String,
    pub cancel: CancellationToken,
    started: Instant,
    data: Mutex<RunData>,
    /// Bumped on every new event and when the run ends.
    changed: watch::Sender<u64>,
    /// The `run_id` of the top-level trace events (set by the first event): the viewer's id of the run.
    ui_root: OnceLock<Uuid>,
    ui_updates: UiUpdates,
}

/// Sends the viewer's updates while the channel is open (until the shutdown begins).
#[derive(Debug, Clone)]
pub(crate) struct UiUpdates(broadcast::WeakSender<Update>);

impl UiUpdates {
    fn send(&self, update: Update) {
        if let Some(sender) = self.0.upgrade() {
            let _ = sender.send(update);
        }
    }
}

#[derive(Debug)]
struct RunData {
    status: RunStatus,
    events: Vec<Arc<TraceEvent>>,
    /// The viewer's outlines of `events` (one each, same order) and the run's summary.
    tree: RunTree,
    /// Set once the run ended.
    outcome: Option<RunOutcome>,
    finished_at: Option<DateTime<Utc>>,
    version: u64,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Present unless the run could not start at all.
    pub completion: Option<Completion>,
    pub error: Option<String>,
}

impl RunEntry {
    fn new(spec: &RunSpec, ui_updates: UiUpdates) -> Self {
        Self {
            id: Uuid::now_v7(),
            created_at: Utc::now(),
            query: spec.query.clone(),
            model: spec.models.root.clone(),
            cancel: CancellationToken::new(),
            started: Instant::now(),
            data: Mutex::new(RunData {
                status: RunStatus::Running,
                events: Vec::new(),
                tree: RunTree::new("rlm serve"),
                outcome: None,
                finished_at: None,
                version: 0,
            }),
            changed: watch::channel(0).0,
            ui_root: OnceLock::new(),
            ui_updates,
        }
    }

    fn lock(&self) -> MutexGuard<'_, RunData> {
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self, data: &mut RunData) {
        data.version += 1;
        self.changed.send_replace(data.version);
    }

    fn record(&self, event: &TraceEvent) {
        let outline = RunTree::outline_of(event);
        let update = {
            let mut data = self.lock();
            data.events.push(Arc::new(event.clone()));
            let update = data.tree.push(outline);
            if let Some(root) = data.tree.root() {
                // Under the lock: the run is findable by this id as soon as the viewer can list it.
                let _ = self.ui_root.set(root);
            }
            self.bump(&mut data);
            update
        };
        self.ui_updates.send(update);
    }

    fn finish(&self, outcome: Result<Completion, RlmError>) {
        let (status, outcome) = match outcome {
            Ok(done) => (RunStatus::Completed, RunOutcome { completion: Some(done), error: None }),
            Err(RlmError::Failed { message, completion }) => {
                let status = if completion.finished_by == FinishedBy::Cancelled {
                    RunStatus::Cancelled
                } else {
                    RunStatus::Failed
                };
                (status, RunOutcome { completion: Some(*completion), error: Some(message) })
            }
            Err(err) => (RunStatus::Failed, RunOutcome { completion: None, error: Some(err.to_string()) }),
        };
        let events = {
            let mut data = self.lock();
            data.status = status;
            data.outcome = Some(outcome);
            data.finished_at = Some(Utc::now());
            self.bump(&mut data);
            data.events.len()
        };
        // The run list shows the new status even when the run ended without its final event.
        if let Some(&run_id) = self.ui_root.get() {
            self.ui_updates.send(Update::Events { run_id, events });
        }
    }

    /// Time since the run started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn status(&self) -> RunStatus {
        self.lock().status
    }

    pub fn outcome(&self) -> Option<RunOutcome> {
        self.lock().outcome.clone()
    }

    pub fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.lock().finished_at
    }

    /// Events from index `from` on, and whether the run has ended.
    pub fn events_from(&self, from: usize) -> (Vec<Arc<TraceEvent>>, bool) {
        let data = self.lock();
        (data.events.get(from..).map(<[_]>::to_vec).unwrap_or_default(), data.outcome.is_some())
    }

    /// The run as the viewer's run list shows it; `None` before its first event. A run that ended without its
    /// top-level `final` event (it could not start, or panicked) is shown as ended, with its error.
    pub(crate) fn ui_summary(&self) -> Option<RunSummary> {
        let data = self.lock();
        let mut summary = data.tree.summary()?;
        if summary.status == rlm_viewer::RunStatus::Running && data.status != RunStatus::Running {
            summary.status = rlm_viewer::RunStatus::Finished;
            let by = data.outcome.as_ref().and_then(|o| o.completion.as_ref()).map(|c| c.finished_by);
            let by = by.unwrap_or(if data.status == RunStatus::Cancelled {
                FinishedBy::Cancelled
            } else {
                FinishedBy::Error
            });
            summary.finished_by = Some(by.as_str().to_owned());
            summary.error = summary.error.or_else(|| data.outcome.as_ref().and_then(|o| o.error.clone()));
        }
        Some(summary)
    }

    /// The viewer's outlines of the events `offset..offset + limit`.
    pub(crate) fn ui_outline(&self, offset: usize, limit: usize) -> rlm_viewer::Page<rlm_viewer::EventOutline> {
        self.lock().tree.outline(offset, limit)
    }

    /// Events `offset..offset + limit` (fewer at the end), and how many there are in all.
    pub(crate) fn events_page(&self, offset: usize, limit: usize) -> (Vec<Arc<TraceEvent>>, usize) {
        let data = self.lock();
        let start = offset.min(data.events.len());
        let end = start.saturating_add(limit).min(data.events.len());
        (data.events[start..end].to_vec(), data.events.len())
    }

    /// Waits for the next change after the caller's last look.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Waits until the run has ended.
    pub async fn wait(&self) -> RunOutcome {
        let mut changes = self.subscribe();
        loop {
            if let Some(outcome) = self.outcome() {
                return outcome;
            }
            if changes.changed().await.is_err() {
                // The sender lives as long as `self`; this cannot happen while we borrow it.
                return RunOutcome { completion: None, error: Some("run state lost".into()) };
            }
        }
    }
}

/// Whether `event` is the last event of the top-level run.
pub fn is_top_level_final(event: &TraceEvent) -> bool {
    event.depth == 0 && event.parent_run_id.is_none() && matches!(event.body, EventBody::Final(_))
}

/// Sees every event of a run tree live and stores it in the run's entry.
#[derive(Debug)]
struct Observer {
    run: Arc<RunEntry>,
    db: Option<Arc<PostgresSink>>,
}

impl TraceSink for Observer {
    fn record(&self, event: &TraceEvent) {
        self.run.record(event);
        if let Some(db) = &self.db {
            db.record(event);
        }
    }

    // The shared database writer keeps going between runs (its queue spills to a spool file, never blocks); it is
    // drained once, at shutdown ([`AppState::close_trace_db`]), not at the end of every run.

    fn flush(&self) -> rlm::protocol::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RunSpec {
        RunSpec {
            context: Context::text(""),
            query: "q".into(),
            models: ModelPlan::new("m"),
            limits: Limits::default(),
            temperature: None,
        }
    }

    #[test]
    fn registry_evicts_the_oldest_finished_run_and_keeps_running_ones() {
        let mut registry = Registry::default();
        let running = Arc::new(RunEntry::new(&spec(), UiUpdates(broadcast::channel(4).0.downgrade())));
        registry.insert(Arc::clone(&running), 2);
        let done = Arc::new(RunEntry::new(&spec(), UiUpdates(broadcast::channel(4).0.downgrade())));
        done.finish(Err(RlmError::Config("x".into())));
        registry.insert(Arc::clone(&done), 2);
        let newest = Arc::new(RunEntry::new(&spec(), UiUpdates(broadcast::channel(4).0.downgrade())));
        let evicted = registry.insert(Arc::clone(&newest), 2);
        assert_eq!(evicted.iter().map(|run| run.id).collect::<Vec<_>>(), [done.id]);
        assert!(registry.by_id.contains_key(&running.id));
        assert!(!registry.by_id.contains_key(&done.id));
        assert!(registry.by_id.contains_key(&newest.id));
        assert_eq!(registry.order.len(), 2);
        // Over capacity with only running runs: nothing is evicted.
        let another = Arc::new(RunEntry::new(&spec(), UiUpdates(broadcast::channel(4).0.downgrade())));
        registry.insert(Arc::clone(&another), 2);
        assert_eq!(registry.by_id.len(), 3);
    }

    #[tokio::test]
    async fn wait_returns_once_the_run_finished() {
        let run = Arc::new(RunEntry::new(&spec(), UiUpdates(broadcast::channel(4).0.downgrade())));
        let waiter = {
            let run = Arc::clone(&run);
            tokio::spawn(async move { run.wait().await })
        };
        tokio::task::yield_now().await;
        run.finish(Err(RlmError::Config("boom".into())));
        let outcome = waiter.await.unwrap();
        assert!(outcome.error.unwrap().contains("boom"));
        assert_eq!(run.status(), RunStatus::Failed);
    }
}
