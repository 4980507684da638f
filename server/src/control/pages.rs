//! The web app: one page (the listener, host and speaker views are the
//! same document, chosen by its script), embedded in the binary.

use super::spaces::App;
use super::{entry_or_404, ApiResult};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(index_page))
        .route("/spaces/{id}", get(space_page))
        .route("/spaces/{id}/host", get(space_page))
        .route("/spaces/{id}/speak", get(space_page))
        .route("/assets/app.js", get(app_js))
        .route("/assets/app.css", get(app_css))
        .route("/assets/hls.mjs", get(hls_js))
}

const INDEX_HTML: &str = include_str!("../../../web/index.html");
const APP_JS: &str = include_str!("../../../web/app.js");
const APP_CSS: &str = include_str!("../../../web/app.css");

/// hls.js (the light build, an ES module), from the npm registry through
/// `web/package-lock.json`; `server/build.rs` copies it in, or leaves it
/// empty when `web/node_modules` is missing.
const HLS_JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hls.light.min.mjs"));
const HLS_ETAG: &str = include_str!(concat!(env!("OUT_DIR"), "/hls.etag"));

async fn hls_js(headers: HeaderMap) -> Response {
    if HLS_JS.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(serde_json::json!({
                "error": "this build has no hls.js (run scripts/install-deps.sh, then build again)"
            })),
        )
            .into_response();
    }
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == HLS_ETAG));
    let validators = [
        (header::CACHE_CONTROL, "no-cache"),
        (header::ETAG, HLS_ETAG),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, validators).into_response();
    }
    (
        validators,
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        HLS_JS,
    )
        .into_response()
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// Assets are embedded; `no-cache` so an upgraded binary is picked up at once.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index_page() -> Html<&'static str> {
    Html(INDEX_HTML)
}

async fn space_page(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    app.space_or_fetch(&id).await;
    entry_or_404(&app, &id)?;
    Ok(Html(INDEX_HTML).into_response())
}
