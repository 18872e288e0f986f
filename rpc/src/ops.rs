//! The ops listener every process can open (`--ops-listen ADDR`):
//! unauthenticated, read-only, for load balancers and Prometheus.
//!
//! Owns: the listener ([`serve`]) and its three routes, the shape of their
//! answers, and the helpers with which a process writes figures it reads
//! from its state at scrape time into a `prometheus-client` page
//! ([`gauge`], [`counter`], [`gauge_family`], [`counter_family`]).
//!
//! - `GET /health`: 200 `ok` while the process runs;
//! - `GET /ready`: 200 `ready` when [`Ops::ready`] says so, else 503 with its
//!   one-line reason;
//! - `GET /metrics`: [`Ops::registry`] in the OpenMetrics text format
//!   (which Prometheus scrapes as it does its own text format).
//!
//! What it may not do: know any process's state. Each process supplies its
//! own readiness check and registry; nothing here reads names, keys or data.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{StatusCode, header};
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The content type of a `/metrics` page.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What a process tells its ops listener.
pub trait Ops: Send + Sync + 'static {
    /// `Ok` when the process can do its work; otherwise why not, in one line.
    fn ready(&self) -> Result<(), String>;
    /// The process's metrics.
    fn registry(&self) -> &Registry;
}

/// `registry` as a metrics page (OpenMetrics text, ending in `# EOF`).
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut page = String::new();
    prometheus_client::encoding::text::encode(&mut page, registry)?;
    Ok(page)
}

/// A metrics answer for `registry` (500 if the page cannot be written).
pub fn metrics_response(registry: &Registry) -> Response {
    match render(registry) {
        Ok(page) => (StatusCode::OK, [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], page).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "the metrics page could not be written\n").into_response(),
    }
}

/// Binds `addr` and serves the ops routes from a spawned task until the
/// runtime stops. Returns the bound address.
pub async fn serve(addr: SocketAddr, ops: Arc<dyn Ops>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(ops);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the ops listener stopped");
        }
    });
    tracing::info!(addr = %bound, "ops listener (/health, /ready, /metrics) listening");
    Ok(bound)
}

async fn ready(State(ops): State<Arc<dyn Ops>>) -> Response {
    match ops.ready() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => {
            let line = why.replace(['\n', '\r'], " ");
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {line}\n")).into_response()
        }
    }
}

async fn metrics(State(ops): State<Arc<dyn Ops>>) -> Response {
    metrics_response(ops.registry())
}

/// One gauge without labels.
pub fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: impl EncodeGaugeValue + Clone,
) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    let m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

/// One counter without labels; `name` without `_total` (the page adds it).
pub fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    let m = enc.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m)
}

/// One gauge with one label, a sample per `(label value, value)`.
pub fn gauge_family<V: EncodeGaugeValue + Clone>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    samples: impl IntoIterator<Item = (String, V)>,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Gauge)?;
    for (l, v) in samples {
        let set = [(label, l)];
        ConstGauge::new(v).encode(m.encode_family(&set)?)?;
    }
    Ok(())
}

/// One counter with one label, a sample per `(label value, value)`; `name`
/// without `_total`.
pub fn counter_family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    samples: impl IntoIterator<Item = (String, u64)>,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Counter)?;
    for (l, v) in samples {
        let set = [(label, l)];
        ConstCounter::new(v).encode(m.encode_family(&set)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Figures;
    impl prometheus_client::collector::Collector for Figures {
        fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
            gauge(&mut enc, "x_epoch", "An epoch.", 7u64)?;
            counter(&mut enc, "x_runs", "Runs.", 3)?;
            gauge_family(&mut enc, "x_pgs", "PGs.", "state", [("clean".to_string(), 2i64)])
        }
    }

    #[test]
    fn figures_render_as_openmetrics() {
        let mut r = Registry::default();
        r.register_collector(Box::new(Figures));
        let page = render(&r).unwrap();
        assert!(page.contains("# TYPE x_epoch gauge\nx_epoch 7\n"), "{page}");
        assert!(page.contains("x_runs_total 3\n"), "{page}");
        assert!(page.contains("x_pgs{state=\"clean\"} 2\n"), "{page}");
        assert!(page.ends_with("# EOF\n"));
    }
}
