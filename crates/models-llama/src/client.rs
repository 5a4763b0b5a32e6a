use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use async_trait::async_trait;
use rlm_protocol::{ModelClient, ModelRequest, ModelResponse};
use tokio::sync::oneshot;

use crate::LlamaError;
use crate::worker::{self, Job, SequenceCache};

/// How to load a local model.
#[derive(Debug, Clone)]
pub struct LlamaConfig {
    /// The GGUF file.
    pub path: PathBuf,
    /// The model name reported in responses (and so in usage reports).
    pub name: String,
    /// The context window in tokens; `None` takes the window the model was trained with, as stored in the file.
    pub n_ctx: Option<u32>,
    /// KV-cache sequences: requests running at once, and caches kept for later requests (all share one window).
    pub n_seq: u32,
    /// CPU threads; `None` uses every core the process may run on.
    pub threads: Option<u32>,
    /// The sha256 the file should have, named in load errors so a corrupt download is recognisable.
    pub expected_sha256: Option<String>,
    /// Tokens generated when a request sets no limit.
    pub default_max_tokens: u32,
    /// Guess the next tokens of a reply from the tokens before them (prompt lookup) and check the guesses in the
    /// same decode. The reply is the same either way; only the number of decodes changes. Off by default: on a CPU
    /// it has not yet been measured faster (docs/local-model.md).
    pub lookup: bool,
    /// What one guessed token costs, in decodes of one token: guesses are made only as far as they are kept often
    /// enough to pay for themselves. The default was measured on a CPU; 0 guesses as far as every match goes.
    pub guess_cost: f64,
    /// Directory where the cells of conversations' system prompts are saved, so a later process that loads the same
    /// file and sends the same system prompt starts after it instead of reading it again; `None` saves nothing.
    pub prompt_cache_dir: Option<PathBuf>,
}

impl LlamaConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let name = path.file_stem().map_or_else(|| "local".to_owned(), |stem| stem.to_string_lossy().into_owned());
        Self {
            path,
            name,
            n_ctx: None,
            n_seq: 8,
            threads: None,
            expected_sha256: None,
            default_max_tokens: 2048,
            lookup: false,
            guess_cost: crate::lookup::DEFAULT_GUESS_COST,
            prompt_cache_dir: None,
        }
    }
}

/// What the loaded file says about the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// The window the model was trained with (`n_ctx_train`).
    pub n_ctx_train: u32,
    /// The window of the context in use: the configured one, at most `n_ctx_train`.
    pub n_ctx: u32,
    /// The chat template applied to requests.
    pub chat_template: String,
    pub n_params: u64,
    pub threads: u32,
    pub n_seq: u32,
    /// Whether prompt lookup is on: as configured, except for models whose cache cannot drop rejected guesses.
    pub lookup: bool,
    /// Seconds spent loading the weights and creating the context.
    pub load_seconds: f64,
}

/// Counters of the work done so far, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct LlamaStats {
    /// Prompt tokens fed through the model (those served from the KV cache are not counted).
    pub decoded_prompt_tokens: AtomicU64,
    /// Prompt tokens served from the KV cache of an earlier request.
    pub reused_prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    /// Decode calls; fewer than the requests' tokens when requests share batches.
    pub decode_calls: AtomicU64,
    /// Largest number of requests that shared one decode.
    pub max_parallel: AtomicU64,
    /// Times an idle sequence's cache was dropped to make room for running requests.
    pub evictions: AtomicU64,
    /// Requests that started from cells shared from another sequence (a common prefix such as a system prompt).
    pub shared_prefixes: AtomicU64,
    /// Tokens guessed by prompt lookup and decoded to be checked.
    pub drafted_tokens: AtomicU64,
    /// Guessed tokens the model wrote itself, each a decode saved.
    pub accepted_draft_tokens: AtomicU64,
    /// Decodes tried again without guessed tokens because the cache had no cells for them.
    pub retries_without_drafts: AtomicU64,
    /// System prompts whose cells were saved to disk.
    pub saved_prompts: AtomicU64,
    /// Prompt tokens whose cells were loaded from a saved system prompt instead of decoded.
    pub loaded_prompt_tokens: AtomicU64,
}

