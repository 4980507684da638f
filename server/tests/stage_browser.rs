//! The whole product in real headless Chromium (web/e2e/stage.mjs, driven
//! through playwright-core): a host goes live from the console, two
//! speakers with fake microphones (440 Hz and 1 kHz WAV files) join from
//! invite links, a listener plays and asks to speak. Meanwhile real ffmpeg
//! listens to `live.opus` and must hear both voices; after the end the
//! replay must hold both, and every page leaves a screenshot.

mod support;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use support::*;

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

#[test]
fn host_speakers_and_listener_in_chromium() {
    let e2e = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../web/e2e");
    assert!(
        e2e.join("node_modules/playwright-core").exists()
            && std::path::Path::new("/usr/bin/chromium").exists(),
        "chromium and playwright-core are not installed: run ./scripts/test.sh, which installs them"
    );
    require_tool("ffmpeg");
    let s = Server::start(&[]);
    let admin = s.token("admin", None, "1h");
    let shots = artifacts().join("stage");
    std::fs::create_dir_all(&shots).unwrap();
    let mut child = Command::new("node")
        .arg(e2e.join("stage.mjs"))
        .arg(s.url(""))
        .arg(&admin)
        .arg(&shots)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node");
    let stdout = child.stdout.take().unwrap();
    let mut events: Vec<Value> = Vec::new();
    let mut on_air: Option<(String, Decoded)> = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let Ok(event) = serde_json::from_str::<Value>(&line) else {
            eprintln!("e2e: {line}");
            continue;
        };
        eprintln!("e2e event: {event}");
        if event["event"] == "on-air" && on_air.is_none() {
            let id = event["space"].as_str().expect("space id").to_string();
            let heard = s.listen_live(&id, 4);
            on_air = Some((id, heard));
        }
        events.push(event);
    }
    let out = child.wait_with_output().expect("node");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = events.last().cloned().unwrap_or(Value::Null);
    assert!(
        out.status.success() && last["event"] == "done",
        "e2e failed: {last}\n{stderr}"
    );

    let (id, heard) = on_air.expect("the script never reported on-air");
    assert!(heard.success, "ffmpeg: {}", heard.errors);
    assert!(
        heard.seconds() >= 3.5,
        "heard {} s of live.opus",
        heard.seconds()
    );
    let (r440, r1000) = (
        tone_presence(&heard.samples, 440.0),
        tone_presence(&heard.samples, 1000.0),
    );
    assert!(
        r440 > 0.1 && r1000 > 0.1,
        "live program: 440 Hz {r440:.3}, 1 kHz {r1000:.3}"
    );

    let info = s.info(&id);
    assert_eq!(info["state"], "ended", "{info}");
    let replay = s.decode_replay(&id);
    assert!(
        replay.success && replay.errors.is_empty(),
        "{}",
        replay.errors
    );
    let (r440, r1000) = (
        tone_presence(&replay.samples, 440.0),
        tone_presence(&replay.samples, 1000.0),
    );
    assert!(
        r440 > 0.1 && r1000 > 0.1,
        "replay: 440 Hz {r440:.3}, 1 kHz {r1000:.3}"
    );
    let tracks = s.tracks(&id);
    assert!(
        tracks.len() >= 3,
        "host, Ada and Grace each have a track: {tracks:?}"
    );

    for shot in [
        "home.png",
        "host-console.png",
        "speaker-ada.png",
        "listener-live.png",
        "listener-request.png",
        "listener-replay.png",
    ] {
        let len = std::fs::metadata(shots.join(shot)).map_or(0, |m| m.len());
        assert!(
            len > 5_000,
            "screenshot {shot} missing or empty ({len} bytes)"
        );
    }
}
