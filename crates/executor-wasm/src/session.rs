//! [`WasmSession`]: one sandboxed interpreter on its own OS thread, rebuilt (and its history replayed) after a trap.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use rlm_protocol::{AbortHandle, CellError, CellOutcome, Context, ContextInfo, ReplSession, SessionSpec, SubCallHost};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use wasmtime::{InstancePre, Store, StoreLimitsBuilder, Trap};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::WasiCtxBuilder;

use crate::engine::SESSION_THREAD_STACK;
use crate::error::{WasmError, WasmResult};
use crate::guest::{
    Aborted, ChannelLimits, ContextKind, Control, DeadlineReached, GuestState, Job, Owed, Phase, ProtocolError,
    on_epoch,
};
use crate::sched::CpuScheduler;

/// Start-up (loading the context) gets at least this long, whatever the cell time limit.
const MIN_BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// Rebuilds in a row without a cell completing in between, after which the session is given up.
const MAX_REBUILDS_WITHOUT_PROGRESS: u32 = 3;

/// How an instance starts.
#[derive(Clone)]
pub(crate) enum Entry {
    /// `_start`: CPython initialises itself and runs the driver (`args`) from the top.
    Fresh { pre: InstancePre<GuestState>, args: Vec<String> },
    /// A pre-initialised snapshot (`snapshot.rs`): the host calls straight into the driver's `_main`.
    Snapshot { pre: InstancePre<GuestState> },
}

impl Entry {
    fn pre(&self) -> &InstancePre<GuestState> {
        match self {
            Self::Fresh { pre, .. } | Self::Snapshot { pre } => pre,
        }
    }
}

/// What every session of one executor shares.
#[derive(Clone)]
pub(crate) struct Runtime {
    pub(crate) entry: Entry,
    pub(crate) memory_limit: usize,
    pub(crate) fuel_per_cell: Option<u64>,
    pub(crate) max_captured_chars: Option<usize>,
    pub(crate) limits: ChannelLimits,
    pub(crate) cpu: Arc<CpuScheduler>,
    /// Recorded run time of earlier cells that a rebuild may replay; `None`: the cell time limit.
    pub(crate) replay_budget: Option<Duration>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("memory_limit", &self.memory_limit)
            .field("fuel_per_cell", &self.fuel_per_cell)
            .finish_non_exhaustive()
    }
}

/// The context as bytes for the guest: UTF-8 text, or JSON text. Files are read here, on the host (the guest has
/// no file access).
pub(crate) fn context_bytes(context: Context) -> WasmResult<(ContextKind, Vec<u8>)> {
    fn read(path: &PathBuf) -> WasmResult<Vec<u8>> {
        std::fs::read(path).map_err(|err| WasmError::io(format!("cannot read context file {}", path.display()), err))
    }
    match context {
        Context::Text(text) => Ok((ContextKind::Text, text.into_bytes())),
        Context::Json(value) => serde_json::to_vec(&value)
            .map(|bytes| (ContextKind::Json, bytes))
            .map_err(|err| WasmError::InvalidInput(format!("cannot encode the JSON context: {err}"))),
        Context::TextFile(path) => {
            let bytes = read(&path)?;
            if let Err(err) = std::str::from_utf8(&bytes) {
                return Err(WasmError::InvalidInput(format!(
                    "context file {} is not valid UTF-8: {err}",
                    path.display()
                )));
            }
            Ok((ContextKind::Text, bytes))
        }
        // Parsed in the guest (Python's json, like the local executor); a parse error is reported as invalid input.
        Context::JsonFile(path) => Ok((ContextKind::Json, read(&path)?)),
    }
}

