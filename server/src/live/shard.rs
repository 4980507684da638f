//! The fan-out: a live space's listeners are split over a few shard tasks
//! (one per core). Each flush wakes each shard once, and the shard writes
//! the new chunk to every listener it holds, one non-blocking vectored
//! write each. A listener is a socket, a cursor (`tribune_core::listener`:
//! what it gets next, and the verdict when its socket stays full) and,
//! only while its socket is full, the buffers still to write: no task, no
//! waker, no reactor registration of its own. A new listener waits in its
//! shard's inbox for the next flush (no wake-up per join), unless its
//! first write left its socket full.

use super::audience::Audience;
use super::guard::ListenerGuard;
use bytes::{Buf, Bytes};
use std::io::{self, IoSlice, Read};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tribune_core::listener::{Leave, ListenerCursor, Verdict};

pub struct Shards {
    audience: Arc<Audience>,
    inboxes: Vec<Arc<Inbox>>,
    next: AtomicUsize,
    rules: Rules,
    /// The clock listeners' cursors run on.
    started: Instant,
}

/// What every listener of a space is held to.
#[derive(Clone, Copy)]
struct Rules {
    burst_samples: u64,
    slow_after_ms: u64,
}

impl Shards {
    /// One shard per core (tokio worker), for `audience`.
    pub fn spawn(audience: &Arc<Audience>, burst_samples: u64, slow_after_ms: u64) -> Shards {
        let count = std::thread::available_parallelism().map_or(2, |n| n.get());
        let rules = Rules {
            burst_samples,
            slow_after_ms,
        };
        let started = Instant::now();
        let inboxes = (0..count)
            .map(|_| {
                let inbox = Arc::new(Inbox::default());
                tokio::spawn(run(Arc::downgrade(audience), inbox.clone(), rules, started));
                inbox
            })
            .collect();
        Shards {
            audience: audience.clone(),
            inboxes,
            next: AtomicUsize::new(0),
            rules,
            started,
        }
    }

    /// Where a new listener starts (a burst of recent audio, or the page
    /// holding `from` when it resumes), and what it gets first: known
    /// before the response head, which tells the first packet's seq.
    pub fn prepare(&self, chunked: bool, from: Option<u64>) -> Joining {
        let now = self.started.elapsed().as_millis() as u64;
        let mut cursor = match from {
            Some(seq) => ListenerCursor::resuming(chunked, now, seq),
            None => ListenerCursor::new(chunked, now),
        };
        let mut pending = Vec::new();
        let headers = self.audience.headers();
        let ring = self.audience.ring();
        // a resume the ring can no longer serve becomes a plain join; the
        // seq header shows the gap
        if cursor
            .fill(
                &ring,
                headers.as_ref(),
                self.rules.burst_samples,
                &mut pending,
            )
            .is_err()
        {
            pending.clear();
            cursor = ListenerCursor::new(chunked, now);
            let _ = cursor.fill(
                &ring,
                headers.as_ref(),
                self.rules.burst_samples,
                &mut pending,
            );
        }
        Joining { cursor, pending }
    }

    /// Writes the prepared listener's first buffers from the caller's task
    /// (time to first audio does not wait for a busy shard), then hands it
    /// to a shard for every flush after. `sock` must be non-blocking.
    pub fn add(&self, sock: TcpStream, guard: ListenerGuard, joining: Joining) {
        let space = &self.audience;
        let now = self.started.elapsed().as_millis() as u64;
        let mut l = Listener {
            sock,
            guard,
            cursor: joining.cursor,
            pending: joining.pending,
            stray: 0,
        };
        let mut written = 0;
        let kept = advance(space, &mut l, self.rules, now, &mut written);
        space.metrics.bytes_out.increment(written);
        if kept {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % self.inboxes.len();
            self.inboxes[i].put(l);
        }
    }
}

/// Listeners handed to a shard that it has not taken yet.
#[derive(Default)]
struct Inbox {
    waiting: Mutex<InboxState>,
    /// Rung only for a listener whose socket is already full: it needs its
    /// retries before the next flush.
    urgent: Notify,
}

