//! The gateway's view of the cluster: the placement map (read from the
//! catalog follower, its one owner), the node client, and which nodes are
//! suspect right now.
//!
//! A node becomes suspect when a call to it fails to connect or times out, or
//! when the background health probe (every `probe_interval`) gets no answer; it
//! stops being suspect when a probe succeeds. Suspicion is local to this
//! gateway and only steers choices (substitutes for writes, parity first for
//! reads); it never changes the map. How calls fan out to nodes, with their
//! deadlines and the stale-epoch retry, is `fanout`'s.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sillok_placement::{NodeId, PlacementMap};
use sillok_storage_node::NodeClient;

use crate::catalog::GatewayCatalog;
use crate::fanout::{Gathered, Need, Rest};

pub struct Cluster {
    /// The owner of the map (and of the rest of the catalog).
    pub catalog: Arc<GatewayCatalog>,
    client: NodeClient,
    suspect: RwLock<HashMap<NodeId, Instant>>,
    /// Each node's clock minus ours (ms), from the last probe that measured it.
    offsets: RwLock<HashMap<NodeId, i64>>,
    max_clock_offset: Duration,
    /// Whether writes are refused for the clock (for logging changes once).
    clock_refused: std::sync::atomic::AtomicBool,
    /// Lean manifest reads whose body replica was behind the majority, slow
    /// or down, so the manifest was fetched again from another replica.
    pub manifest_refetches: std::sync::atomic::AtomicU64,
    /// Node calls made by lean manifest reads (a majority per read while
    /// every replica answers in time; more when hedged).
    pub manifest_read_calls: std::sync::atomic::AtomicU64,
    /// Object reads that decoded at least one stripe from parity.
    pub degraded_reads: std::sync::atomic::AtomicU64,
    /// Shard opens and block reads given up at the read deadline.
    pub read_deadlines: std::sync::atomic::AtomicU64,
    /// Node calls that failed on a connect or node timeout.
    pub node_timeouts: std::sync::atomic::AtomicU64,
    /// GETs ended because their client took no bytes within the send timeout.
    pub client_send_timeouts: std::sync::atomic::AtomicU64,
    /// How long a lean manifest read waits for the replicas it asked before
    /// it asks one more (see `fanout::Need::hedge_after`), and at least how
    /// long it waits for the body replica once a majority answered. Under
    /// load on the 2-core test machine a thumbnail's manifest read takes a
    /// few milliseconds (p99 about 20 ms); a replica that hangs costs a read
    /// this much until the gateway suspects it.
    pub read_hedge: Duration,
    /// What hedged reads wait on (ticks every half `read_hedge`).
    pub hedge_clock: Arc<crate::hedge::HedgeClock>,
}

impl Cluster {
    pub fn new(
        catalog: Arc<GatewayCatalog>,
        client: NodeClient,
        max_clock_offset: Duration,
        read_hedge: Duration,
    ) -> Arc<Self> {
        Arc::new(Cluster {
            catalog,
            client,
            suspect: RwLock::new(HashMap::new()),
            offsets: RwLock::new(HashMap::new()),
            max_clock_offset,
            clock_refused: std::sync::atomic::AtomicBool::new(false),
            manifest_refetches: std::sync::atomic::AtomicU64::new(0),
            manifest_read_calls: std::sync::atomic::AtomicU64::new(0),
            degraded_reads: std::sync::atomic::AtomicU64::new(0),
            read_deadlines: std::sync::atomic::AtomicU64::new(0),
            node_timeouts: std::sync::atomic::AtomicU64::new(0),
            client_send_timeouts: std::sync::atomic::AtomicU64::new(0),
            read_hedge,
            hedge_clock: crate::hedge::HedgeClock::start(read_hedge / 2),
        })
    }

    /// This gateway's clock minus the storage nodes' (ms): the median of the
    /// probes' measurements, each the value nearest zero that its round trip
    /// allows (`sillok_model::clock::least_offset_ms`; `None` before any
    /// probe measured one).
    pub fn clock_offset_ms(&self) -> Option<i64> {
        let mut v: Vec<i64> = self.offsets.read().expect("offsets lock").values().map(|o| -o).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        Some(v[v.len() / 2])
    }

