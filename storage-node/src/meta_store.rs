//! The node's manifest store: a redb database at `<data>/meta.redb`.
//!
//! Owns: the table `manifests`, the newest manifest this node holds for each
//! `(bucket, key)`, tombstones included.
//!
//! Keys: `u16 BE len(bucket) ‖ bucket ‖ key` (raw UTF-8 bytes). Within a bucket,
//! keys therefore sort in byte order (S3's listing order) and a prefix of a key
//! is a prefix of its table key, so a listing is one range scan.
//!
//! Values: a fixed summary followed by the manifest in its binary encoding
//! (`sillok_model::manifest::wire`), so that version checks, listings and
//! quorum summaries never decode (possibly large, inline) manifests, and a
//! manifest read sends the stored encoding as it is:
//!
//! ```text
//! [0]       value format, 2
//! [1..9]    version.nanos, u64 BE
//! [9..17]   version.tiebreak, u64 BE
//! [17]      1 if a tombstone, 2 if an S3 delete marker, else 0
//! [18..26]  size, u64 LE
//! [26..34]  last_modified_ms, i64 LE
//! [34..42]  the location generation (`Manifest::locations`), u64 LE
//! [42..58]  the manifest's digest (`wire::digest` of its encoding)
//! [58..60]  etag length, u16 LE, then the etag bytes
//! [..]      the manifest, `wire::encode`
//! ```
//!
//! Value format 1 (until this encoding) had the same summary up to byte 34,
//! then the etag, then the manifest as JSON. A database that holds format-1
//! values has them rewritten as format 2 at open (`format/values` records
//! that it was done), in transactions of [`MIGRATE_BATCH`] values, so an
//! interrupted migration resumes where it stopped.
//!
//! A second table, `by_hash`, indexes the same manifests by placement: key
//! `placement hash u64 BE ‖ table key` (the hash of `model::placement`, so
//! an upload's records and parts sit next to their object), value
//!
//! ```text
//! [0]       index format, 3
//! [1..17]   version (nanos, tiebreak), u64 BE each
//! [17]      1 if a tombstone
//! [18..26]  the location generation (`Manifest::locations`), u64 BE
//! [26..42]  the manifest's digest (as in the value)
//! [42..]    the object ids the manifest refers to, 16 raw bytes each
//! ```
//!
//! A manifest summary (what the replicas that do not send the body answer
//! a quorum read) is read from `by_hash` alone: its small entries share
//! pages, where the value of an inline manifest fills pages of its own.
//!
//! so that one PG is one range of it (under `PgFunction::TopBits`), and
//! "does a manifest here refer to object id X?" is a scan of the keys with
//! X's hash (normally one key). A third table, `collect_candidates`, keeps
//! for the collector when it first found each shard file (`<object id>.<index>`) unreferenced
//! (`collector`), and `format` records that `by_hash` was built: databases
//! written before it existed get it built once, at open, from `manifests`.
//!
//! Invariants:
//! - `by_hash` holds exactly one entry per `manifests` entry, written in the
//!   same transaction.
//! - A stored manifest is replaced only by one with a strictly newer
//!   [`Version`]; an equal version is an idempotent success; an older one is
//!   refused (`stored: false`) and the reply names the current version.
//! - Every write is durable (redb's default `Durability::Immediate`) before it
//!   is acknowledged. Writes go through one writer thread that takes whatever
//!   is queued (up to [`MAX_BATCH`]) into one transaction: group commit.
//!   Within a batch, requests apply in arrival order.
//! - Reads run in their own read transactions, concurrently with each other
//!   and with the writer: scans on the blocking pool, point reads of one key
//!   (`get_encoded`, `summary`) inline on the caller's thread, since they
//!   touch a few pages that are almost always cached and a hop to another
//!   thread cost more than the read (measured: the thumbnail GET).

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use crate::api::{
    ListEntry, ListManifests, ManifestList, ManifestSummary, PgEntry, PgManifestList, PgObject, PgObjectList,
    PgSelector, PutManifestReply, Relocate, RelocateReply, ShardMove, ShardPlace,
};
use crate::error::NodeError;
use bytes::Bytes;
use sillok_model::manifest::{Manifest, ShardLocation, Version, wire};
use sillok_model::placement;

const MANIFESTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("manifests");
const BY_HASH: TableDefinition<&[u8], &[u8]> = TableDefinition::new("by_hash");
const CANDIDATES: TableDefinition<&str, u64> = TableDefinition::new("collect_candidates");
const FORMAT: TableDefinition<&str, u64> = TableDefinition::new("format");
const VALUE_FORMAT: u8 = 2;
/// Values written before the binary encoding: the manifest as JSON.
const VALUE_FORMAT_JSON: u8 = 1;
/// Written under `format/values` once every value is [`VALUE_FORMAT`].
const VALUES_MIGRATED: u64 = 2;
/// Values rewritten per transaction by the format migration.
const MIGRATE_BATCH: usize = 4096;
const INDEX_FORMAT: u8 = 3;
/// Written under `format/by_hash` once `by_hash` holds [`INDEX_FORMAT`] entries.
const INDEX_BUILT: u64 = 3;
/// Most puts committed in one transaction.
pub const MAX_BATCH: usize = 1024;
/// Longest page a listing returns.
pub const MAX_LIST: u32 = 10_000;

/// PGs digested in one blocking task and read transaction
/// ([`MetaStore::pg_digests`]): each task stays short on a large store.
const DIGESTS_AT_ONCE: usize = 64;

pub const MAX_BUCKET_LEN: usize = 1024;
pub const MAX_KEY_LEN: usize = 8192;
/// redb's cache for `meta.redb` unless the node is told otherwise
/// (`sillok node --meta-cache-mib`): redb's own default, 1 GiB. Pages a
/// commit wrote enter it too, so recent small objects' bodies are read from
/// memory. A 64 MiB cache was measured against it (2026-12-07, `benches/compare.sh`,
/// 64 KiB GETs of just-written objects): no difference beyond the noise.
pub const DEFAULT_CACHE_BYTES: usize = 1 << 30;

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

/// The `by_hash` key of `bucket/key`.
pub fn index_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = placement::placement_hash(bucket, key).to_be_bytes().to_vec();
    k.extend_from_slice(&table_key(bucket, key));
    k
}

fn encode_index(m: &Manifest, digest: &[u8; 16]) -> Vec<u8> {
    let sets = m.body.sharded_sets();
    let mut v = Vec::with_capacity(42 + 16 * sets.len());
    v.push(INDEX_FORMAT);
    v.extend_from_slice(&m.version.nanos.to_be_bytes());
    v.extend_from_slice(&m.version.tiebreak.to_be_bytes());
    v.push(u8::from(m.is_deleted()));
    v.extend_from_slice(&m.locations.to_be_bytes());
    v.extend_from_slice(digest);
    for s in sets {
        let mut raw = [0u8; 16];
        // Object ids were checked as 32 hex digits when their shards were
        // written; one that is not cannot name a shard file, so it is skipped.
        if hex::decode_to_slice(&s.object_id, &mut raw).is_ok() {
            v.extend_from_slice(&raw);
        }
    }
    v
}

