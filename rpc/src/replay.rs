//! The replay check of internal requests: every verified request's nonce is
//! remembered for as long as its signature could still be accepted, and a
//! nonce seen twice is refused.
//!
//! Owns: [`ReplayCache`], one per serving process, shared by its connections.
//!
//! Invariants:
//! - A request is accepted only if its nonce is not remembered and its signed
//!   time is at or after the cache's floor. Every nonce accepted with a time at
//!   or after the floor is remembered until that time is more than
//!   [`MAX_SKEW`] in the past (after which the skew check refuses it anyway).
//!   So no request is accepted twice.
//! - Memory is bounded: at most `capacity` nonces. When a new one would pass
//!   that, the oldest time bucket is forgotten and the floor rises past it:
//!   requests signed that long ago are then refused as unverifiable rather
//!   than accepted unchecked. Fresh requests (signed now, by clocks within
//!   the skew window) are not affected unless the cache holds `capacity`
//!   nonces newer than they are.
//! - Only verified requests reach the cache (the signature is checked first),
//!   so nobody without the secret can fill it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::auth::MAX_SKEW;

/// Seconds of signed time per bucket.
const BUCKET_S: u64 = 10;
/// The default capacity: about 40 MB of nonces at most; at 1,000 internal
/// requests a second a process holds 1.8 million (30 minutes of them).
pub const DEFAULT_CAPACITY: usize = 2_000_000;

/// Why the replay check refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("this request was already received (a replayed nonce)")]
    Replayed,
    #[error("this request was signed before the oldest time the receiver still remembers nonces for")]
    TooOld,
}

/// The nonces of accepted requests, by the 10-second bucket of their signed time.
pub struct ReplayCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    buckets: BTreeMap<u64, HashSet<u128>>,
    len: usize,
    /// Requests signed before this (Unix seconds) are refused.
    floor: u64,
}

impl Default for ReplayCache {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl std::fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock().expect("replay cache");
        f.debug_struct("ReplayCache").field("len", &inner.len).field("floor", &inner.floor).finish()
    }
}

fn unix_s(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl ReplayCache {
    pub fn new(capacity: usize) -> Self {
        ReplayCache { capacity: capacity.max(1), inner: Mutex::new(Inner::default()) }
    }

    /// Remembers `nonce`, signed at `signed`, at time `now`; refuses it if it
    /// was seen already or is older than what the cache can still vouch for.
    pub fn check(&self, nonce: u128, signed: SystemTime, now: SystemTime) -> Result<(), ReplayError> {
        let signed = unix_s(signed);
        let mut inner = self.inner.lock().expect("replay cache");
        // Buckets wholly older than the skew window can no longer be replayed
        // (the signature check refuses them): forget them.
        let horizon = unix_s(now).saturating_sub(MAX_SKEW.as_secs());
        while let Some(entry) = inner.buckets.first_entry() {
            if *entry.key() + BUCKET_S > horizon {
                break;
            }
            let gone = entry.remove();
            inner.len -= gone.len();
        }
        if signed < inner.floor {
            return Err(ReplayError::TooOld);
        }
        let bucket = signed - signed % BUCKET_S;
        if !inner.buckets.entry(bucket).or_default().insert(nonce) {
            return Err(ReplayError::Replayed);
        }
        inner.len += 1;
        while inner.len > self.capacity {
            let Some((start, gone)) = inner.buckets.pop_first() else { break };
            inner.len -= gone.len();
            inner.floor = inner.floor.max(start + BUCKET_S);
        }
        // The request's own bucket may just have been forgotten.
        if signed < inner.floor {
            return Err(ReplayError::TooOld);
        }
        Ok(())
    }

    /// How many nonces are remembered.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("replay cache").len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_nonce_is_accepted_once() {
        let c = ReplayCache::new(100);
        let now = SystemTime::now();
        assert_eq!(c.check(1, now, now), Ok(()));
        assert_eq!(c.check(2, now, now), Ok(()));
        assert_eq!(c.check(1, now, now), Err(ReplayError::Replayed));
        // Also when replayed later, with the time it was signed at.
        assert_eq!(c.check(1, now, now + Duration::from_secs(600)), Err(ReplayError::Replayed));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn nonces_past_the_skew_window_are_forgotten() {
        let c = ReplayCache::new(100);
        let t0 = SystemTime::now();
        c.check(1, t0, t0).unwrap();
        c.check(2, t0 + Duration::from_secs(60), t0 + Duration::from_secs(60)).unwrap();
        let later = t0 + MAX_SKEW + Duration::from_secs(2 * BUCKET_S);
        c.check(3, later, later).unwrap();
        assert_eq!(c.len(), 2, "nonce 1's bucket is past the window");
    }

    #[test]
    fn a_full_cache_raises_its_floor_and_never_accepts_twice() {
        let c = ReplayCache::new(10);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let now = t0 + Duration::from_secs(100);
        // 10 nonces signed at t0, then 10 at t0 + 50 s: the t0 bucket goes.
        for n in 0..10 {
            c.check(n, t0, now).unwrap();
        }
        for n in 10..20 {
            c.check(n, t0 + Duration::from_secs(50), now).unwrap();
        }
        assert_eq!(c.len(), 10);
        // A replay of a forgotten nonce is refused by the floor, not accepted.
        assert_eq!(c.check(3, t0, now), Err(ReplayError::TooOld));
        // And a new request from that far back too: it cannot be vouched for.
        assert_eq!(c.check(99, t0, now), Err(ReplayError::TooOld));
        // Remembered ones are still refused as replays; fresh ones pass.
        assert_eq!(c.check(15, t0 + Duration::from_secs(50), now), Err(ReplayError::Replayed));
        assert_eq!(c.check(100, now, now), Ok(()));
    }
}
