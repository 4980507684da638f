//! Shared node state: configuration, the control-plane store, the signing
//! secret and the registry of spaces (with the live ones' hubs).

use crate::admit::Admission;
use crate::config::Config;
use crate::live::LiveSpace;
use crate::rtc::RtcHub;
use crate::store::{SpaceRow, Store};
use metrics_exporter_prometheus::PrometheusHandle;
use rand::Rng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tribune_core::space::{SpaceState, Transition};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn now_secs() -> u64 {
    now_ms() / 1000
}

#[derive(Clone)]
pub struct SpaceEntry {
    pub row: SpaceRow,
    pub live: Option<Arc<LiveSpace>>,
}

pub struct App {
    pub cfg: Config,
    pub bound: SocketAddr,
    pub store: Store,
    pub secret: Vec<u8>,
    pub metrics: PrometheusHandle,
    /// The stage's WebRTC peers, on one UDP port.
    pub rtc: RtcHub,
    spaces: RwLock<HashMap<String, SpaceEntry>>,
    /// Serialises start/end so a space is never opened or finished twice.
    transitions: tokio::sync::Mutex<()>,
    /// Listeners connected to this node, over all spaces.
    pub listeners: AtomicUsize,
    /// Connection caps, join rates and the waiting room.
    pub admission: Mutex<Admission>,
    /// Measured signals (memory, write backlog, flush lag) allow more listeners.
    pub healthy: AtomicBool,
    /// Identifies this run of the node (waiting-room tickets do not outlive it).
    pub boot: u64,
    started: Instant,
    /// Open connections on the public port, and how many it may hold.
    pub connections: AtomicUsize,
    pub connection_budget: usize,
    /// Open connections on the reserved lane.
    pub reserved_connections: AtomicUsize,
    /// Listeners currently waiting for their socket to accept data.
    pub blocked_writers: AtomicUsize,
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

impl App {
    /// Loads every space; live ones get their hub back, their recording
    /// recovered after a crash.
    pub async fn load(
        cfg: Config,
        bound: SocketAddr,
        store: Store,
        secret: Vec<u8>,
        metrics: PrometheusHandle,
        rtc: RtcHub,
    ) -> Result<Arc<App>, AppError> {
        let mut map = HashMap::new();
        for mut row in store.all().await? {
            let mut live = None;
            if row.state == SpaceState::Live {
                let hub =
                    LiveSpace::open(&cfg, &cfg.data, &row.id, &row.title, row.peak_listeners)?;
                if hub.recorded_end() {
                    // the end reached the recording but not the database
                    hub.finish().await?;
                    row.packets = hub.packets();
                    row.duration_ms = hub.duration_ms();
                    row.state = SpaceState::Ended;
                    row.ended_at = Some(now_ms());
                    store.update(&row).await?;
                } else {
                    live = Some(hub);
                }
            }
            map.insert(row.id.clone(), SpaceEntry { row, live });
        }
        let file_limit = crate::admit::file_limit();
        let connection_budget = cfg.connection_budget(file_limit);
        if connection_budget < cfg.max_listeners {
            tracing::warn!(
                file_limit,
                connection_budget,
                max_listeners = cfg.max_listeners,
                "the open-file limit caps this node below --max-listeners"
            );
        }
        let admission = Admission::new(&cfg);
        Ok(Arc::new(App {
            admission: Mutex::new(admission),
            healthy: AtomicBool::new(true),
            boot: rand::random(),
            started: Instant::now(),
            connections: AtomicUsize::new(0),
            connection_budget,
            reserved_connections: AtomicUsize::new(0),
            blocked_writers: AtomicUsize::new(0),
            cfg,
            bound,
            store,
            secret,
            metrics,
            rtc,
            spaces: RwLock::new(map),
            transitions: tokio::sync::Mutex::new(()),
            listeners: AtomicUsize::new(0),
        }))
    }

    /// Milliseconds since this node started (the admission clock).
    pub fn mono_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
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

    pub async fn create(
        &self,
        title: &str,
        scheduled_at: Option<u64>,
        private: bool,
        created_by: &str,
    ) -> Result<SpaceRow, AppError> {
        let row = SpaceRow {
            id: new_space_id(),
            title: title.to_string(),
            state: SpaceState::Scheduled,
            created_by: created_by.to_string(),
            created_at: now_ms(),
            scheduled_at,
            started_at: None,
            ended_at: None,
            peak_listeners: 0,
            private,
            packets: 0,
            duration_ms: 0,
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
        match t {
            Transition::Start => {
                let live = LiveSpace::open(&self.cfg, &self.cfg.data, id, &entry.row.title, 0)?;
                entry.row.started_at = Some(now_ms());
                entry.live = Some(live);
            }
            Transition::End => {
                if let Some(live) = entry.live.take() {
                    let bytes = live.finish().await?;
                    entry.row.peak_listeners = live.peak_listeners.load(Ordering::Relaxed) as u64;
                    entry.row.packets = live.packets();
                    entry.row.duration_ms = live.duration_ms();
                    tracing::info!(
                        space = id,
                        recording_bytes = bytes,
                        "space ended; recording complete"
                    );
                }
                entry.row.ended_at = Some(now_ms());
            }
        }
        entry.row.state = next;
        self.store.update(&entry.row).await?;
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
