//! The node's manifest store: a redb database at `<data>/meta.redb`.
//!
//! Owns: the table `manifests`, the newest manifest this node holds for each
//! `(bucket, key)`, tombstones included.
//!
//! Keys: `u16 BE len(bucket) ‖ bucket ‖ key` (raw UTF-8 bytes). Within a bucket,
//! keys therefore sort in byte order (S3's listing order) and a prefix of a key
//! is a prefix of its table key, so a listing is one range scan.
//!
//! Values: a fixed summary followed by the manifest as JSON, so that version
//! checks and listings never parse (possibly large, inline) manifests:
//!
//! ```text
//! [0]       value format, 1
//! [1..9]    version.nanos, u64 BE
//! [9..17]   version.tiebreak, u64 BE
//! [17]      1 if a tombstone
//! [18..26]  size, u64 LE
//! [26..34]  last_modified_ms, i64 LE
//! [34..36]  etag length, u16 LE, then the etag bytes
//! [..]      the manifest, JSON
//! ```
//!
//! Invariants:
//! - A stored manifest is replaced only by one with a strictly newer
//!   [`Version`]; an equal version is an idempotent success; an older one is
//!   refused (`stored: false`) and the reply names the current version.
//! - Every write is durable (redb's default `Durability::Immediate`) before it
//!   is acknowledged. Writes go through one writer thread that takes whatever
//!   is queued (up to [`MAX_BATCH`]) into one transaction: group commit.
//!   Within a batch, requests apply in arrival order.
//! - Reads run in their own read transactions on the blocking pool,
//!   concurrently with each other and with the writer.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use crate::api::{ListEntry, ListManifests, ManifestList, PutManifestReply};
use crate::error::NodeError;
use sillok_model::manifest::{Manifest, Version};

const MANIFESTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("manifests");
const VALUE_FORMAT: u8 = 1;
/// Most puts committed in one transaction.
pub const MAX_BATCH: usize = 1024;
/// Longest page a listing returns.
pub const MAX_LIST: u32 = 10_000;
pub const MAX_BUCKET_LEN: usize = 1024;
pub const MAX_KEY_LEN: usize = 8192;

fn store_err(e: impl std::fmt::Display) -> NodeError {
    NodeError::Store(e.to_string())
}

fn check_names(bucket: &str, key: Option<&str>) -> Result<(), NodeError> {
    if bucket.is_empty() || bucket.len() > MAX_BUCKET_LEN {
        return Err(NodeError::BadRequest(format!("bucket name must be 1..={MAX_BUCKET_LEN} bytes")));
    }
    if let Some(key) = key
        && key.len() > MAX_KEY_LEN
    {
        return Err(NodeError::BadRequest(format!("key must be at most {MAX_KEY_LEN} bytes")));
    }
    Ok(())
}

/// The table key of `bucket/key`.
pub fn table_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + bucket.len() + key.len());
    k.extend_from_slice(&(bucket.len() as u16).to_be_bytes());
    k.extend_from_slice(bucket.as_bytes());
    k.extend_from_slice(key.as_bytes());
    k
}

fn encode_value(m: &Manifest) -> Result<Vec<u8>, NodeError> {
    let json = serde_json::to_vec(m).map_err(|e| NodeError::Other(format!("manifest does not serialise: {e}")))?;
    let etag = m.etag.as_bytes();
    if etag.len() > u16::MAX as usize {
        return Err(NodeError::BadRequest("etag too long".into()));
    }
    let mut v = Vec::with_capacity(36 + etag.len() + json.len());
    v.push(VALUE_FORMAT);
    v.extend_from_slice(&m.version.nanos.to_be_bytes());
    v.extend_from_slice(&m.version.tiebreak.to_be_bytes());
    v.push(u8::from(m.is_deleted()));
    v.extend_from_slice(&m.size.to_le_bytes());
    v.extend_from_slice(&m.last_modified_ms.to_le_bytes());
    v.extend_from_slice(&(etag.len() as u16).to_le_bytes());
    v.extend_from_slice(etag);
    v.extend_from_slice(&json);
    Ok(v)
}

/// The fixed part of a stored value.
struct Summary {
    version: Version,
    deleted: bool,
    size: u64,
    last_modified_ms: i64,
    etag: String,
    json_at: usize,
}

