//! The remote executor: REPL sessions that live in a sandbox service (`rlm sandbox serve`), reached over HTTP.
//!
//! The sandbox holds no model credentials. When code in a cell makes sub-calls, the sandbox suspends the cell and
//! answers `needs_llm` with the prompts; this executor hands them to the session's [`SubCallHost`] (the engine, on
//! this side, with the keys), posts the answers back, and goes on until the cell is done.
//!
//! Contexts are uploaded once by SHA-256 (`PUT /v1/contexts/{sha256}`) and reused by every later session with the
//! same content, so child RLMs and repeated runs over one document do not send it again.
//!
//! Retries happen only where they are safe: a request is retried only when the connection could not be made (so
//! the sandbox never saw it) — a cell that may have started is never sent twice.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use rlm_protocol::sandbox::{
    CallResult, CellRequest, CellResponse, ContextKind, ContextUploaded, CreateSessionRequest, ErrorBody,
    ResumeRequest, SESSION_SECRET_HEADER, SessionCreated, VariableNames, VariableValue,
};
use rlm_protocol::{
    CellOutcome, Context, ContextInfo, Error, Executor, ReplSession, Result, Secret, SessionSpec, SubCall, SubCallHost,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

/// Where the sandbox service is and how to talk to it. `Debug` never shows the token (a [`Secret`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteConfig {
    /// e.g. `http://sandbox:8000` (`RLM_SANDBOX_URL`).
    pub base_url: String,
    /// Bearer token the service requires, if any (`RLM_SANDBOX_TOKEN`).
    pub token: Option<Secret<String>>,
    pub connect_timeout: Duration,
    /// Limit for requests that do not run code; cells get their own time limit plus [`Self::cell_grace`].
    pub request_timeout: Duration,
    /// Extra time a cell request may take beyond the cell's time limit (queueing, transfer).
    pub cell_grace: Duration,
    /// Attempts after the first when the connection cannot be made.
    pub connect_retries: u32,
    pub retry_backoff: Duration,
    /// Idle connections kept per host for reuse (0: a new connection for every request).
    pub pool_max_idle_per_host: usize,
}

impl RemoteConfig {
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            token: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(120),
            cell_grace: Duration::from_secs(60),
            connect_retries: 3,
            retry_backoff: Duration::from_millis(200),
            pool_max_idle_per_host: 32,
        }
    }
}

/// What `GET /ready` of the service says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct SandboxHealth {
    pub ready: bool,
    pub executor: String,
    pub sessions: usize,
    pub capacity: usize,
}

#[derive(Debug, Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    config: Arc<RemoteConfig>,
}

/// Runs sessions in a sandbox service.
#[derive(Debug, Clone)]
pub struct RemoteExecutor {
    client: Client,
}

impl RemoteExecutor {
    pub fn new(config: RemoteConfig) -> Result<Self> {
        let url = reqwest::Url::parse(&config.base_url)
            .map_err(|e| Error::InvalidInput(format!("invalid sandbox URL {:?}: {e}", config.base_url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::InvalidInput(format!("the sandbox URL must be http or https: {:?}", config.base_url)));
        }
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        // Certificates are verified (the platform verifier); there is deliberately no switch to turn that off.
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            // Below the service's default header read timeout (10 s), which also closes idle keep-alive connections:
            // a connection is dropped here before the service can close it under a request being sent.
            .pool_idle_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .build()
            .map_err(|e| Error::Executor(format!("cannot build the HTTP client: {e}")))?;
        let base = config.base_url.trim_end_matches('/').to_owned();
        Ok(Self { client: Client { http, base, config: Arc::new(config) } })
    }

    /// Asks the service whether it is up and has room.
    pub async fn health_check(&self) -> Result<SandboxHealth> {
        let timeout = self.client.config.request_timeout;
        let response = self.client.send(Method::GET, "/ready", Body::None, None, timeout).await?;
        // A full service answers 503 with the same body: that is a health answer, not a failure.
        let status = response.status();
        let text = response.text().await.map_err(|e| transport_error(&self.client.base, &e))?;
        serde_json::from_str(&text)
            .map_err(|_| Error::Executor(format!("the sandbox answered {status} to /ready: {}", excerpt(&text))))
    }

    /// Creates a session over `context`, sending the context only when the replica does not have it yet: first
    /// by hash; if that replica has never seen it, upload it and create the session on the replica that stored it
    /// (behind a load balancer the next request could land on another one).
    async fn create_session(&self, context: Context, cell_timeout: Duration) -> Result<(SessionCreated, Client)> {
        let (kind, bytes) = match context {
            Context::Text(text) => (ContextKind::Text, text.into_bytes()),
            Context::Json(value) => (
                ContextKind::Json,
                serde_json::to_vec(&value).map_err(|e| Error::InvalidInput(format!("context is not JSON: {e}")))?,
            ),
            Context::TextFile(path) => (ContextKind::Text, read_file(&path).await?),
            Context::JsonFile(path) => (ContextKind::Json, read_file(&path).await?),
        };
        let sha256: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        let request = CreateSessionRequest {
            context: None,
            context_sha256: Some(sha256.clone()),
            cell_timeout: Some(cell_timeout.as_secs_f64()),
        };
        let timeout = self.client.config.request_timeout;
        let body = serde_json::to_vec(&request).map_err(|e| Error::Executor(format!("cannot encode request: {e}")))?;
        let response = self.client.send(Method::POST, "/v1/sessions", Body::Json(body), None, timeout).await?;
        if response.status() != StatusCode::NOT_FOUND {
            return Ok((self.client.parse(check(response).await?).await?, self.client.clone()));
        }
        // Uploading hundreds of megabytes takes time: allow for it.
        let upload_timeout = timeout + Duration::from_secs((bytes.len() / (10 << 20)) as u64);
        let path = format!("/v1/contexts/{sha256}?kind={}", kind.as_str());
        let response = self.client.send(Method::PUT, &path, Body::Bytes(bytes), None, upload_timeout).await?;
        let uploaded: ContextUploaded = self.client.parse(check(response).await?).await?;
        let replica = self.client.at_endpoint(uploaded.endpoint.as_deref())?;
        let created = replica.call(Method::POST, "/v1/sessions", &request, None, timeout).await?;
        Ok((created, replica))
    }
}

async fn read_file(path: &std::path::Path) -> Result<Vec<u8>> {
    tokio::fs::read(path).await.map_err(|e| Error::InvalidInput(format!("cannot read context {}: {e}", path.display())))
}

#[async_trait]
impl Executor for RemoteExecutor {
    fn name(&self) -> &str {
        "remote"
    }

