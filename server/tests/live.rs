//! Live listening and replay with real ffmpeg on both ends.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use support::*;
use tribune_media::ogg_page::FLAG_BOS;

#[test]
fn a_listener_hears_the_whole_space_and_the_replay_matches() {
    let s = Server::start(&[]);
    let (id, host) = s.live_space("Live and replay");
    let listener = ffmpeg_decode(&s.url(&format!("/spaces/{id}/live.opus")));
    assert!(eventually(Duration::from_secs(5), || {
        s.info(&id)["listeners"] == 1
    }));
    let source = ffmpeg_source(s.addr, &id, &host, 4.0, 440);
    let out = source.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "source failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // while live, the replay URL already plays from the start
    let catch_up = finish_decode(ffmpeg_decode(&s.url(&format!("/spaces/{id}/replay.opus"))));
    assert!(catch_up.success, "{}", catch_up.errors);
    assert!(
        catch_up.seconds() > 3.0,
        "catch-up had {} s",
        catch_up.seconds()
    );

    let r = s.end_space(&id, &host);
    assert_eq!(r.status, 200, "{}", r.text());
    let live = finish_decode(listener);
    assert!(
        live.success && live.errors.is_empty(),
        "live decode errors: {}",
        live.errors
    );
    let replay = finish_decode(ffmpeg_decode(&s.url(&format!("/spaces/{id}/replay.opus"))));
    assert!(
        replay.success && replay.errors.is_empty(),
        "replay decode errors: {}",
        replay.errors
    );

    assert!(
        (live.seconds() - 4.0).abs() < 0.1,
        "live lasted {} s",
        live.seconds()
    );
    assert!(
        (replay.seconds() - live.seconds()).abs() < 0.1,
        "replay {} s vs live {} s",
        replay.seconds(),
        live.seconds()
    );
    // it is the tone that was sent, not noise
    assert!(
        tone_ratio(&live.samples, 440.0) > 0.8,
        "live is not a 440 Hz tone"
    );
    assert!(
        tone_ratio(&replay.samples, 440.0) > 0.8,
        "replay is not a 440 Hz tone"
    );

    // Range requests on the finished recording
    let r = request(
        s.addr,
        "GET",
        &format!("/spaces/{id}/replay.opus"),
        &[("Range", "bytes=0-3")],
        None,
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"OggS");
    assert_eq!(r.header("content-type"), Some("audio/ogg"));
    let m = s.metrics();
    assert!(
        metric(&m, "tribune_listener_joins_total", &id) >= 1.0,
        "{m}"
    );
    assert!(
        metric(&m, "tribune_ingest_packets_total", &id) >= 190.0,
        "{m}"
    );
    assert!(
        metric(&m, "tribune_recording_bytes_total", &id) > 10_000.0,
        "{m}"
    );
    assert!(
        metric(&m, "tribune_listener_disconnects_total", "space_ended") >= 1.0,
        "{m}"
    );
    assert!(m.contains("tribune_recording_fsync_seconds"), "{m}");
    assert!(metric(&m, "tribune_bytes_out_total", &id) > 10_000.0, "{m}");
}

/// Reads a live stream's Ogg pages from a raw socket until the server closes.
fn capture_live(addr: std::net::SocketAddr, id: &str) -> std::thread::JoinHandle<Vec<u8>> {
    let id = id.to_string();
    std::thread::spawn(move || {
        let mut sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        sock.write_all(format!("GET /spaces/{id}/live.opus HTTP/1.0\r\n\r\n").as_bytes())
            .unwrap();
        let mut buf = Vec::new();
        let _ = sock.read_to_end(&mut buf);
        let res = parse_response(&buf).expect("response");
        assert_eq!(res.status, 200);
        assert_eq!(res.header("content-type"), Some("audio/ogg"));
        res.body
    })
}

struct PageInfo {
    sequence: u32,
    granule: u64,
    flags: u8,
}

fn pages(data: &[u8]) -> Vec<PageInfo> {
    ogg_pages(data)
        .into_iter()
        .map(|p| PageInfo {
            sequence: p.header.sequence,
            granule: p.header.granule,
            flags: p.header.flags,
        })
        .collect()
}

