//! A listener's place in a live stream: what it gets next, and what
//! becomes of it when its socket does not keep up.
//!
//! The IO shell owns the socket and writes what this returns; every
//! decision is here: header pages and a burst of recent audio on joining,
//! then each published chunk once, framed for the listener's body (HTTP/1.1
//! chunked or bare), the end of the body when the stream ends, and the
//! verdict on a listener whose socket stays full.

use crate::fanout::{chunk_head, ChunkRing, Lagged, SeqAt, CHUNKED_END};
use bytes::Bytes;

/// Why a listener's stream ends, as counted in `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leave {
    /// The space ended and the listener got everything.
    Ended,
    /// The client hung up (or was no player).
    ClientClosed,
    /// It fell behind the oldest audio the ring holds.
    Lagged,
    /// Its socket accepted nothing for too long.
    Slow,
}

impl Leave {
    pub fn as_str(self) -> &'static str {
        match self {
            Leave::Ended => "space_ended",
            Leave::ClientClosed => "client_closed",
            Leave::Lagged => "lagged",
            Leave::Slow => "slow_reader",
        }
    }
}

/// What happens to a listener after a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Everything was written, or its socket is full for less than the
    /// allowed time: keep it.
    Keep,
    /// The stream is complete and written: close the write side.
    Done,
    /// Its socket stayed full too long.
    Slow,
}

#[derive(Clone, Debug)]
pub struct ListenerCursor {
    chunked: bool,
    /// The next chunk it needs; `None` until it got the header pages.
    next: Option<u64>,
    /// The end of the body is queued: nothing more to read.
    terminated: bool,
    blocked_since_ms: Option<u64>,
    last_write_ms: u64,
    /// Resume at the page holding this seq, once it is published.
    from: Option<u64>,
    /// Seq of the first packet it gets (after the headers), once known.
    first_seq: Option<u64>,
}

impl ListenerCursor {
    /// A listener whose body is HTTP/1.1 chunked (`chunked`) or bare
    /// (HTTP/1.0, Icecast-style), joining at `now_ms`.
    pub fn new(chunked: bool, now_ms: u64) -> ListenerCursor {
        ListenerCursor {
            chunked,
            next: None,
            terminated: false,
            blocked_since_ms: None,
            last_write_ms: now_ms,
            from: None,
            first_seq: None,
        }
    }

    /// A listener resuming at packet `seq` (it had everything before, on
    /// this node or another: pages are the same everywhere). It starts at
    /// the page holding `seq`; when the ring no longer holds it, with the
    /// usual burst (a gap its player sees in the seqs).
    pub fn resuming(chunked: bool, now_ms: u64, seq: u64) -> ListenerCursor {
        ListenerCursor {
            from: Some(seq),
            ..ListenerCursor::new(chunked, now_ms)
        }
    }

    /// Seq of the first packet after the headers, once it has started (and
    /// when the ring knew it).
    pub fn first_seq(&self) -> Option<u64> {
        self.first_seq
    }

    /// It got its header pages: the IO need not fetch them again.
    pub fn started(&self) -> bool {
        self.next.is_some() || self.terminated
    }

    /// Its socket was full at the last write.
    pub fn blocked(&self) -> bool {
        self.blocked_since_ms.is_some()
    }

