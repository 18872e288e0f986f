//! Bucket lifecycle against a real `sillok dev`: Put/Get/DeleteBucketLifecycle
//! through aws-sdk-s3 (with S3's refusals, Sillok's refusal of Transition,
//! and raw XML for what the SDK cannot send), then the expirer with a
//! shortened day: expiry by age with prefix and tag filters, by a date in
//! the past, aborts of incomplete multipart uploads, its metrics, and a
//! gateway killed with `kill -9` and restarted that still finishes the work.

use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
    LifecycleRuleAndOperator, LifecycleRuleFilter, NoncurrentVersionExpiration, Tag, Transition,
    TransitionStorageClass,
};

use crate::support::*;

/// 2020-01-01T00:00:00Z and 2030-01-01T00:00:00Z.
const PAST_MIDNIGHT: i64 = 1_577_836_800;
const FUTURE_MIDNIGHT: i64 = 1_893_456_000;

fn code<E: ProvideErrorMetadata>(e: &aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::http::Response>) -> String {
    e.as_service_error().and_then(|s| s.code()).unwrap_or("(no service error)").to_string()
}

fn status<E>(e: &aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::http::Response>) -> u16 {
    e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0)
}

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build().unwrap()
}

fn prefix_filter(p: &str) -> LifecycleRuleFilter {
    LifecycleRuleFilter::builder().prefix(p).build()
}

fn days(d: i32) -> LifecycleExpiration {
    LifecycleExpiration::builder().days(d).build()
}

fn date(secs: i64) -> LifecycleExpiration {
    LifecycleExpiration::builder().date(DateTime::from_secs(secs)).build()
}

fn rule(id: &str, filter: LifecycleRuleFilter, expiration: LifecycleExpiration) -> LifecycleRule {
    LifecycleRule::builder()
        .id(id)
        .filter(filter)
        .expiration(expiration)
        .status(ExpirationStatus::Enabled)
        .build()
        .unwrap()
}

fn abort_rule(id: &str, prefix: &str, days: i32) -> LifecycleRule {
    LifecycleRule::builder()
        .id(id)
        .filter(prefix_filter(prefix))
        .abort_incomplete_multipart_upload(
            AbortIncompleteMultipartUpload::builder().days_after_initiation(days).build(),
        )
        .status(ExpirationStatus::Enabled)
        .build()
        .unwrap()
}

fn config(rules: Vec<LifecycleRule>) -> BucketLifecycleConfiguration {
    BucketLifecycleConfiguration::builder().set_rules(Some(rules)).build().unwrap()
}

async fn put_config(c: &aws_sdk_s3::Client, bucket: &str, rules: Vec<LifecycleRule>) -> Result<(), (u16, String)> {
    c.put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(config(rules))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| (status(&e), code(&e)))
}

async fn get_rules(c: &aws_sdk_s3::Client, bucket: &str) -> Vec<LifecycleRule> {
    c.get_bucket_lifecycle_configuration().bucket(bucket).send().await.unwrap().rules().to_vec()
}

