//! The AAC-LC rendition, encoded part by part from the program's Opus.
//!
//! Each part is a pure function of the track around it: the Opus packets
//! from 80 ms (RFC 7845's decoder pre-roll) before the part's context are
//! decoded with a fresh libopus decoder, and the part's AAC frames (the
//! 1024-sample frames whose start is in the part) are encoded by a fresh
//! rusty_aac encoder with two frames of context either side. So the origin
//! encoding live, the origin after a restart, and the origin rebuilding an
//! ended recording all produce the same AAC bytes for the same part (with
//! the same libopus and rusty_aac builds: rusty_aac is pinned exactly).
//!
//! Frame `j` of the rendition covers track granules `[j*1024, (j+1)*1024)`
//! of the decoded program, so its decode time is `j*1024` on the same
//! 48 kHz timeline as the Opus rendition.

use std::ops::Range;

use bytes::Bytes;
use rusty_aac::{AacEncoder, AacEncoderConfig};

use super::fmp4::{AacLcConfig, AAC_FRAME_SAMPLES};
use super::index::Frame;
use super::layout::{HlsLayout, PartId};

const FRAME: u64 = AAC_FRAME_SAMPLES as u64;
/// Frames encoded (and dropped) either side of a part: the MDCT windows a
/// frame with its neighbours, so a part's first and last frames need them.
pub const CONTEXT_FRAMES: u64 = 2;
/// RFC 7845 §4.6: decode at least 80 ms before the first sample needed
/// when starting a decoder mid-stream.
pub const OPUS_PREROLL: u64 = 3840;
/// Longest Opus packet, in samples per channel.
const MAX_OPUS_FRAME: usize = 5760;

#[derive(Debug, thiserror::Error)]
pub enum AacError {
    #[error("the Opus packets given do not reach back to granule {0} (decoder pre-roll)")]
    MissingPreroll(u64),
    #[error("libopus: {0}")]
    Opus(#[from] opus::Error),
    #[error("AAC encoder: {0}")]
    Encoder(String),
    #[error("AAC encoder returned {got} frames, {wanted} wanted")]
    FrameCount { got: usize, wanted: usize },
}

/// What one AAC part needs and holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AacPartPlan {
    pub part: PartId,
    /// Indices `j` of the AAC frames in the part (frame `j` starts at
    /// granule `j*1024`). Empty when the track ended before the part's
    /// first frame.
    pub frames: Range<u64>,
    /// Granules of PCM the encoder is fed (context included); may start
    /// before granule 0 (zeros there).
    pub pcm_start: i64,
    pub pcm_end: u64,
    /// The Opus packet containing this granule is the first one decoded.
    pub decode_from: u64,
}

impl AacPartPlan {
    /// `track_end`: where the track ended, if it has.
    pub fn new(layout: &HlsLayout, part: PartId, track_end: Option<u64>) -> AacPartPlan {
        let range = layout.part_range(part);
        let end = track_end.map_or(range.end, |e| e.min(range.end));
        let first = range.start.div_ceil(FRAME);
        let frames = first..end.div_ceil(FRAME).max(first);
        let pcm_start = (frames.start * FRAME) as i64 - (CONTEXT_FRAMES * FRAME) as i64;
        let pcm_end = frames.end * FRAME + CONTEXT_FRAMES * FRAME;
        let decode_from = (pcm_start - OPUS_PREROLL as i64).max(0) as u64;
        AacPartPlan {
            part,
            frames,
            pcm_start,
            pcm_end,
            decode_from,
        }
    }

    /// The track must reach this granule (or end) before the part can be
    /// encoded.
    pub fn ready_at(&self) -> u64 {
        self.pcm_end
    }
}

/// Whether `frames` (in order, continuous) hold the packet the plan's
/// decoding starts with.
pub fn holds_preroll(plan: &AacPartPlan, frames: &[Frame]) -> bool {
    preroll_index(plan, frames).is_some()
}

fn preroll_index(plan: &AacPartPlan, frames: &[Frame]) -> Option<usize> {
    let first = frames.first()?;
    if first.start_granule > plan.decode_from {
        return None;
    }
    frames
        .iter()
        .position(|f| f.end_granule() > plan.decode_from)
}

