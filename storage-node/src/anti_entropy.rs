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

use std::collections::BTreeMap;

use sillok_placement::{NodeId, PgId, PlacementMap};

use crate::api::{PgDigest, PgDigests, PgSelector};
use crate::collector::{Upkeeper, row_replicas};
use crate::error::NodeError;

impl Upkeeper {
    /// One pass over this node's PGs; returns how many manifests it pulled.
    /// Digests travel in one request per peer for all the PGs it shares
    /// with this node; only PGs whose digests differ are listed and pulled.
    pub async fn sync_round(&self) -> Result<u64, NodeError> {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(map) = self.map.borrow().clone() else { return Ok(0) };
        let (t0, bytes0) = (std::time::Instant::now(), self.stats.sync_bytes.load(Relaxed));
        // My digest of each PG I am a replica of (any row), and who else holds it.
        let mut mine: BTreeMap<PgId, PgDigest> = BTreeMap::new();
        let mut peers: BTreeMap<NodeId, Vec<PgId>> = BTreeMap::new();
        for pg in 0..map.pg_count {
            // Earlier rows too: a former replica that kept a stale copy
            // (an old location, a version since deleted) would otherwise
            // keep its shards referenced, and the collector waiting, for as
            // long as the map remembers the row.
            if !row_replicas(&map, pg).contains(&self.id) {
                continue;
            }
            let (count, digest) = self.meta.pg_digest(PgSelector::of(&map, pg)).await?;
            mine.insert(pg, PgDigest { count, digest: hex::encode(digest) });
            for node in row_replicas(&map, pg).into_iter().filter(|n| *n != self.id) {
                peers.entry(node).or_default().push(pg);
            }
        }
        let client = self.client.at_epoch(map.epoch);
        let mut pulled = 0;
        for (node, pgs) in peers {
            let Some(addr) = map.topology.node(node).map(|n| n.addr.clone()) else { continue };
            let req = PgDigests { pg_count: map.pg_count, function: map.pg_function, pgs: pgs.clone() };
            let theirs = match client.pg_digests(&addr, &req).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!(%node, error = %e, "anti-entropy: peer did not answer");
                    continue;
                }
            };
            self.stats.sync_bytes.fetch_add(serde_json::to_vec(&theirs).map(|v| v.len() as u64).unwrap_or(0), Relaxed);
            for (pg, d) in pgs.into_iter().zip(theirs) {
                if mine.get(&pg) != Some(&d) {
                    pulled += self.pull_pg(&map, node, &addr, PgSelector::of(&map, pg)).await?;
                }
            }
        }
        self.stats.manifests_pulled.fetch_add(pulled, Relaxed);
        if pulled > 0 {
            let bytes = self.stats.sync_bytes.load(Relaxed) - bytes0;
            let ms = t0.elapsed().as_millis() as u64;
            tracing::info!(pulled, bytes, ms, "anti-entropy copied manifests this node lacked");
        }
        Ok(pulled)
    }

    /// Lists PG `sel` on `node` and fetches every manifest newer than ours.
    async fn pull_pg(&self, map: &PlacementMap, node: NodeId, addr: &str, sel: PgSelector) -> Result<u64, NodeError> {
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
                return Ok(0);
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
                    break;
                }
            }
        }
        Ok(pulled)
    }

    /// Measures this node's clock against every other node of the map
    /// (`node_clock`), concurrently, each call bounded by the client's deadlines.
    pub async fn measure_clock(&self) {
        let Some(map) = self.map.borrow().clone() else { return };
        let calls = map.topology.nodes.iter().filter(|n| n.id != self.id).map(|n| self.client.health(&n.addr));
        let mut offsets: Vec<i64> = futures::future::join_all(calls)
            .await
            .into_iter()
            // `health` measures the peer's clock minus ours; we keep ours minus theirs.
            .filter_map(|h| h.ok().and_then(|h| h.clock_offset_ms).map(|o| -o))
            .collect();
        self.clock.note(&mut offsets);
    }

    /// Anti-entropy rounds (each after a clock measurement) until the task is dropped.
    pub async fn sync_forever(self: std::sync::Arc<Self>) {
        loop {
            tokio::time::sleep(self.settings.sync_every).await;
            self.measure_clock().await;
            if let Err(e) = self.sync_round().await {
                tracing::warn!(error = %e, "anti-entropy round failed");
            }
        }
    }
}
