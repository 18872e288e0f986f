//! Single-object operations: PUT, GET, HEAD, DELETE, DeleteObjects and
//! CopyObject. Copies stream the source through the ordinary PUT path (read,
//! re-encode), so a copy is as durable as a PUT and memory stays bounded.

use futures::StreamExt;
use s3s::dto::*;
use s3s::{S3Error, S3Request, s3_error};
use sillok_model::manifest::Manifest;

use super::SillokS3;
use super::conditions::{self, Preconditions};
use super::fields::{
    self, checksum_values, copy_source_preconditions, describe_object, fill_checksums, preconditions, timestamp_ms,
};
use super::tagging;
use crate::checksum::{self, Algorithm};
use crate::error::GatewayError;
use crate::quorum;
use crate::read::{self, ByteStream};
use crate::versions;
use crate::write::{self, PutRequest};

/// S3's limit for a single CopyObject; larger objects are copied in parts.
const MAX_COPY_SIZE: u64 = 5 << 30;

/// S3's limit on keys per DeleteObjects request.
const MAX_DELETE_KEYS: usize = 1000;

impl SillokS3 {
    pub(super) async fn do_put_object(&self, req: S3Request<PutObjectInput>) -> Result<PutObjectOutput, S3Error> {
        let checksum =
            fields::expected_checksum(&req, req.input.checksum_algorithm.as_ref(), checksum_values!(req.input))?;
        let len = fields::body_length(&req, req.input.content_length)?;
        let input = req.input;
        let versioning = self.catalog.require_bucket(&input.bucket).await?.versioning;
        let content_md5 = input.content_md5.as_deref().map(fields::decode_md5).transpose()?;
        let user_metadata = fields::request_metadata(input.metadata)?;
        let tags = tagging::from_header(input.tagging.as_deref())?;
        // Conditional writes (If-None-Match: * / If-Match): checked before the
        // body is read. Best effort: two racing conditional PUTs can both pass.
        if input.if_match.is_some() || input.if_none_match.is_some() {
            let current = quorum::read_manifest(&self.cluster, &input.bucket, &input.key).await?;
            match current.filter(|m| m.is_object()) {
                Some(m) => {
                    let p = Preconditions {
                        if_match: input.if_match.clone(),
                        if_none_match: input.if_none_match.clone(),
                        ..Default::default()
                    };
                    p.check(&m.etag, m.last_modified_ms, false)?;
                }
                None if input.if_match.is_some() => return Err(GatewayError::NoSuchKey.into()),
                None => {}
            }
        }
        let put = PutRequest {
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            content_length: len,
            content_md5,
            content_type: input.content_type.clone(),
            headers: fields::kept_headers(
                input.cache_control,
                input.content_disposition,
                input.content_encoding,
                input.content_language,
                input.expires.as_ref(),
            ),
            user_metadata,
            tags,
            checksum,
            versioning,
        };
        let body = match input.body {
            Some(b) => b.boxed(),
            None => futures::stream::empty().boxed(),
        };
        let m = self.store(put, body).await?;
        let mut out = PutObjectOutput {
            e_tag: Some(fields::etag(&m)),
            size: Some(m.size as i64),
            version_id: versions::shown_id(&m, versioning),
            ..Default::default()
        };
        fill_checksums!(out, &m);
        out.checksum_type = fields::checksum_type(&m);
        Ok(out)
    }

