//! `tribune-load source`: a timestamped Opus program published in real
//! time over the Icecast source protocol (HTTP PUT), or written to stdout.
//!
//! The program is a sine tone encoded with libopus (20 ms frames). The
//! source writes its own Ogg stream: OpusHead, then OpusTags carrying
//! `TRIBUNE_EPOCH_MS` (the wall clock of granule 0), then one page per
//! `--page-ms` of audio, each written when its last sample is due. A
//! server that passes the source's header pages through unchanged (Icecast,
//! the floor) thus serves the epoch to its listeners, and `tribune-load
//! listen` measures their ingest-to-listener latency exactly as it does
//! Tribune's. Bounded in time: it stops by itself after `--seconds`.

use crate::client;
use bytes::{Bytes, BytesMut};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tribune_media::ogg_page::{write_page, PageHeader, FLAG_EOS};
use tribune_media::opus::OpusHead;
use tribune_media::package::{opus_header_pages, EPOCH_TAG};

/// Opus frame (and packet) duration the program is encoded with.
const FRAME_MS: u32 = 20;
const RATE: u32 = 48_000;
const FRAME_SAMPLES: usize = (RATE / 1000 * FRAME_MS) as usize;
/// A page written this long after its audio was due counts as late.
const LATE_MS: f64 = 10.0;
/// ffmpeg's `sine` source default amplitude (1/8 of full scale).
const AMPLITUDE: f64 = 0.125;

#[derive(clap::Args, Clone, Debug)]
pub struct SourceArgs {
    /// Where to publish: http://HOST:PORT/spaces/ID/source (Tribune),
    /// http://HOST:PORT/MOUNT (Icecast 2.4), optionally with USER:PASS@ or
    /// the icecast:// scheme; or - to write the Ogg stream to stdout.
    pub url: String,
    /// User for HTTP Basic authentication.
    #[arg(long, default_value = "source")]
    pub user: String,
    /// Password for HTTP Basic authentication (Icecast: the source
    /// password; Tribune: a speaker or host token).
    #[arg(long, conflicts_with = "token")]
    pub password: Option<String>,
    /// Token sent as `Authorization: Bearer` (Tribune).
    #[arg(long)]
    pub token: Option<String>,
    /// Seconds of audio to publish, in real time; then the stream ends.
    #[arg(long, default_value_t = 30.0)]
    pub seconds: f64,
    /// Opus bitrate, bits per second.
    #[arg(long, default_value_t = 32_000)]
    pub bitrate: i32,
    /// Frequency of the sine tone, Hz.
    #[arg(long, default_value_t = 440.0)]
    pub tone: f64,
    /// Audio per Ogg page, ms (a multiple of 20).
    #[arg(long, default_value_t = 20)]
    pub page_ms: u32,
    /// Seconds to wait for the connection and the server's answer.
    #[arg(long, default_value_t = 5.0)]
    pub answer_timeout: f64,
}

/// One Ogg page of audio.
pub struct Page {
    pub bytes: Bytes,
    /// Granule (48 kHz samples since granule 0) at the end of the page.
    pub granule: u64,
    pub packets: usize,
}

/// The program: a sine tone encoded to Opus and packed into Ogg pages.
/// Deterministic apart from the serial and epoch the caller chooses.
pub struct Program {
    encoder: opus::Encoder,
    step: f64,
    phase: f64,
    serial: u32,
    sequence: u32,
    granule: u64,
    frames_per_page: usize,
    pre_skip: u16,
}

impl Program {
    pub fn new(bitrate: i32, tone: f64, page_ms: u32, serial: u32) -> Result<Program, String> {
        if page_ms == 0 || !page_ms.is_multiple_of(FRAME_MS) || page_ms > 1000 {
            return Err(format!(
                "--page-ms must be a multiple of {FRAME_MS} up to 1000, not {page_ms}"
            ));
        }
        if !(6_000..=256_000).contains(&bitrate) {
            return Err(format!(
                "--bitrate must be 6000..=256000 bits/s, not {bitrate}"
            ));
        }
        if !(tone > 0.0 && tone < f64::from(RATE) / 2.0) {
            return Err(format!("--tone must be between 0 and 24000 Hz, not {tone}"));
        }
        let err = |e: opus::Error| format!("libopus: {e}");
        let mut encoder = opus::Encoder::new(RATE, opus::Channels::Mono, opus::Application::Audio)
            .map_err(err)?;
        encoder
            .set_bitrate(opus::Bitrate::Bits(bitrate))
            .map_err(err)?;
        let pre_skip = encoder.get_lookahead().map_err(err)?.clamp(0, 65535) as u16;
        Ok(Program {
            encoder,
            step: std::f64::consts::TAU * tone / f64::from(RATE),
            phase: 0.0,
            serial,
            sequence: 0,
            granule: 0,
            frames_per_page: (page_ms / FRAME_MS) as usize,
            pre_skip,
        })
    }

