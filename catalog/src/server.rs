//! A running catalog replica: its Raft instance, its HTTP service (the
//! routes of `api`), the forwarding of writes to the leader, and the one-time
//! seeding of the catalog from the cluster file.
//!
//! Owns: the replica's listening socket, its `openraft::Raft`, and the stores
//! under its data directory (`store`).
//!
//! Invariants:
//! - Nothing is routed before the caller is authenticated: the cluster secret
//!   (internal) or an enabled admin key found in this replica's copy of the
//!   catalog (so admin works from any replica, leader or not, as long as it
//!   has applied the key). Raft RPCs and `Bootstrap` accept internal callers
//!   only. A hash-signed body is checked against its signature before use.
//! - Under mutual TLS (`sillok_rpc::tls`), the role in the caller's
//!   certificate bounds what it may call ([`role_may`]): a node never reads
//!   buckets, keys or key changes, an admin certificate never calls Raft or
//!   the change feed. Keys' secrets go only to internal callers whose
//!   certificate is a gateway's or a replica's ([`SecretsAllowed`]).
//! - A write reaches Raft only on the leader. A follower forwards it once to
//!   the leader it knows, with [`api::H_FORWARDED`]; a forwarded request that
//!   lands on a non-leader is answered 503, never forwarded again, so requests
//!   cannot loop. Every forward and every commit wait has a deadline.
//! - Seeding: a fresh replica that is listed in the initial membership calls
//!   `initialize` with it (the same membership on every replica, which
//!   openraft allows). Whichever replica becomes leader while the catalog is
//!   still empty proposes `Command::Bootstrap` from its cluster file; the
//!   first one applied wins and later ones are no-ops.
//! - On shutdown the HTTP service stops taking requests, then Raft stops.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::BodyExt;
use openraft::error::{ForwardToLeader, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{ChangeMembers, ServerState, SnapshotPolicy};
use serde::Deserialize;

use crate::api::{self, AddReplica, CatalogView, ErrorBody, MembershipChanged, Proposed, RemoveReplica, Status};
use crate::changes::{Changes, ViewChange};
use crate::raft_network::{MAX_RESPONSE, Network};
use crate::state::{CatalogError, Command, Permission};
use crate::store::{LogStore, StateMachineStore};
use crate::{Proposal, Raft, ReplicaNode, TypeConfig};
use sillok_placement::topology::NodeState;
use sillok_rpc::RpcClient as Transport;
use sillok_rpc::auth::Signer;
use sillok_rpc::server::{Caller, Policy, error, json};
use sillok_rpc::tls::{Peer, Role};

/// Largest request body (Raft snapshot chunks are at most 1 MiB of data).
pub const MAX_BODY: usize = 32 << 20;

/// Raft timing (milliseconds) and log compaction.
#[derive(Debug, Clone, Copy)]
pub struct RaftTimings {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Build a snapshot (and compact the log) every this many entries.
    pub snapshot_every: u64,
    /// Entries kept in the log behind the last snapshot (for slow followers).
    pub keep_logs: u64,
}

impl Default for RaftTimings {
    fn default() -> Self {
        RaftTimings {
            heartbeat_ms: 100,
            election_min_ms: 500,
            election_max_ms: 1000,
            snapshot_every: 1000,
            keep_logs: 500,
        }
    }
}

/// What a replica needs to run.
#[derive(Clone)]
pub struct ReplicaConfig {
    pub id: u64,
    pub site: String,
    pub listen: SocketAddr,
    /// The address other replicas and clients use (`host:port`).
    pub advertise: String,
    pub data_dir: PathBuf,
    pub cluster_secret: String,
    /// Also accepted from other processes while the cluster secret is
    /// rotated (`ClusterFile::also_accepted_secrets`).
    pub also_accepted_secrets: Vec<String>,
    /// The membership a fresh cluster starts with (every replica passes the same).
    pub initial_members: BTreeMap<u64, ReplicaNode>,
    /// `Command::Bootstrap` from the cluster file, proposed once by a leader.
    pub seed: Option<Command>,
    pub timings: RaftTimings,
    /// TCP connect deadline for calls to other replicas.
    pub connect_timeout: Duration,
    /// Deadline of one append or vote RPC.
    pub rpc_timeout: Duration,
    /// Deadline of a request forwarded to the leader.
    pub forward_timeout: Duration,
    /// How long a write waits for its commit before answering 503.
    pub commit_timeout: Duration,
    /// When the leader marks silent nodes down and out (`detector`).
    pub detector: crate::detector::DetectorSettings,
    /// Changes kept in memory for followers (`changes`).
    pub change_log_entries: usize,
}

impl std::fmt::Debug for ReplicaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaConfig")
            .field("id", &self.id)
            .field("site", &self.site)
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("data_dir", &self.data_dir)
            .field("cluster_secret", &"<redacted>")
            .field("initial_members", &self.initial_members)
            .field("timings", &self.timings)
            .finish_non_exhaustive()
    }
}

