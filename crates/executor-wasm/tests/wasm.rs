//! Integration tests of the wasm executor: real wasmtime, real CPython `python.wasm`.
//!
//! The interpreter module is installed by `scripts/fetch-python-wasm.sh` when missing (CI runs it too). The compiled
//! module is cached in the default cache directory, so only the first run on a machine compiles it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rlm_executor_wasm::{ModuleSource, WasmConfig, WasmExecutor};
use rlm_protocol::{
    CellOutcome, Context, Error, Executor, ReplSession, SessionSpec, SubCall, SubCallHost, SubCallKind, SubCallResult,
};

/// Records every host call; answers `echo:<prompt>` (model-tagged when a model is given); prompts starting with
/// `fail` get an error.
#[derive(Default)]
struct TestHost {
    calls: Mutex<Vec<Vec<SubCall>>>,
}

impl TestHost {
    fn batches(&self) -> Vec<Vec<SubCall>> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl SubCallHost for TestHost {
    async fn sub_calls(&self, calls: Vec<SubCall>) -> Vec<SubCallResult> {
        self.calls.lock().unwrap().push(calls.clone());
        calls
            .into_iter()
            .map(|call| {
                if call.prompt.starts_with("fail") {
                    Err(format!("refused {}", call.prompt))
                } else {
                    let prefix = match call.kind {
                        SubCallKind::Llm => "echo",
                        SubCallKind::Rlm => "rlm",
                    };
                    match call.model {
                        Some(model) => Ok(format!("{prefix}[{model}]:{}", call.prompt)),
                        None => Ok(format!("{prefix}:{}", call.prompt)),
                    }
                }
            })
            .collect()
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("..")
}

/// Installs python.wasm with the project's script when the default location has none.
fn ensure_module() -> PathBuf {
    let path = WasmConfig::default().module_path;
    if !path.is_file() {
        let status = std::process::Command::new("bash")
            .arg(repo_root().join("scripts").join("fetch-python-wasm.sh"))
            .arg(&path)
            .status()
            .expect("run scripts/fetch-python-wasm.sh");
        assert!(status.success(), "scripts/fetch-python-wasm.sh failed");
    }
    assert!(path.is_file());
    path
}

/// One executor for the whole test binary (the first creation may compile the module).
fn executor() -> &'static WasmExecutor {
    static EXECUTOR: OnceLock<WasmExecutor> = OnceLock::new();
    EXECUTOR.get_or_init(|| {
        // SAFETY: set once, before any session exists, inside the initialiser every test goes through first. The
        // guest must never see it.
        unsafe { std::env::set_var("OPENAI_API_KEY", "sk-test-must-not-leak") };
        ensure_module();
        let started = Instant::now();
        let executor = WasmExecutor::new(WasmConfig::default()).expect("executor");
        eprintln!("WasmExecutor::new ({:?}): {:?}", executor.module_source(), started.elapsed());
        executor
    })
}

fn spec(context: impl Into<Context>, timeout: Duration) -> SessionSpec {
    let mut spec = SessionSpec::new(context.into());
    spec.cell_timeout = timeout;
    spec
}

async fn start(context: impl Into<Context>) -> (Box<dyn ReplSession>, Arc<TestHost>) {
    let host = Arc::new(TestHost::default());
    let session = executor().start_session(spec(context, Duration::from_secs(30)), host.clone()).await.unwrap();
    (session, host)
}

async fn run(session: &mut Box<dyn ReplSession>, code: &str) -> CellOutcome {
    session.run_cell(code).await.unwrap()
}

async fn ok(session: &mut Box<dyn ReplSession>, code: &str) -> String {
    let outcome = run(session, code).await;
    assert!(outcome.error.is_none(), "cell {code:?} failed: {:?}", outcome.error);
    outcome.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_persists_and_trailing_expressions_echo() {
    let (mut s, _) = start("hello world").await;
    assert_eq!(executor().name(), "wasm");
    let info = s.context_info().clone();
    assert_eq!(info.python_type, "str");
    assert_eq!(info.total_chars, 11);
    assert_eq!(info.chunk_lengths, vec![11]);
    assert_eq!(info.chunk_count, 1);

    assert_eq!(ok(&mut s, "x = 40\ny = 2").await, "");
    assert_eq!(ok(&mut s, "x + y").await, "42\n");
    assert_eq!(ok(&mut s, "print('a'); 'b'").await, "a\n'b'\n");
    assert_eq!(ok(&mut s, "None").await, "");
    assert_eq!(ok(&mut s, "len(context), context.upper()").await, "(11, 'HELLO WORLD')\n");
    assert_eq!(ok(&mut s, "def f(n):\n    return n * x\nf(2)").await, "80\n");
    assert_eq!(
        ok(&mut s, "import json\n_private = 1\nSHOW_VARS()").await,
        "Available variables: {'x': 'int', 'y': 'int', 'f': 'function'}\n"
    );
    let err = run(&mut s, "import sys; print('to err', file=sys.stderr)").await;
    assert_eq!(err.stderr, "to err\n");
    assert_eq!(s.variable_names().await.unwrap(), vec!["f", "x", "y"]);
    assert_eq!(s.get_variable("x").await.unwrap().as_deref(), Some("40"));
    assert_eq!(s.get_variable("nope").await.unwrap(), None);
    assert_eq!(s.get_variable("context").await.unwrap(), None);
    assert_eq!(
        ok(&mut s, "input_ok = False\ntry:\n    input()\nexcept EOFError:\n    input_ok = True\ninput_ok").await,
        "True\n"
    );
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceptions_have_short_tracebacks() {
    let (mut s, _) = start("").await;
    ok(&mut s, "def boom():\n    return 1 / 0").await;
    let outcome = run(&mut s, "print('before')\nboom()").await;
    assert_eq!(outcome.stdout, "before\n");
    let error = outcome.error.expect("error");
    assert_eq!(error.kind, "ZeroDivisionError");
    assert_eq!(error.message, "division by zero");
    assert!(error.traceback.starts_with("Traceback (most recent call last):"), "{}", error.traceback);
    assert!(error.traceback.contains("File \"<cell 2>\", line 2"), "{}", error.traceback);
    assert!(error.traceback.contains("File \"<cell 1>\", line 2, in boom"), "{}", error.traceback);
    assert!(error.traceback.contains("return 1 / 0"), "{}", error.traceback);
    assert!(error.traceback.ends_with("ZeroDivisionError: division by zero"), "{}", error.traceback);
    assert!(!error.traceback.contains("driver"), "{}", error.traceback);

    let syntax = run(&mut s, "def (:").await.error.expect("syntax error");
    assert_eq!(syntax.kind, "SyntaxError");
    assert!(syntax.traceback.contains("<cell 3>"), "{}", syntax.traceback);

    let exit = run(&mut s, "import sys\nsys.exit(3)").await.error.expect("exit");
    assert_eq!(exit.kind, "SystemExit");
    // The session goes on.
    assert_eq!(ok(&mut s, "1 + 1").await, "2\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_names_are_restored_and_answers_reported() {
    let (mut s, _) = start("ctx").await;
    ok(&mut s, "context = 'changed'\nllm_query = None\nFINAL_VAR = 3\nSHOW_VARS = 4").await;
    assert_eq!(ok(&mut s, "context").await, "'ctx'\n");
    assert_eq!(ok(&mut s, "callable(llm_query), callable(FINAL_VAR)").await, "(True, True)\n");
    assert!(s.variable_names().await.unwrap().is_empty());

    let outcome = run(&mut s, "result = 6 * 7\nFINAL_VAR('result')").await;
    assert_eq!(outcome.stdout, "42\n");
    let final_var = outcome.final_var.expect("final var");
    assert_eq!(final_var.name, "result");
    assert_eq!(final_var.value.as_deref(), Some("42"));
    // Only for the cell that called it.
    assert_eq!(run(&mut s, "1").await.final_var, None);

    let missing = run(&mut s, "FINAL_VAR('nothing')").await;
    assert_eq!(missing.final_var.as_ref().map(|f| f.value.clone()), Some(None));
    assert!(missing.stdout.starts_with("Error: variable 'nothing' not found"), "{}", missing.stdout);
    assert_eq!(missing.stdout.matches("Error").count(), 1, "printed once, not echoed again");

    let by_value = run(&mut s, "FINAL_VAR(result)").await;
    assert_eq!(by_value.final_var.map(|f| f.name), Some("result".to_owned()));

    assert_eq!(run(&mut s, "answer['content'] = 'draft'").await.answer, None);
    let answered = run(&mut s, "answer['content'] = [1, 2]\nanswer['ready'] = True").await;
    assert_eq!(answered.answer.as_deref(), Some("[1, 2]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_calls_reach_the_host_in_batches() {
    let (mut s, host) = start("").await;
    assert_eq!(ok(&mut s, "llm_query('hi')").await, "'echo:hi'\n");
    assert_eq!(ok(&mut s, "llm_query('hi', model='m1')").await, "'echo[m1]:hi'\n");
    assert_eq!(ok(&mut s, "rlm_query('deep')").await, "'rlm:deep'\n");
    assert_eq!(
        ok(&mut s, "llm_query_batched(['a', 'fail-b', 'c\\u00e9' * 3])").await,
        "['echo:a', 'Error: refused fail-b', 'echo:c\u{e9}c\u{e9}c\u{e9}']\n"
    );
    assert_eq!(ok(&mut s, "rlm_query_batched(['x', 'y'])").await, "['rlm:x', 'rlm:y']\n");
    assert_eq!(ok(&mut s, "llm_query_batched([])").await, "[]\n");
    assert_eq!(ok(&mut s, "llm_query({'k': 1})").await, "'echo:{\"k\": 1}'\n");
    let batches = host.batches();
    assert_eq!(batches.len(), 6, "{batches:?}");
    assert_eq!(batches[1][0].model.as_deref(), Some("m1"));
    assert_eq!(batches[2][0].kind, SubCallKind::Rlm);
    assert_eq!(batches[3].len(), 3, "one host call for the whole batch");
    assert_eq!(batches[3][2].prompt, "c\u{e9}c\u{e9}c\u{e9}");
    assert_eq!(batches[4].iter().map(|c| c.kind).collect::<Vec<_>>(), vec![SubCallKind::Rlm; 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_context_loads() {
    executor();
    let text = "abcdefghij".repeat(10 * 1024 * 1024);
    let started = Instant::now();
    let (mut s, _) = start(text).await;
    let elapsed = started.elapsed();
    eprintln!("100 MB ASCII context: session start {elapsed:?}");
    assert_eq!(s.context_info().total_chars, 100 * 1024 * 1024);
    assert_eq!(
        ok(&mut s, "len(context), context[:3], context[-2:], context.count('j')").await,
        "(104857600, 'abc', 'ij', 10485760)\n"
    );
    // Echoing the whole context is capped, not built.
    let echo = run(&mut s, "context").await;
    assert!(echo.dropped_chars > 0);
    assert!(echo.stdout.len() <= SessionSpec::DEFAULT_MAX_CAPTURED_CHARS + 16);
    s.close().await.unwrap();

    // From a file, read on the host.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctx.txt");
    std::fs::write(&path, "na\u{ef}ve\n".repeat(1000)).unwrap();
    let (mut s, _) = start(Context::TextFile(path)).await;
    assert_eq!(s.context_info().total_chars, 6000);
    assert_eq!(ok(&mut s, "context[:6]").await, "'na\u{ef}ve\\n'\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_contexts_become_python_values() {
    let (mut s, _) = start(serde_json::json!({"a": "xy", "b": [1, 2, 3], "c": null})).await;
    let info = s.context_info().clone();
    assert_eq!(info.python_type, "dict");
    assert_eq!(info.chunk_count, 3);
    assert_eq!(info.chunk_lengths, vec![2, 9, 4]);
    assert_eq!(ok(&mut s, "context['b'][1], context['c']").await, "(2, None)\n");

    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    std::fs::write(&good, "[\"a\", \"bc\"]").unwrap();
    let (s, _) = start(Context::JsonFile(good)).await;
    assert_eq!(s.context_info().python_type, "list");
    assert_eq!(s.context_info().chunk_lengths, vec![1, 2]);

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{not json").unwrap();
    let host = Arc::new(TestHost::default());
    let err = executor().start_session(SessionSpec::new(Context::JsonFile(bad)), host).await.err();
    assert!(matches!(err, Some(Error::InvalidInput(ref m)) if m.contains("JSON")), "{err:?}");

    let missing = executor()
        .start_session(
            SessionSpec::new(Context::TextFile("/nonexistent/ctx.txt".into())),
            Arc::new(TestHost::default()),
        )
        .await
        .err();
    assert!(matches!(missing, Some(Error::Io(_))), "{missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_restarts_the_sandbox_and_replays_history() {
    let host = Arc::new(TestHost::default());
    let mut s = executor().start_session(spec("ctx", Duration::from_secs(1)), host.clone()).await.unwrap();
    ok(&mut s, "a = 5\nanswer_from_model = llm_query('remember me')\nitems = [a] * 3").await;
    let failed = run(&mut s, "this_fails = 1 / 0").await;
    assert_eq!(failed.error.map(|e| e.kind).as_deref(), Some("ZeroDivisionError"));
    assert_eq!(host.batches().len(), 1);

    let started = Instant::now();
    let outcome = run(&mut s, "b = 1\nwhile True:\n    pass").await;
    let elapsed = started.elapsed();
    let error = outcome.error.expect("timeout error");
    assert_eq!(error.kind, "TimeoutError");
    assert!(error.message.contains("1 s time limit"), "{}", error.message);
    assert!(error.message.contains("restarted"), "{}", error.message);
    assert!(elapsed >= Duration::from_millis(990), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    eprintln!("timeout + rebuild + replay: {elapsed:?}");

    // The session works and still has what earlier cells defined; replayed sub-calls were not sent again.
    assert_eq!(ok(&mut s, "a, items, answer_from_model").await, "(5, [5, 5, 5], 'echo:remember me')\n");
    assert_eq!(s.get_variable("b").await.unwrap(), None, "the trapped cell is not replayed");
    assert_eq!(host.batches().len(), 1);
    // Cell numbers go on (the trapped cell was number 3).
    let err = run(&mut s, "1/0").await.error.unwrap();
    assert!(err.traceback.contains("<cell 5>"), "{}", err.traceback);

    // A sub-call that outlives the deadline is a timeout too.
    struct Slow;
    #[async_trait]
    impl SubCallHost for Slow {
        async fn sub_calls(&self, calls: Vec<SubCall>) -> Vec<SubCallResult> {
            tokio::time::sleep(Duration::from_secs(5)).await;
            calls.into_iter().map(|c| Ok(c.prompt.to_string())).collect()
        }
    }
    let mut slow = executor().start_session(spec("", Duration::from_secs(1)), Arc::new(Slow)).await.unwrap();
    ok(&mut slow, "kept = 1").await;
    let started = Instant::now();
    let outcome = run(&mut slow, "llm_query('x')").await;
    assert_eq!(outcome.error.map(|e| e.kind).as_deref(), Some("TimeoutError"));
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(ok(&mut slow, "kept").await, "1\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_replay_marks_the_session_dead() {
    let host = Arc::new(TestHost::default());
    let mut s = executor().start_session(spec("", Duration::from_secs(1)), host).await.unwrap();
    // Fast now, an endless loop when replayed two seconds later.
    let until = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64() + 1.5;
    ok(&mut s, &format!("import time\nif time.time() > {until}:\n    while True:\n        pass")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let outcome = run(&mut s, "while True:\n    pass").await;
    let error = outcome.error.expect("timeout");
    assert_eq!(error.kind, "TimeoutError");
    assert!(error.message.contains("could not be rebuilt"), "{}", error.message);
    let next = s.run_cell("1").await;
    assert!(matches!(next, Err(Error::SessionDead(_))), "{next:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_is_limited_and_the_session_survives() {
    let (mut s, _) = start("").await;
    ok(&mut s, "keep = 'still here'").await;
    // wasm32 has a 32-bit `Py_ssize_t`: a 2 GiB size does not even fit an index (OverflowError); 1.5 GiB fits
    // but is over the 1 GiB memory limit (MemoryError).
    let outcome = run(&mut s, "big = bytearray(2 * 1024**3)").await;
    let kind = outcome.error.map(|e| e.kind);
    assert!(matches!(kind.as_deref(), Some("MemoryError" | "OverflowError")), "{kind:?}");
    let outcome = run(&mut s, "big = bytearray(3 * 512 * 1024**2)").await;
    assert_eq!(outcome.error.map(|e| e.kind).as_deref(), Some("MemoryError"));
    let outcome = run(&mut s, "chunks = []\nwhile True:\n    chunks.append(bytearray(64 * 1024**2))").await;
    assert_eq!(outcome.error.map(|e| e.kind).as_deref(), Some("MemoryError"));
    assert_eq!(ok(&mut s, "del chunks\nkeep, len(bytearray(10**6))").await, "('still here', 1000000)\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_has_no_files_environment_network_or_processes() {
    let (mut s, _) = start("").await;
    assert_eq!(std::env::var("OPENAI_API_KEY").as_deref(), Ok("sk-test-must-not-leak"));

    let open = run(&mut s, "open('/etc/passwd').read()").await.error.expect("open fails");
    assert!(["FileNotFoundError", "OSError", "PermissionError"].contains(&open.kind.as_str()), "{open:?}");
    let write = run(&mut s, "open('/tmp/rlm-wasm-escape', 'w').write('x')").await.error.expect("write fails");
    assert!(write.kind.ends_with("Error"), "{write:?}");
    assert!(!std::path::Path::new("/tmp/rlm-wasm-escape").exists());

    assert_eq!(
        ok(&mut s, "import os\n'OPENAI_API_KEY' in os.environ, 'HOME' in os.environ, 'PATH' in os.environ").await,
        "(False, False, False)\n"
    );
    assert_eq!(ok(&mut s, "len(os.environ)").await, "0\n");

    let socket = run(&mut s, "import socket\nsocket.create_connection(('127.0.0.1', 80), timeout=1)").await;
    assert!(socket.error.is_some(), "{socket:?}");
    let subprocess = run(&mut s, "import subprocess\nsubprocess.run(['ls'])").await;
    assert!(subprocess.error.is_some(), "{subprocess:?}");
    let system = run(&mut s, "os.system('touch /tmp/rlm-wasm-escape')").await;
    assert!(system.error.is_some() || system.stdout.trim() != "0", "{system:?}");
    assert!(!std::path::Path::new("/tmp/rlm-wasm-escape").exists());

    // Writing to the real stdout / stderr descriptors does not disturb the protocol.
    ok(&mut s, "os.write(1, b'raw stdout\\n'); os.write(2, b'raw stderr\\n'); import sys; sys.__stdout__.write('x')")
        .await;
    assert_eq!(ok(&mut s, "'alive'").await, "'alive'\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_isolated_and_run_concurrently() {
    let (mut a, _) = start("context A").await;
    let (mut b, _) = start("context B").await;
    ok(&mut a, "v = 'from a'").await;
    ok(&mut b, "v = 'from b'").await;
    let started = Instant::now();
    let slow = "import time\ntime.sleep(1)\nv";
    let (ra, rb) = tokio::join!(a.run_cell(slow), b.run_cell(slow));
    let elapsed = started.elapsed();
    assert_eq!(ra.unwrap().stdout, "'from a'\n");
    assert_eq!(rb.unwrap().stdout, "'from b'\n");
    assert!(elapsed < Duration::from_millis(1900), "cells of two sessions ran one after the other: {elapsed:?}");
    assert_eq!(ok(&mut a, "context").await, "'context A'\n");
    assert_eq!(ok(&mut b, "context").await, "'context B'\n");
    a.close().await.unwrap();
    // The other session is unaffected by the first one closing.
    assert_eq!(ok(&mut b, "v").await, "'from b'\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_capped() {
    let host = Arc::new(TestHost::default());
    let mut spec = spec("", Duration::from_secs(30));
    spec.max_captured_chars = 100;
    let mut s = executor().start_session(spec, host).await.unwrap();
    let outcome = run(&mut s, "print('x' * 150)\nprint('y' * 10)").await;
    assert_eq!(outcome.stdout, "x".repeat(100));
    assert_eq!(outcome.dropped_chars, 51 + 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compiled_module_is_cached_on_disk() {
    let first = executor();
    assert!(first.cache_file().is_file(), "{}", first.cache_file().display());
    let started = Instant::now();
    let second = WasmExecutor::new(WasmConfig::default()).unwrap();
    eprintln!("WasmExecutor::new with a warm cache: {:?}", started.elapsed());
    assert_eq!(second.module_source(), ModuleSource::Cache);
    assert_eq!(second.cache_file(), first.cache_file());

    let started = Instant::now();
    let mut s = second.start_session(SessionSpec::new(Context::text("")), Arc::new(TestHost::default())).await.unwrap();
    eprintln!("session start (empty context): {:?}", started.elapsed());
    ok(&mut s, "1").await;
    let n = 50;
    let started = Instant::now();
    for _ in 0..n {
        s.run_cell("x = 1").await.unwrap();
    }
    eprintln!("trivial cell: {:?} per cell", started.elapsed() / n);

    // Rough idle memory per session (resident set growth of this process; other tests run concurrently).
    let before = rss_kib();
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut session =
            second.start_session(SessionSpec::new(Context::text("")), Arc::new(TestHost::default())).await.unwrap();
        ok(&mut session, "x = 1").await;
        idle.push(session);
    }
    if let (Some(before), Some(after)) = (before, rss_kib()) {
        eprintln!("idle session: ~{} KiB resident each", after.saturating_sub(before) / 4);
    }
    for session in idle {
        session.close().await.unwrap();
    }
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_module_is_a_clear_error() {
    let config = WasmConfig { module_path: "/nonexistent/python.wasm".into(), ..WasmConfig::default() };
    let err = WasmExecutor::new(config).err();
    assert!(matches!(err, Some(Error::Executor(ref m)) if m.contains("fetch-python-wasm.sh")), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_limits_a_cell() {
    ensure_module();
    let config = WasmConfig { fuel_per_cell: Some(200_000_000), ..WasmConfig::default() };
    let executor = WasmExecutor::new(config).unwrap();
    let mut s = executor.start_session(spec("", Duration::from_secs(60)), Arc::new(TestHost::default())).await.unwrap();
    ok(&mut s, "kept = sum(range(1000))").await;
    let outcome = run(&mut s, "while True:\n    pass").await;
    let error = outcome.error.expect("out of fuel");
    assert_eq!(error.kind, "TimeoutError");
    assert!(error.message.contains("fuel"), "{}", error.message);
    assert_eq!(ok(&mut s, "kept").await, "499500\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_is_bounded_by_the_cell_time_limit() {
    let host = Arc::new(TestHost::default());
    let mut s = executor().start_session(spec("", Duration::from_secs(1)), host).await.unwrap();
    // Short sleeps sleep; the guest's clocks move with the host's.
    let short = "import time\nt0 = time.monotonic(); w0 = time.time()\ntime.sleep(0.2)\n\
                 dt, dw = time.monotonic() - t0, time.time() - w0\n0.19 < dt < 0.9, 0.15 < dw < 0.9";
    assert_eq!(ok(&mut s, short).await, "(True, True)\n");
    // One long blocking call (a host call, where epochs cannot reach) still ends at the time limit.
    let started = Instant::now();
    let outcome = run(&mut s, "import time\ntime.sleep(10**6)").await;
    assert_eq!(outcome.error.map(|e| e.kind).as_deref(), Some("TimeoutError"));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // select() on descriptors answers at once: stdout is writable, nothing else is there.
    let select = "import select\nr, w, x = select.select([], [1], [], 5)\nw";
    assert_eq!(ok(&mut s, select).await, "[1]\n");
    assert_eq!(ok(&mut s, "dt > 0").await, "True\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_recursion_through_c_code_is_a_recursion_error() {
    let (mut s, _) = start("").await;
    ok(&mut s, "from functools import cache\n@cache\ndef depth(n):\n    return 0 if n == 0 else depth(n - 1) + 1")
        .await;
    let error = run(&mut s, "depth(5000)").await.error.expect("error");
    assert_eq!(error.kind, "RecursionError");
    assert!(error.message.contains("C stack"), "{}", error.message);
    assert!(!error.message.contains("wasm function"), "{}", error.message);
    // The sandbox was rebuilt with the history replayed.
    assert_eq!(ok(&mut s, "depth(20)").await, "20\n");
}

// ---------------------------------------------------------------------------------------------------------------------
// The trust boundary: the host believes nothing the guest claims (docs/security.md)
// ---------------------------------------------------------------------------------------------------------------------

/// Python that builds a channel frame the way the driver does, for code that tries to forge one.
const FORGE: &str = r#"
import json, os, struct
def frame(header, payload=b""):
    encoded = json.dumps(header).encode()
    return struct.pack("<II", len(encoded), len(payload)) + encoded + payload
FORGED_DONE = frame({"op": "done", "error": None, "dropped": 0, "answer_len": 6, "final_var": None}, b"FORGED")
"#;

async fn start_with(timeout: Duration, max_chars: usize) -> Box<dyn ReplSession> {
    let mut spec = spec("", timeout);
    spec.max_captured_chars = max_chars;
    executor().start_session(spec, Arc::new(TestHost::default())).await.unwrap()
}

fn assert_refused(outcome: &CellOutcome, what: &str) {
    let error = outcome.error.as_ref().unwrap_or_else(|| panic!("{what}: not refused: {outcome:?}"));
    assert!(error.message.contains("the sandbox refused what the guest sent"), "{what}: {error:?}");
    assert!(outcome.answer.is_none() && outcome.final_var.is_none(), "{what}: {outcome:?}");
    assert!(!outcome.stdout.contains("FORGED"), "{what}: {outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_frames_from_user_code_stop_the_sandbox_and_nothing_forged_is_reported() {
    let mut s = start_with(Duration::from_secs(3), 10_000).await;
    ok(&mut s, FORGE).await;
    let started = Instant::now();
    // A forged `done` followed by a spin: before, the host believed the frame and dropped the cell's deadline.
    let outcome = run(&mut s, "os.write(0, FORGED_DONE)\nprint('after')\nwhile True: pass").await;
    assert_refused(&outcome, "forged done + spin");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    ok(&mut s, "x = 1").await;
    // The driver's own helpers are reachable from user code, but calling them does not make a frame trusted.
    let outcome = run(
        &mut s,
        "g = llm_query.__globals__\ng['_write_all'](g['_frame']({'op': 'done', 'error': None, 'dropped': 0, \
         'answer_len': 6, 'final_var': None}, b'FORGED'))",
    )
    .await;
    assert_refused(&outcome, "driver helpers");
    ok(&mut s, "x = 1").await;
    // Reading the channel (to steal the next job) is refused too.
    assert_refused(&run(&mut s, "os.read(0, 8)").await, "read");
    ok(&mut s, "x = 1").await;
    // A frame announcing more than the caps is refused before its bytes arrive.
    assert_refused(&run(&mut s, "os.write(0, struct.pack('<II', 2, 2**31))").await, "huge payload");
    ok(&mut s, "x = 1").await;
    assert_refused(&run(&mut s, "os.write(0, struct.pack('<II', 2**31, 0))").await, "huge header");
    ok(&mut s, "x = 1").await;
    // A raw sub-call frame past the prompt cap (the driver's own check bypassed).
    let raw_sub =
        "os.write(0, frame({'op': 'sub', 'kind': 'llm', 'model': None, 'lens': [17 << 20]}, b'x' * (17 << 20)))";
    assert_refused(&run(&mut s, raw_sub).await, "raw oversized sub-call");
    // The session survives every one of these: the sandbox was rebuilt and earlier cells replayed.
    assert_eq!(ok(&mut s, "print(len(FORGED_DONE) > 8)").await, "True\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_caps_hold_on_the_host_whatever_the_guest_does() {
    let mut s = start_with(Duration::from_secs(20), 1_000).await;
    // Straight to fd 1, past the guest's own capture.
    let outcome = run(&mut s, "import os\nos.write(1, b'x' * 30_000_000)").await;
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert_eq!(outcome.stdout.len(), 1_000);
    assert!(outcome.dropped_chars >= 29_999_000, "{}", outcome.dropped_chars);
    // The guest-side capture patched to forward everything: the host still keeps 1,000 characters.
    let patch = "import sys\nout = type(sys.stdout).write.__globals__['_CellOutput']\n\
                 out.write = lambda self, fd, text: os.write(fd, text.encode()) and len(text)\n\
                 print('y' * 50_000)";
    let outcome = run(&mut s, patch).await;
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert!(outcome.stdout.chars().count() <= 1_000, "{}", outcome.stdout.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_clear_python_errors() {
    let host = Arc::new(TestHost::default());
    let mut s = executor().start_session(spec("", Duration::from_secs(30)), host.clone()).await.unwrap();
    let outcome = run(&mut s, "llm_query('x' * (20 << 20))").await;
    let error = outcome.error.unwrap();
    assert_eq!(error.kind, "ValueError");
    assert!(error.message.contains("per prompt"), "{error:?}");
    let error = run(&mut s, "llm_query_batched(['q'] * 20_000)").await.error.unwrap();
    assert!(error.message.contains("per call"), "{error:?}");
    assert!(host.batches().is_empty());
    let outcome = run(&mut s, "big = 'x' * (5 << 20)\nFINAL_VAR('big')").await;
    assert!(outcome.final_var.is_none(), "{:?}", outcome.final_var.map(|v| v.name));
    assert!(outcome.error.unwrap().message.contains("variable 'big' is"));
    let outcome = run(&mut s, "answer['content'] = 'y' * (5 << 20)\nanswer['ready'] = True").await;
    assert!(outcome.answer.is_none());
    assert!(outcome.error.unwrap().message.contains("the answer is"));
    ok(&mut s, "answer['ready'] = False").await;
    // Sub-calls within the caps still work.
    assert_eq!(ok(&mut s, "print(llm_query('fine'))").await, "echo:fine\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_and_test_modules_are_refused() {
    let (mut s, _) = start("").await;
    let error = run(&mut s, "import sys\nsys.settrace(lambda *a: None)").await.error.unwrap();
    assert!(error.message.contains("not available in the sandbox"), "{error:?}");
    for module in ["_testcapi", "_testinternalcapi"] {
        let error = run(&mut s, &format!("import {module}")).await.error.unwrap();
        assert!(error.kind == "ImportError" || error.kind == "ModuleNotFoundError", "{module}: {error:?}");
    }
    // Frames stay available to user code: tracebacks work as in CPython.
    let out = ok(&mut s, "import traceback\ntry:\n    1/0\nexcept ZeroDivisionError:\n    print(traceback.format_exc().splitlines()[-1])").await;
    assert_eq!(out, "ZeroDivisionError: division by zero\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_after_a_trap_is_bounded() {
    let mut s = start_with(Duration::from_secs(1), 10_000).await;
    ok(&mut s, "import time\ntime.sleep(0.6)\na = 1").await;
    ok(&mut s, "time.sleep(0.6)\nb = 2").await;
    let outcome = run(&mut s, "while True: pass").await;
    let message = outcome.error.unwrap().message;
    assert!(message.contains("replayed only up to cell 1"), "{message}");
    assert_eq!(ok(&mut s, "print(a)").await, "1\n");
    assert_eq!(run(&mut s, "b").await.error.unwrap().kind, "NameError");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_session_stops_at_once() {
    let mut s = start_with(Duration::from_secs(60), 10_000).await;
    let abort = s.abort_handle().unwrap();
    let started = Instant::now();
    let spinning = tokio::spawn(async move {
        let result = s.run_cell("while True: pass").await;
        (result, s)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    abort.abort();
    let (result, s) = tokio::time::timeout(Duration::from_secs(5), spinning).await.unwrap().unwrap();
    assert!(matches!(result, Err(Error::SessionDead(_))), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    tokio::time::timeout(Duration::from_secs(5), s.close()).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_sessions_do_not_starve_a_bystander() {
    // One turn of CPU for everyone: without time slices the bystander would wait for the spinners' 8 s limits.
    ensure_module();
    let config = WasmConfig { cpu_slots: 1, ..WasmConfig::default() };
    let executor = WasmExecutor::new(config).unwrap();
    let mut spinners = Vec::new();
    for _ in 0..3 {
        let mut session =
            executor.start_session(spec("", Duration::from_secs(8)), Arc::new(TestHost::default())).await.unwrap();
        spinners.push(tokio::spawn(async move { session.run_cell("while True: pass").await }));
    }
    let mut bystander =
        executor.start_session(spec("", Duration::from_secs(30)), Arc::new(TestHost::default())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(ok(&mut bystander, "print(1 + 1)").await, "2\n");
        slowest = slowest.max(started.elapsed());
    }
    eprintln!("bystander's slowest trivial cell next to 3 spinners on 1 CPU turn: {slowest:?}");
    assert!(slowest < Duration::from_secs(2), "{slowest:?}");
    for spinner in spinners {
        let outcome = spinner.await.unwrap().unwrap();
        assert_eq!(outcome.error.unwrap().kind, "TimeoutError");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_start_from_the_snapshot_with_fresh_memory_each() {
    assert!(executor().snapshot_source().is_some(), "the executor runs without its pre-initialised snapshot");
    assert!(executor().snapshot_file().is_some_and(std::path::Path::is_file));
    // The first session changes interpreter-wide state that every session starts with (a stdlib module, the
    // driver's own module, the heap around the snapshot's objects) ...
    let (mut a, _) = start("").await;
    ok(
        &mut a,
        "import sys, json\njson.MARK = 'a'\nsys.modules['__main__'].MARK = 'a'\nsys.setrecursionlimit(77)\n\
         big = bytearray(b'a' * 10_000_000)",
    )
    .await;
    // ... and a session started afterwards (and one started while the first still runs) sees none of it.
    let (mut b, _) = start("").await;
    let seen = "import sys, json\nprint(getattr(json, 'MARK', None), getattr(sys.modules['__main__'], 'MARK', None), \
                sys.getrecursionlimit())";
    assert_eq!(ok(&mut b, seen).await, "None None 1000\n");
    assert_eq!(ok(&mut a, seen).await, "a a 77\n");
    a.close().await.unwrap();
    let (mut c, _) = start("").await;
    assert_eq!(ok(&mut c, seen).await, "None None 1000\n");
    // Randomness is drawn per session, not frozen into the snapshot.
    let draw = "import os, random\nprint(os.urandom(8).hex(), random.random())";
    let (from_b, from_c) = (ok(&mut b, draw).await, ok(&mut c, draw).await);
    assert_ne!(from_b, from_c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_snapshot_sessions_boot_cpython() {
    ensure_module();
    let booting = WasmExecutor::new(WasmConfig { snapshot: false, ..WasmConfig::default() }).unwrap();
    assert_eq!(booting.snapshot_source(), None);
    let started = Instant::now();
    let mut s =
        booting.start_session(spec("fresh", Duration::from_secs(30)), Arc::new(TestHost::default())).await.unwrap();
    eprintln!("session start without the snapshot: {:?}", started.elapsed());
    assert_eq!(ok(&mut s, "context.upper()").await, "'FRESH'\n");
    assert_eq!(ok(&mut s, "llm_query('x')").await, "'echo:x'\n");
}
