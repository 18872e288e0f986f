//! The signed HTTP transport of the catalog: between replicas (Raft RPCs),
//! from a follower to the leader (forwarded writes), and from clients.
//!
//! Owns: [`Transport`] (a pooled hyper client that signs every request with
//! one key and bounds every call by a deadline) and openraft's network
//! ([`Network`], [`Peer`]).
//!
//! Invariants:
//! - TCP_NODELAY on every connection; the TCP connect has its own deadline
//!   ([`Transport::new`]), and the whole call (send, response head, body) has
//!   the caller's deadline: a hung (SIGSTOPped) peer costs that deadline, never
//!   more.
//! - A peer that refuses connections or misses its deadline is reported to
//!   openraft as `Unreachable`, so it backs off instead of spinning.
//! - Every request body is signed by its SHA-256; responses larger than
//!   [`MAX_RESPONSE`] are refused.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{ReplicaNode, TypeConfig};
use crate::auth::{Payload, Signer};

/// Largest response body accepted.
pub const MAX_RESPONSE: usize = 64 << 20;

/// Why a call did not get a response.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("{addr} did not answer within {ms} ms")]
    Timeout { addr: String, ms: u128 },
    #[error("call to {addr} failed: {reason}")]
    Other { addr: String, reason: String },
}

/// A response: status, headers, body.
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A signing HTTP client with deadlines. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    http: Client<HttpConnector, Full<Bytes>>,
    signer: Signer,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").field("signer", &self.signer).finish_non_exhaustive()
    }
}

/// `host:port` from an address that may carry a scheme or a trailing slash.
pub fn authority(addr: &str) -> &str {
    addr.strip_prefix("http://").unwrap_or(addr).trim_end_matches('/')
}

impl Transport {
    pub fn new(signer: Signer, connect_timeout: Duration) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(connect_timeout));
        let http = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(conn);
        Transport { http, signer }
    }

    /// One signed call, bounded by `deadline` as a whole.
    pub async fn call(
        &self,
        method: Method,
        addr: &str,
        path_and_query: &str,
        body: Vec<u8>,
        extra: &[(&'static str, String)],
        deadline: Duration,
    ) -> Result<Response, TransportError> {
        let host = authority(addr).to_string();
        let fail = |reason: String| TransportError::Other { addr: host.clone(), reason };
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("http://{host}{path_and_query}"))
            .header(http::header::CONTENT_TYPE, "application/json");
        for (k, v) in extra {
            req = req.header(*k, v);
        }
        let headers = self
            .signer
            .sign(method.as_str(), &host, path_and_query, Payload::Bytes(&body), SystemTime::now())
            .map_err(|e| fail(e.to_string()))?;
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req.body(Full::new(Bytes::from(body))).map_err(|e| fail(e.to_string()))?;
        let work = async {
            let resp = self.http.request(req).await.map_err(|e| {
                let mut reason = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    reason.push_str(": ");
                    reason.push_str(&s.to_string());
                    src = s.source();
                }
                if e.is_connect() { TransportError::Connect { addr: host.clone(), reason } } else { fail(reason) }
            })?;
            let (parts, body) = resp.into_parts();
            let body = http_body_util::Limited::new(body, MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| fail(format!("reading the response: {e}")))?
                .to_bytes();
            Ok(Response { status: parts.status, headers: parts.headers, body })
        };
        match tokio::time::timeout(deadline, work).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout { addr: host.clone(), ms: deadline.as_millis() }),
        }
    }
}

/// openraft's network: one [`Peer`] per target replica, sharing a transport.
#[derive(Clone)]
pub struct Network {
    pub transport: Transport,
    /// Upper bound of one append or vote call (openraft may ask for less).
    pub rpc_timeout: Duration,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &ReplicaNode) -> Peer {
        Peer { target, addr: node.addr.clone(), transport: self.transport.clone(), rpc_timeout: self.rpc_timeout }
    }
}

pub struct Peer {
    target: u64,
    addr: String,
    transport: Transport,
    rpc_timeout: Duration,
}

impl Peer {
    async fn rpc<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<u64, ReplicaNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let resp = self.transport.call(Method::POST, &self.addr, path, body, &[], ttl).await.map_err(|e| match e {
            TransportError::Connect { .. } | TransportError::Timeout { .. } => {
                RPCError::Unreachable(Unreachable::new(&e))
            }
            TransportError::Other { .. } => RPCError::Network(NetworkError::new(&e)),
        })?;
        if resp.status != StatusCode::OK {
            let e = TransportError::Other {
                addr: self.addr.clone(),
                reason: format!("{}: {}", resp.status, String::from_utf8_lossy(&resp.body)),
            };
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        let result: Result<Resp, RaftError<u64, E>> =
            serde_json::from_slice(&resp.body).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, ReplicaNode, RaftError<u64>>> {
        self.rpc("/v1/raft/append", &rpc, option.hard_ttl().min(self.rpc_timeout)).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, ReplicaNode, RaftError<u64, InstallSnapshotError>>> {
        self.rpc("/v1/raft/snapshot", &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, ReplicaNode, RaftError<u64>>> {
        self.rpc("/v1/raft/vote", &rpc, option.hard_ttl().min(self.rpc_timeout)).await
    }
}
