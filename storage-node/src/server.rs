//! The storage node's HTTP service (the API documented in `api`).
//!
//! Owns: the listening socket, the routes, and the translation between HTTP
//! and the two stores (`shard_store`, `meta_store`).
//!
//! Invariants:
//! - Nothing is routed before the request's signature is verified
//!   (`sillok_rpc::server::authenticate`):
//!   unsigned, badly signed, wrongly keyed or skewed requests get a 403 and
//!   change nothing. Bodies signed by hash are read (at most [`MAX_JSON_BODY`])
//!   and checked against the signed SHA-256 before any handler sees them;
//!   `UNSIGNED-PAYLOAD` is accepted only on `PUT /v1/shards/...`, whose frames
//!   carry blake3 hashes that the shard store checks.
//! - Under mutual TLS (`sillok_rpc::tls`), only gateways and storage nodes
//!   (rebuild, repair, collection) may call a node: a certificate of any
//!   other role (an admin's, a catalog replica's) is refused with a 403.
//! - Shard bodies stream both ways a block at a time: uploads through a
//!   bounded channel into a `ShardWriter` on the blocking pool, downloads from a
//!   `ShardReader` on the blocking pool through a channel of two blocks. A
//!   download of one block of at most `READ_INLINE_MAX_BLOCK` bytes is
//!   read on the request's own thread instead (`read_one_block`).
//! - A shard upload is acknowledged only after `ShardWriter::commit` (file and
//!   directory fsynced); a broken, stalled (over [`UPLOAD_IDLE`]) or short
//!   upload stores nothing.
//! - Bad input is an error status with a small JSON body, never a panic.
//! - Every accepted socket has TCP_NODELAY. Shutdown is graceful: on the
//!   shutdown future, the listener closes, in-flight requests finish, then the
//!   metadata writer is stopped.
//!
//! Start a node with [`serve`] (bind and run until shutdown), or with [`bind`]
//! then [`BoundNode::run`] to learn the bound address first (port 0 in tests),
//! or with [`spawn`], which runs it on a task and returns a [`RunningNode`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use serde::Deserialize;
use sillok_placement::{NodeId, PlacementMap};
use tokio::sync::mpsc;
use tracing::Instrument;

use sillok_model::frame::Frame;
use sillok_model::manifest::{Manifest, wire};
use sillok_rpc::auth::{BodySeal, Signer};
use sillok_rpc::server::{Policy, error as error_response, json};
use tokio::sync::watch;

use crate::api::{self, GetManifest, ListManifests, ShardId};
use crate::error::NodeError;
use crate::meta_store::MetaStore;
use crate::shard_store::{ShardMeta, ShardStore};

/// Largest JSON (hash-signed) request body.
pub const MAX_JSON_BODY: usize = 8 << 20;
/// Longest quiet gap the node tolerates inside a shard upload. A gateway
/// sends a block only once the client has sent its whole stripe, so this
/// must exceed the gateway's deadline for one stripe plus its send
/// (`sillok_gateway::write::stripe_deadline` keeps that invariant): 180 s
/// lets a client at 20 KB/s fill 1 MiB stripes (52 s each) with room to spare.
/// A gateway that dies closes its connections at once; only a hung or
/// partitioned one holds an upload (a blocking-pool thread and a partial
/// file) this long.
pub const UPLOAD_IDLE: Duration = Duration::from_secs(180);

/// A placement map as its owner publishes it (`MapFollower::subscribe`).
pub type MapWatch = watch::Receiver<Option<Arc<PlacementMap>>>;

/// What a node needs to run.
#[derive(Clone)]
pub struct NodeConfig {
    pub id: NodeId,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub cluster_secret: String,
    /// Also accepted from other processes while the cluster secret is
    /// rotated (`ClusterFile::also_accepted_secrets`).
    pub also_accepted_secrets: Vec<String>,
    /// The placement map the node follows, as its one owner (the catalog
    /// follower) publishes it (`None`: the node follows no map and checks no
    /// epochs).
    pub map: Option<MapWatch>,
    /// The collector's and anti-entropy's settings; they run while the node
    /// serves, when it follows a map.
    pub upkeep: crate::collector::Upkeep,
    /// redb's cache for the manifest store, bytes
    /// (`meta_store::DEFAULT_CACHE_BYTES` unless told otherwise).
    pub meta_cache_bytes: usize,
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("id", &self.id)
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("cluster_secret", &"<redacted>")
            .finish()
    }
}

struct AppState {
    id: NodeId,
    cluster_secret: String,
    upkeep: crate::collector::Upkeep,
    clock: Arc<crate::node_clock::NodeClock>,
    throttle: Arc<crate::rebuild::Throttle>,
    /// Client requests in flight here (background work gives way to them).
    client_load: Arc<crate::background::ClientLoad>,
    /// Clients' manifest reads wait for it (`anti_entropy`).
    catch_up: Arc<crate::anti_entropy::CatchUp>,
    rebuild: Arc<crate::rebuild::RebuildState>,
    signer: Signer,
    /// The addresses this node answers as besides its address in the map
    /// (bound and configured listen address): a signed request for another
    /// host is refused.
    own_addrs: Vec<String>,
    /// Nonces of accepted requests (no request is accepted twice).
    replays: sillok_rpc::replay::ReplayCache,
    shards: ShardStore,
    meta: MetaStore,
    map: Option<MapWatch>,
    data_dir: PathBuf,
    /// Request latency by route and method (`authenticate`).
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// The metrics page (made at its first scrape or by the ops listener).
    registry: std::sync::OnceLock<prometheus_client::registry::Registry>,
}

