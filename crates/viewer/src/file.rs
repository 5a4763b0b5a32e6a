//! Runs read from JSONL trace files and directories of them, indexed by byte offsets and followed as they grow.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::index::{Index, outline_line};
use crate::source::{EventOutline, Page, RunSource, RunSummary, SourceError, Update};

/// Most full events served in one page.
pub const MAX_EVENTS_PER_PAGE: usize = 2_000;
/// Most bytes of full events served in one page (at least one event is always served).
pub const MAX_PAGE_BYTES: u64 = 32 << 20;
/// Most outlines served in one page.
pub const MAX_OUTLINES_PER_PAGE: usize = 10_000;

/// Where one event's line is: file number, byte offset, length without the newline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    file: u32,
    offset: u64,
    len: u32,
}

#[derive(Debug)]
struct TracedFile {
    path: PathBuf,
    /// Label shown in the run list.
    label: String,
    /// Bytes indexed so far: always the end of a complete line.
    indexed: u64,
}

#[derive(Debug, Default)]
struct State {
    files: Vec<TracedFile>,
    index: Index<Loc>,
    /// Lines that were not JSON objects.
    skipped: usize,
}

/// A [`RunSource`] over JSONL traces: files given by path, and every `*.jsonl` file in the directories given (new
/// files included). [`FileSource::scan`] indexes what was appended since the last scan — only complete lines, so a
/// half-written line waits for its newline; [`FileSource::open`] also starts a task that scans periodically.
#[derive(Debug)]
pub struct FileSource {
    inputs: Vec<PathBuf>,
    state: Mutex<State>,
    updates: broadcast::Sender<Update>,
}

impl FileSource {
    /// Indexes `inputs` once, without following them. Fails when an input does not exist.
    pub fn new(inputs: Vec<PathBuf>) -> Result<Self, SourceError> {
        for input in &inputs {
            if !input.exists() {
                return Err(SourceError::io(
                    format!("cannot open {}", input.display()),
                    std::io::ErrorKind::NotFound.into(),
                ));
            }
        }
        let (updates, _) = broadcast::channel(1024);
        let source = Self { inputs, state: Mutex::new(State::default()), updates };
        source.scan()?;
        Ok(source)
    }

    /// Indexes `inputs` (on a blocking thread) and follows them: every `interval` new lines and new files are
    /// indexed and announced to subscribers. The follower stops when the source is dropped.
    pub async fn open(inputs: Vec<PathBuf>, interval: Duration) -> Result<Arc<Self>, SourceError> {
        let source = tokio::task::spawn_blocking(move || Self::new(inputs))
            .await
            .map_err(|err| SourceError::io("indexing traces", std::io::Error::other(err)))??;
        let source = Arc::new(source);
        let weak = Arc::downgrade(&source);
        tokio::spawn(follow(weak, interval));
        Ok(source)
    }

    /// Number of events indexed, over all runs.
    pub fn event_count(&self) -> usize {
        self.lock().index.total()
    }

    /// Lines that could not be read as JSON objects.
    pub fn skipped_lines(&self) -> usize {
        self.lock().skipped
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while indexing leaves a consistent prefix behind: keep serving it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Finds new files and indexes appended lines; announces what changed. Blocking.
    pub fn scan(&self) -> Result<(), SourceError> {
        let paths = self.trace_files();
        let mut state = self.lock();
        for path in paths {
            if !state.files.iter().any(|f| f.path == path) {
                let label = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into());
                state.files.push(TracedFile { path, label, indexed: 0 });
            }
        }
        let before = state.index.total();
        let mut reset = false;
        for file in 0..state.files.len() {
            match index_file(&mut state, file) {
                Ok(true) => {}
                Ok(false) => reset = true,
                Err(err) => tracing::warn!("cannot read {}: {err}", state.files[file].path.display()),
            }
        }
        if reset {
            // A file shrank (it was replaced or truncated): rebuild everything from scratch.
            let files = std::mem::take(&mut state.files);
            *state = State::default();
            state.files = files.into_iter().map(|f| TracedFile { indexed: 0, ..f }).collect();
            for file in 0..state.files.len() {
                if let Err(err) = index_file(&mut state, file) {
                    tracing::warn!("cannot read {}: {err}", state.files[file].path.display());
                }
            }
            let _ = self.updates.send(Update::Reset);
        } else {
            for update in state.index.updates_since(before) {
                let _ = self.updates.send(update);
            }
        }
        Ok(())
    }

