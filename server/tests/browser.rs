//! Chromium's <audio> plays the live stream (the listener page's fallback
//! player, `?player=element`, for browsers without WebCodecs) and the
//! replay, driven through the real web page (headless Debian Chromium via
//! playwright-core). The Web Audio player is `listener_browser.rs`.

mod support;

use std::path::PathBuf;
use std::process::Command;
use support::*;

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

fn play_in_chromium(page_url: &str, seconds: u32, shot: &str) -> serde_json::Value {
    let e2e = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../web/e2e");
    assert!(
        e2e.join("node_modules/playwright-core").exists() && std::path::Path::new("/usr/bin/chromium").exists(),
        "chromium and playwright-core are not installed: run ./scripts/test.sh, which installs them"
    );
    let out = Command::new("node")
        .arg(e2e.join("audio_plays.mjs"))
        .arg(page_url)
        .arg(seconds.to_string())
        .arg(artifacts().join(shot))
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "chromium run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn chromium_audio_plays_live_and_replay() {
    let s = Server::start(&[]);
    let (id, host) = s.live_space("Browser check");
    // long enough for a loaded machine's Chromium to start and play 4 s
    let mut source = ffmpeg_source(s.addr, &id, &host, 40.0, 440);
    s.wait_for_packets(&id, 50);
    let live = play_in_chromium(
        &s.url(&format!("/spaces/{id}?player=element")),
        4,
        "listener-live-element.png",
    );
    assert!(
        live["src"].as_str().unwrap().contains("/live.opus?ticket="),
        "{live}"
    );
    assert_eq!(live["error"], serde_json::Value::Null, "{live}");
    assert_eq!(live["playError"], serde_json::Value::Null, "{live}");
    assert_eq!(live["paused"], false, "{live}");
    let played = live["currentTime"].as_f64().unwrap() - live["start"].as_f64().unwrap();
    assert!(played >= 2.5, "live audio advanced only {played} s: {live}");
    let _ = source.kill();
    let _ = source.wait();
    s.end_space(&id, &host);

    let replay = play_in_chromium(&s.url(&format!("/spaces/{id}")), 2, "listener-replay.png");
    assert!(
        replay["src"].as_str().unwrap().ends_with("/replay.opus"),
        "{replay}"
    );
    assert_eq!(replay["error"], serde_json::Value::Null, "{replay}");
    let duration = replay["duration"].as_f64().unwrap_or(0.0);
    let recorded = s.info(&id)["duration_ms"].as_f64().unwrap() / 1000.0;
    assert!(
        recorded > 4.0 && (duration - recorded).abs() < 0.3,
        "replay duration {duration}, recorded {recorded}: {replay}"
    );
    assert!(replay["currentTime"].as_f64().unwrap() >= 1.0, "{replay}");

    // the home page lists the ended space
    let home = play_home(&s.url("/"));
    assert!(home.contains("Browser check"), "{home}");
}

fn play_home(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("/usr/bin/chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-quic",
            "--no-first-run",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .expect("chromium");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
