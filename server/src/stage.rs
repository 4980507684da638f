//! The stage of a live space: who holds a microphone, the request queue,
//! and the mixer thread that turns their WebRTC audio into the program
//! (encoded once) and a mix-minus back to each of them.

use crate::app::now_ms;
use crate::live::LiveSpace;
use crate::rtc::{PeerEvent, RtcHub};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tribune_core::stage::{Stage, StageRole};
use tribune_media::demux::SourcePacket;
use tribune_media::mix::Mixer;
use tribune_media::ogg_page::{write_page, PageHeader, FLAG_EOS};
use tribune_media::package::header_pages;

/// One mixer tick: Opus frames of 20 ms.
const TICK: Duration = Duration::from_millis(20);
const FRAME_SAMPLES: u64 = 960;
const PROGRAM_BITRATE: i32 = 32_000;

enum MixInput {
    Peer(PeerEvent),
    /// Packets from the space's Icecast source, mixed in as a feed.
    Source {
        packets: Vec<SourcePacket>,
        now_ms: u64,
    },
    SourceGone,
    Join {
        session: u64,
        identity: String,
        name: String,
    },
    Mute {
        session: u64,
        muted: bool,
    },
}

/// Why a speaker cannot take the stage now.
#[derive(Debug, thiserror::Error)]
pub enum StageOpenError {
    #[error("the space is ending")]
    Ending,
    #[error("the mixer could not start: {0}")]
    Mixer(String),
}

pub struct StageHub {
    pub space: String,
    state: Mutex<Stage>,
    /// Bumped on every change pages should see at once.
    version: watch::Sender<u64>,
    /// The last snapshot sent to pages: (version, when, JSON). Every page
    /// of a space shares one rendering per change and per half second.
    snapshot: Mutex<Option<(u64, Instant, Arc<str>)>>,
    mixer: Mutex<Option<Sender<MixInput>>>,
    tracks_dir: PathBuf,
}

pub fn tracks_dir(data: &Path, space_id: &str) -> PathBuf {
    data.join("recordings").join(format!("{space_id}.speakers"))
}

impl StageHub {
    pub fn new(space: &str, data: &Path) -> StageHub {
        StageHub {
            space: space.to_string(),
            state: Mutex::new(Stage::default()),
            version: watch::channel(0).0,
            snapshot: Mutex::new(None),
            mixer: Mutex::new(None),
            tracks_dir: tracks_dir(data, space),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Stage> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pages re-read the stage when this changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
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

    pub fn changed(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Puts a negotiated peer on stage: the mixer (started with the first
    /// speaker) takes its audio. The stage entry must exist already.
    /// Returns where the peer's events go.
    pub fn attach(
        self: &Arc<Self>,
        live: &Arc<LiveSpace>,
        rtc: &RtcHub,
        session: u64,
        identity: &str,
        name: &str,
    ) -> Result<crate::rtc::PeerSink, StageOpenError> {
        let mut mixer = self.mixer.lock().unwrap_or_else(|e| e.into_inner());
        if live.is_ending() {
            return Err(StageOpenError::Ending);
        }
        let tx = match mixer.as_ref() {
            Some(tx) => tx.clone(),
            None => {
                let mix = Mixer::new(PROGRAM_BITRATE)
                    .map_err(|e| StageOpenError::Mixer(e.to_string()))?;
                let (tx, rx) = std::sync::mpsc::channel();
                let run = MixLoop {
                    hub: self.clone(),
                    live: live.clone(),
                    rtc: rtc.clone(),
                    mix,
                    program_started: false,
                    feed: None,
                    rx,
                    speakers: HashMap::new(),
                };
                std::thread::Builder::new()
                    .name(format!("mix-{}", self.space))
                    .spawn(move || run.run())
                    .map_err(|e| StageOpenError::Mixer(e.to_string()))?;
                *mixer = Some(tx.clone());
                tx
            }
        };
        let _ = tx.send(MixInput::Join {
            session,
            identity: identity.to_string(),
            name: name.to_string(),
        });
        // the peer's events go straight into the mixer
        Ok(Box::new(move |e| {
            let _ = tx.send(MixInput::Peer(e));
        }))
    }

    pub fn set_muted(&self, session: u64, muted: bool) {
        if let Some(tx) = self
            .mixer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = tx.send(MixInput::Mute { session, muted });
        }
    }

    fn mixer(&self) -> Option<Sender<MixInput>> {
        self.mixer.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// While the stage mixes, the Icecast source is one more input of the
    /// mix; false when there is no mixer and the source feeds the program
    /// directly.
    pub fn feed_source(&self, packets: &[SourcePacket], now_ms: u64) -> bool {
        match self.mixer() {
            Some(tx) => {
                let _ = tx.send(MixInput::Source {
                    packets: packets.to_vec(),
                    now_ms,
                });
                true
            }
            None => false,
        }
    }

    pub fn source_gone(&self) {
        if let Some(tx) = self.mixer() {
            let _ = tx.send(MixInput::SourceGone);
        }
    }
}

pub fn list_tracks(dir: &Path) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.ends_with(".opus")
                .then(|| (name, e.metadata().map_or(0, |m| m.len())))
        })
        .collect();
    out.sort();
    out
}

/// The speaker's display name, from the TITLE in their track's OpusTags.
pub fn track_title(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = vec![0u8; 8192];
    let n = File::open(path).ok()?.read(&mut head).ok()?;
    let head = &head[..n];
    let first = tribune_media::ogg_page::scan_page(head).ok()?;
    let tags_page = &head[first.len..];
    tribune_media::ogg_page::scan_page(tags_page).ok()?;
    let nsegs = *tags_page.get(26)? as usize;
    let body = tags_page.get(27 + nsegs..)?;
    tribune_media::opus::parse_opus_tags(body)?
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("title"))
        .map(|(_, v)| v)
}

