//! WebRTC for the stage: every speaker's peer connection multiplexed on one
//! UDP port. str0m holds each peer's protocol state (ICE-lite, DTLS, SRTP,
//! RTP); this task only moves datagrams, timeouts and audio in and out.

use super::events::{MixInput, PeerEvent, PeerSink};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

enum Command {
    Add {
        session: u64,
        rtc: Box<Rtc>,
        audio: Mid,
        sink: PeerSink,
    },
    Close {
        session: u64,
    },
    Send {
        session: u64,
        rtp_ts: u64,
        payload: Bytes,
    },
}

/// Why an offer was refused, with the HTTP status WHIP answers.
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    #[error("the SDP offer could not be parsed: {0}")]
    Malformed(String),
    #[error("the offer has no audio: the stage carries audio only")]
    NoAudio,
    #[error("the offer's audio does not include Opus, the only codec the stage takes")]
    NoOpus,
    #[error("the offer was refused: {0}")]
    Refused(String),
}

impl OfferError {
    pub fn status(&self) -> u16 {
        match self {
            OfferError::Malformed(_) | OfferError::Refused(_) => 400,
            OfferError::NoAudio | OfferError::NoOpus => 415,
        }
    }
}

#[derive(Clone)]
pub struct RtcHub {
    commands: mpsc::UnboundedSender<Command>,
    /// The address peers are told to send to.
    pub candidate: SocketAddr,
}

/// A peer not connected this long after its offer is dropped.
const CONNECT_DEADLINE: Duration = Duration::from_secs(20);

impl RtcHub {
    /// Binds the stage's UDP port. `public_ip` is what peers are told to
    /// send to when the bound address is a wildcard.
    pub async fn bind(
        addr: SocketAddr,
        public_ip: Option<std::net::IpAddr>,
    ) -> std::io::Result<RtcHub> {
        let socket = UdpSocket::bind(addr).await?;
        let local = socket.local_addr()?;
        let ip = match public_ip {
            Some(ip) => ip,
            None if local.ip().is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
            None => local.ip(),
        };
        let candidate = SocketAddr::new(ip, local.port());
        let (commands, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(Arc::new(socket), rx));
        Ok(RtcHub {
            commands,
            candidate,
        })
    }

    /// Answers a WHIP offer: a new peer (not yet running) and its SDP answer.
    pub fn answer(&self, offer: &str) -> Result<(Rtc, Mid, String), OfferError> {
        if !offer.starts_with("v=0") {
            return Err(OfferError::Malformed("it must start with \"v=0\"".into()));
        }
        // str0m's parse error quotes its parser's internals (pointers
        // among them): log it, answer in our own words
        let parsed = SdpOffer::from_sdp_string(offer).map_err(|e| {
            tracing::debug!(error = %e, "unparsable SDP offer");
            OfferError::Malformed("check that it is a complete WebRTC offer".into())
        })?;
        check_offer(offer)?;
        let offer = parsed;
        let mut rtc = RtcConfig::new()
            .set_ice_lite(true)
            .clear_codecs()
            .enable_opus(true, false)
            .build(Instant::now());
        let candidate = Candidate::host(self.candidate, "udp")
            .map_err(|e| OfferError::Refused(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| OfferError::Refused(e.to_string()))?;
        let audio = answer_audio_mid(&rtc, &answer.to_sdp_string()).ok_or(OfferError::NoOpus)?;
        Ok((rtc, audio, answer.to_sdp_string()))
    }

    pub fn add(&self, session: u64, rtc: Rtc, audio: Mid, sink: PeerSink) {
        let _ = self.commands.send(Command::Add {
            session,
            rtc: Box::new(rtc),
            audio,
            sink,
        });
    }

    pub fn close(&self, session: u64) {
        let _ = self.commands.send(Command::Close { session });
    }

    /// Sends one Opus frame (the speaker's mix-minus) to a peer.
    pub fn send(&self, session: u64, rtp_ts: u64, payload: Bytes) {
        let _ = self.commands.send(Command::Send {
            session,
            rtp_ts,
            payload,
        });
    }
}

/// Names what a well-formed offer lacks, so the common mistakes get a
/// precise answer.
fn check_offer(sdp: &str) -> Result<(), OfferError> {
    let mut audio = false;
    let mut opus = false;
    let mut in_audio = false;
    for line in sdp.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            in_audio = m.starts_with("audio ");
            audio |= in_audio;
        } else if in_audio {
            if let Some(rtpmap) = line.strip_prefix("a=rtpmap:") {
                let codec = rtpmap.split_whitespace().nth(1).unwrap_or("");
                opus |= codec.to_ascii_lowercase().starts_with("opus/48000");
            }
        }
    }
    if !audio {
        return Err(OfferError::NoAudio);
    }
    if !opus {
        return Err(OfferError::NoOpus);
    }
    Ok(())
}

