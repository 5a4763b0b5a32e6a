//! The sandbox service over real HTTP on loopback, running cells in real wasm sandboxes (and, where a test needs a
//! cell that behaves in one exact way, in a scripted executor).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::StatusCode;
use rlm_executor_wasm::{WasmConfig, WasmExecutor};
use rlm_protocol::{
    AbortHandle, CellOutcome, ContextInfo, Executor, ReplSession, SessionSpec, SubCall, SubCallHost, SubCallKind,
};
use rlm_sandbox_service::{Sandbox, SandboxConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, oneshot};

struct Service {
    url: String,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// A session as its creator knows it.
struct Session {
    id: String,
    secret: String,
}

impl Service {
    async fn start(config: SandboxConfig) -> Self {
        ensure_module();
        let executor = Arc::new(WasmExecutor::new(WasmConfig::default()).expect("wasm executor"));
        Self::with_executor(executor, config).await
    }

    async fn with_executor(executor: Arc<dyn Executor>, config: SandboxConfig) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sandbox = Sandbox::new(executor, config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(rlm_sandbox_service::serve(listener, sandbox, async {
            let _ = stopped.await;
        }));
        Self { url, http: reqwest::Client::new(), stop: Some(stop), task }
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self.http.post(format!("{}{path}", self.url)).json(&body).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let response = self.http.get(format!("{}{path}", self.url)).send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    }