type RouteLabels = [(&'static str, String); 2];

/// Latency buckets (seconds): 0.5 ms to about 16 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16))
}

impl AppState {
    /// Whether `host` (a signed request's Host) names this node: its bound
    /// or configured listen address, or its address in the map it follows.
    fn answers_as(&self, host: &str) -> bool {
        self.own_addrs.iter().any(|a| a == host)
            || self.map.as_ref().is_some_and(|m| {
                m.borrow().as_ref().is_some_and(|m| m.topology.node(self.id).is_some_and(|n| n.addr == host))
            })
    }

    /// The epoch of the map the node follows now (0: none).
    fn epoch(&self) -> u64 {
        self.map.as_ref().and_then(|m| m.borrow().as_ref().map(|m| m.epoch)).unwrap_or(0)
    }
}

/// A node whose stores are open and whose socket is bound, not yet serving.
pub struct BoundNode {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    state: Arc<AppState>,
}

/// Opens the stores under `config.data_dir` (creating them, removing stale
/// temporary files) and binds `config.listen`.
pub async fn bind(config: NodeConfig) -> Result<BoundNode, NodeError> {
    let dir = config.data_dir.clone();
    let cache = config.meta_cache_bytes;
    let (shards, meta, empty) = tokio::task::spawn_blocking(move || -> Result<_, NodeError> {
        std::fs::create_dir_all(&dir)?;
        let meta = MetaStore::open_with_cache(&dir, cache)?;
        let empty = meta.is_empty()?;
        Ok((ShardStore::open(&dir)?, meta, empty))
    })
    .await
    .map_err(|e| NodeError::Other(format!("opening the stores failed: {e}")))??;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(node = %config.id, %addr, data_dir = %config.data_dir.display(), "storage node bound");
    Ok(BoundNode {
        listener,
        addr,
        state: Arc::new(AppState {
            id: config.id,
            cluster_secret: config.cluster_secret.clone(),
            upkeep: config.upkeep,
            clock: Arc::new(crate::node_clock::NodeClock::new(config.upkeep.max_clock_offset)),
            throttle: Arc::new(crate::rebuild::Throttle::new(
                config.upkeep.rebuild_mib_per_s,
                config.upkeep.rebuild_concurrency,
            )),
            rebuild: Default::default(),
            client_load: Default::default(),
            // A node with no map has no peers to catch up from; one with no
            // manifest has no stale state to offer (a read of it finds
            // nothing, and the other replicas of a quorum answer).
            catch_up: Arc::new(crate::anti_entropy::CatchUp::new(config.map.is_none() || empty)),
            signer: Signer::new(&config.cluster_secret).accepting(&config.also_accepted_secrets),
            own_addrs: vec![addr.to_string(), config.listen.to_string()],
            replays: Default::default(),
            shards,
            meta,
            map: config.map,
            data_dir: config.data_dir.clone(),
            latency: Family::new_with_constructor(latency_histogram),
            registry: Default::default(),
        }),
    })
}

impl BoundNode {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node's clock measurement (for its reports).
    pub fn clock(&self) -> Arc<crate::node_clock::NodeClock> {
        self.state.clock.clone()
    }

    /// The rebuild engine's and scrub's state (for the node's reports).
    pub fn repair_state(&self) -> Arc<crate::rebuild::RebuildState> {
        self.state.rebuild.clone()
    }

    /// The rebuild engine's pace (the reporter applies the catalog's).
    pub fn throttle(&self) -> Arc<crate::rebuild::Throttle> {
        self.state.throttle.clone()
    }

    /// The shard store's usage counters (for the node's reports).
    pub fn shard_usage(&self) -> Arc<crate::shard_store::Usage> {
        self.state.shards.usage_handle()
    }

    /// Opens the ops listener (`/health`, `/ready`, `/metrics`) on `addr`;
    /// returns the bound address.
    pub async fn serve_ops(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        sillok_rpc::ops::serve(addr, Arc::new(NodeOps(self.state.clone()))).await
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests and
    /// stops the metadata writer.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), NodeError> {
        let BoundNode { listener, addr, state } = self;
        let node = state.id;
        let upkeep = state.map.clone().map(|map| {
            let upkeeper = Arc::new(crate::collector::Upkeeper {
                id: state.id,
                meta: state.meta.clone(),
                shards: state.shards.clone(),
                map,
                // Its requests to peers are background work, not client load there.
                client: crate::NodeClient::new(&state.cluster_secret, crate::Timeouts::default()).background(),
                settings: state.upkeep,
                clock: state.clock.clone(),
                stats: Default::default(),
                throttle: state.throttle.clone(),
                rebuild: state.rebuild.clone(),
                scrub: Default::default(),
                client_load: state.client_load.clone(),
                catch_up: state.catch_up.clone(),
            });
            [
                tokio::spawn(upkeeper.clone().collect_forever()),
                tokio::spawn(upkeeper.clone().sync_forever()),
                tokio::spawn(upkeeper.clone().rebuild_forever()),
                tokio::spawn(upkeeper.scrub_forever()),
            ]
        });
        let app = router(state.clone());
        let res = sillok_rpc::server::serve(listener, app, shutdown).await;
        // The upkeep tasks hold store handles: they end before the stores close.
        for task in upkeep.into_iter().flatten() {
            task.abort();
            let _ = task.await;
        }
        tracing::info!(%node, %addr, "storage node stopped");
        // A request whose connection just closed may still be finishing (a
        // blocking read, say) and hold the stores: wait for it, briefly, so
        // that the manifest store is released before `stop` returns (a node
        // restarted in the same process opens it again).
        let mut state = state;
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            match Arc::try_unwrap(state) {
                Ok(st) => break st.meta.close().await,
                Err(held) if Instant::now() < until => {
                    state = held;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(_) => break tracing::warn!("requests still hold the stores 5 s after shutdown"),
            }
        }
        res.map_err(NodeError::Io)
    }
}

/// Binds and serves until `shutdown` completes (graceful).
pub async fn serve(config: NodeConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), NodeError> {
    bind(config).await?.run(shutdown).await
}

/// A node running on a background task.
pub struct RunningNode {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), NodeError>>,
}