#[derive(Default)]
struct InboxState {
    listeners: Vec<Listener>,
    /// The shard has ended (the space is gone).
    closed: bool,
}

impl Inbox {
    fn put(&self, l: Listener) {
        let urgent = l.cursor.blocked();
        {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            // a closed shard means the space is gone: dropping the listener closes it
            if waiting.closed {
                return;
            }
            waiting.listeners.push(l);
        }
        if urgent {
            self.urgent.notify_one();
        }
    }

    /// Moves the waiting listeners into `into`.
    fn take(&self, into: &mut Vec<Listener>) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        into.append(&mut waiting.listeners);
    }

    fn close(&self) -> Vec<Listener> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting.closed = true;
        std::mem::take(&mut waiting.listeners)
    }
}

/// A listener about to be added: its cursor and first buffers.
pub struct Joining {
    cursor: ListenerCursor,
    pending: Vec<Bytes>,
}

impl Joining {
    /// Puts the response head before the first buffers, so the head, the
    /// header pages and the burst leave in one write (one segment and one
    /// wake-up of the player instead of two).
    pub fn after_head(&mut self, head: Bytes) {
        self.pending.insert(0, head);
    }

    /// Seq of the first packet it gets, when known.
    pub fn first_seq(&self) -> Option<u64> {
        self.cursor.first_seq()
    }
}

struct Listener {
    sock: TcpStream,
    guard: ListenerGuard,
    cursor: ListenerCursor,
    /// What its socket did not take yet.
    pending: Vec<Bytes>,
    /// Bytes the client sent after its request.
    stray: usize,
}

impl Listener {
    fn leave(&mut self, why: Leave) -> bool {
        self.guard.leaving(why);
        false
    }
}

/// A client that sends more than this after its request is not a player.
const MAX_STRAY: usize = 4096;
/// Listeners that received nothing for this long are checked for a hang-up
/// (while audio flows, a hang-up shows as a failed write within two flushes).
const IDLE_PROBE: Duration = Duration::from_secs(1);
/// How soon a listener whose socket was full is tried again.
const BLOCKED_RETRY: Duration = Duration::from_millis(10);

async fn run(live: Weak<Audience>, inbox: Arc<Inbox>, rules: Rules, started: Instant) {
    let (mut head, bytes_out, health) = match live.upgrade() {
        Some(l) => (
            l.subscribe_head(),
            l.metrics.bytes_out.clone(),
            l.health.clone(),
        ),
        None => {
            inbox.close();
            return;
        }
    };
    let now_ms = || started.elapsed().as_millis() as u64;
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
            // a new listener whose socket is already full
            _ = inbox.urgent.notified() => {
                let Some(space) = live.upgrade() else { break };
                let mut joined = Vec::new();
                inbox.take(&mut joined);
                // a flush may have come between its first write and now
                let written = sweep(&space, &mut joined, &mut blocked, true, rules, now_ms());
                ready.append(&mut joined);
                bytes_out.increment(written);
            }
            changed = head.changed() => {
                if changed.is_err() {
                    break;
                }
                let Some(space) = live.upgrade() else { break };
                // new listeners join at the flush after their burst
                inbox.take(&mut ready);
                let written = sweep(&space, &mut ready, &mut blocked, true, rules, now_ms());
                bytes_out.increment(written);
            }
            // the rare listener whose socket was full catches up between flushes
            _ = retry.tick(), if !blocked.is_empty() => {
                let Some(space) = live.upgrade() else { break };
                let written = sweep(&space, &mut blocked, &mut ready, false, rules, now_ms());
                bytes_out.increment(written);
            }
            _ = probe.tick() => {
                // while no audio flows, new listeners are taken here
                inbox.take(&mut ready);
                let now = now_ms();
                let check = |l: &mut Listener| -> bool {
                    if l.cursor.idle_ms(now) < IDLE_PROBE.as_millis() as u64 && !l.cursor.blocked() {
                        return true;
                    }
                    match probe_client(l) {
                        Some(why) => l.leave(why),
                        // a full socket that nothing drained: the cursor's verdict
                        None if l.cursor.blocked() => match l.cursor.wrote(now, false, false, rules.slow_after_ms) {
                            Verdict::Slow => l.leave(Leave::Slow),
                            _ => true,
                        },
                        None => true,
                    }
                };
                ready.retain_mut(check);
                blocked.retain_mut(check);
            }
        }
        // listeners waiting on a full socket, for the health watcher
        if blocked.len() > counted_blocked {
            health
                .blocked_writers
                .fetch_add(blocked.len() - counted_blocked, Ordering::Relaxed);
        } else if blocked.len() < counted_blocked {
            health
                .blocked_writers
                .fetch_sub(counted_blocked - blocked.len(), Ordering::Relaxed);
        }
        counted_blocked = blocked.len();
    }
    health
        .blocked_writers
        .fetch_sub(counted_blocked, Ordering::Relaxed);
    // those still waiting get what is left (the end of stream, if it came)
    let mut last = inbox.close();
    if let Some(space) = live.upgrade() {
        let mut written = 0;
        for l in &mut last {
            advance(&space, l, rules, now_ms(), &mut written);
        }
        bytes_out.increment(written);
    }
}

