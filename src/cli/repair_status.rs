//! `sillok admin repair status`: how far the cluster is from full redundancy.
//!
//! Owns: turning the catalog's status (the map, and each storage node's
//! latest report of its rebuild engine and scrub) into PG states, work left,
//! rate and ETA. Every figure comes from what nodes verified: a node counts a
//! shard as done only once it is written, fsynced and read back, and names
//! the PGs it still wants shards in with the fewest shards an object there
//! has on in-service nodes. A PG's state is the worse of that and of what the
//! map says of its slot nodes (a down node's shards are unavailable even
//! before anyone rebuilds them):
//! - `unreadable`: some object has fewer than k shards available;
//! - `critical`: some object has exactly k;
//! - `degraded`: fewer than k+m;
//! - `degraded-site`: k+m on distinct nodes, but a site holds more than m of
//!   them (while a site is out), so losing a second site is not survivable;
//! - `clean`: none of the above;
//! - `unchecked`: a slot node of the PG has not yet listed what it wants
//!   under the current map (just after a map change, or while it is not
//!   reporting), so no state can be vouched for.
//!
//! `complete()` is the drill's "full redundancy": nothing left, every PG
//! checked and at k+m on distinct nodes.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use sillok_catalog::CatalogClient;
use sillok_catalog::api::Status;
use sillok_placement::{NodeState, PlacementMap};

/// The states in the order operators read them, best first.
pub const STATES: [&str; 6] = ["clean", "degraded-site", "degraded", "critical", "unreadable", "unchecked"];

#[derive(Debug, Serialize)]
pub struct RepairStatus {
    pub epoch: u64,
    pub pg_count: u32,
    /// PG count per state (every state named, zeros included).
    pub pgs: BTreeMap<&'static str, u64>,
    /// Shards the storage nodes still have to write or record, and their bytes.
    pub shards_left: u64,
    pub bytes_left: u64,
    /// Rebuilt bytes per second, summed over the nodes' last report intervals.
    pub bytes_per_s: u64,
    /// `bytes_left / bytes_per_s`, when anything is being rebuilt.
    pub eta_s: Option<u64>,
    /// PGs some node could not check (a majority of their replicas did not answer).
    pub pgs_waiting: u64,
    /// Shards found bad by a scrub or a reader and not yet rewritten.
    pub suspects: u64,
    pub scrubbed_bytes: u64,
    /// In-service nodes that have not reported (their work is not counted).
    pub nodes_not_reporting: Vec<u32>,
    /// In-service nodes whose engine has not yet checked the current map.
    pub nodes_not_checked: Vec<u32>,
    pub repair_held: bool,
    /// Why full redundancy cannot be reached as things stand, if it cannot.
    pub limit: Option<String>,
}

impl RepairStatus {
    pub fn of(status: &Status, map: &PlacementMap) -> Self {
        let (k, m, width) = (usize::from(map.profile.k), usize::from(map.profile.m), map.profile.width());
        let mut reported: BTreeMap<u32, u8> = BTreeMap::new();
        let mut s = RepairStatus {
            epoch: map.epoch,
            pg_count: map.pg_count,
            pgs: STATES.iter().map(|st| (*st, 0)).collect(),
            shards_left: 0,
            bytes_left: 0,
            bytes_per_s: 0,
            eta_s: None,
            pgs_waiting: 0,
            suspects: 0,
            scrubbed_bytes: 0,
            nodes_not_reporting: Vec::new(),
            nodes_not_checked: Vec::new(),
            repair_held: status.repair_hold,
            limit: None,
        };
        for n in &status.nodes {
            let report = n.usage.as_ref().and_then(|u| u.repair.as_ref());
            let Some(r) = report else {
                if n.state == NodeState::Up {
                    s.nodes_not_reporting.push(n.id.0);
                }
                continue;
            };
            if r.checked_epoch < map.epoch && n.state == NodeState::Up {
                s.nodes_not_checked.push(n.id.0);
            }
            s.shards_left += r.shards_left;
            s.bytes_left += r.bytes_left;
            s.bytes_per_s += r.bytes_per_s;
            s.pgs_waiting += r.pgs_waiting;
            s.suspects += r.suspects;
            s.scrubbed_bytes += r.scrubbed_bytes;
            for &(pg, live) in &r.pgs {
                reported.entry(pg).and_modify(|l| *l = (*l).min(live)).or_insert(live);
            }
        }
        for pg in 0..map.pg_count {
            let row = map.slots(pg);
            let available = row
                .iter()
                .filter(|n| {
                    map.topology.node(**n).is_some_and(|n| matches!(n.state, NodeState::Up | NodeState::Draining))
                })
                .count();
            let live = reported.get(&pg).map_or(available, |l| usize::from(*l).min(available));
            let mut per_site: BTreeMap<&str, usize> = BTreeMap::new();
            for n in row {
                if let Some(node) = map.topology.node(*n) {
                    *per_site.entry(node.site.as_str()).or_default() += 1;
                }
            }
            let unchecked =
                row.iter().any(|n| s.nodes_not_checked.contains(&n.0) || s.nodes_not_reporting.contains(&n.0));
            let state = if unchecked {
                "unchecked"
            } else if live < k {
                "unreadable"
            } else if live == k {
                "critical"
            } else if live < width {
                "degraded"
            } else if per_site.values().any(|c| *c > m) {
                "degraded-site"
            } else {
                "clean"
            };
            *s.pgs.get_mut(state).expect("every state is listed") += 1;
        }
        if s.bytes_per_s > 0 {
            s.eta_s = Some(s.bytes_left.div_ceil(s.bytes_per_s));
        }
        let up = map.topology.nodes.iter().filter(|n| n.state == NodeState::Up).count();
        if up < width {
            s.limit = Some(format!(
                "only {up} storage nodes are up and {} needs {width} distinct ones: objects keep at most {up} \
                 shards until nodes return or are added",
                map.profile
            ));
        }
        s
    }

