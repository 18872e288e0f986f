//! The node's internal HTTP API: routes and the JSON bodies they carry.
//! Every request is signed with the cluster secret (see `auth`); the node
//! answers 403 to anything unsigned or badly signed and changes nothing.
//!
//! | route | what |
//! |---|---|
//! | `PUT  /v1/shards/{object_id}/{index}` | body: frames; headers `x-sillok-block-size`, `x-sillok-blocks`, `x-sillok-codec`, `x-sillok-k`, `x-sillok-m`; trailer `x-sillok-body-seal` (`sillok_rpc::auth::BodySeal`); stored only when complete, sealed and fsynced → [`ShardInfo`] |
//! | `GET  /v1/shards/{object_id}/{index}?from=A&to=B` | blocks A..B (B exclusive; absent: to the end) as frames; each block verified before it is sent |
//! | `HEAD /v1/shards/{object_id}/{index}` | 200 with `x-sillok-blocks`, `x-sillok-block-size`, `content-length` (shard bytes), or 404 |
//! | `DELETE /v1/shards/{object_id}/{index}` | 204 (also when absent) |
//! | `GET  /v1/shards?after=NAME&limit=N` | [`ShardList`] |
//! | `POST /v1/manifests/put` | body [`Manifest`] ([`MANIFEST_TYPE`], or JSON) → [`PutManifestReply`] (kept only if newer) |
//! | `POST /v1/manifests/get` | body [`GetManifest`] → [`Manifest`] or 404; [`MANIFEST_TYPE`] if the request accepts it, else JSON |
//! | `POST /v1/manifests/summary` | body [`GetManifest`] → [`ManifestSummary`] (binary, [`ManifestSummary::LEN`] bytes) or 404 |
//! | `POST /v1/manifests/list` | body [`ListManifests`] → [`ManifestList`] |
//! | `POST /v1/manifests/relocate` | body [`Relocate`] → [`RelocateReply`]: compare-and-swap of shard places |
//! | `POST /v1/repair/throttle` | body `rebuild::ThrottleSettings` (fields left out keep their value) → the throttle now |
//! | `POST /v1/repair/suspect` | body [`ShardId`] → `{"sound": bool}`: the node checks the shard whole at once; a missing or corrupt one is rewritten by its rebuild engine |
//! | `POST /v1/pg/objects` | body [`ListPg`] → [`PgObjectList`]: a PG's live manifests that have shards, with their places |
//! | `POST /v1/pg/manifests` | body [`ListPg`] → [`PgManifestList`]: the manifests held in one PG, from the index only |
//! | `POST /v1/pg/digest` | body [`PgSelector`] → [`PgDigest`] |
//! | `POST /v1/pg/digests` | body [`PgDigests`] → one [`PgDigest`] per PG named, in order |
//! | `POST /v1/pg/shards` | body [`ListPg`] → [`PgShardList`]: the shard files held in one PG, from their headers only |
//! | `POST /v1/references` | body [`References`] → [`ShardPlaces`]: where the manifests here place those ids' shards |
//! | `GET  /metrics` | Prometheus text (unsigned: figures only) |
//! | `GET  /v1/health` | 200 `{"node": id, "epoch": E}` |
//! | `GET  /v1/map` | the placement map the node follows (404: none) |
//!
//! Map epochs: a caller that follows the placement map sends its epoch in
//! [`H_EPOCH`]; every answer carries the node's epoch in [`H_EPOCH`] (when the
//! node follows the map). A manifest get or put whose epoch is older than the
//! node's is refused with 409 `stale_epoch` before it touches the store: the
//! manifest replicas of a PG come from the map, so the caller must look them
//! up again on the newer map and retry. Shard requests are served whatever
//! the epoch (a manifest records where each of its shards actually is), but
//! their answers still name the node's epoch, so the caller learns of it.
//!
//! Manifests travel in their binary encoding (`sillok_model::manifest::wire`,
//! content type [`MANIFEST_TYPE`]): no JSON and no base64 on the read and
//! write paths. JSON bodies are still understood, for callers built before
//! the encoding.
//!
//! Details the table leaves out (see `server` for the rest):
//! - Errors are small JSON bodies `{"error": code, "message": text}` with 400
//!   (bad input), 403 (auth), 404 (absent), 409 (a block or shard failed its
//!   check: corrupt), 413 (JSON body over 8 MiB), 500 (I/O or store failure).
//! - A shard GET answers 200 with [`H_FRAMES`] (how many frames the body
//!   holds), [`H_BLOCKS`], [`H_BLOCK_SIZE`] and [`H_DATA_LEN`] of the whole
//!   shard. The first block is verified before the head is sent (a corrupt one
//!   is a 409). If a later block fails its check, the node ends the body
//!   *cleanly* after the good blocks before it: a body with fewer frames than
//!   [`H_FRAMES`] that ends without a transport error means "block
//!   `from + frames received` is corrupt on this node". A transport error
//!   (connection reset) means an I/O failure.
//! - `from` beyond the shard's block count, or `to < from`, is a 400.

use serde::{Deserialize, Serialize};

