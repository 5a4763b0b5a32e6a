//! [`LocalSession`]: one persistent namespace in the process-wide interpreter.

use std::os::raw::{c_long, c_ulong};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyTraceback;
use rlm_protocol::{CellError, CellOutcome, ContextInfo, FinalVar, ReplSession, SessionSpec, SubCallHost};
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::bridge::{DeadlineSlot, HostBridge, set_deadline};
use crate::context;
use crate::error::LocalResult;
use crate::runtime::{PyRuntime, runtime};

/// How often the watchdog re-raises the timeout in a cell that swallowed it (`except BaseException: pass`).
const REFIRE_INTERVAL: Duration = Duration::from_millis(200);

/// The cell a session is running right now. Only read or written while attached to the interpreter, so that the
/// watchdog (which also attaches) can never target a thread whose cell has already ended.
#[derive(Debug, Clone, Copy)]
struct RunningCell {
    generation: u64,
    thread_id: c_ulong,
    /// Whether the watchdog has raised the timeout in it.
    interrupted: bool,
}

/// What a session shares with its blocking tasks and its watchdog.
#[derive(Debug)]
struct Shared {
    runtime: &'static PyRuntime,
    /// `_rlm_prelude.Session` instance.
    session: Py<PyAny>,
    /// Serialises everything that touches the namespace. Always taken *before* attaching to the interpreter (never
    /// while attached: a thread holding this lock may need the GIL back after a sub-call).
    busy: Mutex<()>,
    running: Mutex<Option<RunningCell>>,
    generation: AtomicU64,
    deadline: DeadlineSlot,
    /// The generation and deadline of the cell being run now, for the watchdog.
    armed: Mutex<Option<(u64, Instant)>>,
    /// Wakes an idle watchdog: a cell has started.
    cell_started: Notify,
    /// Cells handed to a Python thread that have not ended yet (the future that waits for one may be gone).
    pending: AtomicUsize,
    /// Set when the session is closed or dropped: the watchdog ends once no cell is pending.
    closed: AtomicBool,
    /// Wakes the watchdog to look at `closed` and `pending` again.
    closing: Notify,
}

impl Shared {
    /// Raises `CellTimeout` in the cell `generation` if it is still running. Returns whether it was.
    fn interrupt(&self, generation: u64) -> bool {
        Python::attach(|_py| {
            let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            match running.as_mut() {
                Some(cell) if cell.generation == generation => {
                    // SAFETY: attached to the interpreter; the thread id was registered (while attached) by the
                    // thread running this very cell, and it is cleared (while attached) before that cell ends, so it
                    // names a live thread state. The exception type is kept alive by the process-wide runtime.
                    unsafe {
                        ffi::PyThreadState_SetAsyncExc(cell.thread_id as c_long, self.runtime.cell_timeout.as_ptr());
                    }
                    cell.interrupted = true;
                    true
                }
                _ => false,
            }
        })
    }

    fn register(&self, _py: Python<'_>, generation: u64) {
        // SAFETY: attached to the interpreter; returns the current thread's identifier as the interpreter knows it.
        let thread_id = unsafe { ffi::PyThread_get_thread_ident() };
        *self.running.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(RunningCell { generation, thread_id, interrupted: false });
    }

    /// Ends the timed window of a cell; returns whether the watchdog interrupted it.
    fn unregister(&self, _py: Python<'_>) -> bool {
        let cell = self.running.lock().unwrap_or_else(PoisonError::into_inner).take();
        match cell {
            Some(cell) => {
                if cell.interrupted {
                    // SAFETY: attached; this is the current thread's id. A NULL exception clears a timeout that was
                    // raised but not yet delivered, so it cannot fire later in code that is not the cell's.
                    unsafe {
                        ffi::PyThreadState_SetAsyncExc(cell.thread_id as c_long, std::ptr::null_mut());
                    }
                }
                cell.interrupted
            }
            None => false,
        }
    }

