//! S3 bucket versioning through aws-sdk-s3 against a real `sillok dev`:
//! Put/GetBucketVersioning, version ids on PUT, copy and multipart
//! completion, GET/HEAD/DELETE by version id, delete markers,
//! ListObjectVersions with its paging, the null version of unversioned and
//! suspended buckets, shards freed by deleting a version (and kept while a
//! version refers to them), and old versions read with a whole site killed.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::{
    BucketVersioningStatus, CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier, VersioningConfiguration,
};

use crate::support::*;

/// Short grace periods, so the collector acts within the test's patience.
const FAST_UPKEEP: &[&str] = &[
    "--node-arg=--collect-grace-ms=1500",
    "--node-arg=--collect-every-ms=300",
    "--node-arg=--sync-every-ms=300",
    "--node-arg=--tombstone-horizon-ms=2000",
];

fn body(tag: &str, len: usize) -> Vec<u8> {
    let head = format!("{tag}#");
    head.bytes().chain(std::iter::repeat(b'.')).take(len).collect()
}

async fn put(c: &aws_sdk_s3::Client, bucket: &str, key: &str, data: &[u8]) -> Option<String> {
    let out = c
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(data.to_vec().into())
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT {key}: {e:?}"));
    out.version_id().map(str::to_string)
}

async fn get(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    version: Option<&str>,
) -> Result<(Vec<u8>, Option<String>), (u16, String, Option<String>)> {
    match c.get_object().bucket(bucket).key(key).set_version_id(version.map(str::to_string)).send().await {
        Ok(r) => {
            let v = r.version_id().map(str::to_string);
            Ok((r.body.collect().await.unwrap().into_bytes().to_vec(), v))
        }
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0);
            let marker = e.raw_response().and_then(|r| r.headers().get("x-amz-delete-marker").map(str::to_string));
            Err((status, e.code().unwrap_or("").to_string(), marker))
        }
    }
}

async fn set_versioning(c: &aws_sdk_s3::Client, bucket: &str, status: BucketVersioningStatus) {
    c.put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(VersioningConfiguration::builder().status(status).build())
        .send()
        .await
        .unwrap();
}

/// `(key, version id, is latest, is a delete marker, size)` of every version,
/// in the order ListObjectVersions gives them, `page` at a time.
async fn versions(c: &aws_sdk_s3::Client, bucket: &str, page: i32) -> Vec<(String, String, bool, bool, i64)> {
    let mut out = Vec::new();
    let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
    for _ in 0..1000 {
        let r = c
            .list_object_versions()
            .bucket(bucket)
            .max_keys(page)
            .set_key_marker(key_marker.clone())
            .set_version_id_marker(id_marker.clone())
            .send()
            .await
            .unwrap();
        // Versions and delete markers come in two lists; S3's order is by
        // key, then newest first, which version ids (sorting newest first)
        // and last-modified restore.
        let mut page_items: Vec<(String, String, bool, bool, i64, i64)> = Vec::new();
        for v in r.versions() {
            let lm = v.last_modified().unwrap().to_millis().unwrap();
            page_items.push((
                v.key().unwrap().into(),
                v.version_id().unwrap().into(),
                v.is_latest().unwrap(),
                false,
                v.size().unwrap(),
                lm,
            ));
        }
        for m in r.delete_markers() {
            let lm = m.last_modified().unwrap().to_millis().unwrap();
            page_items.push((
                m.key().unwrap().into(),
                m.version_id().unwrap().into(),
                m.is_latest().unwrap(),
                true,
                0,
                lm,
            ));
        }
        assert!(page_items.len() <= page as usize, "a page of {page} held {}", page_items.len());
        page_items.sort_by(|a, b| a.0.cmp(&b.0).then(b.5.cmp(&a.5)).then(a.1.cmp(&b.1)));
        out.extend(page_items.into_iter().map(|(k, v, l, d, s, _)| (k, v, l, d, s)));
        if !r.is_truncated().unwrap_or(false) {
            return out;
        }
        key_marker = r.next_key_marker().map(str::to_string);
        id_marker = r.next_version_id_marker().map(str::to_string);
        assert!(key_marker.is_some(), "a truncated page names where the next starts");
    }
    panic!("ListObjectVersions never ended");
}

