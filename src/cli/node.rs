//! `sillok node`: serve one storage node.
//!
//! The node follows the placement map in the catalog (a [`MapFollower`],
//! saved by rows at `<data>/map.redb`) so that it knows the current epoch and refuses
//! manifest requests made on an older map. It finds itself (its site and
//! listen address) in the newest map it has: the one saved from the catalog,
//! the catalog's own, or the cluster file's, so a node added with `sillok
//! admin node add` (an id the cluster file never had) starts as well.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use sillok_catalog::follower::{FollowOptions, MapFollower};
use sillok_catalog::{CatalogClient, ClientTimeouts};
use sillok_placement::{ClusterFile, NodeId, PlacementMap};
use sillok_rpc::auth::Signer;
use sillok_storage_node::collector::Upkeep;
use sillok_storage_node::report::report_forever;
use sillok_storage_node::server::{NodeConfig, bind};

#[derive(clap::Args)]
pub struct NodeArgs {
    /// The cluster file (cluster secret, catalog replicas, first map).
    #[arg(long)]
    pub cluster: PathBuf,
    /// This node's id in the map.
    #[arg(long)]
    pub id: u32,
    /// Where the node keeps its shards and metadata.
    #[arg(long)]
    pub data: PathBuf,
    /// Address to listen on (default: the node's address in the map).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Address of the ops listener: unauthenticated `GET /health`, `/ready`
    /// (200, or 503 with the reason) and `/metrics` (Prometheus). Unset: none.
    #[arg(long)]
    pub ops_listen: Option<std::net::SocketAddr>,
    /// How long (seconds) to wait at start for a map that names this node,
    /// when neither the saved map nor the cluster file's does.
    #[arg(long, default_value_t = 60)]
    pub wait_for_map_s: u64,
    /// How often (ms) to report usage (shards, bytes, free space) to the catalog.
    #[arg(long, default_value_t = 2000)]
    pub report_every_ms: u64,
    /// How long (ms) a shard must be unreferenced by every manifest replica
    /// of its PG, and its file that old, before the collector deletes it.
    /// Keep it longer than the longest GET and PUT.
    #[arg(long, default_value_t = 3_600_000)]
    pub collect_grace_ms: u64,
    /// Tombstones older than this (ms) are purged once every replica of their PG holds them.
    #[arg(long, default_value_t = 86_400_000)]
    pub tombstone_horizon_ms: u64,
    /// Pause (ms) between collector rounds.
    #[arg(long, default_value_t = 60_000)]
    pub collect_every_ms: u64,
    /// Pause (ms) between anti-entropy rounds over this node's PGs.
    #[arg(long, default_value_t = 30_000)]
    pub sync_every_ms: u64,
    /// The node refuses manifest writes, and pauses its collector, while its
    /// clock is further than this (ms) from its peers' (run NTP).
    #[arg(long, default_value_t = 500)]
    pub max_clock_offset_ms: u64,
    /// Pause (ms) between rebuild rounds over the slots the map gives this node.
    #[arg(long, default_value_t = 30_000)]
    pub rebuild_every_ms: u64,
    /// Rebuild rate at start, MiB/s of rebuilt shard bytes (0: unlimited);
    /// `sillok admin repair throttle` changes it for every node while they run.
    #[arg(long, default_value_t = 100)]
    pub rebuild_mib_per_s: u32,
    /// Shards the rebuild engine writes at once, at start.
    #[arg(long, default_value_t = 4)]
    pub rebuild_concurrency: u32,
    /// A scrub pass (every shard file read back and every block checked)
    /// starts this often, in ms (default 14 days; 0: no scrub).
    #[arg(long, default_value_t = 1_209_600_000)]
    pub scrub_every_ms: u64,
    /// Most MiB/s a scrub pass reads.
    #[arg(long, default_value_t = 10)]
    pub scrub_mib_per_s: u32,
    /// After a start, the node refuses clients' manifest reads (503) until it
    /// has caught up with a peer of every PG it replicates, or for at most
    /// this many ms.
    #[arg(long, default_value_t = 60_000)]
    pub catch_up_limit_ms: u64,
    /// The rebuild and scrub give way to client requests (wait for those in
    /// flight before each block, work at nice 10). `false` only to measure
    /// what that buys.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub client_first: bool,
    /// MiB of memory for the manifest store's page cache (redb's): pages
    /// read or written stay in it until it is full, so it bounds how much of
    /// the node's RSS small objects' bodies and manifests can take.
    #[arg(long, default_value_t = (sillok_storage_node::meta_store::DEFAULT_CACHE_BYTES >> 20) as u64)]
    pub meta_cache_mib: u64,
    /// Tests and drills only: shift this node's clock by this many ms.
    #[arg(long, hide = true, default_value_t = 0, allow_negative_numbers = true)]
    pub test_clock_offset_ms: i64,
    #[command(flatten)]
    pub internal: super::internal_tls::InternalTlsArgs,
}

