//! The IO side of admission: connection budgets at accept, the join
//! decision for listeners, the answers everyone else gets, and the health
//! watcher that turns measured signals into "stop admitting".

use crate::app::{now_secs, App};
use crate::config::Config;
use crate::live::FLUSH_LAG_MS;
use rand::Rng;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tribune_core::admission::{
    Decision, Door, DoorConfig, Refusal, Ticket, WaitingRoom, WaitingRoomConfig,
};
use tribune_core::token::{sign_ticket, verify_ticket};

pub struct Admission {
    pub door: Door,
    pub room: WaitingRoom,
}

impl Admission {
    pub fn new(cfg: &Config) -> Admission {
        Admission {
            door: Door::new(DoorConfig {
                per_ip_connections: cfg.per_ip_connections,
                per_subnet_connections: cfg.per_subnet_connections,
                joins_per_ip_per_sec: cfg.joins_per_ip_per_sec,
                join_burst: cfg.join_burst,
                per_ip_connections_with_passes: cfg.per_ip_connections_with_passes,
                per_subnet_connections_with_passes: cfg.per_subnet_connections_with_passes,
            }),
            room: WaitingRoom::new(WaitingRoomConfig {
                capacity: cfg.max_listeners,
                admit_per_sec: cfg.admit_per_sec,
                grace_ms: cfg.admit_grace_ms,
                min_retry_ms: 1_000,
                max_retry_ms: 30_000,
            }),
        }
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
    app: Arc<App>,
    ip: Option<IpAddr>,
    /// The connection is a stream that presented a pass: its address keeps
    /// the pass's raised allowance while it is open.
    holds_pass: bool,
}

impl ConnGuard {
    /// A listener presented a valid pass on this connection.
    pub fn hold_pass(&mut self) {
        if let (Some(ip), false) = (self.ip, self.holds_pass) {
            let now = self.app.mono_ms();
            self.holds_pass = lock(&self.app).door.hold_pass(ip, now);
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        match self.ip {
            Some(ip) => {
                self.app.connections.fetch_sub(1, Ordering::AcqRel);
                let mut adm = lock(&self.app);
                adm.door.close(ip);
                if self.holds_pass {
                    adm.door.release_pass(ip);
                }
            }
            None => {
                self.app.reserved_connections.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

fn lock(app: &App) -> std::sync::MutexGuard<'_, Admission> {
    app.admission.lock().unwrap_or_else(|e| e.into_inner())
}

/// Checks a new public-port connection against the node's connection
/// budget and the per-IP/subnet caps. Nothing else is allocated first.
pub fn open_public(app: &Arc<App>, ip: IpAddr) -> Result<ConnGuard, &'static str> {
    if app.connections.fetch_add(1, Ordering::AcqRel) >= app.connection_budget {
        app.connections.fetch_sub(1, Ordering::AcqRel);
        return Err("connection_budget");
    }
    let now = app.mono_ms();
    if let Err(r) = lock(app).door.open(ip, now) {
        app.connections.fetch_sub(1, Ordering::AcqRel);
        return Err(r.reason());
    }
    Ok(ConnGuard {
        app: app.clone(),
        ip: Some(ip),
        holds_pass: false,
    })
}

/// The reserved lane has its own budget and no per-IP caps: it is for
/// hosts, speakers and sources, who authenticate on every request.
pub fn open_reserved(app: &Arc<App>) -> Result<ConnGuard, &'static str> {
    if app.reserved_connections.fetch_add(1, Ordering::AcqRel) >= app.cfg.reserved_connections {
        app.reserved_connections.fetch_sub(1, Ordering::AcqRel);
        return Err("reserved_budget");
    }
    Ok(ConnGuard {
        app: app.clone(),
        ip: None,
        holds_pass: false,
    })
}

/// What a refused client is told, ready to send.
pub struct Refused {
    pub status: u16,
    pub reason: &'static str,
    pub retry_after: Option<u64>,
    pub body: Value,
}

/// Retry-After in whole seconds, jittered upward so a refused crowd does
/// not come back in step (never earlier than the ticket allows).
fn retry_secs(ms: u64) -> u64 {
    let base = ms.div_ceil(1000).max(1);
    base + rand::rng().random_range(0..=base.div_ceil(4))
}

/// The first check on a join: the per-IP join rate (a map lookup).
pub fn check_join_rate(app: &App, ip: IpAddr) -> Result<(), Refused> {
    let now = app.mono_ms();
    if let Err(Refusal::JoinRate { retry_after_ms }) = lock(app).door.join(ip, now) {
        let secs = retry_secs(retry_after_ms);
        return Err(Refused {
            status: 429,
            reason: "join_rate",
            retry_after: Some(secs),
            body: json!({"error": "too many joins from your address; slow down", "retry_after": secs}),
        });
    }
    Ok(())
}

/// For private spaces: a listener token for this space (signature and
/// expiry checked) before anything is allocated for the listener.
pub fn check_private(app: &App, space_id: &str, token: Option<&str>) -> Result<(), Refused> {
    let refused = |status, reason, message: String| Refused {
        status,
        reason,
        retry_after: None,
        body: json!({"error": message}),
    };
    let Some(token) = token else {
        return Err(refused(
            401,
            "token_missing",
            "this space is private: listen with ?token=<listener token>".into(),
        ));
    };
    crate::auth::verify(&app.secret, token, now_secs())
        .and_then(|c| {
            crate::auth::require(
                &c,
                space_id,
                tribune_core::token::Role::Listener,
                "listening to this space",
            )
        })
        .map_err(|e| refused(e.status(), "token_invalid", e.to_string()))
}

/// A waiting-room ticket or pass as sent: `Ok(None)` when there is none,
/// refused when it does not verify.
pub fn read_ticket(app: &App, raw: Option<&str>) -> Result<Option<Ticket>, Refused> {
    match raw.map(|t| verify_ticket(t, app.boot, &app.secret, now_secs())) {
        None => Ok(None),
        Some(Ok(t)) => Ok(Some(t)),
        Some(Err(e)) => Err(Refused {
            status: 403,
            reason: "bad_ticket",
            retry_after: None,
            body: json!({"error": format!("invalid waiting-room ticket: {e}; join again without it")}),
        }),
    }
}

/// Admits a listener holding `ticket` (verified) or none, after the
/// cheaper checks passed: on `Ok` the caller holds one of `app.listeners`.
pub fn join(app: &App, ticket: Option<Ticket>, replay_url: &str) -> Result<(), Refused> {
    let now = app.mono_ms();
    let mut adm = lock(app);
    let listeners = app.listeners.load(Ordering::Acquire);
    let healthy = app.healthy.load(Ordering::Acquire);
    match adm.room.decide(now, listeners, healthy, ticket) {
        Decision::Admit => {
            // counted under the lock, so concurrent joins never overshoot
            app.listeners.fetch_add(1, Ordering::AcqRel);
            Ok(())
        }
        other => Err(refusal(app, other, healthy, replay_url)),
    }
}

/// For a page that asks before opening the stream from `ip`: a pass
/// holding a slot for the grace period. The address may hold the pass's
/// connections meanwhile (see `Door::grant`).
pub fn pass(
    app: &App,
    ip: IpAddr,
    ticket: Option<Ticket>,
    replay_url: &str,
) -> Result<String, Refused> {
    let now = app.mono_ms();
    let mut adm = lock(app);
    let listeners = app.listeners.load(Ordering::Acquire);
    let healthy = app.healthy.load(Ordering::Acquire);
    match adm.room.reserve(now, listeners, healthy, ticket) {
        Decision::Pass(t) => {
            adm.door.grant(ip, now, now + app.cfg.admit_grace_ms);
            Ok(sign(app, t))
        }
        other => Err(refusal(app, other, healthy, replay_url)),
    }
}

fn sign(app: &App, ticket: Ticket) -> String {
    sign_ticket(ticket, app.boot, &app.secret, now_secs() + 3600).unwrap_or_default()
}

/// What a listener the waiting room holds back is told.
fn refusal(app: &App, decision: Decision, healthy: bool, replay_url: &str) -> Refused {
    let Decision::Wait {
        ticket,
        position,
        retry_after_ms,
        lost_place,
    } = decision
    else {
        // the room answers Admit or Pass otherwise, both handled by callers
        return Refused {
            status: 503,
            reason: "waiting_room",
            retry_after: Some(1),
            body: json!({"error": "try again"}),
        };
    };
    let secs = retry_secs(retry_after_ms);
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
        retry_after: Some(secs),
        body: json!({
            "error": why,
            "waiting_room": {
                "ticket": sign(app, ticket),
                "position": position,
                "retry_after": secs,
                "lost_place": lost_place,
                "how": "come back after retry_after seconds with ?ticket=<ticket>; coming back earlier loses your place",
            },
            "replay": replay_url,
            "replay_note": "the full recording is published the moment the space ends",
        }),
    }
}

/// The waiting-room page for browsers that open the stream URL directly:
/// it shows the position and comes back on time with its ticket.
pub fn waiting_html(body: &Value, retry_after: u64, path: &str) -> String {
    let wr = &body["waiting_room"];
    let ticket = wr["ticket"].as_str().unwrap_or("");
    let position = wr["position"].as_u64().unwrap_or(0);
    let replay = body["replay"].as_str().unwrap_or("");
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

/// Samples memory, write backlog and flush lag; admits only while all are
/// within bounds, so quality is protected before it degrades.
pub async fn watch_health(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let flush_budget = app.cfg.flush_ms.max(100) * 2;
    let page = 4096u64;
    loop {
        tick.tick().await;
        let rss_mb = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |pages| pages * page / (1024 * 1024));
        let lag = FLUSH_LAG_MS.swap(0, Ordering::Relaxed);
        let listeners = app.listeners.load(Ordering::Relaxed);
        let blocked = app.blocked_writers.load(Ordering::Relaxed);
        let memory_ok = app.cfg.max_memory_mb == 0 || rss_mb < app.cfg.max_memory_mb;
        let lag_ok = lag <= flush_budget;
        let backlog_ok = blocked <= (listeners / 10).max(100);
        let healthy = memory_ok && lag_ok && backlog_ok;
        if healthy != app.healthy.swap(healthy, Ordering::AcqRel) {
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
            .set(app.connections.load(Ordering::Relaxed) as f64);
        let mut adm = lock(&app);
        adm.room.tick(app.mono_ms(), listeners, healthy);
        metrics::gauge!("tribune_waiting_room_waiting").set(adm.room.waiting() as f64);
        metrics::gauge!("tribune_waiting_room_held").set(adm.room.held() as f64);
        adm.door.forget_idle(app.mono_ms());
    }
}
