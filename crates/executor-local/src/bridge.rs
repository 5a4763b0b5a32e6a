//! The Rust object behind `llm_query` & co.: Python calls `host.call(kind, prompts, model)`, which releases the GIL
//! and waits for the session's [`SubCallHost`] on the tokio runtime the session was started on.

use std::sync::{Arc, Mutex, PoisonError};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyType};
use rlm_protocol::{SharedText, SubCall, SubCallHost, SubCallKind};
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

/// The UTF-8 text of a Python `str`, read in place: the string object is kept alive and never changes, so its bytes
/// can go to the request body without a copy. (A compact ASCII string is its own UTF-8; for any other, CPython builds
/// the UTF-8 form once and keeps it with the string.)
struct PythonText {
    _string: Py<PyString>,
    data: *const u8,
    len: usize,
}

// SAFETY: `data` points into memory owned by the string object, which `_string` keeps alive (a `Py` is `Send` and
// `Sync`; dropping it without the GIL defers the decref). Python strings are immutable, and CPython never frees or
// rewrites a string's UTF-8 form while the string lives, so the bytes can be read from any thread without the GIL.
unsafe impl Send for PythonText {}
// SAFETY: see `Send`; nothing here is ever written after construction.
unsafe impl Sync for PythonText {}

impl PythonText {
    fn new(string: &Bound<'_, PyString>) -> PyResult<Self> {
        let text = string.to_str()?;
        Ok(Self { data: text.as_ptr(), len: text.len(), _string: string.clone().unbind() })
    }
}

impl AsRef<str> for PythonText {
    fn as_ref(&self) -> &str {
        // SAFETY: `data`/`len` are the bytes of a `&str` that CPython returned for this string (valid UTF-8), alive
        // and unchanged as long as `_string` is (see the `Send` impl).
        unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(self.data, self.len)) }
    }
}

#[pymethods]
impl HostBridge {
    /// Sends all `prompts` to the host as one batch; returns one string per prompt, `"Error: ..."` for failed ones.
    #[pyo3(signature = (kind, prompts, model=None))]
    fn call(
        &self,
        py: Python<'_>,
        kind: &str,
        prompts: Vec<Bound<'_, PyString>>,
        model: Option<String>,
    ) -> PyResult<Vec<String>> {
        let kind = match kind {
            "llm" => SubCallKind::Llm,
            "rlm" => SubCallKind::Rlm,
            other => return Err(PyValueError::new_err(format!("unknown sub-call kind {other:?}"))),
        };
        let count = prompts.len();
        if count == 0 {
            return Ok(Vec::new());
        }
        let calls = prompts
            .iter()
            .map(|prompt| {
                let prompt = SharedText::from_owner(PythonText::new(prompt)?);
                Ok(SubCall { kind, prompt, model: model.clone() })
            })
            .collect::<PyResult<Vec<SubCall>>>()?;
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
