//! `GET /spaces/{id}/live.opus` at the door: the space's state, then the
//! cheapest checks first (ticket signature, join rate, token, waiting
//! room). An admitted listener goes on to `live::listen`; everyone else
//! gets a complete answer and the connection is closed. Most listeners
//! are served straight from the accept loop (`serve_now`).

use super::admit::{Admission, ConnGuard, Refused};
use super::head::{json_response, RequestHead};
use crate::clock::wall_ms;
use crate::control::space_urls;
use crate::control::spaces::{SpaceEntry, SpaceGlance};
use crate::live::listen::Admitted;
use crate::live::{self, ListenerGuard, LiveSpace};
use serde_json::json;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tribune_core::space::SpaceState;

/// What the listener path needs from the request head, so the head itself
/// (and the door's read buffer) are freed before the long-lived stream.
pub struct ListenRequest {
    pub head_only: bool,
    pub wants_html: bool,
    pub ticket: Option<String>,
    /// A listener token (private spaces), from `?token=` or Bearer.
    pub token: Option<String>,
    pub http_minor: u8,
    /// `?from=SEQ`: resume at that seq; `Err` when it is not a number.
    pub from: Result<Option<u64>, ()>,
    /// The query as sent (kept when the listener is sent to another node).
    pub query: Option<String>,
    /// Another full node sent this listener here: no sending it on again.
    pub redirected: bool,
}

impl ListenRequest {
    pub fn of(head: &RequestHead) -> Self {
        ListenRequest {
            head_only: head.method == "HEAD",
            wants_html: head.wants_html(),
            ticket: head.query_param("ticket").map(str::to_string),
            token: head.query_param("token").map(str::to_string).or_else(|| {
                crate::control::auth::token_from_header(head.header("authorization")).ok()
            }),
            http_minor: head.minor,
            query: head.query.clone(),
            redirected: head.query_param("via").is_some(),
            from: head
                .query_param("from")
                .map(|v| v.parse::<u64>().map_err(|_| ()))
                .transpose(),
        }
    }
}

async fn answer(mut sock: TcpStream, response: &[u8]) {
    let _ = sock.write_all(response).await;
    let _ = sock.shutdown().await;
}

fn refuse(
    status: u16,
    extra: &[(&str, String)],
    body: serde_json::Value,
    why: &'static str,
) -> Vec<u8> {
    metrics::counter!("tribune_listener_rejects_total", "reason" => why).increment(1);
    json_response(status, extra, &body)
}

/// What the door does with a listener's request.
enum Answer {
    Admitted(Arc<LiveSpace>, Admitted),
    /// A complete response; the connection keeps its slot until it is sent.
    Refused(Vec<u8>, ConnGuard),
}

/// Admits (or answers) a listener from its own task. `guard` is its
/// connection's place in the budgets, kept by the listener until it leaves.
pub async fn serve(
    admission: &Arc<Admission>,
    sock: TcpStream,
    req: ListenRequest,
    id: &str,
    peer: SocketAddr,
    guard: ConnGuard,
) {
    let space = admission.app.space_or_fetch(id).await;
    let space = space.as_ref().map(SpaceEntry::glance);
    match decide(admission, req, id, peer, space, guard) {
        Answer::Admitted(live, admitted) => {
            let send_buffer = admission.app.cfg.listener_send_buffer;
            live::listen::start(&live, sock, admitted, send_buffer).await
        }
        Answer::Refused(response, _slot) => answer(sock, &response).await,
    }
}

/// Admits (or answers) a listener from the accept loop, on its
/// non-blocking socket, without a task or the runtime's registration:
/// the common join is a read, a decision and one write. What has to wait
/// (a space this edge must ask its upstream about, an answer the socket
/// does not take at once, a listener waiting for first audio) continues
/// in a task of its own.
pub fn serve_now(
    admission: &Arc<Admission>,
    sock: std::net::TcpStream,
    req: ListenRequest,
    id: &str,
    peer: SocketAddr,
    guard: ConnGuard,
) {
    let Some(space) = admission.app.glance_known(id) else {
        let (admission, id) = (admission.clone(), id.to_string());
        return spawn_with(sock, move |sock| async move {
            serve(&admission, sock, req, &id, peer, guard).await
        });
    };
    match decide(admission, req, id, peer, space, guard) {
        Answer::Admitted(live, admitted) => {
            let send_buffer = admission.app.cfg.listener_send_buffer;
            if let Err((sock, admitted)) =
                live::listen::start_now(&live, sock, admitted, send_buffer)
            {
                spawn_with(sock, move |sock| async move {
                    live::listen::start(&live, sock, admitted, send_buffer).await
                });
            }
        }
        Answer::Refused(response, slot) => {
            let sent = (&sock).write(&response).unwrap_or(0);
            if sent == response.len() {
                let _ = sock.shutdown(std::net::Shutdown::Write);
                return;
            }
            spawn_with(sock, move |sock| async move {
                answer(sock, &response[sent..]).await;
                drop(slot);
            });
        }
    }
}

