//! The assignment: which k+m nodes hold each placement group (PG).
//!
//! This module owns one pure function, [`assign`], that turns a topology, an EC
//! profile, a PG count and (optionally) the previous slot table into a new slot
//! table. Everything the rest of Sillok promises about placement is decided here:
//!
//! - **Validity.** Every PG gets k+m slots on k+m distinct nodes with
//!   `effective_weight() > 0` (Up or Down). Draining and Out nodes get none, so a
//!   draining node loses its slots in the map that follows.
//! - **Site spread.** Let `cap_s = min(m, in-service nodes of site s)`. The
//!   *water level* L is the largest level with `Σ_s min(cap_s, L) ≤ k+m`; site s
//!   then holds `base_s = min(cap_s, L)` slots of every PG, and the remaining
//!   `R = k+m − Σ base_s` slots of each PG ("extras") go to R distinct sites
//!   with `cap_s > L`. So every PG has `base_s` or `base_s+1` slots in site s,
//!   never more than m, which is the most even spread the topology allows. If
//!   `Σ cap_s < k+m` (or fewer than ⌈(k+m)/m⌉ sites have nodes) the profile does
//!   not fit and [`PlacementError::ProfileDoesNotFit`] says which sites lack what.
//! - **Balance.** Slots are shared by weight at two levels. Site totals: the
//!   ideal `(k+m)·P·W_s/W` water-filled into `[base_s·P, (base_s+1)·P]` (just
//!   `base_s·P` for a site that takes no extras). Node totals inside a site: the
//!   site total split by weight, water-filled under the cap P (a node holds at
//!   most one slot of a PG). Both are rounded to integers that are the floor or
//!   the ceiling of the ideal, so every count is within one slot of its target.
//!   Rounding is *sticky*: the units left over after flooring go first to those
//!   whose previous count was already above the floor, so a small topology change
//!   does not flip unrelated roundings (and move slots for nothing).
//! - **Few moves.** Both "which PGs carry site s's extra" (rows = PGs, columns
//!   = sites that can take extras, row sums R, column sums = each site's extras)
//!   and "which nodes of site s serve each PG" (columns = the site's nodes, row
//!   sums `base_s` or `base_s+1`, column sums = node quotas) are the same
//!   problem: a 0/1 matrix with given row and column sums. [`Matrix`] solves it
//!   incrementally from the previous map: keep every previous membership that is
//!   still allowed, drop memberships from rows over their sum (the most
//!   over-quota column first) and from columns over their quota (rows where the
//!   drop can be refilled directly first, and at the site level rows whose
//!   dropped slot sits on a node that must shed slots anyway), then fill each
//!   short row with the column that has the most quota left (ties broken by a
//!   hash of PG and column, which spreads load). When no column fits a short row,
//!   a breadth-first augmenting path moves one column of another row aside.
//!   Such a matrix always exists (row sums differ by at most one and no column
//!   sum exceeds P), so the fill always completes. A fresh map is the same path
//!   started from an empty matrix.
//! - **Stable slot positions.** A node that stays in a PG keeps its slot index
//!   (its shard number); new nodes take the vacated indices, in an order given by
//!   a hash of PG and node.
//! - **Determinism.** No randomness, no hash-map iteration order: the same
//!   inputs give the same table, and re-running on its own output changes
//!   nothing (`assign(t, Some(&assign(t, None)))` is the identity).
//!
//! Known trade-off: the targets are exact (balance first). When a removed node
//! leaves a site whose share must shrink but many of that node's slots sat in
//! the site's `base_s` part of PGs (which must stay in the site), reaching the
//! target needs a few moves beyond the removed node's own slots.

use std::collections::{BTreeMap, BinaryHeap, VecDeque};


use crate::error::PlacementError;
use crate::profile::EcProfile;
use crate::topology::{NodeId, Topology};

/// Computes the slot table: `result[pg][i]` is the node that holds shard i of
/// PG `pg`. With `previous`, moves as few slots as the new balance requires and
/// keeps every unchanged node at its slot index.
pub fn assign(
    topology: &Topology,
    profile: EcProfile,
    pg_count: u32,
    previous: Option<&[Vec<NodeId>]>,
) -> Result<Vec<Vec<NodeId>>, PlacementError> {
    profile.check()?;
    topology.check()?;
    if pg_count == 0 {
        return Err(PlacementError::InvalidTopology("the map needs at least one placement group".into()));
    }
    let shape = Shape::new(topology, profile)?;
    Ok(shape.assign(pg_count as usize, previous.unwrap_or(&[])))
}

