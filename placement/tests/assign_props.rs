//! Property tests of the slot assignment (`sillok_placement::assign`).
//!
//! The expectations are derived here independently of the implementation: the
//! per-site water level (how many slots of each PG a site holds), the site
//! totals the weights ask for, and lower bounds on the slots a change must move.

use proptest::prelude::*;
use sillok_placement::assign::{assign, check_fit, moved_slots};
use sillok_placement::{EcProfile, Node, NodeId, NodeState, PlacementError, PlacementMap, Site, Topology};
use std::collections::BTreeMap;

// ---------------------------------------------------------------- helpers

/// `sites[s]` lists the (weight, state) of the nodes of site `s{s}`; node ids
/// are handed out in order from 1.
fn topology(sites: &[Vec<(f64, NodeState)>]) -> Topology {
    let mut t = Topology::default();
    let mut next = 1;
    for (si, nodes) in sites.iter().enumerate() {
        let site = format!("s{si}");
        t.sites.push(Site { id: site.clone() });
        for &(weight, state) in nodes {
            t.nodes.push(Node { id: NodeId(next), site: site.clone(), addr: format!("10.0.{si}.{next}:7000"), weight, state });
            next += 1;
        }
    }
    t
}

fn in_service(t: &Topology) -> Vec<&Node> {
    t.nodes.iter().filter(|n| n.effective_weight() > 0.0).collect()
}

/// What the topology asks of every PG: (base slots per site, whether the site
/// may hold one more), or None when the profile cannot fit.
fn expected_shape(t: &Topology, p: EcProfile) -> Option<BTreeMap<String, (usize, bool)>> {
    let (n, m) = (p.width(), p.m as usize);
    let caps: BTreeMap<String, usize> = t
        .sites
        .iter()
        .map(|s| (s.id.clone(), in_service(t).iter().filter(|x| x.site == s.id).count().min(m)))
        .collect();
    if caps.values().sum::<usize>() < n || caps.values().filter(|&&c| c > 0).count() < n.div_ceil(m) {
        return None;
    }
    let level = (0..=m).filter(|&l| caps.values().map(|&c| c.min(l)).sum::<usize>() <= n).max().unwrap();
    Some(caps.into_iter().map(|(s, c)| (s, (c.min(level), c > level))).collect())
}

/// Each site's ideal slot total: its weight share, clamped into what the
/// per-PG shape allows, with the clamped-off amount shared by the others.
fn ideal_site_totals(t: &Topology, p: EcProfile, pgs: u32, shape: &BTreeMap<String, (usize, bool)>) -> BTreeMap<String, f64> {
    let pgs = f64::from(pgs);
    let weight = |s: &str| in_service(t).iter().filter(|x| x.site == s).map(|x| x.effective_weight()).sum::<f64>();
    let bounds: BTreeMap<&str, (f64, f64)> = shape
        .iter()
        .map(|(s, &(b, e))| (s.as_str(), (b as f64 * pgs, (b + usize::from(e)) as f64 * pgs)))
        .collect();
    let total = p.width() as f64 * pgs;
    // Fix the sites whose share falls outside their bounds, one pass at a time.
    let mut fixed: BTreeMap<&str, f64> = BTreeMap::new();
    loop {
        let free: Vec<&str> = bounds.keys().copied().filter(|s| !fixed.contains_key(s)).collect();
        let left = total - fixed.values().sum::<f64>();
        let w: f64 = free.iter().map(|s| weight(s)).sum();
        let share = |s: &str| if w > 0.0 { left * weight(s) / w } else { 0.0 };
        // Fix the single worst violator (largest relative excursion), then redo.
        let worst = free
            .iter()
            .filter_map(|&s| {
                let (lo, hi) = bounds[s];
                let v = share(s);
                if v > hi + 1e-9 {
                    Some((v - hi, s, hi))
                } else if v < lo - 1e-9 {
                    Some((lo - v, s, lo))
                } else {
                    None
                }
            })
            .max_by(|a, b| a.0.total_cmp(&b.0));
        match worst {
            Some((_, s, v)) => {
                fixed.insert(s, v);
            }
            None => {
                let mut out: BTreeMap<String, f64> = fixed.iter().map(|(s, v)| (s.to_string(), *v)).collect();
                for s in free {
                    out.insert(s.to_string(), share(s));
                }
                return out;
            }
        }
    }
}

