//! `rlm serve`: the inference service (see `rlm-inference-service` and docs/api.md).

use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use rlm::protocol::Secret;
use rlm::{OpenAiConfig, TraceTarget};
use rlm_executor_remote::RemoteConfig;
use rlm_inference_service::{AppState, ExecutorChoice, ServerConfig};

use crate::args::{LimitArgs, seconds};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Default root model (`rlm` in the OpenAI-compatible API, /infer without "model"); default: $RLM_MODEL, then
    /// $LLM_MODEL.
    #[arg(long, short = 'm', env = "RLM_MODEL")]
    pub model: Option<String>,
    /// Model for llm_query and child RLMs (default: $LLM_RECURSIVE_MODEL, then the root model; its endpoint:
    /// $LLM_RECURSIVE_BASE_URL, else the root's).
    #[arg(long, env = "RLM_SUB_MODEL")]
    pub sub_model: Option<String>,
    /// OpenAI-compatible endpoint (default: $OPENAI_BASE_URL, then $LLM_BASE_URL, then OpenAI). The key comes
    /// from $OPENAI_API_KEY or $LLM_API_KEY only.
    #[arg(long)]
    pub base_url: Option<String>,
    /// Default wall-clock seconds for a whole run.
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Default limits of runs (requests may override each one).
    #[command(flatten)]
    pub limits: LimitArgs,
    /// URL of the sandbox service (`rlm sandbox serve`) to run code in; its token comes from $RLM_SANDBOX_TOKEN.
    /// When set, /ready checks the sandbox and runs are refused while it is unreachable (code never silently runs
    /// unsandboxed). Default: run code in this process.
    #[arg(long, env = "WASM_SERVICE_URL")]
    pub wasm_service_url: Option<String>,
    /// Runs executing at once; more get 429.
    #[arg(long, env = "RLM_MAX_CONCURRENT_RUNS", default_value_t = 8)]
    pub max_concurrent_runs: usize,
    /// Largest request body in bytes; larger ones get 413.
    #[arg(long, env = "RLM_MAX_BODY_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Finished runs kept in memory for GET /v1/runs/{id}.
    #[arg(long, default_value_t = 100)]
    pub max_stored_runs: usize,
    /// Write each run's JSONL trajectory into this directory (default: none).
    #[arg(long, env = "RLM_TRACE_DIR")]
    pub trace_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub trace_db: crate::trace_cmd::TraceDbArgs,
    /// JSON price table (USD per 1K tokens per model) overriding the built-in prices, for the results' `cost_usd`,
    /// `--max-cost` and the trace store.
    #[arg(long, env = "RLM_PRICES", value_name = "FILE")]
    pub prices: Option<std::path::PathBuf>,
    /// Seconds a conversation (/v1/conversations) may stay idle before it is closed.
    #[arg(long, default_value_t = 1800.0)]
    pub conversation_ttl: f64,
    /// Tokens one conversation may use over all its queries (default: no limit).
    #[arg(long)]
    pub conversation_max_tokens: Option<u64>,
    /// Conversations open at once.
    #[arg(long, default_value_t = 100)]
    pub max_conversations: usize,
    /// Seconds a shutdown (SIGTERM, Ctrl-C) waits for running runs before cancelling them.
    #[arg(long, default_value_t = 30.0)]
    pub shutdown_grace: f64,
    /// Answer with one direct call when the context fits the model's window (auto), or force either path.
    #[arg(long, value_enum, env = "RLM_ROUTE", default_value_t = crate::args::RouteArg::Auto)]
    pub route: crate::args::RouteArg,
    /// Instructions for the root model: auto picks `small` for models of up to about 8B parameters by name.
    #[arg(long, value_enum, env = "RLM_PROMPT_PROFILE", default_value_t = crate::args::ProfileArg::Auto)]
    pub prompt_profile: crate::args::ProfileArg,
    /// The default model's window in tokens (default: the model family's known window).
    #[arg(long, env = "RLM_CONTEXT_WINDOW")]
    pub context_window: Option<u64>,
    /// The sub-model's window in tokens.
    #[arg(long)]
    pub sub_context_window: Option<u64>,
    /// The longest direct prompt in tokens that automatic routing sends to the default model, even when the context
    /// fits its window (default: up to the window; 8192 with --local, whose model reads prompts at CPU speed).
    #[arg(long, env = "RLM_DIRECT_MAX_TOKENS")]
    pub direct_max_tokens: Option<u64>,
    /// Answer every request with a local model running in this process instead of an endpoint: a known name
    /// (default qwen2.5-coder-1.5b; fetch it first with `rlm model pull`) or a path to a GGUF file.
    #[arg(long, num_args = 0..=1, default_missing_value = rlm::local::DEFAULT_LOCAL_MODEL, value_name = "NAME|PATH")]
    pub local: Option<String>,
    /// CPU threads of the --local model (default: the cores not busy with other work).
    #[arg(long, env = "RLM_LOCAL_THREADS")]
    pub local_threads: Option<u32>,
    /// Whether the --local model guesses its next tokens from the tokens before them and checks the guesses in one
    /// decode (prompt lookup). Replies are the same either way; off by default, as it has not been measured faster
    /// on a CPU.
    #[arg(long, env = "RLM_LOCAL_LOOKUP", default_value_t = false, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new(), value_name = "on|off")]
    pub local_lookup: bool,
    /// Bearer token every request except /health and /ready must carry. Prefer the environment.
    #[arg(long, env = "RLM_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

