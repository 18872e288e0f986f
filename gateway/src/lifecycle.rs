//! The lifecycle expirer: every `interval`, each bucket's enabled lifecycle
//! rules are carried out: objects whose rule says they have expired are
//! deleted, and multipart uploads older than a rule's DaysAfterInitiation
//! are aborted. The rules and when they are due are the catalog's
//! (`sillok_catalog::lifecycle`); this module only finds the work and does
//! it through the ordinary paths.
//!
//! Invariants:
//! - Objects are deleted only through [`crate::versions::delete_if_current`],
//!   uploads aborted only through [`crate::multipart::abort`]; nothing here
//!   writes a tombstone or deletes a shard (the storage nodes' collector
//!   reclaims the space once no manifest refers to the shards).
//! - An object is deleted only if a quorum read made right before the
//!   delete shows it still the object the listing found (same ETag,
//!   Last-Modified and size) and the bucket's configuration, applied to that
//!   read (tags included), still says it has expired; the tombstone is then
//!   written just above the version read and only if nothing newer is on the
//!   replicas, so a PUT of the key that completes meanwhile is never hidden
//!   (in a versioned bucket the expiry is a delete marker, and a version
//!   written meanwhile is kept as any version is).
//! - No state of its own: what is due is worked out from the objects, the
//!   uploads and the catalog each round, so a gateway restarted mid-round
//!   finds the rest next round, and several gateways running it at once
//!   only repeat deletes and aborts, which are idempotent.
//! - A round works from this gateway's copy of the catalog; a bucket whose
//!   configuration changes during the round stops being worked on at the
//!   next page of its listing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sillok_catalog::lifecycle::{Expiration, LifecycleConfig};
use sillok_model::manifest::Version;
use sillok_storage_node::api::ListEntry;

use crate::catalog::GatewayCatalog;
use crate::cluster::Cluster;
use crate::error::GatewayError;
use crate::listing::{self, ListQuery};
use crate::metrics::Metrics;
use crate::multipart::{self, Phase};
use crate::quorum;
use crate::versions;

/// How many objects of a listing page are checked and deleted at once.
const CONCURRENCY: usize = 8;
/// Keys per listing page.
const PAGE: usize = 1000;

#[derive(Debug, Clone, Copy)]
pub struct LifecycleSettings {
    /// How often the expirer runs (zero: not in this gateway).
    pub interval: Duration,
    /// The length of a lifecycle "day" (S3's: 24 h; shorter for tests).
    pub day: Duration,
}

impl Default for LifecycleSettings {
    fn default() -> Self {
        LifecycleSettings { interval: Duration::from_secs(3600), day: Duration::from_secs(86_400) }
    }
}

/// The expirer's counters, rendered with the gateway's metrics.
#[derive(Default)]
pub struct LifecycleMetrics {
    runs_ok: AtomicU64,
    runs_with_errors: AtomicU64,
    expired: AtomicU64,
    aborted: AtomicU64,
    changed: AtomicU64,
    errors: AtomicU64,
    last_run_ms: AtomicU64,
}

impl LifecycleMetrics {
    fn record(&self, r: &RunReport, took: Duration) {
        let runs = if r.errors == 0 { &self.runs_ok } else { &self.runs_with_errors };
        runs.fetch_add(1, Ordering::Relaxed);
        self.expired.fetch_add(r.expired, Ordering::Relaxed);
        self.aborted.fetch_add(r.aborted, Ordering::Relaxed);
        self.changed.fetch_add(r.changed, Ordering::Relaxed);
        self.errors.fetch_add(r.errors, Ordering::Relaxed);
        self.last_run_ms.store(took.as_millis() as u64, Ordering::Relaxed);
    }

    /// The counters on the gateway's metrics page.
    pub fn encode_metrics(&self, enc: &mut prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        use sillok_rpc::ops::{counter, counter_family, gauge};
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter_family(
            enc,
            "sillok_lifecycle_runs",
            "Lifecycle expirer rounds this gateway finished, by outcome (error: at least one bucket, object or upload failed).",
            "outcome",
            [("ok".to_string(), get(&self.runs_ok)), ("error".to_string(), get(&self.runs_with_errors))],
        )?;
        let counters = [
            ("objects_expired", "Objects this gateway deleted because a lifecycle rule expired them.", &self.expired),
            ("uploads_aborted", "Multipart uploads this gateway aborted by a lifecycle rule.", &self.aborted),
            (
                "objects_changed",
                "Expired objects not deleted because they had changed since they were listed (looked at again next round).",
                &self.changed,
            ),
            (
                "errors",
                "Buckets, objects and uploads the lifecycle expirer failed on (retried next round).",
                &self.errors,
            ),
        ];
        for (name, help, v) in counters {
            counter(enc, &format!("sillok_lifecycle_{name}"), help, get(v))?;
        }
        gauge(
            enc,
            "sillok_lifecycle_last_run_seconds",
            "How long the last lifecycle expirer round took.",
            get(&self.last_run_ms) as f64 / 1000.0,
        )
    }
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    pub expired: u64,
    pub aborted: u64,
    pub changed: u64,
    pub errors: u64,
}

