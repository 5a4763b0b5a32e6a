//! Sessions: one REPL that answers query after query. Variables built by one query are there for the next; each
//! added context becomes `context_1`, `context_2`, … (with `context` = `context_0` unchanged), and each finished
//! query's conversation becomes `history_0`, `history_1`, ….
//!
//! Everything that ran in the REPL is kept in a journal, with the answers its sub-calls got. A saved journal
//! restores the REPL after a restart by running the same cells again, with the recorded answers standing in for the
//! models: no model is asked twice.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use async_trait::async_trait;
use chrono::Utc;
use rlm_protocol::{
    CellOutcome, ChatMessage, Context, ContextInfo, Error, EventBody, ModelCallPurpose, ReplSession, RouteDecision,
    RoutePath, SessionSpec, SubCall, SubCallHost, SubCallResult, TraceEvent, TraceSink,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::compaction::{bind_messages_code, python_json_expression};
use crate::host::TreeHost;
use crate::run::{Ending, Loop, Scope, Tree, deadlines, finish, run_metadata};
use crate::{EngineInner, RunOptions, RunResult};

/// The format of [`SavedSession`]; a file of another version is refused rather than misread.
pub const SAVED_SESSION_VERSION: u32 = 1;

/// Answers of earlier queries quoted to the model in a session's intro are cut to this many characters.
const INTRO_ANSWER_CHARS: usize = 400;

/// Variables listed in a session's intro, at most.
const INTRO_MAX_VARIABLES: usize = 60;

/// A context as a session file keeps it: text and JSON inline, files by path (read again on resume).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum SavedContext {
    /// A text context.
    Text(String),
    /// A JSON value.
    Json(serde_json::Value),
    /// A text file, read again on resume.
    TextFile(PathBuf),
    /// A JSON file, read again on resume.
    JsonFile(PathBuf),
}

impl From<&Context> for SavedContext {
    fn from(context: &Context) -> Self {
        match context {
            Context::Text(text) => Self::Text(text.clone()),
            Context::Json(value) => Self::Json(value.clone()),
            Context::TextFile(path) => Self::TextFile(path.clone()),
            Context::JsonFile(path) => Self::JsonFile(path.clone()),
        }
    }
}

impl From<SavedContext> for Context {
    fn from(saved: SavedContext) -> Self {
        match saved {
            SavedContext::Text(text) => Self::Text(text),
            SavedContext::Json(value) => Self::Json(value),
            SavedContext::TextFile(path) => Self::TextFile(path),
            SavedContext::JsonFile(path) => Self::JsonFile(path),
        }
    }
}

/// One sub-call made by a journaled cell, with the answer it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedSubCall {
    /// What the cell asked.
    pub prompt: String,
    /// What it got back (replayed on resume instead of asking again).
    pub result: SubCallResult,
}

/// One thing that changed the REPL, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JournalEntry {
    /// Code that ran (the model's cells and the session's own, such as binding `history_N`).
    Cell {
        /// The cell's code.
        code: String,
        /// Its sub-calls, in order, with their answers.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        sub_calls: Vec<RecordedSubCall>,
    },
    /// A context added to the session under `name`.
    Context {
        /// The REPL variable it is bound to (`context_1`, …).
        name: String,
        /// The context.
        context: SavedContext,
    },
}

/// A finished query of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionTurn {
    /// The question.
    pub query: String,
    /// Its answer, when the run ended with one.
    pub answer: Option<String>,
    /// The run in the trajectory.
    pub run_id: Uuid,
}

/// Everything needed to restore a session: its first context, its journal and its turns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSession {
    /// The file format's version ([`SAVED_SESSION_VERSION`]).
    pub version: u32,
    /// The first context (`context`, `context_0`).
    pub context: SavedContext,
    /// What changed the REPL, in order: replayed on resume.
    pub journal: Vec<JournalEntry>,
    /// The finished queries.
    pub turns: Vec<SessionTurn>,
}

/// A context of the session, as the intro describes it.
#[derive(Debug, Clone)]
struct ContextNote {
    name: String,
    python_type: String,
    chars: u64,
}

