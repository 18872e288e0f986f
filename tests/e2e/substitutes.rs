//! Substitute nodes (issue 10, point 6): a shard whose slot node is
//! unreachable goes to another node, and two shards of one object share a
//! node only when fewer than k+m nodes are reachable. Every check is made on
//! the shard files on disk (`<site>/node-<id>/shards/../<object id>.<index>`),
//! and every object is read back byte-exact.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::support::*;

const MIB: usize = 1024 * 1024;
/// 4+2, the dev cluster's profile.
const WIDTH: usize = 6;

/// One shard file: its index, its node (`node-<id>`) and its site.
#[derive(Debug, Clone)]
struct Shard {
    index: u8,
    node: String,
    site: String,
}

/// Every shard file on disk, by object id.
fn shards_on_disk(cluster: &DevCluster) -> BTreeMap<String, Vec<Shard>> {
    let mut out: BTreeMap<String, Vec<Shard>> = BTreeMap::new();
    for (site, path) in cluster.shard_files() {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_else(|| panic!("{}", path.display()));
        let (oid, index) = name.rsplit_once('.').unwrap_or_else(|| panic!("not a shard file: {}", path.display()));
        let node = path
            .components()
            .filter_map(|c| c.as_os_str().to_str())
            .find(|c| c.starts_with("node-"))
            .unwrap_or_else(|| panic!("no node directory in {}", path.display()))
            .to_string();
        let index = index.parse().unwrap_or_else(|_| panic!("not a shard file: {}", path.display()));
        out.entry(oid.to_string()).or_default().push(Shard { index, node, site });
    }
    out
}

/// The objects whose shard files appeared since `before`.
fn new_objects(cluster: &DevCluster, before: &BTreeMap<String, Vec<Shard>>) -> BTreeMap<String, Vec<Shard>> {
    shards_on_disk(cluster).into_iter().filter(|(oid, _)| !before.contains_key(oid)).collect()
}

fn count<'a>(items: impl Iterator<Item = &'a String>) -> BTreeMap<&'a str, usize> {
    let mut c = BTreeMap::new();
    for i in items {
        *c.entry(i.as_str()).or_default() += 1;
    }
    c
}

/// Checks where the shards of every new object are: at most `per_node` shards
/// of one object on any node, none on a dead node, and for every complete
/// object (all k+m shards on disk) exactly `per_site[site]` shards in each
/// site. At least `objects` complete objects must be there (a PUT the SDK
/// retried may have left one more).
fn check_placement(
    placed: &BTreeMap<String, Vec<Shard>>,
    objects: usize,
    per_node: usize,
    per_site: &BTreeMap<String, usize>,
    dead_nodes: &[String],
    what: &str,
) {
    let mut complete = 0;
    for (oid, shards) in placed {
        let nodes = count(shards.iter().map(|s| &s.node));
        let sites = count(shards.iter().map(|s| &s.site));
        let layout = lazily(|| {
            let mut v: Vec<String> = shards.iter().map(|s| format!("{}@{}/{}", s.index, s.site, s.node)).collect();
            v.sort();
            v.join(" ")
        });
        for (node, n) in &nodes {
            assert!(*n <= per_node, "{what}: object {oid} has {n} shards on {node} (at most {per_node}): {layout}");
            assert!(!dead_nodes.iter().any(|d| d == node), "{what}: object {oid} has a shard on dead {node}: {layout}");
        }
        let indices: BTreeSet<u8> = shards.iter().map(|s| s.index).collect();
        assert_eq!(indices.len(), shards.len(), "{what}: object {oid} has a shard index twice: {layout}");
        if shards.len() == WIDTH {
            complete += 1;
            let want: BTreeMap<&str, usize> = per_site.iter().map(|(s, n)| (s.as_str(), *n)).collect();
            assert_eq!(sites, want, "{what}: object {oid}, shards per site: {layout}");
        }
    }
    assert!(complete >= objects, "{what}: {complete} complete objects on disk, {objects} written: {placed:?}");
    let per_node_max = placed.values().map(|s| count(s.iter().map(|s| &s.node)).into_values().max().unwrap_or(0));
    eprintln!(
        "{what}: {} new objects ({complete} complete), at most {} shards of one object on a node",
        placed.len(),
        per_node_max.max().unwrap_or(0)
    );
}

