//! The fan-out: a live space's listeners are split over a few shard tasks
//! (one per core). Each flush wakes each shard once, and the shard writes
//! the new chunk to every listener it holds, one non-blocking vectored
//! write each. A listener is a socket, a cursor into the ring and, only
//! while its socket is full, the buffers still to write: no task, no
//! waker, no reactor registration of its own.

use crate::app::App;
use crate::live::LiveSpace;
use bytes::{Buf, Bytes};
use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tribune_core::SAMPLE_RATE;

/// Why a listener's connection ended, as counted in `/metrics`.
#[derive(Clone, Copy, Debug)]
pub enum Leave {
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

/// Holds a listener's place in the counts; frees it however it leaves.
pub struct Admitted {
    pub app: Arc<App>,
    pub live: Arc<LiveSpace>,
    pub leave: Leave,
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

/// An admitted listener whose response head has been sent.
pub struct Joined {
    pub sock: tokio::net::TcpStream,
    pub admitted: Admitted,
    pub chunked: bool,
}

pub struct Shards {
    joins: Vec<mpsc::UnboundedSender<Listener>>,
    next: AtomicUsize,
    burst: u64,
    slow_after: Duration,
}

impl Shards {
    /// One shard per core (tokio worker), for the space `live`.
    pub fn spawn(app: &Arc<App>, live: &Arc<LiveSpace>) -> Shards {
        let count = std::thread::available_parallelism().map_or(2, |n| n.get());
        let joins = (0..count)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(run(app.clone(), Arc::downgrade(live), rx));
                tx
            })
            .collect();
        Shards {
            joins,
            next: AtomicUsize::new(0),
            burst: app.cfg.burst_ms * SAMPLE_RATE / 1000,
            slow_after: Duration::from_millis(app.cfg.slow_listener_ms),
        }
    }

    /// Sends the new listener its headers and burst from the caller's task
    /// (time to first audio does not wait for a busy shard), then hands it
    /// to a shard for every flush after.
    /// `hold` is the connection's place in the node's budgets, kept until
    /// the listener leaves.
    pub fn add(&self, space: &LiveSpace, j: Joined, hold: Box<dyn Send>) {
        let Ok(sock) = j.sock.into_std() else { return };
        let mut l = Listener {
            sock,
            admitted: j.admitted,
            _hold: hold,
            chunked: j.chunked,
            cursor: None,
            pending: Vec::new(),
            blocked_since: None,
            last_write: Instant::now(),
            stray: 0,
            terminated: false,
        };
        let mut written = 0;
        let step = advance(
            space,
            &mut l,
            self.burst,
            self.slow_after,
            Instant::now(),
            &mut written,
        );
        metrics::counter!("tribune_bytes_out_total", "space" => space.id.clone())
            .increment(written);
        match step {
            Step::Keep => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % self.joins.len();
                // a closed shard means the space is gone: dropping the listener closes it
                let _ = self.joins[i].send(l);
            }
            Step::Leave(why) => l.admitted.leave = why,
        }
    }
}

struct Listener {
    sock: TcpStream,
    admitted: Admitted,
    _hold: Box<dyn Send>,
    chunked: bool,
    /// None until the space has audio (and so header pages) to start with.
    cursor: Option<u64>,
    pending: Vec<Bytes>,
    blocked_since: Option<Instant>,
    last_write: Instant,
    stray: usize,
    /// The end of the body is queued: nothing more to read from the ring.
    terminated: bool,
}

/// A client that sends more than this after its request is not a player.
const MAX_STRAY: usize = 4096;
/// Listeners that received nothing for this long are checked for a hang-up
/// (while audio flows, a hang-up shows as a failed write within two flushes).
const IDLE_PROBE: Duration = Duration::from_secs(1);
/// How soon a listener whose socket was full is tried again.
const BLOCKED_RETRY: Duration = Duration::from_millis(10);

enum Step {
    Keep,
    Leave(Leave),
}

