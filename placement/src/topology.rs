//! Sites (failure domains), the storage nodes in them, and their states.

use serde::{Deserialize, Serialize};

use crate::error::PlacementError;

/// A site's name, e.g. `seoul-1`. Sites are failure domains: a datacenter.
pub type SiteId = String;

/// A storage node's number, unique in the cluster and never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u32);

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// The life cycle of a node as the map sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// In service: holds slots, takes reads and writes.
    #[default]
    Up,
    /// Temporarily unreachable: keeps its slots (no data moves), but readers and
    /// writers avoid it.
    Down,
    /// Leaving on purpose: holds slots until they have moved, gets no new ones.
    Draining,
    /// Gone: holds no slots; its shards are rebuilt elsewhere.
    Out,
}

impl NodeState {
    /// Whether the assignment may keep slots on a node in this state.
    pub fn holds_slots(self) -> bool {
        matches!(self, NodeState::Up | NodeState::Down)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    pub site: SiteId,
    /// `host:port` of the node's internal API.
    pub addr: String,
    /// Relative capacity; slots are shared out in proportion to it.
    pub weight: f64,
    #[serde(default)]
    pub state: NodeState,
}

impl Node {
    /// The weight the assignment uses: zero for nodes that should not get slots.
    pub fn effective_weight(&self) -> f64 {
        if self.state.holds_slots() && self.weight.is_finite() && self.weight > 0.0 { self.weight } else { 0.0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Site {
    pub id: SiteId,
}

/// All sites and nodes of a cluster.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Topology {
    pub sites: Vec<Site>,
    pub nodes: Vec<Node>,
}

impl Topology {
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    pub fn nodes_in<'a>(&'a self, site: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.nodes.iter().filter(move |n| n.site == site)
    }

    /// Structural checks: unique ids, known sites, sane weights.
    pub fn check(&self) -> Result<(), PlacementError> {
        let mut seen_sites = std::collections::BTreeSet::new();
        for s in &self.sites {
            if s.id.is_empty() {
                return Err(PlacementError::InvalidTopology("a site has an empty name".into()));
            }
            if !seen_sites.insert(s.id.as_str()) {
                return Err(PlacementError::InvalidTopology(format!("site {} is listed twice", s.id)));
            }
        }
        let mut seen_nodes = std::collections::BTreeSet::new();
        for n in &self.nodes {
            if !seen_nodes.insert(n.id) {
                return Err(PlacementError::InvalidTopology(format!("node {} is listed twice", n.id)));
            }
            if !seen_sites.contains(n.site.as_str()) {
                return Err(PlacementError::InvalidTopology(format!(
                    "node {} is in site {}, which is not in the site list",
                    n.id, n.site
                )));
            }
            if !n.weight.is_finite() || n.weight < 0.0 {
                return Err(PlacementError::InvalidTopology(format!(
                    "node {} has weight {}; weights must be finite and not negative",
                    n.id, n.weight
                )));
            }
        }
        Ok(())
    }
}
