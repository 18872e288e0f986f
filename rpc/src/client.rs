//! The client half of the internal transport: one pooled, signing HTTP/1.1
//! client with deadlines, used by every internal caller.
//!
//! Owns: the hyper-util connection pool, how an address becomes a request
//! URI, how a failed call is classified ([`RpcError`]), and reading a bounded
//! response body.
//!
//! Invariants:
//! - TCP_NODELAY on every connection (a peer store measured here without it
//!   added ~40 ms to every small request).
//! - The TCP connect has its own deadline (`connect_timeout`); every other
//!   wait is bounded by the caller: [`RpcClient::call`] bounds the whole call,
//!   [`RpcClient::send_within`] the response head, [`read_body`] each gap
//!   between body chunks. A hung (SIGSTOPped) peer costs a deadline, never
//!   more.
//! - With an identity ([`crate::tls`]), every connection is TLS: the client
//!   presents its certificate and accepts only a server certificate of the
//!   cluster CA that names the address dialled; the handshake happens inside
//!   the caller's deadlines like the rest of the call. Without one, plain
//!   HTTP (`--insecure-internal-http`).
//! - Every request is signed ([`crate::auth`]) as it is sent, so every
//!   `x-sillok-*` header a caller put on it is covered: JSON and empty bodies
//!   by their SHA-256, streamed shard bodies as `UNSIGNED-PAYLOAD` (sealed by
//!   their sender's trailer instead). Nothing sends a request unsigned: the
//!   send methods sign it.
//! - Response bodies are read up to a limit the caller names; a larger one is
//!   an error, never a large allocation.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::auth::{Payload, Signer};
use crate::tls::InternalTls;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every internal request: whole or streamed.
pub type ReqBody = UnsyncBoxBody<Bytes, BoxError>;

pub fn empty_body() -> ReqBody {
    http_body_util::Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full_body(b: Bytes) -> ReqBody {
    http_body_util::Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

/// `host:port` from an address that may carry a scheme or a trailing slash.
pub fn authority(addr: &str) -> &str {
    let addr = addr.strip_prefix("http://").or_else(|| addr.strip_prefix("https://")).unwrap_or(addr);
    addr.trim_end_matches('/')
}

/// Why a call got no usable response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    /// The connection could not be made (refused, no route, bad address).
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// A deadline passed; `what` says which.
    #[error("{addr} timed out ({what})")]
    Timeout { addr: String, what: &'static str },
    /// The connection broke, or the exchange failed after connecting.
    #[error("call to {addr} failed: {reason}")]
    Broken { addr: String, reason: String },
    /// The answer was larger than the caller accepts.
    #[error("{addr} answered more than {limit} bytes")]
    TooLarge { addr: String, limit: usize },
    /// The request could not be built or signed (a bad address, say).
    #[error("cannot send to {addr}: {reason}")]
    Request { addr: String, reason: String },
}

impl RpcError {
    /// Whether the peer could not be reached at all or in time: the errors
    /// that make a peer suspect (as opposed to an answer that was refused).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, RpcError::Connect { .. } | RpcError::Timeout { .. } | RpcError::Broken { .. })
    }
}

/// An error and every error it came from, as one line.
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut reason = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        src = s.source();
    }
    reason
}

/// Classifies a failed hyper-util call.
pub fn classify(addr: &str, e: &hyper_util::client::legacy::Error) -> RpcError {
    let reason = with_sources(e);
    let mut timed_out = false;
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
        }
        src = s.source();
    }
    let addr = addr.to_string();
    match (e.is_connect(), timed_out) {
        (true, true) => RpcError::Timeout { addr, what: "connect" },
        (true, false) => RpcError::Connect { addr, reason },
        _ => RpcError::Broken { addr, reason },
    }
}

/// Reads a whole body, each chunk within `idle`, at most `limit` bytes.
pub async fn read_body(addr: &str, mut body: Incoming, idle: Duration, limit: usize) -> Result<Bytes, RpcError> {
    // A body that arrives in one piece is returned as that piece; only one
    // in several pieces is gathered (copied) into a buffer of its own.
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    let mut len = 0usize;
    loop {
        match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Err(RpcError::Timeout { addr: addr.to_string(), what: "idle while reading a response body" });
            }
            Ok(None) => return Ok(first.unwrap_or_else(|| buf.freeze())),
            Ok(Some(Err(e))) => {
                return Err(RpcError::Broken {
                    addr: addr.to_string(),
                    reason: format!("response body broke off: {}", with_sources(&e)),
                });
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    len += data.len();
                    if len > limit {
                        return Err(RpcError::TooLarge { addr: addr.to_string(), limit });
                    }
                    if data.is_empty() {
                        continue;
                    }
                    if len == data.len() {
                        first = Some(data);
                        continue;
                    }
                    if let Some(f) = first.take() {
                        buf.reserve(len);
                        buf.extend_from_slice(&f);
                    }
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
}

/// The `error` code and `message` of an error answer (see
/// [`crate::server::ErrorBody`]); the raw text when it is not one.
pub fn error_fields(status: StatusCode, body: &[u8]) -> (Option<String>, String) {
    let json = serde_json::from_slice::<serde_json::Value>(body).ok();
    let field = |name: &str| json.as_ref().and_then(|v| v.get(name)?.as_str().map(String::from));
    let message = field("message").unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let message = if message.is_empty() { status.canonical_reason().unwrap_or("").to_string() } else { message };
    (field("error"), message)
}

/// A whole answer: status, headers, body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A signing HTTP client with deadlines. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct RpcClient {
    http: Client<HttpsConnector<HttpConnector>, ReqBody>,
    signer: Signer,
    /// `https` with an identity, `http` without.
    scheme: &'static str,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient").field("signer", &self.signer).finish_non_exhaustive()
    }
}

