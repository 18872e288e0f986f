//! CORS against a real `sillok dev`: Put/Get/DeleteBucketCors through
//! aws-sdk-s3 (with S3's refusals of bad configurations, and a second
//! gateway that learns the configuration through the Raft catalog), preflight
//! `OPTIONS` requests sent raw (path and virtual-host style), and the CORS
//! headers on actual requests: presigned GET and PUT, a browser form (POST)
//! upload, and an error, as a browser sends them.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::types::{CorsConfiguration, CorsRule};
use http_body_util::{BodyExt, Full};

use crate::support::*;

const APP: &str = "https://app.chat.example";

fn code<E: ProvideErrorMetadata>(e: &aws_sdk_s3::error::SdkError<E>) -> String {
    e.as_service_error().and_then(|s| s.code()).unwrap_or("(no service error)").to_string()
}

fn rule(origins: &[&str], methods: &[&str], headers: &[&str], expose: &[&str], max_age: Option<i32>) -> CorsRule {
    let mut b = CorsRule::builder();
    for o in origins {
        b = b.allowed_origins(*o);
    }
    for m in methods {
        b = b.allowed_methods(*m);
    }
    for h in headers {
        b = b.allowed_headers(*h);
    }
    for h in expose {
        b = b.expose_headers(*h);
    }
    b.set_max_age_seconds(max_age).build().unwrap()
}

fn config(rules: Vec<CorsRule>) -> CorsConfiguration {
    CorsConfiguration::builder().set_cors_rules(Some(rules)).build().unwrap()
}

/// The rules most tests use: the chat web app may do everything with a few
/// headers; any subdomain of viewer.example may GET; anyone may HEAD.
fn chat_rules() -> Vec<CorsRule> {
    vec![
        rule(
            &[APP],
            &["GET", "PUT", "POST", "DELETE", "HEAD"],
            &["content-type", "x-amz-*"],
            &["ETag", "x-amz-request-id"],
            Some(600),
        ),
        rule(&["https://*.viewer.example"], &["GET"], &[], &[], None),
        rule(&["*"], &["HEAD"], &[], &[], None),
    ]
}

/// A plain HTTP request (no signature): (status, headers, body text).
async fn send(url: &str, method: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, http::HeaderMap, String) {
    let mut b = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let resp = http.request(b.body(Full::new(bytes::Bytes::from(body))).unwrap()).await.unwrap();
    let st = resp.status().as_u16();
    let h = resp.headers().clone();
    let text = String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned();
    (st, h, text)
}

fn header<'a>(h: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap())
}

