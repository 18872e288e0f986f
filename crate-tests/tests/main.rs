//! The libraries' in-process integration tests, one module per library
//! (see `src/lib.rs` for why they live in this package).

/// Machine-wide loopback port reservations: dev-only code that lives with
/// `sillok dev` (src/dev_ports.rs) and is compiled into this target as is.
#[path = "../../src/dev_ports.rs"]
mod ports;

mod catalog_replicas;
mod gateway_read_index;
mod storage_node;
