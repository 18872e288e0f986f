//! Errors of the placement crate: every refusal says what is wrong and why.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PlacementError {
    /// The EC profile itself is unusable (k or m zero, too many shards...).
    #[error("invalid EC profile {profile}: {reason}")]
    InvalidProfile { profile: String, reason: String },
    /// The topology cannot hold the profile while keeping the site rule.
    #[error("EC profile {profile} cannot be placed on this topology: {reason}")]
    ProfileDoesNotFit { profile: String, reason: String },
    /// Structural problems: duplicate ids, unknown sites, zero PGs...
    #[error("invalid topology: {0}")]
    InvalidTopology(String),
    /// A map that breaks one of the invariants listed at the top of the crate.
    #[error("invalid placement map: {0}")]
    InvalidMap(String),
    /// A PG count change the map cannot make (PGs only split, into equal
    /// children the PG function can tell apart).
    #[error("cannot split the placement groups: {0}")]
    InvalidSplit(String),
    #[error("the cluster file does not parse: {0}")]
    ClusterFile(String),
}
