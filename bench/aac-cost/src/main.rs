//! The AAC rendition's encoder cost on this machine: CPU per 20 ms of
//! 48 kHz audio and the real-time factor, mono and stereo at 32-64 kbps,
//! for rusty_aac (the chosen encoder) and, with `--features fdk`, for
//! libfdk-aac. Also checks that encoding a part at a time (with two frames
//! of context either side) gives the same frames as encoding the whole
//! stream, which is what lets every node encode the same AAC bytes.
//!
//! Usage: cargo run --release -p tribune-aac-cost [-- SECONDS]

use rusty_aac::{AacEncoder, AacEncoderConfig};
use std::time::Instant;

const RATE: usize = 48_000;
/// AAC-LC frame.
const FRAME: usize = 1024;
/// Frames in one 1 s part, rounded up.
const PART_FRAMES: usize = 47;
/// Frames of context encoded (and dropped) either side of a part.
const CONTEXT_FRAMES: usize = 2;

/// A deterministic speech-like signal: voiced harmonics under a syllable
/// rate envelope, plus a little noise; the right channel a bit quieter.
fn speech_like(seconds: usize, channels: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(seconds * RATE * channels);
    let mut noise_state: u32 = 12_345;
    for i in 0..seconds * RATE {
        let t = i as f32 / RATE as f32;
        let pitch = 140.0 + 30.0 * (t * 0.7).sin();
        let envelope = (0.5 + 0.5 * (t * std::f32::consts::TAU * 4.0).sin()).powi(2);
        let voiced: f32 = (1..12)
            .map(|h| (t * pitch * h as f32 * std::f32::consts::TAU).sin() / h as f32)
            .sum();
        noise_state = noise_state
            .wrapping_mul(1_664_525)
            .wrapping_add(1_013_904_223);
        let noise = (noise_state >> 8) as f32 / (1 << 24) as f32 - 0.5;
        let v = 0.3 * envelope * voiced + 0.02 * noise;
        for c in 0..channels {
            out.push(if c == 0 { v } else { 0.8 * v });
        }
    }
    out
}

/// Process CPU time (user + system, all threads): rusty_aac spreads a
/// batch over threads, so wall time alone would flatter it.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<f64> = after_name
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    let ticks = fields.get(11).unwrap_or(&0.0) + fields.get(12).unwrap_or(&0.0);
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

struct Measured {
    frames: Vec<Vec<u8>>,
    cpu_s: f64,
    wall_s: f64,
}

fn measure(encode: impl FnOnce() -> Vec<Vec<u8>>) -> Measured {
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    let frames = encode();
    Measured {
        frames,
        cpu_s: cpu_seconds() - cpu0,
        wall_s: wall0.elapsed().as_secs_f64(),
    }
}

fn rusty_encode(pcm: &[f32], channels: usize, bitrate: u32) -> Vec<Vec<u8>> {
    let mut encoder = AacEncoder::new(AacEncoderConfig {
        bitrate_bps: bitrate,
        ..Default::default()
    });
    if let Err(e) = encoder.push_pcm(pcm, channels as u16, RATE as u32) {
        panic!("rusty_aac: {e:?}");
    }
    encoder.finish();
    let mut frames = Vec::new();
    while let Ok(packet) = encoder.next_packet() {
        frames.push(packet.data);
    }
    // Output frame j windows input blocks j-1 and j; frame 0 (against
    // silence) belongs to no block of ours.
    frames.remove(0);
    frames
}

/// Encodes part by part as a live node would: each part's frames from
/// its own encoder, fed the part plus context either side.
fn rusty_per_part(pcm: &[f32], channels: usize, bitrate: u32) -> Vec<Vec<u8>> {
    let blocks = pcm.len() / channels / FRAME;
    let mut frames = Vec::new();
    let mut first = 0;
    while first < blocks {
        let last = (first + PART_FRAMES).min(blocks);
        let from = first.saturating_sub(CONTEXT_FRAMES);
        let to = (last + CONTEXT_FRAMES).min(blocks);
        let chunk = &pcm[from * FRAME * channels..to * FRAME * channels];
        let encoded = rusty_encode(chunk, channels, bitrate);
        frames.extend(encoded.into_iter().skip(first - from).take(last - first));
        first = last;
    }
    frames
}

