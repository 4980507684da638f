//! Ingest demuxer: an Ogg Opus byte stream in, validated Opus packets out.
//!
//! Sans-IO: the caller pushes whatever bytes arrived; pages are framed and
//! CRC-checked here, assembled into packets by the `ogg` crate, and every
//! limit is enforced before anything grows. Chained streams (a new logical
//! stream after the previous one ended, as liquidsoap sends on a track
//! change) are followed; concurrently multiplexed streams are refused.

use crate::ogg_page::{scan_page, ScanError, FLAG_BOS, FLAG_EOS, HEADER_LEN};
use crate::opus::{packet_duration, OpusError, OpusHead, MAX_PACKET_BYTES};
use bytes::{Bytes, BytesMut};
use ogg::reading::{BasePacketReader, PageParser};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error("body is not an Ogg stream ({0})")]
    NotOgg(&'static str),
    #[error("Ogg page checksum mismatch (page at byte {offset})")]
    BadCrc { offset: u64 },
    #[error("stream is {0}, not Opus: send Ogg/Opus (e.g. ffmpeg -c:a libopus -f ogg)")]
    NotOpus(&'static str),
    #[error("invalid Opus stream: {0}")]
    BadOpus(#[from] OpusError),
    #[error("packet spanning pages exceeds {MAX_PACKET_BYTES} bytes")]
    OversizedPacket,
    #[error("multiplexed Ogg streams are not supported: send one audio stream")]
    Multiplexed,
    #[error("malformed Ogg stream: {0}")]
    Malformed(String),
}

impl IngestError {
    /// The HTTP status that best answers this error.
    pub fn http_status(&self) -> u16 {
        match self {
            IngestError::NotOgg(_) | IngestError::NotOpus(_) => 415,
            IngestError::OversizedPacket => 413,
            IngestError::BadOpus(OpusError::TooLarge(_)) => 413,
            _ => 400,
        }
    }
}

/// One audio packet from the source with its duration in 48 kHz samples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcePacket {
    pub data: Bytes,
    pub duration: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Head,
    Tags,
    Audio,
}

pub struct Demuxer {
    buf: BytesMut,
    offset: u64,
    reader: BasePacketReader,
    serial: Option<u32>,
    /// The current logical stream has sent its last page.
    serial_ended: bool,
    expect: Expect,
    head: Option<OpusHead>,
    /// Bytes of a packet still open at the end of the last page.
    open_packet_len: usize,
}

impl Default for Demuxer {
    fn default() -> Self {
        Self::new()
    }
}

fn codec_name(packet: &[u8]) -> &'static str {
    if packet.starts_with(b"\x01vorbis") {
        "Vorbis"
    } else if packet.starts_with(b"\x7fFLAC") || packet.starts_with(b"fLaC") {
        "FLAC"
    } else if packet.starts_with(b"Speex") {
        "Speex"
    } else if packet.starts_with(b"\x80theora") {
        "Theora video"
    } else {
        "an unknown codec"
    }
}

impl Demuxer {
    pub fn new() -> Self {
        Demuxer {
            buf: BytesMut::new(),
            offset: 0,
            reader: BasePacketReader::new(),
            serial: None,
            serial_ended: false,
            expect: Expect::Head,
            head: None,
            open_packet_len: 0,
        }
    }

    /// The OpusHead of the current logical stream, once seen.
    pub fn head(&self) -> Option<OpusHead> {
        self.head
    }

