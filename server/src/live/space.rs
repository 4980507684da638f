//! A live space on this node: its program (packets in, Ogg pages out),
//! the recorder, what its listeners share (`audience.rs`) with the shards
//! that write to them, and the flush clock that wakes them once per flush.

use super::audience::Audience;
use super::hls::{Hls, HlsOptions};
use super::recorder::{self, RecorderHandle};
use super::shard::Shards;
use crate::config::Config;
use crate::health::Health;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;
use tokio::sync::watch;
use tribune_core::fanout::ChunkRing;
use tribune_core::history::History;
use tribune_core::pace::Pacer;
use tribune_core::space::stream_serial;
use tribune_core::track::Group;
use tribune_core::SAMPLE_RATE;
use tribune_media::demux::SourcePacket;
use tribune_media::program::{Output, Program};

pub struct LiveSpace {
    pub id: String,
    program: Mutex<Program>,
    pub audience: Arc<Audience>,
    /// The origin records; an edge relays what the origin recorded.
    recorder: Option<RecorderHandle>,
    /// Recent groups, for relays to other nodes.
    history: RwLock<History>,
    /// The next group index, bumped as each group closes (relays wake on it).
    groups_tx: watch::Sender<u64>,
    /// The epoch of the header pages (relays send it on).
    epoch_tx: watch::Sender<Option<u64>>,
    /// On an edge: how long after ingest at the origin the last group
    /// arrived here.
    relay_lag_ms: AtomicU64,
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
    /// The HLS tier of this space on this node (`hls.rs`), fed every
    /// closed group in `emit`.
    hls: Option<Arc<Hls>>,
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
        let program = Program::resume(stream_serial(id), title, cfg.group_samples(), &recovered);
        let hls = hls_of(cfg, id, true);
        if let Some(hls) = &hls {
            // a resumed track lists its earlier segments from the recording
            tokio::spawn(super::hls::seed_history(
                Arc::downgrade(hls),
                super::hls::from_recording(path.clone(), cfg.aac_config()),
            ));
        }
        Ok(LiveSpace::start(
            cfg,
            health,
            id,
            title,
            peak,
            program,
            Some(recorder),
            hls,
        ))
    }

    /// A space this node relays from its upstream (an edge): no recorder,
    /// no sources; groups and epochs come through `push_group`.
    pub fn relayed(cfg: &Config, health: Arc<Health>, id: &str, title: &str) -> Arc<LiveSpace> {
        let program = Program::new(stream_serial(id), title, cfg.group_samples());
        let hls = hls_of(cfg, id, false);
        LiveSpace::start(cfg, health, id, title, 0, program, None, hls)
    }

    /// The space's HLS tier on this node, unless the node serves none.
    pub fn hls(&self) -> Option<Arc<Hls>> {
        self.hls.clone()
    }

    #[allow(clippy::too_many_arguments)]
    fn start(
        cfg: &Config,
        health: Arc<Health>,
        id: &str,
        title: &str,
        peak: u64,
        program: Program,
        recorder: Option<RecorderHandle>,
        hls: Option<Arc<Hls>>,
    ) -> Arc<LiveSpace> {
        let (ending, _) = watch::channel(false);
        let ring = ChunkRing::bounded(cfg.ring_chunks(), cfg.ring_bytes());
        let audience = Audience::new(id, title, ring, peak as usize, health);
        audience.set_headers(program.headers().cloned());
        let position = program.position();
        let history = History::new(
            cfg.ring_ms * SAMPLE_RATE / 1000,
            position.next_group,
            position.next_seq,
        );
        let live = Arc::new(LiveSpace {
            id: id.to_string(),
            groups_tx: watch::channel(position.next_group).0,
            epoch_tx: watch::channel(program.epoch_ms()).0,
            relay_lag_ms: AtomicU64::new(0),
            history: RwLock::new(history),
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
            hls,
        });
        tokio::spawn(flush_clock(
            Arc::downgrade(&live),
            Duration::from_millis(cfg.flush_ms),
        ));
        live
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

    /// On an edge: the last relayed group's delay after its ingest.
    pub fn relay_lag_ms(&self) -> u64 {
        self.relay_lag_ms.load(Ordering::Relaxed)
    }

    /// This node relays the space from an upstream (it is an edge).
    pub fn is_relayed(&self) -> bool {
        self.recorder.is_none()
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

    /// The title as an HTTP header value: a control character would end
    /// the header (or start another).
    pub fn header_title(&self) -> std::borrow::Cow<'_, str> {
        let title = self.title();
        if title.chars().any(char::is_control) {
            title
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect::<String>()
                .into()
        } else {
            title.into()
        }
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
        let out = self.lock_program().push(packets, now_ms, new_session);
        self.packets_metric.increment(packets.len() as u64);
        self.emit(out);
    }

    /// A group made upstream (an edge). False when it did not continue the
    /// track (a gap upstream).
    pub fn push_group(&self, group: Arc<Group>) -> bool {
        let packets = group.packets.len() as u64;
        if let Some(last) = group.packets.last() {
            let lag = crate::clock::wall_ms().saturating_sub(last.ingest_ms);
            self.relay_lag_ms.store(lag, Ordering::Relaxed);
            metrics::histogram!("tribune_relay_lag_ms").record(lag as f64);
        }
        let (out, continuous) = self.lock_program().push_group(group);
        self.packets_metric.increment(packets);
        self.emit(out);
        continuous
    }

    /// The epoch an upstream anchored (an edge's header pages are the origin's).
    pub fn set_epoch(&self, epoch_ms: u64) {
        let out = self.lock_program().set_epoch(epoch_ms);
        self.emit(out);
    }

    /// Pages to the recorder (shared with the ring: no copy), then to the
    /// ring for the next flush; groups to the history for relays.
    fn emit(&self, out: Output) {
        if let Some(recorder) = &self.recorder {
            for page in out.record {
                recorder.append(page);
            }
        }
        if let Some(headers) = out.new_headers {
            // a new epoch's header pages, for listeners from now on
            self.audience.set_headers(Some(headers));
            self.epoch_tx.send_replace(self.lock_program().epoch_ms());
        }
        for p in out.publish {
            self.audience.stage(p.page, p.samples, p.last, p.seqs);
        }
        if let Some(hls) = &self.hls {
            hls.push_groups(&out.groups);
        }
        if let Some(last) = out.groups.last().map(|g| g.index) {
            let mut history = self.history.write().unwrap_or_else(|e| e.into_inner());
            for g in out.groups {
                history.push(g);
            }
            drop(history);
            self.groups_tx.send_replace(last + 1);
        }
    }

    /// Recent groups, for relays.
    pub fn history(&self) -> std::sync::RwLockReadGuard<'_, History> {
        self.history.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes when a group closes (its value: the next group's index).
    pub fn subscribe_groups(&self) -> watch::Receiver<u64> {
        self.groups_tx.subscribe()
    }

    /// Changes when the epoch does.
    pub fn subscribe_epoch(&self) -> watch::Receiver<Option<u64>> {
        self.epoch_tx.subscribe()
    }

    /// The upstream ended the space: the relayed program ends too.
    pub fn end_relayed(&self) {
        self.ending.send_replace(true);
        let out = self.lock_program().finish();
        self.emit(out);
        if let Some(hls) = &self.hls {
            hls.finish();
        }
        self.audience.flush();
    }

    /// Ends the program: the partial group becomes the last page, listeners
    /// get everything and are closed, the recording is made durable.
    pub async fn finish(&self) -> std::io::Result<u64> {
        self.ending.send_replace(true);
        let out = self.lock_program().finish();
        self.emit(out);
        if let Some(hls) = &self.hls {
            hls.finish();
            // the replay's HLS playlists come from what the tier wrote
            hls.wait_finished(Duration::from_secs(5)).await;
        }
        self.audience.flush();
        match &self.recorder {
            Some(recorder) => recorder.finish().await,
            None => Ok(0),
        }
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

/// The HLS tier of a space on this node: the origin encodes the AAC
/// rendition and keeps the summaries with the recording; an edge takes
/// AAC from its relay.
fn hls_of(cfg: &Config, id: &str, origin: bool) -> Option<Arc<Hls>> {
    cfg.hls.then(|| {
        Hls::new(
            id,
            HlsOptions {
                layout: tribune_media::hls::HlsLayout::DEFAULT,
                retained_segments: cfg.hls_retained_segments,
                aac: cfg.aac_config(),
                encode_aac: origin,
                sidecar: origin.then(|| super::hls::sidecar_path(&cfg.data, id)),
            },
        )
    })
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
