//! The control plane and everything else served through axum: the JSON
//! API, replay files, metrics and the embedded web pages.

use crate::app::{now_secs, App, AppError, SpaceEntry};
use crate::auth::{self, AuthError};
use crate::recorder::recording_path;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tower::ServiceExt;
use tribune_core::space::{valid_space_id, SpaceState, Transition};
use tribune_core::token::{self, parse_ttl, Claims, Role};

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
            AppError::Storage(_) | AppError::Recording(_) => {
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

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index_page))
        .route("/spaces/{id}", get(space_page))
        .route("/spaces/{id}/host", get(space_page))
        .route("/spaces/{id}/speak", get(space_page))
        .route("/assets/app.js", get(app_js))
        .route("/assets/app.css", get(app_css))
        .route("/api/spaces", get(list_spaces).post(create_space))
        .route("/api/spaces/{id}", get(show_space))
        .route("/api/spaces/{id}/start", post(start_space))
        .route("/api/spaces/{id}/end", post(end_space))
        .route("/api/spaces/{id}/tokens", post(mint_token))
        .route("/api/spaces/{id}/admission", get(admission))
        .route("/spaces/{id}/replay.opus", get(replay))
        .route("/spaces/{id}/live.opus", get(live_elsewhere))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .merge(crate::whip::routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(app)
}

pub fn bearer(app: &App, headers: &HeaderMap) -> Result<Claims, AuthError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = auth::token_from_header(value)?;
    auth::verify(&app.secret, &token, now_secs())
}

/// A token from `?token=` (players and EventSource cannot send headers).
pub fn query_token(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .filter(|t| !t.is_empty())
}

/// The claims of whoever asks, when they sent a valid token.
fn reader_claims(app: &App, headers: &HeaderMap, query: Option<&str>) -> Option<Claims> {
    match query_token(query) {
        Some(t) => auth::verify(&app.secret, t, now_secs()).ok(),
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
    let claims = auth::verify(&app.secret, &token, now_secs())?;
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
    let base = app.base_url();
    let id = &e.row.id;
    let (listeners, peak, source, packets, duration_ms) = match &e.live {
        Some(l) => (
            l.listeners.load(Ordering::Relaxed),
            l.peak_listeners.load(Ordering::Relaxed) as u64,
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
    json!({
        "id": id,
        "title": e.row.title,
        "state": e.row.state,
        "created_by": e.row.created_by,
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
            "page": format!("{base}/spaces/{id}"),
            "live": format!("{base}/spaces/{id}/live.opus"),
            "replay": format!("{base}/spaces/{id}/replay.opus"),
            "source": format!("{base}/spaces/{id}/source"),
        },
    })
}

/// Every space the asker may read: private ones only with their token.
async fn list_spaces(
    State(app): Shared,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Json<Value> {
    let claims = reader_claims(&app, &headers, query.as_deref());
    let spaces: Vec<Value> = app
        .list()
        .iter()
        .filter(|e| {
            !e.row.private
                || claims
                    .as_ref()
                    .is_some_and(|c| c.allows(&e.row.id, Role::Listener))
        })
        .map(|e| space_json(&app, e))
        .collect();
    Json(json!({ "spaces": spaces }))
}

async fn show_space(
    State(app): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let e = readable_entry(&app, &id, &headers, query.as_deref())?;
    Ok(Json(space_json(&app, &e)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSpace {
    title: String,
    /// When the space is planned to start (ms since the Unix epoch).
    scheduled_at: Option<u64>,
    /// Only listeners with a token for the space may listen.
    #[serde(default)]
    private: bool,
}

async fn create_space(
    State(app): Shared,
    headers: HeaderMap,
    body: Result<Json<CreateSpace>, JsonRejection>,
) -> ApiResult {
    let claims = bearer(&app, &headers)?;
    if claims.role < Role::Host {
        return Err(AuthError::Forbidden {
            action: "creating spaces",
            role: claims.role,
            scope: String::new(),
        }
        .into());
    }
    let Json(req) = body?;
    let title = req.title.trim();
    if title.is_empty() || title.chars().count() > 200 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "title must be 1 to 200 characters",
        ));
    }
    if title.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "title must not contain control characters (line breaks, tabs, NUL)",
        ));
    }
    let row = app
        .create(title, req.scheduled_at, req.private, &claims.sub)
        .await?;
    let entry = SpaceEntry { row, live: None };
    let mut body = space_json(&app, &entry);
    // The creator gets a host token for the new space.
    let host = Claims::new(
        &claims.sub,
        Role::Host,
        Some(&entry.row.id),
        now_secs(),
        7 * 86_400,
    );
    let host_token = token::sign(&host, &app.secret)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    body["host_token"] = json!(host_token);
    let location = format!("/api/spaces/{}", entry.row.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

async fn transition(app: Arc<App>, headers: HeaderMap, id: String, t: Transition) -> ApiResult {
    let claims = bearer(&app, &headers)?;
    let action = match t {
        Transition::Start => "starting this space",
        Transition::End => "ending this space",
    };
    entry_or_404(&app, &id)?;
    auth::require(&claims, &id, Role::Host, action)?;
    let entry = app.transition(&id, t).await?;
    tracing::info!(space = %id, identity = %claims.sub, state = %entry.row.state, "space state changed");
    Ok(Json(space_json(&app, &entry)).into_response())
}

async fn start_space(State(app): Shared, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    transition(app, headers, id, Transition::Start).await
}

async fn end_space(State(app): Shared, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    transition(app, headers, id, Transition::End).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintToken {
    role: String,
    identity: Option<String>,
    ttl: Option<String>,
}

async fn mint_token(
    State(app): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<MintToken>, JsonRejection>,
) -> ApiResult {
    let claims = bearer(&app, &headers)?;
    entry_or_404(&app, &id)?;
    auth::require(&claims, &id, Role::Host, "minting tokens for this space")?;
    let Json(req) = body?;
    let role: Role = req
        .role
        .parse()
        .map_err(|e: String| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    if role >= Role::Host && claims.role != Role::Admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "only an admin may mint host or admin tokens",
        ));
    }
    let ttl = parse_ttl(req.ttl.as_deref().unwrap_or("12h"))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let identity = req.identity.unwrap_or_else(|| role.as_str().to_string());
    if identity.is_empty() || identity.len() > 100 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "identity must be 1 to 100 bytes",
        ));
    }
    let minted = Claims::new(&identity, role, Some(&id), now_secs(), ttl);
    let token = token::sign(&minted, &app.secret)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok((StatusCode::CREATED, Json(json!({
        "token": token, "role": role, "space": id, "identity": identity, "expires_at": minted.exp,
    }))).into_response())
}

