//! Rebalancing: planned map changes, and when a move is finished.
//!
//! Owns: the plan of a staged change ([`plan`]: slots and estimated bytes
//! in and out per node, the slots to move against what bringing every node
//! exactly to its share would move, the balance of the result, the site
//! rule),
//! and the leader's pruning of earlier rows ([`rows_done`],
//! `prune_forever`): a PG's earlier rows are dropped once its data lives
//! on its current row.
//!
//! Data moves by the storage nodes' rebuild engine, which brings every PG to
//! what the current map says (the node of a moved slot copies its shard from
//! the earlier holder, verifies it and relocates the manifests to it), and
//! by anti-entropy, which brings manifests to the new replicas. Readers find
//! whatever has not moved yet through the earlier rows. A PG's earlier rows
//! are dropped only when, under the current map epoch:
//! - every in-service node of its current row has finished a rebuild
//!   listing (`checked_epoch`) and wants nothing in it, with no PG waiting
//!   for replicas; and
//! - every in-service manifest replica of its current row has finished an
//!   anti-entropy round (`synced_epoch`) in which every in-service peer of
//!   the PG's rows answered and nothing was left to pull.
//!
//! A node in a slot that is down holds the PG back. Nothing here deletes:
//! once no row names a node for a shard, the shard is the collector's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use serde::{Deserialize, Serialize};
use sillok_placement::{NodeId, NodeState, PgId, PlacementMap};

use crate::Proposal;
use crate::api::RepairReport;
use crate::state::Command;

/// The PGs with earlier rows whose data the reports show moved (see the
/// module comment).
pub fn rows_done(map: &PlacementMap, reports: &BTreeMap<NodeId, RepairReport>) -> Vec<PgId> {
    let in_service =
        |n: &NodeId| map.topology.node(*n).is_some_and(|n| matches!(n.state, NodeState::Up | NodeState::Draining));
    let slot_ok = |n: &NodeId, pg: PgId| -> bool {
        if !in_service(n) {
            return false;
        }
        reports
            .get(n)
            .is_some_and(|r| r.checked_epoch == map.epoch && r.pgs_waiting == 0 && !r.pgs.iter().any(|(p, _)| *p == pg))
    };
    let replica_ok = |n: &NodeId, pg: PgId| -> bool {
        !in_service(n) || reports.get(n).is_some_and(|r| r.synced_epoch == map.epoch && !r.sync_behind.contains(&pg))
    };
    map.previous
        .keys()
        .copied()
        .filter(|&pg| {
            map.slots(pg).iter().all(|n| slot_ok(n, pg)) && map.manifest_replicas(pg).iter().all(|n| replica_ok(n, pg))
        })
        .collect()
}

/// Runs on every replica; while this one leads, every `every` it drops the
/// earlier rows [`rows_done`] finds (one map change for all of them).
pub(crate) async fn prune_forever(sh: Arc<crate::server::Shared>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let leading = {
            let m = sh.raft.metrics().borrow().clone();
            m.state == ServerState::Leader && m.current_leader == Some(sh.id)
        };
        if !leading {
            continue;
        }
        let Some(map) = sh.sm.read(|st| st.catalog.map.clone()) else { continue };
        if map.previous.is_empty() {
            continue;
        }
        let reports: BTreeMap<NodeId, RepairReport> = sh
            .reports
            .lock()
            .expect("reports lock")
            .iter()
            .filter(|(_, (at, _))| at.elapsed() < Duration::from_secs(30))
            .filter_map(|(id, (_, r))| r.repair.clone().map(|rr| (*id, rr)))
            .collect();
        let pgs = rows_done(&map, &reports);
        if pgs.is_empty() {
            continue;
        }
        let n = pgs.len();
        let command = Command::DropEarlierRows { epoch: map.epoch, pgs };
        let p = Proposal { request_id: format!("prune-epoch-{}", map.epoch), command };
        match tokio::time::timeout(sh.commit_timeout, sh.raft.client_write(p)).await {
            Ok(Ok(r)) => match r.data {
                Ok(outcome) => tracing::info!(pgs = n, ?outcome, "earlier rows dropped: their data has moved"),
                Err(e) => tracing::info!(error = %e, "dropping earlier rows refused; will look again"),
            },
            Ok(Err(e)) => tracing::info!(error = %e, "dropping earlier rows: proposal failed; will retry"),
            Err(_) => tracing::info!("dropping earlier rows: no commit in time; will retry"),
        }
    }
}

