//! The stage mixer: decode every speaker, mix, limit, encode once.
//!
//! Sans-IO like the rest of the crate: the caller feeds depacketised Opus
//! with `push` and calls `tick` every 20 ms with its clock. The program is
//! the sum of all unmuted speakers; each speaker also gets a return without
//! their own voice (mix-minus), since hearing yourself late makes talking
//! impossible.

use ::opus::{Application, Bitrate, Channels, Decoder, Encoder};
use bytes::Bytes;
use tribune_core::jitter::{JitterBuffer, JitterStats, Playout};

use crate::opus::packet_duration;

/// Samples in one 20 ms tick (48 kHz mono).
pub const FRAME: usize = 960;

/// Program bitrate when nothing else is configured.
pub const DEFAULT_BITRATE: i32 = 32_000;

/// Jitter buffer of each speaker: playout delay and depth bound.
pub const JITTER_TARGET_MS: u64 = 40;
pub const JITTER_MAX_MS: u64 = 200;

const RATE: u32 = 48_000;

/// Longest Opus packet (120 ms): the room a decode may need.
const MAX_DECODE: usize = 5760;

/// Output buffer size libopus recommends for one packet.
const MAX_PACKET: usize = 4000;

/// Loss the return encoders plan in-band FEC for: returns go back over
/// WebRTC, where packets do get lost.
const RETURN_LOSS_PERC: i32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum MixError {
    #[error("opus: {0}")]
    Opus(#[from] ::opus::Error),
    #[error("speaker {0} is already in the mix")]
    DuplicateSpeaker(u64),
}

/// What one tick produces.
#[derive(Clone, Debug, Default)]
pub struct MixOutput {
    /// One 20 ms Opus packet of the program.
    pub program: Bytes,
    /// Each speaker's mix-minus, one 20 ms Opus packet each.
    pub returns: Vec<(u64, Bytes)>,
    /// Each speaker's level this tick, 0.0..=1.0 (a full-scale sine reads
    /// 1.0); 0.0 when muted or silent.
    pub levels: Vec<(u64, f32)>,
}

/// Block peak limiter: the gain drops as soon as a block would cross the
/// threshold and recovers over about 150 ms, so loud moments are turned
/// down instead of clipped, without pumping on every peak.
#[derive(Clone, Debug)]
pub struct Limiter {
    gain: f32,
    /// Per-sample fraction of the way back to unity gain.
    recover: f32,
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new()
    }
}

impl Limiter {
    /// Level the gain holds peaks to; below the ceiling to leave room for
    /// the codec's own overshoot.
    pub const THRESHOLD: f32 = 0.9;
    /// Hard bound on every output sample.
    pub const CEILING: f32 = 0.98;
    const RELEASE_MS: f32 = 150.0;

    pub fn new() -> Self {
        let release_samples = Self::RELEASE_MS * (RATE / 1000) as f32;
        Limiter {
            gain: 1.0,
            recover: 1.0 - (-1.0 / release_samples).exp(),
        }
    }

    /// Current gain, 0.0..=1.0.
    pub fn gain(&self) -> f32 {
        self.gain
    }

    pub fn process(&mut self, block: &mut [f32]) {
        let peak = block.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let target = if peak > Self::THRESHOLD {
            Self::THRESHOLD / peak
        } else {
            1.0
        };
        if target < self.gain {
            // Reach the new gain by the first sample that needs it: the
            // ramp before it is smooth and cannot overshoot.
            let start = self.gain;
            let first = block
                .iter()
                .position(|x| x.abs() * start > Self::THRESHOLD)
                .unwrap_or(0);
            let steps = (first + 1) as f32;
            for (i, x) in block.iter_mut().enumerate() {
                let g = if i >= first {
                    target
                } else {
                    start + (target - start) * (i + 1) as f32 / steps
                };
                *x *= g;
            }
            self.gain = target;
        } else {
            // Recover toward what this block allows, never above it.
            for x in block.iter_mut() {
                self.gain += (target - self.gain) * self.recover;
                *x *= self.gain;
            }
        }
        for x in block.iter_mut() {
            *x = if x.is_finite() {
                x.clamp(-Self::CEILING, Self::CEILING)
            } else {
                0.0
            };
        }
    }
}