pub async fn run(a: NodeArgs) -> anyhow::Result<()> {
    if a.test_clock_offset_ms != 0 {
        tracing::warn!(offset_ms = a.test_clock_offset_ms, "this node's clock is shifted for a test");
        sillok_model::clock::set_offset_ms(a.test_clock_offset_ms);
    }
    let file = super::load_cluster_file(&a.cluster)?;
    super::internal_tls::install(
        &a.internal,
        Some(super::internal_tls::default_dir(&a.cluster, &format!("node-{}", a.id))),
    )?;
    super::private_dir(&a.data).with_context(|| format!("cannot create the data directory {}", a.data.display()))?;
    let follower = start_following(&file, &a)?;
    let map = match &follower {
        Some((f, _)) => find_self(f, &file.map, NodeId(a.id), Duration::from_secs(a.wait_for_map_s)).await,
        None => Arc::new(file.map.clone()),
    };
    let Some(node) = map.topology.node(NodeId(a.id)).cloned() else {
        bail!(
            "node {} is in neither the catalog's map nor the cluster file {} (epoch {}); its nodes are {:?}. \
             Add it first with `sillok admin node add`",
            a.id,
            a.cluster.display(),
            map.epoch,
            map.topology.nodes.iter().map(|n| n.id.0).collect::<Vec<_>>()
        );
    };
    let listen = match a.listen {
        Some(l) => l,
        None => node
            .addr
            .parse()
            .with_context(|| format!("node {} has address {:?}, which is not host:port", a.id, node.addr))?,
    };
    let catalog = follower.as_ref().map(|(_, c)| c.clone());
    // The follower owns the map; the node and its reporter hold receivers.
    let map_watch = follower.as_ref().map(|(f, _)| f.subscribe());
    let config = NodeConfig {
        id: NodeId(a.id),
        listen,
        data_dir: a.data.clone(),
        cluster_secret: file.cluster_secret.clone(),
        also_accepted_secrets: file.also_accepted_secrets(),
        map: map_watch.clone(),
        upkeep: Upkeep {
            grace: Duration::from_millis(a.collect_grace_ms),
            tombstone_horizon: Duration::from_millis(a.tombstone_horizon_ms),
            collect_every: Duration::from_millis(a.collect_every_ms.max(100)),
            sync_every: Duration::from_millis(a.sync_every_ms.max(100)),
            max_clock_offset: Duration::from_millis(a.max_clock_offset_ms),
            rebuild_every: Duration::from_millis(a.rebuild_every_ms.max(100)),
            rebuild_mib_per_s: a.rebuild_mib_per_s,
            rebuild_concurrency: a.rebuild_concurrency.max(1),
            scrub_every: Duration::from_millis(a.scrub_every_ms),
            scrub_mib_per_s: a.scrub_mib_per_s,
            catch_up_limit: Duration::from_millis(a.catch_up_limit_ms),
        },
        meta_cache_bytes: usize::try_from(a.meta_cache_mib.max(1)).unwrap_or(usize::MAX).saturating_mul(1 << 20),
    };
    sillok_storage_node::background::set_client_first(a.client_first);
    tracing::info!(id = a.id, site = %node.site, %listen, epoch = map.epoch, "storage node starting");
    let bound = bind(config).await.context("storage node failed to start")?;
    if let Some(ops) = a.ops_listen {
        bound.serve_ops(ops).await.with_context(|| format!("cannot open the ops listener on {ops}"))?;
    }
    let reporter = catalog.zip(map_watch).map(|(c, map_watch)| {
        tokio::spawn(report_forever(
            c,
            NodeId(a.id),
            bound.shard_usage(),
            map_watch,
            bound.clock(),
            bound.repair_state(),
            bound.throttle(),
            a.data.clone(),
            Duration::from_millis(a.report_every_ms.max(100)),
        ))
    });
    let served = bound.run(super::shutdown_signal()).await;
    if let Some(r) = reporter {
        r.abort();
    }
    drop(follower);
    served.context("storage node failed")?;
    Ok(())
}

/// A follower of the catalog's map (and the client it uses), if the cluster
/// file names replicas.
fn start_following(file: &ClusterFile, a: &NodeArgs) -> anyhow::Result<Option<(MapFollower, Arc<CatalogClient>)>> {
    if file.catalog_replicas.is_empty() {
        tracing::warn!("the cluster file names no catalog replicas: using its map as is, checking no epochs");
        return Ok(None);
    }
    let replicas = file.catalog_replicas.iter().map(|r| r.addr.clone()).collect();
    let timeouts =
        ClientTimeouts { attempt: Duration::from_secs(2), total: Duration::from_secs(5), ..Default::default() };
    let client = Arc::new(CatalogClient::new(replicas, Signer::new(&file.cluster_secret), timeouts)?);
    let follower =
        MapFollower::start(client.clone(), a.data.join("map.redb"), Some(file.map.clone()), FollowOptions::default())?;
    Ok(Some((follower, client)))
}

/// The newest map that names `id`, waiting up to `wait` for the catalog to
/// send one; otherwise the newest map there is (the caller reports it).
async fn find_self(f: &MapFollower, fallback: &PlacementMap, id: NodeId, wait: Duration) -> Arc<PlacementMap> {
    let mut rx = f.subscribe();
    let names_me = |m: &Option<Arc<PlacementMap>>| m.as_ref().is_some_and(|m| m.topology.node(id).is_some());
    if !names_me(&rx.borrow()) {
        tracing::info!(node = %id, "waiting for a map from the catalog that names this node");
        let _ = tokio::time::timeout(wait, rx.wait_for(names_me)).await;
    }
    f.current().unwrap_or_else(|| Arc::new(fallback.clone()))
}
