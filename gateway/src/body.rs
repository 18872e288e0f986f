//! Request-body adapters applied before s3s sees a request.
//!
//! [`SmallFrames`] cuts every data frame of a body into pieces of at most
//! `max` bytes. Browser-form uploads (POST object, `multipart/form-data`)
//! go through it: s3s 0.14.1's form parser, when a frame ends with a byte
//! that could begin the boundary (a `\r`), appends the whole next frame to a
//! buffer capped at 64 KiB and fails the upload (`BoundaryBufferTooLarge`,
//! a 400) if the two exceed it, so whether a valid upload succeeded depended
//! on how the socket reads fell. With frames of at most 16 KiB the buffer
//! never gets near its cap. Invariant: the bytes and their order are
//! unchanged; only frame boundaries move.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// Frames of form uploads are cut to this size.
pub const FORM_FRAME: usize = 16 << 10;

pub struct SmallFrames<B> {
    inner: B,
    max: usize,
    rest: Bytes,
}

impl<B> SmallFrames<B> {
    pub fn new(inner: B, max: usize) -> Self {
        SmallFrames { inner, max: max.max(1), rest: Bytes::new() }
    }
}

impl<B> Body for SmallFrames<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        if !this.rest.is_empty() {
            let n = this.rest.len().min(this.max);
            return Poll::Ready(Some(Ok(Frame::data(this.rest.split_to(n)))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) if data.len() > this.max => {
                    this.rest = data.split_off(this.max);
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Ok(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                Err(other) => Poll::Ready(Some(Ok(other))),
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut h = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        h.set_lower(h.lower().saturating_add(rest));
        if let Some(u) = h.upper() {
            h.set_upper(u.saturating_add(rest));
        }
        h
    }
}

/// Whether a request is a browser-form upload (POST object).
pub fn is_form_upload<T>(req: &http::Request<T>) -> bool {
    req.method() == http::Method::POST
        && req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test]
    async fn frames_are_cut_and_the_bytes_kept() {
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::from(vec![b'\r'; 70_000]))),
            Ok(Frame::data(Bytes::from_static(b"tail"))),
            Ok(Frame::data(Bytes::new())),
        ];
        let body = SmallFrames::new(StreamBody::new(futures::stream::iter(frames)), FORM_FRAME);
        let mut body = std::pin::pin!(body);
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        while let Some(f) = body.frame().await {
            let d = f.unwrap().into_data().unwrap();
            sizes.push(d.len());
            got.extend_from_slice(&d);
        }
        assert!(sizes.iter().all(|s| *s <= FORM_FRAME), "{sizes:?}");
        assert_eq!(got.len(), 70_004);
        assert!(got[..70_000].iter().all(|b| *b == b'\r'));
        assert_eq!(&got[70_000..], b"tail");
    }
}
