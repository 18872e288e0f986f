//! TLS for Sillok's listeners and clients, in one place: a certificate
//! authority and the certificates it issues (`ca`), what a certificate says
//! about its holder (`identity`: the cluster and the role), a server
//! certificate that follows its files (`reload`), and the rustls
//! configurations built on them (`config`).
//!
//! Invariants:
//! - One crypto provider: rustls's aws-lc-rs (`provider`), which aws-sdk-s3's
//!   https client already links; every configuration here is built with it
//!   explicitly, so no process-wide default has to be installed.
//! - Every file this crate writes that holds a private key is created 0600
//!   and replaces the old one by a rename (`write_private`): a reader sees
//!   the old file or the new one, never a part, and never a moment when
//!   others could read it.
//! - A certificate that cannot be loaded never replaces one that works
//!   (`reload::ReloadingCert`): the old one stays and a warning is logged.
//! - No private key, nor any part of one, is ever logged or put in an error.
//! - Only TLS 1.2 and 1.3 (rustls's safe defaults); ALPN `http/1.1`.

pub mod ca;
pub mod config;
pub mod identity;
pub mod reload;

mod der;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use ca::{Ca, Issued, LeafSpec};
pub use config::{client_config, server_config};
pub use identity::{Identity, Role, peer_identity};
pub use reload::ReloadingCert;
/// The rustls and tokio-rustls this crate builds on, for its users' types.
pub use {rustls, tokio_rustls};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// What goes wrong with certificates, keys and their files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", path.display())]
    NoKey { path: PathBuf },
    /// The PEM framing is broken; `what` never quotes the file's contents.
    #[error("{} is not valid PEM: {what}", path.display())]
    Pem { path: PathBuf, what: &'static str },
    #[error("the private key in {} is not usable: {source}", path.display())]
    BadKey { path: PathBuf, source: rustls::Error },
    #[error("the certificate in {} does not belong to the private key in {}", cert.display(), key.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("the CA certificate cannot be used to issue certificates: {0}")]
    BadCaCertificate(&'static str),
    #[error("invalid certificate request: {0}")]
    BadRequest(String),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verification cannot be set up: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The crypto provider every configuration here uses: aws-lc-rs with its
/// default cipher suites, the AES-128-GCM ones first. A rustls server
/// follows the client's order, so two Sillok processes use AES-128-GCM (a
/// standard TLS 1.3 suite), while other clients keep their own preference.
/// It costs a third less CPU per byte than AES-256-GCM, aws-lc's first
/// choice: on this project's 2-core machine, `openssl speed -evp` with 16 KiB
/// records gives 3.39 against 2.21 GB/s, and AES-GCM was 9-10% of a node's
/// and of a gateway's CPU in a 1 MiB GET (benches/README.md).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::CipherSuite as S;
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    let aes128 = [
        S::TLS13_AES_128_GCM_SHA256,
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ];
    p.cipher_suites.sort_by_key(|s| !aes128.contains(&s.suite()));
    Arc::new(p)
}

/// The certificates of a PEM file, in order (a chain: the end entity first;
/// or a set of trusted CAs). Other PEM sections (a key) are skipped.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read { path: path.into(), source })?;
    let mut certs = Vec::new();
    for c in CertificateDer::pem_slice_iter(&bytes) {
        certs.push(c.map_err(|e| TlsError::Pem { path: path.into(), what: pem_error(&e) })?);
    }
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.into() });
    }
    Ok(certs)
}

/// The first private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read { path: path.into(), source })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey { path: path.into() },
        e => TlsError::Pem { path: path.into(), what: pem_error(&e) },
    })
}

/// A PEM error in words that do not quote the file (it may be a key).
fn pem_error(e: &rustls_pki_types::pem::Error) -> &'static str {
    use rustls_pki_types::pem::Error as E;
    match e {
        E::MissingSectionEnd { .. } => "a section has no END line",
        E::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        E::Base64Decode(_) => "a section is not valid base64",
        E::Io(_) => "the file could not be read",
        E::NoItemsFound => "no section of the expected kind",
        E::SectionTooLarge => "a section is too large",
        _ => "malformed",
    }
}

/// `der` as a PEM section with the given label (`CERTIFICATE`, `PRIVATE KEY`).
pub(crate) fn to_pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 is ASCII.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Writes a file that holds a secret (a private key): mode 0600 from its
/// creation, written whole to a temporary file beside it, fsynced, renamed
/// over `path`, and the folder fsynced, so a crash or a concurrent reader
/// sees the old file or the new one.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    write_atomic(path, bytes, 0o600)
}

/// Writes a file others may read (a certificate: 0644) the same way as
/// `write_private`.
pub fn write_public(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    write_atomic(path, bytes, 0o644)
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| TlsError::Write { path: path.into(), source };
    let name = path.file_name().ok_or_else(|| err(std::io::Error::other("the path names no file")))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    // A leftover temporary file would keep its mode: start from none.
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(err)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn private_files_are_owner_only_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("server.key");
        write_private(&p, b"one").unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        // An existing file that others could read is replaced by a 0600 one.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&p, b"two").unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let c = dir.path().join("server.crt");
        write_public(&c, b"cert").unwrap();
        assert_eq!(std::fs::metadata(&c).unwrap().permissions().mode() & 0o777, 0o644);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn bad_pem_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pem");
        std::fs::write(&p, "not pem at all\n").unwrap();
        assert!(matches!(load_certs(&p), Err(TlsError::NoCertificate { .. })));
        assert!(matches!(load_key(&p), Err(TlsError::NoKey { .. })));
        std::fs::write(&p, "-----BEGIN PRIVATE KEY-----\nsecretbytes!!\n").unwrap();
        let e = load_key(&p).unwrap_err().to_string();
        assert!(!e.contains("secretbytes"), "{e}");
        assert!(matches!(load_certs(&dir.path().join("missing")), Err(TlsError::Read { .. })));
    }
}
