//! Nothing: this package holds the Sillok libraries' in-process integration
//! tests (`tests/`), which start catalog replicas, a gateway's catalog reader
//! and storage nodes in one process on loopback.
//!
//! Why a package of their own: a package's opt-level applies to its test
//! targets too, and the libraries build at opt-level 2 (Cargo.toml) so that
//! the end-to-end clusters run fast. As test targets of their libraries,
//! these three files took 382 s of CI's build (gateway 155 s, catalog
//! 127 s, storage node 100 s: unit times of `cargo test --timings`, two
//! jobs on two cores); here they build at opt-level 0 against the same
//! optimised libraries. They run in about 10 s.
