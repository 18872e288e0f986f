//! Multipart uploads: records, parts, completion, abort, and the sweeper that
//! cleans up uploads nobody finished.
//!
//! Storage (all through the same majority quorums as objects):
//! - the upload record is a manifest in namespace [`UPLOADS`] with key
//!   `<bucket>/<object key>/<upload id>`; it carries the object's future
//!   content type, headers, user metadata and tags, and in its inline body the
//!   upload's state ([`UploadState`]);
//! - each part is an ordinary object written by the PUT path (inline or
//!   erasure-coded, streamed with bounded memory) in namespace [`PARTS`] with
//!   key `<upload id>/<part number, 5 digits>`.
//!
//! Completing writes the object's manifest with a `Multipart` body that points
//! at the parts' shards as they are (no data is copied), so the part shards
//! become the object's. Invariants that keep data safe:
//! - records and parts are placed in the object's PG and their shards carry
//!   the object's placement hash (`model::placement`), so the collector that
//!   decides whether a part's shards are still referred to asks the replicas
//!   that hold the object's manifest, the upload record and the parts at once;
//! - nothing here deletes a shard: parts not named in a completion, aborted
//!   uploads and overwritten parts become the collector's once no manifest
//!   refers to them;
//! - the upload is marked `completing` before the object's manifest is written.
//!
//! The namespaces are not valid S3 bucket names, so they cannot clash with
//! user buckets, and user listings never see them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use sillok_model::manifest::{Body, Manifest, Part, Version};

use crate::checksum::{self, Algorithm};
use crate::cluster::Cluster;
use crate::error::GatewayError;
use crate::listing::{self, ListQuery};
use crate::quorum;
use crate::write::{self, PutRequest, WriteSettings};

pub use sillok_model::placement::{PARTS, UPLOADS};

/// S3's limits on parts.
pub const MAX_PART_NUMBER: u32 = 10_000;
pub const MIN_PART_SIZE: u64 = 5 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Open,
    /// A completion has started: the object may already reference the parts.
    Completing,
}

/// What the upload record's inline body holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadState {
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// The object's checksum is of the whole body (FULL_OBJECT, CRCs only),
    /// not S3's checksum of the part checksums (COMPOSITE).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full_object: bool,
}

/// An upload as read back from its record.
#[derive(Debug, Clone)]
pub struct Upload {
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
    pub initiated_ms: i64,
    pub state: UploadState,
    /// The record itself (content type, headers and metadata for the object).
    pub record: Manifest,
}

impl Upload {
    pub fn checksum_algorithm(&self) -> Option<Algorithm> {
        self.state.checksum.as_deref().and_then(Algorithm::parse)
    }
}

fn record_key(bucket: &str, key: &str, upload_id: &str) -> String {
    format!("{bucket}/{key}/{upload_id}")
}

/// Splits a record key back into (bucket, object key, upload id).
fn parse_record_key(k: &str) -> Option<(&str, &str, &str)> {
    let (bucket, rest) = k.split_once('/')?;
    let (key, id) = rest.rsplit_once('/')?;
    Some((bucket, key, id))
}

/// A part's key: its upload's record key, then the part number, so that the
/// part is placed with the object (`model::placement::owner`).
fn part_key(upload: &Upload, number: u32) -> String {
    parts_prefix(upload) + &format!("{number:05}")
}

fn parts_prefix(upload: &Upload) -> String {
    format!("{}/", record_key(&upload.bucket, &upload.key, &upload.upload_id))
}

/// The kept header naming the upload that made a multipart object. Not one
/// of the headers sent back to clients (`s3::fields`'s kept headers).
pub const UPLOAD_ID_HEADER: &str = "x-sillok-upload-id";

