//! `OpenAiClient` (and, in `providers`, the native Anthropic and Gemini clients and the client layers) against the
//! scripted server over real loopback sockets.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic

#[path = "openai/connections.rs"]
mod connections;
#[path = "openai/providers.rs"]
mod providers;

use std::time::{Duration, Instant};

use rlm_models::{OpenAiClient, OpenAiConfig, TokenLimitField};
use rlm_protocol::{ChatMessage, Error, ModelClient, ModelRequest};
use rlm_test_support::{Reply, ScriptedServer};

fn config(server: &ScriptedServer) -> OpenAiConfig {
    OpenAiConfig {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_secs(2),
        request_timeout: Duration::from_secs(10),
        ..OpenAiConfig::new(server.base_url())
    }
}

fn client(config: OpenAiConfig) -> OpenAiClient {
    OpenAiClient::new(config).expect("client")
}

fn request(model: &str) -> ModelRequest {
    ModelRequest {
        model: model.to_owned(),
        messages: vec![ChatMessage::system("be brief"), ChatMessage::user("hello")].into(),
        max_output_tokens: None,
        temperature: None,
    }
}

#[tokio::test]
async fn completion_parses_content_and_usage_and_sends_auth() {
    let server = ScriptedServer::builder()
        .script("gpt-test", [Reply::text("hi there").with_usage(12, 5, 3)])
        .start()
        .await
        .unwrap();
    let client = client(config(&server).with_api_key("sk-test-key"));
    let mut req = request("gpt-test");
    req.temperature = Some(0.5);

    let response = client.complete(req).await.expect("completion");
    assert_eq!(response.content, "hi there");
    assert_eq!(response.model, "gpt-test");
    assert_eq!((response.usage.prompt_tokens, response.usage.completion_tokens), (12, 5));
    assert_eq!((response.usage.cached_tokens, response.usage.calls), (3, 1));

    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer sk-test-key"));
    assert_eq!(seen[0].messages, vec![("system".into(), "be brief".into()), ("user".into(), "hello".into())]);
    assert_eq!(seen[0].body()["temperature"], 0.5);
    assert!(seen[0].body().get("max_tokens").is_none());
    assert!(seen[0].body().get("max_completion_tokens").is_none());
    server.shutdown().await;
}

#[tokio::test]
async fn no_auth_header_without_key() {
    let server = ScriptedServer::builder().script("m", [Reply::text("ok")]).start().await.unwrap();
    client(config(&server)).complete(request("m")).await.expect("completion");
    assert_eq!(server.requests()[0].authorization, None);
}

#[tokio::test]
async fn token_limit_field_is_configurable() {
    let server = ScriptedServer::builder().rule(|_| Some(Reply::text("ok"))).start().await.unwrap();
    let mut req = request("m");
    req.max_output_tokens = Some(64);
    client(config(&server)).complete(req.clone()).await.expect("completion");
    let new_field = OpenAiConfig { max_output_tokens_field: TokenLimitField::MaxCompletionTokens, ..config(&server) };
    client(new_field).complete(req).await.expect("completion");

    let seen = server.requests();
    assert_eq!(seen[0].body()["max_tokens"], 64);
    assert!(seen[0].body().get("max_completion_tokens").is_none());
    assert_eq!(seen[1].body()["max_completion_tokens"], 64);
    assert!(seen[1].body().get("max_tokens").is_none());
}

