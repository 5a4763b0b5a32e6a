//! The thread that owns the model and its context, and the scheduler that batches requests into decodes.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use llama_cpp_2::DecodeError;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use rlm_machine::{CpuSample, MIN_CPU_WINDOW};
use rlm_protocol::{ChatMessage, ModelRequest, ModelResponse, Role, Usage};
use tokio::sync::oneshot;

use crate::client::{LlamaConfig, LlamaStats, ModelInfo};
use crate::lookup::{self, Acceptance};
use crate::saved_prompts::{MIN_SAVED_TOKENS, SavedPrompts};
use crate::{LlamaError, memory};

/// Tokens fed to one decode at most; prompts longer than this are fed over several steps.
const N_BATCH: u32 = 512;

/// Memory beyond weights and cache that llama.cpp needs for its compute buffers, with a margin.
const OVERHEAD_BYTES: u64 = 384 << 20;

/// The shortest cached prefix a request starts from; shorter common prefixes are decoded again.
const MIN_REUSED_TOKENS: usize = 16;

pub(crate) enum Job {
    Complete { request: ModelRequest, reply: oneshot::Sender<rlm_protocol::Result<ModelResponse>> },
    Render { messages: std::sync::Arc<Vec<ChatMessage>>, reply: oneshot::Sender<rlm_protocol::Result<String>> },
    Inspect { reply: oneshot::Sender<Vec<SequenceCache>> },
}

/// What one KV-cache sequence holds, as the scheduler counts it and as llama.cpp does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceCache {
    pub seq: i32,
    /// Tokens the scheduler believes the sequence holds (kept for later requests, or a running request's so far).
    pub tokens: usize,
    /// One past the highest position llama.cpp holds for the sequence (0 when it holds none).
    pub positions: usize,
}

/// llama.cpp allows one backend per process; every client shares it.
fn backend() -> Result<&'static LlamaBackend, LlamaError> {
    static BACKEND: OnceLock<LlamaBackend> = OnceLock::new();
    static INIT: Mutex<()> = Mutex::new(());
    if let Some(backend) = BACKEND.get() {
        return Ok(backend);
    }
    let _guard = INIT.lock().map_err(|_| LlamaError::Backend("backend initialisation panicked".to_owned()))?;
    if let Some(backend) = BACKEND.get() {
        return Ok(backend);
    }
    let backend = LlamaBackend::init().map_err(|err| LlamaError::Backend(err.to_string()))?;
    // llama.cpp writes to stderr by default; a library must not print.
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
    Ok(BACKEND.get_or_init(|| backend))
}

/// One thread per core that is not already busy. llama.cpp's threads wait for each other at every step, so a thread
/// that shares its core with other work stalls them all: on a 2-core machine running builds (load 10), one thread
/// read and wrote about three times as fast as two.
///
/// What is busy is measured while the model loads ([`CpuSample`] before and after): the one-minute load average
/// still counts a process that has just ended, such as the previous run of the same command, so back-to-back runs
/// on an idle machine would get one thread. The load average is the fallback where `/proc/stat` is not readable.
pub(crate) fn default_threads(since: Option<&CpuSample>) -> u32 {
    let cores = rlm_machine::cores();
    let measured =
        since.zip(CpuSample::now()).and_then(|(before, after)| rlm_machine::busy_cores_between(before, &after, cores));
    let busy = measured
        .or_else(|| std::fs::read_to_string("/proc/loadavg").ok().and_then(|text| busy_cores(&text)))
        .unwrap_or(0);
    threads_for(cores, busy)
}

/// Cores kept busy by other work: the one-minute load average, rounded.
fn busy_cores(loadavg: &str) -> Option<u32> {
    let load: f64 = loadavg.split_whitespace().next()?.parse().ok()?;
    // Rounded, not truncated: a load of 0.6 means a core is mostly taken.
    Some(load.max(0.0).round().min(f64::from(u32::MAX)) as u32)
}

fn threads_for(cores: u32, busy: u32) -> u32 {
    cores.saturating_sub(busy).max(1)
}

/// Starts the worker and waits for it to report the model loaded (or why not).
pub(crate) fn spawn(config: LlamaConfig, stats: Arc<LlamaStats>) -> Result<(mpsc::Sender<Job>, ModelInfo), LlamaError> {
    let (jobs, inbox) = mpsc::channel();
    let (ready, loaded) = mpsc::channel();
    std::thread::Builder::new()
        .name("rlm-llama".to_owned())
        .spawn(move || run(config, stats, inbox, ready))
        .map_err(|err| LlamaError::Backend(format!("cannot start the worker thread: {err}")))?;
    let info =
        loaded.recv().map_err(|_| LlamaError::Backend("the worker thread stopped while loading".to_owned()))??;
    Ok((jobs, info))
}

