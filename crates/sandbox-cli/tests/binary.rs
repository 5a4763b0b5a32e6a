//! The `rlm-sandbox` binary as the sandbox image runs it: a real process on a free loopback port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

fn rlm_sandbox() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rlm-sandbox"));
    command.env_remove("RLM_SANDBOX_TOKEN").env_remove("RLM_SANDBOX_TOKENS");
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    command
}

/// `rlm-sandbox serve` on a free port, with `env` added; its child process and base URL.
async fn serve(env: &[(&str, &str)]) -> (Child, String) {
    let mut command = rlm_sandbox();
    command.args(["serve", "--port", "0", "--idle-ttl", "60"]).envs(env.iter().copied());
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(300), lines.next_line()).await.unwrap().unwrap().unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_owned();
    (child, url)
}

/// One HTTP/1.1 request with a JSON body; the status code and the body.
async fn post_json(url: &str, path: &str, body: &str) -> (u16, String) {
    let address = url.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

#[test]
fn the_binary_does_not_link_libpython() {
    // The main binary names libpython among its needed libraries (the local executor embeds CPython); this one
    // must not, so that its image can leave libpython out.
    let binary = std::fs::read(env!("CARGO_BIN_EXE_rlm-sandbox")).unwrap();
    assert!(!binary.windows(b"libpython".len()).any(|w| w == b"libpython"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_cells_answers_health_checks_and_warns_about_a_model_key() {
    let (mut child, url) = serve(&[("OPENAI_API_KEY", "sk-not-for-the-sandbox")]).await;

    let health = rlm_sandbox().args(["health", "--timeout", "4", &format!("{url}/health")]).output().await.unwrap();
    assert!(health.status.success(), "{}", String::from_utf8_lossy(&health.stderr));
    assert!(String::from_utf8_lossy(&health.stdout).contains("200"));
    let missing = rlm_sandbox().args(["health", "--timeout", "4", &format!("{url}/nowhere")]).output().await.unwrap();
    assert_eq!(missing.status.code(), Some(1));

    let (status, body) = post_json(&url, "/execute", r#"{"code": "import os\nprint(6 * 7, len(os.environ))"}"#).await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["success"], true, "{body}");
    assert_eq!(answer["stdout"], "42 0\n", "the guest sees no environment: {body}");

    child.start_kill().unwrap();
    let output = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("OPENAI_API_KEY is set"), "{stderr}");
}

#[tokio::test]
async fn bad_arguments_are_refused_with_a_message() {
    let output = rlm_sandbox().args(["serve", "--max-sessions", "0", "--port", "0"]).output().await.unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--max-sessions"));
}

/// The exec-form (JSON) command lines of the sandbox image: ENTRYPOINT, CMD and the HEALTHCHECK's CMD.
fn image_commands() -> (Vec<String>, Vec<String>, Vec<String>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/docker/sandbox.Dockerfile");
    let text = std::fs::read_to_string(path).unwrap();
    let exec_form = |rest: &str| -> Vec<String> { serde_json::from_str(rest.trim()).unwrap() };
    let (mut entrypoint, mut cmd, mut healthcheck) = (Vec::new(), Vec::new(), Vec::new());
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("ENTRYPOINT ") {
            entrypoint = exec_form(rest);
        } else if let Some(rest) = line.strip_prefix("CMD ") {
            cmd = exec_form(rest);
        } else if let Some(rest) = line.trim_start().strip_prefix("CMD ").filter(|_| line.starts_with(' ')) {
            // The continuation line of HEALTHCHECK.
            healthcheck = exec_form(rest);
        }
    }
    (entrypoint, cmd, healthcheck)
}

#[tokio::test]
async fn the_image_command_lines_parse_with_this_binary() {
    let (entrypoint, cmd, healthcheck) = image_commands();
    assert_eq!(entrypoint, ["rlm-sandbox"]);
    assert_eq!(healthcheck.first().map(String::as_str), Some("rlm-sandbox"));
    for args in [&cmd[..], &healthcheck[1..], &["prepare".to_owned()][..]] {
        assert!(!args.is_empty());
        let output = rlm_sandbox().args(args).arg("--help").output().await.unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
}
