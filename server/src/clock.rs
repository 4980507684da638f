//! The node's clocks, read at the edge and passed into decisions as values.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Wall clock: ms since the Unix epoch (epochs, token times, ingest times).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn wall_secs() -> u64 {
    wall_ms() / 1000
}

/// Monotonic ms since the node started: the clock of admission decisions,
/// which must not jump when the wall clock is set.
#[derive(Clone, Copy, Debug)]
pub struct Mono {
    started: Instant,
}

impl Mono {
    pub fn start() -> Mono {
        Mono {
            started: Instant::now(),
        }
    }

    pub fn ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// `at` on this clock.
    pub fn at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_millis() as u64
    }
}
