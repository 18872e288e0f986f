//! Calls to many nodes at once, and what failure means for them: the home of
//! the gateway's failure handling.
//!
//! Owns: [`call_many`] and [`gather`] (address lookup, the per-call epoch,
//! suspicion bookkeeping, "need N answers spanning S sites", and what happens
//! to the calls still running once the need is met), and [`on_current_map`]
//! (the stale-epoch retry).
//!
//! Deadlines (every call ends by one of them; none waits for a hung node):
//! - each node call is bounded by the node client's deadlines
//!   (`sillok_storage_node::Timeouts`: TCP connect 500 ms, response head 5 s
//!   after the request, 5 s of silence while a body streams), or by the
//!   `deadline` a caller of [`gather`] gives for the whole set;
//! - a node that refuses a call for our map epoch ends the whole set at once
//!   ([`Gathered::Stale`]); [`on_current_map`] then waits at most 3 s for the
//!   catalog follower to bring the newer map and redoes the operation on it,
//!   at most [`EPOCH_RETRIES`] times.
//!
//! Suspicion rules: a call that cannot connect, breaks, or misses a deadline
//! makes its node suspect (`Cluster::note_error`); a refusal or an error
//! answer does not (the node is up). Only the health probe clears suspicion.
//!
//! The rest: once the need is met, [`Rest::Finish`] lets the remaining calls
//! run to completion in the background (writes: every replica should get the
//! manifest; their results still feed suspicion), [`Rest::Drop`] cancels them
//! (reads: their answers no longer matter).

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use sillok_placement::{NodeId, PlacementMap};
use sillok_storage_node::{NodeClient, NodeError};

use crate::cluster::Cluster;
use crate::error::GatewayError;

/// How many times one operation moves to a newer map.
pub const EPOCH_RETRIES: usize = 3;

/// What a fan-out must collect before it returns.
#[derive(Debug, Clone, Copy)]
pub struct Need {
    /// Successful answers.
    pub answers: usize,
    /// Distinct sites among the nodes that answered (capped at the number of
    /// sites the called nodes span, so that it can always be met).
    pub sites: usize,
    /// Once the rest of the need is met, also wait for this node's call to
    /// end, for at most as long again as meeting the need took (and at least
    /// the given time): the call that carries what the others do not (a
    /// manifest's body), given a chance before the caller asks again.
    pub wait_for: Option<(NodeId, Duration)>,
    /// Hedged: start only as many calls as `answers` needs, in the order
    /// given, and one more whenever a call fails, whenever no call is left
    /// running, and each time this long passes without the need being met.
    /// Reads use it so that a healthy cluster answers a quorum read with a
    /// quorum of calls, not one per replica; a slow or dead replica costs
    /// at most this delay (once it is suspect, callers order it last).
    pub hedge_after: Option<Duration>,
}

impl Need {
    /// A majority of `n` calls.
    pub fn majority(n: usize) -> Self {
        Need { answers: n / 2 + 1, sites: 1, wait_for: None, hedge_after: None }
    }

    /// Every call (the fan-out returns when all have ended).
    pub fn all() -> Self {
        Need { answers: usize::MAX, sites: 1, wait_for: None, hedge_after: None }
    }

    /// Requires answers from at least `sites` sites as well.
    pub fn spanning(self, sites: usize) -> Self {
        Need { sites, ..self }
    }

    /// Waits for `node` too, briefly (see [`Need::wait_for`]).
    pub fn waiting_for(self, node: NodeId, at_least: Duration) -> Self {
        Need { wait_for: Some((node, at_least)), ..self }
    }

    /// Starts calls only as needed (see [`Need::hedge_after`]).
    pub fn hedged(self, after: Duration) -> Self {
        Need { hedge_after: Some(after), ..self }
    }
}

/// What to do with calls still running once the need is met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rest {
    Finish,
    Drop,
}

/// The outcome of a fan-out.
pub enum Gathered<T> {
    /// The need was met (or, for [`Need::all`], every call ended): the
    /// successful answers, and the failures seen so far.
    Met { ok: Vec<(NodeId, T)>, failed: Vec<(NodeId, NodeError)> },
    /// Every call ended without meeting the need.
    Short { ok: Vec<(NodeId, T)>, failed: Vec<(NodeId, NodeError)> },
    /// A node follows a newer map (this epoch): redo the operation on it.
    Stale(u64),
}

