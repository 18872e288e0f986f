//! S3 object tagging through aws-sdk-s3 against a real `sillok dev`:
//! Put/Get/DeleteObjectTagging, tags on PUT (`x-amz-tagging`), on copy
//! (`x-amz-tagging-directive` COPY and REPLACE) and on multipart uploads,
//! `x-amz-tagging-count` on GET and HEAD, permissions, S3's limits and errors,
//! and tags read by a fresh gateway and with a whole site killed.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Tag, Tagging, TaggingDirective};
use http_body_util::Full;

use crate::support::*;

type Tags = BTreeMap<String, String>;

fn tags(pairs: &[(&str, &str)]) -> Tags {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn tagging(pairs: &[(&str, &str)]) -> Tagging {
    let set = pairs.iter().map(|(k, v)| Tag::builder().key(*k).value(*v).build().unwrap()).collect();
    Tagging::builder().set_tag_set(Some(set)).build().unwrap()
}

async fn get_tags(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Tags {
    let out = c
        .get_object_tagging()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetObjectTagging {key}: {e:?}"));
    out.tag_set().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect()
}

async fn put_tags(c: &aws_sdk_s3::Client, bucket: &str, key: &str, pairs: &[(&str, &str)]) {
    c.put_object_tagging()
        .bucket(bucket)
        .key(key)
        .tagging(tagging(pairs))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutObjectTagging {key}: {e:?}"));
}

/// The tag count GET answers with (`x-amz-tagging-count`).
async fn get_count(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<i32> {
    c.get_object().bucket(bucket).key(key).send().await.unwrap().tag_count()
}

fn plain_http()
-> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<bytes::Bytes>> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// `x-amz-tagging-count` of a HEAD (the SDK's HeadObject output has no tag
/// count, so the HEAD is presigned and sent as plain HTTP).
async fn head_count(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<String> {
    let req = c
        .head_object()
        .bucket(bucket)
        .key(key)
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
        .await
        .unwrap();
    let resp = plain_http().request(http::Request::head(req.uri()).body(Full::default()).unwrap()).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "HEAD {key}");
    resp.headers().get("x-amz-tagging-count").map(|v| v.to_str().unwrap().to_string())
}

/// A PutObjectTagging whose XML body is replaced by `body` before it is
/// signed (the SDK only sends well-formed tag sets): its status and error code.
async fn put_tagging_raw(c: &aws_sdk_s3::Client, bucket: &str, key: &str, body: &'static str) -> (u16, String) {
    let r = c
        .put_object_tagging()
        .bucket(bucket)
        .key(key)
        .tagging(tagging(&[("placeholder", "x")]))
        .customize()
        .mutate_request(move |req| {
            *req.body_mut() = aws_sdk_s3::primitives::SdkBody::from(body);
            let headers = req.headers_mut();
            headers.insert("content-length", body.len().to_string());
            // The SDK's checksum was of its own body.
            for name in ["content-md5", "x-amz-checksum-crc32", "x-amz-checksum-crc32c", "x-amz-sdk-checksum-algorithm"]
            {
                headers.remove(name);
            }
        })
        .send()
        .await;
    match r {
        Ok(_) => (200, String::new()),
        Err(e) => (status(&e), code(&e)),
    }
}

fn code<E: ProvideErrorMetadata>(e: &aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::http::Response>) -> String {
    e.code().unwrap_or_default().to_string()
}

fn status<E>(e: &aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::http::Response>) -> u16 {
    e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_on_every_path_survive_a_fresh_gateway_and_a_site_loss() {
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("tags").send().await.unwrap();

    // Tags on PUT: a URL-encoded query in `x-amz-tagging`; 200 KiB: sharded.
    let body = pattern(200 * 1024, 1);
    c.put_object()
        .bucket("tags")
        .key("a.jpg")
        .tagging("project=sillok&note=a%20b%26c&empty=")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(get_tags(&c, "tags", "a.jpg").await, tags(&[("project", "sillok"), ("note", "a b&c"), ("empty", "")]));
    assert_eq!(get_count(&c, "tags", "a.jpg").await, Some(3));
    assert_eq!(head_count(&c, "tags", "a.jpg").await.as_deref(), Some("3"));

    // PutObjectTagging replaces the whole set, and touches neither the body,
    // its shards, the ETag nor Last-Modified.
    let before = c.head_object().bucket("tags").key("a.jpg").send().await.unwrap();
    let shards_before = cluster.shard_files();
    assert_eq!(shards_before.len(), 6, "one sharded object: {shards_before:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    put_tags(&c, "tags", "a.jpg", &[("team", "chat"), ("ttl", "30d")]).await;
    assert_eq!(get_tags(&c, "tags", "a.jpg").await, tags(&[("team", "chat"), ("ttl", "30d")]));
    let after = c.head_object().bucket("tags").key("a.jpg").send().await.unwrap();
    assert_eq!(after.e_tag(), before.e_tag());
    assert_eq!(after.last_modified(), before.last_modified());
    assert_eq!(cluster.shard_files(), shards_before, "a tagging change wrote or moved shards");
    assert_same(&get(&c, "tags", "a.jpg", None).await, &body, "the body after a tagging change");
    assert_eq!(head_count(&c, "tags", "a.jpg").await.as_deref(), Some("2"));

    // DeleteObjectTagging: no tags, no count header.
    c.delete_object_tagging().bucket("tags").key("a.jpg").send().await.unwrap();
    assert!(get_tags(&c, "tags", "a.jpg").await.is_empty());
    assert_eq!(get_count(&c, "tags", "a.jpg").await, None);
    assert_eq!(head_count(&c, "tags", "a.jpg").await, None);
    assert_same(&get(&c, "tags", "a.jpg", None).await, &body, "the body after removing the tags");

    // A small (inline) object: its bytes live in the manifest the change rewrites.
    c.put_object()
        .bucket("tags")
        .key("small")
        .tagging("k=v")
        .body(ByteStream::from(b"tiny".to_vec()))
        .send()
        .await
        .unwrap();
    put_tags(&c, "tags", "small", &[("k", "w"), ("second", "2")]).await;
    assert_eq!(get_tags(&c, "tags", "small").await, tags(&[("k", "w"), ("second", "2")]));
    assert_same(&get(&c, "tags", "small", None).await, b"tiny", "an inline body after a tagging change");
    // An object PUT over it has only its own tags (none).
    put(&c, "tags", "small", b"other".to_vec()).await;
    assert!(get_tags(&c, "tags", "small").await.is_empty());

    // Missing objects and buckets.
    let err = c.get_object_tagging().bucket("tags").key("nope").send().await.unwrap_err();
    assert_eq!((code(&err), status(&err)), ("NoSuchKey".into(), 404));
    let err =
        c.put_object_tagging().bucket("tags").key("nope").tagging(tagging(&[("a", "b")])).send().await.unwrap_err();
    assert_eq!(code(&err), "NoSuchKey");
    let err = c.delete_object_tagging().bucket("tags").key("nope").send().await.unwrap_err();
    assert_eq!(code(&err), "NoSuchKey");
    let err = c.get_object_tagging().bucket("no-bucket").key("a.jpg").send().await.unwrap_err();
    assert_eq!(code(&err), "NoSuchBucket");
    // A deleted object has no tags to change either.
    put(&c, "tags", "gone", b"x".to_vec()).await;
    c.delete_object().bucket("tags").key("gone").send().await.unwrap();
    let err =
        c.put_object_tagging().bucket("tags").key("gone").tagging(tagging(&[("a", "b")])).send().await.unwrap_err();
    assert_eq!(code(&err), "NoSuchKey");

    // CopyObject: COPY (the default) keeps the source's tags, REPLACE takes
    // `x-amz-tagging` (none given: no tags).
    put_tags(&c, "tags", "a.jpg", &[("team", "chat")]).await;
    c.copy_object().bucket("tags").key("copy-default").copy_source("tags/a.jpg").send().await.unwrap();
    assert_eq!(get_tags(&c, "tags", "copy-default").await, tags(&[("team", "chat")]));
    c.copy_object()
        .bucket("tags")
        .key("copy-copy")
        .copy_source("tags/a.jpg")
        .tagging_directive(TaggingDirective::Copy)
        .tagging("ignored=yes")
        .send()
        .await
        .unwrap();
    assert_eq!(get_tags(&c, "tags", "copy-copy").await, tags(&[("team", "chat")]));
    c.copy_object()
        .bucket("tags")
        .key("copy-replace")
        .copy_source("tags/a.jpg")
        .tagging_directive(TaggingDirective::Replace)
        .tagging("x=1&y=%ED%95%9C")
        .send()
        .await
        .unwrap();
    assert_eq!(get_tags(&c, "tags", "copy-replace").await, tags(&[("x", "1"), ("y", "한")]));
    c.copy_object()
        .bucket("tags")
        .key("copy-none")
        .copy_source("tags/a.jpg")
        .tagging_directive(TaggingDirective::Replace)
        .send()
        .await
        .unwrap();
    assert!(get_tags(&c, "tags", "copy-none").await.is_empty());
    assert_same(&get(&c, "tags", "copy-replace", None).await, &body, "the copy's body");

    // Multipart: the tags given to CreateMultipartUpload are the object's.
    let up =
        c.create_multipart_upload().bucket("tags").key("video.mp4").tagging("kind=video&room=42").send().await.unwrap();
    let id = up.upload_id().unwrap();
    let part_body = pattern(300 * 1024, 2);
    let part = c
        .upload_part()
        .bucket("tags")
        .key("video.mp4")
        .upload_id(id)
        .part_number(1)
        .body(ByteStream::from(part_body.clone()))
        .send()
        .await
        .unwrap();
    let done = CompletedMultipartUpload::builder()
        .parts(CompletedPart::builder().part_number(1).e_tag(part.e_tag().unwrap()).build())
        .build();
    c.complete_multipart_upload()
        .bucket("tags")
        .key("video.mp4")
        .upload_id(id)
        .multipart_upload(done)
        .send()
        .await
        .unwrap();
    assert_eq!(get_tags(&c, "tags", "video.mp4").await, tags(&[("kind", "video"), ("room", "42")]));
    assert_eq!(get_count(&c, "tags", "video.mp4").await, Some(2));
    put_tags(&c, "tags", "video.mp4", &[("kind", "clip")]).await;
    assert_eq!(get_tags(&c, "tags", "video.mp4").await, tags(&[("kind", "clip")]));
    assert_same(&get(&c, "tags", "video.mp4", None).await, &part_body, "a multipart body after a tagging change");

    // Permissions: a read-only key reads tags and may not change them.
    let ro: serde_json::Value =
        serde_json::from_str(&cluster.admin_ok(&["key", "create", "--read-only", "--json"])).unwrap();
    let ro = cluster.client_with(ro["access_key_id"].as_str().unwrap(), ro["secret_access_key"].as_str().unwrap());
    assert_eq!(get_tags(&ro, "tags", "a.jpg").await, tags(&[("team", "chat")]));
    let err =
        ro.put_object_tagging().bucket("tags").key("a.jpg").tagging(tagging(&[("a", "b")])).send().await.unwrap_err();
    assert_eq!(code(&err), "AccessDenied");
    let err = ro.delete_object_tagging().bucket("tags").key("a.jpg").send().await.unwrap_err();
    assert_eq!(code(&err), "AccessDenied");

    // A gateway started now (nothing cached) reads the same tags: they are
    // in the manifests on the nodes.
    let fresh = cluster.start_gateway("gw-tags", &[]);
    assert_eq!(get_tags(&fresh.client(), "tags", "a.jpg").await, tags(&[("team", "chat")]));
    assert_eq!(get_tags(&fresh.client(), "tags", "video.mp4").await, tags(&[("kind", "clip")]));

    // With a whole site killed, tags are read from the other sites'
    // replicas, and can still be changed.
    let site = cluster.sites()[0].clone();
    cluster.kill_site(&site);
    for (key, want) in [
        ("a.jpg", tags(&[("team", "chat")])),
        ("video.mp4", tags(&[("kind", "clip")])),
        ("copy-replace", tags(&[("x", "1"), ("y", "한")])),
    ] {
        assert_eq!(get_tags(&c, "tags", key).await, want, "{key} with {site} down");
    }
    put_tags(&c, "tags", "a.jpg", &[("after", "loss")]).await;
    assert_eq!(get_tags(&c, "tags", "a.jpg").await, tags(&[("after", "loss")]));
    assert_same(&get(&c, "tags", "a.jpg", None).await, &body, "the body after a tagging change with a site down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_limits_are_refused_as_s3_refuses_them() {
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("limits").send().await.unwrap();
    put(&c, "limits", "obj", b"body".to_vec()).await;
    put_tags(&c, "limits", "obj", &[("keep", "me")]).await;

    let eleven: Vec<(String, String)> = (0..11).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
    let eleven: Vec<(&str, &str)> = eleven.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let long_key = "키".repeat(129);
    let long_value = "v".repeat(257);
    let refused: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("11 tags", eleven.clone()),
        ("a 129-character key", vec![(long_key.as_str(), "v")]),
        ("a 257-character value", vec![("k", long_value.as_str())]),
        ("an empty key", vec![("", "v")]),
        ("a key twice", vec![("dup", "1"), ("dup", "2")]),
        ("an aws: key", vec![("aws:cloudformation:stack", "x")]),
    ];
    for (what, pairs) in &refused {
        let err = c.put_object_tagging().bucket("limits").key("obj").tagging(tagging(pairs)).send().await.unwrap_err();
        assert_eq!((code(&err), status(&err)), ("InvalidTag".into(), 400), "PutObjectTagging with {what}: {err:?}");
    }
    // The limits themselves are allowed: 10 tags, 128-character keys (of
    // multi-byte characters), 256-character and empty values.
    let ten = &eleven[..10];
    let max_key = "키".repeat(128);
    let max_value = "ü".repeat(256);
    put(&c, "limits", "edge", b"e".to_vec()).await;
    put_tags(&c, "limits", "edge", &[(max_key.as_str(), max_value.as_str()), ("empty", "")]).await;
    assert_eq!(get_tags(&c, "limits", "edge").await, tags(&[(max_key.as_str(), max_value.as_str()), ("empty", "")]));
    put_tags(&c, "limits", "edge", ten).await;
    assert_eq!(get_tags(&c, "limits", "edge").await.len(), 10);
    assert_eq!(get_count(&c, "limits", "edge").await, Some(10));

    // Refused requests changed nothing.
    assert_eq!(get_tags(&c, "limits", "obj").await, tags(&[("keep", "me")]));

    // The same limits on `x-amz-tagging`: PUT, copy with REPLACE, multipart.
    let header_eleven: String = (0..11).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join("&");
    for (what, header) in [
        ("11 tags", header_eleven.as_str()),
        ("a key twice", "a=1&a=2"),
        ("an aws: key", "aws%3Aname=x"),
        ("an empty key", "=x"),
    ] {
        let err = c
            .put_object()
            .bucket("limits")
            .key("refused")
            .tagging(header)
            .body(ByteStream::from(b"x".to_vec()))
            .send()
            .await
            .unwrap_err();
        assert_eq!((code(&err), status(&err)), ("InvalidTag".into(), 400), "PUT with {what}");
        let err = c
            .copy_object()
            .bucket("limits")
            .key("refused")
            .copy_source("limits/obj")
            .tagging_directive(TaggingDirective::Replace)
            .tagging(header)
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err), "InvalidTag", "copy with {what}");
        let err = c.create_multipart_upload().bucket("limits").key("refused").tagging(header).send().await.unwrap_err();
        assert_eq!(code(&err), "InvalidTag", "CreateMultipartUpload with {what}");
    }
    let err = c.head_object().bucket("limits").key("refused").send().await.unwrap_err();
    assert_eq!(status(&err), 404, "a refused PUT or copy stored the object");
    let uploads = c.list_multipart_uploads().bucket("limits").send().await.unwrap();
    assert!(uploads.uploads().is_empty(), "a refused CreateMultipartUpload made an upload");
    // A header that is not URL-encoded UTF-8.
    let err = c
        .put_object()
        .bucket("limits")
        .key("refused")
        .tagging("k=%FF")
        .body(ByteStream::from(b"x".to_vec()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "InvalidArgument");

    // Broken XML, and a Tag without a Key: MalformedXML.
    let (st, text) = put_tagging_raw(&c, "limits", "obj", "<Tagging><TagSet><Tag><Key>a</Key>").await;
    assert_eq!((st, text.as_str()), (400, "MalformedXML"));
    let (st, text) =
        put_tagging_raw(&c, "limits", "obj", "<Tagging><TagSet><Tag><Value>v</Value></Tag></TagSet></Tagging>").await;
    assert_eq!((st, text.as_str()), (400, "MalformedXML"));
    // A well-formed raw body goes through the same path and is applied.
    let (st, text) = put_tagging_raw(
        &c,
        "limits",
        "obj",
        "<Tagging><TagSet><Tag><Key>raw</Key><Value>ok</Value></Tag></TagSet></Tagging>",
    )
    .await;
    assert_eq!(st, 200, "{text}");
    assert_eq!(get_tags(&c, "limits", "obj").await, tags(&[("raw", "ok")]));
}

/// A tag change made while the key is overwritten: whichever order the two
/// reach the replicas in, the acknowledged PUT's body is what remains (the
/// change is ordered right after the version it read, so it never writes an
/// older body over a newer one), with either no tags or the new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_change_racing_an_overwrite_never_brings_the_old_body_back() {
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("race").send().await.unwrap();
    put(&c, "race", "k", pattern(1000, 0)).await;
    let mut tagged_new = 0;
    for i in 1..=20u64 {
        let body = pattern(1000 + i as usize, i);
        let value = i.to_string();
        // One or the other starts up to 4 ms later, so that either may reach
        // the replicas first.
        let (put_delay, tag_delay) = if i % 2 == 0 { (i % 5, 0) } else { (0, i % 5) };
        let overwrite = async {
            tokio::time::sleep(Duration::from_millis(put_delay)).await;
            put(&c, "race", "k", body.clone()).await
        };
        let retag = async {
            tokio::time::sleep(Duration::from_millis(tag_delay)).await;
            c.put_object_tagging().bucket("race").key("k").tagging(tagging(&[("round", &value)])).send().await
        };
        let ((), tagged) = tokio::join!(overwrite, retag);
        tagged.unwrap_or_else(|e| panic!("round {i}: PutObjectTagging: {e:?}"));
        assert_same(&get(&c, "race", "k", None).await, &body, &format!("round {i}: the body after the race"));
        let now = get_tags(&c, "race", "k").await;
        assert!(now.is_empty() || now == tags(&[("round", &value)]), "round {i}: tags {now:?}");
        tagged_new += usize::from(!now.is_empty());
    }
    println!("the tag change landed on the new object in {tagged_new} of 20 rounds");
}
