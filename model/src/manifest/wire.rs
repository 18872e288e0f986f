//! The compact binary encoding of a [`Manifest`]: how manifests sit in a
//! node's store and travel between gateways and nodes.
//!
//! Owns: [`encode`], [`decode`], [`FORMAT`], [`FORMAT_TAGGED`] and
//! [`FORMAT_FLAGGED`], the encoding's versions.
//!
//! Layout (integers little-endian; `str` and `bytes` are a LEB128 length,
//! then that many bytes; `map` is a LEB128 count, then key and value `str`s
//! in key order):
//!
//! ```text
//! u8   format: FORMAT (1) without tags or version id, FORMAT_TAGGED (2)
//!      with tags and no version id, FORMAT_FLAGGED (3) with a version id
//! u64  version.nanos     u64 version.tiebreak     u64 locations
//! i64  last_modified_ms  u64 size
//! (format 3 only) u8 flags: 1 = tags follow, 2 = version id (always set),
//!      4 = it is the null version; then u64 version_id.at.nanos,
//!      u64 version_id.at.tiebreak
//! str  bucket            str key                  str etag
//! u8   0 | 1, then str content_type if 1
//! map  headers           map user_metadata
//! map  tags              (format 2, and format 3 with flag 1; never empty)
//! body: u8 tag, then
//!   0 inline     bytes data
//!   1 sharded    str object_id, str codec, u8 k, u8 m, u32 block_size,
//!                u64 epoch, LEB128 count, (u8 index, u32 node) per shard
//!   2 deleted    nothing
//!   3 multipart  LEB128 count, per part: u32 number, u64 size, str etag,
//!                body (tag 0 or 1 only)
//!   4 delete marker  nothing
//! ```
//!
//! Invariants:
//! - The encoding of a manifest is a function of it (maps are ordered), so
//!   two replicas that hold one manifest hold the same bytes and the same
//!   digest ([`digest`]). A manifest without tags is format 1, byte for byte
//!   what builds from before tags wrote (so stored digests do not change); a
//!   manifest with tags is format 2, and [`decode`] refuses a format 2
//!   encoding whose tag map is empty, so no manifest has two encodings.
//!   Likewise a manifest with a version id (S3 versioning) is format 3 and
//!   only such a one: format 3 without the version id flag, with unknown
//!   flags, or with flag 1 and no tags is refused.
//! - Builds from before tags refuse format 2 (`UnknownFormat(2)`), builds
//!   from before versioning format 3: upgrade the storage nodes before the
//!   gateways (`docs/operations.md`).
//! - [`decode`] never panics and never allocates more than its input's
//!   length on any input: every length is checked against the bytes left
//!   before anything is read or reserved. Trailing bytes are an error.
//! - An inline body decoded from a [`Bytes`] shares its buffer (no copy).
//! - The fixed header (format to size) sits at fixed offsets, so a reader
//!   can take the version and location generation without decoding the rest
//!   ([`peek_order`]).

use std::collections::BTreeMap;

use bytes::Bytes;
use sillok_placement::NodeId;

use super::{Body, Manifest, Part, ShardLocation, Sharded, Version, VersionId};

/// The version of this encoding, its first byte, for a manifest without tags.
pub const FORMAT: u8 = 1;

/// The first byte of a manifest with tags: format 1 plus a tag map after the
/// user metadata.
pub const FORMAT_TAGGED: u8 = 2;

/// The first byte of a manifest with an S3 version id: a flags byte and the
/// version id after the fixed header (tags optional, by flag).
pub const FORMAT_FLAGGED: u8 = 3;

const FLAG_TAGS: u8 = 1;
const FLAG_VERSION_ID: u8 = 2;
const FLAG_NULL: u8 = 4;

/// Bytes of the fixed header: format, version, locations, last modified, size.
const FIXED: usize = 1 + 8 * 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("manifest encoding {0} is not one this build reads (it reads {FORMAT} to {FORMAT_FLAGGED})")]
    UnknownFormat(u8),
    #[error("manifest encoding ends early, at byte {0}")]
    Truncated(usize),
    #[error("manifest encoding is malformed at byte {at}: {what}")]
    Malformed { at: usize, what: &'static str },
}