    /// The inputs' trace files: files as given, directories' `*.jsonl` files by name.
    fn trace_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for input in &self.inputs {
            if input.is_dir() {
                let Ok(entries) = std::fs::read_dir(input) else { continue };
                let mut found: Vec<PathBuf> = entries
                    .filter_map(|entry| entry.ok().map(|e| e.path()))
                    .filter(|path| path.is_file() && path.extension().is_some_and(|ext| ext == "jsonl"))
                    .collect();
                found.sort();
                files.extend(found);
            } else {
                files.push(input.clone());
            }
        }
        files
    }

    fn read_lines(&self, locs: &[Loc]) -> Result<Vec<String>, SourceError> {
        let paths: Vec<PathBuf> = self.lock().files.iter().map(|f| f.path.clone()).collect();
        let mut open: Option<(u32, File)> = None;
        let mut lines = Vec::with_capacity(locs.len());
        for loc in locs {
            let path = paths
                .get(loc.file as usize)
                .ok_or(SourceError::io("reading events", std::io::ErrorKind::NotFound.into()))?;
            if open.as_ref().is_none_or(|(n, _)| *n != loc.file) {
                let file =
                    File::open(path).map_err(|e| SourceError::io(format!("cannot open {}", path.display()), e))?;
                open = Some((loc.file, file));
            }
            let Some((_, file)) = open.as_mut() else { continue };
            let mut buf = vec![0; loc.len as usize];
            file.seek(SeekFrom::Start(loc.offset))
                .and_then(|_| file.read_exact(&mut buf))
                .map_err(|e| SourceError::io(format!("cannot read {}", path.display()), e))?;
            lines.push(String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()));
        }
        Ok(lines)
    }
}

/// Indexes the complete lines appended to file number `file`; `Ok(false)` when the file shrank.
fn index_file(state: &mut State, file: usize) -> std::io::Result<bool> {
    let (path, start, label) = {
        let f = &state.files[file];
        (f.path.clone(), f.indexed, f.label.clone())
    };
    let mut handle = File::open(&path)?;
    let size = handle.metadata()?.len();
    if size < start {
        return Ok(false);
    }
    if size == start {
        return Ok(true);
    }
    handle.seek(SeekFrom::Start(start))?;
    let mut reader = BufReader::with_capacity(1 << 20, handle.take(size - start));
    let mut line = Vec::new();
    let mut offset = start;
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line)?;
        if read == 0 || line.last() != Some(&b'\n') {
            break; // end, or a line still being written
        }
        let text = trim_line(&line);
        if !text.is_empty() {
            match outline_line(text) {
                Some(outline) => {
                    let loc = Loc { file: file as u32, offset, len: text.len() as u32 };
                    state.index.push(loc, outline, &label);
                }
                None => state.skipped += 1,
            }
        }
        offset += read as u64;
    }
    state.files[file].indexed = offset;
    Ok(true)
}

fn trim_line(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &line[..end]
}

async fn follow(source: Weak<FileSource>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(strong) = source.upgrade() else { return };
        if strong.updates.receiver_count() == 0 && strong.inputs.is_empty() {
            continue;
        }
        match tokio::task::spawn_blocking(move || strong.scan()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!("following traces: {err}"),
            Err(_) => return,
        }
    }
}

#[async_trait]
impl RunSource for FileSource {
    async fn runs(&self) -> Result<Vec<RunSummary>, SourceError> {
        Ok(self.lock().index.runs())
    }

    async fn outline(&self, run_id: Uuid, offset: usize, limit: usize) -> Result<Page<EventOutline>, SourceError> {
        self.lock().index.outline(run_id, offset, limit.min(MAX_OUTLINES_PER_PAGE))
    }

    async fn events(&self, run_id: Uuid, offset: usize, limit: usize) -> Result<Page<String>, SourceError> {
        let page = self.lock().index.locations(run_id, offset, limit.min(MAX_EVENTS_PER_PAGE))?;
        let mut bytes = 0;
        let take = page
            .items
            .iter()
            .take_while(|loc| {
                let fits = bytes == 0 || bytes + u64::from(loc.len) <= MAX_PAGE_BYTES;
                bytes += u64::from(loc.len);
                fits
            })
            .count();
        let locs = page.items[..take].to_vec();
        // Reads from the page cache in practice; small enough not to need a blocking thread.
        let items = self.read_lines(&locs)?;
        Ok(Page { offset: page.offset, total: page.total, items })
    }

    fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.updates.subscribe()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::io::Write;

    use chrono::Utc;
    use rlm_protocol::{
        CellRecord, ContextInfo, EventBody, FinalRecord, FinishedBy, RunMetadata, SubCallKind, SubCallRecord,
        TraceEvent, Usage, UsageReport,
    };

    use super::*;

