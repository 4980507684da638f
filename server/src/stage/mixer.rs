//! The mixer of a live space's stage: one thread ticking every 20 ms. Per
//! speaker a jitter buffer and loss concealment, the sum through a
//! limiter, encoded once into the program track, and to each speaker a
//! mix-minus (everyone but themself) back on their peer connection. An
//! Icecast source connected meanwhile is one more input (a feed).

use super::events::{MixInput, PeerEvent};
use super::roster::Roster;
use super::rtc::RtcHub;
use super::tracks::SpeakerTrack;
use crate::clock::wall_ms;
use crate::live::LiveSpace;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tribune_media::demux::SourcePacket;
use tribune_media::mix::Mixer;

/// One mixer tick: Opus frames of 20 ms.
const TICK: Duration = Duration::from_millis(20);
const FRAME_SAMPLES: u64 = 960;
const PROGRAM_BITRATE: i32 = 32_000;

/// What the mixer works with: the roster (mutes, levels, who left), the
/// program it feeds, the peers it answers, where speaker tracks go.
pub(super) struct MixerIo {
    pub space: String,
    pub roster: Arc<Roster>,
    pub live: Arc<LiveSpace>,
    pub rtc: RtcHub,
    pub tracks_dir: PathBuf,
}

/// Starts a space's mixer thread; its input channel.
pub(super) fn spawn(io: MixerIo) -> Result<Sender<MixInput>, String> {
    let mix = Mixer::new(PROGRAM_BITRATE).map_err(|e| e.to_string())?;
    let (tx, rx) = std::sync::mpsc::channel();
    let name = format!("mix-{}", io.space);
    let run = MixLoop {
        io,
        mix,
        program_started: false,
        feed: None,
        rx,
        speakers: HashMap::new(),
    };
    std::thread::Builder::new()
        .name(name)
        .spawn(move || run.run())
        .map_err(|e| e.to_string())?;
    Ok(tx)
}

struct Speaker {
    return_ts: u64,
    track: Option<SpeakerTrack>,
}

/// The source's place in the mixer, and its synthetic RTP clock.
struct Feed {
    seq: u64,
    ts: u64,
}

/// The mixer's id for the Icecast source (sessions are below 2^63).
const SOURCE_FEED: u64 = u64::MAX;
/// Sources send pages, often a second at a time: a deeper buffer than a
/// WebRTC speaker's.
const FEED_TARGET_MS: u64 = 100;
const FEED_MAX_MS: u64 = 3_000;

struct MixLoop {
    io: MixerIo,
    /// The first program packet re-anchors the stream's epoch.
    program_started: bool,
    feed: Option<Feed>,
    mix: Mixer,
    rx: Receiver<MixInput>,
    speakers: HashMap<u64, Speaker>,
}

impl MixLoop {
    fn run(mut self) {
        tracing::info!(space = %self.io.space, "stage mixer started");
        let mut next = Instant::now() + TICK;
        let mut ticks: u64 = 0;
        loop {
            let now = Instant::now();
            if now >= next {
                if self.io.live.is_ending() {
                    break;
                }
                self.tick(ticks);
                ticks += 1;
                next += TICK;
                if next + Duration::from_millis(200) < now {
                    // the machine stalled: skip ahead instead of bursting
                    next = now + TICK;
                }
                continue;
            }
            match self.rx.recv_timeout(next - now) {
                Ok(input) => self.input(input),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // the hub lets go of this mixer at its next send
        for (session, mut s) in self.speakers.drain() {
            self.io.rtc.close(session);
            if let Some(t) = s.track.take() {
                t.finish();
            }
        }
        tracing::info!(space = %self.io.space, "stage mixer stopped");
    }

    fn tick(&mut self, ticks: u64) {
        let now = wall_ms();
        let out = self.mix.tick(now);
        self.io.live.push(
            &[SourcePacket {
                data: out.program,
                duration: FRAME_SAMPLES as u32,
            }],
            now,
            !std::mem::replace(&mut self.program_started, true),
        );
        for (session, frame) in out.returns {
            if let Some(s) = self.speakers.get_mut(&session) {
                s.return_ts += FRAME_SAMPLES;
                self.io.rtc.send(session, s.return_ts, frame);
            }
        }
        // levels reach pages about 10 times a second
        if ticks.is_multiple_of(5) {
            let mut flipped = false;
            {
                let mut stage = self.io.roster.lock();
                for (session, level) in out.levels {
                    flipped |= stage.set_level(session, level);
                }
            }
            if flipped {
                self.io.roster.changed();
            }
        }
    }

    fn input(&mut self, input: MixInput) {
        match input {
            MixInput::Join {
                session,
                identity,
                name,
            } => {
                if let Err(e) = self.mix.add_speaker(session) {
                    tracing::warn!(session, error = %e, "speaker not mixed");
                    self.io.rtc.close(session);
                    return;
                }
                let track = SpeakerTrack::create(&self.io.tracks_dir, &identity, &name)
                    .map_err(|e| tracing::warn!(session, error = %e, "speaker track not recorded"))
                    .ok();
                self.speakers.insert(
                    session,
                    Speaker {
                        return_ts: rand::random::<u32>() as u64,
                        track,
                    },
                );
            }
            MixInput::Mute { session, muted } => self.mix.set_muted(session, muted),
            MixInput::Source { packets, now_ms } => {
                if self.feed.is_none() {
                    if let Err(e) = self.mix.add_feed(SOURCE_FEED, FEED_TARGET_MS, FEED_MAX_MS) {
                        tracing::warn!(error = %e, "source not mixed");
                        return;
                    }
                    self.feed = Some(Feed { seq: 0, ts: 0 });
                }
                if let Some(feed) = self.feed.as_mut() {
                    for p in packets {
                        self.mix
                            .push(SOURCE_FEED, feed.seq, feed.ts, p.data, now_ms);
                        feed.seq += 1;
                        feed.ts += u64::from(p.duration);
                    }
                }
            }
            MixInput::SourceGone => {
                self.mix.remove_speaker(SOURCE_FEED);
                self.feed = None;
            }
            MixInput::Peer(PeerEvent::Connected { session }) => {
                if self.io.roster.lock().connected(session) {
                    self.io.roster.changed();
                }
            }
            MixInput::Peer(PeerEvent::Audio {
                session,
                seq,
                rtp_ts,
                payload,
            }) => {
                if let Some(s) = self.speakers.get_mut(&session) {
                    if let Some(t) = s.track.as_mut() {
                        t.push(rtp_ts, &payload);
                    }
                }
                self.mix.push(session, seq, rtp_ts, payload, wall_ms());
            }
            MixInput::Peer(PeerEvent::Closed { session }) => {
                self.mix.remove_speaker(session);
                if let Some(mut s) = self.speakers.remove(&session) {
                    if let Some(t) = s.track.take() {
                        t.finish();
                    }
                }
                self.io.roster.peer_closed(session);
            }
        }
    }
}