impl<T> Gathered<T> {
    /// The failures as one line, for error messages.
    pub fn describe(failed: &[(NodeId, NodeError)]) -> String {
        failed.iter().map(|(n, e)| format!("{n}: {e}")).collect::<Vec<_>>().join("; ")
    }
}

/// Runs `calls` concurrently until `need` is met, every call has ended, a
/// node names a newer epoch, or `deadline` passes (calls still running then
/// count as timed out). Every result feeds suspicion.
pub async fn gather<T, Fut>(
    cluster: &Arc<Cluster>,
    map: &PlacementMap,
    calls: Vec<(NodeId, Fut)>,
    need: Need,
    rest: Rest,
    deadline: Option<Duration>,
) -> Gathered<T>
where
    T: Send + 'static,
    Fut: Future<Output = Result<T, NodeError>> + Send + 'static,
{
    let site = |n: NodeId| map.topology.node(n).map(|x| x.site.clone());
    let called_sites: BTreeSet<String> = calls.iter().filter_map(|(n, _)| site(*n)).collect();
    let need_sites = need.sites.min(called_sites.len()).max(1);
    let total = calls.len();
    let noted = |(node, call): (NodeId, Fut)| {
        let cluster = cluster.clone();
        async move {
            let r = call.await;
            cluster.note_result(node, &r);
            (node, r)
        }
    };
    // Hedged: the calls not started yet, in the caller's order.
    let mut spare: std::collections::VecDeque<(NodeId, Fut)> = calls.into_iter().collect();
    let first = match need.hedge_after {
        Some(_) => need.answers.min(total),
        None => total,
    };
    let mut running: FuturesUnordered<_> = spare.drain(..first).map(noted).collect();
    let mut hedge_at = need.hedge_after.map(|d| tokio::time::Instant::now() + d);
    // Hedged reads wait on the gateway's shared tick, not a timer each.
    let _waiting = need.hedge_after.map(|_| cluster.hedge_clock.waiting());
    let mut ok: Vec<(NodeId, T)> = Vec::new();
    let mut failed = Vec::new();
    let mut ok_sites = BTreeSet::new();
    let started = tokio::time::Instant::now();
    let sleep = async {
        match deadline {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep);
    // Set once the need is met while `need.wait_for`'s call still runs.
    let mut grace: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        let met = ok.len() >= need.answers.min(total).max(1) && ok_sites.len() >= need_sites;
        let waited_for = |ok: &[(NodeId, T)], failed: &[(NodeId, NodeError)]| {
            need.wait_for.is_none_or(|(w, _)| ok.iter().any(|(n, _)| *n == w) || failed.iter().any(|(n, _)| *n == w))
        };
        if met && need.answers != usize::MAX {
            if waited_for(&ok, &failed) || running.is_empty() {
                if rest == Rest::Finish && !running.is_empty() {
                    tokio::spawn(async move { while running.next().await.is_some() {} });
                }
                return Gathered::Met { ok, failed };
            }
            if grace.is_none() {
                let at_least = need.wait_for.map_or(Duration::ZERO, |(_, d)| d);
                let extra = started.elapsed().max(at_least);
                grace = Some(Box::pin(tokio::time::sleep(extra)));
            }
        } else if running.is_empty() {
            // Nothing left running and the need not met: a spare, if any.
            match spare.pop_front() {
                Some(call) => running.push(noted(call)),
                None => return finish(ok, failed, need, need_sites, total, &ok_sites, false),
            }
        }
        let grace_over = async {
            match grace.as_mut() {
                Some(g) => g.as_mut().await,
                None => std::future::pending().await,
            }
        };
        let hedge_due = hedge_at.filter(|_| !met && !spare.is_empty());
        let next = tokio::select! {
            n = running.next() => n,
            _ = cluster.hedge_clock.tick(), if hedge_due.is_some() => {
                let now = tokio::time::Instant::now();
                if hedge_due.is_some_and(|due| now >= due) {
                    if let Some(call) = spare.pop_front() {
                        running.push(noted(call));
                    }
                    hedge_at = need.hedge_after.map(|d| now + d);
                }
                continue;
            }
            _ = grace_over => {
                if rest == Rest::Finish {
                    tokio::spawn(async move { while running.next().await.is_some() {} });
                }
                return Gathered::Met { ok, failed };
            }
            _ = &mut sleep => {
                // Whatever is still running missed the deadline.
                drop(running);
                return finish(ok, failed, need, need_sites, total, &ok_sites, true);
            }
        };
        match next {
            // Only when nothing ran: handled above on the next turn.
            None => continue,
            Some((_, Err(NodeError::StaleEpoch { node_epoch, .. }))) => {
                if rest == Rest::Finish {
                    tokio::spawn(async move { while running.next().await.is_some() {} });
                }
                return Gathered::Stale(node_epoch);
            }
            Some((node, Err(e))) => {
                failed.push((node, e));
                // A failed call is replaced at once when hedging.
                if need.hedge_after.is_some()
                    && let Some(call) = spare.pop_front()
                {
                    running.push(noted(call));
                }
            }
            Some((node, Ok(v))) => {
                if let Some(s) = site(node) {
                    ok_sites.insert(s);
                }
                ok.push((node, v));
            }
        }
    }
}

