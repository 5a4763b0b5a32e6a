//! Load time, prompt and generation speed, and the conversation cache at work, on a GGUF file:
//! `cargo run -p rlm-models-llama --example speed -- MODEL.gguf [THREADS]`.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used, reason = "a measuring tool")]

use std::time::Instant;

use rlm_models_llama::{LlamaClient, LlamaConfig};
use rlm_protocol::{ChatMessage, ModelClient, ModelRequest};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: speed MODEL.gguf [THREADS]");
    let mut config = LlamaConfig::new(&path);
    config.n_ctx = Some(8192);
    config.threads = args.next().map(|t| t.parse().unwrap());
    let client = LlamaClient::load(config).unwrap();
    let info = client.info();
    println!("loaded in {:.2} s: n_ctx_train {}, threads {}", info.load_seconds, info.n_ctx_train, info.threads);

    let text = "The quick brown fox jumps over the lazy dog. ".repeat(100);
    let mut messages = vec![ChatMessage::system("You are terse."), ChatMessage::user(format!("{text}\nSay hi."))];
    let ask = |messages: Vec<ChatMessage>| ModelRequest {
        model: "m".to_owned(),
        messages,
        max_output_tokens: Some(64),
        temperature: None,
    };
    for turn in 1..=3 {
        let decoded = client.stats().decoded_prompt_tokens();
        let generated = client.stats().generated_tokens();
        let started = Instant::now();
        let answer = client.complete(ask(messages.clone())).await.unwrap();
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "turn {turn}: prompt {} tokens ({} cached, {} decoded), {} generated, {seconds:.2} s",
            answer.usage.prompt_tokens,
            answer.usage.cached_tokens,
            client.stats().decoded_prompt_tokens() - decoded,
            client.stats().generated_tokens() - generated,
        );
        messages.push(ChatMessage::assistant(answer.content));
        messages.push(ChatMessage::user(format!("Turn {turn} done. Say hi again.")));
    }

    // Prompt-only and generation-only rates from one-shot requests.
    let started = Instant::now();
    let answer = client.complete(ask(vec![ChatMessage::user(format!("{text}\nOK?"))])).await.unwrap();
    let total = started.elapsed().as_secs_f64();
    println!(
        "one-shot: {} prompt + {} generated tokens in {total:.2} s",
        answer.usage.prompt_tokens, answer.usage.completion_tokens
    );
    let started = Instant::now();
    let long = client
        .complete(ModelRequest { max_output_tokens: Some(128), ..ask(vec![ChatMessage::user("Count from 1 to 200.")]) })
        .await
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "generation: {} tokens in {seconds:.2} s = {:.1} tokens/s",
        long.usage.completion_tokens,
        long.usage.completion_tokens as f64 / seconds
    );

    // Four one-shot requests at once, against one after another.
    let one = || ask(vec![ChatMessage::user(format!("{}\nSummarise.", "Data line. ".repeat(60)))]);
    let started = Instant::now();
    for _ in 0..4 {
        client.complete(one()).await.unwrap();
    }
    let sequential = started.elapsed().as_secs_f64();
    let started = Instant::now();
    futures::future::join_all((0..4).map(|_| client.complete(one()))).await;
    let parallel = started.elapsed().as_secs_f64();
    println!("4 one-shot requests: {sequential:.2} s one after another, {parallel:.2} s together");
}
