//! The HLS tier against the real binary: LL-HLS playlists with blocking
//! reloads and bounded waits, fast 4xx for bad input, immutable parts with
//! strong ETags that are the same bytes when rebuilt from the recording,
//! on an edge, and after the end (VOD); ffmpeg plays both renditions.

mod support;

use std::time::{Duration, Instant};
use support::*;

fn get(addr: std::net::SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[], None)
}

/// A config file for the test node: few segments in memory, so older
/// parts are rebuilt from the recording while the space is live.
fn small_memory_config(dir: &std::path::Path, extra: &str) -> String {
    let path = dir.join("tribune.toml");
    std::fs::write(&path, format!("hls_retained_segments = 4\n{extra}")).unwrap();
    path.to_string_lossy().into_owned()
}

/// Waits (by blocking reload) until part `msn.part` of `rendition` is
/// published, and returns the playlist.
fn wait_for_part(server: &Server, id: &str, rendition: &str, msn: u64, part: u32) -> String {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let r = get(
            server.addr,
            &format!("/spaces/{id}/hls/{rendition}/media.m3u8?_HLS_msn={msn}&_HLS_part={part}"),
        );
        if r.status == 200 && r.text().contains(&format!("part{msn}.{part}.m4s")) {
            return r.text();
        }
        assert!(
            Instant::now() < deadline,
            "part {msn}.{part} never came: {} {}",
            r.status,
            r.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The last part a live playlist lists.
fn last_part(playlist: &str) -> (u64, u32) {
    let uri = playlist
        .lines()
        .rev()
        .filter(|l| l.starts_with("#EXT-X-PART:"))
        .find_map(|l| l.split("URI=\"part").nth(1))
        .expect("a part");
    let name = uri.split(".m4s").next().unwrap();
    let (msn, part) = name.split_once('.').unwrap();
    (msn.parse().unwrap(), part.parse().unwrap())
}

fn decode_with_ffmpeg(url: &str, seconds: &str) -> Decoded {
    require_tool("ffmpeg");
    let child = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i", url, "-t", seconds])
        .args(["-f", "s16le", "-ac", "1", "-ar", "48000", "-"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ffmpeg");
    finish_decode(child)
}

#[test]
fn origin_serves_ll_hls_bounded_and_the_same_bytes_after_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_memory_config(dir.path(), "");
    let server = Server::start(&["--config", &config]);
    let (id, host) = server.live_space("HLS");
    let mut source = ffmpeg_source(server.addr, &id, &host, 24.0, 440);
    let base = format!("/spaces/{id}/hls");

    let master = get(server.addr, &format!("{base}/master.m3u8"));
    assert_eq!(master.status, 200, "{}", master.text());
    assert!(master.text().contains("CODECS=\"opus\"\nopus/media.m3u8"));
    assert!(master
        .text()
        .contains("CODECS=\"mp4a.40.2\"\naac/media.m3u8"));
    assert_eq!(master.header("access-control-allow-origin"), Some("*"));

    // the first parts, as published live
    wait_for_part(&server, &id, "opus", 0, 1);
    wait_for_part(&server, &id, "aac", 0, 1);
    let live_parts: Vec<(String, Response)> = ["opus", "aac"]
        .iter()
        .flat_map(|r| ["part0.0.m4s", "part0.1.m4s", "init.mp4"].map(|f| format!("{r}/{f}")))
        .map(|f| {
            let res = get(server.addr, &format!("{base}/{f}"));
            (f, res)
        })
        .collect();
    for (name, res) in &live_parts {
        assert_eq!(res.status, 200, "{name}: {}", res.text());
        assert_eq!(
            res.header("cache-control"),
            Some("public, max-age=31536000, immutable"),
            "{name}"
        );
        assert_eq!(res.header("content-type"), Some("audio/mp4"));
        let etag = res.header("etag").expect("an ETag");
        assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");
        let again = request(
            server.addr,
            "GET",
            &format!("{base}/{name}"),
            &[("If-None-Match", etag)],
            None,
        );
        assert_eq!(again.status, 304, "{name}");
    }

    // playlists: short-lived in caches, LL-HLS
    let playlist = get(server.addr, &format!("{base}/opus/media.m3u8"));
    assert_eq!(playlist.status, 200);
    assert_eq!(
        playlist.header("cache-control"),
        Some("public, max-age=1, stale-while-revalidate=1")
    );
    assert_eq!(
        playlist.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    let text = playlist.text();
    assert!(text.contains("#EXT-X-PLAYLIST-TYPE:EVENT"), "{text}");
    assert!(text.contains("#EXT-X-PRELOAD-HINT:TYPE=PART"), "{text}");
    let (msn, part) = last_part(&text);

    // the next part: a blocking reload is answered when it is published
    let next =
        tribune_media::hls::HlsLayout::DEFAULT.next_part(tribune_media::hls::PartId { msn, part });
    let (next_msn, next_part) = (next.msn, next.part);
    let asked = Instant::now();
    let blocked = get(
        server.addr,
        &format!("{base}/opus/media.m3u8?_HLS_msn={next_msn}&_HLS_part={next_part}"),
    );
    assert_eq!(blocked.status, 200, "{}", blocked.text());
    assert!(blocked
        .text()
        .contains(&format!("part{next_msn}.{next_part}.m4s")));
    assert!(
        asked.elapsed() < Duration::from_millis(2500),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(blocked.header("cache-control"), Some("public, max-age=6"));

    // bad input: fast 4xx, never cached
    for (path, status) in [
        (
            format!("{base}/opus/media.m3u8?_HLS_msn={}", next_msn + 50),
            400,
        ),
        (
            // more than two segments past the playlist's last
            format!(
                "{base}/opus/media.m3u8?_HLS_msn={}&_HLS_part=0",
                next_msn + 3
            ),
            400,
        ),
        (format!("{base}/opus/media.m3u8?_HLS_msn=abc"), 400),
        (format!("{base}/opus/media.m3u8?_HLS_part=1"), 400),
        (format!("{base}/opus/media.m3u8?_HLS_msn=1&_HLS_msn=2"), 400),
        (
            format!("{base}/opus/media.m3u8?_HLS_msn=99999999999999999999999"),
            400,
        ),
        (format!("{base}/opus/media.m3u8?{}", "x".repeat(2000)), 414),
        (format!("{base}/opus/part0.4.m4s"), 404),
        (format!("{base}/opus/part99999.0.m4s"), 404),
        (format!("{base}/opus/part{}.0.m4s", next_msn + 2), 404),
        (format!("{base}/opus/part00.1.m4s"), 404),
        (format!("{base}/opus/seg99999.m4s"), 404),
        (format!("{base}/opus/seg{}.m4s", next_msn + 1), 404),
        (format!("{base}/flac/media.m3u8"), 404),
        (format!("{base}/opus/..%2f..%2fetc"), 404),
        ("/spaces/nosuchspace/hls/master.m3u8".to_string(), 404),
    ] {
        let asked = Instant::now();
        let r = get(server.addr, &path);
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert!(
            asked.elapsed() < Duration::from_millis(500),
            "{path} took {:?}",
            asked.elapsed()
        );
        assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
        assert!(r.json()["error"].is_string(), "{path}");
    }

    // ffmpeg plays the multivariant playlist (Opus) and the AAC rendition
    // (it reads whole segments only: wait until one is complete)
    wait_for_part(&server, &id, "opus", 1, 1);
    let url = server.url(&format!("{base}/master.m3u8"));
    let opus = decode_with_ffmpeg(&url, "3");
    assert!(opus.success, "{}", opus.errors);
    assert!(opus.seconds() > 2.5, "{}", opus.seconds());
    assert!(tone_presence(&opus.samples, 440.0) > 0.8);
    let aac = decode_with_ffmpeg(&server.url(&format!("{base}/aac/media.m3u8")), "3");
    assert!(aac.success, "{}", aac.errors);
    assert!(tone_presence(&aac.samples, 440.0) > 0.8);

    // 4 segments in memory: by 16 s, part 0.0 is rebuilt from the recording
    wait_for_part(&server, &id, "opus", 5, 1);
    for (name, live) in &live_parts {
        let rebuilt = get(server.addr, &format!("{base}/{name}"));
        assert_eq!(rebuilt.status, 200, "{name}");
        assert_eq!(rebuilt.body, live.body, "{name} rebuilt from the recording");
        assert_eq!(rebuilt.header("etag"), live.header("etag"));
    }
    let segment = get(server.addr, &format!("{base}/opus/seg0.m4s"));
    let parts: Vec<u8> = (0..tribune_media::hls::HlsLayout::DEFAULT.parts_per_segment())
        .flat_map(|k| get(server.addr, &format!("{base}/opus/part0.{k}.m4s")).body)
        .collect();
    assert_eq!(segment.body, parts, "a segment is its parts back to back");

    let _ = source.kill();
    let _ = source.wait();
    assert_eq!(server.end_space(&id, &host).status, 200);

    // the replay: VOD, the same names and bytes, cacheable for long
    let vod = get(server.addr, &format!("{base}/opus/media.m3u8"));
    assert_eq!(vod.status, 200, "{}", vod.text());
    let text = vod.text();
    assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD") && text.ends_with("#EXT-X-ENDLIST\n"));
    assert!(!text.contains("EXT-X-PART:"), "{text}");
    assert_eq!(vod.header("cache-control"), Some("public, max-age=86400"));
    // the ended playlist keeps the live dates (the index's summaries)
    let live_first_date = playlist
        .text()
        .lines()
        .find(|l| l.starts_with("#EXT-X-PROGRAM-DATE-TIME"))
        .unwrap()
        .to_string();
    assert!(text.contains(&live_first_date), "{text}");
    for (name, live) in &live_parts {
        let ended = get(server.addr, &format!("{base}/{name}"));
        assert_eq!(ended.status, 200, "{name}");
        assert_eq!(ended.body, live.body, "{name} after the end");
    }
    assert_eq!(
        get(server.addr, &format!("{base}/opus/media.m3u8?_HLS_msn=abc")).status,
        400
    );
    let whole = decode_with_ffmpeg(&server.url(&format!("{base}/aac/media.m3u8")), "60");
    assert!(whole.success, "{}", whole.errors);
    assert!(whole.seconds() > 5.0, "{}", whole.seconds());
}

#[test]
fn an_edge_serves_the_origins_bytes_and_a_private_space_needs_its_token() {
    let dir = tempfile::tempdir().unwrap();
    // a short relay history: the edge joins after it, and lists the
    // segments it never saw as the origin does (seeded)
    let config = small_memory_config(dir.path(), "ring_ms = 4000\n");
    let origin = Server::start(&["--config", &config]);
    let (id, host) = origin.live_space("HLS edge");
    let node = origin.token("node", None, "1h");
    let mut source = ffmpeg_source(origin.addr, &id, &host, 30.0, 660);
    wait_for_part(&origin, &id, "aac", 3, 0);
    let edge = Server::start(&[
        "--config",
        &config,
        "--upstream",
        &origin.url(""),
        "--node-token",
        &node,
    ]);
    let base = format!("/spaces/{id}/hls");
    // the edge learns the space, relays it and builds its own parts
    assert_eq!(get(edge.addr, &format!("{base}/master.m3u8")).status, 200);
    let text = wait_for_part(&edge, &id, "aac", 5, 1);
    assert!(
        text.contains("seg0.m4s"),
        "the edge lists the origin's history: {text}"
    );
    for rendition in ["opus", "aac"] {
        let path = format!("{base}/{rendition}/media.m3u8?_HLS_msn=6&_HLS_part=0");
        let at_origin = get(origin.addr, &path);
        let at_edge = get(edge.addr, &path);
        assert_eq!(at_origin.status, 200);
        assert_eq!(at_edge.text(), at_origin.text(), "{rendition} playlists");
        for name in [
            "init.mp4",
            "part5.2.m4s",
            "part6.0.m4s",
            "part0.1.m4s",
            "seg4.m4s",
        ] {
            let path = format!("{base}/{rendition}/{name}");
            let (o, e) = (get(origin.addr, &path), get(edge.addr, &path));
            assert_eq!((o.status, e.status), (200, 200), "{path}: {}", e.text());
            assert_eq!(o.body, e.body, "{path} differs on the edge");
            assert_eq!(o.header("etag"), e.header("etag"));
        }
    }
    let _ = source.kill();
    let _ = source.wait();

    // a private space: its token, exactly as replay.opus asks it
    let admin = origin.token("admin", None, "1h");
    let created = request(
        origin.addr,
        "POST",
        "/api/spaces",
        &[("Authorization", &format!("Bearer {admin}"))],
        Some(r#"{"title":"Private","private":true}"#),
    )
    .json();
    let private_id = created["id"].as_str().unwrap().to_string();
    let private_host = created["host_token"].as_str().unwrap().to_string();
    let started = request(
        origin.addr,
        "POST",
        &format!("/api/spaces/{private_id}/start"),
        &[("Authorization", &format!("Bearer {private_host}"))],
        None,
    );
    assert_eq!(started.status, 200);
    let listener = origin.mint(&private_id, &private_host, "listener", "fan");
    let other = origin.mint(&id, &host, "listener", "elsewhere");
    let master = format!("/spaces/{private_id}/hls/master.m3u8");
    assert_eq!(get(origin.addr, &master).status, 401);
    assert_eq!(
        get(origin.addr, &format!("{master}?token={other}")).status,
        403
    );
    let ok = get(origin.addr, &format!("{master}?token={listener}"));
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.header("cache-control"), Some("private, max-age=60"));
    assert!(
        ok.text()
            .contains(&format!("opus/media.m3u8?token={listener}")),
        "players carry the token to every URI: {}",
        ok.text()
    );
}
