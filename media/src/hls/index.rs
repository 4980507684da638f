//! One rendition's HLS state, fed the track's frames in order: which parts
//! and segments exist, their fragments, and where the live edge is.
//!
//! Sans-IO and deterministic: the state after a run of frames depends on
//! those frames only, so every node fed the same track publishes the same
//! parts with the same bytes at the same granules.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use tribune_core::track::Group;

use super::fmp4::{self, AudioConfig, Fmp4Error, Sample};
use super::layout::{HlsLayout, PartId};

/// Fewest segments whose parts stay in memory: the playlist lists the
/// parts of the last three target durations plus the open segment.
pub const MIN_RETAINED_SEGMENTS: usize = 4;
/// Segments whose parts are kept when nothing else is asked for (30 s with
/// the default layout); older ones are rebuilt from the recording.
pub const DEFAULT_RETAINED_SEGMENTS: usize = 10;

/// One sample on the rendition's timeline: an Opus packet of the track or
/// an AAC frame encoded from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Seq of the track packet this frame is (or starts in).
    pub seq: u64,
    /// Track granule where the frame starts.
    pub start_granule: u64,
    /// Duration in 48 kHz samples.
    pub duration: u32,
    /// Wall clock (ms since the Unix epoch) the track gave that packet.
    pub ingest_ms: u64,
    pub data: Bytes,
}

impl Frame {
    pub fn end_granule(&self) -> u64 {
        self.start_granule + u64::from(self.duration)
    }
}

/// The frames of a track group: each packet starts where the previous one
/// ended, the first where the group starts.
pub fn group_frames(group: &Group) -> Vec<Frame> {
    let mut start = group.start_granule;
    group
        .packets
        .iter()
        .map(|p| {
            let frame = Frame {
                seq: p.seq,
                start_granule: start,
                duration: p.granule.saturating_sub(start) as u32,
                ingest_ms: p.ingest_ms,
                data: p.data.clone(),
            };
            start = p.granule;
            frame
        })
        .collect()
}

/// The fragment of one part built from its frames (the same function the
/// index uses, for rebuilding old parts from the recording).
pub fn part_fragment(layout: &HlsLayout, id: PartId, frames: &[Frame]) -> Result<Bytes, Fmp4Error> {
    let first = frames.first().ok_or(Fmp4Error::NoSamples)?;
    let samples: Vec<Sample<'_>> = frames
        .iter()
        .map(|f| Sample {
            duration: f.duration,
            data: &f.data,
        })
        .collect();
    fmp4::media_fragment(
        layout.fragment_sequence_number(id),
        first.start_granule,
        &samples,
    )
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("frame starts at granule {got}, the timeline is at {expected}")]
    Discontinuity { expected: u64, got: u64 },
    #[error("frame at granule {0} has zero duration")]
    ZeroDuration(u64),
    #[error("frame of {0} samples is longer than a part")]
    FrameTooLong(u32),
    #[error("the rendition has ended")]
    Ended,
    #[error(transparent)]
    Fragment(#[from] Fmp4Error),
}

/// A part whose fragment is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedPart {
    pub id: PartId,
    pub start_granule: u64,
    pub end_granule: u64,
    pub bytes: Bytes,
}

impl PublishedPart {
    pub fn duration_samples(&self) -> u64 {
        self.end_granule - self.start_granule
    }
}

/// What the playlist says about a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    pub msn: u64,
    pub start_granule: u64,
    /// End of its last published part.
    pub end_granule: u64,
    /// Ingest wall clock of its first frame: its EXT-X-PROGRAM-DATE-TIME.
    pub first_ingest_ms: u64,
    pub first_part: PartId,
    pub parts: u32,
}

impl SegmentSummary {
    pub fn duration_samples(&self) -> u64 {
        self.end_granule - self.start_granule
    }
}

/// Where the rendition's live edge is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LivePosition {
    /// The first part the track ever had (nothing before it exists).
    pub first_part: PartId,
    /// The first part not yet published: the preload hint.
    pub next_part: PartId,
    pub ended: bool,
}

impl LivePosition {
    pub fn is_published(&self, id: PartId) -> bool {
        id >= self.first_part && id < self.next_part
    }

    /// Whether every part of segment `msn` is published.
    pub fn segment_complete(&self, msn: u64) -> bool {
        let ended_inside = self.ended && msn == self.next_part.msn && self.next_part.part > 0;
        msn >= self.first_part.msn && (msn < self.next_part.msn || ended_inside)
    }
}

