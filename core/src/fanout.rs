//! The shared fan-out ring.
//!
//! Packaged pages are staged as they are produced and, on each flush tick,
//! concatenated into one chunk: one allocation per flush shared by every
//! listener, so a listener at the head costs one write per flush. A
//! listener is only a cursor (the index of the next chunk it needs).
//!
//! Each chunk is stored already framed as an HTTP/1.1 chunk, so chunked
//! listeners and close-delimited (HTTP/1.0, Icecast-style) listeners share
//! the same buffer: the latter get a zero-copy slice of the payload.

use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

/// The last chunk of an HTTP/1.1 chunked body (no trailers).
pub const CHUNKED_END: &[u8] = b"0\r\n\r\n";

/// The size line before an HTTP/1.1 chunk of `len` bytes.
pub fn chunk_head(len: usize) -> Bytes {
    Bytes::from(format!("{len:x}\r\n"))
}

#[derive(Clone, Debug)]
pub struct Chunk {
    /// `<hex length>\r\n<payload>\r\n`
    framed: Bytes,
    payload_start: usize,
    /// Audio duration in the chunk, in 48 kHz samples.
    pub samples: u64,
    /// The chunk carries the end of the stream.
    pub last: bool,
}

/// The cursor fell behind the oldest chunk still held: the listener could
/// not keep up and must be disconnected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lagged {
    pub behind_by: u64,
}

#[derive(Debug)]
pub struct ChunkRing {
    chunks: VecDeque<Chunk>,
    first: u64,
    max_chunks: usize,
    /// Bytes the ring may hold: memory per space is bounded whatever the
    /// bitrate or the size of a flush.
    max_bytes: usize,
    bytes: usize,
    staged: Vec<Bytes>,
    staged_samples: u64,
    staged_last: bool,
}

impl ChunkRing {
    pub fn new(max_chunks: usize) -> Self {
        Self::bounded(max_chunks, usize::MAX)
    }

    /// A ring of at most `max_chunks` chunks and `max_bytes` bytes (the
    /// newest chunk is always kept).
    pub fn bounded(max_chunks: usize, max_bytes: usize) -> Self {
        ChunkRing {
            chunks: VecDeque::new(),
            first: 0,
            max_chunks: max_chunks.max(1),
            max_bytes,
            bytes: 0,
            staged: Vec::new(),
            staged_samples: 0,
            staged_last: false,
        }
    }

    /// Queues one packaged page for the next flush.
    pub fn stage(&mut self, page: Bytes, samples: u64, last: bool) {
        self.staged.push(page);
        self.staged_samples += samples;
        self.staged_last |= last;
    }

    /// Publishes the staged pages as one chunk. Returns the new head, or
    /// `None` when nothing was staged (no wake-up is needed).
    pub fn flush(&mut self) -> Option<u64> {
        if self.staged.is_empty() {
            return None;
        }
        let len: usize = self.staged.iter().map(Bytes::len).sum();
        let prefix = chunk_head(len);
        let mut buf = BytesMut::with_capacity(prefix.len() + len + 2);
        buf.extend_from_slice(&prefix);
        for page in self.staged.drain(..) {
            buf.extend_from_slice(&page);
        }
        buf.extend_from_slice(b"\r\n");
        self.bytes += buf.len();
        self.chunks.push_back(Chunk {
            framed: buf.freeze(),
            payload_start: prefix.len(),
            samples: std::mem::take(&mut self.staged_samples),
            last: std::mem::take(&mut self.staged_last),
        });
        while self.chunks.len() > self.max_chunks
            || (self.bytes > self.max_bytes && self.chunks.len() > 1)
        {
            if let Some(old) = self.chunks.pop_front() {
                self.bytes -= old.framed.len();
            }
            self.first += 1;
        }
        Some(self.head())
    }

    /// Bytes held by the published chunks.
    pub fn held_bytes(&self) -> usize {
        self.bytes
    }

    /// Index one past the newest chunk.
    pub fn head(&self) -> u64 {
        self.first + self.chunks.len() as u64
    }

    pub fn oldest(&self) -> u64 {
        self.first
    }

    /// Whether the final chunk of the stream has been published.
    pub fn ended(&self) -> bool {
        self.chunks.back().is_some_and(|c| c.last)
    }

    /// Where a new listener starts so that it receives at least
    /// `burst_samples` of recent audio at once (burst-on-connect).
    pub fn burst_start(&self, burst_samples: u64) -> u64 {
        let mut start = self.head();
        let mut have = 0;
        for chunk in self.chunks.iter().rev() {
            if have >= burst_samples {
                break;
            }
            have += chunk.samples;
            start -= 1;
        }
        start
    }

