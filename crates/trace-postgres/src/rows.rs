//! Turns trace events into the rows of the typed tables, column by column, ready for `INSERT ... SELECT FROM
//! UNNEST(...)` (one statement per table and batch).

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use rlm_models::Prices;
use rlm_protocol::{EventBody, ModelCallPurpose, SubCallKind, TraceEvent};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::columns::table_rows;

/// What the converter remembers about a run between its events: its max depth (from `metadata`) and the size of
/// the root model's request so far (the request is the concatenation of every call's `new_messages`).
#[derive(Debug, Default, Clone)]
struct RunState {
    max_depth: Option<i32>,
    request_chars: i64,
}

#[derive(Debug)]
pub(crate) struct ConverterState(HashMap<Uuid, RunState>);

/// Converts events to rows. Keeps a little per-run state, dropped at each run's `final` event.
#[derive(Debug, Default)]
pub struct Converter {
    prices: Prices,
    runs: HashMap<Uuid, RunState>,
}

table_rows! {
    /// `rlm_events`: every event, whole, as jsonb.
    EventRows => "rlm_events" {
        time: DateTime<Utc> = "timestamptz",
        event_id: Uuid = "uuid",
        run_id: Uuid = "uuid",
        parent_run_id: Option<Uuid> = "uuid",
        parent_event_id: Option<Uuid> = "uuid",
        depth: i32 = "int4",
        iteration: Option<i32> = "int4",
        event_type: String = "text",
        event: String = "text" as "jsonb",
    }
}

table_rows! {
    /// `rlm_latency_events`: one row per model call and cell, with its start (the event's time) and end.
    LatencyRows => "rlm_latency_events" {
        time: DateTime<Utc> = "timestamptz",
        event_id: Uuid = "uuid",
        run_id: Uuid = "uuid",
        parent_run_id: Option<Uuid> = "uuid",
        event_type: &'static str = "text",
        subtype: &'static str = "text",
        model: Option<String> = "text",
        end_time: DateTime<Utc> = "timestamptz",
        duration_ms: f64 = "float8",
        iteration: Option<i32> = "int4",
        depth: i32 = "int4",
        max_depth: Option<i32> = "int4",
        success: bool = "bool",
        error: Option<String> = "text",
    }
    derived { start_time = "u.time" }
}

table_rows! {
    /// `rlm_model_interactions`: one row per model call, with usage and cost.
    ModelRows => "rlm_model_interactions" {
        time: DateTime<Utc> = "timestamptz",
        event_id: Uuid = "uuid",
        run_id: Uuid = "uuid",
        call_type: &'static str = "text",
        subtype: &'static str = "text",
        model: String = "text",
        prompt_tokens: i64 = "int8",
        completion_tokens: i64 = "int8",
        cached_tokens: i64 = "int8",
        cost_usd: Option<f64> = "float8",
        context_chars: i64 = "int8",
        history_len: Option<i32> = "int4",
        response_chars: i64 = "int8",
        latency_ms: f64 = "float8",
        iteration: Option<i32> = "int4",
        depth: i32 = "int4",
        success: bool = "bool",
        error: Option<String> = "text",
    }
    derived { total_tokens = "u.prompt_tokens + u.completion_tokens" }
}

table_rows! {
    /// `rlm_code_executions`: one row per cell run.
    CodeRows => "rlm_code_executions" {
        time: DateTime<Utc> = "timestamptz",
        event_id: Uuid = "uuid",
        run_id: Uuid = "uuid",
        cell_index: i32 = "int4",
        code: String = "text",
        code_sha256: String = "text",
        code_chars: i64 = "int8",
        stdout_chars: i64 = "int8",
        stderr_chars: i64 = "int8",
        truncated_chars: i64 = "int8",
        duration_ms: f64 = "float8",
        iteration: Option<i32> = "int4",
        depth: i32 = "int4",
        success: bool = "bool",
        error_kind: Option<String> = "text",
        error_message: Option<String> = "text",
    }
}