#[derive(Debug)]
struct OpenPart {
    id: PartId,
    frames: Vec<Frame>,
}

/// One rendition's parts and segments.
#[derive(Debug)]
pub struct RenditionIndex {
    layout: HlsLayout,
    config: AudioConfig,
    retained_segments: usize,
    segments: Vec<SegmentSummary>,
    open_segment: Option<SegmentSummary>,
    parts: VecDeque<PublishedPart>,
    open_part: Option<OpenPart>,
    first_part: Option<PartId>,
    last_published: Option<PartId>,
    next_granule: Option<u64>,
    ended: bool,
}

impl RenditionIndex {
    pub fn new(layout: HlsLayout, config: AudioConfig) -> RenditionIndex {
        RenditionIndex {
            layout,
            config,
            retained_segments: DEFAULT_RETAINED_SEGMENTS,
            segments: Vec::new(),
            open_segment: None,
            parts: VecDeque::new(),
            open_part: None,
            first_part: None,
            last_published: None,
            next_granule: None,
            ended: false,
        }
    }

    /// Keeps the parts of the last `segments` segments (at least
    /// [`MIN_RETAINED_SEGMENTS`]).
    pub fn with_retention(mut self, segments: usize) -> RenditionIndex {
        self.retained_segments = segments.max(MIN_RETAINED_SEGMENTS);
        self
    }

    pub fn layout(&self) -> &HlsLayout {
        &self.layout
    }

    pub fn config(&self) -> &AudioConfig {
        &self.config
    }

    pub fn init_segment(&self) -> Result<Bytes, Fmp4Error> {
        fmp4::init_segment(&self.config)
    }

    /// Adds the next frame. Returns the part it completed, if any.
    pub fn push(&mut self, frame: Frame) -> Result<Option<PartId>, IndexError> {
        if self.ended {
            return Err(IndexError::Ended);
        }
        if frame.duration == 0 {
            return Err(IndexError::ZeroDuration(frame.start_granule));
        }
        if u64::from(frame.duration) > self.layout.part_samples() {
            return Err(IndexError::FrameTooLong(frame.duration));
        }
        if let Some(expected) = self.next_granule {
            if frame.start_granule != expected {
                return Err(IndexError::Discontinuity {
                    expected,
                    got: frame.start_granule,
                });
            }
        }
        let id = self.layout.part_at(frame.start_granule);
        let part_end = self.layout.part_range(id).end;
        let end = frame.end_granule();
        self.first_part.get_or_insert(id);
        if self.open_part.is_none() {
            self.open_segment_for(id, &frame);
            self.open_part = Some(OpenPart {
                id,
                frames: Vec::new(),
            });
        }
        if let Some(open) = &mut self.open_part {
            open.frames.push(frame);
        }
        self.next_granule = Some(end);
        // A frame reaching the grid line ends the part: the next one
        // starts in the next part, so waiting for it would only add delay.
        if end >= part_end {
            return self.publish_open_part();
        }
        Ok(None)
    }

    /// Adds every packet of a closed track group, and ends the rendition
    /// when the group is the track's last.
    pub fn push_group(&mut self, group: &Group) -> Result<Vec<PartId>, IndexError> {
        let mut published = Vec::new();
        for frame in group_frames(group) {
            published.extend(self.push(frame)?);
        }
        if group.last {
            published.extend(self.finish()?);
        }
        Ok(published)
    }

    /// Ends the rendition: publishes the partial last part and closes the
    /// last segment. Idempotent.
    pub fn finish(&mut self) -> Result<Option<PartId>, IndexError> {
        if self.ended {
            return Ok(None);
        }
        let published = self.publish_open_part()?;
        if let Some(segment) = self.open_segment.take() {
            self.segments.push(segment);
        }
        self.ended = true;
        Ok(published)
    }

    fn open_segment_for(&mut self, id: PartId, frame: &Frame) {
        if self.open_segment.is_some_and(|s| s.msn != id.msn) {
            // Only reachable when a segment's last part never came (a track
            // that resumed mid-grid): the segment ends where it ended.
            if let Some(segment) = self.open_segment.take() {
                self.segments.push(segment);
            }
        }
        if self.open_segment.is_none() {
            self.open_segment = Some(SegmentSummary {
                msn: id.msn,
                start_granule: frame.start_granule,
                end_granule: frame.start_granule,
                first_ingest_ms: frame.ingest_ms,
                first_part: id,
                parts: 0,
            });
        }
    }