impl ReplicaConfig {
    /// A config with the default deadlines.
    pub fn new(id: u64, site: &str, listen: SocketAddr, data_dir: PathBuf, cluster_secret: &str) -> Self {
        ReplicaConfig {
            id,
            site: site.into(),
            listen,
            advertise: listen.to_string(),
            data_dir,
            cluster_secret: cluster_secret.into(),
            also_accepted_secrets: Vec::new(),
            initial_members: BTreeMap::new(),
            seed: None,
            timings: RaftTimings::default(),
            connect_timeout: Duration::from_millis(300),
            rpc_timeout: Duration::from_millis(1000),
            forward_timeout: Duration::from_millis(3000),
            commit_timeout: Duration::from_millis(2500),
            detector: Default::default(),
            change_log_entries: crate::changes::DEFAULT_CHANGE_LOG_ENTRIES,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("catalog store: {0}")]
    Store(#[from] redb::Error),
    #[error("raft: {0}")]
    Raft(String),
    #[error("invalid replica configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub(crate) struct Shared {
    pub(crate) id: u64,
    site: String,
    pub(crate) raft: Raft,
    pub(crate) sm: StateMachineStore,
    internal: Signer,
    /// The addresses this replica answers as (bound, listen, advertised): a
    /// signed request for another host is refused.
    own_addrs: Vec<String>,
    /// Nonces of accepted requests (no request is accepted twice).
    replays: sillok_rpc::replay::ReplayCache,
    transport: Transport,
    forward_timeout: Duration,
    pub(crate) commit_timeout: Duration,
    seed: Option<Command>,
    detector: crate::detector::DetectorSettings,
    /// The last usage report of each storage node, and when it came (kept in
    /// memory only: a report is a reading, not catalog state).
    pub(crate) reports: std::sync::Mutex<BTreeMap<sillok_placement::NodeId, (Instant, api::NodeReport)>>,
    /// The last report of each gateway, by its address (memory only).
    gateway_reports: std::sync::Mutex<BTreeMap<String, (Instant, api::GatewayReport)>>,
    /// The cluster's repair state as last computed from `reports` (at most
    /// once a second: every report's answer carries it).
    repair: std::sync::Mutex<Option<(Instant, Option<crate::repair::RepairStatus>)>>,
    /// The metrics page of the API address's `/metrics` (made at its first scrape).
    metrics: std::sync::OnceLock<prometheus_client::registry::Registry>,
}

/// A replica whose stores are open, whose Raft runs and whose socket is
/// bound; [`Replica::run`] serves it.
pub struct Replica {
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl Replica {
    /// Opens the stores, starts Raft (initialising a fresh cluster with
    /// `initial_members`) and binds the socket.
    pub async fn open(config: ReplicaConfig) -> Result<Replica, ReplicaError> {
        let dir = config.data_dir.clone();
        let (log, sm) = tokio::task::spawn_blocking(move || -> Result<_, ReplicaError> {
            std::fs::create_dir_all(&dir)?;
            Ok((LogStore::open(&dir)?, StateMachineStore::open(&dir)?))
        })
        .await
        .map_err(|e| ReplicaError::Raft(format!("opening the stores failed: {e}")))??;
        sm.set_change_log_entries(config.change_log_entries);
        let t = config.timings;
        let raft_config = openraft::Config {
            cluster_name: "sillok-catalog".into(),
            heartbeat_interval: t.heartbeat_ms,
            election_timeout_min: t.election_min_ms,
            election_timeout_max: t.election_max_ms,
            install_snapshot_timeout: (config.rpc_timeout.as_millis() as u64).max(1000) * 3,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_every),
            max_in_snapshot_log_to_keep: t.keep_logs,
            snapshot_max_chunk_size: 1 << 20,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ReplicaError::Config(e.to_string()))?;
        let internal = Signer::new(&config.cluster_secret).accepting(&config.also_accepted_secrets);
        let transport = Transport::new(internal.clone(), config.connect_timeout);
        let network = Network { transport: transport.clone(), rpc_timeout: config.rpc_timeout };
        let raft = Raft::new(config.id, Arc::new(raft_config), network, log, sm.clone())
            .await
            .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        let fresh = !raft.is_initialized().await.map_err(|e| ReplicaError::Raft(e.to_string()))?;
        if fresh && config.initial_members.contains_key(&config.id) {
            match raft.initialize(config.initial_members.clone()).await {
                Ok(()) => tracing::info!(
                    replica = config.id,
                    members = ?config.initial_members.keys().collect::<Vec<_>>(),
                    "catalog cluster initialised"
                ),
                Err(e) => tracing::info!(replica = config.id, reason = %e, "catalog cluster already initialised"),
            }
        } else if fresh {
            tracing::info!(replica = config.id, "fresh replica, not in the initial membership: waiting to be added");
        }
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        tracing::info!(replica = config.id, site = %config.site, %addr, data_dir = %config.data_dir.display(), "catalog replica bound");
        let shared = Arc::new(Shared {
            id: config.id,
            site: config.site.clone(),
            raft,
            sm,
            internal,
            own_addrs: vec![addr.to_string(), config.listen.to_string(), config.advertise.clone()],
            replays: Default::default(),
            transport,
            forward_timeout: config.forward_timeout,
            commit_timeout: config.commit_timeout,
            seed: config.seed.clone(),
            detector: config.detector,
            reports: Default::default(),
            gateway_reports: Default::default(),
            repair: Default::default(),
            metrics: Default::default(),
        });
        Ok(Replica { shared, listener, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn raft(&self) -> Raft {
        self.shared.raft.clone()
    }

    /// Opens the ops listener (`/health`, `/ready`, `/metrics`) on `addr`;
    /// returns the bound address. See `crate::ops`.
    pub async fn serve_ops(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        crate::ops::serve(&self.shared, addr).await
    }

    /// Serves until `shutdown` completes, then stops Raft.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ReplicaError> {
        let Replica { shared, listener, addr } = self;
        let seeder = tokio::spawn(seed_when_leader(shared.clone()));
        let detector = tokio::spawn(crate::detector::detect_forever(shared.clone(), shared.detector));
        let pruner = tokio::spawn(crate::rebalance::prune_forever(shared.clone(), Duration::from_secs(2)));
        let app = router(shared.clone());
        let res = sillok_rpc::server::serve(listener, app, shutdown).await;
        seeder.abort();
        detector.abort();
        pruner.abort();
        if let Err(e) = shared.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not shut down cleanly");
        }
        tracing::info!(replica = shared.id, %addr, "catalog replica stopped");
        res.map_err(ReplicaError::Io)
    }
}

/// Proposes the seed while this replica leads and the catalog is empty.
async fn seed_when_leader(sh: Arc<Shared>) {
    let Some(seed) = sh.seed.clone() else { return };
    let mut metrics = sh.raft.metrics();
    loop {
        if sh.sm.read(|st| st.catalog.is_bootstrapped()) {
            return;
        }
        let leading = {
            let m = metrics.borrow_and_update();
            m.state == ServerState::Leader && m.current_leader == Some(sh.id)
        };
        if leading {
            let p = Proposal { request_id: format!("bootstrap-by-{}", sh.id), command: seed.clone() };
            match tokio::time::timeout(sh.commit_timeout, sh.raft.client_write(p)).await {
                Ok(Ok(r)) => match r.data {
                    Ok(outcome) => {
                        tracing::info!(
                            ?outcome,
                            index = r.log_id.index,
                            from = if matches!(sh.seed, Some(Command::Restore { .. })) {
                                "a backup"
                            } else {
                                "the cluster file"
                            },
                            "catalog seeded"
                        )
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the cluster file's catalog was refused; fix the cluster file");
                        return;
                    }
                },
                Ok(Err(e)) => tracing::info!(error = %e, "seeding the catalog: will retry"),
                Err(_) => tracing::info!("seeding the catalog: no commit in time, will retry"),
            }
        }
        let _ = tokio::time::timeout(Duration::from_millis(300), metrics.changed()).await;
    }
}

fn router(sh: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/raft/append", post(raft_append))
        .route("/v1/raft/vote", post(raft_vote))
        .route("/v1/raft/snapshot", post(raft_snapshot))
        .route("/v1/status", get(status))
        .route("/v1/catalog", get(catalog))
        .route("/v1/catalog/changes", get(changes))
        .route("/v1/catalog/read_index", get(read_index))
        .route("/v1/map", get(map))
        .route("/v1/backup", get(backup))
        .route("/v1/propose", post(propose))
        .route("/v1/membership/add", post(membership_add))
        .route("/v1/membership/remove", post(membership_remove))
        .route("/v1/report", post(report))
        .route("/v1/report/gateway", post(report_gateway))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route".into()) })
        .layer(middleware::from_fn_with_state(sh.clone(), authenticate))
        .with_state(sh)
}

// ------------------------------------------------------------------ helpers

fn refused(e: CatalogError) -> Response {
    json(StatusCode::CONFLICT, &ErrorBody { error: "refused".into(), message: e.to_string(), refusal: Some(e) })
}

fn parse<T: for<'a> Deserialize<'a>>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "bad_request", format!("bad JSON body: {e}")))
}

