//! The gateway's copy of the catalog: the [`Index`] (buckets and keys by
//! name, the map) and its file, `catalog.redb` in the state directory.
//!
//! Owns: how a batch of catalog changes ([`ViewChange`]) or a whole view
//! becomes one [`Batch`] of rows, written to the file in one redb write
//! transaction (immediate durability) and then applied to the index in place.
//!
//! File tables (values JSON): `meta` (`applied`, `region`, `map`), `buckets`
//! (name → bucket), `keys` (key id → key record, secret included). The file
//! is created 0600 (it holds secrets) and kept 0600.
//!
//! Invariants:
//! - A batch is on disk before the index changes, and the file always holds
//!   the index as of one `applied` (one transaction per batch), so a restart
//!   starts from the newest index the gateway ever used.
//! - A batch of changes costs work and bytes written proportional to the
//!   changes (rows touched), never to the catalog; a whole view (a snapshot)
//!   is compared with the index in memory and only the rows that differ are
//!   written.
//! - A batch never moves the index back: its `applied` is above the index's,
//!   its map (if any) validates and its epoch is not below the index's (the
//!   caller, `catalog`, checks this under its publishing lock).
//! - A state directory holding only `catalog.json` (written by gateways
//!   before this file existed) starts from it; the JSON file is removed once
//!   its contents are in the redb file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};
use sillok_catalog::api::CatalogView;
use sillok_catalog::changes::{IndexedChange, ViewChange};
use sillok_catalog::state::{Bucket, KeyRecord};
use sillok_placement::PlacementMap;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const BUCKETS: TableDefinition<&str, &[u8]> = TableDefinition::new("buckets");
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");

/// The file's name in the gateway's state directory.
pub const FILE: &str = "catalog.redb";
/// What gateways before it kept (a whole view as JSON).
pub const OLD_FILE: &str = "catalog.json";

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("the gateway's catalog file {path}: {source}")]
    Db { path: PathBuf, source: Box<redb::Error> },
    #[error("the gateway's catalog file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the gateway's catalog file {path} holds an unreadable row: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
}

/// One catalog view, indexed for lookups, as of index `applied`.
#[derive(Clone)]
pub struct Index {
    pub applied: u64,
    pub region: String,
    pub(crate) map: Arc<PlacementMap>,
    pub(crate) buckets: HashMap<String, Bucket>,
    pub(crate) keys: HashMap<String, KeyRecord>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("applied", &self.applied)
            .field("epoch", &self.map.epoch)
            .field("buckets", &self.buckets.len())
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl PartialEq for Index {
    fn eq(&self, o: &Self) -> bool {
        self.applied == o.applied
            && self.region == o.region
            && self.map == o.map
            && self.buckets == o.buckets
            && self.keys == o.keys
    }
}

impl Index {
    /// The index of a whole view (`None`: it has no usable map).
    pub fn of_view(view: CatalogView) -> Option<Index> {
        let map = view.map.filter(|m| m.validate().is_ok())?;
        Some(Index {
            applied: view.applied_index,
            region: view.region,
            map: Arc::new(map),
            buckets: view.buckets.into_iter().map(|b| (b.name.clone(), b)).collect(),
            keys: view.key_secrets.into_iter().map(|k| (k.id.clone(), k)).collect(),
        })
    }

    /// The placement map.
    pub fn map(&self) -> &Arc<PlacementMap> {
        &self.map
    }

