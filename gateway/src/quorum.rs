//! Manifests on a majority of a PG's manifest replicas.
//!
//! Write: send to all m+1 replicas in parallel; succeed once a majority have
//! stored it (or hold something newer) and those copies span at least two
//! sites whenever the replicas do, so losing any one site keeps a copy.
//! Read: ask all replicas, wait for a majority of answers (found or not found),
//! return the newest version. Because write and read majorities intersect, a
//! read after an acknowledged write always sees it (or something newer).
//!
//! Earlier rows: a PG whose slots moved keeps its objects' manifests where
//! they were written until rebalancing moves them; a read that finds nothing
//! on the current replicas asks the PG's earlier rows, newest first. Writes
//! (tombstones too) go to the current replicas only, so a version found there
//! is always newer than one on an earlier row.
//!
//! Epochs: the replicas come from the gateway's map. A node that follows a
//! newer map refuses the call (`NodeError::StaleEpoch`) before it reaches a
//! quorum; the whole operation is then retried on the newer map, after the
//! gateway has caught up to it (`fanout::on_current_map`). Writing a
//! manifest twice is harmless: nodes keep the newest version. The fan-out
//! itself (deadlines, suspicion, the rest in the background) is `fanout`'s.

use std::sync::Arc;

use sillok_model::manifest::Manifest;
use sillok_placement::{NodeId, PlacementMap};

use crate::cluster::Cluster;
use crate::error::GatewayError;
use crate::fanout::{self, Attempt, Gathered, Need, Rest};

pub async fn write_manifest(cluster: &Arc<Cluster>, m: &Manifest) -> Result<(), GatewayError> {
    fanout::on_current_map(cluster, |map| write_on(cluster, map, m)).await
}

/// A majority of the current replicas, spanning two sites whenever they do.
async fn write_on(cluster: &Arc<Cluster>, map: Arc<PlacementMap>, m: &Manifest) -> Attempt<()> {
    let replicas = map.manifest_replicas(map.pg_of(&m.bucket, &m.key));
    let need = Need::majority(replicas.len()).spanning(2);
    let m = Arc::new(m.clone());
    let put = |client: sillok_storage_node::NodeClient, addr: String| {
        let m = m.clone();
        async move { client.put_manifest(&addr, &m).await }
    };
    match fanout::call_many(cluster, &map, &replicas, need, Rest::Finish, put).await {
        Gathered::Met { .. } => Attempt::Done(Ok(())),
        Gathered::Stale(epoch) => Attempt::Stale(epoch),
        Gathered::Short { ok, failed } => Attempt::Done(Err(GatewayError::Unavailable(format!(
            "manifest stored on {} of {} replicas (need {} across two sites): {}",
            ok.len(),
            replicas.len(),
            need.answers,
            Gathered::<()>::describe(&failed)
        )))),
    }
}

/// The newest manifest version a majority knows of, tombstones included.
pub async fn read_manifest(cluster: &Arc<Cluster>, bucket: &str, key: &str) -> Result<Option<Manifest>, GatewayError> {
    fanout::on_current_map(cluster, |map| read_on(cluster, map, bucket, key)).await
}

/// The current row's replicas first; only if they know nothing of the key,
/// the PG's earlier rows, newest first (objects written before a slot move
/// are still there: see `PlacementMap::previous`).
async fn read_on(cluster: &Arc<Cluster>, map: Arc<PlacementMap>, bucket: &str, key: &str) -> Attempt<Option<Manifest>> {
    let pg = map.pg_of(bucket, key);
    match read_from(cluster, &map, &map.manifest_replicas(pg), bucket, key).await {
        Attempt::Done(Ok(None)) => {}
        other => return other,
    }
    for replicas in map.previous_manifest_replicas(pg) {
        match read_from(cluster, &map, &replicas, bucket, key).await {
            Attempt::Done(Ok(None)) => {}
            other => return other,
        }
    }
    Attempt::Done(Ok(None))
}

/// A majority read of one replica set: the newest version among the answers.
async fn read_from(
    cluster: &Arc<Cluster>,
    map: &PlacementMap,
    replicas: &[NodeId],
    bucket: &str,
    key: &str,
) -> Attempt<Option<Manifest>> {
    let need = Need::majority(replicas.len());
    let (bucket, key): (Arc<str>, Arc<str>) = (bucket.into(), key.into());
    let get = |client: sillok_storage_node::NodeClient, addr: String| {
        let (bucket, key) = (bucket.clone(), key.clone());
        async move { client.get_manifest(&addr, &bucket, &key).await }
    };
    match fanout::call_many(cluster, map, replicas, need, Rest::Drop, get).await {
        Gathered::Met { ok, .. } => Attempt::Done(Ok(ok.into_iter().filter_map(|(_, m)| m).max_by_key(|m| m.version))),
        Gathered::Stale(epoch) => Attempt::Stale(epoch),
        Gathered::Short { ok, failed } => Attempt::Done(Err(GatewayError::Unavailable(format!(
            "{} of {} manifest replicas answered (need {}): {}",
            ok.len(),
            replicas.len(),
            need.answers,
            Gathered::<()>::describe(&failed)
        )))),
    }
}
