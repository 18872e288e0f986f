//! The rebuild engine (issue 11, point 2): a site killed with `kill -9` and
//! no command typed is detected, taken out, and every object gets k+m
//! shards on distinct in-service nodes again, each shard's file present on
//! its node; one more node lost afterwards (killed, its disk wiped) then
//! costs no object.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sillok_placement::{NodeState, PlacementMap};
use sillok_storage_node::api::{ListPg, PgSelector, ShardId};
use sillok_storage_node::{NodeClient, Timeouts};

use crate::support::*;

/// The map node `id` of `site` follows (its saved `map.json`).
fn map_of(c: &DevCluster, site: &str, id: u64) -> Option<PlacementMap> {
    let p = c.dir.path().join("sites").join(site).join(format!("node-{id}")).join("map.json");
    serde_json::from_slice(&std::fs::read(p).ok()?).ok()
}

/// Checks, on every current manifest replica of every PG, that each live
/// sharded object has k+m shards on k+m distinct in-service nodes, and (on
/// the first replica) that each of those nodes holds its shard file. Returns
/// how many objects were checked, or the first gap found.
async fn full_redundancy(client: &NodeClient, map: &PlacementMap) -> Result<usize, String> {
    let width = map.profile.width();
    let mut objects = 0;
    for pg in 0..map.pg_count {
        for (r, replica) in map.manifest_replicas(pg).into_iter().enumerate() {
            let addr = &map.topology.node(replica).ok_or("replica not in the map")?.addr;
            let req = ListPg { pg: PgSelector::of(map, pg), after: None, limit: 10_000 };
            let list =
                client.list_pg_objects(addr, &req).await.map_err(|e| format!("PG {pg} on node {replica}: {e}"))?;
            for o in &list.objects {
                objects += usize::from(r == 0);
                for set in &o.sets {
                    let shards = &set.sharded.shards;
                    let nodes: BTreeSet<_> = shards.iter().map(|l| l.node).collect();
                    if shards.len() != width || nodes.len() != width {
                        return Err(format!(
                            "{}/{} (node {replica}'s manifest): shards at {shards:?}",
                            o.bucket, o.key
                        ));
                    }
                    for l in shards {
                        let node = map.topology.node(l.node).ok_or("a shard on a node not in the map")?;
                        if node.state != NodeState::Up {
                            return Err(format!(
                                "{}/{}: shard {} on node {} ({:?})",
                                o.bucket, o.key, l.index, l.node, node.state
                            ));
                        }
                        if r > 0 {
                            continue;
                        }
                        let id = ShardId { object_id: set.sharded.object_id.clone(), index: l.index };
                        match client.stat_shard(&node.addr, &id).await {
                            Ok(Some(_)) => {}
                            other => {
                                return Err(format!(
                                    "{}/{}: shard {} not on node {}: {other:?}",
                                    o.bucket, o.key, l.index, l.node
                                ));
                            }
                        }
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
        "--catalog-arg=--site-out-after-ms=6000",
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

    // Site c dies: every process, kill -9.
    let lost = "site-c";
    let lost_nodes: Vec<u64> = c.nodes().into_iter().filter(|(_, s, _)| s == lost).map(|n| n.0).collect();
    c.kill_site(lost);
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
    let client = NodeClient::new(c.cluster_file()["cluster_secret"].as_str().unwrap(), Timeouts::default());
    let checked =
        wait_until(Duration::from_secs(240), "every object at k+m shards on the surviving sites", async || {
            let map = map_of(&c, &survivor.1, survivor.0).ok_or("no map yet".to_string())?;
            if !lost_nodes.iter().all(|id| {
                map.topology.node(sillok_placement::NodeId(*id as u32)).is_some_and(|n| n.state == NodeState::Out)
            }) {
                return Err(format!("{lost} not out yet (map epoch {})", map.epoch));
            }
            full_redundancy(&client, &map).await
        })
        .await;
    let sharded = want.keys().filter(|k| !k.starts_with("thumb")).count();
    assert_eq!(checked, sharded, "the replicas list every sharded object once");
    let log: String = c.nodes().iter().filter(|n| n.1 != lost).map(|n| c.node_log(n.0)).collect();
    assert!(log.contains("rebuild round"), "no node logged a rebuild round");

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
