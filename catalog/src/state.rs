//! The catalog's contents and the commands that change them.
//!
//! Owns: [`Catalog`] (the placement map, the buckets, the access keys),
//! [`Command`] (every change the Raft log can carry), and [`Catalog::apply`],
//! the one function through which a committed command changes the catalog.
//!
//! Invariants:
//! - `apply` is deterministic: the same catalog and the same command give the
//!   same catalog and the same [`Outcome`] on every replica. It reads no clock,
//!   draws no random number and iterates no hash map: timestamps, secrets and
//!   new node ids are chosen before the command enters the log (or, for node
//!   ids, taken from the catalog's own counter).
//! - `apply` is all or nothing: a refused command ([`CatalogError`]) leaves the
//!   catalog exactly as it was. Changes are computed on copies and swapped in
//!   only once every check has passed.
//! - The map always passes [`PlacementMap::validate`] (EC site rule: no site
//!   holds more than m slots of a PG), its epoch only grows, and every accepted
//!   map change adds exactly one.
//! - A change that takes nodes out of service for good (node or site `out`,
//!   node remove) is refused when a PG of the current map would be left with
//!   fewer than k slot nodes that still hold data (Up or Draining): it would
//!   remove the last copies. The catalog does not know rebuild progress yet, so
//!   slots count as holding their shards as soon as the map names them.
//! - A node id is never reused (`next_node_id` only grows).
//! - Secrets (access key secrets) never appear in `Debug` output.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use sillok_placement::PlacementMap;

use crate::cors::CorsConfig;
use crate::lifecycle::LifecycleConfig;
use sillok_placement::topology::{Node, NodeId, NodeState, Site, Topology};

/// The storage class every bucket gets unless it names another; its EC
/// profile is the map's profile.
pub const STANDARD: &str = "STANDARD";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub name: String,
    /// The access key id that created it.
    pub owner: String,
    /// Seconds since the Unix epoch, chosen by the leader that proposed it.
    pub created_at: u64,
    pub storage_class: String,
    /// The bucket's CORS configuration (`None`: CORS requests are refused).
    /// Absent from catalogs written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsConfig>,
    /// The bucket's lifecycle configuration (`None`: nothing expires).
    /// Absent from catalogs written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<LifecycleConfig>,
    /// S3 bucket versioning. Absent from catalogs written before it existed
    /// (and from buckets that never had it): unversioned.
    #[serde(default, skip_serializing_if = "Versioning::is_unversioned")]
    pub versioning: Versioning,
}

/// A bucket's S3 versioning state. Once enabled, a bucket is never
/// unversioned again (as in S3): it can only be suspended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Versioning {
    #[default]
    Unversioned,
    Enabled,
    Suspended,
}

impl Versioning {
    pub fn is_unversioned(&self) -> bool {
        *self == Versioning::Unversioned
    }
}

/// What an access key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// S3 reads (GET, HEAD, listings).
    Read,
    /// S3 writes (PUT, DELETE, bucket creation).
    Write,
    /// `sillok admin`: the catalog API.
    Admin,
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Admin => "admin",
        })
    }
}

impl std::str::FromStr for Permission {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "read" => Ok(Permission::Read),
            "write" => Ok(Permission::Write),
            "admin" => Ok(Permission::Admin),
            other => Err(format!("unknown permission {other:?}: use read, write or admin")),
        }
    }
}

/// An access key as the catalog keeps it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub secret: String,
    pub permissions: BTreeSet<Permission>,
    pub enabled: bool,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("permissions", &self.permissions)
            .field("enabled", &self.enabled)
            .field("created_at", &self.created_at)
            .finish()
    }
}

impl KeyRecord {
    /// The key without its secret, for listings and status.
    pub fn info(&self) -> KeyInfo {
        KeyInfo {
            id: self.id.clone(),
            permissions: self.permissions.clone(),
            enabled: self.enabled,
            created_at: self.created_at,
        }
    }

    pub fn may(&self, p: Permission) -> bool {
        self.enabled && self.permissions.contains(&p)
    }
}

/// An access key without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub id: String,
    pub permissions: BTreeSet<Permission>,
    pub enabled: bool,
    pub created_at: u64,
}

/// Everything the catalog holds. `map` is `None` until the catalog has been
/// seeded from the cluster file ([`Command::Bootstrap`]).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Catalog {
    pub region: String,
    pub map: Option<PlacementMap>,
    pub buckets: BTreeMap<String, Bucket>,
    pub keys: BTreeMap<String, KeyRecord>,
    /// The id the next added node gets; only grows, so ids are never reused.
    pub next_node_id: u32,
    /// Automatic failure handling: the hold, and why each node is in its state.
    #[serde(default)]
    pub repair: Repair,
    /// Capacity changes staged for the next map change, in the order given
    /// (`sillok admin rebalance plan|apply|discard`): node add, remove,
    /// weight and drain, site add. Nothing moves until they are applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub staged: Vec<Command>,
    /// Added to this replica set's applied index in what followers see
    /// (`CatalogView::applied_index`): 0 until the catalog is restored from a
    /// backup into a new Raft log ([`Command::Restore`]), whose indexes start
    /// again from 1.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restored_base: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// How far a restore moves the map epoch and the followers' catalog index
/// past the backup's at least: more than a cluster changes between a backup
/// and its restore, so every gateway and node takes the restored catalog as
/// newer than anything it followed before (they never go back), without
/// being told. A restore also moves them to at least 1,000 × its time in ms,
/// so that a later restore of an older backup still lands above an earlier
/// restore (unless the cluster made 1,000 changes a millisecond in between).
pub const RESTORE_JUMP: u64 = 1 << 32;

/// A catalog inside a command, as JSON text: serde's internally tagged enums
/// (`Command` is one) cannot read maps keyed by numbers, such as
/// `Repair::transitions`, from JSON, so the catalog travels as one string.
mod json_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(c: &super::Catalog, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&serde_json::to_string(c).map_err(serde::ser::Error::custom)?)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Box<super::Catalog>, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str(&text).map_err(serde::de::Error::custom)
    }
}

/// Where a restore stamped `at_ms` moves a counter that was at `v`.
fn restored(v: u64, at_ms: i64) -> u64 {
    v.saturating_add(RESTORE_JUMP).max((at_ms.max(0) as u64).saturating_mul(1000))
}

/// Milliseconds since the Unix epoch, for command stamps.
fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// What the failure detector (`detector`) and operators decided, and why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Repair {
    /// While set, the detector marks nodes `down` but never `out`
    /// (`sillok admin repair hold|release`, like Ceph's `noout`).
    #[serde(default)]
    pub hold: bool,
    /// The last state change of each node that came with a reason.
    #[serde(default)]
    pub transitions: BTreeMap<NodeId, Transition>,
    /// The rebuild pace every storage node takes from its report's answer
    /// (`sillok admin repair throttle`); unset, nodes use their own flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<crate::api::RepairThrottle>,
    /// Planned moves wait (`sillok admin rebalance pause|resume`); rebuilds
    /// of lost shards do not.
    #[serde(default)]
    pub rebalance_paused: bool,
}

/// One node state change and its reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub state: NodeState,
    pub reason: String,
    /// When it was proposed, ms since the Unix epoch (the proposer's clock).
    pub at_ms: i64,
}