fn run(
    config: LlamaConfig,
    stats: Arc<LlamaStats>,
    inbox: mpsc::Receiver<Job>,
    ready: mpsc::Sender<Result<ModelInfo, LlamaError>>,
) {
    let started = Instant::now();
    // Busy cores are measured over the load, when no thread count is given.
    let cpu_before = config.threads.is_none().then(CpuSample::now).flatten();
    let backend = match backend() {
        Ok(backend) => backend,
        Err(err) => {
            let _ = ready.send(Err(err));
            return;
        }
    };
    let model = match load_model(backend, &config) {
        Ok(model) => model,
        Err(err) => {
            let _ = ready.send(Err(err));
            return;
        }
    };
    let threads = match config.threads {
        Some(threads) => threads,
        None => {
            if let Some(rest) = cpu_before.and_then(|before| MIN_CPU_WINDOW.checked_sub(before.taken().elapsed())) {
                std::thread::sleep(rest);
            }
            default_threads(cpu_before.as_ref())
        }
    }
    .max(1);
    let n_ctx_train = model.n_ctx_train();
    let n_ctx = config.n_ctx.map_or(n_ctx_train, |n| n.min(n_ctx_train)).max(64);
    let n_seq = config.n_seq.max(1);
    if let Err(err) = check_cache_memory(&model, &config, n_ctx) {
        let _ = ready.send(Err(err));
        return;
    }
    let (template, template_text) = match chat_template(&model, &config) {
        Ok(template) => template,
        Err(err) => {
            let _ = ready.send(Err(err));
            return;
        }
    };
    let threads_i32 = i32::try_from(threads).unwrap_or(1);
    // One cache shared by all sequences, so the conversation may use the whole window when no sub-call runs.
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(N_BATCH)
        .with_n_ubatch(N_BATCH)
        .with_n_seq_max(n_seq)
        .with_kv_unified(true)
        .with_n_threads(threads_i32)
        .with_n_threads_batch(threads_i32);
    let context = match model.new_context(backend, params) {
        Ok(context) => context,
        Err(err) => {
            let _ = ready.send(Err(LlamaError::Backend(format!("cannot create a context: {err}"))));
            return;
        }
    };
    // A recurrent model's state cannot be rolled back to before the guessed tokens it rejected.
    let lookup = config.lookup && !model.is_recurrent() && !model.is_hybrid();
    let info = ModelInfo {
        n_ctx_train,
        n_ctx,
        chat_template: template_text,
        n_params: model.n_params(),
        threads,
        n_seq,
        lookup,
        load_seconds: started.elapsed().as_secs_f64(),
    };
    tracing::info!(path = %config.path.display(), n_ctx, n_ctx_train, threads, n_seq, lookup, load_seconds = info.load_seconds, "loaded local model");
    if ready.send(Ok(info)).is_err() {
        return;
    }
    let saved_prompts = config.prompt_cache_dir.clone().and_then(|dir| SavedPrompts::new(dir, &config.path, n_ctx));
    let mut scheduler = Scheduler {
        model: &model,
        saved_prompts,
        context,
        template,
        stats,
        n_ctx,
        n_seq: i32::try_from(n_seq).unwrap_or(1),
        default_max_tokens: config.default_max_tokens,
        lookup,
        acceptance: Acceptance::new(config.guess_cost),
        kept: (0..n_seq).map(|_| Kept::default()).collect(),
        clock: 0,
        slots: Vec::new(),
        pending: VecDeque::new(),
    };
    scheduler.serve(&inbox);
}

fn load_model(backend: &LlamaBackend, config: &LlamaConfig) -> Result<LlamaModel, LlamaError> {
    let path = &config.path;
    let metadata = std::fs::metadata(path).map_err(|err| LlamaError::MissingFile {
        path: path.clone(),
        reason: err.to_string(),
        expected_sha256: config.expected_sha256.clone(),
    })?;
    if !metadata.is_file() {
        return Err(LlamaError::MissingFile {
            path: path.clone(),
            reason: "not a file".to_owned(),
            expected_sha256: config.expected_sha256.clone(),
        });
    }
    let weights = metadata.len();
    if let Some(available) = memory::available_bytes()
        && weights + OVERHEAD_BYTES > available
    {
        return Err(LlamaError::OutOfMemory {
            path: path.clone(),
            needed_mib: (weights + OVERHEAD_BYTES) >> 20,
            available_mib: available >> 20,
            n_ctx: config.n_ctx.unwrap_or(0),
        });
    }
    LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
        .map_err(|_| LlamaError::CorruptFile { path: path.clone(), expected_sha256: config.expected_sha256.clone() })
}

