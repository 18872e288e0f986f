//! Sillok's one internal transport.
//!
//! Every request between Sillok processes (gateway → node, gateway, node and
//! admin → catalog, catalog → catalog) travels through this crate:
//!
//! - `auth`: the SigV4 rules by which one process proves it holds the cluster
//!   secret (or an admin key): signing and verifying, and sealing streamed
//!   bodies;
//! - `replay`: the receiver's memory of the nonces it accepted, so that no
//!   request is accepted twice;
//! - `client`: [`client::RpcClient`], the pooled hyper client that signs every
//!   request and bounds every call by deadlines (connect, response, idle);
//! - `ops`: the unauthenticated ops listener (`/health`, `/ready`, `/metrics`)
//!   every process may open, and the helpers for its metrics page;
//! - `tls`: mutual TLS: this process's certificate (role, cluster id) and
//!   the cluster CA every peer's certificate must come from;
//! - `server`: the receiving half for axum services: the authentication step
//!   every route runs behind ([`server::authenticate`]) and the JSON and error
//!   answers every service gives.
//!
//! What it may not do: know any route, any wire type or any process's state.
//! The storage node's and the catalog's APIs are defined in their crates and
//! built on these pieces.

pub mod auth;
pub mod client;
pub mod ops;
pub mod replay;
pub mod server;
pub mod tls;

pub use auth::{AuthError, BodySeal, ContentHash, Payload, Signer};
pub use client::{RpcClient, RpcError};
