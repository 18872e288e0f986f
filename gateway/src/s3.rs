//! The S3 edge: `s3s` parses and authenticates each request; this module maps
//! the operations onto the cluster and converts every `GatewayError` into S3's
//! own error codes (see `error`). Nothing below this module knows about HTTP.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use sillok_storage_node::manifest::Manifest;

use crate::buckets::{self, BucketCache};
use crate::cluster::Cluster;
use crate::error::GatewayError;
use crate::listing::{self, ListQuery};
use crate::metrics::Metrics;
use crate::quorum;
use crate::read::{self, ReadSettings};
use crate::write::{self, PutRequest, WriteSettings};

/// How long the shards of an overwritten or deleted version stay, so that
/// reads already streaming it can finish.
const RETIRE_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

pub struct SillokS3 {
    pub cluster: Arc<Cluster>,
    pub write: WriteSettings,
    pub read: ReadSettings,
    pub buckets: BucketCache,
    pub metrics: Arc<Metrics>,
    pub region: String,
}

fn timestamp_ms(ms: i64) -> Timestamp {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    Timestamp::from(t)
}

fn etag(m: &Manifest) -> ETag {
    ETag::Strong(m.etag.clone())
}

/// Headers S3 keeps with an object and returns on GET/HEAD.
const KEPT_HEADERS: [&str; 5] =
    ["cache-control", "content-disposition", "content-encoding", "content-language", "expires"];

fn kept_headers(
    cache_control: Option<String>,
    content_disposition: Option<String>,
    content_encoding: Option<String>,
    content_language: Option<String>,
    expires: Option<&Timestamp>,
) -> BTreeMap<String, String> {
    let mut h = BTreeMap::new();
    let expires = expires.and_then(|t| {
        let mut buf = Vec::new();
        t.format(TimestampFormat::HttpDate, &mut buf).ok()?;
        String::from_utf8(buf).ok()
    });
    for (name, v) in
        KEPT_HEADERS.iter().zip([cache_control, content_disposition, content_encoding, content_language, expires])
    {
        if let Some(v) = v {
            h.insert((*name).to_string(), v);
        }
    }
    h
}

fn header(m: &Manifest, name: &str) -> Option<String> {
    m.headers.get(name).cloned()
}

fn parse_expires(m: &Manifest) -> Option<Timestamp> {
    Timestamp::parse(TimestampFormat::HttpDate, m.headers.get("expires")?).ok()
}

fn user_metadata(m: &Manifest) -> Option<Metadata> {
    (!m.user_metadata.is_empty()).then(|| m.user_metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn decode_md5(b64: &str) -> Result<[u8; 16], S3Error> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| s3_error!(InvalidDigest, "Content-MD5 is not valid base64"))?;
    bytes.try_into().map_err(|_| s3_error!(InvalidDigest, "Content-MD5 must be 16 bytes"))
}

impl SillokS3 {
    async fn live_manifest(&self, bucket: &str, key: &str) -> Result<Manifest, GatewayError> {
        buckets::require(&self.cluster, &self.buckets, bucket).await?;
        match quorum::read_manifest(&self.cluster, bucket, key).await? {
            Some(m) if !m.is_deleted() => Ok(m),
            _ => Err(GatewayError::NoSuchKey),
        }
    }

    fn counted<T>(&self, op: &'static str, r: Result<T, S3Error>) -> S3Result<T> {
        self.metrics.count(op, r.is_ok());
        r
    }
}

