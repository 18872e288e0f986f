//! The gateway's copy of the catalog: buckets, access keys and the placement
//! map, followed from the Raft catalog as a stream of changes and kept on
//! disk (`catalog_copy`: the index and its redb file).
//!
//! Owns: the process's one follower of the catalog (a long poll of
//! `GET /v1/catalog/changes` since the index's applied index; the whole view
//! when a replica's change log no longer reaches back that far, or when the
//! replica predates the route), the [`Index`] it updates in place under a
//! lock, and the [`CatalogClient`] through which bucket changes (creation,
//! deletion, CORS and lifecycle configurations) are proposed.
//!
//! Invariants:
//! - The follower is the only writer of the map and the catalog in a
//!   gateway: everything else reads the [`Index`] (through
//!   [`GatewayCatalog::index`]) or waits on [`GatewayCatalog::watch`].
//!   Anyone who learns of a newer map epoch (a node's refusal, a probe's
//!   answer) takes it to [`GatewayCatalog::catch_up`]: one route.
//! - A change costs the gateway work proportional to the change: the index
//!   is updated in place (never copied whole) and only the rows the change
//!   touched are written, in one redb transaction per batch of changes.
//! - Lookups are answered from the index, so S3 requests for existing
//!   buckets and keys keep working while no catalog replica answers (and
//!   after a restart, from the saved copy).
//! - A miss (an unknown bucket or key) is answered "no such bucket" (or
//!   key) only from a copy at least as new as the leader's catalog when the
//!   miss came, give or take the negative cache below. The gateway asks the
//!   leader for its read index (`GET /v1/catalog/read_index`: a read
//!   barrier, a few bytes), pokes the follower and waits (at most
//!   [`READ_INDEX_WAIT`]) until the index has applied that far, then looks
//!   again in the index. Only when a replica predates the route (404) or the
//!   follower does not get there in time does it read the whole catalog from
//!   the leader (`consistent`) instead. Concurrent misses share one such
//!   fresh read. If the catalog cannot be reached, the answer is 503, not a
//!   guess.
//! - Negative cache: a name (bucket or key id) that a fresh read found
//!   missing is answered as missing without asking the leader again for
//!   [`NEGATIVE_TTL`] after that read started; at most [`NEGATIVE_NAMES`]
//!   names are remembered (the oldest go first). The index is always looked
//!   at first, so a name the follower has applied is found even while it is
//!   in the negative cache: the window in which a bucket made elsewhere is
//!   still "no such bucket" here is the follower's lag, at most the TTL. A
//!   bucket created through this gateway leaves the negative cache. So a
//!   flood of requests for unknown names costs the leader at most one read
//!   index per name per TTL (and concurrent misses share one).
//! - A bucket created or deleted through this gateway is visible (or gone) in
//!   this gateway's index before the S3 call returns (read your writes).
//! - ListBuckets makes the same fresh read (read index, then the follower),
//!   so it lists every bucket acknowledged anywhere before the call; only
//!   while the catalog is unreachable does it list this gateway's copy as it
//!   is.
//! - The index only moves forward: a batch or view is taken only if its
//!   applied index is larger and its map epoch not smaller than the index's,
//!   and its map validates; it is on disk before the index changes (one lock,
//!   `publishing`, orders the check, the write and the change).
//! - Secrets stay in memory and in the 0600 state file; they are never logged.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant, SystemTime};

use sillok_catalog::api::CatalogView;
use sillok_catalog::changes::Changes;
use sillok_catalog::cors::CorsConfig;
use sillok_catalog::follower::FollowOptions;
use sillok_catalog::lifecycle::LifecycleConfig;
use sillok_catalog::state::{Bucket, CatalogError, Command, KeyRecord, Permission, STANDARD, Versioning};
use sillok_catalog::{CatalogClient, ClientError};
use sillok_placement::PlacementMap;
use tokio::sync::{Notify, watch};

pub use crate::catalog_copy::Index;
use crate::catalog_copy::{Batch, CopyFile};
use crate::error::GatewayError;