/// One `by_hash` entry, decoded.
struct IndexEntry<'a> {
    version: Version,
    deleted: bool,
    locations: u64,
    digest: [u8; 16],
    refs: &'a [u8],
}

fn decode_index(v: &[u8]) -> Result<IndexEntry<'_>, NodeError> {
    if v.len() < 42 || v[0] != INDEX_FORMAT || !(v.len() - 42).is_multiple_of(16) {
        return Err(NodeError::Store("malformed index record".into()));
    }
    let u64_be = |o: usize| u64::from_be_bytes(v[o..o + 8].try_into().expect("8 bytes"));
    Ok(IndexEntry {
        version: Version { nanos: u64_be(1), tiebreak: u64_be(9) },
        deleted: v[17] == 1,
        locations: u64_be(18),
        digest: v[26..42].try_into().expect("16 bytes"),
        refs: &v[42..],
    })
}

/// Splits a table key back into bucket and key.
fn split_table_key(k: &[u8]) -> Result<(String, String), NodeError> {
    let bad = || NodeError::Store("malformed table key".into());
    let len = u16::from_be_bytes([*k.first().ok_or_else(bad)?, *k.get(1).ok_or_else(bad)?]) as usize;
    let bucket = k.get(2..2 + len).ok_or_else(bad)?;
    let key = &k[2 + len..];
    Ok((String::from_utf8(bucket.to_vec()).map_err(|_| bad())?, String::from_utf8(key.to_vec()).map_err(|_| bad())?))
}

/// Rewrites format-1 (JSON) values as format 2, [`MIGRATE_BATCH`] per
/// transaction, unless `format/values` says it was done.
fn migrate_values(db: &Database) -> Result<(), NodeError> {
    {
        let r = db.begin_read().map_err(store_err)?;
        if let Ok(format) = r.open_table(FORMAT)
            && format.get("values").map_err(store_err)?.is_some_and(|v| v.value() >= VALUES_MIGRATED)
        {
            return Ok(());
        }
    }
    let mut after: Option<Vec<u8>> = None;
    let mut rewritten = 0u64;
    loop {
        let w = db.begin_write().map_err(store_err)?;
        let done = {
            let mut t = w.open_table(MANIFESTS).map_err(store_err)?;
            let mut batch = Vec::new();
            let mut seen = 0usize;
            let range = match &after {
                Some(a) => t.range::<&[u8]>((Bound::Excluded(a.as_slice()), Bound::Unbounded)),
                None => t.range::<&[u8]>(..),
            }
            .map_err(store_err)?;
            for item in range {
                let (k, v) = item.map_err(store_err)?;
                seen += 1;
                after = Some(k.value().to_vec());
                if v.value().first() == Some(&VALUE_FORMAT_JSON) {
                    batch.push((k.value().to_vec(), encode_record(&stored_manifest(v.value())?)?.0));
                }
                if seen == MIGRATE_BATCH {
                    break;
                }
            }
            for (k, v) in &batch {
                t.insert(k.as_slice(), v.as_slice()).map_err(store_err)?;
            }
            rewritten += batch.len() as u64;
            if seen < MIGRATE_BATCH {
                w.open_table(FORMAT).map_err(store_err)?.insert("values", VALUES_MIGRATED).map_err(store_err)?;
                true
            } else {
                false
            }
        };
        w.commit().map_err(store_err)?;
        if done {
            break;
        }
    }
    if rewritten > 0 {
        tracing::info!(manifests = rewritten, "rewrote stored manifests from JSON to the binary encoding");
    }
    Ok(())
}

/// Builds `by_hash` from `manifests` if this database predates it.
fn migrate(db: &Database) -> Result<(), NodeError> {
    migrate_values(db)?;
    let w = db.begin_write().map_err(store_err)?;
    {
        let mut format = w.open_table(FORMAT).map_err(store_err)?;
        let built = format.get("by_hash").map_err(store_err)?.map(|v| v.value()).unwrap_or(0);
        w.open_table(CANDIDATES).map_err(store_err)?;
        let mut index = w.open_table(BY_HASH).map_err(store_err)?;
        if built < INDEX_BUILT {
            // An index of an earlier format is rebuilt whole.
            index.retain(|_, _| false).map_err(store_err)?;
            let t = w.open_table(MANIFESTS).map_err(store_err)?;
            let mut n = 0u64;
            for item in t.iter().map_err(store_err)? {
                let (k, v) = item.map_err(store_err)?;
                let m = stored_manifest(v.value())?;
                let mut ik = placement::placement_hash(&m.bucket, &m.key).to_be_bytes().to_vec();
                ik.extend_from_slice(k.value());
                index.insert(ik.as_slice(), encode_record(&m)?.1.as_slice()).map_err(store_err)?;
                n += 1;
            }
            format.insert("by_hash", INDEX_BUILT).map_err(store_err)?;
            if n > 0 {
                tracing::info!(manifests = n, "built the placement index of the manifest store");
            }
        }
    }
    w.commit().map_err(store_err)
}

/// A manifest's stored value and its `by_hash` entry, from one encoding.
fn encode_record(m: &Manifest) -> Result<(Vec<u8>, Vec<u8>), NodeError> {
    let encoded = wire::encode(m);
    let digest = wire::digest(&encoded);
    let etag = m.etag.as_bytes();
    if etag.len() > u16::MAX as usize {
        return Err(NodeError::BadRequest("etag too long".into()));
    }
    let mut v = Vec::with_capacity(60 + etag.len() + encoded.len());
    v.push(VALUE_FORMAT);
    v.extend_from_slice(&m.version.nanos.to_be_bytes());
    v.extend_from_slice(&m.version.tiebreak.to_be_bytes());
    // 0 live, 1 tombstone, 2 S3 delete marker (live, but not an object).
    v.push(if m.is_deleted() {
        1
    } else if m.is_delete_marker() {
        2
    } else {
        0
    });
    v.extend_from_slice(&m.size.to_le_bytes());
    v.extend_from_slice(&m.last_modified_ms.to_le_bytes());
    v.extend_from_slice(&m.locations.to_le_bytes());
    v.extend_from_slice(&digest);
    v.extend_from_slice(&(etag.len() as u16).to_le_bytes());
    v.extend_from_slice(etag);
    v.extend_from_slice(&encoded);
    Ok((v, encode_index(m, &digest)))
}

/// The fixed part of a stored value.
struct Summary {
    format: u8,
    version: Version,
    deleted: bool,
    delete_marker: bool,
    size: u64,
    last_modified_ms: i64,
    etag: String,
    /// Where the manifest starts (JSON in format 1, `wire` in format 2).
    manifest_at: usize,
}

