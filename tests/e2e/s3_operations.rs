//! The S3 operations of the first slice, through aws-sdk-s3 against `sillok dev`:
//! buckets, objects, listing with prefix/delimiter/max-keys/continuation,
//! presigned GET and PUT, and S3 error codes.

use aws_sdk_s3::error::ProvideErrorMetadata;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_objects_and_listing() {
    let cluster = DevCluster::start();
    let c = cluster.client();

    // Buckets.
    c.create_bucket().bucket("alpha").send().await.unwrap();
    c.create_bucket().bucket("beta").send().await.unwrap();
    let err = c.create_bucket().bucket("alpha").send().await.unwrap_err();
    assert_eq!(err.code(), Some("BucketAlreadyOwnedByYou"));
    let names: Vec<String> =
        c.list_buckets().send().await.unwrap().buckets().iter().filter_map(|b| b.name().map(str::to_string)).collect();
    assert_eq!(names, vec!["alpha", "beta"]);
    c.head_bucket().bucket("alpha").send().await.unwrap();
    let err = c.head_bucket().bucket("nope").send().await.unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(404));
    let err = c.put_object().bucket("nope").key("k").body(vec![1].into()).send().await.unwrap_err();
    assert_eq!(err.code(), Some("NoSuchBucket"));

    // Objects and metadata.
    c.put_object()
        .bucket("alpha")
        .key("a/photo.jpg")
        .content_type("image/jpeg")
        .metadata("sender", "kim")
        .cache_control("max-age=60")
        .body(pattern(5000, 1).into())
        .send()
        .await
        .unwrap();
    let head = c.head_object().bucket("alpha").key("a/photo.jpg").send().await.unwrap();
    assert_eq!(head.content_type(), Some("image/jpeg"));
    assert_eq!(head.cache_control(), Some("max-age=60"));
    assert_eq!(head.metadata().and_then(|m| m.get("sender")).map(String::as_str), Some("kim"));
    let err = c.get_object().bucket("alpha").key("missing").send().await.unwrap_err();
    assert_eq!(err.code(), Some("NoSuchKey"));
    let err = c.head_object().bucket("alpha").key("missing").send().await.unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(404));

    // Overwrite: last writer wins.
    put(&c, "alpha", "a/photo.jpg", pattern(300_000, 2)).await;
    assert_same(&get(&c, "alpha", "a/photo.jpg", None).await, &pattern(300_000, 2), "overwritten");

    // A non-empty bucket cannot be deleted.
    let err = c.delete_bucket().bucket("alpha").send().await.unwrap_err();
    assert_eq!(err.code(), Some("BucketNotEmpty"));

    // Listing: 25 keys in a small tree.
    let mut keys = Vec::new();
    for d in ["x", "y"] {
        for i in 0..10 {
            keys.push(format!("{d}/{i:02}.jpg"));
        }
    }
    for i in 0..4 {
        keys.push(format!("top-{i}"));
    }
    for k in &keys {
        put(&c, "beta", k, k.as_bytes().to_vec()).await;
    }
    keys.sort();
    // Paging with max-keys and continuation tokens sees every key once, in order.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page =
            c.list_objects_v2().bucket("beta").max_keys(7).set_continuation_token(token.clone()).send().await.unwrap();
        assert!(page.contents().len() <= 7);
        seen.extend(page.contents().iter().map(|o| o.key().unwrap().to_string()));
        if page.is_truncated() != Some(true) {
            break;
        }
        token = page.next_continuation_token().map(str::to_string);
    }
    assert_eq!(seen, keys);
    // Prefix.
    let page = c.list_objects_v2().bucket("beta").prefix("y/0").send().await.unwrap();
    let got: Vec<&str> = page.contents().iter().map(|o| o.key().unwrap()).collect();
    assert_eq!(got, (0..10).map(|i| format!("y/{i:02}.jpg")).collect::<Vec<_>>());
    // Delimiter: common prefixes roll up.
    let page = c.list_objects_v2().bucket("beta").delimiter("/").send().await.unwrap();
    let prefixes: Vec<&str> = page.common_prefixes().iter().map(|p| p.prefix().unwrap()).collect();
    assert_eq!(prefixes, vec!["x/", "y/"]);
    let got: Vec<&str> = page.contents().iter().map(|o| o.key().unwrap()).collect();
    assert_eq!(got, vec!["top-0", "top-1", "top-2", "top-3"]);
    // Delimiter with paging: prefixes count toward max-keys and are not repeated.
    let mut all = Vec::new();
    let mut token = None;
    loop {
        let page = c
            .list_objects_v2()
            .bucket("beta")
            .delimiter("/")
            .max_keys(2)
            .set_continuation_token(token.clone())
            .send()
            .await
            .unwrap();
        all.extend(page.common_prefixes().iter().map(|p| p.prefix().unwrap().to_string()));
        all.extend(page.contents().iter().map(|o| o.key().unwrap().to_string()));
        if page.is_truncated() != Some(true) {
            break;
        }
        token = page.next_continuation_token().map(str::to_string);
    }
    assert_eq!(
        all,
        vec!["top-0", "top-1", "top-2", "top-3", "x/", "y/"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
            .tap_sort()
    );

    // Deletes hide keys; deleting a missing key is fine (204).
    c.delete_object().bucket("beta").key("x/00.jpg").send().await.unwrap();
    c.delete_object().bucket("beta").key("never-existed").send().await.unwrap();
    let err = c.get_object().bucket("beta").key("x/00.jpg").send().await.unwrap_err();
    assert_eq!(err.code(), Some("NoSuchKey"));
    let page = c.list_objects_v2().bucket("beta").prefix("x/").send().await.unwrap();
    assert_eq!(page.key_count(), Some(9));

    // Emptied buckets can be deleted.
    for k in &keys {
        c.delete_object().bucket("beta").key(k).send().await.unwrap();
    }
    c.delete_bucket().bucket("beta").send().await.unwrap();
    let err = c.head_bucket().bucket("beta").send().await.unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(404));
}

