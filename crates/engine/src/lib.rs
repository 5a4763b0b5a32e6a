//! The RLM loop. A run builds its messages, calls its root model, runs the code blocks of the reply in a persistent
//! REPL, checks for an answer, and feeds the output back — until the model answers or a budget runs out. Code in the
//! REPL reaches models through [`rlm_protocol::SubCallHost`]; `rlm_query` starts a child run one level deeper.
//!
//! The engine depends only on the traits of `rlm-protocol`: any [`ModelClient`], [`Executor`] and [`TraceSink`].

#![warn(missing_docs)]

mod compaction;
mod config;
mod guard;
mod host;
mod notes;
mod parse;
mod prompt;
mod question;
mod route;
mod run;
mod session;

use std::sync::Arc;
use std::time::Duration;

use rlm_protocol::{Context, Executor, FinishedBy, LimitKind, ModelClient, RoutePath, TraceSink, UsageReport};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use compaction::{HISTORY_VARIABLE, estimate_tokens};
pub use config::{CompactionSettings, EngineConfig, Limits, ModelPlan, PromptSettings, RouteMode};
pub use parse::{ParsedResponse, parse_response};
pub use prompt::PromptProfile;
pub use session::{
    JournalEntry, RecordedSubCall, SAVED_SESSION_VERSION, SavedContext, SavedSession, Session, SessionTurn,
};

/// Runs RLMs. Cheap to clone; one engine serves any number of concurrent runs.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

#[derive(Debug)]
struct EngineInner {
    model: Arc<dyn ModelClient>,
    executor: Arc<dyn Executor>,
    config: EngineConfig,
}

/// Per-run options that are not configuration: where events go and how to stop early.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Receives every event of the run tree as it happens.
    pub trace: Arc<dyn TraceSink>,
    /// Cancelling stops the run at the next await point; the trace still gets its final event.
    pub cancel: CancellationToken,
    /// Serves this run tree's model calls instead of the engine's client: the engine's client wrapped for this run
    /// alone, such as a dollar budget over the tree.
    pub model: Option<Arc<dyn ModelClient>>,
}

/// How a run ended. A run always produces one: failures are reported in `finished_by` and `error`, never as a
/// missing result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunResult {
    /// The id of the top-level run (`run_id` of its trace events).
    pub run_id: Uuid,
    /// The answer; `None` when the run was cancelled or failed, or when a limit ran out without a usable answer
    /// (never a placeholder); then `error` says why.
    pub answer: Option<String>,
    /// How the top-level run ended.
    pub finished_by: FinishedBy,
    /// Which limit ran out, when `finished_by` is `limit`.
    pub limit: Option<LimitKind>,
    /// Root-loop iterations of the top-level run.
    pub iterations: u32,
    /// Sub-calls made anywhere in the tree.
    pub sub_calls: u64,
    /// Tokens used anywhere in the tree, in total and per model.
    pub usage: UsageReport,
    /// Wall-clock time of the whole run, serialized in seconds.
    #[serde(serialize_with = "duration_secs")]
    pub duration: Duration,
    /// Why the run ended without an answer, or why its last answer was refused.
    pub error: Option<String>,
    /// Whether routing answered with one direct call or ran the RLM.
    pub path: RoutePath,
}

fn duration_secs<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

impl Engine {
    /// An engine that calls `model`, runs code with `executor` and follows `config`.
    pub fn new(model: Arc<dyn ModelClient>, executor: Arc<dyn Executor>, config: EngineConfig) -> Self {
        Self { inner: Arc::new(EngineInner { model, executor, config }) }
    }

    /// The configuration every run follows.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The executor runs use.
    pub fn executor(&self) -> &Arc<dyn Executor> {
        &self.inner.executor
    }

    /// The model provider runs use.
    pub fn model_client(&self) -> &Arc<dyn ModelClient> {
        &self.inner.model
    }

    /// Answers `query` over `context`.
    pub async fn run(&self, context: Context, query: &str, options: RunOptions) -> RunResult {
        run::run_tree(self.inner.clone(), context, query, options).await
    }

    /// Starts a session over `context`: one REPL that answers query after query (see [`Session`]).
    pub async fn start_session(&self, context: Context) -> Result<Session, rlm_protocol::Error> {
        Session::start(self.inner.clone(), context).await
    }

    /// Restores a saved session by running its journal again; recorded sub-call answers stand in for the models.
    pub async fn resume_session(&self, saved: SavedSession) -> Result<Session, rlm_protocol::Error> {
        Session::resume(self.inner.clone(), saved).await
    }
}