/// A store for one instance of the sandbox, with its limits, epoch deadline and WASI context (no capabilities).
pub(crate) fn new_store(runtime: &Runtime, ctl: Control) -> Store<GuestState> {
    // A snapshot's interpreter read its arguments when the snapshot was taken.
    let args: &[String] = match &runtime.entry {
        Entry::Fresh { args, .. } => args,
        Entry::Snapshot { .. } => &[],
    };
    let wasi =
        WasiCtxBuilder::new().args(args).allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false).build_p1();
    let limits = StoreLimitsBuilder::new()
        .memory_size(runtime.memory_limit)
        .instances(1)
        .memories(1)
        // A failed `memory.grow` returns -1 to the guest's allocator, which Python turns into MemoryError.
        .trap_on_grow_failure(false)
        .build();
    let mut store = Store::new(runtime.entry.pre().module().engine(), GuestState::new(wasi, limits, ctl));
    store.limiter(|state| &mut state.limits);
    store.epoch_deadline_callback(|mut ctx| on_epoch(ctx.data_mut()));
    store.set_epoch_deadline(1);
    store
}

/// Start-up runs unmetered (the boot deadline bounds it); each cell gets its own budget later.
pub(crate) fn set_start_fuel(runtime: &Runtime, store: &mut Store<GuestState>) -> wasmtime::Result<()> {
    if runtime.fuel_per_cell.is_some() { store.set_fuel(u64::MAX / 4) } else { Ok(()) }
}

/// Runs one instance of the sandbox until the driver returns; gives back the store data.
pub(crate) fn run_instance(runtime: &Runtime, ctl: Control) -> (wasmtime::Result<()>, GuestState) {
    let mut store = new_store(runtime, ctl);
    let result = (|| -> wasmtime::Result<()> {
        set_start_fuel(runtime, &mut store)?;
        store.data_mut().take_cpu();
        let instance = runtime.entry.pre().instantiate(&mut store)?;
        match &runtime.entry {
            Entry::Fresh { .. } => {
                let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                start.call(&mut store, ())
            }
            Entry::Snapshot { .. } => crate::snapshot::resume(&mut store, &instance),
        }
    })();
    let mut state = store.into_data();
    state.give_up_cpu();
    (result, state)
}

/// Why an instance stopped, as (Python-like exception name, message).
fn classify(err: &wasmtime::Error, timed_out: bool, violation: Option<&str>, ctl: &Control) -> (String, String) {
    if let Some(message) = violation {
        return ("SystemError".to_owned(), format!("the sandbox refused what the guest sent: {message}"));
    }
    if err.is::<Aborted>() {
        return ("SystemError".to_owned(), "the session was aborted".to_owned());
    }
    if timed_out || err.is::<DeadlineReached>() || matches!(err.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        return (
            "TimeoutError".to_owned(),
            format!("cell exceeded the {} s time limit", ctl.cell_timeout.as_secs_f64()),
        );
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => {
            return (
                "TimeoutError".to_owned(),
                format!("cell used up its fuel budget ({} units)", ctl.fuel_per_cell.unwrap_or_default()),
            );
        }
        Some(Trap::StackOverflow) => {
            return ("RecursionError".to_owned(), "the interpreter's stack overflowed".to_owned());
        }
        // CPython keeps its C stack in linear memory (512 KiB in this build, at the bottom of memory): recursion that
        // goes through C functions (`functools.cache` wrappers, sort keys, `__repr__` of nested objects) exhausts it
        // after roughly 50 levels, and the next push wraps below address 0. Interpreter code is memory-safe, so an
        // out-of-bounds access is that overflow.
        Some(Trap::MemoryOutOfBounds) => {
            tracing::debug!(backtrace = %err, "the wasm sandbox trapped on an out-of-bounds access");
            return (
                "RecursionError".to_owned(),
                "the interpreter's C stack overflowed (recursion through C functions such as functools.cache \
                 wrappers or sort keys is limited to a few dozen levels in the sandbox)"
                    .to_owned(),
            );
        }
        // The wasm backtrace (numbered frames without names) helps nobody reading a cell error: only in the log.
        Some(trap) => {
            tracing::debug!(%trap, backtrace = %err, "the wasm sandbox trapped");
            return ("SystemError".to_owned(), format!("the sandbox crashed ({trap})"));
        }
        None => {}
    }
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return ("SystemExit".to_owned(), format!("the interpreter exited with status {}", exit.0));
    }
    if let Some(ProtocolError(message)) = err.downcast_ref::<ProtocolError>() {
        return ("SystemError".to_owned(), format!("the sandbox's channel to the host broke ({message})"));
    }
    ("SystemError".to_owned(), format!("the sandbox crashed ({err})"))
}

