//! The node's registry of spaces: configuration, the control-plane store,
//! the signing secret, and each space with, while it is live, its program
//! and its stage. Start and end go through here, once each.

use super::auth::Keys;
use super::fleet::{Fleet, Report};
use super::store::{SpaceRow, Store};
use super::upstream::Upstream;
use crate::clock::{wall_ms, Mono};
use crate::config::Config;
use crate::health::Health;
use crate::live::LiveSpace;
use crate::stage::{OnAir, RtcHub, StageHub};
use metrics_exporter_prometheus::PrometheusHandle;
use rand::Rng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use tribune_core::admission::IpRate;
use tribune_core::space::{SpaceState, Transition};

#[derive(Clone)]
pub struct SpaceEntry {
    pub row: SpaceRow,
    pub live: Option<OnAir>,
}

/// What a listener's request needs to know of a space, read without
/// copying its row.
pub struct SpaceGlance {
    pub state: SpaceState,
    pub scheduled_at: Option<u64>,
    pub private: bool,
    pub live: Option<Arc<LiveSpace>>,
}

impl SpaceEntry {
    pub fn glance(&self) -> SpaceGlance {
        SpaceGlance {
            state: self.row.state,
            scheduled_at: self.row.scheduled_at,
            private: self.row.private,
            live: self.live.as_ref().map(|on_air| on_air.space.clone()),
        }
    }
}

