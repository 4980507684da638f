//! A live space's HLS tier on this node: the Opus rendition fed every
//! closed group of the program (`space.rs` `emit`), the AAC rendition fed
//! by the origin's encoder thread (`aac.rs`) or by the relay from the
//! upstream, each rendition's rendered playlists and ETags, and a watch
//! that wakes blocking requests when a part is published.
//!
//! Every node names and builds the same parts the same way
//! (`tribune_media::hls`); this file only makes sure a node never
//! publishes a part it did not see from its start (an edge that joined
//! mid-part, an origin resumed mid-part after a restart), and that its
//! playlists list the segments before its own first one (seeded from the
//! upstream or the recording) before they are served.

use super::aac::{AacFeed, AacOutput};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::sync::watch;
use tribune_core::track::Group;
use tribune_media::hls::fmp4::AacLcConfig;
use tribune_media::hls::index::group_frames;
use tribune_media::hls::recorded::summaries;
use tribune_media::hls::{
    media_playlist, media_playlist_delta, multivariant_playlist, AudioConfig, Frame, HlsLayout,
    IndexError, LivePosition, PartId, RenditionIndex, SegmentSummary, Variant,
};

/// The Opus rendition's BANDWIDTH: the program is about 32 kbit/s
/// (sources may send more; players only use it to choose).
const OPUS_NOMINAL_BITRATE: u32 = 32_000;
/// AAC parts an upstream keeps for downstream nodes that reconnect.
const AAC_RELAY_HISTORY: usize = 60;

/// Which rendition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Opus,
    Aac,
}

impl Kind {
    pub fn from_dir(dir: &str) -> Option<Kind> {
        match dir {
            tribune_media::hls::layout::OPUS_DIR => Some(Kind::Opus),
            tribune_media::hls::layout::AAC_DIR => Some(Kind::Aac),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Opus => "opus",
            Kind::Aac => "aac",
        }
    }
}

/// A file with its strong validator.
#[derive(Clone, Debug)]
pub struct Tagged {
    pub bytes: Bytes,
    pub etag: Arc<str>,
}

impl Tagged {
    pub fn new(bytes: Bytes) -> Tagged {
        let etag = etag_of(&bytes).into();
        Tagged { bytes, etag }
    }
}

/// A strong ETag from the bytes alone, so every node gives the same one.
pub fn etag_of(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("\"{hex}\"")
}

pub struct Rendition {
    pub kind: Kind,
    pub config: AudioConfig,
    pub init: Tagged,
    state: RwLock<State>,
    /// Bumped on every publish (and when the history is complete):
    /// blocking requests wait on it.
    changed: watch::Sender<u64>,
    parts_metric: metrics::Counter,
}

pub struct State {
    pub index: RenditionIndex,
    /// The index has begun at a part this node saw from its start.
    started: bool,
    /// The previous frame's start (to find where a part begins).
    previous_start: Option<u64>,
    /// The segments before the index's own first are listed (seeded or
    /// none to seed): playlists are served only then.
    history_complete: bool,
    full: Bytes,
    delta: Bytes,
    part_tags: BTreeMap<PartId, Arc<str>>,
    /// AAC parts for downstream relays: (absolute part, part, frames).
    relay_parts: VecDeque<(u64, PartId, Arc<Vec<Frame>>)>,
}

impl State {
    /// Where the rendition stands for playlist requests: `None` until it
    /// has published and knows its history.
    pub fn playlist_position(&self) -> Option<LivePosition> {
        self.history_complete
            .then(|| self.index.position())
            .flatten()
    }

    /// Where it stands for part requests.
    pub fn position(&self) -> Option<LivePosition> {
        self.index.position()
    }

    pub fn playlist(&self, delta: bool) -> Bytes {
        if delta {
            self.delta.clone()
        } else {
            self.full.clone()
        }
    }

