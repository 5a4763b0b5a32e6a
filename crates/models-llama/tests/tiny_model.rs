//! The client's mechanics on a tiny random model written at test time: loading, the window from the file, the chat
//! template, usage, the conversation's cache across turns, and one-shot requests batched beside it.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic

use std::path::PathBuf;

use rlm_models_llama::tiny::{TINY_N_CTX_TRAIN, write_tiny_model};
use rlm_models_llama::{LlamaClient, LlamaConfig, LlamaError};
use rlm_protocol::{ChatMessage, ModelClient, ModelRequest};

fn tiny_model(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("tiny.gguf");
    write_tiny_model(&path).unwrap();
    path
}

fn load(dir: &tempfile::TempDir) -> LlamaClient {
    let mut config = LlamaConfig::new(tiny_model(dir));
    config.name = "local:tiny".to_owned();
    config.threads = Some(1);
    LlamaClient::load(config).unwrap()
}

fn request(messages: Vec<ChatMessage>, max: u32) -> ModelRequest {
    ModelRequest {
        model: "local:tiny".to_owned(),
        messages: messages.into(),
        max_output_tokens: Some(max),
        temperature: None,
    }
}

#[test]
fn loads_the_file_and_takes_the_window_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let client = load(&dir);
    assert_eq!(client.info().n_ctx_train, TINY_N_CTX_TRAIN);
    assert_eq!(client.context_window(), u64::from(TINY_N_CTX_TRAIN));
    assert_eq!(client.info().threads, 1);
    assert!(client.info().chat_template.contains("<|im_start|>"));

    let mut smaller = LlamaConfig::new(tiny_model(&dir));
    smaller.threads = Some(1);
    smaller.n_ctx = Some(256);
    assert_eq!(LlamaClient::load(smaller).unwrap().context_window(), 256);
}

#[tokio::test]
async fn applies_the_chat_template_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let client = load(&dir);
    let prompt = client
        .render_prompt(&request(vec![ChatMessage::system("Be brief."), ChatMessage::user("Hi")], 1))
        .await
        .unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[tokio::test]
async fn reports_usage_and_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let client = load(&dir);
    let response = client.complete(request(vec![ChatMessage::user("abab hello")], 6)).await.unwrap();
    assert_eq!(response.model, "local:tiny");
    assert_eq!(response.usage.calls, 1);
    assert_eq!(response.usage.completion_tokens, 6);
    // ChatML framing (3 + 3 special tokens, role words, newlines) plus the text.
    assert!(response.usage.prompt_tokens > 10, "{:?}", response.usage);
    assert_eq!(response.usage.cached_tokens, 0);
    assert_eq!(client.stats().decoded_prompt_tokens(), response.usage.prompt_tokens);
    assert_eq!(client.stats().generated_tokens(), response.usage.completion_tokens);
}

#[tokio::test]
async fn a_second_turn_decodes_only_its_new_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let client = load(&dir);
    let mut messages =
        vec![ChatMessage::system("You answer in code."), ChatMessage::user("first question ".repeat(20))];
    let first = client.complete(request(messages.clone(), 4)).await.unwrap();
    let decoded_after_first = client.stats().decoded_prompt_tokens();
    assert_eq!(decoded_after_first, first.usage.prompt_tokens);

    messages.push(ChatMessage::assistant(first.content.clone()));
    messages.push(ChatMessage::user("second question"));
    let second = client.complete(request(messages, 4)).await.unwrap();
    let decoded_for_second = client.stats().decoded_prompt_tokens() - decoded_after_first;

    assert!(second.usage.cached_tokens >= first.usage.prompt_tokens, "{:?} then {:?}", first.usage, second.usage);
    assert_eq!(decoded_for_second, second.usage.prompt_tokens - second.usage.cached_tokens);
    assert!(decoded_for_second < second.usage.prompt_tokens / 2, "decoded {decoded_for_second} of {:?}", second.usage);
}

#[tokio::test]
async fn one_shot_requests_run_together_and_leave_the_conversation_cached() {
    let dir = tempfile::tempdir().unwrap();
    let client = std::sync::Arc::new(load(&dir));
    let mut messages = vec![ChatMessage::system("Root."), ChatMessage::user("the root question ".repeat(10))];
    let first = client.complete(request(messages.clone(), 3)).await.unwrap();

    let subs = (0..3).map(|i| {
        let client = std::sync::Arc::clone(&client);
        async move { client.complete(request(vec![ChatMessage::user(format!("chunk {i} ").repeat(15))], 8)).await }
    });
    for answer in futures::future::join_all(subs).await {
        let answer = answer.unwrap();
        assert_eq!(answer.usage.cached_tokens, 0);
    }
    assert!(client.stats().max_parallel() >= 2, "one-shot requests never shared a decode");

    messages.push(ChatMessage::assistant(first.content.clone()));
    messages.push(ChatMessage::user("go on"));
    let second = client.complete(request(messages, 3)).await.unwrap();
    assert!(second.usage.cached_tokens >= first.usage.prompt_tokens, "{:?} then {:?}", first.usage, second.usage);
}