/// The manifest, encoded.
pub fn encode(m: &Manifest) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len_hint(m));
    out.push(match (&m.version_id, m.tags.is_empty()) {
        (Some(_), _) => FORMAT_FLAGGED,
        (None, true) => FORMAT,
        (None, false) => FORMAT_TAGGED,
    });
    out.extend_from_slice(&m.version.nanos.to_le_bytes());
    out.extend_from_slice(&m.version.tiebreak.to_le_bytes());
    out.extend_from_slice(&m.locations.to_le_bytes());
    out.extend_from_slice(&m.last_modified_ms.to_le_bytes());
    out.extend_from_slice(&m.size.to_le_bytes());
    if let Some(id) = &m.version_id {
        let mut flags = FLAG_VERSION_ID;
        if !m.tags.is_empty() {
            flags |= FLAG_TAGS;
        }
        if id.null {
            flags |= FLAG_NULL;
        }
        out.push(flags);
        out.extend_from_slice(&id.at.nanos.to_le_bytes());
        out.extend_from_slice(&id.at.tiebreak.to_le_bytes());
    }
    put_str(&mut out, &m.bucket);
    put_str(&mut out, &m.key);
    put_str(&mut out, &m.etag);
    match &m.content_type {
        Some(ct) => {
            out.push(1);
            put_str(&mut out, ct);
        }
        None => out.push(0),
    }
    put_map(&mut out, &m.headers);
    put_map(&mut out, &m.user_metadata);
    if !m.tags.is_empty() {
        put_map(&mut out, &m.tags);
    }
    put_body(&mut out, &m.body);
    out
}

/// The first 16 bytes of the blake3 hash of an encoding: what manifest
/// replicas compare to know they hold the same manifest.
pub fn digest(encoded: &[u8]) -> [u8; 16] {
    let h = blake3::hash(encoded);
    let mut d = [0u8; 16];
    d.copy_from_slice(&h.as_bytes()[..16]);
    d
}

/// The version and location generation of an encoded manifest, from its
/// fixed header only.
pub fn peek_order(encoded: &[u8]) -> Result<(Version, u64), DecodeError> {
    let mut r = Reader { buf: encoded, at: 0 };
    let format = r.u8()?;
    if !(FORMAT..=FORMAT_FLAGGED).contains(&format) {
        return Err(DecodeError::UnknownFormat(format));
    }
    let version = Version { nanos: r.u64()?, tiebreak: r.u64()? };
    Ok((version, r.u64()?))
}

/// The S3 version id of an encoded manifest, from its header only.
pub fn peek_version_id(encoded: &[u8]) -> Result<Option<VersionId>, DecodeError> {
    let mut r = Reader { buf: encoded, at: 0 };
    let format = r.u8()?;
    if !(FORMAT..=FORMAT_FLAGGED).contains(&format) {
        return Err(DecodeError::UnknownFormat(format));
    }
    r.take(FIXED - 1)?;
    r.version_id(format)
}

/// Decodes a manifest; an inline body shares `encoded`'s buffer.
pub fn decode(encoded: &Bytes) -> Result<Manifest, DecodeError> {
    let mut r = Reader { buf: encoded, at: 0 };
    let format = r.u8()?;
    if !(FORMAT..=FORMAT_FLAGGED).contains(&format) {
        return Err(DecodeError::UnknownFormat(format));
    }
    let version = Version { nanos: r.u64()?, tiebreak: r.u64()? };
    let locations = r.u64()?;
    let last_modified_ms = r.u64()? as i64;
    let size = r.u64()?;
    let flags = if format == FORMAT_FLAGGED { encoded.get(FIXED).copied().unwrap_or(0) } else { 0 };
    let version_id = r.version_id(format)?;
    let bucket = r.string()?;
    let key = r.string()?;
    let etag = r.string()?;
    let content_type = match r.u8()? {
        0 => None,
        1 => Some(r.string()?),
        _ => return Err(r.malformed("content type flag is neither 0 nor 1")),
    };
    let headers = r.map()?;
    let user_metadata = r.map()?;
    let tags = if format == FORMAT_TAGGED || flags & FLAG_TAGS != 0 {
        let tags = r.map()?;
        if tags.is_empty() {
            // Format 1 (or no tags flag) says "no tags": one manifest, one encoding.
            return Err(r.malformed("a manifest that says it has tags has none"));
        }
        tags
    } else {
        BTreeMap::new()
    };
    let body = r.body(encoded, true)?;
    if r.at != encoded.len() {
        return Err(r.malformed("bytes after the body"));
    }
    Ok(Manifest {
        bucket,
        key,
        version,
        last_modified_ms,
        size,
        etag,
        content_type,
        headers,
        user_metadata,
        tags,
        body,
        locations,
        version_id,
    })
}

