//! The cluster file: what every process of a cluster reads at start.
//!
//! Until the Raft catalog lands, the placement map, the S3 access keys and the
//! cluster secret (which signs every internal request) come from one JSON file
//! written by `sillok dev` or by an operator. Secrets are never printed: the
//! `Debug` of [`AccessKey`] and [`ClusterFile`] redacts them.

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
}

impl std::fmt::Debug for ClusterFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterFile")
            .field("cluster_secret", &"<redacted>")
            .field("region", &self.region)
            .field("access_keys", &self.access_keys)
            .field("map_epoch", &self.map.epoch)
            .finish()
    }
}

impl ClusterFile {
    pub fn load(path: &std::path::Path) -> Result<Self, PlacementError> {
        let err = |reason: String| PlacementError::ClusterFile { path: path.display().to_string(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let file: ClusterFile = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        file.map.validate()?;
        Ok(file)
    }

    /// Writes the file atomically (temporary file, fsync, rename).
    pub fn save(&self, path: &std::path::Path) -> Result<(), PlacementError> {
        use std::io::Write;
        let err =
            |e: std::io::Error| PlacementError::ClusterFile { path: path.display().to_string(), reason: e.to_string() };
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(serde_json::to_string_pretty(self).expect("cluster file serialises").as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)?;
        Ok(())
    }
}
