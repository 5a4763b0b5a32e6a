//! `rlm chat` as a script uses it: queries on standard input, answers on standard output, a session file that
//! survives the process being killed.

use std::process::Stdio;
use std::time::Duration;

use rlm_test_support::{Reply, ScriptedServer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::{repl, rlm, start, write};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_killed_mid_conversation_resumes_from_its_file_without_asking_the_model_again() {
    let dir = tempfile::tempdir().unwrap();
    let context = write(dir.path(), "ctx.txt", "a b c");
    let more = write(dir.path(), "more.txt", "d e");
    let session_file = dir.path().join("chat.json");
    let server = start(
        ScriptedServer::builder()
            .script(
                "root",
                [
                    Reply::text(format!(
                        "{}\nFINAL_VAR(greeting)",
                        repl("greeting = llm_query('say hi')\nwords = context.split()")
                    )),
                    // Asked after the restart: `words` and `context_1` come from before it.
                    Reply::text(format!("{}\nFINAL_VAR(n)", repl("n = len(words) + len(context_1.split())"))),
                ],
            )
            .script("sub", [Reply::text("hello\nworld")]),
    )
    .await;

    let mut first = rlm(Some(&server))
        .args(["chat", "--model", "root", "--sub-model", "sub", "--no-trace", "--quiet", "--context"])
        .arg(&context)
        .arg("--session")
        .arg(&session_file)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = first.stdin.take().unwrap();
    let mut answers = BufReader::new(first.stdout.take().unwrap()).lines();
    stdin.write_all(b"Greet me.\n").await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(60), answers.next_line()).await.unwrap().unwrap();
    // A multi-line answer comes out as one line.
    assert_eq!(answer.as_deref(), Some("hello world"));
    stdin.write_all(b"/context ").await.unwrap();
    stdin.write_all(more.to_str().unwrap().as_bytes()).await.unwrap();
    stdin.write_all(b"\n").await.unwrap();
    // The file is written after the context is loaded; wait for it, then kill the process without warning.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let saved = std::fs::read_to_string(&session_file).unwrap_or_default();
        if saved.contains("context_1") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the session file never got the context: {saved}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    let asked_before = server.requests().len();
    assert_eq!(asked_before, 2, "one root call and one sub-call");

    let mut second = rlm(Some(&server))
        .args(["chat", "--model", "root", "--sub-model", "sub", "--no-trace", "--quiet", "--session"])
        .arg(&session_file)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = second.stdin.take().unwrap();
    stdin.write_all(b"How many words are there in all?\n").await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(60), second.wait_with_output()).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "5\n", "{stderr}");
    // Replaying the first query's cells asked nobody: only the new query reached the server.
    let requests = server.requests();
    assert_eq!(requests.len(), asked_before + 1);
    let asked = requests.last().unwrap().last_user_message().unwrap().to_owned();
    assert!(asked.contains("query 2 of a session") && asked.contains("Greet me."), "{asked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_session_file_is_a_clear_error_and_is_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let context = write(dir.path(), "ctx.txt", "a b c");
    let session_file = write(dir.path(), "chat.json", "{\"version\": 1, \"journal\": [tru");
    let server = start(ScriptedServer::builder()).await;
    let mut child = rlm(Some(&server))
        .args(["chat", "--model", "root", "--no-trace", "--context"])
        .arg(&context)
        .arg("--session")
        .arg(&session_file)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"anything\n").await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("is not a session file rlm can read") && stderr.contains("left unchanged"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&session_file).unwrap(), "{\"version\": 1, \"journal\": [tru");
    assert!(server.requests().is_empty());
}

