//! The program: a track of Opus packets and the Ogg pages made of it.
//!
//! One path from packets to pages, whoever produced the packets (an Icecast
//! source, the stage mixer, a relay from another node) and whoever consumes
//! the pages (listeners through the fan-out ring, the recorder, a speaker's
//! own track file). It owns the track (seq and granule only ever
//! continue), the epoch (wall clock of granule 0, re-anchored when a new
//! source session starts) and the header pages carrying it. Sans-IO: time
//! comes in as arguments, pages go out as values.

use crate::demux::SourcePacket;
use crate::package::{group_page, header_pages};
use crate::recording::Recovered;
use bytes::Bytes;
use std::sync::Arc;
use tribune_core::track::{Group, Track, TrackPosition};
use tribune_core::SAMPLE_RATE;

/// A page for listeners: its bytes, the audio it carries (48 kHz samples),
/// whether it ends the stream, and its packets' seqs (first, count; none
/// for the empty end marker).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub page: Bytes,
    pub samples: u64,
    pub last: bool,
    pub seqs: Option<(u64, u64)>,
}

/// What one step of the program produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// For the recording, in order (header pages first, once).
    pub record: Vec<Bytes>,
    /// For listeners (the same pages as recorded, without the headers,
    /// which each listener gets on joining).
    pub publish: Vec<Published>,
    /// The closed groups the pages were made of, for relays.
    pub groups: Vec<Arc<Group>>,
    /// The header pages changed (a new epoch): listeners joining from now
    /// on get these.
    pub new_headers: Option<Bytes>,
}

#[derive(Debug)]
pub struct Program {
    serial: u32,
    title: String,
    track: Track,
    epoch_ms: Option<u64>,
    headers: Option<Bytes>,
    recorded_headers: bool,
    finished: bool,
}

impl Program {
    /// A new program whose groups last `group_samples`.
    pub fn new(serial: u32, title: &str, group_samples: u64) -> Program {
        Program::resume(serial, title, group_samples, &Recovered::default())
    }

    /// Continues the program a recording holds (after a restart or crash).
    /// With the recorded epoch the header pages exist at once, so
    /// listeners can join before a source is back.
    pub fn resume(serial: u32, title: &str, group_samples: u64, rec: &Recovered) -> Program {
        Program {
            serial,
            title: title.to_string(),
            track: Track::resume(group_samples, rec.position),
            epoch_ms: rec.epoch_ms,
            headers: rec.epoch_ms.map(|e| header_pages(serial, title, e)),
            recorded_headers: rec.has_headers,
            finished: rec.ended,
        }
    }

    /// The header pages a listener joining now starts with, once there is
    /// an epoch.
    pub fn headers(&self) -> Option<&Bytes> {
        self.headers.as_ref()
    }

    pub fn epoch_ms(&self) -> Option<u64> {
        self.epoch_ms
    }

    pub fn position(&self) -> TrackPosition {
        self.track.position()
    }

    /// Packets on the track so far (its next seq).
    pub fn packets(&self) -> u64 {
        self.track.position().next_seq
    }

    pub fn duration_ms(&self) -> u64 {
        tribune_core::samples_to_ms(self.track.position().granule)
    }

    /// The end of the stream has been produced (or recorded, before a restart).
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Appends packets ingested at `now_ms`. `new_session`: they are the
    /// first of a source session, whose epoch is anchored here so the
    /// batch's last sample is the one that exists now.
    pub fn push(&mut self, packets: &[SourcePacket], now_ms: u64, new_session: bool) -> Output {
        let mut out = Output::default();
        if packets.is_empty() || self.finished {
            return out;
        }
        if new_session || self.epoch_ms.is_none() {
            let batch: u64 = packets.iter().map(|p| u64::from(p.duration)).sum();
            let granule = self.track.position().granule + batch;
            let epoch = now_ms.saturating_sub(granule * 1000 / SAMPLE_RATE);
            self.set_epoch_into(epoch, &mut out);
        }
        if !self.recorded_headers {
            out.record.extend(self.headers.clone());
            self.recorded_headers = true;
        }
        for p in packets {
            for g in self.track.push(p.data.clone(), p.duration, now_ms) {
                self.package(g, &mut out);
            }
        }
        out
    }

