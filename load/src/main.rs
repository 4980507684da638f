//! `tribune-load`: opens real listener connections to an Ogg/Opus-over-HTTP
//! URL (Tribune's `live.opus` or an Icecast mount), validates every byte,
//! models a player per listener, and reports what listeners experienced.
//! Bounded in count and time: it always stops by itself.

mod check;
mod client;
mod hls;
mod source;
mod storm;

use clap::{Parser, Subcommand};
use client::{Failure, Target};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "tribune-load",
    version,
    about = "Load generator and stream validator for live Ogg/Opus over HTTP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open listeners on a live stream and report what they experienced.
    Listen(ListenArgs),
    /// A join storm of legitimate listeners mixed with attack traffic.
    Storm(storm::StormArgs),
    /// Publish a timestamped Opus program in real time (Icecast PUT or stdout).
    Source(source::SourceArgs),
    /// HLS listeners that follow the playlists (LL-HLS, or plain with
    /// --plain), validate every fMP4 box and report stalls and latency.
    Hls(hls::HlsArgs),
}

#[derive(clap::Args, Clone)]
struct ListenArgs {
    /// Stream URL, e.g. http://127.0.0.1:8080/spaces/ID/live.opus
    url: String,
    /// Listeners to open.
    #[arg(long, default_value_t = 10)]
    listeners: usize,
    /// New connections per second during the ramp.
    #[arg(long, default_value_t = 500.0)]
    ramp: f64,
    /// Seconds each listener stays connected (from its join).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Local source addresses to spread connections over (comma separated),
    /// e.g. 127.0.0.2,127.0.0.3 to pass one address's ephemeral ports.
    #[arg(long, value_delimiter = ',')]
    bind: Vec<IpAddr>,
    /// Seconds to wait for a connection to be answered.
    #[arg(long, default_value_t = 10.0)]
    answer_timeout: f64,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Worker processes to spread listeners over (each holds at most
    /// ~19,000 sockets under a 20,000 open-file limit).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Join as Tribune's web page does: ask the space's admission call for
    /// a pass first (waiting in its line if the node is full), then open
    /// the stream with it. A pass lets a crowd behind one address in.
    #[arg(long)]
    pass: bool,
    /// Other nodes carrying the same space (base URLs, comma separated): a
    /// listener whose node drops it reconnects to the next one and resumes
    /// where it was (`?from=SEQ`), as the listener page does.
    #[arg(long, value_delimiter = ',')]
    failover: Vec<String>,
    /// Audio the modelled player holds before it starts, and again after
    /// a stall (ms).
    #[arg(long, default_value_t = 1000.0)]
    player_buffer_ms: f64,
    /// Include mergeable histograms in the JSON (used between workers).
    #[arg(long, hide = true)]
    emit_histograms: bool,
}

#[derive(Default)]
struct Outcome {
    status: Option<u16>,
    unanswered: bool,
    connect_error: Option<String>,
    ttfa_ms: Option<f64>,
    fault: Option<check::Fault>,
    stalls: u32,
    stall_ms: f64,
    bytes: u64,
    audio_ms: f64,
    ended_by: &'static str,
    latencies: Vec<f64>,
    /// Wall clock (ms since the Unix epoch) when a 200 answer arrived.
    admitted_at_ms: Option<u64>,
    /// Reconnections to another node after a drop, and how long each took.
    failovers: u32,
    reconnect_ms: Vec<f64>,
    /// Failovers that did not resume at the seq it needed.
    seq_gaps: u32,
}

impl Outcome {
    fn passed(&self) -> bool {
        self.status == Some(200)
            && self.fault.is_none()
            && self.stalls == 0
            && self.ttfa_ms.is_some()
    }
}

/// The page's way in: `GET /api/spaces/{id}/admission` until it hands out
/// a pass (honouring the waiting room's Retry-After and ticket); the
/// stream's path with the pass.
async fn admission_pass(
    target: &Target,
    bind: Option<IpAddr>,
    answer_by: Instant,
) -> Result<String, Failure> {
    let (space, _) = target
        .path
        .strip_prefix("/spaces/")
        .and_then(|rest| rest.split_once('/'))
        .ok_or(Failure::BadResponse)?;
    let mut ticket: Option<String> = None;
    loop {
        let mut path = format!("/api/spaces/{space}/admission");
        if let Some(t) = &ticket {
            path.push_str(&format!("?ticket={t}"));
        }
        let ans = client::get(target, &path, bind, None, answer_by).await?;
        let status = ans.status();
        let body: Value =
            serde_json::from_slice(&ans.small_body(answer_by).await).unwrap_or(Value::Null);
        if status == 200 {
            let live = body["live"].as_str().ok_or(Failure::BadResponse)?;
            let at = live.find("/spaces/").ok_or(Failure::BadResponse)?;
            return Ok(live[at..].to_string());
        }
        let retry = body["retry_after"].as_f64().unwrap_or(1.0);
        ticket = body["waiting_room"]["ticket"].as_str().map(str::to_string);
        if !(status == 503 || status == 429) {
            return Err(Failure::BadResponse);
        }
        let next = Instant::now() + Duration::from_secs_f64(retry);
        if next >= answer_by {
            return Err(Failure::Unanswered);
        }
        tokio::time::sleep_until(next.into()).await;
    }
}

async fn one_listener(
    target: Arc<Target>,
    bind: Option<IpAddr>,
    args: Arc<ListenArgs>,
    epoch: Instant,
) -> Outcome {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let answer_by = start + Duration::from_secs_f64(args.answer_timeout);
    let mut out = Outcome {
        ended_by: "deadline",
        ..Default::default()
    };
    let path = if args.pass {
        match admission_pass(&target, bind, answer_by).await {
            Ok(path) => path,
            Err(Failure::Unanswered) => {
                out.unanswered = true;
                return out;
            }
            Err(f) => {
                out.connect_error = Some(format!("admission: {f:?}"));
                return out;
            }
        }
    } else {
        target.path.clone()
    };
    let ans = match client::get(&target, &path, bind, None, answer_by).await {
        Ok(a) => a,
        Err(Failure::Unanswered) => {
            out.unanswered = true;
            return out;
        }
        Err(f) => {
            out.connect_error = Some(format!("{f:?}"));
            return out;
        }
    };
    out.status = Some(ans.status());
    if ans.status() != 200 {
        return out;
    }
    out.admitted_at_ms = Some(unix_ms());
    let mut l = client::Listened::default();
    let mut stream = check::StreamCheck::with_player_buffer(args.player_buffer_ms);
    stream.reconnected(seq_of(&ans));
    let mut ended = client::stream_body(ans, &mut stream, deadline, epoch, &mut l).await;
    // a node that drops the listener: the next one takes it where it was
    let mut nodes = args.failover.iter().cycle();
    while !args.failover.is_empty()
        && matches!(l.ended_by, "server_closed" | "reset")
        && Instant::now() < deadline
        && stream.fault.is_none()
    {
        let dropped = Instant::now();
        let Some(ans) = reconnect(&target, &mut nodes, &stream, bind, deadline).await else {
            break;
        };
        out.failovers += 1;
        out.reconnect_ms
            .push(dropped.elapsed().as_secs_f64() * 1000.0);
        if stream.reconnected(seq_of(&ans)).is_some() {
            out.seq_gaps += 1;
        }
        ended = client::stream_body(ans, &mut stream, deadline, epoch, &mut l).await;
    }
    client::close(&mut stream, start, deadline, epoch, ended, &mut l);
    out.ttfa_ms = l.ttfa_ms;
    out.fault = l.fault;
    out.stalls = l.stalls;
    out.stall_ms = l.stall_ms;
    out.bytes = l.bytes;
    out.audio_ms = l.audio_ms;
    out.ended_by = l.ended_by;
    out.latencies = l.latencies;
    out
}

/// The first packet's seq a node announced for its stream.
fn seq_of(ans: &client::Answer) -> Option<u64> {
    ans.head.header("x-tribune-seq")?.trim().parse().ok()
}

/// Tries the failover nodes in turn, from the packet the listener needs
/// next, until one answers 200 or the listener's time is up.
async fn reconnect(
    target: &Target,
    nodes: &mut impl Iterator<Item = &String>,
    stream: &check::StreamCheck,
    bind: Option<IpAddr>,
    deadline: Instant,
) -> Option<client::Answer> {
    let path = target
        .path
        .split('?')
        .next()
        .unwrap_or(&target.path)
        .to_string();
    let query = stream
        .next_packet
        .map(|seq| format!("?from={seq}"))
        .unwrap_or_default();
    while Instant::now() < deadline {
        let base = nodes.next()?;
        let Ok(node) = client::parse_url(&format!("{}{path}", base.trim_end_matches('/'))) else {
            continue;
        };
        let by = (Instant::now() + Duration::from_secs(2)).min(deadline);
        if let Ok(ans) = client::get(&node, &format!("{path}{query}"), bind, None, by).await {
            if ans.status() == 200 {
                return Some(ans);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

pub(crate) fn cpu_seconds() -> f64 {
    // utime + stime of this process, from /proc (clock ticks of 100 Hz)
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(0.0)
}

pub(crate) fn pct(h: &Histogram<u64>, q: f64) -> Value {
    if h.is_empty() {
        json!(null)
    } else {
        json!(h.value_at_quantile(q))
    }
}

fn new_hist() -> Histogram<u64> {
    Histogram::<u64>::new(3).expect("3 significant figures is valid")
}

pub(crate) fn hist_to_b64(h: &Histogram<u64>) -> String {
    use base64::Engine;
    let mut buf = Vec::new();
    use hdrhistogram::serialization::Serializer;
    let _ = hdrhistogram::serialization::V2Serializer::new().serialize(h, &mut buf);
    base64::engine::general_purpose::STANDARD.encode(buf)
}

pub(crate) fn hist_from_b64(text: &str) -> Result<Histogram<u64>, String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| e.to_string())?;
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut &raw[..])
        .map_err(|e| format!("{e:?}"))
}

/// What a run (or a worker's share of it) measured; mergeable.
struct Totals {
    listeners: u64,
    passed: u64,
    statuses: BTreeMap<String, u64>,
    unanswered: u64,
    connect_errors: u64,
    faults: BTreeMap<String, u64>,
    ended: BTreeMap<String, u64>,
    stalls: u64,
    stall_ms: f64,
    bytes: u64,
    cpu: f64,
    elapsed: f64,
    ttfa: Histogram<u64>,
    latency: Histogram<u64>,
    /// 200 answers per 100 ms of wall clock: the rate the server admitted
    /// at, mergeable across worker processes (they share the clock).
    admitted: BTreeMap<u64, u64>,
    failovers: u64,
    seq_gaps: u64,
    reconnect: Histogram<u64>,
}

/// Width of one admission-rate bucket.
const ADMIT_BUCKET_MS: u64 = 100;

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Totals {
    /// The most 200 answers in any one second, and the time from the first
    /// to the last.
    fn admission_rate(&self) -> (u64, f64) {
        let per_second = (1000 / ADMIT_BUCKET_MS) as usize;
        let (Some(first), Some(last)) = (
            self.admitted.keys().next().copied(),
            self.admitted.keys().last().copied(),
        ) else {
            return (0, 0.0);
        };
        let counts: Vec<u64> = (first..=last)
            .map(|b| self.admitted.get(&b).copied().unwrap_or(0))
            .collect();
        let peak = counts
            .windows(per_second.min(counts.len()))
            .map(|w| w.iter().sum::<u64>())
            .max()
            .unwrap_or(0);
        let span = ((last - first + 1) * ADMIT_BUCKET_MS) as f64 / 1000.0;
        (peak, span)
    }

    fn from_outcomes(outcomes: &[Outcome], cpu: f64, elapsed: f64) -> Totals {
        let mut t = Totals {
            listeners: outcomes.len() as u64,
            passed: 0,
            statuses: BTreeMap::new(),
            unanswered: 0,
            connect_errors: 0,
            faults: BTreeMap::new(),
            ended: BTreeMap::new(),
            stalls: 0,
            stall_ms: 0.0,
            bytes: 0,
            cpu,
            elapsed,
            ttfa: new_hist(),
            latency: new_hist(),
            admitted: BTreeMap::new(),
            failovers: 0,
            seq_gaps: 0,
            reconnect: new_hist(),
        };
        for o in outcomes {
            t.failovers += u64::from(o.failovers);
            t.seq_gaps += u64::from(o.seq_gaps);
            for ms in &o.reconnect_ms {
                let _ = t.reconnect.record(ms.max(0.0) as u64);
            }
            if let Some(at) = o.admitted_at_ms {
                *t.admitted.entry(at / ADMIT_BUCKET_MS).or_default() += 1;
            }
            t.passed += u64::from(o.passed());
            t.unanswered += u64::from(o.unanswered);
            t.connect_errors += u64::from(o.connect_error.is_some());
            if let Some(s) = o.status {
                *t.statuses.entry(s.to_string()).or_default() += 1;
                if s == 200 {
                    *t.ended.entry(o.ended_by.to_string()).or_default() += 1;
                }
            }
            if let Some(f) = &o.fault {
                *t.faults.entry(f.kind().to_string()).or_default() += 1;
            }
            if let Some(v) = o.ttfa_ms {
                let _ = t.ttfa.record(v.max(0.0) as u64);
            }
            for l in &o.latencies {
                let _ = t.latency.record(l.max(0.0) as u64);
            }
            t.stalls += u64::from(o.stalls);
            t.stall_ms += o.stall_ms;
            t.bytes += o.bytes;
        }
        t
    }

    fn to_json(&self, url: &str, with_histograms: bool) -> Value {
        let mut v = json!({
            "url": url,
            "listeners": self.listeners,
            "passed": self.passed,
            "failed": self.listeners - self.passed,
            "statuses": self.statuses,
            "unanswered": self.unanswered,
            "connect_errors": self.connect_errors,
            "validation_faults": self.faults,
            "ended_by": self.ended,
            "stalls": self.stalls,
            "stall_seconds": self.stall_ms / 1000.0,
            "time_to_first_audio_ms": {"p50": pct(&self.ttfa, 0.5), "p99": pct(&self.ttfa, 0.99), "max": pct(&self.ttfa, 1.0)},
            "latency_ms": {"p50": pct(&self.latency, 0.5), "p99": pct(&self.latency, 0.99), "max": pct(&self.latency, 1.0), "samples": self.latency.len()},
            "admission": {
                "peak_joins_per_second": self.admission_rate().0,
                "first_to_last_admitted_seconds": self.admission_rate().1,
            },
            "failover": {
                "reconnections": self.failovers,
                "resumed_with_a_seq_gap": self.seq_gaps,
                "reconnect_ms": {"p50": pct(&self.reconnect, 0.5), "p99": pct(&self.reconnect, 0.99), "max": pct(&self.reconnect, 1.0)},
            },
            "bytes": self.bytes,
            "elapsed_seconds": self.elapsed,
            "load_cpu_seconds": self.cpu,
        });
        if with_histograms {
            v["histograms"] = json!({
                "ttfa": hist_to_b64(&self.ttfa),
                "latency": hist_to_b64(&self.latency),
                "reconnect": hist_to_b64(&self.reconnect),
                "admitted": self.admitted.iter().map(|(b, n)| (b.to_string(), *n)).collect::<BTreeMap<_, _>>(),
            });
        }
        v
    }

    fn from_json(v: &Value) -> Result<Totals, String> {
        let map = |k: &str| -> BTreeMap<String, u64> {
            v[k].as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default()
        };
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        Ok(Totals {
            listeners: n("listeners"),
            passed: n("passed"),
            statuses: map("statuses"),
            unanswered: n("unanswered"),
            connect_errors: n("connect_errors"),
            faults: map("validation_faults"),
            ended: map("ended_by"),
            stalls: n("stalls"),
            stall_ms: v["stall_seconds"].as_f64().unwrap_or(0.0) * 1000.0,
            bytes: n("bytes"),
            cpu: v["load_cpu_seconds"].as_f64().unwrap_or(0.0),
            elapsed: v["elapsed_seconds"].as_f64().unwrap_or(0.0),
            ttfa: hist_from_b64(
                v["histograms"]["ttfa"]
                    .as_str()
                    .ok_or("worker report without histograms")?,
            )?,
            latency: hist_from_b64(
                v["histograms"]["latency"]
                    .as_str()
                    .ok_or("worker report without histograms")?,
            )?,
            admitted: v["histograms"]["admitted"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(b, n)| Some((b.parse().ok()?, n.as_u64()?)))
                        .collect()
                })
                .unwrap_or_default(),
            failovers: v["failover"]["reconnections"].as_u64().unwrap_or(0),
            seq_gaps: v["failover"]["resumed_with_a_seq_gap"]
                .as_u64()
                .unwrap_or(0),
            reconnect: match v["histograms"]["reconnect"].as_str() {
                Some(h) => hist_from_b64(h)?,
                None => new_hist(),
            },
        })
    }

