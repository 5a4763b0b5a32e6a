//! The remote executor against a real sandbox service (wasm sessions) on loopback, alone and driven by the engine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rlm_engine::{Engine, EngineConfig, RunOptions};
use rlm_executor_remote::{RemoteConfig, RemoteExecutor};
use rlm_executor_wasm::{WasmConfig, WasmExecutor};
use rlm_models::{OpenAiClient, OpenAiConfig};
use rlm_protocol::{Context, Executor, FinishedBy, SessionSpec, SubCall, SubCallHost, SubCallKind, SubCallResult};
use rlm_sandbox_service::{Sandbox, SandboxConfig};
use rlm_test_support::{Reply, ScriptedServer};
use tokio_util::sync::CancellationToken;

async fn sandbox(config: SandboxConfig) -> String {
    let module = WasmConfig::default().module_path;
    if !module.exists() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/fetch-python-wasm.sh");
        assert!(std::process::Command::new("bash").arg(script).status().unwrap().success());
    }
    let executor = Arc::new(WasmExecutor::new(WasmConfig::default()).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(rlm_sandbox_service::serve(listener, Sandbox::new(executor, config), std::future::pending()));
    url
}

/// Answers each prompt with its upper-case form and remembers every batch it was given.
#[derive(Default)]
struct Recorder {
    batches: Mutex<Vec<Vec<SubCall>>>,
}

