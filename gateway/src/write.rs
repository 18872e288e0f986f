//! The PUT path: one pass over the body, in stripes, with bounded memory.
//!
//! body chunks → stripe buffer (k·block_size bytes) → on the blocking pool: MD5
//! update, RS encode into k+m blocks, blake3 of each block → one bounded channel
//! per shard (2 blocks deep) → `put_shard` streams to k+m nodes in parallel.
//! Memory per request is about one stripe being filled, one being encoded, and
//! two blocks per shard in flight: a few stripes, whatever the object size.
//!
//! Acknowledgement rule (ARCHITECTURE.md promise 1): with every site up, the
//! shards fsynced on nodes must be such that removing any one site still leaves
//! k of them. While a whole site is unreachable, that cannot hold; the PUT is
//! then acknowledged only when all k+m shards are fsynced on the surviving
//! sites (substitute nodes stand in for the lost site's slots, and the manifest
//! records where each shard is). Then the manifest goes to a majority of its
//! replicas (see `quorum`). Only then does the client get 200.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use md5::{Digest, Md5};
use sillok_model::codec::{CODEC_ID, Codec};
use sillok_model::frame::Frame;
use sillok_model::manifest::{Body, Manifest, ShardLocation, Sharded, Version};
use sillok_placement::{NodeId, NodeState, PlacementMap};
use sillok_storage_node::NodeError;
use sillok_storage_node::api::ShardId;
use sillok_storage_node::client::ShardHeader;
use tokio::sync::mpsc;

use crate::checksum;
use crate::cluster::Cluster;
use crate::error::GatewayError;
use crate::fanout::{self, Gathered, Need, Rest};
use crate::quorum;

#[derive(Debug, Clone, Copy)]
pub struct WriteSettings {
    /// Bytes per shard block; a stripe is k of them.
    pub block_size: u32,
    /// Bodies up to this size live inside the manifest.
    pub inline_threshold: u64,
    /// The largest single PUT accepted (S3: 5 GiB).
    pub max_object_size: u64,
    /// A shard whose node takes longer than this to accept its next block is
    /// dropped from the upload (a hung node must not hold the PUT).
    pub stall_deadline: std::time::Duration,
    /// A client that sends no body bytes for this long loses its request
    /// (S3's `RequestTimeout`): a slow or stalled client cannot hold a PUT.
    pub body_idle_timeout: std::time::Duration,
}

impl Default for WriteSettings {
    fn default() -> Self {
        WriteSettings {
            block_size: 256 << 10,
            inline_threshold: 64 << 10,
            max_object_size: 5 << 30,
            stall_deadline: std::time::Duration::from_secs(5),
            body_idle_timeout: std::time::Duration::from_secs(60),
        }
    }
}

/// What the S3 layer knows about a PUT besides its body.
#[derive(Debug, Clone, Default)]
pub struct PutRequest {
    pub bucket: String,
    pub key: String,
    pub content_length: u64,
    /// Decoded Content-MD5, if the client sent one.
    pub content_md5: Option<[u8; 16]>,
    pub content_type: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub user_metadata: BTreeMap<String, String>,
    /// An additional checksum the client asked for (verified, then kept).
    pub checksum: Option<checksum::Expected>,
}

/// The digests computed in the single pass over a body.
struct Digests {
    md5: Md5,
    extra: Option<checksum::Hasher>,
}

impl Digests {
    fn new(req: &PutRequest) -> Self {
        Digests { md5: Md5::new(), extra: req.checksum.as_ref().map(|c| checksum::Hasher::new(c.algorithm)) }
    }
    fn update(&mut self, data: &[u8]) {
        self.md5.update(data);
        if let Some(h) = &mut self.extra {
            h.update(data);
        }
    }
    fn finish(self) -> ([u8; 16], Option<String>) {
        (self.md5.finalize().into(), self.extra.map(checksum::Hasher::finish))
    }
}