    fn merge(&mut self, o: Totals) {
        let add = |a: &mut BTreeMap<String, u64>, b: BTreeMap<String, u64>| {
            for (k, n) in b {
                *a.entry(k).or_default() += n;
            }
        };
        self.listeners += o.listeners;
        self.passed += o.passed;
        add(&mut self.statuses, o.statuses);
        self.unanswered += o.unanswered;
        self.connect_errors += o.connect_errors;
        add(&mut self.faults, o.faults);
        add(&mut self.ended, o.ended);
        self.stalls += o.stalls;
        self.stall_ms += o.stall_ms;
        self.bytes += o.bytes;
        self.cpu += o.cpu;
        self.elapsed = self.elapsed.max(o.elapsed);
        let _ = self.ttfa.add(&o.ttfa);
        let _ = self.latency.add(&o.latency);
        for (b, n) in o.admitted {
            *self.admitted.entry(b).or_default() += n;
        }
        self.failovers += o.failovers;
        self.seq_gaps += o.seq_gaps;
        let _ = self.reconnect.add(&o.reconnect);
    }

    fn print(&self, url: &str, workers: usize) {
        let r = self.to_json(url, false);
        println!(
            "tribune-load: {} listeners on {url} ({workers} worker process(es))",
            self.listeners
        );
        println!(
            "  answered: {:?}  unanswered: {}  connect errors: {}",
            self.statuses, self.unanswered, self.connect_errors
        );
        let (peak, span) = self.admission_rate();
        let total: u64 = self.admitted.values().sum();
        println!(
            "  admitted: {total} in {span:.1} s (first to last 200, 100 ms buckets) = {:.0} joins/s; peak {peak} in any 1 s",
            total as f64 / span.max(0.1)
        );
        println!(
            "  time to first audio ms: p50 {} p99 {} max {}",
            r["time_to_first_audio_ms"]["p50"],
            r["time_to_first_audio_ms"]["p99"],
            r["time_to_first_audio_ms"]["max"]
        );
        println!(
            "  ingest-to-listener latency ms: p50 {} p99 {} max {} ({} pages)",
            r["latency_ms"]["p50"],
            r["latency_ms"]["p99"],
            r["latency_ms"]["max"],
            self.latency.len()
        );
        println!(
            "  stalls: {} ({:.1} s)  validation faults: {:?}  ended by: {:?}",
            self.stalls,
            self.stall_ms / 1000.0,
            self.faults,
            self.ended
        );
        if self.failovers > 0 {
            println!(
                "  failovers: {} reconnections (p50 {} ms, max {} ms), {} resumed with a seq gap",
                self.failovers,
                r["failover"]["reconnect_ms"]["p50"],
                r["failover"]["reconnect_ms"]["max"],
                self.seq_gaps
            );
        }
        println!(
            "  bytes: {}  elapsed: {:.1} s  load generator CPU: {:.2} s",
            self.bytes, self.elapsed, self.cpu
        );
    }
}

