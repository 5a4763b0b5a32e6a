use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{CellError, ChatMessage, ContextInfo, Result, SubCallKind, Usage, UsageReport};

/// One line of a trajectory. Every run in a recursive tree writes its own events; a child run names its parent run
/// and the sub-call event that started it, so the tree can be rebuilt from a flat stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceEvent {
    pub event_id: Uuid,
    pub run_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_run_id: Option<Uuid>,
    /// The `sub_call` event whose child RLM this run is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_event_id: Option<Uuid>,
    pub depth: u32,
    /// Root-loop iteration (1-based) of this run the event belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iteration: Option<u32>,
    /// When the recorded thing started.
    pub ts: DateTime<Utc>,
    #[serde(flatten)]
    pub body: EventBody,
}

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
    MaxIterations,
    Timeout,
    MaxSubCalls,
    MaxTokens,
    /// The model sent the same reply several times in a row, despite being told to change course.
    Repetition,
    /// The tree's spending reached its budget in US dollars.
    MaxCost,
}

impl LimitKind {
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMetadata {
    pub rlm_version: String,
    pub query: String,
    /// Model used by this run's root loop.
    pub root_model: String,
    /// Default model for `llm_query` from this run.
    pub sub_model: String,
    /// The whole configuration of the run tree, as configured.
    pub config: serde_json::Value,
    pub executor: String,
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
    pub path: RoutePath,
    /// One sentence for people: the estimate against the window, or the flag that forced the path.
    pub reason: String,
    /// Estimated prompt tokens of a direct call, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_tokens: Option<u64>,
    /// The root model's window in tokens, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_tokens: Option<u64>,
}

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCallRecord {
    pub purpose: ModelCallPurpose,
    pub model: String,
    /// Messages appended to the history since this run's previous model call; the full request is the
    /// concatenation of `new_messages` over the run's model calls so far.
    pub new_messages: Vec<ChatMessage>,
    /// Number of messages sent in this request.
    pub history_len: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    #[serde(default)]
    pub usage: Usage,
    pub latency_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellRecord {
    /// 1-based number of the cell in its run, counting every cell of every iteration (like a notebook).
    pub index: u32,
    pub code: String,
    /// Output as the model saw it (after truncation).
    pub stdout: String,
    pub stderr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CellError>,
    pub duration_ms: f64,
    /// Characters of output the model did not see (truncation plus capture limit).
    #[serde(default)]
    pub truncated_chars: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubCallRecord {
    pub kind: SubCallKind,
    pub model: String,
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Tokens of this call (for `rlm` calls: of the whole child tree).
    #[serde(default)]
    pub usage: Usage,
    pub latency_ms: f64,
    /// Identifies the `*_batched` call this prompt was part of, with its position and the batch size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<Uuid>,
    #[serde(default)]
    pub batch_index: u32,
    #[serde(default = "one")]
    pub batch_size: u32,
    /// The child run of an `rlm` call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_run_id: Option<Uuid>,
}

/// One compaction of a root conversation: which messages the summary replaced, and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactionRecord {
    pub model: String,
    /// Messages replaced by the summary.
    pub replaced_messages: usize,
    /// Estimated prompt tokens of the conversation before and after.
    pub tokens_before: u64,
    pub tokens_after: u64,
    /// The root model's window, and the fraction of it that triggered the compaction.
    pub window_tokens: u64,
    pub threshold: f64,
    /// The summary that now stands in for the replaced messages; `None` when the summary call failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The REPL variable that holds the full messages.
    pub history_variable: String,
    #[serde(default)]
    pub usage: Usage,
    pub latency_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    pub finished_by: FinishedBy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<LimitKind>,
    pub iterations: u32,
    /// Sub-calls made by this run and its descendants.
    pub sub_calls: u64,
    /// Usage of this run and its descendants.
    pub usage: UsageReport,
    pub duration_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where trajectory events go. `record` must not block the RLM loop for long: sinks that talk to slow systems
/// queue internally.
pub trait TraceSink: Send + Sync + std::fmt::Debug {
    fn record(&self, event: &TraceEvent);

    /// Makes everything recorded so far durable (or hands it to the sink's queue), reporting the first failure.
    fn flush(&self) -> Result<()>;
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
