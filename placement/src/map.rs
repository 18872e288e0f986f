//! The placement map: which k+m nodes hold each placement group, at which epoch.
//!
//! An object goes to PG `pg_of(bucket, key)`; slot i of that PG holds shard i.
//! The PG comes from a 64-bit key hash ([`key_hash`]) by the map's
//! [`PgFunction`]: the top bits of the hash for maps made since PGs became
//! enumerable (P a power of two, so that doubling P splits every PG into two
//! children and moves no object between unrelated PGs), or the hash modulo P
//! for maps made before (read back from files without the field).
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

/// The most placement groups a map may have (a split is refused above it):
/// 2^20 rows of k+m node ids, tens of MiB of map, far past what the
/// simulation (`sillok sim`) found useful.
pub const MAX_PG_COUNT: u32 = 1 << 20;

/// Earlier slot rows kept per PG (see the module comment).
pub const MAX_PREVIOUS_ROWS: usize = 16;

/// The 64-bit hash that places `bucket/key`: blake3 of `bucket \0 key`, its
/// first 8 bytes read little-endian. Stable across versions of Sillok: shard
/// file names begin with it (`model::placement`), and changing it would
/// orphan every object.
pub fn key_hash(bucket: &str, key: &str) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(bucket.as_bytes());
    h.update(&[0]);
    h.update(key.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// How a key hash picks its PG among `pg_count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PgFunction {
    /// `hash mod P`: maps written before PGs became enumerable. A PG is then
    /// scattered over the hash space, so listing one scans everything.
    #[default]
    Modulo,
    /// The top log2(P) bits of the hash, P a power of two: a PG is one
    /// contiguous hash range ([`PgFunction::hash_range`]), and doubling P
    /// splits each PG in two.
    TopBits,
}

impl PgFunction {
    pub fn pg_of_hash(self, hash: u64, pg_count: u32) -> PgId {
        let p = pg_count.max(1);
        match self {
            PgFunction::Modulo => (hash % u64::from(p)) as PgId,
            PgFunction::TopBits => {
                let bits = p.trailing_zeros();
                if bits == 0 { 0 } else { (hash >> (64 - bits)) as PgId }
            }
        }
    }

    /// The PG that `child` (a PG among `new_count`) was part of among
    /// `old_count` PGs, `new_count` a multiple of `old_count` (a power-of-two
    /// multiple for `TopBits`). Every hash of `child` had that PG: top bits
    /// drop the low bits of the PG number (PG p splits into p·f .. p·f+f-1),
    /// and `h mod fP` is `h mod P` plus a multiple of P (PG p splits into
    /// p, p+P, .. p+(f-1)P). So a split moves no object between unrelated
    /// PGs under either function, and maps made before `TopBits` split in
    /// place too.
    pub fn parent_of(self, child: PgId, new_count: u32, old_count: u32) -> PgId {
        let old = old_count.max(1);
        match self {
            PgFunction::Modulo => child % old,
            PgFunction::TopBits => child >> (new_count.max(1) / old).trailing_zeros(),
        }
    }

    /// The inclusive hash range of PG `pg`, when the PG is one range
    /// (`TopBits`); `None` for `Modulo`.
    pub fn hash_range(self, pg: PgId, pg_count: u32) -> Option<(u64, u64)> {
        match self {
            PgFunction::Modulo => None,
            PgFunction::TopBits => {
                let bits = pg_count.max(1).trailing_zeros();
                if bits == 0 {
                    return Some((0, u64::MAX));
                }
                let lo = u64::from(pg) << (64 - bits);
                Some((lo, lo | (u64::MAX >> bits)))
            }
        }
    }
}

