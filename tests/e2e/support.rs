//! Test harness: a real `sillok dev` cluster (the same code path as the README's
//! first command) in a temporary directory, typed access to its processes,
//! S3 clients that talk to it, and [`wait_until`], the one way these tests
//! wait for something. Dropping a `DevCluster` sends SIGTERM to `sillok dev`,
//! which stops every process it started (and they die with it anyway:
//! PR_SET_PDEATHSIG).

#![allow(dead_code)]

/// Machine-wide loopback port reservations: dev-only code that lives with
/// `sillok dev` (src/dev_ports.rs) and is compiled into this target as is
/// (the path is relative to this file's folder, tests/e2e/).
#[path = "../../src/dev_ports.rs"]
mod ports;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_sdk_s3::config::{BehaviorVersion, Region};

const SIGCONT: i32 = 18;
const SIGSTOP: i32 = 19;

pub struct DevCluster {
    pub dir: tempfile::TempDir,
    child: Child,
    pub env: HashMap<String, String>,
}

impl DevCluster {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// `extra`: more `sillok dev` arguments, e.g. `--gateway-arg=--block-size=65536`.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_with_log(extra, "info")
    }

    /// [`DevCluster::start_with`] with `SILLOK_LOG=filter` for every process.
    pub fn start_with_log(extra: &[&str], filter: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("sillok-test-").tempdir().expect("tempdir");
        let mut args: Vec<OsString> =
            vec!["dev".into(), "--data".into(), dir.path().into(), "--port".into(), "0".into()];
        // Two nodes per site unless a test asks for more (`sillok dev` starts
        // three): most tests need the site rule, not a rebuildable site.
        if !extra.iter().any(|a| a.starts_with("--nodes-per-site")) {
            args.push("--nodes-per-site=2".into());
        }
        args.extend(extra.iter().map(OsString::from));
        let child = spawn_sillok_logging(&args, &dir.path().join("dev.log"), filter);
        let mut c = DevCluster { dir, child, env: HashMap::new() };
        let env_path = c.dir.path().join("cluster.env");
        let dev_log = c.dir.path().join("dev.log");
        // `sillok dev` writes cluster.env once everything is up.
        wait_until_blocking(
            Duration::from_secs(120),
            lazily(|| format!("the dev cluster to be up; its log:\n{}", read_log(&dev_log))),
            || {
                if let Ok(Some(status)) = c.child.try_wait() {
                    panic!("sillok dev exited ({status}) before the cluster was up:\n{}", read_log(&dev_log));
                }
                env_path.exists()
            },
        );
        for line in std::fs::read_to_string(&env_path).unwrap().lines() {
            if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
                c.env.insert(k.to_string(), v.to_string());
            }
        }
        c
    }

    /// The output of `sillok dev` itself (each process's log is in `logs/`).
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("dev.log"))
    }

    /// Starts storage node `id` again (after it was killed) on its data
    /// directory, with `extra` node arguments; killed when dropped.
    /// A killed process lets go of its port only once the kernel has torn it
    /// down, which on a busy machine can come after `kill` returns; the new
    /// node is started once the port is free, or it could fail to bind.
    pub fn restart_node(&self, id: u64, extra: &[&str]) -> ChildGuard {
        let (_, site, addr) = self.nodes().into_iter().find(|(n, _, _)| *n == id).expect("no such node");
        wait_port_free(&addr);
        let dir = self.dir.path().join("sites").join(&site).join(format!("node-{id}"));
        let mut args: Vec<OsString> = vec![
            "node".into(),
            "--id".into(),
            id.to_string().into(),
            "--wait-for-map-s".into(),
            "5".into(),
            "--cluster".into(),
            self.dir.path().join("cluster.json").into(),
            "--data".into(),
            dir.into(),
        ];
        args.extend(extra.iter().map(OsString::from));
        let log = self.dir.path().join("logs").join(format!("{site}-node-{id}.log"));
        ChildGuard(spawn_sillok(&args, &log))
    }

    /// Starts a storage node the catalog added (`sillok admin node add`,
    /// applied) at `addr`, with its data under the site's folder (so
    /// `shard_files` sees it); killed when dropped.
    pub fn start_added_node(&self, site: &str, id: u64, addr: &str, extra: &[&str]) -> ChildGuard {
        if !self.dir.path().join("tls").join(format!("node-{id}")).exists() {
            issue_cert(self.dir.path(), "node", &format!("node-{id}"));
        }
        let dir = self.dir.path().join("sites").join(site).join(format!("node-{id}"));
        let mut args: Vec<OsString> = vec![
            "node".into(),
            "--cluster".into(),
            self.dir.path().join("cluster.json").into(),
            "--id".into(),
            id.to_string().into(),
            "--data".into(),
            dir.into(),
            "--listen".into(),
            addr.into(),
        ];
        args.extend(extra.iter().map(OsString::from));
        let log = self.dir.path().join("logs").join(format!("{site}-node-{id}.log"));
        ChildGuard(spawn_sillok(&args, &log))
    }

    /// The internal identity (certificate, key, cluster CA) that `sillok
    /// dev` made for one of its processes, `tls/<name>` (`gateway`, `admin`,
    /// `node-<id>`, `catalog-<id>`): for a test's own internal client.
    pub fn internal_tls(&self, name: &str) -> sillok_rpc::tls::InternalTls {
        sillok_rpc::tls::InternalTls::load(&self.dir.path().join("tls").join(name)).unwrap()
    }

    /// The metrics page of the node or catalog replica whose internal API is
    /// at `internal_addr`, on its ops listener (`ops.txt`): the internal port
    /// speaks mutual TLS only.
    pub fn metrics_url_of(&self, internal_addr: &str) -> String {
        let node = self.nodes().into_iter().find(|n| n.2 == internal_addr).map(|n| ("node", n.0));
        let replica = || {
            self.cluster_file()["catalog_replicas"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["addr"] == internal_addr)
                .map(|r| ("replica", r["id"].as_u64().unwrap()))
        };
        let (role, id) = node.or_else(replica).expect("no node or replica at this address");
        let ops = std::fs::read_to_string(self.dir.path().join("ops.txt")).unwrap();
        let line = ops.lines().find(|l| l.starts_with(&format!("{role} {id} "))).expect("no ops listener");
        format!("http://{}/metrics", line.rsplit(' ').next().unwrap())
    }

    /// The log of storage node `id`.
    pub fn node_log(&self, id: u64) -> String {
        let site = self.nodes().into_iter().find(|(n, _, _)| *n == id).map(|(_, s, _)| s).unwrap_or_default();
        read_log(&self.dir.path().join("logs").join(format!("{site}-node-{id}.log")))
    }

    /// The log of the dev cluster's own gateway.
    pub fn gateway_log(&self) -> String {
        read_log(&self.dir.path().join("logs").join("gateway.log"))
    }

    pub fn endpoint(&self) -> String {
        self.env["S3_ENDPOINT"].clone()
    }

    pub fn region(&self) -> String {
        self.env["AWS_REGION"].clone()
    }

    pub fn client(&self) -> aws_sdk_s3::Client {
        self.client_with(&self.env["AWS_ACCESS_KEY_ID"], &self.env["AWS_SECRET_ACCESS_KEY"])
    }

    /// A client of this cluster; of a `--tls` one, trusting its CA
    /// (`AWS_CA_BUNDLE` in `cluster.env`) and nothing else.
    pub fn client_with(&self, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
        match self.ca_bundle() {
            Some(ca) => s3_client_trusting(&self.endpoint(), &self.region(), access_key, secret_key, &ca),
            None => s3_client(&self.endpoint(), &self.region(), access_key, secret_key),
        }
    }

    /// The CA file of a `sillok dev --tls` cluster.
    pub fn ca_bundle(&self) -> Option<PathBuf> {
        self.env.get("AWS_CA_BUNDLE").map(PathBuf::from)
    }

    /// The S3 endpoint's `host:port`, whatever its scheme.
    pub fn authority(&self) -> String {
        let e = self.endpoint();
        e.split_once("://").map(|(_, a)| a.to_string()).unwrap_or(e)
    }

    pub fn cluster_file(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.path().join("cluster.json")).unwrap()).unwrap()
    }

    pub fn sites(&self) -> Vec<String> {
        self.cluster_file()["map"]["topology"]["sites"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// `(id, site, addr)` of every storage node.
    pub fn nodes(&self) -> Vec<(u64, String, String)> {
        self.cluster_file()["map"]["topology"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["id"].as_u64().unwrap(),
                    n["site"].as_str().unwrap().to_string(),
                    n["addr"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Every pid of `sites/<site>.pids`, the file of the README's site drill
    /// (`kill -9 $(cat sillok-dev/sites/site-a.pids)`): for a test that acts on
    /// a whole site. To pick one process, use [`DevCluster::replica_pid`],
    /// [`DevCluster::node_pids`] or [`DevCluster::node_pid`].
    pub fn site_pids(&self, site: &str) -> Vec<i32> {
        std::fs::read_to_string(self.dir.path().join("sites").join(format!("{site}.pids")))
            .unwrap()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Every process of `site` with its role and id, from `sites/<site>.procs`
    /// (`replica <id> <pid>` and `node <id> <pid>` lines, written by `sillok dev`).
    pub fn site_procs(&self, site: &str) -> Vec<SiteProc> {
        let path = self.dir.path().join("sites").join(format!("{site}.procs"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let parse = || -> Option<SiteProc> {
                    let mut f = l.split_whitespace();
                    let role = match f.next()? {
                        "replica" => Role::Replica,
                        "node" => Role::Node,
                        _ => return None,
                    };
                    let p = SiteProc { role, id: f.next()?.parse().ok()?, pid: f.next()?.parse().ok()? };
                    f.next().is_none().then_some(p)
                };
                parse().unwrap_or_else(|| panic!("{}: bad line {l:?}", path.display()))
            })
            .collect()
    }

    /// The pid of `site`'s catalog replica (`sillok dev` runs one per site).
    pub fn replica_pid(&self, site: &str) -> i32 {
        let replicas: Vec<i32> =
            self.site_procs(site).into_iter().filter(|p| p.role == Role::Replica).map(|p| p.pid).collect();
        assert_eq!(replicas.len(), 1, "{site} should have one catalog replica: {replicas:?}");
        replicas[0]
    }

    /// The pids of `site`'s storage nodes, in the order of their ids.
    pub fn node_pids(&self, site: &str) -> Vec<i32> {
        let mut nodes: Vec<SiteProc> = self.site_procs(site).into_iter().filter(|p| p.role == Role::Node).collect();
        nodes.sort_by_key(|p| p.id);
        assert!(!nodes.is_empty(), "{site} has no storage nodes");
        nodes.into_iter().map(|p| p.pid).collect()
    }

    /// The pid of storage node `id` (`n<id>` in `sillok admin`), whatever its site.
    pub fn node_pid(&self, id: u64) -> i32 {
        let (_, site, _) = self
            .nodes()
            .into_iter()
            .find(|(n, _, _)| *n == id)
            .unwrap_or_else(|| panic!("no node {id} in the cluster file"));
        self.site_procs(&site)
            .into_iter()
            .find(|p| p.role == Role::Node && p.id == id)
            .unwrap_or_else(|| panic!("node {id} is not in {site}.procs"))
            .pid
    }

    /// A real site loss: `kill -9` of every process of the site.
    pub fn kill_site(&self, site: &str) {
        let pids = self.site_pids(site);
        assert!(!pids.is_empty(), "site {site} has no processes");
        for pid in pids {
            assert_eq!(signal(pid, 9), 0, "kill -9 {pid} failed");
        }
    }

    /// Every shard file on every node, with the node's site (sites added
    /// since the start included: every folder under `sites/`).
    pub fn shard_files(&self) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        let sites = std::fs::read_dir(self.dir.path().join("sites"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned());
        for site in sites {
            let site_dir = self.dir.path().join("sites").join(&site);
            walk(&site_dir, &mut |p| {
                if p.components().any(|c| c.as_os_str() == "shards") && p.is_file() {
                    out.push((site.clone(), p.to_path_buf()));
                }
            });
        }
        out.sort();
        out
    }
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, f);
        } else {
            f(&p);
        }
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// kill(2): sends `sig` to `pid` (a process of the test's own cluster).
pub fn signal(pid: i32, sig: i32) -> i32 {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe { libc_kill(pid, sig) }
}

/// `kill -9` of `pid`, returning once it has exited (gone, or a zombie
/// waiting for its parent): its files are closed and its locks released,
/// so a process started next on the same files does not find them held.
/// kill(2) only sends the signal; the exit follows a little later.
pub fn kill_and_wait_exit(pid: i32) {
    assert_eq!(signal(pid, 9), 0, "kill -9 {pid}");
    wait_until_blocking(Duration::from_secs(10), format!("process {pid} to exit after kill -9"), || {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => Some(()),
            // The state follows the command name's closing parenthesis.
            Ok(stat) => stat.rsplit_once(") ").filter(|(_, rest)| rest.starts_with('Z')).map(|_| ()),
        }
    });
}

/// What a process of a `sillok dev` site is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The site's catalog replica (`sillok catalog`).
    Replica,
    /// A storage node (`sillok node`).
    Node,
}

/// One process of a site: its role, its replica or node id, and its pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteProc {
    pub role: Role,
    pub id: u64,
    pub pid: i32,
}

/// The arguments process `pid` was started with (`/proc/<pid>/cmdline`);
/// empty if it has gone (or is a zombie).
pub fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The state letter of process `pid` in `/proc/<pid>/stat` (`R`, `S`, `D`,
/// `T` for stopped, `Z`...); `None` if it has gone.
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": comm may hold spaces and parentheses; the state follows the last ')'.
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Asserts that `pid` is a `sillok <subcommand> ...` process, e.g. that a pid
/// the test is about to stop is a storage node (`node`) or a catalog replica
/// (`catalog`).
#[track_caller]
pub fn assert_process(pid: i32, subcommand: &str) {
    let args = cmdline(pid);
    let exe_is_sillok = args.first().is_some_and(|a| Path::new(a).file_name().is_some_and(|n| n == "sillok"));
    assert!(
        exe_is_sillok && args.get(1).map(String::as_str) == Some(subcommand),
        "pid {pid} should be `sillok {subcommand} ...` but runs {args:?}"
    );
}

/// Processes of the test's cluster frozen with SIGSTOP: each is still there
/// and its sockets still accept connections, but nothing answers (a hung
/// process). Dropping this sends SIGCONT to every one (a failing test too),
/// so no cluster is left frozen.
pub struct Stopped {
    pids: Vec<i32>,
}

impl Stopped {
    /// SIGSTOPs `pids`, then waits until /proc shows every one stopped (state `T`).
    pub async fn stop(pids: &[i32]) -> Stopped {
        let mut stopped = Stopped { pids: Vec::new() };
        for &pid in pids {
            // Resumed by Drop from here on, even if a later step panics.
            stopped.pids.push(pid);
            assert_eq!(signal(pid, SIGSTOP), 0, "SIGSTOP {pid}");
        }
        for &pid in pids {
            wait_until(Duration::from_secs(10), format!("pid {pid} to show state T after SIGSTOP"), async || {
                match proc_state(pid) {
                    Some('T') => Ok(()),
                    other => Err(format!("state {other:?}")),
                }
            })
            .await;
        }
        stopped
    }

    pub fn pids(&self) -> &[i32] {
        &self.pids
    }

    /// SIGCONT, then waits until none of the processes shows state `T`.
    pub async fn resume(mut self) {
        let pids = std::mem::take(&mut self.pids);
        for &pid in &pids {
            assert_eq!(signal(pid, SIGCONT), 0, "SIGCONT {pid}");
        }
        for &pid in &pids {
            wait_until(Duration::from_secs(10), format!("pid {pid} to run again after SIGCONT"), async || {
                match proc_state(pid) {
                    Some('T') | None => Err(format!("state {:?}", proc_state(pid))),
                    Some(_) => Ok(()),
                }
            })
            .await;
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        for &pid in &self.pids {
            signal(pid, SIGCONT);
        }
    }
}

/// What a [`wait_until`] poll returns: `true`, `Some(value)` or `Ok(value)`
/// when done; `false`, `None` or `Err(what was seen)` when not yet (the last
/// `Err` goes into the panic message).
pub trait Done {
    type Output;
    fn done(self) -> Result<Self::Output, Option<String>>;
}

impl Done for bool {
    type Output = ();
    fn done(self) -> Result<(), Option<String>> {
        if self { Ok(()) } else { Err(None) }
    }
}

impl<T> Done for Option<T> {
    type Output = T;
    fn done(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: Display> Done for Result<T, E> {
    type Output = T;
    fn done(self) -> Result<T, Option<String>> {
        self.map_err(|e| Some(e.to_string()))
    }
}

/// Polls `poll` until it is done (see [`Done`]) and returns its value; panics
/// with "gave up after N s waiting for `what`" (and the last thing seen) once
/// `timeout` has passed. Pauses between polls grow from 20 ms to 250 ms.
///
/// ```ignore
/// let epoch = wait_until(Duration::from_secs(30), "node 1 to answer", async || client.health(&addr).await).await;
/// ```
pub async fn wait_until<D: Done>(timeout: Duration, what: impl Display, mut poll: impl AsyncFnMut() -> D) -> D::Output {
    let mut waiting = Waiting::new(timeout);
    loop {
        match poll().await.done() {
            Ok(v) => return v,
            Err(seen) => tokio::time::sleep(waiting.pause(&what, seen)).await,
        }
    }
}

/// [`wait_until`] for code that is not async (the harness's start-up).
pub fn wait_until_blocking<D: Done>(timeout: Duration, what: impl Display, mut poll: impl FnMut() -> D) -> D::Output {
    let mut waiting = Waiting::new(timeout);
    loop {
        match poll().done() {
            Ok(v) => return v,
            Err(seen) => std::thread::sleep(waiting.pause(&what, seen)),
        }
    }
}

/// A `wait_until` description worked out only if it is shown (e.g. one that
/// includes a log as it is when the wait gives up).
pub fn lazily<F: Fn() -> String>(f: F) -> impl Display {
    struct Lazily<F>(F);
    impl<F: Fn() -> String> Display for Lazily<F> {
        fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            out.write_str(&(self.0)())
        }
    }
    Lazily(f)
}

/// The deadline and the growing pause of one wait.
struct Waiting {
    started: Instant,
    timeout: Duration,
    pause: Duration,
}

impl Waiting {
    fn new(timeout: Duration) -> Self {
        Waiting { started: Instant::now(), timeout, pause: Duration::from_millis(20) }
    }

    /// The pause before the next poll; panics once the timeout has passed.
    fn pause(&mut self, what: &dyn Display, seen: Option<String>) -> Duration {
        let waited = self.started.elapsed();
        if waited >= self.timeout {
            let seen = seen.map(|s| format!("; last seen: {s}")).unwrap_or_default();
            panic!("gave up after {:.1} s waiting for {what}{seen}", waited.as_secs_f64());
        }
        let pause = self.pause.min(self.timeout - waited);
        self.pause = (self.pause * 2).min(Duration::from_millis(250));
        pause
    }
}

/// Waits (up to 30 s) until nothing listens on `addr`, so a process started
/// on it can bind.
#[track_caller]
pub fn wait_port_free(addr: &str) {
    let started = Instant::now();
    while std::net::TcpListener::bind(addr).is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "{addr} is still taken 30 s after its process was killed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A gateway process of its own (besides the one `sillok dev` runs), on a
/// free port, with its own state directory; killed when dropped.
pub struct ExtraGateway {
    pub child: Child,
    pub endpoint: String,
    pub log_path: PathBuf,
    region: String,
    keys: (String, String),
}

impl ExtraGateway {
    pub fn client(&self) -> aws_sdk_s3::Client {
        s3_client(&self.endpoint, &self.region, &self.keys.0, &self.keys.1)
    }

    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// `kill -9`, and waits for the process to be gone.
    pub fn kill(&mut self) {
        assert_eq!(signal(self.pid(), 9), 0, "kill -9 of the extra gateway");
        let _ = self.child.wait();
    }
}

impl Drop for ExtraGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `sillok ARGS` with its output (appended) in `log` and `SILLOK_LOG=info`.
pub fn spawn_sillok(args: &[OsString], log: &Path) -> Child {
    spawn_sillok_logging(args, log, "info")
}

/// [`spawn_sillok`] with `SILLOK_LOG=filter`.
pub fn spawn_sillok_logging(args: &[OsString], log: &Path, filter: &str) -> Child {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_sillok"))
        .args(args)
        .env("SILLOK_LOG", filter)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start sillok {args:?}: {e}"))
}

/// A free loopback port, reserved machine-wide (`src/dev_ports.rs`, shared with `sillok dev`).
pub fn free_port() -> u16 {
    ports::reserve().expect("a free port")
}

/// The settings every test's S3 client shares: path style, the test's key.
fn s3_config(endpoint: &str, region: &str, access_key: &str, secret_key: &str) -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(access_key, secret_key, None, None, "sillok-test"))
        .force_path_style(true)
}

pub fn s3_client(endpoint: &str, region: &str, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(s3_config(endpoint, region, access_key, secret_key).build())
}

/// An aws-sdk-s3 client whose https client (the SDK's default: rustls on
/// aws-lc-rs) trusts only the CAs in the PEM file `ca`.
pub fn s3_client_trusting(
    endpoint: &str,
    region: &str,
    access_key: &str,
    secret_key: &str,
    ca: &Path,
) -> aws_sdk_s3::Client {
    use aws_smithy_http_client::tls;
    let trust = tls::TrustStore::empty().with_pem_certificate(std::fs::read(ca).expect("the CA bundle"));
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc))
        .tls_context(tls::TlsContext::builder().with_trust_store(trust).build().unwrap())
        .build_https();
    aws_sdk_s3::Client::from_conf(s3_config(endpoint, region, access_key, secret_key).http_client(http).build())
}

/// A new TLS connection to a `--tls` cluster's S3 endpoint, trusting only
/// `ca` (a fresh client configuration: no session is resumed, so the
/// handshake shows the certificate the gateway serves now). The error is
/// the handshake's.
pub async fn tls_connect(
    authority: &str,
    ca: &Path,
) -> Result<sillok_tls::tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let config = sillok_tls::client_config(ca, None).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(authority).await.map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h).trim_matches(|c| c == '[' || c == ']');
    let name = sillok_tls::rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    sillok_tls::tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| e.to_string())
}