use sillok_model::manifest::{Manifest, Version, VersionId};
use sillok_placement::{PgFunction, PgId, PlacementMap};

pub const H_BLOCK_SIZE: &str = "x-sillok-block-size";
pub const H_BLOCKS: &str = "x-sillok-blocks";
pub const H_CODEC: &str = "x-sillok-codec";
pub const H_K: &str = "x-sillok-k";
pub const H_M: &str = "x-sillok-m";
/// Shard GET/HEAD responses: the sum of the shard's block lengths.
pub const H_DATA_LEN: &str = "x-sillok-data-len";
/// Shard GET responses: how many frames this body carries.
pub const H_FRAMES: &str = "x-sillok-frames";
/// The sender's placement-map epoch (requests) or the node's (responses).
pub const H_EPOCH: &str = "x-sillok-epoch";
/// The node's wall clock (ms since the Unix epoch) when it answered: every
/// answer carries it, so callers can measure their clock offset to nodes.
pub const H_TIME: &str = "x-sillok-time-ms";
/// The content type of a manifest in its binary encoding.
pub const MANIFEST_TYPE: &str = "application/vnd.sillok.manifest";
/// The error code of a request refused for its old epoch.
pub const STALE_EPOCH: &str = "stale_epoch";

/// The epoch a request or response names in [`H_EPOCH`], if any.
pub fn epoch_of(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(H_EPOCH)?.to_str().ok()?.trim().parse().ok()
}

/// Names one shard file: shard `index` of object version `object_id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ShardId {
    /// 32 lowercase hex characters.
    pub object_id: String,
    pub index: u8,
}

