//! Mutual TLS for the internal transport: who this process is, and who the
//! peer at the other end of a connection is.
//!
//! Owns: [`InternalTls`] (this process's certificate, its key and the
//! cluster CA, loaded from one directory, see [`InternalTls::load`]), the
//! process's identity ([`install`], [`process`]), and [`Peer`], the verified
//! identity of the process at the other end of an accepted connection.
//!
//! Invariants:
//! - A process has one internal identity, installed once at start before any
//!   client or server of this crate is made; `RpcClient::new` and
//!   `server::serve` use it. With none installed (`--insecure-internal-http`,
//!   loopback benchmarks only) they speak plain HTTP, and requests carry no
//!   [`Peer`].
//! - A server asks every connection for a client certificate issued by the
//!   cluster CA; a connection without one, with one of another CA, or one
//!   naming another cluster id or no role, is closed before any request is
//!   read. A client verifies the server's certificate against the cluster CA
//!   and the address it dialled (an IP or DNS subject alternative name).
//! - The key file must be private to its owner (0600): [`InternalTls::load`]
//!   refuses one that group or others can read, naming the file and the fix.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

pub use sillok_tls::Role;

/// The files of an identity directory.
pub const CA_FILE: &str = "ca.pem";
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";

/// Why an identity could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error(
        "{path} holds a private key and is readable by group or others (mode {mode:o}); run `chmod 600 {path}` and start again"
    )]
    OpenKey { path: PathBuf, mode: u32 },
    #[error("{path}: {reason}")]
    Bad { path: PathBuf, reason: String },
}

/// The verified identity of the process at the other end of a connection
/// (in every request's extensions on a TLS server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub cluster_id: String,
    pub role: Role,
}

/// This process's internal identity: its certificate and key, and the
/// cluster CA that every peer's certificate must come from.
pub struct InternalTls {
    dir: PathBuf,
    cluster_id: String,
    role: Role,
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for InternalTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalTls")
            .field("dir", &self.dir)
            .field("cluster_id", &self.cluster_id)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Refuses a file that group or others may read.
pub fn check_private(path: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| TlsError::Read { path: path.to_path_buf(), reason: e.to_string() })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TlsError::OpenKey { path: path.to_path_buf(), mode });
    }
    Ok(())
}

impl InternalTls {
    /// Loads `dir/ca.pem` (the cluster CA), `dir/cert.pem` and `dir/key.pem`
    /// (this process's certificate and key; the key must be 0600).
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let (ca, cert, key) = (dir.join(CA_FILE), dir.join(CERT_FILE), dir.join(KEY_FILE));
        for p in [&ca, &cert, &key] {
            if !p.exists() {
                return Err(TlsError::Read {
                    path: p.clone(),
                    reason: "no such file (`sillok init` and `sillok dev` write one identity directory per process)"
                        .into(),
                });
            }
        }
        check_private(&key)?;
        let bad = |path: &Path, reason: String| TlsError::Bad { path: path.to_path_buf(), reason };
        let der = own_cert_der(&cert)?;
        let Some(me) = sillok_tls::peer_identity(&der) else {
            return Err(bad(&cert, "the certificate names no Sillok cluster id and role".into()));
        };
        let pair = sillok_tls::ReloadingCert::load(&cert, &key).map_err(|e| bad(&cert, e.to_string()))?;
        let server = sillok_tls::server_config(pair.clone(), Some(&ca)).map_err(|e| bad(&ca, e.to_string()))?;
        let client = sillok_tls::client_config(&ca, Some(pair)).map_err(|e| bad(&ca, e.to_string()))?;
        Ok(InternalTls { dir: dir.to_path_buf(), cluster_id: me.cluster_id, role: me.role, client, server })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.client.clone()
    }

    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }

    /// The identity a peer's (already CA-verified) end-entity certificate
    /// names, if it is of this cluster.
    pub fn identify(&self, cert_der: &[u8]) -> Result<Peer, String> {
        match sillok_tls::peer_identity(cert_der) {
            None => Err("the peer's certificate names no Sillok cluster id and role".into()),
            Some(id) if id.cluster_id != self.cluster_id => {
                Err(format!("the peer's certificate is of cluster {}, not {}", id.cluster_id, self.cluster_id))
            }
            Some(id) => Ok(Peer { cluster_id: id.cluster_id, role: id.role }),
        }
    }
}

fn own_cert_der(path: &Path) -> Result<Vec<u8>, TlsError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let first = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Read { path: path.to_path_buf(), reason: e.to_string() })?
        .next();
    match first {
        Some(Ok(c)) => Ok(c.to_vec()),
        Some(Err(e)) => Err(TlsError::Bad { path: path.to_path_buf(), reason: e.to_string() }),
        None => Err(TlsError::Bad { path: path.to_path_buf(), reason: "no certificate in the file".into() }),
    }
}

static PROCESS: OnceLock<Option<Arc<InternalTls>>> = OnceLock::new();

/// Sets this process's internal identity (`None`: plain HTTP). Once only;
/// a second call is refused with the identity it would have replaced.
pub fn install(tls: Option<InternalTls>) -> Result<(), Option<Arc<InternalTls>>> {
    PROCESS.set(tls.map(Arc::new))
}

/// This process's internal identity, if one was installed.
pub fn process() -> Option<Arc<InternalTls>> {
    PROCESS.get().cloned().flatten()
}
