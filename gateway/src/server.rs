//! The gateway's HTTP listener: S3 (through s3s) on every path except
//! `/_sillok/health` and `/_sillok/metrics` (not valid bucket names, so they
//! cannot shadow a bucket; the ops listener, `--ops-listen`, serves the same
//! page at `/metrics` with `/health` and `/ready`). Every S3 request runs in
//! a `tracing` span `s3` with its request id, method and operation. TCP_NODELAY on every accepted socket; graceful
//! shutdown.
//!
//! Limits that keep a slow or hostile client from holding resources: request
//! headers must arrive within `HEADER_READ_TIMEOUT` and fit in
//! `MAX_HEADER_BYTES` (else hyper answers 431 and closes); XML bodies are
//! capped by s3s (`MAX_XML_BODY`), POST-object uploads by `post_max_size`
//! (they are buffered, after `crate::form::precheck` checked their fields,
//! within the gateway-wide `--form-buffer-total`),
//! PUT bodies by 5 GiB and by the write path's idle and stripe deadlines.
//! At most `--max-connections` connections are served at once (over it,
//! new ones wait in the accept backlog) and at most
//! `--max-requests-per-client` requests per client IP are in flight (over
//! it, `503 SlowDown`), and at most `--max-connections-per-client`
//! connections per client IP (more are closed unread): `crate::limits`. A connection whose client takes
//! no bytes of a response for `--send-timeout-s` is closed
//! (`limits::WriteDeadline`). Every response carries an `x-amz-request-id`, which error
//! bodies repeat as `<RequestId>`. A panic while serving a request becomes a
//! 500 `InternalError` for that request only.
//!
//! TLS (`GatewayConfig::tls`, `--tls-cert`/`--tls-key`): the listener
//! speaks HTTPS only (ALPN `http/1.1`), with a `sillok_tls::ReloadingCert`
//! that follows its files (checked every `TLS_RELOAD_CHECK`) and reloads on
//! SIGHUP. The handshake runs in the connection's task, after its permit
//! was taken, and must finish within `TLS_HANDSHAKE_TIMEOUT`: a client that
//! connects and never completes it holds a connection slot that long, no
//! longer; the header timeout starts after it. A plain HTTP request on the
//! TLS listener is answered `400` (use https) and closed (`tls_handshake`).
//! Without TLS the listener speaks plain HTTP.
//!
//! CORS (`crate::cors`): `OPTIONS` (a preflight) is answered here, before
//! s3s and without authentication; every other response to a request with an
//! `Origin` (errors included) gets the bucket's CORS headers on its way out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use tracing::Instrument;

use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use s3s::service::S3ServiceBuilder;
use sillok_catalog::follower::FollowOptions;
use sillok_catalog::{CatalogClient, ClientTimeouts};
use sillok_placement::ClusterFile;
use sillok_rpc::auth::Signer;
use sillok_storage_node::{NodeClient, Timeouts};

use crate::catalog::GatewayCatalog;
use crate::cluster::Cluster;
use crate::metrics::{Metrics, RequestCtx};
use crate::read::ReadSettings;
use crate::s3::SillokS3;
use crate::vhost::VirtualHosts;
use crate::write::WriteSettings;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// The ops listener (`/health`, `/ready`, `/metrics`), if any.
    pub ops_listen: Option<SocketAddr>,
    /// The cluster secret and the catalog replicas come from it.
    pub cluster: ClusterFile,
    /// Where the gateway keeps its last copy of the catalog (`catalog.redb`).
    pub state_dir: std::path::PathBuf,
    /// The catalog replicas to follow (default: the cluster file's).
    pub catalog_replicas: Vec<String>,
    /// How the catalog is followed.
    pub follow: FollowOptions,
    /// How long to wait at start for a first catalog when none is saved.
    pub catalog_wait: Duration,
    pub write: WriteSettings,
    pub read: ReadSettings,
    pub node_timeouts: Timeouts,
    /// How often every node's health route is probed.
    pub probe_interval: Duration,
    /// Writes are refused while this gateway's clock is further than this
    /// from the storage nodes'.
    pub max_clock_offset: Duration,
    /// See `Cluster::read_hedge`.
    pub read_hedge: Duration,
    /// Base domains for virtual-host-style addressing (`<bucket>.<domain>`).
    pub domains: Vec<String>,
    /// Multipart uploads older than this are aborted by the sweeper.
    pub upload_max_age: Duration,
    /// How often the sweeper looks for abandoned uploads.
    pub upload_sweep_interval: Duration,
    /// The largest browser-form (POST object) upload; these are buffered.
    pub post_max_size: u64,
    /// The lifecycle expirer's interval and day length.
    pub lifecycle: crate::lifecycle::LifecycleSettings,
    /// Connections and requests per client (`crate::limits`).
    pub limits: crate::limits::Limits,
    /// Serve HTTPS with this certificate and key (PEM files) instead of HTTP.
    pub tls: Option<TlsFiles>,
}

