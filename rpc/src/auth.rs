//! Signing and verifying internal requests (AWS SigV4 via `aws-sigv4`).
//!
//! Owns: the rules by which one Sillok process proves to another that it holds
//! the cluster secret, for one request, once. Every internal request carries a
//! SigV4 `authorization` header for access key id [`ACCESS_KEY_ID`], region
//! [`REGION`], service [`SERVICE`], keyed by the cluster secret. The catalog
//! replicas also accept operators' admin keys ([`Signer::with_key`]): the same
//! rules, another key id and secret; [`credential_key_id`] tells the verifier
//! which key to check. Under mutual TLS ([`crate::tls`]) this is a second
//! layer: it still holds with `--insecure-internal-http`.
//!
//! Invariants:
//! - Signed headers: `host`, `x-amz-date`, `x-amz-content-sha256`, and every
//!   `x-sillok-*` header of the request, whatever its name; an `x-sillok-*`
//!   header added, removed or changed after signing fails verification. The
//!   method and the request target (path and query, exactly as sent: no path
//!   normalisation, single percent-encoding) are part of the canonical
//!   request too.
//! - Every request carries a fresh random [`H_NONCE`] (128 bits), signed like
//!   any `x-sillok-*` header: the receiver refuses a nonce it has seen
//!   ([`crate::replay`]) and a `host` that is not its own ([`crate::server`]).
//! - `x-amz-content-sha256` is either the lowercase hex SHA-256 of the body, or
//!   [`UNSIGNED_PAYLOAD`]. Only shard uploads may use `UNSIGNED-PAYLOAD`; their
//!   body is sealed instead: the [`H_BODY_SEAL`] trailer is a keyed blake3
//!   ([`BodySeal`]) of the request's nonce and the digest of the body's
//!   frame hashes in order, keyed by a key derived from the secret, and the
//!   receiver stores nothing whose seal does not match the frames it got.
//! - The verifier recomputes the whole `authorization` header with `aws-sigv4`
//!   from the request and the secret, and compares it in constant time
//!   (`subtle`): any difference in key id, scope, signed headers or signature
//!   refuses the request.
//! - A request whose `x-amz-date` is more than [`MAX_SKEW`] away from the
//!   verifier's clock is refused.
//! - Secrets and seal keys never appear in `Debug` output or in errors.
//! - While the cluster secret is rotated (`sillok secret`), a verifier also
//!   accepts the secrets in [`Signer::accepting`] (the next one, then the
//!   previous one); a signer always signs with its one current secret. A body
//!   seal is checked with the secret that verified its request.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const ACCESS_KEY_ID: &str = "sillok-internal";
pub const REGION: &str = "sillok";
pub const SERVICE: &str = "sillok";
/// Largest accepted difference between a request's `x-amz-date` and the clock.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
/// The `x-amz-content-sha256` value of a body that is not hashed (shard uploads).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

pub const H_AMZ_DATE: &str = "x-amz-date";
pub const H_CONTENT_SHA256: &str = "x-amz-content-sha256";
/// The request's one-time random value (32 lowercase hex digits), signed.
pub const H_NONCE: &str = "x-sillok-nonce";
/// The trailer of a sealed (`UNSIGNED-PAYLOAD`) body: [`BodySeal::value`].
pub const H_BODY_SEAL: &str = "x-sillok-body-seal";
/// Headers with this prefix are signed, every one of them.
pub const SIGNED_PREFIX: &str = "x-sillok-";

/// Why a request was refused. The messages are short and name no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing or malformed {0}")]
    Missing(&'static str),
    #[error("x-amz-date is not of the form YYYYMMDDTHHMMSSZ")]
    BadDate,
    #[error("request time is more than 15 minutes from the receiver's clock")]
    Skew,
    #[error("signature does not match")]
    BadSignature,
    #[error("could not sign: {0}")]
    Sign(String),
}

/// What the body of a request must be, as its signature says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentHash {
    /// The body's SHA-256 (raw bytes).
    Sha256([u8; 32]),
    /// `UNSIGNED-PAYLOAD`: the body is not hashed into the signature; a
    /// shard body is sealed instead ([`BodySeal`]).
    Unsigned,
}

