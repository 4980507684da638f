//! Shared state between nodes on existing engines: the control plane in
//! PostgreSQL, the node directory and fleet-wide counts in Redis. Counts
//! are sums over the fleet, a full node sends listeners where there is
//! room, and neither engine going away stops the audio.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use support::services::{Postgres, Redis};
use support::*;

/// A listener held open; the bytes it got so far can be read.
struct Held(TcpStream);

fn hold(addr: std::net::SocketAddr, id: &str) -> (u16, Held, Option<String>) {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.write_all(format!("GET /spaces/{id}/live.opus HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if sock.read(&mut byte).unwrap_or(0) == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let r = parse_response(&head).expect("a response head");
    let location = r.header("location").map(str::to_string);
    (r.status, Held(sock), location)
}

impl Held {
    /// Bytes that arrive within `secs`.
    fn bytes_for(&mut self, secs: u64) -> usize {
        self.0
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let start = std::time::Instant::now();
        let mut n = 0;
        let mut buf = [0u8; 8192];
        while start.elapsed() < Duration::from_secs(secs) {
            match self.0.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(_) => {}
            }
        }
        n
    }
}

#[test]
fn the_fleet_shares_state_and_survives_its_engines_going_away() {
    let _heavy = one_heavy_test_at_a_time();
    let pg = Postgres::start();
    let mut redis = Redis::start();
    let origin = Server::start(&[
        "--database",
        &pg.url(),
        "--redis",
        &redis.url(),
        "--node-name",
        "origin",
    ]);
    let (id, host) = origin.live_space("Fleet counts");
    let node = origin.token("node", None, "1h");
    let admin = origin.token("admin", None, "1h");
    let edge = Server::start(&[
        "--upstream",
        &origin.url(""),
        "--node-token",
        &node,
        "--redis",
        &redis.url(),
        "--node-name",
        "edge-1",
        "--max-listeners",
        "2",
    ]);
    let mut source = ffmpeg_source(origin.addr, &id, &host, 60.0, 440);
    origin.wait_for_packets(&id, 50);

    // listeners on both nodes: the count is the fleet's, on either node
    let mut held = Vec::new();
    for addr in [origin.addr, edge.addr, edge.addr] {
        let (status, h, _) = hold(addr, &id);
        assert_eq!(status, 200);
        held.push(h);
    }
    assert!(
        eventually(Duration::from_secs(10), || origin.info(&id)["listeners"]
            == 3
            && edge.info(&id)["listeners"] == 3),
        "origin {} edge {}",
        origin.info(&id),
        edge.info(&id)
    );
    assert_eq!(origin.info(&id)["listeners_here"], 1);
    assert!(origin.info(&id)["peak_listeners"].as_u64().unwrap() >= 3);

    // the operator's view lists both nodes
    let fleet = request(
        origin.addr,
        "GET",
        "/api/fleet",
        &[("Authorization", &format!("Bearer {admin}"))],
        None,
    )
    .json();
    let names: Vec<&str> = fleet["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["edge-1", "origin"], "{fleet}");
    assert_eq!(fleet["redis"], "up");
    let page = request(origin.addr, "GET", "/fleet", &[], None);
    assert_eq!(page.status, 200);
    assert!(page.text().contains("Fleet"));

    // the edge is full (2): it sends the next listener to a node with room
    let (status, _, location) = hold(edge.addr, &id);
    assert_eq!(status, 307);
    let location = location.expect("a Location");
    assert!(
        location.starts_with(&origin.url(&format!("/spaces/{id}/live.opus"))),
        "{location}"
    );

    // Redis goes away: nodes serve and admit on their own, with their own counts
    redis.kill();
    assert!(held[1].bytes_for(2) > 0, "audio goes on");
    assert!(eventually(Duration::from_secs(15), || origin.info(&id)
        ["listeners"]
        == 1));
    let (status, mut late, _) = hold(origin.addr, &id);
    assert_eq!(status, 200, "the origin admits by its own capacity");
    assert!(late.bytes_for(1) > 0);
    // and counts come back with it
    redis.restart();
    assert!(
        eventually(Duration::from_secs(15), || origin.info(&id)["listeners"]
            == 4),
        "{}",
        origin.info(&id)
    );

    // PostgreSQL stops: the space goes on; writes say so, and change nothing
    pg.stop();
    assert!(held[0].bytes_for(2) > 0, "audio goes on");
    let r = request(
        origin.addr,
        "POST",
        "/api/spaces",
        &[("Authorization", &format!("Bearer {admin}"))],
        Some(r#"{"title":"While the database is down"}"#),
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("database"));
    let r = origin.end_space(&id, &host);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(origin.info(&id)["state"], "live", "nothing half-written");
    assert!(held[0].bytes_for(1) > 0);
    pg.resume();
    assert!(
        eventually(Duration::from_secs(15), || origin
            .end_space(&id, &host)
            .status
            == 200),
        "ending works again once the database is back"
    );
    let _ = source.kill();
    let _ = source.wait();
    // the ended state is in PostgreSQL: a restarted origin knows it
    drop(held);
    let dir = origin.data.clone();
    drop(origin);
    let again = Server::start_in(&dir, &["--database", &pg.url()]);
    assert_eq!(again.info(&id)["state"], "ended");
}

/// A listener page whose edge dies goes on from another node of the fleet
/// at the packet it needed next (real headless Chromium, web/e2e/failover.mjs):
/// no packet missed, the tone still the source's.
#[test]
fn listener_page_goes_on_from_another_node_when_its_edge_dies() {
    let _heavy = one_heavy_test_at_a_time();
    let e2e = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../web/e2e");
    assert!(
        e2e.join("node_modules/playwright-core").exists()
            && std::path::Path::new("/usr/bin/chromium").exists(),
        "chromium and playwright-core are not installed: run ./scripts/test.sh, which installs them"
    );
    let redis = Redis::start();
    let origin = Server::start(&["--redis", &redis.url(), "--node-name", "origin"]);
    let (id, host) = origin.live_space("Page failover");
    let node = origin.token("node", None, "1h");
    let edge = |name: &str| {
        Server::start(&[
            "--upstream",
            &origin.url(""),
            "--node-token",
            &node,
            "--redis",
            &redis.url(),
            "--node-name",
            name,
        ])
    };
    let mut edge1 = edge("edge-1");
    let edge2 = edge("edge-2");
    let mut source = ffmpeg_source(origin.addr, &id, &host, 120.0, 440);
    origin.wait_for_packets(&id, 50);
    // the page learns the fleet's nodes from the space JSON
    assert!(
        eventually(Duration::from_secs(15), || edge1.info(&id)["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == 3)),
        "{}",
        edge1.info(&id)
    );

    let mut child = std::process::Command::new("node")
        .arg(e2e.join("failover.mjs"))
        .arg(edge1.url(&format!("/spaces/{id}")))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("node");
    let mut events: Vec<serde_json::Value> = Vec::new();
    let stdout = child.stdout.take().expect("stdout");
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let Ok(line) = line else { break };
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            eprintln!("e2e: {line}");
            continue;
        };
        eprintln!("e2e event: {event}");
        if event["event"] == "playing" {
            assert!(
                event["src"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with(&edge1.url("")),
                "{event}"
            );
            edge1.kill9();
        }
        events.push(event);
    }
    let status = child.wait().expect("node");
    let _ = source.kill();
    let _ = source.wait();
    let last = events.last().cloned().unwrap_or_default();
    assert!(
        status.success() && last["event"] == "resumed",
        "e2e failed: {last}"
    );
    let (at, after) = (&last["at"], &last["after"]);
    let src = after["src"].as_str().unwrap_or("");
    assert!(
        src.starts_with(&edge2.url("")) || src.starts_with(&origin.url("")),
        "went on from another node: {after}"
    );
    assert!(src.contains("from="), "{after}");
    assert_eq!(at["seqGap"], 0, "no packet missed: {at}");
    assert_eq!(after["seqGap"], 0, "no packet missed: {after}");
    assert_eq!(after["resumes"], 1, "{after}");
    // the worklet played on what it held while the stream moved
    assert_eq!(after["engine"], "webaudio");
    let stall_ms = after["stallMs"].as_f64().unwrap_or(f64::MAX)
        - last["before"]["stallMs"].as_f64().unwrap_or(0.0);
    assert!(
        stall_ms < 3000.0,
        "silent {stall_ms} ms around the switch: {after}"
    );
    eprintln!("page failover: {stall_ms} ms silent around the switch; {after}");
    let wav = std::fs::read(last["wav"].as_str().expect("wav")).expect("wav");
    let samples: Vec<i16> = wav[44..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    let _ = std::fs::remove_file(last["wav"].as_str().unwrap_or(""));
    let (r440, r1000) = (
        tone_presence(&samples, 440.0),
        tone_presence(&samples, 1000.0),
    );
    assert!(
        r440 > 0.5 && r1000 < 0.1,
        "after the switch the page played 440 Hz {r440:.3}, 1 kHz {r1000:.3}"
    );
}
