//! Plain-HTTP POSTs on kept HTTP/1.1 connections, each driven by the task that awaits its answer.
//!
//! Self-hosted model servers (vLLM, llama.cpp's server, SGLang, LM Studio, Ollama) are reached over plain HTTP, on
//! this host or a private network. For them, the general client's per-request machinery (redirect policy, URL
//! parsing, pool bookkeeping) and the hand-off to its connection task on another thread were a large part of the cost
//! of a root turn (docs/benchmarks.md, sessions 7–10). Here the task that sends a request also reads the connection, so
//! the response wakes that task directly, and the connection is kept for the next request.
//!
//! Only used where the general client would itself connect straight to the server: `http://` without a proxy set
//! in the environment for that host. Redirects are left to the general client (the caller re-sends through it).

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::header::{HOST, HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::openai::error_chain;

/// Connections kept between requests, at most: one per sub-call a wide fan-out runs at once.
const KEPT_CONNECTIONS: usize = 128;
/// A kept connection unused for longer is closed rather than reused (servers close idle ones after 5–75 s).
const IDLE_FOR_AT_MOST: Duration = Duration::from_secs(60);

type Body = Full<Bytes>;

/// One kept connection: the sending half and the connection state machine, which whoever uses it polls.
struct Kept {
    sender: SendRequest<Body>,
    connection: Connection<TokioIo<TcpStream>, Body>,
    idle_since: Instant,
}

/// A response read to its end.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why a request got no reply.
#[derive(Debug)]
pub(crate) enum Trouble {
    /// No connection could be opened.
    Connect(String),
    /// The connection failed while sending the request or reading the response.
    Exchange(String),
}

/// Plain-HTTP POSTs to one endpoint.
pub(crate) struct DirectHttp {
    /// `host:port`, as connected to.
    address: String,
    host: HeaderValue,
    /// Path and query: the request target of every request.
    target: Uri,
    connect_timeout: Duration,
    kept: Mutex<Vec<Kept>>,
}

impl DirectHttp {
    /// A direct way to `url`, or `None` when the general client should take it: not `http`, or a proxy configured
    /// for it in the environment (`HTTP_PROXY`, `ALL_PROXY`, minus `NO_PROXY`, read as the general client reads
    /// them).
    pub fn for_url(url: &reqwest::Url, connect_timeout: Duration) -> Option<Self> {
        Self::unless_proxied(url, connect_timeout, &Matcher::from_env())
    }

    fn unless_proxied(url: &reqwest::Url, connect_timeout: Duration, proxies: &Matcher) -> Option<Self> {
        if url.scheme() != "http" || !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        let uri: Uri = url.as_str().parse().ok()?;
        if proxies.intercept(&uri).is_some() {
            return None;
        }
        let host = url.host_str()?;
        let port = url.port_or_known_default()?;
        // `host_str` keeps an IPv6 address's brackets, which is what both the Host header and connecting take.
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Some(Self {
            address: format!("{host}:{port}"),
            host: HeaderValue::from_str(&authority).ok()?,
            target: uri.path_and_query()?.as_str().parse().ok()?,
            connect_timeout,
            kept: Mutex::new(Vec::new()),
        })
    }

    /// POSTs `body` with `headers` (the caller's: content type, authorization, user agent, ...) and reads the whole
    /// response. A kept connection the server has closed meanwhile is replaced by a new one without sending twice.
    pub async fn post(&self, headers: &HeaderMap, body: &Bytes) -> Result<Reply, Trouble> {
        while let Some(kept) = self.take_kept() {
            match self.exchange(kept, self.request(headers, body)).await {
                Ok(reply) => return Ok(reply),
                // Not sent at all: the server had closed this connection. The next one is tried.
                Err(Unsent::NotSent) => {}
                Err(Unsent::Failed(trouble)) => return Err(trouble),
            }
        }
        let fresh = self.connect().await?;
        match self.exchange(fresh, self.request(headers, body)).await {
            Ok(reply) => Ok(reply),
            Err(Unsent::NotSent) => Err(Trouble::Exchange("the new connection closed before the request".to_owned())),
            Err(Unsent::Failed(trouble)) => Err(trouble),
        }
    }

    fn request(&self, headers: &HeaderMap, body: &Bytes) -> Request<Body> {
        let mut request = Request::new(Full::new(body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.target.clone();
        let all = request.headers_mut();
        all.reserve(headers.len() + 1);
        all.insert(HOST, self.host.clone());
        for (name, value) in headers {
            all.append(name, value.clone());
        }
        request
    }

    /// A kept connection that is still open, if any; the ones found closed or too old are dropped.
    fn take_kept(&self) -> Option<Kept> {
        loop {
            let mut kept = self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop()?;
            if kept.idle_since.elapsed() > IDLE_FOR_AT_MOST || kept.sender.is_closed() {
                continue;
            }
            // One poll reads what the server sent while the connection was idle: a close ends the connection here.
            let mut probe = pin!(&mut kept.connection);
            let waker = std::task::Waker::noop();
            if probe.as_mut().poll(&mut std::task::Context::from_waker(waker)).is_ready() || kept.sender.is_closed() {
                continue;
            }
            return Some(kept);
        }
    }

    fn keep(&self, kept: Kept) {
        let mut all = self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // The newest are taken first, so the oldest would otherwise stay open (after a burst of parallel calls).
        all.retain(|older| older.idle_since.elapsed() <= IDLE_FOR_AT_MOST);
        if all.len() < KEPT_CONNECTIONS {
            all.push(kept);
        }
    }

    async fn connect(&self) -> Result<Kept, Trouble> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.address))
            .await
            .map_err(|_| Trouble::Connect(format!("no connection within {:?}", self.connect_timeout)))?
            .map_err(|err| Trouble::Connect(err.to_string()))?;
        // Requests are written whole, and the answer is awaited: Nagle's delay would only add latency.
        stream.set_nodelay(true).map_err(|err| Trouble::Connect(err.to_string()))?;
        let (sender, connection) =
            http1::handshake(TokioIo::new(stream)).await.map_err(|err| Trouble::Connect(error_chain(&err)))?;
        Ok(Kept { sender, connection, idle_since: Instant::now() })
    }

    /// Sends `request` on `kept`, reads the whole response, and keeps the connection if it stays open.
    async fn exchange(&self, kept: Kept, request: Request<Body>) -> Result<Reply, Unsent> {
        let Kept { mut sender, connection, .. } = kept;
        let mut connection = Some(connection);
        let failed = |err: hyper::Error| Unsent::Failed(Trouble::Exchange(error_chain(&err)));
        if driving(sender.ready(), &mut connection).await.is_err() {
            return Err(Unsent::NotSent);
        }
        let response = match driving(sender.try_send_request(request), &mut connection).await {
            Ok(response) => response,
            Err(mut err) => {
                if err.take_message().is_some() {
                    return Err(Unsent::NotSent);
                }
                return Err(failed(err.into_error()));
            }
        };
        let (parts, body) = response.into_parts();
        let body = driving(body.collect(), &mut connection).await.map_err(failed)?.to_bytes();
        if let Some(connection) = connection
            && !sender.is_closed()
        {
            self.keep(Kept { sender, connection, idle_since: Instant::now() });
        }
        Ok(Reply { status: parts.status, headers: parts.headers, body })
    }
}

