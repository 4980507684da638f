//! `tribune-load hls URL`: HLS listeners that follow the playlists as an
//! LL-HLS player does (a blocking reload for the next part, then the
//! part, over one keep-alive connection each), or as a plain HLS player
//! (`--plain`: reload every target duration, whole segments). Every fMP4
//! box is validated (box sizes, fragment sequence numbers, decode times
//! continuous, sample sizes = the mdat), a player buffer is modelled, and
//! latency is measured from EXT-X-PROGRAM-DATE-TIME (the ingest clock) to
//! the sample being played. Bounded in count and time.

use crate::client::wall_ms;
use crate::pct;
use bytes::BytesMut;
use hdrhistogram::Histogram;
use mp4_atom::{Decode, Moof};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tribune_client::head::parse_head;
use tribune_media::chunked::ChunkedDecoder;

#[derive(clap::Args, Clone)]
pub struct HlsArgs {
    /// The multivariant playlist, e.g. http://127.0.0.1:8088/spaces/ID/hls/master.m3u8
    url: String,
    /// Listeners to run.
    #[arg(long, default_value_t = 10)]
    listeners: usize,
    /// New listeners per second during the ramp.
    #[arg(long, default_value_t = 200.0)]
    ramp: f64,
    /// Seconds each listener plays (from its start).
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Which rendition: opus or aac.
    #[arg(long, default_value = "opus")]
    rendition: String,
    /// Play as a plain (not low-latency) HLS player: segments only,
    /// reloading the playlist every target duration.
    #[arg(long)]
    plain: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Local source addresses to spread connections over (comma
    /// separated, loopback), e.g. 127.0.0.2,127.0.0.3.
    #[arg(long, value_delimiter = ',')]
    bind: Vec<IpAddr>,
    /// Worker processes to spread listeners over (each holds one socket
    /// per listener; one process is capped at ~19,000 here).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Include mergeable histograms in the JSON (used between workers).
    #[arg(long, hide = true)]
    emit_histograms: bool,
}

/// What one listener experienced.
#[derive(Default)]
struct Played {
    ttfa_ms: Option<f64>,
    fault: Option<String>,
    stalls: u32,
    stall_ms: f64,
    requests: u64,
    bytes: u64,
    audio_ms: f64,
    latencies: Vec<f64>,
    /// Fragments (moof + mdat) that passed every check.
    fragments: u64,
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    addr: SocketAddr,
    bind: Option<IpAddr>,
    host: String,
    sock: Option<TcpStream>,
    buf: BytesMut,
}

struct Got {
    status: u16,
    body: Vec<u8>,
}

impl Conn {
    async fn get(&mut self, path: &str, by: Instant) -> Result<Got, String> {
        for attempt in 0..2 {
            if self.sock.is_none() {
                let sock = tokio::time::timeout_at(
                    by.into(),
                    tribune_client::stream::connect(self.addr, self.bind, None),
                )
                .await
                .map_err(|_| "connect timed out".to_string())?
                .map_err(|e| format!("connect: {e}"))?;
                let _ = sock.set_nodelay(true);
                self.sock = Some(sock);
                self.buf.clear();
            }
            match self.exchange(path, by).await {
                Ok(got) => return Ok(got),
                // a keep-alive connection the server closed: once more
                Err(e) if attempt == 0 && e == "closed" => self.sock = None,
                Err(e) => {
                    self.sock = None;
                    return Err(e);
                }
            }
        }
        Err("closed".into())
    }

    async fn exchange(&mut self, path: &str, by: Instant) -> Result<Got, String> {
        let Some(sock) = self.sock.as_mut() else {
            return Err("closed".into());
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tribune-load-hls\r\n\r\n",
            self.host
        );
        sock.write_all(request.as_bytes())
            .await
            .map_err(|_| "closed".to_string())?;
        let mut fresh = true;
        let head = loop {
            if let Some(head) = parse_head(&self.buf).map_err(|_| "not HTTP".to_string())? {
                break head;
            }
            let n = tokio::time::timeout_at(by.into(), sock.read_buf(&mut self.buf))
                .await
                .map_err(|_| "no answer in time".to_string())?
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(if fresh && self.buf.is_empty() {
                    "closed"
                } else {
                    "cut"
                }
                .into());
            }
            fresh = false;
        };
        let _ = self.buf.split_to(head.len);
        let body = if let Some(len) = head.content_length() {
            while self.buf.len() < len {
                let n = tokio::time::timeout_at(by.into(), sock.read_buf(&mut self.buf))
                    .await
                    .map_err(|_| "body not in time".to_string())?
                    .map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("cut".into());
                }
            }
            self.buf.split_to(len).to_vec()
        } else if head.chunked() {
            let mut decoder = ChunkedDecoder::default();
            let mut out = Vec::new();
            loop {
                if decoder
                    .decode(&mut self.buf, &mut out)
                    .map_err(|e| e.to_string())?
                {
                    break out;
                }
                let n = tokio::time::timeout_at(by.into(), sock.read_buf(&mut self.buf))
                    .await
                    .map_err(|_| "body not in time".to_string())?
                    .map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("cut".into());
                }
            }
        } else {
            return Err("an answer without a length".into());
        };
        if head
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            self.sock = None;
        }
        Ok(Got {
            status: head.status,
            body,
        })
    }
}