    pub fn part(&self, id: PartId) -> Option<Tagged> {
        let part = self.index.part(id)?;
        let etag = self.part_tags.get(&id).cloned()?;
        Some(Tagged {
            bytes: part.bytes.clone(),
            etag,
        })
    }

    /// The own first segment (seeding fills what is before it).
    pub fn own_first_msn(&self) -> Option<u64> {
        self.index
            .parts()
            .next()
            .map(|p| p.id.msn)
            .or(self.index.open_segment().map(|s| s.msn))
    }
}

impl Rendition {
    fn new(
        kind: Kind,
        config: AudioConfig,
        layout: HlsLayout,
        retained: usize,
        space: &str,
    ) -> Self {
        let index = RenditionIndex::new(layout, config).with_retention(retained);
        let init = Tagged::new(index.init_segment().unwrap_or_default());
        Rendition {
            kind,
            config,
            init,
            state: RwLock::new(State {
                index,
                started: false,
                previous_start: None,
                history_complete: false,
                full: Bytes::new(),
                delta: Bytes::new(),
                part_tags: BTreeMap::new(),
                relay_parts: VecDeque::new(),
            }),
            changed: watch::channel(0).0,
            parts_metric: metrics::counter!("tribune_hls_parts_total", "space" => space.to_string(), "rendition" => kind.label()),
        }
    }

    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn frame_samples(&self) -> u32 {
        self.config.frame_samples()
    }

    /// Every segment summary (for a downstream node seeding its own).
    pub fn summaries(&self) -> Vec<SegmentSummary> {
        summaries(&self.read().index)
    }

