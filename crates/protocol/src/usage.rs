use std::collections::BTreeMap;
use std::ops::AddAssign;

use serde::{Deserialize, Serialize};

/// Token counts of one or more model calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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
        self.calls += other.calls;
    }
}

/// Usage summed over a whole recursive run tree, in total and per model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
        let one = Usage { prompt_tokens: 10, completion_tokens: 2, cached_tokens: 4, calls: 1 };
        report.add("a", one);
        report.add("b", one);
        report.add("a", one);
        assert_eq!(report.total.prompt_tokens, 30);
        assert_eq!(report.total.calls, 3);
        assert_eq!(report.by_model["a"].completion_tokens, 4);
        assert_eq!(report.by_model["b"].cached_tokens, 4);
        assert_eq!(report.total.total_tokens(), 36);
    }
}
