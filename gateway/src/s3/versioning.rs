//! Bucket versioning at the S3 edge: Put/GetBucketVersioning (the state is
//! the catalog's) and ListObjectVersions (around `crate::versions`).

use s3s::dto::*;
use s3s::{S3Error, s3_error};
use sillok_catalog::state::Versioning;

use super::fields::{self, timestamp_ms};
use super::{SillokS3, owner};
use crate::versions::{self, VersionsQuery};

impl SillokS3 {
    pub(super) async fn do_get_bucket_versioning(
        &self,
        input: GetBucketVersioningInput,
    ) -> Result<GetBucketVersioningOutput, S3Error> {
        let b = self.catalog.require_bucket(&input.bucket).await?;
        // A bucket that was never versioned: S3 answers an empty configuration.
        let status = match b.versioning {
            Versioning::Unversioned => None,
            Versioning::Enabled => Some(BucketVersioningStatus::from_static(BucketVersioningStatus::ENABLED)),
            Versioning::Suspended => Some(BucketVersioningStatus::from_static(BucketVersioningStatus::SUSPENDED)),
        };
        Ok(GetBucketVersioningOutput { status, mfa_delete: None })
    }

    pub(super) async fn do_put_bucket_versioning(
        &self,
        input: PutBucketVersioningInput,
    ) -> Result<PutBucketVersioningOutput, S3Error> {
        self.catalog.require_bucket(&input.bucket).await?;
        let c = input.versioning_configuration;
        if c.mfa_delete.as_ref().is_some_and(|m| m.as_str() == MFADelete::ENABLED) || input.mfa.is_some() {
            return Err(s3_error!(NotImplemented, "MFA delete is not supported"));
        }
        let versioning = match c.status.as_ref().map(|s| s.as_str()) {
            Some(BucketVersioningStatus::ENABLED) => Versioning::Enabled,
            Some(BucketVersioningStatus::SUSPENDED) => Versioning::Suspended,
            _ => return Err(s3_error!(MalformedXML, "Status must be Enabled or Suspended")),
        };
        self.catalog.set_bucket_versioning(&input.bucket, versioning).await?;
        Ok(PutBucketVersioningOutput {})
    }

    pub(super) async fn do_list_object_versions(
        &self,
        input: ListObjectVersionsInput,
    ) -> Result<ListObjectVersionsOutput, S3Error> {
        let versioning = self.catalog.require_bucket(&input.bucket).await?.versioning;
        let enc = fields::encoder(input.encoding_type.as_ref())?;
        let max_keys = input.max_keys.unwrap_or(1000);
        if max_keys < 0 {
            return Err(s3_error!(InvalidArgument, "max-keys must not be negative"));
        }
        if input.version_id_marker.as_deref().is_some_and(|v| !v.is_empty())
            && input.key_marker.as_deref().is_none_or(str::is_empty)
        {
            return Err(s3_error!(InvalidArgument, "A version-id marker cannot be specified without a key marker."));
        }
        let q = VersionsQuery {
            bucket: input.bucket.clone(),
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: input.delimiter.clone(),
            key_marker: input.key_marker.clone(),
            version_id_marker: input.version_id_marker.clone(),
            max_keys: (max_keys as usize).min(1000),
        };
        let page = versions::list_versions(&self.cluster, versioning, &q).await?;
        let mut listed = Vec::new();
        let mut markers = Vec::new();
        for v in page.versions {
            if v.delete_marker {
                markers.push(DeleteMarkerEntry {
                    is_latest: Some(v.is_latest),
                    key: Some(enc(&v.key)),
                    last_modified: Some(timestamp_ms(v.last_modified_ms)),
                    owner: Some(owner()),
                    version_id: Some(v.version_id),
                });
            } else {
                listed.push(ObjectVersion {
                    e_tag: Some(ETag::Strong(v.etag)),
                    is_latest: Some(v.is_latest),
                    key: Some(enc(&v.key)),
                    last_modified: Some(timestamp_ms(v.last_modified_ms)),
                    owner: Some(owner()),
                    size: Some(v.size as i64),
                    storage_class: Some(ObjectVersionStorageClass::from_static(ObjectVersionStorageClass::STANDARD)),
                    version_id: Some(v.version_id),
                    ..Default::default()
                });
            }
        }
        let common: Vec<CommonPrefix> =
            page.common_prefixes.iter().map(|p| CommonPrefix { prefix: Some(enc(p)) }).collect();
        Ok(ListObjectVersionsOutput {
            name: Some(input.bucket),
            prefix: Some(enc(input.prefix.as_deref().unwrap_or(""))),
            delimiter: input.delimiter.as_deref().map(enc),
            key_marker: Some(input.key_marker.as_deref().map(enc).unwrap_or_default()),
            version_id_marker: Some(input.version_id_marker.unwrap_or_default()),
            max_keys: Some(max_keys),
            is_truncated: Some(page.truncated),
            next_key_marker: page.truncated.then(|| page.next_key_marker.as_deref().map(enc)).flatten(),
            next_version_id_marker: page.truncated.then_some(page.next_version_id_marker).flatten(),
            versions: (!listed.is_empty()).then_some(listed),
            delete_markers: (!markers.is_empty()).then_some(markers),
            common_prefixes: (!common.is_empty()).then_some(common),
            encoding_type: input.encoding_type,
            ..Default::default()
        })
    }
}