impl RpcClient {
    /// A client with this process's identity ([`crate::tls::process`]):
    /// mutual TLS when one is installed, plain HTTP otherwise.
    pub fn new(signer: Signer, connect_timeout: Duration) -> Self {
        Self::with_tls(signer, connect_timeout, crate::tls::process().as_deref())
    }

    /// A client presenting `tls`'s certificate and trusting only its cluster
    /// CA (`None`: plain HTTP).
    pub fn with_tls(signer: Signer, connect_timeout: Duration, tls: Option<&InternalTls>) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(connect_timeout));
        conn.enforce_http(false);
        let (mut config, scheme) = match tls {
            Some(t) => ((*t.client_config()).clone(), "https"),
            None => (plain_only_config(), "http"),
        };
        // hyper-rustls offers the ALPN protocols it speaks (http/1.1) itself.
        config.alpn_protocols.clear();
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config);
        let conn = match tls {
            Some(_) => builder.https_only().enable_http1().wrap_connector(conn),
            None => builder.https_or_http().enable_http1().wrap_connector(conn),
        };
        let http = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(conn);
        RpcClient { http, signer, scheme }
    }

    /// A request to `addr` (`host:port`, scheme optional) with a body declared
    /// by `payload`; it is signed when sent.
    pub fn request(
        &self,
        addr: &str,
        method: Method,
        path_and_query: &str,
        payload: Payload<'_>,
        body: ReqBody,
    ) -> Result<Request<ReqBody>, RpcError> {
        let host = authority(addr);
        let bad = |reason: String| RpcError::Request { addr: addr.to_string(), reason };
        Request::builder()
            .method(method)
            .uri(format!("{}://{host}{path_and_query}", self.scheme))
            .header(http::header::HOST, host)
            .header(crate::auth::H_CONTENT_SHA256, payload.content_sha())
            .header(crate::auth::H_NONCE, crate::auth::new_nonce())
            .body(body)
            .map_err(|e| bad(format!("bad address or path: {e}")))
    }

    /// Signs `req` as it stands (every `x-sillok-*` header on it included).
    fn signed(&self, mut req: Request<ReqBody>) -> Result<Request<ReqBody>, RpcError> {
        let addr = req.uri().authority().map(|a| a.to_string()).unwrap_or_default();
        self.signer.seal_request(&mut req).map_err(|e| RpcError::Request { addr, reason: e.to_string() })?;
        Ok(req)
    }

    /// Sends `req` with no deadline of its own: for callers that watch a
    /// streamed upload themselves (the future is theirs to bound or drop).
    pub fn send_unbounded(
        &self,
        req: Request<ReqBody>,
    ) -> Result<hyper_util::client::legacy::ResponseFuture, RpcError> {
        Ok(self.http.request(self.signed(req)?))
    }

    /// Sends `req` exactly as it is, signed or not: for tests that replay or
    /// tamper with a request and check that the receiver refuses it.
    pub fn send_as_is(&self, req: Request<ReqBody>) -> hyper_util::client::legacy::ResponseFuture {
        self.http.request(req)
    }

    /// Sends `req` and waits at most `deadline` for the response head.
    pub async fn send_within(
        &self,
        addr: &str,
        req: Request<ReqBody>,
        deadline: Duration,
    ) -> Result<Response<Incoming>, RpcError> {
        let req = self.signed(req)?;
        match tokio::time::timeout(deadline, self.http.request(req)).await {
            Err(_) => Err(RpcError::Timeout { addr: addr.to_string(), what: "response" }),
            Ok(Err(e)) => Err(classify(addr, &e)),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    /// One signed call with a whole body and a JSON content type, its answer
    /// read whole (at most `limit` bytes), everything within `deadline`.
    #[allow(clippy::too_many_arguments)]
    pub async fn call(
        &self,
        method: Method,
        addr: &str,
        path_and_query: &str,
        body: Vec<u8>,
        extra: &[(&'static str, String)],
        deadline: Duration,
        limit: usize,
    ) -> Result<Reply, RpcError> {
        let body = Bytes::from(body);
        let mut req = self.request(addr, method, path_and_query, Payload::Bytes(&body), full_body(body.clone()))?;
        let headers = req.headers_mut();
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        for (k, v) in extra {
            let v = http::HeaderValue::from_str(v)
                .map_err(|_| RpcError::Request { addr: addr.to_string(), reason: format!("bad value for {k}") })?;
            headers.insert(*k, v);
        }
        let req = self.signed(req)?;
        let work = async {
            let resp = self.http.request(req).await.map_err(|e| classify(addr, &e))?;
            let (parts, body) = resp.into_parts();
            let body = match http_body_util::Limited::new(body, limit).collect().await {
                Ok(c) => c.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    return Err(RpcError::TooLarge { addr: addr.to_string(), limit });
                }
                Err(e) => {
                    return Err(RpcError::Broken {
                        addr: addr.to_string(),
                        reason: format!("reading the response: {}", with_sources(&*e)),
                    });
                }
            };
            Ok(Reply { status: parts.status, headers: parts.headers, body })
        };
        match tokio::time::timeout(deadline, work).await {
            Ok(r) => r,
            Err(_) => Err(RpcError::Timeout { addr: addr.to_string(), what: "whole call" }),
        }
    }

    /// The key this client signs with.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }
}

/// The TLS configuration of a plain-HTTP client: never used (its URIs are
/// `http`), and trusting nothing should it be.
fn plain_only_config() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}
