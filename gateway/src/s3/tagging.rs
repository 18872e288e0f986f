//! S3 object tagging: S3's rules for a tag set, the `x-amz-tagging` header
//! (PutObject, CopyObject with `x-amz-tagging-directive: REPLACE`,
//! CreateMultipartUpload), and Put/Get/DeleteObjectTagging.
//!
//! Tags live in the object's manifest (`Manifest::tags`). Changing them
//! writes the same manifest again, body untouched (inline bytes or shard
//! locations: nothing is read or re-encoded), with a version just above the
//! one it was read at (`versions::just_after`), so that a PUT or DELETE of the key that
//! took its version meanwhile stays newer and wins. A replica that already
//! holds something newer refuses the change, which is then made again on
//! the newer manifest (`quorum::write_manifest_unless_newer`), never written
//! over it. Last-Modified and the ETag do not change, as in S3. In a
//! versioned bucket a tag change applies to one version (`versionId`, else
//! the current one), in its record and, if it is current, in the head
//! (`versions::retag`).

use std::collections::BTreeMap;

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode};
use sillok_model::manifest::Manifest;

use super::SillokS3;
use crate::error::GatewayError;
use crate::versions;

/// S3's limit on tags per object.
pub const MAX_TAGS: usize = 10;
/// S3's limit on a tag key, in Unicode characters (and its minimum is 1).
pub const MAX_KEY_CHARS: usize = 128;
/// S3's limit on a tag value, in Unicode characters (it may be empty).
pub const MAX_VALUE_CHARS: usize = 256;
/// Tag keys may not start with this (in any case): AWS reserves it.
const RESERVED_PREFIX: &str = "aws:";

/// Why a tag set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("Object tags cannot be greater than {MAX_TAGS} (got {0})")]
    TooMany(usize),
    #[error("The TagKey you have provided is invalid: a tag key is 1 to {MAX_KEY_CHARS} Unicode characters (got {0})")]
    KeyLength(usize),
    #[error(
        "The TagValue you have provided is invalid: a tag value is at most {MAX_VALUE_CHARS} Unicode characters (got {0})"
    )]
    ValueLength(usize),
    #[error("Cannot provide multiple Tags with the same key ({0:?})")]
    DuplicateKey(String),
    #[error("Your TagKey cannot be prefixed with aws: ({0:?})")]
    ReservedKey(String),
    /// A `<Tag>` without a `<Key>`: the XML does not match S3's schema.
    #[error(
        "The XML you provided was not well-formed or did not validate against our published schema: a Tag has no Key"
    )]
    MissingKey,
    #[error(
        "The header 'x-amz-tagging' shall be encoded as UTF-8 then URLEncoded URL query parameters without tag name duplicates."
    )]
    BadHeader,
}

impl From<TagError> for S3Error {
    fn from(e: TagError) -> Self {
        let code = match e {
            TagError::MissingKey => S3ErrorCode::MalformedXML,
            TagError::BadHeader => S3ErrorCode::InvalidArgument,
            _ => S3ErrorCode::InvalidTag,
        };
        S3Error::with_message(code, e.to_string())
    }
}

/// Checks `(key, value)` pairs against S3's limits and makes them a tag map.
pub fn checked(pairs: Vec<(String, String)>) -> Result<BTreeMap<String, String>, TagError> {
    if pairs.len() > MAX_TAGS {
        return Err(TagError::TooMany(pairs.len()));
    }
    let mut tags = BTreeMap::new();
    for (key, value) in pairs {
        let key_chars = key.chars().count();
        if key_chars == 0 || key_chars > MAX_KEY_CHARS {
            return Err(TagError::KeyLength(key_chars));
        }
        let value_chars = value.chars().count();
        if value_chars > MAX_VALUE_CHARS {
            return Err(TagError::ValueLength(value_chars));
        }
        if key.get(..RESERVED_PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_PREFIX)) {
            return Err(TagError::ReservedKey(key));
        }
        if tags.contains_key(&key) {
            return Err(TagError::DuplicateKey(key));
        }
        tags.insert(key, value);
    }
    Ok(tags)
}

/// The tags of a PutObjectTagging body (`<Tagging><TagSet>`).
pub fn from_tag_set(set: TagSet) -> Result<BTreeMap<String, String>, TagError> {
    let pairs = set
        .into_iter()
        .map(|t| Ok((t.key.ok_or(TagError::MissingKey)?, t.value.unwrap_or_default())))
        .collect::<Result<Vec<_>, TagError>>()?;
    checked(pairs)
}

/// The tags of an `x-amz-tagging` header: `k1=v1&k2=v2`, URL-encoded
/// (`+` is a space); a key without `=` has an empty value; no header, or an
/// empty one, is no tags.
pub fn from_header(header: Option<&str>) -> Result<BTreeMap<String, String>, TagError> {
    let Some(header) = header else { return Ok(BTreeMap::new()) };
    let decode = |s: &str| {
        let spaced = s.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| TagError::BadHeader)
    };
    let mut pairs = Vec::new();
    for pair in header.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        pairs.push((decode(k)?, decode(v)?));
    }
    checked(pairs)
}