#[async_trait]
impl SubCallHost for Recorder {
    async fn sub_calls(&self, calls: Vec<SubCall>) -> Vec<SubCallResult> {
        self.batches.lock().unwrap().push(calls.clone());
        calls
            .iter()
            .map(|c| if c.prompt == "fail" { Err("model down".to_owned()) } else { Ok(c.prompt.to_uppercase()) })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cells_sub_calls_and_variables_go_through_the_service() {
    let url = sandbox(SandboxConfig::default()).await;
    let executor = RemoteExecutor::new(RemoteConfig::new(&url)).unwrap();
    let health = executor.health_check().await.unwrap();
    assert!(health.ready);
    assert_eq!(health.executor, "wasm");

    let host = Arc::new(Recorder::default());
    let spec = SessionSpec::new(Context::Json(serde_json::json!({"a": "xx", "b": "yyy"})));
    let mut session = executor.start_session(spec, host.clone()).await.unwrap();
    assert_eq!(session.context_info().python_type, "dict");
    assert_eq!(session.context_info().total_chars, 5);

    let outcome = session
        .run_cell("out = llm_query_batched(['a', 'fail', 'c'], model='m')\nprint(out)\nsolo = rlm_query('deep')")
        .await
        .unwrap();
    assert_eq!(outcome.stdout, "['A', 'Error: model down', 'C']\n");
    let batches = host.batches.lock().unwrap().clone();
    assert_eq!(batches.len(), 2, "a batch is one host call");
    assert_eq!(batches[0].len(), 3);
    assert_eq!(batches[0][0].model.as_deref(), Some("m"));
    assert_eq!(batches[1][0].kind, SubCallKind::Rlm);

    let failed = session.run_cell("print('x')\nraise KeyError('k')").await.unwrap();
    assert_eq!(failed.stdout, "x\n");
    assert_eq!(failed.error.unwrap().kind, "KeyError");
    assert_eq!(session.get_variable("solo").await.unwrap().as_deref(), Some("DEEP"));
    assert_eq!(session.get_variable("nothing").await.unwrap(), None);
    assert_eq!(session.variable_names().await.unwrap(), vec!["out", "solo"]);
    session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn text_file_contexts_upload_once_and_reach_the_sandbox_whole() {
    let url = sandbox(SandboxConfig::default()).await;
    let executor = RemoteExecutor::new(RemoteConfig::new(&url)).unwrap();
    let dir = std::env::temp_dir().join(format!("rlm-remote-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big.txt");
    let line = "0123456789abcdefghijklmnopqrstuvwxyz\n";
    std::fs::write(&path, line.repeat(300_000)).unwrap();
    for _ in 0..2 {
        let spec = SessionSpec::new(Context::TextFile(path.clone()));
        let mut session = executor.start_session(spec, Arc::new(Recorder::default())).await.unwrap();
        assert_eq!(session.context_info().total_chars, (line.len() * 300_000) as u64);
        let outcome = session.run_cell("print(context.count('xyz'))").await.unwrap();
        assert_eq!(outcome.stdout, "300000\n");
        session.close().await.unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_engine_answers_a_needle_query_through_the_remote_sandbox() {
    let url = sandbox(SandboxConfig::default()).await;
    let mut context = String::new();
    for i in 0..200_000 {
        if i == 123_456 {
            context.push_str("record 123456: the vault code is 9043117\n");
        } else {
            context.push_str(&format!("record {i}: nothing to see\n"));
        }
    }
    let code = "chunks = [context[i:i + 1_000_000] for i in range(0, len(context), 1_000_000)]\n\
                replies = llm_query_batched(['Vault code in this text, or NONE:\\n' + c for c in chunks])\n\
                code = [r for r in replies if r != 'NONE'][0]\n\
                print(len(chunks), code)";
    let models = ScriptedServer::builder()
        .script("root", [Reply::text(format!("```repl\n{code}\n```\nFINAL_VAR(code)"))])
        .rule(|request| {
            (request.model == "root").then(|| {
                let prompt = request.last_user_message().unwrap_or_default();
                match prompt.find("the vault code is ") {
                    Some(at) => Reply::text(prompt[at + 18..at + 25].to_owned()),
                    None => Reply::text("NONE"),
                }
            })
        })
        .start()
        .await
        .unwrap();
    let client = OpenAiClient::new(OpenAiConfig::new(models.base_url())).unwrap();
    let executor = RemoteExecutor::new(RemoteConfig::new(&url)).unwrap();
    let engine = Engine::new(Arc::new(client), Arc::new(executor), EngineConfig::new("root"));
    let trace = Arc::new(rlm_trace::MemorySink::new());
    let options = RunOptions { trace: trace.clone(), cancel: CancellationToken::new(), model: None };
    let result = engine.run(Context::Text(context), "What is the vault code?", options).await;
    assert_eq!(result.answer.as_deref(), Some("9043117"), "{result:?}");
    assert_eq!(result.finished_by, FinishedBy::FinalVar);
    assert_eq!(result.sub_calls, 6);
    let metadata = trace.events().into_iter().find_map(|e| match e.body {
        rlm_protocol::EventBody::Metadata(meta) => Some(meta),
        _ => None,
    });
    assert_eq!(metadata.unwrap().executor, "remote");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_sandbox_is_a_clear_error_after_bounded_retries() {
    // A port nothing listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = RemoteConfig {
        retry_backoff: Duration::from_millis(10),
        ..RemoteConfig::new(format!("http://127.0.0.1:{port}"))
    };
    let executor = RemoteExecutor::new(config).unwrap();
    let started = Instant::now();
    let err = executor
        .start_session(SessionSpec::new(Context::from("x")), Arc::new(Recorder::default()))
        .await
        .err()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(err.to_string().contains("unreachable"), "{err}");
    assert!(executor.health_check().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_token_is_refused_with_the_services_message() {
    let url = sandbox(SandboxConfig { token: Some("right".into()), ..SandboxConfig::default() }).await;
    let wrong = RemoteExecutor::new(RemoteConfig { token: Some("wrong".into()), ..RemoteConfig::new(&url) }).unwrap();
    let err =
        wrong.start_session(SessionSpec::new(Context::from("x")), Arc::new(Recorder::default())).await.err().unwrap();
    assert!(err.to_string().contains("401"), "{err}");
    let right = RemoteExecutor::new(RemoteConfig { token: Some("right".into()), ..RemoteConfig::new(&url) }).unwrap();
    let mut session =
        right.start_session(SessionSpec::new(Context::from("x")), Arc::new(Recorder::default())).await.unwrap();
    assert_eq!(session.run_cell("print(context)").await.unwrap().stdout, "x\n");
}

/// A round-robin TCP load balancer over `backends`, like a Kubernetes Service without session affinity.
async fn round_robin(backends: Vec<String>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let addresses: Vec<String> = backends.iter().map(|b| b.trim_start_matches("http://").to_owned()).collect();
    tokio::spawn(async move {
        let mut next = 0;
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else { break };
            let target = addresses[next % addresses.len()].clone();
            next += 1;
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_follow_the_replica_that_holds_them_behind_a_load_balancer() {
    // Two replicas, each advertising its own address; the client only knows the balancer.
    let first = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let urls = [first.local_addr().unwrap(), second.local_addr().unwrap()].map(|a| format!("http://{a}"));
    let executor = Arc::new(WasmExecutor::new(WasmConfig::default()).unwrap());
    for (listener, url) in [(first, &urls[0]), (second, &urls[1])] {
        let config = SandboxConfig { advertise_url: Some(url.clone()), ..SandboxConfig::default() };
        tokio::spawn(rlm_sandbox_service::serve(
            listener,
            Sandbox::new(executor.clone(), config),
            std::future::pending(),
        ));
    }
    let balancer = round_robin(urls.to_vec()).await;
    // Fresh connections for every request, so the balancer really alternates.
    let config = RemoteConfig { pool_max_idle_per_host: 0, ..RemoteConfig::new(&balancer) };
    let remote = RemoteExecutor::new(config).unwrap();
    let mut sessions = Vec::new();
    for i in 0..4 {
        let mut session =
            remote.start_session(SessionSpec::new(Context::from("ctx")), Arc::new(Recorder::default())).await.unwrap();
        session.run_cell(&format!("n = {i}")).await.unwrap();
        sessions.push(session);
    }
    for round in 0..3 {
        for (i, session) in sessions.iter_mut().enumerate() {
            let outcome = session.run_cell("n += 10\nprint(n)").await.unwrap();
            assert_eq!(outcome.stdout, format!("{}\n", i + 10 * (round + 1)));
        }
    }
}
