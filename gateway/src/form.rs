//! Browser-form uploads (POST object) are checked before their file is read.
//!
//! s3s 0.14.1 parses the form's fields (everything before the `file` part:
//! S3 ignores fields after it) and verifies a signed form's signature before
//! it reads the file, but an *unsigned* form reaches its access check only
//! after the file has been buffered (up to `--post-max-size`), its fields may
//! take 20 MiB, and the policy's `bucket` and `key` conditions are checked
//! after the file too. So [`precheck`] runs first, on every form upload:
//!
//! 1. reads the fields, at most [`MAX_FORM_FIELDS`] bytes (plus the one frame
//!    that crossed it) within [`FIELDS_DEADLINE`];
//! 2. refuses an unsigned form (no `x-amz-signature` nor `signature` field:
//!    Sillok has no public buckets, so it could only ever be `AccessDenied`),
//!    a form without a readable policy, an expired policy, a policy whose
//!    `bucket` or `key` conditions the fields break, and a form whose declared
//!    length exceeds its fields, the policy's `content-length-range` maximum
//!    (or `--post-max-size` when smaller or absent) and [`FORM_TAIL`];
//! 3. otherwise hands s3s the request with the bytes read so far put back in
//!    front of the rest of the body (byte for byte the same body), and s3s
//!    verifies the signature, still before the file, then buffers the file
//!    bounded by min(policy maximum, `--post-max-size`).
//!
//! Invariant: a form refused here costs the gateway at most its fields plus
//! one read frame; nothing of the file beyond that is read. The checks are
//! the ones s3s makes later with the same rules, only earlier, so no form
//! s3s accepts is refused here except for its size or deadline bounds.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use s3s::post_policy::{PostPolicy, PostPolicyCondition};