/// The accepted audio media line of the answer, if it receives Opus.
fn answer_audio_mid(rtc: &Rtc, answer: &str) -> Option<Mid> {
    let mut mids = Vec::new();
    let mut current: Option<(bool, bool)> = None; // (audio, accepted)
    for line in answer.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            let mut parts = m.split_whitespace();
            let kind = parts.next().unwrap_or("");
            let port = parts.next().unwrap_or("0");
            current = Some((kind == "audio", port != "0"));
        } else if let (Some(mid), Some((true, true))) = (line.strip_prefix("a=mid:"), current) {
            mids.push(Mid::from(mid.trim()));
        }
    }
    mids.into_iter().find(|mid| {
        rtc.media(*mid).is_some_and(|m| {
            m.kind() == MediaKind::Audio
                && matches!(m.direction(), Direction::RecvOnly | Direction::SendRecv)
        })
    })
}

struct Peer {
    rtc: Rtc,
    audio: Mid,
    sink: PeerSink,
    timeout: Instant,
    added: Instant,
    connected: bool,
}

impl Peer {
    /// Runs the peer until it wants time to pass, sending what it produced.
    fn drive(&mut self, session: u64, socket: &UdpSocket) {
        loop {
            if !self.rtc.is_alive() {
                return;
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    // UDP: a full send buffer drops the datagram, as the network would
                    let _ = socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => self.event(session, e),
                Err(e) => {
                    tracing::info!(session, error = %e, "peer failed");
                    self.rtc.disconnect();
                    return;
                }
            }
        }
    }

    fn event(&mut self, session: u64, e: Event) {
        match e {
            Event::Connected => {
                self.connected = true;
                self.emit(PeerEvent::Connected { session });
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.rtc.disconnect();
            }
            Event::MediaData(d) if d.mid == self.audio && d.params.spec().codec == Codec::Opus => {
                self.emit(PeerEvent::Audio {
                    session,
                    seq: **d.seq_range.start(),
                    rtp_ts: d.time.numer(),
                    payload: Bytes::copy_from_slice(&d.data),
                });
            }
            _ => {}
        }
    }

    /// A closed mixer (the space ended) just drops the event.
    fn emit(&self, e: PeerEvent) {
        let _ = self.sink.send(MixInput::Peer(e));
    }

    fn send(&mut self, rtp_ts: u64, payload: Bytes) {
        if !self.connected {
            return;
        }
        let Some(writer) = self.rtc.writer(self.audio) else {
            return;
        };
        let Some(pt) = writer
            .payload_params()
            .find(|p| p.spec().codec == Codec::Opus)
            .map(|p| p.pt())
        else {
            return;
        };
        let time = MediaTime::new(rtp_ts, Frequency::FORTY_EIGHT_KHZ);
        if let Err(e) = writer.write(pt, Instant::now(), time, payload.to_vec()) {
            tracing::debug!(error = %e, "mix-minus frame not sent");
        }
    }
}

