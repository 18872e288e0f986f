//! S3 object versions: what a PUT, a DELETE and a GET by version id do in a
//! bucket whose versioning is enabled or suspended, and the one delete path.
//!
//! Owns: [`write_current`] (every write of a key's current object: PUT,
//! copy, multipart completion), [`delete_current`] (every delete of it:
//! DeleteObject, DeleteObjects) and [`delete_if_current`] (lifecycle
//! expiry), [`delete_version`],
//! [`read_version`] and [`list_versions`] (ListObjectVersions).
//!
//! Layout: a key's **head** (`bucket/key`, the manifest every GET without a
//! version id reads, as in an unversioned bucket) is its current version. In
//! a bucket that has had versioning enabled, every version written also gets
//! a **record**: a copy of its manifest under [`placement::VERSIONS`], key
//! `bucket/key\0<version id>`, placed in the key's own PG (so the collector,
//! repair, anti-entropy and rebalance treat records like any manifest, and a
//! shard stays while any record or head refers to it). Version ids are the
//! version the head was written at ([`VersionId`]), so ids sort newest first
//! and records list in S3's order. A delete marker is a version whose body is
//! [`Body::DeleteMarker`].
//!
//! Invariants:
//! - A head written under versioning carries its version id; its record is
//!   written together with it, and the client is answered once both are on
//!   a quorum. A head without
//!   a version id (written while the bucket was unversioned) is the key's
//!   null version and has no record: before a versioned write replaces it,
//!   [`write_current`] records it (as the null version), so no version is
//!   lost when versioning is turned on.
//! - Records are never rewritten with other content (tags aside): deleting a
//!   version writes a tombstone over its record; when that version was the
//!   head, the newest remaining record becomes the head again, written just
//!   above the deleted head's version and only if nothing newer arrived.
//! - Nothing here deletes a shard: a version's shards become the nodes'
//!   collector's once neither its record nor a head refers to them.
//!
//! Crash windows (the client got no answer, so S3 promises nothing): a head
//! written without its record lists as its key's newest version (the head is
//! read alongside records) until a later write replaces it, when it is lost;
//! a record written without its head lists as a version that is not the
//! latest;
//! a suspended bucket's replaced null record that was not yet tombstoned
//! lists next to the new one until the key's next suspended write.

use std::collections::BTreeMap;
use std::sync::Arc;

use sillok_catalog::state::Versioning;
use sillok_model::clock;
use sillok_model::manifest::{Body, Manifest, Version, VersionId};
use sillok_model::placement::{self, VERSIONS};
use sillok_storage_node::api::ListEntry;

use crate::cluster::Cluster;
use crate::error::GatewayError;
use crate::listing::{self, ListQuery};
use crate::quorum;

/// What a delete did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deleted {
    /// The key had a live object that the delete hid or removed.
    pub existed: bool,
    /// The version id the delete made (a delete marker's) or removed, as S3
    /// shows it; `None` in an unversioned bucket.
    pub version_id: Option<String>,
    /// A delete marker was made, or the version removed was one.
    pub delete_marker: bool,
}

/// A version just above `v` and below any version taken later by a clock
/// that had seen `v` (1 ns above, random tie-break, so two changes made on
/// the same version do not write one version with two contents).
pub fn just_after(v: Version) -> Version {
    Version { nanos: v.nanos.saturating_add(1), tiebreak: rand::random() }
}

/// The version id S3 shows for `m` in a bucket with this versioning
/// (`None` in a bucket that was never versioned: no header at all).
pub fn shown_id(m: &Manifest, versioning: Versioning) -> Option<String> {
    match (&m.version_id, versioning) {
        (Some(id), _) => Some(id.to_s3()),
        (None, Versioning::Unversioned) => None,
        (None, _) => Some("null".into()),
    }
}

