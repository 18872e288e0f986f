//! `sillok dev drill`: lose a whole site of a running `sillok dev` cluster
//! under chat-media load, wait for full redundancy, and report.
//!
//! Owns: the drill's load, its clock and its report. The load is a real S3
//! client (aws-sdk-s3) against the cluster's gateway: PUTs of thumbnails,
//! photos and short videos and GETs of acknowledged objects, each GET
//! checked against the blake3 of what was acknowledged. Phases:
//! 1. fill: write `--fill-mib` of objects (not measured);
//! 2. before: `--before-s` of mixed load;
//! 3. outage: `kill -9` (or `--hang`: SIGSTOP) of every process of the site
//!    (`sites/<site>.pids`), until the catalog marks the site out;
//! 4. rebuild: until `repair status` shows nothing left to rebuild and no PG
//!    below k+m shards;
//! 5. with `--return`, the site comes back (SIGCONT, or the same command
//!    lines started again), until every node of it is up;
//! 6. read-back: every acknowledged object, byte for byte (by hash).
//!
//! The report says what an operator needs before trusting the system:
//! failed and wrong GETs, PUT failures and the longest gap without a
//! successful PUT, client p50/p99 per phase, the catalog's new leader time
//! when the leader was in the lost site, the time until every PG was back at
//! k+m, the rebuild rate, and the read-back. Processes the drill starts again
//! are not `sillok dev`'s children: their pids replace the old ones in
//! `sites/<site>.pids`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use sillok_catalog::{CatalogClient, ClientTimeouts};
use sillok_placement::NodeState;
use sillok_rpc::auth::Signer;

#[derive(clap::Args)]
pub struct DrillArgs {
    /// The directory of the running `sillok dev` cluster.
    #[arg(long, default_value = "sillok-dev")]
    pub data: PathBuf,
    /// The site to lose (default: the last one).
    #[arg(long)]
    pub site: Option<String>,
    /// SIGSTOP the site's processes (a hang) instead of kill -9 (a crash).
    #[arg(long)]
    pub hang: bool,
    /// Bring the site back once redundancy is full again.
    #[arg(long = "return")]
    pub bring_back: bool,
    /// MiB of objects to write before the outage.
    #[arg(long, default_value_t = 64)]
    pub fill_mib: u64,
    /// Seconds of measured load before the outage.
    #[arg(long, default_value_t = 10)]
    pub before_s: u64,
    /// Requests in flight.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Longest wait (s) for the site to go out and for full redundancy.
    #[arg(long, default_value_t = 1800)]
    pub timeout_s: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub internal: super::internal_tls::InternalTlsArgs,
}

const PHASES: [&str; 4] = ["before", "outage", "rebuild", "after"];

