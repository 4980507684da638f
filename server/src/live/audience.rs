//! What a live space's listeners share: the fan-out ring they read, the
//! header pages they start with, the wake-up of each flush, and their
//! counts. The program writes it (`space.rs`); the shards read it.

use crate::health::Health;
use bytes::Bytes;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use tokio::sync::watch;
use tribune_core::fanout::ChunkRing;

pub struct Audience {
    pub space_id: String,
    pub title: String,
    ring: RwLock<ChunkRing>,
    headers: RwLock<Option<Bytes>>,
    /// The ring's head after each flush.
    head: watch::Sender<u64>,
    pub listeners: AtomicUsize,
    pub peak_listeners: AtomicUsize,
    pub health: Arc<Health>,
    /// The space's metric handles, resolved once rather than per join.
    pub metrics: AudienceMetrics,
}

/// Metric handles labelled with the space (a label lookup per listener
/// would cost every join a registry search and two allocations).
pub struct AudienceMetrics {
    pub listeners: metrics::Gauge,
    pub joins: metrics::Counter,
    pub bytes_out: metrics::Counter,
}

impl Audience {
    pub fn new(
        space_id: &str,
        title: &str,
        ring: ChunkRing,
        peak: usize,
        health: Arc<Health>,
    ) -> Audience {
        Audience {
            space_id: space_id.to_string(),
            title: title.to_string(),
            ring: RwLock::new(ring),
            headers: RwLock::new(None),
            head: watch::channel(0).0,
            listeners: AtomicUsize::new(0),
            peak_listeners: AtomicUsize::new(peak),
            health,
            metrics: AudienceMetrics {
                listeners: metrics::gauge!("tribune_listeners", "space" => space_id.to_string()),
                joins: metrics::counter!("tribune_listener_joins_total", "space" => space_id.to_string()),
                bytes_out: metrics::counter!("tribune_bytes_out_total", "space" => space_id.to_string()),
            },
        }
    }

    /// The header pages a listener joining now starts with, once audio exists.
    pub fn headers(&self) -> Option<Bytes> {
        self.headers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_headers(&self, headers: Option<Bytes>) {
        *self.headers.write().unwrap_or_else(|e| e.into_inner()) = headers;
    }

    pub fn ring(&self) -> RwLockReadGuard<'_, ChunkRing> {
        self.ring.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a page for the next flush; `seqs` (first, count) are its
    /// packets', so listeners can resume at any of them.
    pub fn stage(&self, page: Bytes, samples: u64, last: bool, seqs: Option<(u64, u64)>) {
        let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
        match seqs {
            Some((first, count)) => ring.stage_group(page, samples, last, first, count),
            None => ring.stage(page, samples, last),
        }
    }

    /// Publishes what was staged as one chunk and wakes the shards (none
    /// when nothing was staged). True once the stream has ended.
    pub fn flush(&self) -> bool {
        let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
        if let Some(head) = ring.flush() {
            self.head.send_replace(head);
        }
        ring.ended()
    }

    pub fn subscribe_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }
}
