//! The GET path: stream a byte range of an object out of its shards.
//!
//! Only the stripes that overlap the range are read. Each shard is one request
//! for all of those stripes, and the requests to the k data shards' nodes
//! (or to their replacements) are sent together, not one after the other.
//! For each stripe the k data blocks are fetched first (systematic code: when they are all healthy, their
//! bytes go out as they are, without decoding or copying). A shard that is
//! missing, unreachable, slower than `block_deadline`, or whose block fails its
//! blake3 check or has the wrong length is dropped for the rest of the read and
//! a parity shard is opened in its place; missing data blocks are then rebuilt
//! with the codec. Bad shards are logged as needing repair. Corrupt bytes are
//! never sent: every block is verified before use.
//!
//! Back-pressure: the stripes are produced by a task into a 2-deep channel that
//! the HTTP response drains, so a slow client holds at most a few stripes.
//! A client that takes nothing for `ReadSettings::send_timeout` (120 s by
//! default, `--send-timeout-s`) while the channel is full is given up on:
//! the task ends, its shard streams (node connections) and blocks are
//! dropped, and the response ends short of its length, so the connection
//! closes. A client reading at 20 KB/s takes a 256 KiB block in 13 s.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sillok_model::codec::Codec;
use sillok_model::manifest::{Body, Manifest, Sharded};
use sillok_placement::NodeId;
use sillok_storage_node::NodeError;
use sillok_storage_node::api::ShardId;
use sillok_storage_node::client::BlockStream;
use tokio::sync::mpsc;

use crate::cluster::Cluster;
use crate::error::GatewayError;

#[derive(Debug, Clone, Copy)]
pub struct ReadSettings {
    /// A shard block that takes longer than this is given up on for parity.
    pub block_deadline: Duration,
    /// A client that takes no bytes of a GET's body for this long, while the
    /// stripes read for it wait, is given up on (see the module comment).
    pub send_timeout: Duration,
}

/// The default of `ReadSettings::send_timeout`: as long as the write path
/// waits for one stripe from a slow client (`write::stripe_deadline`).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(120);

impl Default for ReadSettings {
    fn default() -> Self {
        ReadSettings { block_deadline: Duration::from_secs(2), send_timeout: DEFAULT_SEND_TIMEOUT }
    }
}

pub type ByteStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, GatewayError>> + Send + Sync>>;

/// The bytes `range` of the object (range must lie inside the object).
pub fn read_range(
    cluster: &Arc<Cluster>,
    settings: ReadSettings,
    manifest: &Manifest,
    range: Range<u64>,
) -> ByteStream {
    read_body(cluster, settings, &manifest.body, manifest.size, &manifest.key, range)
}

/// The bytes `range` of a body of `size` bytes. A multipart body is read part
/// after part; each part's reader starts only when the previous one is done.
fn read_body(
    cluster: &Arc<Cluster>,
    settings: ReadSettings,
    body: &Body,
    size: u64,
    key: &str,
    range: Range<u64>,
) -> ByteStream {
    if range.is_empty() {
        return Box::pin(futures::stream::empty());
    }
    match body {
        Body::Inline { data } => {
            if range.end > data.len() as u64 {
                let e = GatewayError::Internal(format!("{key}: the inline body is shorter than its size"));
                return Box::pin(futures::stream::iter([Err(e)]));
            }
            // A slice of the manifest's buffer as it came from the node: no copy.
            let bytes = data.slice(range.start as usize..range.end as usize);
            Box::pin(futures::stream::iter([Ok(bytes)]))
        }
        Body::Deleted | Body::DeleteMarker => Box::pin(futures::stream::empty()),
        Body::Sharded(s) => {
            let (tx, mut rx) = mpsc::channel(2);
            let job = StripeReader::new(cluster.clone(), settings, s.clone(), size, key);
            let send_timeout = settings.send_timeout;
            tokio::spawn(async move {
                let tx2 = tx.clone();
                if let Err(e) = job.run(range, tx).await {
                    // Bounded too: a client that takes nothing gets no error either.
                    let _ = tokio::time::timeout(send_timeout, tx2.send(Err(e))).await;
                }
            });
            Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
        }
        Body::Multipart { parts } => {
            let mut pieces = Vec::new();
            let mut offset = 0u64;
            for p in parts {
                let (start, end) = (offset, offset + p.size);
                offset = end;
                let (lo, hi) = (range.start.max(start), range.end.min(end));
                if lo < hi {
                    pieces.push((p.body.clone(), p.size, lo - start..hi - start));
                }
            }
            let (cluster, key) = (cluster.clone(), key.to_string());
            Box::pin(futures::stream::iter(pieces).flat_map(move |(body, size, r)| {
                if matches!(body, Body::Multipart { .. } | Body::Deleted | Body::DeleteMarker) {
                    let e = GatewayError::Internal(format!("{key}: a part must be inline or sharded"));
                    return Box::pin(futures::stream::iter([Err(e)])) as ByteStream;
                }
                read_body(&cluster, settings, &body, size, &key, r)
            }))
        }
    }
}

struct ShardReader {
    index: usize,
    node: NodeId,
    stream: BlockStream,
}

