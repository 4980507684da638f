//! `tribune-load hls` against the real binary, directly and through
//! Debian's nginx with deploy/nginx/tribune-hls.conf: LL-HLS listeners
//! that follow a live space pass with every fragment validated, no stall,
//! and a latency from PROGRAM-DATE-TIME; and the tool fails when it should
//! (a wrong URL, a space that ends while they listen).

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use support::services::Nginx;
use support::*;

fn tribune_load() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_tribune")).with_file_name("tribune-load");
    assert!(
        path.exists(),
        "{} is not built: ./scripts/test.sh builds the workspace first",
        path.display()
    );
    path
}

/// Runs `tribune-load hls URL` with `args`; its exit status and report.
fn run_hls(url: &str, args: &[&str]) -> (Output, Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let out = Command::new(tribune_load())
        .args(["hls", url])
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("tribune-load");
    let report = std::fs::read_to_string(&json)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| {
            panic!(
                "no report: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
    (out, report)
}

/// Every listener passed: audio came, every fragment checked, no stall.
fn assert_passed(out: &Output, r: &Value, listeners: u64, seconds: f64) {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{r:#}");
    assert_eq!(r["listeners"], listeners, "{r:#}");
    assert_eq!(r["passed"], listeners, "{r:#}");
    assert_eq!(r["stalls"], 0, "{r:#}");
    assert!(r["faults"].as_object().unwrap().is_empty(), "{r:#}");
    // about one 1 s part per second each, every one validated
    let fragments = r["fragments_validated"].as_f64().unwrap();
    assert!(
        fragments >= listeners as f64 * (seconds - 2.0),
        "{fragments} fragments: {r:#}"
    );
    let audio = r["audio_seconds"].as_f64().unwrap();
    assert!(audio >= listeners as f64 * (seconds - 2.0), "{r:#}");
    // LL-HLS plays a few seconds behind the ingest clock
    let p50 = r["latency_ms"]["p50"].as_f64().expect("latency");
    assert!((1000.0..8000.0).contains(&p50), "{r:#}");
    assert!(r["time_to_first_audio_ms"]["p95"].as_f64().unwrap() < 5000.0);
}

#[test]
fn hls_listeners_pass_directly_and_through_nginx_and_fail_when_they_should() {
    let node = Server::start(&["--per-ip-connections", "0"]);
    let (id, host) = node.live_space("HLS load");
    let mut source = ffmpeg_source(node.addr, &id, &host, 60.0, 440);
    let nginx = Nginx::start(node.addr);
    let path = format!("/spaces/{id}/hls/master.m3u8");
    // wait for the first parts
    wait_for_hls_part(node.addr, &id, 1, 0);

    // straight from the node, both renditions
    let direct = node.url(&path);
    let (out, r) = run_hls(&direct, &["--listeners", "4", "--duration", "6"]);
    assert_passed(&out, &r, 4, 6.0);
    let (out, r) = run_hls(
        &direct,
        &["--listeners", "2", "--duration", "6", "--rendition", "aac"],
    );
    assert_passed(&out, &r, 2, 6.0);

    // through the cache, from several source addresses, in two processes
    let cached = format!("http://{}{path}", nginx.addr());
    let (out, r) = run_hls(
        &cached,
        &[
            "--listeners",
            "30",
            "--ramp",
            "50",
            "--duration",
            "8",
            "--workers",
            "2",
            "--bind",
            "127.0.0.2,127.0.0.3",
        ],
    );
    assert_passed(&out, &r, 30, 8.0);
    let log = nginx.access_log();
    assert!(log.lines().filter(|l| l.contains("part")).count() >= 200);

    // a wrong URL fails every listener, fast
    let (out, r) = run_hls(
        &node.url("/spaces/no-such-space/hls/master.m3u8"),
        &["--listeners", "3", "--duration", "5"],
    );
    assert_eq!(out.status.code(), Some(2), "{r:#}");
    assert_eq!(r["passed"], 0, "{r:#}");
    assert_eq!(r["faults"]["master answered 404"], 3, "{r:#}");

    // a space that ends while they listen: every listener fails
    let listening = std::thread::spawn({
        let url = direct.clone();
        move || run_hls(&url, &["--listeners", "3", "--duration", "15"])
    });
    std::thread::sleep(Duration::from_secs(5));
    let _ = source.kill();
    let _ = source.wait();
    assert_eq!(node.end_space(&id, &host).status, 200);
    let (out, r) = listening.join().unwrap();
    assert_eq!(out.status.code(), Some(2), "{r:#}");
    assert_eq!(r["passed"], 0, "{r:#}");
    let faults = r["faults"].as_object().unwrap();
    assert!(faults.keys().any(|k| k.starts_with("ended")), "{faults:?}");
}
