//! The HTTP client side of a listener: connect (from a chosen source
//! address), send a GET, read the answer, and stream a live body through
//! the validator and player model.

use crate::check::{Fault, StreamCheck};
use bytes::BytesMut;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tribune_media::chunked::ChunkedDecoder;

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

pub fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
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

pub struct Answer {
    pub sock: TcpStream,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Body bytes already read with the head.
    pub buf: BytesMut,
    pub chunked: bool,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Reads a short body (an error answer) until close, length or limit.
    pub async fn small_body(mut self, by: Instant) -> Vec<u8> {
        let len: Option<usize> = self
            .header("content-length")
            .and_then(|v| v.trim().parse().ok());
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
    let mut sock =
        match tokio::time::timeout_at(answer_by.into(), connect(target.addr, bind, recv_buffer))
            .await
        {
            Err(_) => return Err(Failure::Unanswered),
            Ok(Err(e)) => return Err(Failure::Connect(e.kind().to_string())),
            Ok(Ok(s)) => s,
        };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tribune-load\r\nAccept: */*\r\nIcy-MetaData: 0\r\n\r\n",
        target.host
    );
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
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut res = httparse::Response::new(&mut headers);
        match res.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let headers: Vec<(String, String)> = res
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let chunked = headers.iter().any(|(k, v)| {
                    k.eq_ignore_ascii_case("transfer-encoding")
                        && v.to_ascii_lowercase().contains("chunked")
                });
                let status = res.code.ok_or(Failure::BadResponse)?;
                let _ = buf.split_to(n);
                return Ok(Answer {
                    sock,
                    status,
                    headers,
                    buf,
                    chunked,
                });
            }
            Ok(httparse::Status::Partial) if buf.len() < 64 * 1024 => {}
            _ => return Err(Failure::BadResponse),
        }
    }
}

/// What one admitted listener experienced.
#[derive(Default)]
pub struct Listened {
    pub ttfa_ms: Option<f64>,
    pub fault: Option<Fault>,
    pub stalls: u32,
    pub stall_ms: f64,
    pub bytes: u64,
    pub audio_ms: f64,
    pub ended_by: &'static str,
    pub latencies: Vec<f64>,
}

/// Streams a 200 answer's body until `deadline`, validating every byte.
/// `start` is when the listener began (for time to first audio).
pub async fn listen_stream(
    mut ans: Answer,
    start: Instant,
    deadline: Instant,
    epoch: Instant,
) -> Listened {
    let mono = |t: Instant| t.duration_since(epoch).as_secs_f64() * 1000.0;
    let mut out = Listened {
        ended_by: "deadline",
        ..Default::default()
    };
    let mut dechunk = ans.chunked.then(ChunkedDecoder::default);
    let mut stream = StreamCheck::default();
    let mut body = Vec::with_capacity(16 * 1024);
    let mut stream_ended = false;
    loop {
        let now = Instant::now();
        if !ans.buf.is_empty() {
            body.clear();
            let done = match &mut dechunk {
                Some(d) => match d.decode(&mut ans.buf, &mut body) {
                    Ok(done) => done,
                    Err(e) => {
                        stream.fault = Some(Fault::Framing(e.to_string()));
                        break;
                    }
                },
                None => {
                    body.extend_from_slice(&ans.buf);
                    ans.buf.clear();
                    false
                }
            };
            out.bytes += body.len() as u64;
            stream.feed(&body, mono(now), wall_ms(), &mut out.latencies);
            if stream.fault.is_some() {
                break;
            }
            if done {
                stream_ended = true;
                out.ended_by = "stream_end";
                break;
            }
        }
        if now >= deadline {
            break;
        }
        match tokio::time::timeout_at(deadline.into(), ans.sock.read_buf(&mut ans.buf)).await {
            Err(_) => break,
            Ok(Ok(0)) => {
                stream_ended = true;
                out.ended_by = "server_closed";
                break;
            }
            Ok(Err(_)) => {
                out.ended_by = "reset";
                break;
            }
            Ok(Ok(_)) => {}
        }
    }
    let end = mono(Instant::now().min(deadline));
    out.ttfa_ms = stream.first_audio_ms.map(|t| t - mono(start));
    if let Some(p) = stream.player.as_mut() {
        p.finish(end, stream_ended);
        out.stalls = p.stalls;
        out.stall_ms = p.stall_ms;
    }
    out.audio_ms = stream.audio_ms;
    out.fault = stream.fault;
    out
}