fn finish<T>(
    ok: Vec<(NodeId, T)>,
    failed: Vec<(NodeId, NodeError)>,
    need: Need,
    need_sites: usize,
    total: usize,
    ok_sites: &BTreeSet<String>,
    timed_out: bool,
) -> Gathered<T> {
    let met = if need.answers == usize::MAX {
        !timed_out || ok.len() == total
    } else {
        ok.len() >= need.answers.min(total).max(1) && ok_sites.len() >= need_sites
    };
    if met { Gathered::Met { ok, failed } } else { Gathered::Short { ok, failed } }
}

/// [`gather`] over one call per node of `nodes`, each made by `call` with the
/// node client for `map`'s epoch and the node's address. A node missing from
/// the map fails its call.
pub async fn call_many<T, F, Fut>(
    cluster: &Arc<Cluster>,
    map: &PlacementMap,
    nodes: &[NodeId],
    need: Need,
    rest: Rest,
    call: F,
) -> Gathered<T>
where
    T: Send + 'static,
    F: Fn(NodeClient, String) -> Fut,
    Fut: Future<Output = Result<T, NodeError>> + Send + 'static,
{
    let client = cluster.client(map);
    let calls = nodes
        .iter()
        .map(|&node| {
            let call = map.topology.node(node).map(|n| call(client.clone(), n.addr.clone()));
            let fut = async move {
                match call {
                    Some(c) => c.await,
                    None => Err(NodeError::Other(format!("node {node} is not in the map"))),
                }
            };
            (node, fut)
        })
        .collect();
    gather(cluster, map, calls, need, rest, None).await
}

/// A step of an operation planned on one map: done, or refused by a node
/// that follows a newer map.
pub enum Attempt<T> {
    Done(Result<T, GatewayError>),
    Stale(u64),
}

/// Runs `attempt` on the current map, again on a newer one when a node says
/// ours is old (see the deadlines above).
pub async fn on_current_map<T, F, Fut>(cluster: &Arc<Cluster>, mut attempt: F) -> Result<T, GatewayError>
where
    F: FnMut(Arc<PlacementMap>) -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    let mut tries = 0;
    loop {
        let map = cluster.map();
        let ours = map.epoch;
        match attempt(map).await {
            Attempt::Done(r) => return r,
            Attempt::Stale(theirs) => {
                tries += 1;
                tracing::info!(ours, theirs, "a node follows a newer map; retrying on it");
                if tries > EPOCH_RETRIES || !cluster.catch_up(theirs).await {
                    return Err(GatewayError::CatalogUnavailable(format!(
                        "a storage node follows map epoch {theirs} and this gateway could not get it (it has {})",
                        cluster.map().epoch
                    )));
                }
            }
        }
    }
}
