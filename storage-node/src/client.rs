//! The client every other part uses to reach a storage node: signs each request
//! with the cluster secret, sets TCP_NODELAY, and bounds every call by a
//! deadline (connect, response head, and idle time between body chunks are
//! separate), so a hung node costs hundreds of milliseconds, not minutes.
//!
//! Owns: the HTTP/1.1 connection pool to nodes (hyper-util's legacy client
//! over an `HttpConnector`), and the client half of the wire contract in `api`.
//!
//! Invariants:
//! - Every request is signed (`auth`): JSON and empty bodies by their SHA-256,
//!   shard uploads as `UNSIGNED-PAYLOAD` (their frames carry blake3 hashes).
//! - Deadlines: TCP connect ≤ `connect`; the response head ≤ `connect +
//!   response` after sending (for a shard upload: ≤ `response` after the last
//!   body byte was handed to the connection); while a body streams either way,
//!   no gap longer than `idle` (for uploads, a gap is time the connection does
//!   not take the next chunk, i.e. the node not reading; time the caller's
//!   stream takes to produce a block does not count). A passed deadline is
//!   `NodeError::Timeout`.
//! - Shard uploads send each frame's 36-byte header and then its data `Bytes`
//!   as is (no copy). An `Err` from the caller's stream aborts the request
//!   mid-body (no final chunk), so the node stores nothing.
//! - Frames handed out by [`NodeClient::get_shard`] have had their blake3 hash
//!   checked here; a block that fails (here or on the node) is
//!   `NodeError::Corrupt`, never data.

use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body as HttpBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sillok_model::frame::{Frame, FrameDecoder, FrameDigest, FrameError};
use sillok_model::manifest::{Manifest, wire};
use sillok_rpc::auth::{BodySeal, Payload, Signer};
use sillok_rpc::client::{BoxError, ReqBody, RpcClient, empty_body, error_fields, full_body, read_body};

use crate::api::{self, GetManifest, ListManifests, ManifestList, PutManifestReply, ShardId, ShardInfo, ShardList};
use crate::error::NodeError;

/// A 200 whose body is not what the route answers.
fn bad_answer(addr: &str, what: String) -> NodeError {
    NodeError::Status { addr: addr.to_string(), status: 200, body: what }
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// From sending the request head to receiving the response head (for PUT
    /// shard: from the end of the body).
    pub response: Duration,
    /// Longest quiet gap while streaming a body either way.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { connect: Duration::from_millis(500), response: Duration::from_secs(5), idle: Duration::from_secs(5) }
    }
}

/// What a shard PUT declares about the shard it sends.
#[derive(Debug, Clone)]
pub struct ShardHeader {
    pub codec: String,
    pub k: u8,
    pub m: u8,
    pub block_size: u32,
    /// Exactly this many frames follow; fewer or more and nothing is stored.
    pub blocks: u32,
}

/// A node's answer to a health probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeHealth {
    /// The map epoch the node follows (0: none).
    pub epoch: u64,
    /// The node's clock minus ours, in ms (`None`: the node did not say).
    pub clock_offset_ms: Option<i64>,
    /// The probe's round trip, the bound on the offset's error (x2).
    pub round_trip_ms: i64,
}

/// Verified blocks of one shard, in order.
pub type BlockStream = std::pin::Pin<Box<dyn Stream<Item = Result<Frame, NodeError>> + Send>>;

/// Largest JSON response body the client accepts.
const MAX_JSON_RESPONSE: usize = 64 << 20;
/// Largest error body kept for a message.
const MAX_ERROR_BODY: usize = 16 << 10;

/// Query values: everything but unreserved characters is percent-encoded.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A client of storage nodes. Cheap to clone (the connection pool is shared).
///
/// Each request names the placement-map epoch it was planned on
/// ([`api::H_EPOCH`]; 0 names none): [`NodeClient::at_epoch`] gives a client
/// for one map. The client keeps no map of its own: the process's catalog
/// follower owns the map, and a node's refusal of an old epoch comes back as
/// [`NodeError::StaleEpoch`] for the caller to take to that owner.
#[derive(Clone)]
pub struct NodeClient {
    rpc: RpcClient,
    timeouts: Timeouts,
    epoch: u64,
    /// Requests are marked as background work (`background::H_BACKGROUND`).
    background: bool,
}

impl std::fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClient")
            .field("timeouts", &self.timeouts)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

