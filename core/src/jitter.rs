//! Per-speaker jitter buffer for Opus arriving over RTP.
//!
//! The network delivers packets late, early, twice or never; the mixer wants
//! one thing to play every 20 ms. Packets wait here ordered by RTP timestamp
//! and playout starts `target_ms` after the stream (re)starts. The playout
//! point only advances when something is played, so a sender whose clock runs
//! slow costs an occasional silent slot instead of starving the buffer for
//! good, and one that runs fast is trimmed by the depth bound.

use std::collections::BTreeMap;

use bytes::Bytes;

/// Opus' RTP clock is always 48 kHz (RFC 7587).
const SAMPLES_PER_MS: u64 = 48;

/// Duration assumed for a lost slot until a packet says otherwise.
const DEFAULT_FRAME: u32 = 960;

/// Longest Opus packet: 120 ms.
const MAX_FRAME: u32 = 5760;

/// Pops over which the smallest depth is watched (about 2 s of 20 ms).
const DRAIN_WINDOW: u32 = 100;

/// What to play for one slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Playout {
    /// The packet whose timestamp is the slot being played.
    Packet(Bytes),
    /// The slot's packet is missing but later audio exists. `fec` is the
    /// packet right after the gap when it is already here (its in-band FEC
    /// may carry this slot); otherwise conceal with PLC.
    Lost { fec: Option<Bytes> },
    /// Nothing to play: not started, underrun, or the speaker stopped.
    Silent,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets played in their slot.
    pub played: u64,
    /// Slots concealed because their packet never came in time.
    pub lost: u64,
    /// Packets that arrived after their slot was played (or given up).
    pub late_dropped: u64,
    /// Packets whose audio was already buffered (same or overlapping time).
    pub duplicates: u64,
    /// Packets thrown away unplayed to keep latency bounded.
    pub skipped: u64,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    samples: u32,
    payload: Bytes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// No packet yet.
    Idle,
    /// Buffering: playout from `cursor` starts at `start_ms`.
    Waiting { start_ms: u64 },
    /// Playing; `dry_since` is when the buffer ran empty, if it is.
    Playing { dry_since: Option<u64> },
}

#[derive(Debug)]
pub struct JitterBuffer {
    target_ms: u64,
    /// Target and maximum depth, in samples.
    target: u64,
    max: u64,
    packets: BTreeMap<u64, Entry>,
    state: State,
    /// Timestamp of the next slot to play.
    cursor: u64,
    /// Audio before this was played or given up: a restart never goes back
    /// past it.
    floor: u64,
    /// Duration of the latest packet, used for lost slots.
    frame: u32,
    last_pop_samples: u32,
    last_seq: Option<u64>,
    /// Smallest depth seen after a played packet in the current window,
    /// and how many pops the window has had.
    min_depth: u64,
    window_pops: u32,
    stats: JitterStats,
}

impl JitterBuffer {
    /// `target_ms`: delay between a stream's first packet and its playout.
    /// `max_ms`: buffered depth beyond which the oldest audio is skipped.
    pub fn new(target_ms: u64, max_ms: u64) -> Self {
        let max_ms = max_ms.max(target_ms);
        JitterBuffer {
            target_ms,
            target: target_ms * SAMPLES_PER_MS,
            max: max_ms * SAMPLES_PER_MS,
            packets: BTreeMap::new(),
            state: State::Idle,
            cursor: 0,
            floor: 0,
            frame: DEFAULT_FRAME,
            last_pop_samples: 0,
            last_seq: None,
            min_depth: u64::MAX,
            window_pops: 0,
            stats: JitterStats::default(),
        }
    }

    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Audio buffered ahead of the playout point, gaps included.
    pub fn depth_ms(&self) -> u64 {
        match (self.state, self.newest_end()) {
            (State::Idle, _) | (_, None) => 0,
            (_, Some(end)) => end.saturating_sub(self.cursor) / SAMPLES_PER_MS,
        }
    }

    /// 48 kHz samples the last `pop` covered: the packet's duration, the
    /// span to conceal for `Lost`, 0 for `Silent`.
    pub fn last_pop_samples(&self) -> u32 {
        self.last_pop_samples
    }