/// A persistent RLM conversation: one REPL for every query. Ask with [`Session::ask`]; one query at a time (it
/// takes `&mut self`).
pub struct Session {
    engine: Arc<EngineInner>,
    repl: Option<Box<dyn ReplSession>>,
    host: Arc<SwitchHost>,
    first_context: SavedContext,
    contexts: Vec<ContextNote>,
    journal: Vec<JournalEntry>,
    turns: Vec<SessionTurn>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("contexts", &self.contexts.len())
            .field("journal", &self.journal.len())
            .field("turns", &self.turns.len())
            .field("open", &self.repl.is_some())
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) async fn start(engine: Arc<EngineInner>, context: Context) -> Result<Self, Error> {
        let first_context = SavedContext::from(&context);
        Self::open(engine, first_context, context).await
    }

    pub(crate) async fn resume(engine: Arc<EngineInner>, saved: SavedSession) -> Result<Self, Error> {
        if saved.version != SAVED_SESSION_VERSION {
            return Err(Error::InvalidInput(format!(
                "session format version {} is not supported (this build reads version {SAVED_SESSION_VERSION})",
                saved.version
            )));
        }
        let mut session = Self::open(engine, saved.context.clone(), saved.context.into()).await?;
        for (index, entry) in saved.journal.into_iter().enumerate() {
            match entry {
                JournalEntry::Cell { code, sub_calls } => {
                    session.host.replay(sub_calls.clone());
                    let outcome = session.repl_mut()?.run_cell(&code).await;
                    session.host.stop_replay();
                    if let Err(err) = outcome {
                        return Err(Error::Executor(format!(
                            "replaying cell {} of the session failed: {err}",
                            index + 1
                        )));
                    }
                    session.journal.push(JournalEntry::Cell { code, sub_calls });
                }
                JournalEntry::Context { name, context } => {
                    session.load_context(&name, context.into()).await?;
                }
            }
        }
        session.turns = saved.turns;
        Ok(session)
    }

    async fn open(engine: Arc<EngineInner>, first_context: SavedContext, context: Context) -> Result<Self, Error> {
        let limits = &engine.config.limits;
        let spec = SessionSpec {
            context,
            cell_timeout: limits.cell_timeout,
            max_captured_chars: SessionSpec::DEFAULT_MAX_CAPTURED_CHARS.max(limits.max_output_chars * 4),
        };
        let host = Arc::new(SwitchHost::default());
        let mut repl = engine.executor.start_session(spec, host.clone()).await?;
        // `context` is reserved (restored after every cell); `context_0` names the same object for symmetry with
        // the contexts added later.
        let alias = repl.run_cell("context_0 = context").await?;
        if let Some(err) = alias.error {
            return Err(Error::Executor(format!("could not name the first context `context_0`: {err}")));
        }
        let info = repl.context_info().clone();
        let contexts =
            vec![ContextNote { name: "context_0".into(), python_type: info.python_type, chars: info.total_chars }];
        Ok(Self { engine, repl: Some(repl), host, first_context, contexts, journal: Vec::new(), turns: Vec::new() })
    }

    fn repl_mut(&mut self) -> Result<&mut Box<dyn ReplSession>, Error> {
        self.repl.as_mut().ok_or_else(|| Error::SessionDead("the session is closed".into()))
    }

    /// The queries answered so far.
    pub fn turns(&self) -> &[SessionTurn] {
        &self.turns
    }

    /// What restores this session after a restart (see [`crate::Engine::resume_session`]).
    pub fn saved(&self) -> SavedSession {
        SavedSession {
            version: SAVED_SESSION_VERSION,
            context: self.first_context.clone(),
            journal: self.journal.clone(),
            turns: self.turns.clone(),
        }
    }

    /// Adds a context; returns its variable name (`context_1`, `context_2`, …).
    pub async fn add_context(&mut self, context: Context) -> Result<String, Error> {
        let name = format!("context_{}", self.contexts.len());
        self.load_context(&name, context).await?;
        Ok(name)
    }

    async fn load_context(&mut self, name: &str, context: Context) -> Result<(), Error> {
        let saved = SavedContext::from(&context);
        let (value, python_type) = match context {
            Context::Text(text) => (serde_json::Value::String(text), "str"),
            Context::TextFile(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|err| Error::Io(format!("could not read {}: {err}", path.display())))?;
                (serde_json::Value::String(text), "str")
            }
            Context::Json(value) => {
                let kind = python_type_of(&value);
                (value, kind)
            }
            Context::JsonFile(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|err| Error::Io(format!("could not read {}: {err}", path.display())))?;
                let value: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|err| Error::InvalidInput(format!("{} is not valid JSON: {err}", path.display())))?;
                let kind = python_type_of(&value);
                (value, kind)
            }
        };
        let chars = match &value {
            serde_json::Value::String(text) => text.chars().count() as u64,
            other => other.to_string().chars().count() as u64,
        };
        let code = format!("{name} = {}", python_json_expression(&value));
        drop(value);
        let outcome = self.repl_mut()?.run_cell(&code).await?;
        if let Some(err) = outcome.error {
            return Err(Error::Executor(format!("could not load `{name}`: {err}")));
        }
        self.journal.push(JournalEntry::Context { name: name.to_owned(), context: saved });
        self.contexts.push(ContextNote { name: name.to_owned(), python_type: python_type.to_owned(), chars });
        Ok(())
    }

    /// Answers `query` in this session's REPL. Sessions always run the RLM: a direct call would not see what earlier
    /// queries built.
    pub async fn ask(&mut self, query: &str, options: RunOptions) -> RunResult {
        let engine = self.engine.clone();
        let collector = Arc::new(ConversationCollector::new(options.trace.clone()));
        let (deadline, work_deadline) = deadlines(engine.config.limits.timeout);
        let tree = Arc::new(Tree {
            deadline,
            work_deadline,
            cancel: options.cancel,
            trace: collector.clone(),
            model: options.model.unwrap_or_else(|| engine.model.clone()),
            sub_calls: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            exhausted: Mutex::new(None),
        });
        let scope = Arc::new(Scope::top_level());
        collector.watch(scope.run_id);
        let started = Instant::now();
        let started_at = Utc::now();
        let loop_model = engine.config.models.loop_model(0).to_owned();
        let (intro, data_names) = self.intro().await;
        let route = RouteDecision {
            path: RoutePath::Rlm,
            reason: "a session keeps one REPL across queries, so it always runs the RLM".to_owned(),
            estimated_tokens: None,
            window_tokens: engine.config.window(&loop_model),
        };

        let ending = match self.repl.as_mut() {
            None => Ending::stopped(rlm_protocol::FinishedBy::Error, 0, "the session is closed"),
            Some(repl) => {
                let metadata = run_metadata(
                    &engine,
                    query,
                    &loop_model,
                    engine.executor.name(),
                    repl.context_info().clone(),
                    Some(route),
                );
                tree.trace.record(&scope.event(started_at, EventBody::Metadata(metadata)));
                self.host.set_live(Some(Arc::new(TreeHost {
                    engine: engine.clone(),
                    tree: tree.clone(),
                    scope: scope.clone(),
                    grounding: None,
                })));
                let mut journaled = Journaled { repl: repl.as_mut(), journal: &mut self.journal, host: &self.host };
                let mut run = Loop::new(&engine, &tree, &scope, &loop_model);
                run.intro = intro;
                run.treat_as_data(data_names);
                let ending = run.drive(&mut journaled, query).await;
                self.host.set_live(None);
                ending
            }
        };
        let result = finish(&tree, &scope, started, ending, RoutePath::Rlm);

        let history_name = format!("history_{}", self.turns.len());
        let conversation = collector.conversation();
        if let Some(repl) = self.repl.as_mut() {
            let code = bind_messages_code(&history_name, &conversation);
            let mut journaled = Journaled { repl: repl.as_mut(), journal: &mut self.journal, host: &self.host };
            match journaled.run_cell(&code).await {
                Ok(outcome) if outcome.error.is_none() => {}
                Ok(outcome) => tracing::warn!("could not bind `{history_name}`: {:?}", outcome.error),
                Err(err) => tracing::warn!("could not bind `{history_name}`: {err}"),
            }
        }
        self.turns.push(SessionTurn { query: query.to_owned(), answer: result.answer.clone(), run_id: result.run_id });

        let trace = options.trace;
        match tokio::task::spawn_blocking(move || trace.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!("trace could not be written completely: {err}"),
            Err(err) => tracing::warn!("flushing the trace failed: {err}"),
        }
        result
    }

    /// What the model is told before its query once the session has more than one plain query's state, and the
    /// variables that exist before it (everything in the namespace was built from the data or the model's code).
    async fn intro(&mut self) -> (Option<String>, Vec<String>) {
        let names = match self.repl.as_mut() {
            Some(repl) if !self.turns.is_empty() || self.contexts.len() > 1 => {
                repl.variable_names().await.unwrap_or_default()
            }
            _ => return (None, Vec::new()),
        };
        let mut text = format!(
            "This is query {} of a session: the REPL keeps every variable from earlier queries, so reuse what they \
             built instead of starting again.\nContexts: ",
            self.turns.len() + 1
        );
        let described: Vec<String> = self
            .contexts
            .iter()
            .map(|note| {
                let alias = if note.name == "context_0" { " (also `context`)" } else { "" };
                format!("`{}`{alias}: {}, {} chars", note.name, note.python_type, note.chars)
            })
            .collect();
        text.push_str(&described.join("; "));
        text.push('.');
        if !self.turns.is_empty() {
            text.push_str(&format!(
                "\nEarlier queries (each full conversation is in `history_N`, a list of {{\"role\", \"content\"}} \
                 dicts, N from 0 to {}):",
                self.turns.len() - 1
            ));
            for (index, turn) in self.turns.iter().enumerate() {
                let answer = turn.answer.as_deref().map_or_else(|| "(no answer)".to_owned(), cut);
                text.push_str(&format!("\n{index}. {} -> {answer}", cut(&turn.query)));
            }
        }
        let own: Vec<&String> = names.iter().filter(|name| !is_session_name(name)).take(INTRO_MAX_VARIABLES).collect();
        if !own.is_empty() {
            let list: Vec<String> = own.iter().map(|name| format!("`{name}`")).collect();
            text.push_str(&format!("\nVariables defined so far: {}.", list.join(", ")));
        }
        (Some(text), names)
    }

    /// Ends the REPL (for the remote executor: its sandbox session). Later queries fail with a clear error.
    pub async fn close(&mut self) -> Result<(), Error> {
        match self.repl.take() {
            Some(repl) => repl.close().await,
            None => Ok(()),
        }
    }
}

