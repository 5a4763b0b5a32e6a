//! One REPL session of the service, and the host that suspends its cells on sub-calls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rlm_protocol::sandbox::{CallResult, CellResponse, PendingCall};
use rlm_protocol::{CellOutcome, ContextInfo, ReplSession, SubCall, SubCallHost, SubCallResult};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::SandboxError;
use crate::metrics::Metrics;

/// What a running cell reports to the request that is waiting on it.
enum CellEvent {
    /// The cell called `llm_query*`/`rlm_query*` and waits for these results.
    Suspended { calls: Vec<SubCall>, reply: oneshot::Sender<Vec<SubCallResult>> },
    /// The cell ended; the session comes back.
    Finished { result: rlm_protocol::Result<CellOutcome>, session: Box<dyn ReplSession> },
}

/// The [`SubCallHost`] of a session in the service: instead of calling a model (this side holds no credentials), it
/// hands the calls to whoever is waiting on the cell and blocks until they are answered.
pub(crate) struct SuspendingHost {
    current: Mutex<Option<mpsc::Sender<CellEvent>>>,
    resume_timeout: Duration,
}

impl SuspendingHost {
    pub fn new(resume_timeout: Duration) -> Arc<Self> {
        Arc::new(Self { current: Mutex::new(None), resume_timeout })
    }

    fn set_current(&self, sender: Option<mpsc::Sender<CellEvent>>) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = sender;
    }
}

#[async_trait]
impl SubCallHost for SuspendingHost {
    async fn sub_calls(&self, calls: Vec<SubCall>) -> Vec<SubCallResult> {
        let count = calls.len();
        let failed = |message: String| vec![Err(message); count];
        let sender = self.current.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let Some(sender) = sender else {
            return failed("sub-calls are not available here".to_owned());
        };
        let (reply, answer) = oneshot::channel();
        if sender.send(CellEvent::Suspended { calls, reply }).await.is_err() {
            return failed("the client of this cell is gone".to_owned());
        }
        match tokio::time::timeout(self.resume_timeout, answer).await {
            Ok(Ok(results)) if results.len() == count => results,
            Ok(Ok(_)) => failed("the client answered a different number of sub-calls".to_owned()),
            Ok(Err(_)) => failed("the session was closed before the sub-calls were answered".to_owned()),
            Err(_) => failed(format!("no answer to the sub-calls within {} s", self.resume_timeout.as_secs())),
        }
    }
}

/// A cell suspended on sub-calls, with the calls it is waiting for.
struct Waiting {
    calls: Vec<PendingCall>,
    reply: oneshot::Sender<Vec<SubCallResult>>,
}

struct Running {
    cell_id: u64,
    events: mpsc::Receiver<CellEvent>,
    task: JoinHandle<()>,
    waiting: Option<Waiting>,
    next_call_id: u64,
}

#[derive(Default)]
struct Inner {
    /// `None` while a cell owns it, and after the session ended.
    session: Option<Box<dyn ReplSession>>,
    running: Option<Running>,
    /// The last finished cell, so a client that lost the answer can fetch it again.
    last: Option<(u64, CellOutcome)>,
    closed: bool,
}

/// One session held by the service.
pub(crate) struct Slot {
    pub id: String,
    pub info: ContextInfo,
    pub cell_timeout: Duration,
    pub created: Instant,
    last_used: Mutex<Instant>,
    pub cells: AtomicU64,
    next_cell_id: AtomicU64,
    host: Arc<SuspendingHost>,
    inner: tokio::sync::Mutex<Inner>,
}

