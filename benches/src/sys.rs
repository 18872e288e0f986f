//! Things measured on this machine beside the load: the endpoint processes'
//! memory (from /proc) and the raw codec and digest kernels.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use md5::Digest as _;
use sillok_model::codec::Codec;

/// Reads a `kB` field (VmRSS, VmHWM...) of /proc/PID/status.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

pub fn check_pids(pids: &[u32]) -> anyhow::Result<()> {
    for &pid in pids {
        if status_kib(pid, "VmRSS").is_none() {
            bail!("--pid {pid}: cannot read VmRSS from /proc/{pid}/status (no such process, or a kernel thread)");
        }
    }
    Ok(())
}

#[derive(Clone, Debug, Default)]
pub struct RssReport {
    pub pid: u32,
    pub start_kib: u64,
    pub peak_kib: u64,
    pub end_kib: Option<u64>,
    /// VmHWM at the end: the kernel's own peak over the process's lifetime.
    pub hwm_kib: Option<u64>,
    pub samples: u64,
}

pub struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<(Vec<RssReport>, u64)>,
}

impl RssSampler {
    /// Samples VmRSS of every pid every 100 ms until `finish`.
    pub fn start(pids: Vec<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = tokio::spawn(async move {
            let mut reports: Vec<RssReport> = pids
                .iter()
                .map(|&pid| {
                    let start = status_kib(pid, "VmRSS").unwrap_or(0);
                    RssReport { pid, start_kib: start, peak_kib: start, ..Default::default() }
                })
                .collect();
            let mut peak_sum = reports.iter().map(|r| r.start_kib).sum::<u64>();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while !stop2.load(Ordering::Relaxed) {
                tick.tick().await;
                let mut sum = 0;
                for r in reports.iter_mut() {
                    if let Some(kib) = status_kib(r.pid, "VmRSS") {
                        r.peak_kib = r.peak_kib.max(kib);
                        r.samples += 1;
                        sum += kib;
                    }
                }
                peak_sum = peak_sum.max(sum);
            }
            for r in reports.iter_mut() {
                r.end_kib = status_kib(r.pid, "VmRSS");
                r.hwm_kib = status_kib(r.pid, "VmHWM");
            }
            (reports, peak_sum)
        });
        RssSampler { stop, handle }
    }

    /// Per-process reports and the peak of the sampled sum over all of them.
    pub async fn finish(self) -> (Vec<RssReport>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.unwrap_or_default()
    }
}

/// Single-core kernel throughput in MiB/s over 1 MiB buffers.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    pub encode_4_2: f64,
    pub blake3: f64,
    pub md5: f64,
}

impl Kernel {
    /// Per-core MiB/s of object data a PUT pays on the kernels alone: MD5 of
    /// the body, 4+2 encode, blake3 over the 1.5x bytes of all six blocks.
    pub fn put_chain(&self) -> f64 {
        1.0 / (1.0 / self.md5 + 1.0 / self.encode_4_2 + 1.5 / self.blake3)
    }

    /// Per-core MiB/s a healthy GET pays: blake3 over the k data blocks.
    pub fn get_chain(&self) -> f64 {
        self.blake3
    }
}

fn rate(bytes_per_iter: usize, budget: Duration, mut f: impl FnMut()) -> f64 {
    // Warm up, then time whole iterations until the budget is spent.
    f();
    let start = Instant::now();
    let mut iters = 0u64;
    while start.elapsed() < budget {
        f();
        iters += 1;
    }
    (iters as f64 * bytes_per_iter as f64) / (1024.0 * 1024.0) / start.elapsed().as_secs_f64()
}

/// Measures the kernels in the calling thread (~2 s encode, ~1 s per digest).
pub fn measure_kernel() -> anyhow::Result<Kernel> {
    const LEN: usize = 1 << 20;
    let data = crate::data::generate(0x5eed, 0, LEN);
    let codec = Codec::new(4, 2).context("codec 4+2")?;
    let mut failed = None;
    let encode_4_2 = rate(LEN, Duration::from_secs(2), || {
        if let Err(e) = codec.encode(std::hint::black_box(Bytes::clone(&data))) {
            failed = Some(e);
        }
    });
    if let Some(e) = failed {
        bail!("codec encode failed: {e}");
    }
    let blake3 = rate(LEN, Duration::from_secs(1), || {
        std::hint::black_box(blake3::hash(std::hint::black_box(&data)));
    });
    let md5 = rate(LEN, Duration::from_secs(1), || {
        std::hint::black_box(md5::Md5::digest(std::hint::black_box(&data)));
    });
    Ok(Kernel { encode_4_2, blake3, md5 })
}
