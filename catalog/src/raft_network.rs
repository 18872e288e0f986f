//! openraft's network for the catalog: Raft RPCs (append, vote, snapshot)
//! between replicas, over the internal transport (`sillok_rpc`).
//!
//! Owns: [`Network`] and its per-target [`Peer`], and how a transport failure
//! is reported to openraft.
//!
//! Invariants:
//! - Every call is signed with the cluster secret and bounded by the smaller
//!   of openraft's TTL and [`Network::rpc_timeout`] (snapshots: openraft's
//!   TTL alone).
//! - A peer that refuses connections or misses its deadline is reported as
//!   `Unreachable`, so openraft backs off instead of spinning.
//! - Responses larger than [`MAX_RESPONSE`] are refused.

use std::time::Duration;

use http::{Method, StatusCode};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sillok_rpc::{RpcClient, RpcError};

use crate::{ReplicaNode, TypeConfig};

/// Largest response body accepted from a replica.
pub const MAX_RESPONSE: usize = 64 << 20;

/// openraft's network: one [`Peer`] per target replica, sharing a transport.
#[derive(Clone)]
pub struct Network {
    pub transport: RpcClient,
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
    transport: RpcClient,
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
        let resp =
            self.transport.call(Method::POST, &self.addr, path, body, &[], ttl, MAX_RESPONSE).await.map_err(|e| {
                if matches!(e, RpcError::Connect { .. } | RpcError::Timeout { .. }) {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        if resp.status != StatusCode::OK {
            let e = RpcError::Broken {
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