fn tolerance(ideal: f64) -> f64 {
    (0.05 * ideal).max(1.0) + 1e-6
}

fn counts(slots: &[Vec<NodeId>]) -> BTreeMap<NodeId, usize> {
    let mut c = BTreeMap::new();
    for row in slots {
        for &n in row {
            *c.entry(n).or_default() += 1;
        }
    }
    c
}

/// Checks validity, per-PG site spread and balance; returns a description of
/// the first problem found.
fn check_assignment(t: &Topology, p: EcProfile, pgs: u32, slots: &[Vec<NodeId>]) -> Result<(), String> {
    let shape = expected_shape(t, p).ok_or("assignment made for a profile that does not fit")?;
    if slots.len() != pgs as usize {
        return Err(format!("{} rows for {pgs} PGs", slots.len()));
    }
    let site_of: BTreeMap<NodeId, &str> = t.nodes.iter().map(|n| (n.id, n.site.as_str())).collect();
    for (pg, row) in slots.iter().enumerate() {
        if row.len() != p.width() {
            return Err(format!("PG {pg} has {} slots", row.len()));
        }
        let mut per_site: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, id) in row.iter().enumerate() {
            if row[..i].contains(id) {
                return Err(format!("PG {pg} uses {id} twice"));
            }
            let n = t.node(*id).ok_or(format!("PG {pg} names unknown node {id}"))?;
            if n.effective_weight() <= 0.0 {
                return Err(format!("PG {pg} uses {id}, which is {:?} with weight {}", n.state, n.weight));
            }
            *per_site.entry(site_of[id]).or_default() += 1;
        }
        for (s, &(base, extra)) in &shape {
            let c = per_site.get(s.as_str()).copied().unwrap_or(0);
            if c > p.m as usize || c < base || c > base + usize::from(extra) {
                return Err(format!("PG {pg} has {c} slots in {s}; expected {base}{}", if extra { " or one more" } else { "" }));
            }
        }
    }
    // Balance: site totals against their (clamped) weight share; nodes against
    // their share of their site's actual total, where no node of the site is
    // capped at one slot per PG; nodes against their global share too (two
    // roundings, so up to 1 + w_i/W_s slots off when the 5% is smaller).
    let ideal = ideal_site_totals(t, p, pgs, &shape);
    let c = counts(slots);
    for s in &t.sites {
        let members: Vec<&Node> = in_service(t).into_iter().filter(|n| n.site == s.id).collect();
        let total: usize = members.iter().map(|n| c.get(&n.id).copied().unwrap_or(0)).sum();
        let want = ideal[&s.id];
        if (total as f64 - want).abs() > tolerance(want) {
            return Err(format!("site {} holds {total} slots; its share is {want:.2}", s.id));
        }
        let w: f64 = members.iter().map(|n| n.effective_weight()).sum();
        let capped = members.iter().any(|n| total as f64 * n.effective_weight() / w > f64::from(pgs) - 1.0);
        if capped {
            continue;
        }
        for n in &members {
            let got = c.get(&n.id).copied().unwrap_or(0) as f64;
            let local = total as f64 * n.effective_weight() / w;
            if (got - local).abs() > tolerance(local) {
                return Err(format!("node {} of {} holds {got} slots; its share of the site's {total} is {local:.2}", n.id, s.id));
            }
            let global = want * n.effective_weight() / w;
            if (got - global).abs() > (0.05 * global).max(1.0 + n.effective_weight() / w) + 1e-6 {
                return Err(format!("node {} of {} holds {got} slots; its weight share is {global:.2}", n.id, s.id));
            }
        }
    }
    for n in &t.nodes {
        if n.effective_weight() <= 0.0 && c.contains_key(&n.id) {
            return Err(format!("node {} ({:?}) holds slots", n.id, n.state));
        }
    }
    Ok(())
}