/// Brings every listener of `list` up to date. Those that leave are
/// dropped; those whose socket is full (`move_blocked`) or no longer full
/// (`!move_blocked`) move to `other`. Returns the bytes written.
fn sweep(
    space: &Audience,
    list: &mut Vec<Listener>,
    other: &mut Vec<Listener>,
    move_blocked: bool,
    rules: Rules,
    now_ms: u64,
) -> u64 {
    let mut written = 0;
    let mut i = 0;
    while i < list.len() {
        if !advance(space, &mut list[i], rules, now_ms, &mut written) {
            list.swap_remove(i);
        } else if list[i].cursor.blocked() == move_blocked {
            other.push(list.swap_remove(i));
        } else {
            i += 1;
        }
    }
    written
}

/// Brings one listener up to the head of the ring, as far as its socket
/// takes without waiting. False when it leaves (its guard says why).
fn advance(
    space: &Audience,
    l: &mut Listener,
    rules: Rules,
    now_ms: u64,
    written: &mut u64,
) -> bool {
    // the header pages (a lock) only for a listener that has not started
    let headers = if l.cursor.started() {
        None
    } else {
        space.headers()
    };
    let filled = {
        let ring = space.ring();
        l.cursor
            .fill(&ring, headers.as_ref(), rules.burst_samples, &mut l.pending)
    };
    if filled.is_err() {
        return l.leave(Leave::Lagged);
    }
    let wrote = match write_pending(&l.sock, &mut l.pending) {
        Ok(n) => n,
        Err(_) => return l.leave(Leave::ClientClosed),
    };
    *written += wrote;
    match l
        .cursor
        .wrote(now_ms, wrote > 0, l.pending.is_empty(), rules.slow_after_ms)
    {
        Verdict::Keep => true,
        Verdict::Done => {
            let _ = l.sock.shutdown(std::net::Shutdown::Write);
            l.leave(Leave::Ended)
        }
        Verdict::Slow => l.leave(Leave::Slow),
    }
}

/// Writes as much as the socket takes now; what is left stays pending.
fn write_pending(sock: &TcpStream, bufs: &mut Vec<Bytes>) -> io::Result<u64> {
    let sock = socket2::SockRef::from(sock);
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
        // send(2)/sendmsg(2), not writev(2): a socket needs none of the
        // file layer writev goes through (measured: ~3% of a join storm)
        let n = match if count == 1 {
            sock.send(&slices[0])
        } else {
            sock.send_vectored(&slices[..count])
        } {
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
fn probe_client(l: &mut Listener) -> Option<Leave> {
    let mut buf = [0u8; 1024];
    match (&l.sock).read(&mut buf) {
        Ok(0) => Some(Leave::ClientClosed),
        Ok(n) => {
            l.stray += n;
            (l.stray > MAX_STRAY).then_some(Leave::ClientClosed)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(_) => Some(Leave::ClientClosed),
    }
}
