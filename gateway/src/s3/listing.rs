//! ListObjects (v1) and ListObjectsV2 at the S3 edge: markers, continuation
//! tokens, `encoding-type=url` and `fetch-owner` around `crate::listing`.

use s3s::dto::*;
use s3s::{S3Error, s3_error};

use super::fields::{self, timestamp_ms};
use super::{SillokS3, owner};
use crate::listing::{self, ListQuery};

/// The `Contents` and `CommonPrefixes` of a listing page (v1 and v2 alike).
fn listing_xml(
    page: &listing::ListResult,
    enc: fn(&str) -> String,
    with_owner: bool,
) -> (Vec<Object>, Vec<CommonPrefix>) {
    let contents = page
        .entries
        .iter()
        .map(|e| Object {
            key: Some(enc(&e.key)),
            size: Some(e.size as i64),
            e_tag: Some(ETag::Strong(e.etag.clone())),
            last_modified: Some(timestamp_ms(e.last_modified_ms)),
            storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
            owner: with_owner.then(owner),
            ..Default::default()
        })
        .collect();
    let common = page.common_prefixes.iter().map(|p| CommonPrefix { prefix: Some(enc(p)) }).collect();
    (contents, common)
}

/// Continuation tokens are the hex of where the next page starts (opaque to clients).
fn encode_token(after: &str) -> String {
    hex::encode(after.as_bytes())
}

fn decode_token(t: &str) -> Option<String> {
    String::from_utf8(hex::decode(t).ok()?).ok()
}

impl SillokS3 {
    pub(super) async fn do_list_objects_v2(&self, input: ListObjectsV2Input) -> Result<ListObjectsV2Output, S3Error> {
        self.catalog.require_bucket(&input.bucket).await?;
        let enc = fields::encoder(input.encoding_type.as_ref())?;
        let max_keys = input.max_keys.unwrap_or(1000);
        if max_keys < 0 {
            return Err(s3_error!(InvalidArgument, "max-keys must not be negative"));
        }
        let after = match &input.continuation_token {
            Some(t) => Some(
                decode_token(t)
                    .ok_or_else(|| s3_error!(InvalidArgument, "The continuation token provided is incorrect"))?,
            ),
            None => input.start_after.clone(),
        };
        let q = ListQuery {
            bucket: input.bucket.clone(),
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: input.delimiter.clone(),
            start_after: after,
            max_keys: (max_keys as usize).min(1000),
            include_delete_markers: false,
        };
        let page = listing::list(&self.cluster, &q).await?;
        let (contents, common) = listing_xml(&page, enc, input.fetch_owner.unwrap_or(false));
        Ok(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(enc(input.prefix.as_deref().unwrap_or(""))),
            delimiter: input.delimiter.as_deref().map(enc),
            max_keys: Some(max_keys),
            key_count: Some((contents.len() + common.len()) as i32),
            is_truncated: Some(page.truncated),
            next_continuation_token: page.truncated.then(|| page.next_after.as_deref().map(encode_token)).flatten(),
            continuation_token: input.continuation_token,
            start_after: input.start_after.as_deref().map(enc),
            contents: Some(contents),
            common_prefixes: (!common.is_empty()).then_some(common),
            encoding_type: input.encoding_type,
            ..Default::default()
        })
    }

    pub(super) async fn do_list_objects(&self, input: ListObjectsInput) -> Result<ListObjectsOutput, S3Error> {
        self.catalog.require_bucket(&input.bucket).await?;
        let enc = fields::encoder(input.encoding_type.as_ref())?;
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
            include_delete_markers: false,
        };
        let page = listing::list(&self.cluster, &q).await?;
        let (contents, common) = listing_xml(&page, enc, true);
        // v1 markers are plain keys; a common prefix continues after itself.
        // S3 sends NextMarker only when a delimiter was given.
        let next_marker = if page.truncated && input.delimiter.as_deref().is_some_and(|d| !d.is_empty()) {
            page.next_after.map(|a| enc(a.trim_end_matches('\u{10FFFF}')))
        } else {
            None
        };
        Ok(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(enc(input.prefix.as_deref().unwrap_or(""))),
            delimiter: input.delimiter.as_deref().map(enc),
            marker: Some(enc(input.marker.as_deref().unwrap_or(""))),
            max_keys: Some(max_keys),
            is_truncated: Some(page.truncated),
            next_marker,
            contents: Some(contents),
            common_prefixes: (!common.is_empty()).then_some(common),
            encoding_type: input.encoding_type,
            ..Default::default()
        })
    }
}