/// How an exchange on a connection failed.
enum Unsent {
    /// The request was not sent: the connection was closed before it.
    NotSent,
    Failed(Trouble),
}

/// Awaits `work` while polling `connection` alongside, which does the reading and writing `work` waits for. A
/// connection that ends is dropped (`None`); `work` then ends too, with what the connection delivered or an error.
async fn driving<F: Future>(work: F, connection: &mut Option<Connection<TokioIo<TcpStream>, Body>>) -> F::Output {
    let mut work = pin!(work);
    poll_fn(|cx| {
        if let Some(open) = connection.as_mut()
            && Pin::new(open).poll(cx).is_ready()
        {
            *connection = None;
        }
        work.as_mut().poll(cx)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(url: &str, proxies: &Matcher) -> Option<DirectHttp> {
        DirectHttp::unless_proxied(&reqwest::Url::parse(url).unwrap(), Duration::from_secs(1), proxies)
    }

    #[test]
    fn a_proxied_host_is_left_to_the_general_client() {
        let proxies = Matcher::builder().http("http://proxy.internal:3128").no("127.0.0.1,.local").build();
        assert!(direct("http://models.internal:8000/v1", &proxies).is_none());
        assert!(direct("http://127.0.0.1:8000/v1", &proxies).is_some());
        assert!(direct("http://gpu.local/v1", &proxies).is_some());
        let everything = Matcher::builder().all("socks5://proxy.internal:1080").build();
        assert!(direct("http://127.0.0.1:8000/v1", &everything).is_none());
    }

    #[test]
    fn only_plain_http_goes_direct_and_the_target_is_the_path() {
        let none = Matcher::builder().build();
        let local = direct("http://127.0.0.1:8000/v1/chat/completions", &none).unwrap();
        assert_eq!(local.address, "127.0.0.1:8000");
        assert_eq!(local.host, "127.0.0.1:8000");
        assert_eq!(local.target, "/v1/chat/completions");
        let default_port = direct("http://models.internal/chat/completions", &none).unwrap();
        assert_eq!(
            (default_port.address.as_str(), default_port.host.to_str().ok()),
            ("models.internal:80", Some("models.internal"))
        );
        let v6 = direct("http://[::1]:9/x", &none).unwrap();
        assert_eq!((v6.address.as_str(), v6.host.to_str().ok()), ("[::1]:9", Some("[::1]:9")));
        assert!(direct("https://api.openai.com/v1/chat/completions", &none).is_none());
        assert!(direct("http://user:pw@127.0.0.1:8000/v1", &none).is_none());
    }
}