impl ServeArgs {
    fn config(self) -> Result<ServerConfig> {
        if self.max_concurrent_runs == 0 {
            bail!("--max-concurrent-runs must be at least 1");
        }
        let mut openai = OpenAiConfig::from_env();
        if let Some(url) = non_empty(self.base_url) {
            openai.base_url = url;
        }
        let limits = self.limits.limits(self.timeout)?;
        let executor = match non_empty(self.wasm_service_url) {
            Some(url) => ExecutorChoice::Remote(RemoteConfig {
                token: non_empty(std::env::var("RLM_SANDBOX_TOKEN").ok()).map(Secret::new),
                ..RemoteConfig::new(url)
            }),
            None => ExecutorChoice::Local,
        };
        Ok(ServerConfig {
            openai,
            default_model: non_empty(self.model).or_else(|| non_empty(std::env::var("LLM_MODEL").ok())),
            sub_model: non_empty(self.sub_model),
            limits,
            executor,
            max_concurrent_runs: self.max_concurrent_runs,
            max_body_bytes: self.max_body_bytes,
            max_stored_runs: self.max_stored_runs.max(1),
            api_token: non_empty(self.api_token).map(Secret::new),
            trace: self.trace_dir.map_or(TraceTarget::Disabled, TraceTarget::Directory),
            trace_db: crate::trace_cmd::sink_config(&self.trace_db, self.prices.as_deref())?,
            shutdown_grace: seconds(self.shutdown_grace, "shutdown-grace")?,
            route: self.route.into(),
            prompt_profile: self.prompt_profile.into(),
            context_window: self.context_window,
            sub_context_window: self.sub_context_window,
            direct_max_tokens: self.direct_max_tokens,
            providers: rlm::ProviderSettings::from_env(),
            prices: Some(rlm::Prices::load(self.prices.as_deref())?),
            conversation_idle_ttl: seconds(self.conversation_ttl, "conversation-ttl")?,
            conversation_max_tokens: self.conversation_max_tokens,
            max_conversations: self.max_conversations.max(1),
            ..ServerConfig::default()
        }
        .with_seed_env(|name| std::env::var(name).ok()))
    }
}

pub async fn serve(args: ServeArgs) -> Result<ExitCode> {
    let address = (args.host.clone(), args.port);
    let local = args.local.clone();
    let local_settings = LocalSettings { threads: args.local_threads, lookup: args.local_lookup };
    let mut config = args.config()?;
    let local_client = match local {
        Some(name) => {
            let (client, spec, window) = load_local(&name, local_settings).await?;
            eprintln!("rlm serve: {spec} runs in this process on the CPU; every request is answered by it");
            answer_with_local_model(&mut config, spec, window);
            Some(client)
        }
        None => None,
    };
    let executor = match &config.executor {
        ExecutorChoice::Local => "local".to_owned(),
        ExecutorChoice::Remote(remote) => format!("remote sandbox at {}", remote.base_url),
    };
    let summary = format!(
        "default model: {}, executor: {executor}, max concurrent runs: {}, auth: {}",
        config.default_model.as_deref().unwrap_or("none (use rlm:<model>)"),
        config.max_concurrent_runs,
        if config.api_token.is_some() { "bearer token" } else { "none" },
    );
    let state = match local_client {
        Some(client) => AppState::with_model_client(config, client),
        None => AppState::new(config),
    }
    .context("cannot start the server")?;
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .with_context(|| format!("cannot listen on {}:{}", address.0, address.1))?;
    let local = listener.local_addr().context("cannot read the listening address")?;
    eprintln!("rlm serve: listening on http://{local} — {summary}");
    rlm_inference_service::serve(listener, state, crate::shutdown_signal()).await.context("server error")?;
    eprintln!("rlm serve: stopped");
    Ok(ExitCode::SUCCESS)
}

/// Makes the loaded local model (`spec`, with a window of `window` tokens) the model of every run, with the limits
/// `rlm run` gives `local:` models.
fn answer_with_local_model(config: &mut ServerConfig, spec: String, window: u64) {
    config.default_model = Some(spec);
    config.sub_model = None;
    config.context_window.get_or_insert(window);
    config.sub_context_window.get_or_insert(window);
    config.direct_max_tokens.get_or_insert(rlm::LOCAL_DIRECT_MAX_TOKENS);
}

/// How to run the --local model.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "local-llm"), allow(dead_code, reason = "read only when local models are built in"))]
struct LocalSettings {
    threads: Option<u32>,
    lookup: bool,
}