/// Encodes the part `plan` describes from the Opus `frames` around it (in
/// order and continuous, starting at or before `plan.decode_from`; frames
/// past `plan.pcm_end` are ignored, missing ones past the track's end are
/// silence). Frames carry the seq and ingest clock of the Opus packet they
/// start in.
pub fn encode_part(
    plan: &AacPartPlan,
    frames: &[Frame],
    config: AacLcConfig,
) -> Result<Vec<Frame>, AacError> {
    if plan.frames.is_empty() {
        return Ok(Vec::new());
    }
    let first = preroll_index(plan, frames).ok_or(AacError::MissingPreroll(plan.decode_from))?;
    let opus = &frames[first..];
    let channels = usize::from(config.channels.clamp(1, 2));
    let pcm = decode(plan, opus, channels)?;
    let wanted = (plan.frames.end - plan.frames.start) as usize;
    let encoded = encode_pcm(&pcm, channels, config.bitrate)?;
    // Encoded frame i windows PCM blocks i and i+1 of what was fed (the
    // encoder's frame 0, against silence, is already dropped): the part's
    // frames follow the context frames.
    let skip = CONTEXT_FRAMES as usize;
    if encoded.len() < skip + wanted {
        return Err(AacError::FrameCount {
            got: encoded.len().saturating_sub(skip),
            wanted,
        });
    }
    Ok(encoded
        .into_iter()
        .skip(skip)
        .take(wanted)
        .zip(plan.frames.clone())
        .map(|(data, j)| {
            let start = j * FRAME;
            let source = opus
                .iter()
                .find(|f| f.end_granule() > start)
                .or(opus.last());
            Frame {
                seq: source.map_or(0, |f| f.seq),
                start_granule: start,
                duration: AAC_FRAME_SAMPLES,
                ingest_ms: source.map_or(0, |f| f.ingest_ms),
                data: Bytes::from(data),
            }
        })
        .collect())
}

/// The AAC frames a part holds, with empty data: their timing, ingest
/// clocks and seqs only (playlists of an ended recording are made from
/// these without encoding anything).
pub fn part_timing(plan: &AacPartPlan, frames: &[Frame]) -> Vec<Frame> {
    plan.frames
        .clone()
        .map(|j| {
            let start = j * FRAME;
            let source = frames
                .iter()
                .find(|f| f.end_granule() > start)
                .or(frames.last());
            Frame {
                seq: source.map_or(0, |f| f.seq),
                start_granule: start,
                duration: AAC_FRAME_SAMPLES,
                ingest_ms: source.map_or(0, |f| f.ingest_ms),
                data: Bytes::new(),
            }
        })
        .collect()
}

/// One AAC frame of silence, for parts an overloaded encoder had to skip
/// (the rendition's timeline goes on; metrics say it happened).
pub fn silent_frame(config: AacLcConfig) -> Result<Bytes, AacError> {
    let channels = usize::from(config.channels.clamp(1, 2));
    let pcm = vec![0.0f32; 8 * FRAME as usize * channels];
    let frames = encode_pcm(&pcm, channels, config.bitrate)?;
    frames
        .into_iter()
        .nth(3)
        .map(Bytes::from)
        .ok_or(AacError::FrameCount { got: 0, wanted: 1 })
}

/// PCM for `[plan.pcm_start, plan.pcm_end)`, interleaved, from a fresh
/// decoder started at `opus[0]`.
fn decode(plan: &AacPartPlan, opus: &[Frame], channels: usize) -> Result<Vec<f32>, AacError> {
    let span = (plan.pcm_end as i64 - plan.pcm_start) as usize;
    let mut pcm = vec![0.0f32; span * channels];
    let mut decoder = opus::Decoder::new(48_000, opus::Channels::Stereo)?;
    let mut out = vec![0.0f32; MAX_OPUS_FRAME * 2];
    for frame in opus {
        if frame.start_granule >= plan.pcm_end {
            break;
        }
        // A packet libopus refuses (a source's garbage) is concealed, so
        // the timeline stays whole.
        let decoded = match decoder.decode_float(&frame.data, &mut out, false) {
            Ok(n) => n,
            Err(_) => decoder.decode_float(&[], &mut out, false).unwrap_or(0),
        };
        let duration = frame.duration as usize;
        for i in 0..duration.min(decoded) {
            let granule = (frame.start_granule + i as u64) as i64;
            if granule < plan.pcm_start || granule >= plan.pcm_end as i64 {
                continue;
            }
            let at = (granule - plan.pcm_start) as usize;
            let (l, r) = (out[2 * i], out[2 * i + 1]);
            if channels == 1 {
                pcm[at] = 0.5 * (l + r);
            } else {
                pcm[2 * at] = l;
                pcm[2 * at + 1] = r;
            }
        }
    }
    Ok(pcm)
}

