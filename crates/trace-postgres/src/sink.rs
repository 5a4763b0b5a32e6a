//! [`PostgresSink`]: a [`TraceSink`] that never blocks the RLM loop on the database.
//!
//! `record` puts the event on a bounded in-memory queue and returns. A writer thread (with its own small async
//! runtime, so it works whatever runtime — or none — the caller uses) takes events off the queue in batches and
//! inserts each batch in one transaction. When the database cannot be reached or a write fails, the batch is
//! appended to a local spool file (JSONL, the trajectory format) instead, and the writer backs off; once the
//! database answers again, it replays the spool before anything newer. Inserts are idempotent (keyed by event id
//! and time), so an event written twice — a batch that committed but whose acknowledgement was lost, then spooled
//! and replayed — is stored once.
//!
//! **Overflow policy**: when the queue is full (the database is slower than the run produces events), `record`
//! appends the event to the spool file itself (one short local file write) and returns; the writer replays it
//! later. Nothing is dropped silently: an event is lost only if the spool file cannot be written either, and then
//! `flush` reports the error and [`SinkStatus::lost`] counts it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rlm_models::Prices;
use rlm_protocol::{Secret, TraceEvent, TraceSink};
use sqlx::postgres::PgConnectOptions;
use tokio::sync::{Notify, mpsc};

use crate::TraceDbError;
use crate::rows::Converter;
use crate::spool::Spool;
use crate::store;
use crate::writer::Writer;

/// Settings of a [`PostgresSink`]. `Debug` never shows the URL, which may hold a password (a [`Secret`]).
#[derive(Debug, Clone)]
pub struct PostgresSinkConfig {
    /// `postgres://user:password@host:port/database`
    pub url: Secret<String>,
    /// Directory of the spool file (created when first needed).
    pub spool_dir: PathBuf,
    pub prices: Prices,
    /// Events the in-memory queue holds before `record` spills to the spool file.
    pub queue_capacity: usize,
    /// Most events inserted in one transaction.
    pub batch_size: usize,
    /// How long the writer waits for more events to fill a batch.
    pub linger: Duration,
    pub max_connections: u32,
    /// Bound on connecting (and on waiting for a pooled connection).
    pub connect_timeout: Duration,
    /// Bound on one batch's transaction; past it the batch goes to the spool.
    pub write_timeout: Duration,
    /// First and longest wait before trying the database again after a failure.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// How long `flush` waits for queued events to reach the database or the spool.
    pub flush_timeout: Duration,
}

impl PostgresSinkConfig {
    /// The defaults for the database at `url`; the spool directory is `rlm-traces/spool`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: Secret::new(url.into()),
            spool_dir: PathBuf::from("rlm-traces").join("spool"),
            prices: Prices::builtin(),
            queue_capacity: 10_000,
            batch_size: 500,
            linger: Duration::from_millis(50),
            max_connections: 2,
            connect_timeout: Duration::from_secs(3),
            write_timeout: Duration::from_secs(10),
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(5),
            flush_timeout: Duration::from_secs(30),
        }
    }
}

/// Counters of a sink, for reports and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkStatus {
    /// Events recorded.
    pub recorded: u64,
    /// Events whose batch was committed to the database (directly or replayed from the spool).
    pub written: u64,
    /// Events appended to the spool file (database unreachable, failed write, or queue full).
    pub spooled: u64,
    /// Of those, events spilled by `record` because the queue was full.
    pub overflowed: u64,
    /// Spooled events later written to the database.
    pub replayed: u64,
    /// Events that could not be written anywhere (the spool file failed too).
    pub lost: u64,
    /// Events the database refused (a data error that retrying cannot fix), set aside in `rejected_file`.
    pub rejected: u64,
    pub rejected_file: Option<PathBuf>,
    /// Spool files of this sink that still hold events not yet in the database.
    pub spool_files: Vec<PathBuf>,
    pub last_error: Option<String>,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Events accepted by `record` (queued or spilled).
    pub accepted: u64,
    /// Events that reached the database or the spool (or were lost).
    pub settled: u64,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub progress: Mutex<Progress>,
    pub settled_changed: Condvar,
    pub spool: Mutex<Spool>,
    pub wake: Notify,
    pub flush_requested: AtomicBool,
    pub closing: AtomicBool,
    pub written: AtomicU64,
    pub spooled: AtomicU64,
    pub overflowed: AtomicU64,
    pub replayed: AtomicU64,
    pub lost: AtomicU64,
    pub rejected: AtomicU64,
    pub rejected_path: PathBuf,
    /// Replay files that failed to replay and wait for the next attempt.
    pub leftovers: Mutex<Vec<PathBuf>>,
    pub last_error: Mutex<Option<String>>,
    /// Set when an event could not be stored anywhere; reported by the next `flush`.
    pub loss: Mutex<Option<String>>,
}

impl Shared {
    pub fn settle(&self, n: u64) {
        lock(&self.progress).settled += n;
        self.settled_changed.notify_all();
    }

    /// Appends events to the spool; counts them as settled either way.
    pub fn spool(&self, events: &[TraceEvent], overflow: bool) {
        let mut lines = String::new();
        for event in events {
            if let Ok(line) = serde_json::to_string(event) {
                lines.push_str(&line);
                lines.push('\n');
            }
        }
        let n = events.len() as u64;
        let result = {
            let mut spool = lock(&self.spool);
            let result = spool.append(&lines);
            if result.is_ok() {
                spool.pending += n;
            }
            result
        };
        match result {
            Ok(()) => {
                self.spooled.fetch_add(n, Ordering::Relaxed);
                if overflow {
                    self.overflowed.fetch_add(n, Ordering::Relaxed);
                }
            }
            Err(err) => {
                self.lost.fetch_add(n, Ordering::Relaxed);
                let message = format!("{n} trace events lost: cannot write the spool file: {err}");
                tracing::error!("{message}");
                lock(&self.loss).get_or_insert(message);
            }
        }
        self.settle(n);
    }