/// The S3 listener's certificate chain and private key files (PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// A TLS handshake must be done within this; a client that opens a socket
/// and sends no ClientHello does not hold a connection slot longer.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate files are checked for a change.
pub const TLS_RELOAD_CHECK: Duration = Duration::from_secs(2);

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Request line plus headers (S3 itself allows 8 KB of headers).
const MAX_HEADER_BYTES: usize = 64 << 10;
const MAX_HEADERS: usize = 200;
/// CompleteMultipartUpload with 10,000 parts, DeleteObjects with 1,000 long keys.
const MAX_XML_BODY: usize = 4 << 20;

type RespBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Binds the listener; returns the bound address and the future that serves
/// until `shutdown` resolves.
pub async fn bind(
    config: GatewayConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()> + Send)> {
    // The certificate is checked before anything else starts: a wrong
    // file is an error at once, not a listener that refuses every client.
    let tls = match &config.tls {
        None => None,
        Some(files) => {
            let cert = sillok_tls::ReloadingCert::load(&files.cert, &files.key).map_err(std::io::Error::other)?;
            let server = sillok_tls::server_config(cert.clone(), None).map_err(std::io::Error::other)?;
            Some((sillok_tls::tokio_rustls::TlsAcceptor::from(server), cert))
        }
    };
    let catalog = follow_catalog(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let client = NodeClient::new(&config.cluster.cluster_secret, config.node_timeouts);
    let cluster = Cluster::new(catalog.clone(), client, config.max_clock_offset, config.read_hedge);
    let metrics = Arc::new(Metrics::default());
    let connections = crate::limits::ConnectionLimit::new(config.limits.max_connections, metrics.limits.clone());
    let clients = crate::limits::ClientLimit::new(config.limits.max_requests_per_client, metrics.limits.clone());
    let client_connections =
        crate::limits::ClientLimit::connections(config.limits.max_connections_per_client, metrics.limits.clone());
    let forms = crate::limits::FormBuffer::new(config.limits.form_buffer_total, metrics.limits.clone());
    let post_max_size = config.post_max_size;
    let send_timeout = config.read.send_timeout;
    let s3 = SillokS3 {
        cluster: cluster.clone(),
        write: config.write,
        read: config.read,
        catalog: catalog.clone(),
        metrics: metrics.clone(),
        region: catalog.region.clone(),
    };
    let mut builder = S3ServiceBuilder::new(s3);
    builder.set_auth(crate::auth::CatalogKeys(catalog.clone()));
    builder.set_access(crate::auth::KeyPermissions(catalog.clone()));
    let hosts = Arc::new(crate::vhost::VirtualHosts::new(&config.domains).map_err(std::io::Error::other)?);
    builder.set_host((*hosts).clone());
    let mut s3_config = s3s::config::S3Config::default();
    s3_config.xml_max_body_size = MAX_XML_BODY;
    s3_config.post_object_max_file_size = config.post_max_size;
    // `form::precheck` has bounded the fields already; s3s's own parse also
    // buffers the start of the file (at most one frame of `FORM_FRAME`).
    s3_config.form_max_fields_size = crate::form::MAX_FORM_FIELDS + 2 * crate::body::FORM_FRAME;
    s3_config.form_max_field_size = crate::form::MAX_FORM_FIELDS;
    builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(s3_config))));
    let service = builder.build();
    let ops =
        Arc::new(GatewayOps { registry: metrics.registry(cluster.clone(), catalog.clone()), cluster: cluster.clone() });
    if let Some(ops_addr) = config.ops_listen {
        sillok_rpc::ops::serve(ops_addr, ops.clone()).await?;
    }

    let probe = tokio::spawn(cluster.clone().probe_forever(config.probe_interval));
    let reporter =
        tokio::spawn(catalog.clone().report_forever(cluster.clone(), addr.to_string(), Duration::from_secs(2)));
    let sweeper = tokio::spawn(crate::multipart::sweep_forever(
        cluster.clone(),
        config.upload_max_age,
        config.upload_sweep_interval,
    ));
    let expirer = (!config.lifecycle.interval.is_zero()).then(|| {
        let expirer = crate::lifecycle::Expirer {
            cluster: cluster.clone(),
            catalog: catalog.clone(),
            metrics: metrics.clone(),
            day_ms: config.lifecycle.day.as_millis().clamp(1, i64::MAX as u128) as i64,
        };
        tokio::spawn(expirer.run_forever(config.lifecycle.interval))
    });
    // Reloads as long as the listener runs (it holds the other reference).
    let acceptor = tls.map(|(acceptor, cert)| {
        cert.watch(TLS_RELOAD_CHECK);
        acceptor
    });
    let fut = async move {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            // A permit first: over the limit, connections wait in the backlog.
            let mut slot = tokio::select! {
                s = connections.admit() => s,
                _ = &mut shutdown => break,
            };
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => { tracing::warn!(error = %e, "accept failed"); tokio::time::sleep(Duration::from_millis(50)).await; continue; }
                },
                _ = &mut shutdown => break,
            };
            slot.accepted();
            // Over its share of connections, a client's new one is closed unread.
            let Some(client_connection) = client_connections.enter(peer.ip()) else {
                tracing::debug!(client = %peer.ip(), "client at --max-connections-per-client; connection closed");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let service = service.clone();
            let figures = metrics.limits.clone();
            let metrics = metrics.clone();
            let (ops, catalog, hosts, clients, forms) =
                (ops.clone(), catalog.clone(), hosts.clone(), clients.clone(), forms.clone());
            let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                let service = service.clone();
                let metrics = metrics.clone();
                let state = State {
                    ops: ops.clone(),
                    catalog: catalog.clone(),
                    hosts: hosts.clone(),
                    clients: clients.clone(),
                    forms: forms.clone(),
                    peer: peer.ip(),
                    post_max_size,
                };
                async move { Ok::<_, std::convert::Infallible>(route(&service, &metrics, &state, req).await) }
            });
            let watcher = graceful.watcher();
            let tls = acceptor.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve_connection(stream, svc, watcher, send_timeout).await,
                    Some(tls) => match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls_handshake(&tls, stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, svc, watcher, send_timeout).await,
                        Ok(Err(e)) => {
                            figures.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            figures.tls_handshake_timeouts.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, timeout_s = TLS_HANDSHAKE_TIMEOUT.as_secs(), "TLS handshake not done in time: connection closed");
                        }
                    },
                }
                drop((slot, client_connection));
            });
        }
        probe.abort();
        reporter.abort();
        sweeper.abort();
        if let Some(e) = expirer {
            e.abort();
        }
        tokio::select! {
            _ = graceful.shutdown() => {}
            _ = tokio::time::sleep(Duration::from_secs(10)) => tracing::warn!("connections still open after 10 s; closing"),
        }
    };
    Ok((addr, fut))
}