/// How long a bucket change through this gateway waits for the follower to
/// bring it before reading the catalog from the leader instead.
const OWN_WRITE_WAIT: Duration = Duration::from_millis(1000);
/// How long a node's "newer epoch" waits for the follower.
const CATCH_UP_WAIT: Duration = Duration::from_secs(3);
/// How long a fresh read waits for the follower to apply the leader's read
/// index before reading the whole catalog from the leader instead.
pub const READ_INDEX_WAIT: Duration = Duration::from_secs(3);
/// How long a name found missing by a fresh read stays known missing.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(1);
/// Most names (buckets and key ids together) known missing at once.
pub const NEGATIVE_NAMES: usize = 10_000;

/// A bucket as the S3 layer sees it.
#[derive(Debug, Clone)]
pub struct BucketInfo {
    pub name: String,
    pub owner: String,
    pub created_ms: i64,
    pub versioning: Versioning,
}

impl From<&Bucket> for BucketInfo {
    fn from(b: &Bucket) -> Self {
        BucketInfo {
            name: b.name.clone(),
            owner: b.owner.clone(),
            created_ms: (b.created_at as i64) * 1000,
            versioning: b.versioning,
        }
    }
}

/// Where the index is: its applied index and map epoch, for waiters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub applied: u64,
    pub epoch: u64,
}

/// What a receiver of [`GatewayCatalog::watch`] sees.
pub type IndexWatch = watch::Receiver<Seen>;

/// What the follower did, for the metrics page.
#[derive(Debug, Default)]
pub struct FollowFigures {
    /// Bytes of change answers and whole views received (as JSON).
    pub bytes: AtomicU64,
    /// Changes applied (rows of batches: buckets, keys, the map).
    pub changes: AtomicU64,
    /// Batches written and applied.
    pub batches: AtomicU64,
    /// Whole views taken (snapshots, fresh reads).
    pub views: AtomicU64,
    /// Read indexes asked of the leader (fresh reads for misses and
    /// ListBuckets).
    pub read_index_calls: AtomicU64,
    /// Bytes of answers to fresh reads (read indexes, and whole views read
    /// from the leader when a read index could not serve), as JSON.
    pub fresh_read_bytes: AtomicU64,
    /// Whole views read from the leader for a fresh read (the fallback).
    pub fresh_whole_reads: AtomicU64,
    /// Misses answered from the negative cache.
    pub negative_hits: AtomicU64,
}

/// What a name in the negative cache names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Bucket,
    Key,
}

/// Names found missing by a fresh read, with the time that read started
/// (see the invariants): bounded by count and by age.
struct Missing {
    ttl: Duration,
    at: HashMap<(Kind, String), Instant>,
    /// Insertion order, for eviction; an entry whose time no longer matches
    /// `at` is stale and only dropped.
    order: VecDeque<(Kind, String, Instant)>,
}

impl Missing {
    fn new(ttl: Duration) -> Self {
        Missing { ttl, at: HashMap::new(), order: VecDeque::new() }
    }

    fn has(&self, kind: Kind, name: &str, now: Instant) -> bool {
        self.at.get(&(kind, name.to_string())).is_some_and(|t| now.saturating_duration_since(*t) < self.ttl)
    }

    fn insert(&mut self, kind: Kind, name: &str, read: Instant, now: Instant) {
        let k = (kind, name.to_string());
        if self.at.get(&k) == Some(&read) {
            return;
        }
        self.at.insert(k, read);
        self.order.push_back((kind, name.to_string(), read));
        // Expired entries go first, then the oldest beyond the bound.
        while let Some((kind, name, t)) = self.order.front() {
            let expired = now.saturating_duration_since(*t) >= self.ttl;
            if !expired && self.order.len() <= NEGATIVE_NAMES {
                break;
            }
            let (kind, name, t) = (*kind, name.clone(), *t);
            self.order.pop_front();
            let k = (kind, name);
            if self.at.get(&k) == Some(&t) {
                self.at.remove(&k);
            }
        }
    }

    fn remove(&mut self, kind: Kind, name: &str) {
        self.at.remove(&(kind, name.to_string()));
    }

    fn len(&self) -> usize {
        self.at.len()
    }
}

