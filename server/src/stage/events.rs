//! What flows into a space's mixer thread, in one channel: speakers'
//! WebRTC events (from the UDP task in `rtc.rs`), the Icecast source as a
//! feed (from `ingest.rs`), and the stage's own changes (`hub.rs`).

use bytes::Bytes;
use tribune_media::demux::SourcePacket;

/// What a peer connection tells the space it belongs to.
#[derive(Debug)]
pub enum PeerEvent {
    /// ICE and DTLS are up: media flows.
    Connected { session: u64 },
    /// One Opus frame from the speaker's microphone.
    Audio {
        session: u64,
        seq: u64,
        rtp_ts: u64,
        payload: Bytes,
    },
    /// The peer hung up, timed out or was closed.
    Closed { session: u64 },
}

pub enum MixInput {
    Peer(PeerEvent),
    /// Packets from the space's Icecast source, mixed in as a feed.
    Source {
        packets: Vec<SourcePacket>,
        now_ms: u64,
    },
    SourceGone,
    Join {
        session: u64,
        identity: String,
        name: String,
    },
    Mute {
        session: u64,
        muted: bool,
    },
}

/// Where a peer's events go: its space's mixer.
pub type PeerSink = std::sync::mpsc::Sender<MixInput>;
