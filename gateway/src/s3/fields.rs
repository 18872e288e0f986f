//! Translating between S3's request/response fields and what a manifest
//! keeps: the standard headers, user metadata and its size limit, checksums
//! (from headers or aws-chunked trailers), timestamps, ETags, and the
//! `encoding-type=url` escaping of listings.

use std::collections::BTreeMap;

use s3s::dto::{ChecksumAlgorithm, ETag, Metadata, Timestamp, TimestampFormat};
use s3s::{S3Error, S3Request, s3_error};
use sillok_model::manifest::Manifest;

use crate::checksum::{self, Algorithm};
use crate::error::GatewayError;

/// S3's limit on user-defined metadata (keys and values, in bytes).
pub const MAX_USER_METADATA: usize = 2048;

pub fn timestamp_ms(ms: i64) -> Timestamp {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    Timestamp::from(t)
}

/// `ms` as an HTTP date header value (Last-Modified).
pub fn http_date(ms: i64) -> Option<http::HeaderValue> {
    let mut buf = Vec::new();
    timestamp_ms(ms).format(TimestampFormat::HttpDate, &mut buf).ok()?;
    http::HeaderValue::from_bytes(&buf).ok()
}

pub fn etag(m: &Manifest) -> ETag {
    ETag::Strong(m.etag.clone())
}

/// Headers S3 keeps with an object and returns on GET/HEAD.
const KEPT_HEADERS: [&str; 5] =
    ["cache-control", "content-disposition", "content-encoding", "content-language", "expires"];

