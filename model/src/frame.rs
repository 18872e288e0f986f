//! Block frames: how shard blocks travel between gateway and node and how they
//! sit in a shard file. A frame is `[len: u32 LE][blake3(data): 32 bytes][data]`.
//! The hash is computed once, where the block is made (the gateway's encoder),
//! checked by the node before it stores the block, stored with it, checked again
//! by the node before it serves it, and once more by the reader.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

pub const FRAME_HEADER_LEN: usize = 4 + 32;
/// No block is larger than this (a stripe of 64 MiB over k=4 is 16 MiB).
pub const MAX_BLOCK_LEN: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub hash: [u8; 32],
    pub data: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("block of {0} bytes is larger than the {MAX_BLOCK_LEN}-byte limit")]
    TooLarge(usize),
    #[error("block hash mismatch: the block is corrupt")]
    HashMismatch,
    #[error("stream ended inside a frame ({0} bytes left over)")]
    Truncated(usize),
}

impl Frame {
    /// Hashes `data` and wraps it.
    pub fn new(data: Bytes) -> Self {
        Frame { hash: *blake3::hash(&data).as_bytes(), data }
    }

    pub fn verify(&self) -> Result<(), FrameError> {
        if blake3::hash(&self.data).as_bytes() == &self.hash { Ok(()) } else { Err(FrameError::HashMismatch) }
    }

    /// The frame's header bytes (length and hash); the data follows as is.
    pub fn header(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut h = [0u8; FRAME_HEADER_LEN];
        h[..4].copy_from_slice(&(self.data.len() as u32).to_le_bytes());
        h[4..].copy_from_slice(&self.hash);
        h
    }

    pub fn encoded_len(&self) -> usize {
        FRAME_HEADER_LEN + self.data.len()
    }
}

/// The digest of a sequence of frames: blake3 over their hashes, in order.
/// Each hash covers its block, so this covers the whole sequence and costs
/// one small hash per frame; a shard upload's body seal is made from it
/// (`sillok_rpc::auth::BodySeal`).
#[derive(Default, Clone)]
pub struct FrameDigest(blake3::Hasher);

impl FrameDigest {
    pub fn add(&mut self, frame: &Frame) {
        self.0.update(&frame.hash);
    }

    pub fn digest(&self) -> [u8; 32] {
        *self.0.finalize().as_bytes()
    }
}

/// Cuts a byte stream back into frames. Feed chunks with [`push`](Self::push),
/// take frames with [`next_frame`](Self::next_frame); hashes are verified here.
///
/// Received chunks are kept as they arrived (`Bytes` share the buffer they
/// were read into), and a frame whose data lies within one chunk is handed
/// out as a slice of it: no copy. Only a frame whose data spans chunks is
/// gathered into a buffer of its own.
#[derive(Default)]
pub struct FrameDecoder {
    /// Bytes received and not yet cut into frames, oldest first; none empty.
    chunks: VecDeque<Bytes>,
    /// Their total length.
    len: usize,
}

impl FrameDecoder {
    /// Takes a received chunk as it is.
    pub fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    /// Takes a received chunk by copying it.
    pub fn push_slice(&mut self, chunk: &[u8]) {
        self.push(Bytes::copy_from_slice(chunk));
    }

    /// The next whole, verified frame, or `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.len < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let mut header = [0u8; FRAME_HEADER_LEN];
        self.peek(&mut header);
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_BLOCK_LEN {
            return Err(FrameError::TooLarge(len));
        }
        if self.len < FRAME_HEADER_LEN + len {
            return Ok(None);
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&header[4..]);
        drop(self.take(FRAME_HEADER_LEN));
        let frame = Frame { hash, data: self.take(len) };
        frame.verify()?;
        Ok(Some(frame))
    }

    /// Call at end of stream: an error if a partial frame is left.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.len == 0 { Ok(()) } else { Err(FrameError::Truncated(self.len)) }
    }

    /// Copies the first `out.len()` bytes (held: the caller checked) into `out`.
    fn peek(&self, out: &mut [u8]) {
        let mut filled = 0;
        for c in &self.chunks {
            let n = (out.len() - filled).min(c.len());
            out[filled..filled + n].copy_from_slice(&c[..n]);
            filled += n;
            if filled == out.len() {
                return;
            }
        }
    }

    /// Removes the first `n` bytes (held: the caller checked) and returns
    /// them: a slice of the first chunk if it holds them all, else a copy.
    fn take(&mut self, n: usize) -> Bytes {
        if n == 0 {
            return Bytes::new(); // an empty block may end the stream: no chunk is left
        }
        self.len -= n;
        let front = self.chunks.front_mut().expect("the caller checked the length");
        if front.len() >= n {
            let out = front.split_to(n);
            if front.is_empty() {
                self.chunks.pop_front();
            }
            return out;
        }
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            let front = self.chunks.front_mut().expect("the caller checked the length");
            let want = (n - out.len()).min(front.len());
            out.extend_from_slice(&front[..want]);
            front.advance(want);
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_odd_chunks_and_detect_corruption() {
        let frames: Vec<Frame> = (0..5).map(|i| Frame::new(Bytes::from(vec![i as u8; 1000 + i]))).collect();
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend_from_slice(&f.header());
            wire.extend_from_slice(&f.data);
        }
        let mut d = FrameDecoder::default();
        let mut got = Vec::new();
        for chunk in wire.chunks(7) {
            d.push_slice(chunk);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        d.finish().unwrap();
        assert_eq!(got, frames);

        wire[FRAME_HEADER_LEN + 10] ^= 1;
        let mut d = FrameDecoder::default();
        d.push_slice(&wire);
        assert_eq!(d.next_frame(), Err(FrameError::HashMismatch));
    }

    #[test]
    fn a_frame_within_one_chunk_is_not_copied() {
        let frames: Vec<Frame> = (0..3).map(|i| Frame::new(Bytes::from(vec![i as u8; 500]))).collect();
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend_from_slice(&f.header());
            wire.extend_from_slice(&f.data);
        }
        let wire = Bytes::from(wire);
        let inside = |b: &Bytes| wire.as_ptr_range().contains(&b.as_ptr());
        // The first two frames in one chunk, the third split over two.
        let cut = 2 * (FRAME_HEADER_LEN + 500) + FRAME_HEADER_LEN + 100;
        let mut d = FrameDecoder::default();
        d.push(wire.slice(..cut));
        let a = d.next_frame().unwrap().unwrap();
        let b = d.next_frame().unwrap().unwrap();
        assert!(inside(&a.data) && inside(&b.data));
        assert_eq!(d.next_frame(), Ok(None));
        d.push(wire.slice(cut..));
        let c = d.next_frame().unwrap().unwrap();
        assert!(!inside(&c.data), "a frame over two chunks is gathered into its own buffer");
        assert_eq!(vec![a, b, c], frames);
        d.finish().unwrap();
    }

    #[test]
    fn an_empty_block_at_the_end_of_the_stream() {
        let empty = Frame::new(Bytes::new());
        let mut d = FrameDecoder::default();
        d.push_slice(&empty.header());
        assert_eq!(d.next_frame(), Ok(Some(empty)));
        assert_eq!(d.next_frame(), Ok(None));
        d.finish().unwrap();
    }

    #[test]
    fn huge_length_is_refused_before_allocating() {
        let mut d = FrameDecoder::default();
        d.push_slice(&u32::MAX.to_le_bytes());
        d.push_slice(&[0u8; 32]);
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge(u32::MAX as usize)));
    }
}
