//! The control plane and everything else served through axum: spaces and
//! their lifecycle (`api.rs`), the stage over HTTP (`stage_api.rs`), the
//! store, credentials, the registry of spaces (`spaces.rs`) and the
//! embedded web pages (`pages.rs`).

pub mod api;
pub mod auth;
pub mod fleet;
mod fleet_api;
pub mod hls_api;
mod pages;
pub mod relay_api;
pub mod spaces;
pub mod stage_api;
pub mod store;
pub mod upstream;

use crate::clock::wall_secs;
use auth::AuthError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use spaces::{App, AppError, SpaceEntry};
use std::sync::Arc;
use tribune_core::token::{Claims, Role};

pub type Shared = State<Arc<App>>;

pub struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: json!({ "error": message.into() }),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        ApiError::new(status, e.to_string())
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        let status = match &e {
            AppError::UnknownSpace(_) => StatusCode::NOT_FOUND,
            AppError::Transition(_) => StatusCode::CONFLICT,
            AppError::Storage(_) => {
                tracing::error!(error = %e, "database unavailable");
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the control plane's database is unavailable; nothing was changed, try again shortly",
                );
            }
            AppError::Recording(_) => {
                tracing::error!(error = %e, "internal error");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        let status = match e {
            JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, format!("invalid JSON body: {}", e.body_text()))
    }
}

pub type ApiResult = Result<Response, ApiError>;

pub fn bearer(app: &App, headers: &HeaderMap) -> Result<Claims, AuthError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = auth::token_from_header(value)?;
    auth::verify(&app.keys, &token, wall_secs())
}

/// A token from `?token=` (players and EventSource cannot send headers).
pub fn query_token(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .filter(|t| !t.is_empty())
}

/// The claims of whoever asks, when they sent a valid token.
pub(super) fn reader_claims(app: &App, headers: &HeaderMap, query: Option<&str>) -> Option<Claims> {
    match query_token(query) {
        Some(t) => auth::verify(&app.keys, t, wall_secs()).ok(),
        None => bearer(app, headers).ok(),
    }
}

/// Every read of a private space needs a token of that space (a
/// listener's, or anyone's above): in `Authorization: Bearer` or `?token=`.
/// `token_param` is the `token` query parameter, if any.
pub fn require_read(
    app: &App,
    entry: &SpaceEntry,
    headers: &HeaderMap,
    token_param: Option<&str>,
) -> Result<(), ApiError> {
    if !entry.row.private {
        return Ok(());
    }
    let token = match token_param.filter(|t| !t.is_empty()) {
        Some(t) => t.to_string(),
        None => auth::token_from_header(
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        )
        .map_err(|_| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this space is private: send its listener token (Authorization: Bearer, or ?token=)",
            )
        })?,
    };
    let claims = auth::verify(&app.keys, &token, wall_secs())?;
    auth::require(
        &claims,
        &entry.row.id,
        Role::Listener,
        "reading this private space",
    )?;
    Ok(())
}

