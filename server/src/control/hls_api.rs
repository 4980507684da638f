//! The HLS tier over HTTP: `GET /spaces/{id}/hls/master.m3u8`, and under
//! `/spaces/{id}/hls/{opus|aac}/` each rendition's `media.m3u8`,
//! `init.mp4`, `part{N}.{k}.m4s` and `seg{N}.m4s`.
//!
//! While the space is live they come from the space's index on this node
//! (`live/hls.rs`), with LL-HLS blocking reloads held (at most three
//! target durations, RFC 8216bis §6.2.5.2) until the part asked for is
//! published; parts no longer held are rebuilt from the recording (the
//! origin) or fetched from the upstream (an edge). Once ended, the same
//! names are a VOD from the recording. Files are immutable with a strong
//! ETag from their bytes; playlists live for at most a second in caches.

use super::spaces::App;
use super::{query_token, readable_entry, ApiError, Shared};
use crate::live::hls::{etag_of, sidecar_path, Hls, Kind, Rendition, Sidecar, Tagged};
use crate::live::recorder::recording_path;
use crate::stage::OnAir;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tribune_core::space::{valid_space_id, SpaceState};
use tribune_core::token::Role;
use tribune_media::hls::fmp4::{init_segment, AacLcConfig};
use tribune_media::hls::layout::{parse_resource, HlsResource};
use tribune_media::hls::recorded::RecordedTrack;
use tribune_media::hls::reload::{max_wait_ms, part_decision, reload_decision, segment_decision};
use tribune_media::hls::{
    multivariant_playlist, skip_requested, AudioConfig, BlockingRequest, HlsLayout, PartId,
    ReloadDecision, RenditionIndex, ResourceDecision, Variant,
};

/// A query string longer than this is refused before anything is parsed.
const MAX_QUERY: usize = 512;
/// Ended recordings kept parsed in memory (the latest asked for).
const RECORDINGS_CACHED: usize = 8;
/// Parts rebuilt from recordings at once (each decodes and encodes).
const REBUILDS_AT_ONCE: usize = 2;
/// Largest file an edge passes on from its upstream (a long VOD playlist).
const MAX_PASSED_ON: usize = 16 << 20;

const PLAYLIST: &str = "application/vnd.apple.mpegurl";
const MEDIA: &str = "audio/mp4";
const IMMUTABLE: &str = "max-age=31536000, immutable";

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route(
            "/spaces/{id}/hls/master.m3u8",
            get(master).options(preflight),
        )
        .route("/spaces/{id}/hls/history.json", get(history))
        .route(
            "/spaces/{id}/hls/{rendition}/{file}",
            get(file).options(preflight),
        )
        .layer(Extension(Arc::new(Recordings::default())))
}

/// What the tier's answers are made of on this node.
fn layout() -> HlsLayout {
    HlsLayout::DEFAULT
}

pub fn aac_config(app: &App) -> Option<AacLcConfig> {
    app.cfg.aac_config()
}

/// An answer of the tier: the body, its type, how caches may keep it.
struct Answer {
    status: StatusCode,
    content_type: &'static str,
    cache: String,
    etag: Option<Arc<str>>,
    body: Bytes,
}

impl Answer {
    fn file(tagged: Tagged, private: bool) -> Answer {
        Answer {
            status: StatusCode::OK,
            content_type: MEDIA,
            cache: cache_control(private, IMMUTABLE),
            etag: Some(tagged.etag),
            body: tagged.bytes,
        }
    }

    fn playlist(body: Bytes, private: bool, max_age: &str) -> Answer {
        Answer {
            status: StatusCode::OK,
            content_type: PLAYLIST,
            cache: cache_control(private, max_age),
            etag: None,
            body,
        }
    }