    async fn session(&self, context: Value) -> Session {
        let (status, body) = self.post("/v1/sessions", json!({"context": context})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let secret = body["session_secret"].as_str().unwrap().to_owned();
        assert!(secret.len() >= 32, "{body}");
        Session { id: body["session_id"].as_str().unwrap().to_owned(), secret }
    }

    /// A request about `session`, with its secret.
    fn on(&self, method: reqwest::Method, session: &Session, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/v1/sessions/{}{path}", self.url, session.id))
            .header("x-session-secret", &session.secret)
    }

    async fn cell(&self, session: &Session, code: &str) -> (StatusCode, Value) {
        let response = self.on(reqwest::Method::POST, session, "/cells").json(&json!({"code": code})).send().await;
        let response = response.unwrap();
        (response.status(), response.json().await.unwrap_or(Value::Null))
    }

    async fn stop(mut self) {
        let _ = self.stop.take().map(|stop| stop.send(()));
        self.task.await.unwrap().unwrap();
    }
}

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn ensure_module() {
    let path = WasmConfig::default().module_path;
    if !path.exists() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/fetch-python-wasm.sh");
        let status = std::process::Command::new("bash").arg(script).status().expect("run the fetch script");
        assert!(status.success(), "scripts/fetch-python-wasm.sh failed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed_execute_contract_and_status_codes() {
    let service = Service::start(SandboxConfig::default()).await;
    let (status, body) = service.post("/execute", json!({"code": "x = 6 * 7\nprint(x)", "context": "abc"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["success"], true);
    assert_eq!(body["stdout"], "42\n");
    assert_eq!(body["locals"]["x"], 42);
    assert!(body["execution_time"].as_f64().unwrap() >= 0.0);
    assert_eq!(body["error"], Value::Null);

    // A user-code error is data, never a 5xx.
    let (status, body) = service.post("/execute", json!({"code": "print('before')\n1/0"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["success"], false);
    assert_eq!(body["stdout"], "before\n");
    assert!(body["error"].as_str().unwrap().contains("ZeroDivisionError"), "{body}");

    let (status, body) = service.post("/execute", json!({"code": "while True: pass", "timeout": 1})).await;
    assert_eq!(status, StatusCode::OK);
    let error = body["error"].as_str().unwrap();
    assert!(error.starts_with("TimeoutError: "), "{body}");
    // One call has no earlier cells; the executor's words about replaying them do not belong here.
    assert!(!error.contains("replay") && !error.contains("restarted"), "{body}");
    assert!(body["stderr"].as_str().unwrap().contains("TimeoutError: "), "{body}");

    let bad = service.http.post(format!("{}/execute", service.url)).header("content-type", "application/json");
    let response = bad.body("{not json").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.json::<Value>().await.unwrap()["error"].as_str().is_some());
    for body in [json!({"context": "no code"}), json!({"code": ""}), json!({"code": "  \n\t"})] {
        let (status, answer) = service.post("/execute", body).await;
        assert_eq!((status, answer), (StatusCode::BAD_REQUEST, json!({"error": "Code is required"})));
    }
    let (status, _) = service.get("/no/such/path").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = service.get("/health").await;
    assert_eq!((status, body.contains("ok")), (StatusCode::OK, true));
    let (status, body) = service.get("/ready").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["executor"], "wasm");
    let (_, metrics) = service.get("/metrics").await;
    assert!(metrics.contains("rlm_sandbox_executes_total 6"), "{metrics}");
    assert!(metrics.contains("rlm_sandbox_cells_total{result=\"timeout\"} 1"), "{metrics}");
    service.stop().await;
}

/// `rlm/remote/repl_remote.py` of the seed, step by step: it keeps `variables` (starting with the context), posts
/// them as `context` with every call and merges the answer's `locals` back; it reads only stdout and stderr.
struct SeedClient<'a> {
    service: &'a Service,
    variables: serde_json::Map<String, Value>,
}

impl SeedClient<'_> {
    async fn code_execution(&mut self, code: &str) -> Value {
        let request = json!({"code": code, "context": self.variables, "timeout": 30, "session_id": "seed-session"});
        let (status, body) = self.service.post("/execute", request).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for (name, value) in body["locals"].as_object().unwrap() {
            self.variables.insert(name.clone(), value.clone());
        }
        body
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_seeds_client_keeps_its_state_across_execute_calls() {
    let service = Service::start(SandboxConfig { max_captured_chars: 1000, ..SandboxConfig::default() }).await;
    let mut variables = serde_json::Map::new();
    variables.insert("context".into(), json!({"city": "Lyon", "rows": [1, 2, 3]}));
    variables.insert("context_str".into(), json!("plain text"));
    let mut client = SeedClient { service: &service, variables };

    let first = client.code_execution("x = 42\nnames = ['a', 'b']\nnested = {'k': [1.5, None, True]}").await;
    assert_eq!(first["stdout"], "");
    // JSON types survive, so sending them back restores the same values.
    assert_eq!(first["locals"]["x"], 42);
    assert_eq!(first["locals"]["names"], json!(["a", "b"]));
    assert_eq!(first["locals"]["nested"], json!({"k": [1.5, null, true]}));

    let second = client.code_execution("print(x * 2)\nprint(context['city'], sum(context['rows']), context_str)").await;
    assert_eq!(second["stdout"], "84\nLyon 6 plain text\n", "{second}");
    assert_eq!(second["stderr"], "");

    // What JSON cannot hold comes back as its repr().
    let third = client.code_execution("s = {3}\nnames.append('c')").await;
    assert_eq!(third["locals"]["s"], "{3}");
    assert_eq!(third["locals"]["names"], json!(["a", "b", "c"]));

    // The client never reads `error`: the traceback must be in stderr, and `error` says it once.
    let failed = client.code_execution("print('before')\ndef f():\n    return 1 / 0\nf()").await;
    assert_eq!(failed["stdout"], "before\n");
    let stderr = failed["stderr"].as_str().unwrap();
    assert!(stderr.contains("Traceback") && stderr.contains("ZeroDivisionError: division by zero"), "{stderr}");
    let error = failed["error"].as_str().unwrap();
    assert_eq!(error.matches("ZeroDivisionError: division by zero").count(), 1, "{error}");
    assert!(error.contains("line 3"), "{error}");

    // The REPL's own names are never replaced from `context`.
    client.variables.insert("llm_query".into(), json!("not a function"));
    client.variables.insert("not an identifier".into(), json!(1));
    let own = client.code_execution("print(callable(llm_query), x)").await;
    assert_eq!(own["stdout"], "True 42\n", "{own}");

    // Output beyond the capture limit is announced, never silently cut.
    let loud = client.code_execution("print('y' * 5000)").await;
    let stdout = loud["stdout"].as_str().unwrap();
    let dropped = loud["dropped_chars"].as_u64().unwrap();
    assert!(dropped >= 4000, "{loud}");
    assert!(
        stdout.ends_with(&format!("[... {dropped} characters of output dropped: output limit 1000 ...]\n")),
        "{stdout}"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sub_calls_suspend_the_cell_until_the_client_resumes_it() {
    let service = Service::start(SandboxConfig::default()).await;
    let session = service.session(json!("the context")).await;
    let code = "first = llm_query('one')\nrest = llm_query_batched(['two', 'three'], model='m2')\nprint(first, rest)";
    let (status, body) = service.cell(&session, code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "needs_llm");
    let cell = body["cell_id"].as_u64().unwrap();
    assert_eq!(body["calls"].as_array().unwrap().len(), 1);
    assert_eq!(body["calls"][0]["prompt"], "one");
    assert_eq!(body["calls"][0]["kind"], "llm");
    let first_id = body["calls"][0]["id"].clone();

    // Another cell cannot start while this one waits.
    let (status, _) = service.cell(&session, "1").await;
    assert_eq!(status, StatusCode::CONFLICT);

    let resume = |results: Value| {
        service.on(reqwest::Method::POST, &session, &format!("/cells/{cell}/resume")).json(&results).send()
    };
    let (status, body) =
        json_of(resume(json!({"results": [{"id": first_id, "response": "ONE"}]})).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "needs_llm");
    let calls = body["calls"].as_array().unwrap().clone();
    assert_eq!(calls.iter().map(|c| c["prompt"].as_str().unwrap()).collect::<Vec<_>>(), ["two", "three"]);
    assert_eq!(calls[0]["model"], "m2");
    // Answering one call twice, or a call that is not pending, is refused; the cell still waits.
    let twice = json!({"results": [{"id": calls[0]["id"], "response": "A"}, {"id": calls[0]["id"], "response": "B"},
                                   {"id": calls[1]["id"], "response": "C"}]});
    let (status, body) = json_of(resume(twice).await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("more than once"), "{body}");
    let unknown = json!({"results": [{"id": calls[0]["id"], "response": "A"}, {"id": calls[1]["id"], "response": "C"},
                                     {"id": 999, "response": "D"}]});
    let (status, body) = json_of(resume(unknown).await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("999"), "{body}");
    let results = json!({"results": [
        {"id": calls[1]["id"], "error": "rate limited"},
        {"id": calls[0]["id"], "response": "TWO"},
    ]});
    let (status, body) = json_of(resume(results).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "done");
    assert_eq!(body["outcome"]["stdout"], "ONE ['TWO', 'Error: rate limited']\n");

    // The finished cell can be fetched again, and the namespace persists.
    let response = service.on(reqwest::Method::GET, &session, &format!("/cells/{cell}")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("ONE ['TWO'"));
    let (status, body) =
        json_of(service.on(reqwest::Method::GET, &session, "/variables/first").send().await.unwrap()).await;
    assert_eq!((status, body["value"].clone()), (StatusCode::OK, json!("ONE")));
    let (_, body) = json_of(service.on(reqwest::Method::GET, &session, "/variables").send().await.unwrap()).await;
    assert_eq!(body["names"], json!(["first", "rest"]));

    let response = service.on(reqwest::Method::DELETE, &session, "").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, _) = service.cell(&session, "1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contexts_upload_once_by_hash_and_are_reused() {
    let service = Service::start(SandboxConfig::default()).await;
    let text = "needle: 31337\n".repeat(1000);
    let sha: String = {
        use sha2::Digest;
        sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    };
    let url = format!("{}/v1/contexts/{sha}", service.url);
    assert_eq!(service.http.head(&url).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    let response = service.http.put(&url).body(text.clone()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(service.http.head(&url).send().await.unwrap().status(), StatusCode::OK);
    let wrong = format!("{}/v1/contexts/{}", service.url, "0".repeat(64));
    assert_eq!(service.http.put(&wrong).body(text.clone()).send().await.unwrap().status(), StatusCode::BAD_REQUEST);

    for _ in 0..2 {
        let (status, body) = service.post("/v1/sessions", json!({"context_sha256": sha})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["context"]["total_chars"], text.len());
        let session = Session {
            id: body["session_id"].as_str().unwrap().to_owned(),
            secret: body["session_secret"].as_str().unwrap().to_owned(),
        };
        let (_, body) = service.cell(&session, "print(context.count('31337'))").await;
        assert_eq!(body["outcome"]["stdout"], "1000\n");
    }
    let (status, _) = service.post("/v1/sessions", json!({"context_sha256": "f".repeat(64)})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bearer_token_session_limit_and_idle_eviction() {
    let config = SandboxConfig {
        token: Some("sandbox-secret".into()),
        max_sessions: 2,
        idle_ttl: Duration::from_secs(3),
        ..SandboxConfig::default()
    };
    let service = Service::start(config).await;
    let unauthenticated =
        service.http.post(format!("{}/v1/sessions", service.url)).json(&json!({})).send().await.unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
    let wrong = service.http.post(format!("{}/v1/sessions", service.url)).bearer_auth("nope").json(&json!({}));
    assert_eq!(wrong.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    // Probes stay open.
    assert_eq!(service.get("/health").await.0, StatusCode::OK);

    let create =
        || service.http.post(format!("{}/v1/sessions", service.url)).bearer_auth("sandbox-secret").json(&json!({}));
    assert_eq!(create().send().await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(create().send().await.unwrap().status(), StatusCode::CREATED);
    let full = create().send().await.unwrap();
    assert_eq!(full.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(full.text().await.unwrap().contains("maximum of 2 sessions"));
    assert_eq!(service.get("/ready").await.0, StatusCode::SERVICE_UNAVAILABLE);
    let list = || service.http.get(format!("{}/v1/sessions", service.url)).bearer_auth("sandbox-secret").send();
    assert_eq!(list().await.unwrap().json::<Value>().await.unwrap().as_array().unwrap().len(), 2);

    // Idle sessions are closed after the TTL, which frees room again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(list().await.unwrap().json::<Value>().await.unwrap(), json!([]));
    assert_eq!(create().send().await.unwrap().status(), StatusCode::CREATED);
    let (_, metrics) = service.get("/metrics").await;
    assert!(metrics.contains("rlm_sandbox_sessions_total{event=\"evicted\"} 2"), "{metrics}");
    assert!(metrics.contains("rlm_sandbox_rejections_total{reason=\"session_limit\"} 1"), "{metrics}");
    assert!(metrics.contains("rlm_sandbox_rejections_total{reason=\"unauthorized\"} 2"), "{metrics}");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_belong_to_their_creator() {
    // No token is required here, but a bearer token a client sends still names it as the owner.
    let service = Service::start(SandboxConfig { max_sessions_per_owner: 2, ..SandboxConfig::default() }).await;
    let create = |token: &str| {
        service.http.post(format!("{}/v1/sessions", service.url)).bearer_auth(token).json(&json!({"context": "c"}))
    };
    let (status, alice) = json_of(create("alice").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::CREATED);
    let alice = Session {
        id: alice["session_id"].as_str().unwrap().into(),
        secret: alice["session_secret"].as_str().unwrap().into(),
    };
    let (_, bob) = json_of(create("bob").send().await.unwrap()).await;
    let bob = Session {
        id: bob["session_id"].as_str().unwrap().into(),
        secret: bob["session_secret"].as_str().unwrap().into(),
    };
    let anonymous = service.session(json!("c")).await;

    let as_alice =
        |method: reqwest::Method, session: &Session, path: &str| service.on(method, session, path).bearer_auth("alice");
    let cell = json!({"code": "print(context)"});
    let (status, body) =
        json_of(as_alice(reqwest::Method::POST, &alice, "/cells").json(&cell).send().await.unwrap()).await;
    assert_eq!((status, body["outcome"]["stdout"].clone()), (StatusCode::OK, json!("c\n")));

    // Someone else's session, or one's own without its secret, does not exist.
    let stolen = Session { id: alice.id.clone(), secret: alice.secret.clone() };
    for request in [
        service.on(reqwest::Method::POST, &stolen, "/cells").bearer_auth("bob").json(&cell),
        service.http.post(format!("{}/v1/sessions/{}/cells", service.url, alice.id)).bearer_auth("alice").json(&cell),
        service.on(reqwest::Method::POST, &stolen, "/cells").json(&cell),
        service.on(reqwest::Method::GET, &stolen, "/variables").bearer_auth("bob"),
        service.on(reqwest::Method::GET, &stolen, "/cells/1").bearer_auth("bob"),
        service.on(reqwest::Method::POST, &stolen, "/cells/1/resume").bearer_auth("bob").json(&json!({"results": []})),
        service.on(reqwest::Method::DELETE, &stolen, "").bearer_auth("bob"),
        service.on(reqwest::Method::POST, &bob, "/cells").bearer_auth("alice").json(&cell),
    ] {
        let (status, body) = json_of(request.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert!(body["error"].as_str().unwrap().starts_with("no session"), "{body}");
    }
    let missing = Session { id: "0".repeat(32), secret: alice.secret.clone() };
    let (_, body) =
        json_of(as_alice(reqwest::Method::POST, &missing, "/cells").json(&cell).send().await.unwrap()).await;
    let (_, stolen_body) = json_of(
        service.on(reqwest::Method::POST, &stolen, "/cells").bearer_auth("bob").json(&cell).send().await.unwrap(),
    )
    .await;
    assert_eq!(
        body["error"].as_str().unwrap().replace(&missing.id, "ID"),
        stolen_body["error"].as_str().unwrap().replace(&alice.id, "ID"),
        "a foreign session looks exactly like a missing one"
    );

    // Each caller lists only its own sessions.
    let list = |token: &str| service.http.get(format!("{}/v1/sessions", service.url)).bearer_auth(token).send();
    let ids = |body: Value| body.as_array().unwrap().iter().map(|s| s["session_id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(list("alice").await.unwrap().json().await.unwrap()), [json!(alice.id)]);
    assert_eq!(ids(list("bob").await.unwrap().json().await.unwrap()), [json!(bob.id)]);
    let (_, listed) = json_of(service.http.get(format!("{}/v1/sessions", service.url)).send().await.unwrap()).await;
    assert_eq!(listed, json!([]));
    let own = service.http.get(format!("{}/v1/sessions", service.url)).header("x-session-secret", &anonymous.secret);
    assert_eq!(ids(own.send().await.unwrap().json().await.unwrap()), [json!(anonymous.id)]);

    // A token holds at most `max_sessions_per_owner` sessions; others are not affected.
    assert_eq!(create("alice").send().await.unwrap().status(), StatusCode::CREATED);
    let (status, body) = json_of(create("alice").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(body["error"].as_str().unwrap().contains("this token holds its maximum of 2 sessions"), "{body}");
    assert_eq!(create("bob").send().await.unwrap().status(), StatusCode::CREATED);
    // Closing one gives the place back.
    assert_eq!(as_alice(reqwest::Method::DELETE, &alice, "").send().await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(create("alice").send().await.unwrap().status(), StatusCode::CREATED);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trapped_sandbox_is_rebuilt_and_other_sessions_are_unaffected() {
    let service = Service::start(SandboxConfig::default()).await;
    let victim = service.session(json!("")).await;
    let bystander = service.session(json!("")).await;
    service.cell(&victim, "kept = 'still here'").await;
    service.cell(&bystander, "mine = 1").await;
    let (status, body) = service.cell(&victim, "import os\nos._exit(3)").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["outcome"]["error"]["message"].as_str().unwrap().contains("restarted"), "{body}");
    let (_, body) = service.cell(&victim, "print(kept)").await;
    assert_eq!(body["outcome"]["stdout"], "still here\n");
    let (_, body) = service.cell(&bystander, "print(mine + 1)").await;
    assert_eq!(body["outcome"]["stdout"], "2\n");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cell_waiting_for_sub_call_answers_holds_no_worker() {
    // One worker: if the suspended cell kept it, the bystander's cell could not run until the first was resumed.
    let service = Service::start(SandboxConfig { max_concurrent_cells: 1, ..SandboxConfig::default() }).await;
    let waiting = service.session(json!("")).await;
    let bystander = service.session(json!("")).await;
    let (_, body) = service.cell(&waiting, "reply = llm_query('slow')\nprint(reply)").await;
    assert_eq!(body["status"], "needs_llm", "{body}");
    let cell = body["cell_id"].as_u64().unwrap();
    let (_, ready) = service.get("/ready").await;
    assert_eq!(serde_json::from_str::<Value>(&ready).unwrap()["cells_running"], 0, "{ready}");
    let started = Instant::now();
    let (status, body) =
        tokio::time::timeout(Duration::from_secs(30), service.cell(&bystander, "1 + 1")).await.expect("not starved");
    assert_eq!((status, body["outcome"]["stdout"].clone()), (StatusCode::OK, json!("2\n")));
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    // The suspended cell gets a worker again when it is resumed.
    let resume = service
        .on(reqwest::Method::POST, &waiting, &format!("/cells/{cell}/resume"))
        .json(&json!({"results": [{"id": 0, "response": "fast"}]}));
    let (status, body) = json_of(resume.send().await.unwrap()).await;
    assert_eq!((status, body["outcome"]["stdout"].clone()), (StatusCode::OK, json!("fast\n")), "{body}");
    service.stop().await;
}

/// A scripted executor, for cells that behave in one exact way: `spin` runs until the session is aborted,
/// `batch N` makes N sub-calls in one batch and prints how many were answered.
#[derive(Debug, Default)]
struct Scripted {
    aborted: Arc<AtomicBool>,
    spinning: Arc<Notify>,
}

struct ScriptedSession {
    host: Arc<dyn SubCallHost>,
    info: ContextInfo,
    aborted: Arc<AtomicBool>,
    abort: Arc<Notify>,
    spinning: Arc<Notify>,
}

#[async_trait]
impl Executor for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn start_session(
        &self,
        _spec: SessionSpec,
        host: Arc<dyn SubCallHost>,
    ) -> rlm_protocol::Result<Box<dyn ReplSession>> {
        let info = ContextInfo { python_type: "str".into(), total_chars: 0, chunk_lengths: vec![0], chunk_count: 1 };
        Ok(Box::new(ScriptedSession {
            host,
            info,
            aborted: self.aborted.clone(),
            abort: Arc::new(Notify::new()),
            spinning: self.spinning.clone(),
        }))
    }
}

#[async_trait]
impl ReplSession for ScriptedSession {
    fn context_info(&self) -> &ContextInfo {
        &self.info
    }

    async fn run_cell(&mut self, code: &str) -> rlm_protocol::Result<CellOutcome> {
        if code == "spin" {
            self.spinning.notify_one();
            // Like a guest in `while True: pass`: only an abort ends it.
            self.abort.notified().await;
            return Err(rlm_protocol::Error::SessionDead("aborted".into()));
        }
        if let Some(count) = code.strip_prefix("batch ") {
            let count: usize = count.parse().unwrap();
            let call = SubCall { kind: SubCallKind::Llm, prompt: "p".into(), model: None };
            let answers = self.host.sub_calls(vec![call; count]).await;
            let answered = answers.iter().filter(|answer| answer.is_ok()).count();
            return Ok(CellOutcome { stdout: format!("{answered}\n"), ..CellOutcome::default() });
        }
        Ok(CellOutcome::default())
    }

    async fn get_variable(&mut self, _name: &str) -> rlm_protocol::Result<Option<String>> {
        Ok(None)
    }

    async fn variable_names(&mut self) -> rlm_protocol::Result<Vec<String>> {
        Ok(Vec::new())
    }

    async fn close(self: Box<Self>) -> rlm_protocol::Result<()> {
        Ok(())
    }

    fn abort_handle(&self) -> Option<AbortHandle> {
        let (aborted, abort) = (self.aborted.clone(), self.abort.clone());
        Some(AbortHandle::new(move || {
            aborted.store(true, Ordering::SeqCst);
            abort.notify_one();
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closing_a_session_aborts_its_running_cell_instead_of_waiting() {
    let executor = Arc::new(Scripted::default());
    let config = SandboxConfig { shutdown_grace: Duration::from_millis(200), ..SandboxConfig::default() };
    let service = Service::with_executor(executor.clone(), config).await;
    let session = service.session(json!("")).await;
    let running =
        tokio::spawn(service.on(reqwest::Method::POST, &session, "/cells").json(&json!({"code": "spin"})).send());
    tokio::time::timeout(Duration::from_secs(10), executor.spinning.notified()).await.expect("the cell started");

    let started = Instant::now();
    let deleted = service.on(reqwest::Method::DELETE, &session, "").send();
    let deleted = tokio::time::timeout(Duration::from_secs(5), deleted).await.expect("DELETE answered").unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert!(started.elapsed() < Duration::from_secs(2), "DELETE took {:?}", started.elapsed());
    assert!(executor.aborted.load(Ordering::SeqCst), "the session was aborted");
    // The request that ran the cell ends too, saying the session is gone.
    let (status, body) =
        json_of(tokio::time::timeout(Duration::from_secs(5), running).await.unwrap().unwrap().unwrap()).await;
    assert_eq!(status, StatusCode::GONE, "{body}");

    // Shutdown with a spinning cell does not wait for it either.
    executor.aborted.store(false, Ordering::SeqCst);
    let other = service.session(json!("")).await;
    let _spinning =
        tokio::spawn(service.on(reqwest::Method::POST, &other, "/cells").json(&json!({"code": "spin"})).send());
    tokio::time::timeout(Duration::from_secs(10), executor.spinning.notified()).await.expect("the cell started");
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), service.stop()).await.expect("shutdown finished");
    assert!(started.elapsed() < Duration::from_secs(4), "shutdown took {:?}", started.elapsed());
    assert!(executor.aborted.load(Ordering::SeqCst));
}

/// Runs a cell of `count` sub-calls and resumes it with all answers in reverse order; returns the time the resume
/// took.
async fn resume_time(service: &Service, count: usize) -> Duration {
    let session = service.session(json!("")).await;
    let (status, body) = service.cell(&session, &format!("batch {count}")).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<u64> = body["calls"].as_array().unwrap().iter().map(|c| c["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), count);
    let results: Vec<Value> = ids.iter().rev().map(|id| json!({"id": id, "response": "r"})).collect();
    let request = serde_json::to_vec(&json!({"results": results})).unwrap();
    let path = format!("/cells/{}/resume", body["cell_id"].as_u64().unwrap());
    let started = Instant::now();
    let response = service
        .on(reqwest::Method::POST, &session, &path)
        .header("content-type", "application/json")
        .body(request)
        .send()
        .await
        .unwrap();
    let (status, answer) = json_of(response).await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["outcome"]["stdout"], format!("{count}\n"));
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resuming_a_huge_batch_takes_linear_time() {
    let service = Service::with_executor(Arc::new(Scripted::default()), SandboxConfig::default()).await;
    // Warm up, then a baseline and a batch ten times larger, measured alike in this run. Matching answers with a
    // search per call (quadratic) made the large one take about a hundred times as long.
    resume_time(&service, 2_000).await;
    let small = resume_time(&service, 20_000).await;
    let large = resume_time(&service, 200_000).await;
    let ratio = large.as_secs_f64() / small.as_secs_f64();
    println!("resume of 20k calls: {small:?}, of 200k: {large:?}, ratio {ratio:.1}");
    assert!(ratio < 35.0, "10x the calls took {ratio:.1}x the time ({small:?} vs {large:?})");
    service.stop().await;
}

async fn raw(url: &str) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(url.trim_start_matches("http://")).await.unwrap()
}

/// Reads until the server closes the connection (or `limit` passes); returns what came and whether it closed.
async fn read_to_close(stream: &mut tokio::net::TcpStream, limit: Duration) -> (String, bool) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&received).into_owned(), true),
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Err(_) => return (String::from_utf8_lossy(&received).into_owned(), false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_are_cut_off() {
    let config = SandboxConfig {
        header_read_timeout: Duration::from_secs(1),
        body_idle_timeout: Duration::from_secs(1),
        ..SandboxConfig::default()
    };
    let service = Service::with_executor(Arc::new(Scripted::default()), config).await;

    // A head sent one byte every 200 ms never completes within the 1 s limit.
    let mut slow = raw(&service.url).await;
    let started = Instant::now();
    let writer = async {
        for byte in
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n"
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if slow.write_all(&[*byte]).await.is_err() {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(3), writer).await.ok();
    let (_, closed) = read_to_close(&mut slow, Duration::from_secs(5)).await;
    assert!(closed, "the slow client still has its connection");
    assert!(started.elapsed() < Duration::from_secs(5), "cut off after {:?}", started.elapsed());

    // A body that stops arriving is answered 408 within the idle timeout.
    let mut stalled = raw(&service.url).await;
    stalled
        .write_all(
            b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let (answer, closed) = read_to_close(&mut stalled, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    assert!(closed && started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_connections_beyond_the_cap_never_lock_out_health() {
    let config = SandboxConfig { max_connections: 8, ..SandboxConfig::default() };
    let service = Service::with_executor(Arc::new(Scripted::default()), config).await;
    // Far more connections than the cap, none of which ever sends a request.
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(raw(&service.url).await);
    }
    // A fresh client (its own connection) is answered at once.
    let started = Instant::now();
    let health = tokio::time::timeout(
        Duration::from_secs(5),
        reqwest::Client::new().get(format!("{}/health", service.url)).send(),
    )
    .await
    .expect("health answered in time")
    .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    // The service kept at most its cap open: the oldest idle connections were closed to make room.
    let mut still_open = 0;
    for stream in &mut idle {
        let (_, closed) = read_to_close(stream, Duration::from_millis(50)).await;
        still_open += usize::from(!closed);
    }
    assert!(still_open < 8, "{still_open} of 64 idle connections are still open");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_client_error_is_json() {
    let service = Service::with_executor(Arc::new(Scripted::default()), SandboxConfig::default()).await;
    let session = service.session(json!("")).await;
    for (request, status) in [
        (service.http.get(format!("{}/execute", service.url)), StatusCode::METHOD_NOT_ALLOWED),
        (service.http.delete(format!("{}/v1/sessions", service.url)), StatusCode::METHOD_NOT_ALLOWED),
        (service.on(reqwest::Method::GET, &session, "/cells/notanumber"), StatusCode::BAD_REQUEST),
        (
            service.on(reqwest::Method::POST, &session, "/cells/x/resume").json(&json!({"results": []})),
            StatusCode::BAD_REQUEST,
        ),
        (
            service.http.put(format!("{}/v1/contexts/{}?kind=nonsense", service.url, "0".repeat(64))),
            StatusCode::BAD_REQUEST,
        ),
        (service.http.get(format!("{}/no/such/route", service.url)), StatusCode::NOT_FOUND),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status);
        let content_type = response.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("application/json"), "{content_type}");
        let body: Value = response.json().await.unwrap();
        assert!(!body["error"].as_str().unwrap().is_empty(), "{body}");
    }
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_request_closes_its_connection_cleanly() {
    let config = SandboxConfig { token: Some("right".into()), ..SandboxConfig::default() };
    let service = Service::with_executor(Arc::new(Scripted::default()), config).await;
    // The body is never read when the token is wrong: the answer says the connection ends, and it does.
    let mut stream = raw(&service.url).await;
    let body = format!("{{\"context\": \"{}\"}}", "x".repeat(100_000));
    let head = format!(
        "POST /v1/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let _ = stream.write_all(body.as_bytes()).await;
    let (answer, closed) = read_to_close(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    assert!(closed);

    // A keep-alive client goes on with its next request without a broken connection.
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let refused = client.post(format!("{}/v1/sessions", service.url)).bearer_auth("wrong").body(body.clone());
        assert_eq!(
            refused.header("content-type", "application/json").send().await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
        let created = client.post(format!("{}/v1/sessions", service.url)).bearer_auth("right").json(&json!({}));
        assert_eq!(created.send().await.unwrap().status(), StatusCode::CREATED);
    }
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bystander_is_not_queued_behind_spinning_cells() {
    // Four sessions spin until their 5 s limit; with a worker pool of four (the old default on two cores) the
    // bystander's cell could only start when one of them stopped.
    let service = Service::start(SandboxConfig::default()).await;
    let mut spinning = Vec::new();
    for _ in 0..4 {
        let (status, body) = service.post("/v1/sessions", json!({"context": "", "cell_timeout": 5})).await;
        assert_eq!(status, StatusCode::CREATED);
        let session = Session {
            id: body["session_id"].as_str().unwrap().to_owned(),
            secret: body["session_secret"].as_str().unwrap().to_owned(),
        };
        spinning.push(tokio::spawn(
            service.on(reqwest::Method::POST, &session, "/cells").json(&json!({"code": "while True: pass"})).send(),
        ));
    }
    let bystander = service.session(json!("")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (status, body) = service.cell(&bystander, "1 + 1").await;
    let waited = started.elapsed();
    assert_eq!((status, body["outcome"]["stdout"].clone()), (StatusCode::OK, json!("2\n")), "{body}");
    assert!(spinning.iter().all(|cell| !cell.is_finished()), "the bystander waited for a spinning cell to end");
    println!("bystander 1 + 1 next to four spinning cells: {waited:?}");
    for cell in spinning {
        let (_, body) = json_of(cell.await.unwrap().unwrap()).await;
        assert_eq!(body["outcome"]["error"]["kind"], "TimeoutError", "{body}");
    }
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_accepted_token_sees_only_its_own_sessions() {
    let config = SandboxConfig {
        token: Some("service-a".into()),
        additional_tokens: vec!["service-b".into()],
        ..SandboxConfig::default()
    };
    let service = Service::with_executor(Arc::new(Scripted::default()), config).await;
    let create =
        |token: &str| service.http.post(format!("{}/v1/sessions", service.url)).bearer_auth(token).json(&json!({}));
    let (status, a) = json_of(create("service-a").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, b) = json_of(create("service-b").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(create("service-c").send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let list = |token: &str| service.http.get(format!("{}/v1/sessions", service.url)).bearer_auth(token).send();
    let (_, listed) = json_of(list("service-b").await.unwrap()).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["session_id"], b["session_id"]);
    // A's secret is not enough for B.
    let a =
        Session { id: a["session_id"].as_str().unwrap().into(), secret: a["session_secret"].as_str().unwrap().into() };
    let stolen = service.on(reqwest::Method::POST, &a, "/cells").bearer_auth("service-b").json(&json!({"code": "1"}));
    assert_eq!(stolen.send().await.unwrap().status(), StatusCode::NOT_FOUND);
    let own = service.on(reqwest::Method::POST, &a, "/cells").bearer_auth("service-a").json(&json!({"code": "1"}));
    assert_eq!(own.send().await.unwrap().status(), StatusCode::OK);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_spinning_wasm_session_and_shutting_down_never_wait_on_the_guest() {
    let service =
        Service::start(SandboxConfig { shutdown_grace: Duration::from_millis(200), ..SandboxConfig::default() }).await;
    let (status, body) = service.post("/v1/sessions", json!({"context": "", "cell_timeout": 120})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let session = Session {
        id: body["session_id"].as_str().unwrap().to_owned(),
        secret: body["session_secret"].as_str().unwrap().to_owned(),
    };
    // A forged reply first (the guest trying to look finished), then a spin: the real wasm guest, a 120 s limit.
    let forged = "import json, os, struct\nh = json.dumps({'op': 'done', 'error': None, 'dropped': 0, 'answer_len': None, \
                'final_var': None}).encode()\ntry:\n    os.write(0, struct.pack('<II', len(h), 0) + h)\nexcept Exception:\n    pass\nwhile True: pass";
    let (status, body) = service.cell(&session, "x = 1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let running = tokio::spawn(
        service.on(reqwest::Method::POST, &session, "/cells").json(&json!({"code": "while True: pass"})).send(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let deleted = service.on(reqwest::Method::DELETE, &session, "").send();
    let deleted = tokio::time::timeout(Duration::from_secs(5), deleted).await.expect("DELETE answered").unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert!(started.elapsed() < Duration::from_secs(2), "DELETE took {:?}", started.elapsed());
    let finished = tokio::time::timeout(Duration::from_secs(5), running).await.expect("the cell's request ended");
    assert!(finished.unwrap().is_ok());

    // A session whose guest forged a reply and spins: shutdown still ends at once.
    let other = service.session(json!("")).await;
    let _spinning =
        tokio::spawn(service.on(reqwest::Method::POST, &other, "/cells").json(&json!({"code": forged})).send());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), service.stop()).await.expect("shutdown finished");
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
}
