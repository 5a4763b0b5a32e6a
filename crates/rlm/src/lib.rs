//! Recursive Language Models in Rust.
//!
//! An RLM answers a query over a context far larger than a model's window: the root model never sees the context;
//! it drives a Python REPL in which `context` is a variable, calls sub-models from code, and finishes with
//! `FINAL(answer)`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rlm::RlmError> {
//! // The endpoint and key from OPENAI_BASE_URL / OPENAI_API_KEY; `Rlm::builder()` reads no environment.
//! let rlm = rlm::RlmBuilder::from_env().model("gpt-4o").sub_model("gpt-4o-mini").max_depth(1).build()?;
//! let completion = rlm.completion("...a very long text...", "Which city is mentioned most?").await?;
//! println!("{} ({} iterations, trace in {:?})", completion.answer, completion.iterations, completion.trace);
//! # Ok(()) }
//! ```
//!
//! This mirrors the Python original's `RLM_REPL(...).completion(context, query)`.

#![warn(missing_docs)]

mod clients;
mod direct;
mod env;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use direct::{DirectHost, NoModelHost};
pub use rlm_engine::{
    CompactionSettings, Engine, EngineConfig, JournalEntry, Limits, ModelPlan, ParsedResponse, PromptProfile,
    PromptSettings, RouteMode, RunOptions, RunResult, SAVED_SESSION_VERSION, SavedContext, SavedSession, SessionTurn,
    parse_response,
};
#[cfg(feature = "local")]
pub use rlm_executor_local::LocalExecutor;
pub use rlm_models::layers::CacheMode;
pub use rlm_models::local;
pub use rlm_models::{
    AnthropicConfig, GeminiConfig, HttpConfig, ModelPrice, OpenAiClient, OpenAiConfig, Prices, ProviderSettings,
    Providers, TokenLimitField, known_context_window,
};
pub use rlm_protocol::{
    self as protocol, CellOutcome, ChatMessage, Context, ContextInfo, EventBody, Executor, FinishedBy, LimitKind,
    ModelClient, RouteDecision, RoutePath, SessionSpec, TraceEvent, TraceSink, Usage, UsageReport,
};
pub use rlm_trace::{FanoutSink, JsonlSink, MemorySink, NullSink};
use serde::Serialize;
pub use tokio_util::sync::CancellationToken;

/// Errors of the library API.
#[derive(Debug, thiserror::Error)]
pub enum RlmError {
    /// Settings that cannot work.
    #[error("configuration: {0}")]
    Config(String),
    /// No root model was named.
    #[error("no model set: name the root model")]
    NoModel,
    /// The model is OpenAI's own endpoint, and no API key was given.
    #[error(
        "no API key for OpenAI: give one, or the base URL of an OpenAI-compatible server such as llama.cpp, vLLM or \
         Ollama"
    )]
    NoApiKey,
    /// The model provider could not be set up.
    #[error(transparent)]
    Models(#[from] rlm_models::ModelsError),
    /// The trajectory could not be written.
    #[error(transparent)]
    Trace(#[from] rlm_trace::TraceError),
    /// An executor or model failure outside a run.
    #[error("{0}")]
    Protocol(#[from] rlm_protocol::Error),
    /// The run ended without an answer (cancelled, or the model or REPL failed). The result and trace are kept.
    #[error("run {} ended by {}: {}", .completion.run_id, .completion.finished_by.as_str(), .message)]
    Failed {
        /// Why it ended.
        message: String,
        /// What the run did, with its trace.
        completion: Box<Completion>,
    },
}

/// The result of [`Rlm::completion`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Completion {
    /// The answer (empty when the run ended without one).
    pub answer: String,
    /// How the run ended.
    pub finished_by: FinishedBy,
    /// Which limit ran out, when `finished_by` is `limit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<LimitKind>,
    /// Root-loop iterations of the top-level run.
    pub iterations: u32,
    /// Sub-calls made anywhere in the tree.
    pub sub_calls: u64,
    /// Tokens used anywhere in the tree, in total and per model.
    pub usage: UsageReport,
    /// Cost of the whole tree in US dollars (per model in `usage.by_model[..].cost_usd`); `None` when some model
    /// has no price.
    pub cost_usd: Option<f64>,
    /// The JSONL trajectory of the run, when one was written.
    pub trace: Option<PathBuf>,
    /// The id of the top-level run in the trajectory.
    pub run_id: uuid::Uuid,
    /// Wall-clock time of the run.
    pub duration_secs: f64,
    /// Why the run ended without an answer, or why its last answer was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `direct` when routing answered with one call over the whole context, else `rlm`.
    pub path: RoutePath,
}

impl Completion {
    fn from_result(result: RunResult, trace: Option<PathBuf>) -> Self {
        Self {
            answer: result.answer.unwrap_or_default(),
            finished_by: result.finished_by,
            limit: result.limit,
            iterations: result.iterations,
            sub_calls: result.sub_calls,
            // Nothing called costs nothing; otherwise the sum is unknown when any call had no price.
            cost_usd: if result.usage.total.calls == 0 { Some(0.0) } else { result.usage.total.cost_usd },
            usage: result.usage,
            trace,
            run_id: result.run_id,
            duration_secs: result.duration.as_secs_f64(),
            error: result.error,
            path: result.path,
        }
    }
}

/// Where the JSONL trajectories of runs go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceTarget {
    /// A new file per run in this directory (default: `rlm-traces`; [`RlmBuilder::from_env`]: `$RLM_TRACE_DIR`).
    Directory(PathBuf),
    /// Every run appends to this file.
    File(PathBuf),
    /// No JSONL trajectory.
    Disabled,
}

