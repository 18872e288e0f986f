//! Writes the seed corpus to `fuzz/seeds/<target>/<name>` (replacing what is
//! there). Run from anywhere: `cargo run -p sillok-fuzz-harness --example write_seeds`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../seeds");
    for (target, _) in sillok_fuzz_harness::TARGETS {
        let dir = root.join(target);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
    }
    let seeds = sillok_fuzz_harness::seeds::all();
    for (target, name, data) in &seeds {
        std::fs::write(root.join(target).join(name), data)?;
    }
    println!("wrote {} seeds under {}", seeds.len(), root.display());
    Ok(())
}