fn decode_summary(v: &[u8]) -> Result<Summary, NodeError> {
    let bad = || NodeError::Store("malformed manifest record".into());
    if v.len() < 36 || v[0] != VALUE_FORMAT {
        return Err(bad());
    }
    let u64_be = |o: usize| u64::from_be_bytes(v[o..o + 8].try_into().expect("8 bytes"));
    let etag_len = u16::from_le_bytes([v[34], v[35]]) as usize;
    let etag = v.get(36..36 + etag_len).ok_or_else(bad)?;
    Ok(Summary {
        version: Version { nanos: u64_be(1), tiebreak: u64_be(9) },
        deleted: v[17] == 1,
        size: u64::from_le_bytes(v[18..26].try_into().expect("8 bytes")),
        last_modified_ms: i64::from_le_bytes(v[26..34].try_into().expect("8 bytes")),
        etag: String::from_utf8(etag.to_vec()).map_err(|_| bad())?,
        json_at: 36 + etag_len,
    })
}

struct PutReq {
    key: Vec<u8>,
    version: Version,
    value: Vec<u8>,
    reply: oneshot::Sender<Result<PutManifestReply, NodeError>>,
}

/// Handle to the manifest store. Cheap to clone; the writer thread stops when
/// the last handle is dropped.
#[derive(Clone)]
pub struct MetaStore {
    db: Arc<Database>,
    writes: mpsc::Sender<PutReq>,
    /// Changes (its sender drops) when the writer thread has let go of the database.
    writer_gone: tokio::sync::watch::Receiver<()>,
    /// Write transactions committed so far (observability, and the group-commit test).
    commits: Arc<std::sync::atomic::AtomicU64>,
}

impl MetaStore {
    /// Opens or creates `<data_dir>/meta.redb` and starts the writer thread.
    /// Blocking: call from the blocking pool or before the runtime is busy.
    pub fn open(data_dir: &Path) -> Result<Self, NodeError> {
        let db = Database::create(data_dir.join("meta.redb")).map_err(store_err)?;
        let w = db.begin_write().map_err(store_err)?;
        w.open_table(MANIFESTS).map_err(store_err)?;
        w.commit().map_err(store_err)?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let wdb = db.clone();
        let (gone_tx, writer_gone) = tokio::sync::watch::channel(());
        let commits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let wcommits = commits.clone();
        std::thread::Builder::new().name("sillok-meta-writer".into()).spawn(move || {
            writer(wdb, rx, &wcommits);
            drop(gone_tx);
        })?;
        Ok(MetaStore { db, writes: tx, writer_gone, commits })
    }

    /// How many write transactions the writer has committed.
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Drops this handle and, if it was the last one, waits until the writer
    /// thread has finished and released the database (so it can be reopened).
    pub async fn close(self) {
        let mut gone = self.writer_gone.clone();
        drop(self);
        while gone.changed().await.is_ok() {}
    }

    /// Keeps `m` if its version is newer than the stored one (see the module
    /// invariants). Returns once the decision is durable.
    pub async fn put(&self, m: &Manifest) -> Result<PutManifestReply, NodeError> {
        check_names(&m.bucket, Some(&m.key))?;
        let (reply, rx) = oneshot::channel();
        let req = PutReq { key: table_key(&m.bucket, &m.key), version: m.version, value: encode_value(m)?, reply };
        self.writes.send(req).await.map_err(|_| NodeError::Store("metadata writer stopped".into()))?;
        rx.await.map_err(|_| NodeError::Store("metadata writer stopped".into()))?
    }

    pub async fn get(&self, bucket: &str, key: &str) -> Result<Option<Manifest>, NodeError> {
        match self.get_json(bucket, key).await? {
            Some(json) => Ok(Some(
                serde_json::from_slice(&json)
                    .map_err(|e| NodeError::Store(format!("malformed manifest record: {e}")))?,
            )),
            None => Ok(None),
        }
    }

