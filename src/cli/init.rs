//! `sillok init`: make a cluster file from a topology file, for real deployments
//! (`sillok dev` does the same for loopback). The cluster file holds the
//! placement map, the first S3 access key, the first admin key, the catalog
//! replicas (`--replica SITE=HOST:PORT`, one per site, ids 1, 2, 3... in the
//! order given) and the cluster secret: copy it to every host, readable only
//! by the service user.
//!
//! Beside it, the certificates of internal traffic (mutual TLS, see
//! `super::internal_tls`): the cluster CA in `ca/` (its key stays with the
//! operator: no process needs it) and one identity per process in
//! `tls/<name>/` (`node-<id>`, `catalog-<id>`, `gateway`, `admin`), each
//! for its host, named by the addresses in the topology and `--replica`.
//!
//! It refuses a topology that could not survive the loss of a site
//! ([`check_site_loss`]): fewer than three sites, catalog replicas that are
//! missing or not spread one per site, an EC profile the sites cannot carry
//! with at most m shards of a PG on any one site.

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
    /// Erasure-coding profile, K+M (at most M shards of a PG on one site).
    #[arg(long, default_value = "4+2")]
    pub profile: EcProfile,
    /// Number of placement groups (a power of two).
    #[arg(long, default_value_t = 1024)]
    pub pgs: u32,
    /// The S3 region the gateways answer as.
    #[arg(long, default_value = "sillok")]
    pub region: String,
    /// A catalog replica, `SITE=HOST:PORT` (repeat, or comma-separated): one
    /// per site with 3 or 5 sites; 3 on distinct sites with 4 sites; 3 or 5
    /// on distinct sites with more.
    #[arg(long = "replica", value_delimiter = ',')]
    pub replicas: Vec<String>,
}

