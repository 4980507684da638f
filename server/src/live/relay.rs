//! The relay out: a live space's track for a downstream node (an edge, or
//! an edge of an edge), as a stream of `tribune_media::relay` frames: the
//! epoch, then each group as it closes, resuming at any seq the history
//! still holds (a marked gap past that), keepalives while nothing happens,
//! and the end. A downstream that asks also gets the AAC rendition's parts
//! (`media::relay::AAC_REQUEST_HEADER`), and then the end only once the
//! last AAC part went.

use super::space::LiveSpace;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tribune_core::history::GroupAt;
use tribune_media::relay::{encode, Frame};

/// How often an idle link says it is alive.
const KEEPALIVE: Duration = Duration::from_secs(2);

pub struct RelayOut {
    live: Arc<LiveSpace>,
    /// `None`: from the first group this node gets (it had none yet).
    next_group: Option<u64>,
    /// The seq the downstream expects next.
    next_seq: u64,
    /// Set when a downstream resumes on a node that held nothing yet (an
    /// edge just restarted): the groups this node gets first may be older
    /// than what the downstream has, so they are skipped up to this seq.
    resume_at: Option<u64>,
    epoch_sent: Option<u64>,
    groups: watch::Receiver<u64>,
    epoch: watch::Receiver<Option<u64>>,
    ending: watch::Receiver<bool>,
    done: bool,
    /// The track's end was reached (the end frame may wait for AAC).
    track_done: bool,
    /// AAC parts, when the downstream asked for them.
    aac: Option<AacOut>,
}

struct AacOut {
    /// The absolute index of the next AAC part to send (`None`: every
    /// part still held).
    next: Option<u64>,
    changes: watch::Receiver<u64>,
}

/// What a downstream asks of the AAC rendition: nothing, every part held,
/// or from an absolute part on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AacRequest {
    None,
    Held,
    From(u64),
}

impl AacRequest {
    /// The request header's value (absent: no AAC).
    pub fn parse(value: Option<&str>) -> AacRequest {
        match value.map(str::trim) {
            None => AacRequest::None,
            Some(v) => v.parse().map_or(AacRequest::Held, AacRequest::From),
        }
    }
}

impl RelayOut {
    /// A relay of `live` from packet `from` (the downstream's next seq), or
    /// from the oldest group held when it has none yet. The first frames
    /// say where it starts: a `Gap` when `from` is no longer held.
    pub fn new(live: Arc<LiveSpace>, from: Option<u64>, aac: AacRequest) -> (RelayOut, BytesMut) {
        let mut first = BytesMut::new();
        let (next_group, next_seq, resume_at) = {
            let history = live.history();
            match from.map(|seq| (seq, history.find(seq))) {
                // everything held; a node that holds nothing yet starts
                // with the first group it gets
                None => history
                    .since(0)
                    .next()
                    .map_or((None, history.next_seq(), None), |g| {
                        (Some(g.index), g.first_seq().unwrap_or(0), None)
                    }),
                Some((seq, GroupAt::Ahead(_))) if history.is_empty() => (None, seq, Some(seq)),
                Some((seq, GroupAt::Held(g) | GroupAt::Ahead(g))) => (Some(g), seq, None),
                Some((seq, GroupAt::Gone { oldest, oldest_seq })) => {
                    encode(
                        &Frame::Gap {
                            from_seq: seq,
                            to_seq: oldest_seq,
                        },
                        &mut first,
                    );
                    (Some(oldest), oldest_seq, None)
                }
            }
        };
        let aac = match aac {
            AacRequest::None => None,
            AacRequest::Held => Some(None),
            AacRequest::From(part) => Some(Some(part)),
        }
        .and_then(|next| {
            let hls = live.hls()?;
            let changes = hls.aac.as_ref()?.subscribe();
            Some(AacOut { next, changes })
        });
        let relay = RelayOut {
            groups: live.subscribe_groups(),
            epoch: live.subscribe_epoch(),
            ending: live.subscribe_ending(),
            live,
            next_group,
            next_seq,
            resume_at,
            epoch_sent: None,
            done: false,
            track_done: false,
            aac,
        };
        (relay, first)
    }

    /// What is new since the last call, waiting for it (at most a keepalive
    /// interval). `None` once the end was sent.
    pub async fn next_bytes(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        loop {
            let mut out = BytesMut::new();
            self.collect(&mut out);
            if !out.is_empty() || self.done {
                return Some(out.freeze());
            }
            tokio::select! {
                _ = self.groups.changed() => {}
                _ = self.epoch.changed() => {}
                _ = self.ending.changed() => {}
                _ = aac_changed(&mut self.aac) => {}
                _ = tokio::time::sleep(KEEPALIVE) => {
                    encode(&Frame::Keepalive, &mut out);
                    return Some(out.freeze());
                }
            }
        }
    }

    fn collect(&mut self, out: &mut BytesMut) {
        let epoch = *self.epoch.borrow_and_update();
        if epoch.is_some() && epoch != self.epoch_sent {
            if let Some(epoch_ms) = epoch {
                encode(
                    &Frame::Epoch {
                        epoch_ms,
                        title: self.live.title().to_string(),
                    },
                    out,
                );
            }
            self.epoch_sent = epoch;
        }
        self.groups.borrow_and_update();
        let mut ended = false;
        {
            let history = self.live.history();
            let mut groups = history.since(self.next_group.unwrap_or(0)).peekable();
            let missed_from = match self.resume_at {
                // what the downstream has already is skipped; a gap only if
                // the first group left starts past the seq it needs
                Some(seq) if self.next_group.is_none() => {
                    while groups
                        .next_if(|g| g.packets.last().is_some_and(|p| p.seq < seq))
                        .is_some()
                    {}
                    groups.peek().is_some_and(|g| g.first_seq() > Some(seq))
                }
                // a downstream too slow for the history: what it missed is a gap
                _ => groups
                    .peek()
                    .is_some_and(|g| self.next_group.is_some_and(|next| g.index > next)),
            };
            if let Some(first_seq) = groups
                .peek()
                .filter(|_| missed_from)
                .and_then(|g| g.first_seq())
            {
                encode(
                    &Frame::Gap {
                        from_seq: self.next_seq,
                        to_seq: first_seq.max(self.next_seq),
                    },
                    out,
                );
            }
            for g in groups {
                encode(&Frame::Group((**g).clone()), out);
                self.next_group = Some(g.index + 1);
                self.next_seq = g.packets.last().map_or(self.next_seq, |p| p.seq + 1);
                ended |= g.last;
            }
        }
        self.track_done |= ended || (*self.ending.borrow() && self.live.audience.ring().ended());
        let aac_done = self.collect_aac(out);
        if self.track_done && aac_done {
            encode(&Frame::End, out);
            self.done = true;
        }
    }

    /// AAC parts not sent yet; true when the rendition has ended and all
    /// of it went (or no AAC was asked for).
    fn collect_aac(&mut self, out: &mut BytesMut) -> bool {
        let Some(aac) = &mut self.aac else {
            return true;
        };
        let Some(hls) = self.live.hls() else {
            return true;
        };
        let Some(rendition) = hls.aac.as_ref() else {
            return true;
        };
        aac.changes.borrow_and_update();
        for (absolute, part, frames) in rendition.relay_parts_since(aac.next) {
            encode(
                &Frame::AacPart {
                    part,
                    frames: frames.to_vec(),
                },
                out,
            );
            aac.next = Some(absolute + 1);
        }
        let ended = rendition.read().index.ended();
        ended
    }
}

async fn aac_changed(aac: &mut Option<AacOut>) {
    match aac {
        Some(aac) => {
            if aac.changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}
