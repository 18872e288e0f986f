//! `s3_request`: one HTTP request through a real `s3s` service.
//!
//! Input: two flag bytes, then a request as text ([`RawRequest`]). The
//! request goes to an `S3Service` built like the gateway's (`S3ServiceBuilder`,
//! an auth provider, the gateway's own `VirtualHosts` for [`DOMAINS`] and its
//! body limits) around [`FuzzS3`], which reads every
//! request body to its end (so aws-chunked decoding, chunk signatures,
//! trailers and content hashes are all checked) and answers with an empty
//! output or an error. The response body is read to its end too.
//!
//! Flag byte 0:
//! - bits 0-1, how the request is authenticated:
//!   - 0: as given, to a service whose clock-skew limit is unbounded (so that
//!     seeds signed at [`signing_time`] stay valid);
//!   - 1: the harness signs it (SigV4, `authorization` header, at
//!     [`signing_time`]) with the known key, same service as 0;
//!   - 2: the harness presigns it (SigV4 query string, now), to a service with
//!     the gateway's configuration (s3s defaults);
//!   - 3: as given, to a service without an auth provider.
//! - bits 2-4: the body reaches s3s in pieces of `4^(n-1)` bytes (n = 0: one piece).
//! - bit 5: the body length is not known in advance (as with
//!   `transfer-encoding: chunked`); otherwise `content-length` is set to the
//!   body's length, as hyper would frame it.
//! - bits 6-7 (mode 1 only), the payload hash that is signed: 0 the request's
//!   own `x-amz-content-sha256` (or `UNSIGNED-PAYLOAD`); 1 the body's SHA-256;
//!   2 `UNSIGNED-PAYLOAD`; 3 the body is aws-chunked by the harness with valid
//!   chunk signatures (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`).
//!
//! Flag byte 1: bits 0-3 give the aws-chunk payload size, `2^n` bytes (mode 1,
//! hash choice 3).
//!
//! Invariant: nothing panics and every request gets a response or an error.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use futures::StreamExt;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use s3s::auth::SimpleAuth;
use s3s::config::{S3Config, StaticConfigProvider};
use s3s::dto::*;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use sillok_gateway::vhost::VirtualHosts;

use crate::{Input, RawRequest};

/// The one access key the services know.
pub const ACCESS_KEY: &str = "AKIAFUZZEXAMPLE";
pub const SECRET_KEY: &str = "fuzz/secret/key/for/sillok/harness";
pub const REGION: &str = "us-east-1";
/// 2026-01-01T00:00:00Z: when seeds and mode-1 requests are signed.
pub const SIGNING_TIME_SECS: u64 = 1_767_225_600;
pub fn signing_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(SIGNING_TIME_SECS)
}
/// The size of every object `get_object` serves (keys starting `empty`: 0).
pub const OBJECT_SIZE: u64 = 1000;
/// Base domains for virtual-host-style requests (`<bucket>.<domain>`), through
/// the gateway's own `VirtualHosts`.
pub const DOMAINS: [&str; 2] = ["s3.localhost", "localhost"];
/// What the harness adds when a signed request has no Host header.
pub const DEFAULT_HOST: &str = "127.0.0.1:9000";

pub const AUTH_AS_GIVEN: u8 = 0;
pub const AUTH_SIGN_HEADERS: u8 = 1;
pub const AUTH_PRESIGN: u8 = 2;
pub const AUTH_NONE: u8 = 3;

pub const HASH_KEEP: u8 = 0;
pub const HASH_BODY: u8 = 1;
pub const HASH_UNSIGNED: u8 = 2;
pub const HASH_AWS_CHUNKED: u8 = 3;

/// Builds flag byte 0 from its fields.
pub fn flags(auth: u8, piece_selector: u8, unknown_length: bool, hash: u8) -> u8 {
    (auth & 3) | ((piece_selector & 7) << 2) | (u8::from(unknown_length) << 5) | ((hash & 3) << 6)
}

/// Answers every operation with an empty output or an error, after reading
/// the request body (and its trailers) to the end.
pub struct FuzzS3;

async fn drain(body: Option<StreamingBlob>) -> S3Result<u64> {
    let mut n = 0u64;
    if let Some(mut body) = body {
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(b) => n += b.len() as u64,
                Err(e) => return Err(s3_error!(IncompleteBody, "body: {e}")),
            }
        }
    }
    Ok(n)
}

fn take_trailers<T>(req: &S3Request<T>) -> usize {
    req.trailing_headers.as_ref().and_then(|t| t.take()).map_or(0, |h| h.len())
}

