//! The environment variables the library understands. They are read only when asked for, by
//! [`RlmBuilder::from_env`]: a program that configures everything itself ([`crate::Rlm::builder`]) is never
//! surprised by its environment.

use crate::{OpenAiConfig, ProviderSettings, RlmBuilder, TraceTarget};

impl RlmBuilder {
    /// A builder configured by the environment, as the `rlm` command and the Python package configure theirs:
    ///
    /// * the OpenAI-compatible endpoint from `OPENAI_BASE_URL` and `OPENAI_API_KEY` (else `LLM_BASE_URL`,
    ///   `LLM_API_KEY`);
    /// * the root model from `RLM_MODEL` (else `LLM_MODEL`);
    /// * a new trajectory file per run in `RLM_TRACE_DIR` (else in `rlm-traces`);
    /// * the CPU threads of a `local:` model from `RLM_LOCAL_THREADS`, and whether it uses prompt lookup from
    ///   `RLM_LOCAL_LOOKUP` (`0`, `false`, `off` or `no` turn it off; `1`, `true`, `on` or `yes` on);
    /// * Anthropic's and Gemini's keys and endpoints from `ANTHROPIC_API_KEY`, `ANTHROPIC_BASE_URL`,
    ///   `GEMINI_API_KEY` and `GEMINI_BASE_URL`.
    ///
    /// Empty variables count as unset. Settings made on the builder afterwards override these.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`RlmBuilder::from_env`], with the variables from `lookup` instead of the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| lookup(name).map(|value| value.trim().to_owned()).filter(|value| !value.is_empty());
        let mut builder = Self::default()
            .openai_config(OpenAiConfig::from_lookup(&lookup))
            .provider_settings(ProviderSettings::from_lookup(&lookup));
        if let Some(model) = get("RLM_MODEL").or_else(|| get("LLM_MODEL")) {
            builder = builder.model(model);
        }
        if let Some(dir) = get("RLM_TRACE_DIR") {
            builder = builder.trace(TraceTarget::Directory(dir.into()));
        }
        if let Some(threads) = get("RLM_LOCAL_THREADS").and_then(|threads| threads.parse().ok()) {
            builder = builder.local_threads(threads);
        }
        if let Some(lookup) = get("RLM_LOCAL_LOOKUP").and_then(|value| switch(&value)) {
            builder = builder.local_lookup(lookup);
        }
        builder
    }
}

/// An on/off variable's value; `None` for anything else.
fn switch(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Some(true),
        "0" | "false" | "off" | "no" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> RlmBuilder {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        RlmBuilder::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn the_environment_configures_only_a_builder_that_asks_for_it() {
        let builder = from(&[
            ("RLM_MODEL", "root-model"),
            ("LLM_MODEL", "other"),
            ("OPENAI_BASE_URL", "http://127.0.0.1:9/v1"),
            ("RLM_TRACE_DIR", "/tmp/traces"),
            ("RLM_LOCAL_THREADS", "3"),
            ("RLM_LOCAL_LOOKUP", "0"),
        ]);
        assert!(builder.has_model() && builder.has_endpoint());
        assert_eq!(builder.config.models.root, "root-model");
        assert_eq!(builder.trace, TraceTarget::Directory("/tmp/traces".into()));
        assert_eq!(builder.local_threads, Some(3));
        assert_eq!(builder.local_lookup, Some(false));
        assert_eq!(from(&[("RLM_LOCAL_LOOKUP", "On")]).local_lookup, Some(true));
        assert_eq!(from(&[("RLM_LOCAL_LOOKUP", "maybe")]).local_lookup, None);

        let fallback = from(&[("LLM_MODEL", "m"), ("RLM_MODEL", " "), ("RLM_TRACE_DIR", "")]);
        assert_eq!(fallback.config.models.root, "m");
        assert_eq!(fallback.trace, TraceTarget::Directory(TraceTarget::DEFAULT_DIRECTORY.into()));
        assert!(!fallback.has_endpoint());

        // Settings made afterwards win.
        assert_eq!(from(&[("RLM_MODEL", "env")]).model("given").config.models.root, "given");

        let plain = RlmBuilder::default();
        assert!(!plain.has_model() && !plain.has_endpoint() && plain.local_threads.is_none());
        assert!(plain.local_lookup.is_none());
    }
}
