//! The replicated catalog with real processes: `sillok placement` replicas
//! (three, one per site) killed with SIGKILL, frozen with SIGSTOP, restarted,
//! left behind; and `sillok dev` with S3 traffic while the leader's replica
//! dies. The only timing promise checked is the issue's: after the leader is
//! killed, a new leader commits a change within 5 s.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command as Proc};
use std::time::{Duration, Instant};

use sillok_catalog::api::Status;
use sillok_catalog::state::{Bucket, Command, STANDARD};
use sillok_catalog::{CatalogClient, ClientTimeouts};
use sillok_placement::{NodeId, NodeState};
use sillok_rpc::auth::Signer;

use crate::support::*;

const SIGKILL: i32 = 9;
const SIGCONT: i32 = 18;
const SIGSTOP: i32 = 19;

/// Three `sillok placement` processes made from a `sillok init` cluster file.
struct Replicas {
    dir: tempfile::TempDir,
    cluster: PathBuf,
    addrs: Vec<String>,
    secret: String,
    admin: (String, String),
    extra: Vec<String>,
    procs: BTreeMap<u64, Child>,
}

impl Replicas {
    /// `extra`: more `sillok placement` flags for every replica.
    fn start(extra: &[&str]) -> Self {
        let dir = tempfile::Builder::new().prefix("sillok-catalog-").tempdir().unwrap();
        let mut nodes = Vec::new();
        for (i, site) in ["site-a", "site-b", "site-c"].iter().enumerate() {
            for j in 0..2 {
                let id = i * 2 + j + 1;
                nodes.push(serde_json::json!({"id": id, "site": site, "addr": format!("127.0.0.1:{}", free_port()), "weight": 1.0}));
            }
        }
        let topo = serde_json::json!({"sites": [{"id": "site-a"}, {"id": "site-b"}, {"id": "site-c"}], "nodes": nodes});
        std::fs::write(dir.path().join("topology.json"), topo.to_string()).unwrap();
        let addrs: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let cluster = dir.path().join("cluster.json");
        let out = Proc::new(env!("CARGO_BIN_EXE_sillok"))
            .args(["init", "--pgs", "128", "--topology"])
            .arg(dir.path().join("topology.json"))
            .arg("--out")
            .arg(&cluster)
            .args(["--replica", &format!("site-a={}", addrs[0])])
            .args(["--replica", &format!("site-b={}", addrs[1])])
            .args(["--replica", &format!("site-c={}", addrs[2])])
            .output()
            .unwrap();
        assert!(out.status.success(), "sillok init: {}", String::from_utf8_lossy(&out.stderr));
        let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cluster).unwrap()).unwrap();
        let admin = (
            file["admin_key"]["access_key_id"].as_str().unwrap().to_string(),
            file["admin_key"]["secret_access_key"].as_str().unwrap().to_string(),
        );
        let mut r = Replicas {
            secret: file["cluster_secret"].as_str().unwrap().to_string(),
            dir,
            cluster,
            addrs,
            admin,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            procs: BTreeMap::new(),
        };
        for id in 1..=3 {
            r.spawn(id);
        }
        r
    }

    fn spawn(&mut self, id: u64) {
        self.spawn_with(id, &[]);
    }

    /// A replica that is not in the cluster file: it waits to be added.
    fn spawn_new(&mut self, id: u64, site: &str) -> String {
        let addr = format!("127.0.0.1:{}", free_port());
        issue_cert(self.dir.path(), "catalog", &format!("catalog-{id}"));
        self.spawn_with(id, &["--site", site, "--listen", &addr]);
        addr
    }

    fn spawn_with(&mut self, id: u64, more: &[&str]) {
        let mut args: Vec<std::ffi::OsString> = vec![
            "catalog".into(),
            "--cluster".into(),
            self.cluster.clone().into(),
            "--id".into(),
            id.to_string().into(),
            "--data".into(),
            self.dir.path().join(format!("replica-{id}")).into(),
        ];
        for a in ["--election-min-ms", "300", "--election-max-ms", "600", "--heartbeat-ms", "50"] {
            args.push(a.into());
        }
        args.extend(self.extra.iter().map(Into::into));
        args.extend(more.iter().map(Into::into));
        let child = spawn_sillok(&args, &self.dir.path().join(format!("replica-{id}.log")));
        self.procs.insert(id, child);
    }

    fn pid(&self, id: u64) -> i32 {
        self.procs[&id].id() as i32
    }

    fn kill9(&mut self, id: u64) {
        let mut c = self.procs.remove(&id).expect("running");
        let _ = c.kill();
        let _ = c.wait();
    }

    fn addr(&self, id: u64) -> String {
        self.addrs[(id - 1) as usize].clone()
    }

    fn client(&self) -> CatalogClient {
        let t =
            ClientTimeouts { total: Duration::from_secs(20), attempt: Duration::from_secs(2), ..Default::default() };
        CatalogClient::with_tls(self.addrs.clone(), Signer::new(&self.secret), t, Some(&self.tls("catalog-1"))).unwrap()
    }

    /// Runs `sillok admin ARGS` with the admin key in the environment.
    fn admin(&self, args: &[&str]) -> std::process::Output {
        Proc::new(env!("CARGO_BIN_EXE_sillok"))
            .arg("admin")
            .args(args)
            .env("SILLOK_CATALOG", self.addrs.join(","))
            .env("SILLOK_INTERNAL_TLS", self.dir.path().join("tls").join("admin"))
            .env("SILLOK_ADMIN_KEY_ID", &self.admin.0)
            .env("SILLOK_ADMIN_SECRET", &self.admin.1)
            .output()
            .unwrap()
    }

    /// The internal identity `tls/<name>` that `sillok init` wrote.
    fn tls(&self, name: &str) -> sillok_rpc::tls::InternalTls {
        sillok_rpc::tls::InternalTls::load(&self.dir.path().join("tls").join(name)).unwrap()
    }

    fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("replica-{id}.log"))).unwrap_or_default()
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for c in self.procs.values_mut() {
            signal(c.id() as i32, SIGCONT);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn bucket(name: &str) -> Command {
    Command::CreateBucket {
        bucket: Bucket {
            name: name.into(),
            owner: "test".into(),
            created_at: 1,
            storage_class: STANDARD.into(),
            cors: None,
            versioning: Default::default(),
            lifecycle: None,
        },
    }
}

/// Waits until the catalog is seeded and has a leader; returns that status.
async fn wait_leader(c: &CatalogClient, not: Option<u64>) -> Status {
    wait_until(Duration::from_secs(30), format!("a seeded leader (other than {not:?})"), async || {
        c.status().await.ok().filter(|s| s.bootstrapped && s.leader.is_some() && s.leader != not)
    })
    .await
}

/// Waits until the given replicas report the same applied index (≥ `min`) and
/// the same catalog digest; returns the digest.
async fn converged(r: &Replicas, ids: &[u64], min: u64) -> String {
    let c = r.client();
    wait_until(
        Duration::from_secs(30),
        format!("replicas {ids:?} to converge at index >= {min} (seen: (applied index, digest, term))"),
        async || {
            let mut seen = Vec::new();
            for id in ids {
                if let Ok(s) = c.status_of(&r.addr(*id)).await {
                    seen.push((s.applied_index, s.catalog_digest, s.term));
                }
            }
            if seen.len() == ids.len()
                && seen[0].0 >= min
                && seen.windows(2).all(|w| w[0].0 == w[1].0 && w[0].1 == w[1].1)
            {
                Ok(seen[0].1.clone())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_of_the_leader_elects_another_and_it_steps_down_on_resume() {
    let r = Replicas::start(&[]);
    let c = r.client();
    let old = wait_leader(&c, None).await.leader.unwrap();
    c.propose(bucket("before-stop")).await.unwrap();
    assert_eq!(signal(r.pid(old), SIGSTOP), 0);
    let s = wait_leader(&c, Some(old)).await;
    let new = s.leader.unwrap();
    assert_ne!(new, old);
    let mut last = 0;
    for i in 0..10 {
        last = c.propose(bucket(&format!("while-stopped-{i}"))).await.unwrap().log_index;
    }
    assert_eq!(signal(r.pid(old), SIGCONT), 0);
    // The old leader learns of the newer term, steps down and takes the
    // leader's history: same applied index and same catalog digest everywhere.
    converged(&r, &[1, 2, 3], last).await;
    let st = c.status_of(&r.addr(old)).await.unwrap();
    assert_eq!(st.role, "follower", "the resumed replica steps down");
    assert_eq!(st.leader, Some(new));
    let view = c.catalog(true).await.unwrap();
    assert_eq!(view.buckets.len(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_every_replica_brings_the_whole_catalog_back_from_disk() {
    let mut r = Replicas::start(&[]);
    let c = r.client();
    wait_leader(&c, None).await;
    for i in 0..5 {
        c.propose(bucket(&format!("keep-{i}"))).await.unwrap();
    }
    c.propose(Command::node_state(NodeId(2), NodeState::Down)).await.unwrap();
    c.propose(Command::SetNodeWeight { id: NodeId(3), weight: 2.0 }).await.unwrap();
    // A staged change is kept on disk too (it was not, before: staged
    // changes vanished when every replica restarted).
    let stage = Command::Stage { change: Box::new(Command::SetNodeWeight { id: NodeId(4), weight: 3.0 }) };
    let last = c.propose(stage).await.unwrap().log_index;
    let before = converged(&r, &[1, 2, 3], last).await;
    let view_before = c.catalog(true).await.unwrap();
    for id in 1..=3 {
        r.kill9(id);
    }
    for id in 1..=3 {
        r.spawn(id);
    }
    wait_leader(&c, None).await;
    let after = converged(&r, &[1, 2, 3], last).await;
    assert_eq!(before, after, "same catalog digest after a restart of every replica");
    let view = c.catalog(true).await.unwrap();
    assert_eq!(view.epoch, view_before.epoch);
    assert_eq!(view.map, view_before.map);
    assert_eq!(view.buckets, view_before.buckets);
    assert_eq!(view.staged.len(), 1);
    assert_eq!(view.staged, view_before.staged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_down_through_100_map_changes_catches_up() {
    // Small snapshot interval: the replica that was away needs a snapshot.
    let mut r = Replicas::start(&["--snapshot-every", "40", "--keep-logs", "10"]);
    let c = r.client();
    let leader = wait_leader(&c, None).await.leader.unwrap();
    let away = (1..=3).find(|id| *id != leader).unwrap();
    r.kill9(away);
    let mut last = 0;
    for i in 0..100 {
        let state = if i % 2 == 0 { NodeState::Down } else { NodeState::Up };
        last = c.propose(Command::node_state(NodeId(1 + (i % 6)), state)).await.unwrap().log_index;
    }
    let epoch = c.status().await.unwrap().epoch;
    assert_eq!(epoch, 101);
    r.spawn(away);
    converged(&r, &[1, 2, 3], last).await;
    let s = c.status_of(&r.addr(away)).await.unwrap();
    assert_eq!(s.epoch, 101, "the replica that was away has the newest map");
    assert!(r.log(away).contains("snapshot installed"), "it caught up through a snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leaders_replica_a_new_leader_commits_within_5s_and_s3_keeps_working() {
    let cluster = DevCluster::start();
    let e = &cluster.env;
    let signer = Signer::with_key(&e["SILLOK_ADMIN_KEY_ID"], &e["SILLOK_ADMIN_SECRET"]);
    let addrs: Vec<String> = e["SILLOK_CATALOG"].split(',').map(str::to_string).collect();
    let t = ClientTimeouts { total: Duration::from_secs(20), attempt: Duration::from_secs(2), ..Default::default() };
    let admin = CatalogClient::with_tls(addrs, signer, t, Some(&cluster.internal_tls("admin"))).unwrap();
    let s = wait_leader(&admin, None).await;
    let leader_site = s.leader_site.clone().unwrap();
    admin.propose(bucket("before")).await.unwrap();

    let s3 = cluster.client();
    s3.create_bucket().bucket("media").send().await.unwrap();
    put(&s3, "media", "warm", pattern(1000, 1)).await;

    let pid = cluster.replica_pid(&leader_site);
    let killed = Instant::now();
    assert_eq!(signal(pid, SIGKILL), 0);
    // S3 traffic while the catalog elects.
    let traffic = tokio::spawn(async move {
        for i in 0..20u64 {
            let body = pattern(20_000, i + 10);
            put(&s3, "media", &format!("during-{i}"), body.clone()).await;
            assert_same(&get(&s3, "media", &format!("during-{i}"), None).await, &body, "during failover");
        }
    });
    admin.propose(bucket("after")).await.unwrap();
    let failover = killed.elapsed();
    assert!(failover < Duration::from_secs(5), "no committed change {failover:?} after the leader was killed");
    let s = wait_leader(&admin, None).await;
    assert_ne!(s.leader_site.as_deref(), Some(leader_site.as_str()));
    traffic.await.unwrap();
    eprintln!("failover: {} ms", failover.as_millis());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_speaks_tables_and_json_refuses_clearly_and_never_prints_old_secrets() {
    let mut r = Replicas::start(&[]);
    let c = r.client();
    wait_leader(&c, None).await;
    // Wait until every replica knows the admin key (it arrives with the seed).
    converged(&r, &[1, 2, 3], 2).await;
    let ok = |o: &std::process::Output| {
        assert!(o.status.success(), "admin failed: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let table = ok(&r.admin(&["status"]));
    assert!(table.contains("leader:") && table.contains("NODE") && table.contains("site-b"), "{table}");
    let json: serde_json::Value = serde_json::from_str(&ok(&r.admin(&["status", "--json"]))).unwrap();
    let leader_site = json["leader_site"].as_str().unwrap().to_string();
    assert!(leader_site.starts_with("site-"));
    assert_eq!(json["epoch"], 1);

    ok(&r.admin(&["bucket", "create", "photos"]));
    assert!(ok(&r.admin(&["bucket", "list"])).contains("photos"));
    let created: serde_json::Value = serde_json::from_str(&ok(&r.admin(&["key", "create", "--json"]))).unwrap();
    let secret = created["secret_access_key"].as_str().unwrap().to_string();
    let keys = ok(&r.admin(&["key", "list", "--json"]));
    assert!(keys.contains(created["access_key_id"].as_str().unwrap()));
    assert!(!keys.contains(&secret) && !keys.contains(&r.admin.1), "key list shows a secret");
    let status = ok(&r.admin(&["status", "--json"]));
    assert!(!status.contains(&secret) && !status.contains(&r.admin.1), "status shows a secret");
    // A consistent read sent to a follower is forwarded to the leader, which
    // answers the follower (an internal caller): the admin still gets no secrets.
    let st: serde_json::Value = serde_json::from_str(&status).unwrap();
    let leader = st["leader"].as_u64().unwrap();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let t = ClientTimeouts { total: Duration::from_secs(10), ..Default::default() };
    let via_follower = CatalogClient::with_tls(
        vec![r.addr(follower)],
        Signer::with_key(&r.admin.0, &r.admin.1),
        t,
        Some(&r.tls("admin")),
    )
    .unwrap();
    let view = via_follower.catalog(true).await.unwrap();
    assert!(view.key_secrets.is_empty(), "an admin key was given key secrets");
    assert!(view.keys.len() >= 3);

    // A change that breaks the EC site rule: refused, clear, nothing changed.
    let out = r.admin(&["site", "out", "site-a"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused, nothing changed"), "{err}");
    ok(&r.admin(&["node", "down", "n2"]));
    let json: serde_json::Value = serde_json::from_str(&ok(&r.admin(&["status", "--json"]))).unwrap();
    assert_eq!(json["epoch"], 2);

    // With the leader's site gone, admin still works from the others.
    let leader = json["leader"].as_u64().unwrap();
    r.kill9(leader);
    ok(&r.admin(&["bucket", "create", "after-loss"]));
    let json: serde_json::Value = serde_json::from_str(&ok(&r.admin(&["status", "--json"]))).unwrap();
    assert_ne!(json["leader_site"].as_str().unwrap(), leader_site);
    // Secrets never reach the replicas' logs.
    for id in 1..=3 {
        let log = r.log(id);
        assert!(!log.contains(&secret) && !log.contains(&r.admin.1), "replica {id} logged a secret");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_join_and_leave_through_membership_changes_and_five_survive_two_losses() {
    let mut r = Replicas::start(&[]);
    let c = r.client();
    wait_leader(&c, None).await;
    let a4 = r.spawn_new(4, "site-a");
    let a5 = r.spawn_new(5, "site-b");
    for (id, addr, site) in [(4, &a4, "site-a"), (5, &a5, "site-b")] {
        let out = r.admin(&["replica", "add", "--id", &id.to_string(), "--addr", addr, "--site", site]);
        assert!(out.status.success(), "replica add {id}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let s = c.status().await.unwrap();
    assert_eq!(s.replicas.iter().filter(|x| x.voter).count(), 5, "{:?}", s.replicas);
    let last = c.propose(bucket("five")).await.unwrap().log_index;
    let c5 = CatalogClient::with_tls(
        vec![r.addr(1), r.addr(2), r.addr(3), a4.clone(), a5.clone()],
        Signer::new(&r.secret),
        ClientTimeouts { total: Duration::from_secs(20), attempt: Duration::from_secs(2), ..Default::default() },
        Some(&r.tls("catalog-1")),
    )
    .unwrap();
    // The newcomers caught up.
    for addr in [&a4, &a5] {
        wait_until(Duration::from_secs(20), format!("{addr} to catch up to index {last}"), async || {
            c5.status_of(addr).await.map(|s| s.applied_index).unwrap_or(0) >= last
        })
        .await;
    }
    // Two of five lost, the leader among them: the other three go on.
    let leader = c5.status().await.unwrap().leader.unwrap();
    let other = [1, 2, 3, 4, 5].into_iter().find(|x| *x != leader).unwrap();
    r.kill9(leader);
    r.kill9(other);
    c5.propose(bucket("after-two-losses")).await.unwrap();
    // A lost replica leaves the membership.
    let m = c5.remove_replica(leader).await.unwrap();
    assert_eq!(m.voters.len(), 4);
    assert!(!m.voters.contains(&leader));
    assert_eq!(c5.catalog(true).await.unwrap().buckets.len(), 2);
}