    fn into_response(self, headers: &HeaderMap) -> Response {
        let not_modified = self.etag.as_deref().is_some_and(|etag| {
            headers
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
        });
        let mut res = if not_modified {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            (self.status, Body::from(self.body)).into_response()
        };
        let h = res.headers_mut();
        if !not_modified {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            );
        }
        if let Ok(v) = HeaderValue::from_str(&self.cache) {
            h.insert(header::CACHE_CONTROL, v);
        }
        if let Some(v) = self.etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
            h.insert(header::ETAG, v);
        }
        cors(h);
        res
    }
}

fn cache_control(private: bool, rest: &str) -> String {
    format!("{}, {rest}", if private { "private" } else { "public" })
}

fn cors(h: &mut HeaderMap) {
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
}

/// An error of the tier: JSON, never cached, readable by players.
fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    let mut res = ApiError::new(status, message).into_response();
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    cors(h);
    res
}

fn refuse_api(e: ApiError) -> Response {
    let mut res = e.into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    cors(res.headers_mut());
    res
}

async fn preflight() -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    let h = res.headers_mut();
    cors(h);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Range"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    res
}

/// Who asks, for what, in which space.
struct Asked {
    app: Arc<App>,
    id: String,
    private: bool,
    /// The token that came in the query: playlists hand it on in their
    /// URIs (players do not carry a query string to relative URIs).
    query_token: Option<String>,
    query: String,
    state: SpaceState,
    live: Option<OnAir>,
}

async fn asked(
    app: Arc<App>,
    id: &str,
    headers: &HeaderMap,
    query: Option<String>,
) -> Result<Asked, Response> {
    let query = query.unwrap_or_default();
    if query.len() > MAX_QUERY {
        return Err(refuse(
            StatusCode::URI_TOO_LONG,
            format!("the query string is over {MAX_QUERY} bytes"),
        ));
    }
    if !valid_space_id(id) {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            format!("no space with id {id:?}"),
        ));
    }
    app.space_or_fetch(id).await;
    let entry = readable_entry(&app, id, headers, Some(&query)).map_err(refuse_api)?;
    Ok(Asked {
        id: id.to_string(),
        private: entry.row.private,
        query_token: query_token(Some(&query))
            .filter(|_| entry.row.private)
            .map(str::to_string),
        state: entry.row.state,
        live: entry.live,
        query,
        app,
    })
}

impl Asked {
    fn hls(&self) -> Option<Arc<Hls>> {
        self.live.as_ref().and_then(|on_air| on_air.space.hls())
    }

    /// Playlist text with this asker's token on every URI (private spaces).
    fn tokened(&self, playlist: Bytes) -> Bytes {
        match &self.query_token {
            Some(token) => with_token(&playlist, token),
            None => playlist,
        }
    }

    fn query_without_token(&self) -> String {
        self.query
            .split('&')
            .filter(|kv| !kv.is_empty() && !kv.starts_with("token="))
            .collect::<Vec<_>>()
            .join("&")
    }
}

async fn master(
    State(app): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let started = Instant::now();
    let asked = match asked(app, &id, &headers, query).await {
        Ok(a) => a,
        Err(res) => return count("master", res, started),
    };
    let res = match asked.state {
        SpaceState::Scheduled => refuse(StatusCode::NOT_FOUND, "the space has not started"),
        _ => {
            let text = match asked.hls() {
                Some(hls) => hls.master().bytes.clone(),
                None => {
                    let mut variants = vec![Variant::opus(32_000)];
                    variants.extend(aac_config(&asked.app).map(Variant::aac));
                    Bytes::from(multivariant_playlist(&variants))
                }
            };
            let body = asked.tokened(text);
            let mut answer = Answer::playlist(body, asked.private, "max-age=60");
            answer.etag = Some(etag_of(&answer.body).into());
            answer.into_response(&headers)
        }
    };
    count("master", res, started)
}

fn count(kind: &'static str, res: Response, started: Instant) -> Response {
    let status = res.status().as_u16().to_string();
    metrics::counter!("tribune_hls_requests_total", "kind" => kind, "status" => status)
        .increment(1);
    metrics::histogram!("tribune_hls_request_seconds", "kind" => kind)
        .record(started.elapsed().as_secs_f64());
    res
}