fn cut(text: &str) -> String {
    let text = text.trim();
    if text.chars().count() <= INTRO_ANSWER_CHARS {
        return text.to_owned();
    }
    let head: String = text.chars().take(INTRO_ANSWER_CHARS).collect();
    format!("{head}…")
}

/// Whether `code` names any of `names` as a whole identifier.
pub(crate) fn uses_any(code: &str, names: &[String]) -> bool {
    !names.is_empty()
        && code
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .any(|word| !word.is_empty() && names.iter().any(|name| name == word))
}

/// Names the session binds itself, left out of the intro's variable list.
fn is_session_name(name: &str) -> bool {
    let numbered = |prefix: &str| {
        name.strip_prefix(prefix).is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit()))
    };
    name == crate::compaction::HISTORY_VARIABLE || numbered("context_") || numbered("history_")
}

fn python_type_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "NoneType",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(number) if number.is_f64() => "float",
        serde_json::Value::Number(_) => "int",
        serde_json::Value::String(_) => "str",
        serde_json::Value::Array(_) => "list",
        serde_json::Value::Object(_) => "dict",
    }
}

/// The [`SubCallHost`] a session's REPL keeps for its whole life: it passes sub-calls to the running query's host
/// (recording each answer for the journal), or, while a saved session is replayed, answers from the recording.
#[derive(Default)]
struct SwitchHost {
    live: Mutex<Option<Arc<dyn SubCallHost>>>,
    replaying: Mutex<Option<VecDeque<RecordedSubCall>>>,
    recorded: Mutex<Vec<RecordedSubCall>>,
}