    /// Lists the segments before this node's first one.
    pub fn seed(&self, earlier: Vec<SegmentSummary>) {
        let mut state = self.write();
        let added = state.index.seed(earlier);
        state.history_complete = true;
        tracing::debug!(rendition = self.kind.label(), added, "HLS history seeded");
        self.render(&mut state);
        drop(state);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Frames in track order. `whole_parts`: the caller gives whole parts
    /// (AAC), so no alignment is needed.
    fn push(&self, frames: impl IntoIterator<Item = Frame>, whole_parts: bool) {
        let mut state = self.write();
        let mut published = Vec::new();
        for frame in frames {
            let layout = *state.index.layout();
            if !state.started {
                // start with a whole segment: its summary (start, length,
                // date) is then the one every other node lists
                let part = layout.part_at(frame.start_granule);
                let at_boundary = layout.segment_range(part.msn).start == frame.start_granule;
                let after_previous = state
                    .previous_start
                    .is_some_and(|prev| layout.part_at(prev).msn != part.msn);
                let whole_first_part = whole_parts && part.part == 0;
                state.previous_start = Some(frame.start_granule);
                if !(whole_first_part || at_boundary || after_previous) {
                    continue;
                }
                state.started = true;
                // a track seen from granule 0 has nothing before it to list
                if frame.start_granule == 0 {
                    state.history_complete = true;
                }
            }
            match state.index.push(frame) {
                Ok(Some(id)) => published.push(id),
                Ok(None) => {}
                Err(e) => {
                    self.restart(&mut state, &e);
                }
            }
        }
        if !published.is_empty() {
            self.after_publish(&mut state, &published);
        }
    }

    /// The track jumped (a gap upstream longer than its history): the
    /// index starts again at the next part it sees whole, and is seeded
    /// again.
    fn restart(&self, state: &mut State, error: &IndexError) {
        tracing::warn!(rendition = self.kind.label(), error = %error, "HLS rendition restarts");
        metrics::counter!("tribune_hls_restarts_total", "rendition" => self.kind.label())
            .increment(1);
        let layout = *state.index.layout();
        let earlier = summaries(&state.index);
        state.index = RenditionIndex::new(layout, self.config);
        state.index.seed(earlier);
        state.started = false;
        state.part_tags.clear();
    }

    fn after_publish(&self, state: &mut State, published: &[PartId]) {
        for id in published {
            if let Some(part) = state.index.part(*id) {
                let etag: Arc<str> = etag_of(&part.bytes).into();
                state.part_tags.insert(*id, etag);
            }
        }
        let oldest = state.index.parts().next().map(|p| p.id);
        if let Some(oldest) = oldest {
            state.part_tags.retain(|id, _| *id >= oldest);
        }
        self.parts_metric.increment(published.len() as u64);
        self.render(state);
        self.changed.send_modify(|n| *n += 1);
    }

    fn render(&self, state: &mut State) {
        state.full = Bytes::from(media_playlist(&state.index));
        state.delta = Bytes::from(media_playlist_delta(&state.index));
    }

    fn finish(&self) {
        let mut state = self.write();
        match state.index.finish() {
            Ok(published) => {
                let published: Vec<PartId> = published.into_iter().collect();
                self.after_publish(&mut state, &published);
            }
            Err(e) => tracing::warn!(rendition = self.kind.label(), error = %e, "HLS finish"),
        }
        // an ended playlist is served whatever its history (nothing more
        // comes to seed it from)
        state.history_complete = true;
        self.render(&mut state);
        drop(state);
        self.changed.send_modify(|n| *n += 1);
    }

    /// AAC parts held for downstream relays from absolute part `from`.
    pub fn relay_parts_since(&self, from: Option<u64>) -> Vec<(u64, PartId, Arc<Vec<Frame>>)> {
        let state = self.read();
        state
            .relay_parts
            .iter()
            .filter(|(abs, _, _)| from.is_none_or(|f| *abs >= f))
            .cloned()
            .collect()
    }
}

/// The space's HLS renditions on this node.
pub struct Hls {
    pub space: String,
    pub layout: HlsLayout,
    pub opus: Rendition,
    pub aac: Option<Rendition>,
    /// The origin's AAC encoder (edges get AAC from the relay).
    aac_feed: Option<AacFeed>,
    /// Where the origin writes the segment summaries when the space ends
    /// (the ended space's playlists keep the live dates).
    sidecar: Option<PathBuf>,
    master: Tagged,
    /// Set once every rendition has ended (and the origin's summaries are
    /// written).
    finished: watch::Sender<bool>,
}

/// What a node's HLS tier is made of.
pub struct HlsOptions {
    pub layout: HlsLayout,
    pub retained_segments: usize,
    /// The AAC rendition, if any.
    pub aac: Option<AacLcConfig>,
    /// Encode AAC here (the origin) rather than take it from the relay.
    pub encode_aac: bool,
    pub sidecar: Option<PathBuf>,
}

impl Hls {
    pub fn new(space: &str, options: HlsOptions) -> Arc<Hls> {
        let HlsOptions {
            layout,
            retained_segments,
            aac,
            encode_aac,
            sidecar,
        } = options;
        let opus = Rendition::new(
            Kind::Opus,
            AudioConfig::PROGRAM_OPUS,
            layout,
            retained_segments,
            space,
        );
        let aac_rendition = aac.map(|c| {
            Rendition::new(
                Kind::Aac,
                AudioConfig::AacLc(c),
                layout,
                retained_segments,
                space,
            )
        });
        let mut variants = vec![Variant::opus(OPUS_NOMINAL_BITRATE)];
        variants.extend(aac.map(Variant::aac));
        let master = Tagged::new(Bytes::from(multivariant_playlist(&variants)));
        Arc::new_cyclic(|me: &std::sync::Weak<Hls>| Hls {
            space: space.to_string(),
            layout,
            opus,
            aac_feed: match aac {
                Some(config) if encode_aac => {
                    let out: std::sync::Weak<dyn AacOutput> = me.clone();
                    Some(AacFeed::spawn(space, layout, config, out))
                }
                _ => None,
            },
            aac: aac_rendition,
            sidecar,
            master,
            finished: watch::channel(false).0,
        })
    }

    pub fn master(&self) -> &Tagged {
        &self.master
    }