/// What a media playlist says.
#[derive(Default, Debug)]
struct Playlist {
    /// Parts in order: (msn, part, duration ms, ingest ms of its start).
    parts: Vec<(u64, u32, f64, f64)>,
    /// Segments: (msn, duration ms, ingest ms of its start).
    segments: Vec<(u64, f64, f64)>,
    hint: Option<(u64, u32)>,
    target_ms: f64,
    ended: bool,
}

fn parse_name(uri: &str) -> Option<(u64, u32)> {
    let rest = uri.strip_prefix("part")?.strip_suffix(".m4s")?;
    let (msn, part) = rest.split_once('.')?;
    Some((msn.parse().ok()?, part.parse().ok()?))
}

fn parse_date(text: &str) -> Option<f64> {
    // 2026-12-02T13:56:58.465Z
    let (date, time) = text.trim().trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, min, s) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    // days from civil (proleptic Gregorian)
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400_000.0 + (h * 3600.0 + min * 60.0 + s) * 1000.0)
}

fn attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    // the first `name=` (found without building the pattern: this runs
    // for every tag of every playlist every listener reloads)
    let mut from = 0;
    let at = loop {
        let i = from + line[from..].find(name)?;
        let end = i + name.len();
        if line.as_bytes().get(end) == Some(&b'=') {
            break end + 1;
        }
        from = i + 1;
    };
    let rest = &line[at..];
    Some(match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next().unwrap_or(""),
        None => rest.split(',').next().unwrap_or(""),
    })
}

fn parse_playlist(text: &str) -> Result<Playlist, String> {
    if !text.starts_with("#EXTM3U") {
        return Err("not a playlist".into());
    }
    let mut p = Playlist::default();
    let mut date: Option<f64> = None;
    let mut offset = 0.0;
    let mut msn: Option<u64> = None;
    let mut extinf: Option<f64> = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            p.target_ms = v.trim().parse::<f64>().map_err(|_| "target duration")? * 1000.0;
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            msn = Some(v.trim().parse().map_err(|_| "media sequence")?);
        } else if let Some(v) = line.strip_prefix("#EXT-X-SKIP:") {
            let skipped: u64 = attr(v, "SKIPPED-SEGMENTS")
                .and_then(|n| n.parse().ok())
                .ok_or("skip")?;
            msn = msn.map(|m| m + skipped);
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            date = Some(parse_date(v).ok_or("a date")?);
            offset = 0.0;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART:") {
            let duration = attr(v, "DURATION")
                .and_then(|d| d.parse::<f64>().ok())
                .ok_or("part duration")?
                * 1000.0;
            let (m, k) = attr(v, "URI").and_then(parse_name).ok_or("part URI")?;
            p.parts.push((m, k, duration, date.unwrap_or(0.0) + offset));
            offset += duration;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
            p.hint = attr(v, "URI").and_then(parse_name);
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            extinf = Some(
                v.trim_end_matches(',')
                    .parse::<f64>()
                    .map_err(|_| "EXTINF")?
                    * 1000.0,
            );
        } else if line == "#EXT-X-ENDLIST" {
            p.ended = true;
        } else if !line.starts_with('#') && !line.is_empty() {
            let m = msn.ok_or("a segment before EXT-X-MEDIA-SEQUENCE")?;
            let duration = extinf.take().ok_or("a segment without EXTINF")?;
            p.segments.push((m, duration, date.unwrap_or(0.0)));
            msn = Some(m + 1);
            offset = 0.0;
            date = date.map(|d| d + duration);
        }
    }
    Ok(p)
}

/// Checks each fragment: its boxes, its sequence number and decode time
/// following the previous one's, its samples filling its mdat.
#[derive(Default)]
struct FragmentCheck {
    next_sequence: Option<u32>,
    next_decode: Option<u64>,
    /// Fragments that passed.
    fragments: u64,
}