#[async_trait::async_trait]
impl S3 for FuzzS3 {
    async fn put_object(&self, mut req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        drain(req.input.body.take()).await?;
        take_trailers(&req);
        Ok(S3Response::new(PutObjectOutput { e_tag: Some(ETag::Strong("0".repeat(32))), ..Default::default() }))
    }

    async fn upload_part(&self, mut req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        drain(req.input.body.take()).await?;
        take_trailers(&req);
        Ok(S3Response::new(UploadPartOutput::default()))
    }

    async fn post_object(&self, mut req: S3Request<PostObjectInput>) -> S3Result<S3Response<PostObjectOutput>> {
        drain(req.input.body.take()).await?;
        Ok(S3Response::new(PostObjectOutput::default()))
    }

    async fn complete_multipart_upload(
        &self,
        _req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        Ok(S3Response::new(CompleteMultipartUploadOutput::default()))
    }

    async fn create_multipart_upload(
        &self,
        _req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        Ok(S3Response::new(CreateMultipartUploadOutput { upload_id: Some("u".into()), ..Default::default() }))
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        // Echo the keys back, so the response serialiser sees fuzzed strings.
        let deleted = req
            .input
            .delete
            .objects
            .into_iter()
            .map(|o| DeletedObject { key: Some(o.key), version_id: o.version_id, ..Default::default() })
            .collect();
        Ok(S3Response::new(DeleteObjectsOutput { deleted: Some(deleted), ..Default::default() }))
    }

    async fn create_bucket(&self, _req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        Ok(S3Response::new(CreateBucketOutput::default()))
    }

    /// Every object holds [`OBJECT_SIZE`] zero bytes, except that keys
    /// starting with `empty` are empty. Ranges are served as the gateway does.
    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let size = if req.input.key.starts_with("empty") { 0 } else { OBJECT_SIZE };
        let (range, content_range) = match req.input.range {
            None => (0..size, None),
            Some(r) => {
                let rg = r.check(size)?;
                // The gateway prints `rg.end - 1`; an empty range has no last byte.
                let cr = rg.end.checked_sub(1).map(|last| format!("bytes {}-{last}/{size}", rg.start));
                (rg, cr)
            }
        };
        let len = range.end - range.start;
        let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(vec![0; len as usize]))]);
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(body)),
            content_length: Some(len as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(ETag::Strong("0".repeat(32))),
            content_type: req.input.response_content_type,
            content_disposition: req.input.response_content_disposition,
            ..Default::default()
        }))
    }

    async fn head_object(&self, _req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        Err(s3_error!(NoSuchKey))
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let i = req.input;
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(i.bucket),
            prefix: i.prefix,
            delimiter: i.delimiter,
            start_after: i.start_after,
            continuation_token: i.continuation_token,
            max_keys: i.max_keys,
            ..Default::default()
        }))
    }

    async fn list_buckets(&self, _req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        Ok(S3Response::new(ListBucketsOutput::default()))
    }

    async fn delete_object(&self, _req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }
}

/// A request body handed over in pieces, with an exact size hint or none.
struct PiecesBody {
    pieces: VecDeque<Bytes>,
    remaining: u64,
    exact: bool,
}

impl http_body::Body for PiecesBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        match this.pieces.pop_front() {
            Some(b) => {
                this.remaining -= b.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact { SizeHint::with_exact(self.remaining) } else { SizeHint::default() }
    }
}

fn pieces(body: &[u8], selector: u8) -> VecDeque<Bytes> {
    let body = Bytes::copy_from_slice(body);
    if selector == 0 || body.is_empty() {
        return VecDeque::from([body]);
    }
    let size = 1usize << (2 * (usize::from(selector) - 1));
    (0..body.len()).step_by(size).map(|at| body.slice(at..(at + size).min(body.len()))).collect()
}

struct Services {
    lenient: S3Service,
    strict: S3Service,
    anonymous: S3Service,
}

fn services() -> &'static Services {
    static SERVICES: OnceLock<Services> = OnceLock::new();
    SERVICES.get_or_init(|| {
        let build = |config: S3Config, auth: bool| {
            let mut b = S3ServiceBuilder::new(FuzzS3);
            if auth {
                b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
            }
            let domains: Vec<String> = DOMAINS.iter().map(|d| d.to_string()).collect();
            b.set_host(VirtualHosts::new(&domains).expect("valid domains"));
            b.set_config(Arc::new(StaticConfigProvider::new(Arc::new(config))));
            b.build()
        };
        // The gateway's settings (gateway/src/server.rs).
        let mut gateway = S3Config::default();
        gateway.xml_max_body_size = 4 << 20;
        gateway.post_object_max_file_size = 64 << 20;
        let mut lenient = gateway.clone();
        lenient.presigned_url_max_skew_time_secs = u32::MAX;
        Services {
            lenient: build(lenient, true),
            strict: build(gateway.clone(), true),
            anonymous: build(gateway, false),
        }
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime"))
}

fn identity() -> Identity {
    Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "sillok-fuzz").into()
}