/// The PG of an object under the modulo function (maps made before
/// [`PgFunction::TopBits`]); [`PlacementMap::pg_of`] applies the map's own.
pub fn pg_of(bucket: &str, key: &str, pg_count: u32) -> PgId {
    PgFunction::Modulo.pg_of_hash(key_hash(bucket, key), pg_count)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacementMap {
    /// Grows by at least one with every change.
    pub epoch: u64,
    pub profile: EcProfile,
    pub pg_count: u32,
    /// How a key hash picks its PG (absent in maps made before it existed:
    /// those keep `Modulo`).
    #[serde(default)]
    pub pg_function: PgFunction,
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
        Self::with_pg_function(topology, profile, pg_count, PgFunction::TopBits)
    }

    /// [`PlacementMap::new`] under a given PG function (`Modulo` is how maps
    /// made before `TopBits` place objects; tests of the assignment use it
    /// for PG counts that are not powers of two).
    pub fn with_pg_function(
        topology: Topology,
        profile: EcProfile,
        pg_count: u32,
        pg_function: PgFunction,
    ) -> Result<Self, PlacementError> {
        let slots = assign::assign(&topology, profile, pg_count, None)?;
        let map =
            PlacementMap { epoch: 1, profile, pg_count, pg_function, topology, slots, previous: Default::default() };
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
            pg_function: self.pg_function,
            topology,
            slots,
            previous,
        };
        map.validate()?;
        Ok(map)
    }

    /// The same placement described with `count` PGs: each PG splits into
    /// `count / pg_count` children, and every child takes its parent's slot
    /// row and earlier rows, so no object's nodes change. Same epoch: this
    /// is the starting point of a split, never published by itself; the
    /// catalog runs the assignment on it ([`PlacementMap::with_topology`]),
    /// which places each child, and data moves only where a child's slots
    /// then differ from its parent's. Refused unless `count` is a multiple
    /// of the PG count (a power of two for `TopBits`), larger, and at most
    /// [`MAX_PG_COUNT`].
    pub fn split(&self, count: u32) -> Result<Self, PlacementError> {
        let p = self.pg_count;
        if count <= p {
            return Err(PlacementError::InvalidSplit(format!(
                "the map has {p} PGs; a split needs more (PGs never merge)"
            )));
        }
        if count > MAX_PG_COUNT {
            return Err(PlacementError::InvalidSplit(format!("{count} PGs is more than the {MAX_PG_COUNT} allowed")));
        }
        if !count.is_multiple_of(p) {
            return Err(PlacementError::InvalidSplit(format!(
                "{count} is not a multiple of the current {p} PGs: each PG must split into the same number of children"
            )));
        }
        if self.pg_function == PgFunction::TopBits && !count.is_power_of_two() {
            return Err(PlacementError::InvalidSplit(format!(
                "{count} is not a power of two (this map takes a PG from the top bits of the hash, so it splits \
                 by factors of two: {} or {} would do)",
                p * 2,
                p * 4
            )));
        }
        let parent = |c: u32| self.pg_function.parent_of(c, count, p);
        let slots = (0..count).map(|c| self.slots[parent(c) as usize].clone()).collect();
        let previous = (0..count).filter_map(|c| self.previous.get(&parent(c)).map(|rows| (c, rows.clone()))).collect();
        Ok(PlacementMap { pg_count: count, slots, previous, ..self.clone() })
    }

    /// The next map (epoch + 1) without the earlier rows of `pgs`: their
    /// data has moved to the current rows (`rebalance`).
    pub fn without_earlier_rows(&self, pgs: &[PgId]) -> Self {
        let mut next = self.clone();
        next.epoch += 1;
        for pg in pgs {
            next.previous.remove(pg);
        }
        next
    }

    /// The next map (epoch + 1) with every move not yet finished turned
    /// back: each PG that still has earlier rows takes its newest earlier row
    /// as its slots again, and keeps the row it leaves as an earlier row
    /// (shards already moved there are found through it and moved back).
    pub fn with_moves_cancelled(&self) -> Result<Self, PlacementError> {
        let mut next = self.clone();
        next.epoch += 1;
        for (pg, rows) in next.previous.iter_mut() {
            let Some(back) = rows.first().cloned() else { continue };
            let current = std::mem::replace(&mut next.slots[*pg as usize], back.clone());
            rows.retain(|r| *r != back && *r != current);
            rows.insert(0, current);
            rows.truncate(MAX_PREVIOUS_ROWS);
        }
        next.validate()?;
        Ok(next)
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

    /// The PG of an object (see `model::placement` for the keys of the
    /// gateway's own namespaces, which are placed with their object).
    pub fn pg_of(&self, bucket: &str, key: &str) -> PgId {
        self.pg_of_hash(key_hash(bucket, key))
    }

    pub fn pg_of_hash(&self, hash: u64) -> PgId {
        self.pg_function.pg_of_hash(hash, self.pg_count)
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
        let rows = RowCheck::of(self)?;
        for (pg, row) in self.slots.iter().enumerate() {
            rows.check(pg as PgId, row)?;
        }
        Ok(())
    }
}

