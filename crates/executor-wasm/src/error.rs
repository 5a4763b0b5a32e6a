//! The crate's internal error type, mapped into [`rlm_protocol::Error`] at the trait boundary.

/// What can go wrong inside the wasm executor (user-code errors are not errors: they are cell outcomes).
#[derive(Debug, thiserror::Error)]
pub(crate) enum WasmError {
    /// The interpreter module is missing or cannot be compiled / loaded.
    #[error("{0}")]
    Module(String),
    /// wasmtime failed outside of user code (instantiation, linking).
    #[error("wasmtime: {0}")]
    Runtime(String),
    /// Reading or writing a file (module, cache, context) failed.
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    /// The input cannot be used (e.g. a context file that is not UTF-8).
    #[error("{0}")]
    InvalidInput(String),
    /// The session's sandbox died and could not be rebuilt, or was closed.
    #[error("{0}")]
    Dead(String),
}

impl WasmError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { context: context.into(), source }
    }
}

impl From<wasmtime::Error> for WasmError {
    fn from(err: wasmtime::Error) -> Self {
        Self::Runtime(format!("{err:#}"))
    }
}

impl From<WasmError> for rlm_protocol::Error {
    fn from(err: WasmError) -> Self {
        match err {
            WasmError::Io { .. } => Self::Io(err.to_string()),
            WasmError::InvalidInput(message) => Self::InvalidInput(message),
            WasmError::Dead(message) => Self::SessionDead(message),
            WasmError::Module(_) | WasmError::Runtime(_) => Self::Executor(err.to_string()),
        }
    }
}

pub(crate) type WasmResult<T> = Result<T, WasmError>;
