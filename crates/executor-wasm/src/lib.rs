//! The wasm executor of rlm: a persistent Python REPL on CPython 3.12 compiled to WebAssembly (VMware Wasm Labs'
//! `python.wasm`, WASI preview 1), run in wasmtime with **no capabilities**: no preopened directories, no
//! environment variables, no sockets, no host stdio.
//!
//! [`WasmExecutor`] implements [`rlm_protocol::Executor`] (name `"wasm"`); its sessions, [`WasmSession`], implement
//! [`rlm_protocol::ReplSession`] with the same REPL semantics as the local executor (`rlm-executor-local`):
//! `context`, `llm_query` / `llm_query_batched` / `rlm_query` / `rlm_query_batched`, `SHOW_VARS()`,
//! `FINAL_VAR(name)`, the `answer` dict, reserved names restored after every cell, IPython-style echo of a trailing
//! expression, capped output capture, short tracebacks with `<cell N>` file names.
//!
//! # Obtaining the interpreter
//!
//! The module is never downloaded at run time. `scripts/fetch-python-wasm.sh` installs it (checked against a pinned
//! sha256) at `$RLM_PYTHON_WASM`, else `~/.local/share/rlm/python-3.12.0.wasm`, which is where
//! [`WasmConfig::default`] looks. The first [`WasmExecutor::new`] on a machine compiles it (seconds in release
//! builds, longer in debug builds) and caches the compiled code in [`WasmConfig::cache_dir`]; later processes only
//! map that file.
//!
//! # How it runs
//!
//! * One wasmtime `Engine` per process (two if fuel metering is used), with epoch interruption: a background thread
//!   advances the epoch every 10 ms.
//! * One `Store` (one interpreter) per session, on its own OS thread, inside one long call of a small Python driver
//!   (`src/driver.py`, after the REPL core `python/repl_core.py` shared with the local executor). CPython and the
//!   driver are booted once per machine into a pre-initialised snapshot (`src/snapshot.rs`, cached next to the
//!   compiled module); every session maps its memory copy-on-write and calls straight into the driver's `_main`
//!   (about a millisecond, against about 100 ms for a boot through `_start`, which [`WasmConfig::snapshot`] `= false`
//!   keeps). Host and
//!   guest talk over a private file descriptor served by the host's own `fd_read` / `fd_write` imports:
//!   length-prefixed frames, JSON headers plus raw byte payloads. The context enters the guest as raw UTF-8 (or JSON)
//!   bytes copied straight into the guest's buffer and decoded once there.
//! * Sub-calls: the guest sends all prompts of a batch in one frame and blocks; the session thread calls the
//!   session's [`rlm_protocol::SubCallHost`] (one call per batch) and writes the answers back. The guest never sees
//!   an API key (or any host variable).
//!
//! # Limits
//!
//! * Memory: [`WasmConfig::memory_limit_bytes`] per session (default 1 GiB). An allocation past it is a Python
//!   `MemoryError` in the cell; the session goes on.
//! * Time: [`rlm_protocol::SessionSpec::cell_timeout`] per cell (also bounding sub-calls made by the cell), measured
//!   only while a cell runs. Optional deterministic fuel: [`WasmConfig::fuel_per_cell`]. Blocking host calls are
//!   bounded too: the executor serves `poll_oneoff` (`time.sleep`, `select`) and `clock_time_get` itself
//!   (`src/clock.rs`), so `time.sleep(10**6)` ends at the cell's deadline like a busy loop.
//! * A trap (time limit, fuel, stack overflow, crash, `os._exit`) kills that interpreter. An out-of-bounds memory
//!   access is CPython's 512 KiB C stack (in linear memory) overflowing, after a few dozen levels of recursion through
//!   C code such as `functools.cache` wrappers: it is reported as `RecursionError`. The cell's outcome says so
//!   (`TimeoutError: cell exceeded the N s time limit; the sandbox was restarted and earlier cells were replayed`),
//!   and the session is rebuilt: a fresh `Store` re-runs every earlier cell that completed, answering their
//!   sub-calls from a log instead of calling the host again. Output of the trapped cell is lost; side effects that
//!   depend on time or randomness may differ after replay. If the rebuild fails, later calls return
//!   [`rlm_protocol::Error::SessionDead`].
//!
//! Each session keeps its context bytes on the host (to rebuild after a trap), and the guest briefly holds the
//! bytes and the decoded `str` while loading: plan on about 3x the context size in memory per session, and a memory
//! limit above 2x the context size.

