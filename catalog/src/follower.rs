//! [`Follower`]: how storage nodes follow the placement map
//! ([`MapFollower`], ordered by epoch). Gateways follow the whole catalog as
//! a stream of changes instead (`sillok_gateway::catalog`, through
//! [`CatalogClient::changes_since`] and the replicas' change log).
//!
//! Owns: one file, the last value seen (`path`, JSON, mode 0600 because a
//! catalog holds secrets, written atomically: temporary file, fsync, rename,
//! directory fsync), and a long-poll loop through a [`CatalogClient`].
//!
//! Invariants:
//! - What is published never goes back: a value whose version is not larger
//!   than the current one is ignored, and so is one whose map epoch is older
//!   than the current map's, whatever a replica answers.
//! - A value is on disk before it is published, so after a restart the
//!   follower starts from the newest value it ever published, even when no
//!   replica answers.
//! - Every map published passes `PlacementMap::validate`.
//! - When no replica answers, the follower keeps what it has and retries
//!   after a pause; it never blocks readers of the current value.
//! - [`Follower::refresh`] cuts a wait short (a node said our epoch is old):
//!   the follower asks again at once.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};

use crate::client::{CatalogClient, ClientError};
use sillok_placement::PlacementMap;

/// Something a [`Follower`] can follow.
pub trait Followed: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Larger is newer.
    fn version(&self) -> u64;
    /// The epoch of the map it holds (0: none).
    fn epoch(&self) -> u64;
    /// Whether it can be used (its map validates).
    fn usable(&self) -> bool;
    /// The value once it is newer than `newer_than`, waiting up to `wait`.
    fn fetch(
        client: &CatalogClient,
        newer_than: u64,
        wait: Duration,
    ) -> impl Future<Output = Result<Option<Self>, ClientError>> + Send;
}

impl Followed for PlacementMap {
    fn version(&self) -> u64 {
        self.epoch
    }
    fn epoch(&self) -> u64 {
        self.epoch
    }
    fn usable(&self) -> bool {
        self.validate().is_ok()
    }
    async fn fetch(client: &CatalogClient, newer_than: u64, wait: Duration) -> Result<Option<Self>, ClientError> {
        client.map_newer_than(newer_than, wait).await
    }
}

/// How a follower polls.
#[derive(Debug, Clone, Copy)]
pub struct FollowOptions {
    /// How long one long poll waits on a replica for news. Short enough that
    /// a hung replica costs little (the client then moves to another).
    pub wait: Duration,
    /// Pause between polls (0: poll again at once, i.e. follow continuously).
    /// A refresh cuts it short.
    pub pause: Duration,
    /// Pause after a round in which no replica answered.
    pub retry: Duration,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions { wait: Duration::from_secs(5), pause: Duration::ZERO, retry: Duration::from_secs(1) }
    }
}

/// Follows one [`Followed`] value; see the module's invariants.
pub struct Follower<T: Followed> {
    rx: watch::Receiver<Option<Arc<T>>>,
    shared: Arc<Shared<T>>,
    task: tokio::task::JoinHandle<()>,
}

/// What the follow loop and [`Follower::offer`] share.
struct Shared<T> {
    tx: watch::Sender<Option<Arc<T>>>,
    path: PathBuf,
    poke: Notify,
    /// Held from the newness check to the publication, so two candidates
    /// cannot both pass the check and then save out of order.
    publishing: tokio::sync::Mutex<()>,
}

impl<T: Followed> Shared<T> {
    /// Saves and publishes `v` if it is newer than what is published;
    /// returns whether it was.
    async fn publish(&self, v: T) -> Result<bool, std::io::Error> {
        let _guard = self.publishing.lock().await;
        let have = self.tx.borrow().clone();
        if !is_newer(&v, have.as_deref()) {
            return Ok(false);
        }
        let v = Arc::new(v);
        let (path, saved) = (self.path.clone(), v.clone());
        tokio::task::spawn_blocking(move || save(&path, &*saved)).await.map_err(std::io::Error::other)??;
        if have.as_ref().is_none_or(|h| h.epoch() < v.epoch()) {
            tracing::info!(epoch = v.epoch(), version = v.version(), "following a newer placement map");
        }
        self.tx.send_replace(Some(v));
        Ok(true)
    }
}

/// Storage nodes: the map, by epoch.
pub type MapFollower = Follower<PlacementMap>;

