//! One REPL session of the service, and the host that suspends its cells on sub-calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rlm_protocol::sandbox::{CallResult, PendingCall};
use rlm_protocol::{AbortHandle, CellOutcome, ContextInfo, ReplSession, SubCall, SubCallHost, SubCallResult};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
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
///
/// It also holds the running cell's place in the worker pool and gives it back while the cell waits for answers: a
/// suspended cell uses no CPU, and holding its place would starve the cells that could run (a client may take
/// minutes to answer a batch of sub-calls).
pub(crate) struct SuspendingHost {
    current: Mutex<Option<mpsc::Sender<CellEvent>>>,
    permit: Mutex<Option<OwnedSemaphorePermit>>,
    workers: Arc<Semaphore>,
    resume_timeout: Duration,
}

impl SuspendingHost {
    pub fn new(resume_timeout: Duration, workers: Arc<Semaphore>) -> Arc<Self> {
        Arc::new(Self { current: Mutex::new(None), permit: Mutex::new(None), workers, resume_timeout })
    }

    fn set_current(&self, sender: Option<mpsc::Sender<CellEvent>>) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = sender;
    }

    fn hold_permit(&self, permit: Option<OwnedSemaphorePermit>) {
        *self.permit.lock().unwrap_or_else(PoisonError::into_inner) = permit;
    }

    fn take_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.permit.lock().unwrap_or_else(PoisonError::into_inner).take()
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
        let released = self.take_permit().is_some();
        let (reply, answer) = oneshot::channel();
        let results = if sender.send(CellEvent::Suspended { calls, reply }).await.is_err() {
            failed("the client of this cell is gone".to_owned())
        } else {
            match tokio::time::timeout(self.resume_timeout, answer).await {
                Ok(Ok(results)) if results.len() == count => results,
                Ok(Ok(_)) => failed("the client answered a different number of sub-calls".to_owned()),
                Ok(Err(_)) => failed("the session was closed before the sub-calls were answered".to_owned()),
                Err(_) => failed(format!("no answer to the sub-calls within {} s", self.resume_timeout.as_secs())),
            }
        };
        if released {
            // Back in the queue for a worker like any other cell; a closed pool (shutdown) lets the cell end.
            self.hold_permit(self.workers.clone().acquire_owned().await.ok());
        }
        results
    }
}

/// The state of a cell after a request. Serialises exactly like [`rlm_protocol::sandbox::CellResponse`], but shares
/// the pending calls with the slot instead of copying them (a batch may hold hundreds of thousands of prompts).
#[derive(Debug)]
pub(crate) enum CellReply {
    Done(CellOutcome),
    NeedsLlm { cell_id: u64, calls: Arc<[PendingCall]> },
}

impl CellReply {
    /// Roughly how much JSON this becomes, to decide whether serialising it is worth a blocking thread.
    pub fn approximate_size(&self) -> usize {
        match self {
            Self::Done(outcome) => outcome.stdout.len() + outcome.stderr.len(),
            Self::NeedsLlm { calls, .. } => calls.iter().map(|call| call.prompt.len() + 48).sum(),
        }
    }
}

impl Serialize for CellReply {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(tag = "status", rename_all = "snake_case")]
        enum Wire<'a> {
            Done { outcome: &'a CellOutcome },
            NeedsLlm { cell_id: u64, calls: &'a [PendingCall] },
        }
        match self {
            Self::Done(outcome) => Wire::Done { outcome }.serialize(serializer),
            Self::NeedsLlm { cell_id, calls } => Wire::NeedsLlm { cell_id: *cell_id, calls }.serialize(serializer),
        }
    }
}

/// Batches larger than this are matched on a blocking thread, so that one huge resume never stalls the async workers
/// (and with them `/health`).
const BLOCKING_BATCH: usize = 4096;

