//! Rotating the cluster secret (`sillok secret stage|promote|finish`) on a
//! running cluster: after each step every process is restarted one at a
//! time, S3 reads and writes go on between restarts (so processes on both
//! sides of a step talk to each other), and at the end the old secret is
//! refused by the catalog.

use std::ffi::OsString;
use std::process::Command as Proc;
use std::time::Duration;

use sillok_catalog::{CatalogClient, ClientTimeouts};
use sillok_rpc::auth::Signer;

use crate::support::*;

/// One running process of the cluster: how to start it again, the address it
/// listens on, and (once this test restarted it) its child.
struct Proc_ {
    args: Vec<OsString>,
    listens: String,
    log: std::path::PathBuf,
    pid: i32,
    child: Option<ChildGuard>,
}

/// Runs `sillok secret STEP` on the cluster file: (succeeded, its output).
fn try_secret(cluster: &DevCluster, step: &str) -> (bool, String) {
    let out = Proc::new(env!("CARGO_BIN_EXE_sillok"))
        .args(["secret", step, "--cluster"])
        .arg(cluster.dir.path().join("cluster.json"))
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn secret(cluster: &DevCluster, step: &str) -> String {
    let (ok, text) = try_secret(cluster, step);
    assert!(ok, "sillok secret {step}: {text}");
    text
}

/// `kill -9` and start again, one process at a time, with an S3 write and
/// read of everything written so far after each restart.
async fn rolling_restart(cluster: &DevCluster, procs: &mut [Proc_], written: &mut Vec<(String, Vec<u8>)>, round: &str) {
    let s3 = cluster.client();
    for (i, p) in procs.iter_mut().enumerate() {
        assert_eq!(signal(p.pid, 9), 0, "kill -9 {}", p.pid);
        drop(p.child.take());
        wait_port_free(&p.listens);
        let child = spawn_sillok(&p.args, &p.log);
        p.pid = child.id() as i32;
        p.child = Some(ChildGuard(child));
        let key = format!("{round}-{i}");
        let body = pattern(70_000 + i * 1000, i as u64);
        // SDK retries cover the moments a restarted process is not up yet.
        wait_until(Duration::from_secs(60), lazily(|| format!("a PUT after restarting {:?}", p.args)), async || {
            s3.put_object().bucket("media").key(&key).body(body.clone().into()).send().await.is_ok()
        })
        .await;
        written.push((key, body));
    }
    for (key, body) in written.iter() {
        assert_eq!(&get(&s3, "media", key, None).await, body, "{key} after round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_secret_rotates_with_rolling_restarts_and_the_old_one_is_refused_after() {
    let cluster = DevCluster::start();
    let s3 = cluster.client();
    s3.create_bucket().bucket("media").send().await.unwrap();
    let mut written = vec![("before".to_string(), pattern(300_000, 7))];
    put(&s3, "media", "before", written[0].1.clone()).await;
    let old_file = cluster.dir.path().join("cluster-before-rotation.json");
    std::fs::copy(cluster.dir.path().join("cluster.json"), &old_file).unwrap();
    let old_secret = cluster.cluster_file()["cluster_secret"].as_str().unwrap().to_string();

    // Every process of the cluster, with the arguments it was started with.
    let mut procs = Vec::new();
    let replicas = cluster.cluster_file()["catalog_replicas"].as_array().unwrap().clone();
    for site in cluster.sites() {
        for sp in cluster.site_procs(&site) {
            let listens = match sp.role {
                Role::Replica => {
                    replicas.iter().find(|r| r["id"] == sp.id).unwrap()["addr"].as_str().unwrap().to_string()
                }
                Role::Node => cluster.nodes().into_iter().find(|(n, _, _)| *n == sp.id).unwrap().2,
            };
            let args = cmdline(sp.pid).into_iter().skip(1).map(OsString::from).collect();
            let log = cluster.dir.path().join("logs").join(format!("restarted-{site}-{}.log", sp.pid));
            procs.push(Proc_ { args, listens, log, pid: sp.pid, child: None });
        }
    }
    let gw = cluster.gateway_pid();
    let gw_addr = cluster.endpoint().trim_start_matches("http://").to_string();
    let mut gw_args: Vec<String> = cmdline(gw).into_iter().skip(1).collect();
    // `sillok dev` lets its gateway pick a port: keep the one it picked.
    if let Some(i) = gw_args.iter().position(|a| a == "--listen") {
        gw_args[i + 1] = gw_addr.clone();
    }
    procs.push(Proc_ {
        args: gw_args.into_iter().map(OsString::from).collect(),
        listens: gw_addr,
        log: cluster.dir.path().join("logs").join("restarted-gateway.log"),
        pid: gw,
        child: None,
    });
    assert_eq!(procs.len(), 3 + 6 + 1, "3 replicas, 6 nodes, a gateway");

    let (ok, text) = try_secret(&cluster, "promote");
    assert!(!ok && text.contains("no rotation in progress"), "steps refuse to run out of order: {text}");
    secret(&cluster, "stage");
    assert!(secret(&cluster, "status").contains("step 1 of 3"));
    rolling_restart(&cluster, &mut procs, &mut written, "staged").await;
    secret(&cluster, "promote");
    let new_secret = cluster.cluster_file()["cluster_secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, old_secret);
    rolling_restart(&cluster, &mut procs, &mut written, "promoted").await;
    secret(&cluster, "finish");
    rolling_restart(&cluster, &mut procs, &mut written, "finished").await;

    // The catalog now refuses the old secret and takes the new one.
    let addrs: Vec<String> = cluster.env["SILLOK_CATALOG"].split(',').map(str::to_string).collect();
    let t = ClientTimeouts { total: Duration::from_secs(10), attempt: Duration::from_secs(2), ..Default::default() };
    let old =
        CatalogClient::with_tls(addrs.clone(), Signer::new(&old_secret), t, Some(&cluster.internal_tls("gateway")))
            .unwrap();
    let err = old.status().await.expect_err("the old secret is refused");
    assert!(format!("{err:#}").contains("bad signature"), "{err:#}");
    let new =
        CatalogClient::with_tls(addrs, Signer::new(&new_secret), t, Some(&cluster.internal_tls("gateway"))).unwrap();
    new.status().await.expect("the new secret is accepted");
}
