//! Map deltas: a map change told as the rows it changed, so that what a
//! follower of the catalog receives, decodes, checks and stores is
//! proportional to the change, not to the map (a rebalance at 2^16 PGs moves
//! a few percent of the rows; sending the whole map to a thousand followers
//! costs gigabytes).
//!
//! Owns: [`MapDelta`], made by [`MapDelta::between`] two maps and applied by
//! [`MapDelta::apply`].
//!
//! Invariants:
//! - `MapDelta::between(a, b)?.apply(a) == b` for any two valid maps of the
//!   same shape (profile, PG count, PG function) with `b` newer. Maps of
//!   different shapes (a PG split) have no delta: they travel whole.
//! - A delta applies only to the map at its `from_epoch`; any other map is
//!   refused ([`DeltaError::NotItsBase`]), and the follower takes the whole
//!   map instead. A follower that already has the delta's epoch or a newer
//!   one has nothing to apply ([`MapDelta::epoch`] says so).
//! - What `apply` returns passes [`PlacementMap::validate`], given a base
//!   that did: the rows the delta names are checked in full, and the rows it
//!   does not name are checked again wherever the topology change can have
//!   made them wrong (rows naming a node that left, changed site or state),
//!   or all of them if the per-site cap fell.

use serde::{Deserialize, Serialize};

use crate::error::PlacementError;
use crate::map::{PgId, PlacementMap, RowCheck};
use crate::topology::{Node, NodeId, Site, Topology};

/// The difference between two maps of the same shape; see the module's
/// invariants. PG numbers go in lists of pairs, not maps: JSON maps cannot
/// be keyed by numbers in every reader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapDelta {
    /// The epoch of the map it applies to.
    pub from_epoch: u64,
    /// The epoch of the map it makes.
    pub epoch: u64,
    /// How the topology changed (`None`: it did not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<TopologyChange>,
    /// Slot rows that changed, each as it is now, in PG order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<(PgId, Vec<NodeId>)>,
    /// PGs whose earlier rows changed, each with all its earlier rows as
    /// they are now (none: the PG has no earlier row left), in PG order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous: Vec<(PgId, Vec<Vec<NodeId>>)>,
}

/// A topology change, told as the nodes it touched when that is enough to
/// remake the new topology (nodes changed in place, added at the end,
/// removed), else whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopologyChange {
    Nodes {
        /// The site list, if it changed (a few names).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sites: Option<Vec<Site>>,
        /// Nodes added or changed, as they are now, in the new list's order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        put: Vec<Node>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        removed: Vec<NodeId>,
    },
    Whole(Topology),
}

impl TopologyChange {
    fn between(old: &Topology, new: &Topology) -> TopologyChange {
        let put: Vec<Node> = new.nodes.iter().filter(|n| old.node(n.id) != Some(*n)).cloned().collect();
        let removed: Vec<NodeId> = old.nodes.iter().filter(|n| new.node(n.id).is_none()).map(|n| n.id).collect();
        let sites = (old.sites != new.sites).then(|| new.sites.clone());
        let change = TopologyChange::Nodes { sites, put, removed };
        if change.apply(old) == *new { change } else { TopologyChange::Whole(new.clone()) }
    }

    fn apply(&self, old: &Topology) -> Topology {
        match self {
            TopologyChange::Whole(t) => t.clone(),
            TopologyChange::Nodes { sites, put, removed } => {
                let mut t = old.clone();
                if let Some(sites) = sites {
                    t.sites = sites.clone();
                }
                t.nodes.retain(|n| !removed.contains(&n.id));
                for node in put {
                    match t.nodes.iter_mut().find(|n| n.id == node.id) {
                        Some(n) => *n = node.clone(),
                        None => t.nodes.push(node.clone()),
                    }
                }
                t
            }
        }
    }
}

/// Why a delta cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("the delta goes from epoch {from} but the map is at epoch {have}")]
    NotItsBase { from: u64, have: u64 },
    #[error("the delta names PG {pg}, but the map has {pg_count} PGs")]
    NoSuchPg { pg: PgId, pg_count: u32 },
    #[error("the map the delta makes is not valid: {0}")]
    Invalid(#[from] PlacementError),
}

