//! The native Anthropic and Gemini clients, the provider router and the client layers, against the scripted server.

use std::sync::Arc;
use std::time::Duration;

use rlm_models::layers::{Budget, CacheMode, Priced, Recorder, Replayer, ResponseCache};
use rlm_models::{
    AnthropicClient, AnthropicConfig, GeminiClient, GeminiConfig, HttpConfig, OpenAiClient, OpenAiConfig, Prices,
    ProviderSettings, Providers,
};
use rlm_protocol::{ChatMessage, Error, ModelClient, ModelRequest};
use rlm_test_support::{Api, Reply, ScriptedServer};

fn http(base_url: String) -> HttpConfig {
    HttpConfig {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_secs(2),
        request_timeout: Duration::from_secs(10),
        ..HttpConfig::new(base_url).with_api_key("test-key")
    }
}

fn anthropic(server: &ScriptedServer) -> AnthropicClient {
    AnthropicClient::new(AnthropicConfig { http: http(server.anthropic_base_url()), ..AnthropicConfig::default() })
        .unwrap()
}

fn gemini(server: &ScriptedServer) -> GeminiClient {
    GeminiClient::new(GeminiConfig { http: http(server.gemini_base_url()) }).unwrap()
}

fn settings(server: &ScriptedServer) -> ProviderSettings {
    ProviderSettings {
        anthropic: AnthropicConfig { http: http(server.anthropic_base_url()), ..AnthropicConfig::default() },
        gemini: GeminiConfig { http: http(server.gemini_base_url()) },
    }
}

fn providers(server: &ScriptedServer) -> Arc<Providers> {
    let openai = Arc::new(OpenAiClient::new(OpenAiConfig::new(server.base_url())).unwrap());
    Arc::new(Providers::new(openai, settings(server), None).unwrap())
}

fn request(model: &str, messages: Vec<ChatMessage>) -> ModelRequest {
    ModelRequest {
        model: model.to_owned(),
        messages: messages.into(),
        max_output_tokens: Some(256),
        temperature: Some(0.0),
    }
}

/// A system prompt long enough to be worth caching, and a conversation that grows by one exchange per turn.
fn system_prompt() -> ChatMessage {
    ChatMessage::system("You answer questions about a long document with code. ".repeat(80))
}