/// A lower bound on the slots any assignment reaching the new counts must move
/// from `old`: every slot of a node that leaves service, plus, per site, what
/// its staying nodes must lose: at least their individual drops, and at least
/// what the site must shed after refilling the PGs where it fell below its
/// base (those slots cannot leave the site).
fn removal_lower_bound(t: &Topology, p: EcProfile, old: &[Vec<NodeId>], new: &[Vec<NodeId>]) -> usize {
    let shape = expected_shape(t, p).unwrap();
    let (co, cn) = (counts(old), counts(new));
    let leaving: usize = co.iter().filter(|(id, _)| t.node(**id).is_none_or(|n| n.effective_weight() <= 0.0)).map(|(_, c)| c).sum();
    let mut bound = leaving;
    for s in &t.sites {
        let members: Vec<NodeId> = in_service(t).iter().filter(|n| n.site == s.id).map(|n| n.id).collect();
        let get = |c: &BTreeMap<NodeId, usize>, id: &NodeId| c.get(id).copied().unwrap_or(0);
        let drops: usize = members.iter().map(|id| get(&co, id).saturating_sub(get(&cn, id))).sum();
        let old_total: usize = members.iter().map(|id| get(&co, id)).sum();
        let new_total: usize = members.iter().map(|id| get(&cn, id)).sum();
        let base = shape[&s.id].0;
        let forced: usize = old.iter().map(|row| base.saturating_sub(row.iter().filter(|id| members.contains(id)).count())).sum();
        bound += drops.max((old_total + forced).saturating_sub(new_total));
    }
    bound
}

fn gains(old: &[Vec<NodeId>], new: &[Vec<NodeId>]) -> usize {
    let (co, cn) = (counts(old), counts(new));
    cn.iter().map(|(id, &c)| c.saturating_sub(co.get(id).copied().unwrap_or(0))).sum()
}

// ---------------------------------------------------------------- strategies

const PROFILES: [EcProfile; 6] = [
    EcProfile { k: 4, m: 2 },
    EcProfile { k: 4, m: 2 },
    EcProfile { k: 4, m: 2 },
    EcProfile { k: 8, m: 4 },
    EcProfile { k: 2, m: 1 },
    EcProfile { k: 6, m: 3 },
];

fn state() -> impl Strategy<Value = NodeState> {
    prop_oneof![
        16 => Just(NodeState::Up),
        2 => Just(NodeState::Down),
        1 => Just(NodeState::Draining),
        1 => Just(NodeState::Out),
    ]
}

fn sites_strategy() -> impl Strategy<Value = Vec<Vec<(f64, NodeState)>>> {
    prop::collection::vec(prop::collection::vec((0.5f64..4.0, state()), 1..=20), 3..=8)
}

