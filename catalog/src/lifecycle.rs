//! A bucket's lifecycle configuration as the catalog keeps it.
//!
//! Owns: [`LifecycleConfig`] and its parts (stored in [`crate::state::Bucket`]
//! and replicated with it); S3's rules for a valid configuration
//! ([`LifecycleConfig::validate`], which both the gateway and
//! `Catalog::apply` run); and the one definition of when a rule makes an
//! object expire or an upload be aborted ([`LifecycleConfig::expiry`],
//! [`LifecycleRule::abort_at_ms`]), so the gateway's expirer and anything
//! that reports an expiry decide it the same way. Nothing here knows about
//! HTTP, XML or the clock: callers pass times and the length of a day.
//!
//! What the types cannot hold is what Sillok refuses: there is no Transition
//! of any kind (one storage class). A configuration's shape (one filter form
//! per rule, one kind of expiration) is fixed by the types; the values are
//! checked by `validate`.
//!
//! Time: an age rule (`Days`) makes an object expire at the first "midnight"
//! at or after `last modified + Days × day`, where midnights are the
//! multiples of `day` since the Unix epoch. With S3's day (86,400 s) these
//! are midnights UTC, S3's rule; a shortened day (`--lifecycle-day-s`)
//! scales the rule. A `Date` is an absolute instant (midnight UTC of that
//! date) and is not scaled. Aborts of incomplete uploads use the same
//! rounding from the upload's initiation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// S3's limit on the rules of one configuration.
pub const MAX_RULES: usize = 1000;
/// S3's limit on a rule's ID.
pub const MAX_ID_LEN: usize = 255;
/// S3's day, in milliseconds.
pub const DAY_MS: i64 = 86_400_000;
/// S3's limits on a tag key and value (characters).
pub const MAX_TAG_KEY: usize = 128;
pub const MAX_TAG_VALUE: usize = 256;
/// S3's limit on NewerNoncurrentVersions.
pub const MAX_NEWER_NONCURRENT: i64 = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleConfig {
    pub rules: Vec<LifecycleRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleRule {
    /// Always set: the gateway gives a rule without one an ID, as S3 does.
    pub id: String,
    /// `Status`: Enabled (true) or Disabled.
    pub enabled: bool,
    pub filter: Filter,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<Expiration>,
    /// AbortIncompleteMultipartUpload's DaysAfterInitiation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_incomplete_upload_days: Option<i64>,
    /// Stored and returned; not carried out (Sillok has no noncurrent
    /// versions yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noncurrent_expiration: Option<NoncurrentExpiration>,
}

/// Which objects a rule applies to, in the form it was given (so that
/// GetBucketLifecycleConfiguration answers what was put).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    /// The rule's own `<Prefix>` (S3's deprecated form, without `<Filter>`).
    LegacyPrefix(String),
    /// An empty `<Filter>`: every object.
    All,
    Prefix(String),
    Tag(Tag),
    ObjectSizeGreaterThan(i64),
    ObjectSizeLessThan(i64),
    And(AndFilter),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AndFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_size_greater_than: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_size_less_than: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expiration {
    /// Days after the object's last modification (rounded up to a midnight).
    Days(i64),
    /// Milliseconds since the Unix epoch; midnight UTC.
    Date(i64),
    /// Stored and returned; nothing to do while there are no delete markers.
    ExpiredObjectDeleteMarker(bool),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoncurrentExpiration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newer_versions: Option<i64>,
}

/// Why a configuration is not valid (or not one Sillok takes).
/// [`LifecycleError::s3_code`] names S3's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    /// The XML is well formed but not a lifecycle configuration S3 accepts
    /// (a second filter form, no filter, both Days and Date...).
    #[error("The XML you provided was not well-formed or did not validate against our published schema: {0}")]
    Malformed(String),
    #[error("a lifecycle configuration holds at most {MAX_RULES} rules; this one has {0}")]
    TooManyRules(usize),
    #[error("ID length should not exceed allowed limit of {MAX_ID_LEN}")]
    IdTooLong,
    #[error("Rule ID must be unique. Found same ID for more than one rule: {0:?}")]
    DuplicateId(String),
    #[error("At least one action needs to be specified in a rule (rule {0:?})")]
    NoAction(String),
    #[error("'Days' for Expiration action must be a positive integer")]
    ExpirationDays,
    #[error("'Date' must be at midnight GMT")]
    DateNotMidnight,
    #[error("'DaysAfterInitiation' for AbortIncompleteMultipartUpload action must be a positive integer")]
    AbortDays,
    #[error("'NoncurrentDays' for NoncurrentVersionExpiration action must be a positive integer")]
    NoncurrentDays,
    #[error("'NewerNoncurrentVersions' must be between 1 and {MAX_NEWER_NONCURRENT}")]
    NewerNoncurrentVersions,
    #[error("AbortIncompleteMultipartUpload cannot be specified with Tags (rule {0:?})")]
    AbortWithTags(String),
    #[error("ExpiredObjectDeleteMarker cannot be specified with Tags (rule {0:?})")]
    DeleteMarkerWithTags(String),
    #[error("ObjectSizeGreaterThan must not be negative and ObjectSizeLessThan must be positive")]
    NegativeSize,
    #[error("ObjectSizeGreaterThan ({0}) must be less than ObjectSizeLessThan ({1})")]
    SizeRange(i64, i64),
    #[error("a filter's tag key must be 1 to {MAX_TAG_KEY} characters and its value at most {MAX_TAG_VALUE}")]
    BadTag,
    #[error("Duplicate Tag Keys are not allowed: {0:?}")]
    DuplicateTagKey(String),
    /// An action Sillok cannot carry out (it has one storage class).
    #[error("{0} is not supported: Sillok keeps every object in its one storage class, STANDARD")]
    Unsupported(&'static str),
}

impl LifecycleError {
    /// The S3 error code to answer with.
    pub fn s3_code(&self) -> &'static str {
        use LifecycleError as E;
        match self {
            E::Malformed(_) | E::TooManyRules(_) => "MalformedXML",
            E::NoAction(_) | E::AbortWithTags(_) | E::DeleteMarkerWithTags(_) | E::Unsupported(_) => "InvalidRequest",
            E::BadTag | E::DuplicateTagKey(_) => "InvalidTag",
            _ => "InvalidArgument",
        }
    }
}