/// The tag set as S3 lists it (by key).
pub fn to_tag_set(tags: &BTreeMap<String, String>) -> TagSet {
    tags.iter().map(|(k, v)| Tag { key: Some(k.clone()), value: Some(v.clone()) }).collect()
}

/// `x-amz-tagging-count` for GET and HEAD: only when the object has tags.
pub fn count(m: &Manifest) -> Option<i32> {
    (!m.tags.is_empty()).then_some(m.tags.len() as i32)
}

impl SillokS3 {
    pub(super) async fn do_put_object_tagging(
        &self,
        input: PutObjectTaggingInput,
    ) -> Result<PutObjectTaggingOutput, S3Error> {
        let tags = from_tag_set(input.tagging.tag_set)?;
        let version_id = self.retag(&input.bucket, &input.key, input.version_id.as_deref(), tags).await?;
        Ok(PutObjectTaggingOutput { version_id })
    }

    pub(super) async fn do_get_object_tagging(
        &self,
        input: GetObjectTaggingInput,
    ) -> Result<GetObjectTaggingOutput, S3Error> {
        let (m, versioning) = self.object_version(&input.bucket, &input.key, input.version_id.as_deref()).await?;
        Ok(GetObjectTaggingOutput { tag_set: to_tag_set(&m.tags), version_id: versions::shown_id(&m, versioning) })
    }

    pub(super) async fn do_delete_object_tagging(
        &self,
        input: DeleteObjectTaggingInput,
    ) -> Result<DeleteObjectTaggingOutput, S3Error> {
        let version_id = self.retag(&input.bucket, &input.key, input.version_id.as_deref(), BTreeMap::new()).await?;
        Ok(DeleteObjectTaggingOutput { version_id })
    }

    /// Gives one version of `bucket/key` exactly `tags` (`versions::retag`),
    /// and returns its version id as S3 shows it.
    async fn retag(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        tags: BTreeMap<String, String>,
    ) -> Result<Option<String>, GatewayError> {
        let versioning = self.catalog.require_bucket(bucket).await?.versioning;
        let m = versions::retag(&self.cluster, versioning, bucket, key, version_id, &tags).await?;
        Ok(versions::shown_id(&m, versioning))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(n: usize) -> Vec<(String, String)> {
        (0..n).map(|i| (format!("k{i}"), format!("v{i}"))).collect()
    }

    #[test]
    fn ten_tags_are_allowed_eleven_are_not() {
        assert_eq!(checked(pairs(10)).unwrap().len(), 10);
        assert_eq!(checked(pairs(11)), Err(TagError::TooMany(11)));
    }

    #[test]
    fn key_and_value_lengths_count_unicode_characters() {
        // 128 three-byte characters: 384 bytes, still a valid key.
        let key = "한".repeat(128);
        assert!(checked(vec![(key.clone(), "ë".repeat(256))]).is_ok());
        assert_eq!(checked(vec![(format!("{key}a"), String::new())]), Err(TagError::KeyLength(129)));
        assert_eq!(checked(vec![("k".into(), "ë".repeat(257))]), Err(TagError::ValueLength(257)));
        assert_eq!(checked(vec![(String::new(), "v".into())]), Err(TagError::KeyLength(0)));
        assert_eq!(checked(vec![("k".into(), String::new())]).unwrap()["k"], "");
    }

    #[test]
    fn duplicate_and_reserved_keys_are_refused() {
        let dup = vec![("a".into(), "1".into()), ("a".into(), "2".into())];
        assert_eq!(checked(dup), Err(TagError::DuplicateKey("a".into())));
        assert_eq!(checked(vec![("aws:x".into(), "1".into())]), Err(TagError::ReservedKey("aws:x".into())));
        assert_eq!(checked(vec![("AWS:x".into(), "1".into())]), Err(TagError::ReservedKey("AWS:x".into())));
        assert!(checked(vec![("awsx".into(), "1".into()), ("x:aws:".into(), "2".into())]).is_ok());
    }

    #[test]
    fn the_header_is_a_url_encoded_query() {
        let t = from_header(Some("project=sillok&note=a%20b+c&empty=&bare&k%C3%A9y=%F0%9F%98%80")).unwrap();
        let want: BTreeMap<String, String> =
            [("project", "sillok"), ("note", "a b c"), ("empty", ""), ("bare", ""), ("kéy", "😀")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        assert_eq!(t, want);
        assert!(from_header(None).unwrap().is_empty());
        assert!(from_header(Some("")).unwrap().is_empty());
        assert_eq!(from_header(Some("a=1&a=2")), Err(TagError::DuplicateKey("a".into())));
        assert_eq!(from_header(Some("k=%FF")), Err(TagError::BadHeader));
        assert_eq!(from_header(Some("=v")), Err(TagError::KeyLength(0)));
    }

    #[test]
    fn errors_become_s3_codes() {
        let code = |e: TagError| S3Error::from(e).code().as_str().to_string();
        assert_eq!(code(TagError::TooMany(11)), "InvalidTag");
        assert_eq!(code(TagError::ReservedKey("aws:a".into())), "InvalidTag");
        assert_eq!(code(TagError::MissingKey), "MalformedXML");
        assert_eq!(code(TagError::BadHeader), "InvalidArgument");
    }
}
