use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{CellError, ChatMessage, ContextInfo, Result, SharedText, SubCallKind, Usage, UsageReport};

/// One line of a trajectory. Every run in a recursive tree writes its own events; a child run names its parent run
/// and the sub-call event that started it, so the tree can be rebuilt from a flat stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceEvent {
    /// Unique id of this event.
    pub event_id: Uuid,
    /// The run the event belongs to.
    pub run_id: Uuid,
    /// The parent run, for a child RLM started by `rlm_query`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_run_id: Option<Uuid>,
    /// The `sub_call` event whose child RLM this run is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_event_id: Option<Uuid>,
    /// Nesting level of the run: 0 for the top-level run.
    pub depth: u32,
    /// Root-loop iteration (1-based) of this run the event belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iteration: Option<u32>,
    /// When the recorded thing started.
    pub ts: DateTime<Utc>,
    /// What happened, tagged by `type`.
    #[serde(flatten)]
    pub body: EventBody,
}

/// The kinds of trace events, serialized with a `type` tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// First event of every run: how it was configured. Never contains credentials.
    Metadata(RunMetadata),
    /// A call of this run's root loop to its model.
    ModelCall(ModelCallRecord),
    /// One executed code block.
    Cell(CellRecord),
    /// One prompt sent from code via `llm_query*` or `rlm_query*`.
    SubCall(SubCallRecord),
    /// Older turns of the root conversation were replaced by a summary so that it stays inside the model's window.
    Compaction(CompactionRecord),
    /// Last event of every run.
    Final(FinalRecord),
}

/// Why a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishedBy {
    /// `FINAL(answer)` in the model's text.
    Final,
    /// `FINAL_VAR(name)` in text or code.
    FinalVar,
    /// Code set `answer["ready"] = True`.
    Answer,
    /// A limit ran out; the answer is the model's best final answer when asked once more.
    Limit,
    /// The caller cancelled the run.
    Cancelled,
    /// The run could not continue (for example the model provider kept failing).
    Error,
    /// Routing answered with one direct model call that saw the whole context (it fit the model's window).
    Direct,
}

impl FinishedBy {
    /// The name used in traces and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Final => "final",
            Self::FinalVar => "final_var",
            Self::Answer => "answer",
            Self::Limit => "limit",
            Self::Cancelled => "cancelled",
            Self::Error => "error",
            Self::Direct => "direct",
        }
    }
}

/// Which limit ended a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    /// The root loop ran its maximum number of iterations.
    MaxIterations,
    /// The wall-clock limit of the run tree passed.
    Timeout,
    /// The run tree used its sub-call budget.
    MaxSubCalls,
    /// The run tree used its token budget.
    MaxTokens,
    /// The model sent the same reply several times in a row, despite being told to change course.
    Repetition,
    /// The tree's spending reached its budget in US dollars.
    MaxCost,
}

impl LimitKind {
    /// The limit in words, for messages: "the time limit".
    pub fn describe(self) -> &'static str {
        match self {
            Self::MaxIterations => "the maximum number of iterations",
            Self::Timeout => "the time limit",
            Self::MaxSubCalls => "the sub-call budget",
            Self::MaxTokens => "the token budget",
            Self::Repetition => "the repetition limit (the same reply several times in a row)",
            Self::MaxCost => "the cost budget",
        }
    }
}

/// How a run was configured: the body of its `metadata` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMetadata {
    /// Version of the rlm library that ran it.
    pub rlm_version: String,
    /// The question the run answers.
    pub query: String,
    /// Model used by this run's root loop.
    pub root_model: String,
    /// Default model for `llm_query` from this run.
    pub sub_model: String,
    /// The whole configuration of the run tree, as configured.
    pub config: serde_json::Value,
    /// Which executor ran the code: `local`, `wasm`, `remote`, or `none` for a direct answer.
    pub executor: String,
    /// Shape and size of the context.
    pub context: ContextInfo,
    /// How routing decided to answer this run (top-level runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteDecision>,
}

/// The two ways a query can be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoutePath {
    /// One model call with the whole context in the prompt.
    Direct,
    /// The recursive loop over a REPL.
    Rlm,
}

impl RoutePath {
    /// The name used in traces and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Rlm => "rlm",
        }
    }
}

/// Which path a run took, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteDecision {
    /// The path taken.
    pub path: RoutePath,
    /// One sentence for people: the estimate against the window, or the route mode that chose the path.
    pub reason: String,
    /// Estimated prompt tokens of a direct call, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_tokens: Option<u64>,
    /// The root model's window in tokens, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_tokens: Option<u64>,
}

/// Why the root loop called its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelCallPurpose {
    /// A normal iteration of the root loop.
    Iteration,
    /// The one extra call made after a limit ran out, asking for the best final answer.
    FinalAnswer,
    /// The single call of a run that routing answered directly, with the whole context in the prompt.
    Direct,
}

