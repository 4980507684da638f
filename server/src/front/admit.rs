//! Who gets in: connection budgets at accept, the listener join decision
//! (join rate, token, waiting room), the answers everyone not admitted
//! gets (JSON, or a waiting-room page), the page's own admission call, and
//! the watcher that turns measured signals into "stop admitting".
//! The decisions are the core's (`Door`, `WaitingRoom`); this is their IO.

use super::head::{html_response, json_response};
use crate::clock::{wall_secs, Mono};
use crate::config::Config;
use crate::control::auth;
use crate::control::spaces::App;
use crate::health::Health;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rand::Rng;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tribune_core::admission::{
    Decision, Door, DoorConfig, Refusal, Ticket, WaitingRoom, WaitingRoomConfig,
};
use tribune_core::space::SpaceState;
use tribune_core::token::{sign_ticket, verify_ticket, Role};

/// The admission state of the node's public port.
pub struct Admission {
    pub app: Arc<App>,
    rooms: Mutex<Rooms>,
    /// Identifies this run of the node (waiting-room tickets do not outlive it).
    boot: u64,
    /// Open connections on the public port, and how many it may hold.
    connections: AtomicUsize,
    connection_budget: usize,
    /// Open connections on the reserved lane.
    reserved_connections: AtomicUsize,
}

/// Per-address caps and join rates, and the waiting room.
struct Rooms {
    door: Door,
    room: WaitingRoom,
}

impl Admission {
    pub fn new(app: Arc<App>) -> Arc<Admission> {
        let cfg = &app.cfg;
        let file_limit = file_limit();
        let connection_budget = cfg.connection_budget(file_limit);
        if connection_budget < cfg.max_listeners {
            tracing::warn!(
                file_limit,
                connection_budget,
                max_listeners = cfg.max_listeners,
                "the open-file limit caps this node below --max-listeners"
            );
        }
        let rooms = Rooms {
            door: Door::new(DoorConfig {
                per_ip_connections: cfg.per_ip_connections,
                per_subnet_connections: cfg.per_subnet_connections,
                joins_per_ip_per_sec: cfg.joins_per_ip_per_sec,
                join_burst: cfg.join_burst,
                per_ip_connections_with_passes: cfg.per_ip_connections_with_passes,
                per_subnet_connections_with_passes: cfg.per_subnet_connections_with_passes,
            }),
            room: WaitingRoom::new(waiting_room_config(cfg)),
        };
        Arc::new(Admission {
            rooms: Mutex::new(rooms),
            boot: rand::random(),
            connections: AtomicUsize::new(0),
            connection_budget,
            reserved_connections: AtomicUsize::new(0),
            app,
        })
    }

    fn cfg(&self) -> &Config {
        &self.app.cfg
    }

    fn health(&self) -> &Health {
        &self.app.health
    }

    fn mono(&self) -> Mono {
        self.app.mono
    }

    fn lock(&self) -> MutexGuard<'_, Rooms> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn waiting_room_config(cfg: &Config) -> WaitingRoomConfig {
    WaitingRoomConfig {
        capacity: cfg.max_listeners,
        admit_per_sec: cfg.admit_per_sec,
        grace_ms: cfg.admit_grace_ms,
        min_retry_ms: 1_000,
        max_retry_ms: 30_000,
    }
}

/// The process's open-file limit.
pub fn file_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse().ok()
        })
        .unwrap_or(1024)
}

/// Holds a connection's place in the budgets; frees it when dropped.
pub struct ConnGuard {
    admission: Arc<Admission>,
    ip: Option<IpAddr>,
    /// The connection is a stream that presented a pass: its address keeps
    /// the pass's raised allowance while it is open.
    holds_pass: bool,
}