table_rows! {
    /// `rlm_runs`: one row per run, written at its `final` event (the per-run aggregates are refreshed separately).
    RunRows => "rlm_runs" {
        time: DateTime<Utc> = "timestamptz",
        run_id: Uuid = "uuid",
        parent_run_id: Option<Uuid> = "uuid",
        parent_event_id: Option<Uuid> = "uuid",
        depth: i32 = "int4",
        started_at: DateTime<Utc> = "timestamptz",
        status: &'static str = "text",
        limit_kind: Option<String> = "text",
        error: Option<String> = "text",
        iterations: i32 = "int4",
        sub_calls: i64 = "int8",
        prompt_tokens: i64 = "int8",
        completion_tokens: i64 = "int8",
        cached_tokens: i64 = "int8",
        cost_usd: Option<f64> = "float8",
        duration_ms: f64 = "float8",
        answer_chars: Option<i64> = "int8",
    }
}

/// The rows of one batch of events.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub events: EventRows,
    pub latency: LatencyRows,
    pub models: ModelRows,
    pub code: CodeRows,
    pub runs: RunRows,
    /// Every run the batch touches: their summary rows are refreshed after the insert.
    pub touched_runs: Vec<Uuid>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.events.len()
    }
}

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn int32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn chars(text: &str) -> i64 {
    int(text.chars().count() as u64)
}

fn replace_nul(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(text) if text.contains('\0') => *text = text.replace('\0', "\u{FFFD}"),
        serde_json::Value::Array(items) => items.iter_mut().for_each(replace_nul),
        serde_json::Value::Object(map) => {
            // Keys are field names or model names; a NUL there is as unstorable as in a value.
            let entries = std::mem::take(map);
            for (key, mut item) in entries {
                replace_nul(&mut item);
                map.insert(key.replace('\0', "\u{FFFD}"), item);
            }
        }
        _ => {}
    }
}

fn end_of(start: DateTime<Utc>, duration_ms: f64) -> DateTime<Utc> {
    let micros = if duration_ms.is_finite() { (duration_ms * 1000.0).round() as i64 } else { 0 };
    start + Duration::microseconds(micros.max(0))
}

impl Converter {
    pub fn new(prices: Prices) -> Self {
        Self { prices, runs: HashMap::new() }
    }

    pub fn prices(&self) -> &Prices {
        &self.prices
    }

    pub(crate) fn snapshot(&self) -> ConverterState {
        ConverterState(self.runs.clone())
    }

    /// Forgets what was learnt since `snapshot` (the batch was not stored and will be converted again).
    pub(crate) fn restore(&mut self, state: ConverterState) {
        self.runs = state.0;
    }

    /// Adds the rows of `event` to `batch`. PostgreSQL text and jsonb cannot hold NUL characters: any in the event's
    /// strings (model output, captured stdout...) are stored as U+FFFD.
    pub(crate) fn add(&mut self, batch: &mut Batch, event: &TraceEvent) {
        let raw = serde_json::to_string(event).unwrap_or_default();
        if raw.contains("\\u0000") {
            let mut value = serde_json::to_value(event).unwrap_or_default();
            replace_nul(&mut value);
            if let Ok(clean) = serde_json::from_value::<TraceEvent>(value.clone()) {
                self.add_clean(batch, &clean, value.to_string());
                return;
            }
        }
        self.add_clean(batch, event, raw);
    }

