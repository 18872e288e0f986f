//! Block frames: how shard blocks travel between gateway and node and how they
//! sit in a shard file. A frame is `[len: u32 LE][blake3(data): 32 bytes][data]`.
//! The hash is computed once, where the block is made (the gateway's encoder),
//! checked by the node before it stores the block, stored with it, checked again
//! by the node before it serves it, and once more by the reader.

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
#[derive(Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole, verified frame, or `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_le_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_BLOCK_LEN {
            return Err(FrameError::TooLarge(len));
        }
        if self.buf.len() < FRAME_HEADER_LEN + len {
            self.buf.reserve(FRAME_HEADER_LEN + len - self.buf.len());
            return Ok(None);
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&self.buf[4..FRAME_HEADER_LEN]);
        self.buf.advance(FRAME_HEADER_LEN);
        let data = self.buf.split_to(len).freeze();
        let frame = Frame { hash, data };
        frame.verify()?;
        Ok(Some(frame))
    }

    /// Call at end of stream: an error if a partial frame is left.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() { Ok(()) } else { Err(FrameError::Truncated(self.buf.len())) }
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
            d.push(chunk);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        d.finish().unwrap();
        assert_eq!(got, frames);

        wire[FRAME_HEADER_LEN + 10] ^= 1;
        let mut d = FrameDecoder::default();
        d.push(&wire);
        assert_eq!(d.next_frame(), Err(FrameError::HashMismatch));
    }

    #[test]
    fn huge_length_is_refused_before_allocating() {
        let mut d = FrameDecoder::default();
        d.push(&u32::MAX.to_le_bytes());
        d.push(&[0u8; 32]);
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge(u32::MAX as usize)));
    }
}