const VARY: &str = "Origin, Access-Control-Request-Headers, Access-Control-Request-Method";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_configuration_put_get_delete_and_refusals() {
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("web").send().await.unwrap();

    let err = c.get_bucket_cors().bucket("web").send().await.unwrap_err();
    assert_eq!(code(&err), "NoSuchCORSConfiguration");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(404));
    let err = c.get_bucket_cors().bucket("nobucket").send().await.unwrap_err();
    assert_eq!(code(&err), "NoSuchBucket");

    let mut rules = chat_rules();
    rules.push(
        CorsRule::builder()
            .id("admin-page")
            .allowed_origins("https://admin.example")
            .allowed_methods("DELETE")
            .build()
            .unwrap(),
    );
    c.put_bucket_cors().bucket("web").cors_configuration(config(rules.clone())).send().await.unwrap();
    let got = c.get_bucket_cors().bucket("web").send().await.unwrap();
    assert_eq!(got.cors_rules(), rules.as_slice(), "the configuration comes back as it was put");

    // Bad configurations are refused with S3's codes, and change nothing.
    let bad: Vec<(Vec<CorsRule>, &str)> = vec![
        (vec![rule(&[APP], &["PATCH"], &[], &[], None)], "InvalidRequest"),
        (vec![rule(&["https://*.*.example"], &["GET"], &[], &[], None)], "InvalidRequest"),
        (vec![rule(&[APP], &["GET"], &["x-*-*"], &[], None)], "InvalidRequest"),
        (vec![rule(&[APP], &["GET"], &[], &["x-amz-*"], None)], "InvalidRequest"),
        (vec![rule(&[APP], &["GET"], &[], &[], Some(-5))], "InvalidRequest"),
        (vec![rule(&[APP], &["GET"], &[], &[], None); 101], "MalformedXML"),
    ];
    for (rules, want) in bad {
        let n = rules.len();
        let err = c.put_bucket_cors().bucket("web").cors_configuration(config(rules)).send().await.unwrap_err();
        assert_eq!(code(&err), want, "{n} rules: {err:?}");
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
    }
    // An empty configuration (no CORSRule) is malformed.
    let empty = CorsConfiguration::builder().set_cors_rules(Some(vec![])).build().unwrap();
    let err = c.put_bucket_cors().bucket("web").cors_configuration(empty).send().await.unwrap_err();
    assert_eq!(code(&err), "MalformedXML");
    assert_eq!(c.get_bucket_cors().bucket("web").send().await.unwrap().cors_rules(), rules.as_slice());
    // Exactly 100 rules are fine.
    let hundred = vec![rule(&[APP], &["GET"], &[], &[], None); 100];
    c.put_bucket_cors().bucket("web").cors_configuration(config(hundred)).send().await.unwrap();
    assert_eq!(c.get_bucket_cors().bucket("web").send().await.unwrap().cors_rules().len(), 100);
    c.put_bucket_cors().bucket("web").cors_configuration(config(rules.clone())).send().await.unwrap();

    // Writing needs the write permission; reading it, read.
    let ro: serde_json::Value =
        serde_json::from_str(&cluster.admin_ok(&["key", "create", "--read-only", "--json"])).unwrap();
    let ro = cluster.client_with(ro["access_key_id"].as_str().unwrap(), ro["secret_access_key"].as_str().unwrap());
    let err = ro.put_bucket_cors().bucket("web").cors_configuration(config(chat_rules())).send().await.unwrap_err();
    assert_eq!(code(&err), "AccessDenied");
    let err = ro.delete_bucket_cors().bucket("web").send().await.unwrap_err();
    assert_eq!(code(&err), "AccessDenied");
    assert_eq!(ro.get_bucket_cors().bucket("web").send().await.unwrap().cors_rules(), rules.as_slice());

    // Another gateway learns it through the catalog.
    let other = cluster.start_gateway("gw2", &[]);
    let preflight_at = |endpoint: String| async move {
        send(
            &format!("{endpoint}/web/a.jpg"),
            "OPTIONS",
            &[("origin", APP), ("access-control-request-method", "PUT")],
            vec![],
        )
        .await
        .0
    };
    wait_until(Duration::from_secs(15), "the second gateway to allow the preflight", async || {
        preflight_at(other.endpoint.clone()).await == 200
    })
    .await;

    // Deleted: 204, then gone everywhere; deleting again is still 204.
    c.delete_bucket_cors().bucket("web").send().await.unwrap();
    let err = c.get_bucket_cors().bucket("web").send().await.unwrap_err();
    assert_eq!(code(&err), "NoSuchCORSConfiguration");
    c.delete_bucket_cors().bucket("web").send().await.unwrap();
    assert_eq!(preflight_at(cluster.endpoint()).await, 403);
    wait_until(Duration::from_secs(15), "the second gateway to refuse the preflight", async || {
        preflight_at(other.endpoint.clone()).await == 403
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_requests_are_evaluated_as_s3_does() {
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("web").send().await.unwrap();
    c.create_bucket().bucket("plain").send().await.unwrap();
    c.put_bucket_cors().bucket("web").cors_configuration(config(chat_rules())).send().await.unwrap();
    let ep = cluster.endpoint();
    let url = format!("{ep}/web/2026/cat.jpg");
    let options = |origin: &'static str, method: &'static str, headers: Option<&'static str>| {
        let url = url.clone();
        async move {
            let mut h = vec![("origin", origin), ("access-control-request-method", method)];
            if let Some(v) = headers {
                h.push(("access-control-request-headers", v));
            }
            send(&url, "OPTIONS", &h, vec![]).await
        }
    };

    // The app's upload: origin, method and every requested header allowed.
    let (st, h, _) = options(APP, "PUT", Some("Content-Type, X-Amz-Date,x-amz-content-sha256")).await;
    assert_eq!(st, 200);
    assert_eq!(header(&h, "access-control-allow-origin"), Some(APP));
    assert_eq!(header(&h, "access-control-allow-credentials"), Some("true"));
    assert_eq!(header(&h, "access-control-allow-methods"), Some("GET, PUT, POST, DELETE, HEAD"));
    assert_eq!(header(&h, "access-control-allow-headers"), Some("content-type, x-amz-date, x-amz-content-sha256"));
    assert_eq!(header(&h, "access-control-expose-headers"), Some("ETag, x-amz-request-id"));
    assert_eq!(header(&h, "access-control-max-age"), Some("600"));
    assert_eq!(header(&h, "vary"), Some(VARY));
    assert!(h.contains_key("x-amz-request-id"));

    // One header not allowed: refused.
    let (st, h, body) = options(APP, "PUT", Some("content-type, authorization")).await;
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("<Code>AccessForbidden</Code>") && body.contains("CORSResponse"), "{body}");
    assert!(!h.contains_key("access-control-allow-origin"));
    // Origins match exactly (scheme, case) or by their one wildcard.
    assert_eq!(options("http://app.chat.example", "PUT", None).await.0, 403);
    assert_eq!(options("https://APP.chat.example", "GET", None).await.0, 403);
    let (st, h, _) = options("https://m.viewer.example", "GET", None).await;
    assert_eq!((st, header(&h, "access-control-allow-origin")), (200, Some("https://m.viewer.example")));
    assert!(!h.contains_key("access-control-allow-headers"));
    assert_eq!(options("https://m.viewer.example", "PUT", None).await.0, 403, "GET only");
    assert_eq!(options("https://m.viewer.example", "GET", Some("range")).await.0, 403, "no headers allowed");
    assert_eq!(options("https://viewer.example", "GET", None).await.0, 403, "the wildcard needs a subdomain");
    // A rule whose origin is `*`: `Access-Control-Allow-Origin: *`, no credentials.
    let (st, h, _) = options("https://anyone.example", "HEAD", None).await;
    assert_eq!((st, header(&h, "access-control-allow-origin")), (200, Some("*")));
    assert!(!h.contains_key("access-control-allow-credentials"));
    assert_eq!(options("https://anyone.example", "DELETE", None).await.0, 403);

    // Virtual-host style (`sillok dev` serves the `localhost` domain).
    let (st, h, _) = send(
        &format!("{ep}/2026/cat.jpg"),
        "OPTIONS",
        &[("host", "web.localhost"), ("origin", APP), ("access-control-request-method", "GET")],
        vec![],
    )
    .await;
    assert_eq!((st, header(&h, "access-control-allow-origin")), (200, Some(APP)));
    // The bucket itself (a listing from the browser).
    let (st, _, _) =
        send(&format!("{ep}/web"), "OPTIONS", &[("origin", APP), ("access-control-request-method", "GET")], vec![])
            .await;
    assert_eq!(st, 200);

    // Missing headers: 400; unknown bucket: 404; no configuration: 403.
    let (st, _, body) = send(&url, "OPTIONS", &[("access-control-request-method", "GET")], vec![]).await;
    assert_eq!(st, 400, "{body}");
    let (st, _, body) = send(&url, "OPTIONS", &[("origin", APP)], vec![]).await;
    assert_eq!(st, 400, "{body}");
    let (st, _, body) = send(
        &format!("{ep}/nobucket/k"),
        "OPTIONS",
        &[("origin", APP), ("access-control-request-method", "GET")],
        vec![],
    )
    .await;
    assert_eq!(st, 404);
    assert!(body.contains("<Code>NoSuchBucket</Code>"), "{body}");
    // A name no bucket can have (the gateway's own routes, for one).
    let (st, _, body) = send(
        &format!("{ep}/_sillok/health"),
        "OPTIONS",
        &[("origin", APP), ("access-control-request-method", "GET")],
        vec![],
    )
    .await;
    assert_eq!(st, 404, "{body}");
    let (st, _, body) =
        send(&format!("{ep}/plain/k"), "OPTIONS", &[("origin", APP), ("access-control-request-method", "GET")], vec![])
            .await;
    assert_eq!(st, 403);
    assert!(body.contains("<Code>AccessForbidden</Code>"), "{body}");
}

