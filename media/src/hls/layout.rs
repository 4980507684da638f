//! Where parts and segments fall on the track, and what they are called.
//!
//! Everything is cut on a fixed grid of track granules: segment `N` holds
//! the samples that *start* in granules `[N*S, (N+1)*S)`, and part `N.k`
//! the samples that start in `[N*S + k*P, N*S + (k+1)*P)`. The grid depends
//! on nothing but the layout, so every node names the same audio the same
//! way, whenever it joined and whatever it saw before.

use std::ops::Range;

use tribune_core::SAMPLE_RATE;

/// Longest Opus packet (120 ms) and longer than any AAC frame: a part at
/// least this long always has a sample starting in it.
const MAX_FRAME_SAMPLES: u64 = 5760;

/// RFC 8216bis caps nothing, but players assume segments of a few seconds;
/// this keeps a typo from producing minute-long parts.
const MAX_SEGMENT_SAMPLES: u64 = 10 * SAMPLE_RATE;

/// Init segment of a rendition, relative to its media playlist.
pub const INIT_URI: &str = "init.mp4";
/// Media playlist of a rendition, relative to the multivariant playlist's
/// rendition directory.
pub const MEDIA_PLAYLIST_URI: &str = "media.m3u8";
/// The multivariant playlist.
pub const MULTIVARIANT_URI: &str = "master.m3u8";
/// Rendition directories under the space's `hls/`.
pub const OPUS_DIR: &str = "opus";
pub const AAC_DIR: &str = "aac";

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("a part must last at least {MAX_FRAME_SAMPLES} samples (120 ms), not {0}")]
    PartTooShort(u64),
    #[error("a segment needs at least one part")]
    NoParts,
    #[error("a segment must last at most {MAX_SEGMENT_SAMPLES} samples, not {0}")]
    SegmentTooLong(u64),
}

/// Part `part` of segment `msn` (the Media Sequence Number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartId {
    pub msn: u64,
    pub part: u32,
}

/// Part and segment durations, in 48 kHz samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HlsLayout {
    part_samples: u64,
    parts_per_segment: u32,
}

impl HlsLayout {
    /// 0.5 s parts, 4 parts to a 2 s segment (docs/HLS.md says why: with
    /// 1 s parts and 3 s segments, players holding back three of each
    /// measured ~4 s (LL-HLS) and ~12 s (plain) behind live through nginx).
    pub const DEFAULT: HlsLayout = HlsLayout {
        part_samples: SAMPLE_RATE / 2,
        parts_per_segment: 4,
    };

    /// 1 s parts, 3 to a segment: the layout the unit tests' expected
    /// values are written in.
    #[cfg(test)]
    pub const ONE_SECOND: HlsLayout = HlsLayout {
        part_samples: SAMPLE_RATE,
        parts_per_segment: 3,
    };

    pub fn new(part_samples: u64, parts_per_segment: u32) -> Result<HlsLayout, LayoutError> {
        if part_samples < MAX_FRAME_SAMPLES {
            return Err(LayoutError::PartTooShort(part_samples));
        }
        if parts_per_segment == 0 {
            return Err(LayoutError::NoParts);
        }
        let segment = part_samples.saturating_mul(u64::from(parts_per_segment));
        if segment > MAX_SEGMENT_SAMPLES {
            return Err(LayoutError::SegmentTooLong(segment));
        }
        Ok(HlsLayout {
            part_samples,
            parts_per_segment,
        })
    }

    pub fn part_samples(&self) -> u64 {
        self.part_samples
    }

    pub fn parts_per_segment(&self) -> u32 {
        self.parts_per_segment
    }

    pub fn segment_samples(&self) -> u64 {
        self.part_samples * u64::from(self.parts_per_segment)
    }

    /// The part a sample starting at `granule` belongs to.
    pub fn part_at(&self, granule: u64) -> PartId {
        let absolute = granule / self.part_samples;
        self.part_from_absolute(absolute)
    }

    /// Parts counted from granule 0 across segments.
    pub fn absolute_part(&self, id: PartId) -> u64 {
        id.msn
            .saturating_mul(u64::from(self.parts_per_segment))
            .saturating_add(u64::from(id.part))
    }

    pub fn part_from_absolute(&self, absolute: u64) -> PartId {
        let per = u64::from(self.parts_per_segment);
        PartId {
            msn: absolute / per,
            part: (absolute % per) as u32,
        }
    }

    pub fn next_part(&self, id: PartId) -> PartId {
        self.part_from_absolute(self.absolute_part(id).saturating_add(1))
    }

    /// Granules whose samples start in part `id`.
    pub fn part_range(&self, id: PartId) -> Range<u64> {
        let start = self.absolute_part(id).saturating_mul(self.part_samples);
        start..start.saturating_add(self.part_samples)
    }

    /// Granules whose samples start in segment `msn`.
    pub fn segment_range(&self, msn: u64) -> Range<u64> {
        let start = msn.saturating_mul(self.segment_samples());
        start..start.saturating_add(self.segment_samples())
    }

    /// Longest part a rendition of `frame_samples`-long frames produces:
    /// the part rounded up to whole frames (exactly the part for 20 ms
    /// Opus in 1 s parts; 47 AAC frames, 1.0027 s, for AAC).
    pub fn part_target_samples(&self, frame_samples: u32) -> u64 {
        let frame = u64::from(frame_samples.max(1));
        self.part_samples.div_ceil(frame) * frame
    }

    /// EXT-X-TARGETDURATION: the longest segment rounded to the nearest
    /// second (RFC 8216 §4.3.3.1), at least 1.
    pub fn target_duration_secs(&self, frame_samples: u32) -> u64 {
        let frame = u64::from(frame_samples.max(1));
        let longest = self.segment_samples().div_ceil(frame) * frame;
        ((longest + SAMPLE_RATE / 2) / SAMPLE_RATE).max(1)
    }

