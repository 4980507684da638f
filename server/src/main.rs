//! `tribune`: the live audio rooms server.

mod api;
mod app;
mod auth;
mod config;
mod door;
mod http;
mod ingest;
mod listen;
mod live;
mod recorder;
mod store;

use clap::{Args, Parser, Subcommand};
use config::Config;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use tribune_core::token::{self, parse_ttl, Claims, Role};

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
    Serve(ServeArgs),
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
}

#[derive(Args)]
struct TokenArgs {
    /// Data directory holding the signing secret.
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// admin, host, speaker or listener.
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
        Command::Serve(args) => serve(args),
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
    let secret = auth::load_secret(&args.data)?;
    let identity = args.identity.unwrap_or_else(|| role.as_str().to_string());
    let claims = Claims::new(&identity, role, args.space.as_deref(), app::now_secs(), ttl);
    println!(
        "{}",
        token::sign(&claims, &secret).map_err(|e| e.to_string())?
    );
    Ok(())
}

fn build_config(args: &ServeArgs) -> Result<Config, String> {
    let mut cfg = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(v) = args.listen {
        cfg.listen = v;
    }
    if let Some(v) = &args.data {
        cfg.data = v.clone();
    }
    if let Some(v) = args.max_listeners {
        cfg.max_listeners = v;
    }
    if let Some(v) = args.flush_ms {
        cfg.flush_ms = v;
    }
    if let Some(v) = &args.public_url {
        cfg.public_url = Some(v.trim_end_matches('/').to_string());
    }
    if let Some(v) = args.source_stall_ms {
        cfg.source_stall_ms = v;
    }
    if let Some(v) = args.slow_listener_ms {
        cfg.slow_listener_ms = v;
    }
    if let Some(v) = args.header_timeout_ms {
        cfg.header_timeout_ms = v;
    }
    if let Some(v) = args.fsync_ms {
        cfg.fsync_ms = v;
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
    runtime.block_on(run(cfg))
}

async fn run(cfg: Config) -> Result<(), String> {
    std::fs::create_dir_all(cfg.data.join("recordings"))
        .map_err(|e| format!("cannot create data directory {}: {e}", cfg.data.display()))?;
    let (secret, created) = auth::load_or_create_secret(&cfg.data)
        .map_err(|e| format!("cannot load signing secret: {e}"))?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("cannot install metrics recorder: {e}"))?;
    let store = store::Store::open(&cfg.data.join("tribune.db"))
        .await
        .map_err(|e| format!("cannot open database: {e}"))?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let app = app::App::load(cfg, bound, store, secret, metrics)
        .await
        .map_err(|e| format!("cannot load spaces: {e}"))?;
    let admin = Claims::new("admin", Role::Admin, None, app::now_secs(), 30 * 86_400);
    let admin_token = token::sign(&admin, &app.secret).map_err(|e| e.to_string())?;
    let base = app.base_url();
    if created {
        println!(
            "created signing secret in {}",
            auth::secret_path(&app.cfg.data).display()
        );
    }
    println!("tribune listening on {base}");
    println!("admin: {base}/#admin={admin_token}");
    let router = api::router(app.clone());
    tokio::select! {
        _ = door::serve(app.clone(), listener, router) => {}
        _ = shutdown_signal() => {
            tracing::info!("shutting down; live recordings are durable up to the last fsync and resume on restart");
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
