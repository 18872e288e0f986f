//! Multipart upload operations at the S3 edge: field checks and conversions
//! around `crate::multipart`, which owns the records and the parts.

use futures::StreamExt;
use s3s::dto::*;
use s3s::{S3Error, S3Request, s3_error};

use super::conditions::Preconditions;
use super::fields::{self, checksum_values, copy_source_preconditions, fill_checksums, timestamp_ms};
use super::{SillokS3, owner};
use crate::checksum::Algorithm;
use crate::error::GatewayError;
use crate::multipart::{self, CompletedPart, NewUpload, PartRequest};
use crate::quorum;
use sillok_model::manifest::Manifest;

fn part_number(n: i32) -> Result<u32, S3Error> {
    let n = u32::try_from(n).map_err(|_| GatewayError::InvalidArgument("part number must be positive".into()))?;
    multipart::check_part_number(n)?;
    Ok(n)
}

/// `bytes=first-last` of x-amz-copy-source-range, inside an object of `size` bytes.
fn copy_source_range(r: Option<&str>, size: u64) -> Result<std::ops::Range<u64>, S3Error> {
    let Some(r) = r else { return Ok(0..size) };
    let bad = || {
        s3_error!(
            InvalidArgument,
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy"
        )
    };
    let (a, b) = r.trim().strip_prefix("bytes=").and_then(|s| s.split_once('-')).ok_or_else(bad)?;
    let (first, last): (u64, u64) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
    if first > last || last >= size {
        return Err(s3_error!(InvalidArgument, "Range specified is not valid for source object of size: {size}"));
    }
    Ok(first..last + 1)
}

impl SillokS3 {
    async fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<multipart::Upload, GatewayError> {
        self.catalog.require_bucket(bucket).await?;
        multipart::get(&self.cluster, bucket, key, upload_id).await
    }