async fn run(app: Arc<App>, live: Weak<LiveSpace>, mut joins: mpsc::UnboundedReceiver<Listener>) {
    let (mut head, burst, slow_after) = match live.upgrade() {
        Some(l) => (
            l.subscribe_head(),
            app.cfg.burst_ms * SAMPLE_RATE / 1000,
            Duration::from_millis(app.cfg.slow_listener_ms),
        ),
        None => return,
    };
    let bytes_out = match live.upgrade() {
        Some(l) => metrics::counter!("tribune_bytes_out_total", "space" => l.id.clone()),
        None => return,
    };
    // listeners whose socket took everything, and those whose socket was full
    let mut ready: Vec<Listener> = Vec::new();
    let mut blocked: Vec<Listener> = Vec::new();
    let mut counted_blocked = 0usize;
    let mut probe = tokio::time::interval(IDLE_PROBE);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retry = tokio::time::interval(BLOCKED_RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // the space is only borrowed between waits, so it can be dropped
        tokio::select! {
            joined = joins.recv() => {
                let Some(mut l) = joined else { break };
                let Some(space) = live.upgrade() else { break };
                // a flush may have come between its first write and now
                let mut written = 0;
                let step = advance(&space, &mut l, burst, slow_after, Instant::now(), &mut written);
                bytes_out.increment(written);
                match step {
                    Step::Keep if l.blocked_since.is_some() => blocked.push(l),
                    Step::Keep => ready.push(l),
                    Step::Leave(why) => l.admitted.leave = why,
                }
            }
            changed = head.changed() => {
                if changed.is_err() {
                    break;
                }
                let Some(space) = live.upgrade() else { break };
                let now = Instant::now();
                let written = sweep(&space, &mut ready, &mut blocked, true, burst, slow_after, now);
                bytes_out.increment(written);
            }
            // the rare listener whose socket was full catches up between flushes
            _ = retry.tick(), if !blocked.is_empty() => {
                let Some(space) = live.upgrade() else { break };
                let now = Instant::now();
                let written = sweep(&space, &mut blocked, &mut ready, false, burst, slow_after, now);
                bytes_out.increment(written);
            }
            _ = probe.tick() => {
                let now = Instant::now();
                let check = |l: &mut Listener| -> bool {
                    if now.duration_since(l.last_write) < IDLE_PROBE && l.blocked_since.is_none() {
                        return true;
                    }
                    let why = match probe_client(l) {
                        Step::Leave(why) => why,
                        Step::Keep => match l.blocked_since {
                            Some(t) if now.duration_since(t) > slow_after => Leave::Slow,
                            _ => return true,
                        },
                    };
                    l.admitted.leave = why;
                    false
                };
                ready.retain_mut(check);
                blocked.retain_mut(check);
            }
        }
        // listeners waiting on a full socket, for the health watcher
        if blocked.len() != counted_blocked {
            if blocked.len() > counted_blocked {
                app.blocked_writers
                    .fetch_add(blocked.len() - counted_blocked, Ordering::Relaxed);
            } else {
                app.blocked_writers
                    .fetch_sub(counted_blocked - blocked.len(), Ordering::Relaxed);
            }
            counted_blocked = blocked.len();
        }
    }
    app.blocked_writers
        .fetch_sub(counted_blocked, Ordering::Relaxed);
}

/// Brings every listener of `list` up to date. Those that leave are
/// dropped; those whose socket is full (`move_blocked`) or no longer full
/// (`!move_blocked`) move to `other`. Returns the bytes written.
fn sweep(
    space: &LiveSpace,
    list: &mut Vec<Listener>,
    other: &mut Vec<Listener>,
    move_blocked: bool,
    burst: u64,
    slow_after: Duration,
    now: Instant,
) -> u64 {
    let mut written = 0;
    let mut i = 0;
    while i < list.len() {
        match advance(space, &mut list[i], burst, slow_after, now, &mut written) {
            Step::Leave(why) => {
                let mut l = list.swap_remove(i);
                l.admitted.leave = why;
            }
            Step::Keep if list[i].blocked_since.is_some() == move_blocked => {
                other.push(list.swap_remove(i));
            }
            Step::Keep => i += 1,
        }
    }
    written
}

