//! Catalog replicas in one process on loopback: election, seeding, writes
//! through any replica, refusals, restart from disk, and catch-up by
//! snapshot of a replica that missed compacted entries. (Process-level
//! failure tests, kill -9 and SIGSTOP, are in the workspace's tests/e2e/catalog.rs.)

use crate::{ports, wait_seeded};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use sillok_catalog::changes::Changes;
use sillok_catalog::server::{RaftTimings, Replica, ReplicaConfig};
use sillok_catalog::state::{Bucket, Command, KeyRecord, Permission, STANDARD};
use sillok_catalog::{CatalogClient, ClientError, ClientTimeouts, Outcome, ReplicaNode};
use sillok_placement::{NodeId, NodeState};
use sillok_rpc::auth::Signer;

const SECRET: &str = "test-cluster-secret-0123456789";

fn free_addr() -> SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], ports::reserve().unwrap()))
}

fn seed() -> Command {
    let map = crate::six_node_map();
    let admin = KeyRecord {
        id: "ADMINKEY".into(),
        secret: "admin-secret-0123456789".into(),
        permissions: [Permission::Admin].into_iter().collect(),
        enabled: true,
        created_at: 1,
    };
    Command::Bootstrap { region: "test".into(), map, keys: vec![admin] }
}

struct Cluster {
    dir: tempfile::TempDir,
    addrs: Vec<SocketAddr>,
    running: BTreeMap<u64, (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    timings: RaftTimings,
}

impl Cluster {
    fn new(timings: RaftTimings) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Cluster { dir, addrs: (0..3).map(|_| free_addr()).collect(), running: BTreeMap::new(), timings }
    }

    fn members(&self) -> BTreeMap<u64, ReplicaNode> {
        (0..3)
            .map(|i| {
                let site = ["site-a", "site-b", "site-c"][i];
                (i as u64 + 1, ReplicaNode { addr: self.addrs[i].to_string(), site: site.into() })
            })
            .collect()
    }