async fn file(
    State(app): Shared,
    Extension(recordings): Extension<Arc<Recordings>>,
    Path((id, dir, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let started = Instant::now();
    let resource = parse_resource(&name);
    let kind_label = match resource {
        Some(HlsResource::MediaPlaylist) => "playlist",
        Some(HlsResource::Part(_)) => "part",
        Some(HlsResource::Segment(_)) => "segment",
        Some(HlsResource::Init) => "init",
        None => "unknown",
    };
    let res = serve_file(app, &recordings, &id, &dir, resource, &headers, query).await;
    count(kind_label, res, started)
}

async fn serve_file(
    app: Arc<App>,
    recordings: &Recordings,
    id: &str,
    dir: &str,
    resource: Option<HlsResource>,
    headers: &HeaderMap,
    query: Option<String>,
) -> Response {
    let asked = match asked(app, id, headers, query).await {
        Ok(a) => a,
        Err(res) => return res,
    };
    let (Some(kind), Some(resource)) = (Kind::from_dir(dir), resource) else {
        return refuse(StatusCode::NOT_FOUND, "no such HLS file");
    };
    if kind == Kind::Aac && aac_config(&asked.app).is_none() {
        return refuse(StatusCode::NOT_FOUND, "this node has no AAC rendition");
    }
    if asked.state == SpaceState::Scheduled {
        return refuse(StatusCode::NOT_FOUND, "the space has not started");
    }
    let path = format!("/spaces/{id}/hls/{dir}/");
    let answer = match asked.hls() {
        Some(hls) => match hls.rendition(kind) {
            Some(rendition) => live(&asked, recordings, &hls, rendition, resource).await,
            None => Err(refuse(StatusCode::NOT_FOUND, "no such rendition here")),
        },
        None if asked.app.is_edge() => Err(pass_on(&asked, &path, resource).await),
        None => ended(&asked, recordings, kind, resource).await,
    };
    match answer {
        Ok(answer) => answer.into_response(headers),
        Err(res) => res,
    }
}

/// A live space's file from this node's index.
async fn live(
    asked: &Asked,
    recordings: &Recordings,
    hls: &Hls,
    rendition: &Rendition,
    resource: HlsResource,
) -> Result<Answer, Response> {
    let layout = hls.layout;
    let frame = rendition.frame_samples();
    let private = asked.private;
    match resource {
        HlsResource::Init => Ok(Answer::file(rendition.init.clone(), private)),
        HlsResource::MediaPlaylist => {
            let request = BlockingRequest::from_query(&asked.query)
                .map_err(|e| refuse(StatusCode::BAD_REQUEST, e.to_string()))?;
            let delta = skip_requested(&asked.query);
            let deadline = Instant::now() + Duration::from_millis(max_wait_ms(&layout, frame));
            let mut changes = rendition.subscribe();
            loop {
                let (decision, body, ended) = {
                    let state = rendition.read();
                    let position = state.playlist_position();
                    let decision = match position {
                        // nothing to list yet: even a plain request waits
                        None => ReloadDecision::Wait {
                            until: PartId { msn: 0, part: 0 },
                            max_wait_ms: 0,
                        },
                        Some(_) => reload_decision(request, position, &layout, frame),
                    };
                    let ended = position.is_some_and(|p| p.ended);
                    (decision, state.playlist(delta), ended)
                };
                match decision {
                    ReloadDecision::Ready => {
                        let max_age = match (ended, request) {
                            (true, _) => "max-age=86400",
                            // the answer to a blocking request only gains parts later
                            (false, Some(_)) => "max-age=6",
                            // a cache may answer with the previous one while
                            // it fetches the next, for one second and no more
                            (false, None) => "max-age=1, stale-while-revalidate=1",
                        };
                        return Ok(Answer::playlist(asked.tokened(body), private, max_age));
                    }
                    ReloadDecision::TooFarAhead => {
                        return Err(refuse(
                            StatusCode::BAD_REQUEST,
                            "_HLS_msn/_HLS_part is further ahead than the playlist can reach soon",
                        ))
                    }
                    ReloadDecision::Wait { .. } => {
                        wait(&mut changes, deadline).await?;
                    }
                }
            }
        }
        HlsResource::Part(id) => {
            let deadline = Instant::now() + Duration::from_millis(max_wait_ms(&layout, frame));
            let mut changes = rendition.subscribe();
            loop {
                let (decision, held, complete) = {
                    let state = rendition.read();
                    let decision = part_decision(id, state.position(), &layout, frame);
                    (
                        decision,
                        state.part(id),
                        state.playlist_position().is_some(),
                    )
                };
                match decision {
                    ResourceDecision::Available => {
                        if let Some(tagged) = held {
                            return Ok(Answer::file(tagged, private));
                        }
                        return older_part(asked, recordings, rendition, id).await;
                    }
                    ResourceDecision::WaitForPublish { .. } => {
                        wait(&mut changes, deadline).await?;
                    }
                    // before this node's first part and not yet seeded:
                    // the upstream or the recording may have it
                    ResourceDecision::NotFound if !complete && asked.app.is_edge() => {
                        return Err(pass_on(asked, &rendition_path(asked, rendition), HlsResource::Part(id)).await);
                    }
                    ResourceDecision::NotFound => {
                        return Err(refuse(
                            StatusCode::NOT_FOUND,
                            "this part does not exist and will not: before the track, past its end, or further ahead than the next part",
                        ))
                    }
                }
            }
        }
        HlsResource::Segment(msn) => {
            let (decision, held) = {
                let state = rendition.read();
                (
                    segment_decision(msn, state.position()),
                    state.index.segment_bytes(msn),
                )
            };
            match (decision, held) {
                (ResourceDecision::Available, Some(bytes)) => {
                    Ok(Answer::file(Tagged::new(bytes), private))
                }
                (ResourceDecision::Available, None) => {
                    older_segment(asked, recordings, rendition, msn).await
                }
                _ => Err(refuse(
                    StatusCode::NOT_FOUND,
                    "this segment is not complete, or not in the track",
                )),
            }
        }
    }
}

fn rendition_path(asked: &Asked, rendition: &Rendition) -> String {
    format!("/spaces/{}/hls/{}/", asked.id, rendition.kind.label())
}

/// Waits for the next publish, until `deadline`: then 503, as RFC
/// 8216bis §6.2.5.2 says a server that cannot answer in time should.
async fn wait(
    changes: &mut tokio::sync::watch::Receiver<u64>,
    deadline: Instant,
) -> Result<(), Response> {
    match tokio::time::timeout_at(deadline.into(), changes.changed()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "not published within three target durations; reload the playlist",
        )),
    }
}

