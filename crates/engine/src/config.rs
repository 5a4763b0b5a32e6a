use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::prompt::PromptProfile;

/// Which model each part of a run tree uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelPlan {
    /// The root loop of the top-level run.
    pub root: String,
    /// Default model of `llm_query*` calls and of child RLMs' root loops; the root model when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Root-loop model per depth (index 0 = top level); overrides `root`/`sub` where given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_depth: Vec<String>,
}

impl ModelPlan {
    /// A plan that uses `root` for every loop and every sub-call.
    pub fn new(root: impl Into<String>) -> Self {
        Self { root: root.into(), sub: None, per_depth: Vec::new() }
    }

    /// The model driving the root loop of a run at `depth`.
    pub fn loop_model(&self, depth: u32) -> &str {
        match self.per_depth.get(depth as usize) {
            Some(model) => model,
            None if depth == 0 => &self.root,
            None => self.sub_model(),
        }
    }

    /// The default model of `llm_query` calls.
    pub fn sub_model(&self) -> &str {
        self.sub.as_deref().unwrap_or(&self.root)
    }
}

/// Budgets of a run tree. Counts (sub-calls, tokens, time) are shared by the whole tree; iterations are per run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Root-loop iterations per run.
    pub max_iterations: u32,
    /// Deepest level a child RLM may run at (the top-level run is depth 0). `rlm_query` from a run at this depth
    /// becomes a plain model call.
    pub max_depth: u32,
    /// Wall-clock limit for the whole tree.
    #[serde(with = "opt_secs", default)]
    pub timeout: Option<Duration>,
    /// Sub-calls (`llm_query` prompts and `rlm_query` children) for the whole tree.
    #[serde(default)]
    pub max_sub_calls: Option<u64>,
    /// Prompt + completion tokens for the whole tree.
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// US dollars for the whole tree. The engine stops when a model call is refused with
    /// [`rlm_protocol::Error::Budget`]; whoever runs the engine enforces it by wrapping the run's model client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost: Option<f64>,
    /// Wall-clock limit for one code cell.
    #[serde(with = "secs")]
    pub cell_timeout: Duration,
    /// Characters of one cell's output the model sees; the rest is cut with a note saying how much.
    pub max_output_chars: usize,
    /// Prompts of one `*_batched` call in flight at once.
    pub batch_concurrency: usize,
    /// Upper bound on tokens generated per model call, if any.
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_iterations: 30,
            max_depth: 1,
            timeout: None,
            max_sub_calls: None,
            max_tokens: None,
            max_cost: None,
            cell_timeout: Duration::from_secs(120),
            max_output_chars: 20_000,
            batch_concurrency: 16,
            max_output_tokens: None,
        }
    }
}

/// Whether a query is answered by one direct call or by the RLM loop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteMode {
    /// Direct when the whole context and the query fit the root model's window (known from `context_windows`),
    /// else the RLM. Without a known window, always the RLM.
    #[default]
    Auto,
    /// Always the RLM loop.
    Rlm,
    /// Always one direct call with the whole context.
    Direct,
}

impl RouteMode {
    /// The mode's name, as configuration and traces spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Rlm => "rlm",
            Self::Direct => "direct",
        }
    }
}

/// The instructions the root loop gets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptSettings {
    /// Which set of instructions the root model gets (`Auto`: chosen from the model's name).
    #[serde(default)]
    pub profile: PromptProfile,
    /// A system prompt that replaces the profile's. These placeholders are filled in: `{context_description}`,
    /// `{max_iterations}`, `{max_output_chars}`, `{sub_model}` and `{sub_prompt_chars}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_template: Option<String>,
}

/// Everything that configures an [`crate::Engine`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// The models of the root loops and sub-calls.
    pub models: ModelPlan,
    /// Budgets of a run tree.
    pub limits: Limits,
    /// Sampling temperature of every model call; `None` leaves it to the provider.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// The root loop's instructions.
    #[serde(default)]
    pub prompt: PromptSettings,
    /// Whether a top-level run may answer with one direct call instead of the RLM.
    #[serde(default)]
    pub route: RouteMode,
    /// Windows (prompt + reply, in tokens) of the models in use, by model name: routing and the prompts use them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub context_windows: BTreeMap<String, u64>,
    /// The longest direct prompt, in tokens, worth sending even when it fits the window; larger contexts go to the
    /// RLM. For models that read prompts slowly (a local model on a CPU reads tens of tokens a second, so a window
    /// of context costs minutes, while the RLM reads only what its code prints). `None`: up to the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_max_tokens: Option<u64>,
    /// When the root conversation is summarised to stay inside the root model's window.
    #[serde(default)]
    pub compaction: CompactionSettings,
}

/// When the root conversation is summarised to stay inside the root model's window (known from
/// `context_windows`; without a known window nothing is compacted).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CompactionSettings {
    /// Whether compaction runs at all.
    pub enabled: bool,
    /// Fraction of the window the next request (prompt plus room for the reply) may fill before older turns are
    /// summarised.
    pub threshold: f64,
}

impl Default for CompactionSettings {
    fn default() -> Self {
        Self { enabled: true, threshold: 0.85 }
    }
}

impl EngineConfig {
    /// Defaults for `root_model`: default limits, automatic profile and routing, no known windows.
    pub fn new(root_model: impl Into<String>) -> Self {
        Self {
            models: ModelPlan::new(root_model),
            limits: Limits::default(),
            temperature: None,
            prompt: PromptSettings::default(),
            route: RouteMode::Auto,
            context_windows: BTreeMap::new(),
            direct_max_tokens: None,
            compaction: CompactionSettings::default(),
        }
    }

    /// The window of `model` in tokens, when known.
    pub fn window(&self, model: &str) -> Option<u64> {
        self.context_windows.get(model).copied()
    }

    /// The output-token cap of calls made by a loop with `profile`.
    pub fn max_output_tokens(&self, profile: PromptProfile) -> Option<u32> {
        self.limits.max_output_tokens.or_else(|| profile.default_max_output_tokens())
    }
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(duration.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        Duration::try_from_secs_f64(f64::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

mod opt_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
        match duration {
            Some(d) => serializer.serialize_some(&d.as_secs_f64()),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(deserializer)?
            .map(|s| Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_fall_back_from_depth_list_to_sub_to_root() {
        let mut plan = ModelPlan::new("big");
        assert_eq!(plan.loop_model(0), "big");
        assert_eq!(plan.loop_model(1), "big");
        assert_eq!(plan.sub_model(), "big");
        plan.sub = Some("small".into());
        assert_eq!(plan.loop_model(0), "big");
        assert_eq!(plan.loop_model(1), "small");
        plan.per_depth = vec!["d0".into(), "d1".into()];
        assert_eq!(plan.loop_model(0), "d0");
        assert_eq!(plan.loop_model(1), "d1");
        assert_eq!(plan.loop_model(2), "small");
    }

    #[test]
    fn limits_round_trip_through_json_in_seconds() -> serde_json::Result<()> {
        let limits = Limits { timeout: Some(Duration::from_millis(1500)), ..Limits::default() };
        let json = serde_json::to_value(&limits)?;
        assert_eq!(json["timeout"], 1.5);
        assert_eq!(json["cell_timeout"], 120.0);
        assert_eq!(serde_json::from_value::<Limits>(json)?, limits);
        Ok(())
    }
}
