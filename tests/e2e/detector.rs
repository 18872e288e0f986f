//! Failure detection with no human (issue 11, point 1): the catalog leader
//! marks a silent node down, then out; `sillok admin repair hold` keeps it
//! from going out; a node that reports again comes back up; an operator's
//! own decision is never undone.

use std::time::Duration;

use crate::support::*;

/// `(state, reason)` of node `id` in `sillok admin status --json`.
fn node_state(c: &DevCluster, id: u64) -> Result<(String, String), String> {
    let out = c.admin(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("status: {e}"))?;
    let n = v["nodes"].as_array().and_then(|n| n.iter().find(|n| n["id"] == id)).ok_or("no such node")?;
    let state = n["state"].as_str().unwrap_or_default().to_string();
    let reason = n["transition"]["reason"].as_str().unwrap_or_default().to_string();
    Ok((state, reason))
}

async fn wait_state(c: &DevCluster, id: u64, want: &str, within: Duration) -> String {
    wait_until(within, format!("node {id} to be {want}"), async || match node_state(c, id)? {
        (s, reason) if s == want => Ok(reason),
        other => Err(format!("{other:?}")),
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_goes_down_then_out_unless_held_and_comes_back_up_when_it_reports() {
    let c = DevCluster::start_with(&[
        "--nodes-per-site=3",
        "--catalog-arg=--down-after-ms=2000",
        "--catalog-arg=--out-after-ms=8000",
    ]);
    let s3 = c.client();
    s3.create_bucket().bucket("det").send().await.unwrap();
    for i in 0..20 {
        put(&s3, "det", &format!("k{i}"), pattern(100_000, i)).await;
    }

    // Killed: down within a few seconds, with the reason, and no command typed.
    assert_eq!(signal(c.node_pid(2), 9), 0);
    let reason = wait_state(&c, 2, "down", Duration::from_secs(20)).await;
    assert!(reason.starts_with("not heard for"), "reason: {reason}");
    // Held: it stays down past out-after.
    c.admin_ok(&["repair", "hold"]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(node_state(&c, 2).unwrap().0, "down", "a held repair marked a node out");
    assert!(c.admin_ok(&["status"]).contains("repair: HELD"));
    // Back: it reports again and is up.
    let _back = c.restart_node(2, &[]);
    let reason = wait_state(&c, 2, "up", Duration::from_secs(20)).await;
    assert_eq!(reason, "reporting again");

    // An operator's down is the operator's: the detector leaves it.
    c.admin_ok(&["node", "down", "3"]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(node_state(&c, 3).unwrap(), ("down".into(), "set by an operator".into()));
    c.admin_ok(&["node", "up", "3"]);

    // Released and silent again: down, then out, and every object still reads.
    c.admin_ok(&["repair", "release"]);
    drop(_back);
    let reason = wait_state(&c, 2, "out", Duration::from_secs(40)).await;
    assert!(reason.contains("out after 8 s"), "reason: {reason}");
    for i in 0..20 {
        assert_same(
            &get(&s3, "det", &format!("k{i}"), None).await,
            &pattern(100_000, i),
            "a GET after the node went out",
        );
    }
    let log = std::fs::read_dir(c.dir.path().join("logs"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter(|l| l.contains("node state changed by the failure detector"))
        .count();
    assert!(log > 0, "the leader logs each transition");
}

/// A node that `rebalance apply` adds is silent only from when the leader
/// first sees it in the map, so it has down-after to start and report. Until
/// this was fixed, silence counted from the start of the leadership, so a node
/// added to a cluster whose leader had led for longer than down-after was
/// marked down by the next detector tick (within a second of the apply) and
/// back up once it reported: two needless map changes, with gateways routing
/// around a node that had not had a chance to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_just_added_has_down_after_to_start_before_it_is_marked_down() {
    let c = DevCluster::start_with(&["--catalog-arg=--down-after-ms=5000"]);
    // The leader has led for longer than down-after.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let addr = format!("127.0.0.1:{}", free_port());
    c.admin_ok(&["node", "add", "--site", "site-a", "--addr", &addr]);
    let out = c.admin_ok(&["rebalance", "apply"]);
    let applied = std::time::Instant::now();
    let id: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("added node n").and_then(|id| id.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no added node in: {out}"));
    // For half of down-after (the apply committed before `applied`), the new
    // node stays up; at least one look is taken.
    loop {
        let state = node_state(&c, id).unwrap();
        assert_eq!(state.0, "up", "node {id} {:.1} s after the apply: {state:?}", applied.elapsed().as_secs_f64());
        if applied.elapsed() > Duration::from_millis(2500) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Never started, it does go down once down-after has passed ...
    let reason = wait_state(&c, id, "down", Duration::from_secs(30)).await;
    assert!(reason.starts_with("not heard for"), "reason: {reason}");
    // ... and comes back up when it starts and reports.
    let _node = c.start_added_node("site-a", id, &addr, &[]);
    assert_eq!(wait_state(&c, id, "up", Duration::from_secs(30)).await, "reporting again");
}
