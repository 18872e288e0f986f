//! The ops listeners (`--ops-listen`, written by `sillok dev` to `ops.txt`):
//! `/health`, `/ready` and `/metrics` on every process, the gateway's
//! readiness following node reachability, and JSON logs whose request lines
//! carry the S3 request id, and no secret in any log even at `trace`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

use crate::support::*;

/// One line of `ops.txt`: role, id, address.
struct OpsEntry {
    role: String,
    id: String,
    addr: String,
}

fn ops_entries(c: &DevCluster) -> Vec<OpsEntry> {
    let text = std::fs::read_to_string(c.dir.path().join("ops.txt")).expect("ops.txt");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 3, "bad ops.txt line {l:?}");
            OpsEntry { role: f[0].into(), id: f[1].into(), addr: f[2].into() }
        })
        .collect()
}

/// GET `http://addr/path` with hyper: status and body.
async fn get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: http::Uri = format!("http://{addr}{path}").parse().map_err(|e| format!("{e}"))?;
    let resp = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
        .await
        .map_err(|_| format!("GET {addr}{path}: no answer in 10 s"))?
        .map_err(|e| format!("GET {addr}{path}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| format!("{e}"))?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A parsed metrics page: family name → type, and every sample
/// (`name{labels}` → value). Panics on anything that is not Prometheus /
/// OpenMetrics text.
struct Page {
    families: BTreeMap<String, String>,
    samples: BTreeMap<String, f64>,
}

fn parse_page(page: &str) -> Page {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    let mut families = BTreeMap::new();
    let mut samples = BTreeMap::new();
    let mut eof = false;
    for line in page.lines() {
        assert!(!eof, "a line after # EOF: {line:?}");
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut f = rest.splitn(3, ' ');
            let (kind, name) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
            assert!(matches!(kind, "TYPE" | "HELP" | "UNIT"), "bad comment {line:?}");
            assert!(valid_name(name), "bad family name in {line:?}");
            if kind == "TYPE" {
                let t = f.next().unwrap_or("");
                assert!(
                    matches!(t, "counter" | "gauge" | "histogram" | "summary" | "info" | "stateset" | "unknown"),
                    "bad type in {line:?}"
                );
                assert!(families.insert(name.to_string(), t.to_string()).is_none(), "{name} typed twice");
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(valid_name(name), "bad metric name in {line:?}");
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "bad labels in {line:?}");
            for pair in labels[1..labels.len() - 1].split("\",").filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("bad label {pair:?} in {line:?}"));
                assert!(valid_name(k), "bad label name in {line:?}");
                assert!(!v.trim_end_matches('"').contains('"'), "bad label value in {line:?}");
            }
        }
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        samples.insert(series.to_string(), v);
    }
    assert!(eof, "the page does not end with # EOF");
    Page { families, samples }
}

