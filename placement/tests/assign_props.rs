//! Property tests of the slot assignment (`sillok_placement::assign`).
//!
//! The expectations are derived here independently of the implementation: the
//! per-site water level (how many slots of each PG a site holds), the site
//! totals the weights ask for, and lower bounds on the slots a change must move.

use proptest::prelude::*;
use sillok_placement::assign::{assign, check_fit, moved_slots};
use sillok_placement::{EcProfile, Node, NodeId, NodeState, PgFunction, PlacementError, PlacementMap, Site, Topology};
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
            t.nodes.push(Node {
                id: NodeId(next),
                site: site.clone(),
                addr: format!("10.0.{si}.{next}:7000"),
                weight,
                state,
            });
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
/// The most slots of a PG one site may hold: m, or, while a site is lost
/// (it has nodes and all are out) and m does not fit, the least larger
/// number that fits (restated here from the crate's documentation, as the
/// oracle the assignment is checked against).
fn site_limit(t: &Topology, p: EcProfile) -> usize {
    let (n, m) = (p.width(), p.m as usize);
    let counts: Vec<usize> = t.sites.iter().map(|s| in_service(t).iter().filter(|x| x.site == s.id).count()).collect();
    let fits = |c: usize| {
        counts.iter().map(|&k| k.min(c)).sum::<usize>() >= n
            && counts.iter().filter(|&&k| k > 0).count() >= n.div_ceil(c)
    };
    let lost = t.sites.iter().any(|s| {
        let nodes: Vec<_> = t.nodes.iter().filter(|x| x.site == s.id).collect();
        !nodes.is_empty() && nodes.iter().all(|x| x.state == NodeState::Out)
    });
    if fits(m) || !lost { m } else { (m + 1..=n).find(|&c| fits(c)).unwrap_or(m) }
}

