//! The change log: what a follower of the catalog (a gateway) must change in
//! its copy for each applied entry, kept in memory by every replica for the
//! last [`DEFAULT_CHANGE_LOG_ENTRIES`] (`--change-log-entries`) changes, and
//! served by `GET /v1/catalog/changes` (see `api`).
//!
//! Owns: [`ViewChange`] (one entry's effect on what followers see), the
//! [`ChangeLog`] ring and the answer of the route, [`Changes`].
//!
//! Invariants:
//! - Indexes are the ones followers see (`CatalogView::applied_index`, i.e.
//!   Raft's applied index plus `restored_base`).
//! - The log covers `(start, last]`: every follower-visible effect of an
//!   entry with an index in that range is in it, in index order, one change
//!   per entry at most, and `last` is the replica's applied index. So the
//!   view at `since` (for any `since` in `[start, last]`) plus the changes
//!   after `since` is the view at `last`.
//! - A change is computed from what its command touched (one bucket, one key,
//!   or the map), never by comparing whole catalogs: its cost is the change's.
//!   A map change is told as a [`MapDelta`] (the rows it changed) whenever
//!   the map before it had the same shape, else as the whole map.
//! - The log is bounded by a count and by the bytes of its changes (as
//!   JSON: a delta of a large rebalance or the whole map of a split can be
//!   megabytes; the newest change is always kept); dropping its oldest
//!   change moves `start` to that change's index. A replica that starts, installs a snapshot or
//!   applies a `Restore` starts an empty log at its applied index: a
//!   follower that is behind `start` is told to take the whole view.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use sillok_placement::{MapDelta, PlacementMap};

use crate::state::{Bucket, KeyRecord};

/// Changes a replica keeps for followers unless told otherwise.
pub const DEFAULT_CHANGE_LOG_ENTRIES: usize = 10_000;
/// Most bytes of changes (as JSON) a replica keeps for followers.
pub const CHANGE_LOG_BYTES: usize = 64 << 20;
/// Most changes in one answer; a follower further behind asks again.
pub const MAX_CHANGES_PER_ANSWER: usize = 5_000;

/// One applied entry's effect on what followers see. Key changes carry the
/// secret: the route is for internal callers only. Externally tagged (as is
/// everything on this route): serde's internally tagged and flattened forms
/// cannot read maps keyed by numbers (a map's `previous` rows) from JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewChange {
    /// The bucket as it is now (created or changed).
    BucketPut {
        bucket: Bucket,
    },
    BucketRemoved {
        name: String,
    },
    /// The key as it is now (created, disabled or changed).
    KeyPut {
        key: KeyRecord,
    },
    KeyRemoved {
        id: String,
    },
    /// The new map, whole: a PG split (it replaces every row), a map
    /// before which the replica had none, and the answer to a map-only
    /// follower behind the log's start.
    Map {
        map: PlacementMap,
    },
    /// The new map as the rows that changed since the one before it: every
    /// other map change. Sent only to followers that say they read it
    /// (`map_rows=1`); others are told to take the whole view.
    MapDelta {
        delta: MapDelta,
    },
}

impl ViewChange {
    /// Whether it changes the map (the only changes a storage node follows).
    pub fn is_map(&self) -> bool {
        matches!(self, ViewChange::Map { .. } | ViewChange::MapDelta { .. })
    }
}

/// A change and the index of the entry that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexedChange {
    pub index: u64,
    pub change: ViewChange,
}

/// The answer of `GET /v1/catalog/changes?since=N`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Changes {
    /// The view at `to` is the view at `since` with `changes` applied in
    /// order (entries without a visible effect have none).
    Changes { since: u64, to: u64, changes: Vec<IndexedChange> },
    /// The log no longer goes back to `since` (it starts at `start`): take
    /// the whole view (`GET /v1/catalog`).
    SnapshotNeeded { start: u64, applied: u64 },
}

/// The bounded log; see the module's invariants.
#[derive(Debug)]
pub struct ChangeLog {
    start: u64,
    last: u64,
    /// Each change with its size as JSON.
    entries: VecDeque<(IndexedChange, usize)>,
    capacity: usize,
    /// The sum of the entries' sizes, and its bound.
    bytes: usize,
    max_bytes: usize,
}