/// A record's manifest as the object version it is (its own bucket and key).
fn as_object(mut record: Manifest) -> Manifest {
    if let Some((b, k, _)) = placement::parse_version_record_key(&record.key) {
        let (b, k) = (b.to_string(), k.to_string());
        record.bucket = b;
        record.key = k;
    }
    record
}

fn record_key_of(bucket: &str, key: &str, id: &VersionId) -> String {
    placement::version_record_key(bucket, key, &VersionId::id_of(id.at))
}

/// The record of `m`, a head with a version id.
fn record_of(m: &Manifest, id: &VersionId) -> Manifest {
    Manifest { bucket: VERSIONS.into(), key: record_key_of(&m.bucket, &m.key, id), ..m.clone() }
}

/// The read of a key's current manifest that a versioned write needs (to
/// keep a null version from before versioning, or to replace a suspended
/// bucket's null version), started as early as the caller can: a PUT starts
/// it before it reads the body, so the read costs no time of its own.
pub struct HeadRead(Option<tokio::task::JoinHandle<Result<Option<Manifest>, GatewayError>>>);

impl HeadRead {
    /// Starts the read now if the bucket's versioning needs it.
    pub fn start(cluster: &Arc<Cluster>, versioning: Versioning, bucket: &str, key: &str) -> Self {
        if versioning == Versioning::Unversioned {
            return HeadRead(None);
        }
        let (cluster, bucket, key) = (cluster.clone(), bucket.to_string(), key.to_string());
        HeadRead(Some(tokio::spawn(async move { quorum::read_manifest(&cluster, &bucket, &key).await })))
    }

    /// Not started: [`write_current`] reads when it needs to.
    pub fn later() -> Self {
        HeadRead(None)
    }

    async fn get(self, cluster: &Arc<Cluster>, bucket: &str, key: &str) -> Result<Option<Manifest>, GatewayError> {
        match self.0 {
            Some(h) => h.await.map_err(|e| GatewayError::Internal(format!("head read: {e}")))?,
            None => quorum::read_manifest(cluster, bucket, key).await,
        }
    }
}

/// Writes `m` (a new object, or a delete marker) as `bucket/key`'s current
/// version under the bucket's versioning, and returns it as written. The
/// head and its record are written at once; in the rare case the head is
/// redone above a newer version (`quorum::write_manifest`), its record is
/// written again under the new id and the first one tombstoned.
pub async fn write_current(
    cluster: &Arc<Cluster>,
    versioning: Versioning,
    mut m: Manifest,
    head: HeadRead,
) -> Result<Manifest, GatewayError> {
    if versioning == Versioning::Unversioned {
        return quorum::write_manifest(cluster, &m).await;
    }
    let suspended = versioning == Versioning::Suspended;
    let previous = head.get(cluster, &m.bucket, &m.key).await?.filter(|p| !p.is_deleted());
    if let Some(p) = &previous
        && p.version_id.is_none()
        && !suspended
    {
        // The null version from before versioning: kept as a version now,
        // before anything replaces it.
        let id = VersionId { at: p.version, null: true };
        let kept = Manifest { version_id: Some(id), ..p.clone() };
        quorum::write_manifest(cluster, &record_of(&kept, &id)).await?;
    }
    let first_id = VersionId { at: m.version, null: suspended };
    m.version_id = Some(first_id);
    // `write_manifest` moves the head's version id with its version if it
    // retries; the record's id is fixed by its key.
    let record = record_of(&m, &first_id);
    let (written, recorded) =
        tokio::join!(quorum::write_manifest(cluster, &m), quorum::write_manifest(cluster, &record));
    let written = written?;
    let id = written.version_id.expect("set above");
    if id == first_id {
        recorded?;
    } else {
        quorum::write_manifest(cluster, &record_of(&written, &id)).await?;
        if recorded.is_ok() {
            tombstone_record(cluster, &m.bucket, &m.key, &first_id).await?;
        }
    }
    if suspended {
        // A suspended bucket has one null version: this one replaces it.
        match previous.as_ref().map(|p| p.version_id) {
            Some(Some(old)) if old.null && old.at != id.at => {
                tombstone_record(cluster, &m.bucket, &m.key, &old).await?
            }
            // Unversioned (no record), this one, or nothing: no other null version.
            Some(None) | Some(Some(VersionId { null: true, .. })) | None => {}
            Some(Some(_)) => {
                for e in key_versions(cluster, &m.bucket, &m.key).await? {
                    if let Some(other) = e.version_id.filter(|o| o.null && o.at != id.at) {
                        tombstone_record(cluster, &m.bucket, &m.key, &other).await?;
                    }
                }
            }
        }
    }
    Ok(written)
}

