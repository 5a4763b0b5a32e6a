//! Conversations over HTTP: REPL state across queries, the OpenAI-compatible front with a conversation id, one query
//! at a time, idle expiry and the token budget.

use std::time::Duration;

use reqwest::StatusCode;
use rlm_test_support::{Reply, ScriptedServer};
use serde_json::json;

use super::{Server, config, models, repl};

fn final_var(code: &str, name: &str) -> Reply {
    Reply::text(format!("{}\nFINAL_VAR({name})", repl(code)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_keeps_its_variables_across_queries_and_the_openai_front() {
    let model_server = models(ScriptedServer::builder().script(
        "root",
        [
            final_var("words = context.split()\ntop = max(sorted(set(words)), key=words.count)", "top"),
            final_var("n = words.count(top) + len(context_1.split())", "n"),
            final_var("doubled = n * 2", "doubled"),
            final_var("more = doubled + 1", "more"),
        ],
    ))
    .await;
    let server = Server::start(config(&model_server)).await;

    let (status, created) = server.post("/v1/conversations", &json!({"context": "b a c a b a"})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!((created["object"].as_str(), created["turns"].as_u64()), (Some("rlm.conversation"), Some(0)));

    let (status, first) =
        server.post(&format!("/v1/conversations/{id}/messages"), &json!({"query": "Most common word?"})).await;
    assert_eq!((status, first["answer"].as_str()), (StatusCode::OK, Some("a")), "{first}");
    // The second query adds a context and uses what the first one built.
    let (status, second) = server
        .post(
            &format!("/v1/conversations/{id}/messages"),
            &json!({"query": "How often, plus the new words?", "context": "x y"}),
        )
        .await;
    assert_eq!((status, second["answer"].as_str()), (StatusCode::OK, Some("5")), "{second}");
    assert_eq!(second["context_name"], "context_1");
    assert_eq!(second["turns"], 2);

    // The OpenAI-compatible front answers in the same REPL when the request names the conversation.
    let request = json!({
        "model": "rlm",
        "messages": [{"role": "user", "content": "Double it."}],
        "rlm_conversation": id,
    });
    let (status, chat) = server.post("/v1/chat/completions", &request).await;
    assert_eq!(status, StatusCode::OK, "{chat}");
    assert_eq!(chat["choices"][0]["message"]["content"], "10");
    assert_eq!(chat["rlm"]["conversation_id"], id.as_str());
    let asked = model_server.requests_for("root")[2].last_user_message().unwrap().to_owned();
    assert!(asked.contains("query 3 of a session") && asked.contains("`n`"), "{asked}");
    // Streamed: the standard chunks, then [DONE].
    let request = json!({
        "model": "rlm",
        "messages": [{"role": "user", "content": "Add one."}],
        "rlm_conversation": id,
        "stream": true,
    });
    let response = server.http.post(server.url("/v1/chat/completions")).json(&request).send().await.unwrap();
    let (events, _) = super::read_sse(response).await;
    let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data.last(), Some(&"[DONE]"));
    let content: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(content, "11");

    let deleted = server.http.delete(server.url(&format!("/v1/conversations/{id}"))).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    for path in [format!("/v1/conversations/{id}/messages"), "/v1/conversations/not-an-id/messages".to_owned()] {
        let (status, body) = server.post(&path, &json!({"query": "again?"})).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("conversation_not_found")));
        assert!(body["error"]["message"].as_str().unwrap().contains("no conversation"), "{body}");
    }
    let (status, body) = server
        .post(
            "/v1/chat/completions",
            &json!({"model": "rlm", "messages": [{"role": "user", "content": "x"}], "rlm_conversation": id}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // A conversation still open at shutdown does not hold the server up.
    let (status, _) = server.post("/v1/conversations", &json!({"context": "left open"})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(server.shutdown().await < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_query_while_one_runs_is_409_and_idle_or_spent_conversations_are_refused() {
    let model_server = models(ScriptedServer::builder().script(
        "root",
        [
            final_var("x = 1", "x").with_delay(Duration::from_millis(800)).with_usage(40, 5, 0),
            final_var("y = x + 1", "y").with_usage(40, 5, 0),
        ],
    ))
    .await;
    let config = super::ServerConfig {
        conversation_idle_ttl: Duration::from_millis(1500),
        conversation_max_tokens: Some(60),
        ..config(&model_server)
    };
    let server = Server::start(config).await;
    let (_, created) = server.post("/v1/conversations", &json!({"context": "ctx"})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["max_tokens"], 60);
    let path = format!("/v1/conversations/{id}/messages");

    let slow = {
        let http = server.http.clone();
        let url = server.url(&path);
        tokio::spawn(async move { http.post(url).json(&json!({"query": "slow"})).send().await.unwrap().status() })
    };
    while model_server.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, busy) = server.post(&path, &json!({"query": "meanwhile"})).await;
    assert_eq!((status, busy["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("conversation_busy")), "{busy}");
    assert_eq!(slow.await.unwrap(), StatusCode::OK);

    let (status, second) = server.post(&path, &json!({"query": "next"})).await;
    assert_eq!(
        (status, second["answer"].as_str(), second["tokens_used"].as_u64()),
        (StatusCode::OK, Some("2"), Some(90))
    );
    // 90 of 60 tokens used: the budget is spent.
    let (status, spent) = server.post(&path, &json!({"query": "more"})).await;
    assert_eq!(
        (status, spent["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("conversation_token_limit"))
    );

    // Idle past its TTL, it is gone with a message that says so.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let (status, expired) = server.get(&format!("/v1/conversations/{id}")).await;
    assert_eq!((status, expired["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("conversation_expired")));
    assert!(expired["error"]["message"].as_str().unwrap().contains("expired"), "{expired}");
    server.shutdown().await;
}