mod clock;
mod engine;
mod env;
mod error;
pub mod frame;
mod guest;
mod sched;
mod session;
mod snapshot;
mod stack;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use rlm_protocol::{Executor, ReplSession, SessionSpec, SubCallHost};
use wasmtime::Linker;

pub use engine::ModuleSource;
pub use guest::ChannelLimits;
pub use session::WasmSession;

use crate::error::WasmResult;
use crate::guest::{CHANNEL_FD, GuestState};
use crate::session::{Entry, Runtime};

/// The Python driver run in every sandbox: the REPL core shared with the local executor, then the driver proper.
const DRIVER: &str = concat!(include_str!("../../../python/repl_core.py"), include_str!("driver.py"));

/// Settings of a [`WasmExecutor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmConfig {
    /// The CPython `python.wasm` module. Default: `$RLM_PYTHON_WASM`, else
    /// `~/.local/share/rlm/python-3.12.0.wasm` (see `scripts/fetch-python-wasm.sh`).
    pub module_path: PathBuf,
    /// Where the compiled module is cached. Default: `$XDG_CACHE_HOME/rlm`, else `~/.cache/rlm`.
    pub cache_dir: PathBuf,
    /// Linear-memory limit of each session. Default: 1 GiB.
    pub memory_limit_bytes: usize,
    /// Fuel (roughly, wasm instructions) each cell may use; `None` (default) for no fuel metering. Metering makes
    /// code slower; the wall-clock limit applies either way.
    pub fuel_per_cell: Option<u64>,
    /// Caps captured stdout+stderr per cell below [`SessionSpec::max_captured_chars`]; `None` to use the spec's.
    pub max_captured_chars: Option<usize>,
    /// Caps on what leaves the guest besides its output: sub-call prompts and batches, answers, bytes per cell.
    pub limits: ChannelLimits,
    /// Guests running at once (the rest wait for a turn, first come, first served); default: one per core.
    pub cpu_slots: usize,
    /// How long a guest runs while others wait before it goes to the back of the queue. Default: 50 ms.
    pub time_slice: std::time::Duration,
    /// After a trap, the earlier cells are replayed while their recorded run time fits this budget; later ones are
    /// dropped (the model is told). `None` (default): the cell time limit.
    pub replay_budget: Option<std::time::Duration>,
    /// Start sessions from a pre-initialised snapshot of the booted interpreter (built once and cached next to the
    /// compiled module) instead of booting CPython for each one. Default: on. If the snapshot cannot be built,
    /// sessions boot CPython as without it.
    pub snapshot: bool,
}

impl WasmConfig {
    pub const DEFAULT_MEMORY_LIMIT_BYTES: usize = 1 << 30;
}

impl Default for WasmConfig {
    fn default() -> Self {
        Self {
            module_path: env::default_module_path(),
            cache_dir: env::default_cache_dir(),
            memory_limit_bytes: Self::DEFAULT_MEMORY_LIMIT_BYTES,
            fuel_per_cell: None,
            max_captured_chars: None,
            limits: ChannelLimits::default(),
            cpu_slots: std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            time_slice: sched::DEFAULT_SLICE,
            replay_budget: None,
            snapshot: true,
        }
    }
}

/// Runs REPL sessions in WebAssembly sandboxes. Cloning is cheap (the compiled module is shared).
#[derive(Debug, Clone)]
pub struct WasmExecutor {
    runtime: Arc<Runtime>,
    source: ModuleSource,
    cache_file: PathBuf,
    snapshot: Option<(ModuleSource, PathBuf)>,
}