/// A change to the catalog, as the Raft log carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Seeds an empty catalog (from the cluster file). A no-op once seeded.
    Bootstrap {
        region: String,
        map: PlacementMap,
        keys: Vec<KeyRecord>,
    },
    CreateBucket {
        bucket: Bucket,
    },
    DeleteBucket {
        name: String,
    },
    /// Sets (or, with `None`, removes) a bucket's CORS configuration.
    SetBucketCors {
        bucket: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cors: Option<CorsConfig>,
    },
    /// Sets a bucket's versioning to `Enabled` or `Suspended`.
    SetBucketVersioning {
        bucket: String,
        versioning: Versioning,
    },
    /// Sets (or, with `None`, removes) a bucket's lifecycle configuration.
    SetBucketLifecycle {
        bucket: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lifecycle: Option<LifecycleConfig>,
    },
    CreateKey {
        key: KeyRecord,
    },
    /// Disables a key for good (its id stays taken).
    RevokeKey {
        id: String,
    },
    AddSite {
        site: String,
    },
    /// Removes a site and every node in it (refused while a row of any PG
    /// names one of them, like [`Command::RemoveNode`]).
    RemoveSite {
        site: String,
    },
    /// Sets the state of every node of the site.
    SetSiteState {
        site: String,
        state: NodeState,
        /// Why (the detector always says; an operator's change may not).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default)]
        at_ms: i64,
    },
    /// Adds a node; it gets the catalog's next node id.
    AddNode {
        site: String,
        addr: String,
        weight: f64,
    },
    RemoveNode {
        id: NodeId,
    },
    SetNodeWeight {
        id: NodeId,
        weight: f64,
    },
    SetNodeState {
        id: NodeId,
        state: NodeState,
        /// Why (the detector always says; an operator's change may not).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default)]
        at_ms: i64,
    },
    /// Holds or releases automatic `out` (the detector still marks `down`).
    SetRepairHold {
        hold: bool,
    },
    /// Stages a capacity change (refused if, with those staged before it,
    /// it would not make a valid map).
    Stage {
        change: Box<Command>,
    },
    /// Applies every staged change as one map change.
    ApplyStaged,
    /// Drops the staged changes.
    DiscardStaged,
    /// Seeds an empty catalog from a backup (`sillok catalog --restore-from`)
    /// instead of the cluster file: everything as it was, with the map's epoch
    /// and the followers' index moved [`RESTORE_JUMP`] past the backup's
    /// (`version`: the index followers had seen at the backup). A no-op once
    /// seeded.
    Restore {
        #[serde(with = "json_text")]
        catalog: Box<Catalog>,
        version: u64,
        /// When the restore was started (ms since the Unix epoch).
        at_ms: i64,
    },
    /// Forgets the earlier rows of `pgs`, whose data the nodes report moved
    /// (the leader's `rebalance::prune_forever`); refused unless the map is
    /// still at `epoch`, the one the reports were checked against.
    DropEarlierRows {
        epoch: u64,
        pgs: Vec<u32>,
    },
    /// Turns back every move not yet finished (`PlacementMap::with_moves_cancelled`).
    CancelMoves,
    /// Splits every PG into `count / pg_count` children (`PlacementMap::split`):
    /// staged like a capacity change (`sillok admin pg split`), and applied
    /// with whatever else is staged as one map change, in which the
    /// assignment places each child.
    SplitPgs {
        count: u32,
    },
    /// Pauses or resumes planned moves (repairs of lost shards go on).
    SetRebalancePaused {
        paused: bool,
    },
    /// Sets the rebuild pace of every storage node; a field left out keeps
    /// its value (or the nodes' own flag, if never set).
    SetRepairThrottle {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mib_per_s: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        concurrency: Option<u32>,
    },
}

/// What part of the catalog a command may touch (the store rewrites that part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touch {
    All,
    Map,
    Bucket(String),
    Key(String),
}

impl Command {
    /// An operator's node state change (no reason given), stamped now.
    pub fn node_state(id: NodeId, state: NodeState) -> Self {
        Command::SetNodeState { id, state, reason: None, at_ms: now_ms() }
    }

    /// An operator's change of every node of a site.
    pub fn site_state(site: &str, state: NodeState) -> Self {
        Command::SetSiteState { site: site.into(), state, reason: None, at_ms: now_ms() }
    }

    pub fn touches(&self) -> Touch {
        match self {
            Command::Bootstrap { .. } | Command::Restore { .. } => Touch::All,
            Command::CreateBucket { bucket } => Touch::Bucket(bucket.name.clone()),
            Command::DeleteBucket { name } => Touch::Bucket(name.clone()),
            Command::SetBucketCors { bucket, .. } => Touch::Bucket(bucket.clone()),
            Command::SetBucketVersioning { bucket, .. } => Touch::Bucket(bucket.clone()),
            Command::SetBucketLifecycle { bucket, .. } => Touch::Bucket(bucket.clone()),
            Command::CreateKey { key } => Touch::Key(key.id.clone()),
            Command::RevokeKey { id } => Touch::Key(id.clone()),
            _ => Touch::Map,
        }
    }

    /// Whether the command changes capacity (and so is staged by the CLI).
    pub fn is_capacity_change(&self) -> bool {
        matches!(
            self,
            Command::AddSite { .. }
                | Command::RemoveSite { .. }
                | Command::AddNode { .. }
                | Command::RemoveNode { .. }
                | Command::SetNodeWeight { .. }
                | Command::SetNodeState { state: NodeState::Draining, .. }
                | Command::SplitPgs { .. }
        )
    }

    /// A short description for plans and errors.
    pub fn name(&self) -> String {
        match self {
            Command::AddSite { site } => format!("add site {site}"),
            Command::RemoveSite { site } => format!("remove site {site} and its nodes"),
            Command::AddNode { site, addr, weight } => format!("add a node at {addr} in {site} (weight {weight})"),
            Command::RemoveNode { id } => format!("remove node {id}"),
            Command::SetNodeWeight { id, weight } => format!("set node {id}'s weight to {weight}"),
            Command::SetNodeState { id, state, .. } => format!("mark node {id} {state:?}").to_lowercase(),
            Command::SetSiteState { site, state, .. } => format!("mark site {site} {state:?}").to_lowercase(),
            Command::SplitPgs { count } => format!("split the PGs into {count}"),
            other => {
                let v = serde_json::to_value(other).unwrap_or_default();
                v["op"].as_str().unwrap_or("a change").replace('_', " ")
            }
        }
    }

    /// Whether the command changes the placement map.
    pub fn is_map_change(&self) -> bool {
        matches!(self.touches(), Touch::Map | Touch::All)
    }
}

/// What an applied command did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    Bootstrapped {
        epoch: u64,
    },
    /// The catalog was already seeded; nothing changed.
    AlreadyBootstrapped,
    /// A new map, at this epoch.
    Map {
        epoch: u64,
    },
    /// A new node, and the map that places it.
    NodeAdded {
        id: NodeId,
        epoch: u64,
    },
    BucketCreated {
        bucket: Bucket,
    },
    BucketDeleted {
        name: String,
    },
    BucketCorsSet {
        bucket: String,
        /// Whether the bucket now has a configuration (false: removed).
        set: bool,
    },
    BucketVersioningSet {
        bucket: String,
        versioning: Versioning,
    },
    BucketLifecycleSet {
        bucket: String,
        /// Whether the bucket now has a configuration (false: removed).
        set: bool,
    },
    /// The new key, secret included: the only time the secret is shown.
    KeyCreated {
        key: KeyRecord,
    },
    KeyRevoked {
        id: String,
    },
    RepairHold {
        hold: bool,
    },
    RepairThrottle {
        throttle: crate::api::RepairThrottle,
    },
    /// The change is staged; `staged` changes wait, and an added node will
    /// get `node` when they are applied.
    Staged {
        staged: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<NodeId>,
    },
    /// The staged changes were applied as the map at `epoch`.
    Applied {
        epoch: u64,
        changes: usize,
        added: Vec<NodeId>,
    },
    Discarded {
        changes: usize,
    },
    RowsDropped {
        epoch: u64,
        pgs: usize,
    },
    RebalancePaused {
        paused: bool,
    },
    /// The reply of log entries that carry no command (leader blanks,
    /// membership changes).
    Internal,
}