/// What a staged change would do, per node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodePlan {
    pub id: NodeId,
    pub site: String,
    pub state: NodeState,
    pub weight: f64,
    pub slots_before: u64,
    pub slots_after: u64,
    pub slots_in: u64,
    pub slots_out: u64,
    /// Estimated from the node's reported shard bytes per slot.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The node's share of all slots after the change, against its weight's
    /// share as the placement rules allow it (a site holds at most its cap
    /// of each PG's slots, a node one; a node in every PG counts at one per
    /// PG), in percent.
    pub share_pct: f64,
    pub weight_share_pct: f64,
}

/// `sillok admin rebalance plan`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub from_epoch: u64,
    pub changes: Vec<String>,
    pub nodes: Vec<NodePlan>,
    pub slots_moved: u64,
    pub bytes_to_move: u64,
    /// The slots that nodes hold above their new weight share (as
    /// `NodePlan::weight_share_pct` counts it): what bringing every node
    /// exactly to its share must move. A map within a few percent of the
    /// shares may move less.
    pub min_slots_moved: u64,
    /// The largest deviation of a node's slot share from its weight share,
    /// in percent of the weight share.
    pub max_imbalance_pct: f64,
    /// Why the result breaks the placement rules, if it does (the plan
    /// cannot then be applied).
    pub refused: Option<String>,
    /// PGs that would then have earlier rows (their data moves).
    pub pgs_moving: u64,
    /// The PG count before and after (they differ when a split is staged).
    #[serde(default)]
    pub pgs_before: u32,
    #[serde(default)]
    pub pgs_after: u32,
}

/// Shares `total` among weighted items by weight, none above its cap
/// (water-filling: an item whose share would pass its cap gets the cap, and
/// the rest is shared again among the others).
fn fill<K: Ord + Copy>(items: &[(K, f64, f64)], total: f64) -> BTreeMap<K, f64> {
    let mut out: BTreeMap<K, f64> = BTreeMap::new();
    loop {
        let rest: Vec<&(K, f64, f64)> = items.iter().filter(|(k, _, _)| !out.contains_key(k)).collect();
        let left = (total - out.values().sum::<f64>()).max(0.0);
        let weights: f64 = rest.iter().map(|(_, w, _)| *w).sum::<f64>().max(f64::MIN_POSITIVE);
        let capped: Vec<(K, f64)> =
            rest.iter().filter(|(_, w, cap)| left * w / weights > *cap).map(|(k, _, cap)| (*k, *cap)).collect();
        if capped.is_empty() {
            for (k, w, _) in rest {
                out.insert(*k, left * w / weights);
            }
            return out;
        }
        out.extend(capped);
    }
}

/// Each slot-holding node's share of `total` slots by weight, as the
/// placement rules allow it: sites share the slots by their nodes' weights,
/// a site holding at most `site_cap` slots of each PG, and each site's
/// nodes share its slots by weight, a node holding at most one slot of
/// each PG. A node the map puts in every PG (`full`: the map spreads each
/// PG over as many sites as it can, so a node alone in its site is in all
/// of them) counts at one slot per PG, and the others share the rest.
fn ideal_slots(
    holders: &[&sillok_placement::Node],
    total: f64,
    pg_count: f64,
    site_cap: f64,
    full: &BTreeSet<NodeId>,
) -> BTreeMap<NodeId, f64> {
    let mut out: BTreeMap<NodeId, f64> = BTreeMap::new();
    let mut sites: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for n in holders {
        let e = sites.entry(n.site.as_str()).or_insert((0.0, site_cap * pg_count));
        if full.contains(&n.id) {
            out.insert(n.id, pg_count);
            e.1 -= pg_count;
        } else {
            e.0 += n.weight;
        }
    }
    let free = |site: &str| holders.iter().filter(|n| n.site == site && !full.contains(&n.id)).count() as f64;
    let site_items: Vec<(&str, f64, f64)> = sites
        .iter()
        .filter(|(s, _)| free(s) > 0.0)
        .map(|(s, (w, cap))| (*s, *w, cap.max(0.0).min(free(s) * pg_count)))
        .collect();
    let per_site = fill(&site_items, (total - out.values().sum::<f64>()).max(0.0));
    for (site, slots) in per_site {
        let items: Vec<(NodeId, f64, f64)> = holders
            .iter()
            .filter(|n| n.site == site && !full.contains(&n.id))
            .map(|n| (n.id, n.weight, pg_count))
            .collect();
        out.extend(fill(&items, slots));
    }
    out
}

