//! Shared node state: configuration, the control-plane store, the signing
//! secret and the registry of spaces (with the live ones' hubs).

use crate::config::Config;
use crate::live::LiveSpace;
use crate::store::{SpaceRow, Store};
use metrics_exporter_prometheus::PrometheusHandle;
use rand::Rng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};
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
    spaces: RwLock<HashMap<String, SpaceEntry>>,
    /// Serialises start/end so a space is never opened or finished twice.
    transitions: tokio::sync::Mutex<()>,
    /// Listeners connected to this node, over all spaces.
    pub listeners: AtomicUsize,
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
                    row.state = SpaceState::Ended;
                    row.ended_at = Some(now_ms());
                    store.update(&row).await?;
                } else {
                    live = Some(hub);
                }
            }
            map.insert(row.id.clone(), SpaceEntry { row, live });
        }
        Ok(Arc::new(App {
            cfg,
            bound,
            store,
            secret,
            metrics,
            spaces: RwLock::new(map),
            transitions: tokio::sync::Mutex::new(()),
            listeners: AtomicUsize::new(0),
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
