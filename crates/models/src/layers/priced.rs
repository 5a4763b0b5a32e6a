//! Puts a price on every response: `usage.cost_usd` from the price table, by the requested spec (then by the model
//! name the provider reported).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use rlm_protocol::{ModelClient, ModelRequest, ModelResponse, Result};

use crate::{ModelPrice, Prices};

/// How many model names a client remembers prices for (a run uses a few; a client shared by a service may see
/// more, and the others are looked up each time).
const REMEMBERED_MODELS: usize = 64;

#[derive(Debug)]
pub struct Priced {
    inner: Arc<dyn ModelClient>,
    prices: Arc<Prices>,
    /// Prices found per model name: a name without an exact entry costs a scan of the whole table, on every call.
    found: Mutex<HashMap<String, Option<ModelPrice>>>,
}

impl Priced {
    pub fn new(inner: Arc<dyn ModelClient>, prices: Arc<Prices>) -> Self {
        Self { inner, prices, found: Mutex::new(HashMap::new()) }
    }

    fn price(&self, model: &str) -> Option<ModelPrice> {
        let mut found = self.found.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(price) = found.get(model) {
            return *price;
        }
        let price = self.prices.get(model).copied();
        if found.len() < REMEMBERED_MODELS {
            found.insert(model.to_owned(), price);
        }
        price
    }
}

#[async_trait]
impl ModelClient for Priced {
    async fn complete(&self, request: ModelRequest) -> Result<ModelResponse> {
        let requested = request.model.clone();
        let mut response = self.inner.complete(request).await?;
        if response.usage.cost_usd.is_none() {
            let price = self.price(&requested).or_else(|| self.price(&response.model));
            response.usage.cost_usd = price.map(|price| price.cost(&response.usage));
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use rlm_protocol::{ChatMessage, Usage};

    use super::*;
    use crate::layers::FixedUsage;

    fn usage() -> Usage {
        Usage { prompt_tokens: 1000, completion_tokens: 1000, calls: 1, ..Usage::default() }
    }

    fn ask(model: &str) -> ModelRequest {
        ModelRequest {
            model: model.to_owned(),
            messages: vec![ChatMessage::user("q")].into(),
            max_output_tokens: None,
            temperature: None,
        }
    }

    #[tokio::test]
    async fn remembered_prices_are_the_table_s_and_the_memory_stays_bounded() {
        let prices = Arc::new(Prices::builtin());
        let priced = Priced::new(Arc::new(FixedUsage(usage())), prices.clone());
        let expected = prices.get("gpt-4o-mini-2024-07-18").map(|price| price.cost(&usage()));
        assert!(expected.is_some_and(|cost| cost > 0.0));
        for _ in 0..3 {
            let cost = priced.complete(ask("gpt-4o-mini-2024-07-18")).await.unwrap().usage.cost_usd;
            assert_eq!(cost, expected);
            assert_eq!(priced.complete(ask("no-such-model")).await.unwrap().usage.cost_usd, None);
        }
        for n in 0..2 * REMEMBERED_MODELS {
            priced.complete(ask(&format!("unpriced-{n}"))).await.unwrap();
        }
        assert_eq!(priced.found.lock().unwrap().len(), REMEMBERED_MODELS);
        // Names past the limit are still priced, by looking them up each time.
        let cost = priced.complete(ask("gpt-4o-mini")).await.unwrap().usage.cost_usd;
        assert_eq!(cost, prices.get("gpt-4o-mini").map(|price| price.cost(&usage())));
    }
}
