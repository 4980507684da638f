//! Every bad input a source or client can send: answered clearly, and the
//! server, its listeners and the recording carry on unharmed.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

fn put(s: &Server, id: &str, auth: &str, body: &[u8]) -> Response {
    let mut req = format!(
        "PUT /spaces/{id}/source HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: audio/ogg\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    raw_request(s.addr, &req, Duration::from_secs(20))
}

fn vorbis_in_ogg() -> Vec<u8> {
    require_tool("ffmpeg");
    let out = Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=1",
            "-c:a",
            "libvorbis",
            "-f",
            "ogg",
            "-",
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("ffmpeg");
    assert!(out.status.success() && !out.stdout.is_empty());
    out.stdout
}

#[test]
fn bad_sources_are_refused_or_cut_and_nothing_else_is_disturbed() {
    let s = Server::start(&["--source-stall-ms", "1000"]);
    let (id, host) = s.live_space("Bad sources");
    let auth = format!("Bearer {host}");
    // a listener stays connected through every bad source
    let mut listener = TcpStream::connect(s.addr).unwrap();
    listener
        .write_all(format!("GET /spaces/{id}/live.opus HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();

    // the stream starts with good audio: 100 packets
    let good = synthetic_ogg_opus(100, 60);
    let r = put(&s, &id, &auth, &good);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["packets"], 100);

    // credentials
    let r = put(&s, &id, "Bearer nonsense", &good);
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    let other = s.token("speaker", Some("elsewhere"), "1h");
    let r = put(&s, &id, &format!("Bearer {other}"), &good);
    assert_eq!(r.status, 403, "{}", r.text());
    let listener_token = s.token("listener", Some(&id), "1h");
    let r = put(&s, &id, &format!("Bearer {listener_token}"), &good);
    assert_eq!(r.status, 403);

    // not Ogg at all, WAV, Ogg but Vorbis
    let r = put(
        &s,
        &id,
        &auth,
        b"hello, this is definitely not an ogg stream at all",
    );
    assert_eq!(r.status, 415, "{}", r.text());
    let r = put(
        &s,
        &id,
        &auth,
        b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00",
    );
    assert_eq!(r.status, 415);
    assert!(r.text().contains("WAV"), "{}", r.text());
    let r = put(&s, &id, &auth, &vorbis_in_ogg());
    assert_eq!(r.status, 415);
    assert!(r.text().contains("Vorbis"), "{}", r.text());

    // a corrupted page: the packets before it are kept, the rest refused
    let mut corrupt = synthetic_ogg_opus(50, 60);
    let at = corrupt.len() - 10 * 88 + 40; // in the payload of the 41st audio page (88 bytes each)
    corrupt[at] ^= 0x40;
    let r = put(&s, &id, &auth, &corrupt);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("checksum"), "{}", r.text());

    // a packet continued across pages without end
    let mut huge = synthetic_ogg_opus(0, 60);
    let body = vec![0u8; 255 * 255];
    for seq in 2..6u32 {
        let h = tribune_media::ogg_page::PageHeader {
            flags: 0,
            granule: u64::MAX,
            serial: 77,
            sequence: seq,
        };
        let mut page = bytes::BytesMut::new();
        tribune_media::ogg_page::write_raw_page(&mut page, h, &[255u8; 255], &[&body]);
        huge.extend_from_slice(&page);
    }
    let r = put(&s, &id, &auth, &huge);
    assert_eq!(r.status, 413, "{}", r.text());

    // an invalid Opus packet (code 3 with zero frames)
    let mut bad_opus = bytes::BytesMut::from(&synthetic_ogg_opus(0, 60)[..]);
    let h = tribune_media::ogg_page::PageHeader {
        flags: 0,
        granule: 960,
        serial: 77,
        sequence: 2,
    };
    tribune_media::ogg_page::write_page(&mut bad_opus, h, &[&[(31 << 3) | 3, 0]]);
    let r = put(&s, &id, &auth, &bad_opus);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("Opus"), "{}", r.text());

    // a body that stalls is cut at the stall deadline
    let mut sock = TcpStream::connect(s.addr).unwrap();
    sock.write_all(format!("PUT /spaces/{id}/source HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 100000\r\n\r\n").as_bytes()).unwrap();
    sock.write_all(&good[..500]).unwrap();
    let started = Instant::now();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    let _ = sock.read_to_end(&mut buf);
    let waited = started.elapsed();
    let r = parse_response(&buf).expect("a response to the stalled source");
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "cut after {waited:?}"
    );

    // a second source while one is connected: 409, the first is untouched
    let mut first = TcpStream::connect(s.addr).unwrap();
    first
        .write_all(
            format!("PUT /spaces/{id}/source HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    first.write_all(&good[..200]).unwrap();
    assert!(eventually(Duration::from_secs(5), || {
        s.info(&id)["source_connected"] == true
    }));
    let r = put(&s, &id, &auth, &good);
    assert_eq!(r.status, 409);
    assert!(r.text().contains("already connected"));
    drop(first);
    assert!(eventually(Duration::from_secs(5), || {
        s.info(&id)["source_connected"] == false
    }));

    // the listener is still connected after all of that
    assert_eq!(s.info(&id)["listeners"], 1);

    // a real ffmpeg source still works, and the recording decodes cleanly
    s.publish(&id, &host, 1.0, 440);
    s.end_space(&id, &host);
    let rec = s.replay(&id);
    let pages = ogg_pages(&rec).len();
    assert!(pages > 30, "{pages} pages");
    let m = s.metrics();
    assert!(
        metric(&m, "tribune_source_rejects_total", "auth") >= 3.0,
        "{m}"
    );
    assert!(
        metric(&m, "tribune_source_sessions_total", "stalled") >= 1.0,
        "{m}"
    );
    assert!(
        metric(&m, "tribune_source_sessions_total", "bad_stream") >= 5.0,
        "{m}"
    );

    // sources for spaces that are not live
    let r = put(&s, &id, &auth, &good);
    assert_eq!(r.status, 410);
    let r = put(&s, &id.replace(|_| true, "z"), &auth, &good);
    assert!(r.status == 403 || r.status == 404, "{}", r.status);
}

#[test]
fn malformed_and_abusive_requests_get_4xx_and_are_closed() {
    let s = Server::start(&["--header-timeout-ms", "1000"]);
    // garbage instead of HTTP
    let r = raw_request(
        s.addr,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(r.status, 400);
    // an oversized head
    let mut big = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..400 {
        big.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "a".repeat(40)).as_bytes());
    }
    let r = raw_request(s.addr, &big, Duration::from_secs(5));
    assert_eq!(r.status, 431);
    // slowloris: a head that never finishes is closed at the deadline
    let mut slow = TcpStream::connect(s.addr).unwrap();
    slow.write_all(b"GET /spaces/x/live.opus HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        started.elapsed()
    );
    assert_eq!(parse_response(&buf).unwrap().status, 408);
    // unknown endpoints and methods answer in JSON
    let r = request(s.addr, "GET", "/nothing/here", &[], None);
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].is_string());
    let r = request(s.addr, "DELETE", "/api/spaces", &[], None);
    assert_eq!(r.status, 405);
    // and the server still serves
    assert_eq!(request(s.addr, "GET", "/healthz", &[], None).status, 200);
}
