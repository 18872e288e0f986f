//! HTTPS on the S3 endpoint: one `sillok dev --tls` cluster, several real
//! clients against it, each on its default https path with the dev CA:
//!
//! - aws-sdk-s3 (Rust; its default https client, rustls on aws-lc-rs, given
//!   the CA): PUT and GET. Over https the SDK sends its bodies aws-chunked
//!   as `STREAMING-UNSIGNED-PAYLOAD-TRAILER` with a CRC32 trailer;
//! - aws-chunked *signed* streaming (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`,
//!   and its signed-trailer form), built by hand as in
//!   `s3_compat::streaming_signatures_are_checked_chunk_by_chunk`, sent over
//!   TLS: a good upload is stored, one with a changed byte in a chunk is
//!   refused `SignatureDoesNotMatch`, which shows the gateway checked the
//!   chunk signatures on this path;
//! - the aws cli and boto3 (`tests/clients/tls.sh`, AWS_CA_BUNDLE only):
//!   cp and upload_file, multipart included; both refused without the CA;
//! - refusals: a client trusting another CA, the SDK with the system's
//!   roots, plain HTTP to the HTTPS port (a clear `400`), each counted on
//!   the metrics page;
//! - certificate reload, on SIGHUP and on a change of the files: new
//!   connections see the new certificate while an upload that started on a
//!   connection made before goes on and completes;
//! - a client that connects and never sends a ClientHello is disconnected
//!   at the handshake deadline;
//! - file modes: the dev CA's and the gateway's keys and `cluster.env` are
//!   0600, `tls/` is 0700.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use http_body_util::BodyExt;

use crate::clients::{AWS, BOTO3, Client, PYTHON, ready_to_run, run_client_on};
use crate::s3_compat::{sign_request, signed_chunks_put};
use crate::support::*;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

/// One counter of the gateway's metrics page.
async fn metric(cluster: &DevCluster, name: &str) -> u64 {
    let text = http_text(&format!("{}/metrics", cluster.env["SILLOK_GATEWAY_OPS"])).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} on the metrics page"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_cluster_serves_s3_over_https() {
    let cluster = DevCluster::start_with(&["--tls"]);
    // Opened first, so that its deadline runs out while the rest is checked.
    let silent = tokio::net::TcpStream::connect(cluster.authority()).await.unwrap();

    cluster_env_and_keys_are_owner_only(&cluster);
    sdk_puts_and_gets_over_https(&cluster).await;
    signed_chunks_are_checked_over_tls(&cluster).await;
    untrusting_clients_and_plain_http_are_refused(&cluster).await;
    let tls_clients = Client {
        name: "tls (aws cli, boto3)",
        needs: &[AWS, BOTO3, PYTHON],
        run_with: &["bash"],
        script: "tls.sh",
        timeout: Duration::from_secs(300),
    };
    if ready_to_run(&tls_clients) {
        tokio::task::block_in_place(|| run_client_on(&tls_clients, &cluster));
    }
    a_new_certificate_is_served_after_sighup_and_after_a_file_change(&cluster).await;
    a_client_that_never_says_hello_is_dropped_at_the_handshake_deadline(&cluster, silent).await;
}

fn cluster_env_and_keys_are_owner_only(cluster: &DevCluster) {
    let dir = cluster.dir.path();
    assert!(cluster.endpoint().starts_with("https://127.0.0.1:"), "{}", cluster.endpoint());
    assert_eq!(cluster.env["AWS_ENDPOINT_URL"], cluster.endpoint());
    assert_eq!(cluster.ca_bundle().unwrap(), dir.join("tls").join("ca.crt").canonicalize().unwrap());
    // cluster.env holds the keys' secrets.
    assert_eq!(mode(&dir.join("cluster.env")), 0o600, "cluster.env");
    assert_eq!(mode(&dir.join("tls")), 0o700, "tls/");
    assert_eq!(mode(&dir.join("tls").join("ca.key")), 0o600, "the dev CA's key");
    assert_eq!(mode(&dir.join("tls").join("gateway.key")), 0o600, "the gateway's key");
    assert_eq!(mode(&dir.join("tls").join("ca.crt")), 0o644, "the CA certificate");
    // `sillok dev` tells how to point clients at the CA.
    let log = cluster.log();
    for what in ["AWS_CA_BUNDLE", "--ca-bundle", "with_pem_certificate", "curl --cacert"] {
        assert!(log.contains(what), "the dev output should mention {what}:\n{log}");
    }
}