/// The TLS handshake of one accepted connection. A connection whose first
/// byte is not a TLS handshake record fails; if it looks like a plain HTTP
/// request (a letter: `GET `, `PUT `...), it is first answered `400` with
/// an S3 error saying to use https (as far as the client reads it: the
/// connection is closed after it).
async fn tls_handshake(
    tls: &sillok_tls::tokio_rustls::TlsAcceptor,
    mut stream: tokio::net::TcpStream,
) -> std::io::Result<sillok_tls::tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// A TLS record of type handshake (RFC 8446 section 5.1).
    const HANDSHAKE_RECORD: u8 = 0x16;
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before a ClientHello"));
    }
    if first[0] != HANDSHAKE_RECORD {
        if first[0].is_ascii_alphabetic() {
            // The request's start, so that closing does not reset the
            // connection under the answer; the rest is not read.
            let mut head = vec![0u8; 16 << 10];
            let _ = stream.read(&mut head).await;
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>BadRequest</Code><Message>This S3 endpoint speaks HTTPS only: use an https:// URL.</Message></Error>";
            let resp = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(resp.as_bytes()).await;
            let _ = stream.shutdown().await;
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "plain HTTP on the TLS listener"));
        }
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not a TLS handshake"));
    }
    tls.accept(stream).await
}

/// Serves HTTP on one accepted connection (plain TCP or TLS) until it
/// ends, with the listener's limits on headers.
async fn serve_connection<S, I>(io: I, svc: S, graceful: hyper_util::server::graceful::Watcher, send_timeout: Duration)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<http::Request<Incoming>, Response = http::Response<RespBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    server
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    // A response the client stops taking ends the connection (`limits::WriteDeadline`).
    let io = crate::limits::WriteDeadline::new(io, send_timeout);
    let conn = server.serve_connection(TokioIo::new(io), svc).into_owned();
    if let Err(e) = graceful.watch(conn).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    config: GatewayConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (addr, fut) = bind(config, shutdown).await?;
    tracing::info!(%addr, "S3 gateway listening");
    fut.await;
    Ok(())
}

