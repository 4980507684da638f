//! Desktop players open the live stream and the HLS tier: mpv (ffmpeg is
//! covered by the live and HLS tests, Chromium by the browser tests).

mod support;

use std::process::Command;
use support::*;

/// mpv's output for three seconds of `url`, asserting it played them.
fn mpv_plays(url: &str) -> String {
    let out = Command::new("mpv")
        .args([
            "--no-config",
            "--no-video",
            "--ao=null",
            "--length=3",
            "--msg-level=all=info",
        ])
        .arg(url)
        .output()
        .expect("mpv is not installed: run ./scripts/test.sh, which installs it");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{url}: {text}");
    assert!(
        text.contains("AO: [null] 48000Hz"),
        "mpv opened no audio output for {url}: {text}"
    );
    assert!(
        text.contains("Exiting... (End of file)"),
        "mpv did not play {url} to the requested length: {text}"
    );
    text
}

#[test]
fn mpv_plays_the_hls_tier() {
    let s = Server::start(&[]);
    let (id, host) = s.live_space("mpv hls");
    let mut source = ffmpeg_source(s.addr, &id, &host, 30.0, 440);
    // a segment and a part beyond it: something for mpv to start on
    wait_for_hls_part(s.addr, &id, 1, 1);
    let master = mpv_plays(&s.url(&format!("/spaces/{id}/hls/master.m3u8")));
    assert!(master.contains("opus 2ch 48000Hz"), "{master}");
    assert!(master.contains("aac 2ch 48000Hz"), "{master}");
    let aac = mpv_plays(&s.url(&format!("/spaces/{id}/hls/aac/media.m3u8")));
    assert!(aac.contains("(aac 2ch 48000Hz)"), "{aac}");
    let opus = mpv_plays(&s.url(&format!("/spaces/{id}/hls/opus/media.m3u8")));
    assert!(opus.contains("(opus 2ch 48000Hz)"), "{opus}");
    let _ = source.kill();
    let _ = source.wait();
}

#[test]
fn mpv_plays_the_live_stream() {
    let s = Server::start(&[]);
    let (id, host) = s.live_space("mpv");
    let mut source = ffmpeg_source(s.addr, &id, &host, 8.0, 440);
    s.wait_for_packets(&id, 50);
    mpv_plays(&s.url(&format!("/spaces/{id}/live.opus")));
    let _ = source.kill();
    let _ = source.wait();
}
