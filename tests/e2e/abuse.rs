//! Bounded abuse: a slow but steady client can upload; stalled unsigned
//! form uploads cost only their fields; signed ones share a gateway-wide
//! buffer budget; one client cannot hold more than its share of requests;
//! the connection limit holds; a GET whose client stops reading is ended.
//!
//! Figures (peak RSS, the slow upload's time) are printed with `--nocapture`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// A client at 20 KB/s uploads an object of several stripes' worth of
/// time: each 1 MiB stripe takes 52 s to arrive, longer than nodes used to
/// wait for a block (30 s). `SILLOK_SLOW_UPLOAD_MIB` (default 1) sets the
/// size; 10 takes about 9 minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_at_20_kb_per_s_uploads_and_reads_back_byte_exact() {
    let mib: usize = std::env::var("SILLOK_SLOW_UPLOAD_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("slow").send().await.expect("create bucket");
    let body = pattern(mib * MIB, 20);
    let path = "/slow/steady.bin";
    let host = cluster.endpoint().trim_start_matches("http://").to_string();
    let hs = vec![
        ("host".to_string(), host.clone()),
        ("x-amz-content-sha256".to_string(), "UNSIGNED-PAYLOAD".to_string()),
        ("content-length".to_string(), body.len().to_string()),
    ];
    let signed = crate::s3_compat::sign_request(&cluster, "PUT", path, hs, SystemTime::now());
    let mut head = format!("PUT {path} HTTP/1.1\r\n");
    for (k, v) in &signed.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let started = Instant::now();
    let mut s = TcpStream::connect(&host).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    // 2,000 bytes every 100 ms: 20 KB/s, steadily.
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for chunk in body.chunks(2000) {
        tick.tick().await;
        s.write_all(chunk).await.expect("the gateway keeps reading a slow client");
    }
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(60), s.read(&mut answer)).await.expect("an answer").unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    let took = started.elapsed();
    eprintln!("slow upload: {mib} MiB at 20 KB/s took {:.1} s", took.as_secs_f64());
    assert!(answer.starts_with("HTTP/1.1 200"), "the slow upload failed: {answer}\n{}", cluster.gateway_log());
    let got = get(&c, "slow", "steady.bin", None).await;
    assert_same(&got, &body, "the slowly uploaded object");
}