/// Checked after the weights are mapped (they are paged in lazily) and before the cache is allocated.
fn check_cache_memory(model: &LlamaModel, config: &LlamaConfig, n_ctx: u32) -> Result<(), LlamaError> {
    let Some(available) = memory::available_bytes() else { return Ok(()) };
    let kv = memory::kv_cache_bytes(
        n_ctx,
        model.n_layer(),
        model.n_head(),
        model.n_head_kv(),
        u32::try_from(model.n_embd()).unwrap_or(0),
    );
    let needed = model.size() + kv + OVERHEAD_BYTES;
    if needed > available {
        return Err(LlamaError::OutOfMemory {
            path: config.path.clone(),
            needed_mib: needed >> 20,
            available_mib: available >> 20,
            n_ctx,
        });
    }
    Ok(())
}

fn chat_template(model: &LlamaModel, config: &LlamaConfig) -> Result<(LlamaChatTemplate, String), LlamaError> {
    let template = model.chat_template(None).map_err(|_| LlamaError::NoChatTemplate(config.path.clone()))?;
    let text = template.to_string().map_err(|_| LlamaError::NoChatTemplate(config.path.clone()))?;
    Ok((template, text))
}

/// One request being served in one sequence.
struct Slot {
    seq: i32,
    reply: Option<oneshot::Sender<rlm_protocol::Result<ModelResponse>>>,
    /// A conversation (more than one message) rather than a one-shot request.
    conversation: bool,
    /// Prompt tokens not yet decoded.
    feed: Vec<LlamaToken>,
    /// Position of the next token in the sequence.
    pos: i32,
    /// Tokens in the sequence's cache, in order (kept for later requests when this one finishes).
    history: Vec<LlamaToken>,
    /// The token sampled last, to be decoded next.
    next: Option<LlamaToken>,
    /// Tokens guessed to follow `next` by prompt lookup, decoded with it in the current batch.
    drafts: Vec<LlamaToken>,
    /// The length of the match the guesses in `drafts` came from.
    drafts_ngram: usize,
    /// Guesses made and kept in full at the last step: a copy in progress.
    streak: usize,
    /// Prompt tokens of `feed` in the current batch.
    feeding: usize,
    /// Index in the current batch of the token whose logits this slot samples from (the first of them when it
    /// decodes guessed tokens: theirs follow).
    logits_at: Option<i32>,
    sampler: LlamaSampler,
    generated: Vec<u8>,
    completion_tokens: u64,
    max_tokens: u32,
    usage: Usage,
    /// A system prompt of this many tokens is to be saved to this file once its cells are decoded (the prompt is fed
    /// up to there and no further in the decode that completes it).
    save_at: Option<(usize, PathBuf)>,
}

/// What an idle sequence's cache still holds after its request finished, so a later request that starts with the
/// same tokens (the next turn of a conversation, or another conversation with the same system prompt) decodes only
/// what follows.
#[derive(Default)]
struct Kept {
    tokens: Vec<LlamaToken>,
    /// Kept from a conversation (more than one message): worth more than a one-shot's, so given up last.
    conversation: bool,
    /// When the sequence was last used, for giving up the least recently used cache first.
    used_at: u64,
}

/// A request waiting for a free sequence, already rendered and tokenised.
struct Pending {
    request: ModelRequest,
    tokens: Vec<LlamaToken>,
    /// How many of `tokens` are the system prompt, when it may be loaded from or saved to disk.
    system_tokens: Option<usize>,
    reply: oneshot::Sender<rlm_protocol::Result<ModelResponse>>,
}

/// Where a request starts: its sequence and how many of its first tokens are already cached there.
struct Placement {
    seq: i32,
    /// Another sequence whose cells for the first `keep` tokens are shared into `seq` first.
    share_from: Option<i32>,
    keep: usize,
}

/// What came of looking for a system prompt's saved cells.
enum Loaded {
    Yes,
    /// None saved yet: they are to be saved in this file.
    NoFile(PathBuf),
    /// A file was there but did not load (it is deleted), or saving is off.
    Failed,
}

struct Scheduler<'m> {
    model: &'m LlamaModel,
    /// Where system prompts' cells are saved for later processes; `None` when that is off.
    saved_prompts: Option<SavedPrompts>,
    context: LlamaContext<'m>,
    template: LlamaChatTemplate,
    stats: Arc<LlamaStats>,
    n_ctx: u32,
    n_seq: i32,
    default_max_tokens: u32,
    /// Whether generating sequences guess their next tokens by prompt lookup.
    lookup: bool,
    /// How often guesses were kept, and so how many are worth making.
    acceptance: Acceptance,
    /// What each idle sequence's cache holds, by sequence id (a running sequence's is in its slot).
    kept: Vec<Kept>,
    clock: u64,
    slots: Vec<Slot>,
    /// Requests waiting for a free sequence, in arrival order.
    pending: VecDeque<Pending>,
}