/// The space, readable by whoever asks (see [`require_read`]).
pub fn readable_entry(
    app: &App,
    id: &str,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<SpaceEntry, ApiError> {
    let entry = entry_or_404(app, id)?;
    require_read(app, &entry, headers, query_token(query))?;
    Ok(entry)
}

pub fn entry_or_404(app: &App, id: &str) -> Result<SpaceEntry, ApiError> {
    app.space(id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no space with id {id:?}")))
}

pub fn space_json(app: &App, e: &SpaceEntry) -> Value {
    let id = &e.row.id;
    let urls = space_urls(app, id);
    let (listeners, peak, source, packets, duration_ms) = match e.live.as_ref().map(|o| &o.space) {
        Some(l) => (
            l.listeners() as u64,
            l.peak_listeners() as u64,
            l.source_connected(),
            l.packets(),
            l.duration_ms(),
        ),
        None => (
            0,
            e.row.peak_listeners,
            false,
            e.row.packets,
            e.row.duration_ms,
        ),
    };
    // the sum over the fleet, when Redis knows it; this node's own otherwise
    let here = listeners;
    let (listeners, peak) = match (&e.live, app.fleet.as_ref().and_then(|f| f.space_totals(id))) {
        (Some(_), Some((total, fleet_peak))) => (total.max(here), fleet_peak.max(peak)),
        _ => (listeners, peak),
    };
    // where else a listener can resume this space (a node that goes away)
    let nodes: Vec<String> = match (&e.live, &app.fleet) {
        (Some(_), Some(fleet)) => {
            let mut nodes = fleet.nodes().unwrap_or_default();
            nodes.retain(|n| n.healthy);
            nodes.sort_by_key(|n| std::cmp::Reverse(n.room()));
            nodes.into_iter().map(|n| n.url).collect()
        }
        _ => Vec::new(),
    };
    json!({
        "id": id,
        "title": e.row.title,
        "nodes": nodes,
        "listeners_here": here,
        "state": e.row.state,
        "created_by": e.row.created_by,
        "host_name": e.row.host_name,
        "created_at": e.row.created_at,
        "scheduled_at": e.row.scheduled_at,
        "started_at": e.row.started_at,
        "ended_at": e.row.ended_at,
        "listeners": listeners,
        "peak_listeners": peak,
        "private": e.row.private,
        "source_connected": source,
        "packets": packets,
        "duration_ms": duration_ms,
        "urls": {
            "page": urls.page,
            "live": urls.live,
            "replay": urls.replay,
            "source": urls.source,
            "hls": urls.hls,
        },
    })
}

/// Every space the asker may read: private ones only with their token.
/// Writes to the control plane happen on the origin; an edge says where.
pub fn origin_only(app: &App) -> Result<(), ApiError> {
    match &app.upstream {
        Some(up) => Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this node is an edge of {}: send this to the origin",
                up.url()
            ),
        )),
        None => Ok(()),
    }
}

/// The space's public URLs.
pub struct SpaceUrls {
    pub page: String,
    pub live: String,
    pub replay: String,
    pub source: String,
    /// The HLS tier's multivariant playlist (`hls_api.rs`).
    pub hls: String,
}

pub fn space_urls(app: &App, id: &str) -> SpaceUrls {
    let base = app.base_url();
    SpaceUrls {
        page: format!("{base}/spaces/{id}"),
        live: format!("{base}/spaces/{id}/live.opus"),
        replay: format!("{base}/spaces/{id}/replay.opus"),
        source: format!("{base}/spaces/{id}/source"),
        hls: format!("{base}/spaces/{id}/hls/master.m3u8"),
    }
}

/// RFC 9110 §14.2: a Range in a unit the server does not know is ignored
/// (the whole file is sent), not refused.
pub fn ignore_unknown_range(mut req: Request) -> Request {
    let known = req
        .headers()
        .get(header::RANGE)
        .map(|v| v.as_bytes().trim_ascii_start().starts_with(b"bytes="));
    if known == Some(false) {
        req.headers_mut().remove(header::RANGE);
    }
    req
}

/// For a load balancer in front of the fleet: 200 while this node admits
/// listeners; 503 (and why) while it is full or its own measures stop it.
async fn healthz(State(app): State<Arc<App>>) -> Response {
    let listeners = app.health.listeners();
    let capacity = app.cfg.max_listeners;
    let refuse = |why: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            why,
        )
            .into_response()
    };
    if !app.health.healthy() {
        refuse(format!(
            "overloaded: not admitting while the fan-out runs late ({listeners} listeners)\n"
        ))
    } else if listeners >= capacity {
        refuse(format!("full: {listeners} of {capacity} listeners\n"))
    } else {
        "ok".into_response()
    }
}

/// Every route the control plane answers.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .merge(pages::routes())
        .merge(api::routes())
        .merge(relay_api::routes())
        .merge(fleet_api::routes())
        .merge(hls_api::routes())
        .route("/healthz", get(healthz))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .merge(stage_api::routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(app)
}
