//! Operations endpoints: `/health`, `/ready`, `/metrics`, `/openapi.json`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::state::AppState;

/// Liveness: the process answers. Never needs a token.
#[utoipa::path(get, path = "/health", security(()), responses(
    (status = 200, description = "Alive: status, version, uptime_secs", body = serde_json::Value),
))]
pub async fn health(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION"), "uptime_secs": state.uptime().as_secs_f64()}))
}

/// Readiness: `200` while a new run would be accepted (not shutting down, executor available, a free run slot).
#[utoipa::path(get, path = "/ready", security(()), responses(
    (status = 200, description = "Ready: status, runs_in_flight, max_concurrent_runs", body = serde_json::Value),
    (status = 503, description = "Not ready, with the reason", body = serde_json::Value),
))]
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

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses(
    (status = 200, description = "Text exposition format", body = String, content_type = "text/plain"),
))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.inner.metrics.render(state.config().max_concurrent_runs);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "OpenAPI 3.1", body = serde_json::Value)))]
pub async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}
