//! The index of one run tree, for services that keep their runs' events themselves.

use rlm_protocol::{EventBody, TraceEvent};
use uuid::Uuid;

use crate::index::{Index, outline_line};
use crate::source::{EventOutline, Page, RunSummary, Update};

/// The viewer's index of one top-level run tree (a run with all its child RLMs), fed event by event: an outline per
/// event and a running summary — not the events themselves, which stay with the caller. Event number `n` of the tree
/// (what [`crate::RunSource::events`] pages over) is the `n`-th event pushed.
///
/// A service that stores each run's events can keep one `RunTree` next to them and implement [`crate::RunSource`]
/// over its own store, so nothing is held twice and forgetting a run forgets its index too.
#[derive(Debug)]
pub struct RunTree {
    source: String,
    root: Option<Uuid>,
    index: Index<()>,
}

impl RunTree {
    /// `source` labels the run in the run list.
    pub fn new(source: impl Into<String>) -> Self {
        Self { source: source.into(), root: None, index: Index::default() }
    }

    /// The outline of `event`, for [`RunTree::push`]. It serializes the event: call it outside of locks.
    pub fn outline_of(event: &TraceEvent) -> EventOutline {
        let outline = serde_json::to_vec(event).ok().and_then(|line| outline_line(&line));
        outline.unwrap_or_else(|| {
            let kind = match event.body {
                EventBody::Metadata(_) => "metadata",
                EventBody::ModelCall(_) => "model_call",
                EventBody::Cell(_) => "cell",
                EventBody::SubCall(_) => "sub_call",
                EventBody::Compaction(_) => "compaction",
                EventBody::Final(_) => "final",
            };
            EventOutline {
                kind: kind.into(),
                event_id: Some(event.event_id),
                run_id: Some(event.run_id),
                parent_run_id: event.parent_run_id,
                parent_event_id: event.parent_event_id,
                depth: event.depth,
                iteration: event.iteration,
                ts_ms: Some(event.ts.timestamp_micros() as f64 / 1000.0),
                ..EventOutline::default()
            }
        })
    }

    /// Adds the next event of the tree (by its outline) and returns the update that announces it. The first event
    /// names the tree: its run is the top-level run; every later event joins this tree, whatever its run.
    pub fn push(&mut self, outline: EventOutline) -> Update {
        let run = outline.run_id.unwrap_or(Uuid::nil());
        let root = *self.root.get_or_insert(run);
        self.index.adopt(run, root);
        self.index.push((), outline, &self.source);
        Update::Events { run_id: root, events: self.len() }
    }

    /// The id of the top-level run (the run of the first event); `None` before the first event.
    pub fn root(&self) -> Option<Uuid> {
        self.root
    }

    /// Events pushed so far.
    pub fn len(&self) -> usize {
        self.root.map_or(0, |root| self.index.len_of(root))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tree as the run list shows it; `None` before the first event.
    pub fn summary(&self) -> Option<RunSummary> {
        self.root.and_then(|root| self.index.summary(root)).cloned()
    }

    /// Outlines of the events `offset..offset + limit` (at most [`crate::MAX_OUTLINES_PER_PAGE`]).
    pub fn outline(&self, offset: usize, limit: usize) -> Page<EventOutline> {
        let limit = limit.min(crate::file::MAX_OUTLINES_PER_PAGE);
        match self.root {
            Some(root) => self.index.outline(root, offset, limit).unwrap_or(Page { offset, total: 0, items: vec![] }),
            None => Page { offset, total: 0, items: Vec::new() },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use chrono::Utc;
    use rlm_protocol::{CellRecord, ContextInfo, RunMetadata};

    use super::*;

    fn event(run: Uuid, parent: Option<Uuid>, depth: u32, body: EventBody) -> TraceEvent {
        TraceEvent {
            event_id: Uuid::new_v4(),
            run_id: run,
            parent_run_id: parent,
            parent_event_id: None,
            depth,
            iteration: Some(1),
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
            context: ContextInfo { python_type: "str".into(), total_chars: 0, chunk_lengths: vec![], chunk_count: 0 },
            route: None,
        })
    }

    fn cell(code: &str) -> EventBody {
        EventBody::Cell(CellRecord {
            index: 1,
            code: code.into(),
            stdout: String::new(),
            stderr: String::new(),
            error: None,
            duration_ms: 1.0,
            truncated_chars: 0,
        })
    }

    #[test]
    fn every_event_joins_the_first_events_tree_in_order() {
        let (root, child, stray) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut tree = RunTree::new("service");
        assert!(tree.is_empty() && tree.root().is_none() && tree.summary().is_none());
        assert_eq!(tree.outline(0, 10).total, 0);
        let events = [
            event(root, None, 0, metadata("top")),
            event(child, Some(root), 1, metadata("inner")),
            // A run whose parent the tree has not seen still belongs to this tree.
            event(stray, Some(Uuid::new_v4()), 2, cell("x = 1")),
            event(root, None, 0, cell("y = 2")),
        ];
        let updates: Vec<Update> = events.iter().map(|e| tree.push(RunTree::outline_of(e))).collect();
        assert_eq!(updates.last(), Some(&Update::Events { run_id: root, events: 4 }));
        assert_eq!(tree.root(), Some(root));
        assert_eq!(tree.len(), 4);
        let summary = tree.summary().unwrap();
        assert_eq!((summary.run_id, summary.events, summary.child_runs), (root, 4, 1));
        assert_eq!(summary.query.as_deref(), Some("top"));
        assert_eq!(summary.source, "service");
        let page = tree.outline(1, 2);
        assert_eq!((page.offset, page.total), (1, 4));
        assert_eq!(page.items.iter().map(|o| o.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(page.items[1].run_id, Some(stray));
        assert_eq!(page.items[1].preview.as_deref(), Some("x = 1"));
    }
}
