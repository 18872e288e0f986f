//! The process's hybrid logical clock: where every [`Version`] comes from.
//!
//! Owns: one clock per process ([`now`], [`observe`]), the test-only
//! offset that simulates a process whose wall clock is wrong
//! ([`set_offset_ms`]), and how one offset measurement between processes is
//! read ([`least_offset_ms`]).
//!
//! Invariants:
//! - [`now`] never goes backwards and never repeats: each call returns more
//!   than the previous one and more than every version passed to
//!   [`observe`] (the physical part is the wall clock in nanoseconds, the
//!   logical part is the +1 steps taken when the wall clock is behind).
//! - So a process that has seen version v (a manifest it read, a replica
//!   that refused an older write) only makes versions newer than v, however
//!   far its wall clock is behind: a write that completes after another one
//!   it has heard of wins over it. Writers learn of newer versions from the
//!   manifest replicas (a refused write names the replica's version), and
//!   retry above them.
//! - The clock does not make wrong wall clocks harmless on its own: a clock
//!   far ahead makes every version it writes look newest until the others
//!   catch up. That is why processes measure their offset against each other
//!   and refuse writes past a bound (the gateway's probe does).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::manifest::Version;

static LAST: AtomicU64 = AtomicU64::new(0);
static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// The wall clock, in nanoseconds since the Unix epoch, plus the test offset.
pub fn wall_nanos() -> u64 {
    let wall =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0);
    let shifted = wall + i128::from(OFFSET_MS.load(Ordering::Relaxed)) * 1_000_000;
    shifted.clamp(0, i128::from(u64::MAX)) as u64
}

/// The wall clock in milliseconds (with the test offset), for offset
/// measurements between processes.
pub fn wall_ms() -> i64 {
    (wall_nanos() / 1_000_000) as i64
}

/// An offset measurement between two processes, made fair to a slow call:
/// the peer stamped its answer somewhere within the call's round trip, so the
/// true offset lies within half a round trip of the midpoint `estimate`. The
/// value of that interval nearest zero is returned, so a starved machine's
/// slow calls do not make a good clock look bad (bounds are checked against
/// what is sure). A negative round trip (a clock stepped back) gives no slack.
pub fn least_offset_ms(estimate: i64, round_trip_ms: i64) -> i64 {
    let slack = round_trip_ms.max(0) / 2;
    if estimate > 0 { (estimate - slack).max(0) } else { (estimate + slack).min(0) }
}

/// A new version: newer than every version this process made or observed.
pub fn now() -> Version {
    let wall = wall_nanos();
    let mut last = LAST.load(Ordering::Acquire);
    loop {
        let next = wall.max(last.saturating_add(1));
        match LAST.compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Version { nanos: next, tiebreak: rand::random() },
            Err(seen) => last = seen,
        }
    }
}

/// Moves the clock past `v` (a version read from a replica).
pub fn observe(v: Version) {
    LAST.fetch_max(v.nanos, Ordering::AcqRel);
}

/// Shifts this process's wall clock by `ms` (tests and drills: simulates a
/// machine whose clock is wrong). Never set in production.
pub fn set_offset_ms(ms: i64) {
    OFFSET_MS.store(ms, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_offset_takes_the_value_nearest_zero_within_half_a_round_trip() {
        assert_eq!(least_offset_ms(700, 100), 650);
        assert_eq!(least_offset_ms(-700, 100), -650);
        assert_eq!(least_offset_ms(-40, 100), 0);
        assert_eq!(least_offset_ms(40, 100), 0);
        assert_eq!(least_offset_ms(5, -3), 5, "a clock stepped back during the call gives no slack");
    }

    #[test]
    fn versions_grow_past_everything_observed_even_with_a_clock_behind() {
        let a = now();
        let b = now();
        assert!(b > a && b.nanos > a.nanos);
        // A version from a process whose clock is an hour ahead.
        let ahead = Version { nanos: wall_nanos() + 3_600_000_000_000, tiebreak: 0 };
        observe(ahead);
        let c = now();
        assert!(c.nanos > ahead.nanos, "a version made after observing one is newer");
        assert!(now() > c);
    }
}
