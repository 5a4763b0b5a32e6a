//! The process-wide interpreter: started once, checked against the Python this crate was built for, with the
//! prelude module loaded and `sys.stdout` / `sys.stderr` routed per thread.

use std::ffi::CString;
use std::sync::OnceLock;

use pyo3::prelude::*;
use pyo3::types::PyType;

use crate::error::{LocalError, LocalResult};

/// `major.minor` of the Python that pyo3 was configured against (set by `build.rs`).
pub(crate) const BUILD_PYTHON_VERSION: &str = env!("RLM_PYTHON_BUILD_VERSION");

const PRELUDE: &str = include_str!("prelude.py");

/// The REPL semantics shared with the wasm executor, inserted into the prelude at [`REPL_CORE_MARKER`].
const REPL_CORE: &str = include_str!("../../../python/repl_core.py");

/// The line of `prelude.py` that [`REPL_CORE`] replaces (after the prelude's builtins swap, so that the core's
/// functions look their builtins up in the prelude's private copy).
const REPL_CORE_MARKER: &str = "\n# @repl_core\n";

/// The prelude's text with the REPL core in place.
fn prelude_source() -> Result<String, String> {
    if PRELUDE.matches(REPL_CORE_MARKER).count() != 1 {
        return Err("prelude.py must hold the REPL core marker line exactly once".to_owned());
    }
    Ok(PRELUDE.replacen(REPL_CORE_MARKER, &format!("\n{REPL_CORE}\n"), 1))
}

/// Handles into the interpreter shared by all sessions.
#[derive(Debug)]
pub(crate) struct PyRuntime {
    /// The `_rlm_prelude` module (`prelude.py`).
    pub(crate) prelude: Py<PyModule>,
    /// `_rlm_prelude.CellTimeout`, the exception raised in a cell that ran out of time.
    pub(crate) cell_timeout: Py<PyType>,
}

static RUNTIME: OnceLock<Result<PyRuntime, String>> = OnceLock::new();

/// The interpreter, started on first use. Must not be called while attached to the interpreter (the first call
/// initialises it).
pub(crate) fn runtime() -> LocalResult<&'static PyRuntime> {
    RUNTIME.get_or_init(start_on_own_thread).as_ref().map_err(|message| LocalError::Interpreter(message.clone()))
}

/// Starts the interpreter on a dedicated thread, which then parks for the life of the process.
///
/// CPython treats the thread that initialised it as the "main thread": only there may `signal.signal` install
/// handlers, which change the signal disposition of the whole host process. Cells run on other threads (tokio's
/// blocking pool); were the initialising thread one of them, a cell landing on it could make the host ignore SIGTERM.
/// The thread must outlive the start, not just end: CPython recognises its main thread by the thread identifier
/// (`pthread_self`), which the C library hands out again to the next thread once the first one has exited. So cells
/// never run on it and `signal.signal` raises `ValueError` in every cell.
fn start_on_own_thread() -> Result<PyRuntime, String> {
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("rlm-python-main".to_owned())
        .stack_size(256 * 1024)
        .spawn(move || {
            drop(started_tx.send(start()));
            loop {
                std::thread::park();
            }
        })
        .map_err(|err| format!("cannot start the thread that initialises Python: {err}"))?;
    started_rx.recv().map_err(|_| "the thread that initialises Python ended before it was done".to_owned())?
}

/// `major.minor` from a `Py_GetVersion()` string such as `3.11.7 (main, ...) [GCC 12.2.0]`.
pub(crate) fn major_minor(version: &str) -> &str {
    let number = version.split_whitespace().next().unwrap_or_default();
    match number.match_indices('.').nth(1) {
        Some((second_dot, _)) => &number[..second_dot],
        None => number,
    }
}

fn start() -> Result<PyRuntime, String> {
    // `Py_GetVersion` may be called before the interpreter is initialised: check before committing to it, so that a
    // libpython of another version is reported instead of crashing on mismatched struct layouts.
    let running = major_minor(Python::version_str()).to_owned();
    if running != BUILD_PYTHON_VERSION {
        return Err(format!(
            "the libpython loaded at run time is Python {running}, but rlm-executor-local was built against Python \
             {BUILD_PYTHON_VERSION}. Build with PYO3_PYTHON set to the interpreter whose libpython the binary loads, \
             or give the binary an rpath to the libpython it was built against (see the build.rs described in the \
             rlm-executor-local documentation)"
        ));
    }
    let source = prelude_source()?;
    // SAFETY: `Py_IsInitialized` may be called at any time, before initialisation too.
    let hosted = unsafe { pyo3::ffi::Py_IsInitialized() } != 0;
    Python::initialize();
    Python::attach(|py| -> PyResult<PyRuntime> {
        let code = CString::new(source).map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
        let prelude = PyModule::from_code(py, &code, c"rlm_prelude.py", c"_rlm_prelude")?;
        // Inside a Python host (the `rlm` Python package), the host's streams and builtins stay the host's.
        prelude.call_method1("install_streams", (hosted,))?;
        let cell_timeout = prelude.getattr("CellTimeout")?.cast_into::<PyType>()?;
        Ok(PyRuntime { prelude: prelude.unbind(), cell_timeout: cell_timeout.unbind() })
    })
    .map_err(|err| format!("could not start the embedded Python interpreter: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_minor_of_version_strings() {
        assert_eq!(major_minor("3.11.7 (main, Jan  1 2024, 00:00:00) [GCC 12.2.0]"), "3.11");
        assert_eq!(major_minor("3.13.0rc1 (main)"), "3.13");
        assert_eq!(major_minor("3.9"), "3.9");
        assert_eq!(major_minor(""), "");
    }

    #[test]
    fn prelude_holds_the_repl_core_once() -> Result<(), String> {
        let source = prelude_source()?;
        assert!(!source.contains(REPL_CORE_MARKER));
        assert_eq!(source.matches("class SessionCore:").count(), 1);
        Ok(())
    }

    #[test]
    fn build_version_is_recorded() {
        assert_eq!(BUILD_PYTHON_VERSION.split('.').count(), 2);
        assert!(BUILD_PYTHON_VERSION.starts_with("3."));
    }

    #[test]
    fn runtime_starts_and_matches() -> Result<(), LocalError> {
        let rt = runtime()?;
        Python::attach(|py| {
            let info = py.version_info();
            assert_eq!(format!("{}.{}", info.major, info.minor), BUILD_PYTHON_VERSION);
            assert!(rt.prelude.bind(py).hasattr("Session").unwrap_or(false));
            assert!(rt.prelude.bind(py).hasattr("SessionCore").unwrap_or(false));
        });
        Ok(())
    }
}
