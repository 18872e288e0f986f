//! Prometheus metrics of the gateway (`prometheus-client`): requests by
//! operation and outcome, their latency, errors by S3 error code, bytes in
//! and out, and, read from the gateway's state at every scrape, the map
//! epoch, the catalog index, the clock offset, degraded reads, node
//! deadlines, the lifecycle expirer's work and the cluster's repair figures.
//! Served at `/metrics` on the ops listener (and at `/_sillok/metrics`).
//!
//! Labels are bounded: an S3 operation name, an outcome, an S3 error code
//! (a code of the S3 API, or `Other`). No bucket, key or client appears.
//!
//! Each request runs in a task-local [`RequestCtx`] (`server::route`), where
//! the handler notes its operation and error code for the request's span
//! and its latency sample.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sillok_rpc::ops::{counter, counter_family, gauge};

use crate::catalog::GatewayCatalog;
use crate::cluster::Cluster;

type OpLabels = [(&'static str, &'static str); 1];
type OpOutcomeLabels = [(&'static str, &'static str); 2];
type CodeLabels = [(&'static str, String); 1];

/// Latency buckets (seconds): 1 ms to about 33 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 16))
}

pub struct Metrics {
    requests: Family<OpOutcomeLabels, Counter>,
    duration: Family<OpLabels, Histogram, fn() -> Histogram>,
    errors: Family<CodeLabels, Counter>,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub lifecycle: crate::lifecycle::LifecycleMetrics,
    /// Connections and requests per client (`crate::limits`).
    pub limits: Arc<crate::limits::LimitFigures>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            errors: Family::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            lifecycle: Default::default(),
            limits: Default::default(),
        }
    }
}

/// What the handler of one S3 request tells the code around it.
#[derive(Default)]
pub struct RequestCtx {
    pub op: OnceLock<&'static str>,
    pub code: Mutex<Option<String>>,
    /// The request's span (its `op` field is filled in when known).
    pub span: OnceLock<tracing::Span>,
}

tokio::task_local! {
    pub static REQUEST: Arc<RequestCtx>;
}

/// Notes the S3 error code of the request being served (the first noted wins).
pub fn note_error_code(code: &str) {
    let _ = REQUEST.try_with(|ctx| {
        let mut c = ctx.code.lock().unwrap_or_else(|e| e.into_inner());
        if c.is_none() {
            *c = Some(bounded_code(code));
        }
    });
}

/// An S3 error code as a label value: the code if it looks like one
/// (letters and digits, at most 64), else `Other`.
fn bounded_code(code: &str) -> String {
    if !code.is_empty() && code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        code.to_string()
    } else {
        "Other".to_string()
    }
}

impl Metrics {
    /// Counts an operation's outcome and notes its name (and error code) for
    /// the request being served.
    pub fn count(&self, op: &'static str, ok: bool) {
        self.requests.get_or_create(&[("op", op), ("outcome", if ok { "ok" } else { "error" })]).inc();
        let _ = REQUEST.try_with(|ctx| {
            let _ = ctx.op.set(op);
            if let Some(span) = ctx.span.get() {
                span.record("op", op);
            }
        });
    }

    /// Counts an operation's outcome, with the S3 error code of a failure.
    pub fn count_result<T>(&self, op: &'static str, r: &Result<T, s3s::S3Error>) {
        self.count(op, r.is_ok());
        if let Err(e) = r {
            note_error_code(e.code().as_str());
        }
    }

    /// A finished request: its latency under its operation, and its error
    /// code when it failed (`status` 4xx or 5xx).
    pub fn finish(&self, op: &'static str, took: Duration, failed_with: Option<String>) {
        self.duration.get_or_create(&[("op", op)]).observe(took.as_secs_f64());
        if let Some(code) = failed_with {
            self.errors.get_or_create(&[("code", bounded_code(&code))]).inc();
        }
    }

