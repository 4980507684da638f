//! Many nodes on one machine: an origin, an edge on it and an edge on the
//! edge. Each edge pulls the track once, resumes by seq after a drop, and
//! packages it into the origin's pages, byte for byte; listeners resume by
//! seq on any node; no edge can mint access.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use support::*;

/// Reads `live.opus` (with `query`) for `secs`: the X-Tribune-Seq header and
/// the body.
fn listen(addr: SocketAddr, id: &str, query: &str, secs: f64) -> (Option<u64>, Vec<u8>) {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    sock.write_all(format!("GET /spaces/{id}/live.opus{query} HTTP/1.0\r\n\r\n").as_bytes())
        .unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    while start.elapsed() < Duration::from_secs_f64(secs) {
        match sock.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
    }
    let res = parse_response(&buf).expect("a response");
    assert_eq!(res.status, 200, "{}", res.text());
    let seq = res.header("x-tribune-seq").map(|v| v.parse().unwrap());
    (seq, res.body)
}

/// Audio pages by page sequence number, and the packets' seqs they carry
/// (counted from the first seq the server announced).
fn pages_by_sequence(body: &[u8]) -> BTreeMap<u32, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut at = 0;
    for p in ogg_pages(body) {
        let bytes = body[at..at + p.len].to_vec();
        at += p.len;
        out.insert(p.header.sequence, bytes);
    }
    out
}

fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[test]
fn edges_relay_the_origins_pages_byte_for_byte_and_resume_by_seq() {
    // the origin holds 8 s: when the edge restarts, the space is older than
    // that, so what the edge first gets does not start at the track's start
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("origin.toml");
    std::fs::write(&config, "ring_ms = 8000\n").unwrap();
    let origin = Server::start(&["--config", config.to_str().unwrap()]);
    let (id, host) = origin.live_space("Fleet");
    let node = origin.token("node", None, "1h");
    let edge_dir = tempfile::tempdir().unwrap();
    let edge_addr = free_addr();
    let mut edge = Server::start_at(
        edge_dir.path(),
        &edge_addr,
        &["--upstream", &origin.url(""), "--node-token", &node],
    );
    let edge2 = Server::start(&["--upstream", &edge.url(""), "--node-token", &node]);
    let mut source = ffmpeg_source(origin.addr, &id, &host, 30.0, 440);
    origin.wait_for_packets(&id, 100);

    // the same seconds, heard on all three
    let threads: Vec<_> = [origin.addr, edge.addr, edge2.addr]
        .into_iter()
        .map(|addr| {
            let id = id.clone();
            std::thread::spawn(move || listen(addr, &id, "", 4.0))
        })
        .collect();
    let heard: Vec<(Option<u64>, Vec<u8>)> =
        threads.into_iter().map(|t| t.join().unwrap()).collect();
    let pages: Vec<BTreeMap<u32, Vec<u8>>> =
        heard.iter().map(|(_, b)| pages_by_sequence(b)).collect();
    // header pages, then audio pages: identical wherever both nodes have them
    let mut compared = 0;
    for (seq, bytes) in &pages[0] {
        for (node, other) in pages.iter().enumerate().skip(1) {
            if let Some(theirs) = other.get(seq) {
                assert_eq!(bytes, theirs, "page {seq} differs on node {node}");
                compared += 1;
            }
        }
    }
    assert!(compared > 2 * 30, "only {compared} pages in common");
    assert!(pages[2].len() > 30, "the edge of the edge relays too");
    for (node, (seq, _)) in heard.iter().enumerate() {
        assert!(
            seq.is_some(),
            "node {node} does not say where its stream starts"
        );
    }
    // the edges pulled the track once each (the origin relays once, to edge 1)
    let relays = metric(&origin.metrics(), "tribune_relays_total", "");
    assert_eq!(relays, 1.0, "{}", origin.metrics());

    // a listener resumes on another node at the seq it needs
    let (first, body) = listen(origin.addr, &id, "", 1.5);
    let first = first.unwrap();
    let got_pages = ogg_pages(&body);
    let packets: u64 = got_pages
        .iter()
        .filter(|p| p.header.sequence >= 2)
        .map(|p| p.packets_ending)
        .sum();
    let next = first + packets;
    let (resumed_at, body) = listen(edge2.addr, &id, &format!("?from={next}"), 1.5);
    assert_eq!(
        resumed_at,
        Some(next),
        "the edge of the edge resumes at that seq"
    );
    let resumed = ogg_pages(&body);
    let last_before = got_pages.last().unwrap().header.sequence;
    let first_after = resumed
        .iter()
        .find(|p| p.header.sequence >= 2)
        .unwrap()
        .header
        .sequence;
    assert_eq!(first_after, last_before + 1, "no page lost, none repeated");

    // the edge restarts (the relay link drops): edge 2 resumes by seq, with
    // no gap while the origin still holds what it missed (the restarted
    // edge holds nothing yet: it starts edge 2 at the seq edge 2 needs)
    assert!(
        origin.info(&id)["packets"].as_u64().unwrap() > 8 * 50,
        "the space is older than the origin's 8 s"
    );
    edge.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    edge = Server::start_at(
        edge_dir.path(),
        &edge_addr,
        &["--upstream", &origin.url(""), "--node-token", &node],
    );
    let (_, body) = listen(edge2.addr, &id, "", 4.0);
    let after = ogg_pages(&body);
    assert!(after.len() > 20);
    assert!(
        eventually(Duration::from_secs(10), || metric(
            &edge2.metrics(),
            "tribune_relay_reconnects_total",
            ""
        ) >= 1.0),
        "{}",
        edge2.metrics()
    );
    assert_eq!(
        metric(&edge2.metrics(), "tribune_relay_gaps_total", ""),
        0.0,
        "resumed with no gap"
    );
    // the end reaches every node
    let _ = source.kill();
    let _ = source.wait();
    let r = origin.end_space(&id, &host);
    assert_eq!(r.status, 200);
    assert!(eventually(Duration::from_secs(10), || edge2.info(&id)
        ["state"]
        == "ended"));
    drop(edge);
}