/// Waits until the gateway has marked every dead node suspect (its log says
/// so) and a sharded PUT succeeds.
async fn wait_for_writes(cluster: &DevCluster, c: &aws_sdk_s3::Client, bucket: &str, dead: &[u64]) {
    wait_until(
        Duration::from_secs(60),
        lazily(|| format!("the gateway to mark {dead:?} suspect; its log:\n{}", cluster.gateway_log())),
        async || {
            let log = cluster.gateway_log();
            dead.iter().all(|id| {
                let tag = format!("node=n{id}");
                log.lines()
                    .any(|l| l.contains("node marked suspect") && l.split_whitespace().any(|w| w == tag.as_str()))
            })
        },
    )
    .await;
    let mut attempt = 0;
    let last_error = std::sync::Mutex::new(String::new());
    wait_until(
        Duration::from_secs(60),
        lazily(|| format!("a sharded PUT to succeed; the last one failed with: {}", last_error.lock().unwrap())),
        async || {
            attempt += 1;
            let key = format!("probe-{}-{attempt}", dead.len());
            match c.put_object().bucket(bucket).key(&key).body(pattern(200 << 10, attempt).into()).send().await {
                Ok(_) => true,
                Err(e) => {
                    *last_error.lock().unwrap() = aws_sdk_s3::error::DisplayErrorContext(&e).to_string();
                    false
                }
            }
        },
    )
    .await;
}

/// How many times the gateway has marked a node other than `dead` (ids)
/// suspect so far (its log).
fn live_suspicions(cluster: &DevCluster, dead: &[u64]) -> usize {
    let dead: Vec<String> = dead.iter().map(|id| format!("node=n{id}")).collect();
    cluster
        .gateway_log()
        .lines()
        .filter(|l| l.contains("node marked suspect") && !l.split_whitespace().any(|w| dead.iter().any(|d| d == w)))
        .count()
}

/// The live nodes (not in `dead`) that the gateway suspects now: its log's
/// last word on them was "node marked suspect", not "node healthy again".
fn live_suspects_now(cluster: &DevCluster, dead: &[u64]) -> Vec<String> {
    let mut suspect: BTreeMap<String, bool> = BTreeMap::new();
    for line in cluster.gateway_log().lines() {
        let marked = line.contains("node marked suspect");
        if !marked && !line.contains("node healthy again") {
            continue;
        }
        if let Some(node) = line.split_whitespace().find_map(|w| w.strip_prefix("node=")) {
            suspect.insert(node.to_string(), marked);
        }
    }
    suspect
        .into_iter()
        .filter(|(node, marked)| *marked && !dead.iter().any(|id| *node == format!("n{id}")))
        .map(|(node, _)| node)
        .collect()
}

