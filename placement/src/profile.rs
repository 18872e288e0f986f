//! Erasure-coding profiles: k data shards + m parity shards per stripe.

use serde::{Deserialize, Serialize};

use crate::error::PlacementError;

/// A Reed-Solomon profile. Any k of the k+m shards of a stripe rebuild it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EcProfile {
    pub k: u8,
    pub m: u8,
}

impl Default for EcProfile {
    /// 4+2: 1.5x raw overhead, survives the loss of any one of three sites.
    fn default() -> Self {
        EcProfile { k: 4, m: 2 }
    }
}

impl std::fmt::Display for EcProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}+{}", self.k, self.m)
    }
}

impl EcProfile {
    /// Shards per stripe (k+m), which is also the number of slots of a PG.
    pub fn width(&self) -> usize {
        self.k as usize + self.m as usize
    }

    /// How many manifest replicas a PG keeps: m+1, so that a copy survives the
    /// loss of any m nodes. Reads and writes need a majority of them, so they
    /// go on through the loss of (m+1) - (⌊(m+1)/2⌋ + 1) replicas: one of the
    /// three for 4+2 (with one replica per site, any one site), not any m.
    pub fn manifest_replicas(&self) -> usize {
        self.m as usize + 1
    }

    pub fn check(&self) -> Result<(), PlacementError> {
        let bad =
            |reason: &str| Err(PlacementError::InvalidProfile { profile: self.to_string(), reason: reason.into() });
        if self.k == 0 {
            return bad("k must be at least 1");
        }
        if self.m == 0 {
            return bad("m must be at least 1, or a single lost shard loses data");
        }
        if self.width() > 64 {
            return bad("k+m must be at most 64");
        }
        Ok(())
    }
}

impl std::str::FromStr for EcProfile {
    type Err = PlacementError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PlacementError::InvalidProfile {
            profile: s.into(),
            reason: "expected the form K+M, for example 4+2".into(),
        };
        let (k, m) = s.split_once('+').ok_or_else(err)?;
        let p = EcProfile { k: k.trim().parse().map_err(|_| err())?, m: m.trim().parse().map_err(|_| err())? };
        p.check()?;
        Ok(p)
    }
}