struct StripeReader {
    cluster: Arc<Cluster>,
    settings: ReadSettings,
    s: Sharded,
    size: u64,
    key: String,
    codec: Option<Codec>,
    /// Where each shard index is, if it was stored.
    locations: Vec<Option<NodeId>>,
    /// Shards given up on during this read.
    failed: Vec<bool>,
}

impl StripeReader {
    fn new(cluster: Arc<Cluster>, settings: ReadSettings, s: Sharded, size: u64, key: &str) -> Self {
        let width = s.k as usize + s.m as usize;
        let mut locations = vec![None; width];
        for loc in &s.shards {
            if (loc.index as usize) < width {
                locations[loc.index as usize] = Some(loc.node);
            }
        }
        StripeReader {
            cluster,
            settings,
            s,
            size,
            key: key.to_string(),
            codec: None,
            locations,
            failed: vec![false; width],
        }
    }

    fn give_up(&mut self, index: usize, why: &str) {
        if !self.failed[index] {
            self.failed[index] = true;
            tracing::warn!(object_id = %self.s.object_id, key = %self.key, shard = index, node = ?self.locations[index], why, "shard unusable; reading parity (needs repair)");
        }
    }

    /// Heal-on-read: a shard that a node answering for it has lost, or
    /// serves with a block that fails its check, is reported to that node,
    /// which checks it whole and has its rebuild engine rewrite it. Nothing
    /// waits for the report.
    fn report_bad(&self, index: usize) {
        let Some(node) = self.locations[index] else { return };
        let Some(addr) = self.cluster.addr(node) else { return };
        let client = self.cluster.client(&self.cluster.map());
        let id = ShardId { object_id: self.s.object_id.clone(), index: index as u8 };
        tokio::spawn(async move {
            match client.report_suspect(&addr, &id).await {
                Ok(sound) => {
                    tracing::info!(shard = %id.file_name(), %node, sound, "reported an unusable shard to its node")
                }
                Err(e) => {
                    tracing::debug!(shard = %id.file_name(), %node, error = %e, "could not report an unusable shard")
                }
            }
        });
    }

    /// Opens shards `indices` for `blocks`, all at once: the requests to
    /// their nodes are in flight together, so a stripe waits for the slowest
    /// node rather than for the sum of them. Returns the readers of the
    /// shards that opened, in the order of `indices`; the others are given up.
    async fn open(&mut self, indices: &[usize], blocks: Range<u32>) -> Vec<ShardReader> {
        let map = self.cluster.map();
        let client = self.cluster.client(&map);
        let mut calls = Vec::with_capacity(indices.len());
        for &index in indices {
            let Some(node) = self.locations[index] else { continue };
            if self.failed[index] {
                continue;
            }
            let Some(addr) = map.topology.node(node).map(|n| n.addr.clone()) else { continue };
            let id = ShardId { object_id: self.s.object_id.clone(), index: index as u8 };
            let (client, blocks, deadline) = (client.clone(), blocks.clone(), self.settings.block_deadline);
            calls.push(async move {
                (index, node, tokio::time::timeout(deadline, client.get_shard(&addr, &id, blocks)).await)
            });
        }
        let mut readers = Vec::with_capacity(calls.len());
        for (index, node, r) in futures::future::join_all(calls).await {
            match r {
                Ok(Ok(stream)) => readers.push(ShardReader { index, node, stream }),
                Ok(Err(e)) => {
                    self.cluster.note_error(node, &e);
                    if matches!(e, NodeError::NotFound | NodeError::Corrupt(_)) && !self.failed[index] {
                        self.report_bad(index);
                    }
                    self.give_up(index, &format!("open failed: {e}"));
                }
                Err(_) => {
                    self.cluster.read_deadlines.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.give_up(index, "open timed out");
                }
            }
        }
        readers
    }

