//! The metadata that heals: PG enumeration, the one collector, tombstone
//! purge and anti-entropy, on real `sillok dev` clusters with short grace
//! periods (`--node-arg`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use sillok_model::frame::Frame;
use sillok_model::placement;
use sillok_placement::{NodeId, PlacementMap};
use sillok_storage_node::api::{ListManifests, ListPg, PgSelector, ShardId};
use sillok_storage_node::client::ShardHeader;
use sillok_storage_node::{NodeClient, Timeouts};

use crate::support::*;

/// A few seconds of grace, rounds every 300 ms: the collector acts within a
/// test's patience.
const FAST_UPKEEP: &[&str] = &[
    "--node-arg=--collect-grace-ms=1500",
    "--node-arg=--collect-every-ms=300",
    "--node-arg=--sync-every-ms=300",
    "--node-arg=--tombstone-horizon-ms=2000",
];

fn map_of(c: &DevCluster) -> PlacementMap {
    serde_json::from_value(c.cluster_file()["map"].clone()).unwrap()
}

/// A node client that names no map epoch: the tests inspect nodes whatever
/// map they follow (the failure detector moves the epoch when it marks a
/// stopped node down and up again).
fn node_client(c: &DevCluster) -> NodeClient {
    NodeClient::with_tls(
        c.cluster_file()["cluster_secret"].as_str().unwrap(),
        Timeouts::default(),
        Some(&c.internal_tls("gateway")),
    )
}

/// `(node id, object id, index)` of every shard file, by walking the data
/// directories (not through any node).
fn scan(c: &DevCluster) -> BTreeSet<(u64, String, u8)> {
    let mut out = BTreeSet::new();
    for (_, path) in c.shard_files() {
        let node: u64 = path
            .components()
            .find_map(|p| p.as_os_str().to_str()?.strip_prefix("node-")?.parse().ok())
            .expect("shard files live under node-<id>");
        let name = path.file_name().unwrap().to_str().unwrap();
        let (oid, idx) = name.split_once('.').unwrap();
        out.insert((node, oid.to_string(), idx.parse().unwrap()));
    }
    out
}

fn object_ids(files: &BTreeSet<(u64, String, u8)>) -> BTreeSet<String> {
    files.iter().map(|(_, o, _)| o.clone()).collect()
}

async fn get_bytes(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let r = c.get_object().bucket(bucket).key(key).send().await.ok()?;
    Some(r.body.collect().await.unwrap().into_bytes().to_vec())
}

