//! `catalog-bench`: the replicated catalog's figures, with real processes on
//! loopback.
//!
//! - **Throughput**: catalog changes (bucket creations) committed per second
//!   with three `sillok placement` replicas, at a given number of concurrent
//!   proposers (`--concurrency`), for `--seconds`.
//! - **Failover**: `--trials` times, `kill -9` of the leader's replica, then
//!   the time until the next change is committed (a client proposing in a
//!   loop through every replica); the killed replica is restarted and the
//!   three converge before the next trial. Median and max are printed.
//!
//! Usage: `catalog-bench --sillok target/release/sillok [--trials 20]
//! [--seconds 10] [--concurrency 32] [--election-min-ms 500 --election-max-ms 1000]`

/// Machine-wide loopback port reservations: dev-only code that lives with
/// `sillok dev` (src/dev_ports.rs) and is compiled into this target as is.
#[path = "../../src/dev_ports.rs"]
mod ports;

use std::path::PathBuf;
use std::process::{Child, Command as Proc, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use sillok_catalog::state::{Bucket, Command, STANDARD};
use sillok_catalog::{CatalogClient, ClientTimeouts};
use sillok_rpc::auth::Signer;

#[derive(Parser)]
struct Args {
    /// The sillok binary.
    #[arg(long, default_value = "target/release/sillok")]
    sillok: PathBuf,
    #[arg(long, default_value_t = 20)]
    trials: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value_t = 500)]
    election_min_ms: u64,
    #[arg(long, default_value_t = 1000)]
    election_max_ms: u64,
    #[arg(long, default_value_t = 100)]
    heartbeat_ms: u64,
}

struct Cluster {
    dir: tempfile::TempDir,
    cluster: PathBuf,
    addrs: Vec<String>,
    secret: String,
    procs: Vec<Option<Child>>,
    args: Vec<String>,
    sillok: PathBuf,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(ports::reserve()?)
}

impl Cluster {
    fn new(a: &Args) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("sillok-catalog-bench-").tempdir()?;
        let mut nodes = Vec::new();
        for (i, site) in ["site-a", "site-b", "site-c"].iter().enumerate() {
            for j in 0..2 {
                nodes.push(serde_json::json!({"id": i * 2 + j + 1, "site": site, "addr": format!("127.0.0.1:{}", free_port()?), "weight": 1.0}));
            }
        }
        let topo = serde_json::json!({"sites": [{"id": "site-a"}, {"id": "site-b"}, {"id": "site-c"}], "nodes": nodes});
        std::fs::write(dir.path().join("topology.json"), topo.to_string())?;
        let addrs: Vec<String> =
            (0..3).map(|_| free_port().map(|p| format!("127.0.0.1:{p}"))).collect::<Result<_, _>>()?;
        let cluster = dir.path().join("cluster.json");
        let mut init = Proc::new(&a.sillok);
        init.args(["init", "--topology"]).arg(dir.path().join("topology.json")).arg("--out").arg(&cluster);
        for (site, addr) in ["site-a", "site-b", "site-c"].iter().zip(&addrs) {
            init.args(["--replica", &format!("{site}={addr}")]);
        }
        let out = init.output().with_context(|| format!("cannot run {}", a.sillok.display()))?;
        if !out.status.success() {
            bail!("sillok init failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cluster)?)?;
        let args = vec![
            "--election-min-ms".into(),
            a.election_min_ms.to_string(),
            "--election-max-ms".into(),
            a.election_max_ms.to_string(),
            "--heartbeat-ms".into(),
            a.heartbeat_ms.to_string(),
        ];
        let mut c = Cluster {
            secret: file["cluster_secret"].as_str().context("no secret")?.to_string(),
            dir,
            cluster,
            addrs,
            procs: vec![None, None, None],
            args,
            sillok: a.sillok.clone(),
        };
        for id in 1..=3 {
            c.spawn(id)?;
        }
        Ok(c)
    }

    fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("replica-{id}.log")))?;
        let child = Proc::new(&self.sillok)
            .arg("catalog")
            .arg("--cluster")
            .arg(&self.cluster)
            .args(["--id", &id.to_string(), "--data"])
            .arg(self.dir.path().join(format!("replica-{id}")))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.procs[(id - 1) as usize] = Some(child);
        Ok(())
    }

    fn kill9(&mut self, id: u64) {
        if let Some(mut c) = self.procs[(id - 1) as usize].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn client(&self) -> anyhow::Result<CatalogClient> {
        let t = ClientTimeouts {
            total: Duration::from_secs(30),
            attempt: Duration::from_secs(2),
            backoff: Duration::from_millis(20),
            ..Default::default()
        };
        // Replicas speak mutual TLS: this client presents the gateway identity
        // `sillok init` wrote beside the cluster file (gateways propose buckets).
        let dir = self.cluster.parent().unwrap_or(std::path::Path::new(".")).join("tls").join("gateway");
        let tls = sillok_rpc::tls::InternalTls::load(&dir)
            .with_context(|| format!("cannot load the internal identity in {}", dir.display()))?;
        Ok(CatalogClient::with_tls(self.addrs.clone(), Signer::new(&self.secret), t, Some(&tls))?)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in 1..=3 {
            self.kill9(id);
        }
    }
}

