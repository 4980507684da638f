//! `GET /spaces/{id}/live.opus`: a listener is this socket plus a cursor
//! into the space's shared ring. Each flush wakes the task once; it clones
//! the new chunks' reference counts and writes them in one vectored write.

use crate::app::{now_ms, App};
use crate::http::{json_response, RequestHead};
use crate::live::LiveSpace;
use bytes::{Buf, Bytes};
use rand::Rng;
use serde_json::json;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tribune_core::space::SpaceState;
use tribune_core::SAMPLE_RATE;

/// Why a listener's connection ended, as counted in `/metrics`.
#[derive(Clone, Copy, Debug)]
enum Leave {
    Ended,
    ClientClosed,
    Lagged,
    Slow,
}

impl Leave {
    fn as_str(self) -> &'static str {
        match self {
            Leave::Ended => "space_ended",
            Leave::ClientClosed => "client_closed",
            Leave::Lagged => "lagged",
            Leave::Slow => "slow_reader",
        }
    }
}

/// Holds a listener's place in the counts; frees it however the task ends.
struct Admitted<'a> {
    app: &'a App,
    live: Arc<LiveSpace>,
    leave: Leave,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.app.listeners.fetch_sub(1, Ordering::AcqRel);
        let now = self.live.listeners.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!("tribune_listeners", "space" => self.live.id.clone()).set(now as f64);
        metrics::counter!("tribune_listener_disconnects_total", "reason" => self.leave.as_str())
            .increment(1);
    }
}

async fn refuse(
    sock: &mut TcpStream,
    status: u16,
    extra: &[(&str, String)],
    body: serde_json::Value,
    why: &'static str,
) {
    metrics::counter!("tribune_listener_rejects_total", "reason" => why).increment(1);
    let _ = sock.write_all(&json_response(status, extra, &body)).await;
    let _ = sock.shutdown().await;
}

/// Retry-After with jitter so a refused crowd does not come back in step.
fn jittered_retry(base_secs: u64) -> u64 {
    base_secs + rand::rng().random_range(0..=base_secs.max(1))
}

/// What the listener path needs from the request head, so the head itself
/// (and the door's read buffer) are freed before the long-lived stream.
#[derive(Clone, Copy)]
pub struct ListenRequest {
    pub head_only: bool,
    pub http_minor: u8,
}

impl ListenRequest {
    pub fn of(head: &RequestHead) -> Self {
        ListenRequest {
            head_only: head.method == "HEAD",
            http_minor: head.minor,
        }
    }
}

pub async fn serve(
    app: &Arc<App>,
    mut sock: TcpStream,
    req: ListenRequest,
    id: &str,
    peer: SocketAddr,
) {
    let Some(entry) = app.space(id) else {
        return refuse(
            &mut sock,
            404,
            &[],
            json!({"error": format!("no space with id {id:?}")}),
            "unknown_space",
        )
        .await;
    };
    let base = app.base_url();
    let live = match (entry.row.state, entry.live) {
        (SpaceState::Scheduled, _) => {
            let wait = entry
                .row
                .scheduled_at
                .map_or(30, |at| (at.saturating_sub(now_ms()) / 1000).clamp(5, 300));
            let body = json!({
                "error": "space has not started yet",
                "state": "scheduled",
                "scheduled_at": entry.row.scheduled_at,
                "page": format!("{base}/spaces/{id}"),
            });
            return refuse(
                &mut sock,
                503,
                &[("Retry-After", wait.to_string())],
                body,
                "not_live",
            )
            .await;
        }
        (SpaceState::Live, Some(live)) => live,
        _ => {
            let replay = format!("{base}/spaces/{id}/replay.opus");
            let body = json!({"error": "space has ended; the recording is available", "state": "ended", "replay": replay});
            return refuse(
                &mut sock,
                410,
                &[("Link", format!("<{replay}>; rel=\"alternate\""))],
                body,
                "ended",
            )
            .await;
        }
    };
    if app.listeners.fetch_add(1, Ordering::AcqRel) >= app.cfg.max_listeners {
        app.listeners.fetch_sub(1, Ordering::AcqRel);
        let retry = jittered_retry(10);
        let body = json!({
            "error": "this node is at listener capacity",
            "retry_after": retry,
            "replay": format!("{base}/spaces/{id}/replay.opus"),
        });
        return refuse(
            &mut sock,
            503,
            &[("Retry-After", retry.to_string())],
            body,
            "capacity",
        )
        .await;
    }
    let count = live.listeners.fetch_add(1, Ordering::AcqRel) + 1;
    live.peak_listeners.fetch_max(count, Ordering::AcqRel);
    metrics::gauge!("tribune_listeners", "space" => id.to_string()).set(count as f64);
    metrics::counter!("tribune_listener_joins_total", "space" => id.to_string()).increment(1);
    let mut admitted = Admitted {
        app,
        live: live.clone(),
        leave: Leave::ClientClosed,
    };
    tracing::debug!(%peer, space = id, "listener joined");

    // HTTP/1.1 clients get a chunked body, so the end of a space is a clean
    // end of stream rather than a dropped connection.
    let chunked = req.http_minor >= 1;
    let response = format!(
        "HTTP/1.{} 200 OK\r\nContent-Type: audio/ogg\r\nCache-Control: no-cache, no-store\r\n\
         Connection: close\r\n{}Access-Control-Allow-Origin: *\r\nX-Content-Type-Options: nosniff\r\n\
         icy-name: {}\r\n\r\n",
        req.http_minor.min(1),
        if chunked { "Transfer-Encoding: chunked\r\n" } else { "" },
        entry.row.title.replace(['\r', '\n'], " ")
    );
    drop(entry.row);
    if sock.write_all(response.as_bytes()).await.is_err() || req.head_only {
        return;
    }
    drop(response);
    admitted.leave = stream(app, &live, &mut sock, chunked).await;
}