pub fn run(a: InitArgs) -> anyhow::Result<()> {
    if a.out.exists() {
        bail!(
            "{} exists; remove it first if you really mean to make a new cluster (new secret, new keys)",
            a.out.display()
        );
    }
    let dir = a.out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    for taken in [dir.join("ca"), dir.join("tls")] {
        if taken.exists() {
            bail!(
                "{} exists (certificates of another cluster?); write the new cluster file into another directory",
                taken.display()
            );
        }
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
    for warning in check_site_loss(&topology, a.profile, &catalog_replicas)? {
        eprintln!("warning: {warning}");
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
    let made = super::internal_tls::issue_all(dir, &file)?;
    println!(
        "wrote the cluster CA to {} (keep ca-key.pem with the operator, off the hosts) and {} process identities \
         under {} (copy each host's to it, beside the cluster file)",
        dir.join("ca").display(),
        made.len(),
        dir.join("tls").display()
    );
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

/// Refuses (with what to change) a topology, profile and replica set that
/// could not survive the loss of any one site; returns warnings for what it
/// survives in a degraded way.
///
/// - at least 3 sites, each with a node that can hold shards;
/// - the profile: at most m shards of a PG on one site (so a lost site
///   leaves at least k), which needs enough sites and, per site, nodes;
/// - catalog replicas, at most one per site, an odd number (a majority of
///   them must outlive any site): one per site with 3 or 5 sites, 3 with 4
///   sites (4 voters survive no more than 3 do, and can split a vote),
///   3 or 5 with more than 5 sites.
///
/// Warns when, with some site lost, the other sites have fewer than k+m
/// nodes: the lost shards cannot then all be rebuilt until it returns.
pub fn check_site_loss(
    topology: &Topology,
    profile: EcProfile,
    replicas: &[CatalogReplica],
) -> anyhow::Result<Vec<String>> {
    let (k, m, width) = (profile.k as usize, profile.m as usize, profile.width());
    let sites = topology.sites.len();
    if sites < 3 {
        bail!(
            "the topology has {sites} site(s); a cluster that survives the loss of a site needs at least 3 \
             (add sites to the topology file)"
        );
    }
    let in_service = |site: &str| topology.nodes_in(site).filter(|n| n.effective_weight() > 0.0).count();
    for s in &topology.sites {
        if in_service(&s.id) == 0 {
            bail!("site {} has no node that can hold shards: give it nodes in the topology file, or remove it", s.id);
        }
    }
    if m == 0 || sites * m < width {
        bail!(
            "EC {profile} cannot survive the loss of a site on {sites} sites: a site may hold at most m={m} shards of \
             a PG (so that a lost site leaves k={k}), and {sites} sites hold only {} of its {width}. Use at least {} \
             sites, or a profile with a larger m (e.g. {k}+{})",
            sites * m,
            if m == 0 { "more".to_string() } else { width.div_ceil(m).to_string() },
            k.div_ceil(sites - 1).max(1)
        );
    }
    let placeable: usize = topology.sites.iter().map(|s| in_service(&s.id).min(m)).sum();
    if placeable < width {
        let short: Vec<String> = topology
            .sites
            .iter()
            .filter(|s| in_service(&s.id) < m)
            .map(|s| format!("{} has {}", s.id, in_service(&s.id)))
            .collect();
        bail!(
            "EC {profile} needs {width} shards of a PG on distinct nodes, at most m={m} per site, and these sites have \
             fewer than {m} nodes: {}. Add nodes to them",
            short.join(", ")
        );
    }
    if replicas.is_empty() {
        bail!(
            "no catalog replicas: name one per site with --replica SITE=HOST:PORT (e.g. --replica {}=10.0.1.5:7400)",
            topology.sites[0].id
        );
    }
    let mut per_site: std::collections::BTreeMap<&str, usize> = Default::default();
    for r in replicas {
        *per_site.entry(r.site.as_str()).or_default() += 1;
    }
    if let Some((site, n)) = per_site.iter().find(|(_, n)| **n > 1) {
        bail!("{n} catalog replicas on site {site}: losing it would lose them all; give each replica its own site");
    }
    let wanted = match sites {
        3 | 5 => format!("one per site ({sites})"),
        4 => "3, on 3 of the 4 sites (4 voters survive no more than 3 do, and can split a vote)".to_string(),
        _ => "3 or 5, on distinct sites".to_string(),
    };
    let ok = match sites {
        3 | 5 => replicas.len() == sites,
        4 => replicas.len() == 3,
        _ => replicas.len() == 3 || replicas.len() == 5,
    };
    if !ok {
        let missing: Vec<&str> =
            topology.sites.iter().map(|s| s.id.as_str()).filter(|s| !per_site.contains_key(s)).collect();
        bail!(
            "{} catalog replica(s) on {sites} sites; give {wanted} with --replica SITE=HOST:PORT{}",
            replicas.len(),
            if matches!(sites, 3 | 5) && !missing.is_empty() {
                format!(" (none yet on {})", missing.join(", "))
            } else {
                String::new()
            }
        );
    }
    let total: usize = topology.sites.iter().map(|s| in_service(&s.id)).sum();
    let mut warnings = Vec::new();
    if let Some(s) = topology.sites.iter().find(|s| total - in_service(&s.id) < width) {
        warnings.push(format!(
            "with site {} lost, the other sites have {} nodes, fewer than the {width} an EC {profile} PG needs: \
             objects stay readable, but the lost shards cannot all be rebuilt until it returns (add nodes for that)",
            s.id,
            total - in_service(&s.id)
        ));
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use sillok_placement::{Node, NodeId, NodeState, Site};

    use super::*;

    /// `sites` sites with `nodes` nodes each.
    fn topo(sites: usize, nodes: usize) -> Topology {
        let mut t = Topology::default();
        for s in 0..sites {
            t.sites.push(Site { id: format!("site-{s}") });
            for i in 0..nodes {
                let id = (s * nodes + i + 1) as u32;
                t.nodes.push(Node {
                    id: NodeId(id),
                    site: format!("site-{s}"),
                    addr: format!("10.0.{s}.{i}:7100"),
                    weight: 1.0,
                    state: NodeState::Up,
                });
            }
        }
        t
    }

    fn replicas(sites: &[usize]) -> Vec<CatalogReplica> {
        sites
            .iter()
            .enumerate()
            .map(|(i, s)| CatalogReplica {
                id: i as u64 + 1,
                site: format!("site-{s}"),
                addr: format!("10.0.{s}.9:7400"),
            })
            .collect()
    }

    fn p(s: &str) -> EcProfile {
        s.parse().unwrap()
    }

    fn refused(t: &Topology, profile: &str, r: &[CatalogReplica]) -> String {
        match check_site_loss(t, p(profile), r) {
            Ok(w) => panic!("accepted (warnings {w:?})"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn three_sites_one_replica_each_is_accepted() {
        let w = check_site_loss(&topo(3, 3), p("4+2"), &replicas(&[0, 1, 2])).unwrap();
        assert!(w.is_empty(), "{w:?}");
        // Five sites, one each; the example topology's 3 x 2 (readable, not rebuildable, after a site loss).
        assert!(check_site_loss(&topo(5, 2), p("4+2"), &replicas(&[0, 1, 2, 3, 4])).unwrap().is_empty());
        let w = check_site_loss(&topo(3, 2), p("4+2"), &replicas(&[0, 1, 2])).unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("cannot all be rebuilt"), "{w:?}");
    }

    #[test]
    fn fewer_than_three_sites_is_refused() {
        let e = refused(&topo(2, 4), "4+2", &replicas(&[0, 1]));
        assert!(e.contains("2 site(s)") && e.contains("at least 3"), "{e}");
    }

    #[test]
    fn a_site_without_nodes_is_refused() {
        let mut t = topo(3, 3);
        t.nodes.retain(|n| n.site != "site-2");
        let e = refused(&t, "4+2", &replicas(&[0, 1, 2]));
        assert!(e.contains("site site-2 has no node"), "{e}");
    }

    #[test]
    fn a_profile_the_sites_cannot_carry_is_refused() {
        // 6+2 on 3 sites: at most 2 per site holds 6 of 8.
        let e = refused(&topo(3, 4), "6+2", &replicas(&[0, 1, 2]));
        assert!(e.contains("cannot survive the loss of a site") && e.contains("at least 4 sites"), "{e}");
        // 4+2 on 3 sites, but one site has a single node.
        let mut t = topo(3, 3);
        t.nodes.retain(|n| !(n.site == "site-1" && n.id.0 != 4));
        let e = refused(&t, "4+2", &replicas(&[0, 1, 2]));
        assert!(e.contains("site-1 has 1") && e.contains("Add nodes"), "{e}");
    }

    #[test]
    fn replicas_missing_or_not_one_per_site_are_refused() {
        let t = topo(3, 3);
        let e = refused(&t, "4+2", &[]);
        assert!(e.contains("no catalog replicas") && e.contains("--replica"), "{e}");
        let e = refused(&t, "4+2", &replicas(&[0, 1]));
        assert!(e.contains("one per site (3)") && e.contains("none yet on site-2"), "{e}");
        let e = refused(&t, "4+2", &replicas(&[0, 0, 1]));
        assert!(e.contains("2 catalog replicas on site site-0"), "{e}");
        let e = refused(&t, "4+2", &replicas(&[0]));
        assert!(e.contains("1 catalog replica(s)"), "{e}");
        // Four sites: three replicas, not four.
        let e = refused(&topo(4, 2), "4+2", &replicas(&[0, 1, 2, 3]));
        assert!(e.contains("3, on 3 of the 4 sites"), "{e}");
        assert!(check_site_loss(&topo(4, 2), p("4+2"), &replicas(&[0, 1, 3])).is_ok());
        // More than five sites: 3 or 5.
        let e = refused(&topo(7, 1), "4+2", &replicas(&[0, 1, 2, 3]));
        assert!(e.contains("3 or 5, on distinct sites"), "{e}");
        assert!(check_site_loss(&topo(7, 1), p("4+3"), &replicas(&[0, 2, 4, 5, 6])).is_ok());
    }
}
