//! S3's additional checksums (`x-amz-checksum-{crc32,crc32c,crc64nvme,sha1,sha256}`).
//!
//! A client names one algorithm per request and sends its value either as a
//! header or as an aws-chunked trailer (known only once the body has been
//! read). The gateway computes the same checksum in the pass that computes the
//! MD5, compares, and refuses the upload (nothing is stored) on a mismatch.
//! Values are kept with the object, base64 as on the wire, under the header's
//! own name, and returned when a client asks with `x-amz-checksum-mode`.
//! Multipart objects get S3's composite checksum: the checksum of the parts'
//! raw checksums, then `-N`.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use s3s::crypto::{Checksum as _, Crc32, Crc32c, Crc64Nvme, Sha1, Sha256};

/// Where a multipart object's checksum type is kept (`COMPOSITE`).
pub const TYPE_HEADER: &str = "x-amz-checksum-type";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl Algorithm {
    pub const ALL: [Algorithm; 5] =
        [Algorithm::Crc32, Algorithm::Crc32c, Algorithm::Crc64Nvme, Algorithm::Sha1, Algorithm::Sha256];

    /// From S3's algorithm name (`CRC32`, `crc32c`, ...), case-insensitively.
    pub fn parse(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name().eq_ignore_ascii_case(name.trim()))
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "CRC32",
            Algorithm::Crc32c => "CRC32C",
            Algorithm::Crc64Nvme => "CRC64NVME",
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
        }
    }

    /// The header (and trailer) that carries this checksum.
    pub fn header(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "x-amz-checksum-crc32",
            Algorithm::Crc32c => "x-amz-checksum-crc32c",
            Algorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
            Algorithm::Sha1 => "x-amz-checksum-sha1",
            Algorithm::Sha256 => "x-amz-checksum-sha256",
        }
    }

    fn digest_len(self) -> usize {
        match self {
            Algorithm::Crc32 | Algorithm::Crc32c => 4,
            Algorithm::Crc64Nvme => 8,
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
        }
    }

    /// Whether `value` is well-formed base64 of the right length for this algorithm.
    pub fn valid_value(self, value: &str) -> bool {
        STANDARD.decode(value.trim()).is_ok_and(|b| b.len() == self.digest_len())
    }

    /// The checksum of `data` in one call, base64.
    pub fn of(self, data: &[u8]) -> String {
        let mut h = Hasher::new(self);
        h.update(data);
        h.finish()
    }

    /// S3's composite checksum of a multipart object: the checksum of the
    /// parts' decoded checksums, then `-<number of parts>`.
    pub fn composite(self, part_values: &[String]) -> Option<String> {
        let mut h = Hasher::new(self);
        for v in part_values {
            h.update(&STANDARD.decode(v.trim()).ok()?);
        }
        Some(format!("{}-{}", h.finish(), part_values.len()))
    }
}

