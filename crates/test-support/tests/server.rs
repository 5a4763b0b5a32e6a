//! The scripted server over real loopback sockets, driven by a minimal HTTP/1.1 client.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers may panic

use std::time::{Duration, Instant};

use rlm_test_support::{Reply, ScriptedServer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct HttpResponse {
    status: u16,
    headers: String,
    body: String,
}

impl HttpResponse {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("JSON body")
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
        })
    }
}

/// One request on a fresh connection with `Connection: close`; reads the response to EOF.
async fn http(server: &ScriptedServer, method: &str, path: &str, extra_headers: &str, body: &str) -> HttpResponse {
    let authority = server.base_url().trim_start_matches("http://").trim_end_matches("/v1").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&authority).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{extra_headers}\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let raw = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("header/body separator");
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let status = status_line.split(' ').nth(1).expect("status code").parse().expect("numeric status");
    HttpResponse { status, headers: headers.to_owned(), body: body.to_owned() }
}

async fn chat(server: &ScriptedServer, body: Value) -> HttpResponse {
    http(server, "POST", "/v1/chat/completions", "Authorization: Bearer sk-test\r\n", &body.to_string()).await
}

fn chat_body(model: &str, user: &str) -> Value {
    json!({"model": model, "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": user}]})
}

#[tokio::test]
async fn scripts_rules_and_recording() {
    let server = ScriptedServer::builder()
        .script("root", [Reply::text("one").with_usage(10, 2, 4), Reply::text("two")])
        .rule(|req| {
            req.model
                .starts_with("sub")
                .then(|| Reply::text(format!("echo {}", req.last_user_message().unwrap_or_default())))
        })
        .start()
        .await
        .expect("start");

    let first = chat(&server, chat_body("root", "hi")).await;
    assert_eq!(first.status, 200);
    let first = first.json();
    assert_eq!(first["object"], "chat.completion");
    assert_eq!(first["model"], "root");
    assert_eq!(first["choices"][0]["message"]["role"], "assistant");
    assert_eq!(first["choices"][0]["message"]["content"], "one");
    assert_eq!(first["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        first["usage"],
        json!({"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12, "prompt_tokens_details": {"cached_tokens": 4}})
    );
    assert_eq!(server.remaining_script("root"), 1);

    let second = chat(&server, chat_body("root", "again")).await.json();
    assert_eq!(second["choices"][0]["message"]["content"], "two");
    // Estimated usage: "be brief" + "again" = 13 chars -> 4 tokens; "two" -> 1 token.
    assert_eq!(second["usage"]["prompt_tokens"], 4);
    assert_eq!(second["usage"]["completion_tokens"], 1);

    let sub = chat(&server, chat_body("sub-1", "ping")).await.json();
    assert_eq!(sub["choices"][0]["message"]["content"], "echo ping");

    let missing = chat(&server, chat_body("root", "third")).await;
    assert_eq!(missing.status, 500);
    assert_eq!(missing.json()["error"]["message"], "scripted server: no reply for model \"root\"");

    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    assert_eq!(requests[0].system_message(), Some("be brief"));
    assert_eq!(requests[0].last_user_message(), Some("hi"));
    assert_eq!(requests[0].authorization.as_deref(), Some("Bearer sk-test"));
    assert_eq!(server.requests_for("sub-1").len(), 1);

    let models = http(&server, "GET", "/v1/models", "", "").await.json();
    assert_eq!(models["data"][0]["id"], "root");
    server.shutdown().await;
}

#[tokio::test]
async fn fail_next_errors_and_bad_json() {
    let server = ScriptedServer::builder()
        .script("m", [Reply::text("ok")])
        .fail_next(2, Reply::error(429, "slow down").with_retry_after(1))
        .start()
        .await
        .expect("start");
    for _ in 0..2 {
        let limited = chat(&server, chat_body("m", "x")).await;
        assert_eq!(limited.status, 429);
        assert_eq!(limited.header("retry-after").as_deref(), Some("1"));
        let error = limited.json();
        assert_eq!(error["error"]["message"], "slow down");
        assert_eq!(error["error"]["code"], "rate_limit_exceeded");
    }
    assert_eq!(chat(&server, chat_body("m", "x")).await.json()["choices"][0]["message"]["content"], "ok");

    let bad = http(&server, "POST", "/v1/chat/completions", "", "{not json").await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"]["message"].as_str().is_some_and(|m| m.contains("not valid JSON")));
    assert_eq!(server.requests().len(), 3, "bad JSON is not recorded");
}

#[tokio::test]
async fn streaming_sends_chunks_usage_and_done() {
    let server = ScriptedServer::builder().script("m", [Reply::text("hello world")]).start().await.expect("start");
    let mut body = chat_body("m", "x");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let response = chat(&server, body).await;
    assert_eq!(response.status, 200);
    assert!(response.header("content-type").is_some_and(|v| v.starts_with("text/event-stream")));
    let data: Vec<&str> = response.body.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(data.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> =
        data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).expect("chunk JSON")).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(content, "hello world");
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"));
    assert_eq!(chunks.last().expect("usage chunk")["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn concurrency_and_latency_are_measured() {
    let server = ScriptedServer::builder()
        .rule(|_| Some(Reply::text("ok").with_delay(Duration::from_millis(200))))
        .latency(Duration::from_millis(50))
        .start()
        .await
        .expect("start");
    let started = Instant::now();
    let (r1, r2, r3, r4) = tokio::join!(
        chat(&server, chat_body("a", "x")),
        chat(&server, chat_body("b", "x")),
        chat(&server, chat_body("a", "x")),
        chat(&server, chat_body("b", "x")),
    );
    let responses = [r1, r2, r3, r4];
    assert!(responses.iter().all(|r| r.status == 200));
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(started.elapsed() < Duration::from_millis(900), "requests ran concurrently");
    assert_eq!(server.max_concurrent(), 4);
    assert_eq!(server.max_concurrent_for("a"), 2);
    assert_eq!(server.max_concurrent_for("b"), 2);
    assert_eq!(server.max_concurrent_for("c"), 0);
    drop(server); // stopping on drop must not panic
}
