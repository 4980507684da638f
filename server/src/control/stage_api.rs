//! The stage over HTTP: WHIP (RFC 9725) sessions for speakers, the
//! request-to-speak queue, host moderation, live stage events (SSE), and
//! each speaker's recorded track. The sessions themselves are the stage
//! hub's (`stage::hub`): these handlers check who asks and answer.

use super::auth;
use super::spaces::{App, SpaceEntry};
use super::{
    bearer, entry_or_404, ignore_unknown_range, readable_entry, space_json, ApiError, ApiResult,
    Shared,
};
use crate::clock::{wall_ms, wall_secs};
use crate::stage::tracks::{list_tracks, track_title, tracks_dir};
use crate::stage::OnAir;
use crate::stage::{JoinError, StageHub};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;
use tribune_core::space::SpaceState;
use tribune_core::stage::{MutedBy, StageError, StageRole, MAX_ON_STAGE};
use tribune_core::token::{Claims, Role};

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/spaces/{id}/whip", post(whip_offer))
        .route(
            "/spaces/{id}/whip/{session}",
            axum::routing::delete(whip_delete),
        )
        .route("/api/spaces/{id}/stage", get(show_stage))
        .route("/api/spaces/{id}/events", get(events))
        .route("/api/spaces/{id}/stage/requests", post(request_to_speak))
        .route(
            "/api/spaces/{id}/stage/requests/{rid}",
            axum::routing::delete(withdraw_request),
        )
        .route(
            "/api/spaces/{id}/stage/queue",
            post(set_queue).delete(clear_queue),
        )
        .route(
            "/api/spaces/{id}/stage/requests/{rid}/approve",
            post(approve),
        )
        .route(
            "/api/spaces/{id}/stage/requests/{rid}/decline",
            post(decline),
        )
        .route(
            "/api/spaces/{id}/stage/requests/{rid}/token",
            post(claim_token),
        )
        .route("/api/spaces/{id}/stage/members/{identity}/mute", post(mute))
        .route(
            "/api/spaces/{id}/stage/members/{identity}/remove",
            post(remove),
        )
        .route("/api/spaces/{id}/tracks", get(list_speaker_tracks))
        .route("/spaces/{id}/tracks/{file}", get(speaker_track))
}

fn stage_error(e: StageError) -> ApiError {
    ApiError::new(stage_status(&e), e.to_string())
}

fn stage_status(e: &StageError) -> StatusCode {
    match e {
        StageError::Full | StageError::Pending => StatusCode::CONFLICT,
        StageError::Removed(_) | StageError::Declined | StageError::MutedByHost => {
            StatusCode::FORBIDDEN
        }
        StageError::NotOnStage(_) | StageError::UnknownRequest(_) => StatusCode::NOT_FOUND,
        StageError::QueueFull => StatusCode::SERVICE_UNAVAILABLE,
        StageError::TooManyFromYou => StatusCode::TOO_MANY_REQUESTS,
        StageError::Closed => StatusCode::CONFLICT,
        StageError::BadName => StatusCode::BAD_REQUEST,
    }
}

/// The stage of the live space behind `id`, or why it is closed.
fn live_entry(app: &App, id: &str) -> Result<(SpaceEntry, Arc<StageHub>), ApiError> {
    let entry = entry_or_404(app, id)?;
    match (entry.row.state, entry.live.clone()) {
        (
            SpaceState::Live,
            Some(OnAir {
                stage: Some(stage), ..
            }),
        ) => Ok((entry, stage)),
        (SpaceState::Live, Some(_)) => Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "this node relays the space; its stage is on the origin",
        )),
        (SpaceState::Scheduled, _) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "the space is not live yet: the host starts it first",
        )),
        _ => Err(ApiError::new(StatusCode::GONE, "the space has ended")),
    }
}

/// A stage role from a token: the space's creator is its host, other host
/// tokens are co-hosts.
fn stage_role(token_role: Role, identity: &str, created_by: &str) -> StageRole {
    match token_role {
        Role::Host | Role::Admin if identity == created_by => StageRole::Host,
        Role::Host | Role::Admin => StageRole::Cohost,
        _ => StageRole::Speaker,
    }
}