fn decode_summary(v: &[u8]) -> Result<Summary, NodeError> {
    let bad = || NodeError::Store("malformed manifest record".into());
    let (format, etag_at) = match v.first() {
        Some(&VALUE_FORMAT) if v.len() >= 60 => (VALUE_FORMAT, 58),
        Some(&VALUE_FORMAT_JSON) if v.len() >= 36 => (VALUE_FORMAT_JSON, 34),
        _ => return Err(bad()),
    };
    let u64_be = |o: usize| u64::from_be_bytes(v[o..o + 8].try_into().expect("8 bytes"));
    let etag_len = u16::from_le_bytes([v[etag_at], v[etag_at + 1]]) as usize;
    let etag = v.get(etag_at + 2..etag_at + 2 + etag_len).ok_or_else(bad)?;
    Ok(Summary {
        format,
        version: Version { nanos: u64_be(1), tiebreak: u64_be(9) },
        deleted: v[17] == 1,
        delete_marker: v[17] == 2,
        size: u64::from_le_bytes(v[18..26].try_into().expect("8 bytes")),
        last_modified_ms: i64::from_le_bytes(v[26..34].try_into().expect("8 bytes")),
        etag: String::from_utf8(etag.to_vec()).map_err(|_| bad())?,
        manifest_at: etag_at + 2 + etag_len,
    })
}

/// The manifest of a stored value, whatever its format.
fn stored_manifest(v: &[u8]) -> Result<Manifest, NodeError> {
    let s = decode_summary(v)?;
    let body = &v[s.manifest_at..];
    if s.format == VALUE_FORMAT_JSON {
        serde_json::from_slice(body).map_err(|e| NodeError::Store(format!("malformed manifest record: {e}")))
    } else {
        wire::decode(&Bytes::copy_from_slice(body)).map_err(|e| NodeError::Store(format!("stored manifest: {e}")))
    }
}

struct PutReq {
    key: Vec<u8>,
    index_key: Vec<u8>,
    index_value: Vec<u8>,
    version: Version,
    locations: u64,
    value: Vec<u8>,
    reply: oneshot::Sender<Result<PutManifestReply, NodeError>>,
}

struct RelocateReq {
    req: Relocate,
    reply: oneshot::Sender<Result<RelocateReply, NodeError>>,
}

/// What the writer thread applies, in arrival order.
enum Write {
    Put(PutReq),
    Relocate(RelocateReq),
}

enum Applied {
    Put(PutManifestReply),
    Relocate(RelocateReply),
}

impl Write {
    fn answer(self, r: Result<Applied, NodeError>) {
        match (self, r) {
            (Write::Put(p), Ok(Applied::Put(a))) => drop(p.reply.send(Ok(a))),
            (Write::Relocate(p), Ok(Applied::Relocate(a))) => drop(p.reply.send(Ok(a))),
            (Write::Put(p), Err(e)) => drop(p.reply.send(Err(e))),
            (Write::Relocate(p), Err(e)) => drop(p.reply.send(Err(e))),
            (Write::Put(p), Ok(_)) => drop(p.reply.send(Err(NodeError::Other("mismatched reply".into())))),
            (Write::Relocate(p), Ok(_)) => drop(p.reply.send(Err(NodeError::Other("mismatched reply".into())))),
        }
    }
}

/// Handle to the manifest store. Cheap to clone; the writer thread stops when
/// the last handle is dropped.
#[derive(Clone)]
pub struct MetaStore {
    db: Arc<Database>,
    writes: mpsc::Sender<Write>,
    /// Changes (its sender drops) when the writer thread has let go of the database.
    writer_gone: tokio::sync::watch::Receiver<()>,
    /// Write transactions committed so far (observability, and the group-commit test).
    commits: Arc<std::sync::atomic::AtomicU64>,
}

impl MetaStore {
    /// Opens or creates `<data_dir>/meta.redb` with a cache of
    /// [`DEFAULT_CACHE_BYTES`] and starts the writer thread.
    /// Blocking: call from the blocking pool or before the runtime is busy.
    pub fn open(data_dir: &Path) -> Result<Self, NodeError> {
        Self::open_with_cache(data_dir, DEFAULT_CACHE_BYTES)
    }

    /// [`MetaStore::open`] with redb's cache (pages read and written) at
    /// `cache_bytes`.
    pub fn open_with_cache(data_dir: &Path, cache_bytes: usize) -> Result<Self, NodeError> {
        let db = sillok_redb_file::open_or_create_with_cache(&data_dir.join("meta.redb"), Some(cache_bytes))
            .map_err(store_err)?;
        let w = db.begin_write().map_err(store_err)?;
        w.open_table(MANIFESTS).map_err(store_err)?;
        w.commit().map_err(store_err)?;
        migrate(&db)?;
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

    /// Whether the store holds no manifest at all (a node that never had
    /// any, or whose disk was replaced). Blocking, like [`MetaStore::open`].
    pub fn is_empty(&self) -> Result<bool, NodeError> {
        let r = self.db.begin_read().map_err(store_err)?;
        let t = r.open_table(MANIFESTS).map_err(store_err)?;
        redb::ReadableTableMetadata::is_empty(&t).map_err(store_err)
    }

    /// How many write transactions the writer has committed.
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Drops this handle and, if it was the last one, waits until the writer
    /// thread has finished and released the database, and (at most 5 s)
    /// until no other holder has it open (so it can be reopened).
    pub async fn close(self) {
        let mut gone = self.writer_gone.clone();
        let db = Arc::downgrade(&self.db);
        drop(self);
        while gone.changed().await.is_ok() {}
        // Other clones (an upkeep task's, a read still running on the
        // blocking pool after its task was aborted) hold the database open,
        // and with it the file's lock: wait for them too, for a while.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while db.strong_count() > 0 && std::time::Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if db.strong_count() > 0 {
            tracing::warn!("the manifest store is still held open 5 s after the node stopped");
        }
    }

    /// Keeps `m` if its version is newer than the stored one (see the module
    /// invariants). Returns once the decision is durable.
    pub async fn put(&self, m: &Manifest) -> Result<PutManifestReply, NodeError> {
        check_names(&m.bucket, Some(&m.key))?;
        let (reply, rx) = oneshot::channel();
        let (value, index_value) = encode_record(m)?;
        let req = PutReq {
            key: table_key(&m.bucket, &m.key),
            index_key: index_key(&m.bucket, &m.key),
            index_value,
            version: m.version,
            locations: m.locations,
            value,
            reply,
        };
        self.writes.send(Write::Put(req)).await.map_err(|_| NodeError::Store("metadata writer stopped".into()))?;
        rx.await.map_err(|_| NodeError::Store("metadata writer stopped".into()))?
    }

    /// Records new places for shards of `bucket/key`'s version `req.version`,
    /// if that version is still the stored one and its location generation is
    /// still `req.generation` (compare-and-swap); the generation then grows by
    /// one. An overwrite or a delete in between (another version), or another
    /// relocation (another generation), makes it a no-op that names what is
    /// stored, so a repair can never undo either.
    pub async fn relocate(&self, req: Relocate) -> Result<RelocateReply, NodeError> {
        check_names(&req.bucket, Some(&req.key))?;
        let (reply, rx) = oneshot::channel();
        let w = Write::Relocate(RelocateReq { req, reply });
        self.writes.send(w).await.map_err(|_| NodeError::Store("metadata writer stopped".into()))?;
        rx.await.map_err(|_| NodeError::Store("metadata writer stopped".into()))?
    }

