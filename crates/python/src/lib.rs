//! `rlm._rlm`: the Rust engine behind the `rlm` Python package.
//!
//! The Python side (`python/rlm/`) owns the public API (names and arguments of the original `rlm` package, defaults
//! from the environment, result classes); this module only exposes what needs the engine: an [`Engine`] that runs
//! completions, REPL [`Session`]s on the local or wasm executor, and the CLI. Values cross as plain strings and JSON
//! text, so the conversion code stays on one side (Python) and this module stays small.
//!
//! # Threads and the GIL
//!
//! Every call that waits on the engine detaches from the interpreter while it waits, so other Python threads run,
//! and two completions from two threads proceed at once. The local executor runs model code in this same (host)
//! interpreter: its cells attach on tokio's blocking threads. While waiting, the calling thread wakes every
//! [`SIGNAL_POLL`] to let Python handle signals: a `KeyboardInterrupt` cancels the run through its cancellation token
//! and is re-raised once the engine has stopped (or after [`CANCEL_GRACE`]).

mod conversation;
mod errors;
mod logging;

use std::future::Future;
use std::process::ExitCode;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pyo3::prelude::*;
use rlm::{CancellationToken, Context, Executor, Rlm, RlmBuilder, TraceTarget};
use rlm_executor_remote::{RemoteConfig, RemoteExecutor};
use rlm_executor_wasm::{WasmConfig, WasmExecutor};
use rlm_protocol::{AbortHandle, ChatMessage, ModelRequest, ReplSession, SessionSpec, SubCallHost};

use crate::errors::{Error, raise};

/// How often a thread waiting on the engine lets Python run its signal handlers.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// How long a cancelled run may take to wind down before the interrupt is re-raised anyway.
const CANCEL_GRACE: Duration = Duration::from_secs(10);

/// The tokio runtime all calls share, started on first use.
fn runtime() -> Result<&'static tokio::runtime::Runtime, Error> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("rlm-engine")
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::Runtime(e.clone()))
}

/// Runs `future` on the shared runtime while the calling thread is detached from the interpreter. A signal handler
/// that raises (Ctrl-C) cancels `cancel`, waits up to [`CANCEL_GRACE`] for the future to finish, and returns the
/// exception.
fn wait<T, F>(py: Python<'_>, cancel: Option<&CancellationToken>, future: F) -> PyResult<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel();
    runtime()?.spawn(async move {
        // The receiver is gone only when the caller gave up (interrupt); the result has no one to go to then.
        let _ = tx.send(future.await);
    });
    loop {
        // The receiver is not `Sync`: move it into the detached closure and back out instead of borrowing it.
        let (back, received) = py.detach(move || {
            let received = rx.recv_timeout(SIGNAL_POLL);
            (rx, received)
        });
        rx = back;
        match received {
            Ok(value) => return Ok(value),
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Error::Runtime("the engine task ended without a result".into()).into());
            }
            Err(RecvTimeoutError::Timeout) => {
                if let Err(interrupt) = py.check_signals() {
                    if let Some(cancel) = cancel {
                        cancel.cancel();
                        let _ = py.detach(move || rx.recv_timeout(CANCEL_GRACE));
                    }
                    return Err(interrupt);
                }
            }
        }
    }
}

/// A context from Python: `text` as is, or `json` (a JSON document the Python side serialised).
fn context_from(kind: &str, value: String) -> PyResult<Context> {
    match kind {
        "text" => Ok(Context::Text(value)),
        "json" => serde_json::from_str(&value)
            .map(Context::Json)
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(format!("context: not valid JSON: {e}"))),
        other => {
            Err(pyo3::exceptions::PyValueError::new_err(format!("context kind must be text or json, not {other:?}")))
        }
    }
}

fn seconds(value: f64, name: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        pyo3::exceptions::PyValueError::new_err(format!("{name} must be a non-negative number of seconds"))
    })
}

/// The wasm executor is expensive to create (it loads or compiles CPython's module): one per process.
fn wasm_executor() -> Result<WasmExecutor, Error> {
    static WASM: OnceLock<Result<WasmExecutor, String>> = OnceLock::new();
    WASM.get_or_init(|| WasmExecutor::new(WasmConfig::default()).map_err(|e| e.to_string()))
        .clone()
        .map_err(Error::Sandbox)
}