impl TraceTarget {
    /// The directory of [`RlmBuilder`]'s default target.
    pub const DEFAULT_DIRECTORY: &'static str = "rlm-traces";

    fn path_for_new_run(&self) -> Option<PathBuf> {
        match self {
            Self::Directory(dir) => {
                let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
                let suffix = uuid::Uuid::new_v4().simple().to_string();
                Some(dir.join(format!("{stamp}-{}.jsonl", &suffix[..8])))
            }
            Self::File(path) => Some(path.clone()),
            Self::Disabled => None,
        }
    }
}

/// Builds an [`Rlm`]. [`Rlm::builder`] starts from the defaults and reads no environment variable;
/// [`RlmBuilder::from_env`] starts from the variables the `rlm` command and the Python package read.
#[derive(Debug)]
pub struct RlmBuilder {
    config: EngineConfig,
    model_set: bool,
    openai: OpenAiConfig,
    model_client: Option<Arc<dyn ModelClient>>,
    executor: Option<Arc<dyn Executor>>,
    trace: TraceTarget,
    root_window: Option<u64>,
    sub_window: Option<u64>,
    sub_base_url: Option<String>,
    local_model_dir: Option<PathBuf>,
    providers: ProviderSettings,
    layers: clients::LayerSettings,
    local_threads: Option<u32>,
    local_lookup: Option<bool>,
}

impl Default for RlmBuilder {
    fn default() -> Self {
        Self {
            model_set: false,
            config: EngineConfig::new(String::new()),
            openai: OpenAiConfig::default(),
            model_client: None,
            executor: None,
            trace: TraceTarget::Directory(TraceTarget::DEFAULT_DIRECTORY.into()),
            root_window: None,
            sub_window: None,
            sub_base_url: None,
            local_model_dir: None,
            providers: ProviderSettings::default(),
            layers: clients::LayerSettings::default(),
            local_threads: None,
            local_lookup: None,
        }
    }
}

impl RlmBuilder {
    /// Whether a root model was named (by [`RlmBuilder::model`], or by the environment for
    /// [`RlmBuilder::from_env`]).
    pub fn has_model(&self) -> bool {
        self.model_set && !self.config.models.root.trim().is_empty()
    }

    /// Whether an endpoint is configured: an API key, or a base URL other than OpenAI's.
    pub fn has_endpoint(&self) -> bool {
        self.openai.api_key.as_ref().is_some_and(|key| !key.expose().trim().is_empty())
            || self.openai.base_url.trim_end_matches('/') != rlm_models::DEFAULT_BASE_URL
    }

