//! A scripted OpenAI-compatible server as a standalone process, for trying the CLI by hand and for benchmarks that
//! drive other programs (e.g. another RLM implementation) with the same replies.
//!
//! `cargo run -p rlm-test-support --example scripted_server -- SCRIPT.json [LATENCY_MS]`
//!
//! SCRIPT.json maps model names to lists of replies, consumed in order: `{"root": ["```repl\nprint(1)\n```", ...]}`.
//! Requests for models without (remaining) replies are answered with `echo: <last user message>` after the latency.
//! Prints the base URL on the first line of stdout and serves until stdin closes. The same address speaks Anthropic's
//! Messages API (`ANTHROPIC_BASE_URL` is the address without `/v1`) and Gemini's `generateContent`
//! (`GEMINI_BASE_URL` likewise); scripts are keyed by the model name without its `anthropic:`/`gemini:` prefix.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use rlm_test_support::{Reply, ScriptedServer};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let script_path = args.next().expect("usage: scripted_server SCRIPT.json [LATENCY_MS]");
    let latency = Duration::from_millis(args.next().map_or(0, |ms| ms.parse().expect("latency in ms")));
    let script: BTreeMap<String, Vec<String>> =
        serde_json::from_str(&std::fs::read_to_string(script_path).expect("script readable")).expect("script JSON");
    let mut builder = ScriptedServer::builder().latency(latency);
    for (model, replies) in script {
        builder = builder.script(&model, replies.into_iter().map(Reply::text));
    }
    let server = builder
        .rule(|request| Some(Reply::text(format!("echo: {}", request.last_user_message().unwrap_or_default()))))
        .start()
        .await
        .expect("server starts");
    println!("{}", server.base_url());
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await
    .expect("stdin reader");
    server.shutdown().await;
}
