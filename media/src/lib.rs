//! Tribune media: everything that turns bytes into packets and packets into
//! bytes. Pure functions and sans-IO state machines, no sockets or clocks.

pub mod chunked;
pub mod demux;
pub mod hls;
pub mod http1;
pub mod mix;
pub mod ogg_page;
pub mod opus;
pub mod package;
pub mod program;
pub mod recording;
pub mod relay;