    /// Where `local:NAME` models are looked up (default: [`local::model_cache_dir`]).
    pub fn local_model_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.local_model_dir = Some(dir.into());
        self
    }

    /// CPU threads of a `local:` model (default: every core; benchmarks and shared machines pin them).
    pub fn local_threads(mut self, threads: u32) -> Self {
        self.local_threads = Some(threads);
        self
    }

    /// Whether a `local:` model guesses the next tokens of its replies from the tokens before them and checks the
    /// guesses in one decode (prompt lookup; default: on). Replies are the same either way; off is for measuring.
    pub fn local_lookup(mut self, lookup: bool) -> Self {
        self.local_lookup = Some(lookup);
        self
    }

    /// The root model. `local:NAME` or `local:/path/model.gguf` runs a GGUF model in this process (with the
    /// `local-llm` feature).
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.config.models.root = model.into();
        self.model_set = true;
        self
    }

    /// The default model of `llm_query` and of child RLMs (default: the root model).
    pub fn sub_model(mut self, model: impl Into<String>) -> Self {
        self.config.models.sub = Some(model.into());
        self
    }

    /// The root-loop model per depth (index 0 = top level), overriding `model`/`sub_model` where given.
    pub fn depth_models(mut self, models: Vec<String>) -> Self {
        self.config.models.per_depth = models;
        self
    }

    /// The OpenAI-compatible endpoint, including the version prefix (default: OpenAI's).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.openai.base_url = url.into();
        self
    }

    /// The API key sent to the endpoint.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.openai.api_key = Some(protocol::Secret::new(key.into()));
        self
    }

    /// The endpoint of the sub-model when it is served elsewhere than the root model (the Python original's
    /// `recursive_base_urls` / `LLM_RECURSIVE_BASE_URL`); requests for the sub-model go there, with the same key.
    pub fn sub_base_url(mut self, url: impl Into<String>) -> Self {
        self.sub_base_url = Some(url.into());
        self
    }

    /// All settings of the OpenAI-compatible client (timeouts, retries, token-limit field).
    pub fn openai_config(mut self, config: OpenAiConfig) -> Self {
        self.openai = config;
        self
    }

    /// All budgets of a run tree at once.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// Deepest level of child RLMs (`rlm_query`); the top-level run is depth 0.
    pub fn max_depth(mut self, depth: u32) -> Self {
        self.config.limits.max_depth = depth;
        self
    }

    /// Root-loop iterations per run.
    pub fn max_iterations(mut self, iterations: u32) -> Self {
        self.config.limits.max_iterations = iterations;
        self
    }

    /// Wall-clock limit of the whole run tree.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.limits.timeout = Some(timeout);
        self
    }

    /// Sub-calls allowed in the whole run tree.
    pub fn max_sub_calls(mut self, calls: u64) -> Self {
        self.config.limits.max_sub_calls = Some(calls);
        self
    }

    /// Tokens allowed in the whole run tree.
    pub fn max_tokens(mut self, tokens: u64) -> Self {
        self.config.limits.max_tokens = Some(tokens);
        self
    }

    /// A budget in US dollars for the whole tree, children included (see [`rlm_models::layers::Budget`]).
    pub fn max_cost(mut self, usd: f64) -> Self {
        self.config.limits.max_cost = Some(usd);
        self
    }

    /// Endpoints and keys of Anthropic and Gemini (default: from `ANTHROPIC_*` and `GEMINI_*` variables).
    pub fn provider_settings(mut self, settings: ProviderSettings) -> Self {
        self.providers = settings;
        self
    }

    /// The price table for costs and budgets (default: the built-in prices).
    pub fn prices(mut self, prices: Prices) -> Self {
        self.layers.prices = Some(Arc::new(prices));
        self
    }

    /// Answers repeated requests from a content-addressed cache in `dir` (requests at a temperature above 0 only
    /// with [`CacheMode::Forced`]).
    pub fn cache(mut self, dir: impl Into<PathBuf>, mode: CacheMode) -> Self {
        self.layers.cache = Some((dir.into(), mode));
        self
    }

    /// Writes every model exchange to this JSONL file.
    pub fn record(mut self, path: impl Into<PathBuf>) -> Self {
        self.layers.record = Some(path.into());
        self
    }

    /// Answers every model call from this recording (see [`RlmBuilder::record`]), without any network.
    pub fn replay(mut self, path: impl Into<PathBuf>) -> Self {
        self.layers.replay = Some(path.into());
        self
    }

    /// Wall-clock limit of one cell.
    pub fn cell_timeout(mut self, timeout: Duration) -> Self {
        self.config.limits.cell_timeout = timeout;
        self
    }

    /// Prompts of one batched call sent at once.
    pub fn batch_concurrency(mut self, concurrency: usize) -> Self {
        self.config.limits.batch_concurrency = concurrency;
        self
    }

    /// Sampling temperature of every model call.
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.config.temperature = Some(temperature);
        self
    }

    /// Instructions for the root loop: `Auto` (default) picks `Small` for models of up to about 8B parameters.
    pub fn prompt_profile(mut self, profile: PromptProfile) -> Self {
        self.config.prompt.profile = profile;
        self
    }

    /// A system prompt replacing the profile's, with `{placeholders}` (see [`PromptSettings::system_template`]).
    pub fn system_prompt_template(mut self, template: impl Into<String>) -> Self {
        self.config.prompt.system_template = Some(template.into());
        self
    }

    /// Direct call, RLM, or (default) whichever fits: see [`RouteMode`].
    pub fn route(mut self, mode: RouteMode) -> Self {
        self.config.route = mode;
        self
    }

    /// The root model's window in tokens (default: what the server reports, see
    /// [`RlmBuilder::detect_context_windows`], else the model family's known window).
    pub fn context_window(mut self, tokens: u64) -> Self {
        self.root_window = Some(tokens);
        self
    }

    /// The longest direct prompt, in tokens, routing sends even when the context fits the root model's window (see
    /// [`EngineConfig::direct_max_tokens`]; default: up to the window, or [`LOCAL_DIRECT_MAX_TOKENS`] for a
    /// `local:` model).
    pub fn direct_max_tokens(mut self, tokens: u64) -> Self {
        self.config.direct_max_tokens = Some(tokens);
        self
    }

    /// When the root conversation is summarised to stay inside the root model's window (default: at 85% of it).
    pub fn compaction(mut self, settings: CompactionSettings) -> Self {
        self.config.compaction = settings;
        self
    }

    /// The sub-model's window in tokens (default as for [`RlmBuilder::context_window`]).
    pub fn sub_context_window(mut self, tokens: u64) -> Self {
        self.sub_window = Some(tokens);
        self
    }

    /// How long one model request may take before it counts as failed (and is retried).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.openai.request_timeout = timeout;
        self
    }

    /// Which request field carries the output-token limit (default: chosen from the base URL).
    pub fn token_limit_field(mut self, field: TokenLimitField) -> Self {
        self.openai.max_output_tokens_field = field;
        self
    }

    /// Asks the model server for the windows of the root and sub-model where none was set. Servers that do not
    /// say leave them to the known model families.
    pub async fn detect_context_windows(mut self) -> Self {
        let openai_root = rlm_models::ModelSpec::parse(&self.config.models.root)
            .is_ok_and(|spec| spec.provider == rlm_models::Provider::OpenAi);
        if self.model_client.is_some()
            || self.layers.replay.is_some()
            || (self.root_window.is_some() && self.sub_window.is_some())
            || !openai_root
        {
            return self;
        }
        let Ok(client) = OpenAiClient::new(self.openai.clone()) else { return self };
        // The server knows its models without the `openai:` prefix.
        let served = |spec: &str| rlm_models::split_spec(spec).1.to_owned();
        if self.root_window.is_none() {
            self.root_window = client.probe_context_window(&served(&self.config.models.root)).await;
        }
        if self.sub_window.is_none() {
            self.sub_window = match &self.config.models.sub {
                Some(sub) if *sub != self.config.models.root => client.probe_context_window(&served(sub)).await,
                _ => self.root_window,
            };
        }
        self
    }

    /// Use this model provider instead of the OpenAI-compatible client.
    pub fn model_client(mut self, client: Arc<dyn ModelClient>) -> Self {
        self.model_client = Some(client);
        self
    }

    /// Use this executor instead of the local (in-process CPython) one.
    pub fn executor(mut self, executor: Arc<dyn Executor>) -> Self {
        self.executor = Some(executor);
        self
    }

    /// Where trajectories go (default: a new file per run in `rlm-traces`).
    pub fn trace(mut self, target: TraceTarget) -> Self {
        self.trace = target;
        self
    }

    /// The configured RLM; fails without a model, or without a key for OpenAI's own endpoint.
    pub fn build(mut self) -> Result<Rlm, RlmError> {
        if !self.model_set || self.config.models.root.trim().is_empty() {
            return Err(RlmError::NoModel);
        }
        if self.config.limits.max_iterations == 0 {
            return Err(RlmError::Config("max_iterations must be at least 1".into()));
        }
        let plan = &self.config.models;
        let mut models: Vec<String> = vec![plan.root.clone(), plan.sub_model().to_owned()];
        models.extend(plan.per_depth.iter().cloned());
        let models: Vec<&str> = models.iter().map(String::as_str).collect();
        let replayer = self.layers.replay.is_some();
        let needs_keys = self.model_client.is_none() && !replayer;
        let prices = self.layers.prices();
        clients::check_models(&models, &self.providers, self.config.limits.max_cost, &prices, needs_keys)?;
        let openai_used = clients::uses_openai(&models);
        let local = self.model_client.is_none() && !replayer && local::is_local_spec(&self.config.models.root);
        let model: Arc<dyn ModelClient> = match (self.layers.replayer()?, self.model_client.take()) {
            // A replay answers everything itself: no provider client is built, so nothing can reach the network.
            (Some(replay), _) => replay,
            (None, Some(client)) => self.layers.wrap(client)?,
            (None, None) if local::is_local_spec(&self.config.models.root) => {
                let client = self.local_client()?;
                self.layers.wrap(client)?
            }
            (None, None) => {
                let hosted = self.openai.base_url.trim_end_matches('/') == rlm_models::DEFAULT_BASE_URL;
                if openai_used && hosted && self.openai.api_key.as_ref().is_none_or(|k| k.expose().trim().is_empty()) {
                    return Err(RlmError::NoApiKey);
                }
                let root_client: Arc<dyn ModelClient> = Arc::new(OpenAiClient::new(self.openai.clone())?);
                let same = |url: &String| url.trim_end_matches('/') == self.openai.base_url.trim_end_matches('/');
                let openai: Arc<dyn ModelClient> = match self.sub_base_url.take().filter(|url| !same(url)) {
                    Some(base_url) => Arc::new(RouteByModel {
                        // The router strips `openai:` before this client sees the name.
                        model: rlm_models::split_spec(self.config.models.sub_model()).1.to_owned(),
                        matched: Arc::new(OpenAiClient::new(OpenAiConfig { base_url, ..self.openai.clone() })?),
                        rest: root_client,
                    }),
                    None => root_client,
                };
                self.layers.wrap(Arc::new(Providers::new(openai, self.providers.clone(), None)?))?
            }
        };
        let root = self.config.models.root.clone();
        let sub = self.config.models.sub_model().to_owned();
        let root_window = self.root_window.or_else(|| known_context_window(&root));
        let sub_window = if sub == root { self.sub_window.or(root_window) } else { self.sub_window };
        for model in self.config.models.per_depth.clone() {
            if let Some(window) = known_context_window(&model) {
                self.config.context_windows.insert(model, window);
            }
        }
        if let Some(window) = sub_window.or_else(|| known_context_window(&sub)) {
            self.config.context_windows.insert(sub, window);
        }
        if let Some(window) = root_window {
            self.config.context_windows.insert(root, window);
        }
        let executor: Arc<dyn Executor> = match self.executor {
            Some(executor) => executor,
            #[cfg(feature = "local")]
            None => Arc::new(LocalExecutor::new()),
            #[cfg(not(feature = "local"))]
            None => {
                return Err(RlmError::Config(
                    "no executor given, and this build has no local one (the `local` feature)".into(),
                ));
            }
        };
        let base_url = match rlm_models::split_spec(&self.config.models.root).0 {
            _ if replayer => "replay (no network)".to_owned(),
            // A local model has no endpoint; say where it runs instead of naming OpenAI's default URL.
            _ if local => "in-process".to_owned(),
            rlm_models::Provider::Anthropic => self.providers.anthropic.http.base_url.clone(),
            rlm_models::Provider::Gemini => self.providers.gemini.http.base_url.clone(),
            _ => self.openai.base_url,
        };
        Ok(Rlm {
            engine: Engine::new(model.clone(), executor, self.config),
            model,
            base_url,
            trace: self.trace,
            prices,
        })
    }
}

