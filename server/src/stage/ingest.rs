//! A source's audio, from the door to the program: the upload body is
//! decoded (length, chunked or until close), demuxed into Opus packets,
//! paced to real time, and pushed onto the program directly, or into the
//! stage's mix while speakers are on stage.

use super::OnAir;
use crate::clock::wall_ms;
use crate::live::SourceSlot;
use bytes::BytesMut;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tribune_media::demux::Demuxer;
use tribune_media::http1::BodyFraming;

/// The body of an accepted upload: how it is framed, what the door read of
/// it already, and how long it may go quiet.
pub struct Upload {
    pub framing: BodyFraming,
    pub buf: BytesMut,
    pub stall: Duration,
}

/// How a source session ended: how (`Ok`), or the error to answer with
/// (status, message, metric reason).
pub type Outcome = Result<&'static str, (u16, String, &'static str)>;

/// Streams an upload into the space until it ends, fails, stalls or the
/// space ends. Returns how, and the packets received.
pub async fn receive(
    sock: &mut TcpStream,
    on_air: &OnAir,
    mut slot: SourceSlot,
    upload: Upload,
) -> (Outcome, u64) {
    let Upload {
        mut framing,
        mut buf,
        stall,
    } = upload;
    let live = &on_air.space;
    let stage = on_air.stage.as_deref();
    let mut ending = live.subscribe_ending();
    let mut demux = Demuxer::new();
    let mut body = Vec::with_capacity(16 * 1024);
    let mut packets = Vec::new();
    let mut total_packets = 0u64;
    let paced_ms = metrics::counter!("tribune_source_paced_ms_total", "space" => live.id.clone());
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
                let now = wall_ms();
                let mut to = from;
                let mut wait = 0;
                while to < packets.len() {
                    wait = slot.pace(now, u64::from(packets[to].duration));
                    if wait > 0 {
                        break;
                    }
                    to += 1;
                }
                // while speakers are on stage, the source is one input of the mix
                if to > from && !stage.is_some_and(|s| s.feed_source(&packets[from..to], now)) {
                    slot.push(&packets[from..to], now);
                }
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
    if let Some(stage) = stage {
        stage.source_gone();
    }
    (outcome, total_packets)
}
