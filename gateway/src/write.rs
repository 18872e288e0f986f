//! The PUT path: one pass over the body, in stripes, with bounded memory.
//!
//! body chunks → stripe buffer (k·block_size bytes) → on the blocking pool: MD5
//! update, RS encode into k+m blocks, blake3 of each block → one bounded channel
//! per shard (2 blocks deep) → `put_shard` streams to k+m nodes in parallel.
//! Memory per request is about one stripe being filled, one being encoded, and
//! two blocks per shard in flight: a few stripes, whatever the object size.
//!
//! Deadlines of a slow client. A node hears from the gateway only when a
//! whole stripe has arrived from the client, so a node's quiet gap is one
//! stripe's fill time (plus the previous stripe's send and encoding), not
//! the client's quiet gap. Two deadlines bound a client: no body bytes for
//! `body_idle_timeout` (60 s), and one stripe not filled within
//! [`stripe_deadline`] (120 s: about 8.7 KB/s with 1 MiB stripes); either is
//! `RequestTimeout`. Invariant (checked by [`stripe_deadline`] and a test):
//! stripe deadline + `stall_deadline` + [`ENCODE_MARGIN`] ≤ the node's
//! `UPLOAD_IDLE` (180 s), so a node never gives up on an upload the gateway
//! is still feeding, and a client at 20 KB/s (52 s per stripe) succeeds.
//!
//! Acknowledgement rule (ARCHITECTURE.md promise 1): with every site up, the
//! shards fsynced on nodes must be such that removing any one site still leaves
//! k of them. While a whole site is unreachable, that cannot hold; the PUT is
//! then acknowledged only when all k+m shards are fsynced on the surviving
//! sites (substitute nodes stand in for the lost site's slots, and the manifest
//! records where each shard is). Then the manifest goes to a majority of its
//! replicas (see `quorum`). Only then does the client get 200.
//!
//! Nothing here deletes a shard: a failed, aborted or superseded write leaves
//! its shards to the node's collector (`sillok_storage_node::collector`), which
//! deletes them once the PG's manifest replicas agree that nothing refers to
//! them. Object ids carry the placement hash (`model::placement`) so that the
//! collector knows which PG to ask.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use md5::{Digest, Md5};
use sillok_model::codec::{CODEC_ID, Codec};
use sillok_model::frame::Frame;
use sillok_model::manifest::{Body, Manifest, ShardLocation, Sharded, Version};
use sillok_model::placement;
use sillok_placement::{NodeId, NodeState, PlacementMap};
use sillok_storage_node::NodeError;
use sillok_storage_node::api::ShardId;
use sillok_storage_node::client::ShardHeader;
use tokio::sync::mpsc;

use crate::checksum;
use crate::cluster::Cluster;
use crate::error::GatewayError;
use crate::fanout::{self, Gathered, Need, Rest};
use sillok_catalog::state::Versioning;

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

