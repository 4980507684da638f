//! Node configuration: embedded defaults, overridden by a TOML file, then
//! by command-line flags.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub data: PathBuf,
    /// Base URL printed in links; derived from `listen` when unset.
    pub public_url: Option<String>,
    /// Listeners this node admits, over all spaces.
    pub max_listeners: usize,
    /// How often new audio is written to listeners (latency vs CPU).
    pub flush_ms: u64,
    /// Audio sent at once to a new listener so playback starts at once.
    pub burst_ms: u64,
    /// Audio kept in memory per space; a listener further behind is cut.
    pub ring_ms: u64,
    /// Duration of one group (one Ogg page) of the program track.
    pub group_ms: u64,
    /// How often the recorder makes the recording durable.
    pub fsync_ms: u64,
    /// A request head must arrive within this time.
    pub header_timeout_ms: u64,
    /// Largest request head accepted.
    pub max_header_bytes: usize,
    /// A source sending nothing for this long is cut.
    pub source_stall_ms: u64,
    /// How far a source's audio may run ahead of real time; a sender
    /// going faster is slowed down (its socket is read no faster).
    pub source_lead_ms: u64,
    /// A listener whose socket accepts nothing for this long is cut.
    pub slow_listener_ms: u64,
    /// Open connections per client IP on the public port (0: unlimited).
    pub per_ip_connections: u32,
    /// Open connections per /24 or /64 on the public port (0: unlimited).
    pub per_subnet_connections: u32,
    /// Connections one IP (one /24 or /64) may reach when the pages behind
    /// it were admitted one by one and hold passes: a crowd behind a NAT.
    pub per_ip_connections_with_passes: u32,
    pub per_subnet_connections_with_passes: u32,
    /// Listener joins per second per IP (0: unlimited), with a burst.
    pub joins_per_ip_per_sec: u32,
    pub join_burst: u32,
    /// Waiting-room tickets released per second as capacity frees.
    pub admit_per_sec: f64,
    /// How long a released ticket holds its slot.
    pub admit_grace_ms: u64,
    /// Open connections on the public port (0: derived from the file limit).
    pub max_connections: usize,
    /// Stop admitting listeners above this resident memory (0: no limit).
    pub max_memory_mb: u64,
    /// A second address for hosts, speakers and sources only, with its own
    /// connection budget, out of reach of any listener flood.
    pub reserved_listen: Option<SocketAddr>,
    /// Open connections on the reserved address.
    pub reserved_connections: usize,
    /// Kernel send buffer per listener socket. Bounded so a listener that
    /// stops reading costs little kernel memory and is noticed (and cut)
    /// within seconds instead of after megabytes.
    pub listener_send_buffer: usize,
    /// UDP address for the stage's WebRTC peers (all on one port). Unset:
    /// the listen address's IP and port number.
    pub rtc_listen: Option<SocketAddr>,
    /// The IP peers are told to send to, when `rtc_listen` is a wildcard.
    pub rtc_public_ip: Option<std::net::IpAddr>,
    /// Run as an edge of this node (`http://host:port`), or of the first of
    /// several (comma separated) that answers: carry its spaces.
    pub upstream: Option<String>,
    /// This node's token (role `node`) for its upstream.
    pub node_token: Option<String>,
    /// Redis for the node directory and fleet-wide counts (`redis://…`).
    pub redis: Option<String>,
    /// The control plane's database: `postgres://…` to share it between
    /// nodes; unset, embedded SQLite under `data`.
    pub database: Option<String>,
    /// This node's name in the directory (default: its public URL).
    pub node_name: Option<String>,
    /// The HLS tier: serve `/spaces/{id}/hls/` (LL-HLS, Opus and AAC).
    pub hls: bool,
    /// Segments whose parts each HLS rendition keeps in memory (3 s each);
    /// older ones are rebuilt from the recording or fetched upstream.
    pub hls_retained_segments: usize,
    /// The AAC-LC rendition's bitrate (0: no AAC rendition). The origin
    /// encodes it; every node in a fleet must say the same.
    pub aac_bitrate: u32,
    /// The AAC-LC rendition's channels (1 or 2).
    pub aac_channels: u8,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data: PathBuf::from("data"),
            public_url: None,
            max_listeners: 15_000,
            flush_ms: 200,
            burst_ms: 1_000,
            ring_ms: 30_000,
            group_ms: 100,
            fsync_ms: 500,
            header_timeout_ms: 10_000,
            max_header_bytes: 8 * 1024,
            source_stall_ms: 10_000,
            source_lead_ms: 2_000,
            slow_listener_ms: 10_000,
            per_ip_connections: 64,
            per_subnet_connections: 1024,
            per_ip_connections_with_passes: 3_000,
            per_subnet_connections_with_passes: 8_192,
            joins_per_ip_per_sec: 10,
            join_burst: 20,
            admit_per_sec: 500.0,
            admit_grace_ms: 15_000,
            max_connections: 0,
            max_memory_mb: 0,
            reserved_listen: None,
            reserved_connections: 256,
            listener_send_buffer: 32 * 1024,
            rtc_listen: None,
            rtc_public_ip: None,
            upstream: None,
            node_token: None,
            redis: None,
            database: None,
            node_name: None,
            hls: true,
            hls_retained_segments: 20,
            aac_bitrate: 64_000,
            aac_channels: 2,
        }
    }
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("invalid config {}: {e}", path.display()))
    }

    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("flush_ms", self.flush_ms),
            ("group_ms", self.group_ms),
            ("ring_ms", self.ring_ms),
            ("fsync_ms", self.fsync_ms),
            ("header_timeout_ms", self.header_timeout_ms),
            ("source_stall_ms", self.source_stall_ms),
            ("source_lead_ms", self.source_lead_ms),
            ("slow_listener_ms", self.slow_listener_ms),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("{name} must be greater than 0"));
            }
        }
        if self.ring_ms < self.burst_ms + 2 * self.flush_ms {
            return Err("ring_ms must hold the burst plus two flushes".into());
        }
        if !self.admit_per_sec.is_finite() || self.admit_per_sec <= 0.0 {
            return Err("admit_per_sec must be greater than 0".into());
        }
        if self.max_header_bytes < 512 {
            return Err("max_header_bytes must be at least 512".into());
        }
        if self.upstream.is_some() && self.node_token.is_none() {
            return Err(
                "an edge (--upstream) needs --node-token (tribune token --role node on the origin)"
                    .into(),
            );
        }
        if let Some(urls) = &self.upstream {
            let urls: Vec<&str> = urls
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .collect();
            if urls.is_empty() {
                return Err("--upstream: expected http://host:port[,http://host:port…]".into());
            }
            if let Some(bad) = urls.iter().find(|u| !u.starts_with("http://")) {
                return Err(format!("--upstream {bad:?}: expected http://host:port"));
            }
        }
        Ok(())
    }

    /// The public port's connection budget: what the file limit allows
    /// after the reserved lane, the recorder and the database.
    pub fn connection_budget(&self, file_limit: u64) -> usize {
        let headroom = self.reserved_connections as u64 + 200;
        let by_files = file_limit.saturating_sub(headroom) as usize;
        match self.max_connections {
            0 => by_files.min(self.max_listeners + 2_000),
            n => n.min(by_files),
        }
    }

    pub fn base_url(&self, bound: SocketAddr) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{bound}"))
    }

    /// The AAC rendition this node's HLS tier serves, if any.
    pub fn aac_config(&self) -> Option<tribune_media::hls::AacLcConfig> {
        (self.aac_bitrate > 0).then_some(tribune_media::hls::AacLcConfig {
            channels: self.aac_channels.clamp(1, 2),
            bitrate: self.aac_bitrate,
        })
    }

    pub fn group_samples(&self) -> u64 {
        self.group_ms * tribune_core::SAMPLE_RATE / 1000
    }

    /// Bytes the ring keeps: `ring_ms` of audio at Opus's top bitrate
    /// (512 kbps), so memory per space has a bound whatever a source sends.
    pub fn ring_bytes(&self) -> usize {
        (self.ring_ms * 64) as usize
    }

    /// Chunks the ring keeps: one per flush over `ring_ms`.
    pub fn ring_chunks(&self) -> usize {
        (self.ring_ms / self.flush_ms).max(4) as usize
    }
}
