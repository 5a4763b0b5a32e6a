//! Trace sinks: where trajectory events go. [`JsonlSink`] writes one JSON object per line; the lines reach the file
//! whenever the run waits for a model or a cell ([`TraceSink::write_out`]), so a run that is still going can be
//! followed (`tail -f`, the viewer) and a killed run loses at most what it recorded since it last waited.
//! [`MemorySink`] keeps events in memory; [`FanoutSink`] sends each event to several sinks.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rlm_protocol::{TraceEvent, TraceSink};

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot open trace file {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("cannot write trace file {path}: {message}")]
    Write { path: PathBuf, message: String },
}

impl From<TraceError> for rlm_protocol::Error {
    fn from(err: TraceError) -> Self {
        Self::Io(err.to_string())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a half-written line: a line reaches the writer only once it is
    // formatted completely.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Appends events to a JSONL file, one line each. Lines are buffered until [`TraceSink::write_out`] or
/// [`TraceSink::flush`] (or until the buffer is full): one write per wait of the run instead of one per event.
#[derive(Debug)]
pub struct JsonlSink {
    path: PathBuf,
    state: Mutex<JsonlState>,
}

/// Room for the lines of a few turns; a longer line is written straight through (after what is buffered before it).
const BUFFER_BYTES: usize = 64 * 1024;

#[derive(Debug)]
struct JsonlState {
    writer: BufWriter<File>,
    /// The line being formatted; kept between events so that its memory is reused instead of grown anew each time.
    line: Vec<u8>,
    first_error: Option<String>,
}

impl JsonlSink {
    /// Creates (or appends to) `path`, creating missing parent directories.
    pub fn create(path: impl Into<PathBuf>) -> Result<Self, TraceError> {
        let path = path.into();
        let open = || -> std::io::Result<File> {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            OpenOptions::new().create(true).append(true).open(&path)
        };
        let file = open().map_err(|source| TraceError::Open { path: path.clone(), source })?;
        let writer = BufWriter::with_capacity(BUFFER_BYTES, file);
        Ok(Self { path, state: Mutex::new(JsonlState { writer, line: Vec::new(), first_error: None }) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl TraceSink for JsonlSink {
    fn record(&self, event: &TraceEvent) {
        let mut state = lock(&self.state);
        let JsonlState { writer, line, first_error } = &mut *state;
        line.clear();
        if let Err(err) = serde_json::to_writer(&mut *line, event) {
            first_error.get_or_insert_with(|| format!("cannot serialize event: {err}"));
            return;
        }
        line.push(b'\n');
        if let Err(err) = writer.write_all(line) {
            first_error.get_or_insert_with(|| err.to_string());
        }
        // One huge event (a prompt of megabytes) should not keep its buffer for the rest of the run.
        if line.capacity() > BUFFER_BYTES {
            *line = Vec::new();
        }
    }

    fn write_out(&self) {
        let mut state = lock(&self.state);
        if let Err(err) = state.writer.flush() {
            state.first_error.get_or_insert_with(|| err.to_string());
        }
    }

    fn flush(&self) -> rlm_protocol::Result<()> {
        let mut state = lock(&self.state);
        if let Err(err) = state.writer.flush() {
            state.first_error.get_or_insert_with(|| err.to_string());
        }
        match &state.first_error {
            Some(message) => Err(TraceError::Write { path: self.path.clone(), message: message.clone() }.into()),
            None => Ok(()),
        }
    }
}

/// Keeps every event in memory, in order.
#[derive(Debug, Default)]
pub struct MemorySink {
    events: Mutex<Vec<TraceEvent>>,
}

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn events(&self) -> Vec<TraceEvent> {
        lock(&self.events).clone()
    }
}

impl TraceSink for MemorySink {
    fn record(&self, event: &TraceEvent) {
        lock(&self.events).push(event.clone());
    }

    fn flush(&self) -> rlm_protocol::Result<()> {
        Ok(())
    }
}

/// Sends every event to each of its sinks, in order.
#[derive(Debug, Default, Clone)]
pub struct FanoutSink {
    sinks: Vec<Arc<dyn TraceSink>>,
}

impl FanoutSink {
    pub fn new(sinks: Vec<Arc<dyn TraceSink>>) -> Self {
        Self { sinks }
    }
}

impl TraceSink for FanoutSink {
    fn record(&self, event: &TraceEvent) {
        for sink in &self.sinks {
            sink.record(event);
        }
    }

    fn write_out(&self) {
        for sink in &self.sinks {
            sink.write_out();
        }
    }

    fn flush(&self) -> rlm_protocol::Result<()> {
        let mut first = Ok(());
        for sink in &self.sinks {
            if let (Err(err), Ok(())) = (sink.flush(), &first) {
                first = Err(err);
            }
        }
        first
    }
}

/// A sink that discards everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl TraceSink for NullSink {
    fn record(&self, _event: &TraceEvent) {}

    fn flush(&self) -> rlm_protocol::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use rlm_protocol::{EventBody, FinalRecord, FinishedBy, UsageReport};
    use uuid::Uuid;

    use super::*;

    fn final_event(answer: &str) -> TraceEvent {
        TraceEvent {
            event_id: Uuid::new_v4(),
            run_id: Uuid::new_v4(),
            parent_run_id: None,
            parent_event_id: None,
            depth: 0,
            iteration: None,
            ts: Utc::now(),
            body: EventBody::Final(FinalRecord {
                answer: Some(answer.into()),
                finished_by: FinishedBy::Final,
                limit: None,
                iterations: 1,
                sub_calls: 0,
                usage: UsageReport::default(),
                duration_ms: 1.0,
                error: None,
            }),
        }
    }

    #[test]
    fn jsonl_sink_writes_one_parseable_line_per_event_and_creates_directories() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("nested/run.jsonl");
        let sink = JsonlSink::create(&path)?;
        sink.record(&final_event("a"));
        sink.record(&final_event("b\nwith newline"));
        // Buffered until written out: the file holds whole lines only, all of them after `write_out`.
        assert_eq!(std::fs::read_to_string(&path)?, "");
        sink.write_out();
        let text = std::fs::read_to_string(&path)?;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(text.ends_with('\n'));
        let second: TraceEvent = serde_json::from_str(lines[1])?;
        assert!(
            matches!(second.body, EventBody::Final(FinalRecord { answer: Some(ref a), .. }) if a == "b\nwith newline")
        );
        sink.flush()?;
        Ok(())
    }

    #[test]
    fn a_line_longer_than_the_buffer_follows_the_buffered_ones_whole() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("run.jsonl");
        let sink = JsonlSink::create(&path)?;
        sink.record(&final_event("short"));
        let long = "x".repeat(BUFFER_BYTES * 2);
        sink.record(&final_event(&long));
        // Writing the long line pushed out the short one before it; nothing is left half-written.
        let text = std::fs::read_to_string(&path)?;
        let answers: Vec<Option<String>> = text
            .lines()
            .map(|line| match serde_json::from_str::<TraceEvent>(line).map(|event| event.body) {
                Ok(EventBody::Final(record)) => record.answer,
                _ => None,
            })
            .collect();
        assert_eq!(answers, vec![Some("short".to_owned()), Some(long)]);
        Ok(())
    }

    #[test]
    fn fanout_writes_out_every_sink() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("run.jsonl");
        let fanout = FanoutSink::new(vec![Arc::new(MemorySink::new()), Arc::new(JsonlSink::create(&path)?)]);
        fanout.record(&final_event("x"));
        fanout.write_out();
        assert_eq!(std::fs::read_to_string(&path)?.lines().count(), 1);
        Ok(())
    }

    #[test]
    fn fanout_reaches_every_sink() {
        let a = Arc::new(MemorySink::new());
        let b = Arc::new(MemorySink::new());
        let fanout = FanoutSink::new(vec![a.clone(), b.clone(), Arc::new(NullSink)]);
        fanout.record(&final_event("x"));
        assert_eq!(a.events().len(), 1);
        assert_eq!(b.events().len(), 1);
        assert!(fanout.flush().is_ok());
    }

    #[test]
    fn opening_an_impossible_path_is_a_clear_error() {
        let err = JsonlSink::create("/proc/definitely/not/writable.jsonl").err();
        assert!(err.is_some_and(|e| e.to_string().contains("cannot open trace file")));
    }
}