/// The fields of a browser form upload signed with SigV4 (a POST policy that
/// allows keys under `uploads/`), as a chat backend hands them to a web client.
pub(crate) fn post_policy_fields(cluster: &DevCluster, bucket: &str, key: &str) -> Vec<(String, String)> {
    use base64::Engine;
    let (akid, secret, region) =
        (&cluster.env["AWS_ACCESS_KEY_ID"], &cluster.env["AWS_SECRET_ACCESS_KEY"], cluster.region());
    let now = SystemTime::now();
    let t = time::OffsetDateTime::from(now);
    let day = format!("{:04}{:02}{:02}", t.year(), t.month() as u8, t.day());
    let amz_date = format!("{day}T{:02}{:02}{:02}Z", t.hour(), t.minute(), t.second());
    let exp = t + time::Duration::minutes(10);
    let expiration = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        exp.year(),
        exp.month() as u8,
        exp.day(),
        exp.hour(),
        exp.minute(),
        exp.second()
    );
    let credential = format!("{akid}/{day}/{region}/s3/aws4_request");
    let policy = serde_json::json!({
        "expiration": expiration,
        "conditions": [
            {"bucket": bucket},
            ["starts-with", "$key", "uploads/"],
            {"x-amz-algorithm": "AWS4-HMAC-SHA256"},
            {"x-amz-credential": credential},
            {"x-amz-date": amz_date},
        ]
    });
    let policy = base64::engine::general_purpose::STANDARD.encode(policy.to_string());
    let signing_key = aws_sigv4::sign::v4::generate_signing_key(secret, now, &region, "s3");
    let signature = aws_sigv4::sign::v4::calculate_signature(signing_key, policy.as_bytes());
    [
        ("key", key.to_string()),
        ("policy", policy),
        ("x-amz-algorithm", "AWS4-HMAC-SHA256".to_string()),
        ("x-amz-credential", credential),
        ("x-amz-date", amz_date),
        ("x-amz-signature", signature),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A form upload's multipart body (the fields, then the file) and its boundary.
fn form_upload(cluster: &DevCluster, bucket: &str, key: &str, file: &[u8]) -> (Vec<u8>, String) {
    let boundary = "----sillok-cors-form-7d1c".to_string();
    let mut body = Vec::new();
    for (name, value) in post_policy_fields(cluster, bucket, key) {
        body.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").bytes(),
        );
    }
    body.extend(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cat.png\"\r\n\
             Content-Type: image/png\r\n\r\n"
        )
        .bytes(),
    );
    body.extend_from_slice(file);
    body.extend(format!("\r\n--{boundary}--\r\n").bytes());
    (body, boundary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actual_requests_and_their_errors_carry_cors_headers() {
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("web").send().await.unwrap();
    c.put_bucket_cors().bucket("web").cors_configuration(config(chat_rules())).send().await.unwrap();
    let presign = || PresigningConfig::expires_in(Duration::from_secs(300)).unwrap();
    let image = pattern(150_000, 7);

    // Presigned PUT from the app (the browser adds Origin).
    let req = c.put_object().bucket("web").key("2026/cat.jpg").presigned(presign()).await.unwrap();
    let mut headers: Vec<(&str, &str)> = req.headers().collect();
    headers.push(("origin", APP));
    let (st, h, body) = send(req.uri(), "PUT", &headers, image.clone()).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(header(&h, "access-control-allow-origin"), Some(APP));
    assert_eq!(header(&h, "access-control-allow-credentials"), Some("true"));
    assert_eq!(header(&h, "access-control-expose-headers"), Some("ETag, x-amz-request-id"));
    assert_eq!(header(&h, "vary"), Some(VARY));
    assert!(h.contains_key("etag"));

    // Presigned GET from a viewer subdomain: headers, and the bytes.
    let get_url = c.get_object().bucket("web").key("2026/cat.jpg").presigned(presign()).await.unwrap();
    let viewer = "https://m.viewer.example";
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let resp = http
        .request(http::Request::get(get_url.uri()).header("origin", viewer).body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(header(resp.headers(), "access-control-allow-origin"), Some(viewer));
    assert_eq!(header(resp.headers(), "access-control-allow-methods"), Some("GET"));
    assert!(!resp.headers().contains_key("access-control-expose-headers"));
    assert_same(&resp.into_body().collect().await.unwrap().to_bytes(), &image, "presigned GET with an Origin");

    // Not allowed: the origin (no rule) or the method (viewers may only GET).
    let (st, h, _) = send(get_url.uri(), "GET", &[("origin", "https://evil.example")], vec![]).await;
    assert_eq!(st, 200, "CORS does not refuse the request itself; the browser hides the answer");
    assert!(!h.contains_key("access-control-allow-origin"));
    assert_eq!(header(&h, "vary"), Some(VARY));
    let del = c.delete_object().bucket("web").key("2026/none.jpg").presigned(presign()).await.unwrap();
    let (st, h, _) = send(del.uri(), "DELETE", &[("origin", viewer)], vec![]).await;
    assert_eq!(st, 204);
    assert!(!h.contains_key("access-control-allow-origin"));
    // ...but the app may DELETE, and anyone may HEAD (`*`).
    let (st, h, _) = send(del.uri(), "DELETE", &[("origin", APP)], vec![]).await;
    assert_eq!((st, header(&h, "access-control-allow-origin")), (204, Some(APP)));
    let head = c.head_object().bucket("web").key("2026/cat.jpg").presigned(presign()).await.unwrap();
    let (st, h, _) = send(head.uri(), "HEAD", &[("origin", "https://anyone.example")], vec![]).await;
    assert_eq!((st, header(&h, "access-control-allow-origin")), (200, Some("*")));
    // Without an Origin: no CORS headers at all.
    let (_, h, _) = send(get_url.uri(), "GET", &[], vec![]).await;
    assert!(!h.contains_key("access-control-allow-origin") && !h.contains_key("vary"));

    // An error a browser must be able to read: 404 NoSuchKey.
    let missing = c.get_object().bucket("web").key("2026/gone.jpg").presigned(presign()).await.unwrap();
    let (st, h, body) = send(missing.uri(), "GET", &[("origin", viewer)], vec![]).await;
    assert_eq!(st, 404);
    assert!(body.contains("<Code>NoSuchKey</Code>"), "{body}");
    assert_eq!(header(&h, "access-control-allow-origin"), Some(viewer));
    // And an authentication error (a tampered URL: 403).
    let tampered = get_url.uri().replace("2026/cat.jpg", "2026/dog.jpg");
    let (st, h, body) = send(&tampered, "GET", &[("origin", APP)], vec![]).await;
    assert_eq!(st, 403, "{body}");
    assert_eq!(header(&h, "access-control-allow-origin"), Some(APP));

    // A browser form upload (POST policy) from the app.
    let file = pattern(40_000, 9);
    let (form, boundary) = form_upload(&cluster, "web", "uploads/cat.png", &file);
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let (st, h, body) =
        send(&format!("{}/web", cluster.endpoint()), "POST", &[("origin", APP), ("content-type", &content_type)], form)
            .await;
    assert_eq!(st, 204, "{body}");
    assert_eq!(header(&h, "access-control-allow-origin"), Some(APP));
    assert_eq!(header(&h, "access-control-expose-headers"), Some("ETag, x-amz-request-id"));
    assert_same(&get(&c, "web", "uploads/cat.png", None).await, &file, "the form upload");
    // A form that breaks its policy is refused, with the CORS headers.
    let (form, boundary) = form_upload(&cluster, "web", "elsewhere/cat.png", &file);
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let (st, h, body) =
        send(&format!("{}/web", cluster.endpoint()), "POST", &[("origin", APP), ("content-type", &content_type)], form)
            .await;
    assert_eq!(st, 403, "{body}");
    assert_eq!(header(&h, "access-control-allow-origin"), Some(APP));
}

/// The headless browser, if one is installed (`.ci/run` installs Debian's
/// chromium and sets `SILLOK_REQUIRE_CLIENTS=1`, which makes a missing one
/// a failure instead of a skip).
fn browser() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"].into_iter().find(|b| {
        std::process::Command::new(b)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Serves `page` as text/html to every request on `listener` (the web app's
/// origin, another port than the gateway's).
async fn serve_page(listener: tokio::net::TcpListener, page: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { return };
        let page = page.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 << 10];
            let mut got = 0;
            while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") && got < buf.len() {
                match stream.read(&mut buf[got..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got += n,
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                page.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(page.as_bytes()).await;
        });
    }
}

/// The web app: draws an image, uploads it through a presigned PUT (a
/// preflighted request) and through a POST form, reads each ETag (an exposed
/// header), then displays both uploads from presigned GETs in a canvas that
/// CORS leaves readable, and writes what happened into `<pre id=out>`.
const APP_PAGE: &str = r#"<!doctype html>
<html><head><title>uploading</title></head><body><pre id="out"></pre><script>
const cfg = JSON.parse(atob("CONFIG"));
const lines = [];
const say = (s) => { lines.push(s); document.getElementById("out").textContent = lines.join("\n"); };
function drawn() {
  const c = document.createElement("canvas");
  c.width = 8; c.height = 8;
  const g = c.getContext("2d");
  g.fillStyle = "rgb(200, 30, 60)";
  g.fillRect(0, 0, 8, 8);
  return new Promise((ok) => c.toBlob(ok, "image/png"));
}
function shown(url) {
  return new Promise((ok) => {
    const img = new Image();
    img.crossOrigin = "anonymous";
    img.onload = () => {
      const c = document.createElement("canvas");
      c.width = img.width; c.height = img.height;
      const g = c.getContext("2d");
      g.drawImage(img, 0, 0);
      try { ok("pixel " + Array.from(g.getImageData(1, 1, 1, 1).data.slice(0, 3)).join(",")); }
      catch (e) { ok("unreadable " + e.name); }
      document.body.appendChild(img);
    };
    img.onerror = () => ok("image failed to load");
    img.src = url;
  });
}
(async () => {
  try {
    const png = await drawn();
    const put = await fetch(cfg.put, { method: "PUT", body: png, headers: { "content-type": "image/png" } });
    say("put " + put.status + " etag " + put.headers.get("etag"));
    const form = new FormData();
    for (const [k, v] of cfg.fields) form.append(k, v);
    form.append("file", png, "cat.png");
    const post = await fetch(cfg.post, { method: "POST", body: form });
    say("post " + post.status + " etag " + post.headers.get("etag"));
    say("show put " + (await shown(cfg.get_put)));
    say("show post " + (await shown(cfg.get_post)));
    const missing = await fetch(cfg.missing);
    const text = await missing.text();
    say("missing " + missing.status + " " + (text.includes("<Code>NoSuchKey</Code>") ? "NoSuchKey" : text));
  } catch (e) {
    say("failed " + e);
  }
  document.title = "done";
})();
</script></body></html>
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_headless_browser_uploads_and_displays_through_cors() {
    let Some(browser) = browser() else {
        let required = std::env::var("SILLOK_REQUIRE_CLIENTS").is_ok_and(|v| !v.is_empty() && v != "0");
        assert!(!required, "SILLOK_REQUIRE_CLIENTS is set, but no chromium is installed (.ci/run installs it)");
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "\n!!!!! SKIPPED: chromium not installed (the browser CORS test) !!!!!\n");
        return;
    };
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("web").send().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let allowed = rule(&[&origin], &["GET", "PUT", "POST"], &["*"], &["ETag"], Some(60));
    c.put_bucket_cors().bucket("web").cors_configuration(config(vec![allowed])).send().await.unwrap();

    let presign = || PresigningConfig::expires_in(Duration::from_secs(600)).unwrap();
    let put = c.put_object().bucket("web").key("chat/put.png").presigned(presign()).await.unwrap();
    let get_put = c.get_object().bucket("web").key("chat/put.png").presigned(presign()).await.unwrap();
    let get_post = c.get_object().bucket("web").key("uploads/post.png").presigned(presign()).await.unwrap();
    let missing = c.get_object().bucket("web").key("chat/none.png").presigned(presign()).await.unwrap();
    let fields: Vec<[String; 2]> =
        post_policy_fields(&cluster, "web", "uploads/post.png").into_iter().map(|(k, v)| [k, v]).collect();
    let cfg = serde_json::json!({
        "put": put.uri(),
        "post": format!("{}/web", cluster.endpoint()),
        "fields": fields,
        "get_put": get_put.uri(),
        "get_post": get_post.uri(),
        "missing": missing.uri(),
    });
    use base64::Engine;
    let page = APP_PAGE.replace("CONFIG", &base64::engine::general_purpose::STANDARD.encode(cfg.to_string()));
    let server = tokio::spawn(serve_page(listener, page));

    let profile = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--virtual-time-budget=20000"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", &format!("{origin}/app.html")])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), out).await.expect("the browser finished").unwrap();
    server.abort();
    let dom = String::from_utf8_lossy(&out.stdout);
    let report = || format!("DOM:\n{dom}\nbrowser stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(dom.contains("<title>done</title>"), "{}", report());
    let head = |key: &'static str| c.head_object().bucket("web").key(key).send();
    let etag = |r: Result<aws_sdk_s3::operation::head_object::HeadObjectOutput, _>| match r {
        Ok(o) => o.e_tag().unwrap().to_string(),
        Err(e) => panic!("the browser's upload is not there ({e:?}); {}", report()),
    };
    let put_etag = etag(head("chat/put.png").await);
    let post_etag = etag(head("uploads/post.png").await);
    for want in [
        format!("put 200 etag {put_etag}"),
        format!("post 204 etag {post_etag}"),
        "show put pixel 200,30,60".to_string(),
        "show post pixel 200,30,60".to_string(),
        "missing 404 NoSuchKey".to_string(),
    ] {
        assert!(dom.contains(&want.replace('"', "&quot;")) || dom.contains(&want), "want {want:?}; {}", report());
    }
    let png = get(&c, "web", "chat/put.png", None).await;
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "the browser's PNG was stored");
}