struct Speaker {
    id: u64,
    jitter: JitterBuffer,
    decoder: Decoder,
    /// Encodes this speaker's mix-minus; `None` for a feed that hears nothing.
    encoder: Option<Encoder>,
    limiter: Limiter,
    muted: bool,
    /// Decoded audio not mixed yet: packets need not be 20 ms long.
    pcm: Vec<f32>,
    /// This tick's audio.
    frame: Vec<f32>,
    /// Whether `frame` counts in the mixes this tick.
    sounding: bool,
    invalid: u64,
}

impl Speaker {
    /// Decodes until a tick's worth of audio is ready or the buffer has
    /// nothing more to give (the rest of the tick is silence).
    fn fill(&mut self, now_ms: u64) {
        while self.pcm.len() < FRAME {
            let playout = self.jitter.pop(now_ms);
            let span = (self.jitter.last_pop_samples() as usize).min(MAX_DECODE);
            let at = self.pcm.len();
            self.pcm.resize(at + MAX_DECODE, 0.0);
            let out = &mut self.pcm[at..];
            let got = match playout {
                Playout::Silent => 0,
                Playout::Packet(packet) => match self.decoder.decode_float(&packet, out, false) {
                    Ok(n) => n,
                    Err(_) => {
                        // Valid framing, undecodable body: a loss.
                        self.invalid += 1;
                        conceal(&mut self.decoder, None, &mut out[..span])
                    }
                },
                Playout::Lost { fec } => conceal(&mut self.decoder, fec, &mut out[..span]),
            };
            self.pcm.truncate(at + got.min(MAX_DECODE));
            if got == 0 {
                break;
            }
        }
        let n = self.pcm.len().min(FRAME);
        self.frame[..n].copy_from_slice(&self.pcm[..n]);
        self.frame[n..].fill(0.0);
        self.pcm.drain(..n);
        self.sounding = n > 0 && !self.muted;
    }

    fn level(&self) -> f32 {
        if !self.sounding {
            return 0.0;
        }
        let energy: f32 = self.frame.iter().map(|x| x * x).sum();
        // sqrt(2) * RMS: a full-scale sine reads 1.0.
        (2.0 * energy / FRAME as f32).sqrt().min(1.0)
    }
}

/// Fills `out` for a lost span: from the next packet's in-band FEC when
/// there is one, else by the decoder's PLC. Returns the samples written.
fn conceal(decoder: &mut Decoder, fec: Option<Bytes>, out: &mut [f32]) -> usize {
    if out.is_empty() {
        return 0;
    }
    if let Some(next) = fec {
        if let Ok(n) = decoder.decode_float(&next, out, true) {
            return n;
        }
    }
    decoder.decode_float(&[], out, false).unwrap_or(0)
}

fn encode(encoder: &mut Encoder, pcm: &[f32], buf: &mut [u8], silence: &Bytes) -> Bytes {
    match encoder.encode_float(pcm, buf) {
        Ok(n) if n > 0 => Bytes::copy_from_slice(&buf[..n]),
        // Keep the stream's timing even if libopus refuses a frame.
        _ => silence.clone(),
    }
}

fn new_encoder(application: Application, bitrate: i32) -> Result<Encoder, MixError> {
    let mut encoder = Encoder::new(RATE, Channels::Mono, application)?;
    encoder.set_bitrate(Bitrate::Bits(bitrate))?;
    Ok(encoder)
}

/// One space's mixer. `Send` (libopus states move between threads freely)
/// but not `Sync`: own it from the task that ticks it.
pub struct Mixer {
    encoder: Encoder,
    limiter: Limiter,
    bitrate: i32,
    speakers: Vec<Speaker>,
    /// Sum of every sounding speaker this tick.
    sum: Vec<f32>,
    /// The output being limited and encoded.
    out: Vec<f32>,
    packet: Vec<u8>,
    /// A 20 ms silent packet, the fallback when an encode fails.
    silence: Bytes,
}