/// Whether the caller may be sent the keys' secrets: a Sillok process (signed
/// with the cluster secret) whose certificate, under mutual TLS, is a
/// gateway's (it verifies S3 signatures) or a replica's. Set by
/// [`authenticate`] for every request.
#[derive(Debug, Clone, Copy)]
struct SecretsAllowed(bool);

/// What a peer of each role may call here (the caller's role comes from its
/// TLS certificate; see the role table in docs/design.md). Nodes: the map,
/// its changes (`only=map`) and their reports, never buckets or keys;
/// gateways: what following the catalog, verifying S3 signatures and bucket
/// changes need; admin: status, the catalog without secrets, proposals,
/// backups and membership, never Raft or the change feed; replicas: all.
/// Unknown paths pass on (to a 404).
fn role_may(role: Role, path: &str, query: Option<&str>) -> bool {
    use Role::{Admin, Catalog, Gateway, Node};
    let map_only = query.is_some_and(|q| q.split('&').any(|kv| kv == "only=map"));
    match path {
        "/v1/raft/append" | "/v1/raft/vote" | "/v1/raft/snapshot" => role == Catalog,
        "/v1/status" | "/v1/map" | "/metrics" => true,
        "/v1/catalog" => matches!(role, Gateway | Catalog | Admin),
        "/v1/catalog/changes" => matches!(role, Gateway | Catalog) || (role == Node && map_only),
        "/v1/catalog/read_index" => matches!(role, Gateway | Catalog),
        "/v1/backup" | "/v1/membership/add" | "/v1/membership/remove" => matches!(role, Admin | Catalog),
        "/v1/propose" => matches!(role, Gateway | Admin | Catalog),
        "/v1/report" => matches!(role, Node | Catalog),
        "/v1/report/gateway" => matches!(role, Gateway | Catalog),
        _ => true,
    }
}

