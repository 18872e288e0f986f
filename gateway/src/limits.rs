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
//! - Connections per client: at most `--max-connections-per-client` (1024,
//!   a quarter of the default `--max-connections`) open connections per
//!   peer IP; one more is closed as soon as it is accepted, unread. The
//!   same table type as requests ([`ClientLimit`], counting connections).
//! - [`FormBuffer`]: browser-form (POST object) files are buffered whole
//!   (s3s parses them in memory), each up to `--post-max-size`; at most
//!   `--form-buffer-total` bytes of them at once, gateway-wide. A form whose
//!   declared length (or, without one, `--post-max-size`) does not fit in
//!   what is left is answered `503 SlowDown` before its file is read. The
//!   reservation is held until the upload's handler has finished.
//!
//! All are counted for the metrics page ([`LimitFigures`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Defaults of the flags.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
pub const DEFAULT_MAX_REQUESTS_PER_CLIENT: usize = 256;
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 1024;
/// Eight forms of the default `--post-max-size` (32 MiB).
pub const DEFAULT_FORM_BUFFER_TOTAL: u64 = 256 << 20;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once (`--max-connections`).
    pub max_connections: usize,
    /// S3 requests in flight per client IP (`--max-requests-per-client`).
    pub max_requests_per_client: usize,
    /// Open connections per client IP (`--max-connections-per-client`).
    pub max_connections_per_client: usize,
    /// Bytes of form files buffered at once (`--form-buffer-total`).
    pub form_buffer_total: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_requests_per_client: DEFAULT_MAX_REQUESTS_PER_CLIENT,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            form_buffer_total: DEFAULT_FORM_BUFFER_TOTAL,
        }
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
    /// Connections closed at once because their client had the most open.
    pub client_connection_refusals: AtomicU64,
    /// Bytes of form files reserved now ([`FormBuffer`]).
    pub form_buffer_reserved: AtomicU64,
    /// Forms answered `SlowDown` because the form buffer was full.
    pub form_buffer_refusals: AtomicU64,
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

/// Requests in flight (or open connections) per client address.
pub struct ClientLimit {
    max: usize,
    in_flight: Mutex<HashMap<IpAddr, usize>>,
    figures: Arc<LimitFigures>,
    counts: Counted,
}

/// What a [`ClientLimit`] counts, for its figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    Requests,
    Connections,
}

/// One request in flight; released when dropped.
pub struct ClientSlot {
    limit: Arc<ClientLimit>,
    ip: IpAddr,
}

impl ClientLimit {
    /// Requests in flight per client.
    pub fn new(max: usize, figures: Arc<LimitFigures>) -> Arc<Self> {
        Arc::new(ClientLimit {
            max: max.max(1),
            in_flight: Mutex::new(HashMap::new()),
            figures,
            counts: Counted::Requests,
        })
    }

    /// Open connections per client.
    pub fn connections(max: usize, figures: Arc<LimitFigures>) -> Arc<Self> {
        Arc::new(ClientLimit {
            max: max.max(1),
            in_flight: Mutex::new(HashMap::new()),
            figures,
            counts: Counted::Connections,
        })
    }

    /// A slot for one more request from `ip`, or `None` when it already has
    /// `max` in flight.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let mut table = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let n = table.entry(ip).or_insert(0);
        if *n >= self.max {
            drop(table);
            match self.counts {
                Counted::Requests => self.figures.client_limit_refusals.fetch_add(1, Ordering::Relaxed),
                Counted::Connections => self.figures.client_connection_refusals.fetch_add(1, Ordering::Relaxed),
            };
            return None;
        }
        *n += 1;
        if self.counts == Counted::Requests {
            self.figures.client_requests_in_flight.fetch_add(1, Ordering::Relaxed);
            self.figures.clients_in_flight.store(table.len() as u64, Ordering::Relaxed);
        }
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
        if self.limit.counts == Counted::Requests {
            let f = &self.limit.figures;
            let _ =
                f.client_requests_in_flight.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            f.clients_in_flight.store(table.len() as u64, Ordering::Relaxed);
        }
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

/// The gateway-wide budget for buffered form files, counted in KiB.
pub struct FormBuffer {
    kib: Arc<Semaphore>,
    total_kib: u64,
    figures: Arc<LimitFigures>,
}

/// Room for one form's file; returned when dropped.
pub struct FormReservation {
    _permit: OwnedSemaphorePermit,
    bytes: u64,
    figures: Arc<LimitFigures>,
}

impl FormBuffer {
    pub fn new(total_bytes: u64, figures: Arc<LimitFigures>) -> Arc<Self> {
        let total_kib = total_bytes.div_ceil(1024).clamp(1, Semaphore::MAX_PERMITS as u64);
        Arc::new(FormBuffer { kib: Arc::new(Semaphore::new(total_kib as usize)), total_kib, figures })
    }