impl std::fmt::Debug for Mixer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mixer")
            .field("bitrate", &self.bitrate)
            .field("speakers", &self.speakers.len())
            .finish_non_exhaustive()
    }
}

impl Mixer {
    /// A mixer whose program (and returns) are encoded at `bitrate` bits/s.
    pub fn new(bitrate: i32) -> Result<Mixer, MixError> {
        // The program is what listeners and the recording get: full-band
        // audio mode rather than the speech-tuned VOIP one.
        let encoder = new_encoder(Application::Audio, bitrate)?;
        let mut scratch = new_encoder(Application::Audio, bitrate)?;
        let mut packet = vec![0u8; MAX_PACKET];
        let n = scratch.encode_float(&[0.0; FRAME], &mut packet)?;
        let silence = Bytes::copy_from_slice(&packet[..n]);
        Ok(Mixer {
            encoder,
            limiter: Limiter::new(),
            bitrate,
            speakers: Vec::new(),
            sum: vec![0.0; FRAME],
            out: vec![0.0; FRAME],
            packet,
            silence,
        })
    }

    pub fn add_speaker(&mut self, id: u64) -> Result<(), MixError> {
        let mut encoder = new_encoder(Application::Voip, self.bitrate)?;
        encoder.set_inband_fec(true)?;
        encoder.set_packet_loss_perc(RETURN_LOSS_PERC)?;
        self.add_input(id, Some(encoder), JITTER_TARGET_MS, JITTER_MAX_MS)
    }

    /// An input that is mixed but gets no mix-minus back (an Icecast
    /// source: music, a remote studio). Its packets come in pages, often
    /// in bursts, hence its own jitter-buffer bounds.
    pub fn add_feed(&mut self, id: u64, target_ms: u64, max_ms: u64) -> Result<(), MixError> {
        self.add_input(id, None, target_ms, max_ms)
    }

    fn add_input(
        &mut self,
        id: u64,
        encoder: Option<Encoder>,
        target_ms: u64,
        max_ms: u64,
    ) -> Result<(), MixError> {
        if self.speakers.iter().any(|s| s.id == id) {
            return Err(MixError::DuplicateSpeaker(id));
        }
        self.speakers.push(Speaker {
            id,
            jitter: JitterBuffer::new(target_ms, max_ms),
            decoder: Decoder::new(RATE, Channels::Mono)?,
            encoder,
            limiter: Limiter::new(),
            muted: false,
            pcm: Vec::with_capacity(FRAME + MAX_DECODE),
            frame: vec![0.0; FRAME],
            sounding: false,
            invalid: 0,
        });
        Ok(())
    }

    pub fn remove_speaker(&mut self, id: u64) {
        self.speakers.retain(|s| s.id != id);
    }

    /// A muted speaker is still decoded (so unmuting is seamless) but
    /// contributes silence to every mix.
    pub fn set_muted(&mut self, id: u64, muted: bool) {
        if let Some(s) = self.speaker_mut(id) {
            s.muted = muted;
        }
    }

    /// One depacketised Opus packet from speaker `id`: extended RTP
    /// sequence number and timestamp (48 kHz). Unknown speakers are ignored;
    /// a payload that is not Opus is counted and becomes a loss.
    pub fn push(&mut self, id: u64, seq: u64, rtp_ts: u64, payload: Bytes, now_ms: u64) {
        let Some(s) = self.speaker_mut(id) else {
            return;
        };
        match packet_duration(&payload) {
            Ok(samples) => s.jitter.push(seq, rtp_ts, samples, payload, now_ms),
            Err(_) => s.invalid += 1,
        }
    }

