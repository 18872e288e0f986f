//! The gateway's copy of the catalog: buckets, access keys and the placement
//! map, followed from the Raft catalog and kept on disk.
//!
//! Owns: the process's one [`Follower`] of the catalog (long poll, last view
//! saved in the gateway's state directory), which publishes each view as an
//! [`Index`] (buckets and keys by name, and the map); and the
//! [`CatalogClient`] through which bucket changes (creation, deletion, CORS
//! and lifecycle configurations) are proposed.
//!
//! Invariants:
//! - The follower is the only owner of the map and the catalog in a gateway:
//!   everything else reads the [`Index`] it publishes (through
//!   [`GatewayCatalog::index`] or a [`GatewayCatalog::watch`] receiver).
//!   Anyone who learns of a newer map epoch (a node's refusal, a probe's
//!   answer) takes it to [`GatewayCatalog::catch_up`]: one route.
//! - Lookups are answered from the published index, so S3 requests for
//!   existing buckets and keys keep working while no catalog replica answers
//!   (and after a restart, from the saved view).
//! - A miss (an unknown bucket or key) is never answered from a copy older
//!   than the miss: the gateway reads the catalog from the leader
//!   (`consistent`), and only that answer can say "no such bucket". Concurrent
//!   misses share one such read. If the catalog cannot be reached, the answer
//!   is 503, not a guess.
//! - A bucket created or deleted through this gateway is visible (or gone) in
//!   this gateway's index before the S3 call returns (read your writes).
//! - ListBuckets reads the catalog from the leader too, so it lists every
//!   bucket acknowledged anywhere; only while the catalog is unreachable does
//!   it list this gateway's copy.
//! - The index only moves forward (the follower's invariants).
//! - Secrets stay in memory and in the 0600 state file; they are never logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use sillok_catalog::api::CatalogView;
use sillok_catalog::cors::CorsConfig;
use sillok_catalog::follower::{FollowOptions, Followed, Follower};
use sillok_catalog::lifecycle::LifecycleConfig;
use sillok_catalog::state::{Bucket, CatalogError, Command, KeyRecord, Permission, STANDARD, Versioning};
use sillok_catalog::{CatalogClient, ClientError};
use sillok_placement::PlacementMap;
use tokio::sync::watch;

use crate::error::GatewayError;

/// How long a bucket change through this gateway waits for the follower to
/// bring it before reading the catalog from the leader instead.
const OWN_WRITE_WAIT: Duration = Duration::from_millis(1000);
/// How long a node's "newer epoch" waits for the follower.
const CATCH_UP_WAIT: Duration = Duration::from_secs(3);

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

/// One catalog view, indexed for lookups: what the follower publishes. It is
/// saved and fetched as a [`CatalogView`].
#[derive(Clone, Serialize, Deserialize)]
#[serde(from = "CatalogView", into = "CatalogView")]
pub struct Index {
    pub applied: u64,
    pub region: String,
    /// `None` only before the catalog was seeded; never published so
    /// ([`Followed::usable`]).
    map: Option<Arc<PlacementMap>>,
    buckets: HashMap<String, Bucket>,
    keys: HashMap<String, KeyRecord>,
}

impl From<CatalogView> for Index {
    fn from(view: CatalogView) -> Self {
        Index {
            applied: view.applied_index,
            region: view.region,
            map: view.map.map(Arc::new),
            buckets: view.buckets.into_iter().map(|b| (b.name.clone(), b)).collect(),
            keys: view.key_secrets.into_iter().map(|k| (k.id.clone(), k)).collect(),
        }
    }
}

impl From<Index> for CatalogView {
    fn from(i: Index) -> Self {
        CatalogView {
            region: i.region,
            epoch: i.map.as_ref().map_or(0, |m| m.epoch),
            applied_index: i.applied,
            map: i.map.map(|m| (*m).clone()),
            buckets: i.buckets.into_values().collect(),
            keys: i.keys.values().map(KeyRecord::info).collect(),
            key_secrets: i.keys.into_values().collect(),
            // Gateways do not follow staged changes.
            staged: Vec::new(),
            next_node_id: 0,
        }
    }
}

impl Followed for Index {
    fn version(&self) -> u64 {
        self.applied
    }
    fn epoch(&self) -> u64 {
        self.map.as_ref().map_or(0, |m| m.epoch)
    }
    fn usable(&self) -> bool {
        self.map.as_ref().is_some_and(|m| m.validate().is_ok())
    }
    async fn fetch(client: &CatalogClient, newer_than: u64, wait: Duration) -> Result<Option<Self>, ClientError> {
        Ok(client.catalog_newer_than(newer_than, wait).await?.map(Index::from))
    }
}

impl Index {
    /// The placement map (every published index has one).
    pub fn map(&self) -> &Arc<PlacementMap> {
        self.map.as_ref().expect("a published catalog index holds a map")
    }

    /// Bucket names in order.
    pub fn bucket_names(&self) -> Vec<&Bucket> {
        let mut v: Vec<&Bucket> = self.buckets.values().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}

/// A published index, as a receiver sees it.
pub type IndexWatch = watch::Receiver<Option<Arc<Index>>>;

pub struct GatewayCatalog {
    follower: Follower<Index>,
    client: Arc<CatalogClient>,
    /// Held while reading the catalog from the leader; holds the time the
    /// last such read started (a miss that began before it is answered by it).
    fresh_read: tokio::sync::Mutex<Option<Instant>>,
    pub region: String,
    /// The cluster's repair state from the last answer to this gateway's
    /// report (shown on its metrics page).
    pub repair: std::sync::Mutex<Option<sillok_catalog::repair::RepairStatus>>,
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

