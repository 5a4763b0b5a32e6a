//! The crate's internal error type, mapped into [`rlm_protocol::Error`] at the trait boundary.

use pyo3::PyErr;

/// What can go wrong inside the local executor (user-code errors are not errors: they are cell outcomes).
#[derive(Debug, thiserror::Error)]
pub(crate) enum LocalError {
    /// The embedded interpreter cannot be used (version mismatch, failed start-up).
    #[error("{0}")]
    Interpreter(String),
    /// A Python call made by the executor itself failed.
    #[error("python error in the executor: {0}")]
    Python(String),
    /// Reading a context file failed.
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    /// The input cannot be used (e.g. a context file that is not UTF-8).
    #[error("{0}")]
    InvalidInput(String),
    /// A blocking task of the executor panicked or was cancelled.
    #[error("executor task failed: {0}")]
    Task(String),
}

impl From<PyErr> for LocalError {
    fn from(err: PyErr) -> Self {
        Self::Python(err.to_string())
    }
}

impl From<tokio::task::JoinError> for LocalError {
    fn from(err: tokio::task::JoinError) -> Self {
        Self::Task(err.to_string())
    }
}

impl From<LocalError> for rlm_protocol::Error {
    fn from(err: LocalError) -> Self {
        match err {
            LocalError::Io { .. } => Self::Io(err.to_string()),
            LocalError::InvalidInput(message) => Self::InvalidInput(message),
            LocalError::Interpreter(_) | LocalError::Python(_) | LocalError::Task(_) => Self::Executor(err.to_string()),
        }
    }
}

pub(crate) type LocalResult<T> = Result<T, LocalError>;
