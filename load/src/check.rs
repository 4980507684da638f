//! What one listener sees, checked byte by byte, and the player it models.
//!
//! Sans-IO: bytes and arrival times go in; verdicts come out. The same
//! code checks Tribune's `live.opus` and an Icecast mount.

use tribune_media::ogg_page::{scan_page, ScanError, FLAG_CONTINUED, HEADER_LEN};
use tribune_media::opus::{packet_duration, parse_opus_tags};
use tribune_media::package::EPOCH_TAG;

/// Audio a player buffers before it starts, and again after a stall.
pub const PLAYER_BUFFER_MS: f64 = 1000.0;
/// Pages arriving this long after the first audio are past the join burst
/// and count toward latency.
const LATENCY_AFTER_MS: f64 = 2000.0;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Bytes that are not an Ogg page.
    Framing(String),
    Crc {
        page_offset: u64,
    },
    /// A page sequence number skipped (lost pages).
    Gap {
        expected: u32,
        got: u32,
    },
    /// A page's granule does not match the audio it carries.
    Granule {
        expected: u64,
        got: u64,
    },
    SerialChanged,
    Opus(String),
}

impl Fault {
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Framing(_) => "framing",
            Fault::Crc { .. } => "crc",
            Fault::Gap { .. } => "gap",
            Fault::Granule { .. } => "granule",
            Fault::SerialChanged => "serial",
            Fault::Opus(_) => "opus",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Play {
    /// Filling the buffer since `since_ms`, with `played_ms` of media done.
    Buffering { since_ms: f64, played_ms: f64 },
    /// Media position 0 would have played at `origin_ms` of wall time.
    Playing { origin_ms: f64 },
}

/// A player fed by page arrivals: starts once it holds 1 s of audio, and
/// stalls when the wall clock passes the audio it has.
#[derive(Debug)]
pub struct Player {
    state: Play,
    buffer_ms: f64,
    media_ms: f64,
    pub stalls: u32,
    pub stall_ms: f64,
}

impl Player {
    #[cfg(test)]
    pub fn new(now_ms: f64) -> Self {
        Player::with_buffer(now_ms, PLAYER_BUFFER_MS)
    }

    /// A player that buffers `buffer_ms` before it starts (and restarts).
    pub fn with_buffer(now_ms: f64, buffer_ms: f64) -> Self {
        Player {
            state: Play::Buffering {
                since_ms: now_ms,
                played_ms: 0.0,
            },
            buffer_ms,
            media_ms: 0.0,
            stalls: 0,
            stall_ms: 0.0,
        }
    }

    #[cfg(test)]
    pub fn playing(&self) -> bool {
        matches!(self.state, Play::Playing { .. })
    }

    /// Did the buffer run dry before `now_ms`?
    fn advance(&mut self, now_ms: f64) {
        if let Play::Playing { origin_ms } = self.state {
            let dry_at = origin_ms + self.media_ms;
            if now_ms > dry_at {
                self.stalls += 1;
                self.state = Play::Buffering {
                    since_ms: dry_at,
                    played_ms: self.media_ms,
                };
            }
        }
    }

    /// Audio lasting `ms` arrived at `now_ms`.
    pub fn on_audio(&mut self, ms: f64, now_ms: f64) {
        self.advance(now_ms);
        self.media_ms += ms;
        if let Play::Buffering {
            since_ms,
            played_ms,
        } = self.state
        {
            if self.media_ms - played_ms >= self.buffer_ms {
                if self.stalls > 0 {
                    self.stall_ms += now_ms - since_ms;
                }
                self.state = Play::Playing {
                    origin_ms: now_ms - played_ms,
                };
            }
        }
    }