    fn add_clean(&mut self, batch: &mut Batch, event: &TraceEvent, raw: String) {
        let iteration = event.iteration.map(int32);
        let depth = int32(event.depth);
        let type_name = match &event.body {
            EventBody::Metadata(_) => "metadata",
            EventBody::ModelCall(_) => "model_call",
            EventBody::Cell(_) => "cell",
            EventBody::SubCall(_) => "sub_call",
            EventBody::Compaction(_) => "compaction",
            EventBody::Final(_) => "final",
        };
        let rows = &mut batch.events;
        rows.time.push(event.ts);
        rows.event_id.push(event.event_id);
        rows.run_id.push(event.run_id);
        rows.parent_run_id.push(event.parent_run_id);
        rows.parent_event_id.push(event.parent_event_id);
        rows.depth.push(depth);
        rows.iteration.push(iteration);
        rows.event_type.push(type_name.to_owned());
        rows.event.push(raw);
        if !batch.touched_runs.contains(&event.run_id) {
            batch.touched_runs.push(event.run_id);
        }

        match &event.body {
            EventBody::Metadata(metadata) => {
                let max_depth = metadata
                    .config
                    .pointer("/limits/max_depth")
                    .and_then(serde_json::Value::as_u64)
                    .map(|d| i32::try_from(d).unwrap_or(i32::MAX));
                self.runs.entry(event.run_id).or_default().max_depth = max_depth;
            }
            EventBody::ModelCall(call) => {
                let state = self.runs.entry(event.run_id).or_default();
                state.request_chars += call.new_messages.iter().map(|m| chars(&m.content)).sum::<i64>();
                let subtype = match call.purpose {
                    ModelCallPurpose::Iteration => "iteration",
                    ModelCallPurpose::FinalAnswer => "final_answer",
                    ModelCallPurpose::Direct => "direct",
                };
                let max_depth = state.max_depth;
                let context_chars = state.request_chars;
                self.latency(
                    batch,
                    event,
                    "root_model",
                    subtype,
                    Some(&call.model),
                    call.latency_ms,
                    max_depth,
                    &call.error,
                );
                let response = call.response.as_deref().unwrap_or_default();
                let m = &mut batch.models;
                m.time.push(event.ts);
                m.event_id.push(event.event_id);
                m.run_id.push(event.run_id);
                m.call_type.push("root_model");
                m.subtype.push(subtype);
                m.model.push(call.model.clone());
                m.prompt_tokens.push(int(call.usage.prompt_tokens));
                m.completion_tokens.push(int(call.usage.completion_tokens));
                m.cached_tokens.push(int(call.usage.cached_tokens));
                m.cost_usd.push(self.prices.cost(&call.model, &call.usage));
                m.context_chars.push(context_chars);
                m.history_len.push(Some(i32::try_from(call.history_len).unwrap_or(i32::MAX)));
                m.response_chars.push(chars(response));
                m.latency_ms.push(call.latency_ms);
                m.iteration.push(iteration);
                m.depth.push(depth);
                m.success.push(call.error.is_none());
                m.error.push(call.error.clone());
            }
            EventBody::Compaction(record) => {
                // The summary call is a root-model call like any other: its tokens and latency count.
                let max_depth = self.runs.get(&event.run_id).and_then(|s| s.max_depth);
                self.latency(
                    batch,
                    event,
                    "root_model",
                    "compaction",
                    Some(&record.model),
                    record.latency_ms,
                    max_depth,
                    &record.error,
                );
                let m = &mut batch.models;
                m.time.push(event.ts);
                m.event_id.push(event.event_id);
                m.run_id.push(event.run_id);
                m.call_type.push("root_model");
                m.subtype.push("compaction");
                m.model.push(record.model.clone());
                m.prompt_tokens.push(int(record.usage.prompt_tokens));
                m.completion_tokens.push(int(record.usage.completion_tokens));
                m.cached_tokens.push(int(record.usage.cached_tokens));
                m.cost_usd.push(self.prices.cost(&record.model, &record.usage));
                let context_chars = self.runs.get(&event.run_id).map_or(0, |s| s.request_chars);
                m.context_chars.push(context_chars);
                m.history_len.push(Some(i32::try_from(record.replaced_messages).unwrap_or(i32::MAX)));
                m.response_chars.push(chars(record.summary.as_deref().unwrap_or_default()));
                m.latency_ms.push(record.latency_ms);
                m.iteration.push(iteration);
                m.depth.push(depth);
                m.success.push(record.error.is_none());
                m.error.push(record.error.clone());
            }
            EventBody::SubCall(call) => {
                let subtype = match call.kind {
                    SubCallKind::Llm => "llm",
                    SubCallKind::Rlm => "rlm",
                };
                let max_depth = self.runs.get(&event.run_id).and_then(|s| s.max_depth);
                self.latency(
                    batch,
                    event,
                    "recursive_model",
                    subtype,
                    Some(&call.model),
                    call.latency_ms,
                    max_depth,
                    &call.error,
                );
                // A child run's model calls are recorded by the child's own events; only a call that was a single
                // model call is a model interaction here (counting both would count the tokens twice).
                if call.child_run_id.is_none() {
                    let m = &mut batch.models;
                    m.time.push(event.ts);
                    m.event_id.push(event.event_id);
                    m.run_id.push(event.run_id);
                    m.call_type.push("recursive_model");
                    m.subtype.push(subtype);
                    m.model.push(call.model.clone());
                    m.prompt_tokens.push(int(call.usage.prompt_tokens));
                    m.completion_tokens.push(int(call.usage.completion_tokens));
                    m.cached_tokens.push(int(call.usage.cached_tokens));
                    m.cost_usd.push(self.prices.cost(&call.model, &call.usage));
                    m.context_chars.push(chars(&call.prompt));
                    m.history_len.push(None);
                    m.response_chars.push(chars(call.response.as_deref().unwrap_or_default()));
                    m.latency_ms.push(call.latency_ms);
                    m.iteration.push(iteration);
                    m.depth.push(depth);
                    m.success.push(call.error.is_none());
                    m.error.push(call.error.clone());
                }
            }
            EventBody::Cell(cell) => {
                let max_depth = self.runs.get(&event.run_id).and_then(|s| s.max_depth);
                let error = cell.error.as_ref().map(ToString::to_string);
                self.latency(batch, event, "code_execution", "cell", None, cell.duration_ms, max_depth, &error);
                let c = &mut batch.code;
                c.time.push(event.ts);
                c.event_id.push(event.event_id);
                c.run_id.push(event.run_id);
                c.cell_index.push(int32(cell.index));
                c.code.push(cell.code.clone());
                let digest = Sha256::digest(cell.code.as_bytes());
                c.code_sha256.push(digest.iter().map(|b| format!("{b:02x}")).collect());
                c.code_chars.push(chars(&cell.code));
                c.stdout_chars.push(chars(&cell.stdout));
                c.stderr_chars.push(chars(&cell.stderr));
                c.truncated_chars.push(int(cell.truncated_chars));
                c.duration_ms.push(cell.duration_ms);
                c.iteration.push(iteration);
                c.depth.push(depth);
                c.success.push(cell.error.is_none());
                c.error_kind.push(cell.error.as_ref().map(|e| e.kind.clone()));
                c.error_message.push(cell.error.as_ref().map(|e| e.message.clone()));
            }
            EventBody::Final(done) => {
                self.runs.remove(&event.run_id);
                let r = &mut batch.runs;
                r.time.push(event.ts);
                r.run_id.push(event.run_id);
                r.parent_run_id.push(event.parent_run_id);
                r.parent_event_id.push(event.parent_event_id);
                r.depth.push(depth);
                let micros = if done.duration_ms.is_finite() { (done.duration_ms * 1000.0).round() as i64 } else { 0 };
                r.started_at.push(event.ts - Duration::microseconds(micros.max(0)));
                r.status.push(done.finished_by.as_str());
                r.limit_kind.push(
                    done.limit.and_then(|l| serde_json::to_value(l).ok()).and_then(|v| v.as_str().map(str::to_owned)),
                );
                r.error.push(done.error.clone());
                r.iterations.push(int32(done.iterations));
                r.sub_calls.push(int(done.sub_calls));
                r.prompt_tokens.push(int(done.usage.total.prompt_tokens));
                r.completion_tokens.push(int(done.usage.total.completion_tokens));
                r.cached_tokens.push(int(done.usage.total.cached_tokens));
                r.cost_usd.push(self.prices.report_cost(&done.usage));
                r.duration_ms.push(done.duration_ms);
                r.answer_chars.push(done.answer.as_deref().map(chars));
            }
        }
    }