fn pg_count() -> impl Strategy<Value = u32> {
    prop_oneof![Just(1024u32), Just(256u32), Just(97u32)]
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(config())]

    /// A fresh assignment is valid, spreads every PG as evenly as the sites
    /// allow, balances by weight, and is a fixed point of itself. Topologies the
    /// profile does not fit are refused with a message naming every site.
    #[test]
    fn fresh_assignment_is_valid_balanced_and_stable(
        sites in sites_strategy(), pi in 0..PROFILES.len(), pgs in pg_count(),
    ) {
        let t = topology(&sites);
        let p = PROFILES[pi];
        match assign(&t, p, pgs, None) {
            Ok(slots) => {
                prop_assert!(expected_shape(&t, p).is_some(), "accepted a profile that does not fit");
                if let Err(e) = check_assignment(&t, p, pgs, &slots) {
                    return Err(TestCaseError::fail(e));
                }
                let again = assign(&t, p, pgs, Some(&slots)).unwrap();
                prop_assert_eq!(moved_slots(&slots, &again), 0, "re-running on its own output moved slots");
                prop_assert_eq!(&assign(&t, p, pgs, None).unwrap(), &slots, "not deterministic");
            }
            Err(PlacementError::ProfileDoesNotFit { reason, .. }) => {
                prop_assert!(expected_shape(&t, p).is_none(), "refused a profile that fits: {}", reason);
                for s in &t.sites {
                    prop_assert!(reason.contains(&format!("{} (", s.id)), "message does not name {}: {}", s.id, reason);
                }
            }
            Err(e) => return Err(TestCaseError::fail(format!("unexpected error {e}"))),
        }
    }

    /// Adding one node moves at most 1.25x the slots balance requires (the sum
    /// over nodes of what each gains).
    #[test]
    fn adding_a_node_moves_little(
        sites in sites_strategy(), pi in 0..PROFILES.len(), pgs in pg_count(),
        at in any::<prop::sample::Index>(), weight in 0.5f64..4.0,
    ) {
        let t = topology(&sites);
        let p = PROFILES[pi];
        prop_assume!(check_fit(&t, p).is_ok());
        let old = assign(&t, p, pgs, None).unwrap();
        let mut t2 = t.clone();
        let site = t.sites[at.index(t.sites.len())].id.clone();
        let id = NodeId(t.nodes.iter().map(|n| n.id.0).max().unwrap_or(0) + 1);
        t2.nodes.push(Node { id, site, addr: "10.9.9.9:7000".into(), weight, state: NodeState::Up });
        let new = assign(&t2, p, pgs, Some(&old)).unwrap();
        if let Err(e) = check_assignment(&t2, p, pgs, &new) {
            return Err(TestCaseError::fail(e));
        }
        let (moved, need) = (moved_slots(&old, &new), gains(&old, &new));
        prop_assert!(moved as f64 <= 1.25 * need as f64, "moved {} slots; balance requires {}", moved, need);
    }

    /// Taking one node out of service moves its slots and at most 5% more than
    /// reaching the new balance forces (see `removal_lower_bound`); when nothing
    /// beyond its own slots is forced, that is at most 5% more than its slots.
    #[test]
    fn removing_a_node_moves_little(
        sites in sites_strategy(), pi in 0..PROFILES.len(), pgs in pg_count(),
        which in any::<prop::sample::Index>(), out in any::<bool>(),
    ) {
        let t = topology(&sites);
        let p = PROFILES[pi];
        prop_assume!(check_fit(&t, p).is_ok());
        let old = assign(&t, p, pgs, None).unwrap();
        let live: Vec<NodeId> = in_service(&t).iter().map(|n| n.id).collect();
        let victim = live[which.index(live.len())];
        let mut t2 = t.clone();
        if out {
            t2.nodes.iter_mut().find(|n| n.id == victim).unwrap().state = NodeState::Out;
        } else {
            t2.nodes.retain(|n| n.id != victim);
        }
        prop_assume!(check_fit(&t2, p).is_ok());
        let new = assign(&t2, p, pgs, Some(&old)).unwrap();
        if let Err(e) = check_assignment(&t2, p, pgs, &new) {
            return Err(TestCaseError::fail(e));
        }
        let had = counts(&old)[&victim];
        let moved = moved_slots(&old, &new);
        let bound = removal_lower_bound(&t2, p, &old, &new);
        prop_assert!(bound >= had);
        prop_assert!(moved as f64 <= 1.05 * bound as f64, "moved {} slots; the node had {}, the lower bound is {}", moved, had, bound);
    }
}

// ---------------------------------------------------------------- examples

fn up(weights: &[&[f64]]) -> Topology {
    topology(&weights.iter().map(|s| s.iter().map(|&w| (w, NodeState::Up)).collect()).collect::<Vec<_>>())
}

#[test]
fn refuses_a_site_with_too_few_nodes_and_names_the_sites() {
    let mut t = up(&[&[1.0], &[1.0, 1.0], &[1.0, 1.0]]);
    for (s, name) in t.sites.iter_mut().zip(["a", "b", "c"]) {
        s.id = name.into();
    }
    for (n, site) in t.nodes.iter_mut().zip(["a", "b", "b", "c", "c"]) {
        n.site = site.into();
    }
    let err = assign(&t, EcProfile { k: 4, m: 2 }, 64, None).unwrap_err();
    let PlacementError::ProfileDoesNotFit { reason, .. } = &err else { panic!("{err}") };
    assert!(reason.contains("at most 5"), "{reason}");
    assert!(reason.contains("a (1 node), b (2 nodes), c (2 nodes)"), "{reason}");
    assert!(reason.contains("m=2"), "{reason}");
}

