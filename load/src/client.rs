//! A listener's side of a live stream: after the HTTP exchange
//! (`tribune_client::stream`), every byte of the body goes through the
//! validator and the player model.

use crate::check::{Fault, StreamCheck};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncReadExt;
pub use tribune_client::stream::{connect, get, parse_url, Answer, Failure, Target};
use tribune_media::chunked::ChunkedDecoder;

pub fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// What one admitted listener experienced.
#[derive(Default, Debug)]
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
    ans: Answer,
    start: Instant,
    deadline: Instant,
    epoch: Instant,
) -> Listened {
    let mut out = Listened::default();
    let mut stream = StreamCheck::default();
    let ended = stream_body(ans, &mut stream, deadline, epoch, &mut out).await;
    close(&mut stream, start, deadline, epoch, ended, &mut out);
    out
}

/// What a listener's stream came to, once it is over.
pub fn close(
    stream: &mut StreamCheck,
    start: Instant,
    deadline: Instant,
    epoch: Instant,
    stream_ended: bool,
    out: &mut Listened,
) {
    let mono = |t: Instant| t.duration_since(epoch).as_secs_f64() * 1000.0;
    let end = mono(Instant::now().min(deadline));
    out.ttfa_ms = stream.first_audio_ms.map(|t| t - mono(start));
    if let Some(p) = stream.player.as_mut() {
        p.finish(end, stream_ended);
        out.stalls = p.stalls;
        out.stall_ms = p.stall_ms;
    }
    out.audio_ms = stream.audio_ms;
    out.fault = stream.fault.clone();
}

/// Streams one connection's body into `stream` until it ends or
/// `deadline`; `out.ended_by` says how. True when the server ended it.
pub async fn stream_body(
    mut ans: Answer,
    stream: &mut StreamCheck,
    deadline: Instant,
    epoch: Instant,
    out: &mut Listened,
) -> bool {
    let mono = |t: Instant| t.duration_since(epoch).as_secs_f64() * 1000.0;
    out.ended_by = "deadline";
    let mut dechunk = ans.head.chunked().then(ChunkedDecoder::default);
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
    stream_ended
}