/// Two queries in one `rlm chat` on `executor_args`; the second uses a variable the first built.
async fn follow_up_on(executor_args: &[&str], env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let context = write(dir.path(), "ctx.txt", "a b c a");
    let server = start(ScriptedServer::builder().script(
        "root",
        [
            Reply::text(format!("{}\nFINAL_VAR(n)", repl("words = context.split()\nn = len(words)"))),
            Reply::text(format!("{}\nFINAL_VAR(k)", repl("k = len(set(words))"))),
        ],
    ))
    .await;
    let mut command = rlm(Some(&server));
    command.args(["chat", "--model", "root", "--no-trace", "--quiet", "--context"]).arg(&context).args(executor_args);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.stdin(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"How many words?\nHow many distinct ones?\n").await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output()).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "4\n3\n", "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_in_the_wasm_sandbox_keeps_its_variables() {
    follow_up_on(&["--executor", "wasm"], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_through_the_sandbox_service_keeps_one_sandbox_session() {
    let sandbox = super::sandbox::SandboxProcess::start(Some("chat-token")).await;
    follow_up_on(
        &["--executor", "remote", "--sandbox-url", sandbox.url.as_str()],
        &[("RLM_SANDBOX_TOKEN", "chat-token")],
    )
    .await;
}

/// Reads `output` into `seen` until `expected` appears after byte `from`; returns where its match ends.
async fn read_until(
    output: &mut (impl tokio::io::AsyncRead + Unpin),
    seen: &mut String,
    from: usize,
    expected: &str,
) -> usize {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(at) = seen.get(from..).and_then(|rest| rest.find(expected)) {
            return from + at + expected.len();
        }
        let read = tokio::time::timeout_at(deadline, output.read(&mut buffer))
            .await
            .unwrap_or_else(|_| panic!("no {expected:?} in: {seen}"))
            .unwrap();
        assert!(read > 0, "the output ended before {expected:?}: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_chat_prompts_edits_lines_and_shows_progress() {
    let dir = tempfile::tempdir().unwrap();
    let context = write(dir.path(), "ctx.txt", "a b c a");
    let server = start(ScriptedServer::builder().script(
        "root",
        [
            Reply::text(format!("{}\nFINAL_VAR(n)", repl("words = context.split()\nn = len(words)"))),
            Reply::text(format!("{}\nFINAL_VAR(k)", repl("k = len(set(words))"))),
        ],
    ))
    .await;
    // `script` gives the chat a pseudo-terminal, as a user's shell would.
    let chat = format!("{} chat --model root --no-trace --context {}", env!("CARGO_BIN_EXE_rlm"), context.display());
    let mut child = tokio::process::Command::new("script")
        .args(["-qec", &chat, "/dev/null"])
        .env("OPENAI_BASE_URL", server.base_url())
        .env("RLM_MODEL_DIR", "/nonexistent/rlm-models")
        .env_remove("OPENAI_API_KEY")
        .env_remove("RLM_TRACE_DIR")
        .env_remove("RLM_EXECUTOR")
        .env_remove("RLM_MODEL")
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    let at = read_until(&mut stdout, &mut seen, 0, "rlm> ").await;
    // A typo, erased with backspace before Enter: the line editor sends the corrected query.
    stdin.write_all(b"How many wordz\x7fs?\r").await.unwrap();
    let at = read_until(&mut stdout, &mut seen, at, "finished by final_var").await;
    let first_answer = read_until(&mut stdout, &mut seen, at, "(1 iterations").await;
    assert!(seen[at..first_answer].contains("4\r\n"), "{seen}");
    let at = read_until(&mut stdout, &mut seen, first_answer, "rlm> ").await;
    stdin.write_all(b"And distinct?\r").await.unwrap();
    let second_answer = read_until(&mut stdout, &mut seen, at, "(1 iterations").await;
    assert!(seen[at..second_answer].contains("3\r\n"), "{seen}");
    read_until(&mut stdout, &mut seen, second_answer, "rlm> ").await;
    stdin.write_all(b"/quit\r").await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.unwrap().unwrap();
    assert!(status.success());
    let asked = server.requests()[0].last_user_message().unwrap().to_owned();
    assert!(asked.contains("How many words?") && !asked.contains("wordz"), "{asked}");
    assert!(seen.contains("iteration 1"), "live progress: {seen}");
}
