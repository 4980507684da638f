//! Recent groups of the program track, kept so a relay (an edge pulling
//! the track) can start or resume at any seq the node still holds: no
//! duplicate and no gap after a dropped link, and a marked gap when the
//! missing seqs are gone.

use crate::track::Group;
use std::collections::VecDeque;
use std::sync::Arc;

/// Where a relay asking for a seq starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupAt {
    /// The group with this index holds the seq.
    Held(u64),
    /// Not produced yet: the next group to come is this one.
    Ahead(u64),
    /// No longer held: the oldest held group (index, first seq).
    Gone { oldest: u64, oldest_seq: u64 },
}

#[derive(Debug)]
pub struct History {
    groups: VecDeque<Arc<Group>>,
    max_samples: u64,
    held_samples: u64,
    /// Index of the next group to come.
    next: u64,
    /// Seq of the next packet to come.
    next_seq: u64,
}

impl History {
    /// Keeps about `max_samples` (48 kHz) of recent groups; the track goes
    /// on at group `next` and packet `next_seq`.
    pub fn new(max_samples: u64, next: u64, next_seq: u64) -> History {
        History {
            groups: VecDeque::new(),
            max_samples,
            held_samples: 0,
            next,
            next_seq,
        }
    }

    pub fn push(&mut self, g: Arc<Group>) {
        self.next = g.index + 1;
        self.next_seq = g.packets.last().map_or(self.next_seq, |p| p.seq + 1);
        self.held_samples += g.samples();
        self.groups.push_back(g);
        while self.held_samples > self.max_samples && self.groups.len() > 1 {
            if let Some(old) = self.groups.pop_front() {
                self.held_samples -= old.samples();
            }
        }
    }

    /// True while no group has come yet.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Index of the next group to come.
    pub fn next_group(&self) -> u64 {
        self.next
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Where `seq` is.
    pub fn find(&self, seq: u64) -> GroupAt {
        let Some(oldest) = self.groups.front() else {
            return GroupAt::Ahead(self.next);
        };
        let oldest_seq = oldest.first_seq().unwrap_or(0);
        if seq < oldest_seq {
            return GroupAt::Gone {
                oldest: oldest.index,
                oldest_seq,
            };
        }
        for g in &self.groups {
            if g.packets.last().is_some_and(|p| seq <= p.seq) {
                return GroupAt::Held(g.index);
            }
        }
        GroupAt::Ahead(self.next)
    }

    /// The held groups from index `from` on, oldest first.
    pub fn since(&self, from: u64) -> impl Iterator<Item = &Arc<Group>> {
        let skip = match self.groups.front() {
            Some(first) => from.saturating_sub(first.index) as usize,
            None => 0,
        };
        self.groups.iter().skip(skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::Track;
    use bytes::Bytes;

    fn history(groups: usize, max_samples: u64) -> History {
        let mut t = Track::new(4800);
        let mut h = History::new(max_samples, 0, 0);
        let mut made = 0;
        while made < groups {
            for g in t.push(Bytes::from_static(&[0xf8, 1]), 960, 0) {
                h.push(Arc::new(g));
                made += 1;
            }
        }
        h
    }

    #[test]
    fn a_seq_is_found_in_its_group_or_reported_gone_or_ahead() {
        // 20 groups of 5 packets (100 ms each); 1 s held: the last 10
        let h = history(20, 48_000);
        assert_eq!(h.next_group(), 20);
        assert_eq!(h.next_seq(), 100);
        assert_eq!(h.find(57), GroupAt::Held(11));
        assert_eq!(h.find(99), GroupAt::Held(19));
        assert_eq!(h.find(100), GroupAt::Ahead(20));
        assert_eq!(
            h.find(12),
            GroupAt::Gone {
                oldest: 10,
                oldest_seq: 50
            }
        );
        let from: Vec<u64> = h.since(17).map(|g| g.index).collect();
        assert_eq!(from, vec![17, 18, 19]);
        assert_eq!(h.since(25).count(), 0);
        assert_eq!(h.since(3).count(), 10, "older than held: all held");
    }

    #[test]
    fn an_empty_history_is_ahead() {
        let h = History::new(48_000, 7, 70);
        assert_eq!(h.find(70), GroupAt::Ahead(7));
        assert_eq!(h.since(0).count(), 0);
    }
}