/// Writes 20 objects under `prefix` and checks where their shards went with
/// `check` (given the new objects' shards). A live node that the gateway
/// suspects (one of its calls timed out: on a loaded 2-core machine a
/// healthy node can be that slow) rightly changes where shards go, and a
/// shard upload it gave up on may still land; so a round during which that
/// happened is no test of placement (nor is one that starts while such a
/// suspicion lasts: the shards then go to substitutes, and the slot node's
/// rebuild copies them home). A round starts once no live node is suspect,
/// and one during which the gateway suspected a live node is written again
/// under a new prefix, up to 4 rounds; the check is strict on the first
/// round with no such suspicion, unless the gateway has suspected a live
/// node at any time before (see below). Returns every object written, for
/// the read-back.
async fn place_and_check(
    cluster: &DevCluster,
    c: &aws_sdk_s3::Client,
    prefix: &str,
    dead: &[u64],
    check: impl Fn(&BTreeMap<String, Vec<Shard>>),
) -> Vec<(String, Vec<u8>)> {
    let mut objects = Vec::new();
    for round in 1..=4 {
        wait_until(Duration::from_secs(60), "no live node suspect by the gateway", async || {
            let now = live_suspects_now(cluster, dead);
            if now.is_empty() { Ok(()) } else { Err(format!("{now:?}")) }
        })
        .await;
        let suspicions = live_suspicions(cluster, dead);
        let before = shards_on_disk(cluster);
        objects.extend(put_objects(c, "subs", &format!("{prefix}-{round}"), 20).await);
        let placed = new_objects(cluster, &before);
        if live_suspicions(cluster, dead) == suspicions {
            let Err(failed) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&placed))) else {
                return objects;
            };
            print_log_lines_of(cluster, &placed);
            // A suspicion's effects outlast it: the map may have marked the
            // slow node down meanwhile (gateways then substitute without
            // suspecting it), and a rebuild copies a substitute's shard
            // home. So a failed check after the gateway has suspected a
            // live node at all is written again, up to the 4 rounds; a
            // placement rule that is wrong fails every round.
            if round == 4 || live_suspicions(cluster, dead) == 0 {
                std::panic::resume_unwind(failed);
            }
            eprintln!(
                "NOTE {prefix}: round {round}: the placement check failed (above) after the gateway had suspected a live node; writing again"
            );
            continue;
        }
        eprintln!("{prefix}: round {round}: the gateway suspected a live node meanwhile; writing again");
    }
    panic!(
        "{prefix}: in each of 4 rounds of 20 PUTs the gateway suspected a live node; its log:\n{}",
        cluster.gateway_log()
    );
}

/// For whoever reads a failure: every process's log lines that name one of
/// the objects, and the gateway's warnings.
fn print_log_lines_of(cluster: &DevCluster, placed: &BTreeMap<String, Vec<Shard>>) {
    let Ok(logs) = std::fs::read_dir(cluster.dir.path().join("logs")) else { return };
    for entry in logs.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            let warning = name == "gateway.log" && !line.contains(" INFO ");
            if warning || placed.keys().any(|oid| line.contains(oid.as_str())) {
                eprintln!("{name}: {line}");
            }
        }
    }
}

/// `(id, pid)` of every storage node of `site`, by id.
fn site_nodes(cluster: &DevCluster, site: &str) -> Vec<(u64, i32)> {
    let mut v: Vec<(u64, i32)> =
        cluster.site_procs(site).into_iter().filter(|p| p.role == Role::Node).map(|p| (p.id, p.pid)).collect();
    v.sort();
    v
}

async fn put_objects(c: &aws_sdk_s3::Client, bucket: &str, prefix: &str, n: usize) -> Vec<(String, Vec<u8>)> {
    let mut objects = Vec::new();
    for i in 0..n {
        let key = format!("{prefix}/o{i}");
        let body = pattern(3 * MIB, 9_000 + objects.len() as u64 + 100 * prefix.len() as u64);
        put(c, bucket, &key, body.clone()).await;
        objects.push((key, body));
    }
    objects
}

/// Kills (kill -9) the first storage node of `site`: its id, its pid.
fn kill_node(cluster: &DevCluster, site: &str) -> (u64, i32) {
    let (id, pid) = site_nodes(cluster, site)[0];
    assert_process(pid, "node");
    assert_eq!(signal(pid, 9), 0, "kill -9 {pid}");
    (id, pid)
}

