//! Which hash places a manifest and its shards, and the object ids that carry it.
//!
//! Owns: the gateway's internal namespaces ([`UPLOADS`], [`PARTS`],
//! [`VERSIONS`]) and the
//! rule that places their records with the object they belong to, and the
//! shape of object ids.
//!
//! Invariants:
//! - Every manifest that can refer to a shard lies in the PG of the shard's
//!   object id: an object's manifest at `hash(bucket, key)`; its multipart
//!   upload record and parts, and the records of its S3 versions, at the
//!   same hash ([`placement_hash`] reads the owner out of their keys); and
//!   the shards written for any of them carry
//!   that hash in the first 16 hex digits of their object id
//!   ([`new_object_id`]). So "does anything still refer to this shard?" is a
//!   question for one PG's manifest replicas, and a scan of one hash there.
//! - Object ids are 32 lowercase hex digits. Ids made here have digit 16 in
//!   `0..=7`; ids made before (UUID v4, whose variant digit 16 is always
//!   `8..=b`) carry no hash, and [`object_id_hash`] says so (`None`), so
//!   nothing ever takes a random prefix for a placement.

use sillok_placement::{PgId, PlacementMap, key_hash};

/// Upload records: key `<bucket>/<object key>/<upload id>`.
pub const UPLOADS: &str = ".sillok:uploads";
/// Parts: key `<bucket>/<object key>/<upload id>/<part number, 5 digits>`.
pub const PARTS: &str = ".sillok:parts";

/// Version records (S3 versioning): key `<bucket>/<object key>` ‖
/// [`VERSION_SEPARATOR`] ‖ `<version id>` ([`version_record_key`]). The
/// separator sorts before every other character, so a bucket's records
/// sort by object key, then newest version first (version ids do).
pub const VERSIONS: &str = ".sillok:versions";

/// Between an object key and a version id in a [`VERSIONS`] key.
pub const VERSION_SEPARATOR: char = '\0';

/// The [`VERSIONS`] key of one version of `bucket/key`.
pub fn version_record_key(bucket: &str, key: &str, version_id: &str) -> String {
    format!("{bucket}/{key}{VERSION_SEPARATOR}{version_id}")
}

/// The bucket, key and version id a [`VERSIONS`] key names.
pub fn parse_version_record_key(record: &str) -> Option<(&str, &str, &str)> {
    let (object, id) = record.rsplit_once(VERSION_SEPARATOR)?;
    let (bucket, key) = object.split_once('/')?;
    Some((bucket, key, id))
}

/// The bucket and key whose hash places `bucket/key`: the object itself, or
/// for an upload record, part or version record, the object it belongs to.
/// Keys of the internal namespaces that do not parse place as themselves.
pub fn owner<'a>(bucket: &'a str, key: &'a str) -> (&'a str, &'a str) {
    let rest = match bucket {
        UPLOADS => key.rsplit_once('/').map(|(r, _id)| r),
        PARTS => key.rsplit_once('/').and_then(|(r, _n)| r.rsplit_once('/')).map(|(r, _id)| r),
        VERSIONS => key.rsplit_once(VERSION_SEPARATOR).map(|(r, _id)| r),
        _ => None,
    };
    match rest.and_then(|r| r.split_once('/')) {
        Some((b, k)) => (b, k),
        None => (bucket, key),
    }
}

/// The 64-bit hash that places `bucket/key` (see [`owner`]).
pub fn placement_hash(bucket: &str, key: &str) -> u64 {
    let (b, k) = owner(bucket, key);
    key_hash(b, k)
}

/// The PG of `bucket/key` in `map`.
pub fn pg_of(map: &PlacementMap, bucket: &str, key: &str) -> PgId {
    map.pg_of_hash(placement_hash(bucket, key))
}

/// A fresh object id for shards placed by `hash`: the hash as 16 hex digits,
/// then 63 random bits whose first digit is `0..=7`.
pub fn new_object_id(hash: u64) -> String {
    let tail = rand::random::<u64>() >> 1;
    format!("{hash:016x}{tail:016x}")
}

/// The placement hash an object id carries, if it was made by [`new_object_id`].
pub fn object_id_hash(object_id: &str) -> Option<u64> {
    let b = object_id.as_bytes();
    if b.len() != 32 || !matches!(b[16], b'0'..=b'7') {
        return None;
    }
    u64::from_str_radix(&object_id[..16], 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_and_parts_place_with_their_object() {
        let h = placement_hash("photos", "a/b/c.jpg");
        assert_eq!(placement_hash(UPLOADS, "photos/a/b/c.jpg/0123abcd"), h);
        assert_eq!(placement_hash(PARTS, "photos/a/b/c.jpg/0123abcd/00007"), h);
        assert_eq!(owner(PARTS, "nonsense"), (PARTS, "nonsense"));
        assert_ne!(placement_hash("photos", "a/b/c.jpg2"), h);
    }

    #[test]
    fn version_records_place_with_their_object_and_sort_by_key_then_newest_first() {
        let h = placement_hash("photos", "a/b\0/c.jpg");
        let rec = version_record_key("photos", "a/b\0/c.jpg", "00ff");
        assert_eq!(placement_hash(VERSIONS, &rec), h);
        assert_eq!(parse_version_record_key(&rec), Some(("photos", "a/b\0/c.jpg", "00ff")));
        // "a" < "a/b" < "a0" as S3 orders keys; each key's records stay together.
        let keys = ["a", "a/b", "a0"];
        let mut recs: Vec<String> =
            keys.iter().flat_map(|k| ["ff", "00"].map(|id| version_record_key("p", k, id))).collect();
        recs.sort();
        let order: Vec<(&str, &str)> =
            recs.iter().map(|r| parse_version_record_key(r).map(|(_, k, id)| (k, id)).unwrap()).collect();
        assert_eq!(order, [("a", "00"), ("a", "ff"), ("a/b", "00"), ("a/b", "ff"), ("a0", "00"), ("a0", "ff")]);
    }

    #[test]
    fn object_ids_carry_the_hash_and_legacy_ids_carry_none() {
        for h in [0u64, 1, u64::MAX, 0x0123_4567_89ab_cdef] {
            let id = new_object_id(h);
            assert_eq!(id.len(), 32);
            assert_eq!(object_id_hash(&id), Some(h));
        }
        // A UUID v4's digit 16 is its variant, 8..=b.
        for variant in ["8", "9", "a", "b"] {
            let r = format!("{:032x}", rand::random::<u128>());
            let legacy = format!("{}{variant}{}", &r[..16], &r[17..]);
            assert_eq!(object_id_hash(&legacy), None, "{legacy}");
        }
        assert_eq!(object_id_hash("zz"), None);
    }
}