/// `t` rounded up to the next multiple of `day_ms` (a "midnight").
fn round_up_to_midnight(t: i64, day_ms: i64) -> i64 {
    let day = day_ms.max(1);
    let r = t.rem_euclid(day);
    if r == 0 { t } else { t.saturating_add(day - r) }
}

fn check_tag(t: &Tag) -> Result<(), LifecycleError> {
    let k = t.key.chars().count();
    if k == 0 || k > MAX_TAG_KEY || t.value.chars().count() > MAX_TAG_VALUE {
        return Err(LifecycleError::BadTag);
    }
    Ok(())
}

fn check_sizes(gt: Option<i64>, lt: Option<i64>) -> Result<(), LifecycleError> {
    if gt.is_some_and(|g| g < 0) || lt.is_some_and(|l| l <= 0) {
        return Err(LifecycleError::NegativeSize);
    }
    if let (Some(g), Some(l)) = (gt, lt)
        && g >= l
    {
        return Err(LifecycleError::SizeRange(g, l));
    }
    Ok(())
}

impl Filter {
    /// The key prefix every matching object has ("" for none): what the
    /// expirer lists.
    pub fn prefix(&self) -> &str {
        match self {
            Filter::LegacyPrefix(p) | Filter::Prefix(p) => p,
            Filter::And(a) => a.prefix.as_deref().unwrap_or(""),
            _ => "",
        }
    }

    /// The tags a matching object must have (every one, with its value).
    pub fn tags(&self) -> &[Tag] {
        match self {
            Filter::Tag(t) => std::slice::from_ref(t),
            Filter::And(a) => &a.tags,
            _ => &[],
        }
    }