async fn sdk_puts_and_gets_over_https(cluster: &DevCluster) {
    let s3 = cluster.client();
    s3.create_bucket().bucket("tls-sdk").send().await.unwrap();
    for (key, len) in [("inline", 20_000usize), ("sharded", 3 << 20)] {
        let data = pattern(len, len as u64);
        put(&s3, "tls-sdk", key, data.clone()).await;
        assert_same(&get(&s3, "tls-sdk", key, None).await, &data, key);
    }
    let data = pattern(3 << 20, 3 << 20);
    let part = get(&s3, "tls-sdk", "sharded", Some("bytes=1000000-1999999".into())).await;
    assert_same(&part, &data[1_000_000..2_000_000], "a range over https");
}

async fn signed_chunks_are_checked_over_tls(cluster: &DevCluster) {
    let s3 = cluster.client();
    s3.create_bucket().bucket("chunks").send().await.unwrap();
    let data = pattern(200_000, 7);
    let (st, text) = signed_chunks_put(cluster, "signed", &data, None, false).await;
    assert_eq!(st, 200, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD over TLS: {text}");
    assert_same(&get(&s3, "chunks", "signed", None).await, &data, "signed chunks over TLS");
    let (st, text) = signed_chunks_put(cluster, "tampered", &data, None, true).await;
    assert_eq!(st, 403, "a changed chunk must fail its signature over TLS too: {text}");
    assert!(text.contains("SignatureDoesNotMatch"), "{text}");
    let crc = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(crc32fast::hash(&data).to_be_bytes())
    };
    let (st, text) = signed_chunks_put(cluster, "signed-trailer", &data, Some(&crc), false).await;
    assert_eq!(st, 200, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER over TLS: {text}");
    assert_same(&get(&s3, "chunks", "signed-trailer", None).await, &data, "signed chunks and trailer over TLS");
}

async fn untrusting_clients_and_plain_http_are_refused(cluster: &DevCluster) {
    let failures = "sillok_gateway_tls_handshake_failures_total";
    let before = metric(cluster, failures).await;

    // A client that trusts another CA: the handshake fails, nothing is sent.
    let other = tempfile::tempdir().unwrap();
    let other_ca = other.path().join("ca.crt");
    std::fs::write(&other_ca, sillok_tls::Ca::generate("another CA").unwrap().cert_pem()).unwrap();
    let e = tls_connect(&cluster.authority(), &other_ca).await.expect_err("a client of another CA is refused");
    assert!(e.contains("UnknownIssuer"), "{e}");

    // The SDK with the system's roots only.
    let plain_sdk = s3_client(
        &cluster.endpoint(),
        &cluster.region(),
        &cluster.env["AWS_ACCESS_KEY_ID"],
        &cluster.env["AWS_SECRET_ACCESS_KEY"],
    );
    let e = plain_sdk.list_buckets().send().await.expect_err("the SDK without the CA is refused");
    assert!(e.raw_response().is_none(), "no HTTP response without a handshake: {e:?}");
    let why = format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e));
    assert!(why.contains("UnknownIssuer") || why.contains("certificate"), "{why}");

    // Plain HTTP to the HTTPS port: a 400 that says what to do.
    let (st, body) = {
        let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let resp = http.get(format!("http://{}/tls-sdk", cluster.authority()).parse().unwrap()).await.unwrap();
        (resp.status().as_u16(), resp.into_body().collect().await.unwrap().to_bytes())
    };
    assert_eq!(st, 400);
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("speaks HTTPS only"), "{body}");

    wait_until(Duration::from_secs(10), "the refused handshakes to be counted", async || {
        let n = metric(cluster, failures).await;
        if n >= before + 3 { Ok(()) } else { Err(format!("{failures} {before} -> {n}")) }
    })
    .await;
}