    /// The gateway's registry: these metrics, and the figures read from
    /// `cluster` and `catalog` at every scrape.
    pub fn registry(self: &Arc<Self>, cluster: Arc<Cluster>, catalog: Arc<GatewayCatalog>) -> Registry {
        let mut r = Registry::default();
        r.register("sillok_s3_requests", "S3 requests handled, by operation and outcome.", self.requests.clone());
        r.register(
            "sillok_s3_request_duration_seconds",
            "Time from an S3 request's arrival to its response head (a GET's body streams after), by operation.",
            self.duration.clone(),
        );
        r.register(
            "sillok_s3_errors",
            "S3 requests answered with an error, by S3 error code (NoSuchKey, AccessDenied, ...).",
            self.errors.clone(),
        );
        r.register("sillok_s3_bytes_in", "Object bytes received in PUTs.", self.bytes_in.clone());
        r.register("sillok_s3_bytes_out", "Object bytes sent in GETs.", self.bytes_out.clone());
        r.register_collector(Box::new(Figures { metrics: self.clone(), cluster, catalog }));
        r
    }
}

/// The figures read at scrape time.
struct Figures {
    metrics: Arc<Metrics>,
    cluster: Arc<Cluster>,
    catalog: Arc<GatewayCatalog>,
}

impl std::fmt::Debug for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("gateway figures")
    }
}