pub fn kept_headers(
    cache_control: Option<String>,
    content_disposition: Option<String>,
    content_encoding: Option<String>,
    content_language: Option<String>,
    expires: Option<&Timestamp>,
) -> BTreeMap<String, String> {
    let mut h = BTreeMap::new();
    // `aws-chunked` describes how this request's body was sent, not the
    // object: S3 drops it and keeps the rest (`gzip, aws-chunked` → `gzip`).
    let content_encoding = content_encoding.map(without_aws_chunked).filter(|e| !e.is_empty());
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

/// A Content-Encoding list without its `aws-chunked` entries.
fn without_aws_chunked(encoding: String) -> String {
    if !encoding.to_ascii_lowercase().contains("aws-chunked") {
        return encoding;
    }
    encoding
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The kept standard headers of `m` (not its checksums).
pub fn standard_headers(m: &Manifest) -> BTreeMap<String, String> {
    m.headers.iter().filter(|(k, _)| KEPT_HEADERS.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub fn header(m: &Manifest, name: &str) -> Option<String> {
    m.headers.get(name).cloned()
}

pub fn parse_expires(m: &Manifest) -> Option<Timestamp> {
    Timestamp::parse(TimestampFormat::HttpDate, m.headers.get("expires")?).ok()
}

pub fn user_metadata(m: &Manifest) -> Option<Metadata> {
    (!m.user_metadata.is_empty()).then(|| m.user_metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// User metadata from a request, refused when over S3's 2 KB limit.
pub fn request_metadata(md: Option<Metadata>) -> Result<BTreeMap<String, String>, S3Error> {
    let md: BTreeMap<String, String> = md.unwrap_or_default().into_iter().collect();
    let size: usize = md.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_USER_METADATA {
        return Err(s3_error!(
            MetadataTooLarge,
            "Your metadata headers exceed the maximum allowed metadata size ({size} > {MAX_USER_METADATA} bytes)"
        ));
    }
    Ok(md)
}

pub fn decode_md5(b64: &str) -> Result<[u8; 16], S3Error> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| s3_error!(InvalidDigest, "Content-MD5 is not valid base64"))?;
    bytes.try_into().map_err(|_| s3_error!(InvalidDigest, "Content-MD5 must be 16 bytes"))
}

/// The values of the five `x-amz-checksum-*` request fields, in
/// [`Algorithm::ALL`] order.
pub type ChecksumValues = [Option<String>; 5];

/// The checksum a request asks to be verified: a value in a header, or a
/// trailer named by `x-amz-trailer` (read when the body ends), or only an
/// algorithm (`x-amz-sdk-checksum-algorithm`: computed and kept).
pub fn expected_checksum<T>(
    req: &S3Request<T>,
    algorithm: Option<&ChecksumAlgorithm>,
    values: ChecksumValues,
) -> Result<Option<checksum::Expected>, S3Error> {
    let given: Vec<(Algorithm, String)> =
        Algorithm::ALL.into_iter().zip(values).filter_map(|(a, v)| Some((a, v?))).collect();
    if given.len() > 1 {
        return Err(s3_error!(
            InvalidRequest,
            "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."
        ));
    }
    if let Some((a, v)) = given.into_iter().next() {
        if !a.valid_value(&v) {
            return Err(s3_error!(InvalidRequest, "Value for {} header is invalid.", a.header()));
        }
        return Ok(Some(checksum::Expected { algorithm: a, value: Some(v), trailer: None }));
    }
    let trailer_name =
        req.headers.get("x-amz-trailer").and_then(|v| v.to_str().ok()).map(|s| s.trim().to_ascii_lowercase());
    if let Some(name) = trailer_name.filter(|n| n.starts_with("x-amz-checksum-")) {
        let a = Algorithm::ALL
            .into_iter()
            .find(|a| a.header() == name)
            .ok_or_else(|| s3_error!(InvalidRequest, "unsupported trailing checksum {name}"))?;
        let trailers = req.trailing_headers.clone();
        let read = move || {
            let t = trailers.as_ref()?;
            t.read(|h| h.get(a.header()).and_then(|v| v.to_str().ok()).map(|s| s.trim().to_string())).flatten()
        };
        return Ok(Some(checksum::Expected { algorithm: a, value: None, trailer: Some(std::sync::Arc::new(read)) }));
    }
    match algorithm {
        Some(name) => {
            let a = Algorithm::parse(name.as_str())
                .ok_or_else(|| s3_error!(InvalidRequest, "unsupported checksum algorithm {}", name.as_str()))?;
            Ok(Some(checksum::Expected { algorithm: a, value: None, trailer: None }))
        }
        None => Ok(None),
    }
}

/// The stored checksum of each algorithm, in [`Algorithm::ALL`] order.
pub fn stored_checksums(m: &Manifest) -> ChecksumValues {
    Algorithm::ALL.map(|a| m.headers.get(a.header()).cloned())
}

/// Sets the five `checksum_*` fields (and `checksum_type` where the output
/// has one) of an S3 output from a manifest.
macro_rules! fill_checksums {
    ($out:expr, $m:expr) => {{
        let [crc32, crc32c, crc64nvme, sha1, sha256] = $crate::s3::fields::stored_checksums($m);
        $out.checksum_crc32 = crc32;
        $out.checksum_crc32c = crc32c;
        $out.checksum_crc64nvme = crc64nvme;
        $out.checksum_sha1 = sha1;
        $out.checksum_sha256 = sha256;
    }};
}
pub(crate) use fill_checksums;

/// The five `x-amz-checksum-*` fields of a request input, in [`Algorithm::ALL`] order.
macro_rules! checksum_values {
    ($input:expr) => {
        [
            $input.checksum_crc32.clone(),
            $input.checksum_crc32c.clone(),
            $input.checksum_crc64nvme.clone(),
            $input.checksum_sha1.clone(),
            $input.checksum_sha256.clone(),
        ]
    };
}
pub(crate) use checksum_values;

/// The If-* preconditions of a GET or HEAD input.
macro_rules! preconditions {
    ($input:ident) => {
        $crate::s3::conditions::Preconditions {
            if_match: $input.if_match.take(),
            if_none_match: $input.if_none_match.take(),
            if_modified_since: $input.if_modified_since.take(),
            if_unmodified_since: $input.if_unmodified_since.take(),
        }
    };
}
pub(crate) use preconditions;

/// The `x-amz-copy-source-if-*` preconditions of a CopyObject or UploadPartCopy input.
macro_rules! copy_source_preconditions {
    ($input:ident) => {
        $crate::s3::conditions::Preconditions {
            if_match: $input.copy_source_if_match.take(),
            if_none_match: $input.copy_source_if_none_match.take(),
            if_modified_since: $input.copy_source_if_modified_since.take(),
            if_unmodified_since: $input.copy_source_if_unmodified_since.take(),
        }
    };
}
pub(crate) use copy_source_preconditions;

/// Fills what GET and HEAD both say about an object: ETag, Last-Modified,
/// the kept headers (each overridable by its `response-*` parameter), user
/// metadata, and the checksums when `x-amz-checksum-mode: ENABLED` asks for
/// them (not for a partial body: a checksum describes the whole object).
macro_rules! describe_object {
    ($out:ident, $input:ident, $m:expr) => {{
        let m: &sillok_model::manifest::Manifest = $m;
        use $crate::s3::fields::header;
        $out.accept_ranges = Some("bytes".into());
        $out.e_tag = Some($crate::s3::fields::etag(m));
        $out.last_modified = Some($crate::s3::fields::timestamp_ms(m.last_modified_ms));
        $out.content_type = $input.response_content_type.take().or_else(|| m.content_type.clone());
        $out.cache_control = $input.response_cache_control.take().or_else(|| header(m, "cache-control"));
        $out.content_disposition =
            $input.response_content_disposition.take().or_else(|| header(m, "content-disposition"));
        $out.content_encoding = $input.response_content_encoding.take().or_else(|| header(m, "content-encoding"));
        $out.content_language = $input.response_content_language.take().or_else(|| header(m, "content-language"));
        $out.expires = $input.response_expires.take().or_else(|| $crate::s3::fields::parse_expires(m));
        $out.metadata = $crate::s3::fields::user_metadata(m);
        let wants = $input.checksum_mode.as_ref().is_some_and(|c| c.as_str().eq_ignore_ascii_case("ENABLED"));
        if wants && $out.content_range.is_none() {
            fill_checksums!($out, m);
            $out.checksum_type = $crate::s3::fields::checksum_type(m);
        }
    }};
}
pub(crate) use describe_object;

/// `FULL_OBJECT` or `COMPOSITE`, when the object has a checksum.
pub fn checksum_type(m: &Manifest) -> Option<s3s::dto::ChecksumType> {
    if stored_checksums(m).iter().all(Option::is_none) {
        return None;
    }
    let t = m.headers.get(checksum::TYPE_HEADER).cloned().unwrap_or_else(|| "FULL_OBJECT".into());
    Some(s3s::dto::ChecksumType::from(t))
}

/// S3's `encoding-type=url`: everything but unreserved characters and `/`
/// percent-encoded (so keys with control characters survive XML).
pub fn url_encode(s: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const KEY: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');
    utf8_percent_encode(s, KEY).to_string()
}

/// Applies `url_encode` when the client asked for `encoding-type=url`.
pub fn encoder(encoding_type: Option<&s3s::dto::EncodingType>) -> Result<fn(&str) -> String, S3Error> {
    match encoding_type.map(|e| e.as_str()) {
        None => Ok(|s: &str| s.to_string()),
        Some(e) if e.eq_ignore_ascii_case("url") => Ok(url_encode),
        Some(e) => Err(s3_error!(InvalidArgument, "Invalid Encoding Method specified in Request: {e}")),
    }
}

/// Content-Length of a request body, required and non-negative.
pub fn content_length(len: Option<i64>) -> Result<u64, GatewayError> {
    let len = len.ok_or(GatewayError::MissingContentLength)?;
    u64::try_from(len).map_err(|_| GatewayError::InvalidArgument("negative Content-Length".into()))
}

/// The length of a PutObject or UploadPart body, as S3 takes it: the
/// Content-Length (for an aws-chunked body s3s has put the decoded length
/// there), or, for an aws-chunked body sent with `Transfer-Encoding:
/// chunked` and no Content-Length (as S3's sigv4-streaming page allows and
/// the AWS SDKs' streaming uploads do), `x-amz-decoded-content-length`.
/// Else 411 `MissingContentLength` (a chunked PUT that is not aws-chunked
/// never gets here: `server` answers it 501, as S3 does).
pub fn body_length<T>(req: &S3Request<T>, content_length: Option<i64>) -> Result<u64, S3Error> {
    if content_length.is_some() {
        return Ok(self::content_length(content_length)?);
    }
    let h = &req.headers;
    let streaming =
        h.get("x-amz-content-sha256").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("STREAMING-"));
    if let Some(v) = h.get("x-amz-decoded-content-length").filter(|_| streaming) {
        return v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| s3_error!(InvalidArgument, "x-amz-decoded-content-length must be a non-negative integer"));
    }
    Err(GatewayError::MissingContentLength.into())
}

/// The bytes a `Range` selects in an object of `size` bytes, and its
/// Content-Range; unsatisfiable (a suffix of an empty object too) → 416
/// `InvalidRange`.
pub fn byte_range(r: &s3s::dto::Range, size: u64) -> Result<(std::ops::Range<u64>, String), GatewayError> {
    match r.check(size) {
        Ok(rg) if !rg.is_empty() => {
            let cr = format!("bytes {}-{}/{}", rg.start, rg.end - 1, size);
            Ok((rg, cr))
        }
        _ => Err(GatewayError::InvalidRange),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoding_keeps_slashes_and_unreserved() {
        assert_eq!(url_encode("a b/c+d%é\u{1}"), "a%20b/c%2Bd%25%C3%A9%01");
        assert_eq!(url_encode("photos/2026-11_x.jpg~"), "photos/2026-11_x.jpg~");
    }

    #[test]
    fn aws_chunked_is_not_kept_in_content_encoding() {
        let kept = |e: &str| kept_headers(None, None, Some(e.into()), None, None).get("content-encoding").cloned();
        assert_eq!(kept("gzip, aws-chunked"), Some("gzip".into()));
        assert_eq!(kept("aws-chunked,gzip"), Some("gzip".into()));
        assert_eq!(kept("AWS-CHUNKED"), None);
        assert_eq!(kept("br"), Some("br".into()));
    }

    #[test]
    fn byte_ranges() {
        let r = s3s::dto::Range::Int { first: 2, last: Some(5) };
        assert_eq!(byte_range(&r, 10).unwrap(), (2..6, "bytes 2-5/10".to_string()));
        assert!(matches!(byte_range(&r, 2), Err(GatewayError::InvalidRange)));
        let suffix = s3s::dto::Range::Suffix { length: 5 };
        assert!(matches!(byte_range(&suffix, 0), Err(GatewayError::InvalidRange)));
        assert_eq!(byte_range(&suffix, 3).unwrap(), (0..3, "bytes 0-2/3".to_string()));
    }

    #[test]
    fn metadata_limit() {
        let ok: Metadata = [("k".to_string(), "v".repeat(2047))].into_iter().collect();
        assert!(request_metadata(Some(ok)).is_ok());
        let big: Metadata = [("k".to_string(), "v".repeat(2048))].into_iter().collect();
        assert!(request_metadata(Some(big)).is_err());
    }
}
