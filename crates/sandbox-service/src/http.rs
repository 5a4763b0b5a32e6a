//! The HTTP front of the service: an accept loop with a cap on open connections, header and body read timeouts, and
//! graceful shutdown. `axum::serve` has none of the limits, and 20,000 half-open connections used up the process's
//! file descriptors.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use futures::StreamExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Notify, mpsc, watch};
use tower::ServiceExt;

/// Settings of the accept loop.
#[derive(Debug, Clone)]
pub(crate) struct HttpLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
}

/// One open connection, as the accept loop sees it.
struct Open {
    /// Requests being answered on it right now.
    in_flight: Arc<AtomicUsize>,
    /// Asks the connection to finish its current request (if any) and close.
    evict: Arc<Notify>,
    evicting: bool,
}

/// The open connections, oldest first (ids only grow).
#[derive(Default)]
struct Connections {
    next_id: u64,
    open: BTreeMap<u64, Open>,
    /// Connections not asked to close.
    live: usize,
}

impl Connections {
    /// Admits a new connection. At the cap, the oldest connection with no request in flight (a client that connected
    /// and sent nothing, or an idle keep-alive connection) is asked to close to make room, so that a flood of idle
    /// connections can never lock out a real request such as the operator's `/health`. When every connection is
    /// answering a request, the new one is refused.
    fn admit(&mut self, cap: usize) -> Option<(u64, Arc<AtomicUsize>, Arc<Notify>)> {
        if self.live >= cap {
            let victim = self.open.values_mut().find(|c| !c.evicting && c.in_flight.load(Ordering::SeqCst) == 0)?;
            victim.evicting = true;
            victim.evict.notify_one();
            self.live -= 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        let in_flight = Arc::new(AtomicUsize::new(0));
        let evict = Arc::new(Notify::new());
        self.open.insert(id, Open { in_flight: in_flight.clone(), evict: evict.clone(), evicting: false });
        self.live += 1;
        Some((id, in_flight, evict))
    }

    fn remove(&mut self, id: u64) {
        if let Some(open) = self.open.remove(&id)
            && !open.evicting
        {
            self.live -= 1;
        }
    }
}

/// Counts a request as in flight on its connection until dropped.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Accepts connections on `listener` and answers them with `router` until `shutdown` resolves; then stops
/// accepting, lets requests in flight finish for up to `limits.shutdown_grace`, runs `after_grace` (the service
/// closes its sessions there, which ends requests still waiting on cells) and returns. `on_refused` counts
/// connections turned away at the cap.
pub(crate) async fn serve_connections<F: Future<Output = ()>>(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
    after_grace: impl FnOnce() -> F,
    mut on_refused: impl FnMut(),
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    let connections = Arc::new(Mutex::new(Connections::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a sender; `recv` on the receiver returns `None` once all of them have ended.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, or a connection reset before it was accepted: wait a little instead
                    // of spinning on the error.
                    tracing::warn!("accepting a connection failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admitted = connections.lock().unwrap_or_else(PoisonError::into_inner).admit(limits.max_connections);
        let Some((id, in_flight, evict)) = admitted else {
            on_refused();
            tracing::debug!(%peer, "connection refused: every connection is busy");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let builder = builder.clone();
        let connections = connections.clone();
        let mut stop = stop_rx.clone();
        let alive = alive_tx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let guard = InFlight::enter(&in_flight);
                let router = router.clone();
                async move {
                    let response = router.oneshot(request.map(Body::new)).await;
                    drop(guard);
                    response
                }
            });
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                result = connection.as_mut() => Some(result),
                () = evict.notified() => None,
                _ = stop.wait_for(|stop| *stop) => None,
            };
            let result = match ended {
                Some(result) => result,
                None => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = result {
                tracing::debug!(%peer, "connection ended: {err}");
            }
            connections.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
            drop(alive);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(alive_tx);
    let drained = tokio::time::timeout(limits.shutdown_grace, alive_rx.recv()).await.is_ok();
    after_grace().await;
    if !drained {
        // Requests that waited on cells end now that the sessions are closed; give them a moment to be answered.
        let _ = tokio::time::timeout(Duration::from_secs(2), alive_rx.recv()).await;
    }
}

/// Why reading a request body was stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyTimeout {
    #[error("no part of the request body arrived for {0} s")]
    Idle(u64),
    #[error("the request body arrives slower than the minimum of {0} bytes per second")]
    TooSlow(u64),
}

/// After this long, a body must have averaged the minimum rate.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Wraps a request body so that reading it fails when no data comes for `idle`, or when, past the first
/// [`RATE_WINDOW`], it has averaged fewer than `min_rate` bytes per second (a client sending a byte a second).
pub(crate) fn guard_body(body: Body, idle: Duration, min_rate: u64) -> Body {
    struct State {
        stream: axum::body::BodyDataStream,
        started: Option<Instant>,
        received: u64,
        failed: bool,
    }
    let state = State { stream: body.into_data_stream(), started: None, received: 0, failed: false };
    let stream = futures::stream::unfold(state, move |mut state| async move {
        if state.failed {
            return None;
        }
        let next = match tokio::time::timeout(idle, state.stream.next()).await {
            Err(_) => Err(axum::Error::new(BodyTimeout::Idle(idle.as_secs()))),
            Ok(None) => return None,
            Ok(Some(Err(err))) => Err(err),
            Ok(Some(Ok(bytes))) => {
                let started = *state.started.get_or_insert_with(Instant::now);
                state.received += bytes.len() as u64;
                let elapsed = started.elapsed();
                if min_rate > 0
                    && elapsed > RATE_WINDOW
                    && (state.received as f64) < min_rate as f64 * elapsed.as_secs_f64()
                {
                    Err(axum::Error::new(BodyTimeout::TooSlow(min_rate)))
                } else {
                    Ok::<Bytes, axum::Error>(bytes)
                }
            }
        };
        state.failed = next.is_err();
        Some((next, state))
    });
    Body::from_stream(stream)
}

/// Whether `err` (or what caused it) is a [`BodyTimeout`].
pub(crate) fn is_body_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(err) = current {
        if err.is::<BodyTimeout>() {
            return true;
        }
        current = err.source();
    }
    false
}