/// Runs `workers` copies of this program, each with its share of the
/// listeners and source addresses (one process holds at most ~19,000
/// sockets here), and merges their reports.
fn run_workers(args: &ListenArgs) -> Result<Totals, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("tribune-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let k = args.workers;
    let mut children = Vec::new();
    for i in 0..k {
        let n = args.listeners / k + usize::from(i < args.listeners % k);
        let binds: Vec<String> = args
            .bind
            .iter()
            .skip(i % args.bind.len().max(1))
            .step_by(k.min(args.bind.len()).max(1))
            .map(|ip| ip.to_string())
            .collect();
        let json = dir.join(format!("worker-{i}.json"));
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["listen", &args.url, "--listeners", &n.to_string()])
            .args([
                "--ramp",
                &(args.ramp / k as f64).to_string(),
                "--duration",
                &args.duration.to_string(),
            ])
            .args([
                "--answer-timeout",
                &args.answer_timeout.to_string(),
                "--emit-histograms",
            ])
            .arg("--json")
            .arg(&json)
            .stdout(std::process::Stdio::null());
        if !binds.is_empty() {
            cmd.arg("--bind").arg(binds.join(","));
        }
        if args.pass {
            cmd.arg("--pass");
        }
        if !args.failover.is_empty() {
            cmd.arg("--failover").arg(args.failover.join(","));
        }
        cmd.arg("--player-buffer-ms")
            .arg(args.player_buffer_ms.to_string());
        children.push((
            cmd.spawn()
                .map_err(|e| format!("cannot start worker: {e}"))?,
            json,
        ));
    }
    collect_workers(children, &dir, Totals::from_json, Totals::merge)
}

