//! How a run's model client is put together: the provider router (or a replay), then prices, the response cache
//! and the recorder as layers; a dollar budget is added per run.

use std::path::PathBuf;
use std::sync::Arc;

use rlm_models::layers::{CacheMode, Priced, Recorder, Replayer, ResponseCache};
use rlm_models::{ModelSpec, Prices, Provider, ProviderSettings};
use rlm_protocol::ModelClient;

use crate::RlmError;

/// The client layers a builder was asked for.
#[derive(Debug, Clone, Default)]
pub(crate) struct LayerSettings {
    pub prices: Option<Arc<Prices>>,
    pub cache: Option<(PathBuf, CacheMode)>,
    pub record: Option<PathBuf>,
    pub replay: Option<PathBuf>,
}

impl LayerSettings {
    pub fn prices(&self) -> Arc<Prices> {
        self.prices.clone().unwrap_or_else(|| Arc::new(Prices::builtin()))
    }

    /// `base` with prices, the cache and the recorder on top (outermost last).
    pub fn wrap(&self, base: Arc<dyn ModelClient>) -> Result<Arc<dyn ModelClient>, RlmError> {
        let mut client: Arc<dyn ModelClient> = Arc::new(Priced::new(base, self.prices()));
        if let Some((dir, mode)) = &self.cache {
            client = Arc::new(ResponseCache::new(client, dir, *mode)?);
        }
        if let Some(path) = &self.record {
            client = Arc::new(Recorder::create(client, path)?);
        }
        Ok(client)
    }

    /// The replaying client, when a recording is to be replayed.
    pub fn replayer(&self) -> Result<Option<Arc<dyn ModelClient>>, RlmError> {
        match &self.replay {
            Some(path) => Ok(Some(Arc::new(Replayer::open(path)?))),
            None => Ok(None),
        }
    }
}

/// Checks every model a run may use before any request: specs must parse, native providers need their keys, and
/// a cost budget needs a price for each model.
pub(crate) fn check_models(
    models: &[&str],
    providers: &ProviderSettings,
    max_cost: Option<f64>,
    prices: &Prices,
    needs_keys: bool,
) -> Result<(), RlmError> {
    for model in models {
        ModelSpec::parse(model)?;
        if needs_keys {
            providers.check(model)?;
        }
    }
    if let Some(max) = max_cost {
        if !max.is_finite() || max <= 0.0 {
            return Err(RlmError::Config(format!("max_cost must be a positive number of US dollars, got {max}")));
        }
        if let Some(unpriced) = models.iter().find(|model| prices.get(model).is_none()) {
            return Err(RlmError::Config(format!(
                "--max-cost needs the price of every model, and {unpriced} has none: add it to a price file \
                 (--prices FILE or RLM_PRICES; USD per 1K tokens, see docs/providers.md)"
            )));
        }
    }
    Ok(())
}

/// Whether any of `models` is reached through the OpenAI-compatible endpoint.
pub(crate) fn uses_openai(models: &[&str]) -> bool {
    models.iter().any(|model| ModelSpec::parse(model).is_ok_and(|spec| spec.provider == Provider::OpenAi))
}