/// Follows the catalog from the state directory and the replicas; waits for
/// a first view when none was saved.
async fn follow_catalog(config: &GatewayConfig) -> std::io::Result<Arc<GatewayCatalog>> {
    let replicas = if config.catalog_replicas.is_empty() {
        config.cluster.catalog_replicas.iter().map(|r| r.addr.clone()).collect()
    } else {
        config.catalog_replicas.clone()
    };
    let timeouts =
        ClientTimeouts { attempt: Duration::from_millis(2000), total: Duration::from_secs(8), ..Default::default() };
    let client = CatalogClient::new(replicas, Signer::new(&config.cluster.cluster_secret), timeouts)
        .map_err(|e| std::io::Error::other(format!("the gateway cannot follow the catalog: {e}")))?;
    let client = Arc::new(client);
    std::fs::create_dir_all(&config.state_dir)?;
    // Its copy of the catalog holds the keys' secrets: owner only.
    std::fs::set_permissions(&config.state_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    GatewayCatalog::start(client, config.state_dir.clone(), config.follow, config.catalog_wait)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// What the ops listener (and `/_sillok/metrics`) serve.
struct GatewayOps {
    registry: prometheus_client::registry::Registry,
    cluster: Arc<Cluster>,
}

impl sillok_rpc::ops::Ops for GatewayOps {
    fn ready(&self) -> Result<(), String> {
        readiness(&self.cluster)
    }
    fn registry(&self) -> &prometheus_client::registry::Registry {
        &self.registry
    }
}

/// Whether this gateway can serve reads and writes (`/ready`). It has a
/// catalog copy once it runs (`bind` waits for one). A storage node is
/// *reachable* when the map has it `up` or `draining` and this gateway does
/// not suspect it (no failed call or missed health probe since its last
/// answer). Ready: at least k nodes are reachable (an object can be read,
/// and written with substitutes), and the sites with a reachable node are a
/// strict majority of the map's sites (a manifest quorum can be reached).
pub fn readiness(cluster: &Cluster) -> Result<(), String> {
    let map = cluster.map();
    let k = usize::from(map.profile.k);
    let reachable: Vec<&sillok_placement::Node> =
        map.topology.nodes.iter().filter(|n| !cluster.is_suspect(n.id)).collect();
    if reachable.len() < k {
        return Err(format!(
            "{} of {} storage nodes reachable (up in map epoch {} and not suspected); {k} are needed",
            reachable.len(),
            map.topology.nodes.len(),
            map.epoch
        ));
    }
    let sites = map.topology.sites.len();
    let reached = map.topology.sites.iter().filter(|s| reachable.iter().any(|n| n.site == s.id)).count();
    if reached * 2 <= sites {
        return Err(format!(
            "storage nodes reachable in {reached} of {sites} sites; a majority of the sites is needed"
        ));
    }
    Ok(())
}

/// What serving one request needs besides s3s and the metrics.
struct State {
    ops: Arc<GatewayOps>,
    catalog: Arc<GatewayCatalog>,
    hosts: Arc<VirtualHosts>,
    clients: Arc<crate::limits::ClientLimit>,
    forms: Arc<crate::limits::FormBuffer>,
    /// The client's address (the connection's peer).
    peer: std::net::IpAddr,
    post_max_size: u64,
}

async fn route(
    service: &s3s::service::S3Service,
    metrics: &Metrics,
    state: &State,
    req: http::Request<Incoming>,
) -> http::Response<RespBody> {
    let State { ops, catalog, hosts, .. } = state;
    match (req.method(), req.uri().path()) {
        (&http::Method::GET, "/_sillok/health") => {
            return http::Response::builder()
                .header("content-type", "text/plain")
                .body(Full::new(bytes::Bytes::from_static(b"ok\n")).map_err(|e| match e {}).boxed_unsync())
                .expect("static response");
        }
        (&http::Method::GET, "/_sillok/metrics") => {
            let resp = sillok_rpc::ops::metrics_response(sillok_rpc::ops::Ops::registry(&**ops));
            return resp
                .map(|b| b.map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) }).boxed_unsync());
        }
        _ => {}
    }
    let request_id = next_request_id();
    // Over its client's limit, a request is answered before anything else.
    let Some(client_slot) = state.clients.enter(state.peer) else {
        tracing::debug!(peer = %state.peer, request_id, "client over its request limit: SlowDown");
        let resp = error_xml(503, "SlowDown", "Please reduce your request rate.", &request_id);
        metrics.finish("Unknown", Duration::ZERO, Some("SlowDown".into()));
        return close_if(body_may_be_withheld(&req), with_request_id(resp, &request_id));
    };
    // Every log line of the request carries its id, method and operation.
    let span = tracing::info_span!("s3", request_id = %request_id, method = %req.method(), op = tracing::field::Empty);
    let ctx = Arc::new(RequestCtx::default());
    let _ = ctx.span.set(span.clone());
    let started = std::time::Instant::now();
    let serve = async {
        if crate::cors::is_preflight(&req) {
            let answer = crate::cors::preflight(&req, hosts, catalog).await;
            metrics.count("PreflightCors", answer.is_ok());
            match answer {
                Ok(headers) => {
                    let mut resp =
                        http::Response::new(http_body_util::Empty::new().map_err(|e| match e {}).boxed_unsync());
                    *resp.headers_mut() = headers;
                    resp
                }
                Err(e) => error_xml(
                    e.status_code().map_or(400, |s| s.as_u16()),
                    e.code().as_str(),
                    e.message().unwrap_or(""),
                    &request_id,
                ),
            }
        } else {
            let actual = crate::cors::Actual::of(&req, hosts);
            let mut resp = serve_s3(service, req, &request_id, state).await;
            if let Some(actual) = actual {
                actual.decorate(catalog, resp.headers_mut());
            }
            resp
        }
    };
    let resp = crate::metrics::REQUEST.scope(ctx.clone(), serve.instrument(span.clone())).await;
    let status = resp.status();
    let took = started.elapsed();
    tracing::debug!(parent: &span, status = status.as_u16(), ms = took.as_secs_f64() * 1000.0, "S3 request answered");
    let failed = (status.is_client_error() || status.is_server_error()).then(|| {
        ctx.code.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_else(|| format!("Http{}", status.as_u16()))
    });
    // A request refused before any handler ran (authentication, routing) has no operation.
    metrics.finish(ctx.op.get().copied().unwrap_or("Unknown"), took, failed);
    // The client's slot is held until the response body is sent.
    with_request_id(resp, &request_id).map(|b| crate::limits::HeldBody::new(b, client_slot).boxed_unsync())
}

