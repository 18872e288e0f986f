//! The certificates of internal traffic (mutual TLS between every Sillok
//! process), as the CLI makes, finds and loads them.
//!
//! Layout, beside the cluster file (`sillok init --out DIR/cluster.json`,
//! `sillok dev --data DIR`):
//! - `DIR/ca/`: the cluster CA: `ca.pem` (public), `ca-key.pem` (its private
//!   key, 0600) and `cluster-id`. It issues certificates and is needed on no
//!   host that runs a process: the operator keeps it (`sillok cert issue`
//!   uses it for a process added later);
//! - `DIR/tls/<name>/`: one identity per process: `ca.pem`, `cert.pem`,
//!   `key.pem` (0600, in a 0700 directory), with `<name>` `node-<id>`,
//!   `catalog-<id>`, `gateway` or `admin`. Copy a host's directories to it
//!   beside its cluster file.
//!
//! Every process finds its identity at `--internal-tls DIR`, or, without
//! it, at `tls/<name>` beside its `--cluster` file; it refuses to start
//! without one unless given `--insecure-internal-http` (plain HTTP inside
//! the cluster: for loopback benchmarks only).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sillok_placement::ClusterFile;
use sillok_rpc::tls::{CA_FILE, CERT_FILE, InternalTls, KEY_FILE, Role};

/// The internal-traffic flags every process takes.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct InternalTlsArgs {
    /// This process's internal identity: a directory with `ca.pem` (the
    /// cluster CA), `cert.pem` and `key.pem` (0600). Default: `tls/<name>`
    /// beside the cluster file (`sillok init` and `sillok dev` write them).
    #[arg(long)]
    pub internal_tls: Option<PathBuf>,
    /// Speak plain HTTP to the other processes of the cluster instead of
    /// mutual TLS (every process of the cluster must be given it): for
    /// benchmarks on loopback only. Requests are still signed.
    #[arg(long)]
    pub insecure_internal_http: bool,
}

/// `tls/<name>` beside `cluster_file`.
pub fn default_dir(cluster_file: &Path, name: &str) -> PathBuf {
    cluster_file.parent().unwrap_or(Path::new(".")).join("tls").join(name)
}

/// Loads this process's identity (see the module's text) and installs it
/// for every internal client and server of the process.
pub fn install(args: &InternalTlsArgs, default: Option<PathBuf>) -> anyhow::Result<()> {
    let tls = if args.insecure_internal_http {
        tracing::warn!("internal traffic is plain HTTP (--insecure-internal-http): for loopback benchmarks only");
        None
    } else {
        let Some(dir) = args.internal_tls.clone().or(default) else {
            bail!(
                "no internal identity: pass --internal-tls DIR (a directory with ca.pem, cert.pem and key.pem, \
                 as `sillok init` writes under tls/), or --cluster FILE with tls/<name> beside it"
            );
        };
        let tls =
            InternalTls::load(&dir).with_context(|| format!("loading the internal identity in {}", dir.display()))?;
        tracing::info!(dir = %dir.display(), role = ?tls.role(), cluster_id = tls.cluster_id(), "internal traffic is mutual TLS");
        Some(tls)
    };
    if sillok_rpc::tls::install(tls).is_err() {
        bail!("the internal identity was already set in this process");
    }
    Ok(())
}

/// The identity directory name of each process of `cluster`, its role and
/// the host names its certificate must carry (those it is dialled at).
pub fn processes(cluster: &ClusterFile) -> Vec<(String, Role, Vec<String>)> {
    let host = |addr: &str| -> Vec<String> {
        match addr.rsplit_once(':') {
            Some((h, _)) => vec![h.trim_start_matches('[').trim_end_matches(']').to_string()],
            None => Vec::new(),
        }
    };
    let mut out = Vec::new();
    for r in &cluster.catalog_replicas {
        out.push((format!("catalog-{}", r.id), Role::Catalog, host(&r.addr)));
    }
    for n in &cluster.map.topology.nodes {
        out.push((format!("node-{}", n.id.0), Role::Node, host(&n.addr)));
    }
    out.push(("gateway".into(), Role::Gateway, Vec::new()));
    out.push(("admin".into(), Role::Admin, Vec::new()));
    out
}