    fn publish_open_part(&mut self) -> Result<Option<PartId>, IndexError> {
        let Some(open) = self.open_part.take() else {
            return Ok(None);
        };
        let (Some(first), Some(last)) = (open.frames.first(), open.frames.last()) else {
            return Ok(None);
        };
        let part = PublishedPart {
            id: open.id,
            start_granule: first.start_granule,
            end_granule: last.end_granule(),
            bytes: part_fragment(&self.layout, open.id, &open.frames)?,
        };
        if let Some(segment) = &mut self.open_segment {
            segment.end_granule = part.end_granule;
            segment.parts += 1;
        }
        self.last_published = Some(open.id);
        self.parts.push_back(part);
        if open.id.part + 1 == self.layout.parts_per_segment() {
            if let Some(segment) = self.open_segment.take() {
                self.segments.push(segment);
            }
        }
        let oldest_kept = open
            .id
            .msn
            .saturating_sub(self.retained_segments as u64 - 1);
        while self.parts.front().is_some_and(|p| p.id.msn < oldest_kept) {
            self.parts.pop_front();
        }
        Ok(Some(open.id))
    }

    /// Adds the summaries of segments before the first one this index
    /// built (from an upstream node, or a recording), so its playlist lists
    /// the whole track as the origin's does. Segments at or after its own
    /// first one are ignored. Their parts are not held here: they count as
    /// published (the server rebuilds or fetches them). Returns how many
    /// were added.
    pub fn seed(&mut self, earlier: impl IntoIterator<Item = SegmentSummary>) -> usize {
        let own_first = self
            .segments
            .first()
            .or(self.open_segment.as_ref())
            .map(|s| s.msn);
        let mut seeds: Vec<SegmentSummary> = earlier
            .into_iter()
            .filter(|s| s.parts > 0 && own_first.is_none_or(|first| s.msn < first))
            .collect();
        seeds.sort_by_key(|s| s.msn);
        seeds.dedup_by_key(|s| s.msn);
        let (Some(first), Some(last)) = (seeds.first().copied(), seeds.last().copied()) else {
            return 0;
        };
        self.first_part = Some(
            self.first_part
                .map_or(first.first_part, |p| p.min(first.first_part)),
        );
        if self.last_published.is_none() {
            let last_part = self.layout.absolute_part(last.first_part) + u64::from(last.parts) - 1;
            self.last_published = Some(self.layout.part_from_absolute(last_part));
        }
        let added = seeds.len();
        seeds.append(&mut self.segments);
        self.segments = seeds;
        added
    }

    /// `None` until the first frame.
    pub fn position(&self) -> Option<LivePosition> {
        let first_part = self.first_part?;
        let next_part = match (&self.open_part, self.last_published) {
            (Some(open), _) => open.id,
            (None, Some(last)) => self.layout.next_part(last),
            (None, None) => first_part,
        };
        Some(LivePosition {
            first_part,
            next_part,
            ended: self.ended,
        })
    }

    pub fn ended(&self) -> bool {
        self.ended
    }

    /// A retained published part.
    pub fn part(&self, id: PartId) -> Option<&PublishedPart> {
        // Parts are in order: binary search instead of a scan per request.
        let at = self.parts.binary_search_by(|p| p.id.cmp(&id)).ok()?;
        self.parts.get(at)
    }

    /// Retained published parts, oldest first.
    pub fn parts(&self) -> impl Iterator<Item = &PublishedPart> {
        self.parts.iter()
    }

    /// Complete segments, oldest first (the whole history: a few dozen
    /// bytes per segment).
    pub fn segments(&self) -> &[SegmentSummary] {
        &self.segments
    }

    /// The segment still receiving parts.
    pub fn open_segment(&self) -> Option<&SegmentSummary> {
        self.open_segment.as_ref()
    }

