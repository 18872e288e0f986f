//! `manifest_binary`: object manifests in their binary encoding
//! (`sillok_model::manifest::wire`), as nodes read them from their store and
//! gateways from nodes.
//!
//! Input: the encoded bytes.
//!
//! Invariants: nothing panics; a manifest that decodes encodes to bytes that
//! decode to an equal manifest, and its header names the same version and
//! location generation as the decoded manifest; the re-encoding is format 2
//! exactly when the manifest has tags.

use bytes::Bytes;
use sillok_model::manifest::wire;

pub fn run(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);
    let Ok(m) = wire::decode(&bytes) else { return };
    assert_eq!(wire::peek_order(data).ok(), Some((m.version, m.locations)), "the header disagrees with the manifest");
    let again = Bytes::from(wire::encode(&m));
    assert_eq!(again[0] == wire::FORMAT_TAGGED, !m.tags.is_empty(), "the format byte disagrees with the tags");
    assert_eq!(wire::decode(&again).as_ref(), Ok(&m), "{m:?} does not survive its own encoding");
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_tombstone_round_trips() {
        let t = sillok_model::manifest::Manifest::tombstone("b", "k");
        super::run(&sillok_model::manifest::wire::encode(&t));
    }
}
