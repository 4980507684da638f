//! `GET /spaces/{id}/live.opus`: a listener is this socket plus a cursor
//! into the space's shared ring. Each flush wakes the task once; it clones
//! the new chunks' reference counts and writes them in one vectored write.

use crate::admit::{self, Join};
use crate::app::{now_ms, App};
use crate::http::{html_response, json_response, RequestHead};
use crate::live::LiveSpace;
use bytes::{Buf, Bytes};
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
struct Admitted {
    app: Arc<App>,
    live: Arc<LiveSpace>,
    leave: Leave,
}

impl Admitted {
    /// Records why the listener left; the count is updated as it drops.
    fn left(mut self, leave: Leave) {
        self.leave = leave;
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.app.listeners.fetch_sub(1, Ordering::AcqRel);
        let now = self.live.listeners.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!("tribune_listeners", "space" => self.live.id.clone()).set(now as f64);
        metrics::counter!("tribune_listener_disconnects_total", "reason" => self.leave.as_str())
            .increment(1);
    }
}

async fn refuse<T>(
    sock: &mut TcpStream,
    status: u16,
    extra: &[(&str, String)],
    body: serde_json::Value,
    why: &'static str,
) -> Option<T> {
    metrics::counter!("tribune_listener_rejects_total", "reason" => why).increment(1);
    let _ = sock.write_all(&json_response(status, extra, &body)).await;
    let _ = sock.shutdown().await;
    None
}

/// What the listener path needs from the request head, so the head itself
/// (and the door's read buffer) are freed before the long-lived stream.
pub struct ListenRequest {
    pub head_only: bool,
    pub wants_html: bool,
    pub ticket: Option<String>,
    /// A listener token (private spaces), from `?token=` or Bearer.
    pub token: Option<String>,
    pub http_minor: u8,
}

impl ListenRequest {
    pub fn of(head: &RequestHead) -> Self {
        ListenRequest {
            head_only: head.method == "HEAD",
            wants_html: head.wants_html(),
            ticket: head.query_param("ticket").map(str::to_string),
            token: head
                .query_param("token")
                .map(str::to_string)
                .or_else(|| crate::auth::token_from_header(head.header("authorization")).ok()),
            http_minor: head.minor,
        }
    }
}

/// An admitted listener whose response head has been sent.
struct Ready {
    sock: TcpStream,
    admitted: Admitted,
    chunked: bool,
}

/// Admits (or answers) a listener. An admitted listener streams in a task
/// of its own that holds only what streaming needs, with `hold` (its
/// connection's place in the budgets): the task's size is most of a
/// listener's memory, so admission's larger state is not kept for hours.
pub async fn serve<H: Send + 'static>(
    app: &Arc<App>,
    sock: TcpStream,
    req: ListenRequest,
    id: &str,
    peer: SocketAddr,
    hold: H,
) {
    let Some(Ready {
        mut sock,
        admitted,
        chunked,
    }) = admit(app, sock, req, id, peer).await
    else {
        return;
    };
    let app = app.clone();
    tokio::spawn(async move {
        let live = admitted.live.clone();
        let leave = stream(&app, &live, &mut sock, chunked).await;
        admitted.left(leave);
        drop(hold);
    });
}

