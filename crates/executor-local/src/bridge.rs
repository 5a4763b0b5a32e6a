//! The Rust object behind `llm_query` & co.: Python calls `host.call(kind, prompts, model)`, which releases the GIL
//! and waits for the session's [`SubCallHost`] on the tokio runtime the session was started on.

use std::sync::{Arc, Mutex, PoisonError};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyType;
use rlm_protocol::{SubCall, SubCallHost, SubCallKind};
use tokio::runtime::Handle;
use tokio::time::Instant;

/// The deadline of the cell currently running in a session, if any; sub-calls are abandoned when it passes.
pub(crate) type DeadlineSlot = Arc<Mutex<Option<Instant>>>;

pub(crate) fn read_deadline(slot: &DeadlineSlot) -> Option<Instant> {
    *slot.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn set_deadline(slot: &DeadlineSlot, deadline: Option<Instant>) {
    *slot.lock().unwrap_or_else(PoisonError::into_inner) = deadline;
}

#[pyclass(frozen, name = "HostBridge", module = "_rlm_prelude")]
pub(crate) struct HostBridge {
    host: Arc<dyn SubCallHost>,
    handle: Handle,
    deadline: DeadlineSlot,
    cell_timeout: Py<PyType>,
}

impl HostBridge {
    pub(crate) fn new(
        host: Arc<dyn SubCallHost>,
        handle: Handle,
        deadline: DeadlineSlot,
        cell_timeout: Py<PyType>,
    ) -> Self {
        Self { host, handle, deadline, cell_timeout }
    }
}

#[pymethods]
impl HostBridge {
    /// Sends all `prompts` to the host as one batch; returns one string per prompt, `"Error: ..."` for failed ones.
    #[pyo3(signature = (kind, prompts, model=None))]
    fn call(&self, py: Python<'_>, kind: &str, prompts: Vec<String>, model: Option<String>) -> PyResult<Vec<String>> {
        let kind = match kind {
            "llm" => SubCallKind::Llm,
            "rlm" => SubCallKind::Rlm,
            other => return Err(PyValueError::new_err(format!("unknown sub-call kind {other:?}"))),
        };
        let count = prompts.len();
        if count == 0 {
            return Ok(Vec::new());
        }
        let calls: Vec<SubCall> =
            prompts.into_iter().map(|prompt| SubCall { kind, prompt, model: model.clone() }).collect();
        let host = Arc::clone(&self.host);
        let handle = self.handle.clone();
        let deadline = read_deadline(&self.deadline);
        // Without the GIL while waiting: other Python threads (and other sessions) run meanwhile, and the watchdog
        // can take the GIL to interrupt this cell.
        let answers = py.detach(move || {
            handle.block_on(async move {
                match deadline {
                    Some(deadline) => tokio::time::timeout_at(deadline, host.sub_calls(calls)).await.ok(),
                    None => Some(host.sub_calls(calls).await),
                }
            })
        });
        let Some(answers) = answers else {
            return Err(PyErr::from_type(
                self.cell_timeout.bind(py).clone(),
                "sub-call abandoned: the cell reached its time limit",
            ));
        };
        let mut out: Vec<String> = answers
            .into_iter()
            .take(count)
            .map(|answer| answer.unwrap_or_else(|message| format!("Error: {message}")))
            .collect();
        while out.len() < count {
            out.push("Error: the host returned no answer for this prompt".to_owned());
        }
        Ok(out)
    }
}