impl ContentHash {
    /// Whether `body` is the body the signature covers, compared in constant time.
    /// Always false for [`ContentHash::Unsigned`]: such bodies need their own check.
    pub fn matches(&self, body: &[u8]) -> bool {
        match self {
            ContentHash::Sha256(want) => {
                let got: [u8; 32] = Sha256::digest(body).into();
                bool::from(got.ct_eq(want))
            }
            ContentHash::Unsigned => false,
        }
    }
}

/// A verified request: what its body must hash to, its nonce and signed time
/// (for the replay check), and the seal its body must carry if unsigned.
#[derive(Debug, Clone)]
pub struct Verified {
    pub hash: ContentHash,
    pub nonce: u128,
    pub time: SystemTime,
    pub seal: BodySeal,
}

/// The body a signer declares.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// A small body, hashed into the signature.
    Bytes(&'a [u8]),
    /// A streamed body that is not hashed (`UNSIGNED-PAYLOAD`).
    Unsigned,
}

impl Payload<'_> {
    /// The `x-amz-content-sha256` value for this body.
    pub fn content_sha(&self) -> String {
        match self {
            Payload::Bytes(b) => hex::encode(Sha256::digest(b)),
            Payload::Unsigned => UNSIGNED_PAYLOAD.to_string(),
        }
    }
}

/// A fresh nonce, as sent in [`H_NONCE`].
pub fn new_nonce() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn parse_nonce(s: &str) -> Option<u128> {
    (s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| u128::from_str_radix(s, 16).ok())
        .flatten()
}

/// The seal of one request's streamed body: a blake3 keyed hash, with a key
/// derived from the secret, of the request's nonce and the digest of the
/// body's content (for shard uploads, `sillok_model::frame::FrameDigest`).
/// The signer appends [`BodySeal::value`] as the [`H_BODY_SEAL`] trailer; the
/// receiver compares it with what it received before storing anything.
#[derive(Clone)]
pub struct BodySeal {
    key: [u8; 32],
    nonce: u128,
}

impl std::fmt::Debug for BodySeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodySeal").field("key", &"<redacted>").field("nonce", &format!("{:032x}", self.nonce)).finish()
    }
}

impl BodySeal {
    /// The trailer value for a body whose content digest is `digest`.
    pub fn value(&self, digest: &[u8; 32]) -> String {
        let mut msg = [0u8; 48];
        msg[..16].copy_from_slice(&self.nonce.to_be_bytes());
        msg[16..].copy_from_slice(digest);
        blake3::keyed_hash(&self.key, &msg).to_hex().to_string()
    }

    /// Whether `given` (the trailer as received) seals `digest`, in constant time.
    pub fn matches(&self, digest: &[u8; 32], given: &str) -> bool {
        bool::from(self.value(digest).as_bytes().ct_eq(given.as_bytes()))
    }
}

/// The seal key of one secret.
fn seal_key(secret: &str) -> [u8; 32] {
    blake3::derive_key("sillok internal shard body seal, 2026-12", secret.as_bytes())
}

/// One key id and secret: its SigV4 identity and its seal key.
#[derive(Clone)]
struct Key {
    identity: Identity,
    seal: [u8; 32],
}

impl Key {
    fn new(access_key_id: &str, secret: &str) -> Self {
        let creds = Credentials::new(access_key_id, secret, None, None, "sillok-key");
        Key { identity: creds.into(), seal: seal_key(secret) }
    }
}

/// Signs and verifies with one cluster secret. Cheap to clone.
#[derive(Clone)]
pub struct Signer {
    key: Key,
    /// Verification only: other secrets of the same key id, accepted while
    /// the cluster secret is rotated.
    also_accepted: Vec<Key>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("access_key_id", &ACCESS_KEY_ID)
            .field("secret", &"<redacted>")
            .field("also_accepted", &self.also_accepted.len())
            .finish()
    }
}

