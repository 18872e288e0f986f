//! `sillok dev`: a whole cluster on loopback, every part its own process.
//!
//! Layout of the data directory (default `./sillok-dev`):
//! - `cluster.json`: the cluster file every process reads (kept across runs, so
//!   a restarted dev cluster keeps its data, ports and keys);
//! - `ca/`: the cluster CA (`ca.pem`, `ca-key.pem`, `cluster-id`), and
//!   `tls/<process>/`: each process's certificate and key for mutual TLS
//!   inside the cluster (`catalog-<id>`, `node-<id>`, `gateway`, `admin`;
//!   see `super::internal_tls`), made once and reused;
//! - `cluster.env`: shell-sourceable S3 endpoint, region and keys, and what
//!   `sillok admin` needs (`SILLOK_CATALOG`, `SILLOK_ADMIN_KEY_ID`,
//!   `SILLOK_ADMIN_SECRET`); 0600, as it holds secrets; under `--tls` also
//!   `AWS_CA_BUNDLE`, the CA file every AWS SDK and the aws cli read;
//! - `tls/` (0700, `--tls` only): the dev CA, `ca.crt` and `ca.key` (kept
//!   across runs, so clients that trust it go on trusting it), and the
//!   gateway's `gateway.crt` and `gateway.key` (issued again at each start,
//!   for 127.0.0.1, ::1, localhost and *.localhost); keys 0600;
//! - `sites/<site>.pids`: the PIDs of that site's processes (its catalog
//!   replica first, then its nodes), one a line (a site drill is
//!   `kill -9 $(cat sites/site-a.pids)`); `gateway.pid`;
//! - `sites/<site>.procs`: the same processes with their roles, one a line:
//!   `replica <replica id> <pid>` or `node <node id> <pid>` (for tests and
//!   drills that pick one process);
//! - `sites/<site>/catalog-<id>/`: the site's catalog replica (Raft log,
//!   catalog, snapshots);
//! - `sites/<site>/node-<id>/`: each node's shards, metadata and last map;
//! - `gateway/`: the gateway's last copy of the catalog;
//! - `logs/<process>.log`: each process's log (JSON lines under
//!   `sillok --log-format json dev`, which every process is given);
//! - `ops.txt`: every process's ops listener (`--ops-listen`: `/health`,
//!   `/ready`, `/metrics`), one a line: `replica <id> <addr>`,
//!   `node <id> <addr>` or `gateway - <addr>`; the gateway's is also
//!   `SILLOK_GATEWAY_OPS` in `cluster.env`.
//!
//! Start order: the catalog replicas (one per site); once the catalog has a
//! leader and has been seeded from `cluster.json`, the nodes, then the
//! gateway (both follow the catalog); then `cluster.env` is written, so
//! `sillok admin status` and S3 clients work at once.
//!
//! Children get SIGTERM if this process dies (PR_SET_PDEATHSIG), so a crashed
//! test never leaves a cluster behind.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sillok_catalog::{CatalogClient, ClientTimeouts};
use sillok_placement::{
    AccessKey, CatalogReplica, ClusterFile, EcProfile, Node, NodeId, NodeState, PlacementMap, Site, Topology,
};
use sillok_rpc::auth::Signer;

