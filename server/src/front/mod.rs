//! The front door: every TCP connection starts here.
//!
//! A connection first takes its place in the budgets (`admit.rs`); its
//! request head is read under a deadline and a size cap before anything
//! else is allocated (`head.rs`). The two hot paths, listening
//! (`listen.rs`) and sources (`source.rs`), are served directly on the
//! socket like Icecast does (no per-request framework cost; sources may
//! send bodies with no length at all). Every other request is handed, with
//! the bytes already read, to hyper and the axum router (`control`).

pub mod admit;
pub mod head;
pub mod listen;
pub mod source;

use admit::{Admission, ConnGuard};
use axum::Router;
use bytes::{Buf, Bytes, BytesMut};
use head::{error_response, read_head, RequestHead};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Which accept path a connection came in on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Everyone: listeners, the API, pages, sources.
    Public,
    /// Hosts, speakers and sources only, with a budget of its own.
    Reserved,
}

/// A refusal sent straight from the accept loop: one non-blocking write,
/// no task, no buffers.
fn refuse_at_accept(sock: &std::net::TcpStream, reason: &'static str) {
    metrics::counter!("tribune_connections_refused_total", "reason" => reason).increment(1);
    let (status, message) = match reason {
        "ip_connections" => (429, "too many open connections from your address"),
        "subnet_connections" => (429, "too many open connections from your network"),
        _ => (
            503,
            "this node has no room for more connections; try again shortly",
        ),
    };
    let retry = [("Retry-After", "5".to_string())];
    let body = head::json_response(status, &retry, &serde_json::json!({ "error": message }));
    let _ = (&*sock).write(&body);
}

/// Connections taken per wake-up of the accept loop before it lets other
/// tasks of its worker run.
const ACCEPT_BATCH: usize = 64;

pub async fn serve(admission: Arc<Admission>, listener: TcpListener, router: Router, lane: Lane) {
    // accepted sockets stay outside the runtime until they need it (see
    // `accepted`): mio's accept gives them non-blocking, unregistered
    let listener = match watch(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch the listening socket");
            return;
        }
    };
    loop {
        let (mut backoff, mut more) = (false, true);
        match listener.readable().await {
            Ok(mut ready) => {
                for _ in 0..ACCEPT_BATCH {
                    match ready.try_io(|l| l.get_ref().accept()) {
                        Err(_would_block) => {
                            more = false;
                            break;
                        }
                        Ok(Ok((sock, peer))) => {
                            accepted(&admission, &router, sock.into(), peer, lane)
                        }
                        Ok(Err(e)) => {
                            // out of file descriptors: back off instead of spinning
                            metrics::counter!("tribune_accept_errors_total").increment(1);
                            tracing::warn!(error = %e, "accept failed");
                            backoff = true;
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "listening socket failed");
                backoff = true;
            }
        }
        if backoff {
            tokio::time::sleep(Duration::from_millis(20)).await;
        } else if more {
            tokio::task::yield_now().await;
        }
    }
}

/// The listening socket, watched by the runtime for readiness only.
fn watch(listener: TcpListener) -> io::Result<AsyncFd<mio::net::TcpListener>> {
    let listener = mio::net::TcpListener::from_std(listener.into_std()?);
    // SAFETY: the AsyncFd owns the listener for its whole life and only
    // ever lends it out (`get_ref`), so the descriptor it watches stays
    // open and the same.
    unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }.map_err(|e| e.into())
}

/// A new connection, non-blocking and not yet known to the runtime. Its
/// request is usually in already (clients send it right after
/// connecting): a listener is then admitted or answered here, with no task
/// and no registration. Everything else, and a request still on its way,
/// continues in a task of its own (`connection`).
fn accepted(
    admission: &Arc<Admission>,
    router: &Router,
    sock: std::net::TcpStream,
    peer: SocketAddr,
    lane: Lane,
) {
    // read before any refusal too: closing a socket with its request
    // still unread would answer the client with a reset, not the refusal
    let mut first = [0u8; 1024];
    let n = match (&sock).read(&mut first) {
        Ok(0) => return,
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(_) => return,
    };
    let guard = match lane {
        Lane::Public => admission.open_public(peer.ip()),
        Lane::Reserved => admission.open_reserved(),
    };
    let guard = match guard {
        Ok(g) => g,
        Err(reason) => return refuse_at_accept(&sock, reason),
    };
    let cfg = &admission.app.cfg;
    if n > 0 && lane == Lane::Public {
        if let Ok(Some((head, _))) = head::parse_head(&first[..n], cfg.max_header_bytes) {
            if let Route::Listen(id) = route(&head) {
                let req = listen::ListenRequest::of(&head);
                return listen::serve_now(admission, sock, req, id, peer, guard);
            }
        }
    }
    let Ok(sock) = TcpStream::from_std(sock) else {
        return;
    };
    let read = BytesMut::from(&first[..n]);
    tokio::spawn(connection(
        admission.clone(),
        router.clone(),
        sock,
        read,
        peer,
        lane,
        guard,
    ));
}