/// The session thread: runs the sandbox, and rebuilds it after a trap, until the session is closed or dies.
pub(crate) fn run_sandbox(runtime: Arc<Runtime>, mut ctl: Control) {
    let mut rebuilds_without_progress = 0u32;
    loop {
        let cells_before = ctl.history.len();
        let (result, state) = run_instance(&runtime, ctl);
        let diagnostics = state.diagnostics_text();
        let timed_out = state.timed_out;
        let violation = state.violation;
        let phase = state.phase;
        ctl = state.ctl;
        if ctl.is_aborted() {
            abandon(phase, ctl.owed.take(), ctl.boot_reply.take());
            return;
        }
        if matches!(phase, Phase::Exiting) {
            // Closed (or the context did not load, already reported): whatever the exit status, we are done.
            return;
        }
        let (kind, message) = match &result {
            Ok(()) => ("SystemExit".to_owned(), "the interpreter exited".to_owned()),
            Err(err) => classify(err, timed_out, violation.as_deref(), &ctl),
        };
        tracing::debug!(%kind, %message, %diagnostics, "wasm sandbox stopped");
        match phase {
            Phase::Boot | Phase::Replay { .. } => {
                let mut detail = message.clone();
                if !diagnostics.is_empty() {
                    detail = format!("{detail}: {diagnostics}");
                }
                if let Some(reply) = ctl.boot_reply.take() {
                    drop(reply.send(Err(WasmError::Runtime(format!("the sandbox failed to start: {detail}")))));
                } else if let Some(owed) = ctl.owed.take() {
                    give_up(owed, &format!("the sandbox could not be rebuilt after a trap: {detail}"));
                }
                return;
            }
            Phase::Cell { reply, started, .. } => {
                let replay = plan_replay(&mut ctl, runtime.replay_budget);
                let outcome = CellOutcome {
                    error: Some(CellError { kind, message: format!("{message}; {replay}"), traceback: String::new() }),
                    duration: started.elapsed(),
                    ..CellOutcome::default()
                };
                if let Some(reply) = reply {
                    ctl.owed = Some(Owed::Cell(reply, outcome));
                }
            }
            // The driver had replied, but the guest did not get back to its main loop in time: the reply does not
            // count (it may have been written by the cell itself before it went on running).
            Phase::Replied(owed) => {
                if matches!(owed, Owed::Cell(..)) {
                    // The cell was recorded when its reply came; it did not really end.
                    ctl.history.pop();
                }
                let replay = plan_replay(&mut ctl, runtime.replay_budget);
                ctl.owed = Some(match owed {
                    Owed::Cell(reply, outcome) => Owed::Cell(
                        reply,
                        CellOutcome {
                            error: Some(CellError {
                                kind,
                                message: format!("{message}; {replay}"),
                                traceback: String::new(),
                            }),
                            duration: outcome.duration,
                            ..CellOutcome::default()
                        },
                    ),
                    Owed::Get(reply, _) => Owed::Get(
                        reply,
                        Err(WasmError::Runtime(format!("reading the variable stopped the sandbox: {message}"))),
                    ),
                    Owed::Names(reply, _) => Owed::Names(
                        reply,
                        Err(WasmError::Runtime(format!("listing variables stopped the sandbox: {message}"))),
                    ),
                });
            }
            Phase::Get { reply } => {
                if let Some(reply) = reply {
                    let err = WasmError::Runtime(format!("reading the variable stopped the sandbox: {message}"));
                    ctl.owed = Some(Owed::Get(reply, Err(err)));
                }
            }
            Phase::Names { reply } => {
                if let Some(reply) = reply {
                    let err = WasmError::Runtime(format!("listing variables stopped the sandbox: {message}"));
                    ctl.owed = Some(Owed::Names(reply, Err(err)));
                }
            }
            Phase::Idle | Phase::Exiting => {}
        }
        if ctl.history.len() == cells_before {
            rebuilds_without_progress += 1;
        } else {
            rebuilds_without_progress = 0;
        }
        if rebuilds_without_progress > MAX_REBUILDS_WITHOUT_PROGRESS {
            if let Some(owed) = ctl.owed.take() {
                give_up(owed, "the sandbox keeps failing; the session was closed");
            }
            return;
        }
    }
}

