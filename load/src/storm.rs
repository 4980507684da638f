//! `tribune-load storm`: a join storm of legitimate listeners mixed with
//! every attack class at once, each reported separately. Legitimate
//! listeners behave like good clients: they honour Retry-After, keep their
//! waiting-room ticket, and once admitted are checked byte by byte.

use crate::client::{self, Failure, Target};
use hdrhistogram::Histogram;
use rand::Rng;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(clap::Args, Clone)]
pub struct StormArgs {
    /// Live stream URL on the node under test.
    pub url: String,
    /// Legitimate listeners, arriving evenly over --arrive-secs.
    #[arg(long, default_value_t = 1000)]
    pub legit: usize,
    #[arg(long, default_value_t = 10.0)]
    pub arrive_secs: f64,
    /// Seconds an admitted legitimate listener stays and is checked.
    #[arg(long, default_value_t = 20.0)]
    pub hold: f64,
    /// Hard bound on the whole run, in seconds.
    #[arg(long, default_value_t = 45.0)]
    pub duration: f64,
    /// Loopback addresses legitimate listeners come from (127.1.x.y).
    #[arg(long, default_value_t = 1000)]
    pub legit_ips: usize,
    /// Loopback addresses attackers come from (127.66.x.y).
    #[arg(long, default_value_t = 8)]
    pub attack_ips: usize,
    /// Requests with forged waiting-room tickets.
    #[arg(long, default_value_t = 0)]
    pub forged: usize,
    /// Connections that send a request head one line per second, forever.
    #[arg(long, default_value_t = 0)]
    pub slowloris: usize,
    /// Connections that send random bytes instead of HTTP.
    #[arg(long, default_value_t = 0)]
    pub garbage: usize,
    /// Connections opened and closed at once.
    #[arg(long, default_value_t = 0)]
    pub churn: usize,
    /// Listeners that never read what they are sent.
    #[arg(long, default_value_t = 0)]
    pub slow_readers: usize,
    /// Clients that retry at once, ignoring Retry-After, until the end.
    #[arg(long, default_value_t = 0)]
    pub retry_storm: usize,
    /// Seconds to wait for any answer before counting it unanswered.
    #[arg(long, default_value_t = 10.0)]
    pub answer_timeout: f64,
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

fn legit_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8))
}

/// Each attack class has its own block (127.66.0.0, 127.67.0.0, ...), so
/// one class's rate limits do not hide another's behaviour.
fn attack_ip(block: u8, i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        66 + block,
        (i / 250) as u8,
        (i % 250 + 1) as u8,
    ))
}

#[derive(Default)]
struct Class {
    attempts: u64,
    statuses: BTreeMap<String, u64>,
    answer_ms: Vec<f64>,
    unanswered: u64,
    /// Legitimate listeners only.
    admitted: u64,
    never_admitted: u64,
    stalls: u64,
    /// Admitted listeners with a stall or a validation fault.
    failed: u64,
    faults: u64,
    wait_ms: Vec<f64>,
    /// Slow readers the server cut.
    cut: u64,
    /// How admitted legitimate listeners' streams ended.
    ended_by: BTreeMap<&'static str, u64>,
}

impl Class {
    fn answered(&mut self, status: impl ToString, ms: f64) {
        *self.statuses.entry(status.to_string()).or_default() += 1;
        self.answer_ms.push(ms);
    }

    fn report(&self) -> Value {
        let hist = |v: &[f64]| {
            let mut h = Histogram::<u64>::new(3).expect("histogram");
            for x in v {
                let _ = h.record((x * 1000.0).max(0.0) as u64);
            }
            if h.is_empty() {
                json!(null)
            } else {
                let q = |p| h.value_at_quantile(p) as f64 / 1000.0;
                json!({"p50": q(0.5), "p99": q(0.99), "max": h.max() as f64 / 1000.0})
            }
        };
        json!({
            "attempts": self.attempts,
            "statuses": self.statuses,
            "answer_ms": hist(&self.answer_ms),
            "unanswered": self.unanswered,
            "admitted": self.admitted,
            "never_admitted": self.never_admitted,
            "stalls": self.stalls,
            "validation_faults": self.faults,
            "wait_for_admission_ms": hist(&self.wait_ms),
            "slow_readers_cut": self.cut,
            "ended_by": self.ended_by,
        })
    }
}