#[tokio::test]
async fn rate_limit_honours_retry_after() {
    let server = ScriptedServer::builder()
        .fail_next(1, Reply::error(429, "Rate limit reached").with_retry_after(1))
        .script("m", [Reply::text("finally")])
        .start()
        .await
        .unwrap();
    let started = Instant::now();
    let response = client(config(&server)).complete(request("m")).await.expect("completion after retry");
    assert_eq!(response.content, "finally");
    assert!(started.elapsed() >= Duration::from_secs(1), "waited only {:?}", started.elapsed());
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn server_errors_are_retried() {
    let server = ScriptedServer::builder()
        .script("m", [Reply::error(500, "boom"), Reply::error(502, "bad gateway"), Reply::text("ok")])
        .start()
        .await
        .unwrap();
    let response = client(config(&server)).complete(request("m")).await.expect("completion after retries");
    assert_eq!(response.content, "ok");
    assert_eq!(server.requests().len(), 3);
    assert_eq!(server.remaining_script("m"), 0);
}

#[tokio::test]
async fn unauthorized_is_not_retried() {
    let server = ScriptedServer::builder()
        .script("m", [Reply::error(401, "Incorrect API key provided: sk-wro***"), Reply::text("unused")])
        .start()
        .await
        .unwrap();
    let err = client(config(&server).with_api_key("sk-wrong")).complete(request("m")).await.expect_err("401");
    let Error::Model { status, message, retryable } = &err else { panic!("unexpected error {err:?}") };
    assert_eq!(*status, Some(401));
    assert!(!retryable);
    assert!(message.contains("API key was rejected") && message.contains("Incorrect API key provided"), "{message}");
    assert!(err.to_string().contains("HTTP 401"), "{err}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn bad_request_is_not_retried() {
    let server = ScriptedServer::builder().script("m", [Reply::error(400, "context too long")]).start().await.unwrap();
    let err = client(config(&server)).complete(request("m")).await.expect_err("400");
    assert_eq!(err, Error::model(Some(400), "context too long", false));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn exhausted_retries_give_a_retryable_error() {
    let server = ScriptedServer::builder().fail_next(10, Reply::error(503, "overloaded")).start().await.unwrap();
    let err = client(OpenAiConfig { max_retries: 2, ..config(&server) }).complete(request("m")).await.expect_err("503");
    let Error::Model { status, message, retryable } = &err else { panic!("unexpected error {err:?}") };
    assert_eq!(*status, Some(503));
    assert!(retryable);
    assert!(message.contains("overloaded"), "{message}");
    assert_eq!(server.requests().len(), 3, "one attempt plus two retries");
}

#[tokio::test]
async fn timeouts_are_retried() {
    let server = ScriptedServer::builder()
        .script("m", [Reply::text("too slow").with_delay(Duration::from_secs(3)), Reply::text("fast")])
        .start()
        .await
        .unwrap();
    let started = Instant::now();
    let config = OpenAiConfig { request_timeout: Duration::from_millis(300), ..config(&server) };
    let response = client(config).complete(request("m")).await.expect("completion after timeout");
    assert_eq!(response.content, "fast");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn connection_refused_is_retryable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let config = OpenAiConfig {
        max_retries: 1,
        initial_backoff: Duration::from_millis(1),
        ..OpenAiConfig::new(format!("http://{addr}/v1"))
    };
    let err = client(config).complete(request("m")).await.expect_err("nothing listens");
    let Error::Model { status, message, retryable } = &err else { panic!("unexpected error {err:?}") };
    assert_eq!(*status, None);
    assert!(retryable);
    assert!(message.contains("could not connect"), "{message}");
}

#[tokio::test]
async fn https_client_can_be_constructed() {
    OpenAiClient::new(OpenAiConfig::default().with_api_key("sk-x")).expect("https client");
    OpenAiClient::new(OpenAiConfig::new("https://example.com:8443/openai/v1")).expect("https client");
}

#[test]
fn debug_does_not_leak_the_key() {
    let client = client(OpenAiConfig::new("http://127.0.0.1:1/v1").with_api_key("sk-very-secret"));
    let shown = format!("{client:?}");
    assert!(!shown.contains("sk-very-secret"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}

#[test]
fn invalid_base_url_is_rejected() {
    let err = OpenAiClient::new(OpenAiConfig::new("localhost:8000")).expect_err("no scheme");
    assert!(err.to_string().contains("localhost:8000"), "{err}");
}
