use sillok_placement::assign::{assign, check_fit, moved_slots};
use sillok_placement::*;
use std::collections::BTreeMap;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 { self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); let mut z = self.0; z ^= z >> 33; z = z.wrapping_mul(0xff51afd7ed558ccd); z ^ (z >> 29) }
    fn below(&mut self, n: u64) -> u64 { self.next() % n }
    fn f(&mut self, lo: f64, hi: f64) -> f64 { lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64 }
}
fn topology(sites: &[Vec<(f64, NodeState)>]) -> Topology {
    let mut t = Topology::default();
    let mut next = 1;
    for (si, nodes) in sites.iter().enumerate() {
        let site = format!("s{si}");
        t.sites.push(Site { id: site.clone() });
        for &(weight, state) in nodes {
            t.nodes.push(Node { id: NodeId(next), site: site.clone(), addr: String::new(), weight, state });
            next += 1;
        }
    }
    t
}
fn counts(slots: &[Vec<NodeId>]) -> BTreeMap<NodeId, i64> {
    let mut c = BTreeMap::new();
    for row in slots { for &n in row { *c.entry(n).or_default() += 1; } }
    c
}
fn gains(old: &[Vec<NodeId>], new: &[Vec<NodeId>]) -> i64 {
    let (co, cn) = (counts(old), counts(new));
    cn.iter().map(|(id, c)| (c - co.get(id).copied().unwrap_or(0)).max(0)).sum()
}
fn ideal_totals(t: &Topology, p: EcProfile, pgs: f64, base: &[usize], extra: &[bool]) -> Vec<f64> {
    let live = |n: &&Node| n.effective_weight() > 0.0;
    let w: Vec<f64> = t.sites.iter().map(|s| t.nodes.iter().filter(live).filter(|n| n.site == s.id).map(|n| n.weight).sum()).collect();
    let lo: Vec<f64> = base.iter().map(|&b| b as f64 * pgs).collect();
    let hi: Vec<f64> = base.iter().zip(extra).map(|(&b, &e)| (b + e as usize) as f64 * pgs).collect();
    let total = p.width() as f64 * pgs;
    let (mut a, mut b) = (0.0, 1e12);
    for _ in 0..300 { let mid = (a + b) / 2.0; let s: f64 = (0..w.len()).map(|i| (mid * w[i]).clamp(lo[i], hi[i])).sum(); if s < total { a = mid } else { b = mid } }
    (0..w.len()).map(|i| (b * w[i]).clamp(lo[i], hi[i])).collect()
}
fn lower_bound(t: &Topology, p: EcProfile, old: &[Vec<NodeId>], _new: &[Vec<NodeId>]) -> i64 {
    let m = p.m as usize;
    let pgs = old.len() as f64;
    let live = |n: &&Node| n.effective_weight() > 0.0;
    let caps: Vec<usize> = t.sites.iter().map(|s| t.nodes.iter().filter(live).filter(|n| n.site == s.id).count().min(m)).collect();
    let level = (0..=m).filter(|&l| caps.iter().map(|&c| c.min(l)).sum::<usize>() <= p.width()).max().unwrap();
    let co = counts(old);
    let bases: Vec<usize> = caps.iter().map(|&c| c.min(level)).collect();
    let extras: Vec<bool> = caps.iter().map(|&c| c > level).collect();
    let ideal = ideal_totals(t, p, pgs, &bases, &extras);
    let leaving = |id: &NodeId| t.node(*id).is_none_or(|n| n.effective_weight() <= 0.0);
    let mut bound: i64 = co.iter().filter(|(id, _)| leaving(id)).map(|(_, c)| *c).sum();
    for (si, s) in t.sites.iter().enumerate() {
        let members: Vec<&Node> = t.nodes.iter().filter(live).filter(|n| n.site == s.id).collect();
        let get = |id: &NodeId| co.get(id).copied().unwrap_or(0);
        let ot: i64 = members.iter().map(|n| get(&n.id)).sum();
        let base = bases[si] as i64;
        let forced: i64 = old.iter().map(|row| (base - row.iter().filter(|id| members.iter().any(|n| n.id == **id)).count() as i64).max(0)).sum();
        let allowed = (ideal[si] + (0.05 * ideal[si]).max(1.0)).floor() as i64;
        bound += (ot + forced - allowed).max(0);
        // node level: each node must reach the bottom of its band; gains in rows
        // that lost a leaving node of this site are free, others displace a sibling.
        let w: Vec<f64> = members.iter().map(|n| n.weight).collect();
        let g = cap_fill(&w, ideal[si], pgs);
        for (i, n) in members.iter().enumerate() {
            let need = ((g[i] - (0.05 * g[i]).max(1.0)) - 1e-9).ceil() as i64 - get(&n.id);
            let free = old.iter().filter(|row| !row.contains(&n.id) && row.iter().any(|id| leaving(id) && t.node(*id).is_none_or(|x| x.site == s.id))).count() as i64;
            bound += (need - free).max(0);
        }
    }
    bound
}
fn cap_fill(w: &[f64], total: f64, cap: f64) -> Vec<f64> {
    let (mut a, mut b) = (0.0, 1e12);
    for _ in 0..300 { let mid = (a + b) / 2.0; let s: f64 = w.iter().map(|x| (mid * x).min(cap)).sum(); if s < total { a = mid } else { b = mid } }
    w.iter().map(|x| (b * x).min(cap)).collect()
}
const PROFILES: [EcProfile; 6] = [EcProfile { k: 4, m: 2 }, EcProfile { k: 4, m: 2 }, EcProfile { k: 4, m: 2 }, EcProfile { k: 8, m: 4 }, EcProfile { k: 2, m: 1 }, EcProfile { k: 6, m: 3 }];
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cases: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(200);
    let mut rng = Rng(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1));
    let mut worst_add: Vec<(f64, String)> = vec![];
    let mut worst_rm: Vec<(f64, String)> = vec![];
    let (mut rm_strict_ok, mut rm_total) = (0, 0);
    let (mut r0_total, mut r0_worst) = (0, 0.0f64);
    let (mut rm_q_ok, mut rm_1024, mut rm_1024_ok) = (0, 0, 0);
    let start = std::time::Instant::now();
    for case in 0..cases {
        let nsites = 3 + rng.below(6) as usize;
        let sites: Vec<Vec<(f64, NodeState)>> = (0..nsites).map(|_| (0..1 + rng.below(20)).map(|_| (rng.f(0.5, 4.0), NodeState::Up)).collect()).collect();
        let p = PROFILES[rng.below(6) as usize];
        let pgs = [1024, 256, 97][rng.below(3) as usize];
        let t = topology(&sites);
        let si = rng.below(nsites as u64) as usize;
        let wnew = rng.f(0.5, 4.0);
        let victim = NodeId(1 + rng.below(t.nodes.len() as u64) as u32);
        if check_fit(&t, p).is_err() { continue; }
        if let Some(o) = args.get(3).and_then(|x| x.parse::<u64>().ok()) { if o != case { continue; } }
        let old = assign(&t, p, pgs, None).unwrap();
        // add
        let mut t2 = t.clone();
        let id = NodeId(t.nodes.len() as u32 + 1);
        t2.nodes.push(Node { id, site: format!("s{si}"), addr: String::new(), weight: wnew, state: NodeState::Up });
        if args.get(4).is_some_and(|x| !x.is_empty()) { eprintln!("---- add"); }
        let new = assign(&t2, p, pgs, Some(&old)).unwrap();
        let (m, g) = (moved_slots(&old, &new), gains(&old, &new));
        worst_add.push((m as f64 / g.max(1) as f64, format!("case {case} {p} P={pgs} sites={:?} add to s{si}: moved {m} gains {g}", sites.iter().map(|s| s.len()).collect::<Vec<_>>())));
        // remove
        if args.get(4).is_some_and(|x| !x.is_empty()) { eprintln!("---- remove {victim}"); }
        let mut t3 = t.clone();
        let mode = std::env::var("RM").unwrap_or_default();
        if mode == "out" { t3.nodes.iter_mut().find(|n| n.id == victim).unwrap().state = NodeState::Out; } else { t3.nodes.retain(|n| n.id != victim); }
        if check_fit(&t3, p).is_ok() {
            let new = assign(&t3, p, pgs, Some(&old)).unwrap();
            let m = moved_slots(&old, &new);
            let had = lower_bound(&t3, p, &old, &new);
            rm_total += 1;
            if m as f64 <= 1.05 * had as f64 { rm_strict_ok += 1; }
            let q = counts(&old)[&victim];
            if m as f64 <= 1.05 * q as f64 { rm_q_ok += 1; }
            if pgs == 1024 { rm_1024 += 1; if m as f64 <= 1.05 * q as f64 { rm_1024_ok += 1; } }
            let caps: Vec<usize> = t3.sites.iter().map(|s| t3.nodes.iter().filter(|n| n.effective_weight() > 0.0 && n.site == s.id).count().min(p.m as usize)).collect();
            let r0 = { let mm = p.m as usize; let level = (0..=mm).filter(|&l| caps.iter().map(|&c| c.min(l)).sum::<usize>() <= p.width()).max().unwrap(); caps.iter().map(|&c| c.min(level)).sum::<usize>() == p.width() };
            if r0 { r0_total += 1; r0_worst = r0_worst.max(m as f64 / had as f64); }
            worst_rm.push((m as f64 / had as f64, format!("case {case} {p} P={pgs} sites={:?} rm {victim}: moved {m} had {had} gains {}", sites.iter().map(|s| s.len()).collect::<Vec<_>>(), gains(&old, &new))));
        }
    }
    worst_add.sort_by(|a, b| b.0.total_cmp(&a.0));
    worst_rm.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!("vs own slots: {rm_q_ok}/{rm_total} within 1.05x; P=1024: {rm_1024_ok}/{rm_1024}");
    println!("elapsed {:?}; R=0 cases {r0_total}, worst ratio {r0_worst:.3}", start.elapsed());
    println!("worst adds:"); for w in worst_add.iter().take(8) { println!("  {:.3} {}", w.0, w.1); }
    println!("worst removes ({rm_strict_ok}/{rm_total} within 1.05x):"); for w in worst_rm.iter().take(args.get(5).and_then(|x| x.parse().ok()).unwrap_or(12)) { println!("  {:.3} {}", w.0, w.1); }
}
#[allow(dead_code)]
fn unused() {}
