//! The replica's disk: the Raft log and vote, and the catalog state machine,
//! in two redb files under the replica's directory.
//!
//! Owns: `raft-log.redb` ([`LogStore`]) and `catalog.redb`
//! ([`StateMachineStore`]), and the in-memory copy of the state machine that
//! the API reads.
//!
//! Tables (keys and values; values are JSON):
//! - `raft-log.redb`: `raft_log` (u64 log index → entry), `raft_meta` (`vote`,
//!   `committed`, `last_purged` → log id or vote).
//! - `catalog.redb`: `sm_meta` (`applied`, `membership`, `region`, `map`,
//!   `next_node_id`, `next_seq`), `sm_buckets` (name → bucket), `sm_keys`
//!   (key id → key record, secret included), `sm_requests` (request id →
//!   `{seq, reply}`: the last [`REQUEST_MEMORY`] replies, for retries), and
//!   `snapshot` (`meta`, `data`: the last snapshot built or installed).
//!
//! Invariants:
//! - Every write is one redb transaction with immediate durability (fsync)
//!   before the call returns: an appended entry, a vote or an applied batch is
//!   on disk when openraft is told it is. The one exception is `committed`,
//!   a hint openraft uses to re-apply entries at start: it is written with
//!   eventual durability (crash-consistent, made durable by the next fsync of
//!   the log), so a crash can only make it older, which is safe.
//! - An applied batch writes `applied`, `membership` and exactly the rows the
//!   batch's commands touched in one transaction, so the state machine on disk
//!   is always the state after some whole batch; on restart it is read back
//!   and openraft re-applies the committed entries after it.
//! - The in-memory state is replaced only under its lock, and a snapshot is
//!   built from one consistent read of it.
//! - Installing a snapshot replaces every state-machine table in one
//!   transaction.
//! - Replies to forgotten request ids are evicted oldest first (by apply
//!   order), so every replica forgets the same ones.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, RwLock};

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    AnyError, EntryPayload, ErrorSubject, ErrorVerb, LogState, RaftLogReader, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageIOError, Vote,
};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::changes::{ChangeLog, Changes, DEFAULT_CHANGE_LOG_ENTRIES, IndexedChange, ViewChange};
use crate::state::{Catalog, Touch};
use crate::{Entry, LogId, ReplicaNode, Reply, StorageError, StoredMembership, TypeConfig};
use sillok_placement::MapDelta;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const RAFT_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");
const BUCKETS: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_buckets");
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_keys");
const REQUESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_requests");
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

/// How many replies (by request id) the state machine remembers for retries.
pub const REQUEST_MEMORY: usize = 10_000;

fn storage_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::error(e.to_string())).into()
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("catalog types serialise")
}

/// Runs redb work on the blocking pool.
async fn blocking<T: Send + 'static>(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    f: impl FnOnce() -> Result<T, redb::Error> + Send + 'static,
) -> Result<T, StorageError> {
    let s2 = subject.clone();
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(storage_err(s2, verb, e)),
        Err(e) => Err(storage_err(subject, verb, format!("storage task failed: {e}"))),
    }
}

fn json_err(e: serde_json::Error) -> redb::Error {
    redb::Error::Corrupted(format!("undecodable catalog record: {e}"))
}

// ---------------------------------------------------------------- log store

