//! The environment variables this crate reads, all here: a caller that wants its configuration from elsewhere uses
//! [`OpenAiConfig::from_lookup`] and [`crate::local::resolve_local`] with a directory of its own.

use std::path::PathBuf;

use crate::OpenAiConfig;

impl OpenAiConfig {
    /// [`OpenAiConfig::from_lookup`] over the process environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }
}

/// The directory downloaded models live in: `$RLM_MODEL_DIR`, else `$XDG_CACHE_HOME/rlm/models`, else
/// `~/.cache/rlm/models`.
pub fn model_cache_dir() -> PathBuf {
    let from_env = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty()).map(PathBuf::from);
    if let Some(dir) = from_env("RLM_MODEL_DIR") {
        return dir;
    }
    let cache = from_env("XDG_CACHE_HOME")
        .or_else(|| from_env("HOME").map(|home| home.join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("rlm").join("models")
}
