//! S3 access keys and what they may do, from the catalog.
//!
//! - [`CatalogKeys`] gives s3s the secret of an access key id for its SigV4
//!   checks. An unknown, revoked or disabled key is `InvalidAccessKeyId`
//!   (403), as S3 answers for a deactivated key.
//! - [`KeyPermissions`] runs after authentication, before an operation: an
//!   anonymous request is `AccessDenied`; reads (GET, HEAD, listings) need the
//!   `read` permission and everything else `write`. Admin keys are for the
//!   catalog API and may not use S3 unless they also hold those.
//!
//! Secrets are never logged.

use std::sync::Arc;

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Result, s3_error};
use sillok_catalog::Permission;

use crate::catalog::GatewayCatalog;

pub struct CatalogKeys(pub Arc<GatewayCatalog>);

#[async_trait::async_trait]
impl S3Auth for CatalogKeys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.key(access_key).await {
            Ok(Some(k)) => Ok(SecretKey::from(k.secret)),
            Ok(None) => {
                Err(s3_error!(InvalidAccessKeyId, "The AWS access key Id you provided does not exist in our records."))
            }
            Err(e) => Err(e.into()),
        }
    }
}

pub struct KeyPermissions(pub Arc<GatewayCatalog>);

/// Whether an S3 operation only reads.
pub fn is_read_operation(name: &str) -> bool {
    name.starts_with("Get") || name.starts_with("Head") || name.starts_with("List")
}

#[async_trait::async_trait]
impl S3Access for KeyPermissions {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(creds) = cx.credentials() else {
            return Err(s3_error!(AccessDenied, "Anonymous access is not allowed; sign the request."));
        };
        let op = cx.s3_op().name();
        let need = if is_read_operation(op) { Permission::Read } else { Permission::Write };
        if self.0.may(&creds.access_key, need) {
            Ok(())
        } else {
            tracing::info!(key = %creds.access_key, op, need = %need, "refused: the key lacks the permission");
            Err(s3_error!(
                AccessDenied,
                "Access key {} may not {} ({op} needs the {need} permission).",
                creds.access_key,
                if need == Permission::Read { "read" } else { "write" }
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_read_operation;

    #[test]
    fn reads_and_writes_are_told_apart_by_operation_name() {
        for op in [
            "GetObject",
            "HeadObject",
            "HeadBucket",
            "ListObjectsV2",
            "ListBuckets",
            "ListParts",
            "GetBucketLocation",
            "GetObjectTagging",
        ] {
            assert!(is_read_operation(op), "{op}");
        }
        for op in [
            "PutObject",
            "DeleteObject",
            "CreateBucket",
            "DeleteBucket",
            "CopyObject",
            "UploadPart",
            "CompleteMultipartUpload",
            "PostObject",
            "DeleteObjects",
            "CreateMultipartUpload",
            "AbortMultipartUpload",
            "UploadPartCopy",
            "PutObjectTagging",
            "DeleteObjectTagging",
        ] {
            assert!(!is_read_operation(op), "{op}");
        }
    }
}