/// `VmHWM` (peak) and `VmRSS` of a process, in KiB.
fn memory_kib(pid: i32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// A metric's value on a Prometheus page.
fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Reads what arrives within `wait`, until EOF or a whole error or health
/// answer. Callers wait generously (a loaded 2-core CI machine is slow to
/// answer 500 connections): an answer that comes ends the wait.
async fn read_for(s: &mut TcpStream, wait: Duration) -> String {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 8192];
    let _ = tokio::time::timeout(wait, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.windows(8).any(|w| w == b"</Error>") || got.ends_with(b"ok\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    String::from_utf8_lossy(&got).into_owned()
}

/// The head and fields of a form upload to `bucket` up to its file part:
/// unsigned, or with a policy whose signature is forged.
fn form_head(host: &str, bucket: &str, key_id: &str, region: &str, forged: bool, declared: usize) -> String {
    use base64::Engine;
    let b = "----sillok-abuse";
    let mut fields = vec![("key".to_string(), "stalled".to_string())];
    if forged {
        let t = time::OffsetDateTime::now_utc();
        let day = format!("{:04}{:02}{:02}", t.year(), t.month() as u8, t.day());
        let amz_date = format!("{day}T{:02}{:02}{:02}Z", t.hour(), t.minute(), t.second());
        let credential = format!("{key_id}/{day}/{region}/s3/aws4_request");
        let policy = serde_json::json!({
            "expiration": format!("{}-12-31T00:00:00Z", t.year() + 1),
            "conditions": [
                {"bucket": bucket},
                {"key": "stalled"},
                {"x-amz-algorithm": "AWS4-HMAC-SHA256"},
                {"x-amz-credential": credential},
                {"x-amz-date": amz_date},
            ]
        });
        fields.push(("policy".into(), base64::engine::general_purpose::STANDARD.encode(policy.to_string())));
        fields.push(("x-amz-algorithm".into(), "AWS4-HMAC-SHA256".into()));
        fields.push(("x-amz-credential".into(), credential));
        fields.push(("x-amz-date".into(), amz_date));
        fields.push(("x-amz-signature".into(), "0".repeat(64)));
    }
    let mut body = String::new();
    for (k, v) in fields {
        body.push_str(&format!("--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"));
    }
    body.push_str(&format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    ));
    format!(
        "POST /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={b}\r\nContent-Length: {declared}\r\n\r\n{body}"
    )
}

/// (b) to (g) on one cluster, each on its own extra gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_forms_greedy_clients_and_connection_floods_are_bounded() {
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("forms").send().await.expect("create bucket");
    // One after the other; each one's failure is reported, not only the
    // first, and with its own message (the last lines of a long CI log are
    // the ones that are read).
    let mut failed = Vec::new();
    part(&mut failed, "stalled forms", stalled_unsigned_forms_cost_only_their_fields(&cluster)).await;
    part(&mut failed, "request limit per client", a_client_over_its_request_limit_gets_slow_down(&cluster)).await;
    part(&mut failed, "connection limit", connections_over_the_limit_wait(&cluster)).await;
    part(&mut failed, "connections per client", a_client_over_its_connection_share_is_closed(&cluster)).await;
    part(&mut failed, "form buffer budget", signed_forms_share_the_form_buffer_budget(&cluster)).await;
    part(&mut failed, "GET send timeout", a_get_whose_client_stops_reading_is_ended(&cluster)).await;
    assert!(failed.is_empty(), "{} part(s) failed:\n{}", failed.len(), failed.join("\n"));
}

/// Runs one part of a composite test; a panic in it is recorded in
/// `failed` as "name: message" instead of ending the test.
async fn part(failed: &mut Vec<String>, name: &str, f: impl std::future::Future<Output = ()>) {
    use futures::FutureExt;
    if let Err(panic) = std::panic::AssertUnwindSafe(f).catch_unwind().await {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(a panic without a message)");
        // Assertions may carry a whole metrics page: the head is enough.
        let head: String = message.chars().take(1500).collect();
        failed.push(format!("{name}: {head}"));
    }
}