impl RunningNode {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the node gracefully and waits until it has released its stores.
    pub async fn stop(mut self) -> Result<(), NodeError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.map_err(|e| NodeError::Other(format!("node task failed: {e}")))?
    }
}

/// Binds and runs a node on a new task (tests, `sillok dev`).
pub async fn spawn(config: NodeConfig) -> Result<RunningNode, NodeError> {
    let bound = bind(config).await?;
    let addr = bound.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(bound.run(async move {
        let _ = rx.await;
    }));
    Ok(RunningNode { addr, stop: Some(tx), task })
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/shards", get(list_shards))
        .route("/v1/shards/{object_id}/{index}", get(get_shard).head(head_shard).put(put_shard).delete(delete_shard))
        .route("/v1/manifests/put", post(put_manifest))
        .route("/v1/manifests/get", post(get_manifest))
        .route("/v1/manifests/summary", post(manifest_summary))
        .route("/v1/manifests/list", post(list_manifests))
        .route("/v1/manifests/relocate", post(relocate))
        .route("/v1/pg/manifests", post(list_pg_manifests))
        .route("/v1/pg/objects", post(list_pg_objects))
        .route("/v1/repair/throttle", post(repair_throttle))
        .route("/v1/repair/suspect", post(repair_suspect))
        .route("/v1/pg/digest", post(pg_digest))
        .route("/v1/pg/digests", post(pg_digests))
        .route("/v1/pg/shards", post(list_pg_shards))
        .route("/v1/references", post(references))
        .route("/v1/health", get(health))
        .route("/v1/map", get(followed_map))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError(NodeError::NotFound) })
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// An error as an HTTP response: status and `{"error", "message"}`.
struct ApiError(NodeError);

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self.0 {
            NodeError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            NodeError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            NodeError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            NodeError::Corrupt(_) => (StatusCode::CONFLICT, "corrupt"),
            NodeError::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "io"),
            NodeError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store"),
            NodeError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let message = match &self.0 {
            NodeError::BadRequest(m) | NodeError::Forbidden(m) | NodeError::Corrupt(m) | NodeError::Unavailable(m) => {
                m.clone()
            }
            other => other.to_string(),
        };
        error_response(status, code, message)
    }
}

fn is_shard_path(path: &str) -> bool {
    path.strip_prefix("/v1/shards/").is_some_and(|rest| !rest.is_empty())
}

/// Verifies every request before it is routed (`sillok_rpc::server`), checks
/// manifest requests' epochs, names the node's epoch in every answer, and
/// logs one line per request.
async fn authenticate(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = req.extensions().get::<axum::extract::MatchedPath>().map_or("unmatched", |m| m.as_str()).to_string();
    let span = tracing::info_span!("node_request", node = %st.id, %method, path = %path);
    async move {
        // Prometheus cannot sign: the metrics page (figures only) is open.
        if method == Method::GET && path == "/metrics" {
            return next.run(req).await;
        }
        let policy = Policy {
            max_body: MAX_JSON_BODY,
            unsigned_ok: &|m, p| *m == Method::PUT && is_shard_path(p),
            lookup: &|_| None,
            host_ok: &|h| st.answers_as(h),
            replays: &st.replays,
        };
        if let Some(peer) = req.extensions().get::<sillok_rpc::tls::Peer>()
            && !matches!(peer.role, sillok_rpc::tls::Role::Gateway | sillok_rpc::tls::Role::Node)
        {
            tracing::warn!(role = ?peer.role, "refused: only gateways and storage nodes may call a node");
            return error_response(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("a {:?} certificate may not call a storage node (gateways and nodes only)", peer.role),
            );
        }
        let req = match sillok_rpc::server::authenticate(req, &st.signer, &policy).await {
            Ok(req) => req,
            Err(refusal) => return refusal,
        };
        let node_epoch = st.epoch();
        if let Some(refusal) = stale_epoch(&method, &path, req.headers(), node_epoch) {
            return refusal;
        }
        // Counted until the answer's head is ready (a streamed body is not).
        let _client = (!crate::background::is_background(req.headers())).then(|| st.client_load.enter());
        let mut resp = next.run(req).await;
        if node_epoch > 0 {
            resp.headers_mut().insert(api::H_EPOCH, HeaderValue::from(node_epoch));
        }
        resp.headers_mut().insert(api::H_TIME, HeaderValue::from(sillok_model::clock::wall_ms()));
        let status = resp.status().as_u16();
        let took = started.elapsed();
        let method_label = match method {
            Method::GET | Method::HEAD | Method::PUT | Method::POST | Method::DELETE => method.as_str().to_string(),
            _ => "other".to_string(),
        };
        st.latency.get_or_create(&[("route", route), ("method", method_label)]).observe(took.as_secs_f64());
        let ms = took.as_secs_f64() * 1000.0;
        if resp.status().is_server_error() {
            tracing::error!(status, ms, "request failed");
        } else if resp.status().is_client_error() && resp.status() != StatusCode::NOT_FOUND {
            tracing::info!(status, ms, "request refused");
        } else {
            tracing::debug!(status, ms, "request done");
        }
        resp
    }
    .instrument(span)
    .await
}

