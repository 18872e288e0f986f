//! The receiving half of the internal transport, for axum services.
//!
//! Owns: [`authenticate`], the one check every internal route runs behind,
//! the shape of every answer ([`json`] and [`error`], with [`ErrorBody`]),
//! and the accept loop ([`serve`]: TCP_NODELAY, graceful shutdown).
//!
//! Invariants:
//! - No route runs for a request whose SigV4 signature does not verify with
//!   the key it names: the cluster secret ([`Caller::Internal`]) or a key the
//!   service's `lookup` vouches for ([`Caller::Key`]), within the skew window;
//!   whose signed `host` is not one the service answers as ([`Policy::host_ok`]);
//!   or whose nonce the service has accepted before ([`Policy::replays`]).
//! - A body signed by its SHA-256 is read whole (at most `max_body` bytes)
//!   and compared with the signed hash before any route sees it.
//! - `UNSIGNED-PAYLOAD` is accepted only where the service's policy allows it
//!   (shard uploads, whose frames carry their own blake3 hashes); such a body
//!   is handed on unread, as a stream, with the [`BodySeal`] its trailer
//!   must match in the request's extensions; the route stores nothing
//!   before it has checked that seal.
//! - Refusals name no secret.
//! - With an identity installed ([`crate::tls`]), [`serve`] speaks TLS only,
//!   requires a client certificate of the cluster CA naming this cluster,
//!   gives every connection [`HANDSHAKE_TIMEOUT`] to complete its handshake,
//!   and puts the peer's verified [`crate::tls::Peer`] (cluster id, role) in
//!   every request's extensions; services decide by its role what it may
//!   call. The SigV4 check above still runs on every request.

use std::time::SystemTime;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};

use crate::auth::{self, BodySeal, ContentHash, Signer};
use crate::replay::ReplayCache;

/// Who sent a verified request (inserted into the request's extensions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A Sillok process: signed with the cluster secret.
    Internal,
    /// An operator's key (the access key id), as the service's lookup allowed.
    Key(String),
}

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A short machine-readable code (`forbidden`, `bad_request`, ...).
    pub error: String,
    /// What went wrong, for a person.
    pub message: String,
}

/// `v` as a JSON answer.
pub fn json<T: Serialize>(status: StatusCode, v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(body) => {
            (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("response does not serialise: {e}")),
    }
}

/// An error answer: `status` with an [`ErrorBody`].
pub fn error(status: StatusCode, code: &str, message: String) -> Response {
    let body = serde_json::to_vec(&ErrorBody { error: code.to_string(), message }).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// What a service accepts besides the cluster secret.
pub struct Policy<'a> {
    /// Largest hash-signed body read into memory.
    pub max_body: usize,
    /// Whether `UNSIGNED-PAYLOAD` is allowed for this method and path.
    pub unsigned_ok: &'a (dyn Fn(&Method, &str) -> bool + Send + Sync),
    /// The signing key of another access key id the service accepts
    /// (`None`: refused).
    pub lookup: &'a (dyn Fn(&str) -> Option<Signer> + Send + Sync),
    /// Whether the signed `host` (`host:port`) names this service: a
    /// request signed for another process is refused.
    pub host_ok: &'a (dyn Fn(&str) -> bool + Send + Sync),
    /// The service's memory of accepted nonces.
    pub replays: &'a ReplayCache,
}