impl RlmBuilder {
    /// Loads the root `local:` model; its window (from the file) becomes the root window unless one was set.
    #[cfg(feature = "local-llm")]
    fn local_client(&mut self) -> Result<Arc<dyn ModelClient>, RlmError> {
        let root = self.config.models.root.clone();
        let sub = self.config.models.sub_model().to_owned();
        if sub != root || self.config.models.per_depth.iter().any(|model| *model != root) {
            return Err(RlmError::Config(format!(
                "a run with the local model {root} uses it for every call; set no other sub-model or per-depth \
                 model"
            )));
        }
        let dir = self.local_model_dir.clone().unwrap_or_else(local::model_cache_dir);
        let file = local::resolve_local(&root, &dir)?;
        let mut config = rlm_models_llama::LlamaConfig::new(&file.path);
        config.name = file.spec;
        config.expected_sha256 = file.expected_sha256;
        config.n_ctx = self.root_window.and_then(|window| u32::try_from(window).ok());
        config.threads = self.local_threads;
        config.prompt_cache_dir = local::prompt_cache_dir(&dir);
        if let Some(lookup) = self.local_lookup {
            config.lookup = lookup;
        }
        let client = rlm_models_llama::LlamaClient::load(config).map_err(|err| RlmError::Config(err.to_string()))?;
        let window = client.context_window();
        self.root_window.get_or_insert(window);
        self.sub_window.get_or_insert(window);
        self.config.direct_max_tokens.get_or_insert(LOCAL_DIRECT_MAX_TOKENS);
        Ok(Arc::new(client))
    }

