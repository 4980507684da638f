//! Tribune's IO shell around the sans-IO core (`tribune-core`) and the
//! media formats (`tribune-media`). Its folders follow the flows:
//! - `front/`: every connection's way in (budgets, the request head,
//!   admission and its answers), and the two hot paths' doors;
//! - `live/`: a live space's program, the fan-out to listeners, the recorder;
//! - `stage/`: what feeds the program (WebRTC speakers, the mixer, Icecast
//!   sources);
//! - `control/`: the registry of spaces, the API, the store, credentials.
//!
//! `docs/ARCHITECTURE.md` walks a listener's bytes and a speaker's packet
//! through them. The `tribune` binary is `main.rs`.

pub mod clock;
pub mod config;
pub mod control;
pub mod front;
pub mod health;
pub mod live;
pub mod stage;

use config::Config;
use control::{auth, spaces::App, store};
use front::admit::Admission;
use front::Lane;
use tribune_core::token::{Claims, Role};

/// Runs a node until SIGINT or SIGTERM.
pub async fn run(cfg: Config) -> Result<(), String> {
    std::fs::create_dir_all(cfg.data.join("recordings"))
        .map_err(|e| format!("cannot create data directory {}: {e}", cfg.data.display()))?;
    let (secret, created) = auth::load_or_create_secret(&cfg.data)
        .map_err(|e| format!("cannot load signing secret: {e}"))?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("cannot install metrics recorder: {e}"))?;
    let store = store::Store::open(cfg.database.as_deref(), &cfg.data.join("tribune.db"))
        .await
        .map_err(|e| format!("cannot open the database: {e}"))?;
    let listener = bind(cfg.listen).map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let reserved = match cfg.reserved_listen {
        Some(addr) => {
            Some(bind(addr).map_err(|e| format!("cannot listen on reserved address {addr}: {e}"))?)
        }
        None => None,
    };
    let rtc_addr = cfg.rtc_listen.unwrap_or(bound);
    let rtc = stage::RtcHub::bind(rtc_addr, cfg.rtc_public_ip)
        .await
        .map_err(|e| format!("cannot bind the stage's UDP port {rtc_addr}: {e}"))?;
    // an edge verifies with its upstream's keys and mints nothing; the
    // origin signs with its own
    let (keys, upstream, keys_created) = match (&cfg.upstream, &cfg.node_token) {
        (Some(url), Some(token)) => {
            let upstream = control::upstream::Upstream::new(url, token)?;
            upstream.check_token().await?;
            let keys = auth::Keys::verify_only(upstream.jwks().await?)?;
            (keys, Some(upstream), false)
        }
        _ => {
            let (keys, created) = auth::Keys::origin(&cfg.data, &secret)?;
            (keys, None, created)
        }
    };
    let fleet = match &cfg.redis {
        Some(url) => {
            let base = cfg.base_url(bound);
            let name = cfg.node_name.clone().unwrap_or_else(|| base.clone());
            let role = if upstream.is_some() { "edge" } else { "origin" };
            let fleet =
                control::fleet::Fleet::new(url, &name, &base, role, cfg.max_listeners as u64)?;
            Some(std::sync::Arc::new(fleet))
        }
        None => None,
    };
    let app = App::load(control::spaces::Parts {
        cfg,
        bound,
        store,
        secret,
        keys,
        upstream,
        fleet,
        metrics,
        rtc,
    })
    .await
    .map_err(|e| format!("cannot load spaces: {e}"))?;
    let base = app.base_url();
    if keys_created || created {
        println!("created signing keys in {}", app.cfg.data.display());
    }
    println!("tribune listening on {base}");
    match &app.upstream {
        Some(up) => println!(
            "edge of {} (relays its spaces; mints no tokens)",
            up.urls().join(", ")
        ),
        None => {
            let admin = Claims::new("admin", Role::Admin, None, clock::wall_secs(), 30 * 86_400);
            let admin_token = app.keys.sign(&admin)?;
            println!("admin: {base}/#admin={admin_token}");
        }
    }
    println!("stage WebRTC on udp://{}", app.rtc.candidate);
    let admission = Admission::new(app.clone());
    let router = control::router(app.clone()).merge(front::admit::routes(admission.clone()));
    if let Some(reserved) = reserved {
        if let Ok(addr) = reserved.local_addr() {
            println!("reserved lane (hosts, speakers, sources) on http://{addr}");
        }
        tokio::spawn(front::serve(
            admission.clone(),
            reserved,
            router.clone(),
            Lane::Reserved,
        ));
    }
    tokio::spawn(front::admit::watch_health(admission.clone()));
    if let Some(fleet) = app.fleet.clone() {
        let app = app.clone();
        tokio::spawn(async move { fleet.run(|| app.fleet_report()).await });
    }
    tokio::select! {
        _ = front::serve(admission, listener, router, Lane::Public) => {}
        _ = shutdown_signal() => {
            tracing::info!("shutting down; live recordings are durable up to the last fsync and resume on restart");
        }
    }
    Ok(())
}

/// Binds with a deep accept queue: in a join storm a short one overflows
/// and the kernel drops SYNs, which clients only retry a second later.
/// TCP_NODELAY is set here once: accepted sockets inherit it, which saves
/// every connection a setsockopt (live audio is written a flush at a time
/// and must not wait for an ACK).
fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.set_nodelay(true)?;
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