    fn armed(&self) -> Option<(u64, Instant)> {
        *self.armed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run_cell(&self, code: &str, cell_number: u64, generation: u64, limits: Limits) -> LocalResult<CellOutcome> {
        let _busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        let started = std::time::Instant::now();
        let _armed = Armed::new(self, generation, limits.deadline);
        Python::attach(|py| {
            let session = self.session.bind(py);
            let (capture, prepared, compile_error): (
                Bound<'_, PyAny>,
                Option<Bound<'_, PyAny>>,
                Option<Bound<'_, PyAny>>,
            ) = session.call_method1(intern!(py, "start_cell"), (code, cell_number, limits.max_chars))?.extract()?;
            set_deadline(&self.deadline, Some(limits.deadline));

            let (failure, interrupted) = match prepared {
                None => (None, false),
                Some(prepared) => {
                    self.register(py, generation);
                    let result = session.call_method1(intern!(py, "run"), (prepared, limits.max_chars));
                    let interrupted = self.unregister(py);
                    (result.err(), interrupted)
                }
            };
            set_deadline(&self.deadline, None);

            let error = if interrupted
                || failure.as_ref().is_some_and(|e| e.is_instance(py, self.runtime.cell_timeout.bind(py)))
            {
                let message =
                    format!("cell exceeded the {} s time limit and was interrupted", limits.timeout.as_secs_f64());
                // Keep the frames (where the cell was stopped); the last line names the internal exception.
                let mut traceback: String = match &failure {
                    Some(err) => describe(session, err.value(py).as_any(), err.traceback(py))?
                        .traceback
                        .lines()
                        .filter(|line| !line.starts_with("_rlm_prelude.CellTimeout"))
                        .flat_map(|line| [line, "\n"])
                        .collect(),
                    None => String::new(),
                };
                traceback.push_str(&format!("TimeoutError: {message}"));
                Some(CellError { kind: "TimeoutError".to_owned(), message, traceback })
            } else {
                match (&failure, &compile_error) {
                    (Some(err), _) => Some(describe(session, err.value(py).as_any(), err.traceback(py))?),
                    (None, Some(exc)) => Some(describe(session, exc, None)?),
                    (None, None) => None,
                }
            };

            type Ended = (String, String, u64, Option<String>, Option<(String, Option<String>)>);
            let (stdout, stderr, dropped_chars, answer, final_var): Ended =
                session.call_method1(intern!(py, "end_cell"), (capture,))?.extract()?;
            Ok(CellOutcome {
                stdout,
                stderr,
                error,
                duration: started.elapsed(),
                dropped_chars,
                final_var: final_var.map(|(name, value)| FinalVar { name, value }),
                answer,
            })
        })
    }

    fn with_session<T>(&self, f: impl FnOnce(&Bound<'_, PyAny>) -> PyResult<T>) -> LocalResult<T> {
        let _busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(Python::attach(|py| f(self.session.bind(py)))?)
    }
}

/// Counts a cell as pending from when it is handed to a Python thread until its work ends or is dropped unrun.
struct Pending(Arc<Shared>);

impl Pending {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.pending.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(shared))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::SeqCst);
        if self.0.closed.load(Ordering::SeqCst) {
            self.0.closing.notify_one();
        }
    }
}

/// Shows the watchdog the deadline of the cell being run, until dropped (also when the cell's work panics).
struct Armed<'a>(&'a Shared);