#[derive(clap::Args)]
pub struct DevArgs {
    /// Where the cluster keeps its files (created if missing, reused if present).
    #[arg(long, default_value = "sillok-dev")]
    pub data: PathBuf,
    /// Number of sites (failure domains).
    #[arg(long, default_value_t = 3)]
    pub sites: usize,
    /// Storage nodes per site (3: with 4+2, a lost site's shards can be
    /// rebuilt onto 6 distinct nodes of the other two sites).
    #[arg(long, default_value_t = 3)]
    pub nodes_per_site: usize,
    /// Erasure-coding profile, K+M.
    #[arg(long, default_value = "4+2")]
    pub profile: EcProfile,
    /// Number of placement groups.
    #[arg(long, default_value_t = 1024)]
    pub pgs: u32,
    /// S3 port (default 9000, or any free port if 9000 is taken; 0: any free port).
    #[arg(long)]
    pub port: Option<u16>,
    /// Extra arguments for the gateway process, e.g. `--gateway-arg=--block-size=65536`.
    #[arg(long = "gateway-arg", allow_hyphen_values = true)]
    pub gateway_args: Vec<String>,
    /// The length of a lifecycle "day" in seconds for the gateway's
    /// expirer (default: S3's 86400); a few seconds lets lifecycle rules be
    /// tried out (expiry by age is scaled to it).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub lifecycle_day_s: Option<u64>,
    /// How often (seconds) the gateway's lifecycle expirer runs (0: never).
    #[arg(long, default_value_t = 10)]
    pub lifecycle_interval_s: u64,
    /// Extra arguments for every catalog replica, e.g. `--catalog-arg=--election-min-ms=300`
    /// (`--placement-arg` is the same option under its earlier name).
    #[arg(long = "catalog-arg", alias = "placement-arg", allow_hyphen_values = true)]
    pub catalog_args: Vec<String>,
    /// Extra arguments for every storage node, e.g. `--node-arg=--collect-grace-ms=5000`.
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    pub node_args: Vec<String>,
    /// Serve S3 over HTTPS with a certificate from a local CA made for this
    /// cluster (in `<data>/tls/`); `cluster.env` then names the CA file
    /// (`AWS_CA_BUNDLE`) so SDKs and the aws cli trust it.
    #[arg(long)]
    pub tls: bool,
    #[command(flatten)]
    pub internal: super::internal_tls::InternalTlsArgs,
    #[command(subcommand)]
    pub action: Option<DevAction>,
}

#[derive(clap::Subcommand)]
pub enum DevAction {
    /// Against a running `sillok dev` cluster: lose a whole site under
    /// chat-media load, wait for full redundancy, read everything back, and
    /// report (failed GETs, PUT gaps, p50/p99 per phase, rebuild time).
    Drill(super::drill::DrillArgs),
}

struct Proc {
    name: String,
    child: Child,
    exited: bool,
}

