//! A listener's first second in real headless Chromium (web/e2e/listener.mjs):
//! the listener page of a live space, opened fresh at phone size, must make
//! sound quickly, and the sound must be the source's tone (recorded from the
//! page's own output); pausing puts it behind live, "Back to live" brings it
//! back; after the end the page offers the replay. The <audio> fallback
//! (`?player=element`) must still play the same stream.
//! Screenshots land in artifacts/listener/.

mod support;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use support::*;

fn e2e() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../web/e2e");
    assert!(
        dir.join("node_modules/playwright-core").exists()
            && std::path::Path::new("/usr/bin/chromium").exists(),
        "chromium and playwright-core are not installed: run ./scripts/test.sh, which installs them"
    );
    dir
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../artifacts/listener");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

/// Mono 16-bit samples of a WAV file written by web/e2e/chromium.mjs.
fn wav_samples(path: &std::path::Path) -> Vec<i16> {
    let bytes = std::fs::read(path).expect("wav");
    bytes[44..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

#[test]
fn listener_hears_the_live_tone_within_a_second_or_so() {
    let e2e = e2e();
    let s = Server::start(&[]);
    let (id, host) = s.live_space("First second");
    // long enough for a loaded machine's Chromium to start and run every step
    let mut source = ffmpeg_source(s.addr, &id, &host, 90.0, 440);
    s.wait_for_packets(&id, 100);
    let shots = artifacts();
    let mut child = Command::new("node")
        .arg(e2e.join("listener.mjs"))
        .arg(s.url(&format!("/spaces/{id}")))
        .arg(&shots)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node");
    let mut events: Vec<Value> = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let Ok(line) = line else { break };
        let Ok(event) = serde_json::from_str::<Value>(&line) else {
            eprintln!("e2e: {line}");
            continue;
        };
        eprintln!("e2e event: {event}");
        if event["event"] == "live" {
            s.end_space(&id, &host);
        }
        events.push(event);
    }
    let status = child.wait().expect("node");
    let _ = source.kill();
    let _ = source.wait();
    let last = events.last().cloned().unwrap_or(Value::Null);
    assert!(
        status.success() && last["event"] == "done",
        "e2e failed: {last}"
    );
    let live = events
        .iter()
        .find(|e| e["event"] == "live")
        .expect("live event");

    assert_eq!(live["engine"], "webaudio", "{live}");
    assert!(
        live["src"].as_str().unwrap().contains("/live.opus?ticket="),
        "{live}"
    );
    // The target is 1 s (p95, bench/browser-listen.sh); 3 s keeps a busy
    // machine from failing this. A machine far past its cores (other builds
    // and tests sharing it) slows Chromium's own start of the audio output
    // by seconds: there the bound is 8 s, still under the <audio> element's
    // 4.6-4.8 s on a quiet machine plus that slowdown.
    let first = live["first_sound_ms"].as_f64().expect("first sound");
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let bound = if load <= 2.0 * cores { 3000.0 } else { 8000.0 };
    assert!(
        first <= bound,
        "first sound after {first} ms (bound {bound} ms, load average {load}): {live}"
    );
    let behind = live["behind_ms"].as_f64().expect("behind live");
    assert!(behind < 2500.0, "{behind} ms behind live: {live}");
    assert_eq!(live["paused_state"], "paused", "{live}");
    assert!(
        live["after_pause_behind_ms"].as_f64().unwrap() > 2000.0,
        "{live}"
    );
    assert_eq!(live["back_button_shown"], true, "{live}");
    assert!(
        live["back_to_live_behind_ms"].as_f64().unwrap() < 2000.0,
        "{live}"
    );
    assert_eq!(live["status_before"]["status"], "Connecting…", "{live}");

    let samples = wav_samples(std::path::Path::new(live["wav"].as_str().unwrap()));
    assert!(
        samples.len() >= 48_000 * 2,
        "recorded {} samples",
        samples.len()
    );
    let (r440, r1000) = (
        tone_presence(&samples, 440.0),
        tone_presence(&samples, 1000.0),
    );
    assert!(
        r440 > 0.5 && r1000 < 0.1,
        "the page played 440 Hz {r440:.3}, 1 kHz {r1000:.3}"
    );
    assert_eq!(last["console_errors"], serde_json::json!([]), "{last}");
    for shot in [
        "listener-connecting.png",
        "listener-live.png",
        "listener-behind.png",
        "listener-ended.png",
    ] {
        let len = std::fs::metadata(shots.join(shot)).map_or(0, |m| m.len());
        assert!(
            len > 5_000,
            "screenshot {shot} missing or empty ({len} bytes)"
        );
    }
}