/// What checking one slot row needs from its map (the map-wide checks are
/// made once, when it is built): the row's width, the per-site cap, and each
/// node's site and whether it may hold slots, by id (a hash lookup: maps of
/// 1,000 nodes and 2^16 PGs check a million slots).
pub(crate) struct RowCheck<'a> {
    width: usize,
    cap: usize,
    m: u8,
    nodes: std::collections::HashMap<NodeId, (&'a str, NodeState)>,
}

impl<'a> RowCheck<'a> {
    /// Checks what does not depend on any one row (profile, topology, PG
    /// count and function, the number of rows) and gets ready to check rows.
    pub(crate) fn of(map: &'a PlacementMap) -> Result<Self, PlacementError> {
        map.profile.check()?;
        map.topology.check()?;
        if map.pg_count == 0 {
            return Err(PlacementError::InvalidTopology("the map needs at least one placement group".into()));
        }
        if map.pg_function == PgFunction::TopBits && !map.pg_count.is_power_of_two() {
            return Err(PlacementError::InvalidTopology(format!(
                "the PG count must be a power of two (got {}), so that PGs can split",
                map.pg_count
            )));
        }
        if map.slots.len() != map.pg_count as usize {
            return Err(PlacementError::InvalidMap(format!(
                "{} PGs declared but {} slot rows present",
                map.pg_count,
                map.slots.len()
            )));
        }
        let nodes = map.topology.nodes.iter().map(|n| (n.id, (n.site.as_str(), n.state))).collect();
        Ok(RowCheck {
            width: map.profile.width(),
            cap: crate::assign::site_cap(&map.topology, map.profile),
            m: map.profile.m,
            nodes,
        })
    }

