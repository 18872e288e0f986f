//! `sillok placement`: run one catalog replica (the Raft catalog of the map,
//! the buckets and the access keys; see `sillok_catalog`).
//!
//! Configuration comes from the cluster file: its `catalog_replicas` list
//! (id, site, `host:port`) is the initial membership, and `--id` picks this
//! replica from it (its site, and its address to listen on unless `--listen`
//! says otherwise). On first start, every listed replica initialises Raft with
//! that same membership, and the first leader seeds the catalog from the
//! file's map, region, access keys (read+write) and admin key (admin). Later
//! starts read everything back from `--data` and ignore the file's map and
//! keys: the catalog is the truth from then on.
//!
//! A replica that is not in the file (a fourth or fifth one, or a
//! replacement) starts with `--site` and `--listen` (and `--advertise` if
//! others reach it by another address), waits, and joins when an operator
//! runs `sillok admin replica add --id N --addr HOST:PORT --site SITE`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use sillok_catalog::ReplicaNode;
use sillok_catalog::server::{RaftTimings, Replica, ReplicaConfig};
use sillok_catalog::state::{Command, KeyRecord, Permission};
use sillok_placement::ClusterFile;

#[derive(clap::Args)]
pub struct CatalogArgs {
    /// The cluster file (replica list, cluster secret, first map and keys).
    #[arg(long)]
    pub cluster: PathBuf,
    /// This replica's Raft id.
    #[arg(long)]
    pub id: u64,
    /// Where the replica keeps its log, state machine and snapshots.
    #[arg(long)]
    pub data: PathBuf,
    /// Address to listen on (default: this replica's address in the cluster file).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Address of the ops listener: unauthenticated `GET /health`, `/ready`
    /// (200, or 503 with the reason) and `/metrics` (Prometheus). Unset: none.
    #[arg(long)]
    pub ops_listen: Option<std::net::SocketAddr>,
    /// Address others reach this replica at (default: the listen address).
    #[arg(long)]
    pub advertise: Option<String>,
    /// The site of a replica that is not in the cluster file.
    #[arg(long)]
    pub site: Option<String>,
    /// Raft heartbeat interval (ms).
    #[arg(long, default_value_t = 100)]
    pub heartbeat_ms: u64,
    /// Shortest election timeout (ms): how long followers wait for a silent leader.
    #[arg(long, default_value_t = 500)]
    pub election_min_ms: u64,
    /// Longest election timeout (ms).
    #[arg(long, default_value_t = 1000)]
    pub election_max_ms: u64,
    /// Take a snapshot and compact the log every this many entries.
    #[arg(long, default_value_t = 1000)]
    pub snapshot_every: u64,
    /// Entries kept behind a snapshot for replicas that lag a little.
    #[arg(long, default_value_t = 500)]
    pub keep_logs: u64,
    /// Changes kept in memory for gateways that follow the catalog; one
    /// further behind takes the whole catalog again.
    #[arg(long, default_value_t = sillok_catalog::changes::DEFAULT_CHANGE_LOG_ENTRIES)]
    pub change_log_entries: usize,
    /// Deadline (ms) of one Raft RPC to another replica.
    #[arg(long, default_value_t = 1000)]
    pub rpc_timeout_ms: u64,
    /// Deadline (ms) of a TCP connect to another replica.
    #[arg(long, default_value_t = 300)]
    pub connect_timeout_ms: u64,
    /// The leader marks a storage node down when it has not reported for this long (ms).
    #[arg(long, default_value_t = 10_000)]
    pub down_after_ms: u64,
    /// ... and out (its slots move elsewhere) after this long (ms), unless
    /// repair is held (`sillok admin repair hold`).
    #[arg(long, default_value_t = 600_000)]
    pub out_after_ms: u64,
    /// `--out-after-ms` for a node whose whole site is silent (ms): longer, so
    /// that a partition between sites does not move a site's data at once.
    #[arg(long, default_value_t = 3_600_000)]
    pub site_out_after_ms: u64,
    /// On the first start of a new replica set (empty `--data`), seed the
    /// catalog from this backup (`sillok admin catalog backup|export`)
    /// instead of the cluster file's map and keys. Give every new replica the
    /// same file; ignored once the catalog is seeded.
    #[arg(long)]
    pub restore_from: Option<PathBuf>,
    #[command(flatten)]
    pub internal: super::internal_tls::InternalTlsArgs,
}

/// Writes a catalog backup atomically, readable by its owner only.
pub fn write_backup(b: &sillok_catalog::api::CatalogBackup, out: &std::path::Path) -> anyhow::Result<()> {
    if out.exists() {
        bail!("{} exists; choose a new name (a backup never overwrites another)", out.display());
    }
    let bytes = serde_json::to_vec_pretty(b).context("cannot encode the backup")?;
    super::write_private(out, &bytes).with_context(|| format!("cannot write {}", out.display()))
}

/// Reads a backup and checks it can seed a catalog.
pub fn read_backup(path: &std::path::Path) -> anyhow::Result<sillok_catalog::api::CatalogBackup> {
    let text = std::fs::read(path).with_context(|| format!("cannot read the backup {}", path.display()))?;
    let b: sillok_catalog::api::CatalogBackup =
        serde_json::from_slice(&text).with_context(|| format!("{} is not a catalog backup", path.display()))?;
    if b.format != sillok_catalog::api::BACKUP_FORMAT {
        bail!(
            "{}: backup format {} is not one this build reads ({})",
            path.display(),
            b.format,
            sillok_catalog::api::BACKUP_FORMAT
        );
    }
    match &b.catalog.map {
        None => bail!("{}: the backed-up catalog was never seeded (no map)", path.display()),
        Some(m) => m.validate().with_context(|| format!("{}: the backed-up map is not valid", path.display()))?,
    }
    Ok(b)
}