/// The index, its file and who is told of it: shared by the follow loop and
/// the lookups.
struct Copy {
    index: RwLock<Index>,
    file: Arc<CopyFile>,
    seen: watch::Sender<Seen>,
    /// Held from the newness check to the index change.
    publishing: tokio::sync::Mutex<()>,
    poke: Notify,
    figures: FollowFigures,
}

impl Copy {
    fn applied(&self) -> u64 {
        self.index.read().expect("index lock").applied
    }

    /// Writes `batch` and applies it, if it moves the index forward (see the
    /// invariants); returns whether it did.
    async fn take(&self, batch: Batch) -> Result<bool, GatewayError> {
        let file = self.file.clone();
        let b = Arc::new(batch);
        let written = b.clone();
        tokio::task::spawn_blocking(move || file.write(&written))
            .await
            .map_err(|e| GatewayError::Internal(format!("the catalog file writer failed: {e}")))?
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        let seen = {
            let mut index = self.index.write().expect("index lock");
            index.apply(&b);
            Seen { applied: index.applied, epoch: index.map.epoch }
        };
        self.figures.batches.fetch_add(1, Ordering::Relaxed);
        self.figures.changes.fetch_add(b.rows() as u64, Ordering::Relaxed);
        self.seen.send_if_modified(|s| {
            let changed = *s != seen;
            *s = seen;
            changed
        });
        Ok(true)
    }

    /// Whether a batch to `applied` with map `map` (if any, already
    /// validated: `Batch::of_changes`, `Index::of_view`) may be taken.
    fn forward(&self, applied: u64, map: Option<&PlacementMap>) -> bool {
        let index = self.index.read().expect("index lock");
        applied > index.applied && map.is_none_or(|m| m.epoch >= index.map.epoch)
    }

    /// Takes a run of changes from `since` to `to`; `None`: its map changes
    /// cannot be taken on this index, take the whole view.
    async fn take_changes(
        &self,
        since: u64,
        to: u64,
        changes: Vec<sillok_catalog::changes::IndexedChange>,
    ) -> Option<bool> {
        let _guard = self.publishing.lock().await;
        let have = self.applied();
        if have < since {
            // The run starts after what we have: a gap (cannot happen with
            // one replica's log; be safe).
            return None;
        }
        let map = self.index.read().expect("index lock").map.clone();
        let batch = Batch::of_changes(have, to, changes, &map)?;
        if !self.forward(batch.applied, batch.map.as_deref()) {
            return Some(false);
        }
        match self.take(batch).await {
            Ok(took) => Some(took),
            Err(e) => {
                tracing::warn!(error = %e, "cannot save the catalog changes; not using them yet");
                Some(false)
            }
        }
    }

    /// Takes a whole view if it is newer; only rows that differ are written.
    async fn take_view(&self, view: CatalogView) -> bool {
        let Some(new) = Index::of_view(view) else { return false };
        let _guard = self.publishing.lock().await;
        if !self.forward(new.applied, Some(&new.map)) {
            return false;
        }
        let batch = self.index.read().expect("index lock").diff(&new);
        self.figures.views.fetch_add(1, Ordering::Relaxed);
        match self.take(batch).await {
            Ok(took) => took,
            Err(e) => {
                tracing::warn!(error = %e, "cannot save the catalog; not using it yet");
                false
            }
        }
    }
}