    /// Adds one packet: `ts` is its extended RTP timestamp (48 kHz) and
    /// `samples` its duration; `seq` tells a DTX pause from a loss.
    pub fn push(&mut self, seq: u64, ts: u64, samples: u32, payload: Bytes, now_ms: u64) {
        let samples = samples.clamp(1, MAX_FRAME);
        let mut anchor_back = false;
        match self.state {
            State::Idle => self.restart(ts, now_ms),
            State::Waiting { .. } => {
                if ts < self.cursor {
                    // Reordered around the (re)start: take it if it is close.
                    if ts < self.floor || self.cursor - ts > self.target {
                        self.stats.late_dropped += 1;
                        return;
                    }
                    anchor_back = true;
                }
            }
            State::Playing { dry_since } => {
                let dry_for = dry_since.map(|t| now_ms.saturating_sub(t));
                let lasted =
                    self.packets.is_empty() && dry_for.is_some_and(|d| d >= self.target_ms);
                let far_ahead = ts > self.cursor.saturating_add(self.target);
                let far_behind = ts.saturating_add(self.max) < self.cursor;
                if lasted && (far_ahead || far_behind) {
                    // The stream resumed elsewhere (a pause, or a new
                    // timeline): start over there instead of playing the
                    // gap as losses.
                    self.floor = ts.min(self.cursor);
                    self.restart(ts, now_ms);
                } else if ts < self.cursor {
                    self.stats.late_dropped += 1;
                    return;
                }
            }
        }
        if !self.insert(seq, ts, samples, payload) {
            self.stats.duplicates += 1;
            return;
        }
        if anchor_back {
            self.cursor = ts;
        }
        self.frame = samples;
        self.bound_depth();
    }

    /// What to play for the next slot. Call once per 20 ms tick (more often
    /// only when packets are shorter than the tick).
    pub fn pop(&mut self, now_ms: u64) -> Playout {
        self.last_pop_samples = 0;
        match self.state {
            State::Idle => return Playout::Silent,
            State::Waiting { start_ms } if now_ms < start_ms => return Playout::Silent,
            State::Waiting { .. } => self.state = State::Playing { dry_since: None },
            State::Playing { .. } => {}
        }
        let Some(first) = self.packets.first_entry() else {
            if let State::Playing { dry_since: None } = self.state {
                self.state = State::Playing {
                    dry_since: Some(now_ms),
                };
            }
            return Playout::Silent;
        };
        self.state = State::Playing { dry_since: None };
        let ts = *first.key();
        if ts <= self.cursor {
            let entry = first.remove();
            self.cursor = ts.saturating_add(u64::from(entry.samples));
            self.last_pop_samples = entry.samples;
            self.last_seq = Some(entry.seq);
            self.stats.played += 1;
            self.drain();
            return Playout::Packet(entry.payload);
        }
        let span = (ts - self.cursor).min(u64::from(self.frame));
        self.cursor += span;
        self.last_pop_samples = span as u32;
        let next = first.get();
        // Contiguous seq across a timestamp gap is DTX: nothing was lost,
        // the decoder's PLC turns into comfort noise.
        if self.last_seq.is_some_and(|s| s.wrapping_add(1) == next.seq) {
            return Playout::Lost { fec: None };
        }
        self.stats.lost += 1;
        let fec = (ts == self.cursor).then(|| next.payload.clone());
        Playout::Lost { fec }
    }

    /// Delay gained once (a late first packet, a hiccup) would otherwise
    /// stay for the whole session: when even the shallowest moment of a
    /// window held more than the target, one packet is dropped. At most
    /// one frame per window, so it is one short glitch every ~2 s while
    /// there is excess, and nothing in steady state (where the shallowest
    /// moment is about one frame under the target).
    fn drain(&mut self) {
        let depth = self
            .newest_end()
            .map_or(0, |end| end.saturating_sub(self.cursor));
        self.min_depth = self.min_depth.min(depth);
        self.window_pops += 1;
        if self.window_pops < DRAIN_WINDOW {
            return;
        }
        let excess = self.min_depth > self.target;
        self.min_depth = u64::MAX;
        self.window_pops = 0;
        if !excess {
            return;
        }
        if let Some(first) = self.packets.first_entry() {
            if *first.key() == self.cursor {
                let entry = first.remove();
                self.cursor = self.cursor.saturating_add(u64::from(entry.samples));
                self.floor = self.floor.max(self.cursor);
                self.stats.skipped += 1;
            }
        }
    }

