//! The one owner of an admitted listener's place in the counts.

use super::audience::Audience;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tribune_core::listener::Leave;

/// One admitted listener's place: the node's and the space's listener
/// counts, its connection's slot in the budgets, and why it left. Whatever
/// way the listener goes, dropping this gives everything back once.
pub struct ListenerGuard {
    audience: Arc<Audience>,
    _connection: Box<dyn Send>,
    leave: Leave,
}

impl ListenerGuard {
    /// Takes the space's count for a listener the admission decision let
    /// in (that decision took the node's count, under its lock, so
    /// concurrent joins never overshoot). `connection` holds the
    /// connection's slot until the listener leaves.
    pub fn admitted(audience: Arc<Audience>, connection: Box<dyn Send>) -> ListenerGuard {
        let count = audience.listeners.fetch_add(1, Ordering::AcqRel) + 1;
        audience.peak_listeners.fetch_max(count, Ordering::AcqRel);
        audience.metrics.listeners.set(count as f64);
        audience.metrics.joins.increment(1);
        ListenerGuard {
            audience,
            _connection: connection,
            leave: Leave::ClientClosed,
        }
    }

    pub fn audience(&self) -> &Arc<Audience> {
        &self.audience
    }

    /// Why the listener is leaving (counted when the guard drops).
    pub fn leaving(&mut self, why: Leave) {
        self.leave = why;
    }
}

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        self.audience
            .health
            .listeners
            .fetch_sub(1, Ordering::AcqRel);
        let now = self.audience.listeners.fetch_sub(1, Ordering::AcqRel) - 1;
        self.audience.metrics.listeners.set(now as f64);
        metrics::counter!("tribune_listener_disconnects_total", "reason" => self.leave.as_str())
            .increment(1);
    }
}