async fn whip_offer(
    State(app): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let claims = bearer(&app, &headers)?;
    entry_or_404(&app, &id)?;
    auth::require(&claims, &id, Role::Speaker, "speaking in this space")?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/sdp")
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the SDP offer with Content-Type: application/sdp",
        ));
    }
    let (entry, stage) = live_entry(&app, &id)?;
    let offer = std::str::from_utf8(&body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "the SDP offer is not UTF-8 text"))?;
    let identity = claims.sub.clone();
    let role = stage_role(claims.role, &identity, &entry.row.created_by);
    let joined = stage.join(offer, &identity, role).map_err(|e| {
        let status = match &e {
            JoinError::Offer(o) => {
                StatusCode::from_u16(o.status()).unwrap_or(StatusCode::BAD_REQUEST)
            }
            JoinError::Stage(s) => stage_status(s),
            JoinError::Ending | JoinError::Mixer(_) => StatusCode::CONFLICT,
        };
        metrics::counter!("tribune_whip_rejects_total", "reason" => "offer").increment(1);
        ApiError::new(status, e.to_string())
    })?;
    let session = joined.session;
    metrics::counter!("tribune_whip_sessions_total").increment(1);
    tracing::info!(space = %id, %identity, session, ?role, "speaker joined the stage");
    Ok((
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_string()),
            (header::LOCATION, format!("/spaces/{id}/whip/{session:x}")),
        ],
        joined.answer,
    )
        .into_response())
}

async fn whip_delete(
    State(app): Shared,
    Path((id, session)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let claims = bearer(&app, &headers)?;
    entry_or_404(&app, &id)?;
    auth::require(
        &claims,
        &id,
        Role::Speaker,
        "ending a stage session in this space",
    )?;
    let (_, stage) = live_entry(&app, &id)?;
    let session = u64::from_str_radix(&session, 16)
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "no such WHIP session"))?;
    let member = {
        let st = stage.lock();
        st.members().iter().find(|m| m.session == session).cloned()
    };
    let Some(member) = member else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such WHIP session"));
    };
    if member.identity != claims.sub {
        auth::require(&claims, &id, Role::Host, "ending someone else's session")?;
    }
    stage.leave(session);
    Ok(StatusCode::OK.into_response())
}

/// What pages show: the space and its stage.
/// Requests shown to pages; the rest are counted (a host reads the oldest first).
const REQUESTS_SHOWN: usize = 100;

fn stage_json(app: &App, entry: &SpaceEntry) -> Value {
    let stage = entry.live.as_ref().and_then(|o| o.stage.as_ref());
    let (members, requests, pending, open) = match stage {
        Some(stage) => {
            let mut st = stage.lock();
            if st.expire(wall_ms()) > 0 {
                stage.changed();
            }
            let members = serde_json::to_value(st.members()).unwrap_or(Value::Null);
            let requests: Vec<_> = st.pending().take(REQUESTS_SHOWN).cloned().collect();
            (
                members,
                serde_json::to_value(requests).unwrap_or(Value::Null),
                st.pending().count(),
                st.requests_open(),
            )
        }
        None => (json!([]), json!([]), 0, false),
    };
    json!({
        "space": space_json(app, entry),
        "stage": {
            "members": members,
            "requests": requests,
            "pending_requests": pending,
            "requests_open": open,
            "max_speakers": MAX_ON_STAGE,
        },
    })
}

