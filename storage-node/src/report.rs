//! The node's usage report to the catalog replicas: every few seconds, its
//! shard count and bytes, its file system's size and free space, the map
//! epoch it follows, its clock offset, and what its rebuild engine and scrub
//! are doing (`POST /v1/report` on every replica, which shows it in
//! `sillok admin status` and `sillok admin repair status`). The answer
//! carries the rebuild throttle an operator set (applied here when it
//! changes) and the cluster's repair state (for the node's metrics page). A
//! report that no replica takes is simply late; nothing waits for it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sillok_catalog::CatalogClient;
use sillok_catalog::api::NodeReport;
use sillok_placement::NodeId;

use crate::shard_store::Usage;

/// `(total, free)` bytes of the file system holding `path` (zeros if unknown).
pub fn disk_space(path: &Path) -> (u64, u64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return (0, 0) };
    // SAFETY: statvfs(3) writes into the struct we pass and reads the
    // NUL-terminated path; both outlive the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return (0, 0);
    }
    let frsize = st.f_frsize as u64;
    (st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize)
}

/// Reports forever (until the task is dropped).
#[allow(clippy::too_many_arguments)] // the reporter's inputs, each used once
pub async fn report_forever(
    client: Arc<CatalogClient>,
    node: NodeId,
    usage: Arc<Usage>,
    map: crate::server::MapWatch,
    clock: Arc<crate::node_clock::NodeClock>,
    repair: Arc<crate::rebuild::RebuildState>,
    throttle: Arc<crate::rebuild::Throttle>,
    data_dir: PathBuf,
    every: Duration,
) {
    let mut written = (std::time::Instant::now(), 0u64);
    // The catalog's throttle as last applied: a node's own setting (its
    // flags, or `POST /v1/repair/throttle`) stands until the catalog's changes.
    let mut applied: Option<sillok_catalog::api::RepairThrottle> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (shards, shard_bytes) = usage.get();
        let dir = data_dir.clone();
        let (disk_total, disk_free) = tokio::task::spawn_blocking(move || disk_space(&dir)).await.unwrap_or((0, 0));
        let r = NodeReport {
            node,
            epoch: map.borrow().as_ref().map_or(0, |m| m.epoch),
            shards,
            shard_bytes,
            disk_total,
            disk_free,
            clock_offset_ms: clock.offset_ms(),
            refusing_writes: clock.refusal().is_some(),
            repair: Some({
                let now = (std::time::Instant::now(), repair.bytes_written.load(std::sync::atomic::Ordering::Relaxed));
                let secs = now.0.duration_since(written.0).as_secs_f64().max(1e-3);
                let rate = ((now.1 - written.1) as f64 / secs) as u64;
                written = now;
                repair.report(rate)
            }),
        };
        let sent = client.report(&r).await;
        tracing::debug!(took = sent.taken, shards, shard_bytes, "usage reported");
        let Some(answer) = sent.answer else { continue };
        if answer.repair_throttle.is_some() && answer.repair_throttle != applied {
            let t = answer.repair_throttle.unwrap_or_default();
            let now =
                throttle.set(crate::rebuild::ThrottleSettings { mib_per_s: t.mib_per_s, concurrency: t.concurrency });
            tracing::info!(mib_per_s = ?now.mib_per_s, concurrency = ?now.concurrency, "rebuild throttle set by the catalog");
            applied = answer.repair_throttle;
        }
        if repair.set_paused(answer.rebalance_paused) {
            tracing::info!(paused = answer.rebalance_paused, "planned moves paused or resumed by the catalog");
        }
        *repair.cluster.lock().expect("cluster repair lock") = answer.repair;
    }
}
