//! The HTTP pieces the front door handles itself: the request head, raw
//! responses, and request-body framing (length, chunked, or until close).

use bytes::{Buf, BytesMut};
use serde_json::Value;
pub use tribune_media::chunked::{ChunkedDecoder, ChunkedError};

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

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// A complete response with a JSON body; the connection is closed after it.
pub fn json_response(status: u16, extra: &[(&str, String)], body: &Value) -> Vec<u8> {
    full_response(status, "application/json", extra, &body.to_string())
}

pub fn html_response(status: u16, extra: &[(&str, String)], body: &str) -> Vec<u8> {
    full_response(status, "text/html; charset=utf-8", extra, body)
}

fn full_response(status: u16, content_type: &str, extra: &[(&str, String)], body: &str) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    out.push_str(&format!("Content-Type: {content_type}\r\n"));
    out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    out.push_str(
        "Connection: close\r\nCache-Control: no-store\r\nAccess-Control-Allow-Origin: *\r\n",
    );
    for (k, v) in extra {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

pub fn error_response(status: u16, message: &str) -> Vec<u8> {
    json_response(status, &[], &serde_json::json!({ "error": message }))
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