fn shard_path(id: &ShardId) -> Result<String, NodeError> {
    if !ShardId::is_valid_object_id(&id.object_id) {
        return Err(NodeError::BadRequest("object id must be 32 lowercase hex digits".into()));
    }
    Ok(format!("/v1/shards/{}/{}", id.object_id, id.index))
}

/// Turns a non-success response into the matching error.
async fn status_error(addr: &str, resp: Response<Incoming>, idle: Duration) -> NodeError {
    let status = resp.status();
    let node_epoch = api::epoch_of(resp.headers());
    let body = read_body(addr, resp.into_body(), idle, MAX_ERROR_BODY).await.unwrap_or_default();
    let (code, message) = error_fields(status, &body);
    match status {
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => NodeError::BadRequest(message),
        StatusCode::FORBIDDEN => NodeError::Forbidden(message),
        StatusCode::NOT_FOUND => NodeError::NotFound,
        StatusCode::CONFLICT if code.as_deref() == Some(api::STALE_EPOCH) => {
            NodeError::StaleEpoch { addr: addr.to_string(), node_epoch: node_epoch.unwrap_or(0) }
        }
        StatusCode::CONFLICT => NodeError::Corrupt(message),
        _ => NodeError::Status { addr: addr.to_string(), status: status.as_u16(), body: message },
    }
}

fn header_u<T: std::str::FromStr>(addr: &str, resp: &Response<Incoming>, name: &'static str) -> Result<T, NodeError> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).ok_or_else(|| {
        NodeError::Status {
            addr: addr.to_string(),
            status: resp.status().as_u16(),
            body: format!("missing or bad header {name}"),
        }
    })
}

impl NodeClient {
    /// A client with this process's internal identity (`sillok_rpc::tls::process`).
    pub fn new(cluster_secret: &str, timeouts: Timeouts) -> Self {
        Self::with_tls(cluster_secret, timeouts, sillok_rpc::tls::process().as_deref())
    }