fn executor(kind: &str, sandbox_url: Option<&str>) -> Result<Arc<dyn Executor>, Error> {
    Ok(match kind {
        "local" => Arc::new(rlm::LocalExecutor::new()),
        "wasm" => Arc::new(wasm_executor()?),
        "remote" => {
            let Some(url) = sandbox_url.map(str::trim).filter(|u| !u.is_empty()) else {
                return Err(Error::Config("the remote executor needs the sandbox service's URL".into()));
            };
            Arc::new(RemoteExecutor::new(RemoteConfig::new(url)).map_err(|e| Error::Sandbox(e.to_string()))?)
        }
        other => return Err(Error::Config(format!("executor must be local, wasm or remote, not {other:?}"))),
    })
}

/// A configured RLM (the Rust [`Rlm`]). Shareable between threads; runs may go on at once.
#[pyclass(module = "rlm._rlm", frozen)]
struct Engine {
    rlm: Rlm,
    /// Whether runs log their steps (`rlm.run` at INFO).
    log_steps: bool,
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (
        *, model, sub_model=None, depth_models=None, base_url=None, sub_base_url=None, api_key=None,
        max_iterations=20, max_depth=1,
        executor="local", sandbox_url=None, trace_dir=None, trace=true, timeout=None, request_timeout=None,
        log_steps=false, route="rlm",
    ))]
    #[allow(clippy::too_many_arguments, reason = "keyword-only arguments of a Python constructor")]
    fn new(
        py: Python<'_>,
        model: String,
        sub_model: Option<String>,
        depth_models: Option<Vec<String>>,
        base_url: Option<String>,
        sub_base_url: Option<String>,
        api_key: Option<String>,
        max_iterations: u32,
        max_depth: u32,
        executor: &str,
        sandbox_url: Option<String>,
        trace_dir: Option<String>,
        trace: bool,
        timeout: Option<f64>,
        request_timeout: Option<f64>,
        log_steps: bool,
        route: &str,
    ) -> PyResult<Self> {
        let route = match route {
            "rlm" => rlm::RouteMode::Rlm,
            "auto" => rlm::RouteMode::Auto,
            "direct" => rlm::RouteMode::Direct,
            other => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "route must be rlm, auto or direct, not {other:?}"
                )));
            }
        };
        // The Python front is one of the edges where configuration comes from the environment.
        let mut builder =
            RlmBuilder::from_env().model(model).max_iterations(max_iterations).max_depth(max_depth).route(route);
        if let Some(sub) = sub_model {
            builder = builder.sub_model(sub);
        }
        if let Some(models) = depth_models.filter(|m| !m.is_empty()) {
            builder = builder.depth_models(models);
        }
        if let Some(url) = base_url {
            builder = builder.base_url(url);
        }
        if let Some(url) = sub_base_url {
            builder = builder.sub_base_url(url);
        }
        if let Some(key) = api_key {
            builder = builder.api_key(key);
        }
        if let Some(timeout) = timeout {
            builder = builder.timeout(seconds(timeout, "timeout")?);
        }
        if let Some(timeout) = request_timeout {
            builder = builder.request_timeout(seconds(timeout, "request_timeout")?);
        }
        builder = builder.trace(match (trace, trace_dir) {
            (false, _) => TraceTarget::Disabled,
            (true, Some(dir)) => TraceTarget::Directory(dir.into()),
            (true, None) => TraceTarget::Directory(TraceTarget::DEFAULT_DIRECTORY.into()),
        });
        // Loading the wasm module can take seconds: let other threads run meanwhile.
        let kind = executor.to_owned();
        let chosen = py.detach(move || self::executor(&kind, sandbox_url.as_deref()))?;
        let rlm = builder.executor(chosen).build().map_err(Error::from)?;
        Ok(Self { rlm, log_steps })
    }

    /// Answers `query` over the context; returns the result as JSON text (see `rlm.RLMResult`). `cancel` stops the
    /// run from another thread (the async API's task cancellation).
    #[pyo3(signature = (context_kind, context, query, cancel=None))]
    fn completion(
        &self,
        py: Python<'_>,
        context_kind: &str,
        context: String,
        query: String,
        cancel: Option<&CancelToken>,
    ) -> PyResult<String> {
        let context = context_from(context_kind, context)?;
        let rlm = self.rlm.clone();
        let cancel = cancel.map(|c| c.token.clone()).unwrap_or_default();
        let token = cancel.clone();
        let observer: Option<Arc<dyn rlm::TraceSink>> = self.log_steps.then(|| Arc::new(logging::RunLog) as _);
        let outcome =
            wait(py, Some(&cancel), async move { rlm.completion_with(context, &query, token, observer).await })?;
        match outcome {
            Ok(completion) => Ok(serde_json::to_string(&completion).map_err(|e| Error::Runtime(e.to_string()))?),
            Err(err) => Err(raise(py, Error::from(err))),
        }
    }

    /// One plain model call (the original's `Sub_RLM.completion`), with `model` or the sub-model.
    #[pyo3(signature = (prompt, model=None))]
    fn complete(&self, py: Python<'_>, prompt: String, model: Option<String>) -> PyResult<String> {
        let client = self.rlm.model_client().clone();
        let config = self.rlm.engine().config();
        let model = model.unwrap_or_else(|| config.models.sub_model().to_owned());
        let request = ModelRequest {
            model,
            messages: vec![ChatMessage::user(prompt)].into(),
            max_output_tokens: config.limits.max_output_tokens,
            temperature: config.temperature,
        };
        let response = wait(py, None, async move { client.complete(request).await })?;
        response.map(|r| r.content).map_err(|e| raise(py, Error::Model(e.to_string())))
    }

    /// The root model's name.
    #[getter]
    fn model(&self) -> String {
        self.rlm.engine().config().models.root.clone()
    }
}

