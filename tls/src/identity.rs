//! What a Sillok certificate says about its holder: the cluster it belongs
//! to and its role. Both are in one subject-alternative-name URI,
//! `sillok://<cluster-id>/<role>` (e.g. `sillok://prod-kr/node`), beside the
//! certificate's DNS names and IP addresses; the common name carries no
//! meaning. A certificate has at most one such URI: one with none, or with
//! several, or with one that does not parse, has no identity
//! (`peer_identity` answers `None`).
//!
//! A cluster id is 1 to 63 characters of `a-z`, `A-Z`, `0-9`, `-`, `_` and
//! `.` (so it sits in a URI's host part unescaped). Reading the URI back
//! scans the certificate's DER (`crate::der`); it trusts nothing by itself:
//! only a certificate that a verifier has already chained to the cluster's CA
//! should be asked.

use crate::TlsError;

/// A Sillok process's part in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Gateway,
    Node,
    Catalog,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Gateway, Role::Node, Role::Catalog, Role::Admin];

    /// Its name in the certificate's URI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Node => "node",
            Role::Catalog => "catalog",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The cluster and role a certificate names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub cluster_id: String,
    pub role: Role,
}

const SCHEME: &str = "sillok://";

impl Identity {
    /// Checks the cluster id (see the module's comment).
    pub fn new(cluster_id: impl Into<String>, role: Role) -> Result<Identity, TlsError> {
        let cluster_id = cluster_id.into();
        if !valid_cluster_id(&cluster_id) {
            return Err(TlsError::BadRequest(format!(
                "cluster id {cluster_id:?}: 1 to 63 characters of letters, digits, '-', '_' and '.'"
            )));
        }
        Ok(Identity { cluster_id, role })
    }

    /// The subject-alternative-name URI that carries it.
    pub fn to_uri(&self) -> String {
        format!("{SCHEME}{}/{}", self.cluster_id, self.role)
    }

    /// Reads a URI made by `to_uri`.
    pub fn from_uri(uri: &str) -> Option<Identity> {
        let (cluster, role) = uri.strip_prefix(SCHEME)?.split_once('/')?;
        let role = Role::parse(role)?;
        valid_cluster_id(cluster).then(|| Identity { cluster_id: cluster.to_string(), role })
    }
}

fn valid_cluster_id(s: &str) -> bool {
    (1..=63).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The identity an end-entity certificate (DER) names, if it names exactly
/// one. Verify the certificate first: this only reads it.
pub fn peer_identity(cert_der: &[u8]) -> Option<Identity> {
    let uris = crate::der::san_uris(cert_der)?;
    let mut found = uris.into_iter().filter(|u| u.starts_with(SCHEME));
    let one = found.next()?;
    if found.next().is_some() {
        return None;
    }
    Identity::from_uri(&one)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip_and_bad_ones_are_refused() {
        for role in Role::ALL {
            let id = Identity::new("prod-kr.1", role).unwrap();
            assert_eq!(Identity::from_uri(&id.to_uri()), Some(id));
        }
        assert_eq!(Identity::new("c", Role::Node).unwrap().to_uri(), "sillok://c/node");
        for bad in ["", "a/b", "a b", "ü", &"x".repeat(64)] {
            assert!(Identity::new(bad, Role::Node).is_err(), "{bad:?}");
        }
        for bad in ["sillok://c/king", "sillok://c", "https://c/node", "sillok:///node", "sillok://c/node/x"] {
            assert_eq!(Identity::from_uri(bad), None, "{bad}");
        }
    }
}
