//! Real S3 clients against `sillok dev`: the aws cli, boto3, rclone, s3cmd and
//! curl with presigned URLs. Each client has a script in `tests/clients/` made
//! of named checks that compare the bytes and fields coming back with what was
//! sent; each test here starts its own cluster, runs one script against it
//! with the environment of the cluster's `cluster.env` and fails, with the
//! script's output and the gateway's log, if any check failed.
//!
//! The clients are installed by `.ci/run`, which sets `SILLOK_REQUIRE_CLIENTS=1`:
//! then a missing client fails its test. Without it (a developer's machine), a
//! missing client prints `SKIPPED: <client> not installed` to stderr and the
//! test passes.
//!
//! `SILLOK_CLIENT_LOGS=<dir>` keeps each client's output and gateway log there.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A command that must exit 0 for a client to count as installed.
pub(crate) struct Probe {
    what: &'static str,
    argv: &'static [&'static str],
}

pub(crate) const PYTHON: Probe = Probe { what: "python3", argv: &["python3", "--version"] };
pub(crate) const JQ: Probe = Probe { what: "jq", argv: &["jq", "--version"] };
pub(crate) const AWS: Probe = Probe { what: "aws (pip install awscli)", argv: &["aws", "--version"] };
pub(crate) const BOTO3: Probe = Probe {
    what: "boto3 and requests for python3 (pip install boto3 requests)",
    argv: &["python3", "-c", "import boto3, requests"],
};
const RCLONE: Probe = Probe { what: "rclone (apt-get install rclone)", argv: &["rclone", "version"] };
const S3CMD: Probe = Probe { what: "s3cmd (pip install s3cmd)", argv: &["s3cmd", "--version"] };
const CURL: Probe = Probe { what: "curl", argv: &["curl", "--version"] };

pub(crate) struct Client {
    pub(crate) name: &'static str,
    pub(crate) needs: &'static [Probe],
    /// Interpreter and its arguments; the script's path follows.
    pub(crate) run_with: &'static [&'static str],
    pub(crate) script: &'static str,
    pub(crate) timeout: Duration,
}

/// The aws cli's high-level `aws s3` commands (cp, sync, ls, rm, 100 MiB multipart).
#[test]
fn aws_cli_s3() {
    run_client(&Client {
        name: "aws-cli-s3",
        needs: &[AWS, JQ, PYTHON],
        run_with: &["bash"],
        script: "aws_cli_s3.sh",
        timeout: Duration::from_secs(600),
    });
}

/// The aws cli's `aws s3api` calls (its own test: the two halves run in parallel).
#[test]
fn aws_cli_s3api() {
    run_client(&Client {
        name: "aws-cli-s3api",
        needs: &[AWS, JQ, PYTHON],
        run_with: &["bash"],
        script: "aws_cli_s3api.sh",
        timeout: Duration::from_secs(600),
    });
}

#[test]
fn boto3() {
    run_client(&Client {
        name: "boto3",
        needs: &[BOTO3],
        run_with: &["python3", "-u"],
        script: "boto3_client.py",
        timeout: Duration::from_secs(600),
    });
}

#[test]
fn rclone() {
    run_client(&Client {
        name: "rclone",
        needs: &[RCLONE, JQ, PYTHON],
        run_with: &["bash"],
        script: "rclone.sh",
        timeout: Duration::from_secs(600),
    });
}

#[test]
fn s3cmd() {
    run_client(&Client {
        name: "s3cmd",
        needs: &[S3CMD, PYTHON],
        run_with: &["bash"],
        script: "s3cmd.sh",
        timeout: Duration::from_secs(600),
    });
}

#[test]
fn curl_presigned() {
    run_client(&Client {
        name: "curl-presigned",
        needs: &[CURL, AWS, BOTO3],
        run_with: &["bash"],
        script: "curl_presigned.sh",
        timeout: Duration::from_secs(300),
    });
}