trait TapSort {
    fn tap_sort(self) -> Self;
}
impl TapSort for Vec<String> {
    fn tap_sort(mut self) -> Self {
        self.sort();
        self
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_get_and_put_work_and_expire() {
    use aws_sdk_s3::presigning::PresigningConfig;
    use http_body_util::{BodyExt, Full};
    use std::time::Duration;

    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("share").send().await.unwrap();
    let body = pattern(200_000, 5);

    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();

    // Presigned PUT, made with the SDK, sent by a plain HTTP client.
    let req = c
        .put_object()
        .bucket("share")
        .key("p.jpg")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
        .await
        .unwrap();
    let mut b = http::Request::builder().method("PUT").uri(req.uri());
    for (k, v) in req.headers() {
        b = b.header(k, v);
    }
    let resp = http.request(b.body(Full::new(bytes::Bytes::from(body.clone()))).unwrap()).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "presigned PUT");

    // Presigned GET.
    let req = c
        .get_object()
        .bucket("share")
        .key("p.jpg")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
        .await
        .unwrap();
    let resp = http.request(http::Request::get(req.uri()).body(Full::default()).unwrap()).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_same(&got, &body, "presigned GET");

    // A tampered presigned URL is refused.
    let tampered = req.uri().replace("p.jpg", "q.jpg");
    let resp = http.request(http::Request::get(tampered).body(Full::default()).unwrap()).await.unwrap();
    assert_eq!(resp.status().as_u16(), 403);

    // An expired one too.
    let req = c
        .get_object()
        .bucket("share")
        .key("p.jpg")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(1)).unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let resp = http.request(http::Request::get(req.uri()).body(Full::default()).unwrap()).await.unwrap();
    assert_eq!(resp.status().as_u16(), 403, "expired presigned URL");
}