/// Checks an init segment: `ftyp` then a `moov` with one audio track at
/// 48 kHz whose sample entry is the rendition's codec.
fn check_init(data: &[u8], rendition: &str) -> Result<(), String> {
    let mut at = 0usize;
    let mut seen_ftyp = false;
    let mut moov = None;
    while at < data.len() {
        if data.len() - at < 8 {
            return Err("init: a box header cut short".into());
        }
        let size =
            u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
        if size < 8 || at + size > data.len() {
            return Err(format!("init: a box of {size} bytes does not fit"));
        }
        match &data[at + 4..at + 8] {
            b"ftyp" => seen_ftyp = true,
            b"moov" => {
                moov = Some(
                    mp4_atom::Moov::decode(&mut &data[at..at + size])
                        .map_err(|e| format!("init: moov: {e}"))?,
                )
            }
            other => {
                return Err(format!(
                    "init: unexpected box {:?}",
                    String::from_utf8_lossy(other)
                ))
            }
        }
        at += size;
    }
    let moov = moov.ok_or("init: no moov")?;
    if !seen_ftyp {
        return Err("init: no ftyp".into());
    }
    let [trak] = moov.trak.as_slice() else {
        return Err(format!("init: {} tracks, 1 expected", moov.trak.len()));
    };
    if trak.mdia.mdhd.timescale != 48_000 {
        return Err(format!("init: timescale {}", trak.mdia.mdhd.timescale));
    }
    let codec = trak.mdia.minf.stbl.stsd.codecs.first();
    let fits = match rendition {
        "opus" => matches!(codec, Some(mp4_atom::Codec::Opus(_))),
        "aac" => matches!(codec, Some(mp4_atom::Codec::Mp4a(_))),
        _ => codec.is_some(),
    };
    if !fits {
        return Err(format!("init: sample entry {codec:?} for {rendition}"));
    }
    Ok(())
}

impl FragmentCheck {
    /// The audio (ms) the fragments of `data` carry.
    fn check(&mut self, data: &[u8]) -> Result<f64, String> {
        let mut at = 0usize;
        let mut audio = 0u64;
        while at < data.len() {
            if data.len() - at < 8 {
                return Err("a box header cut short".into());
            }
            let size =
                u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
            let kind = &data[at + 4..at + 8];
            if size < 8 || at + size > data.len() {
                return Err(format!(
                    "box {:?} of {size} bytes does not fit",
                    String::from_utf8_lossy(kind)
                ));
            }
            match kind {
                b"moof" => {
                    let moof = Moof::decode(&mut &data[at..at + size])
                        .map_err(|e| format!("moof: {e}"))?;
                    let seq = moof.mfhd.sequence_number;
                    if self.next_sequence.is_some_and(|n| n != seq) {
                        return Err(format!(
                            "fragment sequence {seq}, {:?} expected",
                            self.next_sequence
                        ));
                    }
                    self.next_sequence = Some(seq.wrapping_add(1));
                    let traf = moof.traf.first().ok_or("a moof without traf")?;
                    let decode = traf.tfdt.as_ref().ok_or("no tfdt")?.base_media_decode_time;
                    if self.next_decode.is_some_and(|n| n != decode) {
                        return Err(format!(
                            "decode time {decode}, {:?} expected",
                            self.next_decode
                        ));
                    }
                    let trun = traf.trun.first().ok_or("no trun")?;
                    let default_duration = traf.tfhd.default_sample_duration;
                    let mut duration = 0u64;
                    let mut bytes = 0usize;
                    for s in &trun.samples {
                        duration += u64::from(
                            s.duration
                                .or(default_duration)
                                .ok_or("a sample without duration")?,
                        );
                        bytes += s.size.ok_or("a sample without size")? as usize;
                    }
                    // the samples start right after the mdat header
                    if trun.data_offset != Some(size as i32 + 8) {
                        return Err(format!(
                            "trun data offset {:?} for a moof of {size} bytes",
                            trun.data_offset
                        ));
                    }
                    // the mdat follows, holding exactly the samples
                    let mdat = at + size;
                    if data.len() < mdat + 8 || &data[mdat + 4..mdat + 8] != b"mdat" {
                        return Err("moof not followed by mdat".into());
                    }
                    let mdat_size = u32::from_be_bytes([
                        data[mdat],
                        data[mdat + 1],
                        data[mdat + 2],
                        data[mdat + 3],
                    ]) as usize;
                    if mdat_size != bytes + 8 || mdat + mdat_size > data.len() {
                        return Err(format!(
                            "mdat of {mdat_size} bytes for {bytes} bytes of samples"
                        ));
                    }
                    self.next_decode = Some(decode + duration);
                    audio += duration;
                    self.fragments += 1;
                    at = mdat + mdat_size;
                }
                other => {
                    return Err(format!(
                        "unexpected box {:?}",
                        String::from_utf8_lossy(other)
                    ))
                }
            }
        }
        Ok(audio as f64 / 48.0)
    }
}