/// A parent conversation and a child's (as `rlm_query` makes) alternate; each keeps its own cache.
#[tokio::test]
async fn conversations_keep_their_caches_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let client = load(&dir);
    let mut parent = vec![ChatMessage::system("Parent."), ChatMessage::user("the parent's question ".repeat(12))];
    let mut child = vec![ChatMessage::system("Child."), ChatMessage::user("the child's question ".repeat(12))];
    let parent_first = client.complete(request(parent.clone(), 3)).await.unwrap();
    let child_first = client.complete(request(child.clone(), 3)).await.unwrap();

    child.push(ChatMessage::assistant("print(1)"));
    child.push(ChatMessage::user("go on"));
    let child_second = client.complete(request(child, 3)).await.unwrap();
    parent.push(ChatMessage::assistant("print(1)"));
    parent.push(ChatMessage::user("go on"));
    let parent_second = client.complete(request(parent, 3)).await.unwrap();

    assert!(child_second.usage.cached_tokens >= child_first.usage.prompt_tokens, "{:?}", child_second.usage);
    assert!(parent_second.usage.cached_tokens >= parent_first.usage.prompt_tokens, "{:?}", parent_second.usage);
    assert_eq!(client.stats().evictions(), 0);
}

/// A new conversation that opens with a cached conversation's system prompt starts from that prompt's cells, and the
/// cached conversation keeps all of its own.
#[tokio::test]
async fn a_new_conversation_shares_a_cached_system_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let client = load(&dir);
    let system = ChatMessage::system("You write code in a REPL. ".repeat(10));
    let mut root = vec![system.clone(), ChatMessage::user("the root question")];
    let root_first = client.complete(request(root.clone(), 3)).await.unwrap();
    let system_tokens = client.render_prompt(&request(vec![system.clone()], 1)).await.unwrap().len() / 4;

    let decoded_before = client.stats().decoded_prompt_tokens();
    let child = client.complete(request(vec![system, ChatMessage::user("a sub-question")], 3)).await.unwrap();
    assert_eq!(client.stats().shared_prefixes(), 1);
    assert!(child.usage.cached_tokens as usize >= system_tokens, "{:?} ({system_tokens})", child.usage);
    assert_eq!(
        client.stats().decoded_prompt_tokens() - decoded_before,
        child.usage.prompt_tokens - child.usage.cached_tokens
    );

    root.push(ChatMessage::assistant("print(1)"));
    root.push(ChatMessage::user("go on"));
    let root_second = client.complete(request(root, 3)).await.unwrap();
    assert!(root_second.usage.cached_tokens >= root_first.usage.prompt_tokens, "{:?}", root_second.usage);
}

#[tokio::test]
async fn an_abandoned_request_stops_and_the_next_one_is_served() {
    let dir = tempfile::tempdir().unwrap();
    // One sequence, so the next request waits for the abandoned one unless that one stops.
    let mut config = LlamaConfig::new(tiny_model(&dir));
    config.threads = Some(1);
    config.n_seq = 1;
    let client = LlamaClient::load(config).unwrap();
    let long = request(vec![ChatMessage::user("go on ".repeat(30))], 5000);
    // Give up on a generation that would otherwise run to the end of the 1,024-token window (about 830 tokens).
    let _ = tokio::time::timeout(std::time::Duration::from_millis(2), client.complete(long)).await;
    let started = std::time::Instant::now();
    let answer = client.complete(request(vec![ChatMessage::user("hi")], 2)).await.unwrap();
    assert!(answer.usage.completion_tokens <= 2);
    // Running on to the end of the window would take over 800 decodes.
    let decodes = client.stats().decode_calls();
    assert!(decodes < 400, "the abandoned request ran on: {decodes} decodes");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[tokio::test]
async fn a_full_cache_gives_up_an_idle_conversation_for_a_sub_call() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = LlamaConfig::new(tiny_model(&dir));
    config.threads = Some(1);
    config.n_ctx = Some(512);
    let client = LlamaClient::load(config).unwrap();
    let conversation = vec![ChatMessage::system("Root."), ChatMessage::user("w ".repeat(140))];
    let first = client.complete(request(conversation, 2)).await.unwrap();
    assert!(first.usage.prompt_tokens > 280, "{:?}", first.usage);
    // Together with the cached conversation this needs more cells than the cache has.
    let sub = client.complete(request(vec![ChatMessage::user("c ".repeat(140))], 2)).await.unwrap();
    assert_eq!(sub.usage.completion_tokens, 2);
    assert_eq!(client.stats().evictions(), 1);
}