#[test]
fn a_source_that_reconnects_continues_the_same_track() {
    let s = Server::start(&[]);
    let (id, host) = s.live_space("Reconnect");
    let capture = capture_live(s.addr, &id);
    s.publish(&id, &host, 2.0, 440);
    std::thread::sleep(Duration::from_millis(500));
    s.publish(&id, &host, 2.0, 660);
    let info = s.info(&id);
    // two 2 s sources of 20 ms packets (libopus adds one for its pre-skip)
    let packets = info["packets"].as_u64().unwrap();
    assert!((200..=204).contains(&packets), "{info}");
    let ended = s.end_space(&id, &host).json();
    // the totals outlive the live counters
    assert_eq!(ended["packets"], packets, "{ended}");
    assert_eq!(ended["duration_ms"], packets * 20, "{ended}");
    assert_eq!(s.info(&id)["packets"], packets);

    let body = capture.join().unwrap();
    let ps = pages(&body);
    assert_eq!(ps[0].flags & FLAG_BOS, FLAG_BOS);
    assert_eq!(ps[0].sequence, 0);
    assert_eq!(ps[1].sequence, 1);
    // one listener connection across both sources: audio pages contiguous,
    // granules strictly increasing by whole groups, no restart at zero
    let audio = &ps[2..];
    assert!(audio.len() >= 39, "{} audio pages", audio.len());
    for w in audio.windows(2) {
        assert_eq!(w[1].sequence, w[0].sequence + 1);
        assert!(w[1].granule > w[0].granule);
    }
    assert_eq!(audio.last().unwrap().granule, packets * 960);

    // and the recording is the same stream: one continuous granule timeline
    let r = request(
        s.addr,
        "GET",
        &format!("/spaces/{id}/replay.opus"),
        &[],
        None,
    );
    let rec = pages(&r.body);
    assert_eq!(rec.len(), ps.len());
    assert_eq!(rec.last().unwrap().granule, packets * 960);
    let replay = finish_decode(ffmpeg_decode(&s.url(&format!("/spaces/{id}/replay.opus"))));
    assert!(replay.errors.is_empty(), "{}", replay.errors);
    let half = replay.samples.len() / 2;
    let (a, b) = (
        tone_ratio(&replay.samples[..half - 4800], 440.0),
        tone_ratio(&replay.samples[half + 4800..], 660.0),
    );
    assert!(
        a > 0.8 && b > 0.8,
        "tone ratios {a} {b}, {} samples",
        replay.samples.len()
    );
}

#[test]
fn listeners_joining_late_get_a_burst_of_about_one_second() {
    let s = Server::start(&[]);
    let (id, host) = s.live_space("Burst");
    let source = ffmpeg_source(s.addr, &id, &host, 6.0, 440);
    s.wait_for_packets(&id, 150);
    let mut sock = TcpStream::connect(s.addr).unwrap();
    sock.write_all(format!("GET /spaces/{id}/live.opus HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    // the head, the header pages and the burst leave in one write: its
    // first byte may take a while on a loaded machine, the rest follows at
    // once, and the next flush (200 ms later) is not part of the burst
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 65536];
    let n = sock.read(&mut buf).unwrap();
    let mut got = buf[..n].to_vec();
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    while let Ok(n) = sock.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let res = parse_response(&got).unwrap();
    assert_eq!(res.header("transfer-encoding"), Some("chunked"));
    let ps = pages(&res.body);
    let audio: Vec<&PageInfo> = ps.iter().filter(|p| p.sequence >= 2).collect();
    let burst_ms = (audio.last().unwrap().granule - audio[0].granule + 4800) / 48;
    assert!((900..=1500).contains(&burst_ms), "burst of {burst_ms} ms");
    drop(source);
}

#[test]
fn listeners_get_clear_answers_for_every_state() {
    let s = Server::start(&["--max-listeners", "1"]);
    let admin = s.token("admin", None, "1h");
    let r = request(s.addr, "GET", "/spaces/nope/live.opus", &[], None);
    assert_eq!(r.status, 404);
    let r = request(
        s.addr,
        "POST",
        "/api/spaces",
        &[("Authorization", &format!("Bearer {admin}"))],
        Some(r#"{"title":"Later","scheduled_at":4102444800000}"#),
    );
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = request(s.addr, "GET", &format!("/spaces/{id}/live.opus"), &[], None);
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["scheduled_at"], 4_102_444_800_000u64);
    assert!(r.header("retry-after").is_some());

    let (live_id, host) = s.live_space("Full");
    let r = request(
        s.addr,
        "HEAD",
        &format!("/spaces/{live_id}/live.opus"),
        &[],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("audio/ogg"));
    // one listener fills this node; the next is told to come back
    let mut first = TcpStream::connect(s.addr).unwrap();
    first
        .write_all(
            format!("GET /spaces/{live_id}/live.opus HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || {
        s.info(&live_id)["listeners"] == 1
    }));
    // a load balancer asking the node's health is told it is full
    let r = request(s.addr, "GET", "/healthz", &[], None);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().starts_with("full"), "{}", r.text());
    let r = request(
        s.addr,
        "GET",
        &format!("/spaces/{live_id}/live.opus"),
        &[],
        None,
    );
    assert_eq!(r.status, 503);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry));
    assert!(r.json()["error"].as_str().unwrap().contains("capacity"));
    assert_eq!(r.json()["waiting_room"]["position"], 1, "{}", r.text());
    assert!(r.json()["replay"]
        .as_str()
        .unwrap()
        .ends_with("/replay.opus"));
    drop(first);

    s.end_space(&live_id, &host);
    let r = request(
        s.addr,
        "GET",
        &format!("/spaces/{live_id}/live.opus"),
        &[],
        None,
    );
    assert_eq!(r.status, 410);
    assert!(r.json()["replay"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/spaces/{live_id}/replay.opus")));
    // nothing was ever sent: no recording, said clearly
    let r = request(
        s.addr,
        "GET",
        &format!("/spaces/{live_id}/replay.opus"),
        &[],
        None,
    );
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().is_some());
    let m = s.metrics();
    assert!(
        metric(&m, "tribune_listener_rejects_total", "waiting_room") >= 1.0,
        "{m}"
    );
    assert!(
        metric(&m, "tribune_listener_rejects_total", "not_live") >= 1.0,
        "{m}"
    );
}

