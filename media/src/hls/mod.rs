//! The HLS tier's pure half: CMAF fMP4 (Opus and AAC-LC), the part and
//! segment grid and its names, each rendition's index of published parts,
//! playlist text, and the live-edge decisions for blocking requests. No
//! sockets, no clocks: every output is a function of the program track,
//! so every node serves the same bytes under the same names.
//! docs/HLS.md has the design notes.

pub mod aac;
pub mod fmp4;
pub mod index;
pub mod layout;
pub mod playlist;
pub mod recorded;
pub mod reload;

pub use fmp4::{AacLcConfig, AudioConfig, Fmp4Error, Sample};
pub use index::{Frame, IndexError, LivePosition, PublishedPart, RenditionIndex, SegmentSummary};
pub use layout::{HlsLayout, HlsResource, LayoutError, PartId};
pub use playlist::{media_playlist, media_playlist_delta, multivariant_playlist, Variant};
pub use reload::{
    skip_requested, BlockingRequest, DirectiveError, ReloadDecision, ResourceDecision,
};
