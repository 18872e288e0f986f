//! `loadgen`: runs the chat-media workload of WORKLOAD.md (or a single-size
//! throughput run) against any S3 endpoint, checks every byte it reads back,
//! and reports per class and overall: ops/s, MiB/s, latency percentiles and
//! errors, optionally the endpoint's peak RSS and the raw kernel speeds.
//!
//! Exit status: 0 when every GET matched what was written, 1 when one did not
//! (or with `--strict`, when any request failed), 2 on a usage or setup error.

mod data;
mod s3;
mod stats;
mod sys;
mod workload;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};

use crate::s3::{Endpoint, S3};
use crate::stats::{Row, RowKey, Stats};
use crate::sys::{Kernel, RssReport, RssSampler};
use crate::workload::{Ctx, KIB, MIB, Mixed, MixedLimits, ObjectsOnly, OpKind};

/// Parses "64KiB", "1MiB", "1.5MiB", "64k", "8M", "1G", "1000", "100KB" (KB/MB/GB
/// are powers of 1000; K/KiB/M/MiB/G/GiB powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a size (e.g. 64KiB, 1MiB, 256MiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => KIB,
        "kb" => 1000,
        "m" | "mib" => MIB,
        "mb" => 1000 * 1000,
        "g" | "gib" => 1024 * MIB,
        "gb" => 1000 * 1000 * 1000,
        u => {
            return Err(format!("unknown size unit {u:?} in {s:?} (use B, KiB, MiB, GiB, KB, MB, GB)"));
        }
    };
    let v = (n * mult as f64).round();
    if !(v >= 1.0 && v <= (1u64 << 40) as f64) {
        return Err(format!("size {s:?} must be between 1 byte and 1 TiB"));
    }
    Ok(v as u64)
}

fn size_label(n: u64) -> String {
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{}MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{}KiB", n / KIB)
    } else {
        format!("{n}B")
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    about = "Sillok load generator: the chat-media workload (WORKLOAD.md) against any S3 endpoint",
    after_help = "Endpoint and keys come from the flags or from S3_ENDPOINT, AWS_ACCESS_KEY_ID, \
AWS_SECRET_ACCESS_KEY, AWS_REGION (what `sillok dev` writes to its cluster.env).\n\
Exit status: 0 ok, 1 a GET/HEAD did not match what was written (or --strict and errors), 2 setup error."
)]
struct Args {
    /// S3 endpoint URL, e.g. http://127.0.0.1:9000
    #[arg(long, env = "S3_ENDPOINT")]
    endpoint: Option<String>,
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    access_key: Option<String>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
    /// An https endpoint's CA certificate(s), PEM: trusted instead of the
    /// system's roots (`sillok dev --tls` writes it as AWS_CA_BUNDLE).
    #[arg(long, env = "AWS_CA_BUNDLE")]
    ca_bundle: Option<std::path::PathBuf>,
    /// Bucket to use; created if missing.
    #[arg(long, default_value = "loadgen")]
    bucket: String,
    /// Key prefix [default: lg-SEED/]
    #[arg(long)]
    prefix: Option<String>,
    /// Single size class (throughput curve): PUT --count objects, then GET them.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    objects_only: Option<u64>,
    /// --objects-only: number of objects [default: 1 GiB worth, 8..1000]
    #[arg(long)]
    count: Option<u64>,
    /// --objects-only: only the PUT phase.
    #[arg(long, conflicts_with = "gets_only")]
    puts_only: bool,
    /// --objects-only: only the GET phase, over objects 0..count written by an
    /// earlier run with the same --seed, --prefix and size (e.g. after a restart).
    #[arg(long)]
    gets_only: bool,
    /// --objects-only: a HEAD phase over the objects before the GET phase.
    #[arg(long)]
    heads: bool,
    /// Mixed workload: stop after this many operations.
    #[arg(long)]
    ops: Option<u64>,
    /// Time limit in seconds (mixed: the whole run [default 60 if --ops is not
    /// given]; --objects-only: each phase).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Requests in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Multipart part size (mixed: video parts; --objects-only: use multipart
    /// for objects larger than this).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    part_size: Option<u64>,
    /// Request bodies up to this size are sent from memory, larger ones are
    /// generated while streaming.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "1MiB")]
    stream_threshold: u64,
    /// Don't send the SDK's default CRC32 request checksums (checksums only
    /// where the API requires them).
    #[arg(long)]
    no_checksum: bool,
    /// Per-request timeout in seconds (each SDK call and each body read).
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    timeout: f64,
    /// SDK retries per request (0: a failed request is reported, not retried).
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Sample VmRSS of this process every 100 ms and report its peak
    /// (repeatable, or comma-separated).
    #[arg(long, value_delimiter = ',')]
    pid: Vec<u32>,
    /// Measure the codec (4+2 encode), blake3 and MD5 kernels in-process first.
    #[arg(long)]
    kernel: bool,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Exit 1 if any request failed, not only on a content mismatch.
    #[arg(long)]
    strict: bool,
    /// Seconds between progress lines on stderr (0: none).
    #[arg(long, default_value_t = 5.0)]
    progress: f64,
}

