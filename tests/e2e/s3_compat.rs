//! S3 compatibility beyond the basics, through aws-sdk-s3 (and raw signed HTTP
//! where an SDK cannot be made to misbehave) against a real `sillok dev`:
//! multipart uploads and their errors, the abandoned-upload sweeper, copies,
//! batch deletes, conditional requests, additional checksums (header and
//! aws-chunked trailer), virtual-host addressing, request ids, and limits.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart, Delete, MetadataDirective,
    ObjectIdentifier,
};
use http_body_util::{BodyExt, Full};
use md5::{Digest, Md5};

use crate::support::*;

const MIB: usize = 1 << 20;

fn md5_hex(data: &[u8]) -> String {
    hex(&Md5::digest(data))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn status<E>(e: &aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::http::Response>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

async fn upload_part(c: &aws_sdk_s3::Client, b: &str, k: &str, id: &str, n: i32, data: Vec<u8>) -> CompletedPart {
    let out = c
        .upload_part()
        .bucket(b)
        .key(k)
        .upload_id(id)
        .part_number(n)
        .body(ByteStream::from(data))
        .send()
        .await
        .unwrap_or_else(|e| panic!("upload part {n}: {e:?}"));
    CompletedPart::builder().part_number(n).e_tag(out.e_tag().unwrap()).build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_round_trip_and_errors() {
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("mpu").send().await.unwrap();

    let parts_data = [pattern(5 * MIB, 1), pattern(5 * MIB + 17, 2), pattern(MIB + 3, 3)];
    let whole: Vec<u8> = parts_data.concat();
    let created = c
        .create_multipart_upload()
        .bucket("mpu")
        .key("video/a.mp4")
        .content_type("video/mp4")
        .metadata("room", "42")
        .send()
        .await
        .unwrap();
    let id = created.upload_id().unwrap().to_string();

    // Parts uploaded out of order, part 2 twice (the second one wins).
    let p3 = upload_part(&c, "mpu", "video/a.mp4", &id, 3, parts_data[2].clone()).await;
    let _ = upload_part(&c, "mpu", "video/a.mp4", &id, 2, pattern(5 * MIB, 99)).await;
    let p2 = upload_part(&c, "mpu", "video/a.mp4", &id, 2, parts_data[1].clone()).await;
    let p1 = upload_part(&c, "mpu", "video/a.mp4", &id, 1, parts_data[0].clone()).await;
    assert_eq!(p1.e_tag(), Some(format!("\"{}\"", md5_hex(&parts_data[0])).as_str()));

    // ListParts and ListMultipartUploads see it.
    let listed = c.list_parts().bucket("mpu").key("video/a.mp4").upload_id(&id).send().await.unwrap();
    let nums: Vec<i32> = listed.parts().iter().filter_map(|p| p.part_number()).collect();
    assert_eq!(nums, vec![1, 2, 3]);
    assert_eq!(listed.parts()[1].size(), Some((5 * MIB + 17) as i64));
    let page = c.list_parts().bucket("mpu").key("video/a.mp4").upload_id(&id).max_parts(2).send().await.unwrap();
    assert_eq!(page.parts().len(), 2);
    assert_eq!(page.is_truncated(), Some(true));
    assert_eq!(page.next_part_number_marker(), Some("2"));
    let uploads = c.list_multipart_uploads().bucket("mpu").send().await.unwrap();
    assert_eq!(uploads.uploads().len(), 1);
    assert_eq!(uploads.uploads()[0].upload_id(), Some(id.as_str()));
    assert_eq!(uploads.uploads()[0].key(), Some("video/a.mp4"));

    // Completion errors: bad ETag, wrong order, a small middle part, no parts.
    let complete = |parts: Vec<CompletedPart>| {
        c.complete_multipart_upload()
            .bucket("mpu")
            .key("video/a.mp4")
            .upload_id(&id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
    };
    let bad = CompletedPart::builder().part_number(2).e_tag("\"00000000000000000000000000000000\"").build();
    let err = complete(vec![p1.clone(), bad, p3.clone()]).await.unwrap_err();
    assert_eq!(err.code(), Some("InvalidPart"), "{err:?}");
    let err = complete(vec![p2.clone(), p1.clone(), p3.clone()]).await.unwrap_err();
    assert_eq!(err.code(), Some("InvalidPartOrder"));
    let err = complete(vec![p1.clone(), p3.clone(), CompletedPart::builder().part_number(4).e_tag("\"x\"").build()])
        .await
        .unwrap_err();
    assert!(matches!(err.code(), Some("EntityTooSmall") | Some("InvalidPart")), "{err:?}");
    let missing = CompletedPart::builder().part_number(7).e_tag(p1.e_tag().unwrap()).build();
    let err = complete(vec![p1.clone(), missing]).await.unwrap_err();
    assert_eq!(err.code(), Some("InvalidPart"));

    // Complete: bytes, S3's ETag (MD5 of the part MD5s, then -3), metadata.
    let done = complete(vec![p1.clone(), p2.clone(), p3.clone()]).await.unwrap();
    let mut md5s = Vec::new();
    for p in &parts_data {
        md5s.extend_from_slice(&Md5::digest(p));
    }
    let want_etag = format!("\"{}-3\"", md5_hex(&md5s));
    assert_eq!(done.e_tag(), Some(want_etag.as_str()));
    assert_same(&get(&c, "mpu", "video/a.mp4", None).await, &whole, "completed multipart object");
    let head = c.head_object().bucket("mpu").key("video/a.mp4").send().await.unwrap();
    assert_eq!(head.content_length(), Some(whole.len() as i64));
    assert_eq!(head.e_tag(), Some(want_etag.as_str()));
    assert_eq!(head.content_type(), Some("video/mp4"));
    assert_eq!(head.metadata().and_then(|m| m.get("room")).map(String::as_str), Some("42"));
    // Ranges inside a part and across part boundaries.
    let b1 = 5 * MIB as u64;
    let b2 = b1 + 5 * MIB as u64 + 17;
    for (a, z) in [(0, 10), (b1 - 5, b1 + 5), (b2 - 1, b2), (b1 - 1, b2 + 1), (b2 + 100, whole.len() as u64 - 1)] {
        let got = get(&c, "mpu", "video/a.mp4", Some(format!("bytes={a}-{z}"))).await;
        assert_same(&got, &whole[a as usize..=z as usize], &format!("range {a}-{z}"));
    }
    // The upload is gone from the listing; a repeated completion (an SDK
    // retrying after a lost answer) gets S3's 200 with the same result.
    assert!(c.list_multipart_uploads().bucket("mpu").send().await.unwrap().uploads().is_empty());
    let again = complete(vec![p1.clone(), p2.clone(), p3.clone()]).await.unwrap();
    assert_eq!(again.e_tag(), Some(want_etag.as_str()), "a repeated completion answers the same ETag");
    assert_same(&get(&c, "mpu", "video/a.mp4", None).await, &whole, "after a repeated completion");
    // Another upload id for the same key is still NoSuchUpload.
    let err = c
        .complete_multipart_upload()
        .bucket("mpu")
        .key("video/a.mp4")
        .upload_id("0123456789abcdef0123456789abcdef")
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(vec![p1.clone()])).build())
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NoSuchUpload"));

    // Abort: parts and upload are gone, later parts are refused.
    let id2 = c.create_multipart_upload().bucket("mpu").key("b").send().await.unwrap().upload_id().unwrap().to_string();
    upload_part(&c, "mpu", "b", &id2, 1, pattern(300_000, 5)).await;
    c.abort_multipart_upload().bucket("mpu").key("b").upload_id(&id2).send().await.unwrap();
    let err = c
        .upload_part()
        .bucket("mpu")
        .key("b")
        .upload_id(&id2)
        .part_number(2)
        .body(ByteStream::from(vec![1u8; 10]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NoSuchUpload"));
    let err = c.list_parts().bucket("mpu").key("b").upload_id(&id2).send().await.unwrap_err();
    assert_eq!(err.code(), Some("NoSuchUpload"));
    let err = c.abort_multipart_upload().bucket("mpu").key("b").upload_id("not-an-id").send().await.unwrap_err();
    assert_eq!(err.code(), Some("NoSuchUpload"));
    let err = c
        .upload_part()
        .bucket("mpu")
        .key("video/a.mp4")
        .upload_id(&id2)
        .part_number(10_001)
        .body(ByteStream::from(vec![1u8; 10]))
        .send()
        .await
        .unwrap_err();
    assert!(matches!(err.code(), Some("InvalidArgument") | Some("NoSuchUpload")), "{err:?}");

    // UploadPartCopy: ranges of an existing object become parts.
    let id3 =
        c.create_multipart_upload().bucket("mpu").key("cp").send().await.unwrap().upload_id().unwrap().to_string();
    let mut cparts = Vec::new();
    for (n, (a, z)) in [(0u64, b1 - 1), (b1, whole.len() as u64 - 1)].into_iter().enumerate() {
        let out = c
            .upload_part_copy()
            .bucket("mpu")
            .key("cp")
            .upload_id(&id3)
            .part_number(n as i32 + 1)
            .copy_source("mpu/video/a.mp4")
            .copy_source_range(format!("bytes={a}-{z}"))
            .send()
            .await
            .unwrap();
        let etag = out.copy_part_result().and_then(|r| r.e_tag()).unwrap().to_string();
        assert_eq!(etag, format!("\"{}\"", md5_hex(&whole[a as usize..=z as usize])));
        cparts.push(CompletedPart::builder().part_number(n as i32 + 1).e_tag(etag).build());
    }
    let err = c
        .upload_part_copy()
        .bucket("mpu")
        .key("cp")
        .upload_id(&id3)
        .part_number(3)
        .copy_source("mpu/video/a.mp4")
        .copy_source_range(format!("bytes=0-{}", whole.len()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidArgument"));
    c.complete_multipart_upload()
        .bucket("mpu")
        .key("cp")
        .upload_id(&id3)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(cparts)).build())
        .send()
        .await
        .unwrap();
    assert_same(&get(&c, "mpu", "cp", None).await, &whole, "object assembled by UploadPartCopy");

    // Overwriting a multipart object with a plain one, then deleting it.
    put(&c, "mpu", "video/a.mp4", pattern(1000, 8)).await;
    assert_same(&get(&c, "mpu", "video/a.mp4", None).await, &pattern(1000, 8), "overwritten multipart object");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_uploads_are_swept_and_their_shards_removed() {
    let cluster = DevCluster::start_with(&[
        "--gateway-arg=--abandoned-upload-age-s=3",
        "--gateway-arg=--upload-sweep-interval-s=1",
        "--node-arg=--collect-grace-ms=2000",
        "--node-arg=--collect-every-ms=500",
    ]);
    let c = cluster.client();
    c.create_bucket().bucket("sweep").send().await.unwrap();
    let before = cluster.shard_files().len();
    let id =
        c.create_multipart_upload().bucket("sweep").key("left").send().await.unwrap().upload_id().unwrap().to_string();
    upload_part(&c, "sweep", "left", &id, 1, pattern(5 * MIB, 1)).await;
    assert!(cluster.shard_files().len() >= before + 6, "the part's 6 shards are on disk");

    // Wait (bounded) for the sweeper: the upload disappears and so do the shards.
    wait_until(
        Duration::from_secs(60),
        lazily(|| {
            format!("the abandoned upload and its shards to be swept; the gateway log:\n{}", cluster.gateway_log())
        }),
        async || {
            let gone = c.list_multipart_uploads().bucket("sweep").send().await.unwrap().uploads().is_empty();
            let shards = cluster.shard_files().len();
            if gone && shards == before {
                Ok(())
            } else {
                Err(format!("upload listed: {}, shard files: {shards} (before the upload: {before})", !gone))
            }
        },
    )
    .await;
    let err = c.list_parts().bucket("sweep").key("left").upload_id(&id).send().await.unwrap_err();
    assert_eq!(err.code(), Some("NoSuchUpload"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_batch_deletes_and_conditional_requests() {
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("src").send().await.unwrap();
    c.create_bucket().bucket("dst").send().await.unwrap();
    let body = pattern(700_000, 4);
    c.put_object()
        .bucket("src")
        .key("photo.jpg")
        .content_type("image/jpeg")
        .content_disposition("inline")
        .metadata("sender", "lee")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    let etag = format!("\"{}\"", md5_hex(&body));

    // COPY keeps metadata; REPLACE takes the request's.
    let out = c.copy_object().bucket("dst").key("same.jpg").copy_source("src/photo.jpg").send().await.unwrap();
    assert_eq!(out.copy_object_result().and_then(|r| r.e_tag()), Some(etag.as_str()));
    let h = c.head_object().bucket("dst").key("same.jpg").send().await.unwrap();
    assert_eq!(h.content_type(), Some("image/jpeg"));
    assert_eq!(h.content_disposition(), Some("inline"));
    assert_eq!(h.metadata().and_then(|m| m.get("sender")).map(String::as_str), Some("lee"));
    assert_same(&get(&c, "dst", "same.jpg", None).await, &body, "copied object");
    c.copy_object()
        .bucket("dst")
        .key("new.jpg")
        .copy_source("src/photo.jpg")
        .metadata_directive(MetadataDirective::Replace)
        .content_type("image/png")
        .metadata("sender", "park")
        .send()
        .await
        .unwrap();
    let h = c.head_object().bucket("dst").key("new.jpg").send().await.unwrap();
    assert_eq!(h.content_type(), Some("image/png"));
    assert_eq!(h.content_disposition(), None);
    assert_eq!(h.metadata().and_then(|m| m.get("sender")).map(String::as_str), Some("park"));
    // Onto itself only with REPLACE.
    let err = c.copy_object().bucket("src").key("photo.jpg").copy_source("src/photo.jpg").send().await.unwrap_err();
    assert_eq!(err.code(), Some("InvalidRequest"));
    c.copy_object()
        .bucket("src")
        .key("photo.jpg")
        .copy_source("src/photo.jpg")
        .metadata_directive(MetadataDirective::Replace)
        .metadata("sender", "choi")
        .send()
        .await
        .unwrap();
    assert_same(&get(&c, "src", "photo.jpg", None).await, &body, "object copied onto itself");
    // Source errors and copy-source conditions.
    let err = c.copy_object().bucket("dst").key("x").copy_source("src/missing").send().await.unwrap_err();
    assert_eq!(err.code(), Some("NoSuchKey"));
    let err = c.copy_object().bucket("dst").key("x").copy_source("nobucket/k").send().await.unwrap_err();
    assert_eq!(err.code(), Some("NoSuchBucket"));
    let err = c
        .copy_object()
        .bucket("dst")
        .key("x")
        .copy_source("src/photo.jpg")
        .copy_source_if_match("\"0123\"")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("PreconditionFailed"));
    let err = c
        .copy_object()
        .bucket("dst")
        .key("x")
        .copy_source("src/photo.jpg")
        .copy_source_if_none_match(&etag)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("PreconditionFailed"));

    // Conditional GET and HEAD.
    let err = c.get_object().bucket("src").key("photo.jpg").if_none_match(&etag).send().await.unwrap_err();
    assert_eq!(status(&err), Some(304), "{err:?}");
    let err = c.head_object().bucket("src").key("photo.jpg").if_none_match(&etag).send().await.unwrap_err();
    assert_eq!(status(&err), Some(304));
    let err = c.get_object().bucket("src").key("photo.jpg").if_match("\"nope\"").send().await.unwrap_err();
    assert_eq!(status(&err), Some(412));
    let err = c.head_object().bucket("src").key("photo.jpg").if_match("\"nope\"").send().await.unwrap_err();
    assert_eq!(status(&err), Some(412));
    let got = c.get_object().bucket("src").key("photo.jpg").if_match(&etag).send().await.unwrap();
    assert_same(&got.body.collect().await.unwrap().into_bytes(), &body, "If-Match GET");
    let future = aws_sdk_s3::primitives::DateTime::from(SystemTime::now() + Duration::from_secs(3600));
    let past = aws_sdk_s3::primitives::DateTime::from(SystemTime::now() - Duration::from_secs(3600));
    let err = c.get_object().bucket("src").key("photo.jpg").if_modified_since(future).send().await.unwrap_err();
    assert_eq!(status(&err), Some(304));
    c.get_object().bucket("src").key("photo.jpg").if_modified_since(past).send().await.unwrap();
    let err = c.head_object().bucket("src").key("photo.jpg").if_unmodified_since(past).send().await.unwrap_err();
    assert_eq!(status(&err), Some(412));

    // response-* overrides.
    let got = c
        .get_object()
        .bucket("src")
        .key("photo.jpg")
        .response_content_type("application/x-test")
        .response_content_disposition("attachment; filename=\"a.jpg\"")
        .response_cache_control("no-store")
        .send()
        .await
        .unwrap();
    assert_eq!(got.content_type(), Some("application/x-test"));
    assert_eq!(got.content_disposition(), Some("attachment; filename=\"a.jpg\""));
    assert_eq!(got.cache_control(), Some("no-store"));

    // DeleteObjects: verbose and quiet, missing keys count as deleted.
    for i in 0..5 {
        put(&c, "dst", &format!("batch/{i}"), pattern(100, i)).await;
    }
    let ids = |keys: &[&str]| {
        Delete::builder()
            .set_objects(Some(keys.iter().map(|k| ObjectIdentifier::builder().key(*k).build().unwrap()).collect()))
    };
    let out = c
        .delete_objects()
        .bucket("dst")
        .delete(ids(&["batch/0", "batch/1", "batch/missing"]).build().unwrap())
        .send()
        .await
        .unwrap();
    let mut deleted: Vec<&str> = out.deleted().iter().filter_map(|d| d.key()).collect();
    deleted.sort();
    assert_eq!(deleted, vec!["batch/0", "batch/1", "batch/missing"]);
    assert!(out.errors().is_empty());
    let out = c
        .delete_objects()
        .bucket("dst")
        .delete(ids(&["batch/2", "batch/3"]).quiet(true).build().unwrap())
        .send()
        .await
        .unwrap();
    assert!(out.deleted().is_empty(), "quiet mode lists no deletions");
    let left: Vec<String> = c
        .list_objects_v2()
        .bucket("dst")
        .prefix("batch/")
        .send()
        .await
        .unwrap()
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect();
    assert_eq!(left, vec!["batch/4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksums_are_verified_kept_and_returned() {
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("sums").send().await.unwrap();
    let body = b"hello world".to_vec();

    // The SDK's default: CRC32 in an aws-chunked trailer. Kept and returned.
    for (key, data) in [("small", body.clone()), ("large", pattern(3 * MIB + 5, 3))] {
        c.put_object().bucket("sums").key(key).body(ByteStream::from(data.clone())).send().await.unwrap();
        let h = c.head_object().bucket("sums").key(key).checksum_mode(ChecksumMode::Enabled).send().await.unwrap();
        let want = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(crc32fast::hash(&data).to_be_bytes())
        };
        assert_eq!(h.checksum_crc32(), Some(want.as_str()), "{key}");
        // Not returned unless asked for.
        let h = c.head_object().bucket("sums").key(key).send().await.unwrap();
        assert_eq!(h.checksum_crc32(), None);
    }

    // Explicit algorithms with correct values.
    c.put_object()
        .bucket("sums")
        .key("sha")
        .checksum_sha256("uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    let g = c.get_object().bucket("sums").key("sha").checksum_mode(ChecksumMode::Enabled).send().await.unwrap();
    assert_eq!(g.checksum_sha256(), Some("uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek="));

    // A wrong value in a header: refused, nothing stored.
    let err = c
        .put_object()
        .bucket("sums")
        .key("bad-header")
        .checksum_crc32("AAAAAA==")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("BadDigest"), "{err:?}");
    let err = c.head_object().bucket("sums").key("bad-header").send().await.unwrap_err();
    assert_eq!(status(&err), Some(404));
    // A wrong Content-MD5: BadDigest, nothing stored (sharded size too).
    let err = c
        .put_object()
        .bucket("sums")
        .key("bad-md5")
        .content_md5("AAAAAAAAAAAAAAAAAAAAAA==")
        .body(ByteStream::from(pattern(MIB, 2)))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("BadDigest"), "{err:?}");
    assert_eq!(status(&c.head_object().bucket("sums").key("bad-md5").send().await.unwrap_err()), Some(404));

    // A wrong value in an aws-chunked trailer (STREAMING-UNSIGNED-PAYLOAD-TRAILER), by hand.
    for (key, len) in [("bad-trailer-empty", 0usize), ("bad-trailer-small", 11), ("bad-trailer-large", 2 * MIB)] {
        let data = pattern(len, 9);
        let mut chunked = Vec::new();
        if !data.is_empty() {
            chunked.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            chunked.extend_from_slice(&data);
            chunked.extend_from_slice(b"\r\n");
        }
        // The wrong CRC32 (AAAAAA== is the CRC of nothing, so not for "").
        let wrong = if data.is_empty() { "DUoRhQ==" } else { "AAAAAA==" };
        chunked.extend_from_slice(format!("0\r\nx-amz-checksum-crc32:{wrong}\r\n\r\n").as_bytes());
        let headers = [
            ("content-encoding", "aws-chunked".to_string()),
            ("x-amz-decoded-content-length", data.len().to_string()),
            ("x-amz-trailer", "x-amz-checksum-crc32".to_string()),
        ];
        let (st, _, text) =
            raw(&cluster, "PUT", &format!("/sums/{key}"), &headers, "STREAMING-UNSIGNED-PAYLOAD-TRAILER", chunked)
                .await;
        assert_eq!(st, 400, "{text}");
        assert!(text.contains("<Code>BadDigest</Code>"), "{text}");
        assert_eq!(status(&c.head_object().bucket("sums").key(key).send().await.unwrap_err()), Some(404));
    }
    // The same request with the right trailer value is stored.
    let data = pattern(2 * MIB, 9);
    let (headers, chunked) = crc32_trailer_upload(&data, "aws-chunked");
    let (st, _, text) =
        raw(&cluster, "PUT", "/sums/good-trailer", &headers, "STREAMING-UNSIGNED-PAYLOAD-TRAILER", chunked).await;
    assert_eq!(st, 200, "{text}");
    assert_same(&get(&c, "sums", "good-trailer", None).await, &data, "trailer-checked upload");

    // Multipart with CRC32 part checksums: composite checksum on the object.
    let id = c
        .create_multipart_upload()
        .bucket("sums")
        .key("mp")
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    let mut parts = Vec::new();
    for (n, data) in [(1, pattern(5 * MIB, 1)), (2, pattern(1000, 2))] {
        let out = c
            .upload_part()
            .bucket("sums")
            .key("mp")
            .upload_id(&id)
            .part_number(n)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(data))
            .send()
            .await
            .unwrap();
        assert!(out.checksum_crc32().is_some());
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(out.e_tag().unwrap())
                .checksum_crc32(out.checksum_crc32().unwrap())
                .build(),
        );
    }
    let mut wrong = parts.clone();
    wrong[1] =
        CompletedPart::builder().part_number(2).e_tag(parts[1].e_tag().unwrap()).checksum_crc32("AAAAAA==").build();
    let err = c
        .complete_multipart_upload()
        .bucket("sums")
        .key("mp")
        .upload_id(&id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(wrong)).build())
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidPart"));
    c.complete_multipart_upload()
        .bucket("sums")
        .key("mp")
        .upload_id(&id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await
        .unwrap();
    let h = c.head_object().bucket("sums").key("mp").checksum_mode(ChecksumMode::Enabled).send().await.unwrap();
    assert!(h.checksum_crc32().is_some_and(|v| v.ends_with("-2")), "{:?}", h.checksum_crc32());

    // FULL_OBJECT with CRC64NVME (the newest SDKs' choice): the object's CRC is
    // combined from the parts' and checked against the one the client sends.
    use aws_sdk_s3::types::ChecksumType;
    use sillok_gateway::checksum::Algorithm;
    let data = [pattern(5 * MIB + 1, 11), pattern(777_777, 12)];
    let whole = data.concat();
    let want = Algorithm::Crc64Nvme.of(&whole);
    for (key, claimed) in [("full-bad", "AAAAAAAAAAA=".to_string()), ("full", want.clone())] {
        let id = c
            .create_multipart_upload()
            .bucket("sums")
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
            .checksum_type(ChecksumType::FullObject)
            .send()
            .await
            .unwrap()
            .upload_id()
            .unwrap()
            .to_string();
        let mut parts = Vec::new();
        for (n, d) in data.iter().enumerate() {
            let n = n as i32 + 1;
            let out = c
                .upload_part()
                .bucket("sums")
                .key(key)
                .upload_id(&id)
                .part_number(n)
                .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
                .body(ByteStream::from(d.clone()))
                .send()
                .await
                .unwrap();
            assert_eq!(out.checksum_crc64_nvme(), Some(Algorithm::Crc64Nvme.of(d).as_str()));
            parts.push(
                CompletedPart::builder()
                    .part_number(n)
                    .e_tag(out.e_tag().unwrap())
                    .checksum_crc64_nvme(out.checksum_crc64_nvme().unwrap())
                    .build(),
            );
        }
        let r = c
            .complete_multipart_upload()
            .bucket("sums")
            .key(key)
            .upload_id(&id)
            .checksum_crc64_nvme(&claimed)
            .checksum_type(ChecksumType::FullObject)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await;
        if key == "full-bad" {
            assert_eq!(r.unwrap_err().code(), Some("BadDigest"));
            continue;
        }
        r.unwrap();
        let h = c.head_object().bucket("sums").key(key).checksum_mode(ChecksumMode::Enabled).send().await.unwrap();
        assert_eq!(h.checksum_crc64_nvme(), Some(want.as_str()));
        assert_eq!(h.checksum_type(), Some(&ChecksumType::FullObject));
        assert_same(&get(&c, "sums", key, None).await, &whole, "FULL_OBJECT multipart object");
    }
}

/// S3's SigV4 flavour: paths are encoded once and not normalised.
fn s3_settings() -> aws_sigv4::http_request::SigningSettings {
    use aws_sigv4::http_request::{PercentEncodingMode, SigningSettings, UriPathNormalizationMode};
    let mut s = SigningSettings::default();
    s.percent_encoding_mode = PercentEncodingMode::Single;
    s.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    s
}

/// A raw request signed with the cluster's key: (status, headers, body text).
pub(crate) async fn raw(
    cluster: &DevCluster,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, String)],
    content_sha256: &str,
    body: Vec<u8>,
) -> (u16, http::HeaderMap, String) {
    raw_at(cluster, method, path_and_query, None, headers, content_sha256, body, SystemTime::now()).await
}

#[allow(clippy::too_many_arguments)]
async fn raw_at(
    cluster: &DevCluster,
    method: &str,
    path_and_query: &str,
    host: Option<&str>,
    headers: &[(&str, String)],
    content_sha256: &str,
    body: Vec<u8>,
    time: SystemTime,
) -> (u16, http::HeaderMap, String) {
    let authority = cluster.authority();
    let mut all: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    all.push(("host".into(), host.map(str::to_string).unwrap_or(authority)));
    all.push(("x-amz-content-sha256".into(), content_sha256.into()));
    all.push(("content-length".into(), body.len().to_string()));
    let signed = sign_request(cluster, method, path_and_query, all, time);
    send(cluster, method, path_and_query, &signed.headers, body).await
}

/// The signed form of a request: every header to send (the given ones, then
/// `authorization` and `x-amz-date`), and the signature (the seed of chunk
/// signatures).
pub(crate) struct Signed {
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) signature: String,
}

/// Signs `method host path` with the cluster's key; `headers` must include
/// `host` and `x-amz-content-sha256` (whose value is the payload hash signed).
pub(crate) fn sign_request(
    cluster: &DevCluster,
    method: &str,
    path: &str,
    headers: Vec<(String, String)>,
    time: SystemTime,
) -> Signed {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, sign};
    use aws_sigv4::sign::v4;
    let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).expect(name);
    let (host, payload) = (get("host"), get("x-amz-content-sha256"));
    let creds = aws_credential_types::Credentials::new(
        &cluster.env["AWS_ACCESS_KEY_ID"],
        &cluster.env["AWS_SECRET_ACCESS_KEY"],
        None,
        None,
        "test",
    );
    let identity = creds.into();
    let region = cluster.region();
    let signable = SignableRequest::new(
        method,
        format!("http://{host}{path}"),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Precomputed(payload),
    )
    .unwrap();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&region)
        .name("s3")
        .time(time)
        .settings(s3_settings())
        .build()
        .unwrap()
        .into();
    let (instructions, signature) = sign(signable, &params).unwrap().into_parts();
    let mut headers = headers;
    headers.extend(instructions.headers().map(|(k, v)| (k.to_string(), v.to_string())));
    Signed { headers, signature }
}

