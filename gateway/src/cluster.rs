//! The gateway's view of the cluster: the placement map, the node client, and
//! which nodes are suspect right now.
//!
//! The map is the newest the gateway has followed from the catalog
//! (`crate::catalog`); [`Cluster::set_map`] only moves it forward, and keeps
//! the epoch that every node request carries equal to it. When a node refuses
//! a request for its old epoch, [`Cluster::catch_up`] waits (bounded) for the
//! newer map so that the request can be retried on it.
//!
//! A node becomes suspect when a call to it fails to connect or times out, or
//! when the background health probe (every `probe_interval`) gets no answer; it
//! stops being suspect when a probe succeeds. Suspicion is local to this
//! gateway and only steers choices (substitutes for writes, parity first for
//! reads); it never changes the map.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use sillok_placement::{NodeId, PgId, PlacementMap};
use sillok_storage_node::NodeClient;

use crate::catalog::GatewayCatalog;

pub struct Cluster {
    map: RwLock<Arc<PlacementMap>>,
    pub client: NodeClient,
    suspect: RwLock<HashMap<NodeId, Instant>>,
    /// Where newer maps come from (set once, at start).
    catalog: OnceLock<Arc<GatewayCatalog>>,
}

impl Cluster {
    pub fn new(map: PlacementMap, client: NodeClient) -> Arc<Self> {
        client.epochs().set_ours(map.epoch);
        Arc::new(Cluster {
            map: RwLock::new(Arc::new(map)),
            client,
            suspect: RwLock::new(HashMap::new()),
            catalog: OnceLock::new(),
        })
    }

    pub fn map(&self) -> Arc<PlacementMap> {
        self.map.read().expect("map lock").clone()
    }

    /// Moves to `map` if its epoch is newer; returns whether it did.
    pub fn set_map(&self, map: Arc<PlacementMap>) -> bool {
        let mut cur = self.map.write().expect("map lock");
        if map.epoch <= cur.epoch {
            return false;
        }
        tracing::info!(from = cur.epoch, to = map.epoch, "the gateway moved to a newer placement map");
        self.client.epochs().set_ours(map.epoch);
        *cur = map;
        true
    }

    /// Sets where [`Cluster::catch_up`] finds newer maps (once).
    pub fn set_catalog(&self, catalog: Arc<GatewayCatalog>) {
        let _ = self.catalog.set(catalog);
    }

    /// A node follows map `epoch`, newer than ours: waits (bounded) for it.
    /// Returns whether the gateway now has a map at least that new.
    pub async fn catch_up(&self, epoch: u64) -> bool {
        if self.map().epoch >= epoch {
            return true;
        }
        let Some(catalog) = self.catalog.get() else { return false };
        match catalog.catch_up(epoch).await {
            Some(map) => {
                self.set_map(map);
                self.map().epoch >= epoch
            }
            None => false,
        }
    }

    pub fn addr(&self, node: NodeId) -> Option<String> {
        self.map().topology.node(node).map(|n| n.addr.clone())
    }

    pub fn site(&self, node: NodeId) -> Option<String> {
        self.map().topology.node(node).map(|n| n.site.clone())
    }

    pub fn mark_suspect(&self, node: NodeId) {
        let mut s = self.suspect.write().expect("suspect lock");
        if s.insert(node, Instant::now()).is_none() {
            tracing::warn!(%node, "node marked suspect");
        }
    }

    pub fn mark_healthy(&self, node: NodeId) {
        if self.suspect.write().expect("suspect lock").remove(&node).is_some() {
            tracing::info!(%node, "node healthy again");
        }
    }

    pub fn is_suspect(&self, node: NodeId) -> bool {
        let map = self.map();
        if let Some(n) = map.topology.node(node) {
            if n.state != sillok_placement::NodeState::Up && n.state != sillok_placement::NodeState::Draining {
                return true;
            }
        }
        self.suspect.read().expect("suspect lock").contains_key(&node)
    }

    /// Sites all of whose nodes are suspect: treated as lost for this request.
    pub fn down_sites(&self) -> Vec<String> {
        let map = self.map();
        map.topology
            .sites
            .iter()
            .filter(|s| {
                let mut nodes = map.topology.nodes_in(&s.id).peekable();
                nodes.peek().is_some() && nodes.all(|n| self.is_suspect(n.id))
            })
            .map(|s| s.id.clone())
            .collect()
    }

    pub fn manifest_replicas(&self, pg: PgId) -> Vec<NodeId> {
        self.map().manifest_replicas(pg)
    }

    /// Every node of the map that holds or may hold data.
    pub fn all_nodes(&self) -> Vec<NodeId> {
        self.map().topology.nodes.iter().filter(|n| n.state != sillok_placement::NodeState::Out).map(|n| n.id).collect()
    }

    /// Records the outcome of a call: connection failures and timeouts make the
    /// node suspect.
    pub fn note_result<T>(&self, node: NodeId, r: &Result<T, sillok_storage_node::NodeError>) {
        if let Err(e) = r {
            self.note_error(node, e);
        }
    }

    pub fn note_error(&self, node: NodeId, e: &sillok_storage_node::NodeError) {
        use sillok_storage_node::NodeError as E;
        if matches!(e, E::Unreachable { .. } | E::Timeout { .. }) {
            self.mark_suspect(node);
        }
    }

    /// Probes every node's health route forever (until the task is dropped).
    pub async fn probe_forever(self: Arc<Self>, interval: Duration) {
        loop {
            let nodes = self.all_nodes();
            let probes = nodes.into_iter().map(|n| {
                let me = self.clone();
                async move {
                    let Some(addr) = me.addr(n) else { return };
                    let r =
                        tokio::time::timeout(interval.max(Duration::from_millis(200)), me.client.health(&addr)).await;
                    match r {
                        Ok(Ok(())) => me.mark_healthy(n),
                        _ => me.mark_suspect(n),
                    }
                }
            });
            futures::future::join_all(probes).await;
            tokio::time::sleep(interval).await;
        }
    }
}
