//! `serve`: the sandbox service (see the `rlm-sandbox` library and docs/sandbox.md); `prepare`: compile and cache the
//! WebAssembly CPython ahead of time (for container images). As `rlm-sandbox serve|prepare` and `rlm sandbox serve|prepare`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use rlm_executor_wasm::{WasmConfig, WasmExecutor};
use rlm_sandbox_service::{Sandbox, SandboxConfig};
use std::path::PathBuf;

use crate::seconds;

/// Settings of the WebAssembly sandbox.
#[derive(Debug, Clone, Args)]
pub struct WasmArgs {
    /// The CPython WebAssembly module (default: $RLM_PYTHON_WASM, else ~/.local/share/rlm/python-3.12.0.wasm, as
    /// installed by scripts/fetch-python-wasm.sh).
    #[arg(long)]
    pub python_wasm: Option<PathBuf>,
    /// Where the compiled module is cached (default: $XDG_CACHE_HOME/rlm or ~/.cache/rlm).
    #[arg(long, env = "RLM_WASM_CACHE_DIR")]
    pub wasm_cache_dir: Option<PathBuf>,
    /// Memory limit of each sandbox, in MiB.
    #[arg(long, env = "RLM_SANDBOX_MEMORY_MB", default_value_t = 1024)]
    pub memory_mb: usize,
    /// Fuel (about one unit per WebAssembly instruction) each cell may use; none by default.
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Largest sub-call prompt that may leave the sandbox, in MiB.
    #[arg(long, env = "RLM_SANDBOX_MAX_PROMPT_MB", default_value_t = 16)]
    pub max_prompt_mb: usize,
    /// Most prompts in one llm_query_batched / rlm_query_batched call.
    #[arg(long, env = "RLM_SANDBOX_MAX_BATCH", default_value_t = 10_000)]
    pub max_batch: usize,
    /// Largest answer or FINAL_VAR value that may leave the sandbox, in MiB.
    #[arg(long, env = "RLM_SANDBOX_MAX_ANSWER_MB", default_value_t = 4)]
    pub max_answer_mb: usize,
    /// Guests running at once; the others wait for a turn, first come, first served (default: one per core).
    #[arg(long, env = "RLM_SANDBOX_CPU_SLOTS")]
    pub cpu_slots: Option<usize>,
    /// Boot CPython for every session instead of starting it from the pre-initialised snapshot (slower; for
    /// comparison and diagnosis).
    #[arg(long, env = "RLM_WASM_NO_SNAPSHOT")]
    pub no_wasm_snapshot: bool,
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    #[command(subcommand)]
    pub command: SandboxCommand,
}

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Serve REPL sessions in WebAssembly sandboxes over HTTP. Holds no model keys: sub-calls go back to the client.
    Serve(SandboxServeArgs),
    /// Compile the WebAssembly CPython and its pre-initialised snapshot into the cache (so a later start only maps
    /// them), then exit.
    Prepare(WasmArgs),
}

#[derive(Debug, Args)]
pub struct SandboxServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port; the chosen one is printed).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Sessions held at once; more get 429.
    #[arg(long, env = "RLM_SANDBOX_MAX_SESSIONS", default_value_t = 64)]
    pub max_sessions: usize,
    /// Sessions one bearer token may hold at once; more get 429.
    #[arg(long, env = "RLM_SANDBOX_MAX_SESSIONS_PER_OWNER", default_value_t = 16)]
    pub max_sessions_per_owner: usize,
    /// Cells executing at once (the worker pool; a cell waiting for sub-call answers holds no place); default: as
    /// many as --max-sessions.
    #[arg(long, env = "RLM_SANDBOX_MAX_CONCURRENT_CELLS")]
    pub max_concurrent_cells: Option<usize>,
    /// Open connections at most; at the cap the oldest idle connection is closed to make room.
    #[arg(long, env = "RLM_SANDBOX_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Seconds a client has to send a request's head (also the longest idle time of a keep-alive connection).
    #[arg(long, env = "RLM_SANDBOX_HEADER_TIMEOUT", default_value_t = 10.0)]
    pub header_timeout: f64,
    /// Longest pause, in seconds, while a request body arrives.
    #[arg(long, env = "RLM_SANDBOX_BODY_IDLE_TIMEOUT", default_value_t = 60.0)]
    pub body_idle_timeout: f64,
    /// Bytes per second a request body must average after its first 10 s (0: no minimum).
    #[arg(long, env = "RLM_SANDBOX_MIN_BODY_RATE", default_value_t = 1024)]
    pub min_body_rate: u64,
    /// Seconds requests in flight may take at shutdown before the sessions are closed.
    #[arg(long, env = "RLM_SANDBOX_SHUTDOWN_GRACE", default_value_t = 10.0)]
    pub shutdown_grace: f64,
    /// Seconds a session may stay unused before it is closed.
    #[arg(long, env = "RLM_SANDBOX_IDLE_TTL", default_value_t = 600.0)]
    pub idle_ttl: f64,
    /// Largest cell time limit a client may ask for, in seconds.
    #[arg(long, env = "RLM_SANDBOX_MAX_CELL_TIMEOUT", default_value_t = 600.0)]
    pub max_cell_timeout: f64,
    /// This replica's own URL, returned with each new session so clients reach it directly even behind a load
    /// balancer over several replicas (Kubernetes: `http://$(POD_IP):8000`).
    #[arg(long, env = "RLM_SANDBOX_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// Largest request body (and uploaded context), in MiB.
    #[arg(long, env = "RLM_SANDBOX_MAX_BODY_MB", default_value_t = 2048)]
    pub max_body_mb: usize,
    #[command(flatten)]
    pub wasm: WasmArgs,
}