/// The Raft log and vote. Cheap to clone (it is its own log reader).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub fn open(dir: &Path) -> Result<Self, redb::Error> {
        let db = sillok_redb_file::open_or_create(&dir.join("raft-log.redb"))?;
        let w = db.begin_write()?;
        w.open_table(LOG)?;
        w.open_table(RAFT_META)?;
        w.commit()?;
        Ok(LogStore { db: Arc::new(db) })
    }

    fn get_meta<T: for<'a> Deserialize<'a>>(db: &Database, key: &str) -> Result<Option<T>, redb::Error> {
        let r = db.begin_read()?;
        let t = r.open_table(RAFT_META)?;
        match t.get(key)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(json_err)?)),
            None => Ok(None),
        }
    }

    fn put_meta(db: &Database, key: &str, value: &[u8], durable: bool) -> Result<(), redb::Error> {
        let mut w = db.begin_write()?;
        if !durable {
            w.set_durability(redb::Durability::Eventual);
        }
        w.open_table(RAFT_META)?.insert(key, value)?;
        w.commit()?;
        Ok(())
    }

    /// Number of entries kept (tests and status).
    pub fn len(&self) -> Result<u64, redb::Error> {
        Ok(self.db.begin_read()?.open_table(LOG)?.len()?)
    }

    pub fn is_empty(&self) -> Result<bool, redb::Error> {
        Ok(self.len()? == 0)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let db = self.db.clone();
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => Some(e.saturating_add(1)),
            Bound::Excluded(&e) => Some(e),
            Bound::Unbounded => None,
        };
        blocking(ErrorSubject::Logs, ErrorVerb::Read, move || {
            let r = db.begin_read()?;
            let t = r.open_table(LOG)?;
            let iter = match end {
                Some(e) if e <= start => return Ok(Vec::new()),
                Some(e) => t.range(start..e)?,
                None => t.range(start..)?,
            };
            let mut out = Vec::new();
            for item in iter {
                let (_, v) = item?;
                out.push(serde_json::from_slice::<Entry>(v.value()).map_err(json_err)?);
            }
            Ok(out)
        })
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let db = self.db.clone();
        blocking(ErrorSubject::Logs, ErrorVerb::Read, move || {
            let last_purged: Option<LogId> = Self::get_meta(&db, "last_purged")?;
            let r = db.begin_read()?;
            let t = r.open_table(LOG)?;
            let last = match t.last()? {
                Some((_, v)) => Some(serde_json::from_slice::<Entry>(v.value()).map_err(json_err)?.log_id),
                None => last_purged,
            };
            Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        let db = self.db.clone();
        let bytes = to_json(vote);
        blocking(ErrorSubject::Vote, ErrorVerb::Write, move || Self::put_meta(&db, "vote", &bytes, true)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        let db = self.db.clone();
        blocking(ErrorSubject::Vote, ErrorVerb::Read, move || Self::get_meta(&db, "vote")).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let db = self.db.clone();
        let bytes = to_json(&committed);
        blocking(ErrorSubject::Store, ErrorVerb::Write, move || Self::put_meta(&db, "committed", &bytes, false)).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let db = self.db.clone();
        blocking(ErrorSubject::Store, ErrorVerb::Read, move || {
            Ok(Self::get_meta::<Option<LogId>>(&db, "committed")?.flatten())
        })
        .await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let rows: Vec<(u64, Vec<u8>)> = entries.into_iter().map(|e| (e.log_id.index, to_json(&e))).collect();
        let db = self.db.clone();
        let res = blocking(ErrorSubject::Logs, ErrorVerb::Write, move || {
            let w = db.begin_write()?;
            {
                let mut t = w.open_table(LOG)?;
                for (i, bytes) in &rows {
                    t.insert(*i, bytes.as_slice())?;
                }
            }
            w.commit()?;
            Ok(())
        })
        .await;
        match &res {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        res
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let db = self.db.clone();
        tracing::debug!(from = log_id.index, "truncating the catalog log");
        blocking(ErrorSubject::Logs, ErrorVerb::Delete, move || {
            let w = db.begin_write()?;
            {
                let mut t = w.open_table(LOG)?;
                t.retain_in(log_id.index.., |_, _| false)?;
            }
            w.commit()?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let db = self.db.clone();
        tracing::debug!(upto = log_id.index, "purging the catalog log");
        blocking(ErrorSubject::Logs, ErrorVerb::Delete, move || {
            let w = db.begin_write()?;
            {
                w.open_table(RAFT_META)?.insert("last_purged", to_json(&Some(log_id)).as_slice())?;
                let mut t = w.open_table(LOG)?;
                t.retain_in(..=log_id.index, |_, _| false)?;
            }
            w.commit()?;
            Ok(())
        })
        .await
    }
}

// ------------------------------------------------------------ state machine

/// Replies remembered by request id, in apply order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Requests {
    by_id: BTreeMap<String, (u64, Reply)>,
    order: BTreeMap<u64, String>,
    next_seq: u64,
}

#[derive(Serialize, Deserialize)]
struct RequestRow {
    seq: u64,
    reply: Reply,
}

impl Requests {
    pub fn get(&self, id: &str) -> Option<&Reply> {
        self.by_id.get(id).map(|(_, r)| r)
    }

    /// Remembers a reply; returns the ids forgotten to stay within the limit.
    fn insert(&mut self, id: String, reply: Reply) -> Vec<String> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, id.clone());
        self.by_id.insert(id, (seq, reply));
        let mut evicted = Vec::new();
        while self.by_id.len() > REQUEST_MEMORY {
            let Some((_, old)) = self.order.pop_first() else { break };
            self.by_id.remove(&old);
            evicted.push(old);
        }
        evicted
    }

    fn push_loaded(&mut self, id: String, seq: u64, reply: Reply) {
        self.order.insert(seq, id.clone());
        self.by_id.insert(id, (seq, reply));
    }
}

/// The state machine: what has been applied, and the catalog it made.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SmState {
    pub applied: Option<LogId>,
    pub membership: StoredMembership,
    pub catalog: Catalog,
    pub requests: Requests,
}

