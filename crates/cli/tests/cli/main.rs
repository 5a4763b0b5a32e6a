//! The `rlm` binary as a user runs it: a real process talking to a scripted model server on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bench;
mod chat;
mod deploy;
mod providers;
mod sandbox;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use rlm_test_support::{Reply, ScriptedServer, ScriptedServerBuilder};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

fn repl(code: &str) -> String {
    format!("```repl\n{code}\n```")
}

fn rlm(server: Option<&ScriptedServer>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rlm"));
    for name in [
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "LLM_API_KEY",
        "LLM_BASE_URL",
        "RLM_MODEL",
        "LLM_MODEL",
        "RLM_TRACE_DIR",
        "RLM_EXECUTOR",
        "RLM_SANDBOX_URL",
        "RLM_SANDBOX_TOKEN",
        "WASM_SERVICE_URL",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "GEMINI_API_KEY",
        "GEMINI_BASE_URL",
        "RLM_CACHE_DIR",
        "RLM_PRICES",
    ] {
        command.env_remove(name);
    }
    // Never the machine's downloaded models: a test that means to run one says so.
    command.env("RLM_MODEL_DIR", "/nonexistent/rlm-models");
    if let Some(server) = server {
        command.env("OPENAI_BASE_URL", server.base_url());
    }
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    command
}

async fn start(server: ScriptedServerBuilder) -> ScriptedServer {
    server.start().await.expect("scripted server starts")
}