async fn tombstone_record(cluster: &Arc<Cluster>, bucket: &str, key: &str, id: &VersionId) -> Result<(), GatewayError> {
    quorum::write_manifest(cluster, &Manifest::tombstone(VERSIONS, &record_key_of(bucket, key, id))).await?;
    Ok(())
}

/// Deletes the current object of `bucket/key`; deleting a missing key is not
/// an error. Unversioned: a tombstone supersedes every older version, and
/// this returns once it is the winning version on a quorum. Versioned: a
/// delete marker becomes the current version (S3 makes one whether or not
/// the key existed). The old version's shards are the collector's once no
/// manifest refers to them: nothing here deletes a shard.
pub async fn delete_current(
    cluster: &Arc<Cluster>,
    versioning: Versioning,
    bucket: &str,
    key: &str,
) -> Result<Deleted, GatewayError> {
    if versioning == Versioning::Unversioned {
        let previous = quorum::read_manifest(cluster, bucket, key).await?;
        let existed = previous.is_some_and(|m| m.is_object());
        if existed {
            quorum::write_manifest(cluster, &Manifest::tombstone(bucket, key)).await?;
        }
        return Ok(Deleted { existed, version_id: None, delete_marker: false });
    }
    let marker = Manifest { body: Body::DeleteMarker, ..Manifest::tombstone(bucket, key) };
    let written = write_current(cluster, versioning, marker, HeadRead::later()).await?;
    Ok(Deleted { existed: true, version_id: written.version_id.map(|id| id.to_s3()), delete_marker: true })
}

/// Deletes `current`, the current object of its key as the caller read it,
/// only if it still is (lifecycle expiry): unversioned, the tombstone is
/// written just above `current`'s version and only if nothing newer is on
/// the replicas, so a PUT that completes meanwhile is never hidden; in a
/// versioned bucket a delete marker is made as by [`delete_current`] (a
/// version written meanwhile is kept either way). `false`: a newer write
/// arrived first and nothing was deleted.
pub async fn delete_if_current(
    cluster: &Arc<Cluster>,
    versioning: Versioning,
    current: &Manifest,
) -> Result<bool, GatewayError> {
    if versioning != Versioning::Unversioned {
        delete_current(cluster, versioning, &current.bucket, &current.key).await?;
        return Ok(true);
    }
    let version = just_after(current.version);
    let tomb =
        Manifest { version, last_modified_ms: version.millis(), ..Manifest::tombstone(&current.bucket, &current.key) };
    match quorum::write_manifest_unless_newer(cluster, &tomb).await? {
        None => {
            clock::observe(version);
            Ok(true)
        }
        Some(_) => Ok(false),
    }
}

/// Which version a version id names.
enum Named {
    Null,
    Id(Version),
}

fn parse(version_id: &str) -> Result<Named, GatewayError> {
    if version_id == "null" {
        return Ok(Named::Null);
    }
    VersionId::parse_id(version_id).map(Named::Id).ok_or(GatewayError::InvalidVersionId)
}

