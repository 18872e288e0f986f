//! Where S3's API reference pins an exact answer (issue 16, point 5):
//! repeated and concurrent CompleteMultipartUpload, request bodies without a
//! Content-Length, key length, non-ASCII user metadata (RFC 2047),
//! Content-Encoding with aws-chunked, HEAD/GET by part number and range, and
//! the headers of a 304. Raw signed requests (the helpers of `s3_compat`)
//! where an SDK would not send what a test needs.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use base64::Engine;

use crate::s3_compat::{Signed, crc32_trailer_upload, raw, sign_request};
use crate::support::*;

const MIB: usize = 1 << 20;

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

fn header(h: &http::HeaderMap, name: &str) -> Option<String> {
    h.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// Uploads `parts` to a new multipart upload of `bucket/key`; returns the
/// upload id, the parts to complete with, and S3's ETag for the result.
async fn upload_parts(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    parts: &[Vec<u8>],
) -> (String, Vec<CompletedPart>, String) {
    let id = c.create_multipart_upload().bucket(bucket).key(key).send().await.unwrap().upload_id().unwrap().to_string();
    let mut done = Vec::new();
    let mut md5s = Vec::new();
    for (i, data) in parts.iter().enumerate() {
        let n = i as i32 + 1;
        let out = c
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("part {n}: {}", DisplayErrorContext(&e)));
        done.push(CompletedPart::builder().part_number(n).e_tag(out.e_tag().unwrap()).build());
        use md5::Digest;
        md5s.extend_from_slice(&md5::Md5::digest(data));
    }
    (id, done, format!("\"{}-{}\"", md5_hex(&md5s), parts.len()))
}

/// An SDK whose first CompleteMultipartUpload answer was lost sends it
/// again, possibly while the first is still finishing; a client may also
/// send several at once. S3 answers every one 200 with the same ETag. Each
/// round completes one upload six times: at once (every fourth round) or
/// launched 3, 6 or 10 ms apart (to land in the first completion's cleanup,
/// which removes the parts the others are reading), then once more after
/// all have answered. Before the fix, 3 runs of 3 failed with `InvalidPart`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_multipart_upload_repeated_or_concurrent_answers_200_every_time() {
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("done").send().await.unwrap();
    for round in 0..16u64 {
        let key = format!("clip-{round}.mp4");
        // One part (the last part may be small), erasure-coded.
        let data = [pattern(100_000, round + 1)];
        let (id, parts, want) = upload_parts(&c, "done", &key, &data).await;
        let complete = |c: aws_sdk_s3::Client| {
            let (key, id, parts) = (key.clone(), id.clone(), parts.clone());
            async move {
                c.complete_multipart_upload()
                    .bucket("done")
                    .key(&key)
                    .upload_id(&id)
                    .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                    .send()
                    .await
                    .map(|o| o.e_tag().unwrap_or_default().to_string())
                    .map_err(|e| DisplayErrorContext(&e).to_string())
            }
        };
        let tasks: Vec<_> = (0..6u64)
            .map(|i| {
                let attempt = complete(c.clone());
                tokio::spawn(async move {
                    let step = [0, 3, 6, 10][round as usize % 4];
                    tokio::time::sleep(Duration::from_millis(step * i)).await;
                    attempt.await
                })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            let etag = t.await.unwrap().unwrap_or_else(|e| panic!("round {round}, completion {i}: {e}"));
            assert_eq!(etag, want, "round {round}, completion {i}");
        }
        let again = complete(c.clone()).await.unwrap_or_else(|e| panic!("round {round}, the retry after: {e}"));
        assert_eq!(again, want, "round {round}: the retry after");
        assert_same(&get(&c, "done", &key, None).await, &data.concat(), &format!("round {round}: the object"));
        // The upload is gone for good (its record is cleaned up in the background).
        wait_until(Duration::from_secs(30), format!("round {round}: the upload to leave the listing"), async || {
            let l = c.list_multipart_uploads().bucket("done").send().await.unwrap();
            let ids: Vec<String> = l.uploads().iter().filter_map(|u| u.upload_id().map(str::to_string)).collect();
            if ids.is_empty() { Ok(()) } else { Err(format!("still listed: {ids:?}")) }
        })
        .await;
    }
}

