//! The real-time pacer that holds sources to the wall clock, with arbitrary
//! packet durations and times (monotonic or not): it must not panic or
//! overflow, and a wait it asks for is never longer than the packet.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tribune_core::pace::Pacer;
use tribune_fuzz::Reader;

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let monotonic = r.bool();
    let (ahead_ms, behind_ms) = match r.u8() {
        0 => (r.u64(), r.u64()),
        _ => (u64::from(r.u16()), u64::from(r.u16())),
    };
    let mut p = Pacer::new(ahead_ms, behind_ms);
    let mut now = r.u64();
    let mut latest = now;
    for _ in 0..10_000 {
        if r.is_empty() {
            break;
        }
        now = if monotonic {
            now.saturating_add(u64::from(r.u16()))
        } else {
            r.u64()
        };
        latest = latest.max(now);
        let samples = match r.u8() {
            0 => r.u64(),
            b => u64::from(b) * 120,
        };
        let before = p.media_samples();
        let wait = p.admit(now, samples);
        let _ = p.lead_ms(now);
        let packet_ms = samples.div_ceil(48);
        if wait == 0 {
            assert_eq!(p.media_samples(), before.saturating_add(samples));
        } else {
            assert_eq!(p.media_samples(), before, "a refused packet was counted");
            // never longer than the packet itself (plus any time the clock
            // went back since the latest call)
            let bound = packet_ms.saturating_add(latest - now).saturating_add(1);
            assert!(
                wait <= bound.max(1),
                "wait {wait} ms for a {packet_ms} ms packet"
            );
        }
    }
});