/// The largest size of a form's fields (everything before the file part).
pub const MAX_FORM_FIELDS: usize = 64 << 10;
/// The fields must arrive within this, as headers must (`server`).
pub const FIELDS_DEADLINE: Duration = Duration::from_secs(30);
/// Room after the file for the closing boundary and fields S3 ignores.
pub const FORM_TAIL: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum FormError {
    #[error("The form's fields (everything before the file) exceed {MAX_FORM_FIELDS} bytes.")]
    FieldsTooLarge,
    #[error("The form's fields did not arrive within {} s.", FIELDS_DEADLINE.as_secs())]
    FieldsTimeout,
    #[error("The body of your POST request is not well-formed multipart/form-data: {0}.")]
    Malformed(&'static str),
    #[error("The request body could not be read: {0}")]
    Body(String),
    #[error("Anonymous access is not allowed; sign the form (policy and signature fields).")]
    Anonymous,
    #[error("Invalid Policy: {0}")]
    BadPolicy(String),
    #[error("Invalid according to Policy: Policy expired.")]
    Expired,
    #[error("Invalid according to Policy: Policy Condition failed: {0}")]
    Condition(String),
    #[error("Your proposed upload exceeds the maximum allowed object size ({max} bytes).")]
    TooLarge { max: u64 },
}

impl FormError {
    /// The HTTP status and S3 error code.
    pub fn s3(&self) -> (u16, &'static str) {
        match self {
            FormError::FieldsTooLarge | FormError::Malformed(_) => (400, "MalformedPOSTRequest"),
            FormError::FieldsTimeout => (400, "RequestTimeout"),
            FormError::Body(_) => (400, "IncompleteBody"),
            FormError::Anonymous | FormError::Expired | FormError::Condition(_) => (403, "AccessDenied"),
            FormError::BadPolicy(_) => (400, "InvalidPolicyDocument"),
            FormError::TooLarge { .. } => (400, "EntityTooLarge"),
        }
    }
}

/// The fields of a form, up to its file part.
#[derive(Debug, Default, PartialEq, Eq)]
struct Fields {
    /// Names lowercased (as s3s does), in order.
    fields: Vec<(String, String)>,
    /// Where the file's bytes start in the buffer.
    file_start: usize,
}

impl Fields {
    fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Checks a form upload's fields (see the module comment) and gives back the
/// request with an unchanged body. `url_bucket`: the bucket the request names
/// (path or virtual host); `post_max`: `--post-max-size`.
pub async fn precheck<B>(
    req: http::Request<B>,
    url_bucket: Option<&str>,
    post_max: u64,
) -> Result<http::Request<Prefixed<B>>, FormError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let boundary = boundary_of(req.headers()).ok_or(FormError::Malformed("no boundary in Content-Type"))?;
    let declared: Option<u64> =
        req.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    let (parts, mut body) = req.into_parts();
    let mut buf = BytesMut::new();
    let read = async {
        loop {
            if let Some(fields) = parse_fields(&buf, boundary.as_bytes())? {
                // All of them may have come in one frame.
                if fields.file_start > MAX_FORM_FIELDS {
                    return Err(FormError::FieldsTooLarge);
                }
                return Ok(fields);
            }
            if buf.len() > MAX_FORM_FIELDS {
                return Err(FormError::FieldsTooLarge);
            }
            match body.frame().await {
                None => return Err(FormError::Malformed("the body ends before the file field")),
                Some(Err(e)) => return Err(FormError::Body(e.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                    }
                }
            }
        }
    };
    let fields = match tokio::time::timeout(FIELDS_DEADLINE, read).await {
        Ok(r) => r?,
        Err(_) => return Err(FormError::FieldsTimeout),
    };
    check(&fields, url_bucket, post_max, declared, time::OffsetDateTime::now_utc())?;
    let prefix = buf.freeze();
    Ok(http::Request::from_parts(parts, Prefixed { prefix: (!prefix.is_empty()).then_some(prefix), inner: body }))
}

/// The checks of step 2 (module comment).
fn check(
    fields: &Fields,
    url_bucket: Option<&str>,
    post_max: u64,
    declared: Option<u64>,
    now: time::OffsetDateTime,
) -> Result<(), FormError> {
    if fields.get("x-amz-signature").is_none() && fields.get("signature").is_none() {
        return Err(FormError::Anonymous);
    }
    let policy = fields.get("policy").ok_or_else(|| FormError::BadPolicy("the form has no policy field".into()))?;
    let policy = PostPolicy::from_base64(policy).map_err(|e| FormError::BadPolicy(e.to_string()))?;
    let expiration: time::OffsetDateTime = policy.expiration.clone().into();
    if now >= expiration {
        return Err(FormError::Expired);
    }
    let mut max = post_max;
    for c in &policy.conditions {
        let (field, ok) = match c {
            PostPolicyCondition::ContentLengthRange { max: m, .. } => {
                max = max.min(*m);
                continue;
            }
            PostPolicyCondition::Eq { field, value } => {
                (field, value_of(fields, field, url_bucket)?.is_none_or(|v| v == value.as_str()))
            }
            PostPolicyCondition::StartsWith { field, prefix } => {
                (field, value_of(fields, field, url_bucket)?.is_none_or(|v| v.starts_with(prefix.as_str())))
            }
        };
        if !ok {
            return Err(FormError::Condition(format!("the {field} field")));
        }
    }
    if let Some(len) = declared {
        let most = (fields.file_start as u64).saturating_add(max).saturating_add(FORM_TAIL);
        if len > most {
            return Err(FormError::TooLarge { max });
        }
    }
    Ok(())
}

/// The value a `bucket` or `key` condition is checked against (as s3s does:
/// the URL's bucket wins, and a different `bucket` field is refused);
/// `None` for every other field: those are left to s3s.
fn value_of<'a>(fields: &'a Fields, field: &str, url_bucket: Option<&'a str>) -> Result<Option<&'a str>, FormError> {
    match field {
        "bucket" => match (url_bucket, fields.get("bucket")) {
            (Some(u), Some(f)) if u != f => Err(FormError::Condition("the bucket field (not the URL's bucket)".into())),
            (Some(u), _) => Ok(Some(u)),
            (None, f) => Ok(Some(f.unwrap_or(""))),
        },
        "key" => Ok(Some(fields.get("key").unwrap_or(""))),
        _ => Ok(None),
    }
}

/// The `boundary` parameter of a `multipart/form-data` Content-Type.
fn boundary_of(h: &http::HeaderMap) -> Option<String> {
    let ct = h.get(http::header::CONTENT_TYPE)?.to_str().ok()?;
    ct.split(';')
        .skip(1)
        .find_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"').to_string())
        })
        .filter(|b| !b.is_empty() && b.len() <= 200)
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from > hay.len() {
        return None;
    }
    hay[from..].windows(needle.len()).position(|w| w == needle).map(|i| i + from)
}

