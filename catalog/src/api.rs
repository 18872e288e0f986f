//! The catalog's HTTP API: routes and wire types (JSON), shared by the
//! replica's server and [`crate::CatalogClient`].
//!
//! Every request is SigV4-signed (`sillok_rpc::auth`) with the cluster secret
//! ("internal": replicas, gateways, nodes) or with an enabled admin key of the
//! catalog ("admin": `sillok admin`). Anything else is a 403 before routing.
//!
//! | route | who | what |
//! |---|---|---|
//! | `POST /v1/raft/append`, `/v1/raft/vote`, `/v1/raft/snapshot` | internal | Raft RPCs between replicas (openraft's messages as JSON) |
//! | `GET  /v1/status` | both | [`Status`]: this replica's view, the leader and its site, sites, nodes, epoch |
//! | `GET  /v1/catalog[?consistent=1]` | both | [`CatalogView`]; secrets only for internal callers; `consistent` answers from the leader after a read barrier |
//! | `GET  /v1/catalog?newer_than=N&wait_ms=M` | both | the catalog once this replica's applied index is > N (long poll, at most [`MAX_WAIT_MS`]); 204 if nothing came |
//! | `GET  /v1/catalog/changes?since=N&wait_ms=M[&map_rows=1][&only=map]` | internal | [`crate::changes::Changes`]: the changes after index N from the replica's change log (long poll like the above; 204 if none came), or `snapshot_needed` when its log no longer reaches back to N. `map_rows=1`: the caller reads map deltas (without it, a run holding one is answered `snapshot_needed`); `only=map`: the map's changes only, and the whole map instead of `snapshot_needed` (storage nodes) |
//! | `GET  /v1/catalog/read_index` | internal | [`ReadIndex`]: after a read barrier on the leader, the follower-visible index (`CatalogView::applied_index` space) a follower must have applied to see every change committed before the call |
//! | `GET  /v1/map?newer_than=N&wait_ms=M` | both | the map once its epoch is > N (long poll, at most [`MAX_WAIT_MS`]); 204 if none came |
//! | `POST /v1/propose` | both | a [`crate::Proposal`]: 200 [`Proposed`], 409 refused ([`ErrorBody`] with the refusal) |
//! | `POST /v1/membership/add` | both | [`AddReplica`]: learner, then voter |
//! | `POST /v1/membership/remove` | both | [`RemoveReplica`] |
//! | `POST /v1/report` | internal | [`NodeReport`]: a storage node's usage, kept in memory, shown by status; 204 |
//! | `POST /v1/report/gateway` | internal | [`GatewayReport`]: a gateway's clock and epoch, kept in memory, shown by status; 204 |
//!
//! Writes (propose, membership, consistent reads, read indexes) sent to a follower are
//! forwarded once to the leader it knows ([`H_FORWARDED`] marks the hop; a
//! forwarded request is never forwarded again). Every response names the
//! leader the replica knows in [`H_LEADER`] (`id@addr`), so clients go there
//! next. Errors are [`ErrorBody`]: 400 bad input, 403 auth, 404 unknown route,
//! 409 refused change, 503 no leader reachable or commit not confirmed in
//! time (the outcome is then unknown: retry with the same request id).

use serde::{Deserialize, Serialize};

use crate::state::{Bucket, CatalogError, KeyInfo, KeyRecord, Outcome};
use sillok_placement::EcProfile;
use sillok_placement::PlacementMap;
use sillok_placement::topology::{NodeId, NodeState};

/// Marks a request forwarded by a follower to the leader.
pub const H_FORWARDED: &str = "x-sillok-forwarded";
/// The leader as the answering replica knows it: `id@host:port`.
pub const H_LEADER: &str = "x-sillok-leader";
/// Longest long poll on `/v1/map`.
pub const MAX_WAIT_MS: u64 = 30_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A short code: `bad_request`, `forbidden`, `refused`, `no_leader`, `timeout`, `not_found`, `internal`.
    pub error: String,
    pub message: String,
    /// For `refused`: the catalog's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<CatalogError>,
}

/// A committed proposal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proposed {
    pub outcome: Outcome,
    /// The log index it was committed at.
    pub log_index: u64,
    pub leader: u64,
    /// The index followers see once it is applied (`CatalogView::applied_index`:
    /// the log index plus what a restore added); 0 from replicas built before.
    #[serde(default)]
    pub follower_index: u64,
}

