//! The lean manifest read (`gateway::quorum`): one replica sends the whole
//! manifest, the others only its summary; when the replica asked for the
//! body is behind, the read goes around it and still returns the last write.

use sillok_model::manifest::{Body, Version};
use sillok_storage_node::{NodeClient, Timeouts};

use crate::support::*;

/// The value of an unlabelled metric on a Prometheus page.
fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_replica_that_missed_a_write_is_read_around_and_every_read_sees_the_last_write() {
    // Anti-entropy paused, so a replica left behind stays behind while the
    // reads run. The read hedge (and the least wait for the body replica) set
    // far above any answer's time, so that what is counted below does not
    // depend on how loaded the machine is: a slow answer is waited for, and
    // every manifest fetched twice is one whose body replica was behind.
    let c = DevCluster::start_with(&["--node-arg=--sync-every-ms=600000", "--gateway-arg=--read-hedge-ms=60000"]);
    let s3 = c.client();
    s3.create_bucket().bucket("thumbs").send().await.unwrap();
    let keys: Vec<String> = (0..45).map(|i| format!("t/{i:03}.jpg")).collect();
    for (i, key) in keys.iter().enumerate() {
        put(&s3, "thumbs", key, pattern(3_000 + i, 1)).await;
    }
    let page = format!("{}/_sillok/metrics", c.endpoint());
    let refetches = async || metric(&http_text(&page).await, "sillok_gateway_manifest_refetches_total").unwrap();
    let calls = async || metric(&http_text(&page).await, "sillok_gateway_manifest_read_calls_total").unwrap();
    let before = refetches().await;
    let calls_before = calls().await;
    for (i, key) in keys.iter().enumerate() {
        assert_same(&get(&s3, "thumbs", key, None).await, &pattern(3_000 + i, 1), key);
    }
    assert_eq!(refetches().await, before, "reads with every replica current fetched a manifest twice");
    // Hedged: a majority (two of three replicas) is asked, the third only
    // when one of them fails or is slow (never, here).
    let made = calls().await - calls_before;
    assert_eq!(made, 2.0 * keys.len() as f64, "node calls for {} reads (two each expected)", keys.len());

    // A second version of each key reaches two of its three manifest
    // replicas (a write whose third copy was lost): which one misses it
    // rotates over the keys, so for some keys it is the body replica.
    let map: sillok_placement::PlacementMap = serde_json::from_value(c.cluster_file()["map"].clone()).unwrap();
    let secret = c.cluster_file()["cluster_secret"].as_str().unwrap().to_string();
    let nodes = NodeClient::with_tls(&secret, Timeouts::default(), Some(&c.internal_tls("gateway")));
    let addr = |n: sillok_placement::NodeId| map.topology.node(n).unwrap().addr.clone();
    for (i, key) in keys.iter().enumerate() {
        let replicas = map.manifest_replicas(sillok_model::placement::pg_of(&map, "thumbs", key));
        assert_eq!(replicas.len(), 3);
        let mut m = nodes.get_manifest(&addr(replicas[0]), "thumbs", key).await.unwrap().unwrap();
        m.version = Version { nanos: m.version.nanos + 1_000, tiebreak: m.version.tiebreak };
        m.body = Body::Inline { data: pattern(3_000 + i, 2).into() };
        m.headers.retain(|h, _| !h.starts_with("x-amz-checksum"));
        m.user_metadata.insert("v".into(), "2".into());
        for (j, &n) in replicas.iter().enumerate() {
            if j != i % 3 {
                assert!(nodes.put_manifest(&addr(n), &m).await.unwrap().stored);
            }
        }
    }

    for (i, key) in keys.iter().enumerate() {
        assert_same(&get(&s3, "thumbs", key, None).await, &pattern(3_000 + i, 2), key);
        let head = s3.head_object().bucket("thumbs").key(key).send().await.unwrap();
        assert_eq!(head.metadata().and_then(|m| m.get("v")).map(String::as_str), Some("2"), "{key}");
    }
    let refetched = refetches().await - before;
    // The left-out replica is the body replica for about a third of the keys.
    assert!(refetched > 0.0, "no read found its body replica behind; the test exercised nothing");
    assert!(refetched < 2.0 * keys.len() as f64, "{refetched} refetches for {} reads", 2 * keys.len());
}

/// A manifest replica that hangs (SIGSTOP: its socket accepts, nothing
/// answers) is read around by the hedge, not waited for: with the node
/// deadline at 30 s, every read whose first two replicas include the hung
/// one asks the third after `--read-hedge-ms` (here 20 ms). Without the
/// hedge such a read would wait for the node deadline, 30 s, and the bound
/// below would fail (reasoned, not run: that run takes about five minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_manifest_replica_is_hedged_around_not_waited_for() {
    let c = DevCluster::start_with(&[
        "--gateway-arg=--node-timeout-ms=30000",
        "--gateway-arg=--read-hedge-ms=20",
        // Probed once at start only: the hung node must not become suspect
        // (suspects are asked last) while the reads run.
        "--gateway-arg=--probe-interval-ms=600000",
        "--node-arg=--sync-every-ms=600000",
    ]);
    let s3 = c.client();
    s3.create_bucket().bucket("hedge").send().await.unwrap();
    let keys: Vec<String> = (0..45).map(|i| format!("t/{i:03}.jpg")).collect();
    for (i, key) in keys.iter().enumerate() {
        put(&s3, "hedge", key, pattern(2_000 + i, 5)).await;
    }
    let page = format!("{}/_sillok/metrics", c.endpoint());
    let calls = async || metric(&http_text(&page).await, "sillok_gateway_manifest_read_calls_total").unwrap();
    let before = calls().await;

    let hung = Stopped::stop(&[c.node_pid(1)]).await;
    let started = std::time::Instant::now();
    for (i, key) in keys.iter().enumerate() {
        assert_same(&get(&s3, "hedge", key, None).await, &pattern(2_000 + i, 5), key);
    }
    let took = started.elapsed();
    let made = calls().await - before;
    hung.resume().await;

    // Node 1 is a manifest replica of about a third of the PGs, among the
    // first two asked for about two thirds of those: about 10 of 45 keys.
    assert!(made > 2.0 * keys.len() as f64, "{made} node calls for {} reads: no read hedged", keys.len());
    // 45 reads, a few hedged after 20 ms: well under a second on an idle
    // machine. One read waiting for the hung node would take 30 s.
    assert!(took < std::time::Duration::from_secs(25), "45 reads with a hung replica took {took:?}");
}