async fn show_stage(
    State(app): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult {
    app.space_or_fetch(&id).await;
    let entry = readable_entry(&app, &id, &headers, query.as_deref())?;
    Ok(Json(stage_json(&app, &entry)).into_response())
}

/// Server-sent events: the stage snapshot at once, on every change, and
/// every second (listener counts and levels move continuously).
async fn events(
    State(app): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult {
    app.space_or_fetch(&id).await;
    readable_entry(&app, &id, &headers, query.as_deref())?;
    struct Follow {
        app: Arc<App>,
        id: String,
        changes: Option<tokio::sync::watch::Receiver<u64>>,
        first: bool,
    }
    let start = Follow {
        app,
        id,
        changes: None,
        first: true,
    };
    let stream = futures_util::stream::unfold(start, |mut f| async move {
        if !f.first {
            let tick = tokio::time::sleep(Duration::from_secs(1));
            match f.changes.as_mut() {
                Some(rx) => {
                    tokio::select! {
                        changed = rx.changed() => if changed.is_err() { f.changes = None },
                        _ = tick => {}
                    }
                }
                None => tick.await,
            }
        }
        f.first = false;
        let entry = f.app.space(&f.id)?;
        if f.changes.is_none() {
            if let Some(stage) = entry.live.as_ref().and_then(|o| o.stage.as_ref()) {
                let mut rx = stage.subscribe();
                rx.mark_unchanged();
                f.changes = Some(rx);
            }
        }
        let data: Arc<str> = match entry.live.as_ref().and_then(|o| o.stage.as_ref()) {
            Some(stage) => stage.snapshot(|| stage_json(&f.app, &entry).to_string()),
            None => stage_json(&f.app, &entry).to_string().into(),
        };
        let event: Result<Event, Infallible> = Ok(Event::default().event("stage").data(&*data));
        Some((event, f))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpeakRequest {
    name: String,
}

fn request_ticket_subject(rid: &str) -> String {
    format!("request:{rid}")
}

async fn request_to_speak(
    State(app): Shared,
    Path(id): Path<String>,
    axum::Extension(axum::extract::ConnectInfo(peer)): axum::Extension<
        axum::extract::ConnectInfo<std::net::SocketAddr>,
    >,
    headers: HeaderMap,
    body: Result<Json<SpeakRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    // anonymous, so the same per-IP rate as joining keeps one client from
    // filling the host's queue
    let limited = app
        .request_rate
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
        .map_or(Ok(()), |rate| rate.check(peer.ip(), app.mono.ms()));
    if let Err(wait_ms) = limited {
        let secs = wait_ms.div_ceil(1000).max(1);
        let body =
            json!({"error": "too many requests from your address; slow down", "retry_after": secs});
        return Ok((
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, secs.to_string())],
            Json(body),
        )
            .into_response());
    }
    let (entry, stage) = live_entry(&app, &id)?;
    if entry.row.private {
        let claims = bearer(&app, &headers)?;
        auth::require(
            &claims,
            &id,
            Role::Listener,
            "asking to speak in this private space",
        )?;
    }
    let Json(req) = body?;
    let rid = format!("{:08x}", rand::random::<u32>());
    stage
        .lock()
        .request(&rid, &req.name, peer.ip(), wall_ms())
        .map_err(stage_error)?;
    stage.changed();
    let claims = Claims::new(
        &request_ticket_subject(&rid),
        Role::Listener,
        Some(&id),
        wall_secs(),
        12 * 3600,
    );
    let ticket = app
        .keys
        .sign(&claims)
        .map_err(|e| ApiError::new(StatusCode::FORBIDDEN, e))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": rid, "ticket": ticket })),
    )
        .into_response())
}

/// The bearer holds the ticket of request `rid` in this space.
fn require_ticket(app: &App, headers: &HeaderMap, id: &str, rid: &str) -> Result<(), ApiError> {
    let claims = bearer(app, headers)?;
    if claims.sub != request_ticket_subject(rid) || claims.space.as_deref() != Some(id) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this ticket is for another request",
        ));
    }
    Ok(())
}

