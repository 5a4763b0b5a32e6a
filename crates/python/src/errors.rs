//! Errors of the extension and how they become the Python exceptions of `rlm.errors`.

use pyo3::prelude::*;
use rlm::RlmError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// Settings that cannot work (no model, no key for OpenAI, a bad URL): `rlm.ConfigurationError`.
    #[error("{0}")]
    Config(String),
    /// The model provider failed or could not be reached: `rlm.ModelError`.
    #[error("{0}")]
    Model(String),
    /// The executor (REPL, sandbox, sandbox service) failed: `rlm.SandboxError`.
    #[error("{0}")]
    Sandbox(String),
    /// A run ended without an answer; carries its result as JSON (`rlm.RunError.result`).
    #[error("{message}")]
    Failed { class: &'static str, message: String, result_json: Option<String> },
    /// The extension's own machinery failed (the async runtime).
    #[error("{0}")]
    Runtime(String),
}

impl From<RlmError> for Error {
    fn from(err: RlmError) -> Self {
        match err {
            RlmError::Config(message) => Self::Config(message),
            // The library's message names no front's settings; this front's are arguments and variables.
            RlmError::NoApiKey => Self::Config(
                "no API key for OpenAI: pass api_key= or set OPENAI_API_KEY, or point base_url= (LLM_BASE_URL) at an \
                 OpenAI-compatible server such as llama.cpp, vLLM or Ollama"
                    .to_owned(),
            ),
            err @ RlmError::NoModel => Self::Config(err.to_string()),
            RlmError::Models(err) => Self::Config(err.to_string()),
            RlmError::Trace(err) => Self::Config(format!("cannot write the trace: {err}")),
            RlmError::Protocol(err @ rlm::protocol::Error::Model { .. }) => Self::Model(err.to_string()),
            RlmError::Protocol(err) => Self::Sandbox(err.to_string()),
            RlmError::Failed { message, completion } => {
                let class = match completion.finished_by {
                    rlm::FinishedBy::Cancelled => "CancelledError",
                    // The engine names the failing part at the start of its message (engine/src/run.rs).
                    rlm::FinishedBy::Error if message.starts_with("the root model") => "ModelError",
                    rlm::FinishedBy::Error if message.starts_with("the direct model") => "ModelError",
                    rlm::FinishedBy::Error if message.contains("the REPL") && is_connection_failure(&message) => {
                        "SandboxConnectionError"
                    }
                    rlm::FinishedBy::Error if message.contains("the REPL") => "SandboxError",
                    _ => "RunError",
                };
                let result_json = serde_json::to_string(&completion).ok();
                Self::Failed { class, message, result_json }
            }
        }
    }
}

impl From<Error> for PyErr {
    fn from(err: Error) -> Self {
        Python::attach(|py| raise(py, err))
    }
}

/// Whether an executor error says the sandbox service could not be reached.
fn is_connection_failure(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    ["connect", "unreachable", "connection refused", "dns error", "timed out"].iter().any(|m| lower.contains(m))
}

/// The `rlm.errors` exception for `err`, with the run's result attached (as `result_json`) when there is one.
pub(crate) fn raise(py: Python<'_>, err: Error) -> PyErr {
    let (class, result_json) = match &err {
        Error::Config(_) => ("ConfigurationError", None),
        Error::Model(_) => ("ModelError", None),
        Error::Sandbox(message) if is_connection_failure(message) => ("SandboxConnectionError", None),
        Error::Sandbox(_) => ("SandboxError", None),
        Error::Failed { class, result_json, .. } => (*class, result_json.clone()),
        Error::Runtime(_) => ("RlmError", None),
    };
    let message = err.to_string();
    let made = py.import("rlm.errors").and_then(|module| module.getattr(class)).and_then(|cls| cls.call1((message,)));
    match made {
        Ok(exception) => {
            if let Some(json) = result_json
                && let Err(e) = exception.setattr("result_json", json)
            {
                return e;
            }
            PyErr::from_value(exception)
        }
        // Without the Python half of the package (the module imported on its own): a plain RuntimeError.
        Err(_) => pyo3::exceptions::PyRuntimeError::new_err(err.to_string()),
    }
}
