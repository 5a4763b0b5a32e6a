use std::collections::BTreeMap;
use std::ops::AddAssign;

use serde::{Deserialize, Serialize};

/// Token counts and cost of one or more model calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the prompts.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
    /// Prompt tokens the provider served from its cache (a subset of `prompt_tokens`).
    #[serde(default)]
    pub cached_tokens: u64,
    /// Number of model calls these tokens came from.
    #[serde(default)]
    pub calls: u64,
    /// Prompt tokens the provider wrote to its cache (Anthropic's `cache_creation_input_tokens`; a subset of
    /// `prompt_tokens`, billed above the plain prompt price).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
    /// Calls answered from rlm's own response cache, without the network (counted in `calls`, with no tokens).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_hits: u64,
    /// Cost in US dollars; `None` when some call had no known price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl Usage {
    /// Prompt and completion tokens together.
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

impl AddAssign for Usage {
    fn add_assign(&mut self, other: Self) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cached_tokens += other.cached_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.cache_hits += other.cache_hits;
        // Empty usage has no cost to poison the sum with; otherwise an unknown cost makes the total unknown.
        self.cost_usd = match (self.calls == 0, other.calls == 0) {
            (_, true) => self.cost_usd,
            (true, false) => other.cost_usd,
            (false, false) => self.cost_usd.zip(other.cost_usd).map(|(a, b)| a + b),
        };
        self.calls += other.calls;
    }
}

/// Usage summed over a whole recursive run tree, in total and per model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    /// All models together.
    pub total: Usage,
    /// Per model name.
    pub by_model: BTreeMap<String, Usage>,
}

impl UsageReport {
    /// Counts `usage` of a call to `model`.
    pub fn add(&mut self, model: &str, usage: Usage) {
        self.total += usage;
        *self.by_model.entry(model.to_owned()).or_default() += usage;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_sums_per_model_and_in_total() {
        let mut report = UsageReport::default();
        let one = Usage { prompt_tokens: 10, completion_tokens: 2, cached_tokens: 4, calls: 1, ..Usage::default() };
        report.add("a", one);
        report.add("b", one);
        report.add("a", one);
        assert_eq!(report.total.prompt_tokens, 30);
        assert_eq!(report.total.calls, 3);
        assert_eq!(report.by_model["a"].completion_tokens, 4);
        assert_eq!(report.by_model["b"].cached_tokens, 4);
        assert_eq!(report.total.total_tokens(), 36);
        assert_eq!(report.total.cost_usd, None, "no call had a price");
    }

    #[test]
    fn costs_add_up_and_an_unknown_cost_makes_the_sum_unknown() {
        let priced = |cost: f64| Usage { prompt_tokens: 1, calls: 1, cost_usd: Some(cost), ..Usage::default() };
        let mut total = Usage::default();
        total += priced(0.25);
        total += priced(0.5);
        total += Usage::default();
        assert_eq!(total.cost_usd, Some(0.75));
        assert_eq!(total.calls, 2);
        total += Usage { calls: 1, ..Usage::default() };
        assert_eq!(total.cost_usd, None);
        let json = serde_json::to_value(priced(0.1)).unwrap_or_default();
        assert_eq!(json["cost_usd"], 0.1);
        assert!(json.get("cache_hits").is_none(), "zero counters stay out of traces: {json}");
    }
}