    async fn run(
        mut self,
        range: Range<u64>,
        tx: mpsc::Sender<Result<Bytes, GatewayError>>,
    ) -> Result<(), GatewayError> {
        let k = self.s.k as usize;
        let width = k + self.s.m as usize;
        let stripe_size = self.s.stripe_size();
        let first = range.start / stripe_size;
        let last = (range.end - 1) / stripe_size;
        let block_range = first as u32..last as u32 + 1;

        // Data shards first; a suspect node's shard is not tried now, only as
        // a last resort below (a node marked down in the map may well be
        // running and hold its shards).
        let suspect = |me: &Self, i: usize| me.locations[i].is_some_and(|n| me.cluster.is_suspect(n));
        for i in 0..k {
            if self.locations[i].is_none() {
                self.give_up(i, "not stored");
            }
        }
        let data: Vec<usize> = (0..k).filter(|i| !suspect(&self, *i)).collect();
        let mut readers: Vec<ShardReader> = self.open(&data, block_range.clone()).await;

        for stripe in first..=last {
            let stripe_start = stripe * stripe_size;
            let stripe_len = (self.size - stripe_start).min(stripe_size) as usize;
            let bl = stripe_len.div_ceil(k).max(1);
            let mut blocks: Vec<Option<Bytes>> = vec![None; width];
            loop {
                // Next block from every reader, in parallel, each under the deadline.
                let deadline = self.settings.block_deadline;
                let pending = readers.iter_mut().filter(|r| blocks[r.index].is_none());
                let results = futures::future::join_all(pending.map(|r| async move {
                    let got = tokio::time::timeout(deadline, r.stream.next()).await;
                    (r.index, r.node, got)
                }))
                .await;
                let mut dead = Vec::new();
                for (index, node, got) in results {
                    match got {
                        Ok(Some(Ok(frame))) if frame.data.len() == bl => blocks[index] = Some(frame.data),
                        Ok(Some(Ok(frame))) => {
                            self.report_bad(index);
                            dead.push((index, format!("block of {} bytes, expected {bl}", frame.data.len())))
                        }
                        Ok(Some(Err(e))) => {
                            self.cluster.note_error(node, &e);
                            if matches!(e, NodeError::Corrupt(_)) {
                                self.report_bad(index);
                            }
                            dead.push((index, e.to_string()))
                        }
                        Ok(None) => dead.push((index, "shard ended early".into())),
                        Err(_) => {
                            self.cluster.read_deadlines.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            dead.push((index, "block deadline passed".into()))
                        }
                    }
                }
                for (index, why) in dead {
                    self.give_up(index, &why);
                    readers.retain(|r| r.index != index);
                }
                let have = blocks.iter().filter(|b| b.is_some()).count();
                if have >= k {
                    break;
                }
                // Open replacements: parity first, then any shard not yet tried.
                let in_use: Vec<usize> = readers.iter().map(|r| r.index).collect();
                let mut opened = false;
                let mut candidates: Vec<usize> =
                    (k..width).chain(0..k).filter(|i| !in_use.contains(i) && blocks[*i].is_none()).collect();
                // Shards on suspect nodes last (the sort is stable).
                candidates.sort_by_key(|i| suspect(&self, *i));
                // As many at once as are still needed, more if some fail to
                // open (every reader in the list has delivered this stripe's
                // block, so `readers.len()` is `have` plus the ones opened now).
                let mut candidates = candidates.as_slice();
                while readers.len() < k && !candidates.is_empty() {
                    let (now, later) = candidates.split_at((k - readers.len()).min(candidates.len()));
                    candidates = later;
                    let new = self.open(now, stripe as u32..last as u32 + 1).await;
                    opened |= !new.is_empty();
                    readers.extend(new);
                }
                // Every reader still in the list has delivered this stripe's block;
                // if no new one could be opened, the stripe cannot be completed.
                if !opened {
                    return Err(GatewayError::DataLoss(format!(
                        "stripe {stripe} of {}/{}: only {have} of the {k} shards needed are readable",
                        self.s.object_id, self.key
                    )));
                }
                // Readers that already delivered this stripe's block are not
                // polled again for it; new ones start at `stripe`.
            }
            let data: Vec<Bytes> = if blocks[..k].iter().all(Option::is_some) {
                blocks[..k].iter().map(|b| b.clone().expect("present")).collect()
            } else {
                self.reconstruct(blocks).await?
            };
            // Send the part of this stripe that the range covers.
            let lo = range.start.max(stripe_start) - stripe_start;
            let hi = range.end.min(stripe_start + stripe_len as u64) - stripe_start;
            for (i, block) in data.into_iter().enumerate() {
                let b_lo = (i * bl) as u64;
                let b_hi = b_lo + bl as u64;
                let (s, e) = (lo.max(b_lo), hi.min(b_hi));
                if s < e {
                    let piece = block.slice((s - b_lo) as usize..(e - b_lo) as usize);
                    match tokio::time::timeout(self.settings.send_timeout, tx.send(Ok(piece))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return Ok(()), // the client went away
                        Err(_) => {
                            self.cluster.client_send_timeouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tracing::info!(
                                key = %self.key,
                                stripe,
                                timeout_s = self.settings.send_timeout.as_secs(),
                                "the client took no bytes of this GET within the send timeout; the read is ended"
                            );
                            return Ok(());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn reconstruct(&mut self, blocks: Vec<Option<Bytes>>) -> Result<Vec<Bytes>, GatewayError> {
        let k = self.s.k as usize;
        let m = self.s.m as usize;
        let codec = match &self.codec {
            Some(c) => c.clone(),
            None => {
                // The first stripe of this read decoded from parity.
                self.cluster.degraded_reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let c = Codec::new(k, m).map_err(|e| GatewayError::Internal(e.to_string()))?;
                self.codec = Some(c.clone());
                c
            }
        };
        tokio::task::spawn_blocking(move || {
            let mut opt: Vec<Option<Vec<u8>>> = blocks.into_iter().map(|b| b.map(|b| b.to_vec())).collect();
            codec.reconstruct_data(&mut opt).map_err(|e| GatewayError::DataLoss(e.to_string()))?;
            Ok(opt.into_iter().take(k).map(|b| Bytes::from(b.expect("reconstructed"))).collect())
        })
        .await
        .map_err(|e| GatewayError::Internal(e.to_string()))?
    }
}