impl MapDelta {
    /// The delta from `old` to `new`, or `None` if they differ in shape
    /// (profile, PG count or function) or `new` is not newer.
    pub fn between(old: &PlacementMap, new: &PlacementMap) -> Option<MapDelta> {
        if old.profile != new.profile
            || old.pg_count != new.pg_count
            || old.pg_function != new.pg_function
            || new.epoch <= old.epoch
            || old.slots.len() != new.slots.len()
        {
            return None;
        }
        let rows = (0..new.pg_count)
            .filter(|&pg| old.slots[pg as usize] != new.slots[pg as usize])
            .map(|pg| (pg, new.slots[pg as usize].clone()))
            .collect();
        let mut touched: Vec<PgId> = old.previous.keys().chain(new.previous.keys()).copied().collect();
        touched.sort_unstable();
        touched.dedup();
        let previous = touched
            .into_iter()
            .filter(|pg| old.previous.get(pg) != new.previous.get(pg))
            .map(|pg| (pg, new.previous.get(&pg).cloned().unwrap_or_default()))
            .collect();
        Some(MapDelta {
            from_epoch: old.epoch,
            epoch: new.epoch,
            topology: (old.topology != new.topology).then(|| TopologyChange::between(&old.topology, &new.topology)),
            rows,
            previous,
        })
    }

    /// The map `base` becomes (see the module's invariants for what is checked).
    pub fn apply(&self, base: &PlacementMap) -> Result<PlacementMap, DeltaError> {
        if base.epoch != self.from_epoch || self.epoch <= self.from_epoch {
            return Err(DeltaError::NotItsBase { from: self.from_epoch, have: base.epoch });
        }
        let named = self.rows.iter().map(|(pg, _)| pg).chain(self.previous.iter().map(|(pg, _)| pg));
        if let Some(&pg) = named.into_iter().find(|&&pg| pg >= base.pg_count) {
            return Err(DeltaError::NoSuchPg { pg, pg_count: base.pg_count });
        }
        let mut next = base.clone();
        next.epoch = self.epoch;
        if let Some(t) = &self.topology {
            next.topology = t.apply(&base.topology);
        }
        for (pg, row) in &self.rows {
            next.slots[*pg as usize] = row.clone();
        }
        for (pg, rows) in &self.previous {
            if rows.is_empty() {
                next.previous.remove(pg);
            } else {
                next.previous.insert(*pg, rows.clone());
            }
        }
        let check = RowCheck::of(&next)?;
        for (pg, row) in &self.rows {
            check.check(*pg, row)?;
        }
        if self.topology.is_some() {
            let before = RowCheck::of(base)?;
            if check.cap() < before.cap() {
                for (pg, row) in next.slots.iter().enumerate() {
                    check.check(pg as PgId, row)?;
                }
            } else {
                let changed: Vec<NodeId> = base
                    .topology
                    .nodes
                    .iter()
                    .filter(|n| next.topology.node(n.id).is_none_or(|m| m.site != n.site || m.state != n.state))
                    .map(|n| n.id)
                    .collect();
                if !changed.is_empty() {
                    for (pg, row) in next.slots.iter().enumerate() {
                        if row.iter().any(|n| changed.contains(n)) {
                            check.check(pg as PgId, row)?;
                        }
                    }
                }
            }
        }
        Ok(next)
    }

