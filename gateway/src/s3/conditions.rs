//! Conditional requests (RFC 9110 §13 as S3 applies them): `If-Match`,
//! `If-None-Match`, `If-Modified-Since`, `If-Unmodified-Since` on GET and HEAD,
//! and the `x-amz-copy-source-if-*` family on copies.
//!
//! Order, as S3 documents it: a present If-Match decides alone over
//! If-Unmodified-Since (412 when it fails); a present If-None-Match decides
//! alone over If-Modified-Since (304 on GET/HEAD, 412 on a copy source).
//! Dates compare at whole seconds, as HTTP dates carry no more.

use s3s::S3Error;
use s3s::dto::{ETagCondition, Timestamp, TimestampFormat};
use sillok_model::manifest::Manifest;

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
                if let Some(t) = &self.if_unmodified_since
                    && modified_s > seconds(t)
                {
                    return Err(GatewayError::PreconditionFailed);
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
                if let Some(t) = &self.if_modified_since
                    && modified_s <= seconds(t)
                {
                    return Err(not_modified());
                }
            }
        }
        Ok(())
    }
}

/// The preconditions of a GET or HEAD of object `m`. A 304 carries what
/// RFC 9110 (§15.4.5) asks of it, the headers a 200 would have sent among
/// ETag, Cache-Control and Expires, and Last-Modified as S3 adds it; it has
/// no body (hyper sends none with a 304).
pub fn check_read(p: &Preconditions, m: &Manifest) -> Result<(), S3Error> {
    match p.check(&m.etag, m.last_modified_ms, true) {
        Err(GatewayError::NotModified) => {
            let mut e = S3Error::from(GatewayError::NotModified);
            e.set_headers(not_modified_headers(m));
            Err(e)
        }
        r => r.map_err(S3Error::from),
    }
}

fn not_modified_headers(m: &Manifest) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    let mut put = |name: &'static str, v: String| {
        if let Ok(v) = http::HeaderValue::from_str(&v) {
            h.insert(name, v);
        }
    };
    put("etag", format!("\"{}\"", m.etag));
    let mut date = Vec::new();
    if super::fields::timestamp_ms(m.last_modified_ms).format(TimestampFormat::HttpDate, &mut date).is_ok() {
        put("last-modified", String::from_utf8_lossy(&date).into_owned());
    }
    for name in ["cache-control", "expires"] {
        if let Some(v) = m.headers.get(name) {
            put(name, v.clone());
        }
    }
    h
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
    fn a_304_carries_the_validators() {
        let mut m = Manifest::tombstone("b", "k");
        m.etag = "abc".into();
        m.last_modified_ms = 784_111_777_000;
        m.headers.insert("cache-control".into(), "max-age=60".into());
        m.headers.insert("content-disposition".into(), "inline".into());
        let p = Preconditions { if_none_match: tag("abc"), ..Default::default() };
        let e = check_read(&p, &m).unwrap_err();
        assert_eq!(e.status_code(), Some(http::StatusCode::NOT_MODIFIED));
        let h = e.headers().expect("headers");
        assert_eq!(h.get("etag").unwrap(), "\"abc\"");
        assert_eq!(h.get("last-modified").unwrap(), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(h.get("cache-control").unwrap(), "max-age=60");
        assert!(h.get("content-disposition").is_none());
        let p = Preconditions { if_match: tag("zzz"), ..Default::default() };
        assert_eq!(check_read(&p, &m).unwrap_err().status_code(), Some(http::StatusCode::PRECONDITION_FAILED));
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