impl ChangeLog {
    /// An empty log at `applied`, keeping at most `capacity` changes.
    pub fn new(applied: u64, capacity: usize) -> Self {
        Self::bounded(applied, capacity, CHANGE_LOG_BYTES)
    }

    /// An empty log at `applied`, keeping at most `capacity` changes and
    /// `max_bytes` of them (the newest change is kept whatever its size).
    pub fn bounded(applied: u64, capacity: usize, max_bytes: usize) -> Self {
        ChangeLog {
            start: applied,
            last: applied,
            entries: VecDeque::new(),
            capacity: capacity.max(1),
            bytes: 0,
            max_bytes,
        }
    }

    /// Forgets everything: the log covers nothing before `applied`.
    pub fn reset(&mut self, applied: u64) {
        self.entries.clear();
        self.bytes = 0;
        self.start = applied;
        self.last = applied;
    }

    /// Entries up to `applied` are applied (those without a change too).
    pub fn advance(&mut self, applied: u64) {
        self.last = self.last.max(applied);
    }

    /// Records the change made by entry `index`.
    pub fn push(&mut self, index: u64, change: ViewChange) {
        debug_assert!(index > self.last || self.entries.is_empty(), "changes come in index order");
        let size = json_size(&change);
        self.entries.push_back((IndexedChange { index, change }, size));
        self.bytes += size;
        self.last = self.last.max(index);
        while self.entries.len() > self.capacity || (self.bytes > self.max_bytes && self.entries.len() > 1) {
            if let Some((dropped, size)) = self.entries.pop_front() {
                self.start = dropped.index;
                self.bytes -= size;
            }
        }
    }

    /// The first index the log cannot answer from (changes after it are all here).
    pub fn start(&self) -> u64 {
        self.start
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of the changes kept (as JSON).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// What a follower at `since` needs (at most `max` changes), or `None`
    /// if nothing was applied after `since`.
    pub fn since(&self, since: u64, max: usize) -> Option<Changes> {
        self.since_only(since, max, |_| true)
    }

    /// [`ChangeLog::since`] for a follower that sees only the changes `keep`
    /// picks (a storage node: the map's). The answer's `to` is as far as the
    /// log was read, so the follower skips what it does not see.
    pub fn since_only(&self, since: u64, max: usize, keep: impl Fn(&ViewChange) -> bool) -> Option<Changes> {
        if since >= self.last {
            return None;
        }
        if since < self.start {
            return Some(Changes::SnapshotNeeded { start: self.start, applied: self.last });
        }
        let first = self.entries.partition_point(|(c, _)| c.index <= since);
        let mut changes = Vec::new();
        let mut cut_at = None;
        for (c, _) in self.entries.range(first..).filter(|(c, _)| keep(&c.change)) {
            if changes.len() == max.max(1) {
                // Cut short: up to the last change sent, whose entry is whole.
                cut_at = changes.last().map(|c: &IndexedChange| c.index);
                break;
            }
            changes.push(c.clone());
        }
        Some(Changes::Changes { since, to: cut_at.unwrap_or(self.last), changes })
    }
}

/// The length of a change as JSON, counted without keeping the text.
fn json_size(change: &ViewChange) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    let _ = serde_json::to_writer(&mut n, change);
    n.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn removed(name: &str) -> ViewChange {
        ViewChange::BucketRemoved { name: name.into() }
    }

    #[test]
    fn answers_changes_after_since_in_order() {
        let mut log = ChangeLog::new(10, 100);
        assert_eq!(log.since(10, 100), None);
        log.push(11, removed("a"));
        log.advance(12); // a blank entry
        log.push(13, removed("b"));
        let Some(Changes::Changes { since, to, changes }) = log.since(10, 100) else { panic!() };
        assert_eq!((since, to), (10, 13));
        assert_eq!(changes.iter().map(|c| c.index).collect::<Vec<_>>(), vec![11, 13]);
        let Some(Changes::Changes { changes, to, .. }) = log.since(11, 100) else { panic!() };
        assert_eq!((changes.len(), to), (1, 13));
        let Some(Changes::Changes { changes, to, .. }) = log.since(12, 100) else { panic!() };
        assert_eq!((changes.len(), to), (1, 13));
        assert_eq!(log.since(13, 100), None);
        assert_eq!(log.since(99, 100), None, "a follower ahead of this replica waits");
    }

