//! Model specs: `provider:model` names which protocol a model is reached with. A bare name is a model of the
//! OpenAI-compatible endpoint, as before providers existed.

use std::fmt;

use crate::ModelsError;
use crate::local::LOCAL_PREFIX;

/// How a model is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    /// Any OpenAI-compatible Chat Completions endpoint (OpenAI, vLLM, llama.cpp, Ollama, OpenRouter, ...).
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
    /// Google's Gemini `generateContent` API.
    Gemini,
    /// A GGUF model run in this process (see [`crate::local`]).
    Local,
}

impl Provider {
    /// Every provider, in the order error messages list them.
    pub const ALL: [Self; 4] = [Self::OpenAi, Self::Anthropic, Self::Gemini, Self::Local];

    /// The prefix of a spec, without the colon.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::Local => "local",
        }
    }

    fn from_prefix(prefix: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|provider| provider.prefix() == prefix)
    }

    /// `openai, anthropic, gemini, local`.
    pub fn known_list() -> String {
        Self::ALL.map(Self::prefix).join(", ")
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix())
    }
}

/// A parsed model spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSpec<'a> {
    pub provider: Provider,
    /// The model name as the provider knows it (for `local:`, the whole spec: the local module parses it).
    pub model: &'a str,
}

/// Names of providers rlm does not speak natively. A spec starting with one of them is a mistake, not an
/// OpenAI-compatible model whose name happens to contain a colon.
const FOREIGN_PROVIDERS: [&str; 14] = [
    "azure",
    "azure_openai",
    "bedrock",
    "vertex",
    "vertexai",
    "openrouter",
    "cohere",
    "groq",
    "together",
    "fireworks",
    "portkey",
    "litellm",
    "vllm",
    "google",
];

impl<'a> ModelSpec<'a> {
    /// Parses `provider:model`, or a bare name (OpenAI-compatible).
    ///
    /// Names such as Ollama's `qwen2.5:7b` or `mistral:latest` contain a colon too, so an unknown prefix is an
    /// error only when it names a provider rlm does not speak, or is a near-miss of a known one (`antropic:`);
    /// anything else stays an OpenAI-compatible model name. `openai:NAME` forces that reading.
    pub fn parse(spec: &'a str) -> Result<Self, ModelsError> {
        let spec = spec.trim();
        if spec.starts_with(LOCAL_PREFIX) {
            return Ok(Self { provider: Provider::Local, model: spec });
        }
        let Some((prefix, rest)) = spec.split_once(':') else {
            return Ok(Self { provider: Provider::OpenAi, model: spec });
        };
        if let Some(provider) = Provider::from_prefix(prefix) {
            if rest.trim().is_empty() {
                return Err(ModelsError::InvalidSpec {
                    spec: spec.to_owned(),
                    reason: format!("no model name after `{prefix}:`"),
                });
            }
            return Ok(Self { provider, model: rest });
        }
        let lower = prefix.to_ascii_lowercase();
        let foreign = FOREIGN_PROVIDERS.contains(&lower.as_str());
        let near_miss =
            lower.len() >= 5 && Provider::ALL.iter().any(|known| edit_distance(&lower, known.prefix()) <= 2);
        if foreign || near_miss {
            return Err(ModelsError::UnknownProvider { prefix: prefix.to_owned(), known: Provider::known_list() });
        }
        Ok(Self { provider: Provider::OpenAi, model: spec })
    }
}

/// The provider of `spec` and the model name without the prefix, for price lookups and cache keys; a spec that does
/// not parse counts as an OpenAI-compatible name.
pub fn split_spec(spec: &str) -> (Provider, &str) {
    match ModelSpec::parse(spec) {
        Ok(ModelSpec { provider: Provider::Local, model }) => {
            (Provider::Local, model.strip_prefix(LOCAL_PREFIX).unwrap_or(model))
        }
        Ok(parsed) => (parsed.provider, parsed.model),
        Err(_) => (Provider::OpenAi, spec),
    }
}

/// Levenshtein distance of two short ASCII words.
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(spec: &str) -> (Provider, String) {
        let parsed = ModelSpec::parse(spec).unwrap();
        (parsed.provider, parsed.model.to_owned())
    }

    #[test]
    fn prefixes_select_providers_and_bare_names_stay_openai() {
        assert_eq!(parsed("openai:gpt-4o"), (Provider::OpenAi, "gpt-4o".into()));
        assert_eq!(parsed("anthropic:claude-sonnet-4-5"), (Provider::Anthropic, "claude-sonnet-4-5".into()));
        assert_eq!(parsed("gemini:gemini-2.5-flash"), (Provider::Gemini, "gemini-2.5-flash".into()));
        assert_eq!(parsed("gpt-4o-mini"), (Provider::OpenAi, "gpt-4o-mini".into()));
        assert_eq!(parsed("local:qwen2.5-coder-0.5b"), (Provider::Local, "local:qwen2.5-coder-0.5b".into()));
        // Ollama tags keep working as bare names; `openai:` forces the reading when in doubt.
        assert_eq!(parsed("qwen2.5:7b"), (Provider::OpenAi, "qwen2.5:7b".into()));
        assert_eq!(parsed("mistral:latest"), (Provider::OpenAi, "mistral:latest".into()));
        assert_eq!(parsed("openai:mistral:7b"), (Provider::OpenAi, "mistral:7b".into()));
        assert_eq!(split_spec("anthropic:claude-haiku-4-5"), (Provider::Anthropic, "claude-haiku-4-5"));
        assert_eq!(split_spec("local:qwen"), (Provider::Local, "qwen"));
    }

    #[test]
    fn unknown_providers_are_errors_that_list_the_known_ones() {
        for spec in ["antropic:claude-sonnet-4-5", "bedrock:claude", "Azure:gpt-4o", "gemeni:gemini-2.5-pro"] {
            let err = ModelSpec::parse(spec).unwrap_err().to_string();
            assert!(err.contains("openai, anthropic, gemini, local"), "{spec}: {err}");
        }
        let err = ModelSpec::parse("anthropic:").unwrap_err().to_string();
        assert!(err.contains("no model name"), "{err}");
    }
}