    pub fn note_error(&self, err: &TraceDbError) {
        *lock(&self.last_error) = Some(err.to_string());
    }
}

/// A trace sink that stores events in PostgreSQL / TimescaleDB. See the module documentation for the guarantees.
#[derive(Debug)]
pub struct PostgresSink {
    queue: mpsc::Sender<TraceEvent>,
    shared: Arc<Shared>,
    flush_timeout: Duration,
    done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl PostgresSink {
    /// Starts the writer. Never waits for the database: an unreachable database only means events are spooled
    /// until it answers. Fails on a malformed URL or when the writer thread cannot start.
    pub fn start(config: PostgresSinkConfig) -> Result<Self, TraceDbError> {
        use std::str::FromStr;
        let options = PgConnectOptions::from_str(config.url.expose())
            .map_err(|e| TraceDbError::Config(format!("bad database URL: {e}")))?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let spool_path = config.spool_dir.join(format!("pg-spool-{id}.jsonl"));
        let rejected_path = config.spool_dir.join(format!("pg-rejected-{id}.jsonl"));
        let shared = Arc::new(Shared {
            progress: Mutex::new(Progress::default()),
            settled_changed: Condvar::new(),
            spool: Mutex::new(Spool { path: spool_path, file: None, pending: 0, replay_seq: 0 }),
            wake: Notify::new(),
            flush_requested: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            written: AtomicU64::new(0),
            spooled: AtomicU64::new(0),
            overflowed: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            rejected_path,
            leftovers: Mutex::new(Vec::new()),
            last_error: Mutex::new(None),
            loss: Mutex::new(None),
        });
        let (queue, rx) = mpsc::channel(config.queue_capacity.max(1));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TraceDbError::Io(format!("cannot start the trace writer: {e}")))?;
        let writer_shared = shared.clone();
        let flush_timeout = config.flush_timeout;
        std::thread::Builder::new()
            .name("rlm-trace-postgres".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let pool =
                        store::pool_options(config.max_connections, config.connect_timeout).connect_lazy_with(options);
                    let mut writer = Writer {
                        converter: Converter::new(config.prices.clone()),
                        config,
                        pool,
                        shared: writer_shared,
                        migrated: false,
                        down_until: None,
                        backoff: Duration::ZERO,
                    };
                    writer.run(rx).await;
                    writer.pool.close().await;
                });
                let _ = done_tx.send(());
            })
            .map_err(|e| TraceDbError::Io(format!("cannot start the trace writer: {e}")))?;
        Ok(Self { queue, shared, flush_timeout, done: Mutex::new(Some(done_rx)) })
    }

    /// Counters and the spool files still to replay.
    pub fn status(&self) -> SinkStatus {
        let s = &self.shared;
        let mut spool_files = lock(&s.leftovers).clone();
        {
            let spool = lock(&s.spool);
            if spool.pending > 0 {
                spool_files.push(spool.path.clone());
            }
        }
        SinkStatus {
            recorded: lock(&s.progress).accepted,
            written: s.written.load(Ordering::Relaxed),
            spooled: s.spooled.load(Ordering::Relaxed),
            overflowed: s.overflowed.load(Ordering::Relaxed),
            replayed: s.replayed.load(Ordering::Relaxed),
            lost: s.lost.load(Ordering::Relaxed),
            rejected: s.rejected.load(Ordering::Relaxed),
            rejected_file: (s.rejected.load(Ordering::Relaxed) > 0).then(|| s.rejected_path.clone()),
            spool_files,
            last_error: lock(&s.last_error).clone(),
        }
    }

    /// Writes what is queued, tries a last replay of the spool, and stops the writer (waiting at most `timeout`).
    /// Events recorded afterwards go to the spool file.
    pub fn close(&self, timeout: Duration) -> SinkStatus {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
        if let Some(done) = lock(&self.done).take() {
            let _ = done.recv_timeout(timeout);
        }
        self.status()
    }
}

impl Drop for PostgresSink {
    fn drop(&mut self) {
        // The writer drains the queue (to the database or the spool) and stops; nobody waits for it here.
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
    }
}

impl TraceSink for PostgresSink {
    fn record(&self, event: &TraceEvent) {
        lock(&self.shared.progress).accepted += 1;
        match self.queue.try_send(event.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event) | mpsc::error::TrySendError::Closed(event)) => {
                self.shared.spool(std::slice::from_ref(&event), true);
            }
        }
    }

    fn flush(&self) -> rlm_protocol::Result<()> {
        let target = lock(&self.shared.progress).accepted;
        self.shared.flush_requested.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
        let deadline = Instant::now() + self.flush_timeout;
        let mut progress = lock(&self.shared.progress);
        while progress.settled < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(rlm_protocol::Error::Io(format!(
                    "trace database writer: {} events still queued after {:?}",
                    target - progress.settled,
                    self.flush_timeout
                )));
            }
            progress = self
                .shared
                .settled_changed
                .wait_timeout(progress, left)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        drop(progress);
        match lock(&self.shared.loss).take() {
            Some(message) => Err(rlm_protocol::Error::Io(message)),
            None => Ok(()),
        }
    }
}
