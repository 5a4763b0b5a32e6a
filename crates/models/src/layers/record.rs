//! Recording every model exchange as JSONL, and serving a recording back without any network: for tests, bug
//! reports and benchmarks. A line is `{"request": ..., "response": ...}` or `{"request": ..., "error": ...}`.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use rlm_protocol::{Error, ModelClient, ModelRequest, ModelResponse, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{canonical_request, describe};
use crate::ModelsError;

#[derive(Debug, Serialize, Deserialize)]
struct Exchange {
    request: ModelRequest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response: Option<ModelResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<Error>,
}

/// Passes every request on and appends the exchange to a JSONL file (created or truncated).
#[derive(Debug)]
pub struct Recorder {
    inner: Arc<dyn ModelClient>,
    path: PathBuf,
    file: Mutex<File>,
}

impl Recorder {
    pub fn create(inner: Arc<dyn ModelClient>, path: impl Into<PathBuf>) -> Result<Self, ModelsError> {
        let path = path.into();
        let file = File::create(&path)
            .map_err(|e| ModelsError::Io { path: path.clone(), reason: format!("cannot create the recording: {e}") })?;
        Ok(Self { inner, path, file: Mutex::new(file) })
    }
}

#[async_trait]
impl ModelClient for Recorder {
    async fn complete(&self, request: ModelRequest) -> Result<ModelResponse> {
        let outcome = self.inner.complete(request.clone()).await;
        let exchange =
            Exchange { request, response: outcome.as_ref().ok().cloned(), error: outcome.as_ref().err().cloned() };
        let mut line = serde_json::to_vec(&exchange).map_err(|e| Error::Io(e.to_string()))?;
        line.push(b'\n');
        // One write per line under the lock: concurrent calls never interleave within a line.
        let written = self.file.lock().unwrap_or_else(PoisonError::into_inner).write_all(&line);
        written.map_err(|e| Error::Io(format!("cannot write the recording {}: {e}", self.path.display())))?;
        outcome
    }
}

/// Answers from a recording, never from the network. Requests are matched exactly (provider, model, messages and
/// parameters); identical requests get their recorded answers in order. A request the recording does not have is
/// an error that names it.
#[derive(Debug)]
pub struct Replayer {
    path: PathBuf,
    entries: Vec<(Value, std::result::Result<ModelResponse, Error>)>,
    used: Mutex<Vec<bool>>,
}

impl Replayer {
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, ModelsError> {
        let path = path.into();
        let io = |reason: String| ModelsError::Io { path: path.clone(), reason };
        let file = File::open(&path).map_err(|e| io(format!("cannot open the recording: {e}")))?;
        let mut entries = Vec::new();
        for (number, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| io(format!("cannot read the recording: {e}")))?;
            if line.trim().is_empty() {
                continue;
            }
            let exchange: Exchange = serde_json::from_str(&line)
                .map_err(|e| io(format!("line {} is not a recorded exchange: {e}", number + 1)))?;
            let outcome = match (exchange.response, exchange.error) {
                (Some(response), _) => Ok(response),
                (None, Some(error)) => Err(error),
                (None, None) => return Err(io(format!("line {} has neither a response nor an error", number + 1))),
            };
            entries.push((canonical_request(&exchange.request), outcome));
        }
        let used = Mutex::new(vec![false; entries.len()]);
        Ok(Self { path, entries, used })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Exchanges in the recording.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[async_trait]
impl ModelClient for Replayer {
    async fn complete(&self, request: ModelRequest) -> Result<ModelResponse> {
        let key = canonical_request(&request);
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        let matching = || self.entries.iter().enumerate().filter(|(_, (recorded, _))| *recorded == key);
        // The first unused answer; once all are used, the last one again (the same request, the same answer).
        let found = matching().find(|(index, _)| !used[*index]).or_else(|| matching().next_back());
        let Some((index, (_, outcome))) = found else {
            let unused = used.iter().filter(|u| !**u).count();
            return Err(Error::InvalidInput(format!(
                "replay: the recording {} has no exchange for this request ({}); {} of its {} exchanges are unused",
                self.path.display(),
                describe(&request),
                unused,
                self.entries.len()
            )));
        };
        used[index] = true;
        outcome.clone()
    }
}

#[cfg(test)]
mod tests {
    use rlm_protocol::{ChatMessage, Usage};

    use super::*;

    #[derive(Debug)]
    struct Echo;

    #[async_trait]
    impl ModelClient for Echo {
        async fn complete(&self, request: ModelRequest) -> Result<ModelResponse> {
            let last = request.messages.last().map(|m| m.content.clone()).unwrap_or_default();
            if last == "fail" {
                return Err(Error::model(Some(400), "bad request", false));
            }
            let usage = Usage { prompt_tokens: 3, completion_tokens: 1, calls: 1, ..Usage::default() };
            Ok(ModelResponse { content: format!("echo {last}"), usage, model: request.model })
        }
    }

    fn request(text: &str) -> ModelRequest {
        ModelRequest {
            model: "anthropic:claude-x".into(),
            messages: vec![ChatMessage::user(text)].into(),
            max_output_tokens: Some(10),
            temperature: None,
        }
    }

    #[tokio::test]
    async fn a_recording_replays_answers_and_errors_and_names_what_it_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec.jsonl");
        let recorder = Recorder::create(Arc::new(Echo), &path).unwrap();
        let first = recorder.complete(request("a")).await.unwrap();
        recorder.complete(request("b")).await.unwrap();
        assert!(recorder.complete(request("fail")).await.is_err());
        drop(recorder);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);

        let replay = Replayer::open(&path).unwrap();
        assert_eq!(replay.len(), 3);
        assert_eq!(replay.complete(request("a")).await.unwrap(), first);
        assert_eq!(replay.complete(request("b")).await.unwrap().content, "echo b");
        assert_eq!(replay.complete(request("fail")).await.unwrap_err(), Error::model(Some(400), "bad request", false));
        let err = replay.complete(request("never sent")).await.unwrap_err().to_string();
        assert!(err.contains("no exchange for this request") && err.contains("never sent"), "{err}");
        let other_params = ModelRequest { temperature: Some(0.5), ..request("a") };
        assert!(replay.complete(other_params).await.is_err(), "parameters are part of the match");
    }

    #[test]
    fn a_broken_recording_is_an_error_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec.jsonl");
        std::fs::write(&path, "{\"request\":{\"model\":\"m\",\"messages\":[]},\"response\":null}\nnot json\n").unwrap();
        let err = Replayer::open(&path).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
