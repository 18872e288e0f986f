//! What each of Sillok's fuzz targets does with one input.
//!
//! The cargo-fuzz crate in `fuzz/` (nightly flags, libFuzzer) and the stable
//! regression test in `tests/fuzz_regressions.rs` of this crate call the same
//! `run` functions, so an input that once crashed a target keeps being replayed
//! by `cargo test --workspace` after it is fixed. Each `run` panics exactly
//! when the input is a finding: the code under test panicked, or one of the
//! invariants stated in the module's documentation does not hold.
//!
//! - [`s3_request`]: an HTTP request through a real `s3s` service (SigV4 / V2
//!   header and query auth, aws-chunked bodies, POST forms, XML bodies).
//! - [`sigv4_node`]: the storage node's internal request signing and checking.
//! - [`range_header`]: `s3s::dto::Range` parsing and satisfiability.
//! - [`xml_bodies`]: s3s XML request bodies (CompleteMultipartUpload, Delete,
//!   CreateBucketConfiguration).
//! - [`frame_decoder`]: the storage node's block frame decoder.
//! - [`manifest_json`]: object manifests as JSON.
//! - [`manifest_binary`]: object manifests in their binary encoding.
//!
//! [`seeds`] builds the starting corpus (written to `fuzz/seeds/<target>/` by
//! `cargo run -p sillok-fuzz-harness --example write_seeds`).

pub mod frame_decoder;
pub mod manifest_binary;
pub mod manifest_json;
pub mod range_header;
pub mod s3_request;
pub mod seeds;
pub mod sigv4_node;
pub mod xml_bodies;

/// A target's entry point: runs one input, panics on a finding.
pub type Run = fn(&[u8]);

/// Every target: its name (the directory name under `fuzz/seeds` and
/// `fuzz/regressions`) and its entry point.
pub const TARGETS: [(&str, Run); 7] = [
    ("s3_request", s3_request::run),
    ("sigv4_node", sigv4_node::run),
    ("range_header", range_header::run),
    ("xml_bodies", xml_bodies::run),
    ("frame_decoder", frame_decoder::run),
    ("manifest_json", manifest_json::run),
    ("manifest_binary", manifest_binary::run),
];

/// Reads fixed-size values off the front of an input; missing bytes read as 0.
pub(crate) struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Input { rest: data }
    }

    pub(crate) fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((b, rest)) => {
                self.rest = rest;
                *b
            }
            None => 0,
        }
    }

    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    pub(crate) fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    pub(crate) fn rest(self) -> &'a [u8] {
        self.rest
    }
}

/// An HTTP/1-like request as text: `METHOD TARGET [VERSION]`, then
/// `Name: value` lines, an empty line, and the body (bytes to the end).
/// Lines end in `\n` or `\r\n`. Nothing is validated here.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RawRequest<'a> {
    pub method: &'a [u8],
    pub target: &'a [u8],
    pub headers: Vec<(&'a [u8], &'a [u8])>,
    pub body: &'a [u8],
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

impl<'a> RawRequest<'a> {
    pub fn parse(data: &'a [u8]) -> Self {
        let mut req = RawRequest::default();
        let mut rest = data;
        let mut first = true;
        loop {
            let (line, after) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &rest[rest.len()..]),
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            rest = after;
            if first {
                first = false;
                let mut words = line.splitn(3, |&b| b == b' ');
                req.method = words.next().unwrap_or_default();
                req.target = words.next().unwrap_or_default();
            } else if line.is_empty() {
                break;
            } else {
                let colon = line.iter().position(|&b| b == b':').unwrap_or(line.len());
                let value = line.get(colon + 1..).unwrap_or_default();
                req.headers.push((trim(&line[..colon]), trim(value)));
            }
            if rest.is_empty() {
                break;
            }
        }
        req.body = rest;
        req
    }

    /// The text form [`parse`](Self::parse) reads back (for seeds).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(self.method);
        out.push(b' ');
        out.extend_from_slice(self.target);
        out.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in &self.headers {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(self.body);
        out
    }

    /// The headers as an `http` map, skipping names or values `http` refuses
    /// (a real server would refuse the whole request; skipping gets further).
    pub fn header_map(&self) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in &self.headers {
            if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(name), http::HeaderValue::from_bytes(value)) {
                map.append(n, v);
            }
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_request_round_trip() {
        let text = b"PUT /b/k?x=1 HTTP/1.1\r\nHost: h:1\r\nx-amz-meta-a:  v \r\n\r\nbody\r\n\r\nmore";
        let r = RawRequest::parse(text);
        assert_eq!(r.method, b"PUT");
        assert_eq!(r.target, b"/b/k?x=1");
        assert_eq!(r.headers, vec![(&b"Host"[..], &b"h:1"[..]), (&b"x-amz-meta-a"[..], &b"v"[..])]);
        assert_eq!(r.body, b"body\r\n\r\nmore");
        assert_eq!(RawRequest::parse(&r.to_bytes()), r);
        let bare = RawRequest::parse(b"GET /");
        assert_eq!((bare.method, bare.target, bare.body), (&b"GET"[..], &b"/"[..], &b""[..]));
        assert_eq!(RawRequest::parse(b""), RawRequest::default());
    }

    #[test]
    fn input_reads_zero_past_the_end() {
        let mut i = Input::new(&[1, 2, 3]);
        assert_eq!(i.byte(), 1);
        assert_eq!(i.u32(), 2 | (3 << 8));
        assert_eq!(i.u64(), 0);
        assert!(i.rest().is_empty());
    }
}