/// Continues with `sock` in a task of its own, registered with the runtime.
fn spawn_with<F, Fut>(sock: std::net::TcpStream, then: F)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    if let Ok(sock) = TcpStream::from_std(sock) {
        tokio::spawn(then(sock));
    }
}

/// The door's decision: the space's state, then the cheapest checks first
/// (ticket signature, join rate, token, waiting room).
fn decide(
    admission: &Arc<Admission>,
    req: ListenRequest,
    id: &str,
    peer: SocketAddr,
    space: Option<SpaceGlance>,
    mut guard: ConnGuard,
) -> Answer {
    let app = &admission.app;
    let Ok(from) = req.from else {
        let body = json!({"error": "from must be a packet seq (a whole number)"});
        return Answer::Refused(refuse(400, &[], body, "bad_request"), guard);
    };
    let Some(space) = space else {
        let body = json!({"error": format!("no space with id {id:?}")});
        return Answer::Refused(refuse(404, &[], body, "unknown_space"), guard);
    };
    let live = match (space.state, space.live) {
        (SpaceState::Scheduled, _) => {
            let wait = space
                .scheduled_at
                .map_or(30, |at| (at.saturating_sub(wall_ms()) / 1000).clamp(5, 300));
            let body = json!({
                "error": "space has not started yet",
                "state": "scheduled",
                "scheduled_at": space.scheduled_at,
                "page": space_urls(app, id).page,
            });
            let extra = [("Retry-After", wait.to_string())];
            return Answer::Refused(refuse(503, &extra, body, "not_live"), guard);
        }
        (SpaceState::Live, Some(live)) => live,
        _ => {
            let replay = space_urls(app, id).replay;
            let extra = [("Link", format!("<{replay}>; rel=\"alternate\""))];
            let body = json!({"error": "space has ended; the recording is available", "state": "ended", "replay": replay});
            return Answer::Refused(refuse(410, &extra, body, "ended"), guard);
        }
    };
    // cheapest first: the ticket's signature, the join rate (a valid ticket
    // or pass was rate-limited when it was handed out), the token, the room
    let verdict = admission
        .read_ticket(req.ticket.as_deref())
        .and_then(|ticket| {
            if ticket.is_none() {
                admission.check_join_rate(peer.ip())?;
            }
            if space.private {
                admission.check_private(id, req.token.as_deref())?;
            }
            admission.join(ticket, || space_urls(app, id).replay)?;
            Ok(ticket.is_some())
        });
    match verdict {
        Ok(with_pass) => {
            if with_pass {
                guard.hold_pass();
            }
        }
        Err(r) => {
            // full here: another node of the fleet with room takes it
            if let (Some(_), false, Some(fleet)) = (&r.waiting, req.redirected, &app.fleet) {
                if let Some(node) = fleet.alternates().first() {
                    let query = req
                        .query
                        .as_deref()
                        .map(|q| format!("{q}&"))
                        .unwrap_or_default();
                    let location = format!("{}/spaces/{id}/live.opus?{query}via=1", node.url);
                    metrics::counter!("tribune_listener_redirects_total").increment(1);
                    let body = json!({"error": "this node is full; another node has room", "location": location});
                    let extra = [("Location", location.clone())];
                    return Answer::Refused(json_response(307, &extra, &body), guard);
                }
            }
            let path = format!("/spaces/{id}/live.opus");
            let html = (req.wants_html && r.waiting.is_some()).then_some(path.as_str());
            return Answer::Refused(Refused::response(&r, html), guard);
        }
    }
    let guard = ListenerGuard::admitted(live.audience.clone(), Box::new(guard));
    let stream = live::listen::Stream {
        http_minor: req.http_minor,
        head_only: req.head_only,
        from,
    };
    Answer::Admitted(live, Admitted { guard, stream })
}
