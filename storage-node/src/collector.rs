//! The collector: the only code that deletes shard files or purges tombstones.
//!
//! Owns: the decision to delete. Every node runs one, over its own disk.
//! Request paths (the gateway's PUT, DELETE, multipart) never delete: a
//! superseded, failed, aborted or orphaned write only leaves shards that no
//! manifest refers to, and this finds them.
//!
//! Shards. Each round walks the node's shard directories, groups the files
//! older than the grace period by the PG their object id names
//! (`model::placement`), and asks every manifest replica of that PG, on the
//! current row and on every earlier row the map still remembers, where the
//! manifests it holds place those object ids' shards (`POST /v1/references`).
//! A file `<id>.<index>` is *unreferenced* in a round when every one of those
//! replicas answered and none places shard `index` of `id` on this node (so
//! a copy left behind by a repair that moved the shard elsewhere, or a shard
//! that committed after its PUT gave up on it, is garbage too). It is
//! deleted when it was also found unreferenced at least one grace period
//! earlier; the time it was first found so is kept in the manifest store
//! (`collect_candidates`, by file name), so a restart loses nothing and
//! shortens no grace period.
//!
//! Why that is safe:
//! - A PUT writes its manifest within its deadline after its shards are
//!   committed; the grace period is longer than every PUT and GET deadline,
//!   so a file older than it whose id no replica knows will never be
//!   referred to by that PUT.
//! - Asking *every* replica, not a majority, covers a manifest that reached
//!   only a minority (a 5xx to the client): anti-entropy may yet spread it,
//!   so its shards must stay. A replica that does not answer stops the PG's
//!   collection for the round; so does a replica of an earlier row, which may
//!   hold the newest version until anti-entropy has copied it. Collection
//!   therefore waits while a replica is down, and resumes when it is back or
//!   the map no longer names it: space is spent, nothing is lost.
//! - The second grace period, counted from the first "unreferenced", lets a
//!   GET that read the old manifest just before an overwrite finish
//!   streaming.
//! - Object ids that carry no placement hash (written before ids did) are
//!   never considered: no PG can vouch for them.
//!
//! Tombstones. A tombstone this node holds as a current manifest replica is
//! purged once it is older than the purge horizon and every replica of the
//! PG's rows answers that it holds that version or a newer one, or nothing
//! for the key. Anti-entropy never copies a tombstone older than the horizon
//! to a replica that holds nothing for its key, so a purged tombstone does
//! not come back; it does copy it to a replica still holding an older live
//! version, so a replica that missed a delete cannot bring the object back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use sillok_model::manifest::Version;
use sillok_model::placement;
use sillok_placement::{NodeId, PgId, PlacementMap};

use crate::api::{ListPg, PgEntry, PgSelector, ShardId, ShardPlace};
use crate::client::NodeClient;
use crate::error::NodeError;
use crate::meta_store::MetaStore;
use crate::server::MapWatch;
use crate::shard_store::ShardStore;

/// How the node's background upkeep (collector and anti-entropy) runs.
#[derive(Debug, Clone, Copy)]
pub struct Upkeep {
    /// How long a shard must be unreferenced (and its file that old) before
    /// it is deleted. Longer than every PUT and GET deadline.
    pub grace: Duration,
    /// Tombstones older than this are purged once every replica has them.
    pub tombstone_horizon: Duration,
    /// Pause between collector rounds.
    pub collect_every: Duration,
    /// Pause between anti-entropy rounds.
    pub sync_every: Duration,
    /// The node refuses manifest writes and pauses its collector while its
    /// clock is further than this from its peers' (`node_clock`).
    pub max_clock_offset: Duration,
    /// Pause between rebuild rounds (`rebuild`).
    pub rebuild_every: Duration,
    /// The rebuild throttle at start: MiB/s (0: unlimited) and shards at once.
    pub rebuild_mib_per_s: u32,
    pub rebuild_concurrency: u32,
    /// A scrub pass starts this often (zero: no scrub), reading at most
    /// `scrub_mib_per_s`.
    pub scrub_every: Duration,
    pub scrub_mib_per_s: u32,
    /// A restarted node answers clients' manifest reads once it has heard
    /// from a peer of every PG it replicates, or after this long
    /// (`anti_entropy`).
    pub catch_up_limit: Duration,
}