/// Serialised rows of one write: `None` deletes the row.
#[derive(Default)]
struct Rows {
    /// Replace the bucket, key and request tables whole.
    all: bool,
    meta: Vec<(&'static str, Vec<u8>)>,
    buckets: Vec<(String, Option<Vec<u8>>)>,
    keys: Vec<(String, Option<Vec<u8>>)>,
    requests: Vec<(String, Option<Vec<u8>>)>,
}

/// A snapshot's data (JSON).
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    catalog: Catalog,
    requests: Vec<(String, u64, Reply)>,
    next_seq: u64,
}

/// What changed, for watchers: the map's epoch and the last applied index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub epoch: u64,
    pub applied_index: u64,
}

struct SmShared {
    db: Database,
    state: RwLock<SmState>,
    progress: watch::Sender<Progress>,
    snapshot_seq: std::sync::atomic::AtomicU64,
    /// What followers need of each applied entry (`changes`): updated after
    /// a batch is on disk and before its progress is published.
    changes: std::sync::Mutex<ChangeLog>,
}

/// What one applied batch does to the change log, in order.
enum LogOp {
    /// The log starts again at this entry's index (a bootstrap or restore:
    /// nothing before it can be followed by changes); later entries of the
    /// same batch are pushed after it.
    Reset(u64),
    Push(u64, ViewChange),
}

/// The catalog state machine. Cheap to clone: clones share one state.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<SmShared>,
}

/// Rows of the state machine that one batch changed.
#[derive(Default)]
struct Dirty {
    all: bool,
    map: bool,
    buckets: Vec<String>,
    keys: Vec<String>,
    requests: Vec<String>,
    evicted: Vec<String>,
}

impl StateMachineStore {
    pub fn open(dir: &Path) -> Result<Self, redb::Error> {
        let db = sillok_redb_file::open_or_create(&dir.join("catalog.redb"))?;
        let w = db.begin_write()?;
        for t in [SM_META, BUCKETS, KEYS, REQUESTS, SNAPSHOT] {
            w.open_table(t)?;
        }
        w.commit()?;
        let state = Self::load(&db)?;
        let progress = progress_of(&state);
        let (tx, _) = watch::channel(progress);
        let changes = std::sync::Mutex::new(ChangeLog::new(progress.applied_index, DEFAULT_CHANGE_LOG_ENTRIES));
        Ok(StateMachineStore {
            inner: Arc::new(SmShared {
                db,
                state: RwLock::new(state),
                progress: tx,
                snapshot_seq: Default::default(),
                changes,
            }),
        })
    }

