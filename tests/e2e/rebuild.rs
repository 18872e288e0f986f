//! The rebuild engine (issue 11, point 2): a site killed with `kill -9` and
//! no command typed is detected, taken out, and every object gets k+m
//! shards on distinct in-service nodes again, each shard's file present on
//! its node; one more node lost afterwards (killed, its disk wiped) then
//! costs no object.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::time::Duration;

use sillok_placement::{NodeId, NodeState, PlacementMap};
use sillok_storage_node::api::{ListPg, PgObject, PgSelector, ShardId};
use sillok_storage_node::{NodeClient, Timeouts};

use crate::support::*;

/// The map a node (`(id, site, addr)` as `DevCluster::nodes` lists it)
/// follows, as it answers `GET /v1/map`.
pub(crate) async fn map_of(c: &DevCluster, node: &(u64, String, String)) -> Option<PlacementMap> {
    let client = NodeClient::with_tls(
        c.cluster_file()["cluster_secret"].as_str().unwrap(),
        Timeouts::default(),
        Some(&c.internal_tls("gateway")),
    );
    client.followed_map(&node.2).await.ok()
}

/// `sillok admin repair status --json`.
fn repair_status(c: &DevCluster) -> Result<serde_json::Value, String> {
    let out = c.admin(&["repair", "status", "--json"]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("repair status: {e}"))
}

/// Every current manifest replica's listing of every PG: `(pg, rank of the
/// replica in its row, the replica, its live sharded objects)`.
async fn replica_listings(
    client: &NodeClient,
    map: &PlacementMap,
) -> Result<Vec<(u32, usize, NodeId, Vec<PgObject>)>, String> {
    let mut out = Vec::new();
    for pg in 0..map.pg_count {
        for (rank, replica) in map.manifest_replicas(pg).into_iter().enumerate() {
            let addr = &map.topology.node(replica).ok_or("replica not in the map")?.addr;
            let req = ListPg { pg: PgSelector::of(map, pg), after: None, limit: 10_000 };
            let list =
                client.list_pg_objects(addr, &req).await.map_err(|e| format!("PG {pg} on node {replica}: {e}"))?;
            out.push((pg, rank, replica, list.objects));
        }
    }
    Ok(out)
}

