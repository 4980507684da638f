//! The relay out: a live space's track for a downstream node (an edge, or
//! an edge of an edge), as a stream of `tribune_media::relay` frames: the
//! epoch, then each group as it closes, resuming at any seq the history
//! still holds (a marked gap past that), keepalives while nothing happens,
//! and the end.

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
    epoch_sent: Option<u64>,
    groups: watch::Receiver<u64>,
    epoch: watch::Receiver<Option<u64>>,
    ending: watch::Receiver<bool>,
    done: bool,
}

impl RelayOut {
    /// A relay of `live` from packet `from` (the downstream's next seq), or
    /// from the oldest group held when it has none yet. The first frames
    /// say where it starts: a `Gap` when `from` is no longer held.
    pub fn new(live: Arc<LiveSpace>, from: Option<u64>) -> (RelayOut, BytesMut) {
        let mut first = BytesMut::new();
        let (next_group, next_seq) = {
            let history = live.history();
            match from.map(|seq| (seq, history.find(seq))) {
                // everything held; a node that holds nothing yet starts
                // with the first group it gets
                None => history
                    .since(0)
                    .next()
                    .map_or((None, history.next_seq()), |g| {
                        (Some(g.index), g.first_seq().unwrap_or(0))
                    }),
                Some((seq, GroupAt::Held(g) | GroupAt::Ahead(g))) => (Some(g), seq),
                Some((seq, GroupAt::Gone { oldest, oldest_seq })) => {
                    encode(
                        &Frame::Gap {
                            from_seq: seq,
                            to_seq: oldest_seq,
                        },
                        &mut first,
                    );
                    (Some(oldest), oldest_seq)
                }
            }
        };
        let relay = RelayOut {
            groups: live.subscribe_groups(),
            epoch: live.subscribe_epoch(),
            ending: live.subscribe_ending(),
            live,
            next_group,
            next_seq,
            epoch_sent: None,
            done: false,
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
            // a downstream too slow for the history: what it missed is a gap
            if let Some(first_seq) = groups
                .peek()
                .filter(|g| self.next_group.is_some_and(|next| g.index > next))
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
        if ended || (*self.ending.borrow() && self.live.audience.ring().ended()) {
            encode(&Frame::End, out);
            self.done = true;
        }
    }
}