    #[cfg(not(feature = "local-llm"))]
    fn local_client(&mut self) -> Result<Arc<dyn ModelClient>, RlmError> {
        Err(RlmError::Config(format!(
            "{} is a local model, but this build of rlm has none: rebuild with the `local-llm` feature",
            self.config.models.root
        )))
    }
}

/// The longest direct prompt routing sends to a `local:` model unless told otherwise. Such a model reads prompts on
/// the CPU: Qwen2.5-Coder-1.5B read about 70 tokens a second on 2 idle cores, so 8,192 tokens take about two
/// minutes, while the RLM answers a needle question over 128k characters in well under one.
pub const LOCAL_DIRECT_MAX_TOKENS: u64 = 8_192;

/// A configured RLM. Cheap to share; runs may go on concurrently.
#[derive(Debug, Clone)]
pub struct Rlm {
    engine: Engine,
    model: Arc<dyn ModelClient>,
    base_url: String,
    trace: TraceTarget,
    prices: Arc<Prices>,
}

impl Rlm {
    /// A builder with the defaults, which reads no environment variable (see [`RlmBuilder::from_env`]).
    pub fn builder() -> RlmBuilder {
        RlmBuilder::default()
    }

    /// The engine that runs the loop.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The model provider in use.
    pub fn model_client(&self) -> &Arc<dyn ModelClient> {
        &self.model
    }

