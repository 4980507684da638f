//! The origin's AAC encoder: one OS thread per live space, fed the
//! program's Opus frames through a bounded queue, encoding each part as
//! soon as the track reaches past its context (`tribune_media::hls::aac`)
//! and publishing it into the space's AAC rendition, from where the relay
//! carries it to edges. Nothing on a listener's path waits for it: when
//! the queue is full frames are dropped, and when it falls behind it
//! publishes silence for the parts it cannot encode in time; both are
//! counted in the metrics, and the rendition's timeline never stops.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Weak};
use std::time::Instant;
use tribune_media::hls::aac::{self, AacPartPlan};
use tribune_media::hls::fmp4::AacLcConfig;
use tribune_media::hls::{Frame, HlsLayout, PartId};

/// Batches of frames (one per closed group, 100 ms) the queue holds.
const QUEUE_BATCHES: usize = 100;
/// Queued batches above which the encoder is behind and skips parts.
const BEHIND_BATCHES: usize = 30;

enum Input {
    Frames(Vec<Frame>),
    Finish,
}

/// Where the encoder publishes its parts: the space's AAC rendition
/// (`hls.rs`), held weakly so the thread never keeps an ended space alive.
pub trait AacOutput: Send + Sync {
    fn push_aac_part(&self, part: PartId, frames: Vec<Frame>);
    fn aac_finished(&self);
}

pub struct AacFeed {
    tx: SyncSender<Input>,
    queued: Arc<AtomicUsize>,
    stopped: Arc<AtomicBool>,
    finishing: AtomicBool,
    dropped: metrics::Counter,
}

impl AacFeed {
    pub fn spawn(
        space: &str,
        layout: HlsLayout,
        config: AacLcConfig,
        hls: Weak<dyn AacOutput>,
    ) -> AacFeed {
        let (tx, rx) = mpsc::sync_channel(QUEUE_BATCHES);
        let queued = Arc::new(AtomicUsize::new(0));
        let stopped = Arc::new(AtomicBool::new(false));
        let mut encoder = Encoder {
            space: space.to_string(),
            layout,
            config,
            hls,
            rx,
            queued: queued.clone(),
            stopped: stopped.clone(),
            buffer: VecDeque::new(),
            next: None,
            silent: aac::silent_frame(config).unwrap_or_default(),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("aac-{space}"))
            .spawn(move || encoder.run());
        if let Err(e) = spawned {
            tracing::error!(space, error = %e, "cannot start the AAC encoder thread");
        }
        AacFeed {
            tx,
            queued,
            stopped,
            finishing: AtomicBool::new(false),
            dropped: metrics::counter!("tribune_hls_aac_dropped_batches_total", "space" => space.to_string()),
        }
    }

    /// Never blocks: a full queue drops the batch (the encoder sees the
    /// gap and fills it with silence).
    pub fn push(&self, frames: Vec<Frame>) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.tx.try_send(Input::Frames(frames))
        {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.dropped.increment(1);
        }
    }

    pub fn finish(&self) {
        if self.finishing.swap(true, Ordering::AcqRel) {
            return;
        }
        // the end must get through: wait for room (the thread drains fast)
        let _ = self.tx.send(Input::Finish);
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }
}

struct Encoder {
    space: String,
    layout: HlsLayout,
    config: AacLcConfig,
    hls: Weak<dyn AacOutput>,
    rx: Receiver<Input>,
    queued: Arc<AtomicUsize>,
    stopped: Arc<AtomicBool>,
    /// Recent Opus frames, from the pre-roll of the next part on.
    buffer: VecDeque<Frame>,
    /// The next part to encode, once the first frames came.
    next: Option<PartId>,
    silent: bytes::Bytes,
}

