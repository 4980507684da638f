//! `tribune`: the live audio rooms server.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use tribune_core::token::{self, parse_ttl, Claims, Role};
use tribune_server::clock::wall_secs;
use tribune_server::config::Config;
use tribune_server::control::auth;

#[derive(Parser)]
#[command(
    name = "tribune",
    version,
    about = "Live audio rooms: a few speakers, any number of listeners, instant replay"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (control plane, ingest, listeners, recorder) in one process.
    Serve(Box<ServeArgs>),
    /// Print a signed access token.
    Token(TokenArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (use port 0 for any free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Data directory: database, signing secret, recordings.
    #[arg(long)]
    data: Option<PathBuf>,
    /// TOML file with any of the settings below (flags win).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listeners this node admits (over all spaces).
    #[arg(long)]
    max_listeners: Option<usize>,
    /// Listener flush cadence in ms (latency vs CPU).
    #[arg(long)]
    flush_ms: Option<u64>,
    /// Base URL used in printed links and API answers.
    #[arg(long)]
    public_url: Option<String>,
    /// Cut a source that sends nothing for this long (ms).
    #[arg(long)]
    source_stall_ms: Option<u64>,
    /// Cut a listener whose socket accepts nothing for this long (ms).
    #[arg(long)]
    slow_listener_ms: Option<u64>,
    /// Close connections that do not send a request head within this time (ms).
    #[arg(long)]
    header_timeout_ms: Option<u64>,
    /// Recording fsync cadence (ms).
    #[arg(long)]
    fsync_ms: Option<u64>,
    /// Open connections per client IP (0: unlimited).
    #[arg(long)]
    per_ip_connections: Option<u32>,
    /// Open connections per /24 or /64 (0: unlimited).
    #[arg(long)]
    per_subnet_connections: Option<u32>,
    /// Listener joins per second per IP (0: unlimited).
    #[arg(long)]
    joins_per_ip: Option<u32>,
    /// Joins one IP may make at once before the rate applies.
    #[arg(long)]
    join_burst: Option<u32>,
    /// Waiting-room admissions per second as capacity frees.
    #[arg(long)]
    admit_per_sec: Option<f64>,
    /// Stop admitting listeners above this resident memory (MiB).
    #[arg(long)]
    max_memory_mb: Option<u64>,
    /// Address reserved for hosts, speakers and sources (no listeners).
    #[arg(long)]
    reserved_listen: Option<SocketAddr>,
    /// UDP address for speakers' WebRTC (default: the listen address).
    #[arg(long)]
    rtc_listen: Option<SocketAddr>,
    /// IP that browsers are told to send WebRTC media to.
    #[arg(long)]
    rtc_public_ip: Option<std::net::IpAddr>,
    /// Run as an edge of this node (http://host:port): carry its spaces.
    /// Several, comma separated, preferred first: when the one in use
    /// fails, the next takes over and relays resume there by seq.
    #[arg(long)]
    upstream: Option<String>,
    /// This node's token for its upstream (tribune token --role node).
    #[arg(long)]
    node_token: Option<String>,
    /// Redis for the node directory and fleet-wide counts (redis://host:port).
    #[arg(long)]
    redis: Option<String>,
    /// The control plane's database (postgres://…); default: embedded SQLite.
    #[arg(long)]
    database: Option<String>,
    /// This node's name in the directory (default: its public URL).
    #[arg(long)]
    node_name: Option<String>,
}

#[derive(Args)]
struct TokenArgs {
    /// Data directory holding the signing secret.
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// admin, host, speaker, listener or node.
    #[arg(long)]
    role: String,
    /// Limit the token to one space.
    #[arg(long)]
    space: Option<String>,
    /// Who the bearer is.
    #[arg(long)]
    identity: Option<String>,
    /// Lifetime, e.g. 90s, 15m, 12h, 30d.
    #[arg(long, default_value = "12h")]
    ttl: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Token(args) => print_token(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tribune: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_token(args: TokenArgs) -> Result<(), String> {
    let role: Role = args.role.parse()?;
    let ttl = parse_ttl(&args.ttl)?;
    if let Some(space) = &args.space {
        if !tribune_core::space::valid_space_id(space) {
            return Err(format!("invalid space id {space:?}"));
        }
    }
    let signer = auth::load_signing_key(&args.data)?;
    let identity = args.identity.unwrap_or_else(|| role.as_str().to_string());
    let claims = Claims::new(&identity, role, args.space.as_deref(), wall_secs(), ttl);
    println!(
        "{}",
        token::sign(&claims, &signer).map_err(|e| e.to_string())?
    );
    Ok(())
}

/// Replaces a setting when its flag was given.
fn flag<T: Clone>(setting: &mut T, value: &Option<T>) {
    if let Some(v) = value {
        *setting = v.clone();
    }
}

fn build_config(args: &ServeArgs) -> Result<Config, String> {
    let mut cfg = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    flag(&mut cfg.listen, &args.listen);
    flag(&mut cfg.data, &args.data);
    flag(&mut cfg.max_listeners, &args.max_listeners);
    flag(&mut cfg.flush_ms, &args.flush_ms);
    if let Some(v) = &args.public_url {
        cfg.public_url = Some(v.trim_end_matches('/').to_string());
    }
    flag(&mut cfg.source_stall_ms, &args.source_stall_ms);
    flag(&mut cfg.slow_listener_ms, &args.slow_listener_ms);
    flag(&mut cfg.header_timeout_ms, &args.header_timeout_ms);
    flag(&mut cfg.fsync_ms, &args.fsync_ms);
    flag(&mut cfg.per_ip_connections, &args.per_ip_connections);
    flag(
        &mut cfg.per_subnet_connections,
        &args.per_subnet_connections,
    );
    flag(&mut cfg.joins_per_ip_per_sec, &args.joins_per_ip);
    flag(&mut cfg.join_burst, &args.join_burst);
    flag(&mut cfg.admit_per_sec, &args.admit_per_sec);
    flag(&mut cfg.max_memory_mb, &args.max_memory_mb);
    if args.reserved_listen.is_some() {
        cfg.reserved_listen = args.reserved_listen;
    }
    if args.rtc_listen.is_some() {
        cfg.rtc_listen = args.rtc_listen;
    }
    if args.rtc_public_ip.is_some() {
        cfg.rtc_public_ip = args.rtc_public_ip;
    }
    for (setting, value) in [
        (&mut cfg.upstream, &args.upstream),
        (&mut cfg.node_token, &args.node_token),
        (&mut cfg.redis, &args.redis),
        (&mut cfg.database, &args.database),
        (&mut cfg.node_name, &args.node_name),
    ] {
        if value.is_some() {
            *setting = value.clone();
        }
    }
    cfg.validate()?;
    Ok(cfg)
}

fn serve(args: ServeArgs) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = build_config(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))?;
    runtime.block_on(tribune_server::run(cfg))
}