/// Kills (kill -9) every other process of `site` (the rest of its nodes and
/// its catalog replica): the ids of all the site's nodes, now all dead.
fn kill_rest_of_site(cluster: &DevCluster, site: &str, already: i32) -> Vec<u64> {
    for p in cluster.site_procs(site) {
        if p.pid != already {
            assert_eq!(signal(p.pid, 9), 0, "kill -9 {}", p.pid);
        }
    }
    site_nodes(cluster, site).into_iter().map(|(id, _)| id).collect()
}

/// 3 sites × 3 nodes (9 nodes for 4+2): a dead node, then a dead site, leave
/// at least k+m reachable nodes, so no object may have two shards on one node.
/// One node down: its shards go to the spare node of its own site (2 shards
/// per site, as with every node up). A whole site down: 6 distinct nodes, 3
/// in each surviving site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_k_plus_m_nodes_reachable_no_node_holds_two_shards_of_an_object() {
    let cluster = DevCluster::start_with(&["--nodes-per-site", "3"]);
    assert_eq!(cluster.nodes().len(), 9, "3 sites × 3 nodes");
    // One node down: 8 reachable; then its whole site: 6, exactly k+m.
    lose_a_node_then_its_site(&cluster, 1, "3 nodes per site").await;
}

/// 3 sites × 2 nodes (the default: exactly k+m = 6 nodes). A dead node
/// leaves 5, a dead site 4: writes go on with two shards on some nodes, but
/// never more than ⌈6/reachable⌉ = 2 on one node, and spread over the sites
/// as evenly as the nodes allow (2 per site with one node down, 3 per
/// surviving site with a site down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fewer_than_k_plus_m_nodes_writes_double_up_evenly() {
    let cluster = DevCluster::start();
    assert_eq!(cluster.nodes().len(), 6, "3 sites × 2 nodes");
    lose_a_node_then_its_site(&cluster, 2, "2 nodes per site").await;
}

/// Kills one node of the first site, writes 20 objects and checks where
/// their shards went (2 per site, the node's shard on its own site, at most
/// `max_per_node` shards of an object on one node); then kills the rest of
/// that site and checks 20 more (3 per surviving site); then reads all back.
async fn lose_a_node_then_its_site(cluster: &DevCluster, max_per_node: usize, layout: &str) {
    let c = cluster.client();
    c.create_bucket().bucket("subs").send().await.unwrap();
    let sites = cluster.sites();
    assert_eq!(sites.len(), 3);
    let lost = sites[0].clone();

    let (first_id, first_pid) = kill_node(cluster, &lost);
    let first_dir = format!("node-{first_id}");
    wait_for_writes(cluster, &c, "subs", &[first_id]).await;
    let two_each: BTreeMap<String, usize> = sites.iter().map(|s| (s.clone(), 2)).collect();
    let what = format!("one node down, {layout}");
    let mut objects = place_and_check(cluster, &c, "one-node-down", &[first_id], |placed| {
        check_placement(placed, 20, max_per_node, &two_each, std::slice::from_ref(&first_dir), &what)
    })
    .await;

    let dead = kill_rest_of_site(cluster, &lost, first_pid);
    wait_for_writes(cluster, &c, "subs", &dead).await;
    let dead_dirs: Vec<String> = dead.iter().map(|id| format!("node-{id}")).collect();
    let three_each: BTreeMap<String, usize> = sites[1..].iter().map(|s| (s.clone(), 3)).collect();
    let what = format!("a site down, {layout}");
    objects.extend(
        place_and_check(cluster, &c, "site-down", &dead, |placed| {
            check_placement(placed, 20, max_per_node, &three_each, &dead_dirs, &what)
        })
        .await,
    );

    for (key, body) in &objects {
        assert_same(&get(&c, "subs", key, None).await, body, &format!("{key} with {lost} down"));
    }
}

