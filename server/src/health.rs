//! What the node measures about itself, shared by the parts that produce
//! the signals (fan-out, flush clocks) and the one that acts on them
//! (admission stops while any is out of bounds).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

#[derive(Debug)]
pub struct Health {
    /// Listeners admitted on this node, over all spaces.
    pub listeners: AtomicUsize,
    /// Listeners whose socket is full right now.
    pub blocked_writers: AtomicUsize,
    /// Worst lateness of any flush clock since the last sample.
    flush_lag_ms: AtomicU64,
    /// The measured signals allow more listeners.
    healthy: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            listeners: AtomicUsize::new(0),
            blocked_writers: AtomicUsize::new(0),
            flush_lag_ms: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
        }
    }
}

impl Health {
    pub fn listeners(&self) -> usize {
        self.listeners.load(Ordering::Acquire)
    }

    /// A flush clock ticked `ms` late.
    pub fn flush_late(&self, ms: u64) {
        self.flush_lag_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// The worst lateness since the last call.
    pub fn take_flush_lag(&self) -> u64 {
        self.flush_lag_ms.swap(0, Ordering::Relaxed)
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Records the verdict; true when it changed.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Ordering::AcqRel) != healthy
    }
}