    /// The base URL of the model endpoint (never the key); `in-process` for a local model.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Answers `query` over `context`.
    pub async fn completion(&self, context: impl Into<Context>, query: &str) -> Result<Completion, RlmError> {
        self.completion_with(context.into(), query, CancellationToken::new(), None).await
    }

    /// Like [`Rlm::completion`], with a cancellation token and an extra sink that sees every event live.
    pub async fn completion_with(
        &self,
        context: Context,
        query: &str,
        cancel: CancellationToken,
        observer: Option<Arc<dyn TraceSink>>,
    ) -> Result<Completion, RlmError> {
        let (options, trace_path) = self.run_options(cancel, observer)?;
        let result = self.engine.run(context, query, options).await;
        completion_or_error(result, trace_path)
    }

    /// The options of one run: its trace file (if any), the observer, and its own budget.
    fn run_options(
        &self,
        cancel: CancellationToken,
        observer: Option<Arc<dyn TraceSink>>,
    ) -> Result<(RunOptions, Option<PathBuf>), RlmError> {
        let trace_path = self.trace.path_for_new_run();
        let mut sinks: Vec<Arc<dyn TraceSink>> = Vec::new();
        if let Some(path) = &trace_path {
            sinks.push(Arc::new(JsonlSink::create(path)?));
        }
        sinks.extend(observer);
        // A budget belongs to one run tree, so each run wraps the shared client in its own.
        let budget = self.engine.config().limits.max_cost.map(|max_usd| {
            Arc::new(rlm_models::layers::Budget::new(self.model.clone(), self.prices.clone(), max_usd))
                as Arc<dyn ModelClient>
        });
        Ok((RunOptions { trace: Arc::new(FanoutSink::new(sinks)), cancel, model: budget }, trace_path))
    }

    /// Starts a conversation over `context`: one REPL that answers query after query (see [`RlmSession`]).
    pub async fn session(&self, context: impl Into<Context>) -> Result<RlmSession, RlmError> {
        let session = self.engine.start_session(context.into()).await?;
        Ok(RlmSession { rlm: self.clone(), session })
    }

    /// Restores a conversation saved with [`RlmSession::saved`]: its cells run again with the recorded sub-call
    /// answers, so no model is asked again.
    pub async fn resume_session(&self, saved: SavedSession) -> Result<RlmSession, RlmError> {
        let session = self.engine.resume_session(saved).await?;
        Ok(RlmSession { rlm: self.clone(), session })
    }

    /// Runs one snippet in a fresh REPL of this RLM's executor. Sub-calls go straight to the model.
    pub async fn exec(&self, context: Context, code: &str, cell_timeout: Duration) -> Result<CellOutcome, RlmError> {
        let host = Arc::new(DirectHost::new(self.model.clone(), self.engine.config()));
        exec_with(self.engine.executor(), context, code, cell_timeout, host).await
    }
}

