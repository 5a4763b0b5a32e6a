use std::time::Duration;

use rlm::protocol::Secret;
use rlm::{Limits, OpenAiConfig, TraceTarget};

/// Where model-written code runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutorChoice {
    /// CPython embedded in the server process (trusted code only).
    Local,
    /// The remote sandbox service (`WASM_SERVICE_URL` / `RLM_SANDBOX_URL`); `/ready` and every run check that it
    /// answers, and runs are refused with `503` while it does not — code never silently runs unsandboxed.
    Remote(rlm_executor_remote::RemoteConfig),
}

/// Everything that configures the server. `Debug` never shows the API key or the access token (both [`Secret`]s).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The OpenAI-compatible endpoint the RLMs call (base URL, key, retries).
    pub openai: OpenAiConfig,
    /// Root model of runs that name none (`rlm` in the OpenAI-compatible API, `/infer` without `model`).
    pub default_model: Option<String>,
    /// Default model of `llm_query` and child RLMs (default: the run's root model).
    pub sub_model: Option<String>,
    /// The endpoint of `sub_model` when it is served elsewhere than `openai` (the seed's `LLM_RECURSIVE_BASE_URL`);
    /// requests naming `sub_model` go there, with the same key.
    pub sub_openai: Option<OpenAiConfig>,
    /// Default limits of a run; requests may override each of them.
    pub limits: Limits,
    pub executor: ExecutorChoice,
    /// Runs executing at once; more get `429`.
    pub max_concurrent_runs: usize,
    /// Largest request body accepted, in bytes; larger ones get `413`.
    pub max_body_bytes: usize,
    /// Finished runs kept in memory for `GET /v1/runs/{id}`; the oldest finished run is evicted first.
    pub max_stored_runs: usize,
    /// When set, every endpoint except `/health` and `/ready` needs `Authorization: Bearer <token>`.
    pub api_token: Option<Secret<String>>,
    /// JSONL trajectories of runs (default: none; runs keep their events in memory either way).
    pub trace: TraceTarget,
    /// Also store every run's events in PostgreSQL/TimescaleDB (`RLM_TRACE_DB`), through one shared writer.
    pub trace_db: Option<rlm_trace_postgres::PostgresSinkConfig>,
    /// Interval of SSE comment lines that keep idle streams (and proxies) alive and detect gone clients.
    pub sse_keep_alive: Duration,
    /// How long a graceful shutdown waits for running runs before cancelling them.
    pub shutdown_grace: Duration,
    /// Direct call or RLM: see [`rlm::RouteMode`].
    pub route: rlm::RouteMode,
    /// Instructions for the root loop (default: chosen from the model's name).
    pub prompt_profile: rlm::PromptProfile,
    /// Window of the default model in tokens (default: the model family's known window).
    pub context_window: Option<u64>,
    /// Window of the sub-model in tokens.
    pub sub_context_window: Option<u64>,
    /// The longest direct prompt, in tokens, that automatic routing sends to the default model even when the context
    /// fits its window (default: up to the window). `rlm serve --local` sets it as `rlm run` does for `local:` models.
    pub direct_max_tokens: Option<u64>,
    /// Endpoints and keys of the native providers (`anthropic:` and `gemini:` model specs).
    pub providers: rlm::ProviderSettings,
    /// Prices for costs and `max_cost` budgets (default: the built-in table).
    pub prices: Option<rlm::Prices>,
    /// A conversation (`/v1/conversations`) idle for longer is closed; later requests to it get `404`.
    pub conversation_idle_ttl: Duration,
    /// Tokens one conversation may use over all its queries (requests may ask for less).
    pub conversation_max_tokens: Option<u64>,
    /// Conversations open at once; more get `429`.
    pub max_conversations: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            openai: OpenAiConfig::default(),
            default_model: None,
            sub_model: None,
            sub_openai: None,
            limits: Limits::default(),
            executor: ExecutorChoice::Local,
            route: rlm::RouteMode::Auto,
            prompt_profile: rlm::PromptProfile::Auto,
            context_window: None,
            sub_context_window: None,
            direct_max_tokens: None,
            providers: rlm::ProviderSettings::default(),
            prices: None,
            max_concurrent_runs: 8,
            max_body_bytes: 64 * 1024 * 1024,
            max_stored_runs: 100,
            api_token: None,
            trace: TraceTarget::Disabled,
            trace_db: None,
            sse_keep_alive: Duration::from_secs(15),
            shutdown_grace: Duration::from_secs(30),
            conversation_idle_ttl: Duration::from_secs(30 * 60),
            conversation_max_tokens: None,
            max_conversations: 100,
        }
    }
}

impl ServerConfig {
    /// Fills what is still unset from the seed's variables (read through `lookup`, e.g. `std::env::var`):
    /// `LLM_MODEL` (root model), `LLM_RECURSIVE_MODEL` (sub-model) and `LLM_RECURSIVE_BASE_URL` (the sub-model's
    /// endpoint, when it differs from the root's; `LLM_BASE_URL` is read with the root endpoint).
    pub fn with_seed_env(mut self, lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        if self.default_model.is_none() {
            self.default_model = get("LLM_MODEL");
        }
        if self.sub_model.is_none() {
            self.sub_model = get("LLM_RECURSIVE_MODEL");
        }
        if self.sub_openai.is_none()
            && let Some(base_url) = get("LLM_RECURSIVE_BASE_URL")
            && base_url.trim_end_matches('/') != self.openai.base_url.trim_end_matches('/')
        {
            self.sub_openai = Some(OpenAiConfig { base_url, ..self.openai.clone() });
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_variables_fill_what_flags_left_unset() {
        let env = |name: &str| {
            Some(match name {
                "LLM_MODEL" => "root-env".to_owned(),
                "LLM_RECURSIVE_MODEL" => "sub-env".to_owned(),
                "LLM_RECURSIVE_BASE_URL" => "http://sub:9000/v1".to_owned(),
                _ => return None,
            })
        };
        let base = ServerConfig { openai: OpenAiConfig::new("http://root:8000/v1"), ..ServerConfig::default() };
        let filled = base.clone().with_seed_env(env);
        assert_eq!(filled.default_model.as_deref(), Some("root-env"));
        assert_eq!(filled.sub_model.as_deref(), Some("sub-env"));
        assert_eq!(filled.sub_openai.map(|c| c.base_url).as_deref(), Some("http://sub:9000/v1"));
        let flags = ServerConfig { sub_model: Some("flag".into()), default_model: Some("root".into()), ..base };
        let kept = flags.with_seed_env(env);
        assert_eq!((kept.default_model.as_deref(), kept.sub_model.as_deref()), (Some("root"), Some("flag")));
        let same = ServerConfig { openai: OpenAiConfig::new("http://sub:9000/v1/"), ..ServerConfig::default() };
        assert!(same.with_seed_env(env).sub_openai.is_none(), "one endpoint needs no second client");
    }

    #[test]
    fn debug_redacts_secrets() {
        let config = ServerConfig {
            openai: OpenAiConfig::new("http://x/v1").with_api_key("sk-secret-key"),
            api_token: Some("tok-secret".into()),
            ..ServerConfig::default()
        };
        let text = format!("{config:?}");
        assert!(!text.contains("sk-secret-key"), "{text}");
        assert!(!text.contains("tok-secret"), "{text}");
        assert!(text.contains("<redacted>"));
    }
}