    fn load(db: &Database) -> Result<SmState, redb::Error> {
        let r = db.begin_read()?;
        let meta = r.open_table(SM_META)?;
        fn get<T: for<'a> Deserialize<'a>>(
            t: &impl ReadableTable<&'static str, &'static [u8]>,
            k: &str,
        ) -> Result<Option<T>, redb::Error> {
            match t.get(k)? {
                Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(json_err)?)),
                None => Ok(None),
            }
        }
        let mut st = SmState {
            applied: get::<Option<LogId>>(&meta, "applied")?.flatten(),
            membership: get(&meta, "membership")?.unwrap_or_default(),
            ..Default::default()
        };
        st.catalog.region = get(&meta, "region")?.unwrap_or_default();
        st.catalog.map = get(&meta, "map")?.flatten();
        st.catalog.next_node_id = get(&meta, "next_node_id")?.unwrap_or_default();
        st.catalog.repair = get(&meta, "repair")?.unwrap_or_default();
        st.catalog.staged = get(&meta, "staged")?.unwrap_or_default();
        st.catalog.restored_base = get(&meta, "restored_base")?.unwrap_or_default();
        for item in r.open_table(BUCKETS)?.iter()? {
            let (k, v) = item?;
            st.catalog.buckets.insert(k.value().to_string(), serde_json::from_slice(v.value()).map_err(json_err)?);
        }
        for item in r.open_table(KEYS)?.iter()? {
            let (k, v) = item?;
            st.catalog.keys.insert(k.value().to_string(), serde_json::from_slice(v.value()).map_err(json_err)?);
        }
        for item in r.open_table(REQUESTS)?.iter()? {
            let (k, v) = item?;
            let row: RequestRow = serde_json::from_slice(v.value()).map_err(json_err)?;
            st.requests.push_loaded(k.value().to_string(), row.seq, row.reply);
        }
        st.requests.next_seq = get(&meta, "next_seq")?.unwrap_or_default();
        Ok(st)
    }

    /// Reads the current state under the lock.
    pub fn read<T>(&self, f: impl FnOnce(&SmState) -> T) -> T {
        f(&self.inner.state.read().expect("state lock"))
    }

    /// Keeps at most `entries` changes for followers from now on (the log
    /// starts again, empty, at the applied index).
    pub fn set_change_log_entries(&self, entries: usize) {
        let applied = self.inner.progress.borrow().applied_index;
        *self.inner.changes.lock().expect("change log lock") = ChangeLog::new(applied, entries);
    }

    /// What a follower at `since` needs (`None`: nothing applied after it).
    pub fn changes_since(&self, since: u64, max: usize) -> Option<Changes> {
        self.inner.changes.lock().expect("change log lock").since(since, max)
    }

    /// What a follower of the map alone (a storage node) at `since` needs:
    /// the map's changes, or, when the log no longer reaches back to
    /// `since`, the whole current map as the one change up to the applied
    /// index (a map read after the log is at least as new as the log's end;
    /// followers skip changes whose epoch they already have).
    pub fn map_changes_since(&self, since: u64, max: usize) -> Option<Changes> {
        let answer = self.inner.changes.lock().expect("change log lock").since_only(since, max, ViewChange::is_map)?;
        let Changes::SnapshotNeeded { applied, .. } = answer else { return Some(answer) };
        let map = self.read(|st| st.catalog.map.clone());
        let changes = map.map(|map| IndexedChange { index: applied, change: ViewChange::Map { map } });
        Some(Changes::Changes { since, to: applied, changes: changes.into_iter().collect() })
    }

    /// Watches the map epoch and the applied index.
    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.inner.progress.subscribe()
    }

    fn publish(&self, p: Progress) {
        self.inner.progress.send_if_modified(|old| {
            let changed = *old != p;
            *old = p;
            changed
        });
    }

    /// The rows a batch changed, serialised (taken under the state lock).
    fn rows(st: &SmState, dirty: &Dirty) -> Rows {
        let mut r = Rows { all: dirty.all, ..Default::default() };
        r.meta.push(("applied", to_json(&st.applied)));
        r.meta.push(("membership", to_json(&st.membership)));
        r.meta.push(("next_seq", to_json(&st.requests.next_seq)));
        if dirty.all || dirty.map {
            r.meta.push(("region", to_json(&st.catalog.region)));
            r.meta.push(("map", to_json(&st.catalog.map)));
            r.meta.push(("next_node_id", to_json(&st.catalog.next_node_id)));
            r.meta.push(("repair", to_json(&st.catalog.repair)));
            r.meta.push(("staged", to_json(&st.catalog.staged)));
            r.meta.push(("restored_base", to_json(&st.catalog.restored_base)));
        }
        let bucket = |name: &String| (name.clone(), st.catalog.buckets.get(name).map(to_json));
        let key = |id: &String| (id.clone(), st.catalog.keys.get(id).map(to_json));
        let request = |id: &String| {
            let row =
                st.requests.by_id.get(id).map(|(seq, reply)| to_json(&RequestRow { seq: *seq, reply: reply.clone() }));
            (id.clone(), row)
        };
        if dirty.all {
            r.buckets = st.catalog.buckets.keys().map(bucket).collect();
            r.keys = st.catalog.keys.keys().map(key).collect();
            r.requests = st.requests.by_id.keys().map(request).collect();
        } else {
            r.buckets = dirty.buckets.iter().map(bucket).collect();
            r.keys = dirty.keys.iter().map(key).collect();
            r.requests = dirty.evicted.iter().chain(&dirty.requests).map(request).collect();
        }
        r
    }

    /// Writes rows in one durable transaction.
    fn write(db: &Database, rows: &Rows) -> Result<(), redb::Error> {
        let w = db.begin_write()?;
        {
            let mut meta = w.open_table(SM_META)?;
            for (k, v) in &rows.meta {
                meta.insert(*k, v.as_slice())?;
            }
            for (def, list) in [(BUCKETS, &rows.buckets), (KEYS, &rows.keys), (REQUESTS, &rows.requests)] {
                let mut t = w.open_table(def)?;
                if rows.all {
                    t.retain(|_, _| false)?;
                }
                for (k, v) in list {
                    match v {
                        Some(v) => t.insert(k.as_str(), v.as_slice())?,
                        None => t.remove(k.as_str())?,
                    };
                }
            }
        }
        w.commit()?;
        Ok(())
    }

    fn snapshot_bytes(st: &SmState) -> Vec<u8> {
        let mut requests: Vec<(String, u64, Reply)> =
            st.requests.by_id.iter().map(|(id, (seq, r))| (id.clone(), *seq, r.clone())).collect();
        requests.sort_by_key(|(_, seq, _)| *seq);
        to_json(&SnapshotData { catalog: st.catalog.clone(), requests, next_seq: st.requests.next_seq })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (meta, data) = self.read(|st| {
            let seq = self.inner.snapshot_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let id = match st.applied {
                Some(l) => format!("{}-{}-{seq}", l.leader_id, l.index),
                None => format!("none-{seq}"),
            };
            let meta =
                SnapshotMeta { last_log_id: st.applied, last_membership: st.membership.clone(), snapshot_id: id };
            (meta, Self::snapshot_bytes(st))
        });
        let inner = self.inner.clone();
        let (m, d) = (to_json(&meta), data.clone());
        blocking(ErrorSubject::Snapshot(None), ErrorVerb::Write, move || {
            let w = inner.db.begin_write()?;
            {
                let mut t = w.open_table(SNAPSHOT)?;
                t.insert("meta", m.as_slice())?;
                t.insert("data", d.as_slice())?;
            }
            w.commit()?;
            Ok(())
        })
        .await?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "catalog snapshot built");
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok(self.read(|st| (st.applied, st.membership.clone())))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut replies = Vec::new();
        let mut dirty = Dirty::default();
        let mut log_ops = Vec::new();
        let (rows, progress) = {
            let mut st = self.inner.state.write().expect("state lock");
            for entry in entries {
                st.applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => replies.push(Ok(noop())),
                    EntryPayload::Membership(m) => {
                        st.membership = StoredMembership::new(Some(entry.log_id), m);
                        replies.push(Ok(noop()));
                    }
                    EntryPayload::Normal(p) => {
                        if let Some(r) = st.requests.get(&p.request_id) {
                            replies.push(r.clone());
                            continue;
                        }
                        let touches = p.command.touches();
                        // Only the map is compared (for followers), and only
                        // for commands that may change it.
                        let map_before = (touches == Touch::Map).then(|| st.catalog.map.clone());
                        let reply = st.catalog.apply(&p.command);
                        if reply.is_ok() {
                            let index = st.catalog.restored_base + entry.log_id.index;
                            match touches {
                                Touch::All => {
                                    dirty.all = true;
                                    log_ops.push(LogOp::Reset(index));
                                }
                                Touch::Map => {
                                    dirty.map = true;
                                    if let Some(map) = st.catalog.map.as_ref()
                                        && map_before.as_ref().and_then(|m| m.as_ref()) != Some(map)
                                    {
                                        let delta = map_before.flatten().and_then(|old| MapDelta::between(&old, map));
                                        let change = match delta {
                                            Some(delta) => ViewChange::MapDelta { delta },
                                            None => ViewChange::Map { map: map.clone() },
                                        };
                                        log_ops.push(LogOp::Push(index, change));
                                    }
                                }
                                Touch::Bucket(b) => {
                                    let change = match st.catalog.buckets.get(&b) {
                                        Some(bucket) => ViewChange::BucketPut { bucket: bucket.clone() },
                                        None => ViewChange::BucketRemoved { name: b.clone() },
                                    };
                                    log_ops.push(LogOp::Push(index, change));
                                    dirty.buckets.push(b);
                                }
                                Touch::Key(k) => {
                                    let change = match st.catalog.keys.get(&k) {
                                        Some(key) => ViewChange::KeyPut { key: key.clone() },
                                        None => ViewChange::KeyRemoved { id: k.clone() },
                                    };
                                    log_ops.push(LogOp::Push(index, change));
                                    dirty.keys.push(k);
                                }
                            }
                        } else if let Err(e) = &reply {
                            tracing::info!(index = entry.log_id.index, error = %e, "catalog change refused");
                        }
                        if !p.request_id.is_empty() {
                            dirty.evicted.extend(st.requests.insert(p.request_id.clone(), reply.clone()));
                            dirty.requests.push(p.request_id);
                        }
                        replies.push(reply);
                    }
                }
            }
            // What to write, taken under the lock: a consistent batch.
            (Self::rows(&st, &dirty), progress_of(&st))
        };
        let inner = self.inner.clone();
        blocking(ErrorSubject::StateMachine, ErrorVerb::Write, move || Self::write(&inner.db, &rows)).await?;
        {
            let mut log = self.inner.changes.lock().expect("change log lock");
            for op in log_ops {
                match op {
                    // A restore moves the index far ahead: nothing before it
                    // can be followed by changes.
                    LogOp::Reset(index) => log.reset(index),
                    LogOp::Push(index, change) => log.push(index, change),
                }
            }
            log.advance(progress.applied_index);
        }
        self.publish(progress);
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, ReplicaNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let data: SnapshotData = serde_json::from_slice(&bytes).map_err(|e| {
            storage_err(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Read, format!("bad snapshot: {e}"))
        })?;
        let mut st = SmState {
            applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            catalog: data.catalog,
            requests: Requests::default(),
        };
        for (id, seq, reply) in data.requests {
            st.requests.push_loaded(id, seq, reply);
        }
        st.requests.next_seq = data.next_seq;
        let inner = self.inner.clone();
        let (m, rows) = (to_json(meta), Self::rows(&st, &Dirty { all: true, ..Default::default() }));
        blocking(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Write, move || {
            Self::write(&inner.db, &rows)?;
            let w = inner.db.begin_write()?;
            {
                let mut t = w.open_table(SNAPSHOT)?;
                t.insert("meta", m.as_slice())?;
                t.insert("data", bytes.as_slice())?;
            }
            w.commit()?;
            Ok(())
        })
        .await?;
        tracing::info!(snapshot = %meta.snapshot_id, "catalog snapshot installed");
        let progress = progress_of(&st);
        *self.inner.state.write().expect("state lock") = st;
        self.inner.changes.lock().expect("change log lock").reset(progress.applied_index);
        self.publish(progress);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let inner = self.inner.clone();
        let found = blocking(ErrorSubject::Snapshot(None), ErrorVerb::Read, move || {
            let r = inner.db.begin_read()?;
            let t = r.open_table(SNAPSHOT)?;
            let (Some(m), Some(d)) = (t.get("meta")?, t.get("data")?) else { return Ok(None) };
            let meta: SnapshotMeta<u64, ReplicaNode> = serde_json::from_slice(m.value()).map_err(json_err)?;
            Ok(Some((meta, d.value().to_vec())))
        })
        .await?;
        Ok(found.map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}