impl SwitchHost {
    fn set_live(&self, host: Option<Arc<dyn SubCallHost>>) {
        *self.live.lock().unwrap_or_else(PoisonError::into_inner) = host;
    }

    fn replay(&self, calls: Vec<RecordedSubCall>) {
        *self.replaying.lock().unwrap_or_else(PoisonError::into_inner) = Some(calls.into());
    }

    fn stop_replay(&self) {
        self.replaying.lock().unwrap_or_else(PoisonError::into_inner).take();
    }

    fn take_recorded(&self) -> Vec<RecordedSubCall> {
        std::mem::take(&mut *self.recorded.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[async_trait]
impl SubCallHost for SwitchHost {
    async fn sub_calls(&self, calls: Vec<SubCall>) -> Vec<SubCallResult> {
        {
            let mut replaying = self.replaying.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(recorded) = replaying.as_mut() {
                return calls
                    .iter()
                    .map(|call| match recorded.iter().position(|r| r.prompt == call.prompt.as_str()) {
                        Some(at) => recorded.remove(at).map_or_else(|| Err("not recorded".to_owned()), |r| r.result),
                        None => Err("this sub-call was not in the saved session, so it has no recorded answer".into()),
                    })
                    .collect();
            }
        }
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let Some(live) = live else {
            return calls.iter().map(|_| Err("no query is running in this session".to_owned())).collect();
        };
        let prompts: Vec<String> = calls.iter().map(|call| call.prompt.to_string()).collect();
        let results = live.sub_calls(calls).await;
        let mut recorded = self.recorded.lock().unwrap_or_else(PoisonError::into_inner);
        for (prompt, result) in prompts.into_iter().zip(&results) {
            recorded.push(RecordedSubCall { prompt, result: result.clone() });
        }
        results
    }
}

/// The session's REPL as one query's loop sees it: every cell that runs is added to the journal, with the
/// sub-calls it made.
struct Journaled<'a> {
    repl: &'a mut dyn ReplSession,
    journal: &'a mut Vec<JournalEntry>,
    host: &'a SwitchHost,
}

#[async_trait]
impl ReplSession for Journaled<'_> {
    fn context_info(&self) -> &ContextInfo {
        self.repl.context_info()
    }

    async fn run_cell(&mut self, code: &str) -> Result<CellOutcome, Error> {
        self.host.take_recorded();
        let outcome = self.repl.run_cell(code).await?;
        self.journal.push(JournalEntry::Cell { code: code.to_owned(), sub_calls: self.host.take_recorded() });
        Ok(outcome)
    }

    async fn get_variable(&mut self, name: &str) -> Result<Option<String>, Error> {
        self.repl.get_variable(name).await
    }

    async fn variable_names(&mut self) -> Result<Vec<String>, Error> {
        self.repl.variable_names().await
    }

    async fn close(self: Box<Self>) -> Result<(), Error> {
        // The session owns the REPL and closes it itself.
        Ok(())
    }
}

/// Passes every event on, and rebuilds the top-level run's conversation from its model calls for `history_N`.
#[derive(Debug)]
struct ConversationCollector {
    inner: Arc<dyn TraceSink>,
    run_id: Mutex<Option<Uuid>>,
    messages: Mutex<Vec<ChatMessage>>,
}

impl ConversationCollector {
    fn new(inner: Arc<dyn TraceSink>) -> Self {
        Self { inner, run_id: Mutex::new(None), messages: Mutex::new(Vec::new()) }
    }