fn internal_only(caller: &Caller) -> Result<(), Response> {
    match caller {
        Caller::Internal => Ok(()),
        Caller::Key(id) => Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("access key {id} may not call this route: it is for Sillok processes (cluster secret) only"),
        )),
    }
}

fn no_leader() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_leader",
        "no catalog leader right now (an election is running, or a majority of replicas is unreachable); retry in a moment"
            .into(),
    )
}

/// Sends a write to the leader that `fwd` names, once.
async fn forward(
    sh: &Shared,
    headers: &HeaderMap,
    method: Method,
    path_and_query: &str,
    body: Bytes,
    fwd: &ForwardToLeader<u64, ReplicaNode>,
) -> Response {
    if headers.contains_key(api::H_FORWARDED) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_leader",
            format!("replica {} is no longer the leader; retry", sh.id),
        );
    }
    let (Some(id), Some(node)) = (fwd.leader_id, fwd.leader_node.as_ref()) else { return no_leader() };
    if id == sh.id {
        return no_leader();
    }
    let extra = [(api::H_FORWARDED, "1".to_string())];
    match sh
        .transport
        .call(method, &node.addr, path_and_query, body.to_vec(), &extra, sh.forward_timeout, MAX_RESPONSE)
        .await
    {
        Ok(r) => {
            let mut resp = (r.status, r.body).into_response();
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            if let Some(l) = r.headers.get(api::H_LEADER) {
                resp.headers_mut().insert(api::H_LEADER, l.clone());
            }
            resp
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_leader",
            format!(
                "the leader (replica {id} at {}, site {}) did not answer: {e}; retry in a moment",
                node.addr, node.site
            ),
        ),
    }
}

fn leader_header(sh: &Shared) -> Option<HeaderValue> {
    let m = sh.raft.metrics();
    let m = m.borrow();
    let id = m.current_leader?;
    let node = m.membership_config.membership().get_node(&id)?;
    HeaderValue::from_str(&format!("{id}@{}", node.addr)).ok()
}

/// Authenticates every request (see the module's invariants) and names the
/// leader in every response.
async fn authenticate(State(sh): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let admin_key = |id: &str| {
        sh.sm
            .read(|st| st.catalog.keys.get(id).cloned())
            .filter(|k| k.may(Permission::Admin))
            .map(|k| Signer::with_key(id, &k.secret))
    };
    // Prometheus cannot sign: the metrics page (figures only) is open.
    if method == Method::GET && path == "/metrics" {
        return next.run(req).await;
    }
    let policy = Policy {
        max_body: MAX_BODY,
        unsigned_ok: &|_, _| false,
        lookup: &admin_key,
        host_ok: &|h| sh.own_addrs.iter().any(|a| a == h),
        replays: &sh.replays,
    };
    let mut req = match sillok_rpc::server::authenticate(req, &sh.internal, &policy).await {
        Ok(req) => req,
        Err(refusal) => return refusal,
    };
    let peer = req.extensions().get::<Peer>().cloned();
    if let Some(p) = &peer
        && !role_may(p.role, &path, req.uri().query())
    {
        tracing::warn!(%method, %path, role = ?p.role, "refused: the caller's role may not call this route");
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("a {:?} certificate may not call {path} (see the role table in docs/design.md)", p.role),
        );
    }
    let internal = req.extensions().get::<Caller>() == Some(&Caller::Internal);
    let secrets = internal && peer.is_none_or(|p| matches!(p.role, Role::Gateway | Role::Catalog));
    req.extensions_mut().insert(SecretsAllowed(secrets));
    let mut resp = next.run(req).await;
    if let Some(l) = leader_header(&sh) {
        resp.headers_mut().insert(api::H_LEADER, l);
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if resp.status().is_server_error() {
        tracing::info!(%method, %path, status = resp.status().as_u16(), ms, "catalog request failed");
    } else {
        tracing::debug!(%method, %path, status = resp.status().as_u16(), ms, "catalog request");
    }
    resp
}

// ------------------------------------------------------------------- routes

async fn raft_append(State(sh): State<Arc<Shared>>, Extension(caller): Extension<Caller>, body: Bytes) -> Response {
    if let Err(r) = internal_only(&caller) {
        return r;
    }
    let req: AppendEntriesRequest<TypeConfig> = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    json(StatusCode::OK, &sh.raft.append_entries(req).await)
}