/// Why a command was refused. Every message says what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", content = "detail", rename_all = "snake_case")]
pub enum CatalogError {
    #[error("the catalog has not been seeded from the cluster file yet; wait for a leader to be elected and retry")]
    NotBootstrapped,
    #[error("bucket {0} already exists")]
    BucketExists(String),
    #[error("bucket {0} does not exist; `sillok admin bucket list` shows the buckets")]
    NoSuchBucket(String),
    #[error("invalid bucket name {name:?}: {reason}")]
    InvalidBucketName { name: String, reason: String },
    #[error("invalid CORS configuration: {0}")]
    InvalidCors(String),
    #[error("invalid versioning change: {0}")]
    InvalidVersioning(String),
    #[error("invalid lifecycle configuration: {0}")]
    InvalidLifecycle(String),
    #[error("storage class {0:?} is unknown; the classes are: STANDARD")]
    UnknownStorageClass(String),
    #[error("access key {0} already exists")]
    KeyExists(String),
    #[error("access key {0} does not exist; `sillok admin key list` shows the keys")]
    NoSuchKey(String),
    #[error("access key {0} is the last enabled admin key; create another admin key before revoking it")]
    LastAdminKey(String),
    #[error("invalid access key: {0}")]
    InvalidKey(String),
    #[error("site {0} already exists")]
    SiteExists(String),
    #[error("site {0} does not exist; `sillok admin status` lists the sites")]
    NoSuchSite(String),
    #[error("node {0} does not exist; `sillok admin status` lists the nodes")]
    NoSuchNode(String),
    #[error("invalid node: {0}")]
    InvalidNode(String),
    /// The new map would break the placement rules (EC site rule, not enough
    /// sites or nodes for the profile...).
    #[error("refused, nothing changed: {0}")]
    Placement(String),
    #[error(
        "refused, nothing changed: PG {pg} would keep only {left} of its {width} shards on nodes that hold data \
         (it needs {k}); this would remove the last copies. Bring nodes back up or wait for repair first"
    )]
    LastCopies { pg: u32, left: usize, width: usize, k: usize },
    #[error("invalid repair throttle: {0}")]
    InvalidThrottle(String),
    #[error("{0}")]
    Staging(String),
    #[error(
        "refused, nothing changed: node {node} is still named by {pgs} PGs' earlier rows (their data has not \
         all moved yet); wait until `sillok admin rebalance status` shows nothing left, then retry"
    )]
    StillHoldsData { node: NodeId, pgs: usize },
}

impl From<sillok_placement::PlacementError> for CatalogError {
    fn from(e: sillok_placement::PlacementError) -> Self {
        CatalogError::Placement(e.to_string())
    }
}

/// Checks an S3 bucket name (3-63 of `a-z 0-9 . -`, starting and ending with a
/// letter or digit, no `..`, not an IP address).
pub fn check_bucket_name(name: &str) -> Result<(), CatalogError> {
    let bad = |reason: &str| Err(CatalogError::InvalidBucketName { name: name.into(), reason: reason.into() });
    if name.len() < 3 || name.len() > 63 {
        return bad("bucket names are 3 to 63 characters long");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-') {
        return bad("use only lowercase letters, digits, '.' and '-'");
    }
    let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !edge(name.as_bytes()[0]) || !edge(name.as_bytes()[name.len() - 1]) {
        return bad("start and end with a letter or digit");
    }
    if name.contains("..") {
        return bad("no two dots in a row");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return bad("a bucket name may not look like an IP address");
    }
    Ok(())
}

impl Catalog {
    pub fn is_bootstrapped(&self) -> bool {
        self.map.is_some()
    }

    pub fn epoch(&self) -> u64 {
        self.map.as_ref().map_or(0, |m| m.epoch)
    }

    /// The storage classes and their EC profiles.
    pub fn storage_classes(&self) -> Vec<(String, sillok_placement::EcProfile)> {
        self.map.iter().map(|m| (STANDARD.to_string(), m.profile)).collect()
    }