fn encoded_len_hint(m: &Manifest) -> usize {
    let body = match &m.body {
        Body::Inline { data } => data.len(),
        Body::Sharded(s) => 64 + 5 * s.shards.len(),
        Body::Multipart { parts } => parts.len() * 128,
        Body::Deleted | Body::DeleteMarker => 0,
    };
    let tags: usize = m.tags.iter().map(|(k, v)| 4 + k.len() + v.len()).sum();
    FIXED + 64 + m.bucket.len() + m.key.len() + m.etag.len() + tags + body
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_map(out: &mut Vec<u8>, m: &BTreeMap<String, String>) {
    put_varint(out, m.len() as u64);
    for (k, v) in m {
        put_str(out, k);
        put_str(out, v);
    }
}

fn put_body(out: &mut Vec<u8>, body: &Body) {
    match body {
        Body::Inline { data } => {
            out.push(0);
            put_bytes(out, data);
        }
        Body::Sharded(s) => {
            out.push(1);
            put_str(out, &s.object_id);
            put_str(out, &s.codec);
            out.push(s.k);
            out.push(s.m);
            out.extend_from_slice(&s.block_size.to_le_bytes());
            out.extend_from_slice(&s.epoch.to_le_bytes());
            put_varint(out, s.shards.len() as u64);
            for loc in &s.shards {
                out.push(loc.index);
                out.extend_from_slice(&loc.node.0.to_le_bytes());
            }
        }
        Body::Deleted => out.push(2),
        Body::DeleteMarker => out.push(4),
        Body::Multipart { parts } => {
            out.push(3);
            put_varint(out, parts.len() as u64);
            for p in parts {
                out.extend_from_slice(&p.number.to_le_bytes());
                out.extend_from_slice(&p.size.to_le_bytes());
                put_str(out, &p.etag);
                put_body(out, &p.body);
            }
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn malformed(&self, what: &'static str) -> DecodeError {
        DecodeError::Malformed { at: self.at, what }
    }

    /// Format 3's flags and version id, read right after the fixed header.
    fn version_id(&mut self, format: u8) -> Result<Option<VersionId>, DecodeError> {
        if format != FORMAT_FLAGGED {
            return Ok(None);
        }
        let flags = self.u8()?;
        if flags & !(FLAG_TAGS | FLAG_VERSION_ID | FLAG_NULL) != 0 {
            return Err(self.malformed("unknown flags"));
        }
        if flags & FLAG_VERSION_ID == 0 {
            // Without a version id the manifest is format 1 or 2.
            return Err(self.malformed("format 3 without a version id"));
        }
        let at = Version { nanos: self.u64()?, tiebreak: self.u64()? };
        Ok(Some(VersionId { at, null: flags & FLAG_NULL != 0 }))
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.buf.len() - self.at < n {
            return Err(DecodeError::Truncated(self.at));
        }
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return Err(self.malformed("length overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.malformed("length overflows 64 bits"))
    }

    /// A length, checked against the bytes left (each item takes at least
    /// `min_item` bytes), so nothing is reserved that the input cannot fill.
    fn len(&mut self, min_item: usize) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        let left = (self.buf.len() - self.at) as u64;
        if n.saturating_mul(min_item.max(1) as u64) > left {
            return Err(DecodeError::Truncated(self.at));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let n = self.len(1)?;
        let at = self.at;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Malformed { at, what: "a string is not UTF-8" })
    }

    fn map(&mut self) -> Result<BTreeMap<String, String>, DecodeError> {
        let n = self.len(2)?;
        let mut m = BTreeMap::new();
        for _ in 0..n {
            let k = self.string()?;
            let v = self.string()?;
            if m.insert(k, v).is_some() {
                return Err(self.malformed("a map names one key twice"));
            }
        }
        Ok(m)
    }

    /// A body; `top` is false for a part's (which is never multipart).
    /// Inline bytes are slices of `whole`, the buffer being decoded.
    fn body(&mut self, whole: &Bytes, top: bool) -> Result<Body, DecodeError> {
        match self.u8()? {
            0 => {
                let n = self.len(1)?;
                let start = self.at;
                self.take(n)?;
                Ok(Body::Inline { data: whole.slice(start..start + n) })
            }
            1 => {
                let object_id = self.string()?;
                let codec = self.string()?;
                let (k, m) = (self.u8()?, self.u8()?);
                let block_size = self.u32()?;
                let epoch = self.u64()?;
                let n = self.len(5)?;
                let mut shards = Vec::with_capacity(n);
                for _ in 0..n {
                    shards.push(ShardLocation { index: self.u8()?, node: NodeId(self.u32()?) });
                }
                Ok(Body::Sharded(Sharded { object_id, codec, k, m, block_size, epoch, shards }))
            }
            2 => Ok(Body::Deleted),
            4 if top => Ok(Body::DeleteMarker),
            3 if top => {
                let n = self.len(14)?;
                let mut parts = Vec::with_capacity(n);
                for _ in 0..n {
                    let number = self.u32()?;
                    let size = self.u64()?;
                    let etag = self.string()?;
                    let body = self.body(whole, false)?;
                    if !matches!(body, Body::Inline { .. } | Body::Sharded(_)) {
                        return Err(self.malformed("a part's body is neither inline nor sharded"));
                    }
                    parts.push(Part { number, size, etag, body });
                }
                Ok(Body::Multipart { parts })
            }
            3 => Err(self.malformed("a part's body is multipart")),
            _ => Err(self.malformed("unknown body kind")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof!["[a-z0-9/._-]{0,24}", "\\PC{0,8}"]
    }

    fn sharded() -> impl Strategy<Value = Sharded> {
        (
            "[0-9a-f]{32}",
            1u8..=16,
            0u8..=8,
            any::<u32>(),
            any::<u64>(),
            prop::collection::vec((any::<u8>(), any::<u32>()), 0..12),
        )
            .prop_map(|(object_id, k, m, block_size, epoch, shards)| Sharded {
                object_id,
                codec: "rs-vandermonde".into(),
                k,
                m,
                block_size,
                epoch,
                shards: shards.into_iter().map(|(index, n)| ShardLocation { index, node: NodeId(n) }).collect(),
            })
    }

    fn part_body() -> impl Strategy<Value = Body> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300).prop_map(|d| Body::Inline { data: d.into() }),
            sharded().prop_map(Body::Sharded),
        ]
    }

    fn body() -> impl Strategy<Value = Body> {
        prop_oneof![
            part_body(),
            Just(Body::Deleted),
            Just(Body::DeleteMarker),
            prop::collection::vec((any::<u32>(), any::<u64>(), "[0-9a-f]{32}", part_body()), 0..5).prop_map(|ps| {
                Body::Multipart {
                    parts: ps.into_iter().map(|(number, size, etag, body)| Part { number, size, etag, body }).collect(),
                }
            }),
        ]
    }

    fn manifest() -> impl Strategy<Value = Manifest> {
        (
            (text(), text(), any::<u64>(), any::<u64>(), any::<i64>(), any::<u64>()),
            (text(), prop::option::of(text())),
            prop::collection::btree_map(text(), text(), 0..4),
            prop::collection::btree_map(text(), text(), 0..4),
            // Tags: none half of the time (format 1), else up to 10 (format 2).
            prop_oneof![Just(BTreeMap::new()), prop::collection::btree_map(text(), text(), 1..=10)],
            body(),
            any::<u64>(),
            // A version id a third of the time (format 3).
            prop_oneof![
                Just(None),
                Just(None),
                (any::<u64>(), any::<u64>(), any::<bool>())
                    .prop_map(|(nanos, tiebreak, null)| Some(VersionId { at: Version { nanos, tiebreak }, null })),
            ],
        )
            .prop_map(
                |(
                    (bucket, key, nanos, tiebreak, lm, size),
                    (etag, content_type),
                    headers,
                    user_metadata,
                    tags,
                    body,
                    locations,
                    version_id,
                )| {
                    Manifest {
                        bucket,
                        key,
                        version: Version { nanos, tiebreak },
                        last_modified_ms: lm,
                        size,
                        etag,
                        content_type,
                        headers,
                        user_metadata,
                        tags,
                        body,
                        locations,
                        version_id,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn every_manifest_comes_back_as_it_was(m in manifest()) {
            let bytes = Bytes::from(encode(&m));
            prop_assert_eq!(&decode(&bytes).unwrap(), &m);
            prop_assert_eq!(peek_order(&bytes).unwrap(), (m.version, m.locations));
            // Canonical: encoding the decoded manifest gives the same bytes.
            prop_assert_eq!(encode(&decode(&bytes).unwrap()), bytes.to_vec());
            let format = match (m.version_id, m.tags.is_empty()) {
                (Some(_), _) => FORMAT_FLAGGED,
                (None, true) => FORMAT,
                (None, false) => FORMAT_TAGGED,
            };
            prop_assert_eq!(bytes[0], format);
            prop_assert_eq!(peek_version_id(&bytes).unwrap(), m.version_id);
        }

        #[test]
        fn a_version_id_only_adds_its_flags_and_id_after_the_fixed_header(m in manifest()) {
            // Format 3 is format 1 or 2 with byte 0 set to 3 and 17 bytes
            // inserted after the fixed header, and nothing else.
            let mut plain = m.clone();
            plain.version_id = None;
            let (with, without) = (encode(&m), encode(&plain));
            match m.version_id {
                None => prop_assert_eq!(with, without),
                Some(id) => {
                    prop_assert_eq!(with[0], FORMAT_FLAGGED);
                    prop_assert_eq!(&with[1..FIXED], &without[1..FIXED]);
                    let flags = with[FIXED];
                    prop_assert_eq!(flags & FLAG_TAGS != 0, !m.tags.is_empty());
                    prop_assert_eq!(flags & FLAG_NULL != 0, id.null);
                    prop_assert_eq!(&with[FIXED + 17..], &without[FIXED..]);
                }
            }
        }

        #[test]
        fn tags_only_add_their_map_and_the_format_byte(m in manifest()) {
            // The tagged encoding is the untagged one with byte 0 set to 2 and
            // the tag map inserted after the user metadata, and nothing else.
            let m = Manifest { version_id: None, ..m };
            let mut plain = m.clone();
            plain.tags.clear();
            let (with, without) = (encode(&m), encode(&plain));
            let mut map = Vec::new();
            put_map(&mut map, &m.tags);
            if m.tags.is_empty() {
                prop_assert_eq!(with, without);
            } else {
                prop_assert_eq!(with.len(), without.len() + map.len());
                prop_assert_eq!(with[0], FORMAT_TAGGED);
                prop_assert_eq!(without[0], FORMAT);
                let inserted_at = (1..=without.len()).find(|&i| {
                    with[1..i] == without[1..i] && with[i..i + map.len()] == map[..] && with[i + map.len()..] == without[i..]
                });
                prop_assert!(inserted_at.is_some(), "the tagged encoding is not the plain one with the tag map inserted");
            }
        }

        #[test]
        fn any_bytes_decode_to_a_manifest_or_an_error(raw in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode(&Bytes::from(raw));
        }

        #[test]
        fn every_cut_or_flipped_encoding_is_refused_or_decodes_without_panic(
            m in manifest(), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(), bit in 0u8..8
        ) {
            let full = encode(&m);
            let at = cut.index(full.len());
            prop_assert!(decode(&Bytes::copy_from_slice(&full[..at])).is_err(), "a cut encoding decoded");
            let mut flipped = full.clone();
            let i = flip.index(flipped.len());
            flipped[i] ^= 1 << bit;
            let _ = decode(&Bytes::from(flipped));
        }
    }

    /// A small manifest with every field set, as format 1 lays it out.
    fn golden() -> (Manifest, Vec<u8>) {
        let mut m = Manifest::tombstone("b", "k");
        m.version = Version { nanos: 0x0102, tiebreak: 3 };
        m.locations = 4;
        m.last_modified_ms = 5;
        m.size = 2;
        m.etag = "e".into();
        m.content_type = Some("t".into());
        m.headers.insert("h".into(), "1".into());
        m.user_metadata.insert("u".into(), "2".into());
        m.body = Body::Inline { data: Bytes::from_static(b"hi") };
        let mut b = vec![1u8];
        for n in [0x0102u64, 3, 4, 5, 2] {
            b.extend_from_slice(&n.to_le_bytes());
        }
        b.extend_from_slice(&[1, b'b', 1, b'k', 1, b'e', 1, 1, b't']);
        b.extend_from_slice(&[1, 1, b'h', 1, b'1', 1, 1, b'u', 1, b'2']);
        b.extend_from_slice(&[0, 2, b'h', b'i']);
        (m, b)
    }

    #[test]
    fn a_manifest_without_tags_encodes_as_before_tags_existed() {
        let (m, before) = golden();
        assert_eq!(encode(&m), before);
        assert_eq!(decode(&Bytes::from(before)).unwrap(), m);
    }

    #[test]
    fn a_manifest_with_tags_is_format_2_with_the_tags_after_the_user_metadata() {
        let (mut m, before) = golden();
        m.tags.insert("project".into(), "x".into());
        m.tags.insert("empty".into(), String::new());
        let enc = encode(&m);
        let mut want = before.clone();
        want[0] = FORMAT_TAGGED;
        // After the fixed header, bucket, key, etag, content type and the two maps.
        let at = FIXED + 9 + 10;
        let map = [&[2u8, 5][..], b"empty", &[0, 7], b"project", &[1, b'x']].concat();
        want.splice(at..at, map);
        assert_eq!(enc, want);
        let back = decode(&Bytes::from(enc.clone())).unwrap();
        assert_eq!(back, m);
        assert_eq!(peek_order(&enc).unwrap(), (m.version, m.locations));
    }

    #[test]
    fn format_3_is_refused_without_a_version_id_or_with_unknown_flags_or_an_empty_tag_map() {
        let (mut m, _) = golden();
        m.version_id = Some(VersionId { at: Version { nanos: 9, tiebreak: 8 }, null: false });
        let enc = encode(&m);
        assert_eq!(decode(&Bytes::from(enc.clone())).unwrap(), m);
        for flags in [0u8, FLAG_NULL, 8 | FLAG_VERSION_ID] {
            let mut bad = enc.clone();
            bad[FIXED] = flags;
            assert!(matches!(decode(&Bytes::from(bad)), Err(DecodeError::Malformed { .. })), "flags {flags}");
        }
        let mut empty_tags = enc.clone();
        empty_tags[FIXED] |= FLAG_TAGS;
        empty_tags.insert(FIXED + 17 + 9 + 10, 0);
        assert!(matches!(decode(&Bytes::from(empty_tags)), Err(DecodeError::Malformed { .. })));
    }

    #[test]
    fn version_ids_sort_newest_first_and_parse_back() {
        let older = Version { nanos: 1_000, tiebreak: u64::MAX };
        let newer = Version { nanos: 1_001, tiebreak: 0 };
        assert!(VersionId::id_of(newer) < VersionId::id_of(older));
        assert_eq!(VersionId::parse_id(&VersionId::id_of(older)), Some(older));
        assert_eq!(VersionId::parse_id("null"), None);
        assert_eq!(VersionId::parse_id(&"g".repeat(32)), None);
        assert_eq!(VersionId { at: older, null: true }.to_s3(), "null");
    }

    #[test]
    fn a_format_2_encoding_without_tags_is_refused() {
        // The only other encoding a tagless manifest could have: refused, so
        // replicas of one manifest always hold the same bytes.
        let (_, before) = golden();
        let mut other = before.clone();
        other[0] = FORMAT_TAGGED;
        other.insert(FIXED + 9 + 10, 0);
        assert!(matches!(decode(&Bytes::from(other)), Err(DecodeError::Malformed { .. })));
    }

    #[test]
    fn an_inline_body_shares_the_buffer() {
        let mut m = Manifest::tombstone("b", "k");
        m.body = Body::Inline { data: Bytes::from(vec![7u8; 1000]) };
        let bytes = Bytes::from(encode(&m));
        let Body::Inline { data } = decode(&bytes).unwrap().body else { panic!("not inline") };
        let inside = bytes.as_ptr_range();
        assert!(inside.contains(&data.as_ptr()), "the inline body was copied out of the encoding");
    }

    #[test]
    fn other_formats_and_huge_lengths_are_refused_without_allocating() {
        let mut enc = encode(&Manifest::tombstone("b", "k"));
        enc[0] = 9;
        assert_eq!(decode(&Bytes::from(enc)), Err(DecodeError::UnknownFormat(9)));
        // A bucket name claiming 2^62 bytes.
        let mut huge = vec![FORMAT];
        huge.extend_from_slice(&[0u8; 40]);
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f]);
        assert!(matches!(decode(&Bytes::from(huge)), Err(DecodeError::Truncated(_))));
    }

    #[test]
    fn a_thumbnail_manifest_costs_a_few_dozen_bytes_beyond_its_body() {
        let mut m = Manifest::tombstone("photos", "chat/2026/12/06/abcdef.jpg");
        m.etag = "0123456789abcdef0123456789abcdef".into();
        m.content_type = Some("image/jpeg".into());
        m.body = Body::Inline { data: Bytes::from(vec![1u8; 65_536]) };
        let n = encode(&m).len();
        assert!(n < 65_536 + 140, "{n} bytes");
    }
}
