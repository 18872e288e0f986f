//! Gateway errors, and their one conversion into S3 errors (`From<GatewayError> for S3Error`).

use s3s::{S3Error, S3ErrorCode};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum GatewayError {
    #[error("the bucket does not exist")]
    NoSuchBucket,
    #[error("the key does not exist")]
    NoSuchKey,
    #[error("the bucket is not empty")]
    BucketNotEmpty,
    #[error("the bucket already exists and is yours")]
    BucketAlreadyOwnedByYou,
    #[error("the bucket name is taken by another account; pick another name")]
    BucketAlreadyExists,
    #[error("invalid bucket name: {0}")]
    InvalidBucketName(String),
    /// The catalog (buckets, keys, map) could not be reached for an answer
    /// this gateway's copy cannot give; the client may retry.
    #[error("the catalog is unavailable: {0}")]
    CatalogUnavailable(String),
    /// The key is not allowed to do this.
    #[error("access denied: {0}")]
    AccessDenied(String),
    #[error("the requested range is not satisfiable")]
    InvalidRange,
    /// `partNumber` names no part of the object.
    #[error("the requested partnumber is not satisfiable")]
    InvalidPartNumber,
    #[error("Content-Length is required")]
    MissingContentLength,
    #[error("the body was {got} bytes but Content-Length said {declared}")]
    IncompleteBody { declared: u64, got: u64 },
    #[error("the object is larger than the {max}-byte limit of one PUT")]
    EntityTooLarge { max: u64 },
    #[error("Content-MD5 does not match the body")]
    BadDigest,
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Not enough nodes answered to do the operation safely; the client may retry.
    #[error("not enough storage nodes answered: {0}")]
    Unavailable(String),
    /// The object's data could not be read back (more than m shards lost).
    #[error("object data unreadable: {0}")]
    DataLoss(String),
    #[error("the client's body stream failed: {0}")]
    ClientBody(String),
    /// An aws-chunked chunk or trailer did not match its signature.
    #[error("a chunk signature of the streamed body does not match")]
    ChunkSignatureMismatch,
    #[error("the {algorithm} checksum you specified did not match the body")]
    ChecksumMismatch { algorithm: &'static str },
    #[error("no body bytes arrived for too long; the request was dropped")]
    RequestTimeout,
    #[error("the specified multipart upload does not exist (it may have been aborted or completed)")]
    NoSuchUpload,
    #[error("{0}")]
    InvalidPart(String),
    #[error("the list of parts was not in ascending order")]
    InvalidPartOrder,
    #[error("part {number} is {size} bytes; every part but the last must be at least {min} bytes")]
    EntityTooSmall { number: u32, size: u64, min: u64 },
    #[error("{0}")]
    InvalidRequest(String),
    /// The request's XML is well formed but not what the operation takes.
    #[error("{0}")]
    MalformedXml(String),
    #[error("The CORS configuration does not exist")]
    NoSuchCorsConfiguration,
    #[error("at least one of the preconditions you specified did not hold")]
    PreconditionFailed,
    #[error("not modified")]
    NotModified,
    #[error("Invalid version id specified")]
    InvalidVersionId,
    #[error("The specified version does not exist.")]
    NoSuchVersion,
    /// The version asked for is a delete marker: 404 `NoSuchKey` when it
    /// is the current version (no version id asked), 405
    /// `MethodNotAllowed` when named by its version id.
    #[error("{}", if *named { "The specified method is not allowed against this resource." } else { "The specified key does not exist." })]
    DeleteMarker { version_id: Option<String>, last_modified_ms: i64, named: bool },
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    /// Classifies an error from a client's body stream. s3s reports a bad
    /// aws-chunked signature only through its error's text (its error type
    /// is private); s3s is pinned, and a test covers this.
    pub fn from_body_error(text: String) -> GatewayError {
        if text.contains("SignatureMismatch") {
            GatewayError::ChunkSignatureMismatch
        } else {
            GatewayError::ClientBody(text)
        }
    }
}

impl From<GatewayError> for S3Error {
    fn from(e: GatewayError) -> Self {
        use GatewayError as G;
        let code = match &e {
            G::NoSuchBucket => S3ErrorCode::NoSuchBucket,
            G::NoSuchKey => S3ErrorCode::NoSuchKey,
            G::BucketNotEmpty => S3ErrorCode::BucketNotEmpty,
            G::BucketAlreadyOwnedByYou => S3ErrorCode::BucketAlreadyOwnedByYou,
            G::BucketAlreadyExists => S3ErrorCode::BucketAlreadyExists,
            G::InvalidBucketName(_) => S3ErrorCode::InvalidBucketName,
            G::CatalogUnavailable(_) => S3ErrorCode::ServiceUnavailable,
            G::AccessDenied(_) => S3ErrorCode::AccessDenied,
            G::InvalidRange => S3ErrorCode::InvalidRange,
            G::InvalidPartNumber => S3ErrorCode::Custom("InvalidPartNumber".into()),
            G::MissingContentLength => S3ErrorCode::MissingContentLength,
            G::IncompleteBody { .. } => S3ErrorCode::IncompleteBody,
            G::EntityTooLarge { .. } => S3ErrorCode::EntityTooLarge,
            G::BadDigest => S3ErrorCode::BadDigest,
            G::InvalidArgument(_) => S3ErrorCode::InvalidArgument,
            G::Unavailable(_) => S3ErrorCode::ServiceUnavailable,
            G::ClientBody(_) => S3ErrorCode::IncompleteBody,
            G::ChunkSignatureMismatch => S3ErrorCode::SignatureDoesNotMatch,
            // S3 documents BadDigest for a Content-MD5 or checksum that does not match.
            G::ChecksumMismatch { .. } => S3ErrorCode::BadDigest,
            G::RequestTimeout => S3ErrorCode::RequestTimeout,
            G::NoSuchUpload => S3ErrorCode::NoSuchUpload,
            G::InvalidPart(_) => S3ErrorCode::InvalidPart,
            G::InvalidPartOrder => S3ErrorCode::InvalidPartOrder,
            G::EntityTooSmall { .. } => S3ErrorCode::EntityTooSmall,
            G::InvalidRequest(_) => S3ErrorCode::InvalidRequest,
            G::MalformedXml(_) => S3ErrorCode::MalformedXML,
            G::NoSuchCorsConfiguration => S3ErrorCode::NoSuchCORSConfiguration,
            G::PreconditionFailed => S3ErrorCode::PreconditionFailed,
            G::NotModified => S3ErrorCode::NotModified,
            G::InvalidVersionId => S3ErrorCode::InvalidArgument,
            G::NoSuchVersion => S3ErrorCode::NoSuchVersion,
            G::DeleteMarker { named: true, .. } => S3ErrorCode::MethodNotAllowed,
            G::DeleteMarker { named: false, .. } => S3ErrorCode::NoSuchKey,
            G::DataLoss(_) | G::Internal(_) => S3ErrorCode::InternalError,
        };
        if matches!(e, G::Unavailable(_) | G::CatalogUnavailable(_) | G::DataLoss(_) | G::Internal(_)) {
            tracing::warn!(error = %e, "request failed");
        }
        let mut err = S3Error::with_message(code, e.to_string());
        match e {
            G::InvalidRange | G::InvalidPartNumber => err.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE),
            G::DeleteMarker { version_id, last_modified_ms, named } => {
                let mut h = http::HeaderMap::new();
                h.insert("x-amz-delete-marker", http::HeaderValue::from_static("true"));
                if let Some(v) = version_id.and_then(|v| http::HeaderValue::from_str(&v).ok()) {
                    h.insert("x-amz-version-id", v);
                }
                if named {
                    h.insert("allow", http::HeaderValue::from_static("DELETE"));
                    if let Some(t) = crate::s3::fields::http_date(last_modified_ms) {
                        h.insert(http::header::LAST_MODIFIED, t);
                    }
                }
                err.set_headers(h);
            }
            _ => {}
        }
        err
    }
}