#[tokio::test]
async fn anthropic_speaks_the_messages_api_and_reads_the_cache_from_the_second_turn_on() {
    let server = ScriptedServer::builder()
        .script("claude-test", ["turn one", "turn two", "turn three"].map(Reply::text))
        .start()
        .await
        .unwrap();
    let client = anthropic(&server);
    let mut messages = vec![system_prompt(), ChatMessage::user("What is in the document?")];
    let mut usages = Vec::new();
    for turn in 0..3 {
        let response = client.complete(request("claude-test", messages.clone())).await.unwrap();
        usages.push(response.usage);
        messages.push(ChatMessage::assistant(response.content));
        messages.push(ChatMessage::user(format!("Output of turn {turn}: {}", "data ".repeat(40))));
    }
    let seen = server.requests();
    assert_eq!(seen[0].api, Api::Anthropic);
    assert_eq!(seen[0].api_key.as_deref(), Some("test-key"));
    assert_eq!(seen[0].body()["max_tokens"], 256);
    assert_eq!(seen[0].body()["system"][0]["cache_control"]["type"], "ephemeral");
    assert!(seen[0].body()["messages"].as_array().unwrap().iter().all(|m| m["role"] != "system"));
    assert_eq!(usages[0].cached_tokens, 0, "nothing is cached before the first turn");
    assert!(usages[0].cache_write_tokens > 0, "the first turn writes the system prompt: {:?}", usages[0]);
    for (turn, usage) in usages.iter().enumerate().skip(1) {
        assert!(usage.cached_tokens > 0, "turn {} reads its prefix from the cache: {usage:?}", turn + 1);
        assert!(usage.cached_tokens > usage.prompt_tokens / 2, "most of the prompt is cached: {usage:?}");
    }
    assert!(usages[2].cached_tokens > usages[1].cached_tokens, "the cached prefix grows: {usages:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn anthropic_retries_429_with_retry_after_and_529_and_keeps_the_provider_message() {
    let server = ScriptedServer::builder()
        .fail_next(1, Reply::error(429, "Number of request tokens has exceeded your rate limit").with_retry_after(0))
        .fail_next(1, Reply::error(529, "Overloaded"))
        .script("claude-test", [Reply::text("finally")])
        .start()
        .await
        .unwrap();
    let client = anthropic(&server);
    let response = client.complete(request("claude-test", vec![ChatMessage::user("hi")])).await.unwrap();
    assert_eq!(response.content, "finally");
    assert_eq!(server.requests().len(), 3);

    let server = ScriptedServer::builder()
        .fail_next(1, Reply::error(400, "messages.0.content: Input should be a valid list"))
        .start()
        .await
        .unwrap();
    let err = anthropic(&server).complete(request("claude-test", vec![ChatMessage::user("hi")])).await.unwrap_err();
    assert!(err.to_string().contains("messages.0.content: Input should be a valid list"), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(server.requests().len(), 1, "a bad request is not retried");
}

#[tokio::test]
async fn gemini_speaks_generate_content_and_reports_cached_tokens() {
    let server = ScriptedServer::builder()
        .script("gemini-test", ["first", "second"].map(Reply::text))
        .fail_next(1, Reply::error(503, "The model is overloaded. Please try again later."))
        .start()
        .await
        .unwrap();
    let client = gemini(&server);
    let mut messages = vec![system_prompt(), ChatMessage::user("Question?")];
    let first = client.complete(request("gemini-test", messages.clone())).await.unwrap();
    assert_eq!(first.content, "first");
    assert_eq!(first.usage.cached_tokens, 0);
    messages.push(ChatMessage::assistant(first.content));
    messages.push(ChatMessage::user("More."));
    let second = client.complete(request("gemini-test", messages)).await.unwrap();
    assert!(second.usage.cached_tokens > 0 && second.usage.cached_tokens < second.usage.prompt_tokens, "{second:?}");
    let seen = server.requests();
    assert_eq!(seen.len(), 3, "the 503 was retried");
    assert_eq!(seen[1].api, Api::Gemini);
    assert_eq!(seen[1].api_key.as_deref(), Some("test-key"));
    assert_eq!(seen[1].body()["generationConfig"]["maxOutputTokens"], 256);
    assert_eq!(seen[2].body()["contents"][1]["role"], "model");
    server.shutdown().await;
}

#[tokio::test]
async fn the_router_sends_each_spec_to_its_provider_and_names_what_is_missing() {
    let server = ScriptedServer::builder()
        .script("gpt-test", [Reply::text("from openai")])
        .script("claude-test", [Reply::text("from anthropic")])
        .script("gemini-test", [Reply::text("from gemini")])
        .start()
        .await
        .unwrap();
    let router = providers(&server);
    let hi = || vec![ChatMessage::user("hi")];
    assert_eq!(router.complete(request("gpt-test", hi())).await.unwrap().content, "from openai");
    assert_eq!(router.complete(request("anthropic:claude-test", hi())).await.unwrap().content, "from anthropic");
    assert_eq!(router.complete(request("gemini:gemini-test", hi())).await.unwrap().content, "from gemini");
    let apis: Vec<Api> = server.requests().iter().map(|r| r.api).collect();
    assert_eq!(apis, [Api::OpenAi, Api::Anthropic, Api::Gemini]);
    assert_eq!(server.requests()[1].model, "claude-test", "the prefix is not sent");

    let err = router.complete(request("antropic:claude-test", hi())).await.unwrap_err().to_string();
    assert!(err.contains("known providers: openai, anthropic, gemini, local"), "{err}");
    let mut keyless = settings(&server);
    keyless.anthropic.http.api_key = None;
    let openai = Arc::new(OpenAiClient::new(OpenAiConfig::new(server.base_url())).unwrap());
    let router = Providers::new(openai, keyless, None).unwrap();
    let err = router.complete(request("anthropic:claude-test", hi())).await.unwrap_err().to_string();
    assert!(err.contains("ANTHROPIC_API_KEY"), "{err}");
    assert_eq!(server.requests().len(), 3, "no request without a key");
    server.shutdown().await;
}

#[tokio::test]
async fn the_cache_answers_repeats_without_the_network_but_not_sampled_requests() {
    let server = ScriptedServer::builder().rule(|_| Some(Reply::text("answer"))).start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let priced = Arc::new(Priced::new(providers(&server), Arc::new(Prices::builtin())));
    let cache = ResponseCache::new(priced.clone(), dir.path(), CacheMode::Deterministic).unwrap();
    let ask = |temperature| ModelRequest {
        temperature,
        ..request("anthropic:claude-sonnet-4-5", vec![ChatMessage::user("q")])
    };

    let first = cache.complete(ask(Some(0.0))).await.unwrap();
    assert_eq!(first.usage.cache_hits, 0);
    assert!(first.usage.cost_usd.is_some_and(|cost| cost > 0.0), "{:?}", first.usage);
    let again = cache.complete(ask(Some(0.0))).await.unwrap();
    assert_eq!(again.content, "answer");
    assert_eq!((again.usage.cache_hits, again.usage.calls, again.usage.cost_usd), (1, 1, Some(0.0)));
    assert_eq!(server.requests().len(), 1, "the hit skipped the network");

    cache.complete(ask(Some(0.7))).await.unwrap();
    cache.complete(ask(Some(0.7))).await.unwrap();
    assert_eq!(server.requests().len(), 3, "sampled requests are not cached");
    let forced = ResponseCache::new(priced, dir.path(), CacheMode::Forced).unwrap();
    forced.complete(ask(Some(0.7))).await.unwrap();
    assert_eq!(forced.complete(ask(Some(0.7))).await.unwrap().usage.cache_hits, 1);
    assert_eq!(server.requests().len(), 4);
    server.shutdown().await;
}

#[tokio::test]
async fn a_recording_replays_with_the_network_gone() {
    let server = ScriptedServer::builder()
        .rule(|r| Some(Reply::text(format!("re: {}", r.messages.len()))))
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exchanges.jsonl");
    let recorder = Recorder::create(providers(&server), &path).unwrap();
    let asks = [
        request("anthropic:claude-test", vec![ChatMessage::user("a")]),
        request("gemini:g", vec![ChatMessage::user("b")]),
    ];
    let mut recorded = Vec::new();
    for ask in &asks {
        recorded.push(recorder.complete(ask.clone()).await.unwrap());
    }
    drop(recorder);
    server.shutdown().await;

    let replay = Replayer::open(&path).unwrap();
    for (ask, expected) in asks.iter().zip(&recorded) {
        assert_eq!(&replay.complete(ask.clone()).await.unwrap(), expected);
    }
    let err = replay.complete(request("anthropic:claude-test", vec![ChatMessage::user("c")])).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)) && err.to_string().contains("\"c\""), "{err}");
}

