//! `rlm-sandbox`: the sandbox service for model-written code, in a binary that links no model client (see the
//! library half of this crate).

#![allow(clippy::print_stderr, reason = "a command-line program reports errors on stderr")]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rlm_sandbox_cli::{HealthArgs, SandboxArgs, SandboxCommand};

#[derive(Debug, Parser)]
#[command(
    name = "rlm-sandbox",
    version,
    about = "The rlm sandbox service: REPL sessions for model-written code in WebAssembly sandboxes, over HTTP. \
             Holds no model key: sub-calls go back to the client."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once per process")]
enum Command {
    #[command(flatten)]
    Sandbox(SandboxCommand),
    /// GET a URL; exit 0 on a 2xx status, 1 otherwise (the image's health check; it has no curl).
    Health(HealthArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("RLM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Sandbox(command) => rlm_sandbox_cli::sandbox(SandboxArgs { command }).await,
            Command::Health(args) => rlm_sandbox_cli::health(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