/// The player: a buffer filled by parts and drained in real time.
struct Player {
    started: Option<Instant>,
    /// Audio (ms) received since playback started counting.
    received_ms: f64,
    stall_since: Option<Instant>,
    /// Playback position (ms of audio played) at `anchor`.
    played_at_anchor: f64,
    anchor: Option<Instant>,
}

impl Player {
    fn buffered(&self, now: Instant) -> f64 {
        let played = self.played_at_anchor
            + self
                .anchor
                .map_or(0.0, |a| now.duration_since(a).as_secs_f64() * 1000.0);
        self.received_ms - played
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).expect("histogram"))
}

async fn one_listener(
    args: Arc<HlsArgs>,
    target: Arc<tribune_client::stream::Target>,
    bind: Option<IpAddr>,
) -> Played {
    let mut out = Played::default();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let mut conn = Conn {
        addr: target.addr,
        bind,
        host: target.host.clone(),
        sock: None,
        buf: BytesMut::with_capacity(16 * 1024),
    };
    let result = play(&args, &target, &mut conn, start, deadline, &mut out).await;
    if let Err(e) = result {
        out.fault = Some(e);
    }
    out
}

fn resolve(base: &str, uri: &str) -> String {
    match base.rfind('/') {
        Some(at) => format!("{}{uri}", &base[..=at]),
        None => uri.to_string(),
    }
}

