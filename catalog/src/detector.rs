//! The failure detector: the leader marks silent storage nodes `down`, then
//! `out`, with no human.
//!
//! Owns: the decision to change a node's state on the evidence of its usage
//! reports (`POST /v1/report`, every 2 s from every node to every replica).
//! Only the leader acts, once a second:
//! - an `up` node not heard for `down_after` is marked `down` (gateways then
//!   route around it at once: substitutes for writes, parity for reads);
//! - a node the detector marked `down` or `out` that reports again is marked
//!   `up` (a node an operator marked down or out stays so: the detector only
//!   undoes its own decisions); a site the detector took out comes back in
//!   one change once every node of it reports again;
//! - a node the detector marked `down` and not heard for `out_after` is
//!   marked `out` (its slots move to other nodes), unless repair is held
//!   (`sillok admin repair hold`). When every node of its site is silent,
//!   the longer `site_out_after` applies instead, so that a partition between
//!   sites does not start moving a whole site's data at once, and the whole
//!   site is marked `out` in one change (its slots then go to the surviving
//!   sites, more than m per site if need be: `placement::assign::site_cap`).
//!
//! Every transition is a Raft command carrying its reason (kept in the
//! catalog, shown by `sillok admin status`) and is logged. A replica that has
//! just become leader has no reports older than its leadership, so it counts
//! silence from the moment it took over: a leader change delays a decision,
//! never hastens one. Likewise a node new to the map (`rebalance apply` of a
//! `node add`) is silent only from the first tick that saw it in the map, so
//! it has `down_after` to start and report before it can be marked down. A refused change (the map cannot place the profile
//! without the node, say) is logged and retried once a minute, not every
//! second.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use sillok_placement::{NodeId, NodeState};

use crate::Proposal;
use crate::state::Command;

/// When silent nodes change state.
#[derive(Debug, Clone, Copy)]
pub struct DetectorSettings {
    pub down_after: Duration,
    pub out_after: Duration,
    /// `out_after` for a node whose whole site is silent.
    pub site_out_after: Duration,
}

impl Default for DetectorSettings {
    fn default() -> Self {
        DetectorSettings {
            down_after: Duration::from_secs(10),
            out_after: Duration::from_secs(600),
            site_out_after: Duration::from_secs(3600),
        }
    }
}

/// The reason the detector gives when it marks a node down; a node whose
/// recorded reason starts with it is the detector's to bring back up.
pub const SILENT: &str = "not heard for";

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Runs on every replica; acts only while this replica leads.
pub(crate) async fn detect_forever(sh: Arc<crate::server::Shared>, settings: DetectorSettings) {
    let mut leading_since: Option<Instant> = None;
    let mut refused: BTreeMap<(NodeId, &'static str), Instant> = BTreeMap::new();
    // When this leadership first saw each node in the map.
    let mut in_map_since: BTreeMap<NodeId, Instant> = BTreeMap::new();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let leading = {
            let m = sh.raft.metrics().borrow().clone();
            m.state == ServerState::Leader && m.current_leader == Some(sh.id)
        };
        if !leading {
            leading_since = None;
            in_map_since.clear();
            continue;
        }
        let since = *leading_since.get_or_insert_with(Instant::now);
        let (map, hold, transitions) =
            sh.sm.read(|st| (st.catalog.map.clone(), st.catalog.repair.hold, st.catalog.repair.transitions.clone()));
        let Some(map) = map else { continue };
        let heard: BTreeMap<NodeId, Instant> =
            sh.reports.lock().expect("reports lock").iter().map(|(id, (at, _))| (*id, *at)).collect();
        let now = Instant::now();
        in_map_since.retain(|id, _| map.topology.nodes.iter().any(|n| n.id == *id));
        for node in &map.topology.nodes {
            in_map_since.entry(node.id).or_insert(now);
        }
        // Silence counts from the latest of the last report, the start of this
        // leadership and the first tick that saw the node in the map.
        let silence = |id: NodeId| {
            let from = in_map_since.get(&id).map_or(since, |seen| (*seen).max(since));
            heard.get(&id).map_or(from, |at| (*at).max(from)).elapsed()
        };
        for node in &map.topology.nodes {
            let quiet = silence(node.id);
            let by_detector = transitions.get(&node.id).is_some_and(|t| t.reason.starts_with(SILENT));
            let site_silent = map.topology.nodes_in(&node.site).all(|n| silence(n.id) > settings.down_after);
            let site_lost = map.topology.nodes_in(&node.site).all(|n| n.state == NodeState::Out);
            let change = match node.state {
                NodeState::Up if quiet > settings.down_after => Some((
                    NodeState::Down,
                    "down",
                    format!(
                        "{SILENT} {:.1} s (down after {:.0} s)",
                        quiet.as_secs_f64(),
                        settings.down_after.as_secs_f64()
                    ),
                )),
                NodeState::Down if by_detector && quiet < settings.down_after => {
                    Some((NodeState::Up, "up", "reporting again".to_string()))
                }
                // A node the detector took out comes back in when it reports
                // again; a site it took out, only once every node of it does
                // (the map cannot take back part of a lost site).
                NodeState::Out if by_detector && quiet < settings.down_after => {
                    let site_back = map.topology.nodes_in(&node.site).all(|n| {
                        silence(n.id) < settings.down_after
                            && transitions.get(&n.id).is_some_and(|t| t.reason.starts_with(SILENT))
                    });
                    (!site_lost || site_back).then(|| (NodeState::Up, "up", "reporting again after out".to_string()))
                }
                NodeState::Down if by_detector && !hold => {
                    let (limit, what) = if site_silent {
                        (settings.site_out_after, "its whole site is silent: site out after")
                    } else {
                        (settings.out_after, "out after")
                    };
                    (quiet > limit).then(|| {
                        (
                            NodeState::Out,
                            "out",
                            format!("{SILENT} {:.0} s ({what} {:.0} s)", quiet.as_secs_f64(), limit.as_secs_f64()),
                        )
                    })
                }
                _ => None,
            };
            let Some((state, name, reason)) = change else { continue };
            if refused.get(&(node.id, name)).is_some_and(|at| at.elapsed() < Duration::from_secs(60)) {
                continue;
            }
            // A whole silent site goes out in one map change, so its data
            // moves once rather than node by node through its own site.
            let whole_site_back = state == NodeState::Up && node.state == NodeState::Out && site_lost;
            let command = if (state == NodeState::Out && site_silent) || whole_site_back {
                Command::SetSiteState { site: node.site.clone(), state, reason: Some(reason.clone()), at_ms: now_ms() }
            } else {
                Command::SetNodeState { id: node.id, state, reason: Some(reason.clone()), at_ms: now_ms() }
            };
            let p = Proposal { request_id: format!("detector-{}-{name}-epoch-{}", node.id, map.epoch), command };
            match tokio::time::timeout(sh.commit_timeout, sh.raft.client_write(p)).await {
                Ok(Ok(r)) => match r.data {
                    Ok(_) => {
                        tracing::warn!(node = %node.id, site = %node.site, state = name, %reason, "node state changed by the failure detector")
                    }
                    Err(e) => {
                        tracing::warn!(node = %node.id, state = name, error = %e, "the failure detector's change was refused; retrying in a minute");
                        refused.insert((node.id, name), Instant::now());
                    }
                },
                Ok(Err(e)) => {
                    tracing::info!(node = %node.id, error = %e, "failure detector: proposal failed; will retry")
                }
                Err(_) => tracing::info!(node = %node.id, "failure detector: no commit in time; will retry"),
            }
            // One change per tick: the map moves one epoch at a time.
            break;
        }
    }
}
