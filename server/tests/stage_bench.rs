//! Stage benchmark (ignored by the test run; `bench/stage.sh` runs it in
//! release mode and it prints figures, it asserts nothing about speed):
//! - mouth-to-ear between two WebRTC speakers over loopback: a click
//!   leaves speaker A's microphone encoder, is mixed, and arrives in
//!   speaker B's mix-minus (both timed on this process's clock);
//! - the same click reaching a `live.opus` listener through the program
//!   track (ingest through the mix to the listener);
//! - the server's CPU per speaker with 2, 6 and 13 speakers talking.

mod support;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::whip::{self, Signal};
use support::*;
use tribune_media::ogg_page::scan_page;

fn server_cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    ticks / 100.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Pairs each click with the first onset heard after it (within 1 s).
fn latencies(clicks: &[Instant], heard: &[Instant]) -> Vec<f64> {
    let mut out: Vec<f64> = clicks
        .iter()
        .filter_map(|c| {
            heard
                .iter()
                .find(|h| **h > *c && h.duration_since(*c) < Duration::from_secs(1))
                .map(|h| h.duration_since(*c).as_secs_f64() * 1000.0)
        })
        .collect();
    out.sort_by(|a, b| a.total_cmp(b));
    out
}

/// A `live.opus` listener that decodes every packet as its page arrives
/// and notes when a click's onset arrived.
fn listen_for_onsets(addr: std::net::SocketAddr, id: &str, seconds: u64) -> Vec<Instant> {
    let mut sock = TcpStream::connect(addr).unwrap();
    use std::io::Write;
    sock.write_all(
        format!("GET /spaces/{id}/live.opus HTTP/1.0\r\nHost: bench\r\n\r\n").as_bytes(),
    )
    .unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut decoder = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
    let mut pcm = vec![0i16; 5760];
    let mut buf: Vec<u8> = Vec::new();
    let mut head_done = false;
    let mut pages = 0;
    let mut quiet = true;
    let mut onsets = Vec::new();
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut chunk = [0u8; 16384];
    while Instant::now() < end {
        let n = match sock.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(_) => continue,
        };
        let arrived = Instant::now();
        buf.extend_from_slice(&chunk[..n]);
        if !head_done {
            let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            buf.drain(..at + 4);
            head_done = true;
        }
        while let Ok(page) = scan_page(&buf) {
            pages += 1;
            // pages 0 and 1 are headers; the burst (first ~1 s) is old audio
            if pages > 2 {
                let nsegs = buf[26] as usize;
                let lacing = &buf[27..27 + nsegs];
                let mut at = 27 + nsegs;
                let mut len = 0;
                for &l in lacing {
                    len += l as usize;
                    if l < 255 {
                        let packet = &buf[at..at + len];
                        at += len;
                        len = 0;
                        if let Ok(n) = decoder.decode(packet, &mut pcm, false) {
                            let peak = pcm[..n].iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
                            if quiet && peak > 6_000 {
                                onsets.push(arrived);
                            }
                            quiet = peak < 2_000;
                        }
                    }
                }
            }
            buf.drain(..page.len);
        }
    }
    onsets
}

#[test]
#[ignore = "benchmark: run by bench/stage.sh"]
fn stage_latency_and_mixer_cost() {
    let s = Server::start(&[]);
    let (id, host) = s.live_space("Stage bench");
    let clicker = whip::join(
        s.addr,
        &id,
        &s.mint(&id, &host, "speaker", "a"),
        Signal::Clicks { every_ms: 500 },
    )
    .expect("A joins");
    let ear = whip::join(
        s.addr,
        &id,
        &s.mint(&id, &host, "speaker", "b"),
        Signal::Silence,
    )
    .expect("B joins");
    s.wait_for_packets(&id, 50);
    let secs = 12;
    let listener = {
        let addr = s.addr;
        let id = id.clone();
        std::thread::spawn(move || listen_for_onsets(addr, &id, secs))
    };
    std::thread::sleep(Duration::from_secs(secs));
    let heard_by_listener = listener.join().unwrap();
    let a = clicker.finish();
    let b = ear.finish();
    let m2e = latencies(&a.clicks_sent, &b.onsets_heard);
    let live = latencies(&a.clicks_sent, &heard_by_listener);
    println!(
        "machine: {} cores; debug build: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cfg!(debug_assertions)
    );
    println!(
        "speaker-to-speaker (A's encoder to B's decoder, through the mixer's jitter buffer and mix-minus): \
         {} clicks, p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        m2e.len(),
        percentile(&m2e, 0.5),
        percentile(&m2e, 0.95),
        m2e.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "speaker-to-listener (A's encoder to a live.opus listener's decoder, default 100 ms groups, 200 ms flush): \
         {} clicks, p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        live.len(),
        percentile(&live, 0.5),
        percentile(&live, 0.95),
        live.last().copied().unwrap_or(f64::NAN)
    );
    assert!(!m2e.is_empty() && !live.is_empty(), "no clicks were heard");
    s.end_space(&id, &host);

    // mixer cost: the server's CPU with n speakers talking at once
    for n in [2usize, 6, 13] {
        let (id, host) = s.live_space(&format!("cost {n}"));
        let speakers: Vec<_> = (0..n)
            .map(|i| {
                let t = s.mint(&id, &host, "speaker", &format!("s{i}"));
                let hz = 300.0 + 70.0 * i as f64;
                whip::join(s.addr, &id, &t, Signal::Tone { hz, amplitude: 0.1 }).expect("joins")
            })
            .collect();
        s.wait_for_packets(&id, 50);
        std::thread::sleep(Duration::from_secs(1));
        let (c0, t0) = (server_cpu_secs(s.child.id()), Instant::now());
        std::thread::sleep(Duration::from_secs(8));
        let (c1, t1) = (server_cpu_secs(s.child.id()), Instant::now());
        let core_share = (c1 - c0) / (t1 - t0).as_secs_f64();
        println!(
            "{n:>2} speakers: server CPU {:.1}% of one core = {:.2}% per speaker (decode, jitter buffer, mix, limiter, \
             program + {n} mix-minus encodes, SRTP)",
            core_share * 100.0,
            core_share * 100.0 / n as f64
        );
        for sp in speakers {
            let _ = sp.finish();
        }
        s.end_space(&id, &host);
    }
}
