//! Mutual TLS between the processes of a cluster (issue 14): certificates of
//! another cluster are refused by nodes and catalog replicas and cannot pass
//! for a node; each role reaches only its routes; the identity files are
//! private and a process refuses to start with an open key or cluster file;
//! and no S3 secret crosses an internal socket in clear (a packet capture,
//! which does find the secret when internal TLS is off); and the signatures
//! under TLS refuse a replayed, modified or misaddressed request.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use sillok_catalog::{CatalogClient, ClientTimeouts};
use sillok_rpc::Signer;
use sillok_rpc::tls::InternalTls;
use sillok_storage_node::{NodeClient, Timeouts};

use crate::support::*;

/// A `sillok init` cluster (no process started): its directory, for its
/// certificates, which come from another CA than any dev cluster's.
fn foreign_cluster() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("sillok-foreign-").tempdir().unwrap();
    let mut nodes = Vec::new();
    for (i, site) in ["a", "b", "c"].iter().enumerate() {
        for j in 0..2 {
            nodes.push(serde_json::json!({"id": i * 2 + j + 1, "site": site, "addr": format!("127.0.0.1:{}", 7100 + i * 2 + j), "weight": 1.0}));
        }
    }
    let topo = serde_json::json!({"sites": [{"id": "a"}, {"id": "b"}, {"id": "c"}], "nodes": nodes});
    std::fs::write(dir.path().join("topology.json"), topo.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sillok"))
        .args(["init", "--pgs", "64", "--topology"])
        .arg(dir.path().join("topology.json"))
        .arg("--out")
        .arg(dir.path().join("cluster.json"))
        .args(["--replica", "a=127.0.0.1:7400", "--replica", "b=127.0.0.1:7401", "--replica", "c=127.0.0.1:7402"])
        .output()
        .unwrap();
    assert!(out.status.success(), "sillok init: {}", String::from_utf8_lossy(&out.stderr));
    dir
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn catalog(c: &DevCluster, tls: &InternalTls, signer: Signer) -> CatalogClient {
    let addrs = c.env["SILLOK_CATALOG"].split(',').map(str::to_string).collect();
    let t = ClientTimeouts { total: Duration::from_secs(2), attempt: Duration::from_secs(1), ..Default::default() };
    CatalogClient::with_tls(addrs, signer, t, Some(tls)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_of_another_cluster_or_role_are_refused_and_keys_stay_private() {
    let c = DevCluster::start();
    let secret = c.cluster_file()["cluster_secret"].as_str().unwrap().to_string();
    let node = c.nodes()[0].clone();
    let ours = |name: &str| c.internal_tls(name);
    let foreign = foreign_cluster();
    let theirs = |name: &str| InternalTls::load(&foreign.path().join("tls").join(name)).unwrap();

    // The control: our gateway's certificate reaches a node and the catalog.
    let gateway_nodes = NodeClient::with_tls(&secret, Timeouts::default(), Some(&ours("gateway")));
    gateway_nodes.followed_map(&node.2).await.expect("a gateway may call a node");
    let view = catalog(&c, &ours("gateway"), Signer::new(&secret)).catalog(false).await.unwrap();
    assert!(!view.key_secrets.is_empty(), "a gateway is sent the keys' secrets (it verifies S3 signatures)");

    // Another cluster's certificates, even with the right cluster secret, are
    // refused by a node and by the catalog replicas.
    for name in ["gateway", "node-1"] {
        let nodes = NodeClient::with_tls(&secret, Timeouts::default(), Some(&theirs(name)));
        let e = nodes.followed_map(&node.2).await.expect_err("a foreign certificate reaches a node");
        assert!(!e.to_string().contains("403"), "refused at the handshake, not by a route: {e}");
        let e = catalog(&c, &theirs(name), Signer::new(&secret)).status().await.expect_err("foreign, on the catalog");
        assert!(format!("{e:#}").contains("no catalog replica could serve"), "{e:#}");
    }

    // A server with another cluster's node certificate cannot pass for a
    // node: our gateway's client refuses it, its own cluster's client does not.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake = listener.local_addr().unwrap().to_string();
    let app = axum::Router::new().route("/v1/map", axum::routing::get(|| async { "{}" }));
    let server = tokio::spawn(sillok_rpc::server::serve_with(
        listener,
        app,
        std::future::pending(),
        Some(std::sync::Arc::new(theirs("node-1"))),
    ));
    let call = |tls: InternalTls| {
        let fake = fake.clone();
        async move {
            let rpc = sillok_rpc::RpcClient::with_tls(Signer::new("x"), Duration::from_secs(2), Some(&tls));
            rpc.call(http::Method::GET, &fake, "/v1/map", Vec::new(), &[], Duration::from_secs(5), 1024).await
        }
    };
    let e = call(ours("gateway")).await.expect_err("our gateway talked to a foreign node");
    assert!(e.is_unreachable(), "{e}");
    assert_eq!(call(theirs("gateway")).await.unwrap().status, 200, "the impostor's own cluster reaches it");
    server.abort();

    // Roles: a node's certificate reads the map's changes but not buckets,
    // keys or their changes; an admin's reaches neither Raft nor any node,
    // and is not sent secrets even when signing with the cluster secret.
    let as_node = catalog(&c, &ours(&format!("node-{}", node.0)), Signer::new(&secret));
    as_node.map_changes_since(0, Duration::ZERO).await.expect("a node follows the map");
    as_node.map_newer_than(0, Duration::ZERO).await.expect("a node reads the map");
    for e in [
        as_node.changes_since(0, Duration::ZERO).await.map(|_| ()).expect_err("a node read key changes"),
        as_node.catalog(false).await.map(|_| ()).expect_err("a node read the catalog"),
    ] {
        assert!(format!("{e:#}").contains("Node certificate may not call"), "{e:#}");
    }
    let as_admin = catalog(&c, &ours("admin"), Signer::new(&secret));
    let view = as_admin.catalog(false).await.unwrap();
    assert!(view.key_secrets.is_empty(), "an admin certificate is sent no secret");
    let e = as_admin.changes_since(0, Duration::ZERO).await.map(|_| ()).expect_err("admin read the change feed");
    assert!(format!("{e:#}").contains("Admin certificate may not call"), "{e:#}");
    let rpc = sillok_rpc::RpcClient::with_tls(Signer::new(&secret), Duration::from_secs(2), Some(&ours("admin")));
    let replica = c.env["SILLOK_CATALOG"].split(',').next().unwrap().to_string();
    let r = rpc
        .call(http::Method::POST, &replica, "/v1/raft/vote", b"{}".to_vec(), &[], Duration::from_secs(5), 4096)
        .await
        .unwrap();
    assert_eq!(r.status, 403, "admin on raft: {}", String::from_utf8_lossy(&r.body));
    let admin_nodes = NodeClient::with_tls(&secret, Timeouts::default(), Some(&ours("admin")));
    let e = admin_nodes.followed_map(&node.2).await.expect_err("an admin certificate reached a node");
    assert!(e.to_string().contains("may not call a storage node") || e.to_string().contains("403"), "{e}");

    // The files: keys 0600 in 0700 directories; the CA key apart from them.
    let dir = c.dir.path();
    for name in ["gateway", "admin", &format!("node-{}", node.0), "catalog-1"] {
        assert_eq!(mode(&dir.join("tls").join(name)), 0o700, "{name}");
        assert_eq!(mode(&dir.join("tls").join(name).join("key.pem")), 0o600, "{name}");
    }
    assert_eq!(mode(&dir.join("ca").join("ca-key.pem")), 0o600);
    assert!(!dir.join("tls").join("gateway").join("ca-key.pem").exists());

    // A process refuses to start on a key or a cluster file others can read,
    // naming the file and the fix.
    let open = tempfile::tempdir().unwrap();
    let id_dir = open.path().join("node");
    std::fs::create_dir(&id_dir).unwrap();
    for f in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::copy(dir.join("tls").join(format!("node-{}", node.0)).join(f), id_dir.join(f)).unwrap();
    }
    std::fs::set_permissions(id_dir.join("key.pem"), std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let cluster_copy = open.path().join("cluster.json");
    std::fs::copy(dir.join("cluster.json"), &cluster_copy).unwrap();
    let start = |cluster: &Path| {
        Command::new(env!("CARGO_BIN_EXE_sillok"))
            .args(["node", "--id", &node.0.to_string(), "--cluster"])
            .arg(cluster)
            .arg("--data")
            .arg(open.path().join("data"))
            .arg("--internal-tls")
            .arg(&id_dir)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = start(&cluster_copy);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&format!("chmod 600 {}", id_dir.join("key.pem").display())), "{err}");
    std::fs::set_permissions(&cluster_copy, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = start(&cluster_copy);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&format!("chmod 600 {}", cluster_copy.display())), "{err}");
}

/// Captures the loopback traffic of `c`'s internal ports (catalog replicas
/// and nodes) while a new S3 key is created and the gateway takes it (it
/// follows the catalog, which sends it the keys' secrets); returns the new
/// secret and the capture. `None` when tcpdump cannot run here (and
/// SILLOK_REQUIRE_CLIENTS is not set).
async fn capture_new_key(c: &DevCluster) -> Option<(String, Vec<u8>)> {
    let required = std::env::var("SILLOK_REQUIRE_CLIENTS").is_ok_and(|v| !v.is_empty() && v != "0");
    let file = c.dir.path().join("internal.pcap");
    let cluster = c.cluster_file();
    let mut ports: Vec<String> = cluster["catalog_replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["addr"].as_str().unwrap().to_string())
        .chain(c.nodes().into_iter().map(|n| n.2))
        .map(|a| format!("port {}", a.rsplit(':').next().unwrap()))
        .collect();
    ports.dedup();
    let filter = format!("tcp and ({})", ports.join(" or "));
    let log = c.dir.path().join("tcpdump.log");
    let spawned = Command::new("tcpdump")
        .args(["-i", "lo", "--immediate-mode", "-U", "-s", "0", "-w"])
        .arg(&file)
        .arg(&filter)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn();
    let mut dump = match spawned {
        Ok(d) => d,
        Err(e) => {
            assert!(!required, "SILLOK_REQUIRE_CLIENTS is set, but tcpdump cannot run: {e} (.ci/run installs it)");
            eprintln!("SKIPPED: tcpdump cannot run here ({e}); no capture of internal traffic");
            return None;
        }
    };
    let listening = wait_until_blocking(Duration::from_secs(10), "tcpdump to listen", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("listening on") {
            Some(true)
        } else if let Ok(Some(_)) = dump.try_wait() {
            Some(false)
        } else {
            None
        }
    });
    if !listening {
        let why = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!required, "SILLOK_REQUIRE_CLIENTS is set, but tcpdump could not capture: {why}");
        eprintln!("SKIPPED: tcpdump could not capture on lo: {why}");
        return None;
    }
    let out = c.admin_ok(&["key", "create", "--json"]);
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    let (id, secret) = (created["access_key_id"].as_str().unwrap(), created["secret_access_key"].as_str().unwrap());
    let s3 = c.client_with(id, secret);
    wait_until(Duration::from_secs(30), "the gateway to take the new key", async || {
        s3.list_buckets().send().await.map(|_| ()).map_err(|e| format!("{e:?}"))
    })
    .await;
    // Let the last segments reach the file, then stop tcpdump (SIGINT).
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(dump.id() as i32, 2);
    let _ = dump.wait();
    eprintln!("tcpdump ({filter}): {}", std::fs::read_to_string(&log).unwrap_or_default().trim());
    Some((secret.to_string(), std::fs::read(&file).unwrap()))
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_s3_secret_crosses_an_internal_socket_in_clear() {
    let c = DevCluster::start();
    let Some((secret, capture)) = capture_new_key(&c).await else { return };
    assert!(capture.len() > 1000, "the capture saw the internal traffic ({} bytes)", capture.len());
    assert!(!contains(&capture, &secret), "the new key's secret crossed an internal socket in clear");
}

/// The check above, shown to work: with internal TLS off
/// (`--insecure-internal-http`), the same capture finds the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_internal_tls_the_capture_finds_the_secret() {
    let c = DevCluster::start_with(&["--insecure-internal-http"]);
    let Some((secret, capture)) = capture_new_key(&c).await else { return };
    assert!(contains(&capture, &secret), "the capture did not find the secret sent in clear");
}