struct Section {
    title: String,
    elapsed: Duration,
    rows: BTreeMap<RowKey, Row>,
}

fn secs(name: &str, v: f64) -> anyhow::Result<Duration> {
    if !(v.is_finite() && v > 0.0 && v < 1e7) {
        bail!("--{name} must be a positive number of seconds");
    }
    Ok(Duration::from_secs_f64(v))
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64().max(1e-9)
}

fn aggregate(rows: &BTreeMap<RowKey, Row>) -> Vec<(String, Row)> {
    let mut out: Vec<(String, Row)> = rows.iter().map(|(k, r)| (format!("{} {}", k.0.1, k.1.1), r.clone())).collect();
    let mut fams: BTreeMap<&str, Row> = BTreeMap::new();
    let mut all = Row::default();
    for (k, r) in rows {
        fams.entry(OpKind::family(&k.1.1)).or_default().merge(r);
        all.merge(r);
    }
    if rows.len() > 1 {
        for fam in ["PUT", "GET", "HEAD", "DELETE", "LIST"] {
            if let Some(r) = fams.remove(fam) {
                out.push((format!("ALL {fam}"), r));
            }
        }
    }
    out.push(("ALL".to_string(), all));
    out
}

fn render(sec: &Section, text: &mut String) -> Value {
    let el = sec.elapsed;
    let _ = writeln!(text, "\n== {} ({:.1} s)", sec.title, el.as_secs_f64());
    let _ = writeln!(
        text,
        "{:<24} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>8} {:>7}",
        "class/op", "ops", "ops/s", "MiB/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors", "mismatch", "skipped"
    );
    let mut jrows = Vec::new();
    let mut errors_text = String::new();
    for (name, r) in aggregate(&sec.rows) {
        let ops_s = r.ops as f64 / el.as_secs_f64().max(1e-9);
        let (p50, p99, p999) = (r.hist.quantile_ms(0.5), r.hist.quantile_ms(0.99), r.hist.quantile_ms(0.999));
        let _ = writeln!(
            text,
            "{:<24} {:>8} {:>9.1} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>7} {:>8} {:>7}",
            name,
            r.ops,
            ops_s,
            mib_s(r.bytes, el),
            p50,
            p99,
            p999,
            r.hist.max_ms(),
            r.errors,
            r.verify_failures,
            r.skipped
        );
        if !name.starts_with("ALL") {
            for e in &r.first_errors {
                let _ = writeln!(errors_text, "  [{name}] {e}");
            }
        }
        jrows.push(json!({
            "row": name, "ops": r.ops, "ops_per_s": ops_s, "bytes": r.bytes, "mib_per_s": mib_s(r.bytes, el),
            "p50_ms": p50, "p99_ms": p99, "p999_ms": p999, "max_ms": r.hist.max_ms(), "latency_samples": r.hist.count(),
            "errors": r.errors, "verify_failures": r.verify_failures, "skipped": r.skipped,
            "first_errors": r.first_errors,
        }));
    }
    if !errors_text.is_empty() {
        let _ = writeln!(text, "first errors:\n{errors_text}");
    }
    json!({ "section": sec.title, "elapsed_s": el.as_secs_f64(), "rows": jrows })
}