    /// The epoch an upstream node anchored (edges make their header pages
    /// from it, so they are the origin's, byte for byte).
    pub fn set_epoch(&mut self, epoch_ms: u64) -> Output {
        let mut out = Output::default();
        if self.epoch_ms != Some(epoch_ms) {
            self.set_epoch_into(epoch_ms, &mut out);
        }
        out
    }

    fn set_epoch_into(&mut self, epoch_ms: u64, out: &mut Output) {
        let headers = header_pages(self.serial, &self.title, epoch_ms);
        self.epoch_ms = Some(epoch_ms);
        self.headers = Some(headers.clone());
        out.new_headers = Some(headers);
    }

    /// A whole group made by the upstream node (an edge's program):
    /// packaged as the origin packaged it. False when it does not continue
    /// the track (a gap upstream, or a restart): the track jumps to it.
    pub fn push_group(&mut self, g: Arc<Group>) -> (Output, bool) {
        let mut out = Output::default();
        if self.finished {
            return (out, true);
        }
        let position = self.track.position();
        // a group this program already made (an upstream that restarted
        // from its recording, a little behind what it had relayed): the
        // listeners have that part of the track already
        if g.index < position.next_group && position.next_group > 0 {
            return (out, true);
        }
        let continuous = g.index == position.next_group
            && g.first_seq() == Some(position.next_seq)
            && g.start_granule == position.granule;
        let end = g.packets.last().map_or(position, |p| TrackPosition {
            next_seq: p.seq + 1,
            granule: p.granule,
            next_group: g.index + 1,
        });
        self.track.jump(end);
        self.finished = g.last;
        self.package(g, &mut out);
        (out, continuous)
    }

    /// Ends the program: the partial group becomes the last page. When
    /// nothing was pending, an empty end marker tells listeners the stream
    /// is over (nothing more is recorded).
    pub fn finish(&mut self) -> Output {
        let mut out = Output::default();
        if self.finished {
            return out;
        }
        self.finished = true;
        match self.track.finish() {
            Some(g) => self.package(Arc::new(g), &mut out),
            None => out.publish.push(Published {
                page: Bytes::new(),
                samples: 0,
                last: true,
                seqs: None,
            }),
        }
        out
    }

