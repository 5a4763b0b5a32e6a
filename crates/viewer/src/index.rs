//! The in-memory index shared by every source: for each event a small outline and where its full text lives, grouped
//! into top-level run trees with a running summary.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use crate::source::{EventOutline, Page, RunStatus, RunSummary, SourceError, Update};

/// Longest preview kept in an outline, in characters.
const PREVIEW_CHARS: usize = 160;
/// Longest query or answer kept in a run summary, in characters.
const SUMMARY_CHARS: usize = 400;

/// Tolerant view of one trace line: every field optional, unknown fields and event types accepted, so traces written
/// by other versions still open.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Probe {
    #[serde(rename = "type")]
    event_type: Option<String>,
    event_id: Option<Uuid>,
    run_id: Option<Uuid>,
    parent_run_id: Option<Uuid>,
    parent_event_id: Option<Uuid>,
    depth: Option<u32>,
    iteration: Option<u32>,
    ts: Option<DateTime<Utc>>,
    // metadata
    query: Option<String>,
    root_model: Option<String>,
    sub_model: Option<String>,
    // model_call
    purpose: Option<String>,
    model: Option<String>,
    response: Option<String>,
    latency_ms: Option<f64>,
    usage: Option<UsageProbe>,
    error: Option<serde_json::Value>,
    // cell
    index: Option<u32>,
    code: Option<String>,
    duration_ms: Option<f64>,
    truncated_chars: Option<u64>,
    // sub_call
    kind: Option<String>,
    prompt: Option<String>,
    batch_id: Option<Uuid>,
    batch_index: Option<u32>,
    batch_size: Option<u32>,
    child_run_id: Option<Uuid>,
    // compaction
    summary: Option<String>,
    replaced_messages: Option<u64>,
    tokens_before: Option<u64>,
    tokens_after: Option<u64>,
    // final
    answer: Option<String>,
    finished_by: Option<String>,
    limit: Option<String>,
    iterations: Option<u32>,
    sub_calls: Option<u64>,
    cost: Option<f64>,
}

/// `Usage` of a call or `UsageReport` of a run: either shape.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct UsageProbe {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    cost: Option<f64>,
    total: Option<Box<UsageProbe>>,
}

impl UsageProbe {
    fn tokens(&self) -> Option<u64> {
        match &self.total {
            Some(total) => total.tokens(),
            None if self.prompt_tokens.is_none() && self.completion_tokens.is_none() => None,
            None => Some(self.prompt_tokens.unwrap_or(0) + self.completion_tokens.unwrap_or(0)),
        }
    }

    fn cost(&self) -> Option<f64> {
        self.cost.or_else(|| self.total.as_ref().and_then(|t| t.cost()))
    }
}

