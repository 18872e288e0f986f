//! Deleting and (with bucket versioning) keeping the versions of an object.
//!
//! Owns: [`delete_current`], the one function every delete of a key's
//! current object goes through (DeleteObject without a version id,
//! DeleteObjects, and background expiry), so that what a delete means in a
//! bucket is decided in one place.

use std::sync::Arc;

use sillok_model::manifest::Manifest;

use crate::cluster::Cluster;
use crate::error::GatewayError;
use crate::quorum;

/// What a delete of a key's current object did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deleted {
    /// The key had a live object that the delete hid.
    pub existed: bool,
}

/// Deletes the current object of `bucket/key` (a tombstone supersedes every
/// older version); deleting a missing key is not an error. Returns only once
/// the tombstone is the winning version on a quorum
/// (`quorum::write_manifest`). The old version's shards are the collector's
/// once no manifest replica refers to them: nothing here deletes a shard.
pub async fn delete_current(cluster: &Arc<Cluster>, bucket: &str, key: &str) -> Result<Deleted, GatewayError> {
    let previous = quorum::read_manifest(cluster, bucket, key).await?;
    let existed = previous.is_some_and(|m| !m.is_deleted());
    if existed {
        let tomb = Manifest::tombstone(bucket, key);
        quorum::write_manifest(cluster, &tomb).await?;
    }
    Ok(Deleted { existed })
}