/// Cancels a run from another thread: `Engine.completion(..., cancel=token)` then `token.cancel()`.
#[pyclass(module = "rlm._rlm", frozen)]
#[derive(Default)]
struct CancelToken {
    token: CancellationToken,
}

#[pymethods]
impl CancelToken {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    fn cancel(&self) {
        self.token.cancel();
    }

    #[getter]
    fn cancelled(&self) -> bool {
        self.token.is_cancelled()
    }
}

/// A persistent REPL session (the original's `REPLEnv`), on the local or wasm executor.
#[pyclass(module = "rlm._rlm", frozen)]
struct Session {
    inner: Arc<tokio::sync::Mutex<Option<Box<dyn ReplSession>>>>,
    abort: Option<AbortHandle>,
}

/// Opens a session on `executor` (`local` or `wasm`) with the context loaded; sub-calls go to `engine`'s model, or
/// fail with a clear message in the code when there is none.
#[pyfunction]
#[pyo3(signature = (executor, context_kind, context, cell_timeout=120.0, engine=None))]
fn open_session(
    py: Python<'_>,
    executor: &str,
    context_kind: &str,
    context: String,
    cell_timeout: f64,
    engine: Option<&Engine>,
) -> PyResult<Session> {
    if executor == "remote" {
        return Err(pyo3::exceptions::PyValueError::new_err("executor: sessions run on local or wasm"));
    }
    let spec = SessionSpec {
        cell_timeout: seconds(cell_timeout, "cell_timeout")?,
        ..SessionSpec::new(context_from(context_kind, context)?)
    };
    let host: Arc<dyn SubCallHost> = match engine {
        Some(engine) => Arc::new(rlm::DirectHost::new(engine.rlm.model_client().clone(), engine.rlm.engine().config())),
        None => Arc::new(rlm::NoModelHost),
    };
    let kind = executor.to_owned();
    let chosen = py.detach(move || self::executor(&kind, None))?;
    let session = wait(py, None, async move { chosen.start_session(spec, host).await })?
        .map_err(|e| raise(py, Error::Sandbox(e.to_string())))?;
    let abort = session.abort_handle();
    Ok(Session { inner: Arc::new(tokio::sync::Mutex::new(Some(session))), abort })
}