/// The live object at `bucket/key` if upload `upload_id` made it: what a
/// repeated CompleteMultipartUpload (an SDK retrying after a lost answer) is
/// answered from, as S3 answers it (200, the same result).
pub async fn completed_by(
    cluster: &Arc<Cluster>,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<Option<Manifest>, GatewayError> {
    let current = quorum::read_manifest(cluster, bucket, key).await?;
    Ok(current.filter(|m| made_by(m, upload_id)))
}

/// Whether `m` is a live object that upload `upload_id` made.
pub fn made_by(m: &Manifest, upload_id: &str) -> bool {
    m.is_object() && m.headers.get(UPLOAD_ID_HEADER).is_some_and(|id| id == upload_id)
}

fn new_upload_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn record(bucket: &str, key: &str, upload_id: &str, template: &Manifest, state: &UploadState) -> Manifest {
    let version = Version::now();
    Manifest {
        bucket: UPLOADS.into(),
        key: record_key(bucket, key, upload_id),
        version,
        last_modified_ms: template.last_modified_ms,
        size: 0,
        etag: String::new(),
        content_type: template.content_type.clone(),
        headers: template.headers.clone(),
        user_metadata: template.user_metadata.clone(),
        tags: template.tags.clone(),
        body: Body::Inline { data: serde_json::to_vec(state).expect("state serialises").into() },
        locations: 0,
        version_id: None,
    }
}

/// The object-level attributes an upload starts with.
#[derive(Debug, Clone, Default)]
pub struct NewUpload {
    pub bucket: String,
    pub key: String,
    pub content_type: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub user_metadata: BTreeMap<String, String>,
    /// Tags for the completed object (`x-amz-tagging` on CreateMultipartUpload).
    pub tags: BTreeMap<String, String>,
    pub checksum: Option<Algorithm>,
    pub full_object: bool,
}

pub async fn create(cluster: &Arc<Cluster>, new: NewUpload) -> Result<String, GatewayError> {
    let upload_id = new_upload_id();
    let now = Version::now();
    let template = Manifest {
        bucket: UPLOADS.into(),
        key: String::new(),
        version: now,
        last_modified_ms: (now.nanos / 1_000_000) as i64,
        size: 0,
        etag: String::new(),
        content_type: new.content_type,
        headers: new.headers,
        user_metadata: new.user_metadata,
        tags: new.tags,
        body: Body::Deleted,
        locations: 0,
        version_id: None,
    };
    let state = UploadState {
        phase: Phase::Open,
        checksum: new.checksum.map(|a| a.name().to_string()),
        full_object: new.full_object,
    };
    quorum::write_manifest(cluster, &record(&new.bucket, &new.key, &upload_id, &template, &state)).await?;
    Ok(upload_id)
}

/// The upload, if it exists and was neither completed nor aborted.
pub async fn get(cluster: &Arc<Cluster>, bucket: &str, key: &str, upload_id: &str) -> Result<Upload, GatewayError> {
    // Upload ids are ours: 32 hex digits. Anything else cannot exist.
    if upload_id.len() != 32 || !upload_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(GatewayError::NoSuchUpload);
    }
    let found = quorum::read_manifest(cluster, UPLOADS, &record_key(bucket, key, upload_id)).await?;
    let record = found.filter(|m| !m.is_deleted()).ok_or(GatewayError::NoSuchUpload)?;
    let state = match &record.body {
        Body::Inline { data } => serde_json::from_slice::<UploadState>(data)
            .map_err(|e| GatewayError::Internal(format!("upload record {upload_id}: {e}")))?,
        _ => return Err(GatewayError::Internal(format!("upload record {upload_id} has no state"))),
    };
    Ok(Upload {
        bucket: bucket.into(),
        key: key.into(),
        upload_id: upload_id.into(),
        initiated_ms: record.last_modified_ms,
        state,
        record,
    })
}

/// What a client sends with a part besides its bytes.
#[derive(Debug, Clone, Default)]
pub struct PartRequest {
    pub number: u32,
    pub content_length: u64,
    pub content_md5: Option<[u8; 16]>,
    pub checksum: Option<checksum::Expected>,
}

/// Stores one part through the erasure-coded PUT path; returns its manifest
/// (ETag = the part's MD5). Re-uploading a part number replaces it.
pub async fn upload_part<S, E>(
    cluster: &Arc<Cluster>,
    settings: &WriteSettings,
    upload: &Upload,
    part: PartRequest,
    body: S,
) -> Result<Manifest, GatewayError>
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Send + Unpin,
    E: std::fmt::Display,
{
    check_part_number(part.number)?;
    if let (Some(want), Some(got)) = (upload.checksum_algorithm(), part.checksum.as_ref().map(|c| c.algorithm))
        && want != got
    {
        return Err(GatewayError::InvalidRequest(format!(
            "this upload was created with checksum algorithm {}, the part uses {}",
            want.name(),
            got.name()
        )));
    }
    // A part of an upload created with a checksum algorithm always gets one.
    let checksum = part.checksum.or_else(|| {
        upload.checksum_algorithm().map(|algorithm| checksum::Expected { algorithm, value: None, trailer: None })
    });
    let key = part_key(upload, part.number);
    let req = PutRequest {
        bucket: PARTS.into(),
        key,
        content_length: part.content_length,
        content_md5: part.content_md5,
        checksum,
        ..Default::default()
    };
    write::put_object(cluster, settings, req, body).await
}