pub struct App {
    pub cfg: Config,
    pub bound: SocketAddr,
    pub store: Store,
    /// The node's own secret (waiting-room tickets).
    pub secret: Vec<u8>,
    /// How tokens are verified here (and signed, on the origin).
    pub keys: Keys,
    /// The node this one relays from, when it is an edge.
    pub upstream: Option<Upstream>,
    /// The fleet's directory and counts, with `--redis`.
    pub fleet: Option<Arc<Fleet>>,
    pub metrics: PrometheusHandle,
    /// The stage's WebRTC peers, on one UDP port.
    pub rtc: RtcHub,
    /// What the node measures about itself (listeners, write backlog,
    /// flush lag) and whether that allows more listeners.
    pub health: Arc<Health>,
    /// The node's monotonic clock (rate limits).
    pub mono: Mono,
    /// Requests to speak per address: anonymous, so rate-limited like joins.
    pub request_rate: Mutex<Option<IpRate>>,
    spaces: RwLock<HashMap<String, SpaceEntry>>,
    /// Serialises start/end so a space is never opened or finished twice.
    transitions: tokio::sync::Mutex<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("no space with id {0:?}")]
    UnknownSpace(String),
    #[error(transparent)]
    Transition(#[from] tribune_core::space::TransitionError),
    #[error("storage error: {0}")]
    Storage(#[from] sqlx::Error),
    #[error("recording error: {0}")]
    Recording(#[from] std::io::Error),
}

/// What a new space is made of.
pub struct NewSpace<'a> {
    pub title: &'a str,
    pub scheduled_at: Option<u64>,
    pub private: bool,
    pub created_by: &'a str,
    /// The name people see for the host (else their token's identity).
    pub host_name: Option<&'a str>,
}

/// What a node is made of, before its spaces are loaded.
pub struct Parts {
    pub cfg: Config,
    pub bound: SocketAddr,
    pub store: Store,
    pub secret: Vec<u8>,
    pub keys: Keys,
    pub upstream: Option<Upstream>,
    pub fleet: Option<Arc<Fleet>>,
    pub metrics: PrometheusHandle,
    pub rtc: RtcHub,
}

impl App {
    /// Loads every space; live ones get their hub back, their recording
    /// recovered after a crash. An edge keeps no spaces of its own: it
    /// learns them from its upstream as listeners ask.
    pub async fn load(parts: Parts) -> Result<Arc<App>, AppError> {
        let Parts {
            cfg,
            bound,
            store,
            secret,
            keys,
            upstream,
            fleet,
            metrics,
            rtc,
        } = parts;
        let health = Arc::new(Health::default());
        let mut map = HashMap::new();
        let rows = match upstream {
            Some(_) => Vec::new(),
            None => store.all().await?,
        };
        for mut row in rows {
            let mut live = None;
            if row.state == SpaceState::Live {
                let hub = LiveSpace::open(
                    &cfg,
                    health.clone(),
                    &cfg.data,
                    &row.id,
                    &row.title,
                    row.peak_listeners,
                )?;
                if hub.recorded_end() {
                    // the end reached the recording but not the database
                    hub.finish().await?;
                    row.packets = hub.packets();
                    row.duration_ms = hub.duration_ms();
                    row.state = SpaceState::Ended;
                    row.ended_at = Some(wall_ms());
                    store.update(&row).await?;
                } else {
                    let stage = StageHub::new(hub.clone(), rtc.clone(), &cfg.data);
                    stage.name_host(&row.created_by, row.host_name.as_deref());
                    live = Some(OnAir {
                        space: hub,
                        stage: Some(stage),
                    });
                }
            }
            map.insert(row.id.clone(), SpaceEntry { row, live });
        }
        let request_rate = Mutex::new(IpRate::new(cfg.joins_per_ip_per_sec, cfg.join_burst));
        Ok(Arc::new(App {
            cfg,
            bound,
            store,
            secret,
            keys,
            upstream,
            fleet,
            metrics,
            rtc,
            health,
            mono: Mono::start(),
            request_rate,
            spaces: RwLock::new(map),
            transitions: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn base_url(&self) -> String {
        self.cfg.base_url(self.bound)
    }

    pub fn space(&self, id: &str) -> Option<SpaceEntry> {
        self.spaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// The space as this node knows it now; `None` when only its upstream
    /// could tell (see [`App::space_or_fetch`]).
    pub fn glance_known(&self, id: &str) -> Option<Option<SpaceGlance>> {
        let spaces = self.spaces.read().unwrap_or_else(|e| e.into_inner());
        let glance = spaces.get(id).map(SpaceEntry::glance);
        let settled = glance
            .as_ref()
            .is_some_and(|g| g.state != SpaceState::Scheduled);
        (self.upstream.is_none() || settled).then_some(glance)
    }

    /// The space, learned from the upstream first when this node is an
    /// edge that does not know it yet (or knows it only as scheduled): a
    /// live one starts being relayed here.
    pub async fn space_or_fetch(self: &Arc<Self>, id: &str) -> Option<SpaceEntry> {
        let known = self.space(id);
        let Some(upstream) = self.upstream.clone() else {
            return known;
        };
        if known
            .as_ref()
            .is_some_and(|e| e.row.state != SpaceState::Scheduled)
        {
            return known;
        }
        if !tribune_core::space::valid_space_id(id) {
            return None;
        }
        let _serial = self.transitions.lock().await;
        if let Some(e) = self
            .space(id)
            .filter(|e| e.row.state != SpaceState::Scheduled)
        {
            return Some(e);
        }
        let (status, json) = match upstream.get_json(&format!("/api/spaces/{id}")).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(space = id, error = %e, "cannot ask the upstream");
                return known;
            }
        };
        if status != 200 {
            return None;
        }
        let row = row_from_json(id, &json)?;
        let live = (row.state == SpaceState::Live).then(|| {
            let space = LiveSpace::relayed(&self.cfg, self.health.clone(), id, &row.title);
            let (app, relayed) = (self.clone(), space.clone());
            tokio::spawn(async move {
                let end = super::upstream::pull(upstream, relayed.clone()).await;
                tracing::info!(space = %relayed.id, ?end, "relay finished");
                app.relay_ended(&relayed.id);
            });
            OnAir { space, stage: None }
        });
        let entry = SpaceEntry { row, live };
        self.spaces
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), entry.clone());
        Some(entry)
    }

    /// The upstream ended a space this node relayed.
    fn relay_ended(&self, id: &str) {
        let mut spaces = self.spaces.write().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = spaces.get_mut(id) {
            if let Some(on_air) = e.live.take() {
                on_air.space.end_relayed();
                e.row.peak_listeners = on_air.space.peak_listeners() as u64;
                e.row.packets = on_air.space.packets();
                e.row.duration_ms = on_air.space.duration_ms();
            }
            e.row.state = SpaceState::Ended;
            e.row.ended_at.get_or_insert(wall_ms());
        }
    }

    pub fn is_edge(&self) -> bool {
        self.upstream.is_some()
    }

    /// What this node tells the fleet about itself.
    pub fn fleet_report(&self) -> Report {
        let mut report = Report {
            listeners: self.health.listeners() as u64,
            healthy: self.health.healthy(),
            ..Default::default()
        };
        for e in self.list() {
            if let Some(on_air) = &e.live {
                report
                    .spaces
                    .insert(e.row.id.clone(), on_air.space.listeners() as u64);
                report.relay_lag_ms = report.relay_lag_ms.max(on_air.space.relay_lag_ms());
            }
        }
        report
    }

    pub fn list(&self) -> Vec<SpaceEntry> {
        let mut all: Vec<SpaceEntry> = self
            .spaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by_key(|e| std::cmp::Reverse(e.row.created_at));
        all
    }

    pub async fn create(&self, new: NewSpace<'_>) -> Result<SpaceRow, AppError> {
        let NewSpace {
            title,
            scheduled_at,
            private,
            created_by,
            host_name,
        } = new;
        let row = SpaceRow {
            id: new_space_id(),
            title: title.to_string(),
            state: SpaceState::Scheduled,
            created_by: created_by.to_string(),
            created_at: wall_ms(),
            scheduled_at,
            started_at: None,
            ended_at: None,
            peak_listeners: 0,
            private,
            packets: 0,
            duration_ms: 0,
            host_name: host_name.map(str::to_string),
        };
        self.store.insert(&row).await?;
        self.spaces
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                row.id.clone(),
                SpaceEntry {
                    row: row.clone(),
                    live: None,
                },
            );
        Ok(row)
    }

    pub async fn transition(&self, id: &str, t: Transition) -> Result<SpaceEntry, AppError> {
        let _serial = self.transitions.lock().await;
        let mut entry = self
            .space(id)
            .ok_or_else(|| AppError::UnknownSpace(id.to_string()))?;
        let next = entry.row.state.apply(t)?;
        // the database first: when it cannot take the change, nothing
        // changes (the space stays as it was, and the caller hears why)
        let mut row = entry.row.clone();
        row.state = next;
        match t {
            Transition::Start => row.started_at = Some(wall_ms()),
            Transition::End => {
                row.ended_at = Some(wall_ms());
                if let Some(on_air) = &entry.live {
                    row.peak_listeners = on_air.space.peak_listeners() as u64;
                    row.packets = on_air.space.packets();
                    row.duration_ms = on_air.space.duration_ms();
                }
            }
        }
        self.store.update(&row).await?;
        entry.row = row;
        match t {
            Transition::Start => {
                let opened = LiveSpace::open(
                    &self.cfg,
                    self.health.clone(),
                    &self.cfg.data,
                    id,
                    &entry.row.title,
                    0,
                );
                let space = match opened {
                    Ok(space) => space,
                    Err(e) => {
                        // the recording cannot be opened: put the row back
                        let mut back = entry.row.clone();
                        back.state = SpaceState::Scheduled;
                        back.started_at = None;
                        let _ = self.store.update(&back).await;
                        return Err(e.into());
                    }
                };
                let stage = StageHub::new(space.clone(), self.rtc.clone(), &self.cfg.data);
                stage.name_host(&entry.row.created_by, entry.row.host_name.as_deref());
                entry.live = Some(OnAir {
                    space,
                    stage: Some(stage),
                });
            }
            Transition::End => {
                if let Some(OnAir { space: live, .. }) = entry.live.take() {
                    let bytes = live.finish().await?;
                    // the last partial group is on the track now
                    entry.row.packets = live.packets();
                    entry.row.duration_ms = live.duration_ms();
                    if let Err(e) = self.store.update(&entry.row).await {
                        tracing::warn!(space = id, error = %e, "final totals not stored; the ended state is");
                    }
                    tracing::info!(
                        space = id,
                        recording_bytes = bytes,
                        "space ended; recording complete"
                    );
                }
            }
        }
        self.spaces
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), entry.clone());
        Ok(entry)
    }
}

/// 12 characters of lowercase letters and digits: about 62 bits.
fn new_space_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..12)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A space as the upstream's API describes it.
fn row_from_json(id: &str, v: &serde_json::Value) -> Option<SpaceRow> {
    let u = |k: &str| v[k].as_u64();
    Some(SpaceRow {
        id: id.to_string(),
        title: v["title"].as_str()?.to_string(),
        state: v["state"].as_str()?.parse().ok()?,
        created_by: v["created_by"].as_str().unwrap_or_default().to_string(),
        created_at: u("created_at").unwrap_or(0),
        scheduled_at: u("scheduled_at"),
        started_at: u("started_at"),
        ended_at: u("ended_at"),
        peak_listeners: u("peak_listeners").unwrap_or(0),
        private: v["private"].as_bool().unwrap_or(false),
        packets: u("packets").unwrap_or(0),
        duration_ms: u("duration_ms").unwrap_or(0),
        host_name: v["host_name"].as_str().map(str::to_string),
    })
}
