//! The writer: the thread that takes events off the sink's queue and stores them in batches, spooling what the
//! database does not take and replaying the spool once it answers again.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rlm_protocol::TraceEvent;
use sqlx::postgres::PgPool;
use tokio::sync::mpsc;

use crate::TraceDbError;
use crate::rows::{Batch, Converter};
use crate::sink::{PostgresSinkConfig, Shared, lock};
use crate::spool::read_events;
use crate::store;

pub(crate) struct Writer {
    pub config: PostgresSinkConfig,
    pub converter: Converter,
    pub pool: PgPool,
    pub shared: Arc<Shared>,
    pub migrated: bool,
    pub down_until: Option<tokio::time::Instant>,
    pub backoff: Duration,
}

impl Writer {
    pub async fn run(&mut self, mut rx: mpsc::Receiver<TraceEvent>) {
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