/// Whether `head` is the version `named` names.
fn head_is(head: &Manifest, named: &Named) -> bool {
    match (named, &head.version_id) {
        (Named::Null, None) => true,
        (Named::Null, Some(id)) => id.null,
        (Named::Id(at), Some(id)) => !id.null && id.at == *at,
        (Named::Id(_), None) => false,
    }
}

/// The version of `bucket/key` a GET or HEAD serves: the head, or the
/// version `version_id` names. A delete marker is refused as S3 refuses it
/// (404 without a version id, 405 with one), naming its version id.
pub async fn read_version(
    cluster: &Arc<Cluster>,
    versioning: Versioning,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
) -> Result<Manifest, GatewayError> {
    let Some(version_id) = version_id else {
        return match quorum::read_manifest(cluster, bucket, key).await? {
            Some(m) if m.is_object() => Ok(m),
            Some(m) if m.is_delete_marker() => Err(GatewayError::DeleteMarker {
                version_id: shown_id(&m, versioning),
                last_modified_ms: m.last_modified_ms,
                named: false,
            }),
            _ => Err(GatewayError::NoSuchKey),
        };
    };
    let named = parse(version_id)?;
    let found = find_version(cluster, bucket, key, &named).await?.ok_or(GatewayError::NoSuchVersion)?;
    if found.is_delete_marker() {
        return Err(GatewayError::DeleteMarker {
            version_id: Some(version_id.to_string()),
            last_modified_ms: found.last_modified_ms,
            named: true,
        });
    }
    Ok(found)
}

/// The version `named` names (a live object or a delete marker), as an
/// object of `bucket/key`.
async fn find_version(
    cluster: &Arc<Cluster>,
    bucket: &str,
    key: &str,
    named: &Named,
) -> Result<Option<Manifest>, GatewayError> {
    let head = quorum::read_manifest(cluster, bucket, key).await?.filter(|m| !m.is_deleted());
    if let Some(h) = head.as_ref().filter(|h| head_is(h, named)) {
        return Ok(Some(h.clone()));
    }
    let record_key = match named {
        Named::Id(at) => placement::version_record_key(bucket, key, &VersionId::id_of(*at)),
        Named::Null => {
            let null =
                key_versions(cluster, bucket, key).await?.into_iter().find(|e| e.version_id.is_some_and(|i| i.null));
            match null {
                Some(e) => e.key,
                None => return Ok(None),
            }
        }
    };
    let record = quorum::read_manifest(cluster, VERSIONS, &record_key).await?;
    Ok(record
        .filter(|r| !r.is_deleted() && r.version_id.is_some_and(|id| id.null == matches!(named, Named::Null)))
        .map(as_object))
}

/// Gives one version exactly `tags` (Put/DeleteObjectTagging): the current
/// one (no version id, or one naming it), whose record follows, or an older
/// one through its record. Each manifest is rewritten as it was read, body
/// and locations untouched, just above the version read, and only if
/// nothing newer arrived meanwhile (else read afresh and done again), so a
/// tag change never brings back an older body. Returns the version tagged.
pub async fn retag(
    cluster: &Arc<Cluster>,
    versioning: Versioning,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
    tags: &BTreeMap<String, String>,
) -> Result<Manifest, GatewayError> {
    let named = version_id.map(parse).transpose()?;
    for _ in 0..=quorum::WIN_RETRIES {
        let head = quorum::read_manifest(cluster, bucket, key).await?.filter(|m| !m.is_deleted());
        let current = match (&named, head) {
            (None, Some(h)) => Some(h),
            (Some(n), Some(h)) if head_is(&h, n) => Some(h),
            (None, None) => return Err(GatewayError::NoSuchKey),
            _ => None,
        };
        let is_current = current.is_some();
        let target = match current {
            Some(h) => h,
            None => find_version(cluster, bucket, key, named.as_ref().expect("named"))
                .await?
                .ok_or(GatewayError::NoSuchVersion)?,
        };
        if target.is_delete_marker() {
            return Err(GatewayError::DeleteMarker {
                version_id: shown_id(&target, versioning),
                last_modified_ms: target.last_modified_ms,
                named: named.is_some(),
            });
        }
        // The record first: it is what the version is read from once it is
        // no longer current.
        if let Some(id) = target.version_id
            && !retag_one(cluster, VERSIONS, &record_key_of(bucket, key, &id), tags, Some(id)).await?
        {
            continue;
        }
        if !is_current || retag_one(cluster, bucket, key, tags, target.version_id).await? {
            return Ok(Manifest { tags: tags.clone(), ..target });
        }
    }
    Err(GatewayError::Unavailable(format!(
        "{bucket}/{key}: newer versions kept arriving while its tags were changed {} times",
        quorum::WIN_RETRIES + 1
    )))
}