fn settings(location: SignatureLocation) -> SigningSettings {
    let mut s = SigningSettings::default();
    s.percent_encoding_mode = PercentEncodingMode::Single;
    s.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    s.signature_location = location;
    s.payload_checksum_kind = match location {
        SignatureLocation::Headers => PayloadChecksumKind::XAmzSha256,
        _ => PayloadChecksumKind::NoHeader,
    };
    if location == SignatureLocation::QueryParams {
        s.expires_in = Some(Duration::from_secs(3600));
    }
    s
}

/// What [`sign_request`] signed the payload as.
pub enum SignedPayload<'a> {
    /// A precomputed `x-amz-content-sha256` value.
    Precomputed(String),
    /// The body's SHA-256.
    Body(&'a [u8]),
    Unsigned,
}

/// Signs `req` in place with the known key at `time` (header or query
/// signature). Every header the request carries is signed. Returns the
/// seed signature (for aws-chunked bodies), or `None` if aws-sigv4 could not
/// sign this request (it is then sent unsigned).
pub fn sign_request<B>(
    req: &mut http::Request<B>,
    payload: SignedPayload<'_>,
    location: SignatureLocation,
    time: SystemTime,
) -> Option<String> {
    if req.headers().get(http::header::HOST).is_none() {
        req.headers_mut().insert(http::header::HOST, http::HeaderValue::from_static(DEFAULT_HOST));
    }
    for name in ["authorization", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token"] {
        req.headers_mut().remove(name);
    }
    let host = req.headers().get(http::header::HOST)?.to_str().ok()?.to_owned();
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let uri = format!("http://{host}{target}");
    let headers: Vec<(String, String)> =
        req.headers().iter().filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned()))).collect();
    let body = match &payload {
        SignedPayload::Precomputed(h) => SignableBody::Precomputed(h.clone()),
        SignedPayload::Body(b) => SignableBody::Bytes(b),
        SignedPayload::Unsigned => SignableBody::UnsignedPayload,
    };
    let signable =
        SignableRequest::new(req.method().as_str(), uri, headers.iter().map(|(n, v)| (n.as_str(), v.as_str())), body)
            .ok()?;
    let identity = identity();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("s3")
        .time(time)
        .settings(settings(location))
        .build()
        .ok()?
        .into();
    let (instructions, signature) = sign(signable, &params).ok()?.into_parts();
    // Not `apply_to_request_http1x`: it panics on targets that are not origin-form.
    let (headers, query) = instructions.into_parts();
    for h in headers {
        req.headers_mut().insert(h.name(), http::HeaderValue::from_str(h.value()).ok()?);
    }
    if !query.is_empty() {
        let mut target = req.uri().to_string();
        let mut sep = if target.contains('?') { '&' } else { '?' };
        for (name, value) in query {
            target.push(sep);
            target.push_str(&percent_encode(name));
            target.push('=');
            target.push_str(&percent_encode(&value));
            sep = '&';
        }
        *req.uri_mut() = http::Uri::try_from(target).ok()?;
    }
    Some(signature)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    utf8_percent_encode(s, UNRESERVED).to_string()
}

/// `payload` as an aws-chunked body in chunks of `chunk` bytes, each signed
/// in the chain that starts at `seed_signature` (SigV4 streaming upload).
pub fn aws_chunked(payload: &[u8], chunk: usize, seed_signature: &str, time: SystemTime) -> Vec<u8> {
    let identity = identity();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("s3")
        .time(time)
        .settings(())
        .build()
        .expect("complete signing params");
    let mut out = Vec::new();
    let mut previous = seed_signature.to_owned();
    let chunks = payload.chunks(chunk.max(1)).map(Bytes::copy_from_slice).chain(std::iter::once(Bytes::new()));
    for c in chunks {
        let signature = v4::sign_chunk(&c, &previous, &params).expect("chunk signature").into_parts().1;
        out.extend_from_slice(format!("{:x};chunk-signature={signature}\r\n", c.len()).as_bytes());
        out.extend_from_slice(&c);
        out.extend_from_slice(b"\r\n");
        previous = signature;
    }
    out
}

