//! Manifests on a majority of a PG's manifest replicas.
//!
//! Write: send to all m+1 replicas in parallel; succeed once a majority have
//! stored it and those copies span at least two sites whenever the replicas
//! do, so losing any one site keeps a copy. A replica that holds a newer
//! version refuses the write; the write is then redone above that version
//! (see [`write_manifest`]), so the write that completes last wins.
//! Read: ask a majority of the replicas, wait for their answers (found or not
//! found), return the newest version. Because write and read majorities
//! intersect, a read after an acknowledged write always sees it (or something
//! newer). The read is hedged: a replica that fails is replaced at once by
//! one not asked yet, and one that is slow after `Cluster::read_hedge` (20 ms
//! by default, `--read-hedge-ms`); a
//! healthy cluster answers a thumbnail GET with two node calls out of three.
//! Only one replica (the body replica) is asked for the whole manifest; the
//! others send its summary (version, location generation, digest: 42 bytes),
//! so a thumbnail crosses the network once. When the body replica's copy is
//! not the newest the majority names (or it is slow or down), the whole
//! manifest is fetched from a replica that named the newest: a second round
//! trip, only then.
//!
//! Encoding: a manifest is encoded once per write (`wire::encode`) and the
//! same bytes go to every replica.
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

use sillok_model::clock;
use sillok_model::manifest::{Manifest, Version, wire};
use sillok_model::placement;
use sillok_placement::{NodeId, PlacementMap};
use sillok_storage_node::api::ManifestSummary;

use crate::cluster::Cluster;
use crate::error::GatewayError;
use crate::fanout::{self, Attempt, Gathered, Need, Rest};

/// How many times a write that found a newer version is redone above it.
pub const WIN_RETRIES: usize = 5;

/// How one attempt at a manifest write ended.
enum Written {
    /// A majority (spanning two sites) stored this version: it is the newest
    /// any quorum read will see, until a later write wins over it.
    Won,
    /// A replica holds a newer version (a write that completed first).
    Superseded(Version),
}

/// Writes `m` so that it wins, and returns it as written.
///
/// A write wins when a majority of the PG's current manifest replicas,
/// spanning two sites, stored its version and none of those that answered
/// holds a newer one. A replica that holds a newer version refuses the write
/// and names that version: the process's clock moves past
/// it (`sillok_model::clock`) and the manifest is written again with a new,
/// newer version (at most [`WIN_RETRIES`] times), so the write that completes
/// last wins whatever the writers' wall clocks say. Last-Modified, and a
/// head's S3 version id, move with the version when they were taken from it.
pub async fn write_manifest(cluster: &Arc<Cluster>, m: &Manifest) -> Result<Manifest, GatewayError> {
    cluster.check_clock()?;
    let mut m = m.clone();
    for _ in 0..=WIN_RETRIES {
        match fanout::on_current_map(cluster, |map| write_on(cluster, map, &m)).await? {
            Written::Won => return Ok(m),
            Written::Superseded(newer) => {
                tracing::debug!(bucket = %m.bucket, key = %m.key, ours = ?m.version, ?newer, "a newer version exists; writing above it");
                clock::observe(newer);
                let follows_version = m.last_modified_ms == m.version.millis();
                // A head's S3 version id is the version it is written at
                // (`versions`); a version record's id is fixed by its key.
                let id_follows = m.bucket != placement::VERSIONS && m.version_id.is_some_and(|id| id.at == m.version);
                m.version = Version::now();
                if follows_version {
                    m.last_modified_ms = m.version.millis();
                }
                if id_follows && let Some(id) = m.version_id.as_mut() {
                    id.at = m.version;
                }
            }
        }
    }
    Err(GatewayError::Unavailable(format!(
        "{}/{}: newer versions kept arriving while this write was retried {WIN_RETRIES} times",
        m.bucket, m.key
    )))
}

/// Writes `m` once, not redone above a newer version: `Ok(None)` when it
/// won, `Ok(Some(newer))` when a replica holds a newer version. For a change
/// made to the manifest it read (tags), which must be made again on the newer
/// manifest rather than written over it.
pub async fn write_manifest_unless_newer(
    cluster: &Arc<Cluster>,
    m: &Manifest,
) -> Result<Option<Version>, GatewayError> {
    cluster.check_clock()?;
    match fanout::on_current_map(cluster, |map| write_on(cluster, map, m)).await? {
        Written::Won => Ok(None),
        Written::Superseded(newer) => {
            clock::observe(newer);
            Ok(Some(newer))
        }
    }
}

