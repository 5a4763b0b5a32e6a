//! The bounded registry of recent runs: each run's events so far, its outcome, and what the viewer is told.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rlm::{
    CancellationToken, Completion, Context, EventBody, FinishedBy, Limits, ModelPlan, RlmError, TraceEvent, TraceSink,
};
use rlm_trace_postgres::PostgresSink;
use rlm_viewer::{RunSummary, RunTree, Update};
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

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
pub(crate) struct Registry {
    pub by_id: HashMap<Uuid, Arc<RunEntry>>,
    /// Insertion order, oldest first.
    pub order: VecDeque<Uuid>,
}

impl Registry {
    /// Adds `run`, evicting the oldest finished runs beyond `capacity`; returns the evicted ones.
    pub fn insert(&mut self, run: Arc<RunEntry>, capacity: usize) -> Vec<Arc<RunEntry>> {
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

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
    pub(crate) started: Instant,
    data: Mutex<RunData>,
    /// Bumped on every new event and when the run ends.
    changed: watch::Sender<u64>,
    /// The `run_id` of the top-level trace events (set by the first event): the viewer's id of the run.
    pub(crate) ui_root: OnceLock<Uuid>,
    ui_updates: UiUpdates,
}

/// Sends the viewer's updates while the channel is open (until the shutdown begins).
#[derive(Debug, Clone)]
pub(crate) struct UiUpdates(pub broadcast::WeakSender<Update>);

impl UiUpdates {
    pub fn send(&self, update: Update) {
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
    pub(crate) fn new(spec: &RunSpec, ui_updates: UiUpdates) -> Self {
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

    pub(crate) fn finish(&self, outcome: Result<Completion, RlmError>) {
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
pub(crate) struct Observer {
    pub run: Arc<RunEntry>,
    pub db: Option<Arc<PostgresSink>>,
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
