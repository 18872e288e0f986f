//! The gateway's copy of the catalog: the [`Index`] (buckets and keys by
//! name, the map) and its file, `catalog.redb` in the state directory.
//!
//! Owns: how a batch of catalog changes ([`ViewChange`]) or a whole view
//! becomes one [`Batch`] of rows, written to the file in one redb write
//! transaction (immediate durability) and then applied to the index in place.
//!
//! File tables (values JSON): `meta` (`applied`, `region`), `buckets`
//! (name → bucket), `keys` (key id → key record, secret included), and the
//! map by rows (`sillok_catalog::map_rows`: a map change writes the rows its
//! delta names). The file is created 0600 (it holds secrets) and kept 0600.
//! Files written before the map was kept by rows hold it whole in `meta`
//! (`map`); it is read from there until the next map change moves it.
//!
//! Invariants:
//! - A batch is on disk before the index changes, and the file always holds
//!   the index as of one `applied` (one transaction per batch), so a restart
//!   starts from the newest index the gateway ever used.
//! - A batch of changes costs work and bytes written proportional to the
//!   changes (rows touched, and for a map change the slot rows its delta
//!   names), never to the catalog; a whole view (a snapshot) is compared with
//!   the index in memory and only the rows that differ are written. (The map
//!   in memory is copied whole once per batch that changes it.)
//! - A batch never moves the index back: its `applied` is above the index's,
//!   its map (if any) validates (a whole map is checked whole, a delta's
//!   result as `MapDelta::apply` checks it) and its epoch is not below the
//!   index's (the caller, `catalog`, checks this under its publishing lock).
//! - A state directory holding only `catalog.json` (written by gateways
//!   before this file existed) starts from it; the JSON file is removed once
//!   its contents are in the redb file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};
use sillok_catalog::api::CatalogView;
use sillok_catalog::changes::{IndexedChange, ViewChange};
use sillok_catalog::map_rows::{self, MapRowsError};
use sillok_catalog::state::{Bucket, KeyRecord};
use sillok_placement::{MapDelta, PlacementMap};

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
    #[error("the gateway's catalog file {path}: {source}")]
    Map { path: PathBuf, source: MapRowsError },
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
            b.map_deltas = MapDelta::between(&self.map, &to.map).map(|d| vec![d]);
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
    /// The new map, if it changed.
    pub map: Option<Arc<PlacementMap>>,
    /// How the map changed from the index's, when only some rows did
    /// (`None` with a new map: every row is written).
    pub map_deltas: Option<Vec<MapDelta>>,
    pub buckets: Vec<(String, Option<Bucket>)>,
    pub keys: Vec<(String, Option<KeyRecord>)>,
}

impl Batch {
    /// Every row of `index`, the map whole: what a new file is given.
    pub fn whole(index: &Index) -> Batch {
        Batch {
            applied: index.applied,
            region: Some(index.region.clone()),
            map: Some(index.map.clone()),
            map_deltas: None,
            buckets: index.buckets.iter().map(|(n, b)| (n.clone(), Some(b.clone()))).collect(),
            keys: index.keys.iter().map(|(i, k)| (i.clone(), Some(k.clone()))).collect(),
        }
    }

