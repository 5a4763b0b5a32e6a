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

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rlm_models::Prices;
use rlm_protocol::{TraceEvent, TraceSink};
use sqlx::postgres::{PgConnectOptions, PgPool};
use tokio::sync::{Notify, mpsc};

use crate::TraceDbError;
use crate::rows::{Batch, Converter};
use crate::store;

/// Settings of a [`PostgresSink`]. `Debug` never shows the password in the URL.
#[derive(Clone)]
pub struct PostgresSinkConfig {
    /// `postgres://user:password@host:port/database`
    pub url: String,
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

impl std::fmt::Debug for PostgresSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSinkConfig")
            .field("url", &redact_password(&self.url))
            .field("spool_dir", &self.spool_dir)
            .field("queue_capacity", &self.queue_capacity)
            .field("batch_size", &self.batch_size)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:<redacted>@host/db`.
pub fn redact_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_owned() };
    let authority_end = url[scheme_end..].find(['/', '?']).map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@').map(|i| scheme_end + i) {
        Some(at) => match url[scheme_end..at].find(':').map(|i| scheme_end + i) {
            Some(colon) => format!("{}<redacted>{}", &url[..=colon], &url[at..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod redact_tests {
    use super::redact_password;

    #[test]
    fn passwords_are_redacted_and_the_rest_kept() {
        assert_eq!(redact_password("postgres://rlm:s3cret@db:5432/rlm"), "postgres://rlm:<redacted>@db:5432/rlm");
        assert_eq!(redact_password("postgres://rlm@db/rlm"), "postgres://rlm@db/rlm");
        assert_eq!(redact_password("postgres://db/rlm?user=x"), "postgres://db/rlm?user=x");
    }
}

impl PostgresSinkConfig {
    pub fn new(url: impl Into<String>) -> Self {
        let trace_dir = std::env::var_os("RLM_TRACE_DIR").filter(|d| !d.is_empty()).map(PathBuf::from);
        Self {
            url: url.into(),
            spool_dir: trace_dir.unwrap_or_else(|| PathBuf::from("rlm-traces")).join("spool"),
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug)]
struct Spool {
    path: PathBuf,
    file: Option<File>,
    /// Events appended since the last replay took the file.
    pending: u64,
    replay_seq: u64,
}

impl Spool {
    fn append(&mut self, lines: &str) -> std::io::Result<()> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            self.file = Some(OpenOptions::new().create(true).append(true).open(&self.path)?);
        }
        match self.file.as_mut() {
            Some(file) => {
                file.write_all(lines.as_bytes())?;
                file.flush()
            }
            None => Err(std::io::Error::other("spool file not open")),
        }
    }

    /// Moves the spool file aside for replay (new events go to a fresh file meanwhile).
    fn take(&mut self) -> std::io::Result<Option<PathBuf>> {
        if self.pending == 0 {
            return Ok(None);
        }
        self.file = None;
        self.replay_seq += 1;
        let name = self.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let target = self.path.with_file_name(format!("{name}.replay-{}.jsonl", self.replay_seq));
        std::fs::rename(&self.path, &target)?;
        self.pending = 0;
        Ok(Some(target))
    }
}

#[derive(Debug, Default)]
struct Progress {
    /// Events accepted by `record` (queued or spilled).
    accepted: u64,
    /// Events that reached the database or the spool (or were lost).
    settled: u64,
}

#[derive(Debug)]
struct Shared {
    progress: Mutex<Progress>,
    settled_changed: Condvar,
    spool: Mutex<Spool>,
    wake: Notify,
    flush_requested: AtomicBool,
    closing: AtomicBool,
    written: AtomicU64,
    spooled: AtomicU64,
    overflowed: AtomicU64,
    replayed: AtomicU64,
    lost: AtomicU64,
    rejected: AtomicU64,
    rejected_path: PathBuf,
    /// Replay files that failed to replay and wait for the next attempt.
    leftovers: Mutex<Vec<PathBuf>>,
    last_error: Mutex<Option<String>>,
    /// Set when an event could not be stored anywhere; reported by the next `flush`.
    loss: Mutex<Option<String>>,
}

impl Shared {
    fn settle(&self, n: u64) {
        lock(&self.progress).settled += n;
        self.settled_changed.notify_all();
    }

    /// Appends events to the spool; counts them as settled either way.
    fn spool(&self, events: &[TraceEvent], overflow: bool) {
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

    fn note_error(&self, err: &TraceDbError) {
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
        let options = PgConnectOptions::from_str(&config.url)
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

struct Writer {
    config: PostgresSinkConfig,
    converter: Converter,
    pool: PgPool,
    shared: Arc<Shared>,
    migrated: bool,
    down_until: Option<tokio::time::Instant>,
    backoff: Duration,
}

impl Writer {
    async fn run(&mut self, mut rx: mpsc::Receiver<TraceEvent>) {
        let mut pending: Vec<TraceEvent> = Vec::new();
        loop {
            let closing = self.shared.closing.load(Ordering::SeqCst);
            if pending.is_empty() && !closing {
                // Sleep until an event arrives, a flush or close is asked for, or it is time to retry the spool.
                let retry = self.spool_waiting().then(|| self.retry_at());
                tokio::select! {
                    event = rx.recv() => match event {
                        Some(event) => pending.push(event),
                        None => self.shared.closing.store(true, Ordering::SeqCst),
                    },
                    () = self.shared.wake.notified() => {}
                    () = sleep_until_opt(retry) => {}
                }
            }
            // Fill the batch: what is already queued, then up to `linger` for more unless a flush waits.
            let deadline = tokio::time::Instant::now() + self.config.linger;
            while pending.len() < self.config.batch_size {
                match rx.try_recv() {
                    Ok(event) => pending.push(event),
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        self.shared.closing.store(true, Ordering::SeqCst);
                        break;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => {
                        if pending.is_empty()
                            || self.shared.flush_requested.load(Ordering::SeqCst)
                            || self.shared.closing.load(Ordering::SeqCst)
                        {
                            break;
                        }
                        tokio::select! {
                            event = rx.recv() => match event {
                                Some(event) => pending.push(event),
                                None => {
                                    self.shared.closing.store(true, Ordering::SeqCst);
                                    break;
                                }
                            },
                            () = tokio::time::sleep_until(deadline) => break,
                            () = self.shared.wake.notified() => {}
                        }
                    }
                }
            }
            let batch = std::mem::take(&mut pending);
            self.deliver(batch).await;
            if rx.is_empty() {
                self.shared.flush_requested.store(false, Ordering::SeqCst);
            }
            if self.shared.closing.load(Ordering::SeqCst) && rx.is_empty() {
                rx.close();
                while let Ok(event) = rx.try_recv() {
                    pending.push(event);
                }
                let batch = std::mem::take(&mut pending);
                self.deliver(batch).await;
                return;
            }
        }
    }

    fn spool_waiting(&self) -> bool {
        lock(&self.shared.spool).pending > 0 || !lock(&self.shared.leftovers).is_empty()
    }

    fn retry_at(&self) -> tokio::time::Instant {
        self.down_until.unwrap_or_else(|| tokio::time::Instant::now() + self.config.retry_min)
    }

    fn database_up(&self) -> bool {
        self.down_until.is_none_or(|until| tokio::time::Instant::now() >= until)
    }

    fn mark_down(&mut self, err: &TraceDbError) {
        tracing::warn!("trace database unavailable, spooling events: {err}");
        self.shared.note_error(err);
        self.backoff = (self.backoff * 2).clamp(self.config.retry_min, self.config.retry_max);
        self.down_until = Some(tokio::time::Instant::now() + self.backoff);
    }

    fn mark_up(&mut self) {
        self.down_until = None;
        self.backoff = Duration::ZERO;
    }

    /// Sends `events` to the database (after replaying the spool), or to the spool.
    async fn deliver(&mut self, events: Vec<TraceEvent>) {
        if self.database_up() && self.spool_waiting() {
            self.replay().await;
        }
        if events.is_empty() {
            return;
        }
        // Nothing newer goes to the database while older events still wait in the spool: keeps runs in order.
        if !self.database_up() || self.spool_waiting() {
            self.shared.spool(&events, false);
            return;
        }
        let n = events.len() as u64;
        match self.write_isolating(&events).await {
            Ok(rejected) => {
                self.shared.written.fetch_add(n - rejected, Ordering::Relaxed);
                self.shared.settle(n);
            }
            Err(err) => {
                self.mark_down(&err);
                self.shared.spool(&events, false);
            }
        }
    }

    /// Like [`Writer::write`]; when the database refuses the batch's data (not a connection problem), writes the
    /// events one by one and sets aside those it refuses, so one bad event cannot hold back the others forever.
    /// Returns how many were set aside.
    async fn write_isolating(&mut self, events: &[TraceEvent]) -> Result<u64, TraceDbError> {
        match self.write(events).await {
            Err(err) if err.is_rejection() && events.len() > 1 => {
                let mut rejected = 0;
                for event in events {
                    match self.write(std::slice::from_ref(event)).await {
                        Ok(()) => {}
                        Err(err) if err.is_rejection() => {
                            self.reject(event, &err);
                            rejected += 1;
                        }
                        Err(err) => return Err(err),
                    }
                }
                Ok(rejected)
            }
            Err(err) if err.is_rejection() => {
                for event in events {
                    self.reject(event, &err);
                }
                Ok(events.len() as u64)
            }
            Err(err) => Err(err),
            Ok(()) => Ok(0),
        }
    }

    fn reject(&self, event: &TraceEvent, err: &TraceDbError) {
        tracing::error!("the trace database refused event {}: {err}", event.event_id);
        self.shared.note_error(err);
        let path = &self.shared.rejected_path;
        let line = serde_json::to_string(event).unwrap_or_default() + "\n";
        let written =
            OpenOptions::new().create(true).append(true).open(path).and_then(|mut f| f.write_all(line.as_bytes()));
        match written {
            Ok(()) => {
                self.shared.rejected.fetch_add(1, Ordering::Relaxed);
            }
            Err(io) => {
                self.shared.lost.fetch_add(1, Ordering::Relaxed);
                let message = format!("trace event {} refused by the database and lost: {err}; {io}", event.event_id);
                lock(&self.shared.loss).get_or_insert(message);
            }
        }
    }

    async fn write(&mut self, events: &[TraceEvent]) -> Result<(), TraceDbError> {
        let timeout = self.config.write_timeout;
        if !self.migrated {
            tokio::time::timeout(timeout, store::migrate(&self.pool))
                .await
                .map_err(|_| TraceDbError::Io("migrating the trace database timed out".into()))??;
            self.migrated = true;
        }
        // On a failure the whole slice is converted again later (from the spool): start from the same state then.
        let saved = self.converter.snapshot();
        for chunk in events.chunks(self.config.batch_size.max(1)) {
            let mut batch = Batch::default();
            for event in chunk {
                self.converter.add(&mut batch, event);
            }
            let result = tokio::time::timeout(timeout, store::write_batch(&self.pool, &batch))
                .await
                .map_err(|_| TraceDbError::Io("writing to the trace database timed out".into()))
                .and_then(|r| r);
            if let Err(err) = result {
                self.converter.restore(saved);
                return Err(err);
            }
        }
        self.mark_up();
        Ok(())
    }

    /// Replays spooled events, oldest file first. A file that fails stays for the next attempt.
    async fn replay(&mut self) {
        let taken = lock(&self.shared.spool).take();
        match taken {
            Ok(Some(path)) => lock(&self.shared.leftovers).push(path),
            Ok(None) => {}
            Err(err) => {
                self.shared.note_error(&TraceDbError::Io(format!("cannot move the spool file aside: {err}")));
                return;
            }
        }
        loop {
            let Some(path) = lock(&self.shared.leftovers).first().cloned() else { return };
            let events = match read_events(&path) {
                Ok((events, _bad)) => events,
                Err(err) => {
                    self.shared.note_error(&err);
                    return;
                }
            };
            match self.write_isolating(&events).await {
                Ok(rejected) => {
                    let stored = events.len() as u64 - rejected;
                    self.shared.replayed.fetch_add(stored, Ordering::Relaxed);
                    self.shared.written.fetch_add(stored, Ordering::Relaxed);
                    lock(&self.shared.leftovers).retain(|p| p != &path);
                    if let Err(err) = std::fs::remove_file(&path) {
                        tracing::warn!("cannot remove replayed spool file {}: {err}", path.display());
                    }
                }
                Err(err) => {
                    self.mark_down(&err);
                    return;
                }
            }
        }
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads a JSONL trajectory (or spool) file: the events, and the number of lines that are not events (a torn last
/// line after a crash, or another kind of JSON).
pub fn read_events(path: &Path) -> Result<(Vec<TraceEvent>, u64), TraceDbError> {
    let file = File::open(path).map_err(|e| TraceDbError::Io(format!("cannot open {}: {e}", path.display())))?;
    let mut events = Vec::new();
    let mut bad = 0;
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|e| TraceDbError::Io(format!("cannot read {}: {e}", path.display())))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<TraceEvent>(&line) {
            Ok(event) => events.push(event),
            Err(_) => bad += 1,
        }
    }
    Ok((events, bad))
}
