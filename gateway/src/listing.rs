//! Listing keys: every node's manifest store is asked, answers are merged.
//!
//! A key's manifests live on its PG's replicas, spread over all nodes, so a
//! listing asks every node for its keys after a cursor and merges them keeping
//! each key's newest version (tombstones hide keys). The merge is only trusted
//! up to the smallest "last key" of any node that had more to give; the next
//! round starts there. The answer is refused unless, for every PG, a majority
//! of its manifest replicas answered (so an acknowledged write or delete is
//! always seen by at least one of them).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sillok_placement::PlacementMap;
use sillok_storage_node::api::{ListEntry, ListManifests};

use crate::cluster::Cluster;
use crate::error::GatewayError;
use crate::fanout::{self, Gathered, Need, Rest};

#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub bucket: String,
    pub prefix: String,
    pub delimiter: Option<String>,
    /// Keys (and common prefixes) strictly after this.
    pub start_after: Option<String>,
    pub max_keys: usize,
    /// List heads that are S3 delete markers too (ListObjectVersions);
    /// ListObjects hides them, as it hides tombstones.
    pub include_delete_markers: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ListResult {
    pub entries: Vec<ListEntry>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    /// Where the next page starts (after this key or prefix), when truncated.
    pub next_after: Option<String>,
}

/// Sorts after every key that starts with the prefix it is appended to.
const PAST_PREFIX: char = '\u{10FFFF}';

pub async fn list(cluster: &Arc<Cluster>, q: &ListQuery) -> Result<ListResult, GatewayError> {
    let mut out = ListResult::default();
    if q.max_keys == 0 {
        return Ok(out);
    }
    let page = (q.max_keys + 1).clamp(2, 1000) as u32;
    let mut cursor = q.start_after.clone();
    let delimiter = q.delimiter.as_deref().filter(|d| !d.is_empty());
    // Rounds are bounded: each one either ends the listing or moves the cursor forward.
    for _round in 0..100_000 {
        let (merged, bound) = merged_page(cluster, &q.bucket, &q.prefix, cursor.as_deref(), page).await?;
        let mut advanced_to: Option<String> = None;
        for (key, e) in merged {
            if e.deleted || (e.delete_marker && !q.include_delete_markers) {
                advanced_to = Some(key);
                continue;
            }
            if out.entries.len() + out.common_prefixes.len() >= q.max_keys {
                out.truncated = true;
                return Ok(out);
            }
            if let Some(d) = delimiter
                && let Some(pos) = key[q.prefix.len()..].find(d)
            {
                let cp = key[..q.prefix.len() + pos + d.len()].to_string();
                out.next_after = Some(format!("{cp}{PAST_PREFIX}"));
                out.common_prefixes.push(cp);
                // Skip everything under this prefix: restart after it.
                advanced_to = out.next_after.clone();
                break;
            }
            out.next_after = Some(key.clone());
            advanced_to = Some(key.clone());
            out.entries.push(e);
        }
        let skipped_ahead = advanced_to.as_ref().is_some_and(|a| a.ends_with(PAST_PREFIX));
        match (skipped_ahead, bound) {
            (true, _) => cursor = advanced_to,
            (false, Some(b)) => cursor = Some(b),
            (false, None) => {
                out.truncated = false;
                return Ok(out);
            }
        }
    }
    Err(GatewayError::Internal("listing did not converge".into()))
}

/// One round: every node's keys after `cursor`, merged; plus the bound up to
/// which the merge is complete (`None`: no node has more).
async fn merged_page(
    cluster: &Arc<Cluster>,
    bucket: &str,
    prefix: &str,
    cursor: Option<&str>,
    page: u32,
) -> Result<(BTreeMap<String, ListEntry>, Option<String>), GatewayError> {
    let map = cluster.map();
    let nodes = cluster.all_nodes();
    let req = Arc::new(ListManifests {
        bucket: bucket.into(),
        prefix: prefix.into(),
        start_after: cursor.map(str::to_string),
        limit: page,
    });
    let list = |client: sillok_storage_node::NodeClient, addr: String| {
        let req = req.clone();
        async move { client.list_manifests(&addr, &req).await }
    };
    let answers = match fanout::call_many(cluster, &map, &nodes, Need::all(), Rest::Drop, list).await {
        Gathered::Met { ok, .. } | Gathered::Short { ok, .. } => ok,
        // Nodes do not refuse listings for their epoch; one that did leaves the
        // listing without answers, which the coverage check turns into a 503.
        Gathered::Stale(_) => Vec::new(),
    };
    let answered: BTreeSet<_> = answers.iter().map(|(n, _)| *n).collect();
    check_coverage(cluster, &map, &answered)?;
    let mut bound: Option<String> = None;
    let mut merged: BTreeMap<String, ListEntry> = BTreeMap::new();
    for (_, list) in answers.into_iter() {
        if list.truncated
            && let Some(last) = list.entries.last()
            && bound.as_ref().is_none_or(|b| last.key < *b)
        {
            bound = Some(last.key.clone());
        }
        for e in list.entries {
            match merged.get(&e.key) {
                Some(old) if old.version >= e.version => {}
                _ => {
                    merged.insert(e.key.clone(), e);
                }
            }
        }
    }
    if let Some(b) = &bound {
        merged.retain(|k, _| k <= b);
    }
    Ok((merged, bound))
}

fn check_coverage(
    cluster: &Arc<Cluster>,
    map: &PlacementMap,
    answered: &BTreeSet<sillok_placement::NodeId>,
) -> Result<(), GatewayError> {
    if cluster.all_nodes().iter().all(|n| answered.contains(n)) {
        return Ok(()); // every node answered: nothing to check per PG
    }
    for pg in 0..map.pg_count {
        let replicas = map.manifest_replicas(pg);
        let ok = replicas.iter().filter(|n| answered.contains(n)).count();
        if ok < replicas.len() / 2 + 1 {
            return Err(GatewayError::Unavailable(format!(
                "listing needs a majority of every placement group's manifest replicas; PG {pg} has {ok} of {} answering",
                replicas.len()
            )));
        }
    }
    Ok(())
}
