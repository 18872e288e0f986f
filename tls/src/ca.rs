//! A certificate authority and the certificates it issues (rcgen on
//! aws-lc-rs). Keys are ECDSA P-256; serial numbers are 16 random bytes.
//!
//! - A CA (`Ca::generate`) is self-signed, valid from an hour ago (clocks
//!   differ) for 10 years, and may sign end-entity certificates only
//!   (path length 0).
//! - An issued certificate (`Ca::issue`) is an end entity (CA: false), for
//!   both TLS server and TLS client use (a storage node is both), valid
//!   from an hour ago for `LeafSpec::valid_days`, with the DNS names and IP
//!   addresses asked for and, when given, the holder's identity as a
//!   `sillok://<cluster-id>/<role>` URI (`crate::identity`).
//! - A CA loaded from PEM (`Ca::from_pem`) issues under its own subject and
//!   key identifier, read from its certificate, so its certificates chain
//!   to it whoever made it; its key must match its certificate.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::identity::Identity;
use crate::{TlsError, to_pem};

/// A certificate authority: its certificate and the key that signs with it.
pub struct Ca {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Ca").field("cert_der_len", &self.cert_der.len()).finish_non_exhaustive()
    }
}

/// What to put in an issued certificate.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub common_name: String,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    /// The cluster and role, as a URI SAN (`crate::identity`).
    pub identity: Option<Identity>,
    pub valid_days: u32,
}

impl LeafSpec {
    /// A certificate for `common_name`, valid for a year, with no names yet.
    pub fn new(common_name: impl Into<String>) -> Self {
        LeafSpec {
            common_name: common_name.into(),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            identity: None,
            valid_days: 365,
        }
    }

    pub fn dns(mut self, name: impl Into<String>) -> Self {
        self.dns_names.push(name.into());
        self
    }

    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.ip_addresses.push(ip);
        self
    }

    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    pub fn valid_days(mut self, days: u32) -> Self {
        self.valid_days = days;
        self
    }
}

/// An issued certificate and its new private key (PKCS#8), both PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

impl Issued {
    /// Writes the key (0600, `crate::write_private`), then the certificate
    /// (0644), each replaced whole.
    pub fn save(&self, cert: &std::path::Path, key: &std::path::Path) -> Result<(), TlsError> {
        crate::write_private(key, self.key_pem.as_bytes())?;
        crate::write_public(cert, self.cert_pem.as_bytes())
    }
}

/// The validity period of a new certificate: from an hour ago (for clocks
/// behind this one) for `days`.
fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days.max(1)));
}

fn random_serial() -> SerialNumber {
    let mut b: [u8; 16] = rand::random();
    // Positive, and its DER integer keeps 16 bytes.
    b[0] = (b[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&b)
}

fn ca_key_usages() -> Vec<KeyUsagePurpose> {
    vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature]
}

impl Ca {
    /// A new self-signed CA named `common_name`, with a new key.
    pub fn generate(common_name: &str) -> Result<Ca, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = ca_key_usages();
        params.serial_number = Some(random_serial());
        validity(&mut params, 3650);
        let cert = params.self_signed(&key)?;
        let cert_der = cert.der().clone();
        let key_pem = to_pem("PRIVATE KEY", key.serialized_der());
        Ok(Ca { cert_pem: to_pem("CERTIFICATE", &cert_der), cert_der, key_pem, issuer: Issuer::new(params, key) })
    }

    /// A CA from its certificate and private key (PEM, as `cert_pem` and
    /// `key_pem` give them, or made elsewhere).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, TlsError> {
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| TlsError::BadCaCertificate("no PEM certificate"))?;
        let key_der = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|_| TlsError::BadCaCertificate("no PEM private key"))?;
        let key = KeyPair::try_from(&key_der)?;
        let provider = crate::provider();
        let signing = provider.key_provider.load_private_key(key_der.clone_key())?;
        let certified = rustls::sign::CertifiedKey::new(vec![cert_der.clone()], signing);
        if certified.keys_match().is_err() {
            return Err(TlsError::BadCaCertificate("the private key does not belong to the certificate"));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = subject_of(&cert_der)?;
        params.key_usages = ca_key_usages();
        if let Some(ski) = crate::der::subject_key_id(&cert_der) {
            params.key_identifier_method = KeyIdMethod::PreSpecified(ski);
        }
        Ok(Ca {
            cert_pem: to_pem("CERTIFICATE", &cert_der),
            cert_der,
            key_pem: to_pem("PRIVATE KEY", key.serialized_der()),
            issuer: Issuer::new(params, key),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA's private key (PKCS#8 PEM): write it with `crate::write_private`.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Writes the key (0600) and the certificate (0644), each replaced whole.
    pub fn save(&self, cert: &std::path::Path, key: &std::path::Path) -> Result<(), TlsError> {
        crate::write_private(key, self.key_pem.as_bytes())?;
        crate::write_public(cert, self.cert_pem.as_bytes())
    }

    /// A new end-entity certificate and key signed by this CA.
    pub fn issue(&self, spec: &LeafSpec) -> Result<Issued, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, spec.common_name.as_str());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        validity(&mut params, spec.valid_days);
        for name in &spec.dns_names {
            let ia5 = name
                .as_str()
                .try_into()
                .map_err(|_| TlsError::BadRequest(format!("DNS name {name:?} is not ASCII")))?;
            params.subject_alt_names.push(SanType::DnsName(ia5));
        }
        params.subject_alt_names.extend(spec.ip_addresses.iter().map(|ip| SanType::IpAddress(*ip)));
        if let Some(id) = &spec.identity {
            // Checked again: the fields are public.
            let id = Identity::new(id.cluster_id.clone(), id.role)?;
            let uri = id.to_uri().try_into().map_err(|_| TlsError::BadRequest("identity URI".into()))?;
            params.subject_alt_names.push(SanType::URI(uri));
        }
        let cert = params.signed_by(&key, &self.issuer)?;
        let cert_der = cert.der().clone();
        Ok(Issued {
            cert_pem: to_pem("CERTIFICATE", &cert_der),
            key_pem: to_pem("PRIVATE KEY", key.serialized_der()),
            cert_der,
        })
    }
}

