//! The scale simulation behind `sillok sim` (issue 17, part 3).
//!
//! Owns: the synthetic clusters the simulation places (S sites × N nodes,
//! weights drawn from {1, 2, 3, 4} by a fixed seed, so every run places the
//! same cluster), the three changes it applies to them (a node added, a
//! node removed, a site added), and the figures taken from the real
//! placement code's answers: each node's slots against its weight share,
//! the slots a change moved against the least it had to move, the PG rows
//! it changed, the map's size as JSON (what the catalog sends and what
//! followers write) and the cost for one follower to take a new map.
//! Every map is made by `PlacementMap::new` / `PlacementMap::with_topology`
//! and checked by `PlacementMap::validate`; nothing here re-implements the
//! assignment.
//!
//! Time and memory are measured by [`measure`] in a child process per
//! configuration (`sillok sim --child SPEC`, started by the CLI), which
//! prints its [`Report`] as one JSON line after every stage, so a child
//! stopped at its time budget still says how far it got. `plot` writes the
//! SVG line plots.

pub mod plot;

use std::time::Instant;

use serde::{Deserialize, Serialize};
use sillok_placement::{
    EcProfile, MapDelta, Node, NodeId, NodeState, PlacementError, PlacementMap, Site, Topology, assign,
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SimError {
    #[error("bad configuration {0:?}: expected SITESxNODES:PGS:K+M:SEED, e.g. 3x100:4096:8+4:17")]
    Spec(String),
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// One simulated cluster: `sites` sites of `nodes_per_site` nodes each,
/// `pgs` placement groups, one EC profile.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub sites: usize,
    pub nodes_per_site: usize,
    pub pgs: u32,
    pub profile: EcProfile,
    pub seed: u64,
}

impl Config {
    pub fn nodes(&self) -> usize {
        self.sites * self.nodes_per_site
    }

    /// `SITESxNODES:PGS:K+M:SEED`, what a child is given.
    pub fn spec(&self) -> String {
        format!("{}x{}:{}:{}:{}", self.sites, self.nodes_per_site, self.pgs, self.profile, self.seed)
    }

    pub fn parse_spec(s: &str) -> Result<Self, SimError> {
        let bad = || SimError::Spec(s.to_string());
        let parts: Vec<&str> = s.split(':').collect();
        let [shape, pgs, profile, seed] = parts[..] else { return Err(bad()) };
        let (sites, nodes) = shape.split_once('x').ok_or_else(bad)?;
        Ok(Config {
            sites: sites.parse().map_err(|_| bad())?,
            nodes_per_site: nodes.parse().map_err(|_| bad())?,
            pgs: pgs.parse().map_err(|_| bad())?,
            profile: profile.parse().map_err(|_| bad())?,
            seed: seed.parse().map_err(|_| bad())?,
        })
    }
}

/// A stateless 64-bit mixer (splitmix64's finaliser): the weights' dice.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The weight of node `id` under `seed`: 1, 2, 3 or 4 (think TB).
pub fn weight_of(seed: u64, id: u32) -> f64 {
    (1 + mix(seed ^ (u64::from(id) << 20)) % 4) as f64
}

fn node(seed: u64, id: u32, site: usize) -> Node {
    Node {
        id: NodeId(id),
        site: format!("s{site}"),
        addr: format!("10.{site}.{}.{}:7100", id / 256, id % 256),
        weight: weight_of(seed, id),
        state: NodeState::Up,
    }
}

/// The cluster of `c`: sites `s0..`, node ids from 1, site by site.
pub fn topology(c: &Config) -> Topology {
    let mut t = Topology::default();
    for s in 0..c.sites {
        t.sites.push(Site { id: format!("s{s}") });
        for i in 0..c.nodes_per_site {
            t.nodes.push(node(c.seed, (s * c.nodes_per_site + i + 1) as u32, s));
        }
    }
    t
}

/// A change to the cluster, applied to the first map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    /// One node (next id, its seeded weight) joins site `s0`.
    NodeAdd,
    /// The first node of site `s0` leaves the topology.
    NodeRemove,
    /// A new site with as many nodes as the others.
    SiteAdd,
}

