//! Object manifests: everything a reader needs to find and check an object.
//!
//! A manifest is written to the m+1 manifest replicas of the object's PG
//! (`PlacementMap::manifest_replicas`); a write counts once a majority hold it,
//! and readers take the newest [`Version`] from a majority. A delete is a
//! manifest too (a tombstone), so that a replica that missed the delete cannot
//! bring the object back. Small objects live inside their manifest (`Body::Inline`).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sillok_placement::NodeId;

pub mod wire;

/// Orders the writes of one key: the writer's hybrid logical clock
/// (`crate::clock`: wall-clock nanoseconds, never behind anything the writer
/// has seen), then a random tie-break. The write that completes last wins,
/// as in S3: writers take the version when the body is durable and retry
/// above a newer one a replica names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    pub nanos: u64,
    pub tiebreak: u64,
}

impl Version {
    /// A new version from the process's clock (`crate::clock::now`).
    pub fn now() -> Self {
        crate::clock::now()
    }

    /// Milliseconds since the Unix epoch, for Last-Modified.
    pub fn millis(&self) -> i64 {
        (self.nanos / 1_000_000) as i64
    }
}

/// Where shard `index` of an object actually is (a substitute if its slot node failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardLocation {
    pub index: u8,
    pub node: NodeId,
}

/// An erasure-coded body: `size` bytes in stripes of `k * block_size` bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sharded {
    /// Names this version's shard files: `<object_id>.<index>` on each node.
    pub object_id: String,
    pub codec: String,
    pub k: u8,
    pub m: u8,
    /// Bytes per shard block; a stripe holds `k * block_size` bytes of the body.
    pub block_size: u32,
    /// The map epoch the shards were placed under.
    pub epoch: u64,
    /// Every shard that was durably written, one entry per shard index.
    pub shards: Vec<ShardLocation>,
}

impl Sharded {
    pub fn stripe_size(&self) -> u64 {
        u64::from(self.k) * u64::from(self.block_size)
    }

    pub fn stripe_count(&self, size: u64) -> u64 {
        size.div_ceil(self.stripe_size())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Body {
    /// Small objects: the bytes themselves (base64 in JSON; as they are in
    /// the binary encoding, [`wire`]).
    Inline {
        #[serde(with = "b64")]
        data: Bytes,
    },
    Sharded(Sharded),
    /// A tombstone: nothing is here, and a replica that missed the delete
    /// cannot bring back what was. Purged by the nodes after a horizon.
    Deleted,
    /// A completed multipart upload: its parts in order, each stored as it was
    /// uploaded (inline or sharded). Parts are never nested multipart bodies.
    Multipart {
        parts: Vec<Part>,
    },
    /// An S3 delete marker (a versioned bucket's DELETE): a version of its
    /// own that hides the key's older versions without removing them. Live
    /// as far as the store is concerned (listed, never purged), with no body.
    DeleteMarker,
}

/// One part of a multipart object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub number: u32,
    pub size: u64,
    /// Hex MD5 of the part.
    pub etag: String,
    /// `Inline` or `Sharded`.
    pub body: Body,
}

impl Body {
    /// The shard sets this body owns (one per sharded part), for deleting them.
    pub fn sharded_sets(&self) -> Vec<&Sharded> {
        match self {
            Body::Sharded(s) => vec![s],
            Body::Multipart { parts } => parts.iter().flat_map(|p| p.body.sharded_sets()).collect(),
            Body::Inline { .. } | Body::Deleted | Body::DeleteMarker => Vec::new(),
        }
    }

