//! Model prices, so a cost can be computed for any provider (most OpenAI-compatible servers return tokens but no
//! cost). Prices are USD per 1,000 tokens. Cached prompt tokens (read from a provider's cache) and cache-write tokens
//! (written to it, as Anthropic bills them) are subsets of the prompt tokens and are charged at their own prices
//! instead of the prompt price. One table serves results, budgets and the trace store.

use std::collections::BTreeMap;
use std::path::Path;

use rlm_protocol::{Usage, UsageReport};
use serde::{Deserialize, Serialize};

use crate::ModelsError;
use crate::spec::{Provider, split_spec};

/// Price of one model in USD per 1,000 tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelPrice {
    pub prompt: f64,
    pub completion: f64,
    /// Price of prompt tokens served from the provider's cache; the prompt price when not given.
    #[serde(default)]
    pub cached: Option<f64>,
    /// Price of prompt tokens written to the provider's cache; the prompt price when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
}

impl ModelPrice {
    pub const fn new(prompt: f64, completion: f64, cached: f64) -> Self {
        Self { prompt, completion, cached: Some(cached), cache_write: None }
    }

    /// With a price for tokens written to the provider's cache.
    pub const fn with_cache_write(mut self, cache_write: f64) -> Self {
        self.cache_write = Some(cache_write);
        self
    }

    /// Cost in USD of `usage`.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_tokens.min(usage.prompt_tokens);
        let written = usage.cache_write_tokens.min(usage.prompt_tokens - cached);
        let plain = usage.prompt_tokens - cached - written;
        (plain as f64 * self.prompt
            + cached as f64 * self.cached.unwrap_or(self.prompt)
            + written as f64 * self.cache_write.unwrap_or(self.prompt)
            + usage.completion_tokens as f64 * self.completion)
            / 1000.0
    }
}

/// Built-in list prices (USD per 1K tokens: prompt, completion, cached prompt) of common models, as published by
/// their providers when this table was written. Override or extend them with a price file.
const DEFAULT_PRICES: &[(&str, ModelPrice)] = &[
    ("gpt-4o", ModelPrice::new(0.0025, 0.01, 0.00125)),
    ("gpt-4o-mini", ModelPrice::new(0.00015, 0.0006, 0.000075)),
    ("gpt-4.1", ModelPrice::new(0.002, 0.008, 0.0005)),
    ("gpt-4.1-mini", ModelPrice::new(0.0004, 0.0016, 0.0001)),
    ("gpt-4.1-nano", ModelPrice::new(0.0001, 0.0004, 0.000025)),
    ("gpt-5", ModelPrice::new(0.00125, 0.01, 0.000125)),
    ("gpt-5-mini", ModelPrice::new(0.00025, 0.002, 0.000025)),
    ("gpt-5-nano", ModelPrice::new(0.00005, 0.0004, 0.000005)),
    ("o3", ModelPrice::new(0.002, 0.008, 0.0005)),
    ("o4-mini", ModelPrice::new(0.0011, 0.0044, 0.000275)),
    // Anthropic bills 5-minute cache writes at 1.25x and cache reads at 0.1x the prompt price.
    ("claude-opus-4", ModelPrice::new(0.015, 0.075, 0.0015).with_cache_write(0.01875)),
    ("claude-opus-4-5", ModelPrice::new(0.005, 0.025, 0.0005).with_cache_write(0.00625)),
    ("claude-sonnet-4", ModelPrice::new(0.003, 0.015, 0.0003).with_cache_write(0.00375)),
    ("claude-sonnet-4-5", ModelPrice::new(0.003, 0.015, 0.0003).with_cache_write(0.00375)),
    ("claude-haiku-4-5", ModelPrice::new(0.001, 0.005, 0.0001).with_cache_write(0.00125)),
    ("claude-3-7-sonnet", ModelPrice::new(0.003, 0.015, 0.0003).with_cache_write(0.00375)),
    ("claude-3-5-sonnet", ModelPrice::new(0.003, 0.015, 0.0003).with_cache_write(0.00375)),
    ("claude-3-5-haiku", ModelPrice::new(0.0008, 0.004, 0.00008).with_cache_write(0.001)),
    ("gemini-2.5-pro", ModelPrice::new(0.00125, 0.01, 0.00031)),
    ("gemini-2.5-flash", ModelPrice::new(0.0003, 0.0025, 0.000075)),
    ("gemini-2.5-flash-lite", ModelPrice::new(0.0001, 0.0004, 0.000025)),
];

