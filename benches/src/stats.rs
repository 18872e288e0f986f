//! Latency histograms and per-row counters.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Log-linear histogram of microseconds: exact below 64 µs, then 64 sub-buckets
/// per power of two (relative error < 1.6%). Fixed size, so memory does not grow
/// with the number of operations.
#[derive(Clone)]
pub struct Hist {
    counts: Vec<u64>,
    n: u64,
    max_us: u64,
}

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
const MAX_EXP: u32 = 42; // ~50 days in µs

impl Default for Hist {
    fn default() -> Self {
        Hist { counts: vec![0; (SUB + (MAX_EXP - SUB_BITS + 1) as u64 * SUB) as usize], n: 0, max_us: 0 }
    }
}

fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let e = (63 - v.leading_zeros()).min(MAX_EXP);
    let sub = (v >> (e - SUB_BITS)) & (SUB - 1);
    (SUB + (e - SUB_BITS) as u64 * SUB + sub) as usize
}

/// Midpoint of the values that land in bucket `i`.
fn value(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let e = (i - SUB) / SUB + SUB_BITS as u64;
    let sub = (i - SUB) % SUB;
    let lo = (SUB + sub) << (e - SUB_BITS as u64);
    let width = 1u64 << (e - SUB_BITS as u64);
    lo + width / 2
}

impl Hist {
    pub fn record(&mut self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        self.counts[index(us)] += 1;
        self.n += 1;
        self.max_us = self.max_us.max(us);
    }

    pub fn merge(&mut self, o: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += *b;
        }
        self.n += o.n;
        self.max_us = self.max_us.max(o.max_us);
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    /// The q-quantile (0..=1) in milliseconds; 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return value(i).min(self.max_us) as f64 / 1000.0;
            }
        }
        self.max_us as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.max_us as f64 / 1000.0
    }
}

pub const MAX_ERROR_SAMPLES: usize = 5;

#[derive(Clone, Default)]
pub struct Row {
    pub ops: u64,
    pub bytes: u64,
    pub errors: u64,
    /// Operations not issued because the object they needed was never written.
    pub skipped: u64,
    pub verify_failures: u64,
    pub hist: Hist,
    pub first_errors: Vec<String>,
}

impl Row {
    pub fn merge(&mut self, o: &Row) {
        self.ops += o.ops;
        self.bytes += o.bytes;
        self.errors += o.errors;
        self.skipped += o.skipped;
        self.verify_failures += o.verify_failures;
        self.hist.merge(&o.hist);
        for e in &o.first_errors {
            if self.first_errors.len() < MAX_ERROR_SAMPLES {
                self.first_errors.push(e.clone());
            }
        }
    }
}

/// A row is identified by (class, operation); both sort by their position in
/// the report, carried in the first tuple element.
pub type RowKey = ((u8, String), (u8, String));

#[derive(Default)]
pub struct Stats {
    rows: Mutex<BTreeMap<RowKey, Row>>,
}

pub enum Outcome {
    /// Completed; `bytes` of object data moved.
    Ok {
        bytes: u64,
    },
    /// Failed with a message (request error, timeout, wrong length...).
    Err(String),
    /// The body did not match what was written.
    Mismatch(String),
    Skipped,
}

impl Stats {
    pub fn record(&self, key: RowKey, latency: Duration, outcome: Outcome) {
        let mut rows = self.rows.lock().unwrap();
        let row = rows.entry(key).or_default();
        match outcome {
            Outcome::Ok { bytes } => {
                row.ops += 1;
                row.bytes += bytes;
                row.hist.record(latency);
            }
            Outcome::Err(msg) => {
                row.errors += 1;
                if row.first_errors.len() < MAX_ERROR_SAMPLES {
                    row.first_errors.push(msg);
                }
            }
            Outcome::Mismatch(msg) => {
                row.errors += 1;
                row.verify_failures += 1;
                // Mismatches always make it into the samples.
                if row.first_errors.len() >= MAX_ERROR_SAMPLES {
                    row.first_errors.pop();
                }
                row.first_errors.push(msg);
            }
            Outcome::Skipped => row.skipped += 1,
        }
    }

    pub fn snapshot(&self) -> BTreeMap<RowKey, Row> {
        self.rows.lock().unwrap().clone()
    }

    /// (completed ops, errors, verification failures) so far.
    pub fn totals(&self) -> (u64, u64, u64) {
        let rows = self.rows.lock().unwrap();
        rows.values().fold((0, 0, 0), |(a, b, c), r| (a + r.ops, b + r.errors, c + r.verify_failures))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_close() {
        let mut h = Hist::default();
        for us in 1..=100_000u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile_ms(0.5);
        let p99 = h.quantile_ms(0.99);
        assert!((p50 - 50.0).abs() / 50.0 < 0.02, "{p50}");
        assert!((p99 - 99.0).abs() / 99.0 < 0.02, "{p99}");
        assert_eq!(h.max_ms(), 100.0);
        for v in [0u64, 1, 63, 64, 65, 127, 128, 1000, 123_456_789] {
            let back = value(index(v));
            assert!(back.abs_diff(v) as f64 <= (v as f64 / 64.0).max(0.0) + 1.0, "{v} -> {back}");
        }
    }
}
