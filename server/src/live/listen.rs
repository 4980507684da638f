//! An admitted listener of `live.opus`: the response head, then the
//! hand-off to the space's fan-out shards (`shard.rs`), which write it
//! every flush.

use super::guard::ListenerGuard;
use super::space::LiveSpace;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How long a new listener of a space without audio yet waits for it
/// before its answer.
const FIRST_AUDIO_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How the listener asked.
pub struct Stream {
    /// HTTP minor version: 1.1 gets a chunked body (a clean end of stream),
    /// 1.0 a body that ends when the connection closes.
    pub http_minor: u8,
    /// `HEAD`: the response head only.
    pub head_only: bool,
    /// Resume at the page holding this seq (`?from=SEQ`).
    pub from: Option<u64>,
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
    let shards = live.shards();
    let mut joining = shards.prepare(chunked, stream.from);
    if joining.first_seq().is_none() && live.is_relayed() {
        // no audio here yet (an edge that just started relaying the space):
        // a moment's wait gives the listener its seq, and its burst
        let mut head = live.audience.subscribe_head();
        let _ = tokio::time::timeout(FIRST_AUDIO_WAIT, head.changed()).await;
        joining = shards.prepare(chunked, stream.from);
    }
    // the seq of the first packet after the headers: a player that counts
    // packets always knows where to resume (`?from=`), on any node
    let seq = joining
        .first_seq()
        .map(|s| format!("X-Tribune-Seq: {s}\r\n"))
        .unwrap_or_default();
    let response = format!(
        "HTTP/1.{} 200 OK\r\nContent-Type: audio/ogg\r\nCache-Control: no-cache, no-store\r\n\
         Connection: close\r\n{}Access-Control-Allow-Origin: *\r\nAccess-Control-Expose-Headers: X-Tribune-Seq\r\n\
         X-Content-Type-Options: nosniff\r\n{seq}icy-name: {title}\r\n\r\n",
        stream.http_minor.min(1),
        if chunked { "Transfer-Encoding: chunked\r\n" } else { "" },
    );
    if stream.head_only {
        let _ = sock.write_all(response.as_bytes()).await;
        return;
    }
    joining.after_head(response.into());
    shards.add(sock, guard, joining);
}
