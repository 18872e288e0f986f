//! `sillok gateway`: serve S3. The cluster file gives the cluster secret and
//! the catalog replicas; buckets, keys and the map come from the catalog,
//! whose last copy the gateway keeps in `--data` so it can start and serve
//! while no replica answers. With `--tls-cert` and `--tls-key` it serves
//! HTTPS (see `sillok_gateway::server`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use sillok_catalog::follower::FollowOptions;
use sillok_gateway::GatewayConfig;
use sillok_gateway::read::ReadSettings;
use sillok_gateway::write::WriteSettings;
use sillok_storage_node::Timeouts;

#[derive(clap::Args)]
pub struct GatewayArgs {
    /// The cluster file (cluster secret, catalog replicas).
    #[arg(long)]
    pub cluster: PathBuf,
    /// Where the gateway keeps its last copy of the catalog (secrets
    /// included: keep it private).
    #[arg(long)]
    pub data: PathBuf,
    /// Catalog replicas to follow, `host:port,...` (default: the cluster file's).
    #[arg(long, value_delimiter = ',')]
    pub catalog: Vec<String>,
    /// Poll the catalog every this many ms instead of following it
    /// continuously (0: follow continuously, with long polls). A node that
    /// names a newer map epoch still makes the gateway ask at once.
    #[arg(long, default_value_t = 0)]
    pub catalog_poll_ms: u64,
    /// Seconds to wait at start for a first catalog when none is saved.
    #[arg(long, default_value_t = 60)]
    pub catalog_wait_s: u64,
    /// Once listening, write the bound `host:port` here (with `--listen` on
    /// port 0, this is how a supervisor learns the port).
    #[arg(long)]
    pub addr_file: Option<PathBuf>,
    /// Address to serve S3 on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: std::net::SocketAddr,
    /// Address of the ops listener: unauthenticated `GET /health`, `/ready`
    /// (200, or 503 with the reason) and `/metrics` (Prometheus). Unset: none.
    #[arg(long)]
    pub ops_listen: Option<std::net::SocketAddr>,
    /// Bytes per shard block (a stripe is k blocks).
    #[arg(long, default_value_t = 256 * 1024)]
    pub block_size: u32,
    /// Objects up to this many bytes are kept inside their manifest.
    #[arg(long, default_value_t = 64 * 1024)]
    pub inline_threshold: u64,
    /// A shard block slower than this (ms) is replaced by parity.
    #[arg(long, default_value_t = 2000)]
    pub read_deadline_ms: u64,
    /// A manifest read asks a majority of the replicas; if they have not all
    /// answered after this many ms it asks one more (and it waits at least
    /// this long for the replica sending the whole manifest before fetching
    /// it from another).
    #[arg(long, default_value_t = 20)]
    pub read_hedge_ms: u64,
    /// Deadline (ms) for connecting to a node.
    #[arg(long, default_value_t = 500)]
    pub connect_timeout_ms: u64,
    /// Deadline (ms) for a node's response head, and for quiet gaps in a body.
    #[arg(long, default_value_t = 5000)]
    pub node_timeout_ms: u64,
    /// How often (ms) every node's health is probed.
    #[arg(long, default_value_t = 500)]
    pub probe_interval_ms: u64,
    /// Refuse writes (503) while this gateway's clock is more than this many
    /// ms from the storage nodes' (the median of the probes' measurements).
    /// Keep the machines' clocks synchronised with NTP.
    #[arg(long, default_value_t = 500)]
    pub max_clock_offset_ms: u64,
    /// Tests and drills only: shift this gateway's clock by this many ms.
    #[arg(long, hide = true, default_value_t = 0, allow_negative_numbers = true)]
    pub test_clock_offset_ms: i64,
    /// Base domain for virtual-host-style requests (`<bucket>.<domain>`);
    /// repeat, or separate with commas, for several. Other hosts (IPs
    /// included) are path-style.
    #[arg(long = "domain", value_delimiter = ',')]
    pub domains: Vec<String>,
    /// Abort multipart uploads not completed within this many seconds (S3
    /// lifecycle's AbortIncompleteMultipartUpload; default 7 days).
    #[arg(long, default_value_t = 7 * 24 * 3600)]
    pub abandoned_upload_age_s: u64,
    /// How often (seconds) to look for abandoned multipart uploads.
    #[arg(long, default_value_t = 600)]
    pub upload_sweep_interval_s: u64,
    /// How often (seconds) the lifecycle expirer carries out buckets'
    /// lifecycle rules (expiry, aborts of incomplete uploads); 0: not in
    /// this gateway.
    #[arg(long, default_value_t = 3600)]
    pub lifecycle_interval_s: u64,
    /// The length of a lifecycle "day" in seconds (S3's: 86400). Tests and
    /// demos shorten it; expiry by age is then scaled (rounded up to a
    /// multiple of this since the Unix epoch).
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub lifecycle_day_s: u64,
    /// The largest browser-form (POST object) upload, in bytes; such bodies are buffered.
    #[arg(long, default_value_t = 32 << 20)]
    pub post_max_size: u64,
    /// Seconds a client may go without sending body bytes before its request is dropped.
    #[arg(long, default_value_t = 60)]
    pub body_idle_timeout_s: u64,
    /// Seconds a client may go without taking bytes of a GET's body before
    /// the GET is ended (its shard reads and buffers freed).
    #[arg(long, default_value_t = sillok_gateway::read::DEFAULT_SEND_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub send_timeout_s: u64,
    /// Bytes of browser-form (POST object) files this gateway buffers at once,
    /// over all requests; a form that does not fit is answered 503 SlowDown.
    #[arg(long, default_value_t = sillok_gateway::limits::DEFAULT_FORM_BUFFER_TOTAL)]
    pub form_buffer_total: u64,
    /// S3 connections served at once; more wait in the listen backlog until one ends.
    #[arg(long, default_value_t = sillok_gateway::limits::DEFAULT_MAX_CONNECTIONS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections: usize,
    /// S3 requests one client IP may have in flight; more are answered 503 SlowDown.
    #[arg(long, default_value_t = sillok_gateway::limits::DEFAULT_MAX_REQUESTS_PER_CLIENT, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_requests_per_client: usize,
    /// Open S3 connections one client IP may have; more are closed at once.
    #[arg(long, default_value_t = sillok_gateway::limits::DEFAULT_MAX_CONNECTIONS_PER_CLIENT, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections_per_client: usize,
    /// Serve S3 over HTTPS with this certificate chain (PEM: the server's
    /// certificate first, then any intermediates); needs --tls-key. The
    /// files are reloaded when they change and on SIGHUP.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1); keep it 0600.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub internal: super::internal_tls::InternalTlsArgs,
}

