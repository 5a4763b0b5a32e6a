//! Where snippets run: plain `python3` in a subprocess (the reference), or any [`Executor`].

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rlm_protocol::{CellError, Context, Executor, SessionSpec, SubCall, SubCallHost, SubCallResult};
use tokio::io::AsyncWriteExt;

/// What running the cells of one snippet produced.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// stdout of all cells, concatenated.
    pub stdout: String,
    /// stderr of all cells, concatenated.
    pub stderr: String,
    /// One entry per cell that ran: the error it ended with, if any.
    pub errors: Vec<Option<CellError>>,
    /// The target itself failed (session could not start, `run_cell` returned `Err`, subprocess crashed or hung).
    pub failure: Option<String>,
    /// Characters of output the target dropped because of its capture limit.
    pub dropped_chars: u64,
    pub duration: Duration,
}

impl Observation {
    /// The error kind of each cell (`-` for none), e.g. `["-", "ValueError"]`.
    pub fn error_kinds(&self) -> Vec<String> {
        self.errors.iter().map(|e| e.as_ref().map_or_else(|| "-".to_owned(), |e| e.kind.clone())).collect()
    }

    /// The error the last cell ended with.
    pub fn last_error(&self) -> Option<&CellError> {
        self.errors.last().and_then(Option::as_ref)
    }
}

/// Something that runs the cells of a snippet in one fresh session, with the corpus context bound to `context`.
#[async_trait]
pub trait Target: Send + Sync {
    fn name(&self) -> &str;
    async fn run(&self, cells: &[String]) -> Observation;
}

/// Answers every sub-call with an error string: the corpora make no model calls.
#[derive(Debug, Default)]
pub struct NoModels;

#[async_trait]
impl SubCallHost for NoModels {
    async fn sub_calls(&self, calls: Vec<SubCall>) -> Vec<SubCallResult> {
        calls.iter().map(|_| Err("no models in the conformance corpus".to_owned())).collect()
    }
}

/// Runs snippets on an [`Executor`], one fresh session per snippet.
#[derive(Debug, Clone)]
pub struct ExecutorTarget {
    name: String,
    executor: Arc<dyn Executor>,
    context: Context,
    cell_timeout: Duration,
    max_captured_chars: usize,
}

impl ExecutorTarget {
    /// The target is named after the executor (`local`, `wasm`, ...).
    pub fn new(executor: Arc<dyn Executor>, context: Context, cell_timeout: Duration) -> Self {
        Self {
            name: executor.name().to_owned(),
            executor,
            context,
            cell_timeout,
            max_captured_chars: SessionSpec::DEFAULT_MAX_CAPTURED_CHARS,
        }
    }

    pub fn with_max_captured_chars(mut self, max: usize) -> Self {
        self.max_captured_chars = max;
        self
    }

    pub fn executor(&self) -> &Arc<dyn Executor> {
        &self.executor
    }

    pub fn spec(&self) -> SessionSpec {
        SessionSpec {
            context: self.context.clone(),
            cell_timeout: self.cell_timeout,
            max_captured_chars: self.max_captured_chars,
        }
    }
}

#[async_trait]
impl Target for ExecutorTarget {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, cells: &[String]) -> Observation {
        let started = Instant::now();
        let mut observation = Observation::default();
        match self.executor.start_session(self.spec(), Arc::new(NoModels)).await {
            Err(err) => observation.failure = Some(format!("start_session failed: {err}")),
            Ok(mut session) => {
                for (number, cell) in cells.iter().enumerate() {
                    match session.run_cell(cell).await {
                        Ok(outcome) => {
                            observation.stdout.push_str(&outcome.stdout);
                            observation.stderr.push_str(&outcome.stderr);
                            observation.dropped_chars += outcome.dropped_chars;
                            observation.errors.push(outcome.error);
                        }
                        Err(err) => {
                            observation.failure = Some(format!("run_cell of cell {} failed: {err}", number + 1));
                            break;
                        }
                    }
                }
                if let Err(err) = session.close().await {
                    observation.failure.get_or_insert_with(|| format!("close failed: {err}"));
                }
            }
        }
        observation.duration = started.elapsed();
        observation
    }
}