/// What became of one listed object.
enum Fate {
    Expired,
    /// Gone already, or no longer due under the configuration (e.g. its
    /// tags do not match).
    Kept,
    Changed,
}

pub struct Expirer {
    pub cluster: Arc<Cluster>,
    pub catalog: Arc<GatewayCatalog>,
    pub metrics: Arc<Metrics>,
    pub day_ms: i64,
}

fn now_ms() -> i64 {
    (Version::now().nanos / 1_000_000) as i64
}

/// The prefixes to list so that every enabled expiration rule's objects are
/// seen once: each rule's prefix, without those inside another.
fn listing_prefixes(config: &LifecycleConfig) -> Vec<String> {
    let mut prefixes: Vec<&str> = config
        .rules
        .iter()
        .filter(|r| r.enabled && matches!(r.expiration, Some(Expiration::Days(_) | Expiration::Date(_))))
        .map(|r| r.filter.prefix())
        .collect();
    prefixes.sort_unstable();
    let mut out: Vec<String> = Vec::new();
    for p in prefixes {
        if !out.last().is_some_and(|q| p.starts_with(q.as_str())) {
            out.push(p.to_string());
        }
    }
    out
}

/// Whether a listed object is due under some enabled rule, as far as the
/// listing can tell (tags are checked on the fresh read).
fn due_by_listing(config: &LifecycleConfig, e: &ListEntry, now: i64, day_ms: i64) -> bool {
    config.rules.iter().any(|r| {
        r.enabled
            && r.filter.matches_key_and_size(&e.key, e.size)
            && r.expires_at_ms(e.last_modified_ms, day_ms).is_some_and(|at| at <= now)
    })
}

