//! A certificate and key that follow their files: `ReloadingCert` answers
//! every handshake (as a rustls server certificate resolver, or a client
//! certificate resolver for mutual TLS) with the pair it loaded last.
//!
//! Reloads: `ReloadingCert::watch` polls the two files' (mtime, size, inode)
//! every interval and reloads when either changed, and reloads on SIGHUP
//! whatever the files look like. A reload that fails (a missing or
//! malformed file, a key that is not the certificate's: e.g. the moment
//! between an operator's copy of the new certificate and of its key) keeps
//! the pair in use and logs a warning once per change of the files; the
//! next change (the key arriving) is tried again. Handshakes in progress
//! and connections already made keep the pair they started with, and so do
//! sessions a client resumes (TLS resumption skips the certificate).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::sign::CertifiedKey;

use crate::TlsError;

/// A certificate chain and key loaded from two PEM files, replaced when
/// they change (see the module's comment).
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files as they were at the last load attempt.
    seen: Mutex<Option<Fingerprint>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert").field("cert", &self.cert_path).field("key", &self.key_path).finish()
    }
}

/// What identifies a version of the two files without reading them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint([Option<(SystemTime, u64, u64)>; 2]);

fn fingerprint(cert: &Path, key: &Path) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    let one = |p: &Path| {
        std::fs::metadata(p).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len(), m.ino()))
    };
    Fingerprint([one(cert), one(key)])
}

/// Loads the chain and key and checks that they belong together.
fn load_pair(cert: &Path, key: &Path, provider: &rustls::crypto::CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain = crate::load_certs(cert)?;
    let key_der = crate::load_key(key)?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|source| TlsError::BadKey { path: key.into(), source })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(_) => Err(TlsError::KeyMismatch { cert: cert.into(), key: key.into() }),
    }
}

impl ReloadingCert {
    /// Loads the pair; an error if it cannot be used now.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<ReloadingCert>, TlsError> {
        let provider = crate::provider();
        let seen = fingerprint(cert, key);
        let pair = load_pair(cert, key, &provider)?;
        Ok(Arc::new(ReloadingCert {
            cert_path: cert.into(),
            key_path: key.into(),
            current: RwLock::new(Arc::new(pair)),
            seen: Mutex::new(Some(seen)),
            provider,
        }))
    }

    /// The pair in use.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Loads the files now; on error the pair in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fp = fingerprint(&self.cert_path, &self.key_path);
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(fp);
        let pair = load_pair(&self.cert_path, &self.key_path, &self.provider)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(pair);
        Ok(())
    }

    /// Reloads if the files changed since the last attempt: `Ok(true)` when
    /// a new pair is in use, `Ok(false)` when nothing changed.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let fp = fingerprint(&self.cert_path, &self.key_path);
        if self.seen.lock().unwrap_or_else(|e| e.into_inner()).as_ref() == Some(&fp) {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    /// Reloads when the files change (checked every `every`) and on SIGHUP,
    /// logging each reload and each failure (see the module's comment).
    /// The task ends when the last other reference to `self` is dropped.
    /// Must be called within a tokio runtime.
    pub fn watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let every = every.max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGHUP: the TLS certificate is reloaded only when its files change");
                    None
                }
            };
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                let forced = tokio::select! {
                    _ = tick.tick() => false,
                    Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
                };
                let Some(me) = weak.upgrade() else { break };
                let result = if forced { me.reload().map(|()| true) } else { me.reload_if_changed() };
                let why = if forced { "SIGHUP" } else { "the files changed" };
                match result {
                    Ok(true) => {
                        tracing::info!(cert = %me.cert_path.display(), key = %me.key_path.display(), why, "reloaded the TLS certificate")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, why, "kept the TLS certificate in use: the new one cannot be loaded")
                    }
                }
            }
        })
    }
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl rustls::client::ResolvesClientCert for ReloadingCert {
    fn resolve(&self, _root_hints: &[&[u8]], _sigschemes: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