fn expected_shape(t: &Topology, p: EcProfile) -> Option<BTreeMap<String, (usize, bool)>> {
    let n = p.width();
    let m = site_limit(t, p);
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

/// Values `clamp(λ·w_i, lo_i, hi_i)` summing to `total` (found by bisection).
fn clamped_shares(w: &[f64], lo: &[f64], hi: &[f64], total: f64) -> Vec<f64> {
    let at = |l: f64| -> Vec<f64> { (0..w.len()).map(|i| (l * w[i]).clamp(lo[i], hi[i])).collect() };
    let (mut a, mut b) = (0.0f64, 1e15f64);
    for _ in 0..400 {
        let mid = 0.5 * (a + b);
        if at(mid).iter().sum::<f64>() < total {
            a = mid;
        } else {
            b = mid;
        }
    }
    at(b)
}

/// Each site's ideal slot total: its weight share, clamped into what the
/// per-PG shape allows, the clamped-off amount shared by the others.
fn ideal_site_totals(
    t: &Topology,
    p: EcProfile,
    pgs: u32,
    shape: &BTreeMap<String, (usize, bool)>,
) -> BTreeMap<String, f64> {
    let pgs = f64::from(pgs);
    let w: Vec<f64> = t
        .sites
        .iter()
        .map(|s| in_service(t).iter().filter(|x| x.site == s.id).map(|x| x.effective_weight()).sum())
        .collect();
    let lo: Vec<f64> = t.sites.iter().map(|s| shape[&s.id].0 as f64 * pgs).collect();
    let hi: Vec<f64> = t.sites.iter().map(|s| (shape[&s.id].0 + usize::from(shape[&s.id].1)) as f64 * pgs).collect();
    let v = clamped_shares(&w, &lo, &hi, p.width() as f64 * pgs);
    t.sites.iter().zip(v).map(|(s, v)| (s.id.clone(), v)).collect()
}

/// Each in-service node's ideal slot count: its weight share of its site's
/// ideal total, at most one slot per PG.
fn ideal_node_counts(t: &Topology, p: EcProfile, pgs: u32) -> BTreeMap<NodeId, f64> {
    let shape = expected_shape(t, p).unwrap();
    let sites = ideal_site_totals(t, p, pgs, &shape);
    let mut out = BTreeMap::new();
    for s in &t.sites {
        let members: Vec<&Node> = in_service(t).into_iter().filter(|n| n.site == s.id).collect();
        let w: Vec<f64> = members.iter().map(|n| n.effective_weight()).collect();
        let v = clamped_shares(&w, &vec![0.0; w.len()], &vec![f64::from(pgs); w.len()], sites[&s.id]);
        out.extend(members.iter().map(|n| n.id).zip(v));
    }
    out
}

/// The promise: within 5% of the ideal, or one slot when that is more.
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

/// Checks validity, per-PG site spread and balance; returns the first problem.
fn check_assignment(t: &Topology, p: EcProfile, pgs: u32, slots: &[Vec<NodeId>]) -> Result<(), String> {
    let shape = expected_shape(t, p).ok_or("assignment made for a profile that does not fit")?;
    if slots.len() != pgs as usize {
        return Err(format!("{} rows for {pgs} PGs", slots.len()));
    }
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
            *per_site.entry(n.site.as_str()).or_default() += 1;
        }
        for (s, &(base, extra)) in &shape {
            let c = per_site.get(s.as_str()).copied().unwrap_or(0);
            if c > site_limit(t, p) || c < base || c > base + usize::from(extra) {
                return Err(format!(
                    "PG {pg} has {c} slots in {s}; expected {base}{}",
                    if extra { " or one more" } else { "" }
                ));
            }
        }
    }
    // Balance: every site's total and every node's count against its ideal.
    let site_ideal = ideal_site_totals(t, p, pgs, &shape);
    let node_ideal = ideal_node_counts(t, p, pgs);
    let c = counts(slots);
    let got = |id: &NodeId| c.get(id).copied().unwrap_or(0) as f64;
    for s in &t.sites {
        let total: f64 = in_service(t).iter().filter(|n| n.site == s.id).map(|n| got(&n.id)).sum();
        let want = site_ideal[&s.id];
        if (total - want).abs() > tolerance(want) {
            return Err(format!("site {} holds {total} slots; its share is {want:.2}", s.id));
        }
    }
    for (id, want) in &node_ideal {
        if (got(id) - want).abs() > tolerance(*want) {
            return Err(format!("node {id} holds {} slots; its share is {want:.2}", got(id)));
        }
    }
    for n in &t.nodes {
        if n.effective_weight() <= 0.0 && c.contains_key(&n.id) {
            return Err(format!("node {} ({:?}) holds slots", n.id, n.state));
        }
    }
    Ok(())
}

/// A lower bound on the slots that any assignment meeting the promises (per-PG
/// spread, every count within 5% or 1 slot of its ideal) must move from `old`
/// after `t` lost nodes: all the slots of the nodes that left service, plus
/// - per site: what it holds beyond the top of its band once the PGs where it
///   fell below `base_s` got their slots back (those cannot leave the site),
///   each such slot being a staying node's slot that leaves;
/// - per node: what it must gain to reach the bottom of its band beyond the
///   PGs it can take over from a leaving node of its site, each such gain
///   displacing a staying node.
fn removal_lower_bound(t: &Topology, p: EcProfile, old: &[Vec<NodeId>]) -> usize {
    let pgs = old.len() as u32;
    let shape = expected_shape(t, p).unwrap();
    let site_ideal = ideal_site_totals(t, p, pgs, &shape);
    let node_ideal = ideal_node_counts(t, p, pgs);
    let co = counts(old);
    let get = |id: &NodeId| co.get(id).copied().unwrap_or(0) as i64;
    let leaving = |id: &NodeId| t.node(*id).is_none_or(|n| n.effective_weight() <= 0.0);
    let mut bound: i64 = co.keys().filter(|id| leaving(id)).map(get).sum();
    for s in &t.sites {
        let members: Vec<NodeId> = in_service(t).iter().filter(|n| n.site == s.id).map(|n| n.id).collect();
        let held: i64 = members.iter().map(get).sum();
        let base = shape[&s.id].0 as i64;
        let refills: i64 =
            old.iter().map(|row| (base - row.iter().filter(|id| members.contains(id)).count() as i64).max(0)).sum();
        let top = (site_ideal[&s.id] + tolerance(site_ideal[&s.id])).floor() as i64;
        bound += (held + refills - top).max(0);
        let lost_here =
            |row: &Vec<NodeId>| row.iter().any(|id| leaving(id) && t.node(*id).is_none_or(|n| n.site == s.id));
        for id in &members {
            let bottom = (node_ideal[id] - tolerance(node_ideal[id])).ceil() as i64;
            let free = old.iter().filter(|row| !row.contains(id) && lost_here(row)).count() as i64;
            bound += (bottom - get(id) - free).max(0);
        }
    }
    bound as usize
}