/// 500 form uploads declaring 32 MiB send their fields and then 512 KiB of
/// the file and stall. Half are unsigned, half carry a forged signature:
/// every one is refused after its fields, and the gateway's peak RSS grows
/// by less than 64 MiB (before the fix, the unsigned ones were buffered
/// until their policy could be checked: 125 MiB and more).
async fn stalled_unsigned_forms_cost_only_their_fields(cluster: &DevCluster) {
    let g = cluster.start_gateway("abuse-forms", &["--max-requests-per-client=1000"]);
    let gc = g.client();
    // Warm up: one PUT and GET through this gateway, so its pools exist.
    put(&gc, "forms", "warm", pattern(2 * MIB, 1)).await;
    assert_same(&get(&gc, "forms", "warm", None).await, &pattern(2 * MIB, 1), "warm-up object");
    let (_, rss_before) = memory_kib(g.pid());
    let host = g.endpoint.trim_start_matches("http://").to_string();
    let (key_id, region) = (cluster.env["AWS_ACCESS_KEY_ID"].clone(), cluster.region());
    let file = Arc::new(vec![7u8; 512 * KIB]);
    let forms = 500;
    let mut tasks = Vec::new();
    for i in 0..forms {
        let head = form_head(&host, "forms", &key_id, &region, i % 2 == 1, 32 * MIB);
        let (host, file) = (host.clone(), file.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(&host).await.expect("connect");
            s.write_all(head.as_bytes()).await.expect("the fields go out");
            // The answer comes before any of the file is sent.
            let answer = read_for(&mut s, Duration::from_secs(30)).await;
            // Then the file's first 512 KiB (refused forms: the gateway has
            // closed the connection, so this fails), and the client stalls.
            let _ = tokio::time::timeout(Duration::from_secs(10), s.write_all(&file)).await;
            (answer, s)
        }));
    }
    let mut held = Vec::new();
    let mut answers = Vec::new();
    for t in tasks {
        let (answer, s) = t.await.unwrap();
        answers.push(answer);
        held.push(s);
    }
    let (hwm, rss) = memory_kib(g.pid());
    eprintln!(
        "stalled forms: gateway RSS before {} MiB, after {} MiB, peak {} MiB ({forms} forms)",
        rss_before / 1024,
        rss / 1024,
        hwm / 1024
    );
    let refused_first = answers
        .iter()
        .filter(|a| {
            a.starts_with("HTTP/1.1 403")
                && (a.contains("<Code>AccessDenied</Code>") || a.contains("<Code>SignatureDoesNotMatch</Code>"))
        })
        .count();
    let sample = answers.iter().find(|a| !a.starts_with("HTTP/1.1 403")).cloned().unwrap_or_default();
    assert_eq!(refused_first, forms, "every stalled form is refused before its file; e.g. {sample:?}");
    assert!(
        hwm < rss_before + 64 * 1024,
        "the gateway's peak RSS grew from {} MiB to {} MiB",
        rss_before / 1024,
        hwm / 1024
    );
    drop(held);
    // The gateway still serves.
    put(&gc, "forms", "after", pattern(MIB + 3, 2)).await;
    assert_same(&get(&gc, "forms", "after", None).await, &pattern(MIB + 3, 2), "object after the forms");
}