pub fn check_part_number(n: u32) -> Result<(), GatewayError> {
    if !(1..=MAX_PART_NUMBER).contains(&n) {
        return Err(GatewayError::InvalidArgument(format!(
            "part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive"
        )));
    }
    Ok(())
}

/// A stored part as listed.
#[derive(Debug, Clone)]
pub struct PartInfo {
    pub number: u32,
    pub size: u64,
    pub etag: String,
    pub last_modified_ms: i64,
}

/// Parts after `marker` (a part number), at most `max`; and whether more follow.
pub async fn list_parts(
    cluster: &Arc<Cluster>,
    upload: &Upload,
    marker: u32,
    max: usize,
) -> Result<(Vec<PartInfo>, bool), GatewayError> {
    let q = ListQuery {
        bucket: PARTS.into(),
        prefix: parts_prefix(upload),
        delimiter: None,
        start_after: (marker > 0).then(|| part_key(upload, marker)),
        max_keys: max,
        include_delete_markers: false,
    };
    let page = listing::list(cluster, &q).await?;
    let parts = page
        .entries
        .iter()
        .filter_map(|e| {
            let number = e.key.rsplit_once('/')?.1.parse().ok()?;
            Some(PartInfo { number, size: e.size, etag: e.etag.clone(), last_modified_ms: e.last_modified_ms })
        })
        .collect();
    Ok((parts, page.truncated))
}

/// All stored parts of an upload (bounded by S3's 10,000).
async fn all_parts(cluster: &Arc<Cluster>, upload: &Upload) -> Result<Vec<PartInfo>, GatewayError> {
    let mut out = Vec::new();
    let mut marker = 0;
    loop {
        let (parts, more) = list_parts(cluster, upload, marker, 1000).await?;
        let Some(last) = parts.last().map(|p| p.number) else { break };
        out.extend(parts);
        if !more || out.len() > MAX_PART_NUMBER as usize {
            break;
        }
        marker = last;
    }
    Ok(out)
}

/// A part as named in CompleteMultipartUpload.
#[derive(Debug, Clone)]
pub struct CompletedPart {
    pub number: u32,
    /// Hex MD5 without quotes.
    pub etag: String,
    /// The client's checksum of the part (base64), if it sent one.
    pub checksum: Option<String>,
}