    /// Pages 0 and 1: OpusHead (beginning of stream) and OpusTags with the
    /// wall clock (Unix ms) of granule 0.
    pub fn headers(&mut self, epoch_ms: u64) -> Bytes {
        let head = OpusHead {
            channels: 1,
            pre_skip: self.pre_skip,
            input_rate: RATE,
        };
        self.sequence = 2;
        opus_header_pages(
            self.serial,
            head,
            concat!("tribune-load ", env!("CARGO_PKG_VERSION")),
            &[
                (EPOCH_TAG, epoch_ms.to_string()),
                ("TITLE", "tribune-load source".to_string()),
            ],
        )
    }

    /// Encodes the next page's audio; `last` marks the end of the stream.
    pub fn next_page(&mut self, last: bool) -> Result<Page, String> {
        let mut pcm = [0f32; FRAME_SAMPLES];
        let mut packets: Vec<Vec<u8>> = Vec::with_capacity(self.frames_per_page);
        for _ in 0..self.frames_per_page {
            for s in pcm.iter_mut() {
                *s = (AMPLITUDE * self.phase.sin()) as f32;
                self.phase = (self.phase + self.step) % std::f64::consts::TAU;
            }
            let packet = self
                .encoder
                .encode_vec_float(&pcm, 4000)
                .map_err(|e| format!("libopus: {e}"))?;
            packets.push(packet);
        }
        self.granule += (FRAME_SAMPLES * packets.len()) as u64;
        let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
        let mut out = BytesMut::new();
        write_page(
            &mut out,
            PageHeader {
                flags: if last { FLAG_EOS } else { 0 },
                granule: self.granule,
                serial: self.serial,
                sequence: self.sequence,
            },
            &refs,
        );
        self.sequence += 1;
        Ok(Page {
            bytes: out.freeze(),
            granule: self.granule,
            packets: packets.len(),
        })
    }
}

/// Where the stream goes, and how to authenticate there.
#[derive(Debug, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    Http {
        /// `http://host:port/path`, without credentials.
        url: String,
        /// Credentials from the URL, if any.
        user: Option<String>,
        password: Option<String>,
    },
}

pub fn parse_destination(url: &str) -> Result<Destination, String> {
    if url == "-" {
        return Ok(Destination::Stdout);
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("icecast://"))
        .ok_or_else(|| format!("{url:?}: use http://, icecast:// or - (stdout)"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
            None => (Some(u.to_string()), None),
        },
    };
    Ok(Destination::Http {
        url: format!("http://{hostport}{path}"),
        user,
        password,
    })
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// The source request: what ffmpeg's icecast:// output sends (PUT, a
/// Content-Type, Ice-* headers, an unbounded body), plus
/// `Expect: 100-continue` so refusals come back before any audio.
fn request(path: &str, host: &str, auth: Option<&str>) -> String {
    let mut req = format!(
        "PUT {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tribune-load/{}\r\n\
         Content-Type: audio/ogg\r\nIce-Public: 0\r\nIce-Name: tribune-load source\r\n\
         Ice-Description: timestamped sine (TRIBUNE_EPOCH_MS in OpusTags)\r\n\
         Expect: 100-continue\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// What the server said on the source connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Said {
    /// Go ahead: an interim 100 Continue, or the bodiless `200 OK` with
    /// which Icecast mounts a source.
    Accepted(u16),
    /// A final answer: the server is done with this source.
    Answer {
        status: u16,
        reason: String,
        body: String,
    },
    Closed,
    Error(String),
}

impl std::fmt::Display for Said {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Said::Answer {
                status,
                reason,
                body,
            } => {
                write!(f, "HTTP {status} {reason}")?;
                if !body.trim().is_empty() {
                    write!(f, ": {}", body.trim())?;
                }
                Ok(())
            }
            Said::Accepted(status) => write!(f, "HTTP {status} (go ahead)"),
            Said::Closed => write!(f, "connection closed"),
            Said::Error(e) => write!(f, "connection error: {e}"),
        }
    }
}

