//! A Sillok storage node, and everything other parts need to talk to one.
//!
//! A node keeps two things on its local disk: shard files (one file per shard of
//! an object version, blocks with their blake3 hashes, fsynced before any ack)
//! and a redb metadata store of object manifests. It serves them over an
//! internal HTTP API that only answers requests signed with the cluster secret.
//!
//! - `api`: routes and wire types; `client`: the node's client, on the
//!   internal transport (`sillok_rpc`: signing, deadlines)
//! - `shard_store`, `meta_store`: the node's two stores; `server`: the HTTP service
//! - `report`: the node's periodic usage report to the catalog replicas
//! - the upkeep: `collector` (the one deleter), `anti_entropy`, `rebuild`,
//!   `scrub`; `background`: how they give way to client requests
//!
//! Run a node with [`serve`] (bind, serve until a shutdown future completes),
//! [`bind`] + [`BoundNode::run`] (learn the address of port 0 first), or
//! [`spawn`] (a background task with [`RunningNode::stop`]).
//!
//! The formats it stores (manifests, frames) are `sillok_model`'s.

pub mod anti_entropy;
pub mod api;
pub mod background;
pub mod client;
pub mod collector;
pub mod error;
pub mod meta_store;
pub mod metrics;
pub mod node_clock;
pub mod rebuild;
pub mod report;
pub mod scrub;
pub mod server;
pub mod shard_store;

pub use client::{NodeClient, Timeouts};
pub use error::NodeError;
pub use server::{BoundNode, NodeConfig, RunningNode, bind, serve, spawn};