    /// The stored manifest as its JSON bytes, exactly as the API sends it, so a
    /// read never decodes and re-encodes an inline body.
    pub async fn get_json(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, NodeError> {
        check_names(bucket, Some(key))?;
        let db = self.db.clone();
        let k = table_key(bucket, key);
        spawn_blocking(move || {
            let r = db.begin_read().map_err(store_err)?;
            let t = r.open_table(MANIFESTS).map_err(store_err)?;
            match t.get(k.as_slice()).map_err(store_err)? {
                Some(v) => {
                    let v = v.value();
                    let summary = decode_summary(v)?;
                    Ok(Some(v[summary.json_at..].to_vec()))
                }
                None => Ok(None),
            }
        })
        .await
    }

    /// Keys of `req.bucket` that start with `req.prefix` and sort strictly after
    /// `req.start_after`, in key order, at most `req.limit` (capped at
    /// [`MAX_LIST`]), tombstones included.
    pub async fn list(&self, req: &ListManifests) -> Result<ManifestList, NodeError> {
        check_names(&req.bucket, Some(&req.prefix))?;
        let db = self.db.clone();
        let limit = req.limit.min(MAX_LIST) as usize;
        let prefix = table_key(&req.bucket, &req.prefix);
        let lower = match &req.start_after {
            Some(after) if after.as_str() >= req.prefix.as_str() => Bound::Excluded(table_key(&req.bucket, after)),
            _ => Bound::Included(prefix.clone()),
        };
        let bucket_len = 2 + req.bucket.len();
        spawn_blocking(move || {
            let r = db.begin_read().map_err(store_err)?;
            let t = r.open_table(MANIFESTS).map_err(store_err)?;
            let range =
                t.range::<&[u8]>((lower.as_ref().map(|v| v.as_slice()), Bound::Unbounded)).map_err(store_err)?;
            let mut entries = Vec::new();
            for item in range {
                let (k, v) = item.map_err(store_err)?;
                let k = k.value();
                if !k.starts_with(&prefix) {
                    break;
                }
                if entries.len() == limit {
                    return Ok(ManifestList { entries, truncated: true });
                }
                let s = decode_summary(v.value())?;
                let key = String::from_utf8(k[bucket_len..].to_vec())
                    .map_err(|_| NodeError::Store("key is not UTF-8".into()))?;
                entries.push(ListEntry {
                    key,
                    version: s.version,
                    deleted: s.deleted,
                    size: s.size,
                    etag: s.etag,
                    last_modified_ms: s.last_modified_ms,
                });
            }
            Ok(ManifestList { entries, truncated: false })
        })
        .await
    }
}

async fn spawn_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| NodeError::Other(format!("metadata task failed: {e}")))?
}

/// The single writer: takes one request, then everything else already queued,
/// applies them in one transaction and commits once.
fn writer(db: Arc<Database>, mut rx: mpsc::Receiver<PutReq>, commits: &std::sync::atomic::AtomicU64) {
    let db = &*db;
    let mut batch: Vec<PutReq> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let n = batch.len();
        match apply(db, &batch) {
            Ok(replies) => {
                commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                for (req, reply) in batch.drain(..).zip(replies) {
                    let _ = req.reply.send(Ok(reply));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batch = n, "manifest batch failed to commit");
                for req in batch.drain(..) {
                    let _ = req.reply.send(Err(NodeError::Store(e.to_string())));
                }
            }
        }
        tracing::trace!(batch = n, "manifest batch committed");
    }
}

