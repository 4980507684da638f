//! Each speaker's own microphone, as received and unedited, recorded as
//! Ogg Opus beside the program: the same track-and-package path as the
//! program (`tribune_media::program`), with pages of about a second.

use crate::clock::wall_ms;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use tribune_core::pace::Pacer;
use tribune_media::demux::SourcePacket;
use tribune_media::program::Program;

/// Files one identity may leave in a space's recording folder.
const MAX_TRACKS_PER_SPEAKER: usize = 20;
/// How far a speaker's timestamps may run ahead of the wall clock since
/// their first packet (plus 1% for a sound card's clock).
const AHEAD_OF_REAL_TIME_MS: u64 = 2_000;
/// One page per second of audio.
const PAGE_SAMPLES: u64 = 48_000;

pub fn tracks_dir(data: &Path, space_id: &str) -> PathBuf {
    data.join("recordings").join(format!("{space_id}.speakers"))
}

pub struct SpeakerTrack {
    file: File,
    path: PathBuf,
    program: Program,
    /// Audio from the future is not written: a sender faster than real
    /// time would otherwise fill the disk the program is recorded on.
    pace: Pacer,
    first_ts: Option<u64>,
    /// End of the last packet written, on the sender's clock.
    end: u64,
    written: u64,
}

impl SpeakerTrack {
    pub fn create(dir: &Path, identity: &str, name: &str) -> std::io::Result<SpeakerTrack> {
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
        let file = File::create(&path)?;
        Ok(SpeakerTrack {
            file,
            path,
            program: Program::new(rand::random(), name, PAGE_SAMPLES),
            // the track keeps the sender's gaps: nothing is banked
            pace: Pacer::new(AHEAD_OF_REAL_TIME_MS, u64::MAX),
            first_ts: None,
            end: 0,
            written: 0,
        })
    }

    /// One Opus frame as received, at `rtp_ts` on the sender's 48 kHz clock.
    pub fn push(&mut self, rtp_ts: u64, payload: &bytes::Bytes) {
        let Ok(duration) = tribune_media::opus::packet_duration(payload) else {
            return;
        };
        let first = *self.first_ts.get_or_insert(rtp_ts);
        // the granule follows the sender's clock, so gaps stay gaps
        let end = rtp_ts.saturating_sub(first) + u64::from(duration);
        if end <= self.end {
            return; // late or repeated
        }
        let step = end - self.end;
        let Ok(step32) = u32::try_from(step) else {
            return;
        };
        let now = wall_ms();
        if self.pace.admit(now, step) > 0 {
            return;
        }
        self.end = end;
        let first_audio = self.written == 0;
        let out = self.program.push(
            &[SourcePacket {
                data: payload.clone(),
                duration: step32,
            }],
            now,
            first_audio,
        );
        self.write(&out.record);
    }

    fn write(&mut self, pages: &[bytes::Bytes]) {
        for page in pages {
            if let Err(e) = self.file.write_all(page) {
                tracing::warn!(path = %self.path.display(), error = %e, "speaker track write failed");
                return;
            }
            self.written += page.len() as u64;
        }
    }

    /// Writes the last page and makes the file durable on a thread of its
    /// own: an fsync on the mixer thread would stall the program. A track
    /// that never got audio is removed.
    pub fn finish(mut self) {
        if self.written == 0 {
            drop(self.file);
            let _ = std::fs::remove_file(&self.path);
            return;
        }
        let out = self.program.finish();
        self.write(&out.record);
        let file = self.file;
        let _ = std::thread::Builder::new()
            .name("speaker-track-sync".into())
            .spawn(move || file.sync_all());
    }
}

/// The recorded tracks of a space: (file name, bytes).
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
