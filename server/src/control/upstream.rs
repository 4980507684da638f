//! An edge's link to its upstream (the origin, or another edge): the
//! public keys it verifies tokens with, the spaces it carries, and for
//! each live one the relay of its track, pulled once and resumed by seq
//! after any drop.

use crate::clock::wall_ms;
use crate::live::LiveSpace;
use jsonwebtoken::jwk::JwkSet;
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tribune_client::stream::{get_with, parse_url, Target};
use tribune_media::chunked::ChunkedDecoder;
use tribune_media::relay::{Decoder, Frame, AAC_REQUEST_HEADER, CONTENT_TYPE};

/// The nodes this edge may pull from, in order of preference: the first
/// that answers serves every call and relay until it fails, then the next
/// one does (they all carry the same track, so a relay resumes there by
/// seq as it would on the same node).
#[derive(Clone, Debug)]
pub struct Upstream {
    links: Arc<[Link]>,
    /// Index into `links` of the one in use.
    current: Arc<AtomicUsize>,
    auth: String,
}

#[derive(Debug)]
struct Link {
    url: String,
    target: Target,
}

/// How long one upstream may take to answer an API call (head, then body):
/// each upstream in the list gets its own, so one that accepts and never
/// answers costs this once and the next still has its full time.
const API_DEADLINE: Duration = Duration::from_secs(5);
/// Longest pause between attempts to reach the upstream again.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl Upstream {
    /// `urls`: the upstreams' base URLs (`http://host:port`), comma
    /// separated, preferred first; `token`: this node's token (role `node`).
    pub fn new(urls: &str, token: &str) -> Result<Upstream, String> {
        let links = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                let url = u.trim_end_matches('/').to_string();
                let target = parse_url(&url)?;
                Ok(Link { url, target })
            })
            .collect::<Result<Vec<_>, String>>()?;
        if links.is_empty() {
            return Err("--upstream: no URL given".into());
        }
        Ok(Upstream {
            links: links.into(),
            current: Arc::new(AtomicUsize::new(0)),
            auth: format!("Bearer {token}"),
        })
    }

    /// The upstream in use now.
    pub fn url(&self) -> &str {
        &self.link(self.current.load(Ordering::Relaxed)).url
    }

    /// Every upstream, preferred first.
    pub fn urls(&self) -> Vec<&str> {
        self.links.iter().map(|l| l.url.as_str()).collect()
    }

    fn link(&self, index: usize) -> &Link {
        &self.links[index % self.links.len()]
    }

    /// The upstream at `index` failed: the next one takes over, unless
    /// another caller has already moved on.
    fn failed(&self, index: usize) {
        let next = (index + 1) % self.links.len();
        if next != index
            && self
                .current
                .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            metrics::counter!("tribune_upstream_switches_total").increment(1);
            tracing::warn!(from = %self.link(index).url, to = %self.link(next).url, "upstream failed; using the next one");
        }
    }

    /// `GET path` as this node on the upstream in use, moving on to the
    /// next one when it cannot be reached or answers 5xx.
    async fn get(
        &self,
        path: &str,
        extra: &[(&str, &str)],
    ) -> Result<(usize, tribune_client::stream::Answer), String> {
        let mut headers = vec![("Authorization", self.auth.as_str())];
        headers.extend_from_slice(extra);
        let mut last = String::new();
        for _ in 0..self.links.len() {
            let index = self.current.load(Ordering::Relaxed) % self.links.len();
            let link = self.link(index);
            let by = Instant::now() + API_DEADLINE;
            match get_with(&link.target, path, &headers, None, None, by).await {
                Ok(answer) if answer.status() < 500 => return Ok((index, answer)),
                Ok(answer) => last = format!("upstream {} answered {}", link.url, answer.status()),
                Err(e) => last = format!("upstream {}: {e:?}", link.url),
            }
            self.failed(index);
        }
        Err(last)
    }

    /// `GET path` as this node: the status and the JSON body.
    pub async fn get_json(&self, path: &str) -> Result<(u16, Value), String> {
        let (index, answer) = self.get(path, &[]).await?;
        let by = Instant::now() + API_DEADLINE;
        let status = answer.status();
        let body = answer
            .body(1 << 20, by)
            .await
            .map_err(|e| format!("upstream {}: {e:?}", self.link(index).url))?;
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok((status, json))
    }

    /// `GET path` as this node, for files it passes on (HLS files it no
    /// longer holds): status, headers and body up to `limit` bytes.
    pub async fn get_file(
        &self,
        path: &str,
        limit: usize,
    ) -> Result<(u16, Vec<(String, String)>, Vec<u8>), String> {
        let (index, answer) = self.get(path, &[]).await?;
        let by = Instant::now() + API_DEADLINE;
        let (status, head) = (answer.status(), answer.head.headers.clone());
        let body = answer
            .body(limit, by)
            .await
            .map_err(|e| format!("upstream {}: {e:?}", self.link(index).url))?;
        Ok((status, head, body))
    }

    /// The keys tokens are verified with, as the upstream publishes them.
    pub async fn jwks(&self) -> Result<JwkSet, String> {
        let (status, body) = self.get_json("/.well-known/jwks.json").await?;
        if status != 200 {
            return Err(format!(
                "upstream {} answered {status} for its keys",
                self.url()
            ));
        }
        serde_json::from_value(body).map_err(|e| format!("upstream keys: {e}"))
    }

    /// Checks that the upstream takes this node's token (a clear error at
    /// start, not at the first listener).
    pub async fn check_token(&self) -> Result<(), String> {
        let (status, body) = self.get_json("/api/node").await?;
        match status {
            200 => Ok(()),
            _ => Err(format!(
                "upstream {} refused this node's token ({status}): {}",
                self.url(),
                body["error"].as_str().unwrap_or("")
            )),
        }
    }
}