    /// The per-site cap the rows are checked against.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// Checks one slot row: k+m distinct nodes of the topology, each in
    /// service, at most `cap` of them in one site.
    pub(crate) fn check(&self, pg: PgId, row: &[NodeId]) -> Result<(), PlacementError> {
        if row.len() != self.width {
            return Err(PlacementError::InvalidMap(format!("PG {pg} has {} slots, needs {}", row.len(), self.width)));
        }
        let mut per_site: Vec<(&str, usize)> = Vec::with_capacity(row.len());
        for (i, n) in row.iter().enumerate() {
            if row[..i].contains(n) {
                return Err(PlacementError::InvalidMap(format!("PG {pg} uses node {n} twice")));
            }
            let &(site, state) = self
                .nodes
                .get(n)
                .ok_or_else(|| PlacementError::InvalidMap(format!("PG {pg} slot {i} names unknown node {n}")))?;
            if !state.holds_slots() && state != NodeState::Draining {
                return Err(PlacementError::InvalidMap(format!("PG {pg} slot {i} is on node {n}, which is {state:?}")));
            }
            match per_site.iter_mut().find(|(s, _)| *s == site) {
                Some((_, c)) => *c += 1,
                None => per_site.push((site, 1)),
            }
        }
        if let Some((site, count)) = per_site.into_iter().find(|(_, c)| *c > self.cap) {
            return Err(PlacementError::InvalidMap(format!(
                "PG {pg} has {count} slots in site {site}; at most {} are allowed (m={}, more only while a whole \
                 site is out)",
                self.cap, self.m
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod pg_function_tests {
    use super::*;
    use crate::topology::Site;

    /// Three sites of `per_site` nodes each; node i of a site weighs `weight(i)`.
    fn three_sites(per_site: u32, weight: impl Fn(u32) -> f64) -> Topology {
        let mut t = Topology::default();
        for s in 0..3u32 {
            t.sites.push(Site { id: format!("s{s}") });
            for i in 0..per_site {
                let id = s * per_site + i + 1;
                t.nodes.push(Node {
                    id: NodeId(id),
                    site: format!("s{s}"),
                    addr: format!("127.0.0.1:{}", 7000 + id),
                    weight: weight(i),
                    state: NodeState::Up,
                });
            }
        }
        t
    }

    fn two_per_site() -> Topology {
        three_sites(2, |_| 1.0)
    }

    #[test]
    fn top_bits_ranges_cover_the_hash_space_and_split_into_children() {
        for p in [1u32, 2, 64, 1024] {
            let mut next = 0u64;
            for pg in 0..p {
                let (lo, hi) = PgFunction::TopBits.hash_range(pg, p).unwrap();
                assert_eq!(lo, next, "P={p} PG {pg} starts where the previous ended");
                assert_eq!(PgFunction::TopBits.pg_of_hash(lo, p), pg);
                assert_eq!(PgFunction::TopBits.pg_of_hash(hi, p), pg);
                next = hi.wrapping_add(1);
            }
            assert_eq!(next, 0, "P={p}: the ranges end at u64::MAX");
        }
        // Doubling P: every hash's new PG is 2*old or 2*old+1.
        for i in 0..10_000u64 {
            let h = key_hash("b", &i.to_string());
            let old = PgFunction::TopBits.pg_of_hash(h, 1024);
            let new = PgFunction::TopBits.pg_of_hash(h, 2048);
            assert!(new == 2 * old || new == 2 * old + 1);
        }
    }

    fn nine_nodes() -> Topology {
        three_sites(3, |i| 1.0 + f64::from(i))
    }

    #[test]
    fn a_split_keeps_every_object_on_its_nodes_under_both_functions() {
        for function in [PgFunction::TopBits, PgFunction::Modulo] {
            let old = PlacementMap::with_pg_function(nine_nodes(), EcProfile { k: 4, m: 2 }, 256, function).unwrap();
            let mut old = old.with_topology(old.topology.clone()).unwrap();
            // An earlier row on one PG, as a move in progress leaves it.
            old.previous.insert(7, vec![old.slots[8].clone()]);
            let split = old.split(1024).unwrap();
            assert_eq!((split.pg_count, split.epoch), (1024, old.epoch));
            split.validate().unwrap();
            for i in 0..20_000u64 {
                let h = key_hash("b", &i.to_string());
                let (p, c) = (old.pg_of_hash(h), split.pg_of_hash(h));
                assert_eq!(function.parent_of(c, 1024, 256), p, "{function:?}: child {c} of PG {p}");
                assert_eq!(split.slots(c), old.slots(p), "{function:?}: hash {h} keeps its nodes");
                assert_eq!(split.previous.get(&c), old.previous.get(&p), "and its earlier rows");
            }
            // The assignment on the split map is at its fixed point: the
            // catalog's map change after a split alone moves nothing.
            let next = split.with_topology(split.topology.clone()).unwrap();
            assert_eq!(crate::assign::moved_slots(&split.slots, &next.slots), 0, "{function:?}");
            assert_eq!(next.epoch, old.epoch + 1);
        }
    }

    #[test]
    fn a_split_with_a_new_node_moves_about_the_new_nodes_share_only() {
        let old = PlacementMap::new(nine_nodes(), EcProfile { k: 4, m: 2 }, 256).unwrap();
        let mut t = old.topology.clone();
        t.nodes.push(Node {
            id: NodeId(10),
            site: "s1".into(),
            addr: "127.0.0.1:7010".into(),
            weight: 2.0,
            state: NodeState::Up,
        });
        let split = old.split(2048).unwrap();
        let next = split.with_topology(t).unwrap();
        let moved = crate::assign::moved_slots(&split.slots, &next.slots);
        let gained = next.slots.iter().filter(|r| r.contains(&NodeId(10))).count();
        assert!(gained > 0 && moved <= gained + gained / 20, "moved {moved}, the new node holds {gained}");
    }

    #[test]
    fn splits_that_cannot_be_made_are_refused_with_the_reason() {
        let map = PlacementMap::new(nine_nodes(), EcProfile { k: 4, m: 2 }, 256).unwrap();
        for (count, says) in [(256, "never merge"), (128, "never merge"), (768, "power of two"), (1 << 21, "allowed")] {
            let e = map.split(count).unwrap_err().to_string();
            assert!(e.contains(says), "{count}: {e}");
        }
        let modulo =
            PlacementMap::with_pg_function(nine_nodes(), EcProfile { k: 4, m: 2 }, 100, PgFunction::Modulo).unwrap();
        assert!(modulo.split(250).unwrap_err().to_string().contains("multiple"));
        assert_eq!(modulo.split(300).unwrap().pg_count, 300, "modulo maps split by any whole factor");
    }

    #[test]
    fn maps_without_the_field_keep_the_modulo_function() {
        let t = two_per_site();
        let map = PlacementMap::new(t, EcProfile { k: 4, m: 2 }, 64).unwrap();
        assert_eq!(map.pg_function, PgFunction::TopBits);
        let mut v = serde_json::to_value(&map).unwrap();
        v.as_object_mut().unwrap().remove("pg_function");
        let old: PlacementMap = serde_json::from_value(v).unwrap();
        assert_eq!(old.pg_function, PgFunction::Modulo);
        assert_eq!(old.pg_of("b", "k"), pg_of("b", "k", 64));
        assert!(PlacementMap::new(two_per_site(), EcProfile { k: 4, m: 2 }, 100).is_err());
    }
}
