#!/usr/bin/env python3
"""Unused dependencies of the workspace's crates, found by name.

A dependency is used when its crate name (the `package = ...` rename if
any, `-` read as `_`) appears as a word in a Rust file of the crate: under
the directories of its targets (src/, tests/, benches/, build.rs), not
under another crate's. A name that appears only in a comment counts as
used, so this finds dependencies nothing names, not every unused one
(the check cargo-machete makes; this one needs no build of a tool).
Files included with `#[path = "..."]` count as the including crate's.
Names a crate lists under `[package.metadata.cargo-machete] ignored`
(machete's own key) are not checked: crates imported under another name.

Exit status 1 when an unused dependency is found.
"""

import json
import os
import re
import subprocess
import sys


def rust_files(dirs, other_crates):
    for top in dirs:
        for root, subdirs, files in os.walk(top):
            subdirs[:] = [d for d in subdirs if os.path.join(root, d) not in other_crates and d != "target"]
            for f in files:
                if f.endswith(".rs"):
                    yield os.path.join(root, f)


def main():
    meta = json.loads(
        subprocess.check_output(
            ["cargo", "metadata", "--no-deps", "--offline", "--locked", "--format-version", "1"]
        )
    )
    members = set(meta["workspace_members"])
    packages = [p for p in meta["packages"] if p["id"] in members]
    crate_dirs = {os.path.dirname(p["manifest_path"]) for p in packages}
    unused = []
    for p in packages:
        here = os.path.dirname(p["manifest_path"])
        dirs = set()
        for t in p["targets"]:
            d = os.path.dirname(t["src_path"])
            # A target at the crate's root (build.rs) adds only its own file.
            dirs.add(t["src_path"] if d == here else d)
        others = crate_dirs - {here}
        files = []
        for d in sorted(dirs):
            files.extend([d] if d.endswith(".rs") else rust_files([d], others))
        text = []
        while files:
            f = files.pop()
            body = open(f, encoding="utf-8").read()
            text.append(body)
            # A module included from elsewhere (`#[path = "../../src/x.rs"]`)
            # is this crate's code too.
            for included in re.findall(r'#\[path\s*=\s*"([^"]+)"\]', body):
                files.append(os.path.normpath(os.path.join(os.path.dirname(f), included)))
        source = "\n".join(text)
        ignored = set((p.get("metadata") or {}).get("cargo-machete", {}).get("ignored", []))
        for dep in p["dependencies"]:
            if dep["name"] in ignored:
                continue
            ident = (dep.get("rename") or dep["name"]).replace("-", "_")
            if not re.search(r"\b" + re.escape(ident) + r"\b", source):
                kind = dep.get("kind") or "normal"
                unused.append(f"{p['name']}: {dep['name']} ({kind})")
    for u in unused:
        print(f"UNUSED: {u}")
    if unused:
        return 1
    print(f"no unused dependency in {len(packages)} crates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