/// The checksum of `a ‖ b` from the checksums of `a` and `b` (base64) and
/// the length of `b`: S3's FULL_OBJECT checksum of a multipart object, for
/// the CRC algorithms (SHA digests cannot be combined).
pub fn combine(algorithm: Algorithm, a: &str, b: &str, b_len: u64) -> Option<String> {
    use crc_fast::CrcAlgorithm;
    let (crc, width) = match algorithm {
        Algorithm::Crc32 => (CrcAlgorithm::Crc32IsoHdlc, 32),
        Algorithm::Crc32c => (CrcAlgorithm::Crc32Iscsi, 32),
        Algorithm::Crc64Nvme => (CrcAlgorithm::Crc64Nvme, 64),
        Algorithm::Sha1 | Algorithm::Sha256 => return None,
    };
    let decode = |v: &str| -> Option<u64> {
        let bytes = STANDARD.decode(v.trim()).ok()?;
        (bytes.len() == width / 8).then(|| bytes.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
    };
    let combined = crc_fast::checksum_combine(crc, decode(a)?, decode(b)?, b_len);
    let bytes = combined.to_be_bytes();
    Some(STANDARD.encode(&bytes[8 - width / 8..]))
}

/// A running checksum of one algorithm.
pub enum Hasher {
    Crc32(Crc32),
    Crc32c(Crc32c),
    Crc64Nvme(Crc64Nvme),
    Sha1(Sha1),
    Sha256(Sha256),
}

impl Hasher {
    pub fn new(a: Algorithm) -> Hasher {
        match a {
            Algorithm::Crc32 => Hasher::Crc32(Crc32::new()),
            Algorithm::Crc32c => Hasher::Crc32c(Crc32c::new()),
            Algorithm::Crc64Nvme => Hasher::Crc64Nvme(Crc64Nvme::new()),
            Algorithm::Sha1 => Hasher::Sha1(Sha1::new()),
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Crc32(h) => h.update(data),
            Hasher::Crc32c(h) => h.update(data),
            Hasher::Crc64Nvme(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    /// The checksum, base64 as S3 sends it.
    pub fn finish(self) -> String {
        match self {
            Hasher::Crc32(h) => STANDARD.encode(h.finalize()),
            Hasher::Crc32c(h) => STANDARD.encode(h.finalize()),
            Hasher::Crc64Nvme(h) => STANDARD.encode(h.finalize()),
            Hasher::Sha1(h) => STANDARD.encode(h.finalize()),
            Hasher::Sha256(h) => STANDARD.encode(h.finalize()),
        }
    }
}

/// Fetches a value that arrives after the body (an aws-chunked trailer).
pub type Later = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// The checksum a client asked for on an upload, and the value it claims.
#[derive(Clone)]
pub struct Expected {
    pub algorithm: Algorithm,
    /// From a header: known before the body.
    pub value: Option<String>,
    /// From a trailer: read once the body has ended.
    pub trailer: Option<Later>,
}

impl fmt::Debug for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expected")
            .field("algorithm", &self.algorithm)
            .field("value", &self.value)
            .field("trailer", &self.trailer.is_some())
            .finish()
    }
}

impl Expected {
    /// The claimed value, once the body has been read (None: the client
    /// named the algorithm but sent no value, so the computed one is kept).
    pub fn claimed(&self) -> Option<String> {
        self.value.clone().or_else(|| self.trailer.as_ref().and_then(|t| t()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // Values S3 documents / returns for the ASCII body "hello world".
        assert_eq!(Algorithm::Crc32.of(b"hello world"), "DUoRhQ==");
        assert_eq!(Algorithm::Sha256.of(b"hello world"), "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=");
        assert_eq!(Algorithm::Sha1.of(b"hello world"), "Kq5sNclPz7QV2+lfQIuc6R7oRu0=");
    }

    #[test]
    fn parse_and_validate() {
        assert_eq!(Algorithm::parse("crc32c"), Some(Algorithm::Crc32c));
        assert_eq!(Algorithm::parse("CRC64NVME"), Some(Algorithm::Crc64Nvme));
        assert_eq!(Algorithm::parse("md5"), None);
        assert!(Algorithm::Crc32.valid_value("DUoRhQ=="));
        assert!(!Algorithm::Crc32.valid_value("DUoRhQ"));
        assert!(!Algorithm::Sha256.valid_value("DUoRhQ=="));
    }

    #[test]
    fn combining_crcs_equals_the_crc_of_the_concatenation() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for a in [Algorithm::Crc32, Algorithm::Crc32c, Algorithm::Crc64Nvme] {
            for cut in [0usize, 1, 7, 4096, 150_001, 299_999, 300_000] {
                let (x, y) = data.split_at(cut);
                let got = combine(a, &a.of(x), &a.of(y), y.len() as u64).unwrap();
                assert_eq!(got, a.of(&data), "{a:?} cut at {cut}");
            }
        }
        assert!(combine(Algorithm::Sha256, "", "", 1).is_none());
    }

    #[test]
    fn composite_counts_parts_and_changes_with_any_part() {
        let a = Algorithm::Crc32.of(b"a");
        let b = Algorithm::Crc32.of(b"b");
        let ab = Algorithm::Crc32.composite(&[a.clone(), b.clone()]).unwrap();
        assert!(ab.ends_with("-2"));
        assert_ne!(ab, Algorithm::Crc32.composite(&[b, a]).unwrap());
        assert!(Algorithm::Crc32.composite(&["not base64!".into()]).is_none());
    }
}
