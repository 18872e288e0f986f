//! A real node on 127.0.0.1:0 with a temporary data directory, driven by the
//! real client (and, for the auth tests, by plain hyper).

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sillok_model::codec::CODEC_ID;
use sillok_model::frame::{Frame, FrameDigest};
use sillok_model::manifest::{Body, Manifest, Version};
use sillok_placement::NodeId;
use sillok_rpc::auth::{H_BODY_SEAL, H_NONCE, Payload, Signer};
use sillok_storage_node::api::{ListManifests, ShardId};
use sillok_storage_node::client::ShardHeader;
use sillok_storage_node::shard_store::HEADER_LEN;
use sillok_storage_node::{NodeClient, NodeConfig, NodeError, RunningNode, Timeouts};

const SECRET: &str = "test-cluster-secret";

struct TestNode {
    node: Option<RunningNode>,
    dir: tempfile::TempDir,
    addr: String,
}

impl TestNode {
    async fn start() -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let node = start_in(dir.path()).await;
        let addr = node.addr().to_string();
        TestNode { node: Some(node), dir, addr }
    }

    async fn restart(&mut self) {
        self.node.take().unwrap().stop().await.unwrap();
        let node = start_in(self.dir.path()).await;
        self.addr = node.addr().to_string();
        self.node = Some(node);
    }

    fn shard_file(&self, id: &ShardId) -> std::path::PathBuf {
        self.dir.path().join("shards").join(&id.object_id[..2]).join(id.file_name())
    }

    fn tmp_entries(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("tmp")).unwrap().count()
    }

    /// Waits (bounded) until the node has cleaned up its temporary files.
    async fn wait_tmp_empty(&self) -> bool {
        for _ in 0..200 {
            if self.tmp_entries() == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }
}

async fn start_in(dir: &std::path::Path) -> RunningNode {
    sillok_storage_node::spawn(NodeConfig {
        id: NodeId(7),
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        cluster_secret: SECRET.into(),
        also_accepted_secrets: Vec::new(),
        map: None,
        upkeep: Default::default(),
        meta_cache_bytes: sillok_storage_node::meta_store::DEFAULT_CACHE_BYTES,
    })
    .await
    .unwrap()
}

fn client() -> NodeClient {
    NodeClient::new(SECRET, Timeouts::default())
}

fn sid(n: u8, index: u8) -> ShardId {
    ShardId { object_id: format!("{n:02x}{}", "0".repeat(30)), index }
}

fn blocks(block_size: usize, last: usize, n: usize, seed: u8) -> Vec<Frame> {
    (0..n)
        .map(|i| {
            let len = if i + 1 == n { last } else { block_size };
            Frame::new(Bytes::from(
                (0..len).map(|j| (j as u8).wrapping_mul(31).wrapping_add(i as u8 ^ seed)).collect::<Vec<_>>(),
            ))
        })
        .collect()
}

fn header(block_size: u32, blocks: u32) -> ShardHeader {
    ShardHeader { codec: CODEC_ID.into(), k: 4, m: 2, block_size, blocks }
}

fn ok_stream(frames: Vec<Frame>) -> impl futures::Stream<Item = Result<Frame, std::io::Error>> + Send + 'static {
    futures::stream::iter(frames.into_iter().map(Ok))
}

async fn collect(s: sillok_storage_node::client::BlockStream) -> (Vec<Frame>, Option<NodeError>) {
    let mut got = Vec::new();
    let mut s = s;
    while let Some(item) = s.next().await {
        match item {
            Ok(f) => got.push(f),
            Err(e) => return (got, Some(e)),
        }
    }
    (got, None)
}

fn manifest(bucket: &str, key: &str, nanos: u64) -> Manifest {
    Manifest {
        bucket: bucket.into(),
        key: key.into(),
        version: Version { nanos, tiebreak: 1 },
        last_modified_ms: 1_700_000_000_000,
        size: 3,
        etag: format!("e{nanos}"),
        content_type: Some("text/plain".into()),
        headers: Default::default(),
        user_metadata: [("color".to_string(), "blue".to_string())].into_iter().collect(),
        tags: Default::default(),
        body: Body::Inline { data: b"abc".to_vec().into() },
        locations: 0,
        version_id: None,
    }
}

#[tokio::test]
async fn health_and_restart_keep_data() {
    let mut n = TestNode::start().await;
    let c = client();
    c.health(&n.addr).await.unwrap();
    let id = sid(1, 0);
    let fs = blocks(64, 10, 3, 1);
    c.put_shard(&n.addr, &id, &header(64, 3), ok_stream(fs.clone())).await.unwrap();
    c.put_manifest(&n.addr, &manifest("b", "k", 5)).await.unwrap();
    n.restart().await;
    c.health(&n.addr).await.unwrap();
    let (got, err) = collect(c.get_shard(&n.addr, &id, 0..u32::MAX).await.unwrap()).await;
    assert!(err.is_none());
    assert_eq!(got, fs);
    assert_eq!(c.get_manifest(&n.addr, "b", "k").await.unwrap().unwrap(), manifest("b", "k", 5));
}