    #[test]
    fn a_follower_behind_the_start_needs_a_snapshot() {
        let mut log = ChangeLog::new(0, 2);
        for i in 1..=5 {
            log.push(i, removed("x"));
        }
        assert_eq!(log.start(), 3);
        assert_eq!(log.since(2, 100), Some(Changes::SnapshotNeeded { start: 3, applied: 5 }));
        assert!(matches!(log.since(3, 100), Some(Changes::Changes { ref changes, .. }) if changes.len() == 2));
        log.reset(4_000_000_000);
        assert!(matches!(log.since(5, 100), Some(Changes::SnapshotNeeded { .. })));
    }

    #[test]
    fn the_log_is_bounded_by_bytes_too_and_keeps_the_newest_change() {
        let one = json_size(&removed("x"));
        let mut log = ChangeLog::bounded(0, 100, one * 3);
        for i in 1..=5 {
            log.push(i, removed("x"));
        }
        assert_eq!((log.len(), log.start(), log.bytes()), (3, 2, one * 3));
        assert_eq!(log.since(1, 100), Some(Changes::SnapshotNeeded { start: 2, applied: 5 }));
        log.push(6, removed(&"y".repeat(10 * one)));
        assert_eq!((log.len(), log.start()), (1, 5), "a change larger than the bound is kept alone");
        assert!(matches!(log.since(5, 100), Some(Changes::Changes { ref changes, .. }) if changes.len() == 1));
    }

    #[test]
    fn long_answers_stop_at_a_whole_entry() {
        let mut log = ChangeLog::new(0, 100);
        for i in 1..=10 {
            log.push(i, removed("x"));
        }
        log.advance(20);
        let Some(Changes::Changes { to, changes, .. }) = log.since(0, 4) else { panic!() };
        assert_eq!((to, changes.len()), (4, 4));
        let Some(Changes::Changes { to, changes, .. }) = log.since(8, 4) else { panic!() };
        assert_eq!((to, changes.len()), (20, 2));
    }

    #[test]
    fn a_filtered_answer_skips_what_its_follower_does_not_see() {
        let mut log = ChangeLog::new(0, 100);
        for i in 1..=6 {
            log.push(i, removed("x"));
        }
        let map_only = |c: &ViewChange| matches!(c, ViewChange::BucketRemoved { name } if name == "m");
        log.push(7, removed("m"));
        log.push(8, removed("x"));
        log.push(9, removed("m"));
        let Some(Changes::Changes { to, changes, .. }) = log.since_only(0, 100, map_only) else { panic!() };
        assert_eq!((to, changes.iter().map(|c| c.index).collect::<Vec<_>>()), (9, vec![7, 9]));
        let Some(Changes::Changes { to, changes, .. }) = log.since_only(0, 1, map_only) else { panic!() };
        assert_eq!((to, changes.len()), (7, 1), "cut short after the first kept change");
        assert_eq!(log.since_only(9, 100, map_only), None);
        let Some(Changes::Changes { to, changes, .. }) = log.since_only(0, 100, |_| false) else { panic!() };
        assert_eq!((to, changes.len()), (9, 0), "a follower that sees nothing still moves to the end");
    }

    #[test]
    fn wire_form_reads_back_maps_with_earlier_rows_too() {
        use sillok_placement::topology::{Node, NodeId, NodeState, Site, Topology};
        let mut t = Topology::default();
        for s in 0..3u32 {
            t.sites.push(Site { id: format!("s{s}") });
            t.nodes.push(Node {
                id: NodeId(s + 1),
                site: format!("s{s}"),
                addr: format!("127.0.0.1:{}", 7000 + s),
                weight: 1.0,
                state: NodeState::Up,
            });
        }
        let mut map = PlacementMap::new(t, sillok_placement::EcProfile { k: 2, m: 1 }, 8).unwrap();
        map.previous.insert(3, vec![map.slots[3].clone()]);
        let c = Changes::Changes {
            since: 1,
            to: 3,
            changes: vec![
                IndexedChange { index: 2, change: removed("b") },
                IndexedChange { index: 3, change: ViewChange::Map { map } },
            ],
        };
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Changes>(&text).unwrap(), c);
        let s = Changes::SnapshotNeeded { start: 5, applied: 9 };
        assert_eq!(serde_json::from_str::<Changes>(&serde_json::to_string(&s).unwrap()).unwrap(), s);
    }
}
