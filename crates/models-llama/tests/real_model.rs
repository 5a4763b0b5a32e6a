//! The real Qwen2.5-Coder-0.5B model. Ignored by a plain `cargo test` (CI downloads no weights); `scripts/test.sh` runs
//! it with `--ignored` when `rlm model pull qwen2.5-coder-0.5b` has cached the file, and otherwise prints that it was
//! skipped, by name.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic

use rlm_models::local::{find_known_model, model_cache_dir};
use rlm_models_llama::{LlamaClient, LlamaConfig};
use rlm_protocol::{ChatMessage, ModelClient, ModelRequest};

#[tokio::test]
#[ignore = "needs the cached 0.5B model (rlm model pull qwen2.5-coder-0.5b); scripts/test.sh runs it when cached"]
async fn real_qwen_0_5b_answers_and_reuses_its_cache() {
    let model = find_known_model("qwen2.5-coder-0.5b").unwrap();
    let path = model_cache_dir().join(model.file_name);
    assert!(path.is_file(), "{} is not cached: run `rlm model pull qwen2.5-coder-0.5b` first", path.display());
    let mut config = LlamaConfig::new(&path);
    config.n_ctx = Some(4096);
    let client = tokio::task::spawn_blocking(move || LlamaClient::load(config)).await.unwrap().unwrap();
    assert_eq!(client.info().n_ctx_train, 32768);

    let mut messages = vec![
        ChatMessage::system("You are a helpful assistant. Answer with the number only."),
        ChatMessage::user("The secret code is 7319. What is the secret code?"),
    ];
    let ask = |messages: Vec<ChatMessage>| ModelRequest {
        model: "local:qwen2.5-coder-0.5b".to_owned(),
        messages: messages.into(),
        max_output_tokens: Some(16),
        temperature: None,
    };
    let first = client.complete(ask(messages.clone())).await.unwrap();
    assert!(first.content.contains("7319"), "{first:?}");

    messages.push(ChatMessage::assistant(first.content.clone()));
    messages.push(ChatMessage::user("And the secret code plus one?"));
    let second = client.complete(ask(messages)).await.unwrap();
    assert!(second.usage.cached_tokens >= first.usage.prompt_tokens, "{:?} then {:?}", first.usage, second.usage);
    assert!(second.content.contains("7320"), "{second:?}");
}
