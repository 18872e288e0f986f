//! The Sillok S3 gateway.
//!
//! It speaks S3 through `s3s` (which parses requests and verifies SigV4) and
//! turns each operation into calls on storage nodes:
//!
//! - `auth`: access keys for SigV4 (checked by s3s) and their permissions;
//! - `body`: request-body adapters applied before s3s (form uploads);
//! - `catalog`: the gateway's copy of the catalog (buckets, keys, map),
//!   followed from the Raft catalog and saved on disk;
//! - `cors`: CORS preflights and the CORS headers on responses;
//! - `cluster`: the gateway's view of the cluster: the placement map, node
//!   addresses, which nodes are suspect right now, and the node client;
//! - `fanout`: calls to many nodes at once: deadlines, suspicion, "need N
//!   spanning S sites", the rest in the background, the stale-epoch retry;
//! - `quorum`: manifests written to and read from a majority of a PG's replicas;
//! - `write`: the PUT path: stream → stripes → MD5 + RS encode + blake3 → k+m
//!   nodes in parallel, acknowledged only when the durability rule holds;
//! - `read`: the GET path: data shards first, parity and reconstruction when a
//!   shard is missing, slow, unreachable or corrupt;
//! - `checksum`: S3's additional checksums (CRC32/CRC32C/CRC64NVME/SHA1/SHA256);
//! - `multipart`: multipart uploads: records, parts, completion, the sweeper;
//! - `lifecycle`: the expirer that carries out buckets' lifecycle rules
//!   (deletes through `versions`, aborts through `multipart`);
//! - `listing`: keys merged from every node's manifest store;
//! - `s3`: the `s3s::S3` implementation: the edge where errors become S3 errors;
//! - `versions`: deleting a key's current object (and object versions);
//! - `server`: the HTTP listener, limits, request ids, health and metrics;
//! - `vhost`: path-style and virtual-host-style addressing.

pub mod auth;
pub mod body;
pub mod catalog;
pub mod catalog_copy;
pub mod checksum;
pub mod cluster;
pub mod cors;
pub mod error;
pub mod fanout;
pub mod form;
pub mod hedge;
pub mod lifecycle;
pub mod limits;
pub mod listing;
pub mod metrics;
pub mod multipart;
pub mod quorum;
pub mod read;
pub mod s3;
pub mod server;
pub mod versions;
pub mod vhost;
pub mod write;

pub use server::{GatewayConfig, serve};
