//! The libraries' in-process integration tests, one module per library
//! (see `src/lib.rs` for why they live in this package).

/// Machine-wide loopback port reservations: dev-only code that lives with
/// `sillok dev` (src/dev_ports.rs) and is compiled into this target as is.
#[path = "../../src/dev_ports.rs"]
mod ports;

mod catalog_replicas;
mod gateway_read_index;
mod storage_node;

use sillok_placement::{EcProfile, Node, NodeId, NodeState, PlacementMap, Site, Topology};

/// The map the catalog tests seed: 3 sites of 2 nodes (ids 1 to 6, none
/// listening), 4+2, 64 PGs.
fn six_node_map() -> PlacementMap {
    let mut t = Topology::default();
    for (i, s) in ["site-a", "site-b", "site-c"].iter().enumerate() {
        t.sites.push(Site { id: s.to_string() });
        for j in 0..2 {
            let id = (i * 2 + j + 1) as u32;
            t.nodes.push(Node {
                id: NodeId(id),
                site: s.to_string(),
                addr: format!("127.0.0.1:{}", 20000 + id),
                weight: 1.0,
                state: NodeState::Up,
            });
        }
    }
    PlacementMap::new(t, EcProfile::default(), 64).unwrap()
}

/// Waits (up to 30 s) until the catalog that `c` talks to is seeded and has
/// a leader; the catalog and the gateway tests both start one.
async fn wait_seeded(c: &sillok_catalog::CatalogClient) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(s) = c.status().await
            && s.bootstrapped
            && s.leader.is_some()
        {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "catalog not seeded");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
