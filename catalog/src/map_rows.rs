//! A placement map kept in a redb file by rows, so that a follower of the
//! catalog writes what a map change changed rather than the whole map: the
//! tables live in the gateway's `catalog.redb` and in a storage node's
//! `map.redb` ([`MapFile`]).
//!
//! Owns: three tables and how a map is written to and read from them:
//! - `map_head`: one row, `head`, the map without its rows (epoch, profile,
//!   PG count and function, topology), JSON;
//! - `map_rows`: PG → its slot row, node ids as 4-byte little-endian numbers;
//! - `map_previous`: PG → its earlier rows, JSON (PGs without any have no row);
//!
//! and [`MapFile`], a file holding only them and the follower's index.
//!
//! Invariants:
//! - The tables hold one whole map, as of the last committed transaction:
//!   [`write_whole`] replaces all three; [`write_delta`] writes the head and
//!   the rows and earlier rows the delta names, nothing else.
//! - [`read`] returns a map only if it validates.

use std::path::{Path, PathBuf};

use redb::{Database, ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use sillok_placement::{EcProfile, MapDelta, NodeId, PgFunction, PlacementMap, Topology};

const HEAD: TableDefinition<&str, &[u8]> = TableDefinition::new("map_head");
const ROWS: TableDefinition<u32, &[u8]> = TableDefinition::new("map_rows");
const PREVIOUS: TableDefinition<u32, &[u8]> = TableDefinition::new("map_previous");
/// [`MapFile`]'s own table: the follower's index (`applied`).
const FOLLOWER: TableDefinition<&str, u64> = TableDefinition::new("follower");

#[derive(Debug, thiserror::Error)]
pub enum MapRowsError {
    #[error("{0}")]
    Db(#[from] Box<redb::Error>),
    #[error("unreadable map head: {0}")]
    Json(#[from] serde_json::Error),
    #[error("PG {0}'s slot row is not a list of node ids")]
    BadRow(u32),
    #[error("the saved map is not valid: {0}")]
    Invalid(#[from] sillok_placement::PlacementError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the map writer task failed: {0}")]
    Task(String),
}

/// A writer task that did not finish.
pub(crate) fn join_error(e: tokio::task::JoinError) -> MapRowsError {
    MapRowsError::Task(e.to_string())
}

fn db(e: impl Into<redb::Error>) -> MapRowsError {
    MapRowsError::Db(Box::new(e.into()))
}

/// The map without its rows.
#[derive(Serialize, Deserialize)]
struct Head {
    epoch: u64,
    profile: EcProfile,
    pg_count: u32,
    pg_function: PgFunction,
    topology: Topology,
}

fn head_of(map: &PlacementMap) -> Vec<u8> {
    let head = Head {
        epoch: map.epoch,
        profile: map.profile,
        pg_count: map.pg_count,
        pg_function: map.pg_function,
        topology: map.topology.clone(),
    };
    serde_json::to_vec(&head).expect("a map head serialises")
}

fn row_bytes(row: &[NodeId]) -> Vec<u8> {
    row.iter().flat_map(|n| n.0.to_le_bytes()).collect()
}

fn row_of(pg: u32, bytes: &[u8]) -> Result<Vec<NodeId>, MapRowsError> {
    if !bytes.len().is_multiple_of(4) {
        return Err(MapRowsError::BadRow(pg));
    }
    Ok(bytes.chunks_exact(4).map(|c| NodeId(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect())
}

/// Creates the tables if they are missing.
pub fn create_tables(w: &WriteTransaction) -> Result<(), MapRowsError> {
    w.open_table(HEAD).map_err(db)?;
    w.open_table(ROWS).map_err(db)?;
    w.open_table(PREVIOUS).map_err(db)?;
    Ok(())
}

/// Replaces whatever map the tables hold with `map`.
pub fn write_whole(w: &WriteTransaction, map: &PlacementMap) -> Result<(), MapRowsError> {
    w.delete_table(ROWS).map_err(db)?;
    w.delete_table(PREVIOUS).map_err(db)?;
    w.open_table(HEAD).map_err(db)?.insert("head", head_of(map).as_slice()).map_err(db)?;
    let mut rows = w.open_table(ROWS).map_err(db)?;
    for (pg, row) in map.slots.iter().enumerate() {
        rows.insert(pg as u32, row_bytes(row).as_slice()).map_err(db)?;
    }
    let mut previous = w.open_table(PREVIOUS).map_err(db)?;
    for (pg, earlier) in &map.previous {
        previous.insert(*pg, serde_json::to_vec(earlier)?.as_slice()).map_err(db)?;
    }
    Ok(())
}

/// Writes what `delta` changed; `after` is the map it makes (its head is
/// written whole: a few hundred bytes per node, and rare).
pub fn write_delta(w: &WriteTransaction, after: &PlacementMap, delta: &MapDelta) -> Result<(), MapRowsError> {
    w.open_table(HEAD).map_err(db)?.insert("head", head_of(after).as_slice()).map_err(db)?;
    let mut rows = w.open_table(ROWS).map_err(db)?;
    for (pg, row) in &delta.rows {
        rows.insert(*pg, row_bytes(row).as_slice()).map_err(db)?;
    }
    let mut previous = w.open_table(PREVIOUS).map_err(db)?;
    for (pg, earlier) in &delta.previous {
        if earlier.is_empty() {
            previous.remove(*pg).map_err(db)?;
        } else {
            previous.insert(*pg, serde_json::to_vec(earlier)?.as_slice()).map_err(db)?;
        }
    }
    Ok(())
}

/// The map the tables hold (`None`: none, or the tables do not exist).
pub fn read(r: &ReadTransaction) -> Result<Option<PlacementMap>, MapRowsError> {
    let head = match r.open_table(HEAD) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(db(e)),
    };
    let Some(h) = head.get("head").map_err(db)? else { return Ok(None) };
    let h: Head = serde_json::from_slice(h.value())?;
    let mut slots = Vec::with_capacity(h.pg_count as usize);
    for row in r.open_table(ROWS).map_err(db)?.iter().map_err(db)? {
        let (pg, bytes) = row.map_err(db)?;
        if pg.value() as usize != slots.len() {
            return Err(MapRowsError::BadRow(pg.value()));
        }
        slots.push(row_of(pg.value(), bytes.value())?);
    }
    let mut previous = std::collections::BTreeMap::new();
    for row in r.open_table(PREVIOUS).map_err(db)?.iter().map_err(db)? {
        let (pg, bytes) = row.map_err(db)?;
        previous.insert(pg.value(), serde_json::from_slice(bytes.value())?);
    }
    let map = PlacementMap {
        epoch: h.epoch,
        profile: h.profile,
        pg_count: h.pg_count,
        pg_function: h.pg_function,
        topology: h.topology,
        slots,
        previous,
    };
    map.validate()?;
    Ok(Some(map))
}

/// A file holding one followed map and the follower's index in the
/// catalog's change log (a storage node's `map.redb`), created 0600.
pub struct MapFile {
    db: Database,
    path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("the map file {path}: {source}")]
pub struct MapFileError {
    pub path: PathBuf,
    pub source: MapRowsError,
}

impl MapFile {
    /// Opens (or creates) the file; returns it with the index and map it
    /// holds, if any.
    pub fn open(path: &Path) -> Result<(MapFile, Option<(u64, PlacementMap)>), MapFileError> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let err = |source| MapFileError { path: path.to_path_buf(), source };
        let io = |e: std::io::Error| err(MapRowsError::Io(e));
        std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(path).map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        let database = sillok_redb_file::open_or_create(path).map_err(|e| err(MapRowsError::Db(Box::new(e))))?;
        let file = MapFile { db: database, path: path.to_path_buf() };
        let w = file.db.begin_write().map_err(|e| err(db(e)))?;
        create_tables(&w).map_err(err)?;
        w.open_table(FOLLOWER).map_err(|e| err(db(e)))?;
        w.commit().map_err(|e| err(db(e)))?;
        let held = file.load().map_err(err)?;
        Ok((file, held))
    }

    fn load(&self) -> Result<Option<(u64, PlacementMap)>, MapRowsError> {
        let r = self.db.begin_read().map_err(db)?;
        let applied = r.open_table(FOLLOWER).map_err(db)?.get("applied").map_err(db)?.map_or(0, |v| v.value());
        Ok(read(&r)?.map(|m| (applied, m)))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes, in one durable transaction, the follower's new index and
    /// either a whole map or the deltas that made `after` from the map held.
    pub fn write(&self, applied: u64, after: &PlacementMap, change: MapWrite<'_>) -> Result<(), MapFileError> {
        let err = |source| MapFileError { path: self.path.clone(), source };
        let w = self.db.begin_write().map_err(|e| err(db(e)))?;
        match change {
            MapWrite::Whole => write_whole(&w, after),
            MapWrite::Deltas(deltas) => deltas.iter().try_for_each(|d| write_delta(&w, after, d)),
        }
        .map_err(err)?;
        w.open_table(FOLLOWER).map_err(|e| err(db(e)))?.insert("applied", applied).map_err(|e| err(db(e)))?;
        w.commit().map_err(|e| err(db(e)))
    }
}

/// How a map change is written.
pub enum MapWrite<'a> {
    /// All rows.
    Whole,
    /// The rows these deltas name, in order.
    Deltas(&'a [MapDelta]),
}

#[cfg(test)]
mod tests {
    use super::*;
    use sillok_placement::{Node, NodeState, Site};

    fn topology() -> Topology {
        let mut t = Topology::default();
        for s in 0..3u32 {
            t.sites.push(Site { id: format!("s{s}") });
            for i in 0..3 {
                let id = s * 3 + i + 1;
                t.nodes.push(Node {
                    id: NodeId(id),
                    site: format!("s{s}"),
                    addr: format!("127.0.0.1:{}", 7000 + id),
                    weight: 1.0,
                    state: NodeState::Up,
                });
            }
        }
        t
    }

    #[test]
    fn a_map_written_whole_or_by_deltas_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map.redb");
        let (file, held) = MapFile::open(&path).unwrap();
        assert!(held.is_none());
        let a = PlacementMap::new(topology(), EcProfile { k: 4, m: 2 }, 64).unwrap();
        file.write(3, &a, MapWrite::Whole).unwrap();
        let mut t = a.topology.clone();
        t.nodes.push(Node { id: NodeId(10), site: "s1".into(), addr: "x:1".into(), weight: 1.0, state: NodeState::Up });
        let b = a.with_topology(t).unwrap();
        let c = b.without_earlier_rows(&(0..32).collect::<Vec<_>>());
        let deltas = [MapDelta::between(&a, &b).unwrap(), MapDelta::between(&b, &c).unwrap()];
        file.write(9, &c, MapWrite::Deltas(&deltas)).unwrap();
        drop(file);
        let (file, held) = MapFile::open(&path).unwrap();
        assert_eq!(held, Some((9, c.clone())));
        // A whole map of another shape (a split) replaces every row.
        let d = c.split(128).unwrap();
        file.write(12, &d, MapWrite::Whole).unwrap();
        drop(file);
        let (_, held) = MapFile::open(&path).unwrap();
        assert_eq!(held, Some((12, d)));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
