//! Conditional requests (RFC 9110 §13 as S3 applies them): `If-Match`,
//! `If-None-Match`, `If-Modified-Since`, `If-Unmodified-Since` on GET and HEAD,
//! and the `x-amz-copy-source-if-*` family on copies.
//!
//! Order, as S3 documents it: a present If-Match decides alone over
//! If-Unmodified-Since (412 when it fails); a present If-None-Match decides
//! alone over If-Modified-Since (304 on GET/HEAD, 412 on a copy source).
//! Dates compare at whole seconds, as HTTP dates carry no more.

use s3s::dto::{ETagCondition, Timestamp};

use crate::error::GatewayError;

#[derive(Debug, Clone, Default)]
pub struct Preconditions {
    pub if_match: Option<ETagCondition>,
    pub if_none_match: Option<ETagCondition>,
    pub if_modified_since: Option<Timestamp>,
    pub if_unmodified_since: Option<Timestamp>,
}

fn matches(cond: &ETagCondition, etag: &str) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value().trim_matches('"') == etag,
    }
}

fn seconds(t: &Timestamp) -> i64 {
    let t: time::OffsetDateTime = t.clone().into();
    t.unix_timestamp()
}

impl Preconditions {
    /// Ok when the request goes ahead; otherwise PreconditionFailed, or
    /// NotModified (only when `not_modified_allowed`: GET and HEAD).
    pub fn check(&self, etag: &str, last_modified_ms: i64, not_modified_allowed: bool) -> Result<(), GatewayError> {
        let modified_s = last_modified_ms.div_euclid(1000);
        match &self.if_match {
            Some(c) if !matches(c, etag) => return Err(GatewayError::PreconditionFailed),
            Some(_) => {}
            None => {
                if let Some(t) = &self.if_unmodified_since {
                    if modified_s > seconds(t) {
                        return Err(GatewayError::PreconditionFailed);
                    }
                }
            }
        }
        let not_modified = || {
            if not_modified_allowed { GatewayError::NotModified } else { GatewayError::PreconditionFailed }
        };
        match &self.if_none_match {
            Some(c) if matches(c, etag) => return Err(not_modified()),
            Some(_) => {}
            None => {
                if let Some(t) = &self.if_modified_since {
                    if modified_s <= seconds(t) {
                        return Err(not_modified());
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3s::dto::ETag;

    fn at(s: i64) -> Timestamp {
        Timestamp::from(time::OffsetDateTime::from_unix_timestamp(s).unwrap())
    }
    fn tag(v: &str) -> Option<ETagCondition> {
        Some(ETagCondition::ETag(ETag::Strong(v.into())))
    }

    #[test]
    fn etag_conditions() {
        let p = Preconditions { if_match: tag("abc"), ..Default::default() };
        assert!(p.check("abc", 0, true).is_ok());
        assert!(matches!(p.check("abd", 0, true), Err(GatewayError::PreconditionFailed)));
        let p = Preconditions { if_none_match: tag("abc"), ..Default::default() };
        assert!(matches!(p.check("abc", 0, true), Err(GatewayError::NotModified)));
        assert!(matches!(p.check("abc", 0, false), Err(GatewayError::PreconditionFailed)));
        assert!(p.check("zzz", 0, true).is_ok());
        let p = Preconditions { if_match: Some(ETagCondition::Any), ..Default::default() };
        assert!(p.check("anything", 0, true).is_ok());
    }

    #[test]
    fn dates_at_second_granularity() {
        // Modified at 100.900 s: "not modified since 100" holds.
        let p = Preconditions { if_modified_since: Some(at(100)), ..Default::default() };
        assert!(matches!(p.check("e", 100_900, true), Err(GatewayError::NotModified)));
        assert!(p.check("e", 101_000, true).is_ok());
        let p = Preconditions { if_unmodified_since: Some(at(100)), ..Default::default() };
        assert!(p.check("e", 100_999, true).is_ok());
        assert!(matches!(p.check("e", 101_000, true), Err(GatewayError::PreconditionFailed)));
    }

    #[test]
    fn an_etag_condition_overrides_its_date_partner() {
        // If-Match holds, If-Unmodified-Since fails: S3 answers 200.
        let p = Preconditions { if_match: tag("e"), if_unmodified_since: Some(at(0)), ..Default::default() };
        assert!(p.check("e", 50_000, true).is_ok());
        // If-None-Match does not match, If-Modified-Since would say 304: 200.
        let p = Preconditions { if_none_match: tag("x"), if_modified_since: Some(at(100)), ..Default::default() };
        assert!(p.check("e", 50_000, true).is_ok());
    }
}