fn installed(p: &Probe) -> bool {
    Command::new(p.argv[0])
        .args(&p.argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn clients_required() -> bool {
    std::env::var("SILLOK_REQUIRE_CLIENTS").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn run_client(c: &Client) {
    if !ready_to_run(c) {
        return;
    }
    run_client_on(c, &DevCluster::start());
}

/// Whether `c`'s programs are installed; if not, a failure under
/// `SILLOK_REQUIRE_CLIENTS`, else a loud skip and `false`.
pub(crate) fn ready_to_run(c: &Client) -> bool {
    let missing: Vec<&str> = c.needs.iter().filter(|p| !installed(p)).map(|p| p.what).collect();
    if !missing.is_empty() {
        assert!(
            !clients_required(),
            "SILLOK_REQUIRE_CLIENTS is set, but {} is missing: {} (.ci/run installs them)",
            c.name,
            missing.join(", ")
        );
        // Straight to stderr, past the test harness's capture: a skip must show.
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!! SKIPPED: {} not installed (missing: {}); set SILLOK_REQUIRE_CLIENTS=1 to fail instead !!!!!\n",
            c.name,
            missing.join(", ")
        );
        return false;
    }
    true
}

/// Runs `c`'s script against `cluster` (see the module's comment); panics
/// with its output and the gateway's log if a check failed.
pub(crate) fn run_client_on(c: &Client, cluster: &DevCluster) {
    let work = tempfile::Builder::new().prefix("sillok-client-").tempdir().expect("tempdir");
    let output_path = work.path().join("output.log");
    let output = std::fs::File::create(&output_path).expect("output file");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("clients").join(c.script);

    let mut cmd = Command::new(c.run_with[0]);
    cmd.args(&c.run_with[1..]).arg(&script);
    // Only this cluster's settings: none of the caller's AWS_* or RCLONE_*.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("AWS_") || k.starts_with("RCLONE_") {
            cmd.env_remove(k.as_ref());
        }
    }
    cmd.envs(&cluster.env)
        .env("SILLOK_CLIENT_WORK", work.path().join("data"))
        .env("AWS_CONFIG_FILE", work.path().join("no-aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", work.path().join("no-aws-credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(output.try_clone().unwrap())
        .stderr(output)
        // Its own process group, so that a timeout ends the script and all it started.
        .process_group(0);

    let started = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", c.run_with[0]));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the client script") {
            break Some(status);
        }
        if started.elapsed() > c.timeout {
            signal(-(child.id() as i32), 9);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = started.elapsed().as_secs();
    let out = String::from_utf8_lossy(&std::fs::read(&output_path).unwrap_or_default()).into_owned();
    let gateway_log_path = cluster.dir.path().join("logs").join("gateway.log");
    let gateway_log = std::fs::read_to_string(&gateway_log_path).unwrap_or_default();
    keep_logs(c.name, &out, &gateway_log);
    let table =
        out.lines().filter(|l| l.starts_with("  PASS") || l.starts_with("  FAIL")).collect::<Vec<_>>().join("\n");

    match status {
        Some(s) if s.success() => {
            let _ = writeln!(std::io::stderr(), "{}: every check passed in {took} s\n{table}", c.name);
        }
        _ => {
            let why = match status {
                Some(s) => format!("exited with {s}"),
                None => format!("timed out after {} s", c.timeout.as_secs()),
            };
            panic!(
                "{} {why} after {took} s.\n\n----- script output ({}) -----\n{out}\n----- last lines of the gateway log -----\n{}\n----- checks -----\n{table}\n",
                c.name,
                script.display(),
                tail(&gateway_log, 80),
            );
        }
    }
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn keep_logs(name: &str, output: &str, gateway_log: &str) {
    let Some(dir) = std::env::var_os("SILLOK_CLIENT_LOGS").map(PathBuf::from) else { return };
    std::fs::create_dir_all(&dir).expect("SILLOK_CLIENT_LOGS folder");
    std::fs::write(dir.join(format!("{name}.output.log")), output).expect("write the client output");
    std::fs::write(dir.join(format!("{name}.gateway.log")), gateway_log).expect("write the gateway log");
}
