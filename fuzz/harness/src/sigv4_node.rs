//! `sigv4_node`: the storage node's internal request signatures
//! (`sillok_rpc::auth::Signer`).
//!
//! Input: a flag byte, a 4-byte time, a tamper kind, a 4-byte tamper position,
//! a tamper byte, then a request as text ([`RawRequest`]). The request target
//! is turned into the `path_and_query` the node passes to `verify` the way the
//! node's server does (`Uri::path_and_query`, or `/`).
//!
//! - flag bit 0 clear (check as given): `verify` the request, with the node's
//!   clock at [`signing_time`] moved by the time field (as a signed number of
//!   seconds). It must not panic; if it accepts, the content hash it returns
//!   must describe the header it came from.
//! - flag bit 0 set (sign, then check): `sign` the method, target, `host`
//!   header (or [`DEFAULT_HOST`]) and body (flag bit 1: as `UNSIGNED-PAYLOAD`)
//!   at the time field (seconds since 1970). If signing succeeds and the host
//!   is visible ASCII (non-ASCII hosts are signed but refused by `verify`, which
//!   reads headers as text), `verify` at the same instant must accept, with a content hash that matches the body.
//!   Then one thing is changed (the tamper kind picks: method, host, target,
//!   `x-amz-content-sha256`, `x-amz-date`, `authorization`) and `verify` must
//!   refuse, unless the change is one SigV4 itself does not see: header values
//!   equal after trimming and collapsing spaces, or targets with the same path
//!   and the same set of decoded query pairs. Targets that do not start with
//!   `/` (only `*` can reach a node) are not tampered with: `Signer` signs them
//!   as `/` (see the regression `node_asterisk_target_signs_as_root`).

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};
use sillok_rpc::auth::{
    ContentHash, H_AMZ_DATE, H_CONTENT_SHA256, H_NONCE, Payload, Signer, UNSIGNED_PAYLOAD, parse_amz_date,
};

use crate::s3_request::signing_time;
use crate::{Input, RawRequest};

pub const CLUSTER_SECRET: &str = "fuzz-cluster-secret";
pub const DEFAULT_HOST: &str = "10.0.0.1:7000";

pub const TAMPER_METHOD: u8 = 0;
pub const TAMPER_HOST: u8 = 1;
pub const TAMPER_TARGET: u8 = 2;
pub const TAMPER_CONTENT_SHA: u8 = 3;
pub const TAMPER_DATE: u8 = 4;
pub const TAMPER_AUTHORIZATION: u8 = 5;

/// `signer.sign` with a fixed nonce, so that a run depends on its input only.
pub fn sign_fixed(
    signer: &Signer,
    method: &str,
    host: &str,
    pq: &str,
    payload: Payload<'_>,
    at: SystemTime,
) -> Result<Vec<(http::HeaderName, HeaderValue)>, sillok_rpc::AuthError> {
    let mut pre = HeaderMap::new();
    pre.insert(H_NONCE, HeaderValue::from_static("0123456789abcdef0123456789abcdef"));
    pre.insert(H_CONTENT_SHA256, HeaderValue::from_str(&payload.content_sha()).expect("hex or UNSIGNED-PAYLOAD"));
    signer.sign_headers(method, host, pq, &pre, at)
}

/// The node's `path_and_query` for a request target, or `None` if it is not a URI.
fn path_and_query(target: &[u8]) -> Option<String> {
    let uri = http::Uri::try_from(target).ok()?;
    Some(uri.path_and_query().map_or("/", |p| p.as_str()).to_owned())
}

/// Header values as SigV4 compares them: spaces trimmed, runs of spaces collapsed.
fn canonical_value(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for word in v.split(|&b| b == b' ').filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(b' ');
        }
        out.extend_from_slice(word);
    }
    out
}

fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => match (hex(s[i + 1]), hex(s[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// A target as SigV4 sees it: the path as is, and the query as a sorted list
/// of decoded (`application/x-www-form-urlencoded`) name/value pairs.
fn canonical_target(pq: &str) -> (String, Vec<(String, String)>) {
    let (path, query) = pq.split_once('?').unwrap_or((pq, ""));
    let mut pairs: Vec<(String, String)> = query
        .as_bytes()
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = match p.iter().position(|&b| b == b'=') {
                Some(i) => (&p[..i], &p[i + 1..]),
                None => (p, &p[p.len()..]),
            };
            let text = |b: &[u8]| String::from_utf8_lossy(&percent_decode(b)).into_owned();
            (text(k), text(v))
        })
        .collect();
    pairs.sort();
    (path.to_owned(), pairs)
}

fn insert(s: &[u8], at: u32, byte: u8) -> Vec<u8> {
    let at = at as usize % (s.len() + 1);
    let mut v = s.to_vec();
    v.insert(at, byte);
    v
}

fn header_map(pairs: &[(http::HeaderName, HeaderValue)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(k.clone(), v.clone());
    }
    h
}

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let time = input.u32();
    let tamper = input.byte();
    let position = input.u32();
    let tamper_byte = input.byte();
    let raw = RawRequest::parse(input.rest());
    let signer = Signer::new(CLUSTER_SECRET);
    let Ok(method) = std::str::from_utf8(raw.method) else { return };
    let Some(pq) = path_and_query(raw.target) else { return };

    if flags & 1 == 0 {
        let offset = Duration::from_secs(u64::from((time as i32).unsigned_abs()));
        let now = if (time as i32) < 0 { signing_time() - offset } else { signing_time() + offset };
        let headers = raw.header_map();
        if let Ok(hash) = signer.verify(method, &pq, &headers, now).map(|v| v.hash) {
            let declared = headers.get(H_CONTENT_SHA256).and_then(|v| v.to_str().ok()).unwrap_or_default();
            match hash {
                ContentHash::Unsigned => assert_eq!(declared, UNSIGNED_PAYLOAD),
                ContentHash::Sha256(h) => assert_eq!(hex::encode(h), declared),
            }
        }
        return;
    }

    let host = raw
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(b"host"))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .unwrap_or(DEFAULT_HOST);
    let payload = if flags & 2 != 0 { Payload::Unsigned } else { Payload::Bytes(raw.body) };
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(time));
    let Ok(signed) = sign_fixed(&signer, method, host, &pq, payload, at) else { return };
    let headers = header_map(&signed);

    if headers[http::header::HOST].to_str().is_err() {
        // `sign` takes any host `HeaderValue` takes (obs-text bytes too), but
        // `verify` reads headers as visible ASCII: such a request is refused.
        // Real hosts come from the cluster file; only check nothing panics.
        let _ = signer.verify(method, &pq, &headers, at);
        return;
    }
    let hash = signer.verify(method, &pq, &headers, at).map(|v| v.hash).unwrap_or_else(|e| {
        panic!("a request signed for {method} {host} {pq} at {time} is refused: {e}");
    });
    match payload {
        Payload::Bytes(body) => assert!(hash.matches(body), "content hash does not match the signed body"),
        Payload::Unsigned => assert_eq!(hash, ContentHash::Unsigned),
    }
    assert_eq!(parse_amz_date(headers[H_AMZ_DATE].to_str().unwrap()), Ok(at));

    let mut method_t = method.to_owned();
    let mut pq_t = pq.clone();
    let mut headers_t = headers.clone();
    let set = |h: &mut HeaderMap, name: &'static str, value: &[u8]| match HeaderValue::from_bytes(value) {
        Ok(v) => {
            h.insert(name, v);
            true
        }
        Err(_) => false,
    };
    let changed = match tamper % 6 {
        TAMPER_METHOD => match String::from_utf8(insert(method.as_bytes(), position, tamper_byte)) {
            Ok(m) => {
                method_t = m;
                true
            }
            Err(_) => false,
        },
        TAMPER_HOST => {
            let new = insert(host.as_bytes(), position, tamper_byte);
            canonical_value(&new) != canonical_value(host.as_bytes()) && set(&mut headers_t, "host", &new)
        }
        TAMPER_TARGET => match path_and_query(&insert(raw.target, position, tamper_byte)) {
            // Known: `Signer` signs `http://sillok{path_and_query}`, so a target
            // that does not start with `/` (`*`) becomes part of the authority
            // and signs like `/` (regression: node_asterisk_target_signs_as_root).
            Some(p) if !p.starts_with('/') || !pq.starts_with('/') => false,
            Some(p) if canonical_target(&p) != canonical_target(&pq) => {
                pq_t = p;
                true
            }
            _ => false,
        },
        TAMPER_CONTENT_SHA => {
            let new = match hash {
                ContentHash::Unsigned => hex::encode(Sha256::digest([tamper_byte])),
                ContentHash::Sha256(h) => {
                    let mut hex = hex::encode(h).into_bytes();
                    let i = position as usize % 64;
                    let digits = b"0123456789abcdef";
                    let pos = digits.iter().position(|&d| d == hex[i]).expect("hex digit");
                    hex[i] = digits[(pos + 1 + usize::from(tamper_byte) % 15) % 16];
                    String::from_utf8(hex).expect("ascii")
                }
            };
            set(&mut headers_t, H_CONTENT_SHA256, new.as_bytes())
        }
        TAMPER_DATE => {
            let later = at + Duration::from_secs(1 + u64::from(tamper_byte));
            match sign_fixed(&signer, method, host, &pq, payload, later) {
                Ok(other) => {
                    let date = header_map(&other)[H_AMZ_DATE].clone();
                    headers_t.insert(H_AMZ_DATE, date);
                    true
                }
                Err(_) => false,
            }
        }
        _ => {
            let auth = headers[http::header::AUTHORIZATION].as_bytes();
            let i = position as usize % auth.len();
            let mut new = auth.to_vec();
            new[i] = tamper_byte;
            new != auth && set(&mut headers_t, "authorization", &new)
        }
    };
    if changed {
        let r = signer.verify(&method_t, &pq_t, &headers_t, at);
        assert!(
            r.is_err(),
            "tampered request accepted (kind {}): {method_t} {pq_t} {headers_t:?}; signed as {method} {pq} {headers:?}",
            tamper % 6
        );
    }
}

