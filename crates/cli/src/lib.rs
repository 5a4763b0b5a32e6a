//! `rlm`: run Recursive Language Models from the command line.
//!
//! A library as well as the `rlm` binary, so that the Python package's `rlm` console script runs this very code
//! (through [`main_with_args`]) instead of shipping a second executable.

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a command-line program talks through stdout and stderr")]

mod args;
mod bench;
mod chat;
mod model_cmd;
mod progress;
#[cfg(feature = "server")]
mod serve;
#[cfg(feature = "postgres")]
mod trace_cmd;
#[cfg(feature = "viewer")]
mod view;

use std::io::{IsTerminal, Read};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use rlm::{CancellationToken, Context, FinishedBy, Rlm, RlmBuilder, RlmError, TraceSink, TraceTarget};

use rlm::Executor;
use rlm_executor_remote::{RemoteConfig, RemoteExecutor};
#[cfg(feature = "server")]
pub(crate) use rlm_sandbox_cli::shutdown_signal;

use crate::args::{Cli, Command, ExecArgs, ExecutorArgs, ExecutorKind, ModelArgs, RunArgs};

/// Runs the command line `args` (the first item is the program name) to completion.
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => {
            // --help and --version land here too; clap knows which stream and exit code each wants.
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RLM_LOG")
        // llama.cpp warns about quirks of model files (e.g. Qwen's vocabulary) that users cannot act on.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,llama-cpp-2=error"));
    // A host process (the Python package) may have installed its own subscriber already; keep it then.
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(args).await,
            Command::Exec(args) => exec(args).await,
            Command::Chat(args) => chat::chat(args).await,
            #[cfg(feature = "server")]
            Command::Serve(args) => serve::serve(args).await,
            #[cfg(feature = "viewer")]
            Command::View(args) => view::view(args).await,
            #[cfg(feature = "postgres")]
            Command::Trace(args) => trace_cmd::trace(args).await.map(|()| ExitCode::SUCCESS),
            #[cfg(feature = "postgres")]
            Command::Stats(args) => trace_cmd::stats(args).await.map(|()| ExitCode::SUCCESS),
            #[cfg(feature = "wasm")]
            Command::Sandbox(args) => rlm_sandbox_cli::sandbox(args).await,
            Command::Health(args) => rlm_sandbox_cli::health(args).await,
            Command::Bench(args) => bench::run(*args).await.map(|()| ExitCode::SUCCESS),
            Command::Model(args) => model_cmd::model(args).await,
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

impl ExecutorArgs {
    fn build(&self) -> Result<Arc<dyn Executor>> {
        Ok(match self.executor {
            #[cfg(feature = "local")]
            ExecutorKind::Local => Arc::new(rlm::LocalExecutor::new()),
            #[cfg(not(feature = "local"))]
            ExecutorKind::Local => bail!("this build of rlm has no local executor (the `local` feature)"),
            #[cfg(feature = "wasm")]
            ExecutorKind::Wasm => Arc::new(self.wasm.executor()?),
            #[cfg(not(feature = "wasm"))]
            ExecutorKind::Wasm => bail!("this build of rlm has no wasm executor (the `wasm` feature)"),
            ExecutorKind::Remote => {
                let Some(url) = self.sandbox_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) else {
                    bail!("--executor remote needs --sandbox-url (or RLM_SANDBOX_URL)");
                };
                let token =
                    std::env::var("RLM_SANDBOX_TOKEN").ok().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
                Arc::new(RemoteExecutor::new(RemoteConfig { token: token.map(Into::into), ..RemoteConfig::new(url) })?)
            }
        })
    }
}

