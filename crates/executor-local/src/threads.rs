//! The threads that run Python work for the sessions: each stays attached to the interpreter (keeps its Python thread
//! state) for as long as it lives, and waits for the next job with the GIL released.
//!
//! Why not tokio's blocking pool: a thread unknown to the interpreter gets a fresh thread state for every
//! `Python::attach` and loses it again at the end, and in CPython that means allocating (and at the end unmapping)
//! the thread state's frame stack: a few system calls and page faults for every cell, on the cell's critical path. A
//! thread here pays that once.
//!
//! While other processes leave a core free ([`rlm_machine::a_core_is_free`]), both sides of a hand-off watch for a
//! moment before they sleep, yielding the CPU between looks: a thread that has just finished a job watches for the
//! next one for [`SPIN_FOR_NEXT_JOB`], and the caller watches for the result for [`SPIN_FOR_RESULT`]. On an idle
//! machine, waking a sleeping thread on another CPU is the dearest part of a short cell: on the 2-vCPU development
//! VM a futex round trip between two threads took 20–38 µs, against about 1 µs when the waiter keeps looking. On a
//! busy one, waking is cheap and watching costs: a thread that keeps looking loses the priority the scheduler gives
//! a woken sleeper, so it can wait a whole time slice behind other processes (measured: a few runs of the harness
//! bench at 1.7–3.7 ms per turn instead of 0.2 with both cores taken). Watching pays when the model answers at once
//! (replayed or cached calls, several cells in one reply, lookups after a cell); with a model that takes longer, a
//! cell costs at most the two waits in CPU time, about 0.4 ms.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError, channel};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use tokio::sync::oneshot;

use crate::error::{LocalError, LocalResult};

/// How long a thread waits for work before it ends (tokio's blocking threads wait as long).
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a thread that has finished a job watches for the next one before it sleeps.
const SPIN_FOR_NEXT_JOB: Duration = Duration::from_micros(300);
/// How long a caller watches for the result of its job before its task sleeps. This holds up the async worker that
/// polls it, so it stays short (tokio's guidance is to return to the runtime within 10–100 µs).
const SPIN_FOR_RESULT: Duration = Duration::from_micros(100);

type Job = Box<dyn FnOnce() + Send>;

/// A waiting thread: where to send it its next job.
struct Idle {
    id: u64,
    jobs: Sender<Job>,
}

struct Pool {
    idle: Mutex<Vec<Idle>>,
    next_id: AtomicU64,
}

static POOL: Pool = Pool { idle: Mutex::new(Vec::new()), next_id: AtomicU64::new(0) };

/// Runs `work` on a Python thread and waits for its result without blocking the async runtime. The interpreter must
/// be running (see [`crate::runtime::runtime`]).
pub(crate) async fn run<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> LocalResult<T> {
    let (done_tx, done_rx) = oneshot::channel();
    submit(Box::new(move || {
        // The receiver may be gone (its future was dropped): the work has still run, as with `spawn_blocking`.
        let _ = done_tx.send(work());
    }))?;
    let mut done_rx = done_rx;
    let watched = watch_for(SPIN_FOR_RESULT, || match done_rx.try_recv() {
        Ok(value) => Look::Found(value),
        Err(oneshot::error::TryRecvError::Empty) => Look::NotYet,
        Err(oneshot::error::TryRecvError::Closed) => Look::Never,
    });
    if let Some(value) = watched {
        return Ok(value);
    }
    // A panic in `work` drops the sender without a result.
    done_rx.await.map_err(|_| LocalError::Task("the Python work panicked".to_owned()))
}

fn submit(job: Job) -> LocalResult<()> {
    let mut job = job;
    loop {
        let waiting = POOL.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        match waiting {
            // A thread that timed out in the meantime has dropped its receiver: the job comes back; try the next.
            Some(thread) => match thread.jobs.send(job) {
                Ok(()) => return Ok(()),
                Err(returned) => job = returned.0,
            },
            None => return spawn(job),
        }
    }
}

