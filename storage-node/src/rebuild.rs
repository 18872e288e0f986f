//! The rebuild engine: every shard that a PG's current row puts on this node
//! is on this node's disk, verified, and every manifest replica says so.
//!
//! Owns: writing the shards this node should hold but does not, and the
//! relocations that point manifests at them. Nothing here deletes: the copy
//! a shard leaves behind (on a substitute, or on a slot's earlier node)
//! becomes garbage for the collector once no manifest places it there.
//!
//! Pull-based: a node works only on the slots the current map gives it
//! (shard i of the objects of PG p is rebuilt by `slots(p)[i]` and by no
//! other node), so a lost site's data is rebuilt by every surviving node at
//! once and two nodes never write the same shard. A round:
//! 1. For each PG with a slot here, lists the PG's live manifests that have
//!    shards on every current manifest replica (`POST /v1/pg/objects`); a PG
//!    where fewer than a majority answer waits for the next round.
//! 2. For the newest version of each object, this node's shard is *wanted*
//!    when a replica holding that version places it elsewhere (or nowhere),
//!    or when the file is not on this disk with a sound header. Wanted
//!    shards are taken in order of how many shards of their object are
//!    still on in-service nodes, fewest first (an object at exactly k before
//!    one at k+1).
//! 3. A wanted shard is copied from the node that holds it when that node is
//!    up, else decoded stripe by stripe from k other shards (each block is
//!    checked against its blake3 as it arrives). It is written, fsynced, and
//!    read back in full with every block verified before anything points at
//!    it.
//! 4. Each replica that places it elsewhere is asked to relocate it, as a
//!    per-shard compare-and-swap (`ShardMove::from`), so a mover working from
//!    a stale view changes nothing.
//!
//! A PG found with nothing wanted is remembered with its replicas' digests
//! (`POST /v1/pg/digests`, one request per peer per round) and its slot
//! row; it is listed again only when one of them changes (a write, a
//! delete, a relocation, a map change that moves the PG) or the node
//! restarts, so an idle round
//! costs a few requests, not a listing of every PG.
//!
//! Resumable by construction: progress is the manifests' own state, so a
//! restarted node (or a new catalog leader) continues from what is recorded;
//! a shard written but not yet recorded is found on disk in step 2 and only
//! recorded.
//!
//! Throttled: a rate in MiB/s of rebuilt bytes and a number of shards in
//! flight per node, both changeable while the node runs
//! (`POST /v1/repair/throttle`, or for every node `sillok admin repair
//! throttle` through the catalog). Client requests go first
//! (`background`): before each block the engine waits while this node
//! serves a client request (at most 10 ms), it decodes, writes and reads
//! back on threads of low CPU priority, and its reads of other nodes are
//! marked as background work so they do not count as client load there.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};
use sillok_model::codec::Codec;
use sillok_model::frame::Frame;
use sillok_model::manifest::{Sharded, Version};
use sillok_model::placement::object_id_hash;
use sillok_placement::{NodeId, NodeState, PgId, PlacementMap};
use tokio::sync::mpsc;

use crate::api::{ListPg, PgDigests, PgObject, PgSelector, Relocate, ShardId, ShardMove};
use crate::collector::Upkeeper;
use crate::error::NodeError;
use crate::shard_store::{MAX_BLOCKS, ShardMeta};

/// PGs a round lists at once (each asks its replicas at once): after a map
/// change a node lists every PG it has a slot in; 8 at a time took about
/// 30 s for 768 PGs on the 2-core test machine.
const LIST_AT_ONCE: usize = 32;

/// The engine's pace, shared by its rounds and the node's API.
#[derive(Debug)]
pub struct Throttle {
    /// MiB/s of rebuilt shard bytes (0: unlimited).
    mib_per_s: AtomicU32,
    /// Shards rebuilt at once (at least 1).
    concurrency: AtomicU32,
    /// When the next byte may go (a pacing clock, not a bucket of credit).
    next: std::sync::Mutex<Instant>,
}

/// `POST /v1/repair/throttle`: fields left out keep their value; the answer
/// is the throttle after the change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThrottleSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mib_per_s: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
}

impl Throttle {
    pub fn new(mib_per_s: u32, concurrency: u32) -> Self {
        Throttle {
            mib_per_s: AtomicU32::new(mib_per_s),
            concurrency: AtomicU32::new(concurrency.max(1)),
            next: std::sync::Mutex::new(Instant::now()),
        }
    }

