//! The local executor of rlm: a persistent Python REPL on CPython embedded in this process (pyo3).
//!
//! [`LocalExecutor`] implements [`rlm_protocol::Executor`] (name `"local"`); its sessions, [`LocalSession`],
//! implement [`rlm_protocol::ReplSession`]. One interpreter serves the whole process, started on first use; each
//! session has its own globals dict (own `__builtins__`, `__name__ == "__main__"`), so sessions never see each
//! other's variables. Imported modules (`sys.modules`) are shared, as in any single interpreter.
//!
//! # What code in a cell sees
//!
//! * `context`: the session's [`rlm_protocol::Context`] as a Python value (`str`, `list`, `dict`, ...);
//! * `llm_query(prompt, model=None) -> str`, `llm_query_batched(prompts, model=None) -> list[str]`,
//!   `rlm_query(...)`, `rlm_query_batched(...)`: sub-calls served by the session's
//!   [`rlm_protocol::SubCallHost`]. A batch is one host call (the host runs it concurrently); a failed prompt yields
//!   the string `"Error: ..."`, never an exception. Non-`str` prompts are sent as JSON (or `str()`). The GIL is
//!   released while waiting, so Python threads overlap their sub-calls;
//! * `SHOW_VARS()`: the user's variables and their types; `FINAL_VAR(name)`: marks a variable as the final answer
//!   ([`rlm_protocol::CellOutcome::final_var`]);
//! * `answer = {"content": None, "ready": False}`: setting `ready` to a truthy value makes
//!   [`rlm_protocol::CellOutcome::answer`] `str(answer["content"])`.
//!
//! The reserved names ([`rlm_protocol::RESERVED_NAMES`]) are rebound after every cell, so `llm_query = None` does
//! not break later cells (in-place mutation of `context` is not undone). `answer` is not restored.
//!
//! Like IPython, when the last statement of a cell is an expression whose value is not `None`, its `repr` is
//! printed to stdout after the cell runs. (A very long `str`/`bytes` value is echoed only up to the capture limit.)
//!
//! stdout and stderr are captured per cell and per thread: `sys.stdout` / `sys.stderr` are replaced by routers that
//! write into the buffer of the thread running the cell, and reinstalled after every cell (so `sys.stdout = None` in a
//! cell lasts until its end). Output from threads that user code starts goes to the process's real streams. At most
//! [`rlm_protocol::SessionSpec::max_captured_chars`] characters are kept; the rest is counted in
//! [`rlm_protocol::CellOutcome::dropped_chars`].
//!
//! # What a cell cannot break for others
//!
//! * Builtins: each session's `__builtins__` is a copy of the builtins as they were at interpreter start; the shared
//!   `builtins` module is restored from that snapshot after every cell, and the prelude's own code uses a private
//!   copy, so `builtins.print = None` does not break the echo, later cells or later sessions.
//! * Signals: the interpreter is initialised on a dedicated thread that stays parked, so no cell runs on Python's main
//!   thread and `signal.signal` raises `ValueError` in every cell (the SIGINT handler CPython installs when `signal`
//!   is first imported is reset to the default at start-up).
//!
//! See `docs/security.md`: this executor is not a sandbox.
//!
//! # Time limits
//!
//! A watchdog raises an exception in the cell's thread (`PyThreadState_SetAsyncExc`) when
//! [`rlm_protocol::SessionSpec::cell_timeout`] passes, and again every 200 ms until the cell ends; a sub-call that is
//! being waited on is abandoned at the deadline. The outcome's error is `TimeoutError` and the session stays usable.
//! Limits of doing this in-process: the exception is delivered between bytecodes, so **a single long C call (a huge
//! regex, `sum(range(10**12))`, a blocking socket read) cannot be interrupted** until it returns; threads started by
//! user code keep running after the cell; `os._exit()` ends the whole process. This executor is not a sandbox.
//!
//! # Inside a Python process
//!
//! Loaded into a running interpreter (the `rlm` Python package's extension, built by maturin without linking
//! libpython), the executor uses that interpreter: `Python::initialize` finds it started, and cells run in the host's
//! interpreter on the engine's threads. The host keeps its SIGINT handler (`KeyboardInterrupt`); streams it installs
//! later (pytest's capture, `contextlib.redirect_stdout`) become the routers' real streams at the next cell instead of
//! being replaced; builtins it adds are kept (a cell's changes to existing builtins are still undone).
//!
//! # Linking: the rpath `build.rs`
//!
//! pyo3 links against the libpython of the Python it finds at build time (`PYO3_PYTHON`, else `python3` on PATH),
//! but the resulting binary has no rpath, so at run time the dynamic loader may pick another libpython (on the
//! development machine: Debian's instead of pyenv's). This crate's `build.rs` adds the rpath to its own test and
//! example binaries only (`cargo:rustc-link-arg` does not propagate). **Every crate that produces a binary embedding
//! it** (including its tests), directly or not, needs the same in its own `build.rs`, which asks pyo3's build
//! configuration for the directory:
//!
//! ```text
//! // build.rs, with `rlm-build-support` as a build-dependency
//! fn main() {
//!     rlm_build_support::link_embedded_python();
//! }
//! ```
//!
//! At run time the executor checks that the loaded libpython has the `major.minor` it was built for and otherwise
//! fails [`rlm_protocol::Executor::start_session`] with [`rlm_protocol::Error::Executor`] (no crash).