    /// Writes an object through the PUT path. The version it replaces is
    /// left to the nodes' collector, like every superseded shard.
    async fn store<S, E>(&self, put: PutRequest, body: S) -> Result<Manifest, GatewayError>
    where
        S: futures::Stream<Item = Result<bytes::Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let m = write::put_object(&self.cluster, &self.write, put, body).await?;
        self.metrics.bytes_in.inc_by(m.size);
        Ok(m)
    }

    pub(super) async fn do_get_object(&self, mut input: GetObjectInput) -> Result<GetObjectOutput, S3Error> {
        let (m, versioning) = self.object_version(&input.bucket, &input.key, input.version_id.as_deref()).await?;
        conditions::check_read(&preconditions!(input), &m)?;
        let part = part_of(&m, input.part_number, input.range.is_some())?;
        let (range, content_range) = match &input.range {
            None if part.is_some() => part.as_ref().map(|p| (p.range.clone(), Some(p.content_range(m.size)))).unwrap(),
            None => (0..m.size, None),
            Some(r) => fields::byte_range(r, m.size).map(|(rg, cr)| (rg, Some(cr)))?,
        };
        let len = range.end - range.start;
        let metrics = self.metrics.clone();
        let body = read::read_range(&self.cluster, self.read, &m, range).inspect(move |c| {
            if let Ok(b) = c {
                metrics.bytes_out.inc_by(b.len() as u64);
            }
        });
        let mut out = GetObjectOutput {
            body: Some(StreamingBlob::wrap(body)),
            content_length: Some(len as i64),
            content_range,
            parts_count: part.and_then(|p| p.count),
            tag_count: tagging::count(&m),
            version_id: versions::shown_id(&m, versioning),
            ..Default::default()
        };
        describe_object!(out, input, &m);
        Ok(out)
    }

    /// The HEAD answer, and the object's tag count (`x-amz-tagging-count`,
    /// which s3s's HEAD output has no field for).
    pub(super) async fn do_head_object(
        &self,
        mut input: HeadObjectInput,
    ) -> Result<(HeadObjectOutput, Option<i32>), S3Error> {
        let (m, versioning) = self.object_version(&input.bucket, &input.key, input.version_id.as_deref()).await?;
        conditions::check_read(&preconditions!(input), &m)?;
        let mut out = HeadObjectOutput {
            content_length: Some(m.size as i64),
            version_id: versions::shown_id(&m, versioning),
            ..Default::default()
        };
        if let Some(p) = part_of(&m, input.part_number, input.range.is_some())? {
            out.content_length = Some((p.range.end - p.range.start) as i64);
            out.content_range = Some(p.content_range(m.size));
            out.parts_count = p.count;
        } else if let Some(r) = &input.range {
            // As GET would answer: a 206 with Content-Range (`server::partial_head` sets the status).
            let (rg, cr) = fields::byte_range(r, m.size)?;
            out.content_length = Some((rg.end - rg.start) as i64);
            out.content_range = Some(cr);
        }
        describe_object!(out, input, &m);
        Ok((out, tagging::count(&m)))
    }

    /// Deletes a key's current object (`versions::delete_current`), or with
    /// a version id that version (`versions::delete_version`).
    pub(super) async fn delete_key(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<versions::Deleted, GatewayError> {
        let versioning = self.catalog.require_bucket(bucket).await?.versioning;
        match version_id {
            Some(v) => versions::delete_version(&self.cluster, bucket, key, v).await,
            None => versions::delete_current(&self.cluster, versioning, bucket, key).await,
        }
    }

    pub(super) async fn do_delete_objects(&self, input: DeleteObjectsInput) -> Result<DeleteObjectsOutput, S3Error> {
        self.catalog.require_bucket(&input.bucket).await?;
        let objects = input.delete.objects;
        if objects.is_empty() || objects.len() > MAX_DELETE_KEYS {
            return Err(s3_error!(
                MalformedXML,
                "a DeleteObjects request names between 1 and {MAX_DELETE_KEYS} keys (got {})",
                objects.len()
            ));
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        let bucket = &input.bucket;
        let results: Vec<(ObjectIdentifier, Result<versions::Deleted, GatewayError>)> =
            futures::stream::iter(objects.into_iter().map(|o| async move {
                let r = self.delete_key(bucket, &o.key, o.version_id.as_deref()).await;
                (o, r)
            }))
            .buffered(16)
            .collect()
            .await;
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for (o, r) in results {
            let key = o.key;
            match r {
                Ok(d) => {
                    if !quiet {
                        let marker_id = if o.version_id.is_none() { d.version_id.clone() } else { None };
                        deleted.push(DeletedObject {
                            key: Some(key),
                            version_id: o.version_id,
                            delete_marker: d.delete_marker.then_some(true),
                            delete_marker_version_id: marker_id.filter(|_| d.delete_marker),
                        });
                    }
                }
                Err(e) => {
                    let e = S3Error::from(e);
                    errors.push(Error {
                        code: Some(e.code().as_str().to_string()),
                        key: Some(key),
                        message: e.message().map(str::to_string),
                        version_id: o.version_id,
                    });
                }
            }
        }
        Ok(DeleteObjectsOutput {
            deleted: (!deleted.is_empty()).then_some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        })
    }

    /// The object a copy reads: checks the source bucket, key, version and
    /// the `x-amz-copy-source-if-*` conditions.
    pub(super) async fn copy_source(
        &self,
        source: &CopySource,
        conditions: Preconditions,
    ) -> Result<Manifest, S3Error> {
        let CopySource::Bucket { bucket, key, version_id } = source else {
            return Err(s3_error!(InvalidArgument, "copy sources must be bucket/key"));
        };
        let (m, _) = self.object_version(bucket, key, version_id.as_deref()).await?;
        conditions.check(&m.etag, m.last_modified_ms, false)?;
        Ok(m)
    }

    /// The bytes `range` of a copy source, as a body for the PUT path.
    pub(super) fn source_body(&self, m: &Manifest, range: std::ops::Range<u64>) -> ByteStream {
        read::read_range(&self.cluster, self.read, m, range)
    }

    pub(super) async fn do_copy_object(&self, mut input: CopyObjectInput) -> Result<CopyObjectOutput, S3Error> {
        let versioning = self.catalog.require_bucket(&input.bucket).await?.versioning;
        let src = self.copy_source(&input.copy_source, copy_source_preconditions!(input)).await?;
        if src.size > MAX_COPY_SIZE {
            return Err(s3_error!(
                InvalidRequest,
                "The specified copy source is larger than the maximum allowable size for a copy source: {MAX_COPY_SIZE}; use UploadPartCopy"
            ));
        }
        let replace = match input.metadata_directive.as_ref().map(|d| d.as_str()) {
            None => false,
            Some(d) if d.eq_ignore_ascii_case(MetadataDirective::COPY) => false,
            Some(d) if d.eq_ignore_ascii_case(MetadataDirective::REPLACE) => true,
            Some(d) => return Err(s3_error!(InvalidArgument, "Unknown metadata directive: {d}")),
        };
        if !replace && src.bucket == input.bucket && src.key == input.key {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
            ));
        }
        let (content_type, headers, user_metadata) = if replace {
            (
                input.content_type,
                fields::kept_headers(
                    input.cache_control,
                    input.content_disposition,
                    input.content_encoding,
                    input.content_language,
                    input.expires.as_ref(),
                ),
                fields::request_metadata(input.metadata)?,
            )
        } else {
            (src.content_type.clone(), fields::standard_headers(&src), src.user_metadata.clone())
        };
        // Tags: the source's (COPY, the default) or those of `x-amz-tagging` (REPLACE).
        let tags = match input.tagging_directive.as_ref().map(|d| d.as_str()) {
            None => src.tags.clone(),
            Some(d) if d.eq_ignore_ascii_case(TaggingDirective::COPY) => src.tags.clone(),
            Some(d) if d.eq_ignore_ascii_case(TaggingDirective::REPLACE) => {
                tagging::from_header(input.tagging.as_deref())?
            }
            Some(d) => return Err(s3_error!(InvalidArgument, "Unknown tagging directive: {d}")),
        };
        // The copy gets a checksum of the algorithm asked for, else of the source's.
        let algorithm = match &input.checksum_algorithm {
            Some(a) => Some(
                Algorithm::parse(a.as_str())
                    .ok_or_else(|| s3_error!(InvalidRequest, "unsupported checksum algorithm {}", a.as_str()))?,
            ),
            None => Algorithm::ALL.into_iter().find(|a| src.headers.contains_key(a.header())),
        };
        let put = PutRequest {
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            content_length: src.size,
            content_md5: None,
            content_type,
            headers,
            user_metadata,
            tags,
            checksum: algorithm.map(|algorithm| checksum::Expected { algorithm, value: None, trailer: None }),
            versioning,
        };
        let body = self.source_body(&src, 0..src.size);
        let m = self.store(put, body).await?;
        let mut result = CopyObjectResult {
            e_tag: Some(fields::etag(&m)),
            last_modified: Some(timestamp_ms(m.last_modified_ms)),
            ..Default::default()
        };
        fill_checksums!(result, &m);
        let source_versioning = self.catalog.require_bucket(&src.bucket).await?.versioning;
        Ok(CopyObjectOutput {
            copy_object_result: Some(result),
            version_id: versions::shown_id(&m, versioning),
            copy_source_version_id: versions::shown_id(&src, source_versioning),
            ..Default::default()
        })
    }
}