/// MiB/s of the "ALL <fam>" (or single) row of a family in a section.
fn family_rate(sec: &Section, fam: &str) -> Option<f64> {
    let mut total = Row::default();
    for (k, r) in &sec.rows {
        if OpKind::family(&k.1.1) == fam {
            total.merge(r);
        }
    }
    (total.ops > 0).then(|| mib_s(total.bytes, sec.elapsed))
}

fn progress_task(stats: Arc<Stats>, every: f64, label: String) -> Option<tokio::task::JoinHandle<()>> {
    if every <= 0.0 {
        return None;
    }
    Some(tokio::spawn(async move {
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(every));
        tick.tick().await;
        loop {
            tick.tick().await;
            let (ops, errs, bad) = stats.totals();
            let t = start.elapsed().as_secs_f64();
            eprintln!(
                "[{label} {t:6.1}s] {ops} ops ({:.1}/s), {errs} errors, {bad} mismatches",
                ops as f64 / t.max(1e-9)
            );
        }
    }))
}

async fn with_progress<F: std::future::Future>(stats: &Arc<Stats>, every: f64, label: &str, f: F) -> F::Output {
    let p = progress_task(stats.clone(), every, label.to_string());
    let out = f.await;
    if let Some(p) = p {
        p.abort();
    }
    out
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    // ---- validate everything before touching the network
    let url = args.endpoint.clone().context("no endpoint: pass --endpoint URL or set S3_ENDPOINT")?;
    s3::check_endpoint(&url)?;
    let access_key = args.access_key.clone().context("no access key: pass --access-key or set AWS_ACCESS_KEY_ID")?;
    let secret_key =
        args.secret_key.clone().context("no secret key: pass --secret-key or set AWS_SECRET_ACCESS_KEY")?;
    if args.concurrency == 0 || args.concurrency > 4096 {
        bail!("--concurrency must be between 1 and 4096");
    }
    let timeout = secs("timeout", args.timeout)?;
    let duration = args.duration.map(|d| secs("duration", d)).transpose()?;
    if args.objects_only.is_none() && (args.puts_only || args.gets_only || args.count.is_some()) {
        bail!("--puts-only, --gets-only and --count only apply with --objects-only SIZE");
    }
    if args.objects_only.is_some() && args.ops.is_some() {
        bail!("--ops applies to the mixed workload; with --objects-only use --count");
    }
    if args.count == Some(0) || args.ops == Some(0) {
        bail!("--count and --ops must be at least 1");
    }
    if let Some(p) = args.part_size
        && !(5 * MIB..=5 * 1024 * MIB).contains(&p)
    {
        eprintln!("note: --part-size {} is outside S3's 5 MiB..5 GiB part limits", size_label(p));
    }
    sys::check_pids(&args.pid)?;
    let prefix = args.prefix.clone().unwrap_or_else(|| format!("lg-{}/", args.seed));

    let mut report_text = String::new();
    let mut jkernel = Value::Null;
    let kernel: Option<Kernel> = if args.kernel {
        eprintln!("measuring kernels (~4 s, one core)...");
        let k = tokio::task::spawn_blocking(sys::measure_kernel).await.context("kernel task")??;
        let _ = writeln!(
            report_text,
            "kernel (1 core, 1 MiB buffers): codec 4+2 encode {:.0} MiB/s, blake3 {:.0} MiB/s, MD5 {:.0} MiB/s; \
             PUT chain (MD5 + encode + blake3 of 1.5x) {:.0} MiB/s, GET chain (blake3) {:.0} MiB/s",
            k.encode_4_2,
            k.blake3,
            k.md5,
            k.put_chain(),
            k.get_chain()
        );
        jkernel = json!({
            "encode_4_2_mib_s": k.encode_4_2, "blake3_mib_s": k.blake3, "md5_mib_s": k.md5,
            "put_chain_mib_s": k.put_chain(), "get_chain_mib_s": k.get_chain(),
        });
        Some(k)
    } else {
        None
    };

    let ep = Endpoint {
        url: url.clone(),
        access_key,
        secret_key,
        region: args.region.clone(),
        ca_bundle: args.ca_bundle.clone(),
    };
    let s3 =
        S3::new(&ep, args.bucket.clone(), args.seed, timeout, args.retries, args.stream_threshold, !args.no_checksum)?;
    s3.ensure_bucket().await.with_context(|| format!("endpoint {url}, bucket {}", args.bucket))?;
    let ctx =
        Arc::new(Ctx { s3, prefix: prefix.clone(), concurrency: args.concurrency, stop: Default::default(), timeout });

    {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: finishing requests in flight (Ctrl-C again to abort)");
                ctx.stop.store(true, Ordering::Relaxed);
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
    }

    let sampler = (!args.pid.is_empty()).then(|| RssSampler::start(args.pid.clone()));
    let mut sections = Vec::new();
    let mode;
    match args.objects_only {
        Some(size) => {
            let label = size_label(size);
            let count = args.count.unwrap_or(((1024 * MIB) / size).clamp(8, 1000));
            mode = format!("objects-only {label} x {count}");
            let oo = Arc::new(ObjectsOnly {
                ctx: ctx.clone(),
                size,
                label: label.clone(),
                count,
                duration,
                part_size: args.part_size,
            });
            let written = if args.gets_only {
                (0..count).collect()
            } else {
                eprintln!("{mode}: PUT phase, concurrency {}", args.concurrency);
                let stats = Arc::new(Stats::default());
                let t = Instant::now();
                let written = with_progress(&stats, args.progress, "PUT", oo.put_phase(stats.clone())).await;
                sections.push(Section {
                    title: format!("PUT {label} x {count}"),
                    elapsed: t.elapsed(),
                    rows: stats.snapshot(),
                });
                written
            };
            if args.heads && !args.puts_only && !ctx.stop.load(Ordering::Relaxed) {
                eprintln!("{mode}: HEAD phase over {} objects", written.len());
                let stats = Arc::new(Stats::default());
                let t = Instant::now();
                let n = written.len();
                with_progress(&stats, args.progress, "HEAD", oo.head_phase(stats.clone(), written.clone())).await;
                sections.push(Section {
                    title: format!("HEAD {label} x {n}"),
                    elapsed: t.elapsed(),
                    rows: stats.snapshot(),
                });
            }
            if !args.puts_only && !ctx.stop.load(Ordering::Relaxed) {
                eprintln!("{mode}: GET phase over {} objects", written.len());
                let stats = Arc::new(Stats::default());
                let t = Instant::now();
                let n = written.len();
                with_progress(&stats, args.progress, "GET", oo.get_phase(stats.clone(), written)).await;
                sections.push(Section {
                    title: format!("GET {label} x {n}"),
                    elapsed: t.elapsed(),
                    rows: stats.snapshot(),
                });
            }
        }
        None => {
            let duration = match (args.ops, duration) {
                (None, None) => Some(Duration::from_secs(60)),
                (_, d) => d,
            };
            mode = format!(
                "mixed chat-media workload (ops {}, duration {})",
                args.ops.map_or("-".into(), |o| o.to_string()),
                duration.map_or("-".into(), |d| format!("{:.0}s", d.as_secs_f64()))
            );
            let limits = MixedLimits {
                max_ops: args.ops,
                // A run with only --ops is still bounded in time.
                deadline: Instant::now() + duration.unwrap_or(Duration::from_secs(24 * 3600)),
                part_size: args.part_size.unwrap_or(8 * MIB),
            };
            eprintln!("{mode}, concurrency {}, seed {}", args.concurrency, args.seed);
            let mixed = Mixed::new(ctx.clone(), args.seed, limits);
            let t = Instant::now();
            with_progress(&mixed.stats, args.progress, "mixed", mixed.clone().run()).await;
            let _ = writeln!(report_text, "objects written or planned: {}", mixed.objects_planned());
            sections.push(Section { title: "mixed".into(), elapsed: t.elapsed(), rows: mixed.stats.snapshot() });
        }
    }
    let rss: Option<(Vec<RssReport>, u64)> = match sampler {
        Some(s) => Some(s.finish().await),
        None => None,
    };

    // ---- report
    let mut text = format!(
        "loadgen: {mode} against {url} bucket {} prefix {prefix}, concurrency {}, seed {}\n",
        args.bucket, args.concurrency, args.seed
    );
    text.push_str(&report_text);
    let mut jsections = Vec::new();
    let (mut errors, mut mismatches) = (0u64, 0u64);
    for s in &sections {
        jsections.push(render(s, &mut text));
        for r in s.rows.values() {
            errors += r.errors;
            mismatches += r.verify_failures;
        }
    }
    let mut jratios = Value::Null;
    if let Some(k) = kernel {
        let put = sections.iter().find_map(|s| family_rate(s, "PUT"));
        let get = sections.iter().find_map(|s| family_rate(s, "GET"));
        let _ = writeln!(text, "\nend-to-end / kernel (end-to-end uses all cores, the kernel one):");
        let mut jr = serde_json::Map::new();
        for (what, rate) in [("PUT", put), ("GET", get)] {
            if let Some(r) = rate {
                let _ = writeln!(
                    text,
                    "  {what} {r:.1} MiB/s = {:.3} x encode 4+2, {:.3} x blake3, {:.3} x MD5, {:.3} x {what} chain",
                    r / k.encode_4_2,
                    r / k.blake3,
                    r / k.md5,
                    r / if what == "PUT" { k.put_chain() } else { k.get_chain() }
                );
                jr.insert(
                    what.to_lowercase(),
                    json!({
                        "mib_s": r, "vs_encode_4_2": r / k.encode_4_2, "vs_blake3": r / k.blake3, "vs_md5": r / k.md5,
                        "vs_chain": r / if what == "PUT" { k.put_chain() } else { k.get_chain() },
                    }),
                );
            }
        }
        jratios = Value::Object(jr);
    }
    let mut jrss = Value::Null;
    if let Some((reports, peak_sum)) = &rss {
        let _ = writeln!(text, "\nendpoint memory (VmRSS sampled every 100 ms):");
        let mut v = Vec::new();
        for r in reports {
            let _ = writeln!(
                text,
                "  pid {:>7}: start {:.1} MiB, peak {:.1} MiB, end {}, VmHWM {} ({} samples)",
                r.pid,
                r.start_kib as f64 / 1024.0,
                r.peak_kib as f64 / 1024.0,
                r.end_kib.map_or("exited".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
                r.hwm_kib.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
                r.samples
            );
            v.push(json!({
                "pid": r.pid, "start_kib": r.start_kib, "peak_rss_kib": r.peak_kib, "end_kib": r.end_kib,
                "vm_hwm_kib": r.hwm_kib, "samples": r.samples,
            }));
        }
        if reports.len() > 1 {
            let _ = writeln!(text, "  all pids together: peak {:.1} MiB", *peak_sum as f64 / 1024.0);
        }
        jrss = json!({ "processes": v, "peak_sum_kib": peak_sum });
    }
    let verdict = if mismatches > 0 {
        format!("FAILED: {mismatches} response(s) did not match what was written")
    } else if errors > 0 {
        format!("all responses read matched what was written; {errors} request(s) failed")
    } else {
        "all responses read matched what was written; no errors".to_string()
    };
    let _ = writeln!(text, "\n{verdict}");
    print!("{text}");

    if let Some(path) = &args.json {
        let doc = json!({
            "endpoint": url, "bucket": args.bucket, "prefix": prefix, "mode": mode,
            "concurrency": args.concurrency, "seed": args.seed,
            "sections": jsections, "kernel": jkernel, "end_to_end_vs_kernel": jratios, "rss": jrss,
            "errors": errors, "verify_failures": mismatches, "ok": mismatches == 0,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(if mismatches > 0 || (args.strict && errors > 0) { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB"), Ok(64 * KIB));
        assert_eq!(parse_size("1MiB"), Ok(MIB));
        assert_eq!(parse_size("256mib"), Ok(256 * MIB));
        assert_eq!(parse_size("8M"), Ok(8 * MIB));
        assert_eq!(parse_size("1.5MiB"), Ok(3 * MIB / 2));
        assert_eq!(parse_size("100KB"), Ok(100_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
        assert_eq!(size_label(64 * KIB), "64KiB");
        assert_eq!(size_label(256 * MIB), "256MiB");
    }

    #[test]
    fn endpoints() {
        assert!(s3::check_endpoint("http://127.0.0.1:9000").is_ok());
        assert!(s3::check_endpoint("http://[::1]:9000").is_ok());
        assert!(s3::check_endpoint("127.0.0.1:9000").is_err());
        assert!(s3::check_endpoint("http://").is_err());
        assert!(s3::check_endpoint("http://localhost:99999").is_err());
    }
}