    #[allow(clippy::too_many_arguments, reason = "one row's columns")]
    fn latency(
        &self,
        batch: &mut Batch,
        event: &TraceEvent,
        event_type: &'static str,
        subtype: &'static str,
        model: Option<&str>,
        duration_ms: f64,
        max_depth: Option<i32>,
        error: &Option<String>,
    ) {
        let l = &mut batch.latency;
        l.time.push(event.ts);
        l.event_id.push(event.event_id);
        l.run_id.push(event.run_id);
        l.parent_run_id.push(event.parent_run_id);
        l.event_type.push(event_type);
        l.subtype.push(subtype);
        l.model.push(model.map(str::to_owned));
        l.end_time.push(end_of(event.ts, duration_ms));
        l.duration_ms.push(duration_ms);
        l.iteration.push(event.iteration.map(int32));
        l.depth.push(int32(event.depth));
        l.max_depth.push(max_depth);
        l.success.push(error.is_none());
        l.error.push(error.clone());
    }
}

#[cfg(test)]
mod tests {
    use rlm_protocol::{
        CellRecord, ChatMessage, ContextInfo, FinalRecord, FinishedBy, ModelCallRecord, RunMetadata, SubCallRecord,
        Usage, UsageReport,
    };

    use super::*;

    fn event(run_id: Uuid, body: EventBody) -> TraceEvent {
        TraceEvent {
            event_id: Uuid::new_v4(),
            run_id,
            parent_run_id: None,
            parent_event_id: None,
            depth: 0,
            iteration: Some(1),
            ts: Utc::now(),
            body,
        }
    }