async fn play(
    args: &HlsArgs,
    target: &tribune_client::stream::Target,
    conn: &mut Conn,
    start: Instant,
    deadline: Instant,
    out: &mut Played,
) -> Result<(), String> {
    let by = |t: f64| Instant::now() + Duration::from_secs_f64(t);
    let master_path = target.path.clone();
    let master = conn.get(&master_path, by(10.0)).await?;
    out.requests += 1;
    if master.status != 200 {
        return Err(format!("master answered {}", master.status));
    }
    let text = String::from_utf8_lossy(&master.body).into_owned();
    let media_uri = text
        .lines()
        .find(|l| !l.starts_with('#') && l.starts_with(&format!("{}/", args.rendition)))
        .ok_or("no such rendition in the master playlist")?;
    let media_path = resolve(&master_path, media_uri);
    let playlist_of = |got: &Got| -> Result<Playlist, String> {
        parse_playlist(std::str::from_utf8(&got.body).map_err(|_| "a playlist that is not UTF-8")?)
    };
    let got = conn.get(&media_path, by(10.0)).await?;
    out.requests += 1;
    if got.status != 200 {
        return Err(format!("media playlist answered {}", got.status));
    }
    let mut playlist = playlist_of(&got)?;
    let init = conn
        .get(&resolve(&media_path, "init.mp4"), by(10.0))
        .await?;
    out.requests += 1;
    out.bytes += init.body.len() as u64;
    if init.status != 200 {
        return Err(format!("init answered {}", init.status));
    }
    check_init(&init.body, &args.rendition)?;
    let mut check = FragmentCheck::default();
    let mut player = Player {
        started: None,
        received_ms: 0.0,
        stall_since: None,
        played_at_anchor: 0.0,
        anchor: None,
    };
    // where to start: three parts (LL) or three segments (plain) back
    let mut next_part: Option<(u64, u32)> = None;
    let mut next_segment: Option<u64> = None;
    if args.plain {
        let n = playlist.segments.len();
        next_segment = playlist.segments.get(n.saturating_sub(3)).map(|s| s.0);
    } else {
        let n = playlist.parts.len();
        next_part = playlist
            .parts
            .get(n.saturating_sub(3))
            .map(|p| (p.0, p.1))
            .or(playlist.hint);
    }
    let mut last_reload = Instant::now();
    // at most a few requests per second of play, whatever the server says
    let max_requests = (args.duration * 10.0) as u64 + 20;
    // the last request made and its answer, for a fault's detail
    let mut last = String::new();
    while Instant::now() < deadline {
        out.fragments = check.fragments;
        if out.requests > max_requests {
            return Err(format!(
                "the playlist does not move on: {} requests in {:.1} s, the last {last}",
                out.requests,
                start.elapsed().as_secs_f64()
            ));
        }
        // what the next file is, and its timing from the playlist
        let (path, timing) = if args.plain {
            let Some(msn) = next_segment else {
                return Err("nothing to play".into());
            };
            let listed = playlist
                .segments
                .iter()
                .find(|s| s.0 == msn)
                .map(|s| (s.1, s.2));
            match listed {
                Some(t) => (resolve(&media_path, &format!("seg{msn}.m4s")), t),
                None if playlist.ended => return Err(ENDED.into()),
                None => {
                    // plain players reload every target duration
                    let wait = Duration::from_secs_f64(playlist.target_ms.max(1000.0) / 1000.0)
                        .saturating_sub(last_reload.elapsed());
                    tokio::time::sleep(
                        wait.min(deadline.saturating_duration_since(Instant::now())),
                    )
                    .await;
                    let got = conn.get(&media_path, by(10.0)).await?;
                    out.requests += 1;
                    last_reload = Instant::now();
                    if got.status != 200 {
                        return Err(format!("playlist answered {}", got.status));
                    }
                    playlist = playlist_of(&got)?;
                    account(&mut player, Instant::now(), out);
                    continue;
                }
            }
        } else {
            let Some((mut msn, mut part)) = next_part else {
                return Err("nothing to play".into());
            };
            let listed_part = |m: u64, k: u32| playlist.parts.iter().any(|p| p.0 == m && p.1 == k);
            if !listed_part(msn, part)
                && !playlist.ended
                && playlist.segments.iter().any(|s| s.0 == msn)
            {
                // the segment is complete: a part index past its last part
                // is the next segment's part 0; an earlier one that is no
                // longer listed means the player fell behind
                if !playlist.parts.iter().any(|p| p.0 == msn) {
                    return Err(format!(
                        "fell behind: part {msn}.{part} is no longer listed"
                    ));
                }
                if !playlist.parts.iter().any(|p| p.0 == msn && p.1 >= part) {
                    (msn, part) = (msn + 1, 0);
                    next_part = Some((msn, part));
                }
            }
            if playlist.segments.first().is_some_and(|s| msn < s.0) {
                return Err(format!(
                    "fell behind: part {msn}.{part} is before the playlist's first segment"
                ));
            }
            let listed = playlist
                .parts
                .iter()
                .find(|p| p.0 == msn && p.1 == part)
                .map(|p| (p.2, p.3));
            match listed {
                Some(t) => (resolve(&media_path, &format!("part{msn}.{part}.m4s")), t),
                None if playlist.ended => return Err(ENDED.into()),
                None => {
                    // a blocking reload until that part is listed
                    let path =
                        format!("{media_path}?_HLS_msn={msn}&_HLS_part={part}&_HLS_skip=YES");
                    let got = conn.get(&path, by(15.0)).await?;
                    out.requests += 1;
                    last = format!("{path} answered {} for part {msn}.{part}", got.status);
                    match got.status {
                        200 => playlist = playlist_of(&got)?,
                        503 => {}
                        s => return Err(format!("blocking reload answered {s}")),
                    }
                    account(&mut player, Instant::now(), out);
                    continue;
                }
            }
        };
        let got = conn.get(&path, by(15.0)).await?;
        out.requests += 1;
        if got.status != 200 {
            return Err(format!("{path} answered {}", got.status));
        }
        out.bytes += got.body.len() as u64;
        let audio = check.check(&got.body).map_err(|e| format!("{path}: {e}"))?;
        let (listed_ms, ingest_ms) = timing;
        if (audio - listed_ms).abs() > 1.0 {
            return Err(format!(
                "{path}: {audio:.2} ms of audio, the playlist says {listed_ms:.2}"
            ));
        }
        let now = Instant::now();
        account(&mut player, now, out);
        player.received_ms += audio;
        out.audio_ms += audio;
        if player.started.is_none() {
            player.started = Some(now);
            player.anchor = Some(now);
            out.ttfa_ms = Some(now.duration_since(start).as_secs_f64() * 1000.0);
        }
        if let Some(since) = player.stall_since.take() {
            // playback resumes with what just came
            out.stall_ms += now.duration_since(since).as_secs_f64() * 1000.0;
            player.anchor = Some(now);
            player.played_at_anchor = player.received_ms - audio;
        }
        // the sample being played now was ingested at ...
        let playing_ingest = ingest_ms + audio - player.buffered(now);
        if ingest_ms > 0.0 {
            out.latencies.push(wall_ms() - playing_ingest);
        }
        if args.plain {
            next_segment = next_segment.map(|m| m + 1);
        } else if let Some((msn, part)) = next_part {
            let last_in_segment = playlist
                .parts
                .iter()
                .filter(|p| p.0 == msn)
                .map(|p| p.1)
                .max()
                .unwrap_or(part);
            let segment_done = playlist.segments.iter().any(|s| s.0 == msn);
            next_part = Some(if part >= last_in_segment && segment_done {
                (msn + 1, 0)
            } else {
                (msn, part + 1)
            });
        }
    }
    account(&mut player, Instant::now().min(deadline), out);
    out.fragments = check.fragments;
    Ok(())
}

