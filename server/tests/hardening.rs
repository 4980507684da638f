//! Regressions from trying the release binary as an attacker and an
//! unlucky operator would (issue 9): a restart that silenced live spaces,
//! a source faster than real time, private spaces readable by anyone, a
//! request-to-speak queue anyone could fill, a shared address that was a
//! ceiling, and the small ones.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

/// Reads `live.opus` for `secs` (HTTP/1.0: the body is the bare stream).
fn listen_for(addr: std::net::SocketAddr, id: &str, secs: u64) -> std::thread::JoinHandle<Vec<u8>> {
    let id = id.to_string();
    std::thread::spawn(move || {
        let mut sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        sock.write_all(format!("GET /spaces/{id}/live.opus HTTP/1.0\r\n\r\n").as_bytes())
            .unwrap();
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
        let res = parse_response(&buf).expect("a response");
        assert_eq!(res.status, 200, "{}", res.text());
        res.body
    })
}

fn audio_pages(body: &[u8]) -> usize {
    ogg_pages(body)
        .iter()
        .filter(|p| p.header.sequence >= 2)
        .count()
}

fn restart_keeps_the_space_audible(stop: fn(&mut Server)) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &[]);
    let (id, host) = s.live_space("Restarted");
    s.publish(&id, &host, 2.0, 440);
    stop(&mut s);

    let s = Server::start_in(dir.path(), &[]);
    assert_eq!(s.info(&id)["state"], "live");
    // one listener waits through the restart's silence, one comes later
    let early = listen_for(s.addr, &id, 8);
    std::thread::sleep(Duration::from_millis(300));
    // a source that sends its header pages in a write of their own, as
    // ffmpeg's icecast:// does, then audio
    let stream = synthetic_ogg_opus(100, 60);
    let pages = ogg_pages(&stream);
    let headers_len = pages[0].len + pages[1].len;
    let mut sock = TcpStream::connect(s.addr).unwrap();
    sock.write_all(
        format!(
            "PUT /spaces/{id}/source HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {host}\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    sock.write_all(&stream[..headers_len]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    sock.write_all(&stream[headers_len..]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(sock);
    assert!(eventually(Duration::from_secs(5), || s.info(&id)
        ["source_connected"]
        == false));
    // then real ffmpeg
    let source = ffmpeg_source(s.addr, &id, &host, 4.0, 660);
    std::thread::sleep(Duration::from_secs(2));
    let late = listen_for(s.addr, &id, 3);
    let out = source.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let early = early.join().unwrap();
    let late = late.join().unwrap();
    assert!(
        audio_pages(&early) >= 40,
        "a listener from before the source came back got {} bytes",
        early.len()
    );
    assert!(
        audio_pages(&late) >= 10,
        "late listener got {} bytes",
        late.len()
    );
    // both streams start with valid headers and decode
    for body in [&early, &late] {
        let pages = ogg_pages(body);
        assert_eq!(pages[0].header.sequence, 0);
        assert_eq!(pages[1].header.sequence, 1);
    }
    s.end_space(&id, &host);
    let replay = s.decode_replay(&id);
    assert!(
        replay.success && replay.errors.is_empty(),
        "{}",
        replay.errors
    );
    assert!(replay.seconds() > 5.0, "{} s recorded", replay.seconds());
    assert!(tone_presence(&replay.samples[48_000 * 3..], 660.0) > 0.5);
}

#[test]
fn after_kill_9_a_reconnected_source_reaches_listeners() {
    restart_keeps_the_space_audible(|s| s.kill9());
}

#[test]
fn after_a_clean_stop_a_reconnected_source_reaches_listeners() {
    restart_keeps_the_space_audible(|s| {
        let pid = s.child.id().to_string();
        let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(ok.success());
        let _ = s.child.wait();
    });
}

/// Starts a PUT source sending `body` as fast as the socket takes it.
fn blast(
    addr: std::net::SocketAddr,
    id: &str,
    host: &str,
    body: Vec<u8>,
) -> std::thread::JoinHandle<()> {
    let head = format!(
        "PUT /spaces/{id}/source HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {host}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    std::thread::spawn(move || {
        let mut sock = TcpStream::connect(addr).unwrap();
        sock.set_write_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let _ = sock.write_all(head.as_bytes());
        let _ = sock.write_all(&body);
    })
}

