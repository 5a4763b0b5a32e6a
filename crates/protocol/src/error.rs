use serde::{Deserialize, Serialize};

/// Errors that cross the trait boundaries of this crate.
///
/// User-code errors are *not* errors here: they are data in [`crate::CellOutcome::error`], returned to the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Error {
    /// The model provider answered with an error or could not be reached.
    #[error("model request failed{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Model {
        /// The HTTP status the provider answered with, when there was one.
        status: Option<u16>,
        /// What went wrong, for people.
        message: String,
        /// Whether trying again later could succeed (429, 5xx, timeouts, connection failures).
        retryable: bool,
    },
    /// The executor failed for a reason that is not the user code's fault.
    #[error("executor failed: {0}")]
    Executor(String),
    /// The REPL session can no longer be used (crashed, trapped, evicted).
    #[error("REPL session is gone: {0}")]
    SessionDead(String),
    /// The operation was cancelled by the caller.
    #[error("cancelled")]
    Cancelled,
    /// A budget (sub-calls, tokens, time) ran out.
    #[error("budget exhausted: {0}")]
    Budget(String),
    /// Input that cannot be used as given.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A file or stream could not be read or written.
    #[error("i/o error: {0}")]
    Io(String),
}

impl Error {
    /// A model error.
    pub fn model(status: Option<u16>, message: impl Into<String>, retryable: bool) -> Self {
        Self::Model { status, message: message.into(), retryable }
    }

    /// Whether trying again later could succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Model { retryable: true, .. })
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Self::Io(err.to_string())
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