impl Default for Upkeep {
    fn default() -> Self {
        Upkeep {
            grace: Duration::from_secs(3600),
            tombstone_horizon: Duration::from_secs(24 * 3600),
            collect_every: Duration::from_secs(60),
            sync_every: Duration::from_secs(30),
            max_clock_offset: Duration::from_millis(500),
            rebuild_every: Duration::from_secs(30),
            rebuild_mib_per_s: 100,
            rebuild_concurrency: 4,
            scrub_every: Duration::from_secs(14 * 24 * 3600),
            scrub_mib_per_s: 10,
            catch_up_limit: Duration::from_secs(60),
        }
    }
}

/// What the collector, anti-entropy and the rebuild engine share: the node's
/// stores, its view of the map, and a client for its peers.
pub struct Upkeeper {
    pub id: NodeId,
    pub meta: MetaStore,
    pub shards: ShardStore,
    pub map: MapWatch,
    pub client: NodeClient,
    pub settings: Upkeep,
    pub clock: Arc<crate::node_clock::NodeClock>,
    pub stats: UpkeepStats,
    pub throttle: Arc<crate::rebuild::Throttle>,
    pub rebuild: Arc<crate::rebuild::RebuildState>,
    pub scrub: crate::scrub::ScrubStats,
    /// Client requests in flight on this node (the rebuild and scrub yield).
    pub client_load: Arc<crate::background::ClientLoad>,
    /// Whether anti-entropy has caught up since the node started.
    pub catch_up: Arc<crate::anti_entropy::CatchUp>,
}

/// Counters, for logs and the figures in the closing notes.
#[derive(Debug, Default)]
pub struct UpkeepStats {
    pub rounds: std::sync::atomic::AtomicU64,
    pub shards_checked: std::sync::atomic::AtomicU64,
    pub shards_deleted: std::sync::atomic::AtomicU64,
    pub tombstones_purged: std::sync::atomic::AtomicU64,
    pub pgs_waiting: std::sync::atomic::AtomicU64,
    pub manifests_pulled: std::sync::atomic::AtomicU64,
    pub sync_bytes: std::sync::atomic::AtomicU64,
}

fn add(c: &std::sync::atomic::AtomicU64, n: u64) {
    c.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
}

fn now_ms() -> u64 {
    sillok_model::clock::wall_ms().max(0) as u64
}

