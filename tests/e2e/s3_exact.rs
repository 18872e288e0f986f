//! Where S3's API reference pins an exact answer (issue 16, point 5):
//! repeated and concurrent CompleteMultipartUpload.

use std::time::Duration;

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use crate::support::*;

fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(data).iter().map(|b| format!("{b:02x}")).collect()
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