impl Slot {
    pub fn new(id: String, session: Box<dyn ReplSession>, host: Arc<SuspendingHost>, cell_timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            id,
            info: session.context_info().clone(),
            cell_timeout,
            created: now,
            last_used: Mutex::new(now),
            cells: AtomicU64::new(0),
            next_cell_id: AtomicU64::new(1),
            host,
            inner: tokio::sync::Mutex::new(Inner { session: Some(session), ..Inner::default() }),
        }
    }

    pub fn idle_for(&self) -> Duration {
        self.last_used.lock().unwrap_or_else(PoisonError::into_inner).elapsed()
    }

    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    /// Whether a request or a cell is using the session right now.
    pub fn is_busy(&self) -> bool {
        match self.inner.try_lock() {
            Ok(inner) => inner.running.is_some(),
            Err(_) => true,
        }
    }

    fn lock(&self) -> Result<tokio::sync::MutexGuard<'_, Inner>, SandboxError> {
        self.touch();
        let inner = self
            .inner
            .try_lock()
            .map_err(|_| SandboxError::Conflict(format!("session {} is busy with another request", self.id)))?;
        if inner.closed {
            return Err(SandboxError::Gone(format!("session {} has ended", self.id)));
        }
        Ok(inner)
    }

    /// Starts `code` and answers when it finishes or first suspends.
    pub async fn start_cell(
        &self,
        code: String,
        permit: OwnedSemaphorePermit,
        metrics: &Metrics,
    ) -> Result<CellResponse, SandboxError> {
        let mut inner = self.lock()?;
        if let Some(running) = &inner.running {
            return Err(SandboxError::Conflict(format!(
                "cell {} is still running or waiting for sub-call results; resume it first",
                running.cell_id
            )));
        }
        let Some(mut session) = inner.session.take() else {
            return Err(SandboxError::Gone(format!("session {} has ended", self.id)));
        };
        let (sender, events) = mpsc::channel(1);
        self.host.set_current(Some(sender.clone()));
        let cell_id = self.next_cell_id.fetch_add(1, Ordering::Relaxed);
        let task = tokio::spawn(async move {
            let result = session.run_cell(&code).await;
            drop(permit);
            let _ = sender.send(CellEvent::Finished { result, session }).await;
        });
        inner.running = Some(Running { cell_id, events, task, waiting: None, next_call_id: 0 });
        self.advance(&mut inner, metrics).await
    }

    /// Answers the sub-calls a suspended cell waits for, and goes on with the cell.
    pub async fn resume(
        &self,
        cell_id: u64,
        results: Vec<CallResult>,
        metrics: &Metrics,
    ) -> Result<CellResponse, SandboxError> {
        let mut inner = self.lock()?;
        let running = inner
            .running
            .as_mut()
            .filter(|running| running.cell_id == cell_id)
            .ok_or_else(|| SandboxError::NotFound(format!("no running cell {cell_id} in session {}", self.id)))?;
        let waiting = running
            .waiting
            .take()
            .ok_or_else(|| SandboxError::Conflict(format!("cell {cell_id} is not waiting for sub-call results")))?;
        let mut answers = Vec::with_capacity(waiting.calls.len());
        for call in &waiting.calls {
            let Some(result) = results.iter().find(|r| r.id == call.id) else {
                let message = format!("no result for sub-call {} of cell {cell_id}", call.id);
                running.waiting = Some(waiting);
                return Err(SandboxError::BadRequest(message));
            };
            answers.push(match (&result.response, &result.error) {
                (Some(response), None) => Ok(response.clone()),
                (None, Some(error)) => Err(error.clone()),
                _ => {
                    let message = format!("sub-call {} needs exactly one of `response` and `error`", call.id);
                    running.waiting = Some(waiting);
                    return Err(SandboxError::BadRequest(message));
                }
            });
        }
        // The cell may have been stopped by its time limit meanwhile; it then ends without the answers.
        let _ = waiting.reply.send(answers);
        self.advance(&mut inner, metrics).await
    }

    /// The state of a cell: waits for the next change of a running cell, or repeats the last answer.
    pub async fn poll(&self, cell_id: u64, metrics: &Metrics) -> Result<CellResponse, SandboxError> {
        let mut inner = self.lock()?;
        if let Some((last_id, outcome)) = &inner.last
            && *last_id == cell_id
        {
            return Ok(CellResponse::Done { outcome: outcome.clone() });
        }
        match inner.running.as_ref() {
            Some(running) if running.cell_id == cell_id => match &running.waiting {
                Some(waiting) => Ok(CellResponse::NeedsLlm { cell_id, calls: waiting.calls.clone() }),
                None => self.advance(&mut inner, metrics).await,
            },
            _ => Err(SandboxError::NotFound(format!("no cell {cell_id} in session {}", self.id))),
        }
    }

    async fn advance(&self, inner: &mut Inner, metrics: &Metrics) -> Result<CellResponse, SandboxError> {
        let Some(running) = inner.running.as_mut() else {
            return Err(SandboxError::Internal("no running cell".to_owned()));
        };
        let event = tokio::select! {
            biased;
            event = running.events.recv() => event,
            joined = &mut running.task => match joined {
                // The task sent its event before ending: it is waiting in the channel.
                Ok(()) => running.events.recv().await,
                Err(_) => None,
            },
        };
        match event {
            Some(CellEvent::Suspended { calls, reply }) => {
                metrics.inc(|m| &m.sub_call_suspensions);
                let pending: Vec<PendingCall> = calls
                    .into_iter()
                    .map(|call| {
                        let id = running.next_call_id;
                        running.next_call_id += 1;
                        PendingCall { id, kind: call.kind, prompt: call.prompt, model: call.model }
                    })
                    .collect();
                running.waiting = Some(Waiting { calls: pending.clone(), reply });
                Ok(CellResponse::NeedsLlm { cell_id: running.cell_id, calls: pending })
            }
            Some(CellEvent::Finished { result, session }) => {
                let cell_id = running.cell_id;
                inner.running = None;
                self.host.set_current(None);
                self.touch();
                match result {
                    Ok(outcome) => {
                        self.cells.fetch_add(1, Ordering::Relaxed);
                        metrics.record_cell(&outcome);
                        inner.session = Some(session);
                        inner.last = Some((cell_id, outcome.clone()));
                        Ok(CellResponse::Done { outcome })
                    }
                    Err(err) => {
                        if matches!(err, rlm_protocol::Error::SessionDead(_)) {
                            inner.closed = true;
                        } else {
                            inner.session = Some(session);
                        }
                        Err(err.into())
                    }
                }
            }
            None => {
                inner.running = None;
                inner.closed = true;
                self.host.set_current(None);
                Err(SandboxError::Internal(format!("the cell of session {} crashed; the session has ended", self.id)))
            }
        }
    }

    /// Names of the user's variables; only while no cell runs.
    pub async fn variable_names(&self) -> Result<Vec<String>, SandboxError> {
        let mut inner = self.lock()?;
        Ok(idle_session(&mut inner, &self.id)?.variable_names().await?)
    }

    /// `str()` of a variable; only while no cell runs.
    pub async fn get_variable(&self, name: &str) -> Result<Option<String>, SandboxError> {
        let mut inner = self.lock()?;
        Ok(idle_session(&mut inner, &self.id)?.get_variable(name).await?)
    }

    /// Ends the session, waiting for a running cell to stop (it is bounded by the cell time limit).
    pub async fn close(&self) {
        let mut inner = self.inner.lock().await;
        inner.closed = true;
        if let Some(mut running) = inner.running.take() {
            // Dropping a pending reply makes the cell's sub-calls fail, so it ends quickly.
            running.waiting = None;
            while let Some(event) = running.events.recv().await {
                match event {
                    CellEvent::Suspended { .. } => continue,
                    CellEvent::Finished { session, .. } => {
                        inner.session = Some(session);
                        break;
                    }
                }
            }
        }
        self.host.set_current(None);
        if let Some(session) = inner.session.take()
            && let Err(err) = session.close().await
        {
            tracing::debug!(session = %self.id, "closing failed: {err}");
        }
    }
}

fn idle_session<'a>(inner: &'a mut Inner, id: &str) -> Result<&'a mut Box<dyn ReplSession>, SandboxError> {
    let idle = inner.running.is_none();
    match inner.session.as_mut() {
        Some(session) if idle => Ok(session),
        _ => Err(SandboxError::Conflict(format!("session {id} is running a cell"))),
    }
}