/// Whether nothing in the PG structure forces moves beyond a lost node's own
/// slots: every PG holds exactly `base_s` slots in every site (R = 0, so no
/// slot has to change site) and no node is close to holding a slot of every PG
/// (such a node must join PGs that lost no node, displacing others).
fn structure_is_free(t: &Topology, p: EcProfile, pgs: u32) -> bool {
    expected_shape(t, p).is_some_and(|s| s.values().map(|&(b, _)| b).sum::<usize>() == p.width())
        && ideal_node_counts(t, p, pgs).values().all(|&c| c <= 0.75 * f64::from(pgs))
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

/// A first map; PG counts that are not powers of two use the modulo PG
/// function (the assignment does not depend on it).
fn new_map(t: Topology, p: EcProfile, pgs: u32) -> Result<PlacementMap, PlacementError> {
    let f = if pgs.is_power_of_two() { PgFunction::TopBits } else { PgFunction::Modulo };
    PlacementMap::with_pg_function(t, p, pgs, f)
}

fn pg_count() -> impl Strategy<Value = u32> {
    prop_oneof![Just(1024u32), Just(256u32), Just(97u32)]
}

/// 48 cases per property keep `cargo test` (debug, two slow cores) well under
/// a minute; set PROPTEST_CASES to explore more.
fn config() -> ProptestConfig {
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() { ProptestConfig::default().cases } else { 48 };
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
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
    /// over nodes of what each gains), plus one.
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
        // A node added to a lost site (every node of it out) makes the site
        // no longer lost, so the site cap falls back to m (`site_cap`), and
        // the surviving sites may then be too few for the profile: the
        // change is refused (ProfileDoesNotFit), which is not this
        // property's subject. Found with PROPTEST_CASES=4000.
        prop_assume!(check_fit(&t2, p).is_ok());
        let new = assign(&t2, p, pgs, Some(&old)).unwrap();
        if let Err(e) = check_assignment(&t2, p, pgs, &new) {
            return Err(TestCaseError::fail(e));
        }
        let (moved, need) = (moved_slots(&old, &new), gains(&old, &new));
        // Plus one slot: when the new node's share is a handful of slots (small
        // P, many nodes), one rounding flip elsewhere is already 25% of it.
        prop_assert!(moved as f64 <= 1.25 * need as f64 + 1.0, "moved {} slots; balance requires {}", moved, need);
    }

    /// Taking one node out of service (marking it Out, or deleting it) moves
    /// its slots and little more. What "little" can be depends on the PG
    /// structure: when nothing in it forces more (`structure_is_free`, e.g. 4+2
    /// over 3 sites of 3+ similar nodes) at most 5% more than a lower bound that
    /// is then the node's own slots; in general within 25% of a lower bound
    /// that counts some of what the structure forces (`removal_lower_bound`),
    /// plus two slots.
    /// `removals_mostly_move_only_the_lost_slots` measures the typical case.
    #[test]
    fn removing_a_node_moves_little(
        sites in sites_strategy(), pi in 0..PROFILES.len(), pgs in pg_count(),
        which in any::<prop::sample::Index>(), out in any::<bool>(),
    ) {
        let t = topology(&sites);
        let p = PROFILES[pi];
        prop_assume!(check_fit(&t, p).is_ok());
        let old = new_map(t.clone(), p, pgs).unwrap();
        let live: Vec<NodeId> = in_service(&t).iter().map(|n| n.id).collect();
        let victim = live[which.index(live.len())];
        let mut t2 = t.clone();
        if out {
            t2.nodes.iter_mut().find(|n| n.id == victim).unwrap().state = NodeState::Out;
        } else {
            t2.nodes.retain(|n| n.id != victim);
        }
        prop_assume!(check_fit(&t2, p).is_ok());
        // Losing a whole site reshapes every PG (more than m per surviving
        // site): not "a removal", and tested on its own in the crate.
        prop_assume!(site_limit(&t2, p) == p.m as usize);
        let new = old.with_topology(t2.clone()).unwrap();
        prop_assert_eq!(new.epoch, old.epoch + 1);
        if let Err(e) = check_assignment(&t2, p, pgs, &new.slots) {
            return Err(TestCaseError::fail(e));
        }
        let had = counts(&old.slots).get(&victim).copied().unwrap_or(0);
        let moved = moved_slots(&old.slots, &new.slots);
        // Judge both variants against the Out topology: `with_topology` shows a
        // deleted node to the assignment as Out.
        let mut t_out = t.clone();
        t_out.nodes.iter_mut().find(|n| n.id == victim).unwrap().state = NodeState::Out;
        let bound = removal_lower_bound(&t_out, p, &old.slots);
        prop_assert!(bound >= had);
        // In general, also two slots for rounding: with small P many bands are
        // only ±1 slot wide.
        let limit = if structure_is_free(&t2, p, pgs) { 1.05 * bound as f64 } else { 1.25 * bound as f64 + 2.0 };
        prop_assert!(
            moved as f64 <= limit,
            "moved {} slots; the node had {}, the lower bound is {}", moved, had, bound
        );
        // The promise, read like its rule for adding a node (fractions of
        // all slots): only the node's own slots move, plus at most 5% of the
        // table. (Read as 5% of the node's own slots it cannot always hold while
        // every node stays within ±5% of its weight share; see docs/design.md.)
        let total = pgs as usize * p.width();
        prop_assert!(
            moved as f64 <= had as f64 + 0.05 * total as f64,
            "moved {} slots; the node had {}; 5% of the {} slots is {}", moved, had, total, 0.05 * total as f64
        );
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
    // A third site whose only node is out is a lost site, not a missing one:
    // the other two hold k+m on distinct nodes, 3 each (`site_cap`).
    let mut t = up(&[&[1.0; 10], &[1.0; 10], &[1.0]]);
    t.nodes.last_mut().unwrap().state = NodeState::Out;
    assert_eq!(sillok_placement::assign::site_cap(&t, EcProfile { k: 4, m: 2 }), 3);
    let slots = assign(&t, EcProfile { k: 4, m: 2 }, 64, None).unwrap();
    for row in &slots {
        assert_eq!(row.iter().filter(|n| n.0 <= 10).count(), 3, "{row:?}");
    }
    // A third site with no node at all counts as missing.
    let mut t = up(&[&[1.0; 10], &[1.0; 10], &[1.0]]);
    t.nodes.pop();
    let err = assign(&t, EcProfile { k: 4, m: 2 }, 64, None).unwrap_err();
    assert!(err.to_string().contains("s2 (0 nodes)"), "{err}");
    // 2+1 needs three sites too; 8+4 over three sites needs four nodes in each.
    assert!(matches!(
        assign(&up(&[&[1.0; 3], &[1.0; 3]]), EcProfile { k: 2, m: 1 }, 8, None),
        Err(PlacementError::ProfileDoesNotFit { .. })
    ));
    let err = assign(&up(&[&[1.0; 4], &[1.0; 4], &[1.0; 3]]), EcProfile { k: 8, m: 4 }, 8, None).unwrap_err();
    assert!(err.to_string().contains("at most 11"), "{err}");
}

#[test]
fn removing_a_node_from_a_three_site_cluster_moves_only_its_slots() {
    // 4+2 over 3 sites: every site holds exactly 2 slots of every PG, so a lost
    // node's slots stay in its site and, with no node near one slot per PG,
    // nothing else has to move.
    let t = up(&[&[1.0, 1.5, 1.2, 1.0, 1.3], &[1.0, 1.0, 1.0, 1.0], &[2.0, 1.0, 1.0, 1.5, 1.0, 1.0]]);
    let p = EcProfile::default();
    let old = PlacementMap::new(t.clone(), p, 1024).unwrap();
    for victim in t.nodes.iter().map(|n| n.id) {
        for out in [true, false] {
            let mut t2 = t.clone();
            if out {
                t2.nodes.iter_mut().find(|n| n.id == victim).unwrap().state = NodeState::Out;
            } else {
                t2.nodes.retain(|n| n.id != victim);
            }
            let new = old.with_topology(t2.clone()).unwrap();
            check_assignment(&t2, p, 1024, &new.slots).unwrap();
            let had = counts(&old.slots)[&victim];
            let moved = moved_slots(&old.slots, &new.slots);
            assert!(moved as f64 <= 1.05 * had as f64, "removing {victim} (out: {out}) moved {moved}, it had {had}");
        }
    }
}

/// A small deterministic generator, so that this test measures the same fleet
/// of topologies every run.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let z = self.0 ^ (self.0 >> 33);
        z.wrapping_mul(0xff51_afd7_ed55_8ccd) ^ (z >> 29)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn weight(&mut self) -> f64 {
        0.5 + 3.5 * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn removals_mostly_move_only_the_lost_slots() {
    // 60 random topologies (3-8 sites, 1-20 nodes each, weights 0.5-4, the
    // profiles of the property tests, P = 256), one node marked Out in each.
    // The promise is "at most 5% more than the node's own slots"; the PG
    // structure makes that impossible in a few topologies (see the module docs
    // of `assign`), so this checks the share of removals that keep it. Measured
    // over 1,000 such removals: 96.5%.
    let mut rng = Lcg(20260401);
    let (mut total, mut kept) = (0, 0);
    while total < 60 {
        let nsites = 3 + rng.below(6) as usize;
        let sites: Vec<Vec<(f64, NodeState)>> =
            (0..nsites).map(|_| (0..1 + rng.below(20)).map(|_| (rng.weight(), NodeState::Up)).collect()).collect();
        let p = PROFILES[rng.below(PROFILES.len() as u64) as usize];
        let t = topology(&sites);
        let victim = NodeId(1 + rng.below(t.nodes.len() as u64) as u32);
        let mut t2 = t.clone();
        t2.nodes.iter_mut().find(|n| n.id == victim).unwrap().state = NodeState::Out;
        if check_fit(&t, p).is_err() || check_fit(&t2, p).is_err() || site_limit(&t2, p) != p.m as usize {
            continue;
        }
        let old = assign(&t, p, 256, None).unwrap();
        let new = assign(&t2, p, 256, Some(&old)).unwrap();
        let had = counts(&old)[&victim];
        total += 1;
        if moved_slots(&old, &new) as f64 <= 1.05 * had as f64 {
            kept += 1;
        }
    }
    assert!(kept * 100 >= total * 90, "only {kept} of {total} removals moved at most 5% more than the node's slots");
}

#[test]
fn a_large_cluster_is_assigned_quickly() {
    // 8 sites x 20 nodes, P = 1024: the size the issue asks to be fast. The
    // bound is loose on purpose (debug builds on slow CI machines); the real
    // numbers are in the crate's docs.
    let sites: Vec<Vec<f64>> =
        (0..8).map(|s| (0..20).map(|i| 1.0 + ((s * 20 + i) % 7) as f64 * 0.5).collect()).collect();
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