/// The end-entity certificate (DER) a new TLS connection to the cluster's
/// S3 endpoint is shown.
pub async fn served_certificate(cluster: &DevCluster) -> Vec<u8> {
    let tls = tls_connect(&cluster.authority(), &cluster.ca_bundle().expect("a --tls cluster")).await.unwrap();
    tls.get_ref().1.peer_certificates().expect("a server certificate")[0].to_vec()
}

/// One HTTP/1.1 request on a new connection to the cluster's S3 endpoint
/// (https for a `--tls` cluster, trusting its CA): (status, headers, body).
pub async fn send_request(
    cluster: &DevCluster,
    req: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> (u16, http::HeaderMap, Vec<u8>) {
    use http_body_util::BodyExt;
    let resp = match cluster.ca_bundle() {
        Some(ca) => {
            let tls = tls_connect(&cluster.authority(), &ca).await.unwrap();
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
            tokio::spawn(conn);
            sender.send_request(req).await.unwrap()
        }
        None => {
            let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<bytes::Bytes>>();
            http.request(req).await.unwrap()
        }
    };
    let st = resp.status().as_u16();
    let h = resp.headers().clone();
    (st, h, resp.into_body().collect().await.unwrap().to_bytes().to_vec())
}

impl DevCluster {
    /// Starts another `sillok gateway` for this cluster. `state` names its
    /// state directory under the cluster's (reuse a name to restart one).
    pub fn start_gateway(&self, state: &str, extra: &[&str]) -> ExtraGateway {
        let n = std::fs::read_dir(self.dir.path().join("logs")).map(|d| d.count()).unwrap_or(0);
        let log_path = self.dir.path().join("logs").join(format!("extra-{state}-{n}.log"));
        let addr_file = self.dir.path().join(format!("extra-{state}-{n}.addr"));
        let mut args: Vec<OsString> = vec![
            "gateway".into(),
            "--cluster".into(),
            self.dir.path().join("cluster.json").into(),
            "--data".into(),
            self.dir.path().join(state).into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--addr-file".into(),
            addr_file.clone().into(),
        ];
        args.extend(extra.iter().map(OsString::from));
        let child = spawn_sillok(&args, &log_path);
        let mut g = ExtraGateway {
            child,
            endpoint: String::new(),
            log_path,
            region: self.region(),
            keys: (self.env["AWS_ACCESS_KEY_ID"].clone(), self.env["AWS_SECRET_ACCESS_KEY"].clone()),
        };
        // The gateway writes the address it bound once it listens.
        let log_path = &g.log_path;
        let addr = wait_until_blocking(
            Duration::from_secs(60),
            lazily(|| format!("the extra gateway to listen; its log:\n{}", read_log(log_path))),
            || {
                if let Ok(Some(status)) = g.child.try_wait() {
                    panic!("the extra gateway exited ({status}):\n{}", read_log(log_path));
                }
                let text = std::fs::read_to_string(&addr_file).unwrap_or_default();
                Some(text.trim().to_string()).filter(|a| !a.is_empty())
            },
        );
        g.endpoint = format!("http://{addr}");
        g
    }

    /// The pid of the dev cluster's own gateway (`gateway.pid`).
    pub fn gateway_pid(&self) -> i32 {
        std::fs::read_to_string(self.dir.path().join("gateway.pid")).unwrap().trim().parse().unwrap()
    }

    /// `sillok admin ARGS` with this cluster's admin key; returns the output.
    pub fn admin(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sillok"));
        cmd.arg("admin")
            .args(args)
            .env("SILLOK_CATALOG", &self.env["SILLOK_CATALOG"])
            .env("SILLOK_ADMIN_KEY_ID", &self.env["SILLOK_ADMIN_KEY_ID"])
            .env("SILLOK_ADMIN_SECRET", &self.env["SILLOK_ADMIN_SECRET"]);
        // The admin certificate, or plain HTTP for a cluster started so.
        for var in ["SILLOK_INTERNAL_TLS", "SILLOK_INSECURE_INTERNAL_HTTP"] {
            if let Some(v) = self.env.get(var) {
                cmd.env(var, v);
            }
        }
        cmd.output().unwrap()
    }

    /// The catalog leader's site, from `sillok admin status --json` (waits
    /// up to 30 s for a leader).
    pub async fn leader_site(&self) -> String {
        wait_until(Duration::from_secs(30), "a catalog leader", async || {
            let out = self.admin(&["status", "--json"]);
            if !out.status.success() {
                return None;
            }
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            v["leader_site"].as_str().map(str::to_string)
        })
        .await
    }

    /// Like [`DevCluster::admin`], but the command must succeed; returns stdout.
    #[track_caller]
    pub fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.admin(args);
        assert!(out.status.success(), "sillok admin {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        signal(self.child.id() as i32, 15);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deterministic test bytes: a different stream for every seed.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

pub async fn put(c: &aws_sdk_s3::Client, bucket: &str, key: &str, body: Vec<u8>) {
    try_put(c, bucket, key, body).await.unwrap_or_else(|e| panic!("PUT {bucket}/{key}: {e}"));
}

/// A PUT whose failure is an answer, not a panic.
pub async fn try_put(c: &aws_sdk_s3::Client, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), String> {
    c.put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into())
        .send()
        .await
        .map(|_| ())
        .map_err(|e| aws_sdk_s3::error::DisplayErrorContext(&e).to_string())
}

/// The keys of the first page (up to 1,000) of a bucket's listing.
pub async fn list_keys(c: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    c.list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .unwrap_or_else(|e| panic!("LIST {bucket}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)))
        .contents()
        .iter()
        .map(|o| o.key().unwrap_or_default().to_string())
        .collect()
}

pub async fn get(c: &aws_sdk_s3::Client, bucket: &str, key: &str, range: Option<String>) -> Vec<u8> {
    let out = c
        .get_object()
        .bucket(bucket)
        .key(key)
        .set_range(range.clone())
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {bucket}/{key} {range:?}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
    out.body.collect().await.expect("read body").into_bytes().to_vec()
}

/// Compares without dumping megabytes on failure.
#[track_caller]
pub fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length differs");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first difference at byte {i}");
    }
}

/// The harness's own checks (no cluster needed).
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_until_returns_what_the_poll_found() {
        let mut polls = 0;
        let found = wait_until(Duration::from_secs(5), "the third poll", async || {
            polls += 1;
            (polls == 3).then_some(polls * 10)
        })
        .await;
        assert_eq!(found, 30);
        let () = wait_until(Duration::from_secs(5), "true", async || true).await;
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for the impossible; last seen: still 7")]
    async fn wait_until_gives_up_with_what_it_waited_for_and_last_saw() {
        wait_until(Duration::from_millis(200), "the impossible", async || Err::<(), _>("still 7")).await;
    }

    #[test]
    fn stopped_processes_are_resumed_when_the_test_panics() {
        let mut child = Command::new("sleep").arg("60").spawn().expect("sleep");
        let pid = child.id() as i32;
        let panicked = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let _hung = Stopped::stop(&[pid]).await;
                assert_eq!(proc_state(pid), Some('T'));
                panic!("a test fails while {pid} is stopped");
            })
        })
        .join()
        .is_err();
        assert!(panicked);
        let state = wait_until_blocking(Duration::from_secs(5), "sleep to run again", || {
            Some(proc_state(pid)).filter(|s| *s != Some('T'))
        });
        let _ = child.kill();
        let _ = child.wait();
        assert!(matches!(state, Some('S' | 'R' | 'D')), "state {state:?}");
    }
}

