//! Prometheus metrics of a storage node, served unsigned at `GET /metrics`
//! (figures only: no names, keys or data). The repair figures are the ones
//! the node reports to the catalog (`rebuild::RebuildState::report`), so a
//! scrape and `sillok admin repair status` agree (the rate is left to
//! Prometheus: `rate(sillok_rebuild_bytes_written_total[1m])`).

use prometheus_client::encoding::DescriptorEncoder;
use sillok_catalog::api::RepairReport;
use sillok_rpc::ops::{counter, gauge, gauge_family};

/// The node's figures, read at scrape time.
pub struct Figures<'a> {
    pub epoch: u64,
    pub shards: u64,
    pub shard_bytes: u64,
    pub clock_offset_ms: Option<i64>,
    pub repair: &'a RepairReport,
    pub throttle: crate::rebuild::ThrottleSettings,
    pub load: &'a crate::background::ClientLoad,
    pub caught_up: bool,
    /// Total and free (available to the node) bytes of the data directory's
    /// file system, if they could be read.
    pub disk: Option<(u64, u64)>,
}

/// Writes the node's figures on its metrics page.
pub fn encode(enc: &mut DescriptorEncoder, f: &Figures) -> std::fmt::Result {
    gauge(
        enc,
        "sillok_node_caught_up",
        "0 while the node catches up on manifests after a start and refuses clients' manifest reads.",
        u64::from(f.caught_up),
    )?;
    gauge(enc, "sillok_node_map_epoch", "The placement map epoch this node follows.", f.epoch)?;
    gauge(enc, "sillok_node_shards", "Shard files on this node.", f.shards)?;
    gauge(enc, "sillok_node_shard_bytes", "Bytes in this node's shard files.", f.shard_bytes)?;
    if let Some(off) = f.clock_offset_ms {
        gauge(enc, "sillok_node_clock_offset_ms", "This node's clock minus its peers' (median).", off)?;
    }
    if let Some((total, free)) = f.disk {
        gauge(enc, "sillok_node_disk_total_bytes", "Size of the file system holding the data directory.", total)?;
        gauge(
            enc,
            "sillok_node_disk_free_bytes",
            "Bytes of that file system available to the node (statvfs f_bavail).",
            free,
        )?;
    }
    let r = f.repair;
    let gauges: [(&str, &str, u64); 5] = [
        ("sillok_rebuild_shards_left", "Shards the rebuild engine still has to write or record.", r.shards_left),
        ("sillok_rebuild_bytes_left", "Bytes of those shards.", r.bytes_left),
        (
            "sillok_rebuild_pgs_waiting",
            "PGs the last round could not check (no majority of replicas answered).",
            r.pgs_waiting,
        ),
        ("sillok_rebuild_suspect_shards", "Shards found bad by the scrub or a reader, not yet rewritten.", r.suspects),
        ("sillok_rebuild_checked_epoch", "The map epoch the engine last listed its work under.", r.checked_epoch),
    ];
    for (name, help, v) in gauges {
        gauge(enc, name, help, v)?;
    }
    counter(
        enc,
        "sillok_rebuild_shards_written",
        "Shards rebuilt (decoded or copied), fsynced and verified.",
        r.shards_written,
    )?;
    counter(enc, "sillok_rebuild_bytes_written", "Bytes of those shards.", r.bytes_written)?;
    let (rate, conc) = (f.throttle.mib_per_s.unwrap_or(0), f.throttle.concurrency.unwrap_or(1));
    gauge(enc, "sillok_rebuild_throttle_mib_per_s", "The rebuild's pace limit (0: unlimited).", u64::from(rate))?;
    gauge(enc, "sillok_rebuild_throttle_concurrency", "Shards the rebuild writes at once.", u64::from(conc))?;
    let yielded = f.load.yielded_us() as f64 / 1e6;
    let c = prometheus_client::metrics::counter::ConstCounter::new(yielded);
    let m = enc.encode_descriptor(
        "sillok_background_yield_seconds",
        "Time the rebuild and scrub waited for client requests in flight here.",
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    prometheus_client::encoding::EncodeMetric::encode(&c, m)?;
    counter(enc, "sillok_scrub_bytes", "Bytes the scrub has read and checked.", r.scrubbed_bytes)?;
    let mut by_live = std::collections::BTreeMap::<u8, u64>::new();
    for (_, live) in &r.pgs {
        *by_live.entry(*live).or_default() += 1;
    }
    gauge_family(
        enc,
        "sillok_rebuild_pgs",
        "PGs with shards this node wants, by the fewest shards an object there has in service.",
        "shards_in_service",
        by_live.into_iter().map(|(live, n)| (live.to_string(), n)),
    )
}

/// Total and available bytes of the file system holding `dir` (statvfs).
pub fn disk_usage(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs(3) with a NUL-terminated path and a zeroed struct it fills.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some((st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize))
}

#[cfg(test)]
#[test]
fn the_page_names_every_figure_once() {
    #[derive(Debug)]
    struct C;
    impl prometheus_client::collector::Collector for C {
        fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
            let r = RepairReport { shards_left: 3, pgs: vec![(1, 4), (2, 4), (3, 5)], ..Default::default() };
            let t = crate::rebuild::ThrottleSettings { mib_per_s: Some(40), concurrency: Some(2) };
            let load = Default::default();
            let f = Figures {
                epoch: 7,
                shards: 10,
                shard_bytes: 2048,
                clock_offset_ms: Some(-3),
                repair: &r,
                throttle: t,
                load: &load,
                caught_up: false,
                disk: disk_usage(std::path::Path::new("/")),
            };
            encode(&mut enc, &f)
        }
    }
    let mut reg = prometheus_client::registry::Registry::default();
    reg.register_collector(Box::new(C));
    let page = sillok_rpc::ops::render(&reg).unwrap();
    assert!(page.contains("sillok_node_caught_up 0\n"), "{page}");
    assert!(page.contains("sillok_rebuild_throttle_mib_per_s 40\n"));
    assert!(page.contains("sillok_node_map_epoch 7\n"));
    assert!(page.contains("sillok_rebuild_shards_left 3\n"));
    assert!(page.contains("sillok_rebuild_pgs{shards_in_service=\"4\"} 2\n"));
    assert!(page.contains("sillok_node_clock_offset_ms -3\n"));
    assert!(page.contains("sillok_node_disk_total_bytes "));
    assert!(page.contains("sillok_rebuild_bytes_written_total 0\n"));
    for line in page.lines().filter(|l| l.starts_with("# TYPE")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert_eq!(page.matches(&format!("# TYPE {name} ")).count(), 1, "{name}");
    }
}
