//! The replicated catalog: the placement map, the buckets and the access keys,
//! held by Raft replicas (openraft), one voter per site.
//!
//! Owns: the Raft type configuration, and the parts of a catalog replica:
//! - `state`: the catalog's contents, its commands and their deterministic,
//!   validated application (pure: no I/O);
//! - `store`: the redb-backed Raft log store and state machine (with
//!   snapshots), `raft-log.redb` and `catalog.redb` in the replica's directory;
//! - `raft_network`: openraft's network between replicas, over the internal
//!   transport (`sillok_rpc`);
//! - `cors`: a bucket's CORS configuration, S3's rules for it, and which
//!   rule a request matches (pure);
//! - `lifecycle`: a bucket's lifecycle configuration, S3's rules for it,
//!   and when a rule expires an object or aborts an upload (pure);
//! - `changes`: the change log every replica keeps in memory for followers
//!   (what each applied entry changed in the view they see);
//! - `api`: the wire types of the catalog's HTTP API (routes listed there);
//! - `server`: a running replica: its Raft instance, the HTTP service, the
//!   forwarding of writes to the leader, the one-time seeding from the
//!   cluster file;
//! - `repair`: the cluster's repair state (PG states, work left, ETA) from
//!   the nodes' reports, for status, metrics pages and the drill;
//! - `rebalance`: plans of staged capacity changes, and the leader's
//!   dropping of earlier rows once their data has moved;
//! - `ops`: a replica's metrics page and readiness, for its ops listener
//!   (`--ops-listen`) and the `/metrics` route;
//! - `detector`: the leader's failure detector, which marks silent nodes
//!   `down` and then `out`;
//! - `client`: [`CatalogClient`], which finds the leader among the replicas;
//! - `follower`: [`follower::MapFollower`], which storage nodes use to track
//!   the map through the change log (its map changes only), keeping the last
//!   map seen on disk by rows (`map_rows`) and never going back; gateways
//!   follow the whole change log the same way.
//! - `map_rows`: a map kept in a redb file by rows, written a delta at a time.
//!
//! Invariants:
//! - Every change to the catalog goes through the Raft log as a [`Proposal`]
//!   and is applied by [`state::Catalog::apply`] on every replica in log
//!   order; nothing else writes the state machine (apart from installing a
//!   snapshot, which replaces it whole).
//! - A proposal carries a request id; a replica that applies a request id it
//!   has already applied returns the first reply and changes nothing, so a
//!   client may retry an unanswered proposal on another replica.
//! - Nothing on a replica's port answers a request that is not SigV4-signed
//!   with the cluster secret or an enabled admin key (`sillok_rpc::auth`).
//! - Secrets are never logged and never appear in status output.

// openraft's `StorageError` and `RaftError` are large by design (they carry
// the log id and the failed operation); every store and Raft call returns
// them, and boxing each at the call site would only hide where they come from.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod changes;
pub mod client;
pub mod cors;
pub mod detector;
pub mod follower;
pub mod lifecycle;
pub mod map_rows;
pub mod ops;
pub mod raft_network;
pub mod rebalance;
pub mod repair;
pub mod server;
pub mod state;
pub mod store;

use serde::{Deserialize, Serialize};

pub use client::{CatalogClient, ClientError, ClientTimeouts};
pub use server::{RaftTimings, Replica, ReplicaConfig};
pub use sillok_placement::{AccessKey, ClusterFile};
pub use state::{Bucket, Catalog, CatalogError, Command, KeyInfo, KeyRecord, Outcome, Permission};

/// How a replica is reached, as Raft's membership records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaNode {
    /// `host:port` of the replica's HTTP service (Raft and the catalog API).
    pub addr: String,
    /// The site the replica runs in.
    pub site: String,
}

impl std::fmt::Display for ReplicaNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.addr, self.site)
    }
}

/// One entry of the Raft log: a command and the id that makes retries safe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub request_id: String,
    pub command: Command,
}

/// What applying a proposal returned.
pub type Reply = Result<Outcome, CatalogError>;

openraft::declare_raft_types!(
    /// The catalog's Raft types.
    pub TypeConfig:
        D = Proposal,
        R = Reply,
        NodeId = u64,
        Node = ReplicaNode,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<u64, ReplicaNode>;
pub type StorageError = openraft::StorageError<u64>;
