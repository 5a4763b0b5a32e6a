//! `--executor wasm`, `--executor remote` and `rlm sandbox serve` as separate processes, including losing the
//! sandbox in the middle of a run.

use std::process::Stdio;
use std::time::{Duration, Instant};

use rlm_test_support::{Reply, ScriptedServer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Child;

use super::{json, repl, rlm, start, write};

/// A running `rlm sandbox serve` on a free port.
pub(super) struct SandboxProcess {
    child: Child,
    pub(super) url: String,
}

impl SandboxProcess {
    pub(super) async fn start(token: Option<&str>) -> Self {
        let mut command = rlm(None);
        command.args(["sandbox", "serve", "--port", "0", "--idle-ttl", "60"]);
        if let Some(token) = token {
            command.env("RLM_SANDBOX_TOKEN", token);
        }
        let mut child = command.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(300), lines.next_line()).await.unwrap().unwrap().unwrap();
        let url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_owned();
        Self { child, url }
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_in_the_wasm_sandbox_cannot_reach_host_files() {
    let mut child = rlm(None).args(["exec", "--executor", "wasm", "-"]).stdin(Stdio::piped()).spawn().unwrap();
    let code = b"import sys\nprint(sys.platform)\nprint(open('/etc/passwd').read())\n";
    child.stdin.take().unwrap().write_all(code).await.unwrap();
    let output = child.wait_with_output().await.unwrap();
    let result = json(&output);
    assert_eq!(result["stdout"], "wasi\n");
    let error = result["error"].as_str().unwrap();
    assert!(error.contains("FileNotFoundError") || error.contains("PermissionError"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_through_the_sandbox_service_keeps_the_key_on_this_side() {
    let sandbox = SandboxProcess::start(Some("sandbox-token")).await;
    let server = start(
        ScriptedServer::builder()
            .script(
                "root",
                [Reply::text(format!(
                    "{}\nFINAL_VAR(found)",
                    repl("import os\nenv = dict(os.environ)\nfound = llm_query('what is ' + context) + ' / env=' + str(env)")
                ))],
            )
            .rule(|r| (r.model == "root").then(|| Reply::text("forty-two"))),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let context = write(dir.path(), "ctx.txt", "6 x 7");
    let output = rlm(Some(&server))
        .env("OPENAI_API_KEY", "sk-inference-side-only")
        .env("RLM_SANDBOX_TOKEN", "sandbox-token")
        .args([
            "run",
            "--json",
            "--no-trace",
            "--model",
            "root",
            "--query",
            "q",
            "--executor",
            "remote",
            "--sandbox-url",
        ])
        .arg(&sandbox.url)
        .arg("--context")
        .arg(&context)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // The sub-call came back to this side, which sent it with the key; the sandbox had an empty environment.
    assert_eq!(json(&output)["answer"], "forty-two / env={}");
    assert!(server.requests().iter().all(|r| r.authorization.as_deref() == Some("Bearer sk-inference-side-only")));
    let environ = std::fs::read(format!("/proc/{}/environ", sandbox.pid())).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(!environ.contains("sk-inference-side-only"));
    assert!(!environ.contains("OPENAI_API_KEY") && !environ.contains("LLM_API_KEY"), "{environ}");

    // Without the sandbox's token the run cannot start a session.
    let output = rlm(Some(&server))
        .args(["run", "--no-trace", "--model", "root", "--query", "q", "--executor", "remote", "--context"])
        .arg(&context)
        .arg("--sandbox-url")
        .arg(&sandbox.url)
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("401"), "{}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_sandbox_mid_run_ends_the_run_with_a_clear_error() {
    let mut sandbox = SandboxProcess::start(None).await;
    let server = start(ScriptedServer::builder().script(
        "root",
        [
            Reply::text(repl("x = 1")),
            // While the model "thinks" about turn 2, the sandbox dies.
            Reply::text(repl("print(x)")).with_delay(Duration::from_secs(2)),
            Reply::text("FINAL(unreachable)"),
        ],
    ))
    .await;
    let run = rlm(Some(&server))
        .args([
            "run",
            "--json",
            "--no-trace",
            "--model",
            "root",
            "--query",
            "q",
            "--context",
            "-",
            "--executor",
            "remote",
        ])
        .arg("--sandbox-url")
        .arg(&sandbox.url)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.requests().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sandbox.child.kill().await.unwrap();
    let started = Instant::now();
    let output = run.wait_with_output().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    assert_eq!(output.status.code(), Some(1));
    let result = json(&output);
    assert_eq!(result["finished_by"], "error");
    let error = result["error"].as_str().unwrap();
    assert!(error.contains("unreachable"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_the_wasm_executor_and_exec_through_the_remote_one() {
    let server = start(ScriptedServer::builder().script(
        "root",
        [Reply::text(format!(
            "{}\nFINAL_VAR(where)",
            repl("import sys\nwhere = sys.platform + ':' + str(len(context))")
        ))],
    ))
    .await;
    let output = rlm(Some(&server))
        .args(["run", "--no-trace", "--model", "root", "--query", "q", "--context", "-", "--executor", "wasm"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = output;
    child.stdin.take().unwrap().write_all(b"four").await.unwrap();
    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "wasi:4\n");

    let sandbox = SandboxProcess::start(None).await;
    let mut child = rlm(None)
        .args(["exec", "--executor", "remote", "--sandbox-url", &sandbox.url, "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"import sys\nprint(sys.platform, llm_query('x')[:6])\n").await.unwrap();
    let output = child.wait_with_output().await.unwrap();
    assert_eq!(json(&output)["stdout"], "wasi Error:\n");
}