#[tokio::test]
async fn a_reply_that_reaches_the_window_ends_there() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = LlamaConfig::new(tiny_model(&dir));
    config.threads = Some(1);
    config.n_ctx = Some(256);
    let client = LlamaClient::load(config).unwrap();
    let answer = client.complete(request(vec![ChatMessage::user("hi")], 5000)).await.unwrap();
    assert_eq!(answer.usage.prompt_tokens + answer.usage.completion_tokens, 256, "{:?}", answer.usage);
}

#[test]
fn a_missing_file_is_named_with_its_expected_hash() {
    let mut config = LlamaConfig::new("/nonexistent/model.gguf");
    config.expected_sha256 = Some("ab12".to_owned());
    let err = LlamaClient::load(config).unwrap_err();
    assert!(matches!(err, LlamaError::MissingFile { .. }));
    let text = err.to_string();
    assert!(text.contains("/nonexistent/model.gguf") && text.contains("expected sha256 ab12"), "{text}");
}

#[test]
fn a_corrupt_file_is_named_with_its_expected_hash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.gguf");
    let mut bytes = std::fs::read(tiny_model(&dir)).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&path, bytes).unwrap();
    let mut config = LlamaConfig::new(&path);
    config.expected_sha256 = Some("cd34".to_owned());
    let err = LlamaClient::load(config).unwrap_err();
    assert!(matches!(err, LlamaError::CorruptFile { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("broken.gguf") && text.contains("expected sha256 cd34"), "{text}");
}

/// The tiny model's noise repeats itself far less than code does, so its guesses seldom pay for themselves: these
/// tests make them free, so every match is guessed in full and the mechanics are exercised.
fn load_with_lookup(dir: &tempfile::TempDir, lookup: bool) -> LlamaClient {
    let mut config = LlamaConfig::new(tiny_model(dir));
    config.threads = Some(1);
    config.lookup = lookup;
    config.guess_cost = 0.0;
    let client = LlamaClient::load(config).unwrap();
    assert_eq!(client.info().lookup, lookup);
    client
}

/// Prompts whose text repeats, as a REPL transcript's does (printed lines, names used again and again).
fn repeating_prompts() -> Vec<Vec<ChatMessage>> {
    vec![
        vec![
            ChatMessage::system("You write Python in ```repl blocks."),
            ChatMessage::user("print(context[0:100])\nprint(len(context))\n".repeat(8)),
        ],
        vec![ChatMessage::user("abab hello world abab hello world ".repeat(6))],
        vec![ChatMessage::user("x = 1\ny = x + 1\nz = y + 1\n".repeat(5))],
    ]
}

/// Prompt lookup changes how many decodes a reply takes, never the reply: greedy replies are the same token for
/// token, with the same usage, in fewer decodes.
#[tokio::test]
async fn lookup_writes_the_same_greedy_replies_in_fewer_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let plain = load_with_lookup(&dir, false);
    let guessing = load_with_lookup(&dir, true);
    for messages in repeating_prompts() {
        let without = plain.complete(request(messages.clone(), 300)).await.unwrap();
        let with = guessing.complete(request(messages, 300)).await.unwrap();
        assert_eq!(with.content, without.content);
        assert_eq!(with.usage, without.usage);
    }
    assert_eq!(plain.stats().drafted_tokens(), 0);
    assert_eq!(guessing.stats().generated_tokens(), plain.stats().generated_tokens());
    assert_eq!(guessing.stats().decoded_prompt_tokens(), plain.stats().decoded_prompt_tokens());
    let accepted = guessing.stats().accepted_draft_tokens();
    assert!(accepted > 0 && accepted <= guessing.stats().drafted_tokens(), "accepted {accepted}");
    // Every accepted guess is a decode saved.
    assert_eq!(guessing.stats().decode_calls() + accepted, plain.stats().decode_calls());
    // The tiny model's noise repeats itself now and then (real code repeats far more).
    assert!(
        guessing.stats().decode_calls() * 10 < plain.stats().decode_calls() * 9,
        "{} decodes with lookup, {} without",
        guessing.stats().decode_calls(),
        plain.stats().decode_calls()
    );
}