/// A signed request sent with `Transfer-Encoding: chunked` (no
/// Content-Length), its body (if any) in HTTP chunks of 64 KiB, on a
/// connection the gateway closes after answering: the raw answer.
async fn chunked_request(
    cluster: &DevCluster,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    content_sha256: &str,
    body: Option<&[u8]>,
) -> String {
    let host = cluster.endpoint().trim_start_matches("http://").to_string();
    let mut hs: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    hs.push(("host".into(), host.clone()));
    hs.push(("x-amz-content-sha256".into(), content_sha256.into()));
    hs.push(("transfer-encoding".into(), "chunked".into()));
    let Signed { headers: hs, .. } = sign_request(cluster, method, path, hs, SystemTime::now());
    let mut text = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    for (k, v) in &hs {
        text.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    text.extend_from_slice(b"connection: close\r\n\r\n");
    if let Some(body) = body {
        for c in body.chunks(64 << 10) {
            text.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            text.extend_from_slice(c);
            text.extend_from_slice(b"\r\n");
        }
        text.extend_from_slice(b"0\r\n\r\n");
    }
    tcp_exchange(&host, &text).await
}

/// Writes `request` and reads until the gateway closes the connection.
async fn tcp_exchange(addr: &str, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 8192];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read_all).await.expect("the gateway answers and closes");
    String::from_utf8_lossy(&got).into_owned()
}

/// Request bodies and their lengths as S3 takes them:
/// - aws-chunked with `x-amz-decoded-content-length` and `Transfer-Encoding:
///   chunked` instead of a Content-Length (the AWS SDKs' streaming uploads;
///   S3's sigv4-streaming page allows it) is stored, on PutObject and
///   UploadPart, inline and erasure-coded; its 5 GiB limit is checked from
///   the decoded length before the body is read;
/// - a plain chunked body (no aws-chunked, so no length at all) gets S3's
///   501 `NotImplemented` (the answer S3 gives, naming Transfer-Encoding);
/// - a PUT with neither a Content-Length nor a body gets 411 `MissingContentLength`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_without_content_length_answer_as_s3() {
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("len").send().await.unwrap();

    for (size, what) in [(300_000usize, "sharded"), (1000, "inline")] {
        let data = pattern(size, size as u64);
        let (headers, chunked) = crc32_trailer_upload(&data, "aws-chunked");
        let path = format!("/len/{what}");
        let resp =
            chunked_request(&cluster, "PUT", &path, &headers, "STREAMING-UNSIGNED-PAYLOAD-TRAILER", Some(&chunked))
                .await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{what}: aws-chunked without Content-Length: {resp}");
        assert_same(&get(&c, "len", what, None).await, &data, what);
    }

    // UploadPart the same way.
    let id = c.create_multipart_upload().bucket("len").key("mp").send().await.unwrap().upload_id().unwrap().to_string();
    let data = pattern(200_000, 77);
    let (headers, chunked) = crc32_trailer_upload(&data, "aws-chunked");
    let path = format!("/len/mp?partNumber=1&uploadId={id}");
    let resp =
        chunked_request(&cluster, "PUT", &path, &headers, "STREAMING-UNSIGNED-PAYLOAD-TRAILER", Some(&chunked)).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "UploadPart, aws-chunked without Content-Length: {resp}");
    let etag = format!("\"{}\"", md5_hex(&data));
    c.complete_multipart_upload()
        .bucket("len")
        .key("mp")
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(CompletedPart::builder().part_number(1).e_tag(etag).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_same(&get(&c, "len", "mp", None).await, &data, "the part sent without Content-Length");

    // More than 5 GiB announced: refused from the headers (no body is sent).
    let huge = [
        ("content-encoding", "aws-chunked".to_string()),
        ("x-amz-decoded-content-length", ((5u64 << 30) + 1).to_string()),
        ("x-amz-trailer", "x-amz-checksum-crc32".to_string()),
    ];
    let resp = chunked_request(&cluster, "PUT", "/len/huge", &huge, "STREAMING-UNSIGNED-PAYLOAD-TRAILER", None).await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("<Code>EntityTooLarge</Code>"), "{resp}");

    // A plain chunked body: no length anywhere.
    let resp =
        chunked_request(&cluster, "PUT", "/len/plain", &[], "UNSIGNED-PAYLOAD", Some(b"hello, chunks".as_slice()))
            .await;
    assert!(resp.starts_with("HTTP/1.1 501"), "plain chunked: {resp}");
    assert!(resp.contains("<Code>NotImplemented</Code>") && resp.contains("Transfer-Encoding"), "{resp}");
    let err = c.head_object().bucket("len").key("plain").send().await.unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(404), "nothing stored");

    // Neither a Content-Length nor Transfer-Encoding.
    let host = cluster.endpoint().trim_start_matches("http://").to_string();
    let hs = vec![("host".to_string(), host.clone()), ("x-amz-content-sha256".to_string(), "UNSIGNED-PAYLOAD".into())];
    let Signed { headers: hs, .. } = sign_request(&cluster, "PUT", "/len/nolength", hs, SystemTime::now());
    let mut text = String::from("PUT /len/nolength HTTP/1.1\r\n");
    for (k, v) in &hs {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("connection: close\r\n\r\n");
    let resp = tcp_exchange(&host, text.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 411"), "{resp}");
    assert!(resp.contains("<Code>MissingContentLength</Code>"), "{resp}");
}

/// S3's keys are at most 1,024 bytes of UTF-8: a longer one gets 400
/// `KeyTooLongError` on PutObject, CreateMultipartUpload and CopyObject
/// (s3s checks the path; this test pins it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_longer_than_1024_bytes_are_refused() {
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("len").send().await.unwrap();
    put(&c, "len", "inline", b"source".to_vec()).await;
    let longest = "k".repeat(1024);
    put(&c, "len", &longest, b"fits".to_vec()).await;
    assert_same(&get(&c, "len", &longest, None).await, b"fits", "a 1,024-byte key");
    let too_long = format!("{}é", "k".repeat(1023)); // 1,025 bytes
    let err = c.put_object().bucket("len").key(&too_long).body(ByteStream::from_static(b"x")).send().await.unwrap_err();
    assert_eq!(err.code(), Some("KeyTooLongError"), "PutObject: {}", DisplayErrorContext(&err));
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
    let err = c.create_multipart_upload().bucket("len").key(&too_long).send().await.unwrap_err();
    assert_eq!(err.code(), Some("KeyTooLongError"), "CreateMultipartUpload: {}", DisplayErrorContext(&err));
    let err = c.copy_object().bucket("len").key(&too_long).copy_source("len/inline").send().await.unwrap_err();
    assert_eq!(err.code(), Some("KeyTooLongError"), "CopyObject: {}", DisplayErrorContext(&err));
}