/// Assembles the object from its parts: checks the list (order, ETags, sizes,
/// checksums), writes the object's manifest, then removes the upload.
/// `claimed_full`: the whole object's checksum the client sent (FULL_OBJECT).
pub async fn complete(
    cluster: &Arc<Cluster>,
    upload: &Upload,
    requested: &[CompletedPart],
    claimed_full: Option<&str>,
    versioning: sillok_catalog::state::Versioning,
) -> Result<Manifest, GatewayError> {
    if requested.is_empty() {
        return Err(GatewayError::InvalidRequest("you must specify at least one part".into()));
    }
    for w in requested.windows(2) {
        if w[0].number >= w[1].number {
            return Err(GatewayError::InvalidPartOrder);
        }
    }
    for p in requested {
        check_part_number(p.number)?;
    }
    let keys: Vec<String> = requested.iter().map(|p| part_key(upload, p.number)).collect();
    let mut stored: Vec<Option<Manifest>> = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(16) {
        let got = futures::future::join_all(chunk.iter().map(|k| quorum::read_manifest(cluster, PARTS, k))).await;
        for r in got {
            stored.push(r?);
        }
    }

    let algorithm = upload.checksum_algorithm();
    let mut parts = Vec::with_capacity(requested.len());
    let mut md5_of_md5s = Md5::new();
    let mut part_checksums = Vec::new();
    let last = requested.len() - 1;
    for (i, (want, got)) in requested.iter().zip(stored).enumerate() {
        let got = got.filter(|m| !m.is_deleted()).ok_or_else(|| {
            GatewayError::InvalidPart(format!("part {} was not uploaded (or was deleted)", want.number))
        })?;
        if !got.etag.eq_ignore_ascii_case(want.etag.trim_matches('"')) {
            return Err(GatewayError::InvalidPart(format!(
                "part {}: the ETag given ({}) is not the stored part's",
                want.number, want.etag
            )));
        }
        if i != last && got.size < MIN_PART_SIZE {
            return Err(GatewayError::EntityTooSmall { number: want.number, size: got.size, min: MIN_PART_SIZE });
        }
        if let Some(a) = algorithm {
            let have = got.headers.get(a.header()).cloned();
            if let (Some(claimed), Some(have)) = (&want.checksum, &have)
                && claimed.trim() != have
            {
                return Err(GatewayError::InvalidPart(format!(
                    "part {}: the {} checksum given does not match the stored part's",
                    want.number,
                    a.name()
                )));
            }
            part_checksums.push(have.unwrap_or_default());
        }
        let raw = hex::decode(&got.etag).map_err(|_| GatewayError::Internal(format!("part {} etag", want.number)))?;
        md5_of_md5s.update(&raw);
        parts.push(Part { number: want.number, size: got.size, etag: got.etag.clone(), body: got.body });
    }

    // From here on the object may reference the parts: mark the upload so no
    // cleanup deletes shards the object uses.
    let mut headers = upload.record.headers.clone();
    if let Some(a) = algorithm {
        if part_checksums.iter().any(String::is_empty) {
            return Err(GatewayError::InvalidPart(format!("a part was stored without its {} checksum", a.name())));
        }
        let (value, kind) = if upload.state.full_object {
            let mut parts_iter = part_checksums.iter().zip(&parts);
            let (first, _) = parts_iter.next().expect("at least one part");
            let mut whole = first.clone();
            for (c, p) in parts_iter {
                whole = checksum::combine(a, &whole, c, p.size)
                    .ok_or_else(|| GatewayError::Internal(format!("cannot combine {} checksums", a.name())))?;
            }
            if claimed_full.is_some_and(|c| c.trim() != whole) {
                return Err(GatewayError::ChecksumMismatch { algorithm: a.name() });
            }
            (whole, "FULL_OBJECT")
        } else {
            let c = a
                .composite(&part_checksums)
                .ok_or_else(|| GatewayError::Internal(format!("bad stored {} part checksum", a.name())))?;
            (c, "COMPOSITE")
        };
        headers.insert(a.header().into(), value);
        headers.insert(checksum::TYPE_HEADER.into(), kind.into());
    }
    let marked = UploadState { phase: Phase::Completing, ..upload.state.clone() };
    quorum::write_manifest(cluster, &record(&upload.bucket, &upload.key, &upload.upload_id, &upload.record, &marked))
        .await?;

    // Which upload made the object (kept, never sent to clients): a repeated
    // completion of the same upload is answered from it.
    headers.insert(UPLOAD_ID_HEADER.into(), upload.upload_id.clone());
    let version = Version::now();
    let object = Manifest {
        bucket: upload.bucket.clone(),
        key: upload.key.clone(),
        version,
        last_modified_ms: (version.nanos / 1_000_000) as i64,
        size: parts.iter().map(|p| p.size).sum(),
        etag: format!("{}-{}", hex::encode(md5_of_md5s.finalize()), parts.len()),
        content_type: upload.record.content_type.clone(),
        headers,
        user_metadata: upload.record.user_metadata.clone(),
        tags: upload.record.tags.clone(),
        body: Body::Multipart { parts },
        locations: 0,
        version_id: None,
    };
    let object =
        crate::versions::write_current(cluster, versioning, object, crate::versions::HeadRead::later()).await?;

    // The upload is gone for clients now; tidy up its records in the
    // background. The parts' shards are now the object's.
    let (cluster, upload) = (cluster.clone(), upload.clone());
    tokio::spawn(async move {
        if let Err(e) = remove(&cluster, &upload).await {
            tracing::warn!(upload_id = %upload.upload_id, error = %e, "cleanup after completion failed (the sweeper retries)");
        }
    });
    Ok(object)
}

/// Aborts an upload: its record and every part. The parts' shards are left to
/// the collector, which keeps whatever a completed object refers to.
pub async fn abort(cluster: &Arc<Cluster>, upload: &Upload) -> Result<(), GatewayError> {
    remove(cluster, upload).await
}

/// Tombstones the record first (new parts and completions then fail), then
/// every part.
async fn remove(cluster: &Arc<Cluster>, upload: &Upload) -> Result<(), GatewayError> {
    let tomb = Manifest::tombstone(UPLOADS, &record_key(&upload.bucket, &upload.key, &upload.upload_id));
    quorum::write_manifest(cluster, &tomb).await?;
    for p in all_parts(cluster, upload).await? {
        quorum::write_manifest(cluster, &Manifest::tombstone(PARTS, &part_key(upload, p.number))).await?;
    }
    Ok(())
}

