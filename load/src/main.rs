//! `tribune-load`: opens real listener connections to an Ogg/Opus-over-HTTP
//! URL (Tribune's `live.opus` or an Icecast mount), validates every byte,
//! models a player per listener, and reports what listeners experienced.
//! Bounded in count and time: it always stops by itself.

mod check;
mod client;
mod storm;

use clap::{Parser, Subcommand};
use client::{Failure, Target};
use hdrhistogram::Histogram;
use serde_json::json;
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
}

impl Outcome {
    fn passed(&self) -> bool {
        self.status == Some(200)
            && self.fault.is_none()
            && self.stalls == 0
            && self.ttfa_ms.is_some()
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
    let ans = match client::get(&target, &target.path, bind, None, answer_by).await {
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
    out.status = Some(ans.status);
    if ans.status != 200 {
        return out;
    }
    let l = client::listen_stream(ans, start, deadline, epoch).await;
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

fn cpu_seconds() -> f64 {
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

fn pct(h: &Histogram<u64>, q: f64) -> serde_json::Value {
    if h.is_empty() {
        json!(null)
    } else {
        json!(h.value_at_quantile(q))
    }
}

async fn listen(args: ListenArgs) -> Result<bool, String> {
    let target = Arc::new(client::parse_url(&args.url)?);
    if args.listeners == 0 || args.duration <= 0.0 || args.ramp <= 0.0 {
        return Err("listeners, duration and ramp must be positive".into());
    }
    let args = Arc::new(args);
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
    let elapsed = epoch.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap_or_else(|e| e.into_inner()));

    let mut ttfa = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    let mut latency = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut faults: BTreeMap<&str, u64> = BTreeMap::new();
    let mut ended: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut passed, mut stalls, mut stall_ms, mut bytes, mut unanswered, mut connect_errors) =
        (0u64, 0u64, 0.0, 0u64, 0u64, 0u64);
    for o in &outcomes {
        if o.passed() {
            passed += 1;
        }
        if o.unanswered {
            unanswered += 1;
        }
        if o.connect_error.is_some() {
            connect_errors += 1;
        }
        if let Some(s) = o.status {
            *statuses.entry(s.to_string()).or_default() += 1;
            if s == 200 {
                *ended.entry(o.ended_by).or_default() += 1;
            }
        }
        if let Some(f) = &o.fault {
            *faults.entry(f.kind()).or_default() += 1;
        }
        if let Some(t) = o.ttfa_ms {
            let _ = ttfa.record(t.max(0.0) as u64);
        }
        for l in &o.latencies {
            let _ = latency.record(l.max(0.0) as u64);
        }
        stalls += u64::from(o.stalls);
        stall_ms += o.stall_ms;
        bytes += o.bytes;
    }
    let failed = outcomes.len() as u64 - passed;
    let report = json!({
        "url": args.url,
        "listeners": outcomes.len(),
        "passed": passed,
        "failed": failed,
        "statuses": statuses,
        "unanswered": unanswered,
        "connect_errors": connect_errors,
        "validation_faults": faults,
        "ended_by": ended,
        "stalls": stalls,
        "stall_seconds": stall_ms / 1000.0,
        "time_to_first_audio_ms": {"p50": pct(&ttfa, 0.5), "p99": pct(&ttfa, 0.99), "max": pct(&ttfa, 1.0)},
        "latency_ms": {"p50": pct(&latency, 0.5), "p99": pct(&latency, 0.99), "max": pct(&latency, 1.0), "samples": latency.len()},
        "bytes": bytes,
        "elapsed_seconds": elapsed,
        "load_cpu_seconds": cpu,
    });
    println!("tribune-load: {} listeners on {}", outcomes.len(), args.url);
    println!(
        "  answered: {:?}  unanswered: {unanswered}  connect errors: {connect_errors}",
        statuses
    );
    println!(
        "  time to first audio ms: p50 {} p99 {} max {}",
        report["time_to_first_audio_ms"]["p50"],
        report["time_to_first_audio_ms"]["p99"],
        report["time_to_first_audio_ms"]["max"]
    );
    println!(
        "  ingest-to-listener latency ms: p50 {} p99 {} max {} ({} pages)",
        report["latency_ms"]["p50"],
        report["latency_ms"]["p99"],
        report["latency_ms"]["max"],
        latency.len()
    );
    println!(
        "  stalls: {stalls} ({:.1} s)  validation faults: {:?}  ended by: {:?}",
        stall_ms / 1000.0,
        faults,
        ended
    );
    println!("  bytes: {bytes}  elapsed: {elapsed:.1} s  load generator CPU: {cpu:.2} s");
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&report).unwrap_or_default(),
        )
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    println!("{passed} passed, {failed} failed");
    Ok(faults.is_empty())
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
