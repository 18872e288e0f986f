//! The placement map of a Sillok cluster.
//!
//! This crate owns *where data lives*: the failure domains (sites), the storage
//! nodes inside them, the erasure-coding profile, the placement groups (PGs) an
//! object hashes into, and the per-PG table of the k+m nodes that hold its shards.
//! The map itself (`map`, `topology`, `profile`, `assign`) is pure data and
//! pure functions: no I/O, no clocks, no network, so every other crate (and
//! the Raft catalog that replicates it) can rely on two processes computing
//! the same answer from the same map.
//!
//! `delta` tells a map change as the rows it changed ([`MapDelta`]), for
//! followers of the catalog. `cluster_file` is the file a cluster starts from. What this crate may not
//! do: touch the network, spawn tasks or depend on any other Sillok crate.
//! The replicated catalog that holds the map lives in `sillok-catalog`.
//!
//! Invariants (checked by [`PlacementMap::validate`] and by the property tests):
//! - every PG has exactly k+m slots, on k+m distinct nodes that are in service;
//! - no site holds more than m slots of one PG, so losing any one site leaves at
//!   least k shards of every stripe;
//! - the epoch only grows: every change to the map produces a new, larger epoch.

pub mod assign;
pub mod cluster_file;
pub mod delta;
pub mod error;
pub mod map;
pub mod profile;
pub mod topology;

pub use cluster_file::{AccessKey, CatalogReplica, ClusterFile};
pub use delta::{DeltaError, MapDelta, TopologyChange};
pub use error::PlacementError;
pub use map::{MAX_PG_COUNT, PgFunction, PgId, PlacementMap, key_hash, pg_of};
pub use profile::EcProfile;
pub use topology::{Node, NodeId, NodeState, Site, SiteId, Topology};