/// The plan of going from `old` to `new` (`new` = `old` with the staged
/// changes); `bytes` is each node's reported shard bytes.
pub fn plan(old: &PlacementMap, new: &PlacementMap, changes: Vec<String>, bytes: &BTreeMap<NodeId, u64>) -> Plan {
    let pgs_before = old.pg_count;
    // A staged split: compare each child with its parent's row, which is
    // where its objects are (`PlacementMap::split`).
    let split;
    let old = if new.pg_count != old.pg_count {
        match old.split(new.pg_count) {
            Ok(m) => {
                split = m;
                &split
            }
            Err(e) => return Plan::refused(old, new, changes, e.to_string()),
        }
    } else {
        old
    };
    let count = |map: &PlacementMap| {
        let mut c: BTreeMap<NodeId, u64> = BTreeMap::new();
        for row in &map.slots {
            for n in row {
                *c.entry(*n).or_default() += 1;
            }
        }
        c
    };
    let (before, after) = (count(old), count(new));
    let total_bytes: u64 = bytes.values().sum();
    let total_slots: u64 = before.values().sum::<u64>().max(1);
    let per_slot = |n: NodeId| match (bytes.get(&n), before.get(&n)) {
        (Some(b), Some(s)) if *s > 0 => b / s,
        _ => total_bytes / total_slots,
    };
    let mut moves_in: BTreeMap<NodeId, (u64, u64)> = BTreeMap::new();
    let mut moves_out: BTreeMap<NodeId, (u64, u64)> = BTreeMap::new();
    let mut pgs_moving = BTreeSet::new();
    for (pg, (o, n)) in old.slots.iter().zip(&new.slots).enumerate() {
        for (a, b) in o.iter().zip(n) {
            if a != b {
                let est = per_slot(*a);
                let e = moves_out.entry(*a).or_default();
                e.0 += 1;
                e.1 += est;
                let e = moves_in.entry(*b).or_default();
                e.0 += 1;
                e.1 += est;
                pgs_moving.insert(pg);
            }
        }
    }
    let holders: Vec<&sillok_placement::Node> =
        new.topology.nodes.iter().filter(|n| matches!(n.state, NodeState::Up | NodeState::Down)).collect();
    let after_total: u64 = after.values().sum::<u64>().max(1);
    let site_cap = sillok_placement::assign::site_cap(&new.topology, new.profile) as f64;
    let full: BTreeSet<NodeId> =
        after.iter().filter(|(_, c)| **c >= u64::from(new.pg_count)).map(|(id, _)| *id).collect();
    let ideal_slots = ideal_slots(&holders, after_total as f64, f64::from(new.pg_count), site_cap, &full);
    let mut ids: BTreeSet<NodeId> = old.topology.nodes.iter().map(|n| n.id).collect();
    ids.extend(new.topology.nodes.iter().map(|n| n.id));
    let mut nodes = Vec::new();
    let (mut min_moved, mut worst) = (0u64, 0f64);
    for id in ids {
        let node = new.topology.node(id).or_else(|| old.topology.node(id)).expect("listed in one of the maps");
        let holds = holders.iter().any(|h| h.id == id);
        let ideal = ideal_slots.get(&id).copied().unwrap_or(0.0);
        let weight_share = ideal / after_total as f64;
        let (b, a) = (before.get(&id).copied().unwrap_or(0), after.get(&id).copied().unwrap_or(0));
        min_moved += (b as f64 - ideal).max(0.0).floor() as u64;
        if holds && weight_share > 0.0 {
            let share = a as f64 / after_total as f64;
            worst = worst.max(((share / weight_share) - 1.0).abs() * 100.0);
        }
        let (si, bi) = moves_in.get(&id).copied().unwrap_or_default();
        let (so, bo) = moves_out.get(&id).copied().unwrap_or_default();
        nodes.push(NodePlan {
            id,
            site: node.site.clone(),
            state: if new.topology.node(id).is_some() { node.state } else { NodeState::Out },
            weight: node.weight,
            slots_before: b,
            slots_after: a,
            slots_in: si,
            slots_out: so,
            bytes_in: bi,
            bytes_out: bo,
            share_pct: a as f64 * 100.0 / after_total as f64,
            weight_share_pct: weight_share * 100.0,
        });
    }
    Plan {
        from_epoch: old.epoch,
        changes,
        slots_moved: moves_out.values().map(|m| m.0).sum(),
        bytes_to_move: moves_out.values().map(|m| m.1).sum(),
        min_slots_moved: min_moved,
        max_imbalance_pct: worst,
        refused: new.validate().err().map(|e| e.to_string()),
        pgs_moving: pgs_moving.len() as u64,
        nodes,
        pgs_before,
        pgs_after: new.pg_count,
    }
}