async fn withdraw_request(
    State(app): Shared,
    Path((id, rid)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    require_ticket(&app, &headers, &id, &rid)?;
    let (_, stage) = live_entry(&app, &id)?;
    stage.lock().withdraw(&rid).map_err(stage_error)?;
    stage.changed();
    Ok(StatusCode::OK.into_response())
}

async fn host_decides(
    app: Arc<App>,
    id: String,
    rid: String,
    headers: HeaderMap,
    approve: bool,
) -> ApiResult {
    let claims = bearer(&app, &headers)?;
    entry_or_404(&app, &id)?;
    auth::require(&claims, &id, Role::Host, "answering requests to speak")?;
    let (_, stage) = live_entry(&app, &id)?;
    {
        let mut st = stage.lock();
        if approve {
            st.approve(&rid)
        } else {
            st.decline(&rid)
        }
        .map_err(stage_error)?;
    }
    stage.changed();
    Ok(Json(json!({ "id": rid, "approved": approve })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueSettings {
    open: bool,
}

/// The host opens or closes requests to speak.
async fn set_queue(
    State(app): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<QueueSettings>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let claims = bearer(&app, &headers)?;
    entry_or_404(&app, &id)?;
    auth::require(
        &claims,
        &id,
        Role::Host,
        "opening or closing requests to speak",
    )?;
    let Json(req) = body?;
    let (_, stage) = live_entry(&app, &id)?;
    stage.lock().set_requests_open(req.open);
    stage.changed();
    Ok(Json(json!({ "requests_open": req.open })).into_response())
}

/// The host declines every pending request at once.
async fn clear_queue(State(app): Shared, Path(id): Path<String>, headers: HeaderMap) -> ApiResult {
    let claims = bearer(&app, &headers)?;
    entry_or_404(&app, &id)?;
    auth::require(&claims, &id, Role::Host, "clearing requests to speak")?;
    let (_, stage) = live_entry(&app, &id)?;
    let declined = stage.lock().decline_all();
    stage.changed();
    tracing::info!(space = %id, declined, "host cleared the request queue");
    Ok(Json(json!({ "declined": declined })).into_response())
}

async fn approve(
    State(app): Shared,
    Path((id, rid)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    host_decides(app, id, rid, headers, true).await
}

async fn decline(
    State(app): Shared,
    Path((id, rid)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    host_decides(app, id, rid, headers, false).await
}

/// An approved requester trades their ticket for a speaker token.
async fn claim_token(
    State(app): Shared,
    Path((id, rid)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    require_ticket(&app, &headers, &id, &rid)?;
    let (_, stage) = live_entry(&app, &id)?;
    let claimed = {
        let mut st = stage.lock();
        st.touch(&rid, wall_ms());
        st.claim(&rid)
    };
    let (identity, name) = match claimed {
        Ok(v) => v,
        Err(e @ StageError::Pending) => {
            return Ok((
                StatusCode::CONFLICT,
                Json(json!({ "error": e.to_string(), "state": "pending" })),
            )
                .into_response())
        }
        Err(e @ StageError::Declined) => {
            return Ok((
                StatusCode::FORBIDDEN,
                Json(json!({ "error": e.to_string(), "state": "declined" })),
            )
                .into_response())
        }
        Err(e) => return Err(stage_error(e)),
    };
    let claims = Claims::new(&identity, Role::Speaker, Some(&id), wall_secs(), 12 * 3600);
    let token = app
        .keys
        .sign(&claims)
        .map_err(|e| ApiError::new(StatusCode::FORBIDDEN, e))?;
    Ok(Json(json!({ "token": token, "identity": identity, "name": name })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Mute {
    muted: bool,
}

async fn mute(
    State(app): Shared,
    Path((id, identity)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Json<Mute>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let claims = bearer(&app, &headers)?;
    entry_or_404(&app, &id)?;
    let by = if claims.allows(&id, Role::Host) {
        MutedBy::Host
    } else if claims.sub == identity && claims.allows(&id, Role::Speaker) {
        MutedBy::Themself
    } else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "only the host or the speaker themself can mute a speaker",
        ));
    };
    let Json(req) = body?;
    let (_, stage) = live_entry(&app, &id)?;
    stage.mute(&identity, req.muted, by).map_err(stage_error)?;
    Ok(Json(json!({ "identity": identity, "muted": req.muted })).into_response())
}

async fn remove(
    State(app): Shared,
    Path((id, identity)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let claims = bearer(&app, &headers)?;
    entry_or_404(&app, &id)?;
    auth::require(&claims, &id, Role::Host, "moving speakers to the audience")?;
    let (_, stage) = live_entry(&app, &id)?;
    stage.remove(&identity).map_err(stage_error)?;
    tracing::info!(space = %id, %identity, "host moved a speaker to the audience");
    Ok(Json(json!({ "identity": identity, "removed": true })).into_response())
}

async fn list_speaker_tracks(
    State(app): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let entry = readable_entry(&app, &id, &headers, query.as_deref())?;
    let dir = tracks_dir(&app.cfg.data, &id);
    let tracks: Vec<Value> = list_tracks(&dir)
        .into_iter()
        .map(|(file, bytes)| {
            let identity = file.trim_end_matches(".opus").to_string();
            let name = track_title(&dir.join(&file)).unwrap_or_else(|| identity.clone());
            json!({ "identity": identity, "name": name, "url": format!("/spaces/{id}/tracks/{file}"), "bytes": bytes })
        })
        .collect();
    Ok(Json(json!({ "state": entry.row.state, "tracks": tracks })).into_response())
}

/// A recorded speaker track file; names are checked so no path escapes
/// the space's folder.
async fn speaker_track(
    State(app): Shared,
    Path((id, file)): Path<(String, String)>,
    req: Request,
) -> ApiResult {
    let entry = readable_entry(&app, &id, req.headers(), req.uri().query())?;
    let req = ignore_unknown_range(req);
    let stem = file.strip_suffix(".opus").unwrap_or("");
    let safe = !stem.is_empty()
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let path = tracks_dir(&app.cfg.data, &id).join(&file);
    if !safe || !path.is_file() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no such speaker track",
        ));
    }
    let served = tower_http::services::ServeFile::new(path)
        .oneshot(req)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut res = served.map(axum::body::Body::new);
    if res.status().is_success() {
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("audio/ogg"),
        );
    }
    if entry.row.private {
        res.headers_mut().insert(
            header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("private, no-cache"),
        );
    }
    Ok(res)
}
