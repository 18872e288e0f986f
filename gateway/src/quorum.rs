//! Manifests on a majority of a PG's manifest replicas.
//!
//! Write: send to all m+1 replicas in parallel; succeed once a majority have
//! stored it (or hold something newer) and those copies span at least two
//! sites whenever the replicas do, so losing any one site keeps a copy.
//! Read: ask all replicas, wait for a majority of answers (found or not found),
//! return the newest version. Because write and read majorities intersect, a
//! read after an acknowledged write always sees it (or something newer).

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use sillok_storage_node::manifest::Manifest;

use crate::cluster::Cluster;
use crate::error::GatewayError;

pub async fn write_manifest(cluster: &Arc<Cluster>, m: &Manifest) -> Result<(), GatewayError> {
    let pg = cluster.map().pg_of(&m.bucket, &m.key);
    let replicas = cluster.manifest_replicas(pg);
    let need = replicas.len() / 2 + 1;
    let replica_sites: BTreeSet<String> = replicas.iter().filter_map(|n| cluster.site(*n)).collect();
    let mut calls: FuturesUnordered<_> = replicas
        .iter()
        .map(|&node| {
            let cluster = cluster.clone();
            let m = m.clone();
            async move {
                let Some(addr) = cluster.addr(node) else {
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
                if let Some(s) = cluster.site(node) {
                    acked_sites.insert(s);
                }
                let spread_ok = acked_sites.len() >= 2 || replica_sites.len() < 2;
                if acked >= need && spread_ok {
                    // The rest finish in the background; their results no longer matter.
                    tokio::spawn(async move { while calls.next().await.is_some() {} });
                    return Ok(());
                }
            }
            Err(e) => failures.push(format!("{node}: {e}")),
        }
    }
    Err(GatewayError::Unavailable(format!(
        "manifest stored on {acked} of {} replicas (need {need} across two sites): {}",
        replicas.len(),
        failures.join("; ")
    )))
}

/// The newest manifest version a majority knows of, tombstones included.
pub async fn read_manifest(cluster: &Arc<Cluster>, bucket: &str, key: &str) -> Result<Option<Manifest>, GatewayError> {
    let pg = cluster.map().pg_of(bucket, key);
    let replicas = cluster.manifest_replicas(pg);
    let need = replicas.len() / 2 + 1;
    let mut calls: FuturesUnordered<_> = replicas
        .iter()
        .map(|&node| {
            let cluster = cluster.clone();
            let (bucket, key) = (bucket.to_string(), key.to_string());
            async move {
                let Some(addr) = cluster.addr(node) else {
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
            Err(e) => failures.push(format!("{node}: {e}")),
        }
    }
    if answers < need {
        return Err(GatewayError::Unavailable(format!(
            "{answers} of {} manifest replicas answered (need {need}): {}",
            replicas.len(),
            failures.join("; ")
        )));
    }
    Ok(newest)
}