    pub async fn get(&self, bucket: &str, key: &str) -> Result<Option<Manifest>, NodeError> {
        match self.get_encoded(bucket, key).await? {
            Some(enc) => Ok(Some(wire::decode(&enc).map_err(|e| NodeError::Store(format!("stored manifest: {e}")))?)),
            None => Ok(None),
        }
    }

    /// The stored manifest in its binary encoding, exactly as the API sends
    /// it: a read never decodes and re-encodes an inline body.
    pub async fn get_encoded(&self, bucket: &str, key: &str) -> Result<Option<Bytes>, NodeError> {
        check_names(bucket, Some(key))?;
        let k = table_key(bucket, key);
        {
            let r = self.db.begin_read().map_err(store_err)?;
            let t = r.open_table(MANIFESTS).map_err(store_err)?;
            match t.get(k.as_slice()).map_err(store_err)? {
                Some(v) => {
                    let v = v.value();
                    let s = decode_summary(v)?;
                    if s.format == VALUE_FORMAT {
                        Ok(Some(Bytes::copy_from_slice(&v[s.manifest_at..])))
                    } else {
                        Ok(Some(wire::encode(&stored_manifest(v)?).into()))
                    }
                }
                None => Ok(None),
            }
        }
    }

    /// What a quorum read needs of the stored manifest to decide which
    /// replica holds the newest: its version, location generation and
    /// digest, from the `by_hash` entry alone (the value is not read).
    pub async fn summary(&self, bucket: &str, key: &str) -> Result<Option<ManifestSummary>, NodeError> {
        check_names(bucket, Some(key))?;
        let k = index_key(bucket, key);
        let r = self.db.begin_read().map_err(store_err)?;
        let t = r.open_table(BY_HASH).map_err(store_err)?;
        let Some(v) = t.get(k.as_slice()).map_err(store_err)? else { return Ok(None) };
        let e = decode_index(v.value())?;
        Ok(Some(ManifestSummary { version: e.version, deleted: e.deleted, locations: e.locations, digest: e.digest }))
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
                let v = v.value();
                let s = decode_summary(v)?;
                let key = String::from_utf8(k[bucket_len..].to_vec())
                    .map_err(|_| NodeError::Store("key is not UTF-8".into()))?;
                let version_id = if s.format == VALUE_FORMAT {
                    wire::peek_version_id(&v[s.manifest_at..])
                        .map_err(|e| NodeError::Store(format!("malformed manifest record: {e}")))?
                } else {
                    None
                };
                entries.push(ListEntry {
                    key,
                    version: s.version,
                    deleted: s.deleted,
                    size: s.size,
                    etag: s.etag,
                    last_modified_ms: s.last_modified_ms,
                    delete_marker: s.delete_marker,
                    version_id,
                });
            }
            Ok(ManifestList { entries, truncated: false })
        })
        .await
    }

    /// The manifests this node holds in one PG (tombstones, upload records and
    /// parts included), in index order after the cursor `after` (as returned
    /// in `next`), at most `limit` (capped at [`MAX_LIST`]). Reads only the
    /// index, never a manifest. Under `PgFunction::Modulo` the PG is scattered
    /// and this scans the whole index.
    pub async fn list_pg(
        &self,
        sel: PgSelector,
        after: Option<String>,
        limit: u32,
    ) -> Result<PgManifestList, NodeError> {
        let (after, limit) = page(after, limit)?;
        let db = self.db.clone();
        spawn_blocking(move || {
            let r = db.begin_read().map_err(store_err)?;
            let t = r.open_table(BY_HASH).map_err(store_err)?;
            let mut entries = Vec::new();
            let mut next = None;
            scan_pg(&t, sel, after, |k, v| {
                if entries.len() == limit {
                    return Ok(false);
                }
                let e = decode_index(v)?;
                let (bucket, key) = split_table_key(&k[8..])?;
                entries.push(PgEntry {
                    bucket,
                    key,
                    version: e.version,
                    deleted: e.deleted,
                    locations: e.locations,
                    object_ids: e.refs.chunks(16).map(hex::encode).collect(),
                });
                next = Some(hex::encode(k));
                Ok(true)
            })?;
            let next = if entries.len() == limit { next } else { None };
            Ok(PgManifestList { entries, next })
        })
        .await
    }

    /// The live manifests of one PG whose bodies have shards, with where
    /// those shards are (what the rebuild engine works from), in index order
    /// after the cursor `after`; at most `limit` index entries are read per
    /// page (capped at [`MAX_LIST`]), so a page may hold fewer objects.
    pub async fn pg_objects(
        &self,
        sel: PgSelector,
        after: Option<String>,
        limit: u32,
    ) -> Result<PgObjectList, NodeError> {
        let (after, limit) = page(after, limit)?;
        let db = self.db.clone();
        spawn_blocking(move || {
            let r = db.begin_read().map_err(store_err)?;
            let index = r.open_table(BY_HASH).map_err(store_err)?;
            let manifests = r.open_table(MANIFESTS).map_err(store_err)?;
            let (mut objects, mut read, mut next) = (Vec::new(), 0usize, None);
            scan_pg(&index, sel, after, |k, v| {
                if read == limit {
                    return Ok(false);
                }
                read += 1;
                next = Some(hex::encode(k));
                let e = decode_index(v)?;
                if e.deleted || e.refs.is_empty() {
                    return Ok(true);
                }
                let Some(rec) = manifests.get(&k[8..]).map_err(store_err)? else { return Ok(true) };
                objects.push(PgObject::of(&stored_manifest(rec.value())?));
                Ok(true)
            })?;
            let next = if read == limit { next } else { None };
            Ok(PgObjectList { objects, next })
        })
        .await
    }

    /// Every entry of one PG held here (all pages of [`MetaStore::list_pg`]).
    pub async fn list_pg_all(&self, sel: PgSelector) -> Result<Vec<PgEntry>, NodeError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self.list_pg(sel, after, MAX_LIST).await?;
            out.extend(page.entries);
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// A digest of one PG's `(key, version, tombstone, location generation)` entries and their
    /// count: two replicas that hold the same versions of the same keys have
    /// the same digest.
    pub async fn pg_digest(&self, sel: PgSelector) -> Result<(u64, [u8; 32]), NodeError> {
        let mut one = self.pg_digests(vec![sel]).await?;
        Ok(one.pop().expect("one digest per PG asked"))
    }

    /// [`MetaStore::pg_digest`] of each PG in `sels`, in order. Rounds ask
    /// for every PG a node holds, every few seconds: one blocking task and one
    /// read transaction per [`DIGESTS_AT_ONCE`] PGs, not per PG (per PG, the
    /// thread hand-offs of an idle 9-node test cluster cost half a core).
    pub async fn pg_digests(&self, sels: Vec<PgSelector>) -> Result<Vec<(u64, [u8; 32])>, NodeError> {
        let mut out = Vec::with_capacity(sels.len());
        for chunk in sels.chunks(DIGESTS_AT_ONCE) {
            let (db, chunk) = (self.db.clone(), chunk.to_vec());
            let digests = spawn_blocking(move || {
                let r = db.begin_read().map_err(store_err)?;
                let t = r.open_table(BY_HASH).map_err(store_err)?;
                let mut out = Vec::with_capacity(chunk.len());
                for sel in chunk {
                    let mut h = blake3::Hasher::new();
                    let mut n = 0u64;
                    scan_pg(&t, sel, None, |k, v| {
                        h.update(&(k.len() as u32).to_le_bytes());
                        h.update(k);
                        h.update(&v[..26]);
                        n += 1;
                        Ok(true)
                    })?;
                    out.push((n, *h.finalize().as_bytes()));
                }
                Ok(out)
            })
            .await?;
            out.extend(digests);
        }
        Ok(out)
    }

    /// Where the manifests held here place the shards of `object_ids`: every
    /// `(object id, index, node)` that a manifest with the id's placement
    /// hash names (an object, its upload record, its parts; tombstones name
    /// nothing). An id that no manifest here names gets no entry. Ids that
    /// carry no placement hash cannot be looked up and are refused.
    pub async fn placements(&self, object_ids: Vec<String>) -> Result<Vec<ShardPlace>, NodeError> {
        let db = self.db.clone();
        spawn_blocking(move || {
            let r = db.begin_read().map_err(store_err)?;
            let index = r.open_table(BY_HASH).map_err(store_err)?;
            let manifests = r.open_table(MANIFESTS).map_err(store_err)?;
            let mut out = Vec::new();
            for id in object_ids {
                let Some(hash) = placement::object_id_hash(&id) else {
                    return Err(NodeError::BadRequest(format!("object id {id} carries no placement hash")));
                };
                let mut raw = [0u8; 16];
                hex::decode_to_slice(&id, &mut raw).map_err(|_| NodeError::BadRequest("bad object id".into()))?;
                let lo = hash.to_be_bytes();
                for item in index.range::<&[u8]>(lo.as_slice()..).map_err(store_err)? {
                    let (k, v) = item.map_err(store_err)?;
                    let k = k.value();
                    if k[..8] != lo {
                        break;
                    }
                    if !decode_index(v.value())?.refs.chunks(16).any(|r| r == raw) {
                        continue;
                    }
                    // The index says this manifest names the id; where, only
                    // the manifest itself says (normally one key per hash).
                    let Some(v) = manifests.get(&k[8..]).map_err(store_err)? else { continue };
                    let m = stored_manifest(v.value())?;
                    for set in m.body.sharded_sets().into_iter().filter(|s| s.object_id == id) {
                        for l in &set.shards {
                            out.push(ShardPlace { object_id: id.clone(), index: l.index, node: l.node });
                        }
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// Removes the tombstone of `bucket/key` if it is still the stored
    /// version `version` (a newer write in between keeps it all). True if
    /// removed.
    pub async fn purge_tombstone(&self, bucket: &str, key: &str, version: Version) -> Result<bool, NodeError> {
        let (tk, ik) = (table_key(bucket, key), index_key(bucket, key));
        let db = self.db.clone();
        spawn_blocking(move || {
            let w = db.begin_write().map_err(store_err)?;
            let removed = {
                let mut t = w.open_table(MANIFESTS).map_err(store_err)?;
                let mut index = w.open_table(BY_HASH).map_err(store_err)?;
                let current = match t.get(tk.as_slice()).map_err(store_err)? {
                    Some(v) => Some(decode_summary(v.value())?),
                    None => None,
                };
                match current {
                    Some(s) if s.deleted && s.version == version => {
                        t.remove(tk.as_slice()).map_err(store_err)?;
                        index.remove(ik.as_slice()).map_err(store_err)?;
                        true
                    }
                    _ => false,
                }
            };
            w.commit().map_err(store_err)?;
            Ok(removed)
        })
        .await
    }

    /// The collector's memory: records `now_ms` as the time each of `ids` was
    /// first found unreferenced (ids already recorded keep their time), and
    /// forgets `clear`. Returns each of `ids` with its recorded time.
    pub async fn note_candidates(
        &self,
        ids: Vec<String>,
        clear: Vec<String>,
        now_ms: u64,
    ) -> Result<Vec<(String, u64)>, NodeError> {
        let db = self.db.clone();
        spawn_blocking(move || {
            // Most rounds change nothing (every file still placed, every
            // candidate already noted): read first, and write (an fsync) only
            // if something changes.
            let (mut out, mut fresh, mut gone) = (Vec::with_capacity(ids.len()), Vec::new(), Vec::new());
            {
                let r = db.begin_read().map_err(store_err)?;
                let t = r.open_table(CANDIDATES).map_err(store_err)?;
                for id in clear {
                    if t.get(id.as_str()).map_err(store_err)?.is_some() {
                        gone.push(id);
                    }
                }
                for id in ids {
                    match t.get(id.as_str()).map_err(store_err)? {
                        Some(first) => out.push((id, first.value())),
                        None => {
                            fresh.push(id.clone());
                            out.push((id, now_ms));
                        }
                    }
                }
            }
            if fresh.is_empty() && gone.is_empty() {
                return Ok(out);
            }
            let w = db.begin_write().map_err(store_err)?;
            {
                let mut t = w.open_table(CANDIDATES).map_err(store_err)?;
                for id in &gone {
                    t.remove(id.as_str()).map_err(store_err)?;
                }
                for id in &fresh {
                    // A concurrent note (none today: one collector) keeps the earlier time.
                    if t.get(id.as_str()).map_err(store_err)?.is_none() {
                        t.insert(id.as_str(), now_ms).map_err(store_err)?;
                    }
                }
            }
            w.commit().map_err(store_err)?;
            Ok(out)
        })
        .await
    }
}

/// Calls `f(index key, index value)` for each `by_hash` entry of PG `sel`
/// after `after`, in key order, until `f` returns false.
fn scan_pg(
    t: &redb::ReadOnlyTable<&[u8], &[u8]>,
    sel: PgSelector,
    after: Option<Vec<u8>>,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<bool, NodeError>,
) -> Result<(), NodeError> {
    let range = sel.function.hash_range(sel.pg, sel.pg_count);
    let start = range.map(|(lo, _)| lo.to_be_bytes().to_vec()).unwrap_or_default();
    let lower = match after {
        Some(a) if a >= start => Bound::Excluded(a),
        _ => Bound::Included(start),
    };
    for item in t.range::<&[u8]>((lower.as_ref().map(|v| v.as_slice()), Bound::Unbounded)).map_err(store_err)? {
        let (k, v) = item.map_err(store_err)?;
        let k = k.value();
        if k.len() < 8 {
            return Err(NodeError::Store("malformed index key".into()));
        }
        let hash = u64::from_be_bytes(k[..8].try_into().expect("8 bytes"));
        if let Some((_, hi)) = range
            && hash > hi
        {
            break;
        }
        if sel.function.pg_of_hash(hash, sel.pg_count) != sel.pg {
            continue;
        }
        if !f(k, v.value())? {
            break;
        }
    }
    Ok(())
}

async fn spawn_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| NodeError::Other(format!("metadata task failed: {e}")))?
}

/// The single writer: takes one request, then everything else already queued,
/// applies them in one transaction and commits once.
fn writer(db: Arc<Database>, mut rx: mpsc::Receiver<Write>, commits: &std::sync::atomic::AtomicU64) {
    let db = &*db;
    let mut batch: Vec<Write> = Vec::with_capacity(MAX_BATCH);
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
                    req.answer(reply);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batch = n, "manifest batch failed to commit");
                for req in batch.drain(..) {
                    req.answer(Err(NodeError::Store(e.to_string())));
                }
            }
        }
        tracing::trace!(batch = n, "manifest batch committed");
    }
}