const ENDED: &str = "ended: the playlist ended (EXT-X-ENDLIST) before the listener's time was up";

/// A buffer that ran dry is a stall (counted once, until audio comes).
fn account(player: &mut Player, now: Instant, out: &mut Played) {
    if player.started.is_none() || player.stall_since.is_some() {
        return;
    }
    let buffered = player.buffered(now);
    if buffered < 0.0 {
        out.stalls += 1;
        let dry_for = Duration::from_secs_f64(-buffered / 1000.0);
        player.stall_since = Some(now.checked_sub(dry_for).unwrap_or(now));
    }
}

/// What a run (or one worker's share of it) measured; mergeable.
struct HlsTotals {
    listeners: u64,
    passed: u64,
    stalls: u64,
    stall_ms: f64,
    faults: BTreeMap<String, u64>,
    requests: u64,
    bytes: u64,
    audio_ms: f64,
    fragments: u64,
    cpu: f64,
    elapsed: f64,
    ttfa: Histogram<u64>,
    latency: Histogram<u64>,
}

impl HlsTotals {
    fn from_outcomes(outcomes: &[Played], cpu: f64, elapsed: f64) -> HlsTotals {
        let mut t = HlsTotals {
            listeners: outcomes.len() as u64,
            passed: 0,
            stalls: 0,
            stall_ms: 0.0,
            faults: BTreeMap::new(),
            requests: 0,
            bytes: 0,
            audio_ms: 0.0,
            fragments: 0,
            cpu,
            elapsed,
            ttfa: hist(),
            latency: hist(),
        };
        for o in outcomes {
            if let Some(v) = o.ttfa_ms {
                let _ = t.ttfa.record(v.max(1.0) as u64);
            }
            for &l in &o.latencies {
                let _ = t.latency.record(l.max(1.0) as u64);
            }
            if let Some(f) = &o.fault {
                // group faults by their kind (the text before any detail)
                let kind: String = f.split(':').next().unwrap_or(f).chars().take(80).collect();
                let seen = t.faults.entry(kind).or_default();
                if *seen == 0 {
                    // the first of each kind in full
                    eprintln!("tribune-load hls: {f}");
                }
                *seen += 1;
            }
            t.stalls += u64::from(o.stalls);
            t.stall_ms += o.stall_ms;
            t.requests += o.requests;
            t.bytes += o.bytes;
            t.audio_ms += o.audio_ms;
            t.fragments += o.fragments;
            if o.fault.is_none() && o.stalls == 0 && o.ttfa_ms.is_some() {
                t.passed += 1;
            }
        }
        t
    }

    fn to_json(&self, args: &HlsArgs, with_histograms: bool) -> Value {
        let mut v = json!({
            "url": args.url,
            "mode": if args.plain { "plain HLS (segments)" } else { "LL-HLS (blocking reload, parts)" },
            "rendition": args.rendition,
            "listeners": self.listeners,
            "passed": self.passed,
            "failed": self.listeners - self.passed,
            "stalls": self.stalls,
            "stall_seconds": self.stall_ms / 1000.0,
            "faults": self.faults,
            "requests": self.requests,
            "requests_per_sec": self.requests as f64 / self.elapsed.max(1e-9),
            "bytes": self.bytes,
            "audio_seconds": self.audio_ms / 1000.0,
            "fragments_validated": self.fragments,
            "time_to_first_audio_ms": {"p50": pct(&self.ttfa, 0.5), "p95": pct(&self.ttfa, 0.95), "max": pct(&self.ttfa, 1.0)},
            "latency_ms": {"p50": pct(&self.latency, 0.5), "p95": pct(&self.latency, 0.95), "max": pct(&self.latency, 1.0), "samples": self.latency.len()},
            "elapsed_seconds": self.elapsed,
            "load_cpu_seconds": self.cpu,
        });
        if with_histograms {
            v["histograms"] = json!({
                "ttfa": crate::hist_to_b64(&self.ttfa),
                "latency": crate::hist_to_b64(&self.latency),
            });
        }
        v
    }

