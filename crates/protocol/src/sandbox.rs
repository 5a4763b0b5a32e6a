//! The wire format between the inference side and the sandbox service (`rlm sandbox serve`).
//!
//! A cell that makes sub-calls suspends: the sandbox answers [`CellResponse::NeedsLlm`] with the prompts, the client
//! (which alone holds model credentials) performs them and resumes the cell with [`ResumeRequest`], until the cell
//! finishes with [`CellResponse::Done`].

use serde::{Deserialize, Serialize};

use crate::{CellOutcome, ContextInfo, SharedText, SubCallKind};

/// How the bytes of an uploaded context are to be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContextKind {
    /// UTF-8 text: `context` is a `str`.
    #[default]
    Text,
    /// JSON: `context` is the parsed value.
    Json,
}

impl ContextKind {
    /// The kind's name in URLs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// `POST /v1/sessions` with a JSON body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    /// An inline context: a string becomes a `str`, anything else the matching Python value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Value>,
    /// A context uploaded earlier with `PUT /v1/contexts/{sha256}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_sha256: Option<String>,
    /// Seconds one cell may run (capped by the server's limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell_timeout: Option<f64>,
}

/// `PUT /v1/contexts/{sha256}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextUploaded {
    /// SHA-256 of the stored bytes, as hex: the id to create sessions with.
    pub sha256: String,
    /// The replica that stored it, when the service advertises one (see [`SessionCreated::endpoint`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Size of the stored context.
    pub bytes: u64,
    /// How the bytes are read.
    pub kind: ContextKind,
}

/// The header that carries a session's secret ([`SessionCreated::session_secret`]) on every request about it.
pub const SESSION_SECRET_HEADER: &str = "x-session-secret";

/// A created session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionCreated {
    /// The session's id in later paths.
    pub session_id: String,
    /// Proof of ownership: every later request about this session must carry it in [`SESSION_SECRET_HEADER`]
    /// (and, when the session was created with a bearer token, the same token). Without it the session is "not
    /// found". Never logged by the service, which keeps only its SHA-256.
    #[serde(default)]
    pub session_secret: String,
    /// Where this session's later requests should go, when the service runs behind a load balancer with several
    /// replicas: the replica's own address (`--advertise-url`). `None`: keep using the URL the session was created on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Shape and size of the loaded `context`.
    pub context: ContextInfo,
    /// The cell time limit in force, in seconds.
    pub cell_timeout: f64,
}

/// `GET /v1/sessions` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// The session's id.
    pub session_id: String,
    /// Shape and size of its `context`.
    pub context: ContextInfo,
    /// Cells run so far.
    pub cells: u64,
    /// Seconds since the session was created / last used.
    pub age_secs: f64,
    /// Seconds since the session was last used.
    pub idle_secs: f64,
    /// Whether a cell is running or suspended now.
    pub busy: bool,
    /// The cell time limit in force, in seconds.
    pub cell_timeout: f64,
}

/// `POST /v1/sessions/{id}/cells`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellRequest {
    /// Python source of the cell.
    pub code: String,
}

/// One sub-call a suspended cell is waiting for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCall {
    /// Unique within the cell.
    pub id: u64,
    /// Which function the code called.
    pub kind: SubCallKind,
    /// The prompt text.
    pub prompt: SharedText,
    /// The model the code asked for; `None`: the caller's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// The state of a cell after a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CellResponse {
    /// The cell finished (user-code errors included: they are in `outcome.error`).
    Done {
        /// What the cell did.
        outcome: CellOutcome,
    },
    /// The cell is suspended until these calls are answered with `POST .../cells/{cell_id}/resume`.
    NeedsLlm {
        /// The suspended cell, for the resume path.
        cell_id: u64,
        /// The sub-calls it waits for.
        calls: Vec<PendingCall>,
    },
}

/// The answer to one [`PendingCall`]: exactly one of `response` and `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallResult {
    /// The [`PendingCall::id`] this answers.
    pub id: u64,
    /// The model's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// Why there is no answer; the code gets it as the function's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /v1/sessions/{id}/cells/{cell_id}/resume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeRequest {
    /// One answer per pending call of the cell, in any order.
    pub results: Vec<CallResult>,
}

/// `GET /v1/sessions/{id}/variables/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariableValue {
    /// The variable's name.
    pub name: String,
    /// `str()` of the variable; `null` when it does not exist.
    pub value: Option<String>,
}

/// `GET /v1/sessions/{id}/variables`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariableNames {
    /// Names of the user's variables, sorted.
    pub names: Vec<String>,
}

/// The seed-compatible one-shot `POST /execute` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecuteRequest {
    /// Empty or missing code is refused with `{"error": "Code is required"}`.
    #[serde(default)]
    pub code: String,
    /// A string or list becomes `context`. A dict is a namespace, as the seed's client sends it (its variables of
    /// the previous call): each key that is a valid identifier and not a name of the REPL becomes a global, and
    /// `context` is the dict's `"context"` entry when it has one, else the whole dict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Value>,
    /// Seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Sent by the seed's client; every call is one-shot, so it is accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// The seed-compatible one-shot `POST /execute` answer. A user-code error is `success: false` with status 200.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecuteResponse {
    /// `false` when the code raised (the traceback is in `stderr` and `error`).
    pub success: bool,
    /// With a notice at the end when output was dropped at the capture limit (see `dropped_chars`).
    pub stdout: String,
    /// Also holds the traceback when the code raised (the seed's client reads only this).
    pub stderr: String,
    /// Each user variable after the code ran: its value when JSON can represent it, else its `repr()`. Sending
    /// them back as `context` restores them.
    pub locals: serde_json::Map<String, serde_json::Value>,
    /// Seconds.
    pub execution_time: f64,
    /// The traceback, ending with `Kind: message`.
    pub error: Option<String>,
    /// Characters of stdout and stderr dropped at the capture limit.
    #[serde(default)]
    pub dropped_chars: u64,
    /// Variables left out of `locals` because all of them would not fit the output limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locals_omitted: Vec<String>,
}

/// The JSON body of every error status the sandbox service returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What was wrong, for people.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_responses_are_tagged_by_status() -> serde_json::Result<()> {
        let suspended = CellResponse::NeedsLlm {
            cell_id: 3,
            calls: vec![PendingCall { id: 0, kind: SubCallKind::Llm, prompt: "p".into(), model: None }],
        };
        let json = serde_json::to_value(&suspended)?;
        assert_eq!(json["status"], "needs_llm");
        assert_eq!(json["calls"][0]["kind"], "llm");
        assert_eq!(serde_json::from_value::<CellResponse>(json)?, suspended);
        let done = serde_json::to_value(CellResponse::Done { outcome: CellOutcome::default() })?;
        assert_eq!(done["status"], "done");
        assert_eq!(done["outcome"]["stdout"], "");
        Ok(())
    }
}
