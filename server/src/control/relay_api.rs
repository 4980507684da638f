//! What nodes ask each other: the relay of a space's track (`?from=SEQ`
//! resumes), the public keys tokens are verified with, and who this node
//! is. The relay takes a token of role `node` (or admin): a listener's
//! token, or none, gets a clear 401/403.

use super::auth;
use super::spaces::App;
use super::{bearer, ApiError, ApiResult, Shared};
use crate::live::relay::{AacRequest, RelayOut};
use crate::stage::OnAir;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;
use tribune_core::space::SpaceState;
use tribune_core::token::Role;
use tribune_media::relay::CONTENT_TYPE;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/spaces/{id}/relay", get(relay))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/api/node", get(whoami))
}

/// The bearer is another node of the fleet.
fn require_node(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let claims = bearer(app, headers)?;
    if claims.role != Role::Node && claims.role != Role::Admin {
        return Err(auth::AuthError::Forbidden {
            action: "relaying spaces (a node token is needed)",
            role: claims.role,
            scope: String::new(),
        }
        .into());
    }
    Ok(())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RelayQuery {
    from: Option<u64>,
}

async fn relay(
    State(app): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<RelayQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    require_node(&app, &headers)?;
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let entry = app
        .space_or_fetch(&id)
        .await
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no space with id {id:?}")))?;
    let live = match (entry.row.state, entry.live) {
        (SpaceState::Live, Some(OnAir { space, .. })) => space,
        (SpaceState::Scheduled, _) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "the space is not live yet",
            ))
        }
        _ => return Err(ApiError::new(StatusCode::GONE, "the space has ended")),
    };
    let aac = AacRequest::parse(
        headers
            .get(tribune_media::relay::AAC_REQUEST_HEADER)
            .and_then(|v| v.to_str().ok()),
    );
    let (out, first) = RelayOut::new(live, q.from, aac);
    metrics::counter!("tribune_relays_total", "space" => id.clone()).increment(1);
    let sent = metrics::counter!("tribune_relay_bytes_total", "space" => id.clone());
    tracing::info!(space = %id, from = ?q.from, "relay out");
    let stream = futures_util::stream::unfold((out, Some(first)), move |(mut out, first)| {
        let sent = sent.clone();
        async move {
            let bytes = match first.filter(|f| !f.is_empty()) {
                Some(first) => first.freeze(),
                None => out.next_bytes().await?,
            };
            sent.increment(bytes.len() as u64);
            Some((Ok::<_, std::io::Error>(bytes), (out, None)))
        }
    });
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The public keys every node verifies tokens with.
async fn jwks(State(app): Shared) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(app.keys.jwks.clone()),
    )
}

/// Who this node is, for another node holding a node token.
async fn whoami(State(app): Shared, headers: HeaderMap) -> ApiResult {
    require_node(&app, &headers)?;
    Ok(Json(json!({
        "role": if app.is_edge() { "edge" } else { "origin" },
        "url": app.base_url(),
    }))
    .into_response())
}