/// A published part this node no longer holds in memory.
async fn older_part(
    asked: &Asked,
    recordings: &Recordings,
    rendition: &Rendition,
    id: PartId,
) -> Result<Answer, Response> {
    if asked.app.is_edge() {
        return Err(pass_on(
            asked,
            &rendition_path(asked, rendition),
            HlsResource::Part(id),
        )
        .await);
    }
    let track = recordings
        .track(&asked.app, &asked.id, Some(layout().part_range(id).end))
        .await?;
    let part = recordings
        .build_part(&asked.app, track, rendition.kind, id)
        .await?;
    part.map(|t| Answer::file(t, asked.private))
        .ok_or_else(|| refuse(StatusCode::NOT_FOUND, "this part is not in the recording"))
}

async fn older_segment(
    asked: &Asked,
    recordings: &Recordings,
    rendition: &Rendition,
    msn: u64,
) -> Result<Answer, Response> {
    if asked.app.is_edge() {
        return Err(pass_on(
            asked,
            &rendition_path(asked, rendition),
            HlsResource::Segment(msn),
        )
        .await);
    }
    let summary = {
        let state = rendition.read();
        state
            .index
            .segments()
            .iter()
            .find(|s| s.msn == msn)
            .copied()
    };
    let Some(summary) = summary else {
        return Err(refuse(StatusCode::NOT_FOUND, "no such segment"));
    };
    let track = recordings
        .track(&asked.app, &asked.id, Some(summary.end_granule))
        .await?;
    let bytes = recordings
        .build_segment(
            &asked.app,
            track,
            rendition.kind,
            summary.first_part,
            summary.parts,
        )
        .await?;
    Ok(Answer::file(Tagged::new(bytes), asked.private))
}

