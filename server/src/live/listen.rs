//! An admitted listener of `live.opus`: the response head, then the
//! hand-off to the space's fan-out shards (`shard.rs`), which write it
//! every flush.

use super::guard::ListenerGuard;
use super::shard::Joining;
use super::space::LiveSpace;
use std::net::TcpStream;
use tokio::io::AsyncWriteExt;

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

impl Stream {
    fn chunked(&self) -> bool {
        self.http_minor >= 1
    }
}

/// A listener the door let in, not yet handed to a shard.
pub struct Admitted {
    pub guard: ListenerGuard,
    pub stream: Stream,
}

/// Starts the listener at once, from the accept loop: `sock` (non-blocking)
/// gets its head, headers and burst in one write and goes to a shard. A
/// listener that has to wait (an edge with no audio for the space yet) or
/// asked with `HEAD` is given back for [`start`].
pub fn start_now(
    live: &LiveSpace,
    sock: TcpStream,
    admitted: Admitted,
    send_buffer: usize,
) -> Result<(), (TcpStream, Admitted)> {
    if admitted.stream.head_only {
        return Err((sock, admitted));
    }
    let joining = live
        .shards()
        .prepare(admitted.stream.chunked(), admitted.stream.from);
    if joining.first_seq().is_none() && live.is_relayed() {
        return Err((sock, admitted));
    }
    hand_over(live, sock, admitted, joining, send_buffer);
    Ok(())
}

/// Sends the response head and hands the listener to a shard of `live`,
/// waiting a moment for the first audio where there is none yet.
pub async fn start(
    live: &LiveSpace,
    mut sock: tokio::net::TcpStream,
    admitted: Admitted,
    send_buffer: usize,
) {
    let (chunked, from) = (admitted.stream.chunked(), admitted.stream.from);
    let shards = live.shards();
    let mut joining = shards.prepare(chunked, from);
    if joining.first_seq().is_none() && live.is_relayed() {
        // no audio here yet (an edge that just started relaying the space):
        // a moment's wait gives the listener its seq, and its burst
        let mut head = live.audience.subscribe_head();
        let _ = tokio::time::timeout(FIRST_AUDIO_WAIT, head.changed()).await;
        joining = shards.prepare(chunked, from);
    }
    if admitted.stream.head_only {
        let _ = sock
            .write_all(response_head(live, &admitted.stream, &joining).as_bytes())
            .await;
        return;
    }
    let Ok(sock) = sock.into_std() else { return };
    hand_over(live, sock, admitted, joining, send_buffer);
}

fn hand_over(
    live: &LiveSpace,
    sock: TcpStream,
    admitted: Admitted,
    mut joining: Joining,
    send_buffer: usize,
) {
    tracing::debug!(space = %live.id, "listener joined");
    let _ = socket2::SockRef::from(&sock).set_send_buffer_size(send_buffer);
    joining.after_head(response_head(live, &admitted.stream, &joining).into());
    live.shards().add(sock, admitted.guard, joining);
}

fn response_head(live: &LiveSpace, stream: &Stream, joining: &Joining) -> String {
    // the seq of the first packet after the headers: a player that counts
    // packets always knows where to resume (`?from=`), on any node
    let seq = joining
        .first_seq()
        .map(|s| format!("X-Tribune-Seq: {s}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.{} 200 OK\r\nContent-Type: audio/ogg\r\nCache-Control: no-cache, no-store\r\n\
         Connection: close\r\n{}Access-Control-Allow-Origin: *\r\nAccess-Control-Expose-Headers: X-Tribune-Seq\r\n\
         X-Content-Type-Options: nosniff\r\n{seq}icy-name: {}\r\n\r\n",
        stream.http_minor.min(1),
        if stream.chunked() { "Transfer-Encoding: chunked\r\n" } else { "" },
        live.header_title(),
    )
}