/// The follow loop: changes since the index's applied index, a whole view
/// when the replica's log does not reach back (or it has no such route).
async fn follow(client: Arc<CatalogClient>, copy: Arc<Copy>, options: FollowOptions) {
    loop {
        let since = copy.applied();
        let wait = if options.pause.is_zero() { options.wait } else { Duration::ZERO };
        let asked = tokio::select! {
            r = client.changes_since(since, wait) => r,
            _ = copy.poke.notified() => continue,
        };
        let pause = match asked {
            Ok(Some(Changes::Changes { since, to, changes })) => {
                let bytes = serde_json::to_vec(&changes).map_or(0, |b| b.len());
                copy.figures.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                tracing::debug!(since, to, changes = changes.len(), "catalog changes");
                let epoch = copy.seen.borrow().epoch;
                match copy.take_changes(since, to, changes).await {
                    Some(true) => {
                        let now = *copy.seen.borrow();
                        if now.epoch > epoch {
                            tracing::info!(epoch = now.epoch, applied = now.applied, "following a newer placement map");
                        }
                        options.pause
                    }
                    Some(false) => options.retry,
                    None => {
                        tracing::info!(
                            since,
                            to,
                            "catalog changes that do not follow from this copy: taking the whole catalog"
                        );
                        whole(&client, &copy, since, options.wait).await
                    }
                }
            }
            Ok(Some(Changes::SnapshotNeeded { start, applied })) => {
                tracing::info!(since, start, applied, "behind the replica's change log: taking the whole catalog");
                // Answered at once (the replica is past `since`); the wait
                // only lengthens the deadline, which a large view needs.
                whole(&client, &copy, since, options.wait).await
            }
            Ok(None) => options.pause,
            // A replica without the change route (an older build).
            Err(ClientError::BadRequest(_)) => whole(&client, &copy, since, wait).await,
            Err(e) => {
                tracing::debug!(error = %e, "no catalog replica answered; keeping what we have");
                options.retry
            }
        };
        if !pause.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = copy.poke.notified() => {}
            }
        }
    }

    /// Takes the whole view once it is newer than `since`; returns the pause.
    async fn whole(client: &CatalogClient, copy: &Copy, since: u64, wait: Duration) -> Duration {
        match client.catalog_newer_than(since, wait).await {
            Ok(Some(view)) => {
                let bytes = serde_json::to_vec(&view).map_or(0, |b| b.len());
                copy.figures.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                if copy.take_view(view).await { Duration::ZERO } else { Duration::from_secs(1) }
            }
            Ok(None) => Duration::ZERO,
            Err(e) => {
                tracing::debug!(error = %e, "no catalog replica answered; keeping what we have");
                Duration::from_secs(1)
            }
        }
    }
}

pub struct GatewayCatalog {
    copy: Arc<Copy>,
    task: tokio::task::JoinHandle<()>,
    client: Arc<CatalogClient>,
    /// Held while reading the catalog from the leader; holds the time the
    /// last such read started (a miss that began before it is answered by it).
    fresh_read: tokio::sync::Mutex<Option<Instant>>,
    /// The negative cache (see the invariants).
    missing: std::sync::Mutex<Missing>,
    pub region: String,
    /// The cluster's repair state from the last answer to this gateway's
    /// report (shown on its metrics page).
    pub repair: std::sync::Mutex<Option<sillok_catalog::repair::RepairStatus>>,
}

