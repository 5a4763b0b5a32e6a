//! The environment variables this crate reads, all here: a caller that wants its configuration from elsewhere uses
//! [`OpenAiConfig::from_lookup`], [`ProviderSettings`] fields and [`crate::local::resolve_local`] with a directory of
//! its own.

use std::path::PathBuf;

use rlm_protocol::Secret;

use crate::OpenAiConfig;
use crate::anthropic::{ANTHROPIC_BASE_URL, ANTHROPIC_KEY_VARIABLE};
use crate::gemini::{GEMINI_BASE_URL, GEMINI_KEY_VARIABLE};
use crate::providers::ProviderSettings;

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

/// Where the local model saves its system prompts' caches for later runs: `prompt-cache` in `model_dir`, or `None`
/// when `RLM_LOCAL_PROMPT_CACHE` is `off` (or `0`, `false`, `no`).
pub fn prompt_cache_dir(model_dir: &std::path::Path) -> Option<PathBuf> {
    prompt_cache_dir_with(model_dir, std::env::var("RLM_LOCAL_PROMPT_CACHE").ok().as_deref())
}

fn prompt_cache_dir_with(model_dir: &std::path::Path, setting: Option<&str>) -> Option<PathBuf> {
    let off =
        setting.is_some_and(|value| matches!(value.trim().to_ascii_lowercase().as_str(), "off" | "0" | "false" | "no"));
    (!off).then(|| model_dir.join("prompt-cache"))
}

impl ProviderSettings {
    /// Keys from `ANTHROPIC_API_KEY` and `GEMINI_API_KEY`; base URLs from `ANTHROPIC_BASE_URL` (without `/v1`, as
    /// Anthropic's SDKs take it) and `GEMINI_BASE_URL` (without the version path), else the public endpoints. Empty
    /// variables count as unset.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`ProviderSettings::from_env`], with the variables from `lookup` instead of the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let mut settings = Self::default();
        settings.anthropic.http.base_url = get("ANTHROPIC_BASE_URL").unwrap_or_else(|| ANTHROPIC_BASE_URL.to_owned());
        settings.anthropic.http.api_key = get(ANTHROPIC_KEY_VARIABLE).map(Secret::new);
        settings.gemini.http.base_url = get("GEMINI_BASE_URL").unwrap_or_else(|| GEMINI_BASE_URL.to_owned());
        settings.gemini.http.api_key = get(GEMINI_KEY_VARIABLE).map(Secret::new);
        settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_cache_sits_beside_the_models_unless_switched_off() {
        let dir = std::path::Path::new("/m");
        assert_eq!(prompt_cache_dir_with(dir, None), Some(PathBuf::from("/m/prompt-cache")));
        assert_eq!(prompt_cache_dir_with(dir, Some("on")), Some(PathBuf::from("/m/prompt-cache")));
        assert_eq!(prompt_cache_dir_with(dir, Some(" OFF ")), None);
        assert_eq!(prompt_cache_dir_with(dir, Some("0")), None);
    }

    #[test]
    fn variables_set_keys_and_base_urls() {
        let vars =
            [("ANTHROPIC_API_KEY", "sk-ant"), ("ANTHROPIC_BASE_URL", "http://127.0.0.1:1"), ("GEMINI_API_KEY", " ")];
        let settings = ProviderSettings::from_lookup(|name| {
            vars.iter().find(|(key, _)| *key == name).map(|(_, value)| (*value).to_owned())
        });
        assert_eq!(settings.anthropic.http.api_key.as_ref().map(|key| key.expose().as_str()), Some("sk-ant"));
        assert_eq!(settings.anthropic.http.base_url, "http://127.0.0.1:1");
        assert_eq!(settings.gemini.http.api_key, None, "blank is unset");
        assert_eq!(settings.gemini.http.base_url, GEMINI_BASE_URL);
        let err = settings.check("gemini:gemini-2.5-flash").unwrap_err().to_string();
        assert!(err.contains("GEMINI_API_KEY"), "{err}");
        assert!(settings.check("anthropic:claude-sonnet-4-5").is_ok());
        assert!(settings.check("gpt-4o").is_ok());
    }
}