/// A sign-then-check input (for seeds).
pub fn signed_input(unsigned_payload: bool, time: u32, tamper: u8, position: u32, byte: u8, req: &[u8]) -> Vec<u8> {
    let mut v = vec![1 | (u8::from(unsigned_payload) << 1)];
    v.extend_from_slice(&time.to_le_bytes());
    v.push(tamper);
    v.extend_from_slice(&position.to_le_bytes());
    v.push(byte);
    v.extend_from_slice(req);
    v
}

/// A check-as-given input (for seeds): `clock_offset` seconds from [`signing_time`].
pub fn verify_input(clock_offset: i32, req: &[u8]) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(&clock_offset.to_le_bytes());
    v.extend_from_slice(&[0; 6]);
    v.extend_from_slice(req);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigv4_equivalences() {
        assert_eq!(canonical_value(b"  a   b "), b"a b");
        assert_eq!(canonical_target("/p?b=2&a=1&"), canonical_target("/p?a=1&b=2"));
        assert_eq!(canonical_target("/p?a=%41+b"), canonical_target("/p?a=A%20b"));
        assert_ne!(canonical_target("/p?a=1"), canonical_target("/p/?a=1"));
        assert_eq!(percent_decode(b"%4"), b"%4");
        assert_eq!(percent_decode(b"%zz%41"), b"%zzA");
    }

    #[test]
    fn every_tamper_kind_on_a_plain_request() {
        let req = b"PUT /v1/shards/abc/3?from=1&to=4 HTTP/1.1\r\nhost: 10.0.0.2:7000\r\n\r\nbody";
        for kind in 0..6 {
            for pos in [0, 3, 17, 1000] {
                run(&signed_input(false, 1_767_225_600, kind, pos, b'x', req));
                run(&signed_input(true, 1_767_225_600, kind, pos, b'7', req));
            }
        }
    }
}