fn bucket(name: String) -> Command {
    Command::CreateBucket {
        bucket: Bucket {
            name,
            owner: "bench".into(),
            created_at: 1,
            storage_class: STANDARD.into(),
            cors: None,
            lifecycle: None,
            versioning: Default::default(),
        },
    }
}

async fn wait_ready(c: &CatalogClient, min_applied: u64) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(s) = c.status().await
            && s.bootstrapped
            && let Some(l) = s.leader
        {
            // Every replica answers and has applied as much as the leader had.
            let mut ok = true;
            for addr in c.replicas() {
                match c.status_of(addr).await {
                    Ok(x) if x.applied_index >= min_applied.max(1) && x.leader == Some(l) => {}
                    _ => ok = false,
                }
            }
            if ok {
                return Ok(l);
            }
        }
        if Instant::now() > deadline {
            bail!("the catalog is not ready after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let mut cl = Cluster::new(&a)?;
    let client = Arc::new(cl.client()?);
    wait_ready(&client, 0).await?;

    // Throughput.
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(a.seconds);
    let mut tasks = Vec::new();
    for w in 0..a.concurrency {
        let (client, done) = (client.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            let mut lat = Vec::new();
            while Instant::now() < stop {
                let t = Instant::now();
                if client.propose(bucket(format!("tput-{w}-{i}"))).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                i += 1;
            }
            lat
        }));
    }
    let started = Instant::now();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let n = done.load(Ordering::Relaxed);
    println!(
        "throughput: {n} changes in {secs:.1} s = {:.0} changes/s (3 replicas, loopback, concurrency {}); commit latency p50 {:.1} ms, p99 {:.1} ms",
        n as f64 / secs,
        a.concurrency,
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );

    // Failover.
    let mut times = Vec::new();
    for trial in 0..a.trials {
        let applied = client.status().await?.applied_index;
        let leader = wait_ready(&client, applied).await?;
        let killed = Instant::now();
        cl.kill9(leader);
        let mut i = 0;
        loop {
            match client.propose(bucket(format!("failover-{trial}-{i}"))).await {
                Ok(_) => break,
                Err(e) if killed.elapsed() > Duration::from_secs(60) => bail!("no commit 60 s after the kill: {e}"),
                Err(_) => i += 1,
            }
        }
        let ms = killed.elapsed().as_secs_f64() * 1000.0;
        println!("trial {:2}: killed leader replica {leader}, next commit after {ms:.0} ms", trial + 1);
        times.push(ms);
        cl.spawn(leader)?;
    }
    if !times.is_empty() {
        times.sort_by(f64::total_cmp);
        println!(
            "failover (kill -9 of the leader to the next committed change, {} trials, election timeout {}-{} ms, heartbeat {} ms): median {:.0} ms, max {:.0} ms, min {:.0} ms",
            times.len(),
            a.election_min_ms,
            a.election_max_ms,
            a.heartbeat_ms,
            pct(&times, 0.5),
            times[times.len() - 1],
            times[0]
        );
    }
    Ok(())
}