/// A later turn starts from the cache a turn with lookup left: the rejected guesses' cells were dropped, so the
/// conversation's cached tokens are exactly what it wrote.
#[tokio::test]
async fn lookup_leaves_the_cache_as_plain_decoding_does() {
    let dir = tempfile::tempdir().unwrap();
    let plain = load_with_lookup(&dir, false);
    let guessing = load_with_lookup(&dir, true);
    let mut messages = repeating_prompts().swap_remove(0);
    for _ in 0..3 {
        let without = plain.complete(request(messages.clone(), 60)).await.unwrap();
        let with = guessing.complete(request(messages.clone(), 60)).await.unwrap();
        assert_eq!(with.content, without.content);
        assert_eq!(with.usage, without.usage);
        messages.push(ChatMessage::assistant(with.content));
        messages.push(ChatMessage::user("print(context[100:200])"));
    }
    assert!(guessing.stats().accepted_draft_tokens() > 0);
    assert_eq!(guessing.stats().reused_prompt_tokens(), plain.stats().reused_prompt_tokens());
    assert_caches_whole(&guessing).await;
}

/// Every sequence's cache holds exactly the tokens the scheduler counts in it: no cell of a dropped guess is left.
async fn assert_caches_whole(client: &LlamaClient) {
    for sequence in client.sequence_caches().await.unwrap() {
        assert_eq!(sequence.positions, sequence.tokens, "{sequence:?}");
    }
}

/// Sub-calls running at once guess, and keep or drop guesses, each in its own sequence; the conversations go on
/// from whole caches.
///
/// The replies are not compared with plain decoding's token for token: requests in one batch share the cache's
/// cells, and when dropped guesses free cells in the middle, a sequence's later tokens may sit in other cells than
/// plain decoding puts them in. Attention then adds the same terms in another order, the logits differ in their last
/// bits, and the tiny model's noise has near-ties that this flips (it did here for one of three replies). Alone, a
/// sequence's cells stay in order and replies are equal (the tests above).
#[tokio::test]
async fn lookup_in_parallel_sequences_keeps_each_cache_whole() {
    let dir = tempfile::tempdir().unwrap();
    let plain = load_with_lookup(&dir, false);
    let guessing = load_with_lookup(&dir, true);
    for client in [&plain, &guessing] {
        // Three conversations of two turns fit in the 1,024-token cache.
        let mut conversations = repeating_prompts().split_off(1);
        conversations.push(vec![ChatMessage::user("go on ".repeat(10))]);
        for _ in 0..2 {
            let replies = futures::future::join_all(
                conversations.iter().map(|messages| client.complete(request(messages.clone(), 60))),
            )
            .await;
            for (messages, reply) in conversations.iter_mut().zip(replies) {
                let reply = reply.unwrap();
                assert_eq!(reply.usage.completion_tokens, 60);
                // The tiny model writes NUL bytes now and then, which a message cannot hold.
                messages.push(ChatMessage::assistant(reply.content.replace('\0', "")));
                messages.push(ChatMessage::user("go on"));
            }
            assert_caches_whole(client).await;
        }
        assert!(client.stats().max_parallel() >= 2, "the requests never shared a decode");
    }
    let stats = guessing.stats();
    assert!(stats.accepted_draft_tokens() > 0 && stats.accepted_draft_tokens() < stats.drafted_tokens());
    assert_eq!(stats.generated_tokens(), plain.stats().generated_tokens());
}

/// A reply limited to a few tokens stops there even when a guess runs past the limit.
#[tokio::test]
async fn lookup_stops_at_the_token_limit() {
    let dir = tempfile::tempdir().unwrap();
    let plain = load_with_lookup(&dir, false);
    let guessing = load_with_lookup(&dir, true);
    for max in [1, 2, 3, 7, 33] {
        let messages = repeating_prompts().swap_remove(1);
        let without = plain.complete(request(messages.clone(), max)).await.unwrap();
        let with = guessing.complete(request(messages, max)).await.unwrap();
        assert_eq!(with.usage.completion_tokens, u64::from(max));
        assert_eq!(with.content, without.content);
    }
}