impl Change {
    pub const ALL: [Change; 3] = [Change::NodeAdd, Change::NodeRemove, Change::SiteAdd];

    /// The change's name on the (hidden) command line of a child.
    pub fn flag(self) -> &'static str {
        match self {
            Change::NodeAdd => "node-add",
            Change::NodeRemove => "node-remove",
            Change::SiteAdd => "site-add",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Change::NodeAdd => "node add",
            Change::NodeRemove => "node remove",
            Change::SiteAdd => "site add",
        }
    }
}

/// The topology after `change`, and the nodes it concerns (added or removed).
pub fn changed(c: &Config, t: &Topology, change: Change) -> (Topology, Vec<NodeId>) {
    let mut t = t.clone();
    let next = t.nodes.iter().map(|n| n.id.0).max().unwrap_or(0) + 1;
    let concerned = match change {
        Change::NodeAdd => {
            t.nodes.push(node(c.seed, next, 0));
            vec![NodeId(next)]
        }
        Change::NodeRemove => {
            let gone = t.nodes.iter().position(|n| n.site == "s0").map(|i| t.nodes.remove(i).id);
            gone.into_iter().collect()
        }
        Change::SiteAdd => {
            let site = t.sites.len();
            t.sites.push(Site { id: format!("s{site}") });
            (0..c.nodes_per_site as u32)
                .map(|i| {
                    t.nodes.push(node(c.seed, next + i, site));
                    NodeId(next + i)
                })
                .collect()
        }
    };
    (t, concerned)
}

/// Shares `total` among items by weight, each within `lo..=hi`
/// (`x_i = clamp(λ·w_i, lo_i, hi_i)`, λ found by bisection).
fn water_fill(w: &[f64], lo: &[f64], hi: &[f64], total: f64) -> Vec<f64> {
    let at = |l: f64| -> Vec<f64> { w.iter().zip(lo).zip(hi).map(|((w, lo), hi)| (l * w).clamp(*lo, *hi)).collect() };
    let sum = |l: f64| at(l).iter().sum::<f64>();
    let (mut a, mut b) = (0.0f64, 1.0f64);
    while sum(b) < total && b < 1e300 {
        b *= 2.0;
    }
    for _ in 0..200 {
        let mid = (a + b) / 2.0;
        if sum(mid) < total { a = mid } else { b = mid }
    }
    at(b)
}

/// Each in-service node's weight share of the map's slots, as the
/// placement rules allow it (the ideal the assignment aims at, `assign.rs`'s
/// top comment): with `cap_s = min(site_cap, in-service nodes of s)` and the
/// water level L (the largest with `Σ min(cap_s, L) ≤ k+m`), site s holds
/// `base_s = min(cap_s, L)` slots of every PG and shares the extras by
/// weight, its total water-filled into `[base_s·P, (base_s+1)·P]` (just
/// `base_s·P` when it takes none); its nodes share that total by weight,
/// at most one slot per PG each. This is `rebalance.rs`'s share whenever no
/// site's floor `base_s·P` binds (it does not for these clusters). Indexed
/// by node id; 0 for nodes that hold no slots.
pub fn ideal_slots(map: &PlacementMap) -> Vec<f64> {
    let t = &map.topology;
    let p = f64::from(map.pg_count);
    let width = map.profile.width();
    let site_max = assign::site_cap(t, map.profile);
    let members: Vec<Vec<&Node>> =
        t.sites.iter().map(|s| t.nodes_in(&s.id).filter(|n| n.effective_weight() > 0.0).collect()).collect();
    let cap: Vec<usize> = members.iter().map(|m| m.len().min(site_max)).collect();
    let level = (0..=site_max).rev().find(|&l| cap.iter().map(|c| (*c).min(l)).sum::<usize>() <= width).unwrap_or(0);
    let lo: Vec<f64> = cap.iter().map(|&c| c.min(level) as f64 * p).collect();
    let hi: Vec<f64> = cap.iter().map(|&c| (c.min(level) + usize::from(c > level)) as f64 * p).collect();
    let w: Vec<f64> = members.iter().map(|m| m.iter().map(|n| n.effective_weight()).sum()).collect();
    let site_total = water_fill(&w, &lo, &hi, width as f64 * p);
    let mut out = vec![0.0; t.nodes.iter().map(|n| n.id.0 as usize + 1).max().unwrap_or(0)];
    for (m, total) in members.iter().zip(site_total) {
        let w: Vec<f64> = m.iter().map(|n| n.effective_weight()).collect();
        let share = water_fill(&w, &vec![0.0; w.len()], &vec![p; w.len()], total);
        for (n, x) in m.iter().zip(share) {
            out[n.id.0 as usize] = x;
        }
    }
    out
}

