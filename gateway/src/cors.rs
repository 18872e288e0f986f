//! CORS on the wire: the answer to a preflight (`OPTIONS`), and the CORS
//! headers added to every other response (errors included, so a browser can
//! read them) of a request that carries an `Origin`.
//!
//! Owns: which bucket a raw request names (before s3s parses it: path style,
//! or virtual-host style through [`VirtualHosts`]), and the headers S3 sends.
//! The rules and their matching are the catalog's (`sillok_catalog::cors`);
//! the configuration comes from the gateway's copy of the catalog, so no
//! request waits on the network for CORS (a preflight for a bucket this copy
//! does not know is looked up on the leader, as every bucket miss is).
//!
//! As S3: a preflight is unauthenticated; it needs `Origin` and
//! `Access-Control-Request-Method` (else 400); the first rule that allows the
//! origin, the method and every header of `Access-Control-Request-Headers`
//! answers 200; no rule (or no configuration) is 403 `AccessForbidden`. An
//! actual request gets the headers when a rule allows its origin and method.
//! `Access-Control-Allow-Origin` is `*` when only a rule's `*` origin matched,
//! else the request's origin with `Access-Control-Allow-Credentials: true`.

use http::{HeaderMap, HeaderValue, Method};
use s3s::{S3Error, S3ErrorCode};
use sillok_catalog::cors::CorsRule;

use crate::catalog::GatewayCatalog;
use crate::error::GatewayError;
use crate::vhost::VirtualHosts;

const VARY: &str = "Origin, Access-Control-Request-Headers, Access-Control-Request-Method";

/// The bucket a request names, from its Host header (virtual-host style) or
/// its path's first segment (path style); `None` for the service root.
pub fn bucket_of<B>(req: &http::Request<B>, hosts: &VirtualHosts) -> Option<String> {
    let host = req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).or(req.uri().host());
    if let Some(b) = host.and_then(|h| hosts.bucket_of(h)) {
        return Some(b.to_string());
    }
    let first = req.uri().path().trim_start_matches('/').split('/').next().unwrap_or("");
    (!first.is_empty()).then(|| first.to_string())
}

/// What an actual (non-preflight) request needs for its CORS headers, taken
/// before the request is handed on.
#[derive(Debug, Clone)]
pub struct Actual {
    origin: String,
    method: String,
    bucket: String,
}

impl Actual {
    /// `None` when the request carries no `Origin` or names no bucket.
    pub fn of<B>(req: &http::Request<B>, hosts: &VirtualHosts) -> Option<Actual> {
        let origin = req.headers().get(http::header::ORIGIN)?.to_str().ok()?.to_string();
        let bucket = bucket_of(req, hosts)?;
        Some(Actual { origin, method: req.method().as_str().to_string(), bucket })
    }

    /// Adds the CORS headers to a response to this request, if the bucket's
    /// configuration allows its origin and method.
    pub fn decorate(&self, catalog: &GatewayCatalog, headers: &mut HeaderMap) {
        let Some(cors) = catalog.cors_of(&self.bucket) else { return };
        headers.insert(http::header::VARY, HeaderValue::from_static(VARY));
        if let Some(rule) = cors.find(&self.origin, &self.method, &[]) {
            allow(rule, &self.origin, headers);
        }
    }
}

/// The headers every allowed CORS answer carries (preflight or actual).
fn allow(rule: &CorsRule, origin: &str, headers: &mut HeaderMap) {
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    if rule.any_origin(origin) {
        put("access-control-allow-origin", "*".into());
    } else {
        put("access-control-allow-origin", origin.into());
        put("access-control-allow-credentials", "true".into());
    }
    put("access-control-allow-methods", rule.allowed_methods.join(", "));
    if !rule.expose_headers.is_empty() {
        put("access-control-expose-headers", rule.expose_headers.join(", "));
    }
    if let Some(age) = rule.max_age_seconds {
        put("access-control-max-age", age.to_string());
    }
}

fn refusal(code: &str, status: http::StatusCode, message: &str) -> S3Error {
    let mut e = S3Error::with_message(S3ErrorCode::Custom(code.to_string().into()), message.to_string());
    e.set_status_code(status);
    e
}

