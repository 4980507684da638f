//! tribune-load against a fault-injecting server: every fault it is meant
//! to catch must be reported exactly, and a clean stream must pass.

use bytes::Bytes;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;
use tribune_core::track::Track;
use tribune_media::package::{group_page, header_pages};

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    BadCrc,
    Gap,
    Stall,
    NoAnswer,
}

/// Pages of a 100 ms-per-page program, as Tribune packages them.
fn program(pages: usize) -> (Bytes, Vec<Bytes>) {
    let mut t = Track::new(4800);
    let mut out = Vec::new();
    for i in 0..pages * 5 {
        for g in t.push(Bytes::from(vec![31 << 3, i as u8, 7]), 960, 0) {
            out.push(group_page(5, &g));
        }
    }
    // the epoch is "now" so latencies stay small
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    (header_pages(5, "fault", epoch), out)
}

/// Serves one listener: headers, a 1 s burst, then a page every 100 ms,
/// with `fault` injected 2 s in.
fn fault_server(fault: Fault) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let Ok((mut sock, _)) = listener.accept() else {
            return;
        };
        let mut req = [0u8; 1024];
        let _ = sock.read(&mut req);
        if fault == Fault::NoAnswer {
            std::thread::sleep(Duration::from_secs(8));
            return;
        }
        let (head, pages) = program(80);
        let _ = sock.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: audio/ogg\r\n\r\n");
        let _ = sock.write_all(&head);
        for p in &pages[..10] {
            let _ = sock.write_all(p);
        }
        for (i, p) in pages[10..].iter().enumerate() {
            std::thread::sleep(Duration::from_millis(100));
            let at_fault = i == 20;
            match fault {
                Fault::BadCrc if at_fault => {
                    let mut bad = p.to_vec();
                    let last = bad.len() - 1;
                    bad[last] ^= 0xff;
                    let _ = sock.write_all(&bad);
                    continue;
                }
                Fault::Gap if at_fault => continue,
                Fault::Stall if at_fault => std::thread::sleep(Duration::from_secs(2)),
                _ => {}
            }
            if sock.write_all(p).is_err() {
                return;
            }
        }
    });
    addr
}

fn run_load(addr: SocketAddr, dir: &std::path::Path, name: &str) -> (bool, serde_json::Value) {
    let json = dir.join(format!("{name}.json"));
    let out = Command::new(env!("CARGO_BIN_EXE_tribune-load"))
        .args([
            "listen",
            &format!("http://{addr}/live.opus"),
            "--listeners",
            "1",
            "--duration",
            "5",
            "--answer-timeout",
            "2",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run tribune-load");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.lines()
            .any(|l| l.ends_with("failed") && l.contains("passed")),
        "no closing line: {text}"
    );
    let report = serde_json::from_slice(&std::fs::read(&json).expect("report")).expect("json");
    (out.status.success(), report)
}

#[test]
fn every_injected_fault_is_reported_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("clean", Fault::None),
        ("crc", Fault::BadCrc),
        ("gap", Fault::Gap),
        ("stall", Fault::Stall),
        ("noanswer", Fault::NoAnswer),
    ];
    let runs: Vec<_> = cases
        .iter()
        .map(|&(name, fault)| {
            let addr = fault_server(fault);
            let d = dir.path().to_path_buf();
            (name, std::thread::spawn(move || run_load(addr, &d, name)))
        })
        .collect();
    for (name, handle) in runs {
        let (ok, r) = handle.join().unwrap();
        match name {
            "clean" => {
                assert!(ok, "{r}");
                assert_eq!(r["passed"], 1, "{r}");
                assert_eq!(r["stalls"], 0, "{r}");
                assert_eq!(r["validation_faults"], serde_json::json!({}), "{r}");
                assert!(r["latency_ms"]["samples"].as_u64().unwrap() > 0, "{r}");
            }
            "crc" => {
                assert!(!ok, "a CRC fault must fail the run");
                assert_eq!(r["validation_faults"], serde_json::json!({"crc": 1}), "{r}");
            }
            "gap" => {
                assert!(!ok);
                assert_eq!(r["validation_faults"], serde_json::json!({"gap": 1}), "{r}");
            }
            "stall" => {
                assert!(ok, "a stall is not a validation error: {r}");
                assert_eq!(r["stalls"], 1, "{r}");
                assert_eq!(r["failed"], 1, "{r}");
                let secs = r["stall_seconds"].as_f64().unwrap();
                assert!(secs > 0.5 && secs < 3.0, "{r}");
            }
            _ => {
                assert_eq!(r["unanswered"], 1, "{r}");
                assert_eq!(r["failed"], 1, "{r}");
            }
        }
    }
}
