//! The relay link between nodes: an upstream (the origin, or another edge)
//! streams a space's program track to an edge, which packages it exactly
//! as the origin does. The link carries whole groups of the track (seq,
//! granule, ingest clock and the Opus packets of each), so every node makes
//! byte-identical pages, plus the epoch the header pages are made from,
//! marked gaps, and the end. A downstream that asks for it (the
//! `X-Tribune-Relay-Aac` request header) also gets the AAC rendition's
//! parts as the origin encoded them, so every node serves the same AAC
//! bytes; a downstream that does not ask never sees that kind.
//!
//! Wire format, a stream of frames: `kind: u8`, `len: u32` (big-endian),
//! `len` bytes of payload. Sans-IO: `encode` appends a frame, `Decoder`
//! takes whatever bytes arrived and yields whole, validated frames.

use crate::hls::layout::PartId;
use crate::hls::Frame as MediaFrame;
use crate::opus::MAX_PACKET_BYTES;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tribune_core::track::{lacing_segments, Group, Packet};

/// The content type of a relay stream.
pub const CONTENT_TYPE: &str = "application/x-tribune-relay";

const KIND_EPOCH: u8 = 1;
const KIND_GROUP: u8 = 2;
const KIND_GAP: u8 = 3;
const KIND_END: u8 = 4;
const KIND_KEEPALIVE: u8 = 5;
const KIND_AAC_PART: u8 = 6;

/// The request header a downstream sends to get AAC parts: `start`, or
/// the absolute index of the next part it needs (parts since granule 0).
pub const AAC_REQUEST_HEADER: &str = "x-tribune-relay-aac";

/// Largest frame accepted: a group holds at most 255 lacing values.
pub const MAX_FRAME: usize = 255 * 255 + 255 * 32 + 64;
const MAX_TITLE: usize = 1024;
/// Largest AAC part frame: 1 s of AAC at the encoder's ceiling (6144 bits
/// per channel per 1024 samples, stereo) with per-frame fields.
pub const MAX_AAC_PART_FRAME: usize = 64 * (1536 + 32) + 32;
/// Most AAC frames in one part (1 s parts hold 46 or 47).
const MAX_AAC_FRAMES: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// The wall clock (ms since the Unix epoch) of granule 0 and the
    /// space's title: what the header pages are made of. Sent first, and
    /// again when a new source session re-anchors the epoch.
    Epoch { epoch_ms: u64, title: String },
    /// One closed group of the track.
    Group(Group),
    /// Packets `from_seq..to_seq` are lost to this link: the upstream no
    /// longer held them when they were asked for.
    Gap { from_seq: u64, to_seq: u64 },
    /// The space ended: nothing follows.
    End,
    /// Nothing new: the link is alive.
    Keepalive,
    /// One part of the AAC rendition, as encoded at the origin.
    AacPart {
        part: PartId,
        frames: Vec<MediaFrame>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("unknown relay frame kind {0}")]
    UnknownKind(u8),
    #[error("relay frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("malformed relay frame: {0}")]
    Malformed(&'static str),
}

pub fn encode(frame: &Frame, out: &mut BytesMut) {
    let mut payload = BytesMut::new();
    let kind = match frame {
        Frame::Epoch { epoch_ms, title } => {
            payload.put_u64(*epoch_ms);
            let title = &title.as_bytes()[..title.len().min(MAX_TITLE)];
            payload.put_u16(title.len() as u16);
            payload.put_slice(title);
            KIND_EPOCH
        }
        Frame::Group(g) => {
            payload.put_u64(g.index);
            payload.put_u64(g.start_granule);
            payload.put_u8(u8::from(g.last));
            payload.put_u16(g.packets.len() as u16);
            for p in &g.packets {
                payload.put_u64(p.seq);
                payload.put_u64(p.granule);
                payload.put_u64(p.ingest_ms);
                payload.put_u32(p.data.len() as u32);
                payload.put_slice(&p.data);
            }
            KIND_GROUP
        }
        Frame::Gap { from_seq, to_seq } => {
            payload.put_u64(*from_seq);
            payload.put_u64(*to_seq);
            KIND_GAP
        }
        Frame::End => KIND_END,
        Frame::Keepalive => KIND_KEEPALIVE,
        Frame::AacPart { part, frames } => {
            payload.put_u64(part.msn);
            payload.put_u32(part.part);
            payload.put_u16(frames.len().min(MAX_AAC_FRAMES) as u16);
            for f in frames.iter().take(MAX_AAC_FRAMES) {
                payload.put_u64(f.seq);
                payload.put_u64(f.start_granule);
                payload.put_u32(f.duration);
                payload.put_u64(f.ingest_ms);
                payload.put_u32(f.data.len() as u32);
                payload.put_slice(&f.data);
            }
            KIND_AAC_PART
        }
    };
    out.put_u8(kind);
    out.put_u32(payload.len() as u32);
    out.put_slice(&payload);
}

