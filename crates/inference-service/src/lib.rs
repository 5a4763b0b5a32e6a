//! The RLM inference service: an HTTP API over [`rlm::Rlm`], an OpenAI-compatible front, streaming run events,
//! health, readiness, Prometheus metrics and an OpenAPI document. See `docs/api.md`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use rlm_inference_service::{AppState, ServerConfig};
//! let state = AppState::new(ServerConfig { default_model: Some("gpt-4o-mini".into()), ..ServerConfig::default() })?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! rlm_inference_service::serve(listener, state, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

mod chat;
mod config;
mod conversations;
mod error;
mod metrics;
mod openapi;
mod ops;
mod registry;
mod runs;
mod state;
mod ui;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

pub use crate::config::{ExecutorChoice, ServerConfig};
pub use crate::error::ApiError;
pub use crate::openapi::document as openapi_document;
pub use crate::registry::RunStatus;
pub use crate::state::{AppState, StartError};

/// Every route as `(method, path)`, in OpenAPI path syntax. A test checks that each is routed and that the OpenAPI
/// document describes exactly these. `/ui` stands for the trajectory viewer: the page, plus the assets and JSON/SSE
/// endpoints under `/ui/` that only the page uses (see `docs/viewer.md`).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("POST", "/infer"),
    ("POST", "/v1/runs"),
    ("GET", "/v1/runs"),
    ("GET", "/v1/runs/{id}"),
    ("POST", "/v1/runs/{id}/cancel"),
    ("GET", "/v1/runs/{id}/events"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{model}"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/conversations"),
    ("GET", "/v1/conversations/{id}"),
    ("DELETE", "/v1/conversations/{id}"),
    ("POST", "/v1/conversations/{id}/messages"),
    ("GET", "/ui"),
];

/// The HTTP application. `/health` and `/ready` are open; everything else needs the bearer token when one is
/// configured — the trajectory viewer at `/ui` (page, assets, data and live updates) included.
pub fn app(state: AppState) -> Router {
    let viewer = rlm_viewer::router(Arc::new(ui::RegistrySource::new(state.clone())))
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    let protected = Router::new()
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route("/infer", post(runs::infer))
        .route("/v1/runs", post(runs::create_run).get(runs::list_runs))
        .route("/v1/runs/{id}", get(runs::get_run))
        .route("/v1/runs/{id}/cancel", post(runs::cancel_run))
        .route("/v1/runs/{id}/events", get(runs::run_events))
        .route("/v1/models", get(chat::list_models))
        .route("/v1/models/{model}", get(chat::get_model))
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/conversations", post(conversations::create))
        .route("/v1/conversations/{id}", get(conversations::get).delete(conversations::delete))
        .route("/v1/conversations/{id}/messages", post(conversations::ask))
        // The viewer itself is nested at `/ui` below; `/ui/` does not reach it.
        .route("/ui/", get(|| async { Redirect::permanent("../ui") }))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config().max_body_bytes))
        .with_state(state)
        .nest("/ui", viewer)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found("not_found", format!("no route {} {}", request.method(), request.uri().path()))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        Some("method_not_allowed"),
        format!("{} is not allowed on {}", request.method(), request.uri().path()),
    )
}

/// Compares in time independent of where the first difference is.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len() && given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(expected) = &state.config().api_token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
            .map(str::trim);
        if !given.is_some_and(|token| same_secret(token.as_bytes(), expected.expose().as_bytes())) {
            let mut response = ApiError::unauthorized().into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    next.run(request).await
}

/// Serves `state` on `listener` until `shutdown` resolves, then shuts down gracefully: no new runs (`/ready` turns
/// `503`), open requests and streams may finish for the configured grace period, after which the remaining runs are
/// cancelled (their streams then end with the cancellation).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = state.config().shutdown_grace;
    let signal_state = state.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!(grace_secs = grace.as_secs_f64(), "shutting down: no new runs");
        signal_state.begin_shutdown();
        let late = signal_state.clone();
        tokio::spawn(async move {
            if !late.wait_idle(grace).await {
                tracing::warn!(runs = late.runs_in_flight(), "grace period over: cancelling the remaining runs");
                late.cancel_all_runs();
            }
        });
    };
    axum::serve(listener, app(state.clone())).with_graceful_shutdown(signal).await?;
    // Background runs have no connection keeping the server up: give them the same grace, then cancel them.
    if !state.wait_idle(grace).await {
        state.cancel_all_runs();
        state.wait_idle(std::time::Duration::from_secs(5)).await;
    }
    // Open conversations hold REPLs (with the remote executor, sandbox sessions): end them before leaving.
    state.conversations().close_all_within(std::time::Duration::from_secs(5)).await;
    let closing = state.clone();
    let _ = tokio::task::spawn_blocking(move || closing.close_trace_db(std::time::Duration::from_secs(30))).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abd", b"abc"));
        assert!(!same_secret(b"ab", b"abc"));
        assert!(!same_secret(b"", b"abc"));
    }
}
