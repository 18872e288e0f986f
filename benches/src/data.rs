//! Object contents: a deterministic, random-access byte stream per object.
//!
//! Byte `i` of an object is byte `i % 8` (little endian) of
//! `mix(key + (i / 8 + 1) * GAMMA)`, where `key` is derived from the run seed
//! and the object's S3 key name. That is SplitMix64's output sequence, which can
//! be entered at any offset, so a ranged GET is checked by regenerating just
//! that range; nothing written is kept in memory.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
/// Size of each frame a streamed request body yields.
pub const CHUNK: usize = 64 * 1024;

#[inline(always)]
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[inline(always)]
fn word(key: u64, w: u64) -> [u8; 8] {
    mix(key.wrapping_add(w.wrapping_add(1).wrapping_mul(GAMMA))).to_le_bytes()
}

/// The content key of an object: a function of the seed and the key name.
pub fn content_key(seed: u64, name: &str) -> u64 {
    // FNV-1a over the name, then mixed with the seed.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(mix(seed ^ 0x51_11_0c_00) ^ h)
}

/// Writes bytes `[offset, offset + out.len())` of the object with `key` to `out`.
pub fn fill(key: u64, offset: u64, out: &mut [u8]) {
    let mut i = 0usize;
    let mut pos = offset;
    let head = (pos % 8) as usize;
    if head != 0 && !out.is_empty() {
        let w = word(key, pos / 8);
        let n = (8 - head).min(out.len());
        out[..n].copy_from_slice(&w[head..head + n]);
        i += n;
        pos += n as u64;
    }
    let mut w = pos / 8;
    let mut chunks = out[i..].chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&word(key, w));
        w += 1;
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let n = rest.len();
        rest.copy_from_slice(&word(key, w)[..n]);
    }
}

/// Bytes `[offset, offset + len)` of an object, in one buffer.
pub fn generate(key: u64, offset: u64, len: usize) -> Bytes {
    let mut v = vec![0u8; len];
    fill(key, offset, &mut v);
    Bytes::from(v)
}

/// A request body that generates `[start, end)` of an object in 64 KiB frames
/// as it is sent, so a large PUT holds at most a frame or two in memory.
pub struct GenBody {
    key: u64,
    pos: u64,
    end: u64,
}

impl GenBody {
    pub fn new(key: u64, start: u64, end: u64) -> Self {
        GenBody { key, pos: start, end }
    }
}

impl Body for GenBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.pos >= self.end {
            return Poll::Ready(None);
        }
        let n = ((self.end - self.pos) as usize).min(CHUNK);
        let bytes = generate(self.key, self.pos, n);
        self.pos += n as u64;
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.end
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.end.saturating_sub(self.pos))
    }
}

/// Checks a body that arrives in pieces against the expected bytes.
pub struct Verifier {
    key: u64,
    next: u64,
    end: u64,
    scratch: Vec<u8>,
    /// First mismatching absolute offset, if any.
    pub mismatch_at: Option<u64>,
}

impl Verifier {
    pub fn new(key: u64, start: u64, end: u64) -> Self {
        Verifier { key, next: start, end, scratch: Vec::new(), mismatch_at: None }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if self.mismatch_at.is_some() {
            self.next += chunk.len() as u64;
            return;
        }
        let in_range = (self.end.saturating_sub(self.next) as usize).min(chunk.len());
        self.scratch.resize(in_range, 0);
        fill(self.key, self.next, &mut self.scratch);
        if self.scratch[..] != chunk[..in_range] {
            let i = self.scratch.iter().zip(chunk).position(|(a, b)| a != b).unwrap_or(0);
            self.mismatch_at = Some(self.next + i as u64);
        } else if in_range < chunk.len() {
            // More bytes than the object/range holds.
            self.mismatch_at = Some(self.end);
        }
        self.next += chunk.len() as u64;
        // Keep the scratch buffer bounded even if a server sends huge frames.
        if self.scratch.capacity() > 4 * CHUNK {
            self.scratch = Vec::new();
        }
    }

    pub fn received(&self, start: u64) -> u64 {
        self.next - start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_offset_matches_the_whole_stream() {
        let key = content_key(7, "a/b");
        let whole = generate(key, 0, 1000);
        for start in [0usize, 1, 7, 8, 9, 15, 500, 993] {
            for len in [0usize, 1, 3, 8, 9, 17, 1000 - start] {
                let len = len.min(1000 - start);
                assert_eq!(&generate(key, start as u64, len)[..], &whole[start..start + len], "{start}+{len}");
            }
        }
        assert_ne!(generate(content_key(7, "a/c"), 0, 64), generate(key, 0, 64));
        assert_ne!(generate(content_key(8, "a/b"), 0, 64), generate(key, 0, 64));
    }

    #[test]
    fn verifier_finds_a_flipped_byte() {
        let key = content_key(1, "x");
        let mut body = generate(key, 100, 5000).to_vec();
        let mut v = Verifier::new(key, 100, 5100);
        for c in body.chunks(777) {
            v.feed(c);
        }
        assert_eq!(v.mismatch_at, None);
        assert_eq!(v.received(100), 5000);
        body[3001] ^= 1;
        let mut v = Verifier::new(key, 100, 5100);
        for c in body.chunks(777) {
            v.feed(c);
        }
        assert_eq!(v.mismatch_at, Some(3101));
    }
}