async fn admit(
    app: &Arc<App>,
    mut sock: TcpStream,
    req: ListenRequest,
    id: &str,
    peer: SocketAddr,
) -> Option<Ready> {
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
    let replay = format!("{base}/spaces/{id}/replay.opus");
    // cheapest first: the join rate, then the token, then the waiting room
    let verdict = admit::check_join_rate(app, peer.ip())
        .and_then(|()| {
            if entry.row.private {
                admit::check_private(app, id, req.token.as_deref())
            } else {
                Ok(())
            }
        })
        .map(|()| admit::join(app, req.ticket.as_deref(), &replay, false))
        .unwrap_or_else(Join::Refused);
    match verdict {
        Join::Admitted => {}
        Join::Pass(_) => unreachable!("passes are only issued when asked for"),
        Join::Refused(r) => {
            metrics::counter!("tribune_listener_rejects_total", "reason" => r.reason).increment(1);
            let retry: Vec<(&str, String)> = r
                .retry_after
                .iter()
                .map(|s| ("Retry-After", s.to_string()))
                .collect();
            let response = if req.wants_html && r.body.get("waiting_room").is_some() {
                let html = admit::waiting_html(
                    &r.body,
                    r.retry_after.unwrap_or(5),
                    &format!("/spaces/{id}/live.opus"),
                );
                html_response(r.status, &retry, &html)
            } else {
                json_response(r.status, &retry, &r.body)
            };
            let _ = sock.write_all(&response).await;
            let _ = sock.shutdown().await;
            return None;
        }
    }
    let count = live.listeners.fetch_add(1, Ordering::AcqRel) + 1;
    live.peak_listeners.fetch_max(count, Ordering::AcqRel);
    metrics::gauge!("tribune_listeners", "space" => id.to_string()).set(count as f64);
    metrics::counter!("tribune_listener_joins_total", "space" => id.to_string()).increment(1);
    let admitted = Admitted {
        app: app.clone(),
        live: live.clone(),
        leave: Leave::ClientClosed,
    };
    tracing::debug!(%peer, space = id, "listener joined");

    let _ = socket2::SockRef::from(&sock).set_send_buffer_size(app.cfg.listener_send_buffer);
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
        return None;
    }
    Some(Ready {
        sock,
        admitted,
        chunked,
    })
}

async fn stream(app: &App, live: &LiveSpace, sock: &mut TcpStream, chunked: bool) -> Leave {
    let bytes_out = metrics::counter!("tribune_bytes_out_total", "space" => live.id.clone());
    let slow_after = Duration::from_millis(app.cfg.slow_listener_ms);
    let mut head_rx = live.subscribe_head();
    let mut ending = live.subscribe_ending();
    let mut stray = 0usize;
    // No audio yet: wait for the first page (the headers carry its epoch).
    let headers = loop {
        if let Some(h) = live.headers() {
            break h;
        }
        tokio::select! {
            r = head_rx.changed() => if r.is_err() { return Leave::Ended },
            _ = ending.changed() => return Leave::Ended,
            gone = client_gone(sock, &mut stray) => if gone { return Leave::ClientClosed },
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
        // Between flushes, notice a client that hung up even when no audio
        // is flowing (a source gap), so it does not hold a place.
        tokio::select! {
            r = head_rx.changed() => if r.is_err() { return Leave::Ended },
            gone = client_gone(sock, &mut stray) => if gone { return Leave::ClientClosed },
        }
    }
}

/// Resolves when the client sent something: `true` if it hung up (or sent
/// more than a listener ever should), `false` for a few stray bytes.
async fn client_gone(sock: &TcpStream, stray: &mut usize) -> bool {
    const MAX_STRAY: usize = 4096;
    if sock.readable().await.is_err() {
        return true;
    }
    let mut buf = [0u8; 512];
    match sock.try_read(&mut buf) {
        Ok(0) => true,
        Ok(n) => {
            *stray += n;
            *stray > MAX_STRAY
        }
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    }
}

/// Writes every buffer, trying the socket at once (the usual case: one
/// syscall) and only waiting, with a deadline, when its buffer is full.
async fn write_all(
    sock: &mut TcpStream,
    bufs: &mut Vec<Bytes>,
    slow_after: Duration,
) -> Result<u64, Leave> {
    let mut total = 0u64;
    let mut first = 0;
    loop {
        while first < bufs.len() && bufs[first].is_empty() {
            first += 1;
        }
        if first == bufs.len() {
            break;
        }
        let n = match try_write(sock, &bufs[first..]) {
            Ok(0) => return Err(Leave::ClientClosed),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // only here does the task wait, and it holds no iovecs while it does
                match tokio::time::timeout(slow_after, sock.writable()).await {
                    Err(_) => return Err(Leave::Slow),
                    Ok(Err(_)) => return Err(Leave::ClientClosed),
                    Ok(Ok(())) => continue,
                }
            }
            Err(_) => return Err(Leave::ClientClosed),
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

/// One vectored write of up to 32 buffers, without waiting.
fn try_write(sock: &TcpStream, bufs: &[Bytes]) -> io::Result<usize> {
    const MAX_IOV: usize = 32;
    let mut slices = [IoSlice::new(&[]); MAX_IOV];
    let mut count = 0;
    for (slot, b) in slices.iter_mut().zip(bufs) {
        *slot = IoSlice::new(b);
        count += 1;
    }
    sock.try_write_vectored(&slices[..count])
}
