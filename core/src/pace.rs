//! Real-time pacing of a media sender.
//!
//! A source may send a little ahead of the wall clock (encoders buffer, a
//! network hiccup is followed by a catch-up burst), but not without bound:
//! a sender pushing pre-made audio as fast as it can would otherwise fill
//! memory and the recording with hours of "live" audio in minutes. The
//! pacer answers, for each packet, how long the caller must wait before
//! accepting it; the IO shell waits (a TCP sender is slowed by
//! backpressure) or drops (a datagram sender).

/// 48 kHz samples per millisecond.
const SAMPLES_PER_MS: u64 = 48;
/// A sender's clock may run this much faster than ours (a sound card's
/// crystal), per unit of elapsed time, on top of the lead.
const DRIFT_DIVISOR: u64 = 100;

#[derive(Clone, Debug)]
pub struct Pacer {
    /// Wall clock (ms) at which media position 0 was due.
    anchor_ms: Option<u64>,
    /// Media accepted so far, in 48 kHz samples.
    media: u64,
    ahead: u64,
    behind: u64,
}

impl Pacer {
    /// `ahead_ms`: how far media may run ahead of real time (plus 1% of
    /// the elapsed time, for a sender's clock running fast).
    /// `behind_ms`: how much catch-up a late sender may bank (beyond it,
    /// lost time is forgotten rather than made up in one burst);
    /// `u64::MAX` when the media's own timeline has gaps that must stay
    /// gaps (a speaker who stops sending while muted).
    pub fn new(ahead_ms: u64, behind_ms: u64) -> Pacer {
        Pacer {
            anchor_ms: None,
            media: 0,
            ahead: ahead_ms.saturating_mul(SAMPLES_PER_MS),
            behind: behind_ms.saturating_mul(SAMPLES_PER_MS),
        }
    }

    /// Media accepted so far, in 48 kHz samples.
    pub fn media_samples(&self) -> u64 {
        self.media
    }

    /// How far (ms) the accepted media runs ahead of real time at `now_ms`;
    /// negative when behind.
    pub fn lead_ms(&self, now_ms: u64) -> i64 {
        let Some(anchor) = self.anchor_ms else {
            return 0;
        };
        let elapsed = i64::try_from(now_ms.saturating_sub(anchor)).unwrap_or(i64::MAX);
        let media = i64::try_from(self.media / SAMPLES_PER_MS).unwrap_or(i64::MAX);
        media.saturating_sub(elapsed)
    }