/// Guessed tokens need cells of their own for a moment. When the cache has none left, the decode runs without them
/// before any idle conversation is given up: the conversation is evicted when plain decoding would evict it, and the
/// reply is the one written without lookup.
#[tokio::test]
async fn lookup_gives_way_when_the_cache_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let load = |lookup: bool| {
        let mut config = LlamaConfig::new(tiny_model(&dir));
        config.threads = Some(1);
        config.n_ctx = Some(256);
        config.n_seq = 2;
        config.lookup = lookup;
        config.guess_cost = 0.0;
        LlamaClient::load(config).unwrap()
    };
    let conversation = vec![ChatMessage::system("Root."), ChatMessage::user("w ".repeat(60))];
    // The tiny model's reply to this has a guess ready at the step the cache fills.
    let sub_call = vec![ChatMessage::user("w ".repeat(20))];
    let mut replies = Vec::new();
    let mut clients = Vec::new();
    for lookup in [false, true] {
        let client = load(lookup);
        let first = client.complete(request(conversation.clone(), 2)).await.unwrap();
        // With the conversation's cells this needs more than the 256 there are.
        let sub = client.complete(request(sub_call.clone(), 256 - 40 - first.usage.prompt_tokens as u32)).await;
        replies.push(sub.unwrap());
        clients.push(client);
    }
    let (plain, guessing) = (&clients[0], &clients[1]);
    assert_eq!(replies[1].content, replies[0].content);
    assert_eq!(replies[1].usage, replies[0].usage);
    assert_eq!((plain.stats().evictions(), guessing.stats().evictions()), (1, 1));
    assert!(guessing.stats().accepted_draft_tokens() > 0);
    assert!(guessing.stats().retries_without_drafts() > 0, "the cache always had room for the guesses");
}

fn load_saving_prompts(model: &std::path::Path, prompt_cache: Option<PathBuf>) -> LlamaClient {
    let mut config = LlamaConfig::new(model);
    config.name = "local:tiny".to_owned();
    config.threads = Some(1);
    config.prompt_cache_dir = prompt_cache;
    LlamaClient::load(config).unwrap()
}

fn saved_files(dir: &std::path::Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).map(|entries| entries.map(|entry| entry.unwrap().path()).collect()).unwrap_or_default()
}

/// A client loaded later (as the next `rlm run` is) starts a conversation after the system prompt's saved cells,
/// decodes only what follows, and writes what reading the whole prompt writes; a file that does not load is deleted
/// and the prompt read instead.
#[tokio::test]
async fn a_later_client_starts_after_a_saved_system_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(&dir);
    let prompts = dir.path().join("prompts");
    let system = ChatMessage::system("You write code in a REPL. ".repeat(10));
    let asking = |question: &str| request(vec![system.clone(), ChatMessage::user(question)], 8);

    let first = load_saving_prompts(&model, Some(prompts.clone()));
    let reply = first.complete(asking("the first question")).await.unwrap();
    assert_eq!(reply.usage.cached_tokens, 0);
    assert_eq!(first.stats().saved_prompts(), 1);
    drop(first);
    assert_eq!(saved_files(&prompts).len(), 1, "{:?}", saved_files(&prompts));

    let second = load_saving_prompts(&model, Some(prompts.clone()));
    let from_saved = second.complete(asking("the second question")).await.unwrap();
    let loaded = second.stats().loaded_prompt_tokens();
    assert!(loaded >= 64, "{loaded}");
    assert_eq!(from_saved.usage.cached_tokens, loaded);
    assert_eq!(second.stats().decoded_prompt_tokens(), from_saved.usage.prompt_tokens - loaded);
    assert_eq!(second.stats().saved_prompts(), 0, "the file is there already");
    // The conversation goes on from its own cache after the loaded cells.
    let next = request(
        vec![
            system.clone(),
            ChatMessage::user("the second question"),
            ChatMessage::assistant(from_saved.content.clone()),
            ChatMessage::user("go on"),
        ],
        8,
    );
    let turn = second.complete(next.clone()).await.unwrap();
    assert!(turn.usage.cached_tokens >= from_saved.usage.prompt_tokens, "{:?}", turn.usage);
    assert_caches_whole(&second).await;

    let plain = load_saving_prompts(&model, None);
    let read_in_full = plain.complete(asking("the second question")).await.unwrap();
    assert_eq!(from_saved.content, read_in_full.content);
    assert_eq!(plain.complete(next).await.unwrap().content, turn.content);
    assert_eq!(plain.stats().saved_prompts() + plain.stats().loaded_prompt_tokens(), 0);

    let [file] = saved_files(&prompts).try_into().unwrap();
    std::fs::write(&file, b"not a saved cache").unwrap();
    let third = load_saving_prompts(&model, Some(prompts.clone()));
    let reread = third.complete(asking("the second question")).await.unwrap();
    assert_eq!(reread.usage.cached_tokens, 0);
    assert_eq!(reread.content, read_in_full.content);
    assert!(!file.exists(), "a file that does not load is deleted");
}
