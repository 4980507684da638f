//! Tribune's IO shell: the front door, ingest, fan-out, recorder, control
//! plane and stage, around the sans-IO core (`tribune-core`) and the media
//! formats (`tribune-media`). The `tribune` binary is `main.rs`.

pub mod admit;
pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod door;
pub mod http;
pub mod ingest;
pub mod listen;
pub mod live;
pub mod recorder;
pub mod rtc;
pub mod shard;
pub mod stage;
pub mod store;
pub mod whip;

use config::Config;
use tribune_core::token::{self, Claims, Role};

/// Runs a node until SIGINT or SIGTERM.
pub async fn run(cfg: Config) -> Result<(), String> {
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
    let listener = bind(cfg.listen).map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let reserved = match cfg.reserved_listen {
        Some(addr) => {
            Some(bind(addr).map_err(|e| format!("cannot listen on reserved address {addr}: {e}"))?)
        }
        None => None,
    };
    let rtc_addr = cfg.rtc_listen.unwrap_or(bound);
    let rtc = rtc::RtcHub::bind(rtc_addr, cfg.rtc_public_ip)
        .await
        .map_err(|e| format!("cannot bind the stage's UDP port {rtc_addr}: {e}"))?;
    let app = app::App::load(cfg, bound, store, secret, metrics, rtc)
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
    println!("stage WebRTC on udp://{}", app.rtc.candidate);
    let router = api::router(app.clone());
    if let Some(reserved) = reserved {
        if let Ok(addr) = reserved.local_addr() {
            println!("reserved lane (hosts, speakers, sources) on http://{addr}");
        }
        tokio::spawn(door::serve(
            app.clone(),
            reserved,
            router.clone(),
            door::Lane::Reserved,
        ));
    }
    tokio::spawn(admit::watch_health(app.clone()));
    tokio::select! {
        _ = door::serve(app.clone(), listener, router, door::Lane::Public) => {}
        _ = shutdown_signal() => {
            tracing::info!("shutting down; live recordings are durable up to the last fsync and resume on restart");
        }
    }
    Ok(())
}

/// Binds with a deep accept queue: in a join storm a short one overflows
/// and the kernel drops SYNs, which clients only retry a second later.
fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(4096)
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
