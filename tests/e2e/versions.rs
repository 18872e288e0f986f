//! Versions under clock skew: the write that completes last wins whatever the
//! writers' wall clocks say, a DELETE answers 204 only when its tombstone
//! won, and a gateway whose clock is too far off refuses writes.

use std::time::Duration;

use crate::support::*;

async fn is_missing(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> bool {
    match c.get_object().bucket(bucket).key(key).send().await {
        Ok(_) => false,
        Err(e) => e.raw_response().is_some_and(|r| r.status().as_u16() == 404),
    }
}

async fn listed(c: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let out = c.list_objects_v2().bucket(bucket).send().await.unwrap();
    out.contents().iter().filter_map(|o| o.key().map(str::to_string)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_whose_clock_is_behind_still_makes_the_last_completed_write_win() {
    let c = DevCluster::start();
    // Five seconds behind, with a bound that lets it write: before versions
    // came from a hybrid logical clock taken when the body is durable, its
    // overwrites lost to older writes and its DELETEs were answered 204
    // without taking effect (and later retired the live version's shards).
    let behind = c.start_gateway("gateway-behind", &["--test-clock-offset-ms=-5000", "--max-clock-offset-ms=60000"]);
    let (a, b) = (c.client(), behind.client());
    a.create_bucket().bucket("skew").send().await.unwrap();

    for (key, size) in [("small", 20_000usize), ("sharded", 3 << 20)] {
        let v1 = pattern(size, 1);
        let v2 = pattern(size, 2);
        let v3 = pattern(size, 3);
        put(&a, "skew", key, v1).await;
        put(&b, "skew", key, v2.clone()).await;
        for (who, client) in [("the gateway on time", &a), ("the gateway behind", &b)] {
            assert_same(
                &get(client, "skew", key, None).await,
                &v2,
                &format!("{key}: the later PUT, read through {who}"),
            );
        }
        put(&a, "skew", key, v3.clone()).await;
        assert_same(&get(&b, "skew", key, None).await, &v3, &format!("{key}: the PUT after it"));

        // A DELETE through the gateway behind: 204 means gone, everywhere.
        b.delete_object().bucket("skew").key(key).send().await.unwrap();
        assert!(is_missing(&a, "skew", key).await, "{key}: deleted through the gateway behind, still readable");
        assert!(is_missing(&b, "skew", key).await, "{key}: deleted, still readable through the deleting gateway");
        assert!(!listed(&a, "skew").await.contains(&key.to_string()), "{key}: deleted but still listed");

        // And a PUT after the DELETE, through the gateway on time, wins again.
        put(&a, "skew", key, v1_again(size)).await;
        assert_same(&get(&b, "skew", key, None).await, &v1_again(size), &format!("{key}: the PUT after the DELETE"));
    }
}

fn v1_again(size: usize) -> Vec<u8> {
    pattern(size, 4)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_whose_clock_is_too_far_off_refuses_writes_and_says_why() {
    let c = DevCluster::start();
    let a = c.client();
    a.create_bucket().bucket("skew").send().await.unwrap();
    put(&a, "skew", "before", pattern(1000, 1)).await;
    // Default bound (500 ms), clock 5 s behind.
    let behind = c.start_gateway("gateway-off", &["--test-clock-offset-ms=-5000"]);
    let b = behind.client();
    // Until its probes have measured the nodes' clocks it cannot know (and
    // takes writes): each attempt uses a key of its own, and the one it
    // refused must not exist.
    let mut attempt = 0;
    let (err, refused) =
        wait_until(Duration::from_secs(30), "the gateway to refuse writes for its clock", async || {
            attempt += 1;
            let key = format!("refused-{attempt}");
            let r = b.put_object().bucket("skew").key(&key).body(pattern(1000, 2).into()).send().await;
            r.err().map(|e| (e, key))
        })
        .await;
    let status = err.raw_response().map(|r| r.status().as_u16());
    assert_eq!(status, Some(503), "a write refused for the clock is 503: {err:?}");
    assert!(behind.log().contains("clock"), "the gateway's log says why it refuses writes");
    // Reads still work through it, and the refused key was never written.
    assert_same(&get(&b, "skew", "before", None).await, &pattern(1000, 1), "a read through the refusing gateway");
    assert!(is_missing(&a, "skew", &refused).await, "{refused} was refused but is there");
    // `sillok admin status` names the gateway and why.
    let addr = behind.endpoint.trim_start_matches("http://").to_string();
    wait_until(Duration::from_secs(30), "status to show the refusing gateway", async || {
        let out = String::from_utf8_lossy(&c.admin(&["status"]).stdout).to_string();
        match out.lines().find(|l| l.starts_with(&addr)) {
            Some(line) if line.contains("REFUSING WRITES") && line.contains("-5") => Ok(()),
            other => Err(format!("gateway line: {other:?}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_clock_is_too_far_off_refuses_manifest_writes_and_status_says_so() {
    let c = DevCluster::start_with(&["--node-arg=--sync-every-ms=300"]);
    let a = c.client();
    a.create_bucket().bucket("nskew").send().await.unwrap();
    // Node 1 comes back with its clock 5 s ahead.
    assert_eq!(signal(c.node_pid(1), 9), 0);
    let _node = c.restart_node(1, &["--test-clock-offset-ms=5000", "--sync-every-ms=300"]);
    let map: sillok_placement::PlacementMap = serde_json::from_value(c.cluster_file()["map"].clone()).unwrap();
    wait_until(Duration::from_secs(30), "status to show node 1 refusing writes", async || {
        let out = String::from_utf8_lossy(&c.admin(&["status", "--json"]).stdout).to_string();
        let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
        let n1 = v["nodes"].as_array().and_then(|n| n.iter().find(|n| n["id"] == 1)).cloned();
        match n1.as_ref().map(|n| (&n["usage"]["refusing_writes"], &n["usage"]["clock_offset_ms"])) {
            Some((serde_json::Value::Bool(true), off)) if off.as_i64().is_some_and(|o| o > 4000) => Ok(()),
            other => Err(format!("node 1: {other:?}")),
        }
    })
    .await;
    // A manifest write sent straight to it is refused with 503 and a reason;
    // writes through the gateway still succeed on the other replicas.
    let secret = c.cluster_file()["cluster_secret"].as_str().unwrap().to_string();
    let client = sillok_storage_node::NodeClient::with_tls(
        &secret,
        sillok_storage_node::Timeouts::default(),
        Some(&c.internal_tls("gateway")),
    );
    let node1 = map.topology.node(sillok_placement::NodeId(1)).unwrap().addr.clone();
    let mut m = sillok_model::manifest::Manifest::tombstone("nskew", "direct");
    m.version = sillok_model::manifest::Version { nanos: 1, tiebreak: 1 };
    match client.put_manifest(&node1, &m).await {
        Err(sillok_storage_node::NodeError::Status { status: 503, body, .. }) => {
            assert!(body.contains("clock"), "the refusal says why: {body}")
        }
        other => panic!("node 1 took a manifest write with its clock 5 s off: {other:?}"),
    }
    for i in 0..10 {
        put(&a, "nskew", &format!("k{i}"), pattern(1000, i)).await;
        assert_same(&get(&a, "nskew", &format!("k{i}"), None).await, &pattern(1000, i), "a write with node 1 refusing");
    }
    assert!(c.node_log(1).contains("refusing writes"), "the node's log says why");
}