/// Pairs each pending call with its result, by id: linear in the batch size. Every pending call needs exactly one
/// result, and no result may name an id that is not pending.
fn match_results(calls: &[PendingCall], results: Vec<CallResult>, cell_id: u64) -> Result<Vec<SubCallResult>, String> {
    let mut by_id: HashMap<u64, CallResult> = HashMap::with_capacity(results.len());
    for result in results {
        let id = result.id;
        if by_id.insert(id, result).is_some() {
            return Err(format!("sub-call {id} of cell {cell_id} is answered more than once"));
        }
    }
    let mut answers = Vec::with_capacity(calls.len());
    for call in calls {
        let Some(result) = by_id.remove(&call.id) else {
            return Err(format!("no result for sub-call {} of cell {cell_id}", call.id));
        };
        answers.push(match (result.response, result.error) {
            (Some(response), None) => Ok(response),
            (None, Some(error)) => Err(error),
            _ => return Err(format!("sub-call {} needs exactly one of `response` and `error`", call.id)),
        });
    }
    if let Some(unknown) = by_id.keys().min() {
        return Err(format!("cell {cell_id} is not waiting for a sub-call {unknown}"));
    }
    Ok(answers)
}

/// A cell suspended on sub-calls, with the calls it is waiting for.
struct Waiting {
    calls: Arc<[PendingCall]>,
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

/// Who may use a session: the SHA-256 of its secret, and of the bearer token that created it (when there was one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    pub token: Option<[u8; 32]>,
    pub secret: [u8; 32],
}

/// One session held by the service.
pub(crate) struct Slot {
    pub id: String,
    pub owner: Owner,
    pub info: ContextInfo,
    pub cell_timeout: Duration,
    pub created: Instant,
    last_used: Mutex<Instant>,
    pub cells: AtomicU64,
    next_cell_id: AtomicU64,
    host: Arc<SuspendingHost>,
    /// Taken from the session at creation, so that closing never has to wait for the session's lock (which a
    /// running cell's request holds).
    abort: Option<AbortHandle>,
    closing: AtomicBool,
    inner: tokio::sync::Mutex<Inner>,
}