    /// Mixes and encodes one 20 ms tick.
    pub fn tick(&mut self, now_ms: u64) -> MixOutput {
        let mut levels = Vec::with_capacity(self.speakers.len());
        self.sum.fill(0.0);
        for s in &mut self.speakers {
            s.fill(now_ms);
            levels.push((s.id, s.level()));
            if s.sounding {
                for (acc, x) in self.sum.iter_mut().zip(&s.frame) {
                    *acc += x;
                }
            }
        }

        self.out.copy_from_slice(&self.sum);
        self.limiter.process(&mut self.out);
        let program = encode(
            &mut self.encoder,
            &self.out,
            &mut self.packet,
            &self.silence,
        );

        let mut returns = Vec::with_capacity(self.speakers.len());
        for s in &mut self.speakers {
            let Some(encoder) = s.encoder.as_mut() else {
                continue;
            };
            // Subtracting leaves a residue of the own voice at float
            // rounding (about -140 dB), far under the codec's noise.
            if s.sounding {
                for ((o, acc), x) in self.out.iter_mut().zip(&self.sum).zip(&s.frame) {
                    *o = acc - x;
                }
            } else {
                self.out.copy_from_slice(&self.sum);
            }
            s.limiter.process(&mut self.out);
            let packet = encode(encoder, &self.out, &mut self.packet, &self.silence);
            returns.push((s.id, packet));
        }

        MixOutput {
            program,
            returns,
            levels,
        }
    }

    pub fn stats(&self, id: u64) -> Option<JitterStats> {
        self.speaker(id).map(|s| s.jitter.stats())
    }

    /// Packets from `id` that were not valid Opus (dropped and concealed).
    pub fn invalid_packets(&self, id: u64) -> Option<u64> {
        self.speaker(id).map(|s| s.invalid)
    }

    /// Audio buffered for `id` ahead of its playout point.
    pub fn depth_ms(&self, id: u64) -> Option<u64> {
        self.speaker(id).map(|s| s.jitter.depth_ms())
    }

    fn speaker(&self, id: u64) -> Option<&Speaker> {
        self.speakers.iter().find(|s| s.id == id)
    }

