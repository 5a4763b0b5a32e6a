//! Provider specs, costs and dollar budgets through the server's APIs.

use reqwest::StatusCode;
use rlm_inference_service::ServerConfig;
use rlm_test_support::{Api, Reply, ScriptedServer};
use serde_json::json;

use super::{Server, config, models, repl};

fn with_providers(model_server: &ScriptedServer) -> ServerConfig {
    let mut config = config(model_server);
    config.providers.anthropic.http.base_url = model_server.anthropic_base_url();
    config.providers.anthropic.http.api_key = Some("sk-ant-test".into());
    config.providers.gemini.http.base_url = model_server.gemini_base_url();
    // The contexts here fit every window; these tests are about the loop.
    config.route = rlm::RouteMode::Rlm;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infer_takes_a_dollar_budget_and_stops_before_an_unaffordable_sub_call() {
    let model_server = models(ScriptedServer::builder().script(
        "claude-sonnet-4-5",
        [
            Reply::text(repl("print(llm_query('Summarise everything'))")).with_usage(1000, 100, 0),
            Reply::text("FINAL(best so far)").with_usage(1200, 20, 1000),
        ],
    ))
    .await;
    let mut config = with_providers(&model_server);
    config.sub_model = Some("anthropic:claude-opus-4".into());
    config.limits.max_output_tokens = Some(1000);
    let server = Server::start(config).await;

    let request = json!({"query": "q", "context": "ctx", "model": "anthropic:claude-sonnet-4-5", "max_cost": 0.05});
    let (status, body) = server.post("/infer", &request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["finished_by"].as_str(), body["limit"].as_str()), (Some("limit"), Some("max_cost")));
    assert_eq!(body["answer"], "best so far");
    let cost = body["cost_usd"].as_f64().unwrap();
    assert!(cost > 0.0 && cost <= 0.05, "{body}");
    assert!(body["usage"]["by_model"]["anthropic:claude-sonnet-4-5"]["cost_usd"].as_f64().is_some(), "{body}");
    assert!(model_server.requests().iter().all(|r| r.api == Api::Anthropic && r.model == "claude-sonnet-4-5"));

    let (status, body) = server.post("/infer", &json!({"query": "q", "max_cost": -1})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("max_cost"), "{body}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_and_chat_completions_take_provider_specs_and_name_missing_keys() {
    let model_server = models(
        ScriptedServer::builder()
            .rule(|r| (r.api == Api::Anthropic).then(|| Reply::text(format!("{}\nFINAL_VAR(n)", repl("n = 3"))))),
    )
    .await;
    let server = Server::start(with_providers(&model_server)).await;

    let request = json!({
        "query": "q",
        "context": "a b c",
        "models": {"root": "anthropic:claude-haiku-4-5"},
        "limits": {"max_cost": 1.0},
    });
    let (status, run) = server.post("/v1/runs", &request).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["answer"], "3");
    assert!(run["usage"]["by_model"]["anthropic:claude-haiku-4-5"]["cost_usd"].as_f64().is_some(), "{run}");

    let chat = json!({"model": "rlm:anthropic:claude-haiku-4-5", "messages": [{"role": "user", "content": "q"}]});
    let (status, body) = server.post("/v1/chat/completions", &chat).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "3");
    assert_eq!(model_server.requests().len(), 2);

    let request = json!({"query": "q", "models": {"root": "gemini:gemini-2.5-flash"}});
    let (status, body) = server.post("/v1/runs", &request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("GEMINI_API_KEY"), "{body}");
    let request = json!({"query": "q", "models": {"root": "bedrock:claude"}});
    let (status, body) = server.post("/v1/runs", &request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("known providers: openai, anthropic, gemini, local"), "{body}");
    assert_eq!(model_server.requests().len(), 2, "refused runs send nothing");
    server.shutdown().await;
}
