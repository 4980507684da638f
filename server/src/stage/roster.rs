//! Who is on stage and who asked to speak (`tribune_core::stage`), with
//! the change signal and the cached snapshot every page of the space reads.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tribune_core::stage::Stage;

pub struct Roster {
    state: Mutex<Stage>,
    /// Bumped on every change pages should see at once.
    version: watch::Sender<u64>,
    /// The last snapshot sent to pages: (version, when, JSON). Every page
    /// of a space shares one rendering per change and per half second.
    snapshot: Mutex<Option<(u64, Instant, Arc<str>)>>,
}

impl Default for Roster {
    fn default() -> Self {
        Roster {
            state: Mutex::new(Stage::default()),
            version: watch::channel(0).0,
            snapshot: Mutex::new(None),
        }
    }
}

impl Roster {
    pub fn lock(&self) -> MutexGuard<'_, Stage> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pages re-read the stage when this changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    pub fn changed(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// The pages' snapshot, rendered by `render` only when the stage
    /// changed or the cached one is older than half a second.
    pub fn snapshot(&self, render: impl FnOnce() -> String) -> Arc<str> {
        let version = *self.version.borrow();
        let mut cache = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((v, at, json)) = cache.as_ref() {
            if *v == version && at.elapsed() < Duration::from_millis(500) {
                return json.clone();
            }
        }
        let json: Arc<str> = render().into();
        *cache = Some((version, Instant::now(), json.clone()));
        json
    }

    /// The peer of `session` is gone (it hung up or timed out).
    pub fn peer_closed(&self, session: u64) {
        if self.lock().leave(session).is_some() {
            self.changed();
        }
    }
}
