//! Space lifecycle: scheduled → live → ended. Ended is final.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpaceState {
    Scheduled,
    Live,
    Ended,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Start,
    End,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot {action} a space that is {state}")]
pub struct TransitionError {
    pub state: SpaceState,
    pub action: &'static str,
}

impl SpaceState {
    /// The state after `transition`, or why it is not allowed.
    /// Ending a scheduled space cancels it; nothing leaves `Ended`.
    pub fn apply(self, transition: Transition) -> Result<SpaceState, TransitionError> {
        use SpaceState::*;
        match (self, transition) {
            (Scheduled, Transition::Start) => Ok(Live),
            (Scheduled | Live, Transition::End) => Ok(Ended),
            (state, t) => Err(TransitionError {
                state,
                action: match t {
                    Transition::Start => "start",
                    Transition::End => "end",
                },
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SpaceState::Scheduled => "scheduled",
            SpaceState::Live => "live",
            SpaceState::Ended => "ended",
        }
    }
}

impl fmt::Display for SpaceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SpaceState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "scheduled" => Ok(SpaceState::Scheduled),
            "live" => Ok(SpaceState::Live),
            "ended" => Ok(SpaceState::Ended),
            other => Err(format!("unknown space state {other:?}")),
        }
    }
}

/// Space ids travel in URLs: short, lowercase alphanumerics and dashes.
pub fn valid_space_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The Ogg stream serial of a space's program track: fixed per space so
/// every node packages byte-identical pages (FNV-1a of the id).
pub fn stream_serial(space_id: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in space_id.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_moves_forward_only() {
        use SpaceState::*;
        assert_eq!(Scheduled.apply(Transition::Start), Ok(Live));
        assert_eq!(Live.apply(Transition::End), Ok(Ended));
        assert_eq!(Scheduled.apply(Transition::End), Ok(Ended));
        let err = Live.apply(Transition::Start).unwrap_err();
        assert_eq!(err.to_string(), "cannot start a space that is live");
        assert!(Ended.apply(Transition::Start).is_err());
        assert!(Ended.apply(Transition::End).is_err());
    }

    #[test]
    fn ids_and_serials() {
        assert!(valid_space_id("abc-123"));
        assert!(!valid_space_id(""));
        assert!(!valid_space_id("../etc"));
        assert!(!valid_space_id("ABC"));
        assert_eq!(stream_serial("abc"), stream_serial("abc"));
        assert_ne!(stream_serial("abc"), stream_serial("abd"));
        assert_eq!("live".parse::<SpaceState>(), Ok(SpaceState::Live));
    }
}
