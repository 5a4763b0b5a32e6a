//! The sandbox service over real HTTP on loopback, running cells in real wasm sandboxes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use rlm_executor_wasm::{WasmConfig, WasmExecutor};
use rlm_sandbox::{Sandbox, SandboxConfig};
use serde_json::{Value, json};
use tokio::sync::oneshot;

struct Service {
    url: String,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Service {
    async fn start(config: SandboxConfig) -> Self {
        ensure_module();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let executor = Arc::new(WasmExecutor::new(WasmConfig::default()).expect("wasm executor"));
        let sandbox = Sandbox::new(executor, config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(rlm_sandbox::serve(listener, sandbox, async {
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

    async fn session(&self, context: Value) -> String {
        let (status, body) = self.post("/v1/sessions", json!({"context": context})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["session_id"].as_str().unwrap().to_owned()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().map(|stop| stop.send(()));
        self.task.await.unwrap().unwrap();
    }
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
    assert_eq!(body["locals"]["x"], "42");
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
    assert!(body["error"].as_str().unwrap().contains("TimeoutError"), "{body}");

    let bad = service.http.post(format!("{}/execute", service.url)).header("content-type", "application/json");
    let response = bad.body("{not json").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.json::<Value>().await.unwrap()["error"].as_str().is_some());
    let (status, body) = service.post("/execute", json!({"context": "no code"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("code"), "{body}");
    let (status, _) = service.get("/no/such/path").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = service.get("/health").await;
    assert_eq!((status, body.contains("ok")), (StatusCode::OK, true));
    let (status, body) = service.get("/ready").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["executor"], "wasm");
    let (_, metrics) = service.get("/metrics").await;
    assert!(metrics.contains("rlm_sandbox_executes_total 3"), "{metrics}");
    assert!(metrics.contains("rlm_sandbox_cells_total{result=\"timeout\"} 1"), "{metrics}");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sub_calls_suspend_the_cell_until_the_client_resumes_it() {
    let service = Service::start(SandboxConfig::default()).await;
    let id = service.session(json!("the context")).await;
    let code = "first = llm_query('one')\nrest = llm_query_batched(['two', 'three'], model='m2')\nprint(first, rest)";
    let (status, body) = service.post(&format!("/v1/sessions/{id}/cells"), json!({"code": code})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "needs_llm");
    let cell = body["cell_id"].as_u64().unwrap();
    assert_eq!(body["calls"].as_array().unwrap().len(), 1);
    assert_eq!(body["calls"][0]["prompt"], "one");
    assert_eq!(body["calls"][0]["kind"], "llm");
    let first_id = body["calls"][0]["id"].clone();

    // Another cell cannot start while this one waits.
    let (status, _) = service.post(&format!("/v1/sessions/{id}/cells"), json!({"code": "1"})).await;
    assert_eq!(status, StatusCode::CONFLICT);

    let resume = format!("/v1/sessions/{id}/cells/{cell}/resume");
    let (status, body) = service.post(&resume, json!({"results": [{"id": first_id, "response": "ONE"}]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "needs_llm");
    let calls = body["calls"].as_array().unwrap();
    assert_eq!(calls.iter().map(|c| c["prompt"].as_str().unwrap()).collect::<Vec<_>>(), ["two", "three"]);
    assert_eq!(calls[0]["model"], "m2");
    let results = json!({"results": [
        {"id": calls[1]["id"], "error": "rate limited"},
        {"id": calls[0]["id"], "response": "TWO"},
    ]});
    let (status, body) = service.post(&resume, results).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "done");
    assert_eq!(body["outcome"]["stdout"], "ONE ['TWO', 'Error: rate limited']\n");

    // The finished cell can be fetched again, and the namespace persists.
    let (status, again) = service.get(&format!("/v1/sessions/{id}/cells/{cell}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(again.contains("ONE ['TWO'"));
    let (status, body) = service.get(&format!("/v1/sessions/{id}/variables/first")).await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()["value"].clone()),
        (StatusCode::OK, json!("ONE"))
    );
    let (_, body) = service.get(&format!("/v1/sessions/{id}/variables")).await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["names"], json!(["first", "rest"]));

    let response = service.http.delete(format!("{}/v1/sessions/{id}", service.url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, _) = service.post(&format!("/v1/sessions/{id}/cells"), json!({"code": "1"})).await;
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
        let id = body["session_id"].as_str().unwrap();
        let (_, body) =
            service.post(&format!("/v1/sessions/{id}/cells"), json!({"code": "print(context.count('31337'))"})).await;
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

    // Idle sessions are closed after the TTL, which frees room again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let list =
        service.http.get(format!("{}/v1/sessions", service.url)).bearer_auth("sandbox-secret").send().await.unwrap();
    assert_eq!(list.json::<Value>().await.unwrap(), json!([]));
    assert_eq!(create().send().await.unwrap().status(), StatusCode::CREATED);
    let (_, metrics) = service.get("/metrics").await;
    assert!(metrics.contains("rlm_sandbox_sessions_total{event=\"evicted\"} 2"), "{metrics}");
    assert!(metrics.contains("rlm_sandbox_rejections_total{reason=\"session_limit\"} 1"), "{metrics}");
    assert!(metrics.contains("rlm_sandbox_rejections_total{reason=\"unauthorized\"} 2"), "{metrics}");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trapped_sandbox_is_rebuilt_and_other_sessions_are_unaffected() {
    let service = Service::start(SandboxConfig::default()).await;
    let victim = service.session(json!("")).await;
    let bystander = service.session(json!("")).await;
    let cells = |id: &str| format!("/v1/sessions/{id}/cells");
    service.post(&cells(&victim), json!({"code": "kept = 'still here'"})).await;
    service.post(&cells(&bystander), json!({"code": "mine = 1"})).await;
    let (status, body) = service.post(&cells(&victim), json!({"code": "import os\nos._exit(3)"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["outcome"]["error"]["message"].as_str().unwrap().contains("restarted"), "{body}");
    let (_, body) = service.post(&cells(&victim), json!({"code": "print(kept)"})).await;
    assert_eq!(body["outcome"]["stdout"], "still here\n");
    let (_, body) = service.post(&cells(&bystander), json!({"code": "print(mine + 1)"})).await;
    assert_eq!(body["outcome"]["stdout"], "2\n");
    service.stop().await;
}