fn spawn(first: Job) -> LocalResult<()> {
    let id = POOL.next_id.fetch_add(1, Ordering::Relaxed);
    std::thread::Builder::new()
        .name("rlm-python".to_owned())
        .spawn(move || serve(id, first))
        .map(drop)
        .map_err(|err| LocalError::Task(format!("cannot start a thread for Python: {err}")))
}

/// The life of one thread: attached to the interpreter throughout, without the GIL except while a job holds it.
fn serve(id: u64, first: Job) {
    Python::attach(|py| {
        py.detach(|| {
            let (jobs_tx, jobs_rx) = channel::<Job>();
            let mut job = first;
            loop {
                // A panicking job has already dropped its result sender (its caller gets an error); the thread and
                // its thread state stay usable.
                let _ = catch_unwind(AssertUnwindSafe(job));
                POOL.idle.lock().unwrap_or_else(PoisonError::into_inner).push(Idle { id, jobs: jobs_tx.clone() });
                match next_job(id, &jobs_rx) {
                    Some(next) => job = next,
                    None => return,
                }
            }
        });
    });
}

/// What one look at a hand-off saw.
enum Look<T> {
    Found(T),
    NotYet,
    /// The other side is gone: nothing will come.
    Never,
}

/// Looks again and again for up to `limit`, yielding the CPU between looks, while other processes leave a core free
/// (see the module's documentation); `None` when nothing came, and the caller goes to sleep.
fn watch_for<T>(limit: Duration, mut look: impl FnMut() -> Look<T>) -> Option<T> {
    if !rlm_machine::a_core_is_free() {
        return None;
    }
    let started = Instant::now();
    while started.elapsed() < limit {
        match look() {
            Look::Found(value) => return Some(value),
            Look::NotYet => std::thread::yield_now(),
            Look::Never => return None,
        }
    }
    None
}

/// The next job, or `None` when the thread has waited long enough and may end.
fn next_job(id: u64, jobs: &Receiver<Job>) -> Option<Job> {
    let watched = watch_for(SPIN_FOR_NEXT_JOB, || match jobs.try_recv() {
        Ok(job) => Look::Found(job),
        Err(TryRecvError::Empty) => Look::NotYet,
        Err(TryRecvError::Disconnected) => Look::Never,
    });
    if watched.is_some() {
        return watched;
    }
    match jobs.recv_timeout(IDLE_TIMEOUT) {
        Ok(job) => Some(job),
        Err(RecvTimeoutError::Disconnected) => None,
        Err(RecvTimeoutError::Timeout) => {
            let mut idle = POOL.idle.lock().unwrap_or_else(PoisonError::into_inner);
            match idle.iter().position(|waiting| waiting.id == id) {
                Some(index) => {
                    idle.swap_remove(index);
                    None
                }
                // Someone took this thread just now: its job is on the way.
                None => {
                    drop(idle);
                    jobs.recv().ok()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_attached_and_panics_become_errors() -> Result<(), LocalError> {
        crate::runtime::runtime()?;
        let sum = run(|| Python::attach(|py| py.eval(c"1 + 2", None, None).and_then(|v| v.extract::<i64>()))).await?;
        assert_eq!(sum.map_err(LocalError::from)?, 3);
        let failed = run(|| -> u32 { panic!("job panics") }).await;
        assert!(matches!(failed, Err(LocalError::Task(_))), "{failed:?}");
        // The pool still serves work after a panic, also many jobs at once.
        let jobs: Vec<_> = (0..8u64).map(|i| tokio::spawn(run(move || i * 2))).collect();
        let mut results = Vec::new();
        for job in jobs {
            results.push(job.await.map_err(LocalError::from)??);
        }
        assert_eq!(results, (0..8).map(|i| i * 2).collect::<Vec<u64>>());
        Ok(())
    }
}