    /// A complete segment's bytes: its parts' fragments back to back (a
    /// CMAF segment is its chunks), so a segment and its parts never
    /// disagree. `None` when incomplete or no longer retained.
    pub fn segment_bytes(&self, msn: u64) -> Option<Bytes> {
        let at = self.segments.binary_search_by(|s| s.msn.cmp(&msn)).ok()?;
        let segment = self.segments.get(at)?;
        let parts: Vec<&PublishedPart> = self.parts.iter().filter(|p| p.id.msn == msn).collect();
        if parts.len() != segment.parts as usize {
            return None;
        }
        let mut out = BytesMut::with_capacity(parts.iter().map(|p| p.bytes.len()).sum());
        for part in parts {
            out.extend_from_slice(&part.bytes);
        }
        Some(out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::fmp4::AudioConfig;
    use mp4_atom::{Decode, Moof};
    use tribune_core::track::Track;

    /// A track of `n` 20 ms packets, as the server would group it.
    fn groups(n: usize, finish: bool) -> Vec<Group> {
        let mut track = Track::new(4800);
        let mut groups = Vec::new();
        for i in 0..n {
            let data = Bytes::from(vec![0xF8, (i % 251) as u8, 0xAA, 0x55]);
            groups.extend(track.push(data, 960, 1_700_000_000_000 + i as u64 * 20));
        }
        if finish {
            groups.extend(track.finish());
        }
        groups
    }

    /// The index of `n` packets; `finish` ends it as a space's end would
    /// (the track's last group, or `finish` when no group was pending).
    fn index_of(n: usize, finish: bool) -> RenditionIndex {
        let mut index = RenditionIndex::new(HlsLayout::ONE_SECOND, AudioConfig::PROGRAM_OPUS);
        for g in groups(n, finish) {
            index.push_group(&g).unwrap();
        }
        if finish {
            index.finish().unwrap();
        }
        index
    }

    fn decode_time(fragment: &[u8]) -> (u32, u64, u64) {
        let moof = Moof::decode(&mut &fragment[..]).unwrap();
        let traf = &moof.traf[0];
        let base = traf.tfdt.as_ref().unwrap().base_media_decode_time;
        let count = traf.trun[0].samples.len() as u64;
        let duration = u64::from(traf.tfhd.default_sample_duration.unwrap()) * count;
        (moof.mfhd.sequence_number, base, duration)
    }

    #[test]
    fn parts_publish_on_the_grid() {
        // 7.5 s of packets: segments 0 and 1 complete, 2.1 open at 1.5 s.
        let index = index_of(375, false);
        let ids: Vec<PartId> = index.parts().map(|p| p.id).collect();
        assert_eq!(ids.len(), 7);
        assert_eq!(ids[6], PartId { msn: 2, part: 0 });
        assert_eq!(index.segments().len(), 2);
        assert_eq!(index.segments()[1].start_granule, 144_000);
        assert_eq!(index.segments()[1].duration_samples(), 144_000);
        assert_eq!(
            index.segments()[1].first_ingest_ms,
            1_700_000_000_000 + 150 * 20
        );
        let position = index.position().unwrap();
        assert_eq!(position.next_part, PartId { msn: 2, part: 1 });
        assert_eq!(position.first_part, PartId { msn: 0, part: 0 });
        assert!(!position.ended);
        assert!(position.segment_complete(1));
        assert!(!position.segment_complete(2));
        assert_eq!(index.open_segment().unwrap().parts, 1);
    }

    #[test]
    fn decode_times_continue_across_fragments() {
        let index = index_of(500, true);
        let mut expected_start = 0;
        for (part, expected_sequence) in index.parts().zip(1u32..) {
            let (sequence, base, duration) = decode_time(&part.bytes);
            assert_eq!(base, expected_start, "{:?}", part.id);
            assert_eq!(base, part.start_granule);
            assert_eq!(sequence, expected_sequence);
            expected_start = base + duration;
        }
        assert_eq!(expected_start, 500 * 960);
    }

    #[test]
    fn byte_identical_when_built_twice_or_fed_differently() {
        let a = index_of(400, true);
        // Another node getting the same packets one frame at a time.
        let mut b = RenditionIndex::new(HlsLayout::ONE_SECOND, AudioConfig::PROGRAM_OPUS);
        for g in groups(400, true) {
            for frame in group_frames(&g) {
                b.push(frame).unwrap();
            }
        }
        b.finish().unwrap();
        assert!(a.ended() && b.ended());
        let pa: Vec<&PublishedPart> = a.parts().collect();
        let pb: Vec<&PublishedPart> = b.parts().collect();
        assert_eq!(pa, pb);
        assert_eq!(a.segments(), b.segments());
        assert_eq!(a.segment_bytes(2), b.segment_bytes(2));
    }

    #[test]
    fn finishing_publishes_the_short_last_part_and_segment() {
        let index = index_of(160, true);
        let position = index.position().unwrap();
        assert!(position.ended);
        assert_eq!(position.next_part, PartId { msn: 1, part: 1 });
        let last = index.parts().last().unwrap();
        assert_eq!(last.id, PartId { msn: 1, part: 0 });
        assert_eq!(last.duration_samples(), 10 * 960);
        assert_eq!(index.segments().len(), 2);
        assert_eq!(index.segments()[1].duration_samples(), 10 * 960);
        assert!(position.segment_complete(1));
        assert!(index.open_segment().is_none());
    }

    #[test]
    fn a_segment_is_its_parts_back_to_back() {
        let index = index_of(300, false);
        let bytes = index.segment_bytes(0).unwrap();
        let parts: Vec<u8> = (0..3)
            .flat_map(|k| {
                index
                    .part(PartId { msn: 0, part: k })
                    .unwrap()
                    .bytes
                    .to_vec()
            })
            .collect();
        assert_eq!(&bytes[..], &parts[..]);
        assert_eq!(index.segment_bytes(2), None, "segment 2 is not complete");
    }

    #[test]
    fn old_parts_are_dropped_but_segments_are_remembered() {
        let mut index =
            RenditionIndex::new(HlsLayout::ONE_SECOND, AudioConfig::PROGRAM_OPUS).with_retention(4);
        for g in groups(50 * 30, false) {
            index.push_group(&g).unwrap();
        }
        assert_eq!(index.segments().len(), 10);
        assert_eq!(index.parts().next().unwrap().id.msn, 6);
        assert!(index.part(PartId { msn: 5, part: 2 }).is_none());
        assert!(index.part(PartId { msn: 9, part: 2 }).is_some());
        assert_eq!(index.segment_bytes(5), None);
    }

    #[test]
    fn gaps_overlaps_and_pushes_after_the_end_are_errors() {
        let frame = |start: u64| Frame {
            seq: 0,
            start_granule: start,
            duration: 960,
            ingest_ms: 0,
            data: Bytes::from_static(&[0xF8]),
        };
        let mut index = RenditionIndex::new(HlsLayout::ONE_SECOND, AudioConfig::PROGRAM_OPUS);
        index.push(frame(0)).unwrap();
        assert!(matches!(
            index.push(frame(1920)),
            Err(IndexError::Discontinuity {
                expected: 960,
                got: 1920
            })
        ));
        assert!(matches!(
            index.push(Frame {
                duration: 0,
                ..frame(960)
            }),
            Err(IndexError::ZeroDuration(960))
        ));
        index.finish().unwrap();
        assert!(matches!(index.push(frame(960)), Err(IndexError::Ended)));
    }

    #[test]
    fn a_track_resumed_mid_grid_starts_with_a_short_part() {
        let mut index = RenditionIndex::new(HlsLayout::ONE_SECOND, AudioConfig::PROGRAM_OPUS);
        let start = 150_000; // inside part 1.0
        for i in 0..60u64 {
            index
                .push(Frame {
                    seq: 1000 + i,
                    start_granule: start + i * 960,
                    duration: 960,
                    ingest_ms: 5,
                    data: Bytes::from_static(&[0xF8, 1]),
                })
                .unwrap();
        }
        let first = index.parts().next().unwrap();
        assert_eq!(first.id, PartId { msn: 1, part: 0 });
        assert_eq!(first.start_granule, 150_000);
        assert_eq!(decode_time(&first.bytes).1, 150_000);
        assert_eq!(index.position().unwrap().first_part, first.id);
    }

    #[test]
    fn a_late_index_seeded_with_the_earlier_segments_lists_what_the_first_does() {
        // 18 s: the parts listed (the last 9 s) are all ones the late
        // index built itself
        let full = index_of(900, false);
        // another node that saw the track only from segment 2 on
        let mut late = RenditionIndex::new(HlsLayout::ONE_SECOND, AudioConfig::PROGRAM_OPUS);
        for g in groups(900, false) {
            for frame in group_frames(&g)
                .into_iter()
                .filter(|f| f.start_granule >= 288_000)
            {
                late.push(frame).unwrap();
            }
        }
        assert_eq!(late.segments()[0].msn, 2);
        assert_eq!(late.seed(full.segments().iter().copied()), 2);
        assert_eq!(late.segments(), full.segments());
        assert_eq!(late.position(), full.position());
        assert_eq!(
            crate::hls::playlist::media_playlist(&late),
            crate::hls::playlist::media_playlist(&full)
        );
        // seeding again adds nothing
        assert_eq!(late.seed(full.segments().iter().copied()), 0);
        // an index of summaries only: an ended recording's playlist
        let mut summaries = RenditionIndex::new(HlsLayout::ONE_SECOND, AudioConfig::PROGRAM_OPUS);
        summaries.seed(full.segments().iter().copied());
        summaries.finish().unwrap();
        let position = summaries.position().unwrap();
        assert!(position.ended && position.segment_complete(5));
        assert_eq!(position.next_part, PartId { msn: 6, part: 0 });
    }
}
