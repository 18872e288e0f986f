//! A bucket's CORS configuration as the catalog keeps it.
//!
//! Owns: [`CorsConfig`] and [`CorsRule`] (stored in [`crate::state::Bucket`]
//! and replicated with it), S3's rules for a valid configuration
//! ([`CorsConfig::validate`], which both the gateway and `Catalog::apply`
//! run), and which rule a request matches ([`CorsConfig::find`]), so the
//! preflight and the headers on actual requests are decided in one place.
//! Nothing here knows about HTTP.
//!
//! S3's rules, as its documentation states them: 1 to 100 rules; each has at
//! least one AllowedOrigin and one AllowedMethod; methods are GET, PUT, POST,
//! DELETE and HEAD (exact case); an AllowedOrigin or AllowedHeader holds at
//! most one `*`; an ExposeHeader holds none; an ID is at most 255 characters.
//! Origins and methods match case-sensitively, headers case-insensitively; the
//! first rule that matches wins.

use serde::{Deserialize, Serialize};

/// S3's limit on the rules of one configuration.
pub const MAX_RULES: usize = 100;
/// S3's limit on a rule's ID.
pub const MAX_ID_LEN: usize = 255;
/// The methods a rule may allow.
pub const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "HEAD"];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsConfig {
    pub rules: Vec<CorsRule>,
}

/// Why a configuration is not valid. [`CorsError::s3_code`] names S3's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorsError {
    #[error("a CORS configuration needs at least one CORSRule")]
    NoRules,
    #[error("a CORS configuration holds at most {MAX_RULES} rules; this one has {0}")]
    TooManyRules(usize),
    #[error("every CORSRule needs at least one AllowedOrigin")]
    NoOrigin,
    #[error("every CORSRule needs at least one AllowedMethod")]
    NoMethod,
    #[error("Found unsupported HTTP method in CORS config. Unsupported method is {0}")]
    BadMethod(String),
    #[error("AllowedOrigin \"{0}\" can not have more than one wildcard.")]
    OriginWildcards(String),
    #[error("AllowedHeader \"{0}\" can not have more than one wildcard.")]
    HeaderWildcards(String),
    #[error("ExposeHeader \"{0}\" contains wildcard. Wildcards are not supported for ExposeHeader.")]
    ExposeWildcard(String),
    #[error("a CORSRule ID is at most {MAX_ID_LEN} characters")]
    IdTooLong,
    #[error("MaxAgeSeconds must not be negative (got {0})")]
    NegativeMaxAge(i32),
}

impl CorsError {
    /// The S3 error code S3 answers for it: a configuration whose shape is
    /// wrong is `MalformedXML`, one whose values are not allowed `InvalidRequest`.
    pub fn s3_code(&self) -> &'static str {
        match self {
            CorsError::NoRules | CorsError::TooManyRules(_) | CorsError::NoOrigin | CorsError::NoMethod => {
                "MalformedXML"
            }
            _ => "InvalidRequest",
        }
    }
}

/// Whether `value` matches `pattern`, which holds at most one `*` (any run of
/// characters, possibly empty).
fn wildcard_match(pattern: &str, value: &str, ignore_case: bool) -> bool {
    let eq = |a: &str, b: &str| if ignore_case { a.eq_ignore_ascii_case(b) } else { a == b };
    match pattern.split_once('*') {
        None => eq(pattern, value),
        Some((head, tail)) => {
            value.len() >= head.len() + tail.len()
                && value.is_char_boundary(head.len())
                && value.is_char_boundary(value.len() - tail.len())
                && eq(&value[..head.len()], head)
                && eq(&value[value.len() - tail.len()..], tail)
        }
    }
}

impl CorsRule {
    /// Whether the rule allows requests from `origin`.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|p| wildcard_match(p, origin, false))
    }

    pub fn allows_method(&self, method: &str) -> bool {
        self.allowed_methods.iter().any(|m| m == method)
    }

    /// Whether every header in `headers` is covered by an AllowedHeader.
    pub fn allows_headers<'a>(&self, mut headers: impl Iterator<Item = &'a str>) -> bool {
        headers.all(|h| self.allowed_headers.iter().any(|p| wildcard_match(p, h, true)))
    }

    /// Whether the rule allows any origin (its only matching origin is `*`):
    /// S3 then answers `Access-Control-Allow-Origin: *` and no credentials.
    pub fn any_origin(&self, origin: &str) -> bool {
        !self.allowed_origins.iter().any(|p| p != "*" && wildcard_match(p, origin, false))
    }

    fn validate(&self) -> Result<(), CorsError> {
        if self.allowed_origins.is_empty() {
            return Err(CorsError::NoOrigin);
        }
        if self.allowed_methods.is_empty() {
            return Err(CorsError::NoMethod);
        }
        if let Some(m) = self.allowed_methods.iter().find(|m| !METHODS.contains(&m.as_str())) {
            return Err(CorsError::BadMethod(m.clone()));
        }
        if let Some(o) = self.allowed_origins.iter().find(|o| o.matches('*').count() > 1) {
            return Err(CorsError::OriginWildcards(o.clone()));
        }
        if let Some(h) = self.allowed_headers.iter().find(|h| h.matches('*').count() > 1) {
            return Err(CorsError::HeaderWildcards(h.clone()));
        }
        if let Some(h) = self.expose_headers.iter().find(|h| h.contains('*')) {
            return Err(CorsError::ExposeWildcard(h.clone()));
        }
        if self.id.as_ref().is_some_and(|id| id.chars().count() > MAX_ID_LEN) {
            return Err(CorsError::IdTooLong);
        }
        if let Some(age) = self.max_age_seconds.filter(|a| *a < 0) {
            return Err(CorsError::NegativeMaxAge(age));
        }
        Ok(())
    }
}