    /// Bytes received that do not yet form a whole page.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feeds received bytes; complete audio packets are appended to `out`.
    /// After an error the stream must be dropped: nothing after it is trusted.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<SourcePacket>) -> Result<(), IngestError> {
        self.buf.extend_from_slice(data);
        loop {
            let page = match scan_page(&self.buf) {
                Ok(page) => page,
                Err(ScanError::Incomplete) => {
                    if self.buf.len() >= 4 && &self.buf[..4] != b"OggS" {
                        return Err(self.not_ogg());
                    }
                    return Ok(());
                }
                Err(ScanError::Invalid(_)) if !self.buf.starts_with(b"OggS") => {
                    return Err(self.not_ogg())
                }
                Err(ScanError::Invalid(why)) => {
                    return Err(IngestError::Malformed(format!(
                        "{why} at byte {}",
                        self.offset
                    )))
                }
                Err(ScanError::BadCrc { .. }) => {
                    return Err(IngestError::BadCrc {
                        offset: self.offset,
                    })
                }
            };
            self.check_page_limits()?;
            let bytes = self.buf.split_to(page.len);
            self.offset += page.len as u64;
            self.feed_page(&bytes, page.header.flags, page.header.serial, out)?;
        }
    }

    fn not_ogg(&self) -> IngestError {
        if self.offset == 0 {
            let what = if self.buf.starts_with(b"RIFF") {
                "looks like WAV"
            } else if self.buf.starts_with(b"ID3") || self.buf[0] == 0xff {
                "looks like MP3"
            } else {
                "no Ogg capture pattern"
            };
            IngestError::NotOgg(what)
        } else {
            IngestError::Malformed(format!("no Ogg capture pattern at byte {}", self.offset))
        }
    }

    /// Tracks the length of a packet that continues across pages, so a
    /// stream of 255-lacing pages cannot make us buffer without bound.
    fn check_page_limits(&mut self) -> Result<(), IngestError> {
        let nsegs = self.buf[26] as usize;
        let lacing = &self.buf[HEADER_LEN..HEADER_LEN + nsegs];
        for &l in lacing {
            self.open_packet_len += l as usize;
            if self.open_packet_len > MAX_PACKET_BYTES {
                return Err(IngestError::OversizedPacket);
            }
            if l < 255 {
                self.open_packet_len = 0;
            }
        }
        Ok(())
    }

    fn feed_page(
        &mut self,
        bytes: &[u8],
        flags: u8,
        serial: u32,
        out: &mut Vec<SourcePacket>,
    ) -> Result<(), IngestError> {
        if flags & FLAG_BOS != 0 {
            if self.serial.is_some() && !self.serial_ended {
                return Err(IngestError::Multiplexed);
            }
            self.serial = Some(serial);
            self.serial_ended = false;
            self.expect = Expect::Head;
        } else if self.serial != Some(serial) {
            return Err(if self.serial.is_none() {
                IngestError::Malformed(
                    "stream does not start with a beginning-of-stream page".into(),
                )
            } else {
                IngestError::Multiplexed
            });
        }
        self.serial_ended = flags & FLAG_EOS != 0;
        let malformed = |e: ogg::OggReadError| IngestError::Malformed(e.to_string());
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&bytes[..HEADER_LEN]);
        let (mut parser, seg_len) = PageParser::new(header).map_err(malformed)?;
        let body_len = parser.parse_segments(bytes[HEADER_LEN..HEADER_LEN + seg_len].to_vec());
        let body = bytes[HEADER_LEN + seg_len..].to_vec();
        debug_assert_eq!(body.len(), body_len);
        let page = parser.parse_packet_data(body).map_err(malformed)?;
        self.reader.push_page(page).map_err(malformed)?;
        while let Some(packet) = self.reader.read_packet() {
            self.on_packet(Bytes::from(packet.data), out)?;
        }
        Ok(())
    }

    fn on_packet(&mut self, data: Bytes, out: &mut Vec<SourcePacket>) -> Result<(), IngestError> {
        match self.expect {
            Expect::Head => {
                if !data.starts_with(b"OpusHead") {
                    return Err(IngestError::NotOpus(codec_name(&data)));
                }
                self.head = Some(OpusHead::parse(&data)?);
                self.expect = Expect::Tags;
            }
            Expect::Tags => {
                if !data.starts_with(b"OpusTags") {
                    return Err(IngestError::BadOpus(OpusError::Malformed(
                        "second packet is not OpusTags",
                    )));
                }
                self.expect = Expect::Audio;
            }
            Expect::Audio => {
                let duration = packet_duration(&data)?;
                out.push(SourcePacket { data, duration });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ogg_page::{write_page, PageHeader, FLAG_EOS};
    use bytes::BytesMut;

    fn stream(serial: u32, first_seq: u32, packets: usize, eos: bool) -> Vec<u8> {
        let mut out = BytesMut::new();
        let head = OpusHead {
            channels: 1,
            pre_skip: 312,
            input_rate: 48000,
        }
        .to_bytes();
        write_page(
            &mut out,
            PageHeader {
                flags: FLAG_BOS,
                granule: 0,
                serial,
                sequence: first_seq,
            },
            &[&head],
        );
        let tags = crate::opus::opus_tags("test", &[]);
        write_page(
            &mut out,
            PageHeader {
                flags: 0,
                granule: 0,
                serial,
                sequence: first_seq + 1,
            },
            &[&tags],
        );
        for i in 0..packets {
            let p = [31u8 << 3, i as u8, 1, 2, 3];
            let flags = if eos && i + 1 == packets { FLAG_EOS } else { 0 };
            let h = PageHeader {
                flags,
                granule: 960 * (i as u64 + 1),
                serial,
                sequence: first_seq + 2 + i as u32,
            };
            write_page(&mut out, h, &[&p]);
        }
        out.to_vec()
    }

    #[test]
    fn packets_come_out_whatever_the_read_boundaries() {
        let data = stream(1, 0, 10, false);
        for step in [1usize, 7, 64, 4096] {
            let mut d = Demuxer::new();
            let mut out = Vec::new();
            for chunk in data.chunks(step) {
                d.push(chunk, &mut out).unwrap();
            }
            assert_eq!(out.len(), 10, "step {step}");
            assert!(out.iter().all(|p| p.duration == 960));
            assert_eq!(out[3].data[1], 3);
            assert_eq!(d.head().unwrap().channels, 1);
        }
    }

    #[test]
    fn chained_streams_are_followed() {
        let mut data = stream(1, 0, 3, true);
        data.extend(stream(2, 0, 4, false));
        let mut out = Vec::new();
        Demuxer::new().push(&data, &mut out).unwrap();
        assert_eq!(out.len(), 7);
    }

    #[test]
    fn bad_input_is_named() {
        let mut out = Vec::new();
        let err = Demuxer::new()
            .push(b"RIFF\x00\x00\x00\x00WAVEfmt ", &mut out)
            .unwrap_err();
        assert_eq!(err, IngestError::NotOgg("looks like WAV"));
        assert_eq!(err.http_status(), 415);

        let mut corrupt = stream(1, 0, 5, false);
        let n = corrupt.len();
        corrupt[n - 3] ^= 0x55;
        let mut d = Demuxer::new();
        let err = d.push(&corrupt, &mut out).unwrap_err();
        assert!(matches!(err, IngestError::BadCrc { .. }), "{err}");
        assert_eq!(out.len(), 4, "packets before the bad page are kept");

        let mut vorbis = BytesMut::new();
        write_page(
            &mut vorbis,
            PageHeader {
                flags: FLAG_BOS,
                granule: 0,
                serial: 3,
                sequence: 0,
            },
            &[b"\x01vorbis\x00\x00"],
        );
        let err = Demuxer::new().push(&vorbis, &mut Vec::new()).unwrap_err();
        assert_eq!(err, IngestError::NotOpus("Vorbis"));
    }

    #[test]
    fn an_endless_continued_packet_is_cut() {
        use crate::ogg_page::write_raw_page;
        let mut data = BytesMut::from(&stream(1, 0, 0, false)[..]);
        // pages of 255 lacing values of 255 keep one packet open forever
        let body = vec![0u8; 255 * 255];
        for seq in 2..10u32 {
            let h = PageHeader {
                flags: 0,
                granule: u64::MAX,
                serial: 1,
                sequence: seq,
            };
            write_raw_page(&mut data, h, &[255u8; 255], &[&body]);
        }
        let err = Demuxer::new().push(&data, &mut Vec::new()).unwrap_err();
        assert_eq!(err, IngestError::OversizedPacket);
        assert_eq!(err.http_status(), 413);
    }

    #[test]
    fn a_second_concurrent_stream_is_refused() {
        let a = stream(1, 0, 2, false);
        let b = stream(2, 0, 2, false);
        let mut data = a[..].to_vec();
        data.extend_from_slice(&b);
        let err = Demuxer::new().push(&data, &mut Vec::new()).unwrap_err();
        assert_eq!(err, IngestError::Multiplexed);
    }
}
