//! Runs kept in memory: what a service that runs RLMs itself can hand to the viewer.

use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use rlm_protocol::{TraceEvent, TraceSink};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::index::{Index, outline_line};
use crate::source::Update;
use crate::source::{EventOutline, Page, RunSource, RunSummary, SourceError};

#[derive(Debug, Default)]
struct State {
    lines: Vec<String>,
    index: Index<usize>,
}

/// A [`RunSource`] fed event by event: [`MemorySource::push`] (or use it as a [`TraceSink`]). Every event is kept in
/// memory as its JSON line.
#[derive(Debug)]
pub struct MemorySource {
    label: String,
    state: Mutex<State>,
    updates: broadcast::Sender<Update>,
}

impl MemorySource {
    /// `label` names where the runs come from in the run list.
    pub fn new(label: impl Into<String>) -> Self {
        let (updates, _) = broadcast::channel(1024);
        Self { label: label.into(), state: Mutex::new(State::default()), updates }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds one event and notifies subscribers.
    pub fn push(&self, event: &TraceEvent) {
        match serde_json::to_string(event) {
            Ok(line) => self.push_line(line),
            Err(err) => tracing::warn!("cannot serialize a trace event: {err}"),
        }
    }

    /// Adds one event given as its JSON text (one trace line); lines that are not JSON objects are ignored.
    pub fn push_line(&self, line: String) {
        let Some(outline) = outline_line(line.as_bytes()) else { return };
        let update = {
            let mut state = self.lock();
            let slot = state.lines.len();
            state.lines.push(line);
            let root = state.index.push(slot, outline, &self.label);
            Update::Events { run_id: root, events: state.index.len_of(root) }
        };
        let _ = self.updates.send(update);
    }
}

impl TraceSink for MemorySource {
    fn record(&self, event: &TraceEvent) {
        self.push(event);
    }

    fn flush(&self) -> rlm_protocol::Result<()> {
        Ok(())
    }
}

#[async_trait]
impl RunSource for MemorySource {
    async fn runs(&self) -> Result<Vec<RunSummary>, SourceError> {
        Ok(self.lock().index.runs())
    }

    async fn outline(&self, run_id: Uuid, offset: usize, limit: usize) -> Result<Page<EventOutline>, SourceError> {
        self.lock().index.outline(run_id, offset, limit.min(crate::file::MAX_OUTLINES_PER_PAGE))
    }

    async fn events(&self, run_id: Uuid, offset: usize, limit: usize) -> Result<Page<String>, SourceError> {
        let state = self.lock();
        let page = state.index.locations(run_id, offset, limit.min(crate::file::MAX_EVENTS_PER_PAGE))?;
        let items = page.items.iter().map(|&slot| state.lines[slot].clone()).collect();
        Ok(Page { offset: page.offset, total: page.total, items })
    }

    fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.updates.subscribe()
    }
}
