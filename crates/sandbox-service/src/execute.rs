//! The seed-compatible one-shot `POST /execute`, shaped so that the original Python client
//! (`rlm/remote/repl_remote.py`) works unmodified: it keeps the state on its side, sends its variables back as
//! `context` on every call, reads only `stdout`, `stderr` and `locals`, and feeds `locals` into the next call.

use std::sync::Arc;

use async_trait::async_trait;
use rlm_protocol::sandbox::{ExecuteRequest, ExecuteResponse};
use rlm_protocol::{CellOutcome, Context, ReplSession, SessionSpec, SubCall, SubCallHost, SubCallResult};
use serde_json::Value;

use crate::{Sandbox, SandboxError};

/// Names the REPL provides; a context key never replaces them.
const RESERVED: &[&str] = &[
    "context",
    "llm_query",
    "llm_query_batched",
    "rlm_query",
    "rlm_query_batched",
    "SHOW_VARS",
    "FINAL_VAR",
    "search",
    "lines_with",
    "records",
    "count_by",
    "sum_by",
    "Counter",
    "FINAL",
    "answer",
];

/// Sub-calls in one-shot `/execute` have nobody to answer them.
struct NoSubCalls;

#[async_trait]
impl SubCallHost for NoSubCalls {
    async fn sub_calls(&self, calls: Vec<SubCall>) -> Vec<SubCallResult> {
        calls.iter().map(|_| Err("sub-calls need a session: use POST /v1/sessions".to_owned())).collect()
    }
}

/// What a request's `context` becomes: the session's `context`, and the globals to set before the code runs.
struct Namespace {
    context: Context,
    /// Python source of a dict of globals, when there are any.
    globals: Option<String>,
}

fn namespace(context: Option<Value>) -> Result<Namespace, SandboxError> {
    Ok(match context {
        None => Namespace { context: Context::Text(String::new()), globals: None },
        Some(Value::String(text)) => Namespace { context: Context::Text(text), globals: None },
        Some(Value::Object(mut map)) => match map.remove("context") {
            // The seed's client: {"context": <the data>, "context_str": ..., <its variables>...}.
            Some(inner) => {
                let globals = python_json_literal(&Value::Object(map))?;
                let context = match inner {
                    Value::String(text) => Context::Text(text),
                    other => Context::Json(other),
                };
                Namespace { context, globals: Some(globals) }
            }
            // A plain dict: it is `context`, and its keys are globals too (read from `context` in the sandbox, so
            // the dict is not sent in twice).
            None => Namespace { context: Context::Json(Value::Object(map)), globals: Some("context".to_owned()) },
        },
        Some(other) => Namespace { context: Context::Json(other), globals: None },
    })
}

/// Python source that evaluates to `value`: `json.loads` of a string literal. A JSON string literal is a valid
/// Python string literal (serde_json escapes only with `\"`, `\\`, `\n`-style and `\u00XX` escapes).
fn python_json_literal(value: &Value) -> Result<String, SandboxError> {
    let text = serde_json::to_string(value).map_err(|e| SandboxError::Internal(format!("encoding context: {e}")))?;
    let literal = serde_json::to_string(&text).map_err(|e| SandboxError::Internal(format!("encoding context: {e}")))?;
    Ok(format!("__builtins__['__import__']('json').loads({literal})"))
}

/// A cell that sets the identifier keys of the dict `source` as globals, skipping the REPL's own names. It leaves
/// nothing else behind.
fn inject_cell(source: &str) -> String {
    let reserved: Vec<String> = RESERVED.iter().map(|name| format!("{name:?}")).collect();
    format!(
        "def __rlm_inject(values):\n\
         \x20   iskeyword = __builtins__['__import__']('keyword').iskeyword\n\
         \x20   g = globals()\n\
         \x20   for k, v in values.items():\n\
         \x20       if isinstance(k, str) and k.isidentifier() and not iskeyword(k) and not k.startswith('__') \
         and k not in ({}):\n\
         \x20           g[k] = v\n\
         __rlm_inject({source})\n\
         del __rlm_inject\n",
        reserved.join(", ")
    )
}