/// Slots held per node id.
pub fn slot_counts(map: &PlacementMap) -> Vec<u64> {
    let len = map.topology.nodes.iter().map(|n| n.id.0 as usize + 1).max().unwrap_or(0);
    let mut c = vec![0u64; len];
    for row in &map.slots {
        for n in row {
            if let Some(x) = c.get_mut(n.0 as usize) {
                *x += 1;
            }
        }
    }
    c
}

/// How far the nodes' slot counts are from their weight shares.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Balance {
    /// The largest `|slots / share − 1|` over in-service nodes, in percent.
    pub worst_pct: f64,
    /// Nodes further than 5% from their share (and more than one slot:
    /// the assignment's promise is ±5% or ±1 slot, whichever is more).
    pub beyond: usize,
    pub nodes: usize,
    /// The least and most slots a node holds.
    pub min_slots: u64,
    pub max_slots: u64,
}

pub fn balance(map: &PlacementMap) -> Balance {
    let ideal = ideal_slots(map);
    let counts = slot_counts(map);
    let mut b = Balance { min_slots: u64::MAX, ..Balance::default() };
    for n in map.topology.nodes.iter().filter(|n| n.effective_weight() > 0.0) {
        let (have, want) = (counts[n.id.0 as usize], ideal[n.id.0 as usize]);
        if want <= 0.0 {
            continue;
        }
        let dev = (have as f64 / want - 1.0).abs() * 100.0;
        b.worst_pct = b.worst_pct.max(dev);
        if dev > 5.0 && (have as f64 - want).abs() > 1.0 {
            b.beyond += 1;
        }
        b.nodes += 1;
        b.min_slots = b.min_slots.min(have);
        b.max_slots = b.max_slots.max(have);
    }
    if b.nodes == 0 {
        b.min_slots = 0;
    }
    b
}

/// What a change moved against the least it had to move.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Moves {
    /// Slots whose node changed (`assign::moved_slots`).
    pub moved: u64,
    /// The least any map could move: a new node's (or site's) share of the
    /// new map, or a removed node's slots in the old one.
    pub minimum: f64,
    /// PG rows with at least one slot changed.
    pub rows_changed: u64,
}

impl Moves {
    pub fn ratio(&self) -> f64 {
        if self.minimum > 0.0 { self.moved as f64 / self.minimum } else { f64::NAN }
    }
}

pub fn moves(old: &PlacementMap, new: &PlacementMap, change: Change, concerned: &[NodeId]) -> Moves {
    let minimum = match change {
        Change::NodeAdd | Change::SiteAdd => {
            let ideal = ideal_slots(new);
            concerned.iter().map(|n| ideal.get(n.0 as usize).copied().unwrap_or(0.0)).sum()
        }
        Change::NodeRemove => {
            let counts = slot_counts(old);
            concerned.iter().map(|n| counts.get(n.0 as usize).copied().unwrap_or(0) as f64).sum()
        }
    };
    let rows_changed = old.slots.iter().zip(&new.slots).filter(|(a, b)| a != b).count() as u64;
    Moves { moved: assign::moved_slots(&old.slots, &new.slots) as u64, minimum, rows_changed }
}

/// The error of a change not run because a smaller configuration did not
/// finish it within its time budget.
pub const SKIPPED: &str = "skipped: a smaller configuration did not finish it in time";

/// The stages of [`measure`], in order.
pub const STAGES: [&str; 5] = ["assign", "size", "node add", "node remove", "site add"];