/// Client-side latency of one kind of request in one phase.
#[derive(Debug, Default, Serialize)]
pub struct Latency {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct DrillReport {
    pub site: String,
    pub mode: &'static str,
    pub objects_acknowledged: u64,
    pub bytes_acknowledged: u64,
    pub gets: u64,
    pub failed_gets: u64,
    pub wrong_gets: u64,
    pub puts: u64,
    pub put_failures: u64,
    pub longest_put_gap_ms: u64,
    pub get_latency: BTreeMap<&'static str, Latency>,
    pub put_latency: BTreeMap<&'static str, Latency>,
    pub leader_was_in_site: bool,
    pub new_leader_after_ms: Option<u64>,
    pub site_out_after_ms: Option<u64>,
    pub full_redundancy_after_ms: Option<u64>,
    pub rebuilt_bytes: u64,
    pub rebuild_mib_per_s: f64,
    pub returned_after_ms: Option<u64>,
    /// From the return until every PG was clean again (the site rule restored).
    pub clean_again_after_ms: Option<u64>,
    pub readback_objects: u64,
    pub readback_missing: u64,
    pub readback_mismatched: u64,
    /// The largest peak resident set (VmHWM) of the cluster's processes, by
    /// kind (node, catalog, gateway), in MiB: over each process's life, so
    /// the surviving nodes' figure covers the rebuild.
    pub peak_rss_mib: BTreeMap<String, f64>,
}

/// What the load shares between its workers.
struct Load {
    s3: aws_sdk_s3::Client,
    bucket: String,
    phase: AtomicU8,
    stop: AtomicBool,
    next_key: AtomicU64,
    /// Acknowledged objects: key, length, blake3.
    acked: Mutex<Vec<(String, u64, [u8; 32])>>,
    /// Latencies (ms) per phase: GETs, PUTs.
    get_ms: Mutex<[Vec<f64>; 4]>,
    put_ms: Mutex<[Vec<f64>; 4]>,
    gets: AtomicU64,
    failed_gets: AtomicU64,
    wrong_gets: AtomicU64,
    puts: AtomicU64,
    put_failures: AtomicU64,
    last_put_ok: Mutex<Instant>,
    longest_put_gap: Mutex<Duration>,
    /// Only gaps after this (the outage's start) count.
    gaps_from: Mutex<Option<Instant>>,
}

/// Deterministic bytes for object `n` (no two objects alike).
fn body(n: u64, len: u64) -> Vec<u8> {
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The chat-media mix: mostly thumbnails and photos, a few short videos.
fn size_of(n: u64) -> u64 {
    let r = n.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
    match r % 100 {
        0..60 => 8 * 1024 + r % (24 * 1024),
        60..96 => 100 * 1024 + r % (900 * 1024),
        _ => 2 * 1024 * 1024 + r % (4 * 1024 * 1024),
    }
}

impl Load {
    async fn put_one(&self, measured: bool) {
        let n = self.next_key.fetch_add(1, Relaxed);
        let len = size_of(n);
        let data = body(n, len);
        let hash = *blake3::hash(&data).as_bytes();
        let key = format!("drill/{n:08}");
        let phase = self.phase.load(Relaxed) as usize;
        let t = Instant::now();
        let r = self.s3.put_object().bucket(&self.bucket).key(&key).body(data.into()).send().await;
        if measured {
            self.puts.fetch_add(1, Relaxed);
        }
        match r {
            Ok(_) => {
                if measured {
                    self.put_ms.lock().expect("lock")[phase].push(t.elapsed().as_secs_f64() * 1000.0);
                }
                let now = Instant::now();
                let mut last = self.last_put_ok.lock().expect("lock");
                if let Some(from) = *self.gaps_from.lock().expect("lock") {
                    let gap = now.duration_since((*last).max(from));
                    let mut longest = self.longest_put_gap.lock().expect("lock");
                    *longest = (*longest).max(gap);
                }
                *last = now;
                self.acked.lock().expect("lock").push((key, len, hash));
            }
            Err(e) => {
                if measured {
                    self.put_failures.fetch_add(1, Relaxed);
                }
                tracing::debug!(key, error = %e, "drill PUT failed");
            }
        }
    }

    async fn get_one(&self, pick: u64) {
        let target = {
            let acked = self.acked.lock().expect("lock");
            if acked.is_empty() {
                return;
            }
            acked[(pick % acked.len() as u64) as usize].clone()
        };
        let phase = self.phase.load(Relaxed) as usize;
        let t = Instant::now();
        self.gets.fetch_add(1, Relaxed);
        match read(&self.s3, &self.bucket, &target.0).await {
            Ok(data) => {
                self.get_ms.lock().expect("lock")[phase].push(t.elapsed().as_secs_f64() * 1000.0);
                if data.len() as u64 != target.1 || *blake3::hash(&data).as_bytes() != target.2 {
                    self.wrong_gets.fetch_add(1, Relaxed);
                    tracing::error!(key = target.0, "drill GET returned the wrong bytes");
                }
            }
            Err(e) => {
                self.failed_gets.fetch_add(1, Relaxed);
                tracing::warn!(key = target.0, error = %e, "drill GET failed");
            }
        }
    }

    async fn worker(self: Arc<Self>, id: u64) {
        let mut n = id.wrapping_mul(7919);
        while !self.stop.load(Relaxed) {
            n = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            // Chat media is read far more than written: 3 GETs per PUT.
            if (n >> 33).is_multiple_of(4) {
                self.put_one(true).await;
            } else {
                self.get_one(n >> 20).await;
            }
        }
    }
}

async fn read(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> anyhow::Result<Vec<u8>> {
    let r = s3.get_object().bucket(bucket).key(key).send().await?;
    Ok(r.body.collect().await?.into_bytes().to_vec())
}

fn latency(samples: &mut [f64]) -> Latency {
    if samples.is_empty() {
        return Latency::default();
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Latency { count: samples.len(), p50_ms: at(0.5), p99_ms: at(0.99) }
}

fn env_file(data: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let path = data.join("cluster.env");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no running `sillok dev` cluster in {} (no cluster.env)", data.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

fn signal(pid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) with a pid and a signal number; no memory is shared.
    unsafe { libc::kill(pid, sig) == 0 }
}

fn site_pids(data: &Path, site: &str) -> anyhow::Result<Vec<i32>> {
    let path = data.join("sites").join(format!("{site}.pids"));
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

pub async fn run(a: DrillArgs) -> anyhow::Result<()> {
    let data = a.data.canonicalize().with_context(|| format!("no directory {}", a.data.display()))?;
    let env = env_file(&data)?;
    let get = |k: &str| env.get(k).cloned().with_context(|| format!("cluster.env has no {k}"));
    let file = super::load_cluster_file(&data.join("cluster.json"))?;
    super::internal_tls::install(&a.internal, Some(data.join("tls").join("admin")))?;
    let catalog = CatalogClient::new(
        file.catalog_replicas.iter().map(|r| r.addr.clone()).collect(),
        Signer::new(&file.cluster_secret),
        ClientTimeouts { total: Duration::from_secs(3), ..Default::default() },
    )?;
    let site = match a.site.clone() {
        Some(s) => s,
        None => file.map.topology.sites.last().map(|s| s.id.clone()).context("the cluster has no sites")?,
    };
    let pids = site_pids(&data, &site)?;
    if pids.is_empty() {
        bail!("site {site} has no processes listed");
    }
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(get("AWS_REGION")?))
        .endpoint_url(get("S3_ENDPOINT")?)
        .credentials_provider(aws_credential_types::Credentials::new(
            get("AWS_ACCESS_KEY_ID")?,
            get("AWS_SECRET_ACCESS_KEY")?,
            None,
            None,
            "sillok-drill",
        ))
        .force_path_style(true);
    // A `sillok dev --tls` cluster: trust its CA (and only it).
    let config = match env.get("AWS_CA_BUNDLE") {
        Some(ca) => config.http_client(super::https_client_trusting(Path::new(ca))?),
        None => config,
    };
    let s3 = aws_sdk_s3::Client::from_conf(config.build());
    let bucket = format!("drill-{}", std::process::id());
    s3.create_bucket().bucket(&bucket).send().await.context("cannot create the drill's bucket")?;
    let load = Arc::new(Load {
        s3,
        bucket,
        phase: AtomicU8::new(0),
        stop: AtomicBool::new(false),
        next_key: AtomicU64::new(0),
        acked: Mutex::new(Vec::new()),
        get_ms: Mutex::new(Default::default()),
        put_ms: Mutex::new(Default::default()),
        gets: AtomicU64::new(0),
        failed_gets: AtomicU64::new(0),
        wrong_gets: AtomicU64::new(0),
        puts: AtomicU64::new(0),
        put_failures: AtomicU64::new(0),
        last_put_ok: Mutex::new(Instant::now()),
        longest_put_gap: Mutex::new(Duration::ZERO),
        gaps_from: Mutex::new(None),
    });
    let mut report =
        DrillReport { site: site.clone(), mode: if a.hang { "hang" } else { "kill" }, ..Default::default() };

    // 1. Fill.
    eprintln!("drill: writing {} MiB before the outage", a.fill_mib);
    let target = a.fill_mib * 1024 * 1024;
    let filled = AtomicU64::new(0);
    futures::future::join_all((0..a.concurrency).map(|_| async {
        while filled.load(Relaxed) < target {
            let before = load.acked.lock().expect("lock").len();
            load.put_one(false).await;
            let acked = load.acked.lock().expect("lock");
            if acked.len() > before {
                filled.fetch_add(acked.last().map_or(0, |x| x.1), Relaxed);
            }
        }
    }))
    .await;

    // 2. Before.
    let workers: Vec<_> = (0..a.concurrency as u64).map(|i| tokio::spawn(load.clone().worker(i))).collect();
    eprintln!("drill: {} s of load before the outage", a.before_s);
    tokio::time::sleep(Duration::from_secs(a.before_s)).await;
    let status = catalog.status().await.context("the catalog does not answer")?;
    report.leader_was_in_site = status.leader_site.as_deref() == Some(site.as_str());
    let written_before: u64 =
        status.nodes.iter().filter_map(|n| n.usage.as_ref()?.repair.as_ref()).map(|r| r.bytes_written).sum();
    let site_nodes: Vec<u32> = file.map.topology.nodes_in(&site).map(|n| n.id.0).collect();

    // 3. Outage.
    let cmdlines: Vec<Vec<String>> = pids.iter().map(|p| cmdline(*p)).collect();
    let lost_at = Instant::now();
    *load.gaps_from.lock().expect("lock") = Some(lost_at);
    load.phase.store(1, Relaxed);
    let sig = if a.hang { libc::SIGSTOP } else { libc::SIGKILL };
    for p in &pids {
        signal(*p, sig);
    }
    eprintln!("drill: {} every process of {site} ({} pids)", if a.hang { "stopped" } else { "killed" }, pids.len());
    let deadline = lost_at + Duration::from_secs(a.timeout_s);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(status) = catalog.status().await else { continue };
        if report.leader_was_in_site
            && report.new_leader_after_ms.is_none()
            && status.leader_site.as_deref().is_some_and(|s| s != site)
        {
            report.new_leader_after_ms = Some(lost_at.elapsed().as_millis() as u64);
        }
        let out = site_nodes.iter().all(|id| status.nodes.iter().any(|n| n.id.0 == *id && n.state == NodeState::Out));
        if out && report.site_out_after_ms.is_none() {
            report.site_out_after_ms = Some(lost_at.elapsed().as_millis() as u64);
            load.phase.store(2, Relaxed);
            eprintln!("drill: {site} is out after {:.1} s; rebuilding", lost_at.elapsed().as_secs_f64());
        }
        if out {
            let Ok(view) = catalog.catalog(false).await else { continue };
            let Some(map) = view.map else { continue };
            let rs = super::repair_status::RepairStatus::of(&status, &map);
            if rs.complete() {
                report.full_redundancy_after_ms = Some(lost_at.elapsed().as_millis() as u64);
                let written: u64 = status
                    .nodes
                    .iter()
                    .filter_map(|n| n.usage.as_ref()?.repair.as_ref())
                    .map(|r| r.bytes_written)
                    .sum();
                report.rebuilt_bytes = written.saturating_sub(written_before);
                let secs = (report.full_redundancy_after_ms.unwrap_or(0) - report.site_out_after_ms.unwrap_or(0))
                    as f64
                    / 1000.0;
                report.rebuild_mib_per_s = report.rebuilt_bytes as f64 / 1_048_576.0 / secs.max(1e-3);
                eprintln!("drill: full redundancy after {:.1} s", lost_at.elapsed().as_secs_f64());
                break;
            }
        }
        if Instant::now() > deadline {
            eprintln!("drill: gave up waiting for full redundancy after {} s", a.timeout_s);
            break;
        }
    }
    load.phase.store(3, Relaxed);

    // 5. Return.
    if a.bring_back {
        let back_at = Instant::now();
        let mut new_pids = Vec::new();
        for (pid, line) in pids.iter().zip(&cmdlines) {
            if a.hang {
                signal(*pid, libc::SIGCONT);
                new_pids.push(*pid);
            } else if let Some(p) = respawn(line, *pid, &data)? {
                new_pids.push(p);
            }
        }
        let list: String = new_pids.iter().map(|p| format!("{p}\n")).collect();
        std::fs::write(data.join("sites").join(format!("{site}.pids")), list)?;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let Ok(status) = catalog.status().await else { continue };
            let up = site_nodes.iter().all(|id| status.nodes.iter().any(|n| n.id.0 == *id && n.state == NodeState::Up));
            if up && report.returned_after_ms.is_none() {
                report.returned_after_ms = Some(back_at.elapsed().as_millis() as u64);
                eprintln!("drill: {site} is up again after {:.1} s", back_at.elapsed().as_secs_f64());
            }
            if up {
                let Ok(view) = catalog.catalog(false).await else { continue };
                let Some(map) = view.map else { continue };
                let rs = super::repair_status::RepairStatus::of(&status, &map);
                if rs.complete() && rs.pgs["degraded-site"] == 0 {
                    report.clean_again_after_ms = Some(back_at.elapsed().as_millis() as u64);
                    eprintln!(
                        "drill: every PG clean (site rule restored) after {:.1} s",
                        back_at.elapsed().as_secs_f64()
                    );
                    break;
                }
            }
            if back_at.elapsed() > Duration::from_secs(a.timeout_s) {
                eprintln!("drill: {site} did not come back up within {} s", a.timeout_s);
                break;
            }
        }
    }
    load.stop.store(true, Relaxed);
    for w in workers {
        let _ = w.await;
    }

    // 6. Read-back.
    let acked = load.acked.lock().expect("lock").clone();
    report.objects_acknowledged = acked.len() as u64;
    report.bytes_acknowledged = acked.iter().map(|x| x.1).sum();
    for (key, len, hash) in &acked {
        report.readback_objects += 1;
        match read(&load.s3, &load.bucket, key).await {
            Ok(d) if d.len() as u64 == *len && blake3::hash(&d).as_bytes() == hash => {}
            Ok(_) => report.readback_mismatched += 1,
            Err(_) => report.readback_missing += 1,
        }
    }
    report.gets = load.gets.load(Relaxed);
    report.failed_gets = load.failed_gets.load(Relaxed);
    report.wrong_gets = load.wrong_gets.load(Relaxed);
    report.puts = load.puts.load(Relaxed);
    report.put_failures = load.put_failures.load(Relaxed);
    report.longest_put_gap_ms = load.longest_put_gap.lock().expect("lock").as_millis() as u64;
    let mut gets = std::mem::take(&mut *load.get_ms.lock().expect("lock"));
    let mut puts = std::mem::take(&mut *load.put_ms.lock().expect("lock"));
    for (i, phase) in PHASES.iter().enumerate() {
        report.get_latency.insert(phase, latency(&mut gets[i]));
        report.put_latency.insert(phase, latency(&mut puts[i]));
    }
    report.peak_rss_mib = peak_rss(&data);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

/// The largest VmHWM of the dev cluster's live processes by subcommand.
fn peak_rss(data: &Path) -> BTreeMap<String, f64> {
    let mut pids: Vec<i32> = std::fs::read_dir(data.join("sites"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "pids"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .flat_map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect::<Vec<i32>>())
        .collect();
    pids.extend(std::fs::read_to_string(data.join("gateway.pid")).ok().and_then(|t| t.trim().parse::<i32>().ok()));
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for pid in pids {
        let Some(kind) = cmdline(pid).get(1).cloned() else { continue };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { continue };
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok());
        if let Some(kib) = kib {
            let e = out.entry(kind).or_insert(0.0);
            *e = e.max(kib / 1024.0);
        }
    }
    out
}

fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| b.split(|c| *c == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into()).collect())
        .unwrap_or_default()
}

/// Starts a killed process again with its old command line; its output
/// goes to `logs/drill-restarted-<old pid>.log`.
fn respawn(line: &[String], old_pid: i32, data: &Path) -> anyhow::Result<Option<i32>> {
    let Some((exe, args)) = line.split_first() else { return Ok(None) };
    let log = std::fs::File::create(data.join("logs").join(format!("drill-restarted-{old_pid}.log")))?;
    let mut cmd = std::process::Command::new(exe);
    // As `sillok dev` started it: configured by its command line alone.
    for var in super::config::flag_env_vars() {
        cmd.env_remove(var);
    }
    let child = cmd
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {exe} again"))?;
    Ok(Some(child.id() as i32))
}

fn print_report(r: &DrillReport) {
    let ms = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{:.1} s", v as f64 / 1000.0));
    println!("drill: {} of {}", r.mode, r.site);
    println!(
        "  acknowledged: {} objects, {:.1} MiB",
        r.objects_acknowledged,
        r.bytes_acknowledged as f64 / 1_048_576.0
    );
    println!("  GETs: {} ({} failed, {} wrong bytes)", r.gets, r.failed_gets, r.wrong_gets);
    println!(
        "  PUTs: {} ({} failed); longest gap without a successful PUT: {} ms",
        r.puts, r.put_failures, r.longest_put_gap_ms
    );
    for phase in PHASES {
        let (g, p) = (&r.get_latency[phase], &r.put_latency[phase]);
        println!(
            "  {phase:>8}: GET p50 {:.1} ms p99 {:.1} ms ({}), PUT p50 {:.1} ms p99 {:.1} ms ({})",
            g.p50_ms, g.p99_ms, g.count, p.p50_ms, p.p99_ms, p.count
        );
    }
    if r.leader_was_in_site {
        println!("  catalog leader was in {}; new leader after {}", r.site, ms(r.new_leader_after_ms));
    }
    println!(
        "  site out after {}; every PG at k+m again after {}",
        ms(r.site_out_after_ms),
        ms(r.full_redundancy_after_ms)
    );
    println!("  rebuilt {:.1} MiB at {:.1} MiB/s", r.rebuilt_bytes as f64 / 1_048_576.0, r.rebuild_mib_per_s);
    if r.returned_after_ms.is_some() {
        println!(
            "  site back up after {}; every PG clean again after {}",
            ms(r.returned_after_ms),
            ms(r.clean_again_after_ms)
        );
    }
    println!(
        "  read-back: {} objects, {} missing, {} with wrong bytes",
        r.readback_objects, r.readback_missing, r.readback_mismatched
    );
    let rss: Vec<String> = r.peak_rss_mib.iter().map(|(k, v)| format!("{k} {v:.0} MiB")).collect();
    println!("  peak RSS (largest process of each kind): {}", rss.join(", "));
}