impl CorsConfig {
    /// Checks S3's rules (see the module's comment).
    pub fn validate(&self) -> Result<(), CorsError> {
        if self.rules.is_empty() {
            return Err(CorsError::NoRules);
        }
        if self.rules.len() > MAX_RULES {
            return Err(CorsError::TooManyRules(self.rules.len()));
        }
        self.rules.iter().try_for_each(CorsRule::validate)
    }

    /// The first rule that allows `origin` and `method` and, for a preflight,
    /// every header of `request_headers` (for an actual request, pass none).
    pub fn find(&self, origin: &str, method: &str, request_headers: &[&str]) -> Option<&CorsRule> {
        self.rules.iter().find(|r| {
            r.allows_origin(origin) && r.allows_method(method) && r.allows_headers(request_headers.iter().copied())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> CorsRule {
        CorsRule {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allowed_methods: methods.iter().map(|s| s.to_string()).collect(),
            allowed_headers: headers.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn wildcards_match_one_run_of_characters() {
        assert!(wildcard_match("*", "", false));
        assert!(wildcard_match("https://*.chat.example", "https://web.chat.example", false));
        assert!(!wildcard_match("https://*.chat.example", "https://chat.example", false));
        assert!(!wildcard_match("https://*.chat.example", "http://web.chat.example", false));
        assert!(wildcard_match("http://localhost:*", "http://localhost:3000", false));
        assert!(!wildcard_match("https://a.example", "https://A.example", false));
        assert!(wildcard_match("x-amz-*", "X-Amz-Date", true));
        assert!(!wildcard_match("ab*ba", "aba", false), "head and tail may not overlap");
        assert!(!wildcard_match("é*", "e", false));
    }

    #[test]
    fn the_first_matching_rule_wins_and_every_requested_header_must_be_allowed() {
        let c = CorsConfig {
            rules: vec![
                rule(&["https://app.example"], &["PUT"], &["content-type", "x-amz-*"]),
                rule(&["*"], &["GET", "HEAD"], &[]),
            ],
        };
        c.validate().unwrap();
        let put = c.find("https://app.example", "PUT", &["Content-Type", "X-Amz-Date"]).unwrap();
        assert_eq!(put.allowed_methods, ["PUT"]);
        assert!(!put.any_origin("https://app.example"));
        assert!(c.find("https://app.example", "PUT", &["authorization"]).is_none());
        assert!(c.find("https://other.example", "PUT", &[]).is_none());
        let get = c.find("https://other.example", "GET", &[]).unwrap();
        assert!(get.any_origin("https://other.example"));
        assert!(c.find("https://other.example", "GET", &["range"]).is_none(), "no AllowedHeader: none allowed");
        assert!(c.find("https://other.example", "get", &[]).is_none(), "methods match exactly");
    }

    #[test]
    fn s3_rules_for_a_valid_configuration() {
        let ok = rule(&["*"], &["GET"], &["*"]);
        let with = |f: &dyn Fn(&mut CorsRule)| {
            let mut r = ok.clone();
            f(&mut r);
            CorsConfig { rules: vec![r] }.validate()
        };
        assert_eq!(with(&|_| {}), Ok(()));
        assert_eq!(CorsConfig::default().validate(), Err(CorsError::NoRules));
        let many = CorsConfig { rules: vec![ok.clone(); 101] };
        assert_eq!(many.validate(), Err(CorsError::TooManyRules(101)));
        assert_eq!(CorsConfig { rules: vec![ok.clone(); 100] }.validate(), Ok(()));
        assert_eq!(with(&|r| r.allowed_methods = vec!["PATCH".into()]), Err(CorsError::BadMethod("PATCH".into())));
        assert_eq!(with(&|r| r.allowed_methods = vec!["get".into()]), Err(CorsError::BadMethod("get".into())));
        assert_eq!(with(&|r| r.allowed_methods.clear()), Err(CorsError::NoMethod));
        assert_eq!(with(&|r| r.allowed_origins.clear()), Err(CorsError::NoOrigin));
        let e = with(&|r| r.allowed_origins = vec!["https://*.*.example".into()]).unwrap_err();
        assert_eq!((e.s3_code(), e.to_string().contains("more than one wildcard")), ("InvalidRequest", true));
        assert!(matches!(with(&|r| r.allowed_headers = vec!["x-*-*".into()]), Err(CorsError::HeaderWildcards(_))));
        assert!(matches!(with(&|r| r.expose_headers = vec!["x-*".into()]), Err(CorsError::ExposeWildcard(_))));
        assert_eq!(with(&|r| r.id = Some("i".repeat(256))), Err(CorsError::IdTooLong));
        assert_eq!(with(&|r| r.max_age_seconds = Some(-1)), Err(CorsError::NegativeMaxAge(-1)));
        assert_eq!(CorsError::NoRules.s3_code(), "MalformedXML");
    }
}
