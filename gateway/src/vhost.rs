//! Which bucket a request names: virtual-host style (`Host: <bucket>.<domain>`
//! for one of the configured base domains) or path style (`/<bucket>/<key>`,
//! any other host, including IP addresses and the base domains themselves).
//! Ports are ignored when matching, and so is the case of the host.

use s3s::S3Result;
use s3s::host::{S3Host, VirtualHost};

#[derive(Debug, Clone, Default)]
pub struct VirtualHosts {
    domains: Vec<String>,
}

impl VirtualHosts {
    pub fn new(domains: &[String]) -> Result<Self, String> {
        let mut out = Vec::new();
        for d in domains {
            let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
            if d.is_empty() || d.contains(':') || d.contains('/') {
                return Err(format!("invalid virtual-host domain {d:?}: give a host name such as s3.example.com"));
            }
            out.push(d);
        }
        // Longest first, so that s3.example.com wins over example.com.
        out.sort_by_key(|d| std::cmp::Reverse(d.len()));
        Ok(VirtualHosts { domains: out })
    }

    /// The bucket named by `host`, if it is `<bucket>.<domain>`.
    pub fn bucket_of<'a>(&self, host: &'a str) -> Option<&'a str> {
        let name = strip_port(host);
        self.domains.iter().find_map(|d| {
            let lower_ends = name.len() > d.len() + 1 && name[name.len() - d.len()..].eq_ignore_ascii_case(d);
            if lower_ends && name.as_bytes()[name.len() - d.len() - 1] == b'.' {
                Some(&name[..name.len() - d.len() - 1])
            } else {
                None
            }
        })
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host.split_once(']').map(|(h, _)| &host[..h.len() + 1]).unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

impl S3Host for VirtualHosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        Ok(match self.bucket_of(host) {
            Some(bucket) => VirtualHost::new(strip_port(host)).with_bucket(bucket),
            None => VirtualHost::new(strip_port(host)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_and_path_style() {
        let v = VirtualHosts::new(&["s3.example.com".into(), "localhost".into()]).unwrap();
        assert_eq!(v.bucket_of("photos.s3.example.com"), Some("photos"));
        assert_eq!(v.bucket_of("photos.s3.example.com:9000"), Some("photos"));
        assert_eq!(v.bucket_of("my.dotted.bucket.localhost:9000"), Some("my.dotted.bucket"));
        assert_eq!(v.bucket_of("Photos.S3.Example.com"), Some("Photos"));
        assert_eq!(v.bucket_of("s3.example.com"), None);
        assert_eq!(v.bucket_of("localhost:9000"), None);
        assert_eq!(v.bucket_of("127.0.0.1:9000"), None);
        assert_eq!(v.bucket_of("[::1]:9000"), None);
        assert_eq!(v.bucket_of("xs3.example.com"), None);
        assert_eq!(v.bucket_of(".localhost"), None);
        assert!(VirtualHosts::new(&["bad:80".into()]).is_err());
    }
}
