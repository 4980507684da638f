//! Holding the door: connection caps, join rates, the waiting room, the
//! reserved lane. Each defense tried against the real binary.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use support::*;

fn open_listener(s: &Server, id: &str, query: &str) -> TcpStream {
    let mut sock = TcpStream::connect(s.addr).unwrap();
    sock.write_all(
        format!("GET /spaces/{id}/live.opus{query} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
    .unwrap();
    sock
}

/// Reads a refusal (a complete response followed by close).
fn answer(mut sock: TcpStream) -> Response {
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let _ = sock.read_to_end(&mut buf);
    parse_response(&buf).expect("an answer")
}

#[test]
fn the_connection_after_the_per_ip_cap_is_refused() {
    let s = Server::start(&["--per-ip-connections", "3"]);
    // three idle connections from 127.0.0.1 fill its allowance
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(s.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let r = raw_request(
        s.addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(
        r.text().contains("too many open connections"),
        "{}",
        r.text()
    );
    assert!(r.header("retry-after").is_some());
    drop(held);
    assert!(eventually(Duration::from_secs(3), || {
        request(s.addr, "GET", "/healthz", &[], None).status == 200
    }));
    assert!(
        metric(
            &s.metrics(),
            "tribune_connections_refused_total",
            "ip_connections"
        ) >= 1.0
    );
}

#[test]
fn joins_faster_than_the_per_ip_rate_are_told_to_slow_down() {
    let s = Server::start(&["--joins-per-ip", "1", "--join-burst", "2"]);
    let (id, _host) = s.live_space("Rate");
    let _a = open_listener(&s, &id, "");
    let _b = open_listener(&s, &id, "");
    assert!(eventually(Duration::from_secs(3), || s.info(&id)
        ["listeners"]
        == 2));
    let r = answer(open_listener(&s, &id, ""));
    assert_eq!(r.status, 429, "{}", r.text());
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry));
    assert_eq!(s.info(&id)["listeners"], 2);
}

#[test]
fn the_waiting_room_admits_in_order_and_early_returns_lose_their_place() {
    let s = Server::start(&["--max-listeners", "1", "--admit-per-sec", "50"]);
    let (id, _host) = s.live_space("Queue");
    let first = open_listener(&s, &id, "");
    assert!(eventually(Duration::from_secs(3), || s.info(&id)
        ["listeners"]
        == 1));
    let b = answer(open_listener(&s, &id, "")).json();
    let c = answer(open_listener(&s, &id, "")).json();
    assert_eq!(b["waiting_room"]["position"], 1, "{b}");
    assert_eq!(c["waiting_room"]["position"], 2, "{c}");
    let b_ticket = b["waiting_room"]["ticket"].as_str().unwrap().to_string();
    let c_ticket = c["waiting_room"]["ticket"].as_str().unwrap().to_string();

    // C comes straight back, ignoring Retry-After: it goes to the back
    let c2 = answer(open_listener(&s, &id, &format!("?ticket={c_ticket}"))).json();
    assert_eq!(c2["waiting_room"]["lost_place"], true, "{c2}");
    assert_eq!(c2["waiting_room"]["position"], 2);
    let c_ticket = c2["waiting_room"]["ticket"].as_str().unwrap().to_string();

    // a forged ticket is refused before any listener state is allocated
    let forged = format!("{}x", &b_ticket[..b_ticket.len() - 1]);
    let r = answer(open_listener(&s, &id, &format!("?ticket={forged}")));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(s.info(&id)["listeners"], 1);

    // the first listener leaves; B honours Retry-After and is admitted first
    drop(first);
    assert!(eventually(Duration::from_secs(3), || s.info(&id)
        ["listeners"]
        == 0));
    std::thread::sleep(Duration::from_millis(1_600));
    let mut c_early = open_listener(&s, &id, &format!("?ticket={c_ticket}"));
    let mut head = [0u8; 12];
    c_early
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    c_early.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 503", "C must not pass B");
    let mut b_sock = open_listener(&s, &id, &format!("?ticket={b_ticket}"));
    b_sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    b_sock.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "B is admitted in order");
    assert!(eventually(Duration::from_secs(3), || s.info(&id)
        ["listeners"]
        == 1));
    let m = s.metrics();
    assert!(
        metric(&m, "tribune_listener_rejects_total", "waiting_room_early") >= 1.0,
        "{m}"
    );
    assert!(
        metric(&m, "tribune_listener_rejects_total", "bad_ticket") >= 1.0,
        "{m}"
    );
}

#[test]
fn browsers_get_a_waiting_room_page_and_pages_get_a_pass() {
    let s = Server::start(&["--max-listeners", "1"]);
    let (id, _host) = s.live_space("Pages");
    // the page asks first and gets a pass that holds the only slot
    let r = request(
        s.addr,
        "GET",
        &format!("/api/spaces/{id}/admission"),
        &[],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let live = r.json()["live"].as_str().unwrap().to_string();
    assert!(live.contains("?ticket="));
    // the slot is held: someone else waits, and a browser gets HTML
    let r = request(
        s.addr,
        "GET",
        &format!("/spaces/{id}/live.opus"),
        &[("Accept", "text/html")],
        None,
    );
    assert_eq!(r.status, 503);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(
        r.text().contains("You're in line") && r.text().contains("replay"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("http-equiv=refresh"));
    let r = request(
        s.addr,
        "GET",
        &format!("/api/spaces/{id}/admission"),
        &[],
        None,
    );
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["state"], "waiting");
    // and where to listen meanwhile: the HLS tier, a few seconds behind
    assert!(
        r.json()["hls"]
            .as_str()
            .is_some_and(|u| u.ends_with(&format!("/spaces/{id}/hls/master.m3u8"))),
        "{}",
        r.text()
    );
    // the pass holder opens the stream
    let path = live.split_once(&s.addr.to_string()).unwrap().1.to_string();
    let (p, q) = path.split_once('?').unwrap();
    let mut sock = TcpStream::connect(s.addr).unwrap();
    sock.write_all(format!("GET {p}?{q} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut head = [0u8; 12];
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
}

#[test]
fn the_reserved_lane_stays_open_for_sources_during_a_flood() {
    let s = Server::start(&[
        "--per-ip-connections",
        "2",
        "--reserved-listen",
        "127.0.0.1:0",
    ]);
    let reserved = s.reserved.expect("reserved address printed");
    let (id, host) = s.live_space("Lanes");
    // the flood: this address's public allowance is used up (retried until
    // the set-up's own API connections have closed)
    let mut _flood: Vec<TcpStream> = Vec::new();
    let flooded = eventually(Duration::from_secs(5), || {
        _flood = (0..2)
            .map(|_| TcpStream::connect(s.addr).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let healthz = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        raw_request(s.addr, healthz, Duration::from_secs(5)).status == 429
    });
    assert!(flooded, "the public port never refused 127.0.0.1");
    // a source still connects, on the reserved lane, at once
    let started = std::time::Instant::now();
    let audio = synthetic_ogg_opus(25, 60);
    let mut req = format!("PUT /spaces/{id}/source HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {host}\r\nContent-Length: {}\r\n\r\n", audio.len()).into_bytes();
    req.extend_from_slice(&audio);
    let r = raw_request(reserved, &req, Duration::from_secs(5));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(1));
    // the API works there too; listening does not
    let r = request(reserved, "GET", &format!("/api/spaces/{id}"), &[], None);
    assert_eq!(r.json()["packets"], 25);
    let r = request(
        reserved,
        "GET",
        &format!("/spaces/{id}/live.opus"),
        &[],
        None,
    );
    assert_eq!(r.status, 403);
}

#[test]
fn private_spaces_check_the_token_before_anything_is_allocated() {
    let s = Server::start(&[]);
    let admin = s.token("admin", None, "1h");
    let r = request(
        s.addr,
        "POST",
        "/api/spaces",
        &[("Authorization", &format!("Bearer {admin}"))],
        Some(r#"{"title":"Members only","private":true}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let host = r.json()["host_token"].as_str().unwrap().to_string();
    request(
        s.addr,
        "POST",
        &format!("/api/spaces/{id}/start"),
        &[("Authorization", &format!("Bearer {host}"))],
        None,
    );

    let r = answer(open_listener(&s, &id, ""));
    assert_eq!(r.status, 401, "{}", r.text());
    // forged: a well-formed listener token signed elsewhere
    let claims = tribune_core::token::Claims::new(
        "x",
        tribune_core::token::Role::Listener,
        Some(&id),
        1_700_000_000,
        1_000_000_000,
    );
    // signed with a key of its own (EdDSA), as any outsider can
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let der = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(&rng).unwrap();
    let outsider = tribune_core::token::Signer::from_pkcs8(der.as_ref()).unwrap();
    let forged = tribune_core::token::sign(&claims, &outsider).unwrap();
    let r = answer(open_listener(&s, &id, &format!("?token={forged}")));
    assert_eq!(r.status, 401);
    assert!(r.text().contains("signature"), "{}", r.text());
    // expired, and for another space
    let expired = s.token("listener", Some(&id), "1s");
    let other = s.token("listener", Some("another"), "1h");
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(
        answer(open_listener(&s, &id, &format!("?token={expired}"))).status,
        401
    );
    assert_eq!(
        answer(open_listener(&s, &id, &format!("?token={other}"))).status,
        403
    );
    // none of that reached the waiting room or the listener count
    assert_eq!(s.info_as(&id, &host)["listeners"], 0);
    let m = s.metrics();
    assert!(
        metric(&m, "tribune_listener_rejects_total", "token_invalid") >= 3.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "tribune_listener_rejects_total", "waiting_room"),
        0.0
    );
    // a valid listener token gets in, by query or by header
    let good = s.token("listener", Some(&id), "1h");
    let mut sock = open_listener(&s, &id, &format!("?token={good}"));
    let mut head = [0u8; 12];
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let mut sock = TcpStream::connect(s.addr).unwrap();
    sock.write_all(format!("GET /spaces/{id}/live.opus HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {good}\r\n\r\n").as_bytes())
    .unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    assert!(eventually(Duration::from_secs(3), || s.info_as(&id, &host)
        ["listeners"]
        == 2));
}

#[test]
fn a_stream_asked_for_on_a_kept_alive_connection_keeps_its_query() {
    // the page's pass, a private space's token and `from` ride on the query:
    // the redirect to a fresh connection must carry them along
    let s = Server::start(&[]);
    let mut sock = TcpStream::connect(s.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // the first answer, whole (head and its Content-Length of body)
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let first_len = loop {
        let n = sock.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before the first answer");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let body = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if buf.len() >= end + 4 + body {
            break end + 4 + body;
        }
    };
    assert!(
        buf.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
    sock.write_all(b"GET /spaces/abc/live.opus?ticket=T.1&from=5 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let _ = sock.read_to_end(&mut buf);
    let second = String::from_utf8_lossy(&buf[first_len..]).to_ascii_lowercase();
    assert!(second.starts_with("http/1.1 307"), "{second}");
    assert!(
        second.contains("location: /spaces/abc/live.opus?ticket=t.1&from=5\r\n"),
        "{second}"
    );
}
