//! `sillok init`: make a cluster file from a topology file, for real deployments
//! (`sillok dev` does the same for loopback). The cluster file holds the
//! placement map, the first S3 access key, the first admin key, the catalog
//! replicas (`--replica SITE=HOST:PORT`, one per site, ids 1, 2, 3... in the
//! order given) and the cluster secret: copy it to every host, readable only
//! by the service user.

use std::path::PathBuf;

use anyhow::{Context, bail};
use sillok_placement::{AccessKey, CatalogReplica, ClusterFile, EcProfile, PlacementMap, Topology};

#[derive(clap::Args)]
pub struct InitArgs {
    /// JSON topology: {"sites": [{"id": ...}], "nodes": [{"id", "site", "addr", "weight"}]}.
    #[arg(long)]
    pub topology: PathBuf,
    /// Where to write the cluster file (refuses to overwrite).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "4+2")]
    pub profile: EcProfile,
    #[arg(long, default_value_t = 1024)]
    pub pgs: u32,
    /// The S3 region the gateways answer as.
    #[arg(long, default_value = "sillok")]
    pub region: String,
    /// A catalog replica, `SITE=HOST:PORT`; give one per site (3 or 5 in all).
    #[arg(long = "replica")]
    pub replicas: Vec<String>,
}

pub fn run(a: InitArgs) -> anyhow::Result<()> {
    if a.out.exists() {
        bail!(
            "{} exists; remove it first if you really mean to make a new cluster (new secret, new keys)",
            a.out.display()
        );
    }
    let text = std::fs::read_to_string(&a.topology).with_context(|| format!("cannot read {}", a.topology.display()))?;
    let topology: Topology =
        serde_json::from_str(&text).with_context(|| format!("{} is not a valid topology", a.topology.display()))?;
    let mut catalog_replicas = Vec::new();
    for (i, r) in a.replicas.iter().enumerate() {
        let Some((site, addr)) = r.split_once('=') else {
            bail!("--replica {r:?}: expected SITE=HOST:PORT, for example site-a=10.0.1.5:7400");
        };
        if !topology.sites.iter().any(|s| s.id == site) {
            bail!("--replica {r:?}: site {site} is not in the topology");
        }
        catalog_replicas.push(CatalogReplica { id: i as u64 + 1, site: site.into(), addr: addr.into() });
    }
    if catalog_replicas.len() % 2 == 0 && !catalog_replicas.is_empty() {
        bail!(
            "give an odd number of catalog replicas (3 or 5): with {} a split vote can stall the catalog",
            catalog_replicas.len()
        );
    }
    let map = PlacementMap::new(topology, a.profile, a.pgs)?;
    let file = ClusterFile {
        cluster_secret: super::random_hex(32),
        region: a.region,
        access_keys: vec![AccessKey {
            access_key_id: format!("SILLOK{}", super::random_hex(7).to_uppercase()),
            secret_access_key: super::random_hex(20),
        }],
        map,
        catalog_replicas,
        admin_key: Some(super::new_admin_key()),
        next_cluster_secret: None,
        previous_cluster_secret: None,
    };
    super::save_cluster_file(&file, &a.out)?;
    println!(
        "wrote {}: {} sites, {} nodes, EC {}, {} placement groups\nS3 access key: {}\nS3 secret key: {} (also in the file; keep it private)\nadmin key:     {} (secret in the file)\ncatalog:       {}",
        a.out.display(),
        file.map.topology.sites.len(),
        file.map.topology.nodes.len(),
        file.map.profile,
        file.map.pg_count,
        file.access_keys[0].access_key_id,
        file.access_keys[0].secret_access_key,
        file.admin_key.as_ref().map(|k| k.access_key_id.as_str()).unwrap_or("-"),
        if file.catalog_replicas.is_empty() {
            "no replicas given (--replica SITE=HOST:PORT)".to_string()
        } else {
            file.catalog_replicas.iter().map(|r| format!("{}={}", r.site, r.addr)).collect::<Vec<_>>().join(", ")
        }
    );
    Ok(())
}