/// Whether a request is a preflight this module answers.
pub fn is_preflight<B>(req: &http::Request<B>) -> bool {
    req.method() == Method::OPTIONS
}

/// Answers a preflight: the headers of a 200, or the S3 error to send.
pub async fn preflight<B>(
    req: &http::Request<B>,
    hosts: &VirtualHosts,
    catalog: &GatewayCatalog,
) -> Result<HeaderMap, S3Error> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let Some(origin) = header("origin").filter(|o| !o.is_empty()) else {
        return Err(refusal(
            "BadRequest",
            http::StatusCode::BAD_REQUEST,
            "Insufficient information. Origin request header needed.",
        ));
    };
    let Some(method) = header("access-control-request-method").filter(|m| !m.is_empty()) else {
        return Err(refusal(
            "BadRequest",
            http::StatusCode::BAD_REQUEST,
            "Insufficient information. Access-Control-Request-Method request header needed.",
        ));
    };
    let requested: Vec<String> = req
        .headers()
        .get_all("access-control-request-headers")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    let Some(bucket) = bucket_of(req, hosts) else {
        return Err(refusal(
            "BadRequest",
            http::StatusCode::BAD_REQUEST,
            "A CORS preflight request must name a bucket.",
        ));
    };
    // Unauthenticated: a name no bucket can have is not looked up on the
    // catalog's leader (a miss is; at most one such read runs at a time).
    if sillok_catalog::state::check_bucket_name(&bucket).is_err() {
        return Err(GatewayError::NoSuchBucket.into());
    }
    let Some(cors) = catalog.bucket_cors(&bucket).await? else {
        return Err(refusal(
            "AccessForbidden",
            http::StatusCode::FORBIDDEN,
            "CORSResponse: CORS is not enabled for this bucket.",
        ));
    };
    let names: Vec<&str> = requested.iter().map(String::as_str).collect();
    let Some(rule) = cors.find(origin, method, &names) else {
        return Err(refusal(
            "AccessForbidden",
            http::StatusCode::FORBIDDEN,
            "CORSResponse: This CORS request is not allowed: no CORS rule of the bucket allows this origin, \
             request method and request headers.",
        ));
    };
    let mut headers = HeaderMap::new();
    allow(rule, origin, &mut headers);
    if !requested.is_empty()
        && let Ok(v) = HeaderValue::from_str(&requested.join(", "))
    {
        headers.insert("access-control-allow-headers", v);
    }
    headers.insert(http::header::VARY, HeaderValue::from_static(VARY));
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(host: &str, path: &str) -> http::Request<()> {
        http::Request::builder().uri(path).header("host", host).body(()).unwrap()
    }

    #[test]
    fn the_bucket_comes_from_the_host_or_the_path() {
        let hosts = VirtualHosts::new(&["s3.example.com".into()]).unwrap();
        assert_eq!(bucket_of(&req("web.s3.example.com", "/a/b.jpg"), &hosts).as_deref(), Some("web"));
        assert_eq!(bucket_of(&req("s3.example.com", "/web/a/b.jpg"), &hosts).as_deref(), Some("web"));
        assert_eq!(bucket_of(&req("127.0.0.1:9000", "/web?cors"), &hosts).as_deref(), Some("web"));
        assert_eq!(bucket_of(&req("127.0.0.1:9000", "/"), &hosts), None);
    }

    #[test]
    fn allowed_answers_say_which_origin_and_credentials() {
        let rule = CorsRule {
            allowed_origins: vec!["https://app.example".into(), "*".into()],
            allowed_methods: vec!["GET".into(), "PUT".into()],
            expose_headers: vec!["ETag".into(), "x-amz-request-id".into()],
            max_age_seconds: Some(300),
            ..Default::default()
        };
        let mut h = HeaderMap::new();
        allow(&rule, "https://app.example", &mut h);
        assert_eq!(h["access-control-allow-origin"], "https://app.example");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-allow-methods"], "GET, PUT");
        assert_eq!(h["access-control-expose-headers"], "ETag, x-amz-request-id");
        assert_eq!(h["access-control-max-age"], "300");
        let mut h = HeaderMap::new();
        allow(&rule, "https://elsewhere.example", &mut h);
        assert_eq!(h["access-control-allow-origin"], "*");
        assert!(!h.contains_key("access-control-allow-credentials"));
    }
}