/// A cell that prints, on two lines, the names it had to leave out and a JSON object of the named variables: the
/// value itself when JSON can hold it, else its `repr()`. Everything fits `budget` characters.
fn locals_cell(names: &[String], budget: usize) -> Result<String, SandboxError> {
    let names = serde_json::to_string(names).map_err(|e| SandboxError::Internal(format!("encoding names: {e}")))?;
    Ok(format!(
        "def __rlm_locals(names, budget):\n\
         \x20   b = __builtins__\n\
         \x20   json = b['__import__']('json')\n\
         \x20   g = globals()\n\
         \x20   parts, left_out, used = [], [], 64\n\
         \x20   for name in names:\n\
         \x20       if name not in g:\n\
         \x20           continue\n\
         \x20       try:\n\
         \x20           text = json.dumps(g[name], allow_nan=False, ensure_ascii=False)\n\
         \x20       except BaseException:\n\
         \x20           try:\n\
         \x20               text = json.dumps(b['repr'](g[name]), ensure_ascii=False)\n\
         \x20           except BaseException:\n\
         \x20               text = json.dumps('<unprintable>')\n\
         \x20       entry = json.dumps(name) + ': ' + text\n\
         \x20       if used + b['len'](entry) + 2 > budget:\n\
         \x20           left_out.append(name)\n\
         \x20           continue\n\
         \x20       used += b['len'](entry) + 2\n\
         \x20       parts.append(entry)\n\
         \x20   b['print'](json.dumps(left_out))\n\
         \x20   b['print']('{{' + ', '.join(parts) + '}}')\n\
         __rlm_locals({names}, {budget})\n\
         del __rlm_locals\n"
    ))
}

/// Runs one request in a fresh session that ends with it.
pub(crate) async fn execute(
    sandbox: &Sandbox,
    owner: Option<[u8; 32]>,
    request: ExecuteRequest,
) -> Result<ExecuteResponse, SandboxError> {
    if request.code.trim().is_empty() {
        return Err(SandboxError::BadRequest("Code is required".into()));
    }
    let cell_timeout = sandbox.cell_timeout(request.timeout)?;
    let Namespace { context, globals } = namespace(request.context)?;
    let reservation = sandbox.reserve_session(owner)?;
    let max_captured_chars = sandbox.config.max_captured_chars;
    let spec = SessionSpec { context, cell_timeout, max_captured_chars };
    let mut session = sandbox.executor.start_session(spec, Arc::new(NoSubCalls)).await?;
    let permit = sandbox.cell_worker().await?;
    let ran = run(&mut *session, globals.as_deref(), &request.code, max_captured_chars).await;
    drop(permit);
    if let Err(err) = session.close().await {
        tracing::debug!("closing a one-shot session failed: {err}");
    }
    drop(reservation);
    let (outcome, locals, omitted) = ran?;
    sandbox.metrics.record_cell(&outcome);
    Ok(response(outcome, locals, omitted, cell_timeout.as_secs_f64(), max_captured_chars))
}

type Locals = serde_json::Map<String, Value>;

async fn run(
    session: &mut dyn ReplSession,
    globals: Option<&str>,
    code: &str,
    max_captured_chars: usize,
) -> Result<(CellOutcome, Locals, Vec<String>), SandboxError> {
    if let Some(source) = globals {
        let injected = session.run_cell(&inject_cell(source)).await?;
        if let Some(error) = injected.error {
            tracing::warn!("setting the context's globals failed: {error}");
        }
    }
    let outcome = session.run_cell(code).await?;
    let (locals, omitted) = locals(session, max_captured_chars).await?;
    Ok((outcome, locals, omitted))
}

/// The user's variables as JSON, read by one more cell whose output is parsed here (never shown to the user).
async fn locals(
    session: &mut dyn ReplSession,
    max_captured_chars: usize,
) -> Result<(Locals, Vec<String>), SandboxError> {
    let names = session.variable_names().await?;
    if names.is_empty() {
        return Ok((Locals::new(), Vec::new()));
    }
    let budget = max_captured_chars.saturating_sub(1024).max(1024);
    let read = session.run_cell(&locals_cell(&names, budget)?).await?;
    let parsed = read.error.is_none().then(|| read.stdout.split_once('\n')).flatten().and_then(|(left_out, values)| {
        let left_out: Vec<String> = serde_json::from_str(left_out).ok()?;
        let values: Locals = serde_json::from_str(values.trim_end()).ok()?;
        Some((values, left_out))
    });
    match parsed {
        Some(found) => Ok(found),
        None => {
            // Whatever went wrong (a variable whose repr() never ends, a broken json module), the names are known.
            tracing::warn!("reading the variables as JSON failed: {:?}", read.error);
            Ok((Locals::new(), names))
        }
    }
}