/// Reads every answer the server sends (an interim 100, the final answer
/// with its body, then the close) and reports each on `tx`.
async fn read_answers<R: AsyncRead + Unpin>(mut rd: R, tx: mpsc::UnboundedSender<Said>) {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        // one response head
        let (status, reason, len, used) = loop {
            match tribune_client::parse_head(&buf) {
                Ok(Some(head)) => {
                    let len = head.content_length();
                    break (head.status, head.reason, len, head.len);
                }
                Ok(None) => {}
                Err(_) => {
                    let text = String::from_utf8_lossy(&buf[..buf.len().min(200)]).into_owned();
                    let _ = tx.send(Said::Error(format!("not an HTTP answer: {text:?}")));
                    return;
                }
            }
            match rd.read_buf(&mut buf).await {
                Ok(0) => {
                    let _ = tx.send(Said::Closed);
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Said::Error(e.to_string()));
                    return;
                }
            }
        };
        let _ = buf.split_to(used);
        if (100..200).contains(&status) || (status == 200 && len.is_none()) {
            let _ = tx.send(Said::Accepted(status));
            continue;
        }
        // the body: by length, or until close (bounded in size and time)
        let by = Instant::now() + Duration::from_secs(2);
        while len.is_none_or(|l| buf.len() < l) && buf.len() < 64 * 1024 {
            match tokio::time::timeout_at(by.into(), rd.read_buf(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => break,
            }
        }
        let end = len.unwrap_or(buf.len()).min(buf.len());
        let body = String::from_utf8_lossy(&buf[..end]).into_owned();
        let _ = buf.split_to(end);
        let _ = tx.send(Said::Answer {
            status,
            reason,
            body,
        });
        // a final answer: whatever follows is the close
        let mut rest = [0u8; 1024];
        loop {
            match rd.read(&mut rest).await {
                Ok(0) => {
                    let _ = tx.send(Said::Closed);
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Said::Error(e.to_string()));
                    return;
                }
            }
        }
    }
}

type Sink = Box<dyn AsyncWrite + Unpin + Send>;

/// Connects, sends the source request and waits until the server accepts
/// it (100 Continue, or 200 as Icecast answers a request without Expect).
async fn connect(
    args: &SourceArgs,
    url: &str,
    user: Option<String>,
    password: Option<String>,
) -> Result<(Sink, mpsc::UnboundedReceiver<Said>), String> {
    let target = client::parse_url(url)?;
    let auth = match (&args.token, &args.password, password) {
        (Some(t), _, _) => Some(format!("Bearer {t}")),
        (None, Some(p), _) => Some(basic(&args.user, p)),
        (None, None, Some(p)) => Some(basic(user.as_deref().unwrap_or(&args.user), &p)),
        (None, None, None) => None,
    };
    let wait = Duration::from_secs_f64(args.answer_timeout.max(0.1));
    let sock = tokio::time::timeout(wait, tokio::net::TcpStream::connect(target.addr))
        .await
        .map_err(|_| format!("cannot connect to {}: timed out", target.addr))?
        .map_err(|e| format!("cannot connect to {}: {e}", target.addr))?;
    let _ = sock.set_nodelay(true);
    let (rd, mut wr) = sock.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(read_answers(rd, tx));
    wr.write_all(request(&target.path, &target.host, auth.as_deref()).as_bytes())
        .await
        .map_err(|e| format!("cannot send the source request to {url}: {e}"))?;
    match tokio::time::timeout(wait, rx.recv()).await {
        Err(_) => Err(format!(
            "{url} did not answer the source request within {:.1} s",
            wait.as_secs_f64()
        )),
        Ok(None) => Err(format!("{url}: connection lost")),
        Ok(Some(Said::Accepted(_))) => Ok((Box::new(wr), rx)),
        Ok(Some(said)) => Err(format!("PUT {url} refused: {said}")),
    }
}