/// Rewrites the manifest at `bucket/key` with `tags`, just above the version
/// read, if it is still the S3 version `want`: `false` when a newer write
/// arrived first (nothing written). A head that has become another version
/// meanwhile is left alone (the version tagged is no longer current).
async fn retag_one(
    cluster: &Arc<Cluster>,
    bucket: &str,
    key: &str,
    tags: &BTreeMap<String, String>,
    want: Option<VersionId>,
) -> Result<bool, GatewayError> {
    let Some(m) = quorum::read_manifest(cluster, bucket, key).await?.filter(|m| !m.is_deleted()) else {
        return Err(if bucket == VERSIONS { GatewayError::NoSuchVersion } else { GatewayError::NoSuchKey });
    };
    if m.version_id != want || m.is_delete_marker() {
        return Ok(true);
    }
    if m.tags == *tags {
        return Ok(true);
    }
    let changed = Manifest { version: just_after(m.version), tags: tags.clone(), ..m };
    match quorum::write_manifest_unless_newer(cluster, &changed).await? {
        None => {
            clock::observe(changed.version);
            Ok(true)
        }
        Some(newer) => {
            tracing::debug!(bucket, key, ours = ?changed.version, ?newer, "a newer version exists; tagging it afresh");
            Ok(false)
        }
    }
}

/// Deletes one version for good (DELETE with a version id). When it was the
/// current version, the newest remaining one becomes current (or, with none
/// left, the key is gone). A version id that names nothing is not an error.
pub async fn delete_version(
    cluster: &Arc<Cluster>,
    bucket: &str,
    key: &str,
    version_id: &str,
) -> Result<Deleted, GatewayError> {
    let named = parse(version_id)?;
    let Some(target) = find_version(cluster, bucket, key, &named).await? else {
        return Ok(Deleted { existed: false, version_id: Some(version_id.into()), delete_marker: false });
    };
    if let Some(id) = &target.version_id {
        tombstone_record(cluster, bucket, key, id).await?;
    }
    let head = quorum::read_manifest(cluster, bucket, key).await?.filter(|m| !m.is_deleted());
    if let Some(head) = head.filter(|h| head_is(h, &named)) {
        promote_after(cluster, bucket, key, &head).await?;
    }
    Ok(Deleted { existed: true, version_id: Some(version_id.into()), delete_marker: target.is_delete_marker() })
}

/// Makes the newest remaining version current after `head` was deleted, or
/// tombstones the head if none remains: written just above `head`'s
/// version, and not at all if a newer write got there first.
async fn promote_after(cluster: &Arc<Cluster>, bucket: &str, key: &str, head: &Manifest) -> Result<(), GatewayError> {
    let remaining = key_versions(cluster, bucket, key).await?;
    let mut next = None;
    for e in remaining {
        if let Some(r) = quorum::read_manifest(cluster, VERSIONS, &e.key).await?.filter(|r| !r.is_deleted()) {
            next = Some(as_object(r));
            break;
        }
    }
    let version = just_after(head.version);
    let new_head = match next {
        Some(n) => Manifest { version, ..n },
        None => Manifest { version, last_modified_ms: version.millis(), ..Manifest::tombstone(bucket, key) },
    };
    if quorum::write_manifest_unless_newer(cluster, &new_head).await?.is_none() {
        clock::observe(version);
    }
    Ok(())
}

