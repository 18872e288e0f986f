//! Replays every file under `fuzz/seeds/<target>/` and `fuzz/regressions/<target>/`
//! through the target's harness, on stable Rust, as part of `cargo test
//! --workspace`. A regression file is an input a fuzz target once failed on;
//! its name says what it found (see `fuzz/README.md`).

use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<PathBuf> = entries.map(|e| e.expect("directory entry").path()).filter(|p| p.is_file()).collect();
    v.sort();
    v
}

fn replay(kind: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(kind);
    let mut n = 0;
    for (target, run) in sillok_fuzz_harness::TARGETS {
        for path in files(&root.join(target)) {
            let data = std::fs::read(&path).expect("readable input");
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target} fails on {}", path.display());
            n += 1;
        }
    }
    n
}

#[test]
fn seeds_replay_cleanly() {
    let n = replay("seeds");
    // Every target has seeds; an empty or missing directory means a broken checkout.
    for (target, _) in sillok_fuzz_harness::TARGETS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../seeds").join(target);
        assert!(!files(&dir).is_empty(), "no seeds for {target} in {}", dir.display());
    }
    assert!(n > 0);
}

#[test]
fn committed_seeds_are_current() {
    // The files must be what `seeds::all()` builds today, so that a change to
    // the input format cannot leave stale seeds behind unnoticed.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../seeds");
    for (target, name, data) in sillok_fuzz_harness::seeds::all() {
        let path = root.join(target).join(&name);
        let on_disk = std::fs::read(&path).unwrap_or_default();
        assert!(
            on_disk == data,
            "{} is stale: run `cargo run -p sillok-fuzz-harness --example write_seeds`",
            path.display()
        );
    }
}

#[test]
fn regressions_replay_cleanly() {
    replay("regressions");
}

#[test]
fn known_dependency_panics_are_contained() {
    // Each known panic (s3_request::KNOWN_PANICS) keeps its regression input,
    // and that input either still panics in the known place (builds with
    // overflow checks) or is refused with a 4xx (without them, or once the
    // dependency is fixed: then drop the entry from KNOWN_PANICS).
    use sillok_fuzz_harness::s3_request::{KNOWN_PANICS, Outcome, outcome};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../regressions/s3_request");
    for known in &KNOWN_PANICS {
        let inputs: Vec<PathBuf> = files(&dir)
            .into_iter()
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(known.regression)))
            .collect();
        assert!(!inputs.is_empty(), "no regression input named {}* in {}", known.regression, dir.display());
        for path in inputs {
            match outcome(&std::fs::read(&path).expect("readable input")) {
                Outcome::KnownPanic(k) => assert_eq!(k, known, "{}", path.display()),
                Outcome::Response(status, _) => assert!(status.is_client_error(), "{}: {status}", path.display()),
                other => panic!("{}: {other:?}", path.display()),
            }
        }
    }
}
