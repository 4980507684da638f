//! The stage end to end with real WebRTC peers (str0m clients speaking
//! WHIP to the real binary, libopus microphones): the program mix heard
//! by listeners (decoded by ffmpeg), each speaker's mix-minus, the
//! recording and speaker tracks, request-to-speak and moderation, and
//! every refusal.

mod support;

use serde_json::Value;
use std::time::Duration;
use support::whip::{self, Signal};
use support::*;

fn stage(s: &Server, id: &str) -> Value {
    request(s.addr, "GET", &format!("/api/spaces/{id}/stage"), &[], None).json()["stage"].clone()
}

fn connected(s: &Server, id: &str) -> Vec<String> {
    stage(s, id)["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["connected"] == true)
        .map(|m| m["identity"].as_str().unwrap().to_string())
        .collect()
}

fn wait_connected(s: &Server, id: &str, n: usize) {
    let ok = eventually(Duration::from_secs(15), || connected(s, id).len() == n);
    assert!(ok, "expected {n} connected on stage: {}", stage(s, id));
}

fn tone(hz: f64) -> Signal {
    Signal::Tone { hz, amplitude: 0.4 }
}

fn post(s: &Server, path: &str, token: &str, body: Option<&str>) -> Response {
    let auth = format!("Bearer {token}");
    request(s.addr, "POST", path, &[("Authorization", &auth)], body)
}

#[test]
fn two_speakers_are_mixed_once_and_each_hears_only_the_other() {
    let s = Server::start(&[]);
    let (id, host) = s.live_space("Two voices");
    let ada = s.mint(&id, &host, "speaker", "ada");
    let grace = s.mint(&id, &host, "speaker", "grace");
    let a = whip::join(s.addr, &id, &ada, tone(440.0)).expect("ada joins");
    assert!(a.location.starts_with(&format!("/spaces/{id}/whip/")));
    let b = whip::join(s.addr, &id, &grace, tone(1000.0)).expect("grace joins");
    wait_connected(&s, &id, 2);
    s.wait_for_packets(&id, 100);

    let heard = s.listen_live(&id, 3);
    assert!(heard.success, "ffmpeg: {}", heard.errors);
    assert!(heard.seconds() >= 2.9, "heard {} s", heard.seconds());
    let (r440, r1000) = (
        tone_presence(&heard.samples, 440.0),
        tone_presence(&heard.samples, 1000.0),
    );
    assert!(
        r440 > 0.15 && r1000 > 0.15,
        "program 440 Hz {r440:.3}, 1 kHz {r1000:.3}"
    );

    // the speakers talk over each other at 0.4 each: the limiter keeps
    // the sum from clipping
    let peak = heard
        .samples
        .iter()
        .map(|x| x.unsigned_abs())
        .max()
        .unwrap();
    assert!(peak < 32_700, "program clipped: peak {peak}");

    std::thread::sleep(Duration::from_secs(1));
    let a_log = a.finish();
    let b_log = b.finish();
    for (name, log, own, other) in [
        ("ada", &a_log, 440.0, 1000.0),
        ("grace", &b_log, 1000.0, 440.0),
    ] {
        assert!(log.error.is_none(), "{name}: {:?}", log.error);
        assert!(log.frames_sent > 150, "{name} sent {}", log.frames_sent);
        // skip the first second: the other speaker may not have joined yet
        let tail = &log.received[log.received.len().min(48_000)..];
        assert!(
            tail.len() > 48_000,
            "{name} heard only {} samples back",
            tail.len()
        );
        let (own_r, other_r) = (tone_ratio(tail, own), tone_presence(tail, other));
        assert!(other_r > 0.3, "{name} hears the other at {other_r:.3}");
        assert!(
            own_r < 0.01,
            "{name} hears themself at {own_r:.4} (not a mix-minus)"
        );
    }

    // leaving with DELETE frees the stage at once
    let r = s.end_space(&id, &host);
    assert_eq!(r.status, 200, "{}", r.text());
    let decoded = s.decode_replay(&id);
    assert!(
        decoded.success && decoded.errors.is_empty(),
        "{}",
        decoded.errors
    );
    assert!(decoded.seconds() > 3.0, "replay {} s", decoded.seconds());
    assert!(
        tone_presence(&decoded.samples, 440.0) > 0.1
            && tone_presence(&decoded.samples, 1000.0) > 0.1
    );

    // and each speaker's own track is kept, unmixed
    let tracks = s.tracks(&id);
    assert_eq!(tracks.len(), 2, "{tracks:?}");
    for (t, own, other) in [(&tracks[0], 440.0, 1000.0), (&tracks[1], 1000.0, 440.0)] {
        let url = t["url"].as_str().unwrap();
        let decoded = finish_decode(ffmpeg_decode(&s.url(url)));
        assert!(
            decoded.success && decoded.errors.is_empty(),
            "{url}: {}",
            decoded.errors
        );
        assert!(decoded.seconds() > 3.0, "{url}: {} s", decoded.seconds());
        let (own_r, other_r) = (
            tone_presence(&decoded.samples, own),
            tone_ratio(&decoded.samples, other),
        );
        assert!(
            own_r > 0.5 && other_r < 0.01,
            "{url}: own {own_r:.3} other {other_r:.4}"
        );
    }
}

#[test]
fn bad_offers_and_tokens_get_clear_errors_and_disturb_nobody() {
    let s = Server::start(&[]);
    let (id, host) = s.live_space("Strict stage");
    let ada = s.mint(&id, &host, "speaker", "ada");
    let a = whip::join(s.addr, &id, &ada, tone(440.0)).expect("ada joins");
    wait_connected(&s, &id, 1);

    let (_, _, _, _, good) = whip::offer();
    let broken = whip::post_offer(s.addr, &id, &ada, "v=0\r\nthis is not sdp");
    assert_eq!(broken.status, 400, "{}", broken.text());
    assert!(
        broken.json()["error"].as_str().unwrap().contains("SDP"),
        "{}",
        broken.text()
    );

    let video_only = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtpmap:96 VP8/90000\r\n";
    let r = whip::post_offer(s.addr, &id, &ada, video_only);
    assert_eq!(r.status, 415, "{}", r.text());
    assert!(
        r.json()["error"].as_str().unwrap().contains("no audio"),
        "{}",
        r.text()
    );

    let other = s.live_space("Another space");
    let foreign = s.mint(&other.0, &other.1, "speaker", "mallory");
    let r = whip::post_offer(s.addr, &id, &foreign, &good);
    assert_eq!(r.status, 403, "{}", r.text());

    let r = whip::post_offer(s.addr, &id, "not-a-token", &good);
    assert_eq!(r.status, 401, "{}", r.text());
    let listener = s.mint(&id, &host, "listener", "lurker");
    let r = whip::post_offer(s.addr, &id, &listener, &good);
    assert_eq!(r.status, 403, "{}", r.text());

    let r = request(
        s.addr,
        "POST",
        &format!("/spaces/{id}/whip"),
        &[
            ("Authorization", &format!("Bearer {ada}")),
            ("Content-Type", "text/plain"),
        ],
        Some(&good),
    );
    assert_eq!(r.status, 415, "{}", r.text());

    // fill the stage to 13, then the 14th is refused
    let mut others = Vec::new();
    for i in 2..=13 {
        let t = s.mint(&id, &host, "speaker", &format!("s{i}"));
        others.push(whip::join(s.addr, &id, &t, Signal::Silence).expect("joins"));
    }
    wait_connected(&s, &id, 13);
    let t14 = s.mint(&id, &host, "speaker", "s14");
    let r = whip::join(s.addr, &id, &t14, Signal::Silence)
        .err()
        .expect("14th refused");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.json()["error"].as_str().unwrap().contains("full"),
        "{}",
        r.text()
    );

    // nothing above disturbed the stage: Ada still connected, program flowing
    let before = s.info(&id)["packets"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert!(s.info(&id)["packets"].as_u64().unwrap() >= before + 20);
    assert!(connected(&s, &id).contains(&"ada".to_string()));
    let heard = s.listen_live(&id, 2);
    let r = tone_presence(&heard.samples, 440.0);
    assert!(
        r > 0.3,
        "program lost Ada: 440 Hz at {r:.3} over {} s",
        heard.seconds()
    );

    // a scheduled or ended space has no stage
    let r = whip::post_offer(s.addr, &other.0, &other.1, &good);
    assert_eq!(
        r.status,
        201,
        "host of the other space may speak there: {}",
        r.text()
    );
    s.end_space(&other.0, &other.1);
    let (_, _, _, _, fresh) = whip::offer();
    let r = whip::post_offer(s.addr, &other.0, &other.1, &fresh);
    assert_eq!(r.status, 410, "{}", r.text());

    drop(others);
    let log = a.finish();
    assert!(log.error.is_none(), "{:?}", log.error);
}

#[test]
fn a_listener_asks_to_speak_and_the_host_moderates() {
    let s = Server::start(&[]);
    let (id, host) = s.live_space("Open floor");
    let host_mic = whip::join(s.addr, &id, &host, Signal::Silence).expect("host joins");
    wait_connected(&s, &id, 1);
    assert_eq!(stage(&s, &id)["members"][0]["role"], "host");

    // a listener asks; the queue shows them to the host
    let r = request(
        s.addr,
        "POST",
        &format!("/api/spaces/{id}/stage/requests"),
        &[],
        Some(r#"{"name":"Linus"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let rid = r.json()["id"].as_str().unwrap().to_string();
    let ticket = r.json()["ticket"].as_str().unwrap().to_string();
    assert_eq!(stage(&s, &id)["requests"][0]["name"], "Linus");
    let claim = format!("/api/spaces/{id}/stage/requests/{rid}/token");
    let r = post(&s, &claim, &ticket, None);
    assert_eq!(
        (r.status, r.json()["state"].as_str()),
        (409, Some("pending"))
    );
    // a ticket is not a host token, and a host token is not this ticket
    let approve = format!("/api/spaces/{id}/stage/requests/{rid}/approve");
    assert_eq!(post(&s, &approve, &ticket, None).status, 403);
    assert_eq!(post(&s, &claim, &host, None).status, 403);

    assert_eq!(post(&s, &approve, &host, None).status, 200);
    assert_eq!(stage(&s, &id)["requests"].as_array().unwrap().len(), 0);
    let r = post(&s, &claim, &ticket, None);
    assert_eq!(r.status, 200, "{}", r.text());
    let speaker = r.json()["token"].as_str().unwrap().to_string();
    let identity = r.json()["identity"].as_str().unwrap().to_string();

    let linus = whip::join(s.addr, &id, &speaker, tone(700.0)).expect("Linus joins");
    wait_connected(&s, &id, 2);
    let member = stage(&s, &id)["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["identity"] == identity.as_str())
        .cloned()
        .unwrap();
    assert_eq!(
        (member["name"].as_str(), member["role"].as_str()),
        (Some("Linus"), Some("speaker"))
    );
    s.wait_for_packets(&id, 100);
    assert!(
        tone_ratio(&s.listen_live(&id, 2).samples, 700.0) > 0.3,
        "Linus not on air"
    );

    // the host mutes him: he leaves the program; he cannot unmute himself
    let mute = format!("/api/spaces/{id}/stage/members/{identity}/mute");
    assert_eq!(
        post(&s, &mute, &host, Some(r#"{"muted":true}"#)).status,
        200
    );
    let r = post(&s, &mute, &speaker, Some(r#"{"muted":false}"#));
    assert_eq!(r.status, 403, "{}", r.text());
    // a new listener's first second or so is the burst from before the
    // mute (up to 1.5 s with the flush that follows): skip 2 s
    let muted = s.listen_live(&id, 4);
    let after = &muted.samples[muted.samples.len().min(96_000)..];
    assert!(after.len() > 48_000, "heard {} s", muted.seconds());
    assert!(
        tone_ratio(after, 700.0) < 0.05,
        "muted speaker still on air"
    );
    assert_eq!(
        post(&s, &mute, &host, Some(r#"{"muted":false}"#)).status,
        200
    );

    // moved back to the audience: session closed, the token no longer works
    let remove = format!("/api/spaces/{id}/stage/members/{identity}/remove");
    assert_eq!(post(&s, &remove, &speaker, None).status, 403);
    assert_eq!(post(&s, &remove, &host, None).status, 200);
    wait_connected(&s, &id, 1);
    let r = whip::join(s.addr, &id, &speaker, Signal::Silence)
        .err()
        .expect("refused");
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.json()["error"].as_str().unwrap().contains("audience"),
        "{}",
        r.text()
    );
    let _ = linus.finish();

    // a declined request says so
    let r = request(
        s.addr,
        "POST",
        &format!("/api/spaces/{id}/stage/requests"),
        &[],
        Some(r#"{"name":"Eve"}"#),
    );
    let (rid, ticket) = (
        r.json()["id"].as_str().unwrap().to_string(),
        r.json()["ticket"].as_str().unwrap().to_string(),
    );
    let decline = format!("/api/spaces/{id}/stage/requests/{rid}/decline");
    assert_eq!(post(&s, &decline, &host, None).status, 200);
    let r = post(
        &s,
        &format!("/api/spaces/{id}/stage/requests/{rid}/token"),
        &ticket,
        None,
    );
    assert_eq!(
        (r.status, r.json()["state"].as_str()),
        (403, Some("declined"))
    );
    let r = request(
        s.addr,
        "POST",
        &format!("/api/spaces/{id}/stage/requests"),
        &[],
        Some(r#"{"name":"   "}"#),
    );
    assert_eq!(r.status, 400, "{}", r.text());

    // the host leaves with DELETE on the WHIP resource
    let location = host_mic.location.clone();
    let r = request(
        s.addr,
        "DELETE",
        &location,
        &[("Authorization", &format!("Bearer {host}"))],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    wait_connected(&s, &id, 0);
    let _ = host_mic.finish();

    // after the end, Linus's own track is listed under his name
    assert_eq!(s.end_space(&id, &host).status, 200);
    let tracks = s.tracks(&id);
    let names: Vec<&str> = tracks.iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(names.contains(&"Linus"), "{tracks:?}");
}

#[test]
fn an_icecast_source_joins_the_mix() {
    let s = Server::start(&[]);
    let (id, host) = s.live_space("Music bed");
    // the source publishes first: the program is its audio, passed through
    let mut source = ffmpeg_source(s.addr, &id, &host, 12.0, 300);
    s.wait_for_packets(&id, 50);
    // a speaker comes on stage: from now on the program is the mix of both
    // (ffmpeg's sine is at 1/8 of full scale, the speaker at 0.4)
    let ada = s.mint(&id, &host, "speaker", "ada");
    let a = whip::join(s.addr, &id, &ada, tone(1000.0)).expect("ada joins");
    wait_connected(&s, &id, 1);
    std::thread::sleep(Duration::from_millis(1500));
    let heard = s.listen_live(&id, 3);
    let tail = &heard.samples[heard.samples.len().min(60_000)..];
    let (r300, r1000) = (tone_ratio(tail, 300.0), tone_ratio(tail, 1000.0));
    assert!(
        r300 > 0.03 && r1000 > 0.3,
        "program: source {r300:.3}, speaker {r1000:.3}"
    );
    // the speaker hears the source in their mix-minus, not themself
    let log = a.finish();
    assert!(log.error.is_none(), "{:?}", log.error);
    let back = &log.received[log.received.len().saturating_sub(96_000)..];
    let (r300, r1000) = (tone_ratio(back, 300.0), tone_ratio(back, 1000.0));
    assert!(
        r300 > 0.3 && r1000 < 0.01,
        "mix-minus: source {r300:.3}, own {r1000:.4}"
    );
    // a second source is still one too many
    let r = request(
        s.addr,
        "PUT",
        &format!("/spaces/{id}/source"),
        &[
            ("Authorization", &format!("Bearer {host}")),
            ("Content-Type", "audio/ogg"),
        ],
        Some(""),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    let _ = source.kill();
    let _ = source.wait();
}

#[test]
fn stage_events_stream_changes() {
    use std::io::{BufRead, BufReader, Write};
    let s = Server::start(&[]);
    let (id, host) = s.live_space("Events");
    let mut sock = std::net::TcpStream::connect(s.addr).unwrap();
    sock.write_all(format!("GET /api/spaces/{id}/events HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut lines = BufReader::new(sock).lines();
    let mut next_stage = || -> Value {
        loop {
            let line = lines.next().expect("stream open").expect("read");
            if let Some(data) = line.strip_prefix("data: ") {
                return serde_json::from_str(data).unwrap();
            }
        }
    };
    let first = next_stage();
    assert_eq!(first["space"]["state"], "live");
    assert_eq!(first["stage"]["max_speakers"], 13);
    let r = request(
        s.addr,
        "POST",
        &format!("/api/spaces/{id}/stage/requests"),
        &[],
        Some(r#"{"name":"Ada"}"#),
    );
    assert_eq!(r.status, 201);
    let saw = (0..5).any(|_| next_stage()["stage"]["requests"][0]["name"] == "Ada");
    assert!(saw, "the request never reached the event stream");
    s.end_space(&id, &host);
    let saw = (0..5).any(|_| next_stage()["space"]["state"] == "ended");
    assert!(saw, "the end never reached the event stream");
}