    async fn start(&mut self, id: u64) {
        let i = (id - 1) as usize;
        let site = ["site-a", "site-b", "site-c"][i];
        let mut c = ReplicaConfig::new(id, site, self.addrs[i], self.dir.path().join(format!("r{id}")), SECRET);
        c.initial_members = self.members();
        c.seed = Some(seed());
        c.timings = self.timings;
        let replica = Replica::open(c).await.expect("replica starts");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            replica
                .run(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        self.running.insert(id, (tx, task));
    }

    async fn stop(&mut self, id: u64) {
        let (tx, task) = self.running.remove(&id).expect("running");
        let _ = tx.send(());
        task.await.unwrap();
    }

    fn client(&self) -> CatalogClient {
        let t = ClientTimeouts { total: Duration::from_secs(20), ..Default::default() };
        CatalogClient::new(self.addrs.iter().map(|a| a.to_string()).collect(), Signer::new(SECRET), t).unwrap()
    }

    fn admin_client(&self) -> CatalogClient {
        let t = ClientTimeouts { total: Duration::from_secs(20), ..Default::default() };
        let signer = Signer::with_key("ADMINKEY", "admin-secret-0123456789");
        CatalogClient::new(self.addrs.iter().map(|a| a.to_string()).collect(), signer, t).unwrap()
    }

    /// Waits until every running replica reports the same digest at `index` or later.
    async fn converged(&self, min_index: u64) -> String {
        let c = self.client();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut digests = Vec::new();
            for id in self.running.keys() {
                let addr = self.addrs[(*id - 1) as usize].to_string();
                if let Ok(s) = c.status_of(&addr).await
                    && s.applied_index >= min_index
                {
                    digests.push((s.applied_index, s.catalog_digest));
                }
            }
            if digests.len() == self.running.len() && digests.windows(2).all(|w| w[0] == w[1]) {
                return digests[0].1.clone();
            }
            assert!(Instant::now() < deadline, "replicas did not converge: {digests:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn bucket(name: &str) -> Command {
    Command::CreateBucket {
        bucket: Bucket {
            name: name.into(),
            owner: "ADMINKEY".into(),
            created_at: 7,
            storage_class: STANDARD.into(),
            cors: None,
            lifecycle: None,
            versioning: Default::default(),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_elect_seed_replicate_and_restart_from_disk() {
    let mut cl = Cluster::new(RaftTimings { election_min_ms: 300, election_max_ms: 600, ..Default::default() });
    for id in 1..=3 {
        cl.start(id).await;
    }
    let c = cl.client();
    wait_seeded(&c).await;
    let s = c.status().await.unwrap();
    assert_eq!(s.epoch, 1);
    assert_eq!(s.nodes.len(), 6);
    assert!(s.leader_site.is_some());

    // Writes through the admin key, to whichever replica; retried ids apply once.
    let admin = cl.admin_client();
    let r = admin.propose(bucket("photos")).await.unwrap();
    assert!(matches!(r.outcome, Outcome::BucketCreated { .. }));
    let again = admin.propose_with_id("fixed-id".into(), bucket("videos")).await.unwrap();
    let same = admin.propose_with_id("fixed-id".into(), bucket("videos")).await.unwrap();
    assert_eq!(format!("{:?}", again.outcome), format!("{:?}", same.outcome), "a retried id returns its first reply");
    match admin.propose(bucket("photos")).await {
        Err(ClientError::Refused(e)) => assert!(e.to_string().contains("already exists"), "{e}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A map change that breaks the site rule is refused and changes nothing.
    match admin.propose(Command::site_state("site-a", NodeState::Out)).await {
        Err(ClientError::Refused(e)) => assert!(e.to_string().contains("nothing changed"), "{e}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let r = admin.propose(Command::node_state(NodeId(1), NodeState::Down)).await.unwrap();
    assert!(matches!(r.outcome, Outcome::Map { epoch: 2 }), "{:?}", r.outcome);

    // The long poll sees the new epoch.
    let m = c.map_newer_than(1, Duration::from_secs(1)).await.unwrap().expect("a newer map");
    assert_eq!(m.epoch, 2);
    assert!(c.map_newer_than(2, Duration::from_millis(200)).await.unwrap().is_none());

    // Consistent reads see every acknowledged write; admin views hide secrets.
    let view = admin.catalog(true).await.unwrap();
    let names: Vec<_> = view.buckets.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["photos", "videos"]);
    assert!(view.key_secrets.is_empty());
    assert!(!serde_json::to_string(&view).unwrap().contains("admin-secret"));
    let internal = c.catalog(true).await.unwrap();
    assert_eq!(internal.key_secrets.len(), 1);

    // An unknown key is refused before routing.
    let stranger = CatalogClient::new(
        cl.addrs.iter().map(|a| a.to_string()).collect(),
        Signer::with_key("NOBODY", "whatever-secret-123"),
        ClientTimeouts::default(),
    )
    .unwrap();
    assert!(matches!(stranger.status().await, Err(ClientError::Forbidden(_))));

    let before = cl.converged(r.log_index).await;
    for id in 1..=3 {
        cl.stop(id).await;
    }
    for id in 1..=3 {
        cl.start(id).await;
    }
    wait_seeded(&c).await;
    let after = cl.converged(r.log_index).await;
    assert_eq!(before, after, "the catalog came back from disk unchanged");
    let view = c.catalog(true).await.unwrap();
    assert_eq!(view.epoch, 2);
    assert_eq!(view.buckets.len(), 2);
    for id in 1..=3 {
        cl.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_missed_compacted_entries_catches_up_by_snapshot() {
    let mut cl = Cluster::new(RaftTimings {
        election_min_ms: 300,
        election_max_ms: 600,
        snapshot_every: 20,
        keep_logs: 5,
        ..Default::default()
    });
    for id in 1..=3 {
        cl.start(id).await;
    }
    let c = cl.client();
    wait_seeded(&c).await;
    // Stop a follower, then make enough changes that the log is compacted.
    let leader = c.status().await.unwrap().leader.unwrap();
    let away = (1..=3).find(|id| *id != leader).unwrap();
    cl.stop(away).await;
    let mut last = 0;
    for i in 0..60 {
        last = c.propose(bucket(&format!("b-{i:03}"))).await.unwrap().log_index;
    }
    cl.start(away).await;
    cl.converged(last).await;
    let s = c.status_of(&cl.addrs[(away - 1) as usize].to_string()).await.unwrap();
    assert_eq!(s.buckets, 60);
    for id in 1..=3 {
        cl.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_follower_follows_by_epoch_and_starts_from_disk_without_replicas() {
    use sillok_catalog::follower::{FollowOptions, MapFollower};
    let mut cl = Cluster::new(RaftTimings { election_min_ms: 300, election_max_ms: 600, ..Default::default() });
    for id in 1..=3 {
        cl.start(id).await;
    }
    let c = std::sync::Arc::new(cl.client());
    wait_seeded(&c).await;
    let path = cl.dir.path().join("map.redb");
    let f = MapFollower::start(c.clone(), path.clone(), None, FollowOptions::default()).unwrap();
    let mut rx = f.subscribe();
    let deadline = Instant::now() + Duration::from_secs(20);
    while f.epoch() < 1 {
        assert!(Instant::now() < deadline);
        let _ = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
    }
    assert_eq!(f.figures().wholes.load(Relaxed), 1, "a new follower takes the whole map once");
    // Bucket and key changes do not reach a map follower (no secret does).
    c.propose(bucket("quiet")).await.unwrap();
    c.propose(Command::node_state(NodeId(4), NodeState::Down)).await.unwrap();
    while f.epoch() < 2 {
        assert!(Instant::now() < deadline, "the follower did not see epoch 2");
        let _ = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
    }
    assert_eq!(f.figures().deltas.load(Relaxed), 1, "a map change after the first comes as a delta");
    assert_eq!(f.figures().wholes.load(Relaxed), 1);
    let Some(Changes::Changes { changes, .. }) = c.map_changes_since(0, Duration::ZERO).await.unwrap() else {
        panic!("a map-only follower is never told to take a snapshot")
    };
    assert!(changes.iter().all(|ch| ch.change.is_map()), "{changes:?}");
    let Some(Changes::Changes { changes, .. }) = c.map_changes_since(f.applied() - 1, Duration::ZERO).await.unwrap()
    else {
        panic!("the log reaches back one entry")
    };
    assert!(changes.iter().all(|ch| ch.change.is_map()), "{changes:?}");
    drop(f);
    for id in 1..=3 {
        cl.stop(id).await;
    }
    // No replica answers: a new follower starts from the saved map, and an
    // older map offered as the initial one does not take it back.
    let old = match seed() {
        Command::Bootstrap { map, .. } => map,
        _ => unreachable!(),
    };
    let f = MapFollower::start(c.clone(), path, Some(old), FollowOptions::default()).unwrap();
    assert_eq!(f.epoch(), 2);
    assert_eq!(f.current().unwrap().topology.node(NodeId(4)).unwrap().state, NodeState::Down);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_answers_the_leaders_read_index_in_the_followers_index_space() {
    let mut cl = Cluster::new(RaftTimings { election_min_ms: 300, election_max_ms: 600, ..Default::default() });
    for id in 1..=3 {
        cl.start(id).await;
    }
    let c = cl.client();
    wait_seeded(&c).await;
    let made = c.propose(bucket("read-index")).await.unwrap();
    let t = ClientTimeouts { total: Duration::from_secs(20), ..Default::default() };
    for addr in &cl.addrs {
        // One replica only: a follower forwards the call to the leader.
        let one = CatalogClient::new(vec![addr.to_string()], Signer::new(SECRET), t).unwrap();
        let ri = one.read_index().await.unwrap();
        assert_eq!(ri.leader, made.leader, "asked at {addr}");
        assert!(ri.index >= made.follower_index(), "{ri:?} is below the write's {}", made.follower_index());
        // The same space as the views (and the change log) followers see.
        let view = one.catalog(true).await.unwrap();
        assert!(view.applied_index >= ri.index && view.buckets.iter().any(|b| b.name == "read-index"));
    }
    // For Sillok processes only, like the change log.
    match cl.admin_client().read_index().await {
        Err(ClientError::Forbidden(_)) => {}
        other => panic!("an admin key got a read index: {other:?}"),
    }
}
