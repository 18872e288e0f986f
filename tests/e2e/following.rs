//! Gateways and storage nodes follow the replicated catalog (real processes:
//! `sillok dev` plus extra `sillok gateway` processes, real S3 clients):
//! buckets and keys made anywhere are usable everywhere at once, revoked keys
//! stop working, bucket creations through two gateways survive the leader's
//! `kill -9`, a gateway on an old map is told so by the nodes and retries on
//! the newer one, and with every catalog replica killed the gateways and
//! nodes keep serving (and restart) from the copies they saved.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;
use sillok_storage_node::{NodeClient, Timeouts};

use crate::support::*;

const SIGKILL: i32 = 9;

fn code<E: ProvideErrorMetadata>(e: &aws_sdk_s3::error::SdkError<E>) -> String {
    e.as_service_error().and_then(|s| s.code()).unwrap_or("(no service error)").to_string()
}

/// The epoch a gateway reports in its metrics.
async fn gateway_epoch(endpoint: &str) -> u64 {
    let text = http_text(&format!("{endpoint}/_sillok/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix("sillok_map_epoch "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sillok_map_epoch in {text}"))
}

/// A plain HTTP GET (health and metrics routes).
async fn wait_node_epochs(c: &DevCluster, epoch: u64) {
    wait_until(Duration::from_secs(30), format!("every node to reach epoch {epoch}"), async || {
        let secret = c.cluster_file()["cluster_secret"].as_str().unwrap().to_string();
        let client = NodeClient::with_tls(&secret, Timeouts::default(), Some(&c.internal_tls("gateway")));
        let mut all = true;
        for (_, _, addr) in c.nodes() {
            all &= client.health(&addr).await.is_ok_and(|h| h.epoch >= epoch);
        }
        all
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_and_keys_made_with_admin_are_usable_at_once_and_a_revoked_key_stops() {
    let c = DevCluster::start();
    let s3 = c.client();
    // A bucket made with `sillok admin` is there for S3 at once (a miss is
    // read from the leader, never answered from an older copy).
    c.admin_ok(&["bucket", "create", "from-admin"]);
    s3.head_bucket().bucket("from-admin").send().await.expect("bucket made by admin is visible");
    put(&s3, "from-admin", "k", b"v".to_vec()).await;

    // A bucket made through S3 is in the catalog, owned by the key that made it.
    s3.create_bucket().bucket("from-s3").send().await.unwrap();
    let listed = c.admin_ok(&["bucket", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let b = v.as_array().unwrap().iter().find(|b| b["name"] == "from-s3").expect("S3 bucket in the catalog");
    assert_eq!(b["owner"], c.env["AWS_ACCESS_KEY_ID"].as_str());
    let err = s3.create_bucket().bucket("from-s3").send().await.unwrap_err();
    assert_eq!(code(&err), "BucketAlreadyOwnedByYou");

    // A new key works at once; a read-only key reads but may not write.
    let made: serde_json::Value = serde_json::from_str(&c.admin_ok(&["key", "create", "--json"])).unwrap();
    let (id, secret) = (made["access_key_id"].as_str().unwrap(), made["secret_access_key"].as_str().unwrap());
    let new_key = c.client_with(id, secret);
    put(&new_key, "from-s3", "by-new-key", b"hello".to_vec()).await;
    // Another key's bucket of the same name: BucketAlreadyExists.
    let err = new_key.create_bucket().bucket("from-s3").send().await.unwrap_err();
    assert_eq!(code(&err), "BucketAlreadyExists");

    let ro: serde_json::Value = serde_json::from_str(&c.admin_ok(&["key", "create", "--read-only", "--json"])).unwrap();
    let ro_key = c.client_with(ro["access_key_id"].as_str().unwrap(), ro["secret_access_key"].as_str().unwrap());
    assert_same(&get(&ro_key, "from-s3", "by-new-key", None).await, b"hello", "read-only GET");
    let err = ro_key.put_object().bucket("from-s3").key("nope").body(b"x".to_vec().into()).send().await.unwrap_err();
    assert_eq!(code(&err), "AccessDenied");
    let err = ro_key.create_bucket().bucket("ro-bucket").send().await.unwrap_err();
    assert_eq!(code(&err), "AccessDenied");
    let err = ro_key.delete_object().bucket("from-s3").key("by-new-key").send().await.unwrap_err();
    assert_eq!(code(&err), "AccessDenied");
    // The admin key is for the catalog, not for S3.
    let admin_s3 = c.client_with(&c.env["SILLOK_ADMIN_KEY_ID"], &c.env["SILLOK_ADMIN_SECRET"]);
    let err = admin_s3.list_objects_v2().bucket("from-s3").send().await.unwrap_err();
    assert_eq!(code(&err), "AccessDenied");

    // Revoked: refused by the gateway once it has followed the change.
    c.admin_ok(&["key", "revoke", id]);
    wait_until(Duration::from_secs(15), "the revoked key to be refused", async || {
        match new_key.head_object().bucket("from-s3").key("by-new-key").send().await {
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 403) => true,
            Ok(_) => false,
            Err(e) => panic!("unexpected error for a revoked key: {e:?}"),
        }
    })
    .await;
    let err = new_key.list_objects_v2().bucket("from-s3").send().await.unwrap_err();
    assert_eq!(code(&err), "InvalidAccessKeyId");
    // Unknown buckets are still NoSuchBucket.
    let err = s3.head_object().bucket("never-made").key("k").send().await.unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 404);

    // Secrets never reach any process's log.
    for entry in std::fs::read_dir(c.dir.path().join("logs")).unwrap() {
        let log = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
        assert!(!log.contains(secret) && !log.contains(&c.env["AWS_SECRET_ACCESS_KEY"]), "a log holds a secret");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_creations_through_two_gateways_while_the_leader_is_killed_lose_none_and_make_none_twice() {
    let c = DevCluster::start();
    let second = c.start_gateway("gateway-2", &[]);
    let gateways = [Arc::new(c.client()), Arc::new(second.client())];
    let leader_pid = c.replica_pid(&c.leader_site().await);

    // 900 distinct names, alternating gateways, plus 50 names sent to both
    // gateways at once (100 requests): 1,000 creations in all.
    let mut requests: Vec<(String, usize)> = (0..900).map(|i| (format!("bucket-{i:04}"), i % 2)).collect();
    for i in 0..50 {
        requests.push((format!("both-{i:03}"), 0));
        requests.push((format!("both-{i:03}"), 1));
    }
    // Interleave the pairs with the rest.
    requests.sort_by_key(|(name, g)| (blake3::hash(name.as_bytes()).as_bytes()[0], name.clone(), *g));
    let total = requests.len();
    assert_eq!(total, 1000);
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for (i, (name, g)) in requests.into_iter().enumerate() {
        let s3 = gateways[g].clone();
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let r = s3.create_bucket().bucket(&name).send().await;
            (name, r.map(|_| ()).map_err(|e| code(&e)))
        }));
        if i == total / 3 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(signal(leader_pid, SIGKILL), 0);
        }
    }
    let mut acked: BTreeMap<String, usize> = BTreeMap::new();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for t in tasks {
        let (name, r) = t.await.unwrap();
        match r {
            Ok(()) => *acked.entry(name).or_default() += 1,
            Err(code) => *errors.entry(code).or_default() += 1,
        }
    }
    // What exists, as both gateways and the catalog's leader see it.
    let view: serde_json::Value = serde_json::from_str(&c.admin_ok(&["bucket", "list", "--json"])).unwrap();
    let names: Vec<String> = view.as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap().to_string()).collect();
    let distinct: BTreeSet<&String> = names.iter().collect();
    assert_eq!(distinct.len(), names.len(), "a bucket exists twice");
    for (name, n) in &acked {
        assert_eq!(*n, 1, "bucket {name} was acknowledged as created {n} times");
        assert!(distinct.contains(name), "acknowledged bucket {name} is missing from the catalog");
    }
    for (g, s3) in gateways.iter().enumerate() {
        let listed = s3.list_buckets().send().await.unwrap();
        let seen: BTreeSet<String> = listed.buckets().iter().filter_map(|b| b.name().map(String::from)).collect();
        for name in acked.keys() {
            assert!(seen.contains(name), "acknowledged bucket {name} is missing from gateway {g}'s listing");
        }
        assert_eq!(seen.len(), distinct.len(), "gateway {g} lists other buckets than the catalog has");
    }
    // Every error is one a client can act on: retry (503) or "it exists".
    for code in errors.keys() {
        assert!(
            ["ServiceUnavailable", "BucketAlreadyOwnedByYou"].contains(&code.as_str()),
            "unexpected error {code}: {errors:?}"
        );
    }
    assert!(acked.len() > total / 2, "only {} of {total} creations were acknowledged: {errors:?}", acked.len());
    eprintln!("{} of {total} creations acknowledged, {} buckets exist; errors {errors:?}", acked.len(), names.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_on_an_old_map_is_told_by_the_nodes_and_retries_on_the_newer_one() {
    let c = DevCluster::start();
    // This gateway asks the catalog once an hour and probes nodes once an
    // hour: it learns of a new map only when a node refuses its old epoch.
    let stale = c.start_gateway("gateway-stale", &["--catalog-poll-ms", "3600000", "--probe-interval-ms", "3600000"]);
    let s3 = stale.client();
    s3.create_bucket().bucket("media").send().await.unwrap();
    put(&s3, "media", "before", pattern(10_000, 1)).await;
    assert_eq!(gateway_epoch(&stale.endpoint).await, 1);

    // A new map (node 1 weighs more: slots and manifest replicas move).
    c.admin_ok(&["node", "set-weight", "n1", "2"]);
    c.admin_ok(&["rebalance", "apply"]);
    wait_node_epochs(&c, 2).await;
    assert_eq!(gateway_epoch(&c.endpoint()).await, 2, "the dev gateway follows continuously");
    assert_eq!(gateway_epoch(&stale.endpoint).await, 1, "the stale gateway has not looked yet");

    // Writes and reads through the stale gateway: the nodes refuse epoch 1,
    // the gateway fetches epoch 2 and retries. Every object is then where the
    // new map puts it: the up-to-date gateway reads it.
    let fresh = c.client();
    for i in 0..20u64 {
        let body = pattern(1000 + i as usize * 5000, i + 100);
        put(&s3, "media", &format!("after-{i}"), body.clone()).await;
        assert_same(&get(&fresh, "media", &format!("after-{i}"), None).await, &body, "written on the newer map");
    }
    assert_eq!(gateway_epoch(&stale.endpoint).await, 2);
    assert!(stale.log().contains("a node follows a newer map; retrying on it"), "{}", stale.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_replica_killed_gateways_and_nodes_serve_and_restart_from_their_saved_copies() {
    let c = DevCluster::start();
    let s3 = c.client();
    s3.create_bucket().bucket("photos").send().await.unwrap();
    let mut objects = Vec::new();
    for i in 0..12u64 {
        let body = pattern([1_000, 70_000, 1_500_000][i as usize % 3], i);
        put(&s3, "photos", &format!("p-{i}"), body.clone()).await;
        objects.push((format!("p-{i}"), body));
    }
    // Two map changes: epoch 3.
    c.admin_ok(&["node", "down", "n6"]);
    c.admin_ok(&["node", "up", "n6"]);
    wait_node_epochs(&c, 3).await;

    // Every site's catalog replica.
    for site in c.sites() {
        assert_eq!(signal(c.replica_pid(&site), SIGKILL), 0);
    }
    let out = c.admin(&["status", "--timeout-secs", "3"]);
    assert!(!out.status.success(), "status answered with every replica dead");

    // Reads, listings and writes into existing buckets go on.
    for (key, body) in &objects {
        assert_same(&get(&s3, "photos", key, None).await, body, "GET with the catalog down");
    }
    put(&s3, "photos", "while-down", pattern(200_000, 77)).await;
    let listed = s3.list_objects_v2().bucket("photos").send().await.unwrap();
    assert_eq!(listed.key_count(), Some(13));
    // What needs the catalog fails clearly, and nothing is guessed.
    let err = s3.create_bucket().bucket("new-one").send().await.unwrap_err();
    assert_eq!(code(&err), "ServiceUnavailable");
    let err = s3.head_bucket().bucket("unknown").send().await.unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 503);

    // A gateway restarted now starts from its saved catalog (the dev
    // gateway's state directory), at the newest epoch, and serves.
    // Its catalog file is locked while it runs: wait for the exit.
    kill_and_wait_exit(c.gateway_pid());
    let again = c.start_gateway("gateway", &[]);
    assert_eq!(gateway_epoch(&again.endpoint).await, 3, "restarted on an older map");
    let s3 = again.client();
    for (key, body) in &objects {
        assert_same(&get(&s3, "photos", key, None).await, body, "GET from a gateway restarted without the catalog");
    }

    // A storage node restarted now starts from its saved map (epoch 3), not
    // from the cluster file's (epoch 1).
    let (_, _, addr) = c.nodes().into_iter().find(|(id, _, _)| *id == 1).unwrap();
    assert_eq!(signal(c.node_pid(1), SIGKILL), 0);
    let mut node = c.restart_node(1, &[]);
    let secret = c.cluster_file()["cluster_secret"].as_str().unwrap().to_string();
    let client = NodeClient::with_tls(&secret, Timeouts::default(), Some(&c.internal_tls("gateway")));
    let node_epoch = wait_until(Duration::from_secs(30), "the restarted node to answer", async || {
        if let Ok(Some(exit)) = node.0.try_wait() {
            panic!("the restarted node exited ({exit}):\n{}", c.node_log(1));
        }
        client.health(&addr).await
    })
    .await;
    assert_eq!(node_epoch.epoch, 3, "the node restarted on an older map");
    for (key, body) in &objects {
        assert_same(&get(&s3, "photos", key, None).await, body, "GET after the node restart");
    }
    drop(node);
}

async fn set_weights(c: &DevCluster, nodes: &[&str], weight: &str) {
    for n in nodes {
        c.admin_ok(&["node", "set-weight", n, weight]);
    }
    c.admin_ok(&["rebalance", "apply"]);
    let epoch: u64 = serde_json::from_str::<serde_json::Value>(&c.admin_ok(&["status", "--json"])).unwrap()["epoch"]
        .as_u64()
        .unwrap();
    wait_node_epochs(c, epoch).await;
    wait_gateway_epoch(&c.endpoint(), epoch).await;
}

async fn wait_gateway_epoch(endpoint: &str, epoch: u64) {
    wait_until(Duration::from_secs(30), format!("the gateway to follow epoch {epoch}"), async || {
        gateway_epoch(endpoint).await >= epoch
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_written_before_a_slot_move_are_still_read_overwritten_and_deleted_after_it() {
    // Three nodes per site: a PG's six slots do not cover every node, so
    // weight changes move slots, and with them the manifest replicas of PGs.
    let c = DevCluster::start_with(&["--nodes-per-site", "3"]);
    let s3 = c.client();
    s3.create_bucket().bucket("moved").send().await.unwrap();
    let first: sillok_placement::PlacementMap = serde_json::from_value(c.cluster_file()["map"].clone()).unwrap();
    let mut objects: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for i in 0..60u64 {
        let body = pattern(if i % 3 == 0 { 300_000 } else { 1_000 }, i);
        put(&s3, "moved", &format!("o-{i:02}"), body.clone()).await;
        objects.insert(format!("o-{i:02}"), body);
    }
    // One lighter node per site: many PGs lose two or three manifest replicas.
    set_weights(&c, &["n1", "n4", "n7"], "0.2").await;
    let now = c.followed_map();
    let moved_away = objects
        .keys()
        .filter(|k| {
            let pg = now.pg_of("moved", k);
            let (old, new) = (first.manifest_replicas(pg), now.manifest_replicas(pg));
            old.iter().filter(|n| new.contains(n)).count() < 2
        })
        .count();
    assert!(moved_away > 0, "no object's PG lost a majority of its manifest replicas: the test proves nothing");

    for (key, body) in &objects {
        assert_same(&get(&s3, "moved", key, None).await, body, "read after the slot move");
    }
    // Overwrites and deletes after the move win over the copies left behind.
    let new_body = pattern(5_000, 999);
    for key in ["o-00", "o-01"] {
        put(&s3, "moved", key, new_body.clone()).await;
        objects.insert(key.into(), new_body.clone());
    }
    for key in ["o-02", "o-03"] {
        s3.delete_object().bucket("moved").key(key).send().await.unwrap();
        objects.remove(key);
        let err = s3.head_object().bucket("moved").key(key).send().await.unwrap_err();
        assert_eq!(err.raw_response().unwrap().status().as_u16(), 404);
    }
    let listed = s3.list_objects_v2().bucket("moved").send().await.unwrap();
    assert_eq!(listed.key_count(), Some(58));

    // And back to the first weights.
    set_weights(&c, &["n1", "n4", "n7"], "1").await;
    for (key, body) in &objects {
        assert_same(&get(&s3, "moved", key, None).await, body, "read after moving back");
    }
    let err = s3.get_object().bucket("moved").key("o-02").send().await.unwrap_err();
    assert_eq!(code(&err), "NoSuchKey");
    eprintln!("{moved_away} of 60 objects' PGs lost a majority of their manifest replicas");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_marked_down_is_still_read_when_a_whole_site_is_lost_as_well() {
    // `node down` marks a node in the map; its process still runs and holds
    // its shards. With site-a lost too, only that node's shards make up k.
    let c = DevCluster::start();
    let s3 = c.client();
    s3.create_bucket().bucket("marked").send().await.unwrap();
    let mut objects = Vec::new();
    for i in 0..6u64 {
        let body = pattern(1_500_000 + i as usize * 1000, i);
        put(&s3, "marked", &format!("o-{i}"), body.clone()).await;
        objects.push((format!("o-{i}"), body));
    }
    let n = c.nodes().into_iter().find(|(_, s, _)| s == "site-b").unwrap().0;
    c.admin_ok(&["node", "down", &format!("n{n}")]);
    wait_gateway_epoch(&c.endpoint(), 2).await;
    c.kill_site("site-a");
    for (key, body) in &objects {
        assert_same(&get(&s3, "marked", key, None).await, body, "GET with site-a lost and a site-b node marked down");
    }
}

/// A figure from a metrics page (0 if absent).
async fn metric(endpoint: &str, name: &str) -> u64 {
    let text = http_text(&format!("{endpoint}/_sillok/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// How many buckets and keys the catalog holds.
fn catalog_counts(c: &DevCluster) -> (u64, u64) {
    let v: serde_json::Value = serde_json::from_str(&c.admin_ok(&["status", "--json"])).unwrap();
    (v["buckets"].as_u64().unwrap(), v["keys"].as_u64().unwrap())
}

/// Waits until the gateway's copy holds `buckets` buckets.
async fn wait_buckets(endpoint: &str, buckets: u64) {
    wait_until(Duration::from_secs(20), format!("the gateway's copy to hold {buckets} buckets"), async || {
        metric(endpoint, "sillok_catalog_buckets").await == buckets
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_follows_changes_and_takes_the_whole_catalog_once_too_far_behind() {
    // Replicas keep 4 changes for followers.
    let c = DevCluster::start_with(&["--catalog-arg=--change-log-entries=4"]);
    let mut g = c.start_gateway("follower", &[]);
    let made: serde_json::Value = serde_json::from_str(&c.admin_ok(&["key", "create", "--json"])).unwrap();
    let (id, secret) = (made["access_key_id"].as_str().unwrap(), made["secret_access_key"].as_str().unwrap());
    c.admin_ok(&["bucket", "create", "kept", "--owner", id]);
    c.admin_ok(&["bucket", "create", "gone"]);
    c.admin_ok(&["bucket", "delete", "gone", "--force"]);
    let (buckets, _) = catalog_counts(&c);
    wait_buckets(&g.endpoint, buckets).await;
    // Followed as changes (no whole view was taken: every check so far went
    // through the metrics page, never a miss).
    assert_eq!(metric(&g.endpoint, "sillok_catalog_whole_views_total").await, 0, "{}", g.log());
    assert!(metric(&g.endpoint, "sillok_catalog_changes_applied_total").await >= 4);
    let key = s3_client(&g.endpoint, &c.region(), id, secret);
    put(&key, "kept", "k", b"v".to_vec()).await;

    // Stopped while more changes happen than the replicas keep.
    g.kill();
    for i in 0..6 {
        c.admin_ok(&["bucket", "create", &format!("while-down-{i}")]);
    }
    c.admin_ok(&["key", "revoke", id]);
    let g = c.start_gateway("follower", &[]);
    let (buckets, _) = catalog_counts(&c);
    wait_buckets(&g.endpoint, buckets).await;
    assert!(metric(&g.endpoint, "sillok_catalog_whole_views_total").await >= 1, "no snapshot was taken");
    // The revoked key is refused from the copy.
    let key = s3_client(&g.endpoint, &c.region(), id, secret);
    let err = key.list_objects_v2().bucket("kept").send().await.unwrap_err();
    assert_eq!(code(&err), "InvalidAccessKeyId");

    // Then changes again.
    let views = metric(&g.endpoint, "sillok_catalog_whole_views_total").await;
    c.admin_ok(&["bucket", "create", "after"]);
    wait_buckets(&g.endpoint, buckets + 1).await;
    c.admin_ok(&["bucket", "delete", "while-down-0", "--force"]);
    wait_buckets(&g.endpoint, buckets).await;
    let s3 = g.client();
    s3.head_bucket().bucket("after").send().await.expect("the new bucket is in the copy");
    assert_eq!(metric(&g.endpoint, "sillok_catalog_whole_views_total").await, views, "{}", g.log());
    let err = s3.head_bucket().bucket("while-down-0").send().await.unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 404);
    // The copy on disk is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(c.dir.path().join("follower").join("catalog.redb")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // So are every process's directory and every file that holds a secret.
    let mode_of = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let site = c.dir.path().join("sites").join("site-a");
    for dir in [c.dir.path().to_path_buf(), c.dir.path().join("follower"), site.join("catalog-1"), site.join("node-1")]
    {
        assert_eq!(mode_of(&dir), 0o700, "{}", dir.display());
    }
    for file in [site.join("catalog-1").join("catalog.redb"), site.join("catalog-1").join("raft-log.redb")] {
        assert_eq!(mode_of(&file), 0o600, "{}", file.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_made_through_one_gateway_is_usable_at_once_through_another_which_asks_a_read_index() {
    let c = DevCluster::start();
    let b = c.start_gateway("gateway-b", &[]);
    let (through_a, through_b) = (c.client(), b.client());
    for i in 0..3 {
        let name = format!("made-on-a-{i}");
        through_a.create_bucket().bucket(&name).send().await.unwrap();
        // At once on B: HEAD, PUT, and in B's listing.
        through_b.head_bucket().bucket(&name).send().await.unwrap_or_else(|e| panic!("HEAD {name} on B: {e:?}"));
        put(&through_b, &name, "k", b"v".to_vec()).await;
        let listed = through_b.list_buckets().send().await.unwrap();
        assert!(listed.buckets().iter().any(|x| x.name() == Some(name.as_str())), "{name} not listed by B");
    }
    // An unknown name is still NoSuchBucket, found so by a read index (B's
    // listings asked for some too), not guessed.
    let err = through_b.head_bucket().bucket("never-made").send().await.unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 404);
    assert!(metric(&b.endpoint, "sillok_catalog_read_index_calls_total").await >= 3, "{}", b.log());
}