/// Keeps the earlier cells that a rebuild replays within the replay budget (their recorded run time), dropping the
/// rest from the history so no later trap pays for them either; says what the model should know.
fn plan_replay(ctl: &mut Control, budget: Option<Duration>) -> String {
    let budget = budget.unwrap_or(ctl.cell_timeout);
    let mut spent = Duration::ZERO;
    let kept = ctl
        .history
        .iter()
        .take_while(|record| {
            spent += record.duration;
            spent <= budget
        })
        .count();
    let total = ctl.history.len();
    if kept == total {
        return "the sandbox was restarted and earlier cells were replayed".to_owned();
    }
    let first_lost = ctl.history[kept].number;
    ctl.history.truncate(kept);
    format!(
        "the sandbox was restarted; earlier cells were replayed only up to cell {} (replaying costs their run \
         time, limited to {} s), so variables defined in cell {first_lost} and later are gone",
        first_lost.saturating_sub(1),
        budget.as_secs_f64()
    )
}

/// An aborted session: whoever waits gets told, nothing is rebuilt.
fn abandon(phase: Phase, owed: Option<Owed>, boot: Option<oneshot::Sender<WasmResult<ContextInfo>>>) {
    const MESSAGE: &str = "the session was aborted";
    if let Some(owed) = owed {
        owed.fail(MESSAGE);
    }
    if let Some(boot) = boot {
        drop(boot.send(Err(WasmError::Dead(MESSAGE.to_owned()))));
    }
    match phase {
        Phase::Cell { reply: Some(reply), .. } => drop(reply.send(Err(WasmError::Dead(MESSAGE.to_owned())))),
        Phase::Get { reply: Some(reply) } => drop(reply.send(Err(WasmError::Dead(MESSAGE.to_owned())))),
        Phase::Names { reply: Some(reply) } => drop(reply.send(Err(WasmError::Dead(MESSAGE.to_owned())))),
        Phase::Replied(owed) => owed.fail(MESSAGE),
        _ => {}
    }
}

/// Delivers the reply of a trapped job when the sandbox cannot be rebuilt: a cell still gets its outcome (saying
/// the session is over); later calls find the session dead.
fn give_up(owed: Owed, message: &str) {
    match owed {
        Owed::Cell(reply, mut outcome) => {
            if let Some(error) = outcome.error.as_mut()
                && let Some((reason, _)) = error.message.split_once("; the sandbox was restarted")
            {
                error.message = format!("{reason}; {message}");
            }
            drop(reply.send(Ok(outcome)));
        }
        other => other.fail(message),
    }
}

/// A REPL session of the [`crate::WasmExecutor`]: a CPython interpreter in its own wasmtime `Store`, driven from a
/// dedicated OS thread.
///
/// Dropping it without [`ReplSession::close`] also ends the sandbox (once any cell still running has ended).
#[derive(Debug)]
pub struct WasmSession {
    jobs: Option<Sender<Job>>,
    info: ContextInfo,
    thread: Option<JoinHandle<()>>,
    aborted: Arc<AtomicBool>,
}

