//! The clock that hedged reads wait on.
//!
//! Owns: [`HedgeClock`], one ticker per gateway that wakes every read waiting
//! to hedge (`fanout::Need::hedge_after`) once per tick, while any is waiting.
//!
//! Why not a timer per read: with a 20 ms timer armed by every thumbnail
//! GET (and dropped a few milliseconds later, when its answers arrived; no
//! hedge fired) the gateway served fewer GETs at more CPU than with the
//! timer pushed out to 60 s, in three runs of `benches/compare.sh` on the
//! 2-core test machine (64 KiB GETs at concurrency 8: 1,103 / 940 / 1,096
//! ops/s against 1,579 / 1,233 / 1,156 at 60 s; this shared tick: 1,536 and
//! 1,234 in the third run). The likely cause is runtime threads woken at
//! the deadlines of timers already dropped. One ticker costs one timer per
//! tick for the whole gateway, and nothing when no read is waiting.
//!
//! Invariants: a read that waits holds a [`Waiting`] guard for as long as it
//! may need a tick; the ticker sleeps without a timer while no guard exists,
//! and a guard taken while it sleeps wakes it (a stored permit, so no tick
//! is lost between the check and the wait). A hedge fires between
//! `hedge_after` and `hedge_after` plus one tick after its read started.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// The shared tick (see the module's comment).
pub struct HedgeClock(Arc<Shared>);

struct Shared {
    tick: Duration,
    waiting: AtomicUsize,
    /// Wakes the ticker when the first read starts waiting (or the clock is dropped).
    armed: Notify,
    /// Wakes every waiting read once per tick.
    ticks: Notify,
    closed: AtomicBool,
}

/// A read waiting for ticks; dropping it (the read is done or cancelled)
/// lets the ticker stop when it was the last.
pub struct Waiting<'a>(&'a Shared);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for HedgeClock {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.armed.notify_one();
    }
}

impl HedgeClock {
    /// A clock ticking every `tick` while a read waits on it, and its ticker
    /// task (on the current runtime; it ends when the clock is dropped).
    pub fn start(tick: Duration) -> Arc<Self> {
        let shared = Arc::new(Shared {
            tick: tick.max(Duration::from_millis(1)),
            waiting: AtomicUsize::new(0),
            armed: Notify::new(),
            ticks: Notify::new(),
            closed: AtomicBool::new(false),
        });
        let s = shared.clone();
        tokio::spawn(async move {
            while !s.closed.load(Ordering::Acquire) {
                if s.waiting.load(Ordering::Acquire) == 0 {
                    s.armed.notified().await;
                    continue;
                }
                tokio::time::sleep(s.tick).await;
                s.ticks.notify_waiters();
            }
        });
        Arc::new(HedgeClock(shared))
    }

    /// Registers a read that may wait for ticks.
    pub fn waiting(&self) -> Waiting<'_> {
        if self.0.waiting.fetch_add(1, Ordering::AcqRel) == 0 {
            self.0.armed.notify_one();
        }
        Waiting(&self.0)
    }

    /// The next tick (a future registered as soon as it is made).
    pub fn tick(&self) -> tokio::sync::futures::Notified<'_> {
        self.0.ticks.notified()
    }
}