#[tokio::test]
async fn shard_put_get_stat_list_delete() {
    let n = TestNode::start().await;
    let c = client();
    let id = sid(0xab, 2);
    let fs = blocks(1000, 300, 5, 9);
    let info = c.put_shard(&n.addr, &id, &header(1000, 5), ok_stream(fs.clone())).await.unwrap();
    assert_eq!((info.blocks, info.block_size, info.data_len), (5, 1000, 4300));
    assert_eq!(n.tmp_entries(), 0);
    assert_eq!(std::fs::metadata(n.shard_file(&id)).unwrap().len(), (HEADER_LEN + 5 * 36 + 4300) as u64);

    assert_eq!(c.stat_shard(&n.addr, &id).await.unwrap(), Some(info.clone()));

    let (got, err) = collect(c.get_shard(&n.addr, &id, 0..5).await.unwrap()).await;
    assert!(err.is_none());
    assert_eq!(got, fs);
    let (got, _) = collect(c.get_shard(&n.addr, &id, 1..3).await.unwrap()).await;
    assert_eq!(got, fs[1..3]);
    // End clamped; the last block is the short one.
    let (got, err) = collect(c.get_shard(&n.addr, &id, 3..1000).await.unwrap()).await;
    assert!(err.is_none());
    assert_eq!(got, fs[3..]);
    assert_eq!(got[1].data.len(), 300);
    let (got, err) = collect(c.get_shard(&n.addr, &id, 5..5).await.unwrap()).await;
    assert!(got.is_empty() && err.is_none());
    assert!(matches!(c.get_shard(&n.addr, &id, 6..9).await, Err(NodeError::BadRequest(_))));
    // One block at a time (read without the blocking pool), up to and past the end.
    for i in 0..5 {
        let (got, err) = collect(c.get_shard(&n.addr, &id, i..i + 1).await.unwrap()).await;
        assert!(err.is_none());
        assert_eq!(got, fs[i as usize..i as usize + 1]);
    }
    let (got, err) = collect(c.get_shard(&n.addr, &id, 5..6).await.unwrap()).await;
    assert!(got.is_empty() && err.is_none());
    assert!(matches!(c.get_shard(&n.addr, &id, 6..7).await, Err(NodeError::BadRequest(_))));
    for range in [u32::MAX - 1..u32::MAX, u32::MAX..u32::MAX] {
        assert!(matches!(c.get_shard(&n.addr, &id, range).await, Err(NodeError::BadRequest(_))));
    }

    // Listing.
    let other = sid(0x01, 0);
    c.put_shard(&n.addr, &other, &header(16, 1), ok_stream(blocks(16, 16, 1, 0))).await.unwrap();
    let list = c.list_shards(&n.addr, None, 100).await.unwrap();
    assert_eq!(list.shards.iter().map(|s| s.id.clone()).collect::<Vec<_>>(), vec![other.clone(), id.clone()]);
    assert!(!list.truncated);
    let page = c.list_shards(&n.addr, None, 1).await.unwrap();
    assert_eq!(page.shards.len(), 1);
    assert!(page.truncated);
    let page = c.list_shards(&n.addr, Some(&other.file_name()), 1).await.unwrap();
    assert_eq!(page.shards[0], info);
    assert!(!page.truncated);

    // Delete is idempotent.
    c.delete_shard(&n.addr, &id).await.unwrap();
    c.delete_shard(&n.addr, &id).await.unwrap();
    assert_eq!(c.stat_shard(&n.addr, &id).await.unwrap(), None);
    assert!(matches!(c.get_shard(&n.addr, &id, 0..1).await, Err(NodeError::NotFound)));
    assert!(!n.shard_file(&id).exists());
}