/// Verifies `req` (see the module's invariants). On success the request
/// comes back with its [`Caller`] in its extensions and, for hash-signed
/// bodies, the checked body in memory; on failure, the answer to send.
pub async fn authenticate(req: Request, internal: &Signer, policy: &Policy<'_>) -> Result<Request, Response> {
    let forbid = |msg: String| {
        tracing::warn!(method = %req.method(), path = %req.uri().path(), reason = %msg, "internal request refused");
        error(StatusCode::FORBIDDEN, "forbidden", msg)
    };
    let (caller, signer) = match auth::credential_key_id(req.headers()) {
        None => return Err(forbid("the request is not signed (SigV4 with the cluster secret or an admin key)".into())),
        Some(auth::ACCESS_KEY_ID) => (Caller::Internal, internal.clone()),
        Some(id) => match (policy.lookup)(id) {
            Some(signer) => (Caller::Key(id.to_string()), signer),
            None => {
                return Err(forbid(format!("access key {id} is unknown here, revoked, or may not call this service")));
            }
        },
    };
    let pq = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let now = SystemTime::now();
    let verified = match signer.verify(req.method().as_str(), pq, req.headers(), now) {
        Ok(v) => v,
        Err(e) => return Err(forbid(format!("bad signature: {e}"))),
    };
    // Verified, so present and a string.
    let host = req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    if !(policy.host_ok)(host) {
        return Err(forbid(format!("this request was signed for {host}, which is not this process's address")));
    }
    if let Err(e) = policy.replays.check(verified.nonce, verified.time, now) {
        return Err(forbid(e.to_string()));
    }
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(caller);
    let body = match verified.hash {
        ContentHash::Unsigned if (policy.unsigned_ok)(&parts.method, parts.uri.path()) => {
            parts.extensions.insert::<BodySeal>(verified.seal);
            body
        }
        ContentHash::Unsigned => {
            tracing::warn!(method = %parts.method, path = %parts.uri.path(), "refused: UNSIGNED-PAYLOAD here");
            return Err(error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "UNSIGNED-PAYLOAD is only accepted for shard uploads".into(),
            ));
        }
        hash @ ContentHash::Sha256(_) => {
            let bytes = match http_body_util::Limited::new(body, policy.max_body).collect().await {
                Ok(c) => c.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    return Err(error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too_large",
                        format!("request bodies are limited to {} bytes", policy.max_body),
                    ));
                }
                Err(e) => {
                    return Err(error(StatusCode::BAD_REQUEST, "bad_request", format!("could not read the body: {e}")));
                }
            };
            if !hash.matches(&bytes) {
                tracing::warn!(method = %parts.method, path = %parts.uri.path(), "refused: body does not match its signed hash");
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "the body does not match its signed x-amz-content-sha256".into(),
                ));
            }
            Body::from(bytes)
        }
    };
    Ok(Request::from_parts(parts, body))
}

/// Internal connections this process accepted, and of them those whose TLS
/// handshake completed: with connection reuse working these stay near the
/// number of peers, not the number of requests.
static ACCEPTED: std::sync::LazyLock<prometheus_client::metrics::counter::Counter> =
    std::sync::LazyLock::new(Default::default);
static HANDSHAKES: std::sync::LazyLock<prometheus_client::metrics::counter::Counter> =
    std::sync::LazyLock::new(Default::default);

/// Adds this process's internal connection counters to `registry`.
pub fn register_metrics(registry: &mut prometheus_client::registry::Registry) {
    registry.register(
        "sillok_internal_connections_accepted",
        "Internal connections accepted by this process",
        ACCEPTED.clone(),
    );
    registry.register(
        "sillok_internal_tls_handshakes",
        "Internal connections whose mutual TLS handshake completed",
        HANDSHAKES.clone(),
    );
}

/// How long a new connection may take to finish its TLS handshake: a peer
/// that opens a socket and goes silent costs the server one task for this
/// long, never more.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `app` on `listener` (TCP_NODELAY on every accepted socket) until
/// `shutdown` completes, then lets in-flight requests finish. Speaks mutual
/// TLS with this process's identity ([`crate::tls::process`]) when one is
/// installed, plain HTTP otherwise.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, app, shutdown, crate::tls::process()).await
}

/// [`serve`] with an explicit identity (`None`: plain HTTP).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    tls: Option<std::sync::Arc<crate::tls::InternalTls>>,
) -> std::io::Result<()> {
    let Some(tls) = tls else {
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            ACCEPTED.inc();
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(error = %e, "could not set TCP_NODELAY");
            }
        });
        return axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        ACCEPTED.inc();
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "could not set TCP_NODELAY");
        }
        let (acceptor, app, tls, watcher) = (acceptor.clone(), app.clone(), tls.clone(), graceful.watcher());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Err(_) => {
                    tracing::info!(%remote, "internal connection closed: no TLS handshake within 10 s");
                    return;
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    // A port probe, or a peer that gave up: nothing was offered.
                    tracing::debug!(%remote, "internal connection closed before its TLS handshake");
                    return;
                }
                Ok(Err(e)) => {
                    tracing::warn!(%remote, error = %e, "internal connection refused at the TLS handshake");
                    return;
                }
                Ok(Ok(s)) => s,
            };
            HANDSHAKES.inc();
            let identified = match stream.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                None => Err("no client certificate".to_string()),
                Some(cert) => tls.identify(cert),
            };
            let peer = match identified {
                Ok(p) => p,
                Err(reason) => {
                    tracing::warn!(%remote, %reason, "internal connection refused");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(peer.clone());
                let mut app = app.clone();
                tower_service::Service::call(&mut app, req)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%remote, error = %e, "internal connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