/// Sends `body` as the PutBucketLifecycleConfiguration XML (the SDK cannot
/// send broken or legacy forms): (status, error code or "").
async fn put_raw(c: &aws_sdk_s3::Client, bucket: &str, body: String) -> (u16, String) {
    let body: &'static str = Box::leak(body.into_boxed_str());
    let r = c
        .put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(config(vec![rule("placeholder", prefix_filter(""), days(1))]))
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

fn xml(rules: &str) -> String {
    format!(
        r#"<LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{rules}</LifecycleConfiguration>"#
    )
}

/// A counter or gauge from the gateway's metrics page (0 if absent).
async fn metric(endpoint: &str, name: &str) -> f64 {
    let page = http_text(&format!("{endpoint}/_sillok/metrics")).await;
    page.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn put_tagged(c: &aws_sdk_s3::Client, bucket: &str, key: &str, tagging: Option<&str>) {
    c.put_object()
        .bucket(bucket)
        .key(key)
        .set_tagging(tagging.map(str::to_string))
        .body(ByteStream::from(pattern(100, key.len() as u64)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT {bucket}/{key}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
}

async fn sorted_keys(c: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let mut keys = list_keys(c, bucket).await;
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_configuration_put_get_delete_and_refusals() {
    // No expirer here: only the configuration.
    let cluster = DevCluster::start_with(&["--lifecycle-interval-s=0"]);
    let c = cluster.client();
    c.create_bucket().bucket("media").send().await.unwrap();

    let err = c.get_bucket_lifecycle_configuration().bucket("media").send().await.unwrap_err();
    assert_eq!((status(&err), code(&err).as_str()), (404, "NoSuchLifecycleConfiguration"));
    let err = c.get_bucket_lifecycle_configuration().bucket("nobucket").send().await.unwrap_err();
    assert_eq!(code(&err), "NoSuchBucket");

    let and = LifecycleRuleAndOperator::builder()
        .prefix("chat/")
        .tags(tag("kind", "preview"))
        .tags(tag("app", "talk"))
        .object_size_greater_than(1024)
        .build();
    let rules = vec![
        rule("tmp", prefix_filter("tmp/"), days(1)),
        LifecycleRule::builder()
            .id("previews")
            .filter(LifecycleRuleFilter::builder().and(and).build())
            .expiration(date(FUTURE_MIDNIGHT))
            .status(ExpirationStatus::Disabled)
            .build()
            .unwrap(),
        rule("tagged", LifecycleRuleFilter::builder().tag(tag("ttl", "short")).build(), days(3)),
        rule("small", LifecycleRuleFilter::builder().object_size_less_than(10).build(), days(30)),
        abort_rule("uploads", "", 7),
        LifecycleRule::builder()
            .id("noncurrent")
            .filter(prefix_filter(""))
            .noncurrent_version_expiration(NoncurrentVersionExpiration::builder().noncurrent_days(30).build())
            .status(ExpirationStatus::Enabled)
            .build()
            .unwrap(),
    ];
    put_config(&c, "media", rules.clone()).await.unwrap();
    assert_eq!(get_rules(&c, "media").await, rules, "the configuration comes back as it was put");

    // Refused with S3's codes (400), and nothing changes.
    let transition = LifecycleRule::builder()
        .id("cold")
        .filter(prefix_filter("old/"))
        .transitions(Transition::builder().days(30).storage_class(TransitionStorageClass::Glacier).build())
        .status(ExpirationStatus::Enabled)
        .build()
        .unwrap();
    let no_action = LifecycleRule::builder()
        .id("idle")
        .filter(prefix_filter("x/"))
        .status(ExpirationStatus::Enabled)
        .build()
        .unwrap();
    let tagged_abort = LifecycleRule::builder()
        .id("tagged-abort")
        .filter(LifecycleRuleFilter::builder().tag(tag("a", "b")).build())
        .abort_incomplete_multipart_upload(AbortIncompleteMultipartUpload::builder().days_after_initiation(1).build())
        .status(ExpirationStatus::Enabled)
        .build()
        .unwrap();
    let bad: Vec<(Vec<LifecycleRule>, &str)> = vec![
        (vec![rule("zero", prefix_filter(""), days(0))], "InvalidArgument"),
        (vec![rule("negative", prefix_filter(""), days(-1))], "InvalidArgument"),
        (vec![rule("noon", prefix_filter(""), date(FUTURE_MIDNIGHT + 12 * 3600))], "InvalidArgument"),
        (vec![rule(&"i".repeat(256), prefix_filter(""), days(1))], "InvalidArgument"),
        (
            vec![rule("twice", prefix_filter("a/"), days(1)), rule("twice", prefix_filter("b/"), days(2))],
            "InvalidArgument",
        ),
        (vec![abort_rule("abort-zero", "", 0)], "InvalidArgument"),
        (vec![transition], "InvalidRequest"),
        (vec![no_action], "InvalidRequest"),
        (vec![tagged_abort], "InvalidRequest"),
        ((0..1001).map(|i| rule(&format!("r{i}"), prefix_filter(""), days(1))).collect(), "MalformedXML"),
    ];
    for (rules, want) in bad {
        let first = rules[0].id().unwrap_or_default().chars().take(20).collect::<String>();
        assert_eq!(put_config(&c, "media", rules).await, Err((400, want.to_string())), "rule {first}");
    }
    let err = c
        .put_bucket_lifecycle_configuration()
        .bucket("media")
        .lifecycle_configuration(config(vec![
            LifecycleRule::builder()
                .id("cold")
                .filter(prefix_filter(""))
                .transitions(Transition::builder().days(1).storage_class(TransitionStorageClass::StandardIa).build())
                .status(ExpirationStatus::Enabled)
                .build()
                .unwrap(),
        ]))
        .send()
        .await
        .unwrap_err();
    assert!(err.as_service_error().and_then(|e| e.message()).unwrap_or("").contains("Transition is not supported"));

    // What the SDK cannot send: broken XML, shapes S3 refuses, a bad Status.
    let raw_bad = [
        "<LifecycleConfiguration><Rule><ID>a</ID>".to_string(),
        xml(
            "<Rule><ID>a</ID><Prefix>p/</Prefix><Filter><Prefix>p/</Prefix></Filter><Status>Enabled</Status><Expiration><Days>1</Days></Expiration></Rule>",
        ),
        xml("<Rule><ID>a</ID><Status>Enabled</Status><Expiration><Days>1</Days></Expiration></Rule>"),
        xml(
            "<Rule><ID>a</ID><Filter><Prefix>p/</Prefix><Tag><Key>k</Key><Value>v</Value></Tag></Filter><Status>Enabled</Status><Expiration><Days>1</Days></Expiration></Rule>",
        ),
        xml(
            "<Rule><ID>a</ID><Filter><Prefix>p/</Prefix></Filter><Status>On</Status><Expiration><Days>1</Days></Expiration></Rule>",
        ),
        xml(
            "<Rule><ID>a</ID><Filter><Prefix>p/</Prefix></Filter><Status>Enabled</Status><Expiration><Days>1</Days><Date>2030-01-01T00:00:00Z</Date></Expiration></Rule>",
        ),
        xml(""),
    ];
    for body in raw_bad {
        assert_eq!(put_raw(&c, "media", body.clone()).await, (400, "MalformedXML".to_string()), "{body}");
    }
    assert_eq!(get_rules(&c, "media").await, rules, "refused configurations changed nothing");

    // The older form (a rule's own Prefix) is accepted and answered as given;
    // a rule without an ID gets one.
    let legacy =
        xml("<Rule><Prefix>logs/</Prefix><Status>Enabled</Status><Expiration><Days>5</Days></Expiration></Rule>");
    assert_eq!(put_raw(&c, "media", legacy).await, (200, String::new()));
    let got = get_rules(&c, "media").await;
    assert_eq!(got.len(), 1);
    #[allow(deprecated)]
    let legacy_prefix = got[0].prefix();
    assert_eq!(
        (legacy_prefix, got[0].filter(), got[0].expiration().and_then(|e| e.days())),
        (Some("logs/"), None, Some(5))
    );
    let id = got[0].id().unwrap_or_default();
    assert!(!id.is_empty() && id.len() <= 255, "generated ID {id:?}");

    // Writing needs the write permission; reading it, read.
    let ro: serde_json::Value =
        serde_json::from_str(&cluster.admin_ok(&["key", "create", "--read-only", "--json"])).unwrap();
    let ro = cluster.client_with(ro["access_key_id"].as_str().unwrap(), ro["secret_access_key"].as_str().unwrap());
    assert_eq!(put_config(&ro, "media", rules.clone()).await, Err((403, "AccessDenied".into())));
    let err = ro.delete_bucket_lifecycle().bucket("media").send().await.unwrap_err();
    assert_eq!(code(&err), "AccessDenied");
    assert_eq!(get_rules(&ro, "media").await, got);

    // Another gateway learns it through the catalog.
    let gw2 = cluster.start_gateway("gw2", &["--lifecycle-interval-s=0"]);
    let other = gw2.client();
    wait_until(Duration::from_secs(15), "the second gateway to answer the configuration", async || {
        other.get_bucket_lifecycle_configuration().bucket("media").send().await.is_ok_and(|o| o.rules() == got)
    })
    .await;

    // Deleted: 204, then gone; deleting again is still 204.
    c.delete_bucket_lifecycle().bucket("media").send().await.unwrap();
    let err = c.get_bucket_lifecycle_configuration().bucket("media").send().await.unwrap_err();
    assert_eq!(code(&err), "NoSuchLifecycleConfiguration");
    c.delete_bucket_lifecycle().bucket("media").send().await.unwrap();
    let err = c.delete_bucket_lifecycle().bucket("nobucket").send().await.unwrap_err();
    assert_eq!(code(&err), "NoSuchBucket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_expire_by_age_and_date_and_uploads_are_aborted() {
    // A 2 s day, a round every second.
    let cluster = DevCluster::start_with(&["--lifecycle-day-s=2", "--lifecycle-interval-s=1"]);
    let c = cluster.client();
    let ep = cluster.endpoint();
    for b in ["media", "archive", "paused"] {
        c.create_bucket().bucket(b).send().await.unwrap();
    }

    // media: age rules (1 day = 2 s) by prefix, and by prefix and tag.
    for key in ["tmp/a", "tmp/b/c", "keep/a", "tmpx"] {
        put_tagged(&c, "media", key, None).await;
    }
    // Erasure-coded (above the inline threshold), so the delete leaves shards to the collector.
    put(&c, "media", "tmp/big", pattern(300 << 10, 7)).await;
    put_tagged(&c, "media", "chat/p1", Some("kind=preview&app=talk")).await;
    put_tagged(&c, "media", "chat/p2", Some("kind=original")).await;
    put_tagged(&c, "media", "chat/p3", None).await;
    put_tagged(&c, "media", "other/p4", Some("kind=preview")).await;
    // Incomplete uploads: one under the abort rule's prefix, one not.
    let up = c.create_multipart_upload().bucket("media").key("up/video").send().await.unwrap();
    let up_id = up.upload_id().unwrap().to_string();
    c.upload_part()
        .bucket("media")
        .key("up/video")
        .upload_id(&up_id)
        .part_number(1)
        .body(ByteStream::from(pattern(100 << 10, 3)))
        .send()
        .await
        .unwrap();
    let kept_up = c.create_multipart_upload().bucket("media").key("stay/video").send().await.unwrap();

    let preview = LifecycleRuleAndOperator::builder().prefix("chat/").tags(tag("kind", "preview")).build();
    put_config(
        &c,
        "media",
        vec![
            rule("tmp", prefix_filter("tmp/"), days(1)),
            rule("previews", LifecycleRuleFilter::builder().and(preview).build(), days(1)),
            abort_rule("uploads", "up/", 1),
        ],
    )
    .await
    .unwrap();
    // archive: a date in the past expires at once; paused: the same rule, disabled.
    for key in ["old/x", "old/y", "new/z"] {
        put_tagged(&c, "archive", key, None).await;
        put_tagged(&c, "paused", key, None).await;
    }
    let past = rule("past", prefix_filter("old/"), date(PAST_MIDNIGHT));
    put_config(&c, "archive", vec![past]).await.unwrap();
    let disabled = LifecycleRule::builder()
        .id("past")
        .filter(prefix_filter("old/"))
        .expiration(date(PAST_MIDNIGHT))
        .status(ExpirationStatus::Disabled)
        .build()
        .unwrap();
    put_config(&c, "paused", vec![disabled]).await.unwrap();

    let want_media = ["chat/p2", "chat/p3", "keep/a", "other/p4", "tmpx"];
    wait_until(Duration::from_secs(60), "the expired objects of media to be gone", async || {
        let keys = sorted_keys(&c, "media").await;
        if keys == want_media { Ok(()) } else { Err(format!("{keys:?}")) }
    })
    .await;
    wait_until(Duration::from_secs(60), "old/ of archive to be gone", async || {
        let keys = sorted_keys(&c, "archive").await;
        if keys == ["new/z"] { Ok(()) } else { Err(format!("{keys:?}")) }
    })
    .await;
    wait_until(Duration::from_secs(60), "the upload under up/ to be aborted", async || {
        let uploads = c.list_multipart_uploads().bucket("media").send().await.unwrap();
        let keys: Vec<_> = uploads.uploads().iter().map(|u| u.key().unwrap_or_default().to_string()).collect();
        if keys == ["stay/video"] { Ok(()) } else { Err(format!("{keys:?}")) }
    })
    .await;
    let err = c
        .upload_part()
        .bucket("media")
        .key("up/video")
        .upload_id(&up_id)
        .part_number(2)
        .body(ByteStream::from(vec![1u8; 10]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "NoSuchUpload");
    let err = c.get_object().bucket("media").key("tmp/big").send().await.unwrap_err();
    assert_eq!(code(&err), "NoSuchKey");
    assert_same(&get(&c, "media", "keep/a", None).await, &pattern(100, 6), "keep/a");

    // The metrics count exactly what was done (this gateway is the only expirer).
    wait_until(Duration::from_secs(30), "the metrics to count 6 expired objects and 1 abort", async || {
        let (expired, aborted) = (
            metric(&ep, "sillok_lifecycle_objects_expired_total").await,
            metric(&ep, "sillok_lifecycle_uploads_aborted_total").await,
        );
        if (expired, aborted) == (6.0, 1.0) { Ok(()) } else { Err(format!("expired {expired}, aborted {aborted}")) }
    })
    .await;

    // A date in the past also expires objects written after it was set; the
    // disabled rule expired nothing meanwhile (two more full rounds ran).
    put_tagged(&c, "archive", "old/late", None).await;
    let runs = metric(&ep, "sillok_lifecycle_runs_total{outcome=\"ok\"}").await;
    wait_until(Duration::from_secs(60), "old/late to expire", async || {
        let keys = sorted_keys(&c, "archive").await;
        if keys == ["new/z"] { Ok(()) } else { Err(format!("{keys:?}")) }
    })
    .await;
    wait_until(Duration::from_secs(30), "two more expirer rounds", async || {
        metric(&ep, "sillok_lifecycle_runs_total{outcome=\"ok\"}").await >= runs + 2.0
    })
    .await;
    assert_eq!(sorted_keys(&c, "paused").await, ["new/z", "old/x", "old/y"]);
    assert_eq!(sorted_keys(&c, "media").await, want_media);
    let uploads = c.list_multipart_uploads().bucket("media").send().await.unwrap();
    assert_eq!(
        uploads.uploads().iter().filter_map(|u| u.upload_id()).collect::<Vec<_>>(),
        [kept_up.upload_id().unwrap()]
    );
    assert_eq!(metric(&ep, "sillok_lifecycle_errors_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_finished_by_a_gateway_restarted_after_kill_9() {
    // The dev gateway does not expire; a second gateway does, and is killed.
    let cluster = DevCluster::start_with(&["--lifecycle-interval-s=0"]);
    let c = cluster.client();
    c.create_bucket().bucket("logs").send().await.unwrap();
    for i in 0..40 {
        put_tagged(&c, "logs", &format!("old/{i:02}"), None).await;
    }
    put_tagged(&c, "logs", "keep/a", None).await;
    put_config(&c, "logs", vec![rule("past", prefix_filter("old/"), date(PAST_MIDNIGHT))]).await.unwrap();
    // Nothing expires without an expirer.
    assert_eq!(list_keys(&c, "logs").await.len(), 41);

    let args = ["--lifecycle-interval-s=1", "--lifecycle-day-s=2"];
    let mut expirer = cluster.start_gateway("expirer", &args);
    let left = wait_until(Duration::from_secs(60), "the second gateway to start expiring", async || {
        let n = list_keys(&c, "logs").await.len();
        (n < 41).then_some(n)
    })
    .await;
    expirer.kill();
    // Whatever the killed gateway had not done, and objects written after it
    // died, are found by the restarted one (its state: the catalog copy it saved).
    for i in 0..3 {
        put_tagged(&c, "logs", &format!("old/late-{i}"), None).await;
    }
    let restarted = cluster.start_gateway("expirer", &args);
    wait_until(Duration::from_secs(60), "the restarted gateway to expire every old/ object", async || {
        let keys = sorted_keys(&c, "logs").await;
        if keys == ["keep/a"] { Ok(()) } else { Err(format!("{} left: {keys:?}", keys.len())) }
    })
    .await;
    let expired = wait_until(Duration::from_secs(30), "the restarted gateway's metrics", async || {
        let n = metric(&restarted.endpoint, "sillok_lifecycle_objects_expired_total").await;
        (n >= 3.0).then_some(n)
    })
    .await;
    // It expired the late objects and at most what was left at the kill.
    assert!(expired <= (left - 1 + 3) as f64, "expired {expired}, {left} keys were left before the kill");
    assert!(restarted.log().contains("lifecycle: deleted an expired object"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_versioned_bucket_expiry_makes_a_delete_marker_and_keeps_the_version() {
    use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
    let cluster = DevCluster::start_with(&["--lifecycle-day-s=2", "--lifecycle-interval-s=1"]);
    let c = cluster.client();
    c.create_bucket().bucket("kept").send().await.unwrap();
    c.put_bucket_versioning()
        .bucket("kept")
        .versioning_configuration(VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build())
        .send()
        .await
        .unwrap();
    let body = pattern(90_000, 11);
    let v = c.put_object().bucket("kept").key("old/a").body(ByteStream::from(body.clone())).send().await.unwrap();
    let id = v.version_id().unwrap().to_string();
    put_config(&c, "kept", vec![rule("old", prefix_filter("old/"), days(1))]).await.unwrap();
    wait_until(Duration::from_secs(60), "old/a to expire", async || {
        c.get_object().bucket("kept").key("old/a").send().await.is_err()
    })
    .await;
    // Expired as S3 expires in a versioned bucket: a delete marker is the
    // current version and the object's version is still there.
    let listed = c.list_object_versions().bucket("kept").send().await.unwrap();
    let markers: Vec<_> = listed.delete_markers().iter().map(|m| (m.key().unwrap(), m.is_latest().unwrap())).collect();
    assert_eq!(markers, [("old/a", true)]);
    let versions: Vec<_> =
        listed.versions().iter().map(|v| (v.version_id().unwrap(), v.is_latest().unwrap())).collect();
    assert_eq!(versions, [(id.as_str(), false)]);
    let got = c.get_object().bucket("kept").key("old/a").version_id(&id).send().await.unwrap();
    assert_same(&got.body.collect().await.unwrap().into_bytes(), &body, "the expired version by its id");
}