    /// Closes the account at `now_ms`. When the server ended the stream
    /// (the space ended), running out of audio afterwards is not a stall.
    pub fn finish(&mut self, now_ms: f64, stream_ended: bool) {
        if stream_ended {
            return;
        }
        self.advance(now_ms);
        if let Play::Buffering { since_ms, .. } = self.state {
            if self.stalls > 0 {
                self.stall_ms += (now_ms - since_ms).max(0.0);
            }
        }
    }
}

/// Validates one listener's Ogg Opus byte stream as it arrives.
#[derive(Debug, Default)]
pub struct StreamCheck {
    buf: Vec<u8>,
    offset: u64,
    serial: Option<u32>,
    next_seq: Option<u32>,
    granule: Option<u64>,
    open_packet: Vec<u8>,
    pub epoch_ms: Option<u64>,
    /// Arrival (monotonic ms) of the first audio page.
    pub first_audio_ms: Option<f64>,
    pub audio_pages: u64,
    pub audio_ms: f64,
    pub fault: Option<Fault>,
    pub player: Option<Player>,
    /// Seq of the next packet (from the server's `X-Tribune-Seq`, counted
    /// on): where a reconnection resumes with `?from=`.
    pub next_packet: Option<u64>,
    /// The player's buffer (0: the default, 1 s).
    pub player_buffer_ms: f64,
}

impl StreamCheck {
    /// A check whose player holds `buffer_ms` before it starts.
    pub fn with_player_buffer(buffer_ms: f64) -> StreamCheck {
        StreamCheck {
            player_buffer_ms: buffer_ms,
            ..Default::default()
        }
    }

    /// A new connection (a failover) starts here, at packet `first_seq`
    /// when the server said. The stream goes on: page numbers and granules
    /// must continue where the last connection left them. Returns the
    /// packets skipped or repeated, when the seqs do not meet.
    pub fn reconnected(&mut self, first_seq: Option<u64>) -> Option<i64> {
        self.buf.clear();
        self.open_packet.clear();
        let jump = match (self.next_packet, first_seq) {
            (Some(expected), Some(got)) if expected != got => Some(got as i64 - expected as i64),
            _ => None,
        };
        if first_seq.is_some() {
            self.next_packet = first_seq;
        }
        jump
    }

    /// Feeds bytes that arrived at `now_ms` (monotonic) / `wall_ms` (Unix
    /// ms). Latencies of live pages are appended to `latencies`. After a
    /// fault the stream is not trusted and further bytes are ignored.
    pub fn feed(&mut self, data: &[u8], now_ms: f64, wall_ms: f64, latencies: &mut Vec<f64>) {
        if self.fault.is_some() {
            return;
        }
        // pages are checked where they arrived; only a page cut by the read
        // is kept for the next one (copying every byte in and out was 13%
        // of the load generator's CPU)
        let mut kept = std::mem::take(&mut self.buf);
        let buf: &[u8] = if kept.is_empty() {
            data
        } else {
            kept.extend_from_slice(data);
            &kept
        };
        let mut at = 0;
        loop {
            let page = match scan_page(&buf[at..]) {
                Ok(p) => p,
                Err(ScanError::Incomplete) => break,
                Err(ScanError::Invalid(why)) => {
                    self.fault = Some(Fault::Framing(format!("{why} at byte {}", self.offset)));
                    break;
                }
                Err(ScanError::BadCrc { .. }) => {
                    self.fault = Some(Fault::Crc {
                        page_offset: self.offset,
                    });
                    break;
                }
            };
            if let Err(f) = self.on_page(&buf[at..at + page.len], now_ms, wall_ms, latencies) {
                self.fault = Some(f);
                break;
            }
            at += page.len;
            self.offset += page.len as u64;
        }
        let rest = buf.len() - at;
        if kept.is_empty() {
            kept.extend_from_slice(&data[at..]);
        } else {
            kept.drain(..kept.len() - rest);
        }
        self.buf = kept;
    }

