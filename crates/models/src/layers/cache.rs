//! A content-addressed cache of model responses on disk: the key is a SHA-256 of provider, model, messages and
//! parameters. A hit skips the network, costs nothing and is marked in its usage (`cache_hits`), so traces show it.
//! Sampling at a temperature above 0 gives a different answer each time, so such requests bypass the cache unless
//! it is forced.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use rlm_protocol::{ModelClient, ModelRequest, ModelResponse, Result, Usage};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::canonical_request;
use crate::ModelsError;

/// Which requests the cache serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// Requests without a temperature or at temperature 0.
    #[default]
    Deterministic,
    /// Every request, whatever its temperature.
    Forced,
}

/// The hex SHA-256 key of `request`.
pub fn cache_key(request: &ModelRequest) -> String {
    let digest = Sha256::digest(canonical_request(request).to_string().as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[derive(Serialize, Deserialize)]
struct Entry {
    request: ModelRequest,
    response: ModelResponse,
}

#[derive(Debug)]
pub struct ResponseCache {
    inner: Arc<dyn ModelClient>,
    dir: PathBuf,
    mode: CacheMode,
}

impl ResponseCache {
    /// Creates `dir` if needed.
    pub fn new(inner: Arc<dyn ModelClient>, dir: impl Into<PathBuf>, mode: CacheMode) -> Result<Self, ModelsError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)
            .map_err(|e| ModelsError::Io { path: dir.clone(), reason: format!("cannot create the cache: {e}") })?;
        Ok(Self { inner, dir, mode })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(&key[..2]).join(format!("{key}.json"))
    }

    fn cacheable(&self, request: &ModelRequest) -> bool {
        self.mode == CacheMode::Forced || request.temperature.is_none_or(|t| t <= 0.0)
    }

    fn read(&self, path: &Path, request: &ModelRequest) -> Option<ModelResponse> {
        let bytes = std::fs::read(path).ok()?;
        let entry: Entry = serde_json::from_slice(&bytes).ok()?;
        // A hash collision or a hand-edited file must not answer a different request.
        (canonical_request(&entry.request) == canonical_request(request)).then_some(entry.response)
    }

    fn write(&self, path: &Path, entry: &Entry) -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(dir)?;
        // Written aside and renamed, so a concurrent reader never sees half an entry.
        let partial = path.with_extension(format!("{:016x}.partial", fastrand::u64(..)));
        let written = std::fs::File::create(&partial).and_then(|mut file| {
            file.write_all(&serde_json::to_vec(entry).map_err(std::io::Error::other)?)?;
            file.sync_all()
        });
        let renamed = written.and_then(|()| std::fs::rename(&partial, path));
        if renamed.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        renamed
    }
}

#[async_trait]
impl ModelClient for ResponseCache {
    async fn complete(&self, request: ModelRequest) -> Result<ModelResponse> {
        if !self.cacheable(&request) {
            return self.inner.complete(request).await;
        }
        let path = self.path(&cache_key(&request));
        if let Some(stored) = self.read(&path, &request) {
            let usage = Usage { calls: 1, cache_hits: 1, cost_usd: Some(0.0), ..Usage::default() };
            return Ok(ModelResponse { usage, ..stored });
        }
        let response = self.inner.complete(request.clone()).await?;
        let entry = Entry { request, response };
        // The cache only saves money; failing to write it must not fail the call.
        if let Err(err) = self.write(&path, &entry) {
            tracing::warn!(path = %path.display(), "could not write the response cache: {err}");
        }
        Ok(entry.response)
    }
}