/// Checks that `profile` fits `topology` (enough sites and nodes to keep at
/// most m slots of a PG per site), without computing an assignment.
pub fn check_fit(topology: &Topology, profile: EcProfile) -> Result<(), PlacementError> {
    profile.check()?;
    topology.check()?;
    Shape::new(topology, profile).map(|_| ())
}

/// How many slots differ between two slot tables (a slot counts when its node
/// changed, or when it exists in only one of them): the shards a change moves.
pub fn moved_slots(old: &[Vec<NodeId>], new: &[Vec<NodeId>]) -> usize {
    let rows = old.len().max(new.len());
    (0..rows)
        .map(|pg| {
            let a = old.get(pg).map(Vec::as_slice).unwrap_or(&[]);
            let b = new.get(pg).map(Vec::as_slice).unwrap_or(&[]);
            (0..a.len().max(b.len())).filter(|&i| a.get(i) != b.get(i)).count()
        })
        .sum()
}

/// An in-service node (`effective_weight() > 0`).
struct Member {
    id: NodeId,
    weight: f64,
}

struct SiteShape<'a> {
    name: &'a str,
    /// Stable per-site key for tie-breaking hashes (does not depend on list order).
    key: u64,
    /// Indices into `Shape::members`, in node-id order.
    members: Vec<usize>,
    weight: f64,
    /// Slots this site holds in every PG.
    base: usize,
    /// Whether the site may hold one extra slot (base+1) in a PG.
    takes_extra: bool,
}

/// Where a node listed in the topology sits, and whether it may hold slots.
#[derive(Clone, Copy)]
struct Listing {
    site: usize,
    member: Option<usize>,
}

/// The part of the assignment that depends only on topology and profile.
struct Shape<'a> {
    width: usize,
    sites: Vec<SiteShape<'a>>,
    members: Vec<Member>,
    listed: BTreeMap<NodeId, Listing>,
    /// Extras per PG: `width − Σ base_s`.
    extras: usize,
}