/// One change's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeReport {
    pub change: Change,
    /// Refused by the placement code (e.g. the profile no longer fits).
    pub error: Option<String>,
    pub wall_s: f64,
    pub cpu_s: f64,
    pub moves: Moves,
    pub balance: Balance,
    /// The new map as JSON, earlier rows included.
    pub json_bytes: u64,
    /// The change as a follower receives it: its `MapDelta` as JSON (0 in
    /// reports made before deltas existed).
    #[serde(default)]
    pub delta_bytes: u64,
    /// What a follower spends taking the delta: JSON decode, then
    /// `MapDelta::apply` to its map (a copy and the checks), in seconds.
    #[serde(default)]
    pub delta_apply_s: f64,
}

/// Everything measured for one configuration (a child's answer). Fields
/// stay at their defaults for stages not reached.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Report {
    pub spec: String,
    /// Stages finished: `assign`, `size`, then one per change.
    pub stages: Vec<String>,
    /// `PlacementMap::new` (assignment and validation).
    pub assign_wall_s: f64,
    pub assign_cpu_s: f64,
    /// `PlacementMap::validate` alone, on the same map.
    pub validate_s: f64,
    /// Peak RSS (VmHWM) once the first map exists, and at the end, in KiB.
    pub rss_assign_kib: u64,
    pub rss_peak_kib: u64,
    pub balance: Balance,
    /// `serde_json` of the map: what the catalog sends (`GET /v1/map`).
    pub json_bytes: u64,
    /// The same bytes as a follower writes them (`<data>/map.json`), measured
    /// on disk, and the time to write and fsync them.
    pub disk_bytes: u64,
    pub write_fsync_s: f64,
    /// 4 bytes per slot: a binary slot table, for reference.
    pub compact_bytes: u64,
    /// What a follower spends taking a new map: JSON decode plus `validate`.
    pub decode_validate_s: f64,
    pub changes: Vec<ChangeReport>,
}

/// CPU time of this process so far, in seconds.
pub fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// This process's peak resident set (VmHWM) in KiB; 0 if unknown.
pub fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Runs `f`, returning its value and (wall, CPU) seconds.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let (w, c) = (Instant::now(), cpu_seconds());
    let out = f();
    (out, w.elapsed().as_secs_f64(), cpu_seconds() - c)
}