#[derive(Deserialize)]
struct AdmissionQuery {
    ticket: Option<String>,
    token: Option<String>,
}

/// For pages: asks to listen before opening the stream. Admitted: a pass
/// (a ticket holding a slot) to append to the live URL. Otherwise the
/// waiting-room answer, or what the space's state allows instead.
async fn admission(
    State(app): Shared,
    Path(id): Path<String>,
    axum::Extension(axum::extract::ConnectInfo(peer)): axum::Extension<
        axum::extract::ConnectInfo<std::net::SocketAddr>,
    >,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<AdmissionQuery>,
) -> ApiResult {
    let e = entry_or_404(&app, &id)?;
    // a private space's state is not told to strangers either
    require_read(&app, &e, &headers, q.token.as_deref())?;
    let urls = &space_json(&app, &e)["urls"];
    let replay = urls["replay"].as_str().unwrap_or_default().to_string();
    match e.row.state {
        SpaceState::Scheduled => {
            return Ok(
                Json(json!({"state": "scheduled", "scheduled_at": e.row.scheduled_at}))
                    .into_response(),
            )
        }
        SpaceState::Ended => {
            return Ok(Json(json!({"state": "ended", "replay": replay})).into_response())
        }
        SpaceState::Live => {}
    }
    let verdict = crate::admit::read_ticket(&app, q.ticket.as_deref()).and_then(|ticket| {
        crate::admit::check_join_rate(&app, peer.ip())?;
        crate::admit::pass(&app, peer.ip(), ticket, &replay)
    });
    match verdict {
        Ok(pass) => {
            let mut live = format!(
                "{}?ticket={pass}",
                urls["live"].as_str().unwrap_or_default()
            );
            // a private stream wants its token as well as the pass
            if let (true, Some(token)) = (e.row.private, q.token.as_deref()) {
                live.push_str(&format!("&token={token}"));
            }
            Ok(Json(json!({"state": "admitted", "live": live})).into_response())
        }
        Err(r) => {
            metrics::counter!("tribune_listener_rejects_total", "reason" => r.reason).increment(1);
            let mut body = r.body;
            body["state"] = json!("waiting");
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let mut res = (status, Json(body)).into_response();
            if let Some(secs) = r
                .retry_after
                .and_then(|s| HeaderValue::from_str(&s.to_string()).ok())
            {
                res.headers_mut().insert(header::RETRY_AFTER, secs);
            }
            Ok(res)
        }
    }
}

/// The recording, with Range support: complete once the space has ended,
/// and "from the start" (everything recorded so far) while it is live.
async fn replay(State(app): Shared, Path(id): Path<String>, req: Request) -> ApiResult {
    let e = readable_entry(&app, &id, req.headers(), req.uri().query())?;
    if e.row.state == SpaceState::Scheduled {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "space has not started: no recording yet",
        ));
    }
    if !valid_space_id(&id) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no recording"));
    }
    let path = recording_path(&app.cfg.data, &id);
    if std::fs::metadata(&path).map_or(true, |m| m.len() == 0) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no audio was recorded in this space",
        ));
    }
    let served = tower_http::services::ServeFile::new(path)
        .oneshot(ignore_unknown_range(req))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut res = served.map(Body::new);
    let cache = if e.row.private {
        "private, no-cache"
    } else if e.row.state == SpaceState::Ended {
        "public, max-age=86400, immutable"
    } else {
        "no-cache"
    };
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if res.status().is_success() {
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/ogg"));
    }
    Ok(res)
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

/// A live stream asked for on a kept-alive connection: send the client to
/// a fresh connection, where the front door serves it.
async fn live_elsewhere(Path(id): Path<String>) -> Response {
    (
        StatusCode::TEMPORARY_REDIRECT,
        [
            (header::LOCATION, format!("/spaces/{id}/live.opus")),
            (header::CONNECTION, "close".to_string()),
        ],
    )
        .into_response()
}

async fn metrics(State(app): Shared) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const APP_CSS: &str = include_str!("../../web/app.css");

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

async fn space_page(State(app): Shared, Path(id): Path<String>) -> ApiResult {
    entry_or_404(&app, &id)?;
    Ok(Html(INDEX_HTML).into_response())
}
