//! A live space: the program track, its packaged pages in the fan-out
//! ring, the recorder, and the flush clock that wakes listeners.

use crate::config::Config;
use crate::recorder::{self, RecorderHandle};
use crate::stage::StageHub;
use bytes::Bytes;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tribune_core::fanout::ChunkRing;
use tribune_core::pace::Pacer;
use tribune_core::space::stream_serial;
use tribune_core::track::{Group, Track};
use tribune_core::SAMPLE_RATE;
use tribune_media::demux::SourcePacket;
use tribune_media::package::{group_page, header_pages};

struct TrackState {
    track: Track,
    /// Wall clock of granule 0 for the current source session.
    epoch_ms: Option<u64>,
    headers: Option<Bytes>,
    recording_has_headers: bool,
    finished: bool,
}

pub struct LiveSpace {
    pub id: String,
    pub title: String,
    serial: u32,
    state: Mutex<TrackState>,
    pub ring: RwLock<ChunkRing>,
    head_tx: watch::Sender<u64>,
    recorder: RecorderHandle,
    source_active: AtomicBool,
    /// Sources are paced to real time across their sessions: reconnecting
    /// does not buy a new allowance.
    source_pace: Mutex<Pacer>,
    /// Set when the space ends: sources stop, listeners drain and close.
    ending: watch::Sender<bool>,
    pub listeners: AtomicUsize,
    pub peak_listeners: AtomicUsize,
    /// Who is on stage, and the mixer feeding the program from them.
    pub stage: Arc<StageHub>,
    /// The tasks writing to this space's listeners, started with the first.
    pub shards: std::sync::OnceLock<crate::shard::Shards>,
    packets_metric: metrics::Counter,
}

/// Held while a source is connected; frees the slot when dropped.
pub struct SourceSlot {
    live: Arc<LiveSpace>,
    new_session: bool,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        self.live.source_active.store(false, Ordering::Release);
        self.live.stage.source_gone();
    }
}

/// Audio a source that fell behind (a network hiccup, a reconnect) may make
/// up at once.
const SOURCE_CATCH_UP_MS: u64 = 5_000;

impl SourceSlot {
    /// Whether a packet of `samples` may go on now (0) or how long (ms) the
    /// source must wait: sources are held to real time.
    pub fn pace(&self, now_ms: u64, samples: u64) -> u64 {
        self.live
            .source_pace
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(now_ms, samples)
    }

    /// The source feeds the program directly, or the stage's mix when
    /// speakers are on stage.
    pub fn push(&mut self, packets: &[SourcePacket], now_ms: u64) {
        // a session starts with its first audio: a source that sends its
        // header pages in a write of their own is no different
        if packets.is_empty() || self.live.stage.feed_source(packets, now_ms) {
            return;
        }
        self.live
            .push(packets, now_ms, std::mem::take(&mut self.new_session));
    }
}

impl LiveSpace {
    /// Opens the space's recording (recovering it after a crash) and starts
    /// the flush clock. `peak` restores the peak listener count.
    pub fn open(
        cfg: &Config,
        data: &Path,
        id: &str,
        title: &str,
        peak: u64,
    ) -> std::io::Result<Arc<LiveSpace>> {
        let path = recorder::recording_path(data, id);
        let (file, recovered) = recorder::open_recovering(&path)?;
        if recovered.audio_pages > 0 {
            tracing::info!(
                space = id,
                pages = recovered.audio_pages,
                seq = recovered.position.next_seq,
                "resuming program track from its recording"
            );
        }
        let recorder = recorder::spawn(id.to_string(), file, Duration::from_millis(cfg.fsync_ms));
        let (head_tx, _) = watch::channel(0);
        let (ending, _) = watch::channel(false);
        let live = Arc::new(LiveSpace {
            id: id.to_string(),
            title: title.to_string(),
            serial: stream_serial(id),
            state: Mutex::new(TrackState {
                track: Track::resume(cfg.group_samples(), recovered.position),
                epoch_ms: recovered.epoch_ms,
                // after a restart, listeners can start before the source is back
                headers: recovered
                    .epoch_ms
                    .map(|epoch| header_pages(stream_serial(id), title, epoch)),
                recording_has_headers: recovered.has_headers,
                finished: recovered.ended,
            }),
            ring: RwLock::new(ChunkRing::bounded(cfg.ring_chunks(), cfg.ring_bytes())),
            head_tx,
            recorder,
            source_active: AtomicBool::new(false),
            source_pace: Mutex::new(Pacer::new(cfg.source_lead_ms, SOURCE_CATCH_UP_MS)),
            ending,
            listeners: AtomicUsize::new(0),
            peak_listeners: AtomicUsize::new(peak as usize),
            stage: Arc::new(StageHub::new(id, data)),
            shards: std::sync::OnceLock::new(),
            packets_metric: metrics::counter!("tribune_ingest_packets_total", "space" => id.to_string()),
        });
        tokio::spawn(flush_clock(
            Arc::downgrade(&live),
            Duration::from_millis(cfg.flush_ms),
        ));
        Ok(live)
    }