    /// Since when nothing was written to it.
    pub fn idle_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.last_write_ms)
    }

    /// Queues in `out` what the listener lacks up to the ring's head. The
    /// first time (once the program has `headers`): the header pages and
    /// at least `burst_samples` of recent audio, so playback starts at
    /// once. Buffers are shared with every listener; nothing is copied.
    pub fn fill(
        &mut self,
        ring: &ChunkRing,
        headers: Option<&Bytes>,
        burst_samples: u64,
        out: &mut Vec<Bytes>,
    ) -> Result<(), Lagged> {
        if self.terminated {
            return Ok(());
        }
        let next = match (self.next.as_mut(), headers) {
            (Some(next), _) => next,
            // no audio yet; a space that ends without any just ends the body
            (None, None) if ring.ended() => {
                self.terminate(out);
                return Ok(());
            }
            (None, None) => return Ok(()),
            (None, Some(headers)) => {
                if self.chunked {
                    out.push(chunk_head(headers.len()));
                    out.push(headers.clone());
                    out.push(Bytes::from_static(b"\r\n"));
                } else {
                    out.push(headers.clone());
                }
                let start = match self.from.map(|seq| (seq, ring.find_seq(seq))) {
                    Some((seq, SeqAt::Ahead)) => {
                        // resumes at `seq` when it is published (below)
                        self.first_seq = Some(seq);
                        ring.head()
                    }
                    Some((_, SeqAt::Held { chunk, .. })) => chunk,
                    Some((_, SeqAt::Gone { .. })) | None => {
                        self.from = None;
                        let start = ring.burst_start(burst_samples);
                        self.first_seq = ring.seq_at(start, 0);
                        start
                    }
                };
                self.next.insert(start)
            }
        };
        // a resuming listener: from the page holding its seq, once held
        if let Some(seq) = self.from {
            match ring.find_seq(seq) {
                SeqAt::Ahead => return Ok(()),
                SeqAt::Held { chunk, offset } if chunk + 1 >= *next => {
                    ring.read_partial(chunk, offset, out, self.chunked)?;
                    self.first_seq
                        .get_or_insert(ring.seq_at(chunk, offset).unwrap_or(seq));
                    *next = chunk + 1;
                }
                // it fell out of the ring while the listener waited
                SeqAt::Held { .. } | SeqAt::Gone { .. } => {}
            }
            self.from = None;
        }
        ring.read(next, out, self.chunked)?;
        if ring.ended() && *next == ring.head() {
            self.terminate(out);
        }
        Ok(())
    }

    fn terminate(&mut self, out: &mut Vec<Bytes>) {
        self.terminated = true;
        if self.chunked {
            out.push(Bytes::from_static(CHUNKED_END));
        }
    }

    /// Reports a write at `now_ms`: whether any byte went out, and whether
    /// everything queued did (`drained`). A listener whose socket stays
    /// full longer than `slow_after_ms` is slow.
    pub fn wrote(&mut self, now_ms: u64, any: bool, drained: bool, slow_after_ms: u64) -> Verdict {
        if any {
            self.last_write_ms = now_ms;
        }
        if drained {
            self.blocked_since_ms = None;
            return if self.terminated {
                Verdict::Done
            } else {
                Verdict::Keep
            };
        }
        let since = *self.blocked_since_ms.get_or_insert(now_ms);
        if now_ms.saturating_sub(since) > slow_after_ms {
            Verdict::Slow
        } else {
            Verdict::Keep
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(tag: u8, len: usize) -> Bytes {
        Bytes::from(vec![tag; len])
    }

    /// A ring of `n` flushes of 200 ms each.
    fn ring(n: u8) -> ChunkRing {
        let mut r = ChunkRing::new(100);
        for i in 0..n {
            r.stage(page(i, 3), 9600, false);
            r.flush();
        }
        r
    }

    fn joined(out: &[Bytes]) -> Vec<u8> {
        out.iter().flat_map(|b| b.iter().copied()).collect()
    }

    #[test]
    fn a_new_listener_waits_for_headers_then_gets_them_and_a_burst() {
        let r = ring(10);
        let mut c = ListenerCursor::new(false, 0);
        let mut out = Vec::new();
        c.fill(&r, None, 48_000, &mut out).unwrap();
        assert!(out.is_empty() && !c.started(), "no audio yet: wait");
        let headers = Bytes::from_static(b"HEAD");
        c.fill(&r, Some(&headers), 48_000, &mut out).unwrap();
        assert!(c.started());
        // headers, then the last 1 s: five chunks of 200 ms
        assert_eq!(out.len(), 6);
        assert_eq!(out[0], headers);
        assert_eq!(out[1], page(5, 3));
        out.clear();
        c.fill(&r, None, 48_000, &mut out).unwrap();
        assert!(out.is_empty(), "nothing twice");
    }

    #[test]
    fn chunked_listeners_get_framed_headers_chunks_and_the_end() {
        let mut r = ring(2);
        let mut c = ListenerCursor::new(true, 0);
        let mut out = Vec::new();
        c.fill(&r, Some(&Bytes::from_static(b"HEAD")), 0, &mut out)
            .unwrap();
        assert_eq!(joined(&out), b"4\r\nHEAD\r\n");
        out.clear();
        r.stage(page(7, 2), 960, true);
        r.flush();
        c.fill(&r, None, 0, &mut out).unwrap();
        assert_eq!(joined(&out), b"2\r\n\x07\x07\r\n0\r\n\r\n");
        assert_eq!(c.wrote(10, true, true, 1_000), Verdict::Done);
        out.clear();
        c.fill(&r, None, 0, &mut out).unwrap();
        assert!(out.is_empty(), "nothing after the end");
    }

    #[test]
    fn a_space_ending_before_any_audio_just_ends_the_body() {
        let mut r = ChunkRing::new(4);
        r.stage(Bytes::new(), 0, true);
        r.flush();
        let mut c = ListenerCursor::new(true, 0);
        let mut out = Vec::new();
        c.fill(&r, None, 48_000, &mut out).unwrap();
        assert_eq!(joined(&out), b"0\r\n\r\n");
        let mut bare = ListenerCursor::new(false, 0);
        out.clear();
        bare.fill(&r, None, 48_000, &mut out).unwrap();
        assert!(out.is_empty());
        assert_eq!(bare.wrote(0, false, true, 1_000), Verdict::Done);
    }

    #[test]
    fn a_listener_left_behind_by_the_ring_is_lagged() {
        let mut r = ChunkRing::new(3);
        r.stage(page(0, 1), 960, false);
        r.flush();
        let mut c = ListenerCursor::new(false, 0);
        let mut out = Vec::new();
        c.fill(&r, Some(&Bytes::from_static(b"H")), 960, &mut out)
            .unwrap();
        for i in 1..6 {
            r.stage(page(i, 1), 960, false);
            r.flush();
        }
        assert!(c.fill(&r, None, 960, &mut out).is_err());
    }

    /// A ring whose pages carry seqs: chunk i holds two pages of 5 packets.
    fn seq_ring(chunks: u64) -> ChunkRing {
        let mut r = ChunkRing::new(100);
        for i in 0..chunks {
            r.stage_group(page(2 * i as u8, 3), 4800, false, 10 * i, 5);
            r.stage_group(page(2 * i as u8 + 1, 3), 4800, false, 10 * i + 5, 5);
            r.flush();
        }
        r
    }

    #[test]
    fn a_resuming_listener_starts_at_the_page_holding_its_seq() {
        let r = seq_ring(10);
        let headers = Bytes::from_static(b"H");
        let mut c = ListenerCursor::resuming(false, 0, 35);
        let mut out = Vec::new();
        c.fill(&r, Some(&headers), 48_000, &mut out).unwrap();
        // headers, the second page of chunk 3, then chunks 4..10
        assert_eq!(out[0], headers);
        assert_eq!(out[1], page(7, 3));
        assert_eq!(out.len(), 2 + 6);
        assert_eq!(c.first_seq(), Some(35));
        // a fresh listener's first seq is its burst's
        let mut fresh = ListenerCursor::new(false, 0);
        out.clear();
        fresh.fill(&r, Some(&headers), 2 * 9600, &mut out).unwrap();
        assert_eq!(fresh.first_seq(), Some(80));
    }

    #[test]
    fn a_listener_resuming_ahead_of_this_node_waits_for_its_page() {
        let mut r = seq_ring(4);
        let headers = Bytes::from_static(b"H");
        let mut c = ListenerCursor::resuming(true, 0, 45);
        let mut out = Vec::new();
        c.fill(&r, Some(&headers), 48_000, &mut out).unwrap();
        assert_eq!(joined(&out), b"1\r\nH\r\n", "headers only, for now");
        assert_eq!(c.first_seq(), Some(45));
        out.clear();
        r.stage_group(page(8, 3), 4800, false, 40, 5);
        r.stage_group(page(9, 3), 4800, false, 45, 5);
        r.flush();
        c.fill(&r, None, 48_000, &mut out).unwrap();
        assert_eq!(
            joined(&out),
            b"3\r\n\x09\x09\x09\r\n",
            "from seq 45, not 40"
        );
    }

    #[test]
    fn a_seq_no_longer_held_resumes_with_the_burst() {
        let mut r = ChunkRing::new(3);
        for i in 0..5u64 {
            r.stage_group(page(i as u8, 1), 9600, false, 10 * i, 10);
            r.flush();
        }
        let mut c = ListenerCursor::resuming(false, 0, 5);
        let mut out = Vec::new();
        c.fill(&r, Some(&Bytes::from_static(b"H")), 9600, &mut out)
            .unwrap();
        assert_eq!(c.first_seq(), Some(40), "a gap the player can see");
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn a_socket_full_for_too_long_is_slow() {
        let mut c = ListenerCursor::new(false, 0);
        assert_eq!(c.wrote(100, true, false, 1_000), Verdict::Keep);
        assert!(c.blocked());
        assert_eq!(c.wrote(900, false, false, 1_000), Verdict::Keep);
        assert_eq!(c.idle_ms(900), 800);
        // it drains in time: the clock starts over
        assert_eq!(c.wrote(1_050, true, true, 1_000), Verdict::Keep);
        assert!(!c.blocked());
        assert_eq!(c.wrote(2_000, true, false, 1_000), Verdict::Keep);
        assert_eq!(c.wrote(3_001, false, false, 1_000), Verdict::Slow);
    }
}
