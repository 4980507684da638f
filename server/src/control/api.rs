//! Spaces over HTTP: create, list, read, start, end, mint tokens; the
//! recording (with Range) and the node's metrics.

use super::auth::{self, AuthError};
use super::spaces::{App, NewSpace, SpaceEntry};
use super::{
    bearer, entry_or_404, ignore_unknown_range, origin_only, readable_entry, reader_claims,
    space_json, ApiError, ApiResult, Shared,
};
use crate::clock::wall_secs;
use crate::live::recorder::recording_path;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;
use tribune_core::space::{valid_space_id, SpaceState, Transition};
use tribune_core::token::{parse_ttl, Claims, Role};

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/spaces", get(list_spaces).post(create_space))
        .route("/api/spaces/{id}", get(show_space))
        .route("/api/spaces/{id}/start", post(start_space))
        .route("/api/spaces/{id}/end", post(end_space))
        .route("/api/spaces/{id}/tokens", post(mint_token))
        .route("/spaces/{id}/replay.opus", get(replay))
        .route("/metrics", get(metrics))
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
    app.space_or_fetch(&id).await;
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
    /// The name people see for the host (1 to 60 characters).
    host_name: Option<String>,
}

async fn create_space(
    State(app): Shared,
    headers: HeaderMap,
    body: Result<Json<CreateSpace>, JsonRejection>,
) -> ApiResult {
    origin_only(&app)?;
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
    let host_name = match req
        .host_name
        .as_deref()
        .map(tribune_core::stage::clean_name)
    {
        None => None,
        Some(Ok(name)) => Some(name),
        Some(Err(_)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "host_name must be 1 to 60 characters, without control characters",
            ))
        }
    };
    let row = app
        .create(NewSpace {
            title,
            scheduled_at: req.scheduled_at,
            private: req.private,
            created_by: &claims.sub,
            host_name: host_name.as_deref(),
        })
        .await?;
    let entry = SpaceEntry { row, live: None };
    let mut body = space_json(&app, &entry);
    // The creator gets a host token for the new space.
    let host = Claims::new(
        &claims.sub,
        Role::Host,
        Some(&entry.row.id),
        wall_secs(),
        7 * 86_400,
    );
    let host_token = app
        .keys
        .sign(&host)
        .map_err(|e| ApiError::new(StatusCode::FORBIDDEN, e))?;
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
    origin_only(&app)?;
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
    origin_only(&app)?;
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
    let minted = Claims::new(&identity, role, Some(&id), wall_secs(), ttl);
    let token = app
        .keys
        .sign(&minted)
        .map_err(|e| ApiError::new(StatusCode::FORBIDDEN, e))?;
    Ok((StatusCode::CREATED, Json(json!({
        "token": token, "role": role, "space": id, "identity": identity, "expires_at": minted.exp,
    }))).into_response())
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

async fn metrics(State(app): Shared) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}