/// A finished run as the caller sees it: an answer, or [`RlmError::Failed`] with the result kept.
fn completion_or_error(result: RunResult, trace_path: Option<PathBuf>) -> Result<Completion, RlmError> {
    let answered = result.answer.is_some();
    let completion = Completion::from_result(result, trace_path);
    match completion.finished_by {
        FinishedBy::Cancelled | FinishedBy::Error => Err(RlmError::Failed {
            message: completion.error.clone().unwrap_or_else(|| "no answer".into()),
            completion: Box::new(completion),
        }),
        // A limit ran out and the model's last answer was refused (a placeholder, or nothing found yet).
        _ if !answered => Err(RlmError::Failed {
            message: completion.error.clone().unwrap_or_else(|| "no answer".into()),
            completion: Box::new(completion),
        }),
        _ => Ok(completion),
    }
}

/// A conversation with an [`Rlm`]: one REPL answers query after query, so variables built by one query are there
/// for the next. Contexts added later are `context_1`, `context_2`, … (`context` stays the first); earlier
/// conversations are `history_0`, `history_1`, …. Each query writes its own trace.
#[derive(Debug)]
pub struct RlmSession {
    rlm: Rlm,
    session: rlm_engine::Session,
}

impl RlmSession {
    /// Answers `query` in this conversation.
    pub async fn ask(&mut self, query: &str) -> Result<Completion, RlmError> {
        self.ask_with(query, CancellationToken::new(), None).await
    }

    /// Like [`RlmSession::ask`], with a cancellation token and an extra sink that sees every event live.
    pub async fn ask_with(
        &mut self,
        query: &str,
        cancel: CancellationToken,
        observer: Option<Arc<dyn TraceSink>>,
    ) -> Result<Completion, RlmError> {
        let (options, trace_path) = self.rlm.run_options(cancel, observer)?;
        let result = self.session.ask(query, options).await;
        completion_or_error(result, trace_path)
    }

    /// Adds a context; returns its variable name (`context_1`, `context_2`, …).
    pub async fn add_context(&mut self, context: impl Into<Context>) -> Result<String, RlmError> {
        Ok(self.session.add_context(context.into()).await?)
    }

    /// The queries answered so far.
    pub fn turns(&self) -> &[SessionTurn] {
        self.session.turns()
    }

    /// What [`Rlm::resume_session`] needs to restore this conversation.
    pub fn saved(&self) -> SavedSession {
        self.session.saved()
    }

    /// Ends the REPL (with the remote executor, its sandbox session).
    pub async fn close(mut self) -> Result<(), RlmError> {
        Ok(self.session.close().await?)
    }
}

/// Runs one snippet in a fresh REPL of `executor`; `host` answers its sub-calls.
pub async fn exec_with(
    executor: &Arc<dyn Executor>,
    context: Context,
    code: &str,
    cell_timeout: Duration,
    host: Arc<dyn protocol::SubCallHost>,
) -> Result<CellOutcome, RlmError> {
    let spec = SessionSpec { cell_timeout, ..SessionSpec::new(context) };
    let mut session = executor.start_session(spec, host).await?;
    let outcome = session.run_cell(code).await;
    session.close().await?;
    Ok(outcome?)
}

/// Reads a `--context` argument: `-` is standard input (text), a directory becomes a dict of its text files
/// (relative path → content), a `.json` file its parsed value, anything else a text file.
pub fn context_from_path(path: &Path) -> Result<Context, RlmError> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| RlmError::Config(format!("cannot read the context from standard input: {e}")))?;
        return Ok(Context::Text(text));
    }
    let metadata = std::fs::metadata(path)
        .map_err(|e| RlmError::Config(format!("cannot read context {}: {e}", path.display())))?;
    if metadata.is_dir() {
        let mut files = serde_json::Map::new();
        collect_text_files(path, path, &mut files)?;
        return Ok(Context::Json(serde_json::Value::Object(files)));
    }
    let is_json = path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
    Ok(if is_json { Context::JsonFile(path.to_owned()) } else { Context::TextFile(path.to_owned()) })
}

fn collect_text_files(
    root: &Path,
    dir: &Path,
    files: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<(), RlmError> {
    let read_error = |e: std::io::Error| RlmError::Config(format!("cannot read directory {}: {e}", dir.display()));
    let mut entries: Vec<_> =
        std::fs::read_dir(dir).map_err(read_error)?.collect::<Result<_, _>>().map_err(read_error)?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        // Hidden files and directories (.git, .venv, ...) are tooling, not content.
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let file_type = entry.file_type().map_err(read_error)?;
        if file_type.is_dir() {
            collect_text_files(root, &path, files)?;
        } else if file_type.is_file() {
            let bytes = std::fs::read(&path).map_err(read_error)?;
            // Binary files are skipped: the REPL context is text.
            if let Ok(text) = String::from_utf8(bytes) {
                let relative = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
                files.insert(relative, serde_json::Value::String(text));
            }
        }
    }
    Ok(())
}