    fn restart(&mut self, ts: u64, now_ms: u64) {
        self.min_depth = u64::MAX;
        self.window_pops = 0;
        self.cursor = ts;
        self.state = State::Waiting {
            start_ms: now_ms.saturating_add(self.target_ms),
        };
    }

    /// Inserts unless the packet's audio overlaps a buffered packet.
    fn insert(&mut self, seq: u64, ts: u64, samples: u32, payload: Bytes) -> bool {
        let end = ts.saturating_add(u64::from(samples));
        let before = self.packets.range(..=ts).next_back();
        if before.is_some_and(|(&t, e)| t == ts || t.saturating_add(u64::from(e.samples)) > ts) {
            return false;
        }
        if self
            .packets
            .range(ts..)
            .next()
            .is_some_and(|(&t, _)| t < end)
        {
            return false;
        }
        self.packets.insert(
            ts,
            Entry {
                seq,
                samples,
                payload,
            },
        );
        true
    }

    fn newest_end(&self) -> Option<u64> {
        let (&ts, e) = self.packets.last_key_value()?;
        Some(ts.saturating_add(u64::from(e.samples)))
    }

    /// Past `max`, drops the oldest packets down to `target` of audio in
    /// one jump: one glitch, then low latency again.
    fn bound_depth(&mut self) {
        let Some(end) = self.newest_end() else {
            return;
        };
        if end.saturating_sub(self.cursor) <= self.max {
            return;
        }
        let keep_from = end.saturating_sub(self.target);
        while self.packets.len() > 1 {
            let Some(first) = self.packets.first_entry() else {
                break;
            };
            if first.key().saturating_add(u64::from(first.get().samples)) > keep_from {
                break;
            }
            first.remove();
            self.stats.skipped += 1;
        }
        if let Some((&ts, _)) = self.packets.first_key_value() {
            self.cursor = ts;
            self.floor = ts;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: u64 = 960;

    fn p(i: u64) -> Bytes {
        Bytes::from(i.to_be_bytes().to_vec())
    }

    /// Pushes packet `i` (seq `i`, timestamp `i * 960`) arriving at `now`.
    fn push(j: &mut JitterBuffer, i: u64, now: u64) {
        j.push(i, i * F, 960, p(i), now);
    }

    fn played(out: &Playout) -> Option<u64> {
        match out {
            Playout::Packet(b) => Some(u64::from_be_bytes(b[..].try_into().ok()?)),
            _ => None,
        }
    }

    #[test]
    fn delay_gained_at_the_start_is_drained() {
        // the first packet is 30 ms late, the rest on time: playout is
        // anchored 30 ms later than the stream needs
        let mut j = JitterBuffer::new(40, 200);
        push(&mut j, 0, 1030);
        let mut skipped_at = None;
        for k in 1..400u64 {
            push(&mut j, k, 1000 + k * 20);
            let _ = j.pop(1000 + k * 20 + 5);
            if skipped_at.is_none() && j.stats().skipped > 0 {
                skipped_at = Some(k);
            }
        }
        assert!(
            skipped_at.is_some_and(|k| k < 150),
            "never drained: {:?}",
            j.stats()
        );
        // 30 ms late plus the tick phase: two frames too deep, drained one
        // frame per window down to the target, then left alone
        assert_eq!(j.stats().skipped, 2, "{:?}", j.stats());
        assert_eq!(j.stats().lost, 0);
        assert_eq!(j.depth_ms(), 40);
    }

    #[test]
    fn a_steady_stream_is_never_drained() {
        let mut j = JitterBuffer::new(40, 200);
        for k in 0..1000u64 {
            push(&mut j, k, 1000 + k * 20);
            let _ = j.pop(1000 + k * 20 + 5);
        }
        assert_eq!(j.stats().skipped, 0, "{:?}", j.stats());
        assert_eq!(j.stats().lost, 0);
    }

    #[test]
    fn silent_before_start_and_until_the_target_delay() {
        let mut j = JitterBuffer::new(40, 200);
        assert_eq!(j.pop(0), Playout::Silent);
        assert_eq!(j.depth_ms(), 0);
        push(&mut j, 0, 1000);
        assert_eq!(j.pop(1000), Playout::Silent);
        assert_eq!(j.pop(1020), Playout::Silent);
        assert_eq!(j.last_pop_samples(), 0);
        assert_eq!(played(&j.pop(1040)), Some(0));
        assert_eq!(j.last_pop_samples(), 960);
        assert_eq!(
            j.stats(),
            JitterStats {
                played: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn plays_in_order_after_the_target_delay() {
        let mut j = JitterBuffer::new(40, 200);
        let mut out = Vec::new();
        for t in 0..20u64 {
            push(&mut j, t, t * 20);
            if t == 2 {
                assert_eq!(j.depth_ms(), 60);
            }
            out.push(played(&j.pop(t * 20)));
        }
        assert_eq!(&out[..2], &[None, None]);
        let expect: Vec<Option<u64>> = (0..18).map(Some).collect();
        assert_eq!(&out[2..], &expect[..]);
        assert_eq!(j.depth_ms(), 40);
        assert_eq!(j.stats().played, 18);
        assert_eq!(j.stats().lost, 0);
    }

    #[test]
    fn reordering_is_fixed_by_timestamp() {
        let mut j = JitterBuffer::new(40, 200);
        // 1 arrives before 0, 4 before 3
        for (i, at) in [(1, 0), (0, 5), (2, 40), (4, 60), (3, 65), (5, 100)] {
            push(&mut j, i, at);
        }
        let got: Vec<Option<u64>> = (0..6).map(|k| played(&j.pop(100 + k * 20))).collect();
        let expect: Vec<Option<u64>> = (0..6).map(Some).collect();
        assert_eq!(got, expect);
        assert_eq!(j.stats().late_dropped, 0);
    }

    #[test]
    fn loss_hands_over_the_next_packet_for_fec() {
        let mut j = JitterBuffer::new(40, 200);
        for i in [0, 1, 3, 4] {
            push(&mut j, i, i * 20);
        }
        assert_eq!(played(&j.pop(80)), Some(0));
        assert_eq!(played(&j.pop(100)), Some(1));
        assert_eq!(j.pop(120), Playout::Lost { fec: Some(p(3)) });
        assert_eq!(j.last_pop_samples(), 960);
        assert_eq!(played(&j.pop(140)), Some(3));
        assert_eq!(j.stats().lost, 1);
    }

    #[test]
    fn loss_without_the_next_packet_is_plc() {
        let mut j = JitterBuffer::new(40, 200);
        for i in [0, 3] {
            push(&mut j, i, i * 20);
        }
        assert_eq!(played(&j.pop(60)), Some(0));
        // slots 1 and 2 are gone; only 2 is followed by a buffered packet
        assert_eq!(j.pop(80), Playout::Lost { fec: None });
        assert_eq!(j.pop(100), Playout::Lost { fec: Some(p(3)) });
        assert_eq!(played(&j.pop(120)), Some(3));
        assert_eq!(j.stats().lost, 2);
    }

    #[test]
    fn a_dtx_gap_is_concealed_but_not_counted_lost() {
        let mut j = JitterBuffer::new(40, 200);
        // seq 0 and 1 contiguous, with a two-slot timestamp gap
        j.push(0, 0, 960, p(0), 0);
        j.push(1, 3 * F, 960, p(1), 10);
        assert_eq!(played(&j.pop(40)), Some(0));
        assert_eq!(j.pop(60), Playout::Lost { fec: None });
        assert_eq!(j.pop(80), Playout::Lost { fec: None });
        assert_eq!(played(&j.pop(100)), Some(1));
        assert_eq!(j.stats().lost, 0);
    }

    #[test]
    fn late_and_duplicate_packets_are_dropped() {
        let mut j = JitterBuffer::new(40, 200);
        for i in [0, 2] {
            push(&mut j, i, i * 20);
        }
        assert_eq!(played(&j.pop(40)), Some(0));
        push(&mut j, 0, 45); // already played
        push(&mut j, 2, 46); // already buffered
        j.push(9, 2 * F + 480, 960, p(9), 47); // overlaps packet 2
        assert_eq!(j.pop(60), Playout::Lost { fec: Some(p(2)) });
        push(&mut j, 1, 70); // its slot was concealed
        assert_eq!(played(&j.pop(80)), Some(2));
        let s = j.stats();
        assert_eq!(
            (s.late_dropped, s.duplicates, s.lost, s.played),
            (2, 2, 1, 2)
        );
    }

    #[test]
    fn depth_is_bounded_by_skipping_the_oldest_audio() {
        let mut j = JitterBuffer::new(40, 200);
        push(&mut j, 0, 0);
        assert_eq!(played(&j.pop(40)), Some(0));
        // a 300 ms burst after a stall
        for i in 1..=15 {
            push(&mut j, i, 400);
            assert!(j.depth_ms() <= 200, "depth {} after {i}", j.depth_ms());
        }
        // at 220 ms (packet 11) it fell back to 40 ms: 1..=9 were skipped
        assert_eq!(j.stats().skipped, 9);
        assert_eq!(j.depth_ms(), 120);
        let got: Vec<Option<u64>> = (0..3).map(|k| played(&j.pop(420 + k * 20))).collect();
        assert_eq!(got, vec![Some(10), Some(11), Some(12)]);
        assert_eq!(j.stats().lost, 0);
    }

    #[test]
    fn a_far_packet_after_a_long_underrun_reanchors_playout() {
        let mut j = JitterBuffer::new(40, 200);
        for i in 0..3 {
            push(&mut j, i, i * 20);
        }
        let mut now = 40;
        while j.pop(now) != Playout::Silent {
            now += 20;
        }
        // the speaker pauses for five seconds, then goes on
        for _ in 0..250 {
            now += 20;
            assert_eq!(j.pop(now), Playout::Silent);
        }
        let resumed = 3 + 250;
        push(&mut j, resumed, now + 5);
        assert_eq!(j.pop(now + 20), Playout::Silent);
        push(&mut j, resumed + 1, now + 25);
        assert_eq!(j.pop(now + 40), Playout::Silent);
        assert_eq!(played(&j.pop(now + 60)), Some(resumed));
        assert_eq!(played(&j.pop(now + 80)), Some(resumed + 1));
        assert_eq!(j.stats().lost, 0);
        assert_eq!(j.stats().played, 5);
    }

    #[test]
    fn a_short_underrun_plays_the_gap_as_loss() {
        let mut j = JitterBuffer::new(40, 200);
        for i in 0..2 {
            push(&mut j, i, i * 20);
        }
        assert_eq!(played(&j.pop(40)), Some(0));
        assert_eq!(played(&j.pop(60)), Some(1));
        assert_eq!(j.pop(80), Playout::Silent);
        // 2 was lost, 3 comes only 20 ms into the underrun
        push(&mut j, 3, 90);
        assert_eq!(j.pop(100), Playout::Lost { fec: Some(p(3)) });
        assert_eq!(played(&j.pop(120)), Some(3));
    }

    #[test]
    fn a_timeline_that_restarts_behind_is_followed() {
        let mut j = JitterBuffer::new(40, 200);
        push(&mut j, 1000, 0);
        assert_eq!(played(&j.pop(40)), Some(1000));
        // a new sender timeline far behind: late at first, then followed
        push(&mut j, 5, 50);
        assert_eq!(j.stats().late_dropped, 1);
        assert_eq!(j.pop(60), Playout::Silent);
        push(&mut j, 6, 110);
        assert_eq!(j.pop(120), Playout::Silent);
        assert_eq!(played(&j.pop(150)), Some(6));
    }

    #[test]
    fn odd_inputs_do_not_stall_or_panic() {
        let mut j = JitterBuffer::new(40, 200);
        j.push(0, u64::MAX - 10, 0, p(0), 0);
        j.push(1, u64::MAX - 9, 960, p(1), 0);
        assert_eq!(played(&j.pop(40)), Some(0));
        assert_eq!(j.last_pop_samples(), 1);
        assert_eq!(played(&j.pop(60)), Some(1));
        assert_eq!(j.pop(80), Playout::Silent);
        j.push(2, u64::MAX, 960, p(2), 90);
        j.push(3, u64::MAX, 960, p(3), 90);
        assert_eq!(played(&j.pop(100)), Some(2));
        assert_eq!(j.pop(120), Playout::Silent);
        assert_eq!(j.stats().duplicates, 1);
    }
}
