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

/// Where one page of the track sits in a chunk, so a listener can start
/// (or resume) at any packet's page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageAt {
    /// Seq of the page's first packet.
    pub first_seq: u64,
    /// Packets on the page.
    pub packets: u64,
    /// Offset of the page in the chunk's payload.
    pub offset: usize,
}

#[derive(Clone, Debug)]
pub struct Chunk {
    /// `<hex length>\r\n<payload>\r\n`
    framed: Bytes,
    payload_start: usize,
    pages: Vec<PageAt>,
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
    staged_pages: Vec<PageAt>,
    staged_len: usize,
    staged_samples: u64,
    staged_last: bool,
}

/// Where a listener asking for a seq starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqAt {
    /// In chunk `chunk`, the page at payload offset `offset`.
    Held { chunk: u64, offset: usize },
    /// Not published yet: from the next chunk on.
    Ahead,
    /// No longer held: the oldest held page starts at `oldest_seq`.
    Gone { oldest_seq: u64 },
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
            staged_pages: Vec::new(),
            staged_len: 0,
            staged_samples: 0,
            staged_last: false,
        }
    }

    /// Queues one packaged page for the next flush.
    pub fn stage(&mut self, page: Bytes, samples: u64, last: bool) {
        self.staged_len += page.len();
        self.staged.push(page);
        self.staged_samples += samples;
        self.staged_last |= last;
    }

    /// Queues the page of a track group whose packets are `first_seq` and
    /// the `packets - 1` after it.
    pub fn stage_group(
        &mut self,
        page: Bytes,
        samples: u64,
        last: bool,
        first_seq: u64,
        packets: u64,
    ) {
        self.staged_pages.push(PageAt {
            first_seq,
            packets,
            offset: self.staged_len,
        });
        self.stage(page, samples, last);
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
        self.staged_len = 0;
        self.chunks.push_back(Chunk {
            framed: buf.freeze(),
            payload_start: prefix.len(),
            pages: std::mem::take(&mut self.staged_pages),
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

    /// Where the page holding packet `seq` is.
    pub fn find_seq(&self, seq: u64) -> SeqAt {
        let mut pages = self
            .chunks
            .iter()
            .enumerate()
            .flat_map(|(i, c)| c.pages.iter().map(move |p| (i, p)));
        let mut pages = pages.by_ref().peekable();
        if let Some((_, oldest)) = pages.peek() {
            if seq < oldest.first_seq {
                return SeqAt::Gone {
                    oldest_seq: oldest.first_seq,
                };
            }
        }
        for (i, p) in pages {
            if seq < p.first_seq + p.packets {
                return SeqAt::Held {
                    chunk: self.first + i as u64,
                    offset: p.offset,
                };
            }
        }
        SeqAt::Ahead
    }

    /// The first seq of the page at `offset` in chunk `chunk`, if held.
    pub fn seq_at(&self, chunk: u64, offset: usize) -> Option<u64> {
        let c = self.chunks.get(chunk.checked_sub(self.first)? as usize)?;
        c.pages
            .iter()
            .find(|p| p.offset >= offset)
            .map(|p| p.first_seq)
    }

    /// Appends chunk `chunk` from payload offset `offset` to `out` (framed
    /// as an HTTP chunk of its own, or bare); the cursor then continues at
    /// `chunk + 1`.
    pub fn read_partial(
        &self,
        chunk: u64,
        offset: usize,
        out: &mut Vec<Bytes>,
        framed: bool,
    ) -> Result<(), Lagged> {
        let Some(c) = chunk
            .checked_sub(self.first)
            .and_then(|i| self.chunks.get(i as usize))
        else {
            return Err(Lagged {
                behind_by: self.first.saturating_sub(chunk),
            });
        };
        let payload = c.framed.slice(c.payload_start..c.framed.len() - 2);
        let Some(part) = payload.get(offset..).filter(|p| !p.is_empty()) else {
            return Ok(());
        };
        let part = payload.slice_ref(part);
        if framed {
            out.push(chunk_head(part.len()));
            out.push(part);
            out.push(Bytes::from_static(b"\r\n"));
        } else {
            out.push(part);
        }
        Ok(())
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
    fn a_seq_is_found_on_its_page_within_a_chunk() {
        let mut ring = ChunkRing::new(3);
        // chunk 0: pages for seqs 0..5 and 5..10; chunk 1: 10..15
        ring.stage_group(page(1), 4800, false, 0, 5);
        ring.stage_group(page(2), 4800, false, 5, 5);
        ring.flush();
        ring.stage_group(page(3), 4800, false, 10, 5);
        ring.flush();
        assert_eq!(
            ring.find_seq(7),
            SeqAt::Held {
                chunk: 0,
                offset: 4
            }
        );
        assert_eq!(
            ring.find_seq(0),
            SeqAt::Held {
                chunk: 0,
                offset: 0
            }
        );
        assert_eq!(
            ring.find_seq(14),
            SeqAt::Held {
                chunk: 1,
                offset: 0
            }
        );
        assert_eq!(ring.find_seq(15), SeqAt::Ahead);
        assert_eq!(ring.seq_at(0, 4), Some(5));
        let mut out = Vec::new();
        ring.read_partial(0, 4, &mut out, false).unwrap();
        assert_eq!(out, vec![page(2)]);
        out.clear();
        ring.read_partial(0, 4, &mut out, true).unwrap();
        let framed: Vec<u8> = out.iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(framed, b"4\r\n\x02\x02\x02\x02\r\n");
        // once the oldest chunk is gone, so are its seqs
        for i in 0..3 {
            ring.stage_group(page(4 + i), 4800, false, 15 + 5 * i as u64, 5);
            ring.flush();
        }
        assert_eq!(ring.find_seq(3), SeqAt::Gone { oldest_seq: 15 });
        assert!(ring.read_partial(0, 0, &mut out, false).is_err());
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
