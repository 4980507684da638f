//! A live space's program on this node and everything that reads it: what
//! its listeners share (`audience.rs`), each listener's place
//! (`guard.rs`), the response and hand-off (`listen.rs`), the fan-out
//! shards (`shard.rs`), the recorder, and the HLS tier (`hls.rs`, with
//! the origin's AAC encoder in `aac.rs`).

pub mod aac;
pub mod audience;
pub mod guard;
pub mod hls;
pub mod listen;
pub mod recorder;
pub mod relay;
pub mod shard;
pub mod space;

pub use guard::ListenerGuard;
pub use space::{LiveSpace, SourceSlot};