async fn raft_vote(State(sh): State<Arc<Shared>>, Extension(caller): Extension<Caller>, body: Bytes) -> Response {
    if let Err(r) = internal_only(&caller) {
        return r;
    }
    let req: VoteRequest<u64> = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    json(StatusCode::OK, &sh.raft.vote(req).await)
}

async fn raft_snapshot(State(sh): State<Arc<Shared>>, Extension(caller): Extension<Caller>, body: Bytes) -> Response {
    if let Err(r) = internal_only(&caller) {
        return r;
    }
    let req: InstallSnapshotRequest<TypeConfig> = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    json(StatusCode::OK, &sh.raft.install_snapshot(req).await)
}

/// This replica's view (see [`Status`]).
fn status_of(sh: &Shared) -> Status {
    let m = sh.raft.metrics().borrow().clone();
    let role = match m.state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    };
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let replicas = membership
        .nodes()
        .map(|(id, n)| api::ReplicaStatus {
            id: *id,
            addr: n.addr.clone(),
            site: n.site.clone(),
            voter: voters.contains(id),
        })
        .collect();
    let leader_node = m.current_leader.and_then(|l| membership.get_node(&l).cloned());
    sh.sm.read(|st| {
        let c = &st.catalog;
        let digest = blake3::hash(&serde_json::to_vec(c).unwrap_or_default()).to_hex().to_string();
        let (mut sites, mut nodes, mut profiles, mut pg_count) = (Vec::new(), Vec::new(), Vec::new(), 0);
        if let Some(map) = &c.map {
            pg_count = map.pg_count;
            profiles = c
                .storage_classes()
                .into_iter()
                .map(|(storage_class, profile)| api::ProfileStatus { storage_class, profile })
                .collect();
            let mut slots: BTreeMap<sillok_placement::NodeId, u64> = BTreeMap::new();
            for row in &map.slots {
                for n in row {
                    *slots.entry(*n).or_default() += 1;
                }
            }
            let total: u64 = slots.values().sum::<u64>().max(1);
            let reports = sh.reports.lock().expect("reports lock");
            for n in &map.topology.nodes {
                let s = slots.get(&n.id).copied().unwrap_or(0);
                let usage = reports.get(&n.id).map(|(at, r)| api::NodeUsage {
                    shards: r.shards,
                    shard_bytes: r.shard_bytes,
                    disk_total: r.disk_total,
                    disk_free: r.disk_free,
                    epoch: r.epoch,
                    age_ms: at.elapsed().as_millis() as u64,
                    clock_offset_ms: r.clock_offset_ms,
                    refusing_writes: r.refusing_writes,
                    repair: r.repair.clone(),
                });
                nodes.push(api::NodeStatus {
                    id: n.id,
                    site: n.site.clone(),
                    addr: n.addr.clone(),
                    state: n.state,
                    weight: n.weight,
                    slots: s,
                    fill_pct: (s as f64) * 100.0 / total as f64,
                    usage,
                    transition: c.repair.transitions.get(&n.id).cloned(),
                });
            }
            for s in &map.topology.sites {
                let states: BTreeSet<&'static str> =
                    map.topology.nodes_in(&s.id).map(|n| state_name(n.state)).collect();
                let state = match states.len() {
                    0 => "empty".to_string(),
                    1 => states.into_iter().next().unwrap_or("empty").to_string(),
                    _ => "mixed".to_string(),
                };
                sites.push(api::SiteStatus { id: s.id.clone(), state, nodes: map.topology.nodes_in(&s.id).count() });
            }
        }
        let gateways = sh
            .gateway_reports
            .lock()
            .expect("gateway reports lock")
            .values()
            .filter(|(at, _)| at.elapsed() < Duration::from_secs(600))
            .map(|(at, r)| api::GatewayStatus { report: r.clone(), age_ms: at.elapsed().as_millis() as u64 })
            .collect();
        Status {
            replica: sh.id,
            replica_site: sh.site.clone(),
            role: role.into(),
            term: m.current_term,
            leader: m.current_leader,
            leader_addr: leader_node.as_ref().map(|n| n.addr.clone()),
            leader_site: leader_node.as_ref().map(|n| n.site.clone()),
            replicas,
            applied_index: st.applied.map_or(0, |l| l.index),
            last_log_index: m.last_log_index.unwrap_or(0),
            catalog_digest: digest,
            bootstrapped: c.is_bootstrapped(),
            epoch: c.epoch(),
            pg_count,
            pg_function: c.map.as_ref().map(|m| m.pg_function),
            profiles,
            sites,
            nodes,
            repair_hold: c.repair.hold,
            repair_throttle: c.repair.throttle,
            rebalance_paused: c.repair.rebalance_paused,
            gateways,
            buckets: c.buckets.len(),
            keys: c.keys.len(),
        }
    })
}

/// `POST /v1/report/gateway`: a gateway's clock and epoch (internal callers only).
async fn report_gateway(State(sh): State<Arc<Shared>>, Extension(caller): Extension<Caller>, body: Bytes) -> Response {
    if let Err(r) = internal_only(&caller) {
        return r;
    }
    let r: api::GatewayReport = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    sh.gateway_reports.lock().expect("gateway reports lock").insert(r.gateway.clone(), (Instant::now(), r));
    json(StatusCode::OK, &report_answer(&sh))
}

