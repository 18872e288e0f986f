//! What the gateway, the storage nodes and the repair engine share about
//! objects:
//!
//! - `clock`: the process's hybrid logical clock, where versions come from;
//! - `manifest`: an object's metadata (size, ETag, headers, where each shard
//!   is), its [`manifest::Version`], tombstones, multipart records;
//! - `codec`: the erasure codec (k data + m parity blocks per stripe), the
//!   only place that knows Reed-Solomon;
//! - `frame`: how a block and its blake3 hash travel and sit on disk;
//! - `placement`: the hash that places a manifest and its shards, carried
//!   in every object id.
//!
//! What it may not do: any I/O. These are formats and pure functions; the
//! crates above decide where the bytes go.

pub mod clock;
pub mod codec;
pub mod frame;
pub mod manifest;
pub mod placement;