/// Parses the fields up to the file part's headers. `Ok(None)`: more bytes
/// are needed.
fn parse_fields(buf: &[u8], boundary: &[u8]) -> Result<Option<Fields>, FormError> {
    let mut delim = b"--".to_vec();
    delim.extend_from_slice(boundary);
    // The first delimiter starts the body or a line (after a preamble).
    let mut pos = if buf.starts_with(&delim) {
        0
    } else {
        let mut crlf_delim = b"\r\n".to_vec();
        crlf_delim.extend_from_slice(&delim);
        match find(buf, &crlf_delim, 0) {
            Some(p) => p + 2,
            None => return Ok(None),
        }
    };
    let mut fields = Vec::new();
    loop {
        pos += delim.len();
        let Some(after) = buf.get(pos..pos + 2) else { return Ok(None) };
        match after {
            b"\r\n" => pos += 2,
            b"--" => return Err(FormError::Malformed("the form has no file field")),
            _ => return Err(FormError::Malformed("a boundary line is not followed by CRLF")),
        }
        let Some(headers_end) = find(buf, b"\r\n\r\n", pos) else { return Ok(None) };
        let headers = std::str::from_utf8(&buf[pos..headers_end])
            .map_err(|_| FormError::Malformed("a part's headers are not UTF-8"))?;
        let name = headers
            .split("\r\n")
            .find_map(|line| {
                let (k, v) = line.split_once(':')?;
                if !k.trim().eq_ignore_ascii_case("content-disposition") {
                    return None;
                }
                v.split(';').find_map(|p| {
                    let (pk, pv) = p.trim().split_once('=')?;
                    pk.trim().eq_ignore_ascii_case("name").then(|| pv.trim().trim_matches('"').to_ascii_lowercase())
                })
            })
            .ok_or(FormError::Malformed("a part has no Content-Disposition name"))?;
        let value_start = headers_end + 4;
        if name == "file" {
            return Ok(Some(Fields { fields, file_start: value_start }));
        }
        let mut crlf_delim = b"\r\n".to_vec();
        crlf_delim.extend_from_slice(&delim);
        let Some(value_end) = find(buf, &crlf_delim, value_start) else { return Ok(None) };
        let value = std::str::from_utf8(&buf[value_start..value_end])
            .map_err(|_| FormError::Malformed("a field's value is not UTF-8"))?;
        fields.push((name, value.to_string()));
        pos = value_end + 2;
    }
}

/// A body with bytes already read put back in front of it.
pub struct Prefixed<B> {
    prefix: Option<Bytes>,
    inner: B,
}

