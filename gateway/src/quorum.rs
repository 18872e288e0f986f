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
//! gateway has caught up to it (at most [`EPOCH_RETRIES`] times). Writing a
//! manifest twice is harmless: nodes keep the newest version.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use sillok_placement::{NodeId, PlacementMap};
use sillok_storage_node::NodeError;
use sillok_storage_node::manifest::Manifest;

use crate::cluster::Cluster;
use crate::error::GatewayError;

/// How many times one operation moves to a newer map.
pub const EPOCH_RETRIES: usize = 3;

/// A quorum call's outcome: done, or refused for our old epoch.
enum Attempt<T> {
    Done(Result<T, GatewayError>),
    Stale(u64),
}

/// Runs `attempt` on the current map, again on a newer one when a node says
/// ours is old.
async fn on_current_map<T, F, Fut>(cluster: &Arc<Cluster>, mut attempt: F) -> Result<T, GatewayError>
where
    F: FnMut(Arc<PlacementMap>) -> Fut,
    Fut: std::future::Future<Output = Attempt<T>>,
{
    let mut tries = 0;
    loop {
        let map = cluster.map();
        let ours = map.epoch;
        match attempt(map).await {
            Attempt::Done(r) => return r,
            Attempt::Stale(theirs) => {
                tries += 1;
                tracing::info!(ours, theirs, "a node follows a newer map; retrying on it");
                if tries > EPOCH_RETRIES || !cluster.catch_up(theirs).await {
                    return Err(GatewayError::CatalogUnavailable(format!(
                        "a storage node follows map epoch {theirs} and this gateway could not get it (it has {})",
                        cluster.map().epoch
                    )));
                }
            }
        }
    }
}

pub async fn write_manifest(cluster: &Arc<Cluster>, m: &Manifest) -> Result<(), GatewayError> {
    on_current_map(cluster, |map| write_on(cluster, map, m)).await
}

async fn write_on(cluster: &Arc<Cluster>, map: Arc<PlacementMap>, m: &Manifest) -> Attempt<()> {
    let pg = map.pg_of(&m.bucket, &m.key);
    let replicas = map.manifest_replicas(pg);
    let need = replicas.len() / 2 + 1;
    let site = |n: NodeId| map.topology.node(n).map(|x| x.site.clone());
    let replica_sites: BTreeSet<String> = replicas.iter().filter_map(|n| site(*n)).collect();
    let mut calls: FuturesUnordered<_> = replicas
        .iter()
        .map(|&node| {
            let cluster = cluster.clone();
            let m = m.clone();
            let addr = map.topology.node(node).map(|n| n.addr.clone());
            async move {
                let Some(addr) = addr else {
                    return (node, Err(sillok_storage_node::NodeError::Other(format!("node {node} not in map"))));
                };
                let r = cluster.client.put_manifest(&addr, &m).await;
                cluster.note_result(node, &r);
                (node, r)
            }
        })
        .collect();
    let mut acked_sites = BTreeSet::new();
    let mut acked = 0usize;
    let mut failures = Vec::new();
    while let Some((node, r)) = calls.next().await {
        match r {
            Ok(_) => {
                acked += 1;
                if let Some(s) = site(node) {
                    acked_sites.insert(s);
                }
                let spread_ok = acked_sites.len() >= 2 || replica_sites.len() < 2;
                if acked >= need && spread_ok {
                    // The rest finish in the background; their results no longer matter.
                    tokio::spawn(async move { while calls.next().await.is_some() {} });
                    return Attempt::Done(Ok(()));
                }
            }
            Err(NodeError::StaleEpoch { node_epoch, .. }) => {
                tokio::spawn(async move { while calls.next().await.is_some() {} });
                return Attempt::Stale(node_epoch);
            }
            Err(e) => failures.push(format!("{node}: {e}")),
        }
    }
    Attempt::Done(Err(GatewayError::Unavailable(format!(
        "manifest stored on {acked} of {} replicas (need {need} across two sites): {}",
        replicas.len(),
        failures.join("; ")
    ))))
}

/// The newest manifest version a majority knows of, tombstones included.
pub async fn read_manifest(cluster: &Arc<Cluster>, bucket: &str, key: &str) -> Result<Option<Manifest>, GatewayError> {
    on_current_map(cluster, |map| read_on(cluster, map, bucket, key)).await
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

/// A majority read of one replica set.
async fn read_from(
    cluster: &Arc<Cluster>,
    map: &PlacementMap,
    replicas: &[NodeId],
    bucket: &str,
    key: &str,
) -> Attempt<Option<Manifest>> {
    let need = replicas.len() / 2 + 1;
    let mut calls: FuturesUnordered<_> = replicas
        .iter()
        .map(|&node| {
            let cluster = cluster.clone();
            let (bucket, key) = (bucket.to_string(), key.to_string());
            let addr = map.topology.node(node).map(|n| n.addr.clone());
            async move {
                let Some(addr) = addr else {
                    return (node, Err(sillok_storage_node::NodeError::Other(format!("node {node} not in map"))));
                };
                let r = cluster.client.get_manifest(&addr, &bucket, &key).await;
                cluster.note_result(node, &r);
                (node, r)
            }
        })
        .collect();
    let mut answers = 0usize;
    let mut newest: Option<Manifest> = None;
    let mut failures = Vec::new();
    while let Some((node, r)) = calls.next().await {
        match r {
            Ok(found) => {
                answers += 1;
                if let Some(m) = found {
                    if newest.as_ref().is_none_or(|n| m.version > n.version) {
                        newest = Some(m);
                    }
                }
                if answers >= need {
                    break;
                }
            }
            Err(NodeError::StaleEpoch { node_epoch, .. }) => return Attempt::Stale(node_epoch),
            Err(e) => failures.push(format!("{node}: {e}")),
        }
    }
    if answers < need {
        return Attempt::Done(Err(GatewayError::Unavailable(format!(
            "{answers} of {} manifest replicas answered (need {need}): {}",
            replicas.len(),
            failures.join("; ")
        ))));
    }
    Attempt::Done(Ok(newest))
}
