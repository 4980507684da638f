//! A live space's program on this node and everything that reads it: what
//! its listeners share (`audience.rs`), each listener's place
//! (`guard.rs`), the response and hand-off (`listen.rs`), the fan-out
//! shards (`shard.rs`), and the recorder.

pub mod audience;
pub mod guard;
pub mod listen;
pub mod recorder;
pub mod relay;
pub mod shard;
pub mod space;

pub use guard::ListenerGuard;
pub use space::{LiveSpace, SourceSlot};
