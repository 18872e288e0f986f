//! The node's clock against its peers'.
//!
//! Owns: the node's latest measurement of its clock offset (its clock minus
//! the median of its peers', from their `x-sillok-time-ms` answers to health
//! calls, half a round trip of error) and the decision that follows from it.
//! Versions come from gateways, but a node's clock still decides its
//! collector's grace periods and tombstone horizon, and a node whose clock
//! is off is a sign of a machine whose NTP is broken. While the offset
//! exceeds the bound, the node refuses manifest writes and relocations (503,
//! `unavailable`, saying why), its collector pauses, and it says so in its
//! log and in its report (`sillok admin status`). Before a first
//! measurement nothing is refused.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

#[derive(Debug)]
pub struct NodeClock {
    offset_ms: AtomicI64,
    known: AtomicBool,
    max: Duration,
}

impl NodeClock {
    pub fn new(max: Duration) -> Self {
        NodeClock { offset_ms: AtomicI64::new(0), known: AtomicBool::new(false), max }
    }

    pub fn offset_ms(&self) -> Option<i64> {
        self.known.load(Ordering::Relaxed).then(|| self.offset_ms.load(Ordering::Relaxed))
    }

    /// Why writes are refused, if they are.
    pub fn refusal(&self) -> Option<String> {
        let off = self.offset_ms()?;
        (off.unsigned_abs() > self.max.as_millis() as u64).then(|| {
            format!(
                "this node's clock is {off} ms off its peers' (the bound is {} ms): manifest writes are refused until it is synchronised (NTP)",
                self.max.as_millis()
            )
        })
    }

    /// Records the median of a round of measurements; logs a change of mind.
    pub fn note(&self, offsets: &mut [i64]) {
        if offsets.is_empty() {
            return;
        }
        offsets.sort_unstable();
        let median = offsets[offsets.len() / 2];
        let before = self.refusal().is_some();
        self.offset_ms.store(median, Ordering::Relaxed);
        self.known.store(true, Ordering::Relaxed);
        match (before, self.refusal()) {
            (false, Some(why)) => tracing::warn!(offset_ms = median, "refusing writes: {why}"),
            (true, None) => tracing::info!(offset_ms = median, "accepting writes: the clock is within the bound again"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_only_beyond_the_bound_and_only_once_measured() {
        let c = NodeClock::new(Duration::from_millis(500));
        assert!(c.refusal().is_none() && c.offset_ms().is_none());
        c.note(&mut [900, -2, 3, 1, 5]);
        assert_eq!(c.offset_ms(), Some(3));
        assert!(c.refusal().is_none());
        c.note(&mut [-3000, -2990, -3010]);
        assert!(c.refusal().unwrap().contains("-3000 ms"));
        c.note(&mut []);
        assert!(c.refusal().is_some(), "no measurement changes nothing");
    }
}