/// A manifest request that names an older map epoch than the node's is
/// refused (see `api`): its manifest replicas may have moved.
fn stale_epoch(method: &Method, path: &str, headers: &HeaderMap, node_epoch: u64) -> Option<Response> {
    let checked = *method == Method::POST
        && matches!(
            path,
            "/v1/manifests/put" | "/v1/manifests/get" | "/v1/manifests/summary" | "/v1/manifests/relocate"
        );
    let theirs = api::epoch_of(headers)?;
    if !checked || node_epoch == 0 || theirs >= node_epoch {
        return None;
    }
    tracing::info!(request_epoch = theirs, node_epoch, "refused: older map epoch");
    let mut resp = error_response(
        StatusCode::CONFLICT,
        api::STALE_EPOCH,
        format!("this node follows map epoch {node_epoch}; the request used epoch {theirs}: retry on the newer map"),
    );
    resp.headers_mut().insert(api::H_EPOCH, HeaderValue::from(node_epoch));
    Some(resp)
}

fn shard_id(object_id: String, index: &str) -> Result<ShardId, NodeError> {
    if !ShardId::is_valid_object_id(&object_id) {
        return Err(NodeError::BadRequest("object id must be 32 lowercase hex digits".into()));
    }
    let index: u8 = index.parse().map_err(|_| NodeError::BadRequest("shard index must be 0..=255".into()))?;
    Ok(ShardId { object_id, index })
}

fn header_str<'a>(h: &'a HeaderMap, name: &'static str) -> Result<&'a str, NodeError> {
    h.get(name)
        .ok_or_else(|| NodeError::BadRequest(format!("missing header {name}")))?
        .to_str()
        .map_err(|_| NodeError::BadRequest(format!("header {name} is not text")))
}

fn header_num<T: std::str::FromStr>(h: &HeaderMap, name: &'static str) -> Result<T, NodeError> {
    header_str(h, name)?
        .trim()
        .parse()
        .map_err(|_| NodeError::BadRequest(format!("header {name} is not a valid number")))
}

/// The query of `GET /v1/shards/{id}/{index}`: blocks `from..to`.
#[derive(Deserialize)]
struct BlockRange {
    #[serde(default)]
    from: u32,
    to: Option<u32>,
}

/// The query of `GET /v1/shards`: a page of the shard list.
#[derive(Deserialize)]
struct ShardPage {
    after: Option<String>,
    #[serde(default)]
    limit: u32,
}

/// A query that did not parse, as a 400 with the node's error body.
fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, NodeError> {
    q.map(|Query(v)| v).map_err(|e| NodeError::BadRequest(format!("bad query: {}", e.body_text())))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| NodeError::Other(format!("blocking task failed: {e}")))?
}

enum UploadMsg {
    Chunk(Bytes),
    /// The body ended, with this seal trailer (if it had one).
    End(Option<String>),
}

async fn put_shard(
    State(st): State<Arc<AppState>>,
    Path((object_id, index)): Path<(String, String)>,
    headers: HeaderMap,
    seal: Option<Extension<BodySeal>>,
    body: Body,
) -> Result<Response, ApiError> {
    let id = shard_id(object_id, &index)?;
    // Authentication puts the seal on every unsigned body it lets through.
    let Some(Extension(seal)) = seal else {
        return Err(NodeError::Forbidden("a shard upload must be signed as UNSIGNED-PAYLOAD and sealed".into()).into());
    };
    let meta = ShardMeta {
        codec: header_str(&headers, api::H_CODEC)?.to_string(),
        k: header_num(&headers, api::H_K)?,
        m: header_num(&headers, api::H_M)?,
        block_size: header_num(&headers, api::H_BLOCK_SIZE)?,
        blocks: header_num(&headers, api::H_BLOCKS)?,
    };
    meta.check(id.index)?;
    let store = st.shards.clone();
    let wid = id.clone();
    let mut writer = blocking(move || store.begin_write(&wid, meta)).await?;
    // The writer runs on the blocking pool: it hashes, checks and writes each
    // frame as its bytes arrive. At most 8 network chunks wait in between.
    let (tx, mut rx) = mpsc::channel::<UploadMsg>(8);
    let task = tokio::task::spawn_blocking(move || -> Result<crate::api::ShardInfo, NodeError> {
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                UploadMsg::Chunk(c) => writer.push(c)?,
                UploadMsg::End(trailer) => {
                    // Nothing is stored unless the sender's seal covers exactly
                    // the frames that arrived.
                    return match trailer {
                        Some(t) if seal.matches(&writer.digest(), &t) => writer.commit(),
                        Some(_) => Err(NodeError::Forbidden(
                            "the upload's body seal does not match the blocks received".into(),
                        )),
                        None => Err(NodeError::Forbidden(format!(
                            "the upload ended without its {} trailer",
                            sillok_rpc::auth::H_BODY_SEAL
                        ))),
                    };
                }
            }
        }
        Err(NodeError::BadRequest("upload aborted".into()))
    });
    let mut body = body;
    let mut trailer: Option<String> = None;
    let mut broken: Option<NodeError> = None;
    loop {
        match tokio::time::timeout(UPLOAD_IDLE, body.frame()).await {
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(chunk) => {
                    if tx.send(UploadMsg::Chunk(chunk)).await.is_err() {
                        break; // the writer refused the upload; its error is below
                    }
                }
                Err(frame) => {
                    if let Some(t) = frame.trailers_ref().and_then(|t| t.get(sillok_rpc::auth::H_BODY_SEAL)) {
                        trailer = t.to_str().ok().map(str::to_string);
                    }
                }
            },
            Ok(Some(Err(e))) => {
                broken = Some(NodeError::BadRequest(format!("upload body broke off: {e}")));
                break;
            }
            Ok(None) => {
                let _ = tx.send(UploadMsg::End(trailer.take())).await;
                break;
            }
            Err(_) => {
                broken = Some(NodeError::BadRequest(format!("upload stalled for {}s", UPLOAD_IDLE.as_secs())));
                break;
            }
        }
    }
    drop(tx);
    let res = task.await.map_err(|e| NodeError::Other(format!("shard writer failed: {e}")))?;
    if let Some(e) = broken {
        tracing::info!(shard = %id.file_name(), error = %e, "upload abandoned; nothing stored");
        return Err(e.into());
    }
    let info = res?;
    tracing::debug!(shard = %id.file_name(), blocks = info.blocks, bytes = info.data_len, "shard stored");
    Ok(json(StatusCode::OK, &info))
}