    /// Applies a committed command; see the module's invariants.
    pub fn apply(&mut self, cmd: &Command) -> Result<Outcome, CatalogError> {
        if let Command::Bootstrap { region, map, keys } = cmd {
            if self.is_bootstrapped() {
                return Ok(Outcome::AlreadyBootstrapped);
            }
            map.validate()?;
            let mut key_map = BTreeMap::new();
            for k in keys {
                check_key(k)?;
                if key_map.insert(k.id.clone(), k.clone()).is_some() {
                    return Err(CatalogError::KeyExists(k.id.clone()));
                }
            }
            self.region = region.clone();
            self.next_node_id = map.topology.nodes.iter().map(|n| n.id.0 + 1).max().unwrap_or(1).max(1);
            self.map = Some(map.clone());
            self.keys = key_map;
            return Ok(Outcome::Bootstrapped { epoch: map.epoch });
        }
        if let Command::Restore { catalog, version, at_ms } = cmd {
            if self.is_bootstrapped() {
                return Ok(Outcome::AlreadyBootstrapped);
            }
            let mut new = (**catalog).clone();
            let Some(map) = new.map.as_mut() else { return Err(CatalogError::NotBootstrapped) };
            map.validate()?;
            map.epoch = restored(map.epoch, *at_ms);
            let epoch = map.epoch;
            new.restored_base = restored(*version, *at_ms);
            *self = new;
            return Ok(Outcome::Bootstrapped { epoch });
        }
        let Some(map) = self.map.as_ref() else { return Err(CatalogError::NotBootstrapped) };
        match cmd {
            Command::Bootstrap { .. } | Command::Restore { .. } => unreachable!("handled above"),
            Command::CreateBucket { bucket } => {
                check_bucket_name(&bucket.name)?;
                if bucket.storage_class != STANDARD {
                    return Err(CatalogError::UnknownStorageClass(bucket.storage_class.clone()));
                }
                if self.buckets.contains_key(&bucket.name) {
                    return Err(CatalogError::BucketExists(bucket.name.clone()));
                }
                self.buckets.insert(bucket.name.clone(), bucket.clone());
                Ok(Outcome::BucketCreated { bucket: bucket.clone() })
            }
            Command::DeleteBucket { name } => match self.buckets.remove(name) {
                Some(_) => Ok(Outcome::BucketDeleted { name: name.clone() }),
                None => Err(CatalogError::NoSuchBucket(name.clone())),
            },
            Command::SetBucketCors { bucket, cors } => {
                if let Some(c) = cors {
                    c.validate().map_err(|e| CatalogError::InvalidCors(e.to_string()))?;
                }
                let Some(b) = self.buckets.get_mut(bucket) else {
                    return Err(CatalogError::NoSuchBucket(bucket.clone()));
                };
                b.cors = cors.clone();
                Ok(Outcome::BucketCorsSet { bucket: bucket.clone(), set: cors.is_some() })
            }
            Command::SetBucketLifecycle { bucket, lifecycle } => {
                if let Some(l) = lifecycle {
                    l.validate().map_err(|e| CatalogError::InvalidLifecycle(e.to_string()))?;
                }
                let Some(b) = self.buckets.get_mut(bucket) else {
                    return Err(CatalogError::NoSuchBucket(bucket.clone()));
                };
                b.lifecycle = lifecycle.clone();
                Ok(Outcome::BucketLifecycleSet { bucket: bucket.clone(), set: lifecycle.is_some() })
            }
            Command::SetBucketVersioning { bucket, versioning } => {
                if versioning.is_unversioned() {
                    return Err(CatalogError::InvalidVersioning(
                        "versioning can be enabled or suspended, never removed".into(),
                    ));
                }
                let Some(b) = self.buckets.get_mut(bucket) else {
                    return Err(CatalogError::NoSuchBucket(bucket.clone()));
                };
                b.versioning = *versioning;
                Ok(Outcome::BucketVersioningSet { bucket: bucket.clone(), versioning: *versioning })
            }
            Command::CreateKey { key } => {
                check_key(key)?;
                if self.keys.contains_key(&key.id) {
                    return Err(CatalogError::KeyExists(key.id.clone()));
                }
                self.keys.insert(key.id.clone(), key.clone());
                Ok(Outcome::KeyCreated { key: key.clone() })
            }
            Command::RevokeKey { id } => {
                let Some(key) = self.keys.get(id) else { return Err(CatalogError::NoSuchKey(id.clone())) };
                if key.may(Permission::Admin) && !self.keys.values().any(|k| k.id != *id && k.may(Permission::Admin)) {
                    return Err(CatalogError::LastAdminKey(id.clone()));
                }
                if let Some(k) = self.keys.get_mut(id) {
                    k.enabled = false;
                }
                Ok(Outcome::KeyRevoked { id: id.clone() })
            }
            Command::SetRepairHold { hold } => {
                self.repair.hold = *hold;
                Ok(Outcome::RepairHold { hold: *hold })
            }
            Command::Stage { change } => {
                if !change.is_capacity_change() {
                    return Err(CatalogError::Staging(format!(
                        "only capacity changes are staged (node add, remove, set-weight, drain; site add; PG split), not {}",
                        change.name()
                    )));
                }
                if let Command::SplitPgs { count } = **change
                    && let Some(Command::SplitPgs { count: before }) =
                        self.staged.iter().find(|c| matches!(c, Command::SplitPgs { .. }))
                {
                    return Err(CatalogError::Staging(format!(
                        "a split into {before} PGs is already staged; discard it (sillok admin rebalance discard) \
                         to stage one into {count}"
                    )));
                }
                let mut staged = self.staged.clone();
                staged.push((**change).clone());
                let (_, added) = self.staged_map(map, &staged)?;
                let node = if matches!(**change, Command::AddNode { .. }) { added.last().copied() } else { None };
                self.staged = staged;
                Ok(Outcome::Staged { staged: self.staged.len(), node })
            }
            Command::DropEarlierRows { epoch, pgs } => {
                if map.epoch != *epoch {
                    return Err(CatalogError::Staging(format!(
                        "the map moved from epoch {epoch} to {} since the rows were checked",
                        map.epoch
                    )));
                }
                let next = map.without_earlier_rows(pgs);
                let epoch = next.epoch;
                self.map = Some(next);
                Ok(Outcome::RowsDropped { epoch, pgs: pgs.len() })
            }
            Command::CancelMoves => {
                if map.previous.is_empty() {
                    return Err(CatalogError::Staging(
                        "no move is in progress: every PG is where the map puts it".into(),
                    ));
                }
                let next = map.with_moves_cancelled()?;
                let epoch = next.epoch;
                self.map = Some(next);
                Ok(Outcome::Map { epoch })
            }
            Command::SetRebalancePaused { paused } => {
                self.repair.rebalance_paused = *paused;
                Ok(Outcome::RebalancePaused { paused: *paused })
            }
            Command::DiscardStaged => {
                let changes = std::mem::take(&mut self.staged).len();
                Ok(Outcome::Discarded { changes })
            }
            Command::ApplyStaged => {
                if self.staged.is_empty() {
                    return Err(CatalogError::Staging("nothing is staged".into()));
                }
                let (new_map, added) = self.staged_map(map, &self.staged)?;
                check_copies(map, &new_map.topology)?;
                check_removals(map, &new_map.topology)?;
                let epoch = new_map.epoch;
                self.map = Some(new_map);
                if let Some(last) = added.last() {
                    self.next_node_id = last.0 + 1;
                }
                let changes = std::mem::take(&mut self.staged).len();
                Ok(Outcome::Applied { epoch, changes, added })
            }
            Command::SetRepairThrottle { mib_per_s, concurrency } => {
                if *concurrency == Some(0) {
                    return Err(CatalogError::InvalidThrottle(
                        "a concurrency of 0 would stop the rebuild; give at least 1".into(),
                    ));
                }
                let old = self.repair.throttle.unwrap_or_default();
                let throttle = crate::api::RepairThrottle {
                    mib_per_s: mib_per_s.or(old.mib_per_s),
                    concurrency: concurrency.or(old.concurrency),
                };
                self.repair.throttle = Some(throttle);
                Ok(Outcome::RepairThrottle { throttle })
            }
            Command::SplitPgs { .. } => {
                let (new_map, _) = self.staged_map(map, std::slice::from_ref(cmd))?;
                let epoch = new_map.epoch;
                self.map = Some(new_map);
                Ok(Outcome::Map { epoch })
            }
            _ => {
                let (topology, added) = self.changed_topology(&map.topology, cmd)?;
                let new_map = map.with_topology(topology)?;
                check_copies(map, &new_map.topology)?;
                check_removals(map, &new_map.topology)?;
                let epoch = new_map.epoch;
                self.map = Some(new_map);
                let operator = || "set by an operator".to_string();
                if let Command::SetNodeState { id, state, reason, at_ms } = cmd {
                    let reason = reason.clone().unwrap_or_else(operator);
                    self.repair.transitions.insert(*id, Transition { state: *state, reason, at_ms: *at_ms });
                }
                if let Command::SetSiteState { site, state, reason, at_ms } = cmd {
                    let reason = reason.clone().unwrap_or_else(operator);
                    let nodes: Vec<NodeId> =
                        self.map.iter().flat_map(|m| m.topology.nodes_in(site)).map(|n| n.id).collect();
                    for id in nodes {
                        let t = Transition { state: *state, reason: reason.clone(), at_ms: *at_ms };
                        self.repair.transitions.insert(id, t);
                    }
                }
                Ok(match added {
                    Some(id) => {
                        self.next_node_id = id.0 + 1;
                        Outcome::NodeAdded { id, epoch }
                    }
                    None => Outcome::Map { epoch },
                })
            }
        }
    }

    /// The map the `staged` changes make of `map`, one epoch on, and the ids
    /// of the nodes they add: a staged PG split first
    /// (`PlacementMap::split`: children on their parents' rows), then the
    /// assignment for the staged topology, which places every PG.
    pub fn staged_map(
        &self,
        map: &PlacementMap,
        staged: &[Command],
    ) -> Result<(PlacementMap, Vec<NodeId>), CatalogError> {
        let (topology, added) = self.staged_topology(map, staged)?;
        let split = staged.iter().find_map(|c| match c {
            Command::SplitPgs { count } => Some(*count),
            _ => None,
        });
        let start = match split {
            Some(count) => map.split(count)?,
            None => map.clone(),
        };
        Ok((start.with_topology(topology)?, added))
    }

    /// The topology after the `staged` changes, in order, and the ids the
    /// nodes they add get.
    pub fn staged_topology(
        &self,
        map: &PlacementMap,
        staged: &[Command],
    ) -> Result<(Topology, Vec<NodeId>), CatalogError> {
        let mut t = map.topology.clone();
        let mut added = Vec::new();
        for (i, cmd) in staged.iter().enumerate() {
            let (next, id) = self.changed_topology(&t, cmd).map_err(|e| {
                CatalogError::Staging(format!("staged change {} ({}) no longer applies: {e}", i + 1, cmd.name()))
            })?;
            t = next;
            added.extend(id);
        }
        Ok((t, added))
    }

