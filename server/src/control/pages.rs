//! The web app: one page (the listener, host and speaker views are the
//! same document, chosen by its script), embedded in the binary.

use super::spaces::App;
use super::{entry_or_404, ApiResult};
use axum::extract::{Path, State};
use axum::http::header;
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
}

const INDEX_HTML: &str = include_str!("../../../web/index.html");
const APP_JS: &str = include_str!("../../../web/app.js");
const APP_CSS: &str = include_str!("../../../web/app.css");

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