fn with_request_id(mut resp: http::Response<RespBody>, request_id: &str) -> http::Response<RespBody> {
    if let Ok(v) = http::HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-amz-request-id", v.clone());
        resp.headers_mut().insert("x-amz-id-2", v);
    }
    resp
}

/// Everything but the gateway's own routes and CORS preflights: through s3s.
async fn serve_s3(
    service: &s3s::service::S3Service,
    req: http::Request<Incoming>,
    request_id: &str,
    state: &State,
) -> http::Response<RespBody> {
    let request_id = request_id.to_string();
    let mut req = req;
    join_repeated_content_encoding(req.headers_mut());
    let may_withhold = body_may_be_withheld(&req);
    let is_form = crate::body::is_form_upload(&req);
    let is_head = req.method() == http::Method::HEAD;
    if let Some(why) = malformed_date(&req) {
        return close_if(may_withhold, error_xml(400, "AuthorizationHeaderMalformed", why, &request_id));
    }
    if chunked_without_length(&req) {
        let why = "A header you provided implies functionality that is not implemented: Transfer-Encoding (send a Content-Length, or an aws-chunked body with x-amz-decoded-content-length)";
        return close_if(true, error_xml(501, "NotImplemented", why, &request_id));
    }
    let read_first = small_body_to_read_first(&req);
    // A form's room in `--form-buffer-total`, held until its handler is done.
    let mut form_reservation = None;
    // A body read here went in full (hyper sent `100 Continue` for it).
    let may_withhold = may_withhold && read_first.is_none();
    let req = match read_first {
        // The whole (small) body is read before s3s sees the request: hyper
        // then sends `100 Continue` and the connection stays in step.
        Some(limit) => {
            let (parts, body) = req.into_parts();
            match http_body_util::Limited::new(body, limit).collect().await {
                Ok(b) => http::Request::from_parts(parts, s3s::Body::from(b.to_bytes())),
                Err(_) => return error_xml(400, "IncompleteBody", "The request body could not be read.", &request_id),
            }
        }
        None if is_form => {
            // The fields are checked before anything of the file is read.
            let bucket = url_bucket(&req, &state.hosts);
            match crate::form::precheck(req, bucket.as_deref(), state.post_max_size).await {
                Ok(req) => {
                    // Room for the file in the gateway-wide form budget, or SlowDown.
                    let declared = req
                        .headers()
                        .get(http::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                    let file_bytes = declared.unwrap_or(state.post_max_size).min(state.post_max_size);
                    let Some(reservation) = state.forms.reserve(file_bytes) else {
                        tracing::info!(file_bytes, "form upload refused: --form-buffer-total has no room for its file");
                        let why = "Too many form uploads are being buffered. Please reduce your request rate.";
                        return close_if(true, error_xml(503, "SlowDown", why, &request_id));
                    };
                    form_reservation = Some(reservation);
                    req.map(|b| s3s::Body::http_body_unsync(crate::body::SmallFrames::new(b, crate::body::FORM_FRAME)))
                }
                Err(e) => {
                    let (status, code) = e.s3();
                    tracing::info!(error = %e, code, "form upload refused before its file");
                    // The rest of the body is not read: the connection closes.
                    return close_if(true, error_xml(status, code, &e.to_string(), &request_id));
                }
            }
        }
        None => req.map(s3s::Body::from),
    };
    let served = std::panic::AssertUnwindSafe(service.call(req)).catch_unwind().await;
    drop(form_reservation);
    let resp = match served {
        Ok(Ok(mut resp)) => {
            partial_head(is_head, &mut resp);
            let resp = resp.map(|b| b.map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e }).boxed_unsync());
            if resp.status().is_client_error() || resp.status().is_server_error() {
                with_request_id_in_body(resp, &request_id).await
            } else {
                resp
            }
        }
        Ok(Err(e)) => {
            tracing::error!(error = ?e, request_id, "S3 service error");
            error_xml(500, "InternalError", "We encountered an internal error. Please try again.", &request_id)
        }
        Err(_) => {
            tracing::error!(request_id, "a request handler panicked");
            error_xml(500, "InternalError", "We encountered an internal error. Please try again.", &request_id)
        }
    };
    // A success means the handler read the body (so `100 Continue` went out
    // and the body came); an error may come before it was asked for.
    // A form refused by s3s (its signature, its policy) has an unread file:
    // closing is cheaper than reading it to keep the connection.
    close_if((may_withhold || is_form) && !resp.status().is_success(), resp)
}