/// A process the test started itself; killed when dropped.
/// Adds a storage node to `site` (`sillok admin node add`, then `rebalance
/// apply`) and starts it.
fn add_node(cluster: &DevCluster, site: &str) -> (u64, ChildGuard) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    cluster.admin_ok(&["node", "add", "--site", site, "--addr", &addr]);
    let out = cluster.admin_ok(&["rebalance", "apply"]);
    // "added node n7"
    let id: u64 = out
        .split_once("added node n")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|id| id.trim().parse().ok())
        .unwrap_or_else(|| panic!("no node id in {out:?}"));
    (id, cluster.start_added_node(site, id, &addr, &["--rebuild-every-ms=1000", "--sync-every-ms=1000"]))
}

/// An uneven topology: sites of 2, 2 and 3 nodes (a seventh node added to
/// the third site). One node of each 2-node site is marked down (`sillok
/// admin node down`: writers avoid it), leaving 5 usable nodes for 6 shards:
/// two shards must share a node. The only choice that keeps the site rule
/// (at most m = 2 shards of an object per site, so it survives the loss of
/// any one site) doubles up on the other node of each of those two sites. A
/// substitute on the third site's spare node gives that site 3 shards: such
/// a PUT cannot be acknowledged (without that site 3 < k shards remain), so
/// every sharded PUT failed with 503 for as long as the two nodes were down.
///
/// The nodes are marked down rather than killed: with both killed, the PGs
/// whose manifest replicas (one per site) include both lose their manifest
/// majority, and those PUTs fail whatever the shards do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_uneven_site_doubled_shards_keep_the_site_rule() {
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("subs").send().await.unwrap();
    let sites = cluster.sites();
    assert_eq!(cluster.nodes().len(), 6, "3 sites × 2 nodes");
    let (added, _node) = add_node(&cluster, &sites[2]);
    let added_dir = format!("node-{added}");
    // The gateway follows the new map and the new node takes shards.
    let mut i = 0;
    wait_until(
        Duration::from_secs(60),
        lazily(|| format!("a shard on the added {added_dir}; the gateway log:\n{}", cluster.gateway_log())),
        async || {
            i += 1;
            let key = format!("warm-up-{i}");
            let ok = c.put_object().bucket("subs").key(&key).body(pattern(200 << 10, i).into()).send().await.is_ok();
            ok && shards_on_disk(&cluster).values().flatten().any(|s| s.node == added_dir)
        },
    )
    .await;

    let (a, b) = (site_nodes(&cluster, &sites[0])[0].0, site_nodes(&cluster, &sites[1])[0].0);
    let down = [format!("node-{a}"), format!("node-{b}")];
    for id in [a, b] {
        cluster.admin_ok(&["node", "down", &format!("n{id}")]);
    }
    // Every PG has a slot on both (their sites have 2 nodes): once a new
    // object has no shard on either, the gateway writes on the new map.
    let mut i = 0;
    let last_error = std::sync::Mutex::new(String::new());
    wait_until(
        Duration::from_secs(60),
        lazily(|| format!("a PUT that avoids {down:?}; the last failure: {}", last_error.lock().unwrap())),
        async || {
            i += 1;
            let before = shards_on_disk(&cluster);
            let key = format!("probe-{i}");
            if let Err(e) = c.put_object().bucket("subs").key(&key).body(pattern(200 << 10, 50 + i).into()).send().await
            {
                *last_error.lock().unwrap() = aws_sdk_s3::error::DisplayErrorContext(&e).to_string();
                return false;
            }
            let placed = new_objects(&cluster, &before);
            !placed.is_empty() && placed.values().flatten().all(|s| !down.contains(&s.node))
        },
    )
    .await;
    let two_each: BTreeMap<String, usize> = sites.iter().map(|s| (s.clone(), 2)).collect();
    let objects = place_and_check(&cluster, &c, "two-nodes-down", &[a, b], |placed| {
        check_placement(placed, 20, 2, &two_each, &down, "a node down in each 2-node site")
    })
    .await;
    for (key, body) in &objects {
        assert_same(&get(&c, "subs", key, None).await, body, &format!("{key} with two nodes down"));
    }
}