pub async fn sandbox(args: SandboxArgs) -> Result<ExitCode> {
    match args.command {
        SandboxCommand::Serve(args) => serve(args).await,
        SandboxCommand::Prepare(wasm) => {
            let executor = wasm.executor()?;
            println!("compiled module ready: {} ({:?})", executor.cache_file().display(), executor.module_source());
            match (executor.snapshot_file(), executor.snapshot_source()) {
                (Some(file), Some(source)) => {
                    println!("pre-initialised snapshot ready: {} ({source:?})", file.display())
                }
                _ => println!("no pre-initialised snapshot: sessions boot CPython (see the log for why)"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(args: SandboxServeArgs) -> Result<ExitCode> {
    for name in ["OPENAI_API_KEY", "LLM_API_KEY", "ANTHROPIC_API_KEY"] {
        if std::env::var_os(name).is_some() {
            // Sandboxes never see this process's environment, but the service has no use for model keys at all.
            tracing::warn!("{name} is set in the sandbox service's environment; it is not needed here: remove it");
        }
    }
    if args.max_sessions == 0 || args.max_sessions_per_owner == 0 || args.max_connections == 0 {
        bail!("--max-sessions, --max-sessions-per-owner and --max-connections must be at least 1");
    }
    let advertise_url = args.advertise_url.map(|u| u.trim().trim_end_matches('/').to_owned()).filter(|u| !u.is_empty());
    if let Some(url) = &advertise_url {
        let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
        if !scheme_ok || url.contains(char::is_whitespace) || url.contains("$(") {
            bail!("--advertise-url must be this replica's http(s) URL, got {url:?}");
        }
    }
    let executor = Arc::new(args.wasm.executor()?);
    let defaults = SandboxConfig::default();
    let token = std::env::var("RLM_SANDBOX_TOKEN").ok().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
    // One token per inference service keeps their sessions apart (each lists, reaches and is limited to its own).
    let additional_tokens: Vec<String> = std::env::var("RLM_SANDBOX_TOKENS")
        .unwrap_or_default()
        .split(',')
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    let config = SandboxConfig {
        max_sessions: args.max_sessions,
        max_sessions_per_owner: args.max_sessions_per_owner,
        max_concurrent_cells: args.max_concurrent_cells.unwrap_or(args.max_sessions).max(1),
        max_connections: args.max_connections,
        header_read_timeout: seconds(args.header_timeout, "header-timeout")?,
        body_idle_timeout: seconds(args.body_idle_timeout, "body-idle-timeout")?,
        min_body_rate: args.min_body_rate,
        shutdown_grace: seconds(args.shutdown_grace, "shutdown-grace")?,
        idle_ttl: seconds(args.idle_ttl, "idle-ttl")?,
        max_cell_timeout: seconds(args.max_cell_timeout, "max-cell-timeout")?,
        max_body_bytes: args.max_body_mb << 20,
        context_store_bytes: defaults.context_store_bytes.max(args.max_body_mb << 20),
        token,
        additional_tokens,
        advertise_url,
        ..defaults
    };
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let address = listener.local_addr()?;
    println!("rlm sandbox listening on http://{address} ({} sessions at most)", config.max_sessions);
    rlm_sandbox_service::serve(listener, Sandbox::new(executor, config), crate::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

impl WasmArgs {
    pub fn executor(&self) -> Result<WasmExecutor> {
        let mut config = WasmConfig::default();
        if let Some(path) = &self.python_wasm {
            config.module_path = path.clone();
        }
        if let Some(dir) = &self.wasm_cache_dir {
            config.cache_dir = dir.clone();
        }
        config.memory_limit_bytes = self.memory_mb << 20;
        config.fuel_per_cell = self.fuel;
        config.limits.prompt_bytes = self.max_prompt_mb << 20;
        config.limits.batch_len = self.max_batch;
        config.limits.batch_bytes = config.limits.batch_bytes.max(config.limits.prompt_bytes);
        config.limits.answer_bytes = self.max_answer_mb << 20;
        if let Some(slots) = self.cpu_slots {
            config.cpu_slots = slots;
        }
        config.snapshot = !self.no_wasm_snapshot;
        Ok(WasmExecutor::new(config)?)
    }
}