impl Proposed {
    /// The follower-visible index to wait for to see this change.
    pub fn follower_index(&self) -> u64 {
        if self.follower_index > 0 { self.follower_index } else { self.log_index }
    }
}

/// `GET /v1/catalog/read_index`: what a follower of the change log must
/// have applied (`index`, in `CatalogView::applied_index` space, the space
/// of the change log) to see every change committed before the call; taken
/// on the leader after a read barrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadIndex {
    pub index: u64,
    /// The replica that confirmed it leads.
    pub leader: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddReplica {
    pub id: u64,
    pub addr: String,
    pub site: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveReplica {
    pub id: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MembershipChanged {
    pub voters: Vec<u64>,
    pub log_index: u64,
}

/// The catalog as the API shows it. `keys` carry secrets only for internal
/// callers (`secrets: true`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatalogView {
    pub region: String,
    pub epoch: u64,
    pub applied_index: u64,
    pub map: Option<PlacementMap>,
    pub buckets: Vec<Bucket>,
    pub keys: Vec<KeyInfo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_secrets: Vec<KeyRecord>,
    /// Capacity changes staged for the next map change, and the id the
    /// first node they add will get (`sillok admin rebalance plan`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub staged: Vec<crate::state::Command>,
    #[serde(default)]
    pub next_node_id: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub id: u64,
    pub addr: String,
    pub site: String,
    pub voter: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteStatus {
    pub id: String,
    /// The state all its nodes share, or `mixed`, or `empty`.
    pub state: String,
    pub nodes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: NodeId,
    pub site: String,
    pub addr: String,
    pub state: NodeState,
    pub weight: f64,
    /// Slots (shards of PGs) the map gives the node.
    pub slots: u64,
    /// Its slots as a share of all slots, in percent.
    pub fill_pct: f64,
    /// What the node last reported to this replica (`None`: no report yet).
    #[serde(default)]
    pub usage: Option<NodeUsage>,
    /// The last state change that came with a reason (the failure detector's,
    /// or an operator's).
    #[serde(default)]
    pub transition: Option<crate::state::Transition>,
}

/// `POST /v1/report`: what a storage node says of itself, every few seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeReport {
    pub node: NodeId,
    /// The map epoch the node follows.
    pub epoch: u64,
    pub shards: u64,
    /// Bytes in its shard files.
    pub shard_bytes: u64,
    /// The size of the file system holding its data, and what is free there.
    pub disk_total: u64,
    pub disk_free: u64,
    /// The node's clock minus its peers' (median), when it has measured it.
    #[serde(default)]
    pub clock_offset_ms: Option<i64>,
    /// The node refuses manifest writes because of its clock offset.
    #[serde(default)]
    pub refusing_writes: bool,
    /// Its rebuild engine and scrub (absent from nodes that predate them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<RepairReport>,
}

/// What a storage node's rebuild engine and scrub say of themselves, in its
/// report. Counts come from what the engine found in the manifests and on
/// disk at the start of its round, less what it has since written, fsynced
/// and verified: not from a queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairReport {
    /// Shards the engine still has to write or record, and their bytes.
    pub shards_left: u64,
    pub bytes_left: u64,
    /// The PGs it wants shards in, each with the fewest shards any object
    /// it wants there has on in-service nodes (`[pg, shards]`).
    pub pgs: Vec<(u32, u8)>,
    /// PGs it could not check in its last round (no majority of replicas answered).
    pub pgs_waiting: u64,
    /// Since the node started: shards written (decoded or copied) and verified, and their bytes.
    pub shards_written: u64,
    pub bytes_written: u64,
    /// Rebuilt bytes per second over the last report interval.
    pub bytes_per_s: u64,
    /// Shards found bad by the scrub or a reader and not yet rewritten.
    pub suspects: u64,
    /// Bytes the scrub has read and checked since the node started.
    pub scrubbed_bytes: u64,
    /// The map epoch under which the engine last finished listing what it
    /// wants (0: not yet): its other figures describe that map.
    #[serde(default)]
    pub checked_epoch: u64,
    /// The map epoch of the node's last anti-entropy round (0: none yet),
    /// and the PGs where that round missed a peer in service or pulled
    /// manifests: the others hold every manifest their rows' replicas had.
    #[serde(default)]
    pub synced_epoch: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync_behind: Vec<u32>,
}

