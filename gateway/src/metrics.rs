//! Prometheus metrics of the gateway: request counts by operation and outcome,
//! bytes in and out, degraded reads, the lifecycle expirer's work. Served as
//! text at `/_sillok/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub lifecycle: crate::lifecycle::LifecycleMetrics,
}

impl Metrics {
    pub fn count(&self, op: &'static str, ok: bool) {
        let mut r = self.requests.lock().expect("metrics lock");
        *r.entry((op, if ok { "ok" } else { "error" })).or_default() += 1;
    }

    /// `epoch`: the gateway's map epoch; `applied`: the catalog index its copy is at.
    pub fn render(&self, epoch: u64, applied: u64, clock_offset_ms: Option<i64>) -> String {
        let mut s = String::new();
        if let Some(off) = clock_offset_ms {
            s.push_str("# HELP sillok_clock_offset_ms This gateway's clock minus the storage nodes' (median of the probes).\n# TYPE sillok_clock_offset_ms gauge\n");
            s.push_str(&format!("sillok_clock_offset_ms {off}\n"));
        }
        s.push_str(
            "# HELP sillok_map_epoch The placement map epoch this gateway uses.\n# TYPE sillok_map_epoch gauge\n",
        );
        s.push_str(&format!("sillok_map_epoch {epoch}\n"));
        s.push_str(
            "# HELP sillok_catalog_applied_index The catalog log index of this gateway's copy.\n# TYPE sillok_catalog_applied_index gauge\n",
        );
        s.push_str(&format!("sillok_catalog_applied_index {applied}\n"));
        s.push_str("# HELP sillok_s3_requests_total S3 requests handled, by operation and outcome.\n");
        s.push_str("# TYPE sillok_s3_requests_total counter\n");
        for ((op, outcome), n) in self.requests.lock().expect("metrics lock").iter() {
            s.push_str(&format!("sillok_s3_requests_total{{op=\"{op}\",outcome=\"{outcome}\"}} {n}\n"));
        }
        s.push_str(
            "# HELP sillok_s3_bytes_in_total Object bytes received in PUTs.\n# TYPE sillok_s3_bytes_in_total counter\n",
        );
        s.push_str(&format!("sillok_s3_bytes_in_total {}\n", self.bytes_in.load(Ordering::Relaxed)));
        s.push_str(
            "# HELP sillok_s3_bytes_out_total Object bytes sent in GETs.\n# TYPE sillok_s3_bytes_out_total counter\n",
        );
        s.push_str(&format!("sillok_s3_bytes_out_total {}\n", self.bytes_out.load(Ordering::Relaxed)));
        self.lifecycle.render(&mut s);
        s
    }
}