/// Frames out of a byte stream, each validated before it is yielded.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame, `Ok(None)` until one has arrived. After an
    /// error the stream must be dropped.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, RelayError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let kind = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        let limit = if kind == KIND_AAC_PART {
            MAX_AAC_PART_FRAME
        } else {
            MAX_FRAME
        };
        if len > limit {
            return Err(RelayError::TooLarge(len));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        self.buf.advance(5);
        let mut payload = self.buf.split_to(len).freeze();
        let frame = match kind {
            KIND_EPOCH => {
                let epoch_ms = take_u64(&mut payload)?;
                let n = take_u16(&mut payload)? as usize;
                if payload.len() != n {
                    return Err(RelayError::Malformed("title length"));
                }
                let title = String::from_utf8(payload.to_vec())
                    .map_err(|_| RelayError::Malformed("title is not UTF-8"))?;
                Frame::Epoch { epoch_ms, title }
            }
            KIND_GROUP => Frame::Group(group(&mut payload)?),
            KIND_GAP => {
                let from_seq = take_u64(&mut payload)?;
                let to_seq = take_u64(&mut payload)?;
                if to_seq < from_seq {
                    return Err(RelayError::Malformed("gap ends before it starts"));
                }
                Frame::Gap { from_seq, to_seq }
            }
            KIND_END => Frame::End,
            KIND_KEEPALIVE => Frame::Keepalive,
            KIND_AAC_PART => aac_part(&mut payload)?,
            other => return Err(RelayError::UnknownKind(other)),
        };
        if matches!(kind, KIND_GAP | KIND_END | KIND_KEEPALIVE) && !payload.is_empty() {
            return Err(RelayError::Malformed("trailing bytes"));
        }
        Ok(Some(frame))
    }
}

/// A group as an edge will package it: consecutive seqs, granules that
/// only grow, packets within Opus's size, at most one page of lacing.
fn group(p: &mut Bytes) -> Result<Group, RelayError> {
    let index = take_u64(p)?;
    let start_granule = take_u64(p)?;
    let last = match take_u8(p)? {
        0 => false,
        1 => true,
        _ => return Err(RelayError::Malformed("last flag")),
    };
    let count = take_u16(p)? as usize;
    if count == 0 {
        return Err(RelayError::Malformed("a group without packets"));
    }
    let mut packets: Vec<Packet> = Vec::with_capacity(count.min(255));
    let mut segments = 0;
    let mut granule = start_granule;
    for _ in 0..count {
        let seq = take_u64(p)?;
        let end = take_u64(p)?;
        let ingest_ms = take_u64(p)?;
        let len = take_u32(p)? as usize;
        if len == 0 || len > MAX_PACKET_BYTES || p.len() < len {
            return Err(RelayError::Malformed("packet length"));
        }
        if packets
            .last()
            .is_some_and(|prev| prev.seq.checked_add(1) != Some(seq))
        {
            return Err(RelayError::Malformed("seqs not consecutive"));
        }
        if end <= granule {
            return Err(RelayError::Malformed("granule does not advance"));
        }
        granule = end;
        segments += lacing_segments(len);
        if segments > 255 {
            return Err(RelayError::Malformed("more than one page of packets"));
        }
        packets.push(Packet {
            seq,
            granule: end,
            ingest_ms,
            data: p.split_to(len),
        });
    }
    if !p.is_empty() {
        return Err(RelayError::Malformed("trailing bytes"));
    }
    Ok(Group {
        index,
        packets,
        start_granule,
        last,
    })
}