    /// The rows of a run of changes (those at or below `after` are left out:
    /// the index already holds them), ending at `to`, on an index whose map
    /// is `map`. `None`: a map change in the run cannot be taken (a whole map
    /// that does not validate, or a delta that does not start from the map
    /// before it), and the caller takes the whole view instead.
    pub fn of_changes(after: u64, to: u64, changes: Vec<IndexedChange>, map: &Arc<PlacementMap>) -> Option<Batch> {
        let mut b = Batch { applied: to, ..Default::default() };
        // Whether a whole map came (then every row is written), else the
        // deltas taken, in order.
        let mut whole = false;
        let mut deltas = Vec::new();
        for c in changes.into_iter().filter(|c| c.index > after) {
            match c.change {
                ViewChange::BucketPut { bucket } => b.buckets.push((bucket.name.clone(), Some(bucket))),
                ViewChange::BucketRemoved { name } => b.buckets.push((name, None)),
                ViewChange::KeyPut { key } => b.keys.push((key.id.clone(), Some(key))),
                ViewChange::KeyRemoved { id } => b.keys.push((id, None)),
                ViewChange::Map { map } => {
                    if let Err(e) = map.validate() {
                        tracing::warn!(epoch = map.epoch, error = %e, "a replica sent a map that is not valid");
                        return None;
                    }
                    b.map = Some(Arc::new(map));
                    whole = true;
                }
                ViewChange::MapDelta { delta } => {
                    let base = b.map.as_ref().unwrap_or(map);
                    if delta.epoch <= base.epoch {
                        continue;
                    }
                    match delta.apply(base) {
                        Ok(next) => b.map = Some(Arc::new(next)),
                        Err(e) => {
                            tracing::info!(epoch = delta.epoch, error = %e, "a map change cannot be applied here");
                            return None;
                        }
                    }
                    deltas.push(delta);
                }
            }
        }
        if b.map.is_some() && !whole {
            b.map_deltas = Some(deltas);
        }
        Some(b)
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

    fn map_err(&self, source: MapRowsError) -> CopyError {
        CopyError::Map { path: self.path.clone(), source }
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
        map_rows::create_tables(&w).map_err(|e| file.map_err(e))?;
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
        file.write(&Batch::whole(&index))?;
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
        let (Some(applied), Some(region)) = (get("applied")?, get("region")?) else {
            return Ok(None);
        };
        let map = match map_rows::read(&r) {
            Ok(Some(map)) => map,
            Ok(None) => match get("map")? {
                // A file from before the map was kept by rows.
                Some(old) => serde_json::from_slice(&old).map_err(json)?,
                None => return Ok(None),
            },
            Err(MapRowsError::Invalid(_)) => return Ok(None),
            Err(e) => return Err(self.map_err(e)),
        };
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
                // A file from before the map was kept by rows has no rows to
                // change: it is given them all, and its whole map goes.
                let old_layout = meta.remove("map").map_err(|e| self.db_err(e))?.is_some();
                match &b.map_deltas {
                    Some(deltas) if !old_layout => deltas.iter().try_for_each(|d| map_rows::write_delta(&w, m, d)),
                    _ => map_rows::write_whole(&w, m),
                }
                .map_err(|e| self.map_err(e))?;
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
            Touch::Map => (map_before != c.map).then(|| {
                let after = c.map.clone().unwrap();
                match map_before.and_then(|b| MapDelta::between(&b, &after)) {
                    Some(delta) => ViewChange::MapDelta { delta },
                    None => ViewChange::Map { map: after },
                }
            }),
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
                // Down keeps a node's slots; Out moves them (rows change).
                _ => Command::node_state(
                    NodeId(next(6) as u32 + 1),
                    [NodeState::Down, NodeState::Up, NodeState::Out][next(3) as usize],
                ),
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
        let deltas = log.since(1, 1000).map_or(0, |c| match c {
            sillok_catalog::changes::Changes::Changes { changes, .. } => changes
                .iter()
                .filter(|c| matches!(&c.change, ViewChange::MapDelta { delta } if !delta.rows.is_empty()))
                .count(),
            _ => 0,
        });
        assert!(deltas > 5, "the sequence moves rows {deltas} times");
        for start in [0usize, 1, 50, 150, 297] {
            let mut index = views[start].clone();
            // Written to a file as a gateway does, batch by batch.
            let dir = tempfile::tempdir().unwrap();
            let (file, _) = CopyFile::open(dir.path()).unwrap();
            file.write(&Batch::whole(&index)).unwrap();
            while let Some(sillok_catalog::changes::Changes::Changes { to, changes, .. }) = log.since(index.applied, 7)
            {
                let b = Batch::of_changes(index.applied, to, changes, &index.map).expect("the changes follow");
                file.write(&b).unwrap();
                index.apply(&b);
            }
            assert_eq!(index, last, "following from {start}");
            drop(file);
            assert_eq!(
                CopyFile::open(dir.path()).unwrap().1,
                Some(last.clone()),
                "the file after following from {start}"
            );
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
        file.write(&Batch::whole(&index)).unwrap();
        for (i, n) in ["x", "y", "z"].into_iter().enumerate() {
            let b = Batch::of_changes(
                index.applied,
                6 + i as u64,
                vec![IndexedChange { index: 6 + i as u64, change: ViewChange::BucketPut { bucket: bucket(n) } }],
                &index.map,
            )
            .unwrap();
            file.write(&b).unwrap();
            index.apply(&b);
        }
        let b = Batch::of_changes(
            9,
            10,
            vec![IndexedChange { index: 10, change: ViewChange::BucketRemoved { name: "y".into() } }],
            &index.map,
        )
        .unwrap();
        file.write(&b).unwrap();
        index.apply(&b);
        drop(file);
        let mode = std::fs::metadata(dir.path().join(FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (_, again) = CopyFile::open(dir.path()).unwrap();
        assert_eq!(again.unwrap(), index);
    }

    #[test]
    fn a_file_with_the_map_whole_in_meta_is_read_and_moves_to_rows_at_the_next_map_change() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = seeded();
        let index = view_of(&c, 5);
        {
            // As gateways wrote the file before the map was kept by rows.
            let (file, _) = CopyFile::open(dir.path()).unwrap();
            let w = file.db.begin_write().unwrap();
            {
                let mut meta = w.open_table(META).unwrap();
                meta.insert("applied", to_json(&5u64).as_slice()).unwrap();
                meta.insert("region", to_json(&index.region).as_slice()).unwrap();
                meta.insert("map", to_json(&*index.map).as_slice()).unwrap();
                let mut keys = w.open_table(KEYS).unwrap();
                for (id, k) in &index.keys {
                    keys.insert(id.as_str(), to_json(k).as_slice()).unwrap();
                }
            }
            w.commit().unwrap();
        }
        let (file, read) = CopyFile::open(dir.path()).unwrap();
        let mut read = read.expect("the old layout is read");
        assert_eq!(read, index);
        let before = c.map.clone().unwrap();
        c.apply(&Command::node_state(NodeId(2), NodeState::Out)).unwrap();
        let delta = MapDelta::between(&before, c.map.as_ref().unwrap()).unwrap();
        assert!(!delta.rows.is_empty());
        let b = Batch::of_changes(
            5,
            6,
            vec![IndexedChange { index: 6, change: ViewChange::MapDelta { delta } }],
            &read.map,
        )
        .unwrap();
        assert!(b.map_deltas.is_some(), "a delta is written as rows");
        file.write(&b).unwrap();
        read.apply(&b);
        drop(file);
        let (file, again) = CopyFile::open(dir.path()).unwrap();
        assert_eq!(again.unwrap(), read);
        let r = file.db.begin_read().unwrap();
        assert!(r.open_table(META).unwrap().get("map").unwrap().is_none(), "the whole map left meta");
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