type Stats = Arc<Mutex<BTreeMap<&'static str, Class>>>;

/// Legitimate listeners connected right now, and the most at once.
static CONCURRENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static PEAK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn with<R>(stats: &Stats, class: &'static str, f: impl FnOnce(&mut Class) -> R) -> R {
    let mut all = stats.lock().unwrap_or_else(|e| e.into_inner());
    f(all.entry(class).or_default())
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// A good client: waits as told, keeps its ticket, then listens.
async fn legit(
    target: Arc<Target>,
    ip: IpAddr,
    args: Arc<StormArgs>,
    end: Instant,
    epoch: Instant,
    stats: Stats,
) {
    let arrived = Instant::now();
    let mut ticket: Option<String> = None;
    with(&stats, "legit", |c| c.attempts += 1);
    while Instant::now() < end {
        let path = match &ticket {
            Some(t) => format!("{}?ticket={t}", target.path),
            None => target.path.clone(),
        };
        let asked = Instant::now();
        let answer_by = asked + Duration::from_secs_f64(args.answer_timeout);
        let ans = match client::get(&target, &path, Some(ip), None, answer_by).await {
            Ok(a) => a,
            Err(f) => {
                with(&stats, "legit", |c| match f {
                    Failure::Unanswered => c.unanswered += 1,
                    other => *c.statuses.entry(format!("{other:?}")).or_default() += 1,
                });
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let status = ans.status();
        with(&stats, "legit", |c| c.answered(status, ms_since(asked)));
        if status == 200 {
            let deadline = (Instant::now() + Duration::from_secs_f64(args.hold)).min(end);
            with(&stats, "legit", |c| c.wait_ms.push(ms_since(arrived)));
            use std::sync::atomic::Ordering::Relaxed;
            PEAK.fetch_max(CONCURRENT.fetch_add(1, Relaxed) + 1, Relaxed);
            let l = client::listen_stream(ans, Instant::now(), deadline, epoch).await;
            CONCURRENT.fetch_sub(1, Relaxed);
            with(&stats, "legit", |c| {
                c.admitted += 1;
                c.stalls += u64::from(l.stalls);
                c.faults += u64::from(l.fault.is_some());
                c.failed += u64::from(l.fault.is_some() || l.stalls > 0);
                *c.ended_by.entry(l.ended_by).or_default() += 1;
            });
            return;
        }
        let retry: f64 = ans
            .head
            .header("retry-after")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(2.0);
        let body = ans.small_body(answer_by).await;
        if let Ok(v) = serde_json::from_slice::<Value>(&body) {
            if let Some(t) = v["waiting_room"]["ticket"].as_str() {
                ticket = Some(t.to_string());
            }
        }
        if status != 503 && status != 429 {
            break;
        }
        tokio::time::sleep(Duration::from_secs_f64(retry)).await;
    }
    with(&stats, "legit", |c| c.never_admitted += 1);
}

async fn forged(target: Arc<Target>, ip: IpAddr, args: Arc<StormArgs>, stats: Stats) {
    let asked = Instant::now();
    let path = format!(
        "{}?ticket=eyJhbGciOiJIUzI1NiJ9.eyJzZXEiOjB9.Zm9yZ2Vk",
        target.path
    );
    let by = asked + Duration::from_secs_f64(args.answer_timeout);
    record_answer(
        &stats,
        "forged_ticket",
        client::get(&target, &path, Some(ip), None, by).await,
        asked,
    );
}

fn record_answer(
    stats: &Stats,
    class: &'static str,
    r: Result<client::Answer, Failure>,
    asked: Instant,
) {
    with(stats, class, |c| {
        c.attempts += 1;
        match r {
            Ok(a) => c.answered(a.status(), ms_since(asked)),
            Err(Failure::Unanswered) => c.unanswered += 1,
            Err(f) => c.answered(format!("{f:?}"), ms_since(asked)),
        }
    });
}

/// Reads until the server answers or closes; returns the status (if any).
async fn read_answer(sock: &mut tokio::net::TcpStream, by: Instant) -> Result<String, Failure> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match tribune_client::parse_head(&buf) {
            Ok(Some(head)) => return Ok(head.status.to_string()),
            Err(_) => return Ok("not_http".to_string()),
            Ok(None) => {}
        }
        match tokio::time::timeout_at(by.into(), sock.read(&mut chunk)).await {
            Err(_) => return Err(Failure::Unanswered),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok("closed".to_string()),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn slowloris(target: Arc<Target>, ip: IpAddr, end: Instant, stats: Stats) {
    let asked = Instant::now();
    with(&stats, "slowloris", |c| c.attempts += 1);
    let Ok(mut sock) = client::connect(target.addr, Some(ip), None).await else {
        return with(&stats, "slowloris", |c| {
            c.answered("connect_error", ms_since(asked))
        });
    };
    let _ = sock
        .write_all(format!("GET {} HTTP/1.1\r\nHost: x\r\n", target.path).as_bytes())
        .await;
    let drip = async {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if sock.write_all(b"X-Drip: 1\r\n").await.is_err() {
                break;
            }
        }
    };
    // the server's answer (or close) ends it; writes fail once it has closed
    let _ = tokio::time::timeout_at(end.into(), drip).await;
    let status = read_answer(&mut sock, Instant::now() + Duration::from_secs(1)).await;
    with(&stats, "slowloris", |c| match status {
        Ok(s) => c.answered(s, ms_since(asked)),
        Err(_) => c.unanswered += 1,
    });
}

async fn garbage(target: Arc<Target>, ip: IpAddr, args: Arc<StormArgs>, stats: Stats) {
    let asked = Instant::now();
    with(&stats, "garbage", |c| c.attempts += 1);
    let Ok(mut sock) = client::connect(target.addr, Some(ip), None).await else {
        return with(&stats, "garbage", |c| {
            c.answered("connect_error", ms_since(asked))
        });
    };
    let mut junk = vec![0u8; 256];
    rand::rng().fill(&mut junk[..]);
    junk.extend_from_slice(b"\r\n\r\n");
    let _ = sock.write_all(&junk).await;
    let status = read_answer(
        &mut sock,
        asked + Duration::from_secs_f64(args.answer_timeout),
    )
    .await;
    with(&stats, "garbage", |c| match status {
        Ok(s) => c.answered(s, ms_since(asked)),
        Err(_) => c.unanswered += 1,
    });
}

async fn churn(target: Arc<Target>, ip: IpAddr, stats: Stats) {
    let asked = Instant::now();
    let r = client::connect(target.addr, Some(ip), None).await;
    with(&stats, "churn", |c| {
        c.attempts += 1;
        c.answered(
            if r.is_ok() {
                "connected"
            } else {
                "connect_error"
            },
            ms_since(asked),
        );
    });
}

async fn slow_reader(
    target: Arc<Target>,
    ip: IpAddr,
    args: Arc<StormArgs>,
    end: Instant,
    stats: Stats,
) {
    let asked = Instant::now();
    let by = asked + Duration::from_secs_f64(args.answer_timeout);
    let r = client::get(&target, &target.path, Some(ip), Some(4096), by).await;
    let Ok(mut ans) = r else {
        return record_answer(&stats, "slow_reader", r, asked);
    };
    let status = ans.status();
    with(&stats, "slow_reader", |c| {
        c.attempts += 1;
        c.answered(status, ms_since(asked));
    });
    if status != 200 {
        return;
    }
    tokio::time::sleep_until(end.into()).await;
    // now drain: a cut connection ends (EOF or reset) once the buffer is read
    let mut sink = vec![0u8; 65536];
    let drained = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match ans.sock.read(&mut sink).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await;
    if drained.unwrap_or(false) {
        with(&stats, "slow_reader", |c| c.cut += 1);
    }
}

async fn retry_storm(
    target: Arc<Target>,
    ip: IpAddr,
    args: Arc<StormArgs>,
    end: Instant,
    stats: Stats,
) {
    while Instant::now() < end {
        let asked = Instant::now();
        let by = (asked + Duration::from_secs_f64(args.answer_timeout)).min(end);
        let r = client::get(&target, &target.path, Some(ip), None, by).await;
        if matches!(r, Err(Failure::Unanswered)) && Instant::now() >= end {
            break; // cut by the end of the run, not by the server
        }
        // never holds a slot: whatever the answer, it hangs up and asks again
        record_answer(&stats, "retry_storm", r, asked);
        tokio::task::yield_now().await;
    }
}

pub async fn storm(args: StormArgs) -> Result<bool, String> {
    let target = Arc::new(client::parse_url(&args.url)?);
    let args = Arc::new(args);
    let epoch = Instant::now();
    let end = epoch + Duration::from_secs_f64(args.duration);
    let stats: Stats = Arc::new(Mutex::new(BTreeMap::new()));
    let mut tasks = tokio::task::JoinSet::new();
    let n_ips = args.attack_ips.max(1);
    let attack = |block: u8, i: usize| attack_ip(block, i % n_ips);
    // retry storms run for the whole duration
    for i in 0..args.retry_storm {
        tasks.spawn(retry_storm(
            target.clone(),
            attack(0, i),
            args.clone(),
            end,
            stats.clone(),
        ));
    }
    // everything else arrives evenly over the arrival window, interleaved
    let mut arrivals: Vec<(f64, &'static str, usize)> = Vec::new();
    let spread = |n: usize, class: &'static str, out: &mut Vec<(f64, &'static str, usize)>| {
        for i in 0..n {
            out.push((args.arrive_secs * i as f64 / n.max(1) as f64, class, i));
        }
    };
    spread(args.legit, "legit", &mut arrivals);
    spread(args.forged, "forged", &mut arrivals);
    spread(args.slowloris, "slowloris", &mut arrivals);
    spread(args.garbage, "garbage", &mut arrivals);
    spread(args.churn, "churn", &mut arrivals);
    spread(args.slow_readers, "slow_reader", &mut arrivals);
    arrivals.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (at, class, i) in arrivals {
        tokio::time::sleep_until((epoch + Duration::from_secs_f64(at)).into()).await;
        let (t, a, s) = (target.clone(), args.clone(), stats.clone());
        match class {
            "legit" => tasks.spawn(legit(t, legit_ip(i % a.legit_ips.max(1)), a, end, epoch, s)),
            "forged" => tasks.spawn(forged(t, attack(1, i), a, s)),
            "slowloris" => tasks.spawn(slowloris(t, attack(2, i), end, s)),
            "garbage" => tasks.spawn(garbage(t, attack(3, i), a, s)),
            "churn" => tasks.spawn(churn(t, attack(4, i), s)),
            _ => tasks.spawn(slow_reader(t, attack(5, i), a, end, s)),
        };
    }
    while tasks.join_next().await.is_some() {}
    let all = std::mem::take(&mut *stats.lock().unwrap_or_else(|e| e.into_inner()));
    let report: BTreeMap<&str, Value> = all.iter().map(|(k, c)| (*k, c.report())).collect();
    let peak = PEAK.load(std::sync::atomic::Ordering::Relaxed);
    let report = json!({
        "url": args.url,
        "elapsed_seconds": epoch.elapsed().as_secs_f64(),
        "peak_concurrent_legit_listeners": peak,
        "classes": report,
    });
    println!("tribune-load storm on {}", args.url);
    for (class, c) in &all {
        println!(
            "  {class:<14} attempts {:>6}  statuses {:?}  answer ms {}  unanswered {}",
            c.attempts, c.statuses, report["classes"][class]["answer_ms"], c.unanswered
        );
    }
    let legit = all.get("legit");
    let (admitted, never, stalls, faults, failed) = legit.map_or((0, 0, 0, 0, 0), |c| {
        (c.admitted, c.never_admitted, c.stalls, c.faults, c.failed)
    });
    let ended = legit.map(|c| c.ended_by.clone()).unwrap_or_default();
    println!(
        "  legit: admitted {admitted} (at most {peak} at once), never admitted {never}, stalls among admitted {stalls}, faults {faults}, streams ended by {ended:?}"
    );
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&report).unwrap_or_default(),
        )
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    println!("{} passed, {failed} failed", admitted - failed);
    Ok(faults == 0)
}
