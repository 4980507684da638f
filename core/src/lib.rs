//! Tribune's sans-IO core.
//!
//! Everything here is plain data and state machines: no sockets, no clocks.
//! Time enters as `now_ms` arguments, so every behaviour is tested
//! deterministically by the unit tests beside each module.

pub mod admission;
pub mod fanout;
pub mod history;
pub mod jitter;
pub mod listener;
pub mod pace;
pub mod space;
pub mod stage;
pub mod token;
pub mod track;

/// Opus always runs at 48 kHz for granule positions (RFC 7845).
pub const SAMPLE_RATE: u64 = 48_000;

/// Converts 48 kHz samples to milliseconds.
pub fn samples_to_ms(samples: u64) -> u64 {
    samples * 1000 / SAMPLE_RATE
}
