//! Debian's nginx with deploy/nginx/tribune-hls.conf in front of a node:
//! parts come from the cache (one node request per part, however many
//! players), blocking reloads collapse into one node request per key,
//! bad input gets a fast 4xx that is never stored, and the same part name
//! is the same bytes through the cache, at the origin and on an edge.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::services::Nginx;
use support::*;

fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[], None)
}

/// Requests the node answered for HLS files of `kind` (its own count).
fn node_requests(server: &Server, kind: &str) -> f64 {
    metric(
        &server.metrics(),
        "tribune_hls_requests_total",
        &format!("kind=\"{kind}\""),
    )
}

#[test]
fn nginx_caches_the_tier_and_never_stores_bad_answers() {
    let origin = Server::start(&["--per-ip-connections", "0"]);
    let (id, host) = origin.live_space("Cached");
    let node = origin.token("node", None, "1h");
    let edge = Server::start(&["--upstream", &origin.url(""), "--node-token", &node]);
    let mut source = ffmpeg_source(origin.addr, &id, &host, 30.0, 440);
    let nginx = Nginx::start(origin.addr);
    let cache = nginx.addr();
    let base = format!("/spaces/{id}/hls");
    // the edge relays from the start
    assert_eq!(get(edge.addr, &format!("{base}/master.m3u8")).status, 200);

    // wait for part 1.0 through the cache, by blocking reload
    wait_for_hls_part(cache, &id, 1, 0);

    // one part, asked 30 times: one node request, the rest cache hits
    let before = node_requests(&origin, "part");
    let mut first = None;
    for i in 0..30 {
        let r = get(cache, &format!("{base}/opus/part0.1.m4s"));
        assert_eq!(r.status, 200);
        let status = r.header("x-cache-status").unwrap_or("").to_string();
        if i == 0 {
            assert_eq!(status, "MISS");
            first = Some(r.body.clone());
        } else {
            assert_eq!(status, "HIT", "request {i}");
            assert_eq!(Some(&r.body), first.as_ref());
        }
    }
    assert_eq!(node_requests(&origin, "part") - before, 1.0);

    // 20 players blocking on the next part at once: the node sees one
    let playlist = get(cache, &format!("{base}/opus/media.m3u8")).text();
    let tribune_media::hls::PartId { msn, part } = preload_hint(&playlist);
    let before = node_requests(&origin, "playlist");
    let blocking = format!("{base}/opus/media.m3u8?_HLS_msn={msn}&_HLS_part={part}");
    let players: Vec<_> = (0..20)
        .map(|_| {
            let path = blocking.clone();
            std::thread::spawn(move || get(cache, &path))
        })
        .collect();
    for p in players {
        let r = p.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().contains(&format!("part{msn}.{part}.m4s")));
    }
    let to_node = node_requests(&origin, "playlist") - before;
    assert!(
        to_node <= 2.0,
        "{to_node} node requests for one blocking key"
    );

    // bad input: fast 4xx from the node, never stored by the cache
    for (path, status) in [
        (format!("{base}/opus/media.m3u8?_HLS_msn=abc"), 400),
        (format!("{base}/opus/media.m3u8?_HLS_msn=999999"), 400),
        (format!("{base}/opus/media.m3u8?_HLS_part=2"), 400),
        (format!("{base}/opus/part999999.0.m4s"), 404),
        (format!("{base}/opus/part0.7.m4s"), 404),
        (
            format!("{base}/opus/media.m3u8?{}", "a=b&".repeat(200)),
            414,
        ),
    ] {
        for attempt in 0..3 {
            let asked = Instant::now();
            let r = get(cache, &path);
            assert_eq!(r.status, status, "{path}: {}", r.text());
            assert!(asked.elapsed() < Duration::from_millis(500), "{path}");
            assert_ne!(
                r.header("x-cache-status"),
                Some("HIT"),
                "{path} was stored (attempt {attempt})"
            );
        }
    }
    // garbage in other query parameters shares the real key: still fine
    let r = get(
        cache,
        &format!("{base}/opus/media.m3u8?junk=%00%ff&_HLS_msn={msn}&_HLS_part={part}"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("#EXTM3U"));

    // the same name is the same bytes through the cache, at the origin
    // and on the edge, for both renditions
    for name in [
        "opus/part1.0.m4s",
        "aac/part1.0.m4s",
        "opus/init.mp4",
        "aac/seg0.m4s",
    ] {
        let path = format!("{base}/{name}");
        let (c, o, e) = (
            get(cache, &path),
            get(origin.addr, &path),
            get(edge.addr, &path),
        );
        assert_eq!((c.status, o.status, e.status), (200, 200, 200), "{name}");
        assert_eq!(c.body, o.body, "{name} through the cache");
        assert_eq!(e.body, o.body, "{name} on the edge");
        assert_eq!(e.header("etag"), o.header("etag"));
    }
    let _ = source.kill();
    let _ = source.wait();
    assert!(nginx.access_log().lines().count() > 50);
}

