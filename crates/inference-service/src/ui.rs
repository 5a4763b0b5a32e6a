//! The trajectory viewer at `/ui`: [`rlm_viewer`]'s page over the server's own runs, read straight from the
//! registry of recent runs. Each run keeps its events once (for `/v1/runs`) plus the viewer's small outline of each;
//! a run evicted from the registry is gone from the viewer too.

use std::sync::Arc;

use async_trait::async_trait;
use rlm_viewer::{EventOutline, MAX_EVENTS_PER_PAGE, MAX_PAGE_BYTES, Page, RunSource, RunSummary, SourceError, Update};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::registry::RunEntry;
use crate::state::AppState;

/// The registry as a [`RunSource`]. The viewer's id of a run is its `root_run_id` (the `run_id` of its top-level
/// trace events); runs are listed once their first event is recorded.
#[derive(Debug, Clone)]
pub(crate) struct RegistrySource {
    state: AppState,
}

impl RegistrySource {
    pub(crate) fn new(state: AppState) -> Self {
        Self { state }
    }

    fn run(&self, run_id: Uuid) -> Result<Arc<RunEntry>, SourceError> {
        self.state.run_by_root(run_id).ok_or(SourceError::UnknownRun(run_id))
    }
}

#[async_trait]
impl RunSource for RegistrySource {
    async fn runs(&self) -> Result<Vec<RunSummary>, SourceError> {
        Ok(self.state.runs_oldest_first().iter().filter_map(|run| run.ui_summary()).collect())
    }

    async fn outline(&self, run_id: Uuid, offset: usize, limit: usize) -> Result<Page<EventOutline>, SourceError> {
        Ok(self.run(run_id)?.ui_outline(offset, limit))
    }

    async fn events(&self, run_id: Uuid, offset: usize, limit: usize) -> Result<Page<String>, SourceError> {
        let (events, total) = self.run(run_id)?.events_page(offset, limit.min(MAX_EVENTS_PER_PAGE));
        // Serialized outside of the run's lock; at least one event, then as many as fit in a page.
        let mut items = Vec::with_capacity(events.len());
        let mut bytes = 0u64;
        for event in events {
            let line = serde_json::to_string(&*event)
                .map_err(|err| SourceError::Io { context: "serializing an event".into(), error: err.into() })?;
            bytes += line.len() as u64;
            if !items.is_empty() && bytes > MAX_PAGE_BYTES {
                break;
            }
            items.push(line);
        }
        Ok(Page { offset, total, items })
    }

    fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.state.subscribe_ui()
    }
}