async fn build_rlm(
    models: &ModelArgs,
    run_timeout: Option<f64>,
    trace: TraceTarget,
    executor: Arc<dyn Executor>,
    probe_windows: bool,
    local_default: bool,
    prices: Option<&std::path::Path>,
) -> Result<Rlm> {
    let mut builder = RlmBuilder::from_env()
        .trace(trace)
        .executor(executor)
        .prompt_profile(models.prompt_profile.into())
        .route(models.route.into())
        .token_limit_field(models.token_limit_field.into())
        .request_timeout(crate::args::seconds(models.request_timeout, "request-timeout")?);
    if let Some(temperature) = models.temperature {
        builder = builder.temperature(temperature);
    }
    if let Some(model) = &models.model {
        builder = builder.model(model);
    }
    if let Some(model) = &models.sub_model {
        builder = builder.sub_model(model);
    }
    if !models.depth_model.is_empty() {
        builder = builder.depth_models(models.depth_model.clone());
    }
    if let Some(url) = &models.base_url {
        builder = builder.base_url(url);
    }
    if let Some(key) = &models.api_key {
        builder = builder.api_key(key);
    }
    if let Some(path) = &models.system_prompt {
        let template = std::fs::read_to_string(path)
            .with_context(|| format!("could not read the system prompt {}", path.display()))?;
        builder = builder.system_prompt_template(template);
    }
    if let Some(window) = models.context_window {
        builder = builder.context_window(window);
    }
    if let Some(tokens) = models.direct_max_tokens {
        builder = builder.direct_max_tokens(tokens);
    }
    if let Some(window) = models.sub_context_window {
        builder = builder.sub_context_window(window);
    }
    if let Some(dir) = &models.cache {
        let mode = if models.cache_force { rlm::CacheMode::Forced } else { rlm::CacheMode::Deterministic };
        builder = builder.cache(dir, mode);
    }
    if let Some(path) = &models.record {
        builder = builder.record(path);
    }
    if let Some(path) = &models.replay {
        builder = builder.replay(path);
    }
    builder = builder.prices(rlm::Prices::load(prices)?);
    let mut builder = builder.limits(models.limits.limits(run_timeout)?);
    if local_default && models.replay.is_none() && !builder.has_model() && !builder.has_endpoint() {
        builder = builder.model(format!("{}{}", rlm::local::LOCAL_PREFIX, rlm::local::DEFAULT_LOCAL_MODEL));
        eprintln!(
            "rlm: no API key or endpoint configured, so the model is local:{} running in this process on the CPU \
             (for a hosted model set OPENAI_API_KEY, or --base-url and --model)",
            rlm::local::DEFAULT_LOCAL_MODEL
        );
    }
    // Only routing needs the window, so only ask the server when routing can use it.
    let probe = probe_windows && models.route == crate::args::RouteArg::Auto;
    let builder = if probe { builder.detect_context_windows().await } else { builder };
    // The library names no flags; this side knows them.
    builder.build().map_err(|err| match err {
        RlmError::NoModel => anyhow::anyhow!("no model set: pass --model (or set RLM_MODEL)"),
        RlmError::NoApiKey => anyhow::anyhow!(
            "no API key for OpenAI: set OPENAI_API_KEY, or point --base-url (OPENAI_BASE_URL) at an OpenAI-compatible \
             server such as llama.cpp, vLLM or Ollama"
        ),
        err => err.into(),
    })
}

/// Where trajectories go: `--trace FILE`, nowhere with `--no-trace`, else a new file per run in `$RLM_TRACE_DIR` (or
/// ./rlm-traces).
fn trace_target(file: Option<&std::path::Path>, no_trace: bool) -> TraceTarget {
    match (file, no_trace) {
        (_, true) => TraceTarget::Disabled,
        (Some(path), false) => TraceTarget::File(path.to_path_buf()),
        (None, false) => match std::env::var_os("RLM_TRACE_DIR") {
            Some(dir) if !dir.is_empty() => TraceTarget::Directory(dir.into()),
            _ => TraceTarget::Directory(TraceTarget::DEFAULT_DIRECTORY.into()),
        },
    }
}

/// Context files at least this big are read into the local executor while the models are set up (smaller ones take
/// only milliseconds to read, and could also be routed to a direct call, which reads the file its own way).
#[cfg(feature = "local")]
const READ_AHEAD_MIN_BYTES: u64 = 64 << 20;

/// Starts what the local executor will need while the model clients are built: the interpreter, and the text of a big
/// context file. Errors are left to the session, which reports them as without this.
fn prepare_local_executor(executor: &ExecutorArgs, context: &std::path::Path, route: crate::args::RouteArg) {
    #[cfg(feature = "local")]
    if executor.executor == ExecutorKind::Local {
        // The same files `rlm::context_from_path` hands to the executor as `Context::TextFile`.
        let text_file = context.as_os_str() != "-"
            && !context.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("json"))
            && std::fs::metadata(context).is_ok_and(|m| m.is_file() && m.len() >= READ_AHEAD_MIN_BYTES);
        if text_file && route != crate::args::RouteArg::Direct {
            rlm::LocalExecutor::read_ahead(context);
        } else {
            rlm::LocalExecutor::initialize_in_background();
        }
    }
    #[cfg(not(feature = "local"))]
    let _ = (executor, context, route);
}