    /// A client presenting `tls` (`None`: plain HTTP), e.g. a test's.
    pub fn with_tls(cluster_secret: &str, timeouts: Timeouts, tls: Option<&sillok_rpc::tls::InternalTls>) -> Self {
        NodeClient {
            rpc: RpcClient::with_tls(Signer::new(cluster_secret), timeouts.connect, tls),
            timeouts,
            epoch: 0,
            background: false,
        }
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// This client for requests planned on map `epoch` (same pool).
    pub fn at_epoch(&self, epoch: u64) -> NodeClient {
        NodeClient { epoch, ..self.clone() }
    }

    /// A client whose requests say they are background work (the rebuild's),
    /// which nodes do not count as client load.
    pub fn background(&self) -> NodeClient {
        NodeClient { background: true, ..self.clone() }
    }

    /// The epoch requests name.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A signed request to `addr`, naming our epoch.
    fn request(
        &self,
        addr: &str,
        method: Method,
        pq: &str,
        payload: Payload<'_>,
        body: ReqBody,
    ) -> Result<Request<ReqBody>, NodeError> {
        let mut req = self.rpc.request(addr, method, pq, payload, body)?;
        if self.epoch > 0 {
            req.headers_mut().insert(api::H_EPOCH, HeaderValue::from(self.epoch));
        }
        if self.background {
            req.headers_mut().insert(crate::background::H_BACKGROUND, HeaderValue::from_static("1"));
        }
        Ok(req)
    }

    /// A request with a small body (or none), expecting a JSON answer.
    async fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        addr: &str,
        method: Method,
        pq: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, NodeError> {
        let resp = self.call(addr, method, pq, body).await?;
        let bytes = read_body(addr, resp.into_body(), self.timeouts.idle, MAX_JSON_RESPONSE).await?;
        serde_json::from_slice(&bytes).map_err(|e| NodeError::Status {
            addr: addr.to_string(),
            status: 200,
            body: format!("bad JSON from node: {e}"),
        })
    }

    /// A request with a small body (or none); non-success statuses are errors.
    async fn call(
        &self,
        addr: &str,
        method: Method,
        pq: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Incoming>, NodeError> {
        self.call_typed(addr, method, pq, Bytes::from(body.unwrap_or_default()), &[]).await
    }

    /// [`NodeClient::call`] with a body that is already `Bytes` (sent as it
    /// is) and extra headers (content type, accept).
    async fn call_typed(
        &self,
        addr: &str,
        method: Method,
        pq: &str,
        body: Bytes,
        headers: &[(http::header::HeaderName, &'static str)],
    ) -> Result<Response<Incoming>, NodeError> {
        let mut req = self.request(
            addr,
            method,
            pq,
            Payload::Bytes(&body),
            if body.is_empty() { empty_body() } else { full_body(body.clone()) },
        )?;
        for (name, value) in headers {
            req.headers_mut().insert(name.clone(), HeaderValue::from_static(value));
        }
        let resp = self.rpc.send_within(addr, req, self.timeouts.connect + self.timeouts.response).await?;
        if resp.status().is_success() { Ok(resp) } else { Err(status_error(addr, resp, self.timeouts.idle).await) }
    }

    /// Streams `blocks` into shard `id` on the node at `addr`. Returns once the
    /// node has fsynced the file and its directory. An `Err` item in `blocks`
    /// aborts the upload and nothing is stored.
    pub async fn put_shard<S>(
        &self,
        addr: &str,
        id: &ShardId,
        header: &ShardHeader,
        blocks: S,
    ) -> Result<ShardInfo, NodeError>
    where
        S: Stream<Item = Result<Frame, std::io::Error>> + Send + 'static,
    {
        let path = shard_path(id)?;
        let watch = Arc::new(Mutex::new(UploadWatch::default()));
        let nonce = sillok_rpc::auth::new_nonce();
        let seal = self.rpc.signer().body_seal(&nonce).map_err(|e| NodeError::Other(e.to_string()))?;
        let body = UploadBody {
            frames: Box::pin(blocks),
            pending: None,
            watch: watch.clone(),
            digest: FrameDigest::default(),
            seal: Some(seal),
        };
        let mut req = self.request(addr, Method::PUT, &path, Payload::Unsigned, body.boxed_unsync())?;
        let h = req.headers_mut();
        // The request's nonce is the one its body's seal is bound to; the
        // seal goes in a trailer, which HTTP/1.1 sends only when announced.
        let hv =
            |s: String| HeaderValue::from_str(&s).map_err(|_| NodeError::BadRequest("bad shard header value".into()));
        h.insert(sillok_rpc::auth::H_NONCE, hv(nonce)?);
        h.insert(http::header::TRAILER, HeaderValue::from_static(sillok_rpc::auth::H_BODY_SEAL));
        h.insert(api::H_CODEC, hv(header.codec.clone())?);
        h.insert(api::H_K, HeaderValue::from(u16::from(header.k)));
        h.insert(api::H_M, HeaderValue::from(u16::from(header.m)));
        h.insert(api::H_BLOCK_SIZE, HeaderValue::from(header.block_size));
        h.insert(api::H_BLOCKS, HeaderValue::from(header.blocks));
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));

        let t = self.timeouts;
        let started = Instant::now();
        let fut = self.rpc.send_unbounded(req)?;
        tokio::pin!(fut);
        let tick = (t.idle.min(t.response) / 4).clamp(Duration::from_millis(5), Duration::from_millis(250));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            tokio::select! {
                r = &mut fut => break r,
                _ = ticker.tick() => {
                    let mut w = watch.lock().expect("upload watch");
                    if let Some(e) = w.caller_error.take() {
                        // The connection task has already dropped the
                        // connection mid-body (no final chunk): the node
                        // stores nothing.
                        return Err(NodeError::Io(e));
                    }
                    if let Some(since) = w.handed_out {
                        if since.elapsed() > t.idle {
                            return Err(NodeError::Timeout { addr: addr.to_string(), what: "idle while sending a shard (node not reading)" });
                        }
                    } else if let Some(ended) = w.ended {
                        if ended.elapsed() > t.response {
                            return Err(NodeError::Timeout { addr: addr.to_string(), what: "response" });
                        }
                    } else if !w.started && started.elapsed() > t.connect + t.response {
                        return Err(NodeError::Timeout { addr: addr.to_string(), what: "response" });
                    }
                }
            }
        };
        if let Some(e) = watch.lock().expect("upload watch").caller_error.take() {
            return Err(NodeError::Io(e));
        }
        let resp = result.map_err(|e| NodeError::from(sillok_rpc::client::classify(addr, &e)))?;
        if !resp.status().is_success() {
            return Err(status_error(addr, resp, t.idle).await);
        }
        let bytes = read_body(addr, resp.into_body(), t.idle, MAX_JSON_RESPONSE).await?;
        let info: ShardInfo = serde_json::from_slice(&bytes).map_err(|e| NodeError::Status {
            addr: addr.to_string(),
            status: 200,
            body: format!("bad JSON from node: {e}"),
        })?;
        if info.id != *id || info.blocks != header.blocks {
            return Err(NodeError::Status {
                addr: addr.to_string(),
                status: 200,
                body: "node acknowledged a different shard".into(),
            });
        }
        Ok(info)
    }

    /// Blocks `range` of shard `id` (end clamped to the shard's length),
    /// verified against their blake3 hashes. `NodeError::NotFound` if absent.
    pub async fn get_shard(&self, addr: &str, id: &ShardId, range: Range<u32>) -> Result<BlockStream, NodeError> {
        if range.end < range.start {
            return Err(NodeError::BadRequest("range end before its start".into()));
        }
        let pq = format!("{}?from={}&to={}", shard_path(id)?, range.start, range.end);
        let resp = self.call(addr, Method::GET, &pq, None).await?;
        let frames: u32 = header_u(addr, &resp, api::H_FRAMES)?;
        let state = ReadState {
            addr: addr.to_string(),
            shard: id.file_name(),
            body: resp.into_body(),
            decoder: FrameDecoder::default(),
            next_index: range.start,
            left: frames,
            idle: self.timeouts.idle,
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(state, |mut st| async move {
            if st.done {
                return None;
            }
            let item = st.next().await;
            match item {
                None => None,
                Some(Err(e)) => {
                    st.done = true;
                    Some((Err(e), st))
                }
                Some(Ok(f)) => Some((Ok(f), st)),
            }
        })))
    }

