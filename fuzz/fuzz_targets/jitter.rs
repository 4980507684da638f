//! The per-speaker jitter buffer, fed arbitrary (seq, timestamp, duration,
//! payload, arrival time) sequences with pops in between, as RTP from a
//! speaker's browser (or anyone) can deliver them.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use tribune_core::jitter::{JitterBuffer, Playout};
use tribune_fuzz::Reader;

const MAX_FRAME: u64 = 5760;

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let target_ms = u64::from(r.u8()) * 2;
    let max_ms = u64::from(r.u16() % 2_000);
    let mut j = JitterBuffer::new(target_ms, max_ms);
    let bound_ms = max_ms.max(target_ms) + target_ms + MAX_FRAME / 48;
    let mut now: u64 = u64::from(r.u32());
    let mut latest = now;
    let mut seq: u64 = 0;
    let mut ts: u64 = u64::from(r.u32());
    let mut pushed = 0u64;
    let mut played = HashSet::new();
    for _ in 0..5_000 {
        if r.is_empty() {
            break;
        }
        let op = r.u8();
        match op % 4 {
            0 | 1 => {
                // mostly near the previous packet, sometimes anywhere
                match op >> 2 {
                    0 => {
                        seq = r.u64();
                        ts = r.u64();
                    }
                    k => {
                        seq = seq.wrapping_add(u64::from(k % 8)).wrapping_sub(2);
                        ts = ts.wrapping_add(u64::from(r.u16())).wrapping_sub(960 * 2);
                    }
                }
                let samples = match r.u8() {
                    0 => r.u32(),
                    b => u32::from(b % 48 + 1) * 120,
                };
                let id = pushed;
                pushed += 1;
                j.push(
                    seq,
                    ts,
                    samples,
                    Bytes::from(id.to_le_bytes().to_vec()),
                    now,
                );
                assert!(
                    j.depth_ms() <= bound_ms,
                    "depth {} > {bound_ms}",
                    j.depth_ms()
                );
            }
            2 => match j.pop(now) {
                Playout::Packet(p) => {
                    let id = u64::from_le_bytes(p[..].try_into().expect("our payload"));
                    assert!(id < pushed);
                    assert!(played.insert(id), "packet {id} played twice");
                    assert!((1..=MAX_FRAME).contains(&u64::from(j.last_pop_samples())));
                }
                Playout::Lost { fec } => {
                    assert!(u64::from(j.last_pop_samples()) <= MAX_FRAME);
                    if let Some(p) = fec {
                        let id = u64::from_le_bytes(p[..].try_into().expect("our payload"));
                        assert!(id < pushed && !played.contains(&id));
                    }
                }
                Playout::Silent => assert_eq!(j.last_pop_samples(), 0),
            },
            _ => {
                now = match r.u8() {
                    0 => r.u64(),
                    b => now.saturating_add(u64::from(b)),
                };
                latest = latest.max(now);
            }
        }
        let s = j.stats();
        // every packet is accounted for once: played, dropped, or still here
        assert!(
            s.played + s.late_dropped + s.duplicates + s.skipped <= pushed,
            "{s:?}"
        );
        assert_eq!(s.played, played.len() as u64);
    }
    // the stream ends: what is buffered plays out and nothing is left over
    // (from a time past every start, since the clock may have gone back)
    now = latest.saturating_add(10_000);
    for _ in 0..20_000 {
        match j.pop(now) {
            Playout::Silent => {
                let s = j.stats();
                assert_eq!(
                    s.played + s.late_dropped + s.duplicates + s.skipped,
                    pushed,
                    "{s:?}"
                );
                return;
            }
            Playout::Packet(_) => {}
            Playout::Lost { .. } => {}
        }
        now = now.saturating_add(20);
    }
});
