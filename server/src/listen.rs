//! `GET /spaces/{id}/live.opus`: admission and the response head. An
//! admitted listener is then handed to one of the space's fan-out shards
//! (`shard.rs`), which writes it every flush.

use crate::admit;
use crate::app::{now_ms, App};
use crate::http::{html_response, json_response, RequestHead};
use crate::shard::{Admitted, Joined, Leave, Shards};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tribune_core::space::SpaceState;

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

/// Admits (or answers) a listener. An admitted listener is handed to the
/// space's fan-out shards with only what streaming needs and `hold` (its
/// connection's place in the budgets): admission's larger state is not
/// kept for hours.
pub async fn serve(
    app: &Arc<App>,
    sock: TcpStream,
    req: ListenRequest,
    id: &str,
    peer: SocketAddr,
    mut guard: admit::ConnGuard,
) {
    let Some(joined) = admit(app, sock, req, id, peer, &mut guard).await else {
        return;
    };
    let live = joined.admitted.live.clone();
    live.shards
        .get_or_init(|| Shards::spawn(app, &live))
        .add(&live, joined, Box::new(guard));
}

async fn admit(
    app: &Arc<App>,
    mut sock: TcpStream,
    req: ListenRequest,
    id: &str,
    peer: SocketAddr,
    guard: &mut admit::ConnGuard,
) -> Option<Joined> {
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
    // cheapest first: the ticket's signature, the join rate (a valid ticket
    // or pass was rate-limited when it was handed out), the token, the room
    let verdict = admit::read_ticket(app, req.ticket.as_deref()).and_then(|ticket| {
        if ticket.is_none() {
            admit::check_join_rate(app, peer.ip())?;
        }
        if entry.row.private {
            admit::check_private(app, id, req.token.as_deref())?;
        }
        admit::join(app, ticket, &replay)?;
        Ok(ticket.is_some())
    });
    match verdict {
        Ok(true) => guard.hold_pass(),
        Ok(false) => {}
        Err(r) => {
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
        entry
            .row
            .title
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
    );
    drop(entry.row);
    if sock.write_all(response.as_bytes()).await.is_err() || req.head_only {
        return None;
    }
    Some(Joined {
        sock,
        admitted,
        chunked,
    })
}
