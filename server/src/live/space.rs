//! A live space on this node: its program (packets in, Ogg pages out),
//! the recorder, what its listeners share (`audience.rs`) with the shards
//! that write to them, and the flush clock that wakes them once per flush.

use super::audience::Audience;
use super::recorder::{self, RecorderHandle};
use super::shard::Shards;
use crate::config::Config;
use crate::health::Health;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::watch;
use tribune_core::fanout::ChunkRing;
use tribune_core::pace::Pacer;
use tribune_core::space::stream_serial;
use tribune_core::SAMPLE_RATE;
use tribune_media::demux::SourcePacket;
use tribune_media::program::{Output, Program};

pub struct LiveSpace {
    pub id: String,
    program: Mutex<Program>,
    pub audience: Arc<Audience>,
    recorder: RecorderHandle,
    source_active: AtomicBool,
    /// Sources are paced to real time across their sessions: reconnecting
    /// does not buy a new allowance.
    source_pace: Mutex<Pacer>,
    /// Set when the space ends: sources stop, listeners drain and close.
    ending: watch::Sender<bool>,
    /// The tasks writing to this space's listeners, started with the first.
    shards: OnceLock<Shards>,
    /// A new listener gets this much recent audio at once (48 kHz samples).
    burst_samples: u64,
    slow_listener_ms: u64,
    packets_metric: metrics::Counter,
}

/// Audio a source that fell behind (a network hiccup, a reconnect) may make
/// up at once.
const SOURCE_CATCH_UP_MS: u64 = 5_000;

/// Held while a source is connected; frees the slot when dropped.
pub struct SourceSlot {
    live: Arc<LiveSpace>,
    new_session: bool,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        self.live.source_active.store(false, Ordering::Release);
    }
}

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

    /// The source's packets go straight on the program; the first audio
    /// of the session re-anchors the epoch.
    pub fn push(&mut self, packets: &[SourcePacket], now_ms: u64) {
        if packets.is_empty() {
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
        health: Arc<Health>,
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
        let (ending, _) = watch::channel(false);
        let program = Program::resume(stream_serial(id), title, cfg.group_samples(), &recovered);
        let ring = ChunkRing::bounded(cfg.ring_chunks(), cfg.ring_bytes());
        let audience = Audience::new(id, title, ring, peak as usize, health);
        audience.set_headers(program.headers().cloned());
        let live = Arc::new(LiveSpace {
            id: id.to_string(),
            program: Mutex::new(program),
            audience: Arc::new(audience),
            recorder,
            source_active: AtomicBool::new(false),
            source_pace: Mutex::new(Pacer::new(cfg.source_lead_ms, SOURCE_CATCH_UP_MS)),
            ending,
            shards: OnceLock::new(),
            burst_samples: cfg.burst_ms * SAMPLE_RATE / 1000,
            slow_listener_ms: cfg.slow_listener_ms,
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

    /// The shards writing to this space's listeners (started with the first).
    pub fn shards(&self) -> &Shards {
        self.shards.get_or_init(|| {
            Shards::spawn(&self.audience, self.burst_samples, self.slow_listener_ms)
        })
    }

    pub fn title(&self) -> &str {
        &self.audience.title
    }

    pub fn listeners(&self) -> usize {
        self.audience.listeners.load(Ordering::Relaxed)
    }

    pub fn peak_listeners(&self) -> usize {
        self.audience.peak_listeners.load(Ordering::Relaxed)
    }

    fn lock_program(&self) -> std::sync::MutexGuard<'_, Program> {
        // a panic elsewhere must not take the space down with it
        self.program.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends to the program: a source's packets as they come, or the
    /// stage mixer's output (encoded once). `new_session` re-anchors the
    /// stream's epoch.
    pub fn push(&self, packets: &[SourcePacket], now_ms: u64, new_session: bool) {
        let (out, headers) = {
            let mut program = self.lock_program();
            let out = program.push(packets, now_ms, new_session);
            // a new session's header pages (a new epoch) for listeners from now on
            let headers = new_session.then(|| program.headers().cloned());
            (out, headers)
        };
        if let Some(headers) = headers {
            self.audience.set_headers(headers);
        }
        self.packets_metric.increment(packets.len() as u64);
        self.emit(out);
    }

    /// Pages to the recorder (shared with the ring: no copy), then to the
    /// ring for the next flush.
    fn emit(&self, out: Output) {
        for page in out.record {
            self.recorder.append(page);
        }
        for p in out.publish {
            self.audience.stage(p.page, p.samples, p.last);
        }
    }

    /// Ends the program: the partial group becomes the last page, listeners
    /// get everything and are closed, the recording is made durable.
    pub async fn finish(&self) -> std::io::Result<u64> {
        self.ending.send_replace(true);
        let out = self.lock_program().finish();
        self.emit(out);
        self.audience.flush();
        self.recorder.finish().await
    }

    /// Packets on the program track so far (its next seq).
    pub fn packets(&self) -> u64 {
        self.lock_program().packets()
    }

    /// Audio on the program track so far.
    pub fn duration_ms(&self) -> u64 {
        self.lock_program().duration_ms()
    }

    /// The recording already holds its end-of-stream page.
    pub fn recorded_end(&self) -> bool {
        self.lock_program().finished()
    }
}

/// One wake-up per flush for all listeners of the space, and none when
/// nothing new was produced. A node that cannot keep its cadence must
/// stop admitting: lateness goes to the node's health.
async fn flush_clock(live: Weak<LiveSpace>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = tick.tick().await;
        let late = due.elapsed().as_millis() as u64;
        let Some(live) = live.upgrade() else { return };
        live.audience.health.flush_late(late);
        if live.audience.flush() {
            return;
        }
    }
}