    pub async fn stat_shard(&self, addr: &str, id: &ShardId) -> Result<Option<ShardInfo>, NodeError> {
        let resp = match self.call(addr, Method::HEAD, &shard_path(id)?, None).await {
            Ok(r) => r,
            Err(NodeError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(ShardInfo {
            id: id.clone(),
            blocks: header_u(addr, &resp, api::H_BLOCKS)?,
            block_size: header_u(addr, &resp, api::H_BLOCK_SIZE)?,
            data_len: header_u(addr, &resp, api::H_DATA_LEN)?,
        }))
    }

    pub async fn delete_shard(&self, addr: &str, id: &ShardId) -> Result<(), NodeError> {
        self.call(addr, Method::DELETE, &shard_path(id)?, None).await.map(|_| ())
    }

    pub async fn list_shards(&self, addr: &str, after: Option<&str>, limit: u32) -> Result<ShardList, NodeError> {
        let mut pq = format!("/v1/shards?limit={limit}");
        if let Some(a) = after {
            pq.push_str("&after=");
            pq.extend(utf8_percent_encode(a, QUERY_VALUE));
        }
        self.call_json(addr, Method::GET, &pq, None).await
    }

    pub async fn put_manifest(&self, addr: &str, m: &Manifest) -> Result<PutManifestReply, NodeError> {
        self.put_manifest_encoded(addr, Bytes::from(wire::encode(m))).await
    }

    /// Stores a manifest already in its binary encoding (`wire::encode`), so
    /// a caller that sends one manifest to several replicas encodes it once.
    pub async fn put_manifest_encoded(&self, addr: &str, encoded: Bytes) -> Result<PutManifestReply, NodeError> {
        let ct = [(http::header::CONTENT_TYPE, api::MANIFEST_TYPE)];
        let resp = self.call_typed(addr, Method::POST, "/v1/manifests/put", encoded, &ct).await?;
        let bytes = read_body(addr, resp.into_body(), self.timeouts.idle, MAX_JSON_RESPONSE).await?;
        serde_json::from_slice(&bytes).map_err(|e| bad_answer(addr, format!("bad JSON from node: {e}")))
    }

    /// The node's manifest of `bucket/key`, or `None` if it holds none. It
    /// arrives in its binary encoding; an inline body shares the response's
    /// buffer.
    pub async fn get_manifest(&self, addr: &str, bucket: &str, key: &str) -> Result<Option<Manifest>, NodeError> {
        let body = serde_json::to_vec(&GetManifest { bucket: bucket.into(), key: key.into() })
            .map_err(|e| NodeError::Other(e.to_string()))?;
        let accept = [(http::header::ACCEPT, api::MANIFEST_TYPE)];
        let resp = match self.call_typed(addr, Method::POST, "/v1/manifests/get", body.into(), &accept).await {
            Ok(r) => r,
            Err(NodeError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let binary = resp.headers().get(http::header::CONTENT_TYPE).is_some_and(|v| v == api::MANIFEST_TYPE);
        let bytes = read_body(addr, resp.into_body(), self.timeouts.idle, MAX_JSON_RESPONSE).await?;
        if binary {
            wire::decode(&bytes).map(Some).map_err(|e| bad_answer(addr, format!("bad manifest from node: {e}")))
        } else {
            serde_json::from_slice(&bytes).map(Some).map_err(|e| bad_answer(addr, format!("bad JSON from node: {e}")))
        }
    }

    /// What a quorum read needs of the node's manifest of `bucket/key`
    /// (version, location generation, digest), or `None` if it holds none.
    pub async fn manifest_summary(
        &self,
        addr: &str,
        bucket: &str,
        key: &str,
    ) -> Result<Option<api::ManifestSummary>, NodeError> {
        let body = serde_json::to_vec(&GetManifest { bucket: bucket.into(), key: key.into() })
            .map_err(|e| NodeError::Other(e.to_string()))?;
        let resp = match self.call_typed(addr, Method::POST, "/v1/manifests/summary", body.into(), &[]).await {
            Ok(r) => r,
            Err(NodeError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let bytes = read_body(addr, resp.into_body(), self.timeouts.idle, api::ManifestSummary::LEN).await?;
        api::ManifestSummary::decode(&bytes)
            .map(Some)
            .ok_or_else(|| bad_answer(addr, format!("a manifest summary of {} bytes", bytes.len())))
    }

    pub async fn list_manifests(&self, addr: &str, req: &ListManifests) -> Result<ManifestList, NodeError> {
        let body = serde_json::to_vec(req).map_err(|e| NodeError::Other(e.to_string()))?;
        self.call_json(addr, Method::POST, "/v1/manifests/list", Some(body)).await
    }

    /// Compare-and-swap of shard places of one version (see `meta_store::relocate`).
    pub async fn relocate(&self, addr: &str, req: &api::Relocate) -> Result<api::RelocateReply, NodeError> {
        let body = serde_json::to_vec(req).map_err(|e| NodeError::Other(e.to_string()))?;
        self.call_json(addr, Method::POST, "/v1/manifests/relocate", Some(body)).await
    }

    /// One page of the manifests a node holds in a PG.
    pub async fn list_pg_manifests(&self, addr: &str, req: &api::ListPg) -> Result<api::PgManifestList, NodeError> {
        let body = serde_json::to_vec(req).map_err(|e| NodeError::Other(e.to_string()))?;
        self.call_json(addr, Method::POST, "/v1/pg/manifests", Some(body)).await
    }

    /// Reports a shard the caller could not use (missing, or a block that
    /// failed its check); returns whether the node found it sound.
    pub async fn report_suspect(&self, addr: &str, id: &ShardId) -> Result<bool, NodeError> {
        let body = serde_json::to_vec(id).map_err(|e| NodeError::Other(e.to_string()))?;
        let v: serde_json::Value = self.call_json(addr, Method::POST, "/v1/repair/suspect", Some(body)).await?;
        Ok(v["sound"].as_bool().unwrap_or(false))
    }

    /// Changes the rebuild engine's throttle of the node at `addr`; returns the throttle now.
    pub async fn repair_throttle(
        &self,
        addr: &str,
        s: &crate::rebuild::ThrottleSettings,
    ) -> Result<crate::rebuild::ThrottleSettings, NodeError> {
        let body = serde_json::to_vec(s).map_err(|e| NodeError::Other(e.to_string()))?;
        self.call_json(addr, Method::POST, "/v1/repair/throttle", Some(body)).await
    }

    /// One page of a PG's live manifests that have shards, with their places.
    pub async fn list_pg_objects(&self, addr: &str, req: &api::ListPg) -> Result<api::PgObjectList, NodeError> {
        let body = serde_json::to_vec(req).map_err(|e| NodeError::Other(e.to_string()))?;
        self.call_json(addr, Method::POST, "/v1/pg/objects", Some(body)).await
    }

    /// One page of the shard files a node holds in a PG.
    pub async fn list_pg_shards(&self, addr: &str, req: &api::ListPg) -> Result<api::PgShardList, NodeError> {
        let body = serde_json::to_vec(req).map_err(|e| NodeError::Other(e.to_string()))?;
        self.call_json(addr, Method::POST, "/v1/pg/shards", Some(body)).await
    }

    pub async fn pg_digest(&self, addr: &str, sel: &api::PgSelector) -> Result<api::PgDigest, NodeError> {
        let body = serde_json::to_vec(sel).map_err(|e| NodeError::Other(e.to_string()))?;
        self.call_json(addr, Method::POST, "/v1/pg/digest", Some(body)).await
    }

    /// Digests of several PGs, in the order named.
    pub async fn pg_digests(&self, addr: &str, req: &api::PgDigests) -> Result<Vec<api::PgDigest>, NodeError> {
        let body = serde_json::to_vec(req).map_err(|e| NodeError::Other(e.to_string()))?;
        let out: Vec<api::PgDigest> = self.call_json(addr, Method::POST, "/v1/pg/digests", Some(body)).await?;
        if out.len() != req.pgs.len() {
            return Err(NodeError::Other(format!("{addr} sent {} digests for {} PGs", out.len(), req.pgs.len())));
        }
        Ok(out)
    }

    /// Where the manifests on the node place the shards of `object_ids`.
    pub async fn placements(&self, addr: &str, object_ids: &[String]) -> Result<Vec<api::ShardPlace>, NodeError> {
        let body = serde_json::to_vec(&api::References { object_ids: object_ids.to_vec() })
            .map_err(|e| NodeError::Other(e.to_string()))?;
        let r: api::ShardPlaces = self.call_json(addr, Method::POST, "/v1/references", Some(body)).await?;
        Ok(r.places)
    }

    /// Whether the node answers; `Ok` names the map epoch it follows and how
    /// far its clock is from ours.
    /// The placement map the node at `addr` follows.
    pub async fn followed_map(&self, addr: &str) -> Result<sillok_placement::PlacementMap, NodeError> {
        self.call_json(addr, Method::GET, "/v1/map", None).await
    }

    pub async fn health(&self, addr: &str) -> Result<NodeHealth, NodeError> {
        let sent = sillok_model::clock::wall_ms();
        let resp = self.call(addr, Method::GET, "/v1/health", None).await?;
        let received = sillok_model::clock::wall_ms();
        let epoch = api::epoch_of(resp.headers()).unwrap_or(0);
        let node_ms: Option<i64> =
            resp.headers().get(api::H_TIME).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        read_body(addr, resp.into_body(), self.timeouts.idle, MAX_ERROR_BODY).await?;
        // The node read its clock somewhere between `sent` and `received`:
        // the midpoint estimate is off by at most half the round trip.
        let clock_offset_ms = node_ms.map(|n| n - (sent + received) / 2);
        Ok(NodeHealth { epoch, clock_offset_ms, round_trip_ms: received - sent })
    }
}

/// What the upload body tells the watchdog in `put_shard`.
#[derive(Default)]
struct UploadWatch {
    /// The body has been polled at least once (the connection is up).
    started: bool,
    /// A chunk was handed to the connection at this time and it has not asked
    /// for the next one since: the node is not reading.
    handed_out: Option<Instant>,
    /// The body ended at this time.
    ended: Option<Instant>,
    /// The caller's stream failed; the upload is being aborted.
    caller_error: Option<std::io::Error>,
}

/// The request body of a shard upload: each frame's header, then its data.
struct UploadBody {
    frames: Pin<Box<dyn Stream<Item = Result<Frame, std::io::Error>> + Send>>,
    pending: Option<Bytes>,
    watch: Arc<Mutex<UploadWatch>>,
    /// Of the frames handed out so far.
    digest: FrameDigest,
    /// Sent as the trailer once the frames end (then `None`).
    seal: Option<BodySeal>,
}

impl HttpBody for UploadBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        {
            let mut w = this.watch.lock().expect("upload watch");
            w.started = true;
            w.handed_out = None;
        }
        let hand_out = |watch: &Mutex<UploadWatch>, b: Bytes| {
            watch.lock().expect("upload watch").handed_out = Some(Instant::now());
            Poll::Ready(Some(Ok(http_body::Frame::data(b))))
        };
        if let Some(data) = this.pending.take()
            && !data.is_empty()
        {
            return hand_out(&this.watch, data);
        }
        match this.frames.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                this.digest.add(&frame);
                let head = Bytes::copy_from_slice(&frame.header());
                this.pending = Some(frame.data);
                hand_out(&this.watch, head)
            }
            Poll::Ready(Some(Err(e))) => {
                let msg = e.to_string();
                this.watch.lock().expect("upload watch").caller_error = Some(e);
                Poll::Ready(Some(Err(format!("shard upload aborted by the caller: {msg}").into())))
            }
            Poll::Ready(None) => {
                this.watch.lock().expect("upload watch").ended = Some(Instant::now());
                match this.seal.take() {
                    Some(seal) => {
                        let mut trailers = http::HeaderMap::new();
                        let value = seal.value(&this.digest.digest());
                        trailers.insert(
                            sillok_rpc::auth::H_BODY_SEAL,
                            HeaderValue::from_str(&value).expect("hex is a header value"),
                        );
                        Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))))
                    }
                    None => Poll::Ready(None),
                }
            }
        }
    }
}