    /// Starts following the catalog from the view saved at `path` and waits
    /// (at most `wait`) for a first view, saved or fetched.
    pub async fn start(
        client: Arc<CatalogClient>,
        path: std::path::PathBuf,
        options: FollowOptions,
        wait: Duration,
    ) -> Result<Arc<Self>, GatewayError> {
        let follower = Follower::<Index>::start(client.clone(), path, None, options);
        let first = follower.first(wait).await.ok_or_else(|| {
            GatewayError::CatalogUnavailable(format!(
                "no catalog replica answered within {:.0} s and no catalog was saved before; start the catalog replicas ({})",
                wait.as_secs_f64(),
                client.replicas().join(", ")
            ))
        })?;
        Ok(Arc::new(GatewayCatalog {
            region: first.region.clone(),
            follower,
            client,
            fresh_read: tokio::sync::Mutex::new(None),
            repair: std::sync::Mutex::new(None),
        }))
    }

    /// The newest index published.
    pub fn index(&self) -> Arc<Index> {
        self.follower.current().expect("the catalog was started with a first view")
    }

    /// The newest map published.
    pub fn map(&self) -> Arc<PlacementMap> {
        self.index().map().clone()
    }

    /// A receiver told of every newer index.
    pub fn watch(&self) -> IndexWatch {
        self.follower.subscribe()
    }

    /// Someone heard of map `epoch` (a node named it): if it is newer than
    /// ours, asks the catalog now and waits (bounded) for it. Returns whether
    /// the gateway now has a map at least that new. The one route by which a
    /// newer epoch reaches the map's owner.
    pub async fn catch_up(&self, epoch: u64) -> bool {
        self.follower.wait_for_epoch(epoch, CATCH_UP_WAIT).await
    }

    /// Reads the catalog from the leader unless a read that started after
    /// `asked` has already been done; the index then reflects it.
    async fn read_fresh(&self, asked: Instant) -> Result<(), GatewayError> {
        let mut last = self.fresh_read.lock().await;
        if last.is_some_and(|t| t >= asked) {
            return Ok(());
        }
        let started = Instant::now();
        let view = self.client.catalog(true).await.map_err(|e| {
            GatewayError::CatalogUnavailable(format!("the catalog could not be read to look the name up: {e}"))
        })?;
        self.follower.offer(Index::from(view)).await;
        *last = Some(started);
        Ok(())
    }

    /// Waits until the index has applied `log_index` (a change this gateway
    /// made), reading from the leader if the follower is slow.
    async fn see_own_write(&self, log_index: u64) -> Result<(), GatewayError> {
        let asked = Instant::now();
        let mut rx = self.watch();
        let applied = |v: &Option<Arc<Index>>| v.as_ref().is_some_and(|i| i.applied >= log_index);
        let came = tokio::time::timeout(OWN_WRITE_WAIT, rx.wait_for(applied)).await.is_ok_and(|r| r.is_ok());
        if came {
            return Ok(());
        }
        self.read_fresh(asked).await
    }

    /// The bucket, if the catalog has it (see the invariants for misses).
    pub async fn bucket(&self, name: &str) -> Result<Option<BucketInfo>, GatewayError> {
        let asked = Instant::now();
        if let Some(b) = self.index().buckets.get(name) {
            return Ok(Some(b.into()));
        }
        self.read_fresh(asked).await?;
        Ok(self.index().buckets.get(name).map(BucketInfo::from))
    }

    pub async fn require_bucket(&self, name: &str) -> Result<BucketInfo, GatewayError> {
        self.bucket(name).await?.ok_or(GatewayError::NoSuchBucket)
    }

    /// Every bucket, as the leader has them when it answers, else as this
    /// gateway's copy has them (the catalog being unreachable is no reason
    /// to fail a listing).
    pub async fn list_buckets(&self) -> Vec<BucketInfo> {
        if let Err(e) = self.read_fresh(Instant::now()).await {
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
        match self.client.propose(Command::CreateBucket { bucket }).await {
            Ok(p) => self.see_own_write(p.log_index).await,
            Err(ClientError::Refused(CatalogError::BucketExists(_))) => {
                let asked = Instant::now();
                self.read_fresh(asked).await?;
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
            Ok(p) => self.see_own_write(p.log_index).await,
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
            Ok(p) => self.see_own_write(p.log_index).await,
            Err(ClientError::Refused(CatalogError::NoSuchBucket(_))) => Err(GatewayError::NoSuchBucket),
            Err(e) => Err(catalog_error(e)),
        }
    }

    /// Sets the bucket's versioning (`Enabled` or `Suspended`); visible here
    /// before it returns.
    pub async fn set_bucket_versioning(&self, name: &str, versioning: Versioning) -> Result<(), GatewayError> {
        match self.client.propose(Command::SetBucketVersioning { bucket: name.into(), versioning }).await {
            Ok(p) => self.see_own_write(p.log_index).await,
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
            Ok(p) => self.see_own_write(p.log_index).await,
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
        self.read_fresh(asked).await?;
        Ok(self.index().keys.get(id).filter(|k| k.enabled).cloned())
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