/// What ListObjectVersions with delimiter `/` gives, `page` at a time: each
/// common prefix as `prefix/`, each version as `key@version id`.
async fn rolled_up(c: &aws_sdk_s3::Client, bucket: &str, page: i32) -> Vec<String> {
    let mut out = Vec::new();
    let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
    for _ in 0..1000 {
        let r = c
            .list_object_versions()
            .bucket(bucket)
            .delimiter("/")
            .max_keys(page)
            .set_key_marker(key_marker.clone())
            .set_version_id_marker(id_marker.clone())
            .send()
            .await
            .unwrap();
        let mut items: Vec<String> = r.common_prefixes().iter().map(|p| p.prefix().unwrap().to_string()).collect();
        items.extend(r.versions().iter().map(|v| format!("{}@{}", v.key().unwrap(), v.version_id().unwrap())));
        items.extend(r.delete_markers().iter().map(|m| format!("{}@{}", m.key().unwrap(), m.version_id().unwrap())));
        assert!(items.len() <= page as usize);
        items.sort();
        out.extend(items);
        if !r.is_truncated().unwrap_or(false) {
            return out;
        }
        key_marker = r.next_key_marker().map(str::to_string);
        id_marker = r.next_version_id_marker().map(str::to_string);
    }
    panic!("ListObjectVersions never ended");
}