/// Which of the three services a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Auth with the known key, unbounded clock skew.
    Lenient,
    /// Auth with the known key, s3s's default configuration (the gateway's).
    Strict,
    /// No auth provider.
    Anonymous,
}

/// The request an input describes, signed as its flags say, and where it goes.
/// `None` if the method or target is not valid HTTP (hyper would refuse it).
pub fn build(data: &[u8]) -> Option<(s3s::HttpRequest, Service)> {
    let mut input = Input::new(data);
    let f0 = input.byte();
    let f1 = input.byte();
    let raw = RawRequest::parse(input.rest());
    let auth = f0 & 3;
    let piece_selector = (f0 >> 2) & 7;
    let unknown_length = f0 & 0x20 != 0;
    let hash = f0 >> 6;

    let mut req = http::Request::new(());
    *req.method_mut() = http::Method::from_bytes(raw.method).ok()?;
    *req.uri_mut() = http::Uri::try_from(raw.target).ok()?;
    *req.headers_mut() = raw.header_map();

    let mut body = raw.body.to_vec();
    match auth {
        AUTH_SIGN_HEADERS => {
            let time = signing_time();
            if hash == HASH_AWS_CHUNKED {
                let headers = req.headers_mut();
                headers.insert("content-encoding", http::HeaderValue::from_static("aws-chunked"));
                headers.insert("x-amz-decoded-content-length", body.len().into());
                let streaming = SignedPayload::Precomputed("STREAMING-AWS4-HMAC-SHA256-PAYLOAD".into());
                if let Some(seed) = sign_request(&mut req, streaming, SignatureLocation::Headers, time) {
                    body = aws_chunked(&body, 1 << (f1 & 15), &seed, time);
                }
            } else {
                let payload = match hash {
                    HASH_KEEP => match req.headers().get("x-amz-content-sha256").map(|v| v.to_str()) {
                        Some(Ok(v)) => SignedPayload::Precomputed(v.to_owned()),
                        _ => SignedPayload::Unsigned,
                    },
                    HASH_BODY => SignedPayload::Body(&body),
                    _ => SignedPayload::Unsigned,
                };
                sign_request(&mut req, payload, SignatureLocation::Headers, time);
            }
        }
        AUTH_PRESIGN => {
            sign_request(&mut req, SignedPayload::Unsigned, SignatureLocation::QueryParams, SystemTime::now());
        }
        _ => {}
    }

    // Frame the body as hyper would: by content-length, or of unknown length.
    if unknown_length {
        req.headers_mut().remove(http::header::CONTENT_LENGTH);
    } else if !body.is_empty() || req.headers().contains_key(http::header::CONTENT_LENGTH) {
        req.headers_mut().insert(http::header::CONTENT_LENGTH, body.len().into());
    }
    let len = body.len() as u64;
    let body = PiecesBody { pieces: pieces(&body, piece_selector), remaining: len, exact: !unknown_length };
    let service = match auth {
        AUTH_AS_GIVEN | AUTH_SIGN_HEADERS => Service::Lenient,
        AUTH_PRESIGN => Service::Strict,
        _ => Service::Anonymous,
    };
    Some((req.map(|()| s3s::Body::http_body(body)), service))
}

/// A panic in a dependency that is understood and reported, and so no longer
/// a finding: inputs that hit it count as answered (the gateway turns a panic
/// into a 500). Matched by where the panic happens, which names the crate
/// version, so an upgrade re-arms the fuzzer.
#[derive(Debug, PartialEq, Eq)]
pub struct KnownPanic {
    /// The end of the panic location's file path.
    pub file: &'static str,
    pub what: &'static str,
    /// The regression input under `fuzz/regressions/s3_request/`.
    pub regression: &'static str,
}

pub const KNOWN_PANICS: [KnownPanic; 1] = [KnownPanic {
    file: "s3s-0.14.1/src/utils/parser.rs",
    what: "s3s `digit()` computes `c - b'0'` before checking that `c` is a digit (`bool::then_some` \
           evaluates its argument), so with overflow checks on (debug builds, tests) a byte below '0' \
           in a digit position of an x-amz-date (header, X-Amz-Date query or form field) or of a \
           credential scope date panics",
    regression: "s3s_amz_date_digit_overflow",
}];

thread_local! {
    static KNOWN_HIT: std::cell::Cell<Option<&'static KnownPanic>> = const { std::cell::Cell::new(None) };
}