/// An AAC part: whole 1024-sample frames, back to back, on one part.
fn aac_part(p: &mut Bytes) -> Result<Frame, RelayError> {
    let msn = take_u64(p)?;
    let part = take_u32(p)?;
    let count = take_u16(p)? as usize;
    if count == 0 || count > MAX_AAC_FRAMES {
        return Err(RelayError::Malformed("AAC frame count"));
    }
    let mut frames: Vec<MediaFrame> = Vec::with_capacity(count);
    for _ in 0..count {
        let seq = take_u64(p)?;
        let start_granule = take_u64(p)?;
        let duration = take_u32(p)?;
        let ingest_ms = take_u64(p)?;
        let len = take_u32(p)? as usize;
        if duration != crate::hls::fmp4::AAC_FRAME_SAMPLES || len == 0 || p.len() < len {
            return Err(RelayError::Malformed("AAC frame"));
        }
        if frames
            .last()
            .is_some_and(|prev| prev.end_granule() != start_granule)
        {
            return Err(RelayError::Malformed("AAC frames not back to back"));
        }
        frames.push(MediaFrame {
            seq,
            start_granule,
            duration,
            ingest_ms,
            data: p.split_to(len),
        });
    }
    if !p.is_empty() {
        return Err(RelayError::Malformed("trailing bytes"));
    }
    Ok(Frame::AacPart {
        part: PartId { msn, part },
        frames,
    })
}

fn take_u8(p: &mut Bytes) -> Result<u8, RelayError> {
    if p.remaining() < 1 {
        return Err(RelayError::Malformed("short frame"));
    }
    Ok(p.get_u8())
}

fn take_u16(p: &mut Bytes) -> Result<u16, RelayError> {
    if p.remaining() < 2 {
        return Err(RelayError::Malformed("short frame"));
    }
    Ok(p.get_u16())
}

fn take_u32(p: &mut Bytes) -> Result<u32, RelayError> {
    if p.remaining() < 4 {
        return Err(RelayError::Malformed("short frame"));
    }
    Ok(p.get_u32())
}

fn take_u64(p: &mut Bytes) -> Result<u64, RelayError> {
    if p.remaining() < 8 {
        return Err(RelayError::Malformed("short frame"));
    }
    Ok(p.get_u64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tribune_core::track::Track;

    fn groups(n: usize) -> Vec<Group> {
        let mut t = Track::new(4800);
        let mut out = Vec::new();
        let mut i = 0u8;
        while out.len() < n {
            i = i.wrapping_add(1);
            out.extend(t.push(Bytes::from(vec![0xf8, i, 7]), 960, 1_000 + u64::from(i)));
        }
        out
    }

    fn all(frames: &[Frame]) -> BytesMut {
        let mut wire = BytesMut::new();
        for f in frames {
            encode(f, &mut wire);
        }
        wire
    }

    #[test]
    fn frames_come_back_whatever_the_read_boundaries() {
        let mut frames = vec![Frame::Epoch {
            epoch_ms: 1_700_000_000_000,
            title: "Town hall ✓".into(),
        }];
        frames.extend(groups(3).into_iter().map(Frame::Group));
        frames.push(Frame::Gap {
            from_seq: 15,
            to_seq: 40,
        });
        frames.push(Frame::Keepalive);
        frames.push(Frame::AacPart {
            part: PartId { msn: 3, part: 1 },
            frames: (0..47)
                .map(|j| MediaFrame {
                    seq: 200 + j / 20,
                    start_granule: (141 + 47 + j) * 1024,
                    duration: 1024,
                    ingest_ms: 1_700_000_004_000 + j * 21,
                    data: Bytes::from(vec![j as u8; 300]),
                })
                .collect(),
        });
        frames.push(Frame::End);
        let wire = all(&frames);
        for step in [1, 3, 17, wire.len()] {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for piece in wire.chunks(step) {
                d.push(piece);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames, "step {step}");
        }
    }

    #[test]
    fn bad_frames_are_named() {
        let decode = |wire: &[u8]| {
            let mut d = Decoder::default();
            d.push(wire);
            d.next_frame()
        };
        assert_eq!(decode(&[9, 0, 0, 0, 0]), Err(RelayError::UnknownKind(9)));
        assert!(matches!(
            decode(&[2, 0xff, 0, 0, 0]),
            Err(RelayError::TooLarge(_))
        ));
        assert!(decode(&[2, 0, 0, 0, 3, 1, 2, 3]).is_err(), "short group");
        // a group whose seqs jump
        let mut g = groups(1).remove(0);
        g.packets[2].seq += 5;
        let wire = all(&[Frame::Group(g)]);
        assert_eq!(
            decode(&wire),
            Err(RelayError::Malformed("seqs not consecutive"))
        );
        // a gap backwards
        let wire = all(&[Frame::Gap {
            from_seq: 9,
            to_seq: 3,
        }]);
        assert!(decode(&wire).is_err());
        // not enough bytes yet is not an error
        assert_eq!(decode(&[2, 0, 0]), Ok(None));
    }
}