/// The text of RFC 2047 `=?UTF-8?B?…?=` encoded words (space-separated);
/// anything else as it is.
fn rfc2047_decode(v: &str) -> String {
    if !v.starts_with("=?") {
        return v.to_string();
    }
    let mut bytes = Vec::new();
    for word in v.split_whitespace() {
        let inner = word.strip_prefix("=?UTF-8?B?").and_then(|w| w.strip_suffix("?=")).expect(word);
        bytes.extend(base64::engine::general_purpose::STANDARD.decode(inner).unwrap());
    }
    String::from_utf8(bytes).unwrap()
}

/// User metadata as S3's user guide describes it: a non-ASCII value, sent
/// as raw UTF-8 or RFC 2047-encoded, is stored decoded and sent back
/// RFC 2047-encoded (`=?UTF-8?B?…?=`, several words for a long one); ASCII
/// values are returned as sent; the 2 KB limit counts UTF-8 bytes; an
/// encoded word that does not decode is a 400, not a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_metadata_comes_back_as_s3_sends_it() {
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("meta").send().await.unwrap();
    let title = "사진 café ✓";
    let encoded = format!("=?UTF-8?B?{}?=", b64(title.as_bytes()));
    let head = async |key: &str| {
        let (st, h, _) = raw(&cluster, "HEAD", &format!("/meta/{key}"), &[], "UNSIGNED-PAYLOAD", vec![]).await;
        assert_eq!(st, 200, "HEAD {key}");
        h
    };

    for (key, sent) in [
        ("raw-utf8", title.to_string()),
        ("rfc2047-b", encoded.clone()),
        ("rfc2047-q", "=?UTF-8?Q?=EC=82=AC=EC=A7=84_caf=C3=A9_=E2=9C=93?=".to_string()),
    ] {
        let (st, _, text) = raw(
            &cluster,
            "PUT",
            &format!("/meta/{key}"),
            &[("x-amz-meta-title", sent)],
            "UNSIGNED-PAYLOAD",
            b"x".to_vec(),
        )
        .await;
        assert_eq!(st, 200, "{key}: {text}");
        let h = head(key).await;
        assert_eq!(header(&h, "x-amz-meta-title").as_deref(), Some(encoded.as_str()), "{key}");
        // The SDK hands the header on as it came.
        let got = c.head_object().bucket("meta").key(key).send().await.unwrap();
        let v = got.metadata().and_then(|m| m.get("title")).cloned().unwrap_or_default();
        assert_eq!(rfc2047_decode(&v), title, "{key} through the SDK");
    }
    // ASCII comes back as sent, even with characters RFC 2047 uses.
    let (st, _, _) = raw(
        &cluster,
        "PUT",
        "/meta/ascii",
        &[("x-amz-meta-note", "a=?b c_d".to_string())],
        "UNSIGNED-PAYLOAD",
        b"x".to_vec(),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(header(&head("ascii").await, "x-amz-meta-note").as_deref(), Some("a=?b c_d"));
    // The SDK sends a non-ASCII value as raw UTF-8.
    c.put_object()
        .bucket("meta")
        .key("sdk")
        .metadata("title", title)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    assert_eq!(rfc2047_decode(&header(&head("sdk").await, "x-amz-meta-title").unwrap()), title, "sdk");
    // A long value: several encoded words, each at most 75 characters.
    let long = "한".repeat(600); // 1,800 bytes
    let (st, _, text) =
        raw(&cluster, "PUT", "/meta/long", &[("x-amz-meta-long", long.clone())], "UNSIGNED-PAYLOAD", b"x".to_vec())
            .await;
    assert_eq!(st, 200, "{text}");
    let v = header(&head("long").await, "x-amz-meta-long").unwrap();
    assert!(v.split(' ').count() > 1 && v.split(' ').all(|w| w.len() <= 75), "{v}");
    assert_eq!(rfc2047_decode(&v), long);
    // The limit counts UTF-8 bytes: 700 × 3 bytes is over 2 KB.
    let (st, _, text) =
        raw(&cluster, "PUT", "/meta/big", &[("x-amz-meta-big", "한".repeat(700))], "UNSIGNED-PAYLOAD", b"x".to_vec())
            .await;
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("<Code>MetadataTooLarge</Code>"), "{text}");
    // Encoded words that do not decode.
    for bad in ["=?UTF-8?B?***?=", "=?UTF-8?Q?=ZZ?=", "=?UTF-8?X?abc?="] {
        let (st, _, text) = raw(
            &cluster,
            "PUT",
            "/meta/bad",
            &[("x-amz-meta-bad", bad.to_string())],
            "UNSIGNED-PAYLOAD",
            b"x".to_vec(),
        )
        .await;
        assert_eq!(st, 400, "{bad}: {text}");
    }
    // A multipart upload's metadata is the object's.
    let id = c
        .create_multipart_upload()
        .bucket("meta")
        .key("mp")
        .metadata("title", title)
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    let part = c
        .upload_part()
        .bucket("meta")
        .key("mp")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from_static(b"y"))
        .send()
        .await
        .unwrap();
    c.complete_multipart_upload()
        .bucket("meta")
        .key("mp")
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(CompletedPart::builder().part_number(1).e_tag(part.e_tag().unwrap()).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(header(&head("mp").await, "x-amz-meta-title").as_deref(), Some(encoded.as_str()), "multipart metadata");
}