/// [`http_text`] for code that is not async (its own thread and runtime,
/// so it may be called from inside an async test too).
pub fn http_text_blocking(url: &str) -> String {
    let url = url.to_string();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(http_text(&url))
    })
    .join()
    .unwrap_or_default()
}

impl DevCluster {
    /// The catalog's map (through `sillok admin catalog backup`), once the
    /// dev gateway follows its epoch (its metrics page says so).
    pub fn followed_map(&self) -> sillok_placement::PlacementMap {
        let out = self.dir.path().join("map-backup.json");
        // A backup never overwrites another.
        let _ = std::fs::remove_file(&out);
        self.admin_ok(&["catalog", "backup", "--out", out.to_str().unwrap()]);
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        let map: sillok_placement::PlacementMap = serde_json::from_value(v["catalog"]["map"].clone()).unwrap();
        let endpoint = self.endpoint();
        wait_until_blocking(Duration::from_secs(30), format!("the gateway to follow epoch {}", map.epoch), || {
            let text = http_text_blocking(&format!("{endpoint}/_sillok/metrics"));
            let epoch = text.lines().find_map(|l| l.strip_prefix("sillok_map_epoch ")).map(|v| v.trim().to_string());
            if epoch.as_deref().and_then(|v| v.parse::<u64>().ok()).is_some_and(|e| e >= map.epoch) {
                Ok(())
            } else {
                Err(format!("the gateway at {epoch:?}"))
            }
        });
        map
    }
}

/// The body of a plain (unsigned) HTTP GET, as text.
pub async fn http_text(url: &str) -> String {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let resp = client.get(url.parse().unwrap()).await.unwrap();
    String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// `sillok cert issue`: a loopback identity `tls/<name>` of `role` from the
/// CA that `sillok init` or `sillok dev` made in `dir/ca`.
pub fn issue_cert(dir: &Path, role: &str, name: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_sillok"))
        .args(["cert", "issue", "--role", role, "--host", "127.0.0.1", "--ca"])
        .arg(dir.join("ca"))
        .arg("--out")
        .arg(dir.join("tls").join(name))
        .output()
        .unwrap();
    assert!(out.status.success(), "sillok cert issue: {}", String::from_utf8_lossy(&out.stderr));
}