/// Sends the requests for one model to its own client and everything else to another: a sub-model served at a
/// different endpoint than the root model.
#[derive(Debug)]
pub struct RouteByModel {
    /// Requests for this model go to `matched`.
    pub model: String,
    /// The client for `model`.
    pub matched: Arc<dyn ModelClient>,
    /// The client for every other model.
    pub rest: Arc<dyn ModelClient>,
}

#[async_trait::async_trait]
impl ModelClient for RouteByModel {
    async fn complete(&self, request: rlm_protocol::ModelRequest) -> rlm_protocol::Result<rlm_protocol::ModelResponse> {
        if request.model == self.model {
            self.matched.complete(request).await
        } else {
            self.rest.complete(request).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_context_maps_relative_paths_to_text() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("sub"))?;
        std::fs::create_dir_all(dir.path().join(".git"))?;
        std::fs::write(dir.path().join("a.txt"), "alpha")?;
        std::fs::write(dir.path().join("sub/b.md"), "beta")?;
        std::fs::write(dir.path().join(".git/config"), "hidden")?;
        std::fs::write(dir.path().join("blob.bin"), [0xff, 0xfe, 0x00])?;
        let Context::Json(serde_json::Value::Object(files)) = context_from_path(dir.path())? else {
            panic!("a directory should become a JSON object");
        };
        assert_eq!(files.len(), 2);
        assert_eq!(files["a.txt"], "alpha");
        assert_eq!(files["sub/b.md"], "beta");
        Ok(())
    }

    #[test]
    fn json_files_are_parsed_and_other_files_are_text() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let json = dir.path().join("data.JSON");
        let text = dir.path().join("notes.txt");
        std::fs::write(&json, "[1]")?;
        std::fs::write(&text, "hi")?;
        assert_eq!(context_from_path(&json)?, Context::JsonFile(json.clone()));
        assert_eq!(context_from_path(&text)?, Context::TextFile(text.clone()));
        assert!(context_from_path(&dir.path().join("missing")).is_err());
        Ok(())
    }

    #[test]
    fn openai_without_a_key_is_a_clear_error_before_any_request() {
        let err = Rlm::builder().model("gpt-4o-mini").build().err();
        assert!(err.is_some_and(|e| e.to_string().contains("no API key for OpenAI")));
        let local = Rlm::builder().base_url("http://127.0.0.1:9/v1");
        assert!(local.model("m").build().is_ok(), "a local server needs no key");
    }

    #[test]
    fn building_without_a_model_is_a_clear_error() {
        let err = Rlm::builder().build().err();
        assert!(err.is_some_and(|e| e.to_string().contains("no model set")));
    }

    #[cfg(feature = "local-llm")]
    #[test]
    fn a_local_model_brings_its_window_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        rlm_models_llama::tiny::write_tiny_model(&path).unwrap();
        let spec = format!("local:{}", path.display());
        let rlm = Rlm::builder().model(&spec).trace(TraceTarget::Disabled).build().unwrap();
        assert_eq!(rlm.engine().config().window(&spec), Some(u64::from(rlm_models_llama::tiny::TINY_N_CTX_TRAIN)));
        assert_eq!(rlm.engine().config().direct_max_tokens, Some(LOCAL_DIRECT_MAX_TOKENS));
        let chosen = Rlm::builder().model(&spec).direct_max_tokens(100).trace(TraceTarget::Disabled).build().unwrap();
        assert_eq!(chosen.engine().config().direct_max_tokens, Some(100));

        let err = Rlm::builder().model(&spec).sub_model("gpt-4o-mini").build().err().unwrap().to_string();
        assert!(err.contains("uses it for every call"), "{err}");
    }

    #[cfg(feature = "local-llm")]
    #[test]
    fn an_uncached_local_model_names_the_command_that_fetches_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = Rlm::builder()
            .model("local:qwen2.5-coder-0.5b")
            .local_model_dir(dir.path())
            .build()
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("rlm model pull qwen2.5-coder-0.5b"), "{err}");
    }

    #[test]
    fn an_endpoint_is_a_key_or_a_base_url() {
        assert!(!Rlm::builder().has_endpoint());
        assert!(Rlm::builder().base_url("http://127.0.0.1:8080/v1").has_endpoint());
        assert!(Rlm::builder().api_key("sk-x").has_endpoint());
    }
}