    fn event(
        run: Uuid,
        parent: Option<(Uuid, Uuid)>,
        depth: u32,
        iteration: Option<u32>,
        body: EventBody,
    ) -> TraceEvent {
        TraceEvent {
            event_id: Uuid::new_v4(),
            run_id: run,
            parent_run_id: parent.map(|p| p.0),
            parent_event_id: parent.map(|p| p.1),
            depth,
            iteration,
            ts: Utc::now(),
            body,
        }
    }

    fn metadata(query: &str) -> EventBody {
        EventBody::Metadata(RunMetadata {
            rlm_version: "test".into(),
            query: query.into(),
            root_model: "root".into(),
            sub_model: "sub".into(),
            config: serde_json::json!({}),
            executor: "local".into(),
            context: ContextInfo { python_type: "str".into(), total_chars: 3, chunk_lengths: vec![3], chunk_count: 1 },
            route: None,
        })
    }

    fn cell(index: u32, code: &str) -> EventBody {
        EventBody::Cell(CellRecord {
            index,
            code: code.into(),
            stdout: "out\n".into(),
            stderr: String::new(),
            error: None,
            duration_ms: 2.0,
            truncated_chars: 0,
        })
    }

    fn final_(answer: &str, iterations: u32) -> EventBody {
        let mut usage = UsageReport::default();
        usage.add(
            "root",
            Usage { prompt_tokens: 10, completion_tokens: 5, cached_tokens: 0, calls: 1, ..Usage::default() },
        );
        EventBody::Final(FinalRecord {
            answer: Some(answer.into()),
            finished_by: FinishedBy::Final,
            limit: None,
            iterations,
            sub_calls: 1,
            usage,
            duration_ms: 12.0,
            error: None,
        })
    }

    fn line(event: &TraceEvent) -> String {
        format!("{}\n", serde_json::to_string(event).unwrap())
    }

    /// Two top-level runs in one file; the first has a child RLM whose events arrive before the sub-call that
    /// started it.
    fn two_runs() -> (Vec<TraceEvent>, Uuid, Uuid) {
        let (a, child, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let call_id = Uuid::new_v4();
        let mut call = event(
            a,
            None,
            0,
            Some(1),
            EventBody::SubCall(SubCallRecord {
                kind: SubCallKind::Rlm,
                model: "sub".into(),
                prompt: "inner".into(),
                response: Some("done".into()),
                error: None,
                usage: Usage::default(),
                latency_ms: 5.0,
                batch_id: None,
                batch_index: 0,
                batch_size: 1,
                child_run_id: Some(child),
            }),
        );
        call.event_id = call_id;
        let events = vec![
            event(a, None, 0, None, metadata("first query")),
            event(child, Some((a, call_id)), 1, None, metadata("inner")),
            event(child, Some((a, call_id)), 1, Some(1), cell(1, "x = 1")),
            event(child, Some((a, call_id)), 1, None, final_("done", 1)),
            call,
            event(a, None, 0, Some(1), cell(1, "y = rlm_query('inner')")),
            event(a, None, 0, None, final_("first answer", 1)),
            event(b, None, 0, None, metadata("second query")),
            event(b, None, 0, Some(1), cell(1, "z = 2")),
        ];
        (events, a, b)
    }

    #[tokio::test]
    async fn a_file_with_two_run_trees_lists_both_and_pages_their_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let (events, a, b) = two_runs();
        std::fs::write(&path, events.iter().map(line).collect::<String>()).unwrap();

        let source = FileSource::new(vec![path]).unwrap();
        let runs = source.runs().await.unwrap();
        assert_eq!(runs.iter().map(|r| r.run_id).collect::<Vec<_>>(), vec![a, b]);
        assert_eq!(runs[0].query.as_deref(), Some("first query"));
        assert_eq!(runs[0].answer.as_deref(), Some("first answer"));
        assert_eq!(runs[0].status, crate::RunStatus::Finished);
        assert_eq!((runs[0].events, runs[0].child_runs, runs[0].iterations), (7, 1, 1));
        assert_eq!(runs[0].tokens, 15);
        assert_eq!(runs[1].status, crate::RunStatus::Running);
        assert_eq!((runs[1].events, runs[1].iterations), (2, 1));
        assert_eq!(runs[0].source, "t.jsonl");

        // Pages of the first tree, in recorded order, the child's events included.
        let page = source.events(a, 1, 2).await.unwrap();
        assert_eq!((page.offset, page.total, page.items.len()), (1, 7, 2));
        let first: TraceEvent = serde_json::from_str(&page.items[0]).unwrap();
        let second: TraceEvent = serde_json::from_str(&page.items[1]).unwrap();
        assert_eq!(first, events[1]);
        assert_eq!(second, events[2]);
        let tail = source.events(a, 6, 100).await.unwrap();
        assert_eq!(tail.items.len(), 1);
        assert!(source.events(a, 50, 10).await.unwrap().items.is_empty());

        let outline = source.outline(a, 0, 100).await.unwrap();
        let kinds: Vec<&str> = outline.items.iter().map(|o| o.kind.as_str()).collect();
        assert_eq!(kinds, ["metadata", "metadata", "cell", "final", "sub_call", "cell", "final"]);
        assert_eq!(outline.items.iter().map(|o| o.seq).collect::<Vec<_>>(), (0..7).collect::<Vec<_>>());
        assert_eq!(outline.items[4].call_kind.as_deref(), Some("rlm"));
        assert_eq!(outline.items[1].depth, 1);
        assert_eq!(outline.items[2].preview.as_deref(), Some("x = 1"));
        assert!(matches!(source.outline(Uuid::new_v4(), 0, 1).await, Err(SourceError::UnknownRun(_))));
    }