fn settings() -> SigningSettings {
    let mut s = SigningSettings::default();
    s.percent_encoding_mode = PercentEncodingMode::Single;
    s.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    s.signature_location = SignatureLocation::Headers;
    s.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    s
}

/// The `x-sillok-*` headers of `headers`, which a signature covers.
fn signed_extras(headers: &HeaderMap) -> Result<Vec<(&str, &str)>, AuthError> {
    let mut out = Vec::new();
    for (name, value) in headers {
        if name.as_str().starts_with(SIGNED_PREFIX) {
            out.push((name.as_str(), value.to_str().map_err(|_| AuthError::Missing("x-sillok-* header"))?));
        }
    }
    Ok(out)
}

impl Signer {
    pub fn new(cluster_secret: &str) -> Self {
        Self::with_key(ACCESS_KEY_ID, cluster_secret)
    }

    /// A signer for another key than the cluster's internal one (an operator's
    /// admin key): same scope and rules, key id `access_key_id`.
    pub fn with_key(access_key_id: &str, secret: &str) -> Self {
        Signer { key: Key::new(access_key_id, secret), also_accepted: Vec::new() }
    }

    /// This signer, also accepting requests signed with `secrets` (same key
    /// id) when it verifies: the secrets of a rotation in progress. It still
    /// signs with its own.
    pub fn accepting<S: AsRef<str>>(mut self, secrets: &[S]) -> Self {
        self.also_accepted = secrets.iter().map(|s| Key::new(ACCESS_KEY_ID, s.as_ref())).collect();
        self
    }

    /// The seal this signer puts on the streamed body of the request whose
    /// nonce is `nonce` (as sent in [`H_NONCE`]).
    pub fn body_seal(&self, nonce: &str) -> Result<BodySeal, AuthError> {
        let nonce = parse_nonce(nonce).ok_or(AuthError::Missing(H_NONCE))?;
        Ok(BodySeal { key: self.key.seal, nonce })
    }

    /// The headers that sign a request with no `x-sillok-*` headers of its
    /// own: `host`, `x-amz-date`, `x-amz-content-sha256`, a fresh
    /// `x-sillok-nonce` and `authorization`. `host` is the value sent in the
    /// Host header (`host:port`); `path_and_query` the request target as sent.
    pub fn sign(
        &self,
        method: &str,
        host: &str,
        path_and_query: &str,
        payload: Payload<'_>,
        time: SystemTime,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, AuthError> {
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static(H_NONCE), hv(&new_nonce())?);
        headers.insert(HeaderName::from_static(H_CONTENT_SHA256), hv(&payload.content_sha())?);
        self.sign_headers(method, host, path_and_query, &headers, time)
    }

    /// The headers that sign a request whose other headers are `headers`
    /// (which must hold `x-amz-content-sha256` and `x-sillok-nonce`; every
    /// `x-sillok-*` header in it is signed): `host`, `x-amz-date`,
    /// `x-amz-content-sha256`, the nonce and `authorization`.
    pub fn sign_headers(
        &self,
        method: &str,
        host: &str,
        path_and_query: &str,
        headers: &HeaderMap,
        time: SystemTime,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, AuthError> {
        let one = |name: &'static str| -> Result<&HeaderValue, AuthError> {
            headers.get(name).ok_or(AuthError::Missing(name))
        };
        let content_sha = one(H_CONTENT_SHA256)?.to_str().map_err(|_| AuthError::Missing(H_CONTENT_SHA256))?;
        let nonce = one(H_NONCE)?.clone();
        let extras = signed_extras(headers)?;
        let (authorization, date) =
            self.authorization(&self.key.identity, method, host, path_and_query, &extras, content_sha, time)?;
        Ok(vec![
            (http::header::HOST, hv(host)?),
            (HeaderName::from_static(H_AMZ_DATE), hv(&date)?),
            (HeaderName::from_static(H_CONTENT_SHA256), hv(content_sha)?),
            (HeaderName::from_static(H_NONCE), nonce),
            (http::header::AUTHORIZATION, hv(&authorization)?),
        ])
    }