impl<'a> Armed<'a> {
    fn new(shared: &'a Shared, generation: u64, deadline: Instant) -> Self {
        *shared.armed.lock().unwrap_or_else(PoisonError::into_inner) = Some((generation, deadline));
        // Stored as a permit when the watchdog is not waiting for a cell (it then sleeps until a deadline anyway).
        shared.cell_started.notify_one();
        Self(shared)
    }
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        *self.0.armed.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

fn describe(
    session: &Bound<'_, PyAny>,
    exception: &Bound<'_, PyAny>,
    traceback: Option<Bound<'_, PyTraceback>>,
) -> PyResult<CellError> {
    let (kind, message, traceback): (String, String, String) =
        session.call_method1(intern!(session.py(), "describe_error"), (exception, traceback))?.extract()?;
    Ok(CellError { kind, message, traceback })
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    deadline: Instant,
    timeout: Duration,
    max_chars: usize,
}

/// A REPL session of the [`crate::LocalExecutor`]: its own globals dict in the process-wide CPython interpreter.
///
/// Cells run on the executor's Python threads (see `threads.rs`). Dropping a session without [`ReplSession::close`] still clears its
/// namespace (in a blocking task) when a tokio runtime is available.
#[derive(Debug)]
pub struct LocalSession {
    shared: Arc<Shared>,
    info: ContextInfo,
    cell_timeout: Duration,
    max_captured_chars: usize,
    cells: u64,
    closed: bool,
}

impl LocalSession {
    /// Builds the session: loads the context and binds the reserved names. Blocking; call on a blocking thread.
    pub(crate) fn create(spec: SessionSpec, host: Arc<dyn SubCallHost>, handle: Handle) -> LocalResult<Self> {
        let runtime = runtime()?;
        let deadline: DeadlineSlot = Arc::new(Mutex::new(None));
        let read_ahead = context::take_read_ahead(&spec.context);
        let (session, info) = Python::attach(|py| -> LocalResult<_> {
            let value = match read_ahead {
                Some(value) => value.into_bound(py),
                None => context::load(py, &spec.context)?,
            };
            let prelude = runtime.prelude.bind(py);
            let info = context::info(prelude, &value)?;
            let bridge =
                HostBridge::new(host, handle.clone(), Arc::clone(&deadline), runtime.cell_timeout.clone_ref(py));
            let bridge = Bound::new(py, bridge)?;
            let session = prelude.getattr("Session")?.call1((bridge, value))?;
            Ok((session.unbind(), info))
        })?;
        let shared = Arc::new(Shared {
            runtime,
            session,
            busy: Mutex::new(()),
            running: Mutex::new(None),
            generation: AtomicU64::new(0),
            deadline,
            armed: Mutex::new(None),
            cell_started: Notify::new(),
            pending: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            closing: Notify::new(),
        });
        handle.spawn(watchdog(Arc::clone(&shared)));
        Ok(Self {
            shared,
            info,
            cell_timeout: spec.cell_timeout,
            max_captured_chars: spec.max_captured_chars,
            cells: 0,
            closed: false,
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared) -> LocalResult<T> + Send + 'static,
    ) -> LocalResult<T> {
        let shared = Arc::clone(&self.shared);
        crate::threads::run(move || f(&shared)).await?
    }
}

/// One per session, for its life: interrupts a cell once its deadline passes, re-raising until the cell has ended.
///
/// It sleeps until the deadline of the cell that runs when it looks; a cell that ends earlier leaves it sleeping, and
/// when it wakes it looks again (the cell running then, if any, has a later deadline). So cells that start and end
/// in quick succession cost it nothing: it wakes about once per time limit, not once per cell. A cell keeps being
/// watched when the future that runs it is dropped, and when the session is closed or dropped meanwhile: the watchdog
/// ends only once the session is closed and no cell is pending.
async fn watchdog(shared: Arc<Shared>) {
    // The last cell interrupted or found no longer running at its deadline (generations start at 1).
    let mut done_with = 0;
    loop {
        match shared.armed() {
            Some((generation, deadline)) if generation != done_with => {
                if Instant::now() < deadline {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => {}
                        () = shared.closing.notified() => {}
                    }
                    continue;
                }
                loop {
                    let target = Arc::clone(&shared);
                    let still_running =
                        tokio::task::spawn_blocking(move || target.interrupt(generation)).await.unwrap_or(false);
                    if !still_running {
                        break;
                    }
                    tracing::debug!(generation, "cell past its time limit interrupted");
                    tokio::time::sleep(REFIRE_INTERVAL).await;
                }
                done_with = generation;
            }
            _ => {
                if shared.closed.load(Ordering::SeqCst) && shared.pending.load(Ordering::SeqCst) == 0 {
                    return;
                }
                tokio::select! {
                    () = shared.cell_started.notified() => {}
                    () = shared.closing.notified() => {}
                }
            }
        }
    }
}

#[async_trait]
impl ReplSession for LocalSession {
    fn context_info(&self) -> &ContextInfo {
        &self.info
    }

    async fn run_cell(&mut self, code: &str) -> rlm_protocol::Result<CellOutcome> {
        self.cells += 1;
        let cell_number = self.cells;
        let generation = self.shared.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let limits = Limits {
            deadline: Instant::now() + self.cell_timeout,
            timeout: self.cell_timeout,
            max_chars: self.max_captured_chars,
        };
        let code = code.to_owned();
        let pending = Pending::new(&self.shared);
        let outcome = self
            .blocking(move |shared| {
                let outcome = shared.run_cell(&code, cell_number, generation, limits);
                drop(pending);
                outcome
            })
            .await;
        Ok(outcome?)
    }

    async fn get_variable(&mut self, name: &str) -> rlm_protocol::Result<Option<String>> {
        let name = name.to_owned();
        let value = self
            .blocking(move |shared| shared.with_session(|s| s.call_method1("get_variable", (name,))?.extract()))
            .await?;
        Ok(value)
    }

    async fn variable_names(&mut self) -> rlm_protocol::Result<Vec<String>> {
        let names =
            self.blocking(|shared| shared.with_session(|s| s.call_method0("variable_names")?.extract())).await?;
        Ok(names)
    }

    async fn close(mut self: Box<Self>) -> rlm_protocol::Result<()> {
        self.closed = true;
        self.blocking(|shared| shared.with_session(|s| s.call_method0("close").map(drop))).await?;
        Ok(())
    }
}

impl Drop for LocalSession {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.closing.notify_one();
        if self.closed {
            return;
        }
        // The namespace holds reference cycles (functions <-> globals), so dropping our reference alone would leave
        // the context in memory until Python's cycle collector runs; clear it explicitly.
        if let Ok(handle) = Handle::try_current() {
            let shared = Arc::clone(&self.shared);
            drop(handle.spawn_blocking(move || {
                if let Err(err) = shared.with_session(|s| s.call_method0("close").map(drop)) {
                    tracing::warn!(%err, "could not clear a dropped REPL session");
                }
            }));
        }
    }
}