async fn stream(app: &App, live: &LiveSpace, sock: &mut TcpStream, chunked: bool) -> Leave {
    let bytes_out = metrics::counter!("tribune_bytes_out_total", "space" => live.id.clone());
    let slow_after = Duration::from_millis(app.cfg.slow_listener_ms);
    let mut head_rx = live.subscribe_head();
    let mut ending = live.subscribe_ending();
    // No audio yet: wait for the first page (the headers carry its epoch).
    let headers = loop {
        if let Some(h) = live.headers() {
            break h;
        }
        tokio::select! {
            r = head_rx.changed() => if r.is_err() { return Leave::Ended },
            _ = ending.changed() => return Leave::Ended,
        }
    };
    let burst = app.cfg.burst_ms * SAMPLE_RATE / 1000;
    let mut cursor = live
        .ring
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .burst_start(burst);
    let mut pending: Vec<Bytes> = if chunked {
        let prefix = Bytes::from(format!("{:x}\r\n", headers.len()));
        vec![prefix, headers, Bytes::from_static(b"\r\n")]
    } else {
        vec![headers]
    };
    loop {
        let ended = {
            let ring = live.ring.read().unwrap_or_else(|e| e.into_inner());
            if ring.read(&mut cursor, &mut pending, chunked).is_err() {
                return Leave::Lagged;
            }
            ring.ended() && cursor == ring.head()
        };
        if ended && chunked {
            pending.push(Bytes::from_static(b"0\r\n\r\n"));
        }
        match write_all(sock, &mut pending, slow_after).await {
            Ok(n) => bytes_out.increment(n),
            Err(leave) => return leave,
        }
        if ended {
            let _ = sock.shutdown().await;
            return Leave::Ended;
        }
        if head_rx.changed().await.is_err() {
            return Leave::Ended;
        }
    }
}

/// Writes every buffer, trying the socket at once (the usual case: one
/// syscall) and only waiting, with a deadline, when its buffer is full.
async fn write_all(
    sock: &mut TcpStream,
    bufs: &mut Vec<Bytes>,
    slow_after: Duration,
) -> Result<u64, Leave> {
    const MAX_IOV: usize = 32;
    let mut total = 0u64;
    let mut first = 0;
    loop {
        while first < bufs.len() && bufs[first].is_empty() {
            first += 1;
        }
        if first == bufs.len() {
            break;
        }
        let n = {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let mut count = 0;
            for (slot, b) in slices.iter_mut().zip(&bufs[first..]) {
                *slot = IoSlice::new(b);
                count += 1;
            }
            match sock.try_write_vectored(&slices[..count]) {
                Ok(0) => return Err(Leave::ClientClosed),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match tokio::time::timeout(slow_after, sock.writable()).await {
                        Err(_) => return Err(Leave::Slow),
                        Ok(Err(_)) => return Err(Leave::ClientClosed),
                        Ok(Ok(())) => continue,
                    }
                }
                Err(_) => return Err(Leave::ClientClosed),
            }
        };
        total += n as u64;
        let mut left = n;
        while left > 0 {
            let b = &mut bufs[first];
            if b.len() <= left {
                left -= b.len();
                first += 1;
            } else {
                b.advance(left);
                left = 0;
            }
        }
    }
    bufs.clear();
    Ok(total)
}