impl LlamaStats {
    pub fn decoded_prompt_tokens(&self) -> u64 {
        self.decoded_prompt_tokens.load(Ordering::Relaxed)
    }

    pub fn reused_prompt_tokens(&self) -> u64 {
        self.reused_prompt_tokens.load(Ordering::Relaxed)
    }

    pub fn generated_tokens(&self) -> u64 {
        self.generated_tokens.load(Ordering::Relaxed)
    }

    pub fn decode_calls(&self) -> u64 {
        self.decode_calls.load(Ordering::Relaxed)
    }

    pub fn max_parallel(&self) -> u64 {
        self.max_parallel.load(Ordering::Relaxed)
    }

    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    pub fn shared_prefixes(&self) -> u64 {
        self.shared_prefixes.load(Ordering::Relaxed)
    }

    pub fn drafted_tokens(&self) -> u64 {
        self.drafted_tokens.load(Ordering::Relaxed)
    }

    pub fn accepted_draft_tokens(&self) -> u64 {
        self.accepted_draft_tokens.load(Ordering::Relaxed)
    }

    pub fn retries_without_drafts(&self) -> u64 {
        self.retries_without_drafts.load(Ordering::Relaxed)
    }

    pub fn saved_prompts(&self) -> u64 {
        self.saved_prompts.load(Ordering::Relaxed)
    }

    pub fn loaded_prompt_tokens(&self) -> u64 {
        self.loaded_prompt_tokens.load(Ordering::Relaxed)
    }
}

/// A [`ModelClient`] that runs a GGUF model in this process.
#[derive(Debug)]
pub struct LlamaClient {
    jobs: mpsc::Sender<Job>,
    info: ModelInfo,
    name: String,
    stats: Arc<LlamaStats>,
}

impl LlamaClient {
    /// Loads the model on a new worker thread and waits until it is ready. Blocks: call it from
    /// `spawn_blocking` in async code.
    pub fn load(config: LlamaConfig) -> Result<Self, LlamaError> {
        let stats = Arc::new(LlamaStats::default());
        let name = config.name.clone();
        let (jobs, info) = worker::spawn(config, Arc::clone(&stats))?;
        Ok(Self { jobs, info, name, stats })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The window requests must fit in, in tokens.
    pub fn context_window(&self) -> u64 {
        u64::from(self.info.n_ctx)
    }

    pub fn stats(&self) -> &LlamaStats {
        &self.stats
    }

    /// Formats `request`'s messages with the model's chat template, as the model will see them.
    pub async fn render_prompt(&self, request: &ModelRequest) -> rlm_protocol::Result<String> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Render { messages: std::sync::Arc::clone(&request.messages), reply })?;
        answer.await.map_err(|_| gone())?
    }

    /// What each KV-cache sequence holds, as the scheduler counts it and as llama.cpp does: the two agree unless a
    /// cache went wrong (a check for tests and diagnostics).
    pub async fn sequence_caches(&self) -> rlm_protocol::Result<Vec<SequenceCache>> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Inspect { reply })?;
        answer.await.map_err(|_| gone())
    }

    fn send(&self, job: Job) -> rlm_protocol::Result<()> {
        self.jobs.send(job).map_err(|_| gone())
    }
}

fn gone() -> rlm_protocol::Error {
    rlm_protocol::Error::model(None, "the local model's worker thread has stopped", false)
}

#[async_trait]
impl ModelClient for LlamaClient {
    async fn complete(&self, request: ModelRequest) -> rlm_protocol::Result<ModelResponse> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Complete { request, reply })?;
        let mut response = answer.await.map_err(|_| gone())??;
        response.model.clone_from(&self.name);
        Ok(response)
    }
}
