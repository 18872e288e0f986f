//! The subcommands of the `sillok` binary, one module each.

pub mod admin;
pub mod catalog;
pub mod config;
pub mod dev;
pub mod drill;
pub mod gateway;
pub mod init;
pub mod internal_tls;
pub mod node;
pub mod rebalance;
pub mod repair_status;
pub mod secret;
pub mod sim;

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

/// Reads and validates a cluster file; refuses one that group or others can
/// read (it holds the cluster secret and the first keys).
pub fn load_cluster_file(path: &std::path::Path) -> anyhow::Result<sillok_placement::ClusterFile> {
    use anyhow::Context;
    if path.exists() {
        config::refuse_if_open(path, "is a cluster file (it holds the cluster secret and keys)")?;
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the cluster file {}", path.display()))?;
    sillok_placement::ClusterFile::parse(&text).with_context(|| format!("in the cluster file {}", path.display()))
}

/// Writes a cluster file atomically (temporary file, fsync, rename), readable
/// by its owner only: it holds the cluster secret and the first keys.
pub fn save_cluster_file(file: &sillok_placement::ClusterFile, path: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    write_private(path, file.to_text().as_bytes())
        .with_context(|| format!("cannot write the cluster file {}", path.display()))
}

/// Creates a process's data directory (and its parents) and makes it
/// private to its owner (0700): it holds secrets (a catalog's keys, a
/// gateway's copy of them) or data only its process serves. A directory
/// that others could enter is closed up, with a warning.
pub fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let existed = dir.exists();
    std::fs::create_dir_all(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        if existed {
            tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777), "the data directory was open to others: set to 0700");
        }
    }
    Ok(())
}

/// Writes a file that holds secrets: mode 0600 from its creation, written
/// whole to a temporary file, fsynced, renamed over `path`, and the folder
/// fsynced, so a crash leaves the old file or the new one.
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    // A leftover temporary file would keep its mode through `truncate`.
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

/// aws-sdk-s3's https client (rustls on aws-lc-rs, as its default) trusting
/// only the CAs in the PEM file `ca` (a `sillok dev --tls` cluster's).
pub fn https_client_trusting(ca: &std::path::Path) -> anyhow::Result<aws_sdk_s3::config::SharedHttpClient> {
    use anyhow::Context;
    use aws_smithy_http_client::tls;
    // Checked here: the SDK's client panics on a certificate it cannot parse.
    sillok_tls::config::root_store(ca).with_context(|| format!("the CA bundle {} cannot be used", ca.display()))?;
    let pem = std::fs::read(ca).with_context(|| format!("cannot read the CA bundle {}", ca.display()))?;
    let trust = tls::TrustStore::empty().with_pem_certificate(pem);
    let context = tls::TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .with_context(|| format!("the CA bundle {} cannot be used", ca.display()))?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc))
        .tls_context(context)
        .build_https())
}