/// The bucket a request names: its virtual host's, or its path's first
/// segment.
fn url_bucket<B>(req: &http::Request<B>, hosts: &VirtualHosts) -> Option<String> {
    let host = req.headers().get(http::header::HOST).and_then(|v| v.to_str().ok()).or(req.uri().host());
    if let Some(b) = host.and_then(|h| hosts.bucket_of(h)) {
        return Some(b.to_string());
    }
    let first = req.uri().path().trim_start_matches('/').split('/').next().unwrap_or("");
    let first = percent_encoding::percent_decode_str(first).decode_utf8().ok()?;
    (!first.is_empty()).then(|| first.into_owned())
}

/// A PUT whose body is chunked (`Transfer-Encoding`) but not aws-chunked has
/// no length anywhere (no Content-Length, no `x-amz-decoded-content-length`).
/// S3 answers it 501 `NotImplemented` naming Transfer-Encoding (seen by
/// knox, botocore and aws-sdk-js-v3 users); s3s would answer 411. Accepting
/// it would need the length before the first byte: the write path sizes
/// every shard up front. Answered before the body is read; the connection
/// is closed after it.
fn chunked_without_length<B>(req: &http::Request<B>) -> bool {
    let h = req.headers();
    req.method() == http::Method::PUT
        && h.contains_key(http::header::TRANSFER_ENCODING)
        && !h.contains_key(http::header::CONTENT_LENGTH)
        && !h.contains_key("x-amz-decoded-content-length")
}

/// s3s 0.14.1 answers every successful HEAD 200 (and ignores a status set
/// on the operation's response); a HEAD of a part or a range (the handler
/// gave it a Content-Range) is a 206, as S3 answers it and as the GET is.
fn partial_head<B>(is_head: bool, resp: &mut http::Response<B>) {
    if is_head && resp.status() == http::StatusCode::OK && resp.headers().contains_key(http::header::CONTENT_RANGE) {
        *resp.status_mut() = http::StatusCode::PARTIAL_CONTENT;
    }
}

