use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand};
use rlm::Limits;
#[cfg(feature = "wasm")]
pub use rlm_sandbox_cli::WasmArgs;
pub use rlm_sandbox_cli::seconds;

#[derive(Debug, Parser)]
#[command(
    name = "rlm",
    version,
    about = "Recursive Language Models: answer queries over contexts far larger than a model's window"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Answer a query over a context.
    Run(RunArgs),
    /// A conversation: query after query in one REPL, `/context FILE` to add a context, `--session FILE` to resume
    /// after a restart. On a pipe: one query per line in, one answer per line out.
    Chat(crate::chat::ChatArgs),
    /// Run one Python snippet in a fresh REPL and print {"stdout", "stderr", "error", "duration_ms"} as JSON.
    Exec(ExecArgs),
    /// Serve RLMs over HTTP: the RLM API, an OpenAI-compatible front, streaming run events (see docs/api.md).
    #[cfg(feature = "server")]
    Serve(crate::serve::ServeArgs),
    /// Browse trajectories in a local web page: runs as trees, a timeline, live updates of growing traces.
    #[cfg(feature = "viewer")]
    View(crate::view::ViewArgs),
    /// The trajectory database: `rlm trace import FILE.jsonl... --db URL`.
    #[cfg(feature = "postgres")]
    Trace(crate::trace_cmd::TraceArgs),
    /// Latency percentiles, tokens and cost per model, and the slowest runs, from the trajectory database.
    #[cfg(feature = "postgres")]
    Stats(crate::trace_cmd::StatsArgs),
    /// The sandbox service for untrusted code: `rlm sandbox serve`, `rlm sandbox prepare`.
    #[cfg(feature = "wasm")]
    Sandbox(rlm_sandbox_cli::SandboxArgs),
    /// Benchmarks against the configured model endpoint: `rlm bench --family aggregate,multikey,...` (task families;
    /// `rlm bench sniah` is `--family sniah`).
    Bench(Box<crate::bench::BenchArgs>),
    /// Local models: `rlm model pull [NAME]` downloads one (checked against its pinned sha256), `rlm model list`.
    Model(crate::model_cmd::ModelArgs),
    /// GET a URL; exit 0 on a 2xx status, 1 otherwise (container health checks in images without curl).
    Health(rlm_sandbox_cli::HealthArgs),
}

/// Where model-written code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorKind {
    /// CPython embedded in this process: fastest, full Python, for trusted use only.
    Local,
    /// CPython compiled to WebAssembly, sandboxed in this process: no files, network or environment.
    Wasm,
    /// A sandbox service (`rlm sandbox serve`) at --sandbox-url.
    Remote,
}

