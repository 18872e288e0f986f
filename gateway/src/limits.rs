//! Bounds on what clients can hold: connections to the S3 listener and
//! requests in flight per client address.
//!
//! - [`ConnectionLimit`]: at most `--max-connections` accepted connections
//!   at once. The accept loop takes a permit *before* it accepts, so over
//!   the limit new connections wait in the kernel's accept backlog (1024,
//!   tokio's default; beyond it the kernel drops SYNs and clients retry)
//!   until a connection ends. Nothing is read from them meanwhile, so a
//!   waiting connection costs the gateway no memory.
//! - [`ClientLimit`]: at most `--max-requests-per-client` S3 requests in
//!   flight per peer IP address; one more is answered at once with S3's
//!   `503 SlowDown` before anything else is done for it. A request is in
//!   flight from its arrival until its response body has been sent (or
//!   dropped). The table holds one entry per address with a request in
//!   flight (removed when its count returns to 0), so it is bounded by the
//!   connections (HTTP/1 only: one request per connection at a time).
//!
//! Both are counted for the metrics page ([`LimitFigures`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Defaults of the flags.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
pub const DEFAULT_MAX_REQUESTS_PER_CLIENT: usize = 256;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once (`--max-connections`).
    pub max_connections: usize,
    /// S3 requests in flight per client IP (`--max-requests-per-client`).
    pub max_requests_per_client: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_connections: DEFAULT_MAX_CONNECTIONS, max_requests_per_client: DEFAULT_MAX_REQUESTS_PER_CLIENT }
    }
}

/// What the metrics page shows of the limits.
#[derive(Debug, Default)]
pub struct LimitFigures {
    pub max_connections: AtomicU64,
    pub connections_open: AtomicU64,
    pub connections_accepted: AtomicU64,
    /// Times the accept loop found every permit taken and stopped accepting.
    pub connection_limit_reached: AtomicU64,
    pub client_requests_in_flight: AtomicU64,
    pub clients_in_flight: AtomicU64,
    /// Requests answered `SlowDown` because their client was at its limit.
    pub client_limit_refusals: AtomicU64,
    /// TLS listener only: handshakes that failed (a client that does not
    /// trust the certificate, plain HTTP, garbage) and handshakes not
    /// finished within `server::TLS_HANDSHAKE_TIMEOUT`.
    pub tls_handshake_failures: AtomicU64,
    pub tls_handshake_timeouts: AtomicU64,
}

/// The listener's connection permits.
pub struct ConnectionLimit {
    permits: Arc<Semaphore>,
    figures: Arc<LimitFigures>,
}

/// One accepted connection; its permit returns when it is dropped.
pub struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
    figures: Arc<LimitFigures>,
    counted: bool,
}

impl ConnectionLimit {
    pub fn new(max: usize, figures: Arc<LimitFigures>) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        figures.max_connections.store(max as u64, Ordering::Relaxed);
        ConnectionLimit { permits: Arc::new(Semaphore::new(max)), figures }
    }

    /// Waits until a connection may be accepted.
    pub async fn admit(&self) -> ConnectionSlot {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.figures.connection_limit_reached.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("connection limit reached; new connections wait in the accept backlog");
                match self.permits.clone().acquire_owned().await {
                    Ok(p) => p,
                    // Never closed (this owns it): wait forever, as a closed
                    // listener would.
                    Err(_) => std::future::pending().await,
                }
            }
        };
        ConnectionSlot { _permit: permit, figures: self.figures.clone(), counted: false }
    }
}

impl ConnectionSlot {
    /// Called once the connection is accepted.
    pub fn accepted(&mut self) {
        self.counted = true;
        self.figures.connections_accepted.fetch_add(1, Ordering::Relaxed);
        self.figures.connections_open.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if self.counted {
            self.figures.connections_open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Requests in flight per client address.
pub struct ClientLimit {
    max: usize,
    in_flight: Mutex<HashMap<IpAddr, usize>>,
    figures: Arc<LimitFigures>,
}

/// One request in flight; released when dropped.
pub struct ClientSlot {
    limit: Arc<ClientLimit>,
    ip: IpAddr,
}

impl ClientLimit {
    pub fn new(max: usize, figures: Arc<LimitFigures>) -> Arc<Self> {
        Arc::new(ClientLimit { max: max.max(1), in_flight: Mutex::new(HashMap::new()), figures })
    }

    /// A slot for one more request from `ip`, or `None` when it already has
    /// `max` in flight.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let mut table = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let n = table.entry(ip).or_insert(0);
        if *n >= self.max {
            drop(table);
            self.figures.client_limit_refusals.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *n += 1;
        self.figures.client_requests_in_flight.fetch_add(1, Ordering::Relaxed);
        self.figures.clients_in_flight.store(table.len() as u64, Ordering::Relaxed);
        Some(ClientSlot { limit: self.clone(), ip })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut table = self.limit.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = table.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                table.remove(&self.ip);
            }
        }
        let f = &self.limit.figures;
        let _ = f.client_requests_in_flight.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        f.clients_in_flight.store(table.len() as u64, Ordering::Relaxed);
    }
}

/// A response body that keeps its request's [`ClientSlot`] until the body
/// has been sent or dropped.
pub struct HeldBody<B> {
    inner: B,
    _slot: ClientSlot,
}

impl<B> HeldBody<B> {
    pub fn new(inner: B, slot: ClientSlot) -> Self {
        HeldBody { inner, _slot: slot }
    }
}

impl<B> http_body::Body for HeldBody<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_at_most_max_slots_and_others_are_not_affected() {
        let figures = Arc::new(LimitFigures::default());
        let limit = ClientLimit::new(2, figures.clone());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = limit.enter(a).expect("first");
        let s2 = limit.enter(a).expect("second");
        assert!(limit.enter(a).is_none(), "a third request of one client is refused");
        let other = limit.enter(b).expect("another client is not limited by the first");
        assert_eq!(figures.client_requests_in_flight.load(Ordering::Relaxed), 3);
        assert_eq!(figures.client_limit_refusals.load(Ordering::Relaxed), 1);
        drop(s1);
        let s3 = limit.enter(a).expect("a slot came back");
        drop((s2, s3, other));
        assert!(limit.in_flight.lock().unwrap().is_empty(), "no entry is kept for idle clients");
        assert_eq!(figures.client_requests_in_flight.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn connections_wait_for_a_permit() {
        let figures = Arc::new(LimitFigures::default());
        let limit = Arc::new(ConnectionLimit::new(1, figures.clone()));
        let mut first = limit.admit().await;
        first.accepted();
        let l2 = limit.clone();
        let waiting = tokio::spawn(async move { l2.admit().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        let mut second = waiting.await.unwrap();
        second.accepted();
        assert_eq!(figures.connections_open.load(Ordering::Relaxed), 1);
        assert_eq!(figures.connection_limit_reached.load(Ordering::Relaxed), 1);
        assert_eq!(figures.connections_accepted.load(Ordering::Relaxed), 2);
    }
}