impl ShardId {
    /// Object ids are 32 lowercase hex digits; anything else is refused, which
    /// also keeps ids from ever naming a path outside the shard directory.
    pub fn is_valid_object_id(s: &str) -> bool {
        s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    pub fn new_object_id() -> String {
        uuid::Uuid::new_v4().simple().to_string()
    }

    pub fn file_name(&self) -> String {
        format!("{}.{}", self.object_id, self.index)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub id: ShardId,
    pub blocks: u32,
    pub block_size: u32,
    /// Sum of the blocks' data lengths.
    pub data_len: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardList {
    pub shards: Vec<ShardInfo>,
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutManifestReply {
    /// True if this version is now the node's newest for the key.
    pub stored: bool,
    /// The node's newest version after the call.
    pub current: Version,
}

/// What a quorum read needs of one replica's manifest to decide which
/// replica holds the newest (and whether two hold the same one), without the
/// manifest. On the wire, [`ManifestSummary::LEN`] bytes:
///
/// ```text
/// [0]       format, 1
/// [1..17]   version (nanos, tiebreak), u64 LE each
/// [17]      1 if a tombstone
/// [18..26]  location generation, u64 LE
/// [26..42]  digest of the manifest's encoding (`wire::digest`)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestSummary {
    pub version: Version,
    pub deleted: bool,
    pub locations: u64,
    pub digest: [u8; 16],
}

impl ManifestSummary {
    pub const LEN: usize = 42;
    const FORMAT: u8 = 1;

    pub fn of(m: &Manifest) -> Self {
        ManifestSummary {
            version: m.version,
            deleted: m.is_deleted(),
            locations: m.locations,
            digest: sillok_model::manifest::wire::digest(&sillok_model::manifest::wire::encode(m)),
        }
    }

    /// Which of two copies is newer: the version, then the location generation.
    pub fn order(&self) -> (Version, u64) {
        (self.version, self.locations)
    }

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = Self::FORMAT;
        b[1..9].copy_from_slice(&self.version.nanos.to_le_bytes());
        b[9..17].copy_from_slice(&self.version.tiebreak.to_le_bytes());
        b[17] = u8::from(self.deleted);
        b[18..26].copy_from_slice(&self.locations.to_le_bytes());
        b[26..42].copy_from_slice(&self.digest);
        b
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != Self::LEN || b[0] != Self::FORMAT || b[17] > 1 {
            return None;
        }
        let u64_le = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        Some(ManifestSummary {
            version: Version { nanos: u64_le(1), tiebreak: u64_le(9) },
            deleted: b[17] == 1,
            locations: u64_le(18),
            digest: b[26..42].try_into().expect("16 bytes"),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetManifest {
    pub bucket: String,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListManifests {
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    /// Only keys strictly greater than this.
    #[serde(default)]
    pub start_after: Option<String>,
    pub limit: u32,
}

/// One key's newest version on this node. Tombstones are included (`deleted`),
/// so the gateway can merge nodes' answers correctly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    pub key: String,
    pub version: Version,
    pub deleted: bool,
    pub size: u64,
    pub etag: String,
    pub last_modified_ms: i64,
    /// An S3 delete marker: live, but not an object (absent from answers
    /// of builds from before versioning: false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete_marker: bool,
    /// The manifest's S3 version id, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<VersionId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestList {
    pub entries: Vec<ListEntry>,
    /// More keys may follow the last entry.
    pub truncated: bool,
}

impl From<&Manifest> for ListEntry {
    fn from(m: &Manifest) -> Self {
        ListEntry {
            key: m.key.clone(),
            version: m.version,
            deleted: m.is_deleted(),
            size: m.size,
            etag: m.etag.clone(),
            last_modified_ms: m.last_modified_ms,
            delete_marker: m.is_delete_marker(),
            version_id: m.version_id,
        }
    }
}

/// One PG, as the caller's map computes PGs (a node may follow an older or
/// newer map; the caller's own view decides what "PG 17" is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgSelector {
    pub pg: PgId,
    pub pg_count: u32,
    pub function: PgFunction,
}

impl PgSelector {
    pub fn of(map: &PlacementMap, pg: PgId) -> Self {
        PgSelector { pg, pg_count: map.pg_count, function: map.pg_function }
    }

    /// The top-bits PG of `hash` among 8 (tests).
    #[doc(hidden)]
    pub fn of_hash(hash: u64) -> Self {
        PgSelector { pg: PgFunction::TopBits.pg_of_hash(hash, 8), pg_count: 8, function: PgFunction::TopBits }
    }

    pub fn holds_hash(&self, hash: u64) -> bool {
        self.function.pg_of_hash(hash, self.pg_count) == self.pg
    }
}

/// A page of one PG's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPg {
    #[serde(flatten)]
    pub pg: PgSelector,
    /// The `next` of the previous page.
    #[serde(default)]
    pub after: Option<String>,
    pub limit: u32,
}

/// One manifest in a PG listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgEntry {
    pub bucket: String,
    pub key: String,
    pub version: Version,
    pub deleted: bool,
    /// The version's location generation (`Manifest::locations`).
    #[serde(default)]
    pub locations: u64,
    /// The object ids whose shards the manifest refers to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub object_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgManifestList {
    pub entries: Vec<PgEntry>,
    /// Where the next page starts; `None` when this page is the last.
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgDigest {
    pub count: u64,
    /// Hex blake3 over the PG's (key, version, tombstone) entries in order.
    pub digest: String,
}

/// Digests of several PGs in one request (anti-entropy's round).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgDigests {
    pub pg_count: u32,
    pub function: PgFunction,
    pub pgs: Vec<PgId>,
}

/// One shard file in a PG listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgShard {
    pub id: ShardId,
    pub data_len: u64,
    /// Milliseconds since the file was last written (committed).
    pub age_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgShardList {
    pub shards: Vec<PgShard>,
    pub next: Option<String>,
}

/// Object ids whose shards the caller holds (ids carrying a placement hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct References {
    pub object_ids: Vec<String>,
}

/// A manifest places shard `index` of `object_id` on `node`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ShardPlace {
    pub object_id: String,
    pub index: u8,
    pub node: sillok_placement::NodeId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPlaces {
    pub places: Vec<ShardPlace>,
}

/// Shard `index` of `object_id` is now on `node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMove {
    pub object_id: String,
    pub index: u8,
    pub node: sillok_placement::NodeId,
    /// Where the mover found the shard: the move applies only while the
    /// stored manifest still places it there (or already at `node`), so two
    /// movers of different shards of one version never undo each other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<sillok_placement::NodeId>,
}

/// `POST /v1/manifests/relocate`: new places for shards of one version, if
/// that version is still the stored one and, when `generation` is given, it
/// is still at that location generation; each move is also checked against
/// its `from`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relocate {
    pub bucket: String,
    pub key: String,
    pub version: Version,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    pub moves: Vec<ShardMove>,
}

/// One erasure-coded body of a live manifest (a whole object, or one part of
/// a multipart object) and its length in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSet {
    pub size: u64,
    pub sharded: sillok_model::manifest::Sharded,
}

/// A live manifest whose body has shards, as the rebuild engine needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgObject {
    pub bucket: String,
    pub key: String,
    pub version: Version,
    pub locations: u64,
    pub sets: Vec<ShardSet>,
}

impl PgObject {
    /// The object's shard sets (none for inline bodies and tombstones).
    pub fn of(m: &sillok_model::manifest::Manifest) -> Self {
        use sillok_model::manifest::Body;
        let sets = match &m.body {
            Body::Sharded(s) => vec![ShardSet { size: m.size, sharded: s.clone() }],
            Body::Multipart { parts } => parts
                .iter()
                .filter_map(|p| match &p.body {
                    Body::Sharded(s) => Some(ShardSet { size: p.size, sharded: s.clone() }),
                    _ => None,
                })
                .collect(),
            Body::Inline { .. } | Body::Deleted | Body::DeleteMarker => Vec::new(),
        };
        PgObject { bucket: m.bucket.clone(), key: m.key.clone(), version: m.version, locations: m.locations, sets }
    }
}

/// `POST /v1/pg/objects` (body [`ListPg`]): a page of [`PgObject`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgObjectList {
    pub objects: Vec<PgObject>,
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelocateReply {
    pub applied: bool,
    /// The stored version and its generation after the call (`None`: the
    /// node holds nothing for the key).
    pub version: Option<Version>,
    pub generation: u64,
}