pub async fn run(mut a: DevArgs, log_json: bool) -> anyhow::Result<()> {
    if let Some(DevAction::Drill(d)) = a.action.take() {
        return super::drill::run(d).await;
    }
    LOG_JSON.store(log_json, std::sync::atomic::Ordering::Relaxed);
    super::private_dir(&a.data).with_context(|| format!("cannot create {}", a.data.display()))?;
    std::fs::create_dir_all(a.data.join("logs")).with_context(|| format!("cannot create {}", a.data.display()))?;
    let data = a.data.canonicalize()?;
    let cluster_path = data.join("cluster.json");
    let cluster = if cluster_path.exists() {
        let mut c = super::load_cluster_file(&cluster_path)?;
        eprintln!("reusing the cluster in {}", data.display());
        if c.catalog_replicas.is_empty() || c.admin_key.is_none() {
            // A cluster made before the catalog existed: give it replicas and an admin key.
            add_catalog(&mut c)?;
            super::save_cluster_file(&c, &cluster_path)?;
        }
        c
    } else {
        let c = new_cluster(&a)?;
        super::save_cluster_file(&c, &cluster_path)?;
        c
    };
    if a.internal.internal_tls.is_some() {
        bail!(
            "sillok dev makes its processes' identities itself (under tls/ in its data directory): --internal-tls is not for it"
        );
    }
    INSECURE.store(a.internal.insecure_internal_http, std::sync::atomic::Ordering::Relaxed);
    if !a.internal.insecure_internal_http {
        let made = super::internal_tls::issue_all(&data, &cluster)?;
        if !made.is_empty() {
            eprintln!("issued {} internal certificates (CA in {})", made.len(), data.join("ca").display());
        }
    }
    super::internal_tls::install(&a.internal, Some(data.join("tls").join("admin")))?;
    let gateway_listen = pick_gateway_addr(a.port);
    let tls = if a.tls { Some(dev_tls(&data)?) } else { None };
    let exe = std::env::current_exe().context("cannot find the sillok binary")?;

    let mut procs: Vec<Proc> = Vec::new();
    // Nodes first; the gateway once they listen, so its first health probe finds them.
    let node_addrs: Vec<(String, SocketAddr)> = cluster
        .map
        .topology
        .nodes
        .iter()
        .filter_map(|n| Some((format!("node {}", n.id.0), n.addr.parse().ok()?)))
        .collect();
    let replica_addrs: Vec<(String, SocketAddr)> = cluster
        .catalog_replicas
        .iter()
        .filter_map(|r| Some((format!("catalog replica {}", r.id), r.addr.parse().ok()?)))
        .collect();
    let mut site_files: Vec<SiteFiles> = Vec::new();
    let mut ops = String::new();
    let started =
        start_replicas(&exe, &data, &cluster, &cluster_path, &a.catalog_args, &mut procs, &mut site_files, &mut ops)
            .and_then(|()| wait_listening(&replica_addrs, &mut procs, &data));
    if let Err(e) = started {
        stop_all(&mut procs);
        return Err(e);
    }
    // Nodes and the gateway follow the catalog: it is seeded first.
    if let Err(e) = wait_seeded(&cluster).await {
        stop_all(&mut procs);
        return Err(e.context(format!("see the catalog logs in {}/logs/", data.display())));
    }
    let started =
        start_nodes(&exe, &data, &cluster, &cluster_path, &a.node_args, &mut procs, &mut site_files, &mut ops)
            .and_then(|()| wait_listening(&node_addrs, &mut procs, &data))
            .and_then(|()| {
                start_gateway(
                    &exe,
                    &data,
                    &cluster_path,
                    gateway_listen,
                    &gateway_args(&a, tls.as_ref()),
                    &mut procs,
                    &mut ops,
                )
            })
            .and_then(|()| wait_gateway_addr(&data, &mut procs))
            .and_then(|addr| wait_listening(&[("gateway".into(), addr)], &mut procs, &data).map(|()| addr));
    let s3_addr = match started {
        Ok(addr) => addr,
        Err(e) => {
            stop_all(&mut procs);
            return Err(e);
        }
    };

    let key = &cluster.access_keys[0];
    let admin = cluster.admin_key.as_ref().context("the cluster file has no admin key")?;
    let catalog = cluster.catalog_replicas.iter().map(|r| r.addr.as_str()).collect::<Vec<_>>().join(",");
    let endpoint = format!("{}://{s3_addr}", if tls.is_some() { "https" } else { "http" });
    let env = format!(
        "# written by `sillok dev`: source it with `. {}`\nexport S3_ENDPOINT={endpoint}\nexport AWS_ENDPOINT_URL={endpoint}\nexport AWS_REGION={}\nexport AWS_DEFAULT_REGION={}\nexport AWS_ACCESS_KEY_ID={}\nexport AWS_SECRET_ACCESS_KEY={}\nexport SILLOK_CATALOG={catalog}\nexport SILLOK_ADMIN_KEY_ID={}\nexport SILLOK_ADMIN_SECRET={}\n",
        data.join("cluster.env").display(),
        cluster.region,
        cluster.region,
        key.access_key_id,
        key.secret_access_key,
        admin.access_key_id,
        admin.secret_access_key
    );
    let gateway_ops = ops.lines().find_map(|l| l.strip_prefix("gateway - ")).unwrap_or_default();
    let mut env = format!("{env}export SILLOK_GATEWAY_OPS=http://{gateway_ops}\n");
    if let Some(t) = &tls {
        env.push_str(&format!("export AWS_CA_BUNDLE={}\n", t.ca.display()));
    }
    if a.internal.insecure_internal_http {
        env.push_str("export SILLOK_INSECURE_INTERNAL_HTTP=true\n");
    } else {
        env.push_str(&format!("export SILLOK_INTERNAL_TLS={}\n", data.join("tls").join("admin").display()));
    }
    write_atomic(&data.join("ops.txt"), ops.as_bytes())?;
    // The keys' secrets: owner only, like the folder.
    super::write_private(&data.join("cluster.env"), env.as_bytes())
        .with_context(|| format!("cannot write {}", data.join("cluster.env").display()))?;
    let sites: Vec<String> = cluster.map.topology.sites.iter().map(|s| s.id.clone()).collect();
    println!(
        "Sillok dev cluster is up: {} sites x {} nodes, EC {}, {} placement groups\n  S3 endpoint: {endpoint}\n  region:      {}\n  access key:  {}\n  secret key:  {}\n  catalog:     {catalog}  (`sillok admin status` after sourcing the env file)\n  env file:    {}  (`. {}` sets AWS_*, S3_ENDPOINT and SILLOK_*)\n  site pids:   {}/sites/{{{}}}.pids\n  logs:        {}/logs/\nPress Ctrl-C to stop.",
        sites.len(),
        cluster.map.topology.nodes.len() / sites.len().max(1),
        cluster.map.profile,
        cluster.map.pg_count,
        cluster.region,
        key.access_key_id,
        key.secret_access_key,
        data.join("cluster.env").display(),
        data.join("cluster.env").display(),
        data.display(),
        sites.join(","),
        data.display(),
    );
    if let Some(t) = &tls {
        println!(
            "TLS: the S3 endpoint is HTTPS, with a certificate from this cluster's own CA,\n  {ca}\n\
             Point clients at that CA (after `. {env}`, which sets AWS_CA_BUNDLE to it):\n  \
             aws cli:  aws s3 ls            (reads AWS_CA_BUNDLE; or --ca-bundle {ca})\n  \
             boto3:    boto3.client(\"s3\")   (reads AWS_CA_BUNDLE; or verify=\"{ca}\")\n  \
             Rust SDK: give its HTTP client the CA: aws_smithy_http_client::Builder::new()\n            \
             .tls_provider(Provider::Rustls(CryptoMode::AwsLc)).tls_context(TlsContext::builder()\n            \
             .with_trust_store(TrustStore::empty().with_pem_certificate(std::fs::read(\"{ca}\")?)).build()?)\n            \
             .build_https(), then aws_sdk_s3::config::Builder::http_client(...)\n  \
             curl:     curl --cacert {ca} ...\n\
             Certificate reload: replace {cert} and {key}, then `kill -HUP $(cat {pid})` (or wait 2 s).",
            ca = t.ca.display(),
            env = data.join("cluster.env").display(),
            cert = t.cert.display(),
            key = t.key.display(),
            pid = data.join("gateway.pid").display(),
        );
    }
    std::io::stdout().flush().ok();

    let mut signal = std::pin::pin!(super::shutdown_signal());
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = &mut signal => break,
            _ = tick.tick() => report_exits(&mut procs),
        }
    }
    eprintln!("stopping the dev cluster...");
    stop_all(&mut procs);
    let _ = std::fs::remove_file(data.join("cluster.env"));
    let _ = std::fs::remove_file(data.join("ops.txt"));
    eprintln!("stopped");
    Ok(())
}