impl Page {
    fn has(&self, families: &[&str], what: &str) {
        for f in families {
            assert!(self.families.contains_key(*f), "{what}'s page has no {f}; it has {:?}", self.families.keys());
        }
    }
    fn value(&self, series: &str) -> Option<f64> {
        self.samples.get(series).copied()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_serves_health_readiness_and_metrics_and_the_gateway_turns_unready_without_nodes() {
    let c = DevCluster::start();
    let entries = ops_entries(&c);
    let roles: Vec<&str> = entries.iter().map(|e| e.role.as_str()).collect();
    assert_eq!(roles.iter().filter(|r| **r == "replica").count(), 3, "{roles:?}");
    assert_eq!(roles.iter().filter(|r| **r == "node").count(), c.nodes().len(), "{roles:?}");
    assert_eq!(roles.iter().filter(|r| **r == "gateway").count(), 1, "{roles:?}");
    let gateway = entries.iter().find(|e| e.role == "gateway").unwrap().addr.clone();
    assert_eq!(c.env.get("SILLOK_GATEWAY_OPS").map(String::as_str), Some(format!("http://{gateway}").as_str()));

    // A few S3 requests, one of them for a key that does not exist.
    let s3 = c.client();
    s3.create_bucket().bucket("ops").send().await.unwrap();
    s3.put_object().bucket("ops").key("k").body(pattern(200_000, 1).into()).send().await.unwrap();
    let got = s3.get_object().bucket("ops").key("k").send().await.unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes().len(), 200_000);
    let missing = s3.get_object().bucket("ops").key("no-such-key").send().await.unwrap_err();
    assert!(missing.into_service_error().is_no_such_key());

    for e in &entries {
        let what = format!("{} {} at {}", e.role, e.id, e.addr);
        assert_eq!(get(&e.addr, "/health").await.unwrap(), (200, "ok\n".to_string()), "{what}");
        wait_until(Duration::from_secs(30), format!("{what} to be ready"), async || {
            match get(&e.addr, "/ready").await? {
                (200, _) => Ok(()),
                (s, body) => Err(format!("{s} {body}")),
            }
        })
        .await;
        let (status, body) = get(&e.addr, "/metrics").await.unwrap();
        assert_eq!(status, 200, "{what}");
        let page = parse_page(&body);
        match e.role.as_str() {
            "gateway" => {
                page.has(
                    &[
                        "sillok_s3_request_duration_seconds",
                        "sillok_s3_requests",
                        "sillok_s3_errors",
                        "sillok_s3_bytes_in",
                        "sillok_s3_bytes_out",
                        "sillok_map_epoch",
                        "sillok_catalog_applied_index",
                        "sillok_gateway_degraded_reads",
                        "sillok_gateway_node_deadlines",
                        "sillok_gateway_suspect_nodes",
                        "sillok_gateway_ready",
                        "sillok_lifecycle_runs",
                    ],
                    &what,
                );
                assert_eq!(page.families["sillok_s3_request_duration_seconds"], "histogram");
                let puts = page.value("sillok_s3_request_duration_seconds_count{op=\"PutObject\"}");
                assert!(puts.is_some_and(|n| n >= 1.0), "{what}: no PutObject latency sample:\n{body}");
                let inf = page
                    .value("sillok_s3_request_duration_seconds_bucket{le=\"+Inf\",op=\"GetObject\"}")
                    .or_else(|| page.value("sillok_s3_request_duration_seconds_bucket{op=\"GetObject\",le=\"+Inf\"}"));
                assert!(inf.is_some_and(|n| n >= 2.0), "{what}: GetObject latency buckets:\n{body}");
                let nosuchkey = page.value("sillok_s3_errors_total{code=\"NoSuchKey\"}");
                assert!(nosuchkey.is_some_and(|n| n >= 1.0), "{what}: no NoSuchKey count:\n{body}");
                assert!(page.value("sillok_s3_bytes_in_total").is_some_and(|n| n >= 200_000.0), "{body}");
                assert_eq!(page.value("sillok_gateway_ready"), Some(1.0), "{body}");
            }
            "node" => {
                page.has(
                    &[
                        "sillok_node_map_epoch",
                        "sillok_node_shards",
                        "sillok_node_shard_bytes",
                        "sillok_node_disk_total_bytes",
                        "sillok_node_disk_free_bytes",
                        "sillok_node_request_duration_seconds",
                        "sillok_node_caught_up",
                        "sillok_node_ready",
                        "sillok_rebuild_shards_left",
                        "sillok_rebuild_bytes_written",
                        "sillok_rebuild_throttle_mib_per_s",
                    ],
                    &what,
                );
                assert!(page.value("sillok_node_disk_total_bytes").is_some_and(|n| n > 0.0), "{body}");
                assert_eq!(page.families["sillok_node_request_duration_seconds"], "histogram");
            }
            "replica" => {
                page.has(
                    &[
                        "sillok_catalog_term",
                        "sillok_catalog_is_leader",
                        "sillok_catalog_leader_id",
                        "sillok_catalog_commit_index",
                        "sillok_catalog_applied_index",
                        "sillok_catalog_commit_lag",
                        "sillok_catalog_ready",
                        "sillok_catalog_nodes",
                    ],
                    &what,
                );
                assert!(page.value("sillok_catalog_term").is_some_and(|t| t >= 1.0), "{body}");
            }
            other => panic!("unknown role {other} in ops.txt"),
        }
    }
    assert_eq!(get(&gateway, "/nothing").await.unwrap().0, 404);

    // The storage nodes of two of the three sites die (their catalog
    // replicas stay): the gateway reaches too few nodes, in one site only.
    let sites = c.sites();
    assert_eq!(sites.len(), 3);
    let mut killed = BTreeSet::new();
    for site in &sites[..2] {
        for pid in c.node_pids(site) {
            assert_eq!(signal(pid, 9), 0, "kill -9 {pid}");
            killed.insert(pid);
        }
    }
    let reason = wait_until(Duration::from_secs(60), "the gateway's /ready to answer 503", async || {
        match get(&gateway, "/ready").await? {
            (503, body) => Ok(body),
            (s, body) => Err(format!("{s} {body}")),
        }
    })
    .await;
    assert!(reason.starts_with("not ready: "), "{reason:?}");
    assert!(reason.contains("reachable"), "{reason:?}");
    assert_eq!(reason.trim_end().lines().count(), 1, "{reason:?}");
    // The gateway process itself is still healthy, and says it is not ready.
    assert_eq!(get(&gateway, "/health").await.unwrap().0, 200);
    let page = parse_page(&get(&gateway, "/metrics").await.unwrap().1);
    assert_eq!(page.value("sillok_gateway_ready"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_id_on_every_line_of_a_request() {
    let c = DevCluster::start_with_log(&["--log-format", "json"], "info,sillok_gateway=debug");
    let s3 = c.client();
    s3.create_bucket().bucket("logs").send().await.unwrap();
    let err = s3.get_object().bucket("logs").key("missing").send().await.unwrap_err();
    let raw = err.raw_response().expect("a response");
    let id = raw.headers().get("x-amz-request-id").expect("a request id").to_string();
    assert!(!id.is_empty());

    let log_path = c.dir.path().join("logs").join("gateway.log");
    let lines = wait_until(Duration::from_secs(10), "the request's log line", async || {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let mine: Vec<serde_json::Value> = text
            .lines()
            .filter(|l| l.contains(&id))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        if mine.is_empty() { None } else { Some((text, mine)) }
    })
    .await;
    let (text, mine) = lines;
    // Every line of the gateway's log is a JSON object.
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v.is_object(), "{l}");
    }
    // The request's lines name it in their span, with the operation.
    for v in &mine {
        assert_eq!(v["span"]["request_id"], id.as_str(), "{v}");
        assert_eq!(v["span"]["method"], "GET", "{v}");
    }
    assert!(
        mine.iter().any(|v| v["fields"]["message"] == "S3 request answered" && v["span"]["op"] == "GetObject"),
        "{mine:?}"
    );
    // Other processes log JSON too.
    let node_log = c.node_log(c.nodes()[0].0);
    let first = node_log.lines().find(|l| !l.trim().is_empty()).expect("a node log line");
    assert!(serde_json::from_str::<serde_json::Value>(first).is_ok_and(|v| v.is_object()), "{first}");
}

/// Every process logs at `trace` (ours and every library's) while S3 keys
/// are made, followed, used and refused: no secret is in any process's log.
/// (`sillok dev`'s own banner on its stdout prints the first key's secret on
/// purpose, for the developer at the terminal; it is not a process log.)
#[tokio::test(flavor = "multi_thread")]
async fn no_secret_is_in_any_process_log_even_at_trace() {
    let c = DevCluster::start_with_log(&[], "trace");
    let s3 = c.client();
    s3.create_bucket().bucket("audit").send().await.unwrap();
    put(&s3, "audit", "small", pattern(1000, 1)).await;
    put(&s3, "audit", "striped", pattern(300_000, 2)).await;
    assert_same(&crate::support::get(&s3, "audit", "striped", None).await, &pattern(300_000, 2), "GET at trace");
    // A key made after the gateway started reaches it through the change feed.
    let made: serde_json::Value = serde_json::from_str(&c.admin_ok(&["key", "create", "--json"])).unwrap();
    let new_secret = made["secret_access_key"].as_str().unwrap().to_string();
    let new_key = c.client_with(made["access_key_id"].as_str().unwrap(), &new_secret);
    wait_until(Duration::from_secs(20), "the new key to work", async || new_key.list_buckets().send().await.is_ok())
        .await;
    // A refused signature makes the gateway explain why.
    let wrong = c.client_with(made["access_key_id"].as_str().unwrap(), "not-the-secret-0123456789abcdefghij");
    assert!(wrong.list_buckets().send().await.is_err());
    c.admin_ok(&["status"]);

    let cluster = c.cluster_file();
    let secrets = [
        ("the S3 secret", c.env["AWS_SECRET_ACCESS_KEY"].clone()),
        ("the admin secret", c.env["SILLOK_ADMIN_SECRET"].clone()),
        ("the cluster secret", cluster["cluster_secret"].as_str().expect("cluster_secret").to_string()),
        ("the new key's secret", new_secret),
    ];
    let mut read = 0usize;
    for entry in std::fs::read_dir(c.dir.path().join("logs")).unwrap() {
        let path = entry.unwrap().path();
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        read += text.len();
        for (what, secret) in &secrets {
            assert!(secret.len() >= 16, "{what} is too short to search for");
            if let Some(at) = text.find(secret.as_str()) {
                let line = text[..at].rfind('\n').map_or(0, |i| i + 1);
                let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
                panic!("{what} is in {}: {}", path.display(), &text[line..end]);
            }
        }
    }
    // The logs were really written at trace (not an empty directory).
    assert!(read > 100_000, "only {read} bytes of logs at trace");
}
