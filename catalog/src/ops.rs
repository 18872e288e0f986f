//! A catalog replica's ops listener (`sillok catalog --ops-listen`): its
//! metrics page and its readiness, served by `sillok_rpc::ops`.
//!
//! Owns: the replica's figures (Raft term, role, leader, commit and applied
//! indexes, the lag between them, nodes by state, the cluster's repair
//! figures) and the readiness rule ([`MAX_READY_LAG`]).
//!
//! The commit index is the one this replica knows: the leader's own, or on
//! a follower the leader's as of its last append or heartbeat. openraft
//! reports it only through an async call, so a task refreshes it every
//! [`COMMIT_REFRESH`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::ServerState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use sillok_rpc::ops::{gauge, gauge_family};

use crate::server::{Shared, state_name};

/// A replica is ready when it knows a leader and has applied the log to
/// within this many entries of the commit index it knows.
pub const MAX_READY_LAG: u64 = 100;

/// How often the commit index is read from Raft.
pub const COMMIT_REFRESH: Duration = Duration::from_millis(500);

struct ReplicaOps {
    sh: Arc<Shared>,
    commit: Arc<AtomicU64>,
    registry: Registry,
}

struct Figures {
    sh: Arc<Shared>,
    commit: Arc<AtomicU64>,
}

impl std::fmt::Debug for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("catalog replica figures")
    }
}

/// What the readiness and the page read.
struct Reading {
    leader: Option<u64>,
    is_leader: bool,
    term: u64,
    last_log: u64,
    applied: u64,
    commit: u64,
}

impl Reading {
    fn of(sh: &Shared, commit: &AtomicU64) -> Reading {
        let m = sh.raft.metrics().borrow().clone();
        let applied = sh.sm.read(|st| st.applied.map_or(0, |l| l.index));
        Reading {
            leader: m.current_leader,
            is_leader: m.state == ServerState::Leader,
            term: m.current_term,
            last_log: m.last_log_index.unwrap_or(0),
            applied,
            // Never below what this replica applied (the refresh may lag it).
            commit: commit.load(Ordering::Relaxed).max(applied),
        }
    }

    fn lag(&self) -> u64 {
        self.commit.saturating_sub(self.applied)
    }

    fn ready(&self) -> Result<(), String> {
        if self.leader.is_none() {
            return Err(format!("no known catalog leader in term {}", self.term));
        }
        if self.lag() > MAX_READY_LAG {
            return Err(format!(
                "applied index {} is {} behind the commit index {} (at most {MAX_READY_LAG})",
                self.applied,
                self.lag(),
                self.commit
            ));
        }
        Ok(())
    }
}

impl Collector for Figures {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let enc = &mut enc;
        let r = Reading::of(&self.sh, &self.commit);
        gauge(enc, "sillok_catalog_is_leader", "1 on the replica that leads the Raft group.", u64::from(r.is_leader))?;
        gauge(enc, "sillok_catalog_term", "The Raft term this replica is in.", r.term)?;
        if let Some(l) = r.leader {
            gauge(enc, "sillok_catalog_leader_id", "The id of the replica this one knows as leader.", l)?;
        }
        gauge(enc, "sillok_catalog_applied_index", "The last log index this replica applied.", r.applied)?;
        gauge(enc, "sillok_catalog_last_log_index", "The last log index this replica holds.", r.last_log)?;
        gauge(
            enc,
            "sillok_catalog_commit_index",
            "The commit index this replica knows (on a follower, the leader's as of its last append or heartbeat).",
            r.commit,
        )?;
        gauge(enc, "sillok_catalog_commit_lag", "The commit index minus this replica's applied index.", r.lag())?;
        gauge(
            enc,
            "sillok_catalog_ready",
            "1 while this replica is ready (see /ready).",
            u64::from(r.ready().is_ok()),
        )?;
        let by_state = self.sh.sm.read(|st| {
            let mut c: BTreeMap<&'static str, u64> =
                ["up", "down", "draining", "out"].into_iter().map(|s| (s, 0)).collect();
            for n in st.catalog.map.iter().flat_map(|m| m.topology.nodes.iter()) {
                *c.entry(state_name(n.state)).or_default() += 1;
            }
            c
        });
        gauge_family(
            enc,
            "sillok_catalog_nodes",
            "Storage nodes by state in the map.",
            "state",
            by_state.into_iter().map(|(s, n)| (s.to_string(), n)),
        )?;
        if let Some(r) = crate::server::repair_state(&self.sh) {
            r.encode_metrics(enc)?;
        }
        Ok(())
    }
}

impl sillok_rpc::ops::Ops for ReplicaOps {
    fn ready(&self) -> Result<(), String> {
        Reading::of(&self.sh, &self.commit).ready()
    }
    fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// The replica's registry and the task that keeps its commit index fresh.
pub(crate) fn registry(sh: &Arc<Shared>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Figures { sh: sh.clone(), commit: commit_tracker(sh) }));
    sillok_rpc::server::register_metrics(&mut registry);
    registry
}

fn commit_tracker(sh: &Arc<Shared>) -> Arc<AtomicU64> {
    let commit = Arc::new(AtomicU64::new(0));
    let (weak, c) = (Arc::downgrade(sh), commit.clone());
    tokio::spawn(async move {
        while let Some(sh) = weak.upgrade() {
            if let Ok(Some(i)) = sh.raft.with_raft_state(|s| s.committed.map(|l| l.index)).await {
                c.store(i, Ordering::Relaxed);
            }
            drop(sh);
            tokio::time::sleep(COMMIT_REFRESH).await;
        }
    });
    commit
}

/// Serves the ops listener for `sh` on `addr`; returns the bound address.
pub(crate) async fn serve(sh: &Arc<Shared>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let commit = commit_tracker(sh);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Figures { sh: sh.clone(), commit: commit.clone() }));
    sillok_rpc::server::register_metrics(&mut registry);
    sillok_rpc::ops::serve(addr, Arc::new(ReplicaOps { sh: sh.clone(), commit, registry })).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_a_leader_and_a_small_lag() {
        let r = |leader, applied, commit| Reading { leader, is_leader: false, term: 3, last_log: 0, applied, commit };
        assert!(r(Some(1), 10, 10).ready().is_ok());
        assert!(r(Some(1), 10, 10 + MAX_READY_LAG).ready().is_ok());
        assert!(r(None, 10, 10).ready().unwrap_err().contains("no known catalog leader"));
        assert!(r(Some(1), 10, 11 + MAX_READY_LAG).ready().unwrap_err().contains("behind"));
    }
}
