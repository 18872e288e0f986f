//! The scrub: every shard file on this node is re-read, and every block
//! checked against its blake3, at a bounded pace.
//!
//! Owns: finding shards that rotted or vanished behind the manifests' back,
//! and handing them to the rebuild engine as *suspects*
//! (`RebuildState::suspect`). It never repairs or deletes by itself: the
//! engine rewrites a suspect shard from the others (the file it replaces is
//! overwritten only by a verified copy), and a file no manifest wants is the
//! collector's.
//!
//! A pass walks the shard directories `00..ff` in order at
//! `--scrub-mib-per-s`, reading on a thread of low CPU priority and waiting
//! for client requests in flight before each shard (`background`); passes start every `--scrub-every-ms` (a full pass
//! every 14 days by default), or at once when a pass took longer. A GET that
//! had to read parity because a shard was missing or corrupt reports the
//! shard to its node (`POST /v1/repair/suspect`), which checks it the same
//! way at once (heal-on-read).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::api::ShardId;
use crate::collector::Upkeeper;
use crate::error::NodeError;
use crate::rebuild::{RebuildState, Throttle};
use crate::shard_store::ShardStore;

/// Scrub counters, for logs and the closing notes' figures.
#[derive(Debug, Default)]
pub struct ScrubStats {
    pub passes: AtomicU64,
    pub shards_checked: AtomicU64,
    pub found_bad: AtomicU64,
}

/// Checks shard `id` whole; a missing or corrupt one becomes a suspect of
/// the rebuild engine. Returns whether it was sound. (Heal-on-read: what
/// `POST /v1/repair/suspect` does with a shard a GET could not use.)
pub async fn check_shard(store: &ShardStore, rebuild: &RebuildState, id: ShardId) -> Result<bool, NodeError> {
    let store = store.clone();
    let probe = id.clone();
    let r = crate::background::run_low("sillok-check", move || Ok(store.verify(&probe, |_| {}))).await?;
    let why = match r {
        Ok(Some(_)) => return Ok(true),
        Ok(None) => "missing".to_string(),
        Err(NodeError::Corrupt(why)) => why,
        Err(e) => return Err(e),
    };
    tracing::warn!(shard = %id.file_name(), why, "a reader reported a shard that fails its check; the rebuild engine will rewrite it");
    rebuild.suspect(id);
    Ok(false)
}

impl Upkeeper {
    /// One pass over every shard file at the pace `throttle` allows;
    /// returns how many were found bad.
    pub async fn scrub_pass(&self, pace: &Throttle) -> Result<u64, NodeError> {
        let t0 = Instant::now();
        let (mut checked, mut bytes, mut bad) = (0u64, 0u64, 0u64);
        for dir in 0..=255u8 {
            let store = self.shards.clone();
            let ids = tokio::task::spawn_blocking(move || store.ids_in_dir(dir))
                .await
                .map_err(|e| NodeError::Other(format!("blocking task failed: {e}")))??;
            for id in ids {
                self.client_load.yield_to_clients().await;
                let store = self.shards.clone();
                let probe = id.clone();
                let r = crate::background::run_low("sillok-scrub", move || Ok(store.verify(&probe, |_| {}))).await?;
                checked += 1;
                match r {
                    Ok(Some(n)) => {
                        bytes += n;
                        pace.take(n as usize).await;
                    }
                    // Deleted by the collector since the directory was listed.
                    Ok(None) => {}
                    Err(NodeError::Corrupt(why)) => {
                        bad += 1;
                        self.scrub.found_bad.fetch_add(1, Relaxed);
                        tracing::warn!(shard = %id.file_name(), why, "scrub found a corrupt shard; the rebuild engine will rewrite it");
                        self.rebuild.suspect(id);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        self.scrub.passes.fetch_add(1, Relaxed);
        self.scrub.shards_checked.fetch_add(checked, Relaxed);
        self.rebuild.scrubbed_bytes.fetch_add(bytes, Relaxed);
        let secs = t0.elapsed().as_secs_f64();
        tracing::info!(
            checked,
            bad,
            mib = bytes as f64 / 1_048_576.0,
            mib_per_s = bytes as f64 / 1_048_576.0 / secs.max(1e-3),
            ms = (secs * 1000.0) as u64,
            "scrub pass"
        );
        Ok(bad)
    }

    /// Scrub passes until the task is dropped (none when the period is zero).
    pub async fn scrub_forever(self: Arc<Self>) {
        let every = self.settings.scrub_every;
        if every.is_zero() {
            return;
        }
        let pace = Throttle::new(self.settings.scrub_mib_per_s, 1);
        loop {
            let started = Instant::now();
            if let Err(e) = self.scrub_pass(&pace).await {
                tracing::warn!(error = %e, "scrub pass failed");
            }
            tokio::time::sleep(every.saturating_sub(started.elapsed())).await;
        }
    }
}