/// What a finished run did.
#[derive(Debug, Default)]
pub struct Summary {
    pub pages: u64,
    pub packets: u64,
    pub bytes: u64,
    pub late: u64,
    pub max_late_ms: f64,
    pub epoch_ms: u64,
    pub seconds: f64,
    /// The server's final answer, if it sent one.
    pub answer: Option<String>,
    /// The signal that stopped the source before `--seconds`, if any.
    pub stopped_by: Option<&'static str>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tribune-load source: {:.1} s, {} pages, {} packets, {} bytes ({:.1} kbps with Ogg), \
             {} late writes (>{LATE_MS} ms; max {:.1} ms), epoch {}",
            self.seconds,
            self.pages,
            self.packets,
            self.bytes,
            self.bytes as f64 * 8.0 / self.seconds.max(1e-3) / 1000.0,
            self.late,
            self.max_late_ms,
            self.epoch_ms,
        )?;
        if let Some(a) = &self.answer {
            write!(f, "; server: {a}")?;
        }
        if let Some(sig) = self.stopped_by {
            write!(f, "; stopped by {sig}")?;
        }
        Ok(())
    }
}

/// Publishes the program in real time and returns what was written.
pub async fn publish(args: &SourceArgs) -> Result<Summary, String> {
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        return Err("--seconds must be positive".into());
    }
    let mut program = Program::new(args.bitrate, args.tone, args.page_ms, rand::random())?;
    // `shown` is the URL without credentials, for messages
    let (mut sink, mut said, shown): (Sink, Option<mpsc::UnboundedReceiver<Said>>, String) =
        match parse_destination(&args.url)? {
            Destination::Stdout => (Box::new(tokio::io::stdout()), None, "stdout".into()),
            Destination::Http {
                url,
                user,
                password,
            } => {
                let (s, rx) = connect(args, &url, user, password).await?;
                (s, Some(rx), url)
            }
        };
    // a final answer or a close before the end is the server ending the source
    async fn early(said: &mut Option<mpsc::UnboundedReceiver<Said>>) -> Said {
        loop {
            match said {
                Some(rx) => match rx.recv().await {
                    Some(Said::Accepted(_)) => {}
                    Some(s) => return s,
                    None => return Said::Closed,
                },
                None => std::future::pending::<()>().await,
            }
        }
    }
    // SIGTERM or Ctrl-C ends the stream early, with the summary
    let stop = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    };
    tokio::pin!(stop);
    let start = Instant::now();
    let epoch_ms = client::wall_ms().round() as u64;
    let total = (args.seconds * f64::from(RATE)).round() as u64;
    let mut sum = Summary {
        epoch_ms,
        ..Default::default()
    };
    let mut out = program.headers(epoch_ms);
    let mut due = start;
    let mut page_granule = 0;
    let mut page_packets = 0;
    loop {
        let fail = |what: String, sum: &Summary| {
            format!(
                "{shown}: {what} after {:.1} s ({} pages sent)",
                start.elapsed().as_secs_f64(),
                sum.pages
            )
        };
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            s = early(&mut said) => return Err(fail(format!("server ended the source: {s}"), &sum)),
            sig = &mut stop => {
                sum.stopped_by = Some(sig);
                break;
            }
        }
        tokio::select! {
            r = async { sink.write_all(&out).await?; sink.flush().await } => {
                if let Err(e) = r {
                    // the server's answer says more than a broken pipe
                    let why = match tokio::time::timeout(Duration::from_secs(1), early(&mut said)).await {
                        Ok(s @ (Said::Answer { .. } | Said::Error(_))) => format!(": {s}"),
                        _ => String::new(),
                    };
                    return Err(fail(format!("write failed ({e}){why}"), &sum));
                }
            }
            s = early(&mut said) => return Err(fail(format!("server ended the source: {s}"), &sum)),
        }
        let late_ms = due.elapsed().as_secs_f64() * 1000.0;
        if page_packets > 0 {
            sum.pages += 1;
            sum.packets += page_packets as u64;
            sum.late += u64::from(late_ms > LATE_MS);
            sum.max_late_ms = sum.max_late_ms.max(late_ms);
        }
        sum.bytes += out.len() as u64;
        sum.seconds = page_granule as f64 / f64::from(RATE);
        if page_granule >= total {
            break;
        }
        // encode the next page now, then sleep until its last sample is due
        let last = page_granule + (program.frames_per_page * FRAME_SAMPLES) as u64 >= total;
        let page = program.next_page(last)?;
        page_granule = page.granule;
        page_packets = page.packets;
        due = start + Duration::from_secs_f64(page.granule as f64 / f64::from(RATE));
        out = page.bytes;
    }
    let _ = sink.shutdown().await;
    // Tribune answers once the body ends; Icecast just closes.
    if let Some(rx) = &mut said {
        let by = Instant::now() + Duration::from_secs(2);
        while let Ok(Some(s)) = tokio::time::timeout_at(by.into(), rx.recv()).await {
            match s {
                Said::Accepted(_) => {}
                Said::Answer { status, .. } if status >= 300 => {
                    return Err(format!("{shown}: {s} at the end of the stream"));
                }
                Said::Answer { .. } => sum.answer = Some(s.to_string()),
                Said::Closed | Said::Error(_) => break,
            }
        }
    }
    Ok(sum)
}

