//! For clients that keep the connection after the response head (live
//! listeners): connect from a chosen address, send a GET, read the head.

use crate::head::{parse_head, Head};
use bytes::BytesMut;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Where requests go: an `http://host:port/path` URL, resolved.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
}

pub fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let addr = hostport
        .to_socket_addrs()
        .or_else(|_| format!("{hostport}:80").to_socket_addrs())
        .map_err(|e| format!("cannot resolve {hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("no address for {hostport}"))?;
    Ok(Target {
        addr,
        host: hostport.to_string(),
        path: path.to_string(),
    })
}

/// Connects from `bind` (any port) with an optional small receive buffer
/// (a slow reader).
pub async fn connect(
    addr: SocketAddr,
    bind: Option<IpAddr>,
    recv_buffer: Option<u32>,
) -> std::io::Result<TcpStream> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(size) = recv_buffer {
        sock.set_recv_buffer_size(size)?;
    }
    if let Some(ip) = bind {
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    sock.connect(addr).await
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Not connected or not answered by the deadline.
    Unanswered,
    Connect(String),
    /// Closed without an HTTP answer.
    Closed,
    BadResponse,
}

/// A response head, with the socket still open for the body.
pub struct Answer {
    pub sock: TcpStream,
    pub head: Head,
    /// Body bytes already read with the head.
    pub buf: BytesMut,
}

impl Answer {
    pub fn status(&self) -> u16 {
        self.head.status
    }

    /// Reads the whole body (de-chunked when chunked), up to `limit` bytes,
    /// by `by`: for API answers.
    pub async fn body(mut self, limit: usize, by: Instant) -> Result<Vec<u8>, Failure> {
        let len = self.head.content_length();
        let chunked = self.head.chunked();
        loop {
            let done = match len {
                Some(l) => self.buf.len() >= l,
                None if chunked => self.buf.ends_with(b"0\r\n\r\n"),
                None => false,
            };
            if done || self.buf.len() > limit {
                break;
            }
            match tokio::time::timeout_at(by.into(), self.sock.read_buf(&mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(Ok(_)) if len.is_none() && !chunked => break,
                Ok(_) => return Err(Failure::Closed),
                Err(_) => return Err(Failure::Unanswered),
            }
        }
        if self.buf.len() > limit {
            return Err(Failure::BadResponse);
        }
        if chunked {
            let mut out = Vec::new();
            tribune_media::chunked::ChunkedDecoder::default()
                .decode(&mut self.buf, &mut out)
                .map_err(|_| Failure::BadResponse)?;
            return Ok(out);
        }
        let end = len.unwrap_or(self.buf.len()).min(self.buf.len());
        Ok(self.buf[..end].to_vec())
    }

    /// Reads a short body (an error answer) until close, length or limit.
    pub async fn small_body(mut self, by: Instant) -> Vec<u8> {
        let len = self.head.content_length();
        while len.is_none_or(|l| self.buf.len() < l) && self.buf.len() < 64 * 1024 {
            match tokio::time::timeout_at(by.into(), self.sock.read_buf(&mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => break,
            }
        }
        self.buf.to_vec()
    }
}

/// Sends `GET path` and reads the response head by `answer_by`.
pub async fn get(
    target: &Target,
    path: &str,
    bind: Option<IpAddr>,
    recv_buffer: Option<u32>,
    answer_by: Instant,
) -> Result<Answer, Failure> {
    get_with(target, path, &[], bind, recv_buffer, answer_by).await
}

/// [`get`] with more request headers (`name`, `value`).
pub async fn get_with(
    target: &Target,
    path: &str,
    headers: &[(&str, &str)],
    bind: Option<IpAddr>,
    recv_buffer: Option<u32>,
    answer_by: Instant,
) -> Result<Answer, Failure> {
    let mut sock =
        match tokio::time::timeout_at(answer_by.into(), connect(target.addr, bind, recv_buffer))
            .await
        {
            Err(_) => return Err(Failure::Unanswered),
            Ok(Err(e)) => return Err(Failure::Connect(e.kind().to_string())),
            Ok(Ok(s)) => s,
        };
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tribune\r\nAccept: */*\r\nIcy-MetaData: 0\r\n",
        target.host
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    if sock.write_all(req.as_bytes()).await.is_err() {
        return Err(Failure::Closed);
    }
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        match tokio::time::timeout_at(answer_by.into(), sock.read_buf(&mut buf)).await {
            Err(_) => return Err(Failure::Unanswered),
            Ok(Ok(0)) | Ok(Err(_)) => return Err(Failure::Closed),
            Ok(Ok(_)) => {}
        }
        match parse_head(&buf) {
            Ok(Some(head)) => {
                let _ = buf.split_to(head.len);
                return Ok(Answer { sock, head, buf });
            }
            Ok(None) => {}
            Err(_) => return Err(Failure::BadResponse),
        }
    }
}