    fn sizes(&self) -> (Option<i64>, Option<i64>) {
        match self {
            Filter::ObjectSizeGreaterThan(g) => (Some(*g), None),
            Filter::ObjectSizeLessThan(l) => (None, Some(*l)),
            Filter::And(a) => (a.object_size_greater_than, a.object_size_less_than),
            _ => (None, None),
        }
    }

    /// Whether the key and size match (tags aside): what a listing can tell.
    pub fn matches_key_and_size(&self, key: &str, size: u64) -> bool {
        let (gt, lt) = self.sizes();
        let size = i128::from(size);
        key.starts_with(self.prefix())
            && gt.is_none_or(|g| size > i128::from(g))
            && lt.is_none_or(|l| size < i128::from(l))
    }

    /// Whether an object with this key, size and tags matches.
    pub fn matches(&self, key: &str, size: u64, tags: &BTreeMap<String, String>) -> bool {
        self.matches_key_and_size(key, size)
            && self.tags().iter().all(|t| tags.get(&t.key).is_some_and(|v| *v == t.value))
    }

    fn validate(&self) -> Result<(), LifecycleError> {
        let (gt, lt) = self.sizes();
        check_sizes(gt, lt)?;
        let tags = self.tags();
        tags.iter().try_for_each(check_tag)?;
        for (i, t) in tags.iter().enumerate() {
            if tags[..i].iter().any(|u| u.key == t.key) {
                return Err(LifecycleError::DuplicateTagKey(t.key.clone()));
            }
        }
        Ok(())
    }
}

impl LifecycleRule {
    /// When an object last modified at `last_modified_ms` expires under this
    /// rule (whether or not it matches the filter); `None`: the rule expires
    /// no current objects.
    pub fn expires_at_ms(&self, last_modified_ms: i64, day_ms: i64) -> Option<i64> {
        match self.expiration.as_ref()? {
            Expiration::Days(d) => {
                Some(round_up_to_midnight(last_modified_ms.saturating_add(d.saturating_mul(day_ms)), day_ms))
            }
            Expiration::Date(at) => Some(*at),
            Expiration::ExpiredObjectDeleteMarker(_) => None,
        }
    }

    /// When an upload initiated at `initiated_ms` is to be aborted under
    /// this rule; `None`: the rule aborts no uploads.
    pub fn abort_at_ms(&self, initiated_ms: i64, day_ms: i64) -> Option<i64> {
        let d = self.abort_incomplete_upload_days?;
        Some(round_up_to_midnight(initiated_ms.saturating_add(d.saturating_mul(day_ms)), day_ms))
    }

    fn validate(&self) -> Result<(), LifecycleError> {
        if self.id.chars().count() > MAX_ID_LEN {
            return Err(LifecycleError::IdTooLong);
        }
        if self.expiration.is_none()
            && self.abort_incomplete_upload_days.is_none()
            && self.noncurrent_expiration.is_none()
        {
            return Err(LifecycleError::NoAction(self.id.clone()));
        }
        self.filter.validate()?;
        let tagged = !self.filter.tags().is_empty();
        match self.expiration {
            Some(Expiration::Days(d)) if d <= 0 => return Err(LifecycleError::ExpirationDays),
            Some(Expiration::Date(at)) if at.rem_euclid(DAY_MS) != 0 => return Err(LifecycleError::DateNotMidnight),
            Some(Expiration::ExpiredObjectDeleteMarker(_)) if tagged => {
                return Err(LifecycleError::DeleteMarkerWithTags(self.id.clone()));
            }
            _ => {}
        }
        if let Some(d) = self.abort_incomplete_upload_days {
            if d <= 0 {
                return Err(LifecycleError::AbortDays);
            }
            if tagged {
                return Err(LifecycleError::AbortWithTags(self.id.clone()));
            }
        }
        if let Some(n) = &self.noncurrent_expiration {
            if n.days.is_some_and(|d| d <= 0) {
                return Err(LifecycleError::NoncurrentDays);
            }
            if n.newer_versions.is_some_and(|v| !(1..=MAX_NEWER_NONCURRENT).contains(&v)) {
                return Err(LifecycleError::NewerNoncurrentVersions);
            }
            if n.days.is_none() {
                return Err(LifecycleError::Malformed("NoncurrentVersionExpiration needs NoncurrentDays".into()));
            }
        }
        Ok(())
    }
}

