//! Anti-entropy: the manifest replicas of each PG converge.
//!
//! Owns: pulling what this node lacks. Each round, for every PG whose
//! current or earlier rows name this node as a manifest replica, the node compares its
//! digest of the PG (keys, versions, tombstones, location generations) with
//! each other replica of the PG's rows, current and earlier (one
//! `POST /v1/pg/digests` per peer for all the PGs they share). Where they
//! differ it lists the peer's entries and fetches every manifest whose
//! version is newer than its own (or that it lacks), storing it through the
//! ordinary store rule (newer wins). Every replica does the same, so a
//! difference is mended from both sides; pulling from earlier rows brings a
//! PG's manifests to its new row after a slot move.
//!
//! Invariants:
//! - Only newer versions are stored (the store refuses older ones anyway), so
//!   anti-entropy can never undo an overwrite or a delete.
//! - A tombstone older than the purge horizon is pulled only onto a replica
//!   that still holds an older version of its key (which it must supersede),
//!   never onto one that holds nothing: the collector purges such tombstones
//!   once every replica holds them (`collector`), and pulling them back would
//!   resurrect what was purged.
//! - Catching up before answering reads: a node that starts with a map and
//!   with manifests on disk answers clients' manifest reads (`/v1/manifests/get`, `/list`) with 503
//!   until a round in which, for every PG it replicates, at least one other
//!   replica answered and what it had was pulled (or until
//!   `--catch-up-limit-ms` passed, logged as a warning). A node back from
//!   an outage thus never offers the state it had before it, deletes
//!   included, to a reader. Its peers' own anti-entropy and rebuild
//!   requests (marked as background work) are answered meanwhile, so nodes
//!   that restart together catch up from each other.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sillok_placement::{NodeId, PgId, PlacementMap};

use crate::api::{PgDigest, PgDigests, PgSelector};
use crate::collector::{Upkeeper, row_replicas};
use crate::error::NodeError;

/// How often a node that has not caught up yet tries again.
const CATCH_UP_RETRY: Duration = Duration::from_millis(500);

/// Whether this node has caught up on manifests since it started.
#[derive(Debug)]
pub struct CatchUp {
    done: AtomicBool,
    started: Instant,
}

impl CatchUp {
    /// `done` from the start for a node with no map (nothing to catch up from).
    pub fn new(done: bool) -> Self {
        CatchUp { done: AtomicBool::new(done), started: Instant::now() }
    }

    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    /// Why a client's manifest read is refused now, if it is.
    pub fn refusal(&self) -> Option<String> {
        (!self.is_done()).then(|| {
            format!(
                "this node started {:.0} s ago and is still catching up on manifests from its peers; \
                 read from the other replicas",
                self.started.elapsed().as_secs_f64()
            )
        })
    }
}

/// What one anti-entropy round did.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncRound {
    pub pulled: u64,
    /// PGs this node replicates with peers of which none answered.
    pub unheard: u64,
}

