//! Put/Get/DeleteBucketLifecycleConfiguration at the S3 edge: s3s's
//! `BucketLifecycleConfiguration` to and from the catalog's
//! [`LifecycleConfig`]. The XML's shape is checked here (one filter form per
//! rule, one kind of expiration, a Status of Enabled or Disabled; anything
//! else is `MalformedXML`), actions Sillok cannot carry out (Transition,
//! NoncurrentVersionTransition) are refused with `InvalidRequest` rather
//! than stored, a rule without an ID gets one (as S3 gives it), and the
//! values are checked by [`LifecycleConfig::validate`] before the
//! configuration is proposed. The expirer that acts on it is
//! `crate::lifecycle`'s.

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request};
use sillok_catalog::lifecycle::{
    self as lc, AndFilter, Expiration, Filter, LifecycleConfig, LifecycleError, NoncurrentExpiration,
};

use super::SillokS3;
use super::fields::timestamp_ms;

fn malformed(why: &str) -> LifecycleError {
    LifecycleError::Malformed(why.into())
}

fn tag_of(t: Tag) -> Result<lc::Tag, LifecycleError> {
    match (t.key, t.value) {
        (Some(key), Some(value)) => Ok(lc::Tag { key, value }),
        _ => Err(malformed("a Tag needs a Key and a Value")),
    }
}

fn filter_of(f: LifecycleRuleFilter) -> Result<Filter, LifecycleError> {
    let forms = [
        f.and.is_some(),
        f.prefix.is_some(),
        f.tag.is_some(),
        f.object_size_greater_than.is_some(),
        f.object_size_less_than.is_some(),
    ];
    if forms.iter().filter(|x| **x).count() > 1 {
        return Err(malformed(
            "a Filter holds one of Prefix, Tag, ObjectSizeGreaterThan, ObjectSizeLessThan and And (And combines them)",
        ));
    }
    Ok(if let Some(a) = f.and {
        Filter::And(AndFilter {
            prefix: a.prefix,
            tags: a.tags.unwrap_or_default().into_iter().map(tag_of).collect::<Result<_, _>>()?,
            object_size_greater_than: a.object_size_greater_than,
            object_size_less_than: a.object_size_less_than,
        })
    } else if let Some(p) = f.prefix {
        Filter::Prefix(p)
    } else if let Some(t) = f.tag {
        Filter::Tag(tag_of(t)?)
    } else if let Some(g) = f.object_size_greater_than {
        Filter::ObjectSizeGreaterThan(g)
    } else if let Some(l) = f.object_size_less_than {
        Filter::ObjectSizeLessThan(l)
    } else {
        Filter::All
    })
}

fn expiration_of(e: LifecycleExpiration) -> Result<Expiration, LifecycleError> {
    match (e.days, e.date, e.expired_object_delete_marker) {
        (Some(d), None, None) => Ok(Expiration::Days(i64::from(d))),
        (None, Some(date), None) => {
            let t = time::OffsetDateTime::from(date);
            Ok(Expiration::Date((t.unix_timestamp_nanos() / 1_000_000) as i64))
        }
        (None, None, Some(m)) => Ok(Expiration::ExpiredObjectDeleteMarker(m)),
        (None, None, None) => Err(malformed("Expiration needs Days, Date or ExpiredObjectDeleteMarker")),
        _ => Err(malformed("Expiration takes only one of Days, Date and ExpiredObjectDeleteMarker")),
    }
}