    /// Full redundancy as far as the topology allows: nothing left to
    /// rebuild, every PG checked under the current map and at k+m shards.
    pub fn complete(&self) -> bool {
        let below: u64 = ["degraded", "critical", "unreadable", "unchecked"].iter().map(|st| self.pgs[st]).sum();
        self.shards_left == 0 && below == 0 && self.pgs_waiting == 0
    }

    fn progress_line(&self) -> String {
        let clean = self.pgs["clean"] + self.pgs["degraded-site"];
        let total = u64::from(self.pg_count).max(1);
        let filled = (clean * 30 / total) as usize;
        let eta = match self.eta_s {
            Some(s) => format!("ETA {}", human_secs(s)),
            None if self.shards_left == 0 => "nothing to rebuild".into(),
            None => "no progress in the last report".into(),
        };
        format!(
            "[{}{}] {clean}/{total} PGs fully redundant, {} shards ({}) left at {}/s, {eta}",
            "#".repeat(filled),
            ".".repeat(30 - filled),
            self.shards_left,
            super::admin::human_bytes(self.bytes_left),
            super::admin::human_bytes(self.bytes_per_s),
        )
    }

    fn print(&self) {
        let pgs: Vec<String> = STATES.iter().map(|st| format!("{} {st}", self.pgs[st])).collect();
        println!("map epoch {}, {} PGs: {}", self.epoch, self.pg_count, pgs.join(", "));
        println!("{}", self.progress_line());
        println!(
            "PGs waiting for replicas: {}; suspect shards: {}; scrubbed: {}; repair held: {}",
            self.pgs_waiting,
            self.suspects,
            super::admin::human_bytes(self.scrubbed_bytes),
            if self.repair_held { "yes" } else { "no" }
        );
        if !self.nodes_not_checked.is_empty() {
            let ids: Vec<String> = self.nodes_not_checked.iter().map(|n| format!("n{n}")).collect();
            println!("not yet checked under this map: {}", ids.join(", "));
        }
        if !self.nodes_not_reporting.is_empty() {
            let ids: Vec<String> = self.nodes_not_reporting.iter().map(|n| format!("n{n}")).collect();
            println!("up but not reporting (not counted): {}", ids.join(", "));
        }
        if let Some(limit) = &self.limit {
            println!("limit: {limit}");
        }
    }
}

fn human_secs(s: u64) -> String {
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

pub async fn fetch(c: &CatalogClient) -> anyhow::Result<RepairStatus> {
    let status = c.status().await?;
    let view = c.catalog(false).await?;
    let map = view.map.ok_or_else(|| anyhow::anyhow!("the catalog has no map yet (not bootstrapped)"))?;
    Ok(RepairStatus::of(&status, &map))
}

/// Prints the status once, or every 2 s with `watch` until interrupted.
pub async fn run(c: &CatalogClient, json: bool, watch: bool) -> anyhow::Result<()> {
    loop {
        let s = fetch(c).await?;
        if json {
            println!("{}", serde_json::to_string(&s)?);
        } else if watch {
            println!("{}", s.progress_line());
        } else {
            s.print();
        }
        if !watch {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
