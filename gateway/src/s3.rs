//! The S3 edge: `s3s` parses and authenticates each request; this module maps
//! the operations onto the cluster and converts every `GatewayError` into S3's
//! own error codes (see `error`). Nothing below this module knows about HTTP.
//!
//! Submodules: `fields` (request/response fields ↔ manifests), `conditions`
//! (If-* preconditions), `objects` (GET/HEAD/PUT/DELETE/copy and batch delete),
//! `uploads` (multipart), `listing` (ListObjects v1/v2 and ListMultipartUploads),
//! `cors` (Put/Get/DeleteBucketCors), `tagging` (object tags: their limits
//! and Put/Get/DeleteObjectTagging), `versioning` (Put/GetBucketVersioning,
//! ListObjectVersions), `lifecycle`
//! (Put/Get/DeleteBucketLifecycleConfiguration).

mod conditions;
mod cors;
pub(crate) mod fields;
mod lifecycle;
mod listing;
mod objects;
mod tagging;
mod uploads;
mod versioning;

use std::sync::Arc;

use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result};
use sillok_model::manifest::Manifest;

use crate::catalog::GatewayCatalog;
use crate::cluster::Cluster;
use crate::error::GatewayError;
use crate::listing::ListQuery;
use crate::metrics::Metrics;
use crate::read::ReadSettings;
use crate::write::WriteSettings;
use sillok_catalog::state::Versioning;

use fields::timestamp_ms;

/// The owner shown in listings (buckets have no per-user owner yet).
const OWNER_ID: &str = "sillok";

pub struct SillokS3 {
    pub cluster: Arc<Cluster>,
    pub write: WriteSettings,
    pub read: ReadSettings,
    /// Buckets and keys (and, through the cluster, the map).
    pub catalog: Arc<GatewayCatalog>,
    pub metrics: Arc<Metrics>,
    pub region: String,
}

fn owner() -> Owner {
    Owner { id: Some(OWNER_ID.into()), display_name: Some(OWNER_ID.into()) }
}

impl SillokS3 {
    /// The object a GET or HEAD serves (the version `version_id` names, or
    /// the current one), and the bucket's versioning.
    async fn object_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<(Manifest, Versioning), GatewayError> {
        let versioning = self.catalog.require_bucket(bucket).await?.versioning;
        let m = crate::versions::read_version(&self.cluster, versioning, bucket, key, version_id).await?;
        Ok((m, versioning))
    }

    fn counted<T>(&self, op: &'static str, r: Result<T, S3Error>) -> S3Result<S3Response<T>> {
        self.metrics.count_result(op, &r);
        r.map(S3Response::new)
    }
}

/// Runs an operation body and counts it under its S3 name.
macro_rules! op {
    ($self:ident, $name:literal, $body:expr) => {{
        let r: Result<_, S3Error> = async { $body }.await;
        $self.counted($name, r)
    }};
}

#[async_trait::async_trait]
impl S3 for SillokS3 {
    async fn list_buckets(&self, _req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        op!(self, "ListBuckets", {
            let list = self.catalog.list_buckets().await;
            let buckets = list
                .into_iter()
                .map(|b| Bucket {
                    name: Some(b.name),
                    creation_date: Some(timestamp_ms(b.created_ms)),
                    bucket_region: Some(self.region.clone()),
                })
                .collect();
            Ok(ListBucketsOutput { buckets: Some(buckets), owner: Some(owner()), ..Default::default() })
        })
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        op!(self, "CreateBucket", {
            let name = req.input.bucket;
            if let Some(c) = req.input.create_bucket_configuration.and_then(|c| c.location_constraint)
                && c.as_str() != self.region
                && !c.as_str().is_empty()
            {
                return Err(s3s::s3_error!(
                    InvalidLocationConstraint,
                    "The specified location-constraint is not valid (this endpoint's region is {})",
                    self.region
                ));
            }
            let owner = req.credentials.as_ref().map(|c| c.access_key.clone()).unwrap_or_default();
            self.catalog.create_bucket(&name, &owner).await?;
            Ok(CreateBucketOutput { location: Some(format!("/{name}")) })
        })
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        op!(self, "HeadBucket", {
            self.catalog.require_bucket(&req.input.bucket).await?;
            Ok(HeadBucketOutput { bucket_region: Some(self.region.clone()), ..Default::default() })
        })
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        op!(self, "GetBucketLocation", {
            self.catalog.require_bucket(&req.input.bucket).await?;
            Ok(GetBucketLocationOutput {
                location_constraint: Some(BucketLocationConstraint::from(self.region.clone())),
            })
        })
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        op!(self, "DeleteBucket", {
            let name = &req.input.bucket;
            self.catalog.require_bucket(name).await?;
            // Delete markers and kept versions count: S3 refuses to delete
            // a bucket that holds any version.
            let q = ListQuery { bucket: name.clone(), max_keys: 1, include_delete_markers: true, ..Default::default() };
            let versions = ListQuery {
                bucket: sillok_model::placement::VERSIONS.into(),
                prefix: format!("{name}/"),
                max_keys: 1,
                include_delete_markers: true,
                ..Default::default()
            };
            if !crate::listing::list(&self.cluster, &q).await?.entries.is_empty()
                || !crate::listing::list(&self.cluster, &versions).await?.entries.is_empty()
            {
                return Err(GatewayError::BucketNotEmpty.into());
            }
            self.catalog.delete_bucket(name).await?;
            Ok(DeleteBucketOutput {})
        })
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        op!(self, "PutObject", self.do_put_object(req).await)
    }