/// One call of a root loop to its model: the body of a `model_call` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCallRecord {
    /// Why the call was made.
    pub purpose: ModelCallPurpose,
    /// The model asked.
    pub model: String,
    /// Messages appended to the history since this run's previous model call; the full request is the
    /// concatenation of `new_messages` over the run's model calls so far.
    pub new_messages: Vec<ChatMessage>,
    /// Number of messages sent in this request.
    pub history_len: usize,
    /// The model's reply; `None` when the call failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// Tokens of this call.
    #[serde(default)]
    pub usage: Usage,
    /// Wall-clock time of the call, retries included.
    pub latency_ms: f64,
    /// Why the call failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One executed code block: the body of a `cell` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellRecord {
    /// 1-based number of the cell in its run, counting every cell of every iteration (like a notebook).
    pub index: u32,
    /// The code as the model wrote it.
    pub code: String,
    /// Output as the model saw it (after truncation).
    pub stdout: String,
    /// Standard error as the model saw it.
    pub stderr: String,
    /// The exception the cell raised, or its interruption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CellError>,
    /// Wall-clock time the cell ran.
    pub duration_ms: f64,
    /// Characters of output the model did not see (truncation plus capture limit).
    #[serde(default)]
    pub truncated_chars: u64,
}

/// One prompt sent from code: the body of a `sub_call` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubCallRecord {
    /// Which function sent it.
    pub kind: SubCallKind,
    /// The model that answered.
    pub model: String,
    /// The prompt text.
    pub prompt: SharedText,
    /// The answer; `None` when the call failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// Why the call failed, when it did (the code got this text instead of an answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Tokens of this call (for `rlm` calls: of the whole child tree).
    #[serde(default)]
    pub usage: Usage,
    /// Wall-clock time of the call.
    pub latency_ms: f64,
    /// Identifies the `*_batched` call this prompt was part of, with its position and the batch size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<Uuid>,
    /// Position of the prompt in its batch (0-based).
    #[serde(default)]
    pub batch_index: u32,
    /// Prompts in the batch (1 for a single call).
    #[serde(default = "one")]
    pub batch_size: u32,
    /// The child run of an `rlm` call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_run_id: Option<Uuid>,
}

/// One compaction of a root conversation: which messages the summary replaced, and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactionRecord {
    /// The root model, which wrote the summary.
    pub model: String,
    /// Messages replaced by the summary.
    pub replaced_messages: usize,
    /// Estimated prompt tokens of the conversation before the compaction.
    pub tokens_before: u64,
    /// Estimated prompt tokens of the conversation after it.
    pub tokens_after: u64,
    /// The root model's window.
    pub window_tokens: u64,
    /// The fraction of the window that triggered the compaction.
    pub threshold: f64,
    /// The summary that now stands in for the replaced messages; `None` when the summary call failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The REPL variable that holds the full messages.
    pub history_variable: String,
    /// Tokens of the summary call.
    #[serde(default)]
    pub usage: Usage,
    /// How long the summary call took.
    pub latency_ms: f64,
    /// Why the summary or the `history` variable failed, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn one() -> u32 {
    1
}

/// How a run ended: the body of its `final` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalRecord {
    /// The answer; `None` when the run ended without a usable one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// How the run ended.
    pub finished_by: FinishedBy,
    /// Which limit ran out, when `finished_by` is `limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<LimitKind>,
    /// Root-loop iterations of this run.
    pub iterations: u32,
    /// Sub-calls made by this run and its descendants.
    pub sub_calls: u64,
    /// Usage of this run and its descendants.
    pub usage: UsageReport,
    /// Wall-clock time of the run.
    pub duration_ms: f64,
    /// Why the run ended without an answer, or why its last answer was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where trajectory events go. `record` must not block the RLM loop for long: sinks that talk to slow systems
/// queue internally.
pub trait TraceSink: Send + Sync + std::fmt::Debug {
    /// Takes one event. Must return quickly.
    fn record(&self, event: &TraceEvent);

    /// Makes everything recorded so far durable (or hands it to the sink's queue), reporting the first failure.
    fn flush(&self) -> Result<()>;

    /// Passes on what the sink has buffered (a file sink: one write), without waiting for it to be durable. The engine
    /// calls it each time a run starts to wait for a model or a cell, once that work is under way elsewhere: the
    /// write overlaps the wait, and while a run waits its trace holds everything recorded so far. Must return
    /// quickly; errors surface in [`TraceSink::flush`].
    fn write_out(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_flat_with_a_type_tag_and_round_trip() -> serde_json::Result<()> {
        let event = TraceEvent {
            event_id: Uuid::nil(),
            run_id: Uuid::nil(),
            parent_run_id: None,
            parent_event_id: None,
            depth: 0,
            iteration: Some(2),
            ts: DateTime::<Utc>::UNIX_EPOCH,
            body: EventBody::Cell(CellRecord {
                index: 1,
                code: "print(1)".into(),
                stdout: "1\n".into(),
                stderr: String::new(),
                error: None,
                duration_ms: 0.5,
                truncated_chars: 0,
            }),
        };
        let json = serde_json::to_value(&event)?;
        assert_eq!(json["type"], "cell");
        assert_eq!(json["iteration"], 2);
        assert_eq!(json["code"], "print(1)");
        assert!(json.get("parent_run_id").is_none());
        let back: TraceEvent = serde_json::from_value(json)?;
        assert_eq!(back, event);
        Ok(())
    }
}
