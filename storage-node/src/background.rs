//! Client requests first: how background work (the rebuild engine, the
//! scrub) gives way to the requests of clients on the same machine.
//!
//! Owns: the count of client requests this node is serving, the wait that
//! background work takes before each block while there are some, and the
//! threads at a lower CPU priority where background work decodes, writes,
//! reads back and checks shards.
//!
//! Invariants:
//! - A request counts as a client's unless it carries [`H_BACKGROUND`] (the
//!   rebuild's reads of its peers' shards do), so a node counts the
//!   gateways' work, not its peers' rebuild traffic.
//! - [`ClientLoad::yield_to_clients`] waits while any client request is in
//!   flight here, but at most [`MAX_YIELD`] per call: background work slows
//!   down under load and never stops.
//! - [`spawn_low`] and [`run_low`] run a closure on a thread of its own whose nice value is
//!   [`NICE`] (on Linux a thread's nice value is its own), so when the CPU is
//!   short the kernel runs the threads that serve clients (of every process
//!   on the machine) first. The thread ends with the closure.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::error::NodeError;

/// The header that marks a request as background work (value `1`).
pub const H_BACKGROUND: &str = "x-sillok-background";

/// The longest one [`ClientLoad::yield_to_clients`] waits.
pub const MAX_YIELD: Duration = Duration::from_millis(10);

/// How often a waiting background task looks again.
const POLL: Duration = Duration::from_millis(1);

/// The nice value of background threads (0 is normal, 19 the lowest).
pub const NICE: i32 = 10;

/// Whether background work gives way at all (`--client-first`, default on;
/// off only to measure what it buys). Read by [`ClientLoad::yield_to_clients`]
/// and [`spawn_low`]; one node per process, so one switch per process.
static CLIENT_FIRST: AtomicBool = AtomicBool::new(true);

pub fn set_client_first(on: bool) {
    CLIENT_FIRST.store(on, Relaxed);
}

/// Client requests in flight on this node.
#[derive(Debug, Default)]
pub struct ClientLoad {
    in_flight: AtomicU32,
    /// Time background work spent waiting for clients, in µs (for metrics).
    yielded_us: AtomicU64,
}

/// Held while a client request is served.
pub struct ClientRequest<'a>(&'a ClientLoad);

impl Drop for ClientRequest<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

impl ClientLoad {
    /// Counts a client request until the guard is dropped.
    pub fn enter(&self) -> ClientRequest<'_> {
        self.in_flight.fetch_add(1, Relaxed);
        ClientRequest(self)
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// Microseconds background work has spent waiting for clients.
    pub fn yielded_us(&self) -> u64 {
        self.yielded_us.load(Relaxed)
    }

    /// Waits while client requests are in flight, at most [`MAX_YIELD`].
    pub async fn yield_to_clients(&self) {
        if self.in_flight() == 0 || !CLIENT_FIRST.load(Relaxed) {
            return;
        }
        let start = Instant::now();
        while self.in_flight() > 0 && start.elapsed() < MAX_YIELD {
            tokio::time::sleep(POLL).await;
        }
        self.yielded_us.fetch_add(start.elapsed().as_micros() as u64, Relaxed);
    }
}

/// Whether a request's headers mark it as background work.
pub fn is_background(headers: &http::HeaderMap) -> bool {
    headers.get(H_BACKGROUND).is_some_and(|v| v == "1")
}

/// Lowers the calling thread's CPU priority to [`NICE`]. Best effort: a
/// refusal leaves the thread at its priority (and is logged once per thread).
fn lower_this_thread() {
    // SAFETY: gettid(2) and setpriority(2) take and return plain integers.
    let r = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, NICE)
    };
    if r != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower a background thread's priority");
    }
}

/// Starts `f` at once on a new thread at a lower CPU priority; the future
/// answers with its outcome (whether or not it is polled, `f` runs).
pub fn spawn_low<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> impl Future<Output = Result<T, NodeError>> + Send + 'static {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let lower = CLIENT_FIRST.load(Relaxed);
    let started = std::thread::Builder::new().name(name.to_string()).spawn(move || {
        if lower {
            lower_this_thread();
        }
        let _ = tx.send(f());
    });
    let name = name.to_string();
    async move {
        started.map_err(|e| NodeError::Other(format!("could not start a background thread: {e}")))?;
        rx.await.map_err(|_| NodeError::Other(format!("background thread {name} stopped without an answer")))?
    }
}

/// Runs `f` on a new thread at a lower CPU priority and waits for it.
pub async fn run_low<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, NodeError> {
    spawn_low(name, f).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn yielding_waits_while_a_client_is_served_and_no_longer_than_the_bound() {
        let load = ClientLoad::default();
        load.yield_to_clients().await;
        assert_eq!(load.yielded_us(), 0, "no client, no wait");
        let guard = load.enter();
        load.yield_to_clients().await;
        assert!(load.yielded_us() >= MAX_YIELD.as_micros() as u64);
        drop(guard);
        assert_eq!(load.in_flight(), 0);
    }

    #[tokio::test]
    async fn background_threads_run_at_the_lower_priority() {
        let nice = run_low("test-low", || {
            // SAFETY: as in `lower_this_thread`.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
            Ok(unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) })
        })
        .await
        .unwrap();
        assert!(nice >= NICE, "nice {nice}");
        let e = run_low::<()>("test-err", || Err(NodeError::NotFound)).await.unwrap_err();
        assert!(matches!(e, NodeError::NotFound));
    }
}