    /// Browser form uploads: s3s checks the policy and signature and buffers
    /// the file (at most `--post-max-size`); the object goes through the PUT
    /// path. The ETag is quoted as S3 sends it, and also sent as a header.
    async fn post_object(&self, req: S3Request<PostObjectInput>) -> S3Result<S3Response<PostObjectOutput>> {
        let r = async {
            let put = self.do_put_object(req.map_input(put_input_of_post)).await?;
            let etag = put.e_tag.as_ref().map(|e| format!("\"{}\"", e.value())).unwrap_or_default();
            let mut headers = http::HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_str(&etag) {
                headers.insert(http::header::ETAG, v);
            }
            let out = PostObjectOutput { e_tag: Some(ETag::Strong(etag)), size: put.size, ..Default::default() };
            Ok::<_, S3Error>(S3Response::with_headers(out, headers))
        }
        .await;
        self.metrics.count_result("PostObject", &r);
        r
    }

    async fn put_bucket_cors(&self, req: S3Request<PutBucketCorsInput>) -> S3Result<S3Response<PutBucketCorsOutput>> {
        op!(self, "PutBucketCors", self.do_put_bucket_cors(req).await)
    }

    async fn get_bucket_cors(&self, req: S3Request<GetBucketCorsInput>) -> S3Result<S3Response<GetBucketCorsOutput>> {
        op!(self, "GetBucketCors", self.do_get_bucket_cors(req.input).await)
    }

    async fn delete_bucket_cors(
        &self,
        req: S3Request<DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
        op!(self, "DeleteBucketCors", self.do_delete_bucket_cors(req.input).await)
    }

    async fn put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
        op!(self, "PutBucketLifecycleConfiguration", self.do_put_bucket_lifecycle(req).await)
    }

    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        op!(self, "GetBucketLifecycleConfiguration", self.do_get_bucket_lifecycle(req.input).await)
    }

    async fn delete_bucket_lifecycle(
        &self,
        req: S3Request<DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
        op!(self, "DeleteBucketLifecycle", self.do_delete_bucket_lifecycle(req.input).await)
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        op!(self, "GetBucketVersioning", self.do_get_bucket_versioning(req.input).await)
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        op!(self, "PutBucketVersioning", self.do_put_bucket_versioning(req.input).await)
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        op!(self, "ListObjectVersions", self.do_list_object_versions(req.input).await)
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        op!(self, "GetObject", self.do_get_object(req.input).await)
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let r = self.do_head_object(req.input).await;
        self.metrics.count_result("HeadObject", &r);
        let (out, tag_count) = r?;
        let mut resp = S3Response::new(out);
        // s3s 0.14.1's HeadObjectOutput has no tag count; S3 sends it on HEAD too.
        if let Some(n) = tag_count {
            resp.headers.insert("x-amz-tagging-count", http::HeaderValue::from(n));
        }
        Ok(resp)
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        op!(self, "DeleteObject", {
            let i = &req.input;
            let d = self.delete_key(&i.bucket, &i.key, i.version_id.as_deref()).await?;
            // S3 answers 204 whether or not the key existed.
            Ok(DeleteObjectOutput {
                version_id: d.version_id,
                delete_marker: d.delete_marker.then_some(true),
                ..Default::default()
            })
        })
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        op!(self, "DeleteObjects", self.do_delete_objects(req.input).await)
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        op!(self, "PutObjectTagging", self.do_put_object_tagging(req.input).await)
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        op!(self, "GetObjectTagging", self.do_get_object_tagging(req.input).await)
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        op!(self, "DeleteObjectTagging", self.do_delete_object_tagging(req.input).await)
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        op!(self, "CopyObject", self.do_copy_object(req.input).await)
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        op!(self, "CreateMultipartUpload", self.do_create_multipart_upload(req.input).await)
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        op!(self, "UploadPart", self.do_upload_part(req).await)
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        op!(self, "UploadPartCopy", self.do_upload_part_copy(req.input).await)
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        op!(self, "CompleteMultipartUpload", self.do_complete_multipart_upload(req.input).await)
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        op!(self, "AbortMultipartUpload", self.do_abort_multipart_upload(req.input).await)
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        op!(self, "ListParts", self.do_list_parts(req.input).await)
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        op!(self, "ListMultipartUploads", self.do_list_multipart_uploads(req.input).await)
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        op!(self, "ListObjectsV2", self.do_list_objects_v2(req.input).await)
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        op!(self, "ListObjects", self.do_list_objects(req.input).await)
    }
}

/// The PUT that a form upload amounts to (the fields Sillok uses).
fn put_input_of_post(p: PostObjectInput) -> PutObjectInput {
    PutObjectInput {
        bucket: p.bucket,
        key: p.key,
        body: p.body,
        content_length: p.content_length,
        content_md5: p.content_md5,
        content_type: p.content_type,
        cache_control: p.cache_control,
        content_disposition: p.content_disposition,
        content_encoding: p.content_encoding,
        content_language: p.content_language,
        expires: p.expires,
        metadata: p.metadata,
        checksum_algorithm: p.checksum_algorithm,
        checksum_crc32: p.checksum_crc32,
        checksum_crc32c: p.checksum_crc32c,
        checksum_crc64nvme: p.checksum_crc64nvme,
        checksum_sha1: p.checksum_sha1,
        checksum_sha256: p.checksum_sha256,
        if_match: p.if_match,
        if_none_match: p.if_none_match,
        ..Default::default()
    }
}

#[allow(dead_code)]
fn not_implemented(op: &str) -> S3Error {
    S3Error::with_message(S3ErrorCode::NotImplemented, format!("{op} is not supported yet"))
}
