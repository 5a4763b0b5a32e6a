//! An in-process model provider for rlm backed by llama.cpp.
//!
//! [`LlamaClient`] loads a GGUF file, formats requests with the chat template stored in that file and generates on
//! the CPU. The model and its context live on one worker thread (llama.cpp contexts must not be shared between
//! threads); requests reach it through a channel, so the async [`rlm_protocol::ModelClient`] only awaits replies.
//!
//! The worker batches all running requests into one decode per step, each in its own KV-cache sequence:
//!
//! * a sequence keeps its cache when its request ends, so the next turn of a conversation (the root's, or a child
//!   RLM's) decodes only its new tokens;
//! * a request starts where most of its prompt is cached, sharing the cells of the longest cached prefix (a system
//!   prompt) from any other sequence, and idle caches are given up, least valuable first, only when cells run out;
//! * a generating sequence guesses its next tokens from its own earlier tokens (prompt lookup) and decodes the
//!   guesses with its next token, keeping each guess only if it samples exactly that token from the logits before
//!   it: the reply is the one ordinary decoding writes, in fewer decodes when it copies what it has seen.

mod client;
mod lookup;
mod memory;
mod saved_prompts;
mod worker;

pub use client::{LlamaClient, LlamaConfig, LlamaStats, ModelInfo};
pub use lookup::DEFAULT_GUESS_COST;
pub use worker::SequenceCache;

use std::path::PathBuf;

/// Errors of loading a local model. Errors of individual requests are [`rlm_protocol::Error::Model`].
#[derive(Debug, thiserror::Error)]
pub enum LlamaError {
    /// The model file does not exist or cannot be read.
    #[error("cannot read the model file {path}: {reason}{}", expected_hint(.expected_sha256))]
    MissingFile { path: PathBuf, reason: String, expected_sha256: Option<String> },
    /// llama.cpp could not load the file (truncated, corrupt, or not a GGUF model).
    #[error("cannot load the model file {path}: it is not a usable GGUF model (corrupt or incomplete?){}", expected_hint(.expected_sha256))]
    CorruptFile { path: PathBuf, expected_sha256: Option<String> },
    /// The machine does not have enough free memory for the model and its cache.
    #[error(
        "not enough memory for {path}: it needs about {needed_mib} MiB (weights{}) but {available_mib} MiB are \
         available; free memory or choose a smaller model or window",
        cache_hint(*.n_ctx)
    )]
    OutOfMemory { path: PathBuf, needed_mib: u64, available_mib: u64, n_ctx: u32 },
    /// The llama.cpp backend or a context could not be created.
    #[error("llama.cpp: {0}")]
    Backend(String),
    /// The file has no chat template and the configuration names none.
    #[error("the model file {0} has no chat template")]
    NoChatTemplate(PathBuf),
}

fn cache_hint(n_ctx: u32) -> String {
    if n_ctx == 0 { String::new() } else { format!(" and a {n_ctx}-token cache") }
}

fn expected_hint(expected: &Option<String>) -> String {
    expected.as_ref().map(|hash| format!(" (expected sha256 {hash})")).unwrap_or_default()
}

pub mod tiny;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_little_memory_says_what_is_needed_and_available() {
        let err = LlamaError::OutOfMemory { path: "m.gguf".into(), needed_mib: 2048, available_mib: 900, n_ctx: 32768 };
        assert_eq!(
            err.to_string(),
            "not enough memory for m.gguf: it needs about 2048 MiB (weights and a 32768-token cache) but 900 MiB are \
             available; free memory or choose a smaller model or window"
        );
    }
}
