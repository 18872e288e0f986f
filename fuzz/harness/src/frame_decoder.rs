//! `frame_decoder`: the storage node's `FrameDecoder` on arbitrary streams.
//!
//! Input: a flag byte, a piece-size byte, then the wire bytes.
//! - flag bit 1: every frame's length field is first cut to `len % 256`
//!   (short frames, many per input);
//! - flag bit 0: every whole frame's hash is then rewritten to the blake3 of
//!   its data (so the fuzzer gets past the hash check), except that flag bit 2
//!   leaves the last whole frame's hash as it was;
//! - the piece-size byte picks the sizes of the pieces the wire is pushed in.
//!
//! Invariants:
//! - no frame whose blake3 does not match its hash, or longer than
//!   `MAX_BLOCK_LEN`, is ever returned;
//! - how the wire is cut into pieces makes no difference: the frames and the
//!   error (or the bytes left over at `finish`) are those of a plain reading
//!   of the whole wire.

use sillok_model::frame::{FRAME_HEADER_LEN, Frame, FrameDecoder, FrameError, MAX_BLOCK_LEN};

use crate::Input;

/// How a whole wire reads: its frames, then an error or the bytes left over.
#[derive(Debug, PartialEq, Eq)]
struct Reading {
    frames: Vec<Frame>,
    end: Result<usize, FrameError>,
}

fn frame_len(wire: &[u8], at: usize) -> Option<usize> {
    let field = wire.get(at..at + 4)?;
    Some(u32::from_le_bytes(field.try_into().expect("4 bytes")) as usize)
}

/// The reading of the whole wire, written from the frame format alone.
fn plain_reading(wire: &[u8]) -> Reading {
    let mut frames = Vec::new();
    let mut at = 0;
    while wire.len() - at >= FRAME_HEADER_LEN {
        let len = frame_len(wire, at).expect("header present");
        if len > MAX_BLOCK_LEN {
            return Reading { frames, end: Err(FrameError::TooLarge(len)) };
        }
        let Some(data) = wire.get(at + FRAME_HEADER_LEN..at + FRAME_HEADER_LEN + len) else { break };
        let hash: [u8; 32] = wire[at + 4..at + FRAME_HEADER_LEN].try_into().expect("32 bytes");
        if blake3::hash(data).as_bytes() != &hash {
            return Reading { frames, end: Err(FrameError::HashMismatch) };
        }
        frames.push(Frame { hash, data: bytes::Bytes::copy_from_slice(data) });
        at += FRAME_HEADER_LEN + len;
    }
    Reading { frames, end: Ok(wire.len() - at) }
}

/// Rewrites length fields and hashes as the flags say.
fn prepare(wire: &mut [u8], flags: u8) {
    let mut at = 0;
    let mut last_whole = None;
    while let Some(len) = frame_len(wire, at) {
        let len = if flags & 2 != 0 {
            let short = len % 256;
            wire[at..at + 4].copy_from_slice(&(short as u32).to_le_bytes());
            short
        } else {
            len
        };
        if len > MAX_BLOCK_LEN || wire.len() < at + FRAME_HEADER_LEN + len {
            break;
        }
        if flags & 1 != 0 {
            let hash = blake3::hash(&wire[at + FRAME_HEADER_LEN..at + FRAME_HEADER_LEN + len]);
            let old: [u8; 32] = wire[at + 4..at + FRAME_HEADER_LEN].try_into().expect("32 bytes");
            wire[at + 4..at + FRAME_HEADER_LEN].copy_from_slice(hash.as_bytes());
            last_whole = Some((at, old));
        }
        at += FRAME_HEADER_LEN + len;
    }
    if flags & 4 != 0
        && let Some((at, old)) = last_whole
    {
        wire[at + 4..at + FRAME_HEADER_LEN].copy_from_slice(&old);
    }
}

fn piece_sizes(selector: u8) -> impl Iterator<Item = usize> {
    let base = [1, 2, 3, 7, 35, 36, 37, 4096][usize::from(selector & 7)];
    let step = usize::from(selector >> 3);
    (0..).map(move |i: usize| base + (i * step) % 64)
}

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let selector = input.byte();
    let mut wire = input.rest().to_vec();
    prepare(&mut wire, flags);
    let expected = plain_reading(&wire);

    let mut decoder = FrameDecoder::default();
    let mut frames = Vec::new();
    let mut error = None;
    let mut rest = &wire[..];
    let mut sizes = piece_sizes(selector);
    'pieces: while !rest.is_empty() {
        let (piece, after) = rest.split_at(sizes.next().expect("endless").min(rest.len()));
        rest = after;
        decoder.push_slice(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.data.len() <= MAX_BLOCK_LEN, "a {}-byte block", frame.data.len());
                    assert_eq!(
                        blake3::hash(&frame.data).as_bytes(),
                        &frame.hash,
                        "a block that does not match its hash"
                    );
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break 'pieces;
                }
            }
        }
    }
    let end = match error {
        Some(e) => Err(e),
        None => match decoder.finish() {
            Ok(()) => Ok(0),
            Err(FrameError::Truncated(n)) => Ok(n),
            Err(e) => panic!("finish failed with {e:?}"),
        },
    };
    assert_eq!(Reading { frames, end }, expected, "pieces of sizes from selector {selector}");
}

/// An input (for seeds).
pub fn input(flags: u8, selector: u8, wire: &[u8]) -> Vec<u8> {
    let mut v = vec![flags, selector];
    v.extend_from_slice(wire);
    v
}

/// The wire form of frames holding `blocks`.
pub fn wire(blocks: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in blocks {
        let f = Frame::new(bytes::Bytes::copy_from_slice(b));
        out.extend_from_slice(&f.header());
        out.extend_from_slice(&f.data);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_reading_of_good_and_bad_wires() {
        let w = wire(&[b"abc", b"", b"defgh"]);
        let r = plain_reading(&w);
        assert_eq!((r.frames.len(), r.end), (3, Ok(0)));
        assert_eq!(plain_reading(&w[..w.len() - 1]).end, Ok(FRAME_HEADER_LEN + 4));
        let mut bad = w.clone();
        bad[FRAME_HEADER_LEN] ^= 1;
        assert_eq!(plain_reading(&bad).end, Err(FrameError::HashMismatch));
        for flags in 0..8 {
            for sel in [0, 1, 9, 200, 255] {
                run(&input(flags, sel, &w));
                run(&input(flags, sel, &bad));
            }
        }
    }
}
