//! A gateway's catalog misses against a real catalog replica (one, in this
//! process, on loopback): a miss costs the gateway a read index and the
//! changes it lacked, not the whole catalog, and still finds a bucket made
//! elsewhere just before; concurrent misses for one name share one read
//! index; a name found missing is remembered (the negative cache), but the
//! gateway's index is always looked at first.

use crate::{ports, wait_seeded};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sillok_catalog::follower::FollowOptions;
use sillok_catalog::server::{Replica, ReplicaConfig};
use sillok_catalog::state::{Bucket, Command, KeyRecord, Permission, STANDARD};
use sillok_catalog::{CatalogClient, ClientTimeouts, ReplicaNode};
use sillok_gateway::catalog::GatewayCatalog;
use sillok_rpc::auth::Signer;

const SECRET: &str = "test-cluster-secret-0123456789";
/// Keys in the seeded catalog: they make its whole view large (~0.8 MB).
const KEYS: usize = 5_000;

fn key(id: &str) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        secret: format!("secret-of-{id}-0123456789abcdefghijklmnopqrstuvwxyz"),
        permissions: [Permission::Read, Permission::Write].into_iter().collect(),
        enabled: true,
        created_at: 1,
    }
}

fn seed() -> Command {
    let map = crate::six_node_map();
    let keys = (0..KEYS).map(|i| key(&format!("KEY{i:06}"))).collect();
    Command::Bootstrap { region: "test".into(), map, keys }
}

fn bucket(name: &str) -> Command {
    Command::CreateBucket {
        bucket: Bucket {
            name: name.into(),
            owner: "KEY000000".into(),
            created_at: 7,
            storage_class: STANDARD.into(),
            cors: None,
            lifecycle: None,
            versioning: Default::default(),
        },
    }
}

/// One seeded replica, running until the test ends.
struct One {
    dir: tempfile::TempDir,
    addr: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl One {
    async fn start() -> One {
        let dir = tempfile::tempdir().unwrap();
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], ports::reserve().unwrap()));
        let mut c = ReplicaConfig::new(1, "site-a", listen, dir.path().join("r1"), SECRET);
        c.initial_members = BTreeMap::from([(1, ReplicaNode { addr: listen.to_string(), site: "site-a".into() })]);
        c.seed = Some(seed());
        // Nothing but the test's changes: no node is ever marked down.
        c.detector.down_after = Duration::from_secs(86_400);
        c.detector.out_after = Duration::from_secs(86_400);
        c.detector.site_out_after = Duration::from_secs(86_400);
        let replica = Replica::open(c).await.expect("replica starts");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = replica
                .run(async move {
                    let _ = rx.await;
                })
                .await;
        });
        let one = One { dir, addr: listen.to_string(), _stop: tx };
        wait_seeded(&one.client()).await;
        one
    }

    fn client(&self) -> CatalogClient {
        let t = ClientTimeouts { total: Duration::from_secs(20), ..Default::default() };
        CatalogClient::new(vec![self.addr.clone()], Signer::new(SECRET), t).unwrap()
    }

    /// A gateway's catalog whose follower moves only when poked (a pause of
    /// an hour between polls): what a miss needs, it has to fetch itself.
    async fn gateway(&self) -> Arc<GatewayCatalog> {
        let options = FollowOptions { pause: Duration::from_secs(3600), ..Default::default() };
        let state = self.dir.path().join("gateway");
        std::fs::create_dir_all(&state).unwrap();
        let g = GatewayCatalog::start(Arc::new(self.client()), state, options, Duration::from_secs(20)).await.unwrap();
        // Remembered as missing for the whole test: no answer depends on time.
        g.set_negative_ttl(Duration::from_secs(3600));
        g
    }
}

/// What the gateway received from the catalog so far: followed changes and
/// views, and fresh reads.
fn received(g: &GatewayCatalog) -> u64 {
    let f = g.follow_figures();
    f.bytes.load(Ordering::Relaxed) + f.fresh_read_bytes.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_costs_a_read_index_not_the_catalog_and_finds_a_bucket_made_just_before() {
    let one = One::start().await;
    let g = one.gateway().await;
    let whole = serde_json::to_vec(&one.client().catalog(true).await.unwrap()).unwrap().len() as u64;
    assert!(whole > 500_000, "the catalog is too small to tell: {whole} bytes");

    // Another client makes a bucket; this gateway's follower is paused.
    one.client().propose(bucket("made-elsewhere")).await.unwrap();
    let before = received(&g);
    let found = g.bucket("made-elsewhere").await.unwrap().expect("a bucket made just before is found");
    assert_eq!(found.name, "made-elsewhere");
    assert!(g.bucket("never-made").await.unwrap().is_none());
    let listed = g.list_buckets().await;
    assert_eq!(listed.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(), ["made-elsewhere"]);
    // An unknown key id is a miss too.
    assert!(g.key("NOSUCHKEY").await.unwrap().is_none());
    let cost = received(&g) - before;
    let f = g.follow_figures();
    assert_eq!(f.fresh_whole_reads.load(Ordering::Relaxed), 0, "a whole view was read for a miss");
    assert_eq!(f.read_index_calls.load(Ordering::Relaxed), 4, "one read index per miss and listing");
    // The bucket's change and four read indexes: nothing like the catalog.
    assert!(cost < 4_096, "three misses and a listing cost {cost} bytes (the whole catalog is {whole})");

    // Known missing: asked again, no read index.
    assert!(g.bucket("never-made").await.unwrap().is_none());
    assert_eq!(f.read_index_calls.load(Ordering::Relaxed), 4);
    // Made elsewhere now: found once the follower has it (here: brought
    // along with this gateway's own write below), though still in the
    // negative cache: the index is looked at first.
    one.client().propose(bucket("never-made")).await.unwrap();
    // A bucket made through this gateway leaves the negative cache.
    assert!(g.bucket("mine").await.unwrap().is_none());
    let names = g.negative_names();
    g.create_bucket("mine", "KEY000000").await.unwrap();
    assert_eq!(g.negative_names(), names - 1);
    assert!(g.bucket("mine").await.unwrap().is_some());
    assert!(g.bucket("never-made").await.unwrap().is_some());
    assert_eq!(f.fresh_whole_reads.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_for_one_name_share_one_read_index() {
    let one = One::start().await;
    let g = one.gateway().await;
    let misses: Vec<_> = (0..64)
        .map(|_| {
            let g = g.clone();
            tokio::spawn(async move { g.bucket("bogus").await })
        })
        .collect();
    for m in misses {
        assert!(m.await.unwrap().unwrap().is_none());
    }
    let f = g.follow_figures();
    assert_eq!(f.read_index_calls.load(Ordering::Relaxed), 1, "64 concurrent misses for one name");
    assert_eq!(f.fresh_whole_reads.load(Ordering::Relaxed), 0);
    // Later: still known missing, no read.
    assert!(g.bucket("bogus").await.unwrap().is_none());
    assert_eq!(f.read_index_calls.load(Ordering::Relaxed), 1);
    assert!(f.negative_hits.load(Ordering::Relaxed) >= 1);
    // Another name is asked for.
    assert!(g.bucket("bogus-2").await.unwrap().is_none());
    assert_eq!(f.read_index_calls.load(Ordering::Relaxed), 2);
}