fn json(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("stdout is not one JSON object ({e}): {stdout}\nstderr: {}", String::from_utf8_lossy(&output.stderr))
    })
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_prints_one_json_object_and_writes_the_trace() {
    let dir = tempfile::tempdir().unwrap();
    let context = write(dir.path(), "ctx.txt", "alpha\nbeta\ngamma\n");
    let trace = dir.path().join("t.jsonl");
    let server = start(
        ScriptedServer::builder()
            .script(
                "root",
                [Reply::text(format!("{}\nFINAL_VAR(n)", repl("n = len(context.splitlines())\nllm_query('hi')")))],
            )
            .rule(|r| (r.model == "mini").then(|| Reply::text("hello"))),
    )
    .await;
    let output = rlm(Some(&server))
        .args(["run", "--json", "--model", "root", "--sub-model", "mini", "--query", "How many lines?"])
        .args(["--temperature", "0"])
        .arg("--context")
        .arg(&context)
        .arg("--trace")
        .arg(&trace)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let result = json(&output);
    assert_eq!(result["answer"], "3");
    assert_eq!(result["finished_by"], "final_var");
    assert_eq!(result["iterations"], 1);
    assert_eq!(result["sub_calls"], 1);
    assert_eq!(result["usage"]["by_model"]["mini"]["calls"], 1);
    assert_eq!(result["trace"], trace.to_str().unwrap());
    let lines = std::fs::read_to_string(&trace).unwrap();
    let first: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(first["type"], "metadata");
    assert_eq!(first["query"], "How many lines?");
    // --temperature reaches the root call and the sub-call alike.
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.body()["temperature"] == 0.0), "{:?}", requests[0].body());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_output_is_the_answer_and_stdin_and_directories_work_as_contexts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("docs/sub")).unwrap();
    write(&dir.path().join("docs"), "a.txt", "one");
    write(&dir.path().join("docs/sub"), "b.txt", "two");
    let server = start(ScriptedServer::builder().script(
        "root",
        [
            Reply::text(format!("{}\nFINAL_VAR(keys)", repl("keys = ','.join(sorted(context))"))),
            Reply::text(format!("{}\nFINAL_VAR(t)", repl("t = context.upper()"))),
        ],
    ))
    .await;
    let output = rlm(Some(&server))
        .args(["run", "--no-trace", "--model", "root", "--query", "files?", "--context"])
        .arg(dir.path().join("docs"))
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "a.txt,sub/b.txt\n");
    assert!(String::from_utf8_lossy(&output.stderr).contains("finished by final_var"));

    let mut child = rlm(Some(&server))
        .args(["run", "--no-trace", "--model", "root", "--query", "shout", "--context", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"quiet words").await.unwrap();
    let output = child.wait_with_output().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "QUIET WORDS\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_reports_output_errors_and_duration_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let context = write(dir.path(), "data.json", r#"{"items": [1, 2, 3]}"#);
    let ok = write(dir.path(), "ok.py", "import sys\nprint(sum(context['items']))\nprint('warn', file=sys.stderr)\n");
    let output = rlm(None).arg("exec").arg(&ok).arg("--context").arg(&context).output().await.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let result = json(&output);
    assert_eq!(result["stdout"], "6\n");
    assert_eq!(result["stderr"], "warn\n");
    assert_eq!(result["error"], Value::Null);
    assert_eq!(result["answer"], Value::Null);
    assert!(result["duration_ms"].as_f64().unwrap() >= 0.0);

    let answering = write(
        dir.path(),
        "answer.py",
        "total = 6
FINAL_VAR('total')
answer['content'] = 'six'
answer['ready'] = True
",
    );
    let output = rlm(None).arg("exec").arg(&answering).output().await.unwrap();
    let result = json(&output);
    assert_eq!(result["answer"], "six");
    assert_eq!(result["final_var"], serde_json::json!({"name": "total", "value": "6"}));
    assert_eq!(result["dropped_chars"], 0);

    let bad = write(dir.path(), "bad.py", "x = 1\nprint('before')\nraise ValueError('nope')\n");
    let output = rlm(None).arg("exec").arg(&bad).output().await.unwrap();
    assert_eq!(output.status.code(), Some(1));
    let result = json(&output);
    assert_eq!(result["stdout"], "before\n");
    let error = result["error"].as_str().unwrap();
    assert!(error.contains("ValueError: nope") && error.contains("line 3"), "{error}");
    assert_eq!(error.matches("ValueError: nope").count(), 1, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_times_out_a_runaway_snippet_and_sub_calls_reach_the_model() {
    let output = rlm(None).args(["exec", "--timeout", "1", "-"]).stdin(Stdio::piped()).spawn().unwrap();
    let mut child = output;
    child.stdin.take().unwrap().write_all(b"while True:\n    pass\n").await.unwrap();
    let started = Instant::now();
    let output = child.wait_with_output().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(json(&output)["error"].as_str().unwrap().contains("TimeoutError"));

    let server =
        start(ScriptedServer::builder().rule(|r| Some(Reply::text(format!("model {} says hi", r.model))))).await;
    let dir = tempfile::tempdir().unwrap();
    let code = write(dir.path(), "sub.py", "print(llm_query('hello'))\nprint(llm_query_batched(['a', 'b']))\n");
    let output = rlm(Some(&server)).args(["exec", "--model", "m1"]).arg(&code).output().await.unwrap();
    assert_eq!(json(&output)["stdout"], "model m1 says hi\n['model m1 says hi', 'model m1 says hi']\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_list_shows_known_models_and_cached_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "mine.gguf", "not really a model");
    let output = rlm(None).args(["model", "list"]).env("RLM_MODEL_DIR", dir.path()).output().await.unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("local:qwen2.5-coder-1.5b") && stdout.contains("not cached"), "{stdout}");
    assert!(stdout.contains("mine.gguf"), "{stdout}");

    let output = rlm(None).args(["model", "pull", "gpt-9"]).output().await.unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("known models"));
}

#[cfg(feature = "local-llm")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_gguf_file_answers_a_direct_run() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    rlm_models_llama::tiny::write_tiny_model(&model).unwrap();
    let context = write(dir.path(), "ctx.txt", "alpha beta");
    let output = rlm(None)
        .args(["run", "--json", "--no-trace", "--route", "direct", "--max-output-tokens", "8", "--query", "q"])
        .arg("--model")
        .arg(format!("local:{}", model.display()))
        .env("RLM_LOCAL_THREADS", "1")
        .arg("--context")
        .arg(&context)
        .output()
        .await
        .unwrap();
    // The tiny model's answer is noise (possibly empty, then refused); what matters is that it loaded and replied.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("rlm: no API key"), "{stderr}");
    if output.status.code() == Some(0) {
        let result = json(&output);
        assert_eq!(result["path"], "direct");
        assert_eq!(result["usage"]["total"]["calls"], 1);
    } else {
        assert!(!stderr.contains("cannot load"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_model_and_bad_flags_are_clear_errors() {
    let output = rlm(None).args(["run", "--context", "-", "--query", "q"]).output().await.unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    if cfg!(feature = "local-llm") {
        // No endpoint: the default local model, announced in one line, and how to fetch it since it is not cached.
        let notice: Vec<_> = stderr.lines().filter(|line| line.starts_with("rlm: ")).collect();
        assert_eq!(notice.len(), 1, "{stderr}");
        assert!(notice[0].contains("local:qwen2.5-coder-1.5b") && notice[0].contains("OPENAI_API_KEY"), "{stderr}");
        assert!(stderr.contains("rlm model pull qwen2.5-coder-1.5b"), "{stderr}");
    } else {
        assert!(stderr.contains("no model set"), "{stderr}");
    }

    let output = rlm(None)
        .args(["run", "--context", "-", "--query", "q", "--model", "m", "--temperature", "3"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("must be from 0 to 2, got 3"));

    let output =
        rlm(None).args(["run", "--context", "-", "--query", "q", "--model", "local:gpt-9"]).output().await.unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    if cfg!(feature = "local-llm") {
        assert!(stderr.contains("known models: qwen2.5-coder-1.5b, qwen2.5-coder-0.5b"), "{stderr}");
    }

    // OpenAI without a key stops before any request.
    let output = rlm(None).args(["run", "--context", "-", "--query", "q", "--model", "m"]).output().await.unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("OPENAI_API_KEY"));

    let output = rlm(None)
        .args([
            "run",
            "--context",
            "/no/such/file",
            "--query",
            "q",
            "--model",
            "m",
            "--base-url",
            "http://127.0.0.1:9/v1",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/no/such/file"));

    let output = rlm(None)
        .args(["run", "--context", "-", "--query", "q", "--model", "m", "--cell-timeout", "-1"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_cleanly_and_still_writes_the_trace() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("cancelled.jsonl");
    let server = start(
        ScriptedServer::builder().script("root", [Reply::text("FINAL(late)").with_delay(Duration::from_secs(30))]),
    )
    .await;
    let child = rlm(Some(&server))
        .args(["run", "--json", "--model", "root", "--query", "q", "--context", "-", "--trace"])
        .arg(&trace)
        .spawn()
        .unwrap();
    // Wait until the run is waiting on the model, then interrupt it like a terminal would.
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.requests().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(status.success());
    let started = Instant::now();
    let output = child.wait_with_output().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(output.status.code(), Some(130));
    assert_eq!(json(&output)["finished_by"], "cancelled");
    let last: Value = serde_json::from_str(std::fs::read_to_string(&trace).unwrap().lines().last().unwrap()).unwrap();
    assert_eq!((last["type"].as_str(), last["finished_by"].as_str()), (Some("final"), Some("cancelled")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_without_a_model_gives_sub_calls_an_error_string_and_makes_no_request() {
    let output = rlm(None).args(["exec", "-"]).stdin(Stdio::piped()).spawn().unwrap();
    let mut child = output;
    child.stdin.take().unwrap().write_all(b"print(llm_query('hi')[:40])\n").await.unwrap();
    let output = child.wait_with_output().await.unwrap();
    assert_eq!(json(&output)["stdout"], "Error: no model is configured for sub-ca\n");
}