#[test]
fn a_source_faster_than_real_time_is_held_to_real_time() {
    let s = Server::start(&[]);
    let (id, host) = s.live_space("Flood source");
    let started = Instant::now();
    // ten minutes of audio, sent at once
    let _first = blast(s.addr, &id, &host, synthetic_ogg_opus(30_000, 200));
    std::thread::sleep(Duration::from_secs(3));
    let info = s.info(&id);
    let elapsed = started.elapsed().as_millis() as u64;
    let duration = info["duration_ms"].as_u64().unwrap();
    assert!(
        duration <= elapsed + 2_500,
        "{duration} ms of audio after {elapsed} ms"
    );
    assert!(
        duration >= 2_000,
        "the allowance passes at once: {duration} ms"
    );
    assert!(metric(&s.metrics(), "tribune_source_paced_ms_total", "") > 0.0);
    let rss_kb = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    };
    let rss = rss_kb(s.child.id());
    assert!(rss < 200_000, "resident memory {rss} KiB");
    // ending the space cuts the paced source at once
    let r = s.end_space(&id, &host);
    assert_eq!(r.status, 200);
    let info = s.info(&id);
    let elapsed = started.elapsed().as_millis() as u64;
    assert!(
        info["duration_ms"].as_u64().unwrap() <= elapsed + 2_500,
        "{info}"
    );

    // reconnecting does not buy a new allowance
    let (id, host) = s.live_space("Reconnecting flood");
    let started = Instant::now();
    for _ in 0..5 {
        let mut sock = TcpStream::connect(s.addr).unwrap();
        let body = synthetic_ogg_opus(100, 60);
        sock.write_all(format!("PUT /spaces/{id}/source HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {host}\r\n\r\n").as_bytes())
        .unwrap();
        let _ = sock.write_all(&body);
        std::thread::sleep(Duration::from_millis(400));
        drop(sock);
        assert!(eventually(Duration::from_secs(3), || s.info(&id)
            ["source_connected"]
            == false));
    }
    let elapsed = started.elapsed().as_millis() as u64;
    let duration = s.info(&id)["duration_ms"].as_u64().unwrap();
    assert!(
        duration <= elapsed + 2_500,
        "{duration} ms after {elapsed} ms"
    );
}

fn get(s: &Server, path: &str, token: Option<&str>) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    request(s.addr, "GET", path, &headers, None)
}