impl<'a> Shape<'a> {
    fn new(topology: &'a Topology, profile: EcProfile) -> Result<Self, PlacementError> {
        let width = profile.width();
        let m = profile.m as usize;
        let site_index: BTreeMap<&str, usize> =
            topology.sites.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
        let mut sites: Vec<SiteShape<'a>> = topology
            .sites
            .iter()
            .map(|s| SiteShape {
                name: s.id.as_str(),
                key: name_key(&s.id),
                members: Vec::new(),
                weight: 0.0,
                base: 0,
                takes_extra: false,
            })
            .collect();
        let mut nodes: Vec<_> = topology.nodes.iter().collect();
        nodes.sort_by_key(|n| n.id);
        let mut members = Vec::new();
        let mut listed = BTreeMap::new();
        for node in nodes {
            // `Topology::check` guarantees the site exists.
            let site = site_index[node.site.as_str()];
            let weight = node.effective_weight();
            let member = (weight > 0.0).then(|| {
                members.push(Member { id: node.id, weight });
                sites[site].members.push(members.len() - 1);
                sites[site].weight += weight;
                members.len() - 1
            });
            listed.insert(node.id, Listing { site, member });
        }

        let cap = |s: &SiteShape| s.members.len().min(m);
        let describe = || {
            sites
                .iter()
                .map(|s| {
                    let n = s.members.len();
                    format!("{} ({} node{})", s.name, n, if n == 1 { "" } else { "s" })
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let refuse = |reason: String| Err(PlacementError::ProfileDoesNotFit { profile: profile.to_string(), reason });
        let min_sites = width.div_ceil(m);
        let with_nodes = sites.iter().filter(|s| !s.members.is_empty()).count();
        if with_nodes < min_sites {
            return refuse(format!(
                "{profile} needs at least {min_sites} sites with in-service nodes (a site may hold at most \
                 m={m} of a placement group's {width} slots, so that losing it leaves k={}), but only \
                 {with_nodes} {} any: {}",
                profile.k,
                if with_nodes == 1 { "has" } else { "have" },
                describe()
            ));
        }
        let cap_sum: usize = sites.iter().map(cap).sum();
        if cap_sum < width {
            return refuse(format!(
                "{profile} needs {width} distinct in-service nodes per placement group with at most m={m} in \
                 any one site, but the sites can hold at most {cap_sum}: {}",
                describe()
            ));
        }
        // Water level: the largest L with Σ min(cap_s, L) ≤ width (L = 0 always qualifies).
        let level = (0..=m).rev().find(|&l| sites.iter().map(|s| cap(s).min(l)).sum::<usize>() <= width).unwrap_or(0);
        for s in &mut sites {
            let c = s.members.len().min(m);
            s.base = c.min(level);
            s.takes_extra = c > level;
        }
        let extras = width - sites.iter().map(|s| s.base).sum::<usize>();
        Ok(Shape { width, sites, members, listed, extras })
    }

    fn assign(&self, pgs: usize, previous: &[Vec<NodeId>]) -> Vec<Vec<NodeId>> {
        let nsites = self.sites.len();
        let p = pgs as u64;
        let prev = Previous::read(self, pgs, previous);

        // Level 1 targets: each site's total is base_s·P plus its share of the
        // R·P extras; the band is what the site may hold without being corrected.
        let weights: Vec<f64> = self.sites.iter().map(|s| s.weight).collect();
        let floor: Vec<u64> = self.sites.iter().map(|s| s.base as u64 * p).collect();
        let ceiling: Vec<u64> = self.sites.iter().map(|s| (s.base + usize::from(s.takes_extra)) as u64 * p).collect();
        let as_f64 = |v: &[u64]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        let ideal = water_fill(&weights, &as_f64(&floor), &as_f64(&ceiling), (self.width as u64 * p) as f64);
        let extra_ideal: Vec<f64> = ideal.iter().zip(&floor).map(|(t, &f)| t - f as f64).collect();
        let extra_cap: Vec<u64> = ceiling.iter().zip(&floor).map(|(c, f)| c - f).collect();
        let extra_prev: Vec<u64> = (0..nsites)
            .map(|s| if self.sites[s].takes_extra { prev.site_total[s].saturating_sub(floor[s]) } else { 0 })
            .collect();
        let site_keys: Vec<u64> = self.sites.iter().map(|s| s.key).collect();
        let extra_target = round_sticky(&extra_ideal, &extra_cap, &extra_prev, &site_keys, self.extras as u64 * p);

        // Node targets as planned from the site targets: level 1 uses them to
        // decide which node of a site gives up a slot when the site sheds one.
        let mut plan = vec![(0u64, 0u64); self.members.len()];
        for si in 0..nsites {
            for (mi, t) in self.node_targets(si, floor[si] + extra_target[si], &prev.member_count, p) {
                plan[mi] = (t.target, t.lo);
            }
        }

        // Level 1: which PGs carry each site's extra slot.
        let cols: Vec<usize> = (0..nsites).filter(|&s| self.sites[s].takes_extra).collect();
        let mut has_extra = vec![vec![false; pgs]; nsites];
        let mut drop_choice: Vec<Vec<Option<usize>>> = vec![vec![None; pgs]; nsites];
        if self.extras > 0 {
            let bounds: Vec<Bound> = cols
                .iter()
                .map(|&s| {
                    let total = band(ideal[s], floor[s] + extra_target[s], floor[s], ceiling[s]);
                    Bound {
                        target: total.target - floor[s],
                        lo: total.lo - floor[s],
                        hi: total.hi - floor[s],
                        new: extra_prev[s] == 0,
                        key: self.sites[s].key,
                    }
                })
                .collect();
            let init: Vec<Vec<u32>> = (0..pgs)
                .map(|pg| {
                    (0..cols.len() as u32)
                        .filter(|&c| prev.in_site[cols[c as usize]][pg].len() > self.sites[cols[c as usize]].base)
                        .collect()
                })
                .collect();
            let mut policy = ExtraDrops {
                shape: self,
                cols: &cols,
                prev_in_site: &prev.in_site,
                left: prev.member_count.clone(),
                plan: &plan,
                drop_choice: &mut drop_choice,
            };
            let demand = vec![self.extras as u32; pgs];
            let rows = Matrix::solve(&demand, &bounds, init, 0x5EED_0001, &mut policy);
            for (pg, row) in rows.iter().enumerate() {
                for &c in row {
                    has_extra[cols[c as usize]][pg] = true;
                }
            }
        }

        // Level 2: which nodes of each site serve each PG, balanced against the
        // site's actual total.
        let mut chosen: Vec<Vec<NodeId>> = vec![Vec::with_capacity(self.width); pgs];
        for (si, s) in self.sites.iter().enumerate() {
            if s.members.is_empty() {
                continue;
            }
            let demand: Vec<u32> = (0..pgs).map(|pg| (s.base + usize::from(has_extra[si][pg])) as u32).collect();
            let total: u64 = demand.iter().map(|&d| u64::from(d)).sum();
            let bounds: Vec<Bound> = self.node_targets(si, total, &prev.member_count, p).into_iter().map(|(_, b)| b).collect();
            let local: BTreeMap<usize, u32> = s.members.iter().enumerate().map(|(i, &mi)| (mi, i as u32)).collect();
            let init: Vec<Vec<u32>> = (0..pgs)
                .map(|pg| {
                    prev.in_site[si][pg]
                        .iter()
                        .filter_map(|id| self.listed[id].member)
                        .filter(|&mi| has_extra[si][pg] || drop_choice[si][pg] != Some(mi))
                        .map(|mi| local[&mi])
                        .collect()
                })
                .collect();
            let rows = Matrix::solve(&demand, &bounds, init, s.key, &mut NoPolicy);
            for (pg, row) in rows.into_iter().enumerate() {
                chosen[pg].extend(row.into_iter().map(|c| self.members[s.members[c as usize]].id));
            }
        }

        // Slot positions: staying nodes keep their index, new ones fill the gaps.
        chosen
            .into_iter()
            .enumerate()
            .map(|(pg, nodes)| place(previous.get(pg).map(Vec::as_slice), &nodes, self.width, pg as u64))
            .collect()
    }

    /// The targets and bands of the nodes of site `si` when the site holds
    /// `total` slots: shares by weight, at most one slot per PG each.
    fn node_targets(&self, si: usize, total: u64, prev_count: &[u64], p: u64) -> Vec<(usize, Bound)> {
        let members = &self.sites[si].members;
        if members.is_empty() {
            return Vec::new();
        }
        let w: Vec<f64> = members.iter().map(|&mi| self.members[mi].weight).collect();
        let ideal = water_fill(&w, &vec![0.0; w.len()], &vec![p as f64; w.len()], total as f64);
        let prev: Vec<u64> = members.iter().map(|&mi| prev_count[mi]).collect();
        let keys: Vec<u64> = members.iter().map(|&mi| u64::from(self.members[mi].id.0)).collect();
        let target = round_sticky(&ideal, &vec![p; w.len()], &prev, &keys, total);
        members
            .iter()
            .enumerate()
            .map(|(i, &mi)| {
                let b = band(ideal[i], target[i], 0, p);
                (mi, Bound { target: b.target, lo: b.lo, hi: b.hi, new: prev[i] == 0, key: keys[i] })
            })
            .collect()
    }
}

/// The previous slot table, seen through the new topology.
struct Previous {
    /// `in_site[s][pg]`: the listed nodes (in service or not) of site s that held
    /// a slot of pg. Unknown nodes and duplicates are ignored; rows beyond the PG
    /// count are dropped.
    in_site: Vec<Vec<Vec<NodeId>>>,
    /// Slots each in-service node held.
    member_count: Vec<u64>,
    /// Slots each site's listed nodes held.
    site_total: Vec<u64>,
}

impl Previous {
    fn read(shape: &Shape, pgs: usize, previous: &[Vec<NodeId>]) -> Self {
        let nsites = shape.sites.len();
        let mut prev = Previous {
            in_site: vec![vec![Vec::new(); pgs]; nsites],
            member_count: vec![0; shape.members.len()],
            site_total: vec![0; nsites],
        };
        for (pg, row) in previous.iter().enumerate().take(pgs) {
            for (i, id) in row.iter().enumerate() {
                if row[..i].contains(id) {
                    continue;
                }
                if let Some(l) = shape.listed.get(id) {
                    prev.in_site[l.site][pg].push(*id);
                    prev.site_total[l.site] += 1;
                    if let Some(mi) = l.member {
                        prev.member_count[mi] += 1;
                    }
                }
            }
        }
        prev
    }
}

/// Puts a PG's chosen nodes into slot positions: a node that held slot i keeps
/// it; the others take the free positions in an order hashed from PG and node.
fn place(prev: Option<&[NodeId]>, nodes: &[NodeId], width: usize, pg: u64) -> Vec<NodeId> {
    let mut out: Vec<Option<NodeId>> = vec![None; width];
    if let Some(prev) = prev {
        for (i, id) in prev.iter().enumerate().take(width) {
            if nodes.contains(id) && !out.contains(&Some(*id)) {
                out[i] = Some(*id);
            }
        }
    }
    let mut fresh: Vec<NodeId> = nodes.iter().filter(|id| !out.contains(&Some(**id))).copied().collect();
    fresh.sort_by_key(|id| (mix(pg, u64::from(id.0)), *id));
    let mut fresh = fresh.into_iter();
    out.into_iter().map(|slot| slot.or_else(|| fresh.next()).expect("one node per slot")).collect()
}

/// Which memberships to give up first, and a hook told about every one given up.
trait DropPolicy {
    /// Higher means cheaper to drop `col` from `row`; -10 or less means the drop
    /// will cost an extra move elsewhere.
    fn score(&self, _row: usize, _col: usize) -> i64 {
        0
    }
    fn dropped(&mut self, _row: usize, _col: usize) {}
}

struct NoPolicy;
impl DropPolicy for NoPolicy {}

/// Level-1 policy: when a site gives up its extra slot in a PG, one of the
/// site's nodes in that PG loses its slot. Prefer PGs where that slot is on a
/// node leaving service (it moves anyway), then on a node above its target,
/// then on one that stays inside its band; and decide right here which node it
/// is, so that level 2 agrees.
struct ExtraDrops<'s, 'a> {
    shape: &'s Shape<'a>,
    cols: &'s [usize],
    prev_in_site: &'s [Vec<Vec<NodeId>>],
    /// Per member: previous slot count minus the drops decided so far.
    left: Vec<u64>,
    /// Per member: planned (target, lo).
    plan: &'s [(u64, u64)],
    drop_choice: &'s mut [Vec<Option<usize>>],
}

impl ExtraDrops<'_, '_> {
    /// The in-service node of `site` that gives up its slot of `pg` when the
    /// site's extra there goes; None when the site holds no more than its base
    /// there in service (the extra was on a node leaving service).
    fn victim(&self, site: usize, pg: usize) -> Option<usize> {
        let members = || self.prev_in_site[site][pg].iter().filter_map(|id| self.shape.listed[id].member);
        if members().count() <= self.shape.sites[site].base {
            return None;
        }
        members().max_by_key(|&mi| {
            let (target, _) = self.plan[mi];
            (self.left[mi] as i64 - target as i64, mix(pg as u64, u64::from(self.shape.members[mi].id.0)))
        })
    }
}

impl DropPolicy for ExtraDrops<'_, '_> {
    fn score(&self, row: usize, col: usize) -> i64 {
        match self.victim(self.cols[col], row) {
            None => 2,
            Some(mi) => {
                let (target, lo) = self.plan[mi];
                if self.left[mi] > target {
                    1
                } else if self.left[mi] > lo {
                    0
                } else {
                    -10
                }
            }
        }
    }

    fn dropped(&mut self, row: usize, col: usize) {
        let site = self.cols[col];
        if let Some(mi) = self.victim(site, row) {
            self.left[mi] = self.left[mi].saturating_sub(1);
            self.drop_choice[site][row] = Some(mi);
        }
    }
}

/// What a column (a site at level 1, a node at level 2) should hold.
#[derive(Clone, Copy, Debug)]
struct Bound {
    /// The rounded ideal.
    target: u64,
    /// The band: counts in `lo..=hi` are left alone.
    lo: u64,
    hi: u64,
    /// The column held nothing before: it is filled to its target, not just to `lo`.
    new: bool,
    /// Stable key for tie-breaking hashes.
    key: u64,
}

impl Bound {
    /// Below this a column takes memberships from others.
    fn want(&self) -> u64 {
        if self.new { self.target } else { self.lo }
    }
}

/// The target of an ideal value and the band around it: at least floor..=ceil
/// of the ideal, widened to ±SLACK of it, kept within `min..=max`.
fn band(ideal: f64, target: u64, min: u64, max: u64) -> Bound {
    let down = ((ideal * (1.0 - SLACK)) - 1e-7).ceil().max(0.0) as u64;
    let up = ((ideal * (1.0 + SLACK)) + 1e-7).floor().max(0.0) as u64;
    let fl = (ideal + 1e-7).floor().max(0.0) as u64;
    let ce = (ideal - 1e-7).ceil().max(0.0) as u64;
    let target = target.clamp(min, max);
    let lo = down.min(fl).clamp(min, target);
    let hi = up.max(ce).clamp(target, max);
    Bound { target, lo, hi, new: false, key: 0 }
}

/// How far, as a fraction of its ideal, a count may drift before the
/// assignment spends moves on correcting it (beyond rounding). It applies at
/// both levels (site totals, and nodes within their site), so a node's share
/// stays within about ±4.9% of its weight share; the slack is what lets a lost
/// node's slots land where the PG structure allows without moving others.
const SLACK: f64 = 0.024;

/// A 0/1 matrix with prescribed row sums (`demand`) and column sums kept within
/// each column's band, built from a previous matrix with as few changes as the
/// sums allow.
struct Matrix<'q> {
    demand: &'q [u32],
    cols: &'q [Bound],
    salt: u64,
    rows: Vec<Vec<u32>>,
    count: Vec<u64>,
}

impl Matrix<'_> {
    /// Requires Σ demand within Σ lo..=Σ hi, every hi ≤ rows and every demand ≤
    /// columns, with demands differing by at most one; then the rows always
    /// reach their demand, and the columns their band unless the PG structure
    /// forbids it.
    fn solve(demand: &[u32], cols: &[Bound], mut rows: Vec<Vec<u32>>, salt: u64, policy: &mut dyn DropPolicy) -> Vec<Vec<u32>> {
        let ncols = cols.len();
        let mut count = vec![0u64; ncols];
        for row in &mut rows {
            let mut clean: Vec<u32> = Vec::with_capacity(row.len());
            for &c in row.iter() {
                if (c as usize) < ncols && !clean.contains(&c) {
                    clean.push(c);
                    count[c as usize] += 1;
                }
            }
            *row = clean;
        }
        let mut mx = Matrix { demand, cols, salt, rows, count };
        mx.trim_rows(policy);
        mx.trim_columns(policy);
        mx.fill();
        mx.raise(policy);
        mx.rows
    }

    fn tie(&self, row: usize, col: u32) -> u64 {
        mix(mix(self.salt, row as u64), self.cols[col as usize].key)
    }

    /// How far a column is above its target (negative: below).
    fn excess(&self, col: u32) -> i64 {
        self.count[col as usize] as i64 - self.cols[col as usize].target as i64
    }

    fn remove(&mut self, row: usize, col: u32, policy: &mut dyn DropPolicy) {
        let pos = self.rows[row].iter().position(|&c| c == col).expect("column in row");
        self.rows[row].remove(pos);
        self.count[col as usize] -= 1;
        policy.dropped(row, col as usize);
    }

    /// Rows above their demand give up the columns most above target.
    fn trim_rows(&mut self, policy: &mut dyn DropPolicy) {
        for r in 0..self.rows.len() {
            while self.rows[r].len() > self.demand[r] as usize {
                let col = *self.rows[r]
                    .iter()
                    .max_by_key(|&&c| (self.excess(c), policy.score(r, c as usize), self.tie(r, c)))
                    .expect("non-empty row");
                self.remove(r, col, policy);
            }
        }
    }

    /// Columns above their band leave rows until they are back at its top,
    /// preferring rows that can then be refilled with a column below its target
    /// (otherwise the refill needs an augmenting path), and what the policy
    /// says is cheap.
    fn trim_columns(&mut self, policy: &mut dyn DropPolicy) {
        let under: Vec<u32> = (0..self.cols.len() as u32).filter(|&c| self.excess(c) < 0).collect();
        let key = |mx: &Self, policy: &dyn DropPolicy, r: usize, c: u32| {
            let refillable = under.iter().any(|u| !mx.rows[r].contains(u));
            policy.score(r, c as usize) - if refillable { 0 } else { 10 }
        };
        for col in 0..self.cols.len() as u32 {
            let hi = self.cols[col as usize].hi;
            if self.count[col as usize] <= hi {
                continue;
            }
            // Lazy greedy: keys only ever drop, so a popped entry whose key is
            // still current is the best one.
            let mut heap: BinaryHeap<(i64, u64, usize)> = (0..self.rows.len())
                .filter(|&r| self.rows[r].contains(&col))
                .map(|r| (key(self, &*policy, r, col), self.tie(r, col), r))
                .collect();
            while self.count[col as usize] > hi {
                let Some((k, tie, r)) = heap.pop() else { break };
                let now = key(self, &*policy, r, col);
                if now < k {
                    heap.push((now, tie, r));
                    continue;
                }
                self.remove(r, col, policy);
            }
        }
    }

    /// Short rows take a column below its band if they can, else the column
    /// furthest below its target, never one at the top of its band; when no
    /// column fits, an augmenting path makes room.
    fn fill(&mut self) {
        for r in 0..self.rows.len() {
            while self.rows[r].len() < self.demand[r] as usize {
                let best = (0..self.cols.len() as u32)
                    .filter(|&c| self.count[c as usize] < self.cols[c as usize].hi && !self.rows[r].contains(&c))
                    .max_by_key(|&c| {
                        let b = &self.cols[c as usize];
                        (self.count[c as usize] < b.want(), -self.excess(c), self.tie(r, c))
                    });
                match best {
                    Some(c) => {
                        self.rows[r].push(c);
                        self.count[c as usize] += 1;
                    }
                    None => {
                        if !self.augment(r) {
                            // Cannot happen when the sums are consistent (see `solve`);
                            // leaving the row short would be caught by `validate`.
                            debug_assert!(false, "no augmenting path for row {r}");
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Breadth-first search for a chain "row r takes c1; row r1 gives c1 up and
    /// takes c2; …; row rj takes a column below the top of its band". Every
    /// column on the chain except the last keeps its count; row r gains one.
    fn augment(&mut self, r: usize) -> bool {
        const START: u32 = u32::MAX;
        let ncols = self.cols.len();
        let room = |mx: &Self, c: u32| mx.count[c as usize] < mx.cols[c as usize].hi;
        // parent[c] = (row that takes c, column that row gives up or START).
        let mut parent: Vec<Option<(usize, u32)>> = vec![None; ncols];
        let mut queue = VecDeque::new();
        let mut end = None;
        for c in 0..ncols as u32 {
            if !self.rows[r].contains(&c) {
                parent[c as usize] = Some((r, START));
                if room(self, c) {
                    end = Some(c);
                    break;
                }
                queue.push_back(c);
            }
        }
        'search: while end.is_none() {
            let Some(c) = queue.pop_front() else { break };
            for r2 in 0..self.rows.len() {
                if !self.rows[r2].contains(&c) {
                    continue;
                }
                for c2 in 0..ncols as u32 {
                    if parent[c2 as usize].is_some() || self.rows[r2].contains(&c2) {
                        continue;
                    }
                    parent[c2 as usize] = Some((r2, c));
                    if room(self, c2) {
                        end = Some(c2);
                        break 'search;
                    }
                    queue.push_back(c2);
                }
            }
        }
        let Some(mut c) = end else { return false };
        self.count[c as usize] += 1;
        loop {
            let (taker, gave) = parent[c as usize].expect("column on the path");
            self.rows[taker].push(c);
            if gave == START {
                return true;
            }
            let pos = self.rows[taker].iter().position(|&x| x == gave).expect("given-up column in row");
            self.rows[taker].remove(pos);
            c = gave;
        }
    }

    /// Columns below their band (or new columns below their target) take over
    /// memberships of columns above what they want, one swap per slot: the
    /// donor most above its target, in a row the policy says is cheap.
    fn raise(&mut self, policy: &mut dyn DropPolicy) {
        for col in 0..self.cols.len() as u32 {
            let want = self.cols[col as usize].want();
            if self.count[col as usize] >= want {
                continue;
            }
            let key = |mx: &Self, policy: &dyn DropPolicy, r: usize, d: u32| {
                (policy.score(r, d as usize), mx.excess(d), mx.tie(r, d))
            };
            let mut heap: BinaryHeap<((i64, i64, u64), usize, u32)> = BinaryHeap::new();
            for r in 0..self.rows.len() {
                if self.rows[r].contains(&col) {
                    continue;
                }
                for &d in &self.rows[r] {
                    heap.push((key(self, &*policy, r, d), r, d));
                }
            }
            while self.count[col as usize] < want {
                let Some((k, r, d)) = heap.pop() else { break };
                if self.rows[r].contains(&col) || !self.rows[r].contains(&d) {
                    continue;
                }
                if self.count[d as usize] <= self.cols[d as usize].want() {
                    continue;
                }
                let now = key(self, &*policy, r, d);
                if now < k {
                    heap.push((now, r, d));
                    continue;
                }
                self.remove(r, d, policy);
                self.rows[r].push(col);
                self.count[col as usize] += 1;
            }
        }
    }
}

/// Values `clamp(λ·w_i, lo_i, hi_i)` with the λ that makes them sum to `total`
/// (or as close as the bounds allow). Requires lo_i ≤ hi_i.
fn water_fill(weights: &[f64], lo: &[f64], hi: &[f64], total: f64) -> Vec<f64> {
    let at = |lambda: f64| -> Vec<f64> {
        weights.iter().zip(lo).zip(hi).map(|((w, &l), &h)| (lambda * w).clamp(l, h)).collect()
    };
    let sum_at = |lambda: f64| at(lambda).iter().sum::<f64>();
    let (mut a, mut b) = (0.0f64, 1.0f64);
    let mut guard = 0;
    while sum_at(b) < total && guard < 2000 {
        a = b;
        b *= 2.0;
        guard += 1;
    }
    for _ in 0..200 {
        let mid = 0.5 * (a + b);
        if mid <= a || mid >= b {
            break;
        }
        if sum_at(mid) < total {
            a = mid;
        } else {
            b = mid;
        }
    }
    at(b)
}

/// Integers summing to `total`, each the floor or the ceiling of its ideal and at
/// most its cap (when the total allows). The units left after flooring go first
/// to entries whose previous value was above the floor, then by largest fraction.
fn round_sticky(ideal: &[f64], cap: &[u64], prev: &[u64], keys: &[u64], total: u64) -> Vec<u64> {
    let n = ideal.len();
    let mut v: Vec<u64> = (0..n).map(|i| (((ideal[i] + 1e-7).floor().max(0.0)) as u64).min(cap[i])).collect();
    let mut sum: u64 = v.iter().sum();
    let frac = |v: &[u64], i: usize| ideal[i] - v[i] as f64;
    if sum < total {
        let mut order: Vec<usize> = (0..n).filter(|&i| v[i] < cap[i]).collect();
        order.sort_by(|&a, &b| {
            (prev[b] > v[b])
                .cmp(&(prev[a] > v[a]))
                .then(frac(&v, b).total_cmp(&frac(&v, a)))
                .then(keys[a].cmp(&keys[b]))
        });
        for i in order {
            if sum == total {
                break;
            }
            v[i] += 1;
            sum += 1;
        }
    }
    // Only reached through floating-point slop: nudge the most deserving entry.
    while sum < total {
        let Some(i) = (0..n).filter(|&i| v[i] < cap[i]).max_by(|&a, &b| frac(&v, a).total_cmp(&frac(&v, b))) else {
            break;
        };
        v[i] += 1;
        sum += 1;
    }
    while sum > total {
        let Some(i) = (0..n).filter(|&i| v[i] > 0).min_by(|&a, &b| frac(&v, a).total_cmp(&frac(&v, b))) else {
            break;
        };
        v[i] -= 1;
        sum -= 1;
    }
    v
}

/// A 64-bit mixer (splitmix64 finaliser over a combination of two words).
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_add(0x9E37_79B9_7F4A_7C15).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a of a site name: a key that does not depend on where the site is listed.
fn name_key(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3))
}
