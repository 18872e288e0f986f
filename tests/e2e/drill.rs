//! `sillok dev drill` (issue 11, point 6): the operator's site-loss drill,
//! run against a real `sillok dev` cluster with a short outage. Asserts the
//! report's correctness fields only (no timings).

use crate::support::*;

/// Stops the processes the drill started again (they are not `sillok
/// dev`'s children), listed in the site's pids file, even if the test fails.
struct KillSiteOnDrop<'a>(&'a DevCluster, &'static str);

impl Drop for KillSiteOnDrop<'_> {
    fn drop(&mut self) {
        for pid in self.0.site_pids(self.1) {
            signal(pid, 9);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drill_loses_a_site_under_load_waits_for_full_redundancy_and_reads_everything_back() {
    let c = DevCluster::start_with(&[
        "--nodes-per-site=3",
        "--pgs=64",
        "--gateway-arg=--block-size=65536",
        "--catalog-arg=--down-after-ms=2000",
        "--catalog-arg=--site-out-after-ms=5000",
        "--node-arg=--rebuild-every-ms=1000",
        "--node-arg=--sync-every-ms=1000",
    ]);
    let _cleanup = KillSiteOnDrop(&c, "site-c");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sillok"))
        .args(["dev", "drill", "--site", "site-c", "--fill-mib", "8", "--before-s", "2", "--concurrency", "4"])
        .args(["--timeout-s", "240", "--return", "--json", "--data"])
        .arg(c.dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "drill failed: {stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert!(r["objects_acknowledged"].as_u64().unwrap() > 0, "{r}");
    assert!(r["gets"].as_u64().unwrap() > 0, "{r}");
    for field in ["failed_gets", "wrong_gets", "readback_missing", "readback_mismatched"] {
        assert_eq!(r[field], 0, "{field}: {r}");
    }
    assert_eq!(r["readback_objects"], r["objects_acknowledged"], "{r}");
    assert!(r["site_out_after_ms"].is_u64(), "the site never went out: {r}");
    assert!(r["full_redundancy_after_ms"].is_u64(), "full redundancy never came back: {r}");
    assert!(r["clean_again_after_ms"].is_u64(), "the site rule never came back after the return: {r}");
}