/// An edge passes on what it does not hold (an ended space, a part older
/// than its memory) from its upstream, which holds or rebuilds it.
async fn pass_on(asked: &Asked, dir_path: &str, resource: HlsResource) -> Response {
    let Some(upstream) = asked.app.upstream.clone() else {
        return refuse(StatusCode::NOT_FOUND, "no such HLS file");
    };
    let name = match resource {
        HlsResource::Init => tribune_media::hls::layout::INIT_URI.to_string(),
        HlsResource::MediaPlaylist => tribune_media::hls::layout::MEDIA_PLAYLIST_URI.to_string(),
        HlsResource::Part(id) => tribune_media::hls::layout::part_uri(id),
        HlsResource::Segment(msn) => tribune_media::hls::layout::segment_uri(msn),
    };
    let query = asked.query_without_token();
    let path = if query.is_empty() {
        format!("{dir_path}{name}")
    } else {
        format!("{dir_path}{name}?{query}")
    };
    match upstream.get_file(&path, MAX_PASSED_ON).await {
        Ok((status, head, body)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            let find = |name: &str| {
                head.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
            };
            let is_playlist = matches!(resource, HlsResource::MediaPlaylist);
            let body = if is_playlist && status.is_success() {
                asked.tokened(Bytes::from(body))
            } else {
                Bytes::from(body)
            };
            let mut res = (status, Body::from(body)).into_response();
            let h = res.headers_mut();
            for name in ["content-type", "cache-control", "etag", "retry-after"] {
                if let Some(v) = find(name).and_then(|v| HeaderValue::from_str(&v).ok()) {
                    if let Ok(n) = header::HeaderName::from_bytes(name.as_bytes()) {
                        h.insert(n, v);
                    }
                }
            }
            if asked.private {
                if let Some(cache) = find("cache-control") {
                    let private = cache.replace("public", "private");
                    if let Ok(v) = HeaderValue::from_str(&private) {
                        h.insert(header::CACHE_CONTROL, v);
                    }
                }
            }
            cors(h);
            res
        }
        Err(e) => {
            tracing::warn!(space = %asked.id, error = %e, "HLS file not passed on");
            refuse(
                StatusCode::BAD_GATEWAY,
                "the upstream node did not answer for this file",
            )
        }
    }
}