/// More players than nginx's per-entry count holds (1,024) blocked on one
/// key: with the shipped two-layer cache the node still answers it once.
/// (With one layer, every 1,024th waiter wrapped the count, skipped the
/// lock and reached the node uncached.)
#[test]
fn more_than_1024_players_on_one_blocking_key_reach_the_node_once() {
    const PLAYERS: usize = 1_300;
    let origin = Server::start(&["--per-ip-connections", "0"]);
    let (id, host) = origin.live_space("Crowded key");
    let mut source = ffmpeg_source(origin.addr, &id, &host, 40.0, 440);
    let nginx = Nginx::start(origin.addr);
    let cache = nginx.addr();
    let base = format!("/spaces/{id}/hls");
    wait_for_hls_part(cache, &id, 1, 0);
    // a key three parts past the one being made: everyone is waiting on it
    // well before the node can answer
    let playlist = get(origin.addr, &format!("{base}/opus/media.m3u8")).text();
    let hinted = preload_hint(&playlist);
    let layout = tribune_media::hls::HlsLayout::DEFAULT;
    let key = layout.next_part(layout.next_part(layout.next_part(hinted)));
    let path = format!(
        "{base}/opus/media.m3u8?_HLS_msn={}&_HLS_part={}",
        key.msn, key.part
    );
    let before = node_requests(&origin, "playlist");
    let start = std::sync::Arc::new(std::sync::Barrier::new(PLAYERS));
    let players: Vec<_> = (0..PLAYERS)
        .map(|_| {
            let (path, start) = (path.clone(), start.clone());
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    start.wait();
                    get(cache, &path)
                })
                .expect("a player thread")
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    for p in players {
        let r = p.join().unwrap();
        assert!(
            r.status != 200
                || r.text()
                    .contains(&format!("part{}.{}.m4s", key.msn, key.part)),
            "{}",
            r.text()
        );
        *statuses.entry(r.status).or_insert(0) += 1;
    }
    assert_eq!(statuses.get(&200), Some(&PLAYERS), "{statuses:?}");
    assert_eq!(
        node_requests(&origin, "playlist") - before,
        1.0,
        "node requests for one blocking key with {PLAYERS} players"
    );
    let _ = source.kill();
    let _ = source.wait();
}

/// The last part a playlist lists, counted from the track's start.
fn last_listed_part(playlist: &str) -> u64 {
    let layout = tribune_media::hls::HlsLayout::DEFAULT;
    playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PART:"))
        .filter_map(|l| l.split("URI=\"part").nth(1))
        .filter_map(|u| u.split_once(".m4s").map(|(id, _)| id.to_string()))
        .filter_map(|id| {
            let (msn, part) = id.split_once('.')?;
            Some(layout.absolute_part(tribune_media::hls::PartId {
                msn: msn.parse().ok()?,
                part: part.parse().ok()?,
            }))
        })
        .max()
        .unwrap_or(0)
}

/// A crowd arriving after a quiet spell gets a current playlist from the
/// cache, not the one it stored before the quiet (nginx's
/// `proxy_cache_use_stale updating` served an expired entry of any age to
/// everyone who came while one request refreshed it).
#[test]
fn players_arriving_after_a_quiet_spell_get_a_current_playlist() {
    let origin = Server::start(&["--per-ip-connections", "0"]);
    let (id, host) = origin.live_space("Quiet then crowded");
    let mut source = ffmpeg_source(origin.addr, &id, &host, 30.0, 440);
    let nginx = Nginx::start(origin.addr);
    let cache = nginx.addr();
    let path = format!("/spaces/{id}/hls/opus/media.m3u8");
    wait_for_hls_part(cache, &id, 1, 0);
    assert_eq!(get(cache, &path).status, 200); // stored now
    std::thread::sleep(Duration::from_secs(6)); // six parts later
    let live_edge = last_listed_part(&get(origin.addr, &path).text());
    let start = std::sync::Arc::new(std::sync::Barrier::new(64));
    let players: Vec<_> = (0..64)
        .map(|_| {
            let (path, start) = (path.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                get(cache, &path)
            })
        })
        .collect();
    for p in players {
        let r = p.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let last = last_listed_part(&r.text());
        // at most one part older than the node's edge a moment before
        assert!(
            last + 1 >= live_edge,
            "a playlist ending at part {last} when the node was at {live_edge} ({})",
            r.header("x-cache-status").unwrap_or("-")
        );
    }
    let _ = source.kill();
    let _ = source.wait();
}