    /// Signs `req` in place, its body declared by `payload` (its URI must
    /// carry the authority, or a Host header must be set already). Every
    /// `x-sillok-*` header already on it is signed; a nonce is added unless
    /// it has one.
    pub fn sign_request<B>(&self, req: &mut http::Request<B>, payload: Payload<'_>) -> Result<(), AuthError> {
        req.headers_mut().insert(HeaderName::from_static(H_CONTENT_SHA256), hv(&payload.content_sha())?);
        self.seal_request(req)
    }

    /// Signs `req` in place, its body declared by the `x-amz-content-sha256`
    /// header it already carries (see [`Signer::sign_request`]).
    pub fn seal_request<B>(&self, req: &mut http::Request<B>) -> Result<(), AuthError> {
        let host = match req.headers().get(http::header::HOST) {
            Some(h) => h.to_str().map_err(|_| AuthError::Missing("host"))?.to_string(),
            None => req.uri().authority().map(|a| a.as_str().to_string()).ok_or(AuthError::Missing("host"))?,
        };
        if !req.headers().contains_key(H_NONCE) {
            req.headers_mut().insert(HeaderName::from_static(H_NONCE), hv(&new_nonce())?);
        }
        let pq = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
        let headers = self.sign_headers(req.method().as_str(), &host, &pq, req.headers(), SystemTime::now())?;
        for (k, v) in headers {
            req.headers_mut().insert(k, v);
        }
        Ok(())
    }

    /// The `authorization` header value and the `x-amz-date` value for a request.
    #[allow(clippy::too_many_arguments)]
    fn authorization(
        &self,
        identity: &Identity,
        method: &str,
        host: &str,
        path_and_query: &str,
        extras: &[(&str, &str)],
        content_sha: &str,
        time: SystemTime,
    ) -> Result<(String, String), AuthError> {
        // The authority in this URI is not used: the explicit host header wins.
        let uri = format!("http://sillok{path_and_query}");
        let req = SignableRequest::new(
            method,
            uri,
            std::iter::once(("host", host)).chain(extras.iter().copied()),
            SignableBody::Precomputed(content_sha.to_string()),
        )
        .map_err(|e| AuthError::Sign(e.to_string()))?;
        let params = v4::SigningParams::builder()
            .identity(identity)
            .region(REGION)
            .name(SERVICE)
            .time(time)
            .settings(settings())
            .build()
            .map_err(|e| AuthError::Sign(e.to_string()))?
            .into();
        let (instructions, _sig) = sign(req, &params).map_err(|e| AuthError::Sign(e.to_string()))?.into_parts();
        let mut authorization = None;
        let mut date = None;
        for (name, value) in instructions.headers() {
            if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.to_string());
            } else if name.eq_ignore_ascii_case(H_AMZ_DATE) {
                date = Some(value.to_string());
            }
        }
        match (authorization, date) {
            (Some(a), Some(d)) => Ok((a, d)),
            _ => Err(AuthError::Sign("signer produced no authorization".into())),
        }
    }

    /// Checks a request's signature against the secret and the clock `now`.
    /// On success, returns what the body must hash to, the nonce and time to
    /// check for a replay, and the body's seal.
    pub fn verify(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Result<Verified, AuthError> {
        let get = |name: &'static str| -> Result<&str, AuthError> {
            let mut all = headers.get_all(name).iter();
            let v = all.next().ok_or(AuthError::Missing(name))?;
            if all.next().is_some() {
                return Err(AuthError::Missing(name));
            }
            v.to_str().map_err(|_| AuthError::Missing(name))
        };
        let given = get("authorization")?;
        let host = get("host")?;
        let date = get(H_AMZ_DATE)?;
        let content_sha = get(H_CONTENT_SHA256)?;
        let nonce = parse_nonce(get(H_NONCE)?).ok_or(AuthError::Missing(H_NONCE))?;

        let time = parse_amz_date(date)?;
        let skew = match now.duration_since(time) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        if skew > MAX_SKEW {
            return Err(AuthError::Skew);
        }
        let hash = if content_sha == UNSIGNED_PAYLOAD {
            ContentHash::Unsigned
        } else {
            let mut raw = [0u8; 32];
            if content_sha.len() != 64
                || !content_sha.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                || hex::decode_to_slice(content_sha, &mut raw).is_err()
            {
                return Err(AuthError::Missing(H_CONTENT_SHA256));
            }
            ContentHash::Sha256(raw)
        };
        let extras = signed_extras(headers)?;
        for key in std::iter::once(&self.key).chain(&self.also_accepted) {
            let (expected, expected_date) =
                self.authorization(&key.identity, method, host, path_and_query, &extras, content_sha, time)?;
            // The date must round-trip exactly (it does for any well-formed date).
            let ok = expected.as_bytes().ct_eq(given.as_bytes()) & expected_date.as_bytes().ct_eq(date.as_bytes());
            if bool::from(ok) {
                return Ok(Verified { hash, nonce, time, seal: BodySeal { key: key.seal, nonce } });
            }
        }
        Err(AuthError::BadSignature)
    }
}