#[test]
fn refuses_too_few_sites() {
    let t = up(&[&[1.0; 10], &[1.0; 10]]);
    let err = assign(&t, EcProfile { k: 4, m: 2 }, 64, None).unwrap_err();
    let PlacementError::ProfileDoesNotFit { reason, .. } = &err else { panic!("{err}") };
    assert!(reason.contains("at least 3 sites"), "{reason}");
    assert!(reason.contains("s0 (10 nodes), s1 (10 nodes)"), "{reason}");
    // A third site whose only node is out does not count.
    let mut t = up(&[&[1.0; 10], &[1.0; 10], &[1.0]]);
    t.nodes.last_mut().unwrap().state = NodeState::Out;
    let err = assign(&t, EcProfile { k: 4, m: 2 }, 64, None).unwrap_err();
    assert!(err.to_string().contains("s2 (0 nodes)"), "{err}");
    // 2+1 needs three sites too; 8+4 over three sites needs four nodes in each.
    assert!(matches!(assign(&up(&[&[1.0; 3], &[1.0; 3]]), EcProfile { k: 2, m: 1 }, 8, None), Err(PlacementError::ProfileDoesNotFit { .. })));
    let err = assign(&up(&[&[1.0; 4], &[1.0; 4], &[1.0; 3]]), EcProfile { k: 8, m: 4 }, 8, None).unwrap_err();
    assert!(err.to_string().contains("at most 11"), "{err}");
}

#[test]
fn removing_a_node_from_a_balanced_three_site_cluster_moves_only_its_slots() {
    // 4+2 over 3 sites: every site holds exactly 2 slots of every PG, so a lost
    // node's slots stay in its site and nothing else has to move.
    let t = up(&[&[1.0, 2.0, 1.5, 1.0], &[1.0, 1.0, 1.0], &[3.0, 1.0, 1.0, 2.0, 1.0]]);
    let p = EcProfile::default();
    let old = assign(&t, p, 1024, None).unwrap();
    for victim in t.nodes.iter().map(|n| n.id) {
        let mut t2 = t.clone();
        t2.nodes.iter_mut().find(|n| n.id == victim).unwrap().state = NodeState::Out;
        let new = assign(&t2, p, 1024, Some(&old)).unwrap();
        check_assignment(&t2, p, 1024, &new).unwrap();
        assert_eq!(moved_slots(&old, &new), counts(&old)[&victim], "removing {victim}");
    }
}

#[test]
fn a_large_cluster_is_assigned_quickly() {
    // 8 sites x 20 nodes, P = 1024: the size the issue asks to be fast. The
    // bound is loose on purpose (debug builds on slow CI machines); the real
    // numbers are in the crate's docs.
    let sites: Vec<Vec<f64>> = (0..8).map(|s| (0..20).map(|i| 1.0 + ((s * 20 + i) % 7) as f64 * 0.5).collect()).collect();
    let refs: Vec<&[f64]> = sites.iter().map(Vec::as_slice).collect();
    let t = up(&refs);
    let p = EcProfile::default();
    let start = std::time::Instant::now();
    let old = assign(&t, p, 1024, None).unwrap();
    let fresh = start.elapsed();
    let mut t2 = t.clone();
    t2.nodes.push(Node { id: NodeId(1000), site: "s3".into(), addr: "x:1".into(), weight: 2.0, state: NodeState::Up });
    let start = std::time::Instant::now();
    let new = assign(&t2, p, 1024, Some(&old)).unwrap();
    let incremental = start.elapsed();
    eprintln!("P=1024, 160 nodes: fresh {fresh:?}, add one node {incremental:?}");
    check_assignment(&t2, p, 1024, &new).unwrap();
    assert!(fresh.as_secs_f64() < 10.0 && incremental.as_secs_f64() < 10.0);
    let map = PlacementMap::new(t, p, 1024).unwrap();
    assert_eq!(map.slots, old);
}