#[cfg(feature = "fdk")]
fn fdk_encode(pcm: &[f32], channels: usize, bitrate: u32) -> Vec<Vec<u8>> {
    use fdk_aac::enc::{AudioObjectType, BitRate, ChannelMode, Encoder, EncoderParams, Transport};
    let encoder = Encoder::new(EncoderParams {
        bit_rate: BitRate::Cbr(bitrate),
        sample_rate: RATE as u32,
        transport: Transport::Raw,
        channels: if channels == 1 {
            ChannelMode::Mono
        } else {
            ChannelMode::Stereo
        },
        audio_object_type: AudioObjectType::Mpeg4LowComplexity,
    })
    .unwrap_or_else(|e| panic!("fdk-aac: {e:?}"));
    let samples: Vec<i16> = pcm
        .iter()
        .map(|s| (s * 32767.0).clamp(-32768.0, 32767.0) as i16)
        .collect();
    let mut out = vec![0u8; 8192];
    let mut frames = Vec::new();
    // 20 ms at a time, as the mixer produces it.
    for tick in samples.chunks(960 * channels) {
        let mut rest = tick;
        while !rest.is_empty() {
            let info = encoder
                .encode(rest, &mut out)
                .unwrap_or_else(|e| panic!("fdk-aac: {e:?}"));
            if info.output_size > 0 {
                frames.push(out[..info.output_size].to_vec());
            }
            if info.input_consumed == 0 {
                break;
            }
            rest = &rest[info.input_consumed..];
        }
    }
    frames
}

fn report(label: &str, seconds: usize, m: &Measured) {
    let ticks = (seconds * 50) as f64;
    let bytes: usize = m.frames.iter().map(Vec::len).sum();
    println!(
        "{label:<34} {:>6.0} us CPU per 20 ms   real-time x{:<5.0} (wall x{:<5.0})  {:>5.1} kbit/s out",
        m.cpu_s * 1e6 / ticks,
        seconds as f64 / m.cpu_s.max(1e-9),
        seconds as f64 / m.wall_s.max(1e-9),
        bytes as f64 * 8.0 / seconds as f64 / 1000.0
    );
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    format!("{model}, {cores} cores, load average {load}")
}

fn main() {
    let seconds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    println!(
        "AAC-LC 48 kHz, {seconds} s of speech-like audio; {}",
        machine()
    );
    for channels in [1usize, 2] {
        let pcm = speech_like(seconds, channels);
        let layout = if channels == 1 { "mono" } else { "stereo" };
        for kbps in [32u32, 48, 64] {
            let bitrate = kbps * 1000;
            let whole = measure(|| rusty_encode(&pcm, channels, bitrate));
            report(
                &format!("rusty_aac {layout} {kbps}k whole stream"),
                seconds,
                &whole,
            );
            let parts = measure(|| rusty_per_part(&pcm, channels, bitrate));
            report(
                &format!("rusty_aac {layout} {kbps}k per part"),
                seconds,
                &parts,
            );
            // The stream's last frame had no look-ahead in the part run.
            let compared = whole.frames.len().min(parts.frames.len()).saturating_sub(1);
            let same = (0..compared)
                .filter(|&i| whole.frames[i] == parts.frames[i])
                .count();
            println!("  per-part frames identical to whole-stream frames: {same} of {compared}");
            #[cfg(feature = "fdk")]
            {
                let fdk = measure(|| fdk_encode(&pcm, channels, bitrate));
                report(
                    &format!("fdk-aac {layout} {kbps}k streaming"),
                    seconds,
                    &fdk,
                );
            }
        }
    }
}