    fn from_json(v: &Value) -> Result<HlsTotals, String> {
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
        let h = |k: &str| -> Result<Histogram<u64>, String> {
            crate::hist_from_b64(
                v["histograms"][k]
                    .as_str()
                    .ok_or("worker report without histograms")?,
            )
        };
        Ok(HlsTotals {
            listeners: n("listeners"),
            passed: n("passed"),
            stalls: n("stalls"),
            stall_ms: f("stall_seconds") * 1000.0,
            faults: v["faults"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default(),
            requests: n("requests"),
            bytes: n("bytes"),
            audio_ms: f("audio_seconds") * 1000.0,
            fragments: n("fragments_validated"),
            cpu: f("load_cpu_seconds"),
            elapsed: f("elapsed_seconds"),
            ttfa: h("ttfa")?,
            latency: h("latency")?,
        })
    }

    fn merge(&mut self, o: HlsTotals) {
        self.listeners += o.listeners;
        self.passed += o.passed;
        self.stalls += o.stalls;
        self.stall_ms += o.stall_ms;
        for (k, n) in o.faults {
            *self.faults.entry(k).or_default() += n;
        }
        self.requests += o.requests;
        self.bytes += o.bytes;
        self.audio_ms += o.audio_ms;
        self.fragments += o.fragments;
        self.cpu += o.cpu;
        self.elapsed = self.elapsed.max(o.elapsed);
        let _ = self.ttfa.add(&o.ttfa);
        let _ = self.latency.add(&o.latency);
    }

    fn print(&self, args: &HlsArgs) {
        let r = self.to_json(args, false);
        println!(
            "tribune-load hls: {} listeners on {} ({}, {} worker process(es))",
            self.listeners,
            args.url,
            r["mode"].as_str().unwrap_or(""),
            args.workers
        );
        println!(
            "  time to first audio ms: p50 {} p95 {} max {}",
            r["time_to_first_audio_ms"]["p50"],
            r["time_to_first_audio_ms"]["p95"],
            r["time_to_first_audio_ms"]["max"]
        );
        println!(
            "  latency from PROGRAM-DATE-TIME ms: p50 {} p95 {} max {} ({} samples)",
            r["latency_ms"]["p50"],
            r["latency_ms"]["p95"],
            r["latency_ms"]["max"],
            self.latency.len()
        );
        println!(
            "  stalls: {} ({:.1} s)  faults: {:?}  fragments validated: {}",
            self.stalls,
            self.stall_ms / 1000.0,
            self.faults,
            self.fragments
        );
        println!(
            "  requests: {} ({:.0}/s)  bytes: {}  audio: {:.0} s  elapsed: {:.1} s  load generator CPU: {:.2} s",
            self.requests,
            self.requests as f64 / self.elapsed.max(1e-9),
            self.bytes,
            self.audio_ms / 1000.0,
            self.elapsed,
            self.cpu
        );
    }
}

/// Runs `workers` copies of this program, each with its share of the
/// listeners and source addresses, and merges their reports.
fn run_workers(args: &HlsArgs) -> Result<HlsTotals, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("tribune-load-hls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let k = args.workers;
    let mut children = Vec::new();
    for i in 0..k {
        let n = args.listeners / k + usize::from(i < args.listeners % k);
        if n == 0 {
            continue;
        }
        let binds: Vec<String> = args
            .bind
            .iter()
            .skip(i % args.bind.len().max(1))
            .step_by(k.min(args.bind.len()).max(1))
            .map(|ip| ip.to_string())
            .collect();
        let json = dir.join(format!("worker-{i}.json"));
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["hls", &args.url, "--listeners", &n.to_string()])
            .args(["--ramp", &(args.ramp / k as f64).to_string()])
            .args(["--duration", &args.duration.to_string()])
            .args(["--rendition", &args.rendition, "--emit-histograms"])
            .arg("--json")
            .arg(&json)
            .stdout(std::process::Stdio::null());
        if args.plain {
            cmd.arg("--plain");
        }
        if !binds.is_empty() {
            cmd.arg("--bind").arg(binds.join(","));
        }
        children.push((
            cmd.spawn()
                .map_err(|e| format!("cannot start worker: {e}"))?,
            json,
        ));
    }
    crate::collect_workers(children, &dir, HlsTotals::from_json, HlsTotals::merge)
}

