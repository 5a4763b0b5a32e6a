//! The OpenAPI document of the service, generated from the handlers' `#[utoipa::path]` annotations and the
//! request and response types (`GET /openapi.json`). A test checks that it describes exactly [`crate::ROUTES`].

use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{chat, conversations, ops, runs};

#[derive(OpenApi)]
#[openapi(
    info(title = "rlm inference service", description = "Recursive Language Models as a service. See docs/api.md."),
    paths(
        ops::health,
        ops::ready,
        ops::metrics,
        ops::openapi,
        runs::infer,
        runs::create_run,
        runs::list_runs,
        runs::get_run,
        runs::cancel_run,
        runs::run_events,
        chat::list_models,
        chat::get_model,
        chat::chat_completions,
        conversations::create,
        conversations::get,
        conversations::delete,
        conversations::ask,
        viewer_page,
    ),
    modifiers(&BearerToken),
    security(("bearer" = []))
)]
struct ApiDoc;

/// Every route needs the bearer token when one is configured, except those that opt out (`/health`, `/ready`).
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The trajectory viewer: a web page showing the recent runs as trees, live.
///
/// The page loads its assets and data from /ui/app.js, /ui/style.css, /ui/api/runs,
/// /ui/api/runs/{root_run_id}/outline, /ui/api/runs/{root_run_id}/events and /ui/api/stream (SSE); these are the
/// page's own and not a stable API (see docs/viewer.md). With a token configured, all of them need it.
#[utoipa::path(get, path = "/ui", responses(
    (status = 200, description = "The page", body = String, content_type = "text/html"),
    (status = 401, description = "Missing or wrong bearer token", body = crate::error::ErrorBody),
))]
#[allow(dead_code, reason = "documents the page that rlm-viewer's router serves at /ui")]
fn viewer_page() {}

/// The document as JSON.
pub fn document() -> Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
}