/// An ended space's file, on the origin: a VOD from the recording.
async fn ended(
    asked: &Asked,
    recordings: &Recordings,
    kind: Kind,
    resource: HlsResource,
) -> Result<Answer, Response> {
    let app = &asked.app;
    let config = match kind {
        Kind::Opus => AudioConfig::PROGRAM_OPUS,
        Kind::Aac => match aac_config(app) {
            Some(c) => AudioConfig::AacLc(c),
            None => return Err(refuse(StatusCode::NOT_FOUND, "no AAC rendition")),
        },
    };
    // an ended space's files never change: caches may keep them
    let private = asked.private;
    if let HlsResource::Init = resource {
        return init_segment(&config)
            .map(|bytes| Answer::file(Tagged::new(bytes), private))
            .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()));
    }
    let vod = recordings.vod(app, &asked.id).await?;
    let index = match kind {
        Kind::Opus => &vod.opus,
        Kind::Aac => match &vod.aac {
            Some(index) => index,
            None => return Err(refuse(StatusCode::NOT_FOUND, "no AAC rendition")),
        },
    };
    let position = index.position();
    let frame = config.frame_samples();
    match resource {
        HlsResource::Init | HlsResource::MediaPlaylist => {
            // directives are ignored once the playlist has ENDLIST, but
            // garbage is still refused
            BlockingRequest::from_query(&asked.query)
                .map_err(|e| refuse(StatusCode::BAD_REQUEST, e.to_string()))?;
            let body = match kind {
                Kind::Opus => vod.opus_playlist.clone(),
                Kind::Aac => vod.aac_playlist.clone(),
            };
            Ok(Answer::playlist(
                asked.tokened(body),
                private,
                "max-age=86400",
            ))
        }
        HlsResource::Part(id) => match part_decision(id, position, &layout(), frame) {
            ResourceDecision::Available => recordings
                .build_part(app, vod.track.clone(), kind, id)
                .await?
                .map(|t| Answer::file(t, private))
                .ok_or_else(|| refuse(StatusCode::NOT_FOUND, "this part is not in the recording")),
            _ => Err(refuse(
                StatusCode::NOT_FOUND,
                "the recording has no such part",
            )),
        },
        HlsResource::Segment(msn) => {
            let summary = index.segments().iter().find(|s| s.msn == msn).copied();
            match (segment_decision(msn, position), summary) {
                (ResourceDecision::Available, Some(s)) => {
                    let bytes = recordings
                        .build_segment(app, vod.track.clone(), kind, s.first_part, s.parts)
                        .await?;
                    Ok(Answer::file(Tagged::new(bytes), private))
                }
                _ => Err(refuse(
                    StatusCode::NOT_FOUND,
                    "the recording has no such segment",
                )),
            }
        }
    }
}

/// The summaries of a live space's renditions, for a downstream node
/// seeding its playlists (node token). 503 until this node knows them.
async fn history(State(app): Shared, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let claims = match super::bearer(&app, &headers) {
        Ok(c) => c,
        Err(e) => return refuse_api(e.into()),
    };
    if claims.role != Role::Node && claims.role != Role::Admin {
        return refuse(StatusCode::FORBIDDEN, "a node token is needed");
    }
    let Some(hls) = app
        .space(&id)
        .and_then(|e| e.live)
        .and_then(|l| l.space.hls())
    else {
        return refuse(StatusCode::GONE, "the space is not live here");
    };
    let complete = [Some(&hls.opus), hls.aac.as_ref()]
        .into_iter()
        .flatten()
        .all(|r| r.read().playlist_position().is_some());
    if !complete {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node's HLS history is not complete yet",
        );
    }
    let record = Sidecar {
        opus: hls.opus.summaries().iter().map(Into::into).collect(),
        aac: hls
            .aac
            .as_ref()
            .map(|a| a.summaries().iter().map(Into::into).collect())
            .unwrap_or_default(),
    };
    axum::Json(record).into_response()
}