/// Applies a batch in one transaction. A request whose own input is bad (a
/// relocation naming a shard the version does not have) gets its error
/// without failing the others.
fn apply(db: &Database, batch: &[Write]) -> Result<Vec<Result<Applied, NodeError>>, NodeError> {
    let w = db.begin_write().map_err(store_err)?;
    let mut replies = Vec::with_capacity(batch.len());
    {
        let mut t = w.open_table(MANIFESTS).map_err(store_err)?;
        let mut index = w.open_table(BY_HASH).map_err(store_err)?;
        for op in batch {
            match op {
                Write::Put(req) => {
                    let current = match t.get(req.key.as_slice()).map_err(store_err)? {
                        Some(v) => Some(decode_summary(v.value())?.version),
                        None => None,
                    };
                    // Same version: a higher location generation is newer.
                    let stored_locations = if current == Some(req.version) {
                        match index.get(req.index_key.as_slice()).map_err(store_err)? {
                            Some(v) => decode_index(v.value())?.locations,
                            None => 0,
                        }
                    } else {
                        0
                    };
                    let reply = match current {
                        Some(cur) if cur > req.version => PutManifestReply { stored: false, current: cur },
                        Some(cur) if cur == req.version && req.locations <= stored_locations => {
                            PutManifestReply { stored: true, current: cur }
                        }
                        _ => {
                            t.insert(req.key.as_slice(), req.value.as_slice()).map_err(store_err)?;
                            index.insert(req.index_key.as_slice(), req.index_value.as_slice()).map_err(store_err)?;
                            PutManifestReply { stored: true, current: req.version }
                        }
                    };
                    replies.push(Ok(Applied::Put(reply)));
                }
                Write::Relocate(r) => {
                    let key = table_key(&r.req.bucket, &r.req.key);
                    let stored: Option<Manifest> = match t.get(key.as_slice()).map_err(store_err)? {
                        Some(v) => Some(stored_manifest(v.value())?),
                        None => None,
                    };
                    let Some(mut m) = stored else {
                        replies.push(Ok(Applied::Relocate(RelocateReply {
                            applied: false,
                            version: None,
                            generation: 0,
                        })));
                        continue;
                    };
                    let refuse = |m: &Manifest| {
                        Ok(Applied::Relocate(RelocateReply {
                            applied: false,
                            version: Some(m.version),
                            generation: m.locations,
                        }))
                    };
                    if m.version != r.req.version || r.req.generation.is_some_and(|g| g != m.locations) {
                        replies.push(refuse(&m));
                        continue;
                    }
                    match move_shards(&mut m, &r.req.moves) {
                        Err(e) => {
                            replies.push(Err(e));
                            continue;
                        }
                        Ok(None) => {
                            replies.push(refuse(&m));
                            continue;
                        }
                        Ok(Some(false)) => {
                            // Every move was already made: nothing to write.
                            replies.push(Ok(Applied::Relocate(RelocateReply {
                                applied: true,
                                version: Some(m.version),
                                generation: m.locations,
                            })));
                            continue;
                        }
                        Ok(Some(true)) => {}
                    }
                    m.locations += 1;
                    let (value, index_value) = encode_record(&m)?;
                    t.insert(key.as_slice(), value.as_slice()).map_err(store_err)?;
                    let ik = index_key(&m.bucket, &m.key);
                    index.insert(ik.as_slice(), index_value.as_slice()).map_err(store_err)?;
                    replies.push(Ok(Applied::Relocate(RelocateReply {
                        applied: true,
                        version: Some(m.version),
                        generation: m.locations,
                    })));
                }
            }
        }
    }
    w.commit().map_err(store_err)?;
    Ok(replies)
}