/// Sends a request to the gateway (whatever its Host header says):
/// (status, headers, body text).
async fn send(
    cluster: &DevCluster,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> (u16, http::HeaderMap, String) {
    let mut b = http::Request::builder().method(method).uri(format!("{}{path}", cluster.endpoint()));
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let (st, h, body) = send_request(cluster, b.body(Full::new(bytes::Bytes::from(body))).unwrap()).await;
    (st, h, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addressing_errors_and_limits() {
    let cluster =
        DevCluster::start_with(&["--gateway-arg=--domain=s3.sillok.test", "--gateway-arg=--body-idle-timeout-s=2"]);
    let c = cluster.client();
    c.create_bucket().bucket("vhost").send().await.unwrap();
    put(&c, "vhost", "dir/a b+c.txt", b"virtual".to_vec()).await;
    refused_expect_continue_put_closes_the_connection(&cluster).await;

    // Virtual-host style: the bucket in the Host header.
    let (st, _, text) = raw_at(
        &cluster,
        "GET",
        "/dir/a%20b%2Bc.txt",
        Some("vhost.s3.sillok.test"),
        &[],
        "UNSIGNED-PAYLOAD",
        vec![],
        SystemTime::now(),
    )
    .await;
    assert_eq!((st, text.as_str()), (200, "virtual"));
    let (st, _, text) = raw_at(
        &cluster,
        "GET",
        "/?list-type=2&encoding-type=url",
        Some("vhost.s3.sillok.test"),
        &[],
        "UNSIGNED-PAYLOAD",
        vec![],
        SystemTime::now(),
    )
    .await;
    assert_eq!(st, 200, "{text}");
    assert!(text.contains("<Key>dir/a%20b%2Bc.txt</Key>"), "url-encoded listing: {text}");
    // Path style on the base domain itself.
    let (st, _, text) = raw_at(
        &cluster,
        "GET",
        "/vhost/dir/a%20b%2Bc.txt",
        Some("s3.sillok.test"),
        &[],
        "UNSIGNED-PAYLOAD",
        vec![],
        SystemTime::now(),
    )
    .await;
    assert_eq!((st, text.as_str()), (200, "virtual"));

    // Errors carry S3's XML with a request id, which the header repeats.
    let (st, h, text) = raw(&cluster, "GET", "/nobucket/k", &[], "UNSIGNED-PAYLOAD", vec![]).await;
    assert_eq!(st, 404);
    assert!(text.contains("<Code>NoSuchBucket</Code>"), "{text}");
    let id = h.get("x-amz-request-id").and_then(|v| v.to_str().ok()).expect("request id header").to_string();
    assert!(text.contains(&format!("<RequestId>{id}</RequestId>")), "{text}");
    // HEAD errors have no body.
    let (st, _, text) = raw(&cluster, "HEAD", "/vhost/missing", &[], "UNSIGNED-PAYLOAD", vec![]).await;
    assert_eq!((st, text.as_str()), (404, ""));
    // Malformed XML.
    let (st, _, text) =
        raw(&cluster, "POST", "/vhost?delete", &[], "UNSIGNED-PAYLOAD", b"<Delete><Object>".to_vec()).await;
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("<Code>MalformedXML</Code>"), "{text}");
    let (st, _, text) = raw(
        &cluster,
        "POST",
        "/vhost/k?uploadId=0123456789abcdef0123456789abcdef",
        &[],
        "UNSIGNED-PAYLOAD",
        b"not xml at all".to_vec(),
    )
    .await;
    assert_eq!(st, 400, "{text}");
    // A clock 20 minutes off.
    let (st, _, text) = raw_at(
        &cluster,
        "GET",
        "/vhost/dir/a%20b%2Bc.txt",
        None,
        &[],
        "UNSIGNED-PAYLOAD",
        vec![],
        SystemTime::now() - Duration::from_secs(1200),
    )
    .await;
    assert_eq!(st, 403, "{text}");
    assert!(text.contains("<Code>RequestTimeTooSkewed</Code>"), "{text}");
    // Invalid bucket names.
    let (st, _, text) = raw(&cluster, "PUT", "/Bad_Bucket", &[], "UNSIGNED-PAYLOAD", vec![]).await;
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("<Code>InvalidBucketName</Code>"), "{text}");
    // Too much user metadata.
    let err = c
        .put_object()
        .bucket("vhost")
        .key("meta")
        .metadata("big", "x".repeat(3000))
        .body(ByteStream::from(vec![1]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("MetadataTooLarge"));
    // A 5 GiB + 1 declared body is refused before any byte is read.
    let (st, _, text) = raw_with_declared_length(&cluster, "/vhost/huge", (5u64 << 30) + 1).await;
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("<Code>EntityTooLarge</Code>"), "{text}");

    // Dates s3s would overflow on (found by fuzzing): a clear 400, no crash.
    for bad in [
        "GET /vhost/k HTTP/1.1\r\nHost: x\r\nx-amz-date: 20260101T0 0000Z\r\n\r\n".to_string(),
        "GET /vhost/k HTTP/1.1\r\nHost: x\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AK/202601../r/s3/aws4_request, SignedHeaders=host, Signature=00\r\n\r\n".to_string(),
        "GET /vhost/k?X-Amz-Date=2026%000101T000000Z HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
    ] {
        let resp = raw_tcp(&cluster, &bad).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
        assert!(resp.contains("AuthorizationHeaderMalformed"), "{resp}");
    }
    // A suffix range of an empty object is unsatisfiable (no Content-Range underflow).
    put(&c, "vhost", "empty", Vec::new()).await;
    let err = c.get_object().bucket("vhost").key("empty").range("bytes=-5").send().await.unwrap_err();
    assert_eq!(status(&err), Some(416), "{err:?}");

    // Huge headers: refused (431) and the gateway keeps serving.
    let st =
        raw_tcp(&cluster, &format!("GET /vhost/k HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(100_000))).await;
    assert!(st.starts_with("HTTP/1.1 431"), "{st}");
    // A body that stops arriving: the request is dropped after the idle timeout.
    let resp = stalled_put(&cluster).await;
    assert!(resp.contains("400") || resp.is_empty(), "stalled body: {resp}");
    assert_same(&get(&c, "vhost", "dir/a b+c.txt", None).await, b"virtual", "still serving");
    assert_eq!(status(&c.head_object().bucket("vhost").key("stalled").send().await.unwrap_err()), Some(404));
}

/// A signed PUT that declares `len` bytes but sends none (the gateway must
/// answer from the headers alone).
async fn raw_with_declared_length(cluster: &DevCluster, path: &str, len: u64) -> (u16, http::HeaderMap, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_, signed) = signed_head(cluster, "PUT", path, len).await;
    let addr = cluster.endpoint().trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(signed.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await.expect("an answer").unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    let st = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (st, http::HeaderMap::new(), text)
}

/// The head of a signed request (UNSIGNED-PAYLOAD) as raw HTTP/1.1 text.
async fn signed_head(cluster: &DevCluster, method: &str, path: &str, len: u64) -> (String, String) {
    signed_head_with(cluster, method, path, Some(len)).await
}

/// As `signed_head`; without a length the request is sent chunked.
async fn signed_head_with(cluster: &DevCluster, method: &str, path: &str, len: Option<u64>) -> (String, String) {
    let host = cluster.endpoint().trim_start_matches("http://").to_string();
    let hs = vec![
        ("host".to_string(), host.clone()),
        ("x-amz-content-sha256".to_string(), "UNSIGNED-PAYLOAD".to_string()),
        match len {
            Some(len) => ("content-length".to_string(), len.to_string()),
            None => ("transfer-encoding".to_string(), "chunked".to_string()),
        },
    ];
    let signed = sign_request(cluster, method, path, hs, SystemTime::now());
    let mut text = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in &signed.headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    (host, text)
}

/// A PUT that waits for `100 Continue` and is refused before its body is
/// read (a failed `If-None-Match: *`): the client never sends the body, so
/// the gateway must not keep the connection, or hyper would take the next
/// request's first bytes as that body (seen with boto3: `GET` arriving as
/// `T`, answered 403 SignatureDoesNotMatch).
async fn refused_expect_continue_put_closes_the_connection(cluster: &DevCluster) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = cluster.endpoint().trim_start_matches("http://").to_string();
    let path = "/vhost/dir/a%20b%2Bc.txt";
    let hs = vec![
        ("host".to_string(), host.clone()),
        ("x-amz-content-sha256".to_string(), "UNSIGNED-PAYLOAD".to_string()),
        ("content-length".to_string(), "2".to_string()),
        ("expect".to_string(), "100-continue".to_string()),
        ("if-none-match".to_string(), "*".to_string()),
    ];
    let signed = sign_request(cluster, "PUT", path, hs, SystemTime::now());
    let mut text = format!("PUT {path} HTTP/1.1\r\n");
    for (k, v) in &signed.headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    let mut s = tokio::net::TcpStream::connect(&host).await.unwrap();
    s.write_all(text.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 8192];
    // Read until the connection closes (bounded): the answer, then EOF.
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let closed = tokio::time::timeout(Duration::from_secs(10), read_all).await.is_ok();
    let answer = String::from_utf8_lossy(&got).to_lowercase();
    assert!(answer.starts_with("http/1.1 412"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(closed, "the gateway kept a connection whose request body it never asked for: {answer}");
}

async fn raw_tcp(cluster: &DevCluster, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = cluster.endpoint().trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let _ = s.write_all(request.as_bytes()).await;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await.expect("an answer").unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A signed PUT of 1 MiB that sends 1 KiB and then nothing: the gateway
/// answers (or closes) once its body idle timeout passes.
async fn stalled_put(cluster: &DevCluster) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_, head) = signed_head(cluster, "PUT", "/vhost/stalled", MIB as u64).await;
    let addr = cluster.endpoint().trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&[7u8; 1024]).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf))
        .await
        .expect("the gateway gives up on a stalled body")
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(data))
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&sha2::Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).chain(msg.iter().copied()).collect();
    let inner = sha2::Sha256::digest(&inner);
    let outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).chain(inner.iter().copied()).collect();
    sha2::Sha256::digest(&outer).to_vec()
}