    pub fn rendition(&self, kind: Kind) -> Option<&Rendition> {
        match kind {
            Kind::Opus => Some(&self.opus),
            Kind::Aac => self.aac.as_ref(),
        }
    }

    /// Closed groups of the program, in order.
    pub fn push_groups(&self, groups: &[Arc<Group>]) {
        if groups.is_empty() {
            return;
        }
        let frames: Vec<Frame> = groups.iter().flat_map(|g| group_frames(g)).collect();
        if let Some(feed) = &self.aac_feed {
            feed.push(frames.clone());
        }
        self.opus.push(frames, false);
        if groups.iter().any(|g| g.last) {
            self.finish();
        }
    }

    /// One AAC part (from this node's encoder, or relayed).
    pub fn push_aac_part(&self, part: PartId, frames: Vec<Frame>) {
        let Some(aac) = &self.aac else { return };
        let absolute = self.layout.absolute_part(part);
        let shared = Arc::new(frames);
        {
            let mut state = aac.write();
            state
                .relay_parts
                .push_back((absolute, part, shared.clone()));
            while state.relay_parts.len() > AAC_RELAY_HISTORY {
                state.relay_parts.pop_front();
            }
        }
        aac.push(shared.iter().cloned(), true);
    }

    /// The origin's AAC encoder has encoded the track's last part.
    pub fn aac_finished(&self) {
        if let Some(aac) = &self.aac {
            aac.finish();
        }
        self.write_sidecar();
    }

    /// The track ended: the last part is published, playlists become VOD
    /// (the AAC encoder finishes on its own, after its last part).
    pub fn finish(&self) {
        self.opus.finish();
        match &self.aac_feed {
            Some(feed) => feed.finish(),
            None => {
                if let Some(aac) = &self.aac {
                    aac.finish();
                }
                self.write_sidecar();
            }
        }
    }

    /// Waits (at most `limit`) until every rendition has ended: the
    /// origin's AAC encoder finishes after the track does.
    pub async fn wait_finished(&self, limit: std::time::Duration) {
        let mut finished = self.finished.subscribe();
        let _ = tokio::time::timeout(limit, finished.wait_for(|done| *done)).await;
    }

    fn write_sidecar(&self) {
        self.write_sidecar_file();
        self.finished.send_replace(true);
    }

    fn write_sidecar_file(&self) {
        let Some(path) = &self.sidecar else { return };
        let record = Sidecar {
            opus: self
                .opus
                .summaries()
                .iter()
                .map(SummaryRecord::from)
                .collect(),
            aac: self
                .aac
                .as_ref()
                .map(|a| a.summaries().iter().map(SummaryRecord::from).collect())
                .unwrap_or_default(),
        };
        let written = serde_json::to_vec(&record)
            .map_err(std::io::Error::other)
            .and_then(|json| std::fs::write(path, json));
        if let Err(e) = written {
            tracing::warn!(space = %self.space, error = %e, "HLS summaries not written; the replay's playlist dates will be derived from the recording");
        }
    }

    /// The first part this node published in each rendition that still
    /// needs its history seeded (edges, a resumed origin).
    pub fn needs_history(&self) -> bool {
        [Some(&self.opus), self.aac.as_ref()]
            .into_iter()
            .flatten()
            .any(|r| {
                let state = r.read();
                !state.history_complete && state.own_first_msn().is_some()
            })
    }
}

impl Drop for Hls {
    fn drop(&mut self) {
        if let Some(feed) = &self.aac_feed {
            feed.stop();
        }
    }
}

/// The segment summaries an ended space's playlists are made of, as the
/// origin's live index had them.
#[derive(serde::Serialize, serde::Deserialize, Default)]
pub struct Sidecar {
    pub opus: Vec<SummaryRecord>,
    pub aac: Vec<SummaryRecord>,
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Copy)]
pub struct SummaryRecord {
    pub msn: u64,
    pub start: u64,
    pub end: u64,
    pub ingest_ms: u64,
    pub first_part: u32,
    pub parts: u32,
}