/// Raw AAC access units for `pcm`, the encoder's first frame (which
/// windows silence before the input) dropped: frame `i` is block `i`'s.
fn encode_pcm(pcm: &[f32], channels: usize, bitrate: u32) -> Result<Vec<Vec<u8>>, AacError> {
    let mut encoder = AacEncoder::new(AacEncoderConfig {
        bitrate_bps: bitrate,
        ..Default::default()
    });
    encoder
        .push_pcm(pcm, channels as u16, 48_000)
        .map_err(|e| AacError::Encoder(format!("{e:?}")))?;
    encoder.finish();
    let mut frames = Vec::new();
    while let Ok(packet) = encoder.next_packet() {
        frames.push(packet.data);
    }
    if !frames.is_empty() {
        frames.remove(0);
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEREO_64K: AacLcConfig = AacLcConfig {
        channels: 2,
        bitrate: 64_000,
    };

    /// `seconds` of a 440 Hz tone as 20 ms libopus packets on a track
    /// starting at granule 0.
    fn opus_track(seconds: usize) -> Vec<Frame> {
        let mut encoder =
            opus::Encoder::new(48_000, opus::Channels::Stereo, opus::Application::Audio).unwrap();
        encoder.set_bitrate(opus::Bitrate::Bits(32_000)).unwrap();
        let mut frames = Vec::new();
        let mut out = vec![0u8; 4000];
        for p in 0..seconds * 50 {
            let pcm: Vec<f32> = (0..960)
                .flat_map(|i| {
                    let t = (p * 960 + i) as f32 / 48_000.0;
                    let v = 0.3 * (t * 440.0 * std::f32::consts::TAU).sin();
                    [v, v]
                })
                .collect();
            let n = encoder.encode_float(&pcm, &mut out).unwrap();
            frames.push(Frame {
                seq: p as u64,
                start_granule: p as u64 * 960,
                duration: 960,
                ingest_ms: 1_700_000_000_000 + p as u64 * 20,
                data: Bytes::copy_from_slice(&out[..n]),
            });
        }
        frames
    }

    #[test]
    fn plans_cover_the_frames_starting_in_the_part() {
        let l = HlsLayout::ONE_SECOND;
        let p0 = AacPartPlan::new(&l, PartId { msn: 0, part: 0 }, None);
        assert_eq!(p0.frames, 0..47);
        assert_eq!(p0.pcm_start, -2048);
        assert_eq!(p0.decode_from, 0);
        let p1 = AacPartPlan::new(&l, PartId { msn: 0, part: 1 }, None);
        assert_eq!(
            p1.frames,
            47..94,
            "48000/1024 = 46.9: frame 47 starts in part 1"
        );
        assert_eq!(p1.decode_from, 47 * 1024 - 2048 - 3840);
        assert_eq!(p1.ready_at(), 96 * 1024);
        // consecutive parts tile the frame indices
        let mut next = 0;
        for a in 0..30 {
            let plan = AacPartPlan::new(&l, l.part_from_absolute(a), None);
            assert_eq!(plan.frames.start, next);
            next = plan.frames.end;
        }
        // a track that ended inside the part keeps the frames starting before its end
        let ended = AacPartPlan::new(&l, PartId { msn: 0, part: 1 }, Some(50_000));
        assert_eq!(ended.frames, 47..49);
        let none = AacPartPlan::new(&l, PartId { msn: 0, part: 1 }, Some(48_000));
        assert!(none.frames.is_empty());
    }

    #[test]
    fn a_part_is_the_same_bytes_however_much_track_is_around_it() {
        let track = opus_track(5);
        let l = HlsLayout::ONE_SECOND;
        let plan = AacPartPlan::new(&l, PartId { msn: 0, part: 2 }, None);
        let whole = encode_part(&plan, &track, STEREO_64K).unwrap();
        assert_eq!(whole.len(), (plan.frames.end - plan.frames.start) as usize);
        assert_eq!(whole[0].start_granule, plan.frames.start * 1024);
        // only the packets it needs, as a live encoder's buffer holds them
        let from = track
            .iter()
            .position(|f| f.end_granule() > plan.decode_from)
            .unwrap();
        let to = track
            .iter()
            .position(|f| f.start_granule >= plan.pcm_end)
            .unwrap();
        let trimmed = encode_part(&plan, &track[from..to], STEREO_64K).unwrap();
        assert_eq!(whole, trimmed);
        // and a buffer that lost the pre-roll is refused, not guessed at
        assert!(matches!(
            encode_part(&plan, &track[from + 1..to], STEREO_64K),
            Err(AacError::MissingPreroll(_))
        ));
        let timing = part_timing(&plan, &track);
        assert_eq!(timing.len(), whole.len());
        for (t, w) in timing.iter().zip(&whole) {
            assert_eq!(
                (t.start_granule, t.ingest_ms, t.seq),
                (w.start_granule, w.ingest_ms, w.seq)
            );
        }
    }

    #[test]
    fn aac_frames_decode_back_to_the_tone() {
        let track = opus_track(3);
        let l = HlsLayout::ONE_SECOND;
        let config = rusty_aac::encode::audio_specific_config_bytes(48_000, 2);
        let mut decoder = rusty_aac::AacDecoder::with_config_bytes(&config).unwrap();
        let mut pcm = Vec::new();
        for part in 0..2 {
            let plan = AacPartPlan::new(&l, PartId { msn: 0, part }, None);
            for frame in encode_part(&plan, &track, STEREO_64K).unwrap() {
                let out = decoder.decode(&frame.data, None).unwrap();
                pcm.extend(out.samples.iter().step_by(2).copied());
            }
        }
        assert_eq!(pcm.len(), 94 * 1024);
        // past the decoder's first frames, the tone and little else
        let tail = &pcm[4096..4096 + 48_000];
        let (mut s1, mut s2, mut total) = (0.0f64, 0.0f64, 0.0f64);
        let coeff = 2.0 * (std::f64::consts::TAU * 440.0 / 48_000.0).cos();
        for &x in tail {
            let x = f64::from(x);
            total += x * x;
            let s0 = x + coeff * s1 - s2;
            (s2, s1) = (s1, s0);
        }
        let tone = 2.0 * (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (tail.len() as f64 * total);
        assert!(tone > 0.9, "440 Hz carries {tone} of the power");
        assert!(!silent_frame(STEREO_64K).unwrap().is_empty());
    }
}
