//! The soak (issue 9): one space for `SOAK_SECS` (default 30 minutes) with
//! a source that drops and reconnects every few minutes, speakers joining
//! and leaving, listeners churning, and one restart in the middle. After:
//! the recording decodes end to end, and memory, open files and tasks are
//! back to their baseline. Run by `bench/soak.sh` (release build); ignored
//! by the normal test run.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::whip::{self, Signal};
use support::*;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// What the node holds: (RSS KiB, open files, tasks), sampled once the
/// node has settled.
fn sample(s: &Server) -> (u64, usize, f64) {
    let pid = s.child.id();
    std::thread::sleep(Duration::from_secs(2));
    let tasks = metric(&s.metrics(), "tribune_tasks", "");
    (rss_kib(pid), fds(pid), tasks)
}

/// A listener for a few seconds; every byte checked. Returns the pages it
/// got, or the fault.
fn listen_once(addr: std::net::SocketAddr, id: &str, secs: u64) -> Result<usize, String> {
    let mut sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    sock.write_all(format!("GET /spaces/{id}/live.opus HTTP/1.0\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    while start.elapsed() < Duration::from_secs(secs) {
        match sock.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
    }
    let res = parse_response(&buf).ok_or("no response")?;
    if res.status != 200 {
        return Ok(0); // a restart or the end: refused clearly, not a fault
    }
    let pages = std::panic::catch_unwind(|| ogg_pages(&res.body).len())
        .map_err(|_| "invalid Ogg page".to_string())?;
    Ok(pages)
}

#[test]
#[ignore = "takes SOAK_SECS (default 30 minutes): bench/soak.sh"]
fn soak() {
    let total = Duration::from_secs(
        std::env::var("SOAK_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1800),
    );
    let source_every = total / 8; // reconnects a few times per run
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &[]);
    let (id, host) = s.live_space("Soak");
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let addr = Arc::new(std::sync::Mutex::new(s.addr));
    // while the node restarts, a refused connection is expected, not a fault
    let restarting = Arc::new(AtomicBool::new(false));

    // listeners churning: 20 at a time, each staying 5–30 s
    let listened = Arc::new(AtomicU64::new(0));
    let faults = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let churn: Vec<_> = (0..20)
        .map(|i| {
            let (stop, addr, id) = (stop.clone(), addr.clone(), id.clone());
            let (listened, faults) = (listened.clone(), faults.clone());
            let restarting = restarting.clone();
            std::thread::spawn(move || {
                let mut k = i as u64;
                while !stop.load(Ordering::Acquire) {
                    k = k * 7 + 3;
                    let secs = 5 + k % 26;
                    let a = *addr.lock().unwrap();
                    match listen_once(a, &id, secs) {
                        Ok(_) => {
                            listened.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_)
                            if restarting.load(Ordering::Acquire) || *addr.lock().unwrap() != a =>
                        {
                            std::thread::sleep(Duration::from_millis(200));
                        }
                        Err(e) => faults.lock().unwrap().push(e),
                    }
                }
            })
        })
        .collect();

    let mut source = ffmpeg_source(s.addr, &id, &host, source_every.as_secs_f64(), 440);
    let mut source_started = Instant::now();
    let mut speakers: Vec<whip::Speaker> = Vec::new();
    let mut restarted = false;
    let mut baseline = None;
    let mut reconnects = 0;
    let mut speaker_sessions = 0;
    let mut step = 0u64;
    while started.elapsed() < total {
        std::thread::sleep(Duration::from_secs(5));
        step += 1;
        if baseline.is_none() && started.elapsed() > Duration::from_secs(20) {
            baseline = Some(sample(&s));
            println!("baseline (RSS KiB, fds, tasks): {:?}", baseline.unwrap());
        }
        // the node's footprint every five minutes: growth that does not
        // level off is a leak
        if step.is_multiple_of(60) {
            println!(
                "at {} s (RSS KiB, fds, tasks): {:?}",
                started.elapsed().as_secs(),
                sample(&s)
            );
        }
        // the source drops and comes back
        if source_started.elapsed() >= source_every {
            let _ = source.kill();
            let _ = source.wait();
            std::thread::sleep(Duration::from_secs(2));
            source = ffmpeg_source(s.addr, &id, &host, source_every.as_secs_f64(), 440);
            source_started = Instant::now();
            reconnects += 1;
        }
        // speakers come and go: up to three, one change every 20 s
        if step.is_multiple_of(4) {
            if speakers.len() < 3 && !step.is_multiple_of(12) {
                let name = format!("guest{step}");
                let token = s.mint(&id, &host, "speaker", &name);
                let hz = 300.0 + (step % 7) as f64 * 100.0;
                if let Ok(sp) = whip::join(s.addr, &id, &token, Signal::Tone { hz, amplitude: 0.2 })
                {
                    speakers.push(sp);
                    speaker_sessions += 1;
                }
            } else if let Some(sp) = speakers.pop() {
                let location = sp.location.clone();
                let log = sp.finish();
                assert!(log.error.is_none(), "speaker: {:?}", log.error);
                let r = request(
                    s.addr,
                    "DELETE",
                    &location,
                    &[("Authorization", &format!("Bearer {host}"))],
                    None,
                );
                assert!(r.status == 200 || r.status == 404, "{}", r.text());
            }
        }
        // one restart in the middle (a deploy during the event)
        if !restarted && started.elapsed() >= total / 2 {
            let before = baseline.take();
            println!("before restart: {:?} (baseline {before:?})", sample(&s));
            for sp in speakers.drain(..) {
                sp.finish();
            }
            restarting.store(true, Ordering::Release);
            let pid = s.child.id().to_string();
            let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
            assert!(ok.success());
            let _ = s.child.wait();
            let _ = source.kill();
            let _ = source.wait();
            s = Server::start_in(dir.path(), &[]);
            *addr.lock().unwrap() = s.addr;
            restarting.store(false, Ordering::Release);
            assert_eq!(s.info(&id)["state"], "live");
            source = ffmpeg_source(s.addr, &id, &host, source_every.as_secs_f64(), 440);
            source_started = Instant::now();
            restarted = true;
            // the new process's own baseline, once it has settled
            std::thread::sleep(Duration::from_secs(20));
            baseline = Some(sample(&s));
            println!("baseline after restart: {:?}", baseline.unwrap());
        }
    }
    for sp in speakers.drain(..) {
        sp.finish();
    }
    stop.store(true, Ordering::Release);
    for t in churn {
        let _ = t.join();
    }
    let _ = source.kill();
    let _ = source.wait();
    // everything that came and went is gone again
    std::thread::sleep(Duration::from_secs(3));
    let end = sample(&s);
    let base = baseline.expect("a baseline");
    println!("end, all gone (RSS KiB, fds, tasks): {end:?}");
    let r = s.end_space(&id, &host);
    assert_eq!(r.status, 200, "{}", r.text());
    let replay = s.decode_replay(&id);
    let info = s.info(&id);
    println!(
        "soak: {} s, {reconnects} source reconnects, {speaker_sessions} speaker sessions, {} listener sessions, 1 restart; recording {:.1} s ({} packets), decode errors: {}",
        started.elapsed().as_secs(),
        listened.load(Ordering::Relaxed),
        replay.seconds(),
        info["packets"],
        if replay.errors.is_empty() { "none" } else { &replay.errors }
    );
    let faults = faults.lock().unwrap();
    assert!(faults.is_empty(), "listener faults: {faults:?}");
    assert!(
        replay.success && replay.errors.is_empty(),
        "{}",
        replay.errors
    );
    // the recording covers the run, less the source's gaps (2 s per
    // reconnect and the restart)
    let expected = started.elapsed().as_secs_f64() - 2.0 * (reconnects as f64 + 1.0) - 25.0;
    assert!(
        replay.seconds() >= expected,
        "{} s of {expected} s",
        replay.seconds()
    );
    assert!(
        end.0 <= base.0 + 20 * 1024,
        "memory {} KiB vs {} KiB",
        end.0,
        base.0
    );
    assert!(end.1 <= base.1 + 4, "open files {} vs {}", end.1, base.1);
    assert!(end.2 <= base.2 + 4.0, "tasks {} vs {}", end.2, base.2);
}
