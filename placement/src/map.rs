//! The placement map: which k+m nodes hold each placement group, at which epoch.
//!
//! An object goes to PG `pg_of(bucket, key)`; slot i of that PG holds shard i.
//! The map is replaced as a whole (never edited in place) and every replacement
//! carries a larger epoch, so "newer" is always a comparison of two integers.
//!
//! A change that moves a PG's slots moves no data by itself: objects written
//! before it keep their shards and manifests on the PG's earlier nodes. The map
//! remembers those earlier rows ([`PlacementMap::previous`], newest first, at
//! most [`MAX_PREVIOUS_ROWS`] per PG), and readers that find no manifest on
//! the current row look on them. Moving the data home and forgetting the rows
//! is rebalancing's work.

use serde::{Deserialize, Serialize};

use crate::assign;
use crate::error::PlacementError;
use crate::profile::EcProfile;
use crate::topology::{Node, NodeId, NodeState, Topology};

/// A placement group number, `0..pg_count`.
pub type PgId = u32;

/// The default number of placement groups.
pub const DEFAULT_PG_COUNT: u32 = 1024;

/// Earlier slot rows kept per PG (see the module comment).
pub const MAX_PREVIOUS_ROWS: usize = 16;

/// The PG of an object: blake3 of `bucket \0 key`, first 8 bytes, modulo P.
/// Stable across versions of Sillok: changing it would orphan every object.
pub fn pg_of(bucket: &str, key: &str, pg_count: u32) -> PgId {
    let mut h = blake3::Hasher::new();
    h.update(bucket.as_bytes());
    h.update(&[0]);
    h.update(key.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d.as_bytes()[..8]);
    (u64::from_le_bytes(first) % u64::from(pg_count.max(1))) as PgId
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacementMap {
    /// Grows by at least one with every change.
    pub epoch: u64,
    pub profile: EcProfile,
    pub pg_count: u32,
    pub topology: Topology,
    /// `slots[pg][i]` is the node that holds shard i of the objects in `pg`.
    pub slots: Vec<Vec<NodeId>>,
    /// Earlier rows of PGs whose slots moved, newest first: where objects
    /// written before the move still are.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub previous: std::collections::BTreeMap<PgId, Vec<Vec<NodeId>>>,
}

impl PlacementMap {
    /// A first map for a topology, at epoch 1.
    pub fn new(topology: Topology, profile: EcProfile, pg_count: u32) -> Result<Self, PlacementError> {
        let slots = assign::assign(&topology, profile, pg_count, None)?;
        let map = PlacementMap { epoch: 1, profile, pg_count, topology, slots, previous: Default::default() };
        map.validate()?;
        Ok(map)
    }

    /// The map for a changed topology, at the next epoch, moving as few slots
    /// as balance requires. `self` is left untouched: nothing is half-applied.
    pub fn with_topology(&self, topology: Topology) -> Result<Self, PlacementError> {
        // Nodes deleted from the topology are shown to the assignment as Out, so
        // that it knows which site their slots leave (it moves fewer slots then).
        let mut seen = topology.clone();
        for n in &self.topology.nodes {
            if topology.node(n.id).is_none() && topology.sites.iter().any(|s| s.id == n.site) {
                seen.nodes.push(Node { state: NodeState::Out, ..n.clone() });
            }
        }
        let slots = assign::assign(&seen, self.profile, self.pg_count, Some(&self.slots))?;
        let mut previous = self.previous.clone();
        for (pg, (old, new)) in self.slots.iter().zip(&slots).enumerate() {
            let pg = pg as PgId;
            let rows = previous.entry(pg).or_default();
            if old != new && !rows.contains(old) {
                rows.insert(0, old.clone());
            }
            // A row that is current again is no longer an earlier one.
            rows.retain(|r| r != new);
            rows.truncate(MAX_PREVIOUS_ROWS);
            if rows.is_empty() {
                previous.remove(&pg);
            }
        }
        let map = PlacementMap {
            epoch: self.epoch + 1,
            profile: self.profile,
            pg_count: self.pg_count,
            topology,
            slots,
            previous,
        };
        map.validate()?;
        Ok(map)
    }

    /// The manifest replicas of each earlier row of a PG, newest first; nodes
    /// no longer in the topology are left out.
    pub fn previous_manifest_replicas(&self, pg: PgId) -> Vec<Vec<NodeId>> {
        self.previous
            .get(&pg)
            .map(|rows| {
                rows.iter()
                    .map(|row| {
                        self.manifest_replicas_of(row)
                            .into_iter()
                            .filter(|n| self.topology.node(*n).is_some())
                            .collect()
                    })
                    .filter(|v: &Vec<NodeId>| !v.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn pg_of(&self, bucket: &str, key: &str) -> PgId {
        pg_of(bucket, key, self.pg_count)
    }

    /// The k+m nodes of a PG, slot i first... (shard i lives on `slots(pg)[i]`).
    pub fn slots(&self, pg: PgId) -> &[NodeId] {
        &self.slots[pg as usize]
    }

    /// The nodes that keep the manifests of a PG: m+1 of its slot nodes, taken
    /// round-robin over the sites in slot order so they span as many sites as
    /// the PG does. A majority of them must hold a manifest for it to exist.
    pub fn manifest_replicas(&self, pg: PgId) -> Vec<NodeId> {
        self.manifest_replicas_of(self.slots(pg))
    }

    /// [`PlacementMap::manifest_replicas`] of any slot row.
    fn manifest_replicas_of(&self, slots: &[NodeId]) -> Vec<NodeId> {
        let want = self.profile.manifest_replicas().min(slots.len());
        // Group the slot nodes by site, keeping slot order inside each site.
        let mut by_site: Vec<(&str, Vec<NodeId>)> = Vec::new();
        for &n in slots {
            let site = self.topology.node(n).map(|x| x.site.as_str()).unwrap_or("");
            match by_site.iter_mut().find(|(s, _)| *s == site) {
                Some((_, v)) => v.push(n),
                None => by_site.push((site, vec![n])),
            }
        }
        let mut out = Vec::with_capacity(want);
        let mut round = 0;
        while out.len() < want {
            let mut took = false;
            for (_, nodes) in &by_site {
                if let Some(&n) = nodes.get(round)
                    && out.len() < want
                {
                    out.push(n);
                    took = true;
                }
            }
            if !took {
                break;
            }
            round += 1;
        }
        out
    }

    /// Checks every invariant listed at the top of the crate.
    pub fn validate(&self) -> Result<(), PlacementError> {
        self.profile.check()?;
        self.topology.check()?;
        if self.pg_count == 0 {
            return Err(PlacementError::InvalidTopology("the map needs at least one placement group".into()));
        }
        if self.slots.len() != self.pg_count as usize {
            return Err(PlacementError::InvalidMap(format!(
                "{} PGs declared but {} slot rows present",
                self.pg_count,
                self.slots.len()
            )));
        }
        let width = self.profile.width();
        for (pg, row) in self.slots.iter().enumerate() {
            if row.len() != width {
                return Err(PlacementError::InvalidMap(format!("PG {pg} has {} slots, needs {width}", row.len())));
            }
            let mut per_site: std::collections::BTreeMap<&str, usize> = Default::default();
            for (i, n) in row.iter().enumerate() {
                if row[..i].contains(n) {
                    return Err(PlacementError::InvalidMap(format!("PG {pg} uses node {n} twice")));
                }
                let node = self
                    .topology
                    .node(*n)
                    .ok_or_else(|| PlacementError::InvalidMap(format!("PG {pg} slot {i} names unknown node {n}")))?;
                if !node.state.holds_slots() && node.state != crate::topology::NodeState::Draining {
                    return Err(PlacementError::InvalidMap(format!(
                        "PG {pg} slot {i} is on node {n}, which is {:?}",
                        node.state
                    )));
                }
                *per_site.entry(node.site.as_str()).or_default() += 1;
            }
            for (site, count) in per_site {
                if count > self.profile.m as usize {
                    return Err(PlacementError::InvalidMap(format!(
                        "PG {pg} has {count} slots in site {site}; at most m={} are allowed so that losing the site keeps k",
                        self.profile.m
                    )));
                }
            }
        }
        Ok(())
    }
}
