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
fn lower_bound(t: &Topology, p: EcProfile, old: &[Vec<NodeId>], new: &[Vec<NodeId>]) -> i64 {
    let m = p.m as usize;
    let live = |n: &&Node| n.effective_weight() > 0.0;
    let caps: Vec<usize> = t.sites.iter().map(|s| t.nodes.iter().filter(live).filter(|n| n.site == s.id).count().min(m)).collect();
    let level = (0..=m).filter(|&l| caps.iter().map(|&c| c.min(l)).sum::<usize>() <= p.width()).max().unwrap();
    let (co, cn) = (counts(old), counts(new));
    let mut bound: i64 = co.iter().filter(|(id, _)| t.node(**id).is_none_or(|n| n.effective_weight() <= 0.0)).map(|(_, c)| *c).sum();
    for (si, s) in t.sites.iter().enumerate() {
        let members: Vec<NodeId> = t.nodes.iter().filter(live).filter(|n| n.site == s.id).map(|n| n.id).collect();
        let get = |c: &BTreeMap<NodeId, i64>, id: &NodeId| c.get(id).copied().unwrap_or(0);
        let drops: i64 = members.iter().map(|id| (get(&co, id) - get(&cn, id)).max(0)).sum();
        let ot: i64 = members.iter().map(|id| get(&co, id)).sum();
        let nt: i64 = members.iter().map(|id| get(&cn, id)).sum();
        let base = caps[si].min(level) as i64;
        let forced: i64 = old.iter().map(|row| (base - row.iter().filter(|id| members.contains(id)).count() as i64).max(0)).sum();
        bound += drops.max(ot + forced - nt);
    }
    bound
}
const PROFILES: [EcProfile; 6] = [EcProfile { k: 4, m: 2 }, EcProfile { k: 4, m: 2 }, EcProfile { k: 4, m: 2 }, EcProfile { k: 8, m: 4 }, EcProfile { k: 2, m: 1 }, EcProfile { k: 6, m: 3 }];
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cases: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(200);
    let mut rng = Rng(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1));
    let mut worst_add: Vec<(f64, String)> = vec![];
    let mut worst_rm: Vec<(f64, String)> = vec![];
    let (mut rm_strict_ok, mut rm_total) = (0, 0);
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
        if let Some(o) = args.get(3) { if o.parse::<u64>().unwrap() != case { continue; } }
        let old = assign(&t, p, pgs, None).unwrap();
        // add
        let mut t2 = t.clone();
        let id = NodeId(t.nodes.len() as u32 + 1);
        t2.nodes.push(Node { id, site: format!("s{si}"), addr: String::new(), weight: wnew, state: NodeState::Up });
        if args.get(4).is_some() { eprintln!("---- add"); }
        let new = assign(&t2, p, pgs, Some(&old)).unwrap();
        let (m, g) = (moved_slots(&old, &new), gains(&old, &new));
        worst_add.push((m as f64 / g.max(1) as f64, format!("case {case} {p} P={pgs} sites={:?} add to s{si}: moved {m} gains {g}", sites.iter().map(|s| s.len()).collect::<Vec<_>>())));
        // remove
        if args.get(4).is_some() { eprintln!("---- remove {victim}"); }
        let mut t3 = t.clone();
        t3.nodes.retain(|n| n.id != victim);
        if check_fit(&t3, p).is_ok() {
            let new = assign(&t3, p, pgs, Some(&old)).unwrap();
            let m = moved_slots(&old, &new);
            let had = counts(&old)[&victim]; let _lb = lower_bound(&t3, p, &old, &new);
            rm_total += 1;
            if m as f64 <= 1.05 * had as f64 { rm_strict_ok += 1; }
            worst_rm.push((m as f64 / had as f64, format!("case {case} {p} P={pgs} sites={:?} rm {victim}: moved {m} had {had} gains {}", sites.iter().map(|s| s.len()).collect::<Vec<_>>(), gains(&old, &new))));
        }
    }
    worst_add.sort_by(|a, b| b.0.total_cmp(&a.0));
    worst_rm.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!("elapsed {:?}", start.elapsed());
    println!("worst adds:"); for w in worst_add.iter().take(8) { println!("  {:.3} {}", w.0, w.1); }
    println!("worst removes ({rm_strict_ok}/{rm_total} within 1.05x):"); for w in worst_rm.iter().take(12) { println!("  {:.3} {}", w.0, w.1); }
}
#[allow(dead_code)]
fn unused() {}