    /// The topology a map command asks for (and the id of an added node).
    fn changed_topology(&self, base: &Topology, cmd: &Command) -> Result<(Topology, Option<NodeId>), CatalogError> {
        let mut t = base.clone();
        let node_mut = |t: &mut Topology, id: NodeId| -> Result<usize, CatalogError> {
            t.nodes.iter().position(|n| n.id == id).ok_or_else(|| CatalogError::NoSuchNode(id.to_string()))
        };
        let mut added = None;
        match cmd {
            // Changes the PG count, not the topology (`staged_map`).
            Command::SplitPgs { .. } => {}
            Command::AddSite { site } => {
                if site.is_empty() || site.contains(char::is_whitespace) {
                    return Err(CatalogError::Placement(format!("{site:?} is not a usable site name")));
                }
                if t.sites.iter().any(|s| s.id == *site) {
                    return Err(CatalogError::SiteExists(site.clone()));
                }
                t.sites.push(Site { id: site.clone() });
            }
            Command::RemoveSite { site } => {
                if !t.sites.iter().any(|s| s.id == *site) {
                    return Err(CatalogError::NoSuchSite(site.clone()));
                }
                t.sites.retain(|s| s.id != *site);
                t.nodes.retain(|n| n.site != *site);
            }
            Command::SetSiteState { site, state, .. } => {
                if !t.sites.iter().any(|s| s.id == *site) {
                    return Err(CatalogError::NoSuchSite(site.clone()));
                }
                for n in t.nodes.iter_mut().filter(|n| n.site == *site) {
                    n.state = *state;
                }
            }
            Command::AddNode { site, addr, weight } => {
                if !t.sites.iter().any(|s| s.id == *site) {
                    return Err(CatalogError::NoSuchSite(site.clone()));
                }
                if addr.is_empty() {
                    return Err(CatalogError::InvalidNode("a node needs an address (host:port)".into()));
                }
                if let Some(n) = t.nodes.iter().find(|n| n.addr == *addr && n.state != NodeState::Out) {
                    return Err(CatalogError::InvalidNode(format!("node {} already has address {addr}", n.id)));
                }
                check_weight(*weight)?;
                let id = NodeId(self.next_node_id.max(t.nodes.iter().map(|n| n.id.0 + 1).max().unwrap_or(1)));
                t.nodes.push(Node {
                    id,
                    site: site.clone(),
                    addr: addr.clone(),
                    weight: *weight,
                    state: NodeState::Up,
                });
                added = Some(id);
            }
            Command::RemoveNode { id } => {
                let i = node_mut(&mut t, *id)?;
                t.nodes.remove(i);
            }
            Command::SetNodeWeight { id, weight } => {
                check_weight(*weight)?;
                let i = node_mut(&mut t, *id)?;
                t.nodes[i].weight = *weight;
            }
            Command::SetNodeState { id, state, .. } => {
                let i = node_mut(&mut t, *id)?;
                t.nodes[i].state = *state;
            }
            other => unreachable!("not a map command: {other:?}"),
        }
        Ok((t, added))
    }
}

fn check_weight(w: f64) -> Result<(), CatalogError> {
    if !w.is_finite() || w <= 0.0 {
        return Err(CatalogError::InvalidNode(format!(
            "weight {w} is not usable: weights are positive numbers (drain a node to take it out)"
        )));
    }
    Ok(())
}

fn check_key(k: &KeyRecord) -> Result<(), CatalogError> {
    if k.id.len() < 3 || k.id.len() > 128 || !k.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(CatalogError::InvalidKey("key ids are 3-128 letters, digits, '-' or '_'".into()));
    }
    if k.id == sillok_rpc::auth::ACCESS_KEY_ID {
        return Err(CatalogError::InvalidKey(format!("{} is reserved for the cluster itself", k.id)));
    }
    if k.secret.len() < 16 {
        return Err(CatalogError::InvalidKey("secrets are at least 16 characters".into()));
    }
    Ok(())
}

/// Whether a node still holds its shards in a topology: listed and Up or Draining.
fn holds_data(t: &Topology, id: NodeId) -> bool {
    t.node(id).is_some_and(|n| matches!(n.state, NodeState::Up | NodeState::Draining))
}

/// Refuses a topology that takes nodes out for good (Out or removed) while a
/// PG of `old` that uses them would keep fewer than k data-holding slots.
fn check_copies(old: &PlacementMap, new: &Topology) -> Result<(), CatalogError> {
    let gone: BTreeSet<NodeId> = old
        .topology
        .nodes
        .iter()
        .filter(|n| n.state != NodeState::Out)
        .filter(|n| new.node(n.id).is_none_or(|m| m.state == NodeState::Out))
        .map(|n| n.id)
        .collect();
    if gone.is_empty() {
        return Ok(());
    }
    let k = old.profile.k as usize;
    for (pg, row) in old.slots.iter().enumerate() {
        if !row.iter().any(|n| gone.contains(n)) {
            continue;
        }
        let left = row.iter().filter(|&&n| holds_data(new, n)).count();
        if left < k {
            return Err(CatalogError::LastCopies { pg: pg as u32, left, width: row.len(), k });
        }
    }
    Ok(())
}