    async fn start_session(&self, spec: SessionSpec, host: Arc<dyn SubCallHost>) -> Result<Box<dyn ReplSession>> {
        let (created, replica) = self.create_session(spec.context, spec.cell_timeout).await?;
        let cell_timeout = Duration::try_from_secs_f64(created.cell_timeout).unwrap_or(spec.cell_timeout);
        // Behind a load balancer, the replica that holds the session names its own address: talk to it directly.
        let client = replica.at_endpoint(created.endpoint.as_deref())?;
        Ok(Box::new(RemoteSession {
            client,
            id: created.session_id,
            secret: created.session_secret,
            info: created.context,
            cell_timeout,
            host,
        }))
    }
}

/// A session in the sandbox service.
pub struct RemoteSession {
    client: Client,
    id: String,
    /// Proves to the service that this session is ours; sent with every request about it.
    secret: String,
    info: ContextInfo,
    cell_timeout: Duration,
    host: Arc<dyn SubCallHost>,
}

impl std::fmt::Debug for RemoteSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSession").field("id", &self.id).field("base", &self.client.base).finish()
    }
}

impl RemoteSession {
    pub fn id(&self) -> &str {
        &self.id
    }

    fn secret(&self) -> Option<&str> {
        Some(self.secret.as_str()).filter(|secret| !secret.is_empty())
    }
}

#[async_trait]
impl ReplSession for RemoteSession {
    fn context_info(&self) -> &ContextInfo {
        &self.info
    }

    async fn run_cell(&mut self, code: &str) -> Result<CellOutcome> {
        let timeout = self.cell_timeout + self.client.config.cell_grace;
        let path = format!("/v1/sessions/{}/cells", self.id);
        let mut response: CellResponse = self
            .client
            .call(Method::POST, &path, &CellRequest { code: code.to_owned() }, self.secret(), timeout)
            .await?;
        loop {
            match response {
                CellResponse::Done { outcome } => return Ok(outcome),
                CellResponse::NeedsLlm { cell_id, calls } => {
                    let ids: Vec<u64> = calls.iter().map(|call| call.id).collect();
                    let sub_calls =
                        calls.into_iter().map(|c| SubCall { kind: c.kind, prompt: c.prompt, model: c.model }).collect();
                    let answers = self.host.sub_calls(sub_calls).await;
                    let results = ids
                        .into_iter()
                        .zip(answers)
                        .map(|(id, answer)| match answer {
                            Ok(response) => CallResult { id, response: Some(response), error: None },
                            Err(error) => CallResult { id, response: None, error: Some(error) },
                        })
                        .collect();
                    let path = format!("/v1/sessions/{}/cells/{cell_id}/resume", self.id);
                    let request = ResumeRequest { results };
                    response = self.client.call(Method::POST, &path, &request, self.secret(), timeout).await?;
                }
            }
        }
    }

    async fn get_variable(&mut self, name: &str) -> Result<Option<String>> {
        let path = format!("/v1/sessions/{}/variables/{}", self.id, encode_segment(name));
        let value: VariableValue =
            self.client.call(Method::GET, &path, &(), self.secret(), self.client.config.request_timeout).await?;
        Ok(value.value)
    }

    async fn variable_names(&mut self) -> Result<Vec<String>> {
        let path = format!("/v1/sessions/{}/variables", self.id);
        let names: VariableNames =
            self.client.call(Method::GET, &path, &(), self.secret(), self.client.config.request_timeout).await?;
        Ok(names.names)
    }

