//! The cluster file: what every process of a cluster reads at start.
//!
//! It holds the cluster secret (which signs every internal request), the
//! S3 region, the first access keys, the first placement map, and where the
//! catalog replicas listen (`catalog_replicas`, one per site) with the first
//! admin key. The catalog replicas seed the replicated catalog from it once
//! (`crate::catalog`); after that the catalog is the truth for the map, the
//! buckets and the keys. Gateways and nodes still read the map and keys from
//! this file until they follow the catalog. Written by `sillok init`, `sillok
//! dev` or an operator. Secrets are never printed: the `Debug` of
//! [`AccessKey`] and [`ClusterFile`] redacts them. Files written before the
//! catalog existed (no `catalog_replicas`, no `admin_key`) still load.

use serde::{Deserialize, Serialize};

use crate::error::PlacementError;
use crate::map::PlacementMap;

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessKey {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterFile {
    /// Signs and verifies every request between Sillok processes (aws-sigv4).
    pub cluster_secret: String,
    /// The S3 region the gateways answer as.
    pub region: String,
    pub access_keys: Vec<AccessKey>,
    pub map: PlacementMap,
    /// The catalog replicas (Raft voters), one per site by default.
    #[serde(default)]
    pub catalog_replicas: Vec<CatalogReplica>,
    /// The first admin key (`sillok admin`), seeded into the catalog.
    #[serde(default)]
    pub admin_key: Option<AccessKey>,
    /// A rotation of the cluster secret in progress (`sillok secret`): the
    /// secret that will replace `cluster_secret`, accepted but not yet used
    /// to sign ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cluster_secret: Option<String>,
    /// ... and, once it has, the one it replaced, still accepted until every
    /// process signs with the new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_cluster_secret: Option<String>,
}

/// One catalog replica: its Raft id, its site and its `host:port` (Raft and
/// the catalog API share the port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogReplica {
    pub id: u64,
    pub site: String,
    pub addr: String,
}

impl std::fmt::Debug for ClusterFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterFile")
            .field("cluster_secret", &"<redacted>")
            .field("region", &self.region)
            .field("access_keys", &self.access_keys)
            .field("map_epoch", &self.map.epoch)
            .field("catalog_replicas", &self.catalog_replicas)
            .field("admin_key", &self.admin_key)
            .field("rotating_secret", &(self.next_cluster_secret.is_some() || self.previous_cluster_secret.is_some()))
            .finish()
    }
}

impl ClusterFile {
    /// The secrets a process verifies internal requests with besides
    /// `cluster_secret`: those of a rotation in progress.
    pub fn also_accepted_secrets(&self) -> Vec<String> {
        self.next_cluster_secret.iter().chain(&self.previous_cluster_secret).cloned().collect()
    }

    /// Parses the file's text and validates its map.
    pub fn parse(text: &str) -> Result<Self, PlacementError> {
        let file: ClusterFile = serde_json::from_str(text).map_err(|e| PlacementError::ClusterFile(e.to_string()))?;
        file.map.validate()?;
        Ok(file)
    }

    /// The file's text (pretty JSON); reading and writing it is the binary's.
    pub fn to_text(&self) -> String {
        serde_json::to_string_pretty(self).expect("cluster file serialises")
    }
}
