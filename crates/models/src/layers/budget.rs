//! A budget in US dollars over every call made through it (one run tree wraps its client in one).
//!
//! Before a call, its cost is estimated: the prompt at about four characters a token, the part of the prompt an
//! earlier call already sent at the cached price (providers cache repeated prefixes), and the output cap at the
//! completion price. A call the rest of the budget cannot afford is refused with [`Error::Budget`]. Without an
//! output cap only the prompt can be estimated, so a call may cross the budget; every call after it is refused.
//! Calls in flight hold their estimate, so concurrent sub-calls cannot overspend together.
//!
//! Until it first refuses a call, the budget also keeps room for one more call of the same estimate: a run that hits
//! the budget asks its model once more for its best answer, and that call should still be affordable. After the
//! first refusal the reserve is released.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use rlm_protocol::{Error, ModelClient, ModelRequest, ModelResponse, Result, Usage};

use crate::Prices;

#[derive(Debug)]
pub struct Budget {
    inner: Arc<dyn ModelClient>,
    prices: Arc<Prices>,
    max_usd: f64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    spent: f64,
    /// Estimates of calls in flight.
    reserved: f64,
    /// Hashes of (model, message prefix) already sent.
    seen_prefixes: HashSet<u64>,
    /// Whether a call has been refused, which releases the reserve kept for the final answer.
    refused: bool,
}

impl Budget {
    pub fn new(inner: Arc<dyn ModelClient>, prices: Arc<Prices>, max_usd: f64) -> Self {
        Self { inner, prices, max_usd, state: Mutex::new(State::default()) }
    }