/// The rebuild pace an operator set for every storage node; a field not set
/// leaves each node's own flag in force.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairThrottle {
    /// MiB/s of rebuilt bytes per node (0: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mib_per_s: Option<u32>,
    /// Shards rebuilt at once per node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
}

/// The answer to a node's or gateway's report: what the replica that took
/// it knows that the reporter should follow or show.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportAnswer {
    /// The replica's applied log index (the reporter keeps the newest answer).
    pub applied_index: u64,
    #[serde(default)]
    pub repair_throttle: Option<RepairThrottle>,
    /// Planned moves are paused (`sillok admin rebalance pause`).
    #[serde(default)]
    pub rebalance_paused: bool,
    /// The cluster's repair state as of this replica's reports (for the
    /// reporter's metrics page); absent before the catalog has a map.
    #[serde(default)]
    pub repair: Option<crate::repair::RepairStatus>,
}

/// `POST /v1/report/gateway`: what a gateway says of itself, every few seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayReport {
    /// The address its S3 service listens on (names it in status).
    pub gateway: String,
    pub epoch: u64,
    /// The gateway's clock minus the storage nodes' (median over nodes).
    pub clock_offset_ms: Option<i64>,
    /// The gateway refuses writes because of its clock offset.
    pub refusing_writes: bool,
}

/// A gateway's last report as a replica shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayStatus {
    #[serde(flatten)]
    pub report: GatewayReport,
    /// How long ago the report came.
    pub age_ms: u64,
}

/// A node's last report as a replica shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeUsage {
    pub shards: u64,
    pub shard_bytes: u64,
    pub disk_total: u64,
    pub disk_free: u64,
    pub epoch: u64,
    /// How long ago the report came.
    pub age_ms: u64,
    #[serde(default)]
    pub clock_offset_ms: Option<i64>,
    #[serde(default)]
    pub refusing_writes: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<RepairReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileStatus {
    pub storage_class: String,
    pub profile: EcProfile,
}

/// `GET /v1/status`: one replica's view of the catalog and of Raft.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// The replica that answered.
    pub replica: u64,
    pub replica_site: String,
    /// This replica's Raft role: leader, follower, candidate, learner.
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub leader_addr: Option<String>,
    pub leader_site: Option<String>,
    pub replicas: Vec<ReplicaStatus>,
    pub applied_index: u64,
    pub last_log_index: u64,
    /// blake3 of the catalog's canonical JSON: equal on replicas that applied
    /// the same history.
    pub catalog_digest: String,
    pub bootstrapped: bool,
    pub epoch: u64,
    pub pg_count: u32,
    /// How a key hash picks its PG (`modulo` for maps made before
    /// `top-bits`); both split (`sillok admin pg split`).
    #[serde(default)]
    pub pg_function: Option<sillok_placement::PgFunction>,
    pub profiles: Vec<ProfileStatus>,
    pub sites: Vec<SiteStatus>,
    pub nodes: Vec<NodeStatus>,
    /// Automatic `out` is held (`sillok admin repair hold`).
    #[serde(default)]
    pub repair_hold: bool,
    /// The rebuild pace set by an operator (`sillok admin repair throttle`).
    #[serde(default)]
    pub repair_throttle: Option<RepairThrottle>,
    /// Planned moves are paused (`sillok admin rebalance pause`).
    #[serde(default)]
    pub rebalance_paused: bool,
    /// Gateways that reported to this replica in the last 10 minutes.
    #[serde(default)]
    pub gateways: Vec<GatewayStatus>,
    pub buckets: usize,
    pub keys: usize,
}

/// A whole catalog as of one committed index, with every secret in it
/// (`GET /v1/backup`, `sillok admin catalog backup|export`): what
/// `sillok catalog --restore-from` seeds a new replica set with. Keep it as
/// private as the catalog's own files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatalogBackup {
    /// This layout's version (1).
    pub format: u32,
    /// When it was taken, ms since the Unix epoch (the taker's clock).
    pub taken_at_ms: i64,
    /// The replica it was read from, and its last applied Raft index.
    pub replica: u64,
    pub raft_index: u64,
    /// The catalog index followers had seen (`CatalogView::applied_index`).
    pub version: u64,
    pub catalog: crate::state::Catalog,
}

/// The backup layout this build writes and reads.
pub const BACKUP_FORMAT: u32 = 1;
