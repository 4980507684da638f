//! The HLS renditions of a recording: the Ogg Opus file the recorder
//! wrote holds exactly the track's packets and granules, so parts and
//! segments rebuilt from it are the bytes the live index made (the live
//! index keeps only recent parts; an ended space is served from here).

use bytes::Bytes;

use super::aac::{self, AacPartPlan};
use super::fmp4::{AacLcConfig, AudioConfig, Fmp4Error};
use super::index::{part_fragment, Frame, IndexError, RenditionIndex, SegmentSummary};
use super::layout::{HlsLayout, PartId};
use crate::ogg_page::{scan_page, HEADER_LEN};
use crate::opus::{packet_duration, parse_opus_tags};
use crate::package::{group_index, EPOCH_TAG};

/// A recording's track: every packet as a frame (start granule, duration).
#[derive(Clone, Debug, Default)]
pub struct RecordedTrack {
    pub frames: Vec<Frame>,
    /// Granule 0's wall clock, from OpusTags.
    pub epoch_ms: Option<u64>,
    /// The track has ended: the recording carries its end-of-stream page,
    /// or the caller knows the space ended (a track that ended on a group
    /// boundary records no end page).
    pub ended: bool,
}

impl RecordedTrack {
    /// Reads the CRC-valid pages of `file` (a torn tail is ignored). The
    /// frames share `file`'s memory. Ingest clocks are not recorded: they
    /// are derived from the epoch (a source's pauses are not seen), which
    /// only matters to playlists' dates, never to media bytes.
    pub fn parse(file: Bytes) -> RecordedTrack {
        let mut track = RecordedTrack::default();
        let mut at = 0usize;
        let mut seq = 0u64;
        let mut granule: Option<u64> = None;
        while let Ok(page) = scan_page(&file[at..]) {
            let nsegs = file[at + 26] as usize;
            let lacing = &file[at + HEADER_LEN..at + HEADER_LEN + nsegs];
            let mut body = at + HEADER_LEN + nsegs;
            match group_index(page.header.sequence) {
                None if page.header.sequence == 1 => {
                    track.epoch_ms = parse_opus_tags(&file[body..at + page.len]).and_then(|tags| {
                        tags.into_iter()
                            .find(|(k, _)| k == EPOCH_TAG)
                            .and_then(|(_, v)| v.parse().ok())
                    });
                }
                None => {}
                Some(_) => {
                    // the packets of one group page, each whole on it
                    let mut packets = Vec::new();
                    let mut len = 0usize;
                    for &l in lacing {
                        len += usize::from(l);
                        if l < 255 {
                            packets.push(file.slice(body..body + len));
                            body += len;
                            len = 0;
                        }
                    }
                    let durations: Vec<u32> = packets
                        .iter()
                        .map(|p| packet_duration(p).unwrap_or(960))
                        .collect();
                    let total: u64 = durations.iter().map(|&d| u64::from(d)).sum();
                    // the page's granule is its last packet's end: the
                    // first page of a track gives where it started
                    let mut start =
                        granule.unwrap_or_else(|| page.header.granule.saturating_sub(total));
                    for (data, duration) in packets.into_iter().zip(durations) {
                        let epoch = track.epoch_ms.unwrap_or(0);
                        track.frames.push(Frame {
                            seq,
                            start_granule: start,
                            duration,
                            ingest_ms: epoch + start * 1000 / 48_000,
                            data,
                        });
                        seq += 1;
                        start += u64::from(duration);
                    }
                    granule = Some(page.header.granule.max(start));
                    track.ended = page.header.flags & crate::ogg_page::FLAG_EOS != 0;
                }
            }
            at += page.len;
        }
        track
    }

    pub fn end_granule(&self) -> u64 {
        self.frames.last().map_or(0, Frame::end_granule)
    }

    /// The frames whose start is in `[from, to)`.
    pub fn frames_between(&self, from: u64, to: u64) -> &[Frame] {
        let first = self.frames.partition_point(|f| f.start_granule < from);
        let last = self.frames.partition_point(|f| f.start_granule < to);
        &self.frames[first..last]
    }

    /// The frames from the one containing `granule` to the one before `to`.
    fn frames_around(&self, granule: u64, to: u64) -> &[Frame] {
        let first = self.frames.partition_point(|f| f.end_granule() <= granule);
        let last = self.frames.partition_point(|f| f.start_granule < to);
        &self.frames[first..last.max(first)]
    }

    fn track_end(&self) -> Option<u64> {
        self.ended.then(|| self.end_granule())
    }

    /// The Opus part `id`, as the live index made it; `None` when the
    /// recording has no complete part there.
    pub fn opus_part(&self, layout: &HlsLayout, id: PartId) -> Result<Option<Bytes>, Fmp4Error> {
        let range = layout.part_range(id);
        let frames = self.frames_between(range.start, range.end);
        let complete = frames
            .last()
            .is_some_and(|f| f.end_granule() >= range.end || self.ended);
        if !complete {
            return Ok(None);
        }
        part_fragment(layout, id, frames).map(Some)
    }