    fn speaker_mut(&mut self, id: u64) -> Option<&mut Speaker> {
        self.speakers.iter_mut().find(|s| s.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u64 = 1;
    const B: u64 = 2;

    /// A speaker's browser: a sine tone through its own Opus encoder.
    struct Source {
        encoder: Encoder,
        freq: f32,
        amp: f32,
        /// Samples per packet.
        size: usize,
        /// Samples encoded so far (also the next RTP timestamp).
        pos: u64,
        seq: u64,
    }

    impl Source {
        fn new(freq: f32, amp: f32) -> Self {
            Self::sized(freq, amp, FRAME)
        }

        fn sized(freq: f32, amp: f32, size: usize) -> Self {
            let mut encoder = Encoder::new(RATE, Channels::Mono, Application::Voip).unwrap();
            encoder.set_bitrate(Bitrate::Bits(32_000)).unwrap();
            encoder.set_inband_fec(true).unwrap();
            encoder.set_packet_loss_perc(10).unwrap();
            Source {
                encoder,
                freq,
                amp,
                size,
                pos: 0,
                seq: 0,
            }
        }

        /// Next packet: (seq, rtp timestamp, payload).
        fn next(&mut self) -> (u64, u64, Bytes) {
            let w = std::f64::consts::TAU * f64::from(self.freq) / f64::from(RATE);
            let pcm: Vec<f32> = (0..self.size as u64)
                .map(|i| self.amp * ((self.pos + i) as f64 * w).sin() as f32)
                .collect();
            let packet = self.encoder.encode_vec_float(&pcm, MAX_PACKET).unwrap();
            let out = (self.seq, self.pos, Bytes::from(packet));
            self.pos += self.size as u64;
            self.seq += 1;
            out
        }
    }

    /// Decodes one output stream as a listener would.
    struct Listener {
        decoder: Decoder,
        pcm: Vec<f32>,
    }

    impl Listener {
        fn new() -> Self {
            Listener {
                decoder: Decoder::new(RATE, Channels::Mono).unwrap(),
                pcm: Vec::new(),
            }
        }

        fn hear(&mut self, packet: &[u8]) {
            assert_eq!(packet_duration(packet), Ok(FRAME as u32));
            let mut out = [0.0f32; MAX_DECODE];
            let n = self.decoder.decode_float(packet, &mut out, false).unwrap();
            assert_eq!(n, FRAME);
            self.pcm.extend_from_slice(&out[..n]);
        }

        /// The last `ticks` ticks heard.
        fn tail(&self, ticks: usize) -> &[f32] {
            &self.pcm[self.pcm.len() - ticks * FRAME..]
        }
    }

    /// Goertzel: mean power of `x` at `freq`.
    fn power(x: &[f32], freq: f32) -> f64 {
        let w = std::f64::consts::TAU * f64::from(freq) / f64::from(RATE);
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &v in x {
            let s = f64::from(v) + coeff * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        let n = x.len() as f64;
        (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (n * n)
    }

    fn db(a: f64, b: f64) -> f64 {
        10.0 * (a / b.max(1e-30)).log10()
    }

    fn peak(x: &[f32]) -> f32 {
        x.iter().fold(0.0, |m, v| m.max(v.abs()))
    }

    /// Runs `ticks` ticks: every source sends one tick of audio on time
    /// (unless `drop` says otherwise), then the mixer ticks.
    fn run(
        m: &mut Mixer,
        sources: &mut [(u64, Source)],
        ticks: u64,
        drop: impl Fn(u64, u64) -> bool,
        mut each: impl FnMut(u64, &MixOutput),
    ) {
        for k in 0..ticks {
            let now = 1_000 + k * 20;
            for (id, src) in sources.iter_mut() {
                let mut sent = 0;
                while sent < FRAME {
                    let (seq, ts, payload) = src.next();
                    sent += src.size;
                    if !drop(*id, seq) {
                        m.push(*id, seq, ts, payload, now);
                    }
                }
            }
            let out = m.tick(now);
            assert_eq!(out.returns.len(), sources.len());
            each(k, &out);
        }
    }

    /// Mixer with speakers A (440 Hz) and B (1000 Hz).
    fn stage(amp: f32) -> (Mixer, Vec<(u64, Source)>) {
        let mut m = Mixer::new(DEFAULT_BITRATE).unwrap();
        m.add_speaker(A).unwrap();
        m.add_speaker(B).unwrap();
        let sources = vec![(A, Source::new(440.0, amp)), (B, Source::new(1000.0, amp))];
        (m, sources)
    }

    /// Program and both returns, decoded.
    fn listen(m: &mut Mixer, sources: &mut [(u64, Source)], ticks: u64) -> [Listener; 3] {
        let mut ears = [Listener::new(), Listener::new(), Listener::new()];
        run(
            m,
            sources,
            ticks,
            |_, _| false,
            |_, out| {
                ears[0].hear(&out.program);
                for (id, packet) in &out.returns {
                    ears[if *id == A { 1 } else { 2 }].hear(packet);
                }
            },
        );
        ears
    }

    #[test]
    fn program_has_both_tones_and_returns_are_mix_minus() {
        let (mut m, mut sources) = stage(0.3);
        let [program, ret_a, ret_b] = listen(&mut m, &mut sources, 50);
        let p = program.tail(30);
        let (p440, p1000) = (power(p, 440.0), power(p, 1000.0));
        // both tones at about their sent level (0.3 amplitude: power 0.0225)
        assert!(p440 > 0.01 && p1000 > 0.01, "program {p440} {p1000}");
        assert!(db(p440, p1000).abs() < 3.0);
        let a = ret_a.tail(30);
        assert!(
            db(power(a, 1000.0), power(a, 440.0)) > 40.0,
            "A hears itself"
        );
        let b = ret_b.tail(30);
        assert!(
            db(power(b, 440.0), power(b, 1000.0)) > 40.0,
            "B hears itself"
        );
        assert!(power(a, 1000.0) > 0.01 && power(b, 440.0) > 0.01);
        let s = m.stats(A).unwrap();
        assert_eq!((s.played, s.lost, s.late_dropped), (48, 0, 0));
    }

    #[test]
    fn a_feed_is_mixed_and_heard_but_gets_no_return() {
        const FEED: u64 = 99;
        let mut m = Mixer::new(DEFAULT_BITRATE).unwrap();
        m.add_speaker(A).unwrap();
        m.add_feed(FEED, 100, 3_000).unwrap();
        let mut voice = Source::new(440.0, 0.3);
        let mut music = Source::new(1000.0, 0.3);
        let (mut program, mut ret_a) = (Listener::new(), Listener::new());
        for k in 0..60u64 {
            let now = 1_000 + k * 20;
            let (seq, ts, p) = voice.next();
            m.push(A, seq, ts, p, now);
            // the feed arrives in bursts of five packets every 100 ms
            if k % 5 == 0 {
                for _ in 0..5 {
                    let (seq, ts, p) = music.next();
                    m.push(FEED, seq, ts, p, now);
                }
            }
            let out = m.tick(now);
            assert_eq!(out.returns.len(), 1, "only the speaker gets a mix-minus");
            program.hear(&out.program);
            ret_a.hear(&out.returns[0].1);
        }
        let p = program.tail(30);
        assert!(power(p, 440.0) > 0.01 && power(p, 1000.0) > 0.01);
        let a = ret_a.tail(30);
        assert!(
            db(power(a, 1000.0), power(a, 440.0)) > 40.0,
            "A hears the feed, not itself"
        );
        assert_eq!(m.stats(FEED).unwrap().lost, 0);
    }

    #[test]
    fn two_full_scale_speakers_never_clip() {
        let (mut m, mut sources) = stage(1.0);
        let [program, ret_a, _] = listen(&mut m, &mut sources, 50);
        let p = program.tail(45);
        assert!(peak(p) > 0.5, "program is silent");
        assert!(peak(p) <= Limiter::CEILING + 0.05, "peak {}", peak(p));
        assert!(peak(ret_a.tail(45)) <= Limiter::CEILING + 0.05);
        assert!(power(p, 440.0) > 0.01 && power(p, 1000.0) > 0.01);
    }

    #[test]
    fn a_muted_speaker_leaves_every_mix() {
        let (mut m, mut sources) = stage(0.3);
        m.set_muted(A, true);
        let [program, ret_a, ret_b] = listen(&mut m, &mut sources, 40);
        let p = program.tail(30);
        assert!(db(power(p, 1000.0), power(p, 440.0)) > 40.0);
        assert!(power(ret_a.tail(30), 1000.0) > 0.01);
        assert!(peak(ret_b.tail(30)) < 0.01, "B hears the muted A");

        let mut levels = Vec::new();
        run(
            &mut m,
            &mut sources,
            1,
            |_, _| false,
            |_, out| levels = out.levels.clone(),
        );
        assert_eq!(levels[0], (A, 0.0));
        assert!(levels[1].0 == B && levels[1].1 > 0.2, "{levels:?}");
        m.set_muted(A, false);
        run(
            &mut m,
            &mut sources,
            1,
            |_, _| false,
            |_, out| levels = out.levels.clone(),
        );
        assert!(levels[0].1 > 0.2);
    }

    #[test]
    fn a_lost_packet_is_concealed_and_counted() {
        let (mut m, mut sources) = stage(0.3);
        let mut a_levels = Vec::new();
        let mut program = Listener::new();
        run(
            &mut m,
            &mut sources,
            40,
            |id, seq| id == A && seq == 20,
            |_, out| {
                a_levels.push(out.levels[0].1);
                program.hear(&out.program);
            },
        );
        let s = m.stats(A).unwrap();
        assert_eq!((s.lost, s.played), (1, 37));
        // packet 20 plays in tick 22: concealed, not silent
        assert!(a_levels[22] > 0.1, "{:?}", &a_levels[18..26]);
        assert!(a_levels[2..].iter().all(|&l| l > 0.1));
        assert!(power(program.tail(30), 440.0) > 0.01);
    }

    #[test]
    fn garbage_payloads_do_not_panic() {
        let (mut m, mut sources) = stage(0.3);
        run(&mut m, &mut sources, 10, |_, _| false, |_, _| {});
        let junk: [&[u8]; 5] = [
            &[],
            &[0xff; 20_000],
            &[0xfb, 0x00],
            &[0xf8, 0xff, 0xff, 0xff, 0x13, 0x37, 0x00, 0x42],
            &[0x03, 0x3f, 0xff, 0x01],
        ];
        for (i, bytes) in junk.iter().enumerate() {
            let seq = 100 + i as u64;
            m.push(
                A,
                seq,
                9_600 + seq * 960,
                Bytes::copy_from_slice(bytes),
                1_200,
            );
        }
        // and valid framing with a body libopus rejects, in A's next slot
        m.push(
            A,
            10,
            10 * 960,
            Bytes::from_static(&[0xfb, 0xff, 0xff, 0x00, 0x00]),
            1_200,
        );
        let mut ear = Listener::new();
        run(
            &mut m,
            &mut sources,
            10,
            |_, _| false,
            |_, out| ear.hear(&out.program),
        );
        assert!(m.invalid_packets(A).unwrap() >= 3);
        assert_eq!(m.invalid_packets(B), Some(0));
        assert!(power(ear.tail(5), 1000.0) > 0.01);
        // the valid-looking packet far ahead cost A a moment, not its voice
        assert!(power(ear.tail(3), 440.0) > 0.01);
    }

    #[test]
    fn packets_of_other_durations_fill_whole_ticks() {
        let mut m = Mixer::new(DEFAULT_BITRATE).unwrap();
        m.add_speaker(A).unwrap();
        m.add_speaker(B).unwrap();
        let mut sources = vec![
            (A, Source::sized(440.0, 0.3, 480)),
            (B, Source::sized(1000.0, 0.3, 2880)),
        ];
        let mut program = Listener::new();
        run(
            &mut m,
            &mut sources,
            60,
            |_, _| false,
            |_, out| program.hear(&out.program),
        );
        let p = program.tail(30);
        assert!(power(p, 440.0) > 0.01 && power(p, 1000.0) > 0.01);
        assert_eq!(m.stats(A).unwrap().lost, 0);
        assert_eq!(m.stats(B).unwrap().lost, 0);
        // no gaps: every tick after the start carries both tones
        let ticks: Vec<&[f32]> = program.pcm.chunks(FRAME).skip(10).collect();
        assert!(ticks.iter().all(|t| peak(t) > 0.2));
    }

    #[test]
    fn an_empty_stage_encodes_silence() {
        let mut m = Mixer::new(DEFAULT_BITRATE).unwrap();
        let mut ear = Listener::new();
        for k in 0..10 {
            let out = m.tick(k * 20);
            assert!(out.returns.is_empty() && out.levels.is_empty());
            ear.hear(&out.program);
        }
        assert!(peak(&ear.pcm) < 1e-3);
        let mut fallback = Listener::new();
        fallback.hear(&m.silence);
        assert!(peak(&fallback.pcm) < 1e-3);
    }

    #[test]
    fn speakers_come_and_go() {
        let (mut m, mut sources) = stage(0.3);
        assert!(matches!(
            m.add_speaker(A),
            Err(MixError::DuplicateSpeaker(A))
        ));
        m.push(99, 0, 0, Bytes::from_static(&[0xf8, 0xff, 0xfe]), 0);
        m.set_muted(99, true);
        assert_eq!(m.stats(99), None);
        m.remove_speaker(B);
        sources.truncate(1);
        let mut ear = Listener::new();
        run(
            &mut m,
            &mut sources,
            30,
            |_, _| false,
            |_, out| ear.hear(&out.program),
        );
        assert!(db(power(ear.tail(20), 440.0), power(ear.tail(20), 1000.0)) > 40.0);
        assert!(Mixer::new(-5).is_err());
    }

    #[test]
    fn the_mixer_can_move_to_another_thread() {
        fn send<T: Send>() {}
        send::<Mixer>();
        send::<MixOutput>();
    }

    fn tones(a: f32, b: f32) -> Vec<Vec<f32>> {
        let w = |f: f32, n: usize| (std::f32::consts::TAU * f * n as f32 / RATE as f32).sin();
        (0..50)
            .map(|k| {
                (0..FRAME)
                    .map(|i| a * w(440.0, k * FRAME + i) + b * w(1000.0, k * FRAME + i))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn limiter_holds_two_full_scale_tones_under_the_threshold() {
        let mut l = Limiter::new();
        for mut block in tones(1.0, 1.0) {
            l.process(&mut block);
            assert!(
                peak(&block) <= Limiter::THRESHOLD + 1e-5,
                "{}",
                peak(&block)
            );
        }
        assert!(l.gain() < 0.5);
    }

    #[test]
    fn limiter_leaves_quiet_audio_untouched() {
        let mut l = Limiter::new();
        for block in tones(0.4, 0.4) {
            let mut out = block.clone();
            l.process(&mut out);
            assert_eq!(out, block);
        }
    }

    #[test]
    fn limiter_releases_over_a_fraction_of_a_second() {
        let mut l = Limiter::new();
        let loud = tones(1.0, 1.0);
        for mut block in loud.into_iter().take(5) {
            l.process(&mut block);
        }
        let low = l.gain();
        let quiet = tones(0.1, 0.0);
        let mut gains = Vec::new();
        for mut block in quiet.into_iter().cycle().take(50) {
            l.process(&mut block);
            gains.push(l.gain());
        }
        // 20 ms later still mostly down, 100-200 ms later mostly back
        assert!(gains[0] < low + 0.2 * (1.0 - low), "{gains:?}");
        assert!(gains[9] > low + 0.6 * (1.0 - low), "{gains:?}");
        assert!(gains[49] > 0.99);
    }

    #[test]
    fn limiter_survives_non_finite_samples() {
        let mut l = Limiter::new();
        let mut block = vec![0.5, f32::NAN, f32::INFINITY, -f32::INFINITY, -3.0];
        l.process(&mut block);
        assert!(block
            .iter()
            .all(|x| x.is_finite() && x.abs() <= Limiter::CEILING));
        let mut next = vec![0.5; FRAME];
        l.process(&mut next);
        assert!(next.iter().all(|x| x.is_finite()));
    }

    /// `cargo test -p tribune-media --release mix::tests::tick_cost -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn tick_cost() {
        for speakers in [2u64, 13] {
            let mut m = Mixer::new(DEFAULT_BITRATE).unwrap();
            let mut sources: Vec<(u64, Source)> = (0..speakers)
                .map(|id| {
                    m.add_speaker(id).unwrap();
                    (id, Source::new(200.0 + 77.0 * id as f32, 0.2))
                })
                .collect();
            let ticks = 1_000u64;
            let packets: Vec<Vec<(u64, u64, Bytes)>> = (0..ticks)
                .map(|_| sources.iter_mut().map(|(_, s)| s.next()).collect())
                .collect();
            let mut spent = std::time::Duration::ZERO;
            for (k, tick) in packets.into_iter().enumerate() {
                let now = k as u64 * 20;
                let started = std::time::Instant::now();
                for (id, (seq, ts, payload)) in tick.into_iter().enumerate() {
                    m.push(id as u64, seq, ts, payload, now);
                }
                std::hint::black_box(m.tick(now));
                spent += started.elapsed();
            }
            let per_tick = spent / ticks as u32;
            println!(
                "{speakers} speakers: {per_tick:?} per tick ({:.1}% of one core)",
                per_tick.as_secs_f64() / 0.020 * 100.0
            );
        }
    }
}