impl WasmSession {
    pub(crate) async fn start(
        runtime: Arc<Runtime>,
        spec: SessionSpec,
        host: Arc<dyn SubCallHost>,
    ) -> WasmResult<Self> {
        let handle = Handle::current();
        let SessionSpec { context, cell_timeout, max_captured_chars } = spec;
        let (context_kind, bytes) = tokio::task::spawn_blocking(move || context_bytes(context))
            .await
            .map_err(|err| WasmError::Runtime(format!("context loading task failed: {err}")))??;
        let max_chars = match runtime.max_captured_chars {
            Some(cap) => cap.min(max_captured_chars),
            None => max_captured_chars,
        };
        let (jobs_tx, jobs_rx) = std::sync::mpsc::channel();
        let aborted = Arc::new(AtomicBool::new(false));
        let (boot_tx, boot_rx) = oneshot::channel();
        let ctl = Control {
            jobs: jobs_rx,
            host,
            handle,
            cell_timeout,
            boot_timeout: cell_timeout.max(MIN_BOOT_TIMEOUT),
            max_chars,
            fuel_per_cell: runtime.fuel_per_cell,
            limits: runtime.limits,
            context_kind,
            context: Arc::new(bytes),
            cells: 0,
            history: Vec::new(),
            info: None,
            boot_reply: Some(boot_tx),
            owed: None,
            aborted: Arc::clone(&aborted),
            cpu: Arc::clone(&runtime.cpu),
        };
        let thread = std::thread::Builder::new()
            .name("rlm-wasm-session".to_owned())
            .stack_size(SESSION_THREAD_STACK)
            .spawn(move || run_sandbox(runtime, ctl))
            .map_err(|err| WasmError::io("cannot start the session thread", err))?;
        let info =
            boot_rx.await.map_err(|_| WasmError::Runtime("the sandbox thread ended during start-up".to_owned()))??;
        Ok(Self { jobs: Some(jobs_tx), info, thread: Some(thread), aborted })
    }

    async fn request<T>(&self, make: impl FnOnce(oneshot::Sender<WasmResult<T>>) -> Job) -> WasmResult<T> {
        let dead = || WasmError::Dead("the wasm sandbox of this session is gone".to_owned());
        let jobs = self.jobs.as_ref().ok_or_else(dead)?;
        let (tx, rx) = oneshot::channel();
        jobs.send(make(tx)).map_err(|_| dead())?;
        rx.await.map_err(|_| dead())?
    }
}

#[async_trait]
impl ReplSession for WasmSession {
    fn context_info(&self) -> &ContextInfo {
        &self.info
    }

    async fn run_cell(&mut self, code: &str) -> rlm_protocol::Result<CellOutcome> {
        let code = code.to_owned();
        Ok(self.request(|reply| Job::Cell { code, reply }).await?)
    }

    async fn get_variable(&mut self, name: &str) -> rlm_protocol::Result<Option<String>> {
        let name = name.to_owned();
        Ok(self.request(|reply| Job::Get { name, reply }).await?)
    }

    async fn variable_names(&mut self) -> rlm_protocol::Result<Vec<String>> {
        Ok(self.request(|reply| Job::Names { reply }).await?)
    }

    fn abort_handle(&self) -> Option<AbortHandle> {
        let aborted = Arc::clone(&self.aborted);
        Some(AbortHandle::new(move || aborted.store(true, Ordering::Relaxed)))
    }

    async fn close(mut self: Box<Self>) -> rlm_protocol::Result<()> {
        // Closing the job channel makes the driver leave its loop; then wait for the thread.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|err| rlm_protocol::Error::Executor(format!("closing the session failed: {err}")))?
                .map_err(|_| rlm_protocol::Error::Executor("the session thread panicked".to_owned()))?;
        }
        Ok(())
    }
}