/// The next chunk of a client's body, or `RequestTimeout` if it stalls.
async fn next_chunk<S, E>(body: &mut S, idle: std::time::Duration) -> Result<Option<Bytes>, GatewayError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: std::fmt::Display,
{
    match tokio::time::timeout(idle, body.next()).await {
        Err(_) => Err(GatewayError::RequestTimeout),
        Ok(None) => Ok(None),
        Ok(Some(Ok(c))) => Ok(Some(c)),
        Ok(Some(Err(e))) => Err(GatewayError::from_body_error(e.to_string())),
    }
}

pub async fn put_object<S, E>(
    cluster: &Arc<Cluster>,
    settings: &WriteSettings,
    req: PutRequest,
    body: S,
) -> Result<Manifest, GatewayError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: std::fmt::Display,
{
    if req.content_length > settings.max_object_size {
        return Err(GatewayError::EntityTooLarge { max: settings.max_object_size });
    }
    // Refused before the body is read, and again at the manifest write.
    cluster.check_clock()?;
    let (body, (md5, computed)) = if req.content_length <= settings.inline_threshold {
        let (data, digests) = read_small(body, &req, settings.body_idle_timeout).await?;
        (Body::Inline { data }, digests)
    } else {
        write_shards(cluster, settings, &req, body).await?
    };
    if let Some(expected) = req.content_md5 {
        if expected != md5 {
            discard(cluster, &body);
            return Err(GatewayError::BadDigest);
        }
    }
    let mut headers = req.headers;
    if let (Some(expected), Some(computed)) = (&req.checksum, computed) {
        if let Some(claimed) = expected.claimed() {
            if claimed.trim() != computed {
                discard(cluster, &body);
                return Err(GatewayError::ChecksumMismatch { algorithm: expected.algorithm.name() });
            }
        }
        headers.insert(expected.algorithm.header().to_string(), computed);
    }
    // The version is taken now that the body is durable, so that the PUT
    // that completes last wins (`quorum::write_manifest` moves it above any
    // newer one a replica names).
    let version = Version::now();
    let manifest = Manifest {
        bucket: req.bucket,
        key: req.key,
        version,
        last_modified_ms: version.millis(),
        size: req.content_length,
        etag: hex::encode(md5),
        content_type: req.content_type,
        headers,
        user_metadata: req.user_metadata,
        body,
    };
    // A failed manifest write may still have reached some replicas (or reach
    // them after its deadline), so its shards are not deleted here: the
    // version may yet be the one readers see.
    quorum::write_manifest(cluster, &manifest).await
}

type Digested = ([u8; 16], Option<String>);

async fn read_small<S, E>(
    mut body: S,
    req: &PutRequest,
    idle: std::time::Duration,
) -> Result<(Vec<u8>, Digested), GatewayError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: std::fmt::Display,
{
    let len = req.content_length;
    let mut data = Vec::with_capacity(len as usize);
    while let Some(chunk) = next_chunk(&mut body, idle).await? {
        if data.len() as u64 + chunk.len() as u64 > len {
            return Err(GatewayError::IncompleteBody { declared: len, got: data.len() as u64 + chunk.len() as u64 });
        }
        data.extend_from_slice(&chunk);
    }
    if data.len() as u64 != len {
        return Err(GatewayError::IncompleteBody { declared: len, got: data.len() as u64 });
    }
    let mut digests = Digests::new(req);
    digests.update(&data);
    Ok((data, digests.finish()))
}