/// Loads the local model `name` (a known name or a GGUF path): the client, its spec and its window.
#[cfg(feature = "local-llm")]
async fn load_local(
    name: &str,
    settings: LocalSettings,
) -> Result<(std::sync::Arc<dyn rlm::ModelClient>, String, u64)> {
    let spec = if rlm::local::is_local_spec(name) { name.to_owned() } else { format!("local:{name}") };
    let file = rlm::local::resolve_local(&spec, &rlm::local::model_cache_dir())?;
    let mut config = rlm_models_llama::LlamaConfig::new(&file.path);
    config.name = file.spec.clone();
    config.expected_sha256 = file.expected_sha256;
    config.threads = settings.threads;
    config.lookup = settings.lookup;
    config.prompt_cache_dir = rlm::local::prompt_cache_dir(&rlm::local::model_cache_dir());
    let client = tokio::task::spawn_blocking(move || rlm_models_llama::LlamaClient::load(config))
        .await
        .context("loading the local model")??;
    let window = client.context_window();
    Ok((std::sync::Arc::new(client), file.spec, window))
}

#[cfg(not(feature = "local-llm"))]
async fn load_local(
    name: &str,
    _settings: LocalSettings,
) -> Result<(std::sync::Arc<dyn rlm::ModelClient>, String, u64)> {
    bail!("--local {name}: this build of rlm has no local models (rebuild with the `local-llm` feature)")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};

    fn parse(args: &[&str]) -> ServeArgs {
        let cli = Cli::try_parse_from(["rlm", "serve"].iter().chain(args)).unwrap();
        match cli.command {
            Command::Serve(args) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn flags_become_the_server_configuration() {
        let config = parse(&[
            "--port",
            "0",
            "--model",
            "big",
            "--sub-model",
            "small",
            "--max-depth",
            "2",
            "--max-iterations",
            "7",
            "--cell-timeout",
            "5",
            "--max-concurrent-runs",
            "3",
            "--max-body-bytes",
            "1000",
            "--wasm-service-url",
            "http://sandbox:8000",
            "--api-token",
            "tok",
        ])
        .config()
        .unwrap();
        assert_eq!(config.default_model.as_deref(), Some("big"));
        assert_eq!(config.sub_model.as_deref(), Some("small"));
        assert_eq!(config.limits.max_depth, 2);
        assert_eq!(config.limits.max_iterations, 7);
        assert_eq!(config.limits.cell_timeout, std::time::Duration::from_secs(5));
        assert_eq!(config.max_concurrent_runs, 3);
        assert_eq!(config.max_body_bytes, 1000);
        assert!(matches!(&config.executor, ExecutorChoice::Remote(remote) if remote.base_url == "http://sandbox:8000"));
        assert_eq!(config.api_token.as_ref().map(Secret::expose).map(String::as_str), Some("tok"));
    }

    #[test]
    fn local_takes_a_name_or_the_default() {
        assert_eq!(parse(&["--local"]).local.as_deref(), Some(rlm::local::DEFAULT_LOCAL_MODEL));
        assert_eq!(parse(&["--local", "qwen2.5-coder-0.5b"]).local.as_deref(), Some("qwen2.5-coder-0.5b"));
        assert_eq!(parse(&[]).local, None);
    }

    #[test]
    fn a_local_model_answers_everything_with_the_direct_prompt_cap_of_rlm_run() {
        let mut config = parse(&["--model", "big", "--sub-model", "small"]).config().unwrap();
        assert_eq!(config.direct_max_tokens, None);
        answer_with_local_model(&mut config, "local:qwen2.5-coder-1.5b".to_owned(), 32768);
        assert_eq!(config.default_model.as_deref(), Some("local:qwen2.5-coder-1.5b"));
        assert_eq!(config.sub_model, None);
        assert_eq!((config.context_window, config.sub_context_window), (Some(32768), Some(32768)));
        assert_eq!(config.direct_max_tokens, Some(rlm::LOCAL_DIRECT_MAX_TOKENS));

        // A cap or window given on the command line wins.
        let mut chosen = parse(&["--direct-max-tokens", "100", "--context-window", "4096"]).config().unwrap();
        answer_with_local_model(&mut chosen, "local:m".to_owned(), 32768);
        assert_eq!((chosen.direct_max_tokens, chosen.context_window), (Some(100), Some(4096)));
    }

    #[test]
    fn local_threads_and_lookup_are_flags() {
        let defaults = parse(&["--local"]);
        assert!(!defaults.local_lookup);
        assert_eq!(defaults.local_threads, None);
        let set = parse(&["--local", "--local-lookup", "on", "--local-threads", "1"]);
        assert!(set.local_lookup);
        assert_eq!(set.local_threads, Some(1));
        assert!(Cli::try_parse_from(["rlm", "serve", "--local-lookup", "perhaps"]).is_err());
    }

    #[test]
    fn nonsense_limits_are_refused() {
        assert!(parse(&["--max-iterations", "0"]).config().is_err());
        assert!(parse(&["--max-concurrent-runs", "0"]).config().is_err());
        assert!(parse(&["--cell-timeout=-1"]).config().is_err());
    }
}