/// A Content-Encoding sent as several header lines is one list (RFC 9110
/// §5.3): aws-sdk-rust sends the object's `gzip` and the body's
/// `aws-chunked` as two lines when it streams a body with a checksum
/// trailer, and s3s 0.14.1 refuses a repeated header (400 InvalidRequest
/// "duplicate header"). The lines are joined in order with `,`, the form in
/// which SigV4 signs repeated headers, so the signature still holds.
fn join_repeated_content_encoding(h: &mut http::HeaderMap) {
    let values: Vec<&[u8]> =
        h.get_all(http::header::CONTENT_ENCODING).iter().map(|v| v.as_bytes().trim_ascii()).collect();
    if values.len() < 2 {
        return;
    }
    if let Ok(v) = http::HeaderValue::from_bytes(&values.join(&b","[..])) {
        h.insert(http::header::CONTENT_ENCODING, v);
    }
}

/// Dates s3s parses digit by digit (x-amz-date, X-Amz-Date, the credential
/// scope's day) must be digits where digits go: s3s 0.14.1 overflows on a
/// byte below '0' there (a panic in debug builds; found by fuzzing, see
/// fuzz/regressions/s3_request). Checked before s3s sees the request.
fn malformed_date<B>(req: &http::Request<B>) -> Option<&'static str> {
    fn amz_date_ok(v: &[u8]) -> bool {
        v.len() == 16 && v[8] == b'T' && v[15] == b'Z' && v[..8].iter().chain(&v[9..15]).all(u8::is_ascii_digit)
    }
    if let Some(v) = req.headers().get("x-amz-date")
        && !amz_date_ok(v.as_bytes())
    {
        return Some("x-amz-date must look like 20260101T000000Z");
    }
    if let Some(q) = req.uri().query() {
        for pair in q.split('&') {
            if let Some(v) = pair.strip_prefix("X-Amz-Date=")
                && !amz_date_ok(v.as_bytes())
            {
                return Some("X-Amz-Date must look like 20260101T000000Z");
            }
            if let Some(v) = pair.strip_prefix("X-Amz-Credential=") {
                // AKID%2FYYYYMMDD%2F...: the day follows the first (encoded) slash.
                let day = v.split("%2F").nth(1).or_else(|| v.split('/').nth(1)).unwrap_or("");
                if !(day.len() == 8 && day.bytes().all(|b| b.is_ascii_digit())) {
                    return Some("the credential scope must start with a day such as 20260101");
                }
            }
        }
    }
    if let Some(auth) = req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some(cred) = auth.split("Credential=").nth(1)
    {
        let day = cred.split('/').nth(1).unwrap_or("");
        let day = &day[..day.len().min(8)];
        if !(day.len() == 8 && day.bytes().all(|b| b.is_ascii_digit())) {
            return Some("the credential scope must start with a day such as 20260101");
        }
    }
    None
}

