//! Opus packet framing (RFC 6716 §3) and the Ogg Opus headers (RFC 7845).

use bytes::{BufMut, Bytes, BytesMut};

/// Largest Opus packet Tribune accepts: 120 ms at the codec's top bitrate
/// is about 7.7 KB; anything far above that is not an Opus packet.
pub const MAX_PACKET_BYTES: usize = 16 * 1024;

/// Longest duration one Opus packet may carry: 120 ms at 48 kHz.
const MAX_PACKET_SAMPLES: u32 = 5760;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpusError {
    #[error("empty Opus packet")]
    Empty,
    #[error("Opus packet of {0} bytes exceeds the {MAX_PACKET_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("malformed Opus packet: {0}")]
    Malformed(&'static str),
    #[error("not an OpusHead header: {0}")]
    BadHead(&'static str),
    #[error("unsupported Opus channel mapping family {0}: send mono or stereo (family 0)")]
    UnsupportedMapping(u8),
}

/// Samples (48 kHz) in one frame for a TOC configuration number.
fn frame_samples(config: u8) -> u32 {
    match config {
        0..=11 => [480, 960, 1920, 2880][(config % 4) as usize],
        12..=15 => [480, 960][(config % 2) as usize],
        _ => [120, 240, 480, 960][(config % 4) as usize],
    }
}

/// Validates an Opus packet's framing and returns its duration in 48 kHz
/// samples, from the TOC byte and frame count (RFC 6716 §3.1–3.2).
pub fn packet_duration(packet: &[u8]) -> Result<u32, OpusError> {
    let toc = *packet.first().ok_or(OpusError::Empty)?;
    if packet.len() > MAX_PACKET_BYTES {
        return Err(OpusError::TooLarge(packet.len()));
    }
    let per_frame = frame_samples(toc >> 3);
    let frames = match toc & 0x03 {
        0 => 1,
        1 => {
            if !(packet.len() - 1).is_multiple_of(2) {
                return Err(OpusError::Malformed(
                    "code 1 packet with odd payload length",
                ));
            }
            2
        }
        2 => {
            let first = *packet
                .get(1)
                .ok_or(OpusError::Malformed("code 2 packet without frame length"))?;
            let (len, used) = if first >= 252 {
                let second = *packet
                    .get(2)
                    .ok_or(OpusError::Malformed("truncated frame length"))?;
                (first as usize + 4 * second as usize, 2)
            } else {
                (first as usize, 1)
            };
            if 1 + used + len > packet.len() {
                return Err(OpusError::Malformed(
                    "code 2 frame length past the packet end",
                ));
            }
            2
        }
        _ => {
            let count = *packet
                .get(1)
                .ok_or(OpusError::Malformed("code 3 packet without frame count"))?;
            let m = u32::from(count & 0x3f);
            if m == 0 {
                return Err(OpusError::Malformed("code 3 packet with zero frames"));
            }
            m
        }
    };
    let total = per_frame * frames;
    if total > MAX_PACKET_SAMPLES {
        return Err(OpusError::Malformed("packet longer than 120 ms"));
    }
    Ok(total)
}

/// The fields of an OpusHead packet that Tribune uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpusHead {
    pub channels: u8,
    pub pre_skip: u16,
    pub input_rate: u32,
}

impl OpusHead {
    /// The program track's fixed head: stereo so stereo sources pass
    /// through (decoders upmix mono packets), the usual libopus pre-skip.
    pub const PROGRAM: OpusHead = OpusHead {
        channels: 2,
        pre_skip: 312,
        input_rate: 48_000,
    };

    pub fn parse(packet: &[u8]) -> Result<OpusHead, OpusError> {
        if packet.len() < 19 || &packet[..8] != b"OpusHead" {
            return Err(OpusError::BadHead("missing OpusHead magic"));
        }
        if packet[8] >> 4 != 0 {
            return Err(OpusError::BadHead("unsupported major version"));
        }
        let channels = packet[9];
        if channels == 0 {
            return Err(OpusError::BadHead("zero channels"));
        }
        let family = packet[18];
        if family != 0 || channels > 2 {
            return Err(OpusError::UnsupportedMapping(family));
        }
        Ok(OpusHead {
            channels,
            pre_skip: u16::from_le_bytes([packet[10], packet[11]]),
            input_rate: u32::from_le_bytes([packet[12], packet[13], packet[14], packet[15]]),
        })
    }

    pub fn to_bytes(self) -> Bytes {
        let mut b = BytesMut::with_capacity(19);
        b.put_slice(b"OpusHead");
        b.put_u8(1);
        b.put_u8(self.channels);
        b.put_u16_le(self.pre_skip);
        b.put_u32_le(self.input_rate);
        b.put_i16_le(0);
        b.put_u8(0);
        b.freeze()
    }
}

/// Builds an OpusTags packet with `KEY=value` comments.
pub fn opus_tags(vendor: &str, comments: &[(&str, String)]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_slice(b"OpusTags");
    b.put_u32_le(vendor.len() as u32);
    b.put_slice(vendor.as_bytes());
    b.put_u32_le(comments.len() as u32);
    for (k, v) in comments {
        let c = format!("{k}={v}");
        b.put_u32_le(c.len() as u32);
        b.put_slice(c.as_bytes());
    }
    b.freeze()
}

/// Reads the `KEY=value` comments of an OpusTags packet.
pub fn parse_opus_tags(packet: &[u8]) -> Option<Vec<(String, String)>> {
    let rest = packet.strip_prefix(b"OpusTags")?;
    let mut at = 0usize;
    let take_u32 = |at: &mut usize| -> Option<usize> {
        let v = u32::from_le_bytes(rest.get(*at..*at + 4)?.try_into().ok()?);
        *at += 4;
        Some(v as usize)
    };
    let vendor_len = take_u32(&mut at)?;
    at = at.checked_add(vendor_len)?;
    let count = take_u32(&mut at)?;
    let mut out = Vec::new();
    for _ in 0..count.min(1024) {
        let len = take_u32(&mut at)?;
        let text = std::str::from_utf8(rest.get(at..at.checked_add(len)?)?).ok()?;
        at += len;
        if let Some((k, v)) = text.split_once('=') {
            out.push((k.to_string(), v.to_string()));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_the_toc() {
        // config 31 (CELT FB 20 ms), code 0
        assert_eq!(packet_duration(&[31 << 3, 0, 0]), Ok(960));
        // config 1 (SILK NB 20 ms), code 1: two frames, even payload
        assert_eq!(packet_duration(&[(1 << 3) | 1, 0, 0]), Ok(1920));
        // config 16 (CELT 2.5 ms), code 3 with 4 frames
        assert_eq!(packet_duration(&[(16 << 3) | 3, 4, 0]), Ok(480));
        // config 3 (SILK 60 ms) x 3 frames = 180 ms: too long
        assert!(packet_duration(&[(3 << 3) | 3, 3]).is_err());
        assert_eq!(packet_duration(&[]), Err(OpusError::Empty));
        assert!(packet_duration(&[(31 << 3) | 3, 0]).is_err());
        assert!(packet_duration(&[(31 << 3) | 1, 0]).is_err());
        assert!(matches!(
            packet_duration(&vec![0u8; 20_000]),
            Err(OpusError::TooLarge(_))
        ));
    }

    #[test]
    fn head_round_trips_and_multichannel_is_refused() {
        let head = OpusHead {
            channels: 1,
            pre_skip: 3840,
            input_rate: 44_100,
        };
        assert_eq!(OpusHead::parse(&head.to_bytes()), Ok(head));
        let mut surround = OpusHead::PROGRAM.to_bytes().to_vec();
        surround[9] = 6;
        surround[18] = 1;
        assert_eq!(
            OpusHead::parse(&surround),
            Err(OpusError::UnsupportedMapping(1))
        );
        assert!(OpusHead::parse(b"OpusTags........................").is_err());
    }

    #[test]
    fn tags_round_trip() {
        let tags = opus_tags("tribune", &[("TRIBUNE_EPOCH_MS", "1700000000000".into())]);
        let parsed = parse_opus_tags(&tags).unwrap();
        assert_eq!(
            parsed,
            vec![("TRIBUNE_EPOCH_MS".into(), "1700000000000".into())]
        );
        assert_eq!(parse_opus_tags(b"OpusTags\xff\xff\xff\xff"), None);
    }
}