impl Collector for Figures {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let (c, enc) = (&self.cluster, &mut enc);
        let index = self.catalog.index();
        gauge(enc, "sillok_map_epoch", "The placement map epoch this gateway uses.", index.map().epoch)?;
        gauge(enc, "sillok_catalog_applied_index", "The catalog log index of this gateway's copy.", index.applied)?;
        gauge(
            enc,
            "sillok_catalog_buckets",
            "Buckets in this gateway's copy of the catalog.",
            index.bucket_count() as u64,
        )?;
        drop(index);
        let f = self.catalog.follow_figures();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        counter(
            enc,
            "sillok_catalog_follow_bytes",
            "Bytes of catalog changes and whole views this gateway received (as JSON).",
            load(&f.bytes),
        )?;
        counter(
            enc,
            "sillok_catalog_changes_applied",
            "Rows (buckets, keys, the map) this gateway's copy of the catalog changed.",
            load(&f.changes),
        )?;
        counter(
            enc,
            "sillok_catalog_follow_batches",
            "Batches of catalog changes written to this gateway's copy.",
            load(&f.batches),
        )?;
        counter(enc, "sillok_catalog_whole_views", "Whole catalog views this gateway took.", load(&f.views))?;
        counter(
            enc,
            "sillok_catalog_read_index_calls",
            "Read indexes this gateway asked of the catalog leader (fresh reads for misses and ListBuckets).",
            load(&f.read_index_calls),
        )?;
        counter(
            enc,
            "sillok_catalog_fresh_read_bytes",
            "Bytes of answers to fresh reads (read indexes, whole views when a read index could not serve), as JSON.",
            load(&f.fresh_read_bytes),
        )?;
        counter(
            enc,
            "sillok_catalog_fresh_whole_reads",
            "Whole catalog views read from the leader for a fresh read (a replica without read indexes, or a slow follower).",
            load(&f.fresh_whole_reads),
        )?;
        counter(
            enc,
            "sillok_catalog_negative_hits",
            "Misses (unknown bucket or key) answered from the negative cache.",
            load(&f.negative_hits),
        )?;
        gauge(
            enc,
            "sillok_catalog_negative_names",
            "Names (buckets, key ids) this gateway knows are missing (bounded).",
            self.catalog.negative_names() as u64,
        )?;
        if let Some(off) = c.clock_offset_ms() {
            gauge(
                enc,
                "sillok_clock_offset_ms",
                "This gateway's clock minus the storage nodes' (median of the probes).",
                off,
            )?;
        }
        let l = &self.metrics.limits;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        gauge(enc, "sillok_gateway_connections_open", "S3 connections being served.", load(&l.connections_open))?;
        gauge(
            enc,
            "sillok_gateway_connections_max",
            "S3 connections served at once at most (--max-connections); more wait in the accept backlog.",
            load(&l.max_connections),
        )?;
        counter(enc, "sillok_gateway_connections_accepted", "S3 connections accepted.", load(&l.connections_accepted))?;
        counter(
            enc,
            "sillok_gateway_connection_limit_reached",
            "Times every connection permit was taken and the S3 listener stopped accepting until one ended.",
            load(&l.connection_limit_reached),
        )?;
        gauge(
            enc,
            "sillok_gateway_requests_in_flight",
            "S3 requests in flight (from arrival to the end of the response body).",
            load(&l.client_requests_in_flight),
        )?;
        gauge(
            enc,
            "sillok_gateway_clients_in_flight",
            "Client addresses with an S3 request in flight.",
            load(&l.clients_in_flight),
        )?;
        counter(
            enc,
            "sillok_gateway_client_limit_refusals",
            "S3 requests answered 503 SlowDown because their client had --max-requests-per-client in flight.",
            load(&l.client_limit_refusals),
        )?;
        counter(
            enc,
            "sillok_gateway_client_connection_refusals",
            "Connections closed unread because their client had --max-connections-per-client open.",
            load(&l.client_connection_refusals),
        )?;
        gauge(
            enc,
            "sillok_gateway_form_buffer_reserved_bytes",
            "Bytes of browser-form files reserved in the --form-buffer-total budget now.",
            load(&l.form_buffer_reserved),
        )?;
        counter(
            enc,
            "sillok_gateway_form_buffer_refusals",
            "Form uploads answered 503 SlowDown because --form-buffer-total had no room for their file.",
            load(&l.form_buffer_refusals),
        )?;
        counter(
            enc,
            "sillok_gateway_tls_handshake_failures",
            "TLS handshakes on the S3 listener that failed (untrusted certificate, plain HTTP, not TLS).",
            load(&l.tls_handshake_failures),
        )?;
        counter(
            enc,
            "sillok_gateway_tls_handshake_timeouts",
            "TLS handshakes on the S3 listener not finished within 10 s (the connection was closed).",
            load(&l.tls_handshake_timeouts),
        )?;
        gauge(
            enc,
            "sillok_gateway_suspect_nodes",
            "Storage nodes this gateway suspects (calls failed; no probe answered since).",
            c.suspect_count() as u64,
        )?;
        gauge(
            enc,
            "sillok_gateway_ready",
            "1 while this gateway is ready (see /ready on the ops listener).",
            u64::from(crate::server::readiness(c).is_ok()),
        )?;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        counter(
            enc,
            "sillok_gateway_manifest_refetches",
            "Manifest reads whose body replica was behind, slow or down, so the manifest was fetched from another replica.",
            load(&c.manifest_refetches),
        )?;
        counter(
            enc,
            "sillok_gateway_manifest_read_calls",
            "Storage node calls made by lean manifest reads (whole manifests and summaries).",
            load(&c.manifest_read_calls),
        )?;
        counter(
            enc,
            "sillok_gateway_degraded_reads",
            "Object reads that decoded at least one stripe from parity (a data shard missing, slow or bad).",
            load(&c.degraded_reads),
        )?;
        counter_family(
            enc,
            "sillok_gateway_node_deadlines",
            "Storage node calls given up on a deadline: read_deadline (a shard block slower than --read-deadline-ms), node_timeout (--connect-timeout-ms / --node-timeout-ms).",
            "kind",
            [
                ("read_deadline".to_string(), load(&c.read_deadlines)),
                ("node_timeout".to_string(), load(&c.node_timeouts)),
            ],
        )?;
        counter(
            enc,
            "sillok_gateway_client_send_timeouts",
            "GETs ended because their client took no bytes within --send-timeout-s (their shard reads and buffers freed).",
            load(&c.client_send_timeouts),
        )?;
        self.metrics.lifecycle.encode_metrics(enc)?;
        if let Some(r) = self.catalog.repair.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            r.encode_metrics(enc)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_bounded() {
        assert_eq!(bounded_code("NoSuchKey"), "NoSuchKey");
        assert_eq!(bounded_code(""), "Other");
        assert_eq!(bounded_code("a b"), "Other");
        assert_eq!(bounded_code(&"A".repeat(65)), "Other");
    }

    #[test]
    fn latency_and_codes_reach_the_page() {
        let m = Metrics::default();
        m.count("GetObject", false);
        m.finish("GetObject", Duration::from_millis(3), Some("NoSuchKey".into()));
        let mut r = Registry::default();
        r.register("sillok_s3_requests", "x", m.requests.clone());
        r.register("sillok_s3_request_duration_seconds", "x", m.duration.clone());
        r.register("sillok_s3_errors", "x", m.errors.clone());
        let page = sillok_rpc::ops::render(&r).unwrap();
        assert!(page.contains("sillok_s3_requests_total{op=\"GetObject\",outcome=\"error\"} 1\n"), "{page}");
        assert!(page.contains("sillok_s3_request_duration_seconds_count{op=\"GetObject\"} 1\n"), "{page}");
        assert!(page.contains("sillok_s3_errors_total{code=\"NoSuchKey\"} 1\n"), "{page}");
    }
}