impl Plan {
    fn refused(old: &PlacementMap, new: &PlacementMap, changes: Vec<String>, why: String) -> Plan {
        Plan {
            from_epoch: old.epoch,
            changes,
            nodes: Vec::new(),
            slots_moved: 0,
            bytes_to_move: 0,
            min_slots_moved: 0,
            max_imbalance_pct: 0.0,
            refused: Some(why),
            pgs_moving: 0,
            pgs_before: old.pg_count,
            pgs_after: new.pg_count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sillok_placement::{EcProfile, Node, Site, Topology};

    fn topo(sites: usize, per_site: usize) -> Topology {
        let mut t = Topology::default();
        for s in 0..sites {
            let site = format!("s{s}");
            t.sites.push(Site { id: site.clone() });
            for j in 0..per_site {
                let id = (s * per_site + j + 1) as u32;
                t.nodes.push(Node {
                    id: NodeId(id),
                    site: site.clone(),
                    addr: format!("127.0.0.1:{}", 7000 + id),
                    weight: 1.0,
                    state: NodeState::Up,
                });
            }
        }
        t
    }

    fn report(epoch: u64) -> RepairReport {
        RepairReport { checked_epoch: epoch, synced_epoch: epoch, ..Default::default() }
    }

    #[test]
    fn a_split_alone_plans_no_moves_and_counts_children_against_their_parents() {
        let old = PlacementMap::new(topo(3, 3), EcProfile::default(), 64).unwrap();
        let bytes: BTreeMap<NodeId, u64> = old.topology.nodes.iter().map(|n| (n.id, 64 << 20)).collect();
        let new = old.split(256).unwrap().with_topology(old.topology.clone()).unwrap();
        let p = plan(&old, &new, vec!["split".into()], &bytes);
        assert_eq!((p.pgs_before, p.pgs_after, p.slots_moved, p.bytes_to_move, p.pgs_moving), (64, 256, 0, 0, 0));
        assert!(p.refused.is_none() && p.max_imbalance_pct < 5.0);
        // With a node added too, the bytes per slot are the parent's shared
        // among its children: the estimate does not grow with the split.
        let mut t = old.topology.clone();
        t.nodes.push(Node { id: NodeId(10), site: "s0".into(), addr: "x:1".into(), weight: 1.0, state: NodeState::Up });
        let unsplit = plan(&old, &old.with_topology(t.clone()).unwrap(), vec![], &bytes);
        let split = plan(&old, &old.split(256).unwrap().with_topology(t).unwrap(), vec![], &bytes);
        let (a, b) = (unsplit.bytes_to_move as f64, split.bytes_to_move as f64);
        assert!(b > 0.0 && (b / a - 1.0).abs() < 0.25, "{a} unsplit against {b} split");
    }

    #[test]
    fn rows_are_done_only_when_every_slot_and_replica_says_so_under_this_epoch() {
        let old = PlacementMap::new(topo(3, 2), EcProfile::default(), 16).unwrap();
        let mut t = old.topology.clone();
        t.nodes.push(Node { id: NodeId(7), site: "s0".into(), addr: "x:1".into(), weight: 1.0, state: NodeState::Up });
        let new = old.with_topology(t).unwrap();
        let moved: Vec<PgId> = new.previous.keys().copied().collect();
        assert!(!moved.is_empty());
        let all: BTreeMap<NodeId, RepairReport> =
            new.topology.nodes.iter().map(|n| (n.id, report(new.epoch))).collect();
        assert_eq!(rows_done(&new, &all), moved);
        // A slot node still wanting shards in a PG holds that PG back.
        let pg = moved[0];
        let holder = new.slots(pg)[0];
        let mut some = all.clone();
        some.get_mut(&holder).unwrap().pgs = vec![(pg, 5)];
        assert!(!rows_done(&new, &some).contains(&pg));
        // So does a replica whose last anti-entropy round pulled there.
        let mut some = all.clone();
        some.get_mut(&new.manifest_replicas(pg)[0]).unwrap().sync_behind = vec![pg];
        assert!(!rows_done(&new, &some).contains(&pg));
        // And reports from the epoch before, and a missing report.
        let mut some = all.clone();
        some.insert(holder, report(old.epoch));
        assert!(!rows_done(&new, &some).contains(&pg));
        some.remove(&holder);
        assert!(!rows_done(&new, &some).contains(&pg));
    }

    #[test]
    fn ideal_shares_follow_the_site_and_node_caps() {
        // Three sites of three nodes, 4+2 (2 slots of each PG per site): a
        // node of weight 2 cannot draw its site above 2 slots per PG.
        let mut t = topo(3, 3);
        t.nodes[0].weight = 2.0;
        let nodes: Vec<&sillok_placement::Node> = t.nodes.iter().collect();
        let ideal = ideal_slots(&nodes, 64.0 * 6.0, 64.0, 2.0, &BTreeSet::new());
        assert!((ideal[&NodeId(1)] - 64.0).abs() < 1e-9, "{ideal:?}");
        assert!((ideal[&NodeId(2)] - 32.0).abs() < 1e-9, "{ideal:?}");
        assert!((ideal[&NodeId(4)] - 128.0 / 3.0).abs() < 1e-9, "{ideal:?}");
    }

    #[test]
    fn a_plan_counts_moves_both_ways_and_the_least_any_map_must_move() {
        let old = PlacementMap::new(topo(3, 2), EcProfile::default(), 64).unwrap();
        let mut t = old.topology.clone();
        t.sites.push(Site { id: "s3".into() });
        for id in 7..9 {
            t.nodes.push(Node {
                id: NodeId(id),
                site: "s3".into(),
                addr: format!("x:{id}"),
                weight: 1.0,
                state: NodeState::Up,
            });
        }
        let new = old.with_topology(t).unwrap();
        let bytes: BTreeMap<NodeId, u64> = (1..7).map(|i| (NodeId(i), 64 * 1000)).collect();
        let p = plan(&old, &new, vec!["add site s3".into()], &bytes);
        let ins: u64 = p.nodes.iter().map(|n| n.slots_in).sum();
        assert_eq!(ins, p.slots_moved);
        assert!(p.nodes.iter().filter(|n| n.id.0 <= 6).all(|n| n.slots_in == 0), "{p:?}");
        // 64 PGs x 6 slots over 8 equal nodes: 48 each, so 96 slots must go to the new two.
        assert_eq!(p.min_slots_moved, 96);
        assert!(p.slots_moved >= p.min_slots_moved);
        assert!(p.refused.is_none());
        // Each old node holds 64 slots of 1,000 bytes each.
        assert_eq!(p.bytes_to_move, p.slots_moved * 1000);

        // Draining one of site s0's nodes leaves the other in every PG: it
        // counts at one slot per PG, and the others share the remainder.
        let mut t = new.topology.clone();
        t.nodes[0].state = NodeState::Draining;
        let drained = new.with_topology(t).unwrap();
        let p = plan(&new, &drained, vec![], &bytes);
        let alone = p.nodes.iter().find(|n| n.id == NodeId(2)).unwrap();
        assert_eq!(alone.slots_after, 64);
        assert!((alone.weight_share_pct - 64.0 * 100.0 / 384.0).abs() < 1e-9, "{alone:?}");
        assert!(p.max_imbalance_pct < 5.0, "{p:?}");
    }
}