impl Encoder {
    fn run(&mut self) {
        let encode_seconds = metrics::histogram!("tribune_hls_aac_encode_seconds");
        let skipped =
            metrics::counter!("tribune_hls_aac_skipped_parts_total", "space" => self.space.clone());
        let backlog =
            metrics::gauge!("tribune_hls_aac_backlog_batches", "space" => self.space.clone());
        while let Ok(input) = self.rx.recv() {
            if self.stopped.load(Ordering::Relaxed) {
                return;
            }
            let ended = match input {
                Input::Frames(frames) => {
                    self.queued.fetch_sub(1, Ordering::Relaxed);
                    self.take(frames, &skipped);
                    None
                }
                Input::Finish => Some(self.buffer.back().map_or(0, Frame::end_granule)),
            };
            let queued = self.queued.load(Ordering::Relaxed);
            backlog.set(queued as f64);
            let behind = queued > BEHIND_BATCHES;
            while let Some(part) = self.next {
                let plan = AacPartPlan::new(&self.layout, part, ended);
                let reached = self.buffer.back().map_or(0, Frame::end_granule);
                if ended.is_none() && reached < plan.ready_at() {
                    break;
                }
                if plan.frames.is_empty() {
                    break;
                }
                let frames = if behind {
                    skipped.increment(1);
                    self.silence(&plan)
                } else {
                    let started = Instant::now();
                    let frames: Vec<Frame> = self.buffer.iter().cloned().collect();
                    let encoded = aac::encode_part(&plan, &frames, self.config);
                    encode_seconds.record(started.elapsed().as_secs_f64());
                    match encoded {
                        Ok(frames) => frames,
                        Err(e) => {
                            tracing::warn!(space = %self.space, ?part, error = %e, "AAC part not encoded; silence instead");
                            skipped.increment(1);
                            self.silence(&plan)
                        }
                    }
                };
                let Some(hls) = self.hls.upgrade() else {
                    return;
                };
                hls.push_aac_part(part, frames);
                let next = self.layout.next_part(part);
                self.next = Some(next);
                let keep_from = AacPartPlan::new(&self.layout, next, None).decode_from;
                while self
                    .buffer
                    .front()
                    .is_some_and(|f| f.end_granule() <= keep_from)
                {
                    self.buffer.pop_front();
                }
            }
            if ended.is_some() {
                if let Some(hls) = self.hls.upgrade() {
                    hls.aac_finished();
                }
                return;
            }
        }
    }

    /// Appends frames; a gap (batches dropped) is bridged with silent
    /// parts so the rendition's timeline stays whole.
    fn take(&mut self, frames: Vec<Frame>, skipped: &metrics::Counter) {
        for frame in frames {
            let expected = self.buffer.back().map(Frame::end_granule);
            if expected.is_some_and(|e| e != frame.start_granule) {
                tracing::warn!(space = %self.space, "AAC encoder lost frames; silence until it catches up");
                while let Some(part) = self.next {
                    let plan = AacPartPlan::new(&self.layout, part, None);
                    if plan.decode_from >= frame.start_granule {
                        break;
                    }
                    skipped.increment(1);
                    let silence = self.silence(&plan);
                    if let Some(hls) = self.hls.upgrade() {
                        hls.push_aac_part(part, silence);
                    }
                    self.next = Some(self.layout.next_part(part));
                }
                self.buffer.clear();
            }
            if self.next.is_none() {
                self.next = Some(self.first_part(frame.start_granule));
            }
            self.buffer.push_back(frame);
        }
    }

    /// The first part whose pre-roll starts at or after `granule`: what a
    /// rebuild from the recording would encode the same way.
    fn first_part(&self, granule: u64) -> PartId {
        let mut part = self.layout.part_at(granule);
        while AacPartPlan::new(&self.layout, part, None).decode_from < granule {
            part = self.layout.next_part(part);
        }
        part
    }

    fn silence(&self, plan: &AacPartPlan) -> Vec<Frame> {
        let frames: Vec<Frame> = self.buffer.iter().cloned().collect();
        aac::part_timing(plan, &frames)
            .into_iter()
            .map(|mut f| {
                f.data = self.silent.clone();
                f
            })
            .collect()
    }
}