/// Reads the last value saved at `path` (`None` if there is none or it is
/// unreadable or unusable).
pub fn load_saved<T: Followed>(path: &Path) -> Option<T> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: T = serde_json::from_str(&text).ok()?;
    v.usable().then_some(v)
}

/// Saves a value atomically, readable by its owner only.
pub fn save<T: Serialize>(path: &Path, v: &T) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(&serde_json::to_vec(v).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Whether `new` may replace `old` (see the invariants).
fn is_newer<T: Followed>(new: &T, old: Option<&T>) -> bool {
    new.usable() && old.is_none_or(|o| new.version() > o.version() && new.epoch() >= o.epoch())
}

impl<T: Followed> Follower<T> {
    /// Starts from the value saved at `path` (or `initial`, whichever is
    /// newer) and follows the catalog from there.
    pub fn start(client: Arc<CatalogClient>, path: PathBuf, initial: Option<T>, options: FollowOptions) -> Self {
        let mut start = load_saved::<T>(&path);
        if let Some(i) = initial
            && is_newer(&i, start.as_ref())
        {
            start = Some(i);
        }
        let (tx, rx) = watch::channel(start.map(Arc::new));
        let shared = Arc::new(Shared { tx, path, poke: Notify::new(), publishing: tokio::sync::Mutex::new(()) });
        let task = tokio::spawn(follow(client, shared.clone(), options));
        Follower { rx, shared, task }
    }

    /// Takes a value fetched some other way (a consistent read): saved and
    /// published if it is newer, like one the loop fetched.
    pub async fn offer(&self, v: T) -> bool {
        match self.shared.publish(v).await {
            Ok(newer) => newer,
            Err(e) => {
                tracing::warn!(error = %e, path = %self.shared.path.display(), "cannot save; not using it");
                false
            }
        }
    }

    /// The newest value seen so far.
    pub fn current(&self) -> Option<Arc<T>> {
        self.rx.borrow().clone()
    }

    /// The epoch of the newest map seen so far (0: none yet).
    pub fn epoch(&self) -> u64 {
        self.rx.borrow().as_ref().map_or(0, |v| v.epoch())
    }

    /// A receiver that is told of every newer value.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<T>>> {
        self.rx.clone()
    }

    /// Asks the catalog again now instead of waiting.
    pub fn refresh(&self) {
        self.shared.poke.notify_one();
    }

    /// Waits (at most `timeout`) until a value is published; returns it.
    pub async fn first(&self, timeout: Duration) -> Option<Arc<T>> {
        let mut rx = self.rx.clone();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|v| v.is_some())).await;
        self.current()
    }

    /// Asks the catalog now and waits (at most `timeout`) for a map of at
    /// least `epoch`; returns whether it came.
    pub async fn wait_for_epoch(&self, epoch: u64, timeout: Duration) -> bool {
        if self.epoch() >= epoch {
            return true;
        }
        self.refresh();
        let mut rx = self.rx.clone();
        let got = tokio::time::timeout(timeout, rx.wait_for(|v| v.as_ref().is_some_and(|v| v.epoch() >= epoch))).await;
        matches!(got, Ok(Ok(_)))
    }
}

impl<T: Followed> Drop for Follower<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn follow<T: Followed>(client: Arc<CatalogClient>, shared: Arc<Shared<T>>, options: FollowOptions) {
    let what = std::any::type_name::<T>().rsplit("::").next().unwrap_or("catalog");
    loop {
        let version = shared.tx.borrow().as_ref().map_or(0, |v| v.version());
        // A continuous follower long-polls; a paused one only asks.
        let wait = if options.pause.is_zero() { options.wait } else { Duration::ZERO };
        let fetched = tokio::select! {
            r = T::fetch(&client, version, wait) => r,
            _ = shared.poke.notified() => continue,
        };
        let pause = match fetched {
            Ok(Some(v)) => {
                let got = v.version();
                match shared.publish(v).await {
                    Ok(true) => options.pause,
                    Ok(false) => {
                        tracing::debug!(what, got, have = version, "ignored a value that is not newer or not usable");
                        options.retry
                    }
                    Err(e) => {
                        tracing::warn!(what, error = %e, path = %shared.path.display(), "cannot save; not using it yet");
                        options.retry
                    }
                }
            }
            Ok(None) => options.pause,
            Err(e) => {
                tracing::debug!(what, error = %e, "no catalog replica answered; keeping what we have");
                options.retry
            }
        };
        if !pause.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shared.poke.notified() => {}
            }
        }
    }
}