    /// The AAC part `id`, encoded as the live encoder encoded it; `None`
    /// when the recording does not reach past it yet.
    pub fn aac_part(
        &self,
        layout: &HlsLayout,
        id: PartId,
        config: AacLcConfig,
    ) -> Result<Option<Bytes>, aac::AacError> {
        let plan = AacPartPlan::new(layout, id, self.track_end());
        if plan.frames.is_empty()
            || (self.track_end().is_none() && self.end_granule() < plan.ready_at())
        {
            return Ok(None);
        }
        let frames = self.frames_around(plan.decode_from, plan.pcm_end);
        let encoded = aac::encode_part(&plan, frames, config)?;
        part_fragment(layout, id, &encoded)
            .map(Some)
            .map_err(|e| aac::AacError::Encoder(e.to_string()))
    }

    /// The segment summaries of the Opus rendition (what its playlist
    /// lists), as an index fed the whole recording.
    pub fn opus_index(&self, layout: HlsLayout) -> Result<RenditionIndex, IndexError> {
        let mut index = RenditionIndex::new(layout, AudioConfig::PROGRAM_OPUS).with_retention(0);
        for frame in &self.frames {
            index.push(frame.clone())?;
        }
        if self.ended {
            index.finish()?;
        }
        Ok(index)
    }

    /// The AAC rendition's index (timing only: its parts are encoded when
    /// asked for), starting with the first part whose Opus pre-roll the
    /// recording holds, as the live encoder does.
    pub fn aac_index(
        &self,
        layout: HlsLayout,
        config: AacLcConfig,
    ) -> Result<RenditionIndex, IndexError> {
        let mut index = RenditionIndex::new(layout, AudioConfig::AacLc(config)).with_retention(0);
        let (Some(first), end) = (self.frames.first(), self.end_granule()) else {
            return Ok(index);
        };
        let mut part = layout.part_at(first.start_granule);
        let mut started = false;
        while layout.part_range(part).start < end {
            let plan = AacPartPlan::new(&layout, part, self.track_end());
            let ready = self.ended || end >= plan.ready_at();
            if !ready {
                break;
            }
            let frames = self.frames_around(plan.decode_from, plan.pcm_end);
            started |= aac::holds_preroll(&plan, frames);
            if started {
                for frame in aac::part_timing(&plan, frames) {
                    index.push(frame)?;
                }
            }
            part = layout.next_part(part);
        }
        if self.ended {
            index.finish()?;
        }
        Ok(index)
    }
}

/// Segment summaries of an index, oldest first (complete ones, then the
/// open one).
pub fn summaries(index: &RenditionIndex) -> Vec<SegmentSummary> {
    index
        .segments()
        .iter()
        .chain(index.open_segment())
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::{group_page, header_pages};
    use tribune_core::track::Track;

    fn recording(packets: usize, finish: bool) -> (Bytes, RenditionIndex) {
        let mut file = header_pages(3, "rec", 1_700_000_000_000).to_vec();
        let mut track = Track::new(4800);
        let mut live = RenditionIndex::new(HlsLayout::ONE_SECOND, AudioConfig::PROGRAM_OPUS)
            .with_retention(100);
        for i in 0..packets {
            let data = Bytes::from(vec![31 << 3, i as u8, 0x55]);
            for g in track.push(data, 960, 1_700_000_000_000 + i as u64 * 20) {
                file.extend_from_slice(&group_page(3, &g));
                live.push_group(&g).unwrap();
            }
        }
        if finish {
            if let Some(g) = track.finish() {
                file.extend_from_slice(&group_page(3, &g));
                live.push_group(&g).unwrap();
            }
            live.finish().unwrap();
        }
        (Bytes::from(file), live)
    }

    #[test]
    fn parts_rebuilt_from_the_recording_are_the_live_parts() {
        // ends mid-group: the last page carries the end of stream
        let (file, live) = recording(533, true);
        let rec = RecordedTrack::parse(file);
        assert!(rec.ended);
        assert_eq!(rec.epoch_ms, Some(1_700_000_000_000));
        assert_eq!(rec.frames.len(), 533);
        assert_eq!(rec.end_granule(), 533 * 960);
        for part in live.parts() {
            let rebuilt = rec.opus_part(&HlsLayout::ONE_SECOND, part.id).unwrap();
            assert_eq!(rebuilt.as_ref(), Some(&part.bytes), "{:?}", part.id);
        }
        let index = rec.opus_index(HlsLayout::ONE_SECOND).unwrap();
        assert_eq!(index.segments(), live.segments());
        assert_eq!(index.position(), live.position());
    }

    #[test]
    fn a_live_recording_has_no_part_past_its_end() {
        let (file, live) = recording(130, false);
        let rec = RecordedTrack::parse(file);
        assert!(!rec.ended);
        let l = HlsLayout::ONE_SECOND;
        assert!(rec
            .opus_part(&l, PartId { msn: 0, part: 1 })
            .unwrap()
            .is_some());
        // 2.6 s recorded (26 groups): part 0.2 is not complete yet
        assert!(rec
            .opus_part(&l, PartId { msn: 0, part: 2 })
            .unwrap()
            .is_none());
        let index = rec.opus_index(l).unwrap();
        assert_eq!(index.position(), live.position());
    }

    #[test]
    fn a_torn_recording_gives_what_is_whole() {
        let (file, _) = recording(100, false);
        let torn = file.slice(..file.len() - 7);
        let rec = RecordedTrack::parse(torn);
        assert_eq!(rec.frames.len(), 95);
        assert!(RecordedTrack::parse(Bytes::from_static(b"garbage"))
            .frames
            .is_empty());
    }
}