/// What a shard read's blocking task sends its response. The first block
/// travels with `Start` and the task sends nothing after the last one (the
/// response counts its frames), so a one-block shard costs one hand-over
/// between threads, not three.
enum ReadMsg {
    Start { info: crate::api::ShardInfo, from: u32, end: u32, first: Option<Result<Frame, NodeError>> },
    Block(Frame),
    Failed(NodeError),
}

fn frame_chunks(f: Frame) -> [Result<Bytes, std::io::Error>; 2] {
    [Ok(Bytes::copy_from_slice(&f.header())), Ok(f.data)]
}

async fn get_shard(
    State(st): State<Arc<AppState>>,
    Path((object_id, index)): Path<(String, String)>,
    range: Result<Query<BlockRange>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = shard_id(object_id, &index)?;
    let BlockRange { from, to } = query(range)?;
    if to.is_some_and(|t| t < from) {
        return Err(NodeError::BadRequest("range end before its start".into()).into());
    }
    if to.is_some_and(|t| from.checked_add(1) == Some(t))
        && let Some((info, frame)) = read_one_block(&st.shards, &id, from)?
    {
        let end = from + frame.is_some() as u32;
        let body = futures::stream::iter(frame.map(frame_chunks).into_iter().flatten());
        return Ok(shard_response(Body::from_stream(body), info, from, end));
    }
    let store = st.shards.clone();
    let (tx, mut rx) = mpsc::channel::<ReadMsg>(2);
    let rid = id.clone();
    tokio::task::spawn_blocking(move || {
        let send = |m: ReadMsg| tx.blocking_send(m).is_ok();
        let (mut r, info, end) = match open_range(&store, &rid, from, to) {
            Ok(opened) => opened,
            Err(e) => return send(ReadMsg::Failed(e)),
        };
        let first = (end > from).then(|| next_block(&mut r));
        let first_failed = matches!(first, Some(Err(_)));
        if !send(ReadMsg::Start { info, from, end, first }) || first_failed {
            return false;
        }
        for _ in from + 1..end {
            let ok = match next_block(&mut r) {
                Ok(f) => send(ReadMsg::Block(f)),
                Err(e) => return send(ReadMsg::Failed(e)),
            };
            if !ok {
                return false; // the requester went away
            }
        }
        true
    });

    let gone = || NodeError::Other("shard reader stopped".into());
    // The first block was verified before the head commits to a 200.
    let (info, from, end, first) = match rx.recv().await.ok_or_else(gone)? {
        ReadMsg::Start { info, from, end, first } => (info, from, end, first.transpose()?),
        ReadMsg::Failed(e) => return Err(e.into()),
        ReadMsg::Block(_) => return Err(gone().into()),
    };
    let shard = id.file_name();
    // Frames still to come after the first.
    let left = (end - from).saturating_sub(1);
    let rest = futures::stream::unfold((rx, left), move |(mut rx, left)| {
        let shard = shard.clone();
        async move {
            if left == 0 {
                return None;
            }
            match rx.recv().await {
                Some(ReadMsg::Block(f)) => Some((Ok(f), (rx, left - 1))),
                Some(ReadMsg::Failed(NodeError::Corrupt(why))) => {
                    // End the body cleanly but short: the client reads this as
                    // "the next block is corrupt here" (see `api`).
                    tracing::error!(%shard, %why, "corrupt block; ending the response early");
                    None
                }
                Some(ReadMsg::Failed(e)) => {
                    tracing::error!(%shard, error = %e, "shard read failed; aborting the response");
                    Some((Err(std::io::Error::other(e.to_string())), (rx, 0)))
                }
                Some(ReadMsg::Start { .. }) | None => {
                    Some((Err(std::io::Error::other("shard reader stopped")), (rx, 0)))
                }
            }
        }
    });
    let frames = futures::stream::iter(first.map(Ok)).chain(rest);
    let body = frames.flat_map(|r: Result<Frame, std::io::Error>| {
        let chunks: Vec<Result<Bytes, std::io::Error>> = match r {
            Ok(f) => frame_chunks(f).into(),
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(chunks)
    });
    Ok(shard_response(Body::from_stream(body), info, from, end))
}

/// Shards whose blocks are at most this long are read on the request's own
/// thread when a request asks for one block (see [`read_one_block`]).
const READ_INLINE_MAX_BLOCK: u32 = 256 * 1024;

/// The one block `from` of shard `id`, read and checked on the calling
/// (runtime) thread, for a request that asks for one block: a small
/// object's whole shard, or one stripe of a ranged read. Reading a block of
/// at most [`READ_INLINE_MAX_BLOCK`] bytes from the page cache and hashing
/// it costs less than the two hand-overs between threads of the blocking
/// pool. `None` if the shard's blocks are larger (the caller uses the pool);
/// the frame is `None` if `from` is the shard's end.
fn read_one_block(
    store: &ShardStore,
    id: &ShardId,
    from: u32,
) -> Result<Option<(crate::api::ShardInfo, Option<Frame>)>, NodeError> {
    let (mut r, info, end) = open_range(store, id, from, from.checked_add(1))?;
    if info.block_size > READ_INLINE_MAX_BLOCK {
        return Ok(None);
    }
    let frame = if end > from { Some(next_block(&mut r)?) } else { None };
    Ok(Some((info, frame)))
}

/// Opens shard `id` for reading blocks `from..to` (`to` clamped to the
/// shard's end, the whole rest if `None`): the reader, at block `from`, the
/// shard's info and the clamped end. A `from` past the end is refused.
fn open_range(
    store: &ShardStore,
    id: &ShardId,
    from: u32,
    to: Option<u32>,
) -> Result<(crate::shard_store::ShardReader, crate::api::ShardInfo, u32), NodeError> {
    let mut r = store.open_read(id)?.ok_or(NodeError::NotFound)?;
    let info = r.info();
    if from > info.blocks {
        return Err(NodeError::BadRequest(format!("block {from} is past the shard's {} blocks", info.blocks)));
    }
    let end = to.unwrap_or(info.blocks).min(info.blocks);
    r.seek_block(from)?;
    Ok((r, info, end))
}

/// The next block of a reader that [`open_range`] positioned before the
/// end it returned.
fn next_block(r: &mut crate::shard_store::ShardReader) -> Result<Frame, NodeError> {
    r.read_block()?.ok_or_else(|| NodeError::Other("shard ended early".into()))
}

/// A shard read's response: frames `from..end` of the shard `info` in `body`.
fn shard_response(body: Body, info: crate::api::ShardInfo, from: u32, end: u32) -> Response {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(api::H_FRAMES, HeaderValue::from(end - from));
    h.insert(api::H_BLOCKS, HeaderValue::from(info.blocks));
    h.insert(api::H_BLOCK_SIZE, HeaderValue::from(info.block_size));
    h.insert(api::H_DATA_LEN, HeaderValue::from(info.data_len));
    resp
}

async fn head_shard(
    State(st): State<Arc<AppState>>,
    Path((object_id, index)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = shard_id(object_id, &index)?;
    let store = st.shards.clone();
    let info = blocking(move || store.stat(&id)).await?.ok_or(NodeError::NotFound)?;
    let mut resp = Response::new(Body::empty());
    let h = resp.headers_mut();
    h.insert(api::H_BLOCKS, HeaderValue::from(info.blocks));
    h.insert(api::H_BLOCK_SIZE, HeaderValue::from(info.block_size));
    h.insert(api::H_DATA_LEN, HeaderValue::from(info.data_len));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(info.data_len));
    Ok(resp)
}

async fn delete_shard(
    State(st): State<Arc<AppState>>,
    Path((object_id, index)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = shard_id(object_id, &index)?;
    let store = st.shards.clone();
    blocking(move || store.delete(&id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_shards(
    State(st): State<Arc<AppState>>,
    page: Result<Query<ShardPage>, QueryRejection>,
) -> Result<Response, ApiError> {
    let ShardPage { after, limit } = query(page)?;
    let store = st.shards.clone();
    let list = blocking(move || store.list(after.as_deref(), limit)).await?;
    Ok(json(StatusCode::OK, &list))
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, NodeError> {
    serde_json::from_slice(body).map_err(|e| NodeError::BadRequest(format!("bad JSON body: {e}")))
}

async fn body_bytes(body: Body) -> Result<Bytes, NodeError> {
    // Already buffered and size-checked by `authenticate`.
    Ok(body.collect().await.map_err(|e| NodeError::BadRequest(e.to_string()))?.to_bytes())
}

async fn put_manifest(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    if let Some(why) = st.clock.refusal() {
        return Err(NodeError::Unavailable(why).into());
    }
    let body = body_bytes(body).await?;
    let m: Manifest = if is_manifest_type(headers.get(header::CONTENT_TYPE)) {
        wire::decode(&body).map_err(|e| NodeError::BadRequest(e.to_string()))?
    } else {
        parse_json(&body)?
    };
    let reply = st.meta.put(&m).await?;
    Ok(json(StatusCode::OK, &reply))
}

fn is_manifest_type(v: Option<&HeaderValue>) -> bool {
    v.and_then(|v| v.to_str().ok()).is_some_and(|v| v.split(',').any(|t| t.trim() == api::MANIFEST_TYPE))
}

/// A client's manifest read while the node catches up is refused (503).
fn check_caught_up(st: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match st.catch_up.refusal() {
        Some(why) if !crate::background::is_background(headers) => Err(NodeError::Unavailable(why).into()),
        _ => Ok(()),
    }
}

async fn get_manifest(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    check_caught_up(&st, &headers)?;
    let req: GetManifest = parse_json(&body_bytes(body).await?)?;
    let Some(encoded) = st.meta.get_encoded(&req.bucket, &req.key).await? else {
        return Err(NodeError::NotFound.into());
    };
    if is_manifest_type(headers.get(header::ACCEPT)) {
        let ct = HeaderValue::from_static(api::MANIFEST_TYPE);
        return Ok((StatusCode::OK, [(header::CONTENT_TYPE, ct)], encoded).into_response());
    }
    // A caller from before the binary encoding.
    let m = wire::decode(&encoded).map_err(|e| NodeError::Store(e.to_string()))?;
    Ok(json(StatusCode::OK, &m))
}

async fn manifest_summary(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_caught_up(&st, &headers)?;
    let req: GetManifest = parse_json(&body_bytes(body).await?)?;
    match st.meta.summary(&req.bucket, &req.key).await? {
        Some(s) => Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"))],
            Bytes::copy_from_slice(&s.encode()),
        )
            .into_response()),
        None => Err(NodeError::NotFound.into()),
    }
}

async fn list_manifests(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    check_caught_up(&st, &headers)?;
    let req: ListManifests = parse_json(&body_bytes(body).await?)?;
    let list = st.meta.list(&req).await?;
    Ok(json(StatusCode::OK, &list))
}

async fn relocate(State(st): State<Arc<AppState>>, body: Body) -> Result<Response, ApiError> {
    if let Some(why) = st.clock.refusal() {
        return Err(NodeError::Unavailable(why).into());
    }
    let req: api::Relocate = parse_json(&body_bytes(body).await?)?;
    let reply = st.meta.relocate(req).await?;
    Ok(json(StatusCode::OK, &reply))
}

/// At most this many object ids per references question.
pub const MAX_REFERENCES: usize = 10_000;

fn check_pg(sel: &api::PgSelector) -> Result<(), NodeError> {
    if sel.pg_count == 0 || sel.pg >= sel.pg_count {
        return Err(NodeError::BadRequest(format!("PG {} is not below the PG count {}", sel.pg, sel.pg_count)));
    }
    if sel.function == sillok_placement::PgFunction::TopBits && !sel.pg_count.is_power_of_two() {
        return Err(NodeError::BadRequest("top-bits PGs need a power-of-two PG count".into()));
    }
    Ok(())
}

async fn list_pg_manifests(State(st): State<Arc<AppState>>, body: Body) -> Result<Response, ApiError> {
    let req: api::ListPg = parse_json(&body_bytes(body).await?)?;
    check_pg(&req.pg)?;
    let list = st.meta.list_pg(req.pg, req.after, req.limit).await?;
    Ok(json(StatusCode::OK, &list))
}

async fn list_pg_objects(State(st): State<Arc<AppState>>, body: Body) -> Result<Response, ApiError> {
    let req: api::ListPg = parse_json(&body_bytes(body).await?)?;
    check_pg(&req.pg)?;
    let list = st.meta.pg_objects(req.pg, req.after, req.limit).await?;
    Ok(json(StatusCode::OK, &list))
}

async fn repair_suspect(State(st): State<Arc<AppState>>, body: Body) -> Result<Response, ApiError> {
    let id: ShardId = parse_json(&body_bytes(body).await?)?;
    if !ShardId::is_valid_object_id(&id.object_id) {
        return Err(NodeError::BadRequest("object ids are 32 lowercase hex digits".into()).into());
    }
    let sound = crate::scrub::check_shard(&st.shards, &st.rebuild, id).await?;
    Ok(json(StatusCode::OK, &serde_json::json!({ "sound": sound })))
}

async fn repair_throttle(State(st): State<Arc<AppState>>, body: Body) -> Result<Response, ApiError> {
    let req: crate::rebuild::ThrottleSettings = parse_json(&body_bytes(body).await?)?;
    let now = st.throttle.set(req);
    tracing::info!(mib_per_s = now.mib_per_s, concurrency = now.concurrency, "rebuild throttle changed");
    Ok(json(StatusCode::OK, &now))
}

async fn pg_digest(State(st): State<Arc<AppState>>, body: Body) -> Result<Response, ApiError> {
    let sel: api::PgSelector = parse_json(&body_bytes(body).await?)?;
    check_pg(&sel)?;
    let (count, digest) = st.meta.pg_digest(sel).await?;
    Ok(json(StatusCode::OK, &api::PgDigest { count, digest: hex::encode(digest) }))
}

async fn pg_digests(State(st): State<Arc<AppState>>, body: Body) -> Result<Response, ApiError> {
    let req: api::PgDigests = parse_json(&body_bytes(body).await?)?;
    if req.pgs.len() > req.pg_count as usize {
        return Err(NodeError::BadRequest("more PGs named than there are".into()).into());
    }
    let mut sels = Vec::with_capacity(req.pgs.len());
    for pg in req.pgs {
        let sel = api::PgSelector { pg, pg_count: req.pg_count, function: req.function };
        check_pg(&sel)?;
        sels.push(sel);
    }
    let out: Vec<api::PgDigest> = st
        .meta
        .pg_digests(sels)
        .await?
        .into_iter()
        .map(|(count, digest)| api::PgDigest { count, digest: hex::encode(digest) })
        .collect();
    Ok(json(StatusCode::OK, &out))
}

async fn list_pg_shards(State(st): State<Arc<AppState>>, body: Body) -> Result<Response, ApiError> {
    let req: api::ListPg = parse_json(&body_bytes(body).await?)?;
    check_pg(&req.pg)?;
    let store = st.shards.clone();
    let list = blocking(move || store.list_pg(req.pg, req.after.as_deref(), req.limit)).await?;
    Ok(json(StatusCode::OK, &list))
}

async fn references(State(st): State<Arc<AppState>>, body: Body) -> Result<Response, ApiError> {
    let req: api::References = parse_json(&body_bytes(body).await?)?;
    if req.object_ids.len() > MAX_REFERENCES {
        return Err(NodeError::BadRequest(format!("at most {MAX_REFERENCES} object ids per question")).into());
    }
    if let Some(bad) = req.object_ids.iter().find(|id| !ShardId::is_valid_object_id(id)) {
        return Err(NodeError::BadRequest(format!("{bad:?} is not an object id")).into());
    }
    let places = st.meta.placements(req.object_ids).await?;
    Ok(json(StatusCode::OK, &api::ShardPlaces { places }))
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    sillok_rpc::ops::metrics_response(registry(&st))
}

/// The node's metrics page: its request latency and the figures read at
/// every scrape.
fn registry(st: &Arc<AppState>) -> &prometheus_client::registry::Registry {
    st.registry.get_or_init(|| {
        let mut r = prometheus_client::registry::Registry::default();
        r.register(
            "sillok_node_request_duration_seconds",
            "Time from a request's arrival to its answer's head, by route and method (signed requests only).",
            st.latency.clone(),
        );
        r.register_collector(Box::new(NodeFigures(Arc::downgrade(st))));
        sillok_rpc::server::register_metrics(&mut r);
        r
    })
}

struct NodeFigures(std::sync::Weak<AppState>);

impl std::fmt::Debug for NodeFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("storage node figures")
    }
}

impl prometheus_client::collector::Collector for NodeFigures {
    fn encode(&self, mut enc: prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        let Some(st) = self.0.upgrade() else { return Ok(()) };
        let (shards, shard_bytes) = st.shards.usage().get();
        let repair = st.rebuild.report(0);
        let figures = crate::metrics::Figures {
            epoch: st.epoch(),
            shards,
            shard_bytes,
            clock_offset_ms: st.clock.offset_ms(),
            repair: &repair,
            throttle: st.throttle.get(),
            load: &st.client_load,
            caught_up: st.catch_up.is_done(),
            disk: crate::metrics::disk_usage(&st.data_dir),
        };
        crate::metrics::encode(&mut enc, &figures)?;
        sillok_rpc::ops::gauge(
            &mut enc,
            "sillok_node_ready",
            "1 while this node is ready (see /ready on the ops listener).",
            u64::from(readiness(&st).is_ok()),
        )?;
        let cluster = st.rebuild.cluster.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(cluster) = cluster {
            cluster.encode_metrics(&mut enc)?;
        }
        Ok(())
    }
}

struct NodeOps(Arc<AppState>);

impl sillok_rpc::ops::Ops for NodeOps {
    fn ready(&self) -> Result<(), String> {
        readiness(&self.0)
    }
    fn registry(&self) -> &prometheus_client::registry::Registry {
        registry(&self.0)
    }
}

/// Whether the node can do its work (`/ready`): it follows a map that
/// names it, its data directory takes a new file (created, synced and
/// removed), and its clock is within its bound of its peers' (it does not
/// refuse writes for its clock).
fn readiness(st: &AppState) -> Result<(), String> {
    let named = st.map.as_ref().and_then(|m| m.borrow().as_ref().map(|m| m.topology.node(st.id).is_some()));
    match named {
        None => return Err("no placement map yet".into()),
        Some(false) => return Err(format!("map epoch {} does not name node {}", st.epoch(), st.id)),
        Some(true) => {}
    }
    let probe = st.data_dir.join(".ready-probe");
    let written = std::fs::File::create(&probe).and_then(|f| f.sync_all());
    let _ = std::fs::remove_file(&probe);
    if let Err(e) = written {
        return Err(format!("the data directory {} is not writable: {e}", st.data_dir.display()));
    }
    if let Some(why) = st.clock.refusal() {
        return Err(why.replace('\n', " "));
    }
    Ok(())
}

/// The placement map this node follows (404 when it follows none).
async fn followed_map(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let map = st.map.as_ref().and_then(|m| m.borrow().clone()).ok_or(NodeError::NotFound)?;
    Ok(json(StatusCode::OK, &*map))
}

async fn health(State(st): State<Arc<AppState>>) -> Response {
    json(StatusCode::OK, &serde_json::json!({ "node": st.id, "epoch": st.epoch(), "caught_up": st.catch_up.is_done() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        let parse =
            |q: &str| axum::extract::Query::<ShardPage>::try_from_uri(&format!("/v1/shards?{q}").parse().unwrap());
        let page = parse("limit=%32&after=a%2Eb&x").unwrap();
        assert_eq!((page.limit, page.after.as_deref()), (2, Some("a.b")));
        assert!(parse("limit=x").is_err());
        let range = axum::extract::Query::<BlockRange>::try_from_uri(&"/x?to=%33".parse().unwrap()).unwrap();
        assert_eq!((range.from, range.to), (0, Some(3)));
        assert!(shard_id("0123456789abcdef0123456789abcdef".into(), "256").is_err());
        assert!(shard_id("0123456789abcdef".into(), "1").is_err());
        assert!(
            is_shard_path("/v1/shards/x/1") && !is_shard_path("/v1/shards/") && !is_shard_path("/v1/manifests/put")
        );
    }
}