/// Points shard `index` of object id `object_id` at `node`, for each move.
/// A PG page's cursor, decoded, and its limit, clamped to `1..=MAX_LIST`.
fn page(after: Option<String>, limit: u32) -> Result<(Option<Vec<u8>>, usize), NodeError> {
    let after = match after {
        Some(c) => Some(hex::decode(&c).map_err(|_| NodeError::BadRequest("bad cursor".into()))?),
        None => None,
    };
    Ok((after, limit.clamp(1, MAX_LIST) as usize))
}

/// Returns whether anything changed, or `None` (and changes nothing) when a
/// move's `from` no longer names where the shard is.
fn move_shards(m: &mut Manifest, moves: &[ShardMove]) -> Result<Option<bool>, NodeError> {
    for mv in moves {
        let Some(from) = mv.from else { continue };
        let at = m
            .body
            .sharded_sets()
            .into_iter()
            .find(|s| s.object_id == mv.object_id)
            .and_then(|s| s.shards.iter().find(|l| l.index == mv.index))
            .map(|l| l.node);
        if at.is_some_and(|n| n != from && n != mv.node) {
            return Ok(None);
        }
    }
    let mut changed = false;
    for mv in moves {
        let set = m
            .body
            .sharded_sets_mut()
            .into_iter()
            .find(|s| s.object_id == mv.object_id)
            .ok_or_else(|| NodeError::BadRequest(format!("the version has no object id {}", mv.object_id)))?;
        if u16::from(mv.index) >= u16::from(set.k) + u16::from(set.m) {
            return Err(NodeError::BadRequest(format!("shard index {} is not below k+m", mv.index)));
        }
        match set.shards.iter_mut().find(|l| l.index == mv.index) {
            Some(l) if l.node == mv.node => {}
            Some(l) => {
                l.node = mv.node;
                changed = true;
            }
            None => {
                set.shards.push(ShardLocation { index: mv.index, node: mv.node });
                set.shards.sort_by_key(|l| l.index);
                changed = true;
            }
        }
    }
    Ok(Some(changed))
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
            tags: Default::default(),
            body: Body::Inline { data: vec![1, 2, 3].into() },
            locations: 0,
            version_id: None,
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

    fn sharded(bucket: &str, key: &str, nanos: u64) -> Manifest {
        use sillok_model::manifest::{ShardLocation, Sharded};
        let mut x = m(bucket, key, nanos);
        x.body = Body::Sharded(Sharded {
            object_id: placement::new_object_id(placement::placement_hash(bucket, key)),
            codec: "rs".into(),
            k: 1,
            m: 1,
            block_size: 4,
            epoch: 1,
            shards: vec![ShardLocation { index: 0, node: sillok_placement::NodeId(1) }],
        });
        x
    }

    fn object_id(m: &Manifest) -> String {
        m.body.sharded_sets()[0].object_id.clone()
    }

    #[tokio::test]
    async fn pg_listing_covers_every_key_once_and_pages_resume() {
        use sillok_placement::PgFunction;
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        for i in 0..300u64 {
            s.put(&m("b", &format!("k{i}"), i + 1)).await.unwrap();
        }
        for function in [PgFunction::TopBits, PgFunction::Modulo] {
            let mut seen = Vec::new();
            for pg in 0..8 {
                let sel = PgSelector { pg, pg_count: 8, function };
                let mut after = None;
                let mut pages = Vec::new();
                loop {
                    let page = s.list_pg(sel, after, 7).await.unwrap();
                    for e in &page.entries {
                        assert_eq!(function.pg_of_hash(placement::placement_hash("b", &e.key), 8), pg);
                    }
                    pages.extend(page.entries);
                    match page.next {
                        Some(n) => after = Some(n),
                        None => break,
                    }
                }
                assert_eq!(pages, s.list_pg_all(sel).await.unwrap());
                let (count, _) = s.pg_digest(sel).await.unwrap();
                assert_eq!(count as usize, pages.len());
                seen.extend(pages.into_iter().map(|e| e.key));
            }
            seen.sort();
            let mut want: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
            want.sort();
            assert_eq!(seen, want, "{function:?}: every key in exactly one PG");
        }
        assert!(
            s.list_pg(PgSelector { pg: 0, pg_count: 8, function: PgFunction::TopBits }, Some("zz".into()), 5)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn references_follow_overwrites_deletes_and_parts() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        let v1 = sharded("b", "k", 10);
        s.put(&v1).await.unwrap();
        let part = sharded(placement::PARTS, "b/k/u1/00001", 11);
        s.put(&part).await.unwrap();
        let other = sharded("b", "other", 12);
        let ids = vec![object_id(&v1), object_id(&part), object_id(&other)];
        let referenced = |places: Vec<ShardPlace>| places.into_iter().map(|p| p.object_id).collect::<Vec<_>>();
        let node1 = sillok_placement::NodeId(1);
        assert_eq!(
            s.placements(ids.clone()).await.unwrap(),
            vec![
                ShardPlace { object_id: ids[0].clone(), index: 0, node: node1 },
                ShardPlace { object_id: ids[1].clone(), index: 0, node: node1 }
            ]
        );
        // The digest changes with a version.
        let sel = PgSelector::of_hash(placement::placement_hash("b", "k"));
        let d1 = s.pg_digest(sel).await.unwrap();
        let v2 = sharded("b", "k", 20);
        s.put(&v2).await.unwrap();
        assert_ne!(s.pg_digest(sel).await.unwrap(), d1);
        assert_eq!(referenced(s.placements(ids.clone()).await.unwrap()), vec![object_id(&part)]);
        let mut t = Manifest::tombstone("b", "k");
        t.version = Version { nanos: 30, tiebreak: 0 };
        s.put(&t).await.unwrap();
        s.put(&Manifest {
            version: Version { nanos: 31, tiebreak: 0 },
            ..Manifest::tombstone(placement::PARTS, "b/k/u1/00001")
        })
        .await
        .unwrap();
        assert!(s.placements(vec![object_id(&v2), object_id(&part)]).await.unwrap().is_empty());
        // Ids without a hash cannot be looked up.
        let legacy = "0123456789abcdef8123456789abcdef".to_string();
        assert!(matches!(s.placements(vec![legacy]).await, Err(NodeError::BadRequest(_))));
        // Purge: only the stored tombstone version, and it leaves both tables.
        assert!(!s.purge_tombstone("b", "k", Version { nanos: 29, tiebreak: 0 }).await.unwrap());
        assert!(s.purge_tombstone("b", "k", t.version).await.unwrap());
        assert!(s.get("b", "k").await.unwrap().is_none());
        assert!(s.list_pg_all(sel).await.unwrap().iter().all(|e| e.key != "k"));
        s.put(&v1).await.unwrap();
        assert!(!s.purge_tombstone("b", "k", v1.version).await.unwrap(), "a live version is never purged");
    }

    #[tokio::test]
    async fn a_store_written_before_the_index_gets_it_built_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        let v = sharded("b", "k", 10);
        s.put(&v).await.unwrap();
        s.put(&m("b", "inline", 11)).await.unwrap();
        s.close().await;
        // Make it look like a database from before `by_hash`.
        {
            let db = Database::create(dir.path().join("meta.redb")).unwrap();
            let w = db.begin_write().unwrap();
            w.delete_table(BY_HASH).unwrap();
            w.delete_table(FORMAT).unwrap();
            w.commit().unwrap();
        }
        let s = MetaStore::open(dir.path()).unwrap();
        assert_eq!(s.placements(vec![object_id(&v)]).await.unwrap().len(), 1);
        let sel = PgSelector::of_hash(placement::placement_hash("b", "inline"));
        assert!(s.list_pg_all(sel).await.unwrap().iter().any(|e| e.key == "inline"));
    }

    /// Also the redb format upgrade: stores of that age are v2 files.
    #[tokio::test]
    async fn a_store_of_json_values_is_rewritten_binary_at_open_and_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        s.close().await;
        // As redb 2.6 made files by default (format v2), with the store's tables.
        let path = dir.path().join("meta.redb");
        std::fs::remove_file(&path).unwrap();
        let db = redb::Builder::new().create_with_file_format_v3(false).create(&path).unwrap();
        let w = db.begin_write().unwrap();
        w.open_table(MANIFESTS).unwrap();
        w.open_table(BY_HASH).unwrap();
        w.open_table(FORMAT).unwrap();
        w.commit().unwrap();
        drop(db);
        // Values as the format-1 store wrote them (more than one migration batch).
        let written: Vec<Manifest> =
            (0..MIGRATE_BATCH as u64 + 10)
                .map(|i| {
                    if i % 2 == 0 {
                        m("b", &format!("k{i:05}"), i + 1)
                    } else {
                        sharded("b", &format!("k{i:05}"), i + 1)
                    }
                })
                .collect();
        {
            let db = Database::create(dir.path().join("meta.redb")).unwrap();
            let w = db.begin_write().unwrap();
            {
                let mut t = w.open_table(MANIFESTS).unwrap();
                for m in &written {
                    let json = serde_json::to_vec(m).unwrap();
                    let mut v = vec![VALUE_FORMAT_JSON];
                    v.extend_from_slice(&m.version.nanos.to_be_bytes());
                    v.extend_from_slice(&m.version.tiebreak.to_be_bytes());
                    v.push(u8::from(m.is_deleted()));
                    v.extend_from_slice(&m.size.to_le_bytes());
                    v.extend_from_slice(&m.last_modified_ms.to_le_bytes());
                    v.extend_from_slice(&(m.etag.len() as u16).to_le_bytes());
                    v.extend_from_slice(m.etag.as_bytes());
                    v.extend_from_slice(&json);
                    t.insert(table_key(&m.bucket, &m.key).as_slice(), v.as_slice()).unwrap();
                }
            }
            w.delete_table(FORMAT).unwrap();
            w.commit().unwrap();
        }
        let s = MetaStore::open(dir.path()).unwrap();
        for m in written.iter().step_by(97) {
            assert_eq!(s.get(&m.bucket, &m.key).await.unwrap().as_ref(), Some(m));
            assert_eq!(s.summary(&m.bucket, &m.key).await.unwrap(), Some(ManifestSummary::of(m)));
        }
        s.close().await;
        let db = Database::create(dir.path().join("meta.redb")).unwrap();
        let r = db.begin_read().unwrap();
        let t = r.open_table(MANIFESTS).unwrap();
        let formats: Vec<u8> = t.iter().unwrap().map(|e| e.unwrap().1.value()[0]).collect();
        assert_eq!(formats.len(), written.len());
        assert!(formats.iter().all(|f| *f == VALUE_FORMAT), "a value was left in JSON");
        assert_eq!(r.open_table(FORMAT).unwrap().get("values").unwrap().unwrap().value(), VALUES_MIGRATED);
        drop((t, r));
        let mut db = db;
        assert!(!db.upgrade().unwrap(), "MetaStore::open left the file in redb's v2 format");
    }

    #[tokio::test]
    async fn candidates_keep_their_first_time_and_can_be_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        let got = s.note_candidates(vec!["a".into(), "b".into()], vec![], 100).await.unwrap();
        assert_eq!(got, vec![("a".to_string(), 100), ("b".to_string(), 100)]);
        let got = s.note_candidates(vec!["a".into()], vec!["b".into()], 200).await.unwrap();
        assert_eq!(got, vec![("a".to_string(), 100)]);
        s.close().await;
        let s = MetaStore::open(dir.path()).unwrap();
        let got = s.note_candidates(vec!["a".into(), "b".into()], vec![], 300).await.unwrap();
        assert_eq!(got, vec![("a".to_string(), 100), ("b".to_string(), 300)], "kept across a restart");
    }

    #[tokio::test]
    async fn relocation_is_a_compare_and_swap_that_never_undoes_an_overwrite_or_a_delete() {
        use crate::api::{Relocate, ShardMove};
        use sillok_placement::NodeId;
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        let v1 = sharded("b", "k", 10);
        s.put(&v1).await.unwrap();
        let oid = object_id(&v1);
        let mv = |generation, node| Relocate {
            bucket: "b".into(),
            key: "k".into(),
            version: v1.version,
            generation: Some(generation),
            moves: vec![ShardMove { object_id: oid.clone(), index: 1, node: NodeId(node), from: None }],
        };
        let r = s.relocate(mv(0, 5)).await.unwrap();
        assert!(r.applied && r.generation == 1);
        let got = s.get("b", "k").await.unwrap().unwrap();
        assert_eq!(got.locations, 1);
        assert_eq!(got.body.sharded_sets()[0].shards.iter().find(|l| l.index == 1).unwrap().node, NodeId(5));
        // A second repair that read generation 0 loses.
        assert!(!s.relocate(mv(0, 6)).await.unwrap().applied);
        // A copy of the version at an older generation does not undo the move;
        // a higher one (from anti-entropy) replaces it.
        assert!(s.put(&v1).await.unwrap().stored);
        assert_eq!(s.get("b", "k").await.unwrap().unwrap().locations, 1);
        let mut later = got.clone();
        later.locations = 3;
        s.put(&later).await.unwrap();
        assert_eq!(s.get("b", "k").await.unwrap().unwrap().locations, 3);
        // An overwrite, then a relocation planned on the old version: no-op.
        let v2 = sharded("b", "k", 20);
        s.put(&v2).await.unwrap();
        let r = s.relocate(mv(3, 7)).await.unwrap();
        assert!(!r.applied);
        assert_eq!(r.version, Some(v2.version));
        assert_eq!(s.get("b", "k").await.unwrap().unwrap(), v2);
        // A delete likewise; and a move naming a shard the version lacks is refused.
        let mut t = Manifest::tombstone("b", "k");
        t.version = Version { nanos: 30, tiebreak: 0 };
        s.put(&t).await.unwrap();
        assert!(!s.relocate(Relocate { version: v2.version, ..mv(0, 7) }).await.unwrap().applied);
        assert!(s.get("b", "k").await.unwrap().unwrap().is_deleted());
        let v3 = sharded("b", "k", 40);
        s.put(&v3).await.unwrap();
        let bad = Relocate { version: v3.version, ..mv(0, 7) };
        assert!(matches!(s.relocate(bad).await, Err(NodeError::BadRequest(_))));
        // The index follows the generation (anti-entropy compares it).
        let sel = PgSelector::of_hash(placement::placement_hash("b", "k"));
        let good = Relocate {
            version: v3.version,
            moves: vec![ShardMove { object_id: object_id(&v3), index: 0, node: NodeId(9), from: None }],
            ..mv(0, 7)
        };
        let before = s.pg_digest(sel).await.unwrap();
        assert!(s.relocate(good).await.unwrap().applied);
        assert_ne!(s.pg_digest(sel).await.unwrap(), before);
        assert_eq!(s.list_pg_all(sel).await.unwrap().iter().find(|e| e.key == "k").unwrap().locations, 1);
    }

    #[tokio::test]
    async fn movers_of_different_shards_never_undo_each_other_and_pg_objects_shows_the_places() {
        use crate::api::{Relocate, ShardMove};
        use sillok_placement::NodeId;
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        let v = sharded("b", "k", 10);
        s.put(&v).await.unwrap();
        s.put(&Manifest::tombstone("b", "gone")).await.unwrap();
        s.put(&m("b", "small", 11)).await.unwrap();
        let oid = object_id(&v);
        let mv = |index, from: Option<u32>, node| Relocate {
            bucket: "b".into(),
            key: "k".into(),
            version: v.version,
            generation: None,
            moves: vec![ShardMove { object_id: oid.clone(), index, node: NodeId(node), from: from.map(NodeId) }],
        };
        // Two movers that both read generation 0, for shards 0 and 1: both apply.
        let a = s.relocate(mv(0, Some(1), 20)).await.unwrap();
        assert!(a.applied && a.generation == 1);
        let b = s.relocate(mv(1, None, 21)).await.unwrap();
        assert!(b.applied && b.generation == 2);
        // A stale mover of shard 0 (it still thinks the shard is on node 1) loses.
        let stale = s.relocate(mv(0, Some(1), 22)).await.unwrap();
        assert!(!stale.applied && stale.generation == 2);
        // Repeating a move that is made changes nothing, not even the generation.
        let again = s.relocate(mv(0, Some(1), 20)).await.unwrap();
        assert!(again.applied && again.generation == 2);
        // The PG's objects: only the live sharded one, with its places.
        let sel = PgSelector::of_hash(placement::placement_hash("b", "k"));
        let list = s.pg_objects(sel, None, 1000).await.unwrap();
        let got: Vec<_> = list.objects.iter().filter(|o| o.key == "k").collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].locations, 2);
        let places: Vec<(u8, u32)> = got[0].sets[0].sharded.shards.iter().map(|l| (l.index, l.node.0)).collect();
        assert_eq!(places, [(0, 20), (1, 21)]);
        assert!(list.objects.iter().all(|o| o.key != "gone" && o.key != "small"));
    }

    #[tokio::test]
    async fn bad_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        assert!(matches!(s.put(&m("", "k", 1)).await, Err(NodeError::BadRequest(_))));
        assert!(matches!(s.put(&m("b", &"x".repeat(MAX_KEY_LEN + 1), 1)).await, Err(NodeError::BadRequest(_))));
    }
}