#[test]
fn the_relay_link_takes_only_node_tokens_and_no_edge_mints_access() {
    let origin = Server::start(&[]);
    let (id, host) = origin.live_space("Guarded");
    let node = origin.token("node", None, "1h");
    let listener = origin.mint(&id, &host, "listener", "l");
    let relay = |token: Option<&str>, query: &str| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let mut sock = TcpStream::connect(origin.addr).unwrap();
        let mut req = format!("GET /spaces/{id}/relay{query} HTTP/1.1\r\nHost: x\r\n");
        for (k, v) in &headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        sock.write_all(req.as_bytes()).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = sock.read(&mut buf).unwrap_or(0);
        parse_response(&buf[..n]).map_or(0, |r| r.status)
    };
    assert_eq!(relay(None, ""), 401);
    assert_eq!(relay(Some("garbage"), ""), 401);
    assert_eq!(relay(Some(&listener), ""), 403);
    assert_eq!(relay(Some(&node), "?from=banana"), 400);
    assert_eq!(relay(Some(&node), "?from=1&x=2"), 400);
    assert_eq!(relay(Some(&node), ""), 200);
    let r = request(
        origin.addr,
        "GET",
        "/spaces/nosuchspace1/relay",
        &[("Authorization", &format!("Bearer {node}"))],
        None,
    );
    assert_eq!(r.status, 404);

    // an edge with a wrong token does not start, and says why
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tribune"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(tempfile::tempdir().unwrap().path())
        .args(["--upstream", &origin.url(""), "--node-token", &listener])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused this node's token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // an edge verifies the origin's tokens but cannot sign any
    let edge = Server::start(&["--upstream", &origin.url(""), "--node-token", &node]);
    assert!(!edge.data.join("signing.key").exists());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tribune"))
        .args(["token", "--data"])
        .arg(&edge.data)
        .args(["--role", "admin"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "no key to sign with on an edge");
    let admin = origin.token("admin", None, "1h");
    let r = request(
        edge.addr,
        "POST",
        "/api/spaces",
        &[("Authorization", &format!("Bearer {admin}"))],
        Some(r#"{"title":"x"}"#),
    );
    assert_eq!(r.status, 421, "{}", r.text());
    // a token signed by another origin does not get in on the edge
    let other = Server::start(&[]);
    let (other_id, other_host) = other.live_space("Elsewhere");
    let foreign = other.mint(&other_id, &other_host, "listener", "x");
    let _ = other_id;
    let r = request(
        edge.addr,
        "GET",
        &format!("/api/spaces/{id}"),
        &[("Authorization", &format!("Bearer {foreign}"))],
        None,
    );
    assert_eq!(r.status, 200, "a public space reads without a token");
    // the origin's keys are public, and the edge republishes them
    let origin_keys = request(origin.addr, "GET", "/.well-known/jwks.json", &[], None).json();
    let edge_keys = request(edge.addr, "GET", "/.well-known/jwks.json", &[], None).json();
    assert_eq!(origin_keys, edge_keys);
    assert!(origin_keys["keys"][0]["x"].is_string());
    assert!(origin_keys["keys"][0].get("d").is_none(), "no private part");
}

#[test]
fn an_edge_of_several_upstreams_goes_on_from_the_next_when_its_upstream_dies() {
    let origin = Server::start(&[]);
    let (id, host) = origin.live_space("Two ways up");
    let node = origin.token("node", None, "1h");
    let mut mid = Server::start(&["--upstream", &origin.url(""), "--node-token", &node]);
    // the leaf's first choice takes the connection and never answers (a
    // hung node): it costs that upstream's own deadline, then the leaf
    // starts on the next. Held open here so no other socket takes its port.
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = hung.local_addr().unwrap();
    let upstreams = format!("http://{dead},{},{}", mid.url(""), origin.url(""));
    let leaf = Server::start(&["--upstream", &upstreams, "--node-token", &node]);
    let mut source = ffmpeg_source(origin.addr, &id, &host, 30.0, 440);
    origin.wait_for_packets(&id, 100);

    // a listener on the leaf hears on while the mid edge it pulls from dies
    let listener = {
        let (id, addr) = (id.clone(), leaf.addr);
        std::thread::spawn(move || listen(addr, &id, "", 9.0))
    };
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(
        metric(&mid.metrics(), "tribune_relays_total", ""),
        1.0,
        "the leaf pulls through the mid edge: {}",
        mid.metrics()
    );
    mid.kill9();
    let (_, body) = listener.join().unwrap();
    let pages = ogg_pages(&body);
    let sequences: Vec<u32> = pages.iter().map(|p| p.header.sequence).collect();
    for pair in sequences.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "no page lost, none repeated");
    }
    let audio: Vec<u64> = pages
        .iter()
        .filter(|p| p.header.sequence >= 2)
        .map(|p| p.header.granule)
        .collect();
    let heard_s = (audio.last().unwrap() - audio.first().unwrap()) as f64 / 48_000.0;
    assert!(heard_s > 6.0, "only {heard_s:.1} s of audio in 9 s");
    assert_eq!(
        metric(&leaf.metrics(), "tribune_relay_gaps_total", ""),
        0.0,
        "resumed on the origin with no gap: {}",
        leaf.metrics()
    );
    assert!(
        metric(&leaf.metrics(), "tribune_upstream_switches_total", "") >= 2.0,
        "from the dead address to the mid edge, then to the origin: {}",
        leaf.metrics()
    );
    assert!(metric(&origin.metrics(), "tribune_relays_total", "") >= 2.0);
    let _ = source.kill();
    let _ = source.wait();
}
