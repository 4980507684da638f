//! Desktop players open the live stream: mpv (ffmpeg is covered by the
//! live tests, Chromium by the browser test).

mod support;

use std::process::Command;
use support::*;

#[test]
fn mpv_plays_the_live_stream() {
    let s = Server::start(&[]);
    let (id, host) = s.live_space("mpv");
    let mut source = ffmpeg_source(s.addr, &id, &host, 8.0, 440);
    s.wait_for_packets(&id, 50);
    let out = Command::new("mpv")
        .args([
            "--no-config",
            "--no-video",
            "--ao=null",
            "--length=3",
            "--msg-level=all=info",
        ])
        .arg(s.url(&format!("/spaces/{id}/live.opus")))
        .output()
        .expect("mpv is not installed: run ./scripts/test.sh, which installs it");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("AO: [null] 48000Hz"),
        "mpv opened no audio output: {text}"
    );
    assert!(
        text.contains("Exiting... (End of file)"),
        "mpv did not play to the requested length: {text}"
    );
    let _ = source.kill();
    let _ = source.wait();
}