/// The decoding side of `get_shard`.
struct ReadState {
    addr: String,
    shard: String,
    body: Incoming,
    decoder: FrameDecoder,
    next_index: u32,
    /// Frames the node announced and has not yet delivered.
    left: u32,
    idle: Duration,
    done: bool,
}

impl ReadState {
    /// After the last announced block: reads the body's end (the chunked
    /// terminator follows the last block at once), so the connection goes
    /// back to the pool even if the caller drops the stream now. Without
    /// this a dropped, unfinished body closes the connection, and the next
    /// request pays a new TCP and TLS handshake. Bytes that arrive instead
    /// are kept for the next call, which reports them.
    async fn drain_end(&mut self) {
        while let Ok(Some(Ok(frame))) = tokio::time::timeout(self.idle, self.body.frame()).await {
            if let Ok(data) = frame.into_data() {
                self.decoder.push(data);
                return;
            }
        }
    }

    async fn next(&mut self) -> Option<Result<Frame, NodeError>> {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(f)) => {
                    if self.left == 0 {
                        return Some(Err(NodeError::Status {
                            addr: self.addr.clone(),
                            status: 200,
                            body: "node sent more blocks than it announced".into(),
                        }));
                    }
                    self.left -= 1;
                    self.next_index += 1;
                    if self.left == 0 {
                        self.drain_end().await;
                    }
                    return Some(Ok(f));
                }
                Ok(None) => {}
                Err(FrameError::HashMismatch) => {
                    return Some(Err(NodeError::Corrupt(format!(
                        "shard {} block {} from {} failed its blake3 check",
                        self.shard, self.next_index, self.addr
                    ))));
                }
                Err(e) => {
                    return Some(Err(NodeError::Status {
                        addr: self.addr.clone(),
                        status: 200,
                        body: format!("bad frame: {e}"),
                    }));
                }
            }
            match tokio::time::timeout(self.idle, self.body.frame()).await {
                Err(_) => {
                    return Some(Err(NodeError::Timeout {
                        addr: self.addr.clone(),
                        what: "idle while reading a shard",
                    }));
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.decoder.push(data);
                    }
                }
                Ok(Some(Err(e))) => {
                    return Some(Err(NodeError::Unreachable {
                        addr: self.addr.clone(),
                        reason: format!("shard body broke off: {e}"),
                    }));
                }
                Ok(None) => {
                    if let Err(e) = self.decoder.finish() {
                        return Some(Err(NodeError::Unreachable {
                            addr: self.addr.clone(),
                            reason: format!("shard body: {e}"),
                        }));
                    }
                    if self.left > 0 {
                        // A clean but short body: the node refused the next block.
                        return Some(Err(NodeError::Corrupt(format!(
                            "shard {} block {} failed its check on {}",
                            self.shard, self.next_index, self.addr
                        ))));
                    }
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_outside_a_runtime_and_encodes_queries() {
        let c = NodeClient::new("s", Timeouts::default());
        assert!(!format!("{c:?}").contains("\"s\""));
        assert_eq!(utf8_percent_encode("0a.1 /é~", QUERY_VALUE).to_string(), "0a.1%20%2F%C3%A9~");
        assert!(shard_path(&ShardId { object_id: "../x".into(), index: 0 }).is_err());
    }
}
