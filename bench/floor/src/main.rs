//! The floor: reads an Ogg Opus stream on stdin and writes the same pages
//! to every connected socket once per flush, with one non-blocking write
//! per socket and nothing else (no admission, no validation, no framework).
//! Whatever Tribune costs above this is Tribune's own overhead.
//!
//! Usage: ffmpeg ... -f ogg - | tribune-floor ADDR FLUSH_MS [THREADS]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tribune_media::ogg_page::{scan_page, ScanError};

struct Shared {
    /// Header pages (OpusHead, OpusTags) sent to every new socket.
    headers: Vec<u8>,
    /// Recently flushed pages, for the ~1 s burst.
    recent: Vec<Vec<u8>>,
    /// Pages since the last flush.
    pending: Vec<Vec<u8>>,
    /// Recent flushes (bytes) and the number of the newest; a writer that
    /// fell behind writes every flush it missed, so no page is skipped.
    flushes: std::collections::VecDeque<Arc<Vec<u8>>>,
    flush_no: u64,
    /// New sockets per worker, with the flush their burst reached.
    inbox: Vec<Vec<(TcpStream, u64)>>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .get(1)
        .map_or("127.0.0.1:18390", String::as_str)
        .to_string();
    let flush_ms: u64 = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(200);
    let threads: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(2);
    let shared = Arc::new((
        Mutex::new(Shared {
            headers: Vec::new(),
            recent: Vec::new(),
            pending: Vec::new(),
            flushes: std::collections::VecDeque::new(),
            flush_no: 0,
            inbox: (0..threads).map(|_| Vec::new()).collect(),
        }),
        Condvar::new(),
    ));
    // stdin: split into pages
    let s = shared.clone();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let mut pages_seen = 0;
        loop {
            let n = match stdin.read(&mut chunk) {
                Ok(0) | Err(_) => std::process::exit(0),
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            loop {
                let len = match scan_page(&buf) {
                    Ok(p) => p.len,
                    Err(ScanError::Incomplete) => break,
                    Err(e) => panic!("bad input: {e:?}"),
                };
                let page: Vec<u8> = buf.drain(..len).collect();
                let mut g = s.0.lock().unwrap();
                if pages_seen < 2 {
                    g.headers.extend_from_slice(&page);
                } else {
                    g.pending.push(page);
                }
                pages_seen += 1;
            }
        }
    });
    // flush clock
    let s = shared.clone();
    std::thread::spawn(move || {
        let mut next = Instant::now();
        loop {
            next += Duration::from_millis(flush_ms);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            let mut g = s.0.lock().unwrap();
            if !g.pending.is_empty() {
                let pages = std::mem::take(&mut g.pending);
                g.flushes.push_back(Arc::new(pages.concat()));
                if g.flushes.len() > 50 {
                    g.flushes.pop_front();
                }
                g.flush_no += 1;
                g.recent.extend(pages);
                let excess = g.recent.len().saturating_sub(50);
                g.recent.drain(..excess);
                s.1.notify_all();
            }
        }
    });
    // writers: each owns its sockets and writes every flush to each once
    for w in 0..threads {
        let s = shared.clone();
        std::thread::spawn(move || {
            let mut socks: Vec<TcpStream> = Vec::new();
            let mut seen = 0;
            loop {
                let (flush, newcomers) = {
                    let mut g = s.0.lock().unwrap();
                    while g.flush_no == seen {
                        g = s.1.wait(g).unwrap();
                    }
                    let missed = ((g.flush_no - seen) as usize).min(g.flushes.len());
                    let start = g.flushes.len() - missed;
                    let flush = if missed == 1 {
                        g.flushes[start].clone()
                    } else {
                        Arc::new(
                            g.flushes
                                .range(start..)
                                .flat_map(|f| f.iter().copied())
                                .collect(),
                        )
                    };
                    seen = g.flush_no;
                    (flush, std::mem::take(&mut g.inbox[w]))
                };
                // a newcomer whose burst already holds this flush waits for the next
                let (now, later): (Vec<_>, Vec<_>) =
                    newcomers.into_iter().partition(|(_, f)| *f < seen);
                // a socket that cannot take a whole flush at once is dropped:
                // the floor keeps no backlog
                socks.extend(now.into_iter().map(|(sock, _)| sock));
                socks.retain_mut(|sock| matches!(sock.write(&flush), Ok(n) if n == flush.len()));
                s.0.lock().unwrap().inbox[w].extend(later);
            }
        });
    }
    let listener = TcpListener::bind(&addr).expect("bind");
    println!("floor listening on http://{addr}");
    let mut next_worker = 0;
    for sock in listener.incoming() {
        let Ok(mut sock) = sock else { continue };
        let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
        let mut req = [0u8; 2048];
        if !matches!(sock.read(&mut req), Ok(n) if n > 0) {
            continue;
        }
        // burst and hand-over under one lock, so no flush falls between them
        let mut g = shared.0.lock().unwrap();
        let mut first = b"HTTP/1.0 200 OK\r\nContent-Type: audio/ogg\r\n\r\n".to_vec();
        first.extend_from_slice(&g.headers);
        for p in &g.recent {
            first.extend_from_slice(p); // ~1 s of 20 ms pages
        }
        if sock.write_all(&first).is_err() || sock.set_nonblocking(true).is_err() {
            continue;
        }
        let flush_no = g.flush_no;
        g.inbox[next_worker].push((sock, flush_no));
        drop(g);
        next_worker = (next_worker + 1) % threads;
    }
}
