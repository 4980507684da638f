//! Test harness: runs the real `tribune` binary, speaks HTTP over plain
//! sockets, and drives real ffmpeg as source and listener.
#![allow(dead_code)]

pub mod services;
pub mod whip;

use bytes::BytesMut;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tribune_media::ogg_page::{scan_page, write_page, PageHeader, ScannedPage};
use tribune_media::opus::OpusHead;
use tribune_media::package::opus_header_pages;

/// Held by tests that each load the machine heavily (a browser, several
/// nodes, encoders): two of them side by side on two cores measure the
/// machine, not Tribune, so a test binary runs them one at a time.
pub fn one_heavy_test_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // a test that failed while holding it leaves it poisoned: the next runs
    HEAVY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The reserved lane's address, when started with one.
    pub reserved: Option<SocketAddr>,
    pub data: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_path_buf();
        let mut s = Server::start_in(&data, args);
        s._dir = Some(dir);
        s
    }

    /// Starts on an existing data directory (for restart tests).
    pub fn start_in(data: &Path, args: &[&str]) -> Server {
        Server::start_at(data, "127.0.0.1:0", args)
    }

    /// Starts on `listen` (a fixed port, for a node that must come back
    /// where it was).
    pub fn start_at(data: &Path, listen: &str, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tribune"))
            .args(["serve", "--listen", listen, "--data"])
            .arg(data)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tribune");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut addr = None;
        let mut reserved = None;
        for line in lines.by_ref() {
            let line = line.expect("read stdout");
            if let Some(url) = line.strip_prefix("tribune listening on http://") {
                addr = Some(url.parse().expect("address"));
            }
            if let Some(url) =
                line.strip_prefix("reserved lane (hosts, speakers, sources) on http://")
            {
                reserved = Some(url.parse().expect("reserved address"));
            }
            // the reserved lane, when there is one, is announced last
            if line.starts_with("reserved lane")
                || ((line.starts_with("admin: ") || line.starts_with("edge of "))
                    && !args.contains(&"--reserved-listen"))
            {
                break;
            }
        }
        let addr = addr.expect("tribune exited before listening");
        // keep draining stdout so the child never blocks on it
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            addr,
            reserved,
            data: data.to_path_buf(),
            _dir: None,
        }
    }

    pub fn token(&self, role: &str, space: Option<&str>, ttl: &str) -> String {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tribune"));
        cmd.args(["token", "--data"])
            .arg(&self.data)
            .args(["--role", role, "--ttl", ttl]);
        if let Some(s) = space {
            cmd.args(["--space", s]);
        }
        let out = cmd.output().expect("tribune token");
        assert!(
            out.status.success(),
            "token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// Creates and starts a space; returns (id, host token).
    pub fn live_space(&self, title: &str) -> (String, String) {
        let admin = self.token("admin", None, "1h");
        let r = request(
            self.addr,
            "POST",
            "/api/spaces",
            &[("Authorization", &format!("Bearer {admin}"))],
            Some(&format!("{{\"title\":\"{title}\"}}")),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        let v = r.json();
        let id = v["id"].as_str().expect("id").to_string();
        let host = v["host_token"].as_str().expect("host token").to_string();
        let r = request(
            self.addr,
            "POST",
            &format!("/api/spaces/{id}/start"),
            &[("Authorization", &format!("Bearer {host}"))],
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        (id, host)
    }

    pub fn end_space(&self, id: &str, token: &str) -> Response {
        request(
            self.addr,
            "POST",
            &format!("/api/spaces/{id}/end"),
            &[("Authorization", &format!("Bearer {token}"))],
            None,
        )
    }

    /// `GET /api/spaces/{id}` as JSON.
    pub fn info(&self, id: &str) -> Value {
        request(self.addr, "GET", &format!("/api/spaces/{id}"), &[], None).json()
    }

    /// `GET /api/spaces/{id}` as JSON, with a token (private spaces).
    pub fn info_as(&self, id: &str, token: &str) -> Value {
        let auth = format!("Bearer {token}");
        request(
            self.addr,
            "GET",
            &format!("/api/spaces/{id}"),
            &[("Authorization", &auth)],
            None,
        )
        .json()
    }

    /// Waits until the space's track holds more than `n` packets.
    pub fn wait_for_packets(&self, id: &str, n: u64) {
        let ok = eventually(Duration::from_secs(10), || {
            self.info(id)["packets"].as_u64().unwrap_or(0) > n
        });
        assert!(ok, "space {id} never got {n} packets: {}", self.info(id));
    }

    /// Publishes `seconds` of a tone with real ffmpeg and waits for it to finish.
    pub fn publish(&self, id: &str, token: &str, seconds: f64, freq: u32) {
        let out = ffmpeg_source(self.addr, id, token, seconds, freq)
            .wait_with_output()
            .expect("ffmpeg source");
        assert!(
            out.status.success(),
            "source failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The bytes of `GET /spaces/{id}/replay.opus`.
    pub fn replay(&self, id: &str) -> Vec<u8> {
        request(
            self.addr,
            "GET",
            &format!("/spaces/{id}/replay.opus"),
            &[],
            None,
        )
        .body
    }

    /// A token for space `id` minted by its host through the API.
    pub fn mint(&self, id: &str, host: &str, role: &str, identity: &str) -> String {
        let r = request(
            self.addr,
            "POST",
            &format!("/api/spaces/{id}/tokens"),
            &[("Authorization", &format!("Bearer {host}"))],
            Some(&format!(
                r#"{{"role":"{role}","identity":"{identity}","ttl":"1h"}}"#
            )),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["token"].as_str().expect("token").to_string()
    }

    /// `GET /api/spaces/{id}/tracks`: each speaker's recorded track.
    pub fn tracks(&self, id: &str) -> Vec<Value> {
        let r = request(
            self.addr,
            "GET",
            &format!("/api/spaces/{id}/tracks"),
            &[],
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["tracks"].as_array().cloned().unwrap_or_default()
    }

    /// Real ffmpeg decoding the space's replay, served over HTTP.
    pub fn decode_replay(&self, id: &str) -> Decoded {
        finish_decode(ffmpeg_decode(
            &self.url(&format!("/spaces/{id}/replay.opus")),
        ))
    }

    /// Real ffmpeg listening to `live.opus` for `seconds`, decoded.
    pub fn listen_live(&self, id: &str, seconds: u32) -> Decoded {
        require_tool("ffmpeg");
        let child = Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-t", &seconds.to_string(), "-i"])
            .arg(self.url(&format!("/spaces/{id}/live.opus")))
            .args(["-f", "s16le", "-ac", "1", "-ar", "48000", "-"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ffmpeg");
        finish_decode(child)
    }

    pub fn metrics(&self) -> String {
        request(self.addr, "GET", "/metrics", &[], None).text()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[allow(unused_imports)] // each test binary uses a part
pub use tribune_client::blocking::{parse_response, raw_request, request, Response};

pub fn require_tool(name: &str) {
    let ok = Command::new(name)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        ok,
        "{name} is not installed: run ./scripts/test.sh, which installs it"
    );
}

/// Real ffmpeg publishing a sine tone through Icecast's protocol.
pub fn ffmpeg_source(addr: SocketAddr, id: &str, token: &str, seconds: f64, freq: u32) -> Child {
    require_tool("ffmpeg");
    Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-re", "-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency={freq}:duration={seconds}:sample_rate=48000"
        ))
        .args([
            "-c:a",
            "libopus",
            "-b:a",
            "32k",
            "-page_duration",
            "20000",
            "-content_type",
            "audio/ogg",
            "-f",
            "ogg",
        ])
        .arg(format!(
            "icecast://source:{token}@{addr}/spaces/{id}/source"
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffmpeg source")
}

/// Real ffmpeg decoding a URL to mono 48 kHz s16le; returns (pcm, stderr).
pub fn ffmpeg_decode(input: &str) -> Child {
    require_tool("ffmpeg");
    Command::new("ffmpeg")
        .args([
            "-nostdin", "-v", "error", "-i", input, "-f", "s16le", "-ac", "1", "-ar", "48000", "-",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffmpeg decoder")
}

pub struct Decoded {
    pub samples: Vec<i16>,
    pub errors: String,
    pub success: bool,
}

impl Decoded {
    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / 48_000.0
    }
}

pub fn finish_decode(child: Child) -> Decoded {
    let out = child.wait_with_output().expect("ffmpeg decode");
    Decoded {
        samples: out
            .stdout
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect(),
        errors: String::from_utf8_lossy(&out.stderr).into_owned(),
        success: out.status.success(),
    }
}

/// Power of `freq` relative to the signal's total power (Goertzel). The
/// window is cut to whole 100 ms so tones on a 10 Hz grid do not leak.
pub fn tone_ratio(samples: &[i16], freq: f64) -> f64 {
    let samples = &samples[..samples.len() / 4800 * 4800];
    let n = samples.len() as f64;
    let k = (0.5 + n * freq / 48_000.0).floor();
    let w = 2.0 * std::f64::consts::PI * k / n;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut total = 0.0;
    for &x in samples {
        let x = x as f64;
        total += x * x;
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    if total == 0.0 {
        0.0
    } else {
        2.0 * power / (n * total)
    }
}

/// `tone_ratio` averaged over 100 ms blocks that carry sound: robust to
/// the phase jumps a live path makes (a concealed loss, a jitter-buffer
/// skip), which cancel a single long Goertzel window.
pub fn tone_presence(samples: &[i16], freq: f64) -> f64 {
    let blocks: Vec<f64> = samples
        .chunks_exact(4800)
        .filter(|b| b.iter().any(|x| x.unsigned_abs() > 300))
        .map(|b| tone_ratio(b, freq))
        .collect();
    if blocks.is_empty() {
        0.0
    } else {
        blocks.iter().sum::<f64>() / blocks.len() as f64
    }
}

/// A synthetic Ogg Opus stream: valid framing, `packets` CELT 20 ms packets
/// of `size` bytes. For tests that need volume, not sound.
pub fn synthetic_ogg_opus(packets: usize, size: usize) -> Vec<u8> {
    let serial = 77;
    let mut out = BytesMut::from(&opus_header_pages(serial, OpusHead::PROGRAM, "test", &[])[..]);
    let mut payload = vec![0u8; size];
    payload[0] = 31 << 3; // CELT fullband 20 ms, one frame
    for (i, p) in (0..packets).enumerate() {
        payload[1] = p as u8;
        let h = PageHeader {
            flags: 0,
            granule: 960 * (i as u64 + 1),
            serial,
            sequence: 2 + i as u32,
        };
        write_page(&mut out, h, &[&payload]);
    }
    out.to_vec()
}

/// Waits until `f` is true or the timeout passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Waits (at most 20 s) until `addr` (a node or a cache in front of one)
/// answers a blocking reload for part `msn.part` of the space's Opus
/// rendition: the HLS tier has that much audio.
pub fn wait_for_hls_part(addr: SocketAddr, id: &str, msn: u64, part: u32) {
    let path = format!("/spaces/{id}/hls/opus/media.m3u8?_HLS_msn={msn}&_HLS_part={part}");
    assert!(
        eventually(Duration::from_secs(20), || request(
            addr,
            "GET",
            &path,
            &[],
            None
        )
        .status
            == 200),
        "no HLS part {msn}.{part} at {addr}"
    );
}

/// The part a live media playlist's preload hint names.
pub fn preload_hint(playlist: &str) -> tribune_media::hls::PartId {
    let name = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no preload hint in {playlist}"));
    match tribune_media::hls::layout::parse_resource(name) {
        Some(tribune_media::hls::HlsResource::Part(id)) => id,
        _ => panic!("the preload hint {name} is not a part"),
    }
}

/// Reads a metric's value (summed over label sets matching `labels`).
pub fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| {
            let rest = &l[name.len()..];
            (rest.starts_with(' ') || rest.starts_with('{')) && l.contains(labels)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every Ogg page in `data`, each checked (CRC included); panics on the first bad one.
pub fn ogg_pages(mut data: &[u8]) -> Vec<ScannedPage> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let p = scan_page(data)
            .unwrap_or_else(|e| panic!("invalid page after {} valid ones: {e:?}", out.len()));
        data = &data[p.len..];
        out.push(p);
    }
    out
}
