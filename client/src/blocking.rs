//! One request per connection (`Connection: close`), read to the end: what
//! tests need, with real sockets and nothing else.

use crate::head::parse_head;
use bytes::BytesMut;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use tribune_media::chunked::ChunkedDecoder;

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not (tests).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection; a JSON content type is
/// added for a body unless `headers` name one.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Response {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    raw_request(addr, req.as_bytes(), Duration::from_secs(20))
}

/// Sends raw bytes and reads the response until the server closes.
/// Panics when no HTTP response comes back (tests).
pub fn raw_request(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> Response {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(timeout)).expect("timeout");
    s.write_all(bytes).expect("send");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse_response(&buf)
        .unwrap_or_else(|| panic!("no HTTP response in {:?}", String::from_utf8_lossy(&buf)))
}

/// A whole response (head and body as far as it came), de-chunked.
pub fn parse_response(buf: &[u8]) -> Option<Response> {
    let head = parse_head(buf).ok()??;
    let rest = &buf[head.len..];
    let body = if head.chunked() {
        let mut input = BytesMut::from(rest);
        let mut out = Vec::new();
        // a body cut short keeps what arrived
        let _ = ChunkedDecoder::default().decode(&mut input, &mut out);
        out
    } else {
        rest.to_vec()
    };
    Some(Response {
        status: head.status,
        headers: head.headers,
        body,
    })
}