pub(crate) fn shorten(text: &str, chars: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

fn one_line(text: &str) -> String {
    one_line_of(text, PREVIEW_CHARS)
}

fn one_line_of(text: &str, chars: usize) -> String {
    // Only the start of a long text matters: do not split megabytes of output into words.
    let head = match text.char_indices().nth(chars * 4) {
        Some((at, _)) => &text[..at],
        None => text,
    };
    shorten(&head.split_whitespace().collect::<Vec<_>>().join(" "), chars)
}

fn error_text(error: &serde_json::Value) -> Option<String> {
    match error {
        serde_json::Value::Null => None,
        serde_json::Value::String(text) => Some(one_line(text)),
        serde_json::Value::Object(fields) => {
            let kind = fields.get("kind").and_then(|k| k.as_str()).unwrap_or("Error");
            let message = fields.get("message").and_then(|m| m.as_str()).unwrap_or("");
            Some(one_line(&format!("{kind}: {message}")))
        }
        other => Some(one_line(&other.to_string())),
    }
}

/// Parses one trace line into an outline (with `seq` still unset); `None` when it is not a JSON object.
pub(crate) fn outline_line(line: &[u8]) -> Option<EventOutline> {
    let probe: Probe = serde_json::from_slice(line).ok()?;
    let kind = probe.event_type.clone().unwrap_or_else(|| "unknown".into());
    let preview = match kind.as_str() {
        "metadata" => probe.query.as_deref().map(|q| one_line_of(q, SUMMARY_CHARS)),
        "model_call" => probe.response.as_deref().map(one_line),
        "cell" => probe.code.as_deref().map(one_line),
        "sub_call" => probe.prompt.as_deref().map(one_line),
        "final" => probe.answer.as_deref().map(|a| one_line_of(a, SUMMARY_CHARS)),
        "compaction" => Some(one_line(&format!(
            "{} messages summarised, ~{} → ~{} tokens · {}",
            probe.replaced_messages.unwrap_or(0),
            probe.tokens_before.unwrap_or(0),
            probe.tokens_after.unwrap_or(0),
            probe.summary.as_deref().unwrap_or("(no summary)")
        ))),
        _ => None,
    };
    let usage = probe.usage.as_ref();
    Some(EventOutline {
        seq: 0,
        event_id: probe.event_id,
        run_id: probe.run_id,
        parent_run_id: probe.parent_run_id,
        parent_event_id: probe.parent_event_id,
        depth: probe.depth.unwrap_or(0),
        iteration: probe.iteration,
        ts_ms: probe.ts.map(|ts| ts.timestamp_micros() as f64 / 1000.0),
        ms: probe.latency_ms.or(probe.duration_ms),
        tokens: usage.and_then(UsageProbe::tokens),
        cost: probe.cost.or_else(|| usage.and_then(UsageProbe::cost)),
        error: probe.error.as_ref().and_then(error_text),
        truncated: probe.truncated_chars.filter(|n| *n > 0),
        call_kind: if kind == "sub_call" { probe.kind } else { None },
        model: probe.model.or(probe.root_model),
        purpose: probe.purpose,
        batch_id: probe.batch_id,
        batch_index: probe.batch_id.and(probe.batch_index),
        batch_size: probe.batch_id.and(probe.batch_size),
        child_run_id: probe.child_run_id,
        cell_index: probe.index,
        preview,
        finished_by: probe.finished_by,
        limit: probe.limit,
        iterations: probe.iterations,
        sub_calls: probe.sub_calls,
        bytes: line.len() as u64,
        kind,
    })
}

/// One indexed event: its outline and where its full text is (`L`: a byte range in a file, a slot in memory).
#[derive(Debug)]
struct Entry<L> {
    loc: L,
    outline: EventOutline,
}

#[derive(Debug, Default)]
struct Tree {
    entries: Vec<usize>,
    summary: RunSummary,
    finished: bool,
    last_ts_ms: Option<f64>,
}

/// Events grouped into top-level run trees.
#[derive(Debug)]
pub(crate) struct Index<L> {
    entries: Vec<Entry<L>>,
    /// Run id → the id of the top-level run of its tree.
    root_of: HashMap<Uuid, Uuid>,
    trees: HashMap<Uuid, Tree>,
    /// Top-level runs in the order they first appeared.
    order: Vec<Uuid>,
}

impl<L> Default for Index<L> {
    fn default() -> Self {
        Self { entries: Vec::new(), root_of: HashMap::new(), trees: HashMap::new(), order: Vec::new() }
    }
}

impl<L: Clone> Index<L> {
    /// Adds one event; returns the id of the run tree it joined.
    pub(crate) fn push(&mut self, loc: L, mut outline: EventOutline, source: &str) -> Uuid {
        let run_id = outline.run_id.unwrap_or(Uuid::nil());
        let root = match self.root_of.get(&run_id) {
            Some(root) => *root,
            None => {
                // A new run: a child joins its parent's tree, anything else starts a tree of its own.
                let root = outline.parent_run_id.and_then(|p| self.root_of.get(&p).copied()).unwrap_or(run_id);
                self.root_of.insert(run_id, root);
                root
            }
        };
        let tree = self.trees.entry(root).or_insert_with(|| {
            self.order.push(root);
            Tree {
                summary: RunSummary { run_id: root, source: source.to_owned(), ..RunSummary::default() },
                ..Tree::default()
            }
        });
        outline.seq = tree.entries.len();
        tree.entries.push(self.entries.len());
        summarize(tree, &outline, run_id == root);
        self.entries.push(Entry { loc, outline });
        root
    }

    /// Makes `run_id` part of the tree `root` (unless it already belongs to one): its events then join that tree.
    pub(crate) fn adopt(&mut self, run_id: Uuid, root: Uuid) {
        self.root_of.entry(run_id).or_insert(root);
    }

    pub(crate) fn summary(&self, root: Uuid) -> Option<&RunSummary> {
        self.trees.get(&root).map(|tree| &tree.summary)
    }

    pub(crate) fn runs(&self) -> Vec<RunSummary> {
        self.order.iter().filter_map(|id| self.trees.get(id)).map(|tree| tree.summary.clone()).collect()
    }

    pub(crate) fn len_of(&self, root: Uuid) -> usize {
        self.trees.get(&root).map_or(0, |tree| tree.entries.len())
    }

    pub(crate) fn outline(&self, root: Uuid, offset: usize, limit: usize) -> Result<Page<EventOutline>, SourceError> {
        let tree = self.trees.get(&root).ok_or(SourceError::UnknownRun(root))?;
        let items = slice(&tree.entries, offset, limit).iter().map(|&i| self.entries[i].outline.clone()).collect();
        Ok(Page { offset, total: tree.entries.len(), items })
    }

    /// Locations of the events `offset..offset + limit` of a tree, with their sizes.
    pub(crate) fn locations(&self, root: Uuid, offset: usize, limit: usize) -> Result<Page<L>, SourceError> {
        let tree = self.trees.get(&root).ok_or(SourceError::UnknownRun(root))?;
        let items = slice(&tree.entries, offset, limit).iter().map(|&i| self.entries[i].loc.clone()).collect();
        Ok(Page { offset, total: tree.entries.len(), items })
    }

    /// Updates for the trees touched since `before` entries were indexed.
    pub(crate) fn updates_since(&self, before: usize) -> Vec<Update> {
        let mut seen = Vec::new();
        for entry in &self.entries[before.min(self.entries.len())..] {
            let run = entry.outline.run_id.unwrap_or(Uuid::nil());
            let root = self.root_of.get(&run).copied().unwrap_or(run);
            if !seen.contains(&root) {
                seen.push(root);
            }
        }
        seen.into_iter().map(|run_id| Update::Events { run_id, events: self.len_of(run_id) }).collect()
    }

    pub(crate) fn total(&self) -> usize {
        self.entries.len()
    }
}

fn slice(entries: &[usize], offset: usize, limit: usize) -> &[usize] {
    let start = offset.min(entries.len());
    let end = start.saturating_add(limit).min(entries.len());
    &entries[start..end]
}

fn summarize(tree: &mut Tree, event: &EventOutline, top_level: bool) {
    let summary = &mut tree.summary;
    summary.events += 1;
    summary.bytes += event.bytes;
    if event.error.is_some() {
        summary.errors += 1;
    }
    if let Some(ts) = event.ts_ms {
        tree.last_ts_ms = Some(tree.last_ts_ms.map_or(ts, |last: f64| last.max(ts + event.ms.unwrap_or(0.0))));
    }
    match event.kind.as_str() {
        "metadata" if top_level => {
            summary.query = event.preview.clone();
            summary.root_model = event.model.clone();
            summary.started_ms = event.ts_ms;
        }
        "metadata" => summary.child_runs += 1,
        "sub_call" => summary.sub_calls += 1,
        "model_call" if !tree.finished => summary.tokens += event.tokens.unwrap_or(0),
        "final" if top_level => {
            tree.finished = true;
            summary.status = RunStatus::Finished;
            summary.answer = event.preview.clone();
            summary.finished_by = event.finished_by.clone();
            summary.limit = event.limit.clone();
            summary.error = event.error.clone();
            summary.iterations = event.iterations.unwrap_or(summary.iterations);
            summary.sub_calls = event.sub_calls.unwrap_or(summary.sub_calls);
            summary.tokens = event.tokens.unwrap_or(summary.tokens);
            summary.cost = event.cost;
            summary.duration_ms = event.ms;
        }
        _ => {}
    }
    if event.kind == "sub_call" && event.call_kind.as_deref() != Some("rlm") && !tree.finished {
        summary.tokens += event.tokens.unwrap_or(0);
    }
    if top_level && !tree.finished {
        if let Some(iteration) = event.iteration {
            summary.iterations = summary.iterations.max(iteration);
        }
        if let (Some(start), Some(last)) = (summary.started_ms, tree.last_ts_ms) {
            summary.duration_ms = Some(last - start);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compaction_line_gets_a_preview_with_its_numbers_and_summary() {
        let line = br#"{"type":"compaction","event_id":"01890000-0000-7000-8000-000000000001","run_id":"01890000-0000-7000-8000-000000000002","depth":0,"iteration":4,"ts":"2026-12-01T10:00:00Z","model":"root","replaced_messages":6,"tokens_before":3100,"tokens_after":1200,"window_tokens":4096,"threshold":0.85,"summary":"Found chunks 0-3.","history_variable":"history","usage":{"prompt_tokens":900,"completion_tokens":40},"latency_ms":12.5}"#;
        let outline = outline_line(line).unwrap_or_else(|| panic!("a JSON object gives an outline"));
        assert_eq!(outline.kind, "compaction");
        assert_eq!(outline.preview.as_deref(), Some("6 messages summarised, ~3100 → ~1200 tokens · Found chunks 0-3."));
        assert_eq!((outline.tokens, outline.ms, outline.iteration), (Some(940), Some(12.5), Some(4)));
    }
}
