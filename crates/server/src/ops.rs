//! Operations endpoints: `/health`, `/ready`, `/metrics`, `/openapi.json`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::state::AppState;

/// Liveness: the process answers. Never needs a token.
pub async fn health(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION"), "uptime_secs": state.uptime().as_secs_f64()}))
}

/// Readiness: `200` while a new run would be accepted (not shutting down, executor available, a free run slot).
pub async fn ready(State(state): State<AppState>) -> Response {
    let in_flight = state.runs_in_flight();
    let max = state.config().max_concurrent_runs;
    match state.readiness().await {
        Ok(()) => {
            Json(json!({"status": "ready", "runs_in_flight": in_flight, "max_concurrent_runs": max})).into_response()
        }
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "not_ready",
                "reason": reason,
                "runs_in_flight": in_flight,
                "max_concurrent_runs": max,
            })),
        )
            .into_response(),
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.inner.metrics.render(state.config().max_concurrent_runs);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

pub async fn openapi() -> Json<Value> {
    Json(openapi_document())
}

fn json_body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

fn ok_json(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn error_response(description: &str) -> Value {
    ok_json(description, schema_ref("Error"))
}

fn run_id_parameter() -> Value {
    json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}})
}

/// The OpenAPI 3.1 description of every route (kept in step with the router by a test).
pub fn openapi_document() -> Value {
    let limits = json!({
        "type": "object",
        "additionalProperties": false,
        "description": "Overrides of the server's default limits; times in seconds.",
        "properties": {
            "max_iterations": {"type": "integer", "minimum": 1},
            "max_depth": {"type": "integer", "minimum": 0},
            "timeout": {"type": "number", "exclusiveMinimum": 0},
            "max_sub_calls": {"type": "integer", "minimum": 0},
            "max_tokens": {"type": "integer", "minimum": 0},
            "max_cost": {"type": "number", "exclusiveMinimum": 0, "description": "US dollars for the whole run tree"},
            "cell_timeout": {"type": "number", "exclusiveMinimum": 0},
            "max_output_chars": {"type": "integer", "minimum": 0},
            "batch_concurrency": {"type": "integer", "minimum": 1},
            "max_output_tokens": {"type": "integer", "minimum": 0},
        },
    });
    let run_request = json!({
        "type": "object",
        "required": ["query"],
        "additionalProperties": false,
        "properties": {
            "query": {"type": "string"},
            "context": {"description": "A string (text context) or any JSON value (becomes a list/dict)."},
            "model": {"type": "string", "description": "Root model (shorthand for models.root)."},
            "models": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "root": {"type": "string"},
                    "sub": {"type": "string"},
                    "per_depth": {"type": "array", "items": {"type": "string"}},
                },
            },
            "limits": schema_ref("Limits"),
            "executor": {"type": "string", "enum": ["local", "remote", "wasm"]},
            "temperature": {"type": "number"},
            "background": {"type": "boolean", "default": false},
        },
    });
    let run = json!({
        "type": "object",
        "properties": {
            "object": {"const": "rlm.run"},
            "run_id": {"type": "string", "format": "uuid"},
            "status": {"type": "string", "enum": ["running", "completed", "failed", "cancelled"]},
            "model": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "finished_at": {"type": ["string", "null"], "format": "date-time"},
            "answer": {"type": ["string", "null"]},
            "finished_by": {
                "type": ["string", "null"],
                "enum": ["final", "final_var", "answer", "direct", "limit", "cancelled", "error", null],
            },
            "path": {"type": ["string", "null"], "enum": ["direct", "rlm", null]},
            "limit": {"type": ["string", "null"]},
            "iterations": {"type": ["integer", "null"]},
            "sub_calls": {"type": ["integer", "null"]},
            "usage": {"type": ["object", "null"]},
            "cost_usd": {"type": ["number", "null"], "description": "US dollars of the whole tree, when every model has a price"},
            "duration_secs": {"type": "number"},
            "error": {"type": ["string", "null"]},
            "root_run_id": {"type": ["string", "null"], "description": "run_id of the engine's top-level trace events"},
            "trace": {"type": ["string", "null"]},
            "query": {"type": "string", "description": "GET /v1/runs/{id} only"},
            "events": {"type": "array", "items": {"type": "object"}, "description": "GET /v1/runs/{id} only"},
        },
    });
    let error = json!({
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "code": {"type": ["string", "null"]},
            },
        }},
    });
    let chat_request = json!({
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "description": "\"rlm\" or \"rlm:<root-model>\""},
            "messages": {"type": "array", "items": {"type": "object", "required": ["role"], "properties": {
                "role": {"type": "string"},
                "content": {"type": ["string", "array", "null"]},
                "name": {"type": "string"},
            }}},
            "stream": {"type": "boolean"},
            "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
            "temperature": {"type": "number"},
            "rlm_context": {"description": "Extension: the context (string or JSON); earlier messages are then unused."},
            "rlm_limits": schema_ref("Limits"),
            "rlm_conversation": {"type": "string", "description": "Extension: answer in this conversation (its REPL state persists); earlier messages are then unused."},
        },
    });
    let conversation = json!({
        "type": "object",
        "properties": {
            "object": {"const": "rlm.conversation"},
            "id": {"type": "string", "format": "uuid"},
            "model": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "turns": {"type": "integer"},
            "tokens_used": {"type": "integer"},
            "max_tokens": {"type": ["integer", "null"]},
            "idle_ttl_secs": {"type": "number"},
        },
    });
    let conversation_id =
        json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}});
    let conversation_gone = error_response("Unknown or expired conversation");
    let common_errors = |extra: &[(&str, &str)]| {
        let mut responses = serde_json::Map::new();
        responses.insert("400".into(), error_response("Invalid request"));
        responses.insert("401".into(), error_response("Missing or wrong bearer token"));
        responses.insert("413".into(), error_response("Request body too large"));
        responses.insert("429".into(), error_response("All run slots are busy"));
        responses.insert("503".into(), error_response("Shutting down, or the executor is unavailable"));
        for (code, description) in extra {
            responses.insert((*code).into(), error_response(description));
        }
        responses
    };
    let mut create_run_responses = common_errors(&[]);
    create_run_responses.insert("200".into(), ok_json("The finished run (synchronous)", schema_ref("Run")));
    create_run_responses.insert("202".into(), ok_json("The run started (background)", schema_ref("Run")));
    let mut chat_responses = common_errors(&[("404", "Unknown model"), ("500", "The run failed")]);
    chat_responses.insert(
        "200".into(),
        json!({"description": "A chat.completion, or with stream: chat.completion.chunk server-sent events ending in [DONE]",
               "content": {"application/json": {"schema": {"type": "object"}}, "text/event-stream": {"schema": {"type": "string"}}}}),
    );
    let mut infer_responses = common_errors(&[("500", "The run failed")]);
    infer_responses.insert(
        "200".into(),
        ok_json(
            "The answer",
            json!({"type": "object", "properties": {
                "success": {"type": "boolean"}, "answer": {"type": "string"}, "model": {"type": "string"},
                "max_depth": {"type": "integer"}, "finished_by": {"type": "string"}, "limit": {"type": ["string", "null"]},
                "cost_usd": {"type": ["number", "null"]},
            }}),
        ),
    );
    let not_found = error_response("No such run");
    let mut create_conversation_responses =
        common_errors(&[("429", "Too many open conversations, or all run slots busy")]);
    create_conversation_responses.insert("201".into(), ok_json("The conversation", schema_ref("Conversation")));
    let mut ask_responses = common_errors(&[
        ("404", "Unknown or expired conversation"),
        ("409", "The conversation is answering another query"),
        ("429", "The conversation's token budget is used up, or all run slots are busy"),
    ]);
    ask_responses.insert(
        "200".into(),
        ok_json(
            "The answer (null with an error when the run ended without one)",
            json!({"type": "object", "properties": {
                "answer": {"type": ["string", "null"]}, "error": {"type": ["string", "null"]},
                "run_id": {"type": "string"}, "finished_by": {"type": "string"}, "usage": {"type": "object"},
                "tokens_used": {"type": "integer"}, "turns": {"type": "integer"},
                "context_name": {"type": ["string", "null"]},
            }}),
        ),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "rlm inference service",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Recursive Language Models as a service. See docs/api.md.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Limits": limits, "RunRequest": run_request, "Run": run, "Error": error, "ChatRequest": chat_request, "Conversation": conversation},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/health": {"get": {"summary": "Liveness", "security": [], "responses": {"200": ok_json("Alive", json!({"type": "object"}))}}},
            "/ready": {"get": {"summary": "Readiness: can a run be accepted now", "security": [], "responses": {
                "200": ok_json("Ready", json!({"type": "object"})),
                "503": ok_json("Not ready, with the reason", json!({"type": "object"})),
            }}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
                "200": {"description": "Text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}},
            }}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": ok_json("OpenAPI 3.1", json!({"type": "object"}))}}},
            "/infer": {"post": {
                "summary": "Seed-compatible: answer a query over a context",
                "requestBody": json_body(json!({"type": "object", "required": ["query"], "properties": {
                    "query": {"type": "string"}, "context": {}, "model": {"type": "string"}, "max_depth": {"type": "integer"},
                    "max_cost": {"type": "number", "exclusiveMinimum": 0},
                }})),
                "responses": infer_responses,
            }},
            "/v1/runs": {
                "post": {"summary": "Start a run (synchronous, or background with background: true)",
                         "requestBody": json_body(schema_ref("RunRequest")), "responses": create_run_responses},
                "get": {"summary": "Recent runs, newest first", "responses": {"200": ok_json("A list of runs", json!({"type": "object"}))}},
            },
            "/v1/runs/{id}": {"get": {
                "summary": "A run: status, result, trajectory events",
                "parameters": [run_id_parameter(), {"name": "events", "in": "query", "schema": {"type": "boolean", "default": true}}],
                "responses": {"200": ok_json("The run", schema_ref("Run")), "404": not_found},
            }},
            "/v1/runs/{id}/cancel": {"post": {
                "summary": "Cancel a run",
                "parameters": [run_id_parameter()],
                "responses": {"200": ok_json("Cancellation requested", json!({"type": "object"})), "404": not_found},
            }},
            "/v1/runs/{id}/events": {"get": {
                "summary": "The run's trace events as server-sent events (past ones, then live), ending after the top-level final",
                "parameters": [run_id_parameter()],
                "responses": {
                    "200": {"description": "event: metadata | model_call | cell | sub_call | final; data: the event JSON",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                    "404": not_found,
                },
            }},
            "/v1/models": {"get": {"summary": "OpenAI-compatible model list", "responses": {"200": ok_json("Models", json!({"type": "object"}))}}},
            "/v1/models/{model}": {"get": {
                "summary": "OpenAI-compatible model object",
                "parameters": [{"name": "model", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": ok_json("The model", json!({"type": "object"})), "404": error_response("Unknown model")},
            }},
            "/v1/chat/completions": {"post": {
                "summary": "OpenAI-compatible chat completion answered by an RLM",
                "requestBody": json_body(schema_ref("ChatRequest")),
                "responses": chat_responses,
            }},
            "/v1/conversations": {"post": {
                "summary": "Start a conversation: one REPL over a context that answers query after query",
                "requestBody": json_body(json!({"type": "object", "additionalProperties": false, "properties": {
                    "context": {"description": "A string (text context) or any JSON value."},
                    "model": {"type": "string"}, "sub_model": {"type": "string"}, "limits": schema_ref("Limits"),
                    "max_tokens": {"type": "integer", "minimum": 1, "description": "Token budget over all queries (at most the server's)"},
                    "executor": {"type": "string", "enum": ["local", "remote", "wasm"]}, "temperature": {"type": "number"},
                }})),
                "responses": create_conversation_responses,
            }},
            "/v1/conversations/{id}": {
                "get": {"summary": "A conversation", "parameters": [conversation_id.clone()],
                        "responses": {"200": ok_json("The conversation", schema_ref("Conversation")), "404": conversation_gone.clone()}},
                "delete": {"summary": "Close a conversation (cancels its running query)", "parameters": [conversation_id.clone()],
                           "responses": {"200": ok_json("Deleted", json!({"type": "object"})), "404": conversation_gone}},
            },
            "/v1/conversations/{id}/messages": {"post": {
                "summary": "Ask in a conversation; variables of earlier queries persist",
                "parameters": [conversation_id],
                "requestBody": json_body(json!({"type": "object", "required": ["query"], "additionalProperties": false, "properties": {
                    "query": {"type": "string"},
                    "context": {"description": "A context to add first: it becomes context_1, context_2, ..."},
                }})),
                "responses": ask_responses,
            }},
            "/ui": {"get": {
                "summary": "The trajectory viewer: a web page showing the recent runs as trees, live",
                "description": "The page loads its assets and data from /ui/app.js, /ui/style.css, /ui/api/runs, \
                    /ui/api/runs/{root_run_id}/outline, /ui/api/runs/{root_run_id}/events and /ui/api/stream (SSE); \
                    these are the page's own and not a stable API (see docs/viewer.md). With a token configured, \
                    all of them need it.",
                "responses": {
                    "200": {"description": "The page", "content": {"text/html": {"schema": {"type": "string"}}}},
                    "401": error_response("Missing or wrong bearer token"),
                },
            }},
        },
    })
}