impl ConnGuard {
    /// A listener presented a valid pass on this connection.
    pub fn hold_pass(&mut self) {
        if let (Some(ip), false) = (self.ip, self.holds_pass) {
            let now = self.admission.mono().ms();
            self.holds_pass = self.admission.lock().door.hold_pass(ip, now);
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        match self.ip {
            Some(ip) => {
                self.admission.connections.fetch_sub(1, Ordering::AcqRel);
                let mut rooms = self.admission.lock();
                rooms.door.close(ip);
                if self.holds_pass {
                    rooms.door.release_pass(ip);
                }
            }
            None => {
                self.admission
                    .reserved_connections
                    .fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

impl Admission {
    /// Checks a new public-port connection against the node's connection
    /// budget and the per-IP/subnet caps. Nothing else is allocated first.
    pub fn open_public(self: &Arc<Self>, ip: IpAddr) -> Result<ConnGuard, &'static str> {
        if self.connections.fetch_add(1, Ordering::AcqRel) >= self.connection_budget {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            return Err("connection_budget");
        }
        let now = self.mono().ms();
        if let Err(r) = self.lock().door.open(ip, now) {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            return Err(r.reason());
        }
        Ok(ConnGuard {
            admission: self.clone(),
            ip: Some(ip),
            holds_pass: false,
        })
    }

    /// The reserved lane has its own budget and no per-IP caps: it is for
    /// hosts, speakers and sources, who authenticate on every request.
    pub fn open_reserved(self: &Arc<Self>) -> Result<ConnGuard, &'static str> {
        if self.reserved_connections.fetch_add(1, Ordering::AcqRel)
            >= self.cfg().reserved_connections
        {
            self.reserved_connections.fetch_sub(1, Ordering::AcqRel);
            return Err("reserved_budget");
        }
        Ok(ConnGuard {
            admission: self.clone(),
            ip: None,
            holds_pass: false,
        })
    }
}

/// Why a listener is not admitted, and what it is told: the same answer
/// renders as JSON, or as the waiting-room page for a browser.
pub struct Refused {
    pub status: u16,
    /// For `/metrics`.
    pub reason: &'static str,
    pub retry_after: Option<u64>,
    pub message: String,
    pub waiting: Option<Box<Waiting>>,
}

/// A place in the waiting room.
pub struct Waiting {
    pub ticket: String,
    pub position: u64,
    pub lost_place: bool,
    pub replay: String,
}

impl Refused {
    fn plain(status: u16, reason: &'static str, message: impl Into<String>) -> Refused {
        Refused {
            status,
            reason,
            retry_after: None,
            message: message.into(),
            waiting: None,
        }
    }

    pub fn to_json(&self) -> Value {
        let mut body = json!({ "error": self.message });
        if let Some(secs) = self.retry_after {
            body["retry_after"] = json!(secs);
        }
        if let Some(w) = &self.waiting {
            body["waiting_room"] = json!({
                "ticket": w.ticket,
                "position": w.position,
                "retry_after": self.retry_after,
                "lost_place": w.lost_place,
                "how": "come back after retry_after seconds with ?ticket=<ticket>; coming back earlier loses your place",
            });
            body["replay"] = json!(w.replay);
            body["replay_note"] =
                json!("the full recording is published the moment the space ends");
        }
        body
    }

    /// The complete response: the waiting-room page for a browser that
    /// opened the stream URL (`html_path`), JSON otherwise.
    pub fn response(&self, html_path: Option<&str>) -> Vec<u8> {
        metrics::counter!("tribune_listener_rejects_total", "reason" => self.reason).increment(1);
        let retry: Vec<(&str, String)> = self
            .retry_after
            .iter()
            .map(|s| ("Retry-After", s.to_string()))
            .collect();
        match (&self.waiting, html_path) {
            (Some(w), Some(path)) => html_response(
                self.status,
                &retry,
                &waiting_html(w, self.retry_after.unwrap_or(5), path),
            ),
            _ => json_response(self.status, &retry, &self.to_json()),
        }
    }
}

/// Retry-After in whole seconds, jittered upward so a refused crowd does
/// not come back in step (never earlier than the ticket allows).
fn retry_secs(ms: u64) -> u64 {
    let base = ms.div_ceil(1000).max(1);
    base + rand::rng().random_range(0..=base.div_ceil(4))
}

impl Admission {
    /// The first check on a join: the per-IP join rate (a map lookup).
    pub fn check_join_rate(&self, ip: IpAddr) -> Result<(), Refused> {
        let now = self.mono().ms();
        if let Err(Refusal::JoinRate { retry_after_ms }) = self.lock().door.join(ip, now) {
            let secs = retry_secs(retry_after_ms);
            let mut r = Refused::plain(
                429,
                "join_rate",
                "too many joins from your address; slow down",
            );
            r.retry_after = Some(secs);
            return Err(r);
        }
        Ok(())
    }

    /// For private spaces: a listener token for this space (signature and
    /// expiry checked) before anything is allocated for the listener.
    pub fn check_private(&self, space_id: &str, token: Option<&str>) -> Result<(), Refused> {
        let Some(token) = token else {
            return Err(Refused::plain(
                401,
                "token_missing",
                "this space is private: listen with ?token=<listener token>",
            ));
        };
        auth::verify(&self.app.keys, token, wall_secs())
            .and_then(|c| auth::require(&c, space_id, Role::Listener, "listening to this space"))
            .map_err(|e| Refused::plain(e.status(), "token_invalid", e.to_string()))
    }

    /// A waiting-room ticket or pass as sent: `Ok(None)` when there is
    /// none, refused when it does not verify.
    pub fn read_ticket(&self, raw: Option<&str>) -> Result<Option<Ticket>, Refused> {
        match raw.map(|t| verify_ticket(t, self.boot, &self.app.secret, wall_secs())) {
            None => Ok(None),
            Some(Ok(t)) => Ok(Some(t)),
            Some(Err(e)) => Err(Refused::plain(
                403,
                "bad_ticket",
                format!("invalid waiting-room ticket: {e}; join again without it"),
            )),
        }
    }

    /// Admits a listener holding `ticket` (verified) or none, after the
    /// cheaper checks passed: on `Ok` the node's listener count includes
    /// it (taken under the lock, so concurrent joins never overshoot); the
    /// caller's `ListenerGuard` gives it back.
    /// `replay_url` is built only for a refusal (it names the recording).
    pub fn join(
        &self,
        ticket: Option<Ticket>,
        replay_url: impl FnOnce() -> String,
    ) -> Result<(), Refused> {
        let now = self.mono().ms();
        let mut rooms = self.lock();
        let listeners = self.health().listeners();
        let healthy = self.health().healthy();
        match rooms.room.decide(now, listeners, healthy, ticket) {
            Decision::Admit => {
                self.health().listeners.fetch_add(1, Ordering::AcqRel);
                Ok(())
            }
            other => Err(self.refusal(other, healthy, &replay_url())),
        }
    }

    /// For a page that asks before opening the stream from `ip`: a pass
    /// holding a slot for the grace period. The address may hold the
    /// pass's connections meanwhile (see `Door::grant`).
    pub fn pass(
        &self,
        ip: IpAddr,
        ticket: Option<Ticket>,
        replay_url: &str,
    ) -> Result<String, Refused> {
        let now = self.mono().ms();
        let mut rooms = self.lock();
        let listeners = self.health().listeners();
        let healthy = self.health().healthy();
        match rooms.room.reserve(now, listeners, healthy, ticket) {
            Decision::Pass(t) => {
                rooms.door.grant(ip, now, now + self.cfg().admit_grace_ms);
                Ok(self.sign(t))
            }
            other => Err(self.refusal(other, healthy, replay_url)),
        }
    }

    fn sign(&self, ticket: Ticket) -> String {
        sign_ticket(ticket, self.boot, &self.app.secret, wall_secs() + 3600).unwrap_or_default()
    }

    /// What a listener the waiting room holds back is told.
    fn refusal(&self, decision: Decision, healthy: bool, replay_url: &str) -> Refused {
        let Decision::Wait {
            ticket,
            position,
            retry_after_ms,
            lost_place,
        } = decision
        else {
            // the room answers Admit or Pass otherwise, both handled by callers
            return Refused::plain(503, "waiting_room", "try again");
        };
        let why = if healthy {
            "this node is at listener capacity"
        } else {
            "this node is protecting the listeners it has"
        };
        Refused {
            status: 503,
            reason: if lost_place {
                "waiting_room_early"
            } else {
                "waiting_room"
            },
            retry_after: Some(retry_secs(retry_after_ms)),
            message: why.into(),
            waiting: Some(Box::new(Waiting {
                ticket: self.sign(ticket),
                position,
                lost_place,
                replay: replay_url.to_string(),
            })),
        }
    }
}

/// The waiting-room page for browsers that open the stream URL directly:
/// it shows the position and comes back on time with its ticket.
fn waiting_html(w: &Waiting, retry_after: u64, path: &str) -> String {
    let Waiting {
        ticket,
        position,
        replay,
        ..
    } = w;
    format!(
        "<!doctype html><meta charset=utf-8><meta name=viewport content='width=device-width'>\
         <meta http-equiv=refresh content='{retry_after};url={path}?ticket={ticket}'>\
         <title>Waiting room</title><body style='font:18px system-ui;max-width:30em;margin:3em auto;padding:0 1em'>\
         <h1>You're in line</h1><p>Position <b>{position}</b>. This page retries in {retry_after} s and \
         starts the live audio as soon as there is room; leaving or reloading early loses your place.</p>\
         <p>If live is not possible, the full recording is published the moment the space ends: \
         <a href='{replay}'>replay</a>.</p>"
    )
}

/// The routes front handles through the router: the page's admission call
/// and live streams asked for on kept-alive connections.
pub fn routes(admission: Arc<Admission>) -> Router {
    Router::new()
        .route("/api/spaces/{id}/admission", get(page_admission))
        .route("/spaces/{id}/live.opus", get(live_elsewhere))
        .with_state(admission)
}

#[derive(serde::Deserialize)]
struct AdmissionQuery {
    ticket: Option<String>,
    token: Option<String>,
}

/// For pages: asks to listen before opening the stream. Admitted: a pass
/// (a ticket holding a slot) to append to the live URL. Otherwise the
/// waiting-room answer, or what the space's state allows instead.
async fn page_admission(
    State(admission): State<Arc<Admission>>,
    Path(id): Path<String>,
    axum::Extension(axum::extract::ConnectInfo(peer)): axum::Extension<
        axum::extract::ConnectInfo<SocketAddr>,
    >,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<AdmissionQuery>,
) -> Result<Response, crate::control::ApiError> {
    let app = &admission.app;
    app.space_or_fetch(&id).await;
    let e = crate::control::entry_or_404(app, &id)?;
    // a private space's state is not told to strangers either
    crate::control::require_read(app, &e, &headers, q.token.as_deref())?;
    let urls = crate::control::space_urls(app, &id);
    match e.row.state {
        SpaceState::Scheduled => {
            return Ok(
                Json(json!({"state": "scheduled", "scheduled_at": e.row.scheduled_at}))
                    .into_response(),
            )
        }
        SpaceState::Ended => {
            return Ok(Json(json!({"state": "ended", "replay": urls.replay})).into_response())
        }
        SpaceState::Live => {}
    }
    let verdict = admission
        .read_ticket(q.ticket.as_deref())
        .and_then(|ticket| {
            admission.check_join_rate(peer.ip())?;
            admission.pass(peer.ip(), ticket, &urls.replay)
        });
    match verdict {
        Ok(pass) => {
            let mut live = format!("{}?ticket={pass}", urls.live);
            // a private stream wants its token as well as the pass
            if let (true, Some(token)) = (e.row.private, q.token.as_deref()) {
                live.push_str(&format!("&token={token}"));
            }
            Ok(Json(json!({"state": "admitted", "live": live})).into_response())
        }
        Err(r) => {
            metrics::counter!("tribune_listener_rejects_total", "reason" => r.reason).increment(1);
            let mut body = r.to_json();
            body["state"] = json!("waiting");
            // the tier any cache carries, a few seconds behind: the page
            // plays it while it waits (playlists hand a `?token=` on)
            if r.waiting.is_some() {
                body["hls"] = json!(urls.hls);
            }
            // nodes of the fleet with room, for a page that would rather move
            if let Some(fleet) = &app.fleet {
                let alternates: Vec<String> = fleet
                    .alternates()
                    .iter()
                    .map(|n| format!("{}/spaces/{id}", n.url))
                    .collect();
                body["alternates"] = json!(alternates);
            }
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

/// A live stream asked for on a kept-alive connection: send the client to
/// a fresh connection, where the front door serves it.
/// The query goes along: it carries the page's pass (`?ticket=`), the
/// token of a private space and `from=SEQ`; without it a full node would
/// turn away the listener it had just given a slot.
async fn live_elsewhere(
    Path(id): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    (
        StatusCode::TEMPORARY_REDIRECT,
        [
            (header::LOCATION, format!("/spaces/{id}/live.opus{query}")),
            (header::CONNECTION, "close".to_string()),
        ],
    )
        .into_response()
}

/// Samples memory, write backlog and flush lag; admits only while all are
/// within bounds, so quality is protected before it degrades.
pub async fn watch_health(admission: Arc<Admission>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let flush_budget = admission.cfg().flush_ms.max(100) * 2;
    let max_memory_mb = admission.cfg().max_memory_mb;
    let page = 4096u64;
    let mut ticks: u32 = 0;
    loop {
        tick.tick().await;
        let health = admission.health();
        let rss_mb = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |pages| pages * page / (1024 * 1024));
        let lag = health.take_flush_lag();
        let listeners = health.listeners();
        let blocked = health.blocked_writers.load(Ordering::Relaxed);
        let memory_ok = max_memory_mb == 0 || rss_mb < max_memory_mb;
        let lag_ok = lag <= flush_budget;
        let backlog_ok = blocked <= (listeners / 10).max(100);
        let healthy = memory_ok && lag_ok && backlog_ok;
        if health.set_healthy(healthy) {
            tracing::warn!(
                healthy,
                rss_mb,
                lag_ms = lag,
                blocked_writers = blocked,
                listeners,
                "admission health changed"
            );
        }
        metrics::gauge!("tribune_node_healthy").set(if healthy { 1.0 } else { 0.0 });
        metrics::gauge!("tribune_flush_lag_ms").set(lag as f64);
        metrics::gauge!("tribune_blocked_writers").set(blocked as f64);
        metrics::gauge!("tribune_resident_memory_mb").set(rss_mb as f64);
        metrics::gauge!("tribune_node_listeners").set(listeners as f64);
        metrics::gauge!("tribune_open_connections")
            .set(admission.connections.load(Ordering::Relaxed) as f64);
        if ticks.is_multiple_of(OPEN_FILES_EVERY) {
            metrics::gauge!("tribune_open_files").set(open_files() as f64);
        }
        ticks = ticks.wrapping_add(1);
        metrics::gauge!("tribune_tasks").set(
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks() as f64,
        );
        let now = admission.mono().ms();
        let mut rooms = admission.lock();
        rooms.room.tick(now, listeners, healthy);
        metrics::gauge!("tribune_waiting_room_waiting").set(rooms.room.waiting() as f64);
        metrics::gauge!("tribune_waiting_room_held").set(rooms.room.held() as f64);
        rooms.door.forget_idle(now);
    }
}

/// Health ticks between counts of open files: counting reads one directory
/// entry per descriptor (20,000 with a full node), which measured 6% of the
/// node's CPU in a join storm when done every tick.
const OPEN_FILES_EVERY: u32 = 20;

/// File descriptors the process holds (a leak shows here first).
fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}
