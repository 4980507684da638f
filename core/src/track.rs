//! The program track: seq-numbered Opus packets cut into groups.
//!
//! The track owns the timeline. Sources come and go (a source that drops and
//! reconnects brings a fresh encoder whose own granules restart at zero), but
//! the track's seq and granule only ever continue, so every listener, the
//! recorder and every edge see one uninterrupted stream.

use bytes::Bytes;

/// Most lacing values one Ogg page can carry.
const MAX_PAGE_SEGMENTS: usize = 255;

/// One Opus packet on the program track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub seq: u64,
    /// Granule (48 kHz samples since the start of the track) at the *end*
    /// of this packet, as Ogg pages carry it.
    pub granule: u64,
    /// Wall clock (ms since the Unix epoch) when the packet was ingested.
    pub ingest_ms: u64,
    pub data: Bytes,
}

/// A closed group: consecutive packets of about `group_samples` duration.
/// Each group becomes exactly one Ogg page, numbered by `index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub index: u64,
    pub packets: Vec<Packet>,
    /// Granule at the start of the group (end of the previous one).
    pub start_granule: u64,
    /// Set on the last group of a track that has ended.
    pub last: bool,
}

impl Group {
    pub fn end_granule(&self) -> u64 {
        self.packets.last().map_or(0, |p| p.granule)
    }

    /// Duration of the group in 48 kHz samples.
    pub fn samples(&self) -> u64 {
        self.end_granule().saturating_sub(self.start_granule)
    }

    pub fn first_seq(&self) -> Option<u64> {
        self.packets.first().map(|p| p.seq)
    }
}

/// Where a track stands; enough to resume it after a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TrackPosition {
    pub next_seq: u64,
    pub granule: u64,
    pub next_group: u64,
}

#[derive(Debug)]
pub struct Track {
    group_samples: u64,
    position: TrackPosition,
    open: Vec<Packet>,
    open_samples: u64,
    open_segments: usize,
}

/// Number of Ogg lacing values a packet of `len` bytes needs.
pub fn lacing_segments(len: usize) -> usize {
    len / 255 + 1
}

impl Track {
    pub fn new(group_samples: u64) -> Self {
        Self::resume(group_samples, TrackPosition::default())
    }

    /// Continues a track from a recovered position (after a crash or restart).
    pub fn resume(group_samples: u64, position: TrackPosition) -> Self {
        Track {
            group_samples: group_samples.max(1),
            position,
            open: Vec::new(),
            open_samples: 0,
            open_segments: 0,
        }
    }

    pub fn position(&self) -> TrackPosition {
        self.position
    }

    /// Continues from `position` (a group made elsewhere was taken as
    /// is); whatever was open is dropped.
    pub fn jump(&mut self, position: TrackPosition) {
        self.position = position;
        self.open.clear();
        self.open_samples = 0;
        self.open_segments = 0;
    }

    /// Samples in packets not yet in a closed group.
    pub fn open_samples(&self) -> u64 {
        self.open_samples
    }

    /// Appends one packet of `duration` samples. Returns the groups this
    /// closes (at most two: one closed early to keep a page under 255
    /// segments, and one that reached its duration).
    pub fn push(&mut self, data: Bytes, duration: u32, ingest_ms: u64) -> Vec<Group> {
        let mut closed = Vec::new();
        let segments = lacing_segments(data.len());
        if !self.open.is_empty() && self.open_segments + segments > MAX_PAGE_SEGMENTS {
            closed.extend(self.close(false));
        }
        self.position.granule += u64::from(duration);
        self.open.push(Packet {
            seq: self.position.next_seq,
            granule: self.position.granule,
            ingest_ms,
            data,
        });
        self.position.next_seq += 1;
        self.open_samples += u64::from(duration);
        self.open_segments += segments;
        if self.open_samples >= self.group_samples {
            closed.extend(self.close(false));
        }
        closed
    }

    /// Ends the track: closes the partial group, marked last. Returns `None`
    /// when nothing was pending (the previous group then stays the last).
    pub fn finish(&mut self) -> Option<Group> {
        self.close(true)
    }

    fn close(&mut self, last: bool) -> Option<Group> {
        if self.open.is_empty() {
            return None;
        }
        let group = Group {
            index: self.position.next_group,
            start_granule: self.position.granule - self.open_samples,
            packets: std::mem::take(&mut self.open),
            last,
        };
        self.position.next_group += 1;
        self.open_samples = 0;
        self.open_segments = 0;
        Some(group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(len: usize) -> Bytes {
        Bytes::from(vec![0u8; len])
    }

    #[test]
    fn groups_close_at_fixed_duration() {
        let mut t = Track::new(4800);
        let mut groups = Vec::new();
        for i in 0..12 {
            groups.extend(t.push(pkt(80), 960, 1000 + i * 20));
        }
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].index, 0);
        assert_eq!(groups[0].packets.len(), 5);
        assert_eq!(groups[0].end_granule(), 4800);
        assert_eq!(groups[0].samples(), 4800);
        assert_eq!(groups[1].start_granule, 4800);
        assert_eq!(groups[1].first_seq(), Some(5));
        assert_eq!(groups[1].end_granule(), 9600);
        assert_eq!(t.open_samples(), 1920);
        let last = t.finish().expect("partial group");
        assert!(last.last);
        assert_eq!(last.index, 2);
        assert_eq!(last.end_granule(), 12 * 960);
        assert_eq!(t.finish(), None);
    }

    #[test]
    fn seq_and_granule_continue_across_a_source_reconnect() {
        // A reconnecting source is just more pushes: the track never resets.
        let mut t = Track::new(4800);
        for _ in 0..7 {
            t.push(pkt(60), 960, 0);
        }
        let before = t.position();
        // new source session, its own encoder granules would restart at 0
        let groups: Vec<Group> = (0..3).flat_map(|_| t.push(pkt(60), 960, 5000)).collect();
        assert_eq!(before.next_seq, 7);
        assert_eq!(groups.len(), 1);
        let seqs: Vec<u64> = groups[0].packets.iter().map(|p| p.seq).collect();
        assert_eq!(seqs, vec![5, 6, 7, 8, 9]);
        let granules: Vec<u64> = groups[0].packets.iter().map(|p| p.granule).collect();
        assert_eq!(granules, vec![5760, 6720, 7680, 8640, 9600]);
    }

    #[test]
    fn resume_continues_from_recovered_position() {
        let pos = TrackPosition {
            next_seq: 50,
            granule: 48_000,
            next_group: 10,
        };
        let mut t = Track::resume(4800, pos);
        let g: Vec<Group> = (0..5).flat_map(|_| t.push(pkt(10), 960, 0)).collect();
        assert_eq!(g[0].index, 10);
        assert_eq!(g[0].first_seq(), Some(50));
        assert_eq!(g[0].end_granule(), 48_000 + 4800);
    }

    #[test]
    fn large_packets_close_the_group_before_255_segments() {
        let mut t = Track::new(48_000);
        let mut groups = Vec::new();
        // 1275-byte packets need 6 lacing values each: 42 fit in one page.
        for _ in 0..50 {
            groups.extend(t.push(pkt(1275), 960, 0));
        }
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].packets.len(), 42);
        let segs: usize = groups[0]
            .packets
            .iter()
            .map(|p| lacing_segments(p.data.len()))
            .sum();
        assert!(segs <= 255);
    }
}
