//! The starting corpus: realistic inputs for every target, so that the fuzzer
//! starts deep (valid signatures, aws-chunked bodies with valid chunk and
//! trailer signatures, POST forms with a signed policy, the XML bodies S3
//! clients send). `examples/write_seeds.rs` writes them to `fuzz/seeds/`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::HeaderValue;
use sillok_rpc::auth::{Payload, Signer};

use crate::RawRequest;
use crate::s3_request::{
    ACCESS_KEY, AUTH_AS_GIVEN, AUTH_NONE, AUTH_PRESIGN, AUTH_SIGN_HEADERS, HASH_AWS_CHUNKED, HASH_BODY, HASH_KEEP,
    HASH_UNSIGNED, REGION, SECRET_KEY, SignedPayload, aws_chunked, flags, sign_request, signing_time,
};
use crate::{frame_decoder, range_header, s3_request, sigv4_node};

/// One seed: target, file name, bytes.
pub type Seed = (&'static str, String, Vec<u8>);

/// A request before signing.
#[derive(Clone)]
struct Req {
    method: &'static str,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn req(method: &'static str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Req {
    let mut h = vec![("host".to_string(), "127.0.0.1:9000".to_string())];
    h.extend(headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    Req { method, target: target.into(), headers: h, body: body.to_vec() }
}

impl Req {
    fn text(&self) -> Vec<u8> {
        RawRequest {
            method: self.method.as_bytes(),
            target: self.target.as_bytes(),
            headers: self.headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())).collect(),
            body: &self.body,
        }
        .to_bytes()
    }

    fn http(&self) -> http::Request<()> {
        let mut r = http::Request::builder().method(self.method).uri(&self.target).body(()).expect("seed request");
        for (n, v) in &self.headers {
            r.headers_mut()
                .append(http::HeaderName::from_bytes(n.as_bytes()).expect("name"), v.parse().expect("value"));
        }
        r
    }

    /// The text of `r` (a signed `http` request) with `body`.
    fn from_http(r: &http::Request<()>, body: &[u8]) -> Vec<u8> {
        let target = r.uri().path_and_query().map_or("/", |p| p.as_str());
        let headers: Vec<(&[u8], &[u8])> =
            r.headers().iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())).collect();
        RawRequest { method: r.method().as_str().as_bytes(), target: target.as_bytes(), headers, body }.to_bytes()
    }

    /// Signed with the known key at `signing_time`, in the header.
    fn signed(&self, payload: SignedPayload<'_>) -> Vec<u8> {
        let mut r = self.http();
        sign_request(&mut r, payload, aws_sigv4::http_request::SignatureLocation::Headers, signing_time())
            .expect("seed signs");
        Req::from_http(&r, &self.body)
    }

    /// aws-chunked with chunk signatures (and, with `trailers`, a signed trailer).
    fn streaming(&self, chunk: usize, trailers: &[(&str, &str)]) -> Vec<u8> {
        let mut r = self.http();
        let sha = if trailers.is_empty() {
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
        } else {
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
        };
        let h = r.headers_mut();
        h.insert("content-encoding", HeaderValue::from_static("aws-chunked"));
        h.insert("x-amz-decoded-content-length", self.body.len().into());
        if !trailers.is_empty() {
            let names: Vec<&str> = trailers.iter().map(|(n, _)| *n).collect();
            h.insert("x-amz-trailer", names.join(",").parse().expect("trailer names"));
        }
        let t = signing_time();
        let seed = sign_request(
            &mut r,
            SignedPayload::Precomputed(sha.into()),
            aws_sigv4::http_request::SignatureLocation::Headers,
            t,
        )
        .expect("signs");
        let mut body = aws_chunked(&self.body, chunk, &seed, t);
        if !trailers.is_empty() {
            // The last chunk's signature is the running signature for the trailer.
            let text = String::from_utf8_lossy(&body).into_owned();
            let last = text.rsplit("chunk-signature=").next().expect("a chunk")[..64].to_string();
            let mut headers = aws_smithy_runtime_api::http::Headers::new();
            for (n, v) in trailers {
                headers.insert(n.to_string(), v.to_string());
            }
            let identity: aws_smithy_runtime_api::client::identity::Identity =
                aws_credential_types::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "seed").into();
            let params = aws_sigv4::sign::v4::SigningParams::builder()
                .identity(&identity)
                .region(REGION)
                .name("s3")
                .time(t)
                .settings(())
                .build()
                .expect("params");
            let sig = aws_sigv4::sign::v4::sign_trailer(&headers, &last, &params).expect("trailer").into_parts().1;
            body.truncate(body.len() - 2); // the final chunk's empty-line terminator
            for (n, v) in trailers {
                body.extend_from_slice(format!("{n}:{v}\r\n").as_bytes());
            }
            body.extend_from_slice(format!("x-amz-trailer-signature:{sig}\r\n\r\n").as_bytes());
        }
        Req::from_http(&r, &body)
    }

    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: chunks without signatures, then trailers.
    fn unsigned_trailer(&self, chunk: usize, trailers: &[(&str, &str)]) -> Vec<u8> {
        let mut r = self.http();
        let h = r.headers_mut();
        h.insert("content-encoding", HeaderValue::from_static("aws-chunked"));
        h.insert("x-amz-decoded-content-length", self.body.len().into());
        let names: Vec<&str> = trailers.iter().map(|(n, _)| *n).collect();
        h.insert("x-amz-trailer", names.join(",").parse().expect("trailer names"));
        let sha = SignedPayload::Precomputed("STREAMING-UNSIGNED-PAYLOAD-TRAILER".into());
        sign_request(&mut r, sha, aws_sigv4::http_request::SignatureLocation::Headers, signing_time()).expect("signs");
        let mut body = Vec::new();
        for c in self.body.chunks(chunk) {
            body.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            body.extend_from_slice(c);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n");
        for (n, v) in trailers {
            body.extend_from_slice(format!("{n}:{v}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        Req::from_http(&r, &body)
    }
}

fn crc32_b64(data: &[u8]) -> String {
    STANDARD.encode(s3s::crypto::Crc32::checksum_u32(data).to_be_bytes())
}

fn md5_b64(data: &[u8]) -> String {
    use s3s::crypto::Checksum;
    STANDARD.encode(s3s::crypto::Md5::checksum(data))
}

const COMPLETE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Part><ETag>"a54357aff0632cce46d942af68356b38"</ETag><PartNumber>1</PartNumber></Part>
  <Part><ChecksumCRC32>NhCmhg==</ChecksumCRC32><ETag>"0c78aef83f66abc1fa1e8477f296d394"</ETag><PartNumber>2</PartNumber></Part>
</CompleteMultipartUpload>"#;

const DELETE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Object><Key>2026/cat.jpg</Key></Object>
  <Object><Key>a&amp;b &lt;c&gt; &#xD55C;&#44544; &#34;q&#34;</Key><VersionId>null</VersionId></Object>
  <Object><Key>photos/2026/01/01/IMG_0001.HEIC</Key><ETag>"x"</ETag><Size>5</Size></Object>
  <Quiet>true</Quiet>
</Delete>"#;

const CREATE_BUCKET: &str = r#"<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <LocationConstraint>eu-west-1</LocationConstraint>
  <Location><Name>use1-az1</Name><Type>AvailabilityZone</Type></Location>
  <Bucket><DataRedundancy>SingleAvailabilityZone</DataRedundancy><Type>Directory</Type></Bucket>
</CreateBucketConfiguration>"#;

fn post_form() -> Req {
    let date = "20260101T000000Z";
    let credential = format!("{ACCESS_KEY}/20260101/{REGION}/s3/aws4_request");
    let policy = format!(
        r#"{{"expiration":"2099-01-01T00:00:00.000Z","conditions":[{{"bucket":"photos"}},["starts-with","$key","uploads/"],{{"acl":"private"}},["eq","$x-amz-date","{date}"],["eq","$x-amz-credential","{credential}"],["eq","$x-amz-algorithm","AWS4-HMAC-SHA256"],["content-length-range",0,1048576],["starts-with","$Content-Type","image/"],["starts-with","$x-amz-meta-album",""]]}}"#
    );
    let policy = STANDARD.encode(policy);
    let key = aws_sigv4::sign::v4::generate_signing_key(SECRET_KEY, signing_time(), REGION, "s3");
    let signature = aws_sigv4::sign::v4::calculate_signature(key, policy.as_bytes());
    let boundary = "----SillokFormBoundary7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    let fields = [
        ("key", "uploads/${filename}"),
        ("acl", "private"),
        ("Content-Type", "image/jpeg"),
        ("x-amz-meta-album", "2026"),
        ("x-amz-algorithm", "AWS4-HMAC-SHA256"),
        ("x-amz-credential", &credential),
        ("x-amz-date", date),
        ("policy", &policy),
        ("x-amz-signature", &signature),
    ];
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cat.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(b"\xff\xd8\xff\xe0 not really a jpeg\r\n--almost a boundary\r\n");
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let ct = format!("multipart/form-data; boundary={boundary}");
    req("POST", "/photos", &[("content-type", &ct)], &body)
}

/// Requests that the harness signs (mode 1), presigns (mode 2) or sends
/// without auth (mode 3); they carry no auth headers of their own.
fn plain_requests() -> Vec<(&'static str, Req)> {
    let photo = b"\xff\xd8\xff\xe0 chat media bytes".repeat(3);
    let md5 = md5_b64(DELETE.as_bytes());
    vec![
        ("list_buckets", req("GET", "/", &[], b"")),
        ("create_bucket", req("PUT", "/photos", &[("content-type", "application/xml")], CREATE_BUCKET.as_bytes())),
        ("head_bucket", req("HEAD", "/photos", &[], b"")),
        ("location", req("GET", "/photos?location", &[], b"")),
        (
            "list_v2",
            req(
                "GET",
                "/photos?list-type=2&prefix=2026%2F&delimiter=%2F&max-keys=100&continuation-token=dG9rZW4%3D&start-after=a&encoding-type=url&fetch-owner=true",
                &[],
                b"",
            ),
        ),
        ("list_v1", req("GET", "/photos?prefix=a&marker=b&max-keys=2&delimiter=/", &[], b"")),
        (
            "put_object",
            req(
                "PUT",
                "/photos/2026/cat%20%E2%9C%93.jpg",
                &[
                    ("content-type", "image/jpeg"),
                    ("cache-control", "max-age=60"),
                    ("content-disposition", "attachment; filename=\"cat.jpg\""),
                    ("expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
                    ("x-amz-meta-album", "summer"),
                    ("x-amz-meta-encoded", "=?UTF-8?B?7ZWc6rWt7Ja0?="),
                    ("x-amz-checksum-crc32", &crc32_b64(&photo)),
                    ("x-amz-sdk-checksum-algorithm", "CRC32"),
                    ("content-md5", &md5_b64(&photo)),
                    ("x-amz-storage-class", "STANDARD"),
                    ("x-amz-tagging", "a=b&c=d"),
                ],
                &photo,
            ),
        ),
        (
            "get_range",
            req(
                "GET",
                "/photos/2026/cat.jpg?response-content-type=text%2Fplain&versionId=null",
                &[
                    ("range", "bytes=0-99"),
                    ("if-match", "\"a54357aff0632cce46d942af68356b38\""),
                    ("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT"),
                    ("x-amz-checksum-mode", "ENABLED"),
                ],
                b"",
            ),
        ),
        ("get_empty_suffix", req("GET", "/photos/empty.txt", &[("range", "bytes=-10")], b"")),
        ("get_part", req("GET", "/photos/k?partNumber=2", &[("range", "bytes=-500")], b"")),
        ("head_object", req("HEAD", "/photos/k", &[("if-none-match", "*")], b"")),
        ("delete_object", req("DELETE", "/photos/k?versionId=abc", &[], b"")),
        ("create_multipart", req("POST", "/photos/big.mp4?uploads", &[("content-type", "video/mp4")], b"")),
        (
            "upload_part",
            req(
                "PUT",
                "/photos/big.mp4?partNumber=1&uploadId=VXBsb2FkSWQ",
                &[("content-md5", &md5_b64(&photo))],
                &photo,
            ),
        ),
        (
            "complete_multipart",
            req(
                "POST",
                "/photos/big.mp4?uploadId=VXBsb2FkSWQ",
                &[("content-type", "application/xml")],
                COMPLETE.as_bytes(),
            ),
        ),
        ("abort_multipart", req("DELETE", "/photos/big.mp4?uploadId=VXBsb2FkSWQ", &[], b"")),
        ("list_parts", req("GET", "/photos/big.mp4?uploadId=VXBsb2FkSWQ&max-parts=10&part-number-marker=1", &[], b"")),
        ("list_uploads", req("GET", "/photos?uploads&prefix=a&key-marker=b&upload-id-marker=c", &[], b"")),
        (
            "delete_objects",
            req(
                "POST",
                "/photos?delete",
                &[("content-md5", &md5), ("content-type", "application/xml")],
                DELETE.as_bytes(),
            ),
        ),
        (
            "copy_object",
            req(
                "PUT",
                "/photos/copy.jpg",
                &[
                    ("x-amz-copy-source", "/photos/2026/cat.jpg?versionId=null"),
                    ("x-amz-metadata-directive", "REPLACE"),
                    ("x-amz-copy-source-if-match", "\"abc\""),
                ],
                b"",
            ),
        ),
        (
            "tagging",
            req(
                "PUT",
                "/photos/k?tagging",
                &[],
                b"<Tagging><TagSet><Tag><Key>a</Key><Value>b</Value></Tag></TagSet></Tagging>",
            ),
        ),
        ("virtual_host", req("GET", "/2026/cat.jpg", &[("host", "photos.s3.localhost:9000")], b"")),
        ("virtual_host_list", req("GET", "/?list-type=2", &[("host", "Photos.Localhost")], b"")),
        ("double_slash", req("GET", "/photos//a/../b/./c", &[], b"")),
    ]
}

fn s3_request_seeds(out: &mut Vec<Seed>) {
    let mut add = |name: String, data: Vec<u8>| out.push(("s3_request", name, data));
    let plain = plain_requests();
    for (name, r) in &plain {
        let has_body = !r.body.is_empty();
        add(format!("anon_{name}"), s3_request::input(flags(AUTH_NONE, 0, false, 0), 0, &r.text()));
        add(format!("sign_{name}"), s3_request::input(flags(AUTH_SIGN_HEADERS, 0, false, HASH_BODY), 0, &r.text()));
        add(format!("presign_{name}"), s3_request::input(flags(AUTH_PRESIGN, 0, false, 0), 0, &r.text()));
        // Signed in the file itself (mode 0): the fuzzer mutates real signatures.
        add(
            format!("given_{name}"),
            s3_request::input(flags(AUTH_AS_GIVEN, 0, false, 0), 0, &r.signed(SignedPayload::Body(&r.body))),
        );
        if has_body {
            let chunked = flags(AUTH_SIGN_HEADERS, 3, false, HASH_AWS_CHUNKED);
            add(format!("sign_chunked_{name}"), s3_request::input(chunked, 4, &r.text()));
            let unsigned = flags(AUTH_SIGN_HEADERS, 1, false, HASH_UNSIGNED);
            add(format!("sign_unsigned_{name}"), s3_request::input(unsigned, 0, &r.text()));
            let no_length = flags(AUTH_SIGN_HEADERS, 2, true, HASH_UNSIGNED);
            add(format!("sign_unsigned_no_length_{name}"), s3_request::input(no_length, 0, &r.text()));
        }
    }

    let photo = b"hello, chat media! ".repeat(5);
    let put = req("PUT", "/photos/stream.bin", &[("content-type", "application/octet-stream")], &photo);
    let crc = crc32_b64(&photo);
    let given = flags(AUTH_AS_GIVEN, 0, false, 0);
    add("given_streaming".into(), s3_request::input(given, 0, &put.streaming(32, &[])));
    add(
        "given_streaming_pieces".into(),
        s3_request::input(flags(AUTH_AS_GIVEN, 2, false, 0), 0, &put.streaming(7, &[])),
    );
    let trailer = [("x-amz-checksum-crc32", crc.as_str())];
    add("given_streaming_trailer".into(), s3_request::input(given, 0, &put.streaming(40, &trailer)));
    add("given_unsigned_trailer".into(), s3_request::input(given, 0, &put.unsigned_trailer(16, &trailer)));
    let mut up = put.clone();
    up.target = "/photos/big.mp4?partNumber=3&uploadId=VXBsb2FkSWQ".into();
    add("given_unsigned_trailer_part".into(), s3_request::input(given, 0, &up.unsigned_trailer(64, &trailer)));
    let mut keep = put.clone();
    keep.headers.push(("x-amz-content-sha256".into(), "STREAMING-UNSIGNED-PAYLOAD-TRAILER".into()));
    keep.headers.push(("content-encoding".into(), "aws-chunked".into()));
    keep.headers.push(("x-amz-decoded-content-length".into(), "5".into()));
    keep.headers.push(("x-amz-trailer".into(), "x-amz-checksum-crc32".into()));
    keep.body = b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n".to_vec();
    add(
        "sign_keep_unsigned_trailer".into(),
        s3_request::input(flags(AUTH_SIGN_HEADERS, 0, false, HASH_KEEP), 0, &keep.text()),
    );
    add("given_post_form".into(), s3_request::input(given, 0, &post_form().text()));
    add("anon_post_form".into(), s3_request::input(flags(AUTH_NONE, 0, false, 0), 0, &post_form().text()));

    // Query-string (presigned) signature in the file itself.
    let mut r = req("GET", "/photos/2026/cat.jpg?x-id=GetObject", &[], b"").http();
    sign_request(
        &mut r,
        SignedPayload::Unsigned,
        aws_sigv4::http_request::SignatureLocation::QueryParams,
        signing_time(),
    )
    .expect("presigns");
    add("given_presigned_get".into(), s3_request::input(given, 0, &Req::from_http(&r, b"")));
    // SigV2 header and query auth, and malformed V4 headers.
    let v2 = req(
        "GET",
        "/photos/cat.jpg",
        &[
            ("date", "Thu, 01 Jan 2026 00:00:00 GMT"),
            ("authorization", "AWS AKIAFUZZEXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg="),
        ],
        b"",
    );
    add("given_sigv2_header".into(), s3_request::input(given, 0, &v2.text()));
    let v2q = req(
        "GET",
        "/photos/cat.jpg?AWSAccessKeyId=AKIAFUZZEXAMPLE&Expires=4102444800&Signature=vjbyPxybdZaNmGa%2ByT272YEAiv4%3D",
        &[],
        b"",
    );
    add("given_sigv2_query".into(), s3_request::input(given, 0, &v2q.text()));
    let bad = req(
        "PUT",
        "/photos/k",
        &[
            ("x-amz-date", "20260101T000000Z"),
            ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAFUZZEXAMPLE/20260101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=0000000000000000000000000000000000000000000000000000000000000000",
            ),
        ],
        b"x",
    );
    add("given_bad_signature".into(), s3_request::input(given, 0, &bad.text()));
}

fn sigv4_node_seeds(out: &mut Vec<Seed>) {
    let signer = Signer::new(sigv4_node::CLUSTER_SECRET);
    let t = signing_time();
    let routes: [(&str, &str, &[u8]); 6] = [
        ("PUT", "/v1/shards/0123456789abcdef0123456789abcdef/3", b""),
        ("GET", "/v1/shards/0123456789abcdef0123456789abcdef/3?from=1&to=4", b""),
        ("GET", "/v1/shards?after=0123456789abcdef0123456789abcdef.2&limit=100", b""),
        ("POST", "/v1/manifests/get", br#"{"bucket":"photos","key":"2026/cat.jpg"}"#),
        ("POST", "/v1/manifests/list", br#"{"bucket":"photos","prefix":"2026/","after":null,"limit":1000}"#),
        ("GET", "/v1/health", b""),
    ];
    for (i, (method, pq, body)) in routes.iter().enumerate() {
        let payload = if *method == "PUT" { Payload::Unsigned } else { Payload::Bytes(body) };
        let headers = sigv4_node::sign_fixed(&signer, method, "10.0.0.2:7000", pq, payload, t).expect("node signs");
        let mut text = format!("{method} {pq} HTTP/1.1\r\n").into_bytes();
        for (n, v) in &headers {
            text.extend_from_slice(n.as_str().as_bytes());
            text.extend_from_slice(b": ");
            text.extend_from_slice(v.as_bytes());
            text.extend_from_slice(b"\r\n");
        }
        text.extend_from_slice(b"\r\n");
        text.extend_from_slice(body);
        for (name, offset) in [("now", 0), ("later", 600), ("skewed", -1000)] {
            out.push(("sigv4_node", format!("verify_{i}_{name}"), sigv4_node::verify_input(offset, &text)));
        }
        let plain = format!("{method} {pq} HTTP/1.1\r\nhost: 10.0.0.2:7000\r\n\r\n").into_bytes();
        let mut plain = plain;
        plain.extend_from_slice(body);
        for kind in 0..6u8 {
            let s = sigv4_node::signed_input(*method == "PUT", 1_767_225_600 + u32::from(kind), kind, 5, b'a', &plain);
            out.push(("sigv4_node", format!("sign_{i}_tamper{kind}"), s));
        }
    }
}

fn range_seeds(out: &mut Vec<Seed>) {
    let cases = [
        (1000, "bytes=0-99"),
        (1000, "bytes=100-"),
        (1000, "bytes=-100"),
        (0, "bytes=-1"),
        (10, "bytes=9-9"),
        (10, "bytes=10-"),
        (u64::MAX, "bytes=9223372036854775807-18446744073709551615"),
        (5, "bytes=0-0,5-9"),
        (5, "bytes= 1-2"),
        (5, "items=0-1"),
    ];
    for (i, (len, h)) in cases.iter().enumerate() {
        out.push(("range_header", format!("range_{i}"), range_header::input(*len, h)));
    }
}

fn xml_seeds(out: &mut Vec<Seed>) {
    for (name, body) in [
        ("complete", COMPLETE),
        ("delete", DELETE),
        ("create_bucket", CREATE_BUCKET),
        ("complete_empty", "<CompleteMultipartUpload/>"),
        ("delete_edge", "<Delete><Object><Key>&#x1F600;<![CDATA[cdata <key>]]>&#38;lt;</Key></Object></Delete>"),
        ("delete_one", "<Delete><Object><Key>k</Key></Object></Delete>"),
        ("create_bucket_plain", "<CreateBucketConfiguration><LocationConstraint/></CreateBucketConfiguration>"),
    ] {
        out.push(("xml_bodies", name.into(), body.as_bytes().to_vec()));
    }
}

fn frame_seeds(out: &mut Vec<Seed>) {
    let blocks: [&[u8]; 4] = [b"first block", b"", &[7u8; 300], b"last"];
    let w = frame_decoder::wire(&blocks);
    out.push(("frame_decoder", "four_frames".into(), frame_decoder::input(0, 0, &w)));
    out.push(("frame_decoder", "four_frames_pieces".into(), frame_decoder::input(0, 0x1b, &w)));
    out.push(("frame_decoder", "truncated".into(), frame_decoder::input(0, 3, &w[..w.len() - 3])));
    out.push(("frame_decoder", "repair_short".into(), frame_decoder::input(3, 4, &w)));
    out.push(("frame_decoder", "corrupt_last".into(), frame_decoder::input(5, 2, &w)));
    let mut huge = u32::MAX.to_le_bytes().to_vec();
    huge.extend_from_slice(&[0; 40]);
    out.push(("frame_decoder", "too_large".into(), frame_decoder::input(0, 0, &huge)));
    let f = sillok_model::frame::Frame::new(Bytes::from_static(b"x"));
    out.push(("frame_decoder", "one_byte".into(), frame_decoder::input(0, 0, &[&f.header()[..], b"x"].concat())));
}

fn manifest_seeds(out: &mut Vec<Seed>) {
    let common = r#""bucket":"photos","key":"2026/cat.jpg","version":{"nanos":1767225600000000000,"tiebreak":42},"last_modified_ms":1767225600000,"etag":"a54357aff0632cce46d942af68356b38""#;
    let bodies = [
        (
            "inline",
            r#""size":5,"content_type":"image/jpeg","headers":{"cache-control":"max-age=60"},"user_metadata":{"album":"summer"},"body":{"kind":"inline","data":"aGVsbG8="}"#,
        ),
        (
            "sharded",
            r#""size":4194304,"body":{"kind":"sharded","object_id":"0123456789abcdef0123456789abcdef","codec":"rs-vandermonde","k":4,"m":2,"block_size":1048576,"epoch":3,"shards":[{"index":0,"node":1},{"index":1,"node":2},{"index":2,"node":3},{"index":3,"node":4},{"index":4,"node":5},{"index":5,"node":6}]}"#,
        ),
        ("deleted", r#""size":0,"body":{"kind":"deleted"}"#),
        // Tags make the binary encoding format 2 (`wire::FORMAT_TAGGED`).
        (
            "tagged",
            r#""size":5,"content_type":"image/jpeg","user_metadata":{"album":"summer"},"tags":{"expire":"30d","owner":"채팅"},"body":{"kind":"inline","data":"aGVsbG8="}"#,
        ),
        (
            "multipart",
            r#""size":10,"body":{"kind":"multipart","parts":[{"number":1,"size":5,"etag":"x","body":{"kind":"inline","data":"aGVsbG8="}},{"number":2,"size":5,"etag":"y","body":{"kind":"inline","data":"d29ybGQ="}}]}"#,
        ),
    ];
    for (name, body) in bodies {
        let json = format!("{{{common},{body}}}").into_bytes();
        let m: sillok_model::manifest::Manifest = serde_json::from_slice(&json).expect("seed manifests parse");
        out.push(("manifest_binary", name.into(), sillok_model::manifest::wire::encode(&m)));
        out.push(("manifest_json", name.into(), json));
    }
}

/// Every seed of every target.
pub fn all() -> Vec<Seed> {
    let mut out = Vec::new();
    s3_request_seeds(&mut out);
    sigv4_node_seeds(&mut out);
    range_seeds(&mut out);
    xml_seeds(&mut out);
    frame_seeds(&mut out);
    manifest_seeds(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_seeds_are_accepted() {
        let seeds = all();
        let status = |name: &str| {
            let (_, _, data) = seeds.iter().find(|(t, n, _)| *t == "s3_request" && n == name).expect(name);
            s3_request::response(data).map(|(status, body)| (status, String::from_utf8_lossy(&body).into_owned()))
        };
        for name in [
            "given_put_object",
            "sign_put_object",
            "presign_list_v2",
            "anon_list_v2",
            "given_streaming",
            "given_streaming_pieces",
            "given_streaming_trailer",
            "given_unsigned_trailer",
            "sign_keep_unsigned_trailer",
            "sign_chunked_upload_part",
            "given_complete_multipart",
            "given_delete_objects",
            "given_create_bucket",
            "given_post_form",
            "sign_unsigned_put_object",
        ] {
            let got = status(name);
            assert!(got.as_ref().is_some_and(|(s, _)| s.is_success()), "{name}: {got:?}");
        }
    }
}