/// A free loopback port for a node or a catalog replica (their ports go into
/// the cluster file before they start): reserved machine-wide, see
/// `crate::dev_ports` (src/dev_ports.rs).
fn free_port() -> anyhow::Result<u16> {
    crate::dev_ports::reserve().context("cannot find a free port")
}

/// The address the gateway is told to bind: port 0 lets it pick one (it
/// writes what it bound to `gateway.addr`, so no other process can take the
/// port in between).
fn pick_gateway_addr(port: Option<u16>) -> SocketAddr {
    let port = match port {
        Some(p) => p,
        None if TcpListener::bind("127.0.0.1:9000").is_ok() => 9000,
        None => 0,
    };
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn new_cluster(a: &DevArgs) -> anyhow::Result<ClusterFile> {
    if a.sites == 0 || a.sites > 26 || a.nodes_per_site == 0 {
        bail!("--sites must be 1 to 26 and --nodes-per-site at least 1");
    }
    let mut topology = Topology::default();
    let mut id = 1;
    for s in 0..a.sites {
        let site = format!("site-{}", (b'a' + s as u8) as char);
        topology.sites.push(Site { id: site.clone() });
        for _ in 0..a.nodes_per_site {
            topology.nodes.push(Node {
                id: NodeId(id),
                site: site.clone(),
                addr: format!("127.0.0.1:{}", free_port()?),
                weight: 1.0,
                state: NodeState::Up,
            });
            id += 1;
        }
    }
    let map =
        PlacementMap::new(topology, a.profile, a.pgs).context("cannot place the EC profile on this dev topology")?;
    let mut c = ClusterFile {
        cluster_secret: super::random_hex(32),
        region: "sillok-dev".into(),
        access_keys: vec![AccessKey {
            access_key_id: format!("SILLOK{}", super::random_hex(7).to_uppercase()),
            secret_access_key: super::random_hex(20),
        }],
        map,
        catalog_replicas: Vec::new(),
        admin_key: None,
        next_cluster_secret: None,
        previous_cluster_secret: None,
    };
    add_catalog(&mut c)?;
    Ok(c)
}

/// One catalog replica per site on a free loopback port, and an admin key.
fn add_catalog(c: &mut ClusterFile) -> anyhow::Result<()> {
    if c.catalog_replicas.is_empty() {
        for (i, site) in c.map.topology.sites.iter().enumerate() {
            c.catalog_replicas.push(CatalogReplica {
                id: i as u64 + 1,
                site: site.id.clone(),
                addr: format!("127.0.0.1:{}", free_port()?),
            });
        }
    }
    if c.admin_key.is_none() {
        c.admin_key = Some(super::new_admin_key());
    }
    Ok(())
}

/// Waits until the catalog has a leader and holds the cluster file's map.
async fn wait_seeded(cluster: &ClusterFile) -> anyhow::Result<()> {
    let addrs = cluster.catalog_replicas.iter().map(|r| r.addr.clone()).collect();
    let timeouts = ClientTimeouts { total: Duration::from_secs(5), ..Default::default() };
    let client = CatalogClient::new(addrs, Signer::new(&cluster.cluster_secret), timeouts)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.status().await {
            Ok(s) if s.bootstrapped && s.leader.is_some() => return Ok(()),
            Ok(_) | Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok(s) => bail!("the catalog has no seeded leader after 60 s (leader {:?})", s.leader),
            Err(e) => bail!("the catalog does not answer after 60 s: {e}"),
        }
    }
}