/// Picks the node for each shard index: the slot's node unless it is suspect,
/// then a substitute, preferring the same site, then the least-loaded up site.
pub fn choose_targets(cluster: &Cluster, map: &PlacementMap, slots: &[NodeId]) -> Vec<NodeId> {
    let mut targets: Vec<Option<NodeId>> = slots.iter().map(|&n| (!cluster.is_suspect(n)).then_some(n)).collect();
    let site_of = |n: NodeId| map.topology.node(n).map(|x| x.site.clone()).unwrap_or_default();
    for i in 0..slots.len() {
        if targets[i].is_some() {
            continue;
        }
        let home = site_of(slots[i]);
        let usable: Vec<&sillok_placement::Node> =
            map.topology.nodes.iter().filter(|n| n.state == NodeState::Up && !cluster.is_suspect(n.id)).collect();
        let load = |t: &[Option<NodeId>], n: NodeId| t.iter().filter(|x| **x == Some(n)).count();
        let site_load = |t: &[Option<NodeId>], s: &str| t.iter().flatten().filter(|x| site_of(**x) == s).count();
        // Distinct nodes first: same site, then any site (least loaded site first).
        let pick = usable
            .iter()
            .filter(|n| load(&targets, n.id) == 0 && !slots.contains(&n.id))
            .min_by_key(|n| (n.site != home, site_load(&targets, &n.site), n.id))
            .or_else(|| {
                usable.iter().min_by_key(|n| (load(&targets, n.id), site_load(&targets, &n.site), n.site != home, n.id))
            })
            .map(|n| n.id);
        targets[i] = Some(pick.unwrap_or(slots[i]));
    }
    targets.into_iter().map(|t| t.expect("every slot got a target")).collect()
}

/// Whether a set of written shards meets the acknowledgement rule (see top).
pub fn durable(map: &PlacementMap, k: usize, width: usize, written: &[ShardLocation], down_sites: &[String]) -> bool {
    let site_of = |n: NodeId| map.topology.node(n).map(|x| x.site.as_str()).unwrap_or("");
    if !down_sites.is_empty() {
        return written.len() == width;
    }
    let sites: BTreeSet<&str> =
        map.topology.nodes.iter().filter(|n| n.state.holds_slots()).map(|n| n.site.as_str()).collect();
    sites.iter().all(|s| written.iter().filter(|w| site_of(w.node) != *s).count() >= k)
}