/// The largest `--node-timeout-ms`: see `sillok_gateway::write::stripe_deadline`.
const MAX_NODE_TIMEOUT_MS: u64 = 50_000;

pub async fn run(a: GatewayArgs) -> anyhow::Result<()> {
    let cluster = super::load_cluster_file(&a.cluster)?;
    super::internal_tls::install(&a.internal, Some(super::internal_tls::default_dir(&a.cluster, "gateway")))?;
    if a.block_size == 0 || a.block_size as usize > sillok_model::frame::MAX_BLOCK_LEN {
        bail!("--block-size must be between 1 and {} bytes", sillok_model::frame::MAX_BLOCK_LEN);
    }
    // A node waits at most `UPLOAD_IDLE` for the next block; the gateway's
    // stripe deadline leaves room for this much stall (`write::stripe_deadline`).
    if a.node_timeout_ms > MAX_NODE_TIMEOUT_MS {
        bail!(
            "--node-timeout-ms must be at most {MAX_NODE_TIMEOUT_MS} (nodes give up on a quiet upload after {} s)",
            sillok_storage_node::server::UPLOAD_IDLE.as_secs()
        );
    }
    if a.form_buffer_total < a.post_max_size {
        bail!(
            "--form-buffer-total ({}) must be at least --post-max-size ({}): one form of the largest size must fit",
            a.form_buffer_total,
            a.post_max_size
        );
    }
    if cluster.catalog_replicas.is_empty() && a.catalog.is_empty() {
        bail!(
            "{} names no catalog replicas and --catalog is not given: the gateway takes buckets, keys and the map from the catalog",
            a.cluster.display()
        );
    }
    let config = GatewayConfig {
        listen: a.listen,
        ops_listen: a.ops_listen,
        cluster,
        state_dir: a.data,
        catalog_replicas: a.catalog,
        follow: FollowOptions { pause: Duration::from_millis(a.catalog_poll_ms), ..Default::default() },
        catalog_wait: Duration::from_secs(a.catalog_wait_s),
        write: WriteSettings {
            block_size: a.block_size,
            inline_threshold: a.inline_threshold,
            stall_deadline: Duration::from_millis(a.node_timeout_ms),
            body_idle_timeout: Duration::from_secs(a.body_idle_timeout_s.max(1)),
            ..Default::default()
        },
        read: ReadSettings {
            block_deadline: Duration::from_millis(a.read_deadline_ms),
            send_timeout: Duration::from_secs(a.send_timeout_s),
        },
        node_timeouts: Timeouts {
            connect: Duration::from_millis(a.connect_timeout_ms),
            response: Duration::from_millis(a.node_timeout_ms),
            idle: Duration::from_millis(a.node_timeout_ms),
        },
        probe_interval: Duration::from_millis(a.probe_interval_ms),
        max_clock_offset: Duration::from_millis(a.max_clock_offset_ms),
        read_hedge: Duration::from_millis(a.read_hedge_ms),
        domains: a.domains,
        upload_max_age: Duration::from_secs(a.abandoned_upload_age_s),
        upload_sweep_interval: Duration::from_secs(a.upload_sweep_interval_s.max(1)),
        post_max_size: a.post_max_size,
        lifecycle: sillok_gateway::lifecycle::LifecycleSettings {
            interval: Duration::from_secs(a.lifecycle_interval_s),
            day: Duration::from_secs(a.lifecycle_day_s),
        },
        limits: sillok_gateway::limits::Limits {
            max_connections: a.max_connections,
            max_requests_per_client: a.max_requests_per_client,
            max_connections_per_client: a.max_connections_per_client,
            form_buffer_total: a.form_buffer_total,
        },
        tls: match (a.tls_cert, a.tls_key) {
            (Some(cert), Some(key)) => Some(sillok_gateway::server::TlsFiles { cert, key }),
            (None, None) => None,
            _ => bail!("--tls-cert and --tls-key go together: give both (HTTPS) or neither (HTTP)"),
        },
    };
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    if a.test_clock_offset_ms != 0 {
        tracing::warn!(offset_ms = a.test_clock_offset_ms, "this gateway's clock is shifted for a test");
        sillok_model::clock::set_offset_ms(a.test_clock_offset_ms);
    }
    let (addr, serving) = sillok_gateway::server::bind(config, super::shutdown_signal())
        .await
        .with_context(|| format!("cannot serve S3 on {}", a.listen))?;
    tracing::info!(%addr, scheme, "S3 gateway listening");
    if let Some(path) = &a.addr_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{addr}\n"))
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    serving.await;
    Ok(())
}
