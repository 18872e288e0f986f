//! `sillok init`: make a cluster file from a topology file, for real deployments
//! (`sillok dev` does the same for loopback). The cluster file holds the
//! placement map, the first S3 access key and the cluster secret: copy it to
//! every host, readable only by the service user.

use std::path::PathBuf;

use anyhow::{Context, bail};
use sillok_placement::{AccessKey, ClusterFile, EcProfile, PlacementMap, Topology};

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
    let map = PlacementMap::new(topology, a.profile, a.pgs)?;
    let file = ClusterFile {
        cluster_secret: super::random_hex(32),
        region: a.region,
        access_keys: vec![AccessKey {
            access_key_id: format!("SILLOK{}", super::random_hex(7).to_uppercase()),
            secret_access_key: super::random_hex(20),
        }],
        map,
    };
    file.save(&a.out)?;
    println!(
        "wrote {}: {} sites, {} nodes, EC {}, {} placement groups\nS3 access key: {}\nS3 secret key: {} (also in the file; keep it private)",
        a.out.display(),
        file.map.topology.sites.len(),
        file.map.topology.nodes.len(),
        file.map.profile,
        file.map.pg_count,
        file.access_keys[0].access_key_id,
        file.access_keys[0].secret_access_key
    );
    Ok(())
}