async fn write_shards<S, E>(
    cluster: &Arc<Cluster>,
    settings: &WriteSettings,
    req: &PutRequest,
    mut body: S,
) -> Result<(Body, Digested), GatewayError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: std::fmt::Display,
{
    let map = cluster.map();
    let (k, m) = (map.profile.k as usize, map.profile.m as usize);
    let codec = Codec::new(k, m).map_err(|e| GatewayError::Internal(e.to_string()))?;
    let stripe_size = k as u64 * u64::from(settings.block_size);
    let stripes = req.content_length.div_ceil(stripe_size);
    let blocks = u32::try_from(stripes).map_err(|_| GatewayError::EntityTooLarge { max: settings.max_object_size })?;
    let pg = map.pg_of(&req.bucket, &req.key);
    let targets = choose_targets(cluster, &map, map.slots(pg));
    let object_id = ShardId::new_object_id();
    let header =
        ShardHeader { codec: CODEC_ID.into(), k: k as u8, m: m as u8, block_size: settings.block_size, blocks };

    let mut senders = Vec::with_capacity(k + m);
    let mut uploads = Vec::with_capacity(k + m);
    let client = cluster.client(&map);
    for (i, &node) in targets.iter().enumerate() {
        let (tx, rx) = mpsc::channel::<Result<Frame, std::io::Error>>(2);
        senders.push(Some(tx));
        let client = client.clone();
        let addr = map.topology.node(node).map(|n| n.addr.clone());
        let id = ShardId { object_id: object_id.clone(), index: i as u8 };
        let header = header.clone();
        let upload = tokio::spawn(async move {
            let Some(addr) = addr else { return Err(NodeError::Other(format!("node {node} is not in the map"))) };
            client.put_shard(&addr, &id, &header, tokio_stream_from(rx)).await.map(|_| i)
        });
        uploads.push((node, AbortOnDrop(upload)));
    }

    let abort_all = |senders: &mut Vec<Option<mpsc::Sender<Result<Frame, std::io::Error>>>>| {
        for tx in senders.iter_mut().filter_map(Option::take) {
            let _ = tx.try_send(Err(std::io::Error::other("upload aborted")));
        }
    };

    let mut buf = BytesMut::with_capacity(stripe_size as usize);
    let mut got: u64 = 0;
    let t_start = std::time::Instant::now();
    let mut t_body = std::time::Duration::ZERO;
    let mut t_encode_send = std::time::Duration::ZERO;
    let result: Result<Digests, GatewayError> = async {
        let mut digests = Digests::new(req);
        loop {
            let t0 = std::time::Instant::now();
            let next = next_chunk(&mut body, settings.body_idle_timeout).await?;
            t_body += t0.elapsed();
            let Some(chunk) = next else { break };
            got += chunk.len() as u64;
            if got > req.content_length {
                return Err(GatewayError::IncompleteBody { declared: req.content_length, got });
            }
            let mut rest = chunk;
            while !rest.is_empty() {
                let take = rest.len().min(stripe_size as usize - buf.len());
                buf.extend_from_slice(&rest.split_to(take));
                if buf.len() as u64 == stripe_size {
                    let stripe = buf.split().freeze();
                    buf.reserve(stripe_size as usize);
                    let t0 = std::time::Instant::now();
                    digests = encode_and_send(&codec, digests, stripe, &mut senders, settings.stall_deadline).await?;
                    t_encode_send += t0.elapsed();
                }
            }
        }
        if got != req.content_length {
            return Err(GatewayError::IncompleteBody { declared: req.content_length, got });
        }
        if !buf.is_empty() {
            let stripe = buf.split().freeze();
            let t0 = std::time::Instant::now();
            digests = encode_and_send(&codec, digests, stripe, &mut senders, settings.stall_deadline).await?;
            t_encode_send += t0.elapsed();
        }
        Ok(digests)
    }
    .await;
    let digests = match result {
        Ok(d) => d,
        Err(e) => {
            abort_all(&mut senders);
            drop(uploads);
            delete_shards(cluster, &object_id, &targets);
            return Err(e);
        }
    };
    drop(senders); // ends every shard stream: nodes fsync and answer

    // Healthy nodes answer within an fsync; a hung one is given up on.
    let finish = settings.stall_deadline * 2;
    let calls = uploads
        .into_iter()
        .map(|(node, mut upload)| {
            let done = async move {
                match (&mut upload.0).await {
                    Ok(r) => r,
                    Err(e) => Err(NodeError::Other(format!("upload task: {e}"))),
                }
            };
            (node, done)
        })
        .collect();
    let (ok, failed) = match fanout::gather(cluster, &map, calls, Need::all(), Rest::Drop, Some(finish)).await {
        Gathered::Met { ok, failed } | Gathered::Short { ok, failed } => (ok, failed),
        Gathered::Stale(_) => unreachable!("shard uploads are not refused for their epoch"),
    };
    let mut written: Vec<ShardLocation> =
        ok.into_iter().map(|(node, i)| ShardLocation { index: i as u8, node }).collect();
    let mut failures: Vec<String> = failed.iter().map(|(node, e)| format!("shard on {node}: {e}")).collect();
    if written.len() + failed.len() < targets.len() {
        failures
            .push(format!("{} shard(s): no answer within {finish:?}", targets.len() - written.len() - failed.len()));
    }
    written.sort_by_key(|w| w.index);
    tracing::debug!(
        bytes = got,
        body_ms = t_body.as_secs_f64() * 1e3,
        encode_send_ms = t_encode_send.as_secs_f64() * 1e3,
        total_ms = t_start.elapsed().as_secs_f64() * 1e3,
        "shards written"
    );
    let down = cluster.down_sites();
    if !durable(&map, k, k + m, &written, &down) {
        delete_shards(cluster, &object_id, &targets);
        return Err(GatewayError::Unavailable(format!(
            "only {} of {} shards stored durably, not enough to survive a site loss: {}",
            written.len(),
            k + m,
            failures.join("; ")
        )));
    }
    if !failures.is_empty() {
        tracing::warn!(object_id, failures = %failures.join("; "), "PUT acknowledged with missing shards (queued for repair)");
    }
    let sharded = Sharded {
        object_id,
        codec: CODEC_ID.into(),
        k: k as u8,
        m: m as u8,
        block_size: settings.block_size,
        epoch: map.epoch,
        shards: written,
    };
    Ok((Body::Sharded(sharded), digests.finish()))
}