impl<B> Body for Prefixed<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if let Some(p) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(p))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut h = self.inner.size_hint();
        let n = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        h.set_lower(h.lower().saturating_add(n));
        if let Some(u) = h.upper() {
            h.set_upper(u.saturating_add(n));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use http_body_util::{Full, StreamBody};

    fn form(parts: &[(&str, &str)], file: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        for (k, v) in parts {
            b.extend_from_slice(
                format!("--XyZ\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").as_bytes(),
            );
        }
        b.extend_from_slice(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\n",
        );
        b.extend_from_slice(file);
        b.extend_from_slice(b"\r\n--XyZ--\r\n");
        b
    }

    fn policy(expiration: &str, conditions: &str) -> String {
        base64::engine::general_purpose::STANDARD
            .encode(format!("{{\"expiration\":\"{expiration}\",\"conditions\":[{conditions}]}}"))
    }

    fn request(body: Vec<u8>) -> http::Request<Full<Bytes>> {
        http::Request::builder()
            .method("POST")
            .uri("/b")
            .header("content-type", "multipart/form-data; boundary=XyZ")
            .header("content-length", body.len())
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    }

    #[test]
    fn fields_are_parsed_up_to_the_file_and_need_all_their_bytes() {
        let body = form(&[("Key", "k/${filename}"), ("policy", "p")], b"DATA");
        let f = parse_fields(&body, b"XyZ").unwrap().unwrap();
        assert_eq!(f.fields, [("key".to_string(), "k/${filename}".to_string()), ("policy".into(), "p".into())]);
        assert_eq!(&body[f.file_start..f.file_start + 4], b"DATA");
        for cut in 0..f.file_start {
            assert_eq!(parse_fields(&body[..cut], b"XyZ").unwrap(), None, "cut at {cut}");
        }
        let mut preamble = b"ignored\r\n".to_vec();
        preamble.extend_from_slice(&body);
        assert_eq!(parse_fields(&preamble, b"XyZ").unwrap().unwrap().fields.len(), 2);
        let no_file = b"--XyZ\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nv\r\n--XyZ--\r\n";
        assert!(matches!(parse_fields(no_file, b"XyZ"), Err(FormError::Malformed(_))));
    }

    #[tokio::test]
    async fn a_good_form_passes_with_its_body_unchanged() {
        let p = policy(
            "2999-01-01T00:00:00Z",
            r#"{"bucket":"b"},["starts-with","$key","up/"],["content-length-range",0,100]"#,
        );
        let body = form(&[("key", "up/x"), ("policy", &p), ("x-amz-signature", "s")], b"DATA");
        let req = precheck(request(body.clone()), Some("b"), 32 << 20).await.unwrap();
        let got = req.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(got, body);
    }

    #[tokio::test]
    async fn refusals_come_before_the_file() {
        let future = "2999-01-01T00:00:00Z";
        let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
            (vec![("key", "x".into())], "AccessDenied"),
            (vec![("key", "x".into()), ("x-amz-signature", "s".into())], "InvalidPolicyDocument"),
            (vec![("policy", policy("2000-01-01T00:00:00Z", "")), ("x-amz-signature", "s".into())], "AccessDenied"),
            (
                vec![("policy", policy(future, r#"{"bucket":"other"}"#)), ("x-amz-signature", "s".into())],
                "AccessDenied",
            ),
            (
                vec![
                    ("key", "elsewhere/x".into()),
                    ("policy", policy(future, r#"["starts-with","$key","up/"]"#)),
                    ("x-amz-signature", "s".into()),
                ],
                "AccessDenied",
            ),
            (
                vec![("policy", policy(future, r#"["content-length-range",0,10]"#)), ("signature", "s".into())],
                "EntityTooLarge",
            ),
        ];
        for (fields, code) in cases {
            let refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let mut body = form(&refs, b"");
            // The file never comes: a stream that ends with an error after the
            // fields, and a declared length of a large file.
            let file_start = body.len() - b"\r\n--XyZ--\r\n".len();
            body.truncate(file_start);
            let frames: Vec<Result<Frame<Bytes>, std::io::Error>> =
                vec![Ok(Frame::data(Bytes::from(body))), Err(std::io::Error::other("the file was read"))];
            let req = http::Request::builder()
                .method("POST")
                .uri("/b")
                .header("content-type", "multipart/form-data; boundary=\"XyZ\"")
                .header("content-length", 1u64 << 30)
                .body(StreamBody::new(futures::stream::iter(frames)))
                .unwrap();
            let e = precheck(req, Some("b"), 32 << 20).await.err().expect("refused");
            assert_eq!(e.s3().1, code, "{e}");
        }
    }

    #[tokio::test]
    async fn fields_are_bounded() {
        let big = "v".repeat(MAX_FORM_FIELDS + 10);
        let body = form(&[("x-amz-meta-a", &big), ("x-amz-signature", "s")], b"");
        let e = precheck(request(body), Some("b"), 32 << 20).await.err().unwrap();
        assert_eq!(e.s3().1, "MalformedPOSTRequest");
    }
}
