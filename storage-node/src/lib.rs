//! A Sillok storage node, and everything other parts need to talk to one.
//!
//! A node keeps two things on its local disk: shard files (one file per shard of
//! an object version, blocks with their blake3 hashes, fsynced before any ack)
//! and a redb metadata store of object manifests. It serves them over an
//! internal HTTP API that only answers requests signed with the cluster secret.
//!
//! - `codec`: the erasure codec (k data + m parity blocks per stripe)
//! - `frame`: how a block and its hash travel and sit on disk
//! - `manifest`: object metadata, versions, tombstones
//! - `api`: routes and wire types; `client`: the signed, deadline-bound client
//! - `auth`: signing and verifying internal requests (aws-sigv4)
//! - `shard_store`, `meta_store`: the node's two stores; `server`: the HTTP service
//! - `report`: the node's periodic usage report to the catalog replicas
//!
//! Run a node with [`serve`] (bind, serve until a shutdown future completes),
//! [`bind`] + [`BoundNode::run`] (learn the address of port 0 first), or
//! [`spawn`] (a background task with [`RunningNode::stop`]).

pub mod api;
/// Signing and verifying internal requests: lives in the placement crate (the
/// catalog replicas use it too) and is re-exported here unchanged.
pub use sillok_placement::auth;
pub mod client;
pub mod codec;
pub mod error;
pub mod frame;
pub mod manifest;
pub mod meta_store;
pub mod report;
pub mod server;
pub mod shard_store;

pub use client::{NodeClient, Timeouts};
pub use error::NodeError;
pub use server::{BoundNode, NodeConfig, RunningNode, bind, serve, spawn};