/// File names for identities: readable, and never a path.
fn file_stem(identity: &str) -> String {
    let stem: String = identity
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    if stem.is_empty() {
        "speaker".into()
    } else {
        stem
    }
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
    hub: Arc<StageHub>,
    live: Arc<LiveSpace>,
    rtc: RtcHub,
    /// The first program packet re-anchors the stream's epoch.
    program_started: bool,
    feed: Option<Feed>,
    mix: Mixer,
    rx: Receiver<MixInput>,
    speakers: HashMap<u64, Speaker>,
}

impl MixLoop {
    fn run(mut self) {
        tracing::info!(space = %self.hub.space, "stage mixer started");
        let mut next = Instant::now() + TICK;
        let mut ticks: u64 = 0;
        loop {
            let now = Instant::now();
            if now >= next {
                if self.live.is_ending() {
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
        // no speaker can attach to this mixer from now on
        *self.hub.mixer.lock().unwrap_or_else(|e| e.into_inner()) = None;
        for (session, mut s) in self.speakers.drain() {
            self.rtc.close(session);
            if let Some(t) = s.track.take() {
                t.finish();
            }
        }
        tracing::info!(space = %self.hub.space, "stage mixer stopped");
    }

    fn tick(&mut self, ticks: u64) {
        let now = now_ms();
        let out = self.mix.tick(now);
        self.live.push(
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
                self.rtc.send(session, s.return_ts, frame);
            }
        }
        // levels reach pages about 10 times a second
        if ticks.is_multiple_of(5) {
            let mut flipped = false;
            {
                let mut stage = self.hub.lock();
                for (session, level) in out.levels {
                    flipped |= stage.set_level(session, level);
                }
            }
            if flipped {
                self.hub.changed();
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
                    self.rtc.close(session);
                    return;
                }
                let track = SpeakerTrack::create(&self.hub.tracks_dir, &identity, &name)
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
                if self.hub.lock().connected(session) {
                    self.hub.changed();
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
                self.mix.push(session, seq, rtp_ts, payload, now_ms());
            }
            MixInput::Peer(PeerEvent::Closed { session }) => {
                self.mix.remove_speaker(session);
                if let Some(mut s) = self.speakers.remove(&session) {
                    if let Some(t) = s.track.take() {
                        t.finish();
                    }
                }
                if self.hub.lock().leave(session).is_some() {
                    self.hub.changed();
                }
            }
        }
    }
}

/// A speaker's own microphone as received, unedited, as Ogg Opus: what
/// they said before the mix. Pages of about one second.
/// Files one identity may leave in a space's recording folder.
const MAX_TRACKS_PER_SPEAKER: usize = 20;
/// How far (48 kHz samples) a speaker's timestamps may run ahead of the
/// wall clock since their first packet.
const AHEAD_OF_REAL_TIME: u64 = 2 * 48_000;

struct SpeakerTrack {
    file: File,
    serial: u32,
    sequence: u32,
    started: Instant,
    first_ts: Option<u64>,
    granule: u64,
    pending: Vec<Bytes>,
    path: PathBuf,
}

impl SpeakerTrack {
    fn create(dir: &Path, identity: &str, name: &str) -> std::io::Result<SpeakerTrack> {
        std::fs::create_dir_all(dir)?;
        let stem = file_stem(identity);
        // a speaker who comes back gets a second file, never an overwrite;
        // a client that reconnects in a loop does not get a file each time
        let path = (1..=MAX_TRACKS_PER_SPEAKER)
            .map(|n| {
                if n == 1 {
                    dir.join(format!("{stem}.opus"))
                } else {
                    dir.join(format!("{stem}-{n}.opus"))
                }
            })
            .find(|p| !p.exists())
            .ok_or_else(|| {
                std::io::Error::other(format!(
                    "{identity:?} already has {MAX_TRACKS_PER_SPEAKER} tracks"
                ))
            })?;
        let mut file = File::create(&path)?;
        let serial = rand::random();
        file.write_all(&header_pages(serial, name, now_ms()))?;
        Ok(SpeakerTrack {
            file,
            serial,
            sequence: 2,
            started: Instant::now(),
            first_ts: None,
            granule: 0,
            pending: Vec::new(),
            path,
        })
    }

    fn push(&mut self, rtp_ts: u64, payload: &[u8]) {
        let Ok(duration) = tribune_media::opus::packet_duration(payload) else {
            return;
        };
        let first = *self.first_ts.get_or_insert(rtp_ts);
        // the granule follows the sender's clock, so gaps stay gaps
        let end = rtp_ts.saturating_sub(first) + u64::from(duration);
        if end <= self.granule {
            return; // late or repeated
        }
        // audio from the future: a sender faster than real time would
        // otherwise fill the disk the program is recorded on (1% leaves
        // room for a sound card's clock drifting from ours)
        let elapsed = self.started.elapsed().as_millis() as u64 * 48;
        if end > elapsed + elapsed / 100 + AHEAD_OF_REAL_TIME {
            return;
        }
        // a page holds at most 255 lacing values; the newest packet always
        // stays pending, so the last page (end of stream) is never empty
        let segments = |p: &[u8]| p.len() / 255 + 1;
        let used: usize = self.pending.iter().map(|p| segments(p)).sum();
        if self.pending.len() >= 50 || used + segments(payload) > 255 {
            self.write_page(0);
        }
        self.granule = end;
        self.pending.push(Bytes::copy_from_slice(payload));
    }

    fn write_page(&mut self, flags: u8) {
        let mut out = BytesMut::new();
        let packets: Vec<&[u8]> = self.pending.iter().map(|p| p.as_ref()).collect();
        write_page(
            &mut out,
            PageHeader {
                flags,
                granule: self.granule,
                serial: self.serial,
                sequence: self.sequence,
            },
            &packets,
        );
        self.sequence += 1;
        self.pending.clear();
        if let Err(e) = self.file.write_all(&out) {
            tracing::warn!(path = %self.path.display(), error = %e, "speaker track write failed");
        }
    }

    /// Writes the last page and makes the file durable on a thread of its
    /// own: an fsync on the mixer thread would stall the program.
    fn finish(mut self) {
        // no audio at all: a page on which no packet ends carries granule -1
        if self.pending.is_empty() {
            self.granule = u64::MAX;
        }
        self.write_page(FLAG_EOS);
        let file = self.file;
        let _ = std::thread::Builder::new()
            .name("speaker-track-sync".into())
            .spawn(move || file.sync_all());
    }
}

/// Parses a stage role from a token: the space's creator is its host,
/// other host tokens are co-hosts.
pub fn stage_role(
    token_role: tribune_core::token::Role,
    identity: &str,
    created_by: &str,
) -> StageRole {
    use tribune_core::token::Role;
    match token_role {
        Role::Host | Role::Admin if identity == created_by => StageRole::Host,
        Role::Host | Role::Admin => StageRole::Cohost,
        _ => StageRole::Speaker,
    }
}