/// A body that names its key and generation, over the inline threshold.
fn body(key: &str, generation: usize, len: usize) -> Vec<u8> {
    let head = format!("{key}#{generation}#");
    head.bytes().chain(std::iter::repeat(b'.')).take(len).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_a_pg_on_every_node_returns_what_a_scan_of_its_data_directory_finds() {
    let cluster = DevCluster::start_with(&["--pgs=64"]);
    let c = cluster.client();
    c.create_bucket().bucket("enum").send().await.unwrap();
    for i in 0..40 {
        let len = if i % 4 == 0 { 1000 } else { 70_000 + i * 100 };
        try_put(&c, "enum", &format!("k{i}"), body("k", i, len)).await.unwrap();
    }
    for i in 0..5 {
        c.delete_object().bucket("enum").key(format!("k{i}")).send().await.unwrap();
    }
    let up = c.create_multipart_upload().bucket("enum").key("mp").send().await.unwrap();
    let id = up.upload_id().unwrap();
    c.upload_part()
        .bucket("enum")
        .key("mp")
        .upload_id(id)
        .part_number(1)
        .body(vec![7u8; 100_000].into())
        .send()
        .await
        .unwrap();

    let map = map_of(&cluster);
    let client = node_client(&cluster);
    let on_disk = scan(&cluster);
    let mut listed = BTreeSet::new();
    for (node, _, addr) in cluster.nodes() {
        // Everything the node's manifest store holds, by bucket.
        let mut held = BTreeSet::new();
        for bucket in ["enum", placement::UPLOADS, placement::PARTS] {
            let req = ListManifests { bucket: bucket.into(), prefix: String::new(), start_after: None, limit: 10_000 };
            for e in client.list_manifests(&addr, &req).await.unwrap().entries {
                held.insert((bucket.to_string(), e.key, e.version));
            }
        }
        let mut held_by_pg = BTreeSet::new();
        for pg in 0..map.pg_count {
            let sel = PgSelector::of(&map, pg);
            let mut after = None;
            loop {
                let page = client.list_pg_shards(&addr, &ListPg { pg: sel, after, limit: 3 }).await.unwrap();
                for s in &page.shards {
                    let hash = placement::object_id_hash(&s.id.object_id).expect("new ids carry their hash");
                    assert_eq!(map.pg_of_hash(hash), pg, "shard {} listed in the wrong PG", s.id.file_name());
                    assert!(listed.insert((node, s.id.object_id.clone(), s.id.index)), "listed twice");
                    assert!(s.data_len > 0);
                }
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            let mut after = None;
            loop {
                let page = client.list_pg_manifests(&addr, &ListPg { pg: sel, after, limit: 2 }).await.unwrap();
                for e in page.entries {
                    assert_eq!(placement::pg_of(&map, &e.bucket, &e.key), pg);
                    assert!(held_by_pg.insert((e.bucket, e.key, e.version)), "manifest listed twice");
                }
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
        }
        assert_eq!(held_by_pg, held, "node {node}: the PG listings hold exactly the node's manifests");
        assert!(!held.is_empty());
    }
    assert_eq!(listed, on_disk, "the PG listings of every node hold exactly the shard files on disk");
    assert!(on_disk.len() >= 30 * 6);
}

/// Writes a shard directly to a node, as a gateway that died before writing
/// its manifest would have left it.
async fn orphan_shard(client: &NodeClient, addr: &str, object_id: &str) {
    let id = ShardId { object_id: object_id.into(), index: 0 };
    let header = ShardHeader { codec: "rs-gf8-v1".into(), k: 4, m: 2, block_size: 16, blocks: 1 };
    let frames = futures::stream::iter([Ok(Frame::new(Bytes::from_static(b"orphaned bytes")))]);
    client.put_shard(addr, &id, &header, frames).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_1000_overwrites_and_a_gateway_restart_only_live_versions_keep_shards() {
    let cluster = DevCluster::start_with(FAST_UPKEEP);
    let c = cluster.client();
    c.create_bucket().bucket("gcbkt").send().await.unwrap();
    let mut extra = cluster.start_gateway("gw-gc", &[]);
    let w = extra.client();

    // A shard no manifest will ever name (new-style id), and one written
    // before ids carried their hash, which no PG can vouch for.
    let client = node_client(&cluster);
    let (_, _, addr) = cluster.nodes()[0].clone();
    let orphan = placement::new_object_id(placement::placement_hash("gcbkt", "never-written"));
    orphan_shard(&client, &addr, &orphan).await;
    let legacy = "0123456789abcdef9123456789abcdef".to_string();
    orphan_shard(&client, &addr, &legacy).await;

    // 1,000 overwrites of 10 keys through the extra gateway, each key by one
    // writer (so "the last write" of a key is well defined), 10 at a time.
    const KEYS: usize = 10;
    let mut tasks = Vec::new();
    for lane in 0..KEYS {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("k{lane}");
            for n in 0..1000 / KEYS {
                try_put(&w, "gcbkt", &key, body(&key, n, 70_000)).await.unwrap();
            }
            (key, 1000 / KEYS - 1)
        }));
    }
    let mut last = BTreeMap::new();
    for t in tasks {
        let (key, n) = t.await.unwrap();
        last.insert(key, n);
    }
    // Kill the gateway that did the writes right away, then start it again.
    extra.kill();
    let _restarted = cluster.start_gateway("gw-gc", &[]);
    // A DELETE too: its key's shards must go as well.
    c.delete_object().bucket("gcbkt").key("k0").send().await.unwrap();

    let files_before = scan(&cluster).len();
    let result = wait_until(
        Duration::from_secs(90),
        lazily(|| format!("the collector to leave only live shards; node log:\n{}", cluster.node_log(1))),
        async || {
            let files = scan(&cluster);
            let ids = object_ids(&files);
            // 9 live keys × 6 shards, plus the legacy shard nobody may judge.
            if files.len() == (KEYS - 1) * 6 + 1 && !ids.contains(&orphan) {
                Ok(files)
            } else {
                Err(format!(
                    "{} shard files of {} objects remain (orphan there: {})",
                    files.len(),
                    ids.len(),
                    ids.contains(&orphan)
                ))
            }
        },
    )
    .await;
    assert!(files_before > result.len(), "{files_before} files before collection");
    assert!(object_ids(&result).contains(&legacy), "a shard without a placement hash is never collected");
    // Every remaining key reads back as its last acknowledged write.
    for (key, n) in &last {
        let got = get_bytes(&c, "gcbkt", key).await;
        if key == "k0" {
            assert!(got.is_none(), "k0 was deleted");
        } else {
            let head = got.as_ref().map(|b| String::from_utf8_lossy(&b[..12]).to_string());
            assert!(got == Some(body(key, *n, 70_000)), "{key}: expected write {n}, got a body starting {head:?}");
        }
    }
}

/// The manifest replicas of `bucket/key`'s PG.
fn replicas_of(c: &DevCluster, bucket: &str, key: &str) -> Vec<NodeId> {
    let map = map_of(c);
    map.manifest_replicas(placement::pg_of(&map, bucket, key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_missed_a_delete_gets_the_tombstone_and_then_everyone_purges_it() {
    let cluster = DevCluster::start_with(FAST_UPKEEP);
    let c = cluster.client();
    c.create_bucket().bucket("tomb").send().await.unwrap();
    try_put(&c, "tomb", "gone", body("gone", 1, 70_000)).await.unwrap();
    try_put(&c, "tomb", "kept", body("kept", 1, 1_000)).await.unwrap();
    let replicas = replicas_of(&cluster, "tomb", "gone");
    let map = map_of(&cluster);
    let client = node_client(&cluster);
    let addr_of = |n: NodeId| map.topology.node(n).unwrap().addr.clone();

    // One replica misses the delete; the tombstone outlives the horizon
    // while it is away, and must not be purged meanwhile.
    let away = Stopped::stop(&[cluster.node_pid(u64::from(replicas[0].0))]).await;
    c.delete_object().bucket("tomb").key("gone").send().await.unwrap();
    // Past the horizon (2 s) and past two collector rounds that each wait a
    // node call's deadline (5 s) for the silent replica, so that a purge that
    // did not wait for it would have happened (checked: it does then).
    tokio::time::sleep(Duration::from_secs(16)).await;
    for n in &replicas[1..] {
        let m = client.get_manifest(&addr_of(*n), "tomb", "gone").await.unwrap();
        assert!(m.is_some_and(|m| m.is_deleted()), "node {n} purged a tombstone a replica had not seen");
    }
    away.resume().await;

    // Anti-entropy gives it the tombstone; then every replica purges it, and
    // the object never comes back.
    wait_until(
        Duration::from_secs(60),
        lazily(|| {
            format!("every replica to purge the tombstone; node log:\n{}", cluster.node_log(replicas[0].0.into()))
        }),
        async || {
            let mut held = Vec::new();
            for n in &replicas {
                held.push(client.get_manifest(&addr_of(*n), "tomb", "gone").await.map_err(|e| e.to_string())?);
            }
            if held.iter().all(|m| m.is_none()) { Ok(()) } else { Err(format!("{held:?}")) }
        },
    )
    .await;
    assert!(get_bytes(&c, "tomb", "gone").await.is_none());
    assert_eq!(list_keys(&c, "tomb").await, ["kept"]);
    // The shards of the deleted object are collected too.
    wait_until(Duration::from_secs(60), "the deleted object's shards to go", async || {
        let n = scan(&cluster).len();
        if n == 0 { Ok(()) } else { Err(format!("{n} shard files")) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overwrite_whose_manifest_replicas_stall_answers_503_or_200_and_a_whole_version_stays_readable() {
    let cluster = DevCluster::start_with(FAST_UPKEEP);
    let c = cluster.client();
    c.create_bucket().bucket("stall").send().await.unwrap();
    let v1 = body("obj", 1, 200_000);
    let v2 = body("obj", 2, 200_000);
    try_put(&c, "stall", "obj", v1.clone()).await.unwrap();
    let replicas = replicas_of(&cluster, "stall", "obj");
    // Two of the three manifest replicas stall while the overwrite runs (the
    // shards can still go to substitutes; the manifest cannot reach a majority).
    let pids: Vec<i32> = replicas[..2].iter().map(|n| cluster.node_pid(u64::from(n.0))).collect();
    let stalled = Stopped::stop(&pids).await;
    let answer = try_put(&c, "stall", "obj", v2.clone()).await;
    stalled.resume().await;
    // Whatever the answer, a GET gives one complete version, now and after
    // the collector and anti-entropy have had several rounds.
    for round in 0..2 {
        let got = wait_until(Duration::from_secs(30), "a GET to answer", async || {
            get_bytes(&c, "stall", "obj").await.ok_or("no body".to_string())
        })
        .await;
        let head = String::from_utf8_lossy(&got[..got.len().min(8)]).to_string();
        match &answer {
            Ok(()) => assert!(got == v2, "round {round}: the acknowledged overwrite, got a body starting {head:?}"),
            Err(e) => assert!(got == v1 || got == v2, "round {round}: after {e}: a torn or unknown body {head:?}"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    // And no shard of a version nobody can read stays behind.
    wait_until(Duration::from_secs(60), "only the readable version's shards to remain", async || {
        let n = object_ids(&scan(&cluster)).len();
        if n == 1 { Ok(()) } else { Err(format!("{n} objects have shards")) }
    })
    .await;
}

/// One client operation of the history test.
#[derive(Debug, Clone)]
struct Op {
    key: String,
    /// `Some(generation)` for a PUT of `body(key, generation, ..)`, `None` for a DELETE.
    put: Option<usize>,
    start: std::time::Instant,
    end: std::time::Instant,
    acked: bool,
}

/// What a key may hold after `ops`: the last acknowledged operation in
/// completion order, or any operation that ended after it started (those
/// overlapped it, or failed after it and may have taken effect). `None` in
/// the set stands for "deleted or never written".
fn acceptable(ops: &[Op]) -> BTreeSet<Option<usize>> {
    let Some(last) = ops.iter().filter(|o| o.acked).max_by_key(|o| o.end) else {
        return ops.iter().map(|o| o.put).chain([None]).collect();
    };
    ops.iter().filter(|o| std::ptr::eq(*o, last) || o.end > last.start).map(|o| o.put).collect()
}

/// The generation a body names (`key#generation#...`).
fn generation_of(body: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(&body[..body.len().min(32)]).to_string();
    text.split('#').nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_randomized_history_with_skewed_clocks_and_killed_processes_ends_in_the_last_acknowledged_state() {
    use rand::Rng;
    let cluster = DevCluster::start_with(FAST_UPKEEP);
    let a = cluster.client();
    a.create_bucket().bucket("hist").send().await.unwrap();
    // Gateway B's clock is 3 s behind: it must refuse writes (503) and still
    // serve reads. Gateway C is killed mid-run.
    let behind = cluster.start_gateway("gw-behind", &["--test-clock-offset-ms=-3000"]);
    let mut doomed = cluster.start_gateway("gw-doomed", &[]);
    let clients = [a.clone(), behind.client(), doomed.client()];
    const KEYS: [&str; 4] = ["a", "b", "c", "d"];
    let ops = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Op>::new()));
    let generation = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let run_for = Duration::from_secs(20);
    let started = std::time::Instant::now();
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (clients, ops, generation) = (clients.clone(), ops.clone(), generation.clone());
        workers.push(tokio::spawn(async move {
            while started.elapsed() < run_for {
                let (key, client, put, small) = {
                    let mut r = rand::thread_rng();
                    (KEYS[r.gen_range(0..4)], r.gen_range(0..3), r.gen_range(0..4) != 0, r.gen_bool(0.3))
                };
                let c = &clients[client];
                let start = std::time::Instant::now();
                let (put, acked) = if put {
                    let g = generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let len = if small { 1_000 } else { 70_000 };
                    (Some(g), try_put(c, "hist", key, body(key, g, len)).await.is_ok())
                } else {
                    (None, c.delete_object().bucket("hist").key(key).send().await.is_ok())
                };
                let op = Op { key: key.into(), put, start, end: std::time::Instant::now(), acked };
                ops.lock().unwrap().push(op);
            }
        }));
    }
    // Chaos: kill -9 a node, gateway C, a second node; restart each node
    // later (the second after longer than the tombstone horizon).
    let nodes: Vec<u64> = cluster.nodes().iter().map(|n| n.0).collect();
    let (x, y) = {
        let mut r = rand::thread_rng();
        let x = nodes[r.gen_range(0..nodes.len())];
        let others: Vec<u64> = nodes.iter().copied().filter(|n| *n != x).collect();
        (x, others[r.gen_range(0..others.len())])
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(signal(cluster.node_pid(x), 9), 0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    doomed.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _x_again =
        cluster.restart_node(x, &FAST_UPKEEP.iter().map(|a| a.trim_start_matches("--node-arg=")).collect::<Vec<_>>());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(signal(cluster.node_pid(y), 9), 0);
    for w in workers {
        w.await.unwrap();
    }
    // Y stays away past the tombstone horizon while deletes happened.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _y_again =
        cluster.restart_node(y, &FAST_UPKEEP.iter().map(|a| a.trim_start_matches("--node-arg=")).collect::<Vec<_>>());

    let ops = ops.lock().unwrap().clone();
    let acked = ops.iter().filter(|o| o.acked).count();
    eprintln!(
        "history: {} operations, {acked} acknowledged; nodes {x} and {y} and gateway C killed; gateway B 3 s behind",
        ops.len()
    );
    assert!(acked > 20, "only {acked} of {} operations were acknowledged", ops.len());
    assert!(ops.iter().any(|o| !o.acked), "the history had no failure at all: the chaos did nothing");
    assert!(behind.log().contains("refusing writes"), "the gateway 3 s behind did not refuse writes");

    // Every key holds what the history allows, through the surviving
    // gateways; listed keys all read.
    let map = map_of(&cluster);
    let nc = node_client(&cluster);
    for key in KEYS {
        let history: Vec<Op> = ops.iter().filter(|o| o.key == key).cloned().collect();
        let allowed = acceptable(&history);
        for c in [&a, &clients[1]] {
            let got = wait_until(Duration::from_secs(30), format!("a GET of {key} to answer"), async || {
                match c.get_object().bucket("hist").key(key).send().await {
                    Ok(r) => Ok(generation_of(&r.body.collect().await.unwrap().into_bytes())),
                    Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
                    Err(e) => Err(format!("{e:?}")),
                }
            })
            .await;
            assert!(allowed.contains(&got), "{key}: holds {got:?}, the history allows {allowed:?}");
        }
    }
    for key in &list_keys(&a, "hist").await {
        assert!(get_bytes(&a, "hist", key).await.is_some(), "{key} is listed but does not read");
    }

    // Once the collector, the purge and anti-entropy have run: the replicas
    // of each key agree, tombstones are gone, and the shard files on disk are
    // exactly those the live manifests place.
    let final_state = wait_until(
        Duration::from_secs(120),
        lazily(|| format!("the cluster to converge; node {y} log:\n{}", cluster.node_log(y))),
        async || {
            let mut placed = BTreeSet::new();
            let mut states = BTreeMap::new();
            for key in KEYS {
                let pg = placement::pg_of(&map, "hist", key);
                let mut seen = Vec::new();
                for n in map.manifest_replicas(pg) {
                    let addr = map.topology.node(n).unwrap().addr.clone();
                    seen.push(nc.get_manifest(&addr, "hist", key).await.map_err(|e| e.to_string())?);
                }
                if seen.iter().any(|m| m != &seen[0]) {
                    return Err(format!("{key}: replicas disagree"));
                }
                if seen[0].as_ref().is_some_and(|m| m.is_deleted()) {
                    return Err(format!("{key}: tombstone not purged yet"));
                }
                if let Some(m) = &seen[0] {
                    for set in m.body.sharded_sets() {
                        for l in &set.shards {
                            placed.insert((u64::from(l.node.0), set.object_id.clone(), l.index));
                        }
                    }
                }
                states.insert(key, seen[0].clone());
            }
            let on_disk = scan(&cluster);
            if on_disk != placed {
                return Err(format!(
                    "{} shard files on disk, {} placed by live manifests",
                    on_disk.len(),
                    placed.len()
                ));
            }
            Ok(states)
        },
    )
    .await;
    // And the converged state is still one the history allows (a node that
    // missed deletes came back after the horizon: nothing it held returned).
    for key in KEYS {
        let history: Vec<Op> = ops.iter().filter(|o| o.key == key).cloned().collect();
        let allowed = acceptable(&history);
        let got = match get_bytes(&a, "hist", key).await {
            Some(b) => generation_of(&b),
            None => None,
        };
        assert!(allowed.contains(&got), "{key}: after convergence holds {got:?}, the history allows {allowed:?}");
        assert_eq!(got.is_some(), final_state[key].is_some(), "{key}: GET and the replicas disagree");
    }
}