#[tokio::test]
async fn a_budget_stops_calls_it_cannot_afford() {
    let server = ScriptedServer::builder()
        .rule(|_| Some(Reply::text("ok").with_usage(100_000, 1_000, 0)))
        .start()
        .await
        .unwrap();
    let prices = Arc::new(Prices::builtin());
    let priced: Arc<dyn ModelClient> = Arc::new(Priced::new(providers(&server), prices.clone()));
    // claude-sonnet-4-5: 100K prompt tokens cost $0.30 and 1K output tokens $0.015.
    let budget = Budget::new(priced, prices, 0.5);
    let ask = || ModelRequest {
        max_output_tokens: None,
        ..request("anthropic:claude-sonnet-4-5", vec![ChatMessage::user("q")])
    };
    let first = budget.complete(ask()).await.unwrap();
    assert_eq!(first.usage.cost_usd.map(|c| (c * 1000.0).round()), Some(315.0));
    budget.complete(ask()).await.unwrap();
    let err = budget.complete(ask()).await.unwrap_err();
    assert!(matches!(err, Error::Budget(_)), "{err}");
    assert_eq!(server.requests().len(), 2, "the refused call never reached the provider");
    assert!((budget.spent() - 0.63).abs() < 1e-9);
    server.shutdown().await;
}