impl Drop for GatewayCatalog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GatewayCatalog {
    /// Tells the catalog replicas this gateway's epoch and clock, every
    /// `every`, forever (until the task is dropped): `sillok admin status`
    /// shows them. A report no replica takes is simply late.
    pub async fn report_forever(self: Arc<Self>, cluster: Arc<crate::cluster::Cluster>, addr: String, every: Duration) {
        loop {
            let r = sillok_catalog::api::GatewayReport {
                gateway: addr.clone(),
                epoch: cluster.map().epoch,
                clock_offset_ms: cluster.clock_offset_ms(),
                refusing_writes: cluster.check_clock().is_err(),
            };
            let sent = self.client.report_gateway(&r).await;
            tracing::debug!(took = sent.taken, "gateway report sent");
            if let Some(repair) = sent.answer.and_then(|a| a.repair) {
                *self.repair.lock().expect("repair lock") = Some(repair);
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Starts following the catalog from the copy saved in `state_dir` and
    /// waits (at most `wait`) for a first view, saved or fetched.
    pub async fn start(
        client: Arc<CatalogClient>,
        state_dir: std::path::PathBuf,
        options: FollowOptions,
        wait: Duration,
    ) -> Result<Arc<Self>, GatewayError> {
        let (file, saved) = tokio::task::spawn_blocking(move || CopyFile::open(&state_dir))
            .await
            .map_err(|e| GatewayError::Internal(format!("opening the catalog file failed: {e}")))?
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        let first = match saved {
            Some(index) => index,
            None => Self::first_view(&client, &file, wait).await?,
        };
        let seen = Seen { applied: first.applied, epoch: first.map.epoch };
        let region = first.region.clone();
        let copy = Arc::new(Copy {
            index: RwLock::new(first),
            file: Arc::new(file),
            seen: watch::channel(seen).0,
            publishing: tokio::sync::Mutex::new(()),
            poke: Notify::new(),
            figures: FollowFigures::default(),
        });
        let task = tokio::spawn(follow(client.clone(), copy.clone(), options));
        Ok(Arc::new(GatewayCatalog {
            copy,
            task,
            region,
            client,
            fresh_read: tokio::sync::Mutex::new(None),
            missing: std::sync::Mutex::new(Missing::new(NEGATIVE_TTL)),
            repair: std::sync::Mutex::new(None),
        }))
    }

    /// A first view from the replicas (nothing was saved), written to `file`.
    async fn first_view(client: &CatalogClient, file: &CopyFile, wait: Duration) -> Result<Index, GatewayError> {
        let deadline = Instant::now() + wait;
        loop {
            // A long poll answered at once: its deadline suits a large view.
            let left = deadline.saturating_duration_since(Instant::now());
            let got = tokio::time::timeout(left, client.catalog_newer_than(0, Duration::from_secs(5))).await;
            if let Ok(Ok(Some(view))) = got
                && let Some(index) = Index::of_view(view)
            {
                file.write(&Batch::whole(&index)).map_err(|e| GatewayError::Internal(e.to_string()))?;
                return Ok(index);
            }
            if Instant::now() >= deadline {
                return Err(GatewayError::CatalogUnavailable(format!(
                    "no catalog replica answered within {:.0} s and no catalog was saved before; start the catalog replicas ({})",
                    wait.as_secs_f64(),
                    client.replicas().join(", ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(200).min(deadline.saturating_duration_since(Instant::now())))
                .await;
        }
    }

    /// The index as it is now (a read lock: do not hold it across an await).
    pub fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.copy.index.read().expect("index lock")
    }

    /// The newest map.
    pub fn map(&self) -> Arc<PlacementMap> {
        self.index().map().clone()
    }

    /// A receiver told of every change of the index's applied index or epoch.
    pub fn watch(&self) -> IndexWatch {
        self.copy.seen.subscribe()
    }

    /// What the follower did so far (metrics).
    pub fn follow_figures(&self) -> &FollowFigures {
        &self.copy.figures
    }

    /// Someone heard of map `epoch` (a node named it): if it is newer than
    /// ours, asks the catalog now and waits (bounded) for it. Returns whether
    /// the gateway now has a map at least that new. The one route by which a
    /// newer epoch reaches the map's owner.
    pub async fn catch_up(&self, epoch: u64) -> bool {
        if self.copy.seen.borrow().epoch >= epoch {
            return true;
        }
        self.copy.poke.notify_one();
        let mut rx = self.watch();
        let got = tokio::time::timeout(CATCH_UP_WAIT, rx.wait_for(|s| s.epoch >= epoch)).await;
        matches!(got, Ok(Ok(_)))
    }

    /// Sets how long a name stays known missing (tests; [`NEGATIVE_TTL`]
    /// otherwise).
    pub fn set_negative_ttl(&self, ttl: Duration) {
        self.missing.lock().expect("missing lock").ttl = ttl;
    }

    /// Names known missing now (metrics).
    pub fn negative_names(&self) -> usize {
        self.missing.lock().expect("missing lock").len()
    }

    fn known_missing(&self, kind: Kind, name: &str) -> bool {
        let hit = self.missing.lock().expect("missing lock").has(kind, name, Instant::now());
        if hit {
            self.copy.figures.negative_hits.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    /// Brings the index up to the leader's catalog as of some time after
    /// `asked`, unless a read that started after `asked` has already done so
    /// or (for a miss, `name`) a read found the name missing meanwhile.
    /// Returns when the read that answers started (`None`: the negative
    /// cache answered).
    async fn read_fresh(&self, asked: Instant, name: Option<(Kind, &str)>) -> Result<Option<Instant>, GatewayError> {
        let mut last = self.fresh_read.lock().await;
        if let Some(t) = *last
            && t >= asked
        {
            return Ok(Some(t));
        }
        if let Some((kind, name)) = name
            && self.known_missing(kind, name)
        {
            return Ok(None);
        }
        let started = Instant::now();
        let figures = &self.copy.figures;
        match self.client.read_index().await {
            Ok(ri) => {
                figures.read_index_calls.fetch_add(1, Ordering::Relaxed);
                let bytes = serde_json::to_vec(&ri).map_or(0, |b| b.len());
                figures.fresh_read_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                if self.wait_applied(ri.index, READ_INDEX_WAIT).await {
                    *last = Some(started);
                    return Ok(Some(started));
                }
                tracing::info!(
                    read_index = ri.index,
                    applied = self.copy.applied(),
                    "the follower did not reach the leader's read index in time; reading the whole catalog"
                );
            }
            // A replica without the route (an older build).
            Err(ClientError::BadRequest(e)) => {
                tracing::debug!(error = %e, "no read index from the catalog; reading the whole catalog");
            }
            Err(e) => {
                return Err(GatewayError::CatalogUnavailable(format!(
                    "the catalog could not be read to look the name up: {e}"
                )));
            }
        }
        let view = self.client.catalog(true).await.map_err(|e| {
            GatewayError::CatalogUnavailable(format!("the catalog could not be read to look the name up: {e}"))
        })?;
        let bytes = serde_json::to_vec(&view).map_or(0, |b| b.len());
        figures.fresh_read_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        figures.fresh_whole_reads.fetch_add(1, Ordering::Relaxed);
        self.copy.take_view(view).await;
        *last = Some(started);
        Ok(Some(started))
    }

    /// Waits (at most `wait`) until the index has applied `index`, poking
    /// the follower first; returns whether it has.
    async fn wait_applied(&self, index: u64, wait: Duration) -> bool {
        let mut rx = self.watch();
        if rx.borrow_and_update().applied >= index {
            return true;
        }
        self.copy.poke.notify_one();
        matches!(tokio::time::timeout(wait, rx.wait_for(|s| s.applied >= index)).await, Ok(Ok(_)))
    }

    /// A name the index lacks after a fresh read (or the negative cache's
    /// answer): remembered as missing as of the read's start.
    fn note_missing(&self, kind: Kind, name: &str, read: Option<Instant>) {
        if let Some(read) = read {
            self.missing.lock().expect("missing lock").insert(kind, name, read, Instant::now());
        }
    }

    /// Waits until the index has applied `log_index` (a change this gateway
    /// made), reading from the leader if the follower is slow.
    async fn see_own_write(&self, log_index: u64) -> Result<(), GatewayError> {
        let asked = Instant::now();
        let mut rx = self.watch();
        if rx.borrow_and_update().applied < log_index {
            self.copy.poke.notify_one();
        }
        let came = tokio::time::timeout(OWN_WRITE_WAIT, rx.wait_for(|s| s.applied >= log_index))
            .await
            .is_ok_and(|r| r.is_ok());
        if came {
            return Ok(());
        }
        self.read_fresh(asked, None).await.map(drop)
    }

    /// The bucket, if the catalog has it (see the invariants for misses).
    pub async fn bucket(&self, name: &str) -> Result<Option<BucketInfo>, GatewayError> {
        let asked = Instant::now();
        if let Some(b) = self.index().buckets.get(name) {
            return Ok(Some(b.into()));
        }
        if self.known_missing(Kind::Bucket, name) {
            return Ok(None);
        }
        let read = self.read_fresh(asked, Some((Kind::Bucket, name))).await?;
        let found = self.index().buckets.get(name).map(BucketInfo::from);
        if found.is_none() {
            self.note_missing(Kind::Bucket, name, read);
        }
        Ok(found)
    }

    pub async fn require_bucket(&self, name: &str) -> Result<BucketInfo, GatewayError> {
        self.bucket(name).await?.ok_or(GatewayError::NoSuchBucket)
    }

    /// Every bucket, as the leader has them when it answers, else as this
    /// gateway's copy has them (the catalog being unreachable is no reason
    /// to fail a listing).
    pub async fn list_buckets(&self) -> Vec<BucketInfo> {
        if let Err(e) = self.read_fresh(Instant::now(), None).await {
            tracing::debug!(error = %e, "listing buckets from this gateway's copy of the catalog");
        }
        self.index().bucket_names().into_iter().map(BucketInfo::from).collect()
    }

    /// Creates a bucket owned by `owner` (an access key id).
    pub async fn create_bucket(&self, name: &str, owner: &str) -> Result<(), GatewayError> {
        if let Some(b) = self.index().buckets.get(name) {
            return Err(exists_error(b, owner));
        }
        let created_at = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let bucket = Bucket {
            name: name.into(),
            owner: owner.into(),
            created_at,
            storage_class: STANDARD.to_string(),
            cors: None,
            versioning: Versioning::Unversioned,
            lifecycle: None,
        };
        let created = self.client.propose(Command::CreateBucket { bucket }).await;
        if matches!(created, Ok(_) | Err(ClientError::Refused(CatalogError::BucketExists(_)))) {
            self.missing.lock().expect("missing lock").remove(Kind::Bucket, name);
        }
        match created {
            Ok(p) => self.see_own_write(p.follower_index()).await,
            Err(ClientError::Refused(CatalogError::BucketExists(_))) => {
                let asked = Instant::now();
                self.read_fresh(asked, None).await?;
                match self.index().buckets.get(name) {
                    Some(b) => Err(exists_error(b, owner)),
                    None => Err(GatewayError::CatalogUnavailable("the bucket was being deleted; retry".into())),
                }
            }
            Err(e) => Err(catalog_error(e)),
        }
    }

    /// Deletes a bucket (the caller has checked that it is empty).
    pub async fn delete_bucket(&self, name: &str) -> Result<(), GatewayError> {
        match self.client.propose(Command::DeleteBucket { name: name.into() }).await {
            Ok(p) => self.see_own_write(p.follower_index()).await,
            Err(ClientError::Refused(CatalogError::NoSuchBucket(_))) => Err(GatewayError::NoSuchBucket),
            Err(e) => Err(catalog_error(e)),
        }
    }

    /// The bucket's CORS configuration, if it has one (`NoSuchBucket` as
    /// [`Self::require_bucket`] answers it).
    pub async fn bucket_cors(&self, name: &str) -> Result<Option<CorsConfig>, GatewayError> {
        self.require_bucket(name).await?;
        Ok(self.cors_of(name))
    }

    /// The bucket's CORS configuration from this gateway's copy only (no
    /// network: asked for every request that carries an `Origin`).
    pub fn cors_of(&self, name: &str) -> Option<CorsConfig> {
        self.index().buckets.get(name).and_then(|b| b.cors.clone())
    }

    /// Sets (`None`: removes) the bucket's CORS configuration, which the
    /// caller has validated; visible here before it returns.
    pub async fn set_bucket_cors(&self, name: &str, cors: Option<CorsConfig>) -> Result<(), GatewayError> {
        match self.client.propose(Command::SetBucketCors { bucket: name.into(), cors }).await {
            Ok(p) => self.see_own_write(p.follower_index()).await,
            Err(ClientError::Refused(CatalogError::NoSuchBucket(_))) => Err(GatewayError::NoSuchBucket),
            Err(e) => Err(catalog_error(e)),
        }
    }

    /// Sets the bucket's versioning (`Enabled` or `Suspended`); visible here
    /// before it returns.
    pub async fn set_bucket_versioning(&self, name: &str, versioning: Versioning) -> Result<(), GatewayError> {
        match self.client.propose(Command::SetBucketVersioning { bucket: name.into(), versioning }).await {
            Ok(p) => self.see_own_write(p.follower_index()).await,
            Err(ClientError::Refused(CatalogError::NoSuchBucket(_))) => Err(GatewayError::NoSuchBucket),
            Err(e) => Err(catalog_error(e)),
        }
    }

    /// The bucket's lifecycle configuration, if it has one (`NoSuchBucket` as
    /// [`Self::require_bucket`] answers it).
    pub async fn bucket_lifecycle(&self, name: &str) -> Result<Option<LifecycleConfig>, GatewayError> {
        self.require_bucket(name).await?;
        Ok(self.lifecycle_of(name))
    }

    /// The bucket's lifecycle configuration from this gateway's copy only.
    pub fn lifecycle_of(&self, name: &str) -> Option<LifecycleConfig> {
        self.index().buckets.get(name).and_then(|b| b.lifecycle.clone())
    }

    /// Every bucket that has a lifecycle configuration, with it, from this
    /// gateway's copy (what the expirer works through), sorted by name.
    pub fn lifecycles(&self) -> Vec<(String, LifecycleConfig)> {
        let mut out: Vec<_> =
            self.index().buckets.values().filter_map(|b| Some((b.name.clone(), b.lifecycle.clone()?))).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Sets (`None`: removes) the bucket's lifecycle configuration, which
    /// the caller has validated; visible here before it returns.
    pub async fn set_bucket_lifecycle(
        &self,
        name: &str,
        lifecycle: Option<LifecycleConfig>,
    ) -> Result<(), GatewayError> {
        match self.client.propose(Command::SetBucketLifecycle { bucket: name.into(), lifecycle }).await {
            Ok(p) => self.see_own_write(p.follower_index()).await,
            Err(ClientError::Refused(CatalogError::NoSuchBucket(_))) => Err(GatewayError::NoSuchBucket),
            Err(e) => Err(catalog_error(e)),
        }
    }

    /// The enabled key with this id (reading from the leader on a miss).
    pub async fn key(&self, id: &str) -> Result<Option<KeyRecord>, GatewayError> {
        let asked = Instant::now();
        if let Some(k) = self.index().keys.get(id) {
            return Ok(k.enabled.then(|| k.clone()));
        }
        if self.known_missing(Kind::Key, id) {
            return Ok(None);
        }
        let read = self.read_fresh(asked, Some((Kind::Key, id))).await?;
        let index = self.index();
        match index.keys.get(id) {
            Some(k) => Ok(k.enabled.then(|| k.clone())),
            None => {
                drop(index);
                self.note_missing(Kind::Key, id, read);
                Ok(None)
            }
        }
    }

    /// Whether the key may do `p` (from the local index: the key was just
    /// looked up to check the request's signature).
    pub fn may(&self, id: &str, p: Permission) -> bool {
        self.index().keys.get(id).is_some_and(|k| k.may(p))
    }
}

fn exists_error(b: &Bucket, owner: &str) -> GatewayError {
    if b.owner == owner { GatewayError::BucketAlreadyOwnedByYou } else { GatewayError::BucketAlreadyExists }
}

fn catalog_error(e: ClientError) -> GatewayError {
    match e {
        ClientError::Refused(CatalogError::InvalidBucketName { reason, .. }) => GatewayError::InvalidBucketName(reason),
        ClientError::Refused(r) => GatewayError::InvalidRequest(r.to_string()),
        other => GatewayError::CatalogUnavailable(format!("the catalog did not take the change: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_negative_cache_forgets_by_age_and_holds_at_most_its_bound() {
        let t0 = Instant::now();
        let mut m = Missing::new(Duration::from_secs(1));
        m.insert(Kind::Bucket, "a", t0, t0);
        assert!(m.has(Kind::Bucket, "a", t0));
        assert!(!m.has(Kind::Key, "a", t0), "buckets and keys are apart");
        assert!(!m.has(Kind::Bucket, "a", t0 + Duration::from_secs(1)), "expired");
        // The same read's answer, twice (concurrent misses): one entry.
        m.insert(Kind::Bucket, "a", t0, t0);
        assert_eq!((m.len(), m.order.len()), (1, 1));
        m.remove(Kind::Bucket, "a");
        assert!(!m.has(Kind::Bucket, "a", t0));

        // A flood of names: never more than the bound; the newest are kept.
        let mut m = Missing::new(Duration::from_secs(3600));
        let n = NEGATIVE_NAMES + 500;
        for i in 0..n {
            let at = t0 + Duration::from_micros(i as u64);
            m.insert(Kind::Bucket, &format!("b{i}"), at, at);
            assert!(m.len() <= NEGATIVE_NAMES && m.order.len() <= NEGATIVE_NAMES);
        }
        let now = t0 + Duration::from_secs(1);
        assert!(!m.has(Kind::Bucket, "b0", now), "the oldest went first");
        assert!(m.has(Kind::Bucket, &format!("b{}", n - 1), now));
        // Expired entries go as new ones come.
        let later = t0 + Duration::from_secs(7200);
        m.insert(Kind::Key, "k", later, later);
        assert_eq!((m.len(), m.order.len()), (1, 1));
    }
}