    async fn close(self: Box<Self>) -> Result<()> {
        let path = format!("/v1/sessions/{}", self.id);
        let timeout = self.client.config.request_timeout;
        let response = self.client.send(Method::DELETE, &path, Body::None, self.secret(), timeout).await?;
        match response.status() {
            // Already gone (evicted, or the service restarted): closing is done either way.
            StatusCode::NOT_FOUND => Ok(()),
            _ => check(response).await.map(|_| ()),
        }
    }
}

/// Percent-encodes a path segment (variable names are identifiers, but nothing stops a model from asking for
/// `../x`).
fn encode_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

enum Body {
    None,
    Json(Vec<u8>),
    Bytes(Vec<u8>),
}

impl Client {
    /// The same client (pool, token, timeouts) for the replica endpoint a response named, or this one.
    fn at_endpoint(&self, endpoint: Option<&str>) -> Result<Self> {
        let Some(base_url) = endpoint.map(str::trim).filter(|e| !e.is_empty()) else { return Ok(self.clone()) };
        let url = reqwest::Url::parse(base_url)
            .map_err(|e| Error::Executor(format!("the sandbox advertised an invalid endpoint {base_url:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::Executor(format!("the sandbox advertised a non-HTTP endpoint {base_url:?}")));
        }
        Ok(Self {
            http: self.http.clone(),
            base: base_url.trim_end_matches('/').to_owned(),
            config: self.config.clone(),
        })
    }

    async fn call<T: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &T,
        secret: Option<&str>,
        timeout: Duration,
    ) -> Result<R> {
        let body = if method == Method::GET {
            Body::None
        } else {
            Body::Json(serde_json::to_vec(body).map_err(|e| Error::Executor(format!("cannot encode request: {e}")))?)
        };
        let response = check(self.send(method, path, body, secret, timeout).await?).await?;
        self.parse(response).await
    }

    async fn parse<R: DeserializeOwned>(&self, response: reqwest::Response) -> Result<R> {
        let bytes = response.bytes().await.map_err(|e| transport_error(&self.base, &e))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::Executor(format!(
                "unexpected answer from the sandbox ({e}): {}",
                excerpt(&String::from_utf8_lossy(&bytes))
            ))
        })
    }

    /// Sends one request; retried only when the connection could not be made (the service never saw it).
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Body,
        secret: Option<&str>,
        timeout: Duration,
    ) -> Result<reqwest::Response> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        loop {
            let mut request = self.http.request(method.clone(), &url).timeout(timeout);
            if let Some(token) = &self.config.token {
                request = request.bearer_auth(token.expose());
            }
            if let Some(secret) = secret {
                request = request.header(SESSION_SECRET_HEADER, secret);
            }
            request = match &body {
                Body::None => request,
                Body::Json(bytes) => {
                    request.header(reqwest::header::CONTENT_TYPE, "application/json").body(bytes.clone())
                }
                Body::Bytes(bytes) => {
                    request.header(reqwest::header::CONTENT_TYPE, "application/octet-stream").body(bytes.clone())
                }
            };
            match request.send().await {
                Ok(response) => return Ok(response),
                Err(err) if err.is_connect() && attempt < self.config.connect_retries => {
                    attempt += 1;
                    tracing::warn!(url = %url, attempt, "sandbox unreachable, retrying: {err}");
                    tokio::time::sleep(self.config.retry_backoff * attempt).await;
                }
                Err(err) => return Err(transport_error(&self.base, &err)),
            }
        }
    }
}

fn transport_error(base: &str, err: &reqwest::Error) -> Error {
    if err.is_timeout() {
        Error::Executor(format!("the sandbox at {base} did not answer in time: {err}"))
    } else {
        // The connection failed or broke mid-request: whatever the session held is unreachable now.
        Error::SessionDead(format!("the sandbox at {base} is unreachable: {err}"))
    }
}

/// Turns an error status into the error it means, with the service's message.
async fn check(response: reqwest::Response) -> Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<ErrorBody>(&text).map(|b| b.error).unwrap_or_else(|_| excerpt(&text));
    let message = format!("the sandbox answered {status}: {message}");
    Err(match status {
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => Error::InvalidInput(message),
        StatusCode::NOT_FOUND | StatusCode::GONE => Error::SessionDead(message),
        _ => Error::Executor(message),
    })
}

fn excerpt(text: &str) -> String {
    let mut end = text.len().min(300);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_segment("result_2"), "result_2");
        assert_eq!(encode_segment("../x y"), "..%2Fx%20y");
    }

    #[test]
    fn debug_never_shows_the_token() {
        let config = RemoteConfig { token: Some("s3cret".into()), ..RemoteConfig::new("http://x") };
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn only_http_urls_are_accepted() {
        assert!(RemoteExecutor::new(RemoteConfig::new("ftp://x")).is_err());
        assert!(RemoteExecutor::new(RemoteConfig::new("not a url")).is_err());
        assert!(RemoteExecutor::new(RemoteConfig::new("https://sandbox.internal:8000/")).is_ok());
    }
}
