use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{Context, ContextInfo, Result, SharedText};

/// Which kind of sub-call code in the REPL made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubCallKind {
    /// `llm_query` / `llm_query_batched`: one plain model call per prompt.
    Llm,
    /// `rlm_query` / `rlm_query_batched`: a child RLM one level deeper per prompt.
    Rlm,
}

/// One prompt that REPL code sends back to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubCall {
    /// Which function sent it.
    pub kind: SubCallKind,
    /// The prompt text (shared, not copied, on its way to the model).
    pub prompt: SharedText,
    /// Model requested by the code (`llm_query(p, model="...")`); `None` means the configured default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// The answer to one [`SubCall`]: the response text, or an error message the REPL function turns into a string.
pub type SubCallResult = std::result::Result<String, String>;

/// The host side of the code-runtime boundary: whichever executor runs the code, sub-calls come back through here.
///
/// A batch (`llm_query_batched`) arrives as one call with several entries so the host can run them concurrently;
/// the answers come back in the same order. A failure of one entry never fails the others.
#[async_trait]
pub trait SubCallHost: Send + Sync {
    /// Answers `calls`, in their order.
    async fn sub_calls(&self, calls: Vec<SubCall>) -> Vec<SubCallResult>;
}

/// What a fresh REPL session is built with.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// The data loaded as the session's `context` variable.
    pub context: Context,
    /// Wall-clock limit for one cell; the cell is interrupted with a clear error and the session stays usable.
    pub cell_timeout: Duration,
    /// Upper bound on captured stdout and stderr per cell, in characters, to bound memory; the engine truncates
    /// further for what the model sees.
    pub max_captured_chars: usize,
}

impl SessionSpec {
    /// The cell time limit of [`SessionSpec::new`].
    pub const DEFAULT_CELL_TIMEOUT: Duration = Duration::from_secs(120);
    /// The capture limit of [`SessionSpec::new`].
    pub const DEFAULT_MAX_CAPTURED_CHARS: usize = 1_000_000;

    /// A session with `context` and the default limits.
    pub fn new(context: Context) -> Self {
        Self { context, cell_timeout: Self::DEFAULT_CELL_TIMEOUT, max_captured_chars: Self::DEFAULT_MAX_CAPTURED_CHARS }
    }
}

/// An exception raised by user code, or an interruption (timeout), as data for the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellError {
    /// Exception type name, e.g. `ZeroDivisionError`; `TimeoutError` for an interrupted cell.
    pub kind: String,
    /// The exception's message (may be empty).
    pub message: String,
    /// A short traceback (the frames in user code), already formatted.
    #[serde(default)]
    pub traceback: String,
}

impl std::fmt::Display for CellError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.message.is_empty() { write!(f, "{}", self.kind) } else { write!(f, "{}: {}", self.kind, self.message) }
    }
}

/// `FINAL_VAR(name)` called from code, resolved in the namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalVar {
    /// The variable named.
    pub name: String,
    /// `str()` of the variable, or `None` when no such variable exists.
    pub value: Option<String>,
}

/// The result of running one cell.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellOutcome {
    /// Captured standard output, up to the capture limit.
    pub stdout: String,
    /// Captured standard error, up to the capture limit.
    pub stderr: String,
    /// The exception the cell raised, or its interruption; `None` when it completed.
    pub error: Option<CellError>,
    /// Wall-clock time the cell ran, serialized in milliseconds.
    #[serde(with = "duration_ms")]
    pub duration: Duration,
    /// Characters of stdout+stderr dropped because the capture limit was reached.
    #[serde(default)]
    pub dropped_chars: u64,
    /// Set when the cell called `FINAL_VAR(name)`.
    #[serde(default)]
    pub final_var: Option<FinalVar>,
    /// Set when the cell left `answer["ready"]` true: `str(answer["content"])`.
    #[serde(default)]
    pub answer: Option<String>,
}

/// Runs REPL sessions. One executor serves many sessions; each session has its own namespace.
#[async_trait]
pub trait Executor: Send + Sync + std::fmt::Debug {
    /// Short name recorded in traces: `local`, `wasm`, `remote`.
    fn name(&self) -> &str;

    /// Starts a session with `context` loaded. Sub-calls made by its code are served by `host`.
    async fn start_session(&self, spec: SessionSpec, host: Arc<dyn SubCallHost>) -> Result<Box<dyn ReplSession>>;
}

/// A persistent REPL: variables survive from one cell to the next.
#[async_trait]
pub trait ReplSession: Send {
    /// Shape and size of the loaded `context`.
    fn context_info(&self) -> &ContextInfo;

    /// Runs `code`. User-code errors and timeouts are data in the outcome; `Err` means the session itself failed.
    async fn run_cell(&mut self, code: &str) -> Result<CellOutcome>;

    /// `str()` of a user variable, or `None` when it does not exist.
    async fn get_variable(&mut self, name: &str) -> Result<Option<String>>;

    /// Names of the user's variables (reserved names and private `_` names excluded), sorted.
    async fn variable_names(&mut self) -> Result<Vec<String>>;

    /// Releases the session's resources.
    async fn close(self: Box<Self>) -> Result<()>;

    /// A handle that ends this session at once from anywhere, even while a cell runs (that cell then fails and the
    /// session is dead). `None` when the executor cannot stop a running cell from outside; then `close` waits for it.
    fn abort_handle(&self) -> Option<AbortHandle> {
        None
    }
}

/// Ends a session from outside without waiting for it (see [`ReplSession::abort_handle`]). Cheap to clone.
#[derive(Clone)]
pub struct AbortHandle(Arc<dyn Fn() + Send + Sync>);

impl AbortHandle {
    /// A handle whose [`AbortHandle::abort`] calls `abort`.
    pub fn new(abort: impl Fn() + Send + Sync + 'static) -> Self {
        Self(Arc::new(abort))
    }

    /// Stops the session; returns at once. Calling it again does nothing more.
    pub fn abort(&self) {
        (self.0)();
    }
}

impl std::fmt::Debug for AbortHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AbortHandle")
    }
}

pub(crate) mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(duration.as_secs_f64() * 1000.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(deserializer)?;
        Ok(Duration::from_secs_f64(ms.max(0.0) / 1000.0))
    }
}