/// The live records (versions and delete markers) of one key, newest first.
async fn key_versions(cluster: &Arc<Cluster>, bucket: &str, key: &str) -> Result<Vec<ListEntry>, GatewayError> {
    let prefix = format!("{bucket}/{key}{}", placement::VERSION_SEPARATOR);
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let q = ListQuery {
            bucket: VERSIONS.into(),
            prefix: prefix.clone(),
            start_after: after.clone(),
            max_keys: 1000,
            include_delete_markers: true,
            ..Default::default()
        };
        let page = listing::list(cluster, &q).await?;
        out.extend(page.entries);
        if !page.truncated {
            return Ok(out);
        }
        after = page.next_after;
    }
}

/// One version in a ListObjectVersions answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedVersion {
    pub key: String,
    /// As S3 shows it (`null` for the null version).
    pub version_id: String,
    pub is_latest: bool,
    pub delete_marker: bool,
    pub size: u64,
    pub etag: String,
    pub last_modified_ms: i64,
}

#[derive(Debug, Clone, Default)]
pub struct VersionsQuery {
    pub bucket: String,
    pub prefix: String,
    pub delimiter: Option<String>,
    pub key_marker: Option<String>,
    pub version_id_marker: Option<String>,
    pub max_keys: usize,
}

#[derive(Debug, Clone, Default)]
pub struct VersionsPage {
    pub versions: Vec<ListedVersion>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    pub next_key_marker: Option<String>,
    pub next_version_id_marker: Option<String>,
}

/// Sorts after every key that starts with the prefix it is appended to.
const PAST_PREFIX: char = '\u{10FFFF}';

/// ListObjectVersions: every version of every key under the prefix, keys in
/// order and each key's versions newest first, in pages of `max_keys`
/// (versions and common prefixes counted together, as S3 counts them).
///
/// Each key's versions are its records plus its head when the head has no
/// record (the null version from before versioning); the head names which
/// one is the latest.
pub async fn list_versions(
    cluster: &Arc<Cluster>,
    versioning: Versioning,
    q: &VersionsQuery,
) -> Result<VersionsPage, GatewayError> {
    let mut out = VersionsPage::default();
    if q.max_keys == 0 {
        return Ok(out);
    }
    if versioning == Versioning::Unversioned {
        return list_unversioned(cluster, q).await;
    }
    let delimiter = q.delimiter.as_deref().filter(|d| !d.is_empty());
    // Where to resume: after a whole key, or within one after a version.
    let (mut after_key, mut within): (Option<String>, Option<(String, String)>) =
        match (&q.key_marker, &q.version_id_marker) {
            (Some(k), Some(v)) if !v.is_empty() => (None, Some((k.clone(), v.clone()))),
            (Some(k), _) if !k.is_empty() => (Some(past_prefix_marker(k, delimiter)), None),
            _ => (None, None),
        };
    for _round in 0..100_000 {
        // The next key at or after the cursor: its head and its records.
        let start = match (&within, &after_key) {
            (Some((k, _)), _) => Some(before(k)),
            (None, Some(k)) => Some(k.clone()),
            (None, None) => None,
        };
        let Some((key, head)) = next_key(cluster, q, start.as_deref()).await? else {
            return Ok(out);
        };
        if let Some(d) = delimiter
            && let Some(pos) = key[q.prefix.len()..].find(d)
        {
            let cp = key[..q.prefix.len() + pos + d.len()].to_string();
            if out.versions.len() + out.common_prefixes.len() >= q.max_keys {
                out.truncated = true;
                return Ok(out);
            }
            out.next_key_marker = Some(cp.clone());
            out.next_version_id_marker = None;
            out.common_prefixes.push(cp.clone());
            after_key = Some(format!("{cp}{PAST_PREFIX}"));
            within = None;
            continue;
        }
        let mut versions = versions_of(cluster, &q.bucket, &key, head.as_ref()).await?;
        if let Some((_, marker)) = within.take() {
            match versions.iter().position(|v| v.version_id == marker) {
                Some(i) => {
                    versions.drain(..=i);
                }
                // A marker that names no version of the key: S3 starts after the key.
                None => versions.clear(),
            }
        }
        for v in versions {
            if out.versions.len() + out.common_prefixes.len() >= q.max_keys {
                out.truncated = true;
                return Ok(out);
            }
            out.next_key_marker = Some(v.key.clone());
            out.next_version_id_marker = Some(v.version_id.clone());
            out.versions.push(v);
        }
        after_key = Some(key);
    }
    Err(GatewayError::Internal("version listing did not converge".into()))
}

