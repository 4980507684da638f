//! An admitted listener of `live.opus`: the response head, then the
//! hand-off to the space's fan-out shards (`shard.rs`), which write it
//! every flush.

use super::guard::ListenerGuard;
use super::space::LiveSpace;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How the listener asked.
pub struct Stream {
    /// HTTP minor version: 1.1 gets a chunked body (a clean end of stream),
    /// 1.0 a body that ends when the connection closes.
    pub http_minor: u8,
    /// `HEAD`: the response head only.
    pub head_only: bool,
}

/// Sends the response head and hands the listener to a shard of `live`.
pub async fn start(
    live: &LiveSpace,
    mut sock: TcpStream,
    guard: ListenerGuard,
    stream: Stream,
    send_buffer: usize,
) {
    tracing::debug!(space = %live.id, "listener joined");
    let _ = socket2::SockRef::from(&sock).set_send_buffer_size(send_buffer);
    let chunked = stream.http_minor >= 1;
    let title: String = live
        .title()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let response = format!(
        "HTTP/1.{} 200 OK\r\nContent-Type: audio/ogg\r\nCache-Control: no-cache, no-store\r\n\
         Connection: close\r\n{}Access-Control-Allow-Origin: *\r\nX-Content-Type-Options: nosniff\r\n\
         icy-name: {title}\r\n\r\n",
        stream.http_minor.min(1),
        if chunked { "Transfer-Encoding: chunked\r\n" } else { "" },
    );
    if sock.write_all(response.as_bytes()).await.is_err() || stream.head_only {
        return;
    }
    live.shards().add(sock, guard, chunked);
}