    /// PGs whose slots or earlier rows the delta changes.
    pub fn pgs(&self) -> usize {
        let mut pgs: Vec<PgId> =
            self.rows.iter().map(|(pg, _)| *pg).chain(self.previous.iter().map(|(pg, _)| *pg)).collect();
        pgs.sort_unstable();
        pgs.dedup();
        pgs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::EcProfile;
    use crate::topology::NodeState;

    fn topology(sites: u32, per_site: u32) -> Topology {
        let mut t = Topology::default();
        for s in 0..sites {
            t.sites.push(Site { id: format!("s{s}") });
            for i in 0..per_site {
                let id = s * per_site + i + 1;
                t.nodes.push(Node {
                    id: NodeId(id),
                    site: format!("s{s}"),
                    addr: format!("127.0.0.1:{}", 7000 + id),
                    weight: 1.0,
                    state: NodeState::Up,
                });
            }
        }
        t
    }

    fn with_node(t: &Topology, id: u32, site: &str) -> Topology {
        let mut t = t.clone();
        t.nodes.push(Node {
            id: NodeId(id),
            site: site.into(),
            addr: format!("127.0.0.1:{}", 7000 + id),
            weight: 1.0,
            state: NodeState::Up,
        });
        t
    }

    fn first() -> PlacementMap {
        PlacementMap::new(topology(3, 4), EcProfile { k: 4, m: 2 }, 256).unwrap()
    }

    #[test]
    fn a_delta_remakes_the_new_map_from_the_old() {
        let a = first();
        let b = a.with_topology(with_node(&a.topology, 100, "s1")).unwrap();
        let mut gone = b.topology.clone();
        gone.nodes.retain(|n| n.id != NodeId(2));
        let c = b.with_topology(gone).unwrap();
        let d = c.without_earlier_rows(&[0, 1, 2, 3]);
        for (old, new) in [(&a, &b), (&b, &c), (&c, &d), (&a, &d)] {
            let delta = MapDelta::between(old, new).expect("same shape");
            assert_eq!(&delta.apply(old).unwrap(), new);
            assert!(delta.rows.len() < new.pg_count as usize, "only changed rows travel");
            let text = serde_json::to_string(&delta).unwrap();
            assert_eq!(serde_json::from_str::<MapDelta>(&text).unwrap(), delta);
        }
        assert!(
            matches!(MapDelta::between(&b, &c).unwrap().topology, Some(TopologyChange::Nodes { ref removed, .. }) if removed == &[NodeId(2)])
        );
        // A topology that cannot be told as nodes changed in place goes whole.
        let mut reordered = c.clone();
        reordered.topology.nodes.reverse();
        reordered.epoch += 1;
        let delta = MapDelta::between(&c, &reordered).unwrap();
        assert!(matches!(delta.topology, Some(TopologyChange::Whole(_))));
        assert_eq!(delta.apply(&c).unwrap(), reordered);
        let only_previous = MapDelta::between(&c, &d).unwrap();
        assert!(only_previous.rows.is_empty() && only_previous.topology.is_none());
        assert!(only_previous.previous.iter().all(|(_, rows)| rows.is_empty()));
    }

    #[test]
    fn a_delta_is_far_smaller_than_its_map() {
        let a = PlacementMap::new(topology(3, 30), EcProfile { k: 4, m: 2 }, 4096).unwrap();
        let b = a.with_topology(with_node(&a.topology, 1000, "s0")).unwrap();
        let delta = MapDelta::between(&a, &b).unwrap();
        let (whole, told) = (serde_json::to_vec(&b).unwrap().len(), serde_json::to_vec(&delta).unwrap().len());
        assert!(told * 4 < whole, "delta {told} bytes, map {whole} bytes");
        let Some(TopologyChange::Nodes { put, removed, sites: None }) = &delta.topology else { panic!("{delta:?}") };
        assert_eq!((put.len(), removed.len()), (1, 0), "the topology change is the one node added");
        assert_eq!(delta.apply(&a).unwrap(), b);
    }

    #[test]
    fn a_split_or_an_older_map_has_no_delta() {
        let a = first();
        assert!(MapDelta::between(&a, &a.split(512).unwrap()).is_none());
        let b = a.with_topology(with_node(&a.topology, 100, "s1")).unwrap();
        assert!(MapDelta::between(&b, &a).is_none());
        assert!(MapDelta::between(&a, &a).is_none());
    }

    #[test]
    fn a_delta_applies_only_to_its_base() {
        let a = first();
        let b = a.with_topology(with_node(&a.topology, 100, "s1")).unwrap();
        let c = b.with_topology(with_node(&b.topology, 101, "s2")).unwrap();
        let bc = MapDelta::between(&b, &c).unwrap();
        assert!(matches!(bc.apply(&a), Err(DeltaError::NotItsBase { from: 2, have: 1 })));
        assert!(matches!(bc.apply(&c), Err(DeltaError::NotItsBase { .. })));
        let mut far = bc.clone();
        far.rows.push((256, c.slots[0].clone()));
        assert!(matches!(far.apply(&b), Err(DeltaError::NoSuchPg { pg: 256, .. })));
    }

    #[test]
    fn a_delta_that_makes_a_bad_map_is_refused() {
        let a = first();
        let b = a.with_topology(with_node(&a.topology, 100, "s1")).unwrap();
        // A changed row naming a node twice.
        let mut twice = MapDelta::between(&a, &b).unwrap();
        let n = twice.rows[0].1[0];
        twice.rows[0].1[1] = n;
        assert!(matches!(twice.apply(&a), Err(DeltaError::Invalid(_))));
        // A node taken out of the topology while unchanged rows still name it.
        let mut out = b.topology.clone();
        out.nodes.iter_mut().find(|x| x.id == NodeId(1)).unwrap().state = NodeState::Out;
        let lying = MapDelta {
            from_epoch: 2,
            epoch: 3,
            topology: Some(TopologyChange::Whole(out)),
            rows: vec![],
            previous: vec![],
        };
        assert!(matches!(lying.apply(&b), Err(DeltaError::Invalid(_))), "rows naming a node that left are checked");
        // A node moved to another site, making some PG hold three slots in one site.
        let mut moved = b.topology.clone();
        let on_s0: Vec<NodeId> = moved.nodes.iter().filter(|x| x.site == "s0").map(|x| x.id).collect();
        let row = b.slots.iter().find(|r| r.iter().filter(|n| on_s0.contains(n)).count() == 2).unwrap();
        let other = *row.iter().find(|n| !on_s0.contains(n)).unwrap();
        moved.nodes.iter_mut().find(|x| x.id == other).unwrap().site = "s0".into();
        let lying = MapDelta {
            from_epoch: 2,
            epoch: 3,
            topology: Some(TopologyChange::Whole(moved)),
            rows: vec![],
            previous: vec![],
        };
        assert!(matches!(lying.apply(&b), Err(DeltaError::Invalid(_))), "rows naming a node that moved are checked");
    }
}