/// A bucket that was never versioned has no records and no delete markers:
/// each live object is its key's only (null) version, listed as ListObjects
/// lists it, in one pass.
async fn list_unversioned(cluster: &Arc<Cluster>, q: &VersionsQuery) -> Result<VersionsPage, GatewayError> {
    let lq = ListQuery {
        bucket: q.bucket.clone(),
        prefix: q.prefix.clone(),
        delimiter: q.delimiter.clone(),
        // After (key, null) is after the key: it has no other version.
        start_after: q
            .key_marker
            .as_deref()
            .filter(|k| !k.is_empty())
            .map(|k| past_prefix_marker(k, q.delimiter.as_deref().filter(|d| !d.is_empty()))),
        max_keys: q.max_keys,
        include_delete_markers: false,
    };
    let page = listing::list(cluster, &lq).await?;
    let mut out = VersionsPage { truncated: page.truncated, ..Default::default() };
    out.versions = page.entries.iter().map(|e| listed(&e.key, e, true)).collect();
    out.common_prefixes = page.common_prefixes;
    if out.truncated {
        // The last thing listed, whichever kind it was.
        let last_version = out.versions.last().map(|v| v.key.clone());
        let last_prefix = out.common_prefixes.last().cloned();
        match (last_version, last_prefix) {
            (Some(k), Some(p)) if p > k => out.next_key_marker = Some(p),
            (Some(k), _) => {
                out.next_key_marker = Some(k);
                out.next_version_id_marker = Some("null".into());
            }
            (None, p) => out.next_key_marker = p,
        }
    }
    Ok(out)
}

/// Where a listing resumes after a key marker: a marker that is a common
/// prefix (it ends with the delimiter) continues after everything under it.
fn past_prefix_marker(marker: &str, delimiter: Option<&str>) -> String {
    match delimiter {
        Some(d) if marker.ends_with(d) => format!("{marker}{PAST_PREFIX}"),
        _ => marker.to_string(),
    }
}

/// A string just before `key` in the listing's order, so that a listing
/// "after" it starts at `key` itself (keys are never empty, and a key that
/// is a prefix of another sorts first). Only keys that carry U+10FFFF right
/// after `key`'s first characters with the last one lowered can sort
/// between it and `key`.
fn before(key: &str) -> String {
    let mut chars: Vec<char> = key.chars().collect();
    match chars.pop() {
        Some(c) if c > '\0' => {
            let prev = char::from_u32(c as u32 - 1).unwrap_or('\0');
            let mut s: String = chars.into_iter().collect();
            s.push(prev);
            s.push(PAST_PREFIX);
            s
        }
        _ => chars.into_iter().collect(),
    }
}