/// One attempt on the current replicas.
async fn write_on(cluster: &Arc<Cluster>, map: Arc<PlacementMap>, m: &Manifest) -> Attempt<Written> {
    let replicas = map.manifest_replicas(placement::pg_of(&map, &m.bucket, &m.key));
    let need = Need::majority(replicas.len()).spanning(2);
    let encoded = bytes::Bytes::from(wire::encode(m));
    let put = |client: sillok_storage_node::NodeClient, addr: String| {
        let encoded = encoded.clone();
        async move { client.put_manifest_encoded(&addr, encoded).await }
    };
    match fanout::call_many(cluster, &map, &replicas, need, Rest::Finish, put).await {
        Gathered::Met { ok, .. } => {
            let newest = ok.iter().map(|(_, r)| r.current).max().unwrap_or(m.version);
            let stored: Vec<NodeId> = ok.iter().filter(|(_, r)| r.stored).map(|(n, _)| *n).collect();
            let sites: std::collections::BTreeSet<_> =
                stored.iter().filter_map(|n| map.topology.node(*n).map(|x| x.site.clone())).collect();
            let replica_sites: std::collections::BTreeSet<_> =
                replicas.iter().filter_map(|n| map.topology.node(*n).map(|x| x.site.clone())).collect();
            if newest > m.version {
                // Even when a majority stored ours: a replica that holds a
                // newer version (a write that failed its quorum but reached
                // it, say) would make quorum reads see that one instead.
                Attempt::Done(Ok(Written::Superseded(newest)))
            } else if stored.len() >= need.answers && sites.len() >= 2.min(replica_sites.len()) {
                Attempt::Done(Ok(Written::Won))
            } else {
                Attempt::Done(Err(GatewayError::Internal(format!(
                    "manifest replicas answered without storing and without a newer version ({}/{})",
                    m.bucket, m.key
                ))))
            }
        }
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

/// A majority of the current row's replicas, and, while the map remembers
/// earlier rows for the PG (a slot move that rebalancing has not finished),
/// those rows too, at the same time: a replica that joined the row or missed
/// a write before the move may hold an older version than an earlier row
/// does, until anti-entropy has copied it over. An earlier row that cannot
/// answer with a majority (its site is down, say) is left out rather than
/// failing the read: every write since the move went to the current row.
/// The newest answer wins; current-row replicas that answered with an older
/// version or none are repaired in the background (read repair).
async fn read_on(cluster: &Arc<Cluster>, map: Arc<PlacementMap>, bucket: &str, key: &str) -> Attempt<Option<Manifest>> {
    let pg = placement::pg_of(&map, bucket, key);
    let current = map.manifest_replicas(pg);
    let earlier = map.previous_manifest_replicas(pg);
    let (now, before) = futures::future::join(
        read_lean(cluster, &map, &current, bucket, key),
        futures::future::join_all(earlier.iter().map(|row| read_from(cluster, &map, row, bucket, key))),
    )
    .await;
    let answers = match now {
        Attempt::Done(Ok(a)) => a,
        Attempt::Done(Err(e)) => return Attempt::Done(Err(e)),
        Attempt::Stale(e) => return Attempt::Stale(e),
    };
    // Newest: the highest version, and of one version the highest location
    // generation (a repair moved shards without changing the version).
    let order = |m: &Manifest| (m.version, m.locations);
    let mut newest: Option<Manifest> = answers.iter().filter_map(|(_, m)| m.clone()).max_by_key(order);
    for row in before {
        match row {
            Attempt::Done(Ok(a)) => {
                for m in a.into_iter().filter_map(|(_, m)| m) {
                    if newest.as_ref().is_none_or(|n| order(&m) > order(n)) {
                        newest = Some(m);
                    }
                }
            }
            Attempt::Stale(e) => return Attempt::Stale(e),
            Attempt::Done(Err(e)) => {
                tracing::debug!(bucket, key, error = %e, "an earlier row of the PG did not answer")
            }
        }
    }
    if let Some(n) = &newest {
        let stale: Vec<NodeId> = answers
            .iter()
            .filter(|(_, m)| m.as_ref().is_none_or(|m| order(m) < order(n)))
            .map(|(node, _)| *node)
            .collect();
        if !stale.is_empty() {
            repair(cluster, &map, stale, n.clone());
        }
    }
    Attempt::Done(Ok(newest))
}

/// Sends `m` to replicas that answered a read with an older version or none.
fn repair(cluster: &Arc<Cluster>, map: &Arc<PlacementMap>, nodes: Vec<NodeId>, m: Manifest) {
    let client = cluster.client(map);
    let addrs: Vec<(NodeId, String)> =
        nodes.into_iter().filter_map(|n| map.topology.node(n).map(|x| (n, x.addr.clone()))).collect();
    tokio::spawn(async move {
        for (node, addr) in addrs {
            match client.put_manifest(&addr, &m).await {
                Ok(r) => tracing::debug!(%node, bucket = %m.bucket, key = %m.key, stored = r.stored, "read repair"),
                Err(e) => tracing::debug!(%node, bucket = %m.bucket, key = %m.key, error = %e, "read repair failed"),
            }
        }
    });
}

/// One replica's answer to a lean read: the whole manifest (the body
/// replica) or its summary (the others).
#[allow(clippy::large_enum_variant)]
enum Answer {
    // Unboxed: one short-lived answer per replica of a read; a box would be
    // an allocation per read for nothing.
    Whole(Option<Manifest>),
    Summary(Option<ManifestSummary>),
}

impl Answer {
    fn order(&self) -> Option<(Version, u64)> {
        match self {
            Answer::Whole(m) => m.as_ref().map(|m| (m.version, m.locations)),
            Answer::Summary(s) => s.as_ref().map(ManifestSummary::order),
        }
    }
}

/// The order in which a lean read asks the replicas: the body replica first
/// (one the gateway does not suspect, chosen by the key's placement hash so
/// that reads of different keys spread over the replicas), then the other
/// unsuspected ones, the suspected last. A hedged read starts as many as a
/// majority needs, from the front.
fn lean_order(cluster: &Cluster, replicas: &[NodeId], bucket: &str, key: &str) -> Vec<NodeId> {
    let (mut order, suspect): (Vec<NodeId>, Vec<NodeId>) =
        replicas.iter().copied().partition(|n| !cluster.is_suspect(*n));
    let spread = placement::placement_hash(bucket, key).rotate_left(17) as usize;
    if !order.is_empty() {
        let len = order.len();
        order.rotate_left(spread % len);
    }
    order.extend(suspect);
    order
}

/// A majority read of the current row, lean: the body replica sends the
/// whole manifest, the others its summary. Answers as [`read_from`] does:
/// each replica's manifest, as far as the read knows it. A replica whose
/// summary names the same version and location generation as the whole
/// manifest has that manifest (equal summaries, equal digests); one whose
/// summary names another version is given as `None`-or-older for read
/// repair: its exact copy is not needed, only that it is behind.
async fn read_lean(
    cluster: &Arc<Cluster>,
    map: &PlacementMap,
    replicas: &[NodeId],
    bucket: &str,
    key: &str,
) -> Attempt<Vec<(NodeId, Option<Manifest>)>> {
    let order = lean_order(cluster, replicas, bucket, key);
    let Some(&body_node) = order.first() else {
        return read_from(cluster, map, replicas, bucket, key).await;
    };
    // The hedge is also the least time the body replica is waited for once
    // a majority has answered, before the manifest is fetched elsewhere.
    let hedge = cluster.read_hedge;
    let need = Need::majority(replicas.len()).waiting_for(body_node, hedge).hedged(hedge);
    let body_addr = map.topology.node(body_node).map(|n| n.addr.clone());
    let (b, k): (Arc<str>, Arc<str>) = (bucket.into(), key.into());
    let ask = |client: sillok_storage_node::NodeClient, addr: String| {
        let (b, k, whole) = (b.clone(), k.clone(), body_addr.as_deref() == Some(addr.as_str()));
        let cluster = cluster.clone();
        async move {
            // Counted when started: a hedged read builds every call but starts only some.
            cluster.manifest_read_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if whole {
                client.get_manifest(&addr, &b, &k).await.map(Answer::Whole)
            } else {
                client.manifest_summary(&addr, &b, &k).await.map(Answer::Summary)
            }
        }
    };
    // The calls still running once the need is met finish in the background
    // (they are small): a call dropped mid-answer closes its connection, and
    // the next read would pay for a new one (measured: about one new
    // connection per four thumbnail GETs when they were dropped).
    let ok = match fanout::call_many(cluster, map, &order, need, Rest::Finish, ask).await {
        Gathered::Met { ok, .. } => ok,
        Gathered::Stale(epoch) => return Attempt::Stale(epoch),
        Gathered::Short { ok, failed } => {
            return Attempt::Done(Err(too_few_answers(ok.len(), replicas, need, &failed)));
        }
    };
    let newest_order = ok.iter().filter_map(|(_, a)| a.order()).max();
    let whole = ok.iter().find_map(|(_, a)| match a {
        Answer::Whole(m) => Some(m.clone()),
        Answer::Summary(_) => None,
    });
    // The newest whole manifest: the body replica's, unless it is behind the
    // majority (or did not answer in time).
    let newest: Option<Manifest> = match (newest_order, whole) {
        (None, _) => None,
        (Some(order), Some(Some(m))) if (m.version, m.locations) == order => Some(m),
        (Some(order), _) => {
            cluster.manifest_refetches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let holders: Vec<NodeId> = ok.iter().filter(|(_, a)| a.order() == Some(order)).map(|(n, _)| *n).collect();
            match fetch_whole(cluster, map, &holders, bucket, key, order).await {
                Attempt::Done(Ok(m)) => Some(m),
                Attempt::Done(Err(e)) => return Attempt::Done(Err(e)),
                Attempt::Stale(e) => return Attempt::Stale(e),
            }
        }
    };
    let answers = ok
        .into_iter()
        .map(|(node, a)| {
            let held = match (&newest, a) {
                (_, Answer::Whole(m)) => m,
                (Some(n), Answer::Summary(Some(s))) if s.order() == (n.version, n.locations) => Some(n.clone()),
                // Behind (or holding nothing): read repair only needs to know that.
                (_, Answer::Summary(_)) => None,
            };
            (node, held)
        })
        .collect();
    Attempt::Done(Ok(answers))
}

/// The whole manifest at exactly `order` from one of `holders` (the replicas
/// whose summaries named it), tried in turn.
async fn fetch_whole(
    cluster: &Arc<Cluster>,
    map: &PlacementMap,
    holders: &[NodeId],
    bucket: &str,
    key: &str,
    order: (Version, u64),
) -> Attempt<Manifest> {
    let mut last = String::from("no replica named it");
    for &node in holders {
        let (b, k): (Arc<str>, Arc<str>) = (bucket.into(), key.into());
        let get = |client: sillok_storage_node::NodeClient, addr: String| {
            let (b, k) = (b.clone(), k.clone());
            async move { client.get_manifest(&addr, &b, &k).await }
        };
        match fanout::call_many(cluster, map, &[node], Need::majority(1), Rest::Drop, get).await {
            Gathered::Met { ok, .. } => match ok.into_iter().next() {
                // A newer write may have landed since the summary: as new or newer serves.
                Some((_, Some(m))) if (m.version, m.locations) >= order => return Attempt::Done(Ok(m)),
                _ => last = format!("{node} no longer holds that version"),
            },
            Gathered::Stale(epoch) => return Attempt::Stale(epoch),
            Gathered::Short { failed, .. } => last = Gathered::<()>::describe(&failed),
        }
    }
    Attempt::Done(Err(GatewayError::Unavailable(format!(
        "{bucket}/{key}: the newest manifest a majority named could not be fetched: {last}"
    ))))
}

/// A majority read of one replica set: every answer it got.
async fn read_from(
    cluster: &Arc<Cluster>,
    map: &PlacementMap,
    replicas: &[NodeId],
    bucket: &str,
    key: &str,
) -> Attempt<Vec<(NodeId, Option<Manifest>)>> {
    let need = Need::majority(replicas.len());
    let (bucket, key): (Arc<str>, Arc<str>) = (bucket.into(), key.into());
    let get = |client: sillok_storage_node::NodeClient, addr: String| {
        let (bucket, key) = (bucket.clone(), key.clone());
        async move { client.get_manifest(&addr, &bucket, &key).await }
    };
    match fanout::call_many(cluster, map, replicas, need, Rest::Finish, get).await {
        Gathered::Met { ok, .. } => Attempt::Done(Ok(ok)),
        Gathered::Stale(epoch) => Attempt::Stale(epoch),
        Gathered::Short { ok, failed } => Attempt::Done(Err(too_few_answers(ok.len(), replicas, need, &failed))),
    }
}

/// A manifest read that did not hear from a majority of `replicas`.
fn too_few_answers(
    answered: usize,
    replicas: &[NodeId],
    need: Need,
    failed: &[(NodeId, sillok_storage_node::NodeError)],
) -> GatewayError {
    GatewayError::Unavailable(format!(
        "{answered} of {} manifest replicas answered (need {}): {}",
        replicas.len(),
        need.answers,
        Gathered::<()>::describe(failed)
    ))
}