    pub(super) async fn do_create_multipart_upload(
        &self,
        input: CreateMultipartUploadInput,
    ) -> Result<CreateMultipartUploadOutput, S3Error> {
        self.catalog.require_bucket(&input.bucket).await?;
        let checksum = match &input.checksum_algorithm {
            Some(a) => Some(
                Algorithm::parse(a.as_str())
                    .ok_or_else(|| s3_error!(InvalidRequest, "unsupported checksum algorithm {}", a.as_str()))?,
            ),
            None => None,
        };
        // CRC64NVME exists only as a whole-object checksum; the other CRCs
        // default to COMPOSITE; SHA digests cannot be combined.
        let full_object = match (input.checksum_type.as_ref().map(|t| t.as_str().to_ascii_uppercase()), checksum) {
            (None, Some(Algorithm::Crc64Nvme)) => true,
            (None, _) => false,
            (Some(t), Some(a)) if t == ChecksumType::FULL_OBJECT => {
                if matches!(a, Algorithm::Sha1 | Algorithm::Sha256) {
                    return Err(s3_error!(
                        InvalidRequest,
                        "The FULL_OBJECT checksum type cannot be used with the {} checksum algorithm.",
                        a.name()
                    ));
                }
                true
            }
            (Some(t), Some(a)) if t == ChecksumType::COMPOSITE => {
                if a == Algorithm::Crc64Nvme {
                    return Err(s3_error!(
                        InvalidRequest,
                        "The COMPOSITE checksum type cannot be used with the CRC64NVME checksum algorithm."
                    ));
                }
                false
            }
            (Some(t), None) => {
                return Err(s3_error!(
                    InvalidRequest,
                    "The x-amz-checksum-type header ({t}) requires x-amz-checksum-algorithm."
                ));
            }
            (Some(t), Some(_)) => return Err(s3_error!(InvalidRequest, "Unknown checksum type {t}")),
        };
        let new = NewUpload {
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            content_type: input.content_type,
            headers: fields::kept_headers(
                input.cache_control,
                input.content_disposition,
                input.content_encoding,
                input.content_language,
                input.expires.as_ref(),
            ),
            user_metadata: fields::request_metadata(input.metadata)?,
            tags: super::tagging::from_header(input.tagging.as_deref())?,
            checksum,
            full_object,
        };
        let upload_id = multipart::create(&self.cluster, new).await?;
        Ok(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            checksum_algorithm: input.checksum_algorithm,
            checksum_type: checksum.map(|_| {
                ChecksumType::from_static(if full_object { ChecksumType::FULL_OBJECT } else { ChecksumType::COMPOSITE })
            }),
            ..Default::default()
        })
    }

    pub(super) async fn do_upload_part(&self, req: S3Request<UploadPartInput>) -> Result<UploadPartOutput, S3Error> {
        let checksum =
            fields::expected_checksum(&req, req.input.checksum_algorithm.as_ref(), checksum_values!(req.input))?;
        let content_length = fields::body_length(&req, req.input.content_length)?;
        let input = req.input;
        let number = part_number(input.part_number)?;
        let upload = self.upload(&input.bucket, &input.key, &input.upload_id).await?;
        let part = PartRequest {
            number,
            content_length,
            content_md5: input.content_md5.as_deref().map(fields::decode_md5).transpose()?,
            checksum,
        };
        let body = match input.body {
            Some(b) => b.boxed(),
            None => futures::stream::empty().boxed(),
        };
        let m = multipart::upload_part(&self.cluster, &self.write, &upload, part, body).await?;
        let mut out = UploadPartOutput { e_tag: Some(fields::etag(&m)), ..Default::default() };
        fill_checksums!(out, &m);
        Ok(out)
    }

    pub(super) async fn do_upload_part_copy(
        &self,
        mut input: UploadPartCopyInput,
    ) -> Result<UploadPartCopyOutput, S3Error> {
        let number = part_number(input.part_number)?;
        let upload = self.upload(&input.bucket, &input.key, &input.upload_id).await?;
        let src = self.copy_source(&input.copy_source, copy_source_preconditions!(input)).await?;
        let range = copy_source_range(input.copy_source_range.as_deref(), src.size)?;
        let part = PartRequest { number, content_length: range.end - range.start, content_md5: None, checksum: None };
        let body = self.source_body(&src, range);
        let m = multipart::upload_part(&self.cluster, &self.write, &upload, part, body).await?;
        let mut result = CopyPartResult {
            e_tag: Some(fields::etag(&m)),
            last_modified: Some(timestamp_ms(m.last_modified_ms)),
            ..Default::default()
        };
        fill_checksums!(result, &m);
        Ok(UploadPartCopyOutput { copy_part_result: Some(result), ..Default::default() })
    }

    pub(super) async fn do_complete_multipart_upload(
        &self,
        input: CompleteMultipartUploadInput,
    ) -> Result<CompleteMultipartUploadOutput, S3Error> {
        // A completion repeated (an SDK retrying a lost answer) or sent
        // several times at once gets S3's 200 with the same result whenever
        // this upload made the current object: when the upload is gone (the
        // first completion cleaned it up), when that object is already there,
        // and when this completion fails because the first one's cleanup
        // removed the parts it was reading.
        let already = async |e: GatewayError| -> Result<CompleteMultipartUploadOutput, S3Error> {
            match multipart::completed_by(&self.cluster, &input.bucket, &input.key, &input.upload_id).await? {
                Some(m) => Ok(Self::completed(&input.bucket, &input.key, &m)),
                None => Err(e.into()),
            }
        };
        let upload = match self.upload(&input.bucket, &input.key, &input.upload_id).await {
            Ok(upload) => upload,
            Err(e @ GatewayError::NoSuchUpload) => return already(e).await,
            Err(e) => return Err(e.into()),
        };
        let algorithm = upload.checksum_algorithm();
        // The whole object's checksum, which a FULL_OBJECT client sends here.
        let claimed_full = algorithm
            .and_then(|a| checksum_values!(input).into_iter().zip(Algorithm::ALL).find(|(_, x)| *x == a))
            .and_then(|(v, _)| v);
        let mut requested = Vec::new();
        for p in input.multipart_upload.and_then(|m| m.parts).unwrap_or_default() {
            let number = p.part_number.ok_or_else(|| s3_error!(MalformedXML, "a part has no PartNumber"))?;
            let etag = p.e_tag.as_ref().ok_or_else(|| s3_error!(MalformedXML, "a part has no ETag"))?;
            let values =
                [p.checksum_crc32, p.checksum_crc32c, p.checksum_crc64nvme, p.checksum_sha1, p.checksum_sha256];
            let checksum = match algorithm {
                Some(a) => values.into_iter().zip(Algorithm::ALL).find(|(_, x)| *x == a).and_then(|(v, _)| v),
                None => None,
            };
            requested.push(CompletedPart { number: part_number(number)?, etag: etag.value().to_string(), checksum });
        }
        if requested.is_empty() {
            return Err(s3_error!(MalformedXML, "The XML you provided did not list any parts"));
        }
        // The object this completion replaces, retired afterwards.
        let previous = quorum::read_manifest(&self.cluster, &input.bucket, &input.key).await?;
        if let Some(m) = previous.as_ref().filter(|m| multipart::made_by(m, &input.upload_id)) {
            return Ok(Self::completed(&input.bucket, &input.key, m));
        }
        if input.if_match.is_some() || input.if_none_match.is_some() {
            match previous.as_ref().filter(|m| m.is_object()) {
                Some(m) => Preconditions {
                    if_match: input.if_match.clone(),
                    if_none_match: input.if_none_match.clone(),
                    ..Default::default()
                }
                .check(&m.etag, m.last_modified_ms, false)?,
                None if input.if_match.is_some() => return Err(GatewayError::NoSuchKey.into()),
                None => {}
            }
        }
        let versioning = self.catalog.require_bucket(&input.bucket).await?.versioning;
        match multipart::complete(&self.cluster, &upload, &requested, claimed_full.as_deref(), versioning).await {
            Ok(m) => Ok(Self::completed(&input.bucket, &input.key, &m)),
            Err(e @ (GatewayError::InvalidPart(_) | GatewayError::NoSuchUpload)) => already(e).await,
            Err(e) => Err(e.into()),
        }
    }

    /// The answer to a completion that made (or had made) object `m`.
    fn completed(bucket: &str, key: &str, m: &Manifest) -> CompleteMultipartUploadOutput {
        let mut out = CompleteMultipartUploadOutput {
            bucket: Some(bucket.to_string()),
            key: Some(key.to_string()),
            e_tag: Some(fields::etag(m)),
            location: Some(format!("/{bucket}/{key}")),
            version_id: m.version_id.map(|id| id.to_s3()),
            ..Default::default()
        };
        fill_checksums!(out, m);
        out.checksum_type = fields::checksum_type(m);
        out
    }

    pub(super) async fn do_abort_multipart_upload(
        &self,
        input: AbortMultipartUploadInput,
    ) -> Result<AbortMultipartUploadOutput, S3Error> {
        let upload = self.upload(&input.bucket, &input.key, &input.upload_id).await?;
        multipart::abort(&self.cluster, &upload).await?;
        Ok(AbortMultipartUploadOutput::default())
    }

    pub(super) async fn do_list_parts(&self, input: ListPartsInput) -> Result<ListPartsOutput, S3Error> {
        let upload = self.upload(&input.bucket, &input.key, &input.upload_id).await?;
        let max = input.max_parts.unwrap_or(1000).clamp(0, 1000);
        let marker = u32::try_from(input.part_number_marker.unwrap_or(0).max(0)).unwrap_or(0);
        let (parts, truncated) = multipart::list_parts(&self.cluster, &upload, marker, max as usize).await?;
        let next = parts.last().map(|p| p.number as i32);
        let parts = parts
            .into_iter()
            .map(|p| Part {
                part_number: Some(p.number as i32),
                size: Some(p.size as i64),
                e_tag: Some(ETag::Strong(p.etag)),
                last_modified: Some(timestamp_ms(p.last_modified_ms)),
                ..Default::default()
            })
            .collect();
        Ok(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            max_parts: Some(max),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: if truncated { next } else { None },
            is_truncated: Some(truncated),
            parts: Some(parts),
            owner: Some(owner()),
            initiator: Some(Initiator { id: Some(super::OWNER_ID.into()), display_name: Some(super::OWNER_ID.into()) }),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            checksum_algorithm: upload.checksum_algorithm().map(|a| ChecksumAlgorithm::from(a.name().to_string())),
            ..Default::default()
        })
    }

    pub(super) async fn do_list_multipart_uploads(
        &self,
        input: ListMultipartUploadsInput,
    ) -> Result<ListMultipartUploadsOutput, S3Error> {
        self.catalog.require_bucket(&input.bucket).await?;
        let enc = fields::encoder(input.encoding_type.as_ref())?;
        let max = input.max_uploads.unwrap_or(1000).clamp(0, 1000) as usize;
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        let all = multipart::list_uploads(&self.cluster, Some(&input.bucket), &prefix).await?;
        // After the markers: keys after key-marker, or with the same key and an
        // upload id after upload-id-marker.
        let after = |key: &str, id: &str| match (&input.key_marker, &input.upload_id_marker) {
            (None, _) => true,
            (Some(km), None) => key > km.as_str(),
            (Some(km), Some(um)) => key > km.as_str() || (key == km.as_str() && id > um.as_str()),
        };
        let mut uploads = Vec::new();
        let mut common: Vec<String> = Vec::new();
        let mut truncated = false;
        let (mut next_key, mut next_id) = (None, None);
        for (_, u) in all.into_iter().filter(|(_, u)| after(&u.key, &u.upload_id)) {
            let group = delimiter.as_deref().and_then(|d| {
                let rest = &u.key[prefix.len()..];
                rest.find(d).map(|i| u.key[..prefix.len() + i + d.len()].to_string())
            });
            if let Some(g) = &group
                && common.last() == Some(g)
            {
                continue;
            }
            if uploads.len() + common.len() >= max {
                truncated = true;
                break;
            }
            match group {
                Some(g) => {
                    next_key = Some(g.clone());
                    next_id = None;
                    common.push(g);
                }
                None => {
                    next_key = Some(u.key.clone());
                    next_id = Some(u.upload_id.clone());
                    uploads.push(MultipartUpload {
                        key: Some(enc(&u.key)),
                        upload_id: Some(u.upload_id),
                        initiated: Some(timestamp_ms(u.initiated_ms)),
                        owner: Some(owner()),
                        initiator: Some(Initiator {
                            id: Some(super::OWNER_ID.into()),
                            display_name: Some(super::OWNER_ID.into()),
                        }),
                        storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                        ..Default::default()
                    });
                }
            }
        }
        Ok(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix.as_deref().map(enc),
            delimiter: input.delimiter.as_deref().map(enc),
            key_marker: input.key_marker.as_deref().map(enc),
            upload_id_marker: input.upload_id_marker,
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            next_key_marker: if truncated { next_key.as_deref().map(enc) } else { None },
            next_upload_id_marker: if truncated { next_id } else { None },
            uploads: Some(uploads),
            common_prefixes: (!common.is_empty())
                .then(|| common.iter().map(|p| CommonPrefix { prefix: Some(enc(p)) }).collect()),
            encoding_type: input.encoding_type,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_ranges() {
        assert_eq!(copy_source_range(None, 10).unwrap(), 0..10);
        assert_eq!(copy_source_range(Some("bytes=0-9"), 10).unwrap(), 0..10);
        assert_eq!(copy_source_range(Some("bytes=3-3"), 10).unwrap(), 3..4);
        for bad in ["bytes=0-10", "bytes=5-4", "bytes=-3", "0-3", "bytes=a-b", "bytes=3-"] {
            assert!(copy_source_range(Some(bad), 10).is_err(), "{bad}");
        }
    }
}