/// The cluster's repair state from this replica's reports, recomputed at
/// most once a second.
pub(crate) fn repair_state(sh: &Shared) -> Option<crate::repair::RepairStatus> {
    if let Some((at, r)) = sh.repair.lock().expect("repair lock").as_ref()
        && at.elapsed() < Duration::from_secs(1)
    {
        return r.clone();
    }
    let status = status_of(sh);
    let r = sh.sm.read(|st| st.catalog.map.clone()).map(|map| crate::repair::RepairStatus::of(&status, &map));
    *sh.repair.lock().expect("repair lock") = Some((Instant::now(), r.clone()));
    r
}

fn report_answer(sh: &Shared) -> api::ReportAnswer {
    let (applied_index, repair_throttle, rebalance_paused) = sh
        .sm
        .read(|st| (st.applied.map_or(0, |l| l.index), st.catalog.repair.throttle, st.catalog.repair.rebalance_paused));
    api::ReportAnswer { applied_index, repair_throttle, rebalance_paused, repair: repair_state(sh) }
}

/// `GET /metrics` (unsigned): this replica's Raft figures and the cluster's
/// repair state, the page the ops listener serves (`crate::ops`).
async fn metrics(State(sh): State<Arc<Shared>>) -> Response {
    let registry = sh.metrics.get_or_init(|| crate::ops::registry(&sh));
    sillok_rpc::ops::metrics_response(registry)
}

pub fn state_name(s: NodeState) -> &'static str {
    match s {
        NodeState::Up => "up",
        NodeState::Down => "down",
        NodeState::Draining => "draining",
        NodeState::Out => "out",
    }
}

/// `POST /v1/report`: a storage node's usage (internal callers only).
async fn report(State(sh): State<Arc<Shared>>, Extension(caller): Extension<Caller>, body: Bytes) -> Response {
    if let Err(r) = internal_only(&caller) {
        return r;
    }
    let r: api::NodeReport = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    sh.reports.lock().expect("reports lock").insert(r.node, (Instant::now(), r));
    json(StatusCode::OK, &report_answer(&sh))
}

async fn status(State(sh): State<Arc<Shared>>) -> Response {
    json(StatusCode::OK, &status_of(&sh))
}

#[derive(Deserialize)]
struct CatalogQuery {
    consistent: Option<String>,
    /// Long poll: answer once the applied index is above this.
    newer_than: Option<u64>,
    wait_ms: Option<u64>,
}

fn view(sh: &Shared, secrets: SecretsAllowed) -> CatalogView {
    sh.sm.read(|st| {
        let c = &st.catalog;
        CatalogView {
            region: c.region.clone(),
            epoch: c.epoch(),
            // Followers order catalogs by this: it keeps growing across a restore.
            applied_index: c.restored_base + st.applied.map_or(0, |l| l.index),
            map: c.map.clone(),
            buckets: c.buckets.values().cloned().collect(),
            keys: c.keys.values().map(|k| k.info()).collect(),
            key_secrets: if secrets.0 { c.keys.values().cloned().collect() } else { Vec::new() },
            staged: c.staged.clone(),
            next_node_id: c.next_node_id,
        }
    })
}

async fn catalog(
    State(sh): State<Arc<Shared>>,
    Extension(secrets): Extension<SecretsAllowed>,
    Query(q): Query<CatalogQuery>,
    headers: HeaderMap,
) -> Response {
    let consistent = matches!(q.consistent.as_deref(), Some("1" | "true"));
    if let Some(newer_than) = q.newer_than {
        // Long poll (followers of the whole catalog, e.g. gateways): wait for
        // an applied index above `newer_than`; 204 if none came in time.
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(q.wait_ms.unwrap_or(0).min(api::MAX_WAIT_MS));
        let mut rx = sh.sm.subscribe();
        loop {
            if rx.borrow_and_update().applied_index > newer_than {
                return json(StatusCode::OK, &view(&sh, secrets));
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return StatusCode::NO_CONTENT.into_response(),
            }
        }
    }
    if consistent {
        match tokio::time::timeout(sh.commit_timeout, sh.raft.ensure_linearizable()).await {
            Err(_) => {
                return error(StatusCode::SERVICE_UNAVAILABLE, "timeout", "no read barrier in time; retry".into());
            }
            Ok(Err(e)) => {
                if let Some(fwd) = e.forward_to_leader() {
                    let fwd = fwd.clone();
                    let resp =
                        forward(&sh, &headers, Method::GET, "/v1/catalog?consistent=1", Bytes::new(), &fwd).await;
                    // The leader answered this replica (an internal caller),
                    // so its answer holds the key secrets: an admin caller
                    // must not get them.
                    return if secrets.0 { resp } else { without_secrets(resp).await };
                }
                return error(StatusCode::SERVICE_UNAVAILABLE, "no_leader", e.to_string());
            }
            Ok(Ok(_)) => {}
        }
    }
    json(StatusCode::OK, &view(&sh, secrets))
}

