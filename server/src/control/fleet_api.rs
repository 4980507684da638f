//! The operator's view: every node of the fleet (from the directory in
//! Redis) with its listeners, capacity, health and relay lag, and each
//! live space's audience over the fleet. `GET /api/fleet` (admin token)
//! and the page `/fleet` that follows it live.

use super::spaces::App;
use super::{bearer, ApiError, ApiResult, Shared};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;
use tribune_core::token::Role;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/fleet", get(fleet))
        .route("/fleet", get(page))
}

const FLEET_HTML: &str = include_str!("../../../web/fleet.html");

async fn page() -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], Html(FLEET_HTML)).into_response()
}

async fn fleet(State(app): Shared, headers: HeaderMap, RawQuery(query): RawQuery) -> ApiResult {
    let claims = match super::query_token(query.as_deref()) {
        Some(t) => super::auth::verify(&app.keys, t, crate::clock::wall_secs())?,
        None => bearer(&app, &headers)?,
    };
    if claims.role != Role::Admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the fleet view needs an admin token",
        ));
    }
    let me = app.fleet_report();
    let (nodes, redis) = match app.fleet.as_ref().map(|f| (f.nodes(), f)) {
        Some((Some(nodes), _)) => (json!(nodes), "up"),
        Some((None, f)) => (json!([local(&app, &f.me.name, &me)]), "unavailable"),
        None => (json!([local(&app, &app.base_url(), &me)]), "not configured"),
    };
    let spaces: Vec<_> = app
        .list()
        .into_iter()
        .filter(|e| e.live.is_some())
        .map(|e| {
            let v = super::space_json(&app, &e);
            json!({
                "id": e.row.id,
                "title": e.row.title,
                "listeners": v["listeners"],
                "listeners_here": v["listeners_here"],
                "peak_listeners": v["peak_listeners"],
            })
        })
        .collect();
    Ok(Json(json!({ "redis": redis, "nodes": nodes, "spaces": spaces })).into_response())
}

/// This node alone, when there is no directory to read.
fn local(app: &App, name: &str, me: &super::fleet::Report) -> serde_json::Value {
    json!({
        "name": name,
        "url": app.base_url(),
        "role": if app.is_edge() { "edge" } else { "origin" },
        "capacity": app.cfg.max_listeners,
        "listeners": me.listeners,
        "healthy": me.healthy,
        "relay_lag_ms": me.relay_lag_ms,
        "spaces": me.spaces,
    })
}