async fn run(args: RunArgs) -> Result<ExitCode> {
    prepare_local_executor(&args.executor, &args.context, args.models.route);
    let trace = trace_target(args.trace.as_deref(), args.no_trace);
    let prices = args.prices.as_deref();
    let rlm = build_rlm(&args.models, args.timeout, trace, args.executor.build()?, true, true, prices).await?;
    let context = rlm::context_from_path(&args.context)?;

    let cancel = CancellationToken::new();
    let on_ctrl_c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c.cancel();
        }
    });

    let interactive = std::io::stderr().is_terminal() && !args.quiet;
    let observer: Option<Arc<dyn TraceSink>> = interactive.then(|| Arc::new(progress::Progress::new()) as _);
    #[cfg(feature = "postgres")]
    let db_sink = trace_cmd::start_sink(&args.trace_db, prices)?;
    #[cfg(feature = "postgres")]
    let observer = trace_cmd::with_sink(observer, &db_sink);
    let outcome = rlm.completion_with(context, &args.query, cancel, observer).await;
    #[cfg(feature = "postgres")]
    trace_cmd::finish_sink(db_sink);
    let (completion, failure) = match outcome {
        Ok(completion) => (completion, None),
        Err(RlmError::Failed { message, completion }) => (*completion, Some(message)),
        Err(err) => return Err(err.into()),
    };

    if args.json {
        println!("{}", serde_json::to_string(&completion)?);
    } else if failure.is_none() {
        println!("{}", completion.answer);
    }
    if !args.quiet {
        let trace = completion.trace.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "none".into());
        let finished_by = match completion.limit {
            Some(limit) => format!("{} ({})", completion.finished_by.as_str(), limit.describe()),
            None => completion.finished_by.as_str().to_owned(),
        };
        let cost = completion.cost_usd.map_or_else(|| "cost unknown".to_owned(), |usd| format!("${usd:.4}"));
        eprintln!(
            "{} path; finished by {finished_by} after {} iterations, {} sub-calls, {} tokens, {cost}, {:.1} s; trace: \
             {trace}",
            completion.path.as_str(),
            completion.iterations,
            completion.sub_calls,
            completion.usage.total.total_tokens(),
            completion.duration_secs,
        );
    }
    Ok(match (completion.finished_by, failure) {
        (FinishedBy::Cancelled, _) => {
            eprintln!("cancelled");
            ExitCode::from(130)
        }
        (_, Some(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    })
}

async fn exec(args: ExecArgs) -> Result<ExitCode> {
    if let Some(context) = &args.context {
        // No routing here: the file always goes to the session.
        prepare_local_executor(&args.executor, context, crate::args::RouteArg::Rlm);
    }
    let code = if args.file.as_os_str() == "-" {
        let mut code = String::new();
        std::io::stdin().read_to_string(&mut code).context("cannot read code from standard input")?;
        code
    } else {
        std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?
    };
    let context = match &args.context {
        Some(path) if path.as_os_str() == "-" && args.file.as_os_str() == "-" => {
            bail!("the code and the context cannot both come from standard input")
        }
        Some(path) => rlm::context_from_path(path)?,
        None => Context::Text(String::new()),
    };
    let timeout = args::seconds(args.timeout, "timeout")?;
    // Sub-calls reach the model when one is configured; without one they return an error string to the code.
    let executor = args.executor.build()?;
    let outcome = if args.models.model.is_some() {
        build_rlm(&args.models, None, TraceTarget::Disabled, executor, false, false, None)
            .await?
            .exec(context, &code, timeout)
            .await?
    } else {
        rlm::exec_with(&executor, context, &code, timeout, Arc::new(rlm::NoModelHost)).await?
    };
    // The short traceback already ends with the "Kind: message" line.
    let error = outcome.error.as_ref().map(|error| {
        if error.traceback.is_empty() { error.to_string() } else { error.traceback.trim_end().to_owned() }
    });
    let report = serde_json::json!({
        "stdout": outcome.stdout,
        "stderr": outcome.stderr,
        "error": error,
        "answer": outcome.answer,
        "final_var": outcome.final_var,
        "dropped_chars": outcome.dropped_chars,
        "duration_ms": outcome.duration.as_secs_f64() * 1000.0,
    });
    println!("{report}");
    Ok(if outcome.error.is_some() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