/// A price table: exact model names first, then the longest known name that the model name starts with (so
/// `gpt-4o-2024-08-06` costs as `gpt-4o`, and `gpt-4o-mini-...` as `gpt-4o-mini`). A spec prefix such as
/// `anthropic:` and a router prefix such as `openai/` are ignored when the full name is unknown. Models without a
/// price get no cost (NULL), never 0.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Prices {
    models: BTreeMap<String, ModelPrice>,
}

impl Prices {
    /// The built-in defaults.
    pub fn builtin() -> Self {
        Self { models: DEFAULT_PRICES.iter().map(|(name, price)| ((*name).to_owned(), *price)).collect() }
    }

    /// No prices at all.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The defaults, overridden by the price file at `path` when one is given.
    pub fn load(path: Option<&Path>) -> Result<Self, ModelsError> {
        let mut prices = Self::builtin();
        if let Some(path) = path {
            prices.merge(Self::from_file(path)?);
        }
        Ok(prices)
    }

    /// Reads a JSON price file: `{"model": {"prompt": 0.001, "completion": 0.002, "cached": 0.0005,
    /// "cache_write": 0.00125}, ...}` (USD per 1K tokens; `cached` and `cache_write` optional).
    pub fn from_file(path: &Path) -> Result<Self, ModelsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ModelsError::Prices(format!("cannot read price file {}: {e}", path.display())))?;
        Self::from_json(&text).map_err(|e| ModelsError::Prices(format!("price file {}: {e}", path.display())))
    }

    pub fn from_json(text: &str) -> Result<Self, ModelsError> {
        let models: BTreeMap<String, ModelPrice> =
            serde_json::from_str(text).map_err(|e| ModelsError::Prices(format!("invalid price table: {e}")))?;
        for (name, price) in &models {
            let values = [Some(price.prompt), Some(price.completion), price.cached, price.cache_write];
            if values.into_iter().flatten().any(|v| !v.is_finite() || v < 0.0) {
                return Err(ModelsError::Prices(format!("price of {name} must be finite and not negative")));
            }
        }
        Ok(Self { models })
    }

    /// Adds or replaces the prices of `other`'s models.
    pub fn merge(&mut self, other: Self) {
        self.models.extend(other.models);
    }

    pub fn set(&mut self, model: impl Into<String>, price: ModelPrice) {
        self.models.insert(model.into(), price);
    }

    /// The price of `model`, if known. A `local:` model runs on this machine and costs nothing per token, unless
    /// the table gives it a price.
    pub fn get(&self, model: &str) -> Option<&ModelPrice> {
        static FREE: ModelPrice = ModelPrice::new(0.0, 0.0, 0.0);
        let (provider, unprefixed) = split_spec(model);
        [model, unprefixed]
            .into_iter()
            .find_map(|name| {
                self.lookup(name).or_else(|| name.rsplit_once('/').and_then(|(_, bare)| self.lookup(bare)))
            })
            .or_else(|| (provider == Provider::Local).then_some(&FREE))
    }

    fn lookup(&self, model: &str) -> Option<&ModelPrice> {
        if let Some(price) = self.models.get(model) {
            return Some(price);
        }
        self.models
            .iter()
            .filter(|(name, _)| {
                model.strip_prefix(name.as_str()).is_some_and(|rest| rest.starts_with(['-', ':', '@', '.']))
            })
            .max_by_key(|(name, _)| name.len())
            .map(|(_, price)| price)
    }

    /// Cost of `usage` of `model`, or `None` when the model has no price.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<f64> {
        self.get(model).map(|price| price.cost(usage))
    }

    /// Cost of a whole usage report (every model in it); `None` when any model with tokens has no price.
    pub fn report_cost(&self, report: &UsageReport) -> Option<f64> {
        report.by_model.iter().try_fold(0.0, |sum, (model, usage)| {
            if usage.total_tokens() == 0 {
                return Some(sum);
            }
            self.cost(model, usage).map(|cost| sum + cost)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(prompt: u64, completion: u64, cached: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_tokens: cached,
            calls: 1,
            ..Usage::default()
        }
    }

    #[test]
    fn cost_charges_cached_tokens_at_the_cached_price() {
        let price = ModelPrice::new(0.002, 0.008, 0.0005);
        // 1000 uncached prompt + 1000 cached + 500 completion tokens.
        let cost = price.cost(&usage(2000, 500, 1000));
        assert!((cost - (0.002 + 0.0005 + 0.004)).abs() < 1e-12, "{cost}");
        let no_cached_price = ModelPrice { prompt: 0.001, completion: 0.0, cached: None, cache_write: None };
        assert!((no_cached_price.cost(&usage(1000, 0, 400)) - 0.001).abs() < 1e-12);
        // Anthropic: 1000 read from the cache, 1000 written to it, 1000 plain.
        let sonnet = Prices::builtin().get("anthropic:claude-sonnet-4-5-20250929").copied().unwrap();
        let anthropic = Usage { cache_write_tokens: 1000, ..usage(3000, 0, 1000) };
        assert!((sonnet.cost(&anthropic) - (0.003 + 0.0003 + 0.00375)).abs() < 1e-12);
    }

    #[test]
    fn a_local_model_is_free_unless_the_table_prices_it() {
        let mut prices = Prices::builtin();
        assert_eq!(prices.cost("local:qwen2.5-coder-1.5b", &usage(4000, 2000, 0)), Some(0.0));
        assert_eq!(prices.cost("local:/models/any.gguf", &usage(4000, 2000, 0)), Some(0.0));
        assert_eq!(prices.cost("qwen2.5-coder-1.5b", &usage(4000, 2000, 0)), None, "a served model has no known price");
        prices.set("local:qwen2.5-coder-1.5b", ModelPrice::new(0.001, 0.001, 0.0));
        assert_eq!(prices.cost("local:qwen2.5-coder-1.5b", &usage(1000, 1000, 0)), Some(0.002));
    }

    #[test]
    fn lookup_is_exact_then_longest_prefix_then_without_provider() {
        let prices = Prices::builtin();
        assert_eq!(prices.get("gpt-4o-mini"), Some(&ModelPrice::new(0.00015, 0.0006, 0.000075)));
        assert_eq!(prices.get("gpt-4o-mini-2024-07-18"), prices.get("gpt-4o-mini"));
        assert_eq!(prices.get("gpt-4o-2024-08-06"), prices.get("gpt-4o"));
        assert_eq!(prices.get("openai/gpt-4.1-nano"), prices.get("gpt-4.1-nano"));
        assert_eq!(prices.get("openai:gpt-4o"), prices.get("gpt-4o"));
        assert_eq!(prices.get("gemini:gemini-2.5-flash-lite").map(|p| p.prompt), Some(0.0001));
        assert_eq!(prices.get("anthropic:claude-opus-4-5").map(|p| p.prompt), Some(0.005));
        assert_eq!(prices.get("anthropic:claude-opus-4-1").map(|p| p.prompt), Some(0.015));
        assert_eq!(prices.get("gpt-4o1"), None, "a prefix must end at a separator");
        assert_eq!(prices.get("qwen2.5-coder"), None);
        assert_eq!(prices.cost("unknown-model", &usage(10, 10, 0)), None);
    }

    #[test]
    fn a_price_file_overrides_and_extends_the_defaults() -> Result<(), ModelsError> {
        let mut prices = Prices::builtin();
        prices.merge(Prices::from_json(
            r#"{"gpt-4o": {"prompt": 1.0, "completion": 2.0}, "local-qwen": {"prompt": 0, "completion": 0.5, "cached": 0}}"#,
        )?);
        let cost = prices.cost("gpt-4o", &usage(1000, 1000, 500)).unwrap_or_default();
        assert!((cost - 3.0).abs() < 1e-12, "cached falls back to the prompt price: {cost}");
        let local = prices.cost("local-qwen", &usage(4000, 2000, 0)).unwrap_or_default();
        assert!((local - 1.0).abs() < 1e-12);
        assert!(Prices::from_json(r#"{"x": {"prompt": -1, "completion": 0}}"#).is_err());
        assert!(Prices::from_json("not json").is_err());

        let mut report = UsageReport::default();
        report.add("gpt-4o", usage(1000, 0, 0));
        report.add("local-qwen", usage(0, 2000, 0));
        assert!((prices.report_cost(&report).unwrap_or_default() - 2.0).abs() < 1e-12);
        report.add("nameless", usage(1, 1, 0));
        assert_eq!(prices.report_cost(&report), None);
        Ok(())
    }

    #[test]
    fn load_reads_a_file() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("prices.json");
        std::fs::write(&path, r#"{"my-model": {"prompt": 0.01, "completion": 0.02, "cached": 0.001}}"#)?;
        let prices = Prices::load(Some(&path))?;
        assert!(prices.get("my-model").is_some());
        assert!(prices.get("gpt-4o").is_some(), "defaults stay");
        assert!(Prices::load(Some(&dir.path().join("missing.json"))).is_err());
        Ok(())
    }
}
