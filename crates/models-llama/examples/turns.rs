//! The request pattern of an RLM run, replayed against the local model or an OpenAI-compatible server: a root
//! conversation that grows by one turn at a time, with a batch of sub-calls between turns.
//! `cargo run -p rlm-models-llama --example turns -- local MODEL.gguf` or `... -- server BASE_URL MODEL`.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used, reason = "a measuring tool")]

use std::sync::Arc;
use std::time::Instant;

use rlm_models::{OpenAiClient, OpenAiConfig};
use rlm_models_llama::{LlamaClient, LlamaConfig};
use rlm_protocol::{ChatMessage, ModelClient, ModelRequest};

const TURNS: usize = 4;
const SUB_CALLS: usize = 3;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (client, model): (Arc<dyn ModelClient>, String) = match args.first().map(String::as_str) {
        Some("local") => {
            let mut config = LlamaConfig::new(&args[1]);
            config.n_ctx = Some(16384);
            config.threads = std::env::var("RLM_LOCAL_THREADS").ok().map(|t| t.parse().unwrap());
            (Arc::new(LlamaClient::load(config).unwrap()), "local".to_owned())
        }
        Some("server") => {
            let mut config = OpenAiConfig::new(&args[1]);
            config.api_key = Some("x".into());
            (Arc::new(OpenAiClient::new(config).unwrap()), args[2].clone())
        }
        _ => panic!("usage: turns local MODEL.gguf | turns server BASE_URL MODEL"),
    };
    let instructions = "You answer questions about a text by writing Python in ```repl blocks. ".repeat(40);
    let mut messages = vec![ChatMessage::system(instructions), ChatMessage::user("Find the magic number.")];
    let ask = |messages: Vec<ChatMessage>, max: u32| ModelRequest {
        model: model.clone(),
        messages: messages.into(),
        max_output_tokens: Some(max),
        temperature: Some(0.0),
    };
    let started = Instant::now();
    let (mut root_seconds, mut sub_seconds, mut prompt, mut cached) = (0.0, 0.0, 0, 0);
    for turn in 0..TURNS {
        let t = Instant::now();
        let answer = client.complete(ask(messages.clone(), 24)).await.unwrap();
        root_seconds += t.elapsed().as_secs_f64();
        prompt += answer.usage.prompt_tokens;
        cached += answer.usage.cached_tokens;
        let t = Instant::now();
        let subs = (0..SUB_CALLS).map(|i| {
            let text = format!("Chunk {turn}.{i}: {}", "the river bank was quiet that morning. ".repeat(40));
            client.complete(ask(vec![ChatMessage::user(format!("{text}\nIs there a number here?"))], 12))
        });
        for result in futures::future::join_all(subs).await {
            result.unwrap();
        }
        sub_seconds += t.elapsed().as_secs_f64();
        messages.push(ChatMessage::assistant(answer.content));
        messages.push(ChatMessage::user(format!("Output of turn {turn}: nothing found. Continue.")));
    }
    println!(
        "{TURNS} root turns ({prompt} prompt tokens, {cached} reported cached): {root_seconds:.1} s; \
         {} sub-calls: {sub_seconds:.1} s; total {:.1} s",
        TURNS * SUB_CALLS,
        started.elapsed().as_secs_f64()
    );
}