    /// The mfhd sequence number of a part's fragment: parts counted from
    /// granule 0, plus one (it starts at 1). Wraps after 2^32 parts (136
    /// years of 1 s parts), which players only compare within a segment.
    pub fn fragment_sequence_number(&self, id: PartId) -> u32 {
        (self.absolute_part(id).wrapping_add(1) & u64::from(u32::MAX)) as u32
    }
}

/// `seg{msn}.m4s`
pub fn segment_uri(msn: u64) -> String {
    format!("seg{msn}.m4s")
}

/// `part{msn}.{k}.m4s`
pub fn part_uri(id: PartId) -> String {
    format!("part{}.{}.m4s", id.msn, id.part)
}

/// What a name under a rendition's directory refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HlsResource {
    Init,
    MediaPlaylist,
    Segment(u64),
    Part(PartId),
}

/// Reads a name the playlists hand out; `None` for anything else
/// (including numbers with signs, leading zeros or overflow, so each
/// resource has exactly one name and one cache entry).
pub fn parse_resource(name: &str) -> Option<HlsResource> {
    match name {
        INIT_URI => return Some(HlsResource::Init),
        MEDIA_PLAYLIST_URI => return Some(HlsResource::MediaPlaylist),
        _ => {}
    }
    if let Some(rest) = name.strip_prefix("seg") {
        let msn = canonical_number(rest.strip_suffix(".m4s")?)?;
        return Some(HlsResource::Segment(msn));
    }
    let rest = name.strip_prefix("part")?.strip_suffix(".m4s")?;
    let (msn, part) = rest.split_once('.')?;
    Some(HlsResource::Part(PartId {
        msn: canonical_number(msn)?,
        part: u32::try_from(canonical_number(part)?).ok()?,
    }))
}

/// A decimal number written the one way [`segment_uri`] writes it.
fn canonical_number(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if canonical {
        text.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_is_half_second_parts_in_two_second_segments() {
        let l = HlsLayout::DEFAULT;
        assert_eq!(l.part_samples(), 24_000);
        assert_eq!(l.segment_samples(), 96_000);
        assert_eq!(l.part_target_samples(960), 24_000);
        // AAC frames of 1024 samples: parts of 23 or 24 frames
        assert_eq!(l.part_target_samples(1024), 24_576);
        assert_eq!(l.target_duration_secs(960), 2);
    }

    use super::*;

    #[test]
    fn the_grid_names_granules() {
        let l = HlsLayout::ONE_SECOND;
        assert_eq!(l.segment_samples(), 144_000);
        assert_eq!(l.part_at(0), PartId { msn: 0, part: 0 });
        assert_eq!(l.part_at(47_999), PartId { msn: 0, part: 0 });
        assert_eq!(l.part_at(48_000), PartId { msn: 0, part: 1 });
        assert_eq!(l.part_at(144_000), PartId { msn: 1, part: 0 });
        assert_eq!(l.part_at(290_000), PartId { msn: 2, part: 0 });
        let id = PartId { msn: 4, part: 2 };
        assert_eq!(l.part_range(id), 672_000..720_000);
        assert_eq!(l.segment_range(4), 576_000..720_000);
        assert_eq!(l.next_part(id), PartId { msn: 5, part: 0 });
        assert_eq!(l.part_from_absolute(l.absolute_part(id)), id);
        assert_eq!(l.fragment_sequence_number(PartId { msn: 0, part: 0 }), 1);
        assert_eq!(l.fragment_sequence_number(id), 15);
    }

    #[test]
    fn targets_round_up_to_whole_frames() {
        let l = HlsLayout::ONE_SECOND;
        assert_eq!(l.part_target_samples(960), 48_000);
        assert_eq!(l.part_target_samples(1024), 48_128);
        assert_eq!(l.target_duration_secs(960), 3);
        assert_eq!(l.target_duration_secs(1024), 3);
    }

    #[test]
    fn bad_layouts_are_refused() {
        assert_eq!(HlsLayout::new(960, 3), Err(LayoutError::PartTooShort(960)));
        assert_eq!(HlsLayout::new(48_000, 0), Err(LayoutError::NoParts));
        assert!(matches!(
            HlsLayout::new(48_000, 11),
            Err(LayoutError::SegmentTooLong(_))
        ));
        assert_eq!(HlsLayout::new(48_000, 3), Ok(HlsLayout::ONE_SECOND));
    }

    #[test]
    fn names_round_trip_and_only_canonical_names_parse() {
        let id = PartId { msn: 12, part: 2 };
        assert_eq!(part_uri(id), "part12.2.m4s");
        assert_eq!(segment_uri(12), "seg12.m4s");
        assert_eq!(parse_resource(&part_uri(id)), Some(HlsResource::Part(id)));
        assert_eq!(parse_resource("seg12.m4s"), Some(HlsResource::Segment(12)));
        assert_eq!(parse_resource("seg0.m4s"), Some(HlsResource::Segment(0)));
        assert_eq!(parse_resource("init.mp4"), Some(HlsResource::Init));
        assert_eq!(
            parse_resource("media.m3u8"),
            Some(HlsResource::MediaPlaylist)
        );
        for bad in [
            "seg012.m4s",
            "seg-1.m4s",
            "seg+1.m4s",
            "seg.m4s",
            "seg1.mp4",
            "seg99999999999999999999.m4s",
            "part1.m4s",
            "part1.2.3.m4s",
            "part1.4294967296.m4s",
            "part1.02.m4s",
            "../seg1.m4s",
            "",
        ] {
            assert_eq!(parse_resource(bad), None, "{bad}");
        }
    }
}