/// Builds a STREAMING-AWS4-HMAC-SHA256-PAYLOAD(-TRAILER) request by hand: the
/// seed signature over the headers, then one signature per chunk chained from
/// it (and one over the trailer), as the AWS SDKs and s3cmd send them.
/// `tamper` flips a byte of the last data chunk after signing.
pub(crate) async fn signed_chunks_put(
    cluster: &DevCluster,
    key: &str,
    data: &[u8],
    trailer: Option<&str>,
    tamper: bool,
) -> (u16, String) {
    let host = cluster.authority();
    let region = cluster.region();
    let secret = cluster.env["AWS_SECRET_ACCESS_KEY"].clone();
    let mode = if trailer.is_some() {
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
    } else {
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    };
    let chunks: Vec<&[u8]> = data.chunks(64 * 1024).collect();
    // Body length: every chunk's framing, the final empty chunk, the trailer.
    let frame_len = |n: usize| format!("{n:x}").len() + ";chunk-signature=".len() + 64 + 2 + n + 2;
    let mut total: usize = chunks.iter().map(|c| frame_len(c.len())).sum::<usize>() + frame_len(0);
    let trailer_line = trailer.map(|v| format!("x-amz-checksum-crc32:{v}\n"));
    if let Some(t) = &trailer_line {
        total = total - 2 + t.trim_end().len() + 2 + "x-amz-trailer-signature:".len() + 64 + 2 + 2;
    }
    let mut hs = vec![
        ("host".to_string(), host.clone()),
        ("x-amz-content-sha256".to_string(), mode.to_string()),
        ("content-encoding".to_string(), "aws-chunked".to_string()),
        ("x-amz-decoded-content-length".to_string(), data.len().to_string()),
        ("content-length".to_string(), total.to_string()),
    ];
    if trailer.is_some() {
        hs.push(("x-amz-trailer".to_string(), "x-amz-checksum-crc32".to_string()));
    }
    let path = format!("/chunks/{key}");
    let Signed { headers: hs, signature: seed } = sign_request(cluster, "PUT", &path, hs, SystemTime::now());
    let amz_date = hs.iter().find(|(k, _)| k.eq_ignore_ascii_case("x-amz-date")).unwrap().1.clone();
    let day = &amz_date[..8];
    let scope = format!("{day}/{region}/s3/aws4_request");
    let mut key_bytes = hmac_sha256(format!("AWS4{secret}").as_bytes(), day.as_bytes());
    for part in [region.as_str(), "s3", "aws4_request"] {
        key_bytes = hmac_sha256(&key_bytes, part.as_bytes());
    }
    let empty = sha256_hex(b"");
    let mut prev = seed;
    let mut body = Vec::new();
    for (i, c) in chunks.iter().copied().chain(std::iter::once(&[][..])).enumerate() {
        let sts = format!("AWS4-HMAC-SHA256-PAYLOAD\n{amz_date}\n{scope}\n{prev}\n{empty}\n{}", sha256_hex(c));
        let sig = hex(&hmac_sha256(&key_bytes, sts.as_bytes()));
        body.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", c.len()).as_bytes());
        let start = body.len();
        body.extend_from_slice(c);
        if tamper && i + 1 == chunks.len() {
            body[start] ^= 1;
        }
        body.extend_from_slice(b"\r\n");
        prev = sig;
    }
    if let Some(t) = &trailer_line {
        body.truncate(body.len() - 2);
        let sts = format!("AWS4-HMAC-SHA256-TRAILER\n{amz_date}\n{scope}\n{prev}\n{}", sha256_hex(t.as_bytes()));
        let sig = hex(&hmac_sha256(&key_bytes, sts.as_bytes()));
        body.extend_from_slice(t.trim_end().as_bytes());
        body.extend_from_slice(format!("\r\nx-amz-trailer-signature:{sig}\r\n\r\n").as_bytes());
    }
    assert_eq!(body.len(), total, "framing arithmetic");
    let (st, _, text) = send(cluster, "PUT", &path, &hs, body).await;
    (st, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_signatures_are_checked_chunk_by_chunk() {
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("chunks").send().await.unwrap();
    for (size, what) in [(200_000usize, "sharded"), (30_000, "inline")] {
        let data = pattern(size, size as u64);
        let (st, text) = signed_chunks_put(&cluster, &format!("{what}-ok"), &data, None, false).await;
        assert_eq!(st, 200, "{text}");
        assert_same(&get(&c, "chunks", &format!("{what}-ok"), None).await, &data, "signed chunks");
        let (st, text) = signed_chunks_put(&cluster, &format!("{what}-tampered"), &data, None, true).await;
        assert_eq!(st, 403, "a modified chunk must fail its signature: {text}");
        assert!(text.contains("SignatureDoesNotMatch"), "{text}");
        let err = c.head_object().bucket("chunks").key(format!("{what}-tampered")).send().await.unwrap_err();
        assert_eq!(status(&err), Some(404), "nothing stored for a tampered upload");
    }
    // The signed-trailer variant, with a right and a wrong CRC32.
    let data = pattern(150_000, 3);
    let crc = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(crc32fast::hash(&data).to_be_bytes())
    };
    let (st, text) = signed_chunks_put(&cluster, "trailer-ok", &data, Some(&crc), false).await;
    assert_eq!(st, 200, "{text}");
    assert_same(&get(&c, "chunks", "trailer-ok", None).await, &data, "signed chunks with a signed trailer");
    let (st, text) = signed_chunks_put(&cluster, "trailer-bad", &data, Some("AAAAAA=="), false).await;
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("BadDigest"), "{text}");

    // Unsigned requests are refused; a plain chunked PUT (no length at all)
    // gets S3's 501 NotImplemented (s3_exact has the other length cases).
    let (st, text) = {
        let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<Full<bytes::Bytes>>();
        let resp = http
            .request(
                http::Request::get(format!("{}/chunks/trailer-ok", cluster.endpoint())).body(Full::default()).unwrap(),
            )
            .await
            .unwrap();
        let st = resp.status().as_u16();
        (st, String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned())
    };
    assert_eq!(st, 403, "{text}");
    assert!(text.contains("<Code>AccessDenied</Code>"), "{text}");
    let (_, head) = signed_head_with(&cluster, "PUT", "/chunks/nolength", None).await;
    let resp = raw_tcp(&cluster, &format!("{head}5\r\nhello\r\n0\r\n\r\n")).await;
    assert!(resp.starts_with("HTTP/1.1 501"), "{resp}");
    assert!(resp.contains("<Code>NotImplemented</Code>"), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_encoding_comes_back_without_aws_chunked() {
    let cluster = DevCluster::start();
    let s3 = cluster.client();
    s3.create_bucket().bucket("enc").send().await.unwrap();
    // An aws-chunked upload of a gzip file, as SDKs send one with a checksum
    // trailer: the request's Content-Encoding is `gzip,aws-chunked`.
    let data = pattern(100_000, 9);
    let (headers, chunked) = crc32_trailer_upload(&data, "gzip,aws-chunked");
    let (st, _, text) =
        raw(&cluster, "PUT", "/enc/z.gz", &headers, "STREAMING-UNSIGNED-PAYLOAD-TRAILER", chunked).await;
    assert_eq!(st, 200, "{text}");
    let head = s3.head_object().bucket("enc").key("z.gz").send().await.unwrap();
    assert_eq!(head.content_encoding(), Some("gzip"), "HEAD");
    let got = s3.get_object().bucket("enc").key("z.gz").send().await.unwrap();
    assert_eq!(got.content_encoding(), Some("gzip"), "GET");
    assert_same(&got.body.collect().await.unwrap().into_bytes(), &data, "the body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_head_by_part_number_as_parallel_downloaders_use_them() {
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("parts").send().await.unwrap();
    let sizes = [5 * MIB, 5 * MIB + 17, 1000];
    let data: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, n)| pattern(*n, 40 + i as u64)).collect();
    let id =
        c.create_multipart_upload().bucket("parts").key("v.mp4").send().await.unwrap().upload_id().unwrap().to_string();
    let mut done = Vec::new();
    for (i, d) in data.iter().enumerate() {
        let n = i as i32 + 1;
        let up = c
            .upload_part()
            .bucket("parts")
            .key("v.mp4")
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from(d.clone()))
            .send()
            .await
            .unwrap();
        done.push(CompletedPart::builder().part_number(n).e_tag(up.e_tag().unwrap()).build());
    }
    c.complete_multipart_upload()
        .bucket("parts")
        .key("v.mp4")
        .upload_id(&id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(done)).build())
        .send()
        .await
        .unwrap();
    let total: usize = sizes.iter().sum();
    let mut start = 0usize;
    for (i, d) in data.iter().enumerate() {
        let n = i as i32 + 1;
        let got = c.get_object().bucket("parts").key("v.mp4").part_number(n).send().await.unwrap();
        assert_eq!(got.parts_count(), Some(3), "part {n}: PartsCount");
        assert_eq!(got.content_length(), Some(d.len() as i64), "part {n}: Content-Length");
        let want_range = format!("bytes {}-{}/{total}", start, start + d.len() - 1);
        assert_eq!(got.content_range(), Some(want_range.as_str()), "part {n}: Content-Range");
        assert_same(&got.body.collect().await.unwrap().into_bytes(), d, &format!("part {n}"));
        let head = c.head_object().bucket("parts").key("v.mp4").part_number(n).send().await.unwrap();
        assert_eq!((head.parts_count(), head.content_length()), (Some(3), Some(d.len() as i64)), "HEAD part {n}");
        start += d.len();
    }
    let err = c.get_object().bucket("parts").key("v.mp4").part_number(4).send().await.unwrap_err();
    assert_eq!((err.code(), err.raw_response().map(|r| r.status().as_u16())), (Some("InvalidPartNumber"), Some(416)));

    // A single-PUT object is one part: partNumber=1 is the whole object.
    let small = pattern(200_000, 7);
    put(&c, "parts", "photo.jpg", small.clone()).await;
    let got = c.get_object().bucket("parts").key("photo.jpg").part_number(1).send().await.unwrap();
    assert_eq!(got.parts_count(), None);
    assert_same(&got.body.collect().await.unwrap().into_bytes(), &small, "partNumber=1 of a single-PUT object");
    let err = c.head_object().bucket("parts").key("photo.jpg").part_number(2).send().await.unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(416));
}

/// `data` as one aws-chunked chunk with a correct CRC32 trailer
/// (STREAMING-UNSIGNED-PAYLOAD-TRAILER), and the headers that go with it.
pub(crate) fn crc32_trailer_upload(data: &[u8], content_encoding: &str) -> ([(&'static str, String); 3], Vec<u8>) {
    let crc = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(crc32fast::hash(data).to_be_bytes())
    };
    let mut chunked = format!("{:x}\r\n", data.len()).into_bytes();
    chunked.extend_from_slice(data);
    chunked.extend_from_slice(format!("\r\n0\r\nx-amz-checksum-crc32:{crc}\r\n\r\n").as_bytes());
    let headers = [
        ("content-encoding", content_encoding.to_string()),
        ("x-amz-decoded-content-length", data.len().to_string()),
        ("x-amz-trailer", "x-amz-checksum-crc32".to_string()),
    ];
    (headers, chunked)
}
