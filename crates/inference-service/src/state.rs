//! Shared state and its start-up wiring: the model client and executor, the trace database writer, the run slots.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
#[cfg(feature = "local")]
use rlm::LocalExecutor;
use rlm::{Executor, FinishedBy, ModelClient, OpenAiClient, Rlm, RlmError, TraceSink};
use rlm_viewer::Update;
use tokio::sync::{Semaphore, broadcast};
use uuid::Uuid;

use rlm_executor_remote::RemoteExecutor;
use rlm_trace_postgres::PostgresSink;

use crate::config::{ExecutorChoice, ServerConfig};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::registry::{Observer, Registry, RunEntry, RunSpec, UiUpdates};

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
            #[cfg(feature = "local")]
            ExecutorChoice::Local => {
                LocalExecutor::initialize().map_err(RlmError::from)?;
                (Arc::new(LocalExecutor::new()), None)
            }
            #[cfg(not(feature = "local"))]
            ExecutorChoice::Local => {
                return Err(StartError::Config(
                    "this build has no local executor (the `local` feature): use a remote sandbox".into(),
                ));
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
        self.inner
            .config
            .default_model
            .as_deref()
            .filter(|m| !m.trim().is_empty())
            .ok_or_else(|| ApiError::bad_request("no model given and the server has no default model"))
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
        // The configured windows and direct-prompt cap belong to the configured models.
        let default_root = config.default_model.as_ref() == Some(&spec.models.root);
        if let Some(window) = config.context_window.filter(|_| default_root) {
            builder = builder.context_window(window);
        }
        if let Some(tokens) = config.direct_max_tokens.filter(|_| default_root) {
            builder = builder.direct_max_tokens(tokens);
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