/// The upstream's segment summaries of a live space, for seeding.
fn history_from(
    upstream: Upstream,
    id: String,
) -> impl Fn() -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<crate::live::hls::Sidecar, String>> + Send>,
> {
    move || {
        let (upstream, id) = (upstream.clone(), id.clone());
        Box::pin(async move {
            let (status, body) = upstream
                .get_json(&format!("/spaces/{id}/hls/history.json"))
                .await?;
            if status != 200 {
                return Err(format!(
                    "the upstream answered {status} for its HLS history"
                ));
            }
            serde_json::from_value(body).map_err(|e| format!("HLS history: {e}"))
        })
    }
}

/// Why a relay stopped for good.
#[derive(Debug, PartialEq, Eq)]
pub enum RelayEnd {
    /// The upstream sent the end of the space.
    Ended,
    /// The upstream no longer has the space (404/410).
    Gone,
}

/// Pulls `live`'s track from the upstream until the space ends: once
/// connected, every frame goes into the program; after a drop it asks again
/// from the next seq it needs, so nothing is duplicated and nothing is
/// missed while the upstream still holds it.
pub async fn pull(upstream: Upstream, live: Arc<LiveSpace>) -> RelayEnd {
    let mut backoff = Duration::from_millis(50);
    let mut attempts = 0u64;
    let gaps = metrics::counter!("tribune_relay_gaps_total", "space" => live.id.clone());
    let reconnects =
        metrics::counter!("tribune_relay_reconnects_total", "space" => live.id.clone());
    if let Some(hls) = live.hls() {
        // the segments before the first part this edge builds are listed
        // as the upstream lists them
        tokio::spawn(crate::live::hls::seed_history(
            Arc::downgrade(&hls),
            history_from(upstream.clone(), live.id.clone()),
        ));
    }
    loop {
        let had = live.history().next_seq();
        let from = (attempts > 0).then_some(had);
        attempts += 1;
        match pull_once(&upstream, &live, from, &gaps).await {
            Ok(end) => return end,
            Err(e) => {
                tracing::info!(space = %live.id, upstream = %upstream.url(), error = %e, "relay link dropped; resuming");
                reconnects.increment(1);
            }
        }
        // a link that carried packets was up: a drop after it is a new
        // failure, retried at once, not the next step of an old backoff
        if live.history().next_seq() > had {
            backoff = Duration::from_millis(50);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection of the relay. `Err` when the link dropped.
async fn pull_once(
    upstream: &Upstream,
    live: &Arc<LiveSpace>,
    from: Option<u64>,
    gaps: &metrics::Counter,
) -> Result<RelayEnd, String> {
    let path = match from {
        Some(seq) => format!("/spaces/{}/relay?from={seq}", live.id),
        None => format!("/spaces/{}/relay", live.id),
    };
    // AAC parts from the one after the last this edge has (or all held)
    let aac_from = live.hls().and_then(|h| {
        let aac = h.aac.as_ref()?;
        Some(
            aac.relay_parts_since(None)
                .last()
                .map_or("start".to_string(), |(absolute, _, _)| {
                    (absolute + 1).to_string()
                }),
        )
    });
    let mut headers = vec![("Accept", CONTENT_TYPE)];
    if let Some(from) = &aac_from {
        headers.push((AAC_REQUEST_HEADER, from.as_str()));
    }
    let (index, answer) = upstream.get(&path, &headers).await?;
    match answer.status() {
        200 => {}
        404 | 410 => return Ok(RelayEnd::Gone),
        status => return Err(format!("upstream answered {status}")),
    }
    // a link that drops once it is flowing hands over to the next upstream
    let result = relay_frames(answer, live, gaps).await;
    if result.is_err() {
        upstream.failed(index);
    }
    result
}

/// Feeds the relay's frames into `live` until the end or a drop.
async fn relay_frames(
    mut answer: tribune_client::stream::Answer,
    live: &Arc<LiveSpace>,
    gaps: &metrics::Counter,
) -> Result<RelayEnd, String> {
    let mut chunked = answer.head.chunked().then(ChunkedDecoder::default);
    let mut decoder = Decoder::default();
    let mut body = Vec::new();
    // a link that says nothing (not even a keepalive) is dead
    let silence = Duration::from_secs(6);
    loop {
        if !answer.buf.is_empty() {
            body.clear();
            let done = match chunked.as_mut() {
                Some(d) => d
                    .decode(&mut answer.buf, &mut body)
                    .map_err(|e| e.to_string())?,
                None => {
                    body.extend_from_slice(&answer.buf);
                    answer.buf.clear();
                    false
                }
            };
            decoder.push(&body);
            while let Some(frame) = decoder.next_frame().map_err(|e| e.to_string())? {
                match frame {
                    Frame::Epoch { epoch_ms, .. } => live.set_epoch(epoch_ms),
                    Frame::Group(g) => {
                        if !live.push_group(Arc::new(g)) {
                            tracing::debug!(space = %live.id, "relayed track jumped");
                        }
                    }
                    Frame::Gap { from_seq, to_seq } => {
                        gaps.increment(1);
                        tracing::warn!(space = %live.id, from_seq, to_seq, "the upstream no longer held these packets");
                    }
                    Frame::End => {
                        live.end_relayed();
                        return Ok(RelayEnd::Ended);
                    }
                    Frame::Keepalive => {}
                    Frame::AacPart { part, frames } => {
                        if let Some(hls) = live.hls() {
                            hls.push_aac_part(part, frames);
                        }
                    }
                }
            }
            if done {
                return Err("the upstream ended the relay".into());
            }
        }
        use tokio::io::AsyncReadExt;
        match tokio::time::timeout(silence, answer.sock.read_buf(&mut answer.buf)).await {
            Err(_) => return Err(format!("nothing from the upstream for {silence:?}")),
            Ok(Ok(0)) => return Err("the upstream closed the link".into()),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(_)) => {}
        }
        metrics::gauge!("tribune_relay_last_frame_ms", "space" => live.id.clone())
            .set(wall_ms() as f64);
    }
}
