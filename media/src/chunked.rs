//! Streaming decoder for HTTP/1.1 chunked bodies (RFC 9112 §7.1), used by
//! the server for source uploads and by the load generator for live streams.

use bytes::{Buf, BytesMut};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad chunked encoding: {0}")]
pub struct ChunkedError(pub &'static str);

#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

impl ChunkedDecoder {
    pub fn decode(
        &mut self,
        input: &mut BytesMut,
        out: &mut Vec<u8>,
    ) -> Result<bool, ChunkedError> {
        loop {
            match self.state {
                ChunkState::Size => match httparse::parse_chunk_size(input) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        input.advance(used);
                        self.state = if size == 0 {
                            ChunkState::Trailers
                        } else {
                            ChunkState::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) => {
                        if input.len() > 1024 {
                            return Err(ChunkedError("chunk size line too long"));
                        }
                        return Ok(false);
                    }
                    Err(_) => return Err(ChunkedError("invalid chunk size")),
                },
                ChunkState::Data(left) => {
                    if input.is_empty() {
                        return Ok(false);
                    }
                    let n = left.min(input.len() as u64) as usize;
                    out.extend_from_slice(&input[..n]);
                    input.advance(n);
                    self.state = if left == n as u64 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n as u64)
                    };
                }
                ChunkState::DataEnd => {
                    if input.len() < 2 {
                        return Ok(false);
                    }
                    if &input[..2] != b"\r\n" {
                        return Err(ChunkedError("chunk not followed by CRLF"));
                    }
                    input.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    // trailers are ignored; the body ends at an empty line
                    let Some(end) = input.windows(2).position(|w| w == b"\r\n") else {
                        if input.len() > 8192 {
                            return Err(ChunkedError("trailers too long"));
                        }
                        return Ok(false);
                    };
                    input.advance(end + 2);
                    if end == 0 {
                        self.state = ChunkState::Done;
                    }
                }
                ChunkState::Done => return Ok(true),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for step in 1..wire.len() {
            let mut d = ChunkedDecoder::default();
            let mut input = BytesMut::new();
            let mut out = Vec::new();
            let mut done = false;
            for piece in wire.chunks(step) {
                input.extend_from_slice(piece);
                done = d.decode(&mut input, &mut out).unwrap();
            }
            assert!(done, "step {step}");
            assert_eq!(out, b"hello, world");
        }
        let mut d = ChunkedDecoder::default();
        let mut input = BytesMut::from(&b"zz\r\n"[..]);
        assert!(d.decode(&mut input, &mut Vec::new()).is_err());
    }
}