fn progress_of(st: &SmState) -> Progress {
    Progress { epoch: st.catalog.epoch(), applied_index: st.catalog.restored_base + st.applied.map_or(0, |l| l.index) }
}

/// The reply of entries that carry no command (blank, membership).
fn noop() -> crate::Outcome {
    crate::Outcome::Internal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, command: crate::state::Command) -> Entry {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(crate::Proposal { request_id: format!("r{index}"), command }),
        }
    }

    /// A bootstrap and changes after it applied in one batch: the change log
    /// starts again at the bootstrap's own index, so the changes after it
    /// follow in order (it was reset at the batch's last index, out of order:
    /// a debug assertion stopped a replica in the replicas test).
    #[tokio::test]
    async fn a_bootstrap_in_the_middle_of_a_batch_restarts_the_change_log_at_its_own_index() {
        use crate::state::{Bucket, Command, KeyRecord, Permission};
        use sillok_placement::{EcProfile, Node, NodeId, NodeState, PlacementMap, Site, Topology};
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        let mut t = Topology::default();
        for s in 0..3u32 {
            t.sites.push(Site { id: format!("s{s}") });
            for i in 0..2u32 {
                let id = s * 2 + i + 1;
                let addr = format!("127.0.0.1:{}", 7000 + id);
                t.nodes.push(Node { id: NodeId(id), site: format!("s{s}"), addr, weight: 1.0, state: NodeState::Up });
            }
        }
        let map = PlacementMap::new(t, EcProfile::default(), 16).unwrap();
        let key = KeyRecord {
            id: "ADMIN1".into(),
            secret: "0123456789abcdef0123".into(),
            permissions: [Permission::Admin].into_iter().collect(),
            enabled: true,
            created_at: 1,
        };
        let bucket = |name: &str| Command::CreateBucket {
            bucket: Bucket {
                name: name.into(),
                owner: "ADMIN1".into(),
                created_at: 1,
                storage_class: "STANDARD".into(),
                cors: None,
                lifecycle: None,
                versioning: Default::default(),
            },
        };
        let batch = vec![
            entry(1, Command::Bootstrap { region: "r".into(), map, keys: vec![key] }),
            entry(2, bucket("alpha")),
            entry(3, bucket("bravo")),
        ];
        let replies = sm.apply(batch).await.unwrap();
        assert!(replies.iter().all(|r| r.is_ok()), "{replies:?}");
        let Some(Changes::Changes { since: 1, to: 3, changes }) = sm.changes_since(1, 100) else {
            panic!("{:?}", sm.changes_since(1, 100))
        };
        let indexes: Vec<u64> = changes.iter().map(|c| c.index).collect();
        assert_eq!(indexes, [2, 3]);
        assert!(matches!(sm.changes_since(0, 100), Some(Changes::SnapshotNeeded { start: 1, applied: 3 })));
    }

    /// A Raft log written by an earlier Sillok (redb's v2 file format) is
    /// upgraded to v3 when the replica opens it, and keeps what it held.
    #[test]
    fn a_v2_raft_log_is_upgraded_at_open_and_keeps_its_vote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-log.redb");
        {
            let db = redb::Builder::new().create_with_file_format_v3(false).create(&path).unwrap();
            let w = db.begin_write().unwrap();
            w.open_table(LOG).unwrap();
            w.open_table(RAFT_META).unwrap();
            w.commit().unwrap();
            LogStore::put_meta(&db, "vote", br#"{"term":7}"#, true).unwrap();
        }
        let log = LogStore::open(dir.path()).unwrap();
        let vote: Option<serde_json::Value> = LogStore::get_meta(&log.db, "vote").unwrap();
        assert_eq!(vote, Some(serde_json::json!({"term": 7})));
        drop(log);
        let mut db = Database::create(&path).unwrap();
        assert!(!db.upgrade().unwrap(), "LogStore::open left the file in redb's v2 format");
    }
}
