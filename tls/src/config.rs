//! The rustls configurations Sillok's listeners and clients use, all on the
//! aws-lc-rs provider with rustls's safe protocol versions (TLS 1.2, 1.3)
//! and ALPN `http/1.1` (the gateway's limits and its `100 Continue`
//! handling are HTTP/1's).
//!
//! - `server_config`: the server certificate from a `ReloadingCert`; with a
//!   client CA file, every client must present a certificate that chains to
//!   one of its CAs (else the handshake fails); without, none is asked for.
//! - `client_config`: trusts only the CAs of one PEM file (not the system's
//!   roots); with a `ReloadingCert`, presents it when the server asks.
//!
//! The CA files are read once, when the configuration is built.

use std::path::Path;
use std::sync::Arc;

use crate::{ReloadingCert, TlsError};

const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The CAs of a PEM file as a root store.
pub fn root_store(ca: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in crate::load_certs(ca)? {
        roots.add(cert).map_err(TlsError::Rustls)?;
    }
    Ok(roots)
}

/// A server configuration presenting `cert`; with `client_ca`, client
/// certificates are required and verified against it.
pub fn server_config(
    cert: Arc<ReloadingCert>,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = crate::provider();
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(ca)?), provider)
                    .build()?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration trusting the CAs in `ca` only; with