/// An HTTP/1.1 request that waits for `100 Continue` before sending a body.
/// Answered with a final status before anything read the body, the client
/// does not send it (botocore: "Received a non 100 Continue response from
/// the server, NOT sending request body"; RFC 9110 section 10.1.1). hyper
/// cannot know that: when the unread body is dropped it takes the next
/// Content-Length bytes on the connection as that body (hyper's
/// `poll_drain_or_close_read`, hyperium/hyper#3137), i.e. the start of the
/// client's next request: after a 412 to a 2-byte If-Match PUT, `GET` loses
/// `GE` and is served as method `T` (403 SignatureDoesNotMatch); a 6-byte
/// body cuts the request line (400). A race: hyper closes the connection
/// instead when it notices the dropped body before the next request arrives.
fn body_may_be_withheld<B>(req: &http::Request<B>) -> bool {
    let h = req.headers();
    let expects = h.get(http::header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let has_body = h.contains_key(http::header::TRANSFER_ENCODING)
        || h.get(http::header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0");
    req.version() == http::Version::HTTP_11 && expects && has_body
}

/// `Connection: close` on `resp` if `close`: hyper closes the connection
/// after the response and the client opens a new one (see
/// `body_may_be_withheld`).
fn close_if(close: bool, mut resp: http::Response<RespBody>) -> http::Response<RespBody> {
    if close {
        resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    resp
}

/// A request that waits for `100 Continue` but whose payload is empty (an
/// empty object, possibly aws-chunked with only a trailer) is never read by
/// the handler, so hyper would send no `100 Continue` while the client may
/// still send the (tiny) body: the next request on the connection is then
/// misread (seen with botocore: a 30 s stall). Such bodies are read first.
fn small_body_to_read_first<B>(req: &http::Request<B>) -> Option<usize> {
    const LIMIT: usize = 64 << 10;
    let h = req.headers();
    let expects = h.get(http::header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let len: Option<usize> = h.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    let decoded_empty = h.get("x-amz-decoded-content-length").is_some_and(|v| v.as_bytes() == b"0");
    match len {
        Some(n) if expects && n <= LIMIT && (n == 0 || decoded_empty) => Some(n),
        _ => None,
    }
}

/// Unique per gateway process: start time and a counter.
fn next_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| rand::random::<u64>() & 0xffff_ffff);
    format!("{start:08X}{:08X}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn error_xml(status: u16, code: &str, message: &str, request_id: &str) -> http::Response<RespBody> {
    crate::metrics::note_error_code(code);
    let message = message.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message><RequestId>{request_id}</RequestId></Error>"
    );
    http::Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(Full::new(bytes::Bytes::from(body)).map_err(|e| match e {}).boxed_unsync())
        .expect("static response")
}

/// Adds `<RequestId>` to an S3 error body (s3s writes the body, the id is ours).
/// Error bodies are small; anything unexpected is passed through unchanged.
async fn with_request_id_in_body(resp: http::Response<RespBody>, request_id: &str) -> http::Response<RespBody> {
    let is_xml = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("xml"));
    let small = http_body::Body::size_hint(resp.body()).upper().is_some_and(|n| n <= 64 << 10);
    if !is_xml || !small {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(collected) = body.collect().await else {
        return error_xml(parts.status.as_u16(), "InternalError", "error body lost", request_id);
    };
    let text = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
    if let Some(code) = text.split("<Code>").nth(1).and_then(|t| t.split("</Code>").next()) {
        crate::metrics::note_error_code(code);
    }
    // s3s answers a form field that breaks the POST policy with 400
    // InvalidPolicyDocument; S3 answers 403 AccessDenied.
    let text = if parts.status == http::StatusCode::BAD_REQUEST
        && text.contains("<Code>InvalidPolicyDocument</Code>")
        && text.contains("Policy condition")
    {
        parts.status = http::StatusCode::FORBIDDEN;
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>Invalid according to Policy: Policy Condition failed</Message></Error>".to_string()
    } else {
        text
    };
    let text = match text.rfind("</Error>") {
        Some(i) if !text.contains("<RequestId>") => {
            format!("{}<RequestId>{request_id}</RequestId>{}", &text[..i], &text[i..])
        }
        _ => text,
    };
    parts.headers.insert("content-length", http::HeaderValue::from(text.len()));
    http::Response::from_parts(parts, Full::new(bytes::Bytes::from(text)).map_err(|e| match e {}).boxed_unsync())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_content_encoding_lines_are_one_list() {
        let mut h = http::HeaderMap::new();
        h.append("content-encoding", "gzip".parse().unwrap());
        h.append("content-encoding", " aws-chunked".parse().unwrap());
        join_repeated_content_encoding(&mut h);
        let all: Vec<_> = h.get_all("content-encoding").iter().collect();
        assert_eq!(all, ["gzip,aws-chunked"]);
        let mut one = http::HeaderMap::new();
        one.insert("content-encoding", "gzip, br".parse().unwrap());
        join_repeated_content_encoding(&mut one);
        assert_eq!(one.get("content-encoding").unwrap(), "gzip, br");
    }

    #[test]
    fn only_a_chunked_put_without_any_length_is_refused() {
        let req = |method: &str, headers: &[(&str, &str)]| {
            let mut b = http::Request::builder().method(method).uri("/b/k");
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.body(()).unwrap()
        };
        assert!(chunked_without_length(&req("PUT", &[("transfer-encoding", "chunked")])));
        let aws_chunked = [("transfer-encoding", "chunked"), ("x-amz-decoded-content-length", "5")];
        assert!(!chunked_without_length(&req("PUT", &aws_chunked)));
        assert!(!chunked_without_length(&req("PUT", &[("content-length", "5")])));
        assert!(!chunked_without_length(&req("POST", &[("transfer-encoding", "chunked")])));
    }

    #[test]
    fn a_head_with_a_content_range_is_partial() {
        let ranged = || http::Response::builder().header("content-range", "bytes 0-9/20").body(()).unwrap();
        let mut head = ranged();
        partial_head(true, &mut head);
        assert_eq!(head.status(), http::StatusCode::PARTIAL_CONTENT);
        let mut get = ranged();
        partial_head(false, &mut get);
        assert_eq!(get.status(), http::StatusCode::OK);
        let mut whole = http::Response::new(());
        partial_head(true, &mut whole);
        assert_eq!(whole.status(), http::StatusCode::OK);
    }
}