/// The first key under the prefix after `after` that has a head (live or a
/// delete marker) or a record, with its head if it has one.
async fn next_key(
    cluster: &Arc<Cluster>,
    q: &VersionsQuery,
    after: Option<&str>,
) -> Result<Option<(String, Option<ListEntry>)>, GatewayError> {
    let heads = ListQuery {
        bucket: q.bucket.clone(),
        prefix: q.prefix.clone(),
        start_after: after.map(str::to_string),
        max_keys: 1,
        include_delete_markers: true,
        ..Default::default()
    };
    let head = listing::list(cluster, &heads).await?.entries.into_iter().next();
    let record_prefix = format!("{}/{}", q.bucket, q.prefix);
    let records = ListQuery {
        bucket: VERSIONS.into(),
        prefix: record_prefix,
        // Past every record of `after` itself.
        start_after: after.map(|a| format!("{}/{a}{}{PAST_PREFIX}", q.bucket, placement::VERSION_SEPARATOR)),
        max_keys: 1,
        include_delete_markers: true,
        ..Default::default()
    };
    let record_key = listing::list(cluster, &records)
        .await?
        .entries
        .into_iter()
        .next()
        .and_then(|e| placement::parse_version_record_key(&e.key).map(|(_, k, _)| k.to_string()));
    Ok(match (head, record_key) {
        (None, None) => None,
        (Some(h), None) => Some((h.key.clone(), Some(h))),
        (None, Some(k)) => {
            let h = head_of(cluster, q, &k).await?;
            Some((k, h))
        }
        (Some(h), Some(k)) if h.key <= k => Some((h.key.clone(), Some(h))),
        (Some(_), Some(k)) => {
            let h = head_of(cluster, q, &k).await?;
            Some((k, h))
        }
    })
}

/// The head entry of exactly `key`, if it is live or a delete marker.
async fn head_of(cluster: &Arc<Cluster>, q: &VersionsQuery, key: &str) -> Result<Option<ListEntry>, GatewayError> {
    let one = ListQuery {
        bucket: q.bucket.clone(),
        prefix: key.into(),
        max_keys: 1,
        include_delete_markers: true,
        ..Default::default()
    };
    Ok(listing::list(cluster, &one).await?.entries.into_iter().find(|e| e.key == key))
}

/// Every version of one key, newest first, with the latest flagged.
async fn versions_of(
    cluster: &Arc<Cluster>,
    bucket: &str,
    key: &str,
    head: Option<&ListEntry>,
) -> Result<Vec<ListedVersion>, GatewayError> {
    let records = key_versions(cluster, bucket, key).await?;
    let latest = head.map(|h| h.version_id);
    let mut out = Vec::new();
    if let Some(h) = head {
        let recorded = h.version_id.is_some_and(|id| records.iter().any(|r| r.version_id == Some(id)));
        if !recorded {
            out.push(listed(key, h, true));
        }
    }
    for r in &records {
        out.push(listed(key, r, latest == Some(r.version_id)));
    }
    Ok(out)
}

fn listed(key: &str, e: &ListEntry, is_latest: bool) -> ListedVersion {
    ListedVersion {
        key: key.to_string(),
        version_id: e.version_id.map_or_else(|| "null".to_string(), |id| id.to_s3()),
        is_latest,
        delete_marker: e.delete_marker,
        size: e.size,
        etag: e.etag.clone(),
        last_modified_ms: e.last_modified_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn just_after_is_above_the_version_it_changes_and_below_later_ones() {
        let read = Version { nanos: 1_000, tiebreak: u64::MAX };
        let a = just_after(read);
        assert!(a > read);
        assert!(a < Version { nanos: 1_002, tiebreak: 0 });
    }

    #[test]
    fn before_a_key_sorts_below_it_and_above_everything_smaller() {
        for (k, smaller) in [("b", "a"), ("ab", "aa\u{FFFF}zz"), ("a/b", "a.z"), ("a", "")] {
            let b = before(k);
            assert!(b.as_str() < k, "{b:?} < {k:?}");
            assert!(smaller < b.as_str(), "{smaller:?} < {b:?}");
        }
    }
}