/// A form upload that sends its head and half of its first field and
/// stalls: a request in flight, on its own connection.
async fn stalled_request(host: &str) -> TcpStream {
    let mut s = TcpStream::connect(host).await.unwrap();
    let head = format!(
        "POST /forms HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: 1000\r\n\r\n--x\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nhal"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

async fn a_client_over_its_request_limit_gets_slow_down(cluster: &DevCluster) {
    let g = cluster.start_gateway("abuse-client-limit", &["--max-requests-per-client=2"]);
    let host = g.endpoint.trim_start_matches("http://").to_string();
    let page = format!("{}/_sillok/metrics", g.endpoint);
    let first = stalled_request(&host).await;
    let _second = stalled_request(&host).await;
    wait_until(Duration::from_secs(20), "two requests in flight", async || {
        metric(&http_text(&page).await, "sillok_gateway_requests_in_flight") == Some(2.0)
    })
    .await;
    let ask = async || {
        let mut s = TcpStream::connect(&host).await.unwrap();
        s.write_all(format!("GET /forms HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await.unwrap();
        read_for(&mut s, Duration::from_secs(30)).await
    };
    let third = ask().await;
    assert!(third.starts_with("HTTP/1.1 503"), "{third}");
    assert!(third.contains("<Code>SlowDown</Code>"), "{third}");
    assert_eq!(metric(&http_text(&page).await, "sillok_gateway_client_limit_refusals_total"), Some(1.0));
    // One slot comes back: the next request is served (and refused for
    // being unsigned, not for its client's load).
    drop(first);
    wait_until(Duration::from_secs(20), "one request in flight", async || {
        metric(&http_text(&page).await, "sillok_gateway_requests_in_flight") == Some(1.0)
    })
    .await;
    let fourth = ask().await;
    assert!(fourth.starts_with("HTTP/1.1 403"), "{fourth}");
    assert!(fourth.contains("<Code>AccessDenied</Code>"), "{fourth}");
}

async fn connections_over_the_limit_wait(cluster: &DevCluster) {
    let ops = format!("127.0.0.1:{}", free_port());
    let g = cluster.start_gateway("abuse-conn-limit", &["--max-connections=2", &format!("--ops-listen={ops}")]);
    let host = g.endpoint.trim_start_matches("http://").to_string();
    let page = format!("http://{ops}/metrics");
    let idle_a = TcpStream::connect(&host).await.unwrap();
    let _idle_b = TcpStream::connect(&host).await.unwrap();
    wait_until(Duration::from_secs(20), "two connections open", async || {
        metric(&http_text(&page).await, "sillok_gateway_connections_open") == Some(2.0)
    })
    .await;
    // A third connection is made (the kernel's backlog) but not served.
    let mut third = TcpStream::connect(&host).await.unwrap();
    third.write_all(format!("GET /_sillok/health HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await.unwrap();
    let early = read_for(&mut third, Duration::from_secs(2)).await;
    assert_eq!(early, "", "a connection over the limit was served");
    let text = http_text(&page).await;
    assert_eq!(metric(&text, "sillok_gateway_connections_open"), Some(2.0), "{text}");
    assert!(metric(&text, "sillok_gateway_connection_limit_reached_total").unwrap_or(0.0) >= 1.0, "{text}");
    // One ends: the waiting one is accepted and answered.
    drop(idle_a);
    let answer = read_for(&mut third, Duration::from_secs(20)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
}

/// A signed form upload (valid policy and signature, keys under `uploads/`)
/// of `file_len` bytes, up to its file part.
fn signed_form_head(cluster: &DevCluster, host: &str, key: &str, file_len: usize) -> (String, String) {
    let b = "----sillok-abuse-signed";
    let mut fields = String::new();
    for (k, v) in crate::cors::post_policy_fields(cluster, "forms", key) {
        fields.push_str(&format!("--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"));
    }
    fields.push_str(&format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    ));
    let tail = format!("\r\n--{b}--\r\n");
    let len = fields.len() + file_len + tail.len();
    let head = format!(
        "POST /forms HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={b}\r\nContent-Length: {len}\r\n\r\n{fields}"
    );
    (head, tail)
}

/// (e) Signed forms pass their precheck and are buffered whole, each up to
/// `--post-max-size`: together at most `--form-buffer-total`. With room for
/// two 1 MiB forms, two stalled ones are buffering and a third is answered
/// `503 SlowDown` at once; when one of the two goes away, a new one fits
/// and is stored. (Before the budget, the third was buffered too.)
async fn signed_forms_share_the_form_buffer_budget(cluster: &DevCluster) {
    let g = cluster.start_gateway("abuse-form-budget", &["--post-max-size=1048576", "--form-buffer-total=2097152"]);
    let host = g.endpoint.trim_start_matches("http://").to_string();
    let page = format!("{}/_sillok/metrics", g.endpoint);
    let file = pattern(1000 * KIB, 5);
    let stalled = async |key: &str| {
        let (head, _) = signed_form_head(cluster, &host, key, file.len());
        let mut s = TcpStream::connect(&host).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&file[..100 * KIB]).await.unwrap();
        s
    };
    let first = stalled("uploads/a").await;
    let _second = stalled("uploads/b").await;
    wait_until(Duration::from_secs(20), "two forms reserved in the budget", async || {
        metric(&http_text(&page).await, "sillok_gateway_form_buffer_reserved_bytes").unwrap_or(0.0) >= 2000.0 * 1024.0
    })
    .await;
    let mut third = stalled("uploads/c").await;
    let answer = read_for(&mut third, Duration::from_secs(30)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("<Code>SlowDown</Code>"), "{answer}");
    assert_eq!(metric(&http_text(&page).await, "sillok_gateway_form_buffer_refusals_total"), Some(1.0));
    // One goes away: its room comes back, and a whole form is stored.
    drop(first);
    wait_until(Duration::from_secs(20), "one form reserved", async || {
        metric(&http_text(&page).await, "sillok_gateway_form_buffer_reserved_bytes").unwrap_or(f64::MAX)
            < 1100.0 * 1024.0
    })
    .await;
    let (head, tail) = signed_form_head(cluster, &host, "uploads/d", file.len());
    let mut s = TcpStream::connect(&host).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&file).await.unwrap();
    s.write_all(tail.as_bytes()).await.unwrap();
    let answer = read_for(&mut s, Duration::from_secs(20)).await;
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    assert_same(&get(&g.client(), "forms", "uploads/d", None).await, &file, "the form stored after room came back");
}

/// (f) A client that asks for a 32 MiB object and reads nothing: after
/// `--send-timeout-s` (2 s here) the gateway ends the GET (its stripe reader
/// gives up on the full queue, and the connection's blocked write fails), so
/// the client, reading at last, gets only what was already in the socket
/// buffers, and the connection closes. (Without the timeout it got all 32 MiB.)
async fn a_get_whose_client_stops_reading_is_ended(cluster: &DevCluster) {
    use aws_sdk_s3::presigning::PresigningConfig;
    let g = cluster.start_gateway("abuse-send-timeout", &["--send-timeout-s=2"]);
    let host = g.endpoint.trim_start_matches("http://").to_string();
    let gc = g.client();
    let size = 32 * MIB;
    put(&gc, "forms", "big", pattern(size, 6)).await;
    let url = gc
        .get_object()
        .bucket("forms")
        .key("big")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
        .await
        .unwrap();
    let uri: http::Uri = url.uri().parse().unwrap();
    let mut s = TcpStream::connect(&host).await.unwrap();
    let target = uri.path_and_query().unwrap().as_str();
    s.write_all(format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await.unwrap();
    // Three times the send timeout without reading (a wait, not a measurement).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut got = Vec::new();
    let read_all = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read_all.is_ok(), "the connection did not close");
    assert!(got.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&got[..got.len().min(200)]));
    assert!(got.len() < size, "the client got all {} bytes; the GET was not ended", got.len());
    let ended_by_reader = metric(
        &http_text(&format!("{}/_sillok/metrics", g.endpoint)).await,
        "sillok_gateway_client_send_timeouts_total",
    );
    eprintln!(
        "send timeout: the stalled client got {} of {size} bytes (stripe reader timeouts: {ended_by_reader:?})",
        got.len()
    );
    // The gateway serves the object whole to a reader.
    assert_same(&get(&gc, "forms", "big", None).await, &pattern(size, 6), "GET after the stalled one");
}

/// (g) One client IP may hold `--max-connections-per-client` connections (2
/// here); its next one is closed unread, while the two it has are served.
/// (Before the limit, the third was served too.)
async fn a_client_over_its_connection_share_is_closed(cluster: &DevCluster) {
    let g = cluster.start_gateway("abuse-conn-per-client", &["--max-connections-per-client=2"]);
    let host = g.endpoint.trim_start_matches("http://").to_string();
    let health = format!("GET /_sillok/health HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let mut a = TcpStream::connect(&host).await.unwrap();
    let mut b = TcpStream::connect(&host).await.unwrap();
    for s in [&mut a, &mut b] {
        s.write_all(health.as_bytes()).await.unwrap();
        let answer = read_for(s, Duration::from_secs(30)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    }
    let mut third = TcpStream::connect(&host).await.unwrap();
    let _ = third.write_all(health.as_bytes()).await;
    let mut buf = [0u8; 256];
    let got = tokio::time::timeout(Duration::from_secs(30), third.read(&mut buf)).await;
    assert!(
        matches!(got, Ok(Ok(0)) | Ok(Err(_))),
        "the third connection was not closed: {got:?} {:?}",
        String::from_utf8_lossy(&buf)
    );
    let page = format!("{}/_sillok/metrics", g.endpoint);
    // Asked on a connection of its own: one of the two goes first.
    drop(a);
    let text = wait_until(Duration::from_secs(20), "a connection slot back", async || {
        let t = http_text(&page).await;
        t.contains("sillok_gateway_client_connection_refusals_total").then_some(t)
    })
    .await;
    assert!(metric(&text, "sillok_gateway_client_connection_refusals_total").unwrap_or(0.0) >= 1.0, "{text}");
}