    fn watch(&self, run_id: Uuid) {
        *self.run_id.lock().unwrap_or_else(PoisonError::into_inner) = Some(run_id);
    }

    fn conversation(&self) -> Vec<ChatMessage> {
        self.messages.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl TraceSink for ConversationCollector {
    fn record(&self, event: &TraceEvent) {
        let watched = *self.run_id.lock().unwrap_or_else(PoisonError::into_inner);
        if Some(event.run_id) == watched
            && let EventBody::ModelCall(call) = &event.body
            && call.purpose != ModelCallPurpose::Direct
        {
            let mut messages = self.messages.lock().unwrap_or_else(PoisonError::into_inner);
            messages.extend(call.new_messages.iter().cloned());
            if let Some(response) = &call.response {
                messages.push(ChatMessage::assistant(response.clone()));
            }
        }
        self.inner.record(event);
    }

    fn write_out(&self) {
        self.inner.write_out();
    }

    fn flush(&self) -> rlm_protocol::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_sessions_round_trip_through_json() -> serde_json::Result<()> {
        let saved = SavedSession {
            version: SAVED_SESSION_VERSION,
            context: SavedContext::TextFile("notes.txt".into()),
            journal: vec![
                JournalEntry::Cell {
                    code: "x = llm_query('hi')".into(),
                    sub_calls: vec![RecordedSubCall { prompt: "hi".into(), result: Ok("hello".into()) }],
                },
                JournalEntry::Context { name: "context_1".into(), context: SavedContext::Text("more".into()) },
            ],
            turns: vec![SessionTurn { query: "q".into(), answer: Some("a".into()), run_id: Uuid::nil() }],
        };
        let json = serde_json::to_string(&saved)?;
        assert_eq!(serde_json::from_str::<SavedSession>(&json)?, saved);
        Ok(())
    }

    #[test]
    fn code_uses_a_name_only_as_a_whole_identifier() {
        let names = vec!["codes".to_owned(), "history_0".to_owned()];
        assert!(uses_any("print(codes[0])", &names) && uses_any("len(history_0)", &names));
        assert!(!uses_any("print(barcodes)", &names) && !uses_any("codes_2 = 1", &names));
        assert!(!uses_any("print(codes)", &[]));
    }

    #[test]
    fn the_session_names_are_told_apart_from_user_variables() {
        assert!(is_session_name("context_1") && is_session_name("history_12") && is_session_name("history"));
        assert!(!is_session_name("context_notes") && !is_session_name("history_") && !is_session_name("counts"));
    }
}
