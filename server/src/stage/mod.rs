//! Everything that feeds a space's program: speakers over WebRTC (`rtc.rs`,
//! one UDP port for all), their sessions and the roster (`hub.rs`), the
//! mixer (`mixer.rs`), their own recorded tracks (`tracks.rs`), and
//! Icecast sources (`ingest.rs`).

pub mod events;
pub mod hub;
pub mod ingest;
mod mixer;
pub mod roster;
pub mod rtc;
pub mod tracks;

pub use hub::{JoinError, Joined, StageHub};
pub use rtc::RtcHub;

use crate::live::LiveSpace;
use std::sync::Arc;

/// A live space on this node: its program, and the stage feeding it (on
/// the origin; an edge relays the program and has no stage).
#[derive(Clone)]
pub struct OnAir {
    pub space: Arc<LiveSpace>,
    pub stage: Option<Arc<StageHub>>,
}