    /// Appends the chunks from `cursor` to the head to `out` (HTTP-chunk
    /// framed or bare) and advances the cursor. Pages are shared: this
    /// clones reference counts, never bytes. Empty chunks are skipped.
    pub fn read(&self, cursor: &mut u64, out: &mut Vec<Bytes>, framed: bool) -> Result<(), Lagged> {
        if *cursor < self.first {
            return Err(Lagged {
                behind_by: self.first - *cursor,
            });
        }
        let from = (*cursor - self.first) as usize;
        for c in self.chunks.iter().skip(from) {
            if c.framed.len() == c.payload_start + 2 {
                continue;
            }
            out.push(if framed {
                c.framed.clone()
            } else {
                c.framed.slice(c.payload_start..c.framed.len() - 2)
            });
        }
        *cursor = self.head().max(*cursor);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(tag: u8) -> Bytes {
        Bytes::from(vec![tag; 4])
    }

    #[test]
    fn flush_concatenates_staged_pages_into_one_chunk() {
        let mut ring = ChunkRing::new(8);
        assert_eq!(ring.flush(), None);
        ring.stage(page(1), 4800, false);
        ring.stage(page(2), 4800, false);
        assert_eq!(ring.flush(), Some(1));
        let mut cursor = 0;
        let mut out = Vec::new();
        ring.read(&mut cursor, &mut out, false).unwrap();
        assert_eq!(out, vec![Bytes::from(vec![1, 1, 1, 1, 2, 2, 2, 2])]);
        assert_eq!(cursor, 1);
        out.clear();
        ring.read(&mut cursor, &mut out, false).unwrap();
        assert!(out.is_empty());
        let mut cursor = 0;
        ring.read(&mut cursor, &mut out, true).unwrap();
        assert_eq!(&out[0][..], b"8\r\n\x01\x01\x01\x01\x02\x02\x02\x02\r\n");
    }

    #[test]
    fn burst_covers_the_requested_duration() {
        let mut ring = ChunkRing::new(100);
        for i in 0..20 {
            ring.stage(page(i), 9600, false); // 200 ms per flush
            ring.flush();
        }
        // 1 s = 48000 samples = 5 chunks of 9600
        assert_eq!(ring.burst_start(48_000), 15);
        assert_eq!(ring.burst_start(0), 20);
        assert_eq!(ring.burst_start(10_000_000), 0);
    }

    #[test]
    fn a_cursor_that_falls_off_the_ring_is_lagged() {
        let mut ring = ChunkRing::new(3);
        for i in 0..5 {
            ring.stage(page(i), 960, false);
            ring.flush();
        }
        assert_eq!(ring.oldest(), 2);
        let mut cursor = 1;
        let mut out = Vec::new();
        assert_eq!(
            ring.read(&mut cursor, &mut out, false),
            Err(Lagged { behind_by: 1 })
        );
        let mut cursor = 2;
        ring.read(&mut cursor, &mut out, false).unwrap();
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn memory_is_bounded_in_bytes_whatever_the_chunk_sizes() {
        let mut ring = ChunkRing::bounded(100, 10_000);
        for i in 0..50u8 {
            ring.stage(Bytes::from(vec![i; 3_000]), 960, false);
            ring.flush();
            assert!(ring.held_bytes() <= 10_000, "{}", ring.held_bytes());
        }
        assert_eq!(ring.head(), 50);
        assert_eq!(ring.oldest(), 47, "three 3 KB chunks fit");
        // one chunk larger than the bound is still published
        ring.stage(Bytes::from(vec![9; 20_000]), 960, false);
        ring.flush();
        assert_eq!(ring.oldest(), 50);
        let (mut cursor, mut out) = (50, Vec::new());
        ring.read(&mut cursor, &mut out, false).unwrap();
        assert_eq!(out[0].len(), 20_000);
    }

    #[test]
    fn the_last_chunk_marks_the_end() {
        let mut ring = ChunkRing::new(3);
        ring.stage(page(1), 960, false);
        ring.flush();
        assert!(!ring.ended());
        ring.stage(Bytes::new(), 0, true);
        ring.flush();
        assert!(ring.ended());
        // the empty end marker writes nothing
        let (mut cursor, mut out) = (1, Vec::new());
        ring.read(&mut cursor, &mut out, true).unwrap();
        assert!(out.is_empty());
        assert_eq!(cursor, 2);
    }
}