/// Refuses removing a node that a PG's earlier row still names: objects
/// written before a move may have their only copies there until the
/// rebuild engine has moved them and the row is dropped (`rebalance`).
/// A node marked out was lost, not removed, and is not checked here.
fn check_removals(old: &PlacementMap, new: &Topology) -> Result<(), CatalogError> {
    for n in &old.topology.nodes {
        if new.node(n.id).is_some() {
            continue;
        }
        let pgs = old.previous.values().filter(|rows| rows.iter().any(|r| r.contains(&n.id))).count();
        let current = old.slots.iter().filter(|r| r.contains(&n.id)).count();
        if pgs + current > 0 && n.state != NodeState::Out {
            return Err(CatalogError::StillHoldsData { node: n.id, pgs: pgs + current });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sillok_placement::EcProfile;

    fn topo(sites: usize, per_site: usize) -> Topology {
        let mut t = Topology::default();
        let mut id = 1;
        for s in 0..sites {
            let site = format!("site-{}", (b'a' + s as u8) as char);
            t.sites.push(Site { id: site.clone() });
            for _ in 0..per_site {
                t.nodes.push(Node {
                    id: NodeId(id),
                    site: site.clone(),
                    addr: format!("127.0.0.1:{}", 7000 + id),
                    weight: 1.0,
                    state: NodeState::Up,
                });
                id += 1;
            }
        }
        t
    }

    fn key(id: &str, perms: &[Permission]) -> KeyRecord {
        KeyRecord {
            id: id.into(),
            secret: "0123456789abcdef0123".into(),
            permissions: perms.iter().copied().collect(),
            enabled: true,
            created_at: 1,
        }
    }

    fn seeded(sites: usize, per_site: usize) -> Catalog {
        let mut c = Catalog::default();
        let map = PlacementMap::new(topo(sites, per_site), EcProfile::default(), 64).unwrap();
        let keys = vec![key("ADMIN1", &[Permission::Admin]), key("S3KEY1", &[Permission::Read, Permission::Write])];
        assert_eq!(
            c.apply(&Command::Bootstrap { region: "r".into(), map, keys }).unwrap(),
            Outcome::Bootstrapped { epoch: 1 }
        );
        c
    }

    fn bucket(name: &str) -> Bucket {
        Bucket {
            name: name.into(),
            owner: "S3KEY1".into(),
            created_at: 5,
            storage_class: STANDARD.into(),
            cors: None,
            versioning: Versioning::Unversioned,
            lifecycle: None,
        }
    }

    /// Applies a command that must be refused and checks that nothing changed.
    #[track_caller]
    fn refused(c: &mut Catalog, cmd: Command) -> CatalogError {
        let before = c.clone();
        let e = c.apply(&cmd).expect_err("must be refused");
        assert_eq!(*c, before, "a refused command changed the catalog");
        e
    }

    #[test]
    fn a_restore_seeds_an_empty_catalog_above_everything_followers_saw_and_only_once() {
        let mut old = seeded(3, 2);
        old.apply(&Command::CreateBucket { bucket: bucket("kept") }).unwrap();
        // A node state change with a reason: `repair.transitions`, a map keyed by node id.
        old.apply(&Command::SetNodeState {
            id: NodeId(2),
            state: NodeState::Down,
            reason: Some("silent".into()),
            at_ms: 1,
        })
        .unwrap();
        assert!(!old.repair.transitions.is_empty());
        old.apply(&Command::Stage { change: Box::new(Command::AddSite { site: "site-d".into() }) }).unwrap();
        let epoch = old.epoch();
        let restore = |at_ms| Command::Restore { catalog: Box::new(old.clone()), version: 500, at_ms };
        // As the Raft log carries it (JSON): the catalog comes back whole.
        let text = serde_json::to_string(&restore(7)).unwrap();
        assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), restore(7));
        let mut new = Catalog::default();
        assert_eq!(new.apply(&restore(0)).unwrap(), Outcome::Bootstrapped { epoch: epoch + RESTORE_JUMP });
        assert_eq!(new.restored_base, 500 + RESTORE_JUMP, "followers' index jumps past the backup's");
        assert!(new.buckets.contains_key("kept"));
        assert_eq!(new.staged, old.staged, "staged changes come back too");
        assert_eq!(new.keys, old.keys);
        // A later restore (of the same, older backup) lands above the first.
        let mut again = Catalog::default();
        again.apply(&restore(1_800_000_000_000)).unwrap();
        assert!(again.epoch() > new.epoch() && again.restored_base > new.restored_base);
        // Only an empty catalog is seeded.
        let before = new.clone();
        assert_eq!(new.apply(&restore(5)).unwrap(), Outcome::AlreadyBootstrapped);
        assert_eq!(new, before);
        // A backup without a map seeds nothing.
        let empty = Command::Restore { catalog: Box::default(), version: 1, at_ms: 0 };
        assert!(matches!(Catalog::default().apply(&empty), Err(CatalogError::NotBootstrapped)));
    }

    #[test]
    fn nothing_but_bootstrap_before_bootstrap_and_bootstrap_only_once() {
        let mut c = Catalog::default();
        assert_eq!(refused(&mut c, Command::CreateBucket { bucket: bucket("abc") }), CatalogError::NotBootstrapped);
        let mut c = seeded(3, 2);
        assert_eq!(c.next_node_id, 7);
        let other = PlacementMap::new(topo(4, 1), EcProfile { k: 2, m: 1 }, 8).unwrap();
        let before = c.clone();
        assert_eq!(
            c.apply(&Command::Bootstrap { region: "x".into(), map: other, keys: vec![] }).unwrap(),
            Outcome::AlreadyBootstrapped
        );
        assert_eq!(c, before);
    }

    #[test]
    fn versioning_is_enabled_and_suspended_but_never_removed() {
        let mut c = seeded(3, 2);
        c.apply(&Command::CreateBucket { bucket: bucket("ver") }).unwrap();
        assert_eq!(c.buckets["ver"].versioning, Versioning::Unversioned);
        for state in [Versioning::Enabled, Versioning::Suspended, Versioning::Enabled] {
            let set = Command::SetBucketVersioning { bucket: "ver".into(), versioning: state };
            assert_eq!(
                c.apply(&set).unwrap(),
                Outcome::BucketVersioningSet { bucket: "ver".into(), versioning: state }
            );
            assert_eq!(c.buckets["ver"].versioning, state);
        }
        let remove = Command::SetBucketVersioning { bucket: "ver".into(), versioning: Versioning::Unversioned };
        assert!(matches!(refused(&mut c, remove), CatalogError::InvalidVersioning(_)));
        assert_eq!(c.buckets["ver"].versioning, Versioning::Enabled);
        let missing = Command::SetBucketVersioning { bucket: "nope".into(), versioning: Versioning::Enabled };
        assert!(matches!(refused(&mut c, missing), CatalogError::NoSuchBucket(_)));
        // Buckets from before versioning read as unversioned, and unversioned
        // buckets are written as they were.
        let old: Bucket =
            serde_json::from_str(r#"{"name":"o","owner":"k","created_at":1,"storage_class":"STANDARD"}"#).unwrap();
        assert_eq!(old.versioning, Versioning::Unversioned);
        assert!(!serde_json::to_string(&old).unwrap().contains("versioning"));
    }

    #[test]
    fn a_bucket_cors_configuration_is_validated_set_and_removed() {
        use crate::cors::{CorsConfig, CorsRule};
        let mut c = seeded(3, 2);
        c.apply(&Command::CreateBucket { bucket: bucket("web") }).unwrap();
        let rule = CorsRule {
            allowed_origins: vec!["https://*.chat.example".into()],
            allowed_methods: vec!["GET".into(), "PUT".into()],
            ..Default::default()
        };
        let cors = CorsConfig { rules: vec![rule.clone()] };
        let set = Command::SetBucketCors { bucket: "web".into(), cors: Some(cors.clone()) };
        assert_eq!(c.apply(&set).unwrap(), Outcome::BucketCorsSet { bucket: "web".into(), set: true });
        assert_eq!(c.buckets["web"].cors.as_ref(), Some(&cors));
        assert_eq!(set.touches(), Touch::Bucket("web".into()));
        // Replicated as JSON: the command and the bucket round-trip.
        let back: Command = serde_json::from_str(&serde_json::to_string(&set).unwrap()).unwrap();
        assert_eq!(back, set);
        let mut bad = rule;
        bad.allowed_methods = vec!["PATCH".into()];
        let bad = Command::SetBucketCors { bucket: "web".into(), cors: Some(CorsConfig { rules: vec![bad] }) };
        assert!(matches!(refused(&mut c, bad), CatalogError::InvalidCors(_)));
        assert_eq!(
            refused(&mut c, Command::SetBucketCors { bucket: "nope".into(), cors: Some(cors) }),
            CatalogError::NoSuchBucket("nope".into())
        );
        let removed = c.apply(&Command::SetBucketCors { bucket: "web".into(), cors: None }).unwrap();
        assert_eq!(removed, Outcome::BucketCorsSet { bucket: "web".into(), set: false });
        assert_eq!(c.buckets["web"].cors, None);
        // A bucket stored before the field existed reads back without one,
        // and one without a configuration is stored as before.
        let old: Bucket =
            serde_json::from_str(r#"{"name":"old","owner":"K","created_at":1,"storage_class":"STANDARD"}"#).unwrap();
        assert_eq!(old.cors, None);
        assert!(!serde_json::to_string(&old).unwrap().contains("cors"));
    }

    #[test]
    fn a_bucket_lifecycle_configuration_is_validated_set_and_removed() {
        use crate::lifecycle::{Expiration, Filter, LifecycleConfig, LifecycleRule};
        let mut c = seeded(3, 2);
        c.apply(&Command::CreateBucket { bucket: bucket("media") }).unwrap();
        let rule = LifecycleRule {
            id: "tmp".into(),
            enabled: true,
            filter: Filter::Prefix("tmp/".into()),
            expiration: Some(Expiration::Days(1)),
            abort_incomplete_upload_days: None,
            noncurrent_expiration: None,
        };
        let config = LifecycleConfig { rules: vec![rule.clone()] };
        let set = Command::SetBucketLifecycle { bucket: "media".into(), lifecycle: Some(config.clone()) };
        assert_eq!(c.apply(&set).unwrap(), Outcome::BucketLifecycleSet { bucket: "media".into(), set: true });
        assert_eq!(c.buckets["media"].lifecycle.as_ref(), Some(&config));
        assert_eq!(set.touches(), Touch::Bucket("media".into()));
        let back: Command = serde_json::from_str(&serde_json::to_string(&set).unwrap()).unwrap();
        assert_eq!(back, set);
        let bad = LifecycleRule { expiration: Some(Expiration::Days(0)), ..rule };
        let bad = Command::SetBucketLifecycle {
            bucket: "media".into(),
            lifecycle: Some(LifecycleConfig { rules: vec![bad] }),
        };
        assert!(matches!(refused(&mut c, bad), CatalogError::InvalidLifecycle(_)));
        assert_eq!(
            refused(&mut c, Command::SetBucketLifecycle { bucket: "nope".into(), lifecycle: Some(config) }),
            CatalogError::NoSuchBucket("nope".into())
        );
        let removed = c.apply(&Command::SetBucketLifecycle { bucket: "media".into(), lifecycle: None }).unwrap();
        assert_eq!(removed, Outcome::BucketLifecycleSet { bucket: "media".into(), set: false });
        assert_eq!(c.buckets["media"].lifecycle, None);
        let old: Bucket =
            serde_json::from_str(r#"{"name":"old","owner":"K","created_at":1,"storage_class":"STANDARD"}"#).unwrap();
        assert_eq!(old.lifecycle, None);
        assert!(!serde_json::to_string(&old).unwrap().contains("lifecycle"));
    }

    #[test]
    fn buckets_are_unique_named_and_deletable() {
        let mut c = seeded(3, 2);
        c.apply(&Command::CreateBucket { bucket: bucket("photos") }).unwrap();
        assert_eq!(
            refused(&mut c, Command::CreateBucket { bucket: bucket("photos") }),
            CatalogError::BucketExists("photos".into())
        );
        for bad in ["ab", "Photos", "-abc", "abc-", "a..b", "192.168.1.1", "under_score"] {
            assert!(matches!(
                refused(&mut c, Command::CreateBucket { bucket: bucket(bad) }),
                CatalogError::InvalidBucketName { .. }
            ));
        }
        let mut cold = bucket("cold");
        cold.storage_class = "GLACIER".into();
        assert!(matches!(
            refused(&mut c, Command::CreateBucket { bucket: cold }),
            CatalogError::UnknownStorageClass(_)
        ));
        c.apply(&Command::DeleteBucket { name: "photos".into() }).unwrap();
        assert_eq!(
            refused(&mut c, Command::DeleteBucket { name: "photos".into() }),
            CatalogError::NoSuchBucket("photos".into())
        );
        assert!(c.buckets.is_empty());
    }

    #[test]
    fn keys_are_revoked_not_reused_and_the_last_admin_stays() {
        let mut c = seeded(3, 2);
        assert_eq!(
            refused(&mut c, Command::RevokeKey { id: "ADMIN1".into() }),
            CatalogError::LastAdminKey("ADMIN1".into())
        );
        c.apply(&Command::CreateKey { key: key("ADMIN2", &[Permission::Admin]) }).unwrap();
        c.apply(&Command::RevokeKey { id: "ADMIN1".into() }).unwrap();
        assert!(!c.keys["ADMIN1"].enabled);
        assert!(matches!(
            refused(&mut c, Command::CreateKey { key: key("ADMIN1", &[Permission::Read]) }),
            CatalogError::KeyExists(_)
        ));
        let mut short = key("SHORT", &[Permission::Read]);
        short.secret = "x".into();
        assert!(matches!(refused(&mut c, Command::CreateKey { key: short }), CatalogError::InvalidKey(_)));
        assert!(matches!(
            refused(&mut c, Command::CreateKey { key: key(sillok_rpc::auth::ACCESS_KEY_ID, &[Permission::Read]) }),
            CatalogError::InvalidKey(_)
        ));
        assert!(!format!("{:?}", c).contains("0123456789abcdef0123"), "Debug shows a secret");
    }

    #[test]
    fn map_changes_add_one_epoch_each_and_keep_the_site_rule() {
        let mut c = seeded(3, 2);
        let out = c.apply(&Command::node_state(NodeId(1), NodeState::Down)).unwrap();
        assert_eq!(out, Outcome::Map { epoch: 2 });
        c.apply(&Command::node_state(NodeId(1), NodeState::Up)).unwrap();
        let out =
            c.apply(&Command::AddNode { site: "site-b".into(), addr: "127.0.0.1:9999".into(), weight: 2.0 }).unwrap();
        assert_eq!(out, Outcome::NodeAdded { id: NodeId(7), epoch: 4 });
        c.apply(&Command::SetNodeWeight { id: NodeId(7), weight: 1.0 }).unwrap();
        c.apply(&Command::node_state(NodeId(7), NodeState::Out)).unwrap();
        c.apply(&Command::RemoveNode { id: NodeId(7) }).unwrap();
        // Ids are never reused.
        let out =
            c.apply(&Command::AddNode { site: "site-c".into(), addr: "127.0.0.1:9998".into(), weight: 1.0 }).unwrap();
        assert!(matches!(out, Outcome::NodeAdded { id: NodeId(8), .. }), "{out:?}");
        let map = c.map.as_ref().unwrap();
        assert_eq!(map.epoch, 8);
        map.validate().unwrap();
    }

    #[test]
    fn a_change_that_breaks_the_profile_is_refused_whole() {
        // 3 sites x 2 nodes with 4+2: each site holds exactly 2 slots of every PG.
        let mut c = seeded(3, 2);
        // Out-ing a whole site leaves 2 sites: 6 slots cannot fit at most 2 per site.
        let e = refused(&mut c, Command::site_state("site-a", NodeState::Out));
        assert!(matches!(e, CatalogError::Placement(_)), "{e}");
        assert!(e.to_string().contains("refused, nothing changed"), "{e}");
        // Removing one node of a 2-node site leaves that site able to hold 1 slot per PG only.
        let e = refused(&mut c, Command::RemoveNode { id: NodeId(1) });
        assert!(matches!(e, CatalogError::Placement(_)), "{e}");
        assert!(matches!(refused(&mut c, Command::AddSite { site: "site-a".into() }), CatalogError::SiteExists(_)));
        assert!(matches!(
            refused(&mut c, Command::node_state(NodeId(99), NodeState::Down)),
            CatalogError::NoSuchNode(_)
        ));
        assert!(matches!(
            refused(&mut c, Command::SetNodeWeight { id: NodeId(1), weight: f64::NAN }),
            CatalogError::InvalidNode(_)
        ));
        assert!(matches!(
            refused(&mut c, Command::AddNode { site: "nowhere".into(), addr: "h:1".into(), weight: 1.0 }),
            CatalogError::NoSuchSite(_)
        ));
        assert_eq!(c.epoch(), 1);
    }

    #[test]
    fn taking_out_the_last_copies_is_refused() {
        // 4 sites x 2 nodes with 4+2: sites hold 1 or 2 slots of each PG.
        let mut c = seeded(4, 2);
        c.apply(&Command::site_state("site-a", NodeState::Down)).unwrap();
        // With site-a down (its data unreachable), taking site-b out for good
        // would leave some PGs with fewer than 4 shards that hold data.
        let e = refused(&mut c, Command::site_state("site-b", NodeState::Out));
        assert!(matches!(e, CatalogError::LastCopies { .. }), "{e}");
        assert!(e.to_string().contains("last copies"), "{e}");
        // Once site-a is back, site-b may go.
        c.apply(&Command::site_state("site-a", NodeState::Up)).unwrap();
        c.apply(&Command::site_state("site-b", NodeState::Out)).unwrap();
        c.map.as_ref().unwrap().validate().unwrap();
    }

    #[test]
    fn a_lost_site_goes_out_in_one_change_with_its_reason_on_every_node() {
        // 3 sites x 3 nodes with 4+2: the two surviving sites can hold 3 + 3.
        let mut c = seeded(3, 3);
        c.apply(&Command::site_state("site-a", NodeState::Down)).unwrap();
        let epoch = c.epoch();
        let out = Command::SetSiteState {
            site: "site-a".into(),
            state: NodeState::Out,
            reason: Some("not heard for 3600 s".into()),
            at_ms: 7,
        };
        c.apply(&out).unwrap();
        assert_eq!(c.epoch(), epoch + 1);
        let map = c.map.as_ref().unwrap();
        map.validate().unwrap();
        for id in map.topology.nodes_in("site-a").map(|n| n.id) {
            let t = &c.repair.transitions[&id];
            assert_eq!((t.state, t.reason.as_str(), t.at_ms), (NodeState::Out, "not heard for 3600 s", 7));
            assert!(map.slots.iter().all(|row| !row.contains(&id)));
        }
    }

    #[test]
    fn node_state_changes_keep_their_reason_and_the_hold_is_kept() {
        let mut c = seeded(3, 2);
        c.apply(&Command::SetNodeState {
            id: NodeId(2),
            state: NodeState::Down,
            reason: Some("not heard for 12.0 s (down after 10 s)".into()),
            at_ms: 77,
        })
        .unwrap();
        let t = &c.repair.transitions[&NodeId(2)];
        assert_eq!(
            (t.state, t.reason.as_str(), t.at_ms),
            (NodeState::Down, "not heard for 12.0 s (down after 10 s)", 77)
        );
        c.apply(&Command::node_state(NodeId(2), NodeState::Up)).unwrap();
        assert_eq!(c.repair.transitions[&NodeId(2)].reason, "set by an operator");
        assert_eq!(c.apply(&Command::SetRepairHold { hold: true }).unwrap(), Outcome::RepairHold { hold: true });
        assert!(c.repair.hold);
        // A refused change records nothing.
        assert!(c.apply(&Command::node_state(NodeId(99), NodeState::Down)).is_err());
        assert!(!c.repair.transitions.contains_key(&NodeId(99)));
        // Catalogs written before the field read back without it.
        let mut v = serde_json::to_value(&c).unwrap();
        v.as_object_mut().unwrap().remove("repair");
        let old: Catalog = serde_json::from_value(v).unwrap();
        assert_eq!(old.repair, Repair::default());
    }

    #[test]
    fn a_staged_split_applies_with_the_other_staged_changes_as_one_map() {
        let mut c = seeded(3, 2);
        let before = c.map.clone().unwrap();
        let stage = |cmd: Command| Command::Stage { change: Box::new(cmd) };
        assert!(matches!(refused(&mut c, stage(Command::SplitPgs { count: 96 })), CatalogError::Placement(_)));
        assert!(matches!(refused(&mut c, stage(Command::SplitPgs { count: 32 })), CatalogError::Placement(_)));
        assert_eq!(
            c.apply(&stage(Command::SplitPgs { count: 256 })).unwrap(),
            Outcome::Staged { staged: 1, node: None }
        );
        let e = refused(&mut c, stage(Command::SplitPgs { count: 512 }));
        assert!(matches!(&e, CatalogError::Staging(w) if w.contains("already staged")), "{e}");
        let add = Command::AddNode { site: "site-b".into(), addr: "site-b:9".into(), weight: 1.0 };
        c.apply(&stage(add)).unwrap();
        assert_eq!(c.map.as_ref().unwrap().pg_count, 64, "staging moves nothing");
        let Outcome::Applied { epoch, changes: 2, .. } = c.apply(&Command::ApplyStaged).unwrap() else {
            panic!("not applied")
        };
        let after = c.map.clone().unwrap();
        assert_eq!((after.pg_count, after.epoch, epoch), (256, before.epoch + 1, before.epoch + 1));
        // Every child either kept its parent's row or remembers it as an
        // earlier row (where its objects are until they move).
        for child in 0..256u32 {
            let parent = before.slots(after.pg_function.parent_of(child, 256, 64));
            assert!(
                after.slots(child) == parent || after.previous[&child].first().map(Vec::as_slice) == Some(parent),
                "PG {child}"
            );
        }
        assert!(after.slots.iter().any(|r| r.contains(&NodeId(7))), "the new node got slots");
        // Applied directly (not staged), a split is one map change too.
        c.apply(&Command::SplitPgs { count: 1024 }).unwrap();
        assert_eq!(c.map.as_ref().unwrap().pg_count, 1024);
    }

    #[test]
    fn capacity_changes_wait_staged_apply_as_one_map_and_removal_waits_for_the_data_to_move() {
        let mut c = seeded(3, 2);
        let epoch = c.epoch();
        let stage = |cmd: Command| Command::Stage { change: Box::new(cmd) };
        let add = |site: &str| Command::AddNode { site: site.into(), addr: format!("{site}:9"), weight: 1.0 };
        assert_eq!(c.apply(&stage(add("site-a"))).unwrap(), Outcome::Staged { staged: 1, node: Some(NodeId(7)) });
        assert_eq!(c.apply(&stage(add("site-b"))).unwrap(), Outcome::Staged { staged: 2, node: Some(NodeId(8)) });
        assert_eq!(c.epoch(), epoch, "staging moves nothing");
        // Failure handling is not staged; a change that cannot apply is refused.
        assert!(matches!(
            refused(&mut c, stage(Command::node_state(NodeId(1), NodeState::Down))),
            CatalogError::Staging(_)
        ));
        assert!(matches!(refused(&mut c, stage(add("site-z"))), CatalogError::Staging(_)));
        let Outcome::Applied { epoch: applied, changes: 2, added } = c.apply(&Command::ApplyStaged).unwrap() else {
            panic!("not applied")
        };
        assert_eq!((applied, added), (epoch + 1, vec![NodeId(7), NodeId(8)]));
        assert!(c.staged.is_empty());
        assert_eq!(c.next_node_id, 9);
        assert!(matches!(refused(&mut c, Command::ApplyStaged), CatalogError::Staging(_)));
        // Node 1 drained: its slots move, and its earlier rows keep it named.
        c.apply(&stage(Command::node_state(NodeId(1), NodeState::Draining))).unwrap();
        c.apply(&Command::ApplyStaged).unwrap();
        let map = c.map.clone().unwrap();
        assert!(map.slots.iter().all(|r| !r.contains(&NodeId(1))));
        c.apply(&stage(Command::RemoveNode { id: NodeId(1) })).unwrap();
        assert!(matches!(refused(&mut c, Command::ApplyStaged), CatalogError::StillHoldsData { .. }));
        // Once the rows are dropped (the data moved), it can go.
        let pgs: Vec<u32> = map.previous.keys().copied().collect();
        assert!(matches!(
            refused(&mut c, Command::DropEarlierRows { epoch: map.epoch - 1, pgs: pgs.clone() }),
            CatalogError::Staging(_)
        ));
        c.apply(&Command::DropEarlierRows { epoch: map.epoch, pgs }).unwrap();
        c.apply(&Command::ApplyStaged).unwrap();
        assert!(c.map.as_ref().unwrap().topology.node(NodeId(1)).is_none());
        assert_eq!(c.apply(&Command::DiscardStaged).unwrap(), Outcome::Discarded { changes: 0 });
        // A weight change cancelled before its data moved: the slots go back.
        let before = c.map.clone().unwrap();
        c.apply(&stage(Command::SetNodeWeight { id: NodeId(3), weight: 3.0 })).unwrap();
        c.apply(&Command::ApplyStaged).unwrap();
        assert_ne!(c.map.as_ref().unwrap().slots, before.slots);
        c.apply(&Command::CancelMoves).unwrap();
        let back = c.map.as_ref().unwrap();
        assert_eq!(back.slots, before.slots);
        assert_eq!(back.epoch, before.epoch + 2);
        back.validate().unwrap();
        assert!(!back.previous.is_empty(), "the rows moved data may have reached are kept");
    }

    #[test]
    fn the_repair_throttle_keeps_fields_left_out_and_refuses_a_zero_concurrency() {
        use crate::api::RepairThrottle;
        let mut c = seeded(3, 2);
        let set = |mib_per_s, concurrency| Command::SetRepairThrottle { mib_per_s, concurrency };
        let t =
            |mib_per_s, concurrency| Outcome::RepairThrottle { throttle: RepairThrottle { mib_per_s, concurrency } };
        assert_eq!(c.apply(&set(Some(20), None)).unwrap(), t(Some(20), None));
        assert_eq!(c.apply(&set(None, Some(2))).unwrap(), t(Some(20), Some(2)));
        assert!(matches!(c.apply(&set(Some(5), Some(0))), Err(CatalogError::InvalidThrottle(_))));
        assert_eq!(c.repair.throttle, Some(RepairThrottle { mib_per_s: Some(20), concurrency: Some(2) }));
    }

    #[test]
    fn apply_is_deterministic() {
        let cmds = [
            Command::CreateBucket { bucket: bucket("one") },
            Command::AddSite { site: "site-d".into() },
            Command::AddNode { site: "site-d".into(), addr: "h:1".into(), weight: 1.0 },
            Command::AddNode { site: "site-d".into(), addr: "h:2".into(), weight: 1.5 },
            Command::node_state(NodeId(2), NodeState::Draining),
            Command::CreateBucket { bucket: bucket("one") },
        ];
        let run = || {
            let mut c = seeded(3, 2);
            let outs: Vec<_> = cmds.iter().map(|cmd| c.apply(cmd)).collect();
            (c, outs)
        };
        let (a, oa) = run();
        let (b, ob) = run();
        assert_eq!(a, b);
        assert_eq!(oa, ob);
        assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
    }
}