/// The signature layer under mutual TLS, against the real processes of a
/// cluster: a request sent again byte for byte, with a gateway's certificate
/// and the cluster secret, is refused by a node and by a catalog replica; one
/// whose `x-sillok-*` header changed after signing, or that was signed for
/// another node, is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_or_modified_internal_request_is_refused() {
    use http_body_util::BodyExt;
    let c = DevCluster::start();
    let secret = c.cluster_file()["cluster_secret"].as_str().unwrap().to_string();
    let signer = Signer::new(&secret);
    let nodes = c.nodes();
    let (node, other) = (nodes[0].2.clone(), nodes[1].2.clone());
    let replica = c.env["SILLOK_CATALOG"].split(',').next().unwrap().to_string();
    let rpc = sillok_rpc::RpcClient::with_tls(signer.clone(), Duration::from_secs(5), Some(&c.internal_tls("gateway")));
    // A signed request to `addr` (signed for `host`), kept so it can be sent again.
    let signed =
        |method: http::Method, addr: &str, host: &str, pq: &str, body: &'static [u8], extra: Option<(&str, &str)>| {
            let mut req = http::Request::builder()
                .method(method)
                .uri(format!("https://{addr}{pq}"))
                .header("host", host)
                .body(())
                .unwrap();
            if let Some((k, v)) = extra {
                req.headers_mut().insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
            }
            signer.sign_request(&mut req, sillok_rpc::Payload::Bytes(body)).unwrap();
            let (parts, ()) = req.into_parts();
            (parts, body)
        };
    let send = |(parts, body): &(http::request::Parts, &'static [u8])| {
        let mut req = http::Request::new(sillok_rpc::client::full_body(bytes::Bytes::from_static(body)));
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = parts.uri.clone();
        *req.headers_mut() = parts.headers.clone();
        let fut = rpc.send_as_is(req);
        async move {
            let resp = fut.await.unwrap();
            let status = resp.status().as_u16();
            (status, String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned())
        }
    };

    // A node: a manifest read, then the same bytes again.
    let get: &[u8] = br#"{"bucket":"nobucket","key":"k"}"#;
    let once = signed(http::Method::POST, &node, &node, "/v1/manifests/get", get, None);
    assert_eq!(send(&once).await.0, 404, "the first time, the read is served (nothing there)");
    let (status, text) = send(&once).await;
    assert_eq!((status, text.contains("already received")), (403, true), "node replay: {text}");
    // An x-sillok-* header added after signing (a stale epoch passed off as current).
    let (mut parts, body) = signed(http::Method::POST, &node, &node, "/v1/manifests/get", get, None);
    parts.headers.insert("x-sillok-epoch", "999999".parse().unwrap());
    let (status, text) = send(&(parts, body)).await;
    assert_eq!((status, text.contains("signature does not match")), (403, true), "modified: {text}");
    // Signed for another node, delivered to this one.
    let misaddressed = signed(http::Method::POST, &node, &other, "/v1/manifests/get", get, None);
    let (status, text) = send(&misaddressed).await;
    assert_eq!((status, text.contains("not this process's address")), (403, true), "misaddressed: {text}");

    // A catalog replica: a status read, then the same bytes again.
    let once = signed(http::Method::GET, &replica, &replica, "/v1/status", b"", None);
    assert_eq!(send(&once).await.0, 200);
    let (status, text) = send(&once).await;
    assert_eq!((status, text.contains("already received")), (403, true), "catalog replay: {text}");
}
