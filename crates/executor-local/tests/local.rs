//! Integration tests of the local executor (one test binary: one embedded interpreter, shared by all tests).

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rlm_executor_local::{LocalExecutor, LocalSession};
use rlm_protocol::{
    CellOutcome, Context, ContextInfo, Error, Executor, FinalVar, ReplSession, SessionSpec, SubCall, SubCallHost,
    SubCallKind, SubCallResult,
};
use serde_json::json;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Echoes prompts (`"echo: <prompt>"`, or `"echo[<model>]: <prompt>"`) after an optional sleep; prompts starting with
/// `fail` get an error. Records every batch and the peak number of concurrent prompts.
#[derive(Default)]
struct EchoHost {
    sleep: Duration,
    batches: Mutex<Vec<Vec<SubCall>>>,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
}

impl EchoHost {
    fn with_sleep(sleep: Duration) -> Arc<Self> {
        Arc::new(Self { sleep, ..Self::default() })
    }

    fn batches(&self) -> Vec<Vec<SubCall>> {
        self.batches.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl SubCallHost for EchoHost {
    async fn sub_calls(&self, calls: Vec<SubCall>) -> Vec<SubCallResult> {
        if let Ok(mut batches) = self.batches.lock() {
            batches.push(calls.clone());
        }
        let now = self.in_flight.fetch_add(calls.len(), Ordering::SeqCst) + calls.len();
        self.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.sleep).await;
        self.in_flight.fetch_sub(calls.len(), Ordering::SeqCst);
        calls
            .into_iter()
            .map(|call| {
                if call.prompt.starts_with("fail") {
                    Err(format!("boom {}", call.prompt))
                } else {
                    match call.model {
                        Some(model) => Ok(format!("echo[{model}]: {}", call.prompt)),
                        None => Ok(format!("echo: {}", call.prompt)),
                    }
                }
            })
            .collect()
    }
}

async fn session_with(spec: SessionSpec, host: Arc<EchoHost>) -> Result<LocalSession, Error> {
    LocalExecutor::new().start_local_session(spec, host).await
}

async fn session() -> Result<LocalSession, Error> {
    session_with(SessionSpec::new(Context::text("hello world")), Arc::new(EchoHost::default())).await
}

fn assert_ok(outcome: &CellOutcome) {
    assert!(outcome.error.is_none(), "unexpected error: {:?}\nstdout: {}", outcome.error, outcome.stdout);
}

async fn run_ok(session: &mut LocalSession, code: &str) -> Result<CellOutcome, Error> {
    let outcome = session.run_cell(code).await?;
    assert_ok(&outcome);
    Ok(outcome)
}

fn temp_file(bytes: &[u8]) -> std::io::Result<tempfile::NamedTempFile> {
    let mut file = tempfile::NamedTempFile::new()?;
    file.write_all(bytes)?;
    file.flush()?;
    Ok(file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_is_named_local_and_returns_boxed_sessions() -> TestResult {
    let executor = LocalExecutor::new();
    assert_eq!(executor.name(), "local");
    assert!(LocalExecutor::initialize().is_ok());
    assert!(LocalExecutor::python_build_version().starts_with("3."));
    let mut session =
        executor.start_session(SessionSpec::new(Context::text("abc")), Arc::new(EchoHost::default())).await?;
    let outcome = session.run_cell("print(context.upper())").await?;
    assert_eq!(outcome.stdout, "ABC\n");
    session.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_persists_across_cells() -> TestResult {
    let mut s = session().await?;
    let first = run_ok(&mut s, "x = 41\ndef inc(v):\n    return v + 1\n_hidden = 3\nimport json").await?;
    assert_eq!(first.stdout, "");
    assert_eq!(first.answer, None);
    assert_eq!(first.final_var, None);
    let second = run_ok(&mut s, "print(inc(x))").await?;
    assert_eq!(second.stdout, "42\n");
    assert_eq!(s.variable_names().await?, vec!["inc".to_owned(), "x".to_owned()]);
    assert_eq!(s.get_variable("x").await?, Some("41".to_owned()));
    assert_eq!(s.get_variable("missing").await?, None);
    assert_eq!(s.get_variable("llm_query").await?, None);
    assert_eq!(s.get_variable("__builtins__").await?, None);
    Box::new(s).close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_and_stderr_are_captured_separately_in_order() -> TestResult {
    let mut s = session().await?;
    let outcome = run_ok(
        &mut s,
        "import sys\nprint('a')\nprint('b', file=sys.stderr)\nsys.stdout.write('c\\n')\nsys.stderr.write('d\\n')\nprint('e')",
    )
    .await?;
    assert_eq!(outcome.stdout, "a\nc\ne\n");
    assert_eq!(outcome.stderr, "b\nd\n");
    assert_eq!(outcome.dropped_chars, 0);
    // The next cell starts with empty buffers.
    let next = run_ok(&mut s, "print('f')").await?;
    assert_eq!(next.stdout, "f\n");
    assert_eq!(next.stderr, "");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceptions_become_cell_errors_with_short_tracebacks() -> TestResult {
    let mut s = session().await?;
    let outcome = s.run_cell("print('before')\ndef f(v):\n    return v / 0\n\nf(1)\nprint('after')").await?;
    assert_eq!(outcome.stdout, "before\n");
    let error = outcome.error.ok_or("expected an error")?;
    assert_eq!(error.kind, "ZeroDivisionError");
    assert_eq!(error.message, "division by zero");
    assert!(error.traceback.starts_with("Traceback (most recent call last):"), "{}", error.traceback);
    assert!(error.traceback.contains("File \"<cell 1>\", line 5, in <module>"), "{}", error.traceback);
    assert!(error.traceback.contains("File \"<cell 1>\", line 3, in f"), "{}", error.traceback);
    assert!(error.traceback.contains("return v / 0"), "{}", error.traceback);
    assert!(error.traceback.ends_with("ZeroDivisionError: division by zero"), "{}", error.traceback);
    assert!(!error.traceback.contains("prelude"), "{}", error.traceback);

    // A function defined in cell 1 failing when called from cell 2 shows both cells' frames; library frames are cut.
    let outcome = s.run_cell("import json\nf(2)").await?;
    let error = outcome.error.ok_or("expected an error")?;
    assert!(error.traceback.contains("<cell 2>\", line 2"), "{}", error.traceback);
    assert!(error.traceback.contains("<cell 1>\", line 3, in f"), "{}", error.traceback);
    let outcome = s.run_cell("json.loads('{')").await?;
    let error = outcome.error.ok_or("expected an error")?;
    assert_eq!(error.kind, "JSONDecodeError");
    assert!(!error.traceback.contains("decoder.py"), "{}", error.traceback);

    // Errors are data: the session goes on.
    assert_eq!(run_ok(&mut s, "print('still here')").await?.stdout, "still here\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syntax_errors_are_reported() -> TestResult {
    let mut s = session().await?;
    run_ok(&mut s, "x = 1").await?;
    let outcome = s.run_cell("print('never')\ny = (1,\n").await?;
    assert_eq!(outcome.stdout, "");
    let error = outcome.error.ok_or("expected an error")?;
    assert_eq!(error.kind, "SyntaxError");
    assert!(error.message.contains("<cell 2>"), "{}", error.message);
    assert!(error.traceback.contains("SyntaxError"), "{}", error.traceback);
    let outcome = s.run_cell("def f(:\n  pass").await?;
    assert_eq!(outcome.error.map(|e| e.kind), Some("SyntaxError".to_owned()));
    let outcome = s.run_cell("if True:\nprint(1)").await?;
    assert_eq!(outcome.error.map(|e| e.kind), Some("IndentationError".to_owned()));
    assert_eq!(run_ok(&mut s, "print(x)").await?.stdout, "1\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_expression_is_echoed() -> TestResult {
    let mut s = session().await?;
    assert_eq!(run_ok(&mut s, "1 + 1").await?.stdout, "2\n");
    assert_eq!(run_ok(&mut s, "x = 'a'\nx").await?.stdout, "'a'\n");
    assert_eq!(run_ok(&mut s, "print('p')\nNone").await?.stdout, "p\n");
    assert_eq!(run_ok(&mut s, "y = [1, 2]").await?.stdout, "");
    assert_eq!(run_ok(&mut s, "y.append(3)").await?.stdout, "");
    assert_eq!(run_ok(&mut s, "len(y); y").await?.stdout, "[1, 2, 3]\n");
    assert_eq!(run_ok(&mut s, "").await?.stdout, "");
    assert_eq!(run_ok(&mut s, "# only a comment").await?.stdout, "");
    Ok(())
}

/// Cells whose last line alone decides nothing: a statement over several lines, strings and continuations that
/// span lines, statements that look like expressions. Each is echoed exactly when its last statement is an
/// expression, as the syntax tree says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_follows_the_last_statement_of_the_syntax_tree() -> TestResult {
    let mut s = session().await?;
    let cases: [(&str, &str, Option<&str>); 27] = [
        ("a = [1,\n2]\na", "[1, 2]\n", None),
        ("f = lambda *v: v\nf(1,\n2)", "(1, 2)\n", None),
        ("f(1,\n)", "(1,)\n", None),
        ("f(3\n  )", "(3,)\n", None),
        ("(1,\n 2) + (3,)", "(1, 2, 3)\n", None),
        ("y := 5", "", Some("SyntaxError")),
        ("x for x in 'ab'", "", Some("SyntaxError")),
        ("s = 'ab\\\ncd'\ns", "'abcd'\n", None),
        ("s = 'ab\\\ncd'", "", None),
        ("t = '''x\ny'''\nt", "'x\\ny'\n", None),
        ("u = '''\nlen(u)\n'''", "", None),
        ("print(1)  # done", "1\n", None),
        ("1;", "1\n", None),
        ("print('a'); 5", "a\n5\n", None),
        ("x = 3", "", None),
        ("x += 1\nx", "4\n", None),
        ("for i in range(2):\n    i", "", None),
        ("if True:\n    5\n7", "7\n", None),
        ("def g():\n    return 4\ng()", "4\n", None),
        ("v = 1 +\\\n2\nv", "3\n", None),
        ("w: int", "", None),
        ("*z, = [1, 2]\nz", "[1, 2]\n", None),
        ("from __future__ import annotations\nk: int = 1\nk", "1\n", None),
        ("\n\n42\n\n", "42\n", None),
        ("-1  # minus one\n# trailing comment", "-1\n", None),
        ("def h(:\n5", "", Some("SyntaxError")),
        ("return 6\n7", "", Some("SyntaxError")),
    ];
    for (cell, stdout, error) in cases {
        let outcome = s.run_cell(cell).await?;
        assert_eq!(outcome.error.as_ref().map(|e| e.kind.as_str()), error, "{cell:?}: {:?}", outcome.error);
        assert_eq!(outcome.stdout, stdout, "{cell:?}");
    }
    // An error in the last line points at it.
    let outcome = s.run_cell("a = 1\nb = 2\nundefined_name + a").await?;
    let error = outcome.error.ok_or("expected an error")?;
    assert_eq!(error.kind, "NameError");
    assert!(error.traceback.contains("line 3, in <module>\n    undefined_name + a\n"), "{}", error.traceback);
    let outcome = s.run_cell("1 / 0").await?;
    let error = outcome.error.ok_or("expected an error")?;
    assert!(error.traceback.contains("line 1, in <module>\n    1 / 0\n"), "{}", error.traceback);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_names_are_restored_after_every_cell() -> TestResult {
    let mut s = session().await?;
    run_ok(&mut s, "llm_query = None\ncontext = 1\nFINAL_VAR = 2\ndel SHOW_VARS\n__name__ = 'x'").await?;
    let outcome = run_ok(
        &mut s,
        "print(type(context).__name__, callable(llm_query), callable(FINAL_VAR), callable(SHOW_VARS), __name__)",
    )
    .await?;
    assert_eq!(outcome.stdout, "str True True True __main__\n");
    assert_eq!(run_ok(&mut s, "print(llm_query('q'))").await?.stdout, "echo: q\n");
    // Tampering followed by an exception in the same cell is restored too.
    s.run_cell("context = None\nraise ValueError('x')").await?;
    assert_eq!(run_ok(&mut s, "print(context)").await?.stdout, "hello world\n");
    assert!(s.variable_names().await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_dict_sets_the_outcome_answer() -> TestResult {
    let mut s = session().await?;
    assert_eq!(run_ok(&mut s, "print(answer)").await?.stdout, "{'content': None, 'ready': False}\n");
    let outcome = run_ok(&mut s, "answer['content'] = 'draft'").await?;
    assert_eq!(outcome.answer, None);
    let outcome = run_ok(&mut s, "answer['content'] = 42\nanswer['ready'] = True").await?;
    assert_eq!(outcome.answer, Some("42".to_owned()));
    // `answer` is not a user variable and is not restored.
    assert!(s.variable_names().await?.is_empty());
    let outcome = run_ok(&mut s, "answer = 'not a dict'").await?;
    assert_eq!(outcome.answer, None);
    // Rebound to the model's own result, `answer` is a variable like any other, by name or by value.
    assert_eq!(s.variable_names().await?, ["answer"]);
    assert_eq!(s.get_variable("answer").await?, Some("not a dict".to_owned()));
    let outcome = run_ok(&mut s, "FINAL_VAR(answer)").await?;
    assert_eq!(outcome.final_var, Some(FinalVar { name: "answer".to_owned(), value: Some("not a dict".to_owned()) }));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_var_resolves_existing_and_reports_missing_variables() -> TestResult {
    let mut s = session().await?;
    let outcome = run_ok(&mut s, "result = {'a': [1, 2]}\nFINAL_VAR('result')").await?;
    assert_eq!(
        outcome.final_var,
        Some(FinalVar { name: "result".to_owned(), value: Some("{'a': [1, 2]}".to_owned()) })
    );
    assert_eq!(outcome.stdout, "{'a': [1, 2]}\n");
    // Quotes and whitespace around the name are stripped; the return value is the str().
    let outcome = run_ok(&mut s, "v = FINAL_VAR(' \"result\" ')\nprint(v == str(result))").await?;
    assert_eq!(outcome.stdout, "True\n");
    assert_eq!(outcome.final_var.and_then(|f| f.value), Some("{'a': [1, 2]}".to_owned()));
    // Not set by a cell that did not call it.
    assert_eq!(run_ok(&mut s, "pass").await?.final_var, None);

    let outcome = run_ok(&mut s, "FINAL_VAR('nope')").await?;
    assert_eq!(outcome.final_var, Some(FinalVar { name: "nope".to_owned(), value: None }));
    assert_eq!(outcome.stdout, "Error: variable 'nope' not found. Available variables: ['result', 'v']\n");

    // Passing the value instead of its name finds the variable holding it.
    let outcome = run_ok(&mut s, "FINAL_VAR(result)").await?;
    assert_eq!(outcome.final_var.map(|f| f.name), Some("result".to_owned()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_vars_lists_user_variables_with_types() -> TestResult {
    let mut s = session().await?;
    assert_eq!(run_ok(&mut s, "SHOW_VARS()").await?.stdout, "No variables created yet.\n");
    let outcome = run_ok(&mut s, "a = 1\nb = 'x'\nimport os\n_private = 2\nSHOW_VARS()").await?;
    assert_eq!(outcome.stdout, "Available variables: {'a': 'int', 'b': 'str'}\n");
    let outcome = run_ok(&mut s, "print(SHOW_VARS())").await?;
    assert_eq!(outcome.stdout, "Available variables: {'a': 'int', 'b': 'str'}\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_calls_reach_the_host() -> TestResult {
    let host = Arc::new(EchoHost::default());
    let mut s = session_with(SessionSpec::new(Context::text("")), host.clone()).await?;
    let outcome = run_ok(&mut s, "print(llm_query('hi'))\nprint(llm_query('hi', model='m1'))").await?;
    assert_eq!(outcome.stdout, "echo: hi\necho[m1]: hi\n");

    let outcome = run_ok(
        &mut s,
        "rs = llm_query_batched(['a', 'fail me', {'k': [1, 'é']}, 7], model='m2')\nfor r in rs: print(r)",
    )
    .await?;
    assert_eq!(outcome.stdout, "echo[m2]: a\nError: boom fail me\necho[m2]: {\"k\": [1, \"é\"]}\necho[m2]: 7\n");
    let outcome = run_ok(&mut s, "print(rlm_query('deep'))\nprint(rlm_query_batched(['x', 'y']))").await?;
    assert_eq!(outcome.stdout, "echo: deep\n['echo: x', 'echo: y']\n");
    let outcome = run_ok(&mut s, "print(llm_query('fail single'))\nprint(llm_query_batched([]))").await?;
    assert_eq!(outcome.stdout, "Error: boom fail single\n[]\n");

    let batches = host.batches();
    assert_eq!(batches.len(), 6, "{batches:?}");
    assert_eq!(batches[0], vec![SubCall { kind: SubCallKind::Llm, prompt: "hi".into(), model: None }]);
    assert_eq!(batches[1][0].model.as_deref(), Some("m1"));
    // The batch is ONE host call with every prompt.
    assert_eq!(batches[2].len(), 4);
    assert!(batches[2].iter().all(|c| c.kind == SubCallKind::Llm && c.model.as_deref() == Some("m2")));
    assert_eq!(batches[3], vec![SubCall { kind: SubCallKind::Rlm, prompt: "deep".into(), model: None }]);
    assert_eq!(batches[4].len(), 2);
    assert_eq!(batches[4][1].kind, SubCallKind::Rlm);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_outlive_the_python_strings_they_were_read_from() -> TestResult {
    // The host gets the str's own bytes, not a copy: they must stay valid after the code dropped every reference.
    let host = Arc::new(EchoHost::default());
    let mut s = session_with(SessionSpec::new(Context::text("abc".repeat(100_000))), host.clone()).await?;
    let code = [
        r"ps = [context[i * 1000:(i + 1) * 1000] + str(i) for i in range(3)] + ['na\u00efve \U0001F600' * 2]",
        "llm_query_batched(ps)",
        "del ps",
        "import gc; gc.collect()",
        "junk = ['x' * 1000 + str(i) for i in range(1000)]",
    ]
    .join("\n");
    run_ok(&mut s, &code).await?;
    run_ok(&mut s, "del junk").await?;
    let batches = host.batches();
    let prompts: Vec<String> = batches[0].iter().map(|call| call.prompt.to_string()).collect();
    let slice = "abc".repeat(400);
    assert_eq!(prompts[0], format!("{}0", &slice[..1000]));
    assert_eq!(prompts[2], format!("{}2", &slice[2000 % 3..2000 % 3 + 1000]));
    assert_eq!(prompts[3], "na\u{ef}ve \u{1F600}na\u{ef}ve \u{1F600}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_calls_release_the_gil() -> TestResult {
    let host = EchoHost::with_sleep(Duration::from_millis(300));
    let mut s = session_with(SessionSpec::new(Context::text("")), host.clone()).await?;
    let code = "\
import threading, time
results = [None] * 8
def work(i):
    results[i] = llm_query(f'p{i}')
threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
t0 = time.perf_counter()
for t in threads: t.start()
for t in threads: t.join()
elapsed = time.perf_counter() - t0
print(sorted(results) == sorted(f'echo: p{i}' for i in range(8)))
";
    let outcome = run_ok(&mut s, code).await?;
    assert_eq!(outcome.stdout, "True\n");
    let elapsed: f64 = s.get_variable("elapsed").await?.ok_or("no elapsed")?.parse()?;
    assert!(elapsed < 4.0 * 0.3, "8 threads x 300 ms took {elapsed} s: sub-calls do not overlap");
    assert!(host.peak_in_flight.load(Ordering::SeqCst) >= 4, "peak {}", host.peak_in_flight.load(Ordering::SeqCst));

    // A batch of 8 is one host call, so it takes one sleep.
    let started = Instant::now();
    let outcome = run_ok(&mut s, "print(len(llm_query_batched([str(i) for i in range(8)])))").await?;
    assert_eq!(outcome.stdout, "8\n");
    assert!(started.elapsed() < Duration::from_millis(4 * 300), "{:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sessions_are_isolated() -> TestResult {
    let host = EchoHost::with_sleep(Duration::from_millis(5));
    let mut a = session_with(SessionSpec::new(Context::text("A")), host.clone()).await?;
    let mut b = session_with(SessionSpec::new(Context::text("B")), host.clone()).await?;
    let code = "\
import sys, time
x = context
for i in range(60):
    print(x, i)
    print(x, i, file=sys.stderr)
    if i % 10 == 0:
        llm_query(x)
    time.sleep(0.001)
";
    let (ra, rb) = tokio::join!(a.run_cell(code), b.run_cell(code));
    let (ra, rb) = (ra?, rb?);
    assert_ok(&ra);
    assert_ok(&rb);
    for (outcome, name) in [(&ra, "A"), (&rb, "B")] {
        for stream in [&outcome.stdout, &outcome.stderr] {
            let lines: Vec<&str> = stream.lines().collect();
            assert_eq!(lines.len(), 60, "{name}: {stream}");
            for (i, line) in lines.iter().enumerate() {
                assert_eq!(*line, format!("{name} {i}"));
            }
        }
    }
    assert_eq!(a.get_variable("x").await?, Some("A".to_owned()));
    assert_eq!(b.get_variable("x").await?, Some("B".to_owned()));
    run_ok(&mut a, "only_in_a = 1").await?;
    let outcome = b.run_cell("only_in_a").await?;
    assert_eq!(outcome.error.map(|e| e.kind), Some("NameError".to_owned()));
    Ok(())
}

fn timeout_spec(timeout: Duration) -> SessionSpec {
    let mut spec = SessionSpec::new(Context::text("t"));
    spec.cell_timeout = timeout;
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_loop_times_out_and_the_session_survives() -> TestResult {
    let mut s = session_with(timeout_spec(Duration::from_secs(1)), Arc::new(EchoHost::default())).await?;
    let started = Instant::now();
    let outcome = s.run_cell("print('start')\nwhile True:\n    pass").await?;
    let elapsed = started.elapsed();
    let error = outcome.error.ok_or("expected a timeout")?;
    assert_eq!(error.kind, "TimeoutError");
    assert_eq!(error.message, "cell exceeded the 1 s time limit and was interrupted");
    assert!(error.traceback.contains("<cell 1>\", line 2"), "{}", error.traceback);
    assert!(error.traceback.ends_with("\nTimeoutError: cell exceeded the 1 s time limit and was interrupted"));
    assert_eq!(outcome.stdout, "start\n");
    assert!(elapsed >= Duration::from_millis(950) && elapsed < Duration::from_secs(4), "{elapsed:?}");

    let outcome = run_ok(&mut s, "x = 1\nprint(x)").await?;
    assert_eq!(outcome.stdout, "1\n");
    // `except Exception` does not swallow the interruption.
    let outcome = s.run_cell("try:\n    while True: pass\nexcept Exception:\n    print('caught')").await?;
    assert_eq!(outcome.error.map(|e| e.kind), Some("TimeoutError".to_owned()));
    assert_eq!(outcome.stdout, "");
    // A cell that swallows the first interruption is interrupted again.
    // (Not a `while True: n += 1` inside the `try`: CPython 3.11 raises an asynchronous exception at the backward
    // jump of such a loop, which lies outside the `try` block's range, so the handler would not run.)
    let code = "import time\ntry:\n    while True: time.sleep(0.01)\nexcept BaseException:\n    print('swallowed')\nwhile True: pass";
    let outcome = s.run_cell(code).await?;
    assert_eq!(outcome.error.as_ref().map(|e| e.kind.as_str()), Some("TimeoutError"), "{outcome:?}");
    assert_eq!(outcome.stdout, "swallowed\n", "{outcome:?}");
    assert_eq!(run_ok(&mut s, "x + 1").await?.stdout, "2\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_while_waiting_for_a_sub_call() -> TestResult {
    let host = EchoHost::with_sleep(Duration::from_secs(30));
    let mut s = session_with(timeout_spec(Duration::from_secs(1)), host.clone()).await?;
    let started = Instant::now();
    let outcome = s.run_cell("r = llm_query('slow')\nprint('not reached')").await?;
    let elapsed = started.elapsed();
    let error = outcome.error.ok_or("expected a timeout")?;
    assert_eq!(error.kind, "TimeoutError");
    assert_eq!(outcome.stdout, "");
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    assert_eq!(host.batches().len(), 1);
    let outcome = run_ok(&mut s, "print('alive')").await?;
    assert_eq!(outcome.stdout, "alive\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_whose_caller_gave_up_is_still_stopped_at_its_deadline() -> TestResult {
    let mut s = session_with(timeout_spec(Duration::from_secs(1)), Arc::new(EchoHost::default())).await?;
    let started = Instant::now();
    let abandoned = tokio::time::timeout(Duration::from_millis(200), s.run_cell("while True:\n    pass")).await;
    assert!(abandoned.is_err(), "the busy cell cannot have ended");
    // The next cell waits for the abandoned one, which the session's watchdog stops at its deadline.
    let outcome = run_ok(&mut s, "print('after')").await?;
    assert_eq!(outcome.stdout, "after\n");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(950) && elapsed < Duration::from_secs(4), "{elapsed:?}");
    // Many quick cells, then one that runs too long: still interrupted on time.
    for n in 0..50 {
        run_ok(&mut s, &format!("y = {n}")).await?;
    }
    let started = Instant::now();
    let outcome = s.run_cell("while True:\n    pass").await?;
    assert_eq!(outcome.error.map(|e| e.kind), Some("TimeoutError".to_owned()));
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_output_is_capped() -> TestResult {
    let mut spec = SessionSpec::new(Context::text(""));
    spec.max_captured_chars = 100;
    let mut s = session_with(spec, Arc::new(EchoHost::default())).await?;
    let outcome = run_ok(&mut s, "print('x' * 10**6)").await?;
    assert_eq!(outcome.stdout, "x".repeat(100));
    assert_eq!(outcome.dropped_chars, 1_000_001 - 100);
    // stdout and stderr share the budget.
    let outcome = run_ok(&mut s, "import sys\nprint('a' * 60)\nprint('b' * 60, file=sys.stderr)").await?;
    assert_eq!(outcome.stdout.len() + outcome.stderr.len(), 100);
    assert_eq!(outcome.stdout, format!("{}\n", "a".repeat(60)));
    assert_eq!(outcome.stderr, "b".repeat(39));
    assert_eq!(outcome.dropped_chars, 22);
    // A huge last-expression value is echoed only up to the cap, without building its whole repr.
    let outcome = run_ok(&mut s, "'y' * 10**7").await?;
    assert_eq!(outcome.stdout.len(), 100);
    assert!(outcome.dropped_chars >= 10_000_000 - 100, "{}", outcome.dropped_chars);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_exit_and_input_do_not_escape_the_cell() -> TestResult {
    let mut s = session().await?;
    let outcome = s.run_cell("import sys\nsys.exit(3)").await?;
    assert_eq!(outcome.error.map(|e| e.kind), Some("SystemExit".to_owned()));
    let outcome = s.run_cell("input('name? ')").await?;
    assert_eq!(outcome.error.map(|e| e.kind), Some("EOFError".to_owned()));
    assert_eq!(run_ok(&mut s, "print('ok')").await?.stdout, "ok\n");
    Ok(())
}

async fn info_of(context: Context) -> Result<(ContextInfo, LocalSession), Error> {
    let s = session_with(SessionSpec::new(context), Arc::new(EchoHost::default())).await?;
    Ok((s.context_info().clone(), s))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_and_json_contexts() -> TestResult {
    let (info, mut s) = info_of(Context::text("héllo wörld")).await?;
    assert_eq!(
        info,
        ContextInfo { python_type: "str".into(), total_chars: 11, chunk_lengths: vec![11], chunk_count: 1 }
    );
    assert_eq!(run_ok(&mut s, "print(len(context), context[1])").await?.stdout, "11 é\n");

    let (info, mut s) = info_of(Context::Json(json!(["ab", "cde", 1, {"k": "v"}]))).await?;
    assert_eq!(info.python_type, "list");
    assert_eq!(info.chunk_lengths, vec![2, 3, 1, 10]); // str({'k': 'v'}) == "{'k': 'v'}"
    assert_eq!(info.total_chars, 16);
    assert_eq!(info.chunk_count, 4);
    assert_eq!(run_ok(&mut s, "print(context[3]['k'], type(context[2]).__name__)").await?.stdout, "v int\n");

    let (info, mut s) = info_of(Context::Json(json!({"a": "xyz", "b": [1, 2], "c": null, "d": 1.5}))).await?;
    assert_eq!(info.python_type, "dict");
    assert_eq!(info.chunk_lengths, vec![3, 6, 4, 3]);
    assert_eq!(info.total_chars, 16);
    assert_eq!(info.chunk_count, 4);
    assert_eq!(run_ok(&mut s, "print(context['c'] is None, context['d'] * 2)").await?.stdout, "True 3.0\n");

    let many: Vec<String> = (0..150).map(|i| "x".repeat(i % 7)).collect();
    let (info, _s) = info_of(Context::Json(json!(many))).await?;
    assert_eq!(info.chunk_count, 150);
    assert_eq!(info.chunk_lengths.len(), ContextInfo::MAX_CHUNKS_LISTED);
    assert_eq!(info.total_chars, (0..150u64).map(|i| i % 7).sum::<u64>());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_contexts() -> TestResult {
    let ascii = temp_file(b"line one\nline two\n")?;
    let (info, mut s) = info_of(Context::TextFile(ascii.path().to_owned())).await?;
    assert_eq!(
        info,
        ContextInfo { python_type: "str".into(), total_chars: 18, chunk_lengths: vec![18], chunk_count: 1 }
    );
    assert_eq!(run_ok(&mut s, "print(context.splitlines()[1])").await?.stdout, "line two\n");

    let utf8 = temp_file("größe: 😀\n".as_bytes())?;
    let (info, mut s) = info_of(Context::TextFile(utf8.path().to_owned())).await?;
    assert_eq!(info.total_chars, 9);
    assert_eq!(run_ok(&mut s, "print(context.strip()[-1] == '\\U0001F600')").await?.stdout, "True\n");

    let invalid = temp_file(&[b'o', b'k', 0xc3, 0x28])?;
    let err = info_of(Context::TextFile(invalid.path().to_owned())).await.err();
    assert!(matches!(err, Some(Error::InvalidInput(ref m)) if m.contains("UTF-8")), "{err:?}");
    let err = info_of(Context::TextFile("/nonexistent/rlm/context.txt".into())).await.err();
    assert!(matches!(err, Some(Error::Io(_))), "{err:?}");

    let json_file = temp_file(br#"[{"id": 1, "text": "abc"}, {"id": 2, "text": "de"}]"#)?;
    let (info, mut s) = info_of(Context::JsonFile(json_file.path().to_owned())).await?;
    assert_eq!(info.python_type, "list");
    assert_eq!(info.chunk_count, 2);
    assert_eq!(run_ok(&mut s, "print(sum(len(d['text']) for d in context))").await?.stdout, "5\n");
    let bad_json = temp_file(b"{not json")?;
    let err = info_of(Context::JsonFile(bad_json.path().to_owned())).await.err();
    assert!(matches!(err, Some(Error::InvalidInput(ref m)) if m.contains("JSON")), "{err:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_ascii_text_file_loads() -> TestResult {
    const SIZE: usize = 50 * 1024 * 1024;
    let mut file = tempfile::NamedTempFile::new()?;
    let line = b"the quick brown fox jumps over the lazy dog 0123456789\n";
    let mut written = 0;
    let mut writer = std::io::BufWriter::new(file.as_file_mut());
    while written + line.len() <= SIZE {
        writer.write_all(line)?;
        written += line.len();
    }
    writer.write_all(b"needle")?;
    written += 6;
    writer.write_all(&vec![b'.'; SIZE - written])?;
    writer.flush()?;
    drop(writer);

    let started = Instant::now();
    let (info, mut s) = info_of(Context::TextFile(file.path().to_owned())).await?;
    let load = started.elapsed();
    assert_eq!(info.python_type, "str");
    assert_eq!(info.total_chars, SIZE as u64);
    assert!(load < Duration::from_secs(10), "50 MB load took {load:?}");
    let outcome = run_ok(&mut s, "print(context.count('needle'), context.isascii(), len(context))").await?;
    assert_eq!(outcome.stdout, format!("1 True {SIZE}\n"));
    Box::new(s).close().await?;
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn works_on_a_current_thread_runtime() -> TestResult {
    let host = EchoHost::with_sleep(Duration::from_millis(50));
    let mut s = session_with(timeout_spec(Duration::from_secs(1)), host).await?;
    let outcome = run_ok(&mut s, "print(llm_query_batched(['a', 'b']))").await?;
    assert_eq!(outcome.stdout, "['echo: a', 'echo: b']\n");
    let outcome = s.run_cell("while True:\n    pass").await?;
    assert_eq!(outcome.error.map(|e| e.kind), Some("TimeoutError".to_owned()));
    assert_eq!(run_ok(&mut s, "print('ok')").await?.stdout, "ok\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_recursion_has_a_short_traceback() -> TestResult {
    let mut s = session().await?;
    let started = Instant::now();
    let code = "import sys\nsys.setrecursionlimit(20000)\ndef dive(n):\n    return dive(n + 1) + 1\ndive(0)";
    let error = s.run_cell(code).await?.error.ok_or("no error")?;
    assert_eq!(error.kind, "RecursionError");
    assert!(error.traceback.contains("more frames not shown"), "{}", error.traceback);
    assert!(error.traceback.contains("File \"<cell 1>\", line 5"), "{}", error.traceback);
    assert!(error.traceback.lines().count() < 60, "{}", error.traceback);
    assert!(started.elapsed() < Duration::from_secs(10));
    // An ordinary traceback is complete.
    let error =
        s.run_cell("def f(n):\n    return 1 / 0 if n == 0 else f(n - 1)\nf(3)").await?.error.ok_or("no error")?;
    assert!(!error.traceback.contains("not shown"), "{}", error.traceback);
    assert!(
        error.traceback.contains("line 2, in f") && error.traceback.ends_with("ZeroDivisionError: division by zero")
    );
    Ok(())
}

/// Hard-wrapped prose (a README, a book at 70 columns): a passage goes on across line breaks to the end of its
/// sentence, while lines of records, list items and CSV rows stay whole lines of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_follows_wrapped_sentences_but_not_records() -> TestResult {
    let text = "It was the best of times, it was the worst of times, it was the age\n\
                of wisdom, it was the age of foolishness, it was the epoch of belief,\n\
                it was the epoch of incredulity. Then the next sentence starts here\n\
                and goes on.\n\n\
                - a list item that is long enough to look like prose, with words\n\
                - another item about a ledger\n\
                2026-03-14T06:56:01Z host=api-1 user=u1101 action=search status=error\n\
                2026-03-14T06:56:02Z host=api-1 user=u1102 action=search status=error\n\
                name,city\n\
                person one with a long name and many more words,Lisbon\n\
                person two with a long name and many more words,Porto\n";
    let mut s = session_with(SessionSpec::new(Context::text(text)), Arc::new(EchoHost::default())).await?;
    let out = run_ok(&mut s, "print(search('epoch of belief'))").await?.stdout;
    assert!(
        out.contains(
            "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of \
                      foolishness, it was the epoch of belief, it was the epoch of incredulity.\n"
        ),
        "{out}"
    );
    assert!(!out.contains("Then the next"), "{out}");
    let out = run_ok(&mut s, "print(search('list item'))").await?.stdout;
    assert!(out.contains("- a list item that is long enough to look like prose, with words\n"), "{out}");
    assert!(!out.contains("another item"), "{out}");
    let out = run_ok(&mut s, "print(search('u1101'))").await?.stdout;
    assert!(out.ends_with("action=search status=error\n") && !out.contains("u1102"), "{out}");
    let out = run_ok(&mut s, "print(search('person one'))").await?.stdout;
    assert!(out.contains("words,Lisbon\n") && !out.contains("Porto"), "{out}");
    Ok(())
}