/// A rule as the catalog keeps it; `new_id` names a rule that has no ID.
fn rule_of(r: LifecycleRule, new_id: impl FnOnce() -> String) -> Result<lc::LifecycleRule, LifecycleError> {
    if r.transitions.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(LifecycleError::Unsupported("Transition"));
    }
    if r.noncurrent_version_transitions.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(LifecycleError::Unsupported("NoncurrentVersionTransition"));
    }
    let enabled = match r.status.as_str() {
        ExpirationStatus::ENABLED => true,
        ExpirationStatus::DISABLED => false,
        _ => return Err(malformed("a rule's Status is Enabled or Disabled")),
    };
    let filter = match (r.filter, r.prefix) {
        (Some(_), Some(_)) => return Err(malformed("a rule has a Filter or a Prefix, not both")),
        (None, None) => return Err(malformed("a rule needs a Filter (or the older Prefix)")),
        (None, Some(p)) => Filter::LegacyPrefix(p),
        (Some(f), None) => filter_of(f)?,
    };
    let abort_incomplete_upload_days = match r.abort_incomplete_multipart_upload {
        None => None,
        Some(a) => Some(i64::from(
            a.days_after_initiation
                .ok_or_else(|| malformed("AbortIncompleteMultipartUpload needs DaysAfterInitiation"))?,
        )),
    };
    Ok(lc::LifecycleRule {
        id: r.id.filter(|id| !id.is_empty()).unwrap_or_else(new_id),
        enabled,
        filter,
        expiration: r.expiration.map(expiration_of).transpose()?,
        abort_incomplete_upload_days,
        noncurrent_expiration: r.noncurrent_version_expiration.map(|n| NoncurrentExpiration {
            days: n.noncurrent_days.map(i64::from),
            newer_versions: n.newer_noncurrent_versions.map(i64::from),
        }),
    })
}

/// The stored values came from `i32`s and were validated; saturate anyway.
fn i32_of(v: i64) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn dto_tag(t: lc::Tag) -> Tag {
    Tag { key: Some(t.key), value: Some(t.value) }
}

fn dto_of(r: lc::LifecycleRule) -> LifecycleRule {
    let (filter, prefix) = match r.filter {
        Filter::LegacyPrefix(p) => (None, Some(p)),
        Filter::All => (Some(LifecycleRuleFilter::default()), None),
        Filter::Prefix(p) => (Some(LifecycleRuleFilter { prefix: Some(p), ..Default::default() }), None),
        Filter::Tag(t) => (Some(LifecycleRuleFilter { tag: Some(dto_tag(t)), ..Default::default() }), None),
        Filter::ObjectSizeGreaterThan(g) => {
            (Some(LifecycleRuleFilter { object_size_greater_than: Some(g), ..Default::default() }), None)
        }
        Filter::ObjectSizeLessThan(l) => {
            (Some(LifecycleRuleFilter { object_size_less_than: Some(l), ..Default::default() }), None)
        }
        Filter::And(a) => {
            let and = LifecycleRuleAndOperator {
                prefix: a.prefix,
                tags: (!a.tags.is_empty()).then(|| a.tags.into_iter().map(dto_tag).collect()),
                object_size_greater_than: a.object_size_greater_than,
                object_size_less_than: a.object_size_less_than,
            };
            (Some(LifecycleRuleFilter { and: Some(and), ..Default::default() }), None)
        }
    };
    let expiration = r.expiration.map(|e| match e {
        Expiration::Days(d) => LifecycleExpiration { days: Some(i32_of(d)), ..Default::default() },
        Expiration::Date(ms) => LifecycleExpiration { date: Some(timestamp_ms(ms)), ..Default::default() },
        Expiration::ExpiredObjectDeleteMarker(m) => {
            LifecycleExpiration { expired_object_delete_marker: Some(m), ..Default::default() }
        }
    });
    LifecycleRule {
        abort_incomplete_multipart_upload: r
            .abort_incomplete_upload_days
            .map(|d| AbortIncompleteMultipartUpload { days_after_initiation: Some(i32_of(d)) }),
        expiration,
        filter,
        id: Some(r.id),
        noncurrent_version_expiration: r.noncurrent_expiration.map(|n| NoncurrentVersionExpiration {
            noncurrent_days: n.days.map(i32_of),
            newer_noncurrent_versions: n.newer_versions.map(i32_of),
        }),
        noncurrent_version_transitions: None,
        prefix,
        status: ExpirationStatus::from_static(if r.enabled {
            ExpirationStatus::ENABLED
        } else {
            ExpirationStatus::DISABLED
        }),
        transitions: None,
    }
}