/// Runs each cell list in a fresh `python3` subprocess (the interpreter on `PATH`).
///
/// A small wrapper binds `context` (the corpus context file), then runs each cell with
/// `exec(compile(cell, '<cell N>', 'exec'), namespace)` in one namespace, recording the kind of exception each cell
/// ended with. Like the REPL it registers the source for tracebacks and puts `context` back after every cell; unlike
/// the REPL it does not echo a trailing expression. It binds the REPL's helpers over `context` (`search`,
/// `lines_with`, `records`, `count_by`, `sum_by`) from the same source the executors embed (`python/repl_core.py`),
/// so the executors are compared with plain python3 running that code.
#[derive(Debug, Clone)]
pub struct Python3Target {
    program: String,
    context_path: PathBuf,
    timeout: Duration,
}

/// The REPL core both executors embed; the python3 target takes its helpers from it.
const REPL_CORE: &str = include_str!("../../../python/repl_core.py");

const PYTHON_WRAPPER: &str = r#"
import json, linecache, os, sys

def main():
    request = json.load(sys.stdin)
    sys.stdin = open(os.devnull, encoding="utf-8")
    with open(request["context_path"], encoding="utf-8", newline="") as f:
        context = f.read()
    core = {"__name__": "repl_core"}
    exec(compile(request["repl_core"], "repl_core.py", "exec", dont_inherit=True), core)
    namespace = {"__name__": "__main__", "context": context, **core["helpers_for"](context)}
    errors = []
    for number, source in enumerate(request["cells"], start=1):
        filename = f"<cell {number}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        try:
            exec(compile(source, filename, "exec", dont_inherit=True), namespace)
            errors.append(None)
        except BaseException as exc:
            try:
                message = str(exc)
            except BaseException:
                message = "<str() failed>"
            errors.append({"kind": type(exc).__name__, "message": message})
        namespace["context"] = context
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    with open(request["result_path"], "w", encoding="utf-8") as f:
        json.dump({"errors": errors}, f)

main()
"#;

impl Python3Target {
    pub fn new(context_path: PathBuf, timeout: Duration) -> Self {
        Self { program: "python3".to_owned(), context_path, timeout }
    }

    async fn run_subprocess(&self, cells: &[String], observation: &mut Observation) -> Result<(), String> {
        let result_file = tempfile::NamedTempFile::new().map_err(|e| format!("cannot create a temp file: {e}"))?;
        let request = serde_json::json!({
            "cells": cells,
            "context_path": self.context_path,
            "result_path": result_file.path(),
            "repl_core": REPL_CORE,
        });
        let mut child = tokio::process::Command::new(&self.program)
            .args(["-E", "-s", "-X", "utf8", "-c", PYTHON_WRAPPER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.program))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(request.to_string().as_bytes()).await.map_err(|e| format!("cannot write stdin: {e}"))?;
        }
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| format!("timed out after {:?} (killed)", self.timeout))?
            .map_err(|e| format!("waiting for {} failed: {e}", self.program))?;
        observation.stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        observation.stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if !output.status.success() {
            return Err(format!("{} exited with {}", self.program, output.status));
        }
        let result = std::fs::read_to_string(result_file.path()).map_err(|e| format!("no result file: {e}"))?;
        let result: serde_json::Value = serde_json::from_str(&result).map_err(|e| format!("bad result file: {e}"))?;
        let errors = result["errors"].as_array().ok_or("result file without `errors`")?;
        observation.errors = errors
            .iter()
            .map(|error| {
                error.as_object().map(|error| CellError {
                    kind: error.get("kind").and_then(|k| k.as_str()).unwrap_or_default().to_owned(),
                    message: error.get("message").and_then(|m| m.as_str()).unwrap_or_default().to_owned(),
                    traceback: String::new(),
                })
            })
            .collect();
        Ok(())
    }
}

#[async_trait]
impl Target for Python3Target {
    fn name(&self) -> &str {
        "python3"
    }

    async fn run(&self, cells: &[String]) -> Observation {
        let started = Instant::now();
        let mut observation = Observation::default();
        if let Err(failure) = self.run_subprocess(cells, &mut observation).await {
            observation.failure = Some(failure);
        }
        observation.duration = started.elapsed();
        observation
    }
}