enum Route<'a> {
    Listen(&'a str),
    Source(&'a str),
    Other,
}

fn route(head: &RequestHead) -> Route<'_> {
    let Some(rest) = head.path.strip_prefix("/spaces/") else {
        return Route::Other;
    };
    let Some((id, leaf)) = rest.split_once('/') else {
        return Route::Other;
    };
    match (head.method.as_str(), leaf) {
        ("GET" | "HEAD", "live.opus") => Route::Listen(id),
        ("PUT" | "SOURCE", "source") => Route::Source(id),
        _ => Route::Other,
    }
}

/// Serves one connection (`read`: its first bytes, taken at accept);
/// `guard` holds its place in the connection budgets
/// until it closes (a listener hands it to its streaming task).
async fn connection(
    admission: Arc<Admission>,
    router: Router,
    mut sock: TcpStream,
    read: BytesMut,
    peer: SocketAddr,
    lane: Lane,
    guard: ConnGuard,
) {
    let cfg = &admission.app.cfg;
    let timeout = Duration::from_millis(cfg.header_timeout_ms);
    let limit = cfg.max_header_bytes;
    let (head, head_len, buf) = match read_head(&mut sock, read, limit, timeout).await {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return,
        Err((status, message)) => {
            metrics::counter!("tribune_requests_rejected_total", "reason" => status.to_string())
                .increment(1);
            tracing::debug!(%peer, status, message, "request refused at the door");
            let _ = sock.write_all(&error_response(status, message)).await;
            let _ = sock.shutdown().await;
            return;
        }
    };
    match route(&head) {
        Route::Listen(_) if lane == Lane::Reserved => {
            let msg = "this address is reserved for hosts, speakers and sources; listen on the public address";
            let _ = sock.write_all(&error_response(403, msg)).await;
        }
        Route::Listen(id) => {
            let (id, req) = (id.to_string(), listen::ListenRequest::of(&head));
            drop((head, buf));
            listen::serve(&admission, sock, req, &id, peer, guard).await
        }
        Route::Source(id) => {
            let id = id.to_string();
            let mut body = buf;
            body.advance(head_len);
            source_boxed(admission.app.clone(), sock, head, id, body, peer).await
        }
        Route::Other => {
            let timeout = Duration::from_millis(cfg.header_timeout_ms);
            let max_buf = cfg.max_header_bytes.max(8192);
            serve_http(router, sock, buf, peer, timeout, max_buf).await
        }
    }
}

type Boxed = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

// The source and HTTP branches run as boxed futures built outside any
// async fn, so a connection's task is sized by what a listener needs, not
// by the largest branch (a listener's task size is most of its memory).

fn source_boxed(
    app: Arc<crate::control::spaces::App>,
    sock: TcpStream,
    head: RequestHead,
    id: String,
    body: BytesMut,
    peer: SocketAddr,
) -> Boxed {
    Box::pin(async move { source::serve(&app, sock, &head, &id, body, peer).await })
}

fn serve_http(
    router: Router,
    sock: TcpStream,
    buf: BytesMut,
    peer: SocketAddr,
    header_timeout: Duration,
    max_buf: usize,
) -> Boxed {
    Box::pin(async move {
        let io = Prefixed {
            prefix: buf.freeze(),
            inner: sock,
        };
        // handlers that rate-limit by client address read it from here
        let router = router.layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        let service = TowerToHyperService::new(router);
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(max_buf)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        if let Err(e) = conn.await {
            tracing::debug!(%peer, error = %e, "http connection ended with an error");
        }
    })
}

/// A socket whose first bytes were already read by the door.
struct Prefixed {
    prefix: Bytes,
    inner: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