/// Brings one listener up to the head of the ring, as far as its socket
/// takes without waiting.
fn advance(
    space: &LiveSpace,
    l: &mut Listener,
    burst: u64,
    slow_after: Duration,
    now: Instant,
    written_total: &mut u64,
) -> Step {
    if !l.terminated {
        // the header pages, fetched only for a listener that has not started
        let headers = match l.cursor {
            Some(_) => None,
            None => space.headers(),
        };
        let ring = space.ring.read().unwrap_or_else(|e| e.into_inner());
        let ended = match (l.cursor.as_mut(), headers) {
            // no audio yet; a space that ends without any just ends the body
            (None, None) if !ring.ended() => return Step::Keep,
            (None, None) => true,
            (cursor, headers) => {
                let cursor = match (cursor, headers) {
                    (Some(c), _) => c,
                    (None, Some(headers)) => {
                        if l.chunked {
                            l.pending
                                .push(Bytes::from(format!("{:x}\r\n", headers.len())));
                            l.pending.push(headers);
                            l.pending.push(Bytes::from_static(b"\r\n"));
                        } else {
                            l.pending.push(headers);
                        }
                        l.cursor.insert(ring.burst_start(burst))
                    }
                    (None, None) => return Step::Keep,
                };
                if ring.read(cursor, &mut l.pending, l.chunked).is_err() {
                    return Step::Leave(Leave::Lagged);
                }
                ring.ended() && *cursor == ring.head()
            }
        };
        drop(ring);
        if ended {
            l.terminated = true;
            if l.chunked {
                l.pending.push(Bytes::from_static(b"0\r\n\r\n"));
            }
        }
    }
    let ended = l.terminated;
    match write_pending(&l.sock, &mut l.pending) {
        Ok(written) => {
            if written > 0 {
                l.last_write = now;
                *written_total += written;
            }
        }
        Err(_) => return Step::Leave(Leave::ClientClosed),
    }
    if l.pending.is_empty() {
        l.blocked_since = None;
        if ended {
            let _ = l.sock.shutdown(std::net::Shutdown::Write);
            return Step::Leave(Leave::Ended);
        }
        return Step::Keep;
    }
    let since = *l.blocked_since.get_or_insert(now);
    if now.duration_since(since) > slow_after {
        return Step::Leave(Leave::Slow);
    }
    Step::Keep
}

/// Writes as much as the socket takes now; what is left stays pending.
fn write_pending(mut sock: &TcpStream, bufs: &mut Vec<Bytes>) -> io::Result<u64> {
    const MAX_IOV: usize = 32;
    let mut total = 0u64;
    let mut first = 0;
    loop {
        while first < bufs.len() && bufs[first].is_empty() {
            first += 1;
        }
        if first == bufs.len() {
            bufs.clear();
            return Ok(total);
        }
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let mut count = 0;
        for (slot, b) in slices.iter_mut().zip(&bufs[first..]) {
            *slot = IoSlice::new(b);
            count += 1;
        }
        let n = match sock.write_vectored(&slices[..count]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                bufs.drain(..first);
                return Ok(total);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
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
}

/// A listener sends nothing after its request: reading tells whether it
/// hung up (or is no player at all).
fn probe_client(l: &mut Listener) -> Step {
    let mut buf = [0u8; 1024];
    match (&l.sock).read(&mut buf) {
        Ok(0) => Step::Leave(Leave::ClientClosed),
        Ok(n) => {
            l.stray += n;
            if l.stray > MAX_STRAY {
                Step::Leave(Leave::ClientClosed)
            } else {
                Step::Keep
            }
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Step::Keep,
        Err(_) => Step::Leave(Leave::ClientClosed),
    }
}
