//! The server as clients see it: bound to `127.0.0.1:0`, with the real local executor and the real OpenAI-compatible
//! client talking to a scripted model server on loopback. Plus the official `openai` Python package as a client.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rlm::OpenAiConfig;
use rlm_inference_service::{AppState, ExecutorChoice, ServerConfig};
use rlm_test_support::{Reply, ScriptedServer, ScriptedServerBuilder};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[path = "server/conversations.rs"]
mod conversations;
#[path = "server/providers.rs"]
mod providers;

fn repl(code: &str) -> String {
    format!("```repl\n{code}\n```")
}

async fn models(builder: ScriptedServerBuilder) -> ScriptedServer {
    builder.start().await.expect("scripted server starts")
}

fn config(model_server: &ScriptedServer) -> ServerConfig {
    let openai = OpenAiConfig {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        max_retries: 1,
        ..OpenAiConfig::new(model_server.base_url())
    };
    ServerConfig {
        openai,
        default_model: Some("root".into()),
        sse_keep_alive: Duration::from_millis(100),
        shutdown_grace: Duration::from_secs(2),
        ..ServerConfig::default()
    }
}

struct Server {
    base: String,
    state: AppState,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(config: ServerConfig) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let state = AppState::new(config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(rlm_inference_service::serve(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        Self { base, state, http: reqwest::Client::new(), stop: Some(stop), task }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self.http.post(self.url(path)).json(body).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn post_raw(&self, path: &str, body: &'static str) -> (StatusCode, Value) {
        let response = self.http.post(self.url(path)).body(body).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn metrics(&self) -> String {
        self.http.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }

    /// Polls `GET /v1/runs/{id}` until its status is no longer `running`.
    async fn wait_finished(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, run) = self.get(&format!("/v1/runs/{id}?events=false")).await;
            assert_eq!(status, StatusCode::OK, "{run}");
            if run["status"] != "running" {
                return run;
            }
            assert!(Instant::now() < deadline, "run {id} still running: {run}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn shutdown(mut self) -> Duration {
        let started = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), &mut self.task).await.expect("server stops").unwrap().unwrap();
        started.elapsed()
    }
}

/// The value of a metric sample line (`name{labels} value`) in a Prometheus text exposition.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
        .parse()
        .unwrap()
}

/// One server-sent event.
#[derive(Debug, Default)]
struct Sse {
    event: Option<String>,
    id: Option<String>,
    data: String,
}

/// Parses a whole `text/event-stream` body; comment lines (keep-alives) are counted, not returned.
fn parse_sse(text: &str) -> (Vec<Sse>, usize) {
    let mut events = Vec::new();
    let mut comments = 0;
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut event = Sse::default();
        let mut has_field = false;
        for line in block.lines() {
            if line.starts_with(':') {
                comments += 1;
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            has_field = true;
            match field {
                "event" => event.event = Some(value.to_owned()),
                "id" => event.id = Some(value.to_owned()),
                "data" => {
                    if !event.data.is_empty() {
                        event.data.push('\n');
                    }
                    event.data.push_str(value);
                }
                _ => {}
            }
        }
        if has_field {
            events.push(event);
        }
    }
    (events, comments)
}

async fn read_sse(response: reqwest::Response) -> (Vec<Sse>, usize) {
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    let text = tokio::time::timeout(Duration::from_secs(20), response.text()).await.expect("stream ends").unwrap();
    parse_sse(&text)
}

/// One turn that reads the context and answers: a run accepts no answer before any code has run.
fn final_reply(answer: &str) -> Reply {
    Reply::text(format!("```repl\nprint(len(context))\n```\nFINAL({answer})"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_models_and_openai_shaped_404_and_405() {
    let model_server = models(ScriptedServer::builder()).await;
    let server = Server::start(config(&model_server)).await;

    let (status, body) = server.get("/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    let (status, body) = server.get("/ready").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready");

    let (status, body) = server.get("/v1/models").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = body["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["rlm", "rlm:root"]);
    let (status, body) = server.get("/v1/models/rlm:gpt-x").await;
    assert_eq!((status, body["id"].as_str()), (StatusCode::OK, Some("rlm:gpt-x")));
    let (status, body) = server.get("/v1/models/gpt-4o").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "model_not_found");

    let (status, body) = server.get("/no/such/route").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("/no/such/route"));
    let response = server.http.delete(server.url("/v1/chat/completions")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_exactly_the_routes() {
    use tower::ServiceExt;
    let model_server = models(ScriptedServer::builder()).await;
    let state = AppState::new(config(&model_server)).unwrap();
    let app = rlm_inference_service::app(state);

    let request = axum::http::Request::get("/openapi.json").body(axum::body::Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let document: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(document["openapi"], "3.1.0");

    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    let mut routes: Vec<(String, String)> =
        rlm_inference_service::ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    documented.sort();
    routes.sort();
    assert_eq!(documented, routes);

    // Every $ref points at a defined schema.
    let text = document.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &reference[..reference.find('"').unwrap()];
        assert!(document["components"]["schemas"].get(name).is_some(), "undefined schema {name}");
    }

    // Every documented route is routed: neither the 404 of unknown routes nor a 405.
    for (method, path) in &routes {
        let uri = path.replace("{id}", "00000000-0000-0000-0000-000000000000").replace("{model}", "rlm");
        let request = axum::http::Request::builder()
            .method(method.as_str())
            .uri(&uri)
            .body(axum::body::Body::from("{\"not\": \"valid\"}"))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        assert_ne!(body["error"]["code"], "not_found", "{method} {uri} is not routed");
        // Documented status codes include the one returned.
        let documented = &document["paths"][path][method.to_lowercase()]["responses"];
        assert!(documented.get(status.as_str()).is_some(), "{method} {uri} returned undocumented {status}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infer_is_seed_compatible() {
    let model_server = models(
        ScriptedServer::builder()
            .script("root", [Reply::text(format!("{}\nFINAL_VAR(n)", repl("n = len(context.split())")))]),
    )
    .await;
    let server = Server::start(config(&model_server)).await;

    let (status, body) = server.post("/infer", &json!({"query": "How many words?", "context": "a b c"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["answer"], "3");
    assert_eq!(body["model"], "root");
    assert_eq!(body["max_depth"], 1);

    let (status, body) = server.post("/infer", &json!({"context": "a b c"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "query is required");
    let (status, body) = server.post_raw("/infer", "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("JSON"), "{body}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_run_returns_the_answer_and_stays_inspectable() {
    let model_server = models(
        ScriptedServer::builder()
            .script(
                "big",
                [
                    Reply::text(repl("words = context['text'].split()\nprint(len(words))")).with_usage(100, 10, 0),
                    Reply::text(format!("{}\nFINAL_VAR(top)", repl("top = llm_query('pick one: ' + words[0])")))
                        .with_usage(120, 12, 0),
                ],
            )
            .rule(|r| (r.model == "small").then(|| Reply::text("alpha").with_usage(5, 1, 0))),
    )
    .await;
    let server = Server::start(config(&model_server)).await;

    let request = json!({
        "query": "Which word?",
        "context": {"text": "alpha beta"},
        "models": {"root": "big", "sub": "small"},
        "limits": {"max_iterations": 5, "timeout": 30},
        "executor": "local",
    });
    let (status, run) = server.post("/v1/runs", &request).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["status"], "completed");
    assert_eq!(run["answer"], "alpha");
    assert_eq!(run["finished_by"], "final_var");
    assert_eq!(run["iterations"], 2);
    assert_eq!(run["sub_calls"], 1);
    assert_eq!(run["model"], "big");
    assert_eq!(run["usage"]["by_model"]["big"]["prompt_tokens"], 220);
    assert_eq!(run["usage"]["by_model"]["small"]["completion_tokens"], 1);
    assert!(run.get("events").is_none());
    let id = run["run_id"].as_str().unwrap().to_owned();

    let (status, stored) = server.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stored["answer"], "alpha");
    assert_eq!(stored["query"], "Which word?");
    let types: Vec<&str> = stored["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["metadata", "model_call", "cell", "model_call", "sub_call", "cell", "final"]);
    assert_eq!(stored["events"][0]["run_id"], stored["root_run_id"]);
    let (_, list) = server.get("/v1/runs").await;
    assert_eq!(list["data"][0]["run_id"], id.as_str());

    // 404s: unknown, and not even an id.
    let (status, body) = server.get("/v1/runs/00000000-0000-0000-0000-000000000000").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("run_not_found")));
    let (status, _) = server.get("/v1/runs/nope/events").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // 400s, all in OpenAI's error shape.
    for bad in [
        json!({"context": "x"}),
        json!({"query": "q", "limits": {"max_iterations": 0}}),
        json!({"query": "q", "limits": {"timeout": -1}}),
        json!({"query": "q", "limits": {"no_such_limit": 1}}),
        json!({"query": "q", "executor": "wasm"}),
        json!({"query": "q", "executor": "gpu"}),
        json!({"query": "q", "surprise": true}),
    ] {
        let (status, body) = server.post("/v1/runs", &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} → {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, _) = server.post_raw("/v1/runs", "[1,").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_run_streams_its_events_in_order_and_ends_with_the_final_answer() {
    let model_server = models(
        ScriptedServer::builder()
            .script(
                "root",
                [
                    Reply::text(repl("x = llm_query('say hi')\nprint(x)")).with_delay(Duration::from_millis(300)),
                    Reply::text("FINAL(done: hi)").with_delay(Duration::from_millis(300)),
                ],
            )
            .rule(|r| (r.model == "mini").then(|| Reply::text("hi"))),
    )
    .await;
    let server = Server::start(config(&model_server)).await;

    let request = json!({"query": "greet", "background": true, "models": {"sub": "mini"}});
    let (status, started) = server.post("/v1/runs", &request).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["status"], "running");
    let id = started["run_id"].as_str().unwrap().to_owned();
    assert_eq!(started["links"]["events"], format!("/v1/runs/{id}/events"));

    // Subscribed while the run goes on: everything from the start, live, then the stream ends.
    let response = server.http.get(server.url(&format!("/v1/runs/{id}/events"))).send().await.unwrap();
    let (events, keep_alives) = read_sse(response).await;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(names, ["metadata", "model_call", "sub_call", "cell", "model_call", "final"]);
    assert!(keep_alives > 0, "a 600 ms run with 100 ms keep-alives sends comments");
    let ids: Vec<usize> = events.iter().map(|e| e.id.as_deref().unwrap().parse().unwrap()).collect();
    assert_eq!(ids, (0..events.len()).collect::<Vec<_>>());
    let last: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
    assert_eq!(last["type"], "final");
    assert_eq!(last["answer"], "done: hi");
    let sub_call: Value = serde_json::from_str(&events[2].data).unwrap();
    assert_eq!(sub_call["response"], "hi");

    let run = server.wait_finished(&id).await;
    assert_eq!(run["status"], "completed");
    assert_eq!(run["answer"], "done: hi");

    // After the end: a replay, and a resumption after the last seen event.
    let response = server.http.get(server.url(&format!("/v1/runs/{id}/events"))).send().await.unwrap();
    assert_eq!(read_sse(response).await.0.len(), 6);
    let response = server
        .http
        .get(server.url(&format!("/v1/runs/{id}/events")))
        .header("Last-Event-ID", "3")
        .send()
        .await
        .unwrap();
    let names: Vec<String> = read_sse(response).await.0.into_iter().map(|e| e.event.unwrap()).collect();
    assert_eq!(names, ["model_call", "final"]);
    server.shutdown().await;
}

fn freedonia_rule(model: &'static str) -> impl Fn(&rlm_test_support::RecordedRequest) -> Option<Reply> {
    // The answer comes out of the REPL's `context`, so it proves how the messages became the context.
    move |r| {
        (r.model == model).then(|| {
            Reply::text(format!(
                "{}\nFINAL_VAR(city)",
                repl("city = context.split('\\n')[1].split(' is ')[-1].rstrip('.')")
            ))
            .with_usage(50, 7, 0)
            .with_delay(Duration::from_millis(250))
        })
    }
}

fn freedonia_messages() -> Value {
    json!([
        {"role": "system", "content": "The capital of Freedonia is Fredville."},
        {"role": "user", "content": [{"type": "text", "text": "What is the capital of Freedonia?"}]},
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completions_answer_with_and_without_streaming() {
    let model_server =
        models(ScriptedServer::builder().rule(freedonia_rule("root")).rule(freedonia_rule("other"))).await;
    let server = Server::start(config(&model_server)).await;

    let (status, body) =
        server.post("/v1/chat/completions", &json!({"model": "rlm", "messages": freedonia_messages()})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "rlm");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], "Fredville");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 50);
    assert_eq!(body["usage"]["completion_tokens"], 7);
    assert_eq!(body["usage"]["total_tokens"], 57);
    assert_eq!(body["rlm"]["finished_by"], "final_var");
    // The root model saw the query, never the context.
    let seen = model_server.requests_for("root");
    assert!(seen[0].messages.iter().any(|(_, c)| c.contains("What is the capital of Freedonia?")));
    assert!(seen[0].messages.iter().all(|(_, c)| !c.contains("Fredville")));

    // rlm:<model> picks the root model; rlm_context replaces the messages as the context.
    let request = json!({
        "model": "rlm:other",
        "messages": [{"role": "user", "content": "Capital?"}],
        "rlm_context": "header\nThe capital is Sylvania City.",
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let response = server.http.post(server.url("/v1/chat/completions")).json(&request).send().await.unwrap();
    let (events, _) = read_sse(response).await;
    let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "rlm:other"));
    assert!(chunks.iter().all(|c| c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect::<Vec<_>>().concat();
    assert_eq!(content, "Sylvania City");
    let finish = chunks.iter().filter_map(|c| c["choices"][0]["finish_reason"].as_str()).collect::<Vec<_>>();
    assert_eq!(finish, ["stop"]);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["total_tokens"], 57);

    // Errors in OpenAI's shape.
    for (request, status, code) in [
        (json!({"model": "gpt-4o", "messages": freedonia_messages()}), StatusCode::NOT_FOUND, json!("model_not_found")),
        (
            json!({"model": "rlm", "messages": [{"role": "system", "content": "x"}]}),
            StatusCode::BAD_REQUEST,
            Value::Null,
        ),
        (json!({"messages": freedonia_messages()}), StatusCode::BAD_REQUEST, Value::Null),
        (json!({"model": "rlm", "messages": "hi"}), StatusCode::BAD_REQUEST, Value::Null),
    ] {
        let (got, body) = server.post("/v1/chat/completions", &request).await;
        assert_eq!(got, status, "{request} → {body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["type"].is_string() && body["error"]["message"].is_string(), "{body}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_is_an_openai_error_and_a_stream_error_chunk() {
    // The model keeps failing: the run ends with finished_by "error".
    let model_server = models(ScriptedServer::builder().rule(|_| Some(Reply::error(500, "model down")))).await;
    let server = Server::start(config(&model_server)).await;
    let request = json!({"model": "rlm", "messages": [{"role": "user", "content": "q"}]});
    let (status, body) = server.post("/v1/chat/completions", &request).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["error"]["type"], "server_error");

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let response = server.http.post(server.url("/v1/chat/completions")).json(&streamed).send().await.unwrap();
    let (events, _) = read_sse(response).await;
    let last: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
    assert_eq!(last["error"]["type"], "server_error", "{last}");

    let (status, run) = server.post("/v1/runs", &json!({"query": "q"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(run["status"], "failed");
    assert_eq!(run["finished_by"], "error");
    assert!(run["error"].as_str().is_some_and(|e| !e.is_empty()), "{run}");
    assert_eq!(run["answer"], Value::Null);

    let (status, body) = server.post("/infer", &json!({"query": "q"})).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["success"], false);
    let metrics = server.metrics().await;
    assert_eq!(sample(&metrics, "rlm_runs_finished_total{finished_by=\"error\"}"), 4.0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_guards_everything_but_health_and_ready() {
    let model_server = models(ScriptedServer::builder()).await;
    let server = Server::start(ServerConfig { api_token: Some("s3cret".into()), ..config(&model_server) }).await;

    assert_eq!(server.get("/health").await.0, StatusCode::OK);
    assert_eq!(server.get("/ready").await.0, StatusCode::OK);
    for (method, path) in [
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/metrics"),
        ("POST", "/infer"),
        // The viewer: the page, its assets, its data and its live updates.
        ("GET", "/ui"),
        ("GET", "/ui/"),
        ("GET", "/ui/app.js"),
        ("GET", "/ui/api/runs"),
        ("GET", "/ui/api/runs/00000000-0000-0000-0000-000000000000/events"),
        ("GET", "/ui/api/stream"),
        ("GET", "/ui/no/such/thing"),
    ] {
        for token in [None, Some("Bearer wrong"), Some("Bearer s3cre"), Some("s3cret")] {
            let mut request = server.http.request(method.parse().unwrap(), server.url(path)).body("{}");
            if let Some(token) = token {
                request = request.header("Authorization", token);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{method} {path} with {token:?}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "invalid_api_key");
        }
    }
    for path in ["/v1/models", "/ui", "/ui/api/runs"] {
        let response = server.http.get(server.url(path)).header("Authorization", "Bearer s3cret").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_413() {
    let model_server = models(ScriptedServer::builder()).await;
    let server = Server::start(ServerConfig { max_body_bytes: 1024, ..config(&model_server) }).await;
    let big = json!({"query": "q", "context": "x".repeat(4096)});
    for path in ["/v1/runs", "/v1/chat/completions", "/infer"] {
        let (status, body) = server.post(path, &big).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{path}: {body}");
    }
    let (_, body) = server.post("/v1/runs", &big).await;
    assert_eq!(body["error"]["code"], "request_too_large");
    assert!(model_server.requests().is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_cap_gives_429_and_cancel_frees_the_slot() {
    let model_server =
        models(ScriptedServer::builder().rule(|_| Some(final_reply("late").with_delay(Duration::from_secs(30))))).await;
    let server = Server::start(ServerConfig { max_concurrent_runs: 1, ..config(&model_server) }).await;

    let (status, started) = server.post("/v1/runs", &json!({"query": "slow", "background": true})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = started["run_id"].as_str().unwrap().to_owned();

    let response = server
        .http
        .post(server.url("/v1/chat/completions"))
        .json(&json!({"model": "rlm", "messages": [{"role": "user", "content": "q"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(server.post("/v1/runs", &json!({"query": "q"})).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(server.post("/infer", &json!({"query": "q"})).await.0, StatusCode::TOO_MANY_REQUESTS);
    let (status, ready) = server.get("/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready["reason"].as_str().unwrap().contains("busy"), "{ready}");
    let metrics = server.metrics().await;
    assert_eq!(sample(&metrics, "rlm_runs_rejected_total{reason=\"busy\"}"), 3.0);
    assert_eq!(sample(&metrics, "rlm_runs_in_flight"), 1.0);

    let (status, _) = server.post(&format!("/v1/runs/{id}/cancel"), &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let run = server.wait_finished(&id).await;
    assert_eq!(run["status"], "cancelled");
    assert_eq!(run["finished_by"], "cancelled");
    assert_eq!(server.get("/ready").await.0, StatusCode::OK);
    server.shutdown().await;
}

/// Sends `body` to `path` over a raw connection, waits until the model server got the run's first request, then
/// closes the connection.
async fn disconnect_during(server: &Server, model_server: &ScriptedServer, path: &str, body: &Value) {
    let address = server.base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while model_server.requests().is_empty() {
        assert!(Instant::now() < deadline, "the run never called the model");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut buffer = [0u8; 256];
    // Nothing has been answered yet (a streamed response may have sent its headers and role chunk).
    if path.ends_with("completions") && body.contains("\"stream\":true") {
        let n = socket.read(&mut buffer).await.unwrap();
        assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 200"));
    }
    drop(socket);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_disconnect_cancels_its_run() {
    for (path, body) in [
        ("/v1/chat/completions", json!({"model": "rlm", "messages": [{"role": "user", "content": "q"}]})),
        (
            "/v1/chat/completions",
            json!({"model": "rlm", "stream": true, "messages": [{"role": "user", "content": "q"}]}),
        ),
        ("/v1/runs", json!({"query": "q"})),
        ("/infer", json!({"query": "q"})),
    ] {
        let model_server =
            models(ScriptedServer::builder().rule(|_| Some(final_reply("never").with_delay(Duration::from_secs(60)))))
                .await;
        let server = Server::start(config(&model_server)).await;
        let started = Instant::now();
        disconnect_during(&server, &model_server, path, &body).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let run = loop {
            let (_, list) = server.get("/v1/runs").await;
            let run = list["data"][0].clone();
            if run["status"] != "running" {
                break run;
            }
            assert!(Instant::now() < deadline, "{path}: the run was not cancelled: {run}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(run["status"], "cancelled", "{path}: {run}");
        eprintln!("{path} {body}: cancelled {:?} after the request was sent", started.elapsed());
        let metrics = server.metrics().await;
        assert_eq!(sample(&metrics, "rlm_runs_finished_total{finished_by=\"cancelled\"}"), 1.0);
        assert_eq!(sample(&metrics, "rlm_runs_in_flight"), 0.0);
        assert_eq!(server.state.runs_in_flight(), 0);
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_runs_durations_and_tokens() {
    let model_server =
        models(ScriptedServer::builder().rule(|r| (r.model == "root").then(|| final_reply("ok").with_usage(40, 4, 8))))
            .await;
    let server = Server::start(config(&model_server)).await;
    for _ in 0..3 {
        let (status, run) = server.post("/v1/runs", &json!({"query": "q"})).await;
        assert_eq!((status, run["answer"].as_str()), (StatusCode::OK, Some("ok")));
    }
    let metrics = server.metrics().await;
    assert_eq!(sample(&metrics, "rlm_runs_started_total"), 3.0);
    assert_eq!(sample(&metrics, "rlm_runs_finished_total{finished_by=\"final\"}"), 3.0);
    assert_eq!(sample(&metrics, "rlm_runs_in_flight"), 0.0);
    assert_eq!(sample(&metrics, "rlm_run_duration_seconds_count"), 3.0);
    assert_eq!(sample(&metrics, "rlm_run_duration_seconds_bucket{le=\"+Inf\"}"), 3.0);
    assert_eq!(sample(&metrics, "rlm_model_tokens_total{model=\"root\",kind=\"prompt\"}"), 120.0);
    assert_eq!(sample(&metrics, "rlm_model_tokens_total{model=\"root\",kind=\"completion\"}"), 12.0);
    assert_eq!(sample(&metrics, "rlm_model_tokens_total{model=\"root\",kind=\"cached\"}"), 24.0);
    assert_eq!(sample(&metrics, "rlm_model_calls_total{model=\"root\"}"), 3.0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_remote_executor_is_reported_not_ready_instead_of_faked() {
    let model_server = models(ScriptedServer::builder()).await;
    let executor = ExecutorChoice::Remote(rlm_executor_remote::RemoteConfig::new("http://127.0.0.1:9/sandbox"));
    let server = Server::start(ServerConfig { executor, ..config(&model_server) }).await;
    let (status, body) = server.get("/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["reason"].as_str().unwrap().contains("remote executor"), "{body}");
    assert_eq!(server.get("/health").await.0, StatusCode::OK);
    let (status, body) = server.post("/v1/runs", &json!({"query": "q"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (status, _) = server.post("/v1/runs", &json!({"query": "q", "executor": "local"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(model_server.requests().is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_execute_in_the_remote_sandbox_when_one_is_configured() {
    let module = rlm_executor_wasm::WasmConfig::default().module_path;
    if !module.exists() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/fetch-python-wasm.sh");
        assert!(std::process::Command::new("bash").arg(script).status().unwrap().success());
    }
    let wasm = Arc::new(rlm_executor_wasm::WasmExecutor::new(rlm_executor_wasm::WasmConfig::default()).unwrap());
    let sandbox = rlm_sandbox_service::Sandbox::new(wasm, rlm_sandbox_service::SandboxConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(rlm_sandbox_service::serve(listener, sandbox, std::future::pending()));

    let code = "import sys\nn = len(context)\nwhere = sys.platform\nreply = llm_query('ping')";
    let model_server = models(
        ScriptedServer::builder()
            .script("root", [Reply::text(format!("```repl\n{code}\n```\nFINAL(done)"))])
            .rule(|_| Some(Reply::text("pong"))),
    )
    .await;
    let executor = ExecutorChoice::Remote(rlm_executor_remote::RemoteConfig::new(&sandbox_url));
    let server = Server::start(ServerConfig { executor, ..config(&model_server) }).await;
    assert_eq!(server.get("/ready").await.0, StatusCode::OK);
    let (status, body) =
        server.post("/v1/runs", &json!({"query": "q", "context": "12345", "executor": "remote"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["answer"], "done");
    // The cell ran in the sandbox (CPython for WASI), and its sub-call came back to this side.
    let run: uuid::Uuid = body["run_id"].as_str().unwrap().parse().unwrap();
    let (events, _) = server.state.run(run).unwrap().events_from(0);
    let platform = events.iter().find_map(|e| match &e.body {
        rlm::EventBody::Metadata(meta) => Some(meta.executor.clone()),
        _ => None,
    });
    assert_eq!(platform.as_deref(), Some("remote"));
    assert_eq!(model_server.requests().iter().filter(|r| r.last_user_message() == Some("ping")).count(), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_are_stored_in_the_trace_database_when_one_is_configured() {
    let database = rlm_test_support::PostgresServer::start().expect("PostgreSQL starts (scripts/setup-postgres.sh)");
    let spool = tempfile::tempdir().unwrap();
    let trace_db = rlm_trace_postgres::PostgresSinkConfig {
        spool_dir: spool.path().to_owned(),
        ..rlm_trace_postgres::PostgresSinkConfig::new(database.url())
    };
    let model_server = models(
        ScriptedServer::builder()
            .script("root", [Reply::text("```repl\nx = llm_query('hi')\n```"), Reply::text("FINAL(stored)")])
            .rule(|_| Some(Reply::text("hello"))),
    )
    .await;
    let server = Server::start(ServerConfig {
        trace_db: Some(trace_db),
        sub_model: Some("sub".into()),
        ..config(&model_server)
    })
    .await;
    let (status, body) = server.post("/v1/runs", &json!({"query": "q", "context": "c"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let run: uuid::Uuid = body["run_id"].as_str().unwrap().parse().unwrap();
    let (events, _) = server.state.run(run).unwrap().events_from(0);
    let root_run_id = events[0].run_id;
    // Shutting down drains the writer.
    server.shutdown().await;
    let pool = sqlx::PgPool::connect(&database.url()).await.unwrap();
    let stored: i64 = sqlx::query_scalar("select count(*) from rlm_events").fetch_one(&pool).await.unwrap();
    assert_eq!(stored, events.len() as i64);
    let status: String = sqlx::query_scalar("select status from rlm_runs where run_id = $1")
        .bind(root_run_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "final");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_runs_then_cancels_them_after_the_grace_period() {
    let model_server = models(
        ScriptedServer::builder()
            .script("quick", [final_reply("made it").with_delay(Duration::from_millis(300))])
            .rule(|_| Some(final_reply("never").with_delay(Duration::from_secs(60)))),
    )
    .await;
    let server =
        Server::start(ServerConfig { shutdown_grace: Duration::from_millis(800), ..config(&model_server) }).await;
    let (_, quick) = server.post("/v1/runs", &json!({"query": "q", "model": "quick", "background": true})).await;
    let (_, slow) = server.post("/v1/runs", &json!({"query": "q", "background": true})).await;
    let state = server.state.clone();
    let took = server.shutdown().await;
    assert!(took >= Duration::from_millis(700) && took < Duration::from_secs(10), "{took:?}");
    assert!(state.is_shutting_down());
    let status = |run: &Value| state.run(run["run_id"].as_str().unwrap().parse().unwrap()).unwrap().status();
    assert_eq!(status(&quick), rlm_inference_service::RunStatus::Completed);
    assert_eq!(status(&slow), rlm_inference_service::RunStatus::Cancelled);
    assert_eq!(state.runs_in_flight(), 0);
}

/// A virtual environment with the official `openai` package, made once and kept under the target directory.
fn openai_venv() -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let venv = root.join("openai-sdk-venv");
    let python = venv.join("bin").join("python");
    let works = |python: &Path| {
        std::process::Command::new(python).args(["-c", "import openai"]).output().is_ok_and(|o| o.status.success())
    };
    if works(&python) {
        return python;
    }
    let staging = root.join(format!("openai-sdk-venv.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let run = |command: &mut std::process::Command| {
        let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
        assert!(output.status.success(), "{command:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    };
    run(std::process::Command::new("python3").arg("-m").arg("venv").arg(&staging));
    run(std::process::Command::new(staging.join("bin").join("python")).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "openai",
    ]));
    // Another test process may have won the race; either environment works (only bin/python is used).
    if std::fs::rename(&staging, &venv).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(works(&python), "the openai package is not importable from {}", python.display());
    python
}

const SDK_SCRIPT: &str = r#"
import json, sys
import openai

client = openai.OpenAI(base_url=sys.argv[1], api_key=sys.argv[2], max_retries=0)
messages = [
    {"role": "system", "content": "The capital of Freedonia is Fredville."},
    {"role": "user", "content": "What is the capital of Freedonia?"},
]
plain = client.chat.completions.create(model="rlm", messages=messages)
pieces, usage, finish, roles = [], None, [], []
stream = client.chat.completions.create(
    model="rlm:other", messages=messages, stream=True, stream_options={"include_usage": True}
)
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage.total_tokens
    for choice in chunk.choices:
        if choice.delta.role:
            roles.append(choice.delta.role)
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            finish.append(choice.finish_reason)
try:
    client.chat.completions.create(model="gpt-4o", messages=messages)
    missing = None
except openai.NotFoundError as error:
    missing = error.status_code
try:
    openai.OpenAI(base_url=sys.argv[1], api_key="wrong", max_retries=0).models.list()
    unauthorized = None
except openai.AuthenticationError as error:
    unauthorized = error.status_code
print(json.dumps({
    "answer": plain.choices[0].message.content,
    "finish_reason": plain.choices[0].finish_reason,
    "usage": plain.usage.total_tokens,
    "streamed": "".join(pieces),
    "stream_roles": roles,
    "stream_finish": finish,
    "stream_usage": usage,
    "models": [m.id for m in client.models.list()],
    "missing_model_status": missing,
    "unauthorized_status": unauthorized,
}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_python_package_talks_to_the_server() {
    let python = tokio::task::spawn_blocking(openai_venv).await.unwrap();
    let model_server =
        models(ScriptedServer::builder().rule(freedonia_rule("root")).rule(freedonia_rule("other"))).await;
    let server = Server::start(ServerConfig { api_token: Some("sdk-token".into()), ..config(&model_server) }).await;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("client.py");
    std::fs::write(&script, SDK_SCRIPT).unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(&python)
            .arg(&script)
            .arg(server.url("/v1"))
            .arg("sdk-token")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("OPENAI_API_KEY")
            .output(),
    )
    .await
    .expect("the SDK script finishes")
    .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["answer"], "Fredville", "{result}");
    assert_eq!(result["finish_reason"], "stop");
    assert_eq!(result["usage"], 57);
    assert_eq!(result["streamed"], "Fredville");
    assert_eq!(result["stream_roles"], json!(["assistant"]));
    assert_eq!(result["stream_finish"], json!(["stop"]));
    assert_eq!(result["stream_usage"], 57);
    assert_eq!(result["models"], json!(["rlm", "rlm:root"]));
    assert_eq!(result["missing_model_status"], 404);
    assert_eq!(result["unauthorized_status"], 401);
    server.shutdown().await;
}

/// Reads server-sent events one at a time from a response that stays open.
struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        Self { response, buffer: String::new() }
    }

    /// The `data` of the next event (comments skipped), waiting at most until `deadline`.
    async fn next_data(&mut self, deadline: Instant) -> Value {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (events, _) = parse_sse(&block);
                if let Some(event) = events.into_iter().next() {
                    return serde_json::from_str(&event.data).unwrap();
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.response.chunk()).await.expect("an update in time").unwrap();
            self.buffer.push_str(&String::from_utf8_lossy(&chunk.expect("the stream stays open")));
        }
    }
}

/// The viewer's run list at `/ui/api/runs`.
async fn ui_runs(server: &Server) -> Vec<Value> {
    let (status, body) = server.get("/ui/api/runs").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["runs"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_at_ui_shows_a_run_with_its_counts_and_events() {
    let model_server = models(
        ScriptedServer::builder()
            .script(
                "big",
                [
                    Reply::text(repl("words = context['text'].split()\nprint(len(words))")).with_usage(100, 10, 0),
                    Reply::text(format!("{}\nFINAL_VAR(top)", repl("top = llm_query('pick one: ' + words[0])")))
                        .with_usage(120, 12, 0),
                ],
            )
            .rule(|r| (r.model == "small").then(|| Reply::text("alpha").with_usage(5, 1, 0))),
    )
    .await;
    let server = Server::start(config(&model_server)).await;
    assert!(ui_runs(&server).await.is_empty());

    let request =
        json!({"query": "Which word?", "context": {"text": "alpha beta"}, "models": {"root": "big", "sub": "small"}});
    let (status, run) = server.post("/v1/runs", &request).await;
    assert_eq!((status, run["answer"].as_str()), (StatusCode::OK, Some("alpha")), "{run}");
    let root = run["root_run_id"].as_str().unwrap().to_owned();

    // The page, mounted at /ui with its assets.
    let page = server.http.get(server.url("/ui")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<meta name="rlm-base" content="/ui/">"#), "{html}");
    let slash = server.http.get(server.url("/ui/")).send().await.unwrap();
    assert_eq!((slash.status(), slash.url().path()), (StatusCode::OK, "/ui"), "/ui/ redirects to the page");
    for asset in ["/ui/app.js", "/ui/style.css"] {
        assert_eq!(server.http.get(server.url(asset)).send().await.unwrap().status(), StatusCode::OK, "{asset}");
    }

    // The run list: the run, by its root_run_id, with the counts of its trace.
    let runs = ui_runs(&server).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    let listed = &runs[0];
    assert_eq!(listed["run_id"], root.as_str());
    assert_eq!(listed["source"], "rlm serve");
    assert_eq!(listed["status"], "finished");
    assert_eq!(listed["query"], "Which word?");
    assert_eq!(listed["answer"], "alpha");
    assert_eq!(listed["finished_by"], "final_var");
    assert_eq!(listed["root_model"], "big");
    assert_eq!((listed["iterations"].as_u64(), listed["sub_calls"].as_u64()), (Some(2), Some(1)));
    assert_eq!(listed["events"], 7);
    assert_eq!(listed["tokens"], 100 + 10 + 120 + 12 + 5 + 1);
    assert_eq!(listed["errors"], 0);

    // Its outline and its full events: the same as the run API's trajectory.
    let (status, outline) = server.get(&format!("/ui/api/runs/{root}/outline")).await;
    assert_eq!(status, StatusCode::OK, "{outline}");
    let kinds: Vec<&str> = outline["items"].as_array().unwrap().iter().map(|o| o["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["metadata", "model_call", "cell", "model_call", "sub_call", "cell", "final"]);
    assert_eq!(outline["total"], 7);
    let (status, events) = server.get(&format!("/ui/api/runs/{root}/events?offset=0&limit=100")).await;
    assert_eq!(status, StatusCode::OK, "{events}");
    assert_eq!((events["offset"].as_u64(), events["total"].as_u64()), (Some(0), Some(7)));
    let (_, stored) = server.get(&format!("/v1/runs/{}", run["run_id"].as_str().unwrap())).await;
    assert_eq!(events["items"], stored["events"]);
    let (_, page) = server.get(&format!("/ui/api/runs/{root}/events?offset=4&limit=2")).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["items"][0]["type"], "sub_call");
    assert_eq!(page["items"][0]["response"], "alpha");

    // Unknown runs are 404s, as in the viewer.
    let (status, _) = server.get(&format!("/ui/api/runs/{}/events", uuid::Uuid::new_v4())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_follows_a_background_run_live() {
    let model_server = models(ScriptedServer::builder().script(
        "root",
        [
            Reply::text(repl("x = 1\nprint(x)")).with_delay(Duration::from_millis(400)),
            Reply::text(repl("y = x + 1\nprint(y)")).with_delay(Duration::from_millis(400)),
            Reply::text("FINAL(two)").with_delay(Duration::from_millis(400)),
        ],
    ))
    .await;
    let server = Server::start(config(&model_server)).await;
    // A page connected before the run starts.
    let response = server.http.get(server.url("/ui/api/stream")).send().await.unwrap();
    let mut stream = SseReader::new(response);

    let (status, started) = server.post("/v1/runs", &json!({"query": "count", "background": true})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let id = started["run_id"].as_str().unwrap().to_owned();

    // One update per event as it is recorded, while the run is still running.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut counts = Vec::new();
    let mut root = None;
    let mut seen_running = false;
    loop {
        let update = stream.next_data(deadline).await;
        assert_eq!(update["type"], "events", "{update}");
        let run_id = update["run_id"].as_str().unwrap().to_owned();
        assert_eq!(*root.get_or_insert_with(|| run_id.clone()), run_id);
        let events = update["events"].as_u64().unwrap();
        if counts.last() == Some(&events) {
            break; // the run ended: its status changed, no new event
        }
        counts.push(events);
        if !seen_running && events >= 2 {
            // Mid-run: the run list shows it running, and its events so far are served.
            let runs = ui_runs(&server).await;
            let listed = runs.iter().find(|r| r["run_id"] == run_id.as_str()).unwrap();
            if listed["status"] == "running" {
                seen_running = true;
                assert!(listed["events"].as_u64().unwrap() >= events);
                let (status, outline) = server.get(&format!("/ui/api/runs/{run_id}/outline")).await;
                assert_eq!(status, StatusCode::OK);
                assert_eq!(outline["items"][0]["type"], "metadata");
            }
        }
    }
    // metadata, 3 × model_call, 2 × cell, final: each announced with the tree's new size, in order.
    assert_eq!(counts, (1..=7).collect::<Vec<u64>>());
    assert!(seen_running, "the run was never listed as running");
    let run = server.wait_finished(&id).await;
    assert_eq!(run["root_run_id"].as_str(), root.as_deref());
    let runs = ui_runs(&server).await;
    assert_eq!(runs[0]["status"], "finished");
    assert_eq!(runs[0]["answer"], "two");
    assert_eq!(runs[0]["iterations"], 3);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_evicted_from_the_registry_leave_the_viewer_too() {
    let model_server = models(ScriptedServer::builder().rule(|r| (r.model == "root").then(|| final_reply("ok")))).await;
    let server = Server::start(ServerConfig { max_stored_runs: 2, ..config(&model_server) }).await;
    let response = server.http.get(server.url("/ui/api/stream")).send().await.unwrap();
    let mut stream = SseReader::new(response);

    let mut roots = Vec::new();
    for n in 0..3 {
        let (status, run) = server.post("/v1/runs", &json!({"query": format!("q{n}")})).await;
        assert_eq!(status, StatusCode::OK, "{run}");
        roots.push(run["root_run_id"].as_str().unwrap().to_owned());
    }
    // The oldest run is gone from the registry and from the viewer: listing, outline and events.
    let listed: Vec<String> = ui_runs(&server).await.iter().map(|r| r["run_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(listed, roots[1..]);
    for what in ["outline", "events"] {
        let (status, _) = server.get(&format!("/ui/api/runs/{}/{what}", roots[0])).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{what}");
        let (status, _) = server.get(&format!("/ui/api/runs/{}/{what}", roots[2])).await;
        assert_eq!(status, StatusCode::OK, "{what}");
    }
    let (_, list) = server.get("/v1/runs").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    // Open pages were told.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let update = stream.next_data(deadline).await;
        if update["type"] == "removed" {
            assert_eq!(update["run_id"], roots[0].as_str());
            break;
        }
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_recursive_model_is_called_at_its_own_endpoint() {
    let root = models(
        ScriptedServer::builder()
            .script("root", [Reply::text(format!("{}\nFINAL_VAR(x)", repl("x = llm_query('hi')")))]),
    )
    .await;
    let sub = models(ScriptedServer::builder().rule(|_| Some(Reply::text("from the sub endpoint")))).await;
    let sub_url = sub.base_url();
    let env = |name: &str| match name {
        "LLM_RECURSIVE_MODEL" => Some("small".to_owned()),
        "LLM_RECURSIVE_BASE_URL" => Some(sub_url.clone()),
        _ => None,
    };
    let server = Server::start(config(&root).with_seed_env(env)).await;
    let (status, body) = server.post("/v1/runs", &json!({"query": "q", "context": "c"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["answer"], "from the sub endpoint", "{body}");
    assert_eq!(sub.requests_for("small").len(), 1);
    assert!(root.requests_for("small").is_empty());
    assert_eq!(sub.requests_for("root").len(), 0);
    server.shutdown().await;
}

async fn finished_by(server: &Server, context: &str) -> String {
    let (status, run) = server.post("/v1/runs", &json!({"query": "Which path?", "context": context})).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    run["finished_by"].as_str().unwrap().to_owned()
}

/// The direct-prompt cap (`rlm serve --local` sets `rlm run`'s for local models) sends a context that fits the
/// default model's window down the RLM path once its prompt would be longer than the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_direct_prompt_cap_sends_larger_contexts_to_the_rlm() {
    // Taken as the answer on the direct path; run as code on the RLM path.
    let reply = format!("{}\nFINAL_VAR(path)", repl("path = 'rlm'"));
    let model_server =
        models(ScriptedServer::builder().rule(move |r| (r.model == "root").then(|| Reply::text(reply.clone())))).await;
    let long = "a line of the long context. ".repeat(150);
    let capped = Server::start(ServerConfig {
        context_window: Some(100_000),
        direct_max_tokens: Some(500),
        ..config(&model_server)
    })
    .await;
    assert_eq!(finished_by(&capped, "short").await, "direct");
    assert_eq!(finished_by(&capped, &long).await, "final_var");
    capped.shutdown().await;

    let uncapped = Server::start(ServerConfig { context_window: Some(100_000), ..config(&model_server) }).await;
    assert_eq!(finished_by(&uncapped, &long).await, "direct");
    uncapped.shutdown().await;
}
