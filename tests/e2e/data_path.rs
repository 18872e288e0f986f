//! The erasure-coded data path end to end: real `sillok dev` processes, the
//! real aws-sdk-s3 client, byte-exact checks.

use std::time::{Duration, Instant};

use crate::support::*;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_byte_exact_at_every_size() {
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("photos").send().await.expect("create bucket");
    for (i, size) in [0, 1, 31 * KIB, 64 * KIB, 64 * KIB + 1, MIB + 1, 64 * MIB].into_iter().enumerate() {
        let body = pattern(size, i as u64 + 1);
        let key = format!("obj-{size}");
        put(&c, "photos", &key, body.clone()).await;
        let got = get(&c, "photos", &key, None).await;
        assert_same(&got, &body, &key);
        let head = c.head_object().bucket("photos").key(&key).send().await.expect("head");
        assert_eq!(head.content_length(), Some(size as i64));
        let md5 = format!("\"{:x}\"", md5_of(&body));
        assert_eq!(head.e_tag(), Some(md5.as_str()), "ETag is the body's MD5 for {key}");
    }
}

fn md5_of(b: &[u8]) -> u128 {
    use md5::Digest;
    u128::from_be_bytes(md5::Md5::digest(b).into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_reads_on_and_off_stripe_and_shard_boundaries() {
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("videos").send().await.unwrap();
    // Default layout: 4+2, 256 KiB shard blocks, so 1 MiB stripes.
    let block = 256 * KIB;
    let stripe = 4 * block;
    let size = 3 * stripe + 5 * block / 2 + 7; // ends inside a stripe and inside a block
    let body = pattern(size, 42);
    put(&c, "videos", "v.mp4", body.clone()).await;
    let mut points =
        vec![0usize, 1, block - 1, block, block + 1, stripe - 1, stripe, stripe + 1, 2 * stripe + 3 * block];
    points.extend([3 * stripe - 1, 3 * stripe, 3 * stripe + 1, size - 2, size - 1]);
    for &a in &points {
        for &b in &points {
            if b < a {
                continue;
            }
            let got = get(&c, "videos", "v.mp4", Some(format!("bytes={a}-{b}"))).await;
            assert_same(&got, &body[a..=b], &format!("range {a}-{b}"));
        }
    }
    // Open-ended and suffix ranges, and a last byte past the end (clamped).
    assert_same(
        &get(&c, "videos", "v.mp4", Some(format!("bytes={}-", stripe + 1))).await,
        &body[stripe + 1..],
        "open range",
    );
    assert_same(&get(&c, "videos", "v.mp4", Some("bytes=-1000".into())).await, &body[size - 1000..], "suffix range");
    assert_same(
        &get(&c, "videos", "v.mp4", Some(format!("bytes={}-{}", size - 10, size + 100))).await,
        &body[size - 10..],
        "clamped",
    );
    // A range that starts past the end is 416 InvalidRange.
    let err = c.get_object().bucket("videos").key("v.mp4").range(format!("bytes={size}-")).send().await.unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(416));
    use aws_sdk_s3::error::ProvideErrorMetadata;
    assert_eq!(err.code(), Some("InvalidRange"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_object_survives_kill_9_of_a_whole_site() {
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("chat").send().await.unwrap();
    let sizes = [0, 1, 5 * KIB, 31 * KIB, 100 * KIB, MIB + 1, 3 * MIB + 12345];
    let mut objects = Vec::new();
    for round in 0..4 {
        for (i, &size) in sizes.iter().enumerate() {
            let key = format!("r{round}/o{i}");
            let body = pattern(size, (round * 100 + i) as u64);
            put(&c, "chat", &key, body.clone()).await;
            objects.push((key, body));
        }
    }
    let site = cluster.sites()[0].clone();
    cluster.kill_site(&site);
    for (key, body) in &objects {
        let got = get(&c, "chat", key, None).await;
        assert_same(&got, body, &format!("{key} after killing {site}"));
    }
    // A range read that needs reconstruction, too.
    let (key, body) = objects.iter().find(|(_, b)| b.len() > 3 * MIB).unwrap();
    let got = get(&c, "chat", key, Some("bytes=1000-2500000".into())).await;
    assert_same(&got, &body[1000..=2_500_000], "degraded range");
    // Writes keep working with the site down, and read back.
    let body = pattern(2 * MIB + 3, 999);
    put(&c, "chat", "after-loss", body.clone()).await;
    assert_same(&get(&c, "chat", "after-loss", None).await, &body, "written while a site is down");
    // Listing still sees every key.
    let listed = c.list_objects_v2().bucket("chat").send().await.unwrap();
    assert_eq!(listed.key_count(), Some(objects.len() as i32 + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_on_disk_is_detected_and_never_served() {
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("bkt").send().await.unwrap();
    let body = pattern(2 * MIB + 100, 7);
    put(&c, "bkt", "photo.jpg", body.clone()).await;
    let files = cluster.shard_files();
    assert_eq!(files.len(), 6, "one object, 4+2 shards: {files:?}");
    // Shard files are named <object_id>.<index>; corrupt data shard 0 in its first block.
    let shard = |i: usize| {
        files.iter().find(|(_, p)| p.extension().and_then(|e| e.to_str()) == Some(&i.to_string())).unwrap().1.clone()
    };
    let flip = |p: &std::path::Path, at: u64| {
        let mut bytes = std::fs::read(p).unwrap();
        bytes[at as usize] ^= 0x40;
        std::fs::write(p, bytes).unwrap();
    };
    flip(&shard(0), 64 + 36 + 1000);
    assert_same(&get(&c, "bkt", "photo.jpg", None).await, &body, "one corrupt shard: reconstructed");
    // Corrupt two more data shards in the same block: 3 of 6 bad > m = 2, so the
    // read must fail rather than return wrong bytes.
    flip(&shard(1), 64 + 36 + 5);
    flip(&shard(2), 64 + 36 + 5);
    let r = c.get_object().bucket("bkt").key("photo.jpg").send().await;
    match r {
        Err(_) => {}
        Ok(out) => {
            let collected = out.body.collect().await;
            assert!(collected.is_err(), "three corrupt shards (more than m) must not yield a body");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_refused_with_s3_errors() {
    use aws_sdk_s3::error::ProvideErrorMetadata;
    let cluster = DevCluster::start();
    let ak = cluster.env["AWS_ACCESS_KEY_ID"].clone();
    let wrong_secret = cluster.client_with(&ak, "not-the-secret");
    let err = wrong_secret.list_buckets().send().await.unwrap_err();
    assert_eq!(err.code(), Some("SignatureDoesNotMatch"), "{err:?}");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(403));
    let err = wrong_secret.put_object().bucket("xyz").key("y").body(vec![1, 2, 3].into()).send().await.unwrap_err();
    assert_eq!(err.code(), Some("SignatureDoesNotMatch"));

    let unknown = cluster.client_with("AKIDUNKNOWN0000000000", "whatever");
    let err = unknown.list_buckets().send().await.unwrap_err();
    assert_eq!(err.code(), Some("InvalidAccessKeyId"), "{err:?}");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(403));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_api_refuses_unsigned_requests_and_changes_nothing() {
    use std::io::{Read, Write};
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("bkt").send().await.unwrap();
    let body = pattern(MIB, 3);
    put(&c, "bkt", "k", body.clone()).await;
    let files = cluster.shard_files();
    let (_, victim) = files.first().expect("a shard file").clone();
    let name = victim.file_name().unwrap().to_str().unwrap().to_string();
    let (object_id, index) = name.split_once('.').unwrap();
    let victim_node_dir =
        victim.ancestors().find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("node-"))).unwrap();
    let node_id: u64 = victim_node_dir.file_name().unwrap().to_string_lossy()["node-".len()..].parse().unwrap();
    let addr = cluster.nodes().into_iter().find(|n| n.0 == node_id).unwrap().2;
    // Plain HTTP gets no HTTP answer at all: the port speaks mutual TLS only.
    let plain = format!("DELETE /v1/shards/{object_id}/{index} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(plain.as_bytes()).unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    assert!(!resp.starts_with(b"HTTP/"), "plain HTTP was answered: {:?}", String::from_utf8_lossy(&resp));
    // Inside TLS, with a valid gateway certificate: unsigned, or signed with a
    // made-up signature, is refused.
    let tls = cluster.internal_tls("gateway");
    let rpc = sillok_rpc::RpcClient::with_tls(
        sillok_rpc::Signer::new("unused"),
        std::time::Duration::from_secs(2),
        Some(&tls),
    );
    let fake_sig = "AWS4-HMAC-SHA256 Credential=sillok-internal/20260101/sillok/sillok/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=0000000000000000000000000000000000000000000000000000000000000000";
    let requests: [(http::Method, String, &[u8], bool); 4] = [
        (http::Method::DELETE, format!("/v1/shards/{object_id}/{index}"), b"", false),
        (http::Method::GET, format!("/v1/shards/{object_id}/{index}"), b"", false),
        (http::Method::POST, "/v1/manifests/get".to_string(), br#"{"bucket":"bkt","key":"k"}"#, false),
        (http::Method::DELETE, format!("/v1/shards/{object_id}/{index}"), b"", true),
    ];
    for (method, path, body, signed) in requests {
        let mut req = http::Request::builder().method(method.clone()).uri(format!("https://{addr}{path}"));
        if signed {
            req = req
                .header("x-amz-date", "20260101T000000Z")
                .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
                .header("authorization", fake_sig);
        }
        let req = req.body(sillok_rpc::client::full_body(bytes::Bytes::from_static(body))).unwrap();
        let resp = rpc.send_as_is(req).await.unwrap();
        assert_eq!(resp.status(), 403, "expected 403 for {method} {path} (signed: {signed})");
    }
    assert!(victim.exists(), "an unsigned DELETE must not remove the shard");
    assert_same(&get(&c, "bkt", "k", None).await, &body, "object intact");
}

/// How long any one request may take while processes of the cluster are
/// hung: a bound on behaviour, not a benchmark. The gateway gives up on a hung
/// node within its deadlines (by default 0.5 s to connect, 5 s for a response
/// head or a quiet gap, a stalled shard upload dropped after 5 s and a shard
/// upload's answer awaited 10 s at most; the hung node is then suspect and the
/// SDK's retry of a PUT that could not be made durable writes around it), so a
/// request slower than this is waiting on a hung process, even on a loaded
/// 2-core machine.
const HUNG_REQUEST_BOUND: Duration = Duration::from_secs(20);

/// Runs one request through the gateway and asserts it ends within
/// [`HUNG_REQUEST_BOUND`]; returns its result and how long it took.
async fn bounded<T>(what: &str, request: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = request.await;
    let took = started.elapsed();
    assert!(
        took < HUNG_REQUEST_BOUND,
        "{what} took {:.1} s with processes hung: more than the {} s bound",
        took.as_secs_f64(),
        HUNG_REQUEST_BOUND.as_secs()
    );
    (out, took)
}

/// A hung storage node (SIGSTOP: the process exists, its socket accepts,
/// nothing answers) is worse than a dead one. Reads must fall back to parity
/// after the block deadline and writes must not hang: every GET and PUT while
/// it is stopped succeeds byte-exact within [`HUNG_REQUEST_BOUND`]. When it
/// resumes, all is well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_node_slows_nothing_for_long_and_loses_nothing() {
    let cluster =
        DevCluster::start_with(&["--gateway-arg=--read-deadline-ms=700", "--gateway-arg=--node-timeout-ms=1500"]);
    let c = cluster.client();
    c.create_bucket().bucket("hung").send().await.unwrap();
    let mut objects = Vec::new();
    for i in 0..6 {
        let body = pattern(MIB + 1000 * i, 500 + i as u64);
        put(&c, "hung", &format!("o{i}"), body.clone()).await;
        objects.push((format!("o{i}"), body));
    }
    // One storage node of site-b (4+2 over 3 sites x 2 nodes: it holds a shard
    // of every object).
    let victim = cluster.node_pids(&cluster.sites()[1])[0];
    assert_process(victim, "node");
    let hung = Stopped::stop(&[victim]).await;
    let (mut slowest_get, mut slowest_put) = (Duration::ZERO, Duration::ZERO);
    // Reads and writes go on (the SDK retries a PUT the gateway could not make
    // durable): a first GET and PUT at once, before the gateway's health probe
    // has noticed the node.
    let first = pattern(2 * MIB + 7, 899);
    let (((), put_took), (got, get_took)) = tokio::join!(
        bounded("the first PUT", put(&c, "hung", "first", first.clone())),
        bounded("the first GET", get(&c, "hung", "o5", None)),
    );
    assert_same(&got, &objects[5].1, "o5 right after the node hung");
    slowest_put = slowest_put.max(put_took);
    slowest_get = slowest_get.max(get_took);
    objects.push(("first".to_string(), first));
    for (key, body) in &objects {
        let (got, took) = bounded(&format!("GET {key}"), get(&c, "hung", key, None)).await;
        assert_same(&got, body, &format!("{key} with a hung node"));
        slowest_get = slowest_get.max(took);
    }
    for i in 0..3 {
        let body = pattern(2 * MIB + i, 900 + i as u64);
        let key = format!("w{i}");
        let ((), took) = bounded(&format!("PUT {key}"), put(&c, "hung", &key, body.clone())).await;
        slowest_put = slowest_put.max(took);
        let (got, took) = bounded(&format!("GET {key}"), get(&c, "hung", &key, None)).await;
        assert_same(&got, &body, &format!("{key} written while a node is hung"));
        slowest_get = slowest_get.max(took);
        objects.push((key, body));
    }
    hung.resume().await;
    assert_process(victim, "node");
    for (key, body) in &objects {
        assert_same(&get(&c, "hung", key, None).await, body, &format!("{key} after the node resumed"));
    }
    eprintln!("with a hung node: slowest GET {slowest_get:?}, slowest PUT {slowest_put:?}");
}

/// A whole site hung at once: SIGSTOP of every process of the catalog
/// leader's site (its replica and its storage nodes), with the gateway's
/// default deadlines. The catalog elects elsewhere; reads reconstruct from
/// the other sites and writes go around the hung nodes: every GET and PUT
/// while the site is stopped succeeds byte-exact within
/// [`HUNG_REQUEST_BOUND`]. After SIGCONT, everything reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_hung_site_slows_nothing_for_long_and_loses_nothing() {
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("frozen").send().await.unwrap();
    let mut objects = Vec::new();
    for (i, size) in [0, 1, 5 * KIB, 100 * KIB, MIB + 1, 3 * MIB + 12345].into_iter().enumerate() {
        let body = pattern(size, 700 + i as u64);
        put(&c, "frozen", &format!("o{i}"), body.clone()).await;
        objects.push((format!("o{i}"), body));
    }
    let site = cluster.leader_site().await;
    let replica = cluster.replica_pid(&site);
    assert_process(replica, "catalog");
    let nodes = cluster.node_pids(&site);
    for &pid in &nodes {
        assert_process(pid, "node");
    }
    let mut every = [vec![replica], nodes.clone()].concat();
    every.sort();
    let mut listed = cluster.site_pids(&site);
    listed.sort();
    assert_eq!(every, listed, "the replica and the nodes are every process of {site}");
    let hung = Stopped::stop(&every).await;

    let (mut slowest_get, mut slowest_put) = (Duration::ZERO, Duration::ZERO);
    // A first GET and PUT at once, before the gateway's health probe has
    // noticed the site.
    let first = pattern(MIB + 99, 799);
    let (((), put_took), (got, get_took)) = tokio::join!(
        bounded("the first PUT", put(&c, "frozen", "first", first.clone())),
        bounded("the first GET", get(&c, "frozen", "o5", None)),
    );
    assert_same(&got, &objects[5].1, &format!("o5 right after {site} hung"));
    slowest_put = slowest_put.max(put_took);
    slowest_get = slowest_get.max(get_took);
    objects.push(("first".to_string(), first));
    for (key, body) in &objects {
        let (got, took) = bounded(&format!("GET {key}"), get(&c, "frozen", key, None)).await;
        assert_same(&got, body, &format!("{key} with {site} hung"));
        slowest_get = slowest_get.max(took);
    }
    let (key, body) = &objects[5];
    assert!(body.len() > 2_500_000);
    let (got, took) = bounded("a range GET", get(&c, "frozen", key, Some("bytes=1000-2500000".into()))).await;
    assert_same(&got, &body[1000..=2_500_000], &format!("a range of {key} with {site} hung"));
    slowest_get = slowest_get.max(took);
    for (i, size) in [2 * MIB + 3, 1000, 300 * KIB].into_iter().enumerate() {
        let body = pattern(size, 800 + i as u64);
        let key = format!("w{i}");
        let ((), took) = bounded(&format!("PUT {key}"), put(&c, "frozen", &key, body.clone())).await;
        slowest_put = slowest_put.max(took);
        let (got, took) = bounded(&format!("GET {key}"), get(&c, "frozen", &key, None)).await;
        assert_same(&got, &body, &format!("{key} written while {site} is hung"));
        slowest_get = slowest_get.max(took);
        objects.push((key, body));
    }

    hung.resume().await;
    for (key, body) in &objects {
        assert_same(&get(&c, "frozen", key, None).await, body, &format!("{key} after {site} resumed"));
    }
    let listed = c.list_objects_v2().bucket("frozen").send().await.unwrap();
    assert_eq!(listed.key_count(), Some(objects.len() as i32));
    eprintln!("with {site} hung: slowest GET {slowest_get:?}, slowest PUT {slowest_put:?}");
}