impl WasmExecutor {
    /// Loads the interpreter (from the compiled-module cache when possible, else compiling it and filling the cache)
    /// and prepares it for instantiation. Blocking: milliseconds with a warm cache, seconds or more without.
    pub fn new(config: WasmConfig) -> rlm_protocol::Result<Self> {
        Ok(Self::create(config)?)
    }

    fn create(config: WasmConfig) -> WasmResult<Self> {
        let engine = engine::engine(config.fuel_per_cell.is_some())?;
        let loaded = engine::load_module(&engine, &config.module_path, &config.cache_dir)?;
        let mut linker: Linker<GuestState> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |state: &mut GuestState| &mut state.wasi)?;
        guest::add_channel_to_linker(&mut linker)?;
        clock::add_to_linker(&mut linker)?;
        let pre = linker.instantiate_pre(&loaded.module)?;
        let driver = DRIVER.replace("__CHANNEL_FD__", &CHANNEL_FD.to_string());
        // -I: isolated mode (no PYTHON* variables, no user site); -B: no bytecode files.
        let args = ["python", "-I", "-B", "-c"].iter().map(|s| (*s).to_owned()).chain([driver]).collect();
        let mut runtime = Runtime {
            entry: Entry::Fresh { pre, args },
            memory_limit: config.memory_limit_bytes,
            fuel_per_cell: config.fuel_per_cell,
            max_captured_chars: config.max_captured_chars,
            limits: config.limits,
            cpu: sched::CpuScheduler::new(config.cpu_slots, config.time_slice),
            replay_budget: config.replay_budget,
        };
        let mut snapshot = None;
        if config.snapshot {
            match snapshot::load_or_build(&runtime, &linker, &config.module_path, &loaded.sha256, &config.cache_dir) {
                Ok(built) => {
                    runtime.entry = Entry::Snapshot { pre: built.pre };
                    snapshot = Some((built.source, built.cache_file));
                }
                // Sessions still work, only slower to start.
                Err(err) => tracing::warn!(%err, "no pre-initialised snapshot; every session boots CPython"),
            }
        }
        Ok(Self { runtime: Arc::new(runtime), source: loaded.source, cache_file: loaded.cache_file, snapshot })
    }

    /// Whether sessions start from a pre-initialised snapshot, and if so whether it was built in this call or loaded
    /// from the cache.
    pub fn snapshot_source(&self) -> Option<ModuleSource> {
        self.snapshot.as_ref().map(|(source, _)| *source)
    }

    /// The snapshot's cache file, when sessions start from a snapshot.
    pub fn snapshot_file(&self) -> Option<&Path> {
        self.snapshot.as_ref().map(|(_, file)| file.as_path())
    }

    /// Whether [`WasmExecutor::new`] compiled the module or loaded it from the cache.
    pub fn module_source(&self) -> ModuleSource {
        self.source
    }

    /// The compiled-module cache file this executor used (it may not exist if writing the cache failed).
    pub fn cache_file(&self) -> &Path {
        &self.cache_file
    }

    /// Starts a session with the concrete type (the trait method returns it boxed).
    pub async fn start_wasm_session(
        &self,
        spec: SessionSpec,
        host: Arc<dyn SubCallHost>,
    ) -> rlm_protocol::Result<WasmSession> {
        Ok(WasmSession::start(Arc::clone(&self.runtime), spec, host).await?)
    }
}

#[async_trait]
impl Executor for WasmExecutor {
    fn name(&self) -> &str {
        "wasm"
    }

    async fn start_session(
        &self,
        spec: SessionSpec,
        host: Arc<dyn SubCallHost>,
    ) -> rlm_protocol::Result<Box<dyn ReplSession>> {
        Ok(Box::new(self.start_wasm_session(spec, host).await?))
    }
}