#[derive(Debug, Clone, Args)]
pub struct ExecutorArgs {
    /// Where model-written code runs.
    #[arg(long, value_enum, env = "RLM_EXECUTOR", default_value_t = ExecutorKind::Local)]
    pub executor: ExecutorKind,
    /// The sandbox service for --executor remote (its token comes from $RLM_SANDBOX_TOKEN).
    #[arg(long, env = "RLM_SANDBOX_URL")]
    pub sandbox_url: Option<String>,
    #[cfg(feature = "wasm")]
    #[command(flatten)]
    pub wasm: WasmArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The context: a text file, a .json file (parsed), a directory (a dict of its text files), or - for stdin.
    #[arg(long, short = 'c')]
    pub context: PathBuf,
    /// The question to answer.
    #[arg(long, short = 'q')]
    pub query: String,
    /// Wall-clock seconds for the whole run (sub-calls and child RLMs included); the last tenth, at most 60 s, is kept
    /// for asking the model for its best answer.
    #[arg(long)]
    pub timeout: Option<f64>,
    #[command(flatten)]
    pub models: ModelArgs,
    #[command(flatten)]
    pub executor: ExecutorArgs,
    /// Write the JSONL trajectory to this file (default: a new file in $RLM_TRACE_DIR or ./rlm-traces).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Write no trajectory.
    #[arg(long, conflicts_with = "trace")]
    pub no_trace: bool,
    /// Print one JSON object with the answer, counts, usage and trace path.
    #[arg(long)]
    pub json: bool,
    /// No progress or summary on stderr.
    #[arg(long)]
    pub quiet: bool,
    #[cfg(feature = "postgres")]
    #[command(flatten)]
    pub trace_db: crate::trace_cmd::TraceDbArgs,
    /// JSON price table (USD per 1K tokens per model) overriding the built-in prices, for the results' `cost_usd`,
    /// `--max-cost` and the trace store.
    #[arg(long, env = "RLM_PRICES", value_name = "FILE")]
    pub prices: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Python file to run, or - for stdin.
    pub file: PathBuf,
    /// Context to load as `context` (same forms as for `run`).
    #[arg(long, short = 'c')]
    pub context: Option<PathBuf>,
    /// Seconds the snippet may run.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
    #[command(flatten)]
    pub models: ModelArgs,
    #[command(flatten)]
    pub executor: ExecutorArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Root model.
    #[arg(long, short = 'm', env = "RLM_MODEL")]
    pub model: Option<String>,
    /// Model for llm_query and child RLMs (default: the root model).
    #[arg(long, env = "RLM_SUB_MODEL")]
    pub sub_model: Option<String>,
    /// Root-loop model per depth, in order from depth 0 (repeat the flag).
    #[arg(long)]
    pub depth_model: Vec<String>,
    /// OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (default: $OPENAI_BASE_URL, then OpenAI).
    #[arg(long)]
    pub base_url: Option<String>,
    /// API key (default: $OPENAI_API_KEY). Prefer the environment: flags show up in process lists.
    #[arg(long, hide_env_values = true)]
    pub api_key: Option<String>,
    /// Instructions for the root model: auto picks `small` for models of up to about 8B parameters by name.
    #[arg(long, value_enum, env = "RLM_PROMPT_PROFILE", default_value_t = ProfileArg::Auto)]
    pub prompt_profile: ProfileArg,
    /// A file whose text replaces the system prompt; {context_description}, {max_iterations}, {max_output_chars},
    /// {sub_model} and {sub_prompt_chars} in it are filled in.
    #[arg(long)]
    pub system_prompt: Option<PathBuf>,
    /// Answer with one direct call when the context fits the root model's window (auto), or force either path.
    #[arg(long, value_enum, env = "RLM_ROUTE", default_value_t = RouteArg::Auto)]
    pub route: RouteArg,
    /// The root model's window in tokens (default: what the server reports, else the model family's known window).
    #[arg(long, env = "RLM_CONTEXT_WINDOW")]
    pub context_window: Option<u64>,
    /// The sub-model's window in tokens (default as for --context-window).
    #[arg(long)]
    pub sub_context_window: Option<u64>,
    /// The longest direct prompt in tokens that automatic routing sends, even when the context fits the window
    /// (default: up to the window; 8192 for local: models, which read prompts at CPU speed).
    #[arg(long, env = "RLM_DIRECT_MAX_TOKENS")]
    pub direct_max_tokens: Option<u64>,
    /// Seconds one model request may take before it is retried (raise it for large prompts on CPU-served models).
    #[arg(long, env = "RLM_REQUEST_TIMEOUT", default_value_t = 300.0)]
    pub request_timeout: f64,
    /// Sampling temperature of every model call, from 0 (always the likeliest token) to 2 (default: the provider's
    /// own; the in-process local model then decodes greedily, llama.cpp's and OpenAI's servers sample).
    #[arg(long, env = "RLM_TEMPERATURE", value_parser = parse_temperature)]
    pub temperature: Option<f32>,
    /// The request field for the output-token limit (auto: max_completion_tokens for OpenAI, max_tokens elsewhere).
    #[arg(long, value_enum, default_value_t = TokenFieldArg::Auto)]
    pub token_limit_field: TokenFieldArg,
    /// Answer repeated model requests from a content-addressed cache in this directory (requests at a temperature
    /// above 0 only with --cache-force).
    #[arg(long, env = "RLM_CACHE_DIR", value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Cache requests at any temperature.
    #[arg(long, requires = "cache")]
    pub cache_force: bool,
    /// Write every model exchange to this JSONL file.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Answer every model call from a recording made with --record, without any network.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["record", "cache"])]
    pub replay: Option<PathBuf>,
    #[command(flatten)]
    pub limits: LimitArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProfileArg {
    Auto,
    Standard,
    Small,
}

impl From<ProfileArg> for rlm::PromptProfile {
    fn from(value: ProfileArg) -> Self {
        match value {
            ProfileArg::Auto => Self::Auto,
            ProfileArg::Standard => Self::Standard,
            ProfileArg::Small => Self::Small,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RouteArg {
    Auto,
    Rlm,
    Direct,
}

impl From<RouteArg> for rlm::RouteMode {
    fn from(value: RouteArg) -> Self {
        match value {
            RouteArg::Auto => Self::Auto,
            RouteArg::Rlm => Self::Rlm,
            RouteArg::Direct => Self::Direct,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TokenFieldArg {
    Auto,
    MaxTokens,
    MaxCompletionTokens,
}

impl From<TokenFieldArg> for rlm::TokenLimitField {
    fn from(value: TokenFieldArg) -> Self {
        match value {
            TokenFieldArg::Auto => Self::Auto,
            TokenFieldArg::MaxTokens => Self::MaxTokens,
            TokenFieldArg::MaxCompletionTokens => Self::MaxCompletionTokens,
        }
    }
}

/// Budgets of a run tree, shared by `rlm run`, `rlm exec` and `rlm serve` (whose values are the defaults of its
/// runs). The seed's variables `MAX_DEPTH`, `MAX_ITERATIONS` and `EXECUTION_TIMEOUT` set them too.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Deepest level of child RLMs (rlm_query); the top-level run is depth 0.
    #[arg(long, env = "MAX_DEPTH", default_value_t = 1)]
    pub max_depth: u32,
    /// Root-loop iterations per run.
    #[arg(long, env = "MAX_ITERATIONS", default_value_t = 30)]
    pub max_iterations: u32,
    /// Sub-calls for the whole run tree.
    #[arg(long)]
    pub max_sub_calls: Option<u64>,
    /// Prompt + completion tokens for the whole run tree.
    #[arg(long)]
    pub max_tokens: Option<u64>,
    /// US dollars for the whole run tree, children included (prices: built in, or --prices / RLM_PRICES).
    #[arg(long, value_name = "USD")]
    pub max_cost: Option<f64>,
    /// Seconds one code cell may run.
    #[arg(long, env = "EXECUTION_TIMEOUT", default_value_t = 120.0)]
    pub cell_timeout: f64,
    /// Characters of a cell's output the model sees.
    #[arg(long, default_value_t = 20_000)]
    pub max_output_chars: usize,
    /// Prompts of one batched call in flight at once.
    #[arg(long, default_value_t = 16)]
    pub batch_concurrency: usize,
    /// Upper bound on tokens per model response.
    #[arg(long)]
    pub max_output_tokens: Option<u32>,
}

impl LimitArgs {
    /// The limits, with `run_timeout` seconds for the whole run tree.
    pub fn limits(&self, run_timeout: Option<f64>) -> Result<Limits> {
        if self.max_iterations == 0 {
            bail!("--max-iterations must be at least 1");
        }
        if self.batch_concurrency == 0 {
            bail!("--batch-concurrency must be at least 1");
        }
        if let Some(usd) = self.max_cost.filter(|usd| !usd.is_finite() || *usd <= 0.0) {
            bail!("--max-cost must be a positive number of US dollars, got {usd}");
        }
        Ok(Limits {
            max_iterations: self.max_iterations,
            max_depth: self.max_depth,
            timeout: run_timeout.map(|s| seconds(s, "timeout")).transpose()?,
            max_sub_calls: self.max_sub_calls,
            max_tokens: self.max_tokens,
            max_cost: self.max_cost,
            cell_timeout: seconds(self.cell_timeout, "cell-timeout")?,
            max_output_chars: self.max_output_chars,
            batch_concurrency: self.batch_concurrency,
            max_output_tokens: self.max_output_tokens,
        })
    }
}

fn parse_temperature(text: &str) -> std::result::Result<f32, String> {
    let value: f32 = text.trim().parse().map_err(|_| format!("not a number: {text:?}"))?;
    if !(0.0..=2.0).contains(&value) {
        return Err(format!("must be from 0 to 2, got {value}"));
    }
    Ok(value)
}