/// Runs the listeners in this process.
async fn run_here(args: &HlsArgs) -> Result<HlsTotals, String> {
    let target = Arc::new(tribune_client::stream::parse_url(&args.url)?);
    let args = Arc::new(args.clone());
    let epoch = Instant::now();
    let cpu0 = crate::cpu_seconds();
    let outcomes = Arc::new(Mutex::new(Vec::with_capacity(args.listeners)));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.listeners {
        let due = epoch + Duration::from_secs_f64(i as f64 / args.ramp);
        tokio::time::sleep_until(due.into()).await;
        let bind = (!args.bind.is_empty()).then(|| args.bind[i % args.bind.len()]);
        let (args, target, outcomes) = (args.clone(), target.clone(), outcomes.clone());
        tasks.spawn(async move {
            let played = one_listener(args, target, bind).await;
            outcomes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(played);
        });
    }
    while tasks.join_next().await.is_some() {}
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(HlsTotals::from_outcomes(
        &outcomes,
        crate::cpu_seconds() - cpu0,
        epoch.elapsed().as_secs_f64(),
    ))
}

/// True when every listener passed: audio came, every fragment was
/// valid, no stall, no fault.
pub async fn hls(args: HlsArgs) -> Result<bool, String> {
    if args.listeners == 0 || args.duration <= 0.0 || args.ramp <= 0.0 || args.workers == 0 {
        return Err("listeners, duration, ramp and workers must be positive".into());
    }
    if let Some(ip) = args.bind.iter().find(|ip| !ip.is_loopback()) {
        return Err(format!("--bind {ip}: only loopback source addresses"));
    }
    let totals = if args.workers > 1 {
        let a = args.clone();
        tokio::task::spawn_blocking(move || run_workers(&a))
            .await
            .map_err(|e| e.to_string())??
    } else {
        run_here(&args).await?
    };
    totals.print(&args);
    if let Some(path) = &args.json {
        let report = totals.to_json(&args, args.emit_histograms);
        std::fs::write(
            path,
            serde_json::to_string_pretty(&report).unwrap_or_default(),
        )
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    println!(
        "{} passed, {} failed",
        totals.passed,
        totals.listeners - totals.passed
    );
    Ok(totals.passed == totals.listeners && totals.fragments > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playlists_parse_with_dates_parts_and_skips() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:3\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-SKIP:SKIPPED-SEGMENTS=4\n\
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z\n#EXT-X-PART:DURATION=1.00000,URI=\"part4.0.m4s\",INDEPENDENT=YES\n\
#EXT-X-PART:DURATION=1.00000,URI=\"part4.1.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=1.00000,URI=\"part4.2.m4s\",INDEPENDENT=YES\n\
#EXTINF:3.00000,\nseg4.m4s\n#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:23.000Z\n\
#EXT-X-PART:DURATION=1.00000,URI=\"part5.0.m4s\",INDEPENDENT=YES\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part5.1.m4s\"\n";
        let p = parse_playlist(text).unwrap();
        assert_eq!(p.segments, vec![(4, 3000.0, 1_700_000_000_000.0)]);
        assert_eq!(p.parts.len(), 4);
        assert_eq!(p.parts[1], (4, 1, 1000.0, 1_700_000_001_000.0));
        assert_eq!(p.parts[3], (5, 0, 1000.0, 1_700_000_003_000.0));
        assert_eq!(p.hint, Some((5, 1)));
        assert_eq!(p.target_ms, 3000.0);
        assert!(!p.ended);
        assert!(parse_playlist("garbage").is_err());
    }

    #[test]
    fn fragments_must_follow_each_other() {
        use tribune_media::hls::{index::group_frames, AudioConfig, HlsLayout, RenditionIndex};
        let mut track = tribune_core::track::Track::new(4800);
        let mut index = RenditionIndex::new(HlsLayout::DEFAULT, AudioConfig::PROGRAM_OPUS);
        for i in 0..200u64 {
            for g in track.push(bytes::Bytes::from(vec![0xF8, i as u8]), 960, i * 20) {
                for f in group_frames(&g) {
                    index.push(f).unwrap();
                }
            }
        }
        let parts: Vec<_> = index.parts().map(|p| p.bytes.clone()).collect();
        check_init(&index.init_segment().unwrap(), "opus").unwrap();
        assert!(check_init(&index.init_segment().unwrap(), "aac").is_err());
        let mut check = FragmentCheck::default();
        let part_ms = HlsLayout::DEFAULT.part_samples() as f64 / 48.0;
        for p in &parts {
            assert_eq!(check.check(p).unwrap(), part_ms);
        }
        // a part skipped is a fault, and so is a cut box
        let mut check = FragmentCheck::default();
        check.check(&parts[0]).unwrap();
        assert!(check.check(&parts[2]).is_err());
        assert!(FragmentCheck::default()
            .check(&parts[0][..parts[0].len() - 3])
            .is_err());
    }
}