/// `GET /v1/backup`: the whole catalog after a read barrier, on the leader
/// (a follower forwards it there). Admin keys and internal callers only, as
/// for every route; it holds every secret, so `sillok admin catalog backup`
/// writes it 0600.
async fn backup(State(sh): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match tokio::time::timeout(sh.commit_timeout, sh.raft.ensure_linearizable()).await {
        Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "timeout", "no read barrier in time; retry".into()),
        Ok(Err(e)) => {
            if let Some(fwd) = e.forward_to_leader() {
                let fwd = fwd.clone();
                return forward(&sh, &headers, Method::GET, "/v1/backup", Bytes::new(), &fwd).await;
            }
            return error(StatusCode::SERVICE_UNAVAILABLE, "no_leader", e.to_string());
        }
        Ok(Ok(_)) => {}
    }
    let b = sh.sm.read(|st| {
        let raft_index = st.applied.map_or(0, |l| l.index);
        api::CatalogBackup {
            format: api::BACKUP_FORMAT,
            taken_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            replica: sh.id,
            raft_index,
            version: st.catalog.restored_base + raft_index,
            catalog: st.catalog.clone(),
        }
    });
    if !b.catalog.is_bootstrapped() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "not_seeded", "the catalog is not seeded yet".into());
    }
    tracing::info!(raft_index = b.raft_index, "catalog backup taken");
    json(StatusCode::OK, &b)
}

/// A forwarded catalog answer with the key secrets taken out.
async fn without_secrets(resp: Response) -> Response {
    let (parts, body) = resp.into_parts();
    let bytes = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error(StatusCode::BAD_GATEWAY, "internal", format!("the leader's answer was unreadable: {e}"));
        }
    };
    if parts.status != StatusCode::OK {
        return Response::from_parts(parts, Body::from(bytes));
    }
    match serde_json::from_slice::<CatalogView>(&bytes) {
        Ok(mut v) => {
            v.key_secrets.clear();
            let mut out = json(StatusCode::OK, &v);
            if let Some(l) = parts.headers.get(api::H_LEADER) {
                out.headers_mut().insert(api::H_LEADER, l.clone());
            }
            out
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, "internal", format!("the leader's answer was not a catalog: {e}")),
    }
}

#[derive(Deserialize)]
struct ChangesQuery {
    since: u64,
    wait_ms: Option<u64>,
    /// `1`: the follower reads map changes as deltas ([`ViewChange::MapDelta`]).
    map_rows: Option<String>,
    /// `map`: the follower sees the map's changes only (a storage node).
    only: Option<String>,
}

/// `GET /v1/catalog/changes?since=N&wait_ms=M[&map_rows=1][&only=map]`
/// (internal callers only: key changes carry secrets): the changes after
/// `since` from this replica's change log, or "snapshot needed"; 204 if
/// nothing came within the wait. A follower that does not read map deltas
/// (one built before them) is told to take the whole view when the run
/// holds one. A map-only follower is never told to take a snapshot: it is
/// sent the whole map instead (`StateMachineStore::map_changes_since`).
async fn changes(
    State(sh): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ChangesQuery>,
) -> Response {
    if let Err(r) = internal_only(&caller) {
        return r;
    }
    let map_only = match q.only.as_deref() {
        None | Some("") => false,
        Some("map") => true,
        Some(other) => {
            return error(StatusCode::BAD_REQUEST, "bad_request", format!("only={other}: the only filter is only=map"));
        }
    };
    let map_rows = matches!(q.map_rows.as_deref(), Some("1" | "true"));
    let deadline = tokio::time::Instant::now() + Duration::from_millis(q.wait_ms.unwrap_or(0).min(api::MAX_WAIT_MS));
    let mut rx = sh.sm.subscribe();
    let mut expired = false;
    loop {
        // Marked seen before the log is read: the log is updated before
        // progress is published, so no change can slip between the two.
        rx.borrow_and_update();
        let max = crate::changes::MAX_CHANGES_PER_ANSWER;
        let answer = if map_only { sh.sm.map_changes_since(q.since, max) } else { sh.sm.changes_since(q.since, max) };
        // A map-only follower is woken by map changes alone: a run without
        // one is held until the wait ends, then sent (its `to` moves the
        // follower along the log).
        let held =
            map_only && !expired && matches!(&answer, Some(Changes::Changes { changes, .. }) if changes.is_empty());
        if let Some(answer) = answer.filter(|_| !held) {
            if !map_rows
                && let Changes::Changes { to, changes, .. } = &answer
                && let Some(first) = changes.iter().find(|c| matches!(c.change, ViewChange::MapDelta { .. }))
            {
                let whole = Changes::SnapshotNeeded { start: first.index, applied: *to };
                return json(StatusCode::OK, &whole);
            }
            return json(StatusCode::OK, &answer);
        }
        if expired {
            return StatusCode::NO_CONTENT.into_response();
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) => return StatusCode::NO_CONTENT.into_response(),
            Err(_) => expired = true,
        }
    }
}

