//! HTTP/1 request heads and request-body framing (RFC 9112), sans-IO:
//! what the front door parses before anything else is allocated, and how
//! a source's upload body ends (length, chunked, or until close).

use crate::chunked::{ChunkedDecoder, ChunkedError};
use bytes::{Buf, BytesMut};

#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// HTTP minor version: 1.0 clients get close-delimited bodies.
    pub minor: u8,
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    pub fn from_parsed(req: &httparse::Request<'_, '_>) -> Option<RequestHead> {
        let target = req.path?;
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q.to_string())),
            None => (target, None),
        };
        Some(RequestHead {
            method: req.method?.to_string(),
            path: path.to_string(),
            query,
            minor: req.version?,
            headers: req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
        })
    }

    /// A query parameter's raw value (tickets and tokens need no decoding).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .as_deref()?
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    }

    pub fn wants_html(&self) -> bool {
        self.header("accept")
            .is_some_and(|a| a.contains("text/html"))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header that may be repeated.
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How a request body ends.
#[derive(Debug)]
pub enum BodyFraming {
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Icecast sources (and ffmpeg's `icecast://`) send no length: the
    /// body runs until the connection closes.
    UntilClose,
}

impl BodyFraming {
    /// The framing a request head declares (RFC 9112 §6.3). Ambiguous
    /// framing, the root of request smuggling, is refused.
    pub fn of(head: &RequestHead) -> Result<BodyFraming, String> {
        let encodings: Vec<&str> = head.header_all("transfer-encoding").collect();
        let lengths: Vec<&str> = head.header_all("content-length").collect();
        if !encodings.is_empty() && !lengths.is_empty() {
            return Err("both Transfer-Encoding and Content-Length: send one".into());
        }
        match encodings.as_slice() {
            [] => {}
            [te] if te.trim().eq_ignore_ascii_case("chunked") => {
                return Ok(BodyFraming::Chunked(ChunkedDecoder::default()));
            }
            [te] => return Err(format!("unsupported Transfer-Encoding {te:?}")),
            _ => return Err("more than one Transfer-Encoding header".into()),
        }
        let mut length = None;
        for len in lengths {
            // "5, 5" is one value repeated, which RFC 9112 allows
            for part in len.split(',') {
                let part = part.trim();
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("invalid Content-Length {len:?}"));
                }
                let n: u64 = part
                    .parse()
                    .map_err(|_| format!("invalid Content-Length {len:?}"))?;
                if length.is_some_and(|l| l != n) {
                    return Err("conflicting Content-Length headers".into());
                }
                length = Some(n);
            }
        }
        Ok(length.map_or(BodyFraming::UntilClose, BodyFraming::Length))
    }

    /// Moves the body bytes available in `input` to `out`. Returns true
    /// when the body is complete.
    pub fn decode(
        &mut self,
        input: &mut BytesMut,
        out: &mut Vec<u8>,
    ) -> Result<bool, ChunkedError> {
        match self {
            BodyFraming::Length(left) => {
                let n = (*left).min(input.len() as u64) as usize;
                out.extend_from_slice(&input[..n]);
                input.advance(n);
                *left -= n as u64;
                Ok(*left == 0)
            }
            BodyFraming::Chunked(d) => d.decode(input, out),
            BodyFraming::UntilClose => {
                out.extend_from_slice(input);
                input.clear();
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: "PUT".into(),
            path: "/".into(),
            query: None,
            minor: 1,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let framing = |h: &[(&str, &str)]| BodyFraming::of(&head(h)).map(|f| format!("{f:?}"));
        assert_eq!(framing(&[("content-length", "5")]), Ok("Length(5)".into()));
        assert_eq!(
            framing(&[("content-length", "5"), ("content-length", "5")]),
            Ok("Length(5)".into())
        );
        assert_eq!(
            framing(&[("content-length", "5, 5")]),
            Ok("Length(5)".into())
        );
        assert!(framing(&[("content-length", "5"), ("content-length", "6")]).is_err());
        assert!(framing(&[("content-length", "5, 6")]).is_err());
        assert!(framing(&[("content-length", "+5")]).is_err());
        assert!(framing(&[("content-length", "")]).is_err());
        assert!(framing(&[("transfer-encoding", "chunked"), ("content-length", "5")]).is_err());
        assert!(framing(&[("transfer-encoding", "gzip")]).is_err());
        assert!(framing(&[
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked")
        ])
        .is_err());
        assert_eq!(framing(&[]), Ok("UntilClose".into()));
    }

    #[test]
    fn length_framing_stops_at_the_length() {
        let mut f = BodyFraming::Length(3);
        let mut input = BytesMut::from(&b"abcdef"[..]);
        let mut out = Vec::new();
        assert_eq!(f.decode(&mut input, &mut out), Ok(true));
        assert_eq!(out, b"abc");
        assert_eq!(&input[..], b"def");
    }
}