#[test]
fn a_private_space_is_private_everywhere() {
    let s = Server::start(&[]);
    let admin = s.token("admin", None, "1h");
    let r = request(
        s.addr,
        "POST",
        "/api/spaces",
        &[("Authorization", &format!("Bearer {admin}"))],
        Some(r#"{"title":"Board meeting","private":true}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let host = r.json()["host_token"].as_str().unwrap().to_string();
    let r = request(
        s.addr,
        "POST",
        &format!("/api/spaces/{id}/start"),
        &[("Authorization", &format!("Bearer {host}"))],
        None,
    );
    assert_eq!(r.status, 200);
    let listener = s.mint(&id, &host, "listener", "member");
    let elsewhere = s.token("listener", Some("someotherspc"), "1h");
    let reads = [
        format!("/api/spaces/{id}"),
        format!("/api/spaces/{id}/stage"),
        format!("/api/spaces/{id}/tracks"),
        format!("/api/spaces/{id}/admission"),
        format!("/spaces/{id}/replay.opus"),
        format!("/spaces/{id}/tracks/host.opus"),
    ];
    for path in &reads {
        let r = get(&s, path, None);
        assert_eq!(r.status, 401, "{path}: {}", r.text());
        assert!(r.text().contains("private"), "{path}: {}", r.text());
        assert!(!r.text().contains("Board meeting"));
        let r = get(&s, path, Some(&elsewhere));
        assert_eq!(r.status, 403, "{path} with another space's token");
    }
    // the title is nowhere in the list for strangers
    let list = get(&s, "/api/spaces", None);
    assert!(!list.text().contains(&id) && !list.text().contains("Board meeting"));
    let list = get(&s, "/api/spaces", Some(&admin));
    assert!(list.text().contains(&id));
    let list = get(&s, &format!("/api/spaces?token={listener}"), None);
    assert!(list.text().contains(&id));
    // live events without a token: refused before any stream starts
    let r = raw_request(
        s.addr,
        format!("GET /api/spaces/{id}/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .as_bytes(),
        Duration::from_secs(5),
    );
    assert_eq!(r.status, 401);
    // with the listener's token, by header or by query, every read works
    s.publish(&id, &host, 1.0, 440);
    for path in &reads[..5] {
        assert_eq!(get(&s, path, Some(&listener)).status, 200, "{path}");
        let sep = if path.contains('?') { '&' } else { '?' };
        let r = get(&s, &format!("{path}{sep}token={listener}"), None);
        assert_eq!(r.status, 200, "{path}?token=");
    }
    assert_eq!(get(&s, &reads[0], Some(&host)).status, 200);
    let mut events = TcpStream::connect(s.addr).unwrap();
    events
        .write_all(
            format!("GET /api/spaces/{id}/events?token={listener} HTTP/1.1\r\nHost: x\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    events
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut head = [0u8; 12];
    events.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // the page's admission hands out a stream URL that carries the token
    let r = get(
        &s,
        &format!("/api/spaces/{id}/admission?token={listener}"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let live = r.json()["live"].as_str().unwrap().to_string();
    assert!(live.contains("ticket=") && live.contains(&format!("token={listener}")));
    let path = live.split_once(&s.addr.to_string()).unwrap().1.to_string();
    let mut sock = TcpStream::connect(s.addr).unwrap();
    sock.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // replays of private spaces are never cached by shared caches
    let r = get(&s, &reads[4], Some(&listener));
    assert!(r.header("cache-control").unwrap().contains("private"));
}

fn ask(s: &Server, id: &str, name: &str) -> Response {
    request(
        s.addr,
        "POST",
        &format!("/api/spaces/{id}/stage/requests"),
        &[],
        Some(&format!(r#"{{"name":"{name}"}}"#)),
    )
}

#[test]
fn one_address_cannot_fill_the_request_queue_and_the_host_can_clear_it() {
    let s = Server::start(&["--joins-per-ip", "100", "--join-burst", "100"]);
    let (id, host) = s.live_space("Town hall");
    let auth = format!("Bearer {host}");
    let mut tickets = Vec::new();
    for i in 0..3 {
        let r = ask(&s, &id, &format!("Guest {i}"));
        assert_eq!(r.status, 201, "{}", r.text());
        tickets.push((
            r.json()["id"].as_str().unwrap().to_string(),
            r.json()["ticket"].as_str().unwrap().to_string(),
        ));
    }
    let r = ask(&s, &id, "Bot");
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("already waiting"), "{}", r.text());
    let stage = get(&s, &format!("/api/spaces/{id}/stage"), None).json();
    assert_eq!(stage["stage"]["pending_requests"], 3);
    assert_eq!(stage["stage"]["requests_open"], true);
    // the host clears the queue in one call; each asker learns the answer
    let r = request(
        s.addr,
        "DELETE",
        &format!("/api/spaces/{id}/stage/queue"),
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["declined"], 3);
    let (rid, ticket) = &tickets[0];
    let r = request(
        s.addr,
        "POST",
        &format!("/api/spaces/{id}/stage/requests/{rid}/token"),
        &[("Authorization", &format!("Bearer {ticket}"))],
        None,
    );
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["state"], "declined");
    // only the host clears or closes it
    let r = request(
        s.addr,
        "DELETE",
        &format!("/api/spaces/{id}/stage/queue"),
        &[("Authorization", &format!("Bearer {ticket}"))],
        None,
    );
    assert_eq!(r.status, 403);
    // closed: requests are refused with words, until the host reopens
    let r = request(
        s.addr,
        "POST",
        &format!("/api/spaces/{id}/stage/queue"),
        &[("Authorization", &auth)],
        Some(r#"{"open":false}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = ask(&s, &id, "Latecomer");
    assert_eq!(r.status, 409);
    assert!(r.text().contains("not taking requests"), "{}", r.text());
    request(
        s.addr,
        "POST",
        &format!("/api/spaces/{id}/stage/queue"),
        &[("Authorization", &auth)],
        Some(r#"{"open":true}"#),
    );
    assert_eq!(ask(&s, &id, "Latecomer").status, 201);
}

/// A page's way in: ask for a pass, then open the stream with it.
fn join_with_pass(s: &Server, id: &str) -> Result<TcpStream, Response> {
    let r = get(s, &format!("/api/spaces/{id}/admission"), None);
    if r.status != 200 {
        return Err(r);
    }
    let live = r.json()["live"].as_str().unwrap().to_string();
    let path = live.split_once(&s.addr.to_string()).unwrap().1.to_string();
    let mut sock = TcpStream::connect(s.addr).unwrap();
    sock.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = [0u8; 12];
    match sock.read_exact(&mut head) {
        Ok(()) if &head == b"HTTP/1.1 200" => Ok(sock),
        _ => {
            let mut rest = head.to_vec();
            let _ = sock.read_to_end(&mut rest);
            Err(parse_response(&rest).unwrap_or(Response {
                status: 0,
                headers: vec![],
                body: rest,
            }))
        }
    }
}

#[test]
fn a_crowd_behind_one_address_is_admitted_with_passes() {
    // a small per-address cap makes the crowd large in comparison
    let s = Server::start(&[
        "--per-ip-connections",
        "8",
        "--joins-per-ip",
        "40",
        "--join-burst",
        "40",
    ]);
    let (id, _host) = s.live_space("Campus");
    // plain players (no pass) stop at the address's cap
    let mut plain = Vec::new();
    let refused = loop {
        let mut sock = TcpStream::connect(s.addr).unwrap();
        sock.write_all(
            format!("GET /spaces/{id}/live.opus HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut head = [0u8; 12];
        sock.read_exact(&mut head).unwrap();
        if &head != b"HTTP/1.1 200" {
            break head;
        }
        plain.push(sock);
        assert!(plain.len() <= 8);
    };
    assert_eq!(&refused[9..12], b"429");
    assert_eq!(plain.len(), 8);
    drop(plain);
    assert!(eventually(Duration::from_secs(3), || s.info(&id)
        ["listeners"]
        == 0));
    // 60 pages behind the same address, each admitted in turn, all get in
    let mut crowd = Vec::new();
    for i in 0..60 {
        match join_with_pass(&s, &id) {
            Ok(sock) => crowd.push(sock),
            Err(r) => panic!("listener {i} refused: {} {}", r.status, r.text()),
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(eventually(Duration::from_secs(3), || s.info(&id)
        ["listeners"]
        == 60));
    // a pass cannot be replayed from the same address to grow it further
    let r = get(&s, &format!("/api/spaces/{id}/admission"), None);
    let live = r.json()["live"].as_str().unwrap().to_string();
    let path = live.split_once(&s.addr.to_string()).unwrap().1.to_string();
    let mut first = TcpStream::connect(s.addr).unwrap();
    first
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut second = TcpStream::connect(s.addr).unwrap();
    second
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    // either may be decided first (one may be accepted before its request
    // arrives): one is admitted, the other refused
    let mut answers = Vec::new();
    for sock in [&mut first, &mut second] {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut head = [0u8; 12];
        sock.read_exact(&mut head).unwrap();
        answers.push(String::from_utf8_lossy(&head[9..12]).into_owned());
    }
    answers.sort();
    assert_eq!(
        answers,
        ["200", "503"],
        "a used pass is not a second admission"
    );
}

#[test]
fn the_small_ones() {
    let s = Server::start(&[]);
    let (id, host) = s.live_space("Small ones");
    let admin = s.token("admin", None, "1h");

    // WHIP DELETE checks the token's space and role, not only its identity
    let other = s.token("speaker", Some("someotherspc"), "1h");
    let listener = s.mint(&id, &host, "listener", "speaker");
    for token in [&other, &listener] {
        let r = request(
            s.addr,
            "DELETE",
            &format!("/spaces/{id}/whip/1234"),
            &[("Authorization", &format!("Bearer {token}"))],
            None,
        );
        assert_eq!(r.status, 403, "{}", r.text());
    }

    // an unparsable SDP offer is answered in words, without internals
    let speaker = s.mint(&id, &host, "speaker", "ada");
    let r = request(
        s.addr,
        "POST",
        &format!("/spaces/{id}/whip"),
        &[
            ("Authorization", &format!("Bearer {speaker}")),
            ("Content-Type", "application/sdp"),
        ],
        Some("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\nm=audio nonsense\r\n"),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        !r.text().contains("0x") && !r.text().contains("Pointer"),
        "{}",
        r.text()
    );

    // titles with control characters are refused
    for title in [r#"A\u0000B"#, r#"line\nbreak"#, r#"bell\u0007"#] {
        let r = request(
            s.addr,
            "POST",
            "/api/spaces",
            &[("Authorization", &format!("Bearer {admin}"))],
            Some(&format!(r#"{{"title":"{title}"}}"#)),
        );
        assert_eq!(r.status, 400, "{title}: {}", r.text());
    }

    // token lifetimes are bounded
    let r = request(
        s.addr,
        "POST",
        &format!("/api/spaces/{id}/tokens"),
        &[("Authorization", &format!("Bearer {host}"))],
        Some(r#"{"role":"listener","ttl":"18446744073709551615"}"#),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let out = Command::new(env!("CARGO_BIN_EXE_tribune"))
        .args(["token", "--data"])
        .arg(&s.data)
        .args(["--role", "listener", "--ttl", "1000d"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("366 days"));

    // a source with two different lengths is refused (RFC 9112 §6.3)
    let body = synthetic_ogg_opus(5, 60);
    let mut req = format!(
        "PUT /spaces/{id}/source HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {host}\r\nContent-Length: {}\r\nContent-Length: 7\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let r = raw_request(s.addr, &req, Duration::from_secs(5));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("Content-Length"), "{}", r.text());

    // a Range in an unknown unit is ignored: the whole file
    s.publish(&id, &host, 0.5, 440);
    let whole = s.replay(&id);
    let r = request(
        s.addr,
        "GET",
        &format!("/spaces/{id}/replay.opus"),
        &[("Range", "items=0-5")],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.status);
    assert_eq!(r.body.len(), whole.len());
    let r = request(
        s.addr,
        "GET",
        &format!("/spaces/{id}/replay.opus"),
        &[("Range", "bytes=0-5")],
        None,
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, whole[..6]);
}