#[test]
fn a_reader_that_cannot_keep_up_is_cut_and_counted() {
    let s = Server::start(&["--slow-listener-ms", "1000"]);
    let (id, host) = s.live_space("Slow reader");
    // a listener that never reads
    let mut stuck = TcpStream::connect(s.addr).unwrap();
    stuck
        .write_all(format!("GET /spaces/{id}/live.opus HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    // and one that does, to show the others are unaffected
    let healthy = capture_live(s.addr, &id);
    assert!(eventually(Duration::from_secs(5), || {
        s.info(&id)["listeners"] == 2
    }));
    // far more than the listener's socket buffers hold (32 KiB send buffer),
    // as fast as the source can send it
    let body = synthetic_ogg_opus(400, 1_000);
    let mut head = format!("PUT /spaces/{id}/source HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {host}\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    head.extend_from_slice(&body);
    let r = raw_request(s.addr, &head, Duration::from_secs(60));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        eventually(Duration::from_secs(10), || {
            metric(
                &s.metrics(),
                "tribune_listener_disconnects_total",
                "slow_reader",
            ) >= 1.0
        }),
        "{}",
        s.metrics()
    );
    assert_eq!(s.info(&id)["listeners"], 1);
    s.end_space(&id, &host);
    let got = healthy.join().unwrap();
    assert!(pages(&got).len() > 70, "{} pages", pages(&got).len());
    drop(stuck);
}

#[test]
fn legacy_source_method_and_chunked_uploads_are_accepted() {
    use base64::Engine;
    let s = Server::start(&[]);
    let (id, host) = s.live_space("Source protocols");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("source:{host}"));
    let audio = synthetic_ogg_opus(50, 60);

    // Icecast's legacy SOURCE: answered at once, body until the connection closes
    let mut sock = TcpStream::connect(s.addr).unwrap();
    sock.write_all(format!("SOURCE /spaces/{id}/source HTTP/1.0\r\nAuthorization: Basic {basic}\r\nContent-Type: audio/ogg\r\nice-name: test\r\n\r\n").as_bytes()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = [0u8; 64];
    let n = sock.read(&mut answer).unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.0 200 OK"),
        "{:?}",
        String::from_utf8_lossy(&answer[..n])
    );
    sock.write_all(&audio).unwrap();
    drop(sock);
    assert!(eventually(Duration::from_secs(5), || {
        let info = s.info(&id);
        info["packets"] == 50 && info["source_connected"] == false
    }));

    // a chunked PUT, as `curl -T -` sends it, split at awkward places
    let mut body = Vec::new();
    for piece in audio.chunks(333) {
        body.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        body.extend_from_slice(piece);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let mut req = format!("PUT /spaces/{id}/source HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {basic}\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n").into_bytes();
    req.extend_from_slice(&body);
    let raw = {
        let mut sock = TcpStream::connect(s.addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        sock.write_all(&req).unwrap();
        let mut buf = Vec::new();
        let _ = sock.read_to_end(&mut buf);
        buf
    };
    let text = String::from_utf8_lossy(&raw).into_owned();
    assert!(
        text.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK"),
        "{text}"
    );
    assert!(text.contains("\"packets\":50"), "{text}");
    let info = s.info(&id);
    assert_eq!(info["packets"], 100);
}

#[test]
fn a_listener_waiting_for_audio_gets_a_clean_end_when_the_space_ends() {
    let s = Server::start(&[]);
    let (id, host) = s.live_space("Never on air");
    let mut sock = TcpStream::connect(s.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock.write_all(format!("GET /spaces/{id}/live.opus HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || s.info(&id)
        ["listeners"]
        == 1));
    assert_eq!(s.end_space(&id, &host).status, 200);
    // the body ends (chunked terminator, then close) instead of hanging
    let mut buf = Vec::new();
    sock.read_to_end(&mut buf)
        .expect("the server closes the stream");
    let res = parse_response(&buf).expect("response");
    assert_eq!(res.status, 200);
    assert_eq!(res.header("transfer-encoding"), Some("chunked"));
    assert!(
        buf.ends_with(b"0\r\n\r\n"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
    assert!(eventually(Duration::from_secs(5), || s.info(&id)
        ["listeners"]
        == 0));
}