/// Makes the cluster CA in `dir/ca` (unless there is one) and, under
/// `dir/tls`, an identity for every process of `cluster` that has none.
/// Returns the names of the identities made.
pub fn issue_all(dir: &Path, cluster: &ClusterFile) -> anyhow::Result<Vec<String>> {
    let ca_dir = dir.join("ca");
    let (ca, cluster_id) = if ca_dir.join(CA_FILE).exists() {
        load_ca(&ca_dir)?
    } else {
        let cluster_id = super::random_hex(8);
        let ca =
            sillok_tls::Ca::generate(&format!("Sillok cluster {cluster_id} CA")).context("making the cluster CA")?;
        super::private_dir(&ca_dir).with_context(|| format!("cannot create {}", ca_dir.display()))?;
        ca.save(&ca_dir.join(CA_FILE), &ca_dir.join("ca-key.pem"))
            .with_context(|| format!("cannot write the CA in {}", ca_dir.display()))?;
        std::fs::write(ca_dir.join("cluster-id"), &cluster_id)
            .with_context(|| format!("cannot write {}", ca_dir.join("cluster-id").display()))?;
        (ca, cluster_id)
    };
    let mut made = Vec::new();
    for (name, role, hosts) in processes(cluster) {
        let out = dir.join("tls").join(&name);
        if out.join(KEY_FILE).exists() {
            continue;
        }
        issue(&ca, &cluster_id, role, &name, &hosts, &out)?;
        made.push(name);
    }
    Ok(made)
}

/// The CA in `ca_dir` (`ca.pem`, `ca-key.pem`, `cluster-id`).
pub fn load_ca(ca_dir: &Path) -> anyhow::Result<(sillok_tls::Ca, String)> {
    let key_path = ca_dir.join("ca-key.pem");
    sillok_rpc::tls::check_private(&key_path)?;
    let read = |p: PathBuf| std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()));
    let cert = read(ca_dir.join(CA_FILE))?;
    let key = read(key_path)?;
    let cluster_id = read(ca_dir.join("cluster-id"))?.trim().to_string();
    let ca = sillok_tls::Ca::from_pem(&cert, &key).with_context(|| format!("the CA in {}", ca_dir.display()))?;
    Ok((ca, cluster_id))
}

/// Issues one identity into `out` (made 0700): `ca.pem`, `cert.pem`,
/// `key.pem` (0600).
pub fn issue(
    ca: &sillok_tls::Ca,
    cluster_id: &str,
    role: Role,
    name: &str,
    hosts: &[String],
    out: &Path,
) -> anyhow::Result<()> {
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    for h in hosts {
        match h.parse::<std::net::IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => dns.push(h.clone()),
        }
    }
    if hosts.iter().any(|h| h == "127.0.0.1" || h == "localhost") && !dns.iter().any(|d| d == "localhost") {
        dns.push("localhost".into());
    }
    let mut spec = sillok_tls::LeafSpec::new(format!("sillok {name}"))
        .identity(sillok_tls::Identity::new(cluster_id, role).context("the cluster id")?);
    for d in dns {
        spec = spec.dns(d);
    }
    for ip in ips {
        spec = spec.ip(ip);
    }
    let issued = ca.issue(&spec).with_context(|| format!("issuing the certificate of {name}"))?;
    super::private_dir(out).with_context(|| format!("cannot create {}", out.display()))?;
    issued
        .save(&out.join(CERT_FILE), &out.join(KEY_FILE))
        .with_context(|| format!("cannot write the identity in {}", out.display()))?;
    sillok_tls::write_public(&out.join(CA_FILE), ca.cert_pem().as_bytes())
        .with_context(|| format!("cannot write {}", out.join(CA_FILE).display()))?;
    Ok(())
}

/// `sillok cert issue`: one more identity from the cluster CA.
#[derive(clap::Args)]
pub struct CertArgs {
    #[command(subcommand)]
    pub command: CertCommand,
}

#[derive(clap::Subcommand)]
pub enum CertCommand {
    /// Issue a process's certificate and key (for a node or replica added
    /// after `sillok init`, or to replace one).
    Issue {
        /// The cluster CA's directory (`ca/` beside the cluster file).
        #[arg(long)]
        ca: PathBuf,
        /// `node`, `catalog`, `gateway` or `admin`.
        #[arg(long)]
        role: String,
        /// A host name or IP address the process is dialled at (repeat).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// The identity directory to write (refuses to overwrite a key).
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(a: CertArgs) -> anyhow::Result<()> {
    match a.command {
        CertCommand::Issue { ca, role, hosts, out } => {
            let role = match role.as_str() {
                "node" => Role::Node,
                "catalog" => Role::Catalog,
                "gateway" => Role::Gateway,
                "admin" => Role::Admin,
                other => bail!("--role {other:?}: expected node, catalog, gateway or admin"),
            };
            if out.join(KEY_FILE).exists() {
                bail!("{} exists; remove it first to replace this identity", out.join(KEY_FILE).display());
            }
            let (ca_cert, cluster_id) = load_ca(&ca)?;
            let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            issue(&ca_cert, &cluster_id, role, &name, &hosts, &out)?;
            println!("wrote {} ({role:?} of cluster {cluster_id})", out.display());
            Ok(())
        }
    }
}