/// An upload in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadEntry {
    pub key: String,
    pub upload_id: String,
    pub initiated_ms: i64,
}

/// Every upload of `bucket` whose key starts with `prefix` (all buckets when
/// `bucket` is None), sorted by key, then initiation time.
pub async fn list_uploads(
    cluster: &Arc<Cluster>,
    bucket: Option<&str>,
    prefix: &str,
) -> Result<Vec<(String, UploadEntry)>, GatewayError> {
    let mut out = Vec::new();
    let mut after = None;
    let list_prefix = match bucket {
        Some(b) => format!("{b}/{prefix}"),
        None => String::new(),
    };
    loop {
        let q = ListQuery {
            bucket: UPLOADS.into(),
            prefix: list_prefix.clone(),
            delimiter: None,
            start_after: after.clone(),
            max_keys: 1000,
            include_delete_markers: false,
        };
        let page = listing::list(cluster, &q).await?;
        for e in &page.entries {
            if let Some((b, key, id)) = parse_record_key(&e.key) {
                out.push((
                    b.to_string(),
                    UploadEntry { key: key.into(), upload_id: id.into(), initiated_ms: e.last_modified_ms },
                ));
            }
        }
        if !page.truncated || out.len() >= 100_000 {
            break;
        }
        after = page.next_after;
    }
    out.sort_by(|a, b| (&a.1.key, a.1.initiated_ms, &a.1.upload_id).cmp(&(&b.1.key, b.1.initiated_ms, &b.1.upload_id)));
    Ok(out)
}

/// Aborts every upload initiated more than `max_age` ago. Returns how many.
pub async fn sweep_abandoned(cluster: &Arc<Cluster>, max_age: Duration) -> Result<usize, GatewayError> {
    let now_ms = (Version::now().nanos / 1_000_000) as i64;
    let cutoff = now_ms - max_age.as_millis() as i64;
    let mut swept = 0;
    for (bucket, e) in list_uploads(cluster, None, "").await? {
        if e.initiated_ms > cutoff {
            continue;
        }
        match get(cluster, &bucket, &e.key, &e.upload_id).await {
            Ok(upload) => {
                abort(cluster, &upload).await?;
                tracing::info!(bucket, key = %e.key, upload_id = %e.upload_id, "aborted an abandoned multipart upload");
                swept += 1;
            }
            Err(GatewayError::NoSuchUpload) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(swept)
}

/// Runs [`sweep_abandoned`] every `every`, forever.
pub async fn sweep_forever(cluster: Arc<Cluster>, max_age: Duration, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = sweep_abandoned(&cluster, max_age).await {
            tracing::warn!(error = %e, "sweeping abandoned multipart uploads failed; will retry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_round_trip_with_slashes_in_keys() {
        for key in ["a", "dir/sub/file.jpg", "ends/with/", "/leading", ""] {
            let k = record_key("bkt", key, "0123456789abcdef0123456789abcdef");
            assert_eq!(parse_record_key(&k), Some(("bkt", key, "0123456789abcdef0123456789abcdef")));
        }
    }

    #[test]
    fn part_keys_sort_numerically_and_place_with_their_object() {
        let record = record_key("b", "dir/k", "u");
        let state = UploadState { phase: Phase::Open, checksum: None, full_object: false };
        let upload = Upload {
            bucket: "b".into(),
            key: "dir/k".into(),
            upload_id: "u".into(),
            initiated_ms: 0,
            record: Manifest::tombstone(UPLOADS, &record),
            state,
        };
        let mut keys: Vec<String> = [10, 2, 10_000, 1].iter().map(|n| part_key(&upload, *n)).collect();
        keys.sort();
        assert_eq!(keys, ["b/dir/k/u/00001", "b/dir/k/u/00002", "b/dir/k/u/00010", "b/dir/k/u/10000"]);
        let h = sillok_model::placement::placement_hash("b", "dir/k");
        assert_eq!(sillok_model::placement::placement_hash(PARTS, &keys[0]), h);
        assert_eq!(sillok_model::placement::placement_hash(UPLOADS, &record), h);
    }

    #[test]
    fn part_numbers_are_bounded() {
        assert!(check_part_number(0).is_err());
        assert!(check_part_number(1).is_ok());
        assert!(check_part_number(10_000).is_ok());
        assert!(check_part_number(10_001).is_err());
    }
}