/// Content-Encoding: `aws-chunked` describes the request's body, not the
/// object: dropped wherever it stands in the list (one header line or, as
/// aws-sdk-rust sends `gzip` with a streamed body, two), for PUT and for the
/// object a multipart upload created with a Content-Encoding makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_encoding_comes_back_without_aws_chunked_in_any_form() {
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("meta").send().await.unwrap();
    let head = async |key: &str| {
        let (st, h, _) = raw(&cluster, "HEAD", &format!("/meta/{key}"), &[], "UNSIGNED-PAYLOAD", vec![]).await;
        assert_eq!(st, 200, "HEAD {key}");
        h
    };
    for (key, sent, kept) in [
        ("a", "aws-chunked,gzip", "gzip"),
        ("b", "gzip, aws-chunked", "gzip"),
        ("c", "aws-chunked, gzip, br", "gzip, br"),
    ] {
        let data = pattern(70_000, 5);
        let (headers, chunked) = crc32_trailer_upload(&data, sent);
        let (st, _, text) =
            raw(&cluster, "PUT", &format!("/meta/enc-{key}"), &headers, "STREAMING-UNSIGNED-PAYLOAD-TRAILER", chunked)
                .await;
        assert_eq!(st, 200, "{sent}: {text}");
        assert_eq!(header(&head(&format!("enc-{key}")).await, "content-encoding").as_deref(), Some(kept), "{sent}");
        assert_same(&get(&c, "meta", &format!("enc-{key}"), None).await, &data, sent);
    }
    // The SDK with a streamed body (aws-chunked with a CRC32 trailer).
    let file = cluster.dir.path().join("gz.bin");
    let data = pattern(300_000, 6);
    std::fs::write(&file, &data).unwrap();
    c.put_object()
        .bucket("meta")
        .key("sdk.gz")
        .content_encoding("gzip")
        .body(ByteStream::from_path(&file).await.unwrap())
        .send()
        .await
        .unwrap();
    let got = c.get_object().bucket("meta").key("sdk.gz").send().await.unwrap();
    assert_eq!(got.content_encoding(), Some("gzip"), "SDK streamed PUT");
    // A multipart upload created with a Content-Encoding: the object has it.
    let id = c
        .create_multipart_upload()
        .bucket("meta")
        .key("mp.gz")
        .content_encoding("gzip")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    let part = c
        .upload_part()
        .bucket("meta")
        .key("mp.gz")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from_path(&file).await.unwrap())
        .send()
        .await
        .unwrap();
    c.complete_multipart_upload()
        .bucket("meta")
        .key("mp.gz")
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(CompletedPart::builder().part_number(1).e_tag(part.e_tag().unwrap()).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let h = head("mp.gz").await;
    assert_eq!(header(&h, "content-encoding").as_deref(), Some("gzip"), "multipart");
    assert_same(&get(&c, "meta", "mp.gz", None).await, &data, "multipart");
}

