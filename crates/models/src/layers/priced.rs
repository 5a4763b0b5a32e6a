//! Puts a price on every response: `usage.cost_usd` from the price table, by the requested spec (then by the model
//! name the provider reported).

use std::sync::Arc;

use async_trait::async_trait;
use rlm_protocol::{ModelClient, ModelRequest, ModelResponse, Result};

use crate::Prices;

#[derive(Debug)]
pub struct Priced {
    inner: Arc<dyn ModelClient>,
    prices: Arc<Prices>,
}

impl Priced {
    pub fn new(inner: Arc<dyn ModelClient>, prices: Arc<Prices>) -> Self {
        Self { inner, prices }
    }
}

#[async_trait]
impl ModelClient for Priced {
    async fn complete(&self, request: ModelRequest) -> Result<ModelResponse> {
        let requested = request.model.clone();
        let mut response = self.inner.complete(request).await?;
        if response.usage.cost_usd.is_none() {
            let price = self.prices.get(&requested).or_else(|| self.prices.get(&response.model));
            response.usage.cost_usd = price.map(|price| price.cost(&response.usage));
        }
        Ok(response)
    }
}