#[allow(clippy::too_many_arguments)] // each is one part of the cluster being started
fn start_replicas(
    exe: &Path,
    data: &Path,
    cluster: &ClusterFile,
    cluster_path: &Path,
    extra: &[String],
    procs: &mut Vec<Proc>,
    site_files: &mut Vec<SiteFiles>,
    ops: &mut String,
) -> anyhow::Result<()> {
    for r in &cluster.catalog_replicas {
        let dir = data.join("sites").join(&r.site).join(format!("catalog-{}", r.id));
        let mut args = vec![
            "catalog".into(),
            "--cluster".into(),
            cluster_path.display().to_string(),
            "--id".into(),
            r.id.to_string(),
            "--data".into(),
            dir.display().to_string(),
        ];
        for default in DEV_DETECTOR {
            let flag = default.split('=').next().unwrap_or(default);
            if !extra.iter().any(|a| a.split('=').next() == Some(flag)) {
                args.push(default.to_string());
            }
        }
        args.extend(extra.iter().cloned());
        args.extend(ops_listen(ops, "replica", &r.id.to_string())?);
        let name = format!("{}-catalog-{}", r.site, r.id);
        let child = spawn(exe, &args, &data.join("logs").join(format!("{name}.log")))?;
        add_pid(site_files, &r.site, "replica", r.id, child.id());
        procs.push(Proc { name, child, exited: false });
    }
    Ok(())
}

/// What `sites/<site>.pids` and `sites/<site>.procs` will hold.
struct SiteFiles {
    site: String,
    pids: String,
    procs: String,
}

fn add_pid(site_files: &mut Vec<SiteFiles>, site: &str, role: &str, id: u64, pid: u32) {
    let i = match site_files.iter().position(|f| f.site == site) {
        Some(i) => i,
        None => {
            site_files.push(SiteFiles { site: site.to_string(), pids: String::new(), procs: String::new() });
            site_files.len() - 1
        }
    };
    site_files[i].pids.push_str(&format!("{pid}\n"));
    site_files[i].procs.push_str(&format!("{role} {id} {pid}\n"));
}

/// `--insecure-internal-http` for every child (set by `run` from its own).
static INSECURE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--log-format json` for every child (set by `run` from the global flag).
static LOG_JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--ops-listen` on a reserved loopback port for one process, noted in
/// `ops` as its `ops.txt` line (`role id address`).
fn ops_listen(ops: &mut String, role: &str, id: &str) -> anyhow::Result<[String; 2]> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    ops.push_str(&format!("{role} {id} {addr}\n"));
    Ok(["--ops-listen".into(), addr])
}

