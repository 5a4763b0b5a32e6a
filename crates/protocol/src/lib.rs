//! Shared vocabulary of rlm: chat messages, token usage, REPL contexts and cell outcomes, trace events, and the three
//! boundaries where implementations get swapped or faked — [`ModelClient`], [`Executor`]/[`ReplSession`] (with the
//! [`SubCallHost`] callback that code running in a REPL uses to reach models), and [`TraceSink`].
//!
//! This crate performs no I/O.

#![warn(missing_docs)]

mod context;
mod error;
mod exec;
mod message;
mod model;
pub mod sandbox;
mod secret;
mod text;
mod trace;
mod usage;

pub use context::{Context, ContextInfo};
pub use error::{Error, Result};
pub use exec::{
    AbortHandle, CellError, CellOutcome, Executor, FinalVar, ReplSession, SessionSpec, SubCall, SubCallHost,
    SubCallKind, SubCallResult,
};
pub use message::{ChatMessage, Role};
pub use model::{ModelClient, ModelRequest, ModelResponse};
pub use secret::Secret;
pub use text::SharedText;
pub use trace::{
    CellRecord, CompactionRecord, EventBody, FinalRecord, FinishedBy, LimitKind, ModelCallPurpose, ModelCallRecord,
    RouteDecision, RoutePath, RunMetadata, SubCallRecord, TraceEvent, TraceSink,
};
pub use usage::{Usage, UsageReport};

/// Names the REPL reserves; executors restore them after every cell so user code cannot break them.
pub const RESERVED_NAMES: &[&str] =
    &["context", "llm_query", "llm_query_batched", "rlm_query", "rlm_query_batched", "SHOW_VARS", "FINAL_VAR"];