    /// Buckets in name order.
    pub fn bucket_names(&self) -> Vec<&Bucket> {
        let mut v: Vec<&Bucket> = self.buckets.values().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The rows that turn this index into the view `to` (compared in
    /// memory; only what differs is in the batch).
    pub fn diff(&self, to: &Index) -> Batch {
        let mut b = Batch { applied: to.applied, ..Default::default() };
        if self.region != to.region {
            b.region = Some(to.region.clone());
        }
        if self.map != to.map {
            b.map = Some(to.map.clone());
        }
        for (name, bucket) in &to.buckets {
            if self.buckets.get(name) != Some(bucket) {
                b.buckets.push((name.clone(), Some(bucket.clone())));
            }
        }
        b.buckets.extend(self.buckets.keys().filter(|n| !to.buckets.contains_key(*n)).map(|n| (n.clone(), None)));
        for (id, key) in &to.keys {
            if self.keys.get(id) != Some(key) {
                b.keys.push((id.clone(), Some(key.clone())));
            }
        }
        b.keys.extend(self.keys.keys().filter(|i| !to.keys.contains_key(*i)).map(|i| (i.clone(), None)));
        b
    }

    /// Applies a batch in place (the caller checked it moves forward).
    pub fn apply(&mut self, b: &Batch) {
        self.applied = b.applied;
        if let Some(r) = &b.region {
            self.region = r.clone();
        }
        if let Some(m) = &b.map {
            self.map = m.clone();
        }
        for (name, bucket) in &b.buckets {
            match bucket {
                Some(bucket) => self.buckets.insert(name.clone(), bucket.clone()),
                None => self.buckets.remove(name),
            };
        }
        for (id, key) in &b.keys {
            match key {
                Some(key) => self.keys.insert(id.clone(), key.clone()),
                None => self.keys.remove(id),
            };
        }
    }
}

/// Rows to write and apply: the index moves to `applied`; `None` removes.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub applied: u64,
    pub region: Option<String>,
    pub map: Option<Arc<PlacementMap>>,
    pub buckets: Vec<(String, Option<Bucket>)>,
    pub keys: Vec<(String, Option<KeyRecord>)>,
}

impl Batch {
    /// The rows of a run of changes (those at or below `after` are left out:
    /// the index already holds them), ending at `to`.
    pub fn of_changes(after: u64, to: u64, changes: Vec<IndexedChange>) -> Batch {
        let mut b = Batch { applied: to, ..Default::default() };
        for c in changes.into_iter().filter(|c| c.index > after) {
            match c.change {
                ViewChange::BucketPut { bucket } => b.buckets.push((bucket.name.clone(), Some(bucket))),
                ViewChange::BucketRemoved { name } => b.buckets.push((name, None)),
                ViewChange::KeyPut { key } => b.keys.push((key.id.clone(), Some(key))),
                ViewChange::KeyRemoved { id } => b.keys.push((id, None)),
                ViewChange::Map { map } => b.map = Some(Arc::new(map)),
            }
        }
        b
    }

    /// Rows changed, for metrics.
    pub fn rows(&self) -> usize {
        self.buckets.len() + self.keys.len() + usize::from(self.map.is_some()) + usize::from(self.region.is_some())
    }
}

/// The open file.
pub struct CopyFile {
    db: Database,
    path: PathBuf,
}

impl CopyFile {
    fn db_err(&self, e: impl Into<redb::Error>) -> CopyError {
        CopyError::Db { path: self.path.clone(), source: Box::new(e.into()) }
    }

    /// Opens (or creates, 0600) the file in `dir`, and returns the index it
    /// holds, or the one in an old `catalog.json` (moved into the file).
    pub fn open(dir: &Path) -> Result<(CopyFile, Option<Index>), CopyError> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let path = dir.join(FILE);
        let io = |source| CopyError::Io { path: path.clone(), source };
        // Created 0600 before redb opens it (an empty file is a new database).
        std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(&path).map_err(io)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        let db = sillok_redb_file::open_or_create(&path)
            .map_err(|e| CopyError::Db { path: path.clone(), source: Box::new(e) })?;
        let file = CopyFile { db, path };
        let w = file.db.begin_write().map_err(|e| file.db_err(e))?;
        for t in [META, BUCKETS, KEYS] {
            w.open_table(t).map_err(|e| file.db_err(e))?;
        }
        w.commit().map_err(|e| file.db_err(e))?;
        if let Some(index) = file.load()? {
            return Ok((file, Some(index)));
        }
        let old = dir.join(OLD_FILE);
        let Some(index) = std::fs::read(&old)
            .ok()
            .and_then(|t| serde_json::from_slice::<CatalogView>(&t).ok())
            .and_then(Index::of_view)
        else {
            return Ok((file, None));
        };
        let empty = Index {
            applied: 0,
            region: String::new(),
            map: index.map.clone(),
            buckets: HashMap::new(),
            keys: HashMap::new(),
        };
        let mut batch = empty.diff(&index);
        batch.map = Some(index.map.clone());
        batch.region = Some(index.region.clone());
        file.write(&batch)?;
        tracing::info!(from = %old.display(), to = %file.path.display(), applied = index.applied, "the gateway's saved catalog moved to its redb file");
        if let Err(e) = std::fs::remove_file(&old) {
            tracing::warn!(path = %old.display(), error = %e, "cannot remove the old catalog file");
        }
        Ok((file, Some(index)))
    }