    pub fn set(&self, s: ThrottleSettings) -> ThrottleSettings {
        if let Some(r) = s.mib_per_s {
            self.mib_per_s.store(r, Relaxed);
        }
        if let Some(c) = s.concurrency {
            self.concurrency.store(c.max(1), Relaxed);
        }
        self.get()
    }

    pub fn get(&self) -> ThrottleSettings {
        ThrottleSettings {
            mib_per_s: Some(self.mib_per_s.load(Relaxed)),
            concurrency: Some(self.concurrency.load(Relaxed)),
        }
    }

    fn concurrency(&self) -> usize {
        self.concurrency.load(Relaxed).max(1) as usize
    }

    /// Waits until `bytes` more may be written at the current rate.
    pub(crate) async fn take(&self, bytes: usize) {
        let rate = self.mib_per_s.load(Relaxed);
        if rate == 0 {
            return;
        }
        let cost = Duration::from_secs_f64(bytes as f64 / (f64::from(rate) * 1_048_576.0));
        let wait = {
            let mut next = self.next.lock().expect("throttle lock");
            let now = Instant::now();
            let start = (*next).max(now);
            *next = start + cost;
            start - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// What a PG found clean was seen under: `(pg_count, slot row, digests)`.
type CleanKey = (u32, Vec<NodeId>, Vec<Option<String>>);

/// The engine's memory between rounds and its counters (for logs, reports
/// and the closing notes' figures).
#[derive(Debug, Default)]
pub struct RebuildState {
    /// PGs found with nothing wanted: the PG count, the PG's slot row and its
    /// replicas' digests then. What this node wants in a PG depends on no
    /// more (not on the epoch: a map change that leaves the row alone, such
    /// as dropping earlier rows, costs no listing). Lost on restart (every
    /// PG is listed again).
    clean: std::sync::Mutex<BTreeMap<PgId, CleanKey>>,
    /// Shards found missing or corrupt by the scrub or a reader: not counted
    /// as held here until rewritten.
    suspects: std::sync::Mutex<BTreeSet<ShardId>>,
    /// The current round's wanted shards not yet done, and their bytes.
    left: AtomicU64,
    bytes_left: AtomicU64,
    /// PGs with wanted shards in the current round: the fewest in-service
    /// shards of an object wanted there, and how many are not yet done (a
    /// PG leaves when the last is).
    pgs: std::sync::Mutex<BTreeMap<PgId, (u8, u64)>>,
    /// Bytes the scrub has read and checked.
    pub scrubbed_bytes: AtomicU64,
    /// The epoch of the map of the last round whose listing finished.
    checked_epoch: AtomicU64,
    pub rounds: AtomicU64,
    /// Shards decoded from k others, written and verified.
    pub shards_decoded: AtomicU64,
    /// Shards copied from their holder, written and verified.
    pub shards_copied: AtomicU64,
    /// Shards already on disk that were only recorded in their manifests.
    pub shards_recorded: AtomicU64,
    pub bytes_written: AtomicU64,
    pub failures: AtomicU64,
    /// Shards wanted at the start of the last round.
    pub wanted: AtomicU64,
    /// Of those, the ones whose object had at most k shards in service.
    pub wanted_critical: AtomicU64,
    /// PGs skipped in the last round because a majority of replicas did not answer.
    pub pgs_waiting: AtomicU64,
    /// The map epoch of this node's last anti-entropy round, and the PGs in
    /// which that round either missed a peer in service or pulled something
    /// (so their manifests may not all be here yet).
    synced: std::sync::Mutex<(u64, Vec<PgId>)>,
    /// Planned moves wait (`sillok admin rebalance pause`): a wanted shard
    /// whose holder is in service is left where it is; lost ones are rebuilt.
    paused: std::sync::atomic::AtomicBool,
    /// The cluster's repair state from the catalog's last answer to this
    /// node's report (for the metrics page).
    pub cluster: std::sync::Mutex<Option<sillok_catalog::repair::RepairStatus>>,
}

impl RebuildState {
    /// Marks a shard on this disk as not to be trusted: the next round
    /// rewrites it if this node's slot wants it.
    pub fn suspect(&self, id: ShardId) {
        self.suspects.lock().expect("suspects lock").insert(id);
    }

    /// Pauses or resumes planned moves; returns whether that changed.
    pub fn set_paused(&self, paused: bool) -> bool {
        self.paused.swap(paused, Relaxed) != paused
    }

    /// Records an anti-entropy round's outcome (see `synced`).
    pub fn note_sync(&self, epoch: u64, behind: Vec<PgId>) {
        *self.synced.lock().expect("synced lock") = (epoch, behind);
    }

    /// The engine and scrub as the node reports them to the catalog.
    pub fn report(&self, bytes_per_s: u64) -> sillok_catalog::api::RepairReport {
        let (synced_epoch, sync_behind) = self.synced.lock().expect("synced lock").clone();
        sillok_catalog::api::RepairReport {
            shards_left: self.left.load(Relaxed),
            bytes_left: self.bytes_left.load(Relaxed),
            pgs: self.pgs.lock().expect("pgs lock").iter().map(|(pg, (live, _))| (*pg, *live)).collect(),
            pgs_waiting: self.pgs_waiting.load(Relaxed),
            shards_written: self.shards_decoded.load(Relaxed) + self.shards_copied.load(Relaxed),
            bytes_written: self.bytes_written.load(Relaxed),
            bytes_per_s,
            suspects: self.suspects.lock().expect("suspects lock").len() as u64,
            scrubbed_bytes: self.scrubbed_bytes.load(Relaxed),
            checked_epoch: self.checked_epoch.load(Relaxed),
            synced_epoch,
            sync_behind,
        }
    }
}

impl Wanted {
    /// A planned move: the shard is not here and its holder is in service
    /// (a repair has no holder to copy from).
    fn is_move(&self, map: &PlacementMap, me: NodeId) -> bool {
        let holder = self.set.shards.iter().find(|l| l.index == self.index).map(|l| l.node);
        !self.have && holder.is_some_and(|h| h != me && in_service(map, h))
    }

    /// The bytes of the shard (each block holds 1/k of its stripe).
    fn shard_bytes(&self) -> u64 {
        self.size.div_ceil(u64::from(self.set.k.max(1)))
    }
}

/// One shard this node should hold and does not (or that is not recorded).
#[derive(Debug, Clone)]
struct Wanted {
    pg: PgId,
    bucket: String,
    key: String,
    version: Version,
    size: u64,
    set: Sharded,
    index: u8,
    /// Replicas holding this version that place the shard elsewhere, and where.
    fix: Vec<Relocation>,
    /// The file is here already (written by an earlier round, not recorded).
    have: bool,
    /// Shards of the object on in-service nodes (this one counted if `have`).
    live: usize,
    /// Other manifests that place the same shard (an S3 version's record and
    /// its key's current manifest share their shards): `(bucket, key,
    /// version, fix)`, relocated with this one once the shard is here, so a
    /// shard two manifests name is written once.
    also: Vec<(String, String, Version, Vec<Relocation>)>,
}

/// A manifest's shard location to rewrite: from this node to that one (none: dropped).
type Relocation = (NodeId, Option<NodeId>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    Decoded(u64),
    Copied(u64),
    Recorded,
}

enum WriteMsg {
    /// A block to write as it is (a copy).
    Frame(Frame),
    /// Block `b` of k sources (the others `None`), to decode.
    Stripe(u32, Vec<Option<Vec<u8>>>),
    End,
}

/// A shard writer's outcome.
type Writer = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), NodeError>> + Send>>;

fn in_service(map: &PlacementMap, node: NodeId) -> bool {
    map.topology.node(node).is_some_and(|n| matches!(n.state, NodeState::Up | NodeState::Draining))
}

impl Upkeeper {
    /// One pass over this node's slots; returns how many shards were written
    /// or recorded.
    pub async fn rebuild_round(&self) -> Result<u64, NodeError> {
        let Some(map) = self.map.borrow().clone() else { return Ok(0) };
        // A node marked down (or out) takes on no work: writers and readers
        // avoid it, and shards written around it stay where they are until
        // it is up again.
        if !in_service(&map, self.id) {
            tracing::debug!(node = %self.id, "rebuild round skipped: this node is not in service in the map");
            return Ok(0);
        }
        let t0 = Instant::now();
        let mine: Vec<(PgId, u8)> = (0..map.pg_count)
            .filter_map(|pg| map.slots(pg).iter().position(|n| *n == self.id).map(|i| (pg, i as u8)))
            .collect();
        let digests = self.replica_digests(&map, mine.iter().map(|(pg, _)| *pg)).await;
        let suspect_pgs: BTreeSet<PgId> = {
            let suspects = self.rebuild.suspects.lock().expect("suspects lock");
            suspects.iter().filter_map(|id| object_id_hash(&id.object_id)).map(|h| map.pg_of_hash(h)).collect()
        };
        let mut wanted = Vec::new();
        let mut waiting = 0;
        // PGs to list: those not remembered clean under the same digests.
        let to_list: Vec<(PgId, u8, CleanKey)> = mine
            .into_iter()
            .filter_map(|(pg, index)| {
                let seen = (map.pg_count, map.slots(pg).to_vec(), digests.get(&pg).cloned().unwrap_or_default());
                let clean = self.rebuild.clean.lock().expect("clean lock").get(&pg) == Some(&seen);
                let skip = clean && seen.2.iter().all(Option::is_some) && !suspect_pgs.contains(&pg);
                (!skip).then_some((pg, index, seen))
            })
            .collect();
        // A few PGs are listed at once: after a map change every PG is, and
        // one at a time that took longer than the rebuild itself.
        let map_ref: &PlacementMap = &map;
        let mut listings = futures::stream::iter(to_list)
            .map(|(pg, index, seen)| async move { (pg, seen, self.wanted_in_pg(map_ref, pg, index).await) })
            .buffer_unordered(LIST_AT_ONCE);
        while let Some((pg, seen, listed)) = listings.next().await {
            match listed? {
                Some(w) if w.is_empty() => {
                    self.rebuild.clean.lock().expect("clean lock").insert(pg, seen);
                }
                Some(w) => {
                    self.rebuild.clean.lock().expect("clean lock").remove(&pg);
                    wanted.extend(w);
                }
                None => waiting += 1,
            }
        }
        drop(listings);
        let k = usize::from(map.profile.k);
        self.rebuild.wanted.store(wanted.len() as u64, Relaxed);
        self.rebuild.wanted_critical.store(wanted.iter().filter(|w| w.live <= k).count() as u64, Relaxed);
        self.rebuild.pgs_waiting.store(waiting, Relaxed);
        let mut pgs: BTreeMap<PgId, (u8, u64)> = BTreeMap::new();
        for w in &wanted {
            let live = u8::try_from(w.live).unwrap_or(u8::MAX);
            let e = pgs.entry(w.pg).or_insert((live, 0));
            e.0 = e.0.min(live);
            e.1 += 1;
        }
        *self.rebuild.pgs.lock().expect("pgs lock") = pgs;
        self.rebuild.left.store(wanted.len() as u64, Relaxed);
        self.rebuild.bytes_left.store(wanted.iter().map(Wanted::shard_bytes).sum(), Relaxed);
        if waiting == 0 {
            self.rebuild.checked_epoch.store(map.epoch, Relaxed);
        }
        // Fewest shards left first; `sort_by_key` is stable, so PG order breaks ties.
        wanted.sort_by_key(|w| w.live);
        let total = wanted.len();
        let (mut done, mut failed, mut bytes, mut paused) = (0u64, 0u64, 0u64, 0u64);
        let mut queue = wanted.into_iter();
        let mut running = FuturesUnordered::new();
        let map: &PlacementMap = &map;
        loop {
            while running.len() < self.throttle.concurrency() {
                // Marked down or out since the round began: stop taking work.
                let still = self.map.borrow().as_ref().is_none_or(|m| in_service(m, self.id));
                if !still {
                    queue.by_ref().for_each(drop);
                    break;
                }
                let Some(w) = queue.next() else { break };
                if self.rebuild.paused.load(Relaxed) && w.is_move(map, self.id) {
                    paused += 1;
                    continue;
                }
                let (shard_bytes, pg) = (w.shard_bytes(), w.pg);
                running.push(async move { (shard_bytes, pg, self.rebuild_one(map, w).await) });
            }
            let Some((shard_bytes, pg, result)) = running.next().await else { break };
            if result.is_ok() {
                self.rebuild.left.fetch_sub(1, Relaxed);
                self.rebuild.bytes_left.fetch_sub(shard_bytes, Relaxed);
                let mut pgs = self.rebuild.pgs.lock().expect("pgs lock");
                if let Some(e) = pgs.get_mut(&pg) {
                    e.1 -= 1;
                    if e.1 == 0 {
                        pgs.remove(&pg);
                    }
                }
            }
            match result {
                Ok(d) => {
                    done += 1;
                    let (counter, n) = match d {
                        Done::Decoded(n) => (&self.rebuild.shards_decoded, n),
                        Done::Copied(n) => (&self.rebuild.shards_copied, n),
                        Done::Recorded => (&self.rebuild.shards_recorded, 0),
                    };
                    counter.fetch_add(1, Relaxed);
                    self.rebuild.bytes_written.fetch_add(n, Relaxed);
                    bytes += n;
                }
                Err(e) => {
                    failed += 1;
                    self.rebuild.failures.fetch_add(1, Relaxed);
                    tracing::debug!(error = %e, "rebuild of a shard failed; the next round retries it");
                }
            }
        }
        self.rebuild.rounds.fetch_add(1, Relaxed);
        if total > 0 || waiting > 0 {
            tracing::info!(
                wanted = total,
                done,
                failed,
                bytes,
                pgs_waiting = waiting,
                paused,
                ms = t0.elapsed().as_millis() as u64,
                "rebuild round"
            );
        }
        Ok(done)
    }

    /// Each PG's current manifest replicas' digests, in replica order
    /// (`None` where a replica did not answer): one request per peer.
    async fn replica_digests(
        &self,
        map: &PlacementMap,
        pgs: impl Iterator<Item = PgId>,
    ) -> BTreeMap<PgId, Vec<Option<String>>> {
        let mut out: BTreeMap<PgId, Vec<Option<String>>> = BTreeMap::new();
        let mut asks: BTreeMap<NodeId, Vec<PgId>> = BTreeMap::new();
        for pg in pgs {
            let replicas = map.manifest_replicas(pg);
            out.insert(pg, vec![None; replicas.len()]);
            for node in replicas {
                asks.entry(node).or_default().push(pg);
            }
        }
        for (node, pgs) in asks {
            let got: Vec<Option<String>> = if node == self.id {
                let sels = pgs.iter().map(|&pg| PgSelector::of(map, pg)).collect();
                match self.meta.pg_digests(sels).await {
                    Ok(d) => d.into_iter().map(|(n, d)| Some(format!("{n}:{}", hex::encode(d)))).collect(),
                    Err(_) => vec![None; pgs.len()],
                }
            } else {
                let Some(addr) = map.topology.node(node).map(|n| n.addr.clone()) else { continue };
                let req = PgDigests { pg_count: map.pg_count, function: map.pg_function, pgs: pgs.clone() };
                match self.client.pg_digests(&addr, &req).await {
                    Ok(d) => d.into_iter().map(|d| Some(format!("{}:{}", d.count, d.digest))).collect(),
                    Err(_) => vec![None; pgs.len()],
                }
            };
            for (pg, digest) in pgs.into_iter().zip(got) {
                let at = map.manifest_replicas(pg).iter().position(|n| *n == node);
                if let (Some(slots), Some(at)) = (out.get_mut(&pg), at) {
                    slots[at] = digest;
                }
            }
        }
        out
    }

    /// The shards of PG `pg` (this node's slot `index`) that are wanted here,
    /// or `None` when fewer than a majority of its replicas answered.
    async fn wanted_in_pg(&self, map: &PlacementMap, pg: PgId, index: u8) -> Result<Option<Vec<Wanted>>, NodeError> {
        let replicas = map.manifest_replicas(pg);
        let sel = PgSelector::of(map, pg);
        let answers = futures::future::join_all(replicas.iter().map(|&n| async move {
            let r = self.pg_objects_on(map, n, sel).await;
            if let Err(e) = &r {
                tracing::debug!(node = %n, pg, error = %e, "rebuild: replica did not list its PG");
            }
            (n, r)
        }))
        .await;
        let answered: Vec<(NodeId, Vec<PgObject>)> =
            answers.into_iter().filter_map(|(n, r)| r.ok().map(|o| (n, o))).collect();
        if answered.len() < replicas.len() / 2 + 1 {
            return Ok(None);
        }
        // The newest copy of each object among the answers.
        let mut newest: BTreeMap<(&str, &str), &PgObject> = BTreeMap::new();
        for o in answered.iter().flat_map(|(_, objs)| objs) {
            let e = newest.entry((o.bucket.as_str(), o.key.as_str())).or_insert(o);
            if (o.version, o.locations) > (e.version, e.locations) {
                *e = o;
            }
        }
        let (k, m) = (map.profile.k, map.profile.m);
        let mut candidates = Vec::new();
        for o in newest.values() {
            for set in o.sets.iter().filter(|s| s.sharded.k == k && s.sharded.m == m) {
                let oid = &set.sharded.object_id;
                let mut fix = Vec::new();
                for (node, objs) in &answered {
                    let copy = objs.iter().find(|c| c.bucket == o.bucket && c.key == o.key && c.version == o.version);
                    let Some(copy) = copy else { continue };
                    let at = copy
                        .sets
                        .iter()
                        .find(|s| s.sharded.object_id == *oid)
                        .and_then(|s| s.sharded.shards.iter().find(|l| l.index == index))
                        .map(|l| l.node);
                    if at != Some(self.id) {
                        fix.push((*node, at));
                    }
                }
                candidates.push(Wanted {
                    pg,
                    bucket: o.bucket.clone(),
                    key: o.key.clone(),
                    version: o.version,
                    size: set.size,
                    set: set.sharded.clone(),
                    index,
                    fix,
                    have: false,
                    live: 0,
                    also: Vec::new(),
                });
            }
        }
        // Which of them are on this disk with a sound header (one blocking task).
        let store = self.shards.clone();
        let ids: Vec<ShardId> =
            candidates.iter().map(|w| ShardId { object_id: w.set.object_id.clone(), index }).collect();
        let suspects = self.rebuild.suspects.lock().expect("suspects lock").clone();
        let have: Vec<bool> = tokio::task::spawn_blocking(move || {
            ids.iter().map(|id| !suspects.contains(id) && matches!(store.stat(id), Ok(Some(_)))).collect()
        })
        .await
        .map_err(|e| NodeError::Other(format!("blocking task failed: {e}")))?;
        let mut out: Vec<Wanted> = Vec::new();
        let mut by_object: BTreeMap<String, usize> = BTreeMap::new();
        for (mut w, have) in candidates.into_iter().zip(have) {
            if have && w.fix.is_empty() {
                continue;
            }
            if let Some(&first) = by_object.get(&w.set.object_id) {
                out[first].also.push((w.bucket, w.key, w.version, w.fix));
                continue;
            }
            w.have = have;
            w.live =
                w.set.shards.iter().filter(|l| l.index != index && in_service(map, l.node)).count() + usize::from(have);
            by_object.insert(w.set.object_id.clone(), out.len());
            out.push(w);
        }
        Ok(Some(out))
    }

    /// Every live sharded object `node` holds in PG `sel`.
    async fn pg_objects_on(
        &self,
        map: &PlacementMap,
        node: NodeId,
        sel: PgSelector,
    ) -> Result<Vec<PgObject>, NodeError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = if node == self.id {
                self.meta.pg_objects(sel, after, 10_000).await?
            } else {
                let addr = map.topology.node(node).map(|n| n.addr.clone()).ok_or(NodeError::NotFound)?;
                self.client.list_pg_objects(&addr, &ListPg { pg: sel, after, limit: 10_000 }).await?
            };
            out.extend(page.objects);
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }

    async fn rebuild_one(&self, map: &PlacementMap, w: Wanted) -> Result<Done, NodeError> {
        let id = ShardId { object_id: w.set.object_id.clone(), index: w.index };
        let done = if w.have { Done::Recorded } else { self.write_shard(map, &w, &id).await? };
        self.rebuild.suspects.lock().expect("suspects lock").remove(&id);
        let client = self.client.at_epoch(map.epoch);
        let mut relocations: Vec<(&String, &String, Version, NodeId, Option<NodeId>)> = Vec::new();
        for (bucket, key, version, fix) in std::iter::once((&w.bucket, &w.key, w.version, &w.fix))
            .chain(w.also.iter().map(|(b, k, v, f)| (b, k, *v, f)))
        {
            relocations.extend(fix.iter().map(|(replica, from)| (bucket, key, version, *replica, *from)));
        }
        for (bucket, key, version, replica, from) in relocations {
            let req = Relocate {
                bucket: bucket.clone(),
                key: key.clone(),
                version,
                generation: None,
                moves: vec![ShardMove { object_id: id.object_id.clone(), index: w.index, node: self.id, from }],
            };
            let reply = if replica == self.id {
                self.meta.relocate(req).await
            } else {
                let addr = map.topology.node(replica).map(|n| n.addr.clone()).ok_or(NodeError::NotFound)?;
                client.relocate(&addr, &req).await
            };
            match reply {
                Ok(r) if !r.applied => {
                    tracing::debug!(node = %replica, shard = %id.file_name(), "relocation not applied (the manifest changed)")
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(node = %replica, error = %e, "relocation failed"),
            }
        }
        Ok(done)
    }

    /// Writes shard `id` here: copied from its holder if that node is in
    /// service, else decoded from k others. Returns once it is fsynced and
    /// read back with every block verified.
    async fn write_shard(&self, map: &PlacementMap, w: &Wanted, id: &ShardId) -> Result<Done, NodeError> {
        let blocks = w.set.stripe_count(w.size);
        if blocks > u64::from(MAX_BLOCKS) {
            return Err(NodeError::BadRequest(format!("{} blocks is more than a shard may hold", blocks)));
        }
        let meta = ShardMeta {
            codec: w.set.codec.clone(),
            k: w.set.k,
            m: w.set.m,
            block_size: w.set.block_size,
            blocks: blocks as u32,
        };
        let holder = w.set.shards.iter().find(|l| l.index == w.index).map(|l| l.node);
        if let Some(h) = holder.filter(|h| *h != self.id && in_service(map, *h)) {
            match self.copy_shard(map, h, id, meta.clone()).await {
                Ok(n) => return Ok(Done::Copied(n)),
                Err(e) => tracing::debug!(from = %h, error = %e, "rebuild: copy failed; decoding instead"),
            }
        }
        self.decode_shard(map, w, id, meta).await.map(Done::Decoded)
    }

    async fn copy_shard(
        &self,
        map: &PlacementMap,
        from: NodeId,
        id: &ShardId,
        meta: ShardMeta,
    ) -> Result<u64, NodeError> {
        let addr = map.topology.node(from).map(|n| n.addr.clone()).ok_or(NodeError::NotFound)?;
        let blocks = meta.blocks;
        let mut stream = self.client.get_shard(&addr, id, 0..blocks).await?;
        let (tx, writer) = self.spawn_writer(id.clone(), meta, None);
        let mut bytes = 0u64;
        for _ in 0..blocks {
            self.client_load.yield_to_clients().await;
            let frame = stream.next().await.ok_or_else(|| NodeError::Corrupt("shard ended early".into()))??;
            bytes += frame.data.len() as u64;
            self.throttle.take(frame.data.len()).await;
            tx.send(WriteMsg::Frame(frame)).await.map_err(|_| NodeError::Other("shard writer stopped".into()))?;
        }
        finish(tx, writer).await?;
        Ok(bytes)
    }

    async fn decode_shard(
        &self,
        map: &PlacementMap,
        w: &Wanted,
        id: &ShardId,
        meta: ShardMeta,
    ) -> Result<u64, NodeError> {
        let (k, m) = (usize::from(w.set.k), usize::from(w.set.m));
        let codec = Codec::new(k, m).map_err(|e| NodeError::BadRequest(e.to_string()))?;
        // Sources: other shards on in-service nodes first, then on down ones.
        let mut sources: Vec<(u8, NodeId)> =
            w.set.shards.iter().filter(|l| l.index != w.index).map(|l| (l.index, l.node)).collect();
        sources.retain(|(_, n)| map.topology.node(*n).is_some_and(|n| n.state != NodeState::Out));
        sources.sort_by_key(|(_, n)| !in_service(map, *n));
        let mut streams = Vec::with_capacity(k);
        for (index, node) in sources {
            if streams.len() == k {
                break;
            }
            let Some(addr) = map.topology.node(node).map(|n| n.addr.clone()) else { continue };
            let sid = ShardId { object_id: id.object_id.clone(), index };
            match self.client.get_shard(&addr, &sid, 0..meta.blocks).await {
                Ok(s) => streams.push((usize::from(index), s)),
                Err(e) => tracing::debug!(%node, shard = %sid.file_name(), error = %e, "rebuild: source unavailable"),
            }
        }
        if streams.len() < k {
            return Err(NodeError::Unavailable(format!(
                "only {} of the k={k} shards needed to decode {} could be read",
                streams.len(),
                id.file_name()
            )));
        }
        let blocks = meta.blocks;
        let (tx, writer) = self.spawn_writer(id.clone(), meta, Some((codec, usize::from(w.index))));
        let mut bytes = 0u64;
        for b in 0..blocks {
            self.client_load.yield_to_clients().await;
            let mut stripe: Vec<Option<Vec<u8>>> = vec![None; k + m];
            let mut len = None;
            for (index, s) in streams.iter_mut() {
                let f =
                    s.next().await.ok_or_else(|| NodeError::Corrupt(format!("a source ended before block {b}")))??;
                if *len.get_or_insert(f.data.len()) != f.data.len() {
                    return Err(NodeError::Corrupt(format!("block {b}: sources disagree on its length")));
                }
                stripe[*index] = Some(f.data.to_vec());
            }
            let len = len.unwrap_or(0);
            bytes += len as u64;
            self.throttle.take(len).await;
            tx.send(WriteMsg::Stripe(b, stripe)).await.map_err(|_| NodeError::Other("shard writer stopped".into()))?;
        }
        finish(tx, writer).await?;
        Ok(bytes)
    }

    /// A thread at background priority (`background::run_low`) that writes
    /// shard `id` from what it is sent (frames as they are, or stripes it
    /// decodes with `decoder`: the codec and the index of the shard to
    /// rebuild), commits (fsync) on `End`, then reads the whole shard back and
    /// checks every block. Dropped senders leave nothing stored.
    fn spawn_writer(
        &self,
        id: ShardId,
        meta: ShardMeta,
        decoder: Option<(Codec, usize)>,
    ) -> (mpsc::Sender<WriteMsg>, Writer) {
        let (tx, mut rx) = mpsc::channel::<WriteMsg>(4);
        let store = self.shards.clone();
        let task = crate::background::spawn_low("sillok-rebuild", move || -> Result<(), NodeError> {
            let blocks = meta.blocks;
            let k = usize::from(meta.k);
            let mut writer = store.begin_write(&id, meta)?;
            loop {
                match rx.blocking_recv() {
                    Some(WriteMsg::Frame(f)) => writer.append(&f)?,
                    Some(WriteMsg::Stripe(b, mut stripe)) => {
                        let (codec, target) = decoder
                            .as_ref()
                            .ok_or_else(|| NodeError::Other("a stripe sent to a copying writer".into()))?;
                        let r = if *target < k {
                            codec.reconstruct_data(&mut stripe)
                        } else {
                            codec.reconstruct_all(&mut stripe)
                        };
                        r.map_err(|e| NodeError::Corrupt(format!("block {b}: {e}")))?;
                        let data = stripe
                            .get_mut(*target)
                            .and_then(Option::take)
                            .ok_or_else(|| NodeError::Other("decoder left the block out".into()))?;
                        writer.append(&Frame::new(Bytes::from(data)))?;
                    }
                    Some(WriteMsg::End) => break,
                    None => return Err(NodeError::Other("rebuild abandoned".into())),
                }
            }
            writer.commit()?;
            let mut reader = store
                .open_read(&id)?
                .ok_or_else(|| NodeError::Corrupt(format!("{} vanished after its commit", id.file_name())))?;
            let mut read = 0;
            while reader.read_block()?.is_some() {
                read += 1;
            }
            if read != blocks {
                return Err(NodeError::Corrupt(format!("{} reads back {read} of {blocks} blocks", id.file_name())));
            }
            Ok(())
        });
        (tx, Box::pin(task))
    }

    /// Rebuild rounds until the task is dropped: the first within 2 s of the
    /// start, then every `rebuild_every` and soon after each map change.
    pub async fn rebuild_forever(self: Arc<Self>) {
        let mut seen = self.map.clone();
        seen.borrow_and_update();
        // The first round soon after start: a node added to a map that moves
        // slots to it has work from its first second.
        let mut every = self.settings.rebuild_every.min(std::time::Duration::from_secs(2));
        loop {
            crate::collector::pause_or_map_change(&mut seen, every).await;
            every = self.settings.rebuild_every;
            if let Err(e) = self.rebuild_round().await {
                tracing::warn!(error = %e, "rebuild round failed");
            }
        }
    }
}

async fn finish(tx: mpsc::Sender<WriteMsg>, writer: Writer) -> Result<(), NodeError> {
    // A writer that stopped early says why through its own outcome.
    let sent = tx.send(WriteMsg::End).await;
    drop(tx);
    writer.await?;
    sent.map_err(|_| NodeError::Other("shard writer stopped".into()))
}