pub async fn source(args: SourceArgs) -> Result<bool, String> {
    let to_stdout = args.url == "-";
    let sum = publish(&args).await?;
    if to_stdout {
        eprintln!("{sum}");
    } else {
        println!("{sum}");
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::StreamCheck;
    use tribune_media::demux::Demuxer;
    use tribune_media::opus::packet_duration;

    fn stream(page_ms: u32, pages: usize, epoch_ms: u64) -> (Bytes, Vec<Page>) {
        let mut p = Program::new(32_000, 440.0, page_ms, 42).unwrap();
        let head = p.headers(epoch_ms);
        let pages = (0..pages)
            .map(|i| p.next_page(i + 1 == pages).unwrap())
            .collect();
        (head, pages)
    }

    #[test]
    fn the_stream_carries_the_epoch_and_continuous_granules() {
        let epoch = 1_700_000_000_000u64;
        let (head, pages) = stream(20, 250, epoch);
        let mut check = StreamCheck::default();
        let mut lat = Vec::new();
        check.feed(&head, 0.0, 0.0, &mut lat);
        for (i, p) in pages.iter().enumerate() {
            assert_eq!(p.granule, (i as u64 + 1) * 960);
            assert_eq!(p.packets, 1);
            // each page arrives 7 ms after its last sample was due
            let t = p.granule as f64 / 48.0 + 7.0;
            check.feed(&p.bytes, t, epoch as f64 + t, &mut lat);
        }
        assert_eq!(check.fault, None);
        assert_eq!(check.epoch_ms, Some(epoch));
        assert_eq!(check.audio_pages, 250);
        assert!((check.audio_ms - 5000.0).abs() < 1e-6);
        assert!(!lat.is_empty() && lat.iter().all(|l| (l - 7.0).abs() < 1e-6));

        // the ingest demuxer accepts it: mono Opus, 20 ms packets, ~32 kbps
        let mut d = Demuxer::new();
        let mut packets = Vec::new();
        d.push(&head, &mut packets).unwrap();
        for p in &pages {
            d.push(&p.bytes, &mut packets).unwrap();
        }
        assert_eq!(d.head().map(|h| h.channels), Some(1));
        assert_eq!(packets.len(), 250);
        assert!(packets.iter().all(|p| p.duration == 960));
        assert!(packets.iter().all(|p| packet_duration(&p.data) == Ok(960)));
        let kbps = packets.iter().map(|p| p.data.len()).sum::<usize>() as f64 * 8.0 / 5.0 / 1000.0;
        assert!((20.0..=40.0).contains(&kbps), "{kbps} kbps");
        // only the last page ends the stream
        let eos = |b: &Bytes| b[5] & FLAG_EOS != 0;
        assert!(pages[..249].iter().all(|p| !eos(&p.bytes)) && eos(&pages[249].bytes));
    }

    #[test]
    fn longer_pages_hold_several_packets() {
        let (_, pages) = stream(100, 3, 0);
        assert_eq!(
            pages
                .iter()
                .map(|p| (p.packets, p.granule))
                .collect::<Vec<_>>(),
            vec![(5, 4800), (5, 9600), (5, 14400)]
        );
        assert!(Program::new(32_000, 440.0, 30, 1).is_err());
        assert!(Program::new(1_000, 440.0, 20, 1).is_err());
    }

    #[test]
    fn destinations_parse() {
        assert_eq!(parse_destination("-"), Ok(Destination::Stdout));
        assert_eq!(
            parse_destination("icecast://source:hackme@127.0.0.1:8000/live.opus"),
            Ok(Destination::Http {
                url: "http://127.0.0.1:8000/live.opus".into(),
                user: Some("source".into()),
                password: Some("hackme".into()),
            })
        );
        assert_eq!(
            parse_destination("http://h:1/spaces/a/source"),
            Ok(Destination::Http {
                url: "http://h:1/spaces/a/source".into(),
                user: None,
                password: None,
            })
        );
        assert!(parse_destination("rtmp://h/x").is_err());
        assert_eq!(basic("source", "hackme"), "Basic c291cmNlOmhhY2ttZQ==");
    }

    fn args(url: String, seconds: f64) -> SourceArgs {
        SourceArgs {
            url,
            user: "source".into(),
            password: Some("hackme".into()),
            token: None,
            seconds,
            bitrate: 32_000,
            tone: 440.0,
            page_ms: 100,
            answer_timeout: 2.0,
        }
    }

    /// A one-connection server: reads the request head, sends `answer`,
    /// then (if it accepted) reads the body until the source closes.
    async fn server(
        answer: &'static str,
        at_end: &'static str,
    ) -> (String, tokio::task::JoinHandle<(String, Vec<u8>)>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/live.opus", l.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed before the request head");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
            let mut body = buf[head_end..].to_vec();
            s.write_all(answer.as_bytes()).await.unwrap();
            if answer.contains(" 100 ") {
                s.read_to_end(&mut body).await.unwrap();
                s.write_all(at_end.as_bytes()).await.unwrap();
            }
            (head, body)
        });
        (url, task)
    }

    #[tokio::test]
    async fn publishes_in_real_time_to_an_icecast_style_mount() {
        // Icecast 2.4 answers a PUT with Expect: 100-continue with a 100
        // and, at once, a bodiless 200 (mounted)
        let (url, srv) = server(
            "HTTP/1.1 100 Continue\r\nContent-Length: 0\r\n\r\nHTTP/1.0 200 OK\r\n\r\n",
            "",
        )
        .await;
        let t0 = Instant::now();
        let sum = publish(&args(url, 0.5)).await.unwrap();
        let took = t0.elapsed().as_secs_f64();
        assert!((0.45..2.0).contains(&took), "took {took} s");
        assert_eq!((sum.pages, sum.packets, sum.answer), (5, 25, None));
        let (head, body) = srv.await.unwrap();
        assert!(head.starts_with("PUT /live.opus HTTP/1.1\r\n"), "{head}");
        for h in [
            "Authorization: Basic c291cmNlOmhhY2ttZQ==",
            "Content-Type: audio/ogg",
            "Expect: 100-continue",
        ] {
            assert!(head.contains(h), "{h} missing from {head}");
        }
        assert_eq!(body.len() as u64, sum.bytes);
        let mut check = StreamCheck::default();
        check.feed(&body, 0.0, 0.0, &mut Vec::new());
        assert_eq!(check.fault, None);
        assert_eq!(check.epoch_ms, Some(sum.epoch_ms));
        assert_eq!(check.audio_pages, 5);
    }

    #[tokio::test]
    async fn tribune_style_final_answer_is_reported() {
        // Tribune sends 100, then its answer once the body ends
        let (url, srv) = server(
            "HTTP/1.1 100 Continue\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"packets\": 10}",
        )
        .await;
        let sum = publish(&args(url, 0.2)).await.unwrap();
        assert_eq!(
            sum.answer.as_deref(),
            Some("HTTP 200 OK: {\"packets\": 10}")
        );
        srv.await.unwrap();
    }

    #[tokio::test]
    async fn a_refusal_is_an_error_with_status_and_body() {
        let (url, srv) = server(
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: 21\r\nConnection: close\r\n\r\nwrong source password",
            "",
        )
        .await;
        let err = publish(&args(url, 5.0)).await.unwrap_err();
        assert!(
            err.contains("refused: HTTP 401 Unauthorized: wrong source password"),
            "{err}"
        );
        srv.await.unwrap();
    }
}
