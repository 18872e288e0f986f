//! Per-byte digest kernels a PUT/GET pays for: blake3 (block hashes), MD5 (the
//! S3 ETag), SHA-256 (signed payloads, x-amz-checksum-sha256) and CRC32
//! (x-amz-checksum-crc32, the SDKs' default trailing checksum).
//!
//! Run: `cargo bench -p sillok-benches --bench digests`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use md5::Digest as _;

const SIZES: [(usize, &str); 2] = [(64 * 1024, "64KiB"), (1024 * 1024, "1MiB")];

fn buffer(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x0123_4567_89ab_cdef;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        v.extend_from_slice(&(x >> 11).to_le_bytes());
    }
    v.truncate(len);
    v
}

fn digests(c: &mut Criterion) {
    let mut g = c.benchmark_group("digest");
    for (len, label) in SIZES {
        let buf = buffer(len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::new("blake3", label), &buf, |b, buf| {
            b.iter(|| black_box(blake3::hash(black_box(buf))))
        });
        g.bench_with_input(BenchmarkId::new("md5", label), &buf, |b, buf| {
            b.iter(|| black_box(md5::Md5::digest(black_box(buf))))
        });
        g.bench_with_input(BenchmarkId::new("sha256", label), &buf, |b, buf| {
            b.iter(|| black_box(sha2::Sha256::digest(black_box(buf))))
        });
        g.bench_with_input(BenchmarkId::new("crc32", label), &buf, |b, buf| {
            b.iter(|| black_box(crc32fast::hash(black_box(buf))))
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(15)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = digests }
criterion_main!(benches);