fn object_ids(c: &DevCluster) -> BTreeSet<String> {
    c.shard_files()
        .iter()
        .map(|(_, p)| p.file_name().unwrap().to_str().unwrap().split_once('.').unwrap().0.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versioning_keeps_every_version_until_one_is_deleted_by_id() {
    let cluster = DevCluster::start_with(FAST_UPKEEP);
    let c = cluster.client();
    c.create_bucket().bucket("vers").send().await.unwrap();
    let status = c.get_bucket_versioning().bucket("vers").send().await.unwrap();
    assert_eq!(status.status(), None, "a bucket starts unversioned");

    // Written before versioning: the null version, with no version id header.
    let v0 = body("v0", 100_000);
    assert_eq!(put(&c, "vers", "a", &v0).await, None, "no version id in an unversioned bucket");
    let before_v2 = object_ids(&cluster);

    set_versioning(&c, "vers", BucketVersioningStatus::Enabled).await;
    let status = c.get_bucket_versioning().bucket("vers").send().await.unwrap();
    assert_eq!(status.status(), Some(&BucketVersioningStatus::Enabled));

    let v1 = body("v1", 3_000);
    let id1 = put(&c, "vers", "a", &v1).await.expect("a version id");
    let v2 = body("v2", 150_000);
    let id2 = put(&c, "vers", "a", &v2).await.expect("a version id");
    let v2_objects: BTreeSet<String> = object_ids(&cluster).difference(&before_v2).cloned().collect();
    assert_eq!(v2_objects.len(), 1, "v2 wrote one object's shards");
    assert_ne!(id1, id2);
    assert!(id1 != "null" && id2 != "null");

    // The current version, and each version by id (the one from before
    // versioning as `null`).
    assert_eq!(get(&c, "vers", "a", None).await.unwrap(), (v2.clone(), Some(id2.clone())));
    assert_eq!(get(&c, "vers", "a", Some(&id1)).await.unwrap(), (v1.clone(), Some(id1.clone())));
    assert_eq!(get(&c, "vers", "a", Some("null")).await.unwrap().0, v0, "the pre-versioning object is kept as null");
    let head = c.head_object().bucket("vers").key("a").version_id(&id1).send().await.unwrap();
    assert_eq!((head.content_length(), head.version_id()), (Some(3_000), Some(id1.as_str())));

    // Bad and unknown version ids.
    assert_eq!(get(&c, "vers", "a", Some("not-a-version")).await.unwrap_err().1, "InvalidArgument");
    let unknown = "0".repeat(32);
    let e = get(&c, "vers", "a", Some(&unknown)).await.unwrap_err();
    assert_eq!((e.0, e.1.as_str()), (404, "NoSuchVersion"));

    let all = versions(&c, "vers", 1000).await;
    assert_eq!(
        all,
        vec![
            ("a".into(), id2.clone(), true, false, 150_000),
            ("a".into(), id1.clone(), false, false, 3_000),
            ("a".into(), "null".into(), false, false, 100_000),
        ]
    );

    // A DELETE without a version id makes a delete marker.
    let d = c.delete_object().bucket("vers").key("a").send().await.unwrap();
    assert_eq!(d.delete_marker(), Some(true));
    let marker = d.version_id().expect("the marker's version id").to_string();
    let e = get(&c, "vers", "a", None).await.unwrap_err();
    assert_eq!((e.0, e.1.as_str(), e.2.as_deref()), (404, "NoSuchKey", Some("true")));
    let e = get(&c, "vers", "a", Some(&marker)).await.unwrap_err();
    assert_eq!((e.0, e.1.as_str(), e.2.as_deref()), (405, "MethodNotAllowed", Some("true")));
    let listed = c.list_objects_v2().bucket("vers").send().await.unwrap();
    assert!(listed.contents().is_empty(), "a key whose current version is a delete marker is not listed");
    assert_eq!(get(&c, "vers", "a", Some(&id2)).await.unwrap().0, v2, "older versions stay readable");
    let all = versions(&c, "vers", 1000).await;
    assert_eq!(all.len(), 4);
    assert_eq!(all[0], ("a".into(), marker.clone(), true, true, 0));
    assert!(all[1..].iter().all(|v| !v.2), "only the marker is latest: {all:?}");

    // More keys, a multipart completion and a copy of an old version.
    for k in ["b", "c/1", "c/2"] {
        put(&c, "vers", k, &body(k, 10)).await.unwrap();
    }
    let up = c.create_multipart_upload().bucket("vers").key("mp").send().await.unwrap();
    let part = c
        .upload_part()
        .bucket("vers")
        .key("mp")
        .upload_id(up.upload_id().unwrap())
        .part_number(1)
        .body(body("mp", 1000).into())
        .send()
        .await
        .unwrap();
    let done = c
        .complete_multipart_upload()
        .bucket("vers")
        .key("mp")
        .upload_id(up.upload_id().unwrap())
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(CompletedPart::builder().part_number(1).e_tag(part.e_tag().unwrap()).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mp_id = done.version_id().expect("a completion in a versioned bucket names its version").to_string();
    assert_eq!(get(&c, "vers", "mp", Some(&mp_id)).await.unwrap().0, body("mp", 1000));
    let copy = c
        .copy_object()
        .bucket("vers")
        .key("copy-of-v1")
        .copy_source(format!("vers/a?versionId={id1}"))
        .send()
        .await
        .unwrap();
    assert_eq!(copy.copy_source_version_id(), Some(id1.as_str()));
    assert!(copy.version_id().is_some());
    assert_eq!(get(&c, "vers", "copy-of-v1", None).await.unwrap().0, v1);

    // Paging one at a time gives what one page gives.
    let whole = versions(&c, "vers", 1000).await;
    assert_eq!(whole.len(), 9, "{whole:?}");
    assert_eq!(versions(&c, "vers", 1).await, whole);
    assert_eq!(versions(&c, "vers", 2).await, whole);
    // A delimiter rolls keys up into common prefixes.
    let r = c.list_object_versions().bucket("vers").delimiter("/").send().await.unwrap();
    let prefixes: Vec<&str> = r.common_prefixes().iter().filter_map(|p| p.prefix()).collect();
    assert_eq!(prefixes, ["c/"]);
    assert!(r.versions().iter().all(|v| !v.key().unwrap().starts_with("c/")));
    let rolled = rolled_up(&c, "vers", 1000).await;
    assert_eq!(rolled.iter().filter(|i| i.as_str() == "c/").count(), 1, "{rolled:?}");
    assert_eq!(rolled_up(&c, "vers", 1).await, rolled, "paged one at a time across a common prefix");

    // Deleting versions by id: the marker (the object is back), then the
    // current version (the one before it becomes current).
    let d = c.delete_object().bucket("vers").key("a").version_id(&marker).send().await.unwrap();
    assert_eq!((d.delete_marker(), d.version_id()), (Some(true), Some(marker.as_str())));
    assert_eq!(get(&c, "vers", "a", None).await.unwrap(), (v2.clone(), Some(id2.clone())));
    c.delete_object().bucket("vers").key("a").version_id(&id2).send().await.unwrap();
    assert_eq!(get(&c, "vers", "a", None).await.unwrap(), (v1.clone(), Some(id1.clone())));
    let e = get(&c, "vers", "a", Some(&id2)).await.unwrap_err();
    assert_eq!(e.1, "NoSuchVersion");

    // Deleting a version frees its shards; the null version's shards, which
    // only its record refers to, stay.
    let v0_objects: BTreeSet<String> = before_v2.clone();
    wait_until(Duration::from_secs(60), "the deleted version's shards to be collected", async || {
        object_ids(&cluster).is_disjoint(&v2_objects)
    })
    .await;
    assert!(object_ids(&cluster).is_superset(&v0_objects), "the null version's shards were collected");
    assert_eq!(get(&c, "vers", "a", Some("null")).await.unwrap().0, v0);

    // DeleteObjects with version ids.
    let gone = c
        .delete_objects()
        .bucket("vers")
        .delete(
            Delete::builder()
                .objects(ObjectIdentifier::builder().key("a").version_id(&id1).build().unwrap())
                .objects(ObjectIdentifier::builder().key("b").build().unwrap())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert!(gone.errors().is_empty(), "{:?}", gone.errors());
    let b = gone.deleted().iter().find(|d| d.key() == Some("b")).unwrap();
    assert_eq!(b.delete_marker(), Some(true));
    assert!(b.delete_marker_version_id().is_some());
    assert_eq!(get(&c, "vers", "a", None).await.unwrap().0, v0, "with v1 gone the null version is current");

    // Suspended: new writes are the null version, which replaces the old one.
    set_versioning(&c, "vers", BucketVersioningStatus::Suspended).await;
    let s1 = body("s1", 500);
    assert_eq!(put(&c, "vers", "a", &s1).await.as_deref(), Some("null"));
    assert_eq!(get(&c, "vers", "a", Some("null")).await.unwrap().0, s1);
    let s2 = body("s2", 90_000);
    put(&c, "vers", "a", &s2).await;
    let of_a: Vec<_> = versions(&c, "vers", 1000).await.into_iter().filter(|v| v.0 == "a").collect();
    assert_eq!(of_a, vec![("a".into(), "null".into(), true, false, 90_000)], "one null version in a suspended bucket");

    // A bucket that holds versions is not empty.
    let e = c.delete_bucket().bucket("vers").send().await.unwrap_err();
    assert_eq!(e.code(), Some("BucketNotEmpty"));

    // With a whole site killed, every version is still read by its id.
    let site = cluster.sites()[0].clone();
    cluster.kill_site(&site);
    assert_eq!(get(&c, "vers", "mp", Some(&mp_id)).await.unwrap().0, body("mp", 1000), "with {site} down");
    assert_eq!(get(&c, "vers", "a", Some("null")).await.unwrap().0, s2, "with {site} down");
    assert_eq!(versions(&c, "vers", 3).await, versions(&c, "vers", 1000).await, "listing with {site} down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unversioned_bucket_lists_null_versions_and_refuses_to_become_unversioned_again() {
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("plain").send().await.unwrap();
    for k in ["x", "y"] {
        put(&c, "plain", k, &body(k, 100)).await;
    }
    c.delete_object().bucket("plain").key("y").send().await.unwrap();
    assert_eq!(versions(&c, "plain", 1000).await, vec![("x".into(), "null".into(), true, false, 100)]);
    for k in ["d/1", "d/2", "z"] {
        put(&c, "plain", k, &body(k, 10)).await;
    }
    assert_eq!(versions(&c, "plain", 1).await.len(), 4);
    let rolled = rolled_up(&c, "plain", 1000).await;
    assert_eq!(rolled, ["d/", "x@null", "z@null"]);
    assert_eq!(rolled_up(&c, "plain", 1).await, rolled, "paged one at a time across a common prefix");
    assert_eq!(get(&c, "plain", "x", Some("null")).await.unwrap(), (body("x", 100), None));
    // Enabled, then the bucket cannot go back: only Enabled or Suspended.
    set_versioning(&c, "plain", BucketVersioningStatus::Enabled).await;
    let bad = c
        .put_bucket_versioning()
        .bucket("plain")
        .versioning_configuration(
            VersioningConfiguration::builder().status(BucketVersioningStatus::from("Off")).build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Some("MalformedXML"));
    let missing = c
        .put_bucket_versioning()
        .bucket("no-such-bucket")
        .versioning_configuration(VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build())
        .send()
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Some("NoSuchBucket"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_belong_to_one_version_and_stay_with_it_once_it_is_no_longer_current() {
    use aws_sdk_s3::types::{Tag, Tagging};
    let tagging =
        |k: &str, v: &str| Tagging::builder().tag_set(Tag::builder().key(k).value(v).build().unwrap()).build().unwrap();
    let tags_of = async |c: &aws_sdk_s3::Client, version: Option<&str>| -> Vec<(String, String)> {
        let out = c
            .get_object_tagging()
            .bucket("tagver")
            .key("k")
            .set_version_id(version.map(str::to_string))
            .send()
            .await
            .unwrap();
        out.tag_set().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect()
    };
    let cluster = DevCluster::start();
    let c = cluster.client();
    c.create_bucket().bucket("tagver").send().await.unwrap();
    set_versioning(&c, "tagver", BucketVersioningStatus::Enabled).await;
    let id1 = put(&c, "tagver", "k", &body("one", 100)).await.unwrap();
    // The current version, tagged without a version id.
    let out = c.put_object_tagging().bucket("tagver").key("k").tagging(tagging("n", "1")).send().await.unwrap();
    assert_eq!(out.version_id(), Some(id1.as_str()));
    let id2 = put(&c, "tagver", "k", &body("two", 70_000)).await.unwrap();
    // Once overwritten, version 1 keeps its tags; version 2 has none.
    assert_eq!(tags_of(&c, Some(&id1)).await, [("n".to_string(), "1".to_string())]);
    assert!(tags_of(&c, None).await.is_empty());
    // An older version tagged by its id; the current one is untouched.
    c.put_object_tagging()
        .bucket("tagver")
        .key("k")
        .version_id(&id1)
        .tagging(tagging("old", "yes"))
        .send()
        .await
        .unwrap();
    assert_eq!(tags_of(&c, Some(&id1)).await, [("old".to_string(), "yes".to_string())]);
    assert!(tags_of(&c, Some(&id2)).await.is_empty());
    // The current version tagged by its id is what a GET without one sees.
    c.put_object_tagging()
        .bucket("tagver")
        .key("k")
        .version_id(&id2)
        .tagging(tagging("cur", "2"))
        .send()
        .await
        .unwrap();
    let got = c.get_object().bucket("tagver").key("k").send().await.unwrap();
    assert_eq!(got.tag_count(), Some(1));
    assert_eq!(tags_of(&c, None).await, [("cur".to_string(), "2".to_string())]);
    // ... and the body is still version 2's.
    assert_eq!(got.body.collect().await.unwrap().into_bytes().to_vec(), body("two", 70_000));
    let e = c.get_object_tagging().bucket("tagver").key("k").version_id("0".repeat(32)).send().await.unwrap_err();
    assert_eq!(e.code(), Some("NoSuchVersion"));
}

/// The sum of one counter over the Prometheus pages of the nodes outside `lost`.
async fn node_counter(c: &DevCluster, lost: &str, name: &str) -> u64 {
    let mut sum = 0;
    for (_, _, addr) in c.nodes().iter().filter(|n| n.1 != lost) {
        let page = http_text(&c.metrics_url_of(addr)).await;
        let line = page.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{page}"));
        sum += line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap();
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_version_is_rebuilt_after_a_site_loss_and_each_shard_is_written_once() {
    use sillok_placement::{NodeId, NodeState};
    use sillok_storage_node::{NodeClient, Timeouts};
    let c = DevCluster::start_with(&[
        // Three nodes a site: with one site out, four survivors could not
        // hold six shards on distinct nodes.
        "--nodes-per-site=3",
        "--pgs=64",
        "--gateway-arg=--block-size=65536",
        "--catalog-arg=--down-after-ms=2000",
        "--catalog-arg=--site-out-after-ms=10000",
        "--node-arg=--rebuild-every-ms=1000",
        "--node-arg=--sync-every-ms=1000",
    ]);
    let s3 = c.client();
    s3.create_bucket().bucket("rebuilt").send().await.unwrap();
    // Two keys' first versions from before versioning (their null versions).
    let mut want: Vec<(String, String, Vec<u8>)> = Vec::new();
    for k in 0..2 {
        let data = body(&format!("k{k}-null"), 80_000);
        put(&s3, "rebuilt", &format!("k{k}"), &data).await;
        want.push((format!("k{k}"), "null".into(), data));
    }
    set_versioning(&s3, "rebuilt", BucketVersioningStatus::Enabled).await;
    for k in 0..8 {
        for v in 0..3 {
            let data = body(&format!("k{k}-v{v}"), 70_000 + k * 9_000 + v * 1_000);
            let id = put(&s3, "rebuilt", &format!("k{k}"), &data).await.unwrap();
            want.push((format!("k{k}"), id, data));
        }
    }
    // A delete marker over one key, one version of another deleted for good.
    s3.delete_object().bucket("rebuilt").key("k3").send().await.unwrap();
    let (k, gone, _) = want.remove(4);
    s3.delete_object().bucket("rebuilt").key(&k).version_id(&gone).send().await.unwrap();
    let objects = want.len() as u64;

    let lost = "site-c";
    let lost_nodes: Vec<u64> = c.nodes().into_iter().filter(|(_, s, _)| s == lost).map(|n| n.0).collect();
    c.kill_site(lost);
    let survivor = c.nodes().into_iter().find(|(_, s, _)| s == "site-a").unwrap();
    let client = NodeClient::with_tls(
        c.cluster_file()["cluster_secret"].as_str().unwrap(),
        Timeouts::default(),
        Some(&c.internal_tls("gateway")),
    );
    wait_until(Duration::from_secs(240), "every version at k+m shards on the surviving sites", async || {
        let map = crate::rebuild::map_of(&c, &survivor).await.ok_or("no map yet".to_string())?;
        if !lost_nodes.iter().all(|id| map.topology.node(NodeId(*id as u32)).is_some_and(|n| n.state == NodeState::Out))
        {
            let status = String::from_utf8_lossy(&c.admin(&["status"]).stdout).into_owned();
            return Err(format!("{lost} not out yet (map epoch {}); status:\n{status}", map.epoch));
        }
        crate::rebuild::full_redundancy(&client, &map).await
    })
    .await;
    // 4+2 over three sites: each version lost two shards. A current version's
    // shards are named by its record and by its key's current manifest, and
    // are written once, not once per manifest.
    let written = node_counter(&c, lost, "sillok_rebuild_shards_written_total").await;
    assert_eq!(written, 2 * objects, "shards rebuilt for {objects} versions");
    for (key, id, data) in &want {
        let got = get(&s3, "rebuilt", key, Some(id)).await.unwrap_or_else(|e| panic!("{key}@{id}: {e:?}"));
        assert!(got.0 == *data, "{key}@{id} read back different bytes");
    }
}