    /// Room for a file of `bytes`, or `None` when the rest of the budget is
    /// smaller (never waits: the caller answers `SlowDown`).
    pub fn reserve(&self, bytes: u64) -> Option<FormReservation> {
        let kib = bytes.div_ceil(1024).clamp(1, self.total_kib);
        let Ok(permit) = self.kib.clone().try_acquire_many_owned(u32::try_from(kib).unwrap_or(u32::MAX)) else {
            self.figures.form_buffer_refusals.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let bytes = kib * 1024;
        self.figures.form_buffer_reserved.fetch_add(bytes, Ordering::Relaxed);
        Some(FormReservation { _permit: permit, bytes, figures: self.figures.clone() })
    }
}

impl Drop for FormReservation {
    fn drop(&mut self) {
        self.figures.form_buffer_reserved.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod form_buffer_tests {
    use super::*;

    #[test]
    fn reservations_fit_the_budget_and_come_back_when_dropped() {
        let figures = Arc::new(LimitFigures::default());
        let buf = FormBuffer::new(3 << 20, figures.clone());
        let a = buf.reserve(1 << 20).expect("1 of 3 MiB");
        let b = buf.reserve(2 << 20).expect("3 of 3 MiB");
        assert!(buf.reserve(1).is_none(), "the budget is spent");
        assert_eq!(figures.form_buffer_refusals.load(Ordering::Relaxed), 1);
        assert_eq!(figures.form_buffer_reserved.load(Ordering::Relaxed), 3 << 20);
        drop(b);
        let c = buf.reserve(2 << 20).expect("room again");
        drop((a, c));
        assert_eq!(figures.form_buffer_reserved.load(Ordering::Relaxed), 0);
        // A form larger than the whole budget takes all of it, not more.
        assert!(buf.reserve(u64::MAX).is_some());
    }
}

/// A connection whose writes must make progress: once a write (or flush)
/// has been blocked for `deadline` because the peer takes nothing, it fails
/// with `TimedOut`, so the connection ends and everything its response held
/// is freed. Reads are not bounded here (the header and body deadlines do
/// that); any byte written re-arms the deadline.
pub struct WriteDeadline<IO> {
    io: IO,
    deadline: std::time::Duration,
    blocked: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> WriteDeadline<IO> {
    pub fn new(io: IO, deadline: std::time::Duration) -> Self {
        WriteDeadline { io, deadline, blocked: None }
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// After a `Pending` write: arms the deadline, or fails once it passed.
    fn still_blocked(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        let deadline = self.deadline;
        let sleep = self.blocked.get_or_insert_with(|| Box::pin(tokio::time::sleep(deadline)));
        match sleep.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client took no bytes for {} s", deadline.as_secs()),
            ))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

use std::future::Future as _;

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteDeadline<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteDeadline<IO> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match std::pin::Pin::new(&mut self.io).poll_write(cx, buf) {
            std::task::Poll::Pending => self.still_blocked(cx).map(|r| r.map(|()| 0)),
            ready => {
                self.blocked = None;
                ready
            }
        }
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs) {
            std::task::Poll::Pending => self.still_blocked(cx).map(|r| r.map(|()| 0)),
            ready => {
                self.blocked = None;
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.io).poll_flush(cx) {
            std::task::Poll::Pending => self.still_blocked(cx),
            ready => {
                self.blocked = None;
                ready
            }
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.io).poll_shutdown(cx) {
            std::task::Poll::Pending => self.still_blocked(cx),
            ready => {
                self.blocked = None;
                ready
            }
        }
    }
}

#[cfg(test)]
mod write_deadline_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_write_the_peer_never_takes_fails_and_progress_rearms_the_deadline() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut guarded = WriteDeadline::new(near, std::time::Duration::from_secs(2));
        // The pipe takes 1 KiB, then blocks; the peer reads some every 50 ms,
        // well within the deadline, 60 times (3 s in all: longer than it).
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 512];
            for _ in 0..60 {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                far.read_exact(&mut buf).await.unwrap();
            }
            far // then it stops reading, and keeps the pipe open
        });
        guarded.write_all(&vec![1u8; 1024 + 60 * 512]).await.expect("steady progress is never cut off");
        let err = guarded.write_all(&[2u8; 4096]).await.expect_err("nobody reads any more");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        drop(reader.await.unwrap());
    }
}