    fn model_call(text: &str) -> EventBody {
        EventBody::ModelCall(ModelCallRecord {
            purpose: ModelCallPurpose::Iteration,
            model: "gpt-4o".into(),
            new_messages: vec![ChatMessage::user(text)],
            history_len: 1,
            response: Some("ok".into()),
            usage: Usage {
                prompt_tokens: 1000,
                completion_tokens: 100,
                cached_tokens: 0,
                calls: 1,
                ..Usage::default()
            },
            latency_ms: 12.5,
            error: None,
        })
    }

    fn sub_call(child: Option<Uuid>) -> EventBody {
        EventBody::SubCall(SubCallRecord {
            kind: if child.is_some() { SubCallKind::Rlm } else { SubCallKind::Llm },
            model: "gpt-4o-mini".into(),
            prompt: "four".into(),
            response: None,
            error: Some("boom".into()),
            usage: Usage::default(),
            latency_ms: 3.0,
            batch_id: None,
            batch_index: 0,
            batch_size: 1,
            child_run_id: child,
        })
    }

    #[test]
    fn events_become_typed_rows() {
        let run = Uuid::new_v4();
        let mut converter = Converter::new(Prices::builtin());
        let mut batch = Batch::default();
        let metadata = EventBody::Metadata(RunMetadata {
            rlm_version: "0".into(),
            query: "q".into(),
            root_model: "gpt-4o".into(),
            sub_model: "gpt-4o-mini".into(),
            config: serde_json::json!({"limits": {"max_depth": 3}}),
            executor: "local".into(),
            context: ContextInfo { python_type: "str".into(), total_chars: 1, chunk_lengths: vec![1], chunk_count: 1 },
            route: None,
        });
        let cell = EventBody::Cell(CellRecord {
            index: 1,
            code: "print(1)".into(),
            stdout: "1\n".into(),
            stderr: String::new(),
            error: None,
            duration_ms: 2.0,
            truncated_chars: 0,
        });
        let done = EventBody::Final(FinalRecord {
            answer: Some("42".into()),
            finished_by: FinishedBy::Final,
            limit: None,
            iterations: 2,
            sub_calls: 2,
            usage: UsageReport::default(),
            duration_ms: 1500.0,
            error: None,
        });
        for body in
            [metadata, model_call("abc"), cell, sub_call(None), sub_call(Some(Uuid::new_v4())), model_call("de"), done]
        {
            converter.add(&mut batch, &event(run, body));
        }
        assert_eq!(batch.len(), 7);
        assert_eq!(batch.touched_runs, [run]);
        assert_eq!(
            batch.latency.event_type,
            ["root_model", "code_execution", "recursive_model", "recursive_model", "root_model"]
        );
        assert_eq!(batch.latency.subtype, ["iteration", "cell", "llm", "rlm", "iteration"]);
        assert!(batch.latency.max_depth.iter().all(|d| *d == Some(3)));
        assert_eq!(batch.latency.success, [true, true, false, false, true]);
        // The child run's sub-call is not a model interaction; the request grows by each call's new messages.
        assert_eq!(batch.models.subtype, ["iteration", "llm", "iteration"]);
        assert_eq!(batch.models.context_chars, [3, 4, 5]);
        let cost = batch.models.cost_usd[0].unwrap_or_default();
        assert!((cost - (1000.0 * 0.0025 + 100.0 * 0.01) / 1000.0).abs() < 1e-12);
        assert_eq!(batch.code.code_sha256[0].len(), 64);
        assert_eq!(batch.runs.status, ["final"]);
        assert_eq!(batch.runs.time[0] - batch.runs.started_at[0], Duration::milliseconds(1500));
        assert_eq!(batch.runs.cost_usd, [Some(0.0)]);
        // The run's state is dropped at its final event.
        assert!(converter.runs.is_empty());
    }