/// GET and HEAD of a part or a range, and the answers to bad part numbers,
/// as S3's GetObject/HeadObject reference gives them (HEAD answers as GET
/// would, without the body: 206 for a part or a range).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_and_get_of_a_part_or_a_range_answer_as_s3() {
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("rdx").send().await.unwrap();
    let data = [pattern(5 * MIB, 1), pattern(1000, 2)];
    let total = 5 * MIB + 1000;
    let (id, parts, etag) = upload_parts(&c, "rdx", "mp", &data).await;
    c.complete_multipart_upload()
        .bucket("rdx")
        .key("mp")
        .upload_id(&id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await
        .unwrap();
    let req = async |method: &str, path: &str, headers: &[(&str, String)]| {
        raw(&cluster, method, path, headers, "UNSIGNED-PAYLOAD", vec![]).await
    };

    // A part: 206 on GET and on HEAD, with its Content-Range and the part count.
    for method in ["GET", "HEAD"] {
        let (st, h, body) = req(method, "/rdx/mp?partNumber=2", &[]).await;
        assert_eq!(st, 206, "{method} partNumber=2");
        assert_eq!(header(&h, "content-length"), Some("1000".into()), "{method}");
        assert_eq!(header(&h, "content-range"), Some(format!("bytes {}-{}/{total}", 5 * MIB, total - 1)), "{method}");
        assert_eq!(header(&h, "x-amz-mp-parts-count"), Some("2".into()), "{method}");
        assert_eq!(header(&h, "etag"), Some(etag.clone()), "{method}: the whole object's ETag");
        if method == "HEAD" {
            assert_eq!(body, "", "HEAD has no body");
        }
        // A range: 206 on HEAD too.
        let (st, h, _) = req(method, "/rdx/mp", &[("range", "bytes=10-19".into())]).await;
        assert_eq!(st, 206, "{method} range");
        assert_eq!(header(&h, "content-length"), Some("10".into()), "{method} range");
        assert_eq!(header(&h, "content-range"), Some(format!("bytes 10-19/{total}")), "{method} range");
        let (st, _, _) = req(method, "/rdx/mp", &[("range", format!("bytes={total}-"))]).await;
        assert_eq!(st, 416, "{method}: a range past the end");
    }
    // Bad part numbers.
    for (q, want_status, want_code) in [
        ("partNumber=3", 416, "InvalidPartNumber"),
        ("partNumber=0", 400, "InvalidArgument"),
        ("partNumber=10001", 400, "InvalidArgument"),
        ("partNumber=-1", 400, "InvalidArgument"),
    ] {
        let (st, _, text) = req("GET", &format!("/rdx/mp?{q}"), &[]).await;
        assert_eq!(st, want_status, "{q}: {text}");
        assert!(text.contains(&format!("<Code>{want_code}</Code>")), "{q}: {text}");
    }
    let (st, _, text) = req("GET", "/rdx/mp?partNumber=abc", &[]).await;
    assert_eq!(st, 400, "partNumber=abc: {text}");
    // A Range that does not parse is refused by s3s (see docs/s3-compatibility.md).
    let (st, _, text) = req("GET", "/rdx/mp", &[("range", "bytes=abc".into())]).await;
    assert_eq!(st, 400, "Range: bytes=abc: {text}");
    // Part 1 of an object that is not multipart: the whole object, as a part.
    put(&c, "rdx", "single", b"0123456789".to_vec()).await;
    let (st, h, body) = req("GET", "/rdx/single?partNumber=1", &[]).await;
    assert_eq!((st, body.as_str()), (206, "0123456789"));
    assert_eq!(header(&h, "content-range"), Some("bytes 0-9/10".into()));
    assert_eq!(header(&h, "x-amz-mp-parts-count"), None);
    let (st, _, text) = req("GET", "/rdx/single?partNumber=2", &[]).await;
    assert_eq!(st, 416, "{text}");
    assert!(text.contains("<Code>InvalidPartNumber</Code>"), "{text}");
    let (st, _, text) = req("GET", "/rdx/mp?partNumber=1", &[("range", "bytes=0-1".into())]).await;
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("<Code>InvalidRequest</Code>"), "{text}");
}