mod bridge;
mod context;
mod error;
mod runtime;
mod session;
mod threads;

use std::sync::Arc;

use async_trait::async_trait;
use rlm_protocol::{Executor, ReplSession, SessionSpec, SubCallHost};

pub use session::LocalSession;

/// Runs REPL sessions on CPython embedded in this process. Cheap to create; the interpreter starts on first use.
#[derive(Debug, Clone, Default)]
pub struct LocalExecutor {
    _private: (),
}

impl LocalExecutor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the interpreter now (instead of on the first session) and checks it is the Python this crate was built
    /// against. Blocking (tens of milliseconds the first time).
    pub fn initialize() -> rlm_protocol::Result<()> {
        runtime::runtime()?;
        Ok(())
    }

    /// Starts the interpreter and reads the text file at `path` into a Python string, on a new thread, and returns at
    /// once: a program that knows its context file early (a command line) overlaps the interpreter's start-up and
    /// the read with its other preparations. The next session over [`rlm_protocol::Context::TextFile`] of the same
    /// path takes the string (waiting for the read to end) instead of reading the file; when the read-ahead failed,
    /// that session reads the file itself and reports the error as always. Text that no session takes stays in
    /// memory until the next read-ahead replaces it, so call this only for a file a session will use.
    pub fn read_ahead(path: impl Into<std::path::PathBuf>) {
        context::read_ahead(path.into());
    }

    /// Starts the interpreter on a new thread and returns at once (see [`LocalExecutor::initialize`]); a session
    /// started later waits for the start-up to end.
    pub fn initialize_in_background() {
        // An error here is reported again by the first session, which tries the same start-up.
        let started =
            std::thread::Builder::new().name("rlm-python-start".to_owned()).spawn(|| drop(runtime::runtime()));
        drop(started);
    }

    /// `major.minor` of the Python this crate was built against.
    pub fn python_build_version() -> &'static str {
        runtime::BUILD_PYTHON_VERSION
    }

    /// Starts a session with the concrete type (the trait method returns it boxed).
    pub async fn start_local_session(
        &self,
        spec: SessionSpec,
        host: Arc<dyn SubCallHost>,
    ) -> rlm_protocol::Result<LocalSession> {
        let handle = tokio::runtime::Handle::current();
        let session = tokio::task::spawn_blocking(move || LocalSession::create(spec, host, handle))
            .await
            .map_err(error::LocalError::from)??;
        Ok(session)
    }
}

#[async_trait]
impl Executor for LocalExecutor {
    fn name(&self) -> &str {
        "local"
    }

    async fn start_session(
        &self,
        spec: SessionSpec,
        host: Arc<dyn SubCallHost>,
    ) -> rlm_protocol::Result<Box<dyn ReplSession>> {
        Ok(Box::new(self.start_local_session(spec, host).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send + 'static>() {}

    #[test]
    fn sessions_are_send_and_executors_shareable() {
        assert_send::<LocalSession>();
        assert_send::<Box<dyn ReplSession>>();
        fn assert_sync<T: Send + Sync>() {}
        assert_sync::<LocalExecutor>();
        assert_eq!(LocalExecutor::new().name(), "local");
    }
}