/// The longest one stripe may take to arrive from the client (see the top).
pub const STRIPE_FILL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);
/// Room for encoding a stripe and scheduling, within a node's quiet gap.
pub const ENCODE_MARGIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The deadline for one stripe to arrive from the client: at most
/// [`STRIPE_FILL_DEADLINE`], and short enough that a node's quiet gap (one
/// stripe's fill, the previous stripe's send within `stall_deadline`, and
/// encoding) stays within the node's `UPLOAD_IDLE`.
pub fn stripe_deadline(settings: &WriteSettings) -> std::time::Duration {
    let node_idle = sillok_storage_node::server::UPLOAD_IDLE;
    STRIPE_FILL_DEADLINE.min(node_idle.saturating_sub(settings.stall_deadline + ENCODE_MARGIN)).max(ENCODE_MARGIN)
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
    /// The object's tags, already checked against S3's limits (`s3::tagging`).
    pub tags: BTreeMap<String, String>,
    /// An additional checksum the client asked for (verified, then kept).
    pub checksum: Option<checksum::Expected>,
    /// The bucket's versioning, which decides what the write keeps of the
    /// key's earlier versions (`versions::write_current`).
    pub versioning: Versioning,
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
    // A versioned write reads the key's current manifest; it starts now and
    // runs while the body is received.
    let head = crate::versions::HeadRead::start(cluster, req.versioning, &req.bucket, &req.key);
    let (body, (md5, computed)) = if req.content_length <= settings.inline_threshold {
        let (data, digests) = read_small(body, &req, settings.body_idle_timeout).await?;
        (Body::Inline { data: data.into() }, digests)
    } else {
        write_shards(cluster, settings, &req, body).await?
    };
    if let Some(expected) = req.content_md5
        && expected != md5
    {
        // The shards stay until the collector finds that no manifest
        // refers to them (`storage_node::collector`).
        return Err(GatewayError::BadDigest);
    }
    let mut headers = req.headers;
    if let (Some(expected), Some(computed)) = (&req.checksum, computed) {
        if let Some(claimed) = expected.claimed()
            && claimed.trim() != computed
        {
            return Err(GatewayError::ChecksumMismatch { algorithm: expected.algorithm.name() });
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
        tags: req.tags,
        body,
        locations: 0,
        version_id: None,
    };
    // A failed manifest write may still have reached some replicas (or reach
    // them after its deadline), so its shards are not deleted here: the
    // version may yet be the one readers see.
    crate::versions::write_current(cluster, req.versioning, manifest, head).await
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

/// Picks the node for each shard index with this gateway's suspicion
/// (`Cluster::is_suspect`: suspect, or not Up/Draining in the map); the rule
/// is [`choose_substitutes`]'s.
pub fn choose_targets(cluster: &Cluster, map: &PlacementMap, slots: &[NodeId]) -> Vec<NodeId> {
    let targets = choose_substitutes(map, slots, |n| cluster.is_suspect(n));
    if targets.iter().collect::<BTreeSet<_>>().len() < targets.len() {
        tracing::debug!(?slots, ?targets, "fewer than k+m usable nodes: shards doubled up");
    }
    targets
}

/// Picks the node for each shard index: the slot's node unless `is_suspect`
/// says it is; each suspect slot gets a substitute among the usable nodes
/// (Up in the map and not suspect), chosen in this order of priority:
///
/// 1. **Fewest shards on one node.** No node gets two shards of the object
///    while the usable nodes and the kept slot nodes leave room for one
///    each (k+m distinct usable nodes always do). Only when they do not,
///    shards double up, and then no node gets more than the smallest number
///    that fits them all (`cap`): ⌈(k+m)/usable⌉ when the kept slot nodes
///    are all usable (e.g. 2 with 4 usable nodes for 4+2).
/// 2. **Spread over the sites.** Each substitute goes to the site that holds
///    the fewest shards of the object so far among those with a node below
///    `cap` (water-filling, which minimises the largest count per site): no
///    site gets more than m shards whenever the usable nodes allow it.
/// 3. The slot's own site on a tie (the shard stays near home), then the
///    node with the fewest shards of the object, then the lowest id, so that
///    every gateway makes the same choice.
///
/// Slot nodes that are not suspect always keep their shard. With no usable
/// node at all, a suspect slot keeps its node (its upload fails and the PUT
/// is refused).
///
/// Point 1 comes before point 2: when distinct nodes cannot keep the site
/// rule (e.g. 3 sites × 3 nodes with two nodes of one site suspect: 7
/// usable nodes, but only one in that site), the shards still go to distinct
/// nodes, one site gets m+1 of them, and `durable` refuses the PUT while no
/// whole site is down.
pub fn choose_substitutes(map: &PlacementMap, slots: &[NodeId], is_suspect: impl Fn(NodeId) -> bool) -> Vec<NodeId> {
    let site_of = |n: NodeId| map.topology.node(n).map_or("", |x| x.site.as_str());
    let mut targets: Vec<Option<NodeId>> = slots.iter().map(|&n| (!is_suspect(n)).then_some(n)).collect();
    let mut open: Vec<usize> = (0..slots.len()).filter(|&i| targets[i].is_none()).collect();
    if open.is_empty() {
        return slots.to_vec();
    }
    let usable: Vec<&sillok_placement::Node> =
        map.topology.nodes.iter().filter(|n| n.state == NodeState::Up && !is_suspect(n.id)).collect();
    if usable.is_empty() {
        return slots.to_vec();
    }
    let mut node_load: BTreeMap<NodeId, usize> = BTreeMap::new();
    let mut site_load: BTreeMap<&str, usize> = BTreeMap::new();
    for &n in targets.iter().flatten() {
        *node_load.entry(n).or_default() += 1;
        *site_load.entry(site_of(n)).or_default() += 1;
    }
    // The smallest number of shards per node that leaves room for them all.
    let room = |cap: usize, load: &BTreeMap<NodeId, usize>| -> usize {
        usable.iter().map(|n| cap.saturating_sub(load.get(&n.id).copied().unwrap_or(0))).sum()
    };
    let mut cap = 1;
    while room(cap, &node_load) < open.len() {
        cap += 1;
    }
    while !open.is_empty() {
        let load = |n: NodeId| node_load.get(&n).copied().unwrap_or(0);
        let best = usable
            .iter()
            .filter(|n| load(n.id) < cap)
            .min_by_key(|n| {
                let home = open.iter().any(|&i| site_of(slots[i]) == n.site);
                (site_load.get(n.site.as_str()).copied().unwrap_or(0), !home, load(n.id), n.id)
            })
            .expect("the cap leaves room for every open slot");
        let at = open.iter().position(|&i| site_of(slots[i]) == best.site).unwrap_or(0);
        let i = open.remove(at);
        targets[i] = Some(best.id);
        *node_load.entry(best.id).or_default() += 1;
        *site_load.entry(best.site.as_str()).or_default() += 1;
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
    let hash = placement::placement_hash(&req.bucket, &req.key);
    let pg = map.pg_of_hash(hash);
    let targets = choose_targets(cluster, &map, map.slots(pg));
    let object_id = placement::new_object_id(hash);
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
    let stripe_deadline = stripe_deadline(settings);
    let t_start = std::time::Instant::now();
    let mut t_body = std::time::Duration::ZERO;
    let mut t_encode_send = std::time::Duration::ZERO;
    let result: Result<Digests, GatewayError> = async {
        let mut digests = Digests::new(req);
        // When the stripe being filled must be complete (or the body end).
        let mut stripe_due = tokio::time::Instant::now() + stripe_deadline;
        loop {
            let t0 = std::time::Instant::now();
            let left = stripe_due.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                tracing::info!(
                    got,
                    deadline_s = stripe_deadline.as_secs(),
                    "client too slow: a stripe did not arrive in time"
                );
                return Err(GatewayError::RequestTimeout);
            }
            let next = next_chunk(&mut body, settings.body_idle_timeout.min(left)).await?;
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
                    stripe_due = tokio::time::Instant::now() + stripe_deadline;
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
            // Aborted uploads store nothing; shards already committed wait
            // for the collector (no manifest ever refers to them).
            abort_all(&mut senders);
            drop(uploads);
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
        // Nodes do not refuse shard uploads for their epoch; one that did is
        // treated as a failed upload, and the durability rule decides.
        Gathered::Stale(_) => (Vec::new(), Vec::new()),
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
        // The stored shards are the collector's (no manifest refers to them).
        return Err(GatewayError::Unavailable(format!(
            "only {} of {} shards stored durably, not enough to survive a site loss: {}",
            written.len(),
            k + m,
            failures.join("; ")
        )));
    }
    if !failures.is_empty() {
        tracing::warn!(object_id, failures = %failures.join("; "), "PUT acknowledged with missing shards (the rebuild rounds of their slot nodes write them)");
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

#[cfg(test)]
mod tests {
    use super::*;
    use sillok_placement::{EcProfile, Node, Site, Topology};

    #[test]
    fn a_node_outwaits_the_stripe_deadline_and_a_20_kb_per_s_client_fits_in_it() {
        let node_idle = sillok_storage_node::server::UPLOAD_IDLE;
        for stall_ms in [0, 500, 5_000, 50_000, 170_000, 10_000_000] {
            let settings =
                WriteSettings { stall_deadline: std::time::Duration::from_millis(stall_ms), ..Default::default() };
            let d = stripe_deadline(&settings);
            if stall_ms <= 50_000 {
                assert!(d + settings.stall_deadline + ENCODE_MARGIN <= node_idle, "stall {stall_ms} ms");
            }
            assert!(d >= ENCODE_MARGIN);
        }
        let defaults = WriteSettings::default();
        let stripe = 4 * u64::from(defaults.block_size);
        // 1 MiB at 20 KB/s: 52 s, within the deadline with room.
        assert!(std::time::Duration::from_secs(stripe / 20_000 + 1) < stripe_deadline(&defaults));
        assert!(defaults.body_idle_timeout <= stripe_deadline(&defaults));
    }

    /// 4+2 over sites `site-a`, `site-b`, ... with `per_site[i]` nodes each
    /// (ids from 1, site by site).
    fn map_of(per_site: &[usize]) -> Option<PlacementMap> {
        let sites: Vec<Site> =
            (0..per_site.len()).map(|i| Site { id: format!("site-{}", (b'a' + i as u8) as char) }).collect();
        let mut nodes = Vec::new();
        for (site, &n) in sites.iter().zip(per_site) {
            for _ in 0..n {
                let id = nodes.len() as u32 + 1;
                let addr = format!("127.0.0.1:{}", 7000 + id);
                nodes.push(Node { id: NodeId(id), site: site.id.clone(), addr, weight: 1.0, state: NodeState::Up });
            }
        }
        PlacementMap::new(Topology { sites, nodes }, EcProfile { k: 4, m: 2 }, 64).ok()
    }

    fn site_of(map: &PlacementMap, n: NodeId) -> String {
        map.topology.node(n).unwrap().site.clone()
    }

    fn per_node(targets: &[NodeId]) -> BTreeMap<NodeId, usize> {
        let mut c = BTreeMap::new();
        for &t in targets {
            *c.entry(t).or_default() += 1;
        }
        c
    }

    fn per_site(map: &PlacementMap, targets: &[NodeId]) -> BTreeMap<String, usize> {
        let mut c = BTreeMap::new();
        for &t in targets {
            *c.entry(site_of(map, t)).or_default() += 1;
        }
        c
    }

    fn nodes_of(map: &PlacementMap, site: &str) -> BTreeSet<NodeId> {
        map.topology.nodes_in(site).map(|n| n.id).collect()
    }

    /// Every PG's choice with `suspect`, after the checks that hold always:
    /// a slot node that is not suspect keeps its shard, and no target is
    /// suspect.
    fn every_pg(map: &PlacementMap, suspect: &BTreeSet<NodeId>) -> Vec<(Vec<NodeId>, Vec<NodeId>)> {
        (0..map.pg_count)
            .map(|pg| {
                let slots = map.slots(pg).to_vec();
                let targets = choose_substitutes(map, &slots, |n| suspect.contains(&n));
                assert_eq!(targets.len(), slots.len());
                for (s, t) in slots.iter().zip(&targets) {
                    assert!(suspect.contains(s) || s == t, "pg {pg}: {slots:?} → {targets:?}: slot {s} moved");
                    assert!(!suspect.contains(t), "pg {pg}: {slots:?} → {targets:?}: suspect {t} chosen");
                }
                (slots, targets)
            })
            .collect()
    }

    fn expect(sites: &[(&str, usize)]) -> BTreeMap<String, usize> {
        sites.iter().map(|(s, n)| (s.to_string(), *n)).collect()
    }

    #[test]
    fn one_suspect_node_with_3_nodes_per_site_gets_the_spare_of_its_own_site() {
        let map = map_of(&[3, 3, 3]).unwrap();
        let suspect = BTreeSet::from([NodeId(1)]);
        let mut substituted = 0;
        for (slots, targets) in every_pg(&map, &suspect) {
            assert!(per_node(&targets).values().all(|&n| n == 1), "{slots:?} → {targets:?}: two shards on a node");
            assert_eq!(per_site(&map, &targets), expect(&[("site-a", 2), ("site-b", 2), ("site-c", 2)]));
            if let Some(i) = slots.iter().position(|&s| s == NodeId(1)) {
                assert_eq!(site_of(&map, targets[i]), "site-a", "{slots:?} → {targets:?}: not in its own site");
                substituted += 1;
            }
        }
        assert!(substituted > 0, "n1 holds no slot");
    }

    #[test]
    fn a_suspect_site_with_3_nodes_per_site_leaves_6_distinct_nodes_3_per_surviving_site() {
        let map = map_of(&[3, 3, 3]).unwrap();
        let suspect = nodes_of(&map, "site-a");
        for (slots, targets) in every_pg(&map, &suspect) {
            assert!(per_node(&targets).values().all(|&n| n == 1), "{slots:?} → {targets:?}: two shards on a node");
            assert_eq!(per_site(&map, &targets), expect(&[("site-b", 3), ("site-c", 3)]), "{slots:?} → {targets:?}");
        }
    }

    #[test]
    fn a_suspect_site_with_2_nodes_per_site_doubles_evenly() {
        let map = map_of(&[2, 2, 2]).unwrap();
        let suspect = nodes_of(&map, "site-a");
        for (slots, targets) in every_pg(&map, &suspect) {
            // 6 shards on 4 usable nodes: at most ⌈6/4⌉ = 2 on one, so 2 nodes hold 2.
            let counts = per_node(&targets);
            assert_eq!(counts.len(), 4, "{slots:?} → {targets:?}: every usable node used");
            assert!(counts.values().all(|&n| n <= 2), "{slots:?} → {targets:?}");
            assert_eq!(per_site(&map, &targets), expect(&[("site-b", 3), ("site-c", 3)]), "{slots:?} → {targets:?}");
        }
    }

    #[test]
    fn one_suspect_node_with_2_nodes_per_site_doubles_on_its_site_mate() {
        let map = map_of(&[2, 2, 2]).unwrap();
        let suspect = BTreeSet::from([NodeId(1)]);
        for (slots, targets) in every_pg(&map, &suspect) {
            // 5 usable nodes for 6 shards: one doubles, on site-a so that
            // every site keeps 2 (the object survives any one site).
            assert_eq!(per_node(&targets).get(&NodeId(2)), Some(&2), "{slots:?} → {targets:?}");
            assert_eq!(per_site(&map, &targets), expect(&[("site-a", 2), ("site-b", 2), ("site-c", 2)]));
        }
    }

    /// Sites of 2, 2 and 3 nodes, one node suspect in each 2-node site: 5
    /// usable nodes. A distinct spare exists only in site-c; taking it gives
    /// site-c 3 shards (more than m: `durable` refuses the PUT), while
    /// doubling on the site-mates keeps 2 per site.
    #[test]
    fn an_uneven_site_gets_no_third_shard_while_doubling_is_needed_anyway() {
        let map = map_of(&[2, 2, 3]).unwrap();
        let suspect = BTreeSet::from([NodeId(1), NodeId(3)]);
        for (slots, targets) in every_pg(&map, &suspect) {
            assert!(per_node(&targets).values().all(|&n| n <= 2), "{slots:?} → {targets:?}");
            assert_eq!(
                per_site(&map, &targets),
                expect(&[("site-a", 2), ("site-b", 2), ("site-c", 2)]),
                "{slots:?} → {targets:?}"
            );
            let written: Vec<ShardLocation> =
                targets.iter().enumerate().map(|(i, &node)| ShardLocation { index: i as u8, node }).collect();
            assert!(durable(&map, 4, 6, &written, &[]), "{slots:?} → {targets:?}: not durable");
        }
    }

    /// Distinct nodes come before the site rule: with two of site-a's three
    /// nodes suspect, 7 nodes are usable, so no shard doubles up, but only
    /// one of them is in site-a and another site gets 3 shards. `durable`
    /// refuses such a PUT while site-a's third node answers (the site is not
    /// down): this pins the rule of issue 10 (see `docs/operations.md`).
    #[test]
    fn distinct_nodes_come_before_the_site_rule() {
        let map = map_of(&[3, 3, 3]).unwrap();
        let suspect = BTreeSet::from([NodeId(1), NodeId(3)]);
        for (slots, targets) in every_pg(&map, &suspect) {
            assert!(per_node(&targets).values().all(|&n| n == 1), "{slots:?} → {targets:?}");
            let sites = per_site(&map, &targets);
            assert_eq!(sites.get("site-a"), Some(&1), "{slots:?} → {targets:?}");
            assert_eq!(sites.values().max(), Some(&3), "{slots:?} → {targets:?}");
            let written: Vec<ShardLocation> =
                targets.iter().enumerate().map(|(i, &node)| ShardLocation { index: i as u8, node }).collect();
            assert!(!durable(&map, 4, 6, &written, &[]));
        }
    }

    #[test]
    fn with_no_usable_node_the_slots_are_kept() {
        let map = map_of(&[2, 2, 2]).unwrap();
        let slots = map.slots(0).to_vec();
        assert_eq!(choose_substitutes(&map, &slots, |_| true), slots);
        assert_eq!(choose_substitutes(&map, &slots, |_| false), slots);
    }

    /// The best choice by exhaustive search: the smallest largest number of
    /// shards on one node, then on one site.
    fn best_by_search(map: &PlacementMap, slots: &[NodeId], suspect: &BTreeSet<NodeId>) -> Option<(usize, usize)> {
        let usable: Vec<NodeId> = map
            .topology
            .nodes
            .iter()
            .filter(|n| n.state == NodeState::Up && !suspect.contains(&n.id))
            .map(|n| n.id)
            .collect();
        let open: Vec<usize> = (0..slots.len()).filter(|&i| suspect.contains(&slots[i])).collect();
        if usable.is_empty() || usable.len().checked_pow(open.len() as u32)? > 300_000 {
            return None;
        }
        let mut best = (usize::MAX, usize::MAX);
        let mut choice = vec![0usize; open.len()];
        loop {
            let mut targets = slots.to_vec();
            for (j, &i) in open.iter().enumerate() {
                targets[i] = usable[choice[j]];
            }
            let score = (
                per_node(&targets).into_values().max().unwrap_or(0),
                per_site(map, &targets).into_values().max().unwrap_or(0),
            );
            best = best.min(score);
            // Next combination.
            let mut j = 0;
            while j < choice.len() {
                choice[j] += 1;
                if choice[j] < usable.len() {
                    break;
                }
                choice[j] = 0;
                j += 1;
            }
            if j == choice.len() {
                return Some(best);
            }
        }
    }

    #[test]
    fn the_choice_is_as_good_as_an_exhaustive_search_on_random_topologies() {
        let mut x: u64 = 0x5EED_1234_ABCD_0001;
        let mut rand = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut checked = 0;
        for _ in 0..400 {
            let sites = 3 + rand(2) as usize;
            let per: Vec<usize> = (0..sites).map(|_| 1 + rand(4) as usize).collect();
            let Some(map) = map_of(&per) else { continue };
            let suspect: BTreeSet<NodeId> =
                map.topology.nodes.iter().filter(|_| rand(100) < 30).map(|n| n.id).collect();
            for pg in [0, 1 + rand(u64::from(map.pg_count) - 1) as u32] {
                let slots = map.slots(pg).to_vec();
                let Some(best) = best_by_search(&map, &slots, &suspect) else { continue };
                let targets = choose_substitutes(&map, &slots, |n| suspect.contains(&n));
                let got = (
                    per_node(&targets).into_values().max().unwrap_or(0),
                    per_site(&map, &targets).into_values().max().unwrap_or(0),
                );
                assert_eq!(got, best, "{per:?}, suspect {suspect:?}: {slots:?} → {targets:?}");
                for (s, t) in slots.iter().zip(&targets) {
                    assert!(suspect.contains(s) || s == t);
                    assert!(!suspect.contains(t));
                }
                checked += 1;
            }
        }
        assert!(checked > 200, "only {checked} cases checked");
    }
}