/// The certificate's subject as rcgen rebuilds it: same attributes, order
/// and string types, so certificates issued under it name it exactly.
fn subject_of(cert_der: &[u8]) -> Result<DistinguishedName, TlsError> {
    let attrs = crate::der::subject(cert_der).ok_or(TlsError::BadCaCertificate(
        "its subject cannot be read (a malformed certificate, or a multi-valued name)",
    ))?;
    let mut dn = DistinguishedName::new();
    for a in attrs {
        let ty = DnType::from_oid(&a.oid);
        if dn.get(&ty).is_some() {
            return Err(TlsError::BadCaCertificate("its subject repeats an attribute"));
        }
        let text = || {
            std::str::from_utf8(a.value)
                .map(str::to_string)
                .map_err(|_| TlsError::BadCaCertificate("a subject attribute is not text"))
        };
        let unsupported = || TlsError::BadCaCertificate("a subject attribute has an unsupported string type");
        let value = match a.tag {
            0x0c => DnValue::Utf8String(text()?),
            0x13 => DnValue::PrintableString(text()?.try_into().map_err(|_| unsupported())?),
            0x16 => DnValue::Ia5String(text()?.try_into().map_err(|_| unsupported())?),
            0x14 => DnValue::TeletexString(text()?.try_into().map_err(|_| unsupported())?),
            0x1e => {
                DnValue::BmpString(rcgen::string::BmpString::from_utf16be(a.value.to_vec()).map_err(|_| unsupported())?)
            }
            0x1c => DnValue::UniversalString(
                rcgen::string::UniversalString::from_utf32be(a.value.to_vec()).map_err(|_| unsupported())?,
            ),
            _ => return Err(unsupported()),
        };
        dn.push(ty, value);
    }
    Ok(dn)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::client::danger::ServerCertVerifier;

    use super::*;
    use crate::identity::{Role, peer_identity};

    fn verify(ca: &Ca, leaf: &Issued, name: &str) -> Result<(), rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crate::provider())
            .build()
            .unwrap();
        let name = rustls_pki_types::ServerName::try_from(name.to_string()).unwrap();
        verifier.verify_server_cert(&leaf.cert_der, &[], &name, &[], rustls_pki_types::UnixTime::now()).map(|_| ())
    }

    #[test]
    fn issued_certificates_verify_against_their_ca_only_and_carry_the_identity() {
        let ca = Ca::generate("sillok test CA").unwrap();
        let spec = LeafSpec::new("gw1")
            .dns("localhost")
            .ip("127.0.0.1".parse().unwrap())
            .identity(Identity::new("test-cluster", Role::Gateway).unwrap());
        let leaf = ca.issue(&spec).unwrap();
        verify(&ca, &leaf, "localhost").unwrap();
        verify(&ca, &leaf, "127.0.0.1").unwrap();
        assert!(verify(&ca, &leaf, "example.com").is_err());
        let other = Ca::generate("another CA").unwrap();
        assert!(verify(&other, &leaf, "localhost").is_err());
        assert_eq!(
            peer_identity(&leaf.cert_der),
            Some(Identity { cluster_id: "test-cluster".into(), role: Role::Gateway })
        );
        let plain = ca.issue(&LeafSpec::new("x").dns("localhost")).unwrap();
        assert_eq!(peer_identity(&plain.cert_der), None);
        assert_eq!(peer_identity(ca.cert_der()), None);
        // Every role reads back as itself.
        for role in Role::ALL {
            let c = ca.issue(&LeafSpec::new("r").identity(Identity::new("c", role).unwrap())).unwrap();
            assert_eq!(peer_identity(&c.cert_der).map(|i| i.role), Some(role));
        }
        // Two issues differ (serials, keys).
        let again = ca.issue(&spec).unwrap();
        assert_ne!(again.cert_der, leaf.cert_der);
    }

    #[test]
    fn a_ca_reloaded_from_pem_issues_certificates_that_chain_to_it() {
        let ca = Ca::generate("sillok reloaded CA").unwrap();
        let again = Ca::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(again.cert_der(), ca.cert_der());
        let leaf = again.issue(&LeafSpec::new("n").dns("node.example")).unwrap();
        verify(&ca, &leaf, "node.example").unwrap();
        // A key that is not the certificate's is refused.
        let other = Ca::generate("other").unwrap();
        assert!(matches!(Ca::from_pem(ca.cert_pem(), other.key_pem()), Err(TlsError::BadCaCertificate(_))));
        assert!(Ca::from_pem("junk", ca.key_pem()).is_err());
        assert!(Ca::from_pem(ca.cert_pem(), "junk").is_err());
        // Nothing prints the key.
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }

    #[test]
    fn bad_requests_are_errors() {
        let ca = Ca::generate("c").unwrap();
        assert!(matches!(ca.issue(&LeafSpec::new("x").dns("bücher.example")), Err(TlsError::BadRequest(_))));
        let mut spec = LeafSpec::new("x");
        spec.identity = Some(Identity { cluster_id: "has space".into(), role: Role::Node });
        assert!(matches!(ca.issue(&spec), Err(TlsError::BadRequest(_))));
    }
}