fn spawn(exe: &Path, args: &[String], log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(exe);
    if LOG_JSON.load(std::sync::atomic::Ordering::Relaxed) {
        cmd.args(["--log-format", "json"]);
    }
    cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    if INSECURE.load(std::sync::atomic::Ordering::Relaxed) {
        cmd.arg("--insecure-internal-http");
    }
    // The command line built here is the child's whole configuration: no
    // SILLOK_<FLAG> or SILLOK_CONFIG of this shell (say, a sourced
    // cluster.env of another cluster) reaches it. SILLOK_LOG does.
    for var in super::config::flag_env_vars() {
        cmd.env_remove(var);
    }
    // SAFETY: prctl is async-signal-safe and touches only the calling (child) process.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().with_context(|| format!("cannot start {} {}", exe.display(), args.join(" ")))
}

/// The failure detector's pace in a dev cluster: a silent node is down after
/// 6 s and out after a minute (a whole silent site after 5 minutes).
const DEV_DETECTOR: &[&str] = &["--down-after-ms=6000", "--out-after-ms=60000", "--site-out-after-ms=300000"];

/// The collector's and anti-entropy's pace in a dev cluster: within a minute.
const DEV_UPKEEP: &[&str] = &[
    "--collect-grace-ms=30000",
    "--tombstone-horizon-ms=60000",
    "--collect-every-ms=5000",
    "--sync-every-ms=5000",
    "--rebuild-every-ms=3000",
    "--scrub-every-ms=600000",
];

#[allow(clippy::too_many_arguments)] // each is one part of the cluster being started
fn start_nodes(
    exe: &Path,
    data: &Path,
    cluster: &ClusterFile,
    cluster_path: &Path,
    node_args: &[String],
    procs: &mut Vec<Proc>,
    site_files: &mut Vec<SiteFiles>,
    ops: &mut String,
) -> anyhow::Result<()> {
    let cluster_arg = cluster_path.display().to_string();
    std::fs::create_dir_all(data.join("sites"))?;
    for site in &cluster.map.topology.sites {
        for node in cluster.map.topology.nodes_in(&site.id) {
            let dir = data.join("sites").join(&site.id).join(format!("node-{}", node.id.0));
            // A dev cluster collects and purges within a minute, so that
            // drills and tests see the collector work; `--node-arg` overrides.
            let mut args: Vec<String> = vec![
                "node".into(),
                "--cluster".into(),
                cluster_arg.clone(),
                "--id".into(),
                node.id.0.to_string(),
                "--data".into(),
                dir.display().to_string(),
            ];
            for default in DEV_UPKEEP {
                let flag = default.split('=').next().unwrap_or(default);
                if !node_args.iter().any(|a| a.split('=').next() == Some(flag)) {
                    args.push(default.to_string());
                }
            }
            args.extend(node_args.iter().cloned());
            args.extend(ops_listen(ops, "node", &node.id.0.to_string())?);
            let name = format!("{}-node-{}", site.id, node.id.0);
            let child = spawn(exe, &args, &data.join("logs").join(format!("{name}.log")))?;
            add_pid(site_files, &site.id, "node", node.id.0.into(), child.id());
            procs.push(Proc { name, child, exited: false });
        }
    }
    for f in site_files.iter() {
        write_atomic(&data.join("sites").join(format!("{}.pids", f.site)), f.pids.as_bytes())?;
        write_atomic(&data.join("sites").join(format!("{}.procs", f.site)), f.procs.as_bytes())?;
    }
    Ok(())
}

/// The dev cluster's TLS files (`--tls`).
struct DevTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// Makes `<data>/tls/` (0700): keeps the dev CA if there is one (else makes
/// it), and issues the gateway a new certificate for the loopback names.
fn dev_tls(data: &Path) -> anyhow::Result<DevTls> {
    let dir = data.join("tls");
    super::private_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (ca_cert, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    let ca = if ca_cert.exists() && ca_key.exists() {
        let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()));
        sillok_tls::Ca::from_pem(&read(&ca_cert)?, &read(&ca_key)?).with_context(|| {
            format!("the dev CA in {} cannot be used (delete the folder to make a new one)", dir.display())
        })?
    } else {
        let ca = sillok_tls::Ca::generate("sillok dev CA")?;
        ca.save(&ca_cert, &ca_key)?;
        ca
    };
    let spec = sillok_tls::LeafSpec::new("sillok dev gateway")
        .ip(std::net::Ipv4Addr::LOCALHOST.into())
        .ip(std::net::Ipv6Addr::LOCALHOST.into())
        .dns("localhost")
        .dns("*.localhost")
        .valid_days(365);
    let (cert, key) = (dir.join("gateway.crt"), dir.join("gateway.key"));
    ca.issue(&spec)?.save(&cert, &key)?;
    Ok(DevTls { ca: ca_cert, cert, key })
}

