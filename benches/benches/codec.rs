//! Erasure-codec kernels: encode and degraded reconstruct for the profiles
//! Sillok ships (4+2, 8+4) over stripe sizes from 64 KiB to 8 MiB.
//!
//! Throughput is reported in bytes of *stripe* (object data) per second, so the
//! figures compare directly with end-to-end PUT/GET MiB/s from `loadgen`.
//!
//! `encode-raw` calls reed-solomon-erasure directly with preallocated parity
//! buffers: the kernel alone, without `Codec::encode`'s per-stripe parity
//! allocation, so the two together show what that allocation costs.
//!
//! Run: `cargo bench -p sillok-benches --bench codec` (filters work, e.g.
//! `-- 'encode/4\+2'`; add `--quick` for a faster, rougher pass).

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sillok_model::codec::Codec;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
const STRIPES: [usize; 5] = [64 * KIB, 256 * KIB, MIB, 4 * MIB, 8 * MIB];
/// (k, m, how many data blocks are lost before reconstruct_data)
const PROFILES: [(usize, usize, usize); 2] = [(4, 2, 2), (8, 4, 4)];

/// Deterministic, incompressible-looking stripe contents.
fn stripe(len: usize) -> Bytes {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

fn size_label(len: usize) -> String {
    if len >= MIB { format!("{}MiB", len / MIB) } else { format!("{}KiB", len / KIB) }
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for (k, m, _) in PROFILES {
        let codec = Codec::new(k, m).expect("codec");
        for len in STRIPES {
            let data = stripe(len);
            g.throughput(Throughput::Bytes(len as u64));
            g.bench_with_input(BenchmarkId::new(format!("{k}+{m}"), size_label(len)), &data, |b, data| {
                b.iter(|| black_box(codec.encode(black_box(data.clone())).expect("encode")))
            });
        }
    }
    g.finish();
}

fn encode_raw(c: &mut Criterion) {
    use reed_solomon_erasure::galois_8::ReedSolomon;
    let mut g = c.benchmark_group("encode-raw");
    for (k, m, _) in PROFILES {
        let rs = ReedSolomon::new(k, m).expect("rs");
        for len in STRIPES {
            let data = stripe(len);
            let bl = len / k;
            let blocks: Vec<&[u8]> = (0..k).map(|i| &data[i * bl..(i + 1) * bl]).collect();
            let mut parity = vec![vec![0u8; bl]; m];
            g.throughput(Throughput::Bytes(len as u64));
            g.bench_function(BenchmarkId::new(format!("{k}+{m}"), size_label(len)), |b| {
                b.iter(|| rs.encode_sep(black_box(&blocks), black_box(&mut parity)).expect("encode"))
            });
        }
    }
    g.finish();
}

fn reconstruct(c: &mut Criterion) {
    let mut g = c.benchmark_group("reconstruct");
    for (k, m, lost) in PROFILES {
        let codec = Codec::new(k, m).expect("codec");
        for len in STRIPES {
            let data = stripe(len);
            let encoded = codec.encode(data.clone()).expect("encode");
            // Present blocks are set up once; each iteration drops the first
            // `lost` data blocks and rebuilds them (the rebuilt blocks are
            // freshly allocated by the codec, as on a real degraded read).
            let mut blocks: Vec<Option<Vec<u8>>> = encoded.iter().map(|b| Some(b.to_vec())).collect();
            // Sanity: the rebuilt data equals the original.
            for b in blocks.iter_mut().take(lost) {
                *b = None;
            }
            codec.reconstruct_data(&mut blocks).expect("reconstruct");
            let joined: Vec<u8> = blocks[..k].iter().flat_map(|b| b.as_ref().unwrap().iter().copied()).collect();
            assert_eq!(&joined[..len], &data[..], "reconstructed data differs");

            g.throughput(Throughput::Bytes(len as u64));
            let id = BenchmarkId::new(format!("{k}+{m}-lose{lost}"), size_label(len));
            g.bench_function(id, |b| {
                b.iter(|| {
                    for blk in blocks.iter_mut().take(lost) {
                        *blk = None;
                    }
                    codec.reconstruct_data(black_box(&mut blocks)).expect("reconstruct");
                })
            });
        }
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = encode, encode_raw, reconstruct }
criterion_main!(benches);
