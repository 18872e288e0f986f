//! Prometheus metrics of a storage node, served unsigned at `GET /metrics`
//! (figures only: no names, keys or data). The repair figures are the ones
//! the node reports to the catalog (`rebuild::RebuildState::report`), so a
//! scrape and `sillok admin repair status` agree (the rate is left to
//! Prometheus: `rate(sillok_rebuild_bytes_written_total[1m])`).

use std::fmt::Write;

use sillok_catalog::api::RepairReport;

/// One metric in the text exposition format.
fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
}

/// The node's metrics page.
#[allow(clippy::too_many_arguments)] // each argument is one figure of the page; a struct would only rename them
pub fn render(
    epoch: u64,
    shards: u64,
    shard_bytes: u64,
    clock_offset_ms: Option<i64>,
    r: &RepairReport,
    throttle: crate::rebuild::ThrottleSettings,
    load: &crate::background::ClientLoad,
    caught_up: bool,
) -> String {
    let mut s = String::new();
    metric(
        &mut s,
        "sillok_node_caught_up",
        "gauge",
        "0 while the node catches up on manifests after a start and refuses clients' manifest reads.",
        u8::from(caught_up),
    );
    metric(&mut s, "sillok_node_map_epoch", "gauge", "The placement map epoch this node follows.", epoch);
    metric(&mut s, "sillok_node_shards", "gauge", "Shard files on this node.", shards);
    metric(&mut s, "sillok_node_shard_bytes", "gauge", "Bytes in this node's shard files.", shard_bytes);
    if let Some(off) = clock_offset_ms {
        metric(&mut s, "sillok_node_clock_offset_ms", "gauge", "This node's clock minus its peers' (median).", off);
    }
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
        metric(&mut s, name, "gauge", help, v);
    }
    metric(
        &mut s,
        "sillok_rebuild_shards_written_total",
        "counter",
        "Shards rebuilt (decoded or copied), fsynced and verified.",
        r.shards_written,
    );
    metric(&mut s, "sillok_rebuild_bytes_written_total", "counter", "Bytes of those shards.", r.bytes_written);
    let (rate, conc) = (throttle.mib_per_s.unwrap_or(0), throttle.concurrency.unwrap_or(1));
    metric(&mut s, "sillok_rebuild_throttle_mib_per_s", "gauge", "The rebuild's pace limit (0: unlimited).", rate);
    metric(&mut s, "sillok_rebuild_throttle_concurrency", "gauge", "Shards the rebuild writes at once.", conc);
    let yielded = load.yielded_us() as f64 / 1e6;
    metric(
        &mut s,
        "sillok_background_yield_seconds_total",
        "counter",
        "Time the rebuild and scrub waited for client requests in flight here.",
        yielded,
    );
    metric(&mut s, "sillok_scrub_bytes_total", "counter", "Bytes the scrub has read and checked.", r.scrubbed_bytes);
    let _ = writeln!(
        s,
        "# HELP sillok_rebuild_pgs PGs with shards this node wants, by the fewest shards an object there has in service.\n# TYPE sillok_rebuild_pgs gauge"
    );
    let mut by_live = std::collections::BTreeMap::<u8, u64>::new();
    for (_, live) in &r.pgs {
        *by_live.entry(*live).or_default() += 1;
    }
    for (live, n) in by_live {
        let _ = writeln!(s, "sillok_rebuild_pgs{{shards_in_service=\"{live}\"}} {n}");
    }
    s
}

#[cfg(test)]
#[test]
fn the_page_names_every_figure_once() {
    let r = RepairReport { shards_left: 3, pgs: vec![(1, 4), (2, 4), (3, 5)], ..Default::default() };
    let t = crate::rebuild::ThrottleSettings { mib_per_s: Some(40), concurrency: Some(2) };
    let page = render(7, 10, 2048, Some(-3), &r, t, &Default::default(), false);
    assert!(page.contains("sillok_node_caught_up 0\n"));
    assert!(page.contains("sillok_rebuild_throttle_mib_per_s 40\n"));
    assert!(page.contains("sillok_node_map_epoch 7\n"));
    assert!(page.contains("sillok_rebuild_shards_left 3\n"));
    assert!(page.contains("sillok_rebuild_pgs{shards_in_service=\"4\"} 2\n"));
    assert!(page.contains("sillok_node_clock_offset_ms -3\n"));
    for line in page.lines().filter(|l| l.starts_with("# TYPE")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert_eq!(page.matches(&format!("# TYPE {name} ")).count(), 1, "{name}");
    }
}