    #[test]
    fn a_compaction_is_a_root_model_call_with_its_tokens() {
        let run = Uuid::new_v4();
        let mut converter = Converter::new(Prices::builtin());
        let mut batch = Batch::default();
        let compaction = EventBody::Compaction(rlm_protocol::CompactionRecord {
            model: "gpt-4o".into(),
            replaced_messages: 4,
            tokens_before: 3000,
            tokens_after: 1200,
            window_tokens: 4096,
            threshold: 0.85,
            summary: Some("found x".into()),
            history_variable: "history".into(),
            usage: Usage { prompt_tokens: 900, completion_tokens: 40, calls: 1, ..Usage::default() },
            latency_ms: 20.0,
            error: None,
        });
        converter.add(&mut batch, &event(run, model_call("abc")));
        converter.add(&mut batch, &event(run, compaction));
        assert_eq!(batch.events.event_type, ["model_call", "compaction"]);
        assert_eq!(batch.latency.subtype, ["iteration", "compaction"]);
        assert_eq!(batch.models.subtype, ["iteration", "compaction"]);
        assert_eq!(batch.models.prompt_tokens[1], 900);
        assert_eq!(batch.models.response_chars[1], 7);
        assert!(batch.models.cost_usd[1].is_some_and(|usd| usd > 0.0));
    }

    #[test]
    fn nul_characters_become_replacement_characters() {
        let mut converter = Converter::new(Prices::empty());
        let mut batch = Batch::default();
        let cell = EventBody::Cell(CellRecord {
            index: 1,
            code: "print('\\0')".into(),
            stdout: "a\0b".into(),
            stderr: String::new(),
            error: None,
            duration_ms: 1.0,
            truncated_chars: 0,
        });
        converter.add(&mut batch, &event(Uuid::new_v4(), cell));
        assert!(!batch.events.event[0].contains("\\u0000"), "{}", batch.events.event[0]);
        assert!(batch.events.event[0].contains("a\u{FFFD}b"));
        assert_eq!(batch.code.code[0], "print('\\0')", "a backslash-zero in code is not a NUL");
        assert_eq!(batch.code.stdout_chars[0], 3);
    }

    #[test]
    fn a_restored_snapshot_converts_the_same_events_to_the_same_rows() {
        let run = Uuid::new_v4();
        let mut converter = Converter::new(Prices::empty());
        let mut first = Batch::default();
        converter.add(&mut first, &event(run, model_call("abc")));
        let saved = converter.snapshot();
        let second_call = event(run, model_call("de"));
        let mut failed = Batch::default();
        converter.add(&mut failed, &second_call);
        converter.restore(saved);
        let mut retried = Batch::default();
        converter.add(&mut retried, &second_call);
        assert_eq!(failed.models.context_chars, retried.models.context_chars);
        assert_eq!(retried.models.cost_usd, [None], "no price, no cost");
    }
}
