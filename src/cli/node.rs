//! `sillok node`: serve one storage node of the cluster file.

use std::path::PathBuf;

use anyhow::{Context, bail};
use sillok_placement::{ClusterFile, NodeId};
use sillok_storage_node::server::{NodeConfig, serve};

#[derive(clap::Args)]
pub struct NodeArgs {
    /// The cluster file (map, keys, cluster secret).
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
}

pub async fn run(a: NodeArgs) -> anyhow::Result<()> {
    let file = ClusterFile::load(&a.cluster)?;
    let Some(node) = file.map.topology.node(NodeId(a.id)) else {
        bail!(
            "node {} is not in the cluster file {}; its nodes are {:?}",
            a.id,
            a.cluster.display(),
            file.map.topology.nodes.iter().map(|n| n.id.0).collect::<Vec<_>>()
        );
    };
    let listen = match a.listen {
        Some(l) => l,
        None => node
            .addr
            .parse()
            .with_context(|| format!("node {} has address {:?}, which is not host:port", a.id, node.addr))?,
    };
    std::fs::create_dir_all(&a.data)
        .with_context(|| format!("cannot create the data directory {}", a.data.display()))?;
    let config = NodeConfig { id: NodeId(a.id), listen, data_dir: a.data, cluster_secret: file.cluster_secret.clone() };
    tracing::info!(id = a.id, site = %node.site, %listen, "storage node starting");
    serve(config, super::shutdown_signal()).await.context("storage node failed")?;
    Ok(())
}