fn response(
    outcome: CellOutcome,
    locals: Locals,
    locals_omitted: Vec<String>,
    timeout_secs: f64,
    max_captured_chars: usize,
) -> ExecuteResponse {
    let CellOutcome { mut stdout, mut stderr, error, duration, dropped_chars, .. } = outcome;
    let error = error.map(|error| {
        if error.kind == "TimeoutError" {
            // The executor's own wording is about sessions (restarts, replayed cells); this call has none.
            format!("TimeoutError: the code ran longer than the time limit of {timeout_secs} s and was stopped")
        } else if error.traceback.trim().is_empty() {
            error.to_string()
        } else {
            // The traceback already ends with the `Kind: message` line.
            error.traceback.trim_end().to_owned()
        }
    });
    if dropped_chars > 0 {
        if !stdout.ends_with('\n') && !stdout.is_empty() {
            stdout.push('\n');
        }
        stdout.push_str(&format!(
            "[... {dropped_chars} characters of output dropped: output limit {max_captured_chars} ...]\n"
        ));
    }
    if let Some(error) = &error {
        if !stderr.is_empty() && !stderr.ends_with('\n') {
            stderr.push('\n');
        }
        stderr.push_str(error);
        stderr.push('\n');
    }
    ExecuteResponse {
        success: error.is_none(),
        stdout,
        stderr,
        locals,
        execution_time: duration.as_secs_f64(),
        error,
        dropped_chars,
        locals_omitted,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rlm_protocol::CellError;

    use super::*;

    #[test]
    fn every_helper_the_repl_provides_is_reserved() {
        // The helpers are the keys of the dict `helpers_for` returns in the REPL core every executor runs.
        let core = include_str!("../../../python/repl_core.py");
        let body = &core[core.find("def helpers_for(").expect("helpers_for is defined")..];
        let returned = &body[body.find("return {").expect("it returns a dict")..];
        let returned = &returned[..returned.find('}').expect("the dict ends")];
        let helpers: Vec<&str> = returned.split('"').skip(1).step_by(2).collect();
        assert!(helpers.len() >= 6 && helpers.contains(&"sum_by"), "{helpers:?}");
        for helper in helpers {
            assert!(RESERVED.contains(&helper), "{helper} is a REPL helper but not reserved");
        }
    }

    #[test]
    fn a_dict_with_a_context_key_is_the_seed_clients_namespace() {
        let Ok(found) = namespace(Some(serde_json::json!({"context": "the data", "x": 42}))) else {
            panic!("a dict is accepted")
        };
        assert!(matches!(found.context, Context::Text(ref text) if text == "the data"));
        let globals = found.globals.unwrap_or_default();
        assert!(globals.contains(r#"loads("{\"x\":42}")"#), "{globals}");
        let Ok(plain) = namespace(Some(serde_json::json!({"a": 1}))) else { panic!("a dict is accepted") };
        assert!(matches!(plain.context, Context::Json(_)));
        assert_eq!(plain.globals.as_deref(), Some("context"));
    }

    #[test]
    fn errors_go_to_stderr_once_and_timeouts_get_their_own_words() {
        let raised = CellOutcome {
            stderr: "warning\n".into(),
            error: Some(CellError {
                kind: "ZeroDivisionError".into(),
                message: "division by zero".into(),
                traceback: "Traceback (most recent call last):\n  File \"<cell 1>\", line 1\nZeroDivisionError: division by zero".into(),
            }),
            ..CellOutcome::default()
        };
        let answer = response(raised, Locals::new(), Vec::new(), 30.0, 100);
        let error = answer.error.unwrap_or_default();
        assert_eq!(error.matches("ZeroDivisionError: division by zero").count(), 1, "{error}");
        assert!(answer.stderr.starts_with("warning\nTraceback"), "{}", answer.stderr);
        assert!(answer.stderr.ends_with("division by zero\n"));

        let timed_out = CellOutcome {
            error: Some(CellError {
                kind: "TimeoutError".into(),
                message: "cell exceeded the 1 s time limit; the sandbox was restarted and earlier cells were replayed"
                    .into(),
                traceback: String::new(),
            }),
            duration: Duration::from_secs(1),
            ..CellOutcome::default()
        };
        let answer = response(timed_out, Locals::new(), Vec::new(), 1.0, 100);
        let error = answer.error.unwrap_or_default();
        assert!(error.starts_with("TimeoutError: ") && !error.contains("replayed"), "{error}");
    }

    #[test]
    fn dropped_output_is_announced() {
        let cut = CellOutcome { stdout: "xxxx".into(), dropped_chars: 123, ..CellOutcome::default() };
        let answer = response(cut, Locals::new(), Vec::new(), 1.0, 4);
        assert_eq!(answer.stdout, "xxxx\n[... 123 characters of output dropped: output limit 4 ...]\n");
        assert_eq!(answer.dropped_chars, 123);
    }
}