/// `client_cert`, it is presented to servers that ask for one.
pub fn client_config(
    ca: &Path,
    client_cert: Option<Arc<ReloadingCert>>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(root_store(ca)?);
    let mut config = match client_cert {
        Some(cert) => builder.with_client_cert_resolver(cert),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use rustls_pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::{Ca, Identity, LeafSpec, Role, peer_identity};

    struct Files {
        _dir: tempfile::TempDir,
        ca: PathBuf,
        server: (PathBuf, PathBuf),
        client: (PathBuf, PathBuf),
        stranger_ca: PathBuf,
        stranger: (PathBuf, PathBuf),
    }

    /// A CA with a server and a client certificate, and a stranger CA with
    /// its own client certificate.
    fn files() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let ca = Ca::generate("cluster CA").unwrap();
        ca.save(&p("ca.crt"), &p("ca.key")).unwrap();
        let server = LeafSpec::new("node-1")
            .dns("localhost")
            .ip("127.0.0.1".parse().unwrap())
            .identity(Identity::new("c1", Role::Node).unwrap());
        ca.issue(&server).unwrap().save(&p("server.crt"), &p("server.key")).unwrap();
        let client = LeafSpec::new("gw").identity(Identity::new("c1", Role::Gateway).unwrap());
        ca.issue(&client).unwrap().save(&p("client.crt"), &p("client.key")).unwrap();
        let stranger = Ca::generate("another CA").unwrap();
        stranger.save(&p("s-ca.crt"), &p("s-ca.key")).unwrap();
        stranger.issue(&client).unwrap().save(&p("s.crt"), &p("s.key")).unwrap();
        Files {
            ca: p("ca.crt"),
            server: (p("server.crt"), p("server.key")),
            client: (p("client.crt"), p("client.key")),
            stranger_ca: p("s-ca.crt"),
            stranger: (p("s.crt"), p("s.key")),
            _dir: dir,
        }
    }

    /// One handshake over a loopback socket, then a byte each way. Returns
    /// the server's view of the client's certificate (its identity), the
    /// server's certificate and the cipher suite the server chose, or the
    /// client's and server's errors.
    async fn handshake(
        server: Arc<rustls::ServerConfig>,
        client: Arc<rustls::ClientConfig>,
    ) -> Result<(Option<Identity>, Vec<u8>, rustls::CipherSuite), String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let srv = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let mut tls = tokio_rustls::TlsAcceptor::from(server).accept(sock).await.map_err(|e| e.to_string())?;
            let id = tls.get_ref().1.peer_certificates().and_then(|c| peer_identity(&c[0]));
            let suite = tls.get_ref().1.negotiated_cipher_suite().expect("handshake done").suite();
            let mut b = [0u8; 1];
            tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
            tls.write_all(&b).await.map_err(|e| e.to_string())?;
            tls.shutdown().await.ok();
            Ok::<_, String>((id, suite))
        });
        let client_side = async {
            let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut tls =
                tokio_rustls::TlsConnector::from(client).connect(name, sock).await.map_err(|e| e.to_string())?;
            let server_cert = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
            tls.write_all(b"x").await.map_err(|e| e.to_string())?;
            let mut b = [0u8; 1];
            // With TLS 1.3 a refused client certificate shows up here.
            tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(server_cert)
        };
        let (c, s) = tokio::join!(client_side, srv);
        let s = s.unwrap();
        match (c, s) {
            (Ok(cert), Ok((id, suite))) => Ok((id, cert, suite)),
            (c, s) => Err(format!("client: {:?}; server: {:?}", c.err(), s.err())),
        }
    }

    #[tokio::test]
    async fn mutual_tls_admits_the_cluster_and_refuses_strangers() {
        let f = files();
        let server_cert = ReloadingCert::load(&f.server.0, &f.server.1).unwrap();
        let server = server_config(server_cert.clone(), Some(&f.ca)).unwrap();

        // A client of the cluster: both sides see each other's identity.
        let ours = ReloadingCert::load(&f.client.0, &f.client.1).unwrap();
        let (id, cert, suite) = handshake(server.clone(), client_config(&f.ca, Some(ours)).unwrap()).await.unwrap();
        assert_eq!(id, Some(Identity::new("c1", Role::Gateway).unwrap()));
        assert_eq!(peer_identity(&cert), Some(Identity::new("c1", Role::Node).unwrap()));
        // Two Sillok processes agree on the cheaper AES suite (`provider`).
        assert_eq!(suite, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);

        // A client certificate from another CA is refused.
        let theirs = ReloadingCert::load(&f.stranger.0, &f.stranger.1).unwrap();
        let e = handshake(server.clone(), client_config(&f.ca, Some(theirs)).unwrap()).await.unwrap_err();
        assert!(e.contains("UnknownIssuer") || e.contains("unknown"), "{e}");
        // So is a client with none.
        handshake(server.clone(), client_config(&f.ca, None).unwrap()).await.unwrap_err();
        // A client that does not trust the server's CA refuses the server.
        let e = handshake(server, client_config(&f.stranger_ca, None).unwrap()).await.unwrap_err();
        assert!(e.contains("UnknownIssuer"), "{e}");

        // Without a client CA, none is asked for.
        let open = server_config(server_cert, None).unwrap();
        let (id, _, _) = handshake(open, client_config(&f.ca, None).unwrap()).await.unwrap();
        assert_eq!(id, None);
    }

    #[tokio::test]
    async fn a_replaced_certificate_is_served_to_new_connections() {
        let f = files();
        let cert = ReloadingCert::load(&f.server.0, &f.server.1).unwrap();
        let server = server_config(cert.clone(), None).unwrap();
        let client = client_config(&f.ca, None).unwrap();
        let (_, first, _) = handshake(server.clone(), client.clone()).await.unwrap();

        // Nothing changed: nothing reloaded.
        assert!(!cert.reload_if_changed().unwrap());

        // A bad pair (the new key without its certificate) keeps the old one.
        let ca = Ca::from_pem(
            &std::fs::read_to_string(&f.ca).unwrap(),
            &std::fs::read_to_string(f.ca.with_extension("key")).unwrap(),
        )
        .unwrap();
        let next = ca.issue(&LeafSpec::new("node-1 renewed").dns("localhost")).unwrap();
        crate::write_private(&f.server.1, next.key_pem.as_bytes()).unwrap();
        assert!(matches!(cert.reload_if_changed(), Err(TlsError::KeyMismatch { .. })));
        let (_, still, _) = handshake(server.clone(), client.clone()).await.unwrap();
        assert_eq!(still, first);

        // The certificate arrives; the watcher picks the pair up.
        let _watch = cert.watch(Duration::from_millis(20));
        crate::write_public(&f.server.0, next.cert_pem.as_bytes()).unwrap();
        let mut served = first.clone();
        for _ in 0..500 {
            // A new client: one that resumes its session sees the
            // certificate that session was made with.
            let (_, c, _) = handshake(server.clone(), client_config(&f.ca, None).unwrap()).await.unwrap();
            served = c;
            if served != first {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(served, next.cert_der.to_vec());
        assert_eq!(cert.current().cert[0], next.cert_der);
    }

    #[test]
    fn missing_files_are_errors() {
        let f = files();
        assert!(matches!(ReloadingCert::load(&f.server.0, &f.ca), Err(TlsError::NoKey { .. })));
        assert!(matches!(ReloadingCert::load(&f.server.0, &f.client.1), Err(TlsError::KeyMismatch { .. })));
        assert!(matches!(client_config(Path::new("/nonexistent/ca.crt"), None), Err(TlsError::Read { .. })));
    }
}