impl Slot {
    pub fn new(
        id: String,
        owner: Owner,
        session: Box<dyn ReplSession>,
        host: Arc<SuspendingHost>,
        cell_timeout: Duration,
    ) -> Self {
        let now = Instant::now();
        Self {
            id,
            owner,
            info: session.context_info().clone(),
            cell_timeout,
            created: now,
            last_used: Mutex::new(now),
            cells: AtomicU64::new(0),
            next_cell_id: AtomicU64::new(1),
            host,
            abort: session.abort_handle(),
            closing: AtomicBool::new(false),
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
        if inner.closed || self.closing.load(Ordering::SeqCst) {
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
    ) -> Result<CellReply, SandboxError> {
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
        self.host.hold_permit(Some(permit));
        let host = self.host.clone();
        let cell_id = self.next_cell_id.fetch_add(1, Ordering::Relaxed);
        let task = tokio::spawn(async move {
            let result = session.run_cell(&code).await;
            drop(host.take_permit());
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
    ) -> Result<CellReply, SandboxError> {
        let mut inner = self.lock()?;
        let not_running = || SandboxError::NotFound(format!("no running cell {cell_id} in session {}", self.id));
        let running = inner.running.as_mut().filter(|running| running.cell_id == cell_id).ok_or_else(not_running)?;
        let calls = match &running.waiting {
            Some(waiting) => waiting.calls.clone(),
            None => {
                return Err(SandboxError::Conflict(format!("cell {cell_id} is not waiting for sub-call results")));
            }
        };
        let answers = if calls.len().max(results.len()) > BLOCKING_BATCH {
            tokio::task::spawn_blocking(move || match_results(&calls, results, cell_id))
                .await
                .map_err(|e| SandboxError::Internal(format!("matching sub-call results failed: {e}")))?
        } else {
            match_results(&calls, results, cell_id)
        }
        .map_err(SandboxError::BadRequest)?;
        let running = inner.running.as_mut().ok_or_else(not_running)?;
        let waiting = running.waiting.take().ok_or_else(not_running)?;
        // The cell may have been stopped by its time limit meanwhile; it then ends without the answers.
        let _ = waiting.reply.send(answers);
        self.advance(&mut inner, metrics).await
    }

    /// The state of a cell: waits for the next change of a running cell, or repeats the last answer.
    pub async fn poll(&self, cell_id: u64, metrics: &Metrics) -> Result<CellReply, SandboxError> {
        let mut inner = self.lock()?;
        if let Some((last_id, outcome)) = &inner.last
            && *last_id == cell_id
        {
            return Ok(CellReply::Done(outcome.clone()));
        }
        match inner.running.as_ref() {
            Some(running) if running.cell_id == cell_id => match &running.waiting {
                Some(waiting) => Ok(CellReply::NeedsLlm { cell_id, calls: waiting.calls.clone() }),
                None => self.advance(&mut inner, metrics).await,
            },
            _ => Err(SandboxError::NotFound(format!("no cell {cell_id} in session {}", self.id))),
        }
    }

    async fn advance(&self, inner: &mut Inner, metrics: &Metrics) -> Result<CellReply, SandboxError> {
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
                let first = running.next_call_id;
                running.next_call_id += calls.len() as u64;
                let pending: Arc<[PendingCall]> = calls
                    .into_iter()
                    .zip(first..)
                    .map(|(call, id)| PendingCall { id, kind: call.kind, prompt: call.prompt, model: call.model })
                    .collect();
                running.waiting = Some(Waiting { calls: pending.clone(), reply });
                Ok(CellReply::NeedsLlm { cell_id: running.cell_id, calls: pending })
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
                        Ok(CellReply::Done(outcome))
                    }
                    Err(err) => {
                        let dead = matches!(err, rlm_protocol::Error::SessionDead(_));
                        if dead || self.closing.load(Ordering::SeqCst) {
                            inner.closed = true;
                        }
                        if !dead {
                            // Kept so that closing can release it.
                            inner.session = Some(session);
                        }
                        if self.closing.load(Ordering::SeqCst) {
                            return Err(SandboxError::Gone(format!(
                                "session {} was closed while the cell ran",
                                self.id
                            )));
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

    /// Ends the session. When the executor can stop a running cell from outside, this returns at once: the cell is
    /// aborted and a detached task reaps it and releases the session. Otherwise it waits for a running cell to stop
    /// (bounded by the cell time limit).
    pub async fn close(self: Arc<Self>) {
        self.closing.store(true, Ordering::SeqCst);
        match &self.abort {
            Some(abort) => {
                abort.abort();
                tokio::spawn(async move { self.reap().await });
            }
            None => self.reap().await,
        }
    }

    async fn reap(&self) {
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
        drop(self.host.take_permit());
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

#[cfg(test)]
mod tests {
    use rlm_protocol::SubCallKind;

    use super::*;

    fn pending(n: u64) -> Vec<PendingCall> {
        (0..n)
            .map(|id| PendingCall { id, kind: SubCallKind::Llm, prompt: format!("p{id}").into(), model: None })
            .collect()
    }

    fn answer(id: u64) -> CallResult {
        CallResult { id, response: Some(format!("r{id}")), error: None }
    }

    #[test]
    fn results_are_matched_by_id_in_any_order() {
        let results = vec![answer(2), CallResult { id: 0, response: None, error: Some("down".into()) }, answer(1)];
        let matched = match_results(&pending(3), results, 7);
        assert_eq!(matched, Ok(vec![Err("down".to_owned()), Ok("r1".to_owned()), Ok("r2".to_owned())]));
    }

    #[test]
    fn duplicate_missing_unknown_and_ambiguous_results_are_refused() {
        let twice = match_results(&pending(2), vec![answer(0), answer(0), answer(1)], 7);
        assert!(twice.is_err_and(|e| e.contains("sub-call 0 of cell 7 is answered more than once")));
        let missing = match_results(&pending(2), vec![answer(1)], 7);
        assert!(missing.is_err_and(|e| e.contains("no result for sub-call 0")));
        let unknown = match_results(&pending(2), vec![answer(0), answer(1), answer(9)], 7);
        assert!(unknown.is_err_and(|e| e.contains("not waiting for a sub-call 9")));
        let both = CallResult { id: 0, response: Some("a".into()), error: Some("b".into()) };
        assert!(match_results(&pending(1), vec![both], 7).is_err_and(|e| e.contains("exactly one")));
    }
}