/// `GET /v1/catalog/read_index` (internal callers only, like the change
/// log): on the leader, after a read barrier (bounded by the commit
/// timeout), the follower-visible index that covers every change committed
/// before the call; a follower forwards it to the leader it knows.
async fn read_index(
    State(sh): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = internal_only(&caller) {
        return r;
    }
    match tokio::time::timeout(sh.commit_timeout, sh.raft.ensure_linearizable()).await {
        Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "timeout", "no read barrier in time; retry".into()),
        Ok(Err(e)) => {
            if let Some(fwd) = e.forward_to_leader() {
                let fwd = fwd.clone();
                return forward(&sh, &headers, Method::GET, "/v1/catalog/read_index", Bytes::new(), &fwd).await;
            }
            return error(StatusCode::SERVICE_UNAVAILABLE, "no_leader", e.to_string());
        }
        Ok(Ok(_)) => {}
    }
    // The barrier returns once the leader has applied everything committed
    // before the call; its applied index, read with the restore base under
    // one lock, is in the change log's space (a restore applied since moves
    // both together) and covers it.
    let index = sh.sm.read(|st| st.catalog.restored_base + st.applied.map_or(0, |l| l.index));
    json(StatusCode::OK, &api::ReadIndex { index, leader: sh.id })
}

#[derive(Deserialize)]
struct MapQuery {
    newer_than: Option<u64>,
    wait_ms: Option<u64>,
}

async fn map(State(sh): State<Arc<Shared>>, Query(q): Query<MapQuery>) -> Response {
    let newer_than = q.newer_than.unwrap_or(0);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(q.wait_ms.unwrap_or(0).min(api::MAX_WAIT_MS));
    let mut rx = sh.sm.subscribe();
    loop {
        if rx.borrow_and_update().epoch > newer_than
            && let Some(map) = sh.sm.read(|st| st.catalog.map.clone())
        {
            return json(StatusCode::OK, &map);
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => continue,
            _ => return StatusCode::NO_CONTENT.into_response(),
        }
    }
}

async fn propose(
    State(sh): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p: Proposal = match parse(&body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if matches!(p.command, Command::Bootstrap { .. })
        && let Err(r) = internal_only(&caller)
    {
        return r;
    }
    if p.request_id.is_empty() || p.request_id.len() > 128 {
        return error(StatusCode::BAD_REQUEST, "bad_request", "request_id must be 1 to 128 characters".into());
    }
    match tokio::time::timeout(sh.commit_timeout, sh.raft.client_write(p)).await {
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "not committed within {} ms (the outcome is unknown: retry with the same request id)",
                sh.commit_timeout.as_millis()
            ),
        ),
        Ok(Ok(r)) => match r.data {
            Ok(outcome) => {
                let base = sh.sm.read(|st| st.catalog.restored_base);
                let log_index = r.log_id.index;
                json(StatusCode::OK, &Proposed { outcome, log_index, leader: sh.id, follower_index: base + log_index })
            }
            Err(e) => refused(e),
        },
        Ok(Err(e)) => match e.forward_to_leader() {
            Some(fwd) => {
                let fwd = fwd.clone();
                forward(&sh, &headers, Method::POST, "/v1/propose", body, &fwd).await
            }
            None => error(StatusCode::SERVICE_UNAVAILABLE, "no_leader", e.to_string()),
        },
    }
}

fn membership_reply<E: std::error::Error>(
    r: Result<openraft::raft::ClientWriteResponse<TypeConfig>, RaftError<u64, E>>,
) -> Result<Response, RaftError<u64, E>> {
    let r = r?;
    let voters = r.membership.as_ref().map(|m| m.voter_ids().collect()).unwrap_or_default();
    Ok(json(StatusCode::OK, &MembershipChanged { voters, log_index: r.log_id.index }))
}

async fn membership_add(State(sh): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let a: AddReplica = match parse(&body) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let node = ReplicaNode { addr: a.addr.clone(), site: a.site.clone() };
    let deadline = Duration::from_secs(30);
    let work = async {
        sh.raft.add_learner(a.id, node, true).await?;
        sh.raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([a.id])), false).await
    };
    match tokio::time::timeout(deadline, work).await {
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("replica {} did not catch up within 30 s; is it running at {}?", a.id, a.addr),
        ),
        Ok(r) => match membership_reply(r) {
            Ok(resp) => resp,
            Err(e) => match e.forward_to_leader() {
                Some(fwd) => {
                    let fwd = fwd.clone();
                    forward(&sh, &headers, Method::POST, "/v1/membership/add", body, &fwd).await
                }
                None => error(StatusCode::CONFLICT, "refused", e.to_string()),
            },
        },
    }
}

async fn membership_remove(State(sh): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let a: RemoveReplica = match parse(&body) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let work = sh.raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([a.id])), false);
    match tokio::time::timeout(Duration::from_secs(10), work).await {
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "timeout", "membership change not committed in 10 s".into()),
        Ok(r) => match membership_reply(r) {
            Ok(resp) => resp,
            Err(e) => match e.forward_to_leader() {
                Some(fwd) => {
                    let fwd = fwd.clone();
                    forward(&sh, &headers, Method::POST, "/v1/membership/remove", body, &fwd).await
                }
                None => error(StatusCode::CONFLICT, "refused", e.to_string()),
            },
        },
    }
}