    /// `Err` (503, with the reason) while this gateway's clock is too far
    /// from the nodes' for its versions to be trusted: writes are refused.
    pub fn check_clock(&self) -> Result<(), crate::error::GatewayError> {
        let Some(off) = self.clock_offset_ms() else { return Ok(()) };
        if off.unsigned_abs() <= self.max_clock_offset.as_millis() as u64 {
            return Ok(());
        }
        Err(crate::error::GatewayError::Unavailable(format!(
            "this gateway's clock is {off} ms off the storage nodes' (the bound is {} ms): writes are refused until it is synchronised (NTP)",
            self.max_clock_offset.as_millis()
        )))
    }

    /// Records a probe's clock measurement, and logs when the gateway starts
    /// or stops refusing writes for its clock.
    fn note_clock(&self, node: NodeId, offset_ms: i64) {
        self.offsets.write().expect("offsets lock").insert(node, offset_ms);
        let refused = self.check_clock();
        let was = self.clock_refused.swap(refused.is_err(), std::sync::atomic::Ordering::AcqRel);
        match (&refused, was) {
            (Err(e), false) => tracing::error!(reason = %e, "refusing writes"),
            (Ok(()), true) => tracing::info!(
                offset_ms = self.clock_offset_ms().unwrap_or(0),
                "the clock is back within its bound; accepting writes"
            ),
            _ => {}
        }
    }

    /// The newest map the catalog follower has published.
    pub fn map(&self) -> Arc<PlacementMap> {
        self.catalog.map()
    }

    /// The node client for requests planned on `map`.
    pub fn client(&self, map: &PlacementMap) -> NodeClient {
        self.client.at_epoch(map.epoch)
    }

    /// A node follows map `epoch`: waits (bounded) until the catalog follower
    /// has it. Returns whether the gateway now has a map at least that new.
    pub async fn catch_up(&self, epoch: u64) -> bool {
        self.catalog.catch_up(epoch).await
    }

    pub fn addr(&self, node: NodeId) -> Option<String> {
        self.map().topology.node(node).map(|n| n.addr.clone())
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
        if let Some(n) = map.topology.node(node)
            && n.state != sillok_placement::NodeState::Up
            && n.state != sillok_placement::NodeState::Draining
        {
            return true;
        }
        self.suspect.read().expect("suspect lock").contains_key(&node)
    }

    /// How many nodes this gateway suspects now.
    pub fn suspect_count(&self) -> usize {
        self.suspect.read().expect("suspect lock").len()
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
        if matches!(e, E::Timeout { .. }) {
            self.node_timeouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if matches!(e, E::Unreachable { .. } | E::Timeout { .. }) {
            self.mark_suspect(node);
        }
    }

    /// Probes every node's health route forever (until the task is dropped):
    /// an answer clears suspicion and measures the node's clock offset, no
    /// answer within the interval (at least 200 ms) makes the node suspect,
    /// and a node on a newer map epoch is taken to the catalog follower
    /// (`catch_up`).
    pub async fn probe_forever(self: Arc<Self>, interval: Duration) {
        let deadline = interval.max(Duration::from_millis(200));
        loop {
            let map = self.map();
            let probe = |client: NodeClient, addr: String| async move {
                match tokio::time::timeout(deadline, client.health(&addr)).await {
                    Ok(r) => r,
                    Err(_) => Err(sillok_storage_node::NodeError::Timeout { addr, what: "health probe" }),
                }
            };
            let nodes = self.all_nodes();
            let answers = match crate::fanout::call_many(&self, &map, &nodes, Need::all(), Rest::Drop, probe).await {
                Gathered::Met { ok, .. } | Gathered::Short { ok, .. } => ok,
                Gathered::Stale(_) => Vec::new(),
            };
            let mut newest = map.epoch;
            for (node, health) in answers {
                self.mark_healthy(node);
                if let Some(offset) = health.clock_offset_ms {
                    self.note_clock(node, sillok_model::clock::least_offset_ms(offset, health.round_trip_ms));
                }
                newest = newest.max(health.epoch);
            }
            if newest > map.epoch {
                // One catch-up for the round, not awaited: the probes go on.
                let me = self.clone();
                tokio::spawn(async move { me.catch_up(newest).await });
            }
            tokio::time::sleep(interval).await;
        }
    }
}