/// Wraps the current panic hook (libFuzzer's aborts) so that known panics
/// only mark themselves and unwind. With `SILLOK_FUZZ_REPORT_KNOWN` set in
/// the environment, known panics are findings again (to minimise them, or to
/// see whether a dependency upgrade fixed them).
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        let report_all = std::env::var_os("SILLOK_FUZZ_REPORT_KNOWN").is_some();
        std::panic::set_hook(Box::new(move |info| {
            let known = info.location().and_then(|l| KNOWN_PANICS.iter().find(|k| l.file().ends_with(k.file)));
            let known = known.filter(|_| !report_all);
            match known {
                Some(k) => KNOWN_HIT.with(|h| h.set(Some(k))),
                None => previous(info),
            }
        }));
    });
}

/// What became of a request.
#[derive(Debug)]
pub enum Outcome {
    /// The input is not a request hyper would pass on (bad method or target).
    NotARequest,
    /// s3s answered with an `HttpError` (the gateway answers 500).
    HttpError,
    /// The response status and its whole body.
    Response(http::StatusCode, Bytes),
    /// s3s panicked in a known place (the gateway answers 500).
    KnownPanic(&'static KnownPanic),
}

/// Sends the request an input describes and reads the response to its end.
/// Any panic other than a [`KnownPanic`] propagates.
pub fn outcome(data: &[u8]) -> Outcome {
    let Some((req, service)) = build(data) else { return Outcome::NotARequest };
    let s = services();
    let service = match service {
        Service::Lenient => &s.lenient,
        Service::Strict => &s.strict,
        Service::Anonymous => &s.anonymous,
    };
    install_panic_hook();
    KNOWN_HIT.with(|h| h.set(None));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime().block_on(async {
            let Ok(resp) = service.call(req).await else { return Outcome::HttpError };
            let status = resp.status();
            let body = BodyExt::collect(resp.into_body()).await.map(|b| b.to_bytes()).unwrap_or_default();
            Outcome::Response(status, body)
        })
    }));
    match result {
        Ok(o) => o,
        Err(payload) => match KNOWN_HIT.with(|h| h.take()) {
            Some(k) => Outcome::KnownPanic(k),
            None => std::panic::resume_unwind(payload),
        },
    }
}

/// The response status and body, if s3s answered with a response.
pub fn response(data: &[u8]) -> Option<(http::StatusCode, Bytes)> {
    match outcome(data) {
        Outcome::Response(status, body) => Some((status, body)),
        _ => None,
    }
}

/// The response status only (see [`response`]).
pub fn respond(data: &[u8]) -> Option<http::StatusCode> {
    response(data).map(|(status, _)| status)
}

pub fn run(data: &[u8]) {
    outcome(data);
}

/// An input: the flag bytes followed by the request text.
pub fn input(flags0: u8, flags1: u8, request: &[u8]) -> Vec<u8> {
    let mut data = vec![flags0, flags1];
    data.extend_from_slice(request);
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_requests_get_past_auth() {
        let put = b"PUT /bucket/key HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n\r\nhello";
        for hash in [HASH_KEEP, HASH_BODY, HASH_UNSIGNED] {
            for pieces in [0, 1, 3] {
                let ok = respond(&input(flags(AUTH_SIGN_HEADERS, pieces, false, hash), 0, put));
                assert_eq!(ok, Some(http::StatusCode::OK), "hash {hash} pieces {pieces}");
            }
        }
        let chunked = b"PUT /bucket/key HTTP/1.1\r\nHost: h\r\n\r\nhello, streaming world";
        for f1 in [0, 2, 15] {
            let ok = respond(&input(flags(AUTH_SIGN_HEADERS, 2, false, HASH_AWS_CHUNKED), f1, chunked));
            assert_eq!(ok, Some(http::StatusCode::OK), "chunk size 2^{f1}");
        }
        let get = b"GET /bucket?list-type=2&prefix=a HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(respond(&input(flags(AUTH_PRESIGN, 0, false, 0), 0, get)), Some(http::StatusCode::OK));
        assert_eq!(respond(&input(flags(AUTH_NONE, 0, false, 0), 0, get)), Some(http::StatusCode::OK));
        // Unsigned requests to a service with auth are refused.
        assert_eq!(respond(&input(flags(AUTH_AS_GIVEN, 0, false, 0), 0, put)), Some(http::StatusCode::FORBIDDEN));
    }

    #[test]
    fn pieces_cover_the_body() {
        let body: Vec<u8> = (0..100).collect();
        for sel in 0..8 {
            let p = pieces(&body, sel);
            assert_eq!(p.iter().flat_map(|b| b.iter().copied()).collect::<Vec<_>>(), body);
        }
    }
}