#[async_trait::async_trait]
impl S3 for SillokS3 {
    async fn list_buckets(&self, _req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let r = async {
            let list = buckets::list_all(&self.cluster).await?;
            let buckets = list
                .into_iter()
                .map(|b| Bucket {
                    name: Some(b.name),
                    creation_date: Some(timestamp_ms(b.created_ms)),
                    ..Default::default()
                })
                .collect();
            Ok::<_, GatewayError>(ListBucketsOutput { buckets: Some(buckets), ..Default::default() })
        }
        .await;
        self.counted("ListBuckets", r.map(S3Response::new).map_err(S3Error::from))
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        let name = req.input.bucket;
        let r = buckets::create(&self.cluster, &self.buckets, &name).await;
        let out = CreateBucketOutput { location: Some(format!("/{name}")) };
        self.counted("CreateBucket", r.map(|_| S3Response::new(out)).map_err(S3Error::from))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        let r = buckets::require(&self.cluster, &self.buckets, &req.input.bucket).await;
        let out = HeadBucketOutput { bucket_region: Some(self.region.clone()), ..Default::default() };
        self.counted("HeadBucket", r.map(|_| S3Response::new(out)).map_err(S3Error::from))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let r = buckets::require(&self.cluster, &self.buckets, &req.input.bucket).await;
        let out =
            GetBucketLocationOutput { location_constraint: Some(BucketLocationConstraint::from(self.region.clone())) };
        self.counted("GetBucketLocation", r.map(|_| S3Response::new(out)).map_err(S3Error::from))
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        let r = buckets::delete(&self.cluster, &self.buckets, &req.input.bucket).await;
        self.counted("DeleteBucket", r.map(|_| S3Response::new(DeleteBucketOutput {})).map_err(S3Error::from))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        let r = async {
            buckets::require(&self.cluster, &self.buckets, &input.bucket).await?;
            let len = input.content_length.ok_or(GatewayError::MissingContentLength)?;
            let len =
                u64::try_from(len).map_err(|_| GatewayError::InvalidArgument("negative Content-Length".into()))?;
            let content_md5 = match &input.content_md5 {
                Some(s) => Some(decode_md5(s)?),
                None => None,
            };
            let put = PutRequest {
                bucket: input.bucket.clone(),
                key: input.key.clone(),
                content_length: len,
                content_md5,
                content_type: input.content_type.clone(),
                headers: kept_headers(
                    input.cache_control,
                    input.content_disposition,
                    input.content_encoding,
                    input.content_language,
                    input.expires.as_ref(),
                ),
                user_metadata: input.metadata.unwrap_or_default().into_iter().collect(),
            };
            let body = match input.body {
                Some(b) => b.boxed(),
                None => futures::stream::empty().boxed(),
            };
            // The version this PUT replaces (its shards are retired afterwards),
            // looked up while the body streams rather than before it.
            let previous = {
                let (cluster, bucket, key) = (self.cluster.clone(), put.bucket.clone(), put.key.clone());
                tokio::spawn(async move { quorum::read_manifest(&cluster, &bucket, &key).await.ok().flatten() })
            };
            let m = write::put_object(&self.cluster, &self.write, put, body).await?;
            let previous = previous.await.ok().flatten();
            self.metrics.bytes_in.fetch_add(m.size, Ordering::Relaxed);
            if let Some(old) = previous.filter(|o| o.version < m.version) {
                write::retire_later(&self.cluster, old, RETIRE_GRACE);
            }
            Ok::<_, S3Error>(PutObjectOutput { e_tag: Some(etag(&m)), ..Default::default() })
        }
        .await;
        self.counted("PutObject", r.map(S3Response::new))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let r = async {
            let m = self.live_manifest(&input.bucket, &input.key).await?;
            let (range, content_range) = match &input.range {
                None => (0..m.size, None),
                Some(r) => match r.check(m.size) {
                    Ok(rg) => {
                        let cr = format!("bytes {}-{}/{}", rg.start, rg.end - 1, m.size);
                        (rg, Some(cr))
                    }
                    Err(_) => return Err(GatewayError::InvalidRange.into()),
                },
            };
            let len = range.end - range.start;
            let metrics = self.metrics.clone();
            let body = read::read_range(&self.cluster, self.read, &m, range).inspect(move |c| {
                if let Ok(b) = c {
                    metrics.bytes_out.fetch_add(b.len() as u64, Ordering::Relaxed);
                }
            });
            Ok::<_, S3Error>(GetObjectOutput {
                body: Some(StreamingBlob::wrap(body)),
                content_length: Some(len as i64),
                content_range,
                accept_ranges: Some("bytes".into()),
                e_tag: Some(etag(&m)),
                last_modified: Some(timestamp_ms(m.last_modified_ms)),
                content_type: input.response_content_type.or_else(|| m.content_type.clone()),
                cache_control: input.response_cache_control.or_else(|| header(&m, "cache-control")),
                content_disposition: input.response_content_disposition.or_else(|| header(&m, "content-disposition")),
                content_encoding: input.response_content_encoding.or_else(|| header(&m, "content-encoding")),
                content_language: input.response_content_language.or_else(|| header(&m, "content-language")),
                expires: input.response_expires.or_else(|| parse_expires(&m)),
                metadata: user_metadata(&m),
                ..Default::default()
            })
        }
        .await;
        self.counted("GetObject", r.map(S3Response::new))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let r = async {
            let m = self.live_manifest(&input.bucket, &input.key).await?;
            Ok::<_, S3Error>(HeadObjectOutput {
                content_length: Some(m.size as i64),
                accept_ranges: Some("bytes".into()),
                e_tag: Some(etag(&m)),
                last_modified: Some(timestamp_ms(m.last_modified_ms)),
                content_type: m.content_type.clone(),
                cache_control: header(&m, "cache-control"),
                content_disposition: header(&m, "content-disposition"),
                content_encoding: header(&m, "content-encoding"),
                content_language: header(&m, "content-language"),
                expires: parse_expires(&m),
                metadata: user_metadata(&m),
                ..Default::default()
            })
        }
        .await;
        self.counted("HeadObject", r.map(S3Response::new))
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        let r = async {
            buckets::require(&self.cluster, &self.buckets, &input.bucket).await?;
            let previous = quorum::read_manifest(&self.cluster, &input.bucket, &input.key).await?;
            if let Some(old) = previous.filter(|m| !m.is_deleted()) {
                let tomb = Manifest::tombstone(&input.bucket, &input.key);
                quorum::write_manifest(&self.cluster, &tomb).await?;
                write::retire_later(&self.cluster, old, RETIRE_GRACE);
            }
            // S3 answers 204 whether or not the key existed.
            Ok::<_, GatewayError>(DeleteObjectOutput::default())
        }
        .await;
        self.counted("DeleteObject", r.map(S3Response::new).map_err(S3Error::from))
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let r = async {
            buckets::require(&self.cluster, &self.buckets, &input.bucket).await?;
            let max_keys = input.max_keys.unwrap_or(1000);
            if max_keys < 0 {
                return Err(s3_error!(InvalidArgument, "max-keys must not be negative"));
            }
            let after = match &input.continuation_token {
                Some(t) => {
                    Some(decode_token(t).ok_or_else(|| s3_error!(InvalidArgument, "invalid continuation token"))?)
                }
                None => input.start_after.clone(),
            };
            let q = ListQuery {
                bucket: input.bucket.clone(),
                prefix: input.prefix.clone().unwrap_or_default(),
                delimiter: input.delimiter.clone(),
                start_after: after,
                max_keys: (max_keys as usize).min(1000),
            };
            let page = listing::list(&self.cluster, &q).await?;
            let (contents, common) = listing_xml(&page);
            Ok(ListObjectsV2Output {
                name: Some(input.bucket),
                prefix: input.prefix,
                delimiter: input.delimiter,
                max_keys: Some(max_keys),
                key_count: Some((contents.len() + common.len()) as i32),
                is_truncated: Some(page.truncated),
                next_continuation_token: page.truncated.then(|| page.next_after.as_deref().map(encode_token)).flatten(),
                continuation_token: input.continuation_token,
                start_after: input.start_after,
                contents: Some(contents),
                common_prefixes: (!common.is_empty()).then_some(common),
                encoding_type: input.encoding_type,
                ..Default::default()
            })
        }
        .await;
        self.counted("ListObjectsV2", r.map(S3Response::new))
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let r = async {
            buckets::require(&self.cluster, &self.buckets, &input.bucket).await?;
            let max_keys = input.max_keys.unwrap_or(1000).clamp(0, 1000);
            let q = ListQuery {
                bucket: input.bucket.clone(),
                prefix: input.prefix.clone().unwrap_or_default(),
                delimiter: input.delimiter.clone(),
                // A marker that is a common prefix continues after everything under it.
                start_after: input.marker.clone().map(|mk| match &input.delimiter {
                    Some(d) if !d.is_empty() && mk.ends_with(d.as_str()) => format!("{mk}\u{10FFFF}"),
                    _ => mk,
                }),
                max_keys: max_keys as usize,
            };
            let page = listing::list(&self.cluster, &q).await?;
            let (contents, common) = listing_xml(&page);
            let next_marker = if page.truncated {
                // v1 markers are plain keys; a common prefix continues after itself.
                page.next_after.map(|a| a.trim_end_matches('\u{10FFFF}').to_string())
            } else {
                None
            };
            Ok::<_, S3Error>(ListObjectsOutput {
                name: Some(input.bucket),
                prefix: input.prefix,
                delimiter: input.delimiter,
                marker: input.marker,
                max_keys: Some(max_keys),
                is_truncated: Some(page.truncated),
                next_marker,
                contents: Some(contents),
                common_prefixes: (!common.is_empty()).then_some(common),
                encoding_type: input.encoding_type,
                ..Default::default()
            })
        }
        .await;
        self.counted("ListObjects", r.map(S3Response::new))
    }
}

/// The `Contents` and `CommonPrefixes` of a listing page (v1 and v2 alike).
fn listing_xml(page: &listing::ListResult) -> (Vec<Object>, Vec<CommonPrefix>) {
    let contents = page
        .entries
        .iter()
        .map(|e| Object {
            key: Some(e.key.clone()),
            size: Some(e.size as i64),
            e_tag: Some(ETag::Strong(e.etag.clone())),
            last_modified: Some(timestamp_ms(e.last_modified_ms)),
            storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
            ..Default::default()
        })
        .collect();
    let common = page.common_prefixes.iter().map(|p| CommonPrefix { prefix: Some(p.clone()) }).collect();
    (contents, common)
}

/// Continuation tokens are the hex of where the next page starts (opaque to clients).
fn encode_token(after: &str) -> String {
    hex::encode(after.as_bytes())
}

fn decode_token(t: &str) -> Option<String> {
    String::from_utf8(hex::decode(t).ok()?).ok()
}

#[allow(dead_code)]
fn not_implemented(op: &str) -> S3Error {
    S3Error::with_message(S3ErrorCode::NotImplemented, format!("{op} is not supported yet"))
}
