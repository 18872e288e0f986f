//! Errors of the storage node and of its client.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum NodeError {
    /// Could not connect, or the connection broke.
    #[error("node {addr} unreachable: {reason}")]
    Unreachable { addr: String, reason: String },
    /// A deadline passed (connect, response, or idle while streaming).
    #[error("node {addr} timed out ({what})")]
    Timeout { addr: String, what: &'static str },
    #[error("not found")]
    NotFound,
    /// A block failed its blake3 check (on disk or on the wire).
    #[error("corrupt block: {0}")]
    Corrupt(String),
    /// The node refused the request's signature.
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The node follows a newer placement map than the request named: look
    /// the request's targets up again on a map of at least `node_epoch`.
    #[error("node {addr} is at map epoch {node_epoch}, newer than the request's")]
    StaleEpoch { addr: String, node_epoch: u64 },
    /// The node answered with an unexpected status.
    #[error("node {addr} answered {status}: {body}")]
    Status { addr: String, status: u16, body: String },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("metadata store: {0}")]
    Store(String),
    /// The node cannot take this request now (its clock is off, say).
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Other(String),
}

impl From<sillok_rpc::RpcError> for NodeError {
    fn from(e: sillok_rpc::RpcError) -> Self {
        use sillok_rpc::RpcError as R;
        match e {
            R::Timeout { addr, what } => NodeError::Timeout { addr, what },
            R::Connect { addr, reason } | R::Broken { addr, reason } => NodeError::Unreachable { addr, reason },
            R::TooLarge { addr, limit } => {
                NodeError::Status { addr, status: 200, body: format!("response body larger than {limit} bytes") }
            }
            R::Request { addr, reason } => NodeError::BadRequest(format!("bad node address {addr:?}: {reason}")),
        }
    }
}
