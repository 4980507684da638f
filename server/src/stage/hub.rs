//! The stage of a live space: who holds a microphone and the request
//! queue (`tribune_core::stage`), the one owner of every speaker session
//! (join and leave), and the mixer (`mixer.rs`) that turns their audio into
//! the program.

use super::events::{MixInput, PeerSink};
use super::mixer::{self, MixerIo};
use super::roster::Roster;
use super::rtc::{OfferError, RtcHub};
use crate::live::LiveSpace;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;
use tribune_core::stage::{Member, MutedBy, Stage, StageError, StageRole};

use tribune_media::demux::SourcePacket;

/// Why a speaker could not take the stage.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Offer(#[from] OfferError),
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error("the space is ending")]
    Ending,
    #[error("the mixer could not start: {0}")]
    Mixer(String),
}

/// A speaker on stage: the WHIP session and the SDP answer for it.
pub struct Joined {
    pub session: u64,
    pub answer: String,
}

pub struct StageHub {
    pub space: String,
    roster: Arc<Roster>,
    /// The mixer thread, started with the first speaker.
    mixer: Mutex<Option<Sender<MixInput>>>,
    /// The program the stage feeds.
    live: Arc<LiveSpace>,
    rtc: RtcHub,
    tracks_dir: PathBuf,
}

impl StageHub {
    pub fn new(live: Arc<LiveSpace>, rtc: RtcHub, data: &Path) -> Arc<StageHub> {
        Arc::new(StageHub {
            space: live.id.clone(),
            roster: Arc::new(Roster::default()),
            mixer: Mutex::new(None),
            tracks_dir: super::tracks::tracks_dir(data, &live.id),
            live,
            rtc,
        })
    }

    /// The host (`identity`) is shown as `name`, when one was given.
    pub fn name_host(&self, identity: &str, name: Option<&str>) {
        if let Some(name) = name {
            let _ = self.lock().name(identity, name);
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Stage> {
        self.roster.lock()
    }

    /// Pages re-read the stage when this changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.roster.subscribe()
    }

    /// The pages' snapshot (see [`Roster::snapshot`]).
    pub fn snapshot(&self, render: impl FnOnce() -> String) -> Arc<str> {
        self.roster.snapshot(render)
    }

    pub fn changed(&self) {
        self.roster.changed();
    }

    /// Puts `identity` on stage from a WHIP offer: the roster entry (a
    /// reload replaces its earlier session, keeping its mute), the mixer
    /// input, the peer on the UDP port. All or nothing.
    pub fn join(
        self: &Arc<Self>,
        offer: &str,
        identity: &str,
        role: StageRole,
    ) -> Result<Joined, JoinError> {
        let (rtc, audio, answer) = self.rtc.answer(offer)?;
        let session: u64 = rand::random::<u64>() >> 1;
        let (name, replaced, muted) = {
            let mut st = self.lock();
            let name = st.display_name(identity);
            let replaced = st.join(identity, &name, role, session)?;
            let muted = st.member(identity).is_some_and(|m| m.muted);
            (name, replaced, muted)
        };
        if let Some(old) = replaced {
            self.rtc.close(old);
        }
        let sink = match self.attach(session, identity, &name) {
            Ok(sink) => sink,
            Err(e) => {
                self.lock().leave(session);
                return Err(e);
            }
        };
        self.rtc.add(session, rtc, audio, sink);
        if muted {
            self.send(MixInput::Mute {
                session,
                muted: true,
            });
        }
        self.changed();
        Ok(Joined { session, answer })
    }

    /// The speaker of `session` leaves (WHIP DELETE). The member, if the
    /// session was still theirs.
    pub fn leave(&self, session: u64) -> Option<Member> {
        self.rtc.close(session);
        let left = self.lock().leave(session);
        self.changed();
        left
    }

    /// The host sends `identity` back to the audience.
    pub fn remove(&self, identity: &str) -> Result<Member, StageError> {
        let member = self.lock().remove(identity)?;
        self.rtc.close(member.session);
        self.changed();
        Ok(member)
    }

    /// Mutes or unmutes `identity` (`by` the host or themself).
    pub fn mute(&self, identity: &str, muted: bool, by: MutedBy) -> Result<(), StageError> {
        let session = self.lock().mute(identity, muted, by)?;
        self.send(MixInput::Mute { session, muted });
        self.changed();
        Ok(())
    }

    /// The mixer's input for a new peer, starting the mixer with the first.
    fn attach(
        self: &Arc<Self>,
        session: u64,
        identity: &str,
        name: &str,
    ) -> Result<PeerSink, JoinError> {
        let mut slot = self.mixer.lock().unwrap_or_else(|e| e.into_inner());
        if self.live.is_ending() {
            return Err(JoinError::Ending);
        }
        let tx = match slot.as_ref() {
            Some(tx) => tx.clone(),
            None => {
                let io = MixerIo {
                    space: self.space.clone(),
                    roster: self.roster.clone(),
                    live: self.live.clone(),
                    rtc: self.rtc.clone(),
                    tracks_dir: self.tracks_dir.clone(),
                };
                let tx = mixer::spawn(io).map_err(JoinError::Mixer)?;
                *slot = Some(tx.clone());
                tx
            }
        };
        let _ = tx.send(MixInput::Join {
            session,
            identity: identity.to_string(),
            name: name.to_string(),
        });
        Ok(tx)
    }

    /// Sends to the mixer, if it runs. A mixer that stopped (the space
    /// ends) is let go of, so nobody attaches to it.
    fn send(&self, input: MixInput) -> bool {
        let mut slot = self.mixer.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = slot.as_ref() else {
            return false;
        };
        if tx.send(input).is_ok() {
            return true;
        }
        *slot = None;
        false
    }

    /// While the stage mixes, the Icecast source is one more input of the
    /// mix; false when there is no mixer and the source feeds the program
    /// directly.
    pub fn feed_source(&self, packets: &[SourcePacket], now_ms: u64) -> bool {
        self.send(MixInput::Source {
            packets: packets.to_vec(),
            now_ms,
        })
    }

    pub fn source_gone(&self) {
        self.send(MixInput::SourceGone);
    }
}