/// The gateway's arguments: TLS under `--tls`, the lifecycle flags of
/// `sillok dev` (unless `--gateway-arg` names them itself), then every
/// `--gateway-arg`.
fn gateway_args(a: &DevArgs, tls: Option<&DevTls>) -> Vec<String> {
    let named = |flag: &str| a.gateway_args.iter().any(|g| g.split('=').next() == Some(flag));
    let mut args = Vec::new();
    if let Some(t) = tls {
        args.push(format!("--tls-cert={}", t.cert.display()));
        args.push(format!("--tls-key={}", t.key.display()));
    }
    if !named("--lifecycle-interval-s") {
        args.push(format!("--lifecycle-interval-s={}", a.lifecycle_interval_s));
    }
    if let Some(day) = a.lifecycle_day_s.filter(|_| !named("--lifecycle-day-s")) {
        args.push(format!("--lifecycle-day-s={day}"));
    }
    args.extend(a.gateway_args.iter().cloned());
    args
}

fn start_gateway(
    exe: &Path,
    data: &Path,
    cluster_path: &Path,
    s3_addr: SocketAddr,
    gateway_args: &[String],
    procs: &mut Vec<Proc>,
    ops: &mut String,
) -> anyhow::Result<()> {
    let cluster_arg = cluster_path.display().to_string();
    let _ = std::fs::remove_file(data.join("gateway.addr"));
    let mut args = vec![
        "gateway".into(),
        "--cluster".into(),
        cluster_arg,
        "--data".into(),
        data.join("gateway").display().to_string(),
        "--listen".into(),
        s3_addr.to_string(),
        "--addr-file".into(),
        data.join("gateway.addr").display().to_string(),
    ];
    // Virtual-host style works locally too: http://<bucket>.localhost:<port>/<key>.
    args.extend(["--domain".into(), "localhost".into()]);
    args.extend(gateway_args.iter().cloned());
    args.extend(ops_listen(ops, "gateway", "-")?);
    let child = spawn(exe, &args, &data.join("logs").join("gateway.log"))?;
    write_atomic(&data.join("gateway.pid"), format!("{}\n", child.id()).as_bytes())?;
    procs.push(Proc { name: "gateway".into(), child, exited: false });
    Ok(())
}

/// Waits for the gateway to write the address it bound.
fn wait_gateway_addr(data: &Path, procs: &mut [Proc]) -> anyhow::Result<SocketAddr> {
    let path = data.join("gateway.addr");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(addr) = text.trim().parse()
        {
            return Ok(addr);
        }
        none_exited(procs, data)?;
        if Instant::now() > deadline {
            bail!("the gateway has not bound its port after 90 s; see {}/logs/gateway.log", data.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An error naming the first started process that has exited.
fn none_exited(procs: &mut [Proc], data: &Path) -> anyhow::Result<()> {
    for p in procs.iter_mut() {
        if let Ok(Some(status)) = p.child.try_wait() {
            bail!("{} exited during start-up ({status}); see {}/logs/{}.log", p.name, data.display(), p.name);
        }
    }
    Ok(())
}

fn wait_listening(addrs: &[(String, SocketAddr)], procs: &mut [Proc], data: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for (name, addr) in addrs {
        loop {
            if TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            none_exited(procs, data)?;
            if Instant::now() > deadline {
                bail!("{name} is not listening on {addr} after 30 s; see the logs in {}/logs/", data.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

fn report_exits(procs: &mut [Proc]) {
    for p in procs.iter_mut().filter(|p| !p.exited) {
        if let Ok(Some(status)) = p.child.try_wait() {
            p.exited = true;
            eprintln!("{} (pid {}) exited: {status}", p.name, p.child.id());
        }
    }
}

fn stop_all(procs: &mut [Proc]) {
    for p in procs.iter_mut() {
        if p.child.try_wait().ok().flatten().is_none() {
            // SAFETY: kill(2) on a PID we spawned and have not reaped.
            unsafe {
                libc::kill(p.child.id() as i32, libc::SIGTERM);
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for p in procs.iter_mut() {
        loop {
            match p.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    let _ = p.child.kill();
                    let _ = p.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