/// A 304 carries what RFC 9110 §15.4.5 asks: the headers a 200 would have
/// sent among ETag, Cache-Control and Expires (and Last-Modified, as S3
/// sends it), and no body; a 412 is S3's PreconditionFailed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_modified_carries_the_validators() {
    let cluster = DevCluster::start();
    cluster.client().create_bucket().bucket("rdx").send().await.unwrap();
    let req = async |method: &str, path: &str, headers: &[(&str, String)]| {
        raw(&cluster, method, path, headers, "UNSIGNED-PAYLOAD", vec![]).await
    };
    let (st, _, _) = raw(
        &cluster,
        "PUT",
        "/rdx/page.html",
        &[
            ("cache-control", "max-age=60".into()),
            ("expires", "Thu, 01 Dec 2044 16:00:00 GMT".into()),
            ("content-type", "text/html".into()),
        ],
        "UNSIGNED-PAYLOAD",
        b"<p>hi</p>".to_vec(),
    )
    .await;
    assert_eq!(st, 200);
    let (_, h200, _) = req("HEAD", "/rdx/page.html", &[]).await;
    let page_etag = header(&h200, "etag").unwrap();
    for method in ["GET", "HEAD"] {
        for cond in
            [("if-none-match", page_etag.clone()), ("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT".into())]
        {
            let (st, h, body) = req(method, "/rdx/page.html", &[(cond.0, cond.1.clone())]).await;
            assert_eq!(st, 304, "{method} {}", cond.0);
            assert_eq!(body, "", "{method} {}: a 304 has no body", cond.0);
            for name in ["etag", "last-modified", "cache-control", "expires"] {
                assert_eq!(header(&h, name), header(&h200, name), "{method} {}: {name} on the 304", cond.0);
            }
        }
        let (st, _, text) = req(method, "/rdx/page.html", &[("if-match", "\"0000\"".into())]).await;
        assert_eq!(st, 412, "{method} If-Match");
        if method == "GET" {
            assert!(text.contains("<Code>PreconditionFailed</Code>"), "{text}");
        }
    }
}
