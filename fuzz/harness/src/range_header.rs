//! `range_header`: `s3s::dto::Range::parse` and `Range::check`.
//!
//! Input: an 8-byte object length (little endian), then the header value
//! (must be UTF-8). The range is checked against that length and against
//! 0, 1, length ± 1 and `u64::MAX`.
//!
//! Invariants, for every length `len`:
//! - a parsed range prints (`to_header_string`) as a header that parses back
//!   to the same range;
//! - `check(len)` succeeding returns `start <= end <= len`, and exactly the
//!   bytes RFC 9110 selects: `first..min(last + 1, len)` for `first-last`,
//!   `first..len` for `first-`, the last `min(n, len)` bytes for `-n`;
//! - `check(len)` fails exactly when `first >= len` (`first-` and
//!   `first-last`) or `n == 0` (`-n`).
//!
//! Note: `-n` (n > 0) against `len == 0` succeeds with the empty range
//! `0..0`. Callers that print `end - 1` (a Content-Range) must handle it.

use s3s::dto::Range;

use crate::Input;

/// Checks one parsed range against one length.
pub fn check_against(range: Range, len: u64) {
    let got = range.check(len);
    match range {
        Range::Int { first, last } => {
            if first >= len {
                assert!(got.is_err(), "{range:?} against {len}: {got:?}");
                return;
            }
            let end = match last {
                Some(last) => last.saturating_add(1).min(len),
                None => len,
            };
            let r = got.unwrap_or_else(|_| panic!("{range:?} against {len} refused"));
            assert_eq!(r, first..end, "{range:?} against {len}");
        }
        Range::Suffix { length } => {
            if length == 0 {
                assert!(got.is_err(), "{range:?} against {len}: {got:?}");
                return;
            }
            let r = got.unwrap_or_else(|_| panic!("{range:?} against {len} refused"));
            assert_eq!(r, len - length.min(len)..len, "{range:?} against {len}");
        }
    }
}

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let len = input.u64();
    let Ok(header) = std::str::from_utf8(input.rest()) else { return };
    let Ok(range) = Range::parse(header) else { return };
    let printed = range.to_header_string();
    match Range::parse(&printed) {
        Ok(again) => assert_eq!(again, range, "{header:?} printed as {printed:?}"),
        Err(e) => panic!("{header:?} printed as {printed:?}, which does not parse: {e}"),
    }
    for len in [len, 0, 1, len.wrapping_sub(1), len.wrapping_add(1), u64::MAX] {
        let r = range.check(len);
        if let Ok(r) = &r {
            assert!(r.start <= r.end && r.end <= len, "{header:?} against {len}: {r:?}");
        }
        check_against(range, len);
    }
}

/// An input (for seeds).
pub fn input(len: u64, header: &str) -> Vec<u8> {
    let mut v = len.to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_ranges() {
        for h in ["bytes=0-0", "bytes=0-", "bytes=-1", "bytes=5-9", "bytes=-0", "bytes=9223372036854775807-"] {
            for len in [0, 1, 10, u64::MAX] {
                run(&input(len, h));
            }
        }
        // The empty-object suffix case the note above warns about.
        assert_eq!(Range::parse("bytes=-5").unwrap().check(0).unwrap(), 0..0);
    }
}