    /// Claims the single source slot, or `None` when a source is connected.
    pub fn claim_source(self: &Arc<Self>) -> Option<SourceSlot> {
        if self.is_ending() {
            return None;
        }
        self.source_active
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        Some(SourceSlot {
            live: self.clone(),
            new_session: true,
        })
    }

    pub fn source_connected(&self) -> bool {
        self.source_active.load(Ordering::Acquire)
    }

    pub fn is_ending(&self) -> bool {
        *self.ending.borrow()
    }

    pub fn subscribe_ending(&self) -> watch::Receiver<bool> {
        self.ending.subscribe()
    }

    pub fn subscribe_head(&self) -> watch::Receiver<u64> {
        self.head_tx.subscribe()
    }

    /// The Ogg header pages for a listener joining now, once audio exists.
    pub fn headers(&self) -> Option<Bytes> {
        self.lock_state().headers.clone()
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, TrackState> {
        // a panic elsewhere must not take the space down with it
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends to the program track: a source's packets as they come, or
    /// the stage mixer's output (encoded once). `new_session` re-anchors
    /// the stream's epoch.
    pub fn push(&self, packets: &[SourcePacket], now_ms: u64, new_session: bool) {
        if packets.is_empty() {
            return;
        }
        let mut st = self.lock_state();
        if st.finished {
            return;
        }
        if new_session || st.epoch_ms.is_none() {
            // Anchor the wall clock so OpusTags lets clients compute latency:
            // the batch's last sample is the one that exists now.
            let batch: u64 = packets.iter().map(|p| u64::from(p.duration)).sum();
            let granule = st.track.position().granule + batch;
            let epoch = now_ms.saturating_sub(granule * 1000 / SAMPLE_RATE);
            st.epoch_ms = Some(epoch);
            st.headers = Some(header_pages(self.serial, &self.title, epoch));
        }
        if !st.recording_has_headers {
            if let Some(h) = st.headers.clone() {
                self.recorder.append(h);
            }
            st.recording_has_headers = true;
        }
        let mut closed: Vec<Group> = Vec::new();
        for p in packets {
            closed.extend(st.track.push(p.data.clone(), p.duration, now_ms));
        }
        self.packets_metric.increment(packets.len() as u64);
        self.publish(&closed);
    }

    fn publish(&self, groups: &[Group]) {
        if groups.is_empty() {
            return;
        }
        let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
        for g in groups {
            let page = group_page(self.serial, g);
            // the recorder shares the page with the ring: no copy
            self.recorder.append(page.clone());
            ring.stage(page, g.samples(), g.last);
        }
    }

    /// Ends the program: the partial group becomes the last page, listeners
    /// get everything and are closed, the recording is made durable.
    pub async fn finish(&self) -> std::io::Result<u64> {
        self.ending.send_replace(true);
        let last = {
            let mut st = self.lock_state();
            st.finished = true;
            st.track.finish()
        };
        match last {
            Some(g) => self.publish(&[g]),
            None => {
                self.ring
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .stage(Bytes::new(), 0, true)
            }
        }
        self.flush();
        self.recorder.finish().await
    }

    fn flush(&self) -> bool {
        let head = self.ring.write().unwrap_or_else(|e| e.into_inner()).flush();
        if let Some(head) = head {
            self.head_tx.send_replace(head);
        }
        self.ring.read().unwrap_or_else(|e| e.into_inner()).ended()
    }
}

/// Worst lateness of any space's flush clock since the health watcher last
/// took it: a node that cannot keep its cadence must stop admitting.
pub static FLUSH_LAG_MS: AtomicU64 = AtomicU64::new(0);

/// One wake-up per flush for all listeners of the space, and none when
/// nothing new was produced.
async fn flush_clock(live: std::sync::Weak<LiveSpace>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = tick.tick().await;
        let late = due.elapsed().as_millis() as u64;
        FLUSH_LAG_MS.fetch_max(late, Ordering::Relaxed);
        let Some(live) = live.upgrade() else { return };
        if live.flush() {
            return;
        }
    }
}

impl LiveSpace {
    /// Packets on the program track so far (its next seq).
    pub fn packets(&self) -> u64 {
        self.lock_state().track.position().next_seq
    }

    /// Audio on the program track so far.
    pub fn duration_ms(&self) -> u64 {
        tribune_core::samples_to_ms(self.lock_state().track.position().granule)
    }

    /// The recording already holds its end-of-stream page.
    pub fn recorded_end(&self) -> bool {
        self.lock_state().finished
    }
}