/// Every manifest replica of a PG's rows, current row first, no repeats.
pub fn row_replicas(map: &PlacementMap, pg: PgId) -> Vec<NodeId> {
    let mut out = map.manifest_replicas(pg);
    for row in map.previous_manifest_replicas(pg) {
        for n in row {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

/// Waits `every`, or less when the map changes meanwhile (`seen` remembers
/// the last map its owner acted on, so a change during a round counts), so
/// that a new map's moves and rebuilds start at once rather than a period
/// later. A short settle after a change lets a burst of changes (an apply,
/// then the rows it leaves dropped) cost one round.
pub(crate) async fn pause_or_map_change(seen: &mut MapWatch, every: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(every) => {}
        changed = seen.changed() => {
            if changed.is_ok() {
                tokio::time::sleep(every.min(Duration::from_millis(500))).await;
            } else {
                // The follower is gone (the node is stopping): wait the period.
                tokio::time::sleep(every).await;
            }
        }
    }
    seen.borrow_and_update();
}

impl Upkeeper {
    fn current_map(&self) -> Option<Arc<PlacementMap>> {
        self.map.borrow().clone()
    }

    /// Where `node`'s manifests place the shards of `ids` (this node answers
    /// from its own store).
    async fn placements_on(
        &self,
        map: &PlacementMap,
        node: NodeId,
        ids: &[String],
    ) -> Result<Vec<ShardPlace>, NodeError> {
        if node == self.id {
            return self.meta.placements(ids.to_vec()).await;
        }
        let addr = map.topology.node(node).map(|n| n.addr.clone()).ok_or(NodeError::NotFound)?;
        self.client.placements(&addr, ids).await
    }

    /// One pass over every shard file, a directory at a time; returns how
    /// many were deleted. Each directory costs one question to each replica
    /// node concerned (asked at once), whatever the number of PGs in it.
    pub async fn collect_round(&self) -> Result<u64, NodeError> {
        let Some(map) = self.current_map() else { return Ok(0) };
        let grace_ms = self.settings.grace.as_millis() as u64;
        let mut deleted = 0;
        // Replicas that did not answer once are not asked again this round
        // (a hung node would otherwise cost a deadline per directory).
        let silent = std::sync::Mutex::new(BTreeSet::<NodeId>::new());
        for dir in 0..=255u8 {
            let store = self.shards.clone();
            let files = tokio::task::spawn_blocking(move || store.list_dir(dir))
                .await
                .map_err(|e| NodeError::Other(e.to_string()))??;
            add(&self.stats.shards_checked, files.len() as u64);
            // PG → the shard files held here that are old enough to judge.
            let mut by_pg: BTreeMap<PgId, Vec<ShardId>> = BTreeMap::new();
            for f in files {
                let Some(hash) = placement::object_id_hash(&f.id.object_id) else { continue };
                if f.age_ms >= grace_ms {
                    by_pg.entry(map.pg_of_hash(hash)).or_default().push(f.id);
                }
            }
            if by_pg.is_empty() {
                continue;
            }
            // Replica node → the ids it is asked about.
            let mut ask: BTreeMap<NodeId, BTreeSet<String>> = BTreeMap::new();
            for (pg, held) in &by_pg {
                for node in row_replicas(&map, *pg) {
                    ask.entry(node).or_default().extend(held.iter().map(|s| s.object_id.clone()));
                }
            }
            let answers: BTreeMap<NodeId, Option<BTreeSet<(String, u8)>>> =
                futures::future::join_all(ask.into_iter().map(|(node, ids)| {
                    let (map, silent) = (&map, &silent);
                    async move {
                        if silent.lock().expect("silent lock").contains(&node) {
                            return (node, None);
                        }
                        let ids: Vec<String> = ids.into_iter().collect();
                        let mut placed = BTreeSet::new();
                        for chunk in ids.chunks(crate::server::MAX_REFERENCES) {
                            match self.placements_on(map, node, chunk).await {
                                Ok(p) => placed.extend(
                                    p.into_iter().filter(|p| p.node == self.id).map(|p| (p.object_id, p.index)),
                                ),
                                Err(e) => {
                                    tracing::debug!(%node, error = %e, "collector: a replica did not answer; its PGs wait");
                                    silent.lock().expect("silent lock").insert(node);
                                    return (node, None);
                                }
                            }
                        }
                        (node, Some(placed))
                    }
                }))
                .await
                .into_iter()
                .collect();
            // A file is kept while any replica of its PG's rows places that
            // shard on this node; a PG some replica did not answer for waits.
            let (mut kept, mut unplaced) = (Vec::new(), Vec::new());
            for (pg, held) in by_pg {
                let mut placed_here = BTreeSet::new();
                let mut all_answered = true;
                for node in row_replicas(&map, pg) {
                    match answers.get(&node) {
                        Some(Some(p)) => placed_here.extend(p.iter().cloned()),
                        _ => all_answered = false,
                    }
                }
                if !all_answered {
                    add(&self.stats.pgs_waiting, 1);
                    continue;
                }
                for s in held {
                    if placed_here.contains(&(s.object_id.clone(), s.index)) {
                        kept.push(s);
                    } else {
                        unplaced.push(s);
                    }
                }
            }
            deleted += self.settle(dir, kept, unplaced).await?;
        }
        Ok(deleted)
    }

    /// Forgets the candidates that are placed again (`kept`), records the
    /// unplaced ones, and deletes those unplaced for a grace period already.
    async fn settle(&self, dir: u8, kept: Vec<ShardId>, unplaced: Vec<ShardId>) -> Result<u64, NodeError> {
        let now = now_ms();
        let names = |v: &[ShardId]| v.iter().map(ShardId::file_name).collect::<Vec<_>>();
        let noted = self.meta.note_candidates(names(&unplaced), names(&kept), now).await?;
        let grace_ms = self.settings.grace.as_millis() as u64;
        let due: BTreeSet<String> =
            noted.into_iter().filter(|(_, first)| now.saturating_sub(*first) >= grace_ms).map(|(n, _)| n).collect();
        let mut deleted = Vec::new();
        for sid in unplaced.into_iter().filter(|s| due.contains(&s.file_name())) {
            let store = self.shards.clone();
            let name = sid.file_name();
            tokio::task::spawn_blocking(move || store.delete(&sid))
                .await
                .map_err(|e| NodeError::Other(e.to_string()))??;
            deleted.push(name);
        }
        let n = deleted.len() as u64;
        if n > 0 {
            self.meta.note_candidates(Vec::new(), deleted, now).await?;
            tracing::info!(dir = format!("{dir:02x}"), shards = n, "collector deleted unreferenced shards");
            add(&self.stats.shards_deleted, n);
        }
        Ok(n)
    }

    /// Purges the old tombstones this node holds as a current manifest
    /// replica that every replica of the PG's rows has caught up with.
    pub async fn purge_round(&self) -> Result<u64, NodeError> {
        let Some(map) = self.current_map() else { return Ok(0) };
        let horizon = self.settings.tombstone_horizon.as_nanos() as u64;
        let old_before = (now_ms() * 1_000_000).saturating_sub(horizon);
        let mut purged = 0;
        let mut silent = BTreeSet::new();
        for pg in 0..map.pg_count {
            if !map.manifest_replicas(pg).contains(&self.id) {
                continue;
            }
            let sel = PgSelector::of(&map, pg);
            let mine = self.meta.list_pg_all(sel).await?;
            let old: Vec<&PgEntry> = mine.iter().filter(|e| e.deleted && e.version.nanos < old_before).collect();
            if old.is_empty() {
                continue;
            }
            let mut theirs: Vec<BTreeMap<(String, String), Version>> = Vec::new();
            let mut all_answered = true;
            for node in row_replicas(&map, pg).into_iter().filter(|n| *n != self.id) {
                if silent.contains(&node) {
                    all_answered = false;
                    break;
                }
                match self.peer_pg(&map, node, sel).await {
                    Ok(list) => {
                        theirs.push(list.into_iter().map(|e| ((e.bucket, e.key), e.version)).collect());
                    }
                    Err(e) => {
                        tracing::debug!(pg, %node, error = %e, "purge: a replica did not answer; PG waits");
                        silent.insert(node);
                        all_answered = false;
                        break;
                    }
                }
            }
            if !all_answered {
                continue;
            }
            for e in old {
                let k = (e.bucket.clone(), e.key.clone());
                if theirs.iter().all(|t| t.get(&k).is_none_or(|v| *v >= e.version))
                    && self.meta.purge_tombstone(&e.bucket, &e.key, e.version).await?
                {
                    purged += 1;
                }
            }
        }
        if purged > 0 {
            tracing::info!(purged, "collector purged tombstones every replica holds");
            add(&self.stats.tombstones_purged, purged);
        }
        Ok(purged)
    }

    /// Every manifest entry `node` holds in PG `sel`.
    pub async fn peer_pg(&self, map: &PlacementMap, node: NodeId, sel: PgSelector) -> Result<Vec<PgEntry>, NodeError> {
        let addr = map.topology.node(node).map(|n| n.addr.clone()).ok_or(NodeError::NotFound)?;
        let client = &self.client;
        list_all(|after| {
            let addr = addr.clone();
            async move {
                let page = client.list_pg_manifests(&addr, &ListPg { pg: sel, after, limit: 10_000 }).await?;
                add(&self.stats.sync_bytes, serde_json::to_vec(&page).map(|v| v.len() as u64).unwrap_or(0));
                Ok(page)
            }
        })
        .await
    }

    /// Collector rounds until the task is dropped.
    pub async fn collect_forever(self: Arc<Self>) {
        use std::sync::atomic::Ordering::Relaxed;
        loop {
            tokio::time::sleep(self.settings.collect_every).await;
            if let Some(why) = self.clock.refusal() {
                tracing::debug!("collector paused: {why}");
                continue;
            }
            let (t0, checked0) = (std::time::Instant::now(), self.stats.shards_checked.load(Relaxed));
            match self.collect_round().await {
                Ok(deleted) if deleted > 0 => tracing::info!(
                    checked = self.stats.shards_checked.load(Relaxed) - checked0,
                    deleted,
                    ms = t0.elapsed().as_millis() as u64,
                    "collector round"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "collector round failed"),
            }
            if let Err(e) = self.purge_round().await {
                tracing::warn!(error = %e, "tombstone purge round failed");
            }
            add(&self.stats.rounds, 1);
        }
    }
}

/// Follows `next` cursors until the last page.
async fn list_all<F, Fut>(mut page: F) -> Result<Vec<PgEntry>, NodeError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<crate::api::PgManifestList, NodeError>>,
{
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let p = page(after).await?;
        out.extend(p.entries);
        match p.next {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}