#[pymethods]
impl Session {
    /// Runs one cell: `(stdout, stderr, error or None, seconds)`. Errors in the code are data (`error`), as for the
    /// model; an `Err` means the session itself broke.
    fn run_cell(&self, py: Python<'_>, code: String) -> PyResult<(String, String, Option<String>, f64)> {
        let inner = self.inner.clone();
        let outcome = wait(py, None, async move {
            let mut guard = inner.lock().await;
            match guard.as_mut() {
                Some(session) => session.run_cell(&code).await.map_err(|e| e.to_string()),
                None => Err("the session is closed".to_owned()),
            }
        });
        let outcome = match outcome {
            Ok(outcome) => outcome.map_err(|e| raise(py, Error::Sandbox(e)))?,
            Err(interrupt) => {
                // A cell cannot be cancelled politely: stop the session when the executor can, so it does not keep
                // running behind the caller's back.
                if let Some(abort) = &self.abort {
                    abort.abort();
                }
                return Err(interrupt);
            }
        };
        let error = outcome.error.as_ref().map(|error| {
            if error.traceback.is_empty() {
                error.to_string()
            } else {
                format!("{}\n{error}", error.traceback.trim_end())
            }
        });
        Ok((outcome.stdout, outcome.stderr, error, outcome.duration.as_secs_f64()))
    }

    /// The user's variables as `{name: str(value)}`.
    fn variables(&self, py: Python<'_>) -> PyResult<Vec<(String, String)>> {
        let inner = self.inner.clone();
        let listed = wait(py, None, async move {
            let mut guard = inner.lock().await;
            let Some(session) = guard.as_mut() else { return Err("the session is closed".to_owned()) };
            let names = session.variable_names().await.map_err(|e| e.to_string())?;
            let mut values = Vec::with_capacity(names.len());
            for name in names {
                if let Some(value) = session.get_variable(&name).await.map_err(|e| e.to_string())? {
                    values.push((name, value));
                }
            }
            Ok(values)
        })?;
        listed.map_err(|e| raise(py, Error::Sandbox(e)))
    }

    /// Releases the session; later calls fail. Closing twice is fine.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let inner = self.inner.clone();
        let closed = wait(py, None, async move {
            let session = inner.lock().await.take();
            match session {
                Some(session) => session.close().await.map_err(|e| e.to_string()),
                None => Ok(()),
            }
        })?;
        closed.map_err(|e| raise(py, Error::Sandbox(e)))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // A session dropped without `close()` (a `REPLEnv` that went out of scope) would keep its namespace, the
        // context included, until Python's cycle collector ran: close it on the runtime, without waiting here.
        if let Ok(runtime) = runtime() {
            let inner = self.inner.clone();
            runtime.spawn(async move {
                let session = inner.lock().await.take();
                if let Some(session) = session {
                    let _ = session.close().await;
                }
            });
        }
    }
}

/// The `ExitCode` of the CLI as a number (`ExitCode` only compares; the CLI uses codes below 256).
fn exit_status(code: ExitCode) -> u8 {
    (0..=u8::MAX).find(|n| ExitCode::from(*n) == code).unwrap_or(1)
}

/// Runs the `rlm` command line (`argv[0]` is the program name); returns its exit status.
#[pyfunction]
fn cli_main(py: Python<'_>, argv: Vec<String>) -> u8 {
    // The CLI installs its own Ctrl-C handling (a cancelled run exits 130): Python's handler stays out of it.
    py.detach(move || exit_status(rlm_cli::main_with_args(argv)))
}

#[pymodule]
fn _rlm(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("PYTHON_BUILD_VERSION", rlm::LocalExecutor::python_build_version())?;
    m.add_class::<Engine>()?;
    m.add_class::<Session>()?;
    m.add_class::<CancelToken>()?;
    m.add_class::<conversation::Conversation>()?;
    m.add_function(wrap_pyfunction!(open_session, m)?)?;
    m.add_function(wrap_pyfunction!(conversation::start_conversation, m)?)?;
    m.add_function(wrap_pyfunction!(cli_main, m)?)?;
    m.add_function(wrap_pyfunction!(logging::install_log_bridge, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_reads_the_cli_codes() {
        assert_eq!(exit_status(ExitCode::SUCCESS), 0);
        assert_eq!(exit_status(ExitCode::FAILURE), 1);
        assert_eq!(exit_status(ExitCode::from(130)), 130);
    }
}