impl LifecycleConfig {
    /// Checks S3's rules (see [`LifecycleError`] for each).
    pub fn validate(&self) -> Result<(), LifecycleError> {
        if self.rules.is_empty() {
            return Err(LifecycleError::Malformed("a lifecycle configuration needs at least one Rule".into()));
        }
        if self.rules.len() > MAX_RULES {
            return Err(LifecycleError::TooManyRules(self.rules.len()));
        }
        for (i, r) in self.rules.iter().enumerate() {
            r.validate()?;
            if self.rules[..i].iter().any(|o| o.id == r.id) {
                return Err(LifecycleError::DuplicateId(r.id.clone()));
            }
        }
        Ok(())
    }

    /// Whether any rule is enabled (a bucket whose rules are all disabled
    /// has nothing for the expirer).
    pub fn any_enabled(&self) -> bool {
        self.rules.iter().any(|r| r.enabled)
    }

    /// When an object with this key, size, tags and last modification
    /// expires, and the rule that decides it (the earliest of the enabled
    /// rules that match); `None`: no rule expires it.
    pub fn expiry(
        &self,
        key: &str,
        size: u64,
        tags: &BTreeMap<String, String>,
        last_modified_ms: i64,
        day_ms: i64,
    ) -> Option<(i64, &LifecycleRule)> {
        self.rules
            .iter()
            .filter(|r| r.enabled && r.filter.matches(key, size, tags))
            .filter_map(|r| Some((r.expires_at_ms(last_modified_ms, day_ms)?, r)))
            .min_by_key(|(at, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, filter: Filter, expiration: Option<Expiration>) -> LifecycleRule {
        LifecycleRule {
            id: id.into(),
            enabled: true,
            filter,
            expiration,
            abort_incomplete_upload_days: None,
            noncurrent_expiration: None,
        }
    }

    fn tag(k: &str, v: &str) -> Tag {
        Tag { key: k.into(), value: v.into() }
    }

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn age_expiry_rounds_up_to_the_next_midnight_of_the_day_in_use() {
        let r = rule("a", Filter::All, Some(Expiration::Days(1)));
        // 2026-01-15 10:30 UTC + 1 day → 2026-01-17 00:00 UTC (S3's example shape).
        let jan15_1030 = 1_768_473_000_000;
        assert_eq!(jan15_1030 % DAY_MS, 37_800_000);
        let jan17 = jan15_1030 - 37_800_000 + 2 * DAY_MS;
        assert_eq!(r.expires_at_ms(jan15_1030, DAY_MS), Some(jan17));
        // Exactly at a midnight: that midnight.
        assert_eq!(r.expires_at_ms(jan17 - DAY_MS, DAY_MS), Some(jan17));
        // A 2 s day: last modified at 5.5 s → 7.5 s → rounded up to 8 s.
        assert_eq!(r.expires_at_ms(5_500, 2_000), Some(8_000));
        assert_eq!(r.expires_at_ms(6_000, 2_000), Some(8_000));
        let d = rule("d", Filter::All, Some(Expiration::Date(jan17)));
        assert_eq!(d.expires_at_ms(0, 2_000), Some(jan17), "a date is not scaled");
        let m = rule("m", Filter::All, Some(Expiration::ExpiredObjectDeleteMarker(true)));
        assert_eq!(m.expires_at_ms(0, DAY_MS), None);
        let mut a = rule("u", Filter::All, None);
        a.abort_incomplete_upload_days = Some(3);
        assert_eq!(a.abort_at_ms(1_000, 2_000), Some(8_000));
        assert_eq!(a.expires_at_ms(1_000, 2_000), None);
        assert_eq!(r.abort_at_ms(1_000, 2_000), None);
        // No overflow on absurd inputs.
        let huge = rule("h", Filter::All, Some(Expiration::Days(i64::MAX)));
        assert!(huge.expires_at_ms(i64::MAX - 5, DAY_MS).is_some());
    }

    #[test]
    fn filters_match_prefix_tags_and_sizes() {
        let none = tags(&[]);
        let red = tags(&[("colour", "red"), ("x", "1")]);
        assert!(Filter::All.matches("any", 0, &none));
        assert!(Filter::LegacyPrefix("tmp/".into()).matches("tmp/a", 1, &none));
        assert!(!Filter::Prefix("tmp/".into()).matches("keep/tmp/a", 1, &none));
        assert!(Filter::Tag(tag("colour", "red")).matches("k", 1, &red));
        assert!(!Filter::Tag(tag("colour", "blue")).matches("k", 1, &red));
        assert!(!Filter::Tag(tag("colour", "red")).matches("k", 1, &none));
        assert!(Filter::ObjectSizeGreaterThan(10).matches("k", 11, &none));
        assert!(!Filter::ObjectSizeGreaterThan(10).matches("k", 10, &none));
        assert!(Filter::ObjectSizeLessThan(10).matches("k", 9, &none));
        assert!(!Filter::ObjectSizeLessThan(10).matches("k", 10, &none));
        let and = Filter::And(AndFilter {
            prefix: Some("tmp/".into()),
            tags: vec![tag("colour", "red"), tag("x", "1")],
            object_size_greater_than: Some(0),
            object_size_less_than: Some(100),
        });
        assert!(and.matches("tmp/a", 5, &red));
        assert!(and.matches_key_and_size("tmp/a", 5));
        assert!(!and.matches("tmp/a", 5, &tags(&[("colour", "red")])), "every tag is needed");
        assert!(!and.matches("tmp/a", 0, &red));
        assert!(!and.matches("tmp/a", 100, &red));
        assert!(!and.matches("tm/a", 5, &red));
        assert_eq!(and.prefix(), "tmp/");
    }

    #[test]
    fn the_earliest_enabled_matching_rule_decides() {
        let mut c = LifecycleConfig {
            rules: vec![
                rule("slow", Filter::All, Some(Expiration::Days(30))),
                rule("fast", Filter::Prefix("tmp/".into()), Some(Expiration::Days(1))),
                rule("tagged", Filter::Tag(tag("t", "1")), Some(Expiration::Days(2))),
            ],
        };
        let none = tags(&[]);
        let (at, r) = c.expiry("tmp/a", 1, &none, 0, DAY_MS).unwrap();
        assert_eq!((at, r.id.as_str()), (DAY_MS, "fast"));
        assert_eq!(c.expiry("other", 1, &none, 0, DAY_MS).unwrap().1.id, "slow");
        assert_eq!(c.expiry("other", 1, &tags(&[("t", "1")]), 0, DAY_MS).unwrap().1.id, "tagged");
        c.rules[1].enabled = false;
        assert_eq!(c.expiry("tmp/a", 1, &none, 0, DAY_MS).unwrap().1.id, "slow");
        c.rules[0].enabled = false;
        assert!(c.expiry("tmp/a", 1, &none, 0, DAY_MS).is_none());
        assert!(c.any_enabled());
        c.rules[2].enabled = false;
        assert!(!c.any_enabled());
    }

    #[test]
    fn s3_rules_for_a_valid_configuration() {
        let ok = rule("r", Filter::Prefix("p/".into()), Some(Expiration::Days(1)));
        let with = |f: &dyn Fn(&mut LifecycleRule)| {
            let mut r = ok.clone();
            f(&mut r);
            LifecycleConfig { rules: vec![r] }.validate()
        };
        assert_eq!(with(&|_| {}), Ok(()));
        let code = |r: Result<(), LifecycleError>| r.unwrap_err().s3_code();
        assert_eq!(code(LifecycleConfig { rules: vec![] }.validate()), "MalformedXML");
        let many = |n: usize| LifecycleConfig {
            rules: (0..n).map(|i| LifecycleRule { id: i.to_string(), ..ok.clone() }).collect(),
        };
        assert_eq!(many(1000).validate(), Ok(()));
        assert_eq!(many(1001).validate(), Err(LifecycleError::TooManyRules(1001)));
        assert_eq!(
            LifecycleConfig { rules: vec![ok.clone(), ok.clone()] }.validate().unwrap_err().s3_code(),
            "InvalidArgument"
        );
        assert_eq!(with(&|r| r.id = "i".repeat(256)), Err(LifecycleError::IdTooLong));
        assert_eq!(with(&|r| r.id = "é".repeat(255)), Ok(()), "characters, not bytes");
        assert_eq!(with(&|r| r.expiration = Some(Expiration::Days(0))), Err(LifecycleError::ExpirationDays));
        assert_eq!(with(&|r| r.expiration = Some(Expiration::Days(-3))), Err(LifecycleError::ExpirationDays));
        assert_eq!(with(&|r| r.expiration = Some(Expiration::Date(DAY_MS * 20_000))), Ok(()));
        assert_eq!(
            with(&|r| r.expiration = Some(Expiration::Date(DAY_MS * 20_000 + 1000))),
            Err(LifecycleError::DateNotMidnight)
        );
        assert_eq!(code(with(&|r| r.expiration = None)), "InvalidRequest");
        assert_eq!(
            with(&|r| {
                r.expiration = None;
                r.abort_incomplete_upload_days = Some(0)
            }),
            Err(LifecycleError::AbortDays)
        );
        assert_eq!(
            with(&|r| {
                r.filter = Filter::Tag(tag("a", "b"));
                r.abort_incomplete_upload_days = Some(1)
            }),
            Err(LifecycleError::AbortWithTags("r".into()))
        );
        assert_eq!(
            code(with(&|r| {
                r.filter = Filter::Tag(tag("a", "b"));
                r.expiration = Some(Expiration::ExpiredObjectDeleteMarker(true))
            })),
            "InvalidRequest"
        );
        assert_eq!(with(&|r| r.filter = Filter::ObjectSizeLessThan(0)), Err(LifecycleError::NegativeSize));
        assert_eq!(with(&|r| r.filter = Filter::ObjectSizeGreaterThan(-1)), Err(LifecycleError::NegativeSize));
        let range =
            AndFilter { object_size_greater_than: Some(10), object_size_less_than: Some(10), ..Default::default() };
        assert_eq!(with(&|r| r.filter = Filter::And(range.clone())), Err(LifecycleError::SizeRange(10, 10)));
        let dup = AndFilter { tags: vec![tag("a", "1"), tag("a", "2")], ..Default::default() };
        assert_eq!(code(with(&|r| r.filter = Filter::And(dup.clone()))), "InvalidTag");
        assert_eq!(with(&|r| r.filter = Filter::Tag(tag("", "x"))), Err(LifecycleError::BadTag));
        assert_eq!(with(&|r| r.filter = Filter::Tag(tag(&"k".repeat(129), "x"))), Err(LifecycleError::BadTag));
        let nc = |days, newer| Some(NoncurrentExpiration { days, newer_versions: newer });
        assert_eq!(with(&|r| r.noncurrent_expiration = nc(Some(30), Some(5))), Ok(()));
        assert_eq!(with(&|r| r.noncurrent_expiration = nc(Some(0), None)), Err(LifecycleError::NoncurrentDays));
        assert_eq!(
            with(&|r| r.noncurrent_expiration = nc(Some(1), Some(101))),
            Err(LifecycleError::NewerNoncurrentVersions)
        );
        assert_eq!(code(with(&|r| r.noncurrent_expiration = nc(None, None))), "MalformedXML");
        assert_eq!(LifecycleError::Unsupported("Transition").s3_code(), "InvalidRequest");
    }

    #[test]
    fn a_configuration_round_trips_as_json() {
        let c = LifecycleConfig {
            rules: vec![
                rule("legacy", Filter::LegacyPrefix("".into()), Some(Expiration::Date(DAY_MS))),
                LifecycleRule {
                    abort_incomplete_upload_days: Some(7),
                    noncurrent_expiration: Some(NoncurrentExpiration { days: Some(3), newer_versions: None }),
                    enabled: false,
                    ..rule("and", Filter::And(AndFilter { prefix: Some("a/".into()), ..Default::default() }), None)
                },
            ],
        };
        let back: LifecycleConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
