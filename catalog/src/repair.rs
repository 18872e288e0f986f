//! The cluster's repair state: how far it is from full redundancy.
//!
//! Owns: turning a catalog status (the map, and each storage node's latest
//! report of its rebuild engine and scrub) into PG states, work left, rate
//! and ETA, for `sillok admin repair status`, for every process's Prometheus
//! page (the catalog computes it from the reports it holds and returns it in
//! its answer to each report), and for the drill. Every figure comes from
//! what nodes verified: a node counts a shard as done only once it is
//! written, fsynced and read back, and names the PGs it still wants shards
//! in with the fewest shards an object there has on in-service nodes. A
//! PG's state is the worse of that and of what the map says of its slot
//! nodes (a down node's shards are unavailable even before anyone rebuilds
//! them):
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
//! [`RepairStatus::complete`] is the drill's "full redundancy": nothing left,
//! every PG checked and at k+m on distinct nodes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::{RepairThrottle, Status};
use sillok_placement::{NodeState, PlacementMap};

/// The states in the order operators read them, best first.
pub const STATES: [&str; 6] = ["clean", "degraded-site", "degraded", "critical", "unreadable", "unchecked"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepairStatus {
    pub epoch: u64,
    pub pg_count: u32,
    /// PG count per state (every state named, zeros included).
    pub pgs: BTreeMap<String, u64>,
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
    /// The rebuild pace set with `sillok admin repair throttle`, if one was
    /// (nodes without it use their own flags).
    #[serde(default)]
    pub throttle: Option<RepairThrottle>,
    /// Why full redundancy cannot be reached as things stand, if it cannot.
    pub limit: Option<String>,
    /// PGs whose earlier rows the map still keeps: their data has not all
    /// moved to the current row yet (`rebalance`).
    #[serde(default)]
    pub pgs_moving: u64,
}

impl RepairStatus {
    pub fn of(status: &Status, map: &PlacementMap) -> Self {
        let (k, m, width) = (usize::from(map.profile.k), usize::from(map.profile.m), map.profile.width());
        let mut reported: BTreeMap<u32, u8> = BTreeMap::new();
        let mut s = RepairStatus {
            epoch: map.epoch,
            pg_count: map.pg_count,
            pgs: STATES.iter().map(|st| (st.to_string(), 0)).collect(),
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
            throttle: status.repair_throttle,
            pgs_moving: map.previous.len() as u64,
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
            *s.pgs.entry(state.to_string()).or_default() += 1;
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
        let below: u64 = ["degraded", "critical", "unreadable", "unchecked"]
            .iter()
            .map(|st| self.pgs.get(*st).copied().unwrap_or(0))
            .sum();
        self.shards_left == 0 && below == 0 && self.pgs_waiting == 0
    }

    /// The cluster's repair figures on a metrics page, as every process's
    /// page carries them (`sillok_cluster_*`: the same on every process, as
    /// of the catalog replica's last computation).
    pub fn encode_metrics(&self, enc: &mut prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        use sillok_rpc::ops::{gauge, gauge_family};
        gauge_family(
            enc,
            "sillok_cluster_pgs",
            "PGs by repair state (clean, degraded-site, degraded, critical, unreadable, unchecked).",
            "state",
            STATES.iter().map(|st| (st.to_string(), self.pgs.get(*st).copied().unwrap_or(0))),
        )?;
        let gauges: [(&str, &str, u64); 8] = [
            (
                "sillok_cluster_pgs_moving",
                "PGs whose data has not all moved to their current row (rebalance).",
                self.pgs_moving,
            ),
            ("sillok_cluster_map_epoch", "The map epoch these figures describe.", self.epoch),
            (
                "sillok_cluster_shards_left",
                "Shards the storage nodes still have to rebuild or record.",
                self.shards_left,
            ),
            ("sillok_cluster_bytes_left", "Bytes of those shards.", self.bytes_left),
            (
                "sillok_cluster_rebuild_bytes_per_second",
                "Rebuilt bytes per second, summed over the nodes.",
                self.bytes_per_s,
            ),
            (
                "sillok_cluster_pgs_waiting",
                "PGs some node could not check (no majority of replicas answered).",
                self.pgs_waiting,
            ),
            (
                "sillok_cluster_suspect_shards",
                "Shards found bad by a scrub or a reader, not yet rewritten.",
                self.suspects,
            ),
            (
                "sillok_cluster_repair_held",
                "1 while automatic out is held (sillok admin repair hold).",
                u64::from(self.repair_held),
            ),
        ];
        for (name, help, v) in gauges {
            gauge(enc, name, help, v)?;
        }
        if let Some(eta) = self.eta_s {
            gauge(enc, "sillok_cluster_rebuild_eta_seconds", "Bytes left over the current rate.", eta)?;
        }
        Ok(())
    }
}
