//! The HLS tier's files as a real player sees them: ffprobe and ffmpeg
//! decode the init segment and fragments (Opus from a real encoder, and
//! AAC-LC frames from ffmpeg's encoder packaged by our mp4a path) and play
//! the VOD playlist. Skipped, loudly, where ffmpeg is not installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use tribune_core::track::Track;
use tribune_media::hls::layout::{part_uri, segment_uri, INIT_URI, MEDIA_PLAYLIST_URI};
use tribune_media::hls::{
    media_playlist, AacLcConfig, AudioConfig, Frame, HlsLayout, RenditionIndex,
};

const SECONDS: usize = 7;

fn have_ffmpeg() -> bool {
    let ok = |tool: &str| {
        Command::new(tool)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let present = ok("ffmpeg") && ok("ffprobe");
    if !present {
        eprintln!("SKIPPED: ffmpeg/ffprobe not installed (scripts/install-deps.sh installs them)");
    }
    present
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tribune-hls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// 20 ms stereo Opus packets of a 440 Hz tone, from libopus.
fn opus_packets(seconds: usize) -> Vec<Bytes> {
    let mut encoder =
        opus::Encoder::new(48_000, opus::Channels::Stereo, opus::Application::Audio).unwrap();
    let mut out = vec![0u8; 4000];
    (0..seconds * 50)
        .map(|frame| {
            let pcm: Vec<f32> = (0..960)
                .flat_map(|i| {
                    let t = (frame * 960 + i) as f32 / 48_000.0;
                    let v = 0.3 * (t * 440.0 * std::f32::consts::TAU).sin();
                    [v, v]
                })
                .collect();
            let len = encoder.encode_float(&pcm, &mut out).unwrap();
            Bytes::copy_from_slice(&out[..len])
        })
        .collect()
}

/// Writes a rendition as files: init, parts, segments, the playlist.
fn write_rendition(index: &RenditionIndex, dir: &Path) -> Vec<u8> {
    let init = index.init_segment().unwrap();
    std::fs::write(dir.join(INIT_URI), &init).unwrap();
    let mut whole = init.to_vec();
    for part in index.parts() {
        std::fs::write(dir.join(part_uri(part.id)), &part.bytes).unwrap();
        whole.extend_from_slice(&part.bytes);
    }
    for segment in index.segments() {
        let bytes = index.segment_bytes(segment.msn).expect("retained segment");
        std::fs::write(dir.join(segment_uri(segment.msn)), bytes).unwrap();
    }
    std::fs::write(dir.join(MEDIA_PLAYLIST_URI), media_playlist(index)).unwrap();
    std::fs::write(dir.join("whole.mp4"), &whole).unwrap();
    whole
}

/// Keeps the files for a look when TRIBUNE_KEEP_HLS is set.
fn clean_up(dir: &Path) {
    if std::env::var_os("TRIBUNE_KEEP_HLS").is_none() {
        let _ = std::fs::remove_dir_all(dir);
    } else {
        eprintln!("kept {}", dir.display());
    }
}

fn ffprobe(path: &Path, entries: &str) -> String {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            entries,
            "-of",
            "default=nw=1",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Decodes everything and returns the decoded duration in seconds; any
/// decoder complaint fails the test.
fn decode_seconds(input: &Path) -> f64 {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(input)
        .args(["-f", "s16le", "-ac", "1", "-ar", "48000", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffmpeg {}: {}",
        input.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout.len() as f64 / 2.0 / 48_000.0
}

fn field(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} missing in {text}"))
        .to_string()
}

#[test]
fn opus_fmp4_and_its_playlist_decode_with_the_right_duration() {
    if !have_ffmpeg() {
        return;
    }
    let dir = scratch_dir("opus");
    let mut track = Track::new(4800);
    let mut index = RenditionIndex::new(HlsLayout::DEFAULT, AudioConfig::PROGRAM_OPUS);
    for (i, packet) in opus_packets(SECONDS).into_iter().enumerate() {
        for group in track.push(packet, 960, 1_700_000_000_000 + i as u64 * 20) {
            index.push_group(&group).unwrap();
        }
    }
    if let Some(group) = track.finish() {
        index.push_group(&group).unwrap();
    }
    index.finish().unwrap();
    write_rendition(&index, &dir);

    let whole = dir.join("whole.mp4");
    let probe = ffprobe(
        &whole,
        "stream=codec_name,channels,sample_rate:format=duration",
    );
    assert_eq!(field(&probe, "codec_name"), "opus");
    assert_eq!(field(&probe, "channels"), "2");
    assert_eq!(field(&probe, "sample_rate"), "48000");
    let duration: f64 = field(&probe, "duration").parse().unwrap();
    assert!(
        (duration - SECONDS as f64).abs() < 0.05,
        "duration {duration}"
    );
    // The decoder drops the 312-sample pre-skip at the start.
    let decoded = decode_seconds(&whole);
    assert!((decoded - SECONDS as f64).abs() < 0.05, "decoded {decoded}");
    // The same media through ffmpeg's HLS demuxer and our playlist.
    let via_playlist = decode_seconds(&dir.join(MEDIA_PLAYLIST_URI));
    assert!(
        (via_playlist - SECONDS as f64).abs() < 0.05,
        "playlist {via_playlist}"
    );
    clean_up(&dir);
}

/// Raw AAC access units from an ADTS stream (7- or 9-byte headers).
fn adts_frames(mut adts: &[u8]) -> Vec<Bytes> {
    let mut frames = Vec::new();
    while adts.len() >= 7 {
        assert_eq!(adts[0], 0xFF, "ADTS sync");
        let protection_absent = adts[1] & 1 == 1;
        let length = (usize::from(adts[3] & 0x03) << 11)
            | (usize::from(adts[4]) << 3)
            | usize::from(adts[5] >> 5);
        let header = if protection_absent { 7 } else { 9 };
        frames.push(Bytes::copy_from_slice(&adts[header..length]));
        adts = &adts[length..];
    }
    frames
}

#[test]
fn aac_frames_package_on_the_same_timeline_and_decode() {
    if !have_ffmpeg() {
        return;
    }
    let dir = scratch_dir("aac");
    let adts = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency=440:sample_rate=48000:duration={SECONDS}"
        ))
        .args(["-ac", "2", "-c:a", "aac", "-b:a", "64k", "-f", "adts", "-"])
        .output()
        .unwrap();
    assert!(
        adts.status.success(),
        "{}",
        String::from_utf8_lossy(&adts.stderr)
    );
    let frames = adts_frames(&adts.stdout);
    assert!(frames.len() > SECONDS * 46, "{} frames", frames.len());

    let config = AudioConfig::AacLc(AacLcConfig {
        channels: 2,
        bitrate: 64_000,
    });
    let mut index = RenditionIndex::new(HlsLayout::DEFAULT, config);
    for (k, data) in frames.into_iter().enumerate() {
        let start = k as u64 * 1024;
        index
            .push(Frame {
                seq: start / 960,
                start_granule: start,
                duration: 1024,
                ingest_ms: 1_700_000_000_000 + start / 48,
                data,
            })
            .unwrap();
    }
    index.finish().unwrap();
    let frames_written = index
        .segments()
        .iter()
        .map(|s| s.duration_samples())
        .sum::<u64>()
        / 1024;
    write_rendition(&index, &dir);

    let whole = dir.join("whole.mp4");
    let probe = ffprobe(&whole, "stream=codec_name,profile,channels:format=duration");
    assert_eq!(field(&probe, "codec_name"), "aac");
    assert_eq!(field(&probe, "profile"), "LC");
    assert_eq!(field(&probe, "channels"), "2");
    let expected = (frames_written * 1024) as f64 / 48_000.0;
    let duration: f64 = field(&probe, "duration").parse().unwrap();
    assert!(
        (duration - expected).abs() < 0.05,
        "{duration} vs {expected}"
    );
    let decoded = decode_seconds(&whole);
    assert!((decoded - expected).abs() < 0.05, "{decoded} vs {expected}");
    let via_playlist = decode_seconds(&dir.join(MEDIA_PLAYLIST_URI));
    assert!((via_playlist - expected).abs() < 0.05, "{via_playlist}");
    clean_up(&dir);
}