/// Checks, on every current manifest replica of every PG, that each live
/// sharded object has k+m shards on k+m distinct in-service nodes, and (on
/// the first replica) that each of those nodes holds its shard file. Returns
/// how many objects were checked, or the first gap found.
pub(crate) async fn full_redundancy(client: &NodeClient, map: &PlacementMap) -> Result<usize, String> {
    let width = map.profile.width();
    let mut objects = 0;
    for (_, rank, replica, listed) in replica_listings(client, map).await? {
        for o in &listed {
            objects += usize::from(rank == 0);
            for set in &o.sets {
                let shards = &set.sharded.shards;
                let nodes: BTreeSet<_> = shards.iter().map(|l| l.node).collect();
                if shards.len() != width || nodes.len() != width {
                    return Err(format!("{}/{} (node {replica}'s manifest): shards at {shards:?}", o.bucket, o.key));
                }
                for l in shards {
                    let node = map.topology.node(l.node).ok_or("a shard on a node not in the map")?;
                    let what = format!("{}/{}: shard {} on node {}", o.bucket, o.key, l.index, l.node);
                    if node.state != NodeState::Up {
                        return Err(format!("{what} ({:?})", node.state));
                    }
                    let id = ShardId { object_id: set.sharded.object_id.clone(), index: l.index };
                    if rank == 0 && !matches!(client.stat_shard(&node.addr, &id).await, Ok(Some(_))) {
                        return Err(format!("{what}: no such file there"));
                    }
                }
            }
        }
    }
    Ok(objects)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_site_is_rebuilt_onto_the_others_with_no_command_and_one_more_node_loss_loses_nothing() {
    let c = DevCluster::start_with(&[
        "--nodes-per-site=3",
        "--pgs=64",
        "--gateway-arg=--block-size=65536",
        "--catalog-arg=--down-after-ms=2000",
        "--catalog-arg=--site-out-after-ms=10000",
        "--node-arg=--rebuild-every-ms=1000",
        "--node-arg=--sync-every-ms=1000",
    ]);
    let s3 = c.client();
    s3.create_bucket().bucket("media").send().await.unwrap();
    // Photos and a few multi-stripe videos (stripes are 4 x 64 KiB), and thumbnails kept inline.
    let mut want: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for i in 0..240u64 {
        let len = if i % 20 == 0 { 700_000 } else { 70_000 + (i as usize * 7_919) % 200_000 };
        want.insert(format!("photo-{i:04}"), pattern(len, i));
    }
    for i in 0..40u64 {
        want.insert(format!("thumb-{i:04}"), pattern(2_000 + i as usize, 1000 + i));
    }
    for (k, v) in &want {
        put(&s3, "media", k, v.clone()).await;
    }

    // The throttle is set for every node at once, and each applies it.
    assert!(c.admin_ok(&["repair", "throttle"]).contains("no throttle set"));
    c.admin_ok(&["repair", "throttle", "--mib-per-s", "60", "--concurrency", "3"]);
    wait_until(Duration::from_secs(20), "every node to apply the catalog's throttle", async || {
        for (id, _, addr) in c.nodes() {
            let page = http_text(&c.metrics_url_of(&addr)).await;
            if !page.contains("sillok_rebuild_throttle_mib_per_s 60\n")
                || !page.contains("sillok_rebuild_throttle_concurrency 3\n")
            {
                return Err(format!("node {id} has not applied it"));
            }
        }
        Ok(())
    })
    .await;
    assert!(c.admin_ok(&["repair", "status"]).contains("60 MiB/s, 3 shards at once"));

    // Site c dies: every process, kill -9.
    let lost = "site-c";
    let lost_nodes: Vec<u64> = c.nodes().into_iter().filter(|(_, s, _)| s == lost).map(|n| n.0).collect();
    c.kill_site(lost);
    // Once the site is marked down, and before it is out, repair status tells
    // the truth: 4 of 6 shards left is critical for 4+2.
    wait_until(Duration::from_secs(30), "repair status to show critical PGs", async || {
        let s = repair_status(&c)?;
        if s["pgs"]["critical"].as_u64().unwrap_or(0) > 0 { Ok(()) } else { Err(s.to_string()) }
    })
    .await;
    // Writes, overwrites and deletes go on meanwhile.
    for i in 0..20u64 {
        let key = format!("during-{i:04}");
        let body = pattern(90_000 + i as usize * 1_000, 5000 + i);
        wait_until(Duration::from_secs(30), format!("PUT {key} during the outage"), async || {
            try_put(&s3, "media", &key, body.clone()).await
        })
        .await;
        want.insert(key, body);
    }
    for i in 0..10u64 {
        let key = format!("photo-{:04}", i * 3);
        let body = pattern(80_000, 9000 + i);
        put(&s3, "media", &key, body.clone()).await;
        want.insert(key, body);
        let gone = format!("photo-{:04}", i * 3 + 1);
        s3.delete_object().bucket("media").key(&gone).send().await.unwrap();
        want.remove(&gone);
    }

    // No command: the detector takes the site out and the engine rebuilds.
    let survivor = c.nodes().into_iter().find(|(_, s, _)| s == "site-a").unwrap();
    let client = NodeClient::with_tls(
        c.cluster_file()["cluster_secret"].as_str().unwrap(),
        Timeouts::default(),
        Some(&c.internal_tls("gateway")),
    );
    let checked =
        wait_until(Duration::from_secs(240), "every object at k+m shards on the surviving sites", async || {
            let map = map_of(&c, &survivor).await.ok_or("no map yet".to_string())?;
            if !lost_nodes
                .iter()
                .all(|id| map.topology.node(NodeId(*id as u32)).is_some_and(|n| n.state == NodeState::Out))
            {
                return Err(format!("{lost} not out yet (map epoch {})", map.epoch));
            }
            full_redundancy(&client, &map).await
        })
        .await;
    let sharded = want.keys().filter(|k| !k.starts_with("thumb")).count();
    assert_eq!(checked, sharded, "the replicas list every sharded object once");
    let log: String = c.nodes().iter().filter(|n| n.1 != lost).map(|n| c.node_log(n.0)).collect();
    assert!(log.contains("rebuild round"), "no node logged a rebuild round");
    // Repair status ends with nothing left and every PG at k+m on distinct
    // nodes but 3 in a site: degraded-site, not clean, while site-c is out.
    let s = wait_until(Duration::from_secs(30), "repair status to show the rebuild done", async || {
        let s = repair_status(&c)?;
        let done = s["shards_left"] == 0 && s["pgs"]["degraded-site"] == 64;
        if done { Ok(s) } else { Err(s.to_string()) }
    })
    .await;
    assert_eq!(s["pgs"]["clean"], 0, "{s}");
    assert!(s["nodes_not_reporting"].as_array().unwrap().is_empty(), "{s}");
    // Each surviving node's Prometheus page (unsigned) counts what it rebuilt.
    let mut rebuilt = 0;
    for (_, _, addr) in c.nodes().iter().filter(|n| n.1 != lost) {
        let page = http_text(&c.metrics_url_of(addr)).await;
        let line = page.lines().find(|l| l.starts_with("sillok_rebuild_shards_written_total ")).expect(&page);
        rebuilt += line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap();
    }
    assert!(rebuilt > 0, "no node's metrics count a rebuilt shard");
    // Every process's page carries the cluster's PG states: the catalog
    // replicas' (unsigned), the gateway's, and the surviving nodes'.
    let mut pages = vec![format!("{}/_sillok/metrics", c.endpoint())];
    for r in c.cluster_file()["catalog_replicas"].as_array().unwrap() {
        if r["site"] != lost {
            pages.push(c.metrics_url_of(r["addr"].as_str().unwrap()));
        }
    }
    pages.extend(c.nodes().iter().filter(|n| n.1 != lost).map(|n| c.metrics_url_of(&n.2)));
    for url in pages {
        wait_until(Duration::from_secs(20), format!("{url} to show 64 degraded-site PGs"), async || {
            let page = http_text(&url).await;
            let want = ["sillok_cluster_pgs{state=\"degraded-site\"} 64\n", "sillok_cluster_shards_left 0\n"];
            if want.iter().all(|w| page.contains(w)) { Ok(()) } else { Err(page) }
        })
        .await;
    }

    // One more node lost for good: killed, and its disk wiped.
    let victim = c.nodes().into_iter().find(|(_, s, _)| s == "site-b").unwrap();
    assert_eq!(signal(c.node_pid(victim.0), 9), 0);
    let dir = c.dir.path().join("sites").join(&victim.1).join(format!("node-{}", victim.0));
    std::fs::remove_dir_all(&dir).unwrap();
    for (k, v) in &want {
        assert_same(&get(&s3, "media", k, None).await, v, k);
    }
    for i in 0..10u64 {
        let gone = format!("photo-{:04}", i * 3 + 1);
        let r = s3.get_object().bucket("media").key(&gone).send().await;
        assert!(r.is_err(), "{gone} was deleted during the outage but reads back");
    }
}

/// Shard files of data shards (index < k = 4) of bucket objects, by file name.
fn data_shard_files(c: &DevCluster) -> Vec<std::path::PathBuf> {
    c.shard_files()
        .into_iter()
        .map(|(_, p)| p)
        .filter(|p| p.extension().and_then(|e| e.to_str()).and_then(|e| e.parse::<u8>().ok()).is_some_and(|i| i < 4))
        .collect()
}

/// Flips one byte inside the first block's data (after the 64-byte file
/// header and the 36-byte frame header); returns the original bytes.
fn flip_a_byte(path: &std::path::Path) -> Vec<u8> {
    let original = std::fs::read(path).unwrap();
    let mut bad = original.clone();
    bad[64 + 36 + 10] ^= 0x5a;
    std::fs::write(path, &bad).unwrap();
    original
}

async fn wait_restored(files: &[(std::path::PathBuf, Vec<u8>)], what: &str) {
    wait_until(Duration::from_secs(60), what, async || {
        for (p, original) in files {
            if std::fs::read(p).ok().as_ref() != Some(original) {
                return Err(format!("{} still differs", p.display()));
            }
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_that_meets_a_corrupt_shard_has_it_rewritten() {
    // No scrub: only the GET can find the damage.
    let c = DevCluster::start_with(&[
        "--pgs=64",
        "--gateway-arg=--block-size=65536",
        "--node-arg=--rebuild-every-ms=1000",
        "--node-arg=--scrub-every-ms=0",
    ]);
    let s3 = c.client();
    s3.create_bucket().bucket("heal").send().await.unwrap();
    let body = pattern(300_000, 7);
    put(&s3, "heal", "photo", body.clone()).await;
    let files = data_shard_files(&c);
    assert_eq!(files.len(), 4, "one object, four data shards: {files:?}");
    let victim = files[0].clone();
    let original = flip_a_byte(&victim);
    // The GET is served from parity, byte-exact, and reports the shard.
    assert_same(&get(&s3, "heal", "photo", None).await, &body, "photo");
    wait_restored(&[(victim, original)], "the corrupt shard to be rewritten after the GET").await;
    assert!(c.gateway_log().contains("reported an unusable shard to its node"));
    assert_same(&get(&s3, "heal", "photo", None).await, &body, "photo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrub_finds_flipped_bytes_on_several_nodes_and_they_are_rewritten() {
    let c = DevCluster::start_with(&[
        "--pgs=64",
        "--gateway-arg=--block-size=65536",
        "--node-arg=--rebuild-every-ms=1000",
        "--node-arg=--scrub-every-ms=2000",
    ]);
    let s3 = c.client();
    s3.create_bucket().bucket("rot").send().await.unwrap();
    let mut want = BTreeMap::new();
    for i in 0..12u64 {
        let body = pattern(100_000 + i as usize * 5_000, 100 + i);
        put(&s3, "rot", &format!("k{i}"), body.clone()).await;
        want.insert(format!("k{i}"), body);
    }
    // One shard on each node, any index, each of a different object (so
    // every object keeps k sound shards).
    let mut picked: Vec<(std::path::PathBuf, Vec<u8>)> = Vec::new();
    let (mut nodes_hit, mut objects_hit) = (BTreeSet::new(), BTreeSet::new());
    for (_, p) in c.shard_files() {
        let node_dir = p.ancestors().nth(3).unwrap().to_path_buf();
        let object = p.file_stem().unwrap().to_owned();
        if !nodes_hit.contains(&node_dir) && !objects_hit.contains(&object) {
            nodes_hit.insert(node_dir);
            objects_hit.insert(object);
            let original = flip_a_byte(&p);
            picked.push((p, original));
        }
    }
    assert!(picked.len() >= 4, "corrupted shards on {} nodes only", picked.len());
    wait_restored(&picked, "the scrub to find and the engine to rewrite every flipped shard").await;
    let logs: String = c.nodes().iter().map(|n| c.node_log(n.0)).collect();
    assert!(logs.contains("scrub found a corrupt shard"), "no node logged what its scrub found");
    for (k, v) in &want {
        assert_same(&get(&s3, "rot", k, None).await, v, k);
    }
}

/// Whether every live sharded object's shard i is on its PG's slot i (so
/// the site rule holds again), on every current manifest replica; and the
/// number of shard entries the manifests name (on the first replica).
async fn at_home(client: &NodeClient, map: &PlacementMap) -> Result<usize, String> {
    let mut entries = 0;
    for (pg, rank, _, listed) in replica_listings(client, map).await? {
        for o in &listed {
            for set in &o.sets {
                entries += if rank == 0 { set.sharded.shards.len() } else { 0 };
                for l in &set.sharded.shards {
                    let home = map.slots(pg)[usize::from(l.index)];
                    if l.node != home {
                        return Err(format!(
                            "{}/{}: shard {} on {} (its slot is {home})",
                            o.bucket, o.key, l.index, l.node
                        ));
                    }
                }
            }
        }
    }
    Ok(entries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_that_returns_gets_its_shards_back_and_nothing_deleted_or_overwritten_reappears() {
    let node_args = [
        "--rebuild-every-ms=1000",
        "--sync-every-ms=1000",
        "--collect-grace-ms=3000",
        "--collect-every-ms=1000",
        "--scrub-every-ms=0",
    ];
    let mut args = vec![
        "--nodes-per-site=3".to_string(),
        "--pgs=64".into(),
        "--gateway-arg=--block-size=65536".into(),
        "--catalog-arg=--down-after-ms=2000".into(),
        "--catalog-arg=--site-out-after-ms=6000".into(),
    ];
    args.extend(node_args.iter().map(|a| format!("--node-arg={a}")));
    let c = DevCluster::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let s3 = c.client();
    s3.create_bucket().bucket("back").send().await.unwrap();
    let mut want: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for i in 0..60u64 {
        want.insert(format!("k{i:03}"), pattern(70_000 + i as usize * 3_001, i));
    }
    for (k, v) in &want {
        put(&s3, "back", k, v.clone()).await;
    }
    let lost = "site-c";
    let lost_nodes: Vec<u64> = c.nodes().into_iter().filter(|(_, s, _)| s == lost).map(|n| n.0).collect();
    c.kill_site(lost);
    // While it is away: overwrites, deletes and new objects.
    let mut deleted = Vec::new();
    for i in 0..10u64 {
        let key = format!("k{:03}", i * 5);
        let body = pattern(75_000, 700 + i);
        wait_until(Duration::from_secs(30), format!("overwrite {key}"), async || {
            try_put(&s3, "back", &key, body.clone()).await
        })
        .await;
        want.insert(key, body);
        let gone = format!("k{:03}", i * 5 + 1);
        s3.delete_object().bucket("back").key(&gone).send().await.unwrap();
        want.remove(&gone);
        deleted.push(gone);
        let new = format!("new{i:02}");
        let body = pattern(90_000, 800 + i);
        put(&s3, "back", &new, body.clone()).await;
        want.insert(new, body);
    }
    let survivor = c.nodes().into_iter().find(|(_, s, _)| s == "site-a").unwrap();
    let client = NodeClient::with_tls(
        c.cluster_file()["cluster_secret"].as_str().unwrap(),
        Timeouts::default(),
        Some(&c.internal_tls("gateway")),
    );
    let state_of = |map: &PlacementMap, id: u64| map.topology.node(NodeId(id as u32)).map(|n| n.state);
    wait_until(Duration::from_secs(120), "site-c out and rebuilt elsewhere", async || {
        let map = map_of(&c, &survivor).await.ok_or("no map yet".to_string())?;
        if !lost_nodes.iter().all(|id| state_of(&map, *id) == Some(NodeState::Out)) {
            return Err(format!("{lost} not out yet"));
        }
        full_redundancy(&client, &map).await
    })
    .await;

    // The site comes back with its old disks: the detector takes it back in,
    // and its nodes take their shards back.
    let _back: Vec<ChildGuard> = lost_nodes.iter().map(|id| c.restart_node(*id, &node_args)).collect();
    let entries = wait_until(Duration::from_secs(180), "every shard at its slot again", async || {
        let map = map_of(&c, &survivor).await.ok_or("no map yet".to_string())?;
        if !lost_nodes.iter().all(|id| state_of(&map, *id) == Some(NodeState::Up)) {
            return Err(format!("{lost} not up yet (epoch {})", map.epoch));
        }
        full_redundancy(&client, &map).await?;
        at_home(&client, &map).await
    })
    .await;
    let status = c.admin_ok(&["status"]);
    assert!(status.contains("reporting again after out"), "{status}");
    for (k, v) in &want {
        assert_same(&get(&s3, "back", k, None).await, v, k);
    }
    for gone in &deleted {
        assert!(s3.get_object().bucket("back").key(gone).send().await.is_err(), "{gone} came back");
    }
    let keys = list_keys(&s3, "back").await;
    assert_eq!(keys, want.keys().cloned().collect::<Vec<_>>(), "the listing after the return");
    // Copies left on the sites that held the shards meanwhile are collected:
    // the disks end holding exactly the shards the manifests name.
    wait_until(Duration::from_secs(90), "surplus shard copies to be collected", async || {
        let files = c.shard_files().len();
        if files == entries { Ok(()) } else { Err(format!("{files} shard files for {entries} shards named")) }
    })
    .await;
}

/// Each up node's rebuild report in `sillok admin status --json`: `(id, shards_left, bytes_written)`.
fn rebuild_reports(c: &DevCluster) -> Vec<(u64, u64, u64)> {
    let out = c.admin(&["status", "--json"]);
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else { return Vec::new() };
    v["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter_map(|n| {
                    let r = &n["usage"]["repair"];
                    Some((n["id"].as_u64()?, r["shards_left"].as_u64()?, r["bytes_written"].as_u64()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_survives_killing_a_rebuilding_node_and_the_catalog_leader_and_places_every_shard_once() {
    let node_args =
        ["--rebuild-every-ms=1000", "--sync-every-ms=1000", "--rebuild-mib-per-s=1", "--rebuild-concurrency=1"];
    let mut args = vec![
        "--nodes-per-site=3".to_string(),
        "--pgs=64".into(),
        "--catalog-arg=--down-after-ms=2000".into(),
        // Long enough that a node killed for a few seconds is not taken out.
        "--catalog-arg=--out-after-ms=120000".into(),
        "--catalog-arg=--site-out-after-ms=5000".into(),
    ];
    args.extend(node_args.iter().map(|a| format!("--node-arg={a}")));
    let c = DevCluster::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let s3 = c.client();
    s3.create_bucket().bucket("mid").send().await.unwrap();
    let mut want = BTreeMap::new();
    for i in 0..60u64 {
        let body = pattern(400_000 + i as usize * 10_000, 300 + i);
        put(&s3, "mid", &format!("k{i:02}"), body.clone()).await;
        want.insert(format!("k{i:02}"), body);
    }
    c.kill_site("site-c");
    // Mid-rebuild: a node that has written some shards and has more to go.
    let (busy, _, _) = wait_until(Duration::from_secs(120), "a node in the middle of its rebuild", async || {
        rebuild_reports(&c).into_iter().find(|(_, left, written)| *left > 0 && *written > 0)
    })
    .await;
    let (_, busy_site, _) = c.nodes().into_iter().find(|n| n.0 == busy).unwrap();
    let busy_dir = c.dir.path().join("sites").join(&busy_site).join(format!("node-{busy}"));
    assert_eq!(signal(c.node_pid(busy), 9), 0);
    // And the catalog leader (a surviving site's replica: site-c's is dead),
    // which is started again on the same command line.
    let leader_site = c.leader_site().await;
    assert_ne!(leader_site, "site-c");
    let leader_pid = c.replica_pid(&leader_site);
    let line = cmdline(leader_pid);
    assert_eq!(signal(leader_pid, 9), 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = c.dir.path().join("logs").join("restarted-leader.log");
    let _leader = ChildGuard(spawn_sillok(&line[1..].iter().map(OsString::from).collect::<Vec<_>>(), &log));
    let _node = c.restart_node(busy, &node_args);
    assert!(busy_dir.exists());

    let survivor = c.nodes().into_iter().find(|(id, s, _)| s == "site-a" && *id != busy).unwrap();
    let client = NodeClient::with_tls(
        c.cluster_file()["cluster_secret"].as_str().unwrap(),
        Timeouts::default(),
        Some(&c.internal_tls("gateway")),
    );
    wait_until(Duration::from_secs(240), "every object at k+m shards, each at its slot", async || {
        let map = map_of(&c, &survivor).await.ok_or("no map yet".to_string())?;
        full_redundancy(&client, &map).await?;
        at_home(&client, &map).await
    })
    .await;
    for (k, v) in &want {
        assert_same(&get(&s3, "mid", k, None).await, v, k);
    }
}