impl From<&SegmentSummary> for SummaryRecord {
    fn from(s: &SegmentSummary) -> Self {
        SummaryRecord {
            msn: s.msn,
            start: s.start_granule,
            end: s.end_granule,
            ingest_ms: s.first_ingest_ms,
            first_part: s.first_part.part,
            parts: s.parts,
        }
    }
}

impl SummaryRecord {
    pub fn summary(self) -> SegmentSummary {
        SegmentSummary {
            msn: self.msn,
            start_granule: self.start,
            end_granule: self.end,
            first_ingest_ms: self.ingest_ms,
            first_part: PartId {
                msn: self.msn,
                part: self.first_part,
            },
            parts: self.parts,
        }
    }
}

impl AacOutput for Hls {
    fn push_aac_part(&self, part: PartId, frames: Vec<Frame>) {
        Hls::push_aac_part(self, part, frames);
    }

    fn aac_finished(&self) {
        Hls::aac_finished(self);
    }
}

/// Seeds each rendition's history once it has published its first part
/// (a resumed origin from its recording, an edge from its upstream),
/// trying `fetch` again on failure; after ten failures the playlists are
/// served with what this node has (and the failure is logged).
pub async fn seed_history<F, Fut>(hls: std::sync::Weak<Hls>, fetch: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Sidecar, String>>,
{
    let Some(mut changes) = hls.upgrade().map(|h| h.opus.subscribe()) else {
        return;
    };
    let mut failures = 0;
    loop {
        // a publish, or a second (the AAC rendition has its own watch)
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), changes.changed()).await;
        let Some(hls) = hls.upgrade() else { return };
        let renditions: Vec<&Rendition> = [Some(&hls.opus), hls.aac.as_ref()]
            .into_iter()
            .flatten()
            .collect();
        let waiting: Vec<&Rendition> = renditions
            .iter()
            .copied()
            .filter(|r| {
                let state = r.read();
                !state.history_complete && state.own_first_msn().is_some()
            })
            .collect();
        if renditions.iter().all(|r| r.read().history_complete) {
            return;
        }
        if waiting.is_empty() {
            continue;
        }
        match fetch().await {
            Ok(sidecar) => {
                for r in waiting {
                    let records = match r.kind {
                        Kind::Opus => &sidecar.opus,
                        Kind::Aac => &sidecar.aac,
                    };
                    r.seed(records.iter().map(|s| s.summary()).collect());
                }
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(space = %hls.space, error = %e, failures, "HLS history not seeded yet");
                if failures >= 10 {
                    for r in waiting {
                        r.seed(Vec::new());
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
}

/// A resumed origin's history: the summaries a rebuild from its recording
/// gives.
pub fn from_recording(
    path: PathBuf,
    aac: Option<AacLcConfig>,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Sidecar, String>> + Send>>
{
    move || {
        let path = path.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let data = std::fs::read(&path).map_err(|e| e.to_string())?;
                let track = tribune_media::hls::recorded::RecordedTrack::parse(Bytes::from(data));
                let layout = HlsLayout::DEFAULT;
                let opus = track.opus_index(layout).map_err(|e| e.to_string())?;
                let aac = match aac {
                    Some(config) => {
                        summaries(&track.aac_index(layout, config).map_err(|e| e.to_string())?)
                    }
                    None => Vec::new(),
                };
                Ok(Sidecar {
                    opus: summaries(&opus).iter().map(SummaryRecord::from).collect(),
                    aac: aac.iter().map(SummaryRecord::from).collect(),
                })
            })
            .await
            .map_err(|e| e.to_string())?
        })
    }
}

/// Where the sidecar of a space's recording lives.
pub fn sidecar_path(data: &std::path::Path, space_id: &str) -> PathBuf {
    data.join("recordings").join(format!("{space_id}.hls.json"))
}