fn apply(db: &Database, batch: &[PutReq]) -> Result<Vec<PutManifestReply>, NodeError> {
    let w = db.begin_write().map_err(store_err)?;
    let mut replies = Vec::with_capacity(batch.len());
    {
        let mut t = w.open_table(MANIFESTS).map_err(store_err)?;
        for req in batch {
            let current = match t.get(req.key.as_slice()).map_err(store_err)? {
                Some(v) => Some(decode_summary(v.value())?.version),
                None => None,
            };
            let reply = match current {
                Some(cur) if cur > req.version => PutManifestReply { stored: false, current: cur },
                Some(cur) if cur == req.version => PutManifestReply { stored: true, current: cur },
                _ => {
                    t.insert(req.key.as_slice(), req.value.as_slice()).map_err(store_err)?;
                    PutManifestReply { stored: true, current: req.version }
                }
            };
            replies.push(reply);
        }
    }
    w.commit().map_err(store_err)?;
    Ok(replies)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sillok_model::manifest::Body;

    fn m(bucket: &str, key: &str, nanos: u64) -> Manifest {
        Manifest {
            bucket: bucket.into(),
            key: key.into(),
            version: Version { nanos, tiebreak: 7 },
            last_modified_ms: (nanos / 1_000_000) as i64,
            size: nanos,
            etag: format!("etag{nanos}"),
            content_type: None,
            headers: Default::default(),
            user_metadata: Default::default(),
            body: Body::Inline { data: vec![1, 2, 3] },
        }
    }

    #[tokio::test]
    async fn newer_wins_equal_is_idempotent_older_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        let r = s.put(&m("b", "k", 10)).await.unwrap();
        assert!(r.stored);
        let r = s.put(&m("b", "k", 10)).await.unwrap();
        assert_eq!(r, PutManifestReply { stored: true, current: Version { nanos: 10, tiebreak: 7 } });
        let r = s.put(&m("b", "k", 5)).await.unwrap();
        assert_eq!(r, PutManifestReply { stored: false, current: Version { nanos: 10, tiebreak: 7 } });
        assert_eq!(s.get("b", "k").await.unwrap().unwrap().size, 10);
        let r = s.put(&m("b", "k", 20)).await.unwrap();
        assert!(r.stored);
        assert_eq!(s.get("b", "k").await.unwrap().unwrap(), m("b", "k", 20));
        assert!(s.get("b", "other").await.unwrap().is_none());
        assert!(s.get("bb", "k").await.unwrap().is_none());
        // Survives a reopen.
        s.close().await;
        let s = MetaStore::open(dir.path()).unwrap();
        assert_eq!(s.get("b", "k").await.unwrap().unwrap(), m("b", "k", 20));
    }

    #[tokio::test]
    async fn list_prefix_start_after_limit_tombstones() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        for (i, key) in ["a", "a/1", "a/2", "a/3", "b", "c/x"].iter().enumerate() {
            s.put(&m("bk", key, 100 + i as u64)).await.unwrap();
        }
        s.put(&m("bk2", "a/9", 1)).await.unwrap();
        s.put(&m("b", "a/0", 1)).await.unwrap();
        let mut t = Manifest::tombstone("bk", "a/2");
        t.version = Version { nanos: 1000, tiebreak: 0 };
        s.put(&t).await.unwrap();

        let list = |prefix: &str, after: Option<&str>, limit: u32| ListManifests {
            bucket: "bk".into(),
            prefix: prefix.into(),
            start_after: after.map(String::from),
            limit,
        };
        let keys = |l: &ManifestList| l.entries.iter().map(|e| e.key.clone()).collect::<Vec<_>>();

        let all = s.list(&list("", None, 100)).await.unwrap();
        assert_eq!(keys(&all), ["a", "a/1", "a/2", "a/3", "b", "c/x"]);
        assert!(!all.truncated);
        assert!(all.entries[2].deleted && !all.entries[1].deleted);
        assert_eq!(all.entries[1].etag, "etag101");

        let p = s.list(&list("a/", None, 100)).await.unwrap();
        assert_eq!(keys(&p), ["a/1", "a/2", "a/3"]);
        let p = s.list(&list("a/", None, 2)).await.unwrap();
        assert_eq!(keys(&p), ["a/1", "a/2"]);
        assert!(p.truncated);
        let p = s.list(&list("a/", Some("a/2"), 2)).await.unwrap();
        assert_eq!(keys(&p), ["a/3"]);
        assert!(!p.truncated);
        let p = s.list(&list("a/", Some("a"), 10)).await.unwrap();
        assert_eq!(keys(&p), ["a/1", "a/2", "a/3"]);
        let p = s.list(&list("", Some("a/3"), 10)).await.unwrap();
        assert_eq!(keys(&p), ["b", "c/x"]);
        let p = s.list(&list("", Some("zzz"), 10)).await.unwrap();
        assert!(p.entries.is_empty() && !p.truncated);
        let p = s.list(&list("a/", None, 0)).await.unwrap();
        assert!(p.entries.is_empty() && p.truncated);
        let p = s.list(&list("nothing", None, 10)).await.unwrap();
        assert!(p.entries.is_empty() && !p.truncated);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_puts_are_group_committed() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        let mut tasks = Vec::new();
        for i in 0..300u64 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move { s.put(&m("b", &format!("k{i:04}"), i + 1)).await }));
        }
        for t in tasks {
            assert!(t.await.unwrap().unwrap().stored);
        }
        let l = s
            .list(&ListManifests { bucket: "b".into(), prefix: "k".into(), start_after: None, limit: 1000 })
            .await
            .unwrap();
        assert_eq!(l.entries.len(), 300);
        // 1 commit for the table at open is not counted; the puts shared commits.
        assert!(s.commits() < 300, "{} commits for 300 puts: no batching", s.commits());
    }

    #[tokio::test]
    async fn bad_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        assert!(matches!(s.put(&m("", "k", 1)).await, Err(NodeError::BadRequest(_))));
        assert!(matches!(s.put(&m("b", &"x".repeat(MAX_KEY_LEN + 1), 1)).await, Err(NodeError::BadRequest(_))));
    }
}