impl Expirer {
    /// Runs a round every `every`, forever.
    pub async fn run_forever(self, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            let started = Instant::now();
            let report = self.run_once().await;
            let took = started.elapsed();
            self.metrics.lifecycle.record(&report, took);
            if report != RunReport::default() {
                tracing::info!(
                    expired = report.expired,
                    aborted = report.aborted,
                    changed = report.changed,
                    errors = report.errors,
                    took_ms = took.as_millis() as u64,
                    "lifecycle expirer round done"
                );
            }
        }
    }

    /// One round over every bucket with an enabled rule.
    pub async fn run_once(&self) -> RunReport {
        let mut report = RunReport::default();
        let now = now_ms();
        for (bucket, config) in self.catalog.lifecycles() {
            if !config.any_enabled() {
                continue;
            }
            if let Err(e) = self.expire_objects(&bucket, &config, now, &mut report).await {
                tracing::warn!(bucket, error = %e, "lifecycle: listing the bucket's objects failed; next round retries");
                report.errors += 1;
            }
            if let Err(e) = self.abort_uploads(&bucket, &config, now, &mut report).await {
                tracing::warn!(bucket, error = %e, "lifecycle: listing the bucket's uploads failed; next round retries");
                report.errors += 1;
            }
        }
        report
    }

    async fn expire_objects(
        &self,
        bucket: &str,
        config: &LifecycleConfig,
        now: i64,
        report: &mut RunReport,
    ) -> Result<(), GatewayError> {
        for prefix in listing_prefixes(config) {
            let mut after: Option<String> = None;
            loop {
                if self.catalog.lifecycle_of(bucket).as_ref() != Some(config) {
                    return Ok(()); // changed or removed: next round uses the new one
                }
                let q = ListQuery {
                    bucket: bucket.into(),
                    prefix: prefix.clone(),
                    start_after: after.clone(),
                    max_keys: PAGE,
                    ..Default::default()
                };
                let page = listing::list(&self.cluster, &q).await?;
                let due: Vec<&ListEntry> =
                    page.entries.iter().filter(|e| due_by_listing(config, e, now, self.day_ms)).collect();
                for chunk in due.chunks(CONCURRENCY) {
                    let fates =
                        futures::future::join_all(chunk.iter().map(|e| self.expire_one(bucket, config, e, now))).await;
                    for (e, fate) in chunk.iter().zip(fates) {
                        match fate {
                            Ok(Fate::Expired) => report.expired += 1,
                            Ok(Fate::Kept) => {}
                            Ok(Fate::Changed) => report.changed += 1,
                            Err(err) => {
                                tracing::warn!(bucket, key = %e.key, error = %err, "lifecycle: expiring an object failed; next round retries");
                                report.errors += 1;
                            }
                        }
                    }
                }
                if !page.truncated {
                    break;
                }
                after = page.next_after;
            }
        }
        Ok(())
    }

    /// Reads the object afresh and deletes it if it is still the listed one
    /// and still expired.
    async fn expire_one(
        &self,
        bucket: &str,
        config: &LifecycleConfig,
        listed: &ListEntry,
        now: i64,
    ) -> Result<Fate, GatewayError> {
        let fresh = quorum::read_manifest(&self.cluster, bucket, &listed.key).await?;
        let Some(m) = fresh.filter(|m| m.is_object()) else { return Ok(Fate::Kept) };
        if m.etag != listed.etag || m.last_modified_ms != listed.last_modified_ms || m.size != listed.size {
            return Ok(Fate::Changed);
        }
        let Some((at, rule)) = config.expiry(&m.key, m.size, &m.tags, m.last_modified_ms, self.day_ms) else {
            return Ok(Fate::Kept);
        };
        if at > now {
            return Ok(Fate::Kept);
        }
        let versioning = self.catalog.require_bucket(bucket).await?.versioning;
        if !versions::delete_if_current(&self.cluster, versioning, &m).await? {
            return Ok(Fate::Changed);
        }
        tracing::info!(bucket, key = %m.key, rule = %rule.id, "lifecycle: deleted an expired object");
        Ok(Fate::Expired)
    }

    async fn abort_uploads(
        &self,
        bucket: &str,
        config: &LifecycleConfig,
        now: i64,
        report: &mut RunReport,
    ) -> Result<(), GatewayError> {
        let rules: Vec<_> =
            config.rules.iter().filter(|r| r.enabled && r.abort_incomplete_upload_days.is_some()).collect();
        if rules.is_empty() {
            return Ok(());
        }
        // Uploads have no size or tags yet: a rule's prefix decides.
        let mut due: BTreeMap<(String, String), &str> = BTreeMap::new();
        for (_, u) in multipart::list_uploads(&self.cluster, Some(bucket), "").await? {
            let rule = rules.iter().find(|r| {
                u.key.starts_with(r.filter.prefix())
                    && r.abort_at_ms(u.initiated_ms, self.day_ms).is_some_and(|at| at <= now)
            });
            if let Some(r) = rule {
                due.insert((u.key, u.upload_id), &r.id);
            }
        }
        for ((key, upload_id), rule) in due {
            match self.abort_one(bucket, &key, &upload_id).await {
                Ok(true) => {
                    tracing::info!(bucket, key, upload_id, rule, "lifecycle: aborted an incomplete multipart upload");
                    report.aborted += 1;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(bucket, key, upload_id, error = %e, "lifecycle: aborting an upload failed; next round retries");
                    report.errors += 1;
                }
            }
        }
        Ok(())
    }

    /// Aborts the upload if it is still open (one being completed is left
    /// to its completion; an abandoned completion is the sweeper's).
    async fn abort_one(&self, bucket: &str, key: &str, upload_id: &str) -> Result<bool, GatewayError> {
        match multipart::get(&self.cluster, bucket, key, upload_id).await {
            Ok(upload) if upload.state.phase == Phase::Open => {
                multipart::abort(&self.cluster, &upload).await?;
                Ok(true)
            }
            Ok(_) | Err(GatewayError::NoSuchUpload) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sillok_catalog::lifecycle::{Filter, LifecycleRule};

    fn rule(prefix: &str, expiration: Option<Expiration>, enabled: bool) -> LifecycleRule {
        LifecycleRule {
            id: prefix.into(),
            enabled,
            filter: Filter::Prefix(prefix.into()),
            expiration,
            abort_incomplete_upload_days: None,
            noncurrent_expiration: None,
        }
    }

    #[test]
    fn each_expiring_object_is_listed_once() {
        let days = Some(Expiration::Days(1));
        let c = LifecycleConfig {
            rules: vec![
                rule("tmp/a/", days.clone(), true),
                rule("tmp/", days.clone(), true),
                rule("logs/", Some(Expiration::Date(0)), true),
                rule("off/", days.clone(), false),
                rule("markers/", Some(Expiration::ExpiredObjectDeleteMarker(true)), true),
                rule("tmpx/", days, true),
            ],
        };
        assert_eq!(listing_prefixes(&c), ["logs/", "tmp/", "tmpx/"]);
        let everything = LifecycleConfig { rules: vec![rule("", Some(Expiration::Days(2)), true), c.rules[0].clone()] };
        assert_eq!(listing_prefixes(&everything), [""]);
    }

    #[test]
    fn the_listing_preselects_by_prefix_size_and_age() {
        let c = LifecycleConfig { rules: vec![rule("tmp/", Some(Expiration::Days(1)), true)] };
        let entry = |key: &str, lm: i64| ListEntry {
            key: key.into(),
            version: Version { nanos: 1, tiebreak: 0 },
            deleted: false,
            size: 3,
            etag: "e".into(),
            last_modified_ms: lm,
            delete_marker: false,
            version_id: None,
        };
        // Day of 2 s: modified at 1 s → due at 4 s.
        assert!(due_by_listing(&c, &entry("tmp/a", 1_000), 4_000, 2_000));
        assert!(!due_by_listing(&c, &entry("tmp/a", 1_000), 3_999, 2_000));
        assert!(!due_by_listing(&c, &entry("keep/a", 1_000), 10_000, 2_000));
    }
}
