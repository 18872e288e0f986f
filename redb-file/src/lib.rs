//! The one function that opens or creates a redb database file in Sillok
//! (the catalog's `raft-log.redb` and `catalog.redb`, a storage node's
//! `meta.redb`), so that the file-format policy lives in one place.
//!
//! Format policy: redb 2.6 still creates files in its v2 format by default,
//! and redb 3 cannot open v2 files. Every file is therefore created in the
//! v3 format, and a v2 file made by an earlier Sillok is upgraded in place
//! the first time it is opened (logged once, at info), so that a later move
//! to redb 3 finds only v3 files. The upgrade is redb's own
//! [`Database::upgrade`]: it refuses while savepoints exist (Sillok makes
//! none) and is crash-safe (two-phase commits, then the header switch).
//!
//! Mode policy: every file is readable and writable by its owner only
//! (0600), because some hold secrets (the catalog's keys, in its log and its
//! state). A new file is created 0600 before redb opens it; an existing file
//! that others could read (made by an earlier Sillok, or copied in) is set
//! to 0600 when opened, and that is logged at warn.

use std::path::Path;

use redb::Database;

/// Opens the redb file at `path`, creating it (in the v3 format) if it does
/// not exist, and upgrades it to the v3 format if it is an older v2 file.
// redb's own error, as its callers (the catalog and node stores) use it; it
// is returned once per process start, so its size costs nothing.
#[allow(clippy::result_large_err)]
pub fn open_or_create(path: &Path) -> Result<Database, redb::Error> {
    open_or_create_with_cache(path, None)
}

/// [`open_or_create`] with a cache of `cache_bytes` (redb keeps nine tenths
/// for pages read, one tenth for pages written), or redb's default (1 GiB)
/// if `None`. Pages read and pages a commit wrote stay in the read cache
/// until it is full: the size bounds the memory it takes.
#[allow(clippy::result_large_err)]
pub fn open_or_create_with_cache(path: &Path, cache_bytes: Option<usize>) -> Result<Database, redb::Error> {
    owner_only(path)?;
    let mut builder = redb::Builder::new();
    if let Some(bytes) = cache_bytes {
        builder.set_cache_size(bytes);
    }
    let mut db = builder.create_with_file_format_v3(true).create(path)?;
    if db.upgrade()? {
        tracing::info!(path = %path.display(), "upgraded the redb file from format v2 to v3");
    }
    Ok(db)
}

/// Creates `path` empty with mode 0600 if it does not exist (redb takes an
/// empty file as a new database), or sets it to 0600 if others may read or
/// write it.
fn owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(path)?;
    let mode = f.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the database file was readable by others: set to 0600");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use redb::TableDefinition;

    use super::*;

    const T: TableDefinition<&str, u64> = TableDefinition::new("t");

    #[test]
    fn new_files_are_v3() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.redb");
        drop(open_or_create(&path).unwrap());
        // A v3 file needs no upgrade.
        let mut db = Database::create(&path).unwrap();
        assert!(!db.upgrade().unwrap());
    }

    /// A v2 file at `path` holding `answer = 42` in table `t`.
    pub fn make_v2(path: &Path) {
        // redb 2.6's default: the v2 format.
        let db = redb::Builder::new().create_with_file_format_v3(false).create(path).unwrap();
        let w = db.begin_write().unwrap();
        w.open_table(T).unwrap().insert("answer", 42).unwrap();
        w.commit().unwrap();
    }

    #[test]
    fn files_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let new = dir.path().join("new.redb");
        drop(open_or_create(&new).unwrap());
        assert_eq!(mode(&new), 0o600);
        // A file others can read (as earlier builds left them) is closed up.
        let old = dir.path().join("old.redb");
        make_v2(&old);
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        let db = open_or_create(&old).unwrap();
        assert_eq!(mode(&old), 0o600);
        let r = db.begin_read().unwrap();
        assert_eq!(r.open_table(T).unwrap().get("answer").unwrap().map(|v| v.value()), Some(42));
    }

    #[test]
    fn v2_files_are_upgraded_and_keep_their_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.redb");
        make_v2(&path);
        // The file really is v2: a copy of it needs an upgrade.
        let probe = dir.path().join("probe.redb");
        std::fs::copy(&path, &probe).unwrap();
        assert!(Database::create(&probe).unwrap().upgrade().unwrap(), "the test file is not v2");

        let db = open_or_create(&path).unwrap();
        let r = db.begin_read().unwrap();
        assert_eq!(r.open_table(T).unwrap().get("answer").unwrap().map(|v| v.value()), Some(42));
        drop(r);
        drop(db);
        let mut db = Database::create(&path).unwrap();
        assert!(!db.upgrade().unwrap(), "the file was left in the v2 format");
        // Opening it again is a plain open.
        drop(db);
        let db = open_or_create(&path).unwrap();
        let r = db.begin_read().unwrap();
        assert_eq!(r.open_table(T).unwrap().get("answer").unwrap().map(|v| v.value()), Some(42));
    }
}