/// Waits for worker processes, reads each one's JSON report, merges them,
/// and removes their folder (`listen` and `hls` both run workers this way).
pub(crate) fn collect_workers<T>(
    children: Vec<(std::process::Child, std::path::PathBuf)>,
    dir: &std::path::Path,
    parse: impl Fn(&Value) -> Result<T, String>,
    merge: impl Fn(&mut T, T),
) -> Result<T, String> {
    let mut total: Option<T> = None;
    for (mut child, json) in children {
        let _ = child.wait();
        let text = std::fs::read_to_string(&json)
            .map_err(|e| format!("worker report {}: {e}", json.display()));
        let t = text.and_then(|text| {
            let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            parse(&v)
        });
        let t = match t {
            Ok(t) => t,
            Err(e) => {
                let _ = std::fs::remove_dir_all(dir);
                return Err(e);
            }
        };
        match &mut total {
            None => total = Some(t),
            Some(acc) => merge(acc, t),
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    total.ok_or_else(|| "no workers ran".to_string())
}

async fn listen(args: ListenArgs) -> Result<bool, String> {
    let target = Arc::new(client::parse_url(&args.url)?);
    if args.listeners == 0 || args.duration <= 0.0 || args.ramp <= 0.0 || args.workers == 0 {
        return Err("listeners, duration, ramp and workers must be positive".into());
    }
    let totals = if args.workers > 1 {
        let a = args.clone();
        tokio::task::spawn_blocking(move || run_workers(&a))
            .await
            .map_err(|e| e.to_string())??
    } else {
        let args = Arc::new(args.clone());
        let epoch = Instant::now();
        let outcomes = Arc::new(Mutex::new(Vec::with_capacity(args.listeners)));
        let mut tasks = tokio::task::JoinSet::new();
        let cpu0 = cpu_seconds();
        for i in 0..args.listeners {
            let due = epoch + Duration::from_secs_f64(i as f64 / args.ramp);
            tokio::time::sleep_until(due.into()).await;
            let bind = (!args.bind.is_empty()).then(|| args.bind[i % args.bind.len()]);
            let (target, a, outcomes) = (target.clone(), args.clone(), outcomes.clone());
            tasks.spawn(async move {
                let o = one_listener(target, bind, a, epoch).await;
                outcomes.lock().unwrap_or_else(|e| e.into_inner()).push(o);
            });
        }
        while tasks.join_next().await.is_some() {}
        let outcomes = std::mem::take(&mut *outcomes.lock().unwrap_or_else(|e| e.into_inner()));
        Totals::from_outcomes(
            &outcomes,
            cpu_seconds() - cpu0,
            epoch.elapsed().as_secs_f64(),
        )
    };
    totals.print(&args.url, args.workers);
    if let Some(path) = &args.json {
        let report = totals.to_json(&args.url, args.emit_histograms);
        std::fs::write(
            path,
            serde_json::to_string_pretty(&report).unwrap_or_default(),
        )
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    println!(
        "{} passed, {} failed",
        totals.passed,
        totals.listeners - totals.passed
    );
    Ok(totals.faults.is_empty())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tribune-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Listen(args) => runtime.block_on(listen(args)),
        Command::Storm(args) => runtime.block_on(storm::storm(args)),
        Command::Source(args) => runtime.block_on(source::source(args)),
        Command::Hls(args) => runtime.block_on(hls::hls(args)),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("tribune-load: {e}");
            ExitCode::FAILURE
        }
    }
}