impl Scheduler<'_> {
    fn serve(&mut self, inbox: &mpsc::Receiver<Job>) {
        let mut batch = LlamaBatch::new(N_BATCH as usize, 1);
        loop {
            if self.slots.is_empty() && self.pending.is_empty() {
                match inbox.recv() {
                    Ok(job) => self.accept(job),
                    Err(_) => return,
                }
            }
            while let Ok(job) = inbox.try_recv() {
                self.accept(job);
            }
            self.drop_abandoned();
            self.admit();
            if self.slots.is_empty() {
                continue;
            }
            if let Err(message) = self.step(&mut batch) {
                self.fail_all(&message);
            }
        }
    }

    fn accept(&mut self, job: Job) {
        match job {
            Job::Complete { request, reply } => match self.tokenize(&request) {
                Ok(tokens) => {
                    let system_tokens = self.system_tokens(&request, &tokens);
                    self.pending.push_back(Pending { request, tokens, system_tokens, reply });
                }
                Err(err) => {
                    let _ = reply.send(Err(err));
                }
            },
            Job::Render { messages, reply } => {
                let _ = reply.send(self.render(&messages));
            }
            Job::Inspect { reply } => {
                let sequences = (0..self.n_seq)
                    .map(|seq| SequenceCache {
                        seq,
                        tokens: self.cached_tokens(seq).len(),
                        positions: usize::try_from(self.context.kv_cache_seq_pos_max(seq) + 1).unwrap_or(0),
                    })
                    .collect();
                let _ = reply.send(sequences);
            }
        }
    }

    fn render(&self, messages: &[ChatMessage]) -> rlm_protocol::Result<String> {
        self.render_with(messages, true)
    }

    /// `messages` with the chat template, ending with the opening of the assistant's reply when `reply_follows`.
    fn render_with(&self, messages: &[ChatMessage], reply_follows: bool) -> rlm_protocol::Result<String> {
        let chat = messages
            .iter()
            .map(|message| {
                let role = match message.role {
                    Role::System => "system",
                    Role::User => "user",
                    Role::Assistant => "assistant",
                };
                LlamaChatMessage::new(role.to_owned(), message.content.clone())
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| rlm_protocol::Error::InvalidInput(format!("a message cannot be sent: {err}")))?;
        self.model
            .apply_chat_template(&self.template, &chat, reply_follows)
            .map_err(|err| rlm_protocol::Error::model(None, format!("applying the chat template failed: {err}"), false))
    }

    fn tokenize(&self, request: &ModelRequest) -> rlm_protocol::Result<Vec<LlamaToken>> {
        let prompt = self.render(&request.messages)?;
        let tokens = self.model.vocab().tokenize(prompt.as_bytes(), true, true);
        if tokens.is_empty() {
            return Err(rlm_protocol::Error::InvalidInput("the prompt is empty".to_owned()));
        }
        let window = self.n_ctx as usize;
        if tokens.len() >= window {
            return Err(rlm_protocol::Error::InvalidInput(format!(
                "the prompt has {} tokens; the local model's window is {window}",
                tokens.len()
            )));
        }
        Ok(tokens)
    }

    /// The length of the system prompt at the start of `tokens`, when saved prompts are on and the request is a
    /// conversation that opens with a system message long enough to be worth a file. The system message is rendered
    /// alone; templates that render it differently there (so that it is no prefix of the whole) are left out.
    fn system_tokens(&self, request: &ModelRequest, tokens: &[LlamaToken]) -> Option<usize> {
        self.saved_prompts.as_ref()?;
        let [system, _, ..] = request.messages.as_slice() else { return None };
        if system.role != Role::System {
            return None;
        }
        let text = self.render_with(std::slice::from_ref(system), false).ok()?;
        let prefix = self.model.vocab().tokenize(text.as_bytes(), true, true);
        (prefix.len() >= MIN_SAVED_TOKENS && prefix.len() < tokens.len() && tokens.starts_with(&prefix))
            .then_some(prefix.len())
    }

    /// Starts pending requests that have a free sequence, in arrival order.
    fn admit(&mut self) {
        let mut waiting = VecDeque::new();
        while let Some(pending) = self.pending.pop_front() {
            match self.place(&pending.tokens) {
                Some(placement) => self.start(placement, pending),
                None => waiting.push_back(pending),
            }
        }
        self.pending = waiting;
    }

    fn busy(&self, seq: i32) -> bool {
        self.slots.iter().any(|slot| slot.seq == seq)
    }

    /// Tokens whose cells a sequence holds: a running request's so far, or what an idle one kept.
    fn cached_tokens(&self, seq: i32) -> &[LlamaToken] {
        match self.slots.iter().find(|slot| slot.seq == seq) {
            Some(slot) => &slot.history,
            None => self.kept.get(seq as usize).map_or(&[], |kept| &kept.tokens),
        }
    }

    /// Chooses the sequence a request runs in, keeping the most useful caches: an idle sequence the prompt extends,
    /// else an empty one, else the least recently used one-shot cache, else the least recently used conversation.
    /// The cells of the longest cached prefix of the prompt, in any sequence (running or idle), are shared into it.
    fn place(&self, tokens: &[LlamaToken]) -> Option<Placement> {
        let idle: Vec<i32> = (0..self.n_seq).filter(|&seq| !self.busy(seq)).collect();
        let kept = |seq: i32| &self.kept[seq as usize];
        let extended = idle
            .iter()
            .copied()
            .filter(|&seq| !kept(seq).tokens.is_empty() && tokens.starts_with(&kept(seq).tokens))
            .max_by_key(|&seq| kept(seq).tokens.len());
        let seq = extended
            .or_else(|| idle.iter().copied().find(|&seq| kept(seq).tokens.is_empty()))
            .or_else(|| {
                idle.iter().copied().filter(|&seq| !kept(seq).conversation).min_by_key(|&seq| kept(seq).used_at)
            })
            .or_else(|| idle.iter().copied().min_by_key(|&seq| kept(seq).used_at))?;
        let own = common_prefix(&kept(seq).tokens, tokens);
        let donor = (0..self.n_seq)
            .filter(|&other| other != seq)
            .map(|other| (other, common_prefix(self.cached_tokens(other), tokens)))
            .max_by_key(|&(_, shared)| shared)
            .filter(|&(_, shared)| shared > own);
        // At least one token must be decoded to have logits to sample from; a few shared tokens (the chat
        // template's opening) are not worth a cache entry.
        let worth = |shared: usize| if shared >= MIN_REUSED_TOKENS { shared.min(tokens.len() - 1) } else { 0 };
        Some(match donor {
            Some((other, shared)) if worth(shared) > 0 => {
                Placement { seq, share_from: Some(other), keep: worth(shared) }
            }
            _ => Placement { seq, share_from: None, keep: worth(own) },
        })
    }

    fn start(&mut self, placement: Placement, pending: Pending) {
        let Pending { request, tokens, system_tokens, reply } = pending;
        let Placement { seq, share_from, mut keep } = placement;
        let keep_pos = u32::try_from(keep).unwrap_or(u32::MAX);
        let shared = match share_from {
            Some(donor) => {
                let _ = self.context.kv_cache_seq_rm(seq, None, None);
                self.context.kv_cache_seq_cp(donor, seq, Some(0), Some(keep_pos)).is_ok()
            }
            None => self.context.kv_cache_seq_rm(seq, Some(keep_pos), None).is_ok(),
        };
        if !shared {
            // The cache cannot drop or share part of this sequence (some architectures): start it afresh.
            let _ = self.context.kv_cache_seq_rm(seq, None, None);
            keep = 0;
        }
        if share_from.is_some() && keep > 0 {
            self.stats.shared_prefixes.fetch_add(1, Ordering::Relaxed);
        }
        let mut save_at = None;
        if let Some(system) = system_tokens.filter(|&system| keep < system) {
            match self.load_saved_prompt(seq, &tokens[..system]) {
                Loaded::Yes => keep = system,
                Loaded::NoFile(path) => save_at = Some((system, path)),
                // The sequence was emptied to load into.
                Loaded::Failed => keep = 0,
            }
        }
        self.kept[seq as usize] = Kept::default();
        let max_tokens = request.max_output_tokens.unwrap_or(self.default_max_tokens);
        let usage = Usage {
            prompt_tokens: tokens.len() as u64,
            completion_tokens: 0,
            cached_tokens: keep as u64,
            calls: 1,
            ..Usage::default()
        };
        self.stats.reused_prompt_tokens.fetch_add(keep as u64, Ordering::Relaxed);
        self.slots.push(Slot {
            seq,
            reply: Some(reply),
            conversation: request.messages.len() > 1,
            feed: tokens[keep..].to_vec(),
            pos: i32::try_from(keep).unwrap_or(i32::MAX),
            history: tokens[..keep].to_vec(),
            next: None,
            drafts: Vec::new(),
            drafts_ngram: 0,
            streak: 0,
            feeding: 0,
            logits_at: None,
            sampler: sampler(request.temperature),
            generated: Vec::new(),
            completion_tokens: 0,
            max_tokens,
            usage,
            save_at,
        });
    }

    /// Loads the saved cells of the system prompt `system` into the empty sequence `seq`, if a file has them.
    fn load_saved_prompt(&mut self, seq: i32, system: &[LlamaToken]) -> Loaded {
        let Some(saved) = &self.saved_prompts else {
            let _ = self.context.kv_cache_seq_rm(seq, None, None);
            return Loaded::Failed;
        };
        let path = saved.path_for(system);
        if !path.is_file() {
            return Loaded::NoFile(path);
        }
        let _ = self.context.kv_cache_seq_rm(seq, None, None);
        match self.context.state_seq_load_file(&path, seq, system.len()) {
            Ok((tokens, _)) if tokens == system => {
                saved.mark_used(&path);
                self.stats.loaded_prompt_tokens.fetch_add(system.len() as u64, Ordering::Relaxed);
                Loaded::Yes
            }
            outcome => {
                tracing::warn!(path = %path.display(), ok = outcome.is_ok(), "a saved system prompt did not load; deleting it");
                let _ = self.context.kv_cache_seq_rm(seq, None, None);
                let _ = std::fs::remove_file(&path);
                Loaded::Failed
            }
        }
    }

    /// Saves the cells of each system prompt that has just been decoded in full and has no file yet.
    fn save_prompts(&mut self) {
        let Some(saved) = &self.saved_prompts else { return };
        for slot in &mut self.slots {
            let Some((system, _)) = &slot.save_at else { continue };
            if slot.history.len() < *system {
                continue;
            }
            let Some((system, path)) = slot.save_at.take() else { continue };
            if slot.history.len() > system {
                continue;
            }
            let Some(temporary) = saved.temporary_path(&path) else { continue };
            let written = self.context.state_seq_save_file(&temporary, slot.seq, &slot.history);
            match written
                .map_err(|err| err.to_string())
                .and_then(|_| std::fs::rename(&temporary, &path).map_err(|err| err.to_string()))
            {
                Ok(()) => {
                    self.stats.saved_prompts.fetch_add(1, Ordering::Relaxed);
                    saved.prune();
                }
                Err(err) => {
                    tracing::warn!(path = %path.display(), %err, "could not save a system prompt's cells");
                    let _ = std::fs::remove_file(&temporary);
                }
            }
        }
    }

    /// Gives up the cells of the idle cache worth least (one-shots before conversations, least recently used
    /// first). False when no idle sequence holds any.
    fn evict_one(&mut self) -> bool {
        let victim = (0..self.n_seq)
            .filter(|&seq| !self.busy(seq) && !self.kept[seq as usize].tokens.is_empty())
            .min_by_key(|&seq| {
                let kept = &self.kept[seq as usize];
                (kept.conversation, kept.used_at)
            });
        let Some(seq) = victim else { return false };
        let _ = self.context.kv_cache_seq_rm(seq, None, None);
        self.kept[seq as usize] = Kept::default();
        self.stats.evictions.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// One decode over every running request: the next token of those generating (with the tokens prompt lookup
    /// guesses to follow it), then prompt tokens of those still reading, as far as the batch allows.
    fn step(&mut self, batch: &mut LlamaBatch) -> Result<(), String> {
        let mut guessing = self.lookup;
        let sharing = self.fill(batch, guessing)?;
        self.stats.max_parallel.fetch_max(sharing, Ordering::Relaxed);
        self.stats.decode_calls.fetch_add(1, Ordering::Relaxed);
        loop {
            match self.context.decode(batch) {
                Ok(()) => break,
                // The cache is full. Guessed tokens go first: they only save time, while an idle sequence's cells
                // save reading its tokens again.
                Err(DecodeError::NoKvCacheSlot)
                    if guessing && self.slots.iter().any(|slot| !slot.drafts.is_empty()) =>
                {
                    guessing = false;
                    self.stats.retries_without_drafts.fetch_add(1, Ordering::Relaxed);
                    self.fill(batch, guessing)?;
                }
                // Idle sequences' cells are only a cache: give them up one at a time and try again (a failed decode
                // leaves the cache as it was).
                Err(DecodeError::NoKvCacheSlot) if self.evict_one() => {}
                Err(DecodeError::NoKvCacheSlot) => {
                    return Err(format!(
                        "the local model's {}-token cache is full with the requests running at once; run \
                         fewer sub-calls at once or shorten their prompts",
                        self.n_ctx
                    ));
                }
                Err(err) => return Err(format!("llama.cpp decode failed: {err}")),
            }
        }
        self.commit();
        self.save_prompts();
        self.sample_and_finish();
        Ok(())
    }

    /// Fills `batch` for the next decode without changing what the slots hold, so a decode that fails can be
    /// planned again; returns how many requests share it.
    fn fill(&mut self, batch: &mut LlamaBatch, guessing: bool) -> Result<u64, String> {
        batch.clear();
        let mut room = N_BATCH as usize;
        let mut sharing = 0;
        let n_ctx = self.n_ctx as usize;
        let generating = self.slots.iter().filter(|slot| slot.next.is_some()).count();
        for slot in &mut self.slots {
            slot.logits_at = None;
            slot.drafts.clear();
            slot.feeding = 0;
            let Some(token) = slot.next else { continue };
            slot.logits_at = Some(batch.n_tokens());
            batch.add(token, slot.pos, &[slot.seq], true).map_err(|err| err.to_string())?;
            room -= 1;
            sharing += 1;
            if guessing {
                // A guessed token is worth decoding only if the model could still write the token after it: the
                // reply has tokens left and the window has cells left.
                let produced = usize::try_from(slot.completion_tokens).unwrap_or(usize::MAX);
                let left = (slot.max_tokens as usize).saturating_sub(produced + 1);
                let cells = n_ctx.saturating_sub(slot.pos as usize + 2);
                // Leave every generating sequence a share of the batch.
                let share = room / generating.max(1);
                let max = lookup::MAX_GUESS.min(left).min(cells).min(share);
                if let Some(mut guess) = lookup::propose(&slot.history, token, max) {
                    guess.tokens.truncate(self.acceptance.length(guess.ngram, slot.streak));
                    slot.drafts = guess.tokens;
                    slot.drafts_ngram = guess.ngram;
                }
                for (offset, &draft) in (1..).zip(&slot.drafts) {
                    batch.add(draft, slot.pos + offset, &[slot.seq], true).map_err(|err| err.to_string())?;
                }
                room -= slot.drafts.len();
            }
        }
        for slot in &mut self.slots {
            if slot.feed.is_empty() || room == 0 {
                continue;
            }
            // A system prompt to be saved ends a decode, so that its cells can be saved alone.
            let until_save = match &slot.save_at {
                Some((system, _)) => system.saturating_sub(slot.history.len()),
                None => usize::MAX,
            };
            let take = slot.feed.len().min(room).min(until_save);
            if take == 0 {
                continue;
            }
            let last = take == slot.feed.len();
            for (i, (&token, pos)) in slot.feed[..take].iter().zip(slot.pos..).enumerate() {
                let wants_logits = last && i + 1 == take;
                if wants_logits {
                    slot.logits_at = Some(batch.n_tokens());
                }
                batch.add(token, pos, &[slot.seq], wants_logits).map_err(|err| err.to_string())?;
            }
            slot.feeding = take;
            room -= take;
            sharing += 1;
        }
        Ok(sharing)
    }

    /// Records in each slot what the decode just put in its sequence's cache.
    fn commit(&mut self) {
        for slot in &mut self.slots {
            if let Some(token) = slot.next.take() {
                slot.history.push(token);
                slot.history.extend_from_slice(&slot.drafts);
                slot.pos += 1 + i32::try_from(slot.drafts.len()).unwrap_or(0);
            }
            if slot.feeding > 0 {
                slot.history.extend(slot.feed.drain(..slot.feeding));
                slot.pos += i32::try_from(slot.feeding).unwrap_or(0);
                self.stats.decoded_prompt_tokens.fetch_add(slot.feeding as u64, Ordering::Relaxed);
            }
        }
    }

    /// Samples each slot's next token from the decode's logits. A slot that decoded guessed tokens samples on from
    /// the logits after each guess as long as it sampled exactly that guess, so it writes what it would have
    /// written one token per decode; the cells of the guesses it did not write are dropped.
    fn sample_and_finish(&mut self) {
        let vocab = self.model.vocab();
        let n_ctx = self.n_ctx as usize;
        let mut index = 0;
        while index < self.slots.len() {
            let slot = &mut self.slots[index];
            let mut done = None;
            if let Some(at) = slot.logits_at {
                let drafts = std::mem::take(&mut slot.drafts);
                // Cells in use after the token whose logits are sampled first.
                let base = slot.pos as usize - drafts.len();
                let mut accepted = 0;
                loop {
                    let row = at + i32::try_from(accepted).unwrap_or(0);
                    let token = slot.sampler.sample(&self.context, row);
                    if vocab.is_eog(token) {
                        done = Some(Ok(()));
                        break;
                    }
                    slot.completion_tokens += 1;
                    slot.generated.extend(vocab.token_to_piece(token, false, None));
                    // A reply that reaches the end of the window ends there, as a length-limited reply does.
                    if slot.completion_tokens >= u64::from(slot.max_tokens) || base + accepted + 1 >= n_ctx {
                        done = Some(Ok(()));
                        break;
                    }
                    if drafts.get(accepted) == Some(&token) {
                        accepted += 1;
                    } else {
                        slot.next = Some(token);
                        break;
                    }
                }
                if !drafts.is_empty() {
                    self.stats.drafted_tokens.fetch_add(drafts.len() as u64, Ordering::Relaxed);
                    self.stats.accepted_draft_tokens.fetch_add(accepted as u64, Ordering::Relaxed);
                    self.acceptance.record(slot.drafts_ngram, drafts.len(), accepted);
                }
                slot.streak = if accepted == drafts.len() { accepted } else { 0 };
                let kept = base + accepted;
                if kept < slot.history.len() {
                    slot.history.truncate(kept);
                    slot.pos = i32::try_from(kept).unwrap_or(i32::MAX);
                    let from = u32::try_from(kept).unwrap_or(u32::MAX);
                    if self.context.kv_cache_seq_rm(slot.seq, Some(from), None).is_err() {
                        // Only a cache that cannot drop part of a sequence refuses, and lookup is off for those.
                        self.lookup = false;
                        done = Some(Err("the local model's cache cannot drop rejected guessed tokens".to_owned()));
                    }
                }
            }
            match done {
                Some(outcome) => {
                    let slot = self.slots.swap_remove(index);
                    self.finish(slot, outcome);
                }
                None => index += 1,
            }
        }
    }

    fn finish(&mut self, mut slot: Slot, outcome: Result<(), String>) {
        self.stats.generated_tokens.fetch_add(slot.completion_tokens, Ordering::Relaxed);
        self.clock += 1;
        if outcome.is_ok() {
            self.kept[slot.seq as usize] = Kept {
                tokens: std::mem::take(&mut slot.history),
                conversation: slot.conversation,
                used_at: self.clock,
            };
        } else {
            let _ = self.context.kv_cache_seq_rm(slot.seq, None, None);
        }
        let result = outcome
            .map(|()| ModelResponse {
                content: String::from_utf8_lossy(&slot.generated).into_owned(),
                usage: Usage { completion_tokens: slot.completion_tokens, ..slot.usage },
                model: String::new(),
            })
            .map_err(|message| rlm_protocol::Error::model(None, message, false));
        if let Some(reply) = slot.reply.take() {
            let _ = reply.send(result);
        }
    }

    /// Stops requests whose caller has gone (a timeout or a cancelled run), so they stop taking turns.
    fn drop_abandoned(&mut self) {
        let mut index = 0;
        while index < self.slots.len() {
            if self.slots[index].reply.as_ref().is_none_or(oneshot::Sender::is_closed) {
                let slot = self.slots.swap_remove(index);
                self.finish(slot, Err("abandoned".to_owned()));
            } else {
                index += 1;
            }
        }
        self.pending.retain(|pending| !pending.reply.is_closed());
    }

    fn fail_all(&mut self, message: &str) {
        for mut slot in std::mem::take(&mut self.slots) {
            let _ = self.context.kv_cache_seq_rm(slot.seq, None, None);
            if let Some(reply) = slot.reply.take() {
                let _ = reply.send(Err(rlm_protocol::Error::model(None, message.to_owned(), false)));
            }
        }
        for seq in 0..self.n_seq {
            let _ = self.context.kv_cache_seq_rm(seq, None, None);
        }
        self.kept.iter_mut().for_each(|kept| *kept = Kept::default());
    }
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn sampler(temperature: Option<f32>) -> LlamaSampler {
    match temperature {
        Some(t) if t > 0.0 => LlamaSampler::chain_simple([
            LlamaSampler::top_k(40),
            LlamaSampler::top_p(0.95, 1),
            LlamaSampler::temp(t),
            LlamaSampler::dist(fastrand_seed()),
        ]),
        _ => LlamaSampler::greedy(),
    }
}

fn fastrand_seed() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_follow_the_idle_cores() {
        assert_eq!(busy_cores("0.10 0.20 0.30 1/100 42"), Some(0));
        assert_eq!(busy_cores("1.60 0.20 0.30 1/100 42"), Some(2));
        assert_eq!(busy_cores("garbage"), None);
        assert_eq!(threads_for(8, 0), 8);
        assert_eq!(threads_for(8, 3), 5);
        assert_eq!(threads_for(2, 10), 1);
    }
}