    fn on_page(
        &mut self,
        page: &[u8],
        now_ms: f64,
        wall_ms: f64,
        latencies: &mut Vec<f64>,
    ) -> Result<(), Fault> {
        let flags = page[5];
        let granule = u64::from_le_bytes(page[6..14].try_into().unwrap_or_default());
        let serial = u32::from_le_bytes(page[14..18].try_into().unwrap_or_default());
        let seq = u32::from_le_bytes(page[18..22].try_into().unwrap_or_default());
        if self.serial.is_some_and(|s| s != serial) {
            return Err(Fault::SerialChanged);
        }
        self.serial = Some(serial);
        let nsegs = page[26] as usize;
        let lacing = &page[HEADER_LEN..HEADER_LEN + nsegs];
        let mut body = &page[HEADER_LEN + nsegs..];
        let mut packets: Vec<Vec<u8>> = Vec::new();
        if flags & FLAG_CONTINUED == 0 {
            self.open_packet.clear();
        }
        for &l in lacing {
            let (seg, rest) = body.split_at(l as usize);
            self.open_packet.extend_from_slice(seg);
            body = rest;
            if l < 255 {
                packets.push(std::mem::take(&mut self.open_packet));
            }
        }
        if packets.first().is_some_and(|p| p.starts_with(b"OpusHead")) {
            return Ok(());
        }
        if let Some(tags) = packets.first().filter(|p| p.starts_with(b"OpusTags")) {
            self.epoch_ms = parse_opus_tags(tags)
                .and_then(|t| t.into_iter().find(|(k, _)| k == EPOCH_TAG))
                .and_then(|(_, v)| v.parse().ok());
            return Ok(());
        }
        // an audio page
        if let Some(expected) = self.next_seq {
            if seq != expected {
                return Err(Fault::Gap { expected, got: seq });
            }
        }
        self.next_seq = Some(seq.wrapping_add(1));
        let mut samples = 0u64;
        for p in &packets {
            samples += u64::from(packet_duration(p).map_err(|e| Fault::Opus(e.to_string()))?);
        }
        if let Some(prev) = self.granule {
            if !packets.is_empty() && granule != prev + samples {
                return Err(Fault::Granule {
                    expected: prev + samples,
                    got: granule,
                });
            }
        }
        if !packets.is_empty() {
            self.granule = Some(granule);
        }
        if let Some(next) = self.next_packet.as_mut() {
            *next += packets.len() as u64;
        }
        let ms = samples as f64 / 48.0;
        self.audio_pages += 1;
        self.audio_ms += ms;
        let first = *self.first_audio_ms.get_or_insert(now_ms);
        let buffer = if self.player_buffer_ms > 0.0 {
            self.player_buffer_ms
        } else {
            PLAYER_BUFFER_MS
        };
        self.player
            .get_or_insert_with(|| Player::with_buffer(now_ms, buffer))
            .on_audio(ms, now_ms);
        if let Some(epoch) = self.epoch_ms {
            if now_ms - first >= LATENCY_AFTER_MS {
                latencies.push(wall_ms - (epoch as f64 + granule as f64 / 48.0));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use tribune_media::package::{group_page, header_pages};

    fn stream(groups: u64) -> (Bytes, Vec<Bytes>) {
        let mut track = tribune_core::track::Track::new(4800);
        let mut pages = Vec::new();
        for i in 0..groups * 5 {
            for g in track.push(Bytes::from(vec![31 << 3, i as u8]), 960, 0) {
                pages.push(group_page(9, &g));
            }
        }
        (header_pages(9, "t", 1_000_000), pages)
    }

    #[test]
    fn a_clean_stream_passes_and_latency_comes_from_the_epoch() {
        let (head, pages) = stream(40);
        let mut c = StreamCheck::default();
        let mut lat = Vec::new();
        c.feed(&head, 0.0, 0.0, &mut lat);
        for (i, p) in pages.iter().enumerate() {
            let t = i as f64 * 100.0;
            // each page arrives 150 ms after its last sample was "spoken"
            let wall = 1_000_000.0 + (i as f64 + 1.0) * 100.0 + 150.0;
            c.feed(p, t, wall, &mut lat);
        }
        assert_eq!(c.fault, None);
        assert_eq!(c.audio_pages, 40);
        assert_eq!(c.epoch_ms, Some(1_000_000));
        assert!(!lat.is_empty() && lat.iter().all(|l| (l - 150.0).abs() < 1e-6));
        assert_eq!(c.player.as_ref().unwrap().stalls, 0);
    }

    #[test]
    fn pages_cut_anywhere_by_reads_are_checked_whole() {
        let (head, pages) = stream(20);
        let mut all = head.to_vec();
        for p in &pages {
            all.extend_from_slice(p);
        }
        for cut in [1, 7, 27, 300, 4096] {
            let mut c = StreamCheck::default();
            let mut lat = Vec::new();
            for piece in all.chunks(cut) {
                c.feed(piece, 0.0, 0.0, &mut lat);
            }
            assert_eq!(c.fault, None, "reads of {cut} bytes");
            assert_eq!(c.audio_pages, 20, "reads of {cut} bytes");
            assert!(c.buf.is_empty(), "reads of {cut} bytes");
        }
        // a corrupt byte after a cut is still caught, at its page
        let mut bad = all.clone();
        let at = head.len() + pages[0].len() + 30;
        bad[at] ^= 0x40;
        let mut c = StreamCheck::default();
        for piece in bad.chunks(50) {
            c.feed(piece, 0.0, 0.0, &mut Vec::new());
        }
        assert!(matches!(c.fault, Some(Fault::Crc { .. })), "{:?}", c.fault);
    }

    #[test]
    fn faults_are_reported_exactly() {
        let (head, pages) = stream(5);
        // a missing page
        let mut c = StreamCheck::default();
        c.feed(&head, 0.0, 0.0, &mut Vec::new());
        c.feed(&pages[0], 0.0, 0.0, &mut Vec::new());
        c.feed(&pages[2], 0.0, 0.0, &mut Vec::new());
        assert_eq!(
            c.fault,
            Some(Fault::Gap {
                expected: 3,
                got: 4
            })
        );
        // a flipped bit
        let mut c = StreamCheck::default();
        let mut bad = BytesMut::from(&pages[1][..]);
        bad[40] ^= 1;
        c.feed(&head, 0.0, 0.0, &mut Vec::new());
        c.feed(&pages[0], 0.0, 0.0, &mut Vec::new());
        c.feed(&bad, 0.0, 0.0, &mut Vec::new());
        assert_eq!(c.fault.as_ref().map(Fault::kind), Some("crc"));
        // not Ogg
        let mut c = StreamCheck::default();
        c.feed(
            b"<html>oops</html>..........................",
            0.0,
            0.0,
            &mut Vec::new(),
        );
        assert_eq!(c.fault.as_ref().map(Fault::kind), Some("framing"));
    }

    #[test]
    fn the_player_stalls_when_audio_stops_arriving() {
        let mut p = Player::new(0.0);
        // 1 s burst at once, then real time
        p.on_audio(1000.0, 0.0);
        assert!(p.playing());
        for i in 1..=10 {
            p.on_audio(100.0, i as f64 * 100.0);
        }
        assert_eq!(p.stalls, 0);
        // nothing for 3 s: the 1 s buffer runs dry at t = 2000
        p.on_audio(100.0, 4000.0);
        assert_eq!(p.stalls, 1);
        // refills after 1 s of audio arrives
        for i in 1..=10 {
            p.on_audio(100.0, 4000.0 + i as f64 * 10.0);
        }
        assert!(p.playing());
        // dry at 2000, refilled (1 s ahead of the 2000 ms played) at 4090
        assert!((p.stall_ms - 2090.0).abs() < 1e-6, "{}", p.stall_ms);
        p.finish(4200.0, false);
        assert_eq!(p.stalls, 1);
    }
}
