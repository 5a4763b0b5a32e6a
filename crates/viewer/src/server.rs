//! The HTTP side: the page, its JSON API and the live-update stream.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::source::{RunSource, SourceError};

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");

/// Scripts and styles only from this server; no connections elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'self'; form-action 'none'; frame-ancestors 'none'";

type Source = Arc<dyn RunSource>;

/// The viewer: `GET /` (the page), `/app.js`, `/style.css`, `GET /api/runs`, `GET /api/runs/{id}/outline` and
/// `GET /api/runs/{id}/events` (both `?offset=&limit=`), and `GET /api/stream` (server-sent events announcing
/// [`crate::Update`]s).
pub fn router(source: Arc<dyn RunSource>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
        .route("/api/runs", get(runs))
        .route("/api/runs/{id}/outline", get(outline))
        .route("/api/runs/{id}/events", get(events))
        .route("/api/stream", get(stream))
        // Nested at `/ui`, the page is at `/ui`; `/ui/` reaches the nested router (if at all) as an unmatched path.
        .fallback(fallback)
        .with_state(source)
}

/// Serves [`router`] on `listener` until `shutdown` completes (open live streams are dropped then).
pub async fn serve(
    listener: tokio::net::TcpListener,
    source: Arc<dyn RunSource>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tokio::select! {
        served = axum::serve(listener, router(source)) => served,
        () = shutdown => Ok(()),
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// The page. Its asset and API URLs start with the router's mount point (`/ui` when nested there), found by
/// comparing the request's original path with the path the router saw.
async fn index(OriginalUri(original): OriginalUri, uri: Uri) -> Response {
    let full = original.path();
    let inner = uri.path().trim_start_matches('/');
    let prefix = full.strip_suffix(inner).unwrap_or(full).trim_end_matches('/');
    let html = INDEX_HTML.replace("{{BASE}}", &escape_attr(&format!("{prefix}/")));
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    response
}

async fn fallback(original: OriginalUri, uri: Uri) -> Response {
    if uri.path().is_empty() || uri.path() == "/" {
        index(original, uri).await
    } else {
        (StatusCode::NOT_FOUND, "not found").into_response()
    }
}

fn escape_attr(text: &str) -> String {
    text.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}

struct ApiError(SourceError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.0 {
            SourceError::UnknownRun(_) => StatusCode::NOT_FOUND,
            SourceError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, axum::Json(serde_json::json!({ "error": self.0.to_string() }))).into_response()
    }
}

impl From<SourceError> for ApiError {
    fn from(err: SourceError) -> Self {
        Self(err)
    }
}

async fn runs(State(source): State<Source>) -> Result<Response, ApiError> {
    let runs = source.runs().await?;
    Ok(axum::Json(serde_json::json!({ "runs": runs })).into_response())
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

async fn outline(
    State(source): State<Source>,
    Path(id): Path<Uuid>,
    Query(page): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let outline = source.outline(id, page.offset, page.limit.unwrap_or(usize::MAX)).await?;
    Ok(axum::Json(outline).into_response())
}

async fn events(
    State(source): State<Source>,
    Path(id): Path<Uuid>,
    Query(page): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let page = source.events(id, page.offset, page.limit.unwrap_or(100)).await?;
    // Each item is already one JSON object: splice the texts instead of parsing and re-serializing them.
    let size: usize = page.items.iter().map(|item| item.len() + 1).sum();
    let mut body = String::with_capacity(size + 64);
    body.push_str(&format!("{{\"offset\":{},\"total\":{},\"items\":[", page.offset, page.total));
    for (i, item) in page.items.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(item);
    }
    body.push_str("]}");
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn stream(State(source): State<Source>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let updates = source.subscribe();
    let stream = futures::stream::unfold(updates, |mut updates| async move {
        let data = match updates.recv().await {
            Ok(update) => serde_json::to_string(&update).unwrap_or_else(|_| r#"{"type":"reset"}"#.into()),
            // Missed updates: the page reloads what it shows.
            Err(RecvError::Lagged(_)) => r#"{"type":"reset"}"#.into(),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(Event::default().data(data)), updates))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
