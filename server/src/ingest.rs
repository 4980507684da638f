//! `PUT /spaces/{id}/source` (and the legacy `SOURCE` method): Icecast's
//! source protocol carrying Ogg/Opus, so ffmpeg, liquidsoap, butt and OBS
//! publish unchanged.

use crate::app::{now_ms, now_secs, App};
use crate::auth::{self, AuthError};
use crate::http::{error_response, json_response, BodyFraming, RequestHead};
use bytes::BytesMut;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tribune_core::space::SpaceState;
use tribune_core::token::Role;
use tribune_media::demux::Demuxer;

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
    mut buf: BytesMut,
    peer: SocketAddr,
) {
    let claims = auth::token_from_header(head.header("authorization"))
        .and_then(|t| auth::verify(&app.secret, &t, now_secs()))
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
    let live = match (entry.row.state, entry.live) {
        (SpaceState::Live, Some(live)) => live,
        (SpaceState::Scheduled, _) => {
            let msg = format!(
                "space is scheduled, not live: start it first (POST /api/spaces/{id}/start)"
            );
            return refuse(&mut sock, 409, &msg, "not_live", &[]).await;
        }
        _ => return refuse(&mut sock, 410, "space has ended", "ended", &[]).await,
    };
    let mut framing = match BodyFraming::of(head) {
        Ok(f) => f,
        Err(msg) => return refuse(&mut sock, 400, &msg, "framing", &[]).await,
    };
    let Some(mut slot) = live.claim_source() else {
        let msg = if live.is_ending() {
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

    let stall = Duration::from_millis(app.cfg.source_stall_ms);
    let mut ending = live.subscribe_ending();
    let mut demux = Demuxer::new();
    let mut body = Vec::with_capacity(16 * 1024);
    let mut packets = Vec::new();
    let mut total_packets = 0u64;
    let paced_ms = metrics::counter!("tribune_source_paced_ms_total", "space" => id.to_string());
    let outcome: Result<&'static str, (u16, String, &'static str)> = 'read: loop {
        body.clear();
        let complete = match framing.decode(&mut buf, &mut body) {
            Ok(done) => done,
            Err(e) => break Err((400, e.to_string(), "framing")),
        };
        if !body.is_empty() {
            packets.clear();
            let result = demux.push(&body, &mut packets);
            total_packets += packets.len() as u64;
            // real time: what runs ahead waits (and so does the sender)
            let mut from = 0;
            while from < packets.len() {
                let now = now_ms();
                let mut to = from;
                let mut wait = 0;
                while to < packets.len() {
                    wait = slot.pace(now, u64::from(packets[to].duration));
                    if wait > 0 {
                        break;
                    }
                    to += 1;
                }
                slot.push(&packets[from..to], now);
                from = to;
                if wait > 0 {
                    paced_ms.increment(wait);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                        _ = ending.changed() => break 'read Ok("space_ended"),
                    }
                }
            }
            if let Err(e) = result {
                break Err((e.http_status(), e.to_string(), "bad_stream"));
            }
        }
        if complete {
            break Ok("complete");
        }
        buf.reserve(16 * 1024);
        tokio::select! {
            read = tokio::time::timeout(stall, sock.read_buf(&mut buf)) => match read {
                Err(_) => break Err((408, format!("source sent nothing for {} ms", stall.as_millis()), "stalled")),
                Ok(Ok(0)) => break Ok("closed"),
                Ok(Ok(_)) => {}
                Ok(Err(_)) => break Ok("reset"),
            },
            _ = ending.changed() => break Ok("space_ended"),
        }
    };
    drop(slot);
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
