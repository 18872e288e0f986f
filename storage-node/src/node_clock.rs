//! The node's clock against its peers'.
//!
//! Owns: the node's latest measurement of its clock offset (its clock minus
//! the median of its peers', from their `x-sillok-time-ms` answers to health
//! calls) and the decision that follows from it. A peer's answer was made
//! somewhere within the call's round trip, so one measurement says only that
//! the offset lies within half a round trip of its midpoint estimate; the
//! node keeps, per peer, the value of that interval nearest zero (a loaded
//! machine's slow round trips must not make a good clock look bad) and takes
//! their median.
//! Versions come from gateways, but a node's clock still decides its
//! collector's grace periods and tombstone horizon, and a node whose clock
//! is off is a sign of a machine whose NTP is broken. While the offset
//! exceeds the bound, the node refuses manifest writes and relocations (503,
//! `unavailable`, saying why), its collector pauses, and it says so in its
//! log and in its report (`sillok admin status`). Before a first
//! measurement nothing is refused.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use sillok_model::clock::least_offset_ms;

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

    /// Records the median of a round of measurements, each `(midpoint
    /// estimate, round trip)` in ms, each counted as the value nearest zero
    /// that its round trip allows; logs a change of mind.
    pub fn note(&self, measured: &[(i64, i64)]) {
        if measured.is_empty() {
            return;
        }
        let mut offsets: Vec<i64> =
            measured.iter().map(|&(estimate, round_trip)| least_offset_ms(estimate, round_trip)).collect();
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
        c.note(&[(900, 0), (-2, 0), (3, 0), (1, 0), (5, 0)]);
        assert_eq!(c.offset_ms(), Some(3));
        assert!(c.refusal().is_none());
        c.note(&[(-3000, 2), (-2990, 2), (-3010, 2)]);
        assert!(c.refusal().unwrap().contains("-2999 ms"));
        c.note(&[]);
        assert!(c.refusal().is_some(), "no measurement changes nothing");
    }

    /// A good clock measured over slow round trips (a starved machine: 1.2 s
    /// calls whose answers came early or late in them) is not refused; a
    /// clock off by more than the bound plus the slack still is.
    #[test]
    fn slow_round_trips_do_not_make_a_good_clock_look_off() {
        let c = NodeClock::new(Duration::from_millis(500));
        c.note(&[(-550, 1200), (-560, 1100), (-20, 40), (-540, 1300)]);
        assert!(c.refusal().is_none(), "{:?}", c.offset_ms());
        assert_eq!(c.offset_ms(), Some(0));
        c.note(&[(-3000, 1200), (-3100, 1000), (-2900, 800)]);
        assert!(c.refusal().is_some(), "{:?}", c.offset_ms());
        assert_eq!(c.offset_ms(), Some(-2500));
    }
}
