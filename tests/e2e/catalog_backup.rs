//! Catalog backup and restore, and recovery when a majority of the catalog
//! replicas is lost for good: `sillok admin catalog backup|export` and
//! `sillok catalog --restore-from`, on a running cluster whose gateway and
//! storage nodes are never restarted and keep serving what they had.

use std::ffi::OsString;
use std::time::Duration;

use crate::support::*;

/// A catalog replica of the cluster: how it was started, where it keeps its
/// state and listens.
struct Replica {
    args: Vec<String>,
    data: String,
    listens: String,
    pid: i32,
}

fn replicas(cluster: &DevCluster) -> Vec<Replica> {
    let file = cluster.cluster_file();
    let addrs = file["catalog_replicas"].as_array().unwrap().clone();
    let mut out = Vec::new();
    for site in cluster.sites() {
        for sp in cluster.site_procs(&site).into_iter().filter(|p| p.role == Role::Replica) {
            let args: Vec<String> = cmdline(sp.pid).into_iter().skip(1).collect();
            let i = args.iter().position(|a| a == "--data").expect("a replica's --data");
            let listens = addrs.iter().find(|r| r["id"] == sp.id).unwrap()["addr"].as_str().unwrap().to_string();
            out.push(Replica { data: args[i + 1].clone(), args, listens, pid: sp.pid });
        }
    }
    assert_eq!(out.len(), 3);
    out
}

/// The map epoch and the bucket names `sillok admin` sees (once a leader answers).
async fn catalog_state(cluster: &DevCluster) -> (u64, Vec<String>) {
    wait_until(Duration::from_secs(60), "a catalog leader with a seeded catalog", async || {
        let out = cluster.admin(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let epoch = v["epoch"].as_u64().filter(|e| *e > 0 && v["leader"].is_u64())?;
        let out = cluster.admin(&["bucket", "list", "--json"]);
        let b: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let mut names: Vec<String> =
            b.as_array()?.iter().filter_map(|x| x["name"].as_str().map(str::to_string)).collect();
        names.sort();
        Some((epoch, names))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_lost_with_every_replica_comes_back_from_a_backup_or_a_survivors_export() {
    let cluster = DevCluster::start();
    let s3 = cluster.client();
    s3.create_bucket().bucket("media").send().await.unwrap();
    let photo = pattern(200_000, 3);
    put(&s3, "media", "photo.jpg", photo.clone()).await;
    let (epoch_before, buckets) = catalog_state(&cluster).await;
    assert_eq!(buckets, vec!["media".to_string()]);

    // An online backup, 0600, refusing to overwrite.
    let backup = cluster.dir.path().join("catalog-backup.json");
    let out = cluster.admin_ok(&["catalog", "backup", "--out", backup.to_str().unwrap()]);
    assert!(out.contains("1 buckets"), "{out}");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&backup).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    assert!(!cluster.admin(&["catalog", "backup", "--out", backup.to_str().unwrap()]).status.success());
    let b: serde_json::Value = serde_json::from_slice(&std::fs::read(&backup).unwrap()).unwrap();
    assert_eq!(b["catalog"]["map"]["epoch"].as_u64(), Some(epoch_before));
    assert!(b["catalog"]["keys"].as_object().unwrap().values().all(|k| k["secret"].is_string()), "secrets kept");

    // After the backup: a bucket only a survivor's export will know.
    s3.create_bucket().bucket("after-backup").send().await.unwrap();
    put(&s3, "after-backup", "late.jpg", pattern(90_000, 4)).await;

    // Two sites' replicas are lost for good (kill -9, their disks gone); the
    // third is stopped and its catalog exported.
    let reps = replicas(&cluster);
    for r in &reps {
        assert_eq!(signal(r.pid, 9), 0);
    }
    for r in &reps[..2] {
        std::fs::remove_dir_all(&r.data).unwrap();
    }
    let export = cluster.dir.path().join("survivor-export.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sillok"))
        .args(["admin", "catalog", "export", "--data", &reps[2].data, "--out", export.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "export: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 buckets"));
    std::fs::remove_dir_all(&reps[2].data).unwrap();

    // S3 goes on without any replica (gateway and nodes keep their copies).
    assert_eq!(get(&s3, "media", "photo.jpg", None).await, photo);

    // A new replica set, every replica seeded from the survivor's export.
    let mut children = Vec::new();
    for r in &reps {
        wait_port_free(&r.listens);
        let mut args: Vec<OsString> = r.args.iter().map(OsString::from).collect();
        args.push("--restore-from".into());
        args.push(export.clone().into());
        let log = cluster.dir.path().join("logs").join(format!("restored-replica-{}.log", r.pid));
        children.push(ChildGuard(spawn_sillok(&args, &log)));
    }
    let (epoch_after, buckets) = catalog_state(&cluster).await;
    assert_eq!(buckets, vec!["after-backup".to_string(), "media".to_string()], "the export's buckets");
    assert!(epoch_after > epoch_before + (1 << 32) - 1, "the epoch jumped past the old one: {epoch_after}");

    // The gateway and the nodes, never restarted, follow the restored catalog
    // (it is newer than anything they saw): a bucket made now is served, and
    // objects written before are still there.
    s3.create_bucket().bucket("after-restore").send().await.unwrap();
    wait_until(Duration::from_secs(30), "a PUT into the bucket made after the restore", async || {
        s3.put_object().bucket("after-restore").key("new.jpg").body(pattern(100_000, 5).into()).send().await.is_ok()
    })
    .await;
    assert_eq!(get(&s3, "after-restore", "new.jpg", None).await, pattern(100_000, 5));
    assert_eq!(get(&s3, "after-backup", "late.jpg", None).await, pattern(90_000, 4));
    assert_eq!(get(&s3, "media", "photo.jpg", None).await, photo);

    // The online backup restores too (into yet another new replica set).
    drop(children);
    for r in &reps {
        wait_port_free(&r.listens);
        std::fs::remove_dir_all(&r.data).unwrap();
    }
    let mut children = Vec::new();
    for r in &reps {
        let mut args: Vec<OsString> = r.args.iter().map(OsString::from).collect();
        args.extend(["--restore-from".into(), backup.clone().into_os_string()]);
        let log = cluster.dir.path().join("logs").join(format!("restored-again-{}.log", r.pid));
        children.push(ChildGuard(spawn_sillok(&args, &log)));
    }
    let (epoch_again, buckets) = catalog_state(&cluster).await;
    assert_eq!(buckets, vec!["media".to_string()], "the backup's buckets");
    assert!(epoch_again > epoch_after, "an older backup restored later still lands above: {epoch_again}");
    s3.create_bucket().bucket("after-second-restore").send().await.unwrap();
    wait_until(Duration::from_secs(30), "a PUT into a bucket made after the second restore", async || {
        s3.put_object().bucket("after-second-restore").key("k").body(pattern(1000, 6).into()).send().await.is_ok()
    })
    .await;
    assert_eq!(get(&s3, "media", "photo.jpg", None).await, photo);
    drop(children);
}
