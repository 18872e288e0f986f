//! The end-to-end tests, in one test binary (aws-sdk-s3 and the rest are
//! compiled once, not once per file): each starts real processes (`sillok
//! dev` clusters, `sillok catalog` replicas, extra gateways) on loopback and
//! talks to them with real clients. One module per area; run one area with
//! `cargo test -p sillok --test e2e -- data_path::`.
//!
//! `support` is the shared harness: the `DevCluster` (with typed accessors
//! for its processes), S3 clients, byte-exact checks and `wait_until`.

mod support;

mod abuse;
mod catalog;
mod catalog_backup;
mod clients;
mod collector;
mod cors;
mod data_path;
mod detector;
mod drill;
mod following;
mod internal_tls;
mod lifecycle;
mod ops;
mod reads;
mod rebalance;
mod rebuild;
mod s3_compat;
mod s3_exact;
mod s3_operations;
mod secret;
mod substitutes;
mod tagging;
mod tls;
mod versioning;
mod versions;
