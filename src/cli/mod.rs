//! The subcommands of the `sillok` binary, one module each.

pub mod admin;
pub mod dev;
pub mod gateway;
pub mod init;
pub mod node;
pub mod placement;

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// `bytes` random bytes from the OS RNG, as hex (secrets and key ids).
pub fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// A new admin access key (for `sillok admin`).
pub fn new_admin_key() -> sillok_placement::AccessKey {
    sillok_placement::AccessKey {
        access_key_id: format!("SILLOKADMIN{}", random_hex(5).to_uppercase()),
        secret_access_key: random_hex(20),
    }
}