    pub fn sharded_sets_mut(&mut self) -> Vec<&mut Sharded> {
        match self {
            Body::Sharded(s) => vec![s],
            Body::Multipart { parts } => parts.iter_mut().flat_map(|p| p.body.sharded_sets_mut()).collect(),
            Body::Inline { .. } | Body::Deleted | Body::DeleteMarker => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub bucket: String,
    pub key: String,
    pub version: Version,
    /// Milliseconds since the Unix epoch.
    pub last_modified_ms: i64,
    pub size: u64,
    /// Hex MD5 of the body, without quotes.
    pub etag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// `x-amz-meta-*` and the standard headers S3 keeps (cache-control, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user_metadata: BTreeMap<String, String>,
    /// S3 object tags (key → value; keys are unique). The gateway holds them
    /// to S3's limits (at most 10, keys 1-128 characters, values 0-256);
    /// the model keeps whatever it is given. A manifest without tags encodes
    /// exactly as it did before tags existed ([`wire`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    pub body: Body,
    /// The location generation: how many times a repair or a move has
    /// changed where this version's shards are (`shards[i].node`), without
    /// changing the version. Between two copies of one version, the higher
    /// generation is the newer. See `storage_node::meta_store::relocate`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub locations: u64,
    /// Which S3 version of its key this is, in a bucket that has had
    /// versioning enabled (`None`: written without versioning, the key's
    /// null version, kept nowhere but in this manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<VersionId>,
}

/// An S3 object version: named by the version (clock) it was written at,
/// which orders a key's versions; `null` for the null version of a
/// bucket whose versioning is suspended (S3 shows its id as `null`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VersionId {
    pub at: Version,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub null: bool,
}

impl VersionId {
    /// What S3 clients see: `null`, or 32 hex digits that sort newest first.
    pub fn to_s3(&self) -> String {
        if self.null { "null".into() } else { Self::id_of(self.at) }
    }

    /// The 32 hex digits naming the version written at `at`: the bitwise
    /// complement of (nanos, tiebreak), so that ids sort newest first.
    pub fn id_of(at: Version) -> String {
        format!("{:016x}{:016x}", !at.nanos, !at.tiebreak)
    }

    /// The version a 32-hex-digit id names (`None` for anything else,
    /// `null` included).
    pub fn parse_id(s: &str) -> Option<Version> {
        if s.len() != 32 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let nanos = u64::from_str_radix(&s[..16], 16).ok()?;
        let tiebreak = u64::from_str_radix(&s[16..], 16).ok()?;
        Some(Version { nanos: !nanos, tiebreak: !tiebreak })
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Manifest {
    pub fn is_deleted(&self) -> bool {
        matches!(self.body, Body::Deleted)
    }

    /// An object a GET can serve: neither a tombstone nor a delete marker.
    pub fn is_object(&self) -> bool {
        !self.is_deleted() && !self.is_delete_marker()
    }

    /// An S3 delete marker ([`Body::DeleteMarker`]).
    pub fn is_delete_marker(&self) -> bool {
        matches!(self.body, Body::DeleteMarker)
    }

    /// A tombstone for `bucket/key` that supersedes every older version.
    pub fn tombstone(bucket: &str, key: &str) -> Self {
        let version = Version::now();
        Manifest {
            bucket: bucket.into(),
            key: key.into(),
            version,
            last_modified_ms: (version.nanos / 1_000_000) as i64,
            size: 0,
            etag: String::new(),
            content_type: None,
            headers: BTreeMap::new(),
            user_metadata: BTreeMap::new(),
            tags: BTreeMap::new(),
            body: Body::Deleted,
            locations: 0,
            version_id: None,
        }
    }
}

mod b64 {
    //! Inline bodies as standard base64 (with padding) inside the JSON manifest.
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn encode(data: &[u8]) -> String {
        STANDARD.encode(data)
    }

    pub fn decode(s: &str) -> Option<Vec<u8>> {
        STANDARD.decode(s).ok()
    }

    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(data))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bytes::Bytes, D::Error> {
        let s = String::deserialize(d)?;
        decode(&s).map(bytes::Bytes::from).ok_or_else(|| serde::de::Error::custom("invalid base64"))
    }

    #[cfg(test)]
    #[test]
    fn round_trip() {
        for n in 0..70usize {
            let v: Vec<u8> = (0..n).map(|i| (i * 37) as u8).collect();
            assert_eq!(decode(&encode(&v)).unwrap(), v);
        }
        assert!(decode("abc").is_none());
        assert!(decode("a===").is_none());
    }
}
