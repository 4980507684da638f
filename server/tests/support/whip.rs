//! A WebRTC speaker for tests and the stage benchmark: a str0m peer that
//! publishes through WHIP, sends a synthetic microphone (libopus) and
//! decodes the mix-minus the server sends back.

use super::{request, Response};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

/// What the synthetic microphone says.
#[derive(Clone, Copy, Debug)]
pub enum Signal {
    Tone {
        hz: f64,
        amplitude: f64,
    },
    Silence,
    /// A 20 ms burst of 1 kHz every `every_ms`, silence between: onsets
    /// to time mouth-to-ear latency.
    Clicks {
        every_ms: u64,
    },
}

#[derive(Debug, Default)]
pub struct SpeakerLog {
    pub connected: bool,
    pub frames_sent: u64,
    /// The decoded mix-minus, 48 kHz mono.
    pub received: Vec<i16>,
    /// When each click left the microphone.
    pub clicks_sent: Vec<Instant>,
    /// When a frame arrived whose sound rose above the threshold after quiet.
    pub onsets_heard: Vec<Instant>,
    pub error: Option<String>,
}

pub struct Speaker {
    pub location: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<SpeakerLog>>,
}

impl Speaker {
    /// Stops sending and returns what was heard.
    pub fn finish(mut self) -> SpeakerLog {
        self.stop.store(true, Ordering::Release);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// A WHIP offer for one sendrecv Opus audio line, and the peer behind it.
pub fn offer() -> (Rtc, UdpSocket, Mid, str0m::change::SdpPendingOffer, String) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let mut rtc = Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .build(Instant::now());
    let local = socket.local_addr().expect("local addr");
    rtc.add_local_candidate(Candidate::host(local, "udp").expect("candidate"));
    let mut change = rtc.sdp_api();
    let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let (offer, pending) = change.apply().expect("an offer");
    let sdp = offer.to_sdp_string();
    (rtc, socket, mid, pending, sdp)
}

pub fn post_offer(addr: SocketAddr, id: &str, token: &str, sdp: &str) -> Response {
    let auth = format!("Bearer {token}");
    request(
        addr,
        "POST",
        &format!("/spaces/{id}/whip"),
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/sdp"),
        ],
        Some(sdp),
    )
}

/// Joins the stage of space `id`; the server's refusal comes back as is.
pub fn join(addr: SocketAddr, id: &str, token: &str, signal: Signal) -> Result<Speaker, Response> {
    let (mut rtc, socket, mid, pending, sdp) = offer();
    let res = post_offer(addr, id, token, &sdp);
    if res.status != 201 {
        return Err(res);
    }
    let location = res.header("location").unwrap_or_default().to_string();
    let answer = SdpAnswer::from_sdp_string(&res.text()).expect("an SDP answer");
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .expect("answer accepted");
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut log = SpeakerLog::default();
        if let Err(e) = run(rtc, socket, mid, signal, &flag, &mut log) {
            log.error = Some(e);
        }
        log
    });
    Ok(Speaker {
        location,
        stop,
        thread: Some(thread),
    })
}

const FRAME: usize = 960;

struct Mic {
    signal: Signal,
    encoder: opus::Encoder,
    sample: u64,
}

impl Mic {
    /// The next 20 ms frame, encoded; true when it starts a click.
    fn frame(&mut self) -> (Vec<u8>, bool) {
        let mut pcm = [0f32; FRAME];
        let mut click = false;
        match self.signal {
            Signal::Tone { hz, amplitude } => {
                for (i, s) in pcm.iter_mut().enumerate() {
                    let t = (self.sample + i as u64) as f64 / 48_000.0;
                    *s = (amplitude * (2.0 * std::f64::consts::PI * hz * t).sin()) as f32;
                }
            }
            Signal::Silence => {}
            Signal::Clicks { every_ms } => {
                let frames_per_click = (every_ms / 20).max(2);
                let n = self.sample / FRAME as u64;
                // a quiet second first lets the jitter buffers settle
                if n >= 50 && n.is_multiple_of(frames_per_click) {
                    click = true;
                    for (i, s) in pcm.iter_mut().enumerate() {
                        let t = i as f64 / 48_000.0;
                        *s = (0.8 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as f32;
                    }
                }
            }
        }
        self.sample += FRAME as u64;
        let mut out = vec![0u8; 1500];
        let n = self.encoder.encode_float(&pcm, &mut out).unwrap_or(0);
        out.truncate(n);
        (out, click)
    }
}

fn run(
    mut rtc: Rtc,
    socket: UdpSocket,
    mid: Mid,
    signal: Signal,
    stop: &AtomicBool,
    log: &mut SpeakerLog,
) -> Result<(), String> {
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let mut decoder =
        opus::Decoder::new(48_000, opus::Channels::Mono).map_err(|e| e.to_string())?;
    let mut mic = Mic {
        signal,
        encoder: opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)
            .map_err(|e| e.to_string())?,
        sample: 0,
    };
    let mut next_frame = Instant::now();
    let mut buf = vec![0u8; 2048];
    let mut pcm = vec![0i16; 5760];
    let mut quiet = true;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
        let timeout = loop {
            match rtc.poll_output().map_err(|e| e.to_string())? {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    let _ = socket.send_to(&t.contents, t.destination);
                }
                Output::Event(Event::Connected) => {
                    log.connected = true;
                    next_frame = Instant::now();
                }
                Output::Event(Event::IceConnectionStateChange(
                    IceConnectionState::Disconnected,
                )) => {
                    return Ok(());
                }
                Output::Event(Event::MediaData(d)) => {
                    let arrived = Instant::now();
                    if let Ok(n) = decoder.decode(&d.data, &mut pcm, false) {
                        let frame = &pcm[..n];
                        log.received.extend_from_slice(frame);
                        let peak = frame.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
                        if quiet && peak > 6_000 {
                            log.onsets_heard.push(arrived);
                        }
                        quiet = peak < 2_000;
                    }
                }
                Output::Event(_) => {}
            }
        };
        if !rtc.is_alive() {
            return Ok(());
        }
        let now = Instant::now();
        if log.connected && now >= next_frame {
            let (frame, click) = mic.frame();
            if click {
                log.clicks_sent.push(now);
            }
            if let Some(writer) = rtc.writer(mid) {
                let pt = writer
                    .payload_params()
                    .find(|p| p.spec().codec == Codec::Opus)
                    .map(|p| p.pt());
                if let Some(pt) = pt {
                    let ts = MediaTime::new(mic.sample, Frequency::FORTY_EIGHT_KHZ);
                    writer
                        .write(pt, now, ts, frame)
                        .map_err(|e| e.to_string())?;
                    log.frames_sent += 1;
                }
            }
            next_frame += Duration::from_millis(20);
            continue;
        }
        let until = if log.connected {
            timeout.min(next_frame)
        } else {
            timeout
        };
        let wait = until
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        socket
            .set_read_timeout(Some(wait))
            .map_err(|e| e.to_string())?;
        let input = match socket.recv_from(&mut buf) {
            Ok((n, source)) => match Receive::new(Protocol::Udp, source, local, &buf[..n]) {
                Ok(r) => Input::Receive(Instant::now(), r),
                Err(_) => continue,
            },
            Err(_) => Input::Timeout(Instant::now()),
        };
        rtc.handle_input(input).map_err(|e| e.to_string())?;
    }
    Ok(())
}