async fn run(socket: Arc<UdpSocket>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let local = match socket.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut peers: HashMap<u64, Peer> = HashMap::new();
    // Sessions closed before their peer was added: the HTTP side answers
    // and closes independently of this task's queue order.
    let mut closed_early: Vec<u64> = Vec::new();
    let mut by_addr: HashMap<SocketAddr, u64> = HashMap::new();
    let mut buf = vec![0u8; 2048];
    loop {
        let now = Instant::now();
        let next = peers
            .values()
            .map(|p| p.timeout)
            .min()
            .unwrap_or(now + Duration::from_secs(1))
            .max(now);
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let Ok((n, source)) = received else { continue };
                let Ok(receive) = Receive::new(Protocol::Udp, source, local, &buf[..n]) else {
                    continue; // not STUN, DTLS or (S)RTP
                };
                let input = Input::Receive(Instant::now(), receive);
                // a peer's address is learned once; after that no search
                let known = by_addr
                    .get(&source)
                    .copied()
                    .filter(|s| peers.get(s).is_some_and(|p| p.rtc.accepts(&input)));
                let session = known.or_else(|| {
                    let s = peers.iter().find(|(_, p)| p.rtc.accepts(&input)).map(|(s, _)| *s)?;
                    by_addr.insert(source, s);
                    Some(s)
                });
                if let Some(peer) = session.and_then(|s| peers.get_mut(&s).map(|p| (s, p))) {
                    let (session, peer) = peer;
                    if peer.rtc.handle_input(input).is_err() {
                        peer.rtc.disconnect();
                    }
                    peer.drive(session, &socket);
                }
                // dead peers are swept on the next timeout or command
                continue;
            }
            command = commands.recv() => {
                let Some(command) = command else { return };
                match command {
                    Command::Add { session, rtc, audio, sink } => {
                        if let Some(i) = closed_early.iter().position(|s| *s == session) {
                            // closed (replaced, removed, deleted) before it got here
                            closed_early.swap_remove(i);
                            let _ = sink.send(MixInput::Peer(PeerEvent::Closed { session }));
                            continue;
                        }
                        let mut peer = Peer { rtc: *rtc, audio, sink, timeout: now, added: now, connected: false };
                        peer.drive(session, &socket);
                        peers.insert(session, peer);
                    }
                    Command::Close { session } => {
                        match peers.get_mut(&session) {
                            Some(p) => p.rtc.disconnect(),
                            None => {
                                if closed_early.len() >= 1024 {
                                    closed_early.remove(0);
                                }
                                closed_early.push(session);
                            }
                        }
                    }
                    Command::Send { session, rtp_ts, payload } => {
                        if let Some(p) = peers.get_mut(&session) {
                            p.send(rtp_ts, payload);
                            p.drive(session, &socket);
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(next.into()) => {
                let now = Instant::now();
                for (&session, p) in peers.iter_mut().filter(|(_, p)| p.timeout <= now) {
                    if p.rtc.handle_input(Input::Timeout(now)).is_err() {
                        p.rtc.disconnect();
                    }
                    p.drive(session, &socket);
                }
            }
        }
        let now = Instant::now();
        by_addr.retain(|_, s| peers.contains_key(s));
        peers.retain(|&session, p| {
            let stale = !p.connected && now.duration_since(p.added) > CONNECT_DEADLINE;
            if stale {
                p.rtc.disconnect();
            }
            let alive = p.rtc.is_alive();
            if !alive {
                p.emit(PeerEvent::Closed { session });
            }
            alive
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_without_opus_audio_are_named() {
        let video = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n";
        assert!(matches!(check_offer(video), Err(OfferError::NoAudio)));
        let pcmu = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\nm=video 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
        assert!(matches!(check_offer(pcmu), Err(OfferError::NoOpus)));
        let opus = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
        assert!(check_offer(opus).is_ok());
    }
}
