//! Buckets, kept as records in a reserved namespace of the manifest stores.
//!
//! Until the Raft catalog lands, a bucket is a manifest with bucket name
//! [`SYSTEM_BUCKETS`] (not a valid S3 bucket name, so it cannot clash) and key =
//! the bucket's name, written and read with the same majority quorums as
//! objects; deleting a bucket writes a tombstone. Existence checks are cached
//! for a short time on this gateway only (positive answers: `CACHE_TTL`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sillok_storage_node::manifest::{Body, Manifest, Version};

use crate::cluster::Cluster;
use crate::error::GatewayError;
use crate::listing::{self, ListQuery};
use crate::quorum;

pub const SYSTEM_BUCKETS: &str = ".sillok:buckets";
const CACHE_TTL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct BucketInfo {
    pub name: String,
    pub created_ms: i64,
}

#[derive(Default)]
pub struct BucketCache {
    seen: Mutex<HashMap<String, (Instant, BucketInfo)>>,
}

impl BucketCache {
    fn get(&self, name: &str) -> Option<BucketInfo> {
        let seen = self.seen.lock().expect("cache lock");
        seen.get(name).filter(|(t, _)| t.elapsed() < CACHE_TTL).map(|(_, b)| b.clone())
    }
    fn put(&self, b: &BucketInfo) {
        self.seen.lock().expect("cache lock").insert(b.name.clone(), (Instant::now(), b.clone()));
    }
    fn forget(&self, name: &str) {
        self.seen.lock().expect("cache lock").remove(name);
    }
}

pub async fn get(cluster: &Arc<Cluster>, cache: &BucketCache, name: &str) -> Result<Option<BucketInfo>, GatewayError> {
    if let Some(b) = cache.get(name) {
        return Ok(Some(b));
    }
    let found = quorum::read_manifest(cluster, SYSTEM_BUCKETS, name).await?;
    let info =
        found.filter(|m| !m.is_deleted()).map(|m| BucketInfo { name: name.into(), created_ms: m.last_modified_ms });
    if let Some(b) = &info {
        cache.put(b);
    }
    Ok(info)
}

pub async fn require(cluster: &Arc<Cluster>, cache: &BucketCache, name: &str) -> Result<BucketInfo, GatewayError> {
    get(cluster, cache, name).await?.ok_or(GatewayError::NoSuchBucket)
}

pub async fn create(cluster: &Arc<Cluster>, cache: &BucketCache, name: &str) -> Result<(), GatewayError> {
    if get(cluster, cache, name).await?.is_some() {
        return Err(GatewayError::BucketAlreadyOwnedByYou);
    }
    let version = Version::now();
    let m = Manifest {
        bucket: SYSTEM_BUCKETS.into(),
        key: name.into(),
        version,
        last_modified_ms: (version.nanos / 1_000_000) as i64,
        size: 0,
        etag: String::new(),
        content_type: None,
        headers: Default::default(),
        user_metadata: Default::default(),
        body: Body::Inline { data: Vec::new() },
    };
    quorum::write_manifest(cluster, &m).await?;
    cache.put(&BucketInfo { name: name.into(), created_ms: m.last_modified_ms });
    Ok(())
}

pub async fn delete(cluster: &Arc<Cluster>, cache: &BucketCache, name: &str) -> Result<(), GatewayError> {
    require(cluster, cache, name).await?;
    let q = ListQuery { bucket: name.into(), max_keys: 1, ..Default::default() };
    if !listing::list(cluster, &q).await?.entries.is_empty() {
        return Err(GatewayError::BucketNotEmpty);
    }
    cache.forget(name);
    quorum::write_manifest(cluster, &Manifest::tombstone(SYSTEM_BUCKETS, name)).await
}

pub async fn list_all(cluster: &Arc<Cluster>) -> Result<Vec<BucketInfo>, GatewayError> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let q = ListQuery {
            bucket: SYSTEM_BUCKETS.into(),
            start_after: after.clone(),
            max_keys: 1000,
            ..Default::default()
        };
        let page = listing::list(cluster, &q).await?;
        out.extend(page.entries.iter().map(|e| BucketInfo { name: e.key.clone(), created_ms: e.last_modified_ms }));
        if !page.truncated {
            return Ok(out);
        }
        after = page.next_after;
    }
}