#[tokio::test]
async fn overwrite_and_concurrent_writes_of_one_shard() {
    let n = TestNode::start().await;
    let c = client();
    let id = sid(3, 1);
    let mut tasks = Vec::new();
    for seed in 0..8u8 {
        let (c, addr, id) = (c.clone(), n.addr.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            c.put_shard(&addr, &id, &header(4096, 6), ok_stream(blocks(4096, 100, 6, seed))).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let (got, err) = collect(c.get_shard(&n.addr, &id, 0..6).await.unwrap()).await;
    assert!(err.is_none());
    assert!((0..8u8).any(|seed| got == blocks(4096, 100, 6, seed)), "the stored shard is one of the uploads");
    assert_eq!(n.tmp_entries(), 0);
}

#[tokio::test]
async fn a_flipped_byte_on_disk_is_reported_corrupt_not_served() {
    let n = TestNode::start().await;
    let c = client();
    let id = sid(4, 0);
    let bs = 512usize;
    let fs = blocks(bs, bs, 4, 3);
    c.put_shard(&n.addr, &id, &header(bs as u32, 4), ok_stream(fs.clone())).await.unwrap();
    let path = n.shard_file(&id);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[HEADER_LEN + 2 * (36 + bs) + 36 + 100] ^= 0x01; // block 2's data
    std::fs::write(&path, &bytes).unwrap();

    // The whole shard: blocks 0 and 1, then Corrupt for block 2.
    let (got, err) = collect(c.get_shard(&n.addr, &id, 0..4).await.unwrap()).await;
    assert_eq!(got, fs[..2]);
    match err {
        Some(NodeError::Corrupt(msg)) => assert!(msg.contains("block 2"), "{msg}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Just the bad block: refused before any data.
    assert!(matches!(c.get_shard(&n.addr, &id, 2..3).await, Err(NodeError::Corrupt(_))));
    // The good ones are still served.
    let (got, err) = collect(c.get_shard(&n.addr, &id, 3..4).await.unwrap()).await;
    assert!(err.is_none());
    assert_eq!(got, fs[3..]);

    // A damaged header: stat and get both say corrupt.
    bytes[20] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(c.stat_shard(&n.addr, &id).await, Err(NodeError::Corrupt(_))));
    assert!(matches!(c.get_shard(&n.addr, &id, 0..1).await, Err(NodeError::Corrupt(_))));
}

#[tokio::test]
async fn an_aborted_upload_stores_nothing() {
    let n = TestNode::start().await;
    let c = client();
    let id = sid(5, 0);
    let fs = blocks(64 << 10, 64 << 10, 8, 0);
    let items: Vec<Result<Frame, std::io::Error>> =
        fs[..3].iter().cloned().map(Ok).chain(std::iter::once(Err(std::io::Error::other("encoder failed")))).collect();
    // Slow the stream a little so the node has the first blocks in hand.
    let stream = futures::stream::iter(items).then(|item| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        item
    });
    let res = c.put_shard(&n.addr, &id, &header(64 << 10, 8), stream).await;
    assert!(matches!(res, Err(NodeError::Io(_))), "{res:?}");
    assert!(n.wait_tmp_empty().await, "temporary file left behind");
    assert_eq!(c.stat_shard(&n.addr, &id).await.unwrap(), None);
    assert!(!n.shard_file(&id).exists());

    // Every declared block sent, then an error: had the body ended cleanly the
    // count would match and the node would store it. It must not.
    let items: Vec<Result<Frame, std::io::Error>> =
        fs.iter().cloned().map(Ok).chain(std::iter::once(Err(std::io::Error::other("late failure")))).collect();
    let res = c.put_shard(&n.addr, &id, &header(64 << 10, 8), futures::stream::iter(items)).await;
    assert!(matches!(res, Err(NodeError::Io(_))), "{res:?}");
    assert!(n.wait_tmp_empty().await, "temporary file left behind");
    // Give a (wrong) commit every chance to land before checking.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(c.stat_shard(&n.addr, &id).await.unwrap(), None);

    // The same stream without the error is stored.
    c.put_shard(&n.addr, &id, &header(64 << 10, 8), ok_stream(fs.clone())).await.unwrap();
    assert!(c.stat_shard(&n.addr, &id).await.unwrap().is_some());
}

#[tokio::test]
async fn a_wrong_block_count_or_size_stores_nothing() {
    let n = TestNode::start().await;
    let c = client();
    let id = sid(6, 0);
    // Fewer than declared.
    let res = c.put_shard(&n.addr, &id, &header(100, 4), ok_stream(blocks(100, 100, 3, 0))).await;
    assert!(matches!(res, Err(NodeError::BadRequest(_))), "{res:?}");
    // More than declared (the node may answer before it has read the rest).
    let res = c.put_shard(&n.addr, &id, &header(100, 2), ok_stream(blocks(100, 100, 3, 0))).await;
    assert!(res.is_err());
    // A short block before the last.
    let mut odd = blocks(100, 40, 3, 0);
    odd.swap(1, 2);
    assert!(c.put_shard(&n.addr, &id, &header(100, 3), ok_stream(odd)).await.is_err());
    // A block larger than declared.
    assert!(c.put_shard(&n.addr, &id, &header(100, 1), ok_stream(blocks(101, 101, 1, 0))).await.is_err());
    // Bad declarations.
    let res = c.put_shard(&n.addr, &id, &header(0, 1), ok_stream(blocks(1, 1, 1, 0))).await;
    assert!(matches!(res, Err(NodeError::BadRequest(_))), "{res:?}");
    let res = c.put_shard(&n.addr, &sid(6, 9), &header(100, 1), ok_stream(blocks(100, 100, 1, 0))).await;
    assert!(matches!(res, Err(NodeError::BadRequest(_))), "index beyond k+m: {res:?}");
    // A corrupt block on the wire.
    let mut bad = blocks(100, 100, 2, 0);
    bad[1].hash[0] ^= 1;
    assert!(c.put_shard(&n.addr, &id, &header(100, 2), ok_stream(bad)).await.is_err());

    assert!(n.wait_tmp_empty().await);
    assert_eq!(c.stat_shard(&n.addr, &id).await.unwrap(), None);
    assert!(c.list_shards(&n.addr, None, 10).await.unwrap().shards.is_empty());
}

type PlainClient = Client<HttpConnector, Full<Bytes>>;

fn plain() -> PlainClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn send_plain(c: &PlainClient, req: http::Request<Full<Bytes>>) -> (u16, String) {
    let resp = c.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn unsigned_and_tampered_requests_get_403_and_change_nothing() {
    let n = TestNode::start().await;
    let c = client();
    let hc = plain();
    let m = manifest("b", "k", 10);
    let body = Bytes::from(serde_json::to_vec(&m).unwrap());

    // No signature at all.
    let req = http::Request::post(format!("http://{}/v1/manifests/put", n.addr)).body(Full::new(body.clone())).unwrap();
    let (status, text) = send_plain(&hc, req).await;
    assert_eq!(status, 403);
    assert!(serde_json::from_str::<serde_json::Value>(&text).unwrap()["error"] == "forbidden", "{text}");
    for (method, path) in [
        ("GET", "/v1/health"),
        ("GET", "/v1/shards"),
        ("DELETE", "/v1/shards/00000000000000000000000000000000/0"),
        ("GET", "/nowhere"),
    ] {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", n.addr))
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(send_plain(&hc, req).await.0, 403, "{method} {path}");
    }
    // An unsigned shard upload.
    let f = Frame::new(Bytes::from_static(b"hello"));
    let mut wire = f.header().to_vec();
    wire.extend_from_slice(&f.data);
    let req = http::Request::put(format!("http://{}/v1/shards/{}/0", n.addr, sid(8, 0).object_id))
        .header("x-sillok-codec", CODEC_ID)
        .header("x-sillok-k", "4")
        .header("x-sillok-m", "2")
        .header("x-sillok-block-size", "5")
        .header("x-sillok-blocks", "1")
        .body(Full::new(Bytes::from(wire.clone())))
        .unwrap();
    assert_eq!(send_plain(&hc, req).await.0, 403);

    // Signed, but the body is not the one whose hash was signed.
    let signer = Signer::new(SECRET);
    let mut req =
        http::Request::post(format!("http://{}/v1/manifests/put", n.addr)).body(Full::new(body.clone())).unwrap();
    signer.sign_request(&mut req, Payload::Bytes(b"{}")).unwrap();
    assert_eq!(send_plain(&hc, req).await.0, 403);
    // Signed as UNSIGNED-PAYLOAD on a JSON route.
    let mut req =
        http::Request::post(format!("http://{}/v1/manifests/put", n.addr)).body(Full::new(body.clone())).unwrap();
    signer.sign_request(&mut req, Payload::Unsigned).unwrap();
    assert_eq!(send_plain(&hc, req).await.0, 403);
    // Signed for another path.
    let mut req =
        http::Request::post(format!("http://{}/v1/manifests/put", n.addr)).body(Full::new(body.clone())).unwrap();
    signer.sign_request(&mut req, Payload::Bytes(&body)).unwrap();
    *req.uri_mut() = format!("http://{}/v1/manifests/list", n.addr).parse().unwrap();
    assert_eq!(send_plain(&hc, req).await.0, 403);
    // The same request properly signed works (so the refusals above were auth).
    let mut req =
        http::Request::post(format!("http://{}/v1/manifests/put", n.addr)).body(Full::new(body.clone())).unwrap();
    signer.sign_request(&mut req, Payload::Bytes(&body)).unwrap();
    assert_eq!(send_plain(&hc, req).await.0, 200);
    assert!(c.get_manifest(&n.addr, "b", "k").await.unwrap().is_some());
    // A signed unsigned-payload shard upload through plain hyper works too,
    // sealed by its trailer.
    let signed = signed_upload(&signer, &n.addr, &sid(9, 0), None);
    let seal = seal_of(&signer, &signed, &[f]);
    assert_eq!(send_upload(&signed, Bytes::from(wire), Some(seal)).await.0, 200);

    // Nothing else changed.
    assert!(c.get_manifest(&n.addr, "b", "other").await.unwrap().is_none());
    let shards = c.list_shards(&n.addr, None, 10).await.unwrap().shards;
    assert_eq!(shards.len(), 1);
    assert_eq!(shards[0].id, sid(9, 0));
}

/// The headers of a signed shard upload of one 5-byte block to `addr`
/// (signed for `host`, default `addr`).
fn signed_upload(signer: &Signer, addr: &str, id: &ShardId, host: Option<&str>) -> http::request::Parts {
    let mut req = http::Request::put(format!("http://{addr}/v1/shards/{}/{}", id.object_id, id.index))
        .header("host", host.unwrap_or(addr))
        .header("x-sillok-codec", CODEC_ID)
        .header("x-sillok-k", "4")
        .header("x-sillok-m", "2")
        .header("x-sillok-block-size", "5")
        .header("x-sillok-blocks", "1")
        .header("trailer", H_BODY_SEAL)
        .body(())
        .unwrap();
    signer.sign_request(&mut req, Payload::Unsigned).unwrap();
    req.into_parts().0
}

/// The seal trailer `signer` puts on `frames` sent under `parts`' nonce.
fn seal_of(signer: &Signer, parts: &http::request::Parts, frames: &[Frame]) -> String {
    let nonce = parts.headers.get(H_NONCE).unwrap().to_str().unwrap();
    let mut d = FrameDigest::default();
    frames.iter().for_each(|f| d.add(f));
    signer.body_seal(nonce).unwrap().value(&d.digest())
}

/// Sends `parts` exactly as they are with `data` as a chunked body and, if
/// given, the seal trailer.
async fn send_upload(parts: &http::request::Parts, data: Bytes, seal: Option<String>) -> (u16, String) {
    type Sealed = http_body_util::StreamBody<
        futures::stream::Iter<std::vec::IntoIter<Result<http_body::Frame<Bytes>, std::convert::Infallible>>>,
    >;
    let mut frames = vec![Ok(http_body::Frame::data(data))];
    if let Some(v) = seal {
        let mut t = http::HeaderMap::new();
        t.insert(H_BODY_SEAL, v.parse().unwrap());
        frames.push(Ok(http_body::Frame::trailers(t)));
    }
    let mut req = http::Request::new(http_body_util::StreamBody::new(futures::stream::iter(frames)));
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.headers_mut() = parts.headers.clone();
    let c: Client<HttpConnector, Sealed> = Client::builder(TokioExecutor::new()).build_http();
    let resp = c.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn framed(f: &Frame) -> Bytes {
    let mut wire = f.header().to_vec();
    wire.extend_from_slice(&f.data);
    Bytes::from(wire)
}

/// The second layer under mutual TLS, on its own (this node speaks plain
/// HTTP): a request sent again is refused, one whose `x-sillok-*` headers or
/// shard body changed after signing is refused, one signed for another node
/// is refused, and none of them stores anything.
#[tokio::test]
async fn replayed_modified_and_misaddressed_requests_are_refused() {
    let n = TestNode::start().await;
    let c = client();
    let signer = Signer::new(SECRET);
    let f = Frame::new(Bytes::from_static(b"hello"));

    // Sealed and sent once: stored.
    let id = sid(20, 0);
    let first = signed_upload(&signer, &n.addr, &id, None);
    let seal = seal_of(&signer, &first, std::slice::from_ref(&f));
    assert_eq!(send_upload(&first, framed(&f), Some(seal.clone())).await.0, 200);
    c.delete_shard(&n.addr, &id).await.unwrap();
    // The same request again, byte for byte: refused, and the shard stays gone.
    let (status, text) = send_upload(&first, framed(&f), Some(seal.clone())).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("already received"), "{text}");
    assert!(c.stat_shard(&n.addr, &id).await.unwrap().is_none(), "a replay stored the shard again");

    // A fresh request whose x-sillok-* header changes after signing.
    let id = sid(21, 0);
    let mut parts = signed_upload(&signer, &n.addr, &id, None);
    let seal = seal_of(&signer, &parts, std::slice::from_ref(&f));
    parts.headers.insert("x-sillok-block-size", "6".parse().unwrap());
    let (status, text) = send_upload(&parts, framed(&f), Some(seal)).await;
    assert_eq!((status, text.contains("signature does not match")), (403, true), "{text}");
    // One whose block is swapped for another with a correct blake3 frame hash.
    let parts = signed_upload(&signer, &n.addr, &id, None);
    let seal = seal_of(&signer, &parts, std::slice::from_ref(&f));
    let (status, text) = send_upload(&parts, framed(&Frame::new(Bytes::from_static(b"HELLO"))), Some(seal)).await;
    assert_eq!((status, text.contains("seal does not match")), (403, true), "{text}");
    // One without its seal.
    let parts = signed_upload(&signer, &n.addr, &id, None);
    let (status, text) = send_upload(&parts, framed(&f), None).await;
    assert_eq!((status, text.contains("without its")), (403, true), "{text}");
    // A seal made with another secret.
    let parts = signed_upload(&signer, &n.addr, &id, None);
    let seal = seal_of(&Signer::new("another-secret"), &parts, std::slice::from_ref(&f));
    assert_eq!(send_upload(&parts, framed(&f), Some(seal)).await.0, 403);
    // One signed for another node's address, sent here.
    let parts = signed_upload(&signer, &n.addr, &id, Some("127.0.0.1:1"));
    let seal = seal_of(&signer, &parts, std::slice::from_ref(&f));
    let (status, text) = send_upload(&parts, framed(&f), Some(seal)).await;
    assert_eq!((status, text.contains("not this process's address")), (403, true), "{text}");
    assert!(c.stat_shard(&n.addr, &id).await.unwrap().is_none(), "a refused upload stored the shard");
    assert_eq!(n.tmp_entries(), 0);
    // The same upload done right is stored (so the refusals above were these checks).
    let parts = signed_upload(&signer, &n.addr, &id, None);
    let seal = seal_of(&signer, &parts, std::slice::from_ref(&f));
    assert_eq!(send_upload(&parts, framed(&f), Some(seal)).await.0, 200);
    assert!(c.stat_shard(&n.addr, &id).await.unwrap().is_some());

    // A hash-signed JSON request replayed: the second manifest write is refused.
    let hc = plain();
    let m = manifest("b", "replayed", 10);
    let body = Bytes::from(serde_json::to_vec(&m).unwrap());
    let mut req =
        http::Request::post(format!("http://{}/v1/manifests/put", n.addr)).body(Full::new(body.clone())).unwrap();
    signer.sign_request(&mut req, Payload::Bytes(&body)).unwrap();
    let again = {
        let mut r = http::Request::new(Full::new(body.clone()));
        *r.method_mut() = req.method().clone();
        *r.uri_mut() = req.uri().clone();
        *r.headers_mut() = req.headers().clone();
        r
    };
    assert_eq!(send_plain(&hc, req).await.0, 200);
    let (status, text) = send_plain(&hc, again).await;
    assert_eq!((status, text.contains("already received")), (403, true), "{text}");
}

#[tokio::test]
async fn a_wrong_secret_is_forbidden() {
    let n = TestNode::start().await;
    let good = client();
    let bad = NodeClient::new("not-the-secret", Timeouts::default());
    assert!(matches!(bad.health(&n.addr).await, Err(NodeError::Forbidden(_))));
    assert!(matches!(bad.put_manifest(&n.addr, &manifest("b", "k", 1)).await, Err(NodeError::Forbidden(_))));
    assert!(matches!(bad.get_manifest(&n.addr, "b", "k").await, Err(NodeError::Forbidden(_))));
    let id = sid(10, 0);
    let res = bad.put_shard(&n.addr, &id, &header(100, 2), ok_stream(blocks(100, 100, 2, 0))).await;
    assert!(matches!(res, Err(NodeError::Forbidden(_))), "{res:?}");
    assert!(matches!(bad.stat_shard(&n.addr, &id).await, Err(NodeError::Forbidden(_))));
    assert!(matches!(bad.delete_shard(&n.addr, &id).await, Err(NodeError::Forbidden(_))));
    assert!(good.get_manifest(&n.addr, "b", "k").await.unwrap().is_none());
    assert!(good.stat_shard(&n.addr, &id).await.unwrap().is_none());
}

#[tokio::test]
async fn manifests_travel_binary_summaries_name_the_copy_and_json_callers_still_work() {
    let n = TestNode::start().await;
    let c = client();
    let mut m = manifest("b", "k", 10);
    m.body = Body::Inline { data: Bytes::from(vec![0xabu8; 50_000]) };
    m.size = 50_000;
    c.put_manifest(&n.addr, &m).await.unwrap();
    assert_eq!(c.get_manifest(&n.addr, "b", "k").await.unwrap().unwrap(), m);
    let summary = c.manifest_summary(&n.addr, "b", "k").await.unwrap().unwrap();
    assert_eq!(summary, sillok_storage_node::api::ManifestSummary::of(&m));
    assert_eq!(summary.order(), (m.version, 0));
    assert!(c.manifest_summary(&n.addr, "b", "none").await.unwrap().is_none());
    // Another copy of the version (another body) has another digest.
    let mut other = m.clone();
    other.etag = "different".into();
    assert_ne!(sillok_storage_node::api::ManifestSummary::of(&other).digest, summary.digest);

    // A caller from before the binary encoding: JSON in, JSON out.
    let signer = Signer::new(SECRET);
    let hc = plain();
    let newer = manifest("b", "k", 11);
    let body = Bytes::from(serde_json::to_vec(&newer).unwrap());
    let mut req =
        http::Request::post(format!("http://{}/v1/manifests/put", n.addr)).body(Full::new(body.clone())).unwrap();
    signer.sign_request(&mut req, Payload::Bytes(&body)).unwrap();
    assert_eq!(send_plain(&hc, req).await.0, 200);
    let body = Bytes::from(serde_json::to_vec(&serde_json::json!({"bucket": "b", "key": "k"})).unwrap());
    let mut req =
        http::Request::post(format!("http://{}/v1/manifests/get", n.addr)).body(Full::new(body.clone())).unwrap();
    signer.sign_request(&mut req, Payload::Bytes(&body)).unwrap();
    let (status, text) = send_plain(&hc, req).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), newer);
    // A malformed binary manifest is a 400, and nothing changes.
    let garbage = Bytes::from_static(&[1, 2, 3, 4]);
    let mut req = http::Request::post(format!("http://{}/v1/manifests/put", n.addr))
        .header("content-type", sillok_storage_node::api::MANIFEST_TYPE)
        .body(Full::new(garbage.clone()))
        .unwrap();
    signer.sign_request(&mut req, Payload::Bytes(&garbage)).unwrap();
    assert_eq!(send_plain(&hc, req).await.0, 400);
    assert_eq!(c.get_manifest(&n.addr, "b", "k").await.unwrap().unwrap(), newer);
}

#[tokio::test]
async fn manifest_versions_and_listing() {
    let n = TestNode::start().await;
    let c = client();
    let r = c.put_manifest(&n.addr, &manifest("b", "k", 10)).await.unwrap();
    assert!(r.stored);
    let r = c.put_manifest(&n.addr, &manifest("b", "k", 10)).await.unwrap();
    assert!(r.stored, "equal version is idempotent");
    let r = c.put_manifest(&n.addr, &manifest("b", "k", 9)).await.unwrap();
    assert!(!r.stored);
    assert_eq!(r.current, Version { nanos: 10, tiebreak: 1 });
    let r = c.put_manifest(&n.addr, &manifest("b", "k", 11)).await.unwrap();
    assert!(r.stored);
    assert_eq!(c.get_manifest(&n.addr, "b", "k").await.unwrap().unwrap().version.nanos, 11);
    assert!(c.get_manifest(&n.addr, "b", "nope").await.unwrap().is_none());

    for key in ["photos/a", "photos/b", "photos/c", "docs/x", "z"] {
        c.put_manifest(&n.addr, &manifest("b", key, 1)).await.unwrap();
    }
    c.put_manifest(&n.addr, &manifest("other", "photos/q", 1)).await.unwrap();
    let mut t = Manifest::tombstone("b", "photos/b");
    t.version = Version { nanos: 5, tiebreak: 0 };
    c.put_manifest(&n.addr, &t).await.unwrap();
    // A tombstone older than the stored version loses.
    let mut old_t = Manifest::tombstone("b", "k");
    old_t.version = Version { nanos: 1, tiebreak: 0 };
    assert!(!c.put_manifest(&n.addr, &old_t).await.unwrap().stored);

    let list = |prefix: &str, after: Option<&str>, limit: u32| ListManifests {
        bucket: "b".into(),
        prefix: prefix.into(),
        start_after: after.map(String::from),
        limit,
    };
    let keys = |l: &sillok_storage_node::api::ManifestList| l.entries.iter().map(|e| e.key.clone()).collect::<Vec<_>>();
    let all = c.list_manifests(&n.addr, &list("", None, 100)).await.unwrap();
    assert_eq!(keys(&all), ["docs/x", "k", "photos/a", "photos/b", "photos/c", "z"]);
    assert!(!all.truncated);
    let p = c.list_manifests(&n.addr, &list("photos/", None, 100)).await.unwrap();
    assert_eq!(keys(&p), ["photos/a", "photos/b", "photos/c"]);
    assert_eq!(p.entries.iter().map(|e| e.deleted).collect::<Vec<_>>(), [false, true, false]);
    let p = c.list_manifests(&n.addr, &list("photos/", None, 2)).await.unwrap();
    assert_eq!(keys(&p), ["photos/a", "photos/b"]);
    assert!(p.truncated);
    let p = c.list_manifests(&n.addr, &list("photos/", Some("photos/b"), 2)).await.unwrap();
    assert_eq!(keys(&p), ["photos/c"]);
    assert!(!p.truncated);
    assert_eq!(p.entries[0].etag, "e1");
    assert_eq!(p.entries[0].size, 3);
    // A bad request is a 400, not a crash.
    let bad = ListManifests { bucket: String::new(), prefix: String::new(), start_after: None, limit: 1 };
    assert!(matches!(c.list_manifests(&n.addr, &bad).await, Err(NodeError::BadRequest(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_manifest_puts_all_land() {
    let n = TestNode::start().await;
    let c = client();
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let (c, addr) = (c.clone(), n.addr.clone());
        tasks.push(tokio::spawn(async move {
            c.put_manifest(&addr, &manifest("bulk", &format!("key-{i:03}"), i + 1)).await
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().unwrap().stored);
    }
    let l = c
        .list_manifests(
            &n.addr,
            &ListManifests { bucket: "bulk".into(), prefix: String::new(), start_after: None, limit: 1000 },
        )
        .await
        .unwrap();
    assert_eq!(l.entries.len(), 200);
    assert_eq!(l.entries[42].key, "key-042");
    assert_eq!(l.entries[42].version.nanos, 43);
}

fn short_timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_millis(300),
        response: Duration::from_millis(300),
        idle: Duration::from_millis(300),
    }
}

/// A TCP server that accepts connections and then does nothing with them.
async fn silent_server() -> (String, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_node_that_never_answers_times_out() {
    let (addr, task) = silent_server().await;
    let c = NodeClient::new(SECRET, short_timeouts());
    assert!(matches!(c.health(&addr).await, Err(NodeError::Timeout { .. })));
    assert!(matches!(c.get_shard(&addr, &sid(1, 0), 0..1).await, Err(NodeError::Timeout { .. })));
    assert!(matches!(c.put_manifest(&addr, &manifest("b", "k", 1)).await, Err(NodeError::Timeout { .. })));
    // An upload the node never reads: fills the socket buffers, then stalls.
    let big = Frame::new(Bytes::from(vec![7u8; 1 << 20]));
    let stream = futures::stream::iter((0..256).map(move |_| Ok(big.clone())));
    let res = c.put_shard(&addr, &sid(1, 0), &header(1 << 20, 256), stream).await;
    assert!(matches!(res, Err(NodeError::Timeout { .. })), "{res:?}");
    // A small upload that the node takes into its socket buffer but never answers.
    let res = c.put_shard(&addr, &sid(1, 0), &header(16, 1), ok_stream(blocks(16, 16, 1, 0))).await;
    assert!(matches!(res, Err(NodeError::Timeout { .. })), "{res:?}");
    task.abort();
}

#[tokio::test]
async fn a_node_that_stalls_mid_body_times_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; 64 << 10];
        let _ = s.read(&mut buf).await;
        let f = Frame::new(Bytes::from(vec![1u8; 100]));
        let mut part = f.header().to_vec();
        part.extend_from_slice(&f.data[..50]);
        let head =
            format!("HTTP/1.1 200 OK\r\nx-sillok-frames: 1\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n", part.len());
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&part).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let c = NodeClient::new(SECRET, short_timeouts());
    let stream = c.get_shard(&addr, &sid(1, 0), 0..1).await.unwrap();
    let (got, err) = collect(stream).await;
    assert!(got.is_empty());
    assert!(matches!(err, Some(NodeError::Timeout { .. })), "{err:?}");
    task.abort();
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    let c = NodeClient::new(SECRET, short_timeouts());
    assert!(matches!(c.health(&addr).await, Err(NodeError::Unreachable { .. })));
}

#[tokio::test]
async fn a_large_shard_streams_in_bounded_pieces() {
    // 48 blocks of 1 MiB each way; correctness only (memory is bounded by design).
    let n = TestNode::start().await;
    let c = client();
    let id = sid(0xee, 5);
    let fs: Vec<Frame> = (0..48u8).map(|i| Frame::new(Bytes::from(vec![i; 1 << 20]))).collect();
    let info = c.put_shard(&n.addr, &id, &header(1 << 20, 48), ok_stream(fs.clone())).await.unwrap();
    assert_eq!(info.data_len, 48 << 20);
    let mut s = c.get_shard(&n.addr, &id, 0..48).await.unwrap();
    let mut i = 0;
    while let Some(f) = s.next().await {
        assert_eq!(f.unwrap(), fs[i]);
        i += 1;
    }
    assert_eq!(i, 48);
}

#[tokio::test]
async fn manifest_requests_from_an_older_map_epoch_are_refused_and_every_answer_names_the_epoch() {
    let dir = tempfile::tempdir().unwrap();
    // The node holds a receiver of the map its follower publishes.
    let (map, rx) = tokio::sync::watch::channel(Some(std::sync::Arc::new(map_at(5))));
    let node = sillok_storage_node::spawn(NodeConfig {
        id: NodeId(7),
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        cluster_secret: SECRET.into(),
        also_accepted_secrets: Vec::new(),
        map: Some(rx),
        // No peer of this map runs: reads open after the first round.
        upkeep: sillok_storage_node::collector::Upkeep { catch_up_limit: Duration::ZERO, ..Default::default() },
        meta_cache_bytes: sillok_storage_node::meta_store::DEFAULT_CACHE_BYTES,
    })
    .await
    .unwrap();
    let addr = node.addr().to_string();

    // A caller that sends no epoch is not checked.
    let plain = client();
    plain.put_manifest(&addr, &manifest("b", "k", 1)).await.unwrap();
    let caught_up = std::time::Instant::now();
    while matches!(plain.get_manifest(&addr, "b", "k").await, Err(NodeError::Status { status: 503, .. })) {
        assert!(caught_up.elapsed() < Duration::from_secs(20), "never opened reads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An older epoch: refused before the store is touched, and told the node's.
    let old = client().at_epoch(3);
    match old.put_manifest(&addr, &manifest("b", "k", 2)).await {
        Err(NodeError::StaleEpoch { node_epoch, .. }) => assert_eq!(node_epoch, 5),
        other => panic!("expected StaleEpoch, got {other:?}"),
    }
    assert!(matches!(old.get_manifest(&addr, "b", "k").await, Err(NodeError::StaleEpoch { node_epoch: 5, .. })));
    assert_eq!(plain.get_manifest(&addr, "b", "k").await.unwrap().unwrap().version.nanos, 1, "nothing was stored");
    assert_eq!(old.health(&addr).await.unwrap().epoch, 5);

    // Shards are served whatever the epoch, but the answer names the node's.
    let id = sid(9, 0);
    old.put_shard(&addr, &id, &header(16, 1), ok_stream(blocks(16, 16, 1, 0))).await.unwrap();

    // The same or a newer epoch is served; the node moving on is seen at once.
    let current = client().at_epoch(5);
    current.put_manifest(&addr, &manifest("b", "k", 3)).await.unwrap();
    map.send_replace(Some(std::sync::Arc::new(map_at(6))));
    assert_eq!(current.health(&addr).await.unwrap().epoch, 6);
    assert!(matches!(current.get_manifest(&addr, "b", "k").await, Err(NodeError::StaleEpoch { node_epoch: 6, .. })));
    let newer = current.at_epoch(7);
    assert_eq!(newer.get_manifest(&addr, "b", "k").await.unwrap().unwrap().version.nanos, 3);
    node.stop().await.unwrap();
}

#[tokio::test]
async fn a_node_started_with_a_map_answers_clients_manifest_reads_only_once_it_has_heard_from_its_peers() {
    let dir = tempfile::tempdir().unwrap();
    // It is node 1 of the map; its peers (ports 7002..7006, none listening)
    // never answer.
    let start = || {
        let (map, rx) = tokio::sync::watch::channel(Some(std::sync::Arc::new(map_at(5))));
        let node = sillok_storage_node::spawn(NodeConfig {
            id: NodeId(1),
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            cluster_secret: SECRET.into(),
            also_accepted_secrets: Vec::new(),
            map: Some(rx),
            upkeep: Default::default(),
            meta_cache_bytes: sillok_storage_node::meta_store::DEFAULT_CACHE_BYTES,
        });
        async move { (node.await.unwrap(), map) }
    };
    let c = client();
    let all = ListManifests { bucket: "b".into(), prefix: String::new(), start_after: None, limit: 10 };
    // With nothing stored it has nothing stale to offer: reads are answered.
    let (node, _map) = start().await;
    let addr = node.addr().to_string();
    assert!(c.get_manifest(&addr, "b", "k").await.unwrap().is_none());
    c.put_manifest(&addr, &manifest("b", "k", 1)).await.unwrap();
    node.stop().await.unwrap();

    // Started again with a manifest on disk: writes are taken (a write is
    // never stale), a client's read is refused until it catches up.
    let (node, _map) = start().await;
    let addr = node.addr().to_string();
    c.put_manifest(&addr, &manifest("b", "k2", 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    match c.get_manifest(&addr, "b", "k").await {
        Err(NodeError::Status { status: 503, body, .. }) => assert!(body.contains("catching up"), "{body}"),
        other => panic!("expected a refusal while catching up, got {other:?}"),
    }
    assert!(matches!(c.list_manifests(&addr, &all).await, Err(NodeError::Status { status: 503, .. })));
    // Peers' background work (anti-entropy, rebuild) is answered meanwhile.
    let peer = c.background();
    assert_eq!(peer.get_manifest(&addr, "b", "k").await.unwrap().unwrap().version.nanos, 1);
    node.stop().await.unwrap();
}

/// A valid 4+2 map over three sites of two nodes, at `epoch`.
fn map_at(epoch: u64) -> sillok_placement::PlacementMap {
    use sillok_placement::{EcProfile, Node, NodeState, Site, Topology};
    let mut t = Topology::default();
    for (i, site) in ["a", "b", "c"].iter().enumerate() {
        t.sites.push(Site { id: site.to_string() });
        for j in 0..2u32 {
            let id = i as u32 * 2 + j + 1;
            let addr = format!("127.0.0.1:{}", 7000 + id);
            t.nodes.push(Node { id: NodeId(id), site: site.to_string(), addr, weight: 1.0, state: NodeState::Up });
        }
    }
    let mut map = sillok_placement::PlacementMap::new(t, EcProfile { k: 4, m: 2 }, 16).unwrap();
    map.epoch = epoch;
    map
}