/// Issues the gateway a new certificate under the dev CA (another common
/// name and serial) into `tls/gateway.crt` and `tls/gateway.key`.
fn reissue(cluster: &DevCluster, cn: &str) -> Vec<u8> {
    let tls = cluster.dir.path().join("tls");
    let read = |name: &str| std::fs::read_to_string(tls.join(name)).unwrap();
    let ca = sillok_tls::Ca::from_pem(&read("ca.crt"), &read("ca.key")).unwrap();
    let spec = sillok_tls::LeafSpec::new(cn).ip(std::net::Ipv4Addr::LOCALHOST.into()).dns("localhost");
    let issued = ca.issue(&spec).unwrap();
    issued.save(&tls.join("gateway.crt"), &tls.join("gateway.key")).unwrap();
    assert_eq!(mode(&tls.join("gateway.key")), 0o600, "a reissued key");
    issued.cert_der.to_vec()
}

async fn a_new_certificate_is_served_after_sighup_and_after_a_file_change(cluster: &DevCluster) {
    let s3 = cluster.client();
    let first = served_certificate(cluster).await;

    // An upload on a connection made before the reload, its body half sent.
    let ca = cluster.ca_bundle().unwrap();
    let conn = tls_connect(&cluster.authority(), &ca).await.unwrap();
    assert_eq!(conn.get_ref().1.peer_certificates().unwrap()[0].as_ref(), &first[..]);
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(conn)).await.unwrap();
    tokio::spawn(connection);
    let data = pattern(2 << 20, 11);
    let headers = vec![
        ("host".to_string(), cluster.authority()),
        ("x-amz-content-sha256".to_string(), "UNSIGNED-PAYLOAD".to_string()),
        ("content-length".to_string(), data.len().to_string()),
    ];
    let signed = sign_request(cluster, "PUT", "/tls-sdk/across-reload", headers, SystemTime::now());
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    let body = http_body_util::StreamBody::new(futures::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk)), rx))
    }));
    let mut req = http::Request::put(format!("{}/tls-sdk/across-reload", cluster.endpoint()));
    for (k, v) in &signed.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let upload = tokio::spawn(sender.send_request(req.body(body).unwrap()));
    let half = data.len() / 2;
    tx.send(bytes::Bytes::copy_from_slice(&data[..half])).await.unwrap();

    // SIGHUP: new connections get the new certificate.
    let second = reissue(cluster, "sillok dev gateway, renewed by SIGHUP");
    assert_eq!(signal(cluster.gateway_pid(), 1), 0, "SIGHUP to the gateway");
    wait_until(
        Duration::from_secs(20),
        "a new connection to be shown the certificate issued before SIGHUP",
        async || served_certificate(cluster).await == second,
    )
    .await;
    assert!(cluster.gateway_log().contains("why=\"SIGHUP\""), "the reload is logged:\n{}", cluster.gateway_log());

    // The upload started before goes on, on its connection.
    tx.send(bytes::Bytes::copy_from_slice(&data[half..])).await.unwrap();
    drop(tx);
    let resp = upload.await.unwrap().expect("the upload across the reload");
    assert_eq!(resp.status(), 200, "{:?}", resp.into_body().collect().await.unwrap().to_bytes());
    assert_same(&get(&s3, "tls-sdk", "across-reload", None).await, &data, "an upload across a reload");

    // A change of the files alone is picked up too (no signal).
    let third = reissue(cluster, "sillok dev gateway, renewed on disk");
    wait_until(Duration::from_secs(20), "a new connection to be shown the certificate written to disk", async || {
        served_certificate(cluster).await == third
    })
    .await;
    assert!(cluster.gateway_log().contains("why=\"the files changed\""), "{}", cluster.gateway_log());
    // And the SDK's own connections work with it.
    put(&s3, "tls-sdk", "after-reload", b"renewed".to_vec()).await;
    assert_eq!(get(&s3, "tls-sdk", "after-reload", None).await, b"renewed");
}

async fn a_client_that_never_says_hello_is_dropped_at_the_handshake_deadline(
    cluster: &DevCluster,
    silent: tokio::net::TcpStream,
) {
    // The gateway closes the socket (EOF or reset) once the deadline passes.
    wait_until(Duration::from_secs(40), "the gateway to close a connection that sent no ClientHello", async || {
        let mut b = [0u8; 1];
        match silent.try_read(&mut b) {
            Ok(0) => Ok(()),
            Ok(_) => Err("the gateway sent bytes to a silent client".to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err("still open".to_string()),
            Err(_) => Ok(()),
        }
    })
    .await;
    assert!(metric(cluster, "sillok_gateway_tls_handshake_timeouts_total").await >= 1);
}