    /// A packet of `samples` arrives at `now_ms`. Returns 0 when it may be
    /// accepted now (and accounts it), or the milliseconds to wait before
    /// asking again (nothing is accounted).
    ///
    /// Any times and durations are taken (saturating, never overflowing).
    pub fn admit(&mut self, now_ms: u64, samples: u64) -> u64 {
        let anchor = *self.anchor_ms.get_or_insert(now_ms);
        let elapsed = now_ms.saturating_sub(anchor).saturating_mul(SAMPLES_PER_MS);
        let due = self.media.saturating_add(self.behind);
        if due < elapsed {
            // the sender fell far behind (it paused, or its link did):
            // keep only `behind` of catch-up
            self.anchor_ms = Some(now_ms.saturating_sub(due / SAMPLES_PER_MS));
        }
        let anchor = self.anchor_ms.unwrap_or(now_ms);
        let elapsed = now_ms.saturating_sub(anchor).saturating_mul(SAMPLES_PER_MS);
        let allowed = elapsed
            .saturating_add(elapsed / DRIFT_DIVISOR)
            .saturating_add(self.ahead);
        let end = self.media.saturating_add(samples);
        if end > allowed {
            // the time at which `end` is allowed, at the drifting rate
            let early = end - allowed;
            return (early.saturating_mul(DRIFT_DIVISOR) / (DRIFT_DIVISOR + 1))
                .div_ceil(SAMPLES_PER_MS)
                .max(1);
        }
        self.media = end;
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: u64 = 960; // 20 ms

    #[test]
    fn a_real_time_sender_never_waits() {
        let mut p = Pacer::new(2_000, 5_000);
        for i in 0..1_000u64 {
            assert_eq!(p.admit(10_000 + i * 20, FRAME), 0, "packet {i}");
        }
        assert_eq!(p.media_samples(), 1_000 * FRAME);
    }

    #[test]
    fn a_fast_sender_gets_the_allowance_then_real_time() {
        let mut p = Pacer::new(2_000, 5_000);
        // everything at once: 2 s of allowance plus the first packet pass
        let mut accepted = 0;
        while p.admit(0, FRAME) == 0 {
            accepted += 1;
        }
        assert_eq!(accepted, 100, "2 s of 20 ms packets");
        // the wait is what it takes for the next packet to be due
        assert_eq!(p.admit(0, FRAME), 20);
        assert_eq!(p.admit(20, FRAME), 0);
        assert!(p.admit(20, FRAME) > 0);
        // over 60 s of wall clock, at most 60 s + the allowance is accepted
        let mut now = 20;
        while now < 60_000 {
            match p.admit(now, FRAME) {
                0 => {}
                wait => now += wait,
            }
        }
        assert!(p.media_samples() <= (60_000 + 600 + 2_000 + 20) * 48);
        assert!(p.lead_ms(now) <= 2_000 + 600);
    }

    #[test]
    fn any_clock_and_duration_saturate_instead_of_overflowing() {
        // found by fuzzing (fuzz/fuzz_targets/pace.rs): a clock that jumps
        // back after a time far in the future, and a huge duration,
        // overflowed the sample arithmetic
        let mut p = Pacer::new(2_000, 5_000);
        assert_eq!(p.admit(1 << 62, FRAME), 0);
        let wait = p.admit(3, u64::MAX);
        assert!(wait > 0 && wait <= u64::MAX.div_ceil(48), "{wait}");
        assert_eq!(p.media_samples(), FRAME);
        // elapsed time beyond u64::MAX / 48 ms
        let mut p = Pacer::new(2_000, 5_000);
        assert_eq!(p.admit(0, FRAME), 0);
        assert_eq!(p.admit(u64::MAX, FRAME), 0);
        assert!(p.lead_ms(u64::MAX) <= 2_000);
        let mut p = Pacer::new(u64::MAX, u64::MAX);
        assert_eq!(p.admit(0, u64::MAX), 0);
        assert!(p.lead_ms(u64::MAX) < 0, "behind, not ahead");
    }

    #[test]
    fn catch_up_after_a_hiccup_is_bounded() {
        let mut p = Pacer::new(2_000, 5_000);
        for i in 0..50u64 {
            assert_eq!(p.admit(i * 20, FRAME), 0);
        }
        // a 3 s stall, then the backlog arrives at once: all of it passes
        let now = 1_000 + 3_000;
        for _ in 0..150 {
            assert_eq!(p.admit(now, FRAME), 0);
        }
        // a 60 s silence: only 5 s + 2 s (+1% of the 9 s since the anchor)
        // may be made up in one burst
        let now = 4_000 + 60_000;
        let mut burst = 0;
        while p.admit(now, FRAME) == 0 {
            burst += 1;
        }
        assert_eq!(burst, 354, "7.09 s of 20 ms packets");
    }

    #[test]
    fn a_timeline_with_gaps_keeps_them_when_nothing_is_banked() {
        // a speaker's track: the granule follows the sender's clock
        let mut p = Pacer::new(2_000, u64::MAX);
        assert_eq!(p.admit(0, FRAME), 0);
        // muted for a minute: the next packet comes with the gap in it
        assert_eq!(p.admit(60_000, 60_000 * 48), 0);
        // a sender 1% fast for an hour is still accepted
        let mut q = Pacer::new(2_000, u64::MAX);
        let mut now = 0;
        for _ in 0..180_000 {
            assert_eq!(q.admit(now, 970), 0, "at {now} ms");
            now += 20;
        }
        // but not one from the future
        assert!(q.admit(now, 10 * 48_000) > 0);
        // absurd inputs neither overflow nor panic
        let mut r = Pacer::new(u64::MAX, u64::MAX);
        r.admit(u64::MAX, u64::MAX);
        r.admit(0, u64::MAX);
    }
}