fn hv(s: &str) -> Result<HeaderValue, AuthError> {
    HeaderValue::from_str(s).map_err(|_| AuthError::Sign("header value".into()))
}

/// The access key id a request claims in its `authorization` header
/// (`Credential=<id>/<date>/...`), so the verifier knows which secret to check
/// it with. Claims nothing about the signature.
pub fn credential_key_id(headers: &HeaderMap) -> Option<&str> {
    let auth = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let rest = auth.split("Credential=").nth(1)?;
    let id = rest.split('/').next()?;
    (!id.is_empty()).then_some(id)
}

/// Parses `YYYYMMDDTHHMMSSZ` (UTC).
pub fn parse_amz_date(s: &str) -> Result<SystemTime, AuthError> {
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let t = time::PrimitiveDateTime::parse(s, &fmt).map_err(|_| AuthError::BadDate)?;
    Ok(SystemTime::from(t.assume_utc()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `s` verifies `h` to: the body hash (the rest is checked below).
    fn hash_of(s: &Signer, method: &str, pq: &str, h: &HeaderMap, now: SystemTime) -> Result<ContentHash, AuthError> {
        s.verify(method, pq, h, now).map(|v| v.hash)
    }

    fn headers(v: Vec<(HeaderName, HeaderValue)>) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, val) in v {
            h.insert(k, val);
        }
        h
    }

    const PQ: &str = "/v1/shards/0123456789abcdef0123456789abcdef/3?from=1&to=4";

    #[test]
    fn sign_then_verify() {
        let s = Signer::new("s3cret");
        let now = SystemTime::now();
        let body = br#"{"bucket":"b","key":"k"}"#;
        let h = headers(s.sign("POST", "127.0.0.1:9000", PQ, Payload::Bytes(body), now).unwrap());
        let auth = h.get("authorization").unwrap().to_str().unwrap();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=sillok-internal/"), "{auth}");
        assert!(auth.contains("/sillok/sillok/aws4_request"), "{auth}");
        assert!(auth.contains("SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-sillok-nonce,"), "{auth}");
        let hash = hash_of(&s, "POST", PQ, &h, now).unwrap();
        assert!(hash.matches(body));
        assert!(!hash.matches(b"{}"));

        let h = headers(s.sign("PUT", "node:1", PQ, Payload::Unsigned, now).unwrap());
        assert_eq!(hash_of(&s, "PUT", PQ, &h, now).unwrap(), ContentHash::Unsigned);
        assert!(!ContentHash::Unsigned.matches(b""));
    }

    #[test]
    fn tampering_is_refused() {
        let s = Signer::new("s3cret");
        let now = SystemTime::now();
        let good = headers(s.sign("GET", "127.0.0.1:9000", PQ, Payload::Bytes(b""), now).unwrap());
        assert!(hash_of(&s, "GET", PQ, &good, now).is_ok());
        // Another path, query or method.
        assert_eq!(
            hash_of(&s, "GET", "/v1/shards/0123456789abcdef0123456789abcdef/4?from=1&to=4", &good, now),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            hash_of(&s, "GET", "/v1/shards/0123456789abcdef0123456789abcdef/3?from=0&to=4", &good, now),
            Err(AuthError::BadSignature)
        );
        assert_eq!(hash_of(&s, "DELETE", PQ, &good, now), Err(AuthError::BadSignature));
        // Another host.
        let mut h = good.clone();
        h.insert("host", HeaderValue::from_static("127.0.0.1:9001"));
        assert_eq!(hash_of(&s, "GET", PQ, &h, now), Err(AuthError::BadSignature));
        // Another body hash.
        let mut h = good.clone();
        h.insert(H_CONTENT_SHA256, HeaderValue::from_str(&hex::encode(Sha256::digest(b"x"))).unwrap());
        assert_eq!(hash_of(&s, "GET", PQ, &h, now), Err(AuthError::BadSignature));
        h.insert(H_CONTENT_SHA256, HeaderValue::from_static(UNSIGNED_PAYLOAD));
        assert_eq!(hash_of(&s, "GET", PQ, &h, now), Err(AuthError::BadSignature));
        // Another date (still within the skew window).
        let mut h = good.clone();
        let later = now + Duration::from_secs(2);
        let later_hdrs = headers(s.sign("GET", "127.0.0.1:9000", PQ, Payload::Bytes(b""), later).unwrap());
        h.insert(H_AMZ_DATE, later_hdrs.get(H_AMZ_DATE).unwrap().clone());
        if h.get(H_AMZ_DATE) != good.get(H_AMZ_DATE) {
            assert_eq!(hash_of(&s, "GET", PQ, &h, now), Err(AuthError::BadSignature));
        }
        // A flipped signature character.
        let mut h = good.clone();
        let mut a = h.get("authorization").unwrap().to_str().unwrap().to_string();
        let last = a.pop().unwrap();
        a.push(if last == '0' { '1' } else { '0' });
        h.insert("authorization", HeaderValue::from_str(&a).unwrap());
        assert_eq!(hash_of(&s, "GET", PQ, &h, now), Err(AuthError::BadSignature));
        // Another access key id with the same secret.
        let mut h = good.clone();
        let a = good.get("authorization").unwrap().to_str().unwrap().replace("sillok-internal", "someone-else");
        h.insert("authorization", HeaderValue::from_str(&a).unwrap());
        assert_eq!(hash_of(&s, "GET", PQ, &h, now), Err(AuthError::BadSignature));
        // Missing headers.
        for name in ["authorization", "host", H_AMZ_DATE, H_CONTENT_SHA256] {
            let mut h = good.clone();
            h.remove(name);
            assert!(matches!(hash_of(&s, "GET", PQ, &h, now), Err(AuthError::Missing(_))), "{name}");
        }
        // A malformed content hash.
        let mut h = good.clone();
        h.insert(H_CONTENT_SHA256, HeaderValue::from_static("abc"));
        assert_eq!(hash_of(&s, "GET", PQ, &h, now), Err(AuthError::Missing(H_CONTENT_SHA256)));
    }

    /// The three steps of `sillok secret`, with processes on either side of
    /// each step talking to each other: every pair that can coexist in a
    /// rolling restart verifies, and a secret outside the rotation never does.
    #[test]
    fn rotation_accepts_both_sides_of_each_step() {
        let now = SystemTime::now();
        let req = |s: &Signer| headers(s.sign("GET", "h:1", PQ, Payload::Bytes(b""), now).unwrap());
        // Before: old. Staged: signs old, accepts new. Promoted: signs new, accepts old. Finished: new.
        let before = Signer::new("old");
        let staged = Signer::new("old").accepting(&["new"]);
        let promoted = Signer::new("new").accepting(&["old"]);
        let finished = Signer::new("new");
        for (a, b) in [(&before, &staged), (&staged, &promoted), (&promoted, &finished)] {
            assert_eq!(hash_of(a, "GET", PQ, &req(b), now).map(|_| ()), Ok(()));
            assert_eq!(hash_of(b, "GET", PQ, &req(a), now).map(|_| ()), Ok(()));
        }
        // Steps that must not coexist do not verify each other, so skipping a
        // restart shows up as refusals rather than passing silently.
        assert_eq!(hash_of(&before, "GET", PQ, &req(&finished), now), Err(AuthError::BadSignature));
        let outsider = Signer::new("other").accepting(&["old"]);
        assert_eq!(hash_of(&promoted, "GET", PQ, &req(&Signer::new("third")), now), Err(AuthError::BadSignature));
        // Accepting a secret does not make a signer sign with it.
        assert_eq!(hash_of(&finished, "GET", PQ, &req(&outsider), now), Err(AuthError::BadSignature));
    }

    #[test]
    fn other_keys_sign_and_name_themselves() {
        let now = SystemTime::now();
        let admin = Signer::with_key("SILLOKADMIN1", "admin-secret");
        let h = headers(admin.sign("GET", "h:1", "/v1/status", Payload::Bytes(b""), now).unwrap());
        assert_eq!(credential_key_id(&h), Some("SILLOKADMIN1"));
        assert!(hash_of(&admin, "GET", "/v1/status", &h, now).is_ok());
        // The internal signer with the same secret does not accept it (other key id).
        assert_eq!(hash_of(&Signer::new("admin-secret"), "GET", "/v1/status", &h, now), Err(AuthError::BadSignature));
        let internal = headers(Signer::new("s").sign("GET", "h:1", "/v1/status", Payload::Bytes(b""), now).unwrap());
        assert_eq!(credential_key_id(&internal), Some(ACCESS_KEY_ID));
        assert_eq!(credential_key_id(&HeaderMap::new()), None);
    }

    #[test]
    fn wrong_secret_is_refused() {
        let now = SystemTime::now();
        let h = headers(Signer::new("not-it").sign("GET", "h:1", "/v1/health", Payload::Bytes(b""), now).unwrap());
        assert_eq!(hash_of(&Signer::new("s3cret"), "GET", "/v1/health", &h, now), Err(AuthError::BadSignature));
    }

    #[test]
    fn skew_is_refused_both_ways() {
        let s = Signer::new("s3cret");
        let now = SystemTime::now();
        for off in [Duration::from_secs(16 * 60), Duration::from_secs(3600)] {
            let old = headers(s.sign("GET", "h:1", "/v1/health", Payload::Bytes(b""), now - off).unwrap());
            assert_eq!(hash_of(&s, "GET", "/v1/health", &old, now), Err(AuthError::Skew));
            let future = headers(s.sign("GET", "h:1", "/v1/health", Payload::Bytes(b""), now + off).unwrap());
            assert_eq!(hash_of(&s, "GET", "/v1/health", &future, now), Err(AuthError::Skew));
        }
        let near = headers(
            s.sign("GET", "h:1", "/v1/health", Payload::Bytes(b""), now - Duration::from_secs(14 * 60)).unwrap(),
        );
        assert!(hash_of(&s, "GET", "/v1/health", &near, now).is_ok());
        let mut bad = near.clone();
        bad.insert(H_AMZ_DATE, HeaderValue::from_static("yesterday"));
        assert_eq!(hash_of(&s, "GET", "/v1/health", &bad, now), Err(AuthError::BadDate));
    }

    /// Every `x-sillok-*` header is covered: changed, added or removed after
    /// signing, the request is refused; and every request needs a nonce.
    #[test]
    fn sillok_headers_and_the_nonce_are_signed() {
        let s = Signer::new("s3cret");
        let now = SystemTime::now();
        let mut base = HeaderMap::new();
        base.insert("x-sillok-k", HeaderValue::from_static("4"));
        base.insert("x-sillok-epoch", HeaderValue::from_static("7"));
        base.insert(H_NONCE, HeaderValue::from_str(&new_nonce()).unwrap());
        base.insert(H_CONTENT_SHA256, HeaderValue::from_static(UNSIGNED_PAYLOAD));
        let mut good = base.clone();
        for (k, v) in s.sign_headers("PUT", "n:1", PQ, &base, now).unwrap() {
            good.insert(k, v);
        }
        let auth = good.get("authorization").unwrap().to_str().unwrap();
        assert!(
            auth.contains(
                "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-sillok-epoch;x-sillok-k;x-sillok-nonce,"
            ),
            "{auth}"
        );
        let v = s.verify("PUT", PQ, &good, now).unwrap();
        assert_eq!(v.hash, ContentHash::Unsigned);
        assert_eq!(format!("{:032x}", v.nonce), base.get(H_NONCE).unwrap().to_str().unwrap());
        let mut h = good.clone();
        h.insert("x-sillok-k", HeaderValue::from_static("5"));
        assert_eq!(hash_of(&s, "PUT", PQ, &h, now), Err(AuthError::BadSignature), "changed");
        let mut h = good.clone();
        h.insert("x-sillok-background", HeaderValue::from_static("1"));
        assert_eq!(hash_of(&s, "PUT", PQ, &h, now), Err(AuthError::BadSignature), "added");
        let mut h = good.clone();
        h.remove("x-sillok-epoch");
        assert_eq!(hash_of(&s, "PUT", PQ, &h, now), Err(AuthError::BadSignature), "removed");
        let mut h = good.clone();
        h.insert(H_NONCE, HeaderValue::from_str(&new_nonce()).unwrap());
        assert_eq!(hash_of(&s, "PUT", PQ, &h, now), Err(AuthError::BadSignature), "another nonce");
        let mut h = good.clone();
        h.remove(H_NONCE);
        assert_eq!(hash_of(&s, "PUT", PQ, &h, now), Err(AuthError::Missing(H_NONCE)));
        h.insert(H_NONCE, HeaderValue::from_static("not-hex"));
        assert_eq!(hash_of(&s, "PUT", PQ, &h, now), Err(AuthError::Missing(H_NONCE)));
        // Two signings of the same request differ (fresh nonces).
        let a = s.sign("GET", "n:1", PQ, Payload::Bytes(b""), now).unwrap();
        let b = s.sign("GET", "n:1", PQ, Payload::Bytes(b""), now).unwrap();
        assert_ne!(headers(a).get("authorization"), headers(b).get("authorization"));
    }

    /// A body seal binds a digest to one request's nonce and one secret.
    #[test]
    fn body_seals_bind_digest_nonce_and_secret() {
        let s = Signer::new("s3cret");
        let nonce = new_nonce();
        let seal = s.body_seal(&nonce).unwrap();
        let d = [7u8; 32];
        let v = seal.value(&d);
        assert_eq!(v.len(), 64);
        assert!(seal.matches(&d, &v));
        assert!(!seal.matches(&[8u8; 32], &v), "another body");
        assert!(!s.body_seal(&new_nonce()).unwrap().matches(&d, &v), "another request");
        assert!(!Signer::new("other").body_seal(&nonce).unwrap().matches(&d, &v), "another secret");
        assert!(!seal.matches(&d, ""));
        assert!(s.body_seal("xyz").is_err());
        // The verifier's seal is the signer's, also for an accepted old secret.
        let rotating = Signer::new("new").accepting(&["s3cret"]);
        let mut h = HeaderMap::new();
        h.insert(H_NONCE, HeaderValue::from_str(&nonce).unwrap());
        h.insert(H_CONTENT_SHA256, HeaderValue::from_static(UNSIGNED_PAYLOAD));
        let now = SystemTime::now();
        for (k, val) in s.sign_headers("PUT", "n:1", PQ, &h.clone(), now).unwrap() {
            h.insert(k, val);
        }
        assert!(rotating.verify("PUT", PQ, &h, now).unwrap().seal.matches(&d, &v));
        assert!(!format!("{seal:?}").contains(&hex::encode(seal.key)));
    }

    #[test]
    fn debug_redacts_the_secret() {
        let s = Signer::new("very-secret-value");
        assert!(!format!("{s:?}").contains("very-secret-value"));
    }
}
