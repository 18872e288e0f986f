//! `manifest_json`: object manifests (`sillok_model::manifest::Manifest`)
//! read from JSON, as nodes read them from their store and gateways from nodes.
//!
//! Input: the JSON bytes.
//!
//! Invariant: nothing panics; a manifest that parses serialises to JSON that
//! parses back to an equal manifest.

use sillok_model::manifest::Manifest;

pub fn run(data: &[u8]) {
    let Ok(m) = serde_json::from_slice::<Manifest>(data) else { return };
    let _ = m.is_deleted();
    let json = serde_json::to_vec(&m).expect("a manifest serialises");
    match serde_json::from_slice::<Manifest>(&json) {
        Ok(again) => assert_eq!(again, m, "{}", String::from_utf8_lossy(&json)),
        Err(e) => panic!("{m:?} serialised as {}, which does not parse: {e}", String::from_utf8_lossy(&json)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_tombstone_round_trips() {
        let t = sillok_model::manifest::Manifest::tombstone("b", "k");
        super::run(&serde_json::to_vec(&t).unwrap());
    }
}