/// `sillok admin catalog export`: the catalog a stopped replica had applied,
/// read from its data directory.
pub fn export(data: &std::path::Path, out: &std::path::Path) -> anyhow::Result<()> {
    if !data.join("catalog.redb").exists() {
        bail!("{} holds no catalog.redb: is it a catalog replica's --data directory?", data.display());
    }
    let sm = sillok_catalog::store::StateMachineStore::open(data).with_context(|| {
        format!("cannot open the catalog in {} (stop the replica first: a running one holds it)", data.display())
    })?;
    let b = sm.read(|st| {
        let raft_index = st.applied.map_or(0, |l| l.index);
        sillok_catalog::api::CatalogBackup {
            format: sillok_catalog::api::BACKUP_FORMAT,
            taken_at_ms: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0),
            replica: 0,
            raft_index,
            version: st.catalog.restored_base + raft_index,
            catalog: st.catalog.clone(),
        }
    });
    if !b.catalog.is_bootstrapped() {
        bail!("the catalog in {} was never seeded: nothing to export", data.display());
    }
    write_backup(&b, out)?;
    println!(
        "wrote {} (mode 0600: it holds every S3 secret): what this replica had applied, index {}, map epoch {}, {} buckets, {} keys",
        out.display(),
        b.raft_index,
        b.catalog.epoch(),
        b.catalog.buckets.len(),
        b.catalog.keys.len()
    );
    Ok(())
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The `Bootstrap` command that seeds the catalog from a cluster file.
pub fn seed_of(file: &ClusterFile) -> Command {
    let now = now_secs();
    let mut keys: Vec<KeyRecord> = file
        .access_keys
        .iter()
        .map(|k| KeyRecord {
            id: k.access_key_id.clone(),
            secret: k.secret_access_key.clone(),
            permissions: [Permission::Read, Permission::Write].into_iter().collect(),
            enabled: true,
            created_at: now,
        })
        .collect();
    if let Some(a) = &file.admin_key {
        keys.push(KeyRecord {
            id: a.access_key_id.clone(),
            secret: a.secret_access_key.clone(),
            permissions: [Permission::Admin].into_iter().collect(),
            enabled: true,
            created_at: now,
        });
    }
    Command::Bootstrap { region: file.region.clone(), map: file.map.clone(), keys }
}

pub async fn run(a: CatalogArgs) -> anyhow::Result<()> {
    let file = super::load_cluster_file(&a.cluster)?;
    super::internal_tls::install(
        &a.internal,
        Some(super::internal_tls::default_dir(&a.cluster, &format!("catalog-{}", a.id))),
    )?;
    let listed = file.catalog_replicas.iter().find(|r| r.id == a.id);
    let (site, listen, advertise) = match listed {
        Some(r) => {
            let listen = match a.listen {
                Some(l) => l,
                None => r.addr.parse().with_context(|| {
                    format!("replica {} has address {:?} in the cluster file, which is not host:port", r.id, r.addr)
                })?,
            };
            (r.site.clone(), listen, a.advertise.clone().unwrap_or_else(|| r.addr.clone()))
        }
        None => {
            let (Some(site), Some(listen)) = (a.site.clone(), a.listen) else {
                bail!(
                    "replica {} is not in the cluster file {} (its replicas are {:?}); a new replica needs --site and --listen, then `sillok admin replica add`",
                    a.id,
                    a.cluster.display(),
                    file.catalog_replicas.iter().map(|r| r.id).collect::<Vec<_>>()
                );
            };
            (site, listen, a.advertise.clone().unwrap_or_else(|| listen.to_string()))
        }
    };
    let members: BTreeMap<u64, ReplicaNode> = file
        .catalog_replicas
        .iter()
        .map(|r| (r.id, ReplicaNode { addr: r.addr.clone(), site: r.site.clone() }))
        .collect();
    super::private_dir(&a.data).with_context(|| format!("cannot create the data directory {}", a.data.display()))?;
    let mut config = ReplicaConfig::new(a.id, &site, listen, a.data.clone(), &file.cluster_secret);
    config.advertise = advertise;
    config.also_accepted_secrets = file.also_accepted_secrets();
    config.initial_members = members;
    config.seed = Some(match &a.restore_from {
        None => seed_of(&file),
        Some(path) => {
            let b = read_backup(path)?;
            tracing::info!(backup = %path.display(), raft_index = b.raft_index, epoch = b.catalog.epoch(), "a new catalog will be seeded from this backup");
            let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
            Command::Restore { catalog: Box::new(b.catalog), version: b.version, at_ms }
        }
    });
    config.timings = RaftTimings {
        heartbeat_ms: a.heartbeat_ms,
        election_min_ms: a.election_min_ms,
        election_max_ms: a.election_max_ms,
        snapshot_every: a.snapshot_every,
        keep_logs: a.keep_logs,
    };
    config.change_log_entries = a.change_log_entries;
    config.rpc_timeout = Duration::from_millis(a.rpc_timeout_ms);
    config.connect_timeout = Duration::from_millis(a.connect_timeout_ms);
    config.detector = sillok_catalog::detector::DetectorSettings {
        down_after: Duration::from_millis(a.down_after_ms),
        out_after: Duration::from_millis(a.out_after_ms),
        site_out_after: Duration::from_millis(a.site_out_after_ms),
    };
    tracing::info!(id = a.id, %site, %listen, "catalog replica starting");
    let replica = Replica::open(config).await.context("cannot start the catalog replica")?;
    if let Some(ops) = a.ops_listen {
        replica.serve_ops(ops).await.with_context(|| format!("cannot open the ops listener on {ops}"))?;
    }
    replica.run(super::shutdown_signal()).await.context("catalog replica failed")?;
    Ok(())
}
