//! A persistent RLM (`RLM_REPL(persistent=True)`): one REPL for every `completion`, through [`rlm::RlmSession`].

use std::sync::Arc;

use pyo3::prelude::*;

use crate::errors::{Error, raise};
use crate::{CancelToken, Engine, context_from, wait};

/// One REPL that answers query after query. Later contexts become `context_1`, `context_2`, …; earlier
/// conversations `history_0`, `history_1`, ….
#[pyclass(module = "rlm._rlm", frozen)]
pub(crate) struct Conversation {
    inner: Arc<tokio::sync::Mutex<Option<rlm::RlmSession>>>,
    log_steps: bool,
}

/// Starts a conversation of `engine` over the context (`context`, also `context_0`).
#[pyfunction]
pub(crate) fn start_conversation(
    py: Python<'_>,
    engine: &Engine,
    context_kind: &str,
    context: String,
) -> PyResult<Conversation> {
    let context = context_from(context_kind, context)?;
    let rlm = engine.rlm.clone();
    let session = wait(py, None, async move { rlm.session(context).await })?.map_err(|e| raise(py, Error::from(e)))?;
    Ok(Conversation { inner: Arc::new(tokio::sync::Mutex::new(Some(session))), log_steps: engine.log_steps })
}

#[pymethods]
impl Conversation {
    /// Adds a context; returns its variable name.
    fn add_context(&self, py: Python<'_>, context_kind: &str, context: String) -> PyResult<String> {
        let context = context_from(context_kind, context)?;
        let inner = self.inner.clone();
        let added = wait(py, None, async move {
            match inner.lock().await.as_mut() {
                Some(session) => session.add_context(context).await.map_err(Error::from),
                None => Err(Error::Sandbox("the conversation is closed".into())),
            }
        })?;
        added.map_err(|e| raise(py, e))
    }

    /// Answers `query` in this conversation; the result as JSON text (see `rlm.RLMResult`).
    #[pyo3(signature = (query, cancel=None))]
    fn ask(&self, py: Python<'_>, query: String, cancel: Option<&CancelToken>) -> PyResult<String> {
        let inner = self.inner.clone();
        let cancel = cancel.map(|c| c.token.clone()).unwrap_or_default();
        let token = cancel.clone();
        let observer: Option<Arc<dyn rlm::TraceSink>> = self.log_steps.then(|| Arc::new(crate::logging::RunLog) as _);
        let outcome = wait(py, Some(&cancel), async move {
            match inner.lock().await.as_mut() {
                Some(session) => session.ask_with(&query, token, observer).await.map_err(Error::from),
                None => Err(Error::Sandbox("the conversation is closed".into())),
            }
        })?;
        match outcome {
            Ok(completion) => Ok(serde_json::to_string(&completion).map_err(|e| Error::Runtime(e.to_string()))?),
            Err(err) => Err(raise(py, err)),
        }
    }

    /// Ends the REPL. Closing twice is fine.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let inner = self.inner.clone();
        let closed = wait(py, None, async move {
            match inner.lock().await.take() {
                Some(session) => session.close().await.map_err(Error::from),
                None => Ok(()),
            }
        })?;
        closed.map_err(|e| raise(py, e))
    }
}