    /// Dollars spent so far.
    pub fn spent(&self) -> f64 {
        self.lock().spent
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hashes of every message prefix of `request`, shortest first.
    fn prefix_hashes(request: &ModelRequest) -> Vec<u64> {
        let mut hasher = DefaultHasher::new();
        request.model.hash(&mut hasher);
        request
            .messages
            .iter()
            .map(|message| {
                message.role.hash(&mut hasher);
                message.content.hash(&mut hasher);
                hasher.finish()
            })
            .collect()
    }

    /// The estimated cost of `request`, with `seen` telling which message prefixes were sent before.
    fn estimate(&self, request: &ModelRequest, seen: &HashSet<u64>) -> Result<f64> {
        let Some(price) = self.prices.get(&request.model) else {
            return Err(Error::InvalidInput(format!(
                "the model {} has no price, so a cost budget cannot count it; give it one in a price file \
                 (--prices or RLM_PRICES)",
                request.model
            )));
        };
        let hashes = Self::prefix_hashes(request);
        let cached_messages = hashes.iter().rposition(|hash| seen.contains(hash)).map_or(0, |i| i + 1);
        let tokens = |messages: &[rlm_protocol::ChatMessage]| -> u64 {
            messages.iter().map(|m| (m.content.len() as u64).div_ceil(4) + 4).sum()
        };
        let cached = tokens(&request.messages[..cached_messages]);
        let usage = Usage {
            prompt_tokens: cached + tokens(&request.messages[cached_messages..]),
            cached_tokens: cached,
            completion_tokens: request.max_output_tokens.map_or(0, u64::from),
            calls: 1,
            ..Usage::default()
        };
        Ok(price.cost(&usage))
    }
}

#[async_trait]
impl ModelClient for Budget {
    async fn complete(&self, request: ModelRequest) -> Result<ModelResponse> {
        let estimate = {
            let mut state = self.lock();
            let estimate = self.estimate(&request, &state.seen_prefixes)?;
            let committed = state.spent + state.reserved;
            if state.spent >= self.max_usd {
                return Err(Error::Budget(format!(
                    "the cost budget of ${} is spent (${:.6} so far)",
                    self.max_usd, state.spent
                )));
            }
            let left = (self.max_usd - committed).max(0.0);
            if committed + estimate > self.max_usd {
                state.refused = true;
                return Err(Error::Budget(format!(
                    "a call to {} would cost about ${estimate:.6}, more than the ${left:.6} left of the ${} budget",
                    request.model, self.max_usd
                )));
            }
            if !state.refused && committed + 2.0 * estimate > self.max_usd {
                state.refused = true;
                return Err(Error::Budget(format!(
                    "a call to {} would cost about ${estimate:.6}; the ${left:.6} left of the ${} budget is kept for \
                     the final answer",
                    request.model, self.max_usd
                )));
            }
            state.reserved += estimate;
            estimate
        };
        let hashes = Self::prefix_hashes(&request);
        // The request itself goes to the inner client: a prompt of megabytes is not copied to keep its model name.
        let model = request.model.clone();
        let outcome = self.inner.complete(request).await;
        let mut state = self.lock();
        state.reserved = (state.reserved - estimate).max(0.0);
        let response = outcome?;
        let cost = response.usage.cost_usd.or_else(|| {
            let price = self.prices.get(&model).or_else(|| self.prices.get(&response.model));
            price.map(|price| price.cost(&response.usage))
        });
        // The estimate stands in for a cost nobody can compute (the price was checked before the call).
        state.spent += cost.unwrap_or(estimate);
        state.seen_prefixes.extend(hashes);
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use rlm_protocol::ChatMessage;

    use super::*;
    use crate::ModelPrice;
    use crate::layers::FixedUsage;

    /// Every call: 1,000 prompt and 100 completion tokens.
    fn fixed() -> Arc<FixedUsage> {
        Arc::new(FixedUsage(Usage { prompt_tokens: 1000, completion_tokens: 100, calls: 1, ..Usage::default() }))
    }

    fn prices() -> Arc<Prices> {
        let mut prices = Prices::empty();
        // $1 per 1K prompt tokens, $10 per 1K completion tokens, cached $0.10.
        prices.set("m", ModelPrice::new(1.0, 10.0, 0.1));
        Arc::new(prices)
    }

    fn request(text: &str, cap: Option<u32>) -> ModelRequest {
        ModelRequest {
            model: "m".into(),
            messages: vec![ChatMessage::user(text)].into(),
            max_output_tokens: cap,
            temperature: None,
        }
    }

    #[tokio::test]
    async fn a_call_crossing_the_budget_is_the_last() {
        // Each call costs $1 + $1 = $2; without a cap only ~$0.005 is estimated up front.
        let budget = Budget::new(fixed(), prices(), 3.0);
        budget.complete(request("a", None)).await.unwrap();
        budget.complete(request("b", None)).await.unwrap();
        assert!((budget.spent() - 4.0).abs() < 1e-9);
        let err = budget.complete(request("c", None)).await.unwrap_err();
        assert!(matches!(err, Error::Budget(_)), "{err}");
        assert!(err.to_string().contains("is spent"), "{err}");
    }

    #[tokio::test]
    async fn an_unaffordable_call_is_refused_before_it_is_made() {
        let budget = Budget::new(fixed(), prices(), 3.0);
        // A 1,000-token output cap alone would cost $10.
        let err = budget.complete(request("a", Some(1000))).await.unwrap_err();
        assert!(err.to_string().contains("would cost about $10.00"), "{err}");
        assert_eq!(budget.spent(), 0.0);
        let unpriced = ModelRequest { model: "free?".into(), ..request("a", None) };
        let err = budget.complete(unpriced).await.unwrap_err();
        assert!(err.to_string().contains("has no price"), "{err}");
    }

    #[tokio::test]
    async fn room_for_one_more_call_is_kept_until_the_first_refusal() {
        // Each capped call is estimated at about $10; $15 affords one, but not one plus the reserve.
        let budget = Budget::new(fixed(), prices(), 15.0);
        let err = budget.complete(request("a", Some(1000))).await.unwrap_err();
        assert!(err.to_string().contains("kept for the final answer"), "{err}");
        assert_eq!(budget.spent(), 0.0);
        budget.complete(request("final", Some(1000))).await.unwrap();
        assert!((budget.spent() - 2.0).abs() < 1e-9);
    }

    #[test]
    fn repeated_prefixes_are_estimated_at_the_cached_price() {
        let budget = Budget::new(fixed(), prices(), 100.0);
        let long = "x".repeat(3984);
        let first = ModelRequest { messages: vec![ChatMessage::user(&long)].into(), ..request("", None) };
        let mut seen = HashSet::new();
        let fresh = budget.estimate(&first, &seen).unwrap();
        assert!((fresh - 1.0).abs() < 1e-9, "{fresh}");
        seen.extend(Budget::prefix_hashes(&first));
        let mut second = first.clone();
        std::sync::Arc::make_mut(&mut second.messages).push(ChatMessage::assistant("y"));
        let grown = budget.estimate(&second, &seen).unwrap();
        assert!((grown - (0.1 + 0.005)).abs() < 1e-9, "{grown}");
    }
}
