//! The gateway's HTTP listener: S3 (through s3s) on every path except
//! `/_sillok/health` and `/_sillok/metrics` (not valid bucket names, so they
//! cannot shadow a bucket). TCP_NODELAY on every accepted socket; a deadline
//! for receiving request headers; graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use s3s::service::S3ServiceBuilder;
use sillok_placement::ClusterFile;
use sillok_storage_node::{NodeClient, Timeouts};

use crate::buckets::BucketCache;
use crate::cluster::Cluster;
use crate::metrics::Metrics;
use crate::read::ReadSettings;
use crate::s3::SillokS3;
use crate::write::WriteSettings;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    pub cluster: ClusterFile,
    pub write: WriteSettings,
    pub read: ReadSettings,
    pub node_timeouts: Timeouts,
    /// How often every node's health route is probed.
    pub probe_interval: Duration,
}

type RespBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Binds the listener; returns the bound address and the future that serves
/// until `shutdown` resolves.
pub async fn bind(
    config: GatewayConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()> + Send)> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let client = NodeClient::new(&config.cluster.cluster_secret, config.node_timeouts);
    let cluster = Cluster::new(config.cluster.map.clone(), client);
    let metrics = Arc::new(Metrics::default());
    let s3 = SillokS3 {
        cluster: cluster.clone(),
        write: config.write,
        read: config.read,
        buckets: BucketCache::default(),
        metrics: metrics.clone(),
        region: config.cluster.region.clone(),
    };
    let auth = crate::auth::AccessKeys::new(&config.cluster.access_keys);
    let mut builder = S3ServiceBuilder::new(s3);
    builder.set_auth(auth);
    let service = builder.build();

    let probe = tokio::spawn(cluster.clone().probe_forever(config.probe_interval));
    let fut = async move {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let (stream, _peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => { tracing::warn!(error = %e, "accept failed"); tokio::time::sleep(Duration::from_millis(50)).await; continue; }
                },
                _ = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let service = service.clone();
            let metrics = metrics.clone();
            let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                let service = service.clone();
                let metrics = metrics.clone();
                async move { Ok::<_, std::convert::Infallible>(route(&service, &metrics, req).await) }
            });
            let mut server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            server.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30)).keep_alive(true);
            let conn = server.serve_connection(TokioIo::new(stream), svc).into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        }
        probe.abort();
        tokio::select! {
            _ = graceful.shutdown() => {}
            _ = tokio::time::sleep(Duration::from_secs(10)) => tracing::warn!("connections still open after 10 s; closing"),
        }
    };
    Ok((addr, fut))
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

async fn route(
    service: &s3s::service::S3Service,
    metrics: &Metrics,
    req: http::Request<Incoming>,
) -> http::Response<RespBody> {
    let text = |status: u16, body: String| {
        http::Response::builder()
            .status(status)
            .header("content-type", "text/plain; version=0.0.4")
            .body(Full::new(bytes::Bytes::from(body)).map_err(|e| match e {}).boxed_unsync())
            .expect("static response")
    };
    match (req.method(), req.uri().path()) {
        (&http::Method::GET, "/_sillok/health") => return text(200, "ok\n".into()),
        (&http::Method::GET, "/_sillok/metrics") => return text(200, metrics.render()),
        _ => {}
    }
    match service.call(req.map(s3s::Body::from)).await {
        Ok(resp) => {
            resp.map(|b| b.map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() }).boxed_unsync())
        }
        Err(e) => {
            tracing::error!(error = ?e, "S3 service error");
            text(500, "internal error\n".into())
        }
    }
}