/// MD5 and encoding on the blocking pool, then one block to each shard's
/// channel. A shard whose upload already failed is skipped from then on.
async fn encode_and_send(
    codec: &Codec,
    mut digests: Digests,
    stripe: Bytes,
    senders: &mut [Option<mpsc::Sender<Result<Frame, std::io::Error>>>],
    stall_deadline: std::time::Duration,
) -> Result<Digests, GatewayError> {
    let codec = codec.clone();
    let (digests, frames) = tokio::task::spawn_blocking(move || {
        digests.update(&stripe);
        let blocks = codec.encode(stripe)?;
        Ok::<_, sillok_model::codec::CodecError>((digests, blocks.into_iter().map(Frame::new).collect::<Vec<_>>()))
    })
    .await
    .map_err(|e| GatewayError::Internal(e.to_string()))?
    .map_err(|e| GatewayError::Internal(e.to_string()))?;
    // All shards are fed concurrently, so one slow node delays the others by
    // at most `stall_deadline`; after that its upload is abandoned (the node
    // then sees fewer blocks than declared and stores nothing).
    let sends = senders.iter_mut().zip(frames).map(|(slot, frame)| async move {
        if let Some(tx) = slot.as_ref() {
            match tokio::time::timeout(stall_deadline, tx.send(Ok(frame))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => *slot = None,
                Err(_) => {
                    tracing::warn!("a shard upload stalled; dropping it");
                    if let Some(tx) = slot.take() {
                        let _ = tx.try_send(Err(std::io::Error::other("stalled")));
                    }
                }
            }
        }
    });
    futures::future::join_all(sends).await;
    if senders.iter().all(Option::is_none) {
        return Err(GatewayError::Unavailable("every shard upload failed".into()));
    }
    Ok(digests)
}

/// A spawned upload that is cancelled when its handle is dropped (a failed
/// PUT, or a node given up on).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn tokio_stream_from<T: Send + 'static>(mut rx: mpsc::Receiver<T>) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Removes the shard files of an object version, in the background.
pub fn delete_shards(cluster: &Arc<Cluster>, object_id: &str, nodes: &[NodeId]) {
    let cluster = cluster.clone();
    let object_id = object_id.to_string();
    let nodes = nodes.to_vec();
    tokio::spawn(async move {
        for (i, node) in nodes.into_iter().enumerate() {
            if let Some(addr) = cluster.addr(node) {
                let id = ShardId { object_id: object_id.clone(), index: i as u8 };
                if let Err(e) = cluster.client(&cluster.map()).delete_shard(&addr, &id).await {
                    tracing::debug!(%node, shard = %id.file_name(), error = %e, "could not delete shard");
                }
            }
        }
    });
}

/// Drops the stored shards of a body (every part of a multipart body).
pub fn discard(cluster: &Arc<Cluster>, body: &Body) {
    for s in body.sharded_sets() {
        let mut nodes = vec![NodeId(u32::MAX); s.k as usize + s.m as usize];
        for loc in &s.shards {
            if let Some(slot) = nodes.get_mut(loc.index as usize) {
                *slot = loc.node;
            }
        }
        delete_shards(cluster, &s.object_id, &nodes);
    }
}

/// Deletes the shards of a superseded version after `grace`, so that reads
/// already streaming it can finish.
pub fn retire_later(cluster: &Arc<Cluster>, old: Manifest, grace: std::time::Duration) {
    let cluster = cluster.clone();
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        discard(&cluster, &old.body);
    });
}