impl Upkeeper {
    /// One pass over this node's PGs; returns how many manifests it pulled.
    /// Digests travel in one request per peer for all the PGs it shares
    /// with this node; only PGs whose digests differ are listed and pulled.
    pub async fn sync_round(&self) -> Result<SyncRound, NodeError> {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(map) = self.map.borrow().clone() else { return Ok(SyncRound::default()) };
        let (t0, bytes0) = (std::time::Instant::now(), self.stats.sync_bytes.load(Relaxed));
        // My digest of each PG I am a replica of (any row), and who else holds it.
        let mut peers: BTreeMap<NodeId, Vec<PgId>> = BTreeMap::new();
        let mut held = Vec::new();
        for pg in 0..map.pg_count {
            // Earlier rows too: a former replica that kept a stale copy
            // (an old location, a version since deleted) would otherwise
            // keep its shards referenced, and the collector waiting, for as
            // long as the map remembers the row.
            let replicas = row_replicas(&map, pg);
            if !replicas.contains(&self.id) {
                continue;
            }
            held.push(pg);
            for node in replicas.into_iter().filter(|n| *n != self.id) {
                peers.entry(node).or_default().push(pg);
            }
        }
        let digests = self.meta.pg_digests(held.iter().map(|&pg| PgSelector::of(&map, pg)).collect()).await?;
        let mine: BTreeMap<PgId, PgDigest> = held
            .into_iter()
            .zip(digests)
            .map(|(pg, (count, digest))| (pg, PgDigest { count, digest: hex::encode(digest) }))
            .collect();
        let client = self.client.at_epoch(map.epoch);
        let mut pulled = 0;
        let mut unheard: BTreeSet<PgId> = peers.values().flatten().copied().collect();
        // PGs where a peer in service did not answer, or had something to pull.
        let mut behind: BTreeSet<PgId> = BTreeSet::new();
        for (node, pgs) in peers {
            let Some(peer) = map.topology.node(node) else { continue };
            let (addr, lost) = (peer.addr.clone(), peer.state == sillok_placement::NodeState::Out);
            let req = PgDigests { pg_count: map.pg_count, function: map.pg_function, pgs: pgs.clone() };
            let theirs = match client.pg_digests(&addr, &req).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!(%node, error = %e, "anti-entropy: peer did not answer");
                    if !lost {
                        behind.extend(pgs);
                    }
                    continue;
                }
            };
            self.stats.sync_bytes.fetch_add(serde_json::to_vec(&theirs).map(|v| v.len() as u64).unwrap_or(0), Relaxed);
            for (pg, d) in pgs.into_iter().zip(theirs) {
                if mine.get(&pg) != Some(&d) {
                    match self.pull_pg(&map, node, &addr, PgSelector::of(&map, pg)).await? {
                        Some(n) => {
                            pulled += n;
                            if n > 0 {
                                behind.insert(pg);
                            }
                        }
                        None => {
                            behind.insert(pg);
                            continue;
                        }
                    }
                }
                unheard.remove(&pg);
            }
        }
        // Only PGs this node is a replica of: those are all it compared.
        self.rebuild.note_sync(map.epoch, behind.into_iter().filter(|pg| mine.contains_key(pg)).collect());
        self.stats.manifests_pulled.fetch_add(pulled, Relaxed);
        if pulled > 0 {
            let bytes = self.stats.sync_bytes.load(Relaxed) - bytes0;
            let ms = t0.elapsed().as_millis() as u64;
            tracing::info!(pulled, bytes, ms, "anti-entropy copied manifests this node lacked");
        }
        Ok(SyncRound { pulled, unheard: unheard.len() as u64 })
    }

    /// Lists PG `sel` on `node` and fetches every manifest newer than ours;
    /// `None` when the peer's listing or a fetch failed part way.
    async fn pull_pg(
        &self,
        map: &PlacementMap,
        node: NodeId,
        addr: &str,
        sel: PgSelector,
    ) -> Result<Option<u64>, NodeError> {
        let horizon = self.settings.tombstone_horizon.as_nanos() as u64;
        let old_before = (sillok_model::clock::wall_ms().max(0) as u64 * 1_000_000).saturating_sub(horizon);
        let client = self.client.at_epoch(map.epoch);
        let mine: BTreeMap<(String, String), (sillok_model::manifest::Version, u64)> = self
            .meta
            .list_pg_all(sel)
            .await?
            .into_iter()
            .map(|e| ((e.bucket, e.key), (e.version, e.locations)))
            .collect();
        let theirs = match self.peer_pg(map, node, sel).await {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(pg = sel.pg, %node, error = %e, "anti-entropy: peer listing failed");
                return Ok(None);
            }
        };
        let mut pulled = 0;
        for e in theirs {
            let have = mine.get(&(e.bucket.clone(), e.key.clone()));
            // Newer: a newer version, or the same one at a higher location generation.
            if have.is_some_and(|v| *v >= (e.version, e.locations)) {
                continue;
            }
            if e.deleted && e.version.nanos < old_before && have.is_none() {
                continue;
            }
            match client.get_manifest(addr, &e.bucket, &e.key).await {
                Ok(Some(m)) => {
                    let bytes = serde_json::to_vec(&m).map(|v| v.len() as u64).unwrap_or(0);
                    self.stats.sync_bytes.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
                    if self.meta.put(&m).await?.stored {
                        pulled += 1;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(pg = sel.pg, %node, error = %e, "anti-entropy: fetching a manifest failed");
                    return Ok(None);
                }
            }
        }
        Ok(Some(pulled))
    }

    /// Measures this node's clock against every other node of the map
    /// (`node_clock`), concurrently, each call bounded by the client's deadlines.
    pub async fn measure_clock(&self) {
        let Some(map) = self.map.borrow().clone() else { return };
        let calls = map.topology.nodes.iter().filter(|n| n.id != self.id).map(|n| self.client.health(&n.addr));
        let measured: Vec<(i64, i64)> = futures::future::join_all(calls)
            .await
            .into_iter()
            // `health` measures the peer's clock minus ours; we keep ours minus theirs.
            .filter_map(|h| h.ok().and_then(|h| h.clock_offset_ms.map(|o| (-o, h.round_trip_ms))))
            .collect();
        self.clock.note(&measured);
    }

    /// Anti-entropy rounds (each after a clock measurement) until the task
    /// is dropped; the first at once, then every `sync_every` and soon after
    /// each map change (every `CATCH_UP_RETRY` until the node has caught up).
    pub async fn sync_forever(self: std::sync::Arc<Self>) {
        let mut first = true;
        let mut seen = self.map.clone();
        seen.borrow_and_update();
        loop {
            if !first {
                let every = self.settings.sync_every;
                let every = if self.catch_up.is_done() { every } else { every.min(CATCH_UP_RETRY) };
                crate::collector::pause_or_map_change(&mut seen, every).await;
            }
            first = false;
            self.measure_clock().await;
            let round = self.sync_round().await;
            if let Err(e) = &round {
                tracing::warn!(error = %e, "anti-entropy round failed");
            }
            if self.catch_up.is_done() {
                continue;
            }
            let waited = self.catch_up.started.elapsed();
            match round {
                Ok(r) if r.unheard == 0 => {
                    self.catch_up.done.store(true, Ordering::Relaxed);
                    tracing::info!(
                        pulled = r.pulled,
                        ms = waited.as_millis() as u64,
                        "caught up on manifests from the peers; answering reads"
                    );
                }
                _ if waited >= self.settings.catch_up_limit => {
                    self.catch_up.done.store(true, Ordering::Relaxed);
                    let unheard = round.map(|r| r.unheard).unwrap_or(0);
                    tracing::warn!(
                        unheard,
                        limit_ms = self.settings.catch_up_limit.as_millis() as u64,
                        "answering reads without having heard from a peer of every PG (catch-up limit passed)"
                    );
                }
                Ok(r) => tracing::debug!(unheard = r.unheard, "still catching up on manifests"),
                Err(_) => {}
            }
        }
    }
}