    fn package(&self, g: impl Into<Arc<Group>>, out: &mut Output) {
        let g: Arc<Group> = g.into();
        let page = group_page(self.serial, &g);
        out.record.push(page.clone());
        out.publish.push(Published {
            page,
            samples: g.samples(),
            last: g.last,
            seqs: g.first_seq().map(|s| (s, g.packets.len() as u64)),
        });
        out.groups.push(g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ogg_page::{scan_page, FLAG_EOS};
    use crate::recording::recover;

    fn packets(n: usize) -> Vec<SourcePacket> {
        (0..n)
            .map(|i| SourcePacket {
                data: Bytes::from(vec![31 << 3, i as u8]),
                duration: 960,
            })
            .collect()
    }

    #[test]
    fn the_first_audio_anchors_the_epoch_and_records_the_headers_once() {
        let mut p = Program::new(9, "Town hall", 4800);
        assert!(p.headers().is_none());
        assert_eq!(p.push(&[], 1_000, true), Output::default());
        let out = p.push(&packets(5), 10_000, true);
        // 5 packets of 20 ms end now: granule 0 was 100 ms ago
        assert_eq!(p.epoch_ms(), Some(9_900));
        assert_eq!(out.record.len(), 2, "headers, then the one closed group");
        assert_eq!(out.record[0], p.headers().cloned().unwrap());
        assert_eq!(out.publish.len(), 1);
        assert_eq!(out.publish[0].page, out.record[1]);
        assert_eq!(out.publish[0].samples, 4800);
        // a new session re-anchors, but the recording's headers stay
        let out = p.push(&packets(5), 20_000, true);
        assert_eq!(p.epoch_ms(), Some(20_000 - 200));
        assert_eq!(out.record.len(), 1);
    }

    #[test]
    fn a_resumed_program_continues_its_recording_with_headers_at_once() {
        let mut first = Program::new(9, "T", 4800);
        let file: Vec<u8> = first.push(&packets(12), 5_000, true).record.concat();
        let rec = recover(&file);
        let mut again = Program::resume(9, "T", 4800, &rec);
        assert_eq!(again.headers(), first.headers(), "listeners can join now");
        assert_eq!(again.packets(), 10, "two whole groups were recorded");
        let out = again.push(&packets(5), 9_000, false);
        assert!(
            out.record
                .iter()
                .all(|b| scan_page(b).unwrap().header.sequence >= 2),
            "no second set of headers"
        );
        assert_eq!(scan_page(&out.record[0]).unwrap().header.sequence, 4);
    }

    #[test]
    fn finishing_ends_the_stream_once() {
        let mut p = Program::new(9, "T", 4800);
        p.push(&packets(7), 1_000, true);
        let out = p.finish();
        assert_eq!(out.publish.len(), 1);
        assert!(out.publish[0].last);
        let page = scan_page(&out.record[0]).unwrap();
        assert_eq!(page.header.flags & FLAG_EOS, FLAG_EOS);
        assert_eq!(page.header.granule, 7 * 960);
        assert!(p.finished());
        assert_eq!(p.finish(), Output::default());
        assert_eq!(p.push(&packets(1), 2_000, false), Output::default());
        // nothing pending: an empty end marker for listeners only
        let mut q = Program::new(9, "T", 4800);
        q.push(&packets(5), 1_000, true);
        let out = q.finish();
        assert!(out.record.is_empty());
        assert_eq!(out.publish[0].page, Bytes::new());
        assert!(out.publish[0].last);
    }

    #[test]
    fn an_edge_fed_the_origins_groups_makes_the_origins_pages() {
        let mut origin = Program::new(4, "Same", 4800);
        let mut origin_pages = Vec::new();
        let mut groups = Vec::new();
        for (i, chunk) in packets(40).chunks(7).enumerate() {
            let out = origin.push(chunk, 1_000 + i as u64 * 140, i == 0);
            origin_pages.extend(out.publish.into_iter().map(|p| p.page));
            groups.extend(out.groups);
        }
        // the edge joins late: from the third group on
        let mut edge = Program::new(4, "Same", 4800);
        let out = edge.set_epoch(origin.epoch_ms().unwrap());
        assert_eq!(out.new_headers.as_ref(), origin.headers());
        let mut edge_pages = Vec::new();
        for (i, g) in groups.iter().skip(2).enumerate() {
            let (out, continuous) = edge.push_group(g.clone());
            assert_eq!(continuous, i > 0, "the first one is a jump");
            edge_pages.extend(out.publish.into_iter().map(|p| p.page));
        }
        assert_eq!(edge_pages, origin_pages[2..]);
        assert_eq!(edge.packets(), origin.packets() - origin.packets() % 5);
        // a group that skips one is not continuous
        let mut gapped = Program::new(4, "Same", 4800);
        gapped.push_group(groups[0].clone());
        assert!(!gapped.push_group(groups[2].clone()).1);
        // one it already made is not made twice
        let (out, _) = gapped.push_group(groups[1].clone());
        assert!(out.publish.is_empty() && out.groups.is_empty());
    }

    #[test]
    fn two_programs_fed_the_same_packets_make_the_same_bytes() {
        let run = || {
            let mut p = Program::new(4, "Same", 4800);
            let mut all = Vec::new();
            for (i, chunk) in packets(40).chunks(7).enumerate() {
                all.extend(p.push(chunk, 1_000 + i as u64 * 140, i == 0).record);
            }
            all.extend(p.finish().record);
            all
        };
        assert_eq!(run(), run());
    }
}