/// The part a `partNumber` GET or HEAD asks for.
struct PartRange {
    range: std::ops::Range<u64>,
    /// The object's part count (`x-amz-mp-parts-count`): multipart objects only.
    count: Option<i32>,
}

impl PartRange {
    fn content_range(&self, size: u64) -> String {
        if self.range.is_empty() {
            return format!("bytes */{size}");
        }
        format!("bytes {}-{}/{}", self.range.start, self.range.end - 1, size)
    }
}

/// Resolves `partNumber` as S3 does: the bytes of that part of a multipart
/// object (parts in the order they were completed), or, for any other
/// object, part 1 as the whole object; any other number is 416
/// `InvalidPartNumber`, and `partNumber` with `Range` is 400.
fn part_of(m: &Manifest, part_number: Option<i32>, has_range: bool) -> Result<Option<PartRange>, GatewayError> {
    let Some(n) = part_number else { return Ok(None) };
    if has_range {
        return Err(GatewayError::InvalidRequest(
            "Cannot specify both Range header and partNumber query parameter".into(),
        ));
    }
    if !(1..=10_000).contains(&n) {
        return Err(GatewayError::InvalidArgument(
            "Part number must be an integer between 1 and 10000, inclusive".into(),
        ));
    }
    match &m.body {
        sillok_model::manifest::Body::Multipart { parts } => {
            let mut start = 0u64;
            for p in parts {
                if p.number == n as u32 {
                    return Ok(Some(PartRange { range: start..start + p.size, count: Some(parts.len() as i32) }));
                }
                start += p.size;
            }
            Err(GatewayError::InvalidPartNumber)
        }
        _ if n == 1 => Ok(Some(PartRange { range: 0..m.size, count: None })),
        _ => Err(GatewayError::InvalidPartNumber),
    }
}