/// Every URI of a playlist with `?token=` (a private space's listener
/// token, as it came).
pub fn with_token(playlist: &[u8], token: &str) -> Bytes {
    let text = String::from_utf8_lossy(playlist);
    let mut out = String::with_capacity(text.len() * 2);
    for line in text.lines() {
        if !line.is_empty() && !line.starts_with('#') {
            out.push_str(line);
            out.push_str(if line.contains('?') {
                "&token="
            } else {
                "?token="
            });
            out.push_str(token);
        } else if let Some((head, rest)) = line.split_once("URI=\"") {
            let (uri, tail) = rest.split_once('"').unwrap_or((rest, ""));
            out.push_str(head);
            out.push_str("URI=\"");
            out.push_str(uri);
            out.push_str("?token=");
            out.push_str(token);
            out.push('"');
            out.push_str(tail);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    Bytes::from(out)
}

/// An ended space's renditions, from its recording.
pub struct Vod {
    track: Arc<RecordedTrack>,
    opus: RenditionIndex,
    aac: Option<RenditionIndex>,
    opus_playlist: Bytes,
    aac_playlist: Bytes,
}

/// Recordings parsed for the tier, and the limit on rebuilding from them.
pub struct Recordings {
    live: Mutex<HashMap<String, Arc<RecordedTrack>>>,
    ended: Mutex<HashMap<String, Arc<Vod>>>,
    rebuilds: Semaphore,
}

impl Default for Recordings {
    fn default() -> Self {
        Recordings {
            live: Mutex::new(HashMap::new()),
            ended: Mutex::new(HashMap::new()),
            rebuilds: Semaphore::new(REBUILDS_AT_ONCE),
        }
    }
}

fn bounded_insert<V>(map: &mut HashMap<String, V>, key: &str, value: V) {
    if map.len() >= RECORDINGS_CACHED && !map.contains_key(key) {
        if let Some(any) = map.keys().next().cloned() {
            map.remove(&any);
        }
    }
    map.insert(key.to_string(), value);
}

fn unavailable(what: &str) -> Response {
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{what}; try again shortly"),
    )
}

impl Recordings {
    /// The recording of a space, parsed, reaching at least `reaching`
    /// (read again when the copy held is shorter: a live recording grows).
    async fn track(
        &self,
        app: &App,
        id: &str,
        reaching: Option<u64>,
    ) -> Result<Arc<RecordedTrack>, Response> {
        let held = self
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned();
        if let Some(track) = held.filter(|t| reaching.is_none_or(|r| t.end_granule() >= r)) {
            return Ok(track);
        }
        let _permit = self
            .rebuilds
            .acquire()
            .await
            .map_err(|_| unavailable("shutting down"))?;
        let path = recording_path(&app.cfg.data, id);
        let track = tokio::task::spawn_blocking(move || {
            std::fs::read(path).map(|data| RecordedTrack::parse(Bytes::from(data)))
        })
        .await
        .map_err(|_| unavailable("the recording could not be read"))?
        .map_err(|_| refuse(StatusCode::NOT_FOUND, "no recording for this space"))?;
        let track = Arc::new(track);
        bounded_insert(
            &mut self.live.lock().unwrap_or_else(|e| e.into_inner()),
            id,
            track.clone(),
        );
        Ok(track)
    }

    async fn build_part(
        &self,
        app: &App,
        track: Arc<RecordedTrack>,
        kind: Kind,
        id: PartId,
    ) -> Result<Option<Tagged>, Response> {
        let _permit = self
            .rebuilds
            .acquire()
            .await
            .map_err(|_| unavailable("shutting down"))?;
        let aac = aac_config(app);
        let built = tokio::task::spawn_blocking(move || build_part(&track, kind, aac, id))
            .await
            .map_err(|_| unavailable("the part could not be built"))?;
        built
            .map(|b| b.map(Tagged::new))
            .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e))
    }

    async fn build_segment(
        &self,
        app: &App,
        track: Arc<RecordedTrack>,
        kind: Kind,
        first: PartId,
        parts: u32,
    ) -> Result<Bytes, Response> {
        let _permit = self
            .rebuilds
            .acquire()
            .await
            .map_err(|_| unavailable("shutting down"))?;
        let aac = aac_config(app);
        let built = tokio::task::spawn_blocking(move || {
            let l = layout();
            let mut out = BytesMut::new();
            let start = l.absolute_part(first);
            for a in start..start + u64::from(parts) {
                match build_part(&track, kind, aac, l.part_from_absolute(a))? {
                    Some(part) => out.extend_from_slice(&part),
                    None => {
                        return Err("a part of this segment is not in the recording".to_string())
                    }
                }
            }
            Ok(out.freeze())
        })
        .await
        .map_err(|_| unavailable("the segment could not be built"))?;
        built.map_err(|e| refuse(StatusCode::NOT_FOUND, e))
    }

    /// The VOD of an ended space: its recording, and playlists from the
    /// summaries the live index wrote (or derived from the recording).
    async fn vod(&self, app: &App, id: &str) -> Result<Arc<Vod>, Response> {
        let held = self
            .ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned();
        if let Some(vod) = held {
            return Ok(vod);
        }
        // the whole recording, not a copy read while it was live
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        let mut track = RecordedTrack::clone(&*self.track(app, id, None).await?);
        // the space ended, whether or not its last page says so
        track.ended = true;
        let track = Arc::new(track);
        let sidecar = sidecar_path(&app.cfg.data, id);
        let aac = aac_config(app);
        let built = tokio::task::spawn_blocking(move || {
            let written: Option<Sidecar> = std::fs::read(sidecar)
                .ok()
                .and_then(|json| serde_json::from_slice(&json).ok());
            vod_of(track, written, aac)
        })
        .await
        .map_err(|_| unavailable("the recording could not be read"))?
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e))?;
        let vod = Arc::new(built);
        bounded_insert(
            &mut self.ended.lock().unwrap_or_else(|e| e.into_inner()),
            id,
            vod.clone(),
        );
        Ok(vod)
    }
}

