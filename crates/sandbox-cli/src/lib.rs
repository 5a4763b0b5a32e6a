//! The command-line front of the sandbox service, shared by two binaries:
//!
//! * `rlm-sandbox` (this crate's binary), what the sandbox image runs: `rlm-sandbox serve`, `rlm-sandbox prepare`,
//!   `rlm-sandbox health URL`. It links the service and the WebAssembly executor only: no model client, no HTTP
//!   client, no embedded CPython, no database driver. A key put into its environment by mistake has no code that
//!   could send it anywhere.
//! * `rlm` (crates/cli), where `rlm sandbox serve|prepare` and `rlm health` run the same code, for convenience.
//!
//! Without the `wasm` feature only [`health`] and [`seconds`] remain, for a main binary built without the
//! WebAssembly executor.

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a command-line program talks through stdout and stderr")]

mod health;
#[cfg(feature = "wasm")]
mod sandbox;

use std::time::Duration;

use anyhow::{Result, bail};

pub use health::{HealthArgs, health};
#[cfg(feature = "wasm")]
pub use sandbox::{SandboxArgs, SandboxCommand, SandboxServeArgs, WasmArgs, sandbox};

/// `value` seconds as a duration; `flag` (without its dashes) names the option in the error.
pub fn seconds(value: f64, flag: &str) -> Result<Duration> {
    match Duration::try_from_secs_f64(value) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        _ => bail!("--{flag} must be a positive number of seconds, got {value}"),
    }
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM (what a container runtime sends to stop a service).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
