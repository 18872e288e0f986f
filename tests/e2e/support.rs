//! Test harness: a real `sillok dev` cluster (the same code path as the README's
//! first command) in a temporary directory, plus S3 clients that talk to it.
//! Dropping a `DevCluster` sends SIGTERM to `sillok dev`, which stops every
//! process it started (and they die with it anyway: PR_SET_PDEATHSIG).

#![allow(dead_code)]

/// Machine-wide loopback port reservations: dev-only code that lives with
/// `sillok dev` (src/dev_ports.rs) and is compiled into this target as is.
#[path = "../../src/dev_ports.rs"]
mod ports;

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_sdk_s3::config::{BehaviorVersion, Region};

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
        let dir = tempfile::Builder::new().prefix("sillok-test-").tempdir().expect("tempdir");
        let mut args: Vec<OsString> =
            vec!["dev".into(), "--data".into(), dir.path().into(), "--port".into(), "0".into()];
        args.extend(extra.iter().map(OsString::from));
        let child = spawn_sillok(&args, &dir.path().join("dev.log"));
        let mut c = DevCluster { dir, child, env: HashMap::new() };
        let env_path = c.dir.path().join("cluster.env");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !env_path.exists() {
            if let Ok(Some(status)) = c.child.try_wait() {
                panic!("sillok dev exited ({status}) before the cluster was up:\n{}", c.log());
            }
            assert!(Instant::now() < deadline, "cluster not up after 120 s:\n{}", c.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        for line in std::fs::read_to_string(&env_path).unwrap().lines() {
            if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
                c.env.insert(k.to_string(), v.to_string());
            }
        }
        c
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dev.log")).unwrap_or_default()
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

    pub fn client_with(&self, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
        s3_client(&self.endpoint(), &self.region(), access_key, secret_key)
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

    pub fn site_pids(&self, site: &str) -> Vec<i32> {
        std::fs::read_to_string(self.dir.path().join("sites").join(format!("{site}.pids")))
            .unwrap()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// A real site loss: `kill -9` of every process of the site.
    pub fn kill_site(&self, site: &str) {
        let pids = self.site_pids(site);
        assert!(!pids.is_empty(), "site {site} has no processes");
        for pid in pids {
            assert_eq!(signal(pid, 9), 0, "kill -9 {pid} failed");
        }
    }

    /// Every shard file on every node, with the node's site.
    pub fn shard_files(&self) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        for site in self.sites() {
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
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
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
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_sillok"))
        .args(args)
        .env("SILLOK_LOG", "info")
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

pub fn s3_client(endpoint: &str, region: &str, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(access_key, secret_key, None, None, "sillok-test"))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
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
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            if let Ok(text) = std::fs::read_to_string(&addr_file)
                && !text.trim().is_empty()
            {
                break text.trim().to_string();
            }
            if let Ok(Some(status)) = g.child.try_wait() {
                panic!("the extra gateway exited ({status}):\n{}", g.log());
            }
            assert!(Instant::now() < deadline, "extra gateway not listening after 60 s:\n{}", g.log());
            std::thread::sleep(Duration::from_millis(50));
        };
        g.endpoint = format!("http://{addr}");
        g
    }

    /// The pid of the dev cluster's own gateway.
    pub fn gateway_pid(&self) -> i32 {
        std::fs::read_to_string(self.dir.path().join("gateway.pid")).unwrap().trim().parse().unwrap()
    }

    /// `sillok admin ARGS` with this cluster's admin key; returns the output.
    pub fn admin(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_sillok"))
            .arg("admin")
            .args(args)
            .env("SILLOK_CATALOG", &self.env["SILLOK_CATALOG"])
            .env("SILLOK_ADMIN_KEY_ID", &self.env["SILLOK_ADMIN_KEY_ID"])
            .env("SILLOK_ADMIN_SECRET", &self.env["SILLOK_ADMIN_SECRET"])
            .output()
            .unwrap()
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
    c.put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into())
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT {bucket}/{key}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
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