/// Measures one configuration, calling `progress` with the report so far
/// after each stage. `scratch` is a folder for the on-disk copy.
/// Changes in `skip` are reported as skipped, not run (the CLI skips a
/// change that a smaller configuration could not finish in its budget).
pub fn measure(
    c: &Config,
    scratch: &std::path::Path,
    skip: &[Change],
    progress: &mut dyn FnMut(&Report),
) -> Result<Report, SimError> {
    let mut r = Report { spec: c.spec(), ..Report::default() };
    let t = topology(c);
    let (map, wall, cpu) = timed(|| PlacementMap::new(t.clone(), c.profile, c.pgs));
    let map = map?;
    (r.assign_wall_s, r.assign_cpu_s) = (wall, cpu);
    r.rss_assign_kib = peak_rss_kib();
    let (ok, v, _) = timed(|| map.validate());
    ok?;
    r.validate_s = v;
    r.balance = balance(&map);
    r.stages.push("assign".into());
    r.rss_peak_kib = peak_rss_kib();
    progress(&r);

    let json = serde_json::to_vec(&map)?;
    r.json_bytes = json.len() as u64;
    r.compact_bytes = (map.slots.len() * c.profile.width() * 4) as u64;
    let file = scratch.join(format!("sillok-sim-{}.json", std::process::id()));
    let (written, w, _) = timed(|| -> std::io::Result<u64> {
        use std::io::Write;
        let mut f = std::fs::File::create(&file)?;
        f.write_all(&json)?;
        f.sync_all()?;
        Ok(std::fs::metadata(&file)?.len())
    });
    let _ = std::fs::remove_file(&file);
    r.disk_bytes = written?;
    r.write_fsync_s = w;
    let (back, d, _) = timed(|| -> Result<PlacementMap, SimError> {
        let m: PlacementMap = serde_json::from_slice(&json)?;
        m.validate()?;
        Ok(m)
    });
    if back? != map {
        return Err(SimError::Spec(format!("{}: the map did not survive JSON", c.spec())));
    }
    r.decode_validate_s = d;
    drop(json);
    r.stages.push("size".into());
    r.rss_peak_kib = peak_rss_kib();
    progress(&r);

    for change in Change::ALL {
        let (t2, concerned) = changed(c, &t, change);
        if skip.contains(&change) {
            r.changes.push(ChangeReport {
                change,
                error: Some(SKIPPED.into()),
                wall_s: 0.0,
                cpu_s: 0.0,
                moves: Moves::default(),
                balance: Balance::default(),
                json_bytes: 0,
                delta_bytes: 0,
                delta_apply_s: 0.0,
            });
            progress(&r);
            continue;
        }
        let (next, wall, cpu) = timed(|| map.with_topology(t2));
        let report = match next {
            Ok(next) => {
                let delta =
                    serde_json::to_vec(&MapDelta::between(&map, &next).expect("a topology change has a delta"))?;
                let (applied, delta_apply_s, _) = timed(|| -> Result<PlacementMap, SimError> {
                    let d: MapDelta = serde_json::from_slice(&delta)?;
                    d.apply(&map).map_err(|e| SimError::Spec(format!("{}: {e}", c.spec())))
                });
                if applied? != next {
                    return Err(SimError::Spec(format!("{}: the delta did not make the new map", c.spec())));
                }
                ChangeReport {
                    change,
                    error: None,
                    wall_s: wall,
                    cpu_s: cpu,
                    moves: moves(&map, &next, change, &concerned),
                    balance: balance(&next),
                    json_bytes: serde_json::to_vec(&next)?.len() as u64,
                    delta_bytes: delta.len() as u64,
                    delta_apply_s,
                }
            }
            Err(e) => ChangeReport {
                change,
                error: Some(e.to_string()),
                wall_s: wall,
                cpu_s: cpu,
                moves: Moves::default(),
                balance: Balance::default(),
                json_bytes: 0,
                delta_bytes: 0,
                delta_apply_s: 0.0,
            },
        };
        r.changes.push(report);
        r.stages.push(change.name().into());
        r.rss_peak_kib = peak_rss_kib();
        progress(&r);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(sites: usize, nodes: usize, pgs: u32, k: u8, m: u8) -> Config {
        Config { sites, nodes_per_site: nodes, pgs, profile: EcProfile { k, m }, seed: 17 }
    }

    #[test]
    fn specs_round_trip_and_bad_ones_are_refused() {
        let c = cfg(5, 30, 4096, 8, 4);
        assert_eq!(c.spec(), "5x30:4096:8+4:17");
        assert_eq!(Config::parse_spec(&c.spec()).unwrap(), c);
        for bad in ["", "5x30:4096:8+4", "5:4096:8+4:1", "5x30:4096:8-4:1", "axb:1:4+2:1"] {
            assert!(Config::parse_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn weights_are_seeded_and_in_range() {
        let t = topology(&cfg(3, 10, 64, 4, 2));
        assert_eq!(t.nodes.len(), 30);
        assert!(t.nodes.iter().all(|n| [1.0, 2.0, 3.0, 4.0].contains(&n.weight)));
        assert!(t.nodes.iter().any(|n| n.weight != t.nodes[0].weight), "weights vary");
        assert_eq!(t, topology(&cfg(3, 10, 64, 4, 2)));
    }

    /// 4+2 over three sites of two nodes, weights 1 and 3 in every site:
    /// each site holds 2 slots of each of 64 PGs (128), shared 1:3 under
    /// the one-slot-per-PG cap: the heavy node is in every PG (64), the
    /// light one too. With three nodes of weights 1, 1, 2 in a site, the
    /// shares are 32, 32, 64.
    #[test]
    fn shares_follow_the_site_and_node_caps() {
        let mut t = Topology::default();
        let weights = [[1.0, 3.0, 0.0], [1.0, 3.0, 0.0], [1.0, 1.0, 2.0]];
        for (s, ws) in weights.iter().enumerate() {
            t.sites.push(Site { id: format!("s{s}") });
            for (i, w) in ws.iter().enumerate().filter(|(_, w)| **w > 0.0) {
                t.nodes.push(Node { weight: *w, ..node(1, (s * 3 + i + 1) as u32, s) });
            }
        }
        let map = PlacementMap::new(t, EcProfile { k: 4, m: 2 }, 64).unwrap();
        let ideal = ideal_slots(&map);
        let close = |id: usize, want: f64| assert!((ideal[id] - want).abs() < 1e-6, "node {id}: {}", ideal[id]);
        close(1, 64.0);
        close(2, 64.0);
        close(7, 32.0);
        close(8, 32.0);
        close(9, 64.0);
        assert_eq!(ideal.iter().sum::<f64>().round(), 384.0);
        let b = balance(&map);
        assert_eq!((b.nodes, b.beyond, b.max_slots), (7, 0, 64));
        assert!(b.worst_pct <= 5.0, "{b:?}");
    }

    #[test]
    fn moves_count_changed_slots_against_the_minimum() {
        let c = cfg(3, 4, 256, 4, 2);
        let t = topology(&c);
        let map = PlacementMap::new(t.clone(), c.profile, c.pgs).unwrap();
        let counts = slot_counts(&map);
        // Removing node 1: at least its own slots move, and every changed
        // row is one of its PGs or one a rebalance touched.
        let (t2, gone) = changed(&c, &t, Change::NodeRemove);
        assert_eq!(gone, vec![NodeId(1)]);
        let next = map.with_topology(t2).unwrap();
        let mv = moves(&map, &next, Change::NodeRemove, &gone);
        assert_eq!(mv.minimum, counts[1] as f64);
        assert!(mv.moved as f64 >= mv.minimum && mv.rows_changed >= counts[1]);
        assert_eq!(mv.moved as usize, assign::moved_slots(&map.slots, &next.slots));
        // The same map again moves nothing.
        let same = map.with_topology(t.clone()).unwrap();
        assert_eq!(moves(&map, &same, Change::NodeAdd, &[]).moved, 0);
        // A hand-made change of one slot: one moved, one row.
        let mut one = map.clone();
        let spare = (1..=12).map(NodeId).find(|n| !one.slots[0].contains(n)).unwrap();
        one.slots[0][0] = spare;
        let mv = moves(&map, &one, Change::NodeAdd, &[]);
        assert_eq!((mv.moved, mv.rows_changed, mv.minimum), (1, 1, 0.0));
        // Adding a site: the new site's nodes' shares are the minimum.
        let (t3, new) = changed(&c, &t, Change::SiteAdd);
        assert_eq!(new.len(), 4);
        let next = map.with_topology(t3).unwrap();
        let mv = moves(&map, &next, Change::SiteAdd, &new);
        let got: u64 = new.iter().map(|n| slot_counts(&next)[n.0 as usize]).sum();
        assert!(mv.moved >= got, "{mv:?}");
        // Four sites of cap 2 under 4+2: one slot per PG each plus a share of
        // the two extras, so the new site's share is between P and 2P.
        assert!((256.0..=512.0).contains(&mv.minimum), "{mv:?}");
    }

    #[test]
    fn a_tiny_configuration_measures_every_stage() {
        let c = cfg(3, 3, 64, 4, 2);
        let dir = std::env::temp_dir();
        let mut seen = 0;
        let r = measure(&c, &dir, &[], &mut |_| seen += 1).unwrap();
        assert_eq!(seen, 5);
        assert_eq!(r.stages, ["assign", "size", "node add", "node remove", "site add"]);
        assert_eq!(r.json_bytes, r.disk_bytes);
        assert_eq!(r.compact_bytes, 64 * 6 * 4);
        assert_eq!(r.changes.len(), 3);
        // 4+2 over 3 sites of 3: removing a node leaves 2 in s0, still fits.
        assert!(r.changes.iter().all(|ch| ch.error.is_none()), "{:?}", r.changes);
        assert!(r.changes.iter().all(|ch| ch.moves.moved as f64 >= ch.moves.minimum.floor()));
        let mut last = Report::default();
        let r = measure(&c, &dir, &[Change::SiteAdd], &mut |r| last = r.clone()).unwrap();
        assert_eq!(r.changes[2].error.as_deref(), Some(SKIPPED));
        assert_eq!(last, r, "the last report printed names the skipped change");
        assert_eq!(r.stages, ["assign", "size", "node add", "node remove"]);
    }
}