/// The catalog's configuration for a request's, or the error S3 answers.
fn config_of(c: Option<BucketLifecycleConfiguration>) -> Result<LifecycleConfig, LifecycleError> {
    let c = c.ok_or_else(|| malformed("the request has no LifecycleConfiguration"))?;
    let rules = c
        .rules
        .into_iter()
        .map(|r| rule_of(r, || uuid::Uuid::new_v4().simple().to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let config = LifecycleConfig { rules };
    config.validate()?;
    Ok(config)
}

fn s3_error_of(e: LifecycleError) -> S3Error {
    let code = match e.s3_code() {
        "MalformedXML" => S3ErrorCode::MalformedXML,
        "InvalidRequest" => S3ErrorCode::InvalidRequest,
        "InvalidTag" => S3ErrorCode::InvalidTag,
        _ => S3ErrorCode::InvalidArgument,
    };
    S3Error::with_message(code, e.to_string())
}

impl SillokS3 {
    pub(super) async fn do_put_bucket_lifecycle(
        &self,
        req: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> Result<PutBucketLifecycleConfigurationOutput, S3Error> {
        let input = req.input;
        self.catalog.require_bucket(&input.bucket).await?;
        let config = config_of(input.lifecycle_configuration).map_err(s3_error_of)?;
        self.catalog.set_bucket_lifecycle(&input.bucket, Some(config)).await?;
        Ok(PutBucketLifecycleConfigurationOutput::default())
    }

    pub(super) async fn do_get_bucket_lifecycle(
        &self,
        input: GetBucketLifecycleConfigurationInput,
    ) -> Result<GetBucketLifecycleConfigurationOutput, S3Error> {
        let Some(config) = self.catalog.bucket_lifecycle(&input.bucket).await? else {
            return Err(S3Error::with_message(
                S3ErrorCode::NoSuchLifecycleConfiguration,
                "The lifecycle configuration does not exist",
            ));
        };
        Ok(GetBucketLifecycleConfigurationOutput {
            rules: Some(config.rules.into_iter().map(dto_of).collect()),
            ..Default::default()
        })
    }

    pub(super) async fn do_delete_bucket_lifecycle(
        &self,
        input: DeleteBucketLifecycleInput,
    ) -> Result<DeleteBucketLifecycleOutput, S3Error> {
        // S3 answers 204 whether or not the bucket had a configuration.
        if self.catalog.bucket_lifecycle(&input.bucket).await?.is_some() {
            self.catalog.set_bucket_lifecycle(&input.bucket, None).await?;
        }
        Ok(DeleteBucketLifecycleOutput::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dto_rule(filter: Option<LifecycleRuleFilter>, prefix: Option<&str>) -> LifecycleRule {
        LifecycleRule {
            abort_incomplete_multipart_upload: None,
            expiration: Some(LifecycleExpiration { days: Some(3), ..Default::default() }),
            filter,
            id: Some("r".into()),
            noncurrent_version_expiration: None,
            noncurrent_version_transitions: None,
            prefix: prefix.map(str::to_string),
            status: ExpirationStatus::from_static(ExpirationStatus::ENABLED),
            transitions: None,
        }
    }

    fn stored(r: LifecycleRule) -> Result<lc::LifecycleRule, LifecycleError> {
        rule_of(r, || "generated".into())
    }

    #[test]
    fn rules_round_trip_between_s3s_and_the_catalog() {
        let tag = |k: &str, v: &str| Tag { key: Some(k.into()), value: Some(v.into()) };
        let and = LifecycleRuleAndOperator {
            prefix: Some("tmp/".into()),
            tags: Some(vec![tag("a", "1"), tag("b", "")]),
            object_size_greater_than: Some(10),
            object_size_less_than: None,
        };
        let filters = [
            Some(LifecycleRuleFilter::default()),
            Some(LifecycleRuleFilter { prefix: Some("p/".into()), ..Default::default() }),
            Some(LifecycleRuleFilter { tag: Some(tag("k", "v")), ..Default::default() }),
            Some(LifecycleRuleFilter { object_size_less_than: Some(5), ..Default::default() }),
            Some(LifecycleRuleFilter { and: Some(and), ..Default::default() }),
        ];
        for f in filters {
            let dto = dto_rule(f, None);
            let back = dto_of(stored(dto.clone()).unwrap());
            assert_eq!(format!("{back:?}"), format!("{dto:?}"));
        }
        let legacy = dto_rule(None, Some("old/"));
        let s = stored(legacy.clone()).unwrap();
        assert_eq!(s.filter, Filter::LegacyPrefix("old/".into()));
        assert_eq!(format!("{:?}", dto_of(s)), format!("{legacy:?}"));
        // A date: midnight UTC kept as milliseconds, and back.
        let mut dated = dto_rule(Some(LifecycleRuleFilter::default()), None);
        dated.expiration =
            Some(LifecycleExpiration { date: Some(timestamp_ms(lc::DAY_MS * 20_000)), ..Default::default() });
        dated.abort_incomplete_multipart_upload =
            Some(AbortIncompleteMultipartUpload { days_after_initiation: Some(2) });
        dated.noncurrent_version_expiration =
            Some(NoncurrentVersionExpiration { noncurrent_days: Some(4), newer_noncurrent_versions: None });
        let s = stored(dated.clone()).unwrap();
        assert_eq!(s.expiration, Some(Expiration::Date(lc::DAY_MS * 20_000)));
        assert_eq!(format!("{:?}", dto_of(s)), format!("{dated:?}"));
        // No ID: one is given.
        let mut anon = dto_rule(Some(LifecycleRuleFilter::default()), None);
        anon.id = None;
        assert_eq!(stored(anon).unwrap().id, "generated");
    }

    #[test]
    fn shapes_s3_refuses_and_actions_sillok_cannot_do() {
        let code = |r: LifecycleRule| stored(r).unwrap_err().s3_code();
        let all = || Some(LifecycleRuleFilter::default());
        assert_eq!(code(dto_rule(all(), Some("p/"))), "MalformedXML");
        assert_eq!(code(dto_rule(None, None)), "MalformedXML");
        let two =
            LifecycleRuleFilter { prefix: Some("a".into()), object_size_less_than: Some(3), ..Default::default() };
        assert_eq!(code(dto_rule(Some(two), None)), "MalformedXML");
        let mut bad_status = dto_rule(all(), None);
        bad_status.status = ExpirationStatus::from_static("enabled");
        assert_eq!(code(bad_status), "MalformedXML");
        let mut both = dto_rule(all(), None);
        both.expiration =
            Some(LifecycleExpiration { days: Some(1), date: Some(timestamp_ms(0)), ..Default::default() });
        assert_eq!(code(both), "MalformedXML");
        let mut empty = dto_rule(all(), None);
        empty.expiration = Some(LifecycleExpiration::default());
        assert_eq!(code(empty), "MalformedXML");
        let mut transition = dto_rule(all(), None);
        transition.transitions = Some(vec![Transition { days: Some(30), ..Default::default() }]);
        let e = stored(transition).unwrap_err();
        assert_eq!((e.s3_code(), e.to_string().contains("Transition is not supported")), ("InvalidRequest", true));
        let mut nct = dto_rule(all(), None);
        nct.noncurrent_version_transitions = Some(vec![NoncurrentVersionTransition::default()]);
        assert_eq!(stored(nct).unwrap_err(), LifecycleError::Unsupported("NoncurrentVersionTransition"));
        // Values are the catalog's to judge.
        let mut zero = dto_rule(all(), None);
        zero.expiration = Some(LifecycleExpiration { days: Some(0), ..Default::default() });
        let c = LifecycleConfig { rules: vec![stored(zero).unwrap()] };
        assert_eq!(c.validate(), Err(LifecycleError::ExpirationDays));
        assert_eq!(config_of(None).unwrap_err().s3_code(), "MalformedXML");
    }
}