    #[tokio::test]
    async fn growing_files_are_followed_line_by_line_and_half_lines_wait() {
        let dir = tempfile::tempdir().unwrap();
        let (events, a, b) = two_runs();
        let path = dir.path().join("live.jsonl");
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(line(&events[0]).as_bytes()).unwrap();

        let source = FileSource::new(vec![dir.path().to_path_buf()]).unwrap();
        let mut updates = source.subscribe();
        assert_eq!(source.runs().await.unwrap().len(), 1);

        // Half a line is not indexed until its newline arrives.
        let next = line(&events[1]);
        let (head, rest) = next.split_at(next.len() / 2);
        file.write_all(head.as_bytes()).unwrap();
        file.flush().unwrap();
        source.scan().unwrap();
        assert_eq!(source.event_count(), 1);
        file.write_all(rest.as_bytes()).unwrap();
        for event in &events[2..] {
            file.write_all(line(event).as_bytes()).unwrap();
        }
        file.flush().unwrap();
        source.scan().unwrap();
        assert_eq!(source.event_count(), events.len());
        assert_eq!(updates.try_recv().unwrap(), Update::Events { run_id: a, events: 7 });
        assert_eq!(updates.try_recv().unwrap(), Update::Events { run_id: b, events: 2 });
        assert_eq!(source.skipped_lines(), 0);

        // A new file in a followed directory, with a line that is not JSON.
        std::fs::write(dir.path().join("other.jsonl"), "not json\n").unwrap();
        std::fs::write(dir.path().join("ignored.txt"), line(&events[0])).unwrap();
        source.scan().unwrap();
        assert_eq!(source.skipped_lines(), 1);
        assert_eq!(source.event_count(), events.len());

        // A file that shrinks is re-read from scratch.
        std::fs::write(&path, line(&events[7])).unwrap();
        source.scan().unwrap();
        assert_eq!(source.runs().await.unwrap().iter().map(|r| r.run_id).collect::<Vec<_>>(), vec![b]);
        let mut saw_reset = false;
        while let Ok(update) = updates.try_recv() {
            saw_reset |= update == Update::Reset;
        }
        assert!(saw_reset);
    }

    #[tokio::test]
    async fn pages_are_bounded_and_a_missing_input_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("many.jsonl");
        let run = Uuid::new_v4();
        let mut text = line(&event(run, None, 0, None, metadata("q")));
        for i in 0..3000 {
            text.push_str(&line(&event(run, None, 0, Some(1), cell(i, "pass"))));
        }
        std::fs::write(&path, text).unwrap();
        let source = FileSource::new(vec![path]).unwrap();
        let page = source.events(run, 0, usize::MAX).await.unwrap();
        assert_eq!((page.total, page.items.len()), (3001, MAX_EVENTS_PER_PAGE));
        let outline = source.outline(run, 1000, usize::MAX).await.unwrap();
        assert_eq!(outline.items.len(), 2001);
        assert_eq!(outline.items[0].seq, 1000);
        assert!(FileSource::new(vec![dir.path().join("nope.jsonl")]).is_err());
    }

    #[tokio::test]
    async fn the_memory_source_indexes_pushed_events_the_same_way() {
        let (events, a, _) = two_runs();
        let source = crate::MemorySource::new("service");
        let mut updates = source.subscribe();
        for event in &events {
            source.push(event);
        }
        let runs = source.runs().await.unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].source, "service");
        let page = source.events(a, 0, 3).await.unwrap();
        let back: TraceEvent = serde_json::from_str(&page.items[2]).unwrap();
        assert_eq!(back, events[2]);
        assert_eq!(updates.try_recv().unwrap(), Update::Events { run_id: a, events: 1 });
    }
}