    /// The index the file holds (`None`: none yet).
    fn load(&self) -> Result<Option<Index>, CopyError> {
        let json = |source| CopyError::Json { path: self.path.clone(), source };
        let r = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let meta = r.open_table(META).map_err(|e| self.db_err(e))?;
        let get = |k: &str| -> Result<Option<Vec<u8>>, CopyError> {
            Ok(meta.get(k).map_err(|e| self.db_err(e))?.map(|v| v.value().to_vec()))
        };
        let (Some(applied), Some(region), Some(map)) = (get("applied")?, get("region")?, get("map")?) else {
            return Ok(None);
        };
        let map: PlacementMap = serde_json::from_slice(&map).map_err(json)?;
        if map.validate().is_err() {
            return Ok(None);
        }
        let mut index = Index {
            applied: serde_json::from_slice(&applied).map_err(json)?,
            region: serde_json::from_slice(&region).map_err(json)?,
            map: Arc::new(map),
            buckets: HashMap::new(),
            keys: HashMap::new(),
        };
        for row in r.open_table(BUCKETS).map_err(|e| self.db_err(e))?.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            index.buckets.insert(k.value().to_string(), serde_json::from_slice(v.value()).map_err(json)?);
        }
        for row in r.open_table(KEYS).map_err(|e| self.db_err(e))?.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            index.keys.insert(k.value().to_string(), serde_json::from_slice(v.value()).map_err(json)?);
        }
        Ok(Some(index))
    }

    /// Writes a batch in one durable transaction.
    pub fn write(&self, b: &Batch) -> Result<(), CopyError> {
        let w = self.db.begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut meta = w.open_table(META).map_err(|e| self.db_err(e))?;
            meta.insert("applied", to_json(&b.applied).as_slice()).map_err(|e| self.db_err(e))?;
            if let Some(r) = &b.region {
                meta.insert("region", to_json(r).as_slice()).map_err(|e| self.db_err(e))?;
            }
            if let Some(m) = &b.map {
                meta.insert("map", to_json(&**m).as_slice()).map_err(|e| self.db_err(e))?;
            }
            let mut t = w.open_table(BUCKETS).map_err(|e| self.db_err(e))?;
            for (name, bucket) in &b.buckets {
                match bucket {
                    Some(bucket) => t.insert(name.as_str(), to_json(bucket).as_slice()).map(drop),
                    None => t.remove(name.as_str()).map(drop),
                }
                .map_err(|e| self.db_err(e))?;
            }
            let mut t = w.open_table(KEYS).map_err(|e| self.db_err(e))?;
            for (id, key) in &b.keys {
                match key {
                    Some(key) => t.insert(id.as_str(), to_json(key).as_slice()).map(drop),
                    None => t.remove(id.as_str()).map(drop),
                }
                .map_err(|e| self.db_err(e))?;
            }
        }
        w.commit().map_err(|e| self.db_err(e))
    }
}

fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("catalog rows serialise")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sillok_catalog::changes::ChangeLog;
    use sillok_catalog::state::{Catalog, Command, Permission, STANDARD, Versioning};
    use sillok_placement::topology::{Node, NodeId, NodeState, Site, Topology};

    fn bucket(name: &str) -> Bucket {
        Bucket {
            name: name.into(),
            owner: "K0".into(),
            created_at: 1,
            storage_class: STANDARD.into(),
            cors: None,
            lifecycle: None,
            versioning: Versioning::Unversioned,
        }
    }

    fn key(id: &str) -> KeyRecord {
        KeyRecord {
            id: id.into(),
            secret: format!("secret-of-{id}-long-enough-0123456789"),
            permissions: [Permission::Read, Permission::Write, Permission::Admin].into_iter().collect(),
            enabled: true,
            created_at: 1,
        }
    }

    fn seeded() -> Catalog {
        let mut topology = Topology::default();
        for s in 0..3u32 {
            topology.sites.push(Site { id: format!("s{s}") });
            for n in 0..2u32 {
                let id = s * 2 + n + 1;
                topology.nodes.push(Node {
                    id: NodeId(id),
                    site: format!("s{s}"),
                    addr: format!("127.0.0.1:{}", 9000 + id),
                    weight: 1.0,
                    state: NodeState::Up,
                });
            }
        }
        let map = PlacementMap::new(topology, sillok_placement::EcProfile { k: 2, m: 1 }, 16).unwrap();
        let mut c = Catalog::default();
        c.apply(&Command::Bootstrap { region: "r1".into(), map, keys: vec![key("KEY0")] }).unwrap();
        c
    }

    /// The view a follower would fetch whole.
    fn view_of(c: &Catalog, applied: u64) -> Index {
        Index {
            applied,
            region: c.region.clone(),
            map: Arc::new(c.map.clone().unwrap()),
            buckets: c.buckets.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            keys: c.keys.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }

    /// A replica's effect of one command, as the store computes it.
    fn effect(c: &Catalog, cmd: &Command, map_before: Option<PlacementMap>) -> Option<ViewChange> {
        use sillok_catalog::state::Touch;
        match cmd.touches() {
            Touch::Bucket(b) => Some(match c.buckets.get(&b) {
                Some(bucket) => ViewChange::BucketPut { bucket: bucket.clone() },
                None => ViewChange::BucketRemoved { name: b },
            }),
            Touch::Key(k) => Some(match c.keys.get(&k) {
                Some(key) => ViewChange::KeyPut { key: key.clone() },
                None => ViewChange::KeyRemoved { id: k },
            }),
            Touch::Map => (map_before != c.map).then(|| ViewChange::Map { map: c.map.clone().unwrap() }),
            Touch::All => None,
        }
    }

    /// A random command sequence applied to a catalog, its changes logged
    /// as a replica logs them, followed from every starting point, gives
    /// the index of a fresh view.
    #[test]
    fn following_changes_gives_the_same_index_as_a_snapshot() {
        let mut rng = 0x9e3779b97f4a7c15u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut c = seeded();
        let mut log = ChangeLog::new(1, 1000);
        let mut views = vec![view_of(&c, 1)];
        for i in 2..300u64 {
            let name = format!("b{}", next(20));
            let cmd = match next(7) {
                0 | 1 => Command::CreateBucket { bucket: bucket(&name) },
                2 => Command::DeleteBucket { name },
                3 => Command::SetBucketVersioning { bucket: name, versioning: Versioning::Enabled },
                4 => Command::CreateKey { key: key(&format!("KEY{}", next(5) + 1)) },
                5 => Command::RevokeKey { id: format!("KEY{}", next(5) + 1) },
                _ => Command::node_state(NodeId(next(6) as u32 + 1), NodeState::Down),
            };
            let before = c.map.clone();
            if c.apply(&cmd).is_ok()
                && let Some(change) = effect(&c, &cmd, before)
            {
                log.push(i, change);
            }
            log.advance(i);
            views.push(view_of(&c, i));
        }
        let last = views.last().unwrap().clone();
        for start in [0usize, 1, 50, 150, 297] {
            let mut index = views[start].clone();
            while let Some(sillok_catalog::changes::Changes::Changes { to, changes, .. }) = log.since(index.applied, 7)
            {
                let b = Batch::of_changes(index.applied, to, changes);
                index.apply(&b);
            }
            assert_eq!(index, last, "following from {start}");
            // A snapshot's rows, applied, also give it.
            let mut from_snapshot = views[start].clone();
            from_snapshot.apply(&views[start].diff(&last));
            assert_eq!(from_snapshot, last);
        }
    }

    #[test]
    fn the_file_reads_back_what_was_written_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let c = seeded();
        let (file, none) = CopyFile::open(dir.path()).unwrap();
        assert!(none.is_none());
        let mut index = view_of(&c, 5);
        let mut first = Index { applied: 0, region: String::new(), map: index.map.clone(), ..index.clone() };
        first.buckets.clear();
        first.keys.clear();
        let mut b = first.diff(&index);
        b.map = Some(index.map.clone());
        file.write(&b).unwrap();
        for (i, n) in ["x", "y", "z"].into_iter().enumerate() {
            let b = Batch::of_changes(
                index.applied,
                6 + i as u64,
                vec![IndexedChange { index: 6 + i as u64, change: ViewChange::BucketPut { bucket: bucket(n) } }],
            );
            file.write(&b).unwrap();
            index.apply(&b);
        }
        let b = Batch::of_changes(
            9,
            10,
            vec![IndexedChange { index: 10, change: ViewChange::BucketRemoved { name: "y".into() } }],
        );
        file.write(&b).unwrap();
        index.apply(&b);
        drop(file);
        let mode = std::fs::metadata(dir.path().join(FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (_, again) = CopyFile::open(dir.path()).unwrap();
        assert_eq!(again.unwrap(), index);
    }

    #[test]
    fn an_old_json_copy_is_moved_into_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let c = seeded();
        let view = CatalogView {
            region: c.region.clone(),
            epoch: c.epoch(),
            applied_index: 42,
            map: c.map.clone(),
            buckets: vec![bucket("old")],
            keys: c.keys.values().map(KeyRecord::info).collect(),
            key_secrets: c.keys.values().cloned().collect(),
            staged: Vec::new(),
            next_node_id: 0,
        };
        std::fs::write(dir.path().join(OLD_FILE), serde_json::to_vec(&view).unwrap()).unwrap();
        let (_, index) = CopyFile::open(dir.path()).unwrap();
        let index = index.unwrap();
        assert_eq!((index.applied, index.bucket_count(), index.key_count()), (42, 1, 1));
        assert!(!dir.path().join(OLD_FILE).exists());
        let (_, again) = CopyFile::open(dir.path()).unwrap();
        assert_eq!(again.unwrap(), index);
    }
}
