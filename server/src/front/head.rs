//! The HTTP pieces the front door handles itself: reading the request head
//! under a deadline and a size cap (parsed by `tribune_media::http1`), and
//! complete responses for refusals and answers.

use bytes::BytesMut;
use serde_json::Value;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
pub use tribune_media::http1::{BodyFraming, RequestHead};

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

pub type HeadResult = Result<Option<(RequestHead, usize, BytesMut)>, (u16, &'static str)>;

/// Parses a request head from the bytes read so far: `Ok(None)` while it
/// is incomplete.
pub fn parse_head(
    buf: &[u8],
    limit: usize,
) -> Result<Option<(RequestHead, usize)>, (u16, &'static str)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let head = RequestHead::from_parsed(&req).ok_or((400, "malformed request line"))?;
            Ok(Some((head, len)))
        }
        Ok(httparse::Status::Partial) if buf.len() >= limit => Err((431, "request head too large")),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err((431, "too many request headers")),
        Err(_) => Err((400, "malformed HTTP request")),
    }
}

/// Reads and parses the request head, after the bytes already in `buf`.
/// `Ok(None)`: the peer left silently.
pub async fn read_head(
    sock: &mut TcpStream,
    mut buf: BytesMut,
    limit: usize,
    timeout: Duration,
) -> HeadResult {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if !buf.is_empty() {
            if let Some((head, len)) = parse_head(&buf, limit)? {
                return Ok(Some((head, len, buf)));
            }
        }
        let read = tokio::time::timeout_at(deadline, sock.read_buf(&mut buf)).await;
        match read {
            Err(_) => return Err((408, "request head not received in time")),
            Ok(Err(_)) | Ok(Ok(0)) => return Ok(None),
            Ok(Ok(_)) => {}
        }
    }
}
