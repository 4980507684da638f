//! `PUT /spaces/{id}/source` (and the legacy `SOURCE` method) at the
//! door: Icecast's source protocol, so ffmpeg, liquidsoap, butt and OBS
//! publish unchanged. The credentials, the space's state and the body's
//! framing are checked here and the answer is written here; the audio
//! itself goes through `stage::ingest`.

use super::head::{error_response, json_response, BodyFraming, RequestHead};
use crate::clock::wall_secs;
use crate::control::auth::{self, AuthError};
use crate::control::spaces::App;
use crate::stage::ingest::{self, Upload};
use bytes::BytesMut;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tribune_core::space::SpaceState;
use tribune_core::token::Role;

async fn refuse(
    sock: &mut TcpStream,
    status: u16,
    message: &str,
    reason: &'static str,
    extra: &[(&str, String)],
) {
    metrics::counter!("tribune_source_rejects_total", "reason" => reason).increment(1);
    tracing::info!(status, reason, message, "source refused");
    let _ = sock
        .write_all(&json_response(status, extra, &json!({ "error": message })))
        .await;
    let _ = sock.shutdown().await;
}

pub async fn serve(
    app: &Arc<App>,
    mut sock: TcpStream,
    head: &RequestHead,
    id: &str,
    buf: BytesMut,
    peer: SocketAddr,
) {
    let claims = auth::token_from_header(head.header("authorization"))
        .and_then(|t| auth::verify(&app.keys, &t, wall_secs()))
        .and_then(|c| {
            auth::require(&c, id, Role::Speaker, "publishing a source to this space").map(|_| c)
        });
    let claims = match claims {
        Ok(c) => c,
        Err(e) => {
            let challenge = [("WWW-Authenticate", "Basic realm=\"tribune\"".to_string())];
            let extra: &[(&str, String)] = if matches!(e, AuthError::Forbidden { .. }) {
                &[]
            } else {
                &challenge
            };
            return refuse(&mut sock, e.status(), &e.to_string(), "auth", extra).await;
        }
    };
    let Some(entry) = app.space(id) else {
        return refuse(
            &mut sock,
            404,
            &format!("no space with id {id:?}"),
            "unknown_space",
            &[],
        )
        .await;
    };
    let on_air = match (entry.row.state, entry.live) {
        (SpaceState::Live, Some(on_air)) => on_air,
        (SpaceState::Scheduled, _) => {
            let msg = format!(
                "space is scheduled, not live: start it first (POST /api/spaces/{id}/start)"
            );
            return refuse(&mut sock, 409, &msg, "not_live", &[]).await;
        }
        _ => return refuse(&mut sock, 410, "space has ended", "ended", &[]).await,
    };
    let framing = match BodyFraming::of(head) {
        Ok(f) => f,
        Err(msg) => return refuse(&mut sock, 400, &msg, "framing", &[]).await,
    };
    let Some(slot) = on_air.space.claim_source() else {
        let msg = if on_air.space.is_ending() {
            "space is ending"
        } else {
            "another source is already connected to this space"
        };
        return refuse(&mut sock, 409, msg, "source_busy", &[]).await;
    };
    tracing::info!(%peer, space = id, identity = %claims.sub, method = %head.method, "source connected");

    // Icecast answers a SOURCE at once; a PUT that asked for 100-continue
    // waits for it before sending audio.
    let mut answered = false;
    if head.method == "SOURCE" {
        answered = sock.write_all(b"HTTP/1.0 200 OK\r\n\r\n").await.is_ok();
    } else if head
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        && sock
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .is_err()
    {
        return;
    }

    let upload = Upload {
        framing,
        buf,
        stall: Duration::from_millis(app.cfg.source_stall_ms),
    };
    let (outcome, total_packets) = ingest::receive(&mut sock, &on_air, slot, upload).await;
    match outcome {
        Ok(how) => {
            metrics::counter!("tribune_source_sessions_total", "result" => how).increment(1);
            tracing::info!(%peer, space = id, packets = total_packets, how, "source disconnected");
            if !answered {
                let body = json!({"space": id, "packets": total_packets, "ended_by": how});
                let _ = sock.write_all(&json_response(200, &[], &body)).await;
            }
        }
        Err((status, message, reason)) => {
            metrics::counter!("tribune_source_sessions_total", "result" => reason).increment(1);
            tracing::warn!(%peer, space = id, status, reason, error = %message, packets = total_packets,
                "source cut; audio before the error is kept");
            if !answered {
                let _ = sock.write_all(&error_response(status, &message)).await;
            }
        }
    }
    let _ = sock.shutdown().await;
}
