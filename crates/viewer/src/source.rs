//! Where the viewer's runs come from: the [`RunSource`] trait and the shapes it hands to the web page.

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::broadcast;
use uuid::Uuid;

/// Everything that can go wrong reading runs.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("no run with id {0}")]
    UnknownRun(Uuid),
    #[error("{context}: {error}")]
    Io { context: String, error: std::io::Error },
}

impl SourceError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { context: context.into(), error: source }
    }
}

/// A slice of a longer list: `items` start at position `offset` of `total`.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub offset: usize,
    pub total: usize,
    pub items: Vec<T>,
}

/// One top-level run tree (a depth-0 run with all its child RLMs), as the run list shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunSummary {
    pub run_id: Uuid,
    /// Where the run was read from (a file name, or a label of the embedding service).
    pub source: String,
    pub query: Option<String>,
    pub root_model: Option<String>,
    pub sub_model: Option<String>,
    /// Start, milliseconds since the Unix epoch.
    pub started_ms: Option<f64>,
    /// `running` until the run's depth-0 `final` event arrives, then `finished`.
    pub status: RunStatus,
    pub finished_by: Option<String>,
    pub limit: Option<String>,
    pub error: Option<String>,
    /// The final answer, shortened for the list.
    pub answer: Option<String>,
    pub iterations: u32,
    pub sub_calls: u64,
    pub child_runs: u64,
    pub tokens: u64,
    /// Cost, when the trace records one (`cost` on the final event or its usage).
    pub cost: Option<f64>,
    pub duration_ms: Option<f64>,
    /// Events of the whole tree.
    pub events: usize,
    /// Events that carry an error (failed cells, model calls and sub-calls, an erroring final).
    pub errors: usize,
    /// Size of the tree's events in bytes.
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    #[default]
    Running,
    Finished,
}

/// The small part of one event that the tree and the timeline need; the page fetches the full event only when a
/// node is opened. `seq` is the event's position in its run tree (what [`RunSource::events`] pages over).
#[derive(Debug, Clone, Default, Serialize)]
pub struct EventOutline {
    pub seq: usize,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_run_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_event_id: Option<Uuid>,
    pub depth: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iteration: Option<u32>,
    /// Start, milliseconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts_ms: Option<f64>,
    /// Latency of a call, duration of a cell or of a whole run (`final`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    /// The error, shortened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Output characters the model did not see.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<u64>,
    /// `llm` or `rlm` for sub-calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub child_run_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell_index: Option<u32>,
    /// A one-line preview: the query, the response, the code, the prompt or the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_calls: Option<u64>,
    /// Size of the full event in bytes.
    pub bytes: u64,
}

/// A change the page should know about.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Update {
    /// The run tree `run_id` now has `events` events (new ones were appended; a new tree may have appeared).
    Events { run_id: Uuid, events: usize },
    /// The run tree `run_id` is gone (a service forgot it): it no longer appears in the run list.
    Removed { run_id: Uuid },
    /// Everything may have changed (a file was replaced): reload.
    Reset,
}

/// A collection of run trees the viewer can show: a set of JSONL files ([`crate::FileSource`]), the runs of a
/// service ([`crate::MemorySource`], or a service's own store with a [`crate::RunTree`] per run), or anything else.
///
/// Events of a run tree are numbered `0..total` in the order they were recorded; pages index into that order.
#[async_trait]
pub trait RunSource: Send + Sync + std::fmt::Debug + 'static {
    /// All top-level run trees, oldest first.
    async fn runs(&self) -> Result<Vec<RunSummary>, SourceError>;

    /// Outlines of the events `offset..offset + limit` of the run tree `run_id` (fewer at the end).
    async fn outline(&self, run_id: Uuid, offset: usize, limit: usize) -> Result<Page<EventOutline>, SourceError>;

    /// Full events `offset..offset + limit` of the run tree `run_id`, each one JSON object as text (one trace line).
    async fn events(&self, run_id: Uuid, offset: usize, limit: usize) -> Result<Page<String>, SourceError>;

    /// Notifications of new events.
    fn subscribe(&self) -> broadcast::Receiver<Update>;
}