fn build_part(
    track: &RecordedTrack,
    kind: Kind,
    aac: Option<AacLcConfig>,
    id: PartId,
) -> Result<Option<Bytes>, String> {
    let l = layout();
    match (kind, aac) {
        (Kind::Opus, _) => track.opus_part(&l, id).map_err(|e| e.to_string()),
        (Kind::Aac, Some(config)) => track.aac_part(&l, id, config).map_err(|e| e.to_string()),
        (Kind::Aac, None) => Ok(None),
    }
}

fn vod_of(
    track: Arc<RecordedTrack>,
    written: Option<Sidecar>,
    aac: Option<AacLcConfig>,
) -> Result<Vod, String> {
    let l = layout();
    let from_summaries = |config: AudioConfig, records: &[crate::live::hls::SummaryRecord]| {
        let mut index = RenditionIndex::new(l, config);
        index.seed(records.iter().map(|r| r.summary()));
        let _ = index.finish();
        index
    };
    let (opus, aac_index) = match written {
        Some(s) if !s.opus.is_empty() => (
            from_summaries(AudioConfig::PROGRAM_OPUS, &s.opus),
            aac.map(|c| from_summaries(AudioConfig::AacLc(c), &s.aac)),
        ),
        _ => {
            let mut opus = track.opus_index(l).map_err(|e| e.to_string())?;
            let _ = opus.finish();
            let aac_index = match aac {
                Some(c) => {
                    let mut index = track.aac_index(l, c).map_err(|e| e.to_string())?;
                    let _ = index.finish();
                    Some(index)
                }
                None => None,
            };
            (opus, aac_index)
        }
    };
    let opus_playlist = Bytes::from(tribune_media::hls::media_playlist(&opus));
    let aac_playlist = aac_index
        .as_ref()
        .map(|i| Bytes::from(tribune_media::hls::media_playlist(i)))
        .unwrap_or_default();
    Ok(Vod {
        track,
        opus,
        aac: aac_index,
        opus_playlist,
        aac_playlist,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_go_on_every_uri() {
        let playlist = b"#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXT-X-PART:DURATION=1.00000,URI=\"part1.0.m4s\",INDEPENDENT=YES\nseg0.m4s\nopus/media.m3u8\n";
        let out = with_token(playlist, "T");
        let text = std::str::from_utf8(&out).unwrap();
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4?token=T\"\n#EXT-X-PART:DURATION=1.00000,URI=\"part1.0.m4s?token=T\",INDEPENDENT=YES\nseg0.m4s?token=T\nopus/media.m3u8?token=T\n"
        );
    }
}
